"""Lower an IR graph to hardware engines and emit Verilog, a manifest and the IR beside it.

Lowering, one engine per op: a MatMul becomes a matrix-vector unit, and a MultiThreshold right
after it is fused into that unit's threshold compare; a SlidingWindow, MaxPool, Flatten
(:class:`~lowbit.hw.collect.Collect`) or NormalizeSign becomes its own engine. The last MatMul,
with no threshold, emits its integer dot products; the host ops (affine map, argmax) stay in the
manifest for the host to apply.

A feature map streams one pixel per beat, so an engine after a SlidingWindow runs once per
window: its cycles per inference are its cycles per vector times the vectors per image.

A :class:`~lowbit.compiler.residual_ops.Residual` becomes one
:class:`~lowbit.hw.residual.ResidualBlock` (fork, its body lowered like a graph, skip FIFO,
adder), and the MultiThreshold after it a :class:`~lowbit.hw.threshold.MultiThresholdUnit`
running all channels in one cycle per beat.
"""

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from amaranth.back import verilog

from lowbit import __version__
from lowbit.errors import LowbitError
from lowbit.files import atomic_dir, atomic_write_text
from lowbit.hw.collect import Collect
from lowbit.hw.fifo import StreamFIFO
from lowbit.hw.mvau import MatrixVectorUnit
from lowbit.hw.network import DataflowTop
from lowbit.hw.normalize import NormalizeSign as NormalizeSignUnit
from lowbit.hw.payload import VectorFormat
from lowbit.hw.pool import MaxPool as MaxPoolUnit
from lowbit.hw.residual import ResidualBlock
from lowbit.hw.threshold import MultiThresholdUnit
from lowbit.hw.window import SlidingWindow as SlidingWindowUnit

from .fifo_depth import fifo_depths
from .ir import ArgMax, Flatten, Folding, HostAffine, MatMul, MultiThreshold
from .normalize_ops import NormalizeSign
from .residual_ops import Residual
from .serialize import save_graph
from .window_ops import MaxPool, SlidingWindow

__all__ = ["lower", "generate_verilog", "build_manifest", "write_build", "TOP_NAME", "Layer",
           "HARDWARE_OPS", "layers_of", "layer_entry", "matmul_engine", "body_layers", "flat_layers"]

TOP_NAME = "lowbit_top"
HARDWARE_OPS = ("MatMul [+ MultiThreshold]", "SlidingWindow", "MaxPool", "Flatten", "NormalizeSign",
                "Residual", "MultiThreshold")


@dataclass(frozen=True)
class Layer:
    """One hardware engine's share of the graph: its ops, input shape and vectors per image."""

    ops: tuple
    in_shape: tuple

    @property
    def head(self):
        return self.ops[0]

    @property
    def vectors(self):
        """Input vectors (beats) per image: the pixels of a feature map, else 1."""
        return int(np.prod(self.in_shape[:-1])) if len(self.in_shape) == 3 else 1


def layers_of(graph):
    """The hardware nodes grouped into engines (:class:`Layer`), with each engine's input shape."""
    return _group(graph.hardware_nodes, graph.shapes())


def body_layers(layer):
    """The engines' :class:`Layer` of a residual layer's body."""
    shapes = [layer.in_shape]
    for node in layer.head.body:
        shapes.append(tuple(node.out_shape(shapes[-1])))
    return _group(layer.head.body, shapes)


def _group(nodes, shapes):
    """Group a chain of ops (with each op's input shape) into engines."""
    layers, k = [], 0
    while k < len(nodes):
        node = nodes[k]
        nxt = nodes[k + 1] if k + 1 < len(nodes) else None
        if isinstance(node, MatMul) and isinstance(nxt, MultiThreshold):
            layers.append(Layer((node, nxt), shapes[k]))
            k += 2
        elif isinstance(node, (MatMul, SlidingWindow, MaxPool, Flatten, NormalizeSign, Residual,
                               MultiThreshold)):
            layers.append(Layer((node,), shapes[k]))
            k += 1
        else:
            raise LowbitError(f"{node.name}: a {type(node).__name__} here has no hardware engine yet",
                              f"supported hardware ops: {', '.join(HARDWARE_OPS)}")
    return layers


