"""MatMul: the integer matrix product of a fully connected or convolutional layer, and its engine.

In hardware a MatMul is a matrix-vector(-threshold) unit (:class:`lowbit.hw.mvau.MatrixVectorUnit`,
manifest op ``mvau``) with PE x SIMD folding, one arithmetic lane per weight format; a
MultiThreshold right after it runs inside the same unit (its compare). The estimator prices a
unit by its parts as synthesis maps them: ROMs (weights, thresholds), PE rows (lane,
accumulator, compares) and the rest.
"""

import math
from dataclasses import dataclass, replace

import numpy as np

from lowbit.core.bounds import dot_bounds
from lowbit.core.errors import LowbitError
from lowbit.core.formats import weight_format
from lowbit.core.schema import NATURAL, POSITIVE, TEXT, Check, Record, list_of, one_of, optional
from lowbit.core.types import BIPOLAR, ValueType, int_type_for
from lowbit.hw.fabric import LUT_BITS, isolated_rom, mux_luts, rom_brams, rom_depth_class, rom_logic_luts, rom_luts
from lowbit.hw.lanes import lane_counters, signed_digits
from lowbit.hw.mvau import ROM_STYLES, MatrixVectorUnit
from lowbit.hw.payload import VectorFormat

from ..graph import TYPE_RECORD, Folding, Op, check_folding, check_last_axis, int_array, type_record
from .threshold import MultiThreshold

__all__ = ["MatMul", "WEIGHT_MEMORIES", "table_product_luts"]

WEIGHT_MEMORIES = ("auto", "block", "lut", "const")

def _is_weight_format(name):
    try:
        return isinstance(name, str) and weight_format(name) is not None
    except LowbitError:
        return False


WEIGHT_FORMAT = Check("a weight format of the registry", _is_weight_format)

# Yosys' synth_xilinx maps a lane's multiplier to a DSP48E1 once its signed operands add up to
# 10 bits or more (bracketed by the sweep: 4 x 5 and 5 x 4 stay in LUTs, 5 x 5 and 3 x 9 map).
_XC7_DSP_MIN_PRODUCT_BITS = 10


