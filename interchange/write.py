"""Writing an IR graph as a QONNX model (`lowbit export --qonnx`), which qonnx executes and
:mod:`lowbit.interchange.lower` reads back to the same graph.

The model computes on the IR's own integers, in the FINN-ONNX style:

- the input: the integer pixels, annotated UINTk (a graph whose input is the pixels), or the
  images scaled to [0, 1], then the graph's input code: the recorded input
  quantizer (a ``Div`` by its scale into a ``Quant`` of scale 1, so that the first layer gets the
  integers; or a ``BipolarQuant``), or the thermometer code (the image times ones, one copy per
  level on a new axis, into a ``MultiThreshold`` with one threshold per copy);
- each ``MatMul`` op: a ``MatMul`` with integer weights, or after a window a ``Conv`` (OIHW), with a
  constant ``Pad`` first when the window pads with a non-zero element;
- each ``MultiThreshold`` op: a qonnx ``MultiThreshold`` with the IR's thresholds (bipolar
  outputs as ``out_scale`` 2 and ``out_bias`` -1), an inverted channel as a ``Mul`` by -1 before
  it: ``L - #{l : x >= T_l} = #{l : -x >= 1 - T_l}`` on integers;
- ``MaxPool`` as it is, ``Flatten`` as ``Transpose`` to (H, W, C) and ``Reshape``;
- a ``Residual`` block as its body's nodes and an ``Add`` of the block's input (on integers);
- the host's affine map as ``Mul`` and ``Add`` in float32, and the logits as the output (the
  argmax is the user's).

Nodes that become IR ops are named after them, and the model's metadata records each layer's
weight format and copies (:data:`lowbit.interchange.lower.HINTS_KEY`), so the graph read back
compiles to the same Verilog.
"""

import json

import numpy as np

from lowbit.compiler.ir import (BIPOLAR, ArgMax, Flatten, HostAffine, MatMul, MaxPool, MultiThreshold, Residual,
                                SlidingWindow)
from lowbit.core.errors import LowbitError
from lowbit.core.formats import weight_format

from .lower import HINTS_KEY

__all__ = ["write_qonnx", "is_lowbit_onnx"]

_DOMAIN = "qonnx.custom_op.general"
_OPSET = 13
_PRODUCER = "lowbit"


class _Writer:
    """The nodes and initializers of the model being written, and its current tensor."""

    def __init__(self):
        self.nodes, self.inits, self.annotations = [], [], {}
        self.tensor = "image"

    def const(self, name, value, datatype=None):
        import onnx

        self.inits.append(onnx.numpy_helper.from_array(np.asarray(value, np.float32), name))
        if datatype:
            self.annotations[name] = datatype
        return name

    def node(self, op, name, inputs, domain="", **attrs):
        """Append ``op`` on the current tensor (and ``inputs``); its output becomes current."""
        import onnx

        out = f"{name}_out"
        self.nodes.append(onnx.helper.make_node(op, [self.tensor, *inputs], [out], name=name,
                                                domain=domain, **attrs))
        self.tensor = out
        return out

    def shape(self, name, shape):
        import onnx

        self.inits.append(onnx.numpy_helper.from_array(np.asarray(shape, np.int64), f"{name}_shape"))
        return self.node("Reshape", name, [f"{name}_shape"])


def _datatype(fmt):
    """The qonnx datatype of a weight format's levels (BIPOLAR, BINARY, UINTk or INTk)."""
    if fmt == "bipolar":
        return "BIPOLAR"
    levels = [int(v) for v in weight_format(fmt).levels]
    if min(levels) >= 0:
        return "BINARY" if max(levels) <= 1 else f"UINT{max(levels).bit_length()}"
    return f"INT{max(abs(v) for v in levels).bit_length() + 1}"


