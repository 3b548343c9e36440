"""Architectures: every trainable network is a chain of *stages* described by a plain ``arch`` dict.

A stage is one weight layer and what follows it up to the next weight layer: its normalization
(BatchNorm, or the per-example normalization of a binary normalized layer), its activation and an
optional max pool. The exporter (``lowbit.model.export``) walks the same stages, so one list
defines both the PyTorch model and its hardware.

``arch`` keys, all kinds: ``kind``, ``classes``, ``weight_format`` (a registry name, or ``"fp32"``
for plain float weights), ``act``
(``"float"``: ReLU, the weights-only setting of the papers; ``"bipolar"``; or ``"u1"``..``"u8"``)
``p`` (tile copies for Tiled Bit Networks, bipolar weights only; None for untiled) and
``min_compress_size`` (tiled layers with fewer weights stay plain bipolar; default 64k) and
``input`` (the levels the first layer takes: ``"bipolar"``, the default, for the thermometer code;
``"uK"`` for the integer pixels themselves, K bits, fed to the model unscaled so that its integer
form sees the same numbers) and ``head_format`` (mlp and cnn: the last layer's weight format when
it differs from the network's, such as ``levels17`` for a higher-precision head; not for
``binary01`` or ``fp32`` networks; the head of a tiled network is then untiled).
A post-training quantized model (:func:`lowbit.model.ptq.ptq`) has ``weight_format`` ``"expq"``
or ``"linear-ptq"`` and ``ptq = {"method", "bits", "q"}``: its float layers are fixed-level
layers whose levels, scales and magnitude tables are in the state dict.

- ``{"kind": "mlp", "in_features": F, "hidden": [h1, h2, ...]}``: input (N, F).
- ``{"kind": "cnn", "in_shape": [C, H, W], "channels": [c1, c2, ...], "fc": [h1, ...],
  "kernel": 3, "padding": 0, "stride": 1, "pad_value": -1}``: per entry of ``channels`` a
  k x k convolution with that padding and stride, then max pooling 2 x 2; then fully connected
  layers. Input (N, C, H, W). Padding is explicit (:class:`Pad2d`) with a value the input's
  format represents: ``pad_value`` (-1 or +1) on bipolar maps, 0 on unsigned ones.
- ``"residual": True`` (mlp and cnn) adds a skip connection around every hidden stage whose
  output has the shape of its input: mlp hidden layers after the first whose width is kept; cnn
  convolutions that keep channels and size (stride 1, ``2*padding == kernel - 1``), which then
  do not pool. Such a stage's activation is the very module that quantized its input, so both
  addends are integers of one scale ``s``; the stage outputs ``residual_act(s * (h + x))``
  (bipolar: ``+1 iff h + x >= 0``). Not for binary normalized layers.
- ``{"kind": "vit", ...}``: a tiny vision transformer (``lowbit.model.transformer``) with float
  softmax, norms and residual sums; trainable, not compilable. With ``"integer": True`` the
  integer-only ViT (``lowbit.model.integer_vit``), which compiles.

The last stage is the head: its weight layer and BatchNorm give the logits (binary normalized
networks: the per-example normalization, which keeps the argmax).
"""

import numpy as np
import torch
from torch import nn

from lowbit.core.errors import LowbitError
from lowbit.core.formats import WEIGHT_FORMATS, activation_format, weight_format

from .layers import BinaryNormConv2d, BinaryNormLinear, BipolarAct, QuantAct, QuantConv2d, QuantLinear
from .quant import (DEFAULT_MIN_COMPRESS_SIZE, BinaryNormalize, BipolarActSTE, binary_normalize, normalized_sign,
                    row_scales)

__all__ = ["LowbitNet", "Stage", "NormalizedSign", "build_model", "stage_affine", "input_format", "ARCH_KINDS"]

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


class Pad2d(nn.Module):
    """Pad a feature map by ``pad`` on every side with ``value``: -1 or +1 on bipolar maps, whose
    format has no 0, and 0 on unsigned ones."""

    def __init__(self, pad, value):
        super().__init__()
        self.pad, self.value = int(pad), float(value)

    def forward(self, x):
        return nn.functional.pad(x, (self.pad,) * 4, value=self.value)

    def extra_repr(self):
        return f"pad={self.pad}, value={self.value:g}"


