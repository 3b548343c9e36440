import copy

import pytest
import torch
from torch import nn

from lowbit.core.errors import LowbitError
from lowbit.core.formats import WEIGHT_FORMATS
from lowbit.model.layers import (BinaryNormConv2d, BinaryNormEmbedding, BinaryNormLinear, QuantAct,
                                 QuantConv2d, QuantLinear)
from lowbit.model.ptq import exponential_levels, ptq, quantize_exponential, quantize_linear
from lowbit.model.quant import (ABSMEAN_STEP, Binary01Quantizer, SymmetricQuantizer, TiledQuantizer,
                                binary_normalize, normalized_sign, weight_quantizer)

SCALED = ["ternary", "levels5", "levels9", "levels17", "pow2"]


def _latent(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed)) * 0.3


GRANULARITIES = [(f, g) for f in sorted(WEIGHT_FORMATS)
                 for g in ([None] if f == "binary01" else [None, "tensor", "channel"])]


@pytest.mark.parametrize("fmt, granularity", GRANULARITIES)
def test_levels_are_the_registry_levels_and_match_the_float_weights(fmt, granularity):
    quant = weight_quantizer(fmt, granularity)
    w = _latent(16, 64)
    wq = quant.quantize(w)
    iw = quant.integer(w)
    assert iw.levels.dtype == torch.int64 and iw.format == fmt
    assert set(iw.levels.unique().tolist()) == set(WEIGHT_FORMATS[fmt].levels)  # every level used
    torch.testing.assert_close(wq, iw.dequantize())


@pytest.mark.parametrize("fmt", sorted(WEIGHT_FORMATS))
def test_weight_gradient_is_straight_through(fmt):
    layer = QuantLinear(8, 4, fmt)
    x = torch.randn(5, 8)
    upstream = torch.randn(5, 4)
    layer(x).backward(upstream)
    torch.testing.assert_close(layer.weight.grad, upstream.T @ x)  # d(x W^T)/dW with W -> W_q identity


def test_symmetric_scale_per_tensor_and_per_channel():
    w = _latent(4, 32)
    w[2] *= 10  # one loud channel
    tensor = SymmetricQuantizer("levels5", "tensor").integer(w)
    channel = SymmetricQuantizer("levels5", "channel").integer(w)
    assert tensor.scale.shape == () and channel.scale.shape == (4, 1)
    torch.testing.assert_close(tensor.scale, ABSMEAN_STEP[2] * w.abs().mean())
    torch.testing.assert_close(channel.scale[:, 0], ABSMEAN_STEP[2] * w.abs().mean(1))
    # Per tensor, the quiet channels collapse towards zero; per channel they keep their levels.
    assert (tensor.levels[0] == 0).float().mean() > 0.5
    assert (channel.levels[0] == 0).float().mean() < 0.5


