"""The integer-only ViT: its integer operators against their exact definitions, the eval mode that
runs them, the float training path beside it, and training through the CLI."""

import math
from fractions import Fraction

import numpy as np
import pytest
import torch

from lowbit.compiler.ir import BIPOLAR, Attention, MultiThreshold, NormalizeLevels, PositionAdd, ValueType
from lowbit.core.errors import LowbitError
from lowbit.model.arch import build_model
from lowbit.model.checkpoint import load_checkpoint
from lowbit.compiler.ops.attention import round_half_up
from lowbit.model.integer_vit import NORM_FRAC_BITS, SOFTMAX_BITS, IntegerViT, NormQuant, norm_levels, softmax_table
from lowbit.training import parse_arch

ARCH = {"kind": "vit", "integer": True, "in_shape": [1, 8, 8], "patch": 2, "dim": 16, "depth": 2, "heads": 2,
        "mlp_dim": 32, "classes": 10, "weight_format": "ternary", "act": "u3", "p": None, "input": "u4"}


def test_round_half_up_is_exact_on_both_signs():
    g = torch.Generator().manual_seed(0)
    num = torch.randint(-10 ** 6, 10 ** 6, (4000,), generator=g)
    den = torch.randint(1, 5000, (4000,), generator=g)
    got = round_half_up(num.numpy(), den.numpy()).tolist()
    want = [math.floor(Fraction(int(n), int(d)) + Fraction(1, 2)) for n, d in zip(num, den)]
    assert got == want
    # halves round up, on both sides of zero
    assert round_half_up(np.array([5, -5, 3, -3]), np.array([2, 2, 6, 6])).tolist() == [3, -2, 1, 0]


def test_softmax_table_is_the_rounded_exponent_up_to_its_first_zero():
    lam = 0.0371
    table = softmax_table(lam).tolist()
    assert table[0] == 2 ** SOFTMAX_BITS and table[-1] == 0 and 0 not in table[:-1]
    assert table == [math.floor(2 ** SOFTMAX_BITS * math.exp(-lam * d) + 0.5) for d in range(len(table))]
    assert all(a >= b for a, b in zip(table, table[1:]))
    for bad in (0.0, -1.0, float("nan"), float("inf")):
        with pytest.raises(LowbitError, match="positive number"):
            softmax_table(bad)
    with pytest.raises(LowbitError, match="clips have collapsed"):
        softmax_table(1e-6)


@pytest.mark.parametrize("fmt", ["s2", "s4", "s6"])
def test_normalization_levels_equal_the_rounded_normalized_value(fmt):
    """The squared integer comparisons give the level of ``(r - mean)/std`` that the quantizer's
    rounding gives, computed exactly (rationals and the thresholds' own fixed point)."""
    torch.manual_seed(1)
    norm = NormQuant(12, fmt)
    with torch.no_grad():
        norm.quant.clip.fill_(2.3)
    r = torch.randint(-40, 41, (300, 12))
    r[0] = 7  # a constant token: every element at the mean
    got = norm.integer(r)
    t, a = norm_levels(norm.quant)
    qmin, n = norm.quant.qmin, r.shape[1]
    for row, levels in zip(r.tolist(), got.tolist()):
        u = [n * v - sum(row) for v in row]
        var = Fraction(sum(x * x for x in u), n)
        want = []
        for x in u:
            # y >= t_j  <=>  x >= t_j * sqrt(var), t_j**2 taken as a_j / 2**F
            count = 0
            for tj, aj in zip(t.tolist(), a.tolist()):
                t2 = Fraction(aj, 2 ** NORM_FRAC_BITS)
                count += (x > 0 and x * x >= t2 * var) if tj > 0 else (x >= 0 or x * x <= t2 * var)
            want.append(qmin + count)
        assert levels == want
    assert set(got[0].tolist()) == {0}
    # and, away from the thresholds' rounding, that is the float quantizer's level
    y = (r - r.double().mean(1, keepdim=True)) / r.double().std(1, unbiased=False, keepdim=True)
    s = float(norm.quant.scale().detach())
    level = torch.clamp(torch.floor(y[1:] / s + 0.5), qmin, norm.quant.qmax)
    assert (level == got[1:]).double().mean() > 0.999


