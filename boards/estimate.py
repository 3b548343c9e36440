"""Resource, throughput and fmax estimates for a compiled network, calibrated against Yosys.

Per engine (one matrix-vector-threshold unit, see :mod:`lowbit.hw.mvau`) and per family:

- **BRAM** follows the rule Yosys' ``memory_libmap`` applies to each ROM (weights, thresholds): a
  ROM becomes block RAM when its soft-logic cost, ``bits / 16`` (the pass's default ROM cost per
  bit), exceeds the cost of the fewest block RAMs that hold it (:data:`BRAM_SHAPES`, cost
  :data:`BRAM_COST` per primitive, in the family's counting unit). The cost constants were
  bracketed by synthesizing lone ROMs of many shapes and by every engine of the calibration
  sweep (on ECP5 no constant fits every engine; see :data:`BRAM_COST`). Memories with a write
  port (window lines, FIFOs) sit in distributed RAM on xc7 and ECP5, and in block RAM on iCE40
  once they are large enough (:func:`ram_brams`).
- **LUTs and FFs** of a matrix-vector unit are counted by its parts, as synthesis maps them. The
  unit reads its weights and thresholds from ROM modules and puts each PE row (lane,
  accumulator, compares) in a module of its own (:mod:`lowbit.hw.rom`, :mod:`lowbit.hw.mvau`);
  the xc7 flow keeps those modules apart (``lowbit.boards.synth.KEEP_MODULES``), so an engine's
  LUTs there are the sum of three parts that synthesis counts separately (and the sweep records,
  :func:`lowbit.boards.calibrate.lut_parts`):

  - *ROMs*, counted from the structure: a ROM's distinct bits (:func:`_distinct_columns`; a
    shallow ROM's bits share the few functions of its address) times the LUTs per bit that lone
    ROMs of its depth take (:func:`rom_luts`, measured by the sweep's lone ROMs); a threshold
    ROM, whose sorted, narrow words repeat their high bits, at the fitted fraction
    ``threshold_rom_scale`` of that.
  - *PE rows* (``row:`` features, times PE): per lane variant (lane, input kind, constant
    weights, DSP use) the bits that enter its compressor tree (``SIMD`` times the term width:
    the input, the input times a weight, or the shifted input), the product bits of multiplying
    lanes, the tree's counters as the lane builds them (:func:`lowbit.hw.lanes.lane_counters`)
    and a per-row constant; then the accumulator, the threshold compares by where the
    thresholds come from (constants with one neuron fold, a ROM, or a ROM of at most four words
    that a flattened design folds into the compare), the count of several levels, and the dot
    product's offset adder of the XNOR lane.
  - *The rest* of the unit: the input-slice multiplexer (``SIMD * in_bits`` times the LUTs of an
    SF:1 multiplexer, :func:`mux_luts`), the output beat's writes at each neuron fold and their
    enables, the fold counters; and, where the rows are not modules (fully unrolled units, whose
    constant weights stay in one module for synthesis to share), the rows' own features
    (``flat:``).

  iCE40 and ECP5 flatten everything, so there the same features are fitted to the engine's
  total, ROMs left in logic priced by their depth against the LUT's inputs
  (:func:`_rom_depth_class`). The coefficients are fitted by non-negative least squares on
  relative error to the calibration sweep (:mod:`lowbit.boards.calibrate`), each part's to that
  part's count, and stored in ``calibration.json`` beside the data they were fitted to.
- **DSPs**: multiplying lanes (``lut-multiply``) use one DSP per multiplier where Yosys maps
  them so: on xc7 a DSP48E1 once its operands are 10 bits together, on ECP5 a MULT18X18D for every
  multiplier, on iCE40 none; other lanes use none.
- **Level-table lanes** (post-training quantized layers, ``table:c_1,..,c_K``) select one of the
  products ``c_k * x`` by a sign and magnitude code, as the shift lane selects a shifted input, so
  they take the shift lane's calibrated features (on bipolar inputs, where each product is a
  constant ±c, the multiplying lane's), with the weight as wide as its largest magnitude. The
  products themselves, which the shift lane does not have, are priced by
  :func:`table_product_luts`: a lookup per output bit where the input element and the magnitude
  code fit a LUT or two, else their shift-add chains at one LUT per adder bit (a ripple adder
  bit is one LUT and a carry-chain cell on xc7, iCE40 and ECP5); a structural count, not a
  fitted coefficient.
- **Window, pool, collect, normalize-sign and FIFO engines** have their own features, each op
  with its own constant: row/column counters and line-memory pointers, the pad multiplexer, line
  memories (xc7: distributed RAM, counted as LUT sites by :func:`lutram_luts`; ECP5:
  distributed RAM, not in its LUT count, read through a multiplexer over 16-word banks; iCE40:
  flip-flops or block RAM), OR or compare trees of the pool (an integer compare and select
  priced per element width, which synthesis maps unevenly), the collect's per-beat write
  enables, for normalize-sign the fold multiplexers (about a LUT per held element bit), the
  sum chain and the PE compares with their per-fold offsets, and for FIFOs their pointers and
  queue. A network's estimate adds its stream FIFOs.
- **Cycles** are exact: the manifest's ``cycles_per_item`` and ``latency`` (from the engines'
  timing properties).
- **fmax**: nextpnr's critical path on a placed network runs from the last engine's output
  handshake back through every engine's stall logic (``advance``) into the first engine's
  compressor tree and accumulator. The model counts LUT levels on that path,
  ``n_engines + tree_levels + acc_bits / 2``, at ``t_lut`` each plus ``t0``
  (:data:`FMAX_DELAYS_NS`). iCE40's delays are matched to one placed iCEBreaker design (three
  engines, 20.8 MHz); ECP5's are fitted to three placed ULX3S networks (within 9 % of nextpnr on
  each); xc7's are scaled from iCE40 by the families' LUT speed and are not calibrated (no open
  place and route for xc7 exists).
"""

