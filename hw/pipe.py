"""Register stages inside an engine's combinational trees, so that its clock can rise.

A :class:`Pipe` is handed to the compressor trees (:mod:`lowbit.hw.compressor`) through the
arithmetic lanes (:mod:`lowbit.hw.lanes`). Every ``every`` counter levels, the tree puts all the
bits it holds through a register, and it registers its last two rows before the carry-propagate
adder.

The registers load on every cycle and have no reset: the engine around them never stalls once a
vector is in (it takes one only when its output has room), and a valid bit that does have a
reset travels beside the data. So they need no enable and no reset net, which would otherwise
reach thousands of flip-flops.

The pipe counts the stages it added along the longest path (:attr:`Pipe.stages`) and those of the
last tree built (:attr:`Pipe.last`), so that the results of trees built side by side can be
brought to the same stage (:meth:`Pipe.delay`) before they meet.
"""

from amaranth.hdl import Module, Signal, Value

__all__ = ["Pipe", "check_pipeline"]


def check_pipeline(value):
    """A pipeline setting: 0 (no stages) or the counter levels between registers (1 or more)."""
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ValueError(f"Pipeline must be a non-negative integer (counter levels between registers, "
                         f"0 for none), not {value!r}")
    return value


class Pipe:
    """Where a tree registers its bits.

    Parameters
    ----------
    m : Module
        Receives the registers as ``sync`` assignments.
    every : int
        Counter levels between registers, at least 1.
    """

    def __init__(self, m, every):
        if not isinstance(m, Module):
            raise TypeError(f"Module must be an Amaranth Module, not {m!r}")
        if check_pipeline(every) < 1:
            raise ValueError(f"A pipe registers every 1 or more levels, not {every}")
        self.m, self.every = m, every
        self.stages = self.last = 0

    def register(self, value, name):
        """``value`` one cycle later."""
        value = Value.cast(value)
        reg = Signal(value.shape(), name=name, reset_less=True)
        self.m.d.sync += reg.eq(value)
        return reg

    def delay(self, value, cycles, name):
        """``value`` ``cycles`` cycles later, through a chain of registers."""
        for k in range(cycles):
            value = self.register(value, f"{name}_d{k}")
        return value

    def mark(self, stages):
        """Record that a tree's result is ``stages`` registers after its inputs (:attr:`last`)."""
        self.last = stages
        self.stages = max(self.stages, stages)
