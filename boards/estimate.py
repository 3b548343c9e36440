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
- **LUTs and FFs** of a matrix-vector unit are linear in features that follow its structure: the
  lanes (``PE * SIMD`` elements times the input width, one coefficient per lane, input kind,
  constant weights and DSP use), multiplier bits, accumulators (``PE * acc``), threshold
  compares (times the tiled copies), the input-slice multiplexer (``SIMD * in_bits`` times the
  LUTs of an SF:1 multiplexer, :func:`mux_luts`), output registers (``MH * out_bits``) and
  their fold decode (``MH * out_bits * log2(NF + 1)``), the fold counters (``log2`` of the
  weight words), and ROMs left in logic as the LUTs of the ROM alone (:func:`rom_logic_luts`;
  thresholds apart, weights by their depth against the LUT's inputs, :func:`_rom_depth_class`,
  since a shallow ROM folds into the lane's LUTs and a deep one reads through a multiplexer;
  compares against threshold ROMs of at most four words apart, which fold into the compare's
  LUTs the same way). The coefficients are fitted by non-negative least squares on relative
  error to the calibration sweep (:mod:`lowbit.boards.calibrate`) and stored in
  ``calibration.json`` beside the data they were fitted to; what :func:`structural_luts` counts
  (xc7 distributed RAM, level-table products) is added, not fitted.
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
  flip-flops or block RAM), OR or compare trees of the pool, the collect's per-beat write
  enables, for normalize-sign the fold multiplexers (a C/PE:1 multiplexer, :func:`mux_luts`)
  and the PE adders and compares, and for FIFOs their pointers and queue. A network's estimate
  adds its stream FIFOs.
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


def structural_luts(layer, family):
    """LUTs that the estimator counts from the structure, not from fitted coefficients: the
    constant products of level-table lanes (:func:`table_product_luts`) and, on xc7, the
    distributed RAM of window and pool line memories (:func:`lutram_luts`)."""
    luts = table_product_luts(layer, family)
    if family == "xilinx" and layer.get("op") in ("sliding_window", "maxpool"):
        n, depth, width = _line_memories(layer)
        if n:
            luts += n * lutram_luts(depth, width)
    if family == "xilinx" and layer.get("op") == "fifo" and layer["depth"] > 2:
        luts += lutram_luts(layer["depth"] - 1, layer["bits"])
    return luts


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


