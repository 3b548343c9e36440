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

from lowbit.core.errors import LowbitError
from lowbit.core.files import atomic_write_text, ensure_writable_dir

from . import toolchain
from .build import STREAM_PORTS, build_simulation, test_runner
from .harness import HARNESS_NAME, batch_depth, design_ports, harness_verilog
from .job import JOB_ENV

__all__ = ["MAX_GAP", "StallConfig", "StreamResult", "SimulationError", "Phase", "JobResult", "run_phases",
           "run_stream", "run_testbench", "SIMULATORS"]

SIMULATORS = ("verilator", "icarus")

# The harness's ports and memories are what the testbench reads and writes; the design inside
# stays private, so Verilator may optimize it freely.
HARNESS_PUBLIC = ("*",)

TEST_MODULE = "lowbit.sim.stream_test"
# The testbenches that run a job: the batch harness (Python wakes once per batch), and the
# per-beat one (a Python driver, sink and monitors on the design's own ports).
TESTBENCHES = {"batch": TEST_MODULE, "per-beat": "lowbit.sim.perbeat_test"}

# A job's files in its workdir, named once as several steps of run_phases touch each.
_JOB = "job.json"
_RESULTS = "results.json"
_RESULTS_XML = "results.xml"
_LOG = "sim.log"


class SimulationError(LowbitError):
    """The simulation did not run to the end: the testbench raised or the simulator crashed."""


MAX_GAP = 65_535


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
        Longest gap in cycles, at most :data:`MAX_GAP` (the harness draws gaps from 16 bits).
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
        if not isinstance(self.max_gap, int) or isinstance(self.max_gap, bool) or not 1 <= self.max_gap <= MAX_GAP:
            raise ValueError(f"Stall max_gap must be an integer from 1 to {MAX_GAP}, not {self.max_gap!r}")


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
        The waveform: of the whole run when asked for, else of the window around the first
        mismatch when there was one.
    wave_window : tuple of int or None
        First and last cycle of a mismatch waveform.
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
    wave_window: tuple | None = None
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


