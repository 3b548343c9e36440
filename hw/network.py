"""A streaming dataflow top: one engine per layer, joined by streams."""

from amaranth.hdl import Module
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

__all__ = ["DataflowTop"]


class DataflowTop(wiring.Component):
    """Engines chained output to input; the top's ports are the first input and the last output.

    Each engine's result register is the buffer between two engines, so a downstream engine takes a
    vector as soon as it is free. The throughput is set by the slowest engine:
    ``cycles_per_item = max(engine.cycles_per_item)`` and, with the output always ready,
    ``latency = sum(engine.latency)`` from the first input handshake to its output handshake.

    Parameters
    ----------
    engines : list of wiring.Component
        Components with ``i``/``o`` stream ports whose formats chain.

    Members
    -------
    i : In(stream.Signature(engines[0].in_format.shape))
    o : Out(stream.Signature(engines[-1].out_format.shape))

    Raises
    ------
    ValueError
        If there are no engines or neighbouring formats do not match.
    """

    def __init__(self, engines):
        engines = list(engines)
        if not engines:
            raise ValueError("Engines must be a non-empty list, not []")
        for k, (a, b) in enumerate(zip(engines, engines[1:])):
            if a.out_format != b.in_format:
                raise ValueError(f"Engine {k} outputs {a.out_format} but engine {k + 1} takes {b.in_format}")
        self._engines = engines
        super().__init__({
            "i": In(stream.Signature(engines[0].in_format.shape)),
            "o": Out(stream.Signature(engines[-1].out_format.shape)),
        })

    engines = property(lambda self: tuple(self._engines))
    in_format = property(lambda self: self._engines[0].in_format)
    out_format = property(lambda self: self._engines[-1].out_format)

    @property
    def cycles_per_item(self):
        """Cycles between accepted items with neither side stalling: the slowest engine's."""
        return max(e.cycles_per_item for e in self._engines)

    @property
    def latency(self):
        """Cycles from an input handshake to its output handshake with the output ready: the sum
        of the engines' latencies."""
        return sum(e.latency for e in self._engines)

    def elaborate(self, platform):
        m = Module()
        for k, engine in enumerate(self._engines):
            m.submodules[f"engine{k}"] = engine
        wiring.connect(m, wiring.flipped(self.i), self._engines[0].i)
        for a, b in zip(self._engines, self._engines[1:]):
            wiring.connect(m, a.o, b.i)
        wiring.connect(m, self._engines[-1].o, wiring.flipped(self.o))
        return m
