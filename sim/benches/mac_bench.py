"""cocotb bench: ``hw.arith.mac.ChunkMac`` against golden ``chunk_dot``, dot product by dot product.

Parameters (``bench_params()``): ``rbits`` (the elaboration), ``seed``, ``cases`` (a list of
``[chunk, K]`` dot products run back to back in each rounding mode).
"""

import cocotb
import numpy as np

from fp8train.formats import E5M2, FP16_169
from fp8train.sim.benches.streams import (StreamPort, bench_params, collect, drive, long_run, reset,
                                          stalls, start_clock)
from fp8train.sim.golden import chunk_dot, mul

ROUNDINGS = {"nearest": 0, "stochastic": 1}


class MacTB:
    """Clock, reset, operand generation and the golden result of one ``ChunkMac``."""

    def __init__(self, dut):
        self.dut = dut
        params = bench_params()
        self.rbits = params["rbits"]
        self.cases = [tuple(case) for case in params["cases"]]
        if long_run():
            self.cases += [(chunk, 4096) for chunk in (1, 4, 64, 0)]
        self.seed = params["seed"]
        self.i, self.o = StreamPort(dut, "i"), StreamPort(dut, "o")
        dut.i__valid.value = 0
        dut.o__ready.value = 0
        dut.saturate.value = 1
        start_clock(dut)

    def operands(self, rng: np.random.Generator, depth: int, kind: str) -> tuple[np.ndarray, np.ndarray]:
        """Finite E5M2 codes: ``random`` codes over the whole range, or ``ones``: values near 1 whose
        running sum swamps a plain FP16 accumulator, as in Wang et al. 2018."""
        if kind == "ones":
            return (E5M2.encode(rng.uniform(0.5, 1.5, depth)), E5M2.encode(rng.uniform(0.5, 1.5, depth)))
        a, b = rng.integers(0, 256, (2, depth), dtype=np.uint8)
        finite = np.uint8(0x3C)                                # 1.0 in place of inf/NaN codes
        return (np.where((a & 0x7C) == 0x7C, finite, a), np.where((b & 0x7C) == 0x7C, finite, b))

    async def run_dots(self, rounding: str, stall: str | None) -> None:
        """Every case as one dot product, back to back, each total equal to golden."""
        rng = np.random.default_rng(self.seed)
        self.dut._log.info("seed %d", self.seed)
        mode = ROUNDINGS[rounding]
        self.dut.stochastic.value = mode
        rbits = self.rbits
        for index, (chunk, depth) in enumerate(self.cases):
            a, b = self.operands(rng, depth, "ones" if index % 2 else "random")
            rand = rng.integers(0, 1 << (2 * rbits), depth)
            low, high = rand & ((1 << rbits) - 1), rand >> rbits
            want = chunk_dot(mul(a, b, E5M2), FP16_169, chunk if chunk else depth, rounding,
                             **({"rand_chunk": low, "rand_total": high, "rbits": rbits} if mode else {}))
            beats = [int(x) | int(y) << 8 | int(r) << 16 | int(k == depth - 1) << (16 + 2 * rbits)
                     for k, (x, y, r) in enumerate(zip(a, b, rand))]
            self.dut.chunk.value = chunk
            sender = cocotb.start_soon(drive(self.dut.clk, self.i, beats,
                                             stalls(stall, self.seed + index)))
            (got,) = await collect(self.dut.clk, self.o, 1, stalls(stall, self.seed - index))
            await sender
            assert got == int(want), (
                f"{rounding} dot product {index} (chunk {chunk}, K {depth}, seed {self.seed}): "
                f"total {got:#06x} != golden {int(want):#06x}")


@cocotb.test()
@cocotb.parametrize(rounding=list(ROUNDINGS), stall=[None, "random"])
async def test_dot_products_match_golden(dut, rounding, stall):
    tb = MacTB(dut)
    await reset(dut)
    await tb.run_dots(rounding, stall)


@cocotb.test()
async def test_overflow_saturates_or_gives_inf(dut):
    """Products near E5M2's max overflow FP16_169's total: clamped when ``saturate``, else inf."""
    tb = MacTB(dut)
    await reset(dut)
    big = int(E5M2.encode(57344.0))
    for saturate in (1, 0):
        dut.saturate.value = saturate
        dut.chunk.value = 4
        beats = [big | big << 8 | int(k == 3) << (16 + 2 * tb.rbits) for k in range(4)]
        sender = cocotb.start_soon(drive(dut.clk, tb.i, beats))
        (got,) = await collect(dut.clk, tb.o, 1)
        await sender
        want = FP16_169.max_code if saturate else FP16_169.inf_code
        assert got == want, f"saturate={saturate}: {got:#06x} != {want:#06x}"
