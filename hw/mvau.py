"""Matrix-vector(-threshold) unit with PE x SIMD folding and one arithmetic lane per weight format.

Each cycle the unit multiplies SIMD inputs by SIMD weights in each of PE rows (the lane, see
hw/lanes.py), accumulates the partial sums over MW/SIMD cycles, and then either compares each row's
dot product with its thresholds (MultiThreshold fused in) or emits the dot products themselves.
"""

import math

import numpy as np
from amaranth.hdl import Array, Cat, Const, Module, Mux, Signal, signed
from amaranth.lib import fifo, stream, wiring
from amaranth.lib.wiring import In, Out

from lowbit.core.bounds import dot_bounds, signed_bits
from lowbit.core.formats import weight_format

from .lanes import lane_for, lane_stages
from .pipe import Pipe, check_pipeline
from .payload import VectorFormat
from .rom import ROM
from .threshold import check_invert, invert_masks, signed_levels, threshold_count

# Pipelined, an input of more than SLICE_SELECT_MAX slices is selected in steps of at most
# SLICE_SELECT_WAYS ways (see MatrixVectorUnit._select_slice): one multiplexer of 200 ways by the
# fold counter was a placed CNN's critical path, one of 16 ways placed at 150 MHz and more.
SLICE_SELECT_MAX = 16
SLICE_SELECT_WAYS = 4

# The rom_style of the weight and threshold ROMs per weight memory (Yosys: block RAM or LUTs; LUT
# RAM needs a write port); "auto" leaves the choice to synthesis.
ROM_STYLES = {"block": "block", "lut": "logic"}

__all__ = ["MatrixVectorUnit", "ROM_STYLES"]

