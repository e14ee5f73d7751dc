"""cocotb bench: ``hw.engine.CommandEngine`` against golden ``check()`` and ``GoldenDevice``.

The host side is cocotbext-axi's ``AxiLiteMaster`` on ``s_axil``; host memory is an ``AxiRam``
(the DMA bench's ``FaultyAxiRam``, errors injectable separately for reads and writes) on ``m_axi``,
with pause generators on every channel when ``stall``. The executor is a Python model
(:meth:`EngineTB._executor`): it takes ``exec_cmd``, checks every field against the descriptor the
command was packed from, drives ``mac_active`` for ``latency`` cycles, then answers ``exec_done``
with a chosen code, or never (``hang``). The executor's DMA ports stay idle.

Ring runs are mirrored into a :class:`GoldenDevice` (whose ``run_gemm`` is a no-op here: the
datapath is not part of this unit) and registers and the whole host memory are compared with it.
Parameters (``bench_params()``): ``rows``, ``cols``, ``rbits``, ``max_chunk``, ``ring_log2_max``,
``seed``, ``commands`` (ring test length).
"""

import itertools
import logging
import random

import cocotb
import numpy as np
from amaranth.hdl import Shape
from cocotb.simtime import get_sim_time
from cocotb.triggers import ReadOnly, RisingEdge, SimTimeoutError, with_timeout
from cocotbext.axi import AxiBus, AxiLiteBus, AxiLiteMaster, AxiResp

from fp8train.hw.engine import exec_layout
from fp8train.protocol import (DESCRIPTOR_BYTES, DEVICE_ID, REG_WRITE_MASKS, STATUS_DONE, VERSION, Ctrl,
                               Descriptor, ErrorCode, Flag, Irq, Opcode, Reg, Status)
from fp8train.sim.benches.dma_bench import FAULT_BASE, FaultyAxiRam
from fp8train.sim.benches.streams import StreamPort, bench_params, collect, drive, reset, start_clock
from fp8train.sim.golden.device import DeviceConfig, GoldenDevice, check

MEM_SIZE = 1 << 16
RING_BASE = 0x8000
WINDOW = (0, 1 << 24)
TIMEOUT_US = 400
MAC_LEVEL = 3                  # mac_active while the executor model works



class _EngineGolden(GoldenDevice):
    """The golden mirror of an engine without a datapath: a GEMM does what the bench's executor model
    does (with ``use_dma``, one word of D through the DMA) and completes OK."""

    def __init__(self, tb):
        super().__init__(MEM_SIZE, tb.config)
        self.tb = tb

    def execute(self, desc):
        if self.tb.use_dma and in_ram(desc):
            self.write_mem(desc.addr_d, d_word(desc).to_bytes(8, "little"))
        return ErrorCode.OK

class _Side:
    """What one side (read or write) of ``FaultyAxiRam`` asks of the RAM: faults on that side only."""

    def __init__(self, ram):
        self.ram, self.on = ram, False

    @property
    def fault_resp(self):
        return self.ram.fault_resp

    def faulty(self, address):
        return self.on and FAULT_BASE <= address < FAULT_BASE + 0x200


def gemm(**fields):
    """The GEMM of ``tests/test_device.py`` (used there for the malformed cases)."""
    base = dict(opcode=Opcode.GEMM, m=2, n=2, k=2, addr_a=0x1000, stride_a=8, addr_b=0x2000, stride_b=8,
                addr_d=0x3000, stride_d=8)
    base.update(fields)
    return Descriptor(**base)


def update(**fields):
    """An UPDATE of 5 elements (lr = 0.5) that passes every check unless ``fields`` break one."""
    base = dict(opcode=Opcode.UPDATE, k=5, addr_a=0x1000, addr_b=0x2000, addr_d=0x3000, stride_a=0x3800)
    base.update(fields)
    return Descriptor(**base)


