"""PLL settings for a board's network clock, and the PLL primitive that makes it.

The network of a board top (:mod:`lowbit.boards.wrapper`) may run faster or slower than the
board's oscillator. :func:`find_pll` searches the divider settings of the family's PLL for the
output frequency nearest a request and refuses, naming the nearest it found, when none is within
``tolerance``. The limits are those of the vendors' sysCLOCK PLL guides:

- iCE40 (``SB_PLL40_*``, simple feedback): ``f_out = f_in * (DIVF + 1) / ((DIVR + 1) * 2**DIVQ)``,
  with the phase detector ``f_in / (DIVR + 1)`` in 10–133 MHz, the VCO ``f_out * 2**DIVQ`` in
  533–1066 MHz, ``f_out`` in 16–275 MHz, DIVR 0–15, DIVF 0–127, DIVQ 1–6. ``FILTER_RANGE``
  follows the phase detector's frequency.
- ECP5 (``EHXPLLL``, fed back from CLKOP): ``f_out = f_in * CLKFB_DIV / CLKI_DIV``, with the phase
  detector ``f_in / CLKI_DIV`` in 3.125–400 MHz, the VCO ``f_out * CLKOP_DIV`` in 400–800 MHz,
  ``f_out`` in 3.125–400 MHz, CLKI_DIV 1–128, CLKFB_DIV 1–80, CLKOP_DIV 1–128, and
  ``CLKOP_CPHASE = CLKOP_DIV - 1`` (no phase shift).

Frequencies are worked in exact fractions of hertz, so the achieved frequency is the formula's.
"""

from dataclasses import dataclass
from fractions import Fraction

from amaranth.hdl import Const, Instance

from lowbit.core.errors import LowbitError

__all__ = ["PllSetting", "find_pll", "ice40_pll", "ecp5_pll", "pll_instance", "DEFAULT_TOLERANCE", "PLL_FAMILIES"]

# Relative error accepted between the requested and the achieved frequency. Most requests are
# met within it; between the coarsest steps (3 MHz above 135 MHz from a 12 MHz iCE40 oscillator,
# 3.125 MHz from a 25 MHz ECP5 one) the refusal names the nearest clock instead.
DEFAULT_TOLERANCE = 0.01

_MHZ = 1_000_000

# (low, high) in Hz, inclusive.
_ICE40 = {"pfd": (10 * _MHZ, 133 * _MHZ), "vco": (533 * _MHZ, 1066 * _MHZ), "out": (16 * _MHZ, 275 * _MHZ),
          "in": (10 * _MHZ, 133 * _MHZ)}
_ECP5 = {"pfd": (Fraction(3125, 1000) * _MHZ, 400 * _MHZ), "vco": (400 * _MHZ, 800 * _MHZ),
         "out": (Fraction(3125, 1000) * _MHZ, 400 * _MHZ), "in": (8 * _MHZ, 400 * _MHZ)}

# iCE40 loop filter: the upper bound (exclusive, MHz) of the phase detector frequency of each
# FILTER_RANGE value 1..5; 6 above the last.
_ICE40_FILTER_BOUNDS = (17, 26, 44, 66, 101)


@dataclass(frozen=True)
class PllSetting:
    """One PLL configuration and the frequencies it gives.

    Members
    -------
    family : str
        ``"ice40"`` or ``"ecp5"``.
    input_hz, requested_hz, achieved_hz, pfd_hz, vco_hz : fractions.Fraction
        The reference, the request, the output (by the primitive's formula), the phase detector's
        and the VCO's frequencies.
    params : dict of str to int
        The primitive's divider parameters (``DIVR``, ``DIVF``, ``DIVQ``, ``FILTER_RANGE`` on
        iCE40; ``CLKI_DIV``, ``CLKFB_DIV``, ``CLKOP_DIV``, ``CLKOP_CPHASE`` on ECP5).
    """

    family: str
    input_hz: Fraction
    requested_hz: Fraction
    achieved_hz: Fraction
    pfd_hz: Fraction
    vco_hz: Fraction
    params: dict

    @property
    def error(self):
        """Relative difference of the achieved frequency from the requested one."""
        return float(abs(self.achieved_hz - self.requested_hz) / self.requested_hz)

    def as_dict(self):
        """Plain data for a report: frequencies in MHz, and the parameters."""
        return {"family": self.family, "input_mhz": float(self.input_hz / _MHZ),
                "requested_mhz": float(self.requested_hz / _MHZ), "achieved_mhz": float(self.achieved_hz / _MHZ),
                "pfd_mhz": float(self.pfd_hz / _MHZ), "vco_mhz": float(self.vco_hz / _MHZ),
                "params": dict(self.params)}


