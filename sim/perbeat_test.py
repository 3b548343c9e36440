"""The per-beat cocotb testbench: Python drives and watches every beat of the design's own ports.

The batch harness (:mod:`lowbit.sim.stream_test`) is the fast path: the simulator plays both
ends of the stream and Python wakes once per batch. This testbench is the open one, for a user who
wants Python on every beat (to log, to react, to watch a stream while another part drives it):
:class:`~lowbit.sim.stream.StreamDriver` feeds ``i`` and :class:`~lowbit.sim.stream.StreamSink`
takes ``o``, each with its own random stalls, while two passive
:class:`~lowbit.sim.stream.StreamMonitor` record every handshake of both ports and the output
monitor feeds the :class:`~lowbit.sim.stream.Scoreboard`. It runs the same job file as the batch
harness (``testbench="per-beat"`` in :func:`lowbit.sim.runner.run_phases`), so a phase scores
the same way under both. The monitors also check the driver and the sink: the beats a monitor
sees must be exactly the ones its port's driver or sink reports.
"""

import time

import cocotb

from .job import add_totals, hex_word, job_results, words
from .stream import Scoreboard, Stalls, StreamDriver, StreamMonitor, StreamSink, reset, start_clock


async def run_phase(dut, clock, phase):
    """Run one phase of a job; return its summary (the batch harness's keys where they apply)."""
    inputs, expected = words(phase["inputs"]), words(phase["expected"])
    stall = phase.get("stall") or {}
    seed, max_gap = stall.get("seed", 0), stall.get("max_gap", 1)
    driver, sink = StreamDriver(dut, "i", clock), StreamSink(dut, "o", clock)
    if phase.get("reset", True):
        await reset(dut, clock, drivers=[driver], sinks=[sink])
    board = Scoreboard(expected, phase["name"])
    seen_in = StreamMonitor(dut, "i", clock)
    seen_out = StreamMonitor(dut, "o", clock, callback=board)
    seen_in.start()
    seen_out.start()
    start = clock.cycle()
    sending = cocotb.start_soon(driver.send(
        inputs, Stalls(stall.get("in_idle", 0.0), max_gap, f"{seed}-in"),
        timeout_cycles=phase.get("timeout_cycles", 100_000)))
    received = await sink.receive(
        len(expected), Stalls(stall.get("out_stall", 0.0), max_gap, f"{seed}-out"),
        timeout_cycles=phase.get("timeout_cycles", 100_000),
        drain_cycles=phase.get("drain_cycles", 64))
    sent = await sending
    seen_in.stop()
    seen_out.stop()
    summary = board.summary(partial=phase.get("partial", False))
    # A monitor that disagrees with the port's driver or sink is a testbench fault, not a
    # design one: it fails the run rather than being counted as a mismatch.
    if [b.cycle for b in seen_in.beats] != sent.cycles or \
            [b.word for b in seen_in.beats] != inputs[:len(sent.cycles)]:
        raise AssertionError("the input monitor saw other beats than the driver sent")
    if [(b.word, b.cycle) for b in seen_out.beats] != [(b.word, b.cycle) for b in received]:
        raise AssertionError("the output monitor saw other beats than the sink received")
    summary.update({
        "inputs": len(inputs), "accepted": len(sent.cycles), "timed_out": sent.timed_out,
        "start_cycle": start, "cycles": clock.cycle() - start,
        "in_idle_cycles": sent.idle_cycles, "out_idle_cycles": sink.idle_cycles,
        "input_cycles": [b.cycle for b in seen_in.beats],
        "output_cycles": [b.cycle for b in seen_out.beats],
        "outputs": [hex_word(b.word) for b in seen_out.beats],
        "wakes": driver.wakes + sink.wakes + seen_in.wakes + seen_out.wakes,
    })
    return summary


@cocotb.test()
async def perbeat_job(dut):
    """Run the phases of the job in ``$LOWBIT_STREAM_JOB`` with a driver, a sink and two monitors."""
    with job_results() as (job, results):
        clock = start_clock(dut, job.get("period_ns", 10))
        phases = {}
        for phase in job["phases"]:
            t_phase = time.perf_counter()
            phases[phase["name"]] = await run_phase(dut, clock, phase)
            phases[phase["name"]]["seconds"] = time.perf_counter() - t_phase
        add_totals(results, phases)
        results["sim_cycles"] = clock.cycle()
        results["wakes"] = sum(p["wakes"] for p in phases.values())