#: tests/test_device.py::test_malformed_descriptors_complete_with_their_error, and a few more corners.
MALFORMED = [
    gemm(opcode=0x7F), gemm(opcode=Opcode.UPDATE), gemm(flags=1 << 20), gemm(flags=3 << 8), gemm(m=0),
    gemm(k=70000), gemm(chunk=5000), gemm(addr_a=0x1004), gemm(stride_b=12), gemm(n=9, stride_d=16),
    gemm(flags=Flag.HAS_C, addr_c=0x4000, stride_c=0), gemm(addr_d=(1 << 24) - 8),
    # more corners: order of checks, transposes, C, the window's edges, FENCE with reserved bits
    Descriptor(opcode=Opcode.FENCE, flags=1 << 12), Descriptor(opcode=Opcode.FENCE, flags=3 << 8),
    gemm(flags=3 << 8, m=0), gemm(m=0, chunk=5000), gemm(chunk=5000, addr_a=4),
    gemm(addr_a=4, addr_d=1 << 25),
    gemm(k=65535, stride_a=65536), gemm(k=65536), gemm(n=0), gemm(k=0), gemm(chunk=4096),
    gemm(flags=Flag.TRANS_A, m=9, k=2, stride_a=8), gemm(flags=Flag.TRANS_A, m=9, k=2, stride_a=16),
    gemm(flags=Flag.TRANS_B, n=2, k=9, stride_b=16), gemm(flags=Flag.TRANS_B, n=2, k=9, stride_b=8),
    gemm(flags=1 << 8, n=8, stride_d=8), gemm(flags=2 << 8, n=9, stride_d=8), gemm(n=4, stride_d=8),
    gemm(flags=Flag.HAS_C, addr_c=0x4000, stride_c=8, n=4), gemm(flags=Flag.HAS_C, addr_c=0x4004, stride_c=8),
    gemm(addr_d=(1 << 24) - 16, m=2, stride_d=8), gemm(addr_d=(1 << 24) - 16, m=3, stride_d=8),
    gemm(m=0x100, stride_a=0x10000, addr_a=0), gemm(m=0x100, stride_a=0x10000, addr_a=8),
    # UPDATE: the factor fields' reserved halves, its count, unused buffers ignored, single-row buffers
    update(), update(stride_a=0x1_3C00), update(stride_d=8), update(chunk=1), update(m=1), update(k=0),
    update(k=(1 << 24) - 1), update(k=1 << 24), update(addr_c=0x4004), update(flags=Flag.MOMENTUM, addr_c=0x4004),
    update(flags=Flag.TRANS_A), update(flags=Flag.WEIGHT_DECAY | Flag.OUT_STOCHASTIC, k=9),
    update(flags=1 << 8, addr_d=(1 << 24) - 8, k=8), update(flags=1 << 8, addr_d=(1 << 24) - 8, k=9),
    update(addr_b=(1 << 24) - 16, k=8), update(addr_b=(1 << 24) - 16, k=9), update(flags=3 << 8),
    gemm(flags=Flag.RELU | Flag.OVERFLOW_INF | Flag.ACC_STOCHASTIC | Flag.OUT_STOCHASTIC, scale=-5, seed=7),
]


def in_ram(desc):
    """The executor model moves data only for descriptors whose A and D lie in the RAM."""
    return desc.addr_a + 8 <= MEM_SIZE and desc.addr_d + 8 <= MEM_SIZE


def d_word(desc):
    """What the executor model writes at D (one word, from the seed)."""
    return (desc.seed + 1) * 0x9E37_79B9_7F4A_7C15 & (1 << 64) - 1


