"""The Python side of the batch harness (:mod:`lowbit.sim.harness`), running inside the simulator.

:class:`BatchBench` loads a batch into the harness over VPI, starts it, sleeps until the harness
raises ``done`` and reads back what came out: one wake-up of Python per batch, however many
beats and idle cycles the batch holds. :meth:`BatchBench.stream` splits a long stream of items
into batches and scores every output word with a :class:`lowbit.sim.stream.Scoreboard`.
"""

import hashlib
from dataclasses import dataclass, field

from cocotb.triggers import RisingEdge

from .stream import Beat, CycleClock, Scoreboard

__all__ = ["BatchBench", "BatchResult", "PhaseResult", "gap_threshold"]


def gap_threshold(probability):
    """The harness's gap threshold for a chance of a gap before a beat: ``round(p * 65536)``."""
    if not 0.0 <= probability <= 1.0:
        raise ValueError(f"Stall probability must be in [0, 1], not {probability!r}")
    return round(probability * 65536)


def _seed32(*parts):
    digest = hashlib.sha256(":".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:4], "little")


@dataclass
class BatchResult:
    """What one batch did.

    Attributes
    ----------
    outputs : list of int or str
        Output words in arrival order (a string where a word had X or Z bits), at most the
        harness depth.
    accepted, received : int
        Input beats taken and output beats seen (``received`` may exceed ``outputs``).
    timed_out, stopped : bool
    in_idle, out_idle : int
        Gap cycles of each side while it had beats to move.
    start, last_in, last_out : int
        Cycle of the batch's first cycle and of its last input and output handshakes.
    end : int
        Cycle after the batch.
    last_errors : int
        Output beats whose AXI4-Stream ``tlast`` was not the one expected (0 for other designs).
    first_last_error : int
        The index of the first of them in the batch.
    """

    outputs: list
    accepted: int
    received: int
    timed_out: bool
    stopped: bool
    in_idle: int
    out_idle: int
    start: int
    last_in: int
    last_out: int
    end: int
    last_errors: int = 0
    first_last_error: int = 0


@dataclass
class PhaseResult:
    """A stream of items run as batches and scored word by word."""

    summary: dict
    outputs: list = field(default_factory=list)
    wakes: int = 0


