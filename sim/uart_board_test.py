"""The bridge between a TCP socket and the simulated board's serial line (see
:mod:`lowbit.sim.uart_board`), with the wire's fault injection. It runs inside the simulator on
the job of :class:`lowbit.sim.uart_board.SimulatedBoard` and ends when the client closes the socket.
"""

import random
import select
import socket

import cocotb

from lowbit.boards import protocol as p
from lowbit.core.files import atomic_write_text

from .job import job_results
from .stream import CycleClock

# Wake-ups: every WAKE_BYTES byte times; after IDLE_WAKES wake-ups with no byte moving, also wait
# for the socket for a moment, so that an idle simulation does not spin.
WAKE_BYTES = 8
IDLE_WAKES = 64


class Wire:
    """One direction of the serial line. Frames are held until whole, then a ``rate`` share of
    those of a ``targets`` type get one fault of ``kinds``; ``delivered`` counts the bytes passed
    on, so offsets are the receiver's. :meth:`settled` gives the faults that changed what their
    receiver got."""

    def __init__(self, direction, lengths, targets, kinds, rng, rate):
        self.direction, self.targets, self.kinds, self.rng, self.rate = direction, targets, kinds, rng, rate
        self.parser = p.FrameParser(lengths)
        self.held = bytearray()  # bytes not passed on yet; held[0] is at parser offset self.base
        self.base = 0
        self.delivered = 0
        self.faults = []
        self.originals = []  # each fault's frame as it was sent, and where its receiver's last whole frame ended
        self.whole_end = 0  # receiver's offset after the last frame passed on undamaged
        self.stream = bytearray()  # every byte passed on
        self.resets = []  # offsets to reset the board before, not yet handed to the harness

    def deliver(self, data):
        """The bytes to pass on now that ``data`` came."""
        self.held += data
        out = bytearray()
        for event in self.parser.feed(data):
            if isinstance(event, p.Frame):
                out += self._take(event.start - self.base)  # bytes in no frame pass as they are
                frame = bytearray(self._take(event.end - event.start))
                damaged = event.kind in self.targets and self.rng.random() < self.rate
                if damaged:
                    self._damage(frame, event, self.delivered + len(out))
                out += frame
                if not damaged:
                    self.whole_end = self.delivered + len(out)
        out += self._take(self.parser.decided - self.base)
        self.delivered += len(out)
        self.stream += out
        return bytes(out)

    def _take(self, n):
        chunk = bytes(self.held[:n])
        del self.held[:n]
        self.base += n
        return chunk

    def _damage(self, frame, event, start):
        self.originals.append((bytes(frame), self.whole_end))
        kind = self.rng.choice(self.kinds)
        if kind == "reset":  # between two bytes of the frame: after SYNC, before the last byte
            at = self.rng.randrange(1, len(frame))
            self.resets.append(start + at)
        else:
            at = self.rng.randrange(len(frame))
            if kind == "flip":
                frame[at] ^= 1 << self.rng.randrange(8)
            else:
                del frame[at]
        self.faults.append({"kind": kind, "direction": self.direction, "frame": event.kind, "seq": event.seq,
                            "at": start + at, "span": [start, start + len(frame)]})

    def settled(self):
        """The faults that changed what their receiver got.

        A dropped byte pulls the next byte into its frame, and when that byte is the one dropped
        (the next frame's SYNC after a run of SYNC values, or the next frame's second byte after
        that frame lost its SYNC too) the frame arrives as it was sent: no fault of it. Its
        receiver takes it whole, next frame's byte included, so the next frame's damage is counted
        from the byte after it. Likewise a dropped SYNC after a SYNC value in no whole frame (the end
        of a frame cut short by a reset, or of a damaged one): the frame arrives as sent, a byte
        early, and a damaged frame before it is counted up to that byte.
        """
        faults, intact_ends, early_starts = [], {}, []
        for fault, (original, whole_end) in zip(self.faults, self.originals):
            lo = fault["span"][0]
            if fault["kind"] == "drop" and self.stream[lo:lo + len(original)] == original:
                intact_ends[lo] = lo + len(original)
            elif fault["kind"] == "drop" and lo > whole_end and self.stream[lo - 1:lo - 1 + len(original)] == original:
                early_starts.append(lo - 1)
            else:
                faults.append({**fault, "span": list(fault["span"])})
        for fault in faults:
            for lo, end in intact_ends.items():
                if lo < fault["span"][0] < end:
                    fault["span"][0] = end
            for start in early_starts:
                if fault["span"][0] < start < fault["span"][1]:
                    fault["span"][1] = start
        return faults


