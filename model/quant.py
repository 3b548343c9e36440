"""Quantizers with straight-through estimators.

Sign convention, shared with the IR and the hardware: ``sign(x) = +1 if x >= 0 else -1``. Zero maps to
+1 so that a bipolar value always fits one bit (1 = +1, 0 = -1).

Every weight quantizer has two views of the same result:

* ``quantize(w)``: the float tensor used in training, ``w + (Q(w) - w).detach()``. Its value is
  ``Q(w)`` and its gradient with respect to the latent ``w`` is the identity (straight-through).
* ``integer(w)``: an :class:`IntegerWeights` with the exact integer levels (members of the
  registry's ``levels`` for the format) and the scale, ``Q(w) == scale * levels`` up to float rounding.
  This is what the exporter reads.

Activation quantizers round half up, ``floor(x / s + 1/2)``, so that the integer output is
``#{l : x >= s * (l - 1/2)}``: exactly the form of a threshold unit (``dot >= T``), which lets the
exporter fold them into integer thresholds without a tie-breaking mismatch.
"""

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from lowbit.core.errors import LowbitError
from lowbit.core.formats import activation_format, weight_format

__all__ = [
    "bipolar_sign", "BipolarWeightSTE", "BipolarActSTE",
    "IntegerWeights", "row_scales", "BipolarQuantizer", "SymmetricQuantizer", "Pow2Quantizer", "Binary01Quantizer",
    "TiledQuantizer", "weight_quantizer", "nearest_level", "ABSMEAN_STEP",
    "binary_normalize", "BinaryNormalize", "normalized_sign",
    "ActivationQuantizer", "DEFAULT_MIN_COMPRESS_SIZE",
]

DEFAULT_MIN_COMPRESS_SIZE = 65536

# Step of the symmetric level set {-m..m}, in units of mean|w|: the step that minimizes the mean
# squared error E[(w - Q(w))^2] of Q(w) = step * clamp(round(w / step), -m, m) for Gaussian w,
# found by a fine grid search (1.224, 0.843, 0.534 and 0.319 standard deviations; mean|w| is
# sqrt(2/pi) standard deviations). A mean-based scale, as in TWN and BitNet b1.58's absmean, is not
# thrown off by a few outliers the way max|w| is; for ternary, the resulting zero threshold of
# 0.77 mean|w| is close to TWN's 0.7 mean|w|.
ABSMEAN_STEP = {1: 1.53, 2: 1.06, 4: 0.669, 8: 0.400}


def bipolar_sign(x):
    """Forward-only sign with zero mapped to +1."""
    return torch.where(x >= 0, torch.ones_like(x), -torch.ones_like(x))


class BipolarWeightSTE(torch.autograd.Function):
    """Weights: sign in the forward pass, identity in the backward pass (straight-through).

    The latent float weights are clipped to [-1, 1] after each optimizer step (see
    ``QuantLinear.clip_latent``), which keeps them where the straight-through gradient is meaningful.
    """

    @staticmethod
    def forward(ctx, w):
        return bipolar_sign(w)

    @staticmethod
    def backward(ctx, grad):
        return grad


