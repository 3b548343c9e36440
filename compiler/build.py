"""A build folder: what ``lowbit compile`` writes and every later command reads.

``<top>.v`` (the Verilog), ``manifest.json`` (ports, layers, foldings, exact cycles, host ops)
and ``graph.npz`` (the IR it was compiled from, the reference of every check).
"""

import json
import re
from dataclasses import dataclass
from pathlib import Path

from lowbit.core.errors import LowbitError
from lowbit.core.files import atomic_dir, atomic_write_text, claim_output_dir
from lowbit.core.schema import (DICT, NATURAL, POSITIVE, TEXT, Check, Record, SchemaError, list_of, one_of,
                                optional, validate)
from lowbit.core.types import KINDS

from .codegen import PORT_STYLES, TOP_NAME, build_manifest, generate_verilog
from .ir import ENGINE_KINDS, engine_kind
from .serialize import load_graph, save_graph

__all__ = ["Build", "write_build", "load_build", "check_manifest", "MANIFEST", "BUILD_KIND"]


@dataclass(frozen=True)
class Build:
    """A build folder that :func:`load_build` found complete: its manifest, and where its
    Verilog and its IR are."""

    folder: Path
    manifest: dict

    @property
    def ports(self):
        """The top's port style: ``"axi-stream"`` or ``"native"``."""
        return self.manifest.get("interface", {"style": "native"})["style"]

    @property
    def verilog_path(self):
        return self.folder / f"{self.manifest['top']}.v"

    def verilog(self):
        """The Verilog text."""
        return self.verilog_path.read_text(encoding="utf-8")

    def graph(self):
        """The IR graph the build was compiled from, checked against the manifest."""
        graph = load_graph(self.folder / "graph.npz")
        m = self.manifest
        fmt = m["ports"]["i"]["format"]
        problems = []
        if list(graph.input_shape) != m["input_shape"]:
            problems.append(f"its input shape {list(graph.input_shape)} is not the manifest's {m['input_shape']}")
        if (graph.input_type.kind, graph.input_type.bits, graph.input_shape[-1]) != \
                (fmt["kind"], fmt["bits"], fmt["count"]):
            problems.append(f"its input, {graph.input_shape[-1]} elements of {graph.input_type}, is not "
                            f"the input port's format {fmt}")
        out_shape = graph.shapes()[len(graph.hardware_nodes)]
        if out_shape[-1] != m["ports"]["o"]["format"]["count"]:
            problems.append(f"its hardware output has {out_shape[-1]} elements, the output port "
                            f"{m['ports']['o']['format']['count']}")
        if problems:
            raise LowbitError(f"the IR file of build {str(self.folder)!r} does not match its manifest: "
                              f"{problems[0]}", _FIX)
        return graph


BUILD_KIND = "build"


def write_build(graph, out_dir, name=TOP_NAME, *, inputs=(), force=False, ports="axi-stream"):
    """Write ``out_dir`` atomically: ``<name>.v`` (its top with ``ports``: AXI4-Stream, or
    ``"native"`` stream names), ``manifest.json`` and ``graph.npz``.

    The folder is claimed first (:func:`lowbit.core.files.claim_output_dir`: a new, empty or
    earlier build folder, holding none of ``inputs``). A failure at any step leaves no partial
    folder behind. Returns the manifest.
    """
    out_dir = claim_output_dir(out_dir, BUILD_KIND, inputs=inputs, force=force)
    text, top = generate_verilog(graph, name, ports=ports)
    manifest = build_manifest(graph, top, name, ports)
    with atomic_dir(out_dir, BUILD_KIND, inputs=inputs, force=force) as tmp:
        atomic_write_text(tmp / f"{name}.v", text)
        atomic_write_text(tmp / "manifest.json", json.dumps(manifest, indent=2, sort_keys=True) + "\n")
        save_graph(tmp / "graph.npz", graph)
    return manifest


_FIX = "re-create the build with 'lowbit compile'"
_FORMAT = Record({"kind": one_of(*KINDS), "bits": POSITIVE, "count": POSITIVE})
_PORT = Record({"payload_bits": POSITIVE, "format": _FORMAT})
# The fields every engine's entry has; each kind adds its own (its ``entry_fields``).
_LAYER = Record({"name": TEXT, "op": one_of(*ENGINE_KINDS), "vectors_per_inference": POSITIVE,
                 "cycles_per_item": POSITIVE, "cycles_per_inference": POSITIVE, "latency": NATURAL,
                 "in_format": _FORMAT, "out_format": _FORMAT})
