"""Stress: over 10^5 sequence-numbered words through a stream FIFO in Verilator, every word checked.

Random stalls on both sides, a back-to-back stretch, and a reset in the middle of a stream while
the FIFO holds words. Nothing may be lost, duplicated or reordered, and nothing from before the
reset may come out after it.
"""

import pytest
from amaranth.back import verilog

from lowbit.hw.fifo import StreamFIFO
from lowbit.hw.payload import VectorFormat
from lowbit.sim.runner import Phase, StallConfig, run_phases

SEQ_BITS = 24


def _words(first, count):
    """Words carrying their sequence number in the low bits and a check pattern above it."""
    return [n | (((n * 2654435761) >> 7) & 0xFFFF) << SEQ_BITS for n in range(first, first + count)]


def _seq(word):
    return int(word, 16) & ((1 << SEQ_BITS) - 1)


@pytest.fixture(scope="module")
def fifo_run():
    fifo = StreamFIFO(VectorFormat("uint", 8, 5), 16)
    text = verilog.convert(fifo, name="top", emit_src=False)
    back_to_back = _words(0, 20_000)
    stalled = _words(20_000, 60_000)
    cut = _words(80_000, 5_000)
    after = _words(85_000, 20_000)
    phases = [
        Phase("back_to_back", back_to_back, back_to_back, record_cycles=True),
        Phase("stalled", stalled, stalled, stall=StallConfig(in_idle=0.5, out_stall=0.5,
                                                             max_gap=4)),
        # Heavy backpressure so the FIFO is full when the phase is cut short and reset.
        Phase("cut", cut, cut, stall=StallConfig(in_idle=0.1, out_stall=0.9, max_gap=8),
              max_cycles=3_000, partial=True),
        Phase("after_reset", after, after, stall=StallConfig(in_idle=0.4, out_stall=0.4,
                                                             max_gap=6), reset=True),
    ]
    job = run_phases(text, "top", phases, seed=11)
    return fifo, phases, job


def test_over_100k_words_are_exact(fifo_run):
    _, phases, job = fifo_run
    assert sum(job.phase(p.name)["accepted"] for p in phases) >= 100_000
    for p in phases:
        r = job.phase(p.name)
        received = [int(w, 16) for w in r["outputs"]]
        if p.partial:
            # The words that came out are the words that went in, in order, none twice.
            assert received == list(p.inputs[:len(received)])
        else:
            assert r["errors"] == 0, r["first_mismatches"]
            assert received == list(p.inputs)
            assert r["accepted"] == r["received"] == len(p.inputs)


def test_stalls_idle_both_sides(fifo_run):
    _, _, job = fifo_run
    for name in ("stalled", "after_reset"):
        r = job.phase(name)
        assert r["in_idle_fraction"] >= 0.3 and r["out_idle_fraction"] >= 0.3, r


def test_back_to_back_takes_a_word_every_cycle(fifo_run):
    fifo, phases, job = fifo_run
    assert fifo.cycles_per_item == 1
    cycles = job.phase("back_to_back")["input_cycles"]
    assert len(cycles) == len(phases[0].inputs)
    steps = [b - a for a, b in zip(cycles, cycles[1:])]
    # One beat per cycle, except where one batch of the harness ends and the next begins.
    batches = -(-len(cycles) // 2048)
    assert sum(s != 1 for s in steps) <= batches - 1
    assert steps.count(1) >= len(steps) - (batches - 1)


def test_reset_mid_stream_drops_what_was_inside_and_nothing_after(fifo_run):
    _, phases, job = fifo_run
    cut = job.phase("cut")
    assert cut["stopped"]
    # Words were inside the FIFO when it was reset.
    assert cut["accepted"] - cut["received"] >= 8
    after = job.phase("after_reset")
    seqs = [_seq(w) for w in after["outputs"]]
    assert seqs == list(range(85_000, 105_000))
