"""Lowering a cleaned QONNX or FINN-ONNX model to lowbit's integer IR.

The model must be a chain (a fully connected network): an input quantizer, then layers of

    MatMul or Gemm with quantized weights -> elementwise ops -> quantizer

where the elementwise ops are scalar or per-channel Mul/Div/Add/Sub, BatchNormalization, Relu and
Clip, and a last layer whose elementwise ops end at the float output. Each step of
:func:`lower_model` does one thing:

- :func:`input_quantizer`: the input Quant/BipolarQuant becomes the recorded input encoding;
- :func:`layer_weights`: Quant/BipolarQuant weights (or integer weights of a FINN-ONNX model)
  become integer levels of a registry format and a per-channel scale;
- :func:`layer_thresholds`: scales, bias, BatchNorm and the next quantizer (Quant, BipolarQuant
  or MultiThreshold) become integer thresholds on the layer's accumulator, found on qonnx's own
  float32 execution of those ops, so they are the model's steps, not a re-derivation of them;
- :func:`host_affine`: the last layer's float ops become the host's affine map.

Every IR value carries what it means in the model: ``float = a * value + b`` (:class:`Meaning`),
so a quantizer's offset (a signed or {0, 1} activation feeding bipolar hardware) folds into the
next layer's thresholds.
"""

import math
from dataclasses import dataclass

import numpy as np

from lowbit.compiler.ir import BIPOLAR, ArgMax, Graph, HostAffine, MatMul, MultiThreshold, ValueType
from lowbit.core.bounds import row_bounds
from lowbit.core.errors import LowbitError
from lowbit.core.formats import WEIGHT_FORMATS, level_table_format

__all__ = ["lower_model", "Meaning", "ELEMENTWISE"]

ELEMENTWISE = ("Mul", "Div", "Add", "Sub", "BatchNormalization", "Relu", "Clip", "Identity")
_SHAPE_OPS = ("Reshape", "Flatten", "Identity")
_FIX = "see the README's 'Models in' for the layer patterns lowbit imports"


@dataclass(frozen=True)
class Meaning:
    """An IR tensor and the model tensor it stands for: ``model = a * ir + b``, elementwise."""

    ir: str
    tensor: str
    a: float
    b: float

    def to_dict(self):
        return {"ir": self.ir, "tensor": self.tensor, "a": self.a, "b": self.b}


def _scalar(model, node, index, what):
    v = model.get_initializer(node.input[index])
    if v is None or np.asarray(v).size != 1:
        raise LowbitError(f"node {node.name!r}: its {what} must be one constant, not "
                          f"{'a computed tensor' if v is None else f'an array of shape {np.shape(v)}'}",
                          "export per-tensor quantizers for activations and inputs")
    return float(np.asarray(v).reshape(()))


def _attr(node, name, default):
    from qonnx.util.basic import get_by_name

    a = get_by_name(node.attribute, name)
    if a is None:
        return default
    import onnx

    v = onnx.helper.get_attribute_value(a)
    return v.decode() if isinstance(v, bytes) else v


def _only_consumer(model, tensor):
    users = model.find_consumers(tensor) or []
    if len(users) > 1:
        raise LowbitError(f"tensor {tensor!r} feeds {len(users)} nodes "
                          f"({', '.join(u.name for u in users)}); lowbit imports chains",
                          "residual and branching models are not imported yet")
    return users[0] if users else None


def _is_output(model, tensor):
    return any(o.name == tensor for o in model.graph.output)


# -- the quantizers ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class _Levels:
    """A quantizer's output as counts ``c = 0..count-1`` of its levels: ``model = step * c + offset``."""

    count: int
    step: float
    offset: float

    def counts(self, out):
        """Counts of the quantizer's float outputs."""
        return np.round((np.asarray(out, np.float64) - self.offset) / self.step).astype(np.int64)

    @property
    def ir_type(self):
        return BIPOLAR if self.count == 2 else ValueType("uint", max(1, math.ceil(math.log2(self.count))))

    def meaning(self, ir, tensor):
        """``model = a * v + b`` of the IR value v: a count, or ±1 on two levels."""
        if self.count == 2:  # v = 2c - 1
            return Meaning(ir, tensor, self.step / 2, self.offset + self.step / 2)
        return Meaning(ir, tensor, self.step, self.offset)


