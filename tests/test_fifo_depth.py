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


def test_a_padded_window_does_not_stall_the_engine_that_paces_it():
    """conv3x3 (pad 1) on 8 x 8 -> MVAU at 4 cycles per pixel -> conv3x3 (pad 1) -> MVAU at 4
    cycles per window: the second window walks its bottom padding row and the next image's top
    one without input, its 8 bottom windows at the consumer's 4 cycles each, while the first MVAU,
    the bottleneck, makes a pixel every 4 cycles (measured 272 cycles per image against 256)."""
    from lowbit.compiler.fifo_depth import _drain

    second = unelaborated(SlidingWindow(8, 8, 8, 3, pad=1, pad_value=-1))
    engines = [unelaborated(SlidingWindow(8, 8, 1, 3, pad=1, pad_value=-1)), Pixelwise(), second, Pixelwise()]
    cycles, vectors = [100, 256, 100, 256], [64, 64, 64, 64]
    # after pixel (7, 7), at padded (8, 8): (8, 9) emits a window, (9, 0) and (9, 1) do not,
    # (9, 2)..(9, 9) emit 8; then the next image's top row (10 steps) and its (1, 0)
    assert _drain(second, 4.0) == 4 + 2 + 8 * 4 + 10 + 1
    depths = fifo_depths(engines, cycles, vectors)
    assert depths[1] >= -(-_drain(second, 4.0) // 4) + 2  # the pixels the first MVAU makes meanwhile
    # with time to spare in front of the window, no FIFO is needed
    assert fifo_depths(engines, [100, 200, 100, 256], vectors)[1] == 0
