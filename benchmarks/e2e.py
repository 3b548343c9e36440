"""End to end over whole test sets: train, export, compile, run every test image in Verilator.

Usage::

    python -m benchmarks.e2e --data ../shared/data             # every case, full test sets
    python -m benchmarks.e2e --data ../shared/data --write     # also results/e2e.json, BENCHMARKS.md
    python -m benchmarks.e2e --cases mnist-mlp-ternary --limit 1000

Cases: an MNIST MLP 784-256-256-10 for each weight format (bipolar, binary01, ternary, levels5,
levels9, levels17, pow2, tiled p=4), and a Fashion-MNIST CNN (conv3x3 16 - pool - conv3x3 32 -
pool - fc 10) in bipolar, ternary and levels5, on the thermometer code of the pixels. The
``-recipe`` cases train a wider Fashion-MNIST CNN in the recipe of :data:`RECIPE`: the integer
pixels into the first layer, flips and a longer schedule; the network's fp32 twin (fp32 weights,
float activations, float pixels, the same architecture and recipe) is trained first and its
accuracy reported beside the row (and, with ``"distill"``, taught from); ``-recipe-wide`` is the
bipolar CNN at twice the channels. The ``-vit-`` cases are the integer-only ViT on MNIST and
Fashion-MNIST in ternary, levels5 and binary01. Checkpoints are trained once into
``--work`` (default build/e2e) and reused. Each row: ``{dataset, arch, format, images, mismatches,
ir_accuracy, hw_accuracy, cycles_predicted, cycles_measured}``; ``mismatches`` counts output words
of the hardware that differ from the IR reference, over every image with random stalls.
"""

import argparse
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from lowbit.compiler.codegen import foldings
from lowbit.core.executor import Executor, Failure

from .report import ROOT, update_section, write_results

MLP = "mlp:256,256"
CNN = "cnn:16,32"
RECIPE_CNN = "cnn:32,64"
# The hardware-setting recipe of the Fashion-MNIST CNNs: options of 'lowbit train', and the fp32
# twin to train and report beside each row ("distill": also learn from it as a teacher). Shifts and
# distillation each cost accuracy in trials (BENCHMARKS.md), so the recipe leaves them out.
RECIPE = {"input_encoding": "pixels", "augment": "flip", "epochs": 20, "twin": True, "distill": False}
VIT = "vit:dim=64,depth=2,heads=4,mlp_dim=128,patch=7+integer"
# The ViT's 4-bit activations: MLP u4; normalized tokens, Q, K and V s4; the residual stream s6. A
# smaller Adam step than the CNNs' for the attention.
VIT_RECIPE = {"input_encoding": "pixels", "lr": 0.002}
# Hardware-setting activations: one bit for the binary formats, two bits for the multi-level ones.
CASES = {
    **{f"mnist-mlp-{f}": ("mnist", MLP, f, None, "bipolar") for f in ("bipolar", "binary01")},
    **{f"mnist-mlp-{f}": ("mnist", MLP, f, None, "u2")
       for f in ("ternary", "levels5", "levels9", "levels17", "pow2")},
    "mnist-mlp-tiled-p4": ("mnist", MLP, "tiled", 4, "bipolar"),
    **{f"fashion-mnist-cnn-{f}": ("fashion-mnist", CNN, f, None, "bipolar" if f == "bipolar" else "u2")
       for f in ("bipolar", "ternary", "levels5")},
    **{f"fashion-mnist-cnn-{f}-recipe": ("fashion-mnist", RECIPE_CNN, f, None,
                                         "bipolar" if f == "bipolar" else "u2", RECIPE)
       for f in ("bipolar", "ternary", "levels5")},
    # The recipe with a bit more activation precision and a 17-level head (BENCHMARKS.md).
    **{f"fashion-mnist-cnn-{f}-recipe-{act}-head17": ("fashion-mnist", RECIPE_CNN, f, None, act,
                                                      {**RECIPE, "head_format": "levels17"})
       for f, act in (("bipolar", "u2"), ("ternary", "u3"), ("levels5", "u3"), ("levels5", "u4"))},
    # Bipolar in a wider network: its goal has no twin to be near, so none is trained.
    "fashion-mnist-cnn-bipolar-recipe-wide": ("fashion-mnist", "cnn:64,128", "bipolar", None, "bipolar",
                                              {**RECIPE, "twin": False}),
    # Integer-only ViTs (lowbit.model.integer_vit): 16 tokens of 7x7 pixels, 2 blocks of 4 heads.
    # binary01: binary normalized, each projection's {0,1} sums normalized per token.
    **{f"mnist-vit-{f}": ("mnist", VIT, f, None, "u4", {**VIT_RECIPE, "epochs": 15})
       for f in ("ternary", "levels5", "binary01")},
    **{f"fashion-mnist-vit-{f}": ("fashion-mnist", VIT, f, None, "u4", {**VIT_RECIPE, "epochs": 20, "augment": "flip"})
       for f in ("ternary", "levels5", "binary01")},
    # Tiled p = 4: every projection and the patch embedding (1,024 weights and more) one bipolar tile
    # repeated four times; the head (640 weights, whose 10 rows four copies do not split) bipolar.
    "mnist-vit-tiled-p4": ("mnist", VIT, "tiled", 4, "u4", {**VIT_RECIPE, "epochs": 15, "min_compress_size": 1024}),
    "fashion-mnist-vit-tiled-p4": ("fashion-mnist", VIT, "tiled", 4, "u4",
                                   {**VIT_RECIPE, "epochs": 20, "augment": "flip", "min_compress_size": 1024}),
}


