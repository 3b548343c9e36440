"""Save and load IR graphs: one .npz with the arrays and a JSON description of the nodes.

Each op is saved as its record (:meth:`lowbit.compiler.graph.Op.record`): a JSON entry with its
kind and name beside its fields, and its arrays named ``n{k}_{key}`` for the k-th op. An op with
a body records how many ops its body has (``"body": n``); they follow it, depth first.
"""

import io
import json
from pathlib import Path

import numpy as np

from lowbit.core.errors import LowbitError
from lowbit.core.files import atomic_write_bytes

from .graph import Graph, ValueType, flat_nodes, type_record
from .ir import OPS

__all__ = ["save_graph", "load_graph"]


def save_graph(path, graph):
    arrays, nodes = {}, []
    for k, n in enumerate(flat_nodes(graph.nodes)):
        fields, own = n.record()
        nodes.append({"op": type(n).__name__, "name": n.name, **fields})
        arrays.update({f"n{k}_{key}": value for key, value in own.items()})
    header = {"input_type": type_record(graph.input_type), "input_shape": list(graph.input_shape),
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
    records = []
    for k, d in enumerate(header["nodes"]):
        if d["op"] not in OPS:
            raise LowbitError(f"IR file {str(path)!r} has an unknown op {d['op']!r}")
        prefix = f"n{k}_"
        own = {key[len(prefix):]: value for key, value in arrays.items() if key.startswith(prefix)}
        records.append((d, own))
    nodes = _nest(iter(records), None, path)
    shape = header.get("input_shape", header.get("input_features"))
    return Graph(ValueType(**header["input_type"]), shape, nodes, header["meta"])


def _nest(records, count, path):
    """Build ``count`` ops (None: all that are left) from the records; an op with a body takes
    the ops that follow it as its body."""
    out = []
    while count is None or len(out) < count:
        record = next(records, None)
        if record is None and count is None:
            break
        if record is None:
            raise LowbitError(f"IR file {str(path)!r} is corrupt (a body is cut short)",
                              "re-create the build with 'lowbit compile'")
        d, own = record
        fields = {key: value for key, value in d.items() if key not in ("op", "name")}
        body = _nest(records, fields["body"], path) if "body" in fields else ()
        out.append(OPS[d["op"]].from_record(d["name"], fields, own, body))
    return out
