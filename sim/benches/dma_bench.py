"""cocotb bench: ``hw.bus.dma.Dma`` against cocotbext-axi's ``AxiRam`` (with injected errors).

Every AXI channel of the RAM model gets a pause generator; a monitor checks each cycle that AR/AW/W
hold ``valid`` and payload until taken, that no burst crosses 4 KiB or leaves the window, that every
AW gets exactly its W beats (``wlast`` on the last) and every AR/AW its R beats/B response, and it
counts bursts in flight. Parameters (``bench_params()``): ``max_burst``, ``max_reads_outstanding``,
``seed``, ``count`` (random commands per sweep test).
"""

import itertools
import logging
import random

import cocotb
from cocotb.triggers import ReadOnly, RisingEdge, SimTimeoutError, with_timeout
from cocotbext.axi import AxiBus
from cocotbext.axi.axi_ram import AxiRamRead, AxiRamWrite
from cocotbext.axi.memory import Memory

from fp8train.hw.bus.dma import DmaError
from fp8train.sim.benches.streams import (StreamPort, bench_params, drive, long_run, reset,
                                          start_clock)

WORD = 8                       # bytes per beat
PAGE = 4096
MEM_SIZE = 1 << 16
FAULT_BASE, FAULT_END = 0xC000, 0xC200     # a range the RAM answers with an error response
TIMEOUT_US = 200
SLVERR, DECERR = 0b10, 0b11


class _Fault(Exception):
    pass


