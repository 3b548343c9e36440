"""The board top: a compiled network behind a UART, talking the framed protocol of
:mod:`lowbit.boards.protocol` (sync byte, length, CRC-16, error answers, a window of images in
flight) at ``baud`` bits per second, 8N1, on the board's ``uart`` resource.

The network is the build's Verilog (``lowbit_top.v``) instantiated as is inside
:class:`lowbit.boards.link.LinkCore`, with its AXI4-Stream ports or its native ones. By default it
runs on the board's default clock (12 MHz on iCEBreaker, 25 MHz on ULX3S). Everything is held in
reset for the first 15 cycles after configuration, and follows the platform's reset where it has
one (ECP5 platforms have none); a host that finds the board silent sends its images again.

With ``network_mhz``, the network runs on its own clock from the FPGA's PLL
(:mod:`lowbit.boards.pll`), while the UART, framing and CRC stay on the oscillator; bytes cross
between the two through the link's byte crossings, and the network is held in reset until the
PLL locks. On iCE40 the PLL is ``SB_PLL40_2_PAD``: the iCEBreaker's 12 MHz pin (35) is the PLL's
own input pad, which then feeds nothing else (``SB_PLL40_CORE`` cannot be placed beside a buffer
on it), so the oscillator's clock is taken from the PLL's pass-through output. On ECP5 it is
``EHXPLLL``, fed from the buffered oscillator pin.
"""

import math

from amaranth.hdl import ClockDomain, ClockSignal, DomainRenamer, Elaboratable, Module, ResetSignal, Signal
from amaranth.lib import io
from amaranth.vendor import SiliconBluePlatform

from lowbit.core.errors import LowbitError

from .link import MIN_DIVISOR, LinkCore
from .pll import find_pll, pll_instance
from .uart import check_positive

__all__ = ["UartTop", "NETWORK_CLOCK"]

# The name of the network's clock net in the placed design.
NETWORK_CLOCK = "network_clk"


class UartTop(Elaboratable):
    """A build's network behind a UART on a board (see the module docstring).

    Parameters
    ----------
    build : lowbit.compiler.build.Build
    baud : int
        Serial rate; the bit time is the board's default clock divided by it, rounded, and must
        be at least :data:`lowbit.boards.link.MIN_DIVISOR` cycles.
    network_mhz : float, optional
        The network's clock, made by the PLL (the nearest its dividers give; see
        :func:`lowbit.boards.pll.find_pll`). By default the network runs on the oscillator.

    Members
    -------
    link : LinkCore
        Made in ``elaborate()``: the divisor needs the board's clock.
    pll : lowbit.boards.pll.PllSetting or None
        Made in ``elaborate()`` with ``network_mhz``.
    network_clock : Signal or None
        The network's clock, named :data:`NETWORK_CLOCK` (nextpnr reports its fmax by that name).
    """

    def __init__(self, build, baud=115200, *, network_mhz=None):
        check_positive("Baud rate", baud)
        if network_mhz is not None and (isinstance(network_mhz, bool) or not isinstance(network_mhz, (int, float))
                                        or not math.isfinite(network_mhz) or network_mhz <= 0):
            raise ValueError(f"Network clock must be a positive number of MHz, not {network_mhz!r}")
        self.build, self.baud, self.network_mhz = build, baud, network_mhz
        self.verilog = build.verilog()
        self.link = self.pll = self.network_clock = None

    def elaborate(self, platform):
        m = Module()
        divisor = round(platform.default_clk_frequency / self.baud)
        if divisor < MIN_DIVISOR:
            raise LowbitError(f"{self.baud} baud is too fast for the board's {platform.default_clk_frequency / 1e6:g} "
                              f"MHz clock: a bit needs at least {MIN_DIVISOR} cycles",
                              f"use at most {int(platform.default_clk_frequency // MIN_DIVISOR)} baud")
        crossing = self.network_mhz is not None
        self.link = LinkCore.for_build(self.build, divisor=divisor, verilog=self.verilog, crossing=crossing)
        # Raw ports for every subsignal (some boards add rts/dtr); only rx and tx are buffered.
        uart_resource = platform.lookup("uart", 0)
        uart = platform.request("uart", 0, dir={sub.name: "-" for sub in uart_resource.ios})
        m.submodules.rx_buffer = rx_buffer = io.Buffer("i", uart.rx)
        m.submodules.tx_buffer = tx_buffer = io.Buffer("o", uart.tx)
        platform.add_file(f"{self.link.top}.v", self.verilog)

        if crossing:
            self._clocks(m, platform)
        # The link's reset: held for the first cycles after configuration, and following the
        # platform's reset where it has one (ECP5 platforms make ``sync`` reset-less). iCE40 block
        # RAMs read as zero for about 3 us after configuration, which the platform's own ``sync``
        # waits out (15 us); with the PLL's clocks, ``sync`` is ours and this count waits instead.
        por_cycles = max(15, math.ceil(15e-6 * platform.default_clk_frequency)) if crossing else 15
        por = Signal(range(por_cycles + 1), init=por_cycles)
        with m.If(por != 0):
            m.d.sync += por.eq(por - 1)
        m.domains.link = ClockDomain("link")
        m.d.comb += [ClockSignal("link").eq(ClockSignal()),
                     ResetSignal("link").eq((por != 0) | ResetSignal(allow_reset_less=True))]
        m.submodules.link = link = DomainRenamer("link")(self.link)
        m.d.comb += [link.rx.eq(rx_buffer.i), tx_buffer.o.eq(link.tx)]
        if crossing:
            m.d.comb += [link.net_clk.eq(self.network_clock), link.net_hold.eq(~self._locked)]
        return m

    def _clocks(self, m, platform):
        """The oscillator's ``sync`` domain (reset-less: the power-on count resets the link)
        and the PLL's clock, constrained to its frequency so that nextpnr reports its fmax."""
        family = "ice40" if isinstance(platform, SiliconBluePlatform) else getattr(platform, "family", None)
        self.pll = find_pll(family, platform.default_clk_frequency, self.network_mhz * 1e6)
        # Kept, so that the net keeps this name through synthesis and its constraint finds it;
        # nextpnr would otherwise derive one from the PLL's setting.
        self.network_clock, self._locked = Signal(name=NETWORK_CLOCK, attrs={"keep": 1}), Signal()
        oscillator = Signal()
        clk_pin = platform.request(platform.default_clk, 0, dir="-")
        if family == "ice40":
            m.submodules.pll = pll_instance(self.pll, clk_in=clk_pin.io, clk_out=self.network_clock,
                                            lock=self._locked, ref_out=oscillator)
        else:
            m.submodules.clk_buffer = clk_buffer = io.Buffer("i", clk_pin)
            m.d.comb += oscillator.eq(clk_buffer.i)
            m.submodules.pll = pll_instance(self.pll, clk_in=oscillator, clk_out=self.network_clock,
                                            lock=self._locked)
        m.domains.sync = ClockDomain("sync", reset_less=True)
        m.d.comb += ClockSignal("sync").eq(oscillator)
        platform.add_clock_constraint(self.network_clock, float(self.pll.achieved_hz))
