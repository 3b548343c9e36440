"""The position-embedding engine: a table row added to each beat by its position in the image."""

import numpy as np
import pytest

from lowbit.compiler.ir import PositionAdd, ValueType
from lowbit.core.errors import LowbitError
from lowbit.hw.payload import VectorFormat
from lowbit.hw.position import PositionAdd as PositionAddUnit
from lowbit.sim.both import run_both

from hwtest import raises_exactly


@pytest.mark.parametrize("kind, bits, lo, hi", [("int", 5, -16, 15), ("uint", 4, -3, 9)])
def test_both_simulators_match_the_reference_with_stalls(kind, bits, lo, hi):
    rng = np.random.default_rng(bits)
    table = rng.integers(lo, hi + 1, (6, 5))
    table[0] = lo  # both ends of the table's range
    table[1] = hi
    in_type = ValueType(kind, bits)
    op = PositionAdd("position", table, in_type)
    x = rng.integers(in_type.min, in_type.max + 1, (9, 2, 3, 5))
    x[0] = in_type.min
    x[1] = in_type.max
    in_fmt, out = VectorFormat(kind, bits, 5), op.out_type
    unit = op.engine(None, in_fmt, None)
    assert unit.out_format == VectorFormat(out.kind, out.bits, 5)
    expected = unit.out_format.pack(op.reference(x).reshape(-1, 5))
    r = run_both(unit, in_fmt.pack(x.reshape(-1, 5)), expected, stall=0.4, seed=bits, name="position_add")
    assert r.mismatches(expected) == 0
    assert r.amaranth_outputs == expected
    assert r.verilator.in_idle_fraction > 0 and r.verilator.out_idle_fraction > 0
    assert set(r.verilator.interval) == {unit.cycles_per_item}
    assert r.verilator.latency == unit.latency


def test_bad_tables_and_formats():
    fmt = VectorFormat("int", 4, 3)
    raises_exactly(ValueError, "Table must be a non-empty 2-D integer array, not float64 (2, 3)",
                   lambda: PositionAddUnit(np.zeros((2, 3)), fmt, fmt))
    raises_exactly(ValueError, "Input format must have 3 elements, one per channel, not 4",
                   lambda: PositionAddUnit(np.zeros((2, 3), int), VectorFormat("int", 4, 4), fmt))
    raises_exactly(ValueError, "Output elements int4 cannot hold the sums in [-9, 7]",
                   lambda: PositionAddUnit(np.array([[-1, 0, 0]]), fmt, fmt))
    with pytest.raises(LowbitError, match="adds to uint or int values"):
        PositionAdd("p", np.zeros((2, 3), int), ValueType("bipolar", 1))
