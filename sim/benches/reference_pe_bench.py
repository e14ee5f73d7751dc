"""cocotb bench: ``hw.reference.pe.ReferencePE`` (FP32) against numpy ``float32`` arithmetic and golden.

Round-to-nearest dot products must equal numpy's IEEE ``float32`` multiply and add in the PE's order
(chunk sums, then the total), special values and subnormals included; stochastic ones equal golden
``chunk_dot`` over the numpy products with the draws of the PE's lane (golden ``lfsr.step``).

Parameters (``bench_params()``): ``rbits``, ``seed``, ``dots`` (dot products per case kind).
"""

import cocotb
import numpy as np
from cocotb.triggers import ReadOnly, RisingEdge

from fp8train.formats import FP32
from fp8train.sim.benches.streams import bench_params, reset, start_clock
from fp8train.sim.golden import chunk_dot
from fp8train.sim.golden.lfsr import OUTPUT_FALLBACK_STATE, STATE_MASK, step

# Bit positions of the CONTROL flags (hw.array.pe.CONTROL, LSB first).
VALID, FIRST, LAST, CHUNK_END, STOCHASTIC, SATURATE = (1 << bit for bit in range(6))


def float32_dot(a: np.ndarray, b: np.ndarray, chunk: int) -> np.float32:
    """The PE's order in IEEE float32: products, chunk sums from +0, one total addition per chunk."""
    with np.errstate(all="ignore"):
        products = a * b
        total = np.float32(0)
        for start in range(0, len(products), chunk):
            partial = np.float32(0)
            for p in products[start:start + chunk]:
                partial = np.float32(partial + p)
            total = np.float32(total + partial)
    return total


class ReferencePeTB:
    """Drives beats into one PE cycle by cycle and records every result its drain register shows."""

    def __init__(self, dut):
        self.dut = dut
        params = bench_params()
        self.rbits, self.seed, self.dots = params["rbits"], params["seed"], params["dots"]
        dut.west.value = dut.north.value = dut.ctl_in.value = 0
        dut.drain_in__payload.value = dut.drain_in__valid.value = 0
        start_clock(dut)

    async def run(self, dots: list) -> list[int]:
        """``dots``: ``(a, b, chunk, flags, row_key, col_key)`` per dot product, sent back to back."""
        dut, results = self.dut, []
        monitor = cocotb.start_soon(self._monitor(results))
        for a, b, chunk, flags, row_key, col_key in dots:
            depth = len(a)
            codes_a, codes_b = a.view(np.uint32), b.view(np.uint32)
            for k in range(depth):
                ctl = VALID | flags | (FIRST if k == 0 else 0)
                if k == depth - 1:
                    ctl |= LAST | CHUNK_END
                elif (k + 1) % chunk == 0:
                    ctl |= CHUNK_END
                dut.west.value = int(codes_a[k]) | row_key << FP32.width
                dut.north.value = int(codes_b[k]) | col_key << FP32.width
                dut.ctl_in.value = ctl
                await RisingEdge(dut.clk)
        dut.ctl_in.value = 0
        for _ in range(6):
            await RisingEdge(dut.clk)
        monitor.cancel()
        return results

    async def _monitor(self, results: list) -> None:
        while True:
            await ReadOnly()
            if self.dut.drain_out__valid.value == 1:
                results.append(int(self.dut.drain_out__payload.value))
            await RisingEdge(self.dut.clk)

    def check(self, got: list, want: list, label: str) -> None:
        assert len(got) == len(want), f"{label}: {len(got)} results for {len(want)} dot products"
        got, want = np.array(got, dtype=np.uint64), np.array(want, dtype=np.uint64)
        bad = np.flatnonzero(got != want)
        assert bad.size == 0, (f"{label} (seed {self.seed}): {bad.size} mismatches; first dot product "
                               f"{bad[0]}: {int(got[bad[0]]):#010x} != {int(want[bad[0]]):#010x}")


def _scaled(rng: np.random.Generator, depth: int) -> np.ndarray:
    """Normal values at a random binade from deep subnormal to near overflow."""
    scale = np.float64(2.0) ** rng.integers(-140, 120)
    return (rng.normal(size=depth) * scale).astype(np.float32)


@cocotb.test()
async def test_nearest_matches_numpy_float32(dut):
    """Values of every magnitude (subnormal products, overflow to inf), chunk 1 to K, saturate off."""
    tb = ReferencePeTB(dut)
    await reset(dut)
    rng = np.random.default_rng(tb.seed)
    dut._log.info("seed %d", tb.seed)
    dots, want = [], []
    for _ in range(tb.dots):
        depth = int(rng.choice([1, 2, 3, 7, 16, 33]))
        chunk = int(rng.choice([1, 4, depth]))
        a, b = _scaled(rng, depth), _scaled(rng, depth)
        dots.append((a, b, chunk, 0, 0, 0))
        want.append(int(FP32.code_of(np.float64(float32_dot(a, b, chunk)))))
    tb.check(await tb.run(dots), want, "nearest, scaled normals")


@cocotb.test()
async def test_nearest_random_codes(dut):
    """Uniformly random codes: NaNs, infinities, zeros of both signs and subnormals as operands."""
    tb = ReferencePeTB(dut)
    await reset(dut)
    rng = np.random.default_rng(tb.seed + 1)
    dots, want = [], []
    for _ in range(tb.dots):
        depth = int(rng.integers(1, 4))
        a, b = (rng.integers(0, 1 << 32, depth, dtype=np.uint32).view(np.float32) for _ in range(2))
        dots.append((a, b, depth, 0, 0, 0))
        want.append(int(FP32.code_of(np.float64(float32_dot(a, b, depth)))))
    tb.check(await tb.run(dots), want, "nearest, random codes")


@cocotb.test()
async def test_stochastic_matches_golden(dut):
    """Stochastic chunk and total additions with the lane's draws, saturating overflow."""
    tb = ReferencePeTB(dut)
    await reset(dut)
    rng = np.random.default_rng(tb.seed + 2)
    rbits, dots, want = tb.rbits, [], []
    for _ in range(tb.dots):
        depth = int(rng.choice([1, 5, 16, 40]))
        chunk = int(rng.choice([1, 4, 8, depth]))
        a = rng.normal(1.0, 0.3, depth).astype(np.float32)
        b = (rng.normal(size=depth) * np.float64(2.0) ** rng.integers(-30, 30)).astype(np.float32)
        row_key, col_key = (int(x) for x in rng.integers(0, STATE_MASK + 1, 2))
        state = (row_key ^ col_key) or OUTPUT_FALLBACK_STATE
        draws = []
        for _ in range(depth):
            drawn, state = step(state, 2 * rbits)
            draws.append(drawn)
        draws = np.array(draws, dtype=np.int64)
        products = (a * b).astype(np.float64)
        total = chunk_dot(products, FP32, chunk, "stochastic", rand_chunk=draws & ((1 << rbits) - 1),
                          rand_total=draws >> rbits, rbits=rbits, overflow="saturate")
        dots.append((a, b, chunk, STOCHASTIC | SATURATE, row_key, col_key))
        want.append(int(total))
    tb.check(await tb.run(dots), want, "stochastic")
