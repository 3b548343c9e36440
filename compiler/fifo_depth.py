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
The FIFO goes in front of that slowest engine, sized in its own input items. Behind more than
one window the gap is also longer than the window's own scan suggests: before a second window
can emit an image's first output, the first window must have scanned far into that image
(:func:`_first_output_wait` traces it back), and the FIFO must bridge that whole wait.

A padded window also stops taking input: from an image's last pixel to the next image's first,
its scan walks the padding (the bottom rows, then the next image's top rows), and each window it
emits there waits for its consumer. An engine in front of it that paces the network has no spare
time to lose to that :func:`_drain`; a FIFO in front of the window, as deep as the pixels that
engine makes meanwhile, keeps it going. The same holds for a residual block whose body starts
with a window: the block's fork takes no input while the body's window does not.
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


def _first_output_wait(engines, cycles, vectors, k):
    """Cycles from an image's first input beat until windowed engine ``k`` can emit that image's
    first output, each engine before it running at its own pace: the longest, over the engines
    up to ``k``, of (the beats or scan steps it must go through first) x (its cycles per beat).

    The first output's window is traced back through every windowed engine to the pixels it
    needs; between windows (a matrix-vector unit, a normalization) a pixel is a pixel. Behind a
    second window that gap is far longer than the window's own ``_gap`` at the average pace
    suggests: a 3x3 window after a 2x2 pool after a 3x3 window on 28 x 28 needs 204 input scan
    steps before its first output, against 29 of its own steps.
    """
    r = c = 0
    width = area = None
    wait = 0.0
    for m in range(k, -1, -1):
        e = engines[m]
        per_beat = max(1.0, cycles[m] / max(1, vectors[m]))
        if _gap(e) is not None:
            kk, s, p = e.kernel, e.stride, getattr(e, "pad", 0)
            r = min(max(r * s + kk - 1 - p, 0), e.height - 1)
            c = min(max(c * s + kk - 1 - p, 0), e.width - 1)
            width, area = e.width, e.width * e.height
            steps = (r + p) * e.padded_width + (c + p) + 1
            wait = max(wait, steps * max(1.0, cycles[m] / (e.padded_height * e.padded_width)))
        elif area is not None and vectors[m] == area:
            wait = max(wait, (r * width + c + 1) * per_beat)
        else:
            break  # the map was not pixels here (e.g. collected into one vector)
    return wait


def _scan(engine):
    """The window scan an engine starts with: the engine itself, or the first engine of a
    residual block's body; None for other engines."""
    if _gap(engine) is not None:
        return engine
    body = getattr(engine, "body", None)
    return _scan(body[0]) if body else None


def _drain(scan, consumer_c):
    """Cycles a window scan takes no input between an image's last pixel and the next image's
    first: the padding steps between them, one cycle each, or ``consumer_c`` (the consumer's
    cycles per window) for those that emit a window."""
    hp, wp, p, k, s = scan.padded_height, scan.padded_width, scan.pad, scan.kernel, scan.stride
    last = (hp - 1 - p) * wp + (wp - 1 - p)  # the step of the image's last real pixel
    cycles = 0.0
    for step in range(last + 1, hp * wp + p * wp + p):  # up to the next image's first pixel
        r, c = divmod(step % (hp * wp), wp)
        emits = r >= k - 1 and c >= k - 1 and (r - k + 1) % s == 0 and (c - k + 1) % s == 0
        cycles += max(1.0, consumer_c) if emits else 1.0
    return cycles


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
        g = max(gap * pixel_interval, _first_output_wait(engines, cycles, vectors, k))
        need = math.ceil((g + 2) / consumer_c) + 1
        # Only a consumer slower than the window can lose time in the gaps, and it matters only
        # when the time lost (at most every gap of an image) could push it past the bottleneck.
        rows = engines[k].out_height if hasattr(engines[k], "out_height") else 1
        lost = g + rows * engines[k].kernel * pixel_interval
        if cycles[j] > cycles[k] and cycles[j] + lost > period:
            depths[j - 1] = max(depths[j - 1], MIN_DEPTH, need)
    for k in range(1, len(engines)):  # a padded window must not stall the engine that paces it
        scan = _scan(engines[k])
        if scan is None or not scan.pad:
            continue
        upstream = max([upstream_cycles, *cycles[:k]])
        if scan is engines[k]:  # its consumer: the slowest engine up to the next window
            end = next((m for m in range(k + 1, len(engines)) if _gap(engines[m]) is not None),
                       len(engines) - 1)
            consumer = max(cycles[k + 1:end + 1], default=cycles[k])
        else:  # a residual block: its body's slowest engine
            consumer = cycles[k]
        drain = _drain(scan, consumer / (scan.out_height * scan.out_width))
        if drain > period - upstream:
            pixel_interval = max(1.0, upstream / max(1, vectors[k]))
            depths[k - 1] = max(depths[k - 1], MIN_DEPTH, math.ceil(drain / pixel_interval) + 2)
    return depths
