"""The README's example of compiling a network trained elsewhere, from numpy arrays, runs as written."""

import re
from pathlib import Path

README = Path(__file__).resolve().parent.parent / "README.md"


def test_numpy_graph_example_compiles_and_simulates_bit_exact(tmp_path, monkeypatch):
    text = README.read_text(encoding="utf-8")
    section = text[text.index("**Compiling a network trained elsewhere.**"):]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    monkeypatch.chdir(tmp_path)
    namespace = {}
    exec(compile(code, "README.md", "exec"), namespace)
    report, manifest = namespace["report"], namespace["manifest"]
    assert report["images"] == 200 and report["mismatches"] == 0
    assert report["ir_accuracy"] is None  # no labels given
    assert manifest["cycles_per_inference"] <= 16
    assert (tmp_path / "build" / "numpy-net" / "manifest.json").is_file()


def test_inputs_of_the_wrong_shape_are_refused(tmp_path):
    import numpy as np
    import pytest

    from lowbit.compiler.ir import BIPOLAR, ArgMax, Graph, MatMul
    from lowbit.core.errors import LowbitError
    from lowbit.flow import compile_graph, simulate_build

    graph = Graph(BIPOLAR, 8, [MatMul("fc", np.ones((3, 8), int), "bipolar", BIPOLAR), ArgMax("argmax", 3)])
    compile_graph(graph, tmp_path / "b")
    with pytest.raises(LowbitError, match=r"inputs of shape \(4, 9\) do not fit the graph's input \(8,\)"):
        simulate_build(tmp_path / "b", inputs=np.ones((4, 9), int))
    with pytest.raises(LowbitError, match="give a dataset or inputs to simulate, not both"):
        simulate_build(tmp_path / "b", inputs=np.ones((4, 8), int), dataset="digits")
