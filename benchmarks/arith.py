"""Synthesis cost of the arithmetic lanes: compressor trees against plain sums, on xc7.

Each lane is a small registered design, synthesized twice in the same run with
:func:`lowbit.boards.synth.synthesize` (``synth_xilinx -family xc7 -flatten``; in Yosys 0.70
its only LUT mapper is ``abc9 -luts 2:2,3,6:5,10,20``, which maps for depth first): once with
the compressor tree of :mod:`lowbit.hw.compressor` and once with the behavioural sum. Only logic LUTs are compared; the weight memory is a
block RAM and the registers are flip-flops, so neither adds LUTs to either side.

Usage::

    python -m benchmarks.arith            # print the table
    python -m benchmarks.arith --write    # also update benchmarks/results/arith.json and BENCHMARKS.md
"""

import argparse
import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path

from amaranth.back import verilog
from amaranth.hdl import Module, Signal, signed
from amaranth.lib import memory, wiring
from amaranth.lib.wiring import In, Out

from lowbit.boards.synth import synthesize
from lowbit.hw.compressor import (add_behavioural, add_tree, add_tree_shape,
                                  popcount_behavioural, popcount_width, xnor_popcount)

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results" / "arith.json"
BENCHMARKS_MD = ROOT / "BENCHMARKS.md"
SECTION = "## Arithmetic lanes (synthesis)"
TABLE_BEGIN = "<!-- arith table begin -->"
TABLE_END = "<!-- arith table end -->"

# Weight memory depth of the dot-product lanes: enough to be a real memory, too small to matter.
WEIGHT_WORDS = 4


class XnorDot(wiring.Component):
    """Registered input vector, writable weight memory, registered XNOR-popcount of the two.

    Members
    -------
    x : In(n)
        Input vector, registered.
    addr : In(range(WEIGHT_WORDS))
        Weight word to read (one cycle of read latency, aligned with the input register).
    we, waddr, wdata : In
        Weight write port; it keeps the weights from folding into logic as constants.
    o : Out(popcount_width(n))
        ``popcount(XNOR(x, w[addr]))``, registered.
    """

    def __init__(self, n, count):
        self._n, self._count = n, count
        super().__init__({
            "x": In(n), "addr": In(range(WEIGHT_WORDS)),
            "we": In(1), "waddr": In(range(WEIGHT_WORDS)), "wdata": In(n),
            "o": Out(popcount_width(n)),
        })

    def elaborate(self, platform):
        m = Module()
        m.submodules.weights = weights = memory.Memory(
            shape=self._n, depth=WEIGHT_WORDS, init=[], attrs={"ram_style": "block"})
        wr = weights.write_port()
        rd = weights.read_port()
        x = Signal(self._n)
        m.d.sync += x.eq(self.x)
        m.d.comb += [wr.en.eq(self.we), wr.addr.eq(self.waddr), wr.data.eq(self.wdata),
                     rd.addr.eq(self.addr)]
        m.d.sync += self.o.eq(self._count(m, x, rd.data))
        return m


class SumTerms(wiring.Component):
    """Registered vector of ``n`` signed ``bits``-bit terms, registered sum of them."""

    def __init__(self, n, bits, add):
        self._n, self._bits, self._add = n, bits, add
        super().__init__({
            "x": In(n * bits),
            "o": Out(add_tree_shape([signed(bits)] * n)),
        })

    def elaborate(self, platform):
        m = Module()
        x = Signal(self._n * self._bits)
        m.d.sync += x.eq(self.x)
        terms = [x.word_select(i, self._bits).as_signed() for i in range(self._n)]
        m.d.sync += self.o.eq(self._add(m, terms))
        return m


@dataclass(frozen=True)
class Lane:
    """One row of the table: a design built with the tree and with the baseline.

    ``bits`` is the number of operand bits the lane reduces (weight bits for the dot products),
    the denominator of the per-bit cost.
    """
    name: str
    n: int
    bits: int
    build: object      # build(tree: bool) -> wiring.Component


LANES = [
    Lane("xnor-popcount", 256, 256,
         lambda tree: XnorDot(256, xnor_popcount if tree else
                              lambda m, x, w: popcount_behavioural(~(x ^ w)))),
    Lane("add-int4", 256, 256 * 4,
         lambda tree: SumTerms(256, 4, add_tree if tree else
                               lambda m, terms: add_behavioural(terms))),
]


def measure(lane):
    """Synthesize ``lane`` both ways; return its table row."""
    results = {}
    for tree in (True, False):
        text = verilog.convert(lane.build(tree), name="top", emit_src=False)
        results[tree] = synthesize(text, "top", "xilinx")
    tree, base = results[True], results[False]
    return {
        "lane": lane.name,
        "n": lane.n,
        "luts": tree.luts,
        "luts_per_weight_bit": round(tree.luts / lane.bits, 3),
        "baseline_luts": base.luts,
        "baseline_luts_per_weight_bit": round(base.luts / lane.bits, 3),
        "carry4": tree.carry,
        "baseline_carry4": base.carry,
        "ffs": tree.ffs,
        "brams": tree.brams,
        "device": tree.device,
        "yosys": tree.yosys_version,
    }


def table(rows):
    head = ("| lane | n | LUTs | LUT/bit | baseline LUTs | baseline LUT/bit | CARRY4 (tree / base) |\n"
            "|---|---:|---:|---:|---:|---:|---:|\n")
    body = "".join(
        f"| {r['lane']} | {r['n']} | {r['luts']} | {r['luts_per_weight_bit']:.3f} | "
        f"{r['baseline_luts']} | {r['baseline_luts_per_weight_bit']:.3f} | "
        f"{r['carry4']} / {r['baseline_carry4']} |\n" for r in rows)
    return head + body


def write_markdown(rows):
    block = (f"{TABLE_BEGIN}\n{table(rows)}\nDevice: {rows[0]['device']}, {rows[0]['yosys']}.\n"
             f"{TABLE_END}")
    text = BENCHMARKS_MD.read_text(encoding="utf-8") if BENCHMARKS_MD.exists() else "# Benchmarks\n"
    if TABLE_BEGIN in text:
        text = re.sub(re.escape(TABLE_BEGIN) + ".*?" + re.escape(TABLE_END),
                      lambda _: block, text, flags=re.S)
    else:
        if SECTION not in text:
            text = text.rstrip("\n") + f"\n\n{SECTION}\n"
        text = text.replace(SECTION, f"{SECTION}\n\n{block}", 1)
    BENCHMARKS_MD.write_text(text, encoding="utf-8")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true",
                        help="update benchmarks/results/arith.json and the table in BENCHMARKS.md")
    args = parser.parse_args(argv)
    rows = [measure(lane) for lane in LANES]
    print(table(rows), end="")
    print(f"\nDevice: {rows[0]['device']}, {rows[0]['yosys']}")
    if args.write:
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(json.dumps(rows, indent=2) + "\n", encoding="utf-8")
        write_markdown(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
