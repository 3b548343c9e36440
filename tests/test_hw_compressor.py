import json
import re
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import pytest
from amaranth.back import rtlil
from amaranth.hdl import Cat, Const, Module, Shape, Signal, signed, unsigned
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out
from amaranth.sim import Simulator

from lowbit.boards.synth import find_yosys
from lowbit.hw.compressor import (add_behavioural, add_tree, add_tree_shape, bit_sum, popcount,
                                  popcount_behavioural, popcount_width, xnor_popcount)

rng = np.random.default_rng(11)


def unused_module():
    """A Module that receives logic but is never elaborated, on purpose."""
    m = Module()
    m._MustUse__silence = True
    return m


def simulate(m, bench):
    sim = Simulator(m)
    sim.add_testbench(bench)
    sim.run()


def test_widths_and_shapes():
    assert [popcount_width(n) for n in (1, 2, 3, 4, 7, 8, 255, 256)] == [1, 2, 2, 3, 3, 4, 8, 9]
    assert add_tree_shape([unsigned(4)] * 3) == unsigned(6)          # 0..45
    assert add_tree_shape([signed(4)] * 256) == signed(12)           # -2048..1792
    assert add_tree_shape([signed(4), unsigned(3)]) == signed(5)     # -8..14
    assert add_tree_shape([range(-5, 6), 2]) == signed(5)            # -5..8
    assert add_tree_shape([signed(1)]) == signed(1)                  # -1..0
    m = unused_module()
    x = Signal(100)
    assert popcount(m, x).shape() == unsigned(7)
    assert popcount_behavioural(x).shape() == unsigned(7)
    assert xnor_popcount(m, x, Signal(100)).shape() == unsigned(7)
    terms = [Signal(signed(4)), Signal(unsigned(3))]
    assert add_tree(m, terms).shape() == add_behavioural(terms).shape() == signed(5)


@pytest.mark.parametrize("build, exc, message", [
    (lambda: popcount_width(0), ValueError, "Width must be a positive integer, not 0"),
    (lambda: popcount_width(-1), ValueError, "Width must be a positive integer, not -1"),
    (lambda: popcount(unused_module(), Signal(0)), ValueError, "Value must be at least 1 bit wide, not 0"),
    (lambda: popcount(unused_module(), 5), TypeError, "Value must be an Amaranth value, not 5"),
    (lambda: popcount(None, Signal(4)), TypeError, "Module must be an Amaranth Module, not None"),
    (lambda: popcount(unused_module(), Signal(4), inputs_per_bit=0), ValueError,
     "Inputs per bit must be a positive integer, not 0"),
    (lambda: xnor_popcount(unused_module(), Signal(4), Signal(5)), ValueError,
     "Operands must have the same width, not 4 and 5"),
    (lambda: add_tree(unused_module(), []), ValueError, "Terms must be a non-empty list, not []"),
    (lambda: add_tree(unused_module(), [Signal(4), 3]), TypeError, "Term must be an Amaranth value, not 3"),
    (lambda: add_tree_shape([]), ValueError, "Shapes must be a non-empty list, not []"),
    (lambda: add_tree_shape(["x"]), TypeError, "Shape must be shape-castable, not 'x'"),
    (lambda: add_tree(unused_module(), [Signal(4)], constant=1.5), TypeError,
     "Constant must be an integer, not 1.5"),
    (lambda: add_tree(unused_module(), [Signal(4)], inputs_per_bit=0), ValueError,
     "Inputs per bit must be a positive integer, not 0"),
    (lambda: bit_sum(unused_module(), [(-1, Signal())]), ValueError, "Column must be non-negative, not -1"),
    (lambda: bit_sum(unused_module(), [("1", Signal())]), TypeError, "Column must be an integer, not '1'"),
    (lambda: bit_sum(unused_module(), [(0, Signal(2))]), ValueError, "Bit must be 1 bit wide, not 2"),
    (lambda: bit_sum(unused_module(), [(0, 1)]), TypeError, "Bit must be an Amaranth value, not 1"),
    (lambda: bit_sum(unused_module(), [], constant=True), TypeError, "Constant must be an integer, not True"),
])
def test_bad_parameters(build, exc, message):
    with pytest.raises(exc, match=f"^{re.escape(message)}$"):
        build()


