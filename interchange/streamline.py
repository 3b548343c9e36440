"""Streamlining an imported model toward lowbit's integer IR: named ONNX -> ONNX passes, each
checked against the graph before it on the calibration images.

The passes, in order (:data:`PASSES`):

- :func:`binary_to_bipolar`: a FINN-ONNX ``XnorPopcountMatMul`` on {0, 1} inputs and weights
  becomes a ``MatMul`` with bipolar weights and a constant ``Add`` (the popcount is
  ``x . (2w - 1) + (K - sum(2w - 1)) / 2``);
- :func:`integer_weights`: a layer's ``Quant``/``BipolarQuant`` weights become integer constants of
  a registry weight format (or a clear error naming the layer and its values), their scale a
  ``Mul`` after the layer and a ``Gemm``/``Conv`` bias an ``Add`` after that;
- :func:`quantizers_to_thresholds`: each activation ``Quant``, ``BipolarQuant`` and ``Sign``
  becomes a ``MultiThreshold`` on the same input, with the float32 thresholds at which the
  quantizer steps (found on qonnx's own execution of it) and its levels as ``out_scale`` and
  ``out_bias``;
- :func:`absorb_into_thresholds`: the scales, biases, BatchNorm, ReLU and clips between a layer
  (or a residual ``Add``) and its ``MultiThreshold`` are absorbed into per-channel thresholds on
  the layer's output, with a ``Mul`` by -1 before the channels they reverse.

The last step, :func:`lowbit.interchange.lower.lower_model`, takes the streamlined model to the IR:
each layer's input meaning (``a * v + b`` of the previous activation) folds into integer
thresholds on its accumulator, padding becomes an IR pad value and the input quantizer becomes
the recorded input encoding; :func:`lowbit.interchange.exact.compare_with_onnx` checks it.

A pass's check (:func:`check_pass`) runs both graphs on the images and compares every quantized
tensor, as levels, and the predictions. A level may differ only where the quantizer's input moved
by float32 rounding (the pass changed the order of a float sum: a tie) or in an image that had
such a tie before, and a prediction only in such an image or where the two classes' logits were
equal up to float32 rounding; anything else stops the import with an error naming the pass and
the tensor.
"""

import dataclasses

import numpy as np

from lowbit.core.errors import LowbitError

from .lower import least_reaching, weight_format_for
from .quantizers import quantizer_levels
from .read import QUANTIZERS
from .tensors import ELEMENTWISE, FIX, LAYERS, SHAPE_OPS, attr, scalar

__all__ = ["PASSES", "streamline", "check_pass", "binary_to_bipolar", "integer_weights",
           "quantizers_to_thresholds", "absorb_into_thresholds"]

_DOMAIN = "qonnx.custom_op.general"
# How far float32 rounding may move a quantizer's input, relative to its size and to the step.
_TIE = 1e-4


def _fresh(model, base):
    """A tensor name not yet in ``model``."""
    taken = {t for n in model.graph.node for t in (*n.input, *n.output)} | \
        {i.name for i in model.graph.initializer} | {i.name for i in model.graph.input}
    name, k = base, 0
    while name in taken:
        k += 1
        name = f"{base}_{k}"
    return name


def _const(model, base, value):
    name = _fresh(model, base)
    model.set_initializer(name, np.asarray(value, np.float32))
    return name


def _insert_after(model, node, ops):
    """Route ``node``'s output through ``ops`` (``[(op_type, constant, name)]``): the node writes a
    new tensor and the last op writes the node's old output, so every consumer is unchanged."""
    import onnx

    out = node.output[0]
    tensor = _fresh(model, f"{out}_{ops[0][0].lower()}_in")
    node.output[0] = tensor
    at = list(model.graph.node).index(node) + 1
    for i, (op, value, name) in enumerate(ops):
        dst = out if i == len(ops) - 1 else _fresh(model, f"{out}_{op.lower()}{i}")
        model.graph.node.insert(at + i, onnx.helper.make_node(
            op, [tensor, _const(model, f"{name}_{op.lower()}_value", value)], [dst], name=name))
        tensor = dst
    return model


# -- pass 1: {0, 1} popcounts to bipolar MatMuls ------------------------------------------------

