"""Random-network soak: 200 random small networks, each checked bit-exact end to end.

Every network (:mod:`lowbit.fuzz`) is checked three ways: the IR against the integer-exact
PyTorch model on every activation, logit and prediction; the generated Verilog in Verilator,
with random input idles and output backpressure, against the IR on every output word; and the
measured cycles per inference (and latency, where predicted) against the manifest.

Usage::

    python -m benchmarks.fuzz                 # print the summary
    python -m benchmarks.fuzz --write         # also update benchmarks/results/fuzz.json and BENCHMARKS.md
    python -m benchmarks.fuzz --n 20 --seed 7 # a shorter soak
"""

import argparse
import json
import sys
from pathlib import Path

from lowbit.core.files import atomic_write_text
from lowbit.fuzz import TORCH_VECTORS, fuzz, summary_text

from .report import replace_block

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results" / "fuzz.json"
SECTION = "## Random-network fuzzing"
TABLE_BEGIN = "<!-- fuzz table begin -->"
TABLE_END = "<!-- fuzz table end -->"

NETWORKS = 200
SEED = 20_000
VECTORS = 16


def table(r):
    return ("| networks | seed | vectors simulated | output words compared | inputs vs PyTorch | "
            "mismatches | cycle mismatches | failed networks | seconds |\n"
            "|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n"
            f"| {r['networks']} | {r['seed']} | {r['vectors']} | {r['words']} | {r['torch_vectors']} | "
            f"{r['mismatches']} | {r['cycle_mismatches']} | {len(r['failures'])} | {r['seconds']:.0f} |\n")


def write_markdown(r):
    kinds = ", ".join(f"{k} {v}" for k, v in sorted(r["kinds"].items()))
    failed = "".join(f"\nFailed: seed {f['seed']} ({f['network']}): {'; '.join(f['problems'])}."
                     for f in r["failures"])
    block = (f"{TABLE_BEGIN}\n{table(r)}\nNetworks per weight format: {kinds}. Each network: "
             f"{r['vectors'] // max(r['networks'], 1)} vectors through Verilator with random stalls "
             f"and {TORCH_VECTORS} through the IR and PyTorch. Replay network S alone with "
             f"`lowbit fuzz --n 1 --seed S`.{failed}\n{TABLE_END}")
    replace_block(TABLE_BEGIN, TABLE_END, block, SECTION)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true",
                        help="update benchmarks/results/fuzz.json and the table in BENCHMARKS.md")
    parser.add_argument("--n", type=int, default=NETWORKS)
    parser.add_argument("--seed", type=int, default=SEED)
    parser.add_argument("--vectors", type=int, default=VECTORS)
    parser.add_argument("-o", "--output", default="build/fuzz-soak", help="reproductions of failures")
    args = parser.parse_args(argv)
    # One line per network as it finishes, so that a long soak can be followed and read back.
    log = Path(args.output) / "networks.jsonl"
    log.parent.mkdir(parents=True, exist_ok=True)
    log.write_text("")

    def record(n):
        with log.open("a") as f:
            f.write(json.dumps({"seed": n.seed, "network": n.summary, "words": n.words,
                                "torch_mismatches": n.torch_mismatches,
                                "word_mismatches": n.word_mismatches,
                                "cycles": [n.cycles_predicted, n.cycles_measured],
                                "problems": n.problems}) + "\n")

    r = fuzz(args.n, seed=args.seed, vectors=args.vectors, out_dir=args.output, on_result=record)
    print(summary_text(r))
    print(table(r), end="")
    if args.write:
        atomic_write_text(RESULTS, json.dumps(r, indent=2) + "\n")
        write_markdown(r)
    return 1 if r["failures"] else 0


if __name__ == "__main__":
    sys.exit(main())
