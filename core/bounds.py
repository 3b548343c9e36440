"""Exact integer ranges, shared by the IR (output types) and the hardware (accumulator widths)."""

import numpy as np

__all__ = ["dot_bounds", "row_bounds", "signed_bits"]


def row_bounds(weights, lo, hi):
    """Per row h, the exact range ``(bottom[h], top[h])`` of ``sum_w W[h, w] * x[w]`` over inputs
    x in [lo, hi]: each term's extreme is ``w * hi`` or ``w * lo``, and the terms are independent."""
    w = np.asarray(weights, dtype=np.int64)
    return np.minimum(w * hi, w * lo).sum(axis=1), np.maximum(w * hi, w * lo).sum(axis=1)


def dot_bounds(weights, lo, hi):
    """Exact range of ``sum_w W[h, w] * x[w]`` over all rows h and all inputs x in [lo, hi].

    Each term's extreme is ``w * hi`` or ``w * lo``, whichever is larger (smaller); the terms are
    independent, so the row extremes are the sums of the term extremes. Since lo <= 0 <= hi for
    every lowbit input type (bipolar counts as [-1, 1]), every prefix sum also lies in the range,
    so an accumulator sized for it never overflows mid-row.
    """
    bottom, top = row_bounds(weights, lo, hi)
    return int(bottom.min()), int(top.max())


def signed_bits(lo, hi):
    """Bits of the narrowest two's complement type holding [lo, hi]."""
    return max(int(hi).bit_length(), int(-lo - 1).bit_length() if lo < 0 else 0) + 1
