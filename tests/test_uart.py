# amaranth: UnusedElaboratable=no
"""The serial host link's parts: the frame format (fp8train.frames), the UART receiver and transmitter and
the frame parser under cocotb (both simulators), the bridge's parameters, and SerialLink's retry rules
against a scripted board."""

import os
import select
import struct
import threading

import pytest
from amaranth.hdl import Module, Signal
from amaranth.sim import Simulator

from fp8train.boards.bridge import FrameParser, ReplyFramer, UartHostBridge
from fp8train.boards.uart import UartRx, UartTx, baud_divisor, crc16_step
from fp8train.frames import (IRQ_LEVEL, SYNC_REQUEST, Op, Status, crc16, info_word, pack_reply, pack_request,
                             parse_info)
from fp8train.serial import SerialLink
from fp8train.sim.benches import harness
from fp8train.sim.driver.link import BusError, LinkError

ICARUS = os.environ.get("SIM") == "icarus"
LONG = os.environ.get("FP8TRAIN_LONG") == "1"


# ---- frame format --------------------------------------------------------------------------------
def test_crc16_is_ccitt_false():
    """Check value of CRC-16/CCITT-FALSE (the CRC catalogue's 0x29B1), and the zero residue of a frame."""
    assert crc16(b"123456789") == 0x29B1
    frame = pack_request(Op.WRITE_MEM, 7, 0x100, [1, 2, 3])
    assert frame[0] == SYNC_REQUEST and crc16(frame[1:]) == 0 and crc16(frame[1:-2]) != 0


def test_crc16_step_matches_python():
    m = Module()
    crc, byte, out = Signal(16), Signal(8), Signal(16)
    m.d.comb += out.eq(crc16_step(crc, byte))
    sim = Simulator(m)

    async def bench(ctx):
        for value in range(0, 1 << 16, 251):
            for data in (0x00, 0x5A, value & 0xFF, 0xFF):
                ctx.set(crc, value)
                ctx.set(byte, data)
                assert ctx.get(out) == crc16(bytes([data]), value), (value, data)
    sim.add_testbench(bench)
    sim.run()


def test_info_word_round_trip():
    assert parse_info(info_word(1 << 17, 64)) == {"version": 1, "mem_size": 1 << 17, "max_words": 64}


# ---- parameters ----------------------------------------------------------------------------------
@pytest.mark.parametrize("divisor", [3, 1 << 17, 8.0, True])
def test_uart_divisor_checked(divisor):
    for unit in (UartRx, UartTx):
        with pytest.raises(ValueError, match=rf"^divisor must be an integer from 4 to 65536 clock cycles per bit, "
                                             rf"not {divisor!r}$"):
            unit(divisor=divisor)


def test_baud_divisor():
    assert baud_divisor(6e6, 115200) == 52 and baud_divisor(12.5e6, 115200) == 109
    with pytest.raises(ValueError, match=r"^1000000 baud from a 12\.5 MHz clock: the nearest divisor 12 is 4\.2% off"):
        baud_divisor(12.5e6, 1_000_000)
    with pytest.raises(ValueError, match=r"^3000000 baud needs at least 4 clock cycles per bit"):
        baud_divisor(6e6, 3_000_000)
    with pytest.raises(ValueError, match=r"^baud must be a positive integer, not 0$"):
        baud_divisor(6e6, 0)


@pytest.mark.parametrize("max_words", [0, 256, 1.5])
def test_bridge_parameters_checked(max_words):
    with pytest.raises(ValueError, match=rf"^max_words must be an integer from 1 to 255, not {max_words!r}$"):
        UartHostBridge(mem_size=4096, divisor=8, max_words=max_words)
    with pytest.raises(ValueError, match=r"^mem_size must be a power of two from 64 to 2\*\*24 bytes, not 1000$"):
        UartHostBridge(mem_size=1000, divisor=8)
    with pytest.raises(ValueError, match=r"^timeout must be a positive number of clock cycles, not 0$"):
        FrameParser(max_words=4, timeout=0)
    with pytest.raises(ValueError, match=r"^max_words must be an integer from 1 to 255"):
        ReplyFramer(max_words=0)


