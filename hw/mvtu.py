"""XNOR-popcount matrix-vector-threshold unit (MVTU) with PE x SIMD folding.

For ±1 vectors of length n encoded as bits (1 = +1, 0 = -1):
``dot(x, w) = 2 * popcount(XNOR(x, w)) - n``. So the unit accumulates popcounts and compares them with
thresholds moved into the popcount domain: ``dot >= T  <=>  popcount >= ceil((T + n) / 2)``.
"""

import numpy as np
from amaranth.hdl import Cat, Module, Mux, Signal, unsigned
from amaranth.lib import memory, stream, wiring
from amaranth.lib.wiring import In, Out

from .payload import VectorFormat
from .popcount import popcount

__all__ = ["XnorPopcountMVTU"]


def _check_pm1_matrix(weights):
    w = np.asarray(weights)
    if w.ndim != 2 or w.size == 0 or not np.all((w == 1) | (w == -1)):
        raise ValueError(f"Weights must be a non-empty 2-D array of -1/+1, not shape {w.shape}"
                         + ("" if w.ndim != 2 or w.size == 0 else " with other values"))
    return w.astype(np.int64)


class XnorPopcountMVTU(wiring.Component):
    """Bipolar weights x bipolar inputs, folded over PE rows and SIMD columns.

    Each input beat carries one whole vector of MW bipolar values. The unit keeps it while it walks
    the MH x MW weight matrix, PE rows and SIMD columns per cycle, and emits one output beat per input:
    MH bipolar values (with thresholds) or MH signed dot products (without; the last layer).

    Timing: ``cycles_per_item = (MH / PE) * (MW / SIMD)``; an input is accepted on the same cycle the
    previous one issues its last step, so back-to-back vectors need exactly that many cycles each.
    ``latency = cycles_per_item + 2`` from the input handshake to the output handshake (one cycle
    for the weight memory read, one for the accumulate/compare register).

    Parameters
    ----------
    weights : array (MH, MW)
        -1/+1 weights.
    thresholds : array (MH,) or None
        Dot-product thresholds: output +1 iff ``dot >= thresholds[h]``. ``None`` emits the dot products.
    pe, simd : int
        Folding: PE must divide MH and SIMD must divide MW.

    Members
    -------
    i : In(stream.Signature(VectorFormat("bipolar", 1, MW).shape))
        Input vectors.
    o : Out(stream.Signature(out_format.shape))
        Output vectors.

    Raises
    ------
    ValueError
        On a malformed weight matrix or threshold vector, or a folding that does not divide.
    """

    def __init__(self, weights, thresholds=None, *, pe=1, simd=1):
        w = _check_pm1_matrix(weights)
        mh, mw = w.shape
        for name, v, total in (("PE", pe, mh), ("SIMD", simd, mw)):
            if not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be a positive integer, not {v!r}")
            if total % v:
                dim = "MH" if name == "PE" else "MW"
                raise ValueError(f"{name} must divide {dim}={total}, not {v}")
        if thresholds is not None:
            t = np.asarray(thresholds)
            if t.shape != (mh,) or t.dtype.kind not in "iu":
                raise ValueError(f"Thresholds must be an integer array of shape ({mh},), not "
                                 f"{t.dtype} {t.shape}")
            # popcount >= ceil((T + MW) / 2), clipped to the reachable 0..MW+1 (MW+1 = never).
            self._thresholds = np.clip(-(-(t.astype(np.int64) + mw) // 2), 0, mw + 1)
        else:
            self._thresholds = None
        self._weights = w
        self._pe, self._simd = pe, simd
        self._in_format = VectorFormat("bipolar", 1, mw)
        if self._thresholds is None:
            self._out_format = VectorFormat("int", mw.bit_length() + 1, mh)
        else:
            self._out_format = VectorFormat("bipolar", 1, mh)
        super().__init__({
            "i": In(stream.Signature(self._in_format.shape)),
            "o": Out(stream.Signature(self._out_format.shape)),
        })

    mh = property(lambda self: self._weights.shape[0])
    mw = property(lambda self: self._weights.shape[1])
    pe = property(lambda self: self._pe)
    simd = property(lambda self: self._simd)
    in_format = property(lambda self: self._in_format)
    out_format = property(lambda self: self._out_format)
    has_thresholds = property(lambda self: self._thresholds is not None)

    @property
    def neuron_folds(self):
        return self.mh // self.pe

    @property
    def synapse_folds(self):
        return self.mw // self.simd

    @property
    def cycles_per_item(self):
        """Cycles between accepted inputs when neither side stalls."""
        return self.neuron_folds * self.synapse_folds

    @property
    def latency(self):
        """Cycles from an input handshake to its output handshake, with the output always ready."""
        return self.cycles_per_item + 2

    @property
    def weight_memory_bits(self):
        return self.mh * self.mw

    def weight_words(self):
        """Weight memory contents: word ``nf * SF + sf``, bit ``p * SIMD + s`` is W[nf*PE+p, sf*SIMD+s] == +1."""
        nf, sf, pe, simd = self.neuron_folds, self.synapse_folds, self.pe, self.simd
        bits = (self._weights == 1).reshape(nf, pe, sf, simd).transpose(0, 2, 1, 3).reshape(nf * sf, pe * simd)
        return [int.from_bytes(np.packbits(row, bitorder="little").tobytes(), "little") for row in bits]

    def threshold_words(self):
        """Threshold memory contents: word ``nf``, field ``p`` holds the popcount threshold of row nf*PE+p."""
        tw = (self.mw + 1).bit_length()
        words = []
        for nf in range(self.neuron_folds):
            group = self._thresholds[nf * self.pe:(nf + 1) * self.pe]
            words.append(sum(int(t) << (p * tw) for p, t in enumerate(group)))
        return words

    def elaborate(self, platform):
        m = Module()
        nf_max, sf_max = self.neuron_folds - 1, self.synapse_folds - 1
        pe, simd, mw = self.pe, self.simd, self.mw
        pcw = mw.bit_length()

        m.submodules.weights = weights = memory.Memory(
            shape=unsigned(pe * simd), depth=self.cycles_per_item, init=self.weight_words())
        w_rd = weights.read_port()
        if self.has_thresholds:
            tw = (mw + 1).bit_length()
            m.submodules.thresholds = thresholds = memory.Memory(
                shape=unsigned(pe * tw), depth=self.neuron_folds, init=self.threshold_words())
            t_rd = thresholds.read_port()

        # Issue stage: walks (nf, sf) over the current input vector.
        active = Signal()
        addr = Signal(range(self.cycles_per_item))
        nf = Signal(range(nf_max + 1))
        sf = Signal(range(sf_max + 1))
        x_cur = Signal(mw)
        issue_last = Signal()
        # Compute stage: one cycle behind, when the memory data arrives.
        c_valid, c_first, c_last_sf, c_last = Signal(), Signal(), Signal(), Signal()
        c_nf = Signal(range(nf_max + 1))
        x_slice = Signal(simd)
        acc = [Signal(pcw, name=f"acc{p}") for p in range(pe)]
        out_build = Signal(self.out_format.width)
        # Result register: the output beat.
        r_valid = Signal()
        r_data = Signal(self.out_format.width)

        # The whole pipeline holds while a finished result cannot be stored.
        advance = Signal()
        m.d.comb += [
            advance.eq(~(c_valid & c_last & r_valid & ~self.o.ready)),
            issue_last.eq(active & (addr == self.cycles_per_item - 1)),
            self.i.ready.eq(advance & (~active | issue_last)),
            w_rd.addr.eq(addr),
            w_rd.en.eq(advance),
            self.o.valid.eq(r_valid),
            self.o.payload.eq(r_data),
        ]
        if self.has_thresholds:
            m.d.comb += [t_rd.addr.eq(nf), t_rd.en.eq(advance)]

        with m.If(self.o.valid & self.o.ready):
            m.d.sync += r_valid.eq(0)

        with m.If(advance):
            m.d.sync += [
                c_valid.eq(active),
                c_first.eq(sf == 0),
                c_last_sf.eq(sf == sf_max),
                c_last.eq(issue_last),
                c_nf.eq(nf),
                x_slice.eq(x_cur.word_select(sf, simd)),
            ]
            with m.If(active):
                m.d.sync += addr.eq(Mux(issue_last, 0, addr + 1))
                with m.If(sf == sf_max):
                    m.d.sync += [sf.eq(0), nf.eq(Mux(nf == nf_max, 0, nf + 1))]
                with m.Else():
                    m.d.sync += sf.eq(sf + 1)
            with m.If(self.i.valid & self.i.ready):
                m.d.sync += [x_cur.eq(self.i.payload), active.eq(1)]
            with m.Elif(issue_last):
                m.d.sync += active.eq(0)

            with m.If(c_valid):
                group = []
                for p in range(pe):
                    w_p = w_rd.data[p * simd:(p + 1) * simd]
                    total = Signal(pcw, name=f"total{p}")
                    m.d.comb += total.eq(Mux(c_first, 0, acc[p]) + popcount(~(w_p ^ x_slice)))
                    m.d.sync += acc[p].eq(total)
                    if self.has_thresholds:
                        group.append(total >= t_rd.data[p * tw:(p + 1) * tw])
                    else:
                        dot = Signal(self.out_format.shape.elem_shape, name=f"dot{p}")
                        m.d.comb += dot.eq(2 * total - mw)
                        group.append(dot)
                group = Cat(*group)
                with m.If(c_last_sf):
                    m.d.sync += out_build.word_select(c_nf, len(group)).eq(group)
                    with m.If(c_last):
                        m.d.sync += [
                            r_data.eq(out_build),
                            r_data.word_select(c_nf, len(group)).eq(group),
                            r_valid.eq(1),
                        ]
        return m
