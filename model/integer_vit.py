"""An integer-only vision transformer: in eval mode every tensor after the input is an integer.

The float :class:`~lowbit.model.transformer.TinyViT` keeps its softmax, layer norms, residual sums
and position embedding in float. This network replaces each of them with integer arithmetic, in
the style of integer-only transformers, so that a hardware datapath can compute exactly what the
model computes:

- **residual stream**: integers ``r`` of one scale ``s_r`` shared by the whole network (the
  quantizer :attr:`IntegerViT.residual`, signed). Every branch ends on that quantizer, so the
  residual adds are integer adds; the stream widens by the branch's range at each add.
- **position embedding**: the learned embedding rounded to the residual scale, an integer table
  added to the quantized patch embedding.
- **normalization** (:class:`NormQuant`): the parameter-free per-token normalization of binary
  normalized networks, ``(r - mean) / std``, followed by a signed quantizer. With
  ``u = n*r - sum(r)`` and ``V = sum(u**2)``, a level ``y >= t`` reduces to ``u >= t*sqrt(V/n)``,
  which squares into integer comparisons against ``a = round(t**2 * 2**NORM_FRAC_BITS)``.
- **attention** (:class:`IntegerAttention`): Q, K and V quantized (signed); scores ``S = Q K^T``
  in integers; the softmax's exponent a table ``E[d] = round(2**SOFTMAX_BITS * exp(-lam * d))`` of
  the distance ``d = max(S) - S``; the output the weighted mean of V,
  ``round(sum(e*V) * 2**ATTN_FRAC_BITS / sum(e))``, an integer division.
- **projections**: low-bit weight layers (:class:`~lowbit.model.transformer.Projection`) whose
  integer dot products are requantized by the next quantizer, as in the other networks.
- **head**: the normalized tokens' sum through the head projection, then BatchNorm (the host's
  affine map) and argmax.

Training runs the same operators in float with straight-through rounding; :meth:`IntegerViT.forward`
in eval mode runs :meth:`IntegerViT.integer_forward`, the int64 arithmetic itself.

``arch`` keys are those of the ViT (:mod:`lowbit.model.transformer`) with ``"integer": true`` and
``act`` ``uK`` (K = 2..8): hidden MLP activations ``uK``, normalized tokens and Q, K, V ``sK``, the
residual stream ``s(K+2)`` (at most 8 bits).
"""

import math

import numpy as np
import torch
from torch import nn

from lowbit.compiler.ir import Attention, NormalizeLevels, ValueType, int_type_for
from lowbit.core.errors import LowbitError
from lowbit.core.formats import activation_format

from .layers import BinaryNormLinear, QuantAct
from .quant import DEFAULT_MIN_COMPRESS_SIZE, row_scales
from .transformer import PatchNetwork, Projection, check_heads

__all__ = ["IntegerViT", "NormQuant", "IntegerAttention", "BinaryProjection", "normalized", "normalize_op",
           "normalize_integer", "SOFTMAX_BITS", "ATTN_FRAC_BITS", "NORM_FRAC_BITS",
           "norm_levels", "softmax_table"]

SOFTMAX_BITS = 8      # the exponent table's values are integers up to 2**8
ATTN_FRAC_BITS = 2    # the attention output keeps 2 bits below V's step
NORM_FRAC_BITS = 16   # fixed-point bits of the normalization's squared thresholds


def _round_ste(x):
    """``floor(x + 1/2)`` forward, identity gradient."""
    return x + (torch.floor(x + 0.5) - x).detach()


def _levels(q):
    """The integer levels ``qmin+1 .. qmax`` a quantizer's count starts from."""
    return torch.arange(q.qmin + 1, q.qmax + 1, dtype=torch.float64)


def norm_levels(quantizer):
    """``(thresholds t, squared fixed-point thresholds a)`` of a signed quantizer after the
    normalization: level j is reached when ``y >= t_j = s*(j - 1/2)``, and ``a_j =
    round(t_j**2 * 2**NORM_FRAC_BITS)``."""
    s = float(quantizer.scale().detach())
    t = s * (_levels(quantizer) - 0.5)
    return t, torch.floor(t * t * 2.0 ** NORM_FRAC_BITS + 0.5).to(torch.int64)


