"""cocotb bench: ``hw.update.UpdateExecutor`` with the real ``Dma`` on cocotbext-axi's RAM, against
golden ``run_update`` (``sgd_update`` on the descriptor's buffers) (DESIGN.md §7.3).

:class:`ExecutorHarness` is the unit under test: the executor wired to a ``Dma`` as the command engine
wires them (the engine's DMA window, error clear and abort become top-level ports). Each test fills
the RAM with random bytes, lays out buffers with random gaps, sends UPDATE commands on ``cmd`` and
compares the whole RAM with a mirror on which golden ``run_update`` ran: wrong results, stray writes
into gaps and the bytes past a buffer's last element all show. Every AXI channel of the RAM pauses
at random. Parameters (``bench_params()``): ``block`` (the elaboration), ``rbits``, ``seed``,
``commands`` (random commands; every one of the 48 modes once per 48), ``max_count`` (elements
per command at most) and ``abort_step`` (cycles between abort points).
"""

import itertools
import logging
import random

import cocotb
import cocotb.utils
import numpy as np
from amaranth.hdl import Module
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out
from cocotb.triggers import ClockCycles, ReadOnly, RisingEdge
from cocotbext.axi import AxiBus

from fp8train.hw.bus.axi import AxiSignature
from fp8train.hw.bus.dma import Dma
from fp8train.hw.engine import DMA_ERROR_WIDTH, done_layout, exec_layout
from fp8train.hw.update import UpdateExecutor
from fp8train.protocol import ALIGN, FLAG_OUT_SHIFT, Descriptor, ErrorCode, Flag, Opcode, OutFormat
from fp8train.sim.benches.dma_bench import FAULT_BASE, FaultyAxiRam, pauses
from fp8train.sim.benches.streams import (CLOCK_NS, StreamPort, bench_params, long_run, reset,
                                          start_clock)
from fp8train.sim.benches.update_bench import random_codes, random_options
from fp8train.sim.golden.device import DeviceConfig, run_update

__all__ = ["ExecutorHarness"]

ADDR_WIDTH = 32
MEM_SIZE = 1 << 16
DATA_BASE, DATA_LIMIT = 0x100, FAULT_BASE
MODES = list(itertools.product([0, Flag.MOMENTUM], [0, Flag.WEIGHT_DECAY], [0, Flag.OUT_STOCHASTIC],
                               [0, Flag.OVERFLOW_INF], list(OutFormat)))
CYCLES_PER_ELEMENT = 40        # generous: a command not done by then has hung
SLOW_PAUSE = 0.7               # pauses of the slowed side's channels: its transfers are still running