def _mvau_features(layer, family):
    pe, simd, mh, mw = layer["pe"], layer["simd"], layer["mh"], layer["mw"]
    copies = layer.get("copies", 1)
    in_bits = layer["in_format"]["bits"]
    acc = layer["accumulator_bits"]
    sf = mw // simd
    levels = _levels(layer)
    out_bits = layer["out_format"]["bits"]
    (wd, ww), t_rom = _roms(layer)
    wb = ww // (pe * simd)
    if layer["lane"] == "level-table":
        # The lane works on the weight's value, not its code: as wide as the largest magnitude.
        from lowbit.formats import weight_format
        wb = max(weight_format(layer["weight_format"]).levels).bit_length() + 1
    # ROMs left in logic, as LUTs of the ROM alone (a one-word ROM is a constant folded into
    # the logic it feeds). Threshold words partly fold into their compares, so they have their
    # own coefficient.
    w_rom = 0 if rom_brams(wd, ww, family) or wd <= 1 else rom_logic_luts(wd, ww, family)
    t_luts = 0
    if t_rom is not None and not rom_brams(*t_rom, family):
        t_luts = rom_logic_luts(*t_rom, family)
    lane_work = pe * simd * (in_bits if layer["in_format"]["kind"] != "bipolar" else 1)
    # A compare against a threshold ROM of at most four words is a function of two address
    # bits besides the accumulator: synthesis folds the ROM into the compare's LUTs.
    shallow_t = t_rom is not None and t_rom[0] <= 4
    luts = {
        "const": 1.0,
        f"lane:{_lane_variant(layer, family)}": lane_work,
        # Multiplying lanes: one partial product bit per input bit and weight bit.
        "mult_bits": lane_work * wb if layer["lane"] in ("lut-multiply", "shift", "level-table") else 0,
        "acc": pe * acc,
        # Threshold compares, for every tiled copy; several levels are counted into a code.
        ("compare:shallow" if shallow_t else "compare"): pe * copies * levels * acc,
        "count": pe * copies * levels * out_bits if levels > 1 else 0,
        # Without thresholds, the dot product is scaled and offset: an adder per PE.
        "dot": 0 if levels else pe * out_bits,
        # The input slice: one SF:1 multiplexer per bit of a SIMD chunk.
        "x_select": simd * in_bits * mux_luts(sf, family),
        # Output registers, and the write of each output element at its neuron fold.
        "out": mh * out_bits,
        "decode": mh * out_bits * math.log2(_rows(layer) // pe + 1),
        # The fold counters and the ROM address.
        "control": math.log2(wd + 1),
        f"w_rom:{_rom_depth_class(wd, family)}": w_rom,
        "t_rom": t_luts,
    }
    # Flip-flops: input vector and slice, accumulators, output registers, ROM output registers
    # of ROMs in logic.
    rom_width = (ww if w_rom else 0) + (t_rom[1] if t_luts else 0)
    ffs = {"const": 1.0, "ff_in": in_bits * (mw + simd), "acc": pe * acc, "ff_out": mh * out_bits,
           "ff_rom": rom_width}
    return luts, ffs


def _stream_features(layer, family):
    """LUT and FF features of the window, pool, collect, normalize-sign and FIFO engines."""
    op = layer["op"]
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
            kind = "or" if layer["in_format"]["kind"] == "bipolar" else "compare"
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
        # The sum and the compare phase each select a fold's PE elements (a C/PE:1 multiplexer
        # per bit); each PE adds its element into the sum and compares C*z - sum + offset, both
        # as wide as the sum (the sweep's engines carry per-channel offsets, as biased layers do).
        luts = {"normalize:const": 1.0,
                "normalize:select": 2 * pe * in_bits * mux_luts(folds, family),
                "normalize:lanes": pe * sum_bits}
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

    The LUT coefficients explain what :func:`structural_luts` does not already count."""
    models = {}
    for family in sorted({r["family"] for r in rows}):
        fam_rows = [r for r in rows if r["family"] == family]
        feats = [layer_features(r["layer"], family) for r in fam_rows]
        fitted = [max(r["luts"] - structural_luts(r["layer"], family), 1) for r in fam_rows]
        models[family] = {"luts": _fit([f[0] for f in feats], fitted, [max(r["luts"], 1) for r in fam_rows]),
                          "ffs": _fit([f[1] for f in feats], [max(r["ffs"], 1) for r in fam_rows])}
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
    for name in list(lut_feats):
        # Constant (fully unrolled) weights only simplify a lane; where that variant was not
        # calibrated, the lane with its weights in a ROM is the estimate (an upper bound).
        in_rom = name.replace("-const", "")
        if in_rom != name and name not in model["luts"] and in_rom in model["luts"]:
            lut_feats[in_rom] = lut_feats.pop(name)
    missing = _uncalibrated(lut_feats, model["luts"])
    if missing:
        lanes = [n[5:] for n in missing if n.startswith("lane:")]
        what = lanes[0] if lanes else layer.get("op", "mvau")
        raise LowbitError(f"the estimator is not calibrated for {what!r} on {family}",
                          "add an engine of that kind to the sweep in boards/calibrate.py and "
                          "regenerate with 'python -m benchmarks.estimator --write'")
    luts = sum(c * lut_feats.get(n, 0.0) for n, c in model["luts"].items())
    luts += structural_luts(layer, family)
    ffs = sum(c * ff_feats.get(n, 0.0) for n, c in model["ffs"].items())
    if layer.get("op", "mvau") == "mvau":
        w_rom, t_rom = _roms(layer)
        brams = rom_brams(*w_rom, family) + (rom_brams(*t_rom, family) if t_rom else 0)
    elif layer["op"] in ("sliding_window", "maxpool"):
        n, depth, width = _line_memories(layer)
        brams = n * ram_brams(depth, width, family) if n else 0
    elif layer["op"] == "fifo":
        brams = ram_brams(layer["depth"] - 1, layer["bits"], family) if layer["depth"] > 1 else 0
    else:
        brams = 0
    return {"luts": int(round(luts)), "ffs": int(round(ffs)), "brams": brams,
            "dsps": _lane_dsps(layer, family),
            "fmax_mhz": estimate_fmax_mhz([layer], family)}


# Per-element costs of the engines a residual block adds (hw/residual.py) and of the
# standalone threshold after it (hw/threshold.py with PE = C), from Yosys synth_xilinx runs of
# those engines alone (recorded in tests/test_residual.py): the adder is one LUT per sum bit
# (a ripple adder bit, as for level-table products) plus the FIFO's control; registers are the
# fork's beat, the skip FIFO's output register and the adder's sum; the skip FIFO's and the
# body FIFOs' memories are distributed RAM (:func:`lutram_luts`). Only xc7 was measured.
RESIDUAL_XILINX = {"control_luts": 8, "threshold_luts_per_bit": 0.45, "threshold_luts_per_channel": 1.5}


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
