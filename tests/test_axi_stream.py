"""The AXI4-Stream top: its ports, its manifest, the whole digits test set through it under
cocotbext-axi with pauses on both sides, tlast checked by both testbenches, and --ports native."""

import json
import re

import numpy as np
import pytest

from lowbit.cli import main
from lowbit.compiler.build import load_build
from lowbit.flow import compile_graph, simulate_axi_stream, simulate_build

AXI_PORTS = {"aclk": "input", "aresetn": "input", "s_axis_tdata": "input", "s_axis_tvalid": "input",
             "s_axis_tready": "output", "s_axis_tlast": "input", "m_axis_tdata": "output",
             "m_axis_tvalid": "output", "m_axis_tready": "input", "m_axis_tlast": "output"}


def _top_ports(verilog, top="lowbit_top"):
    body = re.search(rf"^module {top}\((.*?)^endmodule", verilog, re.M | re.S).group(1)
    return {name: (d, int(m) - int(lsb) + 1 if m else 1) for d, m, lsb, name in re.findall(
        r"^\s*(input|output)\s+(?:wire\s+|reg\s+)?(?:\[(\d+):(\d+)\]\s*)?(\w+)\s*;", body, re.M)}


@pytest.fixture(scope="module")
def axi_build(digits_graph, tmp_path_factory):
    out = tmp_path_factory.mktemp("axi") / "b"
    compile_graph(digits_graph[0], out, target_cycles=8)  # fast enough that the pauses set the pace
    return out


def test_the_written_top_has_axi_stream_ports(axi_build):
    build = load_build(axi_build)
    ports = _top_ports(build.verilog())
    assert {k: d for k, (d, _) in ports.items()} == AXI_PORTS
    i, o = build.manifest["ports"]["i"]["payload_bits"], build.manifest["ports"]["o"]["payload_bits"]
    assert ports["s_axis_tdata"][1] == 8 * -(-i // 8) and ports["m_axis_tdata"][1] == 8 * -(-o // 8)
    iface = build.manifest["interface"]
    assert iface["style"] == "axi-stream" and iface["reset"] == "aresetn, synchronous, active low"
    assert iface["s_axis"] == {"tdata_bits": ports["s_axis_tdata"][1], "payload_bits": i, "beats_per_image": 1,
                               "tlast": "taken, not needed: the network counts beats_per_image"}
    assert iface["m_axis"]["beats_per_image"] == 1 and "element k" in iface["packing"]


def test_the_whole_digits_test_set_through_cocotbext_axi(axi_build):
    r = simulate_axi_stream(axi_build, pause=0.5, seed=1)
    assert r["images"] == 360 and r["mismatches"] == 0 and r["tlast_errors"] == 0, r["first_mismatch"]
    assert r["hw_accuracy"] == r["ir_accuracy"] > 0.8
    # the pauses really held both sides, on about half of their cycles
    assert 0.3 * r["cycles"] < r["out_pause_cycles"] < 0.7 * r["cycles"]
    assert r["in_pause_cycles"] > 0.1 * r["cycles"]


def test_the_batch_harness_runs_the_axi_top_with_stalls(axi_build):
    r = simulate_build(axi_build, limit=120)
    assert r["mismatches"] == 0 and r["cycles_measured"] == r["cycles_predicted"]
    assert r["latency_measured"] == r["latency_predicted"]


def test_a_wrong_tlast_is_caught_by_both_testbenches(digits_graph):
    """An AXI top that claims two result beats per image puts tlast on every other beat: the
    harness counts those beats as mismatches, and cocotbext-axi's frames come out the wrong length."""
    from amaranth.back import verilog

    from lowbit.compiler.codegen import lower
    from lowbit.hw.axis import AxiStreamTop
    from lowbit.hw.payload import VectorFormat
    from lowbit.model.data import input_encoding, load_digits_split
    from lowbit.sim.axi_stream import run_axi_stream
    from lowbit.sim.runner import run_stream

    graph = digits_graph[0]
    top = lower(graph)
    text = verilog.convert(AxiStreamTop(top, out_beats=2), name="lowbit_top", emit_src=False)
    x = input_encoding(graph.meta["input"])(load_digits_split().x_test[:40])
    beats = VectorFormat(**top.in_format.record()).pack(x)
    expected = VectorFormat(**top.out_format.record()).pack(graph.hardware_output(x))
    harness = run_stream(text, "lowbit_top", beats, expected, n_items=40, timing_items=16, progress=False,
                         waves_on_mismatch=False)
    # tlast low on the 1st, 3rd, ... result beat, where it belongs on each: in both phases
    assert harness.wrong == 0 and harness.mismatches == 16 // 2 + 40 // 2
    assert harness.first_mismatches[0]["kind"] == "tlast" and harness.first_mismatches[0]["index"] == 0
    cocotb = run_axi_stream(text, "lowbit_top", beats, expected, n_items=40)
    assert cocotb["tlast_errors"] > 0 and cocotb["mismatches"] > 0


def test_native_ports_keep_todays_names(digits_checkpoint, tmp_path, capsys):
    assert main(["compile", str(digits_checkpoint[0]), "-o", str(tmp_path / "n"), "--ports", "native",
                 "--target-cycles", "64"]) in (0, None)
    build = load_build(tmp_path / "n")
    ports = set(_top_ports(build.verilog()))
    assert ports == {"clk", "rst", "i__payload", "i__valid", "i__ready", "o__payload", "o__valid", "o__ready"}
    assert build.manifest["interface"]["style"] == "native"
    r = simulate_build(tmp_path / "n", limit=40)
    assert r["mismatches"] == 0
    from lowbit.core.errors import LowbitError

    with pytest.raises(LowbitError, match="has native ports, not AXI4-Stream"):
        simulate_axi_stream(tmp_path / "n", limit=4)


def test_an_earlier_build_without_an_interface_reads_as_native(axi_build, tmp_path):
    import shutil

    old = tmp_path / "old"
    shutil.copytree(axi_build, old)
    manifest = json.loads((old / "manifest.json").read_text())
    del manifest["interface"]
    (old / "manifest.json").write_text(json.dumps(manifest))
    assert load_build(old).ports == "native"
    assert np.isfinite(load_build(old).manifest["cycles_per_inference"])