class BatchBench:
    """Drives the harness toplevel ``dut`` (see :func:`lowbit.sim.harness.harness_verilog`).

    Parameters
    ----------
    dut : cocotb handle
        The harness.
    period_ns : int
        Clock period.
    """

    def __init__(self, dut, period_ns=10):
        self.dut = dut
        self.clock = CycleClock(dut.clk, period_ns)
        self.depth = len(dut.in_mem)
        self.in_width = len(dut.in_mem[0])
        self.out_width = len(dut.out_mem[0])
        self.wakes = 0
        self._batch = 0
        self._in_mem = [dut.in_mem[k] for k in range(self.depth)]
        self._out_mem = [dut.out_mem[k] for k in range(self.depth)]

    def start(self):
        """Start the clock; nothing moves until the first batch."""
        self.dut.batch.value = 0
        self.dut.rst.value = 0
        self.clock.start()

    async def reset(self, cycles=4):
        """Hold the design's reset for ``cycles`` cycles between batches (both sides idle)."""
        await self.clock.align()
        self.dut.rst.value = 1
        await self.clock.advance(cycles)
        self.dut.rst.value = 0
        self.wakes += 2

    def check_word(self, index, word):
        if word < 0 or word >> self.in_width:
            raise ValueError(f"inputs[{index}] = {word:#x} does not fit the {self.in_width}-bit "
                             "input payload")

    async def run_batch(self, inputs, n_out, *, in_idle=0.0, out_stall=0.0, max_gap=1, seed=0,
                        timeout_cycles=100_000, drain_cycles=64, max_extra=256, max_cycles=0,
                        record_cycles=False, in_beats=0, out_beats=0):
        """Run one batch of at most ``depth`` input words, expecting ``n_out`` output words, of
        whole items of ``in_beats`` input and ``out_beats`` output words (for ``tlast``; 0: not
        known).

        Returns
        -------
        BatchResult, and when ``record_cycles`` the input and output handshakes as lists of
        :class:`lowbit.sim.stream.Beat` (``None`` otherwise).
        """
        if len(inputs) > self.depth:
            raise ValueError(f"A batch holds at most {self.depth} input words, not {len(inputs)}")
        dut = self.dut
        for k, word in enumerate(inputs):
            self._in_mem[k].value = word
        dut.n_in.value = len(inputs)
        dut.n_out.value = n_out
        dut.in_gap_threshold.value = gap_threshold(in_idle)
        dut.out_gap_threshold.value = gap_threshold(out_stall)
        dut.max_gap.value = max_gap
        dut.in_seed.value = _seed32(seed, self._batch, "in")
        dut.out_seed.value = _seed32(seed, self._batch, "out")
        dut.timeout_cycles.value = timeout_cycles
        dut.drain_cycles.value = drain_cycles
        dut.max_extra.value = max_extra
        dut.max_cycles.value = max_cycles
        dut.in_beats.value = in_beats
        dut.out_beats.value = out_beats
        self._batch += 1
        dut.batch.value = self._batch
        await RisingEdge(dut.done)
        self.wakes += 1
        received = int(dut.out_count.value)
        outputs = [_word(self._out_mem[k].value) for k in range(min(received, self.depth))]
        result = BatchResult(
            outputs=outputs, accepted=int(dut.in_count.value), received=received,
            timed_out=bool(dut.timed_out.value), stopped=bool(dut.stopped.value),
            in_idle=int(dut.in_idle.value), out_idle=int(dut.out_idle.value),
            start=int(dut.batch_start.value), last_in=int(dut.last_in.value),
            last_out=int(dut.last_out.value), end=int(dut.cycle.value),
            last_errors=int(dut.last_errors.value), first_last_error=int(dut.first_last_error.value))
        beats = None
        if record_cycles:
            beats = ([Beat(w, int(dut.in_cycles[k].value)) for k, w in
                      enumerate(inputs[:result.accepted])],
                     [Beat(w, int(dut.out_cycles[k].value)) for k, w in enumerate(outputs)])
        # Leave the time step of ``done`` so that the next batch's writes land in a fresh cycle.
        await self.clock.advance(1)
        self.wakes += 1
        return result, beats

    def out_cycle(self, index):
        """Cycle of output handshake ``index`` of the last batch."""
        return int(self.dut.out_cycles[index].value)

    async def stream(self, name, inputs, expected, n_items, *, in_idle=0.0, out_stall=0.0,
                     max_gap=1, seed=0, timeout_cycles=100_000, drain_cycles=64, max_cycles=0,
                     partial=False, record_cycles=False):
        """Run ``inputs`` (``n_items`` items of equal length) in batches of whole items.

        Each batch expects its items' share of ``expected`` (rounded, the last batch takes the
        rest), so a surplus or shortfall of expected words shows as missing or extra beats of
        the last batch. A batch that times out or is stopped ends the phase; the words not
        sent count as missing unless ``partial``.

        Returns
        -------
        PhaseResult
        """
        for k, w in enumerate(inputs):
            self.check_word(k, w)
        board = Scoreboard(expected, name)
        in_per_item = len(inputs) // n_items
        items_per_batch = max(1, self.depth // max(in_per_item, 1))
        if expected:
            per_item = -(-len(expected) // n_items)
            items_per_batch = max(1, min(items_per_batch, (self.depth - 1) // max(per_item, 1)))
        wakes0 = self.wakes
        start = None
        accepted = received = in_idle_cycles = out_idle_cycles = in_span = out_span = 0
        input_cycles, output_cycles, outputs = [], [], []
        timed_out = stopped = False
        last_errors = 0
        out_per_item = len(expected) // n_items if expected and len(expected) % n_items == 0 else 0
        for first in range(0, n_items, items_per_batch):
            last = min(n_items, first + items_per_batch)
            lo = (2 * first * len(expected) + n_items) // (2 * n_items)
            hi = len(expected) if last == n_items else \
                (2 * last * len(expected) + n_items) // (2 * n_items)
            r, beats = await self.run_batch(
                inputs[first * in_per_item:last * in_per_item], hi - lo, in_idle=in_idle,
                out_stall=out_stall, max_gap=max_gap, seed=seed, timeout_cycles=timeout_cycles,
                drain_cycles=drain_cycles, max_cycles=max_cycles, record_cycles=record_cycles,
                in_beats=in_per_item, out_beats=out_per_item)
            last_errors += r.last_errors
            if r.last_errors and r.first_last_error < min(r.received, self.depth):
                k = r.first_last_error
                expect = int((lo + k) % out_per_item == out_per_item - 1)
                board._record("tlast", lo + k, expect, 1 - expect, self.out_cycle(k))
            start = r.start if start is None else start
            for k, word in enumerate(r.outputs):
                if k < hi - lo:
                    board.check(Beat(word, None), lo + k)
                else:
                    board.extra_beat(Beat(word, None), hi + k - (hi - lo))
            if r.received > len(r.outputs):
                # Beyond the harness depth: counted, not kept.
                for k in range(len(r.outputs), r.received):
                    board.extra_beat(Beat(None, None), lo + k)
            outputs += r.outputs
            accepted += r.accepted
            received += r.received
            in_idle_cycles += r.in_idle
            out_idle_cycles += r.out_idle
            if r.accepted:
                in_span += r.last_in - r.start + 1
            if r.received:
                out_span += r.last_out - r.start + 1
            if beats is not None:
                input_cycles += [b.cycle for b in beats[0]]
                output_cycles += [b.cycle for b in beats[1]]
            # The first mismatch's cycle, while this batch's stamps are still in the harness.
            for m in board.first:
                if m.get("cycle") is None and m["kind"] != "missing" and \
                        lo <= m["index"] < lo + min(r.received, self.depth):
                    m["cycle"] = self.out_cycle(m["index"] - lo)
            if r.timed_out or r.stopped:
                timed_out, stopped = r.timed_out, r.stopped
                break
        summary = board.summary(partial=partial)
        # A wrong tlast is a wrong output beat of an AXI4-Stream design.
        summary["tlast_errors"] = last_errors
        summary["errors"] += last_errors
        for m in summary["first_mismatches"]:
            if m["kind"] == "missing" and m["cycle"] is None:
                # Where the wait for it ended.
                m["cycle"] = r.end
        summary.update({
            "inputs": len(inputs), "accepted": accepted, "timed_out": timed_out,
            "stopped": stopped, "start_cycle": start, "cycles": self.clock.cycle() - start,
            "in_idle_cycles": in_idle_cycles, "out_idle_cycles": out_idle_cycles,
            "in_idle_fraction": in_idle_cycles / in_span if in_span else None,
            "out_idle_fraction": out_idle_cycles / out_span if out_span else None,
            "input_cycles": input_cycles, "output_cycles": output_cycles,
            "wakes": self.wakes - wakes0,
        })
        summary["received"] = received
        return PhaseResult(summary, outputs, self.wakes - wakes0)


def _word(value):
    try:
        return value.to_unsigned()
    except ValueError:
        # X or Z bits: keep the text so the scoreboard shows what came out.
        return str(value)