@cocotb.test()
async def uart_board(dut):
    with job_results() as (job, results):
        ring, log_depth = 1 << job["ring_bits"], 1 << job["log_bits"]
        clock = CycleClock(dut.clk, job["oscillator_ns"])
        dut.h2b_wr.value = 0
        dut.reset_at.value = 0
        dut.reset_req.value = 0
        clock.start()
        if job["network_period_ns"] is not None:  # the network's own clock, unrelated to the oscillator
            from cocotb.clock import Clock

            Clock(dut.net_clk, round(job["network_period_ns"] * 1000), unit="ps").start(start_high=False)
        h2b_mem = [dut.h2b_mem[k] for k in range(ring)]
        b2h_mem = [dut.b2h_mem[k] for k in range(ring)]
        log_mem = [dut.log_mem[k] for k in range(log_depth)]
        rng = random.Random(f"{job['seed']}-faults")
        to_board = Wire("to_board", {p.IMAGE: job["image_bytes"], p.INFO: 0}, {p.IMAGE},
                        ("flip", "drop", "reset"), rng, job["fault_rate"])
        to_host = Wire("to_host", {p.RESULT: job["result_bytes"], p.INFO_REPLY: p.INFO_BYTES, p.ERROR: 1},
                       {p.RESULT, p.INFO_REPLY, p.ERROR}, ("flip", "drop"), rng, job["fault_rate"])

        server = socket.create_server(("127.0.0.1", 0))
        server.settimeout(job["accept_seconds"])
        atomic_write_text(job["port_file"], str(server.getsockname()[1]))
        conn, _ = server.accept()
        server.close()
        conn.setblocking(False)

        wake = WAKE_BYTES * 10 * job["divisor"]
        h2b_wr = b2h_rd = log_rd = resets_asked = host_got = 0
        queue = bytearray()  # bytes for the board not in the ring yet
        taken = []
        idle = 0
        while True:
            if idle >= IDLE_WAKES:
                select.select([conn], [], [], 0.01)
            try:
                data = conn.recv(65536)
            except BlockingIOError:
                data = None
            if data == b"":  # the client closed its port: the run is over
                break
            if data:
                queue += to_board.deliver(data)
            sent = int(dut.h2b_sent.value)
            # Never write past a reset not handed to the harness yet, so that none is overtaken.
            limit = min(ring - (h2b_wr - sent), (to_board.resets[0] - h2b_wr) if to_board.resets else len(queue))
            if queue and limit > 0:
                for b in queue[:limit]:
                    h2b_mem[h2b_wr % ring].value = b
                    h2b_wr += 1
                del queue[:limit]
                dut.h2b_wr.value = h2b_wr
            if to_board.resets and resets_asked == int(dut.resets_done.value):
                dut.reset_at.value = to_board.resets.pop(0)
                resets_asked += 1
                dut.reset_req.value = resets_asked
            await clock.advance(wake)
            b2h_wr = int(dut.b2h_wr.value)
            out = None
            if b2h_wr != b2h_rd:
                out = to_host.deliver(bytes(int(b2h_mem[k % ring].value) for k in range(b2h_rd, b2h_wr)))
                b2h_rd = b2h_wr
                conn.setblocking(True)
                try:
                    conn.sendall(out)
                except OSError:
                    break
                host_got += len(out)
                conn.setblocking(False)
            log_wr = int(dut.log_wr.value)
            for k in range(log_rd, log_wr):
                v = int(log_mem[k % log_depth].value)
                taken.append([v >> 32, v & 0xFFFFFFFF])
            log_rd = log_wr
            idle = 0 if (data or out or queue) else idle + 1
        conn.close()
        sent, resets_done = int(dut.h2b_sent.value), int(dut.resets_done.value)
        # Faults that reached their receiver: the stream ended before the others.
        to_board_faults = to_board.settled()
        resets = [f for f in to_board_faults if f["kind"] == "reset"][:resets_done]
        faults = [f for f in to_board_faults if f["kind"] != "reset" and f["at"] < sent] + resets + \
            [f for f in to_host.settled() if f["at"] < host_got]
        results.update({
            "faults": faults, "board_taken": taken, "bytes_to_board": sent, "bytes_to_host": host_got,
            "board_bytes_received": int(dut.rx_bytes.value), "resets": resets_done,
            "framing_errors": int(dut.framing_errors.value), "cycles": int(dut.cycle.value),
        })
