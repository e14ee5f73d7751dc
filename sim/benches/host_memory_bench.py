"""cocotb bench: ``boards.memory.HostMemory`` through cocotbext-axi masters on both ports.

Random bursts through the AXI4 port (``dev``, the accelerator's side) and 32-bit accesses through the
AXI4-Lite port (``host``, the host link's side), with pauses on every channel, against a ``bytearray``
model, after filling the whole memory with random bytes (an SPRAM starts undefined); beats beyond the
memory answer DECERR (with unspecified data) and write nothing. Parameters (``bench_params()``):
``size`` (bytes), ``seed``, ``count`` (random operations).
"""

import itertools
import logging
import random

import cocotb
from cocotbext.axi import AxiBus, AxiLiteBus, AxiLiteMaster, AxiMaster, AxiResp, AxiBurstType

from fp8train.sim.benches.streams import bench_params, reset, start_clock


class HostMemoryTB:
    def __init__(self, dut):
        self.dut = dut
        params = bench_params()
        self.size, self.seed, self.count = params["size"], params["seed"], params["count"]
        self.model = bytearray(self.size)
        self.rng = random.Random(self.seed)
        dut._log.info("seed %d", self.seed)

    async def start(self):
        """Reset, then attach the masters."""
        dut = self.dut
        for port in ("dev", "host"):
            for signal in ("awvalid", "wvalid", "bready", "arvalid", "rready"):
                getattr(dut, f"{port}_{signal}").value = 0
        start_clock(dut)
        await reset(dut)
        self.dev = AxiMaster(AxiBus.from_prefix(dut, "dev"), dut.clk, dut.rst)
        self.host = AxiLiteMaster(AxiLiteBus.from_prefix(dut, "host"), dut.clk, dut.rst)
        for master in (self.dev, self.host):
            for part in (master.write_if, master.read_if):   # a line per transaction otherwise
                part.log.setLevel(logging.WARNING)
            # stalls on the request and response channels
            master.write_if.aw_channel.set_pause_generator(itertools.cycle([0, 0, 1]))
            master.write_if.w_channel.set_pause_generator(itertools.cycle([0, 1, 0, 0]))
            master.read_if.r_channel.set_pause_generator(itertools.cycle([0, 1, 0]))
        await self.write(self.dev, 0, self.rng.randbytes(self.size), "fill")

    async def check_read(self, master, address, length, label):
        got = await master.read(address, length)
        want = bytes(self.model[address:address + length])
        assert got.resp == AxiResp.OKAY, f"{label} read {address:#x}+{length}: response {got.resp!r}"
        assert got.data == want, (f"{label} read {address:#x}+{length} (seed {self.seed}): "
                                  f"{got.data.hex()} != {want.hex()}")

    async def write(self, master, address, data, label):
        resp = await master.write(address, data)
        assert resp.resp == AxiResp.OKAY, f"{label} write {address:#x}+{len(data)}: response {resp.resp!r}"
        self.model[address:address + len(data)] = data


@cocotb.test()
async def test_random_bursts_and_host_words(dut):
    tb = HostMemoryTB(dut)
    await tb.start()
    rng = tb.rng
    for _ in range(tb.count):
        kind = rng.choice(["dev_write", "dev_read", "host_write", "host_read"])
        if kind.startswith("dev"):
            length = rng.randint(1, 300)
            address = rng.randrange(0, tb.size - length)
            if kind == "dev_write":
                await tb.write(tb.dev, address, rng.randbytes(length), "dev")
            else:
                await tb.check_read(tb.dev, address, length, "dev")
        else:
            address = rng.randrange(0, tb.size, 4)
            if kind == "host_write":
                await tb.write(tb.host, address, rng.randbytes(4), "host")
            else:
                await tb.check_read(tb.host, address, 4, "host")
    # Everything written through one port reads back through the other.
    await tb.check_read(tb.dev, 0, tb.size, "dev (whole memory)")
    for address in range(0, tb.size, 4 * max(1, tb.size // 256)):
        await tb.check_read(tb.host, address, 4, "host")


@cocotb.test()
async def test_outside_and_bad_bursts_answer_decerr(dut):
    tb = HostMemoryTB(dut)
    await tb.start()
    await tb.write(tb.dev, 0, bytes(range(64)), "dev")
    got = await tb.dev.read(tb.size, 16)
    assert got.resp == AxiResp.DECERR, f"read past the end: {got!r}"     # its data is unspecified
    resp = await tb.dev.write(tb.size + 8, bytes(8))
    assert resp.resp == AxiResp.DECERR, f"write past the end: {resp!r}"
    resp = await tb.dev.write(0, bytes(8), burst=AxiBurstType.FIXED)
    assert resp.resp == AxiResp.DECERR, f"FIXED burst write: {resp!r}"
    resp = await tb.dev.write(8, bytes(2), size=1)
    assert resp.resp == AxiResp.DECERR, f"narrow (2-byte) write: {resp!r}"
    await tb.check_read(tb.dev, 0, 64, "dev (after refused writes)")