def binary_to_bipolar(model):
    """``XnorPopcountMatMul(x, w)`` -> ``MatMul(x, 2w - 1) + (K - sum(2w - 1)) / 2``."""
    for node in [n for n in model.graph.node if n.op_type == "XnorPopcountMatMul"]:
        w = model.get_initializer(node.input[1])
        if w is None or w.ndim != 2 or not np.isin(w, (0, 1)).all():
            raise LowbitError(f"layer {node.name!r}: an XnorPopcountMatMul needs constant weights of 0 and 1",
                              "give it BINARY weights, as qonnx's ConvertBipolarMatMulToXnorPopcount does")
        bipolar = 2 * np.asarray(w, np.float64) - 1
        node.op_type, node.domain = "MatMul", ""
        node.input[1] = _const(model, f"{node.input[1]}_bipolar", bipolar)
        _insert_after(model, node, [("Add", (w.shape[0] - bipolar.sum(axis=0)) / 2, f"{node.name}_popcount")])
    return model


# -- pass 2: quantized weights to integer constants ----------------------------------------------

def _weight_levels(model, node, producer):
    """``(integer levels, scale broadcast to them)`` of the Quant/BipolarQuant weights of ``node``."""
    from qonnx.custom_op.general.intquant import max_int, min_int

    wf = model.get_initializer(producer.input[0])
    s = model.get_initializer(producer.input[1])
    if wf is None or s is None:
        raise LowbitError(f"layer {node.name!r}: its weight quantizer has computed inputs", FIX)
    wf, s = np.asarray(wf, np.float32), np.broadcast_to(np.asarray(s, np.float32), wf.shape)
    if producer.op_type == "BipolarQuant" or (int(scalar(model, producer, 3, "bit width")) == 1
                                              and bool(attr(producer, "signed", 1))):
        return np.where(wf >= 0, 1.0, -1.0), s
    zp = scalar(model, producer, 2, "zero point")
    if zp != 0:
        raise LowbitError(f"layer {node.name!r}: weight zero point {zp:g} is not 0",
                          "export symmetric weight quantizers")
    bits = int(scalar(model, producer, 3, "bit width"))
    signed, narrow = bool(attr(producer, "signed", 1)), bool(attr(producer, "narrow", 0))
    return np.round(np.clip(wf / s, min_int(signed, narrow, bits), max_int(signed, narrow, bits))), s


def _channel_scale(name, scale, axis):
    """The per-output-channel weight scale: ``scale`` may vary along ``axis`` only."""
    col = np.moveaxis(scale, axis, 0).reshape(scale.shape[axis], -1)
    if not np.all(col == col[:, :1]):
        raise LowbitError(f"layer {name!r}: its weight scale varies within an output channel",
                          "export per-tensor or per-output-channel weight scales")
    return col[:, 0]


def integer_weights(model):
    """Quantized weights -> integer constants of a registry format; scale and bias after the layer."""
    for node in [n for n in model.graph.node if n.op_type in LAYERS]:
        producer = model.find_producer(node.input[1])
        if model.get_initializer(node.input[1]) is not None:
            continue  # integer weights already (FINN-ONNX), checked by the lowering
        if producer is None or producer.op_type not in ("Quant", "BipolarQuant"):
            raise LowbitError(f"layer {node.name!r}: its weights are not constant or quantized",
                              "quantize the weights (e.g. brevitas QuantLinear) before export")
        levels, scale = _weight_levels(model, node, producer)
        weight_format_for(node.name, levels)  # a clear error for weights of no format
        conv = node.op_type == "Conv"
        out_axis = 0 if conv or (node.op_type == "Gemm" and attr(node, "transB", 0)) else levels.ndim - 1
        col = _channel_scale(node.name, scale, out_axis).astype(np.float32)
        node.input[1] = _const(model, f"{node.name}_weight_levels", levels)
        ops = [("Mul", col[0] if np.all(col == col[0]) else (col.reshape(-1, 1, 1) if conv else col),
                f"{node.name}_weight_scale")]
        if len(node.input) > 2 and node.input[2]:  # the bias is added to the scaled sum
            bias = model.get_initializer(node.input[2])
            if bias is None:
                raise LowbitError(f"node {node.name!r}: its bias must be constant", FIX)
            bias = np.asarray(bias, np.float32).reshape(-1)
            ops.append(("Add", bias.reshape(-1, 1, 1) if conv else bias, f"{node.name}_bias"))
            del node.input[2]
        _insert_after(model, node, ops)
        if not model.find_consumers(producer.output[0]):
            model.graph.node.remove(producer)
    return _drop_unused(model)


