"""cocotb bench: ``hw.arith.output.OutputUnit`` against golden ``add`` + ``output_stage``.

Parameters (``bench_params()``): ``seed``, ``cases`` (random results per configuration), ``configs``
(a list of ``[out_format, stochastic, relu, has_c, scale, saturate]``).
"""

import cocotb
import numpy as np

from fp8train.formats import FP16_169
from fp8train.hw.arith.output import OutputUnit
from fp8train.protocol import OutFormat
from fp8train.sim.benches.add_bench import random_cases, special_codes
from fp8train.sim.benches.lockstep import stream_lockstep, stream_stalled
from fp8train.sim.benches.streams import StreamPort, bench_params, long_run, reset, start_clock
from fp8train.sim.golden import add
from fp8train.sim.golden.device import OUT_FORMATS, OUTPUT_SEED_SALT, output_stage
from fp8train.sim.golden.lfsr import LfsrBank

RBITS = 8


class OutputTB:
    def __init__(self, dut):
        self.dut = dut
        params = bench_params()
        self.seed, self.cases = params["seed"], params["cases"] * (20 if long_run() else 1)
        self.configs = params["configs"]
        self.i, self.o = StreamPort(dut, "i"), StreamPort(dut, "o")
        dut.i__valid.value = 0
        dut.o__ready.value = 0
        start_clock(dut)

    def results(self, rng):
        """FP16_169 totals and C values (random pairs plus every pair of special codes), with the
        row and column of each output in a small matrix, so the stochastic lanes are real ones."""
        total, c = random_cases(FP16_169, self.cases, rng)
        specials = special_codes(FP16_169)
        total = np.concatenate([total, np.repeat(specials, specials.size)])
        c = np.concatenate([c, np.tile(specials, specials.size)])
        return total, c

    def configure(self, out_format, stochastic, relu, has_c, scale, saturate, seed):
        dut = self.dut
        dut.out_format.value, dut.stochastic.value, dut.relu.value = out_format, stochastic, relu
        dut.has_c.value, dut.scale.value, dut.saturate.value, dut.seed.value = has_c, scale, saturate, seed

    def golden(self, total, c, cols, out_format, stochastic, relu, has_c, scale, saturate, seed):
        overflow = "saturate" if saturate else "inf"
        value = add(total.astype(np.uint16), c.astype(np.uint16), FP16_169, overflow=overflow) if has_c else total
        rows = -(-total.size // cols)
        rand = None
        if stochastic:
            rand = LfsrBank.for_outputs(seed ^ OUTPUT_SEED_SALT, rows, cols, RBITS).draw().ravel()[:total.size]
        return output_stage(value.astype(np.uint16), OUT_FORMATS[out_format], relu=bool(relu), scale=scale,
                            rand=rand, rbits=RBITS if stochastic else None, overflow=overflow)

    def beats(self, total, c, cols):
        from fp8train.sim.golden.lfsr import col_key, row_key
        index = np.arange(total.size)
        return [int(t) | int(cc) << 16 | row_key(int(i) // cols) << 32 | col_key(int(i) % cols) << 64
                for t, cc, i in zip(total, c, index)]


@cocotb.test()
async def test_configurations_match_golden(dut):
    tb = OutputTB(dut)
    await reset(dut)
    rng = np.random.default_rng(tb.seed)
    dut._log.info("seed %d", tb.seed)
    cols = 37
    for config in tb.configs:
        total, c = tb.results(rng)
        seed = int(rng.integers(0, 1 << 32))
        tb.configure(*config, seed)
        got = await stream_lockstep(dut.clk, tb.i, tb.o, tb.beats(total, c, cols), latency=OutputUnit.LATENCY)
        want = tb.golden(total, c, cols, *config, seed).astype(np.int64)
        bad = np.flatnonzero(got != want)
        assert bad.size == 0, (
            f"config {config} (out_format, stochastic, relu, has_c, scale, saturate), seed {tb.seed}: "
            f"{bad.size} mismatches; first: total {total[bad[0]]:#06x} c {c[bad[0]]:#06x} at "
            f"({bad[0] // cols}, {bad[0] % cols}) gave {got[bad[0]]:#06x}, golden {want[bad[0]]:#06x}")


@cocotb.test()
async def test_backpressure_loses_nothing(dut):
    tb = OutputTB(dut)
    await reset(dut)
    rng = np.random.default_rng(tb.seed + 1)
    total, c = random_cases(FP16_169, 300, rng)
    config = (OutFormat.E5M2, 1, 1, 1, -2, 1)
    tb.configure(*config, 99)
    got = await stream_stalled(dut.clk, tb.i, tb.o, tb.beats(total, c, 5), "random", "random", tb.seed)
    np.testing.assert_array_equal(got, tb.golden(total, c, 5, *config, 99).astype(np.int64))
