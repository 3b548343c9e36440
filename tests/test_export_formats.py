"""Export of every weight format and layer kind: the IR equals the integer-exact PyTorch model on
every activation and logit, and the generated Verilog equals the IR on every output word."""

import numpy as np
import pytest
import torch

from lowbit.model.check import compare_with_torch
from lowbit.compiler.codegen import build_manifest, generate_verilog
from lowbit.model.export import export_model
from lowbit.compiler.folding import apply_folding, most_folded
from lowbit.compiler.ir import Folding
from lowbit.compiler.serialize import load_graph, save_graph
from lowbit.core.errors import LowbitError
from lowbit.hw.payload import VectorFormat
from lowbit.model.arch import build_model
from lowbit.sim.runner import StallConfig, run_stream

FORMATS = ["bipolar", "ternary", "levels5", "levels9", "levels17", "pow2"]


def randomized(arch, seed=0, positive_gamma=False):
    """A model with random weights and BatchNorm statistics, so thresholds land everywhere."""
    torch.manual_seed(seed)
    m = build_model(arch)
    with torch.no_grad():
        for mod in m.modules():
            if isinstance(mod, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d)):
                mod.weight.normal_(0.5, 1.0)
                if positive_gamma:
                    mod.weight.abs_().add_(0.1)
                mod.bias.normal_(0, 1)
                mod.running_mean.normal_(0, 3)
                mod.running_var.uniform_(0.5, 20)
            for name, p in mod.named_parameters(recurse=False):
                if name in ("weight", "bias") and not isinstance(mod, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d)):
                    p.uniform_(-1, 1)
    return m.eval()


def inputs(graph, n, seed=0):
    return np.random.default_rng(seed).choice([-1, 1], size=(n, graph.input_features))


def assert_exact(model, graph, n=300):
    r = compare_with_torch(model, graph, inputs(graph, n), np.zeros(n, dtype=int))
    assert r["export_errors"] == [] and r["prediction_disagreements"] == 0, r
    assert r["logit_mismatches"] == 0, r
    assert set(r["activation_mismatches"].values()) == {0}, r
    return r


@pytest.mark.parametrize("act", ["bipolar", "u2", "u4"])
@pytest.mark.parametrize("fmt", FORMATS)
def test_mlp_every_format_is_exact(fmt, act):
    m = randomized({"kind": "mlp", "in_features": 48, "hidden": [24, 12], "classes": 5,
                    "weight_format": fmt, "act": act})
    assert_exact(m, export_model(m))


def test_binary_normalized_mlp_and_cnn_are_exact():
    for arch in ({"kind": "mlp", "in_features": 48, "hidden": [24, 12], "classes": 5},
                 {"kind": "cnn", "in_shape": [2, 10, 10], "channels": [6, 8], "classes": 5}):
        m = randomized({**arch, "weight_format": "binary01", "act": "bipolar"})
        g = export_model(m)
        assert [type(n).__name__ for n in g.nodes].count("NormalizeSign") == len(m.stages) - 1
        assert_exact(m, g)


@pytest.mark.parametrize("fmt, act", [("ternary", "u2"), ("levels5", "bipolar"), ("bipolar", "bipolar")])
def test_cnn_is_exact(fmt, act):
    m = randomized({"kind": "cnn", "in_shape": [2, 12, 12], "channels": [4, 8], "fc": [16],
                    "classes": 5, "weight_format": fmt, "act": act})
    g = export_model(m)
    assert [type(n).__name__ for n in g.nodes][:5] == ["SlidingWindow", "MatMul", "MultiThreshold",
                                                        "MaxPool", "SlidingWindow"]
    assert_exact(m, g)


def test_tiled_layers_compute_once():
    arch = {"kind": "mlp", "in_features": 32, "hidden": [16], "classes": 4, "p": 4, "min_compress_size": 64}
    m = randomized(arch, positive_gamma=True)
    g = export_model(m)
    assert g.matmuls()[0].copies == 4 and g.matmuls()[0].tile_rows == 4
    assert g.meta["export"]["tiled_compute_once"]["fc0"] == {"copies": 4, "used": True, "flipped_channels": 0}
    assert_exact(m, g)
    # A negative BatchNorm scale flips a channel; its row stays the tile's and its threshold
    # unit counts down instead, so compute-once still holds.
    m = randomized(arch, seed=3)
    g = export_model(m)
    info = g.meta["export"]["tiled_compute_once"]["fc0"]
    assert info["flipped_channels"] > 0 and info["used"] and g.matmuls()[0].copies == 4
    act = next(n for n in g.nodes if n.name == "fc0_act")
    assert act.invert is not None and int(act.invert.sum()) == info["flipped_channels"]
    assert_exact(m, g)


def test_unsupported_models_name_the_problem():
    m = build_model({"kind": "mlp", "in_features": 8, "hidden": [4], "classes": 3, "act": "float"})
    with pytest.raises(LowbitError, match="float activations has no hardware form"):
        export_model(m)
    with pytest.raises(LowbitError, match="Linear: not supported in hardware yet"):
        export_model(torch.nn.Linear(3, 3))
    vit = build_model({"kind": "vit", "in_shape": [1, 28, 28], "patch": 7, "dim": 16, "depth": 1,
                       "heads": 2, "mlp_dim": 32, "classes": 10, "weight_format": "ternary"})
    with pytest.raises(LowbitError, match=r"layer 'blocks.0.attn' \(LowbitAttention\) of a TinyViT: "
                                          r"not supported in hardware yet"):
        export_model(vit)
    fp32 = build_model({"kind": "mlp", "in_features": 8, "hidden": [4], "classes": 3, "weight_format": "fp32"})
    with pytest.raises(LowbitError, match=r"float \(fp32\) weights has no hardware form"):
        export_model(fp32)


