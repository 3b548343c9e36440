"""Exactness of an import: the IR against qonnx's execution of the ONNX model, at every quantized
tensor and at the prediction."""

import numpy as np

from lowbit.core.errors import LowbitError

__all__ = ["compare_with_onnx", "batched"]

# Relative logit gap below which two classes are tied in float32 (a few units in the last place).
_TIE = 8 * float(np.finfo(np.float32).eps)


def batched(model, rows):
    """A copy of ``model`` that runs ``rows`` examples at once (exported models have a batch of 1;
    their Reshape shapes name that 1, which becomes ``rows`` too)."""
    import copy

    from qonnx.transformation.infer_shapes import InferShapes

    m = copy.deepcopy(model)
    name = m.graph.input[0].name
    shape = m.get_tensor_shape(name)
    if shape[0] != 1:
        raise LowbitError(f"the model's input {name!r} has a batch of {shape[0]}, not 1",
                          "export the model with an input of batch 1")
    m.set_tensor_shape(name, [rows, *shape[1:]])
    for node in m.graph.node:
        if node.op_type == "Reshape":
            target = m.get_initializer(node.input[1])
            if target is not None and len(target) and target[0] == 1:
                m.set_initializer(node.input[1], np.array([rows, *target[1:]], dtype=np.int64))
    for out in m.graph.output:
        dims = out.type.tensor_type.shape.dim
        if dims:
            dims[0].dim_value = rows
    del m.graph.value_info[:]
    return m.transform(InferShapes())


def _model_layout(ref, meaning, rows):
    """A reference tensor of ``rows`` examples in the IR's layout, one row per example."""
    ref = np.asarray(ref)[:rows]
    if meaning.get("layout") == "chw":  # the IR's feature maps are (H, W, C)
        ref = ref.transpose(0, 2, 3, 1)
    return ref.reshape(rows, -1)


class _Ties:
    """Which differing elements of an activation are float32 accumulation ties.

    The model sums its layer in float32, in an order of the runtime's choosing; the IR sums
    integers exactly. An element is a tie when the reference's layer output is not the exact
    value ``gain * acc + offset`` (in float32) and the exact value, through the model's own ops
    and quantizer, gives the IR's value: the float model rounded across a step that exact
    arithmetic does not cross. Anything else is an error of the import.
    """

    def __init__(self, model, meaning):
        from .lower import layer_segment

        layer = meaning["layer"]
        self.meaning, self.layer = meaning, layer
        self.gain, self.offset = np.asarray(layer["gain"]), np.asarray(layer["offset"])
        self.segment = layer_segment(model, layer["start"], len(self.gain), layer["spatial"])

    def __call__(self, bad, ours, acc, ctx):
        c = len(self.gain)
        rows, elems = np.nonzero(bad)
        pos, ch = np.divmod(elems, c)
        acc = np.asarray(acc).reshape(len(bad), -1, c)[rows, pos]  # (n, C) accumulators
        exact = (self.gain * acc.astype(np.float64) + self.offset).astype(np.float32)
        out = self.segment(exact)[np.arange(len(rows)), ch].astype(np.float64)
        value = np.round((out - self.meaning["b"]) / self.meaning["a"]).astype(np.int64)
        start = {**self.meaning, "layout": "chw" if self.layer["spatial"] else "flat"}
        y_ref = _model_layout(ctx[self.layer["start"]], start, len(bad)).reshape(len(bad), -1, c)
        noisy = y_ref[rows, pos, ch] != exact[np.arange(len(rows)), ch]
        ties = np.zeros_like(bad)
        ties[rows, elems] = noisy & (value == ours[rows, elems])
        return ties


def _outputs_by_name(graph, x, outs):
    """The output of every op of ``graph`` on ``x``, by name, the ops of residual bodies too;
    ``outs`` is ``graph.execute(x)``."""
    by_name = {"input": np.asarray(x)}
    before = np.asarray(x).reshape(len(x), *graph.input_shape)
    for node, out in zip(graph.nodes, outs):
        v = before
        for inner in getattr(node, "body", ()):  # a Residual's body, run on the block's input
            v = inner.reference(v)
            by_name[inner.name] = v
        by_name[node.name] = before = out
    return by_name


