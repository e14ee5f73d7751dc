# amaranth: UnusedElaboratable=no
"""Operand scratchpad (Amaranth simulator): both load layouts and both buffers read back every code."""

import numpy as np
import pytest
from amaranth.sim import Simulator

from fp8train.hw.array.scratch import BEAT_BYTES, OperandScratch


def reference_writes(lanes, depth, rng):
    """Random beats of both layouts, overhanging the lanes at both ends, and the codes they leave."""
    want = np.zeros((2, lanes, depth), dtype=np.int64)
    ops = []
    for _ in range(6 * lanes * depth // BEAT_BYTES):
        beat = rng.integers(0, 256, BEAT_BYTES)
        buffer, k = int(rng.integers(0, 2)), int(rng.integers(0, depth))
        if rng.random() < 0.5:
            lane = int(rng.integers(0, lanes))
            ops.append((buffer, 0, lane, k, beat))
            word = k - k % BEAT_BYTES
            want[buffer, lane, word:word + BEAT_BYTES] = beat
        else:
            first = int(rng.integers(-BEAT_BYTES + 1, lanes))
            ops.append((buffer, 1, first, k, beat))
            for b in range(BEAT_BYTES):
                if 0 <= first + b < lanes:
                    want[buffer, first + b, k] = beat[b]
    return ops, want


@pytest.mark.parametrize("lanes,depth", [(1, 8), (5, 16), (8, 24), (11, 8)])
def test_every_code_reads_back(lanes, depth):
    rng = np.random.default_rng(lanes * 100 + depth)
    dut = OperandScratch(lanes=lanes, depth=depth)
    ops, want = reference_writes(lanes, depth, rng)
    got = np.zeros_like(want)

    async def testbench(ctx):
        for buffer, k_rows, lane, k, beat in ops:
            ctx.set(dut.write, {"en": 1, "buffer": buffer, "k_rows": k_rows, "lane": lane, "k": k,
                                "data": [int(b) for b in beat]})
            await ctx.tick()
        ctx.set(dut.write.en, 0)
        for buffer in range(2):
            for k in range(depth):
                ctx.set(dut.read_buffer, buffer)
                ctx.set(dut.read_k, k)
                await ctx.tick()
                got[buffer, :, k] = [ctx.get(dut.codes[lane]) for lane in range(lanes)]

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(testbench)
    sim.run()
    bad = np.argwhere(got != want)
    assert bad.size == 0, f"{len(bad)} wrong codes; first (buffer, lane, k) {tuple(bad[0])}: " \
                          f"{got[tuple(bad[0])]:#04x} != {want[tuple(bad[0])]:#04x}"


@pytest.mark.parametrize("lanes", [0, 65, 2.0])
def test_bad_lanes(lanes):
    with pytest.raises(ValueError, match=rf"^lanes must be an integer from 1 to 64, not {lanes!r}$"):
        OperandScratch(lanes=lanes, depth=8)


@pytest.mark.parametrize("depth", [0, 12, 4])
def test_bad_depth(depth):
    with pytest.raises(ValueError, match=rf"^depth must be a positive multiple of 8, not {depth!r}$"):
        OperandScratch(lanes=2, depth=depth)
