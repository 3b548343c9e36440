"""What each FPGA family's fabric offers, and how Yosys maps memories and multiplexers onto it.

Plain arithmetic on sizes, shared by every engine's cost features (each op's module in
``lowbit.compiler.ops``) and the estimator (``lowbit.boards``): LUT inputs, block RAM shapes and
the rule that puts a ROM in block RAM, distributed RAM, multiplexers, and the LUTs of ROMs kept in
logic. The constants were bracketed by synthesizing lone memories and the engines of the
calibration sweep (``lowbit.boards.calibrate``).
"""

import math

from lowbit.core.errors import LowbitError

__all__ = ["FAMILIES", "BRAM_SHAPES", "BRAM_COST", "LUT_BITS", "rom_brams", "ram_brams", "mux_luts",
           "lutram_luts", "rom_logic_luts", "rom_class", "rom_depth_class", "isolated_rom",
           "distinct_columns", "rom_luts"]

FAMILIES = ("xilinx", "ice40", "ecp5")

# Block RAM aspect ratios (depth, width) per family, and how many counting units each uses.
# xc7: RAMB18 modes count 1, RAMB36 modes count 2 (synth.py counts RAMB18 equivalents).
BRAM_SHAPES = {
    "xilinx": [((16384, 1), 1), ((8192, 2), 1), ((4096, 4), 1), ((2048, 9), 1), ((1024, 18), 1),
               ((512, 36), 1), ((32768, 1), 2), ((16384, 2), 2), ((8192, 4), 2), ((4096, 9), 2),
               ((2048, 18), 2), ((1024, 36), 2), ((512, 72), 2)],
    "ice40": [((2048, 2), 1), ((1024, 4), 1), ((512, 8), 1), ((256, 16), 1)],
    "ecp5": [((16384, 1), 1), ((8192, 2), 1), ((4096, 4), 1), ((2048, 9), 1), ((1024, 18), 1),
             ((512, 36), 1)],
}
# Soft-logic cost units per block RAM unit, bracketed by synthesized ROMs: lone ROMs (xc7: a
# 512 x 16 ROM stays in logic, a 1024 x 16 ROM becomes one RAMB18), the weight and threshold
# ROMs of the calibration sweep, and on xc7 the FINN LFC network, whose 256 x 4096 weight ROMs
# Yosys puts in 114 RAMB18 each (below 575). Over the sweep's 203 engines, every xc7 value from
# 524 to 636 reproduces every BRAM count; iCE40 64 to 88 all but one; on ECP5 no value fits
# every engine, and 132 to 136 misses the fewest (3: the rule prices each ROM alone).
BRAM_COST = {"xilinx": 544, "ice40": 76, "ecp5": 134}
_LOGIC_COST_PER_BIT = 1 / 16

# Bits a LUT holds as ROM: LUT6 on xc7, LUT4 on iCE40/ECP5.
LUT_BITS = {"xilinx": 64, "ice40": 16, "ecp5": 16}


def rom_brams(depth, width, family, style=None):
    """Block RAM units Yosys maps a ``depth`` x ``width`` ROM to (0: it stays in logic). ``style``
    is the ROM's ``rom_style`` (:class:`lowbit.hw.rom.ROM`): "block" takes the fewest block RAMs
    that hold it, "logic" none; without one, Yosys weighs the two costs."""
    best = None
    for (d, w), units in BRAM_SHAPES[family]:
        n = math.ceil(depth / d) * math.ceil(width / w) * units
        best = n if best is None else min(best, n)
    if style is not None:
        return best if style == "block" else 0
    logic_cost = int(depth * width * _LOGIC_COST_PER_BIT)
    return best if logic_cost > best * BRAM_COST[family] else 0


def lutram_luts(depth, width):
    """xc7 LUT sites of a ``depth`` x ``width`` memory with one write and one read port in
    distributed RAM, as Yosys maps it: RAM32M (32 x 6 per four LUTs) up to 32 words, else
    RAM64M (64 x 3 per four LUTs) per 64 words with a multiplexer over them."""
    if depth <= 32:
        return 4 * math.ceil(width / 6)
    banks = math.ceil(depth / 64)
    return 4 * math.ceil(width / 3) * banks + width * mux_luts(banks, "xilinx")


def rom_class(depth):
    """The depth class of a ROM: its depth rounded up to a power of two (its address bits)."""
    return 1 << max(0, (depth - 1).bit_length())


def isolated_rom(depth, width, family, style=None):
    """Whether synthesis maps a ``depth`` x ``width`` ROM of an engine as a module of its own: on
    xc7 every ROM of two words or more that stays out of block RAM (the flow keeps ``*_rom``
    modules, see :mod:`lowbit.hw.rom`; a one-word ROM is a constant of the engine)."""
    return family == "xilinx" and depth > 1 and not rom_brams(depth, width, family, style)


