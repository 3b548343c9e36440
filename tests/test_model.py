import numpy as np
import pytest
import torch

from lowbit.core.errors import LowbitError
from lowbit.model.checkpoint import load_checkpoint, save_checkpoint
from lowbit.model.data import Thermometer, load_digits_split
from lowbit.model.layers import BipolarAct, QuantLinear
from lowbit.model.mlp import LowbitMLP
from lowbit.model.quant import BipolarActSTE, BipolarWeightSTE, bipolar_sign


def test_sign_maps_zero_to_plus_one():
    x = torch.tensor([-2.0, -1e-9, 0.0, 1e-9, 3.0])
    assert bipolar_sign(x).tolist() == [-1, -1, 1, 1, 1]


def test_weight_ste_passes_gradient_straight_through():
    w = torch.tensor([-3.0, -0.5, 0.0, 0.7, 2.0], requires_grad=True)
    out = BipolarWeightSTE.apply(w)
    assert out.tolist() == [-1, -1, 1, 1, 1]
    out.backward(torch.arange(1.0, 6.0))
    assert w.grad.tolist() == [1, 2, 3, 4, 5]


def test_activation_ste_has_hardtanh_gradient():
    x = torch.tensor([-1.5, -1.0, 0.2, 1.0, 1.01], requires_grad=True)
    BipolarActSTE.apply(x).sum().backward()
    assert x.grad.tolist() == [0, 1, 1, 1, 0]


def test_quant_linear_uses_signed_weights_and_clips_latent():
    layer = QuantLinear(4, 2)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[0.3, -0.2, 5.0, 0.0], [-7.0, 0.1, -0.1, 1.0]]))
    y = layer(torch.ones(1, 4))
    assert y.tolist() == [[2.0, 0.0]]  # rows of signs: [1,-1,1,1] and [-1,1,-1,1]
    layer.clip_latent()
    assert layer.weight.abs().max().item() == 1.0


def test_quant_linear_rejects_unknown_format():
    with pytest.raises(LowbitError, match="unknown weight format 'septenary'"):
        QuantLinear(4, 2, "septenary")


def test_bipolar_act_outputs_pm1():
    assert set(BipolarAct()(torch.randn(100)).tolist()) == {-1.0, 1.0}


def test_thermometer_code():
    enc = Thermometer.uniform(4, 16)
    assert enc.thresholds == (2, 6, 10, 14)
    code = enc(np.array([[0, 2, 9, 16]]))
    assert code.tolist() == [[-1, -1, -1, -1, 1, -1, -1, -1, 1, 1, -1, -1, 1, 1, 1, 1]]


def test_digits_split_is_fixed_and_large_enough():
    a, b = load_digits_split(0), load_digits_split(0)
    assert len(a.y_test) == 360 and len(a.y_train) == 1437
    assert np.array_equal(a.x_test, b.x_test)


_ENCODING = {"encoding": "thermometer", "thresholds": [1], "image_shape": [4, 4, 1]}


def test_checkpoint_round_trip(tmp_path):
    m = LowbitMLP(16, [8], 3)
    path = tmp_path / "m.pt"
    save_checkpoint(path, m, formats={"weights": "bipolar", "activations": "bipolar"},
                    input_encoding=_ENCODING)
    model, meta = load_checkpoint(path)
    assert meta["formats"] == {"weights": "bipolar", "activations": "bipolar"}
    assert meta["arch"]["hidden"] == [8]
    for k, v in m.state_dict().items():
        assert torch.equal(v, model.state_dict()[k])
    assert list(tmp_path.iterdir()) == [path]  # no temporary files left behind


def test_corrupt_and_truncated_checkpoints_give_clear_errors(tmp_path):
    m = LowbitMLP(16, [8], 3)
    good = tmp_path / "m.pt"
    save_checkpoint(good, m, formats={}, input_encoding=_ENCODING)
    truncated = tmp_path / "t.pt"
    truncated.write_bytes(good.read_bytes()[:200])
    with pytest.raises(LowbitError, match="is corrupt or truncated"):
        load_checkpoint(truncated)
    with pytest.raises(LowbitError, match="does not exist"):
        load_checkpoint(tmp_path / "missing.pt")
    other = tmp_path / "other.pt"
    torch.save({"hello": 1}, other)
    with pytest.raises(LowbitError, match="not a lowbit checkpoint"):
        load_checkpoint(other)


def test_an_incomplete_input_record_is_refused_and_nothing_written(tmp_path):
    m = LowbitMLP(16, [8], 3)
    with pytest.raises(LowbitError, match="input_encoding: field image_shape is missing"):
        save_checkpoint(tmp_path / "m.pt", m, formats={}, input_encoding={"encoding": "float"})
    with pytest.raises(LowbitError, match="input_encoding: field thresholds is missing"):
        save_checkpoint(tmp_path / "m.pt", m, formats={},
                        input_encoding={"encoding": "thermometer", "image_shape": [4, 4, 1]})
    assert list(tmp_path.iterdir()) == []


def test_nan_weights_are_rejected(tmp_path):
    m = LowbitMLP(16, [8], 3)
    with torch.no_grad():
        m.linears[0].weight[0, 0] = float("nan")
    path = tmp_path / "nan.pt"
    save_checkpoint(path, m, formats={}, input_encoding=_ENCODING)
    with pytest.raises(LowbitError, match="non-finite values in stages.0.layer.weight"):
        load_checkpoint(path)


def test_trained_digits_model_is_accurate(digits_checkpoint):
    _, metrics = digits_checkpoint
    assert metrics["test_accuracy"] >= 0.90
