"""Test accuracy against weight memory of every weight format, MNIST MLP 784-256-256-10.

Every format is trained from seed 0 for the same number of epochs with the same optimizer (Adam,
learning rate 0.01 on a cosine schedule, batch 128), in two settings (:mod:`lowbit.training`):

* weights-only: float activations (ReLU) and float pixels in [0, 1];
* hardware: quantized activations and the thermometer input code of the hardware flow (MNIST: one
  level, pixels binarized at mid-grey). Activations: bipolar for bipolar, binary01 and tiled
  weights; unsigned 2-bit (``u2``) for ternary, levels5, levels9, levels17 and pow2
  (:data:`lowbit.sweep_accuracy.HARDWARE_ACT`).

Post-training quantization rows (``expq`` exponential, ``linear-ptq``) quantize the trained fp32
weights-only model at 2..6 bits without retraining. Weight memory counts the stored weights
only (registry ``storage_bits`` per weight; tiled: N/p bits plus p float32 alphas per layer).

This is a benchmark, not a test: it trains 17 networks on 60000 images. The targets below are
checked and reported, met or not.

Usage::

    python -m benchmarks.accuracy            # train, print the table and the targets
    python -m benchmarks.accuracy --write    # also update benchmarks/results/accuracy.json,
                                             # BENCHMARKS.md and benchmarks/results/accuracy.png
"""

import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch

from lowbit.core.executor import Executor
from lowbit.core.files import atomic_write_bytes, atomic_write_text
from lowbit.sweep_accuracy import DEFAULT_FORMATS, markdown_table, plot_pareto, sweep_accuracy

from .report import replace_block

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results" / "accuracy.json"
PLOT = ROOT / "benchmarks" / "results" / "accuracy.png"
SECTION = "## Accuracy of every weight format (MNIST MLP)"
TABLE_BEGIN = "<!-- accuracy table begin -->"
TABLE_END = "<!-- accuracy table end -->"

DATASET = "mnist"
ARCH = "mlp:256,256"
EPOCHS = 10
BATCH_SIZE = 128
LR = 0.01
TILE_COPIES = 4
TIME_BUDGET_S = 30 * 60


def _acc(rows, fmt, setting="weights-only"):
    for r in rows:
        if r["format"] == fmt and r["setting"] == setting and r["ptq_bits"] is None:
            return 100 * r["accuracy"]
    return None


def targets(rows, seconds):
    """``[(target, measured, met)]`` for the weights-only goals and the time budget."""
    fp32, bipolar = _acc(rows, "fp32"), _acc(rows, "bipolar")
    out = []

    def check(text, value, ok):
        out.append((text, value, ok))

    if fp32 is not None:
        check("fp32 >= 98.0 %", f"{fp32:.2f} %", fp32 >= 98.0)
        for fmt, gap in (("levels5", 0.5), ("ternary", 1.0), ("binary01", 1.5)):
            v = _acc(rows, fmt)
            if v is not None:
                check(f"{fmt} within {gap} pt of fp32", f"{v:.2f} % ({v - fp32:+.2f} pt)",
                      v >= fp32 - gap)
    if bipolar is not None:
        check("bipolar >= 97.0 %", f"{bipolar:.2f} %", bipolar >= 97.0)
        tiled = _acc(rows, "tiled")
        if tiled is not None:
            check(f"tiled p={TILE_COPIES} within 1 pt of bipolar", f"{tiled:.2f} % ({tiled - bipolar:+.2f} pt)",
                  tiled >= bipolar - 1.0)
    check("whole sweep <= 30 min", f"{seconds / 60:.1f} min", seconds <= TIME_BUDGET_S)
    return out


def targets_table(checks):
    lines = ["| target | measured | met |", "|---|---|---|"]
    lines += [f"| {t} | {v} | {'yes' if ok else 'NO'} |" for t, v, ok in checks]
    return "\n".join(lines) + "\n"


def write_markdown(rows, checks, info):
    block = (f"{TABLE_BEGIN}\n{markdown_table(rows)}\n{targets_table(checks)}\n"
             f"Measured: {info['epochs']} epochs per format, batch {info['batch_size']}, "
             f"torch threads {info['torch_threads']} on {info['cpus']} CPUs, whole sweep "
             f"{info['seconds'] / 60:.1f} min; load average {info['load_before']} before and "
             f"{info['load_after']} after (the CPUs were shared with other jobs). Plot: "
             f"`benchmarks/results/accuracy.png`.\n{TABLE_END}")
    replace_block(TABLE_BEGIN, TABLE_END, block, SECTION)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true",
                        help="update benchmarks/results/accuracy.json, accuracy.png and BENCHMARKS.md")
    parser.add_argument("--data", default=None, help="folder with the MNIST idx files (default $LOWBIT_DATA)")
    parser.add_argument("--epochs", type=int, default=EPOCHS)
    parser.add_argument("--out", default=str(ROOT / "build" / "accuracy"),
                        help="folder for the sweep's checkpoints")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (default 1: two threads on a shared, busy CPU stall each "
                             "other at every barrier)")
    parser.add_argument("--workers", type=int, default=1,
                        help="Dask worker processes, one training each (default 1: in this process)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    load_before = ", ".join(f"{v:.1f}" for v in os.getloadavg())
    start = time.perf_counter()
    rows, failed = sweep_accuracy(args.out, dataset=DATASET, arch=ARCH, formats=DEFAULT_FORMATS, epochs=args.epochs,
                                  seed=0, p=TILE_COPIES, lr=LR, batch_size=BATCH_SIZE, data_root=args.data,
                                  progress=False, log=lambda s: print(s, flush=True),
                                  executor=Executor(workers=args.workers))
    if failed:
        for f in failed:
            print(f"{f.spec.setting} {f.spec.fmt} failed: {f.error}\n{f.traceback}", file=sys.stderr)
        return 1
    seconds = time.perf_counter() - start
    info = {"epochs": args.epochs, "batch_size": BATCH_SIZE, "torch_threads": torch.get_num_threads(),
            "cpus": os.cpu_count(), "seconds": round(seconds, 1), "load_before": load_before,
            "load_after": ", ".join(f"{v:.1f}" for v in os.getloadavg())}
    checks = targets(rows, seconds)
    print(markdown_table(rows))
    print(targets_table(checks))
    print(json.dumps(info))
    if args.write:
        keys = ("dataset", "arch", "format", "p", "ptq_bits", "bits_per_weight", "weight_memory_bytes",
                "setting", "act", "accuracy", "epochs", "seconds")
        payload = {"run": info, "rows": [{k: r[k] for k in keys} for r in rows],
                   "targets": [{"target": t, "measured": v, "met": ok} for t, v, ok in checks]}
        atomic_write_text(RESULTS, json.dumps(payload, indent=2) + "\n")
        atomic_write_bytes(PLOT, plot_pareto(rows, f"MNIST MLP 784-256-256-10, {args.epochs} epochs"))
        write_markdown(rows, checks, info)
    return 0


if __name__ == "__main__":
    sys.exit(main())
