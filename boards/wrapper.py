"""The board top: a compiled network behind a UART, so a board runs it from any serial terminal.

Protocol (8N1, ``baud`` bits per second, default 115200, on the board's ``uart`` resource):

- The host sends one input vector as ``ceil(in_bits / 8)`` bytes, least significant byte first:
  bit ``j`` of the network's input payload is bit ``j % 8`` of byte ``j // 8``. The bits above
  ``in_bits`` in the last byte are ignored. The payload is packed as in
  :class:`lowbit.hw.payload.VectorFormat` (``manifest.json``, ``ports.i``).
- When the last byte of a vector arrives it is handed to the network (``i`` stream).
- The network's result (``o`` stream, ``ports.o`` of the manifest) is sent back as
  ``ceil(out_bits / 8)`` bytes, least significant byte first, the top bits of the last byte zero.
- One vector may be in flight: send the next vector after the previous result has arrived.
  Bytes are counted from power-up; a host that loses count sends ``in_bytes`` bytes of anything,
  discards what comes back, and starts again. The network's ``rst`` is held for the first 15 cycles
  after configuration (and follows the platform's reset where it has one; ECP5 platforms have none).

The network is the build's Verilog (``lowbit_top.v``) instantiated as is, with its AXI4-Stream
ports (``aclk``, ``aresetn``, ``s_axis_*``, ``m_axis_*``) or its native ones (``clk``, ``rst``,
``i__payload``, ``i__valid``, ``i__ready``, ``o__payload``, ``o__valid``, ``o__ready``); the wrapper
runs it on the board's default clock (12 MHz on iCEBreaker, 25 MHz on ULX3S).
"""

from amaranth.hdl import Cat, ClockSignal, Elaboratable, Instance, Module, ResetSignal, Signal
from amaranth.lib import io

__all__ = ["UartTop", "UartReceiver", "UartTransmitter"]


def _check_positive(name, value):
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} must be a positive integer, not {value!r}")


