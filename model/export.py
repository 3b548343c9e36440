"""Export a trained lowbit network to the IR, with exact integer semantics.

The network's eval form is integer-exact (:meth:`lowbit.model.arch.LowbitNet.exact_trace`): each
stage computes an integer dot product ``d``, the float64 pre-activation ``y = d * gain + bias`` per
channel, and an activation of ``y``. Batch-norm, weight scales, tile alphas and the input's
activation scale are all inside ``gain`` and ``bias`` (FINN's streamlining). The activation of a
channel is a monotone step function of ``d``, so it is a list of integer thresholds on ``d``; they
are read off that very float64 function by binary search over the reachable range of ``d``, so the
IR agrees with PyTorch on every integer by construction. Where this differs from the thresholds
that exact rational arithmetic gives, the channel's threshold is a *float tie*; ties are counted
and reported, never hidden.

A channel whose step function falls as ``d`` grows (a negative BatchNorm scale) has its weight row
negated, so the hardware only ever compares ``>=``.

Stage to ops:

- fully connected: ``[Flatten] MatMul MultiThreshold``; head: ``MatMul HostAffine ArgMax``;
- convolution: ``SlidingWindow MatMul MultiThreshold [MaxPool]``, the window padded with the
  stage's :class:`~lowbit.model.arch.Pad2d` value and strided like the convolution;
- residual block: ``Residual(body) MultiThreshold``, the body being the stage's ops above and the
  thresholds those of ``residual_act`` on the integer sum (scale ``s`` folded in as the gain);
- binary normalized: ``MatMul NormalizeSign`` (the bias becomes the per-channel offset); head:
  ``MatMul HostAffine(scale 1, shift = bias) ArgMax`` (the normalization keeps the argmax).

A post-training quantized layer (``expq`` with any q, or linear PTQ) has integer levels in its own
level table, the MatMul's format ``table:c_1,..,c_K`` (or ``ternary``/``pow2`` when the levels are
those); its fixed-point scale folds into ``gain`` like any weight scale.

The integer-only ViT has its own exporter (:mod:`lowbit.model.integer_vit_export`).
"""

import numpy as np
import torch
from torch import nn

from lowbit.compiler.ir import (BIPOLAR, ArgMax, Flatten, Graph, HostAffine, MatMul, MaxPool, MultiThreshold,
                                NormalizeSign, Residual, SlidingWindow, ValueType)
from lowbit.core.bounds import row_bounds
from lowbit.core.errors import LowbitError

from .arch import LowbitNet, input_format, residual_affine, stage_affine
from .layers import FixedLevelsConv2d
from .thresholds import step_thresholds

__all__ = ["export_model", "SUPPORTED_LAYERS"]

SUPPORTED_LAYERS = ("QuantLinear", "QuantConv2d (square, explicit Pad2d padding, any stride)",
                    "BatchNorm1d/2d", "MaxPool2d 2x2", "BinaryNormLinear", "BinaryNormConv2d",
                    "bipolar or uK activations", "residual blocks",
                    "FixedLevelsLinear/Conv2d (post-training quantized: lowbit quantize)")


def _check_conv(stage, name):
    """(kernel, stride, pad, pad value) of a stage's convolution; LowbitError where unsupported."""
    conv = stage.layer
    k, stride = conv.kernel_size, conv.stride
    if k[0] != k[1] or stride[0] != stride[1] or conv.padding != (0, 0) or conv.dilation != (1, 1) \
            or conv.groups != 1:
        raise LowbitError(f"{name}: convolution {k} stride {conv.stride} padding {conv.padding} "
                          "is not supported in hardware yet",
                          "use square kernels and strides, padding by the stage's Pad2d (the "
                          "value must suit the input format), no groups or dilation")
    pool = stage.pool
    if pool is not None and not (isinstance(pool, nn.MaxPool2d) and pool.kernel_size in (2, (2, 2))
                                 and pool.stride in (2, (2, 2)) and pool.padding in (0, (0, 0))):
        raise LowbitError(f"{name}: {pool} is not supported in hardware yet", "use MaxPool2d(2)")
    pad, value = (stage.pad.pad, stage.pad.value) if stage.pad is not None else (0, None)
    if value is not None and value != int(value):
        raise LowbitError(f"{name}: padding value {value} is not an integer level",
                          "pad bipolar maps with -1 or +1 and unsigned ones with 0")
    return k[0], stride[0], pad, None if value is None else int(value)


