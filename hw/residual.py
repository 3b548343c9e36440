"""Skip connections in hardware: a stream fork, an elementwise stream adder, and the residual block.

A residual block ``y = body(x) + x`` streams ``x`` into a :class:`StreamFork`, whose one output
feeds the body's engines and whose other output waits in a FIFO on the skip path; a
:class:`StreamAdd` joins the body's output with the skip path's beat by beat.

The skip FIFO must never stop the fork while the body still needs input to produce its next
output, or the block deadlocks. :func:`skip_depth` bounds, from each body engine's timing, the
beats the body can hold; a skip FIFO one deeper than that bound is never full while the body can
take input, so the body runs exactly as it would alone and the block's throughput is the body's.
"""

import math

import numpy as np
from amaranth.hdl import Module, Mux, Signal, Value
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from lowbit.core.types import int_type_for

from .fifo import StreamFIFO
from .network import DataflowTop
from .payload import VectorFormat

__all__ = ["StreamFork", "StreamAdd", "ResidualBlock", "sum_format", "skip_depth", "add_reference"]


def sum_format(a, b):
    """The narrowest format of the elementwise sum of ``a`` and ``b``, from their exact bounds."""
    t = int_type_for(a.element.min + b.element.min, a.element.max + b.element.max)
    return VectorFormat(t.kind, t.bits, a.count)


def add_reference(a, b):
    """Golden model of :class:`StreamAdd`: the elementwise int64 sum (bipolar elements are ±1)."""
    return np.asarray(a, dtype=np.int64) + np.asarray(b, dtype=np.int64)


def _check_format(what, fmt):
    if not isinstance(fmt, VectorFormat):
        raise TypeError(f"{what} format must be a VectorFormat, not {fmt!r}")


class StreamFork(wiring.Component):
    """Copies each input beat to two outputs, ``a`` and ``b``.

    The beat is registered, and each output is offered it until that output takes it; the next
    beat is accepted when both have (in the same cycle as the last of them). No valid depends
    on a ready, so the fork closes no combinational loop with what it feeds, even when both
    outputs meet again (in :class:`StreamAdd`).

    Timing: ``cycles_per_item = 1``, ``latency = 1`` cycle from the input handshake to the
    output handshakes, with both outputs ready.

    Parameters
    ----------
    fmt : VectorFormat
        The payload format of all three ports.

    Members
    -------
    i : In(stream.Signature(fmt.shape))
        Beats in.
    a : Out(stream.Signature(fmt.shape))
        Every beat, in order.
    b : Out(stream.Signature(fmt.shape))
        Every beat, in order.

    Raises
    ------
    TypeError
        If ``fmt`` is not a VectorFormat.
    """

    cycles_per_item = 1
    latency = 1

    def __init__(self, fmt):
        _check_format("Payload", fmt)
        self._format = fmt
        super().__init__({
            "i": In(stream.Signature(fmt.shape)),
            "a": Out(stream.Signature(fmt.shape)),
            "b": Out(stream.Signature(fmt.shape)),
        })

    format = property(lambda self: self._format)
    in_format = out_format = format

    def elaborate(self, platform):
        m = Module()
        full, sent_a, sent_b = Signal(), Signal(), Signal()
        data = Signal(self._format.width)
        # Each output is done with the held beat once it took it earlier or takes it now.
        done = Signal()
        m.d.comb += [
            self.a.valid.eq(full & ~sent_a),
            self.b.valid.eq(full & ~sent_b),
            Value.cast(self.a.payload).eq(data),
            Value.cast(self.b.payload).eq(data),
            done.eq(full & (sent_a | self.a.ready) & (sent_b | self.b.ready)),
            self.i.ready.eq(~full | done),
        ]
        with m.If(self.i.valid & self.i.ready):
            m.d.sync += [data.eq(Value.cast(self.i.payload)), full.eq(1), sent_a.eq(0), sent_b.eq(0)]
        with m.Elif(done):
            m.d.sync += full.eq(0)
        with m.Else():
            with m.If(self.a.valid & self.a.ready):
                m.d.sync += sent_a.eq(1)
            with m.If(self.b.valid & self.b.ready):
                m.d.sync += sent_b.eq(1)
        return m


