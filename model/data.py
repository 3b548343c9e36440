"""Datasets and input encodings.

The embedded dataset is scikit-learn's ``load_digits`` (8x8 images, pixel values 0..16, 1797 images),
split 80/20 with a fixed seed and stratified by class: 1437 training and 360 test images.

Input encoding: a binary network's first layer multiplies ±1 weights by ±1 inputs, so each pixel is
turned into a *thermometer code* of T bipolar values: value t of pixel p is +1 if the pixel is at least
``thresholds[t]``, else -1. The code is exact in integers (host and hardware agree by construction) and
keeps T+1 grey levels instead of one. Element ``p * T + t`` of the input vector holds pixel p, level t.
"""

from dataclasses import dataclass

import numpy as np

__all__ = ["Dataset", "load_digits_split", "Thermometer"]


@dataclass(frozen=True)
class Dataset:
    """A train/test split of integer images (N, pixels) and labels (N,)."""

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    max_value: int
    classes: int


def load_digits_split(seed=0, test_fraction=0.2):
    """scikit-learn digits, split with a fixed seed (stratified)."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    x = digits.data.astype(np.int64)
    y = digits.target.astype(np.int64)
    x_tr, x_te, y_tr, y_te = train_test_split(
        x, y, test_size=test_fraction, random_state=seed, stratify=y)
    return Dataset("digits", x_tr, y_tr, x_te, y_te, max_value=16, classes=10)


@dataclass(frozen=True)
class Thermometer:
    """Thermometer code of integer pixels into bipolar values (see the module docstring).

    Parameters
    ----------
    thresholds : tuple of int
        Increasing pixel thresholds; one bipolar output per threshold.
    """

    thresholds: tuple

    @classmethod
    def uniform(cls, levels, max_value):
        """``levels`` thresholds spread evenly over 0..max_value (digits, 4 levels: 2, 6, 10, 14)."""
        return cls(tuple(int(round((k + 0.5) * max_value / levels)) for k in range(levels)))

    def __call__(self, x):
        """Encode integer images (N, P) into an int8 array (N, P*T) of ±1."""
        x = np.asarray(x)
        t = np.asarray(self.thresholds)
        code = np.where(x[..., :, None] >= t, 1, -1).astype(np.int8)
        return code.reshape(*x.shape[:-1], x.shape[-1] * len(self.thresholds))

    def to_dict(self):
        return {"encoding": "thermometer", "thresholds": list(self.thresholds), "order": "pixel-major"}

    @classmethod
    def from_dict(cls, d):
        return cls(tuple(int(v) for v in d["thresholds"]))
