"""Run a stream of beats through generated Verilog in Verilator under cocotb, from plain Python.

:func:`run_stream` builds (or reuses) the simulation, writes a job file, runs the cocotb test
in :mod:`lowbit.sim.stream_test` with ``cocotb_tools.runner``, and returns what it measured.
"""

import contextlib
import json
import logging
import math
import numbers
import secrets
import shutil
import sys
import tempfile
import textwrap
import time
from dataclasses import dataclass, field
from pathlib import Path

from lowbit.errors import LowbitError
from lowbit.files import atomic_write_text, ensure_writable_dir

from .build import build_simulation

__all__ = ["StallConfig", "StreamResult", "SimulationError", "run_stream"]

TEST_MODULE = "lowbit.sim.stream_test"
JOB_ENV = "LOWBIT_STREAM_JOB"


class SimulationError(LowbitError):
    """The simulation did not run to the end: the testbench raised or the simulator crashed."""


@dataclass(frozen=True)
class StallConfig:
    """Random stalls for the stalled phase.

    Before each input beat an idle gap (``valid`` low) is drawn with probability ``in_idle``;
    before each output beat a backpressure gap (``ready`` low) with probability ``out_stall``.
    A gap lasts 1 to ``max_gap`` cycles, uniformly. The defaults idle each side for about 40 %
    of the cycles.

    Parameters
    ----------
    in_idle : float
        Chance of an idle gap before an input beat, in [0, 1].
    out_stall : float
        Chance of a backpressure gap before an output beat, in [0, 1].
    max_gap : int
        Longest gap in cycles.
    seed : int, optional
        Seed of the gaps; ``run_stream``'s ``seed`` if omitted.
    """

    in_idle: float = 0.5
    out_stall: float = 0.5
    max_gap: int = 4
    seed: int | None = None

    def __post_init__(self):
        for name in ("in_idle", "out_stall"):
            p = getattr(self, name)
            if not isinstance(p, numbers.Real) or not 0.0 <= p <= 1.0:
                raise ValueError(f"Stall {name} must be a probability in [0, 1], not {p!r}")
        if not isinstance(self.max_gap, int) or isinstance(self.max_gap, bool) or self.max_gap < 1:
            raise ValueError(f"Stall max_gap must be a positive integer, not {self.max_gap!r}")


@dataclass
class StreamResult:
    """What :func:`run_stream` measured.

    Attributes
    ----------
    mismatches : int
        Wrong, missing and extra output beats over both phases; 0 means bit-exact.
    wrong, missing, extra : int
        The three kinds of ``mismatches``.
    first_mismatches : list of dict
        The first few, each with ``phase``, ``kind``, ``index``, ``expected``, ``got`` (hex
        strings or None) and ``cycle``.
    outputs : list of int
        Output words of the stalled phase, in arrival order.
    n_items : int
    n_inputs, n_outputs : int
        Input beats sent and output beats received in the stalled phase.
    timing_input_cycles, timing_output_cycles : list of int
        Handshake cycles in the timing phase (no stalls).
    interval : list of int
        Cycles between consecutive output handshakes in the timing phase.
    latency : int or None
        Cycles from the first input handshake to the first output handshake in the timing phase
        (0 for a combinational path).
    in_idle_fraction, out_idle_fraction : float or None
        Share of the stalled phase's cycles with ``i.valid`` held low by the testbench, and with
        ``o.ready`` held low.
    seconds : float
        Wall time of the simulation run (without the build).
    build_seconds : float
        Wall time of the build, or of the cache look-up when ``cached_build``.
    cached_build : bool
    beats : int
        Beats transferred in both phases, inputs and outputs.
    sim_cycles : int
        Clock cycles simulated.
    wakes : int
        Times the testbench's Python ran, over both phases; grows with beats, not with cycles.
    workdir : pathlib.Path
        Where the job, results and logs were written (removed afterwards if it was temporary
        and the run succeeded without waveforms).
    wave_file : pathlib.Path or None
    """

    mismatches: int
    wrong: int
    missing: int
    extra: int
    first_mismatches: list
    outputs: list
    n_items: int
    n_inputs: int
    n_outputs: int
    timing_input_cycles: list
    timing_output_cycles: list
    interval: list
    latency: int | None
    in_idle_fraction: float | None
    out_idle_fraction: float | None
    seconds: float
    build_seconds: float
    cached_build: bool
    beats: int
    sim_cycles: int
    wakes: int
    workdir: Path
    wave_file: Path | None = None
    phases: dict = field(default_factory=dict, repr=False)

    @property
    def ok(self):
        """Whether every expected beat arrived, in order, exactly once and bit-exact."""
        return self.mismatches == 0

    @property
    def beats_per_second(self):
        return self.beats / self.seconds if self.seconds else math.inf


