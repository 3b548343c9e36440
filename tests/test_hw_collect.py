"""Collect (the hardware of Flatten): pixel beats in, one vector beat out, in both simulators."""

import numpy as np
import pytest
from amaranth.back import verilog

from lowbit.compiler.ir import Flatten, ValueType
from lowbit.hw.collect import Collect
from lowbit.hw.payload import VectorFormat
from lowbit.hw.unused import unelaborated
from lowbit.sim.amaranth_stream import run_amaranth_stream
from lowbit.sim.runner import StallConfig, run_stream

from hwtest import raises_exactly


def test_parameters_are_checked():
    raises_exactly(TypeError, "Input format must be a VectorFormat, not 3", lambda: Collect(3, 4))
    raises_exactly(ValueError, "Beats must be a positive integer, not 0",
                   lambda: Collect(VectorFormat("uint", 2, 3), 0))
    c = unelaborated(Collect(VectorFormat("uint", 2, 3), 5))
    assert (c.out_format, c.cycles_per_item, c.latency) == (VectorFormat("uint", 2, 15), 5, 5)
    raises_exactly(TypeError, "Pipelined must be a bool, not 1", lambda: Collect(VectorFormat("uint", 2, 3), 5,
                                                                                    pipelined=1))


@pytest.mark.parametrize("pipelined", [False, True], ids=["counter", "shift"])
@pytest.mark.parametrize("fmt, h, w", [(VectorFormat("bipolar", 1, 3), 2, 3), (VectorFormat("uint", 3, 2), 2, 3),
                                       (VectorFormat("uint", 2, 2), 1, 1)],
                         ids=["bipolar", "uint3", "one-beat"])
def test_both_simulators_match_flatten_with_stalls(fmt, h, w, pipelined):
    rng = np.random.default_rng(fmt.bits)
    lo, hi = (-1, 1) if fmt.kind == "bipolar" else (0, 2 ** fmt.bits - 1)
    maps = rng.integers(lo, hi + 1, size=(12, h, w, fmt.count))
    if fmt.kind == "bipolar":
        maps = np.where(maps >= 0, 1, -1)
    op = Flatten("f", (h, w, fmt.count), ValueType(fmt.kind, fmt.bits))
    c = Collect(fmt, h * w, pipelined=pipelined)
    beats = fmt.pack(maps.reshape(-1, fmt.count))
    expected = c.out_format.pack(op.reference(maps))
    am = run_amaranth_stream(c, beats, n_outputs=len(expected), stall=0.4, seed=1, max_gap=4)
    assert am.outputs == expected
    vl = run_stream(verilog.convert(c, name="collect", emit_src=False), "collect", beats, expected,
                    n_items=len(maps), timing_items=4,
                    stall=StallConfig(in_idle=0.4, out_stall=0.4, max_gap=4, seed=2), progress=False)
    assert vl.mismatches == 0 and list(vl.outputs) == expected
    assert set(vl.interval) == {c.cycles_per_item}
    assert vl.in_idle_fraction > 0 and vl.out_idle_fraction > 0
    assert vl.latency == c.latency