class EngineTB:
    """Clock, reset, CSR master, host memory, the executor model and the golden mirror."""

    def __init__(self, dut, stall=False, seed_offset=0):
        self.dut = dut
        params = bench_params()
        opcodes = {Opcode.FENCE, Opcode.GEMM} | ({Opcode.UPDATE} if params["update"] else set())
        self.config = DeviceConfig(rows=params["rows"], cols=params["cols"], rbits=params["rbits"],
                                   max_chunk=params["max_chunk"], ring_log2_max=params["ring_log2_max"],
                                   opcodes=frozenset(opcodes))
        self.commands = params["commands"]
        self.seed = params["seed"] + seed_offset
        dut._log.info("seed %d, stall %s", self.seed, stall)
        self.rng = random.Random(self.seed)
        dut.rst.value = 1
        start_clock(dut)
        self.csr = AxiLiteMaster(AxiLiteBus.from_prefix(dut, "s_axil"), dut.clk, dut.rst)
        self.ram = FaultyAxiRam(AxiBus.from_prefix(dut, "m_axi"), dut.clk, dut.rst, MEM_SIZE)
        self.read_faults, self.write_faults = _Side(self.ram), _Side(self.ram)
        self.ram.read_if.ram, self.ram.write_if.ram = self.read_faults, self.write_faults
        self.ram.fault_resp = 0b10
        for side in (self.ram.write_if, self.ram.read_if, self.csr.write_if, self.csr.read_if):
            side.log.setLevel(logging.WARNING)
        if stall:
            for channel in (self.ram.write_if.aw_channel, self.ram.write_if.w_channel,
                            self.ram.write_if.b_channel, self.ram.read_if.ar_channel,
                            self.ram.read_if.r_channel):
                channel.set_pause_generator(self._pauses(0.3))
        dut.exec_cmd__ready.value = 0
        dut.exec_done__valid.value = 0
        dut.exec_done__payload.value = 0
        dut.mac_active.value = 0
        for port in ("exec_dma_rd_cmd", "exec_dma_wr_cmd", "exec_dma_wr_data"):
            getattr(dut, f"{port}__valid").value = 0
            getattr(dut, f"{port}__payload").value = 0
        dut.exec_dma_rd_data__ready.value = 0
        # Executor model.
        self.expected = []             # descriptors the executor should see, in order
        self.latency = lambda: self.rng.randint(1, 12)
        self.answer = lambda desc: ErrorCode.OK
        self.hang = False
        self.use_dma = False           # read one word of A and write one word of D through exec_dma_*
        self.dma_ops = 0
        self.drop = False              # forget the current command (the DUT was reset)
        self.accepted = 0              # exec_cmd handshakes
        self.aborts = 0                # abort pulses seen
        self.mac_sum = 0               # sum of mac_active driven
        self.errors = []
        self.golden = _EngineGolden(self)
        self.head = 0

    def _pauses(self, fraction):
        return (self.rng.random() < fraction for _ in itertools.count())

    async def start(self):
        await reset(self.dut)
        cocotb.start_soon(self._executor())

    # -- CSRs ------------------------------------------------------------------------------------
    async def read(self, addr, resp=AxiResp.OKAY):
        got = await with_timeout(self.csr.read(addr, 4), TIMEOUT_US, "us")
        assert got.resp == resp, f"read {addr:#05x}: response {got.resp!r} != {resp!r}"
        return int.from_bytes(got.data, "little")

    async def write(self, addr, value, resp=AxiResp.OKAY, mirror=True):
        got = await with_timeout(self.csr.write(addr, value.to_bytes(4, "little")), TIMEOUT_US, "us")
        assert got.resp == resp, f"write {addr:#05x}: response {got.resp!r} != {resp!r}"
        if mirror and resp == AxiResp.OKAY:
            self.golden.write_csr(addr, value)

    async def read64(self, addr):
        low = await self.read(addr)
        return low | await self.read(addr + 4) << 32

    # -- memory ----------------------------------------------------------------------------------
    def write_mem(self, addr, raw):
        self.ram.write(addr, raw)
        self.golden.write_mem(addr, raw)

    def check_memory(self, what):
        got = np.frombuffer(self.ram.read(0, MEM_SIZE), dtype=np.uint8)
        bad = np.flatnonzero(got != self.golden.memory)
        assert bad.size == 0, (f"{what}: {bad.size} bytes differ from golden; first at {bad[0]:#x}: "
                               f"{got[bad[0]]:#04x} != {self.golden.memory[bad[0]]:#04x}")

    async def check_registers(self, what):
        for reg in (Reg.CTRL, Reg.STATUS, Reg.ERROR, Reg.IRQ_STATUS, Reg.IRQ_MASK, Reg.RING_BASE,
                    Reg.RING_SIZE, Reg.RING_HEAD, Reg.RING_TAIL, Reg.WINDOW_BASE, Reg.WINDOW_LIMIT,
                    Reg.PERF_DONE, Reg.ID, Reg.VERSION, Reg.CONFIG_ARRAY, Reg.CONFIG_LIMITS, Reg.CONFIG_OPCODES):
            got, want = await self.read(reg), self.golden.read_csr(reg)
            assert got == want, f"{what}: {reg.name} {got:#x} != golden {want:#x}"
        assert int(self.dut.irq.value) == self.golden.irq(), f"{what}: irq {int(self.dut.irq.value)}"

    # -- the ring ----------------------------------------------------------------------------------
    async def setup_ring(self, size=8, base=RING_BASE, mask=Irq.DONE | Irq.ERROR):
        await self.write(Reg.RING_BASE, base)
        await self.write(Reg.RING_SIZE, size)
        await self.write(Reg.WINDOW_BASE, WINDOW[0])
        await self.write(Reg.WINDOW_LIMIT, WINDOW[1])
        await self.write(Reg.IRQ_MASK, mask)
        await self.write(Reg.CTRL, Ctrl.ENABLE)
        self.size, self.base = size, base

    def slot(self, count):
        return self.base + (count % self.size) * DESCRIPTOR_BYTES

    async def submit(self, descs, wait=True):
        """Write ``descs`` into the next slots (status 0), ring the doorbell, wait for the tail."""
        for desc in descs:
            raw = desc.replace(status=0).pack()
            self.write_mem(self.slot(self.head), raw)
            reserved_clear = Descriptor.unpack(raw)[1]
            code = check(desc, reserved_clear, self.config, WINDOW)
            if desc.opcode in (Opcode.GEMM, Opcode.UPDATE) and code == ErrorCode.OK:
                self.expected.append(desc)
            self.head = (self.head + 1) & 0xFFFF
        await self.write(Reg.RING_HEAD, self.head)
        if wait:
            await self.wait_tail(self.head)

    async def wait_tail(self, target):
        async def reach():
            while await self.read(Reg.RING_TAIL) != target:
                pass
        try:
            await with_timeout(reach(), TIMEOUT_US, "us")
        except SimTimeoutError:
            raise AssertionError(f"tail {await self.read(Reg.RING_TAIL)} never reached {target}") from None

    def status(self, count):
        return int.from_bytes(self.ram.read(self.slot(count) + 4, 4), "little")

    def check_executor(self):
        assert not self.errors, f"{len(self.errors)} executor mismatches; first: {self.errors[0]}"

    # -- the executor model --------------------------------------------------------------------
    def _unpack(self, value):
        fields = {}
        for name, field in exec_layout():
            raw = value >> field.offset & ((1 << field.width) - 1)
            if Shape.cast(field.shape).signed and raw >> (field.width - 1):
                raw -= 1 << field.width
            fields[name] = raw
        return fields

    async def _dma_work(self, desc):
        """Through the engine's DMA mux: read the first word of A, write ``d_word`` at D."""
        dut, edge, settled = self.dut, RisingEdge(self.dut.clk), ReadOnly()
        self.dma_ops += 1
        await drive(dut.clk, StreamPort(dut, "exec_dma_rd_cmd"), [desc.addr_a | 8 << 32])
        (beat,) = await collect(dut.clk, StreamPort(dut, "exec_dma_rd_data"), 1)
        want = int.from_bytes(self.ram.read(desc.addr_a, 8), "little")
        if beat != want | 1 << 64:
            self.errors.append(f"exec_dma read of {desc.addr_a:#x}: {beat:#x} != {want | 1 << 64:#x}")
        done = []

        async def watch():
            while True:
                await settled
                if int(dut.exec_dma_wr_done.value):
                    done.append(int(dut.exec_dma_error.value))
                    return
                await edge
        watcher = cocotb.start_soon(watch())
        data = cocotb.start_soon(drive(dut.clk, StreamPort(dut, "exec_dma_wr_data"),
                                       [d_word(desc) | 0xFF << 64]))
        await drive(dut.clk, StreamPort(dut, "exec_dma_wr_cmd"), [desc.addr_d | 8 << 32])
        await watcher
        await edge
        await data
        if done != [0]:
            self.errors.append(f"exec_dma write to {desc.addr_d:#x}: DMA error {done}")

    async def _executor(self):
        dut, edge, settled = self.dut, RisingEdge(self.dut.clk), ReadOnly()
        while True:
            dut.exec_cmd__ready.value = 1
            await settled
            aborted = int(dut.abort.value)
            self.aborts += aborted
            taken = int(dut.exec_cmd__valid.value) and not aborted
            payload = int(dut.exec_cmd__payload.value) if taken else None
            await edge
            if not taken:
                continue
            dut.exec_cmd__ready.value = 0
            self.accepted += 1
            got = self._unpack(payload)
            if not self.expected:
                self.errors.append(f"command {self.accepted}: exec_cmd {got} not expected")
                desc = None
            else:
                desc = self.expected.pop(0)
                for name, value in got.items():
                    want = getattr(desc, name)
                    if value != want:
                        self.errors.append(f"command {self.accepted}: {name} {value:#x} != {want:#x}")
                        break
            code = self.answer(desc)
            if self.use_dma and desc is not None and in_ram(desc):
                await self._dma_work(desc)
            cycles = None if self.hang else self.latency()
            while cycles is None or cycles > 0:        # working
                dut.mac_active.value = MAC_LEVEL
                self.mac_sum += MAC_LEVEL
                await settled
                aborted = int(dut.abort.value)
                await edge
                if aborted or self.drop:
                    self.aborts += aborted
                    aborted = True
                    break
                if cycles is not None:
                    cycles -= 1
            dut.mac_active.value = 0
            if aborted:
                continue
            dut.exec_done__valid.value = 1
            dut.exec_done__payload.value = int(code)
            while True:
                await settled
                done = int(dut.exec_done__ready.value)
                aborted = int(dut.abort.value)
                await edge
                if done or aborted:
                    self.aborts += aborted and not done
                    break
            dut.exec_done__valid.value = 0