def _input(w, record, image_shape, max_value):
    """The input code of ``record`` on the float image (flat, or (1, H, W) when the graph starts
    on a feature map); returns the model's input shape."""
    if record.get("encoding") == "thermometer":
        t = np.asarray(record["thresholds"], np.float32) / np.float32(max_value)
        copies = len(t)
        if len(image_shape) == 3:  # (H, W, T): copies on the channel axis of (1, 1, H, W)
            h, wd, _ = image_shape
            model_shape = [1, 1, h, wd]
            w.node("Mul", "thermometer_copies", [w.const("thermometer_ones", np.ones((1, copies, 1, 1)))])
        else:  # (P*T,): pixel-major, copies on the last axis of (1, P, T)
            pixels = image_shape[0] // copies
            model_shape = [1, pixels]
            w.shape("thermometer_pixels", [1, pixels, 1])
            w.node("Mul", "thermometer_copies", [w.const("thermometer_ones", np.ones((1, 1, copies)))])
        w.node("MultiThreshold", "thermometer", [w.const("thermometer_thresholds", t.reshape(copies, 1))],
               domain=_DOMAIN, out_dtype="BIPOLAR", out_scale=2.0, out_bias=-1.0)
        if len(image_shape) == 1:
            w.shape("thermometer_vector", [1, image_shape[0]])
        return model_shape
    if record.get("encoding") not in ("quant", "pixels"):
        raise LowbitError(f"input encoding {record.get('encoding')!r} cannot be written as QONNX",
                          "export a model with a thermometer, quantized or pixel input")
    model_shape = [1, 1, image_shape[0], image_shape[1]] if len(image_shape) == 3 else [1, image_shape[0]]
    if record["encoding"] == "pixels":  # the integer pixels, annotated (FINN-ONNX)
        w.annotations[w.tensor] = f"UINT{record['bits']}"
        return model_shape
    if record["kind"] == "bipolar":  # the sign of the image, +-1: the scale does not matter
        w.node("BipolarQuant", "input_quant", [w.const("input_scale", 1.0)], domain=_DOMAIN)
        return model_shape
    # round(x / scale) on integers: the scale divides first, into a Quant of scale 1, as lowbit's
    # encoding computes it (a Quant of the scale and a Div after it would not give integers)
    w.node("Div", "input_scale", [w.const("input_divisor", record["scale"])])
    w.node("Quant", "input_quant", [w.const("input_unit", 1.0), w.const("input_zeropt", record["zero_point"]),
                                    w.const("input_bits", record["bits"])],
           domain=_DOMAIN, signed=int(record["kind"] == "int"),
           narrow=int(record["lo"] == -record["hi"] and record["kind"] == "int"), rounding_mode="ROUND")
    return model_shape


def is_lowbit_onnx(path):
    """Whether ``path`` is an ONNX model lowbit wrote (which a new export may replace)."""
    import onnx

    try:
        return onnx.load(str(path), load_external_data=False).producer_name == _PRODUCER
    except Exception:  # anything unreadable is not ours to replace
        return False


