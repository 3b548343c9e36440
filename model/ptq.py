"""Post-training quantization of a trained float model's weights, without retraining.

Two methods at the same bit budget of b = 2..6 bits per weight, one sign bit and a (b-1)-bit
magnitude code. Both spend one magnitude code on zero, so both have 2**b - 1 distinct values:

* exponential: magnitudes ``a * q**k`` for k = 0 .. K-1 with K = 2**(b-1) - 1, plus zero;
  ``a = max|w|`` of the layer and q in (0, 1) is chosen per layer on a grid to maximize the
  correlation between w and Q(w).
* linear: uniform symmetric levels ``scale * {-(2**(b-1)-1) .. 2**(b-1)-1}``,
  ``scale = max|w| / (2**(b-1)-1)``.

**Fixed point.** Every quantized weight is ``scale * level`` with an integer level, so that the
layer has an exact integer form and hardware. For the exponential method the magnitude
``a * q**k`` is realised as ``(a / 2**F) * c_k`` with the integer ``c_k = round(q**k * 2**F)``:
``scale = a / 2**F`` and the levels are ``{0, ±c_k}``. F is chosen per layer: the smallest F at
which every ``q**k * 2**F`` is an exact integer (q = 1/2 gives powers of two
``{1, 2, .., 2**(K-1)}``, q = 3/4 powers of three times powers of two), unless that needs more
bits than keeping :data:`FIXED_POINT_BITS` significant bits in the smallest magnitude ``c_{K-1}``,
which then decides F. ``c_0 = 2**F`` is at most ``2**32`` (:data:`lowbit.core.formats.TABLE_MAX_MAGNITUDE`),
so a q whose ratio ``q**(K-1)`` is too small for that (below about ``2**-21``; at 6 bits q < 0.62)
is left out of the search. The levels the weights round to are the fixed-point ones, so
``Q(w) == scale * levels`` holds exactly.

Every weight goes to the nearest level by value. Only the weights of ``nn.Linear`` and
``nn.Conv2d`` layers are quantized, and each becomes a :class:`~lowbit.model.layers.FixedLevelsLinear`
or :class:`~lowbit.model.layers.FixedLevelsConv2d` holding its integer levels, its scale and its
magnitude table; biases and other parameters stay float, and layers that already quantize their
own weights (lowbit's layers, with ``integer_weights``) are left alone. In hardware a layer is
the level table of its magnitudes (:func:`lowbit.core.formats.format_for_magnitudes`): ``ternary`` at 2
bits, ``pow2`` for exponential 3-bit with q = 1/2, else ``table:c_1,..,c_K``.
"""

import copy
from dataclasses import dataclass
from fractions import Fraction

import torch
from torch import nn

from lowbit.core.errors import LowbitError
from lowbit.core.formats import TABLE_MAX_MAGNITUDE, format_for_magnitudes

from .layers import FixedLevelsConv2d, FixedLevelsLinear

__all__ = ["PTQLayer", "exponential_levels", "fixed_point_magnitudes", "quantize_exponential",
           "quantize_linear", "ptq", "check_ptq_arguments", "fixed_levels_model", "DEFAULT_Q_GRID",
           "FIXED_POINT_BITS", "PTQ_FORMATS"]

# q = 0.05, 0.06, .., 0.95; built from integers so that 0.5 is exactly on it.
DEFAULT_Q_GRID = tuple(i / 100 for i in range(5, 96))

# Significant bits kept in the smallest magnitude c_{K-1} when q**k * 2**F is not exact.
FIXED_POINT_BITS = 12

