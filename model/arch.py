"""Architectures: every trainable network is a chain of *stages* described by a plain ``arch`` dict.

A stage is one weight layer and what follows it up to the next weight layer: its normalization
(BatchNorm, or the per-example normalization of a binary normalized layer), its activation and an
optional max pool. The exporter (``lowbit.compiler.export``) walks the same stages, so one list
defines both the PyTorch model and its hardware.

``arch`` keys, all kinds: ``kind``, ``classes``, ``weight_format`` (a registry name, or ``"fp32"``
for plain float weights), ``act``
(``"float"``: ReLU, the weights-only setting of the papers; ``"bipolar"``; or ``"u1"``..``"u8"``)
``p`` (tile copies for Tiled Bit Networks, bipolar weights only; None for untiled) and
``min_compress_size`` (tiled layers with fewer weights stay plain bipolar; default 64k).

- ``{"kind": "mlp", "in_features": F, "hidden": [h1, h2, ...]}``: input (N, F).
- ``{"kind": "cnn", "in_shape": [C, H, W], "channels": [c1, c2, ...], "fc": [h1, ...],
  "kernel": 3}``: per entry of ``channels`` a k x k convolution without padding, then max
  pooling 2 x 2; then fully connected layers. Input (N, C, H, W).
- ``{"kind": "vit", ...}``: a tiny vision transformer (``lowbit.model.transformer``); trainable,
  not compilable to hardware yet.

The last stage is the head: its weight layer and BatchNorm give the logits (binary normalized
networks: the per-example normalization, which keeps the argmax).
"""

import numpy as np
import torch
from torch import nn

from lowbit.errors import LowbitError
from lowbit.formats import activation_format, weight_format

from .layers import BinaryNormConv2d, BinaryNormLinear, BipolarAct, QuantAct, QuantConv2d, QuantLinear
from .quant import DEFAULT_MIN_COMPRESS_SIZE, BinaryNormalize, BipolarActSTE, binary_normalize, normalized_sign

__all__ = ["LowbitNet", "Stage", "NormalizedSign", "build_model", "stage_affine", "ARCH_KINDS"]

ARCH_KINDS = ("mlp", "cnn", "vit")


class NormalizedSign(nn.Module):
    """``sign(normalize(z))`` over ``dim``: straight-through while training; in eval mode the exact
    integer form ``sign(n*z_i - sum_j z_j)``, which a float normalization gets wrong on exact ties.
    """

    def __init__(self, dim=-1):
        super().__init__()
        self.dim = dim

    def forward(self, z):
        if self.training:
            return BipolarActSTE.apply(binary_normalize(z, self.dim))
        return normalized_sign(torch.round(z), self.dim)

    def extra_repr(self):
        return f"dim={self.dim}"


class Stage(nn.Module):
    """One weight layer with its normalization, activation and pooling (each may be None).

    Attributes ``layer``, ``norm``, ``act``, ``pool`` and ``flatten`` (a bool: flatten a feature
    map before the layer) are what the exporter reads.
    """

    def __init__(self, layer, norm=None, act=None, pool=None, flatten=False):
        super().__init__()
        self.flatten = flatten
        self.layer, self.norm, self.act, self.pool = layer, norm, act, pool

    def forward(self, x):
        if self.flatten:
            x = x.flatten(1)
        x = self.layer(x)
        for m in (self.norm, self.act, self.pool):
            if m is not None:
                x = m(x)
        return x


def _activation(act, conv, binary01):
    """The activation module of a hidden stage (``binary01``: after a per-example normalization)."""
    if act == "float":
        return nn.ReLU()
    fmt = activation_format(act)
    if binary01:
        if fmt.kind != "bipolar":
            raise LowbitError(f"binary normalized layers take 'bipolar' or 'float' activations, not {act!r}",
                              "a k-bit quantizer after a per-example normalization has no integer "
                              "form; use --act-bits bipolar")
        return NormalizedSign(1 if conv else -1)
    if fmt.kind == "int":
        raise LowbitError(f"hidden activations are bipolar or unsigned, not {act!r}",
                          "use 'bipolar' or 'u1'..'u8'")
    return BipolarAct() if fmt.kind == "bipolar" else QuantAct(act)


