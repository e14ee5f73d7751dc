"""cocotb bench: ``hw.arith.convert.FpConvert`` against golden ``convert`` (DESIGN.md §7.2).

The design under test (``tests/test_convert.py``) holds one ``FpConvert`` per ``(src, dst)`` pair, all
fed the same source code and the same random bits from an RTL ``LfsrBank(lanes=1)`` lane that
advances once per accepted beat; their results are concatenated on ``o``, first pair lowest. The
bench reproduces the random stream with the golden ``LfsrBank`` seeded alike.

Parameters (``bench_params()``): ``pairs`` (``[[src, dst], ...]`` preset names), ``rbits``, ``seed``
(LFSR seeds and every random choice), ``sample`` (``None`` for all source codes, else the number of
seeded random codes added to :func:`structured_codes`), ``stall_codes`` (codes per handshake case).
"""

import cocotb
import numpy as np
from cocotb.triggers import RisingEdge

from fp8train.formats import FloatFormat, by_name
from fp8train.sim.benches.lockstep import stream_lockstep, stream_stalled
from fp8train.sim.benches.streams import StreamPort, bench_params, reset, start_clock
from fp8train.sim.golden import convert
from fp8train.sim.golden.lfsr import LfsrBank

__all__ = ["structured_codes"]

ROUNDINGS = {"nearest": 0, "stochastic": 1}
OVERFLOWS = {"saturate": 1, "inf": 0}


def structured_codes(src: FloatFormat, dsts: list[FloatFormat]) -> np.ndarray:
    """Source codes in every binade, both signs, with fractions at each ``dst``'s ties (and one
    source ulp either side), plus 0, 1, and the largest fractions: the rounding and range corners."""
    top = (1 << src.man_bits) - 1
    fractions = {0, 1, top - 1, top}
    for dst in dsts:
        drop = src.man_bits - dst.man_bits
        if drop > 0:
            for q in range(1 << dst.man_bits):
                tie = (q << drop) | (1 << (drop - 1))
                fractions |= {tie - 1, tie, tie + 1}
    s, e, f = np.meshgrid([0, 1], np.arange(src.exp_max_field + 1), sorted(fractions), indexing="ij")
    return src.pack(s.ravel(), e.ravel(), f.ravel()).astype(np.int64)


class ConvertTB:
    """Clock, reset, LFSR seeding and the streams of the converters, with golden checks."""

    def __init__(self, dut):
        self.dut = dut
        params = bench_params()
        self.pairs = [(by_name(s), by_name(d)) for s, d in params["pairs"]]
        self.rbits, self.seed, self.params = params["rbits"], params["seed"], params
        dut._log.info("seed %d", self.seed)
        self.src = self.pairs[0][0]
        self.i, self.o = StreamPort(dut, "i"), StreamPort(dut, "o")
        self.i.valid.value = 0
        self.o.ready.value = 0
        dut.stochastic.value = 0
        dut.saturate.value = 1
        dut.load.value = 0
        dut.seed.value = 0
        start_clock(dut)

    def codes(self, rng: np.random.Generator) -> np.ndarray:
        if self.params["sample"] is None:
            return np.arange(1 << self.src.width, dtype=np.int64)
        return np.concatenate([structured_codes(self.src, [dst for _, dst in self.pairs]),
                               rng.integers(0, 1 << self.src.width, self.params["sample"])])

    async def load_seed(self, seed: int) -> LfsrBank:
        """Seed the RTL lane; returns the golden bank that draws the same bits."""
        self.dut.seed.value = seed
        self.dut.load.value = 1
        await RisingEdge(self.dut.clk)
        self.dut.load.value = 0
        return LfsrBank(1, seed, self.rbits)

    def compare(self, words, codes, rand, rounding, overflow, label) -> None:
        """Each pair's field of the output words equals golden ``convert``; fail on the first wrong one."""
        offset = 0
        for src, dst in self.pairs:
            got = (words >> offset) & ((1 << dst.width) - 1)
            offset += dst.width
            kwargs = {"rand": rand, "rbits": self.rbits} if rounding == "stochastic" else {}
            want = convert(codes, src, dst, rounding, overflow=overflow, **kwargs).astype(np.int64)
            bad = np.flatnonzero(got != want)
            if bad.size:
                k = bad[0]
                raise AssertionError(
                    f"{label}: {src} -> {dst} {rounding}/{overflow}: {bad.size} of {len(codes)} codes "
                    f"wrong; first at beat {k}: {codes[k]:#06x} (rand {rand[k]:#x}) gave "
                    f"{got[k]:#04x}, golden {want[k]:#04x} (seed {self.seed})")


@cocotb.test()
@cocotb.parametrize(rounding=list(ROUNDINGS))
async def test_codes(dut, rounding):
    """Every source code (or the structured codes and a sample) under both overflow policies, one
    per clock; stochastic rounding takes the RTL lane's bits, one draw per beat."""
    tb = ConvertTB(dut)
    await reset(dut)
    rng = np.random.default_rng([tb.seed, ROUNDINGS[rounding]])
    codes = tb.codes(rng)
    seed = int(rng.integers(0, 1 << 32))
    dut._log.info("LFSR seed %#x", seed)
    golden = await tb.load_seed(seed)
    dut.stochastic.value = ROUNDINGS[rounding]
    for overflow in OVERFLOWS:
        dut.saturate.value = OVERFLOWS[overflow]
        words = await stream_lockstep(dut.clk, tb.i, tb.o, codes.tolist())
        rand = np.array([golden.draw()[0] for _ in codes], dtype=np.int64)
        tb.compare(words, codes, rand, rounding, overflow, "all codes" if tb.params["sample"] is None
                   else "structured and random codes")


@cocotb.test()
@cocotb.parametrize((("in_stall", "out_stall"), [("random", None), (None, "random"), ("random", "random")]))
async def test_handshake(dut, in_stall, out_stall):
    """Stochastic rounding under idle input and backpressure: nothing lost, duplicated or reordered,
    and the lane advances exactly once per accepted beat."""
    tb = ConvertTB(dut)
    await reset(dut)
    rng = np.random.default_rng([tb.seed, 2])
    codes = rng.integers(0, 1 << tb.src.width, tb.params["stall_codes"])
    golden = await tb.load_seed(int(rng.integers(0, 1 << 32)))
    dut.stochastic.value = 1
    dut.saturate.value = 1
    words = await stream_stalled(dut.clk, tb.i, tb.o, codes.tolist(), in_stall, out_stall, tb.seed)
    rand = np.array([golden.draw()[0] for _ in codes], dtype=np.int64)
    tb.compare(words, codes, rand, "stochastic", "saturate", f"stalls {in_stall}/{out_stall}")