def test_popcount_exhaustive_up_to_10_bits():
    # One 10-bit input; popcount of every prefix, so 1024 vectors cover every n <= 10.
    m = Module()
    x = Signal(10)
    outs = []
    for n in range(1, 11):
        tree, beh = Signal(popcount_width(n)), Signal(popcount_width(n))
        m.d.comb += [tree.eq(popcount(m, x[:n], name=f"pc{n}")),
                     beh.eq(popcount_behavioural(x[:n]))]
        outs.append((n, tree, beh))

    async def bench(ctx):
        for v in range(1 << 10):
            ctx.set(x, v)
            for n, tree, beh in outs:
                want = bin(v & ((1 << n) - 1)).count("1")
                assert (ctx.get(tree), ctx.get(beh)) == (want, want), (n, v)

    simulate(m, bench)


@pytest.mark.parametrize("n", [17, 64, 256])
def test_popcount_random(n):
    m = Module()
    x, w = Signal(n), Signal(n)
    pc, xpc = Signal(popcount_width(n)), Signal(popcount_width(n))
    m.d.comb += [pc.eq(popcount(m, x)), xpc.eq(xnor_popcount(m, x, w))]
    bits = rng.integers(0, 2, size=(300, 2, n))
    # The extremes: no ones and all ones.
    bits[0], bits[1] = 0, 1

    async def bench(ctx):
        for xb, wb in bits:
            ctx.set(x, int("".join(map(str, xb[::-1])), 2))
            ctx.set(w, int("".join(map(str, wb[::-1])), 2))
            assert ctx.get(pc) == xb.sum()
            assert ctx.get(xpc) == (xb == wb).sum()

    simulate(m, bench)


@pytest.mark.parametrize("shapes", [
    [signed(4)] * 16,
    [unsigned(4)] * 9,
    [signed(4), unsigned(3), signed(1), signed(5), unsigned(1), unsigned(7), signed(2)],
    [signed(8), signed(8)],
    [unsigned(1)] * 3,
], ids=["int4x16", "uint4x9", "mixed", "int8x2", "uint1x3"])
def test_add_tree_random_and_extremes(shapes):
    m = Module()
    terms = [Signal(s, name=f"t{i}") for i, s in enumerate(shapes)]
    shape = add_tree_shape(shapes)
    tree, beh = Signal(shape), Signal(shape)
    m.d.comb += [tree.eq(add_tree(m, terms)), beh.eq(add_behavioural(terms))]
    lo = [-(1 << (s.width - 1)) if s.signed else 0 for s in shapes]
    hi = [(1 << (s.width - 1)) - 1 if s.signed else (1 << s.width) - 1 for s in shapes]
    # All at the minimum and all at the maximum reach both ends of the shape's range, so a
    # too-narrow result would wrap there.
    vectors = [lo, hi] + [[int(rng.integers(a, b + 1)) for a, b in zip(lo, hi)]
                          for _ in range(300)]

    async def bench(ctx):
        for vec in vectors:
            for t, v in zip(terms, vec):
                ctx.set(t, v)
            assert (ctx.get(tree), ctx.get(beh)) == (sum(vec), sum(vec)), vec

    simulate(m, bench)
    # The shape is exact: one bit fewer cannot hold both extremes.
    w = shape.width - 1
    low, high = (-(1 << (w - 1)), (1 << (w - 1)) - 1) if shape.signed else (0, (1 << w) - 1)
    assert sum(lo) < low or sum(hi) > high


@pytest.mark.parametrize("constant, inputs_per_bit", [(0, 2), (-37, 1), (1000, 2)])
def test_add_tree_with_a_constant(constant, inputs_per_bit):
    shapes = [signed(4), unsigned(3), signed(2), unsigned(5)] * 3
    m = Module()
    terms = [Signal(s, name=f"t{i}") for i, s in enumerate(shapes)]
    total = add_tree(m, terms, constant=constant, inputs_per_bit=inputs_per_bit)
    lo = sum(-(1 << (s.width - 1)) if s.signed else 0 for s in shapes) + constant
    hi = sum((1 << (s.width - 1)) - 1 if s.signed else (1 << s.width) - 1 for s in shapes) + constant
    out = Signal(total.shape())
    m.d.comb += out.eq(total)
    vectors = [[t.shape().signed and -(1 << (len(t) - 1)) or 0 for t in terms],
               [(1 << (len(t) - 1)) - 1 if t.shape().signed else (1 << len(t)) - 1 for t in terms]]
    vectors += [[int(rng.integers(-(1 << (len(t) - 1)), 1 << (len(t) - 1))) if t.shape().signed
                 else int(rng.integers(0, 1 << len(t))) for t in terms] for _ in range(200)]

    async def bench(ctx):
        for vec in vectors:
            for t, v in zip(terms, vec):
                ctx.set(t, v)
            assert ctx.get(out) == sum(vec) + constant, vec

    simulate(m, bench)
    assert sum(vectors[0]) + constant == lo and sum(vectors[1]) + constant == hi


