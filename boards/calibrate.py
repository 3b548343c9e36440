"""The calibration sweep: engines of every lane at several foldings and sizes, synthesized by Yosys.

The estimator (:mod:`lowbit.boards.estimate`) is fitted to and tested against these results. The
sweep draws each matrix-vector unit as a MatMul of seeded random integer weights and thresholds,
and each other engine from its geometry (each engine kind builds its own, from its op's module),
so no training is needed; it lowers each as the compiler does, synthesizes it for every family
and records, per engine, its manifest entry (what the estimator reads) beside the synthesized
counts. ``python -m benchmarks.estimator --write`` regenerates ``calibration.json``.
"""

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from amaranth.back import verilog

from lowbit.compiler.ir import BIPOLAR, Folding, Graph, MatMul, MultiThreshold, ValueType, divisors, engine_kind
from lowbit.compiler.lowering import Layer, engine_format, sample_engine
from lowbit.core.errors import LowbitError
from lowbit.core.executor import Executor
from lowbit.core.files import atomic_write_text
from lowbit.core.formats import weight_format
from lowbit.hw.fabric import FAMILIES

from .synth import XC7_LUTRAM_SITES, count_luts, synthesize

__all__ = ["EngineSpec", "StreamSpec", "RomSpec", "SWEEP", "FAMILIES", "build_engine", "synthesize_engine",
           "run_sweep", "sweep_families", "HAND_PICKED", "SAMPLE_SEEDS", "sampled_specs", "CALIBRATION_PATH",
           "load_calibration"]