@pytest.mark.parametrize("m", sorted(ABSMEAN_STEP))
def test_absmean_step_minimizes_gaussian_mse(m):
    w = torch.randn(200_000, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    mean_abs = w.abs().mean()

    def mse(c):
        s = c * mean_abs
        return ((w - s * torch.clamp(torch.round(w / s), -m, m)) ** 2).mean()

    c = ABSMEAN_STEP[m]
    assert mse(c) < mse(0.9 * c) and mse(c) < mse(1.1 * c)


def test_bipolar_default_is_unscaled_and_channel_alpha_is_mean_abs():
    w = _latent(3, 10)
    assert QuantLinear(10, 3).integer_weights().scale.item() == 1.0
    iw = weight_quantizer("bipolar", "channel").integer(w)
    torch.testing.assert_close(iw.scale[:, 0], w.abs().mean(1))


def test_granularity_must_suit_the_format():
    with pytest.raises(LowbitError, match="weight format 'ternary' does not support granularity 'none'"):
        QuantLinear(4, 2, "ternary", granularity="none")
    with pytest.raises(LowbitError, match="'binary01' does not support granularity 'channel'"):
        QuantLinear(4, 2, "binary01", granularity="channel")


def test_binary01_threshold_is_mean_of_weights_and_biases():
    w = torch.tensor([[0.0, 1.0], [2.0, 3.0]])
    b = torch.tensor([10.0, -1.0])  # mean of all six = 2.5; the weights alone average 1.5
    assert Binary01Quantizer.threshold(w, b).item() == 2.5
    iw = Binary01Quantizer().integer(w, b)
    assert iw.levels.tolist() == [[0, 0], [0, 1]] and iw.bias_levels.tolist() == [1, 0]
    layer = BinaryNormLinear(2, 2)
    with torch.no_grad():
        layer.weight.copy_(w)
        layer.bias.copy_(b)
    wq, bq = layer.quantized_parameters()
    assert wq.tolist() == [[0, 0], [0, 1]] and bq.tolist() == [1, 0]
    upstream = torch.randn(2)
    bq.backward(upstream)
    assert torch.equal(layer.bias.grad, upstream)


def test_binary_normalize_is_parameter_free_and_standardizes():
    norm_layer = BinaryNormLinear(12, 7)
    assert [n for n, _ in norm_layer.named_parameters()] == ["weight", "bias"]
    z = binary_normalize(torch.randn(5, 40) * 3 + 2)
    torch.testing.assert_close(z.mean(-1), torch.zeros(5), atol=1e-5, rtol=0)
    torch.testing.assert_close(z.var(-1, unbiased=False), torch.ones(5), atol=1e-3, rtol=0)


def test_normalized_sign_matches_float_normalization_and_breaks_ties_up():
    z = torch.randint(-50, 50, (200, 13))
    ties = (13 * z - z.sum(1, keepdim=True)) == 0
    ref = torch.where(binary_normalize(z.double()) >= 0, 1, -1)
    assert torch.equal(normalized_sign(z)[~ties], ref[~ties])
    tied = torch.tensor([[1, 2, 3], [4, 4, 4], [0, 3, 0]])  # 2 is the mean of row 0; row 1 is constant
    assert normalized_sign(tied).tolist() == [[-1, 1, 1], [1, 1, 1], [-1, 1, -1]]
    # Channel 0 exactly at the mean, where a float layer norm can land on either side of zero.
    z = torch.randint(-1000, 1000, (500, 7)) * 6
    z[:, 0] = z[:, 1:].sum(1) // 6
    assert (normalized_sign(z.float())[:, 0] == 1).all() and (normalized_sign(z)[:, 0] == 1).all()


def test_tiled_weight_is_the_tile_repeated_with_one_alpha_per_copy():
    layer = QuantLinear(64, 32, tiled=True, p=4, min_compress_size=1024)
    assert layer.copies == 4 and layer.tile().shape == (512,)
    w = layer.quantized_weight().detach()
    t, alphas = layer.tile(), layer.alphas()
    assert torch.equal(torch.sign(w).reshape(4, -1), t.repeat(4, 1))
    torch.testing.assert_close(alphas, layer.weight.detach().reshape(4, -1).abs().mean(1))
    torch.testing.assert_close(w.reshape(4, -1), alphas[:, None] * t)
    iw = layer.integer_weights()
    torch.testing.assert_close(iw.dequantize(), w)
    # Copies are whole row blocks: rows 8i..8i+7 share the tile.
    assert torch.equal(iw.levels[:8], iw.levels[8:16])
    upstream = torch.randn(3, 32)
    x = torch.randn(3, 64)
    layer(x).backward(upstream)
    torch.testing.assert_close(layer.weight.grad, upstream.T @ x)


def test_small_tiled_layer_stays_uncompressed():
    layer = QuantLinear(64, 32, tiled=True, p=3)  # 2048 < 65536: p is not even checked
    assert layer.copies == 1
    assert torch.equal(layer.quantized_weight(), torch.where(layer.weight >= 0, 1.0, -1.0))
    assert layer.integer_weights().scale.item() == 1.0


def test_bad_tile_count_names_p_n_and_the_valid_values():
    with pytest.raises(LowbitError, match=r"tile count p=5 does not divide the layer's N=24 weights") as e:
        TiledQuantizer((4, 6), 5, min_compress_size=1)
    assert "use a p that divides 24: 1, 2, 3, 4, 6, 8, 12, 24" in str(e.value)
    with pytest.raises(LowbitError, match="tile count p must be a positive integer, not None"):
        QuantLinear(64, 32, tiled=True, min_compress_size=1)
    with pytest.raises(LowbitError, match="tiled weights are bipolar, not 'ternary'"):
        QuantLinear(4, 6, "ternary", tiled=True, p=2)


@pytest.mark.parametrize("fmt, lo, hi", [("u4", 0, 15), ("s4", -8, 7), ("u1", 0, 1), ("bipolar", -1, 1)])
def test_activation_quantizer_range(fmt, lo, hi):
    act = QuantAct(fmt, clip=2.0)
    x = torch.linspace(-5, 5, 1001)
    levels, scale = act.integer(x)
    assert levels.min().item() == lo and levels.max().item() == hi
    assert set(levels.tolist()) <= set(act.format.levels)
    torch.testing.assert_close(act(x).detach(), scale * levels.to(x.dtype))


def test_activation_rounds_half_up_like_a_threshold_and_learns_its_clip():
    act = QuantAct("u2", clip=3.0)  # s = 1
    x = torch.tensor([-1.0, 0.5, 1.49, 1.5, 2.5, 2.9, 4.0], requires_grad=True)
    assert act(x).tolist() == [0, 1, 1, 2, 3, 3, 3]
    act(x).sum().backward()
    assert x.grad.tolist() == [0, 1, 1, 1, 1, 1, 0]
    assert act.clip.grad.item() == 1.0  # one element above the clip
    fixed = QuantAct("s4", learn_clip=False)
    assert not list(fixed.parameters())
    with pytest.raises(LowbitError, match="activation format 's1' has no symmetric range"):
        QuantAct("s1")
    with pytest.raises(LowbitError, match="unknown activation format 'u9'"):
        QuantAct("u9")


@pytest.mark.parametrize("fmt", sorted(WEIGHT_FORMATS))
def test_conv_forward_shapes(fmt):
    conv = QuantConv2d(3, 8, 3, padding=1, weight_format=fmt, granularity=None)
    assert conv(torch.randn(2, 3, 10, 10)).shape == (2, 8, 10, 10)
    assert conv.bias is None
    assert set(conv.integer_weights().levels.unique().tolist()) <= set(conv.format.levels)
    if fmt in SCALED:
        per_channel = QuantConv2d(3, 8, 3, weight_format=fmt, granularity="channel")
        assert per_channel.integer_weights().scale.shape == (8, 1, 1, 1)
    bn = BinaryNormConv2d(3, 8, 3, stride=2)
    y = bn(torch.randn(2, 3, 9, 9))
    assert y.shape == (2, 8, 4, 4)
    torch.testing.assert_close(y.mean(1), torch.zeros(2, 4, 4), atol=1e-5, rtol=0)
    emb = BinaryNormEmbedding(10, 6)
    assert emb(torch.tensor([[1, 2, 3]])).shape == (1, 3, 6)
    assert set(emb.integer_weights().levels.unique().tolist()) <= {0, 1}


def test_pow2_ptq_at_half_gives_powers_of_two():
    w = _latent(32, 32)
    wq, info = quantize_exponential(w, 3, q=0.5)
    a = w.abs().max().item()
    assert info.q == 0.5 and info.a == pytest.approx(a) and info.format == "pow2"
    assert set(info.levels.unique().tolist()) == set(WEIGHT_FORMATS["pow2"].levels)
    torch.testing.assert_close(wq.double(), info.scale * info.levels.double())
    assert exponential_levels(8.0, 0.5, 4).tolist() == [-8, -4, -2, -1, -0.5, -0.25, -0.125, 0,
                                                         0.125, 0.25, 0.5, 1, 2, 4, 8]


@pytest.mark.parametrize("dist", ["gaussian", "laplacian"])
def test_exponential_beats_linear_at_three_bits(dist):
    g = torch.Generator().manual_seed(2)
    if dist == "gaussian":
        w = torch.randn(256, 256, generator=g)
    else:
        u = torch.rand(256, 256, generator=g) - 0.5
        w = -torch.sign(u) * torch.log1p(-2 * u.abs())
    _, exp_info = quantize_exponential(w, 3)
    _, lin_info = quantize_linear(w, 3)
    assert 0 < exp_info.q < 1 and exp_info.q != 0.5
    assert exp_info.correlation > lin_info.correlation + 0.01


def test_ptq_returns_a_new_model_and_leaves_the_input_unchanged():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.Flatten(), nn.Linear(4 * 36, 5), nn.ReLU(), nn.Linear(5, 2),
                          QuantLinear(2, 2, "ternary"), BinaryNormLinear(2, 2))
    before = copy.deepcopy(model.state_dict())
    q_model, layers = ptq(model, 4)
    assert set(layers) == {"0", "2", "4"}  # lowbit's own quantized layers are left alone
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k])
    for name, info in layers.items():
        w = dict(q_model.named_modules())[name].weight
        assert w.unique().numel() <= 2 ** 4 - 1 and info.correlation > 0.9
    lin_model, lin = ptq(model, 4, method="linear")
    assert set(lin["2"].levels.unique().tolist()) <= set(range(-7, 8))
    assert torch.equal(lin_model[2].bias, model[2].bias)  # biases stay float
    with pytest.raises(LowbitError, match="PTQ bits must be an integer from 2 to 6, not 7"):
        ptq(model, 7)