@pytest.mark.parametrize("constant", [0, -5, -300, 77])
def test_bit_sum_random_with_inverted_bits(constant):
    """Bits of one input at random columns, a third of them inverted, plus a constant."""
    n = 40
    m = Module()
    x = Signal(n)
    columns = [int(c) for c in rng.integers(0, 5, size=n)]
    inverted = rng.random(n) < 1 / 3
    total = bit_sum(m, [(c, ~x[i] if inv else x[i]) for i, (c, inv) in enumerate(zip(columns, inverted))],
                    constant=constant)
    out = Signal(total.shape())
    m.d.comb += out.eq(total)
    hi = constant + sum(1 << c for c in columns)
    # The shape is the narrowest one holding [constant, hi].
    assert out.shape() == Shape.cast(range(constant, hi + 1))
    vectors = [0, (1 << n) - 1] + [int(v) for v in rng.integers(0, 1 << 62, size=200) % (1 << n)]

    async def bench(ctx):
        for v in vectors:
            ctx.set(x, v)
            bits = [(v >> i & 1) ^ int(inv) for i, inv in enumerate(inverted)]
            assert ctx.get(out) == constant + sum(b << c for b, c in zip(bits, columns)), v

    simulate(m, bench)


def test_bit_sum_of_no_bits_is_its_constant():
    total = bit_sum(unused_module(), [], constant=-3)
    assert isinstance(total, Const) and total.value == -3


class Pair(wiring.Component):
    """Both implementations side by side, so that a proof can compare their outputs.

    ``tree(m, x)`` and ``beh(x)`` build the two sides from the same input ``x``; ``width`` is
    the input width and ``shape`` the shape of both outputs.
    """

    def __init__(self, width, shape, tree, beh):
        self._tree, self._beh = tree, beh
        super().__init__({"x": In(width), "tree": Out(shape), "beh": Out(shape)})

    def elaborate(self, platform):
        m = Module()
        m.d.comb += [self.tree.eq(self._tree(m, self.x)), self.beh.eq(self._beh(self.x))]
        return m


def popcount_pair(n, drop_bit=False):
    # The wrong variant forgets input bit 0, as a tree that drops a leftover would.
    return Pair(n, popcount_width(n),
                lambda m, x: popcount(m, x[1:] if drop_bit else x),
                popcount_behavioural)


def split_pairs(x):
    """Operands a and b interleaved in x (a0 b0 a1 b1 ...), so that each XNOR's inputs are
    neighbours in the variable order of the decision diagrams."""
    return x[0::2], x[1::2]


def xnor_pair(n, xor_at=None):
    """``xnor_popcount`` against ``popcount_behavioural(~(a ^ b))``.

    With ``xor_at = k`` the tree side is broken: it gets the bits that ``xnor_popcount`` would
    compute, except that bit k is ``a[k] ^ b[k]``, and counts them with the same tree
    (``popcount(..., inputs_per_bit=2)``, what ``xnor_popcount`` calls).
    """
    def tree(m, x):
        a, b = split_pairs(x)
        if xor_at is None:
            return xnor_popcount(m, a, b)
        bits = Cat(*((a[i] ^ b[i]) if i == xor_at else ~(a[i] ^ b[i]) for i in range(n)))
        return popcount(m, bits, inputs_per_bit=2)

    def beh(x):
        a, b = split_pairs(x)
        return popcount_behavioural(~(a ^ b))

    return Pair(2 * n, popcount_width(n), tree, beh)


def add_pair(shapes):
    def terms(x):
        out, at = [], 0
        for s in shapes:
            out.append(x[at:at + s.width].as_signed() if s.signed else x[at:at + s.width])
            at += s.width
        return out
    return Pair(sum(s.width for s in shapes), add_tree_shape(shapes),
                lambda m, x: add_tree(m, terms(x)), lambda x: add_behavioural(terms(x)))


def run_yosys(component, script):
    """Run ``script`` on ``component`` (read as ``pair.il``); return the exit code, the log and
    the folder's files by name (read before the folder goes away)."""
    argv, _ = find_yosys()
    with tempfile.TemporaryDirectory(prefix="lowbit-equiv-") as work:
        # YoWASP sees only relative paths below its working folder.
        (Path(work) / "pair.il").write_text(rtlil.convert(component, name="top", emit_src=False))
        proc = subprocess.run([*argv, "-q", "-p", f"read_rtlil pair.il; {script}"], cwd=work,
                              capture_output=True, text=True, stdin=subprocess.DEVNULL)
        files = {p.name: p.read_text() for p in Path(work).iterdir() if p.suffix == ".json"}
    return proc.returncode, proc.stdout + proc.stderr, files


