"""Multi-threshold activation: each channel's value becomes the number of its thresholds it reaches.

``y[c] = #{l : x[c] >= T[c, l]}``. With one threshold per channel and a bipolar output that count is
the output bit itself (1 = +1, 0 = -1); with ``2**k - 1`` thresholds it is a k-bit unsigned level.
This is where batch-norm plus sign, or plus a k-bit quantizer, ends up after streamlining.
"""

import numpy as np
from amaranth.hdl import Array, Cat, Const, Module, Mux, Shape, Signal
from amaranth.lib import data, memory, stream, wiring
from amaranth.lib.wiring import In, Out

from .payload import VectorFormat
from .compressor import add_behavioural

__all__ = ["threshold_count", "MultiThresholdUnit", "check_invert", "invert_masks", "signed_levels"]


def threshold_count(value, thresholds):
    """The number of ``thresholds`` that ``value`` reaches, ``#{l : value >= thresholds[l]}``.

    A bank of L comparators whose results are summed by a balanced adder tree: one comparator level
    then ``ceil(log2 L)`` adder levels, all combinational. A binary search over sorted thresholds
    would need only ``log2(L + 1)`` comparators, but they would be chained through multiplexers
    that pick the next threshold, a deeper path for the L <= 15 that low-bit activations use.
    The bank also does not rely on the thresholds being sorted, so it computes exactly the count
    the reference defines for any thresholds.

    Parameters
    ----------
    value : Value
        The compared value, signed or unsigned.
    thresholds : sequence of Value or int
        The channel's L thresholds, e.g. fields of a memory word; any signedness, since Amaranth
        compares mixed signed and unsigned operands by value.

    Returns
    -------
    Value
        An unsigned value of ``L.bit_length()`` bits, in 0..L.

    Raises
    ------
    ValueError
        If ``thresholds`` is empty.
    """
    thresholds = [thresholds[i] for i in range(len(thresholds))]
    if not thresholds:
        raise ValueError("Thresholds must hold at least one value, not 0")
    # Each comparison enters the adder tree once. (Slicing the bits out of one Cat of all
    # comparisons would repeat the whole Cat in the netlist for every bit: quadratic in L.)
    reached = [(value >= t).as_unsigned() for t in thresholds]
    return add_behavioural(reached)[:len(thresholds).bit_length()]


def signed_levels(count):
    """A k-bit count ``c`` as the two's complement of ``c - 2**(k-1)``, the levels of a signed
    quantizer: the top bit inverted, no adder."""
    return Cat(count[:-1], ~count[-1])


def check_invert(invert, channels):
    """The (channels,) bool array of inverted channels, read-only, all False when ``invert`` is None."""
    inv = np.zeros(channels, dtype=bool) if invert is None else np.asarray(invert)
    if inv.shape != (channels,) or inv.dtype != np.bool_:
        raise ValueError(f"Invert must be a bool array of shape ({channels},), not {inv.dtype} {inv.shape}")
    inv = inv.copy()
    inv.setflags(write=False)
    return inv


def invert_masks(invert, width):
    """Constants of ``width`` bits, one per group of ``width`` consecutive channels, whose bit p
    says whether channel ``group * width + p`` is inverted; None when no channel is."""
    if not invert.any():
        return None
    groups = invert.reshape(-1, width)
    return [Const(sum(int(b) << k for k, b in enumerate(g)), width) for g in groups]


def _check_format(what, fmt, kinds, count):
    if not isinstance(fmt, VectorFormat):
        raise TypeError(f"{what} format must be a VectorFormat, not {fmt!r}")
    if fmt.kind not in kinds:
        raise ValueError(f"{what} format must have {' or '.join(kinds)} elements, not {fmt.kind}")
    if fmt.count != count:
        raise ValueError(f"{what} format must have {count} elements, one per channel, not {fmt.count}")


def _check_pe(pe, channels):
    if not isinstance(pe, int) or isinstance(pe, bool) or pe < 1:
        raise ValueError(f"PE must be a positive integer, not {pe!r}")
    if channels % pe:
        raise ValueError(f"PE must divide the {channels} channels, not {pe}")


