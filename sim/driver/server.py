"""The device side of the ``rtl`` backend: a cocotb test module that serves the host protocol.

Loaded by the simulator that :class:`~fp8train.sim.driver.rtl.RtlLink` launches (``COCOTB_TEST_MODULES``),
never imported by user code. Its one test resets ``sim_top``, sends ``HELLO`` on the socket it
inherited (file descriptor ``$FP8TRAIN_LINK_FD``) and then serves requests in lock-step: the receive
blocks inside the test, so simulated time stands still while the host thinks. End of file on the
socket ends the test, and with it the simulation.

- Registers: a minimal AXI4-Lite master on the wrapper's ``s_axil_*`` ports. It drives just after a
  rising edge and samples handshakes in the ``ReadOnly`` phase before the next one, so it is correct
  under Verilator and Icarus alike. A transaction with no response after :data:`CSR_TIMEOUT_CYCLES`
  fails the request.
- Memory: backdoor into ``ram.mem`` without simulated time. Transfers of up to
  ``$FP8TRAIN_LINK_VPI_WORDS`` words use cached per-word VPI handles; larger ones go through a hex file
  with ``$readmemh``/``$writememh`` (the RAM's ``bd_*`` registers).
- ``WAIT_IRQ``: ``First(RisingEdge(irq), Timer(...))``, so Python sleeps until one of them fires
  (``ClockCycles`` would wake it on every edge, DESIGN.md §8).
"""

import json
import os
import socket
import traceback

import cocotb
import numpy as np
from cocotb.clock import Clock
from cocotb.handle import Immediate
from cocotb.triggers import First, ReadOnly, ReadWrite, RisingEdge, Timer
from cocotb.utils import get_sim_time

from fp8train.sim.driver.top import ENV_CONFIG, ENV_FD
from fp8train.sim.driver.wire import REQUEST, VERSION, Op, Setting, Status, pack_reply

__all__ = ["CSR_TIMEOUT_CYCLES", "serve"]

#: Cycles a register access may wait for its handshakes before the request fails.
CSR_TIMEOUT_CYCLES = 10_000
#: ReadWrite steps a backdoor transfer may take before the request fails.
BACKDOOR_STEPS = 8
#: Cycles of reset before HELLO.
RESET_CYCLES = 4

_HEX = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)
_SETTINGS = {Setting.READ_LATENCY: "rd_latency", Setting.WRITE_LATENCY: "wr_latency",
             Setting.ERR_BASE: "err_base", Setting.ERR_LIMIT: "err_limit", Setting.ERR_RESP: "err_resp"}


class RequestError(Exception):
    """The request cannot be served as asked (answered BAD_REQUEST)."""


class BusResponse(Exception):
    def __init__(self, resp: int):
        self.resp = resp


def _to_hex(data: bytes) -> bytes:
    """``$readmemh`` text of little-endian 64-bit words: one 16-digit word per line."""
    octets = np.frombuffer(data, dtype=np.uint8).reshape(-1, 8)[:, ::-1]
    text = np.empty((octets.shape[0], 17), dtype=np.uint8)
    text[:, 0:16:2] = _HEX[octets >> 4]
    text[:, 1:16:2] = _HEX[octets & 15]
    text[:, 16] = ord("\n")
    return text.tobytes()


def _from_hex(text: bytes, words: int) -> bytes:
    """Bytes of the ``words`` words in ``$writememh`` output: one word per line, with ``//``
    comment lines (Icarus writes ``// 0x<address>`` every so often) and ``@`` address lines skipped."""
    lines = [line.split(b"//", 1)[0].strip() for line in text.splitlines()]
    lines = [line for line in lines if line and not line.startswith(b"@")]
    if len(lines) != words:
        raise RuntimeError(f"$writememh wrote {len(lines)} words, not {words}")
    if all(len(line) == 16 for line in lines):
        return np.frombuffer(bytes.fromhex(b"".join(lines).decode()), dtype=">u8").astype("<u8").tobytes()
    return np.array([int(line, 16) for line in lines], dtype="<u8").tobytes()


