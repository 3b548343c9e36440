"""The calibration sweep: engines of every lane at several foldings and sizes, synthesized by Yosys.

The estimator (:mod:`lowbit.boards.estimate`) is fitted to and tested against these results. The
sweep builds each matrix-vector unit straight from seeded random integer weights and thresholds,
and each window, pool, collect and normalize-sign unit from its geometry, so no training is needed, synthesizes it for every family and records, per engine, the layer
description the estimator reads (the same fields as a build's ``manifest.json``) beside the
synthesized counts. ``python -m benchmarks.estimator --write`` regenerates ``calibration.json``.
"""

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from lowbit.files import atomic_write_text

__all__ = ["EngineSpec", "StreamSpec", "SWEEP", "FAMILIES", "build_engine", "layer_record", "synthesize_engine",
           "run_sweep", "sweep_families", "EXTENDED_FAMILIES", "CALIBRATION_PATH", "load_calibration"]

CALIBRATION_PATH = Path(__file__).with_name("calibration.json")
FAMILIES = ("xilinx", "ice40", "ecp5")


@dataclass(frozen=True)
class EngineSpec:
    """One engine of the sweep: weight format, input type, matrix size, folding, threshold levels.

    ``levels`` is the number of thresholds per row (1: bipolar output, 3: 2-bit output), or 0 for
    an engine that emits its dot products (a network's last layer).
    """

    weight_format: str
    in_kind: str
    in_bits: int
    mh: int
    mw: int
    pe: int
    simd: int
    levels: int = 1
    copies: int = 1

    op = "mvau"

    @property
    def name(self):
        inp = "bip" if self.in_kind == "bipolar" else f"{self.in_kind}{self.in_bits}"
        out = {0: "acc", 1: "t1"}.get(self.levels, f"t{self.levels}")
        tiled = f"-c{self.copies}" if self.copies > 1 else ""
        return f"{self.weight_format}-{inp}-{self.mh}x{self.mw}-{self.pe}x{self.simd}-{out}{tiled}"


@dataclass(frozen=True)
class StreamSpec:
    """One non-matrix engine of the sweep: a sliding window, max pool, collect or normalize-sign.

    ``height`` x ``width`` x ``channels`` is the input feature map (for ``normalize_sign``:
    ``channels`` accumulators of ``bits`` bits, ``pe`` per cycle); ``kind``/``bits`` its elements.
    """

    op: str
    height: int
    width: int
    channels: int
    kind: str = "bipolar"
    bits: int = 1
    kernel: int = 3
    stride: int = 1
    pad: int = 0
    pe: int = 1

    @property
    def name(self):
        inp = "bip" if self.kind == "bipolar" else f"{self.kind}{self.bits}"
        if self.op == "normalize_sign":
            return f"normalize-{inp}-c{self.channels}-pe{self.pe}"
        shape = f"{self.height}x{self.width}x{self.channels}"
        if self.op == "collect":
            return f"collect-{inp}-{shape}"
        return f"{self.op}-{inp}-{shape}-k{self.kernel}s{self.stride}p{self.pad}"


def _spec(fmt, inp, mh, mw, pe, simd, levels=1, copies=1):
    kind, bits = ("bipolar", 1) if inp == "bip" else ("uint", int(inp[4:]))
    return EngineSpec(fmt, kind, bits, mh, mw, pe, simd, levels, copies)


