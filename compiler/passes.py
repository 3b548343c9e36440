"""Graph-to-graph passes after folding: memory styles, pipelining and identity removal.

Each pass returns a new, checked graph and never mutates its input. (Streamlining, the lowering of
convolutions and tiled compute-once happen in the export, ``lowbit.model.export``; foldings in
``lowbit.compiler.folding`` and FIFO depths in ``lowbit.compiler.fifo_depth``.)
"""

from lowbit.core.errors import LowbitError
from lowbit.core.formats import weight_format

from .graph import map_nodes
from .ops.matmul import WEIGHT_MEMORIES, MatMul

__all__ = ["choose_memories", "set_weight_memories", "remove_identities", "set_pipeline", "LUT_ROM_MAX_BITS",
           "CONST_MAX_BITS"]

# A ROM this small costs less as LUTs than a block RAM (an xc7 RAMB18 holds 18 Kbit; Yosys's own
# rule maps small ROMs to logic too).
LUT_ROM_MAX_BITS = 4096
# Fully unrolled weights up to this many bits are baked into the logic, where synthesis
# simplifies by every constant (zero weights vanish); beyond it the logic grows too large.
CONST_MAX_BITS = 64 * 1024


def choose_memories(graph):
    """Give every MatMul left at ``"auto"`` a weight memory: constants when fully unrolled and
    small enough, LUT ROM when small. A larger ROM stays ``"auto"``: synthesis puts it in block
    RAM or in logic by its shape, as the estimator models (``lowbit.hw.fabric.rom_brams``); a few
    words of thousands of bits would fill a board's block RAMs and stay almost empty in each.
    Hand-set choices are kept."""
    def choose(n):
        if isinstance(n, MatMul) and n.weight_memory == "auto":
            bits = n.tile_rows * n.mw * weight_format(n.weight_format).storage_bits
            if n.folding is not None and n.cycles() == 1 and bits <= CONST_MAX_BITS:
                n = n.with_weight_memory("const")
            elif bits <= LUT_ROM_MAX_BITS:
                n = n.with_weight_memory("lut")
        return n
    return graph.replace_nodes(map_nodes(graph.nodes, choose)).check()


def remove_identities(graph):
    """Drop ops that change nothing (:attr:`lowbit.compiler.graph.Op.identity`), such as a 1x1
    max pool with stride 1: an engine that would only add a register stage and a scan."""
    def keep(n):
        return None if n.identity else n
    return graph.replace_nodes(map_nodes(graph.nodes, keep)).check()


def set_pipeline(graph, levels):
    """Every MatMul's engine registers its lane's tree every ``levels`` counter levels (0: none;
    see :class:`lowbit.hw.mvau.MatrixVectorUnit`); the ops whose engines have a pipelined form
    of another kind (a collect that shifts its beats in, scans whose flags are registers) take it
    where ``levels`` is nonzero."""
    def pipelined(n):
        return n.with_pipeline(levels) if hasattr(n, "with_pipeline") else n
    graph = graph.replace_nodes(map_nodes(graph.nodes, pipelined)).check()
    # A depth set by hand replaces one chosen for a clock (lowbit.pipelining), whose record goes.
    return graph.replace_meta({k: v for k, v in graph.meta.items() if k != "pipeline"})


def set_weight_memories(graph, choices):
    """Put the weights of each MatMul named in ``choices`` (``{name: memory}``, a memory of
    :data:`~lowbit.compiler.ops.matmul.WEIGHT_MEMORIES`) in that memory; :func:`choose_memories`
    keeps hand-set choices."""
    names = [m.name for m in graph.matmuls()]
    for name, memory in choices.items():
        if name not in names:
            raise LowbitError(f"no matrix layer named {name!r} takes a weight memory",
                              f"the matrix layers: {', '.join(names)}")
        if memory not in WEIGHT_MEMORIES:
            raise LowbitError(f"{name}: weight memory must be one of {', '.join(WEIGHT_MEMORIES)}, not {memory!r}",
                              "block: block RAM; lut: a ROM in LUTs; const: weights in the logic; auto: the "
                              "compiler chooses")
    return graph.replace_nodes(map_nodes(
        graph.nodes, lambda n: n.with_weight_memory(choices[n.name]) if isinstance(n, MatMul) and n.name in choices
        else n)).check()