def test_cnn_graph_round_trips(tmp_path):
    m = randomized({"kind": "cnn", "in_shape": [2, 10, 10], "channels": [4], "fc": [8], "classes": 3,
                    "weight_format": "binary01", "act": "bipolar"})
    g = export_model(m)
    save_graph(tmp_path / "g.npz", g)
    back = load_graph(tmp_path / "g.npz")
    x = inputs(g, 20)
    assert back.input_shape == g.input_shape
    assert np.array_equal(back.execute(x)[-2], g.execute(x)[-2])


CASES = {
    "mlp-levels5-u2": ({"kind": "mlp", "in_features": 32, "hidden": [16, 8], "classes": 4,
                        "weight_format": "levels5", "act": "u2"}, None),
    "mlp-binary01": ({"kind": "mlp", "in_features": 32, "hidden": [16, 8], "classes": 4,
                      "weight_format": "binary01", "act": "bipolar"}, None),
    "mlp-bipolar-u1": ({"kind": "mlp", "in_features": 32, "hidden": [16, 8], "classes": 4,
                        "weight_format": "bipolar", "act": "u1"}, [Folding(2, 8), Folding(4, 4), Folding(1, 8)]),
    "mlp-pow2-folded": ({"kind": "mlp", "in_features": 32, "hidden": [16], "classes": 4,
                         "weight_format": "pow2", "act": "u3"}, [Folding(4, 8), Folding(2, 4)]),
    "mlp-tiled-p4": ({"kind": "mlp", "in_features": 32, "hidden": [16], "classes": 4, "p": 4,
                      "min_compress_size": 64}, [Folding(2, 8), Folding(1, 16)]),
    "cnn-levels5-u2": ({"kind": "cnn", "in_shape": [1, 8, 8], "channels": [3], "fc": [6], "classes": 3,
                        "weight_format": "levels5", "act": "u2"}, None),
    "cnn-ternary": ({"kind": "cnn", "in_shape": [2, 8, 8], "channels": [4], "fc": [8], "classes": 4,
                     "weight_format": "ternary", "act": "bipolar"}, None),
}


@pytest.mark.parametrize("case", list(CASES))
def test_verilog_equals_ir_with_stalls(case):
    arch, folding = CASES[case]
    m = randomized(arch, positive_gamma=True)
    g = export_model(m)
    g = apply_folding(g, folding) if folding else most_folded(g)
    text, top = generate_verilog(g)
    man = build_manifest(g, top)
    n = 24
    x = inputs(g, n, seed=5)
    in_fmt = VectorFormat(**man["ports"]["i"]["format"])
    out_fmt = VectorFormat(**man["ports"]["o"]["format"])
    expected = out_fmt.pack(g.hardware_output(x).reshape(n, -1))
    per_beat = man["cycles_per_inference"] // man["beats_per_inference"]
    res = run_stream(text, "lowbit_top", in_fmt.pack(x.reshape(-1, in_fmt.count)), expected,
                     n_items=n, timing_items=6, stall=StallConfig(seed=1, max_gap=max(2, 2 * per_beat)),
                     progress=False)
    assert res.mismatches == 0
    assert list(res.outputs) == expected
    assert set(res.interval) == {man["cycles_per_inference"]}
    if man["latency_cycles"] is not None:
        assert res.latency == man["latency_cycles"]


def test_folding_search_counts_every_window_of_a_convolution():
    from lowbit.folding import fold_for_cycles

    m = randomized({"kind": "cnn", "in_shape": [2, 12, 12], "channels": [4, 8], "fc": [16],
                    "classes": 5, "weight_format": "ternary", "act": "u2"})
    g = export_model(m)
    pos = g.positions()
    assert pos["conv0"] == 100 and pos["conv1"] == 9 and pos["fc2"] == 1
    for target in (2000, 400):
        folded = fold_for_cycles(g, target)
        assert folded.cycles_per_inference() <= target
        text, top = generate_verilog(folded)
        assert build_manifest(folded, top)["cycles_per_inference"] == folded.cycles_per_inference()
    with pytest.raises(LowbitError, match="conv0: no folding reaches 99 cycles per inference"):
        fold_for_cycles(g, 99)


def _measured_interval(graph, fifos):
    text, top = generate_verilog(graph, fifos=fifos)
    man = build_manifest(graph, top)
    n = 8
    x = inputs(graph, n, seed=2)
    i = VectorFormat(**man["ports"]["i"]["format"])
    o = VectorFormat(**man["ports"]["o"]["format"])
    res = run_stream(text, "lowbit_top", i.pack(x.reshape(-1, i.count)),
                     o.pack(graph.hardware_output(x).reshape(n, -1)), n_items=n, timing_items=8,
                     stall=None, progress=False)
    assert res.mismatches == 0
    return man, sorted(set(res.interval))


def test_fifo_after_a_window_keeps_the_bottleneck_rate():
    """A convolution's engine just slower than its window scan starves in the scan's gaps (the
    image boundary, the row ends) without a FIFO; with the computed depth it runs at exactly the
    predicted cycles per inference."""
    m = randomized({"kind": "cnn", "in_shape": [1, 8, 8], "channels": [4], "fc": [8], "classes": 4,
                    "weight_format": "ternary", "act": "bipolar"}, positive_gamma=True)
    g = apply_folding(export_model(m), [Folding(2, 9), Folding(1, 36), Folding(1, 8)])
    man, measured = _measured_interval(g, fifos=False)
    assert man["fifos"] == [] and measured[0] > man["cycles_per_inference"] == 72
    man, measured = _measured_interval(g, fifos=True)
    assert [f["after"] for f in man["fifos"]] == ["conv0_window"]
    assert measured == [man["cycles_per_inference"]] == [72]
