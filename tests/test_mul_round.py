# amaranth: UnusedElaboratable=no
"""Rounded FP multiplier: RTL against the golden rounding of the exact product under cocotb
(``FP16_169``, the update unit's format, and IEEE ``FP16``, also checked against numpy float16), every
pair of small formats with each special-value and subnormal option in Amaranth's simulator.

The first line silences Amaranth's warning about components whose constructor raised.
"""

import os

import numpy as np
import pytest
from amaranth.sim import Simulator

from fp8train.formats import FP16, FP16_169, FloatFormat
from fp8train.hw.arith.mul_round import FpMulRound
from fp8train.sim.benches import harness
from fp8train.sim.benches.mul_round_bench import golden_products

# Verilator streams 200,000 random pairs (10**7 under FP8TRAIN_LONG=1) and 500 per directed family;
# Icarus is ~300x slower and runs 2,000 random pairs and 60 per family.
SIZES = {"verilator": {"random": 200_000, "long_random": 10_000_000, "corners": 500, "stall_cases": 3000},
         "icarus": {"random": 2_000, "long_random": 20_000, "corners": 60, "stall_cases": 300}}


@pytest.mark.rtl
@pytest.mark.parametrize("fmt", [FP16_169, FP16], ids=str)
def test_fp_mul_round_matches_golden(fmt):
    sizes = SIZES[os.environ.get("SIM", "verilator")]
    harness.run(FpMulRound(fmt), f"fp_mul_round_{str(fmt).lower()}", "mul_round_bench",
                params={"fmt": str(fmt), "seed": 2000 + fmt.man_bits, **sizes})


def check_pysim(fmt: FloatFormat) -> None:
    """Every pair of ``fmt`` codes under both overflow policies equals the golden rounding."""
    a, b = (x.ravel() for x in np.meshgrid(np.arange(1 << fmt.width), np.arange(1 << fmt.width),
                                           indexing="ij"))
    dut = FpMulRound(fmt)
    got = {}

    async def testbench(ctx):
        ctx.set(dut.o.ready, 1)
        ctx.set(dut.i.valid, 1)
        for overflow, saturate in (("saturate", 1), ("inf", 0)):
            ctx.set(dut.saturate, saturate)
            out = []
            for x, y in zip(a.tolist(), b.tolist()):
                ctx.set(dut.i.p.a, x)
                ctx.set(dut.i.p.b, y)
                await ctx.tick()
                out.append(ctx.get(dut.o.p))
            got[overflow] = np.array(out)

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(testbench)
    sim.run()
    for overflow, products in got.items():
        want = golden_products(a, b, fmt, overflow)
        bad = np.flatnonzero(products != want)
        assert bad.size == 0, (f"{fmt} {overflow}: {bad.size} mismatches; first {a[bad[0]]:#x} * "
                               f"{b[bad[0]]:#x}: {products[bad[0]]:#x} != {want[bad[0]]:#x}")


# 6-bit formats, every pair: the special-value encodings, flushed subnormals, a bias that puts 1.0
# near the top (products overflow often) and one fraction bit (the shortest significand product).
@pytest.mark.parametrize("fmt", [FloatFormat(3, 2), FloatFormat(3, 2, specials="fn"),
                                 FloatFormat(3, 2, specials="none"), FloatFormat(3, 2, subnormals=False),
                                 FloatFormat(3, 2, bias=5), FloatFormat(4, 1)],
                         ids=["ieee", "fn", "none", "no_subnormals", "high_bias", "one_fraction_bit"])
def test_small_formats(fmt):
    check_pysim(fmt)


def test_not_a_format():
    with pytest.raises(TypeError, match=r"^fmt must be a FloatFormat, not 'FP16_169'$"):
        FpMulRound("FP16_169")