class _FaultyRead(AxiRamRead):
    """``AxiRamRead`` answering beats in ``ram.faults`` with ``ram.fault_resp`` (the model itself
    only knows SLVERR, for a read that raises; the response is rewritten on its way out)."""

    def __init__(self, ram, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.ram, self.pending = ram, None
        send = self.r_channel.send

        async def send_with_fault(r):
            if self.pending is not None:
                r.rresp, self.pending = self.pending, None
            await send(r)
        self.r_channel.send = send_with_fault

    async def _read(self, address, length):
        if self.ram.faulty(address):
            self.pending = self.ram.fault_resp
            raise _Fault(hex(address))
        return await super()._read(address, length)


class _FaultyWrite(AxiRamWrite):
    """``AxiRamWrite`` answering bursts that touch ``ram.faults`` with ``ram.fault_resp``."""

    def __init__(self, ram, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.ram, self.pending = ram, None
        send = self.b_channel.send

        async def send_with_fault(b):
            if self.pending is not None:
                b.bresp, self.pending = self.pending, None
            await send(b)
        self.b_channel.send = send_with_fault

    async def _write(self, address, data):
        if self.ram.faulty(address):
            self.pending = self.ram.fault_resp
            raise _Fault(hex(address))
        await super()._write(address, data)


class FaultyAxiRam(Memory):
    """``AxiRam`` whose words in ``[FAULT_BASE, FAULT_END)`` answer ``fault_resp`` while
    ``faults_on``."""

    def __init__(self, bus, clock, reset, size):
        super().__init__(size)
        self.faults_on, self.fault_resp = False, SLVERR
        self.write_if = _FaultyWrite(self, bus.write, clock, reset, mem=self.mem, size=size)
        self.read_if = _FaultyRead(self, bus.read, clock, reset, mem=self.mem, size=size)

    def faulty(self, address):
        return self.faults_on and FAULT_BASE <= address < FAULT_END


def pauses(rng: random.Random, fraction: float):
    return (rng.random() < fraction for _ in itertools.count())


class DmaTB:
    """Clock, reset, the RAM, command/data streams, the bus monitor and the done counters."""

    def __init__(self, dut, stall: bool = True, seed_offset: int = 0):
        self.dut = dut
        params = bench_params()
        self.max_burst = params["max_burst"]
        self.max_reads = params["max_reads_outstanding"]
        self.count = params["count"] * (10 if long_run() else 1)
        self.seed = params["seed"] + seed_offset
        dut._log.info("seed %d, stall %s", self.seed, stall)
        self.rng = random.Random(self.seed)
        dut.rst.value = 1                    # in reset before the first edge (X under Icarus)
        start_clock(dut)
        self.ram = FaultyAxiRam(AxiBus.from_prefix(dut, "m_axi"), dut.clk, dut.rst, MEM_SIZE)
        for side in (self.ram.write_if, self.ram.read_if):
            side.log.setLevel(logging.WARNING)           # one line per burst otherwise
        self.stall = stall
        if stall:
            for channel in (self.ram.write_if.aw_channel, self.ram.write_if.w_channel,
                            self.ram.write_if.b_channel, self.ram.read_if.ar_channel,
                            self.ram.read_if.r_channel):
                channel.set_pause_generator(pauses(self.rng, 0.3))
        self.rd_cmd, self.wr_cmd = StreamPort(dut, "rd_cmd"), StreamPort(dut, "wr_cmd")
        self.rd_data, self.wr_data = StreamPort(dut, "rd_data"), StreamPort(dut, "wr_data")
        for port in (self.rd_cmd, self.wr_cmd, self.wr_data):
            port.valid.value = 0
        dut.rd_data__ready.value = 0
        dut.clear.value = 0
        dut.abort.value = 0
        self.set_window(0, MEM_SIZE)
        # Monitor state.
        self.ars, self.aws = [], []          # (addr, beats) of every AR/AW handshake
        self.r_beats = self.w_beats = self.b_count = 0
        self.reads_in_flight = self.max_reads_in_flight = 0
        self.ar_pending = False              # an AR valid and not yet taken
        self.w_owed = []                     # beats per AW not yet delivered on W
        self.w_ahead = []                    # wlast of W beats seen before their AW's handshake
        self.rd_done = self.wr_done = 0
        self.stall_cycles = self.busy_cycles = 0
        self.errors = []                     # protocol violations seen by the monitor
        # Read consumer.
        self.beats = []                      # rd_data payloads taken
        self.consumer_paused = False
        self.consumer_stall = pauses(self.rng, 0.3 if stall else 0.0)

    def set_window(self, base, limit):
        self.window = (base, limit)
        self.dut.window_base.value = base
        self.dut.window_limit.value = limit

    async def start(self):
        await reset(self.dut)
        cocotb.start_soon(self._monitor())
        cocotb.start_soon(self._consume())

    # ---- bus monitor -----------------------------------------------------------------------
    async def _monitor(self):
        dut, edge, settled = self.dut, RisingEdge(self.dut.clk), ReadOnly()
        held = {}
        channels = {"ar": ("araddr", "arlen", "arsize", "arburst"),
                    "aw": ("awaddr", "awlen", "awsize", "awburst"),
                    "w": ("wdata", "wstrb", "wlast")}
        handles = {ch: (getattr(dut, f"m_axi_{ch}valid"), getattr(dut, f"m_axi_{ch}ready"),
                        [getattr(dut, f"m_axi_{name}") for name in names])
                   for ch, names in channels.items()}
        r = (dut.m_axi_rvalid, dut.m_axi_rready, dut.m_axi_rlast)
        b = (dut.m_axi_bvalid, dut.m_axi_bready)
        while True:
            await edge
            await settled
            fired = {}
            for ch, (valid, ready, payload) in handles.items():
                v, rd = int(valid.value), int(ready.value)
                values = [int(p.value) for p in payload] if v else None
                if ch in held and (not v or values != held[ch]):
                    self.errors.append(f"{ch}: valid or payload changed before the handshake "
                                       f"({held.pop(ch)} -> {values})")
                held.pop(ch, None)
                if v and not rd:
                    held[ch] = values
                fired[ch] = values if v and rd else None
            self.ar_pending = "ar" in held
            if fired["ar"]:
                self._burst("AR", fired["ar"], self.ars)
                self.reads_in_flight += 1
                self.max_reads_in_flight = max(self.max_reads_in_flight, self.reads_in_flight)
            if fired["aw"]:
                self._burst("AW", fired["aw"], self.aws)
                self.w_owed.append(fired["aw"][1] + 1)
            if fired["w"]:
                # AXI lets W beats precede their AW's handshake; this DMA promises not to send
                # them before the AW is valid.
                self.w_beats += 1
                self.w_ahead.append(fired["w"][2])
                if not self.w_owed and "aw" not in held:
                    self.errors.append("W beat before its AW was issued")
            while self.w_ahead and self.w_owed:
                last = self.w_ahead.pop(0)
                self.w_owed[0] -= 1
                if bool(last) != (self.w_owed[0] == 0):
                    self.errors.append(f"wlast {last} with {self.w_owed[0]} beats owed")
                if self.w_owed[0] == 0:
                    self.w_owed.pop(0)
            if int(r[0].value) and int(r[1].value):
                self.r_beats += 1
                if int(r[2].value):
                    self.reads_in_flight -= 1
            if int(b[0].value) and int(b[1].value):
                self.b_count += 1
            self.rd_done += int(dut.rd_done.value)
            self.wr_done += int(dut.wr_done.value)
            busy = int(dut.busy.value)
            self.busy_cycles += busy
            self.stall_cycles += int(dut.stall.value)
            if int(dut.stall.value) and not busy:
                self.errors.append("stall without busy")

    def _burst(self, kind, values, log):
        addr, length, size, burst = values
        beats = length + 1
        log.append((addr, beats))
        if size != 3 or burst != 1:
            self.errors.append(f"{kind} {addr:#x}: size {size}, burst {burst} (want 3, INCR)")
        if addr // PAGE != (addr + beats * WORD - 1) // PAGE:
            self.errors.append(f"{kind} {addr:#x} + {beats} beats crosses a 4 KiB boundary")
        if beats > self.max_burst:
            self.errors.append(f"{kind} {addr:#x}: {beats} beats > max_burst {self.max_burst}")
        base, limit = self.window
        if addr < base or addr + beats * WORD > limit:
            self.errors.append(f"{kind} {addr:#x} + {beats} beats outside the window")

    def check_protocol(self):
        assert not self.errors, f"{len(self.errors)} bus errors; first: {self.errors[0]}"

    async def quiesce(self):
        """Wait until the DMA is idle and every burst is complete on the bus; check the books."""
        dut = self.dut

        async def idle():
            while True:
                await RisingEdge(dut.clk)
                await ReadOnly()
                if (not int(dut.busy.value) and self.reads_in_flight == 0 and not self.w_owed and
                        not self.w_ahead and
                        self.b_count == len(self.aws)):
                    break
            await RisingEdge(dut.clk)
        try:
            await with_timeout(idle(), TIMEOUT_US, "us")
        except SimTimeoutError:
            raise AssertionError(
                f"not idle: busy {int(dut.busy.value)}, reads in flight {self.reads_in_flight}, "
                f"W owed {self.w_owed}, {self.b_count} B for {len(self.aws)} AW") from None
        assert self.r_beats == sum(beats for _, beats in self.ars), "R beats != AR beats"
        assert self.w_beats == sum(beats for _, beats in self.aws), "W beats != AW beats"
        self.check_protocol()

    # ---- read side ---------------------------------------------------------------------------
    async def _consume(self):
        dut, edge, settled = self.dut, RisingEdge(self.dut.clk), ReadOnly()
        while True:
            ready = not self.consumer_paused and not next(self.consumer_stall)
            dut.rd_data__ready.value = ready
            await settled
            if ready and int(dut.rd_data__valid.value):
                self.beats.append(int(dut.rd_data__payload.value))
            await edge

    async def command(self, port, addr, length):
        await drive(self.dut.clk, port, [addr | length << 32])

    async def wait_until(self, condition):
        async def reach():
            while not condition():
                await RisingEdge(self.dut.clk)
        await with_timeout(reach(), TIMEOUT_US, "us")

    async def wait_count(self, attr, target):
        await self.wait_until(lambda: getattr(self, attr) >= target)

    async def read(self, addr, length):
        """One read command; the words must be the RAM's, ``last`` only on the final one."""
        first, done, bursts = len(self.beats), self.rd_done, len(self.ars)
        await self.command(self.rd_cmd, addr, length)
        await self.wait_count("rd_done", done + 1)
        await self.wait_count_beats(first + length // WORD)
        expect = addr
        for burst_addr, beats in self.ars[bursts:]:
            assert burst_addr == expect, f"read {addr:#x}+{length}: AR {burst_addr:#x}, want {expect:#x}"
            expect += beats * WORD
        assert expect == addr + length, f"read {addr:#x}+{length}: ARs cover up to {expect:#x}"
        got = self.beats[first:]
        want = self.ram.read(addr, length)
        for index, beat in enumerate(got):
            data, last = beat & (1 << 64) - 1, beat >> 64
            expect = int.from_bytes(want[index * WORD:(index + 1) * WORD], "little")
            assert data == expect, (f"read {addr:#x}+{length}: word {index} {data:#018x} != "
                                    f"{expect:#018x}")
            assert last == (index == len(got) - 1), f"read {addr:#x}+{length}: last on word {index}"

    async def wait_count_beats(self, target):
        async def reach():
            while len(self.beats) < target:
                await RisingEdge(self.dut.clk)
        await with_timeout(reach(), TIMEOUT_US, "us")
        assert len(self.beats) == target, f"{len(self.beats)} words, want {target}"

    # ---- write side --------------------------------------------------------------------------
    def producer(self, words, strbs):
        beats = [w | s << 64 for w, s in zip(words, strbs)]
        stall = pauses(self.rng, 0.3 if self.stall else 0.0)
        return cocotb.start_soon(drive(self.dut.clk, self.wr_data, beats, stall))

    async def write(self, addr, length, strobes=False, guard=64):
        """One write command of random words (random byte strobes if ``strobes``); the RAM must
        hold exactly them, and ``guard`` bytes either side must be untouched."""
        lo, hi = max(0, addr - guard), min(MEM_SIZE, addr + length + guard)
        self.ram.write(lo, self.rng.randbytes(hi - lo))
        before = bytearray(self.ram.read(lo, hi - lo))
        words = [self.rng.getrandbits(64) for _ in range(length // WORD)]
        strbs = [self.rng.getrandbits(8) if strobes else 0xFF for _ in words]
        for index, (word, strb) in enumerate(zip(words, strbs)):
            for byte in range(WORD):
                if strb >> byte & 1:
                    before[addr - lo + index * WORD + byte] = word >> 8 * byte & 0xFF
        done = self.wr_done
        producer = self.producer(words, strbs)
        await self.command(self.wr_cmd, addr, length)
        await self.wait_count("wr_done", done + 1)
        assert producer.done(), f"write {addr:#x}+{length}: wr_done before all data was taken"
        got = self.ram.read(lo, hi - lo)
        if got != bytes(before):
            bad = next(i for i in range(len(got)) if got[i] != before[i])
            raise AssertionError(f"write {addr:#x}+{length}: byte {lo + bad:#x} is {got[bad]:#04x}, "
                                 f"want {before[bad]:#04x}")

    async def pulse(self, signal):
        signal.value = 1
        await RisingEdge(self.dut.clk)
        signal.value = 0

    def error(self):
        return int(self.dut.error.value)


def boundary_cases(rng, count):
    """(addr, length) pairs: starts just below, at and above a 4 KiB boundary, lengths from one word
    to several bursts, plus random ones."""
    cases = []
    for page in (1, 2):
        for offset in (-3 * WORD, -WORD, 0, WORD, 5 * WORD):
            for words in (1, 2, 3, 16, 17, 40):
                cases.append((page * PAGE + offset, words * WORD))
    rng.shuffle(cases)
    cases = cases[:count]
    cases += [(rng.randrange(0, 0x8000 // WORD) * WORD, rng.randrange(1, 80) * WORD)
              for _ in range(count // 3)]
    return cases


@cocotb.test()
@cocotb.parametrize(stall=[False, True])
async def test_reads_around_4k(dut, stall):
    tb = DmaTB(dut, stall)
    await tb.start()
    tb.ram.write(0, tb.rng.randbytes(0x8000))
    for addr, length in boundary_cases(tb.rng, tb.count):
        await tb.read(addr, length)
    await tb.quiesce()
    assert tb.error() == 0, f"error {DmaError(tb.error())!r}"


@cocotb.test()
@cocotb.parametrize(stall=[False, True], strobes=[False, True])
async def test_writes_around_4k(dut, stall, strobes):
    tb = DmaTB(dut, stall, seed_offset=1)
    await tb.start()
    for addr, length in boundary_cases(tb.rng, tb.count // (2 if strobes else 1)):
        await tb.write(addr, length, strobes)
    await tb.quiesce()
    assert tb.error() == 0, f"error {DmaError(tb.error())!r}"


@cocotb.test()
async def test_reads_outstanding_and_buffer_limit(dut):
    """With R held back, exactly ``max_reads_outstanding`` ARs go out; with the consumer held back,
    requests stop when the buffer is spoken for; ``stall`` counts the waiting cycles."""
    tb = DmaTB(dut, stall=False, seed_offset=2)
    await tb.start()
    tb.ram.write(0, tb.rng.randbytes(0x4000))
    r_channel = tb.ram.read_if.r_channel
    r_channel.pause = True
    depth = tb.max_burst * tb.max_reads
    # One word up to a page boundary, then full bursts, the last one short: max_reads + 1 bursts
    # that fit the buffer together, so only the limit on bursts in flight holds the last one back.
    reader = cocotb.start_soon(tb.read(2 * PAGE - WORD, depth * WORD))
    await tb.wait_until(lambda: tb.ars)      # counted from the first AR: its latency is not tested here
    for _ in range(60):
        await RisingEdge(dut.clk)
    # The RAM model takes at most 3 ARs while its R queue is full: count a waiting AR too.
    issued = tb.reads_in_flight + tb.ar_pending
    assert issued == tb.max_reads, f"{issued} bursts issued with R held, want {tb.max_reads}"
    assert len(tb.ars) == tb.max_reads, f"{len(tb.ars)} ARs taken with R held"
    assert tb.stall_cycles > 40, f"only {tb.stall_cycles} stall cycles while waiting on R"
    r_channel.pause = False
    await reader
    length = tb.max_burst * tb.max_reads * 2 * WORD
    assert tb.max_reads_in_flight >= min(3, tb.max_reads), (
        f"at most {tb.max_reads_in_flight} reads were outstanding")
    # Consumer held back: the DMA may request only what its buffer can take.
    tb.consumer_paused = True
    first, requested = len(tb.beats), sum(beats for _, beats in tb.ars)
    reader = cocotb.start_soon(tb.read(0x2000, length))
    for _ in range(200):
        await RisingEdge(dut.clk)
    now = sum(beats for _, beats in tb.ars) - requested
    assert now == depth, f"{now} words requested with the consumer stopped, buffer {depth}"
    stalls = tb.stall_cycles
    for _ in range(20):
        await RisingEdge(dut.clk)
    assert tb.stall_cycles == stalls, "stall counted while waiting for the consumer"
    assert len(tb.beats) == first
    tb.consumer_paused = False
    await reader
    await tb.quiesce()


@cocotb.test()
async def test_window_and_alignment_refused(dut):
    """Commands outside the window or misaligned: error code, done pulse, no bus transaction, no
    data; held off until ``clear``; then commands right at the window's edges work."""
    tb = DmaTB(dut, stall=True, seed_offset=3)
    await tb.start()
    base, limit = 0x3000, 0x5000
    tb.set_window(base, limit)
    tb.ram.write(0, tb.rng.randbytes(0x8000))
    refused = [(tb.rd_cmd, base - WORD, 2 * WORD, DmaError.READ_WINDOW),
               (tb.rd_cmd, limit - WORD, 2 * WORD, DmaError.READ_WINDOW),
               (tb.rd_cmd, 0xFFFF_FFF8, 16, DmaError.READ_WINDOW),
               (tb.wr_cmd, base - 0x100, 0x80, DmaError.WRITE_WINDOW),
               (tb.wr_cmd, limit, WORD, DmaError.WRITE_WINDOW),
               (tb.rd_cmd, base + 4, WORD, DmaError.READ_MISALIGNED),
               (tb.wr_cmd, base, 12, DmaError.WRITE_MISALIGNED)]
    for port, addr, length, code in refused:
        counter = "rd_done" if port is tb.rd_cmd else "wr_done"
        done, total = getattr(tb, counter), tb.rd_done + tb.wr_done
        await tb.command(port, addr, length)
        await tb.wait_count(counter, done + 1)
        assert tb.rd_done + tb.wr_done == total + 1
        assert tb.error() == code, f"{addr:#x}+{length}: error {tb.error()} != {code!r}"
        # Held off while the error stands.
        port.valid.value = 1
        port.payload.value = base | WORD << 32
        for _ in range(5):
            await RisingEdge(dut.clk)
            await ReadOnly()
            assert not int(port.ready.value), "command taken while error is set"
        await RisingEdge(dut.clk)
        port.valid.value = 0
        await tb.pulse(dut.clear)
        await RisingEdge(dut.clk)
        assert tb.error() == 0
    assert not tb.ars and not tb.aws, "a refused command reached the bus"
    assert not tb.beats, "a refused read produced data"
    assert int(dut.wr_data__ready.value) == 0
    await tb.read(base, 0x40)
    await tb.read(limit - 0x48, 0x48)
    await tb.write(base, 0x30, guard=0)
    await tb.write(limit - 0x18, 0x18, guard=0)
    await tb.quiesce()
    assert tb.error() == 0


@cocotb.test()
@cocotb.parametrize(resp=[SLVERR, DECERR], stall=[False, True])
async def test_read_error(dut, resp, stall):
    """A read running into an error range: sticky code, every issued burst completes on the bus,
    no ``last`` and no word after the error (with ``stall``, the consumer waits until the command is
    over: the words buffered before the error must be flushed); after ``clear`` a good read works."""
    tb = DmaTB(dut, stall, seed_offset=4)
    await tb.start()
    tb.ram.write(0, tb.rng.randbytes(0x10000))
    tb.ram.faults_on, tb.ram.fault_resp = True, resp
    addr = FAULT_BASE - 3 * tb.max_burst * WORD
    done = tb.rd_done
    tb.consumer_paused = stall
    await tb.command(tb.rd_cmd, addr, 8 * tb.max_burst * WORD)
    await tb.wait_count("rd_done", done + 1)
    await tb.quiesce()
    tb.consumer_paused = False
    for _ in range(10):
        await RisingEdge(dut.clk)
    if stall:
        assert not tb.beats, f"{len(tb.beats)} words of a failed read delivered after the error"
    want = DmaError.READ_SLVERR if resp == SLVERR else DmaError.READ_DECERR
    assert tb.error() == want, f"error {tb.error()} != {want!r}"
    assert len(tb.beats) <= 3 * tb.max_burst, f"{len(tb.beats)} words delivered past the error"
    assert not any(beat >> 64 for beat in tb.beats), "last delivered for a failed read"
    await tb.pulse(dut.clear)
    tb.ram.faults_on = False
    first = len(tb.beats)
    await tb.read(FAULT_BASE, 0x80)
    assert len(tb.beats) == first + 0x10
    await tb.quiesce()


@cocotb.test()
@cocotb.parametrize(resp=[SLVERR, DECERR], stall=[False, True])
async def test_write_error(dut, resp, stall):
    """A write running into an error range: sticky code, every issued AW gets its W beats and its B,
    nothing written past the issued bursts; after ``clear`` a good write works."""
    tb = DmaTB(dut, stall, seed_offset=5)
    await tb.start()
    tb.ram.faults_on, tb.ram.fault_resp = True, resp
    addr = FAULT_BASE - 2 * tb.max_burst * WORD
    length = 16 * tb.max_burst * WORD
    original = tb.rng.randbytes(length + 64)
    tb.ram.write(addr, original)
    words = [tb.rng.getrandbits(64) for _ in range(length // WORD)]
    done = tb.wr_done
    producer = tb.producer(words, [0xFF] * len(words))
    await tb.command(tb.wr_cmd, addr, length)
    await tb.wait_count("wr_done", done + 1)
    producer.cancel()                               # the controller drops its remaining data
    dut.wr_data__valid.value = 0
    await tb.quiesce()
    want = DmaError.WRITE_SLVERR if resp == SLVERR else DmaError.WRITE_DECERR
    assert tb.error() == want, f"error {tb.error()} != {want!r}"
    issued_end = max(a + b * WORD for a, b in tb.aws)
    assert issued_end < addr + length, "every burst was issued despite the error"
    assert tb.ram.read(issued_end, addr + length + 64 - issued_end) == original[issued_end - addr:], (
        "memory past the issued bursts changed")
    await tb.pulse(dut.clear)
    tb.ram.faults_on = False
    await tb.write(FAULT_BASE, 0x80)
    await tb.quiesce()
    assert tb.error() == 0


@cocotb.test()
@cocotb.parametrize(stall=[False, True])
async def test_abort(dut, stall):
    """``abort`` in the middle of a read and of a write: issued bursts complete (W with no byte
    enabled), then idle, no error, buffered words flushed; then both engines work again."""
    tb = DmaTB(dut, stall, seed_offset=6)
    await tb.start()
    tb.ram.write(0, tb.rng.randbytes(0x8000))
    length = 16 * tb.max_burst * WORD
    tb.consumer_paused = True
    rd_done, wr_done = tb.rd_done, tb.wr_done
    await tb.command(tb.rd_cmd, 0x1000, length)
    original = tb.ram.read(0x4000, length)
    words = [tb.rng.getrandbits(64) for _ in range(length // WORD)]
    sent = 3 * tb.max_burst // 2
    producer = tb.producer(words[:sent], [0xFF] * sent)    # the controller stops mid-command
    await tb.command(tb.wr_cmd, 0x4000, length)
    await producer
    for _ in range(30):
        await RisingEdge(dut.clk)
    await tb.pulse(dut.abort)
    tb.consumer_paused = False
    await tb.wait_count("rd_done", rd_done + 1)
    await tb.wait_count("wr_done", wr_done + 1)
    await tb.quiesce()
    assert tb.error() == 0, f"error {tb.error()} after abort"
    assert not tb.beats, f"{len(tb.beats)} words delivered after abort"
    got = tb.ram.read(0x4000, length)
    want = b"".join(w.to_bytes(WORD, "little") for w in words[:sent]) + original[sent * WORD:]
    assert got == want, "abort: memory differs from the words offered before it"
    await tb.read(0x1000, 0x100)
    await tb.write(0x4000, 0x100)
    await tb.quiesce()


@cocotb.test()
async def test_abort_with_responses_held(dut):
    """``abort`` while a read's R and a write's B are held back (and will be error responses): the
    issued transactions complete on the bus, their responses are dropped (no word, no error), one
    done pulse each; then both engines work again."""
    tb = DmaTB(dut, stall=False, seed_offset=12)
    await tb.start()
    tb.ram.write(0, tb.rng.randbytes(0x10000))
    tb.ram.faults_on, tb.ram.fault_resp = True, SLVERR
    held = (tb.ram.read_if.r_channel, tb.ram.write_if.b_channel)
    for channel in held:
        channel.pause = True
    rd_done, wr_done = tb.rd_done, tb.wr_done
    length = 2 * tb.max_burst * WORD               # both commands inside the error range
    await tb.command(tb.rd_cmd, FAULT_BASE, length)
    words = [tb.rng.getrandbits(64) for _ in range(length // WORD)]
    producer = tb.producer(words, [0xFF] * len(words))
    await tb.command(tb.wr_cmd, FAULT_BASE + length, length)
    await tb.wait_until(lambda: tb.ars and tb.aws)
    await tb.pulse(dut.abort)
    for channel in held:
        channel.pause = False
    await tb.wait_count("rd_done", rd_done + 1)
    await tb.wait_count("wr_done", wr_done + 1)
    producer.cancel()                               # the controller drops its remaining data
    dut.wr_data__valid.value = 0
    await tb.quiesce()
    assert (tb.rd_done, tb.wr_done) == (rd_done + 1, wr_done + 1), "more than one done pulse per engine"
    assert tb.error() == 0, f"error {DmaError(tb.error())!r} from a response dropped by abort"
    assert not tb.beats, f"{len(tb.beats)} words delivered after abort"
    tb.ram.faults_on = False
    await tb.read(0x1000, 0x40)
    await tb.write(0x2000, 0x40)
    await tb.quiesce()


@cocotb.test()
async def test_concurrent_reads_and_writes(dut):
    """Both engines at once on disjoint regions, with pauses everywhere."""
    tb = DmaTB(dut, stall=True, seed_offset=7)
    await tb.start()
    tb.ram.write(0, tb.rng.randbytes(0x4000))

    async def reads():
        for addr, length in boundary_cases(random.Random(tb.seed), tb.count // 2):
            await tb.read(addr % 0x4000, length)

    async def writes():
        for addr, length in boundary_cases(random.Random(tb.seed + 1), tb.count // 2):
            await tb.write(0x8000 + addr % 0x4000, length)

    reader, writer = cocotb.start_soon(reads()), cocotb.start_soon(writes())
    await reader
    await writer
    await tb.quiesce()
    assert tb.error() == 0


@cocotb.test()
async def test_pipelined_commands(dut):
    """Short commands offered back to back: the words come back in command order with ``last`` on
    each command's final word, one ``*_done`` per command; when more than one read may be
    outstanding, commands are taken while earlier ones are in flight, so the bus holds bursts of
    several commands at once."""
    tb = DmaTB(dut, stall=False, seed_offset=11)
    await tb.start()
    tb.ram.write(0, tb.rng.randbytes(0x4000))
    commands = [(tb.rng.randrange(0x4000 // WORD - 4) * WORD, tb.rng.randint(1, 3) * WORD)
                for _ in range(tb.count)]
    first, done = len(tb.beats), tb.rd_done
    await drive(dut.clk, tb.rd_cmd, [addr | length << 32 for addr, length in commands])
    await tb.wait_count("rd_done", done + len(commands))
    await tb.wait_count_beats(first + sum(length for _, length in commands) // WORD)
    got = iter(tb.beats[first:])
    for addr, length in commands:
        want = tb.ram.read(addr, length)
        for index in range(length // WORD):
            beat = next(got)
            assert beat & (1 << 64) - 1 == int.from_bytes(want[index * WORD:(index + 1) * WORD], "little")
            assert beat >> 64 == (index == length // WORD - 1), f"read {addr:#x}+{length}: last on word {index}"
    if tb.max_reads > 1:
        assert tb.max_reads_in_flight > 1, "reads of consecutive commands never overlapped"

    writes = [(0x8000 + index * 0x40, tb.rng.randint(1, 3) * WORD) for index in range(tb.count)]
    words = [tb.rng.getrandbits(64) for _ in range(sum(length for _, length in writes) // WORD)]
    done = tb.wr_done
    producer = tb.producer(words, [0xFF] * len(words))
    await drive(dut.clk, tb.wr_cmd, [addr | length << 32 for addr, length in writes])
    await tb.wait_count("wr_done", done + len(writes))
    assert producer.done()
    position = 0
    for addr, length in writes:
        want = b"".join(w.to_bytes(WORD, "little") for w in words[position:position + length // WORD])
        assert tb.ram.read(addr, length) == want, f"write {addr:#x}+{length}"
        position += length // WORD
    await tb.quiesce()
    assert tb.error() == 0
