"""Folding: how many PE rows and SIMD columns each matrix-vector engine processes per cycle.

Parsing a folding and applying one to a graph; the searches that choose one by cost
(``lowbit.folding``) stand above the estimator.
"""

import re

from lowbit.core.errors import LowbitError

from .graph import Folding, map_nodes

__all__ = ["parse_folding", "apply_folding", "most_folded"]


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
    nodes = map_nodes(graph.nodes, lambda n: n.with_folding(next(it)) if n.foldable else n)
    return graph.replace_nodes(nodes).check()


def most_folded(graph):
    return apply_folding(graph, [Folding(1, 1)] * len(graph.matmuls()))
