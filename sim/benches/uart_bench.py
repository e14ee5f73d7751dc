"""cocotb bench: the UART bridge's parts alone, ``boards.uart.UartRx``/``UartTx`` and
``boards.bridge.FrameParser``.

- Receiver: random bytes at a random phase to the clock, a glitch shorter than half a bit (ignored),
  a byte with a bad stop bit (dropped, ``error`` pulses) followed by a break, then bytes again.
- Transmitter: random bytes with random gaps on ``i``; the line is decoded by timing each bit, which
  must last ``divisor`` cycles.
- Parser: request frames (from :func:`fp8train.frames.pack_request`) byte by byte: good ones
  (fields and data words checked), noise before a sync byte, a bad CRC, a truncated frame, an
  oversized count, an unknown op, a framing error and a frame sent while ``busy``.

Parameters (``bench_params()``): ``divisor`` (rx/tx), ``max_words`` and ``timeout`` (parser), ``seed``,
``count`` (random bytes or frames).
"""

import random

import cocotb
from cocotb.triggers import ReadOnly, RisingEdge, Timer

from fp8train.frames import Op, Status, pack_request
from fp8train.sim.benches.streams import CLOCK_NS, bench_params, reset, start_clock


async def _setup(dut, **idle):
    for name, value in idle.items():
        getattr(dut, name).value = value
    start_clock(dut)
    await reset(dut)


# ---- receiver ------------------------------------------------------------------------------------
async def _collect_rx(dut, out: list, errors: list):
    while True:
        await RisingEdge(dut.clk)
        await ReadOnly()
        if dut.o__valid.value == 1:
            out.append(int(dut.o__payload.value))
        if dut.error.value == 1:
            errors.append(len(out))


async def _send_bits(dut, bits, bit_ns):
    for bit in bits:
        dut.rx.value = bit
        await Timer(bit_ns, "ns")


def _frame_bits(byte, stop=1):
    return [0, *((byte >> i) & 1 for i in range(8)), stop]


