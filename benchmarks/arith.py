"""Synthesis cost of every arithmetic lane at a 256-input dot product, against a behavioural baseline, on xc7.

Each row is a :class:`lowbit.hw.mvau.MatrixVectorUnit` with SIMD = 256 (one whole 256-input dot
product per cycle, PE = 1), built from the product's own lanes (:mod:`lowbit.hw.lanes`), and the
same unit built with ``behavioural=True``: the lane's partial sum is the plain sum of the lane's
products (``popcount`` / ``sum`` as a balanced tree of ``+``), and constant weights reach it as
a constant word rather than as integers. Both are synthesized in the same run with
:func:`lowbit.boards.synth.synthesize` (``synth_xilinx -family xc7 -flatten`` with the classic
``abc`` LUT mapper, the project's xc7 flow; the ``flow`` column names it).

Weights come from memory (a ROM of two rows with ``rom_style = "block"``, so synthesis cannot
see them) unless the row says ``const`` (``weight_memory="const"``, fully unrolled, so synthesis
simplifies by each constant weight). LUT counts are those of the whole unit: input, accumulator
and output registers are flip-flops, the weight ROM is block RAM, and the unit's control adds a
few LUTs to both columns.

Usage::

    python -m benchmarks.arith            # print the table
    python -m benchmarks.arith --write    # also update benchmarks/results/arith.json and BENCHMARKS.md
    python -m benchmarks.arith --only xnor-popcount   # rows whose lane name starts with that
"""

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from amaranth.back import verilog
from amaranth.hdl import Module, Signal
from amaranth.lib import memory, wiring
from amaranth.lib.wiring import In, Out

from lowbit.boards.synth import synthesize
from lowbit.core.files import atomic_write_text
from lowbit.core.formats import weight_format
from lowbit.hw.compressor import popcount_behavioural, popcount_width, xnor_popcount
from lowbit.hw.mvau import MatrixVectorUnit
from lowbit.hw.payload import VectorFormat

from .report import replace_block

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results" / "arith.json"
SECTION = "## Arithmetic lanes (synthesis)"
TABLE_BEGIN = "<!-- arith table begin -->"
TABLE_END = "<!-- arith table end -->"

N = 256
# Weight rows of a unit whose weights come from memory: two, so the ROM is a real memory whose
# output synthesis cannot fold into logic; one row for constant weights (full unrolling).
MEMORY_ROWS = 2
TILE_COPIES = 4
SEED = 2024


class XnorDot(wiring.Component):
    """The XNOR-popcount lane alone: registered input, writable weight memory, registered count.

    Members
    -------
    x : In(n)
        Input vector, registered.
    addr : In(range(4))
        Weight word to read (one cycle of read latency, aligned with the input register).
    we, waddr, wdata : In
        Weight write port; it keeps the weights from folding into logic as constants.
    o : Out(popcount_width(n))
        ``popcount(XNOR(x, w[addr]))``, registered.
    """

    WORDS = 4

    def __init__(self, n, tree):
        self._n, self._tree = n, tree
        super().__init__({
            "x": In(n), "addr": In(range(self.WORDS)),
            "we": In(1), "waddr": In(range(self.WORDS)), "wdata": In(n),
            "o": Out(popcount_width(n)),
        })

    def elaborate(self, platform):
        m = Module()
        m.submodules.weights = weights = memory.Memory(
            shape=self._n, depth=self.WORDS, init=[], attrs={"ram_style": "block"})
        wr = weights.write_port()
        rd = weights.read_port()
        x = Signal(self._n)
        m.d.sync += x.eq(self.x)
        m.d.comb += [wr.en.eq(self.we), wr.addr.eq(self.waddr), wr.data.eq(self.wdata),
                     rd.addr.eq(self.addr)]
        count = (xnor_popcount(m, x, rd.data) if self._tree
                 else popcount_behavioural(~(x ^ rd.data)))
        m.d.sync += self.o.eq(count)
        return m