def test_normalization_compares_exactly_where_its_products_pass_int64():
    """64 channels of uint14 (a binary01 ViT's embedding: sums of 49 pixels): ``n*u**2 * 2**F`` and
    ``a*V`` reach 2**66, and the reference still gives the sign of their difference, as Python's
    integers do, on both sides of every threshold and at equality."""
    quant = NormQuant(64, "s4").quant
    with torch.no_grad():
        quant.clip.fill_(2.6)
    t, a = norm_levels(quant)
    op = NormalizeLevels("n", 64, ValueType("uint", 14), a.numpy(), (t > 0).numpy(), ValueType("int", 4),
                         NORM_FRAC_BITS)
    rng = np.random.default_rng(3)
    v = rng.integers(0, 64 * (64 * 16383) ** 2, 200, dtype=np.int64)
    v[:3] = 0, 1 << NORM_FRAC_BITS, 64 * (64 * 16383) ** 2
    level = rng.integers(0, len(a), 200)
    # p near a_l * v / 2**F, on either side and at equality, and anywhere
    p = np.array([(int(a[k]) * int(w) >> NORM_FRAC_BITS) + int(e) for k, w, e in
                  zip(level, v, rng.integers(-2, 3, 200))], dtype=np.int64).clip(0)
    p[-20:] = rng.integers(0, 64 * (64 * 16383) ** 2, 20)
    got = np.stack([op._compare(p, v, ak) for ak in a.tolist()], 1)
    want = [[int(np.sign((int(pi) << NORM_FRAC_BITS) - ak * int(vi))) for ak in a.tolist()]
            for pi, vi in zip(p, v)]
    assert got.tolist() == want
    assert {-1, 0, 1} <= {w[k] for w, k in zip(want, level)}
    # and the levels, element by element
    x = rng.integers(0, 16384, (30, 64))
    x[0, :32], x[1], x[1, 0] = 16383, 0, 16383  # the widest spread; one channel far from the others
    n = 64
    for row, levels in zip(x.tolist(), op.reference(x).tolist()):
        u = [n * e - sum(row) for e in row]
        var = sum(e * e for e in u)
        want = [quant.qmin + sum((e > 0 and (n * e * e << NORM_FRAC_BITS) >= aj * var) if tj > 0
                                 else (e >= 0 or (n * e * e << NORM_FRAC_BITS) <= aj * var)
                                 for tj, aj in zip(t.tolist(), a.tolist())) for e in u]
        assert levels == want


def _model(seed=0, **change):
    torch.manual_seed(seed)
    return build_model({**ARCH, **change})


def test_eval_mode_is_the_integer_arithmetic_and_training_is_its_float_twin():
    model = _model()
    assert isinstance(model, IntegerViT)
    x = torch.randint(0, 16, (64, 1, 8, 8)).float()
    model.train()
    model(x)  # BatchNorm statistics
    model.eval()
    with torch.no_grad():
        logits = model(x)
        assert torch.equal(logits, model.integer_forward(x))
        tokens = model.integer_tokens(x)
        assert all(t.dtype == torch.int64 and t.shape == (64, 16, 16) for t in tokens)
        # The float path, run on the same weights, lands on the same integers almost everywhere:
        # only float32 rounding near a threshold may move one level.
        q = model.residual
        pos = q.scale() * torch.clamp(torch.floor(model.position / q.scale() + 0.5), q.qmin, q.qmax)
        r = q(model.embed(model.patches(x) * model.input_gain)) + pos
        assert torch.equal(torch.round(r / q.scale()).long(), tokens[0])
        r = model.blocks[0](r, q)
        assert (torch.round(r / q.scale()).long() == tokens[1]).double().mean() > 0.98
        agree = (model.float_forward(x).argmax(1) == logits.argmax(1)).double().mean()
    assert agree > 0.9
    with pytest.raises(LowbitError, match="integer levels"):
        model(x + 0.5)


def test_the_position_embedding_is_an_integer_table_of_residual_steps():
    model = _model()
    table = model.position_levels()
    assert table.dtype == torch.int64 and table.shape == (16, 16)
    assert table.min() >= model.residual.qmin and table.max() <= model.residual.qmax
    assert table.abs().sum() > 0


