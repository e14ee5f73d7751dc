"""cocotb bench: ``hw.arith.lane_keys.LaneKeyHasher`` against golden ``row_key``/``col_key`` for every
16-bit index of both kinds (a reduced set under Icarus). Parameters: ``count`` (indices per kind),
``serial`` (the hasher's: then every key takes ``SERIAL_CYCLES`` from the handshake to ``o.valid``)."""

import cocotb
import numpy as np
from cocotb.triggers import RisingEdge

from fp8train.sim.benches.lockstep import stream_lockstep, stream_stalled
from fp8train.sim.benches.streams import StreamPort, bench_params, reset, start_clock
from fp8train.hw.arith.lane_keys import LaneKeyHasher
from fp8train.sim.golden.lfsr import col_key, row_key


async def setup(dut):
    start_clock(dut)
    dut.i__valid.value = 0
    dut.o__ready.value = 0
    await reset(dut)
    return StreamPort(dut, "i"), StreamPort(dut, "o")


def golden(beats):
    return np.array([(col_key if b >> 16 else row_key)(b & 0xFFFF) for b in beats], dtype=np.int64)


async def serial_keys(dut, i, o, beats):
    """The serial hasher's keys of ``beats``, checking that each arrives ``SERIAL_CYCLES`` after its handshake."""
    got = []
    o.ready.value = 1
    for beat in beats:
        i.payload.value, i.valid.value = beat, 1
        await RisingEdge(dut.clk)
        while not i.ready.value:
            await RisingEdge(dut.clk)
        i.valid.value = 0
        for _ in range(LaneKeyHasher.SERIAL_CYCLES):
            assert not o.valid.value, f"key of {beat:#x} early"
            await RisingEdge(dut.clk)
        assert o.valid.value, f"no key of {beat:#x} after {LaneKeyHasher.SERIAL_CYCLES} cycles"
        got.append(int(o.payload.value))
    return np.array(got, dtype=np.int64)


@cocotb.test()
async def test_every_index_matches_golden(dut):
    i, o = await setup(dut)
    count = bench_params()["count"]
    indices = np.unique(np.concatenate([np.linspace(0, 0xFFFF, count, dtype=np.int64), [0, 1, 0xFFFF]]))
    beats = [int(x) | kind << 16 for kind in (0, 1) for x in indices]
    if bench_params()["serial"]:
        got = await serial_keys(dut, i, o, beats)
    else:
        got = await stream_lockstep(dut.clk, i, o, beats, latency=LaneKeyHasher.LATENCY)
    want = golden(beats)
    bad = np.flatnonzero(got != want)
    assert bad.size == 0, (f"{bad.size} mismatches; first: index {beats[bad[0]] & 0xFFFF} "
                           f"is_col {beats[bad[0]] >> 16}: {got[bad[0]]:#010x} != {want[bad[0]]:#010x}")


@cocotb.test()
async def test_backpressure_loses_nothing(dut):
    i, o = await setup(dut)
    beats = [x | (x & 1) << 16 for x in range(0, 400, 3)]
    pace = LaneKeyHasher.SERIAL_CYCLES + 1 if bench_params()["serial"] else 1
    got = await stream_stalled(dut.clk, i, o, beats, "random", "random", seed=5, cycles_per_beat=pace)
    np.testing.assert_array_equal(got, golden(beats))
