"""Clocks reached: each network placed on its board unpipelined and pipelined, and run in Verilator.

Every row is one network (seeded random weights and thresholds; timing and size do not depend on
training) at one folding, built twice with ``lowbit build --clock GOAL`` on its board: the network
on the PLL's clock, the UART on the oscillator. The placed fmax is the network clock domain's, from
nextpnr; LUTs, flip-flops and block RAMs are those of the whole placed board top, link and UART
included, so "before" and "after" compare like with like. Both builds are placed to the end even
when they miss the goal (``--allow-slower``), so that the fmax they reach is known.

The pipelined build is then run in Verilator on random inputs with random stalls on both sides:
every output word compared with the IR, and the cycles per inference and the latency measured
against the prediction.

Usage::

    python -m benchmarks.timing            # print the table
    python -m benchmarks.timing --write    # also benchmarks/results/timing.json, BENCHMARKS.md
    python -m benchmarks.timing --only CNN # a trial of the rows whose board or network has "CNN"
"""

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from lowbit.boards.build import build_for_board
from lowbit.boards.calibrate import random_bipolar_mlp
from lowbit.compiler.build import write_build
from lowbit.compiler.ir import BIPOLAR, Folding, Graph, MatMul, MultiThreshold
from lowbit.compiler.passes import choose_memories, set_pipeline, set_weight_memories
from lowbit.flow import simulate_build
from lowbit.folding import fold_for_cycles

from .report import update_section, write_results

# (board, goal MHz, network, widths, (PE, SIMD) per layer, weight format, pipeline levels, layers
# whose weights are in block RAM). The levels are chosen per row by hand, the lowest LUT cost that
# placed at the goal in trials (placement varies by a few percent from one design to the next); the
# compiler does not choose them yet. Block RAM is chosen by hand too: left to synthesis ("auto"),
# the 256-64-10 network's first ROM (32 words of 512 bits) went to LUTs, with 31 % more LUTs and
# 143.5 MHz instead of 152 MHz. iCE40 has no wide multiplexers: a 64-word ROM in its LUT4s is five
# levels deep (56 MHz), so the iCEBreaker row's first layer is in block RAM too.
# Placement seeds a pipelined build may try (lowbit build --seeds): nextpnr seeds 1, 2, ... until
# one reaches the goal. One design's placed fmax moves by about 10 % from seed to seed.
SEEDS = 3
ROWS = (
    ("icebreaker", 60, "64-16-10", (64, 16, 10), ((1, 16), (2, 16)), "bipolar", 2, ("fc0",)),
    ("ulx3s", 150, "64-16-10", (64, 16, 10), ((1, 16), (2, 16)), "bipolar", 2, ()),
    ("ulx3s", 150, "256-64-10", (256, 64, 10), ((8, 64), (10, 16)), "bipolar", 2, ("fc0",)),
    ("ulx3s", 150, "784-64-64-10", (784, 64, 64, 10), ((1, 196), (1, 16), (1, 4)), "bipolar", 1, ("fc0",)),
    ("ulx3s", 150, "TFC 784-64-64-64-10", (784, 64, 64, 64, 10), ((1, 196), (1, 16), (1, 16), (1, 4)),
     "bipolar", 1, ("fc0",)),
    # The ternary lane's trees on bipolar inputs count bits of three signals: one counter level
    # between registers.
    ("ulx3s", 150, "ternary 784-64-64-10", (784, 64, 64, 10), ((1, 196), (1, 16), (1, 4)), "ternary", 1,
     ("fc0", "fc1")),
    # The Fashion-MNIST CNN of the end-to-end benchmark (cnn:16,32 on 28 x 28) at its folding for
    # 1024 cycles per inference; its windows, pools and collect are pipelined too.
    ("ulx3s", 150, "Fashion-MNIST CNN 16,32", "cnn:16,32", 1024, "bipolar", 1, ()),
)
SIM_IMAGES = 200
LUT_GROWTH_GOAL_PCT = 15.0