class Stage(nn.Module):
    """One weight layer with its normalization, activation and pooling (each may be None).

    Attributes ``layer``, ``norm``, ``act``, ``pool``, ``flatten`` (a bool: flatten a feature
    map before the layer), ``pad`` (a :class:`Pad2d` before a convolution, or None) and
    ``residual_act`` are what the exporter reads. With ``residual_act`` the stage is a residual
    block: its activation output and its input are added, and ``residual_act`` quantizes the sum.
    """

    def __init__(self, layer, norm=None, act=None, pool=None, flatten=False, *, pad=None,
                 residual_act=None):
        super().__init__()
        self.flatten = flatten
        self.layer, self.norm, self.act, self.pool = layer, norm, act, pool
        self.pad, self.residual_act = pad, residual_act

    def forward(self, x):
        if self.flatten:
            x = x.flatten(1)
        skip = x
        if self.pad is not None:
            x = self.pad(x)
        x = self.layer(x)
        for m in (self.norm, self.act):
            if m is not None:
                x = m(x)
        if self.residual_act is not None:
            x = self.residual_act(x + skip)
        if self.pool is not None:
            x = self.pool(x)
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
            skip, skip_scale = x, in_scale
            if stage.pad is not None:
                x = stage.pad(x)
            d = nn.functional.conv2d(x, w, stride=stage.layer.stride) if conv else nn.functional.linear(x, w)
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
                if stage.residual_act is not None:
                    x, in_scale = residual_exact(stage, x, in_scale, skip, skip_scale)
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


def residual_exact(stage, h, h_scale, x, x_scale):
    """(levels, scale) of a residual block's output from its body's levels ``h`` and its input
    levels ``x``: ``residual_act(s * (h + x))``, the sum exact in integers.

    ``s * (h + x)`` is evaluated as ``(h + x) * gain + bias`` with the ``gain``/``bias`` of
    :func:`residual_affine`, the same float64 operations the exporter's thresholds reproduce.
    """
    if h_scale != x_scale:
        raise LowbitError(f"a residual block adds levels of scales {h_scale} and {x_scale}",
                          "the block's activation must be the module that quantized its input")
    z = h + x
    gain, bias = residual_affine(stage, h_scale, z.shape[1])
    view = (-1, *([1] * (z.dim() - 2)))
    return _quantize_exact(stage.residual_act, z * torch.as_tensor(gain).reshape(view)
                           + torch.as_tensor(bias).reshape(view))


def residual_affine(stage, scale, channels):
    """Per-channel float64 ``(gain, bias)`` of a residual add: the sum ``z`` of two integer levels
    of scale ``scale`` is the value ``z * scale + 0``."""
    return np.full(channels, float(scale)), np.zeros(channels)


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


def _hidden_stage(a, conv, n_in, n_out, pool=False, flatten=False, *, pad=None, stride=1, skip_from=None):
    """A hidden stage; ``skip_from``: the stage before a residual block, whose output quantizer
    the block shares."""
    fmt, binary01 = a["weight_format"], a["weight_format"] == "binary01"
    layer = _weight_layer(fmt, a["p"], conv, n_in, n_out, a.get("kernel"), a["min_compress_size"])
    if stride != 1:
        layer.stride = (stride, stride)
    norm = None
    if binary01:
        if a["act"] == "float":
            norm = BinaryNormalize(1 if conv else -1)
    else:
        norm = nn.BatchNorm2d(n_out) if conv else nn.BatchNorm1d(n_out)
    act = _activation(a["act"], conv, binary01)
    residual_act = None
    if skip_from is not None:
        if binary01:
            raise LowbitError("residual blocks of binary normalized layers are not supported",
                              "drop 'residual', or use another weight format")
        act = stage_output_act(skip_from)
        residual_act = _activation(a["act"], conv, False)
    return Stage(layer, norm, act, nn.MaxPool2d(2) if pool else None, flatten, pad=pad,
                 residual_act=residual_act)


def stage_output_act(stage):
    """The module that quantizes a stage's output: its residual activation, else its activation."""
    return stage.residual_act if stage.residual_act is not None else stage.act


def _head(a, n_in, flatten=False):
    fmt = a["weight_format"]
    head = a.get("head_format") or fmt
    layer = _weight_layer(head, a["p"] if head == fmt else None, False, n_in, a["classes"], None,
                          a["min_compress_size"])
    norm = BinaryNormalize(-1) if fmt == "binary01" else nn.BatchNorm1d(a["classes"])
    return Stage(layer, norm, None, None, flatten)


def input_format(arch):
    """The activation format of the first layer's input (``arch["input"]``, bipolar by default)."""
    return activation_format(arch.get("input", "bipolar"))


