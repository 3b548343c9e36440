"""Population count as a balanced adder tree."""

from amaranth.hdl import Const

__all__ = ["popcount"]


def popcount(value):
    """Number of ones in ``value`` as an Amaranth expression, summed pairwise so depth is log2(n)."""
    terms = [value[i] for i in range(len(value))]
    if not terms:
        return Const(0, 1)
    while len(terms) > 1:
        paired = [a + b for a, b in zip(terms[0::2], terms[1::2])]
        if len(terms) % 2:
            paired.append(terms[-1])
        terms = paired
    return terms[0]