class Server:
    def __init__(self, dut, sock: socket.socket, config: dict):
        self.dut = dut
        self.sock = sock
        self.clock_ns = config["clock_ns"]
        self.ram_bytes = config["ram_bytes"]
        self.vpi_words = config.get("vpi_words", 128)
        self.xfer = config["xfer_file"]
        self.clk = dut.clk
        self.rising = RisingEdge(dut.clk)
        self.ram = dut.ram
        self.words = {}
        self.bd_count = 0
        self.has_wstrb = hasattr(dut, "s_axil_wstrb")
        self.wstrb_ones = (1 << len(dut.s_axil_wstrb)) - 1 if self.has_wstrb else 0

    # ---- framing ------------------------------------------------------------------------------
    def _recv(self, nbytes: int) -> bytes | None:
        buf = bytearray(nbytes)
        view = memoryview(buf)
        got = 0
        while got < nbytes:
            n = self.sock.recv_into(view[got:])
            if n == 0:
                return None
            got += n
        return bytes(buf)

    def _send(self, status: int, value: int = 0, payload: bytes = b"") -> None:
        self.sock.sendall(pack_reply(status, value, payload))

    # ---- session ------------------------------------------------------------------------------
    async def run(self, info: dict) -> None:
        dut = self.dut
        for name in ("awvalid", "wvalid", "bready", "arvalid", "rready", "awaddr", "araddr", "wdata"):
            getattr(dut, f"s_axil_{name}").value = 0
        dut.rst.value = 1
        for _ in range(RESET_CYCLES):
            await self.rising
        dut.rst.value = 0
        await self.rising
        self._send(Status.OK, VERSION, json.dumps(info).encode())
        handlers = {Op.READ_CSR: self.read_csr, Op.WRITE_CSR: self.write_csr, Op.READ_MEM: self.read_mem,
                    Op.WRITE_MEM: self.write_mem, Op.WAIT_IRQ: self.wait_irq, Op.TICK: self.tick,
                    Op.CYCLES: self.cycles, Op.SET: self.set}
        while True:
            header = self._recv(REQUEST.size)
            if header is None:
                return
            op, length, addr, arg = REQUEST.unpack(header)
            payload = self._recv(length) if length else b""
            if payload is None:
                return
            handler = handlers.get(op)
            try:
                if handler is None:
                    raise RequestError(f"unknown op {op}")
                value, data = await handler(addr, arg, payload)
            except RequestError as error:
                self._send(Status.BAD_REQUEST, 0, str(error).encode())
            except BusResponse as error:
                self._send(Status.BUS_ERROR, error.resp)
            except Exception:
                self._send(Status.FAILED, 0, traceback.format_exc().encode())
            else:
                self._send(Status.OK, value, data)

    # ---- registers ----------------------------------------------------------------------------
    async def write_csr(self, addr, value, _):
        d = self.dut
        await self.rising
        d.s_axil_awaddr.value = addr
        d.s_axil_wdata.value = value
        if self.has_wstrb:
            d.s_axil_wstrb.value = self.wstrb_ones
        d.s_axil_awvalid.value = 1
        d.s_axil_wvalid.value = 1
        d.s_axil_bready.value = 1
        aw = w = False
        for _ in range(CSR_TIMEOUT_CYCLES):
            await ReadOnly()
            aw_now = not aw and d.s_axil_awready.value == 1
            w_now = not w and d.s_axil_wready.value == 1
            b_now = d.s_axil_bvalid.value == 1
            resp = int(d.s_axil_bresp.value) if b_now else 0
            await self.rising
            if aw_now:
                aw = True
                d.s_axil_awvalid.value = 0
            if w_now:
                w = True
                d.s_axil_wvalid.value = 0
            if b_now:
                d.s_axil_bready.value = 0
                if resp:
                    raise BusResponse(resp)
                return 0, b""
        for name in ("awvalid", "wvalid", "bready"):
            getattr(d, f"s_axil_{name}").value = 0
        raise RuntimeError(f"write of {addr:#x}: no response in {CSR_TIMEOUT_CYCLES} cycles")

    async def read_csr(self, addr, _, __):
        d = self.dut
        await self.rising
        d.s_axil_araddr.value = addr
        d.s_axil_arvalid.value = 1
        d.s_axil_rready.value = 1
        ar = False
        for _ in range(CSR_TIMEOUT_CYCLES):
            await ReadOnly()
            ar_now = not ar and d.s_axil_arready.value == 1
            r_now = d.s_axil_rvalid.value == 1
            if r_now:
                data, resp = int(d.s_axil_rdata.value), int(d.s_axil_rresp.value)
            await self.rising
            if ar_now:
                ar = True
                d.s_axil_arvalid.value = 0
            if r_now:
                d.s_axil_rready.value = 0
                if resp:
                    raise BusResponse(resp)
                return data, b""
        d.s_axil_arvalid.value = 0
        d.s_axil_rready.value = 0
        raise RuntimeError(f"read of {addr:#x}: no response in {CSR_TIMEOUT_CYCLES} cycles")

    # ---- time ---------------------------------------------------------------------------------
    async def wait_irq(self, _, cycles, __):
        irq = self.dut.irq
        if irq.value != 1 and cycles > 0:
            await First(RisingEdge(irq), Timer(cycles * self.clock_ns, "ns"))
        return int(irq.value == 1), b""

    async def tick(self, _, cycles, __):
        if cycles > 0:
            await Timer(cycles * self.clock_ns, "ns")
        return 0, b""

    async def cycles(self, _, __, ___):
        return int(get_sim_time("ns")) // self.clock_ns, b""

    async def set(self, setting, value, _):
        try:
            name = _SETTINGS[Setting(setting)]
        except ValueError:
            raise RequestError(f"unknown setting {setting}") from None
        getattr(self.ram, name).set(Immediate(value))
        await ReadWrite()
        return 0, b""

    # ---- memory -------------------------------------------------------------------------------
    def _span(self, addr: int, nbytes: int) -> tuple[int, int]:
        if addr < 0 or nbytes < 0 or addr + nbytes > self.ram_bytes:
            raise RequestError(f"[{addr:#x}, {addr + nbytes:#x}) is outside the host RAM "
                               f"({self.ram_bytes:#x} bytes)")
        return addr // 8, -(-(addr + nbytes) // 8)

    def _word(self, index: int):
        handle = self.words.get(index)
        if handle is None:
            handle = self.words[index] = self.ram.mem[index]
        return handle

    async def _load(self, first: int, data: bytes) -> None:
        words = len(data) // 8
        if words <= self.vpi_words:
            # Immediate (vpiNoDelay): Verilator loses an inertial write to a just-made element
            # handle when the task runs in a value-change callback (after RisingEdge).
            values = np.frombuffer(data, dtype="<u8").tolist()
            for index, value in enumerate(values, first):
                self._word(index).set(Immediate(value))
        else:
            with open(self.xfer, "wb") as file:
                file.write(_to_hex(data))
            await self._backdoor("bd_load", first, first + words - 1)
            return
        await ReadWrite()

    async def _dump(self, first: int, words: int) -> bytes:
        if words <= self.vpi_words:
            return np.array([int(self._word(i).value) for i in range(first, first + words)],
                            dtype="<u8").tobytes()
        await self._backdoor("bd_dump", first, first + words - 1)
        with open(self.xfer, "rb") as file:
            return _from_hex(file.read(), words)

    async def _backdoor(self, trigger: str, first: int, last: int) -> None:
        """Run the RAM's ``$readmemh`` (``bd_load``) or ``$writememh`` (``bd_dump``) on words
        ``first..last`` and wait, in ``ReadWrite`` steps of the current time step, until it is done.
        (Icarus applies cocotb's writes only at the next ``ReadWrite``, and the block runs after.)"""
        ram = self.ram
        ram.bd_first.value = first
        ram.bd_last.value = last
        self.bd_count += 1
        getattr(ram, trigger).value = int(getattr(ram, trigger).value) + 1
        for _ in range(BACKDOOR_STEPS):
            await ReadWrite()
            if int(ram.bd_done.value) == self.bd_count:
                return
        raise RuntimeError(f"the RAM backdoor ({trigger}) did not run within {BACKDOOR_STEPS} steps")

    async def read_mem(self, addr, nbytes, _):
        first, end = self._span(addr, nbytes)
        if nbytes == 0:
            return 0, b""
        data = await self._dump(first, end - first)
        offset = addr - first * 8
        return 0, data[offset:offset + nbytes]

    async def write_mem(self, addr, _, data):
        first, end = self._span(addr, len(data))
        if not data:
            return 0, b""
        head, tail = addr - first * 8, end * 8 - addr - len(data)
        if head or tail:                       # keep the bytes around an unaligned span
            whole = bytearray(8 * (end - first))
            whole[:8] = await self._dump(first, 1)
            whole[-8:] = await self._dump(end - 1, 1)
            whole[head:head + len(data)] = data
            data = bytes(whole)
        await self._load(first, data)
        return 0, b""


@cocotb.test()
async def serve(dut):
    """Serve the host protocol on the inherited socket until the host closes it."""
    config = json.loads(os.environ[ENV_CONFIG])
    sock = socket.socket(fileno=int(os.environ[ENV_FD]))
    sock.setblocking(True)
    if config["clock"] == "cocotb":
        Clock(dut.clk, config["clock_ns"], unit="ns").start()
    info = {"version": VERSION, "sim": cocotb.SIM_NAME, "sim_version": cocotb.SIM_VERSION,
            "clock": config["clock"], "clock_ns": config["clock_ns"], "ram_bytes": config["ram_bytes"]}
    try:
        await Server(dut, sock, config).run(info)
    finally:
        sock.close()