def _as_words(name, words):
    out = []
    for i, w in enumerate(words):
        if isinstance(w, bool) or not isinstance(w, numbers.Integral):
            raise TypeError(f"{name}[{i}] must be an integer, not {w!r}")
        w = int(w)
        if w < 0:
            raise ValueError(f"{name}[{i}] must be a non-negative integer (the payload's bits), "
                             f"not {w}")
        out.append(w)
    return out


def _log_excerpt(log, lines=30):
    try:
        text = log.read_text(errors="replace").splitlines()
    except OSError:
        return ""
    # The traceback of a failed cocotb test, else the end of the log. cocotb indents the lines
    # of a logged traceback to its message column; dedent them so they read as Python's.
    for i, line in enumerate(text):
        if "Traceback" in line:
            block = []
            for ln in text[i:i + lines]:
                if "*****" in ln:
                    break
                block.append(ln)
            return textwrap.dedent("\n".join(block))
    return "\n".join(text[-lines:])


def run_stream(verilog, top, inputs, expected, *, timing_items=16, stall=StallConfig(), seed=0,
               workdir=None, waves=False, n_items=None, timeout_cycles=100_000, drain_cycles=64,
               period_ns=10, build_args=(), cache_dir=None, verbose=False, progress=True):
    """Stream ``inputs`` through the design and compare what comes out with ``expected``.

    The design's ports are an Amaranth stream input ``i`` and output ``o`` (``i__payload``,
    ``i__valid``, ``i__ready``, ``o__...``), a clock ``clk`` and a synchronous reset ``rst``.
    Two phases run, each after a reset: a timing phase, without stalls, over the first
    ``timing_items`` items, then a stalled phase over all items with random idle cycles on the
    input and backpressure on the output.

    Parameters
    ----------
    verilog : str
        Verilog text of the design.
    top : str
        Name of its toplevel module.
    inputs : sequence of int
        Input beats, as unsigned integers of the input payload width (any width).
    expected : sequence of int
        Expected output beats, in order.
    timing_items : int, optional
        Items in the timing phase; 0 skips it.
    stall : StallConfig or None, optional
        Stalls of the stalled phase; ``None`` runs it without stalls.
    seed : int, optional
        Seed of the stalls (unless ``stall.seed`` is set) and of cocotb's ``random``.
    workdir : path-like, optional
        Folder for the job, results and logs; a temporary one if omitted.
    waves : bool or {"vcd", "fst"}, optional
        Record waveforms (``True`` means VCD) into ``workdir``.
    n_items : int, optional
        Number of items; ``len(inputs)`` by default. ``inputs`` must split evenly into items;
        the timing phase takes the first ``timing_items * len(inputs) // n_items`` inputs and
        the leading expected beats in proportion, rounded.
    timeout_cycles : int, optional
        A phase ends when an expected beat, or the acceptance of an input, is this many cycles
        late; the rest count as missing.
    drain_cycles : int, optional
        After the last expected beat, how long to watch for extra beats (at least twice the
        longest wait for a beat seen).
    period_ns : int, optional
        Clock period.
    build_args : sequence of str, optional
        Extra Verilator arguments.
    cache_dir : path-like, optional
        Build cache folder (see :func:`lowbit.sim.build.cache_root`).
    verbose : bool, optional
        Show the build and simulator output.
    progress : bool, optional
        Print one line for the build and one for the result; ``False`` prints nothing on
        success.

    Returns
    -------
    StreamResult

    Raises
    ------
    SimulationError
        If the testbench raised or the simulator crashed; the message quotes its log.
    LowbitError
        If the toolchain is incomplete or the build fails.
    TypeError, ValueError
        If an argument is malformed.
    """
    inputs = _as_words("inputs", inputs)
    expected = _as_words("expected", expected)
    if not inputs:
        raise ValueError("Inputs must hold at least one beat")
    if n_items is None:
        n_items = len(inputs)
    if not isinstance(n_items, int) or n_items < 1 or len(inputs) % n_items:
        raise ValueError(f"Number of items must be a positive divisor of the {len(inputs)} "
                         f"input beats, not {n_items!r}")
    if not isinstance(timing_items, int) or timing_items < 0:
        raise ValueError(f"Timing items must be a non-negative integer, not {timing_items!r}")
    for name, value in (("timeout_cycles", timeout_cycles), ("drain_cycles", drain_cycles),
                        ("period_ns", period_ns)):
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive integer, not {value!r}")
    if stall is not None and not isinstance(stall, StallConfig):
        raise TypeError(f"Stall must be a StallConfig or None, not {stall!r}")
    timing_items = min(timing_items, n_items)

    sim = build_simulation(verilog, top, waves=waves, build_args=build_args, cache_dir=cache_dir,
                           verbose=verbose)
    if progress:
        how = "cached" if sim.cached else f"built in {sim.build_seconds:.1f} s"
        print(f"lowbit.sim: {top}: simulation {how}", file=sys.stderr)

    temporary = workdir is None
    workdir = Path(tempfile.mkdtemp(prefix="lowbit-sim-")) if temporary else Path(workdir)
    workdir = ensure_writable_dir(workdir.resolve())
    results_path = workdir / "results.json"
    results_xml = workdir / "results.xml"
    log = workdir / "sim.log"
    for stale in (results_path, results_xml):
        with contextlib.suppress(FileNotFoundError):
            stale.unlink()
    nonce = secrets.token_hex(8)
    in_per_item = len(inputs) // n_items
    job = {
        "nonce": nonce,
        "inputs": [f"{w:x}" for w in inputs],
        "expected": [f"{w:x}" for w in expected],
        "timing_inputs": timing_items * in_per_item,
        # Rounded, so that one beat too many or too few in ``expected`` shows in the stalled
        # phase only.
        "timing_outputs": (2 * timing_items * len(expected) + n_items) // (2 * n_items),
        "period_ns": period_ns,
        "stall": None if stall is None else {
            "seed": seed if stall.seed is None else stall.seed, "in_idle": stall.in_idle,
            "out_stall": stall.out_stall, "max_gap": stall.max_gap},
        "timeout_cycles": timeout_cycles,
        "drain_cycles": drain_cycles,
        "results": str(results_path),
    }
    job_path = workdir / "job.json"
    atomic_write_text(job_path, json.dumps(job))

    from cocotb_tools.check_results import get_results
    from cocotb_tools.runner import get_runner

    runner = get_runner("verilator")
    t0 = time.perf_counter()
    failure = None
    level = runner.log.level
    if not verbose:
        runner.log.setLevel(logging.WARNING)
    try:
        runner.test(test_module=TEST_MODULE, hdl_toplevel=top, hdl_toplevel_lang="verilog",
                    build_dir=sim.build_dir, test_dir=workdir, results_xml=str(results_xml),
                    extra_env={JOB_ENV: str(job_path)}, seed=seed, waves=sim.waves is not None,
                    log_file=None if verbose else log)
    except SystemExit as e:
        # Under pytest the runner calls sys.exit() when a cocotb test fails.
        failure = f"the simulator or the cocotb test failed (exit status {e.code})"
    except RuntimeError as e:
        failure = f"the simulator failed to run ({e})"
    finally:
        runner.log.setLevel(level)
    seconds = time.perf_counter() - t0

    results = None
    with contextlib.suppress(OSError, ValueError):
        results = json.loads(results_path.read_text())
    if failure is None:
        try:
            n_tests, n_failed = get_results(results_xml)
        except RuntimeError:
            n_tests, n_failed = 0, 0
        if n_tests == 0:
            failure = "the simulator ended without running the cocotb test"
        elif n_failed:
            failure = "the cocotb test failed"
    if failure is None and results is None:
        failure = "the cocotb test wrote no results"
    if results is not None and results.get("nonce") != nonce:
        failure = (f"the simulator ran a different job: ${JOB_ENV} is set in this environment "
                   "and overrides lowbit's")
    if failure is not None:
        detail = results.get("error") if results else None
        excerpt = _log_excerpt(log) if not verbose else ""
        raise SimulationError(
            f"simulation of {top!r} failed: {failure}"
            + (f": {detail}" if detail else "") + (f"\n{excerpt}" if excerpt else ""),
            f"the full log is {str(log)!r}" if not verbose else None)

    result = _result(results, sim, n_items, workdir, seconds)
    if waves:
        result.wave_file = workdir / sim.wave_file
    elif temporary:
        shutil.rmtree(workdir, ignore_errors=True)
    if progress:
        print(_summary(top, result), file=sys.stderr)
    return result