async def _settle(tb, cycles=4):
    for _ in range(cycles):
        await RisingEdge(tb.dut.clk)


@cocotb.test()
async def test_registers(dut):
    """Reset values, ID/VERSION/CONFIG, RW readback and byte strobes, W1C, RO writes ignored,
    DECERR on unmapped addresses, all equal to ``GoldenDevice``."""
    tb = EngineTB(dut)
    await tb.start()
    await tb.check_registers("after reset")
    assert await tb.read(Reg.ID) == DEVICE_ID and await tb.read(Reg.VERSION) == VERSION
    for reg in (Reg.RING_BASE, Reg.WINDOW_BASE, Reg.WINDOW_LIMIT, Reg.IRQ_MASK, Reg.ERROR, Reg.RING_SIZE):
        value = tb.rng.getrandbits(32)
        await tb.write(reg, value)
        kept = value & REG_WRITE_MASKS.get(reg, 0xFFFF_FFFF)       # the bits the register holds
        assert await tb.read(reg) == kept, f"{reg.name} readback"
    await tb.write(Reg.RING_SIZE, 1)
    await tb.write(Reg.IRQ_MASK, 0, mirror=True)
    await tb.write(Reg.ERROR, 0)
    await tb.write(Reg.RING_HEAD, 0x12345)                         # 16 bits kept
    await tb.write(Reg.RING_HEAD, 0)
    got = await tb.csr.write(Reg.RING_BASE + 1, b"\xAB")           # byte lane 1 only
    assert got.resp == AxiResp.OKAY
    want = tb.golden.read_csr(Reg.RING_BASE) & ~0xFF00 | 0xAB00
    tb.golden.write_csr(Reg.RING_BASE, want)
    await tb.write(Reg.CTRL, Ctrl.ABORT)                           # idle: nothing happens
    await tb.check_registers("after writes")
    for reg in (Reg.ID, Reg.STATUS, Reg.RING_TAIL, Reg.PERF_DONE):  # read-only: ignored, OKAY
        await tb.write(reg, 0xFFFF_FFFF, mirror=False)
    await tb.check_registers("after writes to read-only registers")
    for addr in (0x028, 0x02C, 0x048, 0x07C, 0x0A0, 0x100, 0xFFC):
        await tb.read(addr, resp=AxiResp.DECERR)
        await tb.write(addr, 0, resp=AxiResp.DECERR, mirror=False)
    for reg in (Reg.PERF_BUSY, Reg.PERF_MAC, Reg.PERF_DMA_STALL):
        assert await tb.read64(reg) == 0, f"{reg.name} counted in idle"