class LowbitNet(nn.Module):
    """A chain of :class:`Stage`; see the module docstring for ``arch``.

    In eval mode a network with quantized activations runs its *integer-exact* form
    (:meth:`exact_trace`), the definition of the deployed model that the IR reproduces bit for
    bit; in training mode (and for float activations) it runs the float straight-through form.
    """

    def __init__(self, arch):
        super().__init__()
        self.arch = _check_arch(arch)
        self.stages = nn.ModuleList(_build_stages(self.arch))

    @property
    def integer_exact(self):
        """True when the weights and every activation are quantized: the network has an integer form."""
        return self.arch["act"] != "float" and self.arch["weight_format"] != "fp32"

    def forward(self, x):
        return self.trace(x)[-1]

    def trace(self, x):
        """Every stage's output: the activations of each hidden stage, then the logits.

        In eval mode with quantized activations the hidden outputs are integer levels (±1, or
        0..2**K-1) and the logits float64; see :meth:`exact_trace`.
        """
        if not self.training and self.integer_exact:
            return self.exact_trace(x)
        outs = []
        for stage in self.stages:
            x = stage(x)
            outs.append(x)
        return outs

    @torch.no_grad()
    def exact_trace(self, x):
        """The integer-exact form of the network, stage by stage.

        Each stage computes the integer dot product ``d`` of its integer input levels with its
        integer weight levels (exact in float64), then ``y = d * gain + bias`` per output channel
        in float64, with ``gain`` and ``bias`` from :func:`stage_affine` (the weight scale, the
        input's activation scale and the BatchNorm folded together), then its activation on ``y``:
        ``+1 iff y >= 0``, or ``clamp(floor(y / s + 1/2), 0, 2**K - 1)``. Binary normalized
        stages take ``sign(n*z_i - sum_j z_j)`` of ``z = d + bias levels``. Max pooling takes the
        max of the levels. Because every step is an exactly specified float64 operation on an
        integer, the exporter reproduces it for every reachable ``d`` and reads off integer
        thresholds.
        """
        x = torch.as_tensor(x).to(torch.float64)
        in_scale, outs = 1.0, []
        for k, stage in enumerate(self.stages):
            head = k == len(self.stages) - 1
            if stage.flatten:
                x = x.flatten(1)
            iw = stage.layer.integer_weights()
            w = iw.levels.to(torch.float64)
            conv = w.dim() == 4
            d = nn.functional.conv2d(x, w) if conv else nn.functional.linear(x, w)
            if iw.bias_levels is not None:
                d = d + iw.bias_levels.to(torch.float64).reshape(-1, *([1] * (d.dim() - 2)))
                if head:
                    outs.append(d)  # the normalization keeps the argmax; raw sums are exact
                    break
                x, in_scale = stage.act(d), 1.0
            else:
                gain, bias = stage_affine(stage, in_scale, iw)
                view = (-1, *([1] * (d.dim() - 2)))
                y = d * torch.as_tensor(gain).reshape(view) + torch.as_tensor(bias).reshape(view)
                if head:
                    outs.append(y)
                    break
                x, in_scale = _quantize_exact(stage.act, y)
            if stage.pool is not None:
                x = stage.pool(x)
            outs.append(x)
        return outs

    def clip_latent(self):
        for m in self.modules():
            if m is not self and hasattr(m, "clip_latent"):
                m.clip_latent()

    @property
    def weight_layers(self):
        return [s.layer for s in self.stages]


def _quantize_exact(act, y):
    """(levels, scale) of an activation applied to float64 pre-activations ``y``."""
    if isinstance(act, BipolarAct):
        return torch.where(y >= 0, 1.0, -1.0).to(torch.float64), 1.0
    if isinstance(act, QuantAct):
        s = float(act.scale().detach())
        q = torch.clamp(torch.floor(y / s + 0.5), act.qmin, act.qmax)
        return q, s
    raise LowbitError(f"a {type(act).__name__} activation has no integer form",
                      "train with quantized activations (--act-bits bipolar or K)")


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


def stage_affine(stage, in_scale, iw=None):
    """Per-channel float64 ``(gain, bias)``: the stage's pre-activation is ``d * gain + bias``.

    ``d`` is the integer dot product of the input levels and the weight levels; ``gain`` folds
    the input's activation scale, the weight scale of the row and the BatchNorm's
    ``gamma / sqrt(var + eps)``, ``bias`` the BatchNorm's ``beta - mean * gamma / sqrt(var + eps)``.
    ``iw`` is the layer's ``integer_weights()`` when the caller already has it.
    """
    iw = iw if iw is not None else stage.layer.integer_weights()
    rows = iw.levels.shape[0]
    gain = float(in_scale) * row_scales(iw, rows)
    bias = np.zeros(rows)
    norm = stage.norm
    if isinstance(norm, (nn.BatchNorm1d, nn.BatchNorm2d)):
        a = norm.weight.detach().double().numpy() / np.sqrt(norm.running_var.double().numpy() + norm.eps)
        gain = gain * a
        bias = norm.bias.detach().double().numpy() - norm.running_mean.double().numpy() * a
    elif norm is not None:
        raise LowbitError(f"a {type(norm).__name__} after {type(stage.layer).__name__} has no integer form")
    return gain, bias


def _weight_layer(fmt, p, conv, n_in, n_out, kernel=None, min_compress_size=DEFAULT_MIN_COMPRESS_SIZE):
    tiled = p is not None
    if fmt == "fp32":  # the float baseline, and the input of post-training quantization
        return nn.Conv2d(n_in, n_out, kernel, bias=False) if conv else nn.Linear(n_in, n_out, bias=False)
    if fmt == "binary01":
        if conv:
            return BinaryNormConv2d(n_in, n_out, kernel, normalize=False)
        return BinaryNormLinear(n_in, n_out, normalize=False)
    if conv:
        return QuantConv2d(n_in, n_out, kernel, weight_format=fmt, tiled=tiled, p=p,
                           min_compress_size=min_compress_size)
    return QuantLinear(n_in, n_out, fmt, tiled=tiled, p=p, min_compress_size=min_compress_size)