import json
import math

import numpy as np

from lowbit.errors import LowbitError
from lowbit.hw.lanes import lane_counters

from .boards import get_board
from .calibrate import CALIBRATION_PATH

__all__ = ["BRAM_SHAPES", "BRAM_COST", "rom_brams", "layer_features", "estimate_layer",
           "estimate_manifest", "fit_models", "ram_brams", "mux_luts", "rom_logic_luts", "lutram_luts",
           "structural_luts", "load_models", "FMAX_DELAYS_NS", "estimate_fmax_mhz",
           "table_product_luts"]

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
_LUT_BITS = {"xilinx": 64, "ice40": 16, "ecp5": 16}

# Critical path delays in ns: clock-to-out plus setup (t0), and one LUT level with its routing.
# iCE40: matched to one placed iCEBreaker network. ECP5: fitted (least squares on the period, t0
# fixed at 0.5 ns) to three placed ULX3S networks of 2, 2 and 3 engines (nextpnr-ecp5, 25 MHz
# constraint; see the estimator benchmark). xc7: scaled from iCE40 by LUT speed, a model only (no
# open xc7 place and route exists).
FMAX_DELAYS_NS = {"ice40": (3.2, 4.5), "ecp5": (0.5, 2.15), "xilinx": (1.0, 0.9)}


def rom_brams(depth, width, family):
    """Block RAM units Yosys maps a ``depth`` x ``width`` ROM to (0: it stays in logic)."""
    best = None
    for (d, w), units in BRAM_SHAPES[family]:
        n = math.ceil(depth / d) * math.ceil(width / w) * units
        best = n if best is None else min(best, n)
    logic_cost = int(depth * width * _LOGIC_COST_PER_BIT)
    return best if logic_cost > best * BRAM_COST[family] else 0


def _lane_variant(layer, family):
    k = layer["in_format"]["kind"]
    bip = "bip" if k == "bipolar" else "k"
    # A one-word weight ROM is a constant: synthesis simplifies the lane by every weight.
    const = "-const" if layer["weight_memory"]["depth"] == 1 else ""
    dsp = "-dsp" if _lane_dsps(layer, family) else ""
    lane = layer["lane"]
    if lane == "level-table":
        # A level table selects among its products as the shift lane selects among shifts; on
        # bipolar inputs the products are the constants +-c, a lookup as in a multiplying lane.
        lane = "lut-multiply" if k == "bipolar" else "shift"
    return f"{lane}-{bip}{const}{dsp}"


def table_product_luts(layer, family):
    """LUTs of a level-table engine's constant products ``c_m * x``, per lane (PE * SIMD).

    Each output bit of the selected product is a function of the input element's bits and the
    magnitude code. When those fit one LUT (6 inputs on xc7, 4 on iCE40/ECP5), synthesis makes
    each output bit one LUT, or ``2**(n - inputs)`` for n inputs a few more; otherwise it keeps
    the shift-add chains of ``lowbit.hw.lanes``, one adder per signed digit of c after the first,
    as wide as ``c * x``, one LUT per adder bit. The cheaper of the two is the estimate. 0 for
    other lanes and for bipolar inputs (the lane selects the constants themselves)."""
    if layer.get("op", "mvau") != "mvau" or layer["lane"] != "level-table":
        return 0
    fmt = layer["in_format"]
    if fmt["kind"] == "bipolar":
        return 0
    from lowbit.formats import weight_format
    from lowbit.hw.lanes import signed_digits

    table = weight_format(layer["weight_format"])
    mags = [c for c in table.levels if c > 0]
    # Signed width of an input element: uint k one more for the sign.
    x_bits = fmt["bits"] + (fmt["kind"] == "uint")
    width = x_bits + max(mags).bit_length()
    inputs = fmt["bits"] + table.storage_bits - 1  # the element and the magnitude code
    lookup = width * 2 ** max(0, inputs - math.log2(_LUT_BITS[family]))
    adders = sum((len(signed_digits(c)) - 1) * (x_bits + c.bit_length()) for c in mags)
    return layer["pe"] * layer["simd"] * min(lookup, adders)


def lutram_luts(depth, width):
    """xc7 LUT sites of a ``depth`` x ``width`` memory with one write and one read port in
    distributed RAM, as Yosys maps it: RAM32M (32 x 6 per four LUTs) up to 32 words, else
    RAM64M (64 x 3 per four LUTs) per 64 words with a multiplexer over them."""
    if depth <= 32:
        return 4 * math.ceil(width / 6)
    banks = math.ceil(depth / 64)
    return 4 * math.ceil(width / 3) * banks + width * mux_luts(banks, "xilinx")


def _fifo_memory(layer, family):
    """Bits of a FIFO's memory that iCE40 keeps in flip-flops (0 elsewhere, or in block RAM)."""
    words = layer["depth"] - 1
    if family != "ice40" or words < 1 or ram_brams(words, layer["bits"], family):
        return 0
    return words * layer["bits"]


def _rom_class(depth):
    """The depth class of a ROM: its depth rounded up to a power of two (its address bits)."""
    return 1 << max(0, (depth - 1).bit_length())


def isolated_rom(depth, width, family):
    """Whether synthesis maps a ``depth`` x ``width`` ROM of an engine as a module of its own: on
    xc7 every ROM of two words or more that stays out of block RAM (the flow keeps ``*_rom``
    modules, see :mod:`lowbit.hw.rom`; a one-word ROM is a constant of the engine)."""
    return family == "xilinx" and depth > 1 and not rom_brams(depth, width, family)


