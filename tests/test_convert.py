# amaranth: UnusedElaboratable=no
"""FP converter: RTL against golden ``convert`` under cocotb (every 16-bit source code, nearest-even
and stochastic with the RTL LFSR's bits), and its parameter checks."""

import os

import numpy as np
import pytest
from amaranth.hdl import Cat, Module
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out
from amaranth.sim import Simulator

from fp8train.formats import BF16, E4M3, E5M2, FP16, FP16_169, FloatFormat
from fp8train.hw.arith.convert import FpConvert
from fp8train.hw.arith.lfsr import LfsrBank
from fp8train.sim.benches import harness
from fp8train.sim.golden import convert

RBITS = 8
# One elaboration holds all three converters (one simulator build instead of three); Icarus, ~300x
# slower, runs the structured codes of the bench plus a random sample instead of all 65,536.
PAIRS = [(FP16_169, E5M2), (FP16, E4M3), (FP16_169, E4M3)]
ICARUS_SAMPLE = 2000


class LfsrConverters(wiring.Component):
    """Test wrapper: one :class:`FpConvert` per ``(src, dst)`` pair on a shared source code, with the
    random bits of one :class:`LfsrBank` lane, so stochastic rounding uses the RTL's own stream.

    The converters see identical inputs and handshakes and therefore move in lock-step; the
    wrapper's handshake is the first converter's. The lane advances on every accepted beat.

    Members
    -------
    i : In(stream.Signature(src.width))
        Source codes (every pair's ``src`` must have the same width).
    o : Out(stream.Signature(sum of dst widths))
        The results concatenated, first pair in the low bits; latency 1.
    stochastic, saturate : In(1)
        As :class:`FpConvert`'s, for every converter.
    seed : In(32), load : In(1)
        As :class:`LfsrBank`'s.
    """

    def __init__(self, pairs, *, rbits: int):
        if len({src.width for src, _ in pairs}) != 1:
            raise ValueError("every pair's src must have the same width")
        self._pairs, self._rbits = pairs, rbits
        super().__init__({
            "i": In(stream.Signature(pairs[0][0].width)),
            "o": Out(stream.Signature(sum(dst.width for _, dst in pairs))),
            "stochastic": In(1), "saturate": In(1), "seed": In(32), "load": In(1),
        })

    def elaborate(self, platform):
        m = Module()
        m.submodules.lfsr = lfsr = LfsrBank(lanes=1, rbits=self._rbits)
        m.d.comb += [lfsr.seed.eq(self.seed), lfsr.load.eq(self.load),
                     lfsr.o.ready.eq(self.i.valid & self.i.ready)]
        convs = []
        for index, (src, dst) in enumerate(self._pairs):
            m.submodules[f"convert{index}"] = conv = FpConvert(src=src, dst=dst, rbits=self._rbits)
            m.d.comb += [conv.i.valid.eq(self.i.valid), conv.i.p.code.eq(self.i.p),
                         conv.i.p.rand.eq(lfsr.o.p[0]), conv.stochastic.eq(self.stochastic),
                         conv.saturate.eq(self.saturate), conv.o.ready.eq(self.o.ready)]
            convs.append(conv)
        m.d.comb += [self.i.ready.eq(convs[0].i.ready), self.o.valid.eq(convs[0].o.valid),
                     self.o.p.eq(Cat(*(conv.o.p for conv in convs)))]
        return m


@pytest.mark.rtl
def test_fp_convert_matches_golden():
    sample = ICARUS_SAMPLE if os.environ.get("SIM", "verilator") == "icarus" else None
    harness.run(LfsrConverters(PAIRS, rbits=RBITS), "fp_convert_lfsr", "convert_bench",
                params={"pairs": [[str(src), str(dst)] for src, dst in PAIRS], "rbits": RBITS,
                        "seed": 2024, "sample": sample, "stall_codes": 3000 if sample is None else 300})


@pytest.mark.parametrize("src,dst,bits", [(FP16, FP16_169, "16 bits from 16"), (E5M2, E4M3, "8 bits from 8"),
                                          (E5M2, FP16, "16 bits from 8")], ids=["same16", "same8", "wider"])
def test_dst_narrower(src, dst, bits):
    with pytest.raises(ValueError, match=rf"^dst must be narrower than src, not {bits}$"):
        FpConvert(src=src, dst=dst)