def quantizer_levels(model, node):
    """The output levels of a Quant, BipolarQuant or MultiThreshold node."""
    from qonnx.custom_op.general.intquant import max_int, min_int

    if node.op_type == "BipolarQuant":
        s = _scalar(model, node, 1, "scale")
        return _Levels(2, 2 * s, -s)
    if node.op_type == "MultiThreshold":
        thr = model.get_initializer(node.input[1])
        if thr is None:
            raise LowbitError(f"node {node.name!r}: its thresholds must be constant", _FIX)
        return _Levels(thr.shape[1] + 1, float(_attr(node, "out_scale", 1.0)), float(_attr(node, "out_bias", 0.0)))
    s = _scalar(model, node, 1, "scale")
    zp = _scalar(model, node, 2, "zero point")
    bits = _scalar(model, node, 3, "bit width")
    signed, narrow = bool(_attr(node, "signed", 1)), bool(_attr(node, "narrow", 0))
    if bits != int(bits) or not 1 <= bits <= 16:
        raise LowbitError(f"node {node.name!r}: bit width {bits:g} is not an integer in 1..16", _FIX)
    if _attr(node, "rounding_mode", "ROUND").upper() not in ("ROUND", "HALF_EVEN"):
        raise LowbitError(f"node {node.name!r}: rounding mode {_attr(node, 'rounding_mode', '')!r} is not "
                          "supported", "export with ROUND (half to even), Brevitas' default")
    if int(bits) == 1 and signed:  # qonnx's 1-bit signed Quant is the sign, like BipolarQuant
        return _Levels(2, 2 * s, -s)
    lo, hi = int(min_int(signed, narrow, int(bits))), int(max_int(signed, narrow, int(bits)))
    return _Levels(hi - lo + 1, s, s * (lo - zp))


# -- the passes -------------------------------------------------------------------------------------

def input_quantizer(model, max_value):
    """The input's shape ops and quantizer: ``(encoding record, IR input type, its meaning, the
    quantizer's output tensor, the per-example input size)``."""
    from lowbit.model.data import QuantInput
    from qonnx.custom_op.general.intquant import max_int, min_int

    tensor = model.graph.input[0].name
    shape = model.get_tensor_shape(tensor)
    node = _only_consumer(model, tensor)
    while node is not None and node.op_type in _SHAPE_OPS:
        node = _only_consumer(model, node.output[0])
    if node is None or node.op_type not in ("Quant", "BipolarQuant"):
        found = "nothing" if node is None else f"a {node.op_type} ({node.name!r})"
        raise LowbitError(f"the input is not quantized: it reaches {found} before any Quant or "
                          "BipolarQuant", "quantize the model's input (e.g. a QuantIdentity first), or "
                          "pass --input-encoding to say how lowbit should encode images")
    features = int(np.prod(shape[1:]))
    if node.op_type == "BipolarQuant" or (int(_scalar(model, node, 3, "bit width")) == 1
                                            and bool(_attr(node, "signed", 1))):
        enc = QuantInput("bipolar", 1, _scalar(model, node, 1, "scale"), 0.0, -1, 1, max_value)
        return enc, BIPOLAR, Meaning("input", node.output[0], enc.scale, 0.0), node.output[0], features
    levels = quantizer_levels(model, node)
    zp = _scalar(model, node, 2, "zero point")
    if zp != 0:
        raise LowbitError(f"input quantizer {node.name!r} has zero point {zp:g}",
                          "export the input quantizer with zero point 0")
    signed, narrow, bits = bool(_attr(node, "signed", 1)), bool(_attr(node, "narrow", 0)), \
        int(_scalar(model, node, 3, "bit width"))
    lo, hi = int(min_int(signed, narrow, bits)), int(max_int(signed, narrow, bits))
    kind = "int" if signed else "uint"
    enc = QuantInput(kind, bits, levels.step, 0.0, lo, hi, max_value)
    return enc, ValueType(kind, bits), Meaning("input", node.output[0], levels.step, 0.0), node.output[0], \
        features


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


