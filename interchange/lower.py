"""Lowering a streamlined QONNX or FINN-ONNX model to lowbit's integer IR: the last pass after
:mod:`lowbit.interchange.streamline`, checked by :mod:`lowbit.interchange.exact`.

The model must be a chain: an input quantizer (or integer pixels), then layers of

    MatMul, Gemm or Conv with integer weights -> elementwise ops
        -> quantizer (MultiThreshold, or Trunc) [-> MaxPool]

where the elementwise ops are scalar or per-channel Mul/Div/Add/Sub, BatchNormalization, Relu and
Clip, with Reshape, Flatten and Transpose between layers, and a last fully connected layer whose
elementwise ops end at the float output. A quantized tensor may also open a residual block: it
feeds layers and an Add of their last quantized output, which becomes a :class:`Residual` op and
the activation after the Add. Each step of :func:`lower_model` does one thing:

- :func:`lowbit.interchange.inputs.input_quantizer`: the input Quant/BipolarQuant, thermometer or
  integer pixels become the recorded input encoding;
- :func:`layer_weights`, :func:`conv_weights`: integer weights are recognised as a registry format;
- :func:`layer_thresholds`: the ops left after a layer and its quantizer (after
  :func:`lowbit.interchange.streamline.absorb_into_thresholds`, a Mul by -1 at most; a Trunc's
  scales) become integer thresholds on the layer's accumulator, the layer's input meaning folded
  in, found on qonnx's own float32 execution of those ops, so they are the model's steps, not a
  re-derivation of them;
- :func:`pad_node`, :func:`_pad_value`: the model's padding becomes the IR element it stands for;
- :func:`host_affine`: the last layer's float ops become the host's affine map.

ONNX feature maps are (C, H, W) per example, the IR's are (H, W, C): a
:class:`~lowbit.interchange.tensors.Layout` follows where each element of the model's tensor sits
in the IR through the shape ops, so a Flatten or Transpose before a fully connected layer becomes
a permutation of its weight columns.

Every IR value carries what it means in the model: ``float = a * value + b`` (:class:`Meaning`),
so a quantizer's offset (a signed or {0, 1} activation feeding bipolar hardware) folds into the
next layer's thresholds.
"""

import json
import re
import dataclasses

import numpy as np

from lowbit.compiler.ir import (BIPOLAR, ArgMax, Flatten, Graph, HostAffine, MatMul, MaxPool, MultiThreshold,
                                Residual, SlidingWindow)
from lowbit.core.bounds import row_bounds
from lowbit.core.errors import LowbitError
from lowbit.core.formats import WEIGHT_FORMATS, level_table_format

from .inputs import input_quantizer
from .quantizers import quantizer_levels
from .read import QUANTIZERS, source_name
from .tensors import (ELEMENTWISE, FIX, LAYERS, Layout, Meaning, attr, is_output, only_consumer, residual_add,
                      through_shapes)

__all__ = ["lower_model", "layer_segment", "Segment", "least_reaching", "weight_format_for", "HINTS_KEY"]

def weight_format_for(layer, levels):
    """The registry format that holds every distinct level of ``levels``, or a clear error."""
    values = sorted(int(v) for v in np.unique(levels))
    for name in ("bipolar", "binary01", "ternary", "levels5", "levels9", "levels17", "pow2"):
        if set(values) <= set(WEIGHT_FORMATS[name].levels):
            return name
    try:
        return level_table_format(sorted({abs(v) for v in values} - {0})).name
    except LowbitError:
        shown = values if len(values) <= 12 else values[:6] + ["..."] + values[-6:]
        raise LowbitError(f"layer {layer!r}: its weights take the values {shown}, which fit no weight "
                          "format of lowbit", "quantize the weights to at most 5 bits "
                          "(e.g. brevitas weight_bit_width <= 5, narrow range)") from None


