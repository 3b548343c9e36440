"""The cocotb test that runs one stream job; the simulator imports it, :mod:`lowbit.sim.runner` starts it.

The job is a JSON file named by the environment variable ``LOWBIT_STREAM_JOB``::

    {"nonce": "...", "inputs": ["1f", ...], "expected": ["a0", ...],
     "timing_inputs": K_in, "timing_outputs": K_out, "period_ns": 10,
     "stall": {"seed": 0, "in_idle": 0.5, "out_stall": 0.5, "max_gap": 4} or null,
     "timeout_cycles": 100000, "drain_cycles": 64, "results": "/path/results.json"}

Words are hexadecimal strings, so widths beyond 64 bits survive JSON. Two phases run, each after
a reset and each scoreboarded against its slice of ``expected``:

1. ``timing``: the first ``K_in`` input beats with no stalls (``valid`` high whenever a word is
   waiting, ``ready`` always high), against the first ``K_out`` expected beats. The cycle of every
   input and output handshake is recorded, which gives the design's latency and interval.
2. ``stalled``: all input beats with random idle cycles on the input and random backpressure on
   the output, against all expected beats.

The results file holds the counts per phase, the first mismatches, the handshake cycles of the
timing phase, the idle fractions of the stalled phase, the wall time and the Python wake-ups.
"""

import json
import os
import time

import cocotb

from lowbit.files import atomic_write_text

from .stream import Scoreboard, Stalls, StreamDriver, StreamSink, reset, start_clock

JOB_ENV = "LOWBIT_STREAM_JOB"


def _words(hex_words):
    return [int(w, 16) for w in hex_words]


def _fraction(idle, first, last):
    if last is None or last < first:
        return None
    return idle / (last - first + 1)


async def _phase(dut, clock, driver, sink, name, inputs, expected, in_stalls, out_stalls, job):
    await reset(dut, clock, drivers=[driver], sinks=[sink])
    board = Scoreboard(expected, name)
    start = clock.cycle()
    wakes = driver.wakes + sink.wakes
    t0 = time.perf_counter()
    sending = cocotb.start_soon(driver.send(inputs, in_stalls, job["timeout_cycles"]))
    beats = await sink.receive(len(expected), out_stalls, job["timeout_cycles"],
                               job["drain_cycles"], on_beat=board)
    sent = await sending
    seconds = time.perf_counter() - t0
    out_cycles = [b.cycle for b in beats]
    summary = board.summary()
    summary.update({
        "inputs": len(inputs),
        "accepted": len(sent.cycles),
        "input_timed_out": sent.timed_out,
        "input_cycles": sent.cycles,
        "output_cycles": out_cycles,
        "outputs": [f"{b.word:x}" if isinstance(b.word, int) else b.word for b in beats],
        "start_cycle": start,
        "cycles": clock.cycle() - start,
        "in_idle_cycles": sent.idle_cycles,
        "out_idle_cycles": sink.idle_cycles,
        "in_idle_fraction": _fraction(sent.idle_cycles, start, sent.cycles[-1] if sent.cycles else None),
        "out_idle_fraction": _fraction(sink.idle_cycles, start, out_cycles[-1] if out_cycles else None),
        "seconds": seconds,
        "wakes": driver.wakes + sink.wakes - wakes,
    })
    return summary


@cocotb.test()
async def stream_job(dut):
    """Run the timing and stalled phases of the job in ``$LOWBIT_STREAM_JOB``."""
    with open(os.environ[JOB_ENV]) as f:
        job = json.load(f)
    results = {"nonce": job["nonce"]}
    t0 = time.perf_counter()
    try:
        inputs = _words(job["inputs"])
        expected = _words(job["expected"])
        clock = start_clock(dut, job.get("period_ns", 10))
        driver = StreamDriver(dut, "i", clock)
        sink = StreamSink(dut, "o", clock)
        results["widths"] = {"i": driver.width, "o": sink.width}
        for i, w in enumerate(inputs):
            if w >> driver.width:
                raise ValueError(f"inputs[{i}] = {w:#x} does not fit the {driver.width}-bit "
                                 "input payload")
        results["clock_impl"] = clock.impl
        phases = {}
        k_in, k_out = job["timing_inputs"], job["timing_outputs"]
        if k_in:
            phases["timing"] = await _phase(dut, clock, driver, sink, "timing", inputs[:k_in],
                                            expected[:k_out], None, None, job)
        stall = job.get("stall")
        in_stalls = out_stalls = None
        if stall:
            # Separate streams per side, so that changing one side's settings leaves the
            # other side's gaps as they were.
            in_stalls = Stalls(stall["in_idle"], stall["max_gap"], f"{stall['seed']}:in")
            out_stalls = Stalls(stall["out_stall"], stall["max_gap"], f"{stall['seed']}:out")
        phases["stalled"] = await _phase(dut, clock, driver, sink, "stalled", inputs, expected,
                                         in_stalls, out_stalls, job)
        results["phases"] = phases
        results["mismatches"] = sum(p["errors"] for p in phases.values())
        results["beats"] = sum(p["accepted"] + p["received"] for p in phases.values())
        results["sim_cycles"] = clock.cycle()
    except Exception as e:
        results["error"] = f"{type(e).__name__}: {e}"
        raise
    finally:
        results["seconds"] = time.perf_counter() - t0
        atomic_write_text(job["results"], json.dumps(results))
