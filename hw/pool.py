"""Max pooling over a streamed feature map.

For bipolar elements the max of ±1 values is +1 iff any of them is +1, so with 1 = +1 the pool is
the bit-wise OR of the window's pixel words. For integer elements it is a comparator tree per
channel, signed for ``int`` and unsigned for ``uint``.
"""

from amaranth.hdl import Cat, Mux

from .payload import VectorFormat
from .window import WindowScan, check_geometry

__all__ = ["MaxPool"]


def _tree(op, items):
    """Combine ``items`` pairwise, so the logic depth grows with log2 of their number."""
    while len(items) > 1:
        items = [op(a, b) for a, b in zip(items[::2], items[1::2])] + items[len(items) & ~1:]
    return items[0]


class MaxPool(WindowScan):
    """``k x k`` max pooling with a stride, without padding, one output pixel per window.

    Input: ``H * W`` pixels per image in raster order, C elements each. Output: ``OH * OW``
    pixels per image in output raster order, ``OH = (H - k) // stride + 1`` (``OW`` likewise),
    channel c being the max of channel c over the window. Rows and columns past the last whole
    window are read and dropped. Any stride works; ``stride = k`` is the usual pooling.

    It shares the scan of :class:`~lowbit.hw.window.SlidingWindow` and reduces the window before
    the output register, so the timing is the same with ``pad = 0``: with neither side stalling,
    ``cycles_per_item = H * W`` per image (one input per cycle) and ``latency = (k-1)*W + k`` cycles from
    an image's first input handshake to its first output handshake. Storage is
    ``buffer_pixels = (k-1)*W + k - 1`` pixels.

    Parameters
    ----------
    height, width : int
        Size of the input image.
    channels : int
        Elements per pixel (C).
    kernel : int
        Window size k; it must fit the image.
    stride : int
        Step between windows; ``None`` means ``kernel``.
    kind : str
        Element kind: "bipolar", "uint" or "int".
    bits : int
        Bits per element (1 for bipolar).
    pipelined : bool
        Registered scan flags (see :class:`~lowbit.hw.window.WindowScan`).

    Members
    -------
    i : In(stream.Signature(in_format.shape))
        Input pixels, ``in_format = VectorFormat(kind, bits, C)``.
    o : Out(stream.Signature(out_format.shape))
        Pooled pixels, ``out_format = in_format``.

    Raises
    ------
    TypeError
        If a size is not an integer.
    ValueError
        If a size is out of range or the kernel does not fit the image.
    """

    def __init__(self, height, width, channels, kernel, *, stride=None, kind="bipolar", bits=1, pipelined=False):
        stride = kernel if stride is None else stride
        check_geometry(height, width, channels, kernel, stride, 0)
        fmt = VectorFormat(kind, bits, channels)
        super().__init__(height, width, kernel, stride, 0, 0, fmt, fmt, pipelined=pipelined)

    def result(self, m, pixels):
        flat = [p for row in pixels for p in row]
        fmt = self.in_format
        if fmt.kind == "bipolar":
            return _tree(lambda a, b: a | b, flat)
        out = []
        for c in range(fmt.count):
            elems = [p[c * fmt.bits:(c + 1) * fmt.bits] for p in flat]
            if fmt.kind == "int":
                elems = [e.as_signed() for e in elems]
            out.append(_tree(lambda a, b: Mux(a > b, a, b), elems))
        return Cat(*out)
