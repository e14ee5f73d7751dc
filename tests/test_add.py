"""FP adder: RTL against golden ``add`` under cocotb (random cases, directed corners, stalls).

Two elaborations (each a simulator build): ``FP16_169``, the accumulator format, and IEEE ``FP16``,
for which the bench also compares every nearest-even sum (overflow to inf) with numpy's float16.
"""

import os

import pytest

from fp8train.formats import FP16, FP16_169
from fp8train.hw.arith.add import FpAdd
from fp8train.sim.benches import harness

RBITS = 8
# Verilator streams 200,000 random cases per rounding mode (10**7 under FP8TRAIN_LONG=1) and 500 per
# directed family; Icarus is ~300x slower and runs 2,000 random cases per mode and the same corners.
SIZES = {"verilator": {"random": 200_000, "long_random": 10_000_000, "corners": 500, "stall_cases": 3000},
         "icarus": {"random": 2_000, "long_random": 20_000, "corners": 500, "stall_cases": 300}}


@pytest.mark.rtl
@pytest.mark.parametrize("fmt", [FP16_169, FP16], ids=str)
def test_fp_add_matches_golden(fmt):
    sizes = SIZES[os.environ.get("SIM", "verilator")]
    harness.run(FpAdd(fmt, rbits=RBITS), f"fp_add_{str(fmt).lower()}", "add_bench",
                params={"fmt": str(fmt), "rbits": RBITS, "seed": 1000 + fmt.man_bits, **sizes})