def run_case(name, *, work, data, epochs, limit, target_cycles, seed=0):
    from lowbit.flow import compile_checkpoint, simulate_build, simulation_problems

    dataset, arch, fmt, p, act, *rest = CASES[name]
    recipe = dict(rest[0]) if rest else {}
    epochs = recipe.pop("epochs", epochs)
    twin, distill = None, recipe.pop("distill", False)
    if recipe.pop("twin", False):
        twin = work / f"{dataset}-{arch.replace(':', '-').replace(',', '_')}-fp32-twin.pt"
        # Float pixels, and fp32 weights in every layer.
        options = {k: v for k, v in recipe.items() if k not in ("input_encoding", "head_format")}
        train_once(twin, dataset=dataset, arch=arch, weight_format="fp32", p=None, act="float", epochs=epochs,
               seed=seed, data_root=data, **options)
        if distill:
            recipe["teacher"] = str(twin)
    ckpt = work / f"{name}.pt"
    train_once(ckpt, dataset=dataset, arch=arch, weight_format=fmt, p=p, act=act, epochs=epochs, seed=seed,
           data_root=data, **recipe)
    build = work / name
    manifest, check = compile_checkpoint(ckpt, build, target_cycles=target_cycles, data_root=data)
    start = time.monotonic()
    sim = simulate_build(build, limit=limit, data_root=data, seed=seed)
    return {
        "case": name, "dataset": dataset, "arch": arch, "format": fmt if p is None else f"tiled-p{p}",
        "activations": act, "images": sim["images"], "mismatches": sim["mismatches"],
        "torch_accuracy": check["torch_accuracy"], "ir_accuracy": sim["ir_accuracy"],
        "hw_accuracy": sim["hw_accuracy"], "cycles_predicted": sim["cycles_predicted"],
        "cycles_measured": sim["cycles_measured"], "latency_predicted": sim["latency_predicted"],
        "latency_measured": sim["latency_measured"], "threshold_float_ties": check["threshold_float_ties"],
        "folding": ",".join(foldings(manifest)),
        "sim_seconds": round(time.monotonic() - start, 1),
        "problems": simulation_problems(sim),
        "epochs": epochs, "recipe": {k: v for k, v in recipe.items() if k != "teacher"},
        "distilled": "teacher" in recipe, "fp32_twin_accuracy": None if twin is None else _accuracy(twin),
    }