def sat_prove_equal(component):
    """True if Yosys' SAT solver proves ``tree == beh`` for every input, False if it finds a counterexample."""
    code, output, _ = run_yosys(component, "prep -top top; flatten; sat -verify -prove tree beh top")
    if code == 0:
        return True
    assert "proof did fail" in output, output
    return False


class BDD:
    """Reduced ordered binary decision diagrams, just enough to compare gate netlists.

    Node 0 is false and node 1 is true; every other node is a ``(variable, low, high)`` triple
    stored once, so two functions are equal exactly when their node numbers are equal. A count
    of ones (and every partial count inside a compressor tree) is a symmetric function of its
    inputs, whose diagram has at most ``k + 1`` nodes on level ``k``: where SAT search on a
    64-bit popcount miter takes many minutes, the diagrams here stay a few thousand nodes.
    """

    def __init__(self):
        self._nodes = [(None, 0, 0), (None, 1, 1)]
        self._unique = {}
        self._ite_memo = {}

    def var(self, index):
        return self._node(index, 0, 1)

    def _node(self, var, low, high):
        if low == high:
            return low
        key = (var, low, high)
        node = self._unique.get(key)
        if node is None:
            node = self._unique[key] = len(self._nodes)
            self._nodes.append(key)
        return node

    def _top(self, f):
        var = self._nodes[f][0]
        return float("inf") if var is None else var

    def _cofactors(self, f, var):
        v, low, high = self._nodes[f]
        return (low, high) if v == var else (f, f)

    def ite(self, f, g, h):
        """``f ? g : h``."""
        if f == 1 or g == h:
            return g
        if f == 0:
            return h
        if g == 1 and h == 0:
            return f
        key = (f, g, h)
        result = self._ite_memo.get(key)
        if result is None:
            var = min(self._top(f), self._top(g), self._top(h))
            f0, f1 = self._cofactors(f, var)
            g0, g1 = self._cofactors(g, var)
            h0, h1 = self._cofactors(h, var)
            result = self._node(var, self.ite(f0, g0, h0), self.ite(f1, g1, h1))
            self._ite_memo[key] = result
        return result

    def not_(self, f):
        return self.ite(f, 0, 1)

    def satisfying(self, f):
        """One assignment ``{variable: bit}`` that makes ``f`` true (``f`` must not be false)."""
        assignment = {}
        while f > 1:
            var, low, high = self._nodes[f]
            assignment[var], f = (1, high) if high != 0 else (0, low)
        return assignment


# Yosys' fine-grained gates after techmap, as functions of their inputs' diagrams.
GATES = {
    "$_BUF_": lambda d, a: a,
    "$_NOT_": lambda d, a: d.not_(a),
    "$_AND_": lambda d, a, b: d.ite(a, b, 0),
    "$_NAND_": lambda d, a, b: d.not_(d.ite(a, b, 0)),
    "$_OR_": lambda d, a, b: d.ite(a, 1, b),
    "$_NOR_": lambda d, a, b: d.not_(d.ite(a, 1, b)),
    "$_XOR_": lambda d, a, b: d.ite(a, d.not_(b), b),
    "$_XNOR_": lambda d, a, b: d.ite(a, b, d.not_(b)),
    "$_ANDNOT_": lambda d, a, b: d.ite(b, 0, a),
    "$_ORNOT_": lambda d, a, b: d.ite(b, a, 1),
    "$_MUX_": lambda d, a, b, s: d.ite(s, b, a),
}
GATE_INPUTS = {"$_MUX_": ("A", "B", "S"), "$_BUF_": ("A",), "$_NOT_": ("A",)}