def softmax_table(lam):
    """``E[d] = round(2**SOFTMAX_BITS * exp(-lam*d))`` for d = 0, 1, ... up to its first zero
    (included): every larger distance also gives 0."""
    if not lam > 0 or not math.isfinite(lam):
        raise LowbitError(f"the attention logits' scale must be a positive number, not {lam!r}")
    top = 2 ** SOFTMAX_BITS
    # exp(-lam*d) < 1/(2*top) from d > ln(2*top)/lam on.
    size = int(math.log(2 * top) / lam) + 2
    if size > 1 << 16:
        raise LowbitError(f"the attention logits' scale {lam:.3g} needs an exponent table of {size} entries",
                          "the Q and K quantizers' clips have collapsed; train longer or from another seed")
    d = torch.arange(size, dtype=torch.float64)
    table = torch.floor(top * torch.exp(-lam * d) + 0.5).to(torch.int64)
    zero = int((table == 0).nonzero()[0])
    return table[: zero + 1]


def _matmul(projection, x, bias=True):
    """``(acc, scale)``: the int64 dot products of a projection with integer inputs ``x`` (..., in),
    plus (with ``bias``) its bias levels where it has them (binary01), and the float64 scale per
    output channel that makes them the projection's output."""
    iw = projection.layer.integer_weights()
    acc = torch.einsum("...i,oi->...o", x.to(torch.int64), iw.levels.to(torch.int64))
    if bias and iw.bias_levels is not None:
        acc = acc + iw.bias_levels
    return acc, torch.from_numpy(row_scales(iw, iw.levels.shape[0]) * projection.gain)


def _requantize(quantizer, acc, scale, in_scale):
    """The levels of ``quantizer`` for integer dot products ``acc`` of inputs of step ``in_scale``."""
    return quantizer.integer(acc.to(torch.float64) * (scale * in_scale))[0]


def normalized(r):
    """The per-token normalization ``(r - mean) / std`` over the last axis, in float."""
    n = r.shape[-1]
    u = r - r.mean(-1, keepdim=True)
    var = (u * u).sum(-1, keepdim=True) / n
    # A constant token normalizes to 0 (u is 0 there).
    return torch.where(var > 0, u / torch.sqrt(torch.clamp(var, min=1e-30)), torch.zeros_like(u))


def normalize_op(name, quantizer, channels, in_type):
    """The IR op of ``quantizer(normalized(r))`` over ``channels``, for inputs of ``in_type``."""
    t, a = norm_levels(quantizer)
    return NormalizeLevels(name, channels, in_type, a.numpy(), (t > 0).numpy(),
                           ValueType(quantizer.format.kind, quantizer.format.bits), NORM_FRAC_BITS)


@torch.no_grad()
def normalize_integer(quantizer, r):
    """int64 levels of ``quantizer(normalized(r))`` for int64 tokens ``r`` (..., n): the IR op's reference."""
    op = normalize_op("norm", quantizer, r.shape[-1], int_type_for(int(r.min()), int(r.max())))
    return torch.from_numpy(op.reference(r.numpy()))


class NormQuant(nn.Module):
    """Per-token normalization without parameters, then a signed K-bit quantizer (module docstring).

    Parameters
    ----------
    channels : int
        The channels normalized together.
    fmt : str
        ``"sK"``.
    """

    def __init__(self, channels, fmt):
        super().__init__()
        self.channels = channels
        self.quant = QuantAct(fmt)

    def forward(self, r):
        return self.quant(normalized(r))

    def op(self, name, in_type):
        """The IR op of this normalization, for inputs of ``in_type``."""
        return normalize_op(name, self.quant, self.channels, in_type)

    def integer(self, r):
        """int64 levels for the int64 residual tokens ``r`` (..., n): the IR op's reference."""
        return normalize_integer(self.quant, r)


class BinaryProjection(Projection):
    """A binary normalized projection: {0,1} weights and a {0,1} bias on the integer levels of its
    input, ``acc = W x + b`` (:class:`~lowbit.model.layers.BinaryNormLinear` without its float
    normalization). The per-token normalization that follows it is the next quantizer's
    (:func:`normalized`), which makes the sums' scale irrelevant and keeps them integers.
    """

    def __init__(self, in_features, out_features):
        nn.Module.__init__(self)
        self.layer = BinaryNormLinear(in_features, out_features, normalize=False)
        self.gain = 1.0


