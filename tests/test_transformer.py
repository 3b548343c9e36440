"""The low-bit transformer block and the tiny ViT."""

import math

import pytest
import torch
from torch import nn

from lowbit.core.errors import LowbitError
from lowbit.core.formats import WEIGHT_FORMATS
from lowbit.model.arch import build_model
from lowbit.model.layers import BinaryNormLinear, QuantLinear
from lowbit.model.transformer import LowbitAttention, Projection, TinyViT, TransformerBlock

ARCH = {"kind": "vit", "in_shape": [1, 8, 8], "patch": 2, "dim": 16, "depth": 2, "heads": 2,
        "mlp_dim": 32, "classes": 10}

CASES = [(f, None, "float") for f in sorted(WEIGHT_FORMATS)] + [
    ("bipolar", None, "bipolar"), ("levels5", None, "u2"), ("binary01", None, "bipolar"),
    ("bipolar", 2, "float")]


@pytest.mark.parametrize("fmt, p, act", CASES)
def test_vit_forward_backward_shapes_and_every_projection_quantized(fmt, p, act):
    torch.manual_seed(0)
    # min_compress_size=1: every projection of the tiled case is really tiled
    model = build_model({**ARCH, "weight_format": fmt, "act": act, "p": p, "min_compress_size": 1})
    assert isinstance(model, TinyViT)
    x = torch.randn(5, 1, 8, 8)
    outs = model.trace(x)
    assert [tuple(o.shape) for o in outs] == [(5, 16, 16)] * 3 + [(5, 10)]
    model(x).square().sum().backward()
    layers = model.weight_layers
    # patch embedding, per block Q, K, V, O and two MLP projections, head
    assert len(layers) == 1 + 2 * 6 + 1
    kind = BinaryNormLinear if fmt == "binary01" else QuantLinear
    for layer in layers:
        assert isinstance(layer, kind)
        assert layer.weight.grad is not None and layer.weight.grad.abs().sum() > 0
        iw = layer.integer_weights()
        assert set(iw.levels.unique().tolist()) <= set(WEIGHT_FORMATS[fmt].levels)
        if p is not None:
            assert layer.copies == p
            assert torch.equal(iw.levels.reshape(p, -1)[0], iw.levels.reshape(p, -1)[1])


def test_projection_is_the_quantized_weight_times_its_gain():
    torch.manual_seed(1)
    x = torch.randn(3, 64)
    unscaled = Projection(64, 8, "bipolar")  # ±1 weights: outputs scaled by 1/sqrt(64)
    w = unscaled.layer.integer_weights().dequantize()
    assert unscaled.gain == 1 / 8
    assert torch.allclose(unscaled(x), nn.functional.linear(x, w) / 8)
    scaled = Projection(64, 8, "ternary")  # the step scale already keeps outputs small
    assert scaled.gain == 1.0
    assert torch.allclose(scaled(x), nn.functional.linear(x, scaled.layer.integer_weights().dequantize()))
    tiled = Projection(256, 256, "bipolar", p=4)  # 65536 weights: tiled, alphas scale it
    assert tiled.layer.copies == 4 and tiled.gain == 1.0
    assert isinstance(Projection(4, 4, "fp32").layer, nn.Linear)


def test_attention_matches_a_float_reference_with_the_quantized_weights():
    torch.manual_seed(2)
    attn = LowbitAttention(8, 2, "levels9")
    x = torch.randn(2, 5, 8)
    q, k, v, o = (attn_proj.layer.integer_weights().dequantize() for attn_proj in
                  (attn.q, attn.k, attn.v, attn.o))
    heads = []
    for h in range(2):
        cols = slice(4 * h, 4 * h + 4)
        qh, kh, vh = x @ q[cols].T, x @ k[cols].T, x @ v[cols].T
        heads.append(torch.softmax(qh @ kh.transpose(1, 2) / math.sqrt(4), -1) @ vh)
    expected = torch.cat(heads, -1) @ o.T
    assert torch.allclose(attn(x), expected, atol=1e-5)


def test_block_is_residual():
    block = TransformerBlock(8, 2, 16, "ternary")
    with torch.no_grad():
        for proj in (block.attn.o, block.fc2):
            proj.layer.weight.zero_()  # all-zero ternary weights: both branches give 0
    x = torch.randn(2, 3, 8)
    assert torch.equal(block(x), x)


def test_patches_are_row_major_over_the_grid():
    model = build_model({**ARCH, "in_shape": [2, 4, 4], "patch": 2})
    x = torch.arange(32.0).reshape(1, 2, 4, 4)
    p = model.patches(x)
    assert p.shape == (1, 4, 8)
    # patch (0, 1): columns 2..3 of rows 0..1, channel 0 then channel 1
    assert p[0, 1].tolist() == [2, 3, 6, 7, 18, 19, 22, 23]


@pytest.mark.parametrize("change, message", [
    ({"patch": 3}, "patch size 3 does not divide the 8x8 image"),
    ({"heads": 3}, "attention heads (3) must divide the token width (16)"),
    ({"in_shape": [8, 8]}, "architecture 'in_shape' must be [C, H, W], not [8, 8]"),
    ({"depth": 0}, "architecture 'depth' must be a positive integer, not 0"),
    ({"weight_format": "levels5", "act": "s2"}, "hidden activations are bipolar or unsigned, not 's2'"),
])
def test_bad_vit_arch(change, message):
    arch = {**ARCH, "weight_format": "bipolar", "act": "float", **change}
    with pytest.raises(LowbitError) as e:
        build_model(arch)
    assert message in str(e.value)
