"""cocotb bench: ``hw.core.Accelerator`` (engine + tile controller + array) against ``GoldenDevice``.

The host is cocotbext-axi's ``AxiLiteMaster`` on ``s_axil``; host memory is the DMA bench's
``FaultyAxiRam`` on ``m_axi`` (read errors injectable at ``FAULT_BASE``). Each test writes operands
and a ring of GEMM descriptors into RAM, rings the doorbell, waits for ``irq`` and compares the
whole RAM and the status registers with a :class:`GoldenDevice` (real ``run_gemm``) that ran the
same ring. Parameters (``bench_params()``): ``rows``, ``cols``, ``rbits``, ``max_chunk``, ``seed``,
``pcm`` (``PcmConfig`` arguments of the accelerator's PCM tile; the ``test_pcm*`` tests need one) and
``exact_macs`` (``PERF_MAC`` must be the GEMMs' ``m * n * k``: true of a device whose PEs multiply only
the GEMM's products, such as the serial executor's one PE; an array also counts its PEs beyond the edge)
and ``timeout_us`` (how long a ring or a register access may take, default ``TIMEOUT_US``: the compact
accelerator spends about 150 cycles a MAC).
"""

import logging
import random

import cocotb
import cocotb.simtime
import numpy as np
from cocotb.triggers import RisingEdge, SimTimeoutError, with_timeout
from cocotbext.axi import AxiBus, AxiLiteBus, AxiLiteMaster

from fp8train.formats import FP16_169
from fp8train.protocol import (DESCRIPTOR_BYTES, FLAG_OUT_SHIFT, STATUS_DONE, Ctrl, Descriptor,
                               ErrorCode, Flag, Irq, Opcode, OutFormat, Reg)
from fp8train.sim.benches.dma_bench import FAULT_BASE, FaultyAxiRam, pauses
from fp8train.sim.benches.streams import bench_params, reset, start_clock
from fp8train.sim.golden.device import DeviceConfig, GoldenDevice, check
from fp8train.sim.golden.pcm import PcmConfig

MEM_SIZE = 1 << 16
RING_BASE = 0x8000
DATA_BASE = 0x100
DATA_LIMIT = 0x8000
WINDOW = (0, MEM_SIZE)
TIMEOUT_US = 2000