# ---- gateware under cocotb -----------------------------------------------------------------------
DIVISOR = 4
COUNT = 8 if ICARUS else 60


@pytest.mark.rtl
def test_uart_rx():
    harness.run(UartRx(divisor=DIVISOR), "uart_rx", "uart_bench", testcase="test_rx",
                params={"divisor": DIVISOR, "seed": 3, "count": COUNT * (10 if LONG else 1)})


@pytest.mark.rtl
def test_uart_tx():
    harness.run(UartTx(divisor=DIVISOR), "uart_tx", "uart_bench", testcase="test_tx",
                params={"divisor": DIVISOR, "seed": 4, "count": COUNT * (10 if LONG else 1)})


@pytest.mark.rtl
def test_frame_parser():
    max_words, timeout = 4, 100
    harness.run(FrameParser(max_words=max_words, timeout=timeout), "frame_parser", "uart_bench",
                testcase="test_parser", params={"max_words": max_words, "timeout": timeout, "seed": 5,
                                                "count": (6 if ICARUS else 40) * (10 if LONG else 1)})


# ---- SerialLink's retry rules against a scripted board -------------------------------------------
class ScriptedBoard:
    """A byte stream answering request frames like the bridge (registers and memory from dicts), with
    ``faults``: per request, "corrupt" (a bit of the reply inverted), "drop" (no reply), "error" (a
    BAD_CRC reply) or None; ``irq`` is the interrupt line's level."""

    def __init__(self, faults=(), mem_size=4096, max_words=4):
        self.faults, self.mem_size, self.max_words = list(faults), mem_size, max_words
        self.regs, self.mem = {0: 0xF8A7_0001}, {}
        self.out = bytearray()
        self.executed = []
        self.irq = False
        self.timeout = 0.0

    def write(self, data):
        data = bytes(data)
        op, seq, count, addr = struct.unpack_from("<BBBI", data, 1)
        assert data[0] == SYNC_REQUEST and crc16(data[1:]) == 0
        words = list(struct.unpack_from(f"<{count}I", data, 8)) if op in (Op.WRITE_CSR, Op.WRITE_MEM) else []
        fault = self.faults.pop(0) if self.faults else None
        if fault == "drop":
            return
        if fault == "error":
            self.out += pack_reply(Status.BAD_CRC, seq)
            return
        self.executed.append((op, seq))
        data_out, status = [], Status.OK
        if op == Op.STATUS:
            data_out = [info_word(self.mem_size, self.max_words)]
        elif op == Op.READ_CSR:
            if addr in self.regs:
                data_out = [self.regs[addr]]
            else:
                status = Status.DECERR
        elif op == Op.WRITE_CSR:
            self.regs[addr] = words[0]
        elif op == Op.READ_MEM:
            data_out = [self.mem.get(addr + 4 * i, 0) for i in range(count)]
        else:
            self.mem.update({addr + 4 * i: w for i, w in enumerate(words)})
        reply = bytearray(pack_reply(status | (IRQ_LEVEL if self.irq else 0), seq, data_out))
        if fault == "corrupt":
            reply[-3] ^= 0x04
        self.out += reply

    def read(self, size):
        data, self.out = bytes(self.out[:size]), self.out[size:]
        return data


def _scripted_link(board, **kwargs):
    return SerialLink(board, clock_hz=1e6, timeout=0.05, poll_s=0.01, **kwargs)


def test_serial_link_retries_with_the_same_sequence_number():
    board = ScriptedBoard([None, "corrupt", "drop", "error"])
    link = _scripted_link(board)
    assert (link.mem_size, link.max_words) == (4096, 4)
    link.write_mem(0x10, bytes(range(10)))              # unaligned tail: a read, then the words
    assert link.read_mem(0x10, 10) == bytes(range(10))
    assert link.retried == 3
    seqs = [seq for op, seq in board.executed]
    assert seqs[1] == seqs[2], "a retry must repeat the sequence number"
    assert link.read_mem(0x11, 3) == bytes(range(1, 4))