def _first_unsupported(model):
    """Name the first layer of a model that has no hardware form, e.g. an attention layer."""
    modules = list(model.named_modules())
    for wanted in (lambda k: "Attention" in k, lambda k: k in ("LayerNorm", "Embedding")):
        for name, module in modules:
            if wanted(type(module).__name__):
                return f"layer {name!r} ({type(module).__name__}) of a {type(model).__name__}"
    return f"a {type(model).__name__}"


def _residual_block(stage, name, body, in_type, in_scale, body_scale):
    """``[Residual(body), MultiThreshold]`` of a residual stage, its output type and scale, and
    its float ties. The thresholds are those of ``residual_act(z * s)`` over the reachable integer
    sums ``z``, read off the model's own float64 function like every other threshold."""
    if stage.pool is not None or stage.flatten:
        raise LowbitError(f"{name}: a residual block cannot pool or flatten",
                          "put skip connections only around stages that keep the shape")
    if body_scale != in_scale:
        raise LowbitError(f"{name}: a residual block adds levels of scales {body_scale} and {in_scale}",
                          "the block's activation must be the module that quantized its input")
    res = Residual(f"{name}_res", body, in_type)
    channels = body[-1].channels
    gain, bias = residual_affine(stage, in_scale, channels)
    lo = np.full(channels, res.body_type.min + in_type.min)
    hi = np.full(channels, res.body_type.max + in_type.max)
    t, flip, out_type, ties = step_thresholds(gain, bias, lo, hi, stage.residual_act)
    if flip.any():
        raise LowbitError(f"{name}: the residual activation falls as the sum grows (scale {in_scale})")
    scale = 1.0 if out_type == BIPOLAR else float(stage.residual_act.scale().detach())
    return [res, MultiThreshold(f"{name}_add_act", t, res.out_type, out_type)], out_type, scale, ties


