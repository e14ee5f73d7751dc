"""cocotb bench: ``hw.pcm.PcmTileUnit`` against the golden ``sim.golden.pcm.PcmTile``.

Parameters (``bench_params()``): ``config`` (keyword arguments of ``PcmConfig``), ``seed`` (of every
random choice), ``rounds`` (PROGRAM rounds per test; each runs MVMs at several time steps), ``mvms``
(MVMs per time step); or, for ``test_replay`` only, ``replay``: ``weights`` (rows x cols codes),
``program_seed``, ``mvms`` (a list of ``[time step, ADC shift, DAC codes]``) and ``out`` (a JSON file
that receives the tile's outputs, for ``fp8train experiment pcm``).
"""

import json
from pathlib import Path

import cocotb
import numpy as np

from fp8train.sim.benches.streams import (StreamPort, bench_params, collect, drive, long_run, reset,
                                          stalls, start_clock)
from fp8train.sim.golden.pcm import PcmConfig, PcmError, PcmOp, PcmTile, command_error

OP_BITS = 4


def _signed(value: int, bits: int) -> int:
    value &= (1 << bits) - 1
    return value - (1 << bits) if value >> (bits - 1) else value


class PcmTB:
    """Clock, reset, the four streams of one tile and its golden twin."""

    def __init__(self, dut):
        self.dut = dut
        params = bench_params()
        self.config = PcmConfig(**params["config"])
        self.seed, self.rounds, self.mvms = params["seed"], params["rounds"], params["mvms"]
        if long_run():
            self.rounds *= 5
        self.golden = PcmTile(self.config)
        self.cmd, self.operand = StreamPort(dut, "cmd"), StreamPort(dut, "operand")
        self.result, self.done = StreamPort(dut, "result"), StreamPort(dut, "done")
        self.operand_bits = len(self.operand.payload)
        for port in (self.cmd, self.operand):
            port.valid.value = 0
        for port in (self.result, self.done):
            port.ready.value = 0
        start_clock(dut)

    async def command(self, op: int, arg: int, operands=(), results: int = 0, stall=None) -> tuple:
        """Run one command: its beat, operands and results under ``stall``; returns (results, error)."""
        clk, mask = self.dut.clk, (1 << self.operand_bits) - 1
        await drive(clk, self.cmd, [int(op) | int(arg) << OP_BITS])
        await drive(clk, self.operand, [int(v) & mask for v in operands], stall)
        got = await collect(clk, self.result, results, stall)
        (error,) = await collect(clk, self.done, 1, stall)
        return [_signed(v, len(self.result.payload)) for v in got], PcmError(error)

    async def check(self, op: int, arg: int, operands=(), results: int = 0, stall=None, want=None):
        """Run a command on both; the error codes and results must agree."""
        want_error = command_error(self.golden, op, arg)
        got, error = await self.command(op, arg, operands if want_error == PcmError.OK else (),
                                        results if want_error == PcmError.OK else 0, stall)
        assert error == want_error, f"command ({op}, {arg}): error {error.name}, golden {want_error.name}"
        if want is not None:
            bad = np.flatnonzero(np.asarray(got) != want)
            assert bad.size == 0, (f"seed {self.seed}, command ({op}, {arg}): {bad.size} mismatches; first "
                                   f"at column {bad[0]}: {got[bad[0]]} != {want[bad[0]]}")
        return got

    async def program(self, rng, stall) -> None:
        c = self.config
        weights = rng.integers(-c.w_max, c.w_max + 1, size=(c.rows, c.cols))
        weights[rng.random(weights.shape) < 0.2] = 0
        weights.flat[rng.integers(weights.size)] = c.w_max          # the extremes
        weights.flat[rng.integers(weights.size)] = -c.w_max
        seed = int(rng.integers(0, 1 << 32))
        self.dut._log.info("PROGRAM seed %#x", seed)
        await self.check(PcmOp.PROGRAM, seed, weights.ravel(), stall=stall)
        self.golden.program(weights, seed)

    async def mvm(self, rng, stall) -> None:
        c = self.config
        x = rng.integers(-c.x_max, c.x_max + 1, size=c.rows)
        if rng.random() < 0.2:
            x[:] = c.x_max * rng.choice([-1, 1])                   # full-scale input: the ADC clips
        # Mostly around the shift that brings a typical column sum into the ADC range, else anywhere.
        typical = c.x_max * c.g_max_code * max(c.rows, 2) ** 0.5 / 2
        shift = int(np.clip(int(typical).bit_length() - c.adc_bits + 1 + rng.integers(-2, 3), 0, c.acc_bits))
        if rng.random() < 0.2:
            shift = int(rng.integers(0, c.acc_bits + 1))
        want = None
        if command_error(self.golden, PcmOp.MVM, shift) == PcmError.OK:
            want = self.golden.mvm(x, shift)
        await self.check(PcmOp.MVM, shift, x, c.cols, stall, want=want)

    async def set_step(self, k: int) -> None:
        error = command_error(self.golden, PcmOp.TIME, k)
        await self.check(PcmOp.TIME, k)
        if error == PcmError.OK:
            self.golden.set_step(k)