def _within(value, limits):
    return limits[0] <= value <= limits[1]


def _mhz(hz):
    return f"{float(hz / _MHZ):.6g} MHz"


def _ice40_candidates(f_in):
    for divr in range(16):
        pfd = f_in / (divr + 1)
        if not _within(pfd, _ICE40["pfd"]):
            continue
        filter_range = 1 + sum(pfd >= bound * _MHZ for bound in _ICE40_FILTER_BOUNDS)
        for divf in range(128):
            vco = pfd * (divf + 1)
            if not _within(vco, _ICE40["vco"]):
                continue
            for divq in range(1, 7):
                f_out = vco / 2 ** divq
                if _within(f_out, _ICE40["out"]):
                    yield f_out, pfd, vco, {"DIVR": divr, "DIVF": divf, "DIVQ": divq, "FILTER_RANGE": filter_range}


def _ecp5_candidates(f_in):
    for clki_div in range(1, 129):
        pfd = f_in / clki_div
        if not _within(pfd, _ECP5["pfd"]):
            continue
        for clkfb_div in range(1, 81):
            f_out = pfd * clkfb_div
            if not _within(f_out, _ECP5["out"]):
                continue
            for clkop_div in range(1, 129):
                vco = f_out * clkop_div
                if _within(vco, _ECP5["vco"]):
                    yield f_out, pfd, vco, {"CLKI_DIV": clki_div, "CLKFB_DIV": clkfb_div, "CLKOP_DIV": clkop_div,
                                            "CLKOP_CPHASE": clkop_div - 1}


_FAMILIES = {"ice40": (_ICE40, _ice40_candidates), "ecp5": (_ECP5, _ecp5_candidates)}
PLL_FAMILIES = tuple(_FAMILIES)


def _exact(name, value):
    if isinstance(value, bool) or not isinstance(value, (int, float, Fraction)) or not value > 0 \
            or value == float("inf"):
        raise LowbitError(f"the {name} must be a positive number of hertz, not {value!r}")
    return Fraction(value)


def find_pll(family, input_hz, output_hz, *, tolerance=DEFAULT_TOLERANCE):
    """The setting of ``family``'s PLL nearest ``output_hz`` from a reference of ``input_hz``.

    Among settings equally near, the one with the highest phase detector frequency and then the
    highest VCO frequency is taken (the least jitter).

    Parameters
    ----------
    family : {"ice40", "ecp5"}
    input_hz, output_hz : float
    tolerance : float
        The largest relative error accepted.

    Returns
    -------
    PllSetting

    Raises
    ------
    LowbitError
        If the family has no PLL here, the reference is outside the PLL's input range, or no
        setting is within ``tolerance`` of the request (the message names the nearest).
    """
    if family not in _FAMILIES:
        raise LowbitError(f"lowbit makes no PLL for the {family!r} family",
                          f"a network clock is supported on {' and '.join(PLL_FAMILIES)} boards")
    f_in, f_req = _exact("reference frequency", input_hz), _exact("requested frequency", output_hz)
    limits, candidates = _FAMILIES[family]
    if not _within(f_in, limits["in"]):
        raise LowbitError(f"a {_mhz(f_in)} reference is outside the {family} PLL's input range "
                          f"{_mhz(limits['in'][0])} to {_mhz(limits['in'][1])}")
    best = min(candidates(f_in), key=lambda c: (abs(c[0] - f_req), -c[1], -c[2]))
    f_out, pfd, vco, params = best
    setting = PllSetting(family, f_in, f_req, f_out, pfd, vco, params)
    if setting.error > tolerance:
        low, high = limits["out"]
        raise LowbitError(f"no {family} PLL setting gives {_mhz(f_req)} from the {_mhz(f_in)} oscillator within "
                          f"{tolerance:.2%}: the nearest is {_mhz(f_out)} ({setting.error:.2%} off)",
                          f"ask for {float(f_out / _MHZ):.6g} MHz, or another clock between {_mhz(low)} and "
                          f"{_mhz(high)}")
    return setting


