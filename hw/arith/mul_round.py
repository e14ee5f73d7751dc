"""Rounded floating-point multiplier: the exact product of two codes of one format rounded once into it.

:class:`~fp8train.hw.arith.mul.FpMul` never rounds (FP8 products fit FP16_169 exactly); the weight
update multiplies FP16_169 by FP16_169 (``lr * d``, ``mu * v``, ``wd * w``), whose 20-bit significand
products must be rounded back to 10 bits. Golden rule: ``fmt.encode(fmt.decode(a) * fmt.decode(b))``,
the exact product rounded to nearest-even (``sim.golden.update``). All product bits reach the shared
rounder :func:`~fp8train.hw.arith.rounding.round_to_code`, so no sticky bit is needed.
"""

from amaranth.hdl import Const, Module, Signal, signed
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from ...formats import FloatFormat
from .layouts import unpack
from .rounding import leading_zeros, min_exp_width, round_to_code
from .stage import register_stage

__all__ = ["FpMulRound", "mul_round_codes"]


def mul_round_codes(m: Module, fmt: FloatFormat, a, b, *, saturate, name: str) -> Signal:
    """Combinational ``RNE(a * b)`` of two ``fmt`` codes as a ``fmt`` code.

    With ``P`` the ``2 * (man_bits + 1)``-bit significand product and ``lz`` its leading zeros, the
    product is ``P * 2**(ea + eb - 2 * (bias + man_bits))``, so the exponent of its top bit after
    normalisation is ``ea + eb - 2 * bias + 1 - lz``. The rounder shifts results below the normal range
    into the subnormal grid and saturates (or gives inf) above it. ``inf * 0`` and NaN inputs give
    ``fmt.nan_code``; ``inf * x`` is inf; a zero product keeps the XOR of the signs.
    """
    op_a, op_b = unpack(m, fmt, a, f"{name}_a"), unpack(m, fmt, b, f"{name}_b")
    sig_width = 2 * (fmt.man_bits + 1)
    # A 10 x 10 product is what a DSP multiplier block is for (unlike FpMul's 3 x 3 shift-add).
    product = Signal(sig_width, name=f"{name}_sig")
    m.d.comb += product.eq(op_a.sig * op_b.sig)
    lz = leading_zeros(m, product, f"{name}_lz")
    normalised = Signal(sig_width, name=f"{name}_normalised")
    m.d.comb += normalised.eq(product << lz)
    exp = Signal(signed(min_exp_width(fmt) + 1), name=f"{name}_exp")       # of the top bit
    m.d.comb += exp.eq(op_a.exp_field + op_b.exp_field - 2 * fmt.bias + 1 - lz)
    nan = op_a.nan | op_b.nan | (op_a.inf & op_b.zero) | (op_a.zero & op_b.inf)
    return round_to_code(m, fmt, negative=op_a.sign ^ op_b.sign, exp=exp, sig=normalised,
                         sticky=Const(0), nan=nan, inf=op_a.inf | op_b.inf, stochastic=Const(0),
                         rand=Const(0, 1), saturate=saturate, name=name)


class FpMulRound(wiring.Component):
    """Multiplies two ``fmt`` codes and rounds once to nearest-even, one product per cycle.

    Semantics are golden ``fmt.encode(fmt.decode(a) * fmt.decode(b), overflow=...)``: subnormal
    inputs and results are exact (or flushed where ``fmt`` has ``subnormals=False``), the sign is the
    XOR of the signs (zeros too), ``inf * x`` is inf, and ``inf * 0`` or a NaN input give
    ``fmt.nan_code``.

    Parameters
    ----------
    fmt : FloatFormat
        Format of both operands and of the product.

    Members
    -------
    i : In(stream.Signature(StructLayout({"a": fmt.width, "b": fmt.width})))
        Operand pairs. ``i.ready = ~o.valid | o.ready`` (STYLE.md rule 4).
    o : Out(stream.Signature(fmt.width))
        Rounded products, one register after the input. Latency 1 cycle, throughput 1 per cycle.
    saturate : In(1)
        1 clamps overflow to the largest finite magnitude; 0 gives inf (NaN where ``fmt`` has no
        infinity). Sampled with each beat.
    """

    def __init__(self, fmt: FloatFormat):
        if not isinstance(fmt, FloatFormat):
            raise TypeError(f"fmt must be a FloatFormat, not {fmt!r}")
        self._fmt = fmt
        super().__init__({
            "i": In(stream.Signature(data.StructLayout({"a": fmt.width, "b": fmt.width}))),
            "o": Out(stream.Signature(fmt.width)),
            "saturate": In(1),
        })

    def elaborate(self, platform):
        m = Module()
        product = mul_round_codes(m, self._fmt, self.i.p.a, self.i.p.b, saturate=self.saturate,
                                  name="product")
        register_stage(m, self.i, self.o, product)
        return m
