"""The host's UART inside the simulator of :class:`~fp8train.sim.driver.uart_sim.SimUart` (a cocotb module).

Loaded by the simulator that ``SimUart`` launches, never imported by user code. It resets the
design, writes the ready line and a JSON line on the inherited socket, and then runs freely:

- ``drive``: bytes from the socket go onto ``rx``, 8N1 at ``divisor`` clock cycles per bit; when none
  are waiting the socket is polled every two byte times. Each bit is inverted with probability
  ``flip_rx``.
- ``listen``: a falling edge on ``tx`` starts a byte; bits are sampled in their middles and the byte
  is written to the socket. Each data bit is inverted with probability ``flip_tx``; a stop bit so
  inverted drops the byte.

End of file on the socket ends the test, and the simulation. Both generators share one seeded
``random.Random``, so a run's errors are reproducible for a given interleaving.
"""

import json
import os
import random
import socket

import cocotb
from cocotb.triggers import FallingEdge, Timer

from fp8train.sim.driver.top import ENV_CONFIG, ENV_FD
from fp8train.sim.driver.uart_sim import READY

RESET_CYCLES = 4


class HostUart:
    def __init__(self, dut, sock: socket.socket, config: dict):
        self.dut, self.sock = dut, sock
        self.bit_ns = config["divisor"] * config["clock_ns"]
        self.flip_rx, self.flip_tx = config["flip_rx"], config["flip_tx"]
        self.rng = random.Random(config["seed"])
        self.flipped = {"rx": 0, "tx": 0}
        self.bytes = {"rx": 0, "tx": 0}

    def _flip(self, rate: float, direction: str) -> int:
        if rate and self.rng.random() < rate:
            self.flipped[direction] += 1
            return 1
        return 0

    async def drive(self) -> None:
        rx = self.dut.rx
        while True:
            try:
                data = self.sock.recv(4096, socket.MSG_DONTWAIT)
            except BlockingIOError:
                await Timer(20 * self.bit_ns, "ns")
                continue
            if not data:
                return
            for byte in data:
                self.bytes["rx"] += 1
                for bit in (0, *((byte >> i) & 1 for i in range(8)), 1):
                    rx.value = bit ^ self._flip(self.flip_rx, "rx")
                    await Timer(self.bit_ns, "ns")
                rx.value = 1

    async def listen(self) -> None:
        tx = self.dut.tx
        half = self.bit_ns // 2
        while True:
            await FallingEdge(tx)
            await Timer(half, "ns")
            if tx.value != 0:
                continue
            byte = 0
            for i in range(8):
                await Timer(self.bit_ns, "ns")
                byte |= (int(tx.value) ^ self._flip(self.flip_tx, "tx")) << i
            await Timer(self.bit_ns, "ns")
            if int(tx.value) ^ self._flip(self.flip_tx, "tx") == 1:
                self.bytes["tx"] += 1
                self.sock.sendall(bytes([byte]))


@cocotb.test()
async def serve(dut):
    """Be the host's UART until the host closes the socket."""
    config = json.loads(os.environ[ENV_CONFIG])
    sock = socket.socket(fileno=int(os.environ[ENV_FD]))
    sock.setblocking(True)
    clock_ns = config["clock_ns"]
    dut.rx.value = 1
    dut.rst.value = 1
    await Timer(RESET_CYCLES * clock_ns, "ns")
    dut.rst.value = 0
    await Timer(RESET_CYCLES * clock_ns, "ns")
    uart = HostUart(dut, sock, config)
    info = {"sim": cocotb.SIM_NAME, "sim_version": cocotb.SIM_VERSION, "clock_ns": clock_ns,
            "divisor": config["divisor"]}
    sock.sendall(READY + json.dumps(info).encode() + b"\n")
    listener = cocotb.start_soon(uart.listen())
    try:
        await uart.drive()
    finally:
        listener.cancel()
        dut._log.info("bytes %s, bits flipped %s", uart.bytes, uart.flipped)
        sock.close()
