"""Chunk-accumulating multiply-accumulate unit: FP8 x FP8 products summed in FP16 chunks.

The unit of Wang et al. 2018 (DESIGN.md sections 2 and 3): each exact product is added into a chunk
accumulator; after every ``chunk`` products, and after the last, the chunk sum is added into the
total accumulator and the chunk accumulator restarts from +0. One product per cycle; the summation
order is exactly golden :func:`~fp8train.sim.golden.chunk_dot`'s.
"""

from amaranth.hdl import Module, Mux, Signal
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from ...formats import E5M2, FP16_169, FloatFormat
from .add import add_codes
from .layouts import fp_layout
from .mul import check_exact_product, mul_codes

__all__ = ["ChunkMac"]


class ChunkMac(wiring.Component):
    """Dot products of FP8 codes, chunk-accumulated in ``acc_fmt``.

    Three stages: multiply (registered), chunk addition (its loop closes in one cycle), total
    addition (one per chunk). The chunk adder's feedback is a single cycle so back-to-back products
    of one dot product never wait; a higher clock needs the interleaving of independent outputs that
    the systolic array adds (DESIGN.md section 3), never a split of one sum.

    Parameters
    ----------
    in_fmt, in_fmt_b : FloatFormat
        Formats of the ``a`` and ``b`` operands (``in_fmt_b`` defaults to ``in_fmt``).
    acc_fmt : FloatFormat
        Accumulation format; it must hold every product exactly.
    max_chunk : int
        Largest run-time chunk length (>= 1); it sets the width of the ``chunk`` port.
    rbits : int
        Random bits per stochastic rounding (1 to 14): each beat carries ``2 * rbits``, the low half
        for its chunk addition and the high half for the total addition made when it ends a chunk.

    Members
    -------
    i : In(stream)
        ``a``, ``b`` (codes), ``rand`` (``2 * rbits``) and ``last`` (the dot product's final product).
    o : Out(stream)
        The total, an ``acc_fmt`` code, three cycles after the beat marked ``last``.
    chunk : In(range(max_chunk + 1))
        Products per chunk, held while beats flow; 0 (or a chunk at least as long as the dot
        product) is plain accumulation. A port rather than a parameter: the Device API takes the
        chunk length per call, and one elaboration serves every length.
    stochastic, saturate : In(1)
        Rounding mode and overflow policy of both additions, as :class:`~fp8train.hw.arith.add.FpAdd`.
    """

    def __init__(self, *, in_fmt: FloatFormat = E5M2, in_fmt_b: FloatFormat | None = None,
                 acc_fmt: FloatFormat = FP16_169, max_chunk: int = 4096, rbits: int = 8):
        in_fmt_b = in_fmt if in_fmt_b is None else in_fmt_b
        check_exact_product(in_fmt, in_fmt_b, acc_fmt)
        if not isinstance(max_chunk, int) or max_chunk < 1:
            raise ValueError(f"max_chunk must be a positive integer, not {max_chunk!r}")
        if not isinstance(rbits, int) or not 1 <= rbits <= 14:
            raise ValueError(f"rbits must be an integer from 1 to 14, not {rbits!r}")
        self.in_fmt, self.in_fmt_b, self.acc_fmt = in_fmt, in_fmt_b, acc_fmt
        self.max_chunk, self.rbits = max_chunk, rbits
        super().__init__({
            "i": In(stream.Signature(data.StructLayout({
                "a": fp_layout(in_fmt), "b": fp_layout(in_fmt_b), "rand": 2 * rbits, "last": 1}))),
            "o": Out(stream.Signature(acc_fmt.width)),
            "chunk": In(range(max_chunk + 1)),
            "stochastic": In(1),
            "saturate": In(1),
        })

    def elaborate(self, platform):
        m = Module()
        acc_fmt, rbits = self.acc_fmt, self.rbits
        advance = ~self.o.valid | self.o.ready        # the whole pipeline moves together
        m.d.comb += self.i.ready.eq(advance)

        # Stage 1: the exact product, and whether it ends a chunk.
        count = Signal(range(self.max_chunk))
        product = mul_codes(m, self.in_fmt, self.in_fmt_b, acc_fmt, self.i.payload.a, self.i.payload.b,
                            name="product")
        p_valid, p_code = Signal(), Signal(acc_fmt.width)
        p_rand, p_last, p_chunk_end = Signal(2 * rbits), Signal(), Signal()
        ends_chunk = ((self.chunk != 0) & (count == self.chunk - 1)) | self.i.payload.last
        with m.If(advance):
            m.d.sync += [p_valid.eq(self.i.valid), p_code.eq(product), p_rand.eq(self.i.payload.rand),
                         p_last.eq(self.i.payload.last), p_chunk_end.eq(ends_chunk)]
            with m.If(self.i.valid):
                m.d.sync += count.eq(Mux(ends_chunk, 0, count + 1))

        # Stage 2: chunk accumulation; the loop restarts from +0 after a chunk ends.
        chunk_acc, chunk_restart = Signal(acc_fmt.width), Signal(init=1)
        chunk_sum = add_codes(m, acc_fmt, Mux(chunk_restart, 0, chunk_acc), p_code,
                              stochastic=self.stochastic, rand=p_rand[:rbits], saturate=self.saturate,
                              name="chunk_add")
        c_valid, c_code, c_rand, c_last = Signal(), Signal(acc_fmt.width), Signal(rbits), Signal()
        with m.If(advance):
            m.d.sync += [c_valid.eq(p_valid & p_chunk_end), c_code.eq(chunk_sum),
                         c_rand.eq(p_rand[rbits:]), c_last.eq(p_last)]
            with m.If(p_valid):
                m.d.sync += [chunk_acc.eq(chunk_sum), chunk_restart.eq(p_chunk_end)]

        # Stage 3: the total, one addition per chunk; a dot product's last chunk emits it.
        total, total_restart = Signal(acc_fmt.width), Signal(init=1)
        new_total = add_codes(m, acc_fmt, Mux(total_restart, 0, total), c_code,
                              stochastic=self.stochastic, rand=c_rand, saturate=self.saturate,
                              name="total_add")
        with m.If(self.o.ready):
            m.d.sync += self.o.valid.eq(0)
        with m.If(advance & c_valid):
            m.d.sync += [total.eq(new_total), total_restart.eq(c_last)]
            with m.If(c_last):
                m.d.sync += [self.o.payload.eq(new_total), self.o.valid.eq(1)]
        return m
