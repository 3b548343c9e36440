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
TRANSPORTS = ("axis-cocotbext", "uart-sim")


def checkpoint(case, work, *, data):
    """The case's lowbit checkpoint, trained once into ``work``."""
    from lowbit.flow import train_checkpoint

    dataset, options, epochs, _ = CASES[case]
    path = Path(work) / f"{case}-e{epochs}.pt"
    if not path.exists():
        train_checkpoint(path, dataset=dataset, epochs=epochs, data_root=data, progress=True, **options)
    return path


def run_case(case, transport, *, work, data, limit, pause, fault_rate, divisor, seed=0):
    from lowbit.flow import compile_checkpoint, simulate_axi_stream

    ckpt = checkpoint(case, work, data=data)
    build = Path(work) / f"{case}-build"
    manifest, _ = compile_checkpoint(ckpt, build, target_cycles=CASES[case][3], data_root=data, force=True)
    if transport == "uart-sim":
        return run_uart_sim(case, build, manifest, data=data, limit=limit, fault_rate=fault_rate, divisor=divisor,
                            seed=seed)
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


def run_uart_sim(case, build, manifest, *, data, limit, fault_rate, divisor, seed):
    from lowbit.flow import board_run_problems, run_board

    r = run_board(build, sim=True, limit=limit, data_root=data, fault_rate=fault_rate, divisor=divisor, seed=seed)
    return {
        "build": case, "transport": "uart-sim", "images": r["images"], "mismatches": r["mismatches"],
        "tlast_errors": None, "accuracy": r["hw_accuracy"], "ir_accuracy": r["ir_accuracy"],
        "images_per_s": r["images_per_s"], "cycles": r["cycles"], "pause": None, "in_pause_cycles": None,
        "out_pause_cycles": None, "cycles_per_inference": manifest["cycles_per_inference"],
        "faults_injected": r["faults_injected"], "faults_detected": r["faults_detected"],
        "wrong_results_accepted": r["wrong_results_accepted"], "faults_by_kind": r["faults_by_kind"],
        "fault_rate": fault_rate, "divisor": divisor, "window": r["window"], "board_resets": r["board_resets"],
        "bytes_to_board": r["bytes_to_board"], "bytes_to_host": r["bytes_to_host"], "link_events": r["link_events"],
        "link_bound_cycles": r["images"] * (r["image_bytes"] + 7) * 10 * divisor,
        "epochs": CASES[case][2], "problems": board_run_problems(r),
    }


def _na(value):
    return "n/a" if value is None else value


def table(rows):
    lines = ["| build | transport | images | mismatches | tlast errors | accuracy (HW = IR) | cycles (network's own; "
             "link's) | paused cycles in / out | images/s (wall) | faults injected / detected / wrong accepted |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---|"]
    for r in rows:
        faults = "n/a" if r["faults_injected"] is None else \
            f"{r['faults_injected']} / {r['faults_detected']} / {r['wrong_results_accepted']}"
        own = f"{r['images'] * r['cycles_per_inference']}"
        if "link_bound_cycles" in r:
            own += f"; {r['link_bound_cycles']}"
        lines.append(f"| {r['build']} | {r['transport']} | {r['images']} | {r['mismatches']} "
                     f"| {_na(r['tlast_errors'])} | {r['accuracy']:.4f} | {r['cycles']} ({own}) "
                     f"| {_na(r['in_pause_cycles'])} / "
                     f"{_na(r['out_pause_cycles'])} | {r['images_per_s']} | {faults} |")
    return "\n".join(lines)


def fault_lines(rows):
    """What each faulted run injected and what the client saw."""
    return "\n".join(
        f"- {r['build']}, {r['transport']} (a frame damaged with chance {r['fault_rate']} each way, {r['divisor']} "
        f"cycles per bit, window {r['window']}): faults "
        + ", ".join(f"{k} {v}" for k, v in r["faults_by_kind"].items())
        + f"; board resets {r['board_resets']}; the client saw "
        + ", ".join(f"{k} {v}" for k, v in r["link_events"].items()) + "."
        for r in rows if r.get("faults_by_kind") is not None)


