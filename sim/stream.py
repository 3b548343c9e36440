"""cocotb 2.x testbench parts for Amaranth stream ports: clock, driver, sink, monitor, scoreboard.

This module runs inside the simulator (it imports cocotb's trigger machinery), next to the
design. The ports are those ``amaranth.back.verilog.convert`` names for a
``stream.Signature``: ``<prefix>__payload``, ``<prefix>__valid`` and ``<prefix>__ready``.

Timing model
------------
The clock starts low, so cycle ``k`` begins with a falling edge at ``k * period`` and ends with
the rising edge at ``(k + 1/2) * period``. The testbench writes its inputs (``valid``, ``payload``,
``ready``) only at the start of a cycle, in the falling-edge time step, where no register
changes. It then waits for ``ReadOnly``, when the inputs and everything combinational behind
them (``i__ready`` may depend on ``o__ready``) have settled, and decides there whether a beat
transfers at the coming rising edge. A beat is recorded with the number of its cycle.

Python is woken only when something can happen: a stretch of idle cycles is one ``Timer``,
and waiting on the design is one ``RisingEdge`` of its ``ready`` or ``valid``, bounded by a
``Timer``. ``ClockCycles`` is not used for skipping: in cocotb 2.1 it awaits every edge in a
Python loop. The clock is the C-level ``cocotb.clock.Clock`` (``impl="gpi"``, chosen because
the Verilator runner sets ``COCOTB_TRUST_INERTIAL_WRITES=1``), so clock edges alone never run
Python.
"""

import random
from dataclasses import dataclass, field

import cocotb
from cocotb.clock import Clock
from cocotb.simtime import convert, get_sim_time
from cocotb.triggers import First, ReadOnly, RisingEdge, Timer

__all__ = ["Stalls", "CycleClock", "StreamDriver", "StreamSink", "StreamMonitor", "Scoreboard", "Beat"]


class Stalls:
    """Seeded generator of idle gaps, drawn once before each beat.

    With probability ``probability`` a gap of 1 to ``max_gap`` cycles (uniform) is drawn, else
    none, so the expected idle time per beat is ``probability * (max_gap + 1) / 2``.

    Parameters
    ----------
    probability : float
        Chance of a gap before a beat, in [0, 1].
    max_gap : int
        Longest gap in cycles, at least 1.
    seed : int or str
        Seed of the generator's own ``random.Random``; the same seed gives the same gaps.
    """

    def __init__(self, probability, max_gap, seed):
        if not 0.0 <= probability <= 1.0:
            raise ValueError(f"Stall probability must be in [0, 1], not {probability!r}")
        if not isinstance(max_gap, int) or max_gap < 1:
            raise ValueError(f"Maximum gap must be a positive integer, not {max_gap!r}")
        self._p = probability
        self._max_gap = max_gap
        self._rng = random.Random(seed)

    def next_gap(self):
        """Number of idle cycles before the next beat.

        Returns
        -------
        int
        """
        if self._p and self._rng.random() < self._p:
            return self._rng.randint(1, self._max_gap)
        return 0


