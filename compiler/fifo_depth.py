"""FIFO depths between engines, computed from the scan timing of the windowed engines.

A sliding window or a max pool emits in bursts: one output per step along a row, then ``k - 1``
steps without output at the end of each row, and ``(k-1)*W + k`` steps without output from an
image's last window to the next image's first. When the engine after it is the slower one, its
output register alone cannot bridge those gaps, and it starves for part of each image: the
measured cycles per inference exceed the bottleneck's. A FIFO of ``D`` entries in front of it
bridges a gap of ``G`` cycles when the consumer, taking one item every ``c`` cycles, still finds
an item after ``G`` cycles: ``D * c >= G + 2`` (the FIFO's own latency is 2 cycles). The burst that
fills the FIFO comes first: within a row the producer makes one item per step, faster than the
consumer, so the FIFO is full when the gap begins.

A windowed engine steps only when its input pixel is there, so its gaps stretch by the interval
at which its own input arrives: that interval is at most the upstream bottleneck's cycles per
inference divided by the pixels per image.

The engine that starves is not always the one right after the window: a gap passes through
faster engines unchanged (they keep no backlog to bridge it) and reaches the slowest engine
before the next window, e.g. window -> MVAU -> a normalization four times slower than the MVAU.
The FIFO goes in front of that slowest engine, sized in its own input items.
"""

import math

__all__ = ["fifo_depths", "MIN_DEPTH"]

# A queue of fewer than 3 entries cannot take a new entry every cycle (hw/fifo.py).
MIN_DEPTH = 3


def _gap(engine):
    """Longest run of scan steps between two outputs, across an image boundary, or None."""
    kernel = getattr(engine, "kernel", None)
    if kernel is None or not hasattr(engine, "padded_width"):
        return None
    wp, stride = engine.padded_width, engine.stride
    # From the last window of an image (bottom-right corner) to the first of the next; the
    # row-to-row gap, (kernel - 1) + stride * ..., is never longer than this.
    return (kernel - 1) * wp + kernel + (stride - 1) * (wp + 1)


def fifo_depths(engines, cycles, vectors, upstream_cycles=0):
    """Depth of the FIFO to put after each engine (0: none needed).

    Parameters
    ----------
    engines : list
        The hardware engines in order (``lowbit.compiler.codegen.lower``).
    cycles : list of int
        Each engine's cycles per inference.
    vectors : list of int
        Each engine's input beats per inference.
    upstream_cycles : int
        Cycles per inference of the slowest engine before the first one (for the body of a
        residual block: the engines before the block), which paces the input.

    Returns
    -------
    list of int
        ``depths[k]`` for the edge from engine k to engine k+1; the last entry is 0.
    """
    depths = [0] * len(engines)
    period = max(cycles)
    for k in range(len(engines) - 1):
        gap = _gap(engines[k])
        if gap is None:
            continue
        # The consumer that can starve: the slowest engine from here up to the next window
        # (the first of equals, as close to the window as possible).
        end = next((m for m in range(k + 1, len(engines)) if _gap(engines[m]) is not None),
                   len(engines) - 1)
        j = max(range(k + 1, end + 1), key=lambda m: (cycles[m], -m))
        # The consumer's time per item, at its own rate: cycles per inference / items.
        consumer_c = cycles[j] / max(1, vectors[j])
        upstream = max([upstream_cycles, *cycles[:k]])
        pixel_interval = max(1.0, upstream / max(1, vectors[k]))
        g = gap * pixel_interval
        need = math.ceil((g + 2) / consumer_c) + 1
        # Only a consumer slower than the window can lose time in the gaps, and it matters only
        # when the time lost (at most every gap of an image) could push it past the bottleneck.
        rows = engines[k].out_height if hasattr(engines[k], "out_height") else 1
        lost = g + rows * engines[k].kernel * pixel_interval
        if cycles[j] > cycles[k] and cycles[j] + lost > period:
            depths[j - 1] = max(depths[j - 1], MIN_DEPTH, need)
    return depths