MANIFEST = Record({
    "top": Check("a Verilog identifier", lambda v: isinstance(v, str) and re.fullmatch(r"[A-Za-z_]\w*", v)),
    "ports": Record({"i": _PORT, "o": _PORT}),
    "input_shape": list_of(POSITIVE, least=1),
    "beats_per_inference": POSITIVE,
    "layers": list_of(DICT, least=1),
    "fifos": list_of(Record({"after": TEXT, "depth": POSITIVE, "bits": POSITIVE})),
    "cycles_per_inference": POSITIVE,
    "latency_cycles": optional(NATURAL),
    "host": list_of(Record({"op": TEXT, "name": TEXT})),
    "input_encoding": optional(DICT),
    "interface": Record({"style": one_of(*PORT_STYLES)}),
}, defaults={"interface": {"style": "native"}})  # builds written before the AXI-Stream top


def check_manifest(manifest, where):
    """``manifest`` if every field lowbit reads is there, of the right type and range, and the
    fields agree with each other; else a LowbitError naming ``where`` and the field."""
    what = f"manifest {where}"
    validate(manifest, MANIFEST, what=what, fix=_FIX)
    layers = list(_check_layers(manifest["layers"], "layers", what))
    problems = []
    for side, end in (("i", manifest["layers"][0]["in_format"]), ("o", manifest["layers"][-1]["out_format"])):
        port = manifest["ports"][side]
        fmt = port["format"]
        if port["payload_bits"] != fmt["bits"] * fmt["count"]:
            problems.append(f"ports.{side}.payload_bits is {port['payload_bits']}, not the "
                            f"{fmt['bits'] * fmt['count']} bits of its format")
        if fmt != end:
            problems.append(f"ports.{side}.format {fmt} is not the format of the engine at that end, {end}")
    slowest = max(layer["cycles_per_inference"] for layer in manifest["layers"])
    if manifest["cycles_per_inference"] != slowest:
        problems.append(f"cycles_per_inference is {manifest['cycles_per_inference']}, but its slowest "
                        f"engine takes {slowest}")
    if manifest["beats_per_inference"] != manifest["layers"][0]["vectors_per_inference"]:
        problems.append(f"beats_per_inference is {manifest['beats_per_inference']}, but the first engine "
                        f"takes {manifest['layers'][0]['vectors_per_inference']}")
    names = {layer["name"] for layer in layers}
    problems += [f"fifos[{k}].after names no engine: {f['after']!r}"
                 for k, f in enumerate(manifest["fifos"]) if f["after"] not in names]
    if problems:
        raise LowbitError(f"{what}: {problems[0]}", _FIX)
    return manifest


def _check_layers(entries, path, what):
    """Check each engine entry (residual bodies included) against its kind's fields; yield them."""
    for k, entry in enumerate(entries):
        where = f"{path}[{k}]"
        try:
            _LAYER.validate(entry, where)
            kind = engine_kind(entry["op"])
            Record(kind.entry_fields, kind.entry_defaults).validate(entry, where)
        except SchemaError as e:
            raise LowbitError(f"{what}: field {e.path} {e.problem}", _FIX) from None
        yield entry
        yield from _check_layers(entry.get("body", []), f"{where}.body", what)


def load_build(build_dir):
    """The :class:`Build` in ``build_dir``; a clear error if it is not a build folder or its
    manifest is damaged (:func:`check_manifest`)."""
    build_dir = Path(build_dir)
    manifest_path = build_dir / "manifest.json"
    if not manifest_path.is_file():
        raise LowbitError(f"{str(build_dir)!r} is not a build folder (no manifest.json)",
                          "create one with 'lowbit compile CKPT -o BUILD'")
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise LowbitError(f"manifest {str(manifest_path)!r} cannot be read ({type(e).__name__})", _FIX) from None
    build = Build(build_dir, check_manifest(manifest, repr(str(manifest_path))))
    if not build.verilog_path.is_file():
        raise LowbitError(f"build folder {str(build_dir)!r} has no {build.verilog_path.name}",
                          "recreate it with 'lowbit compile CKPT -o BUILD'")
    return build