def _integer_weights(model, node):
    """The integer levels of the weight input of ``node``, in the model's own layout: a constant
    (:func:`lowbit.interchange.streamline.integer_weights` has made Quant weights integers)."""
    levels = model.get_initializer(node.input[1])
    if levels is None:
        raise LowbitError(f"layer {node.name!r}: its weights are not constant or quantized",
                          "quantize the weights (e.g. brevitas QuantLinear) before export")
    levels = np.asarray(levels, np.float64)
    if not np.array_equal(levels, np.round(levels)):
        raise LowbitError(f"layer {node.name!r}: its weights are float, not quantized",
                          "quantize the weights (e.g. brevitas QuantLinear) before export")
    return levels


def _bias(model, node, index):
    if len(node.input) <= index or not node.input[index]:
        return None
    bias = model.get_initializer(node.input[index])
    if bias is None:
        raise LowbitError(f"node {node.name!r}: its bias must be constant", FIX)
    return np.asarray(bias, np.float64).reshape(-1)


def layer_weights(model, node):
    """``(integer levels (out, in), bias or None)`` of a MatMul or Gemm with integer weights, in
    the model's input order."""
    if node.op_type == "Gemm" and (attr(node, "transA", 0) or attr(node, "alpha", 1.0) != 1.0
                                   or attr(node, "beta", 1.0) != 1.0):
        raise LowbitError(f"node {node.name!r}: a Gemm with transA, alpha or beta is not imported", FIX)
    levels = _integer_weights(model, node)
    if levels.ndim != 2:
        raise LowbitError(f"layer {node.name!r}: weights of shape {levels.shape} are not a matrix", FIX)
    if not (node.op_type == "Gemm" and attr(node, "transB", 0)):  # (in, out) -> (out, in)
        levels = levels.T
    return levels.astype(np.int64), _bias(model, node, 2) if node.op_type == "Gemm" else None


def _square(node, name, default):
    """One integer for a 2-D attribute whose entries must agree (kernel, strides, pads)."""
    v = list(attr(node, name, default))
    if len(set(v)) != 1:
        raise LowbitError(f"node {node.name!r}: {name} {v} differ by axis; lowbit's windows are square "
                          "and padded alike on every side", FIX)
    return int(v[0])


def conv_weights(model, node):
    """``(levels (out, k*k*in) in the IR's (ky, kx, c) order, bias, kernel, stride, pad)`` of a
    Conv with integer weights."""
    if attr(node, "group", 1) != 1 or set(attr(node, "dilations", [1, 1])) != {1}:
        raise LowbitError(f"node {node.name!r}: grouped or dilated convolutions are not imported",
                          "use group=1 and dilation=1")
    if attr(node, "auto_pad", "NOTSET") not in ("NOTSET", "VALID"):
        raise LowbitError(f"node {node.name!r}: auto_pad {attr(node, 'auto_pad', '')!r} is not imported",
                          "export with explicit pads")
    levels = _integer_weights(model, node)
    if levels.ndim != 4 or levels.shape[2] != levels.shape[3]:
        raise LowbitError(f"layer {node.name!r}: weights of shape {levels.shape} are not square 2-D kernels",
                          FIX)
    kernel = levels.shape[2]
    stride = _square(node, "strides", [1, 1])
    pad = _square(node, "pads", [0, 0, 0, 0])
    ir = levels.transpose(0, 2, 3, 1).reshape(levels.shape[0], -1)
    return ir.astype(np.int64), _bias(model, node, 2), kernel, stride, pad


class Segment:
    """The model's own float ops from a layer's output to ``end``, run by qonnx on a batch of rows:
    what the layer's accumulator becomes, in the model's float32 arithmetic. A convolution's rows
    are 1 x 1 feature maps, so that per-channel constants of shape (1, C, 1, 1) broadcast as in
    the model."""

    def __init__(self, model, nodes, start, end, channels, spatial=False):
        self.model, self.nodes, self.start, self.end, self.channels = model, nodes, start, end, channels
        self.tail = (1, 1) if spatial else ()
        self._built = {}

    def _wrapper(self, rows):
        import onnx
        from qonnx.core.modelwrapper import ModelWrapper
        from qonnx.transformation.infer_shapes import InferShapes

        if rows not in self._built:
            names = {i for n in self.nodes for i in n.input}
            inits = [i for i in self.model.graph.initializer if i.name in names]
            shape = [rows, self.channels, *self.tail]
            graph = onnx.helper.make_graph(
                list(self.nodes), "segment",
                [onnx.helper.make_tensor_value_info(self.start, onnx.TensorProto.FLOAT, shape)],
                [onnx.helper.make_tensor_value_info(self.end, onnx.TensorProto.FLOAT, shape)], inits)
            proto = onnx.helper.make_model(graph, opset_imports=list(self.model.model.opset_import))
            self._built[rows] = ModelWrapper(proto).transform(InferShapes())
        return self._built[rows]

    def __call__(self, y):
        from qonnx.core.onnx_exec import execute_onnx

        y = np.asarray(y, np.float32)
        if not self.nodes:
            return y
        out = execute_onnx(self._wrapper(len(y)), {self.start: y.reshape(len(y), self.channels, *self.tail)})
        return out[self.end].reshape(len(y), self.channels)


