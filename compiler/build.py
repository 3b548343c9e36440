"""A build folder: what ``lowbit compile`` writes and every later command reads.

``<top>.v`` (the Verilog), ``manifest.json`` (ports, layers, foldings, exact cycles, host ops)
and ``graph.npz`` (the IR it was compiled from, the reference of every check).
"""

import json
from dataclasses import dataclass
from pathlib import Path

from lowbit.core.errors import LowbitError
from lowbit.core.files import atomic_dir, atomic_write_text

from .codegen import TOP_NAME, build_manifest, generate_verilog
from .serialize import load_graph, save_graph

__all__ = ["Build", "write_build", "load_build"]


@dataclass(frozen=True)
class Build:
    """A build folder that :func:`load_build` found complete: its manifest, and where its
    Verilog and its IR are."""

    folder: Path
    manifest: dict

    @property
    def verilog_path(self):
        return self.folder / f"{self.manifest['top']}.v"

    def verilog(self):
        """The Verilog text."""
        return self.verilog_path.read_text(encoding="utf-8")

    def graph(self):
        """The IR graph the build was compiled from."""
        return load_graph(self.folder / "graph.npz")


def write_build(graph, out_dir, name=TOP_NAME):
    """Write ``out_dir`` atomically: ``<name>.v``, ``manifest.json`` and ``graph.npz``.

    A failure at any step leaves no partial folder behind. Returns the manifest.
    """
    out_dir = Path(out_dir)
    text, top = generate_verilog(graph, name)
    manifest = build_manifest(graph, top, name)
    with atomic_dir(out_dir) as tmp:
        atomic_write_text(tmp / f"{name}.v", text)
        atomic_write_text(tmp / "manifest.json", json.dumps(manifest, indent=2, sort_keys=True) + "\n")
        save_graph(tmp / "graph.npz", graph)
    return manifest


def load_build(build_dir):
    """The :class:`Build` in ``build_dir``; a clear error if it is not a build folder."""
    build_dir = Path(build_dir)
    manifest_path = build_dir / "manifest.json"
    if not manifest_path.is_file():
        raise LowbitError(f"{str(build_dir)!r} is not a build folder (no manifest.json)",
                          "create one with 'lowbit compile CKPT -o BUILD'")
    build = Build(build_dir, json.loads(manifest_path.read_text(encoding="utf-8")))
    if not build.verilog_path.is_file():
        raise LowbitError(f"build folder {str(build_dir)!r} has no {build.verilog_path.name}",
                          "recreate it with 'lowbit compile CKPT -o BUILD'")
    return build
