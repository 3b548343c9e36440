"""Why 2-bit post-training quantization gives chance accuracy on the MNIST MLP: evidence, layer by layer.

    python -m benchmarks.ptq_2bit --data ../shared/data --write

Trains the accuracy benchmark's fp32 model (MNIST MLP 784-256-256-10, weights-only setting, 10
epochs, Adam 0.01 cosine, batch 128, seed 0), then quantizes it with :func:`lowbit.model.ptq.ptq`
at 2, 3 and 4 bits (exponential and linear) and records, per layer, the share of weights that
become 0 and the levels used, and the test accuracy.

Both methods scale their levels by the layer's largest weight (``a = max|w|``). At 2 bits the
linear levels are ``{-a, 0, a}`` and a weight rounds to 0 unless ``|w| > a / 2``; the exponential
levels are ``{0, ±c_k}`` of the same span. A trained layer's weights are many times smaller than
its largest one, so nearly all of them become 0.

As a check of that cause, not as a format of lowbit's, each layer is also quantized to the same
three linear levels with the scale that minimizes the squared error (a grid over ``a / 64 .. a``):
the layers then keep their weights and the accuracy comes back.
"""

import argparse
import copy
import re
import sys
from pathlib import Path

import numpy as np
import torch

from .report import ROOT, update_section, write_results

EPOCHS, LR, BATCH = 10, 0.01, 128


def trained_fp32(work, data):
    """The fp32 MNIST MLP of the accuracy benchmark, trained once into ``work``."""
    from lowbit.flow import train_checkpoint

    path = Path(work) / f"mnist-mlp-256-256-fp32-e{EPOCHS}.pt"
    if not path.exists():
        train_checkpoint(path, dataset="mnist", arch="mlp:256,256", weight_format="fp32", act="float",
                         epochs=EPOCHS, lr=LR, batch_size=BATCH, data_root=data, progress=True)
    return path


def _mse_scale(w, levels=1):
    """The scale of ``{-levels..levels} * s`` with the least squared error on ``w``."""
    a = float(w.abs().max())
    best = None
    for s in np.linspace(a / 64, a, 256) / levels:
        err = float(((torch.clamp(torch.round(w / s), -levels, levels) * s - w) ** 2).sum())
        best = (err, s) if best is None or err < best[0] else best
    return best[1]


def run(work, data):
    from lowbit.model.checkpoint import load_checkpoint
    from lowbit.model.data import load_dataset
    from lowbit.model.ptq import ptq
    from lowbit.training import evaluate_loaded

    model, meta = load_checkpoint(trained_fp32(work, data))
    rows = [{"method": "fp32", "bits": 32, "accuracy": evaluate_loaded(model, meta, data_root=data)["accuracy"],
             "layers": []}]
    for method in ("linear", "exponential"):
        for bits in (2, 3, 4):
            _, layers = ptq(model, bits, method)
            acc = evaluate_loaded(model, meta, data_root=data, ptq_bits=bits, ptq_method=method)["accuracy"]
            rows.append({"method": method, "bits": bits, "accuracy": acc, "layers": [
                {"layer": name, "max_abs_weight": round(info.a, 4),
                 "median_abs_weight": None, "zero_share": round(float((info.levels == 0).double().mean()), 4),
                 "levels_used": sorted({int(v) for v in info.levels.unique()})}
                for name, info in layers.items()]})
    # the cause, checked: the same three levels at the least-squares scale
    ds = load_dataset("mnist", root=data, seed=meta["dataset"]["seed"])
    check = copy.deepcopy(model)
    layers = []
    with torch.no_grad():
        for name, module in check.named_modules():
            if isinstance(module, torch.nn.Linear):
                w = module.weight.double()
                s = _mse_scale(w)
                q = torch.clamp(torch.round(w / s), -1, 1)
                module.weight.copy_((q * s).to(module.weight.dtype))
                layers.append({"layer": name, "max_abs_weight": round(float(w.abs().max()), 4),
                               "median_abs_weight": round(float(w.abs().median()), 4),
                               "scale_over_max": round(s / float(w.abs().max()), 4),
                               "zero_share": round(float((q == 0).double().mean()), 4),
                               "levels_used": sorted({int(v) for v in q.unique()})})
    from lowbit.model.train import evaluate
    from lowbit.training import encode_inputs, image_shape

    enc = {"image_shape": list(image_shape(ds)), **meta["input"]}
    acc, _ = evaluate(check, encode_inputs(ds.x_test, enc, check.arch["kind"]), ds.y_test)
    rows.append({"method": "linear, least-squares scale (diagnosis only)", "bits": 2, "accuracy": acc,
                 "layers": layers})
    medians = {l["layer"]: l["median_abs_weight"] for l in layers}
    for r in rows:
        for l in r["layers"]:
            l["median_abs_weight"] = medians.get(l["layer"])
    return rows


def table(rows):
    lines = ["| method | bits | test accuracy | per layer: weights that become 0 (max / median abs weight) |",
             "|---|---:|---:|---|"]
    for r in rows:
        per = "; ".join(f"{l['layer']}: {100 * l['zero_share']:.1f} % "
                        f"({l['max_abs_weight']} / {l['median_abs_weight']})" for l in r["layers"]) or "-"
        lines.append(f"| {r['method']} | {r['bits']} | {r['accuracy']:.4f} | {per} |")
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m benchmarks.ptq_2bit", description=__doc__.split("\n")[0])
    ap.add_argument("--data", default=None, help="folder with the MNIST idx files")
    ap.add_argument("--work", default=str(ROOT / "build" / "ptq_2bit"))
    ap.add_argument("--write", action="store_true")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    Path(args.work).mkdir(parents=True, exist_ok=True)
    rows = run(args.work, args.data)
    print(table(rows))
    if args.write:
        write_results("ptq_2bit", rows)
        method = re.sub(r":\w+:`", "`", __doc__.split("\n\n", 2)[2].strip())  # reST roles to Markdown
        update_section("ptq_2bit", "## Why 2-bit post-training quantization collapses (MNIST MLP)",
                       method + "\n\nCommand: `python -m benchmarks.ptq_2bit --data ../shared/data --write`.\n\n"
                       + table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
