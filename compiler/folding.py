"""Folding: how many PE rows and SIMD columns each matrix-vector engine processes per cycle."""

import re

from lowbit.errors import LowbitError

from .ir import Folding, MatMul, divisors

__all__ = ["parse_folding", "apply_folding", "fold_for_cycles", "most_folded"]


def parse_folding(spec, graph):
    """Parse ``"PExSIMD,PExSIMD,..."`` (one per MatMul, in order) into a list of Folding."""
    layers = graph.matmuls()
    parts = [p.strip() for p in str(spec).split(",")]
    if len(parts) != len(layers):
        raise LowbitError(
            f"folding {spec!r} gives {len(parts)} entries but the model has {len(layers)} layers "
            f"({', '.join(m.name for m in layers)})",
            f"give one PExSIMD per layer, e.g. {','.join('1x1' for _ in layers)}")
    out = []
    for part, layer in zip(parts, layers):
        match = re.fullmatch(r"(\d+)x(\d+)", part)
        if not match or int(match[1]) < 1 or int(match[2]) < 1:
            raise LowbitError(f"folding entry {part!r} for layer {layer.name} is not PExSIMD",
                              "write positive integers like 4x16")
        out.append(Folding(int(match[1]), int(match[2])))
    return out


def apply_folding(graph, foldings):
    """A new graph whose MatMuls carry ``foldings`` (checked to divide; clear error otherwise)."""
    foldings = list(foldings)
    it = iter(foldings)
    nodes = [n.with_folding(next(it)) if isinstance(n, MatMul) else n for n in graph.nodes]
    return graph.replace_nodes(nodes).check()


def most_folded(graph):
    return apply_folding(graph, [Folding(1, 1)] * len(graph.matmuls()))


def fold_for_cycles(graph, target_cycles):
    """Fold every layer as little as possible while meeting ``target_cycles`` per inference.

    Per layer, picks the divisor pair with the fewest lanes (PE * SIMD) whose cycle count meets the
    target; among equals it prefers wider SIMD, since one wide popcount is cheaper than several
    narrow ones each with its own accumulator and threshold.
    """
    if not isinstance(target_cycles, int) or target_cycles < 1:
        raise LowbitError(f"target cycles per inference must be a positive integer, not {target_cycles!r}")
    chosen, positions = [], graph.positions()
    for m in graph.matmuls():
        vectors = positions[m.name]  # a convolution runs once per output pixel
        options = [Folding(p, s) for p in divisors(m.tile_rows) for s in divisors(m.mw)
                   if m.cycles(Folding(p, s)) * vectors <= target_cycles]
        if not options:
            raise LowbitError(f"{m.name}: no folding reaches {target_cycles} cycles per inference",
                              f"its fastest folding needs {vectors} cycles; raise the target")
        chosen.append(min(options, key=lambda f: (f.pe * f.simd, -f.simd)))
    return apply_folding(graph, chosen)
