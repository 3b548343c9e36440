"""Attention: multi-head self-attention over a sequence of integer tokens, exact in integers.

Its input is each token's Q, K and V side by side (one projection's output, ``3*D`` channels of
signed levels), its output each token's attention result (D channels). Per head h, query i and
key j, with ``dh = D / heads`` channels per head:

- scores ``S_ij = sum_d Q_id K_jd``, an integer dot product of two streamed operands;
- the softmax's exponent ``e_ij = E[min(max_j S_ij - S_ij, len(E) - 1)]``, a table of the
  rounded ``2**B * exp(-lam * d)`` that ends with its first zero (the model fixes ``lam``, the
  logits' scale per score unit; the table is all the hardware needs of it);
- the output, V's weighted mean with ``F`` more bits: ``floor(sum_j e_ij V_jd * 2**F / sum_j e_ij + 1/2)``,
  an integer division (``sum_j e_ij >= E[0] > 0``, since the best key has distance 0).

Tokens are the positions of a feature map (H, W, C) in stream order; every token attends to
every token, so the engine (:class:`lowbit.hw.attention.Attention`, manifest op ``attention``)
holds the whole sequence before its first output.
"""

from dataclasses import dataclass

import numpy as np

from lowbit.core.errors import LowbitError
from lowbit.core.schema import NATURAL, POSITIVE
from lowbit.core.types import int_type_for
from lowbit.hw.attention import Attention as AttentionUnit

from ..graph import TYPE_RECORD, Op, ValueType, int_array, type_record

__all__ = ["Attention", "round_half_up"]


def round_half_up(num, den):
    """``floor(num / den + 1/2)`` of int64 arrays, exactly (``den > 0``)."""
    return np.floor_divide(2 * num + den, 2 * den)


@dataclass(frozen=True, eq=False)
class Attention(Op):
    """Integer multi-head self-attention (module docstring).

    Parameters
    ----------
    name : str
    dim : int
        D, the channels of each of Q, K and V.
    heads : int
        Dividing D.
    in_type : ValueType
        ``int k``: the levels of Q, K and V.
    table : array (E,)
        The exponent table: non-increasing non-negative integers, ``table[0] > 0``, ending with 0.
    frac_bits : int
        F, the output's bits below V's step.
    """

    name: str
    dim: int
    heads: int
    in_type: ValueType
    table: np.ndarray
    frac_bits: int
    engine_op = "attention"
    record_fields = {"dim": POSITIVE, "heads": POSITIVE, "in_type": TYPE_RECORD, "frac_bits": NATURAL}
    record_arrays = ("table",)
    entry_fields = {"tokens": POSITIVE, "dim": POSITIVE, "heads": POSITIVE, "table": POSITIVE}

    def __post_init__(self):
        for attr in ("dim", "heads"):
            v = getattr(self, attr)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise LowbitError(f"{self.name}: {attr} must be a positive integer, not {v!r}")
        if self.dim % self.heads:
            raise LowbitError(f"{self.name}: {self.heads} heads do not divide {self.dim} channels")
        if not isinstance(self.in_type, ValueType) or self.in_type.kind != "int":
            raise LowbitError(f"{self.name}: Q, K and V must be signed levels, not {self.in_type!r}")
        if not isinstance(self.frac_bits, int) or isinstance(self.frac_bits, bool) or not 0 <= self.frac_bits <= 16:
            raise LowbitError(f"{self.name}: frac_bits must be an integer in 0..16, not {self.frac_bits!r}")
        t = int_array(f"{self.name}: table", self.table, 1)
        if len(t) < 2 or t[0] <= 0 or t[-1] != 0 or (t < 0).any() or (np.diff(t) > 0).any():
            raise LowbitError(f"{self.name}: the exponent table must fall from a positive first entry to a "
                              "last entry of 0")
        object.__setattr__(self, "table", t)

    @property
    def out_type(self):
        scale = 2 ** self.frac_bits
        return int_type_for(self.in_type.min * scale, self.in_type.max * scale)

    def out_shape(self, shape):
        shape = tuple(shape)
        if len(shape) != 3 or shape[2] != 3 * self.dim:
            raise LowbitError(f"{self.name}: expects a (H, W, {3 * self.dim}) map of tokens' Q|K|V, not {shape}")
        return (*shape[:2], self.dim)

    def reference(self, x):
        x = np.asarray(x, dtype=np.int64)
        n, h, w, _ = x.shape
        dh = self.dim // self.heads

        def heads(z):  # (n, tokens, D) -> (n, heads, tokens, dh)
            return z.reshape(n, h * w, self.heads, dh).transpose(0, 2, 1, 3)

        q, k, v = (heads(z) for z in np.split(x.reshape(n, h * w, -1), 3, axis=-1))
        scores = q @ k.transpose(0, 1, 3, 2)
        d = np.minimum(scores.max(-1, keepdims=True) - scores, len(self.table) - 1)
        e = self.table[d]
        out = round_half_up((e @ v) * 2 ** self.frac_bits, e.sum(-1, keepdims=True))
        return out.transpose(0, 2, 1, 3).reshape(n, h, w, self.dim)

    def record(self):
        return ({"dim": self.dim, "heads": self.heads, "in_type": type_record(self.in_type),
                 "frac_bits": self.frac_bits}, {"table": self.table})

    @classmethod
    def from_record(cls, name, fields, arrays, body):
        return cls(name, fields["dim"], fields["heads"], ValueType(**fields["in_type"]), arrays["table"],
                   fields["frac_bits"])

    # -- hardware -------------------------------------------------------------------------------
    def engine(self, layer, in_format, lowering):
        h, w, _ = layer.in_shape
        return AttentionUnit(h * w, self.dim, self.heads, in_format, self.table.tolist(), self.frac_bits)

    def engine_cycles(self, layer, engine):
        """The engine's item is a whole sequence."""
        return engine.cycles_per_item

    def entry(self, layer, engine):
        return {"op": self.engine_op, "tokens": engine.tokens, "dim": self.dim, "heads": self.heads,
                "table": len(self.table)}