@dataclass(frozen=True)
class Case:
    """One row: a weight format times an input type, with weights from memory or constant."""
    lane: str
    fmt: str
    in_kind: str
    in_bits: int
    const: bool = False
    copies: int = 1
    note: str = ""

    @property
    def in_format(self):
        return VectorFormat(self.in_kind, self.in_bits, N)

    def weights(self):
        rng = np.random.default_rng(SEED)
        rows = 1 if self.const else MEMORY_ROWS
        return rng.choice(weight_format(self.fmt).levels, size=(rows, N))

    def build(self, tree):
        """The unit with the product's lane (``tree``) or with its behavioural baseline."""
        w = self.weights()
        memory_kind = "const" if self.const else "block"
        if self.copies > 1:
            # Tiled: one tile row feeds every copy's threshold; the baseline is the same layer
            # untiled, the tile repeated in memory and each copy's dot product computed anew.
            rng = np.random.default_rng(SEED + 1)
            t = rng.integers(-N // 4, N // 4, size=(self.copies * len(w), 1))
            if tree:
                return MatrixVectorUnit(w, self.fmt, self.in_format, t, pe=1, simd=N,
                                        copies=self.copies, weight_memory=memory_kind)
            return MatrixVectorUnit(np.tile(w, (self.copies, 1)), self.fmt, self.in_format, t,
                                    pe=self.copies, simd=N, weight_memory=memory_kind)
        return MatrixVectorUnit(w, self.fmt, self.in_format, None, pe=1, simd=N,
                                weight_memory=memory_kind, behavioural=not tree)

    def weight_bits(self):
        return N * weight_format(self.fmt).storage_bits

    def nonzero(self):
        return int(np.count_nonzero(self.weights()[0]))


CASES = [
    Case("xnor-popcount", "bipolar", "bipolar", 1),
    Case("add-sub", "bipolar", "uint", 4),
    Case("add-sub-skip", "ternary", "bipolar", 1),
    Case("add-sub-skip", "ternary", "bipolar", 1, const=True),
    Case("add-sub-skip", "ternary", "uint", 4),
    Case("add-sub-skip", "ternary", "uint", 4, const=True),
    Case("and-popcount", "binary01", "bipolar", 1),
    Case("lut-multiply", "levels5", "uint", 4),
    Case("lut-multiply", "levels9", "uint", 4),
    Case("lut-multiply", "levels17", "uint", 4),
    Case("shift", "pow2", "uint", 4),
    Case("tiled xnor-popcount", "bipolar", "bipolar", 1, copies=TILE_COPIES,
         note=f"{TILE_COPIES} copies, 1 threshold each; baseline: untiled, PE={TILE_COPIES}"),
]


def _inputs(case):
    return "bipolar" if case.in_kind == "bipolar" else f"{case.in_kind}{case.in_bits}"


def _synth(component):
    text = verilog.convert(component, name="top", emit_src=False)
    return synthesize(text, "top", "xilinx")


def _flow(result):
    return getattr(result, "flow", "synth_xilinx")


def measure(case):
    """Synthesize ``case`` with the product's lane and with the baseline; return its table row."""
    unit = case.build(True)
    # The row names the lane the unit really chose, so a change in lane selection shows.
    lane = unit.lane if unit.copies == 1 else f"tiled {unit.lane}"
    if lane != case.lane:
        raise RuntimeError(f"{case.fmt} x {_inputs(case)} now uses lane {lane!r}, not {case.lane!r}")
    tree, base = _synth(unit), _synth(case.build(False))
    bits = case.weight_bits()
    row = {
        "lane": case.lane,
        "weights": case.fmt,
        "inputs": _inputs(case),
        "weight_memory": "const" if case.const else "block ROM",
        "n": N,
        "luts": tree.luts,
        "luts_per_weight_bit": round(tree.luts / bits, 3),
        "baseline_luts": base.luts,
        "baseline_luts_per_weight_bit": round(base.luts / bits, 3),
        "weight_bits": bits,
        "carry4": tree.carry,
        "baseline_carry4": base.carry,
        # Synthesis may put wide multiplications into DSP slices, which the LUT count then omits.
        "dsps": tree.dsps,
        "baseline_dsps": base.dsps,
        "ffs": tree.ffs,
        "brams": tree.brams,
        "flow": _flow(tree),
        "baseline_flow": _flow(base),
        "device": tree.device,
        "yosys": tree.yosys_version,
    }
    if case.const:
        nonzero = case.nonzero()
        row["nonzero_weights"] = nonzero
        row["luts_per_nonzero_weight"] = round(tree.luts / nonzero, 3)
        row["baseline_luts_per_nonzero_weight"] = round(base.luts / nonzero, 3)
    if case.note:
        row["note"] = case.note
    return row


def measure_bare_xnor():
    """The XNOR-popcount lane without the unit around it (goal: at most 1.2 LUT per weight bit)."""
    tree, base = _synth(XnorDot(N, True)), _synth(XnorDot(N, False))
    row = {
        "lane": "xnor-popcount (lane only)", "weights": "bipolar", "inputs": "bipolar",
        "weight_memory": "block RAM", "n": N,
        "luts": tree.luts, "luts_per_weight_bit": round(tree.luts / N, 3),
        "baseline_luts": base.luts, "baseline_luts_per_weight_bit": round(base.luts / N, 3),
        "weight_bits": N, "carry4": tree.carry, "baseline_carry4": base.carry,
        "dsps": tree.dsps, "baseline_dsps": base.dsps, "ffs": tree.ffs, "brams": tree.brams, "flow": _flow(tree), "baseline_flow": _flow(base),
        "device": tree.device, "yosys": tree.yosys_version,
        "note": "registered input, writable 4-word weight RAM, registered count; no unit control",
    }
    return row


def table(rows):
    head = ("| lane | weights × inputs | weight memory | n | LUTs | LUT/weight bit | LUT/nonzero weight "
            "| baseline LUTs | baseline LUT/weight bit | CARRY4 (lane / base) | DSP48 (lane / base) "
            "| flow |\n"
            "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|\n")
    body = []
    for r in rows:
        per_nonzero = (f"{r['luts_per_nonzero_weight']:.3f} ({r['nonzero_weights']})"
                       if "nonzero_weights" in r else "")
        flow = r["flow"] if r["flow"] == r["baseline_flow"] else f"{r['flow']} / {r['baseline_flow']}"
        body.append(
            f"| {r['lane']} | {r['weights']} × {r['inputs']} | {r['weight_memory']} | {r['n']} | "
            f"{r['luts']} | {r['luts_per_weight_bit']:.3f} | {per_nonzero} | {r['baseline_luts']} | "
            f"{r['baseline_luts_per_weight_bit']:.3f} | {r['carry4']} / {r['baseline_carry4']} | "
            f"{r.get('dsps', '?')} / {r.get('baseline_dsps', '?')} | {flow} |\n")
    return head + "".join(body)


def write_markdown(rows):
    block = (f"{TABLE_BEGIN}\n{table(rows)}\nDevice: {rows[0]['device']}, {rows[0]['yosys']}.\n"
             f"{TABLE_END}")
    replace_block(TABLE_BEGIN, TABLE_END, block, SECTION)


def _row_key(row):
    return (row["lane"], row.get("weights"), row.get("inputs"), row.get("weight_memory"))


def merge_rows(rows):
    """``rows`` plus the recorded rows of the current cases that this run did not measure (with
    ``--only``), in table order; rows of cases no longer in the benchmark, or synthesized by
    another flow, are dropped."""
    try:
        recorded = json.loads(RESULTS.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        recorded = []
    order = ["xnor-popcount (lane only)"] + [c.lane for c in CASES]
    current = {(c.lane, c.fmt, _inputs(c), "const" if c.const else "block ROM") for c in CASES}
    flow = rows[0]["flow"] if rows else None
    merged = {_row_key(r): r for r in recorded
              if r.get("flow") == flow and (r["lane"] == "xnor-popcount (lane only)"
                                            or _row_key(r) in current)}
    merged.update({_row_key(r): r for r in rows})
    return sorted(merged.values(), key=lambda r: (order.index(r["lane"]), r["weights"], r["inputs"],
                                                  r["weight_memory"]))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true",
                        help="update benchmarks/results/arith.json and the table in BENCHMARKS.md")
    parser.add_argument("--only", metavar="PREFIX",
                        help="measure only the rows whose lane name starts with PREFIX")
    args = parser.parse_args(argv)
    rows = []
    if not args.only or "xnor-popcount (lane only)".startswith(args.only):
        rows.append(measure_bare_xnor())
    for case in CASES:
        if not args.only or case.lane.startswith(args.only):
            rows.append(measure(case))
            print(table(rows[-1:]).splitlines()[-1], flush=True)
    print(table(rows), end="")
    print(f"\nDevice: {rows[0]['device']}, {rows[0]['yosys']}")
    if args.write:
        rows = merge_rows(rows)
        atomic_write_text(RESULTS, json.dumps(rows, indent=2) + "\n")
        write_markdown(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
