import re
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import pytest
from amaranth.back import rtlil
from amaranth.hdl import Module, Signal, signed, unsigned
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out
from amaranth.sim import Simulator

from lowbit.boards.synth import find_yosys
from lowbit.hw.compressor import (add_behavioural, add_tree, add_tree_shape, popcount,
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


class Pair(wiring.Component):
    """Both implementations side by side, so that Yosys can prove their outputs equal."""

    def __init__(self, n, drop_bit=False):
        self._n, self._drop_bit = n, drop_bit
        super().__init__({"x": In(n), "tree": Out(popcount_width(n)),
                          "beh": Out(popcount_width(n))})

    def elaborate(self, platform):
        m = Module()
        # The wrong variant forgets input bit 0, as a tree that drops a leftover would.
        x = self.x[1:] if self._drop_bit else self.x
        m.d.comb += [self.tree.eq(popcount(m, x)), self.beh.eq(popcount_behavioural(self.x))]
        return m


class AddPair(wiring.Component):
    def __init__(self, shapes):
        self._shapes = shapes
        super().__init__({"x": In(sum(Signal(s).shape().width for s in shapes)),
                          "tree": Out(add_tree_shape(shapes)), "beh": Out(add_tree_shape(shapes))})

    def elaborate(self, platform):
        m = Module()
        terms, at = [], 0
        for s in self._shapes:
            w = s.width
            terms.append(self.x[at:at + w].as_signed() if s.signed else self.x[at:at + w])
            at += w
        m.d.comb += [self.tree.eq(add_tree(m, terms)), self.beh.eq(add_behavioural(terms))]
        return m


def prove_equal(component):
    """True if Yosys' SAT solver proves ``tree == beh`` for every input, False if it finds a counterexample."""
    argv, _ = find_yosys()
    with tempfile.TemporaryDirectory(prefix="lowbit-equiv-") as work:
        # YoWASP sees only relative paths below its working folder.
        (Path(work) / "pair.il").write_text(rtlil.convert(component, name="top", emit_src=False))
        proc = subprocess.run(
            [*argv, "-q", "-p", "read_rtlil pair.il; prep -top top; flatten; "
                                "sat -verify -prove tree beh top"],
            cwd=work, capture_output=True, text=True, stdin=subprocess.DEVNULL)
    output = proc.stdout + proc.stderr
    if proc.returncode == 0:
        return True
    assert "proof did fail" in output, output
    return False


# SAT time grows steeply with n (about 4 s at 36, 60 s at 48 on this machine), so the sizes
# stay below 40 here; the random simulation above covers 64 and 256.
@pytest.mark.parametrize("n", [2, 7, 24, 36])
def test_popcount_equivalence_proof(n):
    assert prove_equal(Pair(n))


@pytest.mark.parametrize("n", [7, 36])
def test_equivalence_proof_catches_a_dropped_bit(n):
    assert not prove_equal(Pair(n, drop_bit=True))


def test_add_tree_equivalence_proof():
    assert prove_equal(AddPair([signed(4), signed(4), unsigned(3), signed(1), signed(5), unsigned(4)]))
