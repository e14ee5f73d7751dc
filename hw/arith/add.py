"""Floating-point adder: the exact sum of two codes rounded once (nearest-even or stochastic)."""

from amaranth.hdl import Cat, Module, Mux, Signal, signed
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from ...formats import FloatFormat
from .layouts import unpack
from .rounding import leading_zeros, min_exp_width, round_to_code, shifted_out
from .stage import register_stage

__all__ = ["FpAdd", "add_codes", "guard_bits"]


def guard_bits(rbits: int) -> int:
    """Bits kept below the larger operand's LSB when aligning.

    Past ``rbits + 3`` guard bits the smaller operand only matters through its sticky bit: the
    rounder sees at least ``rbits + 1`` exact remainder bits even after a one-bit cancellation.
    """
    return rbits + 3


def add_codes(m: Module, fmt: FloatFormat, a, b, *, stochastic, rand, saturate, name: str) -> Signal:
    """Combinational ``round(a + b)`` of two ``fmt`` codes, the same rule as golden ``add``.

    The operands are ordered by magnitude, the smaller is aligned to the larger with
    :func:`guard_bits` extra bits and a sticky bit, and an effective subtraction borrows one unit when
    the sticky bit is set, so that the value is always ``sum + sticky * epsilon`` with a positive tail.
    """
    guard = guard_bits(len(rand))
    sig_width = fmt.man_bits + 1
    exp_width = min_exp_width(fmt)
    ops = []
    for label, code in (("a", a), ("b", b)):
        op = unpack(m, fmt, code, f"{name}_{label}")
        exp = Signal(signed(exp_width), name=f"{name}_{label}_exp")
        m.d.comb += exp.eq(op.exp_field - fmt.bias)
        ops.append((op, exp))
    (op_a, exp_a), (op_b, exp_b) = ops
    sig_a, sig_b = op_a.sig, op_b.sig

    swap = Signal(name=f"{name}_swap")                 # order by magnitude: |big| >= |small|
    m.d.comb += swap.eq(code_magnitude(b, fmt) > code_magnitude(a, fmt))
    big_sig, big_exp, big_neg = (Signal.like(sig_a, name=f"{name}_big_sig"),
                                 Signal.like(exp_a, name=f"{name}_big_exp"), Signal(name=f"{name}_big_neg"))
    small_sig, small_exp = Signal.like(sig_a, name=f"{name}_small_sig"), Signal.like(exp_a, name=f"{name}_small_exp")
    m.d.comb += [
        big_sig.eq(Mux(swap, sig_b, sig_a)), big_exp.eq(Mux(swap, exp_b, exp_a)),
        big_neg.eq(Mux(swap, op_b.sign, op_a.sign)),
        small_sig.eq(Mux(swap, sig_a, sig_b)), small_exp.eq(Mux(swap, exp_a, exp_b)),
    ]

    wide = sig_width + guard
    distance = Signal(range(wide + 2), name=f"{name}_distance")
    m.d.comb += distance.eq(Mux(big_exp - small_exp > wide + 1, wide + 1, big_exp - small_exp))
    big_wide = Cat(Signal(guard), big_sig)
    small_full = Cat(Signal(guard), small_sig)
    small_wide = Signal(wide, name=f"{name}_small_aligned")
    sticky = Signal(name=f"{name}_sticky")
    m.d.comb += [small_wide.eq(small_full >> distance),
                 sticky.eq(shifted_out(small_full, distance))]

    subtract = op_a.sign ^ op_b.sign
    total = Signal(wide + 1, name=f"{name}_sum")        # one carry bit above the larger operand
    m.d.comb += total.eq(Mux(subtract, big_wide - small_wide - sticky, big_wide + small_wide))
    # Normalise, but not below the smallest normal exponent: a sum there is exact (both operands lie
    # on the format's grid), so its significand already sits where the subnormal code wants it.
    lz = leading_zeros(m, total, f"{name}_lz")
    limit = Signal(range(wide + 2), name=f"{name}_limit")    # big_exp + 1 - emin >= 1
    m.d.comb += limit.eq(Mux(big_exp + 1 - fmt.emin > wide + 1, wide + 1, big_exp + 1 - fmt.emin))
    shift = Signal.like(lz, name=f"{name}_shift")
    m.d.comb += shift.eq(Mux(lz > limit, limit, lz))
    normalised = Signal(wide + 1, name=f"{name}_normalised")
    m.d.comb += normalised.eq(total << shift)
    exact_zero = (total == 0) & ~sticky

    result_exp = Signal(signed(exp_width + 1), name=f"{name}_result_exp")
    m.d.comb += result_exp.eq(big_exp + 1 - shift)
    negative = Mux(exact_zero, op_a.sign & op_b.sign, big_neg)   # IEEE: x + (-x) = +0
    nan = op_a.nan | op_b.nan | (op_a.inf & op_b.inf & subtract)
    inf = op_a.inf | op_b.inf
    return round_to_code(m, fmt, negative=negative, exp=result_exp, sig=normalised, sticky=sticky,
                         nan=nan, inf=inf, stochastic=stochastic, rand=rand, saturate=saturate, name=name,
                         below_normal=False)


def code_magnitude(code, fmt: FloatFormat):
    """The code without its sign: for finite values its order is the order of magnitudes."""
    return code[:fmt.width - 1]


class FpAdd(wiring.Component):
    """Adds two codes of ``fmt`` and rounds once, one result per cycle (DESIGN.md section 2).

    Parameters
    ----------
    fmt : FloatFormat
        Format of both operands and of the result.
    rbits : int
        Random bits per stochastic rounding (1 to 16).

    Members
    -------
    i : In(stream)
        ``a``, ``b`` (codes) and ``rand`` (``rbits`` random bits, used when ``stochastic``).
    o : Out(stream)
        The rounded sum, one register after its operands.
    stochastic : In(1)
        Rounding mode (0 nearest-even, 1 stochastic), held while beats flow.
    saturate : In(1)
        Overflow clamps to the largest finite value when 1, gives inf (or NaN) when 0.
    """

    def __init__(self, fmt: FloatFormat, *, rbits: int = 8):
        if not isinstance(fmt, FloatFormat):
            raise TypeError(f"fmt must be a FloatFormat, not {fmt!r}")
        if not isinstance(rbits, int) or not 1 <= rbits <= 16:
            raise ValueError(f"rbits must be an integer from 1 to 16, not {rbits!r}")
        self.fmt, self.rbits = fmt, rbits
        super().__init__({
            "i": In(stream.Signature(data.StructLayout({"a": fmt.width, "b": fmt.width, "rand": rbits}))),
            "o": Out(stream.Signature(fmt.width)),
            "stochastic": In(1),
            "saturate": In(1),
        })

    def elaborate(self, platform):
        m = Module()
        total = add_codes(m, self.fmt, self.i.payload.a, self.i.payload.b, stochastic=self.stochastic,
                          rand=self.i.payload.rand, saturate=self.saturate, name="add")
        register_stage(m, self.i, self.o, total)
        return m