def _distinct_columns(depth, width, family):
    """Expected number of distinct functions among ``width`` random ROM bits of ``depth`` words.

    A bit of a ROM is a function of its address; a shallow ROM has few of them (16 for four
    words), and its bits share them, so its LUTs stop growing with its width. From 32 words on
    there are 2**32 functions or more: every bit is its own. On xc7 a ROM of up to four words
    is its output flip-flops, each loaded from an address bit and set or reset by one of a few
    shared signals: at most one LUT per word."""
    functions = 2 ** _rom_class(depth)
    if functions > 2 ** 16:
        return width
    distinct = functions * (1 - (1 - 1 / functions) ** width)
    return min(distinct, depth) if family == "xilinx" and depth <= 4 else distinct


def rom_luts(depth, width, family, rom_table):
    """LUTs of a ``depth`` x ``width`` ROM mapped on its own: its distinct bits
    (:func:`_distinct_columns`) times the LUTs per bit that the sweep's lone ROMs of its depth
    class took (``rom_table``, class -> LUTs per distinct bit)."""
    if rom_brams(depth, width, family):
        return 0
    per_bit = rom_table.get(str(_rom_class(depth))) if rom_table else None
    if per_bit is None:
        raise LowbitError(f"the estimator is not calibrated for a {depth}-word ROM on {family}",
                          "add a lone ROM of that depth to the sweep in boards/calibrate.py and "
                          "regenerate with 'python -m benchmarks.estimator --write'")
    return _distinct_columns(depth, width, family) * per_bit


def rom_table(rows):
    """LUTs per distinct bit of lone ROMs in logic, by depth class, from calibration rows of one
    family."""
    per_class = {}
    for r in rows:
        layer = r["layer"]
        if layer["op"] == "rom" and not r["brams"]:
            per_class.setdefault(str(_rom_class(layer["depth"])), []).append(
                r["luts"] / _distinct_columns(layer["depth"], layer["width"], r["family"]))
    return {k: sum(v) / len(v) for k, v in sorted(per_class.items(), key=lambda kv: int(kv[0]))}


def structural_luts(layer, family, model=None, part=None):
    """LUTs that the estimator counts from the structure, not from fitted coefficients: the
    constant products of level-table lanes (:func:`table_product_luts`), ROMs mapped on their own
    (:func:`rom_luts`, from the lone ROMs of the family's ``model``; threshold ROMs scaled by its
    ``threshold_rom_scale``), and on xc7 the distributed RAM of window and pool line memories
    and FIFOs (:func:`lutram_luts`). ``part`` (``"rom"``, ``"rows"``, ``"glue"``, as
    :func:`lowbit.boards.calibrate.lut_parts` splits an engine) counts that part alone."""
    model = model or {}
    rom_table = model.get("rom_luts_per_bit")
    op = layer.get("op", "mvau")
    parts = {"rom": 0, "rows": 0, "glue": 0}
    if op == "rom":
        parts["rom"] = rom_luts(layer["depth"], layer["width"], family, rom_table)
    elif op == "mvau":
        products = table_product_luts(layer, family)
        parts["rows" if separate_rows(layer) and family == "xilinx" else "glue"] += products
        weights, thresholds = _roms(layer)
        if isolated_rom(*weights, family):
            parts["rom"] += rom_luts(*weights, family, rom_table)
        if thresholds and isolated_rom(*thresholds, family):
            parts["rom"] += model.get("threshold_rom_scale", 1.0) * rom_luts(*thresholds, family, rom_table)
    elif family == "xilinx" and op in ("sliding_window", "maxpool"):
        n, depth, width = _line_memories(layer)
        if n:
            parts["glue"] += n * lutram_luts(depth, width)
    elif family == "xilinx" and op == "fifo" and layer["depth"] > 2:
        parts["glue"] += lutram_luts(layer["depth"] - 1, layer["bits"])
    return parts[part] if part else sum(parts.values())


def _threshold_rom_scale(rows, family, rom_table):
    """How many of the LUTs of a random ROM a threshold ROM of the same shape takes: its words are
    sorted and narrow, so high bits repeat across words. The least-squares ratio, on relative
    error, over the engines whose threshold ROM synthesis maps on its own."""
    num = den = 0.0
    for r in rows:
        layer = r["layer"]
        if layer["op"] != "mvau" or "lut_parts" not in r:
            continue
        weights, thresholds = _roms(layer)
        if not thresholds or not isolated_rom(*thresholds, family):
            continue
        own = rom_luts(*thresholds, family, rom_table)
        rest = r["lut_parts"]["rom"] - (rom_luts(*weights, family, rom_table)
                                        if isolated_rom(*weights, family) else 0)
        weight = 1 / max(r["luts"], 1) ** 2
        num += weight * own * rest
        den += weight * own * own
    return num / den if den else 1.0


# Yosys' synth_xilinx maps a lane's multiplier to a DSP48E1 once its signed operands add up to
# 10 bits or more (bracketed by the sweep: 4 x 5 and 5 x 4 stay in LUTs, 5 x 5 and 3 x 9 map).
_XC7_DSP_MIN_PRODUCT_BITS = 10