def ice40_pll(input_hz, output_hz, *, tolerance=DEFAULT_TOLERANCE):
    """:func:`find_pll` for iCE40."""
    return find_pll("ice40", input_hz, output_hz, tolerance=tolerance)


def ecp5_pll(input_hz, output_hz, *, tolerance=DEFAULT_TOLERANCE):
    """:func:`find_pll` for ECP5."""
    return find_pll("ecp5", input_hz, output_hz, tolerance=tolerance)


def pll_instance(setting, *, clk_in, clk_out, lock, ref_out=None):
    """The PLL primitive of ``setting``.

    On iCE40 it is ``SB_PLL40_2_PAD``: ``clk_in`` is the oscillator's pin (an
    :class:`amaranth.hdl.IOPort`), which feeds the PLL directly, and ``ref_out`` receives the
    oscillator's clock as it passes through (the pin can then feed nothing else). On ECP5 it is
    ``EHXPLLL`` fed from the fabric: ``clk_in`` is the buffered oscillator clock.

    Parameters
    ----------
    setting : PllSetting
    clk_in : IOPort or Signal
    clk_out, lock : Signal
        The PLL's output clock, and high while it is locked.
    ref_out : Signal, optional
        iCE40 only, and required there: the oscillator's clock.
    """
    p = setting.params
    if setting.family == "ice40":
        if ref_out is None:
            raise ValueError("The iCE40 PLL takes the oscillator's pin and needs ref_out for its clock")
        return Instance(
            "SB_PLL40_2_PAD", p_FEEDBACK_PATH="SIMPLE", p_DIVR=p["DIVR"], p_DIVF=p["DIVF"], p_DIVQ=p["DIVQ"],
            p_FILTER_RANGE=p["FILTER_RANGE"],
            io_PACKAGEPIN=clk_in, o_PLLOUTGLOBALA=ref_out, o_PLLOUTGLOBALB=clk_out, o_LOCK=lock,
            i_RESETB=Const(1), i_BYPASS=Const(0))
    if setting.family == "ecp5":
        return Instance(
            "EHXPLLL", p_PLLRST_ENA="DISABLED", p_INTFB_WAKE="DISABLED", p_STDBY_ENABLE="DISABLED",
            p_DPHASE_SOURCE="DISABLED", p_OUTDIVIDER_MUXA="DIVA", p_CLKOP_ENABLE="ENABLED",
            p_CLKI_DIV=p["CLKI_DIV"], p_CLKFB_DIV=p["CLKFB_DIV"], p_CLKOP_DIV=p["CLKOP_DIV"],
            p_CLKOP_CPHASE=p["CLKOP_CPHASE"], p_CLKOP_FPHASE=0, p_FEEDBK_PATH="CLKOP",
            i_CLKI=clk_in, i_CLKFB=clk_out, o_CLKOP=clk_out, o_LOCK=lock,
            i_RST=Const(0), i_STDBY=Const(0), i_PHASESEL0=Const(0), i_PHASESEL1=Const(0), i_PHASEDIR=Const(0),
            i_PHASESTEP=Const(0), i_PHASELOADREG=Const(0), i_PLLWAKESYNC=Const(0), i_ENCLKOP=Const(0))
    raise ValueError(f"Family must be one of {', '.join(PLL_FAMILIES)}, not {setting.family!r}")
