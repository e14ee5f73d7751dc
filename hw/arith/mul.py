"""Floating-point multiplier: the exact product of two codes, never rounded (DESIGN.md §2).

Two FP8 significands multiply into at most eight bits, so a wide enough output format (IBM's
FP16 1-6-9 for every E5M2/E4M3 pair) holds every product exactly and no rounding logic is needed:
the unit is a significand product, a normaliser and special-value overrides.
"""

import math

from amaranth.hdl import Module, Mux, Signal
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from ...formats import FloatFormat
from .layouts import fp_layout, unpack
from .rounding import leading_zeros
from .stage import register_stage

__all__ = ["FpMul", "mul_codes", "check_exact_product", "pair_layout"]


def pair_layout(fmt_a: FloatFormat, fmt_b: FloatFormat) -> data.StructLayout:
    """An operand pair, ``a`` in the low bits: the payload of :class:`FpMul`'s input stream."""
    return data.StructLayout({"a": fp_layout(fmt_a), "b": fp_layout(fmt_b)})


def check_exact_product(fmt_a: FloatFormat, fmt_b: FloatFormat, out_fmt: FloatFormat) -> None:
    """Raise ``ValueError`` unless ``out_fmt`` holds every product of ``fmt_a`` and ``fmt_b`` codes.

    The rules, each checked and named in the message:

    * the significand product has up to ``man_a + man_b + 2`` bits, so ``out_fmt`` needs
      ``man_a + man_b + 1`` fraction bits;
    * the largest product, ``max_a * max_b``, must not exceed ``out_fmt``'s largest finite value;
    * every product is a multiple of ``min_subnormal_a * min_subnormal_b``, which must not lie below
      ``out_fmt``'s smallest subnormal (without output subnormals: the smallest nonzero product must
      not lie below its smallest normal);
    * an input infinity needs one in ``out_fmt``, and an input NaN or infinity (``inf * 0``) needs a NaN.
    """
    fraction_bits = fmt_a.man_bits + fmt_b.man_bits + 1
    if out_fmt.man_bits < fraction_bits:
        raise ValueError(f"out_fmt must have at least man_a + man_b + 1 = {fraction_bits} fraction "
                         f"bits to hold every product exactly, not {out_fmt.man_bits}")
    largest = fmt_a.max_finite * fmt_b.max_finite
    if largest > out_fmt.max_finite:
        raise ValueError(f"out_fmt's largest finite value must be at least max_a * max_b = {largest!r}, "
                         f"not {out_fmt.max_finite!r}")
    if out_fmt.subnormals:
        step = fmt_a.min_subnormal * fmt_b.min_subnormal
        if step < out_fmt.min_subnormal:
            raise ValueError(f"out_fmt's smallest subnormal must be at most min_subnormal_a * "
                             f"min_subnormal_b = {step!r}, not {out_fmt.min_subnormal!r}")
    else:
        smallest = math.prod(f.min_subnormal if f.subnormals else f.min_normal for f in (fmt_a, fmt_b))
        if smallest < out_fmt.min_normal:
            raise ValueError(f"out_fmt without subnormals must have its smallest normal at most the "
                             f"smallest nonzero product {smallest!r}, not {out_fmt.min_normal!r}")
    if (fmt_a.has_inf or fmt_b.has_inf) and not out_fmt.has_inf:
        raise ValueError(f"out_fmt must have an infinity when an input format has one, "
                         f"not specials={out_fmt.specials!r}")
    if (fmt_a.has_nan or fmt_b.has_nan) and not out_fmt.has_nan:
        raise ValueError(f"out_fmt must have a NaN when an input format has one, "
                         f"not specials={out_fmt.specials!r}")


def _shift_add(m: Module, x: Signal, y: Signal, name: str) -> Signal:
    """``x * y`` as a sum of shifted copies of ``x``: ``synth_ecp5`` maps even a tiny ``*`` to a
    whole 18x18 DSP block (DESIGN.md §8), and these adders cost a few LUTs."""
    product = Signal(len(x) + len(y), name=name)
    m.d.comb += product.eq(sum(Mux(y[j], x << j, 0) for j in range(len(y))))
    return product


