"""Sliding windows over a streamed feature map: the scan that convolution and pooling share.

A feature map streams one pixel per beat in raster order; a pixel is a vector of C elements packed
as :class:`~lowbit.hw.payload.VectorFormat` describes. The scan walks the padded image
(``H + 2*pad`` rows by ``W + 2*pad`` columns) one position per step: at a real position it takes
an input beat, at a padding position it makes up a padding pixel itself. Every pixel goes into a
shift chain as long as ``(k-1)`` padded rows plus ``k`` pixels, whose taps are the ``k x k`` window
ending at the current position. When that position is the bottom-right corner of a window on the
stride grid, the window (or, for pooling, its reduction) goes to the output register.

Because a step only ever depends on the last ``(k-1)*(W+2*pad) + k`` pixels, an image needs no
flush: N images stream back to back, each in exactly ``(H + 2*pad) * (W + 2*pad)`` steps.
"""

from amaranth.hdl import Cat, Const, Module, Mux, Signal, Value, unsigned
from amaranth.lib import memory, stream, wiring
from amaranth.lib.wiring import In, Out

from .payload import VectorFormat

__all__ = ["SlidingWindow"]

# Shorter delay lines stay in flip-flops; a memory of one word would need a transparent port.
_MEMORY_MIN_DEPTH = 2


def check_int(name, value, minimum):
    """Raise unless ``value`` is an ``int`` (not a bool) of at least ``minimum``."""
    what = "a positive integer" if minimum == 1 else "a non-negative integer"
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"{name} must be {what}, not {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be {what}, not {value!r}")


def check_geometry(height, width, channels, kernel, stride, pad):
    """Check the shape parameters shared by every windowed component."""
    check_int("Height", height, 1)
    check_int("Width", width, 1)
    check_int("Channels", channels, 1)
    check_int("Kernel", kernel, 1)
    check_int("Stride", stride, 1)
    check_int("Pad", pad, 0)
    if pad >= kernel:
        raise ValueError(f"Pad must be less than the kernel {kernel}, not {pad}")
    hp, wp = height + 2 * pad, width + 2 * pad
    if kernel > min(hp, wp):
        raise ValueError(f"Kernel must fit the padded {hp}x{wp} image, not {kernel}")


