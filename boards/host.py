"""The host side of the framed serial protocol (:mod:`lowbit.boards.protocol`): stream images to a
board, or to its simulation, and collect one checked result per image.

The same code drives a board on ``/dev/ttyUSB0`` and the Verilator board top on
``socket://127.0.0.1:PORT`` (pyserial opens both).
"""

import time
from collections import Counter, deque
from dataclasses import dataclass, field

from lowbit.core.errors import LowbitError

from . import protocol as p

__all__ = ["open_port", "BoardClient", "RunRecord"]


def open_port(url, baud):
    """A pyserial port for a device path or a pyserial URL (``socket://HOST:PORT``)."""
    import serial

    try:
        return serial.serial_for_url(url, baudrate=baud, timeout=0.01, write_timeout=10)
    except (serial.SerialException, ValueError) as e:
        raise LowbitError(f"cannot open serial port {url!r}: {e}",
                          "connect the board and pass its port (ls /dev/ttyUSB* /dev/ttyACM*), check that "
                          "you may use it (the dialout group), or use --sim to run the simulated board") from None


@dataclass
class _Flight:
    """An image the board has not answered yet."""
    index: int
    payload: bytes
    attempts: int = 0
    first_order: int = 0  # send order of its first and its latest frame
    last_order: int = 0
    sent_at: float = 0.0


@dataclass
class RunRecord:
    """What a run saw: the results in image order, and how the link behaved."""
    results: list
    seconds: float
    events: Counter = field(default_factory=Counter)
    taken: list = field(default_factory=list)  # [start, end) of every frame that passed its CRC


class BoardClient:
    """Talks to one board over an open port (``read``, ``write``, ``in_waiting``).

    Parameters
    ----------
    port : serial.Serial
    result_bytes : int
        Result payload length, which the parser requires.
    min_timeout : float
        Seconds before an unanswered image is sent again, at least; the timeout grows to eight
        times the slowest answer seen.
    max_attempts : int
        Frames per image before the run stops with an error.
    """

    def __init__(self, port, *, result_bytes, min_timeout=0.25, max_attempts=50):
        self.port, self.min_timeout, self.max_attempts = port, min_timeout, max_attempts
        self.parser = p.FrameParser({p.RESULT: result_bytes, p.INFO_REPLY: p.INFO_BYTES, p.ERROR: 1})
        self.record = RunRecord([], 0.0)
        self._slowest = 0.0

    @property
    def timeout(self):
        return max(self.min_timeout, 8 * self._slowest)

    def _frames(self):
        """Frames that came since the last call (waiting briefly for the first byte)."""
        data = self.port.read(max(1, self.port.in_waiting))
        frames = []
        for event in self.parser.feed(data):
            if isinstance(event, p.Rejected):
                self.record.events[f"rejected ({event.reason})"] += 1
            else:
                self.record.taken.append([event.start, event.end])
                frames.append(event)
        return frames

    def info(self, attempts=5):
        """The board's ``INFO_REPLY``, asked up to ``attempts`` times."""
        for seq in range(attempts):
            self.port.write(p.encode_frame(p.INFO, seq))
            deadline = time.monotonic() + max(self.timeout, 1.0)
            while time.monotonic() < deadline:
                for f in self._frames():
                    if f.kind == p.INFO_REPLY and f.seq == seq:
                        self._drain()
                        return p.Info.decode(f.payload)
                    self.record.events["frames of an earlier run discarded"] += 1
        raise LowbitError(f"no lowbit board answered on {self.port.name!r} ({attempts} tries)",
                          "program the board with 'lowbit build' and 'lowbit program', check the port and "
                          "the baud rate (--baud)")

    def _drain(self):
        """Discard what still comes until the line is quiet for a timeout: results of an earlier
        run still in the board (answers overtake results), whose sequence numbers would be taken
        for this run's."""
        quiet_since = time.monotonic()
        while time.monotonic() - quiet_since < self.timeout:
            stale = len(self._frames())
            if stale:
                quiet_since = time.monotonic()
                self.record.events["frames of an earlier run discarded"] += stale

    def run(self, payloads, *, window=p.WINDOW, progress=None):
        """Send every image payload, ``window`` at most unanswered; return the :class:`RunRecord`
        with each image's result payload."""
        n = len(payloads)
        results = [None] * n
        waiting = deque(range(n))  # images not sent yet
        again = deque()  # seqs to send again, first
        flights = {}  # seq -> _Flight
        order, next_seq, done = 0, 0, 0
        events = self.record.events
        t0 = time.monotonic()
        while done < n:
            while again or (waiting and len(flights) < window):
                if again:
                    seq = again.popleft()
                    flight = flights[seq]
                else:
                    while next_seq in flights:
                        next_seq = (next_seq + 1) % 256
                    seq, next_seq = next_seq, (next_seq + 1) % 256
                    flight = flights[seq] = _Flight(waiting[0], payloads[waiting.popleft()])
                if flight.attempts == self.max_attempts:
                    raise LowbitError(f"image {flight.index} got no good answer in {self.max_attempts} tries",
                                      f"the link loses too much ({dict(events)}): check the cable and the baud rate")
                self.port.write(p.encode_frame(p.IMAGE, seq, flight.payload))
                order += 1
                flight.attempts += 1
                flight.first_order = flight.first_order or order
                flight.last_order, flight.sent_at = order, time.monotonic()
            for f in self._frames():
                flight = flights.get(f.seq)
                if f.kind == p.ERROR:
                    events[f"error answers ({p.ERROR_NAMES.get(f.payload[0], f.payload[0])})"] += 1
                    if flight is not None and f.seq not in again:
                        again.append(f.seq)
                if f.kind != p.RESULT:
                    continue
                if flight is None:
                    events["results for no image in flight"] += 1
                    continue
                results[flight.index] = f.payload
                done += 1
                del flights[f.seq]
                if f.seq in again:
                    again.remove(f.seq)
                if flight.attempts == 1:
                    self._slowest = max(self._slowest, time.monotonic() - flight.sent_at)
                if progress is not None:
                    progress.update(1)
                # Results come in order: an image sent before this one's first frame is lost.
                for seq, other in flights.items():
                    if other.last_order < flight.first_order and seq not in again:
                        again.append(seq)
                        events["sent again (a later result came first)"] += 1
            now = time.monotonic()
            for seq, flight in flights.items():
                if now - flight.sent_at > self.timeout and seq not in again:
                    again.append(seq)
                    events["sent again (timeout)"] += 1
        self.record.results = results
        self.record.seconds = time.monotonic() - t0
        return self.record