def matmul_engine(mm, threshold, folding=None, in_format=None):
    """The matrix-vector unit of a MatMul (and its MultiThreshold or None) under ``folding``."""
    f = folding or mm.folding or Folding(1, 1)
    kind, bits = (in_format.kind, in_format.bits) if in_format is not None else \
        (mm.in_type.kind, mm.in_type.bits)
    th = threshold.thresholds if threshold is not None else None
    memory = mm.weight_memory
    if memory == "const" and (mm.tile_rows // f.pe) * (mm.mw // f.simd) != 1:
        memory = "auto"  # a candidate folding of a search, not the built one
    out_kind = threshold.out_type.kind if threshold is not None else "bipolar"
    invert = threshold.invert if threshold is not None else None
    return MatrixVectorUnit(mm.weights[:mm.tile_rows], mm.weight_format, VectorFormat(kind, bits, mm.mw),
                            th, pe=f.pe, simd=f.simd, copies=mm.copies, weight_memory=memory,
                            out_kind=out_kind, invert=invert)


def _engine(layer, in_format, upstream_cycles=0):
    op = layer.head
    if isinstance(op, MatMul):
        return matmul_engine(op, layer.ops[1] if len(layer.ops) > 1 else None, None, in_format)
    if isinstance(op, SlidingWindow):
        h, w, c = layer.in_shape
        return SlidingWindowUnit(h, w, c, op.kernel, stride=op.stride, pad=op.pad,
                                 pad_value=op.pad_value, kind=in_format.kind, bits=in_format.bits)
    if isinstance(op, MaxPool):
        h, w, c = layer.in_shape
        return MaxPoolUnit(h, w, c, op.kernel, stride=op.stride, kind=in_format.kind, bits=in_format.bits)
    if isinstance(op, Flatten):
        h, w, _ = op.in_shape
        return Collect(in_format, h * w)
    if isinstance(op, NormalizeSign):
        offset = None if op.offset is None else op.offset.tolist()
        return NormalizeSignUnit(in_format, pe=1, offset=offset)
    if isinstance(op, Residual):
        return ResidualBlock(_chain(body_layers(layer), in_format, True, upstream_cycles))
    if isinstance(op, MultiThreshold):
        out = VectorFormat(op.out_type.kind, op.out_type.bits, op.channels)
        return MultiThresholdUnit(op.thresholds, in_format, out, pe=op.channels, invert=op.invert)
    raise AssertionError(op)


def _input_format(graph):
    t, shape = graph.input_type, graph.input_shape
    return VectorFormat(t.kind, t.bits, shape[-1] if len(shape) == 3 else shape[0])


def lower(graph, *, fifos=True):
    """Build the Amaranth top for ``graph``; MatMuls without a folding run fully folded (1x1).

    FIFOs go after the windowed engines whose output gaps would starve a slower consumer
    (:func:`lowbit.compiler.fifo_depth.fifo_depths`); ``fifos=False`` leaves them out (to
    measure what they are for).
    """
    return DataflowTop(_chain(layers_of(graph), _input_format(graph), fifos))


def _chain(layers, fmt, fifos, upstream_cycles=0):
    """The engines of ``layers`` from input format ``fmt``, with FIFOs where they are needed;
    ``upstream_cycles``: cycles per inference of the slowest engine before the chain."""
    engines, cycles = [], []
    for layer in layers:
        engine = _engine(layer, fmt, max(upstream_cycles, *cycles, 0))
        engines.append(engine)
        cycles.append(engine_cycles(layer, engine))
        fmt = engine.out_format
    vectors = [layer.vectors for layer in layers]
    depths = fifo_depths(engines, cycles, vectors, upstream_cycles) if fifos else [0] * len(engines)
    chain = []
    for engine, depth in zip(engines, depths):
        chain.append(engine)
        if depth:
            chain.append(StreamFIFO(engine.out_format, depth))
    return chain


def _compute_engines(top):
    return [e for e in top.engines if not isinstance(e, StreamFIFO)]


def engine_cycles(layer, engine):
    """Cycles per inference of one engine: per-image scans, or per-vector cycles times vectors;
    a residual block's are its slowest body engine's (the fork and adder take a beat a cycle)."""
    if isinstance(engine, ResidualBlock):
        body = [e for e in engine.body if not isinstance(e, StreamFIFO)]
        return max(layer.vectors, *(engine_cycles(l, e) for l, e in zip(body_layers(layer), body)))
    per_image = getattr(engine, "cycles_per_image", None)
    if per_image is not None:
        return per_image
    return engine.cycles_per_item * layer.vectors


def generate_verilog(graph, name=TOP_NAME, *, fifos=True):
    """Verilog text of the lowered graph, and the top component (for its timing properties)."""
    top = lower(graph, fifos=fifos)
    text = verilog.convert(top, name=name, emit_src=False)
    return text, top


def layer_entry(layer, engine):
    """The manifest entry of one engine (see :func:`build_manifest`)."""
    op = layer.head
    entry = {
        "name": op.name,
        "vectors_per_inference": layer.vectors,
        "cycles_per_item": getattr(engine, "cycles_per_item", None) or engine.cycles_per_image,
        "cycles_per_inference": engine_cycles(layer, engine),
        "latency": engine.latency,
        "in_format": _fmt(engine.in_format),
        "out_format": _fmt(engine.out_format),
    }
    if isinstance(op, MatMul):
        th = layer.ops[1] if len(layer.ops) > 1 else None
        entry.update({
            "op": "mvau",
            "lane": engine.lane,
            "accumulator_bits": engine.accumulator_bits,
            "weight_format": op.weight_format,
            "mh": op.mh, "mw": op.mw, "copies": op.copies,
            "pe": engine.pe, "simd": engine.simd,
            "neuron_folds": engine.neuron_folds, "synapse_folds": engine.synapse_folds,
            "weight_memory": {"depth": engine.cycles_per_item, "width": engine.pe * engine.simd,
                              "bits": engine.weight_memory_bits, "style": op.weight_memory},
            "thresholds": th.name if th is not None else None,
            "threshold_levels": int(th.thresholds.shape[1]) if th is not None else 0,
        })
    elif isinstance(op, SlidingWindow):
        entry.update(op="sliding_window", kernel=op.kernel, stride=op.stride, pad=op.pad,
                     in_shape=list(layer.in_shape), buffer_pixels=engine.buffer_pixels)
    elif isinstance(op, MaxPool):
        entry.update(op="maxpool", kernel=op.kernel, stride=op.stride,
                     in_shape=list(layer.in_shape), buffer_pixels=engine.buffer_pixels)
    elif isinstance(op, Flatten):
        entry.update(op="collect", in_shape=list(op.in_shape))
    elif isinstance(op, NormalizeSign):
        entry.update(op="normalize_sign", channels=op.channels, pe=engine.pe)
    elif isinstance(op, Residual):
        body = [e for e in engine.body if not isinstance(e, StreamFIFO)]
        entry.update(op="residual", skip_depth=engine.skip_depth, in_shape=list(layer.in_shape),
                     body_kind=body[-1].out_format.kind if body else engine.in_format.kind,
                     body_fifos=[e.depth for e in engine.body if isinstance(e, StreamFIFO)],
                     body=[layer_entry(l, e) for l, e in zip(body_layers(layer), body)])
    elif isinstance(op, MultiThreshold):
        entry.update(op="threshold", channels=op.channels, levels=int(op.thresholds.shape[1]),
                     pe=engine.pe)
    return entry


def flat_layers(entries):
    """Manifest layer entries with each residual block's body entries after it, depth first."""
    out = []
    for entry in entries:
        out.append(entry)
        out += flat_layers(entry.get("body", []))
    return out


def build_manifest(graph, top, name=TOP_NAME):
    """Plain-data description of the build: ports, layers, foldings, exact cycles and host ops.

    Every layer has ``name``, ``op``, ``vectors_per_inference`` (input beats per image),
    ``cycles_per_item`` (per beat, or per image for window scans), ``cycles_per_inference`` and
    its formats; matrix-vector layers add the lane, shapes, folding, accumulator and memories.
    """
    layers = [layer_entry(layer, engine) for layer, engine in zip(layers_of(graph), _compute_engines(top))]
    fifos, done = [], 0
    for engine in top.engines:
        if isinstance(engine, StreamFIFO):
            fifos.append({"after": layers[done - 1]["name"], "depth": engine.depth,
                          "bits": engine.format.width})
        else:
            done += 1
    host = []
    for node in graph.host_nodes:
        if isinstance(node, HostAffine):
            host.append({"op": "affine", "name": node.name,
                         "scale": node.scale.tolist(), "shift": node.shift.tolist()})
        elif isinstance(node, ArgMax):
            host.append({"op": "argmax", "name": node.name})
    cycles = max(entry["cycles_per_inference"] for entry in layers)
    # A chain of single-vector engines has an exact latency; window scans overlap the image.
    latency = top.latency if all(entry["vectors_per_inference"] == 1 for entry in layers) else None
    return {
        "lowbit_version": __version__,
        "top": name,
        "clock": "clk (rising edge), rst synchronous active-high",
        "ports": {
            "i": {"payload_bits": top.in_format.width, "format": _fmt(top.in_format)},
            "o": {"payload_bits": top.out_format.width, "format": _fmt(top.out_format)},
        },
        "input_shape": list(graph.input_shape),
        "beats_per_inference": layers[0]["vectors_per_inference"],
        "layers": layers,
        "fifos": fifos,
        "cycles_per_inference": cycles,
        "latency_cycles": latency,
        "inferences_per_second_at_100mhz": 100e6 / cycles,
        "input_encoding": graph.meta.get("input"),
        "host": host,
    }


def _fmt(f):
    return {"kind": f.kind, "bits": f.bits, "count": f.count}


def write_build(graph, out_dir, name=TOP_NAME):
    """Write ``out_dir`` atomically: ``<name>.v``, ``manifest.json`` and ``graph.npz``.

    A failure at any step leaves no partial folder behind.
    """
    out_dir = Path(out_dir)
    text, top = generate_verilog(graph, name)
    manifest = build_manifest(graph, top, name)
    with atomic_dir(out_dir) as tmp:
        atomic_write_text(tmp / f"{name}.v", text)
        atomic_write_text(tmp / "manifest.json", json.dumps(manifest, indent=2, sort_keys=True) + "\n")
        save_graph(tmp / "graph.npz", graph)
    return manifest