class UartReceiver(Elaboratable):
    """8N1 receiver: ``data`` is valid for the one cycle ``strobe`` is high.

    ``divisor`` is clock cycles per bit. The start bit is checked at its middle; every later bit is
    sampled one ``divisor`` after the previous one. A frame whose stop bit is low is dropped.

    Members
    -------
    rx : Signal, in
        The serial line (idle high); synchronized here.
    data : Signal(8), out
    strobe : Signal, out
    """

    def __init__(self, divisor):
        _check_positive("Divisor", divisor)
        self.divisor = divisor
        self.rx = Signal(init=1)
        self.data = Signal(8)
        self.strobe = Signal()

    def elaborate(self, platform):
        m = Module()
        sync0, line = Signal(init=1), Signal(init=1)
        m.d.sync += [sync0.eq(self.rx), line.eq(sync0)]
        timer = Signal(range(self.divisor * 3 // 2 + 1))
        bit = Signal(range(10))
        shift = Signal(8)
        m.d.sync += self.strobe.eq(0)
        with m.FSM():
            with m.State("idle"):
                with m.If(~line):
                    m.d.sync += [timer.eq(self.divisor // 2), bit.eq(0)]
                    m.next = "run"
            with m.State("run"):
                with m.If(timer != 0):
                    m.d.sync += timer.eq(timer - 1)
                with m.Else():
                    m.d.sync += [timer.eq(self.divisor - 1), bit.eq(bit + 1)]
                    with m.If(bit == 0):
                        with m.If(line):  # a glitch, not a start bit
                            m.next = "idle"
                    with m.Elif(bit <= 8):
                        m.d.sync += shift.eq(Cat(shift[1:], line))
                    with m.Else():
                        m.d.sync += [self.data.eq(shift), self.strobe.eq(line)]
                        m.next = "idle"
        return m


class UartTransmitter(Elaboratable):
    """8N1 transmitter: takes ``data`` when ``valid & ready``.

    Members
    -------
    tx : Signal, out
    data : Signal(8), in
    valid : Signal, in
    ready : Signal, out
    """

    def __init__(self, divisor):
        _check_positive("Divisor", divisor)
        self.divisor = divisor
        self.tx = Signal(init=1)
        self.data = Signal(8)
        self.valid = Signal()
        self.ready = Signal()

    def elaborate(self, platform):
        m = Module()
        timer = Signal(range(self.divisor))
        frame = Signal(10, init=0x3ff)
        bits_left = Signal(range(11))
        m.d.comb += [self.ready.eq(bits_left == 0), self.tx.eq(frame[0])]
        with m.If(self.valid & self.ready):
            # Start bit, eight data bits LSB first, stop bit.
            m.d.sync += [frame.eq(Cat(0, self.data, 1)), bits_left.eq(10),
                         timer.eq(self.divisor - 1)]
        with m.Elif(bits_left != 0):
            with m.If(timer != 0):
                m.d.sync += timer.eq(timer - 1)
            with m.Else():
                m.d.sync += [frame.eq(Cat(frame[1:], 1)), bits_left.eq(bits_left - 1),
                             timer.eq(self.divisor - 1)]
        return m


class UartTop(Elaboratable):
    """The network of a build behind a UART (see the module docstring for the protocol).

    Parameters
    ----------
    top : str
        Module name of the network in the build's Verilog.
    verilog : str
        The build's Verilog text; added to the platform's sources.
    in_bits, out_bits : int
        Payload widths of the network's input and output streams.
    baud : int
        Serial rate; the bit time is the board's default clock divided by it, rounded.
    ports : {"axi-stream", "native"}
        The network's port style (the build manifest's ``interface.style``).
    """

    def __init__(self, top, verilog, in_bits, out_bits, baud=115200, ports="native"):
        _check_positive("Input width", in_bits)
        _check_positive("Output width", out_bits)
        _check_positive("Baud rate", baud)
        if ports not in ("axi-stream", "native"):
            raise ValueError(f"Ports must be 'axi-stream' or 'native', not {ports!r}")
        self.top, self.verilog = top, verilog
        self.in_bits, self.out_bits, self.baud, self.ports = in_bits, out_bits, baud, ports

    @property
    def in_bytes(self):
        return (self.in_bits + 7) // 8

    @property
    def out_bytes(self):
        return (self.out_bits + 7) // 8

    def elaborate(self, platform):
        m = Module()
        clk_hz = platform.default_clk_frequency
        divisor = max(1, round(clk_hz / self.baud))
        # Raw ports for every subsignal (some boards add rts/dtr); only rx and tx are buffered.
        uart_resource = platform.lookup("uart", 0)
        uart = platform.request("uart", 0, dir={sub.name: "-" for sub in uart_resource.ios})
        m.submodules.rx_buffer = rx_buffer = io.Buffer("i", uart.rx)
        m.submodules.tx_buffer = tx_buffer = io.Buffer("o", uart.tx)
        platform.add_file(f"{self.top}.v", self.verilog)

        m.submodules.rx = rx = UartReceiver(divisor)
        m.submodules.tx = tx = UartTransmitter(divisor)
        m.d.comb += [rx.rx.eq(rx_buffer.i), tx_buffer.o.eq(tx.tx)]

        # Input: bytes shift in from the top, so after in_bytes bytes the first one is lowest.
        in_shift = Signal(self.in_bytes * 8)
        in_count = Signal(range(self.in_bytes + 1))
        in_valid, in_ready = Signal(), Signal()
        with m.If(rx.strobe):
            m.d.sync += in_shift.eq(Cat(in_shift[8:], rx.data))
            with m.If(in_count == self.in_bytes - 1):
                m.d.sync += [in_count.eq(0), in_valid.eq(1)]
            with m.Else():
                m.d.sync += in_count.eq(in_count + 1)
        with m.If(in_valid & in_ready):
            m.d.sync += in_valid.eq(0)

        # Output: a result is taken only when the previous one has been sent completely.
        out_payload, out_valid, out_ready = Signal(self.out_bytes * 8), Signal(), Signal()
        out_shift = Signal(self.out_bytes * 8)
        out_left = Signal(range(self.out_bytes + 1))
        m.d.comb += [out_ready.eq(out_left == 0), tx.data.eq(out_shift[:8]),
                     tx.valid.eq(out_left != 0)]
        with m.If(out_valid & out_ready):
            m.d.sync += [out_shift.eq(out_payload), out_left.eq(self.out_bytes)]
        with m.Elif(tx.valid & tx.ready):
            m.d.sync += [out_shift.eq(out_shift >> 8), out_left.eq(out_left - 1)]

        # The network's reset: held for the first cycles after configuration, and following the
        # platform's reset where it has one (ECP5 platforms make ``sync`` reset-less).
        por = Signal(4, init=15)
        with m.If(por != 0):
            m.d.sync += por.eq(por - 1)
        network_rst = Signal()
        m.d.comb += network_rst.eq((por != 0) | ResetSignal(allow_reset_less=True))

        if self.ports == "axi-stream":  # tdata is whole bytes already; the network counts beats
            m.submodules.network = Instance(
                self.top,
                i_aclk=ClockSignal(), i_aresetn=~network_rst,
                i_s_axis_tdata=in_shift, i_s_axis_tvalid=in_valid, o_s_axis_tready=in_ready, i_s_axis_tlast=0,
                o_m_axis_tdata=out_payload, o_m_axis_tvalid=out_valid, i_m_axis_tready=out_ready,
            )
        else:
            m.submodules.network = Instance(
                self.top,
                i_clk=ClockSignal(), i_rst=network_rst,
                i_i__payload=in_shift[:self.in_bits], i_i__valid=in_valid, o_i__ready=in_ready,
                o_o__payload=out_payload[:self.out_bits], o_o__valid=out_valid, i_o__ready=out_ready,
            )
        return m