@torch.no_grad()
def export_model(model, meta=None):
    """Export a trained network to an IR graph.

    Parameters
    ----------
    model : LowbitNet
        With quantized activations (bipolar or unsigned K-bit).
    meta : dict, optional
        Copied into the graph's metadata (input encoding, dataset, formats).

    Returns
    -------
    Graph
        Hardware ops for every stage, then the head's integer accumulators, the host affine map
        and the argmax. ``graph.meta["export"]`` reports float ties and tiled compute-once.

    Raises
    ------
    LowbitError
        On a model or layer with no hardware form; the message names it and lists the supported
        layers.
    """
    from .integer_vit import IntegerViT

    if isinstance(model, IntegerViT):
        from .integer_vit_export import export_integer_vit
        return export_integer_vit(model, meta)
    if not isinstance(model, LowbitNet):
        raise LowbitError(f"{_first_unsupported(model)}: not supported in hardware yet",
                          f"supported layers: {', '.join(SUPPORTED_LAYERS)}")
    if model.arch["weight_format"] == "fp32":
        raise LowbitError("a model with float (fp32) weights has no hardware form",
                          "train it in a low-bit format (--format), or quantize it after training: "
                          "'lowbit quantize CKPT --bits K -o OUT'")
    if not model.integer_exact:
        raise LowbitError("a model with float activations has no hardware form",
                          "train it with quantized activations: --act-bits bipolar or K")
    model.eval()
    arch = model.arch
    if arch["kind"] == "mlp":
        shape = (arch["in_features"],)
    else:
        c, h, w = arch["in_shape"]
        shape = (h, w, c)
    # The first layer's input levels are the model's input numbers (scale 1): ±1 or integer pixels.
    first = input_format(arch)
    graph_input = BIPOLAR if first.kind == "bipolar" else ValueType(first.kind, first.bits)
    in_type, in_scale = graph_input, 1.0
    nodes, ties, compute_once, stage_outputs = [], 0, {}, []
    last = len(model.stages) - 1
    for k, stage in enumerate(model.stages):
        layer = stage.layer
        conv = isinstance(layer, (nn.Conv2d, FixedLevelsConv2d))
        name = f"{'conv' if conv else 'fc'}{k}"
        iw = layer.integer_weights()
        levels = iw.levels.numpy().astype(np.int64)
        out_ch = levels.shape[0]
        if stage.flatten:
            nodes.append(Flatten(f"flatten{k}", shape, in_type))
            h, w, c = shape
            # PyTorch flattens (C, H, W); the stream order is (H, W, C).
            levels = levels.reshape(out_ch, c, h, w).transpose(0, 2, 3, 1).reshape(out_ch, -1)
            shape = (h * w * c,)
        block_start, block_type, block_scale = len(nodes), in_type, in_scale
        if conv:
            kernel, stride, pad, pad_value = _check_conv(stage, name)
            window = SlidingWindow(f"{name}_window", shape[2], kernel, stride, pad, pad_value, in_type)
            nodes.append(window)
            shape = window.out_shape(shape)
            levels = levels.transpose(0, 2, 3, 1).reshape(out_ch, -1)
        fmt = iw.format
        if k == last:
            mm = MatMul(name, levels, fmt, in_type)
            if iw.bias_levels is not None:
                scale, shift = np.ones(out_ch), iw.bias_levels.numpy().astype(np.float64)
            else:
                scale, shift = stage_affine(stage, in_scale, iw)
            nodes += [mm, HostAffine(f"{name}_affine", scale, shift), ArgMax("argmax", out_ch)]
            break
        if iw.bias_levels is not None:  # binary normalized, sign after the normalization
            b = iw.bias_levels.numpy().astype(np.int64)
            mm = MatMul(name, levels, fmt, in_type)
            nodes += [mm, NormalizeSign(f"{name}_normsign", out_ch, mm.out_type, out_ch * b - b.sum())]
            in_type, in_scale = BIPOLAR, 1.0
        else:
            gain, bias = stage_affine(stage, in_scale, iw)
            lo, hi = row_bounds(levels, in_type.min, in_type.max)
            t, flip, out_type, n_ties = step_thresholds(gain, bias, lo, hi, stage.act)
            ties += n_ties
            copies = getattr(layer, "copies", 1)
            invert = None
            if flip.any() and copies > 1:
                # The copies share one tile row, so a flipped channel keeps it and counts down:
                # #{l : -d >= T_l} = L - #{l : d >= 1 - T_l}.
                t = np.where(flip[:, None], 1 - t[:, ::-1], t)
                invert = flip
            elif flip.any():
                levels = levels.copy()
                levels[flip] *= -1
            if copies > 1:
                compute_once[name] = {"copies": copies, "used": True,
                                      "flipped_channels": int(flip.sum())}
            mm = MatMul(name, levels, fmt, in_type, copies=copies)
            nodes += [mm, MultiThreshold(f"{name}_act", t, mm.out_type, out_type, invert)]
            in_type = out_type
            in_scale = 1.0 if out_type == BIPOLAR else float(stage.act.scale().detach())
            if stage.residual_act is not None:
                block, in_type, in_scale, n_ties = _residual_block(
                    stage, name, nodes[block_start:], block_type, block_scale, in_scale)
                ties += n_ties
                nodes[block_start:] = block
        shape = mm.out_shape(shape)
        if stage.pool is not None:
            pool = MaxPool(f"{name}_pool", out_ch, 2, in_type=in_type)
            nodes.append(pool)
            shape = pool.out_shape(shape)
        stage_outputs.append(nodes[-1].name)
    info = dict(meta or {})
    info["export"] = {"float_tie_thresholds": int(ties), "tiled_compute_once": compute_once,
                      "stage_outputs": stage_outputs}
    return Graph(graph_input, (arch["in_features"],) if arch["kind"] == "mlp" else
                 (arch["in_shape"][1], arch["in_shape"][2], arch["in_shape"][0]), nodes, info)