# Every lane at two or more foldings: XNOR-popcount (bipolar x bipolar) at narrow, wide and fully
# unrolled foldings with weight memories from a few hundred bits (logic) to 16 Kbit (block RAM);
# add-sub (bipolar weights x k-bit), add-sub-skip (ternary, both input kinds), and-popcount
# ({0,1}, both input kinds), lut-multiply (levels5/9/17), shift (pow2), tiled copies, engines
# that emit dot products or k-bit outputs; then the non-matrix engines of CNNs and binary
# normalized networks.
SWEEP = (
    _spec("bipolar", "bip", 64, 64, 1, 8),
    _spec("bipolar", "bip", 64, 64, 4, 16),
    _spec("bipolar", "bip", 64, 64, 8, 64),
    _spec("bipolar", "bip", 32, 32, 32, 32),
    _spec("bipolar", "bip", 64, 256, 1, 8),
    _spec("bipolar", "bip", 10, 64, 2, 16, levels=0),
    _spec("bipolar", "uint2", 64, 64, 4, 16),
    _spec("bipolar", "uint4", 32, 64, 2, 8, levels=3),
    _spec("bipolar", "uint2", 16, 128, 1, 32, levels=0),
    _spec("ternary", "bip", 64, 64, 4, 16),
    _spec("ternary", "uint2", 64, 64, 4, 16),
    _spec("ternary", "uint4", 32, 128, 1, 32, levels=3),
    _spec("binary01", "bip", 64, 64, 4, 16, levels=0),
    _spec("binary01", "uint2", 64, 64, 2, 16),
    _spec("levels5", "uint2", 32, 64, 2, 16),
    _spec("levels5", "bip", 32, 64, 4, 8),
    _spec("levels9", "uint2", 32, 64, 2, 16),
    _spec("levels17", "uint4", 16, 64, 1, 16, levels=3),
    _spec("pow2", "uint2", 32, 64, 2, 16),
    _spec("pow2", "uint4", 16, 32, 4, 8, levels=0),
    _spec("bipolar", "bip", 64, 64, 4, 16, copies=4),
    _spec("ternary", "uint2", 32, 64, 2, 16, copies=2),
    StreamSpec("sliding_window", 8, 8, 16),
    StreamSpec("sliding_window", 12, 12, 8, "uint", 2, pad=1),
    StreamSpec("sliding_window", 28, 28, 1, "uint", 8),
    StreamSpec("sliding_window", 16, 16, 32, stride=2, pad=1),
    StreamSpec("maxpool", 8, 8, 32, kernel=2, stride=2),
    StreamSpec("maxpool", 12, 12, 8, "uint", 2, kernel=2, stride=2),
    StreamSpec("maxpool", 24, 24, 16, kernel=3, stride=3),
    StreamSpec("collect", 4, 4, 32),
    StreamSpec("collect", 5, 5, 16, "uint", 2),
    StreamSpec("normalize_sign", 1, 1, 64, "int", 8),
    StreamSpec("normalize_sign", 1, 1, 128, "uint", 7, pe=4),
    StreamSpec("normalize_sign", 1, 1, 32, "int", 10, pe=32),
)


def _build_stream_engine(spec, seed):
    from lowbit.hw.collect import Collect
    from lowbit.hw.normalize import NormalizeSign
    from lowbit.hw.payload import VectorFormat
    from lowbit.hw.pool import MaxPool
    from lowbit.hw.window import SlidingWindow

    if spec.op == "sliding_window":
        return SlidingWindow(spec.height, spec.width, spec.channels, spec.kernel, stride=spec.stride,
                             pad=spec.pad, kind=spec.kind, bits=spec.bits,
                             pad_value=-1 if spec.kind == "bipolar" and spec.pad else None)
    if spec.op == "maxpool":
        return MaxPool(spec.height, spec.width, spec.channels, spec.kernel, stride=spec.stride,
                       kind=spec.kind, bits=spec.bits)
    if spec.op == "collect":
        return Collect(VectorFormat(spec.kind, spec.bits, spec.channels), spec.height * spec.width)
    # A layer bias per channel, small against the range of C * z.
    offset = np.random.default_rng(seed).integers(-spec.channels, spec.channels + 1,
                                                  size=spec.channels).tolist()
    return NormalizeSign(VectorFormat(spec.kind, spec.bits, spec.channels), pe=spec.pe,
                         offset=offset)


# The first six (XNOR) engines are synthesized for every family; the others, so far, for xc7
# only (Yosys takes a minute or more per engine and family on a small shared machine). The
# estimator refuses an engine kind on a family it was not calibrated for, naming this sweep.
EXTENDED_FAMILIES = ("xilinx",)


def sweep_families(spec):
    """The families ``spec`` is synthesized for in the calibration."""
    return FAMILIES if SWEEP.index(spec) < 6 else EXTENDED_FAMILIES


