"""A transformer block with low-bit projections, and a tiny vision transformer built from it.

Every weight matrix of the network (patch embedding, the Q, K, V and O projections of attention,
both MLP projections and the head) is a low-bit layer of :mod:`lowbit.model.layers`, in the weight
format of the ``arch`` dict: ``QuantLinear`` for the level-set formats (tiled when ``p`` is given)
and ``BinaryNormLinear`` for ``binary01``, as in the low-resolution and binary normalized
transformer papers. The softmax, the residual sums, the position embedding and the layer norms stay
float; ``binary01`` networks use the parameter-free per-example normalization instead of LayerNorm.

Unscaled formats (``bipolar`` without a scale, and tiled layers too small to be tiled) have weights
±1, so a projection's outputs grow like sqrt(fan-in); a fixed factor 1/sqrt(fan-in) keeps the
attention logits in the softmax's useful range. It is a constant per layer, which the integer
thresholds of a hardware datapath absorb.

``arch`` keys of kind ``"vit"`` (besides ``classes``, ``weight_format``, ``act``, ``p``):
``in_shape`` [C, H, W], ``patch`` (side of a square patch, dividing H and W), ``dim`` (token
width), ``depth`` (blocks), ``heads`` (dividing ``dim``) and ``mlp_dim`` (hidden width of the
block's MLP); ``min_compress_size`` as for the other kinds. Inputs are images (N, C, H, W).
"""

import math

import torch
from torch import nn

from lowbit.core.errors import LowbitError
from lowbit.core.formats import activation_format

from .layers import BinaryNormLinear, BipolarAct, QuantAct, QuantLinear
from .quant import DEFAULT_MIN_COMPRESS_SIZE, BinaryNormalize

__all__ = ["PatchNetwork", "Projection", "LowbitAttention", "TransformerBlock", "TinyViT", "build_vit", "check_vit",
           "check_heads", "VIT_DEFAULTS"]

VIT_DEFAULTS = {"dim": 64, "depth": 2, "heads": 4, "mlp_dim": 128}


class Projection(nn.Module):
    """A low-bit linear projection: ``QuantLinear``, ``BinaryNormLinear`` or, for ``"fp32"``, a
    float ``nn.Linear`` (the baseline), times a fixed gain for unscaled weights (module docstring).

    Parameters
    ----------
    in_features, out_features : int
    weight_format : str
        A registry weight format, or ``"fp32"``.
    p : int or None
        Tile copies (tiled bipolar weights).
    min_compress_size : int
        Tiled layers with fewer weights stay plain bipolar.
    """

    def __init__(self, in_features, out_features, weight_format, p=None,
                 min_compress_size=DEFAULT_MIN_COMPRESS_SIZE):
        super().__init__()
        if weight_format == "fp32":
            self.layer = nn.Linear(in_features, out_features, bias=False)
        elif weight_format == "binary01":
            if p is not None:
                raise LowbitError(f"tiled weights (p={p}) are bipolar, not 'binary01'")
            self.layer = BinaryNormLinear(in_features, out_features)
        else:
            self.layer = QuantLinear(in_features, out_features, weight_format, tiled=p is not None, p=p,
                                     min_compress_size=min_compress_size)
        unscaled = isinstance(self.layer, QuantLinear) and (
            self.layer.copies == 1 if self.layer.tiled else self.layer.granularity == "none")
        self.gain = 1 / math.sqrt(in_features) if unscaled else 1.0

    def forward(self, x):
        y = self.layer(x)
        return y * self.gain if self.gain != 1.0 else y

    def extra_repr(self):
        return f"gain={self.gain:.4g}"


def _norm(dim, weight_format):
    return BinaryNormalize(-1) if weight_format == "binary01" else nn.LayerNorm(dim)


def _activation(act):
    if act == "float":
        return nn.GELU()
    fmt = activation_format(act)
    if fmt.kind == "bipolar":
        return BipolarAct()
    if fmt.kind == "int":
        raise LowbitError(f"hidden activations are bipolar or unsigned, not {act!r}",
                          "use 'bipolar' or 'u1'..'u8'")
    return QuantAct(act)


def check_heads(dim, heads):
    """Raise unless ``heads`` divides the token width ``dim``; the fix lists the divisors."""
    if dim % heads:
        divisors = ", ".join(str(h) for h in range(1, dim + 1) if dim % h == 0)
        raise LowbitError(f"attention heads ({heads}) must divide the token width ({dim})",
                          f"use heads in {{{divisors}}}")


