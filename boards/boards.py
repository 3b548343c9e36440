"""The boards lowbit targets: their FPGA, its resources, and the amaranth-boards platform behind them.

Each :class:`Board` carries the device's capacities in the units :mod:`lowbit.boards.synth` counts:
LUT4s on iCE40 and ECP5, LUT6s on Xilinx 7-series; block RAMs as ``SB_RAM40_4K`` (4 Kbit),
``DP16KD`` (18 Kbit) or RAMB18 (18 Kbit, a RAMB36 counting as two); DSPs as ``SB_MAC16``,
``MULT18X18D`` or ``DSP48E1``. Capacities are from the vendors' family data sheets (Lattice
FPGA-DS-02008 for iCE40 UltraPlus, FPGA-DS-02012 for ECP5; AMD DS180 for 7-series).
"""

import importlib
from dataclasses import dataclass

from lowbit.core.errors import LowbitError
from lowbit.core.resources import Resources

__all__ = ["Board", "BOARDS", "get_board"]


@dataclass(frozen=True)
class Board:
    """One FPGA board.

    Members
    -------
    name : str
        Short name used on the command line, e.g. ``"icebreaker"``.
    title : str
        The board's full name.
    family : str
        Synthesis family: ``"ice40"``, ``"ecp5"`` or ``"xilinx"``.
    device : str
        The FPGA part, e.g. ``"iCE40UP5K-SG48"``.
    luts, ffs, brams, dsps : int
        Capacities, in the units of :class:`lowbit.boards.synth.SynthResult`.
    clock_hz : float
        Frequency of the board's default oscillator.
    platform : str or None
        ``"module:Class"`` of the amaranth-boards platform; None where it has none.
    bitstream : bool
        True where the open toolchain (nextpnr) places and routes the device to a bitstream.
    """

    name: str
    title: str
    family: str
    device: str
    luts: int
    ffs: int
    brams: int
    dsps: int
    clock_hz: float
    platform: str
    bitstream: bool

    def platform_class(self):
        """The amaranth-boards platform class of this board.

        Raises
        ------
        LowbitError
            If the board has no platform class or amaranth-boards is not installed.
        """
        if self.platform is None:
            raise LowbitError(f"board {self.name!r} has no amaranth-boards platform",
                              "pick a board with a bitstream flow: " + ", ".join(
                                  b.name for b in BOARDS.values() if b.bitstream))
        module, cls = self.platform.split(":")
        try:
            return getattr(importlib.import_module(module), cls)
        except ImportError:
            raise LowbitError(f"board {self.name!r} needs amaranth-boards, which is not installed",
                              "pip install amaranth-boards") from None

    def capacity(self):
        """The device's :class:`~lowbit.core.resources.Resources`."""
        return Resources.of(self)


BOARDS = {b.name: b for b in (
    # iCE40 UltraPlus 5K: 5280 LUT4 + FF, 30 EBR of 4 Kbit, 8 MAC16 (the 4 SPRAMs are not used).
    Board("icebreaker", "1BitSquared iCEBreaker", "ice40", "iCE40UP5K-SG48",
          luts=5280, ffs=5280, brams=30, dsps=8, clock_hz=12e6,
          platform="amaranth_boards.icebreaker:ICEBreakerPlatform", bitstream=True),
    # ECP5 85F: 83,640 LUT4 (84K), one FF per LUT, 208 EBR of 18 Kbit, 156 18x18 multipliers.
    Board("ulx3s", "Radiona ULX3S (85F)", "ecp5", "LFE5U-85F-6BG381C",
          luts=83640, ffs=83640, brams=208, dsps=156, clock_hz=25e6,
          platform="amaranth_boards.ulx3s:ULX3S_85F_Platform", bitstream=True),
    # Artix-7 35T: 20,800 LUT6, 41,600 FF, 50 RAMB36 = 100 RAMB18, 90 DSP48E1.
    Board("arty-a7-35", "Digilent Arty A7-35T", "xilinx", "xc7a35ticsg324-1L",
          luts=20800, ffs=41600, brams=100, dsps=90, clock_hz=100e6,
          platform="amaranth_boards.arty_a7:ArtyA7_35Platform", bitstream=False),
    # Zynq-7020: 53,200 LUT6, 106,400 FF, 140 RAMB36 = 280 RAMB18, 220 DSP48E1.
    Board("arty-z7-20", "Digilent Arty Z7-20", "xilinx", "xc7z020clg400-1",
          luts=53200, ffs=106400, brams=280, dsps=220, clock_hz=125e6,
          platform="amaranth_boards.arty_z7:ArtyZ720Platform", bitstream=False),
)}


def get_board(name):
    """The :class:`Board` called ``name``.

    Raises
    ------
    LowbitError
        If no board has that name; the message lists the known boards.
    """
    board = BOARDS.get(name)
    if board is None:
        raise LowbitError(f"unknown board {name!r}; known boards: {', '.join(BOARDS)}",
                          f"pass --board with one of: {', '.join(BOARDS)}")
    return board
