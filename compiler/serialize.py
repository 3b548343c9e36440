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
from lowbit.core.schema import DICT, POSITIVE, TEXT, Record, list_of, validate

from .graph import TYPE_RECORD, Graph, ValueType, flat_nodes, type_record
from .ir import OPS

_FIX = "re-create the build with 'lowbit compile'"
_HEADER = Record({"input_type": TYPE_RECORD, "input_shape": list_of(POSITIVE, least=1),
                  "nodes": list_of(Record({"op": TEXT, "name": TEXT}), least=1), "meta": DICT})

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
    what = f"IR file {str(path)!r}"
    if isinstance(header, dict) and "input_shape" not in header and "input_features" in header:
        header["input_shape"] = [header["input_features"]]  # files of earlier versions
    validate(header, _HEADER, what=what, fix=_FIX)
    records = []
    for k, d in enumerate(header["nodes"]):
        kind = OPS.get(d["op"])
        if kind is None:
            raise LowbitError(f"{what} has an unknown op {d['op']!r}", f"ops: {', '.join(OPS)}")
        validate(d, Record(kind.record_fields, kind.record_defaults),
                 what=f"{what}, node {k} ({d['op']} {d['name']!r})", fix=_FIX)
        prefix = f"n{k}_"
        own = {key[len(prefix):]: value for key, value in arrays.items() if key.startswith(prefix)}
        missing = [name for name in kind.record_arrays if name not in own]
        if missing:
            raise LowbitError(f"{what}, node {k} ({d['op']} {d['name']!r}): array {missing[0]!r} is missing",
                              _FIX)
        records.append((d, own))
    try:
        nodes = _nest(iter(records), None, path)
        return Graph(ValueType(**header["input_type"]), header["input_shape"], nodes, header["meta"])
    except LowbitError as e:
        if e.hint:
            raise
        raise LowbitError(f"{what}: {e.message}", _FIX) from None


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
        try:
            out.append(OPS[d["op"]].from_record(d["name"], fields, own, body))
        except (TypeError, ValueError) as e:  # an array of the wrong kind, say
            raise LowbitError(f"IR file {str(path)!r}: node {d['op']} {d['name']!r} cannot be read ({e})",
                              _FIX) from None
    return out
