"""The design space of an MNIST MLP: weight formats x foldings x boards, with accuracy and the Pareto front.

    python -m benchmarks.design_space --data ../shared/data            # print the table
    python -m benchmarks.design_space --data ../shared/data --write    # also results/design_space.json,
                                                                      # results/design_space.png, BENCHMARKS.md

Runs ``lowbit sweep --dataset mnist`` on a local Dask cluster (``--workers``, default one per core):
each format is trained in the hardware setting (one job per format), then every (format, folding,
board) point is folded and estimated (one job each). Accuracy is the test accuracy of each trained
network's integer IR, which the hardware reproduces bit for bit; LUTs and fmax are the calibrated
estimator's, so inferences/s are at the estimated fmax, not at a placed one.
"""

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

from lowbit.core.files import atomic_write_bytes

from .report import ROOT, update_section, write_results

ARCH = "mlp:256,256"
FORMATS = ("bipolar", "binary01", "ternary", "levels5", "levels9")
TARGETS = (64, 256, 1024, 4096)
BOARDS = ("arty-a7-35", "arty-z7-20", "ulx3s", "icebreaker")
EPOCHS = 4


def run(data, workers, epochs):
    """The sweep's JSON, its Markdown table, its Pareto plot (bytes) and the seconds it took."""
    from lowbit.cli import main as lowbit

    with tempfile.TemporaryDirectory(prefix="lowbit-design-space-") as tmp:
        out = Path(tmp) / "sweep"
        argv = ["sweep", "--dataset", "mnist", "--arch", ARCH, "--epochs", str(epochs),
                "--formats", ",".join(FORMATS), "--target-cycles", ",".join(map(str, TARGETS)),
                "--board", ",".join(BOARDS), "-o", str(out)]
        if data is not None:
            argv += ["--data", str(data)]
        if workers is not None:
            argv += ["--workers", str(workers)]
        start = time.perf_counter()
        code = lowbit(argv)
        seconds = time.perf_counter() - start
        if code != 0:
            raise SystemExit(f"lowbit {' '.join(argv)} exited {code}")
        result = json.loads((out / "sweep.json").read_text())
        table = (out / "sweep.md").read_text()
        png = (out / "pareto.png").read_bytes()
    return result, table, png, seconds


def summary(result, seconds, workers):
    rows = result["rows"]
    front = [r for r in rows if r["pareto"]]
    trained = ", ".join(f"{t['format']} {100 * t['accuracy']:.2f} %" for t in result["trained"])
    lines = ["Command: `python -m benchmarks.design_space --data ../shared/data --write`. Each format is "
             "trained in the hardware setting (one job per format), then every (format, folding, board) "
             "point is folded and estimated (one job each). LUTs and fmax are the calibrated estimator's, "
             "not placed results, so inferences/s are at the estimated fmax; boards of one family get the "
             "same estimate.", "",
             f"`lowbit sweep --dataset mnist --arch {ARCH} --epochs {result['trained'][0]['epochs']} --formats "
             f"{','.join(FORMATS)} --target-cycles {','.join(map(str, TARGETS))} --board {','.join(BOARDS)}` "
             f"(`--workers {workers or 'one per core'}`): {len(result['trained'])} trainings and {len(rows)} designs "
             f"in {seconds / 60:.1f} min. Test accuracy (integer IR, = hardware): {trained}.",
             "", f"{len(front)} designs are on the Pareto front of accuracy, inferences/s at the estimated fmax "
             "and LUTs (designs that do not fit their board are left out):", "",
             "| format | board | folding | cycles | LUT | fmax MHz (est.) | inferences/s at fmax | accuracy (%) |",
             "|---|---|---|---:|---:|---:|---:|---:|"]
    for r in sorted(front, key=lambda r: r["luts"]):
        lines.append(f"| {r['format']} | {r['board']} | {r['folding']} | {r['cycles_per_inference']} | {r['luts']} "
                     f"| {r['fmax_mhz']} | {r['inferences_per_second_at_fmax']:,} | {100 * r['accuracy']:.2f} |")
    lines += ["", "![Pareto front](benchmarks/results/design_space.png)", "",
              "Every design, the front marked *, is in `benchmarks/results/design_space.json`."]
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m benchmarks.design_space", description=__doc__.split("\n")[0])
    ap.add_argument("--data", default=None, help="folder with the MNIST idx files (default $LOWBIT_DATA)")
    ap.add_argument("--workers", type=int, default=None, help="Dask worker processes (default one per core)")
    ap.add_argument("--epochs", type=int, default=EPOCHS)
    ap.add_argument("--write", action="store_true")
    args = ap.parse_args(argv)
    result, table, png, seconds = run(args.data, args.workers, args.epochs)
    text = summary(result, seconds, args.workers)
    print(table)
    print(text)
    if args.write:
        write_results("design_space", {**result, "seconds": round(seconds, 1)})
        atomic_write_bytes(ROOT / "benchmarks" / "results" / "design_space.png", png)
        update_section("design-space", "## Design space: formats x foldings x boards (MNIST MLP)", text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