def test_dst_needs_nan():
    with pytest.raises(ValueError, match=r"^dst must have a NaN when src has one, not specials='none'$"):
        FpConvert(src=FP16, dst=FloatFormat(5, 2, specials="none"))


def test_dst_without_nan_from_src_without_nan():
    FpConvert(src=FloatFormat(5, 10, specials="none"), dst=FloatFormat(4, 3, specials="none"))


@pytest.mark.parametrize("rbits", [0, 17, 2.0, None])
def test_bad_rbits(rbits):
    with pytest.raises(ValueError, match=rf"^rbits must be an integer from 1 to 16, not {rbits!r}$"):
        FpConvert(src=FP16, dst=E5M2, rbits=rbits)


@pytest.mark.parametrize("kwargs,label", [({"src": "FP16", "dst": E5M2}, "src"),
                                          ({"src": BF16, "dst": None}, "dst")])
def test_not_a_format(kwargs, label):
    with pytest.raises(TypeError, match=rf"^{label} must be a FloatFormat, not {kwargs[label]!r}$"):
        FpConvert(**kwargs)


def check_pysim(src: FloatFormat, dst: FloatFormat, rbits: int) -> None:
    """Every ``src`` code through ``FpConvert`` in Amaranth's simulator, in both rounding modes and
    under both overflow policies, equals golden ``convert`` (seeded random bits)."""
    codes = np.arange(1 << src.width)
    rand = np.random.default_rng(src.width * 100 + dst.width).integers(0, 1 << rbits, codes.size)
    dut = FpConvert(src=src, dst=dst, rbits=rbits)
    modes = [(rounding, overflow) for rounding in ("nearest", "stochastic")
             for overflow in ("saturate", "inf")]
    got = {}

    async def testbench(ctx):
        ctx.set(dut.o.ready, 1)
        ctx.set(dut.i.valid, 1)
        for rounding, overflow in modes:
            ctx.set(dut.stochastic, rounding == "stochastic")
            ctx.set(dut.saturate, overflow == "saturate")
            out = []
            for code, r in zip(codes.tolist(), rand.tolist()):
                ctx.set(dut.i.p, {"code": code, "rand": r})
                await ctx.tick()
                out.append(ctx.get(dut.o.p))
            got[rounding, overflow] = np.array(out)

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(testbench)
    sim.run()
    for rounding, overflow in modes:
        kwargs = {"rand": rand, "rbits": rbits} if rounding == "stochastic" else {}
        want = convert(codes, src, dst, rounding, overflow=overflow, **kwargs).astype(np.int64)
        bad = np.flatnonzero(got[rounding, overflow] != want)
        assert bad.size == 0, (f"{rounding}/{overflow}: {bad.size} mismatches; first {codes[bad[0]]:#x} "
                               f"(rand {rand[bad[0]]:#x}): {got[rounding, overflow][bad[0]]:#x} != "
                               f"{want[bad[0]]:#x}")


# Small formats, every code, for the options the FP16 -> FP8 pairs do not exercise: sources and
# results without subnormals, 'fn' and 'none' specials on either side, one random bit and a source
# with fewer fraction bits than the rounder needs below the result's (the converter pads zeros), down
# to fewer than the result has, and source subnormals that are normal numbers of the result (the
# FP16 -> FP8 pairs round every source subnormal to zero or the smallest subnormal).
@pytest.mark.parametrize("src,dst,rbits", [
    (FloatFormat(4, 5), FloatFormat(3, 2), 3),
    (FloatFormat(4, 5, subnormals=False), FloatFormat(3, 2, subnormals=False), 2),
    (FloatFormat(4, 5, specials="fn"), FloatFormat(3, 3, specials="fn"), 1),
    (FloatFormat(4, 5, specials="none"), FloatFormat(3, 2, specials="none"), 4),
    (FloatFormat(4, 5, specials="none"), FloatFormat(4, 3, specials="fn", bias=4), 5),
    (FloatFormat(3, 6), FloatFormat(4, 2, bias=3), 6),
    (FloatFormat(6, 3), FloatFormat(2, 5), 4),
    (FloatFormat(4, 5), E5M2, 3),
], ids=["ieee", "no_subnormals", "fn", "none", "none_to_fn", "wider_exponent", "more_fraction",
        "subnormal_to_normal"])
def test_small_formats(src, dst, rbits):
    check_pysim(src, dst, rbits)
