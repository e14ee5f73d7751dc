"""Lane keys of GEMM output rows and columns: the hash that seeds every output's LFSR lane.

Golden counterpart: :func:`fp8train.sim.golden.lfsr.row_key` / :func:`~fp8train.sim.golden.lfsr.col_key`
(MurmurHash3's 32-bit finaliser of ``(2 * index + 1 + is_col) * 0x9E3779B9``). The controller hashes
one key per tile row and column while the previous tile computes, so the array never waits for it.
"""

from amaranth.hdl import Module, Signal
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

__all__ = ["LaneKeyHasher", "GOLDEN_RATIO_32"]

GOLDEN_RATIO_32 = 0x9E3779B9
_MIX_1, _MIX_2 = 0x85EBCA6B, 0xC2B2AE35
WORD = 32


class LaneKeyHasher(wiring.Component):
    """One key per cycle, three register stages (the two constant multiplications and the input).

    Members
    -------
    i : In(stream)
        ``index`` (16 bits: an output row or column) and ``is_col``.
    o : Out(stream.Signature(32))
        ``col_key(index)`` if ``is_col`` else ``row_key(index)``, three cycles later; the pipeline moves
        only when ``o`` can take a beat.
    """

    i: In(stream.Signature(data.StructLayout({"index": 16, "is_col": 1})))
    o: Out(stream.Signature(WORD))

    LATENCY = 3

    def elaborate(self, platform):
        m = Module()
        advance = ~self.o.valid | self.o.ready          # the pipeline moves only as o drains
        m.d.comb += self.i.ready.eq(advance)

        def xorshift_multiply(h, shift, constant):
            return ((h ^ (h >> shift)) * constant)[:WORD]

        counter = ((2 * self.i.payload.index + 1 + self.i.payload.is_col) * GOLDEN_RATIO_32)[:WORD]
        stage1, stage2 = Signal(WORD), Signal(WORD)
        valid1, valid2 = Signal(), Signal()
        with m.If(advance):
            m.d.sync += [stage1.eq(xorshift_multiply(counter, 16, _MIX_1)), valid1.eq(self.i.valid),
                         stage2.eq(xorshift_multiply(stage1, 13, _MIX_2)), valid2.eq(valid1),
                         self.o.payload.eq(stage2 ^ (stage2 >> 16)), self.o.valid.eq(valid2)]
        return m