class WindowScan(wiring.Component):
    """The scan and shift chain behind :class:`SlidingWindow` and :class:`~lowbit.hw.pool.MaxPool`.

    Subclasses check their parameters, then call ``__init__`` with a valid geometry and the
    output format, and define ``result(m, pixels)``, which turns the window's pixels (given as
    ``pixels[ky][kx]``, each ``in_format.width`` bits) into the output word.

    Timing (no stalls): one scan step per cycle, and an item is a whole image, so
    ``cycles_per_item = (H + 2*pad) * (W + 2*pad)``; the input is not ready during the
    ``2*pad*(W + 2*pad) + 2*pad*H`` padding steps of an image. A window is registered on the
    step of its bottom-right corner and handed over on the next cycle, so the first window of an
    image is handed over ``latency = (k-1-pad) * (W + 2*pad) + (k-1-pad) + 1`` cycles after the
    image's first input handshake.

    Parameters
    ----------
    height, width, kernel, stride, pad : int
        A geometry that :func:`check_geometry` accepts.
    pad_word : int
        Payload word of a padding pixel.
    in_format, out_format : VectorFormat
        Formats of an input pixel and of an output beat.
    pipelined : bool
        Look up the next position's "real" and "window ends here" flags a step ahead, into
        registers, so that the step signal is two gates from registers (a pipelined network's
        clock). Same timing and output.

    Members
    -------
    i : In(stream.Signature(in_format.shape))
        Input pixels.
    o : Out(stream.Signature(out_format.shape))
        One beat per window, as :meth:`result` makes it.
    """

    def __init__(self, height, width, kernel, stride, pad, pad_word, in_format, out_format, *, pipelined=False):
        if not isinstance(pipelined, bool):
            raise TypeError(f"Pipelined must be a bool, not {pipelined!r}")
        self._pipelined = pipelined
        self._height, self._width = height, width
        self._kernel, self._stride, self._pad = kernel, stride, pad
        self._pad_word = pad_word
        self._in_format, self._out_format = in_format, out_format
        super().__init__({
            "i": In(stream.Signature(in_format.shape)),
            "o": Out(stream.Signature(out_format.shape)),
        })

    height = property(lambda self: self._height)
    width = property(lambda self: self._width)
    channels = property(lambda self: self._in_format.count)
    kernel = property(lambda self: self._kernel)
    stride = property(lambda self: self._stride)
    pad = property(lambda self: self._pad)
    in_format = property(lambda self: self._in_format)
    out_format = property(lambda self: self._out_format)
    pipelined = property(lambda self: self._pipelined)

    @property
    def padded_height(self):
        return self._height + 2 * self._pad

    @property
    def padded_width(self):
        return self._width + 2 * self._pad

    @property
    def out_height(self):
        return (self.padded_height - self._kernel) // self._stride + 1

    @property
    def out_width(self):
        return (self.padded_width - self._kernel) // self._stride + 1

    @property
    def in_beats_per_image(self):
        """Input beats (pixels) per image: ``H * W``."""
        return self._height * self._width

    @property
    def out_beats_per_image(self):
        """Output beats per image: ``OH * OW``."""
        return self.out_height * self.out_width

    @property
    def cycles_per_item(self):
        """Cycles between the starts of consecutive images (a scan's item is a whole image) when
        neither side stalls."""
        return self.padded_height * self.padded_width

    @property
    def latency(self):
        """Cycles from an image's first input handshake to its first output handshake, no stalls."""
        lead = self._kernel - 1 - self._pad
        return lead * self.padded_width + lead + 1

    @property
    def buffer_pixels(self):
        """Pixels held by the shift chain: ``(k-1)*(W + 2*pad) + k - 1`` (the newest is the input)."""
        return (self._kernel - 1) * self.padded_width + self._kernel - 1

    def _delay(self, m, value, length, step, name):
        """``value`` as it was ``length`` steps ago (a wire for 0)."""
        if length == 0:
            return value
        width = len(value)
        if length < _MEMORY_MIN_DEPTH:
            regs = [Signal(width, name=f"{name}_{n}") for n in range(length)]
            with m.If(step):
                m.d.sync += [dst.eq(src) for src, dst in zip([value] + regs, regs)]
            return regs[-1]
        # A ring of ``length`` words: each step reads the oldest word and overwrites it with the
        # newest. The read port is synchronous, so it fetches the next step's word one step early.
        mem = memory.Memory(shape=unsigned(width), depth=length, init=[])
        m.submodules[name] = mem
        wr, rd = mem.write_port(), mem.read_port()
        ptr = Signal(range(length), name=f"{name}_ptr")
        ptr_next = Mux(ptr == length - 1, 0, ptr + 1)
        m.d.comb += [
            wr.addr.eq(ptr), wr.data.eq(value), wr.en.eq(step),
            rd.addr.eq(ptr_next), rd.en.eq(step),
        ]
        with m.If(step):
            m.d.sync += ptr.eq(ptr_next)
        return rd.data

    def elaborate(self, platform):
        m = Module()
        k, s, pad = self._kernel, self._stride, self._pad
        hp, wp = self.padded_height, self.padded_width
        pw = self._in_format.width

        def mask(n, bit):
            return Const(sum(1 << j for j in range(n) if bit(j)), n)

        # Per-row and per-column flags, looked up by position: real (not padding) and
        # "a window ends here" (corner on the stride grid).
        real_rows = mask(hp, lambda y: pad <= y < pad + self._height)
        real_cols = mask(wp, lambda x: pad <= x < pad + self._width)
        emit_rows = mask(hp, lambda y: y >= k - 1 and (y - k + 1) % s == 0)
        emit_cols = mask(wp, lambda x: x >= k - 1 and (x - k + 1) % s == 0)

        py = Signal(range(hp))
        px = Signal(range(wp))
        real, emit, room, step = Signal(), Signal(), Signal(), Signal()
        r_valid = Signal()
        r_data = Signal(self._out_format.width)
        pixel = Signal(pw)

        def flags(y, x):
            # Without padding every position is real. The lookup would say so too, but only for
            # py < hp and px < wp, which synthesis cannot prove when hp or wp is not a power of
            # two: it would keep a pixel-wide padding multiplexer that never switches.
            return (1 if pad == 0 else real_rows.bit_select(y, 1) & real_cols.bit_select(x, 1),
                    emit_rows.bit_select(y, 1) & emit_cols.bit_select(x, 1))

        x_next = Mux(px == wp - 1, 0, px + 1)
        y_next = Mux(px == wp - 1, Mux(py == hp - 1, 0, py + 1), py)
        if self._pipelined:
            # The flags of the next position are looked up a step ahead and kept in registers:
            # the step, which enables every register of the scan, is then two gates from them.
            # At the first position (0, 0): real without padding, a window's corner for k = 1.
            real_r, emit_r = Signal(init=int(pad == 0)), Signal(init=int(k == 1))
            with m.If(step):
                m.d.sync += [real_r.eq(flags(y_next, x_next)[0]), emit_r.eq(flags(y_next, x_next)[1])]
            m.d.comb += [real.eq(real_r), emit.eq(emit_r)]
        else:
            m.d.comb += [real.eq(flags(py, px)[0]), emit.eq(flags(py, px)[1])]
        m.d.comb += [
            room.eq(~r_valid | self.o.ready),
            # A step waits for the input only at real positions, for the output only at corners.
            step.eq((~real | self.i.valid) & (~emit | room)),
            self.i.ready.eq(real & (~emit | room)),
            pixel.eq(Mux(real, Value.cast(self.i.payload), self._pad_word)),
            self.o.valid.eq(r_valid),
            Value.cast(self.o.payload).eq(r_data),
        ]

        if self._pipelined:
            with m.If(step):
                m.d.sync += [px.eq(x_next), py.eq(y_next)]
        else:
            with m.If(step):
                with m.If(px == wp - 1):
                    m.d.sync += [px.eq(0), py.eq(Mux(py == hp - 1, 0, py + 1))]
                with m.Else():
                    m.d.sync += px.eq(px + 1)

        # taps[r][j] is the pixel r padded rows and j columns before the current position;
        # taps[0][0] is the current pixel itself.
        taps = [[pixel if (r, j) == (0, 0) else Signal(pw, name=f"tap_{r}_{j}") for j in range(k)]
                for r in range(k)]
        for r in range(k):
            with m.If(step):
                m.d.sync += [taps[r][j].eq(taps[r][j - 1]) for j in range(1, k)]
            if r + 1 < k:
                # From the oldest tap of row r to the newest of row r+1: wp - k + 1 steps, the
                # last of them the tap register itself.
                older = self._delay(m, taps[r][k - 1], wp - k, step, f"line{r}")
                with m.If(step):
                    m.d.sync += taps[r + 1][0].eq(older)

        pixels = [[taps[k - 1 - ky][k - 1 - kx] for kx in range(k)] for ky in range(k)]
        with m.If(self.o.valid & self.o.ready):
            m.d.sync += r_valid.eq(0)
        with m.If(step & emit):
            m.d.sync += [r_valid.eq(1), r_data.eq(self.result(m, pixels))]
        return m