def train_once(ckpt, **options):
    """Train ``ckpt`` unless it holds its epochs: a checkpoint is written after every epoch, so
    one left by a stopped run is resumed. Concurrent cases train a shared twin once (a lock)."""
    import fcntl

    from lowbit.flow import train_checkpoint

    with open(ckpt.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        done = _epochs(ckpt)
        if done < options["epochs"]:
            train_checkpoint(ckpt, **(options if not done else {"epochs": options["epochs"],
                                                                "data_root": options["data_root"]}),
                             resume=ckpt if done else None)


def _accuracy(ckpt):
    from lowbit.model.checkpoint import load_checkpoint

    return float(load_checkpoint(ckpt)[1]["metrics"]["test_accuracy"])


def _epochs(ckpt):
    """Epochs a checkpoint has been trained for (0 if there is none)."""
    if not ckpt.exists():
        return 0
    from lowbit.model.checkpoint import load_checkpoint

    return int(load_checkpoint(ckpt)[1].get("metrics", {}).get("epochs", 0))


def table(rows):
    lines = ["| dataset | arch | format | act | training | images | mismatches | IR acc | HW acc "
             "| fp32 twin | cycles pred / meas |",
             "|---|---|---|---|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        recipe = r.get("recipe") or {}
        training = [f"{r.get('epochs', 4)} epochs", *(f"{k.replace('_', ' ')} {v}" for k, v in recipe.items())]
        if r.get("distilled"):
            training.append("distilled from the twin")
        training = ", ".join(training)
        twin = "" if r.get("fp32_twin_accuracy") is None else f"{r['fp32_twin_accuracy']:.4f}"
        lines.append(f"| {r['dataset']} | {r['arch']} | {r['format']} | {r['activations']} | {training} "
                     f"| {r['images']} | {r['mismatches']} | {r['ir_accuracy']:.4f} | {r['hw_accuracy']:.4f} "
                     f"| {twin} | {r['cycles_predicted']} / {r['cycles_measured']} |")
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m benchmarks.e2e", description=__doc__.split("\n")[0])
    ap.add_argument("--data", default=None, help="folder with the MNIST / Fashion-MNIST idx files")
    ap.add_argument("--cases", default=",".join(CASES), help="comma-separated case names")
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--limit", type=int, default=None, help="images per case (default: whole test set)")
    ap.add_argument("--target-cycles", type=int, default=1024, help="folding target per inference")
    ap.add_argument("--work", default=str(ROOT / "build" / "e2e"))
    ap.add_argument("--write", action="store_true")
    ap.add_argument("--workers", type=int, default=1,
                    help="Dask worker processes, one case each (default 1: in this process)")
    ap.add_argument("--scheduler", default=None, help="a running Dask scheduler's address (a shared disk)")
    args = ap.parse_args(argv)
    names = [c.strip() for c in args.cases.split(",") if c.strip()]
    unknown = [c for c in names if c not in CASES]
    if unknown:
        print(f"unknown case(s) {unknown}; known: {', '.join(CASES)}", file=sys.stderr)
        return 2
    work = Path(args.work).resolve()
    work.mkdir(parents=True, exist_ok=True)
    data = None if args.data is None else str(Path(args.data).resolve())
    cases = [Case(name, str(work), data, args.epochs, args.limit, args.target_cycles) for name in names]
    finished = []

    def done(case, outcome, count, failed):
        if isinstance(outcome, Failure):
            print(f"{case.name}: error: {outcome.error}\n{outcome.traceback}", file=sys.stderr, flush=True)
            return
        finished.append(outcome)
        print(table([outcome]).splitlines()[-1], flush=True)
        if args.write:  # after every case: a long run that stops early keeps what it measured
            _write(finished)

    results, failed = Executor(workers=args.workers, scheduler=args.scheduler).map(run_job, cases, on_done=done)
    rows = [row for _, row in results]  # in the order of the cases, whoever ran them
    print(table(rows))
    for r in rows:
        for problem in r["problems"]:
            print(f"{r['case']}: NOT AS PREDICTED: {problem}", file=sys.stderr)
    return 1 if failed or any(r["problems"] for r in rows) else 0


@dataclass(frozen=True)
class Case:
    """One case as a job: the work folder (checkpoints, builds) is on a disk the workers share."""
    name: str
    work: str
    data: object
    epochs: int
    limit: object
    target_cycles: int


def run_job(case):
    return run_case(case.name, work=Path(case.work), data=case.data, epochs=case.epochs, limit=case.limit,
                    target_cycles=case.target_cycles)


def _write(rows):
    """Merge ``rows`` into the recorded results (by case, in CASES order) and update BENCHMARKS.md.

    Runs of disjoint cases may go in parallel: the merge holds a lock on the results file."""
    import fcntl
    import json

    path = ROOT / "benchmarks" / "results" / "e2e.json"
    with open(path.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        recorded = {r["case"]: r for r in json.loads(path.read_text())} if path.exists() else {}
        recorded.update({r["case"]: r for r in rows})
        merged = [recorded[c] for c in CASES if c in recorded]
        write_results("e2e", merged)
        update_section("e2e", "## End to end over whole test sets (Verilator)",
                       METHOD + "\n\n" + table(merged))


METHOD = """Command: `python -m benchmarks.e2e --data ../shared/data --write`. Each case trains the network
(4 epochs, seed 0, hardware setting: thermometer inputs, bipolar activations for the one-bit formats
and `u2` for the others), exports it (the IR is checked against PyTorch on the whole test split),
compiles it at the cheapest folding for 1024 cycles per inference, and runs every test image through
the Verilog in Verilator with random stalls on both sides. `mismatches` counts output words that
differ from the IR reference; cycles are measured in a stall-free phase and must equal the
manifest's prediction. The `-recipe` Fashion-MNIST rows train a wider CNN longer (`training`): the
first layer takes the 8-bit pixels (`--input-encoding pixels`) and images are flipped
(`--augment flip`); the `-head17` rows also give the last layer 17 levels (`--head-format levels17`)
and the hidden activations more bits (`act`). The `fp32 twin` column is the test accuracy of the
same network and recipe with fp32 weights, float activations and float pixels (the weights-only
setting). The `vit...+integer` rows are the integer-only ViT (16 tokens of 7x7 pixels, 2 blocks of
4 heads; `act` u4 is the MLP's, with s4 normalized tokens and Q, K, V and an s6 residual stream) on
the 8-bit pixels, compiled for 1024 cycles per inference: its attention engines set the pace. In the
binary01 rows (binary normalized) every projection has {0,1} weights and a {0,1} bias on its
inputs' integer levels, and its sums are normalized per token before the next quantizer: the
Q|K|V sums together, with one s4 quantizer for Q, K and V."""


if __name__ == "__main__":
    sys.exit(main())