@cocotb.test()
@cocotb.parametrize(stall=[False, True])
async def test_malformed_descriptors(dut, stall):
    """Every malformed case of tests/test_device.py (and more corners), each followed by a good GEMM:
    the status word is golden ``check()``'s code, nothing else in memory changes (the whole RAM is
    compared with the golden device's), the registers equal golden's."""
    tb = EngineTB(dut, stall, seed_offset=1)
    await tb.start()
    guard = tb.rng.randbytes(MEM_SIZE)
    tb.write_mem(0, guard)
    await tb.setup_ring(size=8)
    for index, desc in enumerate(MALFORMED):
        raw = desc.pack()
        want = check(*Descriptor.unpack(raw), tb.config, WINDOW)
        start = tb.head
        await tb.submit([desc, gemm(seed=index)])
        got = tb.status(start)
        assert got == STATUS_DONE | want, (f"case {index} {desc}: status {got:#x} != "
                                           f"{STATUS_DONE | want:#x} ({want.name})")
        assert tb.status(start + 1) == STATUS_DONE | ErrorCode.OK, f"case {index}: next GEMM failed"
        tb.check_memory(f"case {index}")
    await tb.check_registers("after the malformed cases")
    tb.check_executor()
    assert not tb.expected, f"{len(tb.expected)} GEMMs never reached the executor"


