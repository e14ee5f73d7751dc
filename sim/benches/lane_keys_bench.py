"""cocotb bench: ``hw.arith.lane_keys.LaneKeyHasher`` against golden ``row_key``/``col_key`` for every
16-bit index of both kinds (a reduced set under Icarus). Parameters: ``count`` (indices per kind)."""

import cocotb
import numpy as np

from fp8train.sim.benches.lockstep import stream_lockstep, stream_stalled
from fp8train.sim.benches.streams import StreamPort, bench_params, reset, start_clock
from fp8train.sim.golden.lfsr import col_key, row_key


async def setup(dut):
    start_clock(dut)
    dut.i__valid.value = 0
    dut.o__ready.value = 0
    await reset(dut)
    return StreamPort(dut, "i"), StreamPort(dut, "o")


def golden(beats):
    return np.array([(col_key if b >> 16 else row_key)(b & 0xFFFF) for b in beats], dtype=np.int64)


@cocotb.test()
async def test_every_index_matches_golden(dut):
    i, o = await setup(dut)
    count = bench_params()["count"]
    indices = np.unique(np.concatenate([np.linspace(0, 0xFFFF, count, dtype=np.int64), [0, 1, 0xFFFF]]))
    beats = [int(x) | kind << 16 for kind in (0, 1) for x in indices]
    got = await stream_lockstep(dut.clk, i, o, beats, latency=3)
    want = golden(beats)
    bad = np.flatnonzero(got != want)
    assert bad.size == 0, (f"{bad.size} mismatches; first: index {beats[bad[0]] & 0xFFFF} "
                           f"is_col {beats[bad[0]] >> 16}: {got[bad[0]]:#010x} != {want[bad[0]]:#010x}")


@cocotb.test()
async def test_backpressure_loses_nothing(dut):
    i, o = await setup(dut)
    beats = [x | (x & 1) << 16 for x in range(0, 400, 3)]
    got = await stream_stalled(dut.clk, i, o, beats, "random", "random", seed=5)
    np.testing.assert_array_equal(got, golden(beats))