def layer_segment(model, start, channels, spatial):
    """The model's ops from a layer's output tensor ``start`` through the next quantizer."""
    chain, quantizer = _chain(model, start)
    return Segment(model, chain + [quantizer], start, quantizer.output[0], channels, spatial)


def _chain(model, tensor):
    """The elementwise nodes after ``tensor`` up to a quantizer (returned too) or the output."""
    nodes = []
    while True:
        node = only_consumer(model, tensor)
        if node is None:
            return nodes, None
        if node.op_type in QUANTIZERS:
            return nodes, node
        if node.op_type not in ELEMENTWISE:
            raise LowbitError(f"node {node.name!r} ({node.op_type}) follows a layer where lowbit expects "
                              f"scales, BatchNorm, ReLU or a quantizer ({', '.join(ELEMENTWISE)})", FIX)
        for other in node.input[1:]:
            if other and model.get_initializer(other) is None:
                raise LowbitError(f"node {node.name!r}: its input {other!r} must be a constant", FIX)
        nodes.append(node)
        tensor = node.output[0]


def least_reaching(lo, hi, reaches):
    """Elementwise, the least integer ``k`` in ``[lo, hi]`` with ``reaches(k)`` true, or ``hi + 1``
    where none is; ``reaches`` is monotone (false, then true) in every element and is called on
    arrays of ``lo``'s shape, with values in ``[lo, hi]``."""
    a, b = np.array(lo, np.int64), np.array(hi, np.int64) + 1
    while np.any(a < b):
        mid = (a + b) // 2
        ok = reaches(np.minimum(mid, hi)) & (a < b)
        b = np.where(ok, mid, b)
        a = np.where(~ok & (a < b), mid + 1, a)
    return b


def layer_thresholds(gain, offset, lo, hi, segment, levels):
    """Thresholds on the accumulator ``acc`` of a layer whose model value is ``gain * acc +
    offset`` (float32, per channel), through ``segment`` to a quantizer of ``levels``.

    Returns ``(thresholds (C, L), invert (C,) or None, out type)``; the counts are found by
    binary search of the segment's own execution over each channel's reachable ``[lo, hi]``.
    """
    channels, n = len(gain), levels.count
    out_type = levels.ir_type
    L = 1 if out_type == BIPOLAR else 2 ** out_type.bits - 1

    def counts(acc):  # acc (R, C) of int64 -> counts (R, C)
        y = (gain * acc.astype(np.float64) + offset).astype(np.float32)
        return levels.counts(segment(y))

    ends = counts(np.stack([lo, hi]))
    invert = ends[1] < ends[0]

    def rank(acc):  # non-decreasing in acc on every channel
        c = counts(acc)
        return np.where(invert, n - 1 - c, c)

    found = np.empty((channels, n - 1), np.int64)
    for k in range(1, n):  # hi + 1 stands for never
        found[:, k - 1] = least_reaching(lo, hi, lambda acc: rank(acc[None])[0] >= k)
    pad = L - (n - 1)
    # Unused levels of a uint k output: never reached on rising channels, always on inverted ones.
    never = np.repeat((hi + 1)[:, None], pad, axis=1)
    always = np.repeat(lo[:, None], pad, axis=1)
    thresholds = np.where(invert[:, None], np.concatenate([always, found], 1), np.concatenate([found, never], 1))
    return thresholds, (invert if invert.any() else None), out_type


