"""FINN's binary MLPs (W1A1 TFC, SFC, LFC) through lowbit: cycles, fps, and Yosys xc7 LUT/BRAM.

Each network is built directly as IR (:func:`lowbit.boards.calibrate.random_bipolar_mlp`, random
bipolar weights and thresholds: cost does not depend on the trained values beyond what random
ones show) and folded to a cycle target per inference close to FINN's published design point, at
the foldings of :data:`NETWORKS` (``--search`` runs :func:`lowbit.folding.fold_for_cycles`
instead):

- TFC (784-64-64-64-10), 64 cycles: the cycle count of FINN's tfc-w1a1 folding (PE 16 / SIMD 49
  on the first layer); lowbit's folding search picked its own cheapest folding for that target.
- SFC (784-256-256-256-10), 16 cycles: FINN's SFC-max reaches 12.3 M fps at 200 MHz, which is
  about 16 cycles per image.
- LFC (784-1024-1024-1024-10), 256 cycles: FINN's LFC-W1A1 on PYNQ-Z1 reports 356,633 fps at
  100 MHz, about 280 cycles per image.

Each network is measured unpipelined and pipelined (``lowbit compile --pipeline``, one counter
level between registers by default, ``--pipeline K``): the same folding and cycles, a longer
latency. Cycles per inference are exact (the slowest engine's ``MH/PE * MW/SIMD``). lowbit's fps is
at the estimator's xc7 fmax, a model (no open place and route exists for xc7), labelled as such; it
is never quoted at a clock no lowbit design was shown to reach. Beside it stand the LUT levels
between registers of the Yosys-mapped netlist (:func:`lowbit.boards.levels.lut_levels`), the figure
the model stands for. LUT and BRAM come from :func:`lowbit.boards.synth.synthesize` for xc7 (whole
network, out of context) when ``--synth`` names the network; a network not synthesized says so.

Usage::

    python -m benchmarks.finn                    # cycles and fps only
    python -m benchmarks.finn --synth tfc        # plus Yosys xc7 for TFC (seconds)
    python -m benchmarks.finn --synth tfc,sfc,lfc --write   # SFC and LFC: ~20 minutes each
    python -m benchmarks.finn --search           # the foldings the search picks today
"""

import argparse
import json
import sys
import time
from pathlib import Path

from lowbit.boards.calibrate import random_bipolar_mlp
from lowbit.boards.estimate import estimate_manifest
from lowbit.boards.levels import lut_levels
from lowbit.boards.synth import synthesize
from lowbit.compiler.codegen import TOP_NAME, describe, generate_verilog
from lowbit.compiler.passes import set_pipeline
from lowbit.core.files import atomic_write_text
from lowbit.folding import fold_for_cycles

from .report import replace_block

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results" / "finn.json"
SECTION = "## FINN binary MLPs (TFC, SFC, LFC)"
TABLE_BEGIN = "<!-- finn table begin -->"
TABLE_END = "<!-- finn table end -->"

# The Zynq-7020 of the PYNQ-Z1 (FINN's LFC board) is the chip of the Arty Z7-20.
ESTIMATE_BOARD = "arty-z7-20"
# Widths, cycle target and the folding (PE, SIMD) per layer. The foldings are those lowbit's
# folding search (:func:`lowbit.folding.fold_for_cycles`) picked for each target with
# the estimator of the synthesized runs; they are fixed here so that the synthesized designs stay
# the same when the estimator is refitted (``--search`` folds with the current estimator).
NETWORKS = {
    "tfc": ([784, 64, 64, 64, 10], 64, [(1, 784), (1, 64), (1, 64), (5, 2)]),
    "sfc": ([784, 256, 256, 256, 10], 16, [(16, 784), (16, 256), (16, 256), (5, 32)]),
    "lfc": ([784, 1024, 1024, 1024, 10], 256, [(16, 196), (16, 256), (16, 256), (5, 8)]),
}
# Published FINN numbers quoted for comparison (FINN paper, FPGA 2017, and FINN-R, 2018).
FINN_PUBLISHED = {
    "sfc": "SFC-max: 12.3 M fps, 91,131 LUT, 200 MHz (ZC706)",
    "lfc": "LFC-W1A1: 356,633 fps, PYNQ-Z1 (100 MHz)",
    "tfc": "",
}


# The goal of the timing issue for xc7: LUT levels between registers of the mapped netlist.
LEVELS_GOAL = 4


