"""Lower an IR graph to hardware engines and emit Verilog, a manifest and the IR beside it.

Lowering: each MatMul becomes one matrix-vector unit; a MultiThreshold right after it is fused into
that unit's threshold compare. The last MatMul, with no threshold, emits its integer dot products; the
host ops (affine map, argmax) stay in the manifest for the host to apply.
"""

import json
from pathlib import Path

from amaranth.back import verilog

from lowbit import __version__
from lowbit.errors import LowbitError
from lowbit.files import atomic_dir, atomic_write_text
from lowbit.hw.mvau import MatrixVectorUnit
from lowbit.hw.network import DataflowTop
from lowbit.hw.payload import VectorFormat

from .ir import ArgMax, Folding, HostAffine, MatMul, MultiThreshold
from .serialize import save_graph

__all__ = ["lower", "generate_verilog", "build_manifest", "write_build", "TOP_NAME"]

TOP_NAME = "lowbit_top"


def _layers(graph):
    """Pairs (MatMul, MultiThreshold or None) in order; anything else in hardware is unsupported."""
    nodes, pairs, k = graph.hardware_nodes, [], 0
    while k < len(nodes):
        node = nodes[k]
        if not isinstance(node, MatMul):
            raise LowbitError(f"{node.name}: a {type(node).__name__} without a MatMul before it has "
                              "no hardware engine yet", "supported hardware ops: MatMul [+ MultiThreshold]")
        nxt = nodes[k + 1] if k + 1 < len(nodes) else None
        if isinstance(nxt, MultiThreshold):
            pairs.append((node, nxt))
            k += 2
        else:
            pairs.append((node, None))
            k += 1
    return pairs


def lower(graph):
    """Build the Amaranth top for ``graph``; MatMuls without a folding run fully folded (1x1)."""
    engines = []
    for mm, th in _layers(graph):
        f = mm.folding or Folding(1, 1)
        in_format = VectorFormat(mm.in_type.kind, mm.in_type.bits, mm.mw)
        thresholds = None if th is None else th.thresholds
        engines.append(MatrixVectorUnit(mm.weights, mm.weight_format, in_format, thresholds,
                                        pe=f.pe, simd=f.simd))
    return DataflowTop(engines)


def generate_verilog(graph, name=TOP_NAME):
    """Verilog text of the lowered graph, and the top component (for its timing properties)."""
    top = lower(graph)
    text = verilog.convert(top, name=name, emit_src=False)
    return text, top


def build_manifest(graph, top, name=TOP_NAME):
    """Plain-data description of the build: ports, layers, foldings, exact cycles and host ops."""
    layers = []
    for (mm, th), engine in zip(_layers(graph), top.engines):
        layers.append({
            "name": mm.name,
            "op": "mvau",
            "lane": engine.lane,
            "accumulator_bits": engine.accumulator_bits,
            "weight_format": mm.weight_format,
            "mh": mm.mh, "mw": mm.mw,
            "pe": engine.pe, "simd": engine.simd,
            "neuron_folds": engine.neuron_folds, "synapse_folds": engine.synapse_folds,
            "cycles_per_item": engine.cycles_per_item,
            "latency": engine.latency,
            "weight_memory": {"depth": engine.cycles_per_item, "width": engine.pe * engine.simd,
                              "bits": engine.weight_memory_bits},
            "thresholds": th.name if th is not None else None,
            "in_format": _fmt(engine.in_format),
            "out_format": _fmt(engine.out_format),
        })
    host = []
    for node in graph.host_nodes:
        if isinstance(node, HostAffine):
            host.append({"op": "affine", "name": node.name,
                         "scale": node.scale.tolist(), "shift": node.shift.tolist()})
        elif isinstance(node, ArgMax):
            host.append({"op": "argmax", "name": node.name})
    cycles = top.cycles_per_item
    return {
        "lowbit_version": __version__,
        "top": name,
        "clock": "clk (rising edge), rst synchronous active-high",
        "ports": {
            "i": {"payload_bits": top.in_format.width, "format": _fmt(top.in_format)},
            "o": {"payload_bits": top.out_format.width, "format": _fmt(top.out_format)},
        },
        "layers": layers,
        "cycles_per_inference": cycles,
        "latency_cycles": top.latency,
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