@pytest.mark.parametrize("change, message", [
    ({"act": "float"}, "needs k-bit hidden activations, not 'float'"),
    ({"act": "bipolar"}, "needs k-bit hidden activations, not 'bipolar'"),
    ({"act": "u1"}, "needs k-bit hidden activations, not 'u1'"),
    ({"weight_format": "fp32"}, "takes low-bit weights, not 'fp32'"),
    ({"input": "s4"}, "'input' must be 'bipolar' or 'u1'..'u8', not 's4'"),
    ({"heads": 3}, r"attention heads \(3\) must divide the token width \(16\)"),
])
def test_bad_integer_vits_name_the_problem(change, message):
    with pytest.raises(LowbitError, match=message):
        _model(**change)


def test_the_integer_option_of_the_vit_spec():
    assert parse_arch("vit:dim=32,patch=7+integer") == {"kind": "vit", "integer": True, "dim": 32, "patch": 7}
    with pytest.raises(LowbitError, match="^bad vit option 'int'\n  fix: options: integer$"):
        parse_arch("vit+int")


# The tiled ViT tiles every block's projections (512 weights and more) four times, and keeps its
# patch embedding (128 weights) and its head (320, whose 10 rows four copies do not split) bipolar.
_FORMATS = {"ternary": ["--format", "ternary"], "binary01": ["--format", "binary01"],
            "tiled": ["--format", "tiled", "--p", "4", "--min-compress-size", "512"]}


@pytest.fixture(scope="module", params=list(_FORMATS))
def trained(tmp_path_factory, request):
    """An integer ViT trained on digits through the CLI: ``(checkpoint path, exit code)``; ternary
    weights, binary01 (binary normalized: every projection's sums normalized per token), or tiled
    (sub-bit: one bipolar tile per projection, repeated with a scale per copy)."""
    from lowbit.cli import main

    out = tmp_path_factory.mktemp("vit") / "vit.pt"
    code = main(["train", "--dataset", "digits", "--arch", "vit:dim=32,depth=2,heads=2,mlp_dim=64,patch=2+integer",
                 *_FORMATS[request.param], "--act-bits", "3", "--input-encoding", "pixels", "--epochs", "20",
                 "--lr", "0.01", "-o", str(out)])
    return out, code


def test_train_cli_trains_an_integer_vit_whose_checkpoint_evaluates_in_integers(trained):
    out, code = trained
    assert code == 0
    model, meta = load_checkpoint(out)
    assert isinstance(model, IntegerViT) and meta["arch"]["integer"] is True
    acc = meta["metrics"]["test_accuracy"]
    assert acc > 0.85, acc
    # every projection's weights counted: a {0,1} weight (and bias) is one bit, a ternary one log2(3),
    # a tiled projection's a quarter bit and its four float32 scales, the bipolar ones a bit each
    if meta["arch"]["p"]:
        from lowbit.model.quant import TiledQuantizer

        counts = [(m.weight.numel(), m.quantizer.p) for m in model.modules()
                  if isinstance(getattr(m, "quantizer", None), TiledQuantizer)]
        tiled = sum(n for n, p in counts if p == 4)
        assert tiled == 2 * 32 * (96 + 32 + 64 + 64) and sorted(n for n, p in counts if p == 1) == [128, 320]
        bits = (tiled / 4 + 32 * 4 * sum(p == 4 for _, p in counts) + 448) / (tiled + 448)
    else:
        bits = {"binary01": 1.0, "ternary": math.log2(3)}[meta["arch"]["weight_format"]]
    assert meta["metrics"]["bits_per_weight"] == pytest.approx(bits)
    # The recorded accuracy is the integer arithmetic's, reproduced from the file.
    from lowbit.model.data import load_dataset
    from lowbit.training import encode_inputs

    ds = load_dataset("digits", seed=0)
    x = torch.from_numpy(encode_inputs(ds.x_test, meta["input"], "vit"))
    model.eval()
    with torch.no_grad():
        pred = model(x).argmax(1).numpy()
    assert np.mean(pred == ds.y_test) == pytest.approx(acc)