class CycleClock:
    """The clock of the design and the cycle count derived from simulation time.

    Parameters
    ----------
    clk : cocotb handle or None
        The clock input; ``None`` for a purely combinational design (Amaranth then emits no
        ``clk`` port), where cycles are only a time base for the testbench.
    period_ns : int
        Clock period in ns; an even number of simulator steps.
    """

    def __init__(self, clk, period_ns=10):
        self.clk = clk
        self.period_ns = period_ns
        self.period = convert(period_ns, "ns", to="step")
        if self.period % 2:
            raise ValueError(f"Clock period must be an even number of steps, not {self.period}")
        self._clock = Clock(clk, period_ns, unit="ns") if clk is not None else None

    @property
    def impl(self):
        """``"gpi"`` for the C-level clock, ``"py"`` for cocotb's Python fallback, ``None`` without a clock."""
        return self._clock.impl if self._clock is not None else None

    def start(self):
        """Start the clock low, so the first rising edge ends cycle 0."""
        if self._clock is not None:
            self._clock.start(start_high=False)

    def stop(self):
        if self._clock is not None:
            self._clock.stop()

    def cycle(self):
        """Number of the current cycle.

        Returns
        -------
        int
        """
        return get_sim_time("step") // self.period

    async def advance(self, n=1):
        """Wait for the start of the cycle ``n`` cycles after the current one, in one wake-up."""
        now = get_sim_time("step")
        await Timer((now // self.period + n) * self.period - now, "step")

    async def align(self):
        """From any time step, go to the start of the current cycle if already in it, else of the next.

        Returns
        -------
        bool
            Whether it had to wait (one more wake-up).
        """
        offset = get_sim_time("step") % self.period
        if offset:
            await Timer(self.period - offset, "step")
        return bool(offset)


@dataclass
class Beat:
    """One transferred beat: its word and the cycle whose rising edge transferred it."""

    word: int
    cycle: int


@dataclass
class SendReport:
    """What a driver did in one run."""

    cycles: list = field(default_factory=list)
    idle_cycles: int = 0
    first_cycle: int = 0
    timed_out: bool = False


class _Port:
    def __init__(self, dut, prefix):
        try:
            self.payload = getattr(dut, f"{prefix}__payload")
            self.valid = getattr(dut, f"{prefix}__valid")
            self.ready = getattr(dut, f"{prefix}__ready")
        except AttributeError as e:
            raise ValueError(f"Design has no stream port {prefix!r} ({prefix}__payload, "
                             f"{prefix}__valid, {prefix}__ready): {e}") from None
        self.width = len(self.payload)


class StreamDriver:
    """Sends words into a stream input (``valid``/``payload`` driven, ``ready`` sampled).

    Parameters
    ----------
    dut : cocotb handle
        The toplevel.
    prefix : str
        Port name prefix, e.g. ``"i"`` for ``i__payload``, ``i__valid``, ``i__ready``.
    clock : CycleClock
    """

    def __init__(self, dut, prefix, clock):
        self._port = _Port(dut, prefix)
        self._clock = clock
        self.wakes = 0
        self._valid = 0

    @property
    def width(self):
        return self._port.width

    def idle(self):
        """Deassert ``valid``; call at the start of a cycle (not in ``ReadOnly``)."""
        self._port.valid.value = 0
        self._valid = 0

    async def send(self, words, stalls=None, timeout_cycles=100_000):
        """Send ``words`` one beat each; call at the start of a cycle.

        Parameters
        ----------
        words : sequence of int
        stalls : Stalls, optional
            Idle gaps (``valid`` low) before beats; none if omitted.
        timeout_cycles : int
            Give up when ``ready`` stays low this long under a valid beat.

        Returns
        -------
        SendReport
            The cycle of each accepted beat, the idle cycles inserted, and whether it gave up.
        """
        port, clock = self._port, self._clock
        report = SendReport(first_cycle=clock.cycle())
        edge = RisingEdge(port.ready)
        for word in words:
            if word < 0 or word >> port.width:
                raise ValueError(f"Input word {word:#x} does not fit the {port.width}-bit payload")
            gap = stalls.next_gap() if stalls is not None else 0
            if gap:
                if self._valid:
                    self.idle()
                report.idle_cycles += gap
                await clock.advance(gap)
                self.wakes += 1
            port.payload.value = word
            if not self._valid:
                port.valid.value = 1
                self._valid = 1
            await ReadOnly()
            self.wakes += 1
            deadline = (clock.cycle() + timeout_cycles) * clock.period
            while not port.ready.value:
                remaining = deadline - get_sim_time("step")
                if remaining <= 0:
                    report.timed_out = True
                    break
                timer = Timer(remaining, "step")
                fired = await First(edge, timer)
                self.wakes += 1
                if fired is timer:
                    report.timed_out = True
                    break
                self.wakes += await clock.align()
                await ReadOnly()
                self.wakes += 1
            if report.timed_out:
                # Possibly still in ReadOnly, where writes are not allowed.
                await clock.advance(1)
                break
            report.cycles.append(clock.cycle())
            await clock.advance(1)
            self.wakes += 1
        self.idle()
        return report


class StreamSink:
    """Receives beats from a stream output, driving ``ready`` with random backpressure.

    Parameters
    ----------
    dut : cocotb handle
        The toplevel.
    prefix : str
        Port name prefix, e.g. ``"o"``.
    clock : CycleClock
    """

    def __init__(self, dut, prefix, clock):
        self._port = _Port(dut, prefix)
        self._clock = clock
        self.wakes = 0
        self._ready = 0
        self.idle_cycles = 0

    @property
    def width(self):
        return self._port.width

    def idle(self):
        """Deassert ``ready``; call at the start of a cycle (not in ``ReadOnly``)."""
        self._port.ready.value = 0
        self._ready = 0

    def _assert_ready(self):
        if not self._ready:
            self._port.ready.value = 1
            self._ready = 1

    async def receive(self, count, stalls=None, timeout_cycles=100_000, drain_cycles=64,
                      on_beat=None, max_extra=256):
        """Collect ``count`` beats, then watch ``drain_cycles`` more for extra ones.

        Call at the start of a cycle. ``ready`` is lowered for each stall gap (drawn before
        each expected beat) and is high otherwise.

        Parameters
        ----------
        count : int
            Beats expected.
        stalls : Stalls, optional
            Backpressure gaps; none if omitted.
        timeout_cycles : int
            Stop waiting for an expected beat after this many cycles without one.
        drain_cycles : int
            After ``count`` beats, how long to keep ``ready`` high to catch extra beats; at
            least twice the longest wait for a beat seen so far.
        on_beat : callable, optional
            Called with each :class:`Beat` as it arrives.
        max_extra : int
            Stop after this many extra beats, so a design stuck with ``valid`` high ends.

        Returns
        -------
        list of Beat
        """
        port, clock = self._port, self._clock
        beats = []
        self.idle_cycles = 0
        edge = RisingEdge(port.valid)
        # A slow design (long latency or interval) gets a drain window to match, so an extra
        # beat it emits late is still caught.
        last_cycle = clock.cycle()
        longest = 0
        while len(beats) < count + max_extra:
            waiting_for_expected = len(beats) < count
            gap = stalls.next_gap() if stalls is not None and waiting_for_expected else 0
            if gap:
                if self._ready:
                    self.idle()
                self.idle_cycles += gap
                await clock.advance(gap)
                self.wakes += 1
            self._assert_ready()
            await ReadOnly()
            self.wakes += 1
            limit = timeout_cycles if waiting_for_expected else max(drain_cycles, 2 * longest)
            deadline = (clock.cycle() + limit) * clock.period
            done = False
            while not port.valid.value:
                remaining = deadline - get_sim_time("step")
                if remaining <= 0:
                    done = True
                    break
                timer = Timer(remaining, "step")
                fired = await First(edge, timer)
                self.wakes += 1
                if fired is timer:
                    done = True
                    break
                self.wakes += await clock.align()
                await ReadOnly()
                self.wakes += 1
            if done:
                break
            beat = Beat(_to_int(port.payload.value), clock.cycle())
            longest = max(longest, beat.cycle - last_cycle)
            last_cycle = beat.cycle
            beats.append(beat)
            if on_beat is not None:
                on_beat(beat)
            await clock.advance(1)
            self.wakes += 1
        # Possibly still in ReadOnly, where writes are not allowed.
        await clock.advance(1)
        self.idle()
        return beats


class StreamMonitor:
    """Watches a stream passively and records every beat: ``valid`` and ``ready`` high at a rising edge.

    It drives nothing, so it can watch any stream of the design, whoever drives its ``valid``
    and ``ready`` (a :class:`StreamDriver`, a :class:`StreamSink` or the design itself). It
    samples in the ``ReadOnly`` phase at the start of each cycle, the same moment the driver
    and the sink decide, so its beats and cycles are exactly theirs. Python wakes once per cycle
    while ``valid`` is high and once per rise of ``valid`` otherwise.

    Parameters
    ----------
    dut : cocotb handle
        The toplevel.
    prefix : str
        Port name prefix, e.g. ``"i"`` or ``"o"``.
    clock : CycleClock
    callback : callable, optional
        Called with each :class:`Beat` as it is seen (a :class:`Scoreboard`, say).

    Attributes
    ----------
    beats : list of Beat
        Every beat seen since :meth:`start`.
    """

    def __init__(self, dut, prefix, clock, callback=None):
        self._port = _Port(dut, prefix)
        self._clock = clock
        self.callback = callback
        self.beats = []
        self.wakes = 0
        self._task = None

    @property
    def width(self):
        return self._port.width

    def start(self):
        """Start watching; call at the start of a cycle."""
        if self._task is not None:
            raise RuntimeError("The monitor is already watching")
        self._task = cocotb.start_soon(self._watch())

    def stop(self):
        """Stop watching; the beats seen so far stay in :attr:`beats`."""
        if self._task is not None:
            self._task.cancel()
            self._task = None

    async def _watch(self):
        port, clock = self._port, self._clock
        rise = RisingEdge(port.valid)
        while True:
            self.wakes += await clock.align()
            await ReadOnly()
            self.wakes += 1
            if not port.valid.value:
                # Nothing can transfer until valid rises: one wake-up for the whole idle stretch.
                await rise
                self.wakes += 1
                continue
            if port.ready.value:
                beat = Beat(_to_int(port.payload.value), clock.cycle())
                self.beats.append(beat)
                if self.callback is not None:
                    self.callback(beat)
            await clock.advance(1)
            self.wakes += 1


def _to_int(value):
    try:
        return value.to_unsigned()
    except ValueError:
        # X or Z bits: keep the text so the scoreboard shows what came out.
        return str(value)


class Scoreboard:
    """Compares received beats with the expected words, by position.

    Beats may be fed in arrival order (calling the scoreboard with each :class:`Beat`), or by
    position with :meth:`check` and :meth:`extra_beat` when a batch knows where its beats
    belong. Every word is compared; nothing is sampled.

    Parameters
    ----------
    expected : sequence of int
    name : str
        Label used in mismatch records (e.g. the phase name).
    max_reported : int
        How many mismatches to record in detail.
    """

    def __init__(self, expected, name="", max_reported=10):
        self.expected = list(expected)
        self.name = name
        self.max_reported = max_reported
        self.received = 0
        self.checked = 0
        self.wrong = 0
        self.extra = 0
        self.first = []

    def _record(self, kind, index, expected, got, cycle):
        if len(self.first) < self.max_reported:
            self.first.append({"phase": self.name, "kind": kind, "index": index,
                               "expected": _hex(expected), "got": _hex(got), "cycle": cycle})

    def __call__(self, beat):
        """Check the next received :class:`Beat` in arrival order."""
        if self.received >= len(self.expected):
            self.extra_beat(beat, self.received)
        else:
            self.check(beat, self.received)

    def check(self, beat, index):
        """Check ``beat`` against ``expected[index]``."""
        self.received += 1
        self.checked += 1
        if beat.word != self.expected[index]:
            self.wrong += 1
            self._record("wrong", index, self.expected[index], beat.word, beat.cycle)

    def extra_beat(self, beat, index):
        """Count ``beat`` as one no expected word accounts for; ``index`` is its arrival position."""
        self.received += 1
        self.extra += 1
        self._record("extra", index, None, beat.word, beat.cycle)

    @property
    def missing(self):
        return max(0, len(self.expected) - self.checked)

    @property
    def errors(self):
        """Wrong, missing and extra beats together: 0 means the stream matched exactly."""
        return self.wrong + self.missing + self.extra

    def summary(self, partial=False):
        """The counts and the first mismatches, with missing beats added at the end.

        Parameters
        ----------
        partial : bool
            The stream was cut short on purpose: words never awaited are not missing.

        Returns
        -------
        dict
        """
        missing = 0 if partial else self.missing
        if missing:
            self._record("missing", self.checked, self.expected[self.checked], None, None)
        return {"expected": len(self.expected), "received": self.received, "wrong": self.wrong,
                "missing": missing, "extra": self.extra,
                "errors": self.wrong + missing + self.extra,
                "first_mismatches": list(self.first)}


def _hex(word):
    if word is None or isinstance(word, str):
        return word
    return f"{word:x}"


async def reset(dut, clock, cycles=4, drivers=(), sinks=()):
    """Hold the synchronous reset ``rst`` high for ``cycles`` rising edges with all ports idle.

    Call at the start of a cycle; returns at the start of the first cycle out of reset. A design
    without ``rst`` (Amaranth omits it when nothing is reset) just idles.
    """
    for d in drivers:
        d.idle()
    for s in sinks:
        s.idle()
    rst = _child(dut, "rst")
    if rst is not None:
        rst.value = 1
    await clock.advance(cycles)
    if rst is not None:
        rst.value = 0


def _child(dut, name):
    try:
        return getattr(dut, name)
    except AttributeError:
        return None


def start_clock(dut, period_ns=10):
    """Create and start the design's clock.

    Returns
    -------
    CycleClock
    """
    clock = CycleClock(_child(dut, "clk"), period_ns)
    clock.start()
    return clock


__all__ += ["SendReport", "reset", "start_clock"]
