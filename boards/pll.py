"""PLL settings for the board clocks, computed from the devices' documented ranges (the search that
``icepll`` and ``ecppll`` from the IceStorm / Trellis tools do), and the primitive instances."""

from dataclasses import dataclass

from amaranth.hdl import Instance, Signal

__all__ = ["Ice40Pll", "Ecp5Pll", "ice40_pll", "ecp5_pll"]


@dataclass(frozen=True)
class Ice40Pll:
    """``SB_PLL40`` in simple feedback: ``f_out = f_in * (divf + 1) / ((divr + 1) * 2**divq)``."""
    divr: int
    divf: int
    divq: int
    filter_range: int
    f_out: float


@dataclass(frozen=True)
class Ecp5Pll:
    """``EHXPLLL`` fed back from CLKOP: ``f_out = f_in * clkfb_div / clki_div``, VCO ``f_out * clkop_div``."""
    clki_div: int
    clkfb_div: int
    clkop_div: int
    f_out: float


def _check(f_in, f_out, low, high):
    for label, value in (("f_in", f_in), ("f_out", f_out)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
            raise ValueError(f"{label} must be a positive frequency in MHz, not {value!r}")
    if not low <= f_out <= high:
        raise ValueError(f"f_out must be from {low} to {high} MHz for this PLL, not {f_out!r}")


def ice40_pll(f_in: float, f_out: float) -> Ice40Pll:
    """Closest iCE40 PLL setting (iCE40 sysCLOCK PLL guide, TN1251: PFD 10-133 MHz, VCO 533-1066 MHz,
    output 16-275 MHz)."""
    _check(f_in, f_out, 16, 275)
    best = None
    for divr in range(16):
        pfd = f_in / (divr + 1)
        if not 10 <= pfd <= 133:
            continue
        for divf in range(128):
            vco = pfd * (divf + 1)
            if not 533 <= vco <= 1066:
                continue
            for divq in range(1, 7):
                out = vco / 2 ** divq
                if best is None or abs(out - f_out) < abs(best[0] - f_out):
                    best = (out, divr, divf, divq, pfd)
    if best is None:
        raise ValueError(f"no iCE40 PLL setting makes {f_out} MHz from {f_in} MHz")
    out, divr, divf, divq, pfd = best
    filter_range = 1 + sum(pfd >= edge for edge in (17, 26, 44, 66, 101))
    return Ice40Pll(divr, divf, divq, filter_range, out)


def ecp5_pll(f_in: float, f_out: float) -> Ecp5Pll:
    """Closest ECP5 PLL setting (FPGA-TN-02200, ECP5 sysCLOCK: PFD 3.125-400 MHz, VCO 400-800 MHz)."""
    _check(f_in, f_out, 3.125, 400)
    best = None
    for clki_div in range(1, 129):
        pfd = f_in / clki_div
        if not 3.125 <= pfd <= 400:
            continue
        for clkfb_div in range(1, 81):
            out = pfd * clkfb_div
            for clkop_div in range(1, 129):
                vco = out * clkop_div
                score = (abs(out - f_out), abs(vco - 600))     # then a VCO mid-range, as ecppll
                if 400 <= vco <= 800 and (best is None or score < best[0]):
                    best = (score, out, clki_div, clkfb_div, clkop_div)
    if best is None:
        raise ValueError(f"no ECP5 PLL setting makes {f_out} MHz from {f_in} MHz")
    _, out, clki_div, clkfb_div, clkop_div = best
    return Ecp5Pll(clki_div, clkfb_div, clkop_div, out)


def ice40_instance(setting: Ice40Pll, pad, clk_out: Signal, lock: Signal) -> Instance:
    """``SB_PLL40_PAD`` on the clock input pad ``pad`` (the iCEBreaker's 12 MHz pin is a PLL pad)."""
    return Instance("SB_PLL40_PAD",
                    p_FEEDBACK_PATH="SIMPLE", p_DIVR=setting.divr, p_DIVF=setting.divf, p_DIVQ=setting.divq,
                    p_FILTER_RANGE=setting.filter_range,
                    i_PACKAGEPIN=pad, i_RESETB=1, i_BYPASS=0, o_PLLOUTGLOBAL=clk_out, o_LOCK=lock)


def ecp5_instance(setting: Ecp5Pll, clk_in, clk_out: Signal, lock: Signal) -> Instance:
    """``EHXPLLL`` with CLKOP fed back (the ``ecppll`` configuration)."""
    return Instance("EHXPLLL",
                    p_PLLRST_ENA="DISABLED", p_INTFB_WAKE="DISABLED", p_STDBY_ENABLE="DISABLED",
                    p_DPHASE_SOURCE="DISABLED", p_OUTDIVIDER_MUXA="DIVA", p_CLKOP_ENABLE="ENABLED",
                    p_CLKI_DIV=setting.clki_div, p_CLKFB_DIV=setting.clkfb_div,
                    p_CLKOP_DIV=setting.clkop_div, p_CLKOP_CPHASE=setting.clkop_div // 2 - 1,
                    p_CLKOP_FPHASE=0, p_FEEDBK_PATH="CLKOP",
                    i_CLKI=clk_in, i_CLKFB=clk_out, i_RST=0, i_STDBY=0, i_PHASESEL0=0, i_PHASESEL1=0,
                    i_PHASEDIR=0, i_PHASESTEP=0, i_PHASELOADREG=0, i_PLLWAKESYNC=0, i_ENCLKOP=0,
                    o_CLKOP=clk_out, o_LOCK=lock)