def _round8(n):
    return -(-n // 8) * 8


class CoreTB:
    def __init__(self, dut, seed_offset=0):
        self.dut = dut
        params = bench_params()
        pcm = params.get("pcm")
        self.config = DeviceConfig(rows=params["rows"], cols=params["cols"], rbits=params["rbits"],
                                   max_chunk=params["max_chunk"], pcm=None if pcm is None else PcmConfig(**pcm))
        self.rng = random.Random(params["seed"] + seed_offset)
        self.exact_macs = params.get("exact_macs", False)
        self.timeout_us = params.get("timeout_us", TIMEOUT_US)
        dut.rst.value = 1
        start_clock(dut)
        self.csr = AxiLiteMaster(AxiLiteBus.from_prefix(dut, "s_axil"), dut.clk, dut.rst)
        self.ram = FaultyAxiRam(AxiBus.from_prefix(dut, "m_axi"), dut.clk, dut.rst, MEM_SIZE)
        for side in (self.ram.write_if, self.ram.read_if, self.csr.write_if, self.csr.read_if):
            side.log.setLevel(logging.WARNING)
        # Random backpressure and delays on every channel of the memory (AR/AW/W ready, R/B valid).
        for channel in (self.ram.write_if.aw_channel, self.ram.write_if.w_channel, self.ram.write_if.b_channel,
                        self.ram.read_if.ar_channel, self.ram.read_if.r_channel):
            channel.set_pause_generator(pauses(self.rng, 0.3))
        self.golden = _FaultingGolden(MEM_SIZE, self.config)
        self.head = 0
        self.next_free = DATA_BASE

    async def start(self):
        await reset(self.dut)
        fill = self.rng.randbytes(MEM_SIZE)
        self.write_mem(0, fill)
        for reg, value in ((Reg.RING_BASE, RING_BASE), (Reg.RING_SIZE, 16), (Reg.WINDOW_BASE, WINDOW[0]),
                           (Reg.WINDOW_LIMIT, WINDOW[1]), (Reg.IRQ_MASK, Irq.DONE | Irq.ERROR),
                           (Reg.CTRL, Ctrl.ENABLE)):
            await self.write(reg, value)

    async def write(self, addr, value):
        await with_timeout(self.csr.write(addr, int(value).to_bytes(4, "little")), self.timeout_us, "us")
        self.golden.write_csr(addr, int(value))

    async def read(self, addr):
        got = await with_timeout(self.csr.read(addr, 4), self.timeout_us, "us")
        return int.from_bytes(got.data, "little")

    def write_mem(self, addr, raw):
        self.ram.write(addr, raw)
        self.golden.write_mem(addr, raw)

    def alloc(self, rows, row_bytes, pad):
        """A buffer of ``rows`` rows: its address and stride (extra ``pad`` beats per row)."""
        stride = _round8(row_bytes) + 8 * pad
        addr = self.next_free
        self.next_free += _round8(stride * rows) + 8
        assert self.next_free <= DATA_LIMIT, "test data does not fit"
        return addr, stride

    def operand(self, addr, stride, rows, cols):
        """E5M2 codes of moderate magnitude (2**-4 to 2**3, some zeros and subnormals), so sums stay
        finite and every rounding matters; the padding between rows keeps its random bytes."""
        for i in range(rows):
            rng = self.rng
            codes = bytes(rng.choice([0x00, 0x80, 0x01, 0x83]) if rng.random() < 0.05 else
                          rng.getrandbits(1) << 7 | rng.randint(11, 18) << 2 | rng.getrandbits(2)
                          for _ in range(cols))
            self.write_mem(addr + i * stride, codes)

    def gemm(self, m, n, k, flags=0, out=OutFormat.FP16_169, pad=0, **fields):
        """A GEMM descriptor with fresh buffers (random contents already in RAM)."""
        flags |= out << FLAG_OUT_SHIFT
        trans_a, trans_b = flags & Flag.TRANS_A, flags & Flag.TRANS_B
        addr_a, stride_a = self.alloc(*((k, m) if trans_a else (m, k)), pad)
        addr_b, stride_b = self.alloc(*((n, k) if trans_b else (k, n)), pad)
        self.operand(addr_a, stride_a, *((k, m) if trans_a else (m, k)))
        self.operand(addr_b, stride_b, *((n, k) if trans_b else (k, n)))
        out_bytes = 2 if out == OutFormat.FP16_169 else 1
        addr_d, stride_d = self.alloc(m, n * out_bytes, pad)
        addr_c = stride_c = 0
        if flags & Flag.HAS_C:
            addr_c, stride_c = self.alloc(m, 2 * n, pad)
            # C: finite FP16_169 values of moderate size (random codes would be mostly huge/NaN).
            for i in range(m):
                vals = np.array([self.rng.choice([0x3C00, 0xBC00, 0x4000, 0x3800, 0xC200, 0x0000, 0x8000,
                                                  self.rng.getrandbits(16)]) for _ in range(n)], "<u2")
                self.write_mem(addr_c + i * stride_c, vals.tobytes())
        return Descriptor(opcode=Opcode.GEMM, flags=flags, m=m, n=n, k=k, addr_a=addr_a, stride_a=stride_a,
                          addr_b=addr_b, stride_b=stride_b, addr_c=addr_c, stride_c=stride_c,
                          addr_d=addr_d, stride_d=stride_d, **fields)

    def update(self, count, flags=0, out=OutFormat.FP16_169, **fields):
        """An UPDATE descriptor over fresh w, g (and v with MOMENTUM) of moderate FP16_169 values."""
        flags |= out << FLAG_OUT_SHIFT

        def values(scale):
            exponents = np.array([self.rng.randint(-4, 2) for _ in range(count)]) + scale
            signs = np.array([self.rng.choice([1.0, -1.0]) for _ in range(count)])
            return FP16_169.encode(signs * (1 + np.array([self.rng.random() for _ in range(count)])) * 2.0 ** exponents)

        buffers = {}
        for name, scale in (("w", 0), ("g", -3), ("v", -5)):
            addr, _ = self.alloc(1, 2 * count, 0)
            self.write_mem(addr, values(scale).astype("<u2").tobytes())
            buffers[name] = addr
        copy, _ = self.alloc(1, count, 0)
        lr, mu, wd = (int(FP16_169.encode(np.float64(x))) for x in (0.125, 0.875, 0.01))
        return Descriptor(opcode=Opcode.UPDATE, flags=flags, k=count, addr_a=buffers["w"], addr_b=buffers["g"],
                          addr_c=buffers["v"] if flags & Flag.MOMENTUM else 0,
                          addr_d=copy if out != OutFormat.FP16_169 else 0,
                          stride_a=lr, stride_b=mu if flags & Flag.MOMENTUM else 0,
                          stride_c=wd if flags & Flag.WEIGHT_DECAY else 0, **fields)

    def pcm_program(self, *, bad=False):
        """A PCM_PROGRAM of random weights (the extremes included); with ``bad``, one beyond ``w_max``
        in the last row."""
        c = self.config.pcm
        addr, stride = self.alloc(c.rows, 2 * c.cols, 1)
        w = np.array([[self.rng.randint(-c.w_max, c.w_max) for _ in range(c.cols)] for _ in range(c.rows)])
        w[0, 0], w[-1, -1] = c.w_max, -c.w_max
        if bad:
            w[-1, 0] = -c.w_max - 1
        for i, row in enumerate(w):
            self.write_mem(addr + i * stride, row.astype("<i2").tobytes())
        return Descriptor(opcode=Opcode.PCM_PROGRAM, m=c.rows, n=c.cols, seed=self.rng.getrandbits(32),
                          addr_a=addr, stride_a=stride)

    def pcm_mvm(self, batch, *, bad_vector=None, pad=1):
        """A PCM_MVM of ``batch`` random DAC-code vectors (ADC shift 8 to 12 below the accumulator width:
        some outputs clip);
        vector ``bad_vector`` gets a code beyond ``x_max``."""
        c = self.config.pcm
        addr_a, stride_a = self.alloc(batch, 2 * c.rows, pad)
        addr_d, stride_d = self.alloc(batch, 4 * c.cols, pad)
        for b in range(batch):
            x = np.array([self.rng.randint(-c.x_max, c.x_max) for _ in range(c.rows)])
            if b == bad_vector:
                x[-1] = c.x_max + 1
            self.write_mem(addr_a + b * stride_a, x.astype("<i2").tobytes())
        return Descriptor(opcode=Opcode.PCM_MVM, m=batch, n=c.cols, k=c.rows,
                          chunk=self.rng.randint(c.acc_bits - 12, c.acc_bits - 8),
                          addr_a=addr_a, stride_a=stride_a, addr_d=addr_d, stride_d=stride_d)

    async def run_ring(self, descs):
        """Submit ``descs``, wait for the irq and the tail, compare with golden."""
        for desc in descs:
            slot = RING_BASE + (self.head % 16) * DESCRIPTOR_BYTES
            self.write_mem(slot, desc.replace(status=0).pack())
            self.head = (self.head + 1) & 0xFFFF
        start = cocotb.simtime.get_sim_time("ns")
        await self.write(Reg.RING_HEAD, self.head)

        async def finish():
            while True:
                await RisingEdge(self.dut.clk)
                if int(self.dut.irq.value) and await self.read(Reg.RING_TAIL) == self.head:
                    return
                if int(self.dut.irq.value):
                    await self.write(Reg.IRQ_STATUS, Irq.DONE | Irq.ERROR)
        try:
            await with_timeout(finish(), self.timeout_us, "us")
        except SimTimeoutError:
            raise AssertionError(f"tail {await self.read(Reg.RING_TAIL)} never reached {self.head}") from None
        cycles = (cocotb.simtime.get_sim_time("ns") - start) // 10
        self.dut._log.info("%d descriptors in %d cycles", len(descs), cycles)
        await self.write(Reg.IRQ_STATUS, Irq.DONE | Irq.ERROR)
        return cycles

    async def run_ring_with_abort(self, descs, after_cycles=600):
        """Submit ``descs``, set CTRL.ABORT ``after_cycles`` later (inside the first, the victim) and
        wait for the tail. The victim's D rows may be partly written: golden takes them from the RAM."""
        victim = descs[0]
        for desc in descs:
            self.write_mem(RING_BASE + (self.head % 16) * DESCRIPTOR_BYTES, desc.pack())
            self.head += 1
        await self.write(Reg.RING_HEAD, self.head)
        for _ in range(after_cycles):
            await RisingEdge(self.dut.clk)
        await self.csr.write(Reg.CTRL, int(Ctrl.ENABLE | Ctrl.ABORT).to_bytes(4, "little"))

        async def finish():
            while await self.read(Reg.RING_TAIL) != self.head:
                pass
        await with_timeout(finish(), self.timeout_us, "us")
        span = victim.m * victim.stride_d
        self.golden.memory[victim.addr_d:victim.addr_d + span] = np.frombuffer(
            self.ram.read(victim.addr_d, span), np.uint8)

    def check(self, what, descs, codes=None):
        for index, desc in enumerate(descs):
            want = check(desc, True, self.config, WINDOW)
            assert want == ErrorCode.OK or codes, f"{what}: descriptor {index} refused: {want!r}"
        got = np.frombuffer(self.ram.read(0, MEM_SIZE), dtype=np.uint8)
        bad = np.flatnonzero(got != self.golden.memory)
        assert bad.size == 0, (f"{what}: {bad.size} bytes differ from golden; first at {bad[0]:#x}: "
                               f"{got[bad[0]]:#04x} != {self.golden.memory[bad[0]]:#04x}")

    def golden_fails(self, desc, code):
        """Make the golden device complete ``desc`` with ``code`` and leave memory untouched."""
        self.golden.fails[desc.addr_d] = code

    def check_statuses(self, what, codes):
        got = [int.from_bytes(self.ram.read(RING_BASE + i * DESCRIPTOR_BYTES + 4, 4), "little")
               for i in range(len(codes))]
        want = [STATUS_DONE | code for code in codes]
        assert got == want, f"{what}: status words {[hex(g) for g in got]} != {[hex(w) for w in want]}"

    async def check_macs(self, what, descs):
        """With ``exact_macs``: ``PERF_MAC`` (counted since reset) is the ``m * n * k`` of the GEMMs of
        ``descs``."""
        if not self.exact_macs:
            return
        got = await self.read(Reg.PERF_MAC) | await self.read(Reg.PERF_MAC + 4) << 32
        want = sum(desc.m * desc.n * desc.k for desc in descs if desc.opcode == Opcode.GEMM)
        assert got == want, f"{what}: PERF_MAC {got} != {want} products"

    async def check_registers(self, what):
        for reg in (Reg.STATUS, Reg.ERROR, Reg.RING_TAIL, Reg.PERF_DONE):
            got, want = await self.read(reg), self.golden.read_csr(reg)
            assert got == want, f"{what}: {reg.name} {got:#x} != golden {want:#x}"


async def _run(dut, descs_of, what, seed_offset):
    tb = CoreTB(dut, seed_offset)
    await tb.start()
    descs = descs_of(tb)
    await tb.run_ring(descs)
    tb.check(what, descs)
    tb.check_statuses(what, [ErrorCode.OK] * len(descs))
    await tb.check_registers(what)
    await tb.check_macs(what, descs)


@cocotb.test()
async def test_shapes(dut):
    """1x1x1, 3x5x7, several K blocks, every output format."""
    def descs(tb):
        return [tb.gemm(1, 1, 1), tb.gemm(3, 5, 7, out=OutFormat.E5M2),
                tb.gemm(5, 3, 40, out=OutFormat.E4M3, pad=1), tb.gemm(4, 9, 17, pad=2)]
    await _run(dut, descs, "shapes", 0)


@cocotb.test()
async def test_transposes(dut):
    def descs(tb):
        shape = (5, 6, 19)
        return [tb.gemm(*shape, flags=Flag.TRANS_A), tb.gemm(*shape, flags=Flag.TRANS_B, out=OutFormat.E5M2),
                tb.gemm(*shape, flags=Flag.TRANS_A | Flag.TRANS_B, out=OutFormat.E4M3, pad=1)]
    await _run(dut, descs, "transposes", 1)


@cocotb.test()
async def test_options(dut):
    """C, ReLU, scale, chunking, stochastic rounding with a seed, overflow to inf."""
    def descs(tb):
        shape = (5, 5, 21)
        return [tb.gemm(*shape, flags=Flag.HAS_C | Flag.RELU, scale=-2),
                tb.gemm(*shape, flags=Flag.HAS_C | Flag.ACC_STOCHASTIC | Flag.OUT_STOCHASTIC,
                        out=OutFormat.E4M3, seed=0x1234_5678, chunk=4, scale=-3),
                tb.gemm(*shape, flags=Flag.OVERFLOW_INF | Flag.TRANS_A | Flag.ACC_STOCHASTIC,
                        out=OutFormat.E5M2, seed=77, chunk=3, scale=12),
                tb.gemm(*shape, flags=Flag.OUT_STOCHASTIC, seed=5, out=OutFormat.E5M2)]
    await _run(dut, descs, "options", 2)


@cocotb.test()
async def test_updates(dut):
    """UPDATE descriptors (SR and RNE, momentum, weight decay, loss-scale undo, FP8 copies, odd counts)
    between GEMMs, through the update executor's turn on the DMA."""
    def descs(tb):
        return [tb.update(1), tb.gemm(3, 4, 9),
                tb.update(37, Flag.OUT_STOCHASTIC | Flag.MOMENTUM, out=OutFormat.E5M2, seed=0xBEEF, scale=-2),
                tb.update(130, Flag.WEIGHT_DECAY | Flag.MOMENTUM, out=OutFormat.E4M3),
                tb.update(64, Flag.OUT_STOCHASTIC | Flag.WEIGHT_DECAY, seed=7), tb.gemm(2, 5, 3)]
    await _run(dut, descs, "updates", 6)


async def _fault_then_good(dut, seed, what, code, descs):
    """``descs(tb)`` gives a GEMM with a buffer at FAULT_BASE and a good one: the first ends with ``code``
    and leaves D untouched, the next in the ring is correct."""
    tb = CoreTB(dut, seed)
    await tb.start()
    bad, good = descs(tb)
    tb.golden_fails(bad, code)
    tb.ram.faults_on = True
    await tb.run_ring([bad, good])
    tb.ram.faults_on = False
    tb.check_statuses(what, [code, ErrorCode.OK])
    tb.check(what, [bad, good])
    await tb.check_registers(what)


@cocotb.test()
async def test_read_error(dut):
    """A read SLVERR on A ends the GEMM with READ_ERROR; the next GEMM in the ring is correct."""
    await _fault_then_good(dut, 3, "read error", ErrorCode.READ_ERROR, lambda tb: (
        tb.gemm(2, 3, 5).replace(addr_a=FAULT_BASE), tb.gemm(3, 2, 9, out=OutFormat.E5M2)))


@cocotb.test()
async def test_write_error(dut):
    """A write SLVERR on D ends the GEMM with WRITE_ERROR (nothing of D lands: every burst is
    refused); the next GEMM is correct."""
    await _fault_then_good(dut, 4, "write error", ErrorCode.WRITE_ERROR, lambda tb: (
        tb.gemm(3, 3, 9, out=OutFormat.E5M2).replace(addr_d=FAULT_BASE), tb.gemm(2, 3, 5)))


@cocotb.test()
async def test_abort(dut):
    """CTRL.ABORT in the middle of a GEMM completes it ABORTED; the next GEMM is correct. The
    aborted GEMM's D rows may be partly written: that region is not compared."""
    tb = CoreTB(dut, 5)
    await tb.start()
    victim = tb.gemm(16, 16, 64)
    good = tb.gemm(3, 2, 9, out=OutFormat.E4M3)
    tb.golden_fails(victim, ErrorCode.ABORTED)
    await tb.run_ring_with_abort([victim, good], after_cycles=600)    # well inside the victim's ~4,500
    tb.check_statuses("abort", [ErrorCode.ABORTED, ErrorCode.OK])
    tb.check("abort", [victim, good])
    await tb.check_registers("abort")


async def _pcm_ring(tb, descs, what):
    """Run ``descs``; RAM (outputs and status words) and registers must match golden."""
    await tb.run_ring(descs)
    tb.check(what, [], None)
    await tb.check_registers(what)


def _statuses(tb, count):
    """The golden status words of the last ``count`` descriptors, as codes."""
    slots = [RING_BASE + ((tb.head - count + i) % 16) * DESCRIPTOR_BYTES + 4 for i in range(count)]
    return [ErrorCode(int.from_bytes(tb.golden.read_mem(slot, 4), "little") & 0xFF) for slot in slots]


@cocotb.test()
async def test_pcm(dut):
    """PCM_PROGRAM, PCM_MVM batches and PCM_TIME between GEMMs and UPDATEs; NOT_PROGRAMMED before the
    first PROGRAM and after a bad operand; BAD_OPERAND in a weight and in a vector (the vectors before
    it written); a refused descriptor (BAD_DIMENSION) leaves the tile alone."""
    tb = CoreTB(dut, 7)
    await tb.start()
    c = tb.config.pcm
    descs = [tb.pcm_mvm(1), tb.pcm_program(), tb.pcm_mvm(3, pad=0), tb.gemm(2, 3, 5),
             Descriptor(opcode=Opcode.PCM_TIME, k=37), tb.pcm_mvm(2), tb.update(9),
             tb.pcm_mvm(2).replace(k=c.rows + 1), Descriptor(opcode=Opcode.PCM_TIME, k=c.time_steps - 1),
             tb.pcm_mvm(1), tb.pcm_mvm(3, bad_vector=1), tb.pcm_mvm(1)]
    await _pcm_ring(tb, descs, "pcm")
    assert _statuses(tb, len(descs)) == [
        ErrorCode.NOT_PROGRAMMED, *[ErrorCode.OK] * 6, ErrorCode.BAD_DIMENSION, ErrorCode.OK, ErrorCode.OK,
        ErrorCode.BAD_OPERAND, ErrorCode.NOT_PROGRAMMED]
    descs = [tb.pcm_program(bad=True), tb.pcm_mvm(1), tb.pcm_program(), tb.pcm_mvm(2)]
    await _pcm_ring(tb, descs, "pcm reprogrammed")
    assert _statuses(tb, len(descs)) == [ErrorCode.BAD_OPERAND, ErrorCode.NOT_PROGRAMMED, ErrorCode.OK,
                                         ErrorCode.OK]
    mvm, program = tb.pcm_mvm(2), tb.pcm_program()
    refused = {ErrorCode.RESERVED_BITS: [mvm.replace(seed=1), mvm.replace(flags=Flag.RELU), program.replace(k=1),
                                         Descriptor(opcode=Opcode.PCM_TIME, k=3, stride_a=8)],
               ErrorCode.BAD_DIMENSION: [mvm.replace(chunk=c.acc_bits + 1), mvm.replace(m=0),
                                         program.replace(m=c.rows - 1),
                                         Descriptor(opcode=Opcode.PCM_TIME, k=c.time_steps)],
               ErrorCode.MISALIGNED: [program.replace(stride_a=4), mvm.replace(stride_d=4),
                                      mvm.replace(addr_d=mvm.addr_d + 4)],
               ErrorCode.OUT_OF_WINDOW: [mvm.replace(addr_d=WINDOW[1] - 8)]}
    descs = [desc for group in refused.values() for desc in group] + [mvm]
    await _pcm_ring(tb, descs, "pcm refused")
    assert _statuses(tb, len(descs)) == [code for code, group in refused.items() for _ in group] + [ErrorCode.OK]


@cocotb.test()
async def test_pcm_refused_without_tile(dut):
    """An accelerator without a PCM tile completes the PCM opcodes with BAD_OPCODE."""
    tb = CoreTB(dut, 10)
    await tb.start()
    descs = [Descriptor(opcode=Opcode.PCM_TIME), Descriptor(opcode=Opcode.PCM_PROGRAM, m=1, n=1, addr_a=DATA_BASE,
                                                            stride_a=8),
             tb.gemm(2, 2, 3), Descriptor(opcode=Opcode.PCM_MVM, m=1, n=1, k=1, addr_a=DATA_BASE, stride_a=8,
                                          addr_d=DATA_BASE, stride_d=8)]
    await _pcm_ring(tb, descs, "pcm without a tile")
    assert _statuses(tb, len(descs)) == [ErrorCode.BAD_OPCODE] * 2 + [ErrorCode.OK, ErrorCode.BAD_OPCODE]


@cocotb.test()
async def test_pcm_read_error(dut):
    """A read SLVERR on a PCM_MVM's vectors ends it with READ_ERROR and leaves the tile unprogrammed."""
    tb = CoreTB(dut, 8)
    await tb.start()
    bad = tb.pcm_mvm(2).replace(addr_a=FAULT_BASE)
    tb.golden_fails(bad, ErrorCode.READ_ERROR)
    tb.ram.faults_on = True
    descs = [tb.pcm_program(), tb.pcm_mvm(1), bad, tb.pcm_mvm(1), tb.pcm_program(), tb.pcm_mvm(2)]
    await _pcm_ring(tb, descs, "pcm read error")
    tb.ram.faults_on = False
    assert _statuses(tb, len(descs)) == [ErrorCode.OK, ErrorCode.OK, ErrorCode.READ_ERROR,
                                         ErrorCode.NOT_PROGRAMMED, ErrorCode.OK, ErrorCode.OK]


@cocotb.test()
async def test_pcm_write_error(dut):
    """A write SLVERR on a PCM_MVM's outputs ends it with WRITE_ERROR (nothing of them lands) and leaves
    the tile unprogrammed."""
    tb = CoreTB(dut, 11)
    await tb.start()
    bad = tb.pcm_mvm(2).replace(addr_d=FAULT_BASE)
    tb.golden_fails(bad, ErrorCode.WRITE_ERROR)
    tb.ram.faults_on = True
    descs = [tb.pcm_program(), bad, tb.pcm_mvm(1), tb.pcm_program(), tb.pcm_mvm(3)]
    await _pcm_ring(tb, descs, "pcm write error")
    tb.ram.faults_on = False
    assert _statuses(tb, len(descs)) == [ErrorCode.OK, ErrorCode.WRITE_ERROR, ErrorCode.NOT_PROGRAMMED,
                                         ErrorCode.OK, ErrorCode.OK]


@cocotb.test()
async def test_pcm_abort(dut):
    """CTRL.ABORT in the middle of a PCM_MVM batch completes it ABORTED and leaves the tile
    unprogrammed; the aborted command's output rows may be partly written (not compared)."""
    tb = CoreTB(dut, 9)
    await tb.start()
    await _pcm_ring(tb, [tb.pcm_program()], "pcm abort: program")
    victim = tb.pcm_mvm(40)
    tb.golden_fails(victim, ErrorCode.ABORTED)
    descs = [victim, tb.pcm_mvm(1), tb.pcm_program(), tb.pcm_mvm(2)]
    await tb.run_ring_with_abort(descs, after_cycles=600)
    tb.check("pcm abort", [], None)
    assert _statuses(tb, len(descs)) == [ErrorCode.ABORTED, ErrorCode.NOT_PROGRAMMED, ErrorCode.OK, ErrorCode.OK]
    await tb.check_registers("pcm abort")


class _FaultingGolden(GoldenDevice):
    """The golden device, except that descriptors named in ``fails`` (by their D address) complete with
    the given code and leave memory untouched, as a bus error does in the hardware."""

    def __init__(self, *args):
        super().__init__(*args)
        self.fails = {}

    def execute(self, desc):
        return self.fails[desc.addr_d] if desc.addr_d in self.fails else super().execute(desc)