def _projection(in_features, out_features, fmt, p, mcs):
    if fmt == "binary01":
        return BinaryProjection(in_features, out_features)
    return Projection(in_features, out_features, fmt, p, mcs)


class IntegerAttention(nn.Module):
    """Multi-head self-attention on integers (module docstring): one Q|K|V projection, signed
    quantizers for Q, K and V, the table softmax, the rounded weighted mean of V, and the output
    projection (whose quantizer, the residual stream's, the caller applies).

    With ``binary01`` weights the projections are :class:`BinaryProjection` on their inputs'
    levels, and Q|K|V is normalized per token (all 3 * dim channels together) before one
    quantizer that Q, K and V share.

    Parameters
    ----------
    dim, heads : int
    weight_format : str
    act : str
        ``"sK"``, the format of Q, K and V.
    p, min_compress_size
        As for :class:`~lowbit.model.transformer.Projection`.
    """

    def __init__(self, dim, heads, weight_format, act, p=None, min_compress_size=DEFAULT_MIN_COMPRESS_SIZE):
        super().__init__()
        check_heads(dim, heads)
        self.heads = heads
        self.binary = weight_format == "binary01"
        self.qkv = _projection(dim, 3 * dim, weight_format, p, min_compress_size)
        if self.binary:
            self.quant_qkv = QuantAct(act)
            self.quant_q = self.quant_k = self.quant_v = self.quant_qkv
        else:
            self.quant_q, self.quant_k, self.quant_v = (QuantAct(act) for _ in range(3))
        self.o = _projection(dim, dim, weight_format, p, min_compress_size)

    def _split(self, z):
        n, t, d = z.shape
        return z.reshape(n, t, self.heads, d // self.heads).transpose(1, 2)

    def _merge(self, z):
        n, h, t, dh = z.shape
        return z.transpose(1, 2).reshape(n, t, h * dh)

    def lam(self):
        """The logits' scale per unit of the integer scores: ``s_q * s_k / sqrt(head width)``."""
        dh = self.o.layer.in_features // self.heads
        return float(self.quant_q.scale().detach() * self.quant_k.scale().detach()) / math.sqrt(dh)

    def forward(self, x, in_step):
        """The output projection's outputs for normalized tokens ``x`` of step ``in_step``
        (binary01: its sums, which the caller normalizes)."""
        if self.binary:
            q, k, v = self.quant_qkv(normalized(self.qkv(x / in_step))).chunk(3, dim=-1)
        else:
            q, k, v = (quant(z) for quant, z in zip((self.quant_q, self.quant_k, self.quant_v),
                                                     self.qkv(x).chunk(3, dim=-1)))
        q, k, v = (self._split(z) for z in (q, k, v))
        z = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
        e = _round_ste(2.0 ** SOFTMAX_BITS * torch.exp(z - z.amax(-1, keepdim=True).detach()))
        mean = (e @ v) / e.sum(-1, keepdim=True)
        step = self.quant_v.scale() / 2 ** ATTN_FRAC_BITS
        levels = self._merge(_round_ste(mean / step))
        return self.o(levels) if self.binary else self.o(step * levels)

    def op(self, name):
        """The IR op of the attention between the Q|K|V quantizers and the output projection."""
        dim = self.o.layer.in_features
        return Attention(name, dim, self.heads, ValueType("int", self.quant_q.format.bits),
                         softmax_table(self.lam()).numpy(), ATTN_FRAC_BITS)

    @torch.no_grad()
    def integer(self, x, in_scale):
        """``(acc, scale, step)`` of the output projection for integer normalized tokens ``x`` of
        step ``in_scale``: its dot products, their scale per channel and the step of its inputs."""
        acc, scale = _matmul(self.qkv, x)
        if self.binary:
            qkv = normalize_integer(self.quant_qkv, acc)
        else:
            qkv = torch.cat([_requantize(quant, a, s, in_scale)
                             for quant, a, s in zip((self.quant_q, self.quant_k, self.quant_v), acc.chunk(3, dim=-1),
                                                    scale.chunk(3))], dim=-1)
        n, t, _ = qkv.shape
        mean = torch.from_numpy(self.op("attn").reference(qkv.reshape(n, t, 1, -1).numpy())).reshape(n, t, -1)
        acc, scale = _matmul(self.o, mean)
        return acc, scale, self.quant_v.scale() / 2 ** ATTN_FRAC_BITS


class IntegerBlock(nn.Module):
    """Pre-norm block on the integer residual stream: ``r + R(Attn(N(r)))``, then
    ``r + R(fc2(act(fc1(N(r)))))``, R being the residual stream's quantizer. With ``binary01``
    weights every projection's sums are normalized per token before the quantizer after it."""

    def __init__(self, dim, heads, mlp_dim, weight_format, act, p=None,
                 min_compress_size=DEFAULT_MIN_COMPRESS_SIZE):
        super().__init__()
        k = activation_format(act).bits
        self.binary = weight_format == "binary01"
        self.norm1 = NormQuant(dim, f"s{k}")
        self.attn = IntegerAttention(dim, heads, weight_format, f"s{k}", p, min_compress_size)
        self.norm2 = NormQuant(dim, f"s{k}")
        self.fc1 = _projection(dim, mlp_dim, weight_format, p, min_compress_size)
        self.act = QuantAct(act)
        self.fc2 = _projection(mlp_dim, dim, weight_format, p, min_compress_size)

    def _quantize(self, quant, z):
        return quant(normalized(z)) if self.binary else quant(z)

    def _project(self, projection, x, step):
        return projection(x / step) if self.binary else projection(x)

    def forward(self, r, residual):
        r = r + self._quantize(residual, self.attn(self.norm1(r), self.norm1.quant.scale()))
        h = self._quantize(self.act, self._project(self.fc1, self.norm2(r), self.norm2.quant.scale()))
        return r + self._quantize(residual, self._project(self.fc2, h, self.act.scale()))

    def _integer(self, quant, acc, scale, in_scale):
        return normalize_integer(quant, acc) if self.binary else _requantize(quant, acc, scale, in_scale)

    @torch.no_grad()
    def integer(self, r, residual):
        n = self.norm1.integer(r)
        r = r + self._integer(residual, *self.attn.integer(n, self.norm1.quant.scale()))
        acc, scale = _matmul(self.fc1, self.norm2.integer(r))
        h = self._integer(self.act, acc, scale, self.norm2.quant.scale())
        acc, scale = _matmul(self.fc2, h)
        return r + self._integer(residual, acc, scale, self.act.scale())


def _check_integer(a):
    act = a.get("act")
    try:
        fmt = activation_format(act)
    except LowbitError:
        fmt = None
    if fmt is None or fmt.kind != "uint" or fmt.bits < 2:
        raise LowbitError(f"the integer ViT needs k-bit hidden activations, not {act!r}",
                          "use --act-bits 2..8")
    if a["weight_format"] == "fp32":
        raise LowbitError("the integer ViT takes low-bit weights, not 'fp32'",
                          "use bipolar, ternary, levelsK, pow2, binary01 or tiled weights")
    return fmt.bits


class IntegerViT(PatchNetwork):
    """A ViT whose eval mode is integer arithmetic end to end (module docstring).

    Parameters
    ----------
    arch : dict
        A ViT ``arch`` (:mod:`lowbit.model.transformer`) with ``integer`` true.

    Raises
    ------
    LowbitError
        As :class:`~lowbit.model.transformer.TinyViT`, and for activations that are not ``uK``
        (K >= 2) or weights in fp32.
    """

    def __init__(self, arch):
        super().__init__(arch)
        a = self.arch
        k = _check_integer(a)
        fmt, p, dim = a["weight_format"], a.get("p"), a["dim"]
        mcs = a.get("min_compress_size", DEFAULT_MIN_COMPRESS_SIZE)
        inp = activation_format(a.get("input", "bipolar"))
        # Integer pixels enter unscaled; this constant keeps the embedding's outputs near 1.
        self.input_gain = 1.0 / max(inp.levels) if inp.kind == "uint" else 1.0
        self.binary = fmt == "binary01"
        self.embed = _projection(a["in_shape"][0] * self.patch ** 2, dim, fmt, p, mcs)
        self.residual = QuantAct(f"s{min(k + 2, 8)}")
        self.position = nn.Parameter(torch.randn(self.tokens, dim) * 0.5)
        self.blocks = nn.ModuleList(
            IntegerBlock(dim, a["heads"], a["mlp_dim"], fmt, a["act"], p, mcs) for _ in range(a["depth"]))
        self.norm = NormQuant(dim, f"s{k}")
        self.head = _projection(dim, a["classes"], fmt, p, mcs)
        self.head_norm = nn.BatchNorm1d(a["classes"])

    def position_levels(self):
        """The position embedding in residual steps: an int64 (tokens, dim) table."""
        q = self.residual
        return torch.clamp(torch.floor(self.position.detach() / q.scale().detach() + 0.5),
                           q.qmin, q.qmax).to(torch.int64)

    def forward(self, x):
        """Training: :meth:`float_forward`; eval: :meth:`integer_forward`."""
        return self.float_forward(x) if self.training else self.integer_forward(x)

    def float_forward(self, x):
        """The integer operators in float, rounding straight through: what training runs."""
        q = self.residual
        s = q.scale()
        pos = s * torch.clamp(_round_ste(self.position / s), q.qmin, q.qmax)
        if self.binary:  # on the pixels' levels, normalized per token
            r = q(normalized(self.embed(self.patches(x)))) + pos
        else:
            r = q(self.embed(self.patches(x) * self.input_gain)) + pos
        for block in self.blocks:
            r = block(r, q)
        tokens = self.norm(r).sum(1)
        return self.head_norm(self.head(tokens / self.norm.quant.scale() if self.binary else tokens))

    @torch.no_grad()
    def integer_tokens(self, x):
        """The int64 residual stream after the embedding and after every block, for images ``x``
        whose values are the input's integer levels."""
        xi = torch.floor(x.to(torch.float64) + 0.5)
        if not torch.equal(xi, x.to(torch.float64)):
            raise LowbitError("the integer ViT's inputs must hold integer levels",
                              "encode the images with the checkpoint's input encoding")
        acc, scale = _matmul(self.embed, self.patches(xi.to(torch.int64)))
        if self.binary:
            r = normalize_integer(self.residual, acc) + self.position_levels()
        else:
            r = _requantize(self.residual, acc, scale, self.input_gain) + self.position_levels()
        outs = [r]
        for block in self.blocks:
            r = block.integer(r, self.residual)
            outs.append(r)
        return outs

    def head_affine(self):
        """float64 ``(scale, shift)`` per class: the logits are ``acc * scale + shift``, ``acc`` the
        head's dot products with the sum of the normalized tokens' levels, BatchNorm and a binary01
        head's bias levels folded in."""
        iw = self.head.layer.integer_weights()
        gain = row_scales(iw, iw.levels.shape[0]) * self.head.gain
        if not self.binary:  # a binary01 head takes the levels themselves
            gain = gain * float(self.norm.quant.scale().detach())
        bn = self.head_norm
        a = bn.weight.detach().double().numpy() / np.sqrt(bn.running_var.double().numpy() + bn.eps)
        shift = bn.bias.detach().double().numpy() - bn.running_mean.double().numpy() * a
        if iw.bias_levels is not None:  # (acc + b) * gain * a: the bias's share goes to the shift
            shift = shift + iw.bias_levels.double().numpy() * gain * a
        return gain * a, shift

    @torch.no_grad()
    def trace(self, x):
        """The integer residual stream after the embedding and after every block, as int64
        (N, dim, H/patch, W/patch) maps, then the float64 logits."""
        tokens = self.integer_tokens(x)
        acc, _ = _matmul(self.head, self.norm.integer(tokens[-1]).sum(1), bias=False)
        scale, shift = self.head_affine()
        n, c, h, w = x.shape
        side = (h // self.patch, w // self.patch)
        maps = [r.reshape(n, *side, -1).permute(0, 3, 1, 2) for r in tokens]
        return [*maps, torch.from_numpy(acc.numpy() * scale + shift)]

    def integer_forward(self, x):
        """The logits from integer arithmetic: the head's dot products through the folded BatchNorm."""
        return self.trace(x)[-1]