SMOKE = {
    **{fmt: (lambda fmt=fmt: QuantLinear(16, 8, fmt)) for fmt in sorted(WEIGHT_FORMATS)},
    "bipolar-channel": lambda: QuantLinear(16, 8, granularity="channel"),
    "tiled": lambda: QuantLinear(16, 8, tiled=True, p=2, min_compress_size=1),
    "binarynorm": lambda: BinaryNormLinear(16, 8),
}


@pytest.mark.parametrize("name", sorted(SMOKE))
def test_a_few_training_steps_reduce_the_loss(name):
    torch.manual_seed(3)
    layer = SMOKE[name]()
    x = torch.randn(64, 16)
    y = (x @ torch.randn(16, 4)).argmax(1)
    head = nn.Linear(8, 4).requires_grad_(False)  # fixed: only the quantized layer learns
    model = nn.Sequential(layer, nn.BatchNorm1d(8, affine=False), head)
    opt = torch.optim.Adam(layer.parameters(), lr=0.02)
    losses = []
    for _ in range(30):
        loss = nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        layer.clip_latent()
        losses.append(loss.item())
    assert min(losses[-5:]) < 0.9 * losses[0], losses


def test_registry_families_expq_and_tiled():
    from lowbit.core.formats import ALPHA_BITS, FORMAT_FAMILIES, format_family, weight_format

    assert sorted(FORMAT_FAMILIES) == ["expq", "tiled"]
    assert not set(FORMAT_FAMILIES) & set(WEIGHT_FORMATS)  # no hardware lane of their own
    tiled, expq = format_family("tiled"), format_family("expq")
    assert tiled.base == "bipolar" and weight_format(tiled.base).lane == "xnor-popcount"
    assert tiled.values[:4] == (2, 4, 8, 16)
    assert tiled.bits_per_weight(4) == 0.25
    assert tiled.bits_per_weight(4, n_weights=65536) == 0.25 + 4 * ALPHA_BITS / 65536
    assert expq.bits_per_weight() is None  # "—": set by the PTQ bit budget
    assert [expq.bits_per_weight(b) for b in (2, 3, 6)] == [2.0, 3.0, 6.0]
    assert expq.levels(3) == "{0, ±a*q**k : k = 0..2}"
    for fam in (tiled, expq):
        assert fam.encoding and fam.scale and fam.description
    with pytest.raises(LowbitError, match=r"format 'tiled' needs p in \{2, 4, 8"):
        tiled.check(3)
    with pytest.raises(LowbitError, match=r"format 'expq' needs bits in \{2, 3, 4, 5, 6\}, not 7"):
        expq.bits_per_weight(7)
    with pytest.raises(LowbitError, match="weight format 'tiled' has a parameter"):
        weight_format("tiled")
    with pytest.raises(LowbitError, match="unknown parameterized weight format 'octal'"):
        format_family("octal")


def test_registry_fixed_formats_keep_their_fields():
    expected = {"bipolar": (1, 1.0), "binary01": (1, 1.0), "ternary": (2, 1.585), "levels5": (3, 2.322),
                "levels9": (4, 3.170), "levels17": (5, 4.087), "pow2": (3, 2.807)}
    for name, (storage, bits) in expected.items():
        f = WEIGHT_FORMATS[name]
        assert f.storage_bits == storage and f.bits_per_weight == pytest.approx(bits, abs=1e-3)
        assert f.lane and f.encoding and f.scale in ("none", "tensor")


def test_exponential_ptq_correlates_at_least_as_well_as_linear_at_3_to_6_bits():
    # Per layer, for Gaussian weights: exponential levels at b bits follow w at least as closely
    # as linear levels at b bits (the accuracy rows of the sweep rest on this).
    w = _latent(128, 128, seed=7)
    for bits in range(3, 7):
        assert quantize_exponential(w, bits)[1].correlation >= quantize_linear(w, bits)[1].correlation