def _drop_unused(model):
    from qonnx.transformation.general import RemoveUnusedTensors

    return model.transform(RemoveUnusedTensors())


# -- pass 3: activation quantizers to MultiThreshold ---------------------------------------------

def _input_quantizer(model):
    """The node that quantizes the model's input (kept: it becomes the input encoding), or None."""
    tensor = model.graph.input[0].name
    while True:
        users = model.find_consumers(tensor) or []
        if len(users) != 1:
            return None
        node = users[0]
        if node.op_type not in (*SHAPE_OPS, "Div"):
            return node if node.op_type in QUANTIZERS else None
        tensor = node.output[0]


def _ordered_to_float(key):
    """float32 of an order-preserving int64 key: 0 is +0.0, +-k the k-th float32 above/below it."""
    bits = np.where(key >= 0, key, np.int64(0x80000000) | -key).astype(np.uint32)
    return bits.view(np.float32)


def step_points(model, node, levels):
    """The least float32 input at which ``node`` (a per-tensor quantizer) reaches each count
    ``1..levels.count - 1``, by binary search of qonnx's execution of the node itself (+inf if
    never reached)."""
    from .lower import Segment

    run = Segment(model, [node], node.input[0], node.output[0], 1)
    n = levels.count - 1
    need = np.arange(1, n + 1)
    top = np.int64(0x7F7FFFFF)  # the largest finite float32

    def reaches(key):
        return levels.counts(run(_ordered_to_float(key).reshape(-1, 1)))[:, 0] >= need

    key = least_reaching(np.full(n, -top), np.full(n, top), reaches)  # top + 1: never
    return np.where(key > top, np.inf, _ordered_to_float(np.minimum(key, top)).astype(np.float64))


def quantizers_to_thresholds(model):
    """Activation Quant, BipolarQuant and Sign -> MultiThreshold on the quantizer's own steps."""
    import onnx

    kept = _input_quantizer(model)
    for node in [n for n in model.graph.node if n.op_type in ("Quant", "BipolarQuant", "Sign") and n is not kept]:
        if node.op_type != "Sign" and model.get_initializer(node.input[0]) is not None:
            continue  # a weight quantizer of a layer lowbit does not import: the lowering names it
        levels = quantizer_levels(model, node)
        t = step_points(model, node, levels)
        mt = onnx.helper.make_node(
            "MultiThreshold", [node.input[0], _const(model, f"{node.name}_steps", t.reshape(1, -1))],
            list(node.output), name=node.name, domain=_DOMAIN, out_dtype="FLOAT32",
            out_scale=float(levels.step), out_bias=float(levels.offset))
        mt.metadata_props.extend(node.metadata_props)
        at = list(model.graph.node).index(node)
        model.graph.node.remove(node)
        model.graph.node.insert(at, mt)
    return _drop_unused(model)


# -- pass 4: scales, biases and BatchNorm into the thresholds ------------------------------------

# A float32 beyond any tensor of a quantized network, and still finite through its scales.
_FAR = 1e30