@dataclass(frozen=True, eq=False)
class MatMul(Op):
    """``y[n, h] = sum_w x[n, w] * W[h, w]``, exact in int64.

    Parameters
    ----------
    name : str
        Layer name, carried to the hardware and the manifest.
    weights : array (MH, MW)
        Integer weight levels of ``weight_format`` (for bipolar: -1 or +1).
    weight_format : str
        A name from the formats registry.
    in_type : ValueType
        Input element type.
    folding : Folding, optional
        PE x SIMD; PE must divide MH and SIMD must divide MW.
    copies : int
        Tiled weights: the rows are ``copies`` repeats of one tile of MH/copies rows, so the
        hardware computes each tile row's dot product once (Tiled Bit Networks' compute-once).
    weight_memory : {"auto", "block", "lut", "const"}
        Where the hardware keeps the weights (``lowbit.compiler.passes.choose_memories``).

    On a feature map (N, H, W, MW) the op applies to every pixel: a convolution after a
    :class:`~lowbit.compiler.ops.window.SlidingWindow`.
    """

    name: str
    weights: np.ndarray
    weight_format: str = "bipolar"
    in_type: ValueType = BIPOLAR
    folding: Folding = None
    copies: int = 1
    weight_memory: str = "auto"
    pipeline: int = 0
    foldable = True
    engine_op = "mvau"
    record_fields = {"weight_format": WEIGHT_FORMAT, "in_type": TYPE_RECORD, "copies": POSITIVE,
                     "weight_memory": one_of(*WEIGHT_MEMORIES), "folding": optional(list_of(POSITIVE, length=2)),
                     "pipeline": NATURAL}
    record_defaults = {"copies": 1, "weight_memory": "auto", "pipeline": 0}
    record_arrays = ("weights",)
    entry_fields = {
        "lane": TEXT, "accumulator_bits": POSITIVE, "weight_format": WEIGHT_FORMAT,
        "mh": POSITIVE, "mw": POSITIVE, "copies": POSITIVE, "pe": POSITIVE, "simd": POSITIVE,
        "neuron_folds": POSITIVE, "synapse_folds": POSITIVE,
        "weight_memory": Record({"depth": POSITIVE, "width": POSITIVE, "bits": POSITIVE}),
        "threshold_levels": NATURAL, "pipeline": NATURAL, "pipeline_stages": NATURAL,
    }
    entry_defaults = {"pipeline": 0, "pipeline_stages": 0}  # builds written before pipelining

    def __post_init__(self):
        object.__setattr__(self, "weights", int_array(f"{self.name}: weights", self.weights, 2))
        fmt = weight_format(self.weight_format)
        bad = ~np.isin(self.weights, fmt.levels)
        if bad.any():
            h, w = np.argwhere(bad)[0]
            raise LowbitError(
                f"{self.name}: weight [{h}, {w}] = {self.weights[h, w]} is not a level of format "
                f"{fmt.name!r} {list(fmt.levels)}")
        if self.weight_memory not in WEIGHT_MEMORIES:
            raise LowbitError(f"{self.name}: weight memory must be one of {', '.join(WEIGHT_MEMORIES)}, "
                              f"not {self.weight_memory!r}")
        if not isinstance(self.copies, int) or isinstance(self.copies, bool) or self.copies < 1 \
                or self.mh % self.copies:
            raise LowbitError(f"{self.name}: copies must be a positive divisor of the {self.mh} rows, "
                              f"not {self.copies!r}")
        if self.copies > 1:
            tile = self.weights[:self.mh // self.copies]
            if not np.array_equal(self.weights, np.tile(tile, (self.copies, 1))):
                raise LowbitError(f"{self.name}: the rows are not {self.copies} copies of one tile")
        if not isinstance(self.pipeline, int) or isinstance(self.pipeline, bool) or self.pipeline < 0:
            raise LowbitError(f"{self.name}: pipeline must be the counter levels between registers "
                              f"(0 for none), not {self.pipeline!r}")
        if self.folding is not None:
            check_folding(self.name, self.mh // self.copies, self.mw, self.folding)
        if self.weight_memory == "const" and self.folding is not None and self.cycles() != 1:
            raise LowbitError(f"{self.name}: constant weights need a fully unrolled folding, not {self.folding}",
                              f"use PE={self.mh // self.copies} and SIMD={self.mw}, or another weight memory")

    def out_shape(self, shape):
        check_last_axis(self.name, shape, self.mw)
        return (*shape[:-1], self.mh)

    @property
    def tile_rows(self):
        """Rows the hardware computes: MH / copies."""
        return self.mh // self.copies

    @property
    def mh(self):
        return self.weights.shape[0]

    @property
    def mw(self):
        return self.weights.shape[1]

    in_features = mw
    out_features = mh

    @property
    def out_type(self):
        lo, hi = self.bounds
        return int_type_for(lo, hi)

    @property
    def bounds(self):
        """Exact value range of the outputs over every input of ``in_type``."""
        return dot_bounds(self.weights, self.in_type.min, self.in_type.max)

    def reference(self, x):
        """Golden model, exact in int64. For bipolar x and W it is the XNOR-popcount identity
        ``dot = 2 * popcount(XNOR(x, w)) - MW`` that the hardware's XNOR lane computes."""
        x = np.asarray(x, dtype=np.int64)
        return x @ self.weights.T

    def cycles(self, folding=None):
        """Cycles per vector (per pixel on a feature map)."""
        f = folding or self.folding or Folding(1, 1)
        return (self.tile_rows // f.pe) * (self.mw // f.simd)

    def with_folding(self, folding):
        return replace(self, folding=folding)

    def with_weight_memory(self, weight_memory):
        return replace(self, weight_memory=weight_memory)

    def with_pipeline(self, pipeline):
        return replace(self, pipeline=pipeline)

    # -- graph.npz ------------------------------------------------------------------------------
    def record(self):
        fields = {"weight_format": self.weight_format, "in_type": type_record(self.in_type),
                  "copies": self.copies, "weight_memory": self.weight_memory, "pipeline": self.pipeline,
                  "folding": [self.folding.pe, self.folding.simd] if self.folding else None}
        return fields, {"weights": self.weights}

    @classmethod
    def from_record(cls, name, fields, arrays, body):
        folding = Folding(*fields["folding"]) if fields["folding"] else None
        return cls(name, arrays["weights"], fields["weight_format"], ValueType(**fields["in_type"]),
                   folding, fields.get("copies", 1), fields.get("weight_memory", "auto"),
                   fields.get("pipeline", 0))

    # -- hardware -------------------------------------------------------------------------------
    def fuses(self, nxt):
        return isinstance(nxt, MultiThreshold)

    def unit(self, threshold=None, folding=None, in_format=None):
        """The matrix-vector unit of this MatMul (and its MultiThreshold or None) under ``folding``
        (default: its own, else 1x1), for inputs of ``in_format`` (default: ``in_type``)."""
        f = folding or self.folding or Folding(1, 1)
        if in_format is None:
            in_format = VectorFormat(self.in_type.kind, self.in_type.bits, self.mw)
        th = threshold.thresholds if threshold is not None else None
        memory = self.weight_memory
        if memory == "const" and (self.tile_rows // f.pe) * (self.mw // f.simd) != 1:
            memory = "auto"  # a candidate folding of a search, not the built one
        out_kind = threshold.out_type.kind if threshold is not None else "bipolar"
        invert = threshold.invert if threshold is not None else None
        return MatrixVectorUnit(self.weights[:self.tile_rows], self.weight_format,
                                VectorFormat(in_format.kind, in_format.bits, self.mw), th,
                                pe=f.pe, simd=f.simd, copies=self.copies, weight_memory=memory,
                                out_kind=out_kind, invert=invert, pipeline=self.pipeline)

    def engine(self, layer, in_format, lowering):
        return self.unit(layer.ops[1] if len(layer.ops) > 1 else None, None, in_format)

    def entry(self, layer, engine):
        th = layer.ops[1] if len(layer.ops) > 1 else None
        return {
            "op": self.engine_op,
            "lane": engine.lane,
            "accumulator_bits": engine.accumulator_bits,
            "weight_format": self.weight_format,
            "mh": self.mh, "mw": self.mw, "copies": self.copies,
            "pe": engine.pe, "simd": engine.simd,
            "neuron_folds": engine.neuron_folds, "synapse_folds": engine.synapse_folds,
            "weight_memory": {"depth": engine.cycles_per_item, "width": engine.pe * engine.simd,
                              "bits": engine.weight_memory_bits, "style": self.weight_memory},
            "thresholds": th.name if th is not None else None,
            "threshold_levels": int(th.thresholds.shape[1]) if th is not None else 0,
            "pipeline": engine.pipeline, "pipeline_stages": engine.pipeline_stages,
            "input_interval": engine.input_interval,
            "output_queue_depth": engine.output_queue_depth if engine.pipeline else 0,
        }

    # -- cost -----------------------------------------------------------------------------------
    @classmethod
    def cost_features(cls, entry, family):
        """LUT and FF features of a matrix-vector unit: ``row:`` features of its PE rows (times PE)
        where they are modules of their own, ``flat:`` ones where they are not, then those of the
        unit around them."""
        layer = entry
        pe, simd, mh, mw = layer["pe"], layer["simd"], layer["mh"], layer["mw"]
        copies = layer.get("copies", 1)
        in_bits = layer["in_format"]["bits"]
        sf, nf = mw // simd, _rows(layer) // pe
        out_bits = layer["out_format"]["bits"]
        (wd, ww), t_rom = _roms(layer)
        style = _rom_style(layer)
        prefix = "row:" if cls.separate_rows(layer) else "flat:"
        luts = {prefix + name: pe * v for name, v in _row_features(layer, family).items()}
        # ROMs in logic that are not modules of their own, as LUTs of the ROM alone (a one-word ROM
        # is a constant of the logic it feeds; the others are counted by :meth:`structural_luts`).
        w_rom = 0 if rom_brams(wd, ww, family, style) or wd <= 1 or isolated_rom(wd, ww, family, style) \
            else rom_logic_luts(wd, ww, family)
        t_luts = 0
        if t_rom is not None and not rom_brams(*t_rom, family, style) and not isolated_rom(*t_rom, family, style):
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
            f"w_rom:{rom_depth_class(wd, family)}": w_rom,
            "t_rom": t_luts,
        })
        # Flip-flops: input vector and slice, accumulators, output registers, ROM output registers
        # of ROMs in logic.
        rom_width = sum(w for d, w in filter(None, ((wd, ww), t_rom))
                        if d > 1 and not rom_brams(d, w, family, style))
        ffs = {"const": 1.0, "ff_in": in_bits * (mw + simd), "acc": pe * layer["accumulator_bits"],
               "ff_out": mh * out_bits, "ff_rom": rom_width}
        return luts, ffs

    @classmethod
    def structural_luts(cls, entry, family, model):
        """The constant products of level-table lanes (:func:`table_product_luts`) and the ROMs
        mapped on their own (threshold ROMs scaled by the model's ``threshold_rom_scale``)."""
        rom_table = model.get("rom_luts_per_bit")
        parts = {"rom": 0, "rows": 0, "glue": 0}
        products = table_product_luts(entry, family)
        parts["rows" if cls.separate_rows(entry) and family == "xilinx" else "glue"] += products
        weights, thresholds = _roms(entry)
        style = _rom_style(entry)
        if isolated_rom(*weights, family, style):
            parts["rom"] += rom_luts(*weights, family, rom_table, style)
        if thresholds and isolated_rom(*thresholds, family, style):
            parts["rom"] += model.get("threshold_rom_scale", 1.0) * rom_luts(*thresholds, family, rom_table, style)
        return parts

    @classmethod
    def separate_rows(cls, entry):
        """Whether the unit's PE rows are modules of their own: whenever its weights come from a
        ROM (:mod:`lowbit.hw.mvau`); fully unrolled, its constant weights keep them together."""
        return entry["weight_memory"]["depth"] > 1

    @classmethod
    def brams(cls, entry, family):
        w_rom, t_rom = _roms(entry)
        style = _rom_style(entry)
        return rom_brams(*w_rom, family, style) + (rom_brams(*t_rom, family, style) if t_rom else 0)

    @classmethod
    def dsps(cls, entry, family):
        """DSP blocks of a multiplying lane: one per PE x SIMD multiplier that synthesis maps to one.

        xc7: a DSP48E1 once the operands are 10 bits together (narrower ones stay in LUTs). ECP5:
        synth_ecp5 maps every multiplier to a MULT18X18D, however narrow. iCE40: synth_ice40 maps
        none to SB_MAC16 (it infers DSPs only when asked to)."""
        if family == "ice40" or entry["lane"] != "lut-multiply":
            return 0
        if family == "ecp5":
            return entry["pe"] * entry["simd"]
        rows, mw = _rows(entry), entry["mw"]
        wb = entry["weight_memory"]["bits"] // (rows * mw)
        fmt = entry["in_format"]
        # Inputs enter the multiplier signed: bipolar as 2 bits, uint k zero-extended to k + 1.
        x_bits = {"bipolar": 2, "uint": fmt["bits"] + 1}.get(fmt["kind"], fmt["bits"])
        return entry["pe"] * entry["simd"] if wb + x_bits >= _XC7_DSP_MIN_PRODUCT_BITS else 0

    @classmethod
    def path_levels(cls, entry, family):
        """LUT levels of the compressor tree and the accumulator."""
        inputs = entry["simd"] * entry["in_format"]["bits"]
        tree = math.ceil(math.log(max(inputs, 2), 6 if family == "xilinx" else 4)) + 1
        return tree + entry["accumulator_bits"] / 2

    @classmethod
    def summary(cls, entry):
        return {"lane": entry["lane"], "weight_format": entry["weight_format"],
                "shape": f"{entry['mh']}x{entry['mw']}", "folding": f"{entry['pe']}x{entry['simd']}"}

    @classmethod
    def fit(cls, rows, family, model):
        """``threshold_rom_scale``: how many of the LUTs of a random ROM a threshold ROM of the
        same shape takes. Its words are sorted and narrow, so high bits repeat across words. The
        least-squares ratio, on relative error, over the units whose threshold ROM synthesis maps
        on its own."""
        rom_table = model["rom_luts_per_bit"]
        num = den = 0.0
        for r in rows:
            layer = r["layer"]
            if layer.get("op", "mvau") != cls.engine_op or "lut_parts" not in r:
                continue
            weights, thresholds = _roms(layer)
            style = _rom_style(layer)
            if not thresholds or not isolated_rom(*thresholds, family, style):
                continue
            own = rom_luts(*thresholds, family, rom_table, style)
            rest = r["lut_parts"]["rom"] - (rom_luts(*weights, family, rom_table, style)
                                            if isolated_rom(*weights, family, style) else 0)
            weight = 1 / max(r["luts"], 1) ** 2
            num += weight * own * rest
            den += weight * own * own
        return {"threshold_rom_scale": num / den if den else 1.0}


def _lane_variant(layer, family):
    k = layer["in_format"]["kind"]
    bip = "bip" if k == "bipolar" else "k"
    # A one-word weight ROM is a constant: synthesis simplifies the lane by every weight.
    const = "-const" if layer["weight_memory"]["depth"] == 1 else ""
    dsp = "-dsp" if MatMul.dsps(layer, family) else ""
    lane = layer["lane"]
    if lane == "level-table":
        # A level table selects among its products as the shift lane selects among shifts; on
        # bipolar inputs the products are the constants +-c, a lookup as in a multiplying lane.
        lane = "lut-multiply" if k == "bipolar" else "shift"
    return f"{lane}-{bip}{const}{dsp}"


def table_product_luts(layer, family):
    """LUTs of a level-table unit's constant products ``c_m * x``, per lane (PE * SIMD).

    Each output bit of the selected product is a function of the input element's bits and the
    magnitude code. When those fit one LUT (6 inputs on xc7, 4 on iCE40/ECP5), synthesis makes
    each output bit one LUT, or ``2**(n - inputs)`` for n inputs a few more; otherwise it keeps
    the shift-add chains of ``lowbit.hw.lanes``, one adder per signed digit of c after the first,
    as wide as ``c * x``, one LUT per adder bit. The cheaper of the two is the estimate. 0 for
    other lanes and for bipolar inputs (the lane selects the constants themselves)."""
    if layer["lane"] != "level-table":
        return 0
    fmt = layer["in_format"]
    if fmt["kind"] == "bipolar":
        return 0
    table = weight_format(layer["weight_format"])
    mags = [c for c in table.levels if c > 0]
    # Signed width of an input element: uint k one more for the sign.
    x_bits = fmt["bits"] + (fmt["kind"] == "uint")
    width = x_bits + max(mags).bit_length()
    inputs = fmt["bits"] + table.storage_bits - 1  # the element and the magnitude code
    lookup = width * 2 ** max(0, inputs - math.log2(LUT_BITS[family]))
    adders = sum((len(signed_digits(c)) - 1) * (x_bits + c.bit_length()) for c in mags)
    return layer["pe"] * layer["simd"] * min(lookup, adders)


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


def _rom_style(layer):
    """The ``rom_style`` of the unit's weight and threshold ROMs: "block" or "logic" when its
    weight memory is chosen, None when left to synthesis."""
    return ROM_STYLES.get(layer["weight_memory"].get("style"))


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
              and 2 ** (k + wb) <= LUT_BITS[family])
    # Thresholds are constants of the row when there is one neuron fold; on a flattened
    # design, a threshold ROM of at most four words is a function of two address bits besides
    # the accumulator, which synthesis folds into the compare's LUTs.
    t_depth = t_rom[0] if t_rom else 0
    source = ("compare:const" if t_depth <= 1 else
              "compare:shallow" if t_depth <= 4 and not isolated_rom(*t_rom, family, _rom_style(layer))
              else "compare")
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
