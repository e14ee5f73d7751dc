"""cocotb bench: ``hw.arith.mul.FpMul`` against golden ``mul`` (DESIGN.md §7.2).

Parameters (``bench_params()``): ``fmt_a``, ``fmt_b``, ``out_fmt`` (preset names, the elaboration),
``sample`` (``None`` for all pairs of codes, else the number of seeded random pairs added to the
corner pairs of :func:`operand_pairs`), ``seed`` (every random choice), ``stall_pairs`` (pairs per
handshake case).
"""

import cocotb
import numpy as np
from cocotb.triggers import SimTimeoutError, with_timeout
from cocotb.utils import get_sim_time

from fp8train.formats import FloatFormat, by_name
from fp8train.hw.arith.mul import pair_layout
from fp8train.sim.benches.streams import (CLOCK_NS, StreamPort, bench_params, collect, drive, reset,
                                          stalls, start_clock)
from fp8train.sim.golden import mul

__all__ = ["corner_codes", "operand_pairs"]

#: Cycles from a pair's acceptance to its product's (``FpMul``'s one register).
LATENCY = 1

#: A run of n pairs must end within ``n * SLACK + LATENCY + 10`` cycles; the stall patterns idle
#: each side at most a third of the time on average, so only a lost beat (a hang) gets near this.
SLACK = 4


def corner_codes(fmt: FloatFormat) -> np.ndarray:
    """Codes where multipliers go wrong: both signs of the subnormal/zero, smallest normal,
    largest finite and special binades, each with its extreme fractions, and of 1.0."""
    top = (1 << fmt.man_bits) - 1
    exps = [0, 1, fmt.exp_max_field - 1, fmt.exp_max_field]
    mans = [0, 1, top - 1, top]
    one = fmt.pack(0, fmt.bias, 0)
    codes = [fmt.pack(s, e, m) for s in (0, 1) for e in exps for m in mans] + [one, one | (1 << (fmt.width - 1))]
    return np.unique(np.array(codes, dtype=np.int64))


def operand_pairs(fmt_a: FloatFormat, fmt_b: FloatFormat, *, sample: int | None,
                  seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Operand codes ``(a, b)``: every pair when ``sample`` is None, else all pairs of corner codes
    followed by ``sample`` pairs drawn uniformly with ``seed``."""
    if sample is None:
        a, b = np.meshgrid(np.arange(1 << fmt_a.width), np.arange(1 << fmt_b.width), indexing="ij")
        return a.ravel(), b.ravel()
    a, b = np.meshgrid(corner_codes(fmt_a), corner_codes(fmt_b), indexing="ij")
    rng = np.random.default_rng(seed)
    return (np.concatenate([a.ravel(), rng.integers(0, 1 << fmt_a.width, sample)]),
            np.concatenate([b.ravel(), rng.integers(0, 1 << fmt_b.width, sample)]))


class MulTB:
    """Clock, reset and the two streams of one ``FpMul``, with a golden check of a run of pairs."""

    def __init__(self, dut):
        self.dut = dut
        params = bench_params()
        self.fmt_a, self.fmt_b, self.out_fmt = (by_name(params[key]) for key in ("fmt_a", "fmt_b", "out_fmt"))
        self.sample, self.seed, self.stall_pairs = params["sample"], params["seed"], params["stall_pairs"]
        dut._log.info("seed %d", self.seed)
        self.b_offset = pair_layout(self.fmt_a, self.fmt_b)["b"].offset
        self.i, self.o = StreamPort(dut, "i"), StreamPort(dut, "o")
        self.i.valid.value = 0
        self.o.ready.value = 0
        start_clock(dut)

    async def check(self, a: np.ndarray, b: np.ndarray, in_stall=None, out_stall=None) -> int:
        """Stream the pairs through, compare every product with golden; returns the cycles taken."""
        beats = (a | (b << self.b_offset)).tolist()
        start = get_sim_time("ns")
        cocotb.start_soon(drive(self.dut.clk, self.i, beats, stalls(in_stall, self.seed + 1)))
        limit = len(beats) * SLACK + LATENCY + 10
        try:
            got = np.array(await with_timeout(
                collect(self.dut.clk, self.o, len(beats), stalls(out_stall, self.seed + 2)),
                limit * CLOCK_NS, "ns"))
        except SimTimeoutError:
            raise AssertionError(f"{len(beats)} pairs sent, but not all products came out within "
                                 f"{limit} cycles: beats were lost") from None
        with np.errstate(invalid="ignore"):                   # inf * 0 is NaN on purpose
            want = mul(a, b, self.fmt_a, self.fmt_b, self.out_fmt).astype(np.int64)
        bad = np.flatnonzero(got != want)
        assert bad.size == 0, (
            f"{bad.size} of {len(beats)} products wrong; first at beat {bad[0]}: "
            f"{self.fmt_a} {a[bad[0]]:#04x} * {self.fmt_b} {b[bad[0]]:#04x} gave {self.out_fmt} "
            f"{got[bad[0]]:#06x}, golden {want[bad[0]]:#06x}")
        return round((get_sim_time("ns") - start) / CLOCK_NS)


@cocotb.test()
async def test_products(dut):
    """Every pair (or corners plus a random sample), one per cycle: latency 1, throughput 1."""
    tb = MulTB(dut)
    await reset(dut)
    a, b = operand_pairs(tb.fmt_a, tb.fmt_b, sample=tb.sample, seed=tb.seed)
    cycles = await tb.check(a, b)
    assert cycles == len(a) + LATENCY, f"{len(a)} pairs took {cycles} cycles, not {len(a) + LATENCY}"


@cocotb.test()
@cocotb.parametrize(in_stall=[None, "every_third", "random"], out_stall=[None, "every_third", "random"])
async def test_handshake(dut, in_stall, out_stall):
    """Random pairs under idle input and backpressure: nothing lost, duplicated or reordered."""
    tb = MulTB(dut)
    await reset(dut)
    rng = np.random.default_rng(tb.seed)
    a = rng.integers(0, 1 << tb.fmt_a.width, tb.stall_pairs)
    b = rng.integers(0, 1 << tb.fmt_b.width, tb.stall_pairs)
    await tb.check(a, b, in_stall, out_stall)