def test_an_integer_vit_runs_bit_exact_in_verilator_over_the_whole_digits_test_split(trained, tmp_path):
    """Compiled for 1024 cycles per inference, which the attention engine holds to more (the
    matrix engines are folded for its pace), every test image through the Verilog with stalls:
    every output word as the IR's, the accuracy PyTorch's, the cycles as predicted."""
    from lowbit.flow import compile_checkpoint, simulate_build, simulation_problems

    manifest, check = compile_checkpoint(trained[0], tmp_path / "build", target_cycles=1024)
    assert check["prediction_disagreements"] == 0 and check["logit_mismatches"] == 0
    paced = manifest["folding_choice"]
    assert paced["target_cycles"] == 1024 < paced["paced_at"] == manifest["cycles_per_inference"]
    ops = {layer["op"] for layer in manifest["layers"]}
    assert {"position_add", "residual"} <= ops
    body = {e["op"] for layer in manifest["layers"] if layer["op"] == "residual" for e in layer["body"]}
    assert {"normalize_levels", "attention"} <= body
    r = simulate_build(tmp_path / "build", seed=1, progress=False)
    assert r["images"] == 360 and r["mismatches"] == 0
    assert r["hw_accuracy"] == r["ir_accuracy"] == check["torch_accuracy"]
    assert r["cycles_measured"] == r["cycles_predicted"] == manifest["cycles_per_inference"]
    assert simulation_problems(r) == []


def test_matrix_engines_are_folded_for_the_pace_the_attention_engine_sets():
    """A target no folding reaches: the network runs at the attention engine's pace either way,
    and the matrix engines are folded for that pace, not for the target (fewer lanes: 75 instead
    of 1,080 for this network)."""
    from lowbit.compiler.codegen import describe
    from lowbit.folding import fold_for_cycles
    from lowbit.model.export import export_model

    graph = export_model(_trained_stats_model()[0], {"input": {"encoding": "pixels"}})
    paced = fold_for_cycles(graph, 64)
    pace = describe(paced)["cycles_per_inference"]
    assert pace > 64 and paced.meta["folding"]["target_cycles"] == 64 and paced.meta["folding"]["paced_at"] == pace
    # the folding for the pace itself
    assert [m.folding for m in fold_for_cycles(graph, pace).matmuls()] == [m.folding for m in paced.matmuls()]
    positions = paced.positions()
    cycles = [m.cycles() * positions[m.name] for m in paced.matmuls()]
    assert max(cycles) <= pace and min(cycles) > 64  # every one slower than the target, none than the pace


def _trained_stats_model(seed=0, **change):
    """A model with BatchNorm statistics from one training-mode pass."""
    model = _model(seed, **change)
    x = torch.randint(0, 16, (64, 1, 8, 8)).float()
    model.train()
    model(x)
    return model.eval(), x


@pytest.mark.parametrize("fmt", ["ternary", "levels5", "bipolar", "binary01"])
def test_the_ir_reproduces_every_stage_and_logit_and_survives_a_save(tmp_path, fmt):
    from lowbit.compiler.serialize import load_graph, save_graph
    from lowbit.model.check import compare_with_torch
    from lowbit.model.export import export_model

    model, x = _trained_stats_model(weight_format=fmt)
    graph = export_model(model, {"input": {"encoding": "pixels"}})
    kinds = [type(n).__name__ for n in graph.nodes]
    # binary01: each projection's {0,1} sums, its {0,1} bias, then the per-token normalization
    # and the next quantizer, in place of a requantization
    quantize = ["PositionAdd", "NormalizeLevels"] if fmt == "binary01" else ["MultiThreshold"]
    assert kinds == ["SlidingWindow", "MatMul", *quantize, "PositionAdd", *["Residual"] * 4,
                     "NormalizeLevels", "Flatten", "MatMul", "HostAffine", "ArgMax"]
    body = [type(n).__name__ for n in graph.nodes[kinds.index("Residual")].body]
    assert body == ["NormalizeLevels", "MatMul", *quantize, "Attention", "MatMul", *quantize]
    images = np.random.default_rng(0).integers(0, 16, (200, 8, 8, 1))
    labels = np.zeros(200, dtype=np.int64)
    check = compare_with_torch(model, graph, images, labels)
    assert check["prediction_disagreements"] == 0 and check["logit_mismatches"] == 0
    assert check["activation_mismatches"] == {"stage0": 0, "stage1": 0, "stage2": 0}
    assert compare_with_torch(model, graph, images, labels, batch=7) == check  # in batches, the same
    save_graph(tmp_path / "graph.npz", graph)
    again = load_graph(tmp_path / "graph.npz")
    for a, b in zip(graph.execute(images), again.execute(images)):
        assert np.array_equal(a, b)


