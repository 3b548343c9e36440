"""The folding searches: the cheapest folding for a cycle target, the fastest for a board or a LUT budget.

Costs come from the estimator (``lowbit.boards.estimate``, calibrated against Yosys), so the
searches stand above it; parsing and applying a folding are IR passes
(:mod:`lowbit.compiler.folding`).
"""

import numpy as np

from lowbit.boards.estimate import estimate_layer, estimate_manifest
from lowbit.boards.fit import load_models
from lowbit.compiler.codegen import describe
from lowbit.compiler.folding import apply_folding
from lowbit.compiler.graph import Folding, chains, divisors, map_nodes, walk_nodes
from lowbit.compiler.lowering import Layer, describe_engine
from lowbit.core.errors import LowbitError

__all__ = ["fold_for_cycles", "fold_for_board", "fold_for_luts", "fold_to_fit", "lane_cost", "lut_cost"]


def lane_cost(mm, threshold, folding):
    """Cost of a folding by lane count, PE * SIMD: the model-free proxy for area."""
    return folding.pe * folding.simd


def lut_cost(family="xilinx"):
    """A cost function: the estimated LUTs of the matrix-vector unit under a folding
    (``lowbit.boards.estimate``, calibrated against Yosys)."""
    models = load_models()
    cache = {}

    def cost(mm, threshold, folding):
        key = (mm.name, folding)
        if key not in cache:
            layer = Layer((mm,) if threshold is None else (mm, threshold), (mm.mw,))
            entry = describe_engine(layer, mm.unit(threshold, folding))
            cache[key] = estimate_layer(entry, family, models)["luts"]
        return cache[key]
    return cost


def _thresholds(graph):
    """Each folded op's fused successor (a MatMul's MultiThreshold) or None, by name."""
    out = {}
    for nodes in chains(graph.nodes):
        for k, n in enumerate(nodes):
            if n.foldable:
                nxt = nodes[k + 1] if k + 1 < len(nodes) else None
                out[n.name] = nxt if nxt is not None and n.fuses(nxt) else None
    return out


def fold_for_cycles(graph, target_cycles, *, cost=None):
    """The cheapest folding meeting ``target_cycles`` per inference.

    The cost of a network is the sum of its layers' costs, and each layer's cycles depend on its
    own folding only, so choosing each layer's cheapest folding that meets the target gives the
    cheapest network. ``cost(matmul, threshold, folding)`` defaults to the estimated LUTs
    (:func:`lut_cost`) and falls back to the lane count where the estimator has no model for a
    lane; ties go to the wider SIMD, since one wide popcount is cheaper than several narrow ones
    each with its own accumulator and threshold. The cost used is recorded in
    ``graph.meta["folding"]``.

    An engine that no folding speeds up (an attention engine) can hold the network to more
    cycles than the target. The matrix engines are then folded for that pace instead, which is
    cheaper and no slower; ``graph.meta["folding"]["paced_at"]`` records it.
    """
    if not isinstance(target_cycles, int) or target_cycles < 1:
        raise LowbitError(f"target cycles per inference must be a positive integer, not {target_cycles!r}")
    folded = _fold_for_cycles(graph, target_cycles, cost)
    pace = describe(folded)["cycles_per_inference"]
    if pace <= target_cycles:
        return folded
    at_pace = _fold_for_cycles(graph, pace, cost)
    return at_pace.replace_meta(dict(at_pace.meta, folding={**at_pace.meta["folding"], "target_cycles": target_cycles,
                                                            "paced_at": pace}))


def _fold_for_cycles(graph, target_cycles, cost):
    chosen, positions, thresholds = [], graph.positions(), _thresholds(graph)
    how = "given"
    if cost is None:
        try:
            cost, how = lut_cost(), "estimated xc7 LUTs"
        except LowbitError:
            cost, how = lane_cost, "lanes (PE*SIMD)"
    for m in graph.matmuls():
        vectors = positions[m.name]  # a convolution runs once per output pixel
        options = [Folding(p, s) for p in divisors(m.tile_rows) for s in divisors(m.mw)
                   if m.cycles(Folding(p, s)) * vectors <= target_cycles]
        if not options:
            raise LowbitError(f"{m.name}: no folding reaches {target_cycles} cycles per inference",
                              f"its fastest folding needs {vectors} cycles; raise the target")

        def key(f, m=m):
            try:
                c = cost(m, thresholds[m.name], f)
            except LowbitError:  # no estimator model for this lane: fall back for this layer
                c = lane_cost(m, None, f)
            return (c, f.pe * f.simd, -f.simd)
        chosen.append(min(options, key=key))
    folded = apply_folding(graph, chosen)
    # The other ops with a parallelism of their own choose it for the same target.
    vectors = {n.name: int(np.prod(shape[:-1], dtype=np.int64))
               for n, shape in walk_nodes(folded.nodes, folded.input_shape)}
    folded = folded.replace_nodes(map_nodes(folded.nodes,
                                            lambda n: n.with_cycle_target(target_cycles, vectors[n.name])))
    meta = dict(folded.meta, folding={"target_cycles": target_cycles, "cost": how})
    return folded.replace_meta(meta)


def _cycle_targets(graph):
    """Every cycles-per-inference value some folding reaches, ascending."""
    positions, values = graph.positions(), set()
    for m in graph.matmuls():
        for p in divisors(m.tile_rows):
            for s in divisors(m.mw):
                values.add(m.cycles(Folding(p, s)) * positions[m.name])
    return sorted(values)


def fold_to_fit(graph, fits, what):
    """The fastest folding (fewest cycles per inference) for which ``fits(graph)`` holds.

    Candidate targets are the cycle counts foldings can reach; a larger target never needs more
    resources, so a binary search finds the smallest target that fits.
    """
    targets = [t for t in _cycle_targets(graph) if t >= max(graph.positions().values())]
    slowest = fold_for_cycles(graph, targets[-1])
    ok, detail = fits(slowest)
    if not ok:
        raise LowbitError(f"the model does not fit {what} even fully folded: {detail}",
                          "use a larger board or budget, or a smaller model")
    lo, hi, best = 0, len(targets) - 1, slowest
    while lo < hi:
        mid = (lo + hi) // 2
        g = fold_for_cycles(graph, targets[mid])
        if fits(g)[0]:
            hi, best = mid, g
        else:
            lo = mid + 1
    return best


def _estimate(graph, board):
    return estimate_manifest(describe(graph), board)


def fold_for_board(graph, board):
    """The fastest folding whose estimated LUTs, FFs, BRAMs and DSPs fit ``board``."""
    def fits(g):
        est = _estimate(g, board)
        over = ", ".join(f"{k} {est['total'][k]} of {est['capacity'][k]} (over by {v})"
                         for k, v in est["over"].items())
        return est["fits"], over
    return fold_to_fit(graph, fits, f"the {board} board")


def fold_for_luts(graph, max_luts, family="xilinx"):
    """The fastest folding whose estimated LUTs (on ``family``) stay within ``max_luts``."""
    if not isinstance(max_luts, int) or max_luts < 1:
        raise LowbitError(f"a LUT budget must be a positive integer, not {max_luts!r}")
    models = load_models()

    def fits(g):
        man = describe(g)
        luts = sum(estimate_layer(l, family, models)["luts"] for l in man["layers"])
        return luts <= max_luts, f"{luts} LUT of {max_luts} (over by {luts - max_luts})"
    return fold_to_fit(graph, fits, f"{max_luts} LUTs")
