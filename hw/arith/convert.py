"""Floating-point converter: a code of a wide format rounded once into a narrow one (DESIGN.md §2, §3).

This is the output unit's FP16 -> FP8 step. The source code is exact, so the converter is an unpacker,
a normaliser (subnormal sources get their leading one onto the top bit) and the shared rounder
:func:`~fp8train.hw.arith.rounding.round_to_code`; no sticky bit is needed because every source bit
reaches the rounder.
"""

from amaranth.hdl import Cat, Const, Module, Signal, signed
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from ...formats import FloatFormat
from .layouts import unpack
from .rounding import leading_zeros, min_exp_width, round_to_code
from .stage import register_stage

__all__ = ["FpConvert", "convert_code", "MAX_RBITS"]

#: Widest random draw per conversion (as :class:`~fp8train.hw.arith.add.FpAdd`).
MAX_RBITS = 16


def convert_code(m: Module, src: FloatFormat, dst: FloatFormat, code, *, stochastic, rand, saturate,
                 name: str, scale=None) -> Signal:
    """Combinational ``dst`` code of the ``src`` code ``code``, the same rule as golden ``convert``.

    The significand (hidden bit included, none for subnormals) is shifted left by its leading zeros
    and the exponent of its top bit lowered by as many, then zeros are appended below until the
    rounder has ``len(rand) + 1`` remainder bits under ``dst``'s ``man_bits + 1``. A signed ``scale``
    multiplies the value by ``2**scale`` before its one rounding (the output unit's scaling).
    """
    op = unpack(m, src, code, name)
    sig_width = src.man_bits + 1
    sig = op.sig
    shift = leading_zeros(m, sig, f"{name}_lz")
    scale_width = 0 if scale is None else len(scale)
    exp = Signal(signed(min_exp_width(src, dst) + scale_width), name=f"{name}_exp")  # of the top bit
    m.d.comb += exp.eq(op.exp_field - src.bias - shift + (0 if scale is None else scale))
    pad = max(0, dst.man_bits + len(rand) + 2 - sig_width)
    normalised = Signal(sig_width + pad, name=f"{name}_normalised")
    m.d.comb += normalised.eq(Cat(Const(0, pad), (sig << shift)[:sig_width]))
    return round_to_code(m, dst, negative=op.sign, exp=exp, sig=normalised, sticky=Const(0),
                         nan=op.nan, inf=op.inf, stochastic=stochastic, rand=rand, saturate=saturate,
                         name=name)


class FpConvert(wiring.Component):
    """Rounds a ``src`` code into ``dst``, one result per cycle: golden ``convert`` in hardware.

    Semantics are ``convert(code, src, dst, rounding, rand=rand, rbits=rbits, overflow=...)`` with
    ``rounding`` and ``overflow`` chosen at run time: subnormal sources and results are exact (or
    flushed where a format has ``subnormals=False``), ``-0`` keeps its sign, a NaN becomes
    ``dst.nan_code``, and an infinity becomes ``dst``'s infinity, or where ``dst`` has none its
    largest finite value (``saturate``) or NaN.

    Parameters
    ----------
    src : FloatFormat
        Format of the input codes.
    dst : FloatFormat
        Format of the results: fewer bits than ``src``, and with a NaN if ``src`` has one.
    rbits : int
        Random bits per stochastic rounding, 1 to 16.

    Members
    -------
    i : In(stream.Signature(StructLayout({"code": src.width, "rand": rbits})))
        Codes, each with its ``rbits`` random bits (read only when ``stochastic``).
        ``i.ready = ~o.valid | o.ready`` (STYLE.md rule 4).
    o : Out(stream.Signature(dst.width))
        Rounded codes, one register after the input: a code taken on an edge is on ``o`` from that
        edge on, held until ``o.ready``. Latency 1 cycle, throughput 1 per cycle.
    stochastic : In(1)
        0 rounds to nearest, ties to even; 1 rounds stochastically (DESIGN.md §2). Sampled with each
        beat.
    saturate : In(1)
        1 clamps overflow to the largest finite magnitude; 0 gives inf, or NaN where ``dst`` has no
        infinity. Sampled with each beat.
    """

    def __init__(self, *, src: FloatFormat, dst: FloatFormat, rbits: int = 8):
        for label, fmt in (("src", src), ("dst", dst)):
            if not isinstance(fmt, FloatFormat):
                raise TypeError(f"{label} must be a FloatFormat, not {fmt!r}")
        if dst.width >= src.width:
            raise ValueError(f"dst must be narrower than src, not {dst.width} bits from {src.width}")
        if src.has_nan and not dst.has_nan:
            raise ValueError(f"dst must have a NaN when src has one, not specials={dst.specials!r}")
        if not isinstance(rbits, int) or not 1 <= rbits <= MAX_RBITS:
            raise ValueError(f"rbits must be an integer from 1 to {MAX_RBITS}, not {rbits!r}")
        self._src, self._dst, self._rbits = src, dst, rbits
        super().__init__({
            "i": In(stream.Signature(data.StructLayout({"code": src.width, "rand": rbits}))),
            "o": Out(stream.Signature(dst.width)),
            "stochastic": In(1),
            "saturate": In(1),
        })

    def elaborate(self, platform):
        m = Module()
        code = convert_code(m, self._src, self._dst, self.i.p.code, stochastic=self.stochastic,
                            rand=self.i.p.rand, saturate=self.saturate, name="convert")
        register_stage(m, self.i, self.o, code)
        return m
