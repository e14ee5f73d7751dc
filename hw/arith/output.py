"""Output unit: a GEMM total plus C, ReLU, a power-of-two scale and the conversion to the output format.

Golden counterpart: ``matmul(..., c=...)`` for the C addition (round to nearest-even) followed by
:func:`fp8train.sim.golden.device.output_stage`. The stochastic bits of output ``(i, j)`` are the first
draw of its lane seeded with ``seed ^ OUTPUT_SEED_SALT`` (``LfsrBank.for_outputs``), computed here from
the tile's row and column keys, so no lane state is kept per output.
"""

from amaranth.hdl import Cat, Const, Module, Mux, Signal, signed
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from ...formats import FP16_169, FloatFormat
from ...protocol import OutFormat
from ...sim.golden.device import OUT_FORMATS, OUTPUT_SEED_SALT
from ...sim.golden.lfsr import MAX_RBITS, OUTPUT_FALLBACK_STATE, STATE_BITS, TAP
from .add import add_codes
from .convert import convert_code
from .layouts import unpack
from .stage import register_stage

__all__ = ["OutputUnit", "SCALE_BITS"]

#: Width of the signed power-of-two scale (the descriptor's ``scale`` byte).
SCALE_BITS = 8


class OutputUnit(wiring.Component):
    """One GEMM result per cycle from its FP16_169 total to the output code.

    Parameters
    ----------
    rbits : int
        Random bits of a stochastic output rounding (1 to 28).

    Members
    -------
    i : In(stream)
        ``total`` and ``c`` (FP16_169 codes), ``row_key``/``col_key`` (the output's lane keys).
    o : Out(stream.Signature(16))
        The result code (FP8 codes in the low byte), ``LATENCY`` registers after its input: the C
        addition and the conversion are one adder's delay each, so a register between them keeps
        the unit off the accelerator's critical path (README "Resources and Fmax").
    has_c, relu, stochastic, saturate : In(1)
        Command options, held while results flow.
    scale : In(signed(8))
    out_format : In(2)
        An :class:`~fp8train.protocol.OutFormat` value (3 is refused before a command starts).
    seed : In(32)
        The command's seed.
    """

    LATENCY = 2

    def __init__(self, *, rbits: int = 8):
        if not isinstance(rbits, int) or not 1 <= rbits <= MAX_RBITS:
            raise ValueError(f"rbits must be an integer from 1 to {MAX_RBITS}, not {rbits!r}")
        self.rbits = rbits
        acc = FP16_169.width
        super().__init__({
            "i": In(stream.Signature(data.StructLayout({"total": acc, "c": acc, "row_key": 32, "col_key": 32}))),
            "o": Out(stream.Signature(16)),
            "has_c": In(1), "relu": In(1), "stochastic": In(1), "saturate": In(1),
            "scale": In(signed(SCALE_BITS)), "out_format": In(2), "seed": In(32),
        })

    def elaborate(self, platform):
        m = Module()
        acc_fmt: FloatFormat = FP16_169
        payload = self.i.payload
        summed = add_codes(m, acc_fmt, payload.total, payload.c, stochastic=Const(0), rand=Const(0, 1),
                           saturate=self.saturate, name="c_add")
        value = Signal(acc_fmt.width)
        m.d.comb += value.eq(Mux(self.has_c, summed, payload.total))
        decoded = unpack(m, acc_fmt, value, "value")
        rectified = Signal(acc_fmt.width)
        m.d.comb += rectified.eq(Mux(self.relu & decoded.sign & ~decoded.nan, 0, value))

        state = Signal(STATE_BITS)
        mixed = (self.seed ^ OUTPUT_SEED_SALT ^ payload.row_key ^ payload.col_key)[:STATE_BITS]
        m.d.comb += state.eq(Mux(mixed.any(), mixed, OUTPUT_FALLBACK_STATE))
        rand = (state[TAP:] ^ state)[:self.rbits]

        # Stage 1 ends here: the rectified value and its random bits.
        staged = stream.Signature(data.StructLayout({"value": acc_fmt.width, "rand": self.rbits})).create()
        register_stage(m, self.i, staged, Cat(rectified, rand))

        result = Signal(16)
        for code, fmt in OUT_FORMATS.items():
            converted = convert_code(m, acc_fmt, fmt, staged.payload.value, stochastic=self.stochastic,
                                     rand=staged.payload.rand, saturate=self.saturate, scale=self.scale,
                                     name=f"to_{OutFormat(code).name.lower()}")
            with m.If(self.out_format == code):
                m.d.comb += result.eq(converted)

        register_stage(m, staged, self.o, result)
        return m
