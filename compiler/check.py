"""Does the IR reference reproduce the PyTorch model? Checked on every image, every layer."""

import numpy as np
import torch

from .ir import MultiThreshold

__all__ = ["compare_with_torch"]

# Relative logit gap under which two classes count as a float tie between float32 (PyTorch) and
# float64 (the host affine map): far above float32 rounding of a BatchNorm, far below any real margin.
TIE_RELATIVE_GAP = 1e-5


@torch.no_grad()
def compare_with_torch(model, graph, x, y):
    """Compare the IR reference with the model in eval mode on encoded inputs ``x`` and labels ``y``.

    Every hidden activation is compared element by element; predictions are compared per image. A
    prediction disagreement where PyTorch's top two logits are within ``TIE_RELATIVE_GAP`` is a float
    tie and is reported as such; any other disagreement is an export error.

    Returns a plain dict: images, torch/IR accuracy, prediction disagreements (ties and errors) and
    per-layer activation mismatches.
    """
    model.eval()
    torch_outs = model.trace(torch.as_tensor(x, dtype=torch.float32))
    ir_outs = graph.execute(x)
    ir_acts = [o for node, o in zip(graph.nodes, ir_outs) if isinstance(node, MultiThreshold)]
    act_mismatches = {
        f"layer{i}": int((t.numpy().astype(np.int64) != a).sum())
        for i, (t, a) in enumerate(zip(torch_outs[:-1], ir_acts))
    }
    logits = torch_outs[-1].numpy()
    torch_pred = logits.argmax(axis=1)
    ir_pred = ir_outs[-1][:, 0]
    differ = np.flatnonzero(torch_pred != ir_pred)
    top2 = np.sort(logits, axis=1)[:, -2:]
    gap = (top2[:, 1] - top2[:, 0]) / np.maximum(np.abs(top2).max(axis=1), 1e-30)
    ties = [int(i) for i in differ if gap[i] <= TIE_RELATIVE_GAP]
    y = np.asarray(y)
    return {
        "images": int(len(y)),
        "torch_accuracy": float((torch_pred == y).mean()),
        "ir_accuracy": float((ir_pred == y).mean()),
        "prediction_disagreements": int(len(differ)),
        "float_ties": ties,
        "export_errors": [int(i) for i in differ if gap[i] > TIE_RELATIVE_GAP],
        "activation_mismatches": act_mismatches,
        "threshold_float_tie_channels": graph.meta.get("export", {}).get("float_tie_channels", 0),
    }