class StreamAdd(wiring.Component):
    """Adds the beats of two streams element by element: ``o[j] = a[j] + b[j]``.

    A beat is taken from both inputs in the same cycle, when both are valid and the output
    register is free (or being emptied). Bipolar elements count as -1 (bit 0) and +1 (bit 1);
    the output format is :func:`sum_format`, wide enough for every sum, so nothing overflows.

    Timing: ``cycles_per_item = 1``, ``latency = 1`` cycle from the input handshake to the
    output handshake, with the output ready.

    Parameters
    ----------
    a_format, b_format : VectorFormat
        Formats of the two inputs; the same element count.

    Members
    -------
    a : In(stream.Signature(a_format.shape))
    b : In(stream.Signature(b_format.shape))
    o : Out(stream.Signature(sum_format(a_format, b_format).shape))

    Raises
    ------
    TypeError
        If a format is not a VectorFormat.
    ValueError
        If the element counts differ.
    """

    cycles_per_item = 1
    latency = 1

    def __init__(self, a_format, b_format):
        _check_format("Input a", a_format)
        _check_format("Input b", b_format)
        if a_format.count != b_format.count:
            raise ValueError(f"Input b must have the {a_format.count} elements of input a, "
                             f"not {b_format.count}")
        self._a_format, self._b_format = a_format, b_format
        self._out_format = sum_format(a_format, b_format)
        super().__init__({
            "a": In(stream.Signature(a_format.shape)),
            "b": In(stream.Signature(b_format.shape)),
            "o": Out(stream.Signature(self._out_format.shape)),
        })

    a_format = property(lambda self: self._a_format)
    b_format = property(lambda self: self._b_format)
    out_format = property(lambda self: self._out_format)

    def elaborate(self, platform):
        m = Module()
        take = Signal()
        m.d.comb += [
            take.eq(self.a.valid & self.b.valid & (~self.o.valid | self.o.ready)),
            self.a.ready.eq(take),
            self.b.ready.eq(take),
        ]
        with m.If(self.o.valid & self.o.ready):
            m.d.sync += self.o.valid.eq(0)
        with m.If(take):
            m.d.sync += self.o.valid.eq(1)
            for j in range(self._out_format.count):
                m.d.sync += self.o.payload[j].eq(_value(self._a_format, self.a.payload, j) +
                                                 _value(self._b_format, self.b.payload, j))
        return m


def _value(fmt, payload, j):
    """Element ``j`` of a payload as a number: bipolar bits become -1 or +1."""
    if fmt.kind == "bipolar":
        return Mux(payload[j], 1, -1)
    return payload[j]


def _holds(engine):
    """Upper bound on the beats one engine holds: input, pipeline and output registers, and a
    window's line buffer. An engine taking a beat every ``c`` cycles and handing it on ``L``
    cycles later has at most ``ceil(L / c)`` beats in its pipeline, plus one waiting in its
    output register and one in its input register."""
    if isinstance(engine, StreamFIFO):
        return engine.depth + 2 * engine.pipelined  # a pipelined FIFO's skid buffer holds two more
    if isinstance(engine, ResidualBlock):
        return _holds_all(engine.body) + 2 + engine.skip_depth
    buffered = getattr(engine, "buffer_pixels", None)
    if buffered is not None:
        return buffered + 3
    return math.ceil(engine.latency / engine.cycles_per_item) + 2


def _holds_all(engines):
    return sum(_holds(e) for e in engines)


def skip_depth(body):
    """Depth of the skip FIFO around ``body`` (a list of engines): the beats the body can hold,
    bounded by :func:`_holds` per engine, plus one for the fork's register, and at least 3 so
    that the FIFO takes a beat per cycle."""
    return max(3, _holds_all(body) + 1)