def host_affine(name, gain, offset, lo, hi, segment):
    """The host's ``scale * acc + shift`` for a last layer whose float ops are affine."""
    probe = np.stack([np.zeros_like(lo), np.maximum(hi, 1), np.minimum(lo, -1)])
    out = segment((gain * probe.astype(np.float64) + offset).astype(np.float32)).astype(np.float64)
    scale = (out[1] - out[0]) / probe[1]
    back = out[0] + scale * probe[2]
    if not np.allclose(back, out[2], rtol=1e-4, atol=1e-4 * np.abs(out).max()):
        raise LowbitError(f"layer {name!r}: the ops after the last layer are not affine (a ReLU or clip "
                          "before the output?)", "end the model with the last layer's scale, bias or BatchNorm")
    return HostAffine(f"{name}_affine", scale, out[0])


# The model's metadata key under which `lowbit export --qonnx` records what ONNX cannot say of a
# layer: its weight format (ternary weights may all be +-1), tiled copies and weight memory.
HINTS_KEY = "lowbit.layers"


def _layer_hints(model):
    """``{node name: {"format", "copies"[, "weight_memory"]}}`` from a model written by lowbit,
    else empty."""
    props = {p.key: p.value for p in model.model.metadata_props}
    try:
        return dict(json.loads(props.get(HINTS_KEY, "{}")))
    except (ValueError, TypeError):
        raise LowbitError(f"the model's metadata {HINTS_KEY!r} is not a JSON object",
                          "remove it, or write the model again with lowbit export --qonnx") from None


def integer_thresholds(model, chain, quantizer, channels):
    """A MultiThreshold right on an integer accumulator, with at most a Mul by +-1 per channel
    between: ``(thresholds (C, L), invert or None)`` read off the node as they are, unreachable
    levels included (so that a model lowbit wrote comes back unchanged); None for other chains."""
    if quantizer.op_type != "MultiThreshold" or len(chain) > 1 or (chain and chain[0].op_type != "Mul"):
        return None
    thr = model.get_initializer(quantizer.input[1])
    if thr is None or thr.shape[0] not in (1, channels) or (thr.shape[1] + 1) & thr.shape[1]:
        return None  # uint outputs need 2**k - 1 thresholds
    thr = np.broadcast_to(np.asarray(thr, np.float64), (channels, thr.shape[1]))
    sign = np.ones(channels)
    if chain:
        c = model.get_initializer(chain[0].input[1])
        if c is None or c.size not in (1, channels) or not np.all(np.abs(c) == 1):
            return None
        sign = np.broadcast_to(np.asarray(c, np.float64).reshape(-1), (channels,))
    # -acc >= t  <=>  acc <= -t  <=>  not acc >= floor(-t) + 1 (acc an integer): an inverted count
    t = np.where(sign[:, None] > 0, np.ceil(thr), np.floor(-thr) + 1)
    if not np.all(np.abs(t) < 2 ** 62):
        return None
    invert = sign < 0
    return np.sort(t, axis=1).astype(np.int64), (invert if invert.any() else None)


def _feature_map(node, layout):
    """The IR's (H, W, C) of a layer's input, which must be a feature map in the IR's layout."""
    if layout.name != "chw":
        raise LowbitError(f"node {node.name!r} ({node.op_type}) takes a tensor that is not an "
                          "(N, C, H, W) feature map in the order of the model's layers", FIX)
    return layout.ir_shape


def _check_out_shape(model, node, shape):
    """The model's (C, OH, OW) of ``node``'s output must be what the IR computes, (OH, OW, C)."""
    got = tuple(model.get_tensor_shape(node.output[0])[1:])
    if got != (shape[2], shape[0], shape[1]):
        raise LowbitError(f"node {node.name!r}: its output shape {got} is not the "
                          f"{(shape[2], shape[0], shape[1])} of floor-mode windows", "export with ceil_mode=0")