def layer_weights(model, node):
    """``(integer levels (out, in), per-output-channel scale (out,), bias or None)`` of a MatMul
    or Gemm whose weights are quantized constants."""
    from qonnx.custom_op.general.intquant import max_int, min_int

    if node.op_type == "Gemm" and (_attr(node, "transA", 0) or _attr(node, "alpha", 1.0) != 1.0
                                   or _attr(node, "beta", 1.0) != 1.0):
        raise LowbitError(f"node {node.name!r}: a Gemm with transA, alpha or beta is not imported", _FIX)
    wname = node.input[1]
    w = model.get_initializer(wname)
    producer = model.find_producer(wname)
    if w is not None:  # FINN-ONNX: integer weights, annotated with their datatype
        levels, scale = np.asarray(w, np.float64), None
        if not np.array_equal(levels, np.round(levels)):
            raise LowbitError(f"layer {node.name!r}: its weights are float, not quantized",
                              "quantize the weights (e.g. brevitas QuantLinear) before export")
    elif producer is not None and producer.op_type in ("Quant", "BipolarQuant"):
        wf = model.get_initializer(producer.input[0])
        s = model.get_initializer(producer.input[1])
        if wf is None or s is None:
            raise LowbitError(f"layer {node.name!r}: its weight quantizer has computed inputs", _FIX)
        wf, s = np.asarray(wf, np.float32), np.broadcast_to(np.asarray(s, np.float32), wf.shape)
        if producer.op_type == "BipolarQuant" or (int(_scalar(model, producer, 3, "bit width")) == 1
                                                  and bool(_attr(producer, "signed", 1))):
            levels = np.where(wf >= 0, 1.0, -1.0)
        else:
            zp = _scalar(model, producer, 2, "zero point")
            if zp != 0:
                raise LowbitError(f"layer {node.name!r}: weight zero point {zp:g} is not 0",
                                  "export symmetric weight quantizers")
            bits = int(_scalar(model, producer, 3, "bit width"))
            signed, narrow = bool(_attr(producer, "signed", 1)), bool(_attr(producer, "narrow", 0))
            levels = np.round(np.clip(wf / s, min_int(signed, narrow, bits), max_int(signed, narrow, bits)))
        scale = s
    else:
        raise LowbitError(f"layer {node.name!r}: its weights are not constant or quantized",
                          "quantize the weights (e.g. brevitas QuantLinear) before export")
    bias = None
    if node.op_type == "Gemm":
        if _attr(node, "transB", 0):
            levels = levels.T
            scale = None if scale is None else scale.T
        if len(node.input) > 2 and node.input[2]:
            bias = model.get_initializer(node.input[2])
            if bias is None:
                raise LowbitError(f"node {node.name!r}: its bias must be constant", _FIX)
    if levels.ndim != 2:
        raise LowbitError(f"layer {node.name!r}: weights of shape {levels.shape} are not a matrix", _FIX)
    if scale is None:
        col = np.ones(levels.shape[1], np.float32)
    else:
        col = scale[0]
        if not np.all(scale == col):
            raise LowbitError(f"layer {node.name!r}: its weight scale varies within an output channel",
                              "export per-tensor or per-output-channel weight scales")
    return levels.T.astype(np.int64), col.astype(np.float32), bias


class _Segment:
    """The model's own float ops from a layer's MatMul output to ``end``, run by qonnx on a batch
    of rows: what the layer's accumulator becomes, in the model's float32 arithmetic."""

    def __init__(self, model, nodes, start, end, channels):
        self.model, self.nodes, self.start, self.end, self.channels = model, nodes, start, end, channels
        self._built = {}

    def _wrapper(self, rows):
        import onnx
        from qonnx.core.modelwrapper import ModelWrapper
        from qonnx.transformation.infer_shapes import InferShapes

        if rows not in self._built:
            names = {i for n in self.nodes for i in n.input}
            inits = [i for i in self.model.graph.initializer if i.name in names]
            graph = onnx.helper.make_graph(
                list(self.nodes), "segment",
                [onnx.helper.make_tensor_value_info(self.start, onnx.TensorProto.FLOAT, [rows, self.channels])],
                [onnx.helper.make_tensor_value_info(self.end, onnx.TensorProto.FLOAT, [rows, self.channels])], inits)
            proto = onnx.helper.make_model(graph, opset_imports=list(self.model.model.opset_import))
            self._built[rows] = ModelWrapper(proto).transform(InferShapes())
        return self._built[rows]

    def __call__(self, y):
        from qonnx.core.onnx_exec import execute_onnx

        y = np.asarray(y, np.float32)
        if not self.nodes:
            return y
        return execute_onnx(self._wrapper(len(y)), {self.start: y})[self.end]


