"""Export a trained PyTorch model to the IR, with exact integer semantics.

BatchNorm followed by sign becomes one integer threshold per channel (FINN's streamlining). Rather than
solving ``gamma * (d - mu) / sigma + beta >= 0`` in floats, which can round differently from PyTorch
near the boundary, the threshold is read off the model itself: every dot product a layer can produce
(``d = -MW, -MW+2, ..., MW`` for bipolar inputs and weights) is passed through the trained BatchNorm
and sign in eval mode, so the IR agrees with PyTorch on every integer by construction. Channels where
this differs from the exact rational threshold are *float ties*; they are counted and reported.

A channel whose output falls as ``d`` grows (negative BatchNorm scale) has its weight row negated, so
the hardware only ever compares ``>=``.
"""

import numpy as np
import torch

from lowbit.errors import LowbitError
from lowbit.model.mlp import LowbitMLP
from lowbit.model.quant import bipolar_sign

from .ir import BIPOLAR, ArgMax, Graph, HostAffine, MatMul, MultiThreshold

__all__ = ["export_model", "sign_thresholds"]


@torch.no_grad()
def sign_thresholds(norm, mw):
    """Integer thresholds equivalent to ``sign(norm(d))`` for every reachable dot product ``d``.

    Parameters
    ----------
    norm : torch.nn.BatchNorm1d
        The trained BatchNorm (evaluated in eval mode).
    mw : int
        Number of ±1 terms in the dot product.

    Returns
    -------
    thresholds : ndarray (C,)
        ``+1 iff sign * d >= threshold``.
    flip : ndarray of bool (C,)
        Channels whose comparison runs on ``-d`` (their weight row must be negated).
    ties : int
        Channels where the float evaluation differs from the exact rational threshold.
    """
    was_training = norm.training
    norm.eval()
    d = np.arange(-mw, mw + 1, 2)
    y = norm(torch.as_tensor(d, dtype=torch.float32)[:, None].expand(-1, norm.num_features).contiguous())
    pos = (bipolar_sign(y) > 0).numpy()
    norm.train(was_training)
    never = mw + 2  # no reachable d (or -d) is this large
    thresholds = np.empty(norm.num_features, dtype=np.int64)
    flip = np.zeros(norm.num_features, dtype=bool)
    for c in range(norm.num_features):
        col = pos[:, c]
        if col.all() or not col.any():
            thresholds[c] = -mw if col.all() else never
        elif np.all(np.diff(col.astype(np.int8)) >= 0):
            thresholds[c] = d[np.argmax(col)]
        elif np.all(np.diff(col.astype(np.int8)) <= 0):
            flip[c] = True
            thresholds[c] = -d[len(d) - 1 - np.argmax(col[::-1])]
        else:
            raise LowbitError(f"BatchNorm channel {c}: sign(BN(d)) is not monotone in d",
                              "this cannot happen for a finite BatchNorm; check the checkpoint")
    ties = int((thresholds != _exact_thresholds(norm, mw, flip)).sum())
    return thresholds, flip, ties


def _exact_thresholds(norm, mw, flip):
    """The same thresholds from the rational formula, to count float ties."""
    gamma = norm.weight.detach().double().numpy()
    beta = norm.bias.detach().double().numpy()
    mu = norm.running_mean.double().numpy()
    sigma = np.sqrt(norm.running_var.double().numpy() + norm.eps)
    d = np.arange(-mw, mw + 1, 2)
    out = np.empty(len(gamma), dtype=np.int64)
    for c in range(len(gamma)):
        pos = gamma[c] * (d - mu[c]) / sigma[c] + beta[c] >= 0
        vals = -d if flip[c] else d
        ok = vals[pos]
        out[c] = ok.min() if pos.any() and (not pos.all()) else (-mw if pos.all() else mw + 2)
    return out


def export_model(model, meta=None):
    """Export a trained model to an IR graph.

    Returns
    -------
    graph : Graph
        MatMul/MultiThreshold pairs for the hidden layers, then the last MatMul (integer
        accumulators), the host affine map and the argmax.
    """
    if not isinstance(model, LowbitMLP):
        raise LowbitError(f"cannot export a {type(model).__name__}: no IR mapping for this layer type",
                          "supported: LowbitMLP (QuantLinear + BatchNorm1d + sign)")
    model.eval()
    nodes, ties = [], 0
    last = len(model.linears) - 1
    for i, (linear, norm) in enumerate(zip(model.linears, model.norms)):
        with torch.no_grad():
            w = bipolar_sign(linear.weight).to(torch.int64).numpy().copy()
        name = f"fc{i}"
        if i < last:
            t, flip, n_ties = sign_thresholds(norm, linear.in_features)
            ties += n_ties
            w[flip] *= -1
            mm = MatMul(name, w, linear.format.name, BIPOLAR)
            nodes += [mm, MultiThreshold(f"{name}_sign", t[:, None], mm.out_type, BIPOLAR)]
        else:
            mm = MatMul(name, w, linear.format.name, BIPOLAR)
            scale, shift = _affine(norm)
            nodes += [mm, HostAffine(f"{name}_affine", scale, shift), ArgMax("argmax", len(scale))]
    info = dict(meta or {})
    info["export"] = {"float_tie_channels": ties}
    return Graph(BIPOLAR, model.arch["in_features"], nodes, info)


def _affine(norm):
    """BatchNorm in eval mode as ``scale * x + shift``, in float64."""
    sigma = np.sqrt(norm.running_var.double().numpy() + norm.eps)
    scale = norm.weight.detach().double().numpy() / sigma
    shift = norm.bias.detach().double().numpy() - norm.running_mean.double().numpy() * scale
    return scale, shift