CALIBRATION_PATH = Path(__file__).with_name("calibration.json")


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

    def sample(self, seed=0):
        """``(unit, manifest entry)``: the matrix-vector unit of a MatMul of seeded random weights
        (and its MultiThreshold), lowered as the compiler lowers every op."""
        rng = np.random.default_rng(seed)
        levels = weight_format(self.weight_format).levels
        tile = rng.choice(levels, size=(self.mh // self.copies, self.mw)).astype(np.int64)
        in_type = ValueType(self.in_kind, self.in_bits)
        mm = MatMul("engine", np.tile(tile, (self.copies, 1)), self.weight_format, in_type,
                    Folding(self.pe, self.simd), self.copies)
        ops = (mm,)
        if self.levels:
            # Thresholds spread over the middle of the dot-product range, so none folds to a constant.
            hi = max(1, self.mw * ((1 << self.in_bits) - 1 if self.in_kind == "uint" else 1) // 4)
            t = np.sort(rng.integers(-hi, hi + 1, size=(self.mh, self.levels)), axis=1)
            out = BIPOLAR if self.levels == 1 else ValueType("uint", self.levels.bit_length())
            ops += (MultiThreshold("engine_act", t, mm.out_type, out),)
        return sample_engine(Layer(ops, (self.mw,)), engine_format(in_type, (self.mw,)))


@dataclass(frozen=True)
class StreamSpec:
    """One non-matrix engine of the sweep: a sliding window, max pool, collect, normalize-sign or
    stream FIFO.

    ``height`` x ``width`` x ``channels`` is the input feature map (for ``normalize_sign``:
    ``channels`` accumulators of ``bits`` bits, ``pe`` per cycle; for ``fifo``: payloads of
    ``channels`` elements, ``depth`` of them); ``kind``/``bits`` its elements.
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
    depth: int = 0

    @property
    def name(self):
        inp = "bip" if self.kind == "bipolar" else f"{self.kind}{self.bits}"
        return engine_kind(self.op).sample_name(self, inp)

    def sample(self, seed=0):
        """``(engine, manifest entry)``, built by the engine kind (with seeded contents)."""
        return engine_kind(self.op).sample(self, seed)


@dataclass(frozen=True)
class RomSpec:
    """A lone ROM of the sweep (:class:`lowbit.hw.rom.ROM`, random contents): on xc7, where the
    flow maps every deep ROM of an engine on its own, these give the LUTs a ROM costs by depth;
    on every family they check the block RAM mapping rule."""

    depth: int
    width: int

    op = "rom"

    @property
    def name(self):
        return f"rom-{self.depth}x{self.width}"

    def sample(self, seed=0):
        """``(ROM, entry)`` with seeded random contents."""
        return engine_kind(self.op).sample(self, seed)


def _spec(fmt, inp, mh, mw, pe, simd, levels=1, copies=1):
    kind, bits = ("bipolar", 1) if inp == "bip" else ("uint", int(inp[4:]))
    return EngineSpec(fmt, kind, bits, mh, mw, pe, simd, levels, copies)


# Every lane at two or more foldings: XNOR-popcount (bipolar x bipolar) at narrow, wide and fully
# unrolled foldings with weight memories from a few hundred bits (logic) to 16 Kbit (block RAM);
# add-sub (bipolar weights x k-bit), add-sub-skip (ternary, both input kinds), and-popcount
# ({0,1}, both input kinds), lut-multiply (levels5/9/17), shift (pow2), tiled copies, engines
# that emit dot products or k-bit outputs; then the non-matrix engines of CNNs and binary
# normalized networks.
HAND_PICKED = (
    _spec("bipolar", "bip", 64, 64, 1, 8),
    _spec("bipolar", "bip", 64, 64, 4, 16),
    _spec("bipolar", "bip", 64, 64, 8, 64),
    _spec("bipolar", "bip", 32, 32, 32, 32),
    _spec("bipolar", "bip", 64, 256, 1, 8),
    # A FINN-style first layer: 784 pixels, one whole row per cycle.
    _spec("bipolar", "bip", 64, 784, 1, 784),
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
    # Fully unrolled engines, whose weights are constants (small last layers): XNOR, add-sub
    # and add-sub-skip on both input kinds.
    _spec("ternary", "bip", 16, 32, 16, 32),
    _spec("ternary", "bip", 10, 32, 10, 32, levels=0),
    _spec("ternary", "bip", 8, 64, 8, 64),
    _spec("bipolar", "bip", 16, 64, 16, 64, levels=3),
    _spec("bipolar", "bip", 10, 64, 10, 64, levels=0),
    _spec("ternary", "uint2", 10, 32, 10, 32, levels=0),
    _spec("ternary", "uint2", 16, 16, 16, 16, levels=3),
    _spec("ternary", "uint4", 8, 16, 8, 16),
    _spec("bipolar", "uint2", 10, 32, 10, 32, levels=0),
    _spec("bipolar", "uint2", 16, 16, 16, 16),
    _spec("bipolar", "uint4", 8, 16, 8, 16, levels=3),
    StreamSpec("sliding_window", 8, 8, 16),
    StreamSpec("sliding_window", 12, 12, 8, "uint", 2, pad=1),
    StreamSpec("sliding_window", 28, 28, 1, "uint", 8),
    StreamSpec("sliding_window", 16, 16, 32, stride=2, pad=1),
    StreamSpec("maxpool", 8, 8, 32, kernel=2, stride=2),
    StreamSpec("maxpool", 12, 12, 8, "uint", 2, kernel=2, stride=2),
    StreamSpec("maxpool", 24, 24, 16, kernel=3, stride=3),
    # Integer pools of every element width, two or more of each: the LUTs of a compare and
    # select grow unevenly with the width (the estimator prices each width on its own).
    *(StreamSpec("maxpool", h, h, c, kind, bits, kernel=k, stride=k)
      for h, c, kind, bits, k in ((8, 8, "uint", 3, 2), (8, 4, "uint", 5, 2), (6, 4, "uint", 6, 3),
                                  (8, 8, "uint", 8, 2), (8, 16, "int", 4, 2), (6, 8, "uint", 3, 3),
                                  (6, 4, "uint", 5, 3), (8, 8, "uint", 6, 2), (8, 4, "uint", 7, 2),
                                  (6, 4, "uint", 7, 3), (6, 2, "uint", 8, 3), (8, 8, "int", 8, 2))),
    StreamSpec("collect", 4, 4, 32),
    StreamSpec("collect", 5, 5, 16, "uint", 2),
    StreamSpec("normalize_sign", 1, 1, 64, "int", 8),
    StreamSpec("normalize_sign", 1, 1, 128, "uint", 7, pe=4),
    StreamSpec("normalize_sign", 1, 1, 32, "int", 10, pe=32),
    # Stream FIFOs between engines: the depths the compiler's FIFO sizing gives, on the widths
    # of hidden vectors, feature-map pixels and logits.
    StreamSpec("fifo", 1, 1, 64, depth=3),
    StreamSpec("fifo", 1, 1, 32, "uint", 2, depth=8),
    StreamSpec("fifo", 1, 1, 16, "uint", 4, depth=27),
    StreamSpec("fifo", 1, 1, 256, depth=16),
    StreamSpec("fifo", 1, 1, 10, "int", 10, depth=4),
    StreamSpec("fifo", 1, 1, 8, "uint", 2, depth=64),
    # Lone ROMs at every depth an engine's weights or thresholds can have (16 to 4096 words,
    # where they are their own module), narrow and wide; the widest ones become block RAM.
    *(RomSpec(d, w) for d in (2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096)
      for w in (2, 16, 96)),
)


# What the sampler draws per lane: (weight format, input kind, how many engines). Bipolar inputs
# are drawn more often (the XNOR lane is the one most networks use); fully unrolled (constant
# weight) and tiled engines are drawn among them.
_SAMPLED_LANES = (
    ("bipolar", "bipolar", 10), ("bipolar", "uint", 6),
    ("ternary", "bipolar", 5), ("ternary", "uint", 6),
    ("binary01", "bipolar", 4), ("binary01", "uint", 4),
    ("levels5", "bipolar", 3), ("levels5", "uint", 4), ("levels9", "uint", 4),
    ("levels17", "uint", 3), ("pow2", "uint", 5),
)
_SAMPLED_STREAMS = (("sliding_window", 8), ("maxpool", 5), ("collect", 4), ("normalize_sign", 5))


def _sample_mvau(rng, fmt, kind):
    """One matrix engine of ``fmt`` on ``kind`` inputs, drawn until it is of a size that
    synthesizes in well under a minute: at most 512 lane input bits (2048 for XNOR), 4096 weight
    words."""
    while True:
        mh = int(rng.choice([8, 16, 32, 64, 128]))
        mw = int(rng.choice([16, 32, 64, 128, 256, 512]))
        bits = 1 if kind == "bipolar" else int(rng.choice([2, 2, 3, 4, 4, 8]))
        copies = int(rng.choice([1, 1, 1, 2, 4])) if (fmt, kind) == ("bipolar", "bipolar") else 1
        if mh % copies or mh // copies < 2:
            continue
        rows = mh // copies
        pe = int(rng.choice(divisors(rows)))
        simd = int(rng.choice(divisors(mw)))
        work = pe * simd * bits
        if work > (2048 if kind == "bipolar" else 512) or work < 4:
            continue
        if (rows // pe) * (mw // simd) > 4096:
            continue
        levels = int(rng.choice([0, 1, 1, 3, 3, 7]))
        return EngineSpec(fmt, kind, bits, mh, mw, pe, simd, levels, copies)


def _sample_stream(rng, op):
    """One window, pool, collect or normalize-sign engine with its geometry drawn (the element type,
    image size and channels here, the rest by the engine kind)."""
    kind, bits = [("bipolar", 1), ("uint", 2), ("uint", 4), ("uint", 8)][int(rng.integers(4))]
    size = int(rng.choice([6, 8, 12, 16, 24, 28, 32]))
    channels = int(rng.choice([1, 3, 8, 16, 32, 64]))
    return StreamSpec(op, **engine_kind(op).draw(rng, kind, bits, size, channels))


# The seeds of the sampled engines, one draw of :data:`_SAMPLED_LANES` and
# :data:`_SAMPLED_STREAMS` each. A second draw was added when the first left kinds with too few
# engines for a model fitted without one of them to predict it (normalize-sign at a wide PE,
# multiplying lanes with deep weight ROMs), and a third when the models were split by part (PE
# rows, ROMs, the rest); a new seed adds engines without changing the others.
SAMPLE_SEEDS = (2026, 2027, 2028)


def sampled_specs(seeds=SAMPLE_SEEDS):
    """Engines drawn at random (seeded) for every lane and non-matrix op, beside the hand-picked
    ones: enough engines per kind that each can be predicted by a model fitted without it."""
    specs = []
    for seed in seeds:
        rng = np.random.default_rng(seed)
        for fmt, kind, n in _SAMPLED_LANES:
            for _ in range(n):
                specs.append(_sample_mvau(rng, fmt, kind))
        for op, n in _SAMPLED_STREAMS:
            for _ in range(n):
                specs.append(_sample_stream(rng, op))
    seen = set(HAND_PICKED)
    return tuple(s for s in specs if not (s in seen or seen.add(s)))


# The calibration sweep: the hand-picked engines, then the sampled ones.
SWEEP = HAND_PICKED + sampled_specs()


def sweep_families(spec):
    """The families ``spec`` is synthesized for in the calibration: all of them."""
    return FAMILIES


def build_engine(spec, seed=0):
    """The engine for ``spec`` with seeded random weights, thresholds or offsets (see each spec's
    ``sample``)."""
    return spec.sample(seed)[0]


def synthesize_engine(engine, family, cache_dir=None):
    """Yosys counts of one engine on its own (top ``engine``)."""
    text = verilog.convert(engine, name="engine", emit_src=False)
    return synthesize(text, "engine", family, cache_dir=cache_dir)


def lutram_luts_of(result):
    """LUTs of a synthesis result that are distributed RAM or shift registers (xc7; else 0)."""
    return sum(n * result.cells.get(cell, 0) for cell, n in XC7_LUTRAM_SITES.items())


def lut_parts(result):
    """LUTs of a synthesis result by part: ``rom`` (the ``*_rom`` modules), ``rows`` (the PE row
    modules, ``*_row``) and ``glue`` (the rest). Only the xc7 flow keeps those modules apart; a
    flattened design is all ``glue``."""
    parts = {"rom": 0, "rows": 0, "glue": 0}
    for name, cells in result.modules.items():
        part = "rom" if name.endswith("_rom") else "rows" if name.endswith("_row") else "glue"
        parts[part] += count_luts(result.family, cells)
    return parts


def calibration_row(job):
    """The calibration row of one ``(spec, family)``: the engine sampled and synthesized (a pure
    function of the job, so any worker can run it)."""
    spec, family = job
    engine, layer = spec.sample()
    r = synthesize_engine(engine, family)
    return {"engine": spec.name, "spec": asdict(spec), "family": family, "layer": layer, "flow": r.flow,
            "yosys_version": r.yosys_version, **r.resources.as_dict(), "carry": r.carry,
            "lutram_luts": lutram_luts_of(r), "lut_parts": lut_parts(r)}


def calibration_jobs(families=FAMILIES, specs=SWEEP):
    """The ``(spec, family)`` jobs of the sweep, in the order of its rows."""
    return [(spec, family) for spec in specs for family in families if family in sweep_families(spec)]


def run_sweep(families=FAMILIES, specs=SWEEP, progress=None, executor=None):
    """Synthesize every engine of ``specs`` for every family, each a job of ``executor``
    (:class:`lowbit.core.executor.Executor`; default: in this process); return the calibration
    rows in the order of the specs, whoever ran them.

    Raises
    ------
    LowbitError
        Naming every job that raised, after the others have run.
    """
    def done(job, row, finished, failed):
        if progress and isinstance(row, dict):
            progress(row)

    results, failed = (executor or Executor(workers=1)).map(calibration_row, calibration_jobs(families, specs),
                                                            on_done=done)
    if failed:
        raise LowbitError(f"{len(failed)} calibration jobs failed: " + "; ".join(
            f"{f.spec[0].name} on {f.spec[1]}: {f.error}" for f in failed), failed[0].traceback)
    return [row for _, row in results]


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