class LowbitAttention(nn.Module):
    """Multi-head self-attention whose Q, K, V and O projections are low-bit :class:`Projection`.

    Parameters
    ----------
    dim, heads : int
        ``heads`` must divide ``dim``.
    weight_format : str
    p : int or None
    """

    def __init__(self, dim, heads, weight_format, p=None, min_compress_size=DEFAULT_MIN_COMPRESS_SIZE):
        super().__init__()
        check_heads(dim, heads)
        self.heads = heads
        self.q, self.k, self.v, self.o = (Projection(dim, dim, weight_format, p, min_compress_size)
                                          for _ in range(4))

    def forward(self, x):
        n, t, d = x.shape
        h = self.heads

        def split(z):
            return z.reshape(n, t, h, d // h).transpose(1, 2)

        q, k, v = split(self.q(x)), split(self.k(x)), split(self.v(x))
        attn = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(d // h), dim=-1)
        return self.o((attn @ v).transpose(1, 2).reshape(n, t, d))


class TransformerBlock(nn.Module):
    """Pre-norm transformer block: ``x + Attn(Norm(x))``, then ``x + MLP(Norm(x))``.

    The MLP is Projection(dim -> mlp_dim), the activation of ``act`` (``"float"``: GELU,
    ``"bipolar"``: sign, ``"uK"``: K-bit), Projection(mlp_dim -> dim).
    """

    def __init__(self, dim, heads, mlp_dim, weight_format, act="float", p=None,
                 min_compress_size=DEFAULT_MIN_COMPRESS_SIZE):
        super().__init__()
        self.norm1 = _norm(dim, weight_format)
        self.attn = LowbitAttention(dim, heads, weight_format, p, min_compress_size)
        self.norm2 = _norm(dim, weight_format)
        self.fc1 = Projection(dim, mlp_dim, weight_format, p, min_compress_size)
        self.act = _activation(act)
        self.fc2 = Projection(mlp_dim, dim, weight_format, p, min_compress_size)

    def forward(self, x):
        x = x + self.attn(self.norm1(x))
        return x + self.fc2(self.act(self.fc1(self.norm2(x))))


def _positive_int(a, key):
    v = a.get(key)
    if not isinstance(v, int) or isinstance(v, bool) or v < 1:
        raise LowbitError(f"architecture {key!r} must be a positive integer, not {v!r}")
    return v


def check_vit(arch):
    """``arch`` with the ViT defaults filled in; a clear error on a bad key."""
    a = {**VIT_DEFAULTS, **arch}
    shape = a.get("in_shape")
    if not isinstance(shape, (list, tuple)) or len(shape) != 3 or \
            any(not isinstance(s, int) or isinstance(s, bool) or s < 1 for s in shape):
        raise LowbitError(f"architecture 'in_shape' must be [C, H, W], not {shape!r}")
    a["in_shape"] = [int(s) for s in shape]
    for key in ("patch", "dim", "depth", "heads", "mlp_dim"):
        _positive_int(a, key)
    _, h, w = a["in_shape"]
    if h % a["patch"] or w % a["patch"]:
        raise LowbitError(f"patch size {a['patch']} does not divide the {h}x{w} image",
                          f"use a patch size that divides both {h} and {w}")
    return a


class PatchNetwork(nn.Module):
    """What lowbit's vision transformers share: images cut into ``self.patch``-sized patches, and
    low-bit :class:`Projection` weight layers. ``arch`` is checked and completed
    (:func:`check_vit`) into ``self.arch``."""

    def __init__(self, arch):
        super().__init__()
        self.arch = check_vit(arch)
        c, h, w = self.arch["in_shape"]
        self.patch = self.arch["patch"]
        self.tokens = (h // self.patch) * (w // self.patch)

    def patches(self, x):
        """(N, C, H, W) -> (N, tokens, C*patch*patch), row-major over the patch grid."""
        n, c, h, w = x.shape
        s = self.patch
        x = x.reshape(n, c, h // s, s, w // s, s).permute(0, 2, 4, 1, 3, 5)
        return x.reshape(n, (h // s) * (w // s), c * s * s)

    def clip_latent(self):
        for m in self.modules():
            if m is not self and hasattr(m, "clip_latent"):
                m.clip_latent()

    @property
    def weight_layers(self):
        """Every low-bit weight layer, in the order of the forward pass."""
        return [m.layer for m in self.modules() if isinstance(m, Projection)]


class TinyViT(PatchNetwork):
    """A tiny vision transformer: non-overlapping patches, a low-bit patch embedding, learned
    position embeddings, ``depth`` :class:`TransformerBlock`, mean pooling over the tokens and a
    low-bit head followed by BatchNorm (binary01: the per-example normalization), as the MLP's head.

    Parameters
    ----------
    arch : dict
        See the module docstring; missing ``dim``, ``depth``, ``heads`` and ``mlp_dim`` take
        :data:`VIT_DEFAULTS`.

    Raises
    ------
    LowbitError
        On a missing or invalid key, a patch that does not divide the image or heads that do not
        divide ``dim``.
    """

    def __init__(self, arch):
        super().__init__(arch)
        a = self.arch
        fmt, p, dim = a["weight_format"], a.get("p"), a["dim"]
        mcs = a.get("min_compress_size", DEFAULT_MIN_COMPRESS_SIZE)
        self.embed = Projection(a["in_shape"][0] * self.patch ** 2, dim, fmt, p, mcs)
        self.position = nn.Parameter(torch.randn(self.tokens, dim) * 0.02)
        self.blocks = nn.ModuleList(
            TransformerBlock(dim, a["heads"], a["mlp_dim"], fmt, a["act"], p, mcs) for _ in range(a["depth"]))
        self.norm = _norm(dim, fmt)
        self.head = Projection(dim, a["classes"], fmt, p, mcs)
        self.head_norm = BinaryNormalize(-1) if fmt == "binary01" else nn.BatchNorm1d(a["classes"])

    def trace(self, x):
        """The embedded tokens, every block's output, then the logits."""
        x = self.embed(self.patches(x)) + self.position
        outs = [x]
        for block in self.blocks:
            x = block(x)
            outs.append(x)
        outs.append(self.head_norm(self.head(self.norm(x).mean(1))))
        return outs

    def forward(self, x):
        return self.trace(x)[-1]


def build_vit(arch):
    """Build a :class:`TinyViT` from an ``arch`` dict of kind ``"vit"``."""
    if arch.get("kind") != "vit":
        raise LowbitError(f"build_vit needs an architecture of kind 'vit', not {arch.get('kind')!r}")
    return TinyViT(arch)