def _chain_before(model, mt):
    """The elementwise nodes that feed only ``mt``, back to the tensor they start from, or None
    when that tensor is not a layer's or a residual Add's output, or a constant of the chain is
    not one value per channel."""
    chain, tensor = [], mt.input[0]
    while True:
        node = model.find_producer(tensor)
        if node is None or len(model.find_consumers(tensor) or []) != 1:
            return None
        if node.op_type in LAYERS or (node.op_type == "Add" and all(model.get_initializer(i) is None
                                                                     for i in node.input)):
            break
        if node.op_type not in ELEMENTWISE or any(model.get_initializer(i) is None for i in node.input[1:] if i):
            return None
        chain.insert(0, node)
        tensor = node.input[0]
    shape = model.get_tensor_shape(tensor)
    if not chain or shape is None or len(shape) not in (2, 4):
        return None
    for node in chain:
        for name in node.input[1:] if node.op_type != "BatchNormalization" else ():
            c = np.asarray(model.get_initializer(name)) if name else None
            if c is None or c.ndim > len(shape):
                return None
            full = np.broadcast_to(c, [1] * (len(shape) - c.ndim) + list(c.shape)) if c.ndim else c
            try:
                full = np.broadcast_to(full, [1, shape[1], *([1] * (len(shape) - 2))] if full.ndim else ())
            except ValueError:
                return None  # varies along a spatial axis
    return chain, tensor, shape[1], len(shape) == 4


def absorb_into_thresholds(model):
    """Elementwise ops between a layer (or residual Add) and its MultiThreshold -> the thresholds.

    The ops are monotone in each channel (scales, biases, BatchNorm, ReLU, clips), so each level is
    reached from the least float32 of the layer's output at which the ops and the thresholds reach
    it, found by binary search on qonnx's execution of them; a channel the ops reverse gets a Mul
    by -1 before the thresholds, as FINN writes it. A lone Mul by +-1 is that form already.
    """
    import onnx

    from .lower import Segment

    for mt in [n for n in model.graph.node if n.op_type == "MultiThreshold"]:
        found = _chain_before(model, mt)
        if found is None:
            continue
        chain, start, channels, spatial = found
        if len(chain) == 1 and chain[0].op_type == "Mul" and \
                np.all(np.abs(model.get_initializer(chain[0].input[1])) == 1):
            continue
        levels = quantizer_levels(model, mt)
        run = Segment(model, chain + [mt], start, mt.output[0], channels, spatial)

        def counts(y):  # (rows, C) float32 layer outputs -> (rows, C) counts
            return levels.counts(run(np.asarray(y, np.float32)))

        ends = counts(np.array([[-_FAR] * channels, [_FAR] * channels]))
        sign = np.where(ends[1] < ends[0], -1.0, 1.0)  # reversed channels count on -y
        n = levels.count - 1
        need = np.arange(1, n + 1)[:, None]  # (L, 1)
        top = int(np.float32(_FAR).view(np.int32))
        key = least_reaching(np.full((n, channels), -top), np.full((n, channels), top),
                             lambda k: counts(sign * _ordered_to_float(k)) >= need)  # top + 1: never
        t = np.where(key > top, np.inf, _ordered_to_float(np.minimum(key, top)).astype(np.float64)).T  # (C, L)
        tensor = start
        at = list(model.graph.node).index(chain[0])
        if np.any(sign < 0):
            tensor = _fresh(model, f"{start}_sign")
            shape = sign.reshape(-1, 1, 1) if spatial else sign
            model.graph.node.insert(at, onnx.helper.make_node(
                "Mul", [start, _const(model, f"{mt.name}_sign", shape)], [tensor], name=f"{mt.name}_sign"))
        mt.input[0], mt.input[1] = tensor, _const(model, f"{mt.name}_absorbed", t)
        for node in chain:
            model.graph.node.remove(node)
    return _drop_unused(model)


PASSES = (binary_to_bipolar, integer_weights, quantizers_to_thresholds, absorb_into_thresholds)


# -- the check after each pass -------------------------------------------------------------------

@dataclasses.dataclass
class _Tally:
    tensors: dict
    ties: dict
    unexplained: dict
    disagreements: int = 0
    tied_disagreements: int = 0


def _quantized(model):
    """``[(output tensor, input tensor, levels)]`` of the quantizers of ``model``, in graph order."""
    return [(n.output[0], n.input[0], quantizer_levels(model, n)) for n in model.graph.node
            if n.op_type in QUANTIZERS]


