"""The normalization engine of the integer ViT: signed or unsigned levels of ``(x - mean) / std``, in both
simulators, against the IR reference, with its cycles as stated."""

import numpy as np
import pytest
import torch

from lowbit.compiler.ir import NormalizeLevels, ValueType
from lowbit.hw.normalize_levels import NormalizeLevels as NormalizeLevelsUnit
from lowbit.hw.payload import VectorFormat
from lowbit.model.integer_vit import norm_levels
from lowbit.model.layers import QuantAct
from lowbit.sim.both import run_both

from hwtest import raises_exactly


def _op(channels, in_type, fmt, clip, pe):
    quant = QuantAct(fmt)
    with torch.no_grad():
        quant.clip.fill_(clip)
    t, a = norm_levels(quant)
    return NormalizeLevels("norm", channels, in_type, a.numpy(), (t > 0).numpy(),
                           ValueType(quant.format.kind, quant.format.bits), 16, pe)


@pytest.mark.parametrize("channels, in_type, fmt, clip, pe", [
    (12, ValueType("int", 7), "s3", 2.1, 1),
    (12, ValueType("int", 7), "s4", 1.3, 4),
    (8, ValueType("uint", 5), "s2", 0.9, 8),
    # unsigned levels (a binary01 ViT's hidden activations): only positive thresholds, from 0
    (12, ValueType("int", 7), "u3", 1.7, 2),
    # a binary01 ViT's embedding: 64 sums of 49 pixels, whose compared products pass 64 bits
    (64, ValueType("uint", 14), "s4", 2.6, 16),
])
def test_both_simulators_match_the_reference_with_stalls(channels, in_type, fmt, clip, pe):
    rng = np.random.default_rng(pe)
    op = _op(channels, in_type, fmt, clip, pe)
    x = rng.integers(in_type.min, in_type.max + 1, (40, channels))
    x[0] = in_type.max  # a constant vector: every level at 0
    x[1, : channels // 2], x[1, channels // 2:] = in_type.max, in_type.min  # the widest spread
    x[2] = in_type.min
    x[2, 0] = in_type.max  # one channel far from all the others
    in_fmt = VectorFormat(in_type.kind, in_type.bits, channels)
    unit = op.engine(None, in_fmt, None)
    ref = op.reference(x)
    assert ref.min() < 0 < ref.max() if fmt.startswith("s") else ref.min() == 0 < ref.max()
    assert unit.out_format.kind == op.out_type.kind
    expected = unit.out_format.pack(ref)
    r = run_both(unit, in_fmt.pack(x), expected, stall=0.4, seed=pe, name="normalize_levels")
    assert r.mismatches(expected) == 0
    assert r.amaranth_outputs == expected
    assert r.verilator.in_idle_fraction > 0 and r.verilator.out_idle_fraction > 0
    assert set(r.verilator.interval) == {unit.cycles_per_item}
    assert r.verilator.latency == unit.latency == 3 * channels // pe + len(op.squares) + 1


def test_bad_parameters():
    fmt = VectorFormat("int", 6, 4)
    raises_exactly(ValueError, "Squares and signs must be 2**k - 1 >= 3 of each, the squares not negative, not 2 and 2",
                   lambda: NormalizeLevelsUnit(fmt, [1, 2], [True, True], 16))
    raises_exactly(ValueError, "Squares and signs must be 2**k - 1 >= 3 of each, the squares not negative, not 3 and 3",
                   lambda: NormalizeLevelsUnit(fmt, [1, -2, 3], [True] * 3, 16))
    raises_exactly(ValueError, "Fraction bits must be a non-negative integer, not -1",
                   lambda: NormalizeLevelsUnit(fmt, [1, 2, 3], [True] * 3, -1))
    raises_exactly(ValueError, "PE must divide the 4 channels, not 3",
                   lambda: NormalizeLevelsUnit(fmt, [1, 2, 3], [True] * 3, 16, pe=3))
    raises_exactly(ValueError, "Out kind must be 'int' or 'uint', not 'bipolar'",
                   lambda: NormalizeLevelsUnit(fmt, [1, 2, 3], [True] * 3, 16, out_kind="bipolar"))