class ResidualBlock(wiring.Component):
    """``o = body(i) + i``: a fork, the body's engines, a skip FIFO and an adder.

    Timing, with the output ready: ``latency = 1 + max(body latency, skip FIFO latency) + 1``
    (fork, the slower path, adder); ``cycles_per_item`` is the body's (per beat, or per image
    when the body scans windows).
    The skip FIFO is ``skip_depth(body)`` deep unless given, so it never throttles the body.

    Parameters
    ----------
    body : list of wiring.Component
        Engines with ``i``/``o`` streams whose formats chain; the first takes the block's input
        format and the last emits the block's element count.
    depth : int, optional
        Skip FIFO depth; :func:`skip_depth` of the body by default.

    Members
    -------
    i : In(stream.Signature(body[0].in_format.shape))
    o : Out(stream.Signature(sum_format(body output, input).shape))

    Raises
    ------
    ValueError
        If the body is empty, its formats do not chain, its output has another element count
        than its input, or ``depth`` is not a positive integer.
    """

    def __init__(self, body, depth=None):
        body = list(body)
        if not body:
            raise ValueError("Body must be a non-empty list of engines, not []")
        self._top = DataflowTop(body)
        in_fmt, body_fmt = self._top.in_format, self._top.out_format
        if body_fmt.count != in_fmt.count:
            raise ValueError(f"Body must output the {in_fmt.count} elements it takes, not {body_fmt.count}")
        if depth is None:
            depth = skip_depth(body)
        if not isinstance(depth, int) or isinstance(depth, bool) or depth < 1:
            raise ValueError(f"Skip depth must be a positive integer, not {depth!r}")
        self._body, self._depth = body, depth
        self._fork = StreamFork(in_fmt)
        self._skip = StreamFIFO(in_fmt, depth)
        self._add = StreamAdd(body_fmt, in_fmt)
        super().__init__({
            "i": In(stream.Signature(in_fmt.shape)),
            "o": Out(stream.Signature(self._add.out_format.shape)),
        })

    body = property(lambda self: tuple(self._body))
    skip_depth = property(lambda self: self._depth)

    # A block built only to read its timing is never elaborated, nor are its parts, made here;
    # marking it unused (lowbit.hw.unused) marks them too.
    @property
    def _MustUse__silence(self):
        return self.__dict__.get("_silenced", False)

    @_MustUse__silence.setter
    def _MustUse__silence(self, value):
        self.__dict__["_silenced"] = value
        for part in (self._top, *self._body, self._fork, self._skip, self._add):
            part._MustUse__silence = value
    in_format = property(lambda self: self._top.in_format)
    out_format = property(lambda self: self._add.out_format)

    @property
    def cycles_per_item(self):
        """Cycles between accepted items when neither side stalls. An item is a beat, or, when
        the body scans windows, a whole image: then the slowest body engine's cycles per image,
        per-beat engines counted once per pixel."""
        scans = [e for e in self._body if hasattr(e, "in_beats_per_image")]
        if not scans:
            return max(self._top.cycles_per_item, self._skip.cycles_per_item)
        pixels = scans[0].in_beats_per_image
        return max(pixels, *(e.cycles_per_item if e in scans else e.cycles_per_item * pixels
                             for e in self._body))

    @property
    def latency(self):
        """Cycles from an input handshake to its output handshake, with the output ready: the
        fork, the slower of the body and the skip FIFO, the adder."""
        return StreamFork.latency + max(self._top.latency, self._skip.latency) + StreamAdd.latency

    def elaborate(self, platform):
        m = Module()
        m.submodules.fork = self._fork
        m.submodules.body = self._top
        m.submodules.skip = self._skip
        m.submodules.add = self._add
        wiring.connect(m, wiring.flipped(self.i), self._fork.i)
        wiring.connect(m, self._fork.a, self._top.i)
        wiring.connect(m, self._fork.b, self._skip.i)
        wiring.connect(m, self._top.o, self._add.a)
        wiring.connect(m, self._skip.o, self._add.b)
        wiring.connect(m, self._add.o, wiring.flipped(self.o))
        return m