def check_pass(name, before, after, floats, *, batch=500):
    """Run ``before`` and ``after`` on ``floats`` and compare every quantized tensor of ``after``
    (as levels) and the predictions; returns the report, or raises if a level differs other than
    by a float32 tie (see the module's doc)."""
    from qonnx.core.onnx_exec import execute_onnx

    from .exact import batched

    quantized = _quantized(after)
    names = [q[0] for q in quantized]
    tally = _Tally(dict.fromkeys(names, 0), dict.fromkeys(names, 0), dict.fromkeys(names, 0))
    inp = before.graph.input[0].name
    shape = before.get_tensor_shape(inp)
    runs = [batched(m, batch) for m in (before, after)]
    out_b, out_a = before.graph.output[0].name, after.graph.output[0].name
    predictions = np.empty(len(floats), np.int64)
    for start in range(0, len(floats), batch):
        n = min(batch, len(floats) - start)
        chunk = np.zeros((batch, *shape[1:]), np.float32)
        chunk[:n] = floats[start:start + n].reshape(n, *shape[1:])
        cb, ca = (execute_onnx(r, {inp: chunk}, return_full_exec_context=True) for r in runs)
        tied = np.zeros(n, bool)
        for out, src, levels in quantized:
            if out not in cb:
                raise LowbitError(f"streamlining pass {name!r} lost the model's tensor {out!r}",
                                  "this is a bug in lowbit's import; please report it with the .onnx file")
            qb, qa = (levels.counts(c[out][:n]).reshape(n, -1) for c in (cb, ca))
            bad = qb != qa
            tally.tensors[out] += int(bad.sum())
            bad &= ~tied[:, None]  # an earlier tie of the image runs on
            tie = np.zeros_like(bad)
            if src in cb:  # the same input, computed in another order: a level may tie
                xb, xa = (np.asarray(c[src][:n], np.float64).reshape(n, -1) for c in (cb, ca))
                tie = bad & (xb != xa) & (np.abs(xb - xa) <= _TIE * (np.abs(xb) + levels.step))
            tally.ties[out] += int(tie.sum())
            tied |= tie.any(axis=1)
            tally.unexplained[out] += int((bad & ~tie).sum())
        lb, la = (np.asarray(c[o][:n], np.float64).reshape(n, -1) for c, o in ((cb, out_b), (ca, out_a)))
        pb, pa = lb.argmax(axis=1), la.argmax(axis=1)
        predictions[start:start + n] = pb
        differ = pb != pa
        # the two choices' logits were equal up to float32 rounding in the graph before
        rows = np.arange(n)
        close = lb[rows, pb] - lb[rows, pa] <= _TIE * np.abs(lb).max(axis=1)
        tally.disagreements += int(differ.sum())
        tally.tied_disagreements += int((differ & (tied | close)).sum())
    bad = {t: k for t, k in tally.unexplained.items() if k}
    if bad or tally.disagreements > tally.tied_disagreements:
        where = (f"tensor {next(iter(bad))!r} ({next(iter(bad.values()))} values over {len(floats)} images, "
                 "not float32 ties)" if bad else
                 f"its predictions ({tally.disagreements - tally.tied_disagreements} images)")
        raise LowbitError(f"streamlining pass {name!r} changed the model at {where}",
                          "this is a bug in lowbit's import; please report it with the .onnx file")
    report = {"pass": name, "images": int(len(floats)), "tensor_mismatches": tally.tensors,
              "tensor_ties": tally.ties, "prediction_disagreements": tally.disagreements,
              "tied_disagreements": tally.tied_disagreements}
    return report, predictions


def _signature(model):
    return model.model.SerializeToString()


def streamline(model, floats, *, batch=500):
    """Run :data:`PASSES` on a cleaned model, checking each one that changes it on ``floats``.

    Returns ``(streamlined model, reports, the source model's predictions or None)``: one report
    per pass, ``{"pass", "changed"}`` and, for a pass that changed the model, its check.
    """
    import copy

    reports, source_predictions = [], None
    for fn in PASSES:
        before = model
        after = fn(copy.deepcopy(model))
        changed = _signature(after) != _signature(before)
        report = {"pass": fn.__name__, "changed": changed}
        if changed:
            from qonnx.transformation.infer_shapes import InferShapes

            after = after.transform(InferShapes())
            check, predictions = check_pass(fn.__name__, before, after, floats, batch=batch)
            source_predictions = predictions if source_predictions is None else source_predictions
            report.update(check)
        reports.append(report)
        model = after
    return model, reports, source_predictions
