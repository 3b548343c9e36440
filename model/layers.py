"""Low-bit layers.

Every quantized layer keeps float latent weights (the shadow copy the optimizer updates) and
quantizes them in each forward pass; ``integer_weights()`` gives the exact integer levels and scales
that the exporter reads. ``clip_latent()`` keeps the latent weights in [-1, 1] after each optimizer
step: every quantizer here is invariant to the overall scale of the latent weights, so the clip
costs nothing and keeps the straight-through gradient meaningful.
"""

import torch
from torch import nn

from lowbit.core.errors import LowbitError
from lowbit.core.formats import format_for_magnitudes
from lowbit.core.formats import weight_format as lookup_weight_format

from .quant import (DEFAULT_MIN_COMPRESS_SIZE, ActivationQuantizer, Binary01Quantizer, BinaryNormalize,
                    BipolarActSTE, IntegerWeights, TiledQuantizer, weight_quantizer)

__all__ = ["QuantLinear", "QuantConv2d", "BipolarAct", "QuantAct",
           "BinaryNormLinear", "BinaryNormConv2d", "BinaryNormEmbedding", "FixedLevelsLinear",
           "FixedLevelsConv2d"]


class _QuantWeights:
    """Shared weight quantization of :class:`QuantLinear` and :class:`QuantConv2d`."""

    def _setup_quant(self, weight_format, granularity, tiled, p, min_compress_size):
        self.format = lookup_weight_format(weight_format)
        self.tiled = bool(tiled)
        if self.tiled:
            if self.format.name != "bipolar":
                raise LowbitError(f"tiled weights are bipolar, not {self.format.name!r}",
                                  "use weight_format='bipolar' with tiled=True")
            if granularity not in (None, "none"):
                raise LowbitError(f"tiled weights have one scale per copy, not granularity {granularity!r}",
                                  "leave granularity unset with tiled=True")
            self.quantizer = TiledQuantizer(self.weight.shape, p, min_compress_size)
        else:
            if p is not None:
                raise LowbitError(f"tile count p={p!r} given for an untiled layer", "add tiled=True")
            self.quantizer = weight_quantizer(self.format.name, granularity)
        with torch.no_grad():
            # Small latent weights: every level can still change early in training.
            self.weight.uniform_(-0.1, 0.1)

    @property
    def granularity(self):
        """Scale granularity: ``"none"``, ``"tensor"``, ``"channel"``, or ``"tile"`` for tiled layers."""
        return "tile" if self.tiled else getattr(self.quantizer, "granularity", "none")

    @property
    def copies(self):
        """p for a compressed tiled layer, else 1."""
        return self.quantizer.p if self.tiled else 1

    def quantized_weight(self):
        return self.quantizer.quantize(self.weight)

    def integer_weights(self):
        """The exact integer levels and scale(s): a :class:`lowbit.model.quant.IntegerWeights`."""
        return self.quantizer.integer(self.weight)

    def tile(self):
        """The tile T (N/p values ±1) of a tiled layer."""
        self._need_tiled("tile")
        return self.quantizer.tile(self.weight)

    def alphas(self):
        """The p per-copy scales of a tiled layer."""
        self._need_tiled("alphas")
        return self.quantizer.alphas(self.weight)

    def _need_tiled(self, what):
        if not self.tiled:
            raise ValueError(f"{what}() needs a layer built with tiled=True")

    @torch.no_grad()
    def clip_latent(self):
        self.weight.clamp_(-1.0, 1.0)

    def _quant_repr(self):
        if self.tiled:
            return f"format={self.format.name}, tiled p={self.copies}"
        if self.granularity == self.format.scale:
            return f"format={self.format.name}"
        return f"format={self.format.name}, granularity={self.granularity}"


class QuantLinear(_QuantWeights, nn.Linear):
    """A bias-free linear layer whose weights are quantized to a low-bit format in the forward pass.

    Parameters
    ----------
    in_features, out_features : int
        Layer shape.
    weight_format : str
        A name from ``lowbit.core.formats.WEIGHT_FORMATS``.
    granularity : {None, "none", "tensor", "channel"}
        Scale granularity; None takes the registry's default for the format.
    tiled : bool
        Tiled Bit Networks weights (``bipolar`` only): one tile repeated ``p`` times.
    p : int
        Tile copies; must divide in_features * out_features. For reuse of ``T · x`` in hardware,
        it should also divide out_features.
    min_compress_size : int
        Tiled layers with fewer weights stay plain bipolar.

    Raises
    ------
    LowbitError
        If the format is unknown, the granularity does not suit it, or the tiling is invalid.
    """

    def __init__(self, in_features, out_features, weight_format="bipolar", *, granularity=None,
                 tiled=False, p=None, min_compress_size=DEFAULT_MIN_COMPRESS_SIZE):
        nn.Linear.__init__(self, in_features, out_features, bias=False)
        self._setup_quant(weight_format, granularity, tiled, p, min_compress_size)

    def forward(self, x):
        return nn.functional.linear(x, self.quantized_weight())

    def extra_repr(self):
        return f"{nn.Linear.extra_repr(self)}, {self._quant_repr()}"


