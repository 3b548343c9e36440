"""A stream FIFO between two engines, to absorb the bursts of one and the stalls of the other."""

from amaranth.hdl import Elaboratable, Module, Mux, Signal, Value
from amaranth.lib import fifo, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from .payload import VectorFormat
from .skid import SkidBuffer

__all__ = ["StreamFIFO", "FlaggedQueue"]


class StreamFIFO(wiring.Component):
    """First in, first out queue of ``depth`` payloads with stream ports.

    Built on :class:`amaranth.lib.fifo.SyncFIFOBuffered`, whose output is a register and whose
    storage is a memory with a synchronous read port, so it maps to block RAM.

    Timing, with neither side stalling: ``latency = 2`` cycles from an input handshake to its
    output handshake through an empty queue (1 for ``depth = 1``). ``cycles_per_item = 1`` for
    ``depth >= 3``; a queue of 1 or 2 entries takes a new entry only every other cycle
    (``cycles_per_item = 2``), since the input is not ready while its one memory word or
    register is full. When the output stalls, exactly ``depth`` payloads are taken in.

    Parameters
    ----------
    fmt : VectorFormat
        The payload format of both ports.
    depth : int
        Entries held.
    pipelined : bool
        Take payloads through a skid buffer (:class:`~lowbit.hw.skid.SkidBuffer`) in front of
        the queue, so that ``i.ready`` is a register: the engine in front then stalls on no
        logic of the queue's. Two more payloads held, one more cycle of latency. The queue
        then keeps its full and empty flags in registers (:class:`FlaggedQueue`).

    Members
    -------
    i : In(stream.Signature(fmt.shape))
        Payloads in.
    o : Out(stream.Signature(fmt.shape))
        The same payloads, in order.

    Raises
    ------
    TypeError
        If ``fmt`` is not a VectorFormat or ``depth`` is not an integer.
    ValueError
        If ``depth`` is not positive.
    """

    def __init__(self, fmt, depth, *, pipelined=False):
        if not isinstance(fmt, VectorFormat):
            raise TypeError(f"Format must be a VectorFormat, not {fmt!r}")
        if not isinstance(depth, int) or isinstance(depth, bool):
            raise TypeError(f"Depth must be a positive integer, not {depth!r}")
        if depth < 1:
            raise ValueError(f"Depth must be a positive integer, not {depth!r}")
        if not isinstance(pipelined, bool):
            raise TypeError(f"Pipelined must be a bool, not {pipelined!r}")
        self._format, self._depth, self._pipelined = fmt, depth, pipelined
        super().__init__({
            "i": In(stream.Signature(fmt.shape)),
            "o": Out(stream.Signature(fmt.shape)),
        })

    format = property(lambda self: self._format)
    in_format = out_format = format
    depth = property(lambda self: self._depth)
    pipelined = property(lambda self: self._pipelined)

    @property
    def latency(self):
        """Cycles from an input handshake to its output handshake through an empty queue."""
        return (1 if self._depth == 1 else 2) + self._pipelined

    @property
    def cycles_per_item(self):
        """Cycles between accepted inputs when neither side stalls."""
        return 2 if self._depth <= 2 else 1

    @property
    def memory_bits(self):
        """Bits in the memory (the output register holds one more payload)."""
        return (self._depth - 1) * self._format.width

    def elaborate(self, platform):
        m = Module()
        if self._pipelined and self._depth >= 2:
            m.submodules.queue = queue = FlaggedQueue(self._format.width, self._depth)
        else:
            m.submodules.queue = queue = fifo.SyncFIFOBuffered(width=self._format.width, depth=self._depth)
        source = self.i
        if self._pipelined:
            m.submodules.skid = skid = SkidBuffer(self._format.width)
            m.d.comb += [skid.i.payload.eq(Value.cast(self.i.payload)), skid.i.valid.eq(self.i.valid),
                         self.i.ready.eq(skid.i.ready)]
            source = skid.o
        m.d.comb += [
            queue.w_data.eq(Value.cast(source.payload)),
            queue.w_en.eq(source.valid),
            source.ready.eq(queue.w_rdy),
            Value.cast(self.o.payload).eq(queue.r_data),
            self.o.valid.eq(queue.r_rdy),
            queue.r_en.eq(self.o.ready),
        ]
        return m


class FlaggedQueue(Elaboratable):
    """:class:`amaranth.lib.fifo.SyncFIFOBuffered` cycle for cycle, with ``w_rdy`` and the
    memory's "not empty" kept in registers.

    The buffered FIFO compares its fill level with the depth to make ``w_rdy``, and that compare
    gates the write enable of every bit of its memory: in a wide queue (144 bits of a CNN's
    window) it was a placed network's critical path. Here the flags are set a cycle ahead, from
    the level and the handshakes, so the write enable is one gate from registers.

    Ports as :class:`~amaranth.lib.fifo.SyncFIFOBuffered`'s: ``w_data``, ``w_en``, ``w_rdy``,
    ``r_data``, ``r_en``, ``r_rdy``. ``depth`` must be at least 2 (the memory holds ``depth - 1``
    entries, the output register one).
    """

    def __init__(self, width, depth):
        if not isinstance(depth, int) or isinstance(depth, bool) or depth < 2:
            raise ValueError(f"Depth must be an integer of at least 2, not {depth!r}")
        self.width, self.depth = width, depth
        self.w_data, self.w_en, self.w_rdy = Signal(width), Signal(), Signal()
        self.r_data, self.r_en, self.r_rdy = Signal(width), Signal(), Signal()

    def elaborate(self, platform):
        m = Module()
        inner = self.depth - 1  # entries in the memory; the output register holds one more
        level = Signal(range(inner + 1))
        not_full, not_empty = Signal(init=1), Signal()
        do_write = self.w_en & not_full
        do_read = not_empty & (~self.r_rdy | self.r_en)  # into the output register

        m.submodules.storage = storage = Memory(shape=self.width, depth=inner, init=[])
        w_port, r_port = storage.write_port(), storage.read_port(domain="sync")
        produce, consume = Signal(range(inner)), Signal(range(inner))
        m.d.comb += [
            self.w_rdy.eq(not_full),
            w_port.addr.eq(produce), w_port.data.eq(self.w_data), w_port.en.eq(do_write),
            r_port.addr.eq(consume), r_port.en.eq(do_read), self.r_data.eq(r_port.data),
        ]
        with m.If(do_write):
            m.d.sync += produce.eq(Mux(produce == inner - 1, 0, produce + 1))
        with m.If(do_read):
            m.d.sync += consume.eq(Mux(consume == inner - 1, 0, consume + 1))
        with m.If(do_write & ~do_read):
            m.d.sync += [level.eq(level + 1), not_empty.eq(1), not_full.eq(level != inner - 1)]
        with m.Elif(do_read & ~do_write):
            m.d.sync += [level.eq(level - 1), not_full.eq(1), not_empty.eq(level != 1)]
        with m.If(do_read):
            m.d.sync += self.r_rdy.eq(1)
        with m.Elif(self.r_en):
            m.d.sync += self.r_rdy.eq(0)
        return m
