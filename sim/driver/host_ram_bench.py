"""cocotb bench of :file:`hdl/host_ram.v` alone under cocotbext-axi's ``AxiMaster`` (the ``rtl``
backend's host RAM: bursts, strobes, latency, error range, outstanding reads).

Run by ``tests/test_host_link.py`` with ``host_ram`` as the top level (``WORDS`` small); the run-time
registers are set by VPI as the host link's ``SET`` request does.
"""

import logging
import random

import cocotb
from cocotb.triggers import RisingEdge
from cocotb.utils import get_sim_time
from cocotbext.axi import AxiBus, AxiMaster, AxiResp

from fp8train.sim.benches.streams import CLOCK_NS, bench_params, reset, start_clock

log = logging.getLogger("fp8train.host_ram")


class TB:
    def __init__(self, dut):
        self.dut = dut
        start_clock(dut)
        self.axi = AxiMaster(AxiBus.from_prefix(dut, "s_axi"), dut.clk, dut.rst)
        self.bytes = bench_params()["words"] * 8

    async def start(self, **settings):
        for name, value in settings.items():
            getattr(self.dut, name).value = value
        await reset(self.dut)

    def cycles(self) -> int:
        return int(get_sim_time("ns")) // CLOCK_NS


@cocotb.test()
async def test_bursts_and_strobes(dut):
    """Writes and reads of 1..300 bytes at offsets 0..8 around a 4 KiB page end, guard bytes kept."""
    tb = TB(dut)
    await tb.start()
    seed = bench_params().get("seed", 1)
    rng = random.Random(seed)
    log.info("seed %d", seed)
    for length in (1, 2, 3, 7, 8, 9, 15, 16, 17, 63, 64, 65, 255, 256, 300, 2048 + 5):
        for offset in (0, 1, 3, 7, 8):
            base = 0x1000 - 16 + offset
            guard = bytes(rng.randrange(256) for _ in range(length + 32))
            await tb.axi.write(base - 16, guard)
            data = bytes(rng.randrange(256) for _ in range(length))
            await tb.axi.write(base, data)
            got = await tb.axi.read(base - 16, length + 32)
            want = guard[:16] + data + guard[16 + length:]
            assert got.data == want, f"length {length} offset {offset}: read back {got.data.hex()} != {want.hex()}"


@cocotb.test()
async def test_latency(dut):
    """A single-beat read and write take exactly `rd_latency`/`wr_latency` cycles more."""
    tb = TB(dut)
    times = {}
    for latency in (0, 5, 17):
        await tb.start(rd_latency=latency, wr_latency=latency)
        start = tb.cycles()
        await tb.axi.write(0x100, b"\x55" * 8)
        write = tb.cycles() - start
        start = tb.cycles()
        await tb.axi.read(0x100, 8)
        times[latency] = (write, tb.cycles() - start)
    log.info("cycles per single-beat (write, read) by latency: %s", times)
    for latency, (write, read) in times.items():
        assert write - times[0][0] == latency, f"write latency {latency}: {times}"
        assert read - times[0][1] == latency, f"read latency {latency}: {times}"


@cocotb.test()
async def test_error_range(dut):
    """Beats in [err_base, err_limit) get err_resp and leave memory alone; beyond WORDS*8, DECERR."""
    tb = TB(dut)
    for resp in (AxiResp.SLVERR, AxiResp.DECERR):
        await tb.start(err_base=0x200, err_limit=0x240, err_resp=int(resp))
        await tb.axi.write(0x1F8, bytes(range(0x50)))      # straddles the range
        assert (await tb.axi.read(0x1F8, 8)).resp == AxiResp.OKAY
        result = await tb.axi.write(0x200, b"\xAA" * 8)
        assert result.resp == resp, f"write in the error range: {result.resp!r}, want {resp!r}"
        result = await tb.axi.read(0x208, 16)
        assert result.resp == resp, f"read in the error range: {result.resp!r}, want {resp!r}"
        dut.err_limit.value = 0                            # range off: memory was not written
        await RisingEdge(dut.clk)
        got = await tb.axi.read(0x200, 0x40)
        assert got.resp == AxiResp.OKAY and got.data == bytes(0x40), got.data.hex()
        assert (await tb.axi.read(0x240, 8)).data == bytes(range(0x48, 0x50))
    await tb.start()
    assert (await tb.axi.read(tb.bytes, 8)).resp == AxiResp.DECERR
    assert (await tb.axi.write(tb.bytes - 8, bytes(16))).resp == AxiResp.DECERR


@cocotb.test()
async def test_outstanding_reads(dut):
    """Eight concurrent readers on disjoint regions, with read latency: all data correct."""
    tb = TB(dut)
    await tb.start(rd_latency=3)
    regions = [(0x400 * i, bytes((i * 7 + j) & 0xFF for j in range(0x300))) for i in range(8)]
    for addr, data in regions:
        await tb.axi.write(addr, data)
    tasks = [cocotb.start_soon(tb.axi.read(addr, len(data))) for addr, data in regions]
    for (addr, data), task in zip(regions, tasks):
        got = await task
        assert got.data == data, f"region at {addr:#x} read back wrong"