class QuantConv2d(_QuantWeights, nn.Conv2d):
    """A bias-free 2-D convolution with quantized weights; the parameters of :class:`QuantLinear`
    plus those of ``nn.Conv2d``. Per-channel scales are per output channel."""

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0,
                 weight_format="bipolar", *, granularity=None, tiled=False, p=None,
                 min_compress_size=DEFAULT_MIN_COMPRESS_SIZE):
        nn.Conv2d.__init__(self, in_channels, out_channels, kernel_size, stride=stride,
                           padding=padding, bias=False)
        self._setup_quant(weight_format, granularity, tiled, p, min_compress_size)

    def forward(self, x):
        return self._conv_forward(x, self.quantized_weight(), None)

    def extra_repr(self):
        return f"{nn.Conv2d.extra_repr(self)}, {self._quant_repr()}"


class BipolarAct(nn.Module):
    """Sign activation onto {-1, +1}, with a hardtanh gradient."""

    def forward(self, x):
        return BipolarActSTE.apply(x)


class QuantAct(ActivationQuantizer):
    """Activation quantizer module: ``QuantAct("u4")``, ``QuantAct("s4")``, ``QuantAct("bipolar")``.

    See :class:`lowbit.model.quant.ActivationQuantizer` for the rounding, the clip and the gradient.
    """


class _BinaryNorm:
    """Shared {0,1} weight and bias quantization of the binary normalized layers."""

    quantizer = Binary01Quantizer()
    format = lookup_weight_format("binary01")

    def _init_latent(self):
        with torch.no_grad():
            self.weight.uniform_(-0.1, 0.1)
            if getattr(self, "bias", None) is not None:
                self.bias.uniform_(-0.1, 0.1)

    def quantized_parameters(self):
        """``(w_q, b_q)`` with values in {0, 1}, straight-through to the latent parameters."""
        return self.quantizer.quantize_pair(self.weight, getattr(self, "bias", None))

    def integer_weights(self):
        """{0,1} levels of the weight and the bias (``bias_levels``); scale 1."""
        return self.quantizer.integer(self.weight, getattr(self, "bias", None))

    @torch.no_grad()
    def clip_latent(self):
        for p in self.parameters(recurse=False):
            p.clamp_(-1.0, 1.0)


class BinaryNormLinear(_BinaryNorm, nn.Linear):
    """Binary normalized fully connected layer: ``Normalize(W_q x + b_q)``, W_q and b_q in {0,1}.

    The threshold of both is the mean of the layer's weight and bias together. With
    {0,1} = (1 + S)/2, ``W_q x + b_q = (S x + 2 b_q + sum(x)) / 2``, and the per-example
    normalization removes the common term and the factor, so the layer equals
    ``Normalize(S x + 2 b_q)``; a sign after it is exact in integers (:func:`normalized_sign`).

    Parameters
    ----------
    in_features, out_features : int
    normalize : bool
        Apply the normalization (over the output features of each example). Turn it off only for
        a layer whose raw sums are wanted, such as logits.
    eps : float
    """

    def __init__(self, in_features, out_features, *, normalize=True, eps=1e-5):
        nn.Linear.__init__(self, in_features, out_features, bias=True)
        self._init_latent()
        self.norm = BinaryNormalize(-1, eps) if normalize else nn.Identity()

    def forward(self, x):
        w, b = self.quantized_parameters()
        return self.norm(nn.functional.linear(x, w, b))

    def extra_repr(self):
        return f"{nn.Linear.extra_repr(self)}, format=binary01"


class BinaryNormConv2d(_BinaryNorm, nn.Conv2d):
    """Binary normalized convolution: {0,1} kernels and biases, then a per-example normalization
    over the output channels at each pixel (dimension 1).

    Normalizing each pixel's channels, as a channel-last layer norm does, keeps the operation
    local: the hardware can normalize each output pixel as it streams out, with n = out_channels.
    """

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, *,
                 normalize=True, eps=1e-5):
        nn.Conv2d.__init__(self, in_channels, out_channels, kernel_size, stride=stride,
                           padding=padding, bias=True)
        self._init_latent()
        self.norm = BinaryNormalize(1, eps) if normalize else nn.Identity()

    def forward(self, x):
        w, b = self.quantized_parameters()
        return self.norm(self._conv_forward(x, w, b))

    def extra_repr(self):
        return f"{nn.Conv2d.extra_repr(self)}, format=binary01"


class BinaryNormEmbedding(_BinaryNorm, nn.Embedding):
    """Binary normalized embedding: {0,1} vectors (no bias), each normalized over its features.

    The quantization threshold is the mean of the whole table.
    """

    def __init__(self, num_embeddings, embedding_dim, *, normalize=True, eps=1e-5):
        nn.Embedding.__init__(self, num_embeddings, embedding_dim)
        self._init_latent()
        self.norm = BinaryNormalize(-1, eps) if normalize else nn.Identity()

    def forward(self, idx):
        w, _ = self.quantized_parameters()
        return self.norm(nn.functional.embedding(idx, w))

    def extra_repr(self):
        return f"{nn.Embedding.extra_repr(self)}, format=binary01"