def bdd_counterexample(component):
    """Prove ``tree == beh`` by decision diagrams of Yosys' gate netlist.

    Yosys lowers the design to single-bit gates (``prep; flatten; techmap``) and writes it as
    JSON; every output bit of both sides becomes a reduced ordered diagram over the input bits.
    Equal diagrams are the same function, so the sides are equal for every input exactly when
    each output bit's two diagrams are the same node.

    Returns
    -------
    None if the sides are equal, else an input value on which they differ.
    """
    code, output, files = run_yosys(component, "prep -top top; flatten; techmap; opt_clean; "
                                               "write_json net.json")
    assert code == 0, output
    module = json.loads(files["net.json"])["modules"]["top"]
    driver = {}
    for cell in module["cells"].values():
        assert cell["type"] in GATES, cell["type"]
        driver[cell["connections"]["Y"][0]] = cell
    d = BDD()
    value = {"0": 0, "1": 1}
    for i, bit in enumerate(module["ports"]["x"]["bits"]):
        value[bit] = d.var(i)

    def evaluate(bit):
        # Depth-first without recursion: the adder chains are deeper than Python's stack.
        stack = [bit]
        while stack:
            top = stack[-1]
            if top in value:
                stack.pop()
                continue
            cell = driver[top]
            inputs = [cell["connections"][p][0] for p in GATE_INPUTS.get(cell["type"], ("A", "B"))]
            missing = [b for b in inputs if b not in value]
            if missing:
                stack.extend(missing)
                continue
            value[top] = GATES[cell["type"]](d, *(value[b] for b in inputs))
            stack.pop()
        return value[bit]

    ports = module["ports"]
    for t, b in zip(ports["tree"]["bits"], ports["beh"]["bits"]):
        tree, beh = evaluate(t), evaluate(b)
        if tree != beh:
            differ = d.ite(tree, d.not_(beh), beh)
            return sum(bit << var for var, bit in d.satisfying(differ).items())
    return None


def outputs_at(component, x):
    """``(tree, beh)`` of ``component`` for input ``x`` in Amaranth's simulator."""
    got = []

    async def bench(ctx):
        ctx.set(component.x, x)
        got.extend([ctx.get(component.tree), ctx.get(component.beh)])

    simulate(component, bench)
    return tuple(got)


# Yosys' SAT search grows steeply with n (about 4 s at 36, 60 s at 48, many minutes at 64 on
# this machine), so it proves the small sizes; decision diagrams prove up to 64.
@pytest.mark.parametrize("n", [2, 7, 24])
def test_popcount_sat_proof(n):
    assert sat_prove_equal(popcount_pair(n))


@pytest.mark.parametrize("n", [7, 24])
def test_sat_proof_catches_a_dropped_bit(n):
    assert not sat_prove_equal(popcount_pair(n, drop_bit=True))


@pytest.mark.parametrize("n", [2, 7, 24, 36, 64])
def test_popcount_bdd_proof(n):
    assert bdd_counterexample(popcount_pair(n)) is None


@pytest.mark.parametrize("n", [7, 64])
def test_xnor_popcount_bdd_proof(n):
    assert bdd_counterexample(xnor_pair(n)) is None


@pytest.mark.parametrize("n", [24, 64])
def test_bdd_proof_catches_a_dropped_bit(n):
    pair = popcount_pair(n, drop_bit=True)
    x = bdd_counterexample(pair)
    assert x is not None
    tree, beh = outputs_at(pair, x)
    # Bit 0 is what the tree ignores, so it must be set in any input that tells them apart.
    assert x & 1 and tree == beh - 1


@pytest.mark.parametrize("n, k", [(7, 3), (64, 0), (64, 41)])
def test_bdd_proof_catches_one_xor_for_an_xnor(n, k):
    broken = xnor_pair(n, xor_at=k)
    x = bdd_counterexample(broken)
    assert x is not None
    # The counterexample is real: simulation of the broken design disagrees there, and only
    # through bit k (XOR and XNOR differ by one, in opposite directions).
    tree, beh = outputs_at(broken, x)
    a, b = x >> 2 * k & 1, x >> 2 * k + 1 & 1
    assert tree - beh == (1 if a != b else -1)
    assert outputs_at(xnor_pair(n), x) == (beh, beh)


def test_xnor_popcount_sat_proof_and_its_broken_variant():
    assert sat_prove_equal(xnor_pair(7))
    assert not sat_prove_equal(xnor_pair(7, xor_at=3))


def test_bit_sum_sat_proof():
    """Inverted bits and a negative constant, against the plain sum of the same bits."""
    columns = [0, 0, 1, 3, 1, 2, 0, 4, 2, 1]

    def bits(x):
        return [(c, ~x[i] if i % 3 == 0 else x[i]) for i, c in enumerate(columns)]

    shape = bit_sum(unused_module(), bits(Signal(len(columns))), constant=-20).shape()
    assert sat_prove_equal(Pair(len(columns), shape, lambda m, x: bit_sum(m, bits(x), constant=-20),
                                lambda x: sum(b.as_unsigned() << c for c, b in bits(x)) - 20))


def test_add_tree_sat_proof():
    assert sat_prove_equal(add_pair([signed(4), signed(4), unsigned(3), signed(1), signed(5), unsigned(4)]))
