"""Synthesis per engine: a build's Verilog cut at its engines, each engine's text independent of the
others (so a changed layer re-synthesizes only its engine), the parts added up, and the CLI's
per-engine and flat runs."""

import pytest

from lowbit.boards.engine_synth import GLUE, split_engines, synthesize_engines
from lowbit.boards.synth import synthesize
from lowbit.cli import main
from lowbit.compiler.build import write_build
from lowbit.compiler.codegen import generate_verilog
from lowbit.core.errors import LowbitError
from lowbit.folding import fold_for_cycles
from lowbit.sweep import _random_model, random_model_arch


def _graph(first_layer_seed=None):
    """A ternary 64-32-16-10 MLP; with a seed, the first layer's weights drawn again."""
    import torch

    from lowbit.model.export import export_model

    model = _random_model(random_model_arch("mlp:32,16", "ternary", in_shape=(64,), classes=10), 0)
    if first_layer_seed is not None:
        torch.manual_seed(first_layer_seed)
        first = next(p for p in model.parameters() if p.dim() == 2)
        with torch.no_grad():
            first.copy_(torch.randn_like(first))
    return fold_for_cycles(export_model(model, {}), 64)


@pytest.fixture(scope="module")
def two_designs():
    return [generate_verilog(_graph(seed), ports="axi-stream")[0] for seed in (None, 5)]


@pytest.mark.parametrize("ports", ["axi-stream", "native"])
@pytest.mark.parametrize("family", ["xilinx", "ice40"])
def test_the_parts_are_the_engines_and_the_glue(ports, family):
    text, top = generate_verilog(_graph(), ports=ports)
    plan = split_engines(text, "lowbit_top", family)
    assert list(plan.parts) == [f"engine{k}" for k in range(len(top.engines))] + [GLUE]
    tops = [plan.jobs[terms[0][0]].top for terms in plan.parts.values()]
    assert tops == ["engine"] * len(top.engines) + ["lowbit_top"]
    for name, terms in plan.parts.items():
        shell = plan.jobs[terms[0][0]]
        if name != GLUE:
            assert "module \\engine " in shell.text and "lowbit_top" not in shell.text
            assert "\\engine.weights_rom" in shell.text  # its submodules came along, renamed
        rows = [plan.jobs[k] for k, _, _ in terms[1:]]
        # On xc7, whose flow maps each PE row on its own, the rows are jobs of their own.
        assert bool(rows) == (family == "xilinx" and name != GLUE)
        assert all(r.top == "row" and "module \\row " in r.text for r in rows)
        assert len(terms[0][2]) == (len(top.engines) if name == GLUE else len(rows))  # the black boxes
    glue = plan.jobs[plan.parts[GLUE][0][0]].text
    assert glue.count("(* blackbox *)") == len(top.engines) and "pe0_row" not in glue
    # Every module of the file is in a job (the rows of one engine are one text there).
    assert sum(j.text.count("endmodule") - j.text.count("(* blackbox *)") for j in plan.jobs) <= \
        text.count("endmodule")
    assert len({j.digest for j in plan.jobs}) == len(plan.jobs)


def test_a_changed_layer_changes_only_its_engine(two_designs):
    a, b = (split_engines(text, "lowbit_top", "xilinx") for text in two_designs)
    changed = [name for name in a.parts if {a.jobs[k].digest for k, _, _ in a.parts[name]}
               != {b.jobs[k].digest for k, _, _ in b.parts[name]}]
    assert changed == ["engine0"]
    # Its rows take the weights as inputs: the same text as before, only the shell changed.
    assert [a.jobs[k].digest == b.jobs[k].digest for k, _, _ in a.parts["engine0"]] == [False, True, True]