def _build_stages(a):
    if a["kind"] == "vit":
        raise LowbitError("a 'vit' architecture is built by lowbit.model.transformer")
    stages = []
    if a["kind"] == "mlp":
        widths = [a["in_features"], *a["hidden"]]
        for n_in, n_out in zip(widths[:-1], widths[1:]):
            skip = stages[-1] if a["residual"] and stages and n_in == n_out else None
            stages.append(_hidden_stage(a, False, n_in, n_out, skip_from=skip))
        return [*stages, _head(a, widths[-1])]
    c, h, w = a["in_shape"]
    k, p, s = a["kernel"], a["padding"], a["stride"]
    for out_c in a["channels"]:
        oh, ow = (h + 2 * p - k) // s + 1, (w + 2 * p - k) // s + 1
        skip = stages[-1] if a["residual"] and stages and (out_c, oh, ow) == (c, h, w) else None
        # Bipolar maps (the thermometer-coded input, or bipolar activations) have no 0 to pad with.
        bipolar_in = input_format(a).kind == "bipolar" if not stages else a["act"] == "bipolar"
        pad = Pad2d(p, a["pad_value"] if bipolar_in else 0) if p else None
        stages.append(_hidden_stage(a, True, c, out_c, pool=skip is None, pad=pad, stride=s,
                                    skip_from=skip))
        c, h, w = out_c, oh, ow
        if skip is None:
            h, w = h // 2, w // 2
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
    a.setdefault("residual", False)
    if not isinstance(a["residual"], (bool, int)) or a["residual"] not in (0, 1):
        raise LowbitError(f"architecture 'residual' must be true or false, not {a['residual']!r}")
    a["residual"] = bool(a["residual"])
    if a.get("ptq") is not None:
        _check_ptq(a)
    elif a["weight_format"] != "fp32" and weight_format(a["weight_format"]).lane == "level-table":
        raise LowbitError(f"weight format {a['weight_format']!r} is the level table of a post-training "
                          "quantized layer, not a format to train",
                          "train --format fp32, then 'lowbit quantize CKPT --bits K -o OUT'")
    if a["act"] != "float":
        activation_format(a["act"])
    if "input" in a and (a["input"] == "float" or input_format(a).kind == "int"):
        raise LowbitError(f"architecture 'input' must be 'bipolar' or 'u1'..'u8', not {a['input']!r}")
    if a.get("head_format") is not None:
        _check_head_format(a)
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
        for key, default, minimum in (("padding", 0, 0), ("stride", 1, 1)):
            v = a.setdefault(key, default)
            if not isinstance(v, int) or isinstance(v, bool) or v < minimum:
                raise LowbitError(f"architecture {key!r} must be an integer >= {minimum}, not {v!r}")
        if a["padding"] >= a["kernel"]:
            raise LowbitError(f"architecture 'padding' {a['padding']} must be less than the kernel "
                              f"{a['kernel']}", "use padding (kernel - 1) // 2 for 'same' convolutions")
        a.setdefault("pad_value", -1)
        if a["pad_value"] not in (-1, 1) or isinstance(a["pad_value"], bool):
            raise LowbitError(f"architecture 'pad_value' pads bipolar maps and must be -1 or +1, "
                              f"not {a['pad_value']!r}")
    return a


def _check_head_format(a):
    """``head_format``: a trainable level-set format for the last layer of an mlp or cnn."""
    head = a["head_format"]
    if a["kind"] == "vit" or a["weight_format"] in ("fp32", "binary01") or a.get("ptq") is not None:
        raise LowbitError(f"a head format ({head!r}) is for mlp and cnn networks of the level-set formats, "
                          f"not a {a['kind']} of weight format {a['weight_format']!r}", "drop --head-format")
    trainable = [f for f, spec in WEIGHT_FORMATS.items() if spec.lane != "level-table" and f != "binary01"]
    if head not in trainable:
        raise LowbitError(f"the head format must be a trainable level-set format, not {head!r}",
                          f"use one of: {', '.join(trainable)}")


def _check_ptq(a):
    """A post-training quantized model: ``ptq = {"method", "bits", "q"}`` and the method's format."""
    from .ptq import PTQ_FORMATS

    ptq = a["ptq"]
    if not isinstance(ptq, dict) or ptq.get("method") not in PTQ_FORMATS or \
            ptq.get("bits") not in (2, 3, 4, 5, 6) or isinstance(ptq.get("bits"), bool):
        raise LowbitError(f"architecture 'ptq' must be {{'method': 'exponential' or 'linear', "
                          f"'bits': 2..6}}, not {ptq!r}", "re-create the checkpoint with 'lowbit quantize'")
    if a["weight_format"] != PTQ_FORMATS[ptq["method"]]:
        raise LowbitError(f"a {ptq['method']} PTQ model has weight format "
                          f"{PTQ_FORMATS[ptq['method']]!r}, not {a['weight_format']!r}",
                          "re-create the checkpoint with 'lowbit quantize'")


def build_model(arch):
    """Build the model an ``arch`` dict describes (as stored in a checkpoint).

    A post-training quantized model (``arch["ptq"]``, see :func:`lowbit.model.ptq.ptq`) is its
    float architecture with every float weight layer replaced by an empty fixed-level layer; the
    checkpoint's state dict fills in the levels, scales and magnitude tables.
    """
    a = _check_arch(arch)
    if a.get("ptq") is not None:
        from .ptq import fixed_levels_model

        model = build_model({k: v for k, v in a.items() if k != "ptq"} | {"weight_format": "fp32"})
        model = fixed_levels_model(model, a["ptq"]["bits"])
        model.arch = a
        return model
    if a["kind"] == "vit" and a.get("integer"):
        from .integer_vit import IntegerViT
        return IntegerViT(a)
    if a["kind"] == "vit":
        from .transformer import build_vit
        return build_vit(a)
    return LowbitNet(a)
