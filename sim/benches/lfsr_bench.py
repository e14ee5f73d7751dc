"""cocotb bench: ``hw.arith.lfsr.LfsrBank`` against the golden ``sim.golden.lfsr.LfsrBank``.

Parameters (``bench_params()``): ``lanes``, ``rbits`` (the elaboration), ``seed`` (the seeds of the
random choices), ``beats`` (accepted draws per case).
"""

import random

import cocotb
import numpy as np
from cocotb.triggers import RisingEdge

from fp8train.sim.benches.streams import (StreamPort, bench_params, collect, long_run, reset,
                                          stalls, start_clock)
from fp8train.sim.golden.lfsr import LfsrBank, lane_key


class LfsrTB:
    """Clock, reset and the draw stream of one ``LfsrBank`` instance."""

    def __init__(self, dut):
        self.dut = dut
        params = bench_params()
        self.lanes, self.rbits = params["lanes"], params["rbits"]
        self.rng = random.Random(params["seed"])
        self.beats = params["beats"] * (10 if long_run() else 1)
        self.o = StreamPort(dut, "o")
        dut.load.value = 0
        dut.seed.value = 0
        dut.o__ready.value = 0
        start_clock(dut)

    async def load(self, seed: int, with_ready: bool) -> None:
        """Load ``seed``; with ``with_ready`` the consumer also takes a draw, which ``load`` overrides."""
        self.dut.seed.value = seed
        self.dut.load.value = 1
        self.dut.o__ready.value = int(with_ready)
        await RisingEdge(self.dut.clk)
        self.dut.load.value = 0
        self.dut.o__ready.value = 0

    async def check_draws(self, seed: int, stall: str) -> None:
        """Accepted beats equal successive golden draws for a bank seeded with ``seed``."""
        words = await collect(self.dut.clk, self.o, self.beats,
                              stalls(stall, self.rng.getrandbits(32)))
        mask = (1 << self.rbits) - 1
        got = np.array([[(w >> (self.rbits * i)) & mask for i in range(self.lanes)] for w in words],
                       dtype=np.uint32)
        golden = LfsrBank(self.lanes, seed, self.rbits)
        want = np.array([golden.draw() for _ in words])
        bad = np.argwhere(got != want)
        assert bad.size == 0, (
            f"seed {seed:#x}: {len(bad)} mismatches; first at beat {bad[0][0]} lane {bad[0][1]}: "
            f"{got[tuple(bad[0])]:#x} != {want[tuple(bad[0])]:#x}")


@cocotb.test()
async def test_reset_state_is_seed_zero(dut):
    tb = LfsrTB(dut)
    await reset(dut)
    await tb.check_draws(0, "random")


@cocotb.test()
@cocotb.parametrize(stall=[None, "every_third", "random"])
async def test_seed_load(dut, stall):
    tb = LfsrTB(dut)
    await reset(dut)
    seed = tb.rng.getrandbits(32)
    dut._log.info("seed %#x", seed)
    await collect(dut.clk, tb.o, 3)  # move away from the reset state first
    await tb.load(seed, with_ready=True)
    await tb.check_draws(seed, stall)


@cocotb.test()
async def test_seed_corners(dut):
    """All-zero and all-one seeds, and a seed equal to lane 0's key (lane 0 would lock up at 0)."""
    tb = LfsrTB(dut)
    await reset(dut)
    for seed in (0, 0xFFFF_FFFF, lane_key(0), lane_key(0) ^ 0x8000_0000):
        await tb.load(seed, with_ready=False)
        await tb.check_draws(seed, "random")