def distinct_columns(depth, width, family):
    """Expected number of distinct functions among ``width`` random ROM bits of ``depth`` words.

    A bit of a ROM is a function of its address; a shallow ROM has few of them (16 for four
    words), and its bits share them, so its LUTs stop growing with its width. From 32 words on
    there are 2**32 functions or more: every bit is its own. On xc7 a ROM of up to four words
    is its output flip-flops, each loaded from an address bit and set or reset by one of a few
    shared signals: at most one LUT per word."""
    functions = 2 ** rom_class(depth)
    if functions > 2 ** 16:
        return width
    distinct = functions * (1 - (1 - 1 / functions) ** width)
    return min(distinct, depth) if family == "xilinx" and depth <= 4 else distinct


def rom_luts(depth, width, family, rom_table, style=None):
    """LUTs of a ``depth`` x ``width`` ROM mapped on its own: its distinct bits
    (:func:`distinct_columns`) times the LUTs per bit that the sweep's lone ROMs of its depth
    class took (``rom_table``, class -> LUTs per distinct bit)."""
    if rom_brams(depth, width, family, style):
        return 0
    per_bit = rom_table.get(str(rom_class(depth))) if rom_table else None
    if per_bit is None:
        raise LowbitError(f"the estimator is not calibrated for a {depth}-word ROM on {family}",
                          "add a lone ROM of that depth to the sweep in boards/calibrate.py and "
                          "regenerate with 'python -m benchmarks.estimator --write'")
    return distinct_columns(depth, width, family) * per_bit


# iCE40 has no distributed RAM: Yosys puts a memory with a write port (a window's line, a
# FIFO) in block RAM from this many words and more than this many bits on, and in flip-flops
# otherwise (bracketed by the sweep and lone FIFOs: 4 x 16 and 3 x 100 bits stay in flip-flops,
# 5 x 16 takes an SB_RAM40_4K; 6 x 8 stays, 5 x 16 goes).
_ICE40_RAM_MIN_WORDS = 5
_ICE40_RAM_MIN_BITS = 65


def ram_brams(depth, width, family):
    """Block RAM units of one memory with one write and one read port (a window's line memory,
    a FIFO's queue), 0 when it stays out of block RAM.

    xc7 and ECP5 keep such memories in distributed (LUT) RAM; iCE40 has none, so Yosys puts
    every one of :data:`_ICE40_RAM_MIN_WORDS` words and :data:`_ICE40_RAM_MIN_BITS` bits or
    more in block RAM, in the fewest primitives of any aspect ratio.
    """
    if family != "ice40" or depth < _ICE40_RAM_MIN_WORDS or depth * width < _ICE40_RAM_MIN_BITS:
        return 0
    return min(math.ceil(depth / d) * math.ceil(width / w) * units
               for (d, w), units in BRAM_SHAPES[family])


def mux_luts(n, family):
    """LUTs of one bit of an ``n``:1 multiplexer: on xc7 a LUT6 is a 4:1 mux and MUXF7/MUXF8
    join four of them into 16:1 without LUTs; on iCE40 and ECP5 (LUT4) each 2:1 step is a LUT."""
    if n <= 1:
        return 0
    if family != "xilinx":
        return n - 1
    if n <= 16:
        return math.ceil(n / 4)
    groups = math.ceil(n / 16)
    return 4 * groups + mux_luts(groups, family)


def rom_logic_luts(depth, width, family):
    """LUTs of a ``depth`` x ``width`` ROM left in logic: per output bit, one LUT per
    ``2**inputs`` words and a multiplexer over them (a one-word ROM is a constant: none)."""
    if depth <= 1:
        return 0
    words = LUT_BITS[family]
    per_bit = math.ceil(depth / words)
    return width * (per_bit + mux_luts(per_bit, family))


def rom_depth_class(depth, family):
    """How a weight ROM of ``depth`` words left in logic meets the lane it feeds, by its address
    bits ``a`` against the LUT's inputs ``k``: ``shallow`` (``a <= k - 4``) folds into the lane's
    LUTs with the input bits it selects or inverts, ``narrow`` (``a <= k - 2``) partly does,
    ``lut`` (``a <= k``) is a LUT per weight bit of its own, ``deep`` reads through a
    multiplexer. Each class has its own coefficient: the sweep showed one per-bit cost
    overpricing shallow ROMs and underpricing deep ones."""
    a = math.ceil(math.log2(depth)) if depth > 1 else 0
    k = int(math.log2(LUT_BITS[family]))
    for name, limit in (("shallow", k - 4), ("narrow", k - 2), ("lut", k)):
        if a <= limit:
            return name
    return "deep"
