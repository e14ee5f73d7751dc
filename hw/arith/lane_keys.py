"""Lane keys of GEMM output rows and columns: the hash that seeds every output's LFSR lane.

Golden counterpart: :func:`fp8train.sim.golden.lfsr.row_key` / :func:`~fp8train.sim.golden.lfsr.col_key`
(MurmurHash3's 32-bit finaliser of ``(2 * index + 1 + is_col) * 0x9E3779B9``). The controller hashes
one key per tile row and column while the previous tile computes, so the array never waits for it.
"""

from amaranth.hdl import Array, Module, Mux, Signal
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

__all__ = ["LaneKeyHasher", "GOLDEN_RATIO_32"]

GOLDEN_RATIO_32 = 0x9E3779B9
_MIX_1, _MIX_2 = 0x85EBCA6B, 0xC2B2AE35
WORD = 32


class LaneKeyHasher(wiring.Component):
    """Lane keys through three constant multiplications, pipelined or on one small multiplier.

    Parameters
    ----------
    serial : bool
        False: one key per cycle, three register stages (the two constant multiplications and the
        input), nine 16 x 16 DSP blocks on an iCE40. True: one 16 x 16 multiplier used nine times per
        key (:attr:`SERIAL_CYCLES` cycles a key), for the iCE40 UP5K's eight DSP blocks; the controller
        waits for its keys, so only a tile's start is later.

    Members
    -------
    i : In(stream)
        ``index`` (16 bits: an output row or column) and ``is_col``.
    o : Out(stream.Signature(32))
        ``col_key(index)`` if ``is_col`` else ``row_key(index)``: pipelined, three cycles later and the
        pipeline moves only when ``o`` can take a beat; serial, ``i`` is taken only when the hasher is
        idle and ``o`` holds the key until it is taken.
    """

    i: In(stream.Signature(data.StructLayout({"index": 16, "is_col": 1})))
    o: Out(stream.Signature(WORD))

    LATENCY = 3
    SERIAL_CYCLES = 10

    def __init__(self, *, serial: bool = False):
        if not isinstance(serial, bool):
            raise TypeError(f"serial must be True or False, not {serial!r}")
        self.serial = serial
        super().__init__()

    def elaborate(self, platform):
        m = Module()
        counter = 2 * self.i.payload.index + 1 + self.i.payload.is_col
        if self.serial:
            self._serial(m, counter)
        else:
            self._pipelined(m, counter)
        return m

    def _pipelined(self, m, counter):
        advance = ~self.o.valid | self.o.ready          # the pipeline moves only as o drains
        m.d.comb += self.i.ready.eq(advance)

        def xorshift_multiply(h, shift, constant):
            return ((h ^ (h >> shift)) * constant)[:WORD]

        stage1, stage2 = Signal(WORD), Signal(WORD)
        valid1, valid2 = Signal(), Signal()
        with m.If(advance):
            m.d.sync += [stage1.eq(xorshift_multiply((counter * GOLDEN_RATIO_32)[:WORD], 16, _MIX_1)),
                         valid1.eq(self.i.valid),
                         stage2.eq(xorshift_multiply(stage1, 13, _MIX_2)), valid2.eq(valid1),
                         self.o.payload.eq(stage2 ^ (stage2 >> 16)), self.o.valid.eq(valid2)]

    def _serial(self, m, counter):
        """``x * K mod 2**32`` as ``lo(x) lo(K) + (lo(x) hi(K) + hi(x) lo(K)) << 16``: three 16 x 16
        products per multiplication (``part`` 0, 1, 2), the xorshift between multiplications."""
        x, total = Signal(WORD), Signal(WORD)
        multiplication, part = Signal(range(3)), Signal(range(3))
        busy = Signal()
        halves = [h for k in (GOLDEN_RATIO_32, _MIX_1, _MIX_2) for h in (k & 0xFFFF, k >> 16, k & 0xFFFF)]
        factor = Array(halves)[multiplication * 3 + part]
        product = Signal(WORD)
        m.d.comb += product.eq(Mux(part == 2, x[16:], x[:16]) * factor)
        summed = Mux(part == 0, product, total + (product << 16)[:WORD])[:WORD]
        m.d.comb += self.i.ready.eq(~busy & ~self.o.valid)
        with m.If(self.o.ready):
            m.d.sync += self.o.valid.eq(0)
        with m.If(self.i.valid & self.i.ready):
            m.d.sync += [x.eq(counter), multiplication.eq(0), part.eq(0), busy.eq(1)]
        with m.Elif(busy):
            m.d.sync += [total.eq(summed), part.eq(part + 1)]
            with m.If(part == 2):
                m.d.sync += [part.eq(0), multiplication.eq(multiplication + 1)]
                with m.Switch(multiplication):
                    with m.Case(0):
                        m.d.sync += x.eq(summed ^ (summed >> 16))
                    with m.Case(1):
                        m.d.sync += x.eq(summed ^ (summed >> 13))
                    with m.Case(2):
                        m.d.sync += [self.o.payload.eq(summed ^ (summed >> 16)), self.o.valid.eq(1),
                                     busy.eq(0)]
