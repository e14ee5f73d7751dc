# amaranth: UnusedElaboratable=no
"""FP multiplier: RTL against golden ``mul`` under cocotb, mixed and tight formats in Amaranth's
simulator, and the exactness rules of its parameters.

The first line silences Amaranth's warning about components whose constructor raised, as Amaranth's
own tests do.
"""

import os

import numpy as np
import pytest
from amaranth.sim import Simulator

from fp8train.formats import BF16, E4M3, E5M2, FP16, FP16_169, FloatFormat
from fp8train.hw.arith.mul import FpMul
from fp8train.sim.benches import harness
from fp8train.sim.benches.mul_bench import operand_pairs
from fp8train.sim.golden import mul

# Two elaborations (each a simulator build). Icarus is ~300x slower than Verilator: it runs the
# corner pairs plus a random sample instead of all 65,536 pairs.
ICARUS_SAMPLE = 3000


@pytest.mark.rtl
@pytest.mark.parametrize("fmt", [E5M2, E4M3], ids=str)
def test_fp_mul_matches_golden(fmt):
    sample = ICARUS_SAMPLE if os.environ.get("SIM", "verilator") == "icarus" else None
    harness.run(FpMul(fmt_a=fmt, out_fmt=FP16_169), f"fp_mul_{str(fmt).lower()}", "mul_bench",
                params={"fmt_a": str(fmt), "fmt_b": str(fmt), "out_fmt": str(FP16_169),
                        "sample": sample, "seed": fmt.width * 100 + fmt.man_bits, "stall_pairs": 2000})


def check_pysim(fmt_a, fmt_b, out_fmt, a, b):
    """Products of pairs ``(a, b)`` from ``FpMul`` in Amaranth's simulator equal golden ``mul``."""
    dut = FpMul(fmt_a=fmt_a, fmt_b=fmt_b, out_fmt=out_fmt)
    got = []

    async def testbench(ctx):
        ctx.set(dut.o.ready, 1)
        ctx.set(dut.i.valid, 1)
        for x, y in zip(a.tolist(), b.tolist()):
            ctx.set(dut.i.p.a.as_value(), x)
            ctx.set(dut.i.p.b.as_value(), y)
            await ctx.tick()
            got.append(ctx.get(dut.o.p.as_value()))

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(testbench)
    sim.run()
    with np.errstate(invalid="ignore"):                       # inf * 0 is NaN on purpose
        want = mul(a, b, fmt_a, fmt_b, out_fmt).astype(np.int64)
    got = np.array(got)
    bad = np.flatnonzero(got != want)
    assert bad.size == 0, (f"{bad.size} mismatches; first {a[bad[0]]:#x} * {b[bad[0]]:#x}: "
                           f"{got[bad[0]]:#x} != {want[bad[0]]:#x}")


@pytest.mark.parametrize("fmt_a,fmt_b", [(E5M2, E4M3), (E4M3, E5M2)], ids=["e5m2_e4m3", "e4m3_e5m2"])
def test_mixed(fmt_a, fmt_b):
    check_pysim(fmt_a, fmt_b, FP16_169, *operand_pairs(fmt_a, fmt_b, sample=500, seed=7))


# A 6-bit format and the tightest output holding its products: 3 fraction bits, and bias 4 puts the
# smallest subnormal at 2**-6 = min_subnormal**2 while the largest finite value, 15 * 2**6, still
# exceeds 12 * 12. Each rule fails one step off this format.
TINY = FloatFormat(3, 1)
TINY_OUT = FloatFormat(4, 3, bias=4)


@pytest.mark.parametrize("fmt,out_fmt", [(TINY, TINY_OUT),
                                         (FloatFormat(3, 1, specials="fn"), TINY_OUT),
                                         (FloatFormat(3, 1, subnormals=False), TINY_OUT),
                                         (FloatFormat(3, 1, bias=2, specials="none"),
                                          FloatFormat(5, 3, bias=5, specials="fn"))],
                         ids=["ieee", "fn", "no_subnormals", "none_to_fn"])
def test_tight(fmt, out_fmt):
    check_pysim(fmt, fmt, out_fmt, *operand_pairs(fmt, fmt, sample=None, seed=0))


@pytest.mark.parametrize("fmt", [E5M2, E4M3], ids=str)
def test_bf16_holds_fp8_products(fmt):
    FpMul(fmt_a=fmt, out_fmt=BF16)


def test_fraction_bits():
    with pytest.raises(ValueError, match=r"^out_fmt must have at least man_a \+ man_b \+ 1 = 3 fraction "
                                         r"bits to hold every product exactly, not 2$"):
        FpMul(fmt_a=TINY, out_fmt=FloatFormat(4, 2, bias=4))


@pytest.mark.parametrize("fmt_a,fmt_b,out_fmt,largest,out_max", [
    (TINY, TINY, FloatFormat(4, 3, bias=8), "144.0", "120.0"),
    (E5M2, E5M2, FP16, "3288334336.0", "65504.0"),
    (E4M3, E5M2, FP16, "25690112.0", "65504.0"),
], ids=["tiny", "e5m2", "mixed"])
def test_largest(fmt_a, fmt_b, out_fmt, largest, out_max):
    with pytest.raises(ValueError, match=rf"^out_fmt's largest finite value must be at least "
                                         rf"max_a \* max_b = {largest}, not {out_max}$"):
        FpMul(fmt_a=fmt_a, fmt_b=fmt_b, out_fmt=out_fmt)


def test_smallest_subnormal():
    with pytest.raises(ValueError, match=r"^out_fmt's smallest subnormal must be at most min_subnormal_a "
                                         r"\* min_subnormal_b = 0.015625, not 0.03125$"):
        FpMul(fmt_a=TINY, out_fmt=FloatFormat(4, 3, bias=3))


def test_smallest_normal():
    with pytest.raises(ValueError, match=r"^out_fmt without subnormals must have its smallest normal at "
                                         r"most the smallest nonzero product 0.015625, not 0.03125$"):
        FpMul(fmt_a=TINY, out_fmt=FloatFormat(4, 3, bias=6, subnormals=False))


def test_needs_inf():
    with pytest.raises(ValueError, match=r"^out_fmt must have an infinity when an input format has "
                                         r"one, not specials='fn'$"):
        FpMul(fmt_a=E5M2, out_fmt=FloatFormat(6, 9, specials="fn"))


def test_needs_nan():
    with pytest.raises(ValueError, match=r"^out_fmt must have a NaN when an input format has one, "
                                         r"not specials='none'$"):
        FpMul(fmt_a=E4M3, out_fmt=FloatFormat(6, 9, specials="none"))


@pytest.mark.parametrize("kwargs,label", [({"fmt_a": "E5M2", "out_fmt": FP16_169}, "fmt_a"),
                                          ({"fmt_a": E5M2, "fmt_b": 8, "out_fmt": FP16_169}, "fmt_b"),
                                          ({"fmt_a": E5M2, "out_fmt": None}, "out_fmt")])
def test_not_a_format(kwargs, label):
    with pytest.raises(TypeError, match=rf"^{label} must be a FloatFormat, not {kwargs[label]!r}$"):
        FpMul(**kwargs)
