"""The framed serial protocol between a host and a board top (:mod:`lowbit.boards.link`).

Every message is a frame::

    SYNC  TYPE  SEQ  LEN_LO  LEN_HI  PAYLOAD[LEN]  CRC_HI  CRC_LO

``SYNC`` is 0xA5. The CRC is CRC-16/CCITT-FALSE (polynomial 0x1021, initial value 0xFFFF, no
reflection, no final XOR) of ``TYPE`` through the payload, sent high byte first, so the CRC of
``TYPE`` through ``CRC_LO`` is zero.

Host to board:

- ``IMAGE`` (0x01): one image, ``image_bytes`` of payload. The image's ``beats`` input beats of
  ``bits`` bits each are one bit string, beat ``k`` at bits ``[k * bits, (k + 1) * bits)``, bit ``j``
  of the string in bit ``j % 8`` of payload byte ``j // 8``; the unused top bits of the last byte
  are ignored. The board answers with ``RESULT`` of the same ``SEQ``, or ``ERROR``.
- ``INFO`` (0x02), no payload: the board answers with ``INFO_REPLY``.

Board to host:

- ``RESULT`` (0x81): the image's result beats, packed the same way (``result_bytes``).
- ``INFO_REPLY`` (0x82): protocol version, window, ``image_bytes`` (2 bytes, little-endian),
  ``result_bytes`` (2 bytes) and the build id (4 bytes, little-endian: the first 32 bits of the
  SHA-256 of the build's Verilog).
- ``ERROR`` (0xEE), one byte: ``BAD_CRC``, ``BAD_LENGTH`` (a known type with the wrong ``LEN``)
  or ``BUSY`` (no buffer free for the image; send it again). A frame whose type is unknown is
  not answered: the board cannot tell it from noise. A frame that stops for
  :data:`GAP_BYTE_TIMES` byte times is dropped without an answer.

Ordering and the window: the board answers images in the order their frames arrived. A host may
have :data:`WINDOW` images unanswered; the board buffers two received images beside the one in the
network and the one being sent back, so within the window it is never ``BUSY``. A host recovers
from anything lost by sending the image again: on ``ERROR``, when a later image's result comes
first (the results come in order), or after a timeout.
"""

import hashlib
from dataclasses import dataclass

__all__ = ["SYNC", "IMAGE", "INFO", "RESULT", "INFO_REPLY", "ERROR", "BAD_CRC", "BAD_LENGTH", "BUSY",
           "ERROR_NAMES", "VERSION", "WINDOW", "INFO_BYTES", "GAP_BYTE_TIMES", "crc16", "encode_frame",
           "build_id", "Info", "Frame", "Rejected", "FrameParser", "pack_beats", "unpack_beats",
           "payload_bytes"]

SYNC = 0xA5
IMAGE, INFO = 0x01, 0x02
RESULT, INFO_REPLY, ERROR = 0x81, 0x82, 0xEE
BAD_CRC, BAD_LENGTH, BUSY = 1, 2, 3
ERROR_NAMES = {BAD_CRC: "bad CRC", BAD_LENGTH: "bad length", BUSY: "busy"}
VERSION = 1
WINDOW = 3
INFO_BYTES = 10
HEADER_BYTES = 5  # SYNC, TYPE, SEQ, LEN_LO, LEN_HI
GAP_BYTE_TIMES = 256


def _crc_table():
    table = []
    for byte in range(256):
        c = byte << 8
        for _ in range(8):
            c = ((c << 1) ^ 0x1021) if c & 0x8000 else c << 1
        table.append(c & 0xFFFF)
    return table


_TABLE = _crc_table()


def crc16(data, crc=0xFFFF):
    """CRC-16/CCITT-FALSE of ``data`` (``crc16(b"123456789") == 0x29B1``)."""
    for b in data:
        crc = ((crc << 8) & 0xFFFF) ^ _TABLE[(crc >> 8) ^ b]
    return crc


