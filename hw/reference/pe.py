"""A processing element with the FP8 PE's structure but one wide format throughout (FP32 by default):
the comparison point of the area argument of the FP8 papers (Wang et al. 2018, section 1), measured
by ``fp8train report``.

Everything but the arithmetic is the FP8 :class:`~fp8train.hw.array.pe.ProcessingElement`'s (both are
a :class:`~fp8train.hw.array.pe.PipelinedPE`): the same ports and beat flags, input registers,
per-output LFSR lane, chunk and total accumulators and drain register, and the same three-stage timing. The difference is the product: two FP32 significands
multiply into 48 bits, which FP32 cannot hold, so the product is rounded to nearest-even (as an IEEE
``float32`` multiplication) before the chunk addition. With ``chunk`` >= K and round-to-nearest the
dot product equals numpy ``float32`` arithmetic, which is how it is checked.
"""

from ...formats import FP32, FloatFormat
from ..arith.mul_round import mul_round_codes
from ..array.pe import PipelinedPE

__all__ = ["ReferencePE"]


class ReferencePE(PipelinedPE):
    """:class:`~fp8train.hw.array.pe.ProcessingElement` with ``fmt`` operands, products and accumulators.

    Pipeline, ports and flags are those of the FP8 PE (see its docstring), with ``fmt`` in place of
    both ``in_fmt`` and ``acc_fmt``: stage 1 forms the product rounded to nearest-even
    (:func:`mul_round_codes`) and draws the lane, stage 2 adds it into the chunk accumulator, stage 3
    adds a finished chunk into the total; chunk and total additions round as the beat's flags say.
    The significand product is a ``*``, which synthesis may map to hard multipliers, as a real FP32
    unit would (``fp8train report`` charges each DSP block its LUT equivalent).

    Parameters
    ----------
    fmt : FloatFormat
        Operand and accumulation format (``FP32`` for the comparison).
    rbits : int
        Random bits per stochastic rounding, 1 to 14.
    """

    def __init__(self, *, fmt: FloatFormat = FP32, rbits: int = 8):
        if not isinstance(fmt, FloatFormat):
            raise TypeError(f"fmt must be a FloatFormat, not {fmt!r}")
        super().__init__(in_fmt=fmt, acc_fmt=fmt, rbits=rbits)

    def _product(self, m, a, b, beat):
        """Rounded to nearest-even, as an IEEE multiplication: ``fmt`` cannot hold the exact product."""
        return mul_round_codes(m, self._acc_fmt, a, b, saturate=beat.saturate, name="product")