def maxpool(model, node, layout, in_type, name):
    """The IR MaxPool of an ONNX MaxPool on quantized values (a monotone map commutes with max)."""
    h, w, c = _feature_map(node, layout)
    if set(attr(node, "pads", [0])) != {0} or set(attr(node, "dilations", [1])) != {1} or \
            attr(node, "auto_pad", "NOTSET") not in ("NOTSET", "VALID") or len(node.output) > 1:
        raise LowbitError(f"node {node.name!r}: a padded, dilated or index-returning MaxPool is not "
                          "imported", "use MaxPool2d(k) with padding 0")
    k = _square(node, "kernel_shape", [])
    pool = MaxPool(name, c, k, _square(node, "strides", [1, 1]), in_type=in_type)
    _check_out_shape(model, node, pool.out_shape((h, w, c)))
    return pool


def _pad_value(name, meaning, vtype, value):
    """The IR element that stands for the model's padding ``value``: ``a * v + b = value``."""
    v = (value - meaning.b) / meaning.a
    if v != round(v) or not vtype.holds(int(round(v))):
        raise LowbitError(f"layer {name!r} pads its input with {value:g}, which is not a level of its "
                          f"input {vtype} (levels {meaning.a:g} * v + {meaning.b:g})",
                          "export the convolution with padding=0, or pad with a level of its input")
    return int(round(v))


def pad_node(model, node):
    """``(pad, value, name)`` of a constant Pad on the two spatial axes alike."""
    if attr(node, "mode", "constant") != "constant":
        raise LowbitError(f"node {node.name!r}: only constant padding is imported", FIX)
    pads = model.get_initializer(node.input[1]) if len(node.input) > 1 else attr(node, "pads", None)
    value = model.get_initializer(node.input[2]) if len(node.input) > 2 and node.input[2] else \
        attr(node, "value", 0.0)
    if len(node.input) > 3 and node.input[3]:
        raise LowbitError(f"node {node.name!r}: a Pad with axes is not imported", "pad all four axes")
    pads = None if pads is None else [int(v) for v in np.asarray(pads).reshape(-1)]
    if pads is None or value is None or len(pads) != 8 or pads[:2] != [0, 0] or pads[4:6] != [0, 0] \
            or len({pads[2], pads[3], pads[6], pads[7]}) != 1:
        raise LowbitError(f"node {node.name!r}: lowbit imports a constant Pad of H and W alike, not {pads}",
                          FIX)
    return pads[2], float(np.asarray(value).reshape(())), node.name