def compare_with_onnx(model, graph, floats, x, y, *, batch=500, progress=None, source_predictions=None):
    """Run ``floats`` (the model's float inputs) through qonnx's ``execute_onnx`` and ``x`` (the
    same images encoded) through the IR; compare each quantized tensor, as integers, and the
    predictions.

    A differing element is explained when it is a float32 accumulation tie (:class:`_Ties`), or
    when an earlier tensor of the same image had one (its effects run on); every other one is
    unexplained, and the import is wrong.

    Returns a plain dict: images, reference and IR accuracy, prediction disagreements and how many
    of them are float ties, and per tensor the elements that differ (``tensor_mismatches``), the
    ties among them (``tensor_ties``) and the unexplained ones (``unexplained``), with the number
    of images that had a tie (``tie_images``). With ``source_predictions`` (those of the model
    ``model`` was streamlined from), also the IR's disagreements with them and their accuracy.
    """
    from qonnx.core.onnx_exec import execute_onnx

    meanings = graph.meta["import"]["tensors"]
    outs = graph.execute(x)
    by_name = _outputs_by_name(graph, x, outs)
    mismatches = {m["tensor"]: 0 for m in meanings}
    ties = dict.fromkeys(mismatches, 0)
    unexplained = dict.fromkeys(mismatches, 0)
    tied = np.zeros(len(x), bool)  # images with a tie so far
    judges = {m["tensor"]: _Ties(model, m) for m in meanings if m.get("layer")}
    ref_pred = np.empty(len(x), np.int64)
    margin = np.empty(len(x), np.float64)  # the reference's own gap between its choice and the IR's
    out_name = model.graph.output[0].name
    shape = model.get_tensor_shape(model.graph.input[0].name)
    runner = batched(model, batch)
    for start in range(0, len(x), batch):
        stop = min(start + batch, len(x))
        n = stop - start
        chunk = np.zeros((batch, *shape[1:]), np.float32)
        chunk[:n] = floats[start:stop].reshape(n, *shape[1:])
        ctx = execute_onnx(runner, {model.graph.input[0].name: chunk}, return_full_exec_context=True)
        for m in meanings:
            ref = _model_layout(np.asarray(ctx[m["tensor"]], np.float64), m, n)
            ref_ir = np.round((ref - m["b"]) / m["a"]).astype(np.int64)
            ours = by_name[m["ir"]][start:stop].reshape(n, -1)
            bad = ref_ir != ours
            mismatches[m["tensor"]] += int(bad.sum())
            bad &= ~tied[start:stop, None]  # an earlier tie of the image runs on
            if bad.any() and m["tensor"] in judges:
                tie = judges[m["tensor"]](bad, ours, by_name[m["layer"]["acc"]][start:stop], ctx)
                ties[m["tensor"]] += int(tie.sum())
                tied[start:stop] |= tie.any(axis=1)
                bad &= ~tie
            unexplained[m["tensor"]] += int(bad.sum())
        logits = np.asarray(ctx[out_name])[:n].reshape(n, -1)
        ref_pred[start:stop] = logits.argmax(axis=1)
        rows = np.arange(n)
        ir_choice = outs[-1][start:stop, 0]
        top = np.abs(logits[rows, ref_pred[start:stop]]).astype(np.float64)
        margin[start:stop] = (logits[rows, ref_pred[start:stop]] - logits[rows, ir_choice]) / np.maximum(top, 1e-30)
        if progress is not None:
            progress(stop)
    ir_pred = outs[-1][:, 0]
    differ = ref_pred != ir_pred
    source = {} if source_predictions is None else {
        "source_disagreements": int((source_predictions != ir_pred).sum()),
        "source_accuracy": None if y is None else float((source_predictions == y).mean())}
    return {
        **source,
        "images": int(len(x)),
        "reference_accuracy": None if y is None else float((ref_pred == y).mean()),
        "ir_accuracy": None if y is None else float((ir_pred == y).mean()),
        "reference_disagreements": int(differ.sum()),
        # Disagreements where the float model itself could go either way: its two best logits are
        # equal up to float32 rounding (numpy and the IR take the first of tied values), or an
        # activation of the image was a float32 accumulation tie.
        "float_ties": int((differ & ((margin <= _TIE) | tied)).sum()),
        "tensor_mismatches": mismatches,
        "tensor_ties": ties,
        "tie_images": int(tied.sum()),
        "unexplained": unexplained,
    }