@cocotb.test()
async def test_fence(dut):
    tb = EngineTB(dut, seed_offset=2)
    await tb.start()
    await tb.setup_ring(size=1)
    await tb.submit([Descriptor(opcode=Opcode.FENCE)])
    assert tb.status(0) == STATUS_DONE | ErrorCode.OK
    assert tb.accepted == 0, "a FENCE reached the executor"
    tb.check_memory("fence")
    await tb.check_registers("fence")


@cocotb.test()
@cocotb.parametrize(stall=[False, True])
async def test_ring_wraps(dut, stall):
    """``commands`` descriptors (GEMMs, FENCEs, some malformed) through an 8-slot ring in doorbell
    batches of 1..8, with random executor latencies, the executor reading A and writing D through the
    engine's DMA mux (exec_dma_*, window = WINDOW registers); registers, memory and IRQ equal golden's after
    each batch; PERF_DONE, PERF_BUSY and PERF_MAC plausible (PERF_MAC exact)."""
    tb = EngineTB(dut, stall, seed_offset=3)
    tb.use_dma = True
    await tb.start()
    tb.write_mem(0, tb.rng.randbytes(MEM_SIZE))
    await tb.setup_ring(size=8)
    await tb.write(Reg.PERF_CLEAR, 1)
    start_cycle = get_sim_time(unit="ns")
    sent = 0
    while sent < tb.commands:
        batch = []
        for _ in range(min(tb.rng.randint(1, 8), tb.commands - sent)):
            kind = tb.rng.random()
            if kind < 0.6:
                batch.append(gemm(m=tb.rng.randint(1, 8), seed=tb.rng.getrandbits(32),
                                  scale=tb.rng.randint(-128, 127), chunk=tb.rng.randint(0, 4096)))
            elif kind < 0.8:
                batch.append(Descriptor(opcode=Opcode.FENCE))
            else:
                batch.append(tb.rng.choice(MALFORMED))
        await tb.submit(batch)
        sent += len(batch)
        tb.check_memory(f"after {sent} commands")
        await tb.check_registers(f"after {sent} commands")
    elapsed = (get_sim_time(unit="ns") - start_cycle) // 10
    tb.check_executor()
    assert tb.dma_ops > 0, "the executor model never used the DMA"
    done, busy = await tb.read(Reg.PERF_DONE), await tb.read64(Reg.PERF_BUSY)
    mac = await tb.read64(Reg.PERF_MAC)
    assert done == tb.commands, f"PERF_DONE {done} != {tb.commands}"
    # Each command takes at least its 8-beat fetch, 4 check cycles and a write-back.
    assert 16 * tb.commands <= busy <= elapsed, f"PERF_BUSY {busy} outside [{16 * tb.commands}, {elapsed}]"
    assert mac == tb.mac_sum, f"PERF_MAC {mac} != {tb.mac_sum} driven"
    stall_cycles = await tb.read64(Reg.PERF_DMA_STALL)
    assert stall_cycles <= busy, f"PERF_DMA_STALL {stall_cycles} > PERF_BUSY {busy}"
    await tb.write(Reg.PERF_CLEAR, 0)
    for reg in (Reg.PERF_BUSY, Reg.PERF_MAC, Reg.PERF_DMA_STALL):
        assert await tb.read64(reg) == 0, f"{reg.name} not cleared"
    assert await tb.read(Reg.PERF_DONE) == 0