def lower_model(model, *, max_value, dataset, input_encoding=None):
    """The IR graph of a cleaned model (:func:`lowbit.interchange.read.read_onnx`), and the
    meanings of its quantized tensors (for the exactness check). ``input_encoding`` is
    ``"pixels"`` for a model without an input quantizer that takes the integer pixels."""
    enc, vtype, meaning, tensor, layout = input_quantizer(model, max_value, input_encoding)
    in_vtype, in_shape = vtype, layout.ir_shape
    hints = _layer_hints(model)
    used = set()

    def named(node, fallback):
        """The node's name in the file if it can name an IR op (and hardware), else ``fallback``."""
        name = source_name(node)
        name = name if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name or "") else fallback
        name = fallback if name in used else name
        used.add(name)
        return name

    def activation(quantizer, chain, start, acc_name, acc_type, gain, offset, lo, hi, spatial, fallback):
        """The MultiThreshold of ``quantizer`` after ``chain`` from the accumulator ``start`` (IR op
        ``acc_name``, of type ``acc_type``), whose model value is ``gain * acc + offset``."""
        qlevels = quantizer_levels(model, quantizer)
        channels = len(gain)
        exact = integer_thresholds(model, chain, quantizer, channels) \
            if np.all(gain == 1) and np.all(offset == 0) else None
        if exact is not None:
            (thresholds, invert), out_type = exact, qlevels.ir_type
        else:
            segment = Segment(model, chain + [quantizer], start, quantizer.output[0], channels, spatial)
            thresholds, invert, out_type = layer_thresholds(gain, offset, lo, hi, segment, qlevels)
        mt = MultiThreshold(named(quantizer, fallback), thresholds, acc_type, out_type, invert)
        end = quantizer.output[0]
        layout = Layout.of(model.get_tensor_shape(end)[1:])
        meaning = dataclasses.replace(qlevels.meaning(mt.name, end, layout.name), layer={
            "acc": acc_name, "start": start, "spatial": spatial,
            "gain": gain.tolist(), "offset": np.broadcast_to(offset, gain.shape).tolist()})
        return mt, meaning, layout

    def residual(block, tensor, layout, meaning, vtype):
        """Close ``block`` at the body's last quantized ``tensor``: the Residual op, then the
        activation after its Add. Returns the next ``(tensor, layout, meaning, vtype)``."""
        add, skip = block["add"], block["meaning"]
        body = nodes[block["start"]:]
        if layout.ir_shape != block["layout"].ir_shape or any(isinstance(n, (MaxPool, Flatten)) for n in body):
            raise LowbitError(f"node {add.name!r}: the residual body changes the shape of its input", FIX)
        if meaning.a != skip.a:
            raise LowbitError(f"node {add.name!r}: the residual add sums tensors of two scales ({skip.a:g} and "
                              f"{meaning.a:g}); lowbit adds integers of one scale",
                              "quantize the block's input and its body's output with one shared quantizer")
        res = Residual(named(add, f"res{index}"), tuple(body), block["vtype"])
        nodes[block["start"]:] = [res]
        chain, quantizer = _chain(model, add.output[0])
        if quantizer is None:
            raise LowbitError(f"node {add.name!r}: a residual add must be followed by a quantizer", FIX)
        channels = layout.ir_shape[-1]
        # model value of the sum: (a v_skip + b_skip) + (a v_body + b_body)
        gain, offset = np.full(channels, np.float64(meaning.a)), np.full(channels, np.float64(skip.b + meaning.b))
        bound = np.full(channels, 1, np.int64)
        mt, meaning, layout = activation(quantizer, chain, add.output[0], res.name, res.out_type, gain, offset,
                                         bound * res.out_type.min, bound * res.out_type.max,
                                         len(layout.ir_shape) == 3, f"{res.name}_act")
        nodes.append(mt)
        meanings.append(meaning)
        if is_output(model, quantizer.output[0]):
            raise LowbitError(f"the model ends at the residual block {add.name!r}",
                              "end the model with a fully connected layer")
        return quantizer.output[0], layout, meaning, mt.out_type

    meanings, nodes, formats = [meaning], [], []
    index = 0
    block = None  # the open residual block: its Add, and the skip's meaning, type and first op
    while True:
        if block is not None and tensor in block["add"].input:  # the body's end: close the block
            tensor, layout, meaning, vtype = residual(block, tensor, layout, meaning, vtype)
            block = None
            continue
        add = residual_add(model, tensor)
        if add is not None:
            if block is not None:
                raise LowbitError(f"node {add.name!r}: a residual block inside another is not imported", FIX)
            block = {"add": add, "meaning": meaning, "vtype": vtype, "layout": layout, "start": len(nodes)}
        shapes = []
        node, tensor, layout = through_shapes(model, tensor, layout, shapes, skip=add)
        if node is None:
            raise LowbitError(f"the model ends at quantized tensor {tensor!r} with no layer after it", FIX)
        padding = None
        if node.op_type == "Pad" and node.input[0] == tensor:  # a constant pad before a Conv
            padding, tensor = pad_node(model, node), node.output[0]
            node = only_consumer(model, tensor)
            if node is None or node.op_type != "Conv":
                raise LowbitError(f"node {padding[2]!r}: a Pad must feed a Conv", FIX)
        if node.op_type == "MaxPool" and node.input[0] == tensor:
            pool = maxpool(model, node, layout, vtype, named(node, f"pool{index}"))
            nodes.append(pool)
            tensor, layout = node.output[0], Layout.of(model.get_tensor_shape(node.output[0])[1:])
            meaning = Meaning(pool.name, tensor, meaning.a, meaning.b, layout.name)
            meanings.append(meaning)
            continue
        if node.op_type not in LAYERS or node.input[0] != tensor:
            raise LowbitError(f"node {node.name!r} ({node.op_type}) is where lowbit expects a "
                              f"{', '.join(LAYERS)} or MaxPool layer", FIX)
        index += 1
        conv = node.op_type == "Conv"
        if conv:
            name = named(node, f"conv{index}")
            h, w, c = _feature_map(node, layout)
            levels, bias, k, stride, pad = conv_weights(model, node)
            if levels.shape[1] != k * k * c:
                raise LowbitError(f"layer {node.name!r}: {levels.shape[1] // (k * k)} input channels, "
                                  f"but its input has {c}", FIX)
            pad_value = _pad_value(node.name, meaning, vtype, 0.0) if pad else None
            if padding is not None:
                if pad:
                    raise LowbitError(f"layer {node.name!r} is padded twice (a Pad and its own pads)", FIX)
                pad = padding[0]
                pad_value = _pad_value(node.name, meaning, vtype, padding[1])
            window = SlidingWindow(f"{name}_window", c, k, stride, pad,
                                   None if pad_value == 0 and vtype != BIPOLAR else pad_value, vtype)
            nodes.append(window)
            out_shape = window.out_shape((h, w, c))[:2] + (levels.shape[0],)
            _check_out_shape(model, node, out_shape)
        else:
            name = named(node, f"fc{index}")
            if len(layout.ir_shape) == 3:
                nodes.append(Flatten(named(shapes[-1], f"flatten{index}") if shapes else f"flatten{index}",
                                     layout.ir_shape, vtype))
            if layout.pos.ndim != 1:
                raise LowbitError(f"layer {node.name!r} takes a tensor of shape {layout.pos.shape}, not "
                                  "a vector", "flatten the feature map before a fully connected layer")
            model_levels, bias = layer_weights(model, node)
            levels = np.empty_like(model_levels)
            levels[:, layout.pos] = model_levels  # the model's input order -> the IR's
        hint = hints.get(source_name(node), {})
        fmt = hint.get("format") or weight_format_for(node.name, levels)
        formats.append(fmt)
        mm = MatMul(name, levels, fmt, vtype, copies=int(hint.get("copies", 1)),
                    weight_memory=hint.get("weight_memory", "auto"))
        nodes.append(mm)
        # model value of the layer's output: sum_i (a v_i + b) W_ij = a acc_j + b colsum_j (the
        # weight scale is a Mul after the layer); a padded position's v stands for the model's 0:
        # a v + b = 0 there, as in the model
        gain = np.full(levels.shape[0], np.float64(meaning.a))
        offset = np.float64(meaning.b) * levels.sum(axis=1)
        if bias is not None:
            offset = offset + bias
        lo, hi = row_bounds(levels, vtype.min, vtype.max)
        chain, quantizer = _chain(model, node.output[0])
        if quantizer is None:
            end = chain[-1].output[0] if chain else node.output[0]
            if conv or block is not None or not is_output(model, end):
                raise LowbitError(f"tensor {end!r} after layer {node.name!r} is neither quantized nor the "
                                  "output of a last fully connected layer", FIX)
            segment = Segment(model, chain, node.output[0], end, mm.mh, conv)
            nodes += [host_affine(name, gain, offset, lo, hi, segment), ArgMax("argmax", mm.mh)]
            break
        mt, meaning, layout = activation(quantizer, chain, node.output[0], mm.name, mm.out_type, gain, offset,
                                         lo, hi, conv, f"{name}_act")
        nodes.append(mt)
        meanings.append(meaning)
        end = quantizer.output[0]
        vtype, tensor = mt.out_type, end
        if is_output(model, end):
            if conv:
                raise LowbitError(f"the model ends at the convolution {node.name!r}",
                                  "end the model with a fully connected layer")
            nodes += [HostAffine(f"{name}_affine", np.full(mm.mh, meaning.a), np.full(mm.mh, meaning.b)),
                      ArgMax("argmax", mm.mh)]
            break
    if block is not None:
        raise LowbitError(f"node {block['add'].name!r}: the residual add is never reached from its block's "
                          "body", FIX)
    meta = {"input": enc.to_dict(), "dataset": dataset,
            "formats": {"weights": formats, "source": "onnx"},
            "import": {"tensors": [m.to_dict() for m in meanings]}}
    return Graph(in_vtype, in_shape, nodes, meta)