def pad_word(fmt, pad_value):
    """The payload word of a pixel whose every element is ``pad_value``."""
    return fmt.pack([[pad_value] * fmt.count])[0]


def check_pad_value(fmt, pad, pad_value):
    """Check ``pad_value`` against the element type; ``None`` means 0 for integer elements."""
    if fmt.kind == "bipolar":
        if pad_value is None and pad == 0:
            return -1
        if not isinstance(pad_value, int) or isinstance(pad_value, bool) or pad_value not in (-1, 1):
            raise ValueError(f"Pad value must be -1 or +1 for bipolar elements, not {pad_value!r}")
        return pad_value
    if pad_value is None:
        return 0
    if not isinstance(pad_value, int) or isinstance(pad_value, bool):
        raise TypeError(f"Pad value must be an integer, not {pad_value!r}")
    lo, hi = (0, (1 << fmt.bits) - 1) if fmt.kind == "uint" else \
        (-(1 << (fmt.bits - 1)), (1 << (fmt.bits - 1)) - 1)
    if not lo <= pad_value <= hi:
        raise ValueError(f"Pad value must be in [{lo}, {hi}] for {fmt.kind}{fmt.bits} elements, "
                         f"not {pad_value}")
    return pad_value


class SlidingWindow(WindowScan):
    """Emits the ``k x k`` window of every output position of a streamed, padded feature map.

    Input: ``H * W`` pixels per image in raster order, C elements each. Output: ``OH * OW``
    window vectors per image in output raster order, with ``OH = (H + 2*pad - k) // stride + 1``
    (``OW`` likewise); a window vector holds ``k*k*C`` elements, element ``(ky*k + kx)*C + c``
    being channel c of the pixel at row ky, column kx of the window. Padding pixels are made in
    hardware; the input carries only real pixels. Images stream back to back without a gap.

    Timing, with neither side stalling: one step per padded position, so
    ``cycles_per_item = (H + 2*pad) * (W + 2*pad)`` cycles between the starts of consecutive
    images (an item is a whole image) (the input is not ready on the padding steps); a window is handed over one cycle after
    the step of its bottom-right corner, so ``latency = (k-1-pad)*(W + 2*pad) + (k-1-pad) + 1``
    cycles from an image's first input handshake to its first output handshake. Within an image
    the output beats follow the corners: one per cycle along a row when ``stride = 1``.

    Storage: ``buffer_pixels = (k-1)*(W + 2*pad) + k - 1`` pixels; the ``k*k - 1`` window taps
    are flip-flops, and the ``k-1`` line delays of ``W + 2*pad - k`` pixels are memories
    (flip-flops below 2 pixels).

    Parameters
    ----------
    height, width : int
        Size of the input image, without padding.
    channels : int
        Elements per pixel (C).
    kernel : int
        Window size k; ``pad < k`` and k must fit the padded image.
    stride : int
        Step between windows, in both directions.
    pad : int
        Padding pixels on each side.
    pad_value : int or None
        Value of every padding element: -1 or +1 for bipolar elements, within range for integers.
        ``None`` means 0 for integers; bipolar elements need it whenever ``pad > 0``.
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
        Windows, ``out_format = VectorFormat(kind, bits, k*k*C)``.

    Raises
    ------
    TypeError
        If a size is not an integer, or an integer pad value is not an integer.
    ValueError
        If a size is out of range, the kernel does not fit, or the pad value is not representable.
    """

    def __init__(self, height, width, channels, kernel, *, stride=1, pad=0, pad_value=None,
                 kind="bipolar", bits=1, pipelined=False):
        check_geometry(height, width, channels, kernel, stride, pad)
        in_format = VectorFormat(kind, bits, channels)
        pad_value = check_pad_value(in_format, pad, pad_value)
        self._pad_value = pad_value if pad else None
        super().__init__(height, width, kernel, stride, pad, pad_word(in_format, pad_value),
                         in_format, VectorFormat(kind, bits, kernel * kernel * channels), pipelined=pipelined)

    @property
    def pad_value(self):
        """The padding element, or ``None`` without padding."""
        return self._pad_value

    def result(self, m, pixels):
        return Cat(*(p for row in pixels for p in row))