def _result(results, sim, n_items, workdir, seconds):
    phases = results["phases"]
    stalled = phases["stalled"]
    timing = phases.get("timing", {})
    t_in = timing.get("input_cycles", [])
    t_out = timing.get("output_cycles", [])
    first = [m for p in phases.values() for m in p["first_mismatches"]][:10]
    return StreamResult(
        mismatches=results["mismatches"],
        wrong=sum(p["wrong"] for p in phases.values()),
        missing=sum(p["missing"] for p in phases.values()),
        extra=sum(p["extra"] for p in phases.values()),
        first_mismatches=first,
        outputs=[int(w, 16) if _is_hex(w) else w for w in stalled["outputs"]],
        n_items=n_items,
        n_inputs=stalled["accepted"],
        n_outputs=stalled["received"],
        timing_input_cycles=t_in,
        timing_output_cycles=t_out,
        interval=[b - a for a, b in zip(t_out, t_out[1:])],
        latency=(t_out[0] - t_in[0]) if t_in and t_out else None,
        in_idle_fraction=stalled["in_idle_fraction"],
        out_idle_fraction=stalled["out_idle_fraction"],
        seconds=seconds,
        build_seconds=sim.seconds if sim.cached else sim.build_seconds,
        cached_build=sim.cached,
        beats=results["beats"],
        sim_cycles=results["sim_cycles"],
        wakes=sum(p["wakes"] for p in phases.values()),
        workdir=workdir,
        phases=phases,
    )


def _is_hex(w):
    try:
        int(w, 16)
        return True
    except ValueError:
        return False


def _summary(top, r):
    parts = [f"{r.n_items} items", f"{r.mismatches} mismatches"]
    if r.latency is not None:
        ii = sorted(set(r.interval))
        parts.append(f"latency {r.latency}" + (f", interval {ii[0] if len(ii) == 1 else ii}"
                                               if ii else ""))
    if r.in_idle_fraction is not None and r.out_idle_fraction is not None:
        parts.append(f"idle in {r.in_idle_fraction:.0%} / out {r.out_idle_fraction:.0%}")
    parts.append(f"{r.sim_cycles} cycles in {r.seconds:.1f} s ({r.beats_per_second:,.0f} beats/s)")
    line = f"lowbit.sim: {top}: " + ", ".join(parts)
    for m in r.first_mismatches[:3]:
        line += (f"\n  {m['phase']} beat {m['index']}: {m['kind']}, expected {m['expected']}, "
                 f"got {m['got']}")
    return line
