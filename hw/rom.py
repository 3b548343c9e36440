"""A read-only memory with one synchronous read port: the weight and threshold stores of an engine.

It is its own component, and so its own module in the Verilog, because synthesis maps a ROM best
on its own. Yosys' LUT mapper (abc) optimizes a whole flattened design at once, and next to an
engine's datapath it restructures the decoding of a random-content ROM into logic shared between
bits: a 64-word ROM bit, which is exactly one LUT6, then takes up to 3.3 LUTs. The xc7 synthesis
flow therefore keeps every module named ``*_rom`` (and each PE row of a matrix-vector unit,
``*_row``) as a hierarchy of its own, so each is mapped alone, as a vendor tool would map it
(``lowbit.boards.synth.KEEP_MODULES``).

A ROM of one word is a constant, which must stay in the logic it feeds for synthesis to simplify
it; engines make such words constants instead of ROMs.
"""

from amaranth.hdl import Module, unsigned
from amaranth.lib import memory, wiring
from amaranth.lib.wiring import In, Out

__all__ = ["ROM"]


class ROM(wiring.Component):
    """``depth`` words of ``width`` bits, read through one synchronous port.

    Timing: ``data`` holds the word at ``addr`` one cycle after a cycle with ``en`` high, and
    keeps its value while ``en`` is low (``latency = 1``); a new address every cycle
    (``cycles_per_item = 1``).

    Parameters
    ----------
    words : list of int
        The contents, one non-negative integer below ``2**width`` per word; at least one word.
    width : int
        Bits per word.
    style : {None, "block", "logic"}
        A ``rom_style``/``ram_style`` attribute for synthesis: block RAM or LUTs; ``None`` lets
        synthesis choose.

    Members
    -------
    addr : In(range(depth))
    en : In(1)
    data : Out(width)

    Raises
    ------
    ValueError
        If ``width`` is not a positive integer, ``words`` is empty or a word does not fit, or
        ``style`` is unknown.
    """

    latency = 1
    cycles_per_item = 1

    def __init__(self, words, width, *, style=None):
        if not isinstance(width, int) or isinstance(width, bool) or width < 1:
            raise ValueError(f"Width must be a positive integer, not {width!r}")
        words = list(words)
        if not words:
            raise ValueError("Words must hold at least one word")
        for k, word in enumerate(words):
            if not isinstance(word, int) or isinstance(word, bool) or not 0 <= word < 1 << width:
                raise ValueError(f"Word {k} must be an integer in [0, 2**{width}), not {word!r}")
        if style not in (None, "block", "logic"):
            raise ValueError(f"Style must be None, 'block' or 'logic', not {style!r}")
        self._words, self._width, self._style = tuple(words), width, style
        super().__init__({"addr": In(range(len(words))), "en": In(1), "data": Out(width)})

    words = property(lambda self: self._words)
    width = property(lambda self: self._width)
    depth = property(lambda self: len(self._words))
    style = property(lambda self: self._style)

    def elaborate(self, platform):
        m = Module()
        attrs = {"rom_style": self._style, "ram_style": self._style} if self._style else None
        m.submodules.memory = mem = memory.Memory(shape=unsigned(self._width), depth=self.depth,
                                                  init=self._words, attrs=attrs)
        port = mem.read_port()
        m.d.comb += [port.addr.eq(self.addr), port.en.eq(self.en), self.data.eq(port.data)]
        return m