# The arch "weight_format" of a model after PTQ, per method.
PTQ_FORMATS = {"exponential": "expq", "linear": "linear-ptq"}


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
    levels : torch.Tensor
        int64 levels with ``Q(w) == scale * levels`` exactly (float64).
    scale : float
        The scale of ``levels``: ``a / 2**F`` (exponential) or ``a / K`` (linear).
    format : str
        The weight format of the layer in hardware: ``ternary``, ``pow2`` or ``table:c_1,..,c_K``.
    magnitudes : tuple of int
        The K integer magnitudes, ascending: ``c_k = round(q**k * 2**F)`` or ``1 .. K``.
    fraction_bits : int or None
        F of the exponential method's fixed point; None for linear.
    """

    method: str
    bits: int
    a: float
    q: float
    correlation: float
    levels: torch.Tensor
    scale: float
    format: str
    magnitudes: tuple
    fraction_bits: int = None


def _check_bits(bits):
    if not isinstance(bits, int) or isinstance(bits, bool) or not 2 <= bits <= 6:
        raise LowbitError(f"PTQ bits must be an integer from 2 to 6, not {bits!r}",
                          "use 2 to 6 bits per weight")


def _check_q(q):
    if isinstance(q, bool) or not isinstance(q, (int, float)) or not 0 < q < 1:
        raise LowbitError(f"exponential PTQ ratio q must be in (0, 1), not {q!r}",
                          "pass a ratio such as 0.5 (powers of two) or 0.7")


def _magnitudes(bits):
    """K, the number of nonzero magnitudes: 2**(bits-1) - 1."""
    return 2 ** (bits - 1) - 1


def fixed_point_magnitudes(q, bits):
    """F and the integer magnitudes ``c_k = round(q**k * 2**F)``, k = 0 .. K-1 (see the module
    docstring), or None when they do not fit: ``c_0 = 2**F`` above ``2**32``, or two equal ``c_k``.

    Returns
    -------
    (int, tuple of int) or None
        ``(F, (c_0, .., c_{K-1}))``, descending.
    """
    _check_bits(bits)
    _check_q(q)
    powers = [Fraction(q) ** k for k in range(_magnitudes(bits))]
    smallest = powers[-1]
    # Exact: F = log2 of the (power of two) denominator of the smallest power, q being a float.
    exact = smallest.denominator.bit_length() - 1
    # Significant bits: the smallest F with smallest * 2**F >= 2**(FIXED_POINT_BITS - 1).
    f = max(0, FIXED_POINT_BITS - 1 - (smallest.numerator.bit_length() - smallest.denominator.bit_length()))
    while smallest * 2 ** f < 2 ** (FIXED_POINT_BITS - 1):
        f += 1
    while f > 0 and smallest * 2 ** (f - 1) >= 2 ** (FIXED_POINT_BITS - 1):
        f -= 1
    f = min(f, exact)
    if 2 ** f > TABLE_MAX_MAGNITUDE:
        return None
    mags = tuple(round(p * 2 ** f) for p in powers)
    if len(set(mags)) != len(mags) or mags[-1] < 1:
        return None
    return f, mags


def exponential_levels(a, q, bits):
    """Sorted float64 levels ``{0} ∪ {±(a / 2**F) * c_k}``: the fixed-point form of
    ``{0} ∪ {±a*q**k : k = 0 .. K-1}``, K = 2**(bits-1) - 1.

    Raises
    ------
    LowbitError
        When q's magnitudes do not fit the fixed point (:func:`fixed_point_magnitudes`).
    """
    levels, unit = _integer_grid(q, bits)
    return (a * unit) * levels.to(torch.float64)


def _integer_grid(q, bits):
    """(sorted int64 levels ``{0, ±c_k}``, scale a / 2**F for a = 1)."""
    fixed = fixed_point_magnitudes(q, bits)
    if fixed is None:
        raise LowbitError(f"exponential PTQ at {bits} bits with q={q!r} spans a ratio of "
                          f"q**{_magnitudes(bits) - 1}, too small for a fixed point of at most 32 bits",
                          "use a larger q, or fewer bits")
    f, mags = fixed
    grid = torch.tensor(sorted({0, *mags, *(-c for c in mags)}), dtype=torch.int64)
    return grid, 1.0 / 2 ** f


def _corr(w, wq):
    w, wq = w - w.mean(), wq - wq.mean()
    den = torch.sqrt((w * w).sum() * (wq * wq).sum())
    return float((w * wq).sum() / den) if den > 0 else 0.0


def _nearest(w64, grid, scale):
    """(int64 levels, float64 ``scale * levels``): each weight to the nearest of ``scale * grid``
    (ties go up), exactly ``scale * levels`` elementwise."""
    values = scale * grid.to(torch.float64)
    mids = (values[1:] + values[:-1]) / 2
    idx = torch.bucketize(w64, mids, right=True)
    return grid[idx], values[idx]


def quantize_exponential(w, bits, q=None, q_grid=DEFAULT_Q_GRID):
    """Exponential discretization of one weight tensor, in the fixed point of the module docstring.

    Parameters
    ----------
    w : torch.Tensor
    bits : int
        2 to 6.
    q : float, optional
        Fixed ratio in (0, 1) (``0.5`` for powers of two); by default the q of ``q_grid`` with the
        highest corr(w, Q(w)), the smaller q on equal correlation, among those whose magnitudes
        fit the fixed point. At 2 bits there is one magnitude and q does not matter; it is
        reported as 0.5.

    Returns
    -------
    wq : torch.Tensor
        The quantized weight ``scale * levels``, w's dtype and shape.
    info : PTQLayer

    Raises
    ------
    LowbitError
        On bits outside 2..6, a q outside (0, 1), or a q whose magnitudes do not fit.
    """
    _check_bits(bits)
    if q is not None:
        _check_q(q)
    w64 = w.detach().to(torch.float64)
    a = float(w64.abs().max())
    if _magnitudes(bits) == 1:
        candidates = [0.5]
    elif q is not None:
        _integer_grid(q, bits)  # a q that does not fit is an error, not skipped
        candidates = [q]
    else:
        candidates = [c for c in q_grid if fixed_point_magnitudes(c, bits) is not None]
    best = None
    for cand in candidates:
        grid, unit = _integer_grid(cand, bits)
        scale = a * unit if a > 0 else 1.0
        levels, wq = _nearest(w64, grid, scale)
        c = _corr(w64, wq)
        if best is None or c > best[0]:
            best = (c, cand, levels, wq, scale)
    c, q, levels, wq, scale = best
    f, mags = fixed_point_magnitudes(q, bits)
    fmt = format_for_magnitudes(mags).name
    info = PTQLayer("exponential", bits, a, q, c, levels, scale, fmt, tuple(sorted(mags)), f)
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
    levels = torch.clamp(torch.round(w64 / scale), -m, m).to(torch.int64)
    wq = scale * levels.to(torch.float64)
    mags = tuple(range(1, m + 1))
    info = PTQLayer("linear", bits, a, None, _corr(w64, wq), levels, scale,
                    format_for_magnitudes(mags).name, mags)
    return wq.to(w.dtype), info


def _fixed_layer(module, bits):
    """An empty :class:`FixedLevelsLinear` / :class:`FixedLevelsConv2d` shaped like ``module``."""
    k = _magnitudes(bits)
    bias = module.bias is not None
    if isinstance(module, nn.Conv2d):
        if module.padding_mode != "zeros" or isinstance(module.padding, str):
            raise LowbitError(f"a convolution with padding {module.padding!r} ({module.padding_mode}) "
                              "cannot be quantized after training", "use numeric zero padding")
        return FixedLevelsConv2d(module.in_channels, module.out_channels, module.kernel_size, bits, k,
                                 stride=module.stride, padding=module.padding, dilation=module.dilation,
                                 groups=module.groups, bias=bias)
    return FixedLevelsLinear(module.in_features, module.out_features, bits, k, bias=bias)


def _float_layers(model):
    """``(parent, attribute name, full name, module)`` of every plain ``nn.Linear``/``nn.Conv2d``."""
    found = []
    for name, parent in model.named_modules():
        for child_name, child in parent.named_children():
            if isinstance(child, (nn.Linear, nn.Conv2d)) and not hasattr(child, "integer_weights"):
                found.append((parent, child_name, f"{name}.{child_name}" if name else child_name, child))
    return found


def fixed_levels_model(model, bits):
    """Replace every plain ``nn.Linear``/``nn.Conv2d`` of ``model`` (in place) by an empty fixed-level
    layer of the same shape: the skeleton a PTQ checkpoint's state dict loads into."""
    _check_bits(bits)
    for parent, attr, _, module in _float_layers(model):
        setattr(parent, attr, _fixed_layer(module, bits))
    return model


