"""Save and load IR graphs: one .npz with the arrays and a JSON description of the nodes."""

import io
import json
from pathlib import Path

import numpy as np

from lowbit.errors import LowbitError
from lowbit.files import atomic_write_bytes

from .ir import ArgMax, Flatten, Folding, Graph, HostAffine, MatMul, MultiThreshold, ValueType
from .normalize_ops import NormalizeSign
from .residual_ops import Residual, flat_nodes
from .window_ops import MaxPool, SlidingWindow

__all__ = ["save_graph", "load_graph"]


def _vt(t):
    return {"kind": t.kind, "bits": t.bits}


def save_graph(path, graph):
    arrays, nodes = {}, []
    # A residual block is stored as its own entry followed by its body's entries.
    for k, n in enumerate(flat_nodes(graph.nodes)):
        d = {"op": type(n).__name__, "name": n.name}
        if isinstance(n, MatMul):
            arrays[f"n{k}_weights"] = n.weights
            d.update(weight_format=n.weight_format, in_type=_vt(n.in_type), copies=n.copies,
                     weight_memory=n.weight_memory,
                     folding=[n.folding.pe, n.folding.simd] if n.folding else None)
        elif isinstance(n, MultiThreshold):
            arrays[f"n{k}_thresholds"] = n.thresholds
            if n.invert is not None:
                arrays[f"n{k}_invert"] = n.invert
            d.update(in_type=_vt(n.in_type), out_type=_vt(n.out_type))
        elif isinstance(n, HostAffine):
            arrays[f"n{k}_scale"], arrays[f"n{k}_shift"] = n.scale, n.shift
        elif isinstance(n, ArgMax):
            d.update(channels=n.channels)
        elif isinstance(n, Flatten):
            d.update(in_shape=list(n.in_shape), in_type=_vt(n.in_type))
        elif isinstance(n, SlidingWindow):
            d.update(channels=n.channels, kernel=n.kernel, stride=n.stride, pad=n.pad,
                     pad_value=n.pad_value, in_type=_vt(n.in_type))
        elif isinstance(n, MaxPool):
            d.update(channels=n.channels, kernel=n.kernel, stride=n.stride, in_type=_vt(n.in_type))
        elif isinstance(n, NormalizeSign):
            d.update(channels=n.channels, in_type=_vt(n.in_type))
            if n.offset is not None:
                arrays[f"n{k}_offset"] = n.offset
        elif isinstance(n, Residual):
            d.update(body=len(n.body), in_type=_vt(n.in_type))
        else:
            raise LowbitError(f"{n.name}: cannot save a {type(n).__name__}")
        nodes.append(d)
    header = {"input_type": _vt(graph.input_type), "input_shape": list(graph.input_shape),
              "nodes": nodes, "meta": graph.meta}
    arrays["header"] = np.frombuffer(json.dumps(header, sort_keys=True).encode(), dtype=np.uint8)
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    atomic_write_bytes(path, buf.getvalue())


def load_graph(path):
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
        header = json.loads(arrays.pop("header").tobytes().decode())
    except FileNotFoundError:
        raise LowbitError(f"IR file {str(path)!r} does not exist",
                          "point at a build folder made by 'lowbit compile'") from None
    except Exception as e:
        raise LowbitError(f"IR file {str(path)!r} is corrupt ({type(e).__name__})",
                          "re-create the build with 'lowbit compile'") from None
    nodes = []
    for k, d in enumerate(header["nodes"]):
        if d["op"] == "MatMul":
            nodes.append(MatMul(d["name"], arrays[f"n{k}_weights"], d["weight_format"],
                                ValueType(**d["in_type"]), Folding(*d["folding"]) if d["folding"] else None,
                                d.get("copies", 1), d.get("weight_memory", "auto")))
        elif d["op"] == "MultiThreshold":
            nodes.append(MultiThreshold(d["name"], arrays[f"n{k}_thresholds"],
                                        ValueType(**d["in_type"]), ValueType(**d["out_type"]),
                                        arrays.get(f"n{k}_invert")))
        elif d["op"] == "HostAffine":
            nodes.append(HostAffine(d["name"], arrays[f"n{k}_scale"], arrays[f"n{k}_shift"]))
        elif d["op"] == "ArgMax":
            nodes.append(ArgMax(d["name"], d["channels"]))
        elif d["op"] == "Flatten":
            nodes.append(Flatten(d["name"], tuple(d["in_shape"]), ValueType(**d["in_type"])))
        elif d["op"] == "SlidingWindow":
            nodes.append(SlidingWindow(d["name"], d["channels"], d["kernel"], d["stride"], d["pad"],
                                       d["pad_value"], ValueType(**d["in_type"])))
        elif d["op"] == "MaxPool":
            nodes.append(MaxPool(d["name"], d["channels"], d["kernel"], d["stride"], ValueType(**d["in_type"])))
        elif d["op"] == "NormalizeSign":
            nodes.append(NormalizeSign(d["name"], d["channels"], ValueType(**d["in_type"]),
                                       arrays.get(f"n{k}_offset")))
        elif d["op"] == "Residual":
            nodes.append(d)  # built with its body below
        else:
            raise LowbitError(f"IR file {str(path)!r} has an unknown op {d['op']!r}")
    nodes = _nest(iter(nodes), None, path)
    shape = header.get("input_shape", header.get("input_features"))
    return Graph(ValueType(**header["input_type"]), shape, nodes, header["meta"])


def _nest(flat, count, path):
    """Rebuild ``count`` ops (None: all that are left) from the flat list; a residual entry takes
    the ops of its body."""
    out = []
    while count is None or len(out) < count:
        node = next(flat, None)
        if node is None and count is None:
            break
        if node is None:
            raise LowbitError(f"IR file {str(path)!r} is corrupt (a residual body is cut short)",
                              "re-create the build with 'lowbit compile'")
        if isinstance(node, dict):
            node = Residual(node["name"], _nest(flat, node["body"], path), ValueType(**node["in_type"]))
        out.append(node)
    return out