def _lane_dsps(layer, family):
    """DSP blocks of a multiplying lane: one per PE x SIMD multiplier that synthesis maps to one.

    xc7: a DSP48E1 once the operands are 10 bits together (narrower ones stay in LUTs). ECP5:
    synth_ecp5 maps every multiplier to a MULT18X18D, however narrow. iCE40: synth_ice40 maps
    none to SB_MAC16 (it infers DSPs only when asked to)."""
    if family == "ice40" or layer.get("op", "mvau") != "mvau" or layer["lane"] != "lut-multiply":
        return 0
    if family == "ecp5":
        return layer["pe"] * layer["simd"]
    rows, mw = _rows(layer), layer["mw"]
    wb = layer["weight_memory"]["bits"] // (rows * mw)
    fmt = layer["in_format"]
    # Inputs enter the multiplier signed: bipolar as 2 bits, uint k zero-extended to k + 1.
    x_bits = {"bipolar": 2, "uint": fmt["bits"] + 1}.get(fmt["kind"], fmt["bits"])
    return layer["pe"] * layer["simd"] if wb + x_bits >= _XC7_DSP_MIN_PRODUCT_BITS else 0


def _levels(layer):
    out = layer["out_format"]
    if out["kind"] == "bipolar":
        return 1
    if out["kind"] == "uint":
        return (1 << out["bits"]) - 1
    return 0


def _rows(layer):
    """Rows of the stored weight matrix: MH, or the tile's rows for tiled weights."""
    return layer["mh"] // layer.get("copies", 1)