class _FixedLevels:
    """Shared fixed integer weights of :class:`FixedLevelsLinear` and :class:`FixedLevelsConv2d`.

    The weight is ``scale * levels`` with int64 ``levels`` in ``{0, ±magnitudes}`` and one float64
    ``scale``, all buffers (they are in the state dict, not trained). ``bits`` is the storage
    budget per weight of the post-training quantization that made them.
    """

    def _setup_levels(self, shape, bits, magnitudes):
        if not isinstance(bits, int) or isinstance(bits, bool) or not 2 <= bits <= 6:
            raise LowbitError(f"fixed-level weights take 2 to 6 bits, not {bits!r}")
        self.bits = bits
        # Placeholders until set_levels or a state dict fills them: all weights zero.
        self.register_buffer("levels", torch.zeros(shape, dtype=torch.int64))
        self.register_buffer("scale", torch.tensor(1.0, dtype=torch.float64))
        self.register_buffer("magnitudes", torch.arange(1, magnitudes + 1, dtype=torch.int64))

    @torch.no_grad()
    def set_levels(self, levels, scale, magnitudes):
        """Set the integer levels, their scale and the layer's magnitude table (ascending)."""
        levels = torch.as_tensor(levels, dtype=torch.int64)
        magnitudes = torch.as_tensor(sorted(int(c) for c in magnitudes), dtype=torch.int64)
        if levels.shape != self.levels.shape or magnitudes.shape != self.magnitudes.shape:
            raise LowbitError(f"levels {tuple(levels.shape)} and {len(magnitudes)} magnitudes do not fit "
                              f"a layer of {tuple(self.levels.shape)} weights and {len(self.magnitudes)} "
                              "magnitudes")
        self.levels.copy_(levels)
        self.scale.fill_(float(scale))
        self.magnitudes.copy_(magnitudes)

    @property
    def format(self):
        """The layer's weight format: its level table, or the registry format with those levels."""
        return format_for_magnitudes(self.magnitudes.tolist())

    @property
    def weight(self):
        """The quantized weight ``scale * levels`` (float64 product, then the layer's dtype)."""
        return (self.scale * self.levels.to(torch.float64)).to(torch.get_default_dtype())

    tiled = False
    copies = 1

    def integer_weights(self):
        """The exact integer levels and the one scale: a :class:`lowbit.model.quant.IntegerWeights`."""
        if self.bias is not None:
            raise LowbitError("a fixed-level layer with a float bias has no integer form",
                              "build the layer without a bias")
        fmt = self.format
        if not torch.isin(self.levels, torch.as_tensor(fmt.levels)).all():
            raise LowbitError(f"the levels of a fixed-level layer are not all in its format {fmt.name!r}")
        return IntegerWeights(fmt.name, self.levels, self.scale)

    def _levels_repr(self):
        return f"bits={self.bits}, format={self.format.name}"


class FixedLevelsLinear(_FixedLevels, nn.Module):
    """A linear layer with fixed integer weights ``scale * levels``: a post-training quantized
    ``nn.Linear`` (:func:`lowbit.model.ptq.ptq`).

    Parameters
    ----------
    in_features, out_features : int
    bits : int
        Storage bits per weight, 2 to 6.
    magnitudes : int
        Size K of the magnitude table, ``2**(bits-1) - 1`` for PTQ.
    bias : bool
        Keep a float bias (no integer form; lowbit's architectures have none).
    """

    def __init__(self, in_features, out_features, bits, magnitudes, *, bias=False):
        nn.Module.__init__(self)
        self.in_features, self.out_features = in_features, out_features
        self._setup_levels((out_features, in_features), bits, magnitudes)
        self.bias = nn.Parameter(torch.zeros(out_features)) if bias else None

    def forward(self, x):
        return nn.functional.linear(x, (self.scale * self.levels.to(torch.float64)).to(x.dtype), self.bias)

    def extra_repr(self):
        return f"in_features={self.in_features}, out_features={self.out_features}, {self._levels_repr()}"


class FixedLevelsConv2d(_FixedLevels, nn.Module):
    """A 2-D convolution with fixed integer weights ``scale * levels``: a post-training quantized
    ``nn.Conv2d``; the parameters of :class:`FixedLevelsLinear` plus the convolution's."""

    def __init__(self, in_channels, out_channels, kernel_size, bits, magnitudes, *, stride=1, padding=0,
                 dilation=1, groups=1, bias=False):
        nn.Module.__init__(self)
        def pair(v):
            return tuple(v) if isinstance(v, (tuple, list)) else (v, v)

        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size, self.stride = pair(kernel_size), pair(stride)
        self.padding, self.dilation, self.groups = pair(padding), pair(dilation), groups
        self._setup_levels((out_channels, in_channels // groups, *self.kernel_size), bits, magnitudes)
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None

    def forward(self, x):
        w = (self.scale * self.levels.to(torch.float64)).to(x.dtype)
        return nn.functional.conv2d(x, w, self.bias, self.stride, self.padding, self.dilation, self.groups)

    def extra_repr(self):
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
                f"stride={self.stride}, {self._levels_repr()}")
