"""Lower an IR graph to hardware engines, and emit its Verilog and its manifest.

The engines come from :mod:`lowbit.compiler.lowering` (each op's module builds its own): a
MatMul becomes a matrix-vector unit with the MultiThreshold after it fused in; a SlidingWindow,
MaxPool, Flatten, NormalizeSign, a standalone MultiThreshold or a Residual block becomes its own
engine; FIFOs go where a window's output gaps would starve a slower engine. The last MatMul, with
no threshold, emits its integer dot products; the host ops (affine map, argmax) stay in the
manifest for the host to apply.
"""

import numpy as np
from amaranth.back import verilog

from lowbit.core.version import __version__
from lowbit.hw.axis import AxiStreamTop, byte_width
from lowbit.hw.network import DataflowTop
from lowbit.hw.unused import unelaborated

from .ir import engine_kind
from .lowering import engine_format, is_fifo, layer_entry, layers_of, lower_chain
from .ops.fifo import Fifo

__all__ = ["lower", "generate_verilog", "build_manifest", "describe", "TOP_NAME", "PORT_STYLES", "out_beats",
           "interface", "flat_layers", "foldings"]

TOP_NAME = "lowbit_top"


def lower(graph, *, fifos=True):
    """Build the Amaranth top for ``graph``; MatMuls without a folding run fully folded (1x1).

    FIFOs go after the windowed engines whose output gaps would starve a slower consumer
    (:func:`lowbit.compiler.fifo_depth.fifo_depths`); ``fifos=False`` leaves them out (to
    measure what they are for).
    """
    fmt = engine_format(graph.input_type, graph.input_shape)
    return DataflowTop(lower_chain(layers_of(graph), fmt, fifos=fifos))


# The top's port styles: AXI4-Stream (what builds are written with), or Amaranth's own stream
# names (``i__payload``/``valid``/``ready``, ``clk``, ``rst``), which the test harnesses also take.
PORT_STYLES = ("axi-stream", "native")


def out_beats(graph):
    """Result beats per image at the hardware output."""
    shape = graph.shapes()[len(graph.hardware_nodes)]
    return int(np.prod(shape[:-1], dtype=np.int64))


def generate_verilog(graph, name=TOP_NAME, *, fifos=True, ports="native"):
    """Verilog text of the lowered graph with ``ports`` (one of :data:`PORT_STYLES`), and the
    network component (for its engines and timing, which the AXI-Stream top leaves as they are)."""
    if ports not in PORT_STYLES:
        raise ValueError(f"Ports must be one of {', '.join(map(repr, PORT_STYLES))}, not {ports!r}")
    top = lower(graph, fifos=fifos)
    design = AxiStreamTop(top, out_beats(graph)) if ports == "axi-stream" else top
    text = verilog.convert(design, name=name, emit_src=False)
    return text, top


def interface(graph, top, ports):
    """The manifest's description of the top's ports in style ``ports``."""
    if ports == "native":
        return {"style": "native", "clock": "clk, rising edge", "reset": "rst, synchronous, active high",
                "input": "i__payload, i__valid, i__ready", "output": "o__payload, o__valid, o__ready"}
    beats_in = int(np.prod(graph.input_shape[:-1], dtype=np.int64))

    def side(fmt, beats, last):
        return {"tdata_bits": byte_width(fmt.width), "payload_bits": fmt.width, "beats_per_image": beats,
                "tlast": last}

    return {
        "style": "axi-stream", "clock": "aclk, rising edge", "reset": "aresetn, synchronous, active low",
        "s_axis": side(top.in_format, beats_in, "taken, not needed: the network counts beats_per_image"),
        "m_axis": side(top.out_format, out_beats(graph), "high on the last result beat of each image"),
        "packing": "element k of a beat's vector in tdata bits [k*b, (k+1)*b), b the format's bits per element "
                   "(two's complement for int; bipolar +1 as 1, -1 as 0, one bit each); tdata bits above "
                   "payload_bits are ignored on input and zero on output",
    }


def flat_layers(entries):
    """Manifest layer entries with each residual block's body entries after it, depth first."""
    out = []
    for entry in entries:
        out.append(entry)
        out += flat_layers(entry.get("body", []))
    return out


def foldings(manifest):
    """``PExSIMD`` of every folded engine of a manifest, in order, residual bodies included."""
    return [f"{l['pe']}x{l['simd']}" for l in flat_layers(manifest["layers"]) if engine_kind(l["op"]).foldable]


def build_manifest(graph, top, name=TOP_NAME, ports="native"):
    """Plain-data description of the build: ports, layers, foldings, exact cycles and host ops.

    Every layer has ``name``, ``op``, ``vectors_per_inference`` (input beats per image),
    ``cycles_per_item`` (per beat, or per image for window scans), ``cycles_per_inference`` and
    its formats; matrix-vector layers add the lane, shapes, folding, accumulator and memories.
    A pipeline chosen for a clock adds ``pipeline_choice`` (levels, clock, board, estimated fmax).
    """
    layers, fifos = [], []
    computing = iter(layers_of(graph))
    for engine in top.engines:
        if is_fifo(engine):
            fifos.append(Fifo.manifest_entry(layers[-1]["name"], engine))
        else:
            layers.append(layer_entry(next(computing), engine))
    host = [node.host_entry() for node in graph.host_nodes]
    cycles = max(entry["cycles_per_inference"] for entry in layers)
    # A chain of single-vector engines has an exact latency; window scans overlap the image.
    latency = top.latency if all(entry["vectors_per_inference"] == 1 for entry in layers) else None
    # The clock a pipeline depth was chosen for (lowbit.pipelining), only where one was.
    chosen = {"pipeline_choice": graph.meta["pipeline"]} if "pipeline" in graph.meta else {}
    # A cycle target that an engine no folding speeds up held back (lowbit.folding.fold_for_cycles).
    if "paced_at" in graph.meta.get("folding", {}):
        chosen["folding_choice"] = graph.meta["folding"]
    return {**chosen,
        "lowbit_version": __version__,
        "top": name,
        "interface": interface(graph, top, ports),
        "ports": {
            "i": {"payload_bits": top.in_format.width, "format": top.in_format.record()},
            "o": {"payload_bits": top.out_format.width, "format": top.out_format.record()},
        },
        "input_shape": list(graph.input_shape),
        "beats_per_inference": layers[0]["vectors_per_inference"],
        "layers": layers,
        "fifos": fifos,
        "cycles_per_inference": cycles,
        "latency_cycles": latency,
        "input_encoding": graph.meta.get("input"),
        "host": host,
    }


def describe(graph):
    """The manifest of ``graph`` without its Verilog: the engines are built for their properties
    only (a search's candidates, an estimate), never elaborated."""
    return build_manifest(graph, unelaborated(lower(graph)))