@cocotb.test()
@cocotb.parametrize(stall=[None, "random"])
async def test_program_mvm_time_match_golden(dut, stall):
    """Random tiles, seeds, inputs, ADC shifts and time steps (0, the last one and random ones)."""
    tb = PcmTB(dut)
    await reset(dut)
    rng = np.random.default_rng(tb.seed)
    dut._log.info("seed %d", tb.seed)
    pattern = stalls(stall, tb.seed)
    for _ in range(tb.rounds):
        await tb.program(rng, pattern)
        steps = [0, tb.config.time_steps - 1, *rng.integers(1, tb.config.time_steps, size=2)]
        for k in sorted(steps):
            await tb.set_step(int(k))
            for _ in range(tb.mvms):
                await tb.mvm(rng, pattern)


@cocotb.test()
async def test_rejected_commands(dut):
    """Every error code, and a rejected command leaves the tile (and its noise lanes) untouched."""
    tb = PcmTB(dut)
    await reset(dut)
    rng = np.random.default_rng(tb.seed + 1)
    c = tb.config
    await tb.check(PcmOp.MVM, 0)                                    # NOT_PROGRAMMED
    await tb.check(PcmOp.TIME, 1)
    for op in (3, (1 << OP_BITS) - 1):                             # BAD_OPCODE
        await tb.check(op, 0)
    await tb.program(rng, None)
    await tb.check(PcmOp.MVM, c.acc_bits + 1)                       # BAD_ARGUMENT
    await tb.check(PcmOp.MVM, (1 << 32) - 1)
    await tb.check(PcmOp.TIME, c.time_steps)
    await tb.check(9, 0)
    for _ in range(3):
        await tb.mvm(rng, None)
    await tb.set_step(5)
    await tb.mvm(rng, None)


@cocotb.test(skip="replay" not in bench_params())
async def test_replay(dut):
    """A given program and MVM sequence (the experiment's inferences): outputs checked against the golden
    twin and written to ``replay["out"]``."""
    tb = PcmTB(dut)
    await reset(dut)
    replay = bench_params()["replay"]
    weights = np.array(replay["weights"], dtype=np.int64)
    await tb.check(PcmOp.PROGRAM, replay["program_seed"], weights.ravel())
    tb.golden.program(weights, replay["program_seed"])
    outputs = []
    for step, shift, x in replay["mvms"]:
        if step != tb.golden.step:
            await tb.set_step(step)
        outputs.append(await tb.check(PcmOp.MVM, shift, x, tb.config.cols, want=tb.golden.mvm(np.array(x), shift)))
    Path(replay["out"]).write_text(json.dumps(outputs))