METHOD = """Command: `python -m benchmarks.board_runtime --data ../shared/data --write`. Each build is a
`lowbit train` model (digits: the default bipolar MLP; Fashion-MNIST: a ternary CNN) compiled with the
default AXI4-Stream top.

- `axis-cocotbext`: the whole test set through that top in Verilator, driven by cocotbext-axi's
  `AxiStreamSource` / `AxiStreamSink`, each paused on a random 30 % of cycles; every result beat is
  compared with the IR's and every frame must end at `m_axis_tlast`. `cycles` counts the run, beside the
  network's own cycles per image times the images.
- `uart-sim`: `lowbit run BUILD --sim --faults RATE --divisor 4`: the host client (the same code that
  drives a board's serial port) talks the framed protocol (sync byte, length, CRC-16, error answers, 3
  images in flight) over a socket to the whole board top in Verilator: UART receiver and transmitter at
  4 cycles per bit, frame parser, image buffers, the network and the result sender. On the simulated
  wire a share of the frames is damaged each way: a bit flipped, a byte dropped, or (towards the board)
  the board reset between two bytes of a frame. A fault counts as detected when no frame that its
  receiver took as good (the board's log of stored images, the client's frames that passed the CRC)
  overlaps the frame it damaged; every result the client took is compared with the IR. `cycles` is the
  simulated run, beside the network's cycles and the cycles the image frames alone take on the line.

`images/s` is of the simulation's wall time, not the hardware's."""


def _write(rows):
    import json

    path = ROOT / "benchmarks" / "results" / "board_runtime.json"
    recorded = {(r["build"], r["transport"]): r for r in json.loads(path.read_text())} if path.exists() else {}
    recorded.update({(r["build"], r["transport"]): r for r in rows})
    merged = [recorded[k] for k in ((c, t) for c in CASES for t in TRANSPORTS) if k in recorded]
    write_results("board_runtime", merged)
    update_section("board_runtime", "## Hardware out: whole test sets through the build's ports", METHOD + "\n\n"
                   + table(merged) + "\n\n" + fault_lines(merged))


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m benchmarks.board_runtime", description=__doc__.split("\n")[0])
    add_case_arguments(ap, CASES, "board_runtime")
    ap.add_argument("--pause", type=float, default=0.3, help="chance of a paused cycle on each side")
    ap.add_argument("--transports", default=",".join(TRANSPORTS), help="comma-separated, of " + ", ".join(TRANSPORTS))
    ap.add_argument("--faults", type=float, default=0.05, help="uart-sim: chance that a frame is damaged, each way")
    ap.add_argument("--divisor", type=int, default=4, help="uart-sim: cycles per serial bit")
    args = ap.parse_args(argv)
    names = chosen_cases(args, CASES)
    if names is None:
        return 2
    transports = args.transports.split(",")
    if not set(transports) <= set(TRANSPORTS):
        print(f"--transports: choose from {', '.join(TRANSPORTS)}", file=sys.stderr)
        return 2
    rows = []
    for name in names:
        for transport in transports:
            try:
                row = run_case(name, transport, work=args.work, data=args.data, limit=args.limit,
                               pause=args.pause, fault_rate=args.faults, divisor=args.divisor)
            except LowbitError as e:
                print(f"{name}: error: {e}", file=sys.stderr)
                return 2
            rows.append(row)
            print(table([row]).splitlines()[-1], flush=True)
            if args.write:
                _write(rows)
    print(table(rows))
    print(fault_lines(rows))
    for r in rows:
        for problem in r["problems"]:
            print(f"{r['build']} ({r['transport']}): NOT AS EXPECTED: {problem}", file=sys.stderr)
    return 1 if any(r["problems"] for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