def encode_frame(kind, seq, payload=b""):
    """The bytes of one frame."""
    body = bytes([kind, seq & 0xFF, len(payload) & 0xFF, len(payload) >> 8]) + bytes(payload)
    return bytes([SYNC]) + body + crc16(body).to_bytes(2, "big")


def build_id(verilog):
    """The 32-bit id of a build that its board reports: the first 32 bits of its Verilog's SHA-256."""
    return int.from_bytes(hashlib.sha256(verilog.encode("utf-8")).digest()[:4], "little")


def payload_bytes(beats, bits):
    """Bytes of a payload of ``beats`` beats of ``bits`` bits."""
    return -(-beats * bits // 8)


def pack_beats(words, bits):
    """One payload from beat words of ``bits`` bits (see the module docstring)."""
    value = 0
    for k, w in enumerate(words):
        value |= int(w) << (k * bits)
    return value.to_bytes(payload_bytes(len(words), bits), "little")


def unpack_beats(payload, beats, bits):
    """The ``beats`` beat words of ``bits`` bits in ``payload``."""
    value = int.from_bytes(payload, "little")
    mask = (1 << bits) - 1
    return [(value >> (k * bits)) & mask for k in range(beats)]


@dataclass(frozen=True)
class Info:
    """What a board says about itself in ``INFO_REPLY``."""
    version: int
    window: int
    image_bytes: int
    result_bytes: int
    build_id: int

    @classmethod
    def decode(cls, payload):
        p = bytes(payload)
        return cls(p[0], p[1], int.from_bytes(p[2:4], "little"), int.from_bytes(p[4:6], "little"),
                   int.from_bytes(p[6:10], "little"))

    def encode(self):
        return bytes([self.version, self.window]) + self.image_bytes.to_bytes(2, "little") + \
            self.result_bytes.to_bytes(2, "little") + self.build_id.to_bytes(4, "little")


@dataclass(frozen=True)
class Frame:
    """A frame that passed its CRC; ``start`` and ``end`` are its offsets in the received stream."""
    kind: int
    seq: int
    payload: bytes
    start: int
    end: int


@dataclass(frozen=True)
class Rejected:
    """Bytes that looked like the start of a frame and were not one (``reason``)."""
    reason: str
    start: int


class FrameParser:
    """Frames out of a byte stream that may have lost, gained or changed bytes.

    ``lengths`` maps each frame type this side accepts to its payload length; any other type or
    length is no frame. A candidate that fails is dropped one byte at a time, so a frame that
    starts inside it is still found.
    """

    def __init__(self, lengths):
        self.lengths = dict(lengths)
        self._buf = bytearray()
        self._base = 0  # stream offset of _buf[0]

    @property
    def offset(self):
        """Bytes fed so far."""
        return self._base + len(self._buf)

    @property
    def decided(self):
        """Bytes before this offset are in a frame already returned or in none."""
        return self._base

    def feed(self, data):
        """Add ``data``; return the :class:`Frame` and :class:`Rejected` events it completes, in order."""
        self._buf += data
        events = []
        while True:
            at = self._buf.find(SYNC)
            if at < 0:
                self._drop(len(self._buf))
                return events
            self._drop(at)
            if len(self._buf) < HEADER_BYTES:
                return events
            kind, seq, n = self._buf[1], self._buf[2], self._buf[3] | self._buf[4] << 8
            if self.lengths.get(kind) != n:
                events.append(Rejected("unknown type or length", self._base))
                self._drop(1)
                continue
            size = HEADER_BYTES + n + 2
            if len(self._buf) < size:
                return events
            if crc16(self._buf[1:size]) != 0:
                events.append(Rejected("bad CRC", self._base))
                self._drop(1)
                continue
            events.append(Frame(kind, seq, bytes(self._buf[HEADER_BYTES:HEADER_BYTES + n]), self._base,
                                self._base + size))
            self._drop(size)

    def _drop(self, n):
        del self._buf[:n]
        self._base += n
