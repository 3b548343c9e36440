"""A byte crossing between two unrelated clocks, whose both sides see only registers.

The board's link crosses a byte at a time between the oscillator (UART, framing) and the
network's clock from the PLL, at the UART's pace: one byte per ten bit times. An asynchronous FIFO
is more than that needs and slower than the network's clock can afford: on iCE40, the read side
of Amaranth's ``AsyncFIFO`` compares the Gray-coded pointers, steps its own and reads its memory in
one cycle, and placed at 41 to 47 MHz beside a network that reaches 60.

Here one byte is in flight at a time, handed over by toggles (a two-phase handshake):

- the writer holds the byte in a register and flips ``req``;
- the reader sees ``req`` through two synchronizer flip-flops, copies the byte (settled for two
  of its cycles by then) into its own register, and offers it;
- once the byte is read, the reader flips ``ack``, which the writer sees through two flip-flops of
  its own, and may write again.

Every ``*_rdy`` and ``r_data`` is a register or an equality of two, so nothing but a register lies
between the two clocks, and each side's logic is a level or two deep. A byte takes about three
cycles of each clock.

The ports are those of :class:`amaranth.lib.fifo.AsyncFIFO` that the link uses.
"""

from amaranth.hdl import Elaboratable, Module, Signal
from amaranth.lib.cdc import FFSynchronizer

__all__ = ["ByteCrossing"]


class ByteCrossing(Elaboratable):
    """One byte at a time from ``w_domain`` to ``r_domain``.

    Parameters
    ----------
    width : int
        Bits of a word (8 for bytes).
    w_domain, r_domain : str
        The writer's and the reader's clock domains.

    Members
    -------
    w_data, w_en : Signal, in the writer's domain
        A word is taken on a cycle with ``w_en`` and ``w_rdy`` high.
    w_rdy : Signal
        The last word has been read: a new one may be written.
    r_data, r_rdy : Signal, in the reader's domain
        A word waits; it is read on a cycle with ``r_en`` high.
    r_en : Signal
    """

    def __init__(self, width, *, w_domain, r_domain):
        if not isinstance(width, int) or isinstance(width, bool) or width < 1:
            raise ValueError(f"Width must be a positive integer, not {width!r}")
        self.width, self._w, self._r = width, w_domain, r_domain
        self.w_data, self.w_en, self.w_rdy = Signal(width), Signal(), Signal()
        self.r_data, self.r_en, self.r_rdy = Signal(width), Signal(), Signal()

    def elaborate(self, platform):
        m = Module()
        held = Signal(self.width)  # the writer's copy, steady from its req flip until the ack
        req, ack = Signal(), Signal()
        req_seen, ack_seen = Signal(), Signal()  # each flip as the other side sees it
        taken = Signal()  # the reader's copy of req for the last word it took
        m.submodules.ack_sync = FFSynchronizer(ack, ack_seen, o_domain=self._w)
        m.submodules.req_sync = FFSynchronizer(req, req_seen, o_domain=self._r)

        m.d.comb += self.w_rdy.eq(req == ack_seen)
        with m.If(self.w_en & self.w_rdy):
            m.d[self._w] += [held.eq(self.w_data), req.eq(~req)]

        with m.If(req_seen != taken):  # a new word, settled for the synchronizer's two cycles
            m.d[self._r] += [self.r_data.eq(held), self.r_rdy.eq(1), taken.eq(req_seen)]
        with m.If(self.r_en & self.r_rdy):
            m.d[self._r] += [self.r_rdy.eq(0), ack.eq(~ack)]
        return m
