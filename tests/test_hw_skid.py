import random

import pytest
from lowbit.hw.skid import RegisterSlice, SkidBuffer
from lowbit.sim.amaranth_stream import run_amaranth_stream
from hwtest import follows_within_a_cycle, raises_exactly


def test_passes_every_payload_in_order_with_stalls_on_both_sides():
    words = [random.Random(1).getrandbits(12) for _ in range(300)]
    res = run_amaranth_stream(SkidBuffer(12), words, stall=0.5, seed=4)
    assert res.outputs == words


def test_one_cycle_of_latency_and_one_payload_per_cycle():
    res = run_amaranth_stream(SkidBuffer(5), list(range(20)))
    assert res.outputs == list(range(20))
    assert res.latency == SkidBuffer.latency == 1
    assert set(res.intervals) == {1}


def test_ready_and_outputs_do_not_follow_o_ready_within_a_cycle():
    dut = SkidBuffer(8)
    assert not follows_within_a_cycle(dut, dut.o.ready, [dut.i.ready, dut.o.valid, dut.o.payload],
                                      drive=[(dut.i.valid, 0.7), (dut.i.payload, None)])


@pytest.mark.parametrize("width", [0, -1, 2.0, True])
def test_bad_width(width):
    raises_exactly(ValueError, f"Width must be a positive integer, not {width!r}", lambda: SkidBuffer(width))


def test_a_register_slice_passes_every_payload_every_other_cycle():
    words = [random.Random(3).getrandbits(9) for _ in range(200)]
    assert run_amaranth_stream(RegisterSlice(9), words, stall=0.5, seed=2).outputs == words
    res = run_amaranth_stream(RegisterSlice(9), list(range(20)))
    assert res.outputs == list(range(20))
    assert res.latency == RegisterSlice.latency == 1 and set(res.intervals) == {RegisterSlice.cycles_per_item}
    dut = RegisterSlice(9)
    assert not follows_within_a_cycle(dut, dut.o.ready, [dut.i.ready, dut.o.valid, dut.o.payload],
                                      drive=[(dut.i.valid, 0.7), (dut.i.payload, None)])
    raises_exactly(ValueError, "Width must be a positive integer, not 0", lambda: RegisterSlice(0))
