"""A processing element with the FP8 PE's structure but one wide format throughout (FP32 by default):
the comparison point of the area argument of the FP8 papers (Wang et al. 2018, section 1), measured
by ``fp8train report``.

Everything but the arithmetic is the FP8 :class:`~fp8train.hw.array.pe.ProcessingElement`'s: the
same ports and beat flags, input registers, per-output LFSR lane, chunk and total accumulators and
drain register, and the same three-stage timing. The difference is the product: two FP32 significands
multiply into 48 bits, which FP32 cannot hold, so the product is rounded to nearest-even (as an IEEE
``float32`` multiplication) before the chunk addition. With ``chunk`` >= K and round-to-nearest the
dot product equals numpy ``float32`` arithmetic, which is how it is checked.
"""

from amaranth.hdl import Const, Module, Mux, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from fp8train.sim.golden.lfsr import OUTPUT_FALLBACK_STATE, STATE_BITS

from ...formats import FP32, FloatFormat
from ..arith.add import add_codes
from ..arith.lfsr import lfsr_draw
from ..arith.mul_round import mul_round_codes
from ..array.pe import CONTROL, check_rbits, col_layout, row_layout

__all__ = ["ReferencePE"]


class ReferencePE(wiring.Component):
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
        check_rbits(rbits)
        self._fmt, self._rbits = fmt, rbits
        drain = stream.Signature(fmt.width, always_ready=True)
        super().__init__({
            "west": In(row_layout(fmt)), "east": Out(row_layout(fmt)),
            "north": In(col_layout(fmt)), "south": Out(col_layout(fmt)),
            "ctl_in": In(CONTROL), "ctl_out": Out(CONTROL),
            "drain_in": In(drain), "drain_out": Out(drain),
        })

    def elaborate(self, platform):
        m = Module()
        fmt, rbits = self._fmt, self._rbits

        beat = self.ctl_out
        m.d.sync += [beat.eq(self.ctl_in), self.east.a.eq(self.west.a), self.south.b.eq(self.north.b)]
        with m.If(self.ctl_in.valid & self.ctl_in.first):
            m.d.sync += [self.east.key.eq(self.west.key), self.south.key.eq(self.north.key)]

        # Stage 1: the rounded product and this beat's random bits.
        product = mul_round_codes(m, fmt, self.east.a, self.south.b, saturate=beat.saturate, name="product")
        mixed = self.east.key ^ self.south.key
        lane = Signal(STATE_BITS, init=OUTPUT_FALLBACK_STATE, name="lane")
        current = Signal(STATE_BITS, name="lane_current")
        m.d.comb += current.eq(Mux(beat.first, Mux(mixed.any(), mixed, Const(OUTPUT_FALLBACK_STATE)), lane))
        drawn, advanced = lfsr_draw(current, 2 * rbits)
        with m.If(beat.valid):
            m.d.sync += lane.eq(advanced)
        p_valid, p_code, p_rand, p_beat = Signal(), Signal(fmt.width), Signal(2 * rbits), Signal(CONTROL)
        m.d.sync += [p_valid.eq(beat.valid), p_code.eq(product), p_rand.eq(drawn), p_beat.eq(beat)]

        # Stage 2: chunk accumulation, restarting from +0 after a chunk ends.
        chunk_acc, chunk_restart = Signal(fmt.width), Signal(init=1)
        chunk_sum = add_codes(m, fmt, Mux(chunk_restart, 0, chunk_acc), p_code,
                              stochastic=p_beat.stochastic, rand=p_rand[:rbits],
                              saturate=p_beat.saturate, name="chunk_add")
        c_valid, c_code, c_rand, c_beat = Signal(), Signal(fmt.width), Signal(rbits), Signal(CONTROL)
        m.d.sync += [c_valid.eq(p_valid & p_beat.chunk_end), c_code.eq(chunk_sum),
                     c_rand.eq(p_rand[rbits:]), c_beat.eq(p_beat)]
        with m.If(p_valid):
            m.d.sync += [chunk_acc.eq(chunk_sum), chunk_restart.eq(p_beat.chunk_end)]

        # Stage 3: the total, one addition per chunk.
        total, total_restart = Signal(fmt.width), Signal(init=1)
        new_total = add_codes(m, fmt, Mux(total_restart, 0, total), c_code,
                              stochastic=c_beat.stochastic, rand=c_rand, saturate=c_beat.saturate,
                              name="total_add")
        with m.If(c_valid):
            m.d.sync += [total.eq(new_total), total_restart.eq(c_beat.last)]

        with m.If(c_valid & c_beat.last):
            m.d.sync += [self.drain_out.payload.eq(new_total), self.drain_out.valid.eq(1)]
        with m.Else():
            m.d.sync += [self.drain_out.payload.eq(self.drain_in.payload),
                         self.drain_out.valid.eq(self.drain_in.valid)]
        return m
