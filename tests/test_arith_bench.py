"""The arithmetic-lane benchmark compares like with like: its cases build the lanes they name, and
its behavioural baseline computes the same dot products as the lane it replaces."""

import numpy as np
import pytest

from benchmarks.arith import CASES, table
from lowbit.compiler.ir import MatMul, ValueType
from lowbit.core.formats import weight_format
from lowbit.hw.mvau import MatrixVectorUnit
from lowbit.hw.payload import VectorFormat
from lowbit.sim.amaranth_stream import run_amaranth_stream
from hwtest import unelaborated

MW = 12


def test_every_case_builds_the_lane_it_names():
    for case in CASES:
        unit = unelaborated(case.build(True))
        lane = unit.lane if unit.copies == 1 else f"tiled {unit.lane}"
        assert lane == case.lane, case
        assert unit.simd == unit.mw == 256
        # Weights from memory: a ROM of two words, one per cycle; constant weights: one row.
        assert unit.cycles_per_item == (1 if case.const else 2)


@pytest.mark.parametrize("case", [c for c in CASES if c.copies == 1],
                         ids=lambda c: f"{c.fmt}-{c.in_kind}{c.in_bits}{'-const' if c.const else ''}")
def test_baseline_computes_the_same_dot_products(case):
    rng = np.random.default_rng(3)
    fmt = weight_format(case.fmt)
    rows = 1 if case.const else 2
    w = rng.choice(fmt.levels, size=(rows, MW))
    vt = ValueType(case.in_kind, case.in_bits)
    x = rng.integers(vt.min, vt.max + 1, size=(20, MW))
    if vt.kind == "bipolar":
        x = np.where(x >= 0, 1, -1)
    unit = MatrixVectorUnit(w, case.fmt, VectorFormat(case.in_kind, case.in_bits, MW), None, simd=MW,
                            weight_memory="const" if case.const else "auto", behavioural=True)
    res = run_amaranth_stream(unit, unit.in_format.pack(x), stall=0.3, seed=1)
    assert res.outputs == unit.out_format.pack(MatMul("m", w, case.fmt, vt).reference(x))


def test_table_shows_the_nonzero_column_only_for_constant_weights():
    row = {"lane": "add-sub-skip", "weights": "ternary", "inputs": "bipolar", "weight_memory": "const",
           "n": 256, "luts": 10, "luts_per_weight_bit": 0.02, "baseline_luts": 20,
           "baseline_luts_per_weight_bit": 0.04, "carry4": 1, "baseline_carry4": 2, "dsps": 0,
           "baseline_dsps": 3, "flow": "synth_xilinx", "baseline_flow": "synth_xilinx (abc)"}
    plain = table([row]).splitlines()[-1]
    assert plain == ("| add-sub-skip | ternary × bipolar | const | 256 | 10 | 0.020 |  | 20 | 0.040 | "
                     "1 / 2 | 0 / 3 | synth_xilinx / synth_xilinx (abc) |")
    const = table([{**row, "nonzero_weights": 170, "luts_per_nonzero_weight": 0.059}]).splitlines()[-1]
    assert "| 0.059 (170) |" in const