def _write_ops(w, nodes, shape, hints):
    """Append the model of the IR ``nodes`` (on values of ``shape``) to ``w``, recording each
    layer's hints; returns the shape after them."""
    import onnx

    window = None
    for node in nodes:
        if isinstance(node, SlidingWindow):
            window = node
        elif isinstance(node, MatMul):
            hints[node.name] = {"format": node.weight_format, "copies": node.copies}
            if node.weight_memory != "auto":
                hints[node.name]["weight_memory"] = node.weight_memory
            datatype = _datatype(node.weight_format)
            if window is None:  # (in, out)
                w.node("MatMul", node.name, [w.const(f"{node.name}_weights", node.weights.T, datatype)])
            else:  # (out, k, k, in) in the IR's window order -> OIHW
                k, c = window.kernel, window.channels
                oihw = node.weights.reshape(node.mh, k, k, c).transpose(0, 3, 1, 2)
                weights = w.const(f"{node.name}_weights", oihw, datatype)
                pads = [0, 0, 0, 0]
                if window.pad and (window.pad_value or 0) != 0:
                    p = window.pad
                    w.node("Pad", f"{window.name}_pad", [f"{window.name}_pads", f"{window.name}_pad_value"],
                           mode="constant")
                    w.inits.append(onnx.numpy_helper.from_array(np.array([0, 0, p, p, 0, 0, p, p], np.int64),
                                                                f"{window.name}_pads"))
                    w.const(f"{window.name}_pad_value", float(window.pad_value))
                elif window.pad:
                    pads = [window.pad] * 4
                w.node("Conv", node.name, [weights], kernel_shape=[k, k], strides=[window.stride] * 2, pads=pads)
                window = None
        elif isinstance(node, MultiThreshold):
            t = node.thresholds.astype(np.float64)
            if node.invert is not None:
                sign = np.where(node.invert, -1.0, 1.0)
                w.node("Mul", f"{node.name}_invert",
                       [w.const(f"{node.name}_sign", sign.reshape(-1, 1, 1) if len(shape) == 3 else sign)])
                t = np.where(node.invert[:, None], 1 - t[:, ::-1], t)
            if np.abs(t).max(initial=0) >= 2 ** 24:
                raise LowbitError(f"{node.name}: a threshold beyond 2**24 is not exact in float32",
                                  "this graph cannot be written as QONNX")
            bipolar = node.out_type == BIPOLAR
            w.node("MultiThreshold", node.name, [w.const(f"{node.name}_thresholds", t)], domain=_DOMAIN,
                   out_dtype="BIPOLAR" if bipolar else f"UINT{node.out_type.bits}",
                   out_scale=2.0 if bipolar else 1.0, out_bias=-1.0 if bipolar else 0.0)
        elif isinstance(node, MaxPool):
            w.node("MaxPool", node.name, [], kernel_shape=[node.kernel] * 2, strides=[node.stride] * 2)
        elif isinstance(node, Flatten):
            w.node("Transpose", f"{node.name}_hwc", [], perm=[0, 2, 3, 1])
            w.shape(node.name, [1, node.features])
        elif isinstance(node, HostAffine):
            w.node("Mul", f"{node.name}_scale", [w.const(f"{node.name}_scale_value", node.scale)])
            w.node("Add", node.name, [w.const(f"{node.name}_shift_value", node.shift)])
        elif isinstance(node, Residual):  # the body, then the skip added: body(x) + x on integers
            skip = w.tensor
            _write_ops(w, node.body, shape, hints)
            w.node("Add", node.name, [skip])
        elif isinstance(node, ArgMax):
            continue
        else:
            raise LowbitError(f"{node.name}: a {type(node).__name__} op has no QONNX form in lowbit yet",
                              "export models built of MatMul, MultiThreshold, SlidingWindow, MaxPool, "
                              "Flatten, Residual and HostAffine ops (not binary normalized layers)")
        shape = node.out_shape(shape) if not node.host else shape
    return shape


def write_qonnx(graph, max_value):
    """The QONNX ``ModelProto`` of ``graph`` (see the module docstring); ``max_value`` is the
    dataset's largest pixel, which the model's input divides by.

    Raises
    ------
    LowbitError
        If the graph holds an op with no QONNX form here (binary normalized layers), or its
        input encoding is not one lowbit applies to images.
    """
    import onnx
    from qonnx.core.datatype import DataType
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.transformation.infer_datatypes import InferDataTypes
    from qonnx.transformation.infer_shapes import InferShapes

    w = _Writer()
    shape = tuple(graph.input_shape)
    in_shape = _input(w, graph.meta.get("input") or {}, shape, max_value)
    hints = {}
    _write_ops(w, graph.nodes, shape, hints)
    outputs = graph.nodes[-2].channels if isinstance(graph.nodes[-1], ArgMax) else None
    if outputs is None:
        raise LowbitError("the graph does not end with an argmax over logits", "export a classifier")
    g = onnx.helper.make_graph(
        w.nodes, "lowbit",
        [onnx.helper.make_tensor_value_info("image", onnx.TensorProto.FLOAT, in_shape)],
        [onnx.helper.make_tensor_value_info(w.tensor, onnx.TensorProto.FLOAT, [1, outputs])], w.inits)
    proto = onnx.helper.make_model(g, producer_name=_PRODUCER, opset_imports=[
        onnx.helper.make_opsetid("", _OPSET), onnx.helper.make_opsetid(_DOMAIN, 1)])
    onnx.helper.set_model_props(proto, {HINTS_KEY: json.dumps(hints, sort_keys=True)})
    model = ModelWrapper(proto)
    for name, dt in w.annotations.items():
        model.set_tensor_datatype(name, DataType[dt])
    # FINN-ONNX datatype annotations on every tensor (BIPOLAR, UINTk, INTk), for qonnx's transforms
    return model.transform(InferShapes()).transform(InferDataTypes()).model
