"""The board side of the framed serial protocol (:mod:`lowbit.boards.protocol`): a build's network
behind a UART, as one clock domain with the serial lines as its only ports, or with the network in
a clock domain of its own.

Data path::

    rx -> UartReceiver -> frame parser -> image memory (2 slots) -> beat streamer -> network
    tx <- UartTransmitter <- frame sender <- result register <- network

- The parser checks each frame's header and CRC. An image goes into a free slot of the image
  memory as it arrives and is handed on only when its CRC is good, so the network never sees a
  damaged image. A bad frame frees its slot and is answered with ``ERROR``.
- The streamer cuts a stored image into the network's input beats, one bit per cycle, and
  queues the image's sequence number.
- The network's result beats fill the result register; the sender sends it as ``RESULT`` with
  the oldest queued sequence number (the network keeps order), and sends ``ERROR`` and
  ``INFO_REPLY`` frames in between.

With ``crossing``, the network and the two ends next to it run in the ``network`` domain, and
bytes cross between the domains through a :class:`~lowbit.boards.crossing.ByteCrossing` each way,
with a :class:`~lowbit.hw.skid.RegisterSlice` on the network's beats and a
:class:`~lowbit.hw.skid.SkidBuffer` on its results::

    link domain (the UART's clock)          |  network domain
    image memory -> feeder ->   ByteCrossing -> beat streamer   -> slice -> network
    sender <- result collector <- ByteCrossing <- result register <- skid <- network

Bytes, not beats, cross: a crossing is 8 bits wide whatever the network's ports.
"""

import contextlib
import functools
import operator

from amaranth.hdl import (Array, Cat, ClockDomain, ClockSignal, Const, DomainRenamer, Instance, Module, Mux,
                          ResetSignal, Signal)
from amaranth.lib import wiring
from amaranth.lib.cdc import ResetSynchronizer
from amaranth.lib.fifo import SyncFIFOBuffered
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from lowbit.hw.skid import RegisterSlice, SkidBuffer

from . import protocol as p
from .crossing import ByteCrossing
from .uart import UartReceiver, UartTransmitter, check_positive

__all__ = ["LinkCore", "MIN_DIVISOR"]

# The receiver samples each bit at its middle, which needs a few cycles per bit.
MIN_DIVISOR = 4
# Images between the streamer and the result register: the network's own buffering.
SEQ_QUEUE_DEPTH = 16


def _crc16_taps():
    """For each bit of the CRC after one byte, the bits of (crc, byte) it is the XOR of: the CRC is
    linear, so one byte is one layer of XORs (a loop of 8 shifts would nest 8 multiplexers)."""
    bits = [{k} for k in range(16)]  # crc bit k
    for k in range(8):
        bits[8 + k] = bits[8 + k] ^ {16 + k}  # byte bit k enters at crc bit 8 + k
    for _ in range(8):
        top = bits[15]
        bits = [set()] + bits[:15]
        for k in (0, 5, 12):  # 0x1021
            bits[k] = bits[k] ^ top
    return [sorted(b) for b in bits]


_CRC16_TAPS = _crc16_taps()


def crc16_step(crc, byte):
    """CRC-16/CCITT-FALSE of ``crc`` followed by ``byte``, as logic (one byte per cycle)."""
    source = Cat(crc, byte)
    return Cat(*[functools.reduce(operator.xor, [source[k] for k in taps]) for taps in _CRC16_TAPS])


