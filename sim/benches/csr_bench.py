"""cocotb bench: ``hw.bus.csr.AxiLiteCsr`` behind cocotbext-axi's ``AxiLiteMaster``.

The DUT is a small register file around the CSR slave (``tests/test_csr.py``); its map comes in
through ``bench_params()``: ``regs`` maps a byte address (as a string) to ``[kind, reset value]``,
``kind`` ``"rw"`` or ``"ro"`` (writes ignored, response OKAY); every other address answers DECERR.
Also ``seed`` and ``ops`` (random operations per test).
"""

import itertools
import random

import cocotb
from cocotb.triggers import ClockCycles, RisingEdge, with_timeout
from cocotbext.axi import AxiLiteBus, AxiLiteMaster, AxiResp

from fp8train.sim.benches.streams import bench_params, long_run, reset, start_clock

TIMEOUT_US = 2000
STALLS = [None, "random"]


def pauses(kind: str | None, rng: random.Random):
    """A cocotbext-axi pause generator: never, or pausing 40 % of cycles in random runs."""
    if kind is None:
        return None
    return (rng.random() < 0.4 for _ in itertools.count())


class CsrTB:
    """Clock, reset, the AXI4-Lite master and a reference model of the register file."""

    def __init__(self, dut, stall: str | None = None, seed_offset: int = 0):
        self.dut = dut
        params = bench_params()
        self.regs = {int(addr): (kind, init) for addr, (kind, init) in params["regs"].items()}
        self.ops = params["ops"] * (10 if long_run() else 1)
        self.seed = params["seed"] + seed_offset
        dut._log.info("seed %d, stall %s", self.seed, stall)
        self.rng = random.Random(self.seed)
        self.model = {addr: init for addr, (_, init) in self.regs.items()}
        # In reset before the first edge: under Icarus, an X reset at time 0 leaves the slave's
        # handshakes X, which cocotbext-axi's models cannot read.
        dut.rst.value = 1
        start_clock(dut)
        self.axil = AxiLiteMaster(AxiLiteBus.from_prefix(dut, "s_axil"), dut.clk, dut.rst)
        channels = (self.axil.write_if.aw_channel, self.axil.write_if.w_channel,
                    self.axil.write_if.b_channel, self.axil.read_if.ar_channel,
                    self.axil.read_if.r_channel)
        for channel in channels:
            channel.set_pause_generator(pauses(stall, self.rng))
        self.width = len(dut.s_axil_wdata) // 8
        self.span = 1 << len(dut.s_axil_awaddr)

    def mapped(self) -> list[int]:
        return sorted(self.regs)

    def unmapped(self) -> list[int]:
        return [addr for addr in range(0, self.span, self.width) if addr not in self.regs]

    def expect_write(self, addr: int, data: bytes) -> int:
        """Apply a write to the model; the response it must get."""
        base = addr - addr % self.width
        if base not in self.regs:
            return AxiResp.DECERR
        if self.regs[base][0] == "rw":
            value = bytearray(self.model[base].to_bytes(self.width, "little"))
            offset = addr - base
            value[offset:offset + len(data)] = data
            self.model[base] = int.from_bytes(value, "little")
        return AxiResp.OKAY

    async def write(self, addr: int, data: bytes) -> None:
        want = self.expect_write(addr, data)
        got = await with_timeout(self.axil.write(addr, data), TIMEOUT_US, "us")
        assert got.resp == want, f"write {addr:#05x} <- {data.hex()}: response {got.resp!r} != {want!r}"

    async def read(self, addr: int) -> None:
        got = await with_timeout(self.axil.read(addr, self.width), TIMEOUT_US, "us")
        if addr in self.regs:
            want = self.model[addr].to_bytes(self.width, "little")
            assert got.resp == AxiResp.OKAY, f"read {addr:#05x}: response {got.resp!r} != OKAY"
            assert got.data == want, f"read {addr:#05x}: {got.data.hex()} != model {want.hex()}"
        else:
            assert got.resp == AxiResp.DECERR, f"read {addr:#05x}: response {got.resp!r} != DECERR"

    async def check_all(self) -> None:
        for addr in self.mapped():
            await self.read(addr)

    def random_word(self) -> bytes:
        return self.rng.getrandbits(8 * self.width).to_bytes(self.width, "little")