def measure(name, synth, search=False, pipeline=0):
    widths, target, folding = NETWORKS[name]
    if search:
        graph = fold_for_cycles(random_bipolar_mlp(widths, seed=0), target)
    else:
        graph = random_bipolar_mlp(widths, folding, seed=0)
    if pipeline:
        graph = set_pipeline(graph, pipeline)
    folds = ",".join(str(m.folding) for m in graph.matmuls())
    cycles = max(m.cycles(m.folding) for m in graph.matmuls())
    assert cycles == target, (name, folds, cycles)
    # The estimate needs only the engines' parameters, not their Verilog: quick at any size.
    manifest = describe(graph)
    est = estimate_manifest(manifest, ESTIMATE_BOARD)
    row = {"network": name, "widths": "-".join(map(str, widths)), "folding": folds, "pipeline": pipeline,
           "cycles_per_inference": cycles, "latency_cycles": manifest["latency_cycles"],
           "fps_at_modelled_fmax": round(est["fmax_mhz"] * 1e6 / cycles),
           "est_luts": est["total"]["luts"],
           "est_brams": est["total"]["brams"], "est_fmax_mhz": round(est["fmax_mhz"], 1),
           "fits_xc7z020": est["fits"], "luts": None, "ffs": None, "brams": None,
           "synth_seconds": None, "lut_levels": None, "finn": FINN_PUBLISHED[name]}
    if synth:
        text, _ = generate_verilog(graph)
        start = time.monotonic()
        r = synthesize(text, TOP_NAME, "xilinx")
        row.update(luts=r.luts, ffs=r.ffs, brams=r.brams, flow=r.flow,
                   synth_seconds=round(r.seconds if r.cached else time.monotonic() - start, 1))
        lv = lut_levels(text, TOP_NAME)
        row.update(lut_levels=lv.levels, lut_levels_path={"start": lv.start, "end": lv.end, "muxes": lv.muxes,
                                                          "carries": lv.carries},
                   lut_levels_histogram={str(k): v for k, v in sorted(lv.histogram.items())},
                   levels_seconds=round(lv.seconds, 1))
    return row


def _given(value, fmt="{}"):
    return "not synthesized" if value is None else fmt.format(value)


def table(rows):
    head = ("| network | folding (PExSIMD per layer) | pipeline | cycles | latency | fmax MHz (xc7, modelled) "
            "| fps at that fmax (modelled) | LUT levels between registers (Yosys) | est. xc7 LUT | est. RAMB18 "
            "| xc7 LUT (Yosys) | FF (Yosys) | RAMB18 (Yosys) | FINN published |\n"
            "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|\n")
    return head + "".join(
        f"| {r['network'].upper()} {r['widths']} | {r['folding']} | {r.get('pipeline') or '-'} | "
        f"{r['cycles_per_inference']} | {r.get('latency_cycles')} | "
        f"{r['est_fmax_mhz']} | {r['fps_at_modelled_fmax']:,.0f} | {_given(r.get('lut_levels'))} | "
        f"{r['est_luts']:,} | {r['est_brams']} | {_given(r['luts'], '{:,}')} | {_given(r['ffs'], '{:,}')} | "
        f"{_given(r['brams'])} | {r['finn']} |\n" for r in rows)


def write_markdown(rows):
    block = f"{TABLE_BEGIN}\n{table(rows)}{TABLE_END}"
    intro = (f"{SECTION}\n\nCommand: `python -m benchmarks.finn --synth tfc,sfc,lfc --write`. Random "
                 "W1A1 weights and thresholds built as IR, folded to FINN-like cycle targets, each "
                 "unpipelined and pipelined (`--pipeline`); cycles and latency are exact; fps is at the "
                 "estimator's xc7 fmax, a model (no open place and route exists for xc7), not a clock any "
                 "lowbit design was shown to reach; the LUT levels between registers are measured on the "
                 "Yosys-mapped, flattened netlist (`lowbit.boards.levels`; MUXF7/8 and carry chains add "
                 "no level); LUT/FF/RAMB18 from Yosys `synth_xilinx` (whole network, out of context, no "
                 "place and route).\n\n")
    replace_block(TABLE_BEGIN, TABLE_END, block, intro)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--synth", default="", help="comma-separated networks to synthesize (tfc,sfc,lfc)")
    parser.add_argument("--write", action="store_true",
                        help="update benchmarks/results/finn.json and BENCHMARKS.md")
    parser.add_argument("--pipeline", type=int, default=1,
                        help="counter levels between registers of the pipelined rows (default 1)")
    parser.add_argument("--search", action="store_true",
                        help="fold each network with the folding search and the current estimator "
                             "instead of the recorded foldings (not with --write)")
    args = parser.parse_args(argv)
    if args.search and args.write:
        parser.error("--search folds with the current estimator; the recorded table keeps the "
                     "synthesized foldings, so drop --write")
    synth = {s for s in args.synth.split(",") if s}
    unknown = synth - set(NETWORKS)
    if unknown:
        parser.error(f"unknown networks {sorted(unknown)}; choose from {', '.join(NETWORKS)}")
    if args.pipeline < 1:
        parser.error(f"--pipeline must be at least 1, not {args.pipeline}")
    rows = []
    for name in NETWORKS:
        for levels in (0, args.pipeline):
            rows.append(measure(name, name in synth, args.search, levels))
            print(table(rows[-1:]).splitlines()[-1], flush=True)
    print(table(rows))
    deep = [f"{r['network']} ({r['lut_levels']})" for r in rows
            if r["pipeline"] and r.get("lut_levels") is not None and r["lut_levels"] > LEVELS_GOAL]
    if deep:
        print(f"more than {LEVELS_GOAL} LUT levels between registers, pipelined: {', '.join(deep)}")
    if args.write:
        atomic_write_text(RESULTS, json.dumps({"rows": rows}, indent=1) + "\n")
        write_markdown(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
