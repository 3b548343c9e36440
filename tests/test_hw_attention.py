"""The attention engine: integer scores, the table softmax and the rounded weighted mean of V, in
both simulators, against the IR reference, with its cycles as stated."""

import numpy as np
import pytest
from amaranth.back import verilog

from lowbit.compiler.ir import Attention, ValueType
from lowbit.hw.attention import Attention as AttentionUnit
from lowbit.hw.payload import VectorFormat
from lowbit.model.integer_vit import softmax_table
from lowbit.sim.amaranth_stream import run_amaranth_stream
from lowbit.sim.runner import StallConfig, run_stream

from hwtest import raises_exactly


class _Layer:
    def __init__(self, shape):
        self.in_shape = shape


@pytest.mark.parametrize("side, dim, heads, bits, lam, frac", [
    ((2, 3), 4, 2, 3, 0.08, 2),
    ((2, 2), 6, 1, 4, 0.02, 0),
    ((1, 5), 8, 4, 2, 0.6, 3),
])
def test_both_simulators_match_the_reference_with_stalls(side, dim, heads, bits, lam, frac):
    rng = np.random.default_rng(dim)
    in_type = ValueType("int", bits)
    op = Attention("attn", dim, heads, in_type, softmax_table(lam).numpy(), frac)
    seqs = rng.integers(in_type.min, in_type.max + 1, (8, *side, 3 * dim))
    seqs[0] = in_type.min  # every score equal: a plain mean
    seqs[1, ..., :2 * dim] = in_type.max  # Q and K at the top, V spread
    in_fmt = VectorFormat("int", bits, 3 * dim)
    unit = op.engine(_Layer((*side, 3 * dim)), in_fmt, None)
    tokens = side[0] * side[1]
    assert unit.out_format == VectorFormat("int", op.out_type.bits, dim)
    ref = op.reference(seqs).reshape(-1, dim)
    beats, expected = in_fmt.pack(seqs.reshape(-1, 3 * dim)), unit.out_format.pack(ref)
    am = run_amaranth_stream(unit, beats, n_outputs=len(expected), stall=0.3, seed=1, max_gap=4)
    assert am.outputs == expected
    vl = run_stream(verilog.convert(unit, name="attention", emit_src=False), "attention", beats, expected,
                    n_items=len(seqs), timing_items=4,
                    stall=StallConfig(in_idle=0.3, out_stall=0.3, max_gap=4, seed=2), progress=False)
    assert vl.mismatches == 0 and list(vl.outputs) == expected
    assert vl.in_idle_fraction > 0 and vl.out_idle_fraction > 0
    # One token per query (H heads and the write), and one more cycle to start the next sequence.
    starts = vl.timing_output_cycles[::tokens]
    assert {b - a for a, b in zip(starts, starts[1:])} == {unit.cycles_per_item}
    assert unit.cycles_per_item == tokens * (heads * unit.head_cycles + 1) + 1
    per_token = {heads * unit.head_cycles + 1} | ({heads * unit.head_cycles + 2} if tokens > 1 else set())
    assert set(vl.interval) == per_token
    assert vl.latency == unit.latency == tokens + heads * unit.head_cycles + 2


def test_bad_parameters():
    fmt = VectorFormat("int", 4, 12)
    raises_exactly(ValueError, "Heads must divide the 4 channels, not 3",
                   lambda: AttentionUnit(4, 4, 3, fmt, [256, 0], 2))
    raises_exactly(ValueError, "Input format must have 12 int elements (Q, K, V), not "
                               "VectorFormat(kind='uint', bits=4, count=12)",
                   lambda: AttentionUnit(4, 4, 2, VectorFormat("uint", 4, 12), [256, 0], 2))
    raises_exactly(ValueError, "The exponent table must fall from a positive first entry to a last entry of 0",
                   lambda: AttentionUnit(4, 4, 2, fmt, [256, 3], 2))
    raises_exactly(ValueError, "Tokens must be a positive integer, not 0",
                   lambda: AttentionUnit(0, 4, 2, fmt, [256, 0], 2))
