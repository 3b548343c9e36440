"""The board top: a compiled network behind a UART, talking the framed protocol of
:mod:`lowbit.boards.protocol` (sync byte, length, CRC-16, error answers, a window of images in
flight) at ``baud`` bits per second, 8N1, on the board's ``uart`` resource.

The network is the build's Verilog (``lowbit_top.v``) instantiated as is inside
:class:`lowbit.boards.link.LinkCore`, with its AXI4-Stream ports or its native ones. It runs on the
board's default clock (12 MHz on iCEBreaker, 25 MHz on ULX3S). Everything is held in reset for the
first 15 cycles after configuration, and follows the platform's reset where it has one (ECP5
platforms have none); a host that finds the board silent sends its images again.
"""

from amaranth.hdl import ClockDomain, ClockSignal, DomainRenamer, Elaboratable, Module, ResetSignal, Signal
from amaranth.lib import io

from lowbit.core.errors import LowbitError

from .link import MIN_DIVISOR, LinkCore
from .uart import check_positive

__all__ = ["UartTop"]


class UartTop(Elaboratable):
    """A build's network behind a UART on a board (see the module docstring).

    Parameters
    ----------
    build : lowbit.compiler.build.Build
    baud : int
        Serial rate; the bit time is the board's default clock divided by it, rounded, and must
        be at least :data:`lowbit.boards.link.MIN_DIVISOR` cycles.
    """

    def __init__(self, build, baud=115200):
        check_positive("Baud rate", baud)
        self.build, self.baud = build, baud
        self.verilog = build.verilog()
        self.link = None  # made in elaborate(): the divisor needs the board's clock

    def elaborate(self, platform):
        m = Module()
        divisor = round(platform.default_clk_frequency / self.baud)
        if divisor < MIN_DIVISOR:
            raise LowbitError(f"{self.baud} baud is too fast for the board's {platform.default_clk_frequency / 1e6:g} "
                              f"MHz clock: a bit needs at least {MIN_DIVISOR} cycles",
                              f"use at most {int(platform.default_clk_frequency // MIN_DIVISOR)} baud")
        self.link = LinkCore.for_build(self.build, divisor=divisor, verilog=self.verilog)
        # Raw ports for every subsignal (some boards add rts/dtr); only rx and tx are buffered.
        uart_resource = platform.lookup("uart", 0)
        uart = platform.request("uart", 0, dir={sub.name: "-" for sub in uart_resource.ios})
        m.submodules.rx_buffer = rx_buffer = io.Buffer("i", uart.rx)
        m.submodules.tx_buffer = tx_buffer = io.Buffer("o", uart.tx)
        platform.add_file(f"{self.link.top}.v", self.verilog)

        # The link's reset: held for the first cycles after configuration, and following the
        # platform's reset where it has one (ECP5 platforms make ``sync`` reset-less).
        por = Signal(4, init=15)
        with m.If(por != 0):
            m.d.sync += por.eq(por - 1)
        m.domains.link = ClockDomain("link")
        m.d.comb += [ClockSignal("link").eq(ClockSignal()),
                     ResetSignal("link").eq((por != 0) | ResetSignal(allow_reset_less=True))]
        m.submodules.link = link = DomainRenamer("link")(self.link)
        m.d.comb += [link.rx.eq(rx_buffer.i), tx_buffer.o.eq(link.tx)]
        return m
