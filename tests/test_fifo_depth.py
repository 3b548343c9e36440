"""FIFO depths between engines: the gaps of window scans, traced through the engines before them."""

from lowbit.compiler.fifo_depth import MIN_DEPTH, _first_output_wait, fifo_depths
from lowbit.hw.pool import MaxPool
from lowbit.hw.unused import unelaborated
from lowbit.hw.window import SlidingWindow


class Pixelwise:
    """Stands for an engine between windows (a matrix-vector unit): one beat per pixel."""


def cnn_front():
    """conv3x3 on 28 x 28 -> MVAU -> 2x2 pool -> conv3x3 on 13 x 13 -> a slow MVAU (8 cycles per
    pixel): the Fashion-MNIST bipolar CNN that once measured 989 cycles per image against 968."""
    engines = [unelaborated(SlidingWindow(28, 28, 1, 3)), Pixelwise(),
               unelaborated(MaxPool(26, 26, 16, 2)), unelaborated(SlidingWindow(13, 13, 16, 3)),
               Pixelwise()]
    cycles = [784, 676, 676, 169, 968]
    vectors = [784, 676, 676, 169, 121]
    return engines, cycles, vectors


def test_first_output_wait_traces_the_window_back_to_the_input():
    engines, cycles, vectors = cnn_front()
    # The first window: rows 0..2 of its own input, 2 * 28 + 3 scan steps.
    assert _first_output_wait(engines, cycles, vectors, 0) == 59
    # The second window needs pooled pixel (2, 2), i.e. conv pixel (5, 5), i.e. input pixel (7, 7).
    assert _first_output_wait(engines, cycles, vectors, 3) == 7 * 28 + 8


def test_fifo_in_front_of_the_slow_engine_covers_the_traced_gap():
    engines, cycles, vectors = cnn_front()
    depths = fifo_depths(engines, cycles, vectors)
    # 204 cycles without input to the 8-cycles-per-pixel MVAU: at least 26 pixels buffered.
    assert depths[3] >= max(MIN_DEPTH, -(-(204 + 2) // 8))
    assert depths[:3] == [0, 0, 0] and depths[4] == 0
