"""The levels of a model's quantizers (Quant, BipolarQuant, MultiThreshold, Sign, Trunc): what
each count of a quantized tensor stands for in the model."""

import math
from dataclasses import dataclass

import numpy as np

from lowbit.compiler.ir import BIPOLAR, ValueType
from lowbit.core.errors import LowbitError

from .tensors import FIX, Meaning, attr, scalar

__all__ = ["Levels", "quantizer_levels"]


@dataclass(frozen=True)
class Levels:
    """A quantizer's output as counts ``c = 0..count-1`` of its levels: ``model = step * c + offset``."""

    count: int
    step: float
    offset: float

    def counts(self, out):
        """Counts of the quantizer's float outputs."""
        return np.round((np.asarray(out, np.float64) - self.offset) / self.step).astype(np.int64)

    @property
    def ir_type(self):
        return BIPOLAR if self.count == 2 else ValueType("uint", max(1, math.ceil(math.log2(self.count))))

    def meaning(self, ir, tensor, layout="flat"):
        """``model = a * v + b`` of the IR value v: a count, or ±1 on two levels."""
        if self.count == 2:  # v = 2c - 1
            return Meaning(ir, tensor, self.step / 2, self.offset + self.step / 2, layout)
        return Meaning(ir, tensor, self.step, self.offset, layout)


def quantizer_levels(model, node):
    """The output levels of a Quant, BipolarQuant, MultiThreshold, Sign or Trunc node."""
    from qonnx.custom_op.general.intquant import max_int, min_int

    if node.op_type == "Sign":  # -1, 0, 1: a two-bit activation (its 0 is a level of its own)
        return Levels(3, 1.0, -1.0)
    if node.op_type == "BipolarQuant":
        s = scalar(model, node, 1, "scale")
        return Levels(2, 2 * s, -s)
    if node.op_type == "Trunc":
        return _trunc_levels(model, node)
    if node.op_type == "MultiThreshold":
        thr = model.get_initializer(node.input[1])
        if thr is None:
            raise LowbitError(f"node {node.name!r}: its thresholds must be constant", FIX)
        return Levels(thr.shape[1] + 1, float(attr(node, "out_scale", 1.0)), float(attr(node, "out_bias", 0.0)))
    s = scalar(model, node, 1, "scale")
    zp = scalar(model, node, 2, "zero point")
    bits = scalar(model, node, 3, "bit width")
    signed, narrow = bool(attr(node, "signed", 1)), bool(attr(node, "narrow", 0))
    if bits != int(bits) or not 1 <= bits <= 16:
        raise LowbitError(f"node {node.name!r}: bit width {bits:g} is not an integer in 1..16", FIX)
    if attr(node, "rounding_mode", "ROUND").upper() not in ("ROUND", "HALF_EVEN"):
        raise LowbitError(f"node {node.name!r}: rounding mode {attr(node, 'rounding_mode', '')!r} is not "
                          "supported", "export with ROUND (half to even), Brevitas' default")
    if int(bits) == 1 and signed:  # qonnx's 1-bit signed Quant is the sign, like BipolarQuant
        return Levels(2, 2 * s, -s)
    lo, hi = int(min_int(signed, narrow, int(bits))), int(max_int(signed, narrow, int(bits)))
    return Levels(hi - lo + 1, s, s * (lo - zp))


def _trunc_levels(model, node):
    """The levels of a Trunc: an integer of ``in_bits`` bits shifted right to ``out_bits``.

    qonnx's first Trunc (five inputs) does not clamp and does not say whether its integer is
    signed: its levels run from the least signed to the largest unsigned ``out_bits`` value, so
    both fit (the exactness check finds any value beyond). The second (six inputs: an output
    scale, a power of two times the input's) clamps to its signed or unsigned range.
    """
    from qonnx.custom_op.general.intquant import max_int, min_int

    s = scalar(model, node, 1, "scale")
    zp = scalar(model, node, 2, "zero point")
    in_bits = scalar(model, node, 3, "input bit width")
    if len(node.input) == 5:
        out_bits = scalar(model, node, 4, "output bit width")
        if out_bits != int(out_bits) or not 1 <= out_bits <= min(in_bits, 12):
            raise LowbitError(f"node {node.name!r}: output bit width {out_bits:g} is not an integer in "
                              f"1..{int(min(in_bits, 12))}", FIX)
        lo, hi = -(1 << (int(out_bits) - 1)), (1 << int(out_bits)) - 1
        return Levels(hi - lo + 1, s, s * (lo - zp))
    out_scale = scalar(model, node, 4, "output scale")
    out_bits = scalar(model, node, 5, "output bit width")
    if out_bits != int(out_bits) or not 1 <= out_bits <= 12:
        raise LowbitError(f"node {node.name!r}: output bit width {out_bits:g} is not an integer in 1..12", FIX)
    signed, narrow = bool(attr(node, "signed", 1)), bool(attr(node, "narrow", 0))
    lo, hi = int(min_int(signed, narrow, int(out_bits))), int(max_int(signed, narrow, int(out_bits)))
    shift = 2.0 ** np.round(np.log2(out_scale / s))
    return Levels(hi - lo + 1, out_scale, (lo - zp / shift) * out_scale)