def _roms(layer):
    """(depth, width) of the weight ROM and of the threshold ROM (None without thresholds)."""
    pe, simd, mw = layer["pe"], layer["simd"], layer["mw"]
    rows, copies = _rows(layer), layer.get("copies", 1)
    wb = layer["weight_memory"]["bits"] // (rows * mw)
    weights = (layer["weight_memory"]["depth"], pe * simd * wb)
    levels = _levels(layer)
    tw = layer["accumulator_bits"] + 1
    thresholds = (rows // pe, copies * pe * levels * tw) if levels else None
    return weights, thresholds


def _line_memories(layer):
    """(count, depth, width) of a window's line memories (hw/window.py ``_delay``)."""
    k = layer["kernel"]
    h, w, c = layer["in_shape"]
    padded = w + 2 * layer.get("pad", 0)
    pixel_bits = c * layer["in_format"]["bits"]
    depth = padded - k
    # Delays shorter than two pixels are registers, not memories.
    return (k - 1, depth, pixel_bits) if depth >= 2 and k > 1 else (0, 0, pixel_bits)


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
    words = _LUT_BITS[family]
    per_bit = math.ceil(depth / words)
    return width * (per_bit + mux_luts(per_bit, family))


def _rom_depth_class(depth, family):
    """How a weight ROM of ``depth`` words left in logic meets the lane it feeds, by its address
    bits ``a`` against the LUT's inputs ``k``: ``shallow`` (``a <= k - 4``) folds into the lane's
    LUTs with the input bits it selects or inverts, ``narrow`` (``a <= k - 2``) partly does,
    ``lut`` (``a <= k``) is a LUT per weight bit of its own, ``deep`` reads through a
    multiplexer. Each class has its own coefficient: the sweep showed one per-bit cost
    overpricing shallow ROMs and underpricing deep ones."""
    a = math.ceil(math.log2(depth)) if depth > 1 else 0
    k = int(math.log2(_LUT_BITS[family]))
    for name, limit in (("shallow", k - 4), ("narrow", k - 2), ("lut", k)):
        if a <= limit:
            return name
    return "deep"


def separate_rows(layer):
    """Whether a matrix-vector unit's PE rows are modules of their own: whenever its weights come
    from a ROM (:mod:`lowbit.hw.mvau`); fully unrolled, its constant weights keep them together."""
    return layer["weight_memory"]["depth"] > 1


def _row_features(layer, family):
    """LUT features of one PE row of a matrix-vector unit: its lane, accumulator, compares."""
    simd, copies = layer["simd"], layer.get("copies", 1)
    fmt = layer["in_format"]
    acc = layer["accumulator_bits"]
    levels = _levels(layer)
    out_bits = layer["out_format"]["bits"]
    (wd, ww), t_rom = _roms(layer)
    wb = ww // (layer["pe"] * simd)
    if layer["lane"] == "level-table":
        # The lane works on the weight's value, not its code: as wide as the largest magnitude.
        from lowbit.formats import weight_format
        wb = max(weight_format(layer["weight_format"]).levels).bit_length() + 1
    k = fmt["bits"] if fmt["kind"] != "bipolar" else 1
    # Each product enters the lane's compressor tree as a term of this many bits: the input
    # element itself (XNOR, add/subtract/skip, AND), the element times a weight of wb bits
    # (multiply; a bipolar element only negates the weight), or the element shifted by up to
    # 2**(wb - 1) - 2 places (powers of two).
    term = {"lut-multiply": k + wb if fmt["kind"] != "bipolar" else wb,
            "level-table": k + wb if fmt["kind"] != "bipolar" else wb,
            "shift": k + 2 ** (wb - 1) - 2}.get(layer["lane"], k)
    variant = _lane_variant(layer, family)
    multiplies = layer["lane"] in ("lut-multiply", "shift", "level-table")
    lookup = (layer["lane"] == "lut-multiply" and fmt["kind"] != "bipolar"
              and 2 ** (k + wb) <= _LUT_BITS[family])
    # Thresholds are constants of the row when there is one neuron fold; on a flattened
    # design, a threshold ROM of at most four words is a function of two address bits besides
    # the accumulator, which synthesis folds into the compare's LUTs.
    t_depth = t_rom[0] if t_rom else 0
    source = ("compare:const" if t_depth <= 1 else
              "compare:shallow" if t_depth <= 4 and not isolated_rom(*t_rom, family) else "compare")
    return {
        "const": 1.0,
        f"lane:{variant}": simd * term,
        # What a row of this lane spends whatever its size (the bipolar masked lanes, for one,
        # subtract one popcount from the other).
        f"lane:{variant}:row": 1.0,
        # Multiplying lanes: one partial product bit per input bit and weight bit.
        f"lane:{variant}:mult": simd * k * wb if multiplies and not lookup else 0,
        # ... unless the element and the weight fit one LUT: then each product bit is a lookup.
        f"lane:{variant}:lookup": simd * (k + wb) if multiplies and lookup else 0,
        # The counters of the lane's compressor tree, as the lane builds them.
        f"lane:{variant}:counters": lane_counters(layer["weight_format"], fmt["kind"], fmt["bits"], simd,
                                                  constant=wd == 1),
        "acc": acc,
        # Threshold compares, for every tiled copy; several levels are counted into a code.
        source: copies * levels * acc,
        "count": copies * levels * out_bits if levels > 1 else 0,
        # Without thresholds, the XNOR lane's count is scaled and offset into the dot product
        # (2 * count - MW): an adder; the other lanes accumulate the dot product itself.
        "dot": out_bits if not levels and layer["lane"] == "xnor-popcount" else 0,
    }


def _mvau_features(layer, family):
    """LUT and FF features of a matrix-vector unit: ``row:`` features of its PE rows (times PE)
    where they are modules of their own, ``flat:`` ones where they are not, then those of the
    unit around them."""
    pe, simd, mh, mw = layer["pe"], layer["simd"], layer["mh"], layer["mw"]
    copies = layer.get("copies", 1)
    in_bits = layer["in_format"]["bits"]
    sf, nf = mw // simd, _rows(layer) // pe
    out_bits = layer["out_format"]["bits"]
    (wd, ww), t_rom = _roms(layer)
    prefix = "row:" if separate_rows(layer) else "flat:"
    luts = {prefix + name: pe * v for name, v in _row_features(layer, family).items()}
    # ROMs in logic that are not modules of their own, as LUTs of the ROM alone (a one-word ROM
    # is a constant of the logic it feeds; the others are counted by :func:`structural_luts`).
    w_rom = 0 if rom_brams(wd, ww, family) or wd <= 1 or isolated_rom(wd, ww, family) \
        else rom_logic_luts(wd, ww, family)
    t_luts = 0
    if t_rom is not None and not rom_brams(*t_rom, family) and not isolated_rom(*t_rom, family):
        t_luts = rom_logic_luts(*t_rom, family)
    luts.update({
        "const": 1.0,
        # The input slice: one SF:1 multiplexer per bit of a SIMD chunk.
        "x_select": simd * in_bits * mux_luts(sf, family) if sf > 4 else 0,
        # Up to four folds, each bit is a single LUT, which carries nothing else.
        "x_select:lut": simd * in_bits * mux_luts(sf, family) if sf <= 4 else 0,
        # The output beat: each element written at its neuron fold, the fold's enable decoded.
        "out": mh * out_bits if nf > 1 and copies == 1 else 0,
        "decode": copies * nf if nf > 1 else 0,
        # Tiled units write the copies' codes of a row together, from one accumulator.
        "out:tiled": mh * out_bits if nf > 1 and copies > 1 else 0,
        # The fold counters and the ROM address.
        "control": math.log2(wd + 1),
        f"w_rom:{_rom_depth_class(wd, family)}": w_rom,
        "t_rom": t_luts,
    })
    # Flip-flops: input vector and slice, accumulators, output registers, ROM output registers
    # of ROMs in logic.
    rom_width = sum(w for d, w in filter(None, ((wd, ww), t_rom))
                    if d > 1 and not rom_brams(d, w, family))
    ffs = {"const": 1.0, "ff_in": in_bits * (mw + simd), "acc": pe * layer["accumulator_bits"],
           "ff_out": mh * out_bits, "ff_rom": rom_width}
    return luts, ffs


def _stream_features(layer, family):
    """LUT and FF features of the window, pool, collect, normalize-sign and FIFO engines (and of
    a lone ROM, whose LUTs are all structural)."""
    op = layer["op"]
    if op == "rom":
        return {}, {"ff_rom": 0 if rom_brams(layer["depth"], layer["width"], family) else layer["width"]}
    if op == "fifo":
        depth, bits = layer["depth"], layer["bits"]
        # A memory of depth - 1 words and an output register (amaranth's SyncFIFOBuffered): on
        # xc7 the memory is distributed RAM (:func:`structural_luts`), on ECP5 too (not in its
        # LUT count), on iCE40 flip-flops with a read multiplexer until it becomes block RAM.
        mem = _fifo_memory(layer, family)
        luts = {"fifo:const": 1.0, "fifo:pointers": math.log2(depth + 1), "fifo:mem": mem,
                "fifo:width": bits,
                "fifo:banks": bits * mux_luts(math.ceil((depth - 1) / 16), family) if family == "ecp5" else 0}
        ffs = {"fifo:const": 1.0, "ff_out": bits, "fifo:pointers": math.log2(depth + 1),
               "fifo:mem": mem}
        return luts, ffs
    in_bits = layer["in_format"]["bits"]
    out_bits = layer["out_format"]["bits"] * layer["out_format"]["count"]
    if op in ("sliding_window", "maxpool"):
        k = layer["kernel"]
        _, w, c = layer["in_shape"]
        pixel = c * in_bits
        n, depth, width = _line_memories(layer)
        in_logic = n and not ram_brams(depth, width, family)
        # iCE40 keeps a line memory that stays in logic in flip-flops with a read multiplexer;
        # xc7 puts it in distributed RAM, counted by :func:`structural_luts`; ECP5's
        # distributed RAM is not in its LUT count.
        line_bits = n * depth * width if in_logic and family == "ice40" else 0
        luts = {f"{op}:const": 1.0, f"{op}:line": line_bits,
                # ECP5 distributed RAM is 16 words deep: a longer line reads through a
                # multiplexer over its banks.
                f"{op}:banks": n * width * mux_luts(math.ceil(depth / 16), family) if family == "ecp5" else 0,
                # Row and column counters, and each line memory's pointer.
                f"{op}:counters": math.log2(w * layer["in_shape"][0]),
                f"{op}:pointers": n * math.log2(depth) if n else 0}
        if op == "sliding_window":
            # Padding positions select the pad word instead of the input pixel.
            luts["sliding_window:pad"] = pixel if layer.get("pad", 0) else 0
        else:
            # Bipolar maximum is an OR; integers need a compare and select per window element.
            # Integers: the LUTs of a b-bit compare and select do not grow evenly with b (synthesis
            # maps some widths far better than others), so each width has its own coefficient.
            kind = "or" if layer["in_format"]["kind"] == "bipolar" else f"compare:{in_bits}"
            luts[f"maxpool:{kind}"] = pixel * (k * k - 1)
        ffs = {f"{op}:const": 1.0, f"{op}:taps": k * k * pixel, "ff_out": out_bits,
               f"{op}:line": line_bits if family == "ice40" else n * width}
        return luts, ffs
    if op == "collect":
        beats = layer["in_shape"][0] * layer["in_shape"][1]
        # Each beat's slice of the vector is written when the beat counter selects it: one
        # enable per beat, decoded from the counter (the vector's bits are flip-flops only).
        luts = {"collect:const": 1.0, "collect:beats": beats}
        return luts, {"collect:const": 1.0, "ff_out": out_bits}
    if op == "normalize_sign":
        c, pe = layer["channels"], layer["pe"]
        folds = c // pe
        sum_bits = in_bits + math.ceil(math.log2(c)) + 1
        offset_bits = math.ceil(math.log2(2 * c + 1)) + 1
        # Both phases select a fold's PE elements from the vector they hold: multiplexers that
        # together cost about a LUT per held element bit, whatever the folding. Each PE adds its
        # element into the sum (a chain as wide as the sum) and compares C*z - sum + offset: the
        # sweep's engines carry per-channel offsets, as biased layers do, and a folded PE selects
        # its fold's offset (about log2(2C) bits) and adds it, a constant when C/PE is 1.
        luts = {"normalize:const": 1.0,
                "normalize:vectors": c * in_bits,
                "normalize:chain": pe * sum_bits,
                "normalize:compare": pe * (sum_bits + (offset_bits if folds > 1 else 0))}
        ffs = {"normalize:const": 1.0, "normalize:vectors": 2 * c * in_bits, "ff_out": c,
               "normalize:sum": 2 * sum_bits}
        return luts, ffs
    raise LowbitError(f"the estimator has no model for layer op {op!r}",
                      "ops: mvau, sliding_window, maxpool, collect, normalize_sign, fifo, threshold, residual")


def layer_features(layer, family):
    """The named LUT features and FF features of one engine (a manifest layer), as two dicts."""
    if layer.get("op", "mvau") == "mvau":
        return _mvau_features(layer, family)
    return _stream_features(layer, family)


def _nnls(a, b):
    from scipy.optimize import nnls
    return nnls(a, b)[0]


def _fit(feats, counts, totals=None):
    """Non-negative coefficients over the union of ``feats``' names, on relative error (of
    ``totals``, the whole counts, where ``counts`` are what the features must explain)."""
    names = sorted({n for f in feats for n in f})
    a = np.array([[f.get(n, 0.0) for n in names] for f in feats], dtype=float)
    y = np.array(counts, dtype=float)
    w = np.array(totals if totals is not None else counts, dtype=float)
    # Each row divided by its engine's count, so small engines weigh as much as large ones.
    coef = _nnls(a / w[:, None], y / w)
    return {n: float(c) for n, c in zip(names, coef)}


def fit_models(rows):
    """Fit the per-family LUT and FF coefficients to calibration rows (see ``calibrate.run_sweep``).

    The LUT coefficients explain what :func:`structural_luts` does not already count. Where the
    flow keeps a unit's ROMs and PE rows apart (xc7), synthesis counts each part, and each part is
    fitted to its own count: the ``row:`` coefficients to the rows' LUTs, the others to the rest
    of the engine; elsewhere every coefficient is fitted to the engine's total."""
    models = {}
    for family in sorted({r["family"] for r in rows}):
        fam_rows = [r for r in rows if r["family"] == family]
        roms = rom_table(fam_rows)
        model = {"rom_luts_per_bit": roms,
                 "threshold_rom_scale": _threshold_rom_scale(fam_rows, family, roms)}
        ff_feats = [layer_features(r["layer"], family)[1] for r in fam_rows]
        # Lone ROMs are all structure: they give the ROM table, not LUT coefficients.
        fit_rows = [r for r in fam_rows if r["layer"]["op"] != "rom"]
        lut_feats = [layer_features(r["layer"], family)[0] for r in fit_rows]
        totals = [max(r["luts"], 1) for r in fit_rows]
        if not any(r.get("lut_parts", {}).get("rows") for r in fit_rows):
            fitted = [max(r["luts"] - structural_luts(r["layer"], family, model), 1) for r in fit_rows]
            luts = _fit(lut_feats, fitted, totals)
        else:
            luts = {}
            for part in ("rows", "glue"):
                feats, counts, weights = [], [], []
                for r, f, total in zip(fit_rows, lut_feats, totals):
                    f = {n: v for n, v in f.items() if n.startswith("row:") == (part == "rows")}
                    if any(f.values()):
                        feats.append(f)
                        counts.append(max(r["lut_parts"][part]
                                          - structural_luts(r["layer"], family, model, part=part), 0))
                        weights.append(total)
                luts.update(_fit(feats, counts, weights))
        models[family] = {"luts": luts, "ffs": _fit(ff_feats, [max(r["ffs"], 1) for r in fam_rows]),
                          **model}
    return models


def load_models(path=CALIBRATION_PATH):
    """The fitted coefficients recorded in ``calibration.json``."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))["models"]
    except (OSError, ValueError, KeyError):
        raise LowbitError(f"the estimator's calibration {str(path)!r} is missing or damaged",
                          "regenerate it with 'python -m benchmarks.estimator --write'") from None


def _path_levels(layer, family):
    """LUT levels of one engine's compressor tree and accumulator (two for other engines)."""
    if layer.get("op", "mvau") != "mvau":
        return 2
    inputs = layer["simd"] * layer["in_format"]["bits"]
    tree = math.ceil(math.log(max(inputs, 2), 6 if family == "xilinx" else 4)) + 1
    return tree + layer["accumulator_bits"] / 2


def estimate_fmax_mhz(layers, family):
    """Estimated fmax of a network of ``layers`` (manifest layer dicts), see :data:`FMAX_DELAYS_NS`."""
    t0, t_lut = FMAX_DELAYS_NS[family]
    levels = len(layers) + max(_path_levels(layer, family) for layer in layers)
    return 1e3 / (t0 + t_lut * levels)


def _uncalibrated(feats, model):
    """Feature names that ``layer`` uses but the family's model was never fitted on."""
    return [n for n, v in feats.items() if v and n not in model]


def estimate_layer(layer, family, models=None):
    """LUT, FF, BRAM and DSP estimate of one engine (a manifest layer dict) on ``family``."""
    if family not in BRAM_SHAPES:
        raise LowbitError(f"no estimator for family {family!r}", "families: xilinx, ice40, ecp5")
    models = models if models is not None else load_models()
    if layer.get("op") in ("residual", "threshold"):
        return _estimate_residual_parts(layer, family, models)
    model = models[family]
    lut_feats, ff_feats = layer_features(layer, family)
    if any(n.startswith("flat:") and v and n not in model["luts"] for n, v in lut_feats.items()):
        # Constant (fully unrolled) weights only simplify the rows; where such a lane was not
        # calibrated, the rows with their weights in a ROM are the estimate (an upper bound).
        lut_feats = {(n.replace("flat:", "row:", 1).replace("-const", "") if n.startswith("flat:") else n): v
                     for n, v in lut_feats.items()}
    missing = _uncalibrated(lut_feats, model["luts"])
    if missing:
        lanes = [n.split("lane:", 1)[1] for n in missing if "lane:" in n]
        what = lanes[0] if lanes else layer.get("op", "mvau")
        raise LowbitError(f"the estimator is not calibrated for {what!r} on {family}",
                          "add an engine of that kind to the sweep in boards/calibrate.py and "
                          "regenerate with 'python -m benchmarks.estimator --write'")
    # The LUTs of each part of the engine (see :func:`structural_luts`): the PE rows' features,
    # the rest's, and what the structure counts.
    parts = {part: structural_luts(layer, family, model, part=part) for part in ("rom", "rows", "glue")}
    for n, c in model["luts"].items():
        parts["rows" if n.startswith("row:") else "glue"] += c * lut_feats.get(n, 0.0)
    if family != "xilinx" or layer.get("op", "mvau") != "mvau" or not separate_rows(layer):
        # Only the xc7 flow keeps the rows apart; elsewhere they are part of one module.
        parts = {"rom": parts["rom"], "rows": 0.0, "glue": parts["rows"] + parts["glue"]}
    luts = sum(parts.values())
    ffs = sum(c * ff_feats.get(n, 0.0) for n, c in model["ffs"].items())
    if layer.get("op", "mvau") == "mvau":
        w_rom, t_rom = _roms(layer)
        brams = rom_brams(*w_rom, family) + (rom_brams(*t_rom, family) if t_rom else 0)
    elif layer["op"] in ("sliding_window", "maxpool"):
        n, depth, width = _line_memories(layer)
        brams = n * ram_brams(depth, width, family) if n else 0
    elif layer["op"] == "rom":
        brams = rom_brams(layer["depth"], layer["width"], family)
    elif layer["op"] == "fifo":
        brams = ram_brams(layer["depth"] - 1, layer["bits"], family) if layer["depth"] > 1 else 0
    else:
        brams = 0
    return {"luts": int(round(luts)), "ffs": int(round(ffs)), "brams": brams,
            "dsps": _lane_dsps(layer, family),
            "fmax_mhz": estimate_fmax_mhz([layer], family),
            "lut_parts": {part: round(v, 1) for part, v in parts.items()}}


# Per-element costs of the engines a residual block adds (hw/residual.py) and of the
# standalone threshold after it (hw/threshold.py with PE = C), from Yosys synth_xilinx runs of
# those engines alone (recorded in tests/test_residual.py): the adder is one LUT per sum bit
# (a ripple adder bit, as for level-table products) plus the FIFO's control; registers are the
# fork's beat, the skip FIFO's output register and the adder's sum; the skip FIFO's and the
# body FIFOs' memories are distributed RAM (:func:`lutram_luts`). Only xc7 was measured.
RESIDUAL_XILINX = {"control_luts": 8, "threshold_luts_per_bit": 0.14, "threshold_luts_per_channel": 0.47}


def _sum_bits(layer):
    """Bits of the adder's sum that are not constant: a sum of two ±1 is even, its low bit 0."""
    out, fmt = layer["out_format"], layer["in_format"]
    bits = out["bits"] - (1 if fmt["kind"] == "bipolar" and layer.get("body_kind") == "bipolar" else 0)
    return bits * out["count"]


def _estimate_residual_parts(layer, family, models):
    """A residual block (its body's engines, plus the fork, the skip FIFO and the adder), or the
    threshold engine after it; see :data:`RESIDUAL_XILINX`."""
    if family != "xilinx":
        raise LowbitError(f"the estimator is not calibrated for {layer['op']!r} on {family}",
                          "estimate residual networks for a Xilinx board (e.g. arty-a7-35)")
    c = RESIDUAL_XILINX
    fmt, out = layer["in_format"], layer["out_format"]
    if layer["op"] == "threshold":
        channels, levels = layer["channels"], layer["levels"]
        luts = channels * (c["threshold_luts_per_bit"] * levels * fmt["bits"] + c["threshold_luts_per_channel"])
        ffs = channels * fmt["bits"] + 2 * out["bits"] * out["count"]
        return {"luts": int(round(luts)), "ffs": int(ffs), "brams": 0, "dsps": 0,
                "fmax_mhz": estimate_fmax_mhz([layer], family)}
    parts = [estimate_layer(entry, family, models) for entry in layer["body"]]
    width, depth = fmt["bits"] * fmt["count"], layer["skip_depth"]
    sum_bits = _sum_bits(layer)
    luts = sum_bits + c["control_luts"]
    ffs = 2 * width + sum_bits + 2 * math.ceil(math.log2(depth + 1))
    for fifo_depth in [depth, *layer.get("body_fifos", [])]:
        luts += lutram_luts(fifo_depth - 1, width) if fifo_depth > 2 else 0
    for fifo_depth in layer.get("body_fifos", []):
        ffs += width + 2 * math.ceil(math.log2(fifo_depth + 1))
    return {"luts": int(round(luts + sum(p["luts"] for p in parts))),
            "ffs": int(round(ffs + sum(p["ffs"] for p in parts))),
            "brams": sum(p["brams"] for p in parts),
            "dsps": sum(p["dsps"] for p in parts),
            "fmax_mhz": min([estimate_fmax_mhz([layer], family)] + [p["fmax_mhz"] for p in parts])}


def estimate_manifest(manifest, board_name, models=None):
    """Per-layer and total estimates of a build's manifest on a board, against its capacity.

    Returns
    -------
    dict
        ``board``, ``family``, ``layers`` (name, folding, cycles, luts, ffs, brams, dsps, fmax),
        ``total``, ``capacity``, ``fits`` (bool), ``over`` (resource -> amount over capacity),
        ``utilization`` (resource -> fraction), ``cycles_per_inference``, ``latency_cycles``,
        ``fmax_mhz`` (the network's), ``clock_mhz`` (board oscillator), and inferences/s and
        latency in microseconds at both clocks.
    """
    board = get_board(board_name)
    models = models if models is not None else load_models()
    rows = []
    for layer in manifest["layers"]:
        est = estimate_layer(layer, board.family, models)
        op = layer.get("op", "mvau")
        if op == "mvau":
            kind = {"lane": layer["lane"], "weight_format": layer["weight_format"],
                    "shape": f"{layer['mh']}x{layer['mw']}",
                    "folding": f"{layer['pe']}x{layer['simd']}"}
        else:
            shape = layer.get("in_shape") or [layer.get("channels")]
            kind = {"lane": op, "weight_format": "-", "shape": "x".join(map(str, shape)),
                    "folding": str(layer.get("pe", "-"))}
        rows.append({"name": layer.get("name", "?"), "op": op, **kind,
                     "cycles": layer["cycles_per_item"],
                     "cycles_per_inference": layer.get("cycles_per_inference",
                                                       layer["cycles_per_item"]), **est})
        # The stream FIFOs the compiler put after this layer.
        for fifo in manifest.get("fifos", []):
            if fifo["after"] == layer.get("name"):
                entry = {"op": "fifo", "depth": fifo["depth"], "bits": fifo["bits"]}
                rows.append({"name": f"{fifo['after']}.fifo", "op": "fifo", "lane": "fifo",
                             "weight_format": "-", "shape": f"{fifo['depth']}x{fifo['bits']}",
                             "folding": "-", "cycles": 1, "cycles_per_inference": "-",
                             **estimate_layer(entry, board.family, models)})
    total = {k: sum(r[k] for r in rows) for k in ("luts", "ffs", "brams", "dsps")}
    capacity = board.capacity()
    over = {k: total[k] - capacity[k] for k in total if total[k] > capacity[k]}
    cycles = manifest["cycles_per_inference"]
    latency = manifest["latency_cycles"]
    fmax = estimate_fmax_mhz(manifest["layers"], board.family)
    clock = board.clock_hz / 1e6
    return {
        "board": board.name, "family": board.family, "device": board.device,
        "layers": rows, "total": total, "capacity": capacity,
        "utilization": {k: total[k] / capacity[k] for k in total if capacity[k]},
        "fits": not over, "over": over,
        "cycles_per_inference": cycles, "latency_cycles": latency,
        "fmax_mhz": fmax, "clock_mhz": clock,
        "inferences_per_second_at_fmax": fmax * 1e6 / cycles,
        # A network with window scans overlaps images and has no single latency.
        "latency_us_at_fmax": latency / fmax if latency is not None else None,
        "inferences_per_second_at_clock": clock * 1e6 / cycles,
        "latency_us_at_clock": latency / clock if latency is not None else None,
    }
