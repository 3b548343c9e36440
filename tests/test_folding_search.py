"""Folding search: the cheapest folding for a cycle target, the fastest that fits a budget."""

import itertools

import numpy as np
import pytest

from lowbit.compiler.folding import apply_folding
from lowbit.folding import fold_for_board, fold_for_cycles, fold_for_luts, lut_cost
from lowbit.compiler.ir import BIPOLAR, Folding, Graph, MatMul, MultiThreshold, divisors
from lowbit.core.errors import LowbitError


def small_graph():
    rng = np.random.default_rng(0)
    nodes = []
    for k, (mh, mw) in enumerate([(16, 48), (8, 16)]):
        mm = MatMul(f"fc{k}", rng.choice([-1, 1], size=(mh, mw)), "bipolar", BIPOLAR)
        nodes += [mm, MultiThreshold(f"fc{k}_act", rng.integers(-4, 5, size=(mh, 1)), mm.out_type)]
    return Graph(BIPOLAR, 48, nodes)


def total_cost(graph, foldings, cost):
    ths = {n.name[:-4]: n for n in graph.nodes if isinstance(n, MultiThreshold)}
    return sum(cost(m, ths[m.name], f) for m, f in zip(graph.matmuls(), foldings))


def test_each_target_gets_the_cheapest_folding_that_meets_it():
    """Exhaustive check over every folding of the network: for two targets the search returns
    different foldings, each meeting its target with fewer estimated LUTs than any other folding
    that meets it (ties: no other folding is cheaper)."""
    g = small_graph()
    cost = lut_cost("xilinx")
    everything = list(itertools.product(*[[Folding(p, s) for p in divisors(m.mh) for s in divisors(m.mw)]
                                          for m in g.matmuls()]))
    chosen = []
    for target in (96, 12):
        folded = fold_for_cycles(g, target)
        assert folded.cycles_per_inference() <= target
        assert folded.meta["folding"] == {"target_cycles": target, "cost": "estimated xc7 LUTs"}
        mine = [m.folding for m in folded.matmuls()]
        best = total_cost(g, mine, cost)
        meeting = [fs for fs in everything
                   if max(m.cycles(f) for m, f in zip(g.matmuls(), fs)) <= target]
        assert len(meeting) > 10
        assert all(total_cost(g, fs, cost) >= best for fs in meeting)
        chosen.append((mine, best))
    assert chosen[0][0] != chosen[1][0] and chosen[0][1] < chosen[1][1]


def test_fastest_folding_within_a_lut_budget():
    g = small_graph()
    cost = lut_cost("xilinx")
    loose = fold_for_luts(g, 100_000)
    assert loose.cycles_per_inference() == 1  # everything fits fully unrolled
    slow = apply_folding(g, [Folding(1, 1), Folding(1, 1)])
    floor = total_cost(g, [Folding(1, 1)] * 2, cost)
    budget = floor + 60
    tight = fold_for_luts(g, budget)
    assert total_cost(g, [m.folding for m in tight.matmuls()], cost) <= budget
    assert tight.cycles_per_inference() < slow.cycles_per_inference()
    with pytest.raises(LowbitError, match=r"does not fit 10 LUTs even fully folded: \d+ LUT of 10"):
        fold_for_luts(g, 10)


def test_board_fit_and_too_big():
    g = small_graph()
    fast = fold_for_board(g, "arty-a7-35")
    assert fast.cycles_per_inference() == 1
    rng = np.random.default_rng(1)
    # A million weights: three times the board's LUTs and eight times its block RAM, fully folded.
    big = MatMul("big", rng.choice([-1, 1], size=(1024, 1024)), "bipolar", BIPOLAR)
    with pytest.raises(LowbitError, match="does not fit the icebreaker board even fully folded: luts"):
        fold_for_board(Graph(BIPOLAR, 1024, [big]), "icebreaker")


def test_weight_memories_set_by_hand_through_the_cli(digits_checkpoint, tmp_path, capsys):
    import json

    from lowbit.cli import main

    ckpt = str(digits_checkpoint[0])
    # fc0 (16 Kbit) would be left to synthesis, fc1 (4 Kbit) a ROM in LUTs: both set by hand
    assert main(["compile", ckpt, "-o", str(tmp_path / "b"), "--target-cycles", "64",
                 "--weight-memory", "fc0=block,fc1=block"]) == 0
    layers = json.loads((tmp_path / "b" / "manifest.json").read_text())["layers"]
    assert [layer["weight_memory"]["style"] for layer in layers] == ["block", "block", "lut"]
    for value, message in [("fc9=block", "no matrix layer named 'fc9' takes a weight memory"),
                           ("fc0=blok", "fc0: weight memory must be one of auto, block, lut, const, not 'blok'"),
                           ("fc2=const", "fc2: constant weights need a fully unrolled folding"),
                           ("fc0", "expected LAYER=MEMORY,... with each layer once"),
                           ("fc0=lut,fc0=block", "expected LAYER=MEMORY,... with each layer once")]:
        try:  # a malformed value is argparse's usage error, which exits
            code = main(["compile", ckpt, "-o", str(tmp_path / "c"), "--target-cycles", "64",
                         "--weight-memory", value])
        except SystemExit as e:
            code = e.code
        assert code == 2 and message in capsys.readouterr().err
        assert not (tmp_path / "c").exists()


def test_memory_choice_and_identity_removal():
    from lowbit.compiler.passes import choose_memories, remove_identities
    from lowbit.compiler.ir import MaxPool

    g = apply_folding(small_graph(), [Folding(16, 48), Folding(1, 2)])
    mems = [m.weight_memory for m in choose_memories(g).matmuls()]
    assert mems == ["const", "lut"]  # fully unrolled and small; folded and small
    assert [m.weight_memory for m in g.matmuls()] == ["auto", "auto"]  # the input is untouched
    rng = np.random.default_rng(2)
    big = MatMul("big", rng.choice([-1, 1], size=(128, 256)), "bipolar", BIPOLAR, Folding(1, 8))
    assert choose_memories(Graph(BIPOLAR, 256, [big])).matmuls()[0].weight_memory == "auto"  # synthesis's choice
    with pytest.raises(LowbitError, match="constant weights need a fully unrolled folding, not 1x8"):
        big.with_weight_memory("const")
    mm = MatMul("m", rng.choice([-1, 1], size=(3, 2)), "bipolar", BIPOLAR)
    g = Graph(BIPOLAR, (4, 4, 2), [MaxPool("p", 2, 1, 1), mm])
    assert [n.name for n in remove_identities(g).nodes] == ["m"]
