"""The pipeline search: the fewest registers expected to close a clock on a board.

Like the folding searches (:mod:`lowbit.folding`), it stands above the estimator
(:func:`lowbit.boards.estimate.estimate_fmax_mhz`); setting the depth is an IR pass
(:func:`lowbit.compiler.passes.set_pipeline`). The placed result is checked by ``lowbit build
--clock``, which names the critical path if the clock is missed.
"""

from lowbit.boards.boards import get_board
from lowbit.boards.estimate import estimate_fmax_mhz
from lowbit.compiler.codegen import describe
from lowbit.compiler.passes import set_pipeline
from lowbit.core.errors import LowbitError

__all__ = ["pipeline_for_clock", "PIPELINE_CHOICES"]

# The depths tried, fewest registers first: none, then registers every two and every counter
# level, the depths whose placed fmax the timing benchmark measured (deeper stages are only
# extrapolated by the estimator, so they are not chosen).
PIPELINE_CHOICES = (0, 2, 1)


def pipeline_for_clock(graph, clock_mhz, board_name):
    """``(graph, levels, estimated fmax in MHz)``: ``graph`` pipelined with the first of
    :data:`PIPELINE_CHOICES` whose estimated fmax on ``board_name`` reaches ``clock_mhz``.
    The choice is recorded in ``graph.meta["pipeline"]``.

    Raises
    ------
    LowbitError
        If the board is unknown, or no depth is expected to reach the clock: the message gives the
        best estimate and, where they limit it, the engines that are not pipelined.
    """
    if isinstance(clock_mhz, bool) or not isinstance(clock_mhz, (int, float)) or not clock_mhz > 0:
        raise LowbitError(f"the clock must be a positive number of MHz, not {clock_mhz!r}")
    board = get_board(board_name)
    tried = []
    for levels in PIPELINE_CHOICES:
        candidate = set_pipeline(graph, levels)
        layers = describe(candidate)["layers"]
        fmax = estimate_fmax_mhz(layers, board.family)
        tried.append((levels, fmax, layers))
        if fmax >= clock_mhz:
            meta = dict(candidate.meta, pipeline={"levels": levels, "clock_mhz": clock_mhz, "board": board.name,
                                                  "estimated_fmax_mhz": fmax})
            return candidate.replace_meta(meta), levels, fmax
    # The best estimate; among equals a pipelined one, whose unpipelined engines are then the
    # ones with no pipelined form.
    levels, best, layers = max(tried, key=lambda t: (t[1], t[0] > 0))
    unpiped = [layer for layer in layers if not layer.get("pipeline")]
    names, ops = ", ".join(u["name"] for u in unpiped), ", ".join(sorted({u["op"] for u in unpiped}))
    why = (f"; the engines of {names} ({ops}) have no pipelined form and keep the network on its unpipelined "
           "estimate" if unpiped else "")
    raise LowbitError(f"no pipeline depth is expected to close {clock_mhz:g} MHz on {board.name} ({board.family}): "
                      f"the best estimate is {best:.1f} MHz, at --pipeline {levels}{why}",
                      f"ask for --clock {int(best * 10) / 10:g} or less, or build it with 'lowbit build --clock' "
                      "to see the placed fmax")
