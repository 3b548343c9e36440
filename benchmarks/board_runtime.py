"""Hardware out: whole test sets through a build's external interface.

    python -m benchmarks.board_runtime --data ../shared/data --write
    python -m benchmarks.board_runtime --cases digits-mlp --limit 100

Transport ``axis-cocotbext``: the build's AXI4-Stream top (``lowbit compile``'s default ports) in
Verilator, driven by cocotbext-axi's ``AxiStreamSource`` and ``AxiStreamSink`` with random pauses
on both sides (:func:`lowbit.flow.simulate_axi_stream`); every result beat is compared with the IR
and every result frame must end at ``m_axis_tlast``. ``images_per_s`` is simulated images per
second of wall time, a figure of the testbench, not of the hardware. No faults are injected on this
transport (the fault columns are for the UART link).
"""

import argparse
import sys
from pathlib import Path

from lowbit.core.errors import LowbitError

from .report import ROOT, add_case_arguments, chosen_cases, update_section, write_results

# case -> (dataset, lowbit train options, epochs, compile target cycles)
CASES = {
    "digits-mlp": ("digits", {}, 30, 64),
    "fashion-mnist-cnn": ("fashion-mnist", {"arch": "cnn:16,32", "weight_format": "ternary"}, 4, 1024),
}
TRANSPORTS = ("axis-cocotbext",)


def checkpoint(case, work, *, data):
    """The case's lowbit checkpoint, trained once into ``work``."""
    from lowbit.flow import train_checkpoint

    dataset, options, epochs, _ = CASES[case]
    path = Path(work) / f"{case}-e{epochs}.pt"
    if not path.exists():
        train_checkpoint(path, dataset=dataset, epochs=epochs, data_root=data, progress=True, **options)
    return path


def run_case(case, transport, *, work, data, limit, pause, seed=0):
    from lowbit.flow import compile_checkpoint, simulate_axi_stream

    ckpt = checkpoint(case, work, data=data)
    build = Path(work) / f"{case}-build"
    manifest, _ = compile_checkpoint(ckpt, build, target_cycles=CASES[case][3], data_root=data, force=True)
    r = simulate_axi_stream(build, limit=limit, seed=seed, pause=pause, data_root=data)
    problems = []
    if r["mismatches"] or r["tlast_errors"]:
        problems.append(f"{r['mismatches']} result beats differ from the IR ({r['tlast_errors']} tlast errors)")
    if r["hw_accuracy"] != r["ir_accuracy"]:
        problems.append(f"hardware accuracy {r['hw_accuracy']} is not the IR's {r['ir_accuracy']}")
    return {
        "build": case, "transport": transport, "images": r["images"], "mismatches": r["mismatches"],
        "tlast_errors": r["tlast_errors"], "accuracy": r["hw_accuracy"], "ir_accuracy": r["ir_accuracy"],
        "images_per_s": r["images_per_s"], "cycles": r["cycles"], "pause": pause,
        "in_pause_cycles": r["in_pause_cycles"], "out_pause_cycles": r["out_pause_cycles"],
        "cycles_per_inference": manifest["cycles_per_inference"],
        "faults_injected": None, "faults_detected": None, "wrong_results_accepted": None,
        "epochs": CASES[case][2], "problems": problems,
    }


def table(rows):
    lines = ["| build | transport | images | mismatches | tlast errors | accuracy (HW = IR) | cycles (network's "
             "own) | paused cycles in / out | images/s (wall) | faults injected / detected / wrong accepted |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---|"]
    for r in rows:
        faults = "n/a" if r["faults_injected"] is None else \
            f"{r['faults_injected']} / {r['faults_detected']} / {r['wrong_results_accepted']}"
        lines.append(f"| {r['build']} | {r['transport']} | {r['images']} | {r['mismatches']} | {r['tlast_errors']} "
                     f"| {r['accuracy']:.4f} | {r['cycles']} ({r['images'] * r['cycles_per_inference']}) "
                     f"| {r['in_pause_cycles']} / {r['out_pause_cycles']} | {r['images_per_s']} | {faults} |")
    return "\n".join(lines)


METHOD = """Command: `python -m benchmarks.board_runtime --data ../shared/data --write`. Each build is a
`lowbit train` model (digits: the default bipolar MLP; Fashion-MNIST: a ternary CNN) compiled with the
default AXI4-Stream top. `axis-cocotbext`: the whole test set through that top in Verilator, driven by
cocotbext-axi's `AxiStreamSource` / `AxiStreamSink`, each paused on a random 30 % of cycles; every
result beat is compared with the IR's and every frame must end at `m_axis_tlast`. `cycles` counts the
run, beside the network's own cycles per image times the images. `images/s` is of the simulation's
wall time."""


def _write(rows):
    import json

    path = ROOT / "benchmarks" / "results" / "board_runtime.json"
    recorded = {(r["build"], r["transport"]): r for r in json.loads(path.read_text())} if path.exists() else {}
    recorded.update({(r["build"], r["transport"]): r for r in rows})
    merged = [recorded[k] for k in ((c, t) for c in CASES for t in TRANSPORTS) if k in recorded]
    write_results("board_runtime", merged)
    update_section("board_runtime", "## Hardware out: whole test sets through the build's ports", METHOD + "\n\n"
                   + table(merged))


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m benchmarks.board_runtime", description=__doc__.split("\n")[0])
    add_case_arguments(ap, CASES, "board_runtime")
    ap.add_argument("--pause", type=float, default=0.3, help="chance of a paused cycle on each side")
    args = ap.parse_args(argv)
    names = chosen_cases(args, CASES)
    if names is None:
        return 2
    rows = []
    for name in names:
        for transport in TRANSPORTS:
            try:
                row = run_case(name, transport, work=args.work, data=args.data, limit=args.limit,
                               pause=args.pause)
            except LowbitError as e:
                print(f"{name}: error: {e}", file=sys.stderr)
                return 2
            rows.append(row)
            print(table([row]).splitlines()[-1], flush=True)
            if args.write:
                _write(rows)
    print(table(rows))
    for r in rows:
        for problem in r["problems"]:
            print(f"{r['build']} ({r['transport']}): NOT AS EXPECTED: {problem}", file=sys.stderr)
    return 1 if any(r["problems"] for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
