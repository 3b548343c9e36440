"""Integer multi-head self-attention over a sequence of tokens (the reference and its derivation:
``lowbit.compiler.ops.attention.Attention``).

Both operands of the scores stream: neither is a stored weight. Every query needs every key, so
the engine takes a whole sequence of Q|K|V tokens before its first output, into one of two banks,
and takes the next sequence into the other bank while it computes.
"""

from amaranth.hdl import Array, Cat, Const, Module, Mux, Shape, Signal, signed, unsigned
from amaranth.lib import memory, stream, wiring
from amaranth.lib.wiring import In, Out

from .compressor import add_behavioural
from .payload import VectorFormat

__all__ = ["Attention"]


class Attention(wiring.Component):
    """``T`` tokens of Q|K|V levels in, ``T`` tokens of attention outputs out, one query at a time.

    For each query token and head, four phases:

    1. *scores*: ``S_j = Q_i . K_j`` over the head's channels, one key per cycle (``T`` cycles),
       keeping the largest;
    2. *weights*: ``e_j = table[min(max - S_j, len(table) - 1)]``, and the sums ``sum_j e_j`` and
       ``sum_j e_j V_j``, one key per cycle (``T`` cycles);
    3. *division*: ``floor((2 N 2**F + D) / (2 D))`` for the head's channels at once, by restoring
       division from the known range of the result: one cycle to set up, one per quotient bit;
    4. after the last head, the token goes to the output register (one cycle, or until it is free).

    Timing: ``cycles_per_item = T * (H * (2*T + 1 + Qb) + 1) + 1`` cycles per sequence (Qb
    quotient bits), the extra cycle to start on a full bank; the next sequence loads meanwhile.
    ``latency = T + H * (2*T + 1 + Qb) + 2`` cycles from a sequence's first input handshake to its
    first output, when its tokens arrive one per cycle.

    Parameters
    ----------
    tokens : int
        T.
    dim, heads : int
        D channels of each of Q, K and V, in H heads.
    in_format : VectorFormat
        ``3*D`` ``int`` elements: Q, K, V.
    table : sequence of int
        The exponent table, falling to 0.
    frac_bits : int
        F.

    Members
    -------
    i : In(stream.Signature(in_format.shape))
    o : Out(stream.Signature(VectorFormat("int", bits, D).shape))

    Raises
    ------
    ValueError
        On a format that is not ``3*D`` int elements, heads that do not divide D, or a bad table.
    """

    def __init__(self, tokens, dim, heads, in_format, table, frac_bits):
        for name, v in (("Tokens", tokens), ("Dim", dim), ("Heads", heads)):
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ValueError(f"{name} must be a positive integer, not {v!r}")
        if dim % heads:
            raise ValueError(f"Heads must divide the {dim} channels, not {heads}")
        if not isinstance(in_format, VectorFormat) or in_format.kind != "int" or in_format.count != 3 * dim:
            raise ValueError(f"Input format must have {3 * dim} int elements (Q, K, V), not {in_format!r}")
        table = [int(v) for v in table]
        if len(table) < 2 or table[0] <= 0 or table[-1] != 0 or any(a < b for a, b in zip(table, table[1:])):
            raise ValueError("The exponent table must fall from a positive first entry to a last entry of 0")
        if not isinstance(frac_bits, int) or isinstance(frac_bits, bool) or frac_bits < 0:
            raise ValueError(f"Fraction bits must be a non-negative integer, not {frac_bits!r}")
        self._tokens, self._dim, self._heads = tokens, dim, heads
        self._in_format, self._table, self._frac_bits = in_format, tuple(table), frac_bits
        lo, hi = in_format.element.min, in_format.element.max
        dh, top = dim // heads, table[0]
        big = max(lo * lo, hi * hi)
        self._score_shape = Shape.cast(range(-dh * big, dh * big + 1))
        self._weight_shape = Shape.cast(range(top + 1))
        self._den_shape = Shape.cast(range(tokens * top + 1))
        self._num_shape = Shape.cast(range(tokens * top * lo, tokens * top * hi + 1))
        self._q_lo = lo << frac_bits
        span = (hi - lo) << frac_bits
        self._quotient_bits = max(span.bit_length(), 1)
        # The dividend less q_lo divisors: 0 <= num' < (span + 1) * 2D.
        self._rem_shape = Shape.cast(range((span + 1) * 2 * tokens * top + 1))
        self._trial_shape = Shape.cast(range(-((2 * tokens * top) << (self._quotient_bits - 1)),
                                             (span + 1) * 2 * tokens * top + 1))
        self._out_format = VectorFormat("int", Shape.cast(range(lo << frac_bits, (hi << frac_bits) + 1)).width, dim)
        super().__init__({"i": In(stream.Signature(in_format.shape)),
                          "o": Out(stream.Signature(self._out_format.shape))})

    in_format = property(lambda self: self._in_format)
    out_format = property(lambda self: self._out_format)
    tokens = property(lambda self: self._tokens)
    quotient_bits = property(lambda self: self._quotient_bits)

    @property
    def buffer_pixels(self):
        """Tokens the engine can hold: two banks of a sequence."""
        return 2 * self._tokens

    @property
    def head_cycles(self):
        """Cycles per query and head: scores, weights, division set-up and quotient bits."""
        return 2 * self._tokens + 1 + self._quotient_bits

    @property
    def cycles_per_item(self):
        return self._tokens * (self._heads * self.head_cycles + 1) + 1

    @property
    def latency(self):
        return self._tokens + self._heads * self.head_cycles + 2

    def elaborate(self, platform):
        m = Module()
        t_n, dim, heads = self._tokens, self._dim, self._heads
        dh, k = dim // heads, self._in_format.bits
        lo, hi = self._in_format.element.min, self._in_format.element.max
        big = max(lo * lo, hi * hi)
        qb, frac = self._quotient_bits, self._frac_bits
        out_bits = self._out_format.bits

        # Two banks of T tokens; bank b's token t is word b*T + t. The memory's read ports are
        # asynchronous (distributed RAM where the family has it), so a word is read in the cycle
        # that addresses it: the query's (held over its scores) and the key's or value's.
        m.submodules.tokens = store = memory.Memory(shape=unsigned(self._in_format.width), depth=2 * t_n, init=[])
        write, q_read, kv_read = store.write_port(), store.read_port(domain="comb"), store.read_port(domain="comb")
        full = [Signal(name=f"full{b}") for b in range(2)]

        # Loader: fills bank w_bank, one token per handshake.
        w_bank, w_count = Signal(), Signal(range(t_n))
        w_full = Mux(w_bank, full[1], full[0])
        m.d.comb += [self.i.ready.eq(~w_full), write.addr.eq(w_bank * t_n + w_count),
                     write.data.eq(self.i.payload.as_value()), write.en.eq(self.i.valid & self.i.ready)]
        with m.If(self.i.valid & self.i.ready):
            m.d.sync += w_count.eq(Mux(w_count == t_n - 1, 0, w_count + 1))
            with m.If(w_count == t_n - 1):
                m.d.sync += w_bank.eq(~w_bank)
                for b in range(2):
                    with m.If(w_bank == b):
                        m.d.sync += full[b].eq(1)

        # Computer: one query and head at a time from bank r_bank.
        idle, scoring, weighting, setup, dividing, writing = range(6)
        state = Signal(range(6))
        r_bank = Signal()
        query, key = Signal(range(t_n)), Signal(range(t_n))
        head = Signal(range(heads))
        bit = Signal(range(max(qb, 2)))

        def head_field(word, part, d):  # channel d of this head's part (0: Q, 1: K, 2: V) of a token
            base = part * dim
            fields = (word[(base + h * dh + d) * k:(base + h * dh + d + 1) * k] for h in range(heads))
            return Array(fields)[head].as_signed()

        m.d.comb += [q_read.addr.eq(r_bank * t_n + query), kv_read.addr.eq(r_bank * t_n + key)]
        q_word, k_word = q_read.data, kv_read.data
        scores = Array(Signal(self._score_shape, name=f"score{j}") for j in range(t_n))
        best = Signal(self._score_shape)
        score = Signal(self._score_shape)
        m.d.comb += score.eq(add_behavioural([head_field(q_word, 0, d) * head_field(k_word, 1, d) for d in range(dh)]))

        table = Array(Const(v, self._weight_shape) for v in self._table)
        distance = Signal(range(2 * dh * big + 1))
        weight = Signal(self._weight_shape)
        m.d.comb += [distance.eq(best - scores[key]),
                     weight.eq(table[Mux(distance >= len(self._table) - 1, len(self._table) - 1, distance)])]
        den = Signal(self._den_shape)
        nums = [Signal(self._num_shape, name=f"num{d}") for d in range(dh)]
        rems = [Signal(self._rem_shape, name=f"rem{d}") for d in range(dh)]
        quots = [Signal(qb, name=f"quot{d}") for d in range(dh)]
        divisor = Signal(range(2 * t_n * self._table[0] + 1))
        out_build = Signal(self._out_format.width)
        r_valid, r_data = Signal(), Signal(self._out_format.width)
        m.d.comb += [self.o.valid.eq(r_valid), self.o.payload.eq(r_data)]
        with m.If(self.o.valid & self.o.ready):
            m.d.sync += r_valid.eq(0)

        last_key = key == t_n - 1
        with m.Switch(state):
            with m.Case(idle):
                with m.If(Mux(r_bank, full[1], full[0])):
                    m.d.sync += [state.eq(scoring), key.eq(0), head.eq(0), query.eq(0)]
            with m.Case(scoring):
                m.d.sync += [scores[key].eq(score), best.eq(Mux((key == 0) | (score > best), score, best)),
                             key.eq(Mux(last_key, 0, key + 1))]
                with m.If(last_key):
                    m.d.sync += [state.eq(weighting), den.eq(0), *(n.eq(0) for n in nums)]
            with m.Case(weighting):
                m.d.sync += [den.eq(den + weight), key.eq(Mux(last_key, 0, key + 1)),
                             *(n.eq(n + weight * head_field(kv_read.data, 2, d)) for d, n in enumerate(nums))]
                with m.If(last_key):
                    m.d.sync += state.eq(setup)
            with m.Case(setup):
                # num' = 2 N 2**F + D - q_lo * 2D >= 0; the quotient of num' by 2D is q - q_lo.
                m.d.sync += [divisor.eq(2 * den), bit.eq(qb - 1), state.eq(dividing),
                             *(r.eq((n << (frac + 1)) + den - self._q_lo * 2 * den) for r, n in zip(rems, nums)),
                             *(q.eq(0) for q in quots)]
            with m.Case(dividing):
                results = []
                for r, q in zip(rems, quots):
                    trial = Signal(self._trial_shape, name=f"trial_{r.name}")
                    m.d.comb += trial.eq(r - (divisor << bit))
                    with m.If(trial >= 0):
                        m.d.sync += [r.eq(trial), q.bit_select(bit, 1).eq(1)]
                    results.append((q | Mux(trial >= 0, 1, 0)) + self._q_lo)  # read at bit 0
                m.d.sync += bit.eq(bit - 1)
                with m.If(bit == 0):
                    levels = [Signal(signed(out_bits), name=f"level{d}") for d in range(dh)]
                    m.d.comb += [level.eq(value) for level, value in zip(levels, results)]
                    m.d.sync += out_build.word_select(head, dh * out_bits).eq(Cat(*levels))
                    with m.If(head == heads - 1):
                        m.d.sync += state.eq(writing)
                    with m.Else():
                        m.d.sync += [head.eq(head + 1), state.eq(scoring)]
            with m.Case(writing):
                with m.If(~r_valid | self.o.ready):
                    m.d.sync += [r_data.eq(out_build), r_valid.eq(1), head.eq(0)]
                    with m.If(query == t_n - 1):
                        m.d.sync += [state.eq(idle), r_bank.eq(~r_bank), query.eq(0)]
                        for b in range(2):
                            with m.If(r_bank == b):
                                m.d.sync += full[b].eq(0)
                    with m.Else():
                        m.d.sync += [query.eq(query + 1), state.eq(scoring)]
        return m
