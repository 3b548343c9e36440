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


def compare_with_onnx(model, graph, floats, x, y, *, batch=500, progress=None):
    """Run ``floats`` (the model's float inputs) through qonnx's ``execute_onnx`` and ``x`` (the
    same images encoded) through the IR; compare each quantized tensor, as integers, and the
    predictions.

    Returns a plain dict: images, reference and IR accuracy, prediction disagreements, and per
    tensor the number of elements that differ.
    """
    from qonnx.core.onnx_exec import execute_onnx

    meanings = graph.meta["import"]["tensors"]
    outs = graph.execute(x)
    by_name = {n.name: o for n, o in zip(graph.nodes, outs)}
    by_name["input"] = np.asarray(x)
    mismatches = {m["tensor"]: 0 for m in meanings}
    ref_pred = np.empty(len(x), np.int64)
    margin = np.empty(len(x), np.float64)  # the reference's own gap between its choice and the IR's
    out_name = model.graph.output[0].name
    shape = model.get_tensor_shape(model.graph.input[0].name)
    runner = batched(model, batch)
    for start in range(0, len(x), batch):
        stop = min(start + batch, len(x))
        chunk = np.zeros((batch, *shape[1:]), np.float32)
        chunk[:stop - start] = floats[start:stop].reshape(stop - start, *shape[1:])
        ctx = execute_onnx(runner, {model.graph.input[0].name: chunk}, return_full_exec_context=True)
        for m in meanings:
            ref = np.asarray(ctx[m["tensor"]], np.float64)[:stop - start]
            if m.get("layout") == "chw":  # the IR's feature maps are (H, W, C)
                ref = ref.transpose(0, 2, 3, 1)
            ref = ref.reshape(stop - start, -1)
            ref_ir = np.round((ref - m["b"]) / m["a"]).astype(np.int64)
            ours = by_name[m["ir"]][start:stop].reshape(stop - start, -1)
            mismatches[m["tensor"]] += int((ref_ir != ours).sum())
        logits = np.asarray(ctx[out_name])[:stop - start].reshape(stop - start, -1)
        ref_pred[start:stop] = logits.argmax(axis=1)
        rows = np.arange(stop - start)
        ir_choice = outs[-1][start:stop, 0]
        top = np.abs(logits[rows, ref_pred[start:stop]]).astype(np.float64)
        margin[start:stop] = (logits[rows, ref_pred[start:stop]] - logits[rows, ir_choice]) / np.maximum(top, 1e-30)
        if progress is not None:
            progress(stop)
    ir_pred = outs[-1][:, 0]
    return {
        "images": int(len(x)),
        "reference_accuracy": None if y is None else float((ref_pred == y).mean()),
        "ir_accuracy": None if y is None else float((ir_pred == y).mean()),
        "reference_disagreements": int((ref_pred != ir_pred).sum()),
        # Disagreements where the reference's two logits are equal up to float32 rounding: the
        # float model itself could go either way (numpy and the IR take the first of tied values).
        "float_ties": int(((ref_pred != ir_pred) & (margin <= _TIE)).sum()),
        "tensor_mismatches": mismatches,
    }
