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
def compare_with_torch(model, graph, x, y, batch=1000):
    """Compare the IR reference with the model in eval mode on encoded inputs ``x`` and labels ``y``.

    The model's eval form is integer-exact, so every hidden activation must match element by
    element and every logit exactly (both are the same float64 operations); any difference is an
    export error. Threshold float ties (where float64 and exact rational arithmetic disagree)
    are reported from the export; they are not errors, since PyTorch and the IR agree on them.
    ``batch`` images at a time: the IR keeps every op's output of a batch, and a convolution's
    windows are many times its input.

    Returns a plain dict: images, torch/IR accuracy, prediction disagreements, per-stage
    activation mismatches and the logit mismatches.
    """
    model.eval()
    x, y = np.asarray(x), np.asarray(y)
    stage_nodes = graph.meta.get("export", {}).get("stage_outputs", [])
    affine = graph.host_nodes[0]
    act_mismatches = {f"stage{k}": 0 for k in range(len(stage_nodes))}
    torch_pred, ir_pred, logit_mismatches = [], [], 0
    for start in range(0, len(x), batch):
        xb = x[start:start + batch]
        torch_outs = model.trace(torch.as_tensor(to_torch_layout(xb, graph)))
        ir_outs = dict(zip([n.name for n in graph.nodes], graph.execute(xb)))
        for k, name in enumerate(stage_nodes):
            t = torch_outs[k].numpy()
            if t.ndim == 4:
                t = t.transpose(0, 2, 3, 1)
            act_mismatches[f"stage{k}"] += int((t.astype(np.int64) != ir_outs[name]).sum())
        logits, ir_logits = torch_outs[-1].numpy(), ir_outs[affine.name]
        if logits.shape != ir_logits.shape or logit_mismatches < 0:
            logit_mismatches = -1
        else:
            logit_mismatches += int((logits != ir_logits).sum())
        torch_pred.append(logits.argmax(axis=1))
        ir_pred.append(ir_outs[graph.nodes[-1].name][:, 0])
    torch_pred, ir_pred = np.concatenate(torch_pred), np.concatenate(ir_pred)
    differ = np.flatnonzero(torch_pred != ir_pred)
    return {
        "images": int(len(y)),
        "torch_accuracy": float((torch_pred == y).mean()),
        "ir_accuracy": float((ir_pred == y).mean()),
        "prediction_disagreements": int(len(differ)),
        "export_errors": [int(i) for i in differ],
        "logit_mismatches": logit_mismatches,
        "activation_mismatches": act_mismatches,
        "threshold_float_ties": graph.meta.get("export", {}).get("float_tie_thresholds", 0),
    }