def check_ptq_arguments(bits, method="exponential", q=None):
    """Raise a ``LowbitError`` unless ``bits``, ``method`` and ``q`` make a valid PTQ: the checks of
    :func:`ptq` that need no model, for callers that check before any work."""
    if method not in PTQ_FORMATS:
        raise LowbitError(f"unknown PTQ method {method!r}", "use 'exponential' or 'linear'")
    _check_bits(bits)
    if q is not None:
        if method != "exponential":
            raise LowbitError("a ratio q is for exponential PTQ, not linear",
                              "drop q, or use the exponential method")
        _check_q(q)
        if _magnitudes(bits) > 1:
            _integer_grid(q, bits)


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
        A deep copy of ``model`` whose float layers are fixed-level layers
        (:class:`~lowbit.model.layers.FixedLevelsLinear`, :class:`~lowbit.model.layers.FixedLevelsConv2d`).
        For a :class:`~lowbit.model.arch.LowbitNet` its arch records the PTQ
        (``weight_format`` ``"expq"`` or ``"linear-ptq"``, ``ptq = {"method", "bits", "q"}``), so
        that a saved checkpoint rebuilds it.
    layers : dict of str to PTQLayer
        Per layer, by module name.

    Raises
    ------
    LowbitError
        On an unknown method, a bit count outside 2..6, or a q outside (0, 1) or too small to fit.
    """
    check_ptq_arguments(bits, method, q)
    out = copy.deepcopy(model)
    layers = {}
    for parent, attr, name, module in _float_layers(out):
        if method == "exponential":
            _, info = quantize_exponential(module.weight, bits, q, q_grid)
        else:
            _, info = quantize_linear(module.weight, bits)
        fixed = _fixed_layer(module, bits)
        fixed.set_levels(info.levels, info.scale, info.magnitudes)
        if module.bias is not None:
            with torch.no_grad():
                fixed.bias.copy_(module.bias)
        fixed.train(module.training)
        setattr(parent, attr, fixed)
        layers[name] = info
    if isinstance(getattr(out, "arch", None), dict) and out.arch.get("weight_format") == "fp32":
        out.arch = {**out.arch, "weight_format": PTQ_FORMATS[method],
                    "ptq": {"method": method, "bits": bits, "q": q}}
    return out, layers