def test_serial_link_gives_up_with_a_link_error():
    link = _scripted_link(ScriptedBoard([None] + ["drop", "corrupt", "error"] * 3), retries=2)
    with pytest.raises(LinkError, match=r"^reading register 0x0: no good reply after 3 attempts \(no reply in "):
        link.read_csr(0)


def test_serial_link_bus_error_and_arguments():
    link = _scripted_link(ScriptedBoard())
    with pytest.raises(BusError, match=r"^reading register 0x40: AXI error response 0b11$"):
        link.read_csr(0x40)
    with pytest.raises(ValueError, match=r"^register address must be a multiple of 4 below 0x1000, not 4096$"):
        link.read_csr(4096)
    with pytest.raises(ValueError, match=r"must lie within the board's memory \(0x1000 bytes\)$"):
        link.read_mem(4090, 8)
    with pytest.raises(ValueError, match=r"^timeout must be a positive number of seconds, not 0$"):
        SerialLink(ScriptedBoard(), timeout=0)


def test_serial_link_wait_irq_polls_the_level():
    board = ScriptedBoard()
    link = _scripted_link(board)
    assert link.wait_irq(1000) is False                 # 1 ms of board time plus the reply timeout
    board.irq = True
    assert link.wait_irq(1000) is True


def test_board_tops_default_to_the_uart_bridge():
    from fp8train.boards.tops import BOARDS, BoardTop
    top = BoardTop(BOARDS["icebreaker"], rows=1, cols=1)
    assert isinstance(top.bridge, UartHostBridge) and top.bridge.divisor == 52 and top.bridge.timeout == 60_000
    assert BoardTop(BOARDS["ulx3s"], rows=1, cols=1).bridge.divisor == 109       # 12.5 MHz / 115200
    with pytest.raises(ValueError, match=r"^1000000 baud from a 12\.5 MHz clock: the nearest divisor 12 is 4\.2% off"):
        BoardTop(BOARDS["ulx3s"], rows=1, cols=1, baud=1_000_000)
    assert BoardTop(BOARDS["icebreaker"], rows=1, cols=1, baud=1_000_000).bridge.divisor == 6


def test_device_serial_arguments():
    from fp8train import Device
    with pytest.raises(ValueError, match=r"^the serial backend needs port, a serial device name or a SerialLink, "
                                         r"not None$"):
        Device("serial")
    with pytest.raises(ValueError, match=r"^port and baud belong to the serial backend, not 'golden'$"):
        Device("golden", port="/dev/ttyUSB1")


def test_serial_link_open_on_a_pseudo_terminal():
    """``SerialLink.open`` through pyserial on a pty, a scripted board answering on the other end."""
    pty, tty = os.openpty()
    board = ScriptedBoard(["drop"])
    stop = threading.Event()

    def serve():
        buf = bytearray()
        while not stop.is_set():
            if not select.select([pty], [], [], 0.02)[0]:
                continue
            buf += os.read(pty, 4096)
            while len(buf) >= 8:
                op, count = buf[1], buf[3]
                end = 10 + 4 * (count if op in (Op.WRITE_CSR, Op.WRITE_MEM) else 0)
                if len(buf) < end:
                    break
                board.write(bytes(buf[:end]))
                del buf[:end]
                os.write(pty, bytes(board.out))
                board.out.clear()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        link = SerialLink.open(os.ttyname(tty), baud=115200, clock_hz=1e6, timeout=0.2)
        link.write_csr(0x10, 0x1234)
        assert link.read_csr(0x10) == 0x1234 and link.retried == 1
        link.close()
    finally:
        stop.set()
        thread.join()
        os.close(pty)
        os.close(tty)


def test_sim_uart_arguments():
    from fp8train.sim.driver.uart_sim import SimUart
    with pytest.raises(ValueError, match=r"^flip_tx must be a probability from 0 to below 1, not 1\.5$"):
        SimUart(flip_tx=1.5)
