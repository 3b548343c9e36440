"""Integer thresholds read off a float64 step function: how every activation becomes a
MultiThreshold.

A channel's activation ``act(d * gain + bias)`` of its integer dot product ``d`` is a monotone step
function of ``d``; its thresholds are found by binary search over the reachable range of ``d`` on
that very float64 function, so the IR agrees with PyTorch on every integer by construction. Where
this differs from exact rational arithmetic on the same gain and bias, the threshold is a *float
tie*; ties are counted and reported, never hidden.
"""

import math
from fractions import Fraction

import numpy as np

from lowbit.compiler.ir import BIPOLAR, ValueType
from lowbit.core.errors import LowbitError

from .layers import BipolarAct, QuantAct

__all__ = ["step_thresholds"]


def _activation_steps(act):
    """(out type, levels L, step function y -> level index 0..L on float64 arrays)."""
    if isinstance(act, BipolarAct):
        return BIPOLAR, 1, lambda y: (y >= 0).astype(np.int64)
    if isinstance(act, QuantAct) and act.format.kind in ("uint", "int"):
        # A signed quantizer's level index counts from its lowest level (MultiThreshold's int output).
        s, low, top = float(act.scale().detach()), act.qmin, act.qmax
        return ValueType(act.format.kind, act.format.bits), top - low, \
            lambda y: (np.clip(np.floor(y / s + 0.5), low, top) - low).astype(np.int64)
    raise LowbitError(f"a {type(act).__name__} activation has no hardware form",
                      "train with --act-bits bipolar or an unsigned K")


def step_thresholds(gain, bias, lo, hi, act):
    """Integer thresholds of ``level(d) = act(d * gain + bias)`` over ``d`` in ``[lo, hi]``.

    Parameters
    ----------
    gain, bias : ndarray (C,)
        float64 per channel.
    lo, hi : ndarray (C,)
        Reachable range of each channel's dot product.
    act : BipolarAct or QuantAct
        The activation that follows.

    Returns
    -------
    thresholds : ndarray (C, L)
        ``level = #{l : s*d >= T[c, l]}`` with ``s = -1`` on flipped channels; ``hi + 1`` (or
        ``-lo + 1``) means never, ``lo`` always.
    flip : ndarray of bool (C,)
        Channels that compare ``-d`` (negative gain): their weight row must be negated.
    out_type : ValueType
    ties : int
        Thresholds that differ from exact rational arithmetic on the same gain and bias.
    """
    out_type, levels, step = _activation_steps(act)
    gain, bias = np.asarray(gain, np.float64), np.asarray(bias, np.float64)
    flip = gain < 0
    sign = np.where(flip, -1, 1)
    # In the flipped coordinate e = -d the level rises with e; e spans [-hi, -lo].
    e_lo = np.where(flip, -np.asarray(hi), np.asarray(lo)).astype(np.int64)
    e_hi = np.where(flip, -np.asarray(lo), np.asarray(hi)).astype(np.int64)

    def level(e):  # exactly the model's float64 computation, at d = sign * e
        return step((sign * e).astype(np.float64) * gain + bias)

    thresholds = np.empty((len(gain), levels), dtype=np.int64)
    for lv in range(1, levels + 1):
        a, b = e_lo.copy(), e_hi + 1  # invariant: level(b) >= lv (b = e_hi + 1 stands for never)
        while np.any(a < b):
            mid = (a + b) // 2
            ok = (level(mid) >= lv) & (a < b)
            b = np.where(ok, mid, b)
            a = np.where(~ok & (a < b), mid + 1, a)
        thresholds[:, lv - 1] = b
    ties = _count_ties(thresholds, gain, bias, sign, e_lo, e_hi, act, levels)
    return thresholds, flip, out_type, ties


def _count_ties(thresholds, gain, bias, sign, e_lo, e_hi, act, levels):
    """Thresholds that differ from the exact rational solution of the same step function."""
    if isinstance(act, BipolarAct):
        s, cuts = None, [Fraction(0)]
    else:
        s = Fraction(float(act.scale().detach()))
        cuts = [(act.qmin + lv - Fraction(1, 2)) * s for lv in range(1, levels + 1)]
    ties = 0
    for c in range(len(gain)):
        g, b = Fraction(float(gain[c])) * int(sign[c]), Fraction(float(bias[c]))
        for lv, cut in enumerate(cuts):
            if g == 0:
                exact = int(e_lo[c]) if b >= cut else int(e_hi[c]) + 1
            else:
                exact = min(max(math.ceil((cut - b) / g), int(e_lo[c])), int(e_hi[c]) + 1)
            ties += exact != thresholds[c, lv]
    return ties