def mul_codes(m: Module, fmt_a: FloatFormat, fmt_b: FloatFormat, out_fmt: FloatFormat,
              a: data.View, b: data.View, *, name: str) -> data.View:
    """Combinational exact product of ``a`` (``fp_layout(fmt_a)``) and ``b`` as ``fp_layout(out_fmt)``.

    Same rule as golden ``mul(..., out_fmt=out_fmt)``; the formats must pass
    :func:`check_exact_product`. With ``P`` the significand product and ``lz`` its leading zeros,
    the value is ``P * 2**(ea + eb - man_a - man_b)``. The output fraction is ``P << t`` cut to
    ``out_fmt.man_bits`` bits, where ``t`` is the normalising shift (leading one onto the hidden
    bit) or, when that would take the exponent below ``out_fmt``'s smallest normal, the smaller
    shift that lands on the subnormal grid. The exponent field is the subnormal shift minus ``t``
    plus the hidden bit, which is 0 for a subnormal result and the biased exponent otherwise.
    """
    man_out = out_fmt.man_bits
    op_a, op_b = unpack(m, fmt_a, a, f"{name}_a"), unpack(m, fmt_b, b, f"{name}_b")
    zero_a, inf_a, nan_a, sig_a, exp_a = op_a.zero, op_a.inf, op_a.nan, op_a.sig, op_a.exp_field
    zero_b, inf_b, nan_b, sig_b, exp_b = op_b.zero, op_b.inf, op_b.nan, op_b.sig, op_b.exp_field
    sig = _shift_add(m, sig_a, sig_b, f"{name}_sig")
    lz = leading_zeros(m, sig, f"{name}_lz")

    # Shift that puts the product's LSB on the output grid at out_fmt's smallest exponent, i.e.
    # (ea + eb - man_a - man_b) - (emin_out - man_out); check_exact_product makes it non-negative.
    offset = (out_fmt.bias - fmt_a.bias - fmt_b.bias - fmt_a.man_bits - fmt_b.man_bits - 1 + man_out)
    sub_shift = Signal(range(2 + offset, fmt_a.exp_max_field + fmt_b.exp_max_field + offset + 1),
                       name=f"{name}_sub_shift")
    m.d.comb += sub_shift.eq(exp_a + exp_b + offset)
    spare = man_out + 1 - len(sig)                      # output fraction bits beyond the product's
    norm_shift = Signal(range(spare + len(sig) + 1), name=f"{name}_norm_shift")
    m.d.comb += norm_shift.eq(spare + lz)
    shift = Signal.like(norm_shift, name=f"{name}_shift")
    m.d.comb += shift.eq(Mux(norm_shift < sub_shift, norm_shift, sub_shift))
    aligned = Signal(man_out + 1, name=f"{name}_aligned")  # hidden bit on top
    m.d.comb += aligned.eq(sig << shift)

    product = Signal(fp_layout(out_fmt), name=name)
    sign = a.sign ^ b.sign
    with m.If(nan_a | nan_b | (inf_a & zero_b) | (zero_a & inf_b)):
        m.d.comb += product.eq(out_fmt.nan_code)
    with m.Elif(inf_a | inf_b):
        m.d.comb += [product.sign.eq(sign), product.exp.eq(out_fmt.exp_max_field)]
    with m.Elif(zero_a | zero_b):
        m.d.comb += product.sign.eq(sign)
    with m.Else():
        m.d.comb += [product.sign.eq(sign),
                     product.exp.eq(sub_shift - shift + aligned[man_out]),
                     product.man.eq(aligned[:man_out])]
    return product


class FpMul(wiring.Component):
    """Exact product of a ``fmt_a`` code and a ``fmt_b`` code as an ``out_fmt`` code, one per cycle.

    The significand product is written as shift-add, not ``*`` (see :func:`_shift_add`). Semantics
    are golden ``mul(a, b, fmt_a, fmt_b, out_fmt)``: the sign is the XOR of the signs (zeros too),
    subnormal inputs are normalised, ``inf * x`` is inf, and ``inf * 0`` or a NaN input gives
    ``out_fmt.nan_code`` (positive).

    Parameters
    ----------
    fmt_a : FloatFormat
        Format of the first operand.
    fmt_b : FloatFormat, optional
        Format of the second operand; ``fmt_a`` when omitted.
    out_fmt : FloatFormat
        Format of the product; must hold every product exactly (:func:`check_exact_product`,
        ``ValueError`` otherwise). ``FP16_169`` holds every E5M2/E4M3 product, mixed ones included.

    Members
    -------
    i : In(stream.Signature(pair_layout(fmt_a, fmt_b)))
        Operand pairs. ``i.ready = ~o.valid | o.ready`` (STYLE.md rule 4).
    o : Out(stream.Signature(fp_layout(out_fmt)))
        Products, one register after the input: a pair taken on an edge is on ``o`` from that edge
        on, held until ``o.ready``. Latency 1 cycle, throughput 1 per cycle.
    """

    def __init__(self, *, fmt_a: FloatFormat, fmt_b: FloatFormat | None = None, out_fmt: FloatFormat):
        fmt_b = fmt_a if fmt_b is None else fmt_b
        for label, fmt in (("fmt_a", fmt_a), ("fmt_b", fmt_b), ("out_fmt", out_fmt)):
            if not isinstance(fmt, FloatFormat):
                raise TypeError(f"{label} must be a FloatFormat, not {fmt!r}")
        check_exact_product(fmt_a, fmt_b, out_fmt)
        self._fmt_a = fmt_a
        self._fmt_b = fmt_b
        self._out_fmt = out_fmt
        super().__init__({
            "i": In(stream.Signature(pair_layout(fmt_a, fmt_b))),
            "o": Out(stream.Signature(fp_layout(out_fmt))),
        })

    def elaborate(self, platform):
        m = Module()
        product = mul_codes(m, self._fmt_a, self._fmt_b, self._out_fmt, self.i.p.a, self.i.p.b,
                            name="product")
        register_stage(m, self.i, self.o, product)
        return m
