"""Lowering a chain of ops to hardware engines: grouping, each op's engine, FIFOs between them.

One engine per op (:meth:`lowbit.compiler.graph.Op.engine`), except where an op runs inside the
engine of the op before it (:meth:`~lowbit.compiler.graph.Op.fuses`: a MatMul's thresholds).
The engines' timing and manifest entries come from the same op modules; nothing here knows any
op kind by name.

A feature map streams one pixel per beat, so an engine after a SlidingWindow runs once per
window: its cycles per inference are its cycles per vector times the vectors per image.
"""

from dataclasses import dataclass

import numpy as np

from lowbit.hw.fifo import StreamFIFO
from lowbit.hw.payload import VectorFormat
from lowbit.hw.unused import unelaborated

from .fifo_depth import MIN_DEPTH, fifo_depths
from .ops.fifo import Fifo

__all__ = ["Layer", "layers_of", "group", "body_layers", "lower_chain", "is_fifo", "compute_engines",
           "fifo_engines", "engine_cycles", "layer_entry", "sample_engine", "describe_engine",
           "engine_format"]


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


def group(nodes, shapes):
    """Group a chain of ops (with each op's input shape) into engines (:class:`Layer`)."""
    layers, k = [], 0
    while k < len(nodes):
        node = nodes[k]
        nxt = nodes[k + 1] if k + 1 < len(nodes) else None
        size = 2 if nxt is not None and node.fuses(nxt) else 1
        layers.append(Layer(tuple(nodes[k:k + size]), shapes[k]))
        k += size
    return layers


def layers_of(graph):
    """The hardware nodes grouped into engines, with each engine's input shape."""
    return group(graph.hardware_nodes, graph.shapes())


def body_layers(layer):
    """The engines' :class:`Layer` of the inner ops of a layer's op (a residual block's body)."""
    body = layer.head.inner_ops()
    shapes = [layer.in_shape]
    for node in body:
        shapes.append(tuple(node.out_shape(shapes[-1])))
    return group(body, shapes)


def engine_format(value_type, shape):
    """The payload format of a value of ``value_type`` and per-example ``shape``: a feature map
    streams one pixel (its last axis) per beat."""
    return VectorFormat(value_type.kind, value_type.bits, shape[-1])


def lower_chain(layers, fmt, *, fifos=True, upstream_cycles=0):
    """The engines of ``layers`` from input format ``fmt``, with FIFOs where they are needed;
    ``upstream_cycles``: cycles per inference of the slowest engine before the chain (the one
    that paces its input)."""
    engines, cycles = [], []
    for layer in layers:
        paced_by = max(upstream_cycles, *cycles, 0)

        def lower_body(body, body_fmt, paced_by=paced_by):
            return lower_chain(body, body_fmt, fifos=True, upstream_cycles=paced_by)
        engine = layer.head.engine(layer, fmt, lower_body)
        engines.append(engine)
        cycles.append(engine_cycles(layer, engine))
        fmt = engine.out_format
    # An engine given one vector per inference is given it at the pace of the slowest engine: a
    # pipelined matrix engine's output queue then needs room only for the results in flight at
    # that pace (the last layer of an MLP: one slot, not one per result its own speed allows).
    pace = max(upstream_cycles, *cycles, 0)
    for engine, per_inference in zip(engines, cycles):
        if hasattr(engine, "input_interval") and per_inference == engine.cycles_per_item:
            engine.input_interval = pace
    vectors = [layer.vectors for layer in layers]
    depths = fifo_depths(engines, cycles, vectors, upstream_cycles) if fifos else [0] * len(engines)
    piped = fifos and any(_pipelined(e) for e in engines)
    if piped:
        # A pipelined chain has no combinational ready path across engines: a pipelined matrix
        # engine takes its input on registers alone, and in front of any other engine a FIFO
        # whose input ready and output valid are registers cuts the path.
        depths = [d or (MIN_DEPTH if k + 1 < len(engines) and not _pipelined(engines[k + 1]) else 0)
                  for k, d in enumerate(depths)]
    chain = []
    for engine, depth in zip(engines, depths):
        chain.append(engine)
        if depth:
            chain.append(Fifo.engine(engine.out_format, depth, pipelined=piped))
    return chain


def _pipelined(engine):
    """Whether an engine takes its input through registers only (a pipelined matrix engine)."""
    return bool(getattr(engine, "pipeline", 0))


def is_fifo(engine):
    """Whether an engine of a chain is a FIFO the lowering put between two others."""
    return isinstance(engine, StreamFIFO)


def compute_engines(engines):
    """The engines of a chain that compute, without the FIFOs between them."""
    return [e for e in engines if not is_fifo(e)]


def fifo_engines(engines):
    """The FIFOs of a chain."""
    return [e for e in engines if is_fifo(e)]


def engine_cycles(layer, engine):
    """Cycles per inference of one engine (its op's :meth:`~lowbit.compiler.graph.Op.engine_cycles`)."""
    return layer.head.engine_cycles(layer, engine)


def layer_entry(layer, engine):
    """The manifest entry of one engine: name, input beats per image, timing and formats, then
    its op's own fields (:meth:`~lowbit.compiler.graph.Op.entry`)."""
    entry = {
        "name": layer.head.name,
        "vectors_per_inference": layer.vectors,
        "cycles_per_item": engine.cycles_per_item,
        "cycles_per_inference": engine_cycles(layer, engine),
        "latency": engine.latency,
        "in_format": engine.in_format.record(),
        "out_format": engine.out_format.record(),
    }
    entry.update(layer.head.entry(layer, engine))
    return entry


def sample_engine(layer, in_format):
    """``(engine, manifest entry)`` of one layer on its own, for inputs of ``in_format``: an
    engine of the calibration sweep."""
    engine = lower_chain([layer], in_format, fifos=False)[0]
    return engine, layer_entry(layer, engine)


def describe_engine(layer, engine):
    """The manifest entry of an engine built only to be described (a candidate of a search),
    which is never elaborated."""
    return layer_entry(layer, unelaborated(engine))