class ExecutorHarness(wiring.Component):
    """An :class:`UpdateExecutor` on a :class:`Dma`, connected as ``CommandEngine`` connects them."""

    def __init__(self, *, block: int, rbits: int, lanes: int = 4):
        self.executor = UpdateExecutor(block=block, rbits=rbits, addr_width=ADDR_WIDTH, lanes=lanes)
        self.dma = Dma(max_reads_outstanding=16, max_writes_outstanding=8, addr_width=ADDR_WIDTH,
                       data_width=ALIGN * 8)                       # as CommandEngine builds its Dma
        super().__init__({
            "m_axi": Out(AxiSignature(addr_width=ADDR_WIDTH, data_width=ALIGN * 8)),
            "cmd": In(stream.Signature(exec_layout(ADDR_WIDTH))),
            "done": Out(stream.Signature(done_layout())),
            "abort": In(1), "window_base": In(ADDR_WIDTH), "window_limit": In(ADDR_WIDTH),
            "dma_clear": In(1), "dma_error": Out(DMA_ERROR_WIDTH), "dma_busy": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        m.submodules.executor = ex = self.executor
        m.submodules.dma = dma = self.dma
        wiring.connect(m, dma.m_axi, wiring.flipped(self.m_axi))
        wiring.connect(m, wiring.flipped(self.cmd), ex.cmd)
        wiring.connect(m, ex.done, wiring.flipped(self.done))
        wiring.connect(m, ex.dma_rd_cmd, dma.rd_cmd)
        wiring.connect(m, dma.rd_data, ex.dma_rd_data)
        wiring.connect(m, ex.dma_wr_cmd, dma.wr_cmd)
        wiring.connect(m, ex.dma_wr_data, dma.wr_data)
        m.d.comb += [ex.dma_rd_done.eq(dma.rd_done), ex.dma_wr_done.eq(dma.wr_done),
                     ex.dma_error.eq(dma.error), ex.abort.eq(self.abort), dma.abort.eq(self.abort),
                     dma.window_base.eq(self.window_base), dma.window_limit.eq(self.window_limit),
                     dma.clear.eq(self.dma_clear), self.dma_error.eq(dma.error), self.dma_busy.eq(dma.busy)]
        return m


def _round8(n: int) -> int:
    return -(-n // ALIGN) * ALIGN


def command_payload(desc: Descriptor) -> int:
    """The ``exec_layout`` payload the engine makes of a checked UPDATE descriptor (its fields, and
    ``update`` set where the layout has that field to tell UPDATE from GEMM)."""
    payload = 0
    for name, field in exec_layout(ADDR_WIDTH):
        value = 1 if name == "update" else getattr(desc, name)
        payload |= (value & ((1 << field.width) - 1)) << field.offset
    return payload


class ExecTB:
    """Clock, reset, the RAM (every channel pausing a ``pause`` fraction of cycles, those of the
    ``slow`` side, "read" or "write", ``SLOW_PAUSE``) and its golden mirror, and the command/done
    streams."""

    def __init__(self, dut, seed_offset: int = 0, pause: float = 0.2, slow: str | None = None):
        self.dut = dut
        params = bench_params()
        self.params = params
        self.config = DeviceConfig(rbits=params["rbits"])
        self.seed = params["seed"] + seed_offset
        dut._log.info("seed %d", self.seed)
        self.rng = np.random.default_rng(self.seed)
        dut.rst.value = 1
        start_clock(dut)
        self.ram = FaultyAxiRam(AxiBus.from_prefix(dut, "m_axi"), dut.clk, dut.rst, MEM_SIZE)
        pause_rng = random.Random(self.seed)
        for side in (self.ram.write_if, self.ram.read_if):
            side.log.setLevel(logging.WARNING)
        sides = {"write": (self.ram.write_if.aw_channel, self.ram.write_if.w_channel,
                           self.ram.write_if.b_channel),
                 "read": (self.ram.read_if.ar_channel, self.ram.read_if.r_channel)}
        for side, channels in sides.items():
            for channel in channels:
                channel.set_pause_generator(pauses(pause_rng, SLOW_PAUSE if side == slow else pause))
        self.cmd, self.done = StreamPort(dut, "cmd"), StreamPort(dut, "done")
        self.cmd.valid.value = 0
        self.done.ready.value = 0
        dut.abort.value = 0
        dut.dma_clear.value = 0
        dut.window_base.value = 0
        dut.window_limit.value = MEM_SIZE
        self.mirror = np.frombuffer(self.rng.bytes(MEM_SIZE), dtype=np.uint8).copy()

    async def start(self):
        await reset(self.dut)
        self.ram.write(0, self.mirror.tobytes())

    def ram_bytes(self) -> np.ndarray:
        return np.frombuffer(self.ram.read(0, MEM_SIZE), dtype=np.uint8)

    def descriptor(self, mode, count: int, base: int = DATA_BASE, **place) -> Descriptor:
        """An UPDATE of ``count`` random elements in ``mode``, its buffers from ``base`` up with random
        gaps (or at the addresses in ``place``), written into RAM and mirror."""
        momentum, decay, stochastic, overflow, out = mode
        options = random_options(self.rng)
        addrs = {}
        at = base
        for name, nbytes in (("w", 2 * count), ("g", 2 * count), ("v", 2 * count), ("copy", count)):
            at += int(self.rng.integers(0, 3)) * ALIGN
            addrs[name] = place.get(name, at)
            if name not in place:
                at += _round8(nbytes)
        assert at <= DATA_LIMIT, "buffers beyond the data area"
        for name, log2_scale in (("w", 0), ("g", self.rng.uniform(-10, 12)), ("v", self.rng.uniform(-12, 0))):
            codes = random_codes(self.rng, count, log2_scale).astype("<u2")
            self.mirror[addrs[name]:addrs[name] + 2 * count] = codes.view(np.uint8)
            self.ram.write(addrs[name], codes.tobytes())
        return Descriptor(opcode=Opcode.UPDATE, flags=int(momentum | decay | stochastic | overflow
                                                          | out << FLAG_OUT_SHIFT),
                          k=count, scale=options["scale"], seed=options["seed"],
                          addr_a=addrs["w"], stride_a=options["lr"], addr_b=addrs["g"],
                          stride_b=options["momentum"], addr_c=addrs["v"], stride_c=options["weight_decay"],
                          addr_d=addrs["copy"])

    async def send(self, desc: Descriptor) -> None:
        """Clear the DMA error (as the engine does before a command) and hand the command over."""
        clk = self.dut.clk
        self.dut.dma_clear.value = 1
        await RisingEdge(clk)
        self.dut.dma_clear.value = 0
        self.cmd.payload.value = command_payload(desc)
        self.cmd.valid.value = 1
        while True:
            await ReadOnly()
            taken = self.cmd.ready.value == 1
            await RisingEdge(clk)
            if taken:
                break
        self.cmd.valid.value = 0

    async def result(self, desc: Descriptor) -> int:
        """The command's completion code (fails if none comes within a generous time)."""
        clk = self.dut.clk
        self.done.ready.value = 1
        limit = CYCLES_PER_ELEMENT * desc.k + 500
        try:
            while True:
                await ReadOnly()
                if self.done.valid.value == 1:
                    code = int(self.done.payload.value)
                    await RisingEdge(clk)
                    break
                await RisingEdge(clk)
                limit -= 1
                if limit == 0:
                    raise AssertionError(f"no completion for {desc}")
        finally:
            self.done.ready.value = 0
        return code

    async def run(self, desc: Descriptor) -> int:
        await self.send(desc)
        return await self.result(desc)

    def buffers_written(self, desc: Descriptor) -> list[tuple[int, int]]:
        """(address, bytes) of the buffers the command may write."""
        spans = [(desc.addr_a, 2 * desc.k)]
        if desc.flags & Flag.MOMENTUM:
            spans.append((desc.addr_c, 2 * desc.k))
        if (desc.flags & Flag.OUT_FORMAT) >> FLAG_OUT_SHIFT != OutFormat.FP16_169:
            spans.append((desc.addr_d, desc.k))
        return spans

    def compare(self, label: str, outside=None) -> None:
        """RAM equals the mirror (with ``outside``: only outside those spans, which are then taken
        from RAM: their contents are unspecified after a failed or aborted command)."""
        got = self.ram_bytes()
        keep = np.ones(MEM_SIZE, dtype=bool)
        for addr, nbytes in outside or []:
            keep[addr:addr + nbytes] = False
        bad = np.flatnonzero((got != self.mirror) & keep)
        if bad.size:
            k = bad[0]
            raise AssertionError(f"{label}: {bad.size} bytes differ from golden; first at {k:#06x}: "
                                 f"{got[k]:#04x} != {self.mirror[k]:#04x} (seed {self.seed})")
        self.mirror[~keep] = got[~keep]

    async def wait_dma_idle(self) -> None:
        for _ in range(2000):
            await ReadOnly()
            if self.dut.dma_busy.value == 0:
                await RisingEdge(self.dut.clk)
                return
            await RisingEdge(self.dut.clk)
        raise AssertionError("the DMA did not become idle")

    async def check_good(self, label: str, mode=None) -> None:
        """A random command (in ``mode`` or a random one) afterwards completes OK with golden results
        (the executor is usable)."""
        mode = MODES[int(self.rng.integers(len(MODES)))] if mode is None else mode
        desc = self.descriptor(mode, int(self.rng.integers(1, self.params["max_count"] + 1)))
        run_update(desc, self.mirror, self.config)
        code = await self.run(desc)
        assert code == ErrorCode.OK, f"{label}: the next command completed {ErrorCode(code).name}"
        self.compare(f"{label}, the next command")


@cocotb.test()
async def test_commands(dut):
    """Random commands in every mode, with counts from 1 to ``max_count`` (several blocks, partial
    last beats and blocks): the whole RAM equals golden after each."""
    tb = ExecTB(dut)
    await tb.start()
    commands = tb.params["commands"] * (10 if long_run() else 1)
    order = np.random.default_rng(tb.seed).permutation(len(MODES))
    for index in range(commands):
        mode = MODES[order[index % len(MODES)]]
        count = int(tb.rng.integers(1, tb.params["max_count"] + 1))
        desc = tb.descriptor(mode, count)
        run_update(desc, tb.mirror, tb.config)
        code = await tb.run(desc)
        assert code == ErrorCode.OK, f"command {index} ({desc}) completed {ErrorCode(code).name}"
        tb.compare(f"command {index}: {desc}")


async def _faults_from_first_write(tb) -> None:
    """Switch the RAM's faults on at the first AW: the command's reads succeed, its writes fail."""
    while tb.dut.m_axi_awvalid.value != 1:
        await RisingEdge(tb.dut.clk)
    tb.ram.faults_on = True


@cocotb.test()
@cocotb.parametrize(error=["read", "write", "read_while_writing", "writes_in_flight"])
async def test_bus_error(dut, error):
    """A range the RAM answers with SLVERR: g in it (read), the copy (write), g from the second block
    on while the first block is being written (read_while_writing), or w in it with faults from the
    first AW on, so that w' fails while the v' and copy writes are in flight (writes_in_flight: the
    DMA drops them all with one done pulse). READ_ERROR or WRITE_ERROR, nothing written outside the
    command's own output buffers, the DMA idle afterwards (the accepted writes got their data) and the
    next command works (no word of this one reaches it). The other side of the RAM is slowed down,
    so its transfers are under way when the error comes."""
    write_error = error in ("write", "writes_in_flight")
    tb = ExecTB(dut, seed_offset=1, slow="read" if error == "write" else "write")
    await tb.start()
    count = tb.params["block"] if error == "writes_in_flight" else tb.params["max_count"]
    mode = (Flag.MOMENTUM, 0, Flag.OUT_STOCHASTIC, 0, OutFormat.E5M2)
    place = {"read": {"g": FAULT_BASE}, "write": {"copy": FAULT_BASE},
             "read_while_writing": {"g": FAULT_BASE - 2 * tb.params["block"]},
             "writes_in_flight": {"w": FAULT_BASE}}[error]
    desc = tb.descriptor(mode, count, **place)
    if error == "writes_in_flight":
        cocotb.start_soon(_faults_from_first_write(tb))
    else:
        tb.ram.faults_on = True
    code = await tb.run(desc)
    want = ErrorCode.WRITE_ERROR if write_error else ErrorCode.READ_ERROR
    assert code == want, f"{error} error: completed {ErrorCode(code).name}, not {want.name}"
    await tb.wait_dma_idle()
    tb.ram.faults_on = False
    tb.compare(f"{error} error", outside=tb.buffers_written(desc))
    await tb.check_good(f"{error} error")


@cocotb.test()
async def test_window_refusal(dut):
    """A DMA window that ends inside w: the DMA refuses the read, the command ends READ_ERROR."""
    tb = ExecTB(dut, seed_offset=2)
    await tb.start()
    desc = tb.descriptor(MODES[0], tb.params["max_count"])
    dut.window_limit.value = desc.addr_a + ALIGN
    code = await tb.run(desc)
    assert code == ErrorCode.READ_ERROR, f"window: completed {ErrorCode(code).name}, not READ_ERROR"
    dut.window_limit.value = MEM_SIZE
    tb.compare("window", outside=tb.buffers_written(desc))
    await tb.check_good("window")


@cocotb.test()
async def test_abort(dut):
    """Abort at offsets every ``abort_step`` cycles across a whole command (so in every phase: reads,
    the unit's pipeline full, writes, the completion offered): no completion comes, nothing is written
    outside the command's output buffers, and the next command works."""
    tb = ExecTB(dut, seed_offset=3)
    await tb.start()
    count = tb.params["block"] + 5                       # a whole block and a partial one
    mode = MODES[-1]
    desc = tb.descriptor(mode, count)
    run_update(desc, tb.mirror, tb.config)
    start = cocotb.utils.get_sim_time("ns")
    code = await tb.run(desc)
    assert code == ErrorCode.OK, f"completed {ErrorCode(code).name}"
    tb.compare("before the aborts")
    span = round((cocotb.utils.get_sim_time("ns") - start) / CLOCK_NS)
    # Past the measured span too: the RAM's random pauses make every run's length differ.
    for offset in range(0, span + span // 4 + 20, tb.params["abort_step"]):
        desc = tb.descriptor(mode, count)
        await tb.send(desc)
        await ClockCycles(dut.clk, offset + 1)
        dut.abort.value = 1
        await RisingEdge(dut.clk)
        dut.abort.value = 0
        tb.done.ready.value = 1
        for _ in range(50):
            await ReadOnly()
            assert tb.done.valid.value == 0, f"abort {offset} cycles in: the aborted command completed"
            await RisingEdge(dut.clk)
        tb.done.ready.value = 0
        await tb.wait_dma_idle()
        tb.compare(f"abort {offset} cycles in", outside=tb.buffers_written(desc))
        await tb.check_good(f"abort {offset} cycles in", mode)
    dut._log.info("aborts every %d cycles over %d cycles", tb.params["abort_step"], span)


@cocotb.test()
@cocotb.parametrize(momentum=[0, Flag.MOMENTUM], out=[OutFormat.FP16_169, OutFormat.E4M3])
async def test_throughput(dut, momentum, out):
    """Cycles per element of a ``max_count`` command on a RAM that never pauses (logged), checked
    against golden too."""
    tb = ExecTB(dut, seed_offset=4, pause=0.0)
    await tb.start()
    count = tb.params["max_count"]
    desc = tb.descriptor((momentum, Flag.WEIGHT_DECAY, Flag.OUT_STOCHASTIC, 0, out), count)
    run_update(desc, tb.mirror, tb.config)
    start = cocotb.utils.get_sim_time("ns")
    code = await tb.run(desc)
    cycles = round((cocotb.utils.get_sim_time("ns") - start) / CLOCK_NS)
    assert code == ErrorCode.OK, f"completed {ErrorCode(code).name}"
    tb.compare("throughput")
    dut._log.info("momentum=%d copy=%s: %d elements in %d cycles, %.2f cycles per element",
                  bool(momentum), out.name, count, cycles, cycles / count)