def test_parts_are_cached_each_and_add_up(two_designs, tmp_path):
    a, b = two_designs
    total, parts = synthesize_engines(a, "lowbit_top", "xilinx", cache_dir=tmp_path)
    assert not any(p.cached for p in parts.values())
    assert total.luts == sum(p.luts for p in parts.values()) > 0
    assert total.ffs == sum(p.ffs for p in parts.values()) > 0
    assert total.flow == "synth_xilinx (abc), per engine" and set(total.modules) == set(parts)
    seen = []
    again, parts_b = synthesize_engines(b, "lowbit_top", "xilinx", cache_dir=tmp_path,
                                        progress=lambda job, done, n: seen.append((job.top, done, n)))
    assert [name for name, p in parts_b.items() if not p.cached] == ["engine0"]
    jobs = len(split_engines(b, "lowbit_top", "xilinx").jobs)
    assert [done for _, done, _ in seen] == list(range(1, jobs + 1)) and {n for _, _, n in seen} == {jobs}
    # Per engine or flat, a design's flip-flops are the same; its LUTs differ by what Yosys shares
    # across engines in one run.
    flat = synthesize(a, "lowbit_top", "xilinx", cache_dir=tmp_path)
    assert flat.ffs == total.ffs and abs(flat.luts - total.luts) <= 0.1 * flat.luts


def test_a_file_without_engines_is_a_clear_error():
    text = "module lowbit_top(clk);\n  input clk;\nendmodule\n"
    with pytest.raises(LowbitError, match="has no engine modules"):
        split_engines(text, "lowbit_top", "xilinx")
    with pytest.raises(LowbitError, match="has no module 'other'"):
        split_engines(text, "other", "xilinx")


def test_lowbit_synth_per_engine_and_flat(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("LOWBIT_CACHE", str(tmp_path / "cache"))
    write_build(_graph(), tmp_path / "b")
    assert main(["synth", str(tmp_path / "b"), "--workers", "1"]) in (None, 0)
    out = capsys.readouterr().out.splitlines()
    per_engine = int(out[-1].split("per engine: ")[1].split(" LUT")[0])
    rows = [line.split() for line in out[:-1]]
    assert [r[0] for r in rows] == ["engine0", "engine1", "engine2", GLUE]
    assert per_engine == sum(int(r[1]) for r in rows)
    assert main(["synth", str(tmp_path / "b"), "--flat"]) in (None, 0)
    flat = int(capsys.readouterr().out.split("flat: ")[1].split(" LUT")[0])
    # Out of context, nothing is shared across engines: the totals differ, by little.
    assert 0 < flat and abs(per_engine - flat) <= 0.1 * flat


def test_an_engine_whose_port_list_wraps_is_a_black_box_of_the_glue(tmp_path):
    # The position table of 48 channels drives its output as one port per channel: the Verilog
    # writer wraps that port list over several lines, and the glue's black box must keep them all.
    import numpy as np

    from lowbit.compiler.graph import Graph
    from lowbit.compiler.ir import PositionAdd, ValueType

    table = np.random.default_rng(0).integers(-3, 4, (4, 48))
    graph = Graph(ValueType("uint", 3), (2, 2, 48), [PositionAdd("position", table, ValueType("uint", 3))])
    text = generate_verilog(graph, ports="axi-stream")[0]
    header = text[text.index("module \\lowbit_top.network.engine0 ("):]
    assert "\n" in header[:header.index(";")]  # the case at hand: a header of several lines
    total, parts = synthesize_engines(text, "lowbit_top", "xilinx", cache_dir=tmp_path)
    assert set(parts) == {"engine0", GLUE} and parts["engine0"].luts > 48 and total.ffs > 0


def test_parts_are_named_by_their_engines_past_ten():
    # Eleven matrix engines: the file lists engine10 before engine2, and each part must still be
    # the engine it is named after, which its number of PE rows tells.
    import re

    from lowbit.model.export import export_model

    arch = random_model_arch("mlp:" + ",".join(["8"] * 10), "ternary", in_shape=(16,), classes=4)
    graph = fold_for_cycles(export_model(_random_model(arch, 0), {}), 16)
    text, top = generate_verilog(graph, ports="native")
    assert len(top.engines) == 11 and text.index("engine10 ") < text.index("engine2 ")
    plan = split_engines(text, "lowbit_top", "ice40")
    assert list(plan.parts) == [f"engine{k}" for k in range(11)] + [GLUE]
    rows = [len(set(re.findall(r"module \\engine\.pe\d+_row ", plan.jobs[plan.parts[f"engine{k}"][0][0]].text)))
            for k in range(11)]
    pes = [node.folding.pe for node in graph.nodes if getattr(node, "folding", None)]
    assert rows == pes and len(set(pes)) > 1, (rows, pes)
