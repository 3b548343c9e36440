"""8N1 UART receiver and transmitter, ``divisor`` clock cycles per bit."""

from amaranth.hdl import Cat, Elaboratable, Module, Signal

__all__ = ["UartReceiver", "UartTransmitter", "check_positive"]


def check_positive(name, value):
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
        check_positive("Divisor", divisor)
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
        check_positive("Divisor", divisor)
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