class MultiThresholdUnit(wiring.Component):
    """Per-channel multi-threshold activation over a stream of vectors, PE channels per cycle.

    Each input beat carries one vector of C values and yields one output beat of C outputs: a
    bipolar bit (one threshold per channel) or an unsigned k-bit count (``2**k - 1`` thresholds).
    The thresholds sit in a memory of depth C/PE whose word ``f`` holds the L thresholds of each
    of the PE channels ``f*PE .. f*PE + PE - 1``; each cycle one word is read and PE
    :func:`threshold_count` banks run. Thresholds outside the input range are clipped to
    ``[min, max + 1]``, which keeps every comparison's result and makes the memory only one bit
    wider than an input element.

    Timing: ``cycles_per_item = C / PE``; the next input is accepted on the cycle the current one
    issues its last fold, so back-to-back vectors take exactly that many cycles each.
    ``latency = C / PE + 2`` cycles from the input handshake to the output handshake, with the
    output ready: the vector is registered on its handshake, its C/PE folds are issued on the
    next C/PE cycles, and the last fold's comparison, one synchronous memory read later, is
    registered as the output beat.

    Parameters
    ----------
    thresholds : array (C, L)
        Integer thresholds; channel c outputs ``#{l : x[c] >= thresholds[c, l]}``. The reference,
        ``lowbit.compiler.ir.MultiThreshold``, also wants them non-decreasing along L; the
        hardware does not depend on it.
    in_format : VectorFormat
        C ``int`` or ``uint`` elements.
    out_format : VectorFormat
        C ``bipolar`` elements (L = 1) or C ``uint`` k-bit elements (L = 2**k - 1).
    pe : int
        Channels per cycle; must divide C.
    invert : array of bool (C,), optional
        Channels that count down: ``L - #{l : x[c] >= T[c, l]}`` (bipolar: the opposite bit).
        With L = 2**k - 1 that is the count's bits inverted, so it costs one XOR per output bit.

    Members
    -------
    i : In(stream.Signature(in_format.shape))
        Input vectors.
    o : Out(stream.Signature(out_format.shape))
        Output vectors.

    Raises
    ------
    TypeError
        If a format is not a ``VectorFormat``.
    ValueError
        On a malformed threshold array, a format that does not fit the thresholds, or a PE that is
        not a positive divisor of C.
    """

    def __init__(self, thresholds, in_format, out_format, *, pe=1, invert=None):
        t = np.asarray(thresholds)
        if t.ndim != 2 or t.size == 0 or t.dtype.kind not in "iu":
            raise ValueError(f"Thresholds must be a non-empty 2-D integer array, not {t.dtype} {t.shape}")
        channels, levels = t.shape
        _check_format("Input", in_format, ("int", "uint"), channels)
        _check_format("Output", out_format, ("bipolar", "uint", "int"), channels)
        if out_format.kind == "int" and out_format.bits < 2:
            raise ValueError("A signed output needs at least 2 bits")
        want = 1 if out_format.kind == "bipolar" else 2 ** out_format.bits - 1
        if levels != want:
            elem = "bipolar" if out_format.kind == "bipolar" else f"{out_format.kind}{out_format.bits}"
            article = "An" if elem.startswith("int") else "A"
            raise ValueError(f"{article} {elem} output needs {want} threshold{'s' * (want > 1)} per channel, "
                             f"not {levels}")
        _check_pe(pe, channels)
        self._invert = check_invert(invert, channels)

        lo, hi = in_format.element.min, in_format.element.max
        self._thresholds = t.astype(np.int64)
        self._thresholds.setflags(write=False)
        self._stored = np.clip(self._thresholds, lo, hi + 1)
        self._threshold_shape = Shape.cast(range(lo, hi + 2))
        self._in_format, self._out_format, self._pe = in_format, out_format, pe
        super().__init__({
            "i": In(stream.Signature(in_format.shape)),
            "o": Out(stream.Signature(out_format.shape)),
        })

    thresholds = property(lambda self: self._thresholds, doc="The (C, L) thresholds as given, read-only.")
    invert = property(lambda self: self._invert, doc="The (C,) inverted channels, read-only.")
    channels = property(lambda self: self._thresholds.shape[0], doc="C, the channels of a vector.")
    levels = property(lambda self: self._thresholds.shape[1], doc="L, the thresholds per channel.")
    pe = property(lambda self: self._pe, doc="Channels computed per cycle.")
    in_format = property(lambda self: self._in_format, doc="Payload format of ``i``.")
    out_format = property(lambda self: self._out_format, doc="Payload format of ``o``.")
    threshold_shape = property(lambda self: self._threshold_shape,
                               doc="Shape of one stored threshold: the input range plus one.")

    @property
    def folds(self):
        """C / PE: memory words, and cycles spent on one vector."""
        return self.channels // self.pe

    @property
    def cycles_per_item(self):
        """Cycles between accepted inputs when neither side stalls: C / PE."""
        return self.folds

    @property
    def latency(self):
        """Cycles from an input handshake to its output handshake, with the output ready: C / PE + 2."""
        return self.folds + 2

    @property
    def threshold_memory_bits(self):
        return self.channels * self.levels * self._threshold_shape.width

    def threshold_words(self):
        """Memory contents: word ``f``, field ``p * L + l`` holds the (clipped) ``T[f*PE + p, l]``."""
        return [[int(v) for v in self._stored[f * self.pe:(f + 1) * self.pe].reshape(-1)]
                for f in range(self.folds)]

    def elaborate(self, platform):
        m = Module()
        folds, pe, levels = self.folds, self.pe, self.levels
        in_elem = self._in_format.shape.elem_shape
        group_bits = pe * self._in_format.bits

        m.submodules.thresholds = thresholds = memory.Memory(
            shape=data.ArrayLayout(self._threshold_shape, pe * levels), depth=folds,
            init=self.threshold_words())
        t_rd = thresholds.read_port()

        # Issue stage: walks the folds of the current vector and addresses the threshold memory.
        active = Signal()
        fold = Signal(range(folds))
        x_cur = Signal(self._in_format.width)
        issue_last = Signal()
        # Compare stage: one cycle behind, when the thresholds arrive.
        c_valid, c_last = Signal(), Signal()
        c_fold = Signal(range(folds))
        c_x = Signal(data.ArrayLayout(in_elem, pe))
        out_build = Signal(self._out_format.width)
        # Result register: the output beat.
        r_valid = Signal()
        r_data = Signal(self._out_format.width)

        # Everything holds while a finished vector cannot be moved into the result register.
        advance = Signal()
        m.d.comb += [
            advance.eq(~(c_valid & c_last & r_valid & ~self.o.ready)),
            issue_last.eq(active & (fold == folds - 1)),
            self.i.ready.eq(advance & (~active | issue_last)),
            t_rd.addr.eq(fold),
            t_rd.en.eq(advance),
            self.o.valid.eq(r_valid),
            self.o.payload.eq(r_data),
        ]

        with m.If(self.o.valid & self.o.ready):
            m.d.sync += r_valid.eq(0)

        with m.If(advance):
            m.d.sync += [
                c_valid.eq(active),
                c_last.eq(issue_last),
                c_fold.eq(fold),
                c_x.eq(x_cur.word_select(fold, group_bits)),
            ]
            with m.If(active):
                m.d.sync += fold.eq(Mux(issue_last, 0, fold + 1))
            with m.If(self.i.valid & self.i.ready):
                m.d.sync += [x_cur.eq(self.i.payload), active.eq(1)]
            with m.Elif(issue_last):
                m.d.sync += active.eq(0)

            with m.If(c_valid):
                counts = []
                inverted = invert_masks(self._invert, pe)
                if inverted is not None:
                    mask = Signal(pe, name="inverted")
                    m.d.comb += mask.eq(Array(inverted)[c_fold])
                for p in range(pe):
                    count = Signal(self._out_format.bits, name=f"count{p}")
                    m.d.comb += count.eq(threshold_count(
                        c_x[p], [t_rd.data[p * levels + l] for l in range(levels)]))
                    if inverted is not None:
                        count = count ^ mask[p].replicate(len(count))
                    if self._out_format.kind == "int":
                        count = signed_levels(count)
                    counts.append(count)
                group = Cat(*counts)
                m.d.sync += out_build.word_select(c_fold, len(group)).eq(group)
                with m.If(c_last):
                    m.d.sync += [
                        r_data.eq(out_build),
                        r_data.word_select(c_fold, len(group)).eq(group),
                        r_valid.eq(1),
                    ]
        return m