class MatrixVectorUnit(wiring.Component):
    """``y = W x`` over a stream of vectors, optionally followed by per-row thresholds.

    Each input beat carries one whole vector of MW elements. The unit keeps it while it walks the
    MH x MW weight matrix, PE rows and SIMD columns per cycle, and emits one output beat per input:
    MH thresholded values (bipolar for one threshold per row, uint k for 2**k - 1) or the MH
    signed dot products.

    Timing: ``cycles_per_item = (MH / PE) * (MW / SIMD)``; the next input is accepted on the cycle
    the current one issues its last step, so back-to-back vectors take exactly that many cycles.
    ``latency = cycles_per_item + 2`` from input handshake to output handshake (one cycle of
    weight read, one of accumulate and compare), plus :attr:`pipeline_stages` when pipelined.

    Accumulators are sized from the exact range of every row's dot product over all inputs of
    ``in_format`` (see ``lowbit.core.bounds.dot_bounds``), so they cannot overflow.

    Structure: the weights and thresholds are :class:`~lowbit.hw.rom.ROM` submodules
    (``weights_rom``, ``thresholds_rom``; a store of one word is a constant instead), and with
    weights from a ROM each PE's lane, accumulator and compares form a submodule of their own
    (``pe{p}_row``), which synthesis can map one by one (see :mod:`lowbit.hw.rom`).

    Parameters
    ----------
    weights : array (MH, MW)
        Integer weight levels of ``weight_format``.
    weight_format : str
        A name from ``lowbit.core.formats.WEIGHT_FORMATS``; it selects the lane.
    in_format : VectorFormat
        Input elements (``count`` must be MW): bipolar, uint k or int k.
    thresholds : array (MH, L) or None
        Dot-product thresholds, non-decreasing per row: output ``#{l : dot >= T[h, l]}``, or for
        L = 1 bipolar ``+1 iff dot >= T``. ``None`` emits the dot products.
    invert : array of bool (MH,), optional
        Rows whose output counts down, ``L - #{l : dot >= T[h, l]}`` (see
        ``lowbit.compiler.ir.MultiThreshold``): a tiled layer's copy with a negative scale keeps
        the shared tile row this way. Needs thresholds.
    out_kind : {"bipolar", "uint", "int"}
        With one threshold per row, whether the output bit means -1/+1 (``"bipolar"``, the
        default) or 0/1 (``"uint"``, a 1-bit unsigned activation). The bit is the same; the
        format tells the next engine how to read it. More thresholds give ``uint`` counts, or
        with ``"int"`` signed levels ``count - 2**(k-1)`` (the count's top bit inverted).
    pe, simd : int
        Folding: PE must divide MH and SIMD must divide MW.
    copies : int
        Tiled weights (Tiled Bit Networks): ``weights`` is the tile of R rows and the layer's
        weight matrix is the tile repeated ``copies`` times, one scale per copy. Each tile row's dot
        product is computed once and feeds its ``copies`` outputs (row ``i * R + r`` of copy i),
        each with its own thresholds, into which the copy's scale is folded. Compute and weight
        memory shrink by ``copies``; ``MH = copies * R``.
    weight_memory : {"auto", "block", "lut", "const"}
        ``"auto"``: weights (and thresholds) in ROMs that synthesis maps as it sees fit;
        ``"block"`` / ``"lut"``: the same ROMs with a ``rom_style`` attribute
        asking for block RAM or for logic (LUTs). ``"const"``: baked into logic, allowed only when fully
        unrolled (one step per vector): the lane sees each weight as a Python integer, so a zero
        weight adds no logic, a weight of +-1 adds its input plain or inverted, and the
        negations' corrections gather into one constant (``Lane.partial_const``).
    pipeline : int
        0: the lane's tree, the accumulate and the compare of a step take one cycle. ``k >= 1``:
        a weight ROM's output is registered, the tree registers its bits every k counter levels
        and before its final adder (:mod:`lowbit.hw.pipe`), and the compare reads the stored
        accumulator one cycle later. Nothing after the issue stage stalls: a vector is taken only
        when the output queue (:attr:`output_queue_depth` beats) will have room for it, so no
        combinational path runs from ``o.ready`` to ``i.ready``, and the stages need no enable.
        Throughput is unchanged; latency grows by :attr:`pipeline_stages`.
    behavioural : bool
        Sum each chunk's products with a balanced tree of plain ``+`` left to synthesis, instead
        of the lane's compressor tree (and, for ``"const"`` weights, the weights reach the lane
        as a constant word, not as integers). Same results and timing; the baseline that
        ``benchmarks/arith.py`` measures the lanes against.

    Members
    -------
    i : In(stream.Signature(in_format.shape))
    o : Out(stream.Signature(out_format.shape))

    Raises
    ------
    ValueError
        On a malformed matrix, input format or thresholds, a weight outside the format's levels,
        a folding that does not divide, or ``"const"`` weights that are not fully unrolled.
    TypeError
        If ``behavioural`` is not a bool.
    """

    def __init__(self, weights, weight_format_name, in_format, thresholds=None, *, pe=1, simd=1,
                 copies=1, weight_memory="auto", behavioural=False, out_kind="bipolar", invert=None,
                 pipeline=0):
        fmt = weight_format(weight_format_name)
        w = np.asarray(weights)
        if w.ndim != 2 or w.size == 0 or w.dtype.kind not in "iu":
            raise ValueError(f"Weights must be a non-empty 2-D integer array, not {w.dtype} {w.shape}")
        bad = ~np.isin(w, fmt.levels)
        if bad.any():
            h, c = np.argwhere(bad)[0]
            raise ValueError(f"Weight [{h}, {c}] = {w[h, c]} is not a level of format {fmt.name!r}")
        if not isinstance(copies, int) or isinstance(copies, bool) or copies < 1:
            raise ValueError(f"Copies must be a positive integer, not {copies!r}")
        rows, mw = w.shape
        mh = rows * copies
        if not isinstance(in_format, VectorFormat) or in_format.count != mw:
            raise ValueError(f"Input format must be a VectorFormat of {mw} elements, not {in_format!r}")
        for name, v, total in (("PE", pe, rows), ("SIMD", simd, mw)):
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ValueError(f"{name} must be a positive integer, not {v!r}")
            if total % v:
                dim = ("MH" if copies == 1 else "the tile's rows") if name == "PE" else "MW"
                raise ValueError(f"{name} must divide {dim}={total}, not {v}")
        if weight_memory not in ("auto", "block", "lut", "const"):
            raise ValueError("Weight memory must be 'auto', 'block', 'lut' or 'const', not "
                             f"{weight_memory!r}")
        if weight_memory == "const" and (rows // pe) * (mw // simd) != 1:
            raise ValueError(f"Weight memory 'const' needs a fully unrolled unit (PE={rows}, SIMD={mw}), "
                             f"not PE={pe}, SIMD={simd}")
        if not isinstance(behavioural, bool):
            raise TypeError(f"Behavioural must be a bool, not {behavioural!r}")
        self._behavioural = behavioural
        self._pipeline = check_pipeline(pipeline)
        if pipeline and behavioural:
            raise ValueError("Pipeline needs the compressor lanes; the behavioural baseline has no stages")
        self._tree_stages = None
        self._input_interval = None
        self._weights = w.astype(np.int64)
        self._format = fmt
        self._lane = lane_for(fmt.name, in_format.kind, in_format.bits)
        self._pe, self._simd, self._copies, self._weight_memory = pe, simd, copies, weight_memory
        self._in_format = in_format

        self._dot_range = dot_bounds(self._weights, in_format.element.min, in_format.element.max)
        scale, offset = self._lane.scale, self._lane.offset(mw)
        self._acc_range = tuple((d - offset) // scale for d in self._dot_range)

        if thresholds is not None:
            t = np.asarray(thresholds)
            if t.ndim != 2 or t.shape[0] != mh or t.shape[1] < 1 or t.dtype.kind not in "iu":
                raise ValueError(f"Thresholds must be an integer array of shape ({mh}, L), not "
                                 f"{t.dtype} {t.shape}")
            levels = t.shape[1]
            if levels > 1 and ((levels + 1) & levels or np.any(np.diff(t, axis=1) < 0)):
                raise ValueError("Thresholds must have 1 or 2**k - 1 non-decreasing levels per row")
            # dot >= T  <=>  acc >= ceil((T - offset) / scale); clipped to one past the range ("never").
            acc_t = -(-(t.astype(np.int64) - offset) // scale)
            self._thresholds = np.clip(acc_t, self._acc_range[0], self._acc_range[1] + 1)
            if out_kind not in ("bipolar", "uint", "int"):
                raise ValueError(f"Out kind must be 'bipolar', 'uint' or 'int', not {out_kind!r}")
            if out_kind == "int" and levels == 1:
                raise ValueError("A signed output needs 2**k - 1 >= 3 levels per row")
            self._out_format = (VectorFormat(out_kind, 1, mh) if levels == 1
                                else VectorFormat("int" if out_kind == "int" else "uint", levels.bit_length(), mh))
        else:
            if invert is not None:
                raise ValueError("Invert needs thresholds: it inverts their counts")
            self._thresholds = None
            self._out_format = VectorFormat("int", signed_bits(*self._dot_range), mh)
        self._invert = check_invert(invert, mh)
        super().__init__({
            "i": In(stream.Signature(in_format.shape)),
            "o": Out(stream.Signature(self._out_format.shape)),
        })

    rows = property(lambda self: self._weights.shape[0], doc="Weight rows stored: MH, or the tile's rows.")
    mh = property(lambda self: self._weights.shape[0] * self._copies, doc="MH, the outputs per vector.")
    mw = property(lambda self: self._weights.shape[1], doc="MW, the elements of an input vector.")
    copies = property(lambda self: self._copies, doc="Tiled copies of the stored rows (1: not tiled).")
    invert = property(lambda self: self._invert, doc="The (MH,) rows that count down, read-only.")
    pe = property(lambda self: self._pe, doc="PE: output rows computed per cycle.")
    simd = property(lambda self: self._simd, doc="SIMD: input elements taken per row per cycle.")
    lane = property(lambda self: self._lane.kind, doc="The arithmetic lane's name (see lowbit.hw.lanes).")
    weight_format = property(lambda self: self._format.name, doc="The weight format's registry name.")
    weight_memory = property(lambda self: self._weight_memory, doc="Where the weights are kept.")
    behavioural = property(lambda self: self._behavioural, doc="Whether the lanes are the behavioural baseline.")
    in_format = property(lambda self: self._in_format, doc="Payload format of ``i``.")
    out_format = property(lambda self: self._out_format, doc="Payload format of ``o``.")
    has_thresholds = property(lambda self: self._thresholds is not None,
                              doc="Whether the unit compares with thresholds (else it emits dot products).")
    dot_range = property(lambda self: self._dot_range, doc="Exact (min, max) of any row's dot product.")

    @property
    def neuron_folds(self):
        """Row groups a vector takes: R / PE."""
        return self.rows // self.pe

    @property
    def synapse_folds(self):
        """Input slices a row group takes: MW / SIMD."""
        return self.mw // self.simd

    @property
    def cycles_per_item(self):
        """Cycles between accepted inputs when neither side stalls: ``(R / PE) * (MW / SIMD)``."""
        return self.neuron_folds * self.synapse_folds

    pipeline = property(lambda self: self._pipeline,
                        doc="Counter levels between the lane tree's registers (0: not pipelined).")

    @property
    def tree_stages(self):
        """Registers on the lane's path (the deepest PE row's; the others are padded to it)."""
        if not self._pipeline:
            return 0
        if self._tree_stages is None:
            lane, fmt = self._lane, self._format.name
            if self._weight_memory == "const":
                self._tree_stages = max(
                    lane_stages(fmt, lane.in_kind, lane.in_bits, self.mw, self._pipeline,
                                tuple(int(v) for v in row)) for row in self._weights)
            else:
                self._tree_stages = lane_stages(fmt, lane.in_kind, lane.in_bits, self.simd, self._pipeline)
        return self._tree_stages

    @property
    def input_stages(self):
        """Registers on the way from the weight ROM to the lane, when pipelined: one on the ROM's
        address, so that synthesis finds no counter logic to fold into a ROM in LUTs, and one
        after its output for a ROM in logic, two for one that may be block RAM, whose output
        is slow (about 6 ns on ECP5): the first register then has nothing to reach but the
        second, sits by the RAM, and on ECP5 moves into it (:mod:`lowbit.boards.bram_outreg`)."""
        if not self._pipeline or self._weight_memory == "const" or self.cycles_per_item == 1:
            return 0
        return 1 + self._rom_out_stages

    @property
    def _rom_out_stages(self):
        return 1 if self._weight_memory == "lut" else 2

    @property
    def pipeline_stages(self):
        """Cycles the pipeline adds to the latency: the ROM output registers, the tree's stages,
        the compare reading the stored accumulator, and the register of its result."""
        return self.input_slice + self.input_stages + self.tree_stages + 2 if self._pipeline else 0

    @property
    def input_slice(self):
        """Whether a pipelined unit holds each vector a cycle in a register of its own before
        taking it (with two or more cycles per vector; one register cannot keep up with one)."""
        return bool(self._pipeline) and self.cycles_per_item > 1

    @property
    def input_interval(self):
        """The fewest cycles between two vectors in steady running: :attr:`cycles_per_item`,
        unless the lowering found a slower engine that paces this one's input (an engine given
        one vector per inference runs at the network's pace, not at its own)."""
        return max(self._input_interval or 0, self.cycles_per_item)

    @input_interval.setter
    def input_interval(self, cycles):
        if not isinstance(cycles, int) or isinstance(cycles, bool) or cycles < 1:
            raise ValueError(f"Input interval must be a positive integer, not {cycles!r}")
        self._input_interval = cycles

    @property
    def output_queue_depth(self):
        """Pipelined: output beats the unit can hold. A vector is taken only with room for its
        beat, and vector j + 1 arrives :attr:`input_interval` cycles after vector j, while
        ``latency`` cycles pass before a beat leaves: floor(latency / input_interval) beats wait
        at once, and one more slot keeps the input from ever waiting on the count at that pace."""
        return self.latency // self.input_interval + 1

    @property
    def latency(self):
        """Cycles from an input handshake to its output handshake, with the output always ready."""
        return self.cycles_per_item + 2 + self.pipeline_stages

    @property
    def accumulator_bits(self):
        """Width of each row's accumulator, exact for the range of its dot product."""
        return signed_bits(*self._acc_range)

    @property
    def weight_memory_bits(self):
        """Bits of weight memory: stored rows x MW x the lane's bits per weight."""
        return self.rows * self.mw * self._lane.weight_bits

    def weight_words(self):
        """Weight ROM: word ``nf * SF + sf``, field ``p * SIMD + s`` holds W[nf*PE+p, sf*SIMD+s]."""
        nf, sf, pe, simd, wb = self.neuron_folds, self.synapse_folds, self.pe, self.simd, self._lane.weight_bits
        enc = np.vectorize(self._lane.encode, otypes=[object])(self._weights)
        blocks = enc.reshape(nf, pe, sf, simd).transpose(0, 2, 1, 3).reshape(nf * sf, pe * simd)
        return [sum(int(v) << (k * wb) for k, v in enumerate(row)) for row in blocks]

    def threshold_words(self):
        """Threshold ROM: word ``nf``, field ``(i * PE + p) * L + l`` holds threshold l of output row
        ``i * R + nf * PE + p`` (copy i), in the accumulator domain."""
        tw = self._threshold_bits
        mask = (1 << tw) - 1
        t = self._thresholds.reshape(self.copies, self.neuron_folds, self.pe, -1).transpose(1, 0, 2, 3)
        flat = t.reshape(self.neuron_folds, -1)
        return [sum((int(v) & mask) << (k * tw) for k, v in enumerate(row)) for row in flat]

    @property
    def _threshold_bits(self):
        return signed_bits(self._acc_range[0], self._acc_range[1] + 1)

    def _rom(self, m, name, width, words):
        """A read port (addr, en, data with one cycle of latency) onto a ROM, or for a ROM of one
        word (or ``"const"`` weights) no port and the word as a constant."""
        if self._weight_memory == "const" or len(words) == 1:
            return None, Const(words[0], width)
        m.submodules[f"{name}_rom"] = rom = ROM(words, width, style=ROM_STYLES.get(self._weight_memory))
        return rom, rom.data

    def _row(self, m, p, x, w, t, first, en, suffix):
        """PE ``p``'s datapath, built into ``m``: the lane over the input slice ``x`` and the weight
        bits ``w`` (``None``: the row's weights as constants), the accumulator (restarted by
        ``first``, stored when ``en``) and, per copy, the count of the row's thresholds ``t`` (its
        fields, copy by copy) that the new total reaches; without thresholds, the dot product
        itself. Returns the per-copy values.

        Pipelined, the lane's tree registers its bits every cycle, ``first`` and ``en`` are
        those of the step leaving the tree, and the counts are those of the stored accumulator,
        one cycle after it was stored (``t`` is then that step's thresholds)."""
        lane, acc_shape = self._lane, signed(self.accumulator_bits)
        acc = Signal(acc_shape, name=f"acc{suffix}")
        total = Signal(acc_shape, name=f"total{suffix}")
        pipe = Pipe(m, self._pipeline) if self._pipeline else None
        if w is None:
            partial = lane.partial_const(m, self._weights[p], x, f"lane{suffix}", pipe=pipe)
        elif self._behavioural:
            partial = lane.partial_behavioural(m, w, x, self.simd, f"lane{suffix}")
        else:
            partial = lane.partial(m, w, x, self.simd, f"lane{suffix}", pipe=pipe)
        if pipe is not None:
            # Rows whose tree is shallower (constant weights with zeros) wait for the deepest.
            partial = pipe.delay(partial, self.tree_stages - pipe.stages, f"lane{suffix}_pad")
        m.d.comb += total.eq(Mux(first, 0, acc) + partial)
        with m.If(en):
            m.d.sync += acc.eq(total)
        if pipe is not None:
            total = acc
        if not self.has_thresholds:
            # One dot product, every copy's output: compute once.
            dot = Signal(signed(self.out_format.bits), name=f"dot{suffix}")
            m.d.comb += dot.eq(lane.scale * total + lane.offset(self.mw))
            return [dot] * self.copies
        levels, tw = self._thresholds.shape[1], self._threshold_bits
        counts = []
        for i in range(self.copies):
            fields = [t[(i * levels + l) * tw:(i * levels + l + 1) * tw].as_signed()
                      for l in range(levels)]
            if levels == 1:
                counts.append(total >= fields[0])
            else:
                count = Signal(self.out_format.bits, name=f"count{i}{suffix}")
                m.d.comb += count.eq(threshold_count(total, fields))
                counts.append(count)
        return counts

    def elaborate(self, platform):
        m = Module()
        nf_max, sf_max = self.neuron_folds - 1, self.synapse_folds - 1
        pe, simd, lane = self.pe, self.simd, self._lane
        xw = self.in_format.bits * simd
        piped = bool(self._pipeline)

        # Constant weights reach the lane as integers (one row per PE, fully unrolled), not as a word.
        const_rows = self._weight_memory == "const" and not self._behavioural
        w_port = w_data = t_port = t_data = None
        if not const_rows:
            w_port, w_data = self._rom(m, "weights", pe * simd * lane.weight_bits, self.weight_words())
        if self.has_thresholds:
            levels, tw = self._thresholds.shape[1], self._threshold_bits
            t_port, t_data = self._rom(m, "thresholds", self.copies * pe * levels * tw,
                                       self.threshold_words())
        # Weights read from a ROM make each PE's datapath a module of its own, which synthesis
        # maps alone (see lowbit.hw.rom); constant weights stay in one module, where synthesis
        # shares what the rows' constant weights have in common.
        separate_rows = w_port is not None

        # Issue stage: walks (nf, sf) over the current input vector.
        active = Signal()
        addr = Signal(range(self.cycles_per_item))
        nf = Signal(range(nf_max + 1))
        sf = Signal(range(sf_max + 1))
        x_cur = Signal(self.in_format.width)
        issue_last = Signal()
        # Compute stage: one cycle behind, when the ROM data arrives.
        c_valid, c_first, c_last_sf, c_last = Signal(), Signal(), Signal(), Signal()
        c_nf = Signal(range(nf_max + 1))
        x_slice = Signal(xw)
        copy_width = self.out_format.width // self.copies
        out_build = [Signal(copy_width, name=f"out_build{i}") for i in range(self.copies)]
        # Result register: the output beat.
        r_valid = Signal()
        r_data = Signal(self.out_format.width)

        advance = Signal()
        # Whether sf is at its last fold. Pipelined, a register kept beside sf (set a cycle
        # ahead), so that the fold counters and the slice's digits that step on it see no compare.
        sf_end = Signal(init=sf_max == 0, name="sf_end") if piped else sf == sf_max
        split = None
        if piped and self.input_stages and sf_max + 1 > SLICE_SELECT_MAX:
            # The fewest multiplexers of at most SLICE_SELECT_WAYS ways each, one per register;
            # where the registers are too few (a ROM in LUTs has one fewer), one per register.
            steps = next((n for n in range(2, self.input_stages + 1)
                          if SLICE_SELECT_WAYS ** n >= sf_max + 1), self.input_stages + 1)
            x_slice, split = self._select_slice(m, x_cur, xw, sf_max + 1, active, advance, sf_end, steps)
        # The vector the issue stage takes: the input port's, or pipelined the input slice's.
        in_valid, in_ready, in_payload = self.i.valid, self.i.ready, self.i.payload
        if piped:
            in_valid, in_ready, in_payload = Signal(), Signal(), Signal(self.in_format.width)
        load_vector = in_valid & in_ready  # the vector register's load (a register of its own below)
        # Pipelined, the step's control follows its data: the accumulator sees it when it leaves
        # the ROM's output registers and the tree (stage S), the compare one cycle later, and
        # the output the compare's registered result (stage D = S + 2).
        control = (c_valid, c_first, c_last_sf, c_last, c_nf)
        stages = [control]
        if piped:
            for k in range(self.pipeline_stages - self.input_slice):
                regs = [Signal.like(v, name=f"{v.name}_{k + 1}") for v in stages[-1]]
                m.d.sync += [r.eq(v) for r, v in zip(regs, stages[-1])]
                stages.append(regs)
        s_valid, s_first, _, _, s_nf = stages[-3] if piped else control
        d_valid, _, d_last_sf, d_last, d_nf = stages[-1]
        if piped:
            # Nothing after the issue stage ever stalls: the unit takes a vector only when the
            # output queue will have room for it, counting the vectors taken and not yet given,
            # so o.ready reaches no register's enable and no combinational path to i.ready.
            queue_depth = self.output_queue_depth
            m.submodules.out_queue = queue = fifo.SyncFIFO(width=self.out_format.width, depth=queue_depth)
            taken, taken_next = Signal(range(queue_depth + 1)), Signal(range(queue_depth + 1))
            room = Signal(init=1)  # taken < queue_depth, kept in a register
            m.d.comb += advance.eq(1)
            take, give = self.i.valid & self.i.ready, self.o.valid & self.o.ready
            m.d.comb += taken_next.eq(taken + take - give)
            m.d.sync += [taken.eq(taken_next), room.eq(taken_next < queue_depth)]
            if self.input_slice:
                # The vector waits a cycle in a register of its own: the upstream engine's
                # handshake and this one's issue logic then share no clock period. One register,
                # loaded while empty, takes a vector every other cycle, enough for two or more
                # cycles per vector.
                held, slot = Signal(), Signal(self.in_format.width, reset_less=True)
                with m.If(~held):
                    m.d.sync += slot.eq(self.i.payload)
                m.d.comb += [self.i.ready.eq(room & ~held), in_valid.eq(held), in_payload.eq(slot)]
                with m.If(take):
                    m.d.sync += held.eq(1)
                with m.Elif(in_valid & in_ready):
                    m.d.sync += held.eq(0)
            else:
                m.d.comb += [self.i.ready.eq(in_ready), in_valid.eq(self.i.valid), in_payload.eq(self.i.payload)]
            # The last step of a vector is known a cycle ahead, so that the input's ready is a
            # function of registers only.
            last_next = Signal()
            with m.If(in_valid & in_ready):
                m.d.comb += last_next.eq(self.cycles_per_item == 1)
            with m.Elif(active & ~issue_last):
                m.d.comb += last_next.eq(addr == self.cycles_per_item - 2)
            m.d.sync += issue_last.eq(last_next)
            # Whether the issue stage can take a vector (idle, or on its last step), kept in a
            # register from the next state of both.
            free = Signal(init=1)
            active_next = Mux(in_valid & in_ready, 1, Mux(issue_last, 0, active))
            m.d.sync += free.eq(~active_next | last_next)
            if self.input_slice:
                # The wide vector register's load enable, known a cycle ahead and kept in a
                # register of its own: its fanout (every bit of the vector) then pulls no gate of
                # the issue logic away from the issue logic's registers.
                load_vector = Signal(name="load_vector")
                held_next = Mux(take, 1, Mux(held & free, 0, held))
                m.d.sync += load_vector.eq(held_next & (~active_next | last_next))
            m.d.comb += [
                in_ready.eq((room | self.input_slice) & free),
                self.o.valid.eq(queue.r_rdy),
                self.o.payload.eq(queue.r_data),
                queue.r_en.eq(self.o.ready),
            ]
        else:
            # The whole pipeline holds while a finished result cannot be stored.
            m.d.comb += [
                advance.eq(~(c_valid & c_last & r_valid & ~self.o.ready)),
                issue_last.eq(active & (addr == self.cycles_per_item - 1)),
                self.i.ready.eq(advance & (~active | issue_last)),
                self.o.valid.eq(r_valid),
                self.o.payload.eq(r_data),
            ]
        t_address = nf
        if piped and t_port is not None:
            # Read early enough to pass the same output registers as the weights on the way to
            # the compare, so that a block RAM's slow output drives nothing but a register.
            # Read at stage a (a register already), the word passes the ROM and its output
            # registers and meets the compare at stage a + 1 + out = S + 1.
            t_address = stages[self.input_stages + self.tree_stages - self._rom_out_stages][4]
        w_address = addr
        if piped and w_port is not None:
            w_address = _registered(m, addr, "w_address")
        for port, address in ((w_port, w_address), (t_port, t_address)):
            if port is not None:
                m.d.comb += [port.addr.eq(address), port.en.eq(advance)]
        x_lane = x_slice
        for k in range(self.input_stages):
            # The weights' ROM address and output registers: the input slice meets the tree
            # that much later too.
            if split is not None and k < len(split):
                x_lane = split[k](x_lane)
            x_lane = _registered(m, x_lane, f"x_lane_{k}")
            if k:
                w_data = _registered(m, w_data, f"w_data_{k}")
                if t_port is not None:
                    t_data = _registered(m, t_data, f"t_data_{k}")

        # The PE rows: per copy, each PE's count (or dot product) of the current step.
        groups = [[] for _ in range(self.copies)]
        # Row i * R + nf * PE + p inverted: bit (i * PE + p) of the mask of fold nf.
        by_fold = self._invert.reshape(self.copies, self.neuron_folds, pe).transpose(1, 0, 2)
        inverted = invert_masks(by_fold.reshape(-1), self.copies * pe)
        if inverted is not None:
            mask = Signal(self.copies * pe, name="inverted")
            m.d.comb += mask.eq(Array(inverted)[d_nf])
        wbits = simd * lane.weight_bits
        step = Signal()
        # Pipelined, the accumulators run freely: a bubble adds garbage that the next row
        # group's first step drops, and the compare reads a total the cycle after it is stored.
        m.d.comb += step.eq(1 if piped else advance & s_valid)
        for p in range(pe):
            w = None if const_rows else w_data[p * wbits:(p + 1) * wbits]
            t = None
            if self.has_thresholds:
                # PE p's fields of every copy: field (i * PE + p) * L + l of the threshold word.
                t = Cat(*(t_data[(i * pe + p) * levels * tw:((i * pe + p) * levels + levels) * tw]
                          for i in range(self.copies)))
            if separate_rows:
                row = _PERow(self, p, x_lane, w, t, port_thresholds=t_port is not None)
                m.submodules[f"pe{p}_row"] = row
                m.d.comb += [row.x.eq(x_lane), row.w.eq(w), row.first.eq(s_first), row.en.eq(step)]
                if t_port is not None:
                    m.d.comb += row.t.eq(t)
                outs = row.outputs()
            else:
                outs = self._row(m, p, x_lane, w, t, s_first, step, str(p))
            if piped:
                # The compare's carry chain ends in a register, not in the output's multiplexers.
                outs = [_registered(m, out, f"out{i}_{p}") for i, out in enumerate(outs)]
            for i, out in enumerate(outs):
                if inverted is not None:
                    out = out ^ mask[i * pe + p].replicate(len(out))
                if self.has_thresholds and self.out_format.kind == "int":
                    out = signed_levels(out)
                groups[i].append(out)

        if piped:
            beat = Signal(self.out_format.width)
            m.d.comb += beat.eq(Cat(*out_build))
            for i, group in enumerate(groups):
                group = Cat(*group)
                m.d.comb += beat.word_select(i * self.neuron_folds + d_nf, len(group)).eq(group)
            m.d.comb += [queue.w_data.eq(beat), queue.w_en.eq(d_valid & d_last)]
        else:
            with m.If(self.o.valid & self.o.ready):
                m.d.sync += r_valid.eq(0)

        with m.If(advance):
            m.d.sync += [
                c_valid.eq(active),
                c_first.eq(sf == 0),
                c_last_sf.eq(sf_end),
                c_last.eq(issue_last),
                c_nf.eq(nf),
            ]
            if split is None:
                m.d.sync += x_slice.eq(x_cur.word_select(sf, xw))
            with m.If(active):
                m.d.sync += addr.eq(Mux(issue_last, 0, addr + 1))
                with m.If(sf_end):
                    m.d.sync += [sf.eq(0), nf.eq(Mux(nf == nf_max, 0, nf + 1))]
                    if piped:
                        m.d.sync += sf_end.eq(sf_max == 0)
                with m.Else():
                    m.d.sync += sf.eq(sf + 1)
                    if piped:
                        m.d.sync += sf_end.eq(sf == sf_max - 1)
            with m.If(load_vector):
                m.d.sync += x_cur.eq(in_payload)
            with m.If(in_valid & in_ready):
                m.d.sync += active.eq(1)
            with m.Elif(issue_last):
                m.d.sync += active.eq(0)

            with m.If(d_valid & d_last_sf):
                for i, group in enumerate(groups):
                    group = Cat(*group)
                    m.d.sync += out_build[i].word_select(d_nf, len(group)).eq(group)
                if not piped:
                    with m.If(c_last):
                        m.d.sync += [r_data.eq(Cat(*out_build)), r_valid.eq(1)]
                        for i, group in enumerate(groups):
                            group = Cat(*group)
                            m.d.sync += r_data.word_select(i * self.neuron_folds + c_nf, len(group)).eq(group)
        return m


    @staticmethod
    def _select_slice(m, x_cur, xw, folds, active, advance, last_fold, steps):
        """Pipelined: the slice of fold ``sf`` of ``x_cur`` in ``steps`` multiplexers, one per
        register on the way to the lane (the issue register, then the ROM's address and output
        registers). The fold number is kept as ``steps`` digits of ``ways`` each, the lowest
        stepping first: at issue the top digit picks the group of slices that holds it, and each
        register after it the next digit within that group. Each multiplexer has about
        folds ** (1 / steps) ways instead of ``folds``. Returns (the issue register, the
        function of each later register's input)."""
        ways = 2
        while ways ** steps < folds:
            ways += 1
        tops = math.ceil(folds / ways ** (steps - 1))
        # Digit d picks one of `sizes[d]` parts; digit 0 is the top one.
        sizes = [tops] + [ways] * (steps - 1)
        parts = [ways ** (steps - 1 - d) * xw for d in range(steps)]  # bits of what digit d picks
        padded = Cat(x_cur, Const(0, tops * parts[0] - len(x_cur)))
        digits = [Signal(range(n), name=f"fold_digit{d}") for d, n in enumerate(sizes)]
        x_group = Signal(parts[0], name="x_group")
        # Each lower digit travels beside the data to the register where it selects.
        later = [digits[1:]]
        with m.If(advance):
            m.d.sync += x_group.eq(padded.word_select(digits[0], parts[0]))
            with m.If(active):
                with m.If(last_fold):
                    m.d.sync += [d.eq(0) for d in digits]
                with m.Else():
                    # An odometer: the lowest digit steps, a digit at its end wraps and carries.
                    for d in reversed(range(steps)):
                        wrap = digits[d] == sizes[d] - 1
                        lower_full = Const(1) if d == steps - 1 else Cat(
                            *(digits[e] == sizes[e] - 1 for e in range(d + 1, steps))).all()
                        with m.If(lower_full):
                            m.d.sync += digits[d].eq(Mux(wrap, 0, digits[d] + 1))
        for k in range(steps - 1):
            later.append([_registered(m, v, f"{v.name}_at{k}") for v in later[-1]])

        def select(k):
            # At the register after stage k: digit k + 1, k + 1 cycles old.
            return lambda value: value.word_select(later[k + 1][k], parts[k + 1])
        return x_group, [select(k) for k in range(steps - 1)]


def _registered(m, value, name):
    """``value`` one cycle later, in a register without reset (data, whose valid bit has one)."""
    reg = Signal.like(value, name=name, reset_less=True)
    m.d.sync += reg.eq(value)
    return reg


class _PERow(wiring.Component):
    """One PE of a :class:`MatrixVectorUnit` as a module of its own: the unit's ``_row`` datapath
    behind ports. The output is combinational: per copy, the count (or the dot product) of the
    step whose inputs are on the ports.

    Members
    -------
    x : In(SIMD * input bits)
        The input slice.
    w : In(SIMD * weight bits)
        The row's weights of the slice.
    t : In(copies * L * threshold bits)
        The row's thresholds, copy by copy; only when they come from a ROM (otherwise they are
        constants inside the row).
    first, en : In(1)
        Restart the accumulator with this step; store this step's total.
    out : Out(...)
        Per copy, the count; or the one dot product without thresholds.
    """

    def __init__(self, unit, p, x, w, t, *, port_thresholds):
        self._unit, self._p = unit, p
        self._const_t = None if port_thresholds else t
        signature = {"x": In(len(x)), "w": In(len(w)), "first": In(1), "en": In(1)}
        if port_thresholds:
            signature["t"] = In(len(t))
        width = unit.out_format.bits * (unit.copies if unit.has_thresholds else 1)
        signature["out"] = Out(width)
        super().__init__(signature)

    def outputs(self):
        """The per-copy values of ``out``, as the unit's ``_row`` returns them."""
        u = self._unit
        if not u.has_thresholds:
            return [self.out.as_signed()] * u.copies
        bits = u.out_format.bits
        return [self.out[i * bits:(i + 1) * bits] for i in range(u.copies)]

    def elaborate(self, platform):
        m = Module()
        t = self._const_t if self._const_t is not None else getattr(self, "t", None)
        outs = self._unit._row(m, self._p, self.x, self.w, t, self.first, self.en, "")
        m.d.comb += self.out.eq(Cat(*(outs[:1] if not self._unit.has_thresholds else outs)))
        return m