class LinkCore(wiring.Component):
    """A network (module ``top`` of the build's Verilog, added to the design separately) behind the
    framed serial protocol.

    Parameters
    ----------
    top : str
        The network's module name.
    ports : {"axi-stream", "native"}
        The network's port style.
    in_bits, in_beats, out_bits, out_beats : int
        Payload bits per beat and beats per image of the network's input and output.
    divisor : int
        Clock cycles per serial bit, at least :data:`MIN_DIVISOR`.
    build_id : int
        The 32-bit id reported in ``INFO_REPLY`` (:func:`lowbit.boards.protocol.build_id`).
    crossing : bool
        Run the network in the ``network`` domain, clocked by ``net_clk`` (see the module docstring).

    Members
    -------
    rx : In(1), idle high
    tx : Out(1), idle high
    rx_strobe : Out(1)
        A byte arrived (for test benches that count bytes).
    frame_begin, frame_commit : Out(1)
        A frame's ``SYNC`` was taken; an image frame passed its CRC and was stored.
    net_clk : In(1)
        With ``crossing`` only: the network's clock, of any frequency and phase.
    net_hold : In(1)
        With ``crossing`` only: hold the network domain in reset (a PLL not locked yet). It is
        also held while the link is in reset, so that a reset empties both crossings and the
        network together; the reset leaves it synchronously to ``net_clk``.
    """

    def __init__(self, top, *, ports, in_bits, in_beats, out_bits, out_beats, divisor, build_id, crossing=False):
        for name, value in (("Input width", in_bits), ("Input beats", in_beats), ("Output width", out_bits),
                            ("Output beats", out_beats), ("Divisor", divisor)):
            check_positive(name, value)
        if divisor < MIN_DIVISOR:
            raise ValueError(f"Divisor must be at least {MIN_DIVISOR} cycles per bit, not {divisor}")
        if ports not in ("axi-stream", "native"):
            raise ValueError(f"Ports must be 'axi-stream' or 'native', not {ports!r}")
        self.top, self.ports, self.divisor = top, ports, divisor
        self.in_bits, self.in_beats, self.out_bits, self.out_beats = in_bits, in_beats, out_bits, out_beats
        self.image_bytes = p.payload_bytes(in_beats, in_bits)
        self.result_bytes = p.payload_bytes(out_beats, out_bits)
        if max(self.image_bytes, self.result_bytes) > 0xFFFF:
            raise ValueError(f"An image of {self.image_bytes} bytes or a result of {self.result_bytes} bytes "
                             "does not fit a frame (65535 bytes at most)")
        self.info = p.Info(p.VERSION, p.WINDOW, self.image_bytes, self.result_bytes, build_id)
        if not isinstance(crossing, bool):
            raise TypeError(f"Crossing must be a bool, not {crossing!r}")
        self.crossing = crossing
        members = {"rx": In(1, init=1), "tx": Out(1, init=1), "rx_strobe": Out(1),
                   "frame_begin": Out(1), "frame_commit": Out(1)}
        if crossing:
            members.update({"net_clk": In(1), "net_hold": In(1)})
        super().__init__(members)

    @classmethod
    def for_build(cls, build, *, divisor, verilog=None, crossing=False):
        """The link of a build (:class:`lowbit.compiler.build.Build`); ``verilog``, its text if
        already read, gives the build id."""
        from lowbit.compiler.codegen import out_beats

        m = build.manifest
        return cls(m["top"], ports=build.ports, in_bits=m["ports"]["i"]["payload_bits"],
                   in_beats=m["beats_per_inference"], out_bits=m["ports"]["o"]["payload_bits"],
                   out_beats=out_beats(build.graph()), divisor=divisor,
                   build_id=p.build_id(build.verilog() if verilog is None else verilog), crossing=crossing)

    def elaborate(self, platform):
        m = Module()
        m.submodules.receiver = rx = UartReceiver(self.divisor)
        m.submodules.transmitter = tx = UartTransmitter(self.divisor)
        m.d.comb += [rx.rx.eq(self.rx), self.tx.eq(tx.tx), self.rx_strobe.eq(rx.strobe)]
        m.submodules.seqs = seqs = SyncFIFOBuffered(width=8, depth=SEQ_QUEUE_DEPTH)

        # Control answers (ERROR, INFO_REPLY) wait here for the sender; a second one while one
        # waits is dropped, and the host's timeout covers it.
        ctl = {"valid": Signal(), "kind": Signal(8), "seq": Signal(8), "code": Signal(8)}

        def answer(kind, seq, code=0):
            with m.If(~ctl["valid"]):
                m.d.sync += [ctl["valid"].eq(1), ctl["kind"].eq(kind), ctl["seq"].eq(seq), ctl["code"].eq(code)]

        slot_bits = max(1, (self.image_bytes - 1).bit_length())
        m.submodules.images = images = Memory(shape=8, depth=2 << slot_bits, init=[])
        write, read = images.write_port(), images.read_port()
        full = Array(Signal(name=f"slot{k}_full") for k in range(2))
        slot_seq = Array(Signal(8, name=f"slot{k}_seq") for k in range(2))
        wslot, rslot = Signal(), Signal()

        self._parser(m, rx, write, slot_bits, full, slot_seq, wslot, answer)
        if self.crossing:
            net = self._network_domain(m)
            m.submodules.to_network = to_net = ByteCrossing(8, w_domain="sync", r_domain=net)
            m.submodules.to_link = to_link = ByteCrossing(8, w_domain=net, r_domain="sync")
            self._feeder(m, read, full, slot_seq, rslot, seqs, to_net)
            in_valid, in_ready, in_last, beat = self._fifo_streamer(m, to_net, domain=net)
            net_result, net_full, out_valid, out_ready, out_data = self._results(m, domain=net)
            self._result_bytes_out(m, net_result, net_full, to_link, domain=net)
            result, result_full = self._result_bytes_in(m, to_link)
            # The network is placed apart from the link: a register slice on its beats and a skid
            # buffer on its results leave only registers at either end of each path between them.
            in_valid, in_ready, in_last, beat = self._beat_slice(m, net, in_valid, in_ready, in_last, beat)
            out_valid, out_ready, out_data = self._result_skid(m, net, out_valid, out_ready, out_data)
        else:
            net = "sync"
            in_valid, in_ready, in_last, beat = self._streamer(m, read, full, slot_seq, rslot, seqs)
            result, result_full, out_valid, out_ready, out_data = self._results(m)
        self._sender(m, tx, ctl, seqs, result, result_full)

        if self.ports == "axi-stream":
            m.submodules.network = Instance(
                self.top, i_aclk=ClockSignal(net), i_aresetn=~ResetSignal(net),
                i_s_axis_tdata=Cat(beat, Const(0, -self.in_bits % 8)), i_s_axis_tvalid=in_valid,
                o_s_axis_tready=in_ready, i_s_axis_tlast=in_last,
                o_m_axis_tdata=out_data, o_m_axis_tvalid=out_valid, i_m_axis_tready=out_ready,
                o_m_axis_tlast=Signal(name="out_last"))  # the result register counts beats itself
        else:
            m.submodules.network = Instance(
                self.top, i_clk=ClockSignal(net), i_rst=ResetSignal(net),
                i_i__payload=beat, i_i__valid=in_valid, o_i__ready=in_ready,
                o_o__payload=out_data[:self.out_bits], o_o__valid=out_valid, i_o__ready=out_ready)
        return m

    @staticmethod
    def _beat_slice(m, domain, in_valid, in_ready, in_last, beat):
        """A :class:`lowbit.hw.skid.RegisterSlice` in ``domain`` on the beats to the network (a
        beat every other cycle is more than the bit-serial streamer makes): the ``(valid, ready,
        last, beat)`` signals of its network side."""
        piece = m.submodules.slice_to_network = DomainRenamer({"sync": domain})(RegisterSlice(len(beat) + 1))
        net_valid, net_ready, net_last, net_beat = Signal(), Signal(), Signal(), Signal(len(beat))
        m.d.comb += [
            piece.i.payload.eq(Cat(beat, in_last)), piece.i.valid.eq(in_valid), in_ready.eq(piece.i.ready),
            Cat(net_beat, net_last).eq(piece.o.payload), net_valid.eq(piece.o.valid), piece.o.ready.eq(net_ready),
        ]
        return net_valid, net_ready, net_last, net_beat

    @staticmethod
    def _result_skid(m, domain, out_valid, out_ready, out_data):
        """A :class:`lowbit.hw.skid.SkidBuffer` in ``domain`` on the network's results: the
        ``(valid, ready, data)`` signals of its network side."""
        skid = m.submodules.skid_from_network = DomainRenamer({"sync": domain})(SkidBuffer(len(out_data)))
        net_valid, net_ready, net_data = Signal(), Signal(), Signal(len(out_data))
        m.d.comb += [
            skid.i.payload.eq(net_data), skid.i.valid.eq(net_valid), net_ready.eq(skid.i.ready),
            out_data.eq(skid.o.payload), out_valid.eq(skid.o.valid), skid.o.ready.eq(out_ready),
        ]
        return net_valid, net_ready, net_data

    def _parser(self, m, rx, write, slot_bits, full, slot_seq, wslot, answer):
        """Frames in: header, payload into the free slot, CRC; a good image marks its slot full."""
        crc, kind, seq, length = Signal(16), Signal(8), Signal(8), Signal(16)
        count = Signal(slot_bits)
        storing = Signal()  # this image has a slot; otherwise it is counted, then answered BUSY
        gap_limit = p.GAP_BYTE_TIMES * 10 * self.divisor
        gap, abandon = Signal(range(gap_limit + 1)), Signal()
        byte, crc_next = rx.data, crc16_step(crc, rx.data)
        m.d.comb += [write.addr.eq(Cat(count, wslot)), write.data.eq(byte)]
        with m.FSM(name="parser") as fsm:
            with m.State("hunt"):
                with m.If(rx.strobe & (byte == p.SYNC)):
                    m.d.sync += crc.eq(0xFFFF)
                    m.d.comb += self.frame_begin.eq(1)
                    m.next = "type"
            for state, target, following in (("type", kind, "seq"), ("seq", seq, "len_lo")):
                with m.State(state):
                    with m.If(abandon):
                        m.next = "hunt"
                    with m.Elif(rx.strobe):
                        m.d.sync += [target.eq(byte), crc.eq(crc_next)]
                        m.next = following
            with m.State("len_lo"):
                with m.If(abandon):
                    m.next = "hunt"
                with m.Elif(rx.strobe):
                    m.d.sync += [length[:8].eq(byte), crc.eq(crc_next)]
                    m.next = "len_hi"
            with m.State("len_hi"):
                with m.If(abandon):
                    m.next = "hunt"
                with m.Elif(rx.strobe):
                    n = Cat(length[:8], byte)
                    m.d.sync += [crc.eq(crc_next), count.eq(0), storing.eq(~full[wslot])]
                    with m.If(kind == p.IMAGE):
                        with m.If(n == self.image_bytes):
                            m.next = "payload"
                        with m.Else():
                            answer(p.ERROR, seq, p.BAD_LENGTH)
                            m.next = "hunt"
                    with m.Elif(kind == p.INFO):
                        with m.If(n == 0):
                            m.next = "crc_hi"
                        with m.Else():
                            answer(p.ERROR, seq, p.BAD_LENGTH)
                            m.next = "hunt"
                    with m.Else():  # not a frame this side knows: maybe noise
                        m.next = "hunt"
            with m.State("payload"):
                with m.If(abandon):
                    m.next = "hunt"
                with m.Elif(rx.strobe):
                    m.d.sync += [crc.eq(crc_next), count.eq(count + 1)]
                    m.d.comb += write.en.eq(storing)
                    with m.If(count == self.image_bytes - 1):
                        m.next = "crc_hi"
            with m.State("crc_hi"):
                with m.If(abandon):
                    m.next = "hunt"
                with m.Elif(rx.strobe):
                    m.d.sync += crc.eq(crc_next)
                    m.next = "crc_lo"
            with m.State("crc_lo"):
                with m.If(abandon):
                    m.next = "hunt"
                with m.Elif(rx.strobe):
                    with m.If(crc_next != 0):
                        answer(p.ERROR, seq, p.BAD_CRC)
                    with m.Elif(kind == p.INFO):
                        answer(p.INFO_REPLY, seq)
                    with m.Elif(storing):
                        m.d.sync += [full[wslot].eq(1), slot_seq[wslot].eq(seq), wslot.eq(~wslot)]
                        m.d.comb += self.frame_commit.eq(1)
                    with m.Else():
                        answer(p.ERROR, seq, p.BUSY)
                    m.next = "hunt"
        # A frame that stops is dropped, so that the next SYNC starts a frame again.
        with m.If(fsm.ongoing("hunt") | rx.strobe):
            m.d.sync += gap.eq(0)
        with m.Elif(gap == gap_limit):
            m.d.sync += gap.eq(0)
            m.d.comb += abandon.eq(1)
        with m.Else():
            m.d.sync += gap.eq(gap + 1)

    def _streamer(self, m, read, full, slot_seq, rslot, seqs):
        """Stored images out as the network's input beats, least significant bit first."""
        bits = self._beat_bits(m)
        beat, have, sent, byte, left, in_valid, in_ready, total, done, empty = bits
        index = Signal(range(max(2, self.image_bytes + 1)))
        m.d.comb += read.addr.eq(Cat(index[:len(read.addr) - 1], rslot))
        with m.FSM(name="streamer"):
            with m.State("idle"):
                with m.If(full[rslot] & seqs.w_rdy):
                    m.d.comb += [seqs.w_en.eq(1), seqs.w_data.eq(slot_seq[rslot])]
                    m.d.sync += [index.eq(0), sent.eq(0), have.eq(0), left.eq(0), in_valid.eq(0), done.eq(0),
                                 empty.eq(1)]
                    m.next = "address"
            with m.State("address"):  # the memory answers in the next cycle
                m.next = "load"
            with m.State("load"):
                m.d.sync += [byte.eq(read.data), left.eq(8), empty.eq(0), index.eq(index + 1)]
                m.next = "shift"
            with m.State("shift"):
                with self._shift(m, bits, "sync", "address"):
                    m.d.sync += [full[rslot].eq(0), rslot.eq(~rslot)]
                    m.next = "idle"
        return in_valid, in_ready, done, beat

    def _beat_bits(self, m):
        """The signals of a beat streamer: (beat, have, sent, byte, left, in_valid, in_ready, total,
        done, empty). The conditions on the counters are registers set a cycle ahead (the beat
        full: ``in_valid``; the image's bits all taken: ``done``; the byte's bits all taken:
        ``empty``), so that no counter's compare lies between two of the network clock's edges."""
        total = self.in_bits * self.in_beats
        beat = Signal(self.in_bits)
        have = Signal(range(self.in_bits + 1))  # bits of the beat filled
        sent = Signal(range(total + 1))  # bits of the image taken
        byte, left = Signal(8), Signal(range(9))  # the current byte's bits not yet taken
        in_valid, in_ready = Signal(), Signal()
        done, empty = Signal(), Signal(init=1)
        return beat, have, sent, byte, left, in_valid, in_ready, total, done, empty

    @contextlib.contextmanager
    def _shift(self, m, bits, domain, next_byte, offered=None):
        """The body of a streamer's ``shift`` state: a bit a cycle from ``byte`` into the beat, the
        beat offered when full, state ``next_byte`` when the byte runs out; the body of the
        ``with`` runs when the image's last beat is taken. The bits of the last byte beyond the
        image are dropped.

        With ``offered`` (a signal this drives), the beat takes each bit a cycle after the counters
        count it, from registers: its enable, fanned out to every bit of a wide beat, is then a
        flip-flop and shares no logic with the streamer's own. The beat is offered (``offered``)
        from the cycle after ``in_valid``, once its last bit is in."""
        beat, have, sent, byte, left, in_valid, in_ready, total, done, empty = bits
        d = m.d[domain]
        late = offered is not None
        if late:
            shifting, bit, settled = Signal(), Signal(), Signal()
            d += [shifting.eq(0), bit.eq(byte[0]), settled.eq(in_valid)]
            m.d.comb += offered.eq(in_valid & settled)
            with m.If(shifting):
                d += beat.eq(Cat(beat[1:], bit))
        with m.If(in_valid):
            with m.If(in_ready & (offered if late else 1)):
                d += [have.eq(0), in_valid.eq(0)]
                with m.If(done):
                    yield
        with m.Elif(empty):
            m.next = next_byte
        with m.Else():
            d += [byte.eq(byte >> 1), left.eq(left - 1), have.eq(have + 1),
                  sent.eq(sent + 1), in_valid.eq(have == self.in_bits - 1), done.eq(sent == total - 1),
                  empty.eq(left == 1)]
            d += shifting.eq(1) if late else beat.eq(Cat(beat[1:], byte[0]))

    def _feeder(self, m, read, full, slot_seq, rslot, seqs, to_net):
        """Crossing: the stored images' bytes into the ``to_net`` FIFO, each image's sequence
        number queued as it starts; its slot is free once its last byte is in the FIFO."""
        index = Signal(range(max(2, self.image_bytes)))
        m.d.comb += [read.addr.eq(Cat(index[:len(read.addr) - 1], rslot)), to_net.w_data.eq(read.data)]
        with m.FSM(name="feeder"):
            with m.State("idle"):
                with m.If(full[rslot] & seqs.w_rdy):
                    m.d.comb += [seqs.w_en.eq(1), seqs.w_data.eq(slot_seq[rslot])]
                    m.d.sync += index.eq(0)
                    m.next = "address"
            with m.State("address"):  # the memory answers in the next cycle
                m.next = "push"
            with m.State("push"):  # the address holds until the FIFO takes the byte
                with m.If(to_net.w_rdy):
                    m.d.comb += to_net.w_en.eq(1)
                    m.d.sync += index.eq(index + 1)
                    m.next = "address"
                    with m.If(index == self.image_bytes - 1):
                        m.d.sync += [full[rslot].eq(0), rslot.eq(~rslot)]
                        m.next = "idle"

    def _fifo_streamer(self, m, to_net, *, domain):
        """Crossing: bytes from the ``to_net`` FIFO out as the network's input beats. Each image
        takes exactly :attr:`image_bytes` bytes, so the byte count alone marks where images end."""
        bits = self._beat_bits(m)
        beat, have, sent, byte, left, in_valid, in_ready, total, done, empty = bits
        offered = Signal()
        with m.FSM(name="streamer", domain=domain):
            with m.State("load"):
                with m.If(to_net.r_rdy):
                    m.d.comb += to_net.r_en.eq(1)
                    m.d[domain] += [byte.eq(to_net.r_data), left.eq(8), empty.eq(0)]
                    m.next = "shift"
            with m.State("shift"):
                with self._shift(m, bits, domain, "load", offered):
                    m.d[domain] += [sent.eq(0), done.eq(0)]
                    m.next = "load"
        return offered, in_ready, done, beat

    def _results(self, m, domain="sync"):
        """The network's result beats into one register, the first beat lowest."""
        d = m.d[domain]
        result = Signal(self.out_bits * self.out_beats)
        result_full = Signal()
        count = Signal(range(max(2, self.out_beats)))
        out_valid, out_ready = Signal(), Signal()
        out_data = Signal(8 * -(-self.out_bits // 8))
        m.d.comb += out_ready.eq(~result_full)
        with m.If(out_valid & out_ready):
            if self.out_beats == 1:
                d += [result.eq(out_data[:self.out_bits]), result_full.eq(1)]
            else:
                d += [result.eq(Cat(result[self.out_bits:], out_data[:self.out_bits])), count.eq(count + 1)]
                with m.If(count == self.out_beats - 1):
                    d += [count.eq(0), result_full.eq(1)]
        return result, result_full, out_valid, out_ready, out_data

    def _result_bytes_out(self, m, result, result_full, to_link, *, domain):
        """Crossing: a full result register into the ``to_link`` FIFO, lowest byte first, then
        free for the next result."""
        count = Signal(range(max(2, self.result_bytes)))
        m.d.comb += to_link.w_data.eq(result[:8])
        with m.If(result_full & to_link.w_rdy):
            m.d.comb += to_link.w_en.eq(1)
            m.d[domain] += [result.eq(result >> 8), count.eq(count + 1)]
            with m.If(count == self.result_bytes - 1):
                m.d[domain] += [count.eq(0), result_full.eq(0)]

    def _result_bytes_in(self, m, to_link):
        """Crossing: :attr:`result_bytes` bytes from the ``to_link`` FIFO into the register the
        sender sends, the first byte lowest; (register, full)."""
        result = Signal(8 * self.result_bytes)
        result_full = Signal()
        count = Signal(range(max(2, self.result_bytes)))
        with m.If(~result_full & to_link.r_rdy):
            m.d.comb += to_link.r_en.eq(1)
            m.d.sync += [result.eq(Cat(result[8:], to_link.r_data)), count.eq(count + 1)]
            with m.If(count == self.result_bytes - 1):
                m.d.sync += [count.eq(0), result_full.eq(1)]
        return result, result_full

    def _network_domain(self, m):
        """Crossing: the ``network`` domain, clocked by ``net_clk``. Its reset is asserted at once
        and released in step with ``net_clk``; its source is a register of the link's domain, so
        that a glitch of the link's reset logic cannot reach it."""
        m.domains.network = ClockDomain("network", local=True)
        link_reset = Signal(init=1)
        m.d.sync += link_reset.eq(0)  # 1 from the link's reset until the cycle after it ends
        m.d.comb += ClockSignal("network").eq(self.net_clk)
        m.submodules.network_reset = ResetSynchronizer(link_reset | self.net_hold, domain="network")
        return "network"

    def _sender(self, m, tx, ctl, seqs, result, result_full):
        """Frames out: a waiting control answer first, else the next result."""
        payload_len = max(self.result_bytes, p.INFO_BYTES)
        payload = Signal(8 * payload_len)
        kind, seq, length, crc = Signal(8), Signal(8), Signal(16), Signal(16)
        index = Signal(range(p.HEADER_BYTES + payload_len + 3))
        info = Const(int.from_bytes(self.info.encode(), "little"), 8 * p.INFO_BYTES)
        header = Array([Const(p.SYNC, 8), kind, seq, length[:8], length[8:]])
        in_payload = (index >= p.HEADER_BYTES) & (index < p.HEADER_BYTES + length)
        crc_at = p.HEADER_BYTES + length
        byte = Mux(index < p.HEADER_BYTES, header[index[:3]],
                   Mux(in_payload, payload[:8], Mux(index == crc_at, crc[8:], crc[:8])))
        m.d.comb += tx.data.eq(byte)
        with m.FSM(name="sender"):
            with m.State("idle"):
                m.d.sync += [index.eq(0), crc.eq(0xFFFF)]
                with m.If(ctl["valid"]):
                    is_info = ctl["kind"] == p.INFO_REPLY
                    m.d.sync += [kind.eq(ctl["kind"]), seq.eq(ctl["seq"]), ctl["valid"].eq(0),
                                 length.eq(Mux(is_info, p.INFO_BYTES, 1)),
                                 payload.eq(Mux(is_info, info, ctl["code"]))]
                    m.next = "send"
                with m.Elif(result_full & seqs.r_rdy):
                    m.d.comb += seqs.r_en.eq(1)
                    m.d.sync += [kind.eq(p.RESULT), seq.eq(seqs.r_data), length.eq(self.result_bytes),
                                 payload.eq(result), result_full.eq(0)]
                    m.next = "send"
            with m.State("send"):
                m.d.comb += tx.valid.eq(1)
                with m.If(tx.ready):
                    m.d.sync += index.eq(index + 1)
                    with m.If((index != 0) & (index < crc_at)):
                        m.d.sync += crc.eq(crc16_step(crc, byte))
                    with m.If(in_payload):
                        m.d.sync += payload.eq(payload >> 8)
                    with m.If(index == crc_at + 1):
                        m.next = "idle"