def random_mlp(widths, foldings, weight_format):
    """A seeded random MLP of ``weight_format`` weights on bipolar activations."""
    if weight_format == "bipolar":
        return random_bipolar_mlp(list(widths), list(foldings))
    rng = np.random.default_rng(0)
    nodes = []
    layers = list(zip(widths[:-1], widths[1:]))
    for k, ((mw, mh), (pe, simd)) in enumerate(zip(layers, foldings)):
        mm = MatMul(f"fc{k}", rng.choice([-1, 0, 1], size=(mh, mw)), weight_format, BIPOLAR, Folding(pe, simd))
        nodes.append(mm)
        if k < len(layers) - 1:
            t = rng.integers(-max(1, mw // 16), max(1, mw // 16) + 1, size=(mh, 1))
            nodes.append(MultiThreshold(f"th{k}", t, mm.out_type, BIPOLAR))
    return Graph(BIPOLAR, widths[0], nodes, meta={"source": f"random {weight_format} MLP, seed 0"})


def random_cnn(arch, target_cycles, weight_format, seed=0):
    """A seeded random CNN of ``arch`` (``cnn:16,32``) on 28 x 28 bipolar images, with random
    batch-norm statistics (so that thresholds land everywhere), folded for ``target_cycles``."""
    import torch

    from lowbit.model.arch import build_model
    from lowbit.model.export import export_model
    from lowbit.training import parse_arch

    torch.manual_seed(seed)
    model = build_model({**parse_arch(arch), "in_shape": [1, 28, 28], "classes": 10,
                         "weight_format": weight_format, "act": "bipolar"})
    with torch.no_grad():
        for mod in model.modules():
            if isinstance(mod, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d)):
                mod.weight.normal_(0.5, 1.0)
                mod.bias.normal_(0, 1)
                mod.running_mean.normal_(0, 3)
                mod.running_var.uniform_(0.5, 20)
            elif hasattr(mod, "weight") and isinstance(mod.weight, torch.nn.Parameter):
                mod.weight.uniform_(-1, 1)
    graph = export_model(model.eval(), {"source": f"random {weight_format} CNN, seed {seed}"})
    return fold_for_cycles(graph, target_cycles)


def _network(widths, foldings, fmt):
    """The row's graph: an MLP of ``widths`` at ``foldings``, or a CNN spec at a cycle target."""
    if isinstance(widths, str):
        return random_cnn(widths, foldings, fmt)
    return random_mlp(widths, foldings, fmt)


def _placed(report):
    used = {k: v["used"] for k, v in report["placed"]["utilization"].items()}
    cells = report["placed"].get("logic_cells")  # iCE40: a cell is a LUT and a flip-flop, counted apart here
    return {"seed": report["placed"]["seed"], "fmax_by_seed": report["placed"]["fmax_by_seed"],
            "luts": cells["luts"] if cells else used["TRELLIS_COMB"],
            "ffs": cells["ffs"] if cells else used["TRELLIS_FF"],
            "logic_cells": cells["total"] if cells else None,
            "brams": used.get("ICESTORM_RAM" if cells else "DP16KD", 0),
            "fmax_mhz": round(report["clock"]["network_fmax_mhz"], 1),
            "seconds": round(report["placed"]["seconds"], 1)}


def measure(row, work, progress=print):
    board, goal, name, widths, foldings, fmt, levels, in_block = row
    graph = set_weight_memories(choose_memories(_network(widths, foldings, fmt)), dict.fromkeys(in_block, "block"))
    out = {}
    for label, g in (("before", graph), ("after", set_pipeline(graph, levels))):
        build = work / f"{board}-{name.replace(' ', '_')}-{label}"
        manifest = write_build(g, build / "build", force=True)
        report = build_for_board(build / "build", board, build / "board", clock_mhz=goal, allow_slower=True,
                                 force=True, seeds=SEEDS if label == "after" else 1)
        out[label] = (manifest, _placed(report))
        progress(f"  {board} {name} {label}: {out[label][1]}")
    manifest, placed = out["after"]
    _, before = out["before"]
    rng = np.random.default_rng(1)
    x = np.where(rng.random((SIM_IMAGES, *graph.input_shape)) < 0.5, -1, 1)
    sim = simulate_build(work / f"{board}-{name.replace(' ', '_')}-after" / "build", inputs=x, progress=False)
    cycles = manifest["cycles_per_inference"]
    return {
        "board": board, "network": name, "weights": fmt,
        "folding": ",".join(f"{m.folding.pe}x{m.folding.simd}" for m in graph.matmuls()), "pipeline": levels,
        "weights_in_block_ram": [m.name for m in graph.matmuls() if m.weight_memory == "block"],
        "cycles_per_inference": cycles, "latency_cycles": manifest["latency_cycles"],
        "placed_luts": placed["luts"], "ffs": placed["ffs"], "brams": placed["brams"],
        "fmax_mhz": placed["fmax_mhz"], "fmax_before_mhz": before["fmax_mhz"],
        "seed": placed["seed"], "fmax_by_seed": placed["fmax_by_seed"],
        "fps_at_fmax": round(placed["fmax_mhz"] * 1e6 / cycles),
        "luts_before": before["luts"], "ffs_before": before["ffs"],
        "lut_growth_pct": round(100 * (placed["luts"] - before["luts"]) / before["luts"], 1),
        "logic_cells": placed["logic_cells"], "logic_cells_before": before["logic_cells"],
        "goal_mhz": goal, "meets_goal": placed["fmax_mhz"] >= goal,
        "sim_images": sim["images"], "sim_mismatches": sim["mismatches"],
        "cycles_measured": sim["cycles_measured"], "latency_measured": sim["latency_measured"],
        "pnr_seconds": placed["seconds"] + before["seconds"],
    }


def table(rows):
    head = ("| board | network | PExSIMD | pipeline | cycles | placed LUT (before) | FF (before) | iCE40 logic cells "
            "(before) | BRAM | fmax MHz (before) | goal | inferences/s at fmax | Verilator |\n"
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|\n")
    return head + "".join(
        f"| {r['board']} | {r['network']} | {r['folding']}"
        f"{_in_block(r)} | "
        f"every {r['pipeline']} levels | "
        f"{r['cycles_per_inference']} | {r['placed_luts']} ({r['luts_before']}, {r['lut_growth_pct']:+.1f} %) | "
        f"{r['ffs']} ({r['ffs_before']}) | {_cells(r)} | {r['brams']} | "
        f"**{r['fmax_mhz']}** ({r['fmax_before_mhz']}){_seeds(r)} | {r['goal_mhz']} "
        f"{'met' if r['meets_goal'] else 'missed'} | {r['fps_at_fmax']:,} | "
        f"{r['sim_images']} images, {r['sim_mismatches']} mismatches, cycles {r['cycles_measured']} / "
        + (f"latency {r['latency_measured']} = predicted {r['cycles_per_inference']} / {r['latency_cycles']} |\n"
           if r["latency_cycles"] is not None else
           f"latency {r['latency_measured']}; predicted {r['cycles_per_inference']} / no latency figure (CNN) |\n")
        for r in rows)


def _seeds(row):
    tried = row.get("fmax_by_seed") or {}
    if len(tried) < 2:
        return ""
    return f", seed {row['seed']} of " + ", ".join(f"{float(v):.1f}" for v in tried.values())


def _cells(row):
    if row.get("logic_cells") is None:
        return "n/a"
    now, before = row["logic_cells"], row["logic_cells_before"]
    return f"{now} ({before}, {100 * (now - before) / before:+.1f} %)"


def _in_block(row):
    names = row.get("weights_in_block_ram")
    return f" ({', '.join(names)} in block RAM)" if names else ""


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--write", action="store_true", help="record benchmarks/results/timing.json and BENCHMARKS.md")
    ap.add_argument("--only", metavar="TEXT", help="measure only the rows whose board or network contains TEXT "
                    "(a trial: not with --write, which records every row)")
    args = ap.parse_args(argv)
    if args.only is not None and args.write:
        ap.error("--only measures a part of the table: run without --write, or record every row with --write alone")
    chosen = [row for row in ROWS if args.only is None or args.only in f"{row[0]} {row[2]}"]
    if not chosen:
        ap.error(f"no row's board or network contains {args.only!r}; the rows: "
                 + ", ".join(f"{row[0]} {row[2]}" for row in ROWS))
    start = time.monotonic()
    with tempfile.TemporaryDirectory() as tmp:
        rows = [measure(row, Path(tmp), lambda s: print(s, file=sys.stderr)) for row in chosen]
    print(table(rows))
    minutes = (time.monotonic() - start) / 60
    print(f"{minutes:.1f} min")
    # A CNN predicts no latency (its scans overlap images): its cycles are checked, not its latency.
    bad = [r for r in rows if r["sim_mismatches"] or r["cycles_measured"] != r["cycles_per_inference"]
           or (r["latency_cycles"] is not None and r["latency_measured"] != r["latency_cycles"])]
    if bad:
        print(f"NOT bit-exact or not as predicted: {[r['network'] for r in bad]}", file=sys.stderr)
    if args.write:
        write_results("timing", rows)
        update_section("timing", "## Clocks reached", METHOD + "\n\n" + table(rows))
    return 1 if bad else 0


METHOD = """Each network is built with `lowbit build --clock GOAL` twice, unpipelined and with
`lowbit compile --pipeline K` (a register every K counter levels of each adder tree, the ROM
outputs and the compare registered, and no stall after the issue stage), and placed by nextpnr
with the network on the PLL's clock and the UART on the oscillator. fmax is the network clock
domain's; LUTs, flip-flops and block RAMs are the whole board top's (link and UART included), in
parentheses before pipelining. The pipelined build is placed with nextpnr's seed 1, then 2 and 3
until one reaches the goal (`lowbit build --seeds 3`), the fastest kept: "seed 2 of 140.2, 157.3"
gives the fmax of every seed tried (the unpipelined build: seed 1). On the iCE40, where a logic
cell holds a LUT4, a carry and a flip-flop, "LUT" counts the placed cells whose LUT or carry is
used (the logic cells less those nextpnr's packer reports as "DFF only", like the ECP5's
TRELLIS_COMB) and "FF" the cells whose flip-flop is used; the logic cells themselves are in their
own column. Weights are seeded random: timing and size do not depend on training.
Each pipelined network then runs in Verilator on random inputs with random stalls on both sides.
In the pipelined CNN the windows and pools look their scan flags up a step ahead, the collect
shifts its beats in, and a FIFO whose input ready is a register stands in front of every engine
but a matrix engine; a CNN has no single latency figure (its window scans overlap images).
"(fc0 in block RAM)": that layer's weights are in block RAM in both builds of the row; the others
are in LUTs, or where left to synthesis ("auto") wherever Yosys puts them.
`python -m benchmarks.timing --write`."""


if __name__ == "__main__":
    sys.exit(main())