@cocotb.test()
async def test_irq_mask_and_w1c(dut):
    tb = EngineTB(dut, seed_offset=4)
    await tb.start()
    await tb.setup_ring(size=4, mask=0)
    await tb.submit([Descriptor(opcode=Opcode.FENCE)])
    await _settle(tb)
    assert await tb.read(Reg.IRQ_STATUS) == Irq.DONE
    assert int(dut.irq.value) == 0, "irq with IRQ_MASK 0"
    await tb.write(Reg.IRQ_MASK, Irq.ERROR)
    await _settle(tb)
    assert int(dut.irq.value) == 0, "irq from DONE masked off"
    await tb.submit([gemm(m=0)])
    await _settle(tb)
    assert int(dut.irq.value) == 1, "no irq from ERROR"
    assert await tb.read(Reg.STATUS) == Status.ERROR
    assert await tb.read(Reg.ERROR) == ErrorCode.BAD_DIMENSION
    await tb.write(Reg.IRQ_STATUS, Irq.DONE)                      # W1C: ERROR stays
    await _settle(tb)
    got = await tb.read(Reg.IRQ_STATUS)
    assert got == Irq.ERROR and int(dut.irq.value) == 1, f"after W1C of DONE: IRQ_STATUS {got:#x}"
    await tb.write(Reg.IRQ_STATUS, Irq.ERROR)
    await _settle(tb)
    assert int(dut.irq.value) == 0, "irq after W1C"
    await tb.write(Reg.ERROR, 0)
    await tb.write(Reg.IRQ_MASK, Irq.DONE)
    await tb.submit([gemm()])
    await _settle(tb)
    assert int(dut.irq.value) == 1, "no irq from DONE"
    await tb.check_registers("irq")


@cocotb.test()
async def test_executor_codes(dut):
    """The executor's code is the command's status; ERROR and IRQ follow it."""
    tb = EngineTB(dut, seed_offset=5)
    await tb.start()
    await tb.setup_ring(size=4)
    for code in (ErrorCode.READ_ERROR, ErrorCode.WRITE_ERROR, ErrorCode.OK):
        tb.answer = lambda desc, code=code: code
        start = tb.head
        await tb.submit([gemm()])
        assert tb.status(start) == STATUS_DONE | code, f"status {tb.status(start):#x}, want {code.name}"
    assert await tb.read(Reg.ERROR) == ErrorCode.WRITE_ERROR
    assert await tb.read(Reg.IRQ_STATUS) == Irq.DONE | Irq.ERROR