def build_engine(spec, seed=0):
    """The engine for ``spec`` with seeded random weights, thresholds or offsets.

    A :class:`lowbit.hw.mvau.MatrixVectorUnit` for an :class:`EngineSpec`; a window, pool,
    collect or normalize-sign unit for a :class:`StreamSpec`.
    """
    from lowbit.hw.mvau import MatrixVectorUnit
    from lowbit.hw.payload import VectorFormat

    from lowbit.formats import weight_format

    if spec.op != "mvau":
        return _build_stream_engine(spec, seed)
    rng = np.random.default_rng(seed)
    levels = weight_format(spec.weight_format).levels
    weights = rng.choice(levels, size=(spec.mh // spec.copies, spec.mw)).astype(np.int64)
    thresholds = None
    if spec.levels:
        # Thresholds spread over the middle of the dot-product range, so none folds to a constant.
        hi = max(1, spec.mw * ((1 << spec.in_bits) - 1 if spec.in_kind == "uint" else 1) // 4)
        thresholds = np.sort(rng.integers(-hi, hi + 1, size=(spec.mh, spec.levels)), axis=1)
    in_format = VectorFormat(spec.in_kind, spec.in_bits, spec.mw)
    return MatrixVectorUnit(weights, spec.weight_format, in_format, thresholds,
                            pe=spec.pe, simd=spec.simd, copies=spec.copies)


def layer_record(engine, spec=None):
    """The fields of a manifest layer that the estimator reads, from an engine's properties.

    The same keys as ``lowbit.compiler.codegen.build_manifest`` writes; ``spec`` (a
    :class:`StreamSpec`) gives the window geometry of non-matrix engines.
    """
    def fmt(f):
        return {"kind": f.kind, "bits": f.bits, "count": f.count}
    if spec is not None and spec.op != "mvau":
        record = {"op": spec.op, "in_format": fmt(engine.in_format),
                  "out_format": fmt(engine.out_format), "latency": engine.latency,
                  "cycles_per_item": getattr(engine, "cycles_per_item", None)
                  or engine.cycles_per_image}
        shape = [spec.height, spec.width, spec.channels]
        if spec.op in ("sliding_window", "maxpool"):
            record.update(kernel=spec.kernel, stride=spec.stride, in_shape=shape,
                          buffer_pixels=engine.buffer_pixels)
            if spec.op == "sliding_window":
                record["pad"] = spec.pad
        elif spec.op == "collect":
            record["in_shape"] = shape
        else:
            record.update(channels=spec.channels, pe=spec.pe)
        return record
    return {
        "op": "mvau",
        "lane": engine.lane,
        "copies": engine.copies,
        "weight_format": engine.weight_format,
        "mh": engine.mh, "mw": engine.mw, "pe": engine.pe, "simd": engine.simd,
        "accumulator_bits": engine.accumulator_bits,
        "cycles_per_item": engine.cycles_per_item,
        "latency": engine.latency,
        "weight_memory": {"depth": engine.cycles_per_item, "width": engine.pe * engine.simd,
                          "bits": engine.weight_memory_bits},
        "in_format": fmt(engine.in_format),
        "out_format": fmt(engine.out_format),
    }


def synthesize_engine(engine, family, cache_dir=None):
    """Yosys counts of one engine on its own (top ``engine``)."""
    from amaranth.back import verilog

    from .synth import synthesize

    text = verilog.convert(engine, name="engine", emit_src=False)
    return synthesize(text, "engine", family, cache_dir=cache_dir)


def run_sweep(families=FAMILIES, specs=SWEEP, progress=None):
    """Synthesize every engine of ``specs`` for every family; return the calibration rows."""
    rows = []
    for spec in specs:
        engine = build_engine(spec)
        layer = layer_record(engine, spec)
        for family in [f for f in families if f in sweep_families(spec)]:
            r = synthesize_engine(engine, family)
            rows.append({"engine": spec.name, "spec": asdict(spec), "family": family,
                         "layer": layer, "flow": r.flow, "yosys_version": r.yosys_version,
                         "luts": r.luts, "ffs": r.ffs, "brams": r.brams, "dsps": r.dsps,
                         "carry": r.carry, "seconds": round(r.seconds, 2)})
            if progress:
                progress(rows[-1])
    return rows


def write_calibration(rows, path=CALIBRATION_PATH):
    atomic_write_text(path, json.dumps({"rows": rows}, indent=1, sort_keys=True) + "\n")


def load_calibration(path=CALIBRATION_PATH):
    """The recorded calibration rows (see :func:`run_sweep`)."""
    return json.loads(Path(path).read_text(encoding="utf-8"))["rows"]


def random_bipolar_mlp(widths, foldings=None, seed=0):
    """An IR graph of a binary (W1A1) MLP with seeded random weights and thresholds.

    For measuring hardware cost without training: ``widths`` = (inputs, hidden..., outputs); every
    hidden layer is a bipolar MatMul and a one-level MultiThreshold, the last MatMul emits its
    integer dot products. ``foldings`` is a list of ``(pe, simd)`` per layer (default: 1x1).
    """
    from lowbit.compiler.ir import BIPOLAR, Folding, Graph, MatMul, MultiThreshold

    rng = np.random.default_rng(seed)
    layers = list(zip(widths[:-1], widths[1:]))
    foldings = foldings or [(1, 1)] * len(layers)
    nodes = []
    for k, ((mw, mh), (pe, simd)) in enumerate(zip(layers, foldings)):
        mm = MatMul(f"fc{k}", rng.choice([-1, 1], size=(mh, mw)), "bipolar", BIPOLAR,
                    Folding(pe, simd))
        nodes.append(mm)
        if k < len(layers) - 1:
            # A bipolar dot product of mw terms has the parity of mw; thresholds near zero.
            t = rng.integers(-max(1, mw // 16), max(1, mw // 16) + 1, size=(mh, 1))
            nodes.append(MultiThreshold(f"th{k}", t, mm.out_type, BIPOLAR))
    return Graph(BIPOLAR, widths[0], nodes, meta={"source": f"random W1A1 MLP, seed {seed}"})