@cocotb.test()
async def test_rx(dut):
    p = bench_params()
    rng = random.Random(p["seed"])
    bit_ns = p["divisor"] * CLOCK_NS
    await _setup(dut, rx=1)
    got, errors = [], []
    cocotb.start_soon(_collect_rx(dut, got, errors))
    await Timer(rng.randrange(1, CLOCK_NS), "ns")          # off the clock's phase
    sent = [rng.randrange(256) for _ in range(p["count"])]
    for byte in sent:
        await _send_bits(dut, _frame_bits(byte), bit_ns)
        for _ in range(rng.randrange(3)):
            await Timer(bit_ns, "ns")
    dut.rx.value = 0                                        # a glitch of a quarter bit: no start bit
    await Timer(bit_ns // 4, "ns")
    dut.rx.value = 1
    await Timer(3 * bit_ns, "ns")
    assert got == sent and not errors, f"seed {p['seed']}: received {got}, sent {sent}; errors at {errors}"

    await _send_bits(dut, _frame_bits(0x55, stop=0), bit_ns)   # bad stop bit, and the line stays low
    await Timer(5 * bit_ns, "ns")
    assert errors == [len(sent)] and got == sent, f"framing error: errors at {errors}, received {got[len(sent):]}"
    dut.rx.value = 1
    await Timer(2 * bit_ns, "ns")
    await _send_bits(dut, _frame_bits(0xA5), bit_ns)
    await Timer(2 * bit_ns, "ns")
    assert got == sent + [0xA5] and errors == [len(sent)], f"after the break: received {got[len(sent):]}"


# ---- transmitter ---------------------------------------------------------------------------------
async def _decode_tx(dut, divisor, out: list):
    """Decode the line at clock resolution: each bit must hold for exactly ``divisor`` cycles."""
    await RisingEdge(dut.clk)
    await ReadOnly()
    while True:
        if dut.tx.value != 0:
            await RisingEdge(dut.clk)
            await ReadOnly()
            continue
        levels = []
        for _ in range(10 * divisor):
            levels.append(int(dut.tx.value))
            await RisingEdge(dut.clk)
            await ReadOnly()
        bits = [levels[i * divisor:(i + 1) * divisor] for i in range(10)]
        assert all(len(set(b)) == 1 for b in bits), f"a bit changed within its time: {bits}"
        assert bits[0][0] == 0 and bits[9][0] == 1, f"start/stop bits wrong: {bits}"
        out.append(sum(bits[1 + i][0] << i for i in range(8)))


@cocotb.test()
async def test_tx(dut):
    p = bench_params()
    rng = random.Random(p["seed"])
    await _setup(dut, i__valid=0, i__payload=0)
    got = []
    cocotb.start_soon(_decode_tx(dut, p["divisor"], got))
    sent = [rng.randrange(256) for _ in range(p["count"])]
    for byte in sent:
        await RisingEdge(dut.clk)
        dut.i__payload.value = byte
        dut.i__valid.value = 1
        while True:
            await ReadOnly()
            taken = dut.i__ready.value == 1
            await RisingEdge(dut.clk)
            if taken:
                break
        dut.i__valid.value = 0
        for _ in range(rng.choice([0, 0, 3])):
            await RisingEdge(dut.clk)
    await Timer(12 * p["divisor"] * CLOCK_NS, "ns")
    assert got == sent, f"seed {p['seed']}: line carried {got}, sent {sent}"


# ---- frame parser --------------------------------------------------------------------------------
def _lane_writes(words):
    """The frame buffer's byte writes, ``{(word, lane): byte}``, that store ``words``."""
    return {(index, lane): word >> 8 * lane & 0xFF for index, word in enumerate(words) for lane in range(4)}


class ParserTB:
    def __init__(self, dut, params):
        self.dut, self.p = dut, params
        self.requests, self.writes = [], {}     # writes: {(word, lane): byte}, as _lane_writes

    async def monitor(self):
        dut = self.dut
        dut.o__ready.value = 1
        while True:
            await RisingEdge(dut.clk)
            await ReadOnly()
            enables = int(dut.wr_en.value)
            if enables:
                assert enables & (enables - 1) == 0, f"byte lanes {enables:#06b} written at once"
                lane = enables.bit_length() - 1
                self.writes[int(dut.wr_addr.value), lane] = int(dut.wr_data.value) >> 8 * lane & 0xFF
            if dut.o__valid.value == 1:
                v = int(dut.o__payload.value)
                self.requests.append({"op": v & 0xFF, "seq": (v >> 8) & 0xFF, "count": (v >> 16) & 0xFF,
                                      "addr": (v >> 24) & 0xFFFF_FFFF, "error": (v >> 56) & 0xFF})

    async def send(self, data, gap=2, framing_error_at=None):
        dut = self.dut
        for index, byte in enumerate(data):
            await RisingEdge(dut.clk)
            if index == framing_error_at:
                dut.rx_error.value = 1
            else:
                dut.i__payload.value = byte
                dut.i__valid.value = 1
            await RisingEdge(dut.clk)
            dut.i__valid.value = 0
            dut.rx_error.value = 0
            for _ in range(gap):
                await RisingEdge(dut.clk)

    async def expect(self, what, **fields):
        """The next request (after at most twice the timeout), with ``fields``."""
        for _ in range(2 * self.p["timeout"] + 50):
            if self.requests:
                break
            await RisingEdge(self.dut.clk)
        assert self.requests, f"{what}: no request"
        got = self.requests.pop(0)
        wrong = {k: (got[k], v) for k, v in fields.items() if got[k] != v}
        assert not wrong, f"{what}: (got, want) {wrong}"
        return got

    async def silent(self, cycles, what):
        for _ in range(cycles):
            await RisingEdge(self.dut.clk)
        assert not self.requests, f"{what}: unexpected request {self.requests}"


@cocotb.test()
async def test_parser(dut):
    p = bench_params()
    rng = random.Random(p["seed"])
    await _setup(dut, i__valid=0, i__payload=0, rx_error=0, busy=0, o__ready=1)
    tb = ParserTB(dut, p)
    cocotb.start_soon(tb.monitor())
    max_words, timeout = p["max_words"], p["timeout"]

    for n in range(p["count"]):
        op = rng.choice(list(Op))
        count = {Op.STATUS: 0, Op.READ_CSR: 1, Op.WRITE_CSR: 1}.get(op, rng.randint(1, max_words))
        words = [rng.getrandbits(32) for _ in range(count)] if op in (Op.WRITE_CSR, Op.WRITE_MEM) else []
        addr, seq = rng.getrandbits(32), rng.randrange(256)
        noise = bytes(rng.choice([0x00, 0x5A, 0xFF]) for _ in range(rng.randrange(3)))
        tb.writes.clear()
        await tb.send(noise + pack_request(op, seq, addr, words, count), gap=rng.randrange(4))
        await tb.expect(f"frame {n}", op=op, seq=seq, count=count, addr=addr, error=Status.OK)
        assert tb.writes == _lane_writes(words), f"frame {n}: buffer writes {tb.writes}, data {words}"

    good = pack_request(Op.WRITE_MEM, 9, 0x40, [1, 2])
    await tb.send(good[:-1] + bytes([good[-1] ^ 1]))
    await tb.expect("bad CRC", seq=9, error=Status.BAD_CRC)
    await tb.send(good[:6])
    await tb.silent(timeout - 20, "truncated, before the timeout")
    await tb.expect("truncated", seq=9, error=Status.TRUNCATED)
    oversized = pack_request(Op.WRITE_MEM, 10, 0x40, list(range(max_words + 1)))
    await tb.send(oversized, gap=1)
    await tb.silent(timeout - 20, "oversized, before the line is quiet")
    await tb.expect("oversized", seq=10, error=Status.BAD_LENGTH)
    await tb.send(pack_request(Op.READ_MEM, 11, 0x40, count=0))
    await tb.expect("zero-length read", seq=11, error=Status.BAD_LENGTH)
    await tb.send(bytes([0xA5, 0x09]) + bytes(10))
    await tb.expect("unknown op", error=Status.BAD_OP)
    await tb.send(good, framing_error_at=5)
    await tb.expect("framing error", seq=9, error=Status.FRAMING)
    dut.busy.value = 1
    await tb.send(good)
    await tb.silent(timeout + 20, "while busy")
    dut.busy.value = 0
    await tb.send(good)
    await tb.expect("after busy", seq=9, count=2, addr=0x40, error=Status.OK)
    assert tb.writes == _lane_writes([1, 2])
