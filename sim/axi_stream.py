"""Run a design's AXI4-Stream top under cocotbext-axi (:mod:`lowbit.sim.axi_stream_test`): an
independent testbench, with the AXI verification components users already trust, beside the
batch harness that ``lowbit sim`` uses."""

from .harness import design_ports
from .job import hex_word, words
from .runner import run_testbench

__all__ = ["run_axi_stream", "AXI_STREAM_PORTS"]

# The signals the testbench reads and writes.
AXI_STREAM_PORTS = ("aclk", "aresetn", "s_axis_*", "m_axis_*")


def run_axi_stream(verilog, top, inputs, expected, *, n_items, in_pause=0.3, out_pause=0.3, seed=0,
                   timeout_cycles=200_000, period_ns=10, verbose=False):
    """Send ``inputs`` (``n_items`` images of equal numbers of beats, tdata words) through the
    AXI4-Stream top ``top`` of ``verilog`` and compare each result beat with ``expected``.

    ``AxiStreamSource`` and ``AxiStreamSink`` pause each cycle with chance ``in_pause`` and
    ``out_pause``. Returns a plain dict: images, mismatches (result beats that differ, or are
    missing or extra), tlast errors (result frames of the wrong length), the first mismatch,
    the result words received, cycles, the cycles each side paused while it had work (the source
    with a frame queued, the sink while results were awaited) and wall seconds.

    Raises
    ------
    LowbitError
        If the design has no AXI4-Stream ports, or the simulation fails (a result does not come
        within ``timeout_cycles``).
    ValueError
        If the inputs or expected words do not split into ``n_items`` equal images.
    """
    from lowbit.core.errors import LowbitError

    if not design_ports(verilog, top).axi_stream:
        raise LowbitError(f"module {top!r} has no AXI4-Stream ports",
                          "compile it with the default --ports axi-stream")
    if n_items < 1 or len(inputs) % n_items or len(expected) % n_items:
        raise ValueError(f"{len(inputs)} input and {len(expected)} expected words do not split into "
                         f"{n_items} images")
    job = {"inputs": [hex_word(w) for w in inputs], "expected": [hex_word(w) for w in expected],
           "in_beats": len(inputs) // n_items, "out_beats": len(expected) // n_items,
           "in_pause": in_pause, "out_pause": out_pause, "seed": seed, "period_ns": period_ns,
           "timeout_cycles": timeout_cycles}
    results, seconds = run_testbench(verilog, top, "lowbit.sim.axi_stream_test", job, public=AXI_STREAM_PORTS,
                                     seed=seed, verbose=verbose)
    keep = ("images", "mismatches", "tlast_errors", "first_mismatch", "cycles", "in_pause_cycles",
            "out_pause_cycles")
    return {**{k: results[k] for k in keep}, "outputs": words(results["outputs"]), "seconds": round(seconds, 2)}
