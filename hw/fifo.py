"""A stream FIFO between two engines, to absorb the bursts of one and the stalls of the other."""

from amaranth.hdl import Module, Value
from amaranth.lib import fifo, stream, wiring
from amaranth.lib.wiring import In, Out

from .payload import VectorFormat
from .skid import SkidBuffer

__all__ = ["StreamFIFO"]


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
        logic of the queue's. Two more payloads held, one more cycle of latency.

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
