"""The cocotb test that runs one stream job; the simulator imports it, :mod:`lowbit.sim.runner` starts it.

The toplevel is the batch harness of :mod:`lowbit.sim.harness` around the design. The job is a
JSON file named by the environment variable ``LOWBIT_STREAM_JOB``::

    {"nonce": "...", "period_ns": 10, "results": "/path/results.json",
     "wave": {"from": C0, "to": C1} or null,
     "phases": [{"name": "timing", "inputs": ["1f", ...], "expected": ["a0", ...],
                 "n_items": N, "reset": true, "record_cycles": true, "partial": false,
                 "stall": {"seed": 0, "in_idle": 0.5, "out_stall": 0.5, "max_gap": 4} or null,
                 "timeout_cycles": 100000, "drain_cycles": 64, "max_cycles": 0}, ...]}

Words are hexadecimal strings, so widths beyond 64 bits survive JSON. With a ``wave`` window the
run stops at its last cycle (the results then cover only what ran). The phases run in order,
each after a reset of the design if it asks for one, each scored word by word against its own
``expected``. A phase with ``max_cycles`` is cut short after that many cycles (to reset the
design in the middle of a stream, say) and with ``partial`` its unsent words are not missing.

The results file holds, per phase, the counts, the first mismatches (with the cycle of each),
the output words, the handshake cycles when recorded, the idle fractions, the wall time and the
Python wake-ups.
"""

import time

import cocotb

from .bench import BatchBench
from .job import add_totals, hex_word, job_results, words

NEVER = 2 ** 64 - 1


@cocotb.test()
async def stream_job(dut):
    """Run the phases of the job in ``$LOWBIT_STREAM_JOB``."""
    with job_results() as (job, results):
        bench = BatchBench(dut, job.get("period_ns", 10))
        results["widths"] = {"i": bench.in_width, "o": bench.out_width}
        wave = job.get("wave")
        dut.wave_from.value = wave["from"] if wave else NEVER
        dut.wave_to.value = wave["to"] if wave else NEVER
        # The run ends with the waveform window: nothing after it is recorded anyway.
        dut.stop_at.value = wave["to"] + 1 if wave and wave["to"] < NEVER else NEVER
        bench.start()
        phases = {}
        for phase in job["phases"]:
            if bench.clock.cycle() > (wave["to"] if wave else NEVER):
                break
            if phase.get("reset", True):
                await bench.reset()
            stall = phase.get("stall") or {}
            t_phase = time.perf_counter()
            r = await bench.stream(
                phase["name"], words(phase["inputs"]), words(phase["expected"]),
                phase.get("n_items") or len(phase["inputs"]),
                in_idle=stall.get("in_idle", 0.0), out_stall=stall.get("out_stall", 0.0),
                max_gap=stall.get("max_gap", 1), seed=stall.get("seed", 0),
                timeout_cycles=phase.get("timeout_cycles", 100_000),
                drain_cycles=phase.get("drain_cycles", 64),
                max_cycles=phase.get("max_cycles", 0), partial=phase.get("partial", False),
                record_cycles=phase.get("record_cycles", False))
            summary = r.summary
            summary["outputs"] = [hex_word(w) for w in r.outputs]
            summary["seconds"] = time.perf_counter() - t_phase
            phases[phase["name"]] = summary
        add_totals(results, phases)
        results["sim_cycles"] = bench.clock.cycle()
        results["wakes"] = bench.wakes
