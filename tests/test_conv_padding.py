"""Padded and strided convolutions in the model, the export and the Verilog."""

import re

import numpy as np
import pytest
import torch

from lowbit.model.check import compare_with_torch
from lowbit.model.export import export_model
from lowbit.compiler.ir import SlidingWindow
from lowbit.core.errors import LowbitError
from lowbit.flow import compile_checkpoint, simulate_build
from lowbit.model.arch import Pad2d, build_model
from lowbit.training import parse_arch, train_model
from modeltest import random_batchnorm


def _cnn(act, pad_value=-1, **keys):
    arch = {"kind": "cnn", "in_shape": [2, 12, 12], "channels": [4, 6], "fc": [], "classes": 3,
            "act": act, "weight_format": "ternary", "kernel": 3, "pad_value": pad_value} | keys
    return build_model(arch)


def test_padding_is_explicit_with_a_value_the_format_has():
    bip = _cnn("bipolar", pad_value=1, padding=1, stride=2)
    assert [s.pad.value for s in bip.stages[:2]] == [1.0, 1.0]
    u2 = _cnn("u2", padding=1)
    # The encoded input is bipolar; the later maps are unsigned levels, padded with their 0.
    assert [s.pad.value for s in u2.stages[:2]] == [-1.0, 0.0]
    assert all(s.layer.padding == (0, 0) for s in u2.stages[:2])
    assert bip.stages[0].layer.stride == (2, 2)
    x = torch.ones(1, 1, 2, 2)
    assert torch.equal(Pad2d(1, -1)(x)[0, 0], torch.tensor([[-1., -1, -1, -1], [-1, 1, 1, -1],
                                                            [-1, 1, 1, -1], [-1, -1, -1, -1.]]))


@pytest.mark.parametrize("act, pad_value, padding, stride", [
    ("bipolar", -1, 1, 1), ("bipolar", 1, 1, 2), ("u2", -1, 1, 2), ("u2", 1, 2, 1)],
    ids=["bipolar-pad1", "bipolar+1-pad1-stride2", "u2-pad1-stride2", "u2-pad2"])
def test_ir_equals_torch_on_every_stage(act, pad_value, padding, stride):
    torch.manual_seed(5)
    model = _cnn(act, pad_value, padding=padding, stride=stride)
    random_batchnorm(model, 6)
    model.eval()
    graph = export_model(model)
    windows = [n for n in graph.nodes if isinstance(n, SlidingWindow)]
    assert [(w.pad, w.stride) for w in windows] == [(padding, stride)] * 2
    want_second = pad_value if act == "bipolar" else 0
    assert [w.pad_value for w in windows] == [pad_value, want_second]
    x = np.where(np.random.default_rng(7).random((300, 12 * 12 * 2)) < 0.5, -1, 1)
    check = compare_with_torch(model, graph, x, graph.predict(x))
    assert check["prediction_disagreements"] == 0 and check["logit_mismatches"] == 0
    assert set(check["activation_mismatches"].values()) == {0}


def test_convolution_padding_of_its_own_is_refused():
    model = _cnn("bipolar", padding=1)
    model.stages[0].layer.padding = (1, 1)  # zero padding: no bipolar value
    with pytest.raises(LowbitError, match=r"^conv0: convolution \(3, 3\) stride \(1, 1\) padding \(1, 1\) "
                                          r"is not supported in hardware yet"):
        export_model(model.eval())


def test_a_bipolar_map_padded_with_zero_is_refused():
    model = _cnn("bipolar", padding=1)
    model.stages[0].pad = Pad2d(1, 0)
    with pytest.raises(LowbitError, match="^conv0_window: pad_value must be -1 or \\+1 for bipolar inputs, not 0$"):
        export_model(model.eval())


@pytest.mark.parametrize("keys, message", [
    ({"padding": 3}, "architecture 'padding' 3 must be less than the kernel 3"),
    ({"stride": 0}, "architecture 'stride' must be an integer >= 1, not 0"),
    ({"padding": -1}, "architecture 'padding' must be an integer >= 0, not -1"),
    ({"pad_value": 0}, "architecture 'pad_value' pads bipolar maps and must be -1 or +1, not 0"),
])
def test_bad_padding_architectures(keys, message):
    with pytest.raises(LowbitError, match="^" + re.escape(message)):
        _cnn("bipolar", **keys)


@pytest.mark.parametrize("spec, act, target", [("cnn:8:16+pad=1+stride=2", "2", 200),
                                               ("cnn:8,8:32+pad=1+res", "2", 300)],
                         ids=["padded-strided", "padded-residual"])
def test_trained_padded_cnn_is_bit_exact_in_verilator(tmp_path, spec, act, target):
    """Trained briefly on digits, compiled and simulated with stalls: every output word equals
    the IR, which equals PyTorch; cycles per inference as predicted."""
    train_model(tmp_path / "m.pt", arch=parse_arch(spec), weight_format_name="ternary", act=f"u{act}",
                epochs=3, progress=False)
    manifest, check = compile_checkpoint(tmp_path / "m.pt", tmp_path / "b", target_cycles=target)
    assert check["prediction_disagreements"] == 0 and set(check["activation_mismatches"].values()) == {0}
    r = simulate_build(tmp_path / "b", limit=120, seed=2, progress=False)
    assert r["images"] == 120 and r["mismatches"] == 0, r
    assert r["hw_accuracy"] == r["ir_accuracy"] >= 0.5
    assert r["cycles_measured"] == r["cycles_predicted"] == manifest["cycles_per_inference"] <= target
