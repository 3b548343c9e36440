"""Post-training quantization of a trained float model's weights, without retraining.

Two methods at the same bit budget of b = 2..6 bits per weight, one sign bit and a (b-1)-bit
magnitude code. Both spend one magnitude code on zero, so both have 2**b - 1 distinct values:

* exponential: magnitudes ``a * q**k`` for k = 0 .. K-1 with K = 2**(b-1) - 1, plus zero;
  ``a = max|w|`` of the layer and q in (0, 1) is chosen per layer on a grid to maximize the
  correlation between w and Q(w). With q = 1/2 the levels are ``scale * {0, ±1, ±2, .., ±2**(K-1)}``,
  ``scale = a / 2**(K-1)``: powers of two (the registry's ``pow2`` at 3 bits), multiplied by shifting.
* linear: uniform symmetric levels ``scale * {-(2**(b-1)-1) .. 2**(b-1)-1}``,
  ``scale = max|w| / (2**(b-1)-1)``.

Every weight goes to the nearest level by value. Only the weights of ``nn.Linear`` and
``nn.Conv2d`` layers are quantized; biases and other parameters stay float, and layers that
already quantize their own weights (lowbit's layers, with ``integer_weights``) are left alone.
"""

import copy
from dataclasses import dataclass

import torch
from torch import nn

from lowbit.errors import LowbitError

from .quant import nearest_level

__all__ = ["PTQLayer", "exponential_levels", "quantize_exponential", "quantize_linear", "ptq",
           "DEFAULT_Q_GRID"]

# q = 0.05, 0.06, .., 0.95; built from integers so that 0.5 is exactly on it.
DEFAULT_Q_GRID = tuple(i / 100 for i in range(5, 96))


@dataclass(frozen=True)
class PTQLayer:
    """What PTQ did to one layer's weight.

    Parameters
    ----------
    method : str
        ``"exponential"`` or ``"linear"``.
    bits : int
    a : float
        max|w|, the largest level's magnitude.
    q : float or None
        Ratio between successive magnitudes (exponential); None for linear.
    correlation : float
        Pearson correlation of w and Q(w).
    levels : torch.Tensor or None
        int64 levels with ``Q(w) == scale * levels``, when the levels are integers times one scale
        (linear, and exponential with q = 1/2); else None.
    scale : float or None
        The scale of ``levels``.
    format : str or None
        The registry format whose level set ``levels`` falls in, if any (``pow2``, ``ternary``).
    """

    method: str
    bits: int
    a: float
    q: float
    correlation: float
    levels: torch.Tensor = None
    scale: float = None
    format: str = None


def _check_bits(bits):
    if not isinstance(bits, int) or isinstance(bits, bool) or not 2 <= bits <= 6:
        raise LowbitError(f"PTQ bits must be an integer from 2 to 6, not {bits!r}")


def _magnitudes(bits):
    """K, the number of nonzero magnitudes: 2**(bits-1) - 1."""
    return 2 ** (bits - 1) - 1


def exponential_levels(a, q, bits):
    """Sorted float64 levels ``{0} ∪ {±a*q**k : k = 0 .. K-1}``, K = 2**(bits-1) - 1."""
    _check_bits(bits)
    mags = [a * q ** k for k in range(_magnitudes(bits))]
    return torch.tensor(sorted({0.0, *mags, *(-m for m in mags)}), dtype=torch.float64)


def _corr(w, wq):
    w, wq = w - w.mean(), wq - wq.mean()
    den = torch.sqrt((w * w).sum() * (wq * wq).sum())
    return float((w * wq).sum() / den) if den > 0 else 0.0


def quantize_exponential(w, bits, q=None, q_grid=DEFAULT_Q_GRID):
    """Exponential discretization of one weight tensor.

    Parameters
    ----------
    w : torch.Tensor
    bits : int
        2 to 6.
    q : float, optional
        Fixed ratio in (0, 1) (``0.5`` for powers of two); by default the q of ``q_grid`` with the
        highest corr(w, Q(w)), the smaller q on equal correlation. At 2 bits there is one magnitude
        and q does not matter; it is reported as 0.5.

    Returns
    -------
    wq : torch.Tensor
        The quantized weight, w's dtype and shape.
    info : PTQLayer
    """
    _check_bits(bits)
    w64 = w.detach().to(torch.float64)
    a = float(w64.abs().max())
    if q is not None and not 0 < q < 1:
        raise LowbitError(f"exponential PTQ ratio q must be in (0, 1), not {q!r}")
    candidates = [0.5] if _magnitudes(bits) == 1 else ([q] if q is not None else list(q_grid))
    best = None
    for cand in candidates:
        wq = nearest_level(w64, exponential_levels(a, cand, bits))
        c = _corr(w64, wq)
        if best is None or c > best[0]:
            best = (c, cand, wq)
    c, q, wq = best
    levels = scale = fmt = None
    if q == 0.5 and a > 0:
        scale = a / 2 ** (_magnitudes(bits) - 1)
        levels = torch.round(wq / scale).to(torch.int64)
        fmt = {2: "ternary", 3: "pow2"}.get(bits)
    info = PTQLayer("exponential", bits, a, q, c, levels, scale, fmt)
    return wq.to(w.dtype), info


def quantize_linear(w, bits):
    """Linear (uniform symmetric) discretization at the same bit budget; see the module docstring.

    Returns
    -------
    wq : torch.Tensor
    info : PTQLayer
    """
    _check_bits(bits)
    w64 = w.detach().to(torch.float64)
    a = float(w64.abs().max())
    m = _magnitudes(bits)
    scale = a / m if a > 0 else 1.0
    levels = torch.clamp(torch.round(w64 / scale), -m, m)
    wq = scale * levels
    fmt = {2: "ternary"}.get(bits)
    info = PTQLayer("linear", bits, a, None, _corr(w64, wq), levels.to(torch.int64), scale, fmt)
    return wq.to(w.dtype), info


def ptq(model, bits, method="exponential", q=None, q_grid=DEFAULT_Q_GRID):
    """Quantize the weights of every ``nn.Linear`` and ``nn.Conv2d`` of a trained float model.

    Parameters
    ----------
    model : nn.Module
        Left unchanged.
    bits : int
        2 to 6.
    method : {"exponential", "linear"}
    q, q_grid
        For the exponential method, see :func:`quantize_exponential`.

    Returns
    -------
    quantized : nn.Module
        A deep copy of ``model`` with quantized weights (still float tensors).
    layers : dict of str to PTQLayer
        Per layer, by module name.

    Raises
    ------
    LowbitError
        On an unknown method, a bit count outside 2..6, or a q outside (0, 1).
    """
    if method not in ("exponential", "linear"):
        raise LowbitError(f"unknown PTQ method {method!r}", "use 'exponential' or 'linear'")
    _check_bits(bits)
    out = copy.deepcopy(model)
    layers = {}
    for name, module in out.named_modules():
        if not isinstance(module, (nn.Linear, nn.Conv2d)) or hasattr(module, "integer_weights"):
            continue
        if method == "exponential":
            wq, info = quantize_exponential(module.weight, bits, q, q_grid)
        else:
            wq, info = quantize_linear(module.weight, bits)
        with torch.no_grad():
            module.weight.copy_(wq)
        layers[name] = info
    return out, layers
