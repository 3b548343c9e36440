"""The cocotbext-axi testbench of an AXI4-Stream top: ``AxiStreamSource`` sends each image as one
frame on ``s_axis``, ``AxiStreamSink`` takes one frame per image from ``m_axis``, both with random
pauses, and every result beat is compared with the expected word.

It runs inside the simulator on the job of :func:`lowbit.sim.axi_stream.run_axi_stream`. A frame
is cut by ``m_axis_tlast``, so a frame of the wrong length is a ``tlast`` error, and its beats
count as mismatches.
"""

import random

import cocotb
from cocotb.clock import Clock
from cocotb.simtime import get_sim_time
from cocotb.triggers import ClockCycles, RisingEdge, SimTimeoutError, with_timeout

from .job import job_results, words


def _pauses(probability, seed):
    """An endless pause pattern: each cycle paused with ``probability``."""
    rng = random.Random(seed)
    while True:
        yield rng.random() < probability


def _frame_bytes(beats, lanes):
    return b"".join(w.to_bytes(lanes, "little") for w in beats)


@cocotb.test()
async def axi_stream(dut):
    from cocotbext.axi import AxiStreamBus, AxiStreamFrame, AxiStreamSink, AxiStreamSource

    with job_results() as (job, results):
        inputs, expected = words(job["inputs"]), words(job["expected"])
        in_beats, out_beats, period = job["in_beats"], job["out_beats"], job["period_ns"]
        Clock(dut.aclk, period, unit="ns").start()
        dut.aresetn.value = 0
        source = AxiStreamSource(AxiStreamBus.from_prefix(dut, "s_axis"), dut.aclk, dut.aresetn,
                                 reset_active_level=False)
        sink = AxiStreamSink(AxiStreamBus.from_prefix(dut, "m_axis"), dut.aclk, dut.aresetn,
                             reset_active_level=False)
        source.set_pause_generator(_pauses(job["in_pause"], f"{job['seed']}-in"))
        sink.set_pause_generator(_pauses(job["out_pause"], f"{job['seed']}-out"))
        await ClockCycles(dut.aclk, 4)
        dut.aresetn.value = 1
        await RisingEdge(dut.aclk)
        start = get_sim_time("ns")
        images = len(inputs) // in_beats
        for k in range(images):  # queued: the source sends them back to back, pauses aside
            source.send_nowait(AxiStreamFrame(_frame_bytes(inputs[k * in_beats:(k + 1) * in_beats],
                                                           source.byte_lanes)))
        pauses = {"in": 0, "out": 0}  # cycles each side held the stream while it had work
        receiving = True

        async def count_pauses():
            while receiving:
                await RisingEdge(dut.aclk)
                pauses["in"] += (not source.idle()) and not dut.s_axis_tvalid.value
                pauses["out"] += not dut.m_axis_tready.value

        cocotb.start_soon(count_pauses())
        lanes = len(dut.m_axis_tdata) // 8
        mismatches = tlast_errors = 0
        first = None
        received = []
        timed_out = False
        while len(received) < len(expected):  # frames as m_axis_tlast cuts them
            try:
                frame = await with_timeout(sink.recv(), job["timeout_cycles"] * period, "ns")
            except SimTimeoutError:
                timed_out = True
                break
            data = bytes(frame.tdata)
            at = len(received)
            got = [int.from_bytes(data[j:j + lanes], "little") for j in range(0, len(data), lanes)]
            want = expected[at:at + len(got)]
            framing = len(data) != out_beats * lanes or at % out_beats != 0
            tlast_errors += framing
            # a wrongly framed result counts as a wrong beat, as in the batch harness
            wrong = sum(g != w for g, w in zip(got, want)) + len(got) - len(want) + framing
            if wrong and first is None:
                first = {"beat": at, "image": at // out_beats, "expected": [f"{w:x}" for w in want],
                         "got": [f"{g:x}" for g in got]}
            mismatches += wrong
            received += got
        mismatches += max(0, len(expected) - len(received))  # missing at the end
        receiving = False
        results.update({
            "images": images, "beats_in": len(inputs), "beats_out": len(expected),
            "mismatches": mismatches, "tlast_errors": tlast_errors, "first_mismatch": first, "timed_out": timed_out,
            "outputs": [f"{w:x}" for w in received],
            "cycles": int((get_sim_time("ns") - start) // period),
            "in_pause_cycles": int(pauses["in"]), "out_pause_cycles": int(pauses["out"]),
        })
