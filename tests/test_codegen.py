import json

import pytest

from lowbit.compiler.build import write_build
from lowbit.compiler.codegen import TOP_NAME, generate_verilog
from lowbit.compiler.folding import most_folded
from lowbit.folding import fold_for_cycles
from lowbit.core.errors import LowbitError


def test_verilog_is_byte_identical_across_runs(digits_graph):
    graph = fold_for_cycles(digits_graph[0], 256)
    a, _ = generate_verilog(graph)
    b, _ = generate_verilog(graph)
    assert a == b
    assert f"module {TOP_NAME}(" in a


def test_build_folder_and_manifest(tmp_path, digits_graph):
    graph = most_folded(digits_graph[0])
    manifest = write_build(graph, tmp_path / "b")
    files = sorted(p.name for p in (tmp_path / "b").iterdir())
    assert files == [".lowbit.json", "graph.npz", "lowbit_top.v", "manifest.json"]
    marker = json.loads((tmp_path / "b" / ".lowbit.json").read_text())
    assert marker["kind"] == "build" and marker["files"] == ["graph.npz", "lowbit_top.v", "manifest.json"]
    on_disk = json.loads((tmp_path / "b" / "manifest.json").read_text())
    assert on_disk == json.loads(json.dumps(manifest))
    shapes = [(l["mh"], l["mw"], l["pe"], l["simd"]) for l in manifest["layers"]]
    assert shapes == [(64, 256, 1, 1), (64, 64, 1, 1), (10, 64, 1, 1)]
    assert manifest["cycles_per_inference"] == 64 * 256
    assert manifest["latency_cycles"] == sum(l["cycles_per_item"] + 2 for l in manifest["layers"])
    assert manifest["ports"]["i"]["payload_bits"] == 256
    assert manifest["ports"]["o"]["format"] == {"kind": "int", "bits": 8, "count": 10}
    assert [h["op"] for h in manifest["host"]] == ["affine", "argmax"]
    assert list(tmp_path.iterdir()) == [tmp_path / "b"]  # no temporary folders left


def test_failed_build_leaves_nothing(tmp_path, digits_graph, monkeypatch):
    import lowbit.compiler.build as codegen

    def broken(path, graph):
        raise LowbitError("disk full")
    monkeypatch.setattr(codegen, "save_graph", broken)
    with pytest.raises(LowbitError, match="disk full"):
        write_build(most_folded(digits_graph[0]), tmp_path / "b")
    assert list(tmp_path.iterdir()) == []


def test_build_is_byte_identical_across_runs(tmp_path, digits_graph):
    """Deterministic output: two builds of the same graph are the same bytes, file by file."""
    import time

    from lowbit.compiler.build import write_build
    from lowbit.compiler.folding import most_folded

    graph = most_folded(digits_graph[0])
    write_build(graph, tmp_path / "a")
    time.sleep(2.1)  # a zip timestamp has 2-second resolution
    write_build(graph, tmp_path / "b")
    names = sorted(p.name for p in (tmp_path / "a").iterdir())
    assert names == sorted(p.name for p in (tmp_path / "b").iterdir()) == \
        [".lowbit.json", "graph.npz", "lowbit_top.v", "manifest.json"]
    for name in names:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name


def test_outputs_get_ordinary_permissions(tmp_path):
    """Atomic outputs are made private by the temporary-file calls; finished ones must not be."""
    import os

    from lowbit.core.files import atomic_dir, atomic_write_text

    old = os.umask(0o022)
    try:
        atomic_write_text(tmp_path / "a.txt", "x")
        with atomic_dir(tmp_path / "d") as d:
            atomic_write_text(d / "b.txt", "y")
    finally:
        os.umask(old)
    assert (tmp_path / "a.txt").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "d").stat().st_mode & 0o777 == 0o755
    assert (tmp_path / "d" / "b.txt").stat().st_mode & 0o777 == 0o644