class BipolarActSTE(torch.autograd.Function):
    """Activations: sign forward, hardtanh gradient backward (pass where |x| <= 1, zero elsewhere)."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return bipolar_sign(x)

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return grad * (x.abs() <= 1).to(grad.dtype)


def _straight_through(w, q):
    """``q`` in the forward pass, identity gradient to ``w`` in the backward pass."""
    return w + (q - w).detach()


@dataclass(frozen=True)
class IntegerWeights:
    """Exact integer view of a quantized weight tensor.

    Parameters
    ----------
    format : str
        Registry name of the weight format.
    levels : torch.Tensor
        int64, the weight's shape; every element is in the format's ``levels``.
    scale : torch.Tensor
        float, broadcastable against ``levels``: shape ``()`` for one scale per tensor,
        ``(out, 1, ...)`` for one per output channel (dimension 0), the weight's full shape for
        tiled weights (one alpha per copy, repeated over the copy's positions).
    bias_levels : torch.Tensor or None
        int64 levels of the bias, for formats that quantize it (``binary01``); its scale is the
        same as the weight's.
    """

    format: str
    levels: torch.Tensor
    scale: torch.Tensor
    bias_levels: torch.Tensor = None

    def dequantize(self):
        """``scale * levels`` as float: the quantized weight."""
        return self.scale * self.levels.to(self.scale.dtype)


def row_scales(iw, rows):
    """One weight scale per output channel (float64, shape (rows,)) from an IntegerWeights.

    Raises LowbitError when the scale varies within a row: a tiled layer whose copies do not
    cover whole rows (p does not divide the output channels).
    """
    scale = iw.scale.detach().to(torch.float64)
    if scale.dim() == 0:
        return np.full(rows, float(scale))
    flat = scale.reshape(scale.shape[0], -1)
    if not torch.all(flat == flat[:, :1]):
        raise LowbitError(f"the weight scale varies within an output channel (shape {tuple(iw.levels.shape)})",
                          "for tiled layers choose p dividing the output channels, so each copy is "
                          "whole rows")
    return flat[:, 0].numpy().copy()


def _check_granularity(granularity, allowed, fmt):
    if granularity not in allowed:
        raise LowbitError(f"weight format {fmt!r} does not support granularity {granularity!r}",
                          f"use one of: {', '.join(repr(g) for g in allowed)}")


def _reduce_abs(w, granularity, how):
    """``mean`` or ``max`` of |w| over the whole tensor or per output channel (dimension 0), kept
    broadcastable against ``w``."""
    a = w.detach().abs()
    if granularity == "tensor":
        return a.mean() if how == "mean" else a.max()
    flat = a.reshape(a.shape[0], -1)
    r = flat.mean(1) if how == "mean" else flat.amax(1)
    return r.reshape(-1, *([1] * (w.dim() - 1)))


def _safe(scale):
    # An all-zero tensor (or channel) would divide by zero; any positive scale quantizes it to 0
    # (or +1 for bipolar), so a tiny one keeps the result finite and exact.
    return torch.clamp(scale, min=torch.finfo(scale.dtype).tiny)


class BipolarQuantizer:
    """``bipolar`` weights: ``sign(w)``, optionally times an XNOR-Net scale alpha.

    Parameters
    ----------
    granularity : {"none", "tensor", "channel"}
        ``"none"``: levels ±1 with scale 1 (BinaryNet; the batch norm that follows absorbs any
        scale). ``"tensor"`` / ``"channel"``: alpha = mean|w| over the tensor or over each output
        channel, the scale that minimizes ||w - alpha * sign(w)||^2 (XNOR-Net).
    """

    format = "bipolar"

    def __init__(self, granularity="none"):
        _check_granularity(granularity, ("none", "tensor", "channel"), self.format)
        self.granularity = granularity

    def _scale(self, w):
        if self.granularity == "none":
            return torch.ones((), dtype=w.dtype, device=w.device)
        return _reduce_abs(w, self.granularity, "mean")

    def quantize(self, w):
        if self.granularity == "none":
            return BipolarWeightSTE.apply(w)
        return _straight_through(w, self._scale(w) * bipolar_sign(w.detach()))

    @torch.no_grad()
    def integer(self, w):
        return IntegerWeights(self.format, bipolar_sign(w).to(torch.int64), self._scale(w))


class _ScaledLevels:
    """Weights as integer levels times a scale: subclasses define ``_scale(w)`` and ``_levels(w, scale)``."""

    def quantize(self, w):
        scale = self._scale(w)
        return _straight_through(w, scale * self._levels(w, scale))

    @torch.no_grad()
    def integer(self, w):
        scale = self._scale(w)
        return IntegerWeights(self.format, self._levels(w, scale).to(torch.int64), scale)


class SymmetricQuantizer(_ScaledLevels):
    """Symmetric level sets {-m..m}: ``ternary`` (m = 1), ``levels5`` (2), ``levels9`` (4), ``levels17`` (8).

    ``Q(w) = step * clamp(round(w / step), -m, m)`` with ``step = ABSMEAN_STEP[m] * mean|w|`` over
    the tensor or over each output channel; see :data:`ABSMEAN_STEP` for why.

    Parameters
    ----------
    fmt : str
        One of the four format names.
    granularity : {"tensor", "channel"}
        One step per tensor or per output channel (dimension 0).
    """

    def __init__(self, fmt, granularity="tensor"):
        f = weight_format(fmt)
        m = max(f.levels)
        if f.levels != tuple(range(-m, m + 1)) or m not in ABSMEAN_STEP:
            raise ValueError(f"Format {fmt!r} is not a symmetric level set {{-m..m}}")
        _check_granularity(granularity, ("tensor", "channel"), fmt)
        self.format, self.m, self.granularity = fmt, m, granularity

    def _scale(self, w):
        return _safe(ABSMEAN_STEP[self.m] * _reduce_abs(w, self.granularity, "mean"))

    def _levels(self, w, scale):
        return torch.clamp(torch.round(w.detach() / scale), -self.m, self.m)


class Pow2Quantizer(_ScaledLevels):
    """``pow2`` weights: the registry's levels {0, ±1, ±2, ±4} times a scale.

    The scale puts the largest level on max|w| (per tensor or per output channel), as exponential
    discretization does with ``a = max|w|``: ``scale = max|w| / 4``. Each weight goes to the nearest
    level by value.

    Parameters
    ----------
    granularity : {"tensor", "channel"}
    """

    format = "pow2"

    def __init__(self, granularity="tensor"):
        _check_granularity(granularity, ("tensor", "channel"), self.format)
        self.granularity = granularity
        self._grid = torch.tensor(weight_format(self.format).levels, dtype=torch.float64)

    def _scale(self, w):
        return _safe(_reduce_abs(w, self.granularity, "max") / self._grid.max().item())

    def _levels(self, w, scale):
        return nearest_level(w.detach() / scale, self._grid.to(w.dtype))


def nearest_level(x, grid):
    """The element of the sorted 1-D ``grid`` nearest to each element of ``x`` (ties go up)."""
    mids = (grid[1:] + grid[:-1]) / 2
    return grid[torch.bucketize(x, mids, right=True)]


class Binary01Quantizer:
    """``binary01`` weights and biases: ``p_q = [p > mean of the layer's parameters]``.

    The mean is taken over the layer's weight and bias together (every element counts once), as
    the binary normalized layers do, so one threshold serves both. The comparison is strict: a
    parameter equal to the mean gives 0. The gradient is straight-through to each parameter.
    """

    format = "binary01"

    @staticmethod
    def threshold(w, bias=None):
        """The mean of the layer's weight and bias elements."""
        parts = [w.detach().reshape(-1)] + ([] if bias is None else [bias.detach().reshape(-1)])
        return torch.cat(parts).mean()

    def quantize(self, w):
        """``w_q`` of a layer without bias."""
        return self.quantize_pair(w, None)[0]

    def quantize_pair(self, w, bias):
        """``(w_q, b_q)``, one threshold for both; ``b_q`` is None when ``bias`` is."""
        t = self.threshold(w, bias)
        wq = _straight_through(w, (w.detach() > t).to(w.dtype))
        bq = None if bias is None else _straight_through(bias, (bias.detach() > t).to(bias.dtype))
        return wq, bq

    @torch.no_grad()
    def integer(self, w, bias=None):
        t = self.threshold(w, bias)
        return IntegerWeights(self.format, (w > t).to(torch.int64), torch.ones((), dtype=w.dtype),
                              None if bias is None else (bias > t).to(torch.int64))


def _divisors(n):
    small = [d for d in range(1, math.isqrt(n) + 1) if n % d == 0]
    return sorted(set(small + [n // d for d in small]))


class TiledQuantizer:
    """Tiled Bit Networks: N binary weights made of one tile of N/p bits repeated p times.

    The latent scores S have the layer's shape; flattened in row-major order and reshaped to
    (p, N/p), row i is copy i. The tile is ``T = sign(sum_i S[i])`` (N/p values ±1) and copy i of the
    weight is ``alpha_i * T`` with ``alpha_i = mean |S[i]|``, the XNOR-Net scale of that copy. Alphas
    are computed from the scores rather than learned, so they need no separate parameter and
    track the scores as they train. The gradient is straight-through per position: each score
    gets the gradient of the weight at its own position.

    For a weight of shape (out, ...) with ``out % p == 0``, copy i is the rows
    ``i*out/p .. (i+1)*out/p - 1``, so ``T · x`` is computed once and reused for every copy.

    Layers with fewer than ``min_compress_size`` weights are not worth a tile: they stay plain
    bipolar weights (sign, scale 1) and ``p`` is not checked.

    Parameters
    ----------
    shape : tuple of int
        The weight's shape.
    p : int
        Number of copies; must divide N = prod(shape).
    min_compress_size : int

    Raises
    ------
    LowbitError
        If p is not a positive integer dividing N (for a layer that is compressed).
    """

    format = "bipolar"

    def __init__(self, shape, p, min_compress_size=DEFAULT_MIN_COMPRESS_SIZE):
        self.shape = tuple(shape)
        self.numel = math.prod(self.shape)
        self.compressed = self.numel >= min_compress_size
        if self.compressed:
            if not isinstance(p, int) or isinstance(p, bool) or p < 1:
                raise LowbitError(f"tile count p must be a positive integer, not {p!r}",
                                  "pass p, the number of copies of the tile, with tiled=True")
            if self.numel % p:
                divs = _divisors(self.numel)
                shown = ", ".join(map(str, divs[:24])) + (", ..." if len(divs) > 24 else "")
                raise LowbitError(f"tile count p={p!r} does not divide the layer's N={self.numel} weights",
                                  f"use a p that divides {self.numel}: {shown}")
        self.p = p if self.compressed else 1

    def _split(self, s):
        if tuple(s.shape) != self.shape:
            raise ValueError(f"Scores must have shape {self.shape}, not {tuple(s.shape)}")
        return s.detach().reshape(self.p, -1)

    def tile(self, s):
        """The tile T: N/p values ±1 (float)."""
        return bipolar_sign(self._split(s).sum(0))

    def alphas(self, s):
        """One scale per copy, shape (p,); all ones for an uncompressed layer."""
        if not self.compressed:
            return torch.ones(1, dtype=s.dtype, device=s.device)
        return self._split(s).abs().mean(1)

    def _weight(self, s):
        if not self.compressed:
            return bipolar_sign(s.detach())
        return (self.alphas(s)[:, None] * self.tile(s)[None, :]).reshape(self.shape)

    def quantize(self, s):
        if not self.compressed:
            return BipolarWeightSTE.apply(s)
        return _straight_through(s, self._weight(s))

    @torch.no_grad()
    def integer(self, s):
        """Levels ±1 (the tile repeated p times) and the per-position scale (alpha of its copy)."""
        levels = self.tile(s).repeat(self.p).reshape(self.shape).to(torch.int64)
        scale = self.alphas(s).repeat_interleave(self.numel // self.p).reshape(self.shape)
        if not self.compressed:
            scale = torch.ones((), dtype=s.dtype)
        return IntegerWeights(self.format, levels, scale)


def weight_quantizer(fmt, granularity=None):
    """The (untiled) quantizer for a registry weight format.

    Parameters
    ----------
    fmt : str
        A name from ``lowbit.core.formats.WEIGHT_FORMATS``.
    granularity : {None, "none", "tensor", "channel"}
        None takes the registry's default (``WeightFormat.scale``).

    Raises
    ------
    LowbitError
        On an unknown format, or a granularity the format does not support.
    """
    f = weight_format(fmt)
    g = f.scale if granularity is None else granularity
    if f.name == "bipolar":
        return BipolarQuantizer(g)
    if f.name == "binary01":
        _check_granularity(g, ("none",), f.name)
        return Binary01Quantizer()
    if f.name == "pow2":
        return Pow2Quantizer(g)
    return SymmetricQuantizer(f.name, g)


def binary_normalize(z, dim=-1, eps=1e-5):
    """``(z - mean) / sqrt(var + eps)`` over ``dim`` of each example (biased variance, no learned
    parameters)."""
    mean = z.mean(dim, keepdim=True)
    var = z.var(dim, unbiased=False, keepdim=True)
    return (z - mean) / torch.sqrt(var + eps)


class BinaryNormalize(nn.Module):
    """Per-example normalization to zero mean and unit variance over the features, with no learned
    parameters, as in binary normalized layers.

    Parameters
    ----------
    dim : int
        The feature dimension: -1 for (batch, features), 1 for the channels of (batch, C, H, W).
    eps : float
        Added to the variance, so a constant vector maps to zeros rather than NaN.
    """

    def __init__(self, dim=-1, eps=1e-5):
        super().__init__()
        self.dim, self.eps = dim, eps

    def forward(self, z):
        return binary_normalize(z, self.dim, self.eps)

    def extra_repr(self):
        return f"dim={self.dim}, eps={self.eps}"


@torch.no_grad()
def normalized_sign(z, dim=-1):
    """``sign(normalize(z))`` in the integer-exact form ``sign(n*z_i - sum_j z_j)``, sign(0) = +1.

    Since the standard deviation is a positive factor, ``sign((z_i - mean) / std) =
    sign(n*z_i - sum_j z_j)``. A float normalization rounds an exact tie (z_i equal to the mean) to
    either side; this form does not. Integer tensors are computed in int64, float ones in float64,
    which is exact while n * max|z| stays below 2**53 and z holds integers.

    Returns a tensor of ±1 in the dtype of ``z`` (float64 becomes z's float dtype).
    """
    n = z.shape[dim]
    wide = z.to(torch.int64) if not z.is_floating_point() else z.to(torch.float64)
    d = n * wide - wide.sum(dim, keepdim=True)
    return torch.where(d >= 0, 1, -1).to(z.dtype)


class ActivationQuantizer(nn.Module):
    """A k-bit or bipolar activation quantizer, with a straight-through gradient.

    * ``bipolar``: sign, hardtanh gradient (:class:`BipolarActSTE`); scale 1.
    * ``uK``: ``q = clamp(floor(x/s + 1/2), 0, 2**K - 1)``, ``s = clip / (2**K - 1)``; the output
      ``s * q`` spans [0, clip].
    * ``sK`` (K >= 2): ``q = clamp(floor(x/s + 1/2), -2**(K-1), 2**(K-1) - 1)``, ``s = clip / 2**(K-1)``;
      the output spans [-clip, clip - s].

    The clip is learned by default, as in PACT: the input is clamped to the output range with
    ``torch.clamp``, so x gets gradient 1 inside the range and 0 outside, and the clip gets the
    gradient of the clamped elements (PACT's rule); rounding is straight-through. With
    ``learn_clip=False`` the clip is a fixed buffer.

    Parameters
    ----------
    fmt : str
        ``"bipolar"``, ``"u1"``..``"u8"`` or ``"s2"``..``"s8"`` (``lowbit.core.formats.activation_format``).
    clip : float
        Initial (or fixed) clip; 3.0 covers batch-normalized activations.
    learn_clip : bool

    Raises
    ------
    LowbitError
        On an unknown format, ``s1`` (no symmetric range in one bit), or a clip that is not a
        positive finite number.
    """

    def __init__(self, fmt, clip=3.0, learn_clip=True):
        super().__init__()
        self.format = activation_format(fmt)
        if self.format.kind == "int" and self.format.bits < 2:
            raise LowbitError(f"activation format {fmt!r} has no symmetric range",
                              "use 's2'..'s8', or 'bipolar' for one-bit signed activations")
        if not isinstance(clip, (int, float)) or isinstance(clip, bool) or not 0 < clip < math.inf:
            raise LowbitError(f"activation clip must be a positive finite number, not {clip!r}")
        if self.format.kind == "bipolar":
            self.register_buffer("clip", torch.tensor(1.0))
        elif learn_clip:
            self.clip = nn.Parameter(torch.tensor(float(clip)))
        else:
            self.register_buffer("clip", torch.tensor(float(clip)))

    @property
    def qmin(self):
        return min(self.format.levels)

    @property
    def qmax(self):
        return max(self.format.levels)

    def scale(self):
        """The step s between integer levels (1 for bipolar)."""
        if self.format.kind == "bipolar":
            return self.clip.detach()
        return self.clip / (self.qmax if self.format.kind == "uint" else -self.qmin)

    def _round(self, x, s):
        return torch.clamp(torch.floor(x / s + 0.5), self.qmin, self.qmax)

    def forward(self, x):
        if self.format.kind == "bipolar":
            return BipolarActSTE.apply(x)
        s = self.scale()
        y = torch.clamp(x, self.qmin * s, self.qmax * s)
        return _straight_through(y, s.detach() * self._round(y.detach(), s.detach()))

    @torch.no_grad()
    def integer(self, x):
        """``(levels, scale)``: int64 levels of the format and the float step;
        ``forward(x) == scale * levels``."""
        if self.format.kind == "bipolar":
            return bipolar_sign(x).to(torch.int64), torch.ones((), dtype=x.dtype)
        s = self.scale()
        return self._round(x, s).to(torch.int64), s

    def extra_repr(self):
        return f"format={self.format.name}"