@cocotb.test()
@cocotb.parametrize(stall=[False, True])
async def test_abort(dut, stall):
    """CTRL.ABORT mid-GEMM (the executor never answers): ``abort`` pulses, the GEMM completes ABORTED,
    the ring goes on with the next command, which works."""
    tb = EngineTB(dut, stall, seed_offset=6)
    await tb.start()
    await tb.setup_ring(size=4)
    tb.hang = True
    await tb.submit([gemm(), gemm(seed=5)], wait=False)
    while tb.accepted < 1:
        await RisingEdge(dut.clk)
    await _settle(tb, 20)
    assert await tb.read(Reg.STATUS) & Status.BUSY, "not busy during the GEMM"
    tb.hang = False
    await tb.write(Reg.CTRL, Ctrl.ENABLE | Ctrl.ABORT, mirror=False)
    await tb.wait_tail(2)
    assert tb.aborts == 1, f"{tb.aborts} abort pulses"
    assert tb.status(0) == STATUS_DONE | ErrorCode.ABORTED, f"status {tb.status(0):#x}"
    assert tb.status(1) == STATUS_DONE | ErrorCode.OK, f"next command: status {tb.status(1):#x}"
    assert await tb.read(Reg.ERROR) == ErrorCode.ABORTED
    assert await tb.read(Reg.CTRL) == Ctrl.ENABLE
    tb.check_executor()


@cocotb.test()
async def test_reset_mid_command(dut):
    """A reset while the executor holds a GEMM: idle, registers back to reset values, usable."""
    tb = EngineTB(dut, seed_offset=7)
    await tb.start()
    await tb.setup_ring(size=4)
    tb.hang = True
    await tb.submit([gemm()], wait=False)
    while tb.accepted < 1:
        await RisingEdge(dut.clk)
    await _settle(tb, 10)
    tb.drop = True
    await reset(dut)
    await _settle(tb, 2)
    tb.hang = tb.drop = False
    tb.golden = _EngineGolden(tb)
    tb.golden.write_mem(0, tb.ram.read(0, MEM_SIZE))
    await tb.check_registers("after reset")
    tb.head = 0
    await tb.setup_ring(size=4)
    tb.expected = [gemm(seed=9)]
    tb.accepted = 0
    await tb.submit([gemm(seed=9)])
    assert tb.status(0) == STATUS_DONE | ErrorCode.OK
    tb.check_memory("after reset")
    await tb.check_registers("after reset and a command")


@cocotb.test()
@cocotb.parametrize(side=["read", "both"])
async def test_dma_error_on_ring(dut, side):
    """The ring in a range the RAM answers SLVERR: a failed fetch completes READ_ERROR (status written
    back), a failed write-back WRITE_ERROR (memory untouched); the ring goes on once the faults stop."""
    tb = EngineTB(dut, seed_offset=8)
    await tb.start()
    tb.write_mem(0, tb.rng.randbytes(MEM_SIZE))
    await tb.setup_ring(size=2, base=FAULT_BASE)
    tb.read_faults.on = True
    tb.write_faults.on = side == "both"
    await tb.submit([gemm()], wait=False)
    await tb.wait_tail(1)
    if side == "read":
        assert tb.status(0) == STATUS_DONE | ErrorCode.READ_ERROR, f"status {tb.status(0):#x}"
        assert await tb.read(Reg.ERROR) == ErrorCode.READ_ERROR
    else:
        assert tb.ram.read(FAULT_BASE, DESCRIPTOR_BYTES) == gemm().pack(), "a failed write-back wrote"
        assert await tb.read(Reg.ERROR) == ErrorCode.WRITE_ERROR
    assert tb.accepted == 0, "a command that was never read reached the executor"
    tb.expected.clear()
    tb.read_faults.on = tb.write_faults.on = False
    await tb.write(Reg.ERROR, 0, mirror=False)
    await tb.submit([gemm(seed=3)])
    assert tb.status(1) == STATUS_DONE | ErrorCode.OK, f"after the faults: status {tb.status(1):#x}"
    assert await tb.read(Reg.ERROR) == 0
    tb.check_executor()