def _chain(model, tensor):
    """The elementwise nodes after ``tensor`` up to a quantizer (returned too) or the output."""
    nodes = []
    while True:
        node = _only_consumer(model, tensor)
        if node is None:
            return nodes, None
        if node.op_type in ("Quant", "BipolarQuant", "MultiThreshold"):
            return nodes, node
        if node.op_type not in ELEMENTWISE:
            raise LowbitError(f"node {node.name!r} ({node.op_type}) follows a layer where lowbit expects "
                              f"scales, BatchNorm, ReLU or a quantizer ({', '.join(ELEMENTWISE)})", _FIX)
        for other in node.input[1:]:
            if other and model.get_initializer(other) is None:
                raise LowbitError(f"node {node.name!r}: its input {other!r} must be a constant", _FIX)
        nodes.append(node)
        tensor = node.output[0]


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
    for k in range(1, n):
        a, b = lo.copy(), hi + 1  # invariant: rank(b) >= k, where hi + 1 stands for never
        while np.any(a < b):
            mid = (a + b) // 2
            ok = (rank(mid[None])[0] >= k) & (a < b)
            b = np.where(ok, mid, b)
            a = np.where(~ok & (a < b), mid + 1, a)
        found[:, k - 1] = b
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


def lower_model(model, *, max_value, dataset):
    """The IR graph of a cleaned model (:func:`lowbit.interchange.read.read_onnx`), and the
    meanings of its quantized tensors (for the exactness check)."""
    enc, vtype, meaning, tensor, features = input_quantizer(model, max_value)
    meanings, nodes, formats = [meaning], [], []
    index = 0
    while True:
        node = _only_consumer(model, tensor)
        while node is not None and node.op_type in _SHAPE_OPS:
            tensor, node = node.output[0], _only_consumer(model, node.output[0])
        if node is None:
            raise LowbitError(f"the model ends at quantized tensor {tensor!r} with no layer after it", _FIX)
        if node.op_type not in ("MatMul", "Gemm") or node.input[0] != tensor:
            raise LowbitError(f"node {node.name!r} ({node.op_type}) is where lowbit expects a MatMul or "
                              "Gemm layer", _FIX)
        index += 1
        name = f"fc{index}"
        levels, wscale, bias = layer_weights(model, node)
        fmt = weight_format_for(node.name, levels)
        formats.append(fmt)
        mm = MatMul(name, levels, fmt, vtype)
        # model value of the MatMul output: sum_i (a v_i + b) W_ij = a s_j acc_j + b s_j colsum_j
        gain = np.float64(meaning.a) * wscale.astype(np.float64)
        offset = np.float64(meaning.b) * wscale.astype(np.float64) * levels.sum(axis=1)
        if bias is not None:
            offset = offset + np.asarray(bias, np.float64)
        lo, hi = row_bounds(levels, vtype.min, vtype.max)
        chain, quantizer = _chain(model, node.output[0])
        end = quantizer.output[0] if quantizer is not None else (chain[-1].output[0] if chain else node.output[0])
        segment = _Segment(model, chain + ([quantizer] if quantizer else []), node.output[0], end, mm.mh)
        nodes.append(mm)
        if quantizer is None:
            if not _is_output(model, end):
                raise LowbitError(f"tensor {end!r} after layer {node.name!r} is neither quantized nor the "
                                  "model's output", _FIX)
            nodes += [host_affine(name, gain, offset, lo, hi, segment), ArgMax("argmax", mm.mh)]
            break
        qlevels = quantizer_levels(model, quantizer)
        thresholds, invert, out_type = layer_thresholds(gain, offset, lo, hi, segment, qlevels)
        mt = MultiThreshold(f"{name}_act", thresholds, mm.out_type, out_type, invert)
        nodes.append(mt)
        meaning = qlevels.meaning(mt.name, end)
        meanings.append(meaning)
        vtype, tensor = mt.out_type, end
        if _is_output(model, end):
            nodes += [HostAffine(f"{name}_affine", np.full(mm.mh, meaning.a), np.full(mm.mh, meaning.b)),
                      ArgMax("argmax", mm.mh)]
            break
    meta = {"input": enc.to_dict(), "dataset": dataset,
            "formats": {"weights": formats, "source": "onnx"},
            "import": {"tensors": [m.to_dict() for m in meanings]}}
    in_type = BIPOLAR if enc.kind == "bipolar" else ValueType(enc.kind, enc.bits)
    return Graph(in_type, (features,), nodes, meta)