@dataclass(frozen=True)
class Phase:
    """One stretch of a stream job: a run of items after an optional reset, scored on its own.

    Parameters
    ----------
    name : str
        Unique within the job.
    inputs, expected : sequence of int
        Input beats and the expected output beats, as unsigned payload integers.
    n_items : int, optional
        Items the inputs split into evenly (batches hold whole items); ``len(inputs)`` if omitted.
    stall : StallConfig or None
        Random gaps on both sides; ``None`` runs back to back. ``stall.seed`` defaults to the
        job's seed.
    reset : bool
        Reset the design before the phase.
    max_cycles : int
        Cut the phase short after this many cycles of a batch (0: never).
    partial : bool
        Words not received when the phase ends are not missing (for a phase cut short).
    record_cycles : bool
        Record the cycle of every handshake.
    timeout_cycles, drain_cycles : int
        See :func:`run_stream`.
    """

    name: str
    inputs: tuple
    expected: tuple
    n_items: int | None = None
    stall: StallConfig | None = None
    reset: bool = True
    max_cycles: int = 0
    partial: bool = False
    record_cycles: bool = False
    timeout_cycles: int = 100_000
    drain_cycles: int = 64

    def __post_init__(self):
        object.__setattr__(self, "inputs", tuple(_as_words(f"{self.name} inputs", self.inputs)))
        object.__setattr__(self, "expected",
                           tuple(_as_words(f"{self.name} expected", self.expected)))
        if not self.inputs:
            raise ValueError("Inputs must hold at least one beat")
        n = len(self.inputs) if self.n_items is None else self.n_items
        if not isinstance(n, int) or n < 1 or len(self.inputs) % n:
            raise ValueError(f"Number of items must be a positive divisor of the "
                             f"{len(self.inputs)} input beats, not {self.n_items!r}")
        object.__setattr__(self, "n_items", n)
        if self.stall is not None and not isinstance(self.stall, StallConfig):
            raise TypeError(f"Stall must be a StallConfig or None, not {self.stall!r}")
        for name in ("timeout_cycles", "drain_cycles"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, not {value!r}")
        if not isinstance(self.max_cycles, int) or self.max_cycles < 0:
            raise ValueError(f"max_cycles must be a non-negative integer, not {self.max_cycles!r}")

    def to_job(self, seed):
        stall = self.stall
        return {
            "name": self.name, "inputs": [f"{w:x}" for w in self.inputs],
            "expected": [f"{w:x}" for w in self.expected], "n_items": self.n_items,
            "stall": None if stall is None else {
                "seed": seed if stall.seed is None else stall.seed, "in_idle": stall.in_idle,
                "out_stall": stall.out_stall, "max_gap": stall.max_gap},
            "reset": self.reset, "max_cycles": self.max_cycles, "partial": self.partial,
            "record_cycles": self.record_cycles, "timeout_cycles": self.timeout_cycles,
            "drain_cycles": self.drain_cycles,
        }


@dataclass
class JobResult:
    """What :func:`run_phases` returns: the testbench's results and where they came from.

    Attributes
    ----------
    results : dict
        ``phases`` (name to summary: counts, ``first_mismatches``, ``outputs`` as hex strings,
        ``accepted``, ``received``, idle fractions, handshake cycles), ``mismatches``, ``beats``,
        ``sim_cycles``, ``wakes``.
    seconds : float
        Wall time of the simulator run.
    simulation : lowbit.sim.build.Simulation
    workdir : pathlib.Path
    wave_file : pathlib.Path or None
        The waveform: of the whole run when asked for, else of the window around the first
        mismatch when there was one.
    wave_window : tuple of int or None
        First and last cycle of a mismatch waveform.
    """

    results: dict
    seconds: float
    simulation: object
    workdir: Path
    wave_file: Path | None = None

    def phase(self, name):
        return self.results["phases"][name]


def _check_simulator(simulator):
    if simulator not in SIMULATORS:
        raise ValueError(f"Simulator must be one of {', '.join(map(repr, SIMULATORS))}, "
                         f"not {simulator!r}")


def run_phases(verilog, top, phases, *, seed=0, simulator="verilator", waves=False,
               wave_window=None, workdir=None, period_ns=10, build_args=(), cache_dir=None,
               verbose=False, testbench="batch"):
    """Run ``phases`` through the design in a testbench; return the raw results.

    Parameters
    ----------
    verilog : str
        Verilog text of the design, with stream ports ``i`` and ``o``.
    top : str
        Name of its toplevel module.
    phases : sequence of Phase
    seed : int
        Default seed of the stalls, and cocotb's seed.
    simulator : {"verilator", "icarus"}
    waves : bool or {"fst", "vcd"}
        Record waveforms into ``workdir`` (``True`` means FST with Verilator, whose build
        links liblz4 and zlib; Icarus writes FST itself).
    wave_window : tuple of int, optional
        First and last cycle to record; the whole run if omitted.
    workdir : path-like, optional
        Folder for the job, results, logs and waveforms; a temporary one if omitted (removed
        afterwards unless waveforms were written or the run failed).
    period_ns : int
    build_args : sequence of str
        Extra Verilator arguments.
    cache_dir : path-like, optional
    verbose : bool
    testbench : {"batch", "per-beat"}
        ``"batch"``: the Verilog harness of :mod:`lowbit.sim.harness` plays both ends and Python
        wakes once per batch. ``"per-beat"``: :mod:`lowbit.sim.perbeat_test`, a Python driver,
        sink and passive monitors on the design's own ports (slower; no waveforms, and phases
        may not be cut short with ``max_cycles``).

    Returns
    -------
    JobResult

    Raises
    ------
    SimulationError, LowbitError, TypeError, ValueError
    """
    phases = _check_job(simulator, testbench, phases, period_ns)
    wave_format = _wave_format(waves, simulator)
    if simulator == "verilator":
        # A missing tool is the first thing to report, before anything about the design.
        toolchain.verilator_env()
    wave_name = f"waves.{wave_format}" if wave_format else None
    toplevel, public, text = _testbench_design(verilog, top, phases, testbench, wave_format,
                                               wave_name)
    sim = build_simulation(text, toplevel, waves=wave_format, build_args=build_args,
                           public=public, cache_dir=cache_dir, verbose=verbose,
                           simulator=simulator)
    temporary = workdir is None
    workdir = _fresh_workdir(workdir, wave_name)
    try:
        job_path, nonce = _write_job(workdir, phases, seed, period_ns, wave_format, wave_window)
        seconds, failure = _run_cocotb(sim, simulator, TESTBENCHES[testbench], toplevel, workdir,
                                       job_path, seed, wave_format, verbose)
    except KeyboardInterrupt:  # Ctrl-C or a stopping signal: nothing half-run is kept
        if temporary:
            shutil.rmtree(workdir, ignore_errors=True)
        raise
    results = _job_results(top, workdir, nonce, failure, verbose)
    wave_file = workdir / wave_name if wave_name else None
    if wave_file is None and temporary:
        shutil.rmtree(workdir, ignore_errors=True)
    return JobResult(results, seconds, sim, workdir, wave_file)


def run_testbench(verilog, top, test_module, job, *, public, seed=0, verbose=False):
    """Build ``verilog`` (toplevel ``top``, with ``public`` signals) in Verilator and run the cocotb
    ``test_module`` on it with ``job`` (a JSON-able dict; its ``nonce`` and ``results`` are
    added); return ``(results the testbench wrote, seconds)``.

    Raises
    ------
    SimulationError
        If the build or the test fails, or the test wrote no results (quoting the log).
    """
    toolchain.verilator_env()
    sim = build_simulation(verilog, top, public=public, verbose=verbose)
    workdir = _fresh_workdir(None, None)
    try:
        nonce = secrets.token_hex(8)
        job_path = workdir / _JOB
        atomic_write_text(job_path, json.dumps({**job, "nonce": nonce, "results": str(workdir / _RESULTS)}))
        seconds, failure = _run_cocotb(sim, "verilator", test_module, top, workdir, job_path, seed, None, verbose)
    except KeyboardInterrupt:  # Ctrl-C or a stopping signal: nothing half-run is kept
        shutil.rmtree(workdir, ignore_errors=True)
        raise
    results = _job_results(top, workdir, nonce, failure, verbose)  # a failure keeps the folder: its log
    shutil.rmtree(workdir, ignore_errors=True)
    return results, seconds


def _check_job(simulator, testbench, phases, period_ns):
    """Reject a malformed job before anything is built; return the phases as a list."""
    _check_simulator(simulator)
    if testbench not in TESTBENCHES:
        raise ValueError(f"Testbench must be one of {', '.join(map(repr, TESTBENCHES))}, "
                         f"not {testbench!r}")
    phases = list(phases)
    if not phases or not all(isinstance(p, Phase) for p in phases):
        raise TypeError("Phases must be a non-empty sequence of Phase")
    names = [p.name for p in phases]
    if len(set(names)) != len(names):
        raise ValueError(f"Phase names must be unique, not {names!r}")
    if not isinstance(period_ns, int) or period_ns < 1:
        raise ValueError(f"period_ns must be a positive integer, not {period_ns!r}")
    return phases


def _wave_format(waves, simulator):
    """The waveform format to record, ``"fst"``, ``"vcd"`` or None, from ``run_phases``'s ``waves``."""
    if not waves:
        return None
    wave_format = "fst" if waves is True else waves
    if wave_format not in ("fst", "vcd"):
        raise ValueError(f"Waves must be True, False, 'fst' or 'vcd', not {waves!r}")
    # Icarus is only told whether to record, and then writes FST.
    return "fst" if simulator == "icarus" else wave_format


def _testbench_design(verilog, top, phases, testbench, wave_format, wave_name):
    """The toplevel, public signals and Verilog to build for ``testbench`` around the design."""
    ports = design_ports(verilog, top)
    if testbench == "batch":
        harness = harness_verilog(ports, top, _harness_depth(phases), wave_file=wave_name)
        return HARNESS_NAME, HARNESS_PUBLIC, verilog + harness
    if wave_format or any(p.max_cycles for p in phases):
        raise ValueError("The per-beat testbench records no waveforms and cuts no phase "
                         "short: use testbench='batch' for waves or max_cycles")
    if ports.axi_stream:
        raise ValueError("The per-beat testbench drives Amaranth stream ports (i, o), not AXI4-Stream: "
                         "use testbench='batch', or compile with ports='native'")
    return top, STREAM_PORTS, verilog


def _harness_depth(phases):
    """Memory depth of the batch harness: room for one item of any phase, or a whole timed phase."""
    in_per_item = max(len(p.inputs) // p.n_items for p in phases)
    out_per_item = max(-(-len(p.expected) // p.n_items) for p in phases) + 1
    # A phase that records its handshake cycles runs as one batch: the harness reloads its
    # memories between batches, and no such pause may fall between two timed items.
    timed = [p for p in phases if p.record_cycles]
    in_words = max([len(p.inputs) for p in timed], default=0)
    out_words = max([len(p.expected) + 1 for p in timed], default=0)
    return batch_depth(max(in_per_item, in_words), max(out_per_item, out_words))


def _fresh_workdir(workdir, wave_name):
    """The job's folder (a new temporary one if None), without the files of an earlier run."""
    workdir = Path(tempfile.mkdtemp(prefix="lowbit-sim-")) if workdir is None else Path(workdir)
    workdir = ensure_writable_dir(workdir.resolve())
    # Left over, they would pass for the output of a run that wrote none.
    for stale in (workdir / _RESULTS, workdir / _RESULTS_XML,
                  *([workdir / wave_name] if wave_name else [])):
        with contextlib.suppress(FileNotFoundError):
            stale.unlink()
    return workdir


def _write_job(workdir, phases, seed, period_ns, wave_format, wave_window):
    """Write the job file the testbench runs; return its path and the nonce its results must echo."""
    nonce = secrets.token_hex(8)
    job = {
        "nonce": nonce, "period_ns": period_ns, "results": str(workdir / _RESULTS),
        "wave": None if not wave_format else {
            "from": wave_window[0] if wave_window else 0,
            "to": wave_window[1] if wave_window else 2 ** 64 - 1},
        "phases": [p.to_job(seed) for p in phases],
    }
    job_path = workdir / _JOB
    atomic_write_text(job_path, json.dumps(job))
    return job_path, nonce


def _run_cocotb(sim, simulator, test_module, toplevel, workdir, job_path, seed, wave_format,
                verbose):
    """Run the cocotb test on the built simulation; return its wall time and why it failed, or None."""
    from cocotb_tools.check_results import get_results

    runner = test_runner(simulator)
    results_xml = workdir / _RESULTS_XML
    t0 = time.perf_counter()
    failure = None
    level = runner.log.level
    if not verbose:
        runner.log.setLevel(logging.WARNING)
    try:
        # The harness opens its own waveform file; only Icarus needs telling to write FST.
        runner.test(test_module=test_module, hdl_toplevel=toplevel, hdl_toplevel_lang="verilog",
                    build_dir=sim.build_dir, test_dir=workdir, results_xml=str(results_xml),
                    extra_env={JOB_ENV: str(job_path)}, seed=seed,
                    waves=simulator == "icarus" and wave_format is not None,
                    log_file=None if verbose else workdir / _LOG)
    except SystemExit as e:
        # Under pytest the runner calls sys.exit() when a cocotb test fails.
        failure = f"the simulator or the cocotb test failed (exit status {e.code})"
    except RuntimeError as e:
        failure = f"the simulator failed to run ({e})"
    finally:
        runner.log.setLevel(level)
    seconds = time.perf_counter() - t0
    if failure is None:
        try:
            n_tests, n_failed = get_results(results_xml)
        except RuntimeError:
            n_tests, n_failed = 0, 0
        if n_tests == 0:
            failure = "the simulator ended without running the cocotb test"
        elif n_failed:
            failure = "the cocotb test failed"
    return seconds, failure


def _job_results(top, workdir, nonce, failure, verbose):
    """The results the testbench wrote for this job; a SimulationError quoting the log if it failed."""
    results = None
    with contextlib.suppress(OSError, ValueError):
        results = json.loads((workdir / _RESULTS).read_text())
    if failure is None and results is None:
        failure = "the cocotb test wrote no results"
    if results is not None and results.get("nonce") != nonce:
        failure = (f"the simulator ran a different job: ${JOB_ENV} is set in this environment "
                   "and overrides lowbit's")
    if failure is not None:
        log = workdir / _LOG
        detail = results.get("error") if results else None
        excerpt = _log_excerpt(log) if not verbose else ""
        raise SimulationError(
            f"simulation of {top!r} failed: {failure}"
            + (f": {detail}" if detail else "") + (f"\n{excerpt}" if excerpt else ""),
            f"the full log is {str(log)!r}" if not verbose else None)
    return results


def run_stream(verilog, top, inputs, expected, *, timing_items=16, stall=StallConfig(), seed=0,
               workdir=None, waves=False, n_items=None, timeout_cycles=100_000, drain_cycles=64,
               period_ns=10, build_args=(), cache_dir=None, verbose=False, progress=True,
               simulator="verilator", waves_on_mismatch=True):
    """Stream ``inputs`` through the design and compare what comes out with ``expected``.

    The design's ports are an Amaranth stream input ``i`` and output ``o`` (``i__payload``,
    ``i__valid``, ``i__ready``, ``o__...``), a clock ``clk`` and a synchronous reset ``rst``; or
    AXI4-Stream ports (:class:`lowbit.hw.axis.AxiStreamTop`), whose ``tlast`` is driven and
    checked on every beat too.
    Two phases run, each after a reset: a timing phase, without stalls, over the first
    ``timing_items`` items, then a stalled phase over all items with random idle cycles on the
    input and backpressure on the output. The beats are driven by the batch harness of
    :mod:`lowbit.sim.harness`, so Python wakes once per batch of thousands of beats.

    When a word does not match (and ``waves`` is off), the same job runs again, with the same
    stalls, recording an FST waveform of the cycles around the first mismatching beat; its path
    is ``wave_file`` of the result and is printed with the summary.

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
        Folder for the job, results, logs and waveforms; a temporary one if omitted.
    waves : bool or {"fst", "vcd"}, optional
        Record waveforms of the whole run (``True`` means FST) into ``workdir``.
    n_items : int, optional
        Number of items; ``len(inputs)`` by default. ``inputs`` must split evenly into items;
        the timing phase takes the first ``timing_items * len(inputs) // n_items`` inputs and
        the leading expected beats in proportion, rounded.
    timeout_cycles : int, optional
        A batch ends when nothing moved for this many cycles while beats were awaited; the
        rest count as missing.
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
    simulator : {"verilator", "icarus"}, optional
    waves_on_mismatch : bool, optional
        Record the waveform around the first mismatch as described above.

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
    if stall is not None and not isinstance(stall, StallConfig):
        raise TypeError(f"Stall must be a StallConfig or None, not {stall!r}")
    _check_simulator(simulator)
    timing_items = min(timing_items, n_items)
    in_per_item = len(inputs) // n_items
    # Rounded, so that one beat too many or too few in ``expected`` shows in the stalled phase only.
    timing_outputs = (2 * timing_items * len(expected) + n_items) // (2 * n_items)
    common = {"timeout_cycles": timeout_cycles, "drain_cycles": drain_cycles}
    phases = []
    if timing_items:
        phases.append(Phase("timing", inputs[:timing_items * in_per_item],
                            expected[:timing_outputs], n_items=timing_items, record_cycles=True,
                            **common))
    phases.append(Phase("stalled", inputs, expected, n_items=n_items, stall=stall, **common))

    def run(**kw):
        return run_phases(verilog, top, phases, seed=seed, simulator=simulator,
                          period_ns=period_ns, build_args=build_args, cache_dir=cache_dir,
                          verbose=verbose, **kw)

    job = run(waves=waves, workdir=workdir)
    sim = job.simulation
    if progress:
        how = "cached" if sim.cached else f"built in {sim.build_seconds:.1f} s"
        print(f"lowbit.sim: {top}: {simulator} simulation {how}", file=sys.stderr)
    result = _result(job.results, sim, n_items, job.workdir, job.seconds)
    result.wave_file = job.wave_file
    if result.mismatches and not waves and waves_on_mismatch:
        first = result.first_mismatches[0]
        window = _mismatch_window(first, result, job.results["phases"][first["phase"]])
        wave_dir = Path(workdir) if workdir is not None else \
            Path(tempfile.mkdtemp(prefix="lowbit-mismatch-"))
        try:
            replay = run(waves="fst", wave_window=window, workdir=wave_dir)
            result.wave_file = replay.wave_file
            result.wave_window = window
        except LowbitError as e:
            # The mismatch report matters more than its waveform.
            print(f"lowbit.sim: no waveform of the mismatch: {e}", file=sys.stderr)
    if progress:
        print(_summary(top, result), file=sys.stderr)
    return result


def _mismatch_window(mismatch, result, phase):
    """Cycles to record around the first mismatching beat: enough before it to see its input enter."""
    cycle = mismatch.get("cycle")
    if cycle is None:
        cycle = phase["start_cycle"] + phase["cycles"]
    interval = max(result.interval, default=1)
    before = 2 * (result.latency or 0) + 4 * interval + 256
    return max(0, cycle - before), cycle + 64 + 2 * interval


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
                 f"got {m['got']}" + (f" (cycle {m['cycle']})" if m.get("cycle") is not None else ""))
    if r.mismatches and r.wave_file is not None:
        line += f"\n  waveform: {r.wave_file}"
    return line
