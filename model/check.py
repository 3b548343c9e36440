"""Does the IR reference reproduce the PyTorch model? Checked on every image, every layer."""

import numpy as np
import torch

__all__ = ["compare_with_torch", "to_torch_layout"]


def to_torch_layout(x, graph):
    """Encoded IR inputs (N, *graph.input_shape) or flat (N, F) in PyTorch's layout: (N, F) or
    (N, C, H, W)."""
    x = np.asarray(x)
    x = x.reshape(len(x), *graph.input_shape)
    if x.ndim == 4:
        x = x.transpose(0, 3, 1, 2)
    return np.ascontiguousarray(x)


@torch.no_grad()
def compare_with_torch(model, graph, x, y):
    """Compare the IR reference with the model in eval mode on encoded inputs ``x`` and labels ``y``.

    The model's eval form is integer-exact, so every hidden activation must match element by
    element and every logit exactly (both are the same float64 operations); any difference is an
    export error. Threshold float ties (where float64 and exact rational arithmetic disagree)
    are reported from the export; they are not errors, since PyTorch and the IR agree on them.

    Returns a plain dict: images, torch/IR accuracy, prediction disagreements, per-stage
    activation mismatches and the logit mismatches.
    """
    model.eval()
    torch_outs = model.trace(torch.as_tensor(to_torch_layout(x, graph)))
    ir_outs = dict(zip([n.name for n in graph.nodes], graph.execute(x)))
    stage_nodes = graph.meta.get("export", {}).get("stage_outputs", [])
    act_mismatches = {}
    for k, name in enumerate(stage_nodes):
        t = torch_outs[k].numpy()
        if t.ndim == 4:
            t = t.transpose(0, 2, 3, 1)
        act_mismatches[f"stage{k}"] = int((t.astype(np.int64) != ir_outs[name]).sum())
    logits = torch_outs[-1].numpy()
    affine = graph.host_nodes[0]
    ir_logits = ir_outs[affine.name]
    torch_pred = logits.argmax(axis=1)
    ir_pred = graph.predict(x)
    differ = np.flatnonzero(torch_pred != ir_pred)
    y = np.asarray(y)
    return {
        "images": int(len(y)),
        "torch_accuracy": float((torch_pred == y).mean()),
        "ir_accuracy": float((ir_pred == y).mean()),
        "prediction_disagreements": int(len(differ)),
        "export_errors": [int(i) for i in differ],
        "logit_mismatches": int((logits != ir_logits).sum()) if logits.shape == ir_logits.shape else -1,
        "activation_mismatches": act_mismatches,
        "threshold_float_ties": graph.meta.get("export", {}).get("float_tie_thresholds", 0),
    }