def test_signed_step_thresholds_match_the_quantizer_on_every_integer():
    from lowbit.model.thresholds import step_thresholds
    from lowbit.model.layers import QuantAct

    quant = QuantAct("s4")
    with torch.no_grad():
        quant.clip.fill_(1.7)
    gain = np.array([0.013, 0.0071, 0.02])
    lo, hi = np.array([-300, -250, -100]), np.array([300, 260, 90])
    t, flip, out_type, ties = step_thresholds(gain, np.zeros(3), lo, hi, quant)
    assert out_type == ValueType("int", 4) and t.shape == (3, 15) and not flip.any()
    op = MultiThreshold("act", t, ValueType("int", 11), out_type)
    for c in range(3):
        d = np.arange(lo[c], hi[c] + 1)
        want = quant.integer(torch.from_numpy(d * gain[c]))[0].numpy()
        x = np.zeros((len(d), 3), dtype=np.int64)
        x[:, c] = d
        assert np.array_equal(op.reference(x)[:, c], want)


@pytest.mark.parametrize("build, message", [
    (lambda: MultiThreshold("t", np.zeros((2, 1)), ValueType("int", 8), ValueType("int", 1)),
     "a signed output needs at least 2 bits"),
    (lambda: Attention("a", 6, 4, ValueType("int", 4), np.array([256, 1, 0]), 2), "4 heads do not divide 6"),
    (lambda: Attention("a", 8, 2, ValueType("uint", 4), np.array([256, 1, 0]), 2), "must be signed levels"),
    (lambda: Attention("a", 8, 2, ValueType("int", 4), np.array([256, 1, 2]), 2), "must fall from a positive"),
    (lambda: Attention("a", 8, 2, ValueType("int", 4), np.array([256, 3]), 2), "must fall from a positive"),
    (lambda: NormalizeLevels("n", 4, ValueType("int", 8), np.ones(3), np.ones(3, bool), ValueType("int", 2), 16),
     None),
    (lambda: NormalizeLevels("n", 4, ValueType("int", 8), np.ones(2), np.ones(3, bool), ValueType("int", 2), 16),
     "needs 3 squares and 3 signs"),
    (lambda: NormalizeLevels("n", 4, ValueType("int", 8), np.ones(3), np.ones(3, bool), ValueType("uint", 2), 16),
     None),
    (lambda: NormalizeLevels("n", 4, ValueType("int", 8), np.ones(1), np.ones(1, bool), BIPOLAR, 16),
     "outputs signed or unsigned levels of at least 2 bits, not"),
    (lambda: NormalizeLevels("n", 4096, ValueType("int", 30), np.ones(3), np.ones(3, bool), ValueType("int", 2), 16),
     "overflow the int64 comparisons"),
    (lambda: PositionAdd("p", np.zeros((16, 4)), ValueType("int", 4)).out_shape((4, 4, 5)),
     "a table of 16 positions x 4 channels does not fit"),
])
def test_bad_transformer_ops_name_the_problem(build, message):
    if message is None:
        build()
        return
    with pytest.raises(LowbitError, match=message):
        build()


def test_attention_reference_against_a_direct_loop():
    rng = np.random.default_rng(3)
    table = softmax_table(0.05).numpy()
    op = Attention("a", 4, 2, ValueType("int", 4), table, 2)
    x = rng.integers(-8, 8, (3, 2, 3, 12))
    got = op.reference(x)
    assert op.out_type == ValueType("int", 6) and got.shape == (3, 2, 3, 4)
    tokens = x.reshape(3, 6, 12)
    for n in range(3):
        for i in range(6):
            for h in range(2):
                q = tokens[n, i, 2 * h:2 * h + 2]
                scores = [int(q @ tokens[n, j, 4 + 2 * h:6 + 2 * h]) for j in range(6)]
                e = [int(table[min(max(scores) - s, len(table) - 1)]) for s in scores]
                for d in range(2):
                    num = sum(ej * int(tokens[n, j, 8 + 2 * h + d]) for j, ej in enumerate(e)) * 4
                    want = math.floor(Fraction(num, sum(e)) + Fraction(1, 2))
                    assert got.reshape(3, 6, 4)[n, i, 2 * h + d] == want
