"""An AXI4-Stream top around a network: the port names, reset and byte lanes that Vivado IP
integrator, LiteX and AXI testbenches expect."""

from amaranth.hdl import ClockDomain, ClockSignal, Module, Mux, ResetSignal, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

__all__ = ["AxiStreamTop", "byte_width"]


def byte_width(bits):
    """``bits`` rounded up to whole bytes: AXI4-Stream's ``tdata`` is made of byte lanes."""
    return 8 * -(-bits // 8)


class AxiStreamTop(wiring.Component):
    """A stream network (``i``/``o`` Amaranth streams, one clock domain) behind AXI4-Stream ports.

    Ports: ``aclk``; ``aresetn``, synchronous and active low; the slave ``s_axis_tdata``,
    ``s_axis_tvalid``, ``s_axis_tready`` and ``s_axis_tlast``; the master ``m_axis_tdata``,
    ``m_axis_tvalid``, ``m_axis_tready`` and ``m_axis_tlast``.

    A beat's vector sits in the low bits of ``tdata``, element ``k`` at bits ``[k * b, (k + 1) * b)``
    (``b`` bits per element); the bits above it are ignored on input and zero on output. The
    network counts an image in beats (``in_beats`` of them), so ``s_axis_tlast`` is taken and not
    needed; ``m_axis_tlast`` is high on the last of the ``out_beats`` result beats of each image.
    The timing is the network's: the wrapper adds no register and no cycle.

    Parameters
    ----------
    network : wiring.Component
        With ``i`` and ``o`` stream members, their ``in_format`` and ``out_format``, and
        ``cycles_per_item`` and ``latency`` (a :class:`lowbit.hw.network.DataflowTop`).
    out_beats : int
        Result beats per image.
    """

    def __init__(self, network, out_beats):
        if out_beats < 1:
            raise ValueError(f"Out_beats must be a positive integer, not {out_beats!r}")
        self.network, self.out_beats = network, out_beats
        self.in_bits = network.in_format.width
        self.out_bits = network.out_format.width
        super().__init__({
            "aclk": In(1), "aresetn": In(1),
            "s_axis_tdata": In(byte_width(self.in_bits)), "s_axis_tvalid": In(1),
            "s_axis_tready": Out(1), "s_axis_tlast": In(1),
            "m_axis_tdata": Out(byte_width(self.out_bits)), "m_axis_tvalid": Out(1),
            "m_axis_tready": In(1), "m_axis_tlast": Out(1),
        })

    cycles_per_item = property(lambda self: self.network.cycles_per_item)
    latency = property(lambda self: self.network.latency)

    def elaborate(self, platform):
        m = Module()
        m.domains.sync = ClockDomain("sync")
        m.d.comb += [ClockSignal("sync").eq(self.aclk), ResetSignal("sync").eq(~self.aresetn)]
        m.submodules.network = net = self.network
        m.d.comb += [
            net.i.payload.eq(self.s_axis_tdata[:self.in_bits]),
            net.i.valid.eq(self.s_axis_tvalid),
            self.s_axis_tready.eq(net.i.ready),
            self.m_axis_tdata.eq(net.o.payload),
            self.m_axis_tvalid.eq(net.o.valid),
            net.o.ready.eq(self.m_axis_tready),
        ]
        if self.out_beats == 1:
            m.d.comb += self.m_axis_tlast.eq(1)
        else:  # the result beat of the current image
            index = Signal(range(self.out_beats))
            last = index == self.out_beats - 1
            m.d.comb += self.m_axis_tlast.eq(last)
            with m.If(net.o.valid & self.m_axis_tready):
                m.d.sync += index.eq(Mux(last, 0, index + 1))
        return m