async def start(dut, stall=None, seed_offset=0) -> CsrTB:
    tb = CsrTB(dut, stall, seed_offset)
    await reset(dut)
    return tb


@cocotb.test()
async def test_reset_values_and_word_access(dut):
    """Reset values read back; full-word writes land in RW registers only; RO writes are OKAY."""
    tb = await start(dut)
    await tb.check_all()
    for addr in tb.mapped():
        await tb.write(addr, tb.random_word())
    await tb.check_all()


@cocotb.test()
async def test_byte_strobes(dut):
    """Every byte and half-word position of every register, then a word read of each."""
    tb = await start(dut)
    for addr in tb.mapped():
        for size in (1, 2):
            for offset in range(0, tb.width, size):
                await tb.write(addr + offset, bytes(tb.rng.getrandbits(8) for _ in range(size)))
                await tb.read(addr)


@cocotb.test()
async def test_unmapped_is_decerr(dut):
    """Reads and writes of holes and of the space past the map answer DECERR and change nothing."""
    tb = await start(dut)
    for addr in tb.mapped():
        await tb.write(addr, tb.random_word())
    holes = tb.unmapped()
    for addr in holes[:8] + tb.rng.sample(holes, 8) + [holes[-1]]:
        await tb.write(addr, tb.random_word())
        await tb.read(addr)
    await tb.check_all()


@cocotb.test()
@cocotb.parametrize(stall=STALLS)
async def test_random_sequence(dut, stall):
    """Random reads and writes, one after the other, with random pauses on every channel."""
    tb = await start(dut, stall, seed_offset=1)
    candidates = tb.mapped() + tb.unmapped()[:4]
    for _ in range(tb.ops):
        addr = tb.rng.choice(candidates)
        if tb.rng.random() < 0.5:
            size = tb.rng.choice([1, 2, tb.width])
            offset = tb.rng.randrange(0, tb.width, size)
            await tb.write(addr + offset, bytes(tb.rng.getrandbits(8) for _ in range(size)))
        else:
            await tb.read(addr)
    await tb.check_all()


@cocotb.test()
@cocotb.parametrize(stall=STALLS)
async def test_back_to_back(dut, stall):
    """Many operations issued at once (the master pipelines AW, W and AR): a batch of writes to
    distinct addresses, a batch of reads, and a mixed batch of writes and reads of other registers
    (reads and writes contend for the slave). Without pauses the slave must sustain one access per
    6 cycles or better."""
    tb = await start(dut, stall, seed_offset=2)
    mapped, holes = tb.mapped(), tb.unmapped()
    rw = [addr for addr in mapped if tb.regs[addr][0] == "rw"]
    ro = [addr for addr in mapped if tb.regs[addr][0] == "ro"]
    start_cycle = tb.cycles = 0

    async def count():
        while True:
            await RisingEdge(dut.clk)
            tb.cycles += 1
    counter = cocotb.start_soon(count())

    batch = mapped + holes[:4]
    tasks = [cocotb.start_soon(tb.write(addr, tb.random_word())) for addr in batch]
    for task in tasks:
        await task
    tasks = [cocotb.start_soon(tb.read(addr)) for addr in batch]
    for task in tasks:
        await task
    written, read = rw[: len(rw) // 2], rw[len(rw) // 2:] + ro + holes[:2]
    tasks = [cocotb.start_soon(tb.write(addr, tb.random_word())) for addr in written]
    tasks += [cocotb.start_soon(tb.read(addr)) for addr in read]
    for task in tasks:
        await task
    operations = 2 * len(batch) + len(written) + len(read)
    counter.cancel()
    if stall is None:
        assert tb.cycles - start_cycle <= 6 * operations + 10, (
            f"{operations} back-to-back accesses took {tb.cycles - start_cycle} cycles")
    await tb.check_all()
    await ClockCycles(dut.clk, 2)
