"""One component, the same vectors, both simulators: Amaranth's Python simulator and Verilator.

Every hardware block is checked this way: the Amaranth run is quick and needs no C++ build, the
Verilator run checks the Verilog a user will synthesize. Both stall both sides of the stream.
"""

from dataclasses import dataclass

from amaranth.back import verilog

from .amaranth_stream import run_amaranth_stream
from .runner import StallConfig, run_stream

__all__ = ["BothResult", "run_both"]


@dataclass
class BothResult:
    amaranth_outputs: list
    amaranth_intervals: list
    amaranth_latency: int
    verilator: object  # StreamResult

    def mismatches(self, expected):
        """Wrong or missing words in the Amaranth run, plus the Verilator run's mismatches."""
        wrong = sum(a != b for a, b in zip(self.amaranth_outputs, expected))
        wrong += abs(len(self.amaranth_outputs) - len(expected))
        return wrong + self.verilator.mismatches


def run_both(component, inputs, expected, *, stall=0.4, seed=0, timing_items=8, name="dut",
             max_gap=4):
    """Stream ``inputs`` through ``component`` in both simulators, with stalls on both sides.

    ``component`` must have stream ports ``i`` and ``o``; ``inputs`` and ``expected`` are packed
    payload words (Python ints). The Verilog is built from the same component object.
    """
    text = verilog.convert(component, name=name, emit_src=False)
    am = run_amaranth_stream(component, inputs, n_outputs=len(expected), stall=stall, seed=seed,
                             max_gap=max_gap)
    vl = run_stream(text, name, inputs, expected, timing_items=min(timing_items, len(inputs)),
                    stall=StallConfig(in_idle=stall, out_stall=stall, max_gap=max_gap, seed=seed),
                    seed=seed, progress=False)
    return BothResult(am.outputs, am.intervals, am.latency if am.output_cycles else None, vl)
