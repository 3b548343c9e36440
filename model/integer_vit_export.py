"""Export an integer-only ViT (:class:`~lowbit.model.integer_vit.IntegerViT`) to the IR.

Every integer operator of the model becomes the IR op whose reference it already runs:

- patch embedding: ``SlidingWindow(patch, stride patch) MatMul MultiThreshold`` (signed levels of
  the residual stream), then ``PositionAdd``;
- each block: ``Residual(NormalizeLevels MatMul MultiThreshold Attention MatMul MultiThreshold)``
  and ``Residual(NormalizeLevels MatMul MultiThreshold MatMul MultiThreshold)``;
- head: ``NormalizeLevels Flatten MatMul HostAffine ArgMax``, the MatMul's weights the head's
  repeated once per token, which sums the tokens as the model does.

With binary01 weights each ``MatMul MultiThreshold`` is ``MatMul PositionAdd NormalizeLevels``
instead: the {0,1} weights' sums, the {0,1} bias added to every token, then the per-token
normalization and the next quantizer (a binary01 head's bias goes to the host's shift).

The thresholds are read off the model's own float64 requantization by
:func:`~lowbit.model.thresholds.step_thresholds`, as for the other networks, so the IR agrees with the
model on every integer by construction; float ties are counted and reported.
"""

import numpy as np
import torch

from lowbit.compiler.ir import (BIPOLAR, ArgMax, Flatten, Graph, HostAffine, MatMul, MultiThreshold, PositionAdd,
                                Residual, SlidingWindow, ValueType)
from lowbit.core.bounds import row_bounds

from .arch import input_format
from .integer_vit import ATTN_FRAC_BITS, normalize_op
from .quant import row_scales
from .thresholds import step_thresholds

__all__ = ["export_integer_vit"]


def _requantize(name, projection, levels, in_type, in_scale, quantizers):
    """``[MatMul, MultiThreshold]`` of a projection with inputs of ``in_type`` and step
    ``in_scale``, each output channel requantized by its quantizer, and the float ties."""
    iw = projection.layer.integer_weights()
    gain = row_scales(iw, levels.shape[0]) * projection.gain * float(in_scale)
    lo, hi = row_bounds(levels, in_type.min, in_type.max)
    parts, start = [], 0
    for quant, count in quantizers:
        rows = slice(start, start + count)
        parts.append(step_thresholds(gain[rows], np.zeros(count), lo[rows], hi[rows], quant))
        start += count
    thresholds = np.concatenate([t for t, *_ in parts])
    flip = np.concatenate([f for _, f, *_ in parts])
    if flip.any():  # a negative gain: the row compares -d
        levels = levels.copy()
        levels[flip] *= -1
    mm = MatMul(name, levels, iw.format, in_type)
    return [mm, MultiThreshold(f"{name}_act", thresholds, mm.out_type, parts[0][2])], sum(p[3] for p in parts)


def _normalized(name, projection, levels, in_type, quantizer, tokens):
    """``[MatMul, PositionAdd, NormalizeLevels]`` of a binary01 projection (module docstring)."""
    mm = MatMul(name, levels, "binary01", in_type)
    bias = projection.layer.integer_weights().bias_levels.numpy().astype(np.int64)
    add = PositionAdd(f"{name}_bias", np.tile(bias, (tokens, 1)), mm.out_type)
    return [mm, add, normalize_op(f"{name}_norm", quantizer, len(bias), add.out_type)]


def _levels(projection):
    return projection.layer.integer_weights().levels.numpy().astype(np.int64)


@torch.no_grad()
def export_integer_vit(model, meta=None):
    """The IR graph of an :class:`~lowbit.model.integer_vit.IntegerViT` (module docstring).

    ``graph.meta["export"]`` reports the float ties and the ops whose outputs are the model's
    residual stream (``stage_outputs``, compared by :func:`lowbit.model.check.compare_with_torch`).
    """
    model.eval()
    a = model.arch
    c, h, w = a["in_shape"]
    s, dim = model.patch, a["dim"]
    first = input_format(a)
    in_type = BIPOLAR if first.kind == "bipolar" else ValueType(first.kind, first.bits)
    residual = model.residual
    ties = 0

    # Patch embedding: the model's patches are (c, dy, dx), the window's vectors (dy, dx, c).
    window = SlidingWindow("embed_window", c, s, s, 0, None, in_type)
    levels = _levels(model.embed).reshape(dim, c, s, s).transpose(0, 2, 3, 1).reshape(dim, -1)
    tokens = (h // s) * (w // s)

    def project(name, projection, levels, in_type, in_scale, quantizers):
        """A projection's ops and float ties: requantized, or binary01's normalized (its one quantizer)."""
        if model.binary:
            return _normalized(name, projection, levels, in_type, quantizers[0][0], tokens), 0
        return _requantize(name, projection, levels, in_type, in_scale, quantizers)

    ops, n = project("embed", model.embed, levels, in_type, model.input_gain, [(residual, dim)])
    ties += n
    position = PositionAdd("position", model.position_levels().numpy(), ops[-1].out_type)
    nodes = [window, *ops, position]
    stream, outputs = position.out_type, [position.name]

    for i, block in enumerate(model.blocks):
        attn, k = block.attn, block.norm1.quant
        norm = block.norm1.op(f"block{i}_norm1", stream)
        scores = attn.op(f"block{i}_attn")
        # binary01: Q, K and V share one quantizer, so the first is all of them
        qkv, n1 = project(f"block{i}_qkv", attn.qkv, _levels(attn.qkv), norm.out_type, k.scale(),
                          [(attn.quant_q, dim), (attn.quant_k, dim), (attn.quant_v, dim)])
        o, n2 = project(f"block{i}_o", attn.o, _levels(attn.o), scores.out_type,
                        attn.quant_v.scale() / 2 ** ATTN_FRAC_BITS, [(residual, dim)])
        first_res = Residual(f"block{i}_attn_res", (norm, *qkv, scores, *o), stream)
        stream = first_res.out_type
        norm = block.norm2.op(f"block{i}_norm2", stream)
        fc1, n3 = project(f"block{i}_fc1", block.fc1, _levels(block.fc1), norm.out_type,
                          block.norm2.quant.scale(), [(block.act, a["mlp_dim"])])
        fc2, n4 = project(f"block{i}_fc2", block.fc2, _levels(block.fc2), fc1[-1].out_type,
                          block.act.scale(), [(residual, dim)])
        second_res = Residual(f"block{i}_mlp_res", (norm, *fc1, *fc2), stream)
        stream = second_res.out_type
        nodes += [first_res, second_res]
        outputs.append(second_res.name)
        ties += n1 + n2 + n3 + n4

    # Head: the normalized tokens' sum through the head is one MatMul over every token's levels.
    norm = model.norm.op("norm", stream)
    side = (h // s, w // s)
    flatten = Flatten("flatten", (*side, dim), norm.out_type)
    head = MatMul("head", np.tile(_levels(model.head), side[0] * side[1]),
                  model.head.layer.integer_weights().format, norm.out_type)
    scale, shift = model.head_affine()
    nodes += [norm, flatten, head, HostAffine("head_affine", scale, shift), ArgMax("argmax", a["classes"])]
    info = dict(meta or {})
    info["export"] = {"float_tie_thresholds": int(ties), "tiled_compute_once": {}, "stage_outputs": outputs}
    shape = (h, w, c)
    return Graph(in_type, shape, nodes, info)