def _hidden_stage(a, conv, n_in, n_out, pool=False, flatten=False):
    fmt, binary01 = a["weight_format"], a["weight_format"] == "binary01"
    layer = _weight_layer(fmt, a["p"], conv, n_in, n_out, a.get("kernel"), a["min_compress_size"])
    norm = None
    if binary01:
        if a["act"] == "float":
            norm = BinaryNormalize(1 if conv else -1)
    else:
        norm = nn.BatchNorm2d(n_out) if conv else nn.BatchNorm1d(n_out)
    act = _activation(a["act"], conv, binary01)
    return Stage(layer, norm, act, nn.MaxPool2d(2) if pool else None, flatten)


def _head(a, n_in, flatten=False):
    fmt = a["weight_format"]
    layer = _weight_layer(fmt, a["p"], False, n_in, a["classes"], None, a["min_compress_size"])
    norm = BinaryNormalize(-1) if fmt == "binary01" else nn.BatchNorm1d(a["classes"])
    return Stage(layer, norm, None, None, flatten)


def _build_stages(a):
    if a["kind"] == "vit":
        raise LowbitError("a 'vit' architecture is built by lowbit.model.transformer")
    stages = []
    if a["kind"] == "mlp":
        widths = [a["in_features"], *a["hidden"]]
        for n_in, n_out in zip(widths[:-1], widths[1:]):
            stages.append(_hidden_stage(a, False, n_in, n_out))
        return [*stages, _head(a, widths[-1])]
    c, h, w = a["in_shape"]
    k = a["kernel"]
    for out_c in a["channels"]:
        stages.append(_hidden_stage(a, True, c, out_c, pool=True))
        c, h, w = out_c, (h - k + 1) // 2, (w - k + 1) // 2
        if h < 1 or w < 1:
            raise LowbitError(f"the input {a['in_shape']} is too small for {len(a['channels'])} "
                              f"{k}x{k} convolutions with 2x2 pooling", "use fewer conv layers")
    n, flatten = c * h * w, True
    for width in a["fc"]:
        stages.append(_hidden_stage(a, False, n, width, flatten=flatten))
        n, flatten = width, False
    return [*stages, _head(a, n, flatten)]


def _positive_ints(arch, key, allow_empty=True):
    v = arch.get(key)
    if not isinstance(v, (list, tuple)) or (not v and not allow_empty) or \
            any(not isinstance(x, int) or isinstance(x, bool) or x < 1 for x in v):
        raise LowbitError(f"architecture {key!r} must be a list of positive integers, not {v!r}")
    return [int(x) for x in v]


def _check_arch(arch):
    """Validate an ``arch`` dict and fill in defaults; returns a new dict."""
    if not isinstance(arch, dict):
        raise LowbitError(f"an architecture is a dict, not {type(arch).__name__}")
    a = dict(arch)
    if a.get("kind") not in ARCH_KINDS:
        raise LowbitError(f"unknown architecture kind {a.get('kind')!r}",
                          f"supported kinds: {', '.join(ARCH_KINDS)}")
    a.setdefault("weight_format", "bipolar")
    a.setdefault("act", "bipolar")
    a.setdefault("p", None)
    a.setdefault("min_compress_size", DEFAULT_MIN_COMPRESS_SIZE)
    if a["weight_format"] != "fp32":
        weight_format(a["weight_format"])
    if a["act"] != "float":
        activation_format(a["act"])
    if a["p"] is not None and a["weight_format"] != "bipolar":
        raise LowbitError(f"tiled weights (p={a['p']}) are bipolar, not {a['weight_format']!r}",
                          "use weight format 'bipolar' with p, or drop p")
    if not isinstance(a.get("classes"), int) or a["classes"] < 2:
        raise LowbitError(f"architecture 'classes' must be an integer >= 2, not {a.get('classes')!r}")
    if a["kind"] == "mlp":
        if not isinstance(a.get("in_features"), int) or a["in_features"] < 1:
            raise LowbitError(f"architecture 'in_features' must be a positive integer, "
                              f"not {a.get('in_features')!r}")
        a["hidden"] = _positive_ints(a, "hidden")
    elif a["kind"] == "cnn":
        a["in_shape"] = _positive_ints(a, "in_shape", allow_empty=False)
        if len(a["in_shape"]) != 3:
            raise LowbitError(f"architecture 'in_shape' must be [C, H, W], not {a['in_shape']}")
        a["channels"] = _positive_ints(a, "channels", allow_empty=False)
        a.setdefault("fc", [])
        a["fc"] = _positive_ints(a, "fc")
        a.setdefault("kernel", 3)
    return a


def build_model(arch):
    """Build the model an ``arch`` dict describes (as stored in a checkpoint)."""
    a = _check_arch(arch)
    if a["kind"] == "vit":
        from .transformer import build_vit
        return build_vit(a)
    return LowbitNet(a)
