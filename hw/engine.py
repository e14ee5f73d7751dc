"""Command engine: the host-facing control of the accelerator, everything but the GEMM datapath
(DESIGN.md §4; the register map, descriptor layout and ring semantics are ``fp8train.protocol``, the
behaviour is ``sim.golden.device.GoldenDevice`` and ``check``).

An AXI4-Lite CSR slave (``hw.bus.csr.AxiLiteCsr``) and an AXI4 master DMA (``hw.bus.dma.Dma``) are
inside. The engine fetches each descriptor of the command ring through the DMA, checks it with the
rules and in the order of golden ``check()``, hands a checked GEMM, UPDATE or PCM command to an
*executor* (the tile controller, the update unit or the PCM executor, told apart by
``exec_cmd.p.opcode``) on ``exec_cmd`` and lends it the DMA until ``exec_done``, completes FENCE at
once, writes the completion word back, advances the tail and raises the interrupt.
"""

from amaranth.hdl import Cat, Const, Module, Mux, Signal, signed
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from fp8train.hw.bus.axi import AxiLiteSignature, AxiSignature
from fp8train.hw.bus.csr import AxiLiteCsr
from fp8train.hw.bus.dma import Dma, command_layout
from fp8train.hw.bus.serial_dma import SerialDma
from fp8train.hw.compare import at_most
from fp8train.protocol import (ALIGN, DESCRIPTOR_BYTES, DEVICE_ID, FLAG_OUT_SHIFT, FLAGS_DEFINED, GEMM_FLAGS,
                               MAX_DIM, MAX_UPDATE_COUNT, PCM_CONFIG_FIELDS, PCM_OPCODES, REG_WRITE_MASKS,
                               STATUS_DONE, UPDATE_FLAGS, VERSION, Ctrl, ErrorCode, Flag, Irq, Opcode, OutFormat,
                               Reg, Status, opcode_mask, pack_pcm_config)
from fp8train.sim.golden.device import check_pcm_tile

__all__ = ["CommandEngine", "exec_layout", "done_layout"]

WORD = 32                                    # bits per register and per descriptor word
DESCRIPTOR_WORDS = DESCRIPTOR_BYTES * 8 // WORD
BEAT = ALIGN * 8                             # DMA data width: one aligned 8-byte word per beat
FLAGS_WIDTH = FLAGS_DEFINED.bit_length()
DIM_WIDTH = MAX_DIM.bit_length()
COUNT_WIDTH = MAX_UPDATE_COUNT.bit_length()      # an UPDATE's element count (its ``k``)
CHUNK_WIDTH = 16                             # descriptor word 4, bits 0..15
SCALE_WIDTH = 8                              # descriptor word 4, bits 16..23
RING_COUNT_WIDTH = REG_WRITE_MASKS[Reg.RING_HEAD].bit_length()     # RING_HEAD / RING_TAIL
RING_SIZE_WIDTH = REG_WRITE_MASKS[Reg.RING_SIZE].bit_length()
CODE_WIDTH = REG_WRITE_MASKS[Reg.ERROR].bit_length()
OPCODE_WIDTH = 8                             # descriptor word 0, bits 0..7
IRQ_WIDTH = REG_WRITE_MASKS[Reg.IRQ_MASK].bit_length()
DMA_ERROR_WIDTH = 4
ADDR_A_WORD = 6                              # descriptor words 6 to 13: addr_a, stride_a, ... stride_d


def exec_layout(addr_width: int = 32) -> data.StructLayout:
    """A checked command as the executor receives it: the descriptor's fields, reserved bits dropped
    (``flags`` holds only the opcode's bits, ``k`` fits ``MAX_DIM`` or ``MAX_UPDATE_COUNT``), ``scale``
    signed; ``opcode`` names the executor."""
    fields = {"opcode": OPCODE_WIDTH, "flags": FLAGS_WIDTH, "m": DIM_WIDTH, "n": DIM_WIDTH, "k": COUNT_WIDTH,
              "chunk": CHUNK_WIDTH, "scale": signed(SCALE_WIDTH), "seed": WORD}
    for buf in "abcd":
        fields[f"addr_{buf}"] = addr_width
        fields[f"stride_{buf}"] = WORD
    return data.StructLayout(fields)


def done_layout() -> data.StructLayout:
    """The executor's answer: an ``ErrorCode``."""
    return data.StructLayout({"code": CODE_WIDTH})


def executor_members(addr_width: int, length_width: int) -> dict:
    """The ports every executor (tile controller, update executor, PCM executor) has: the engine's
    ``exec_*`` ports seen from the executor's side, so the core can route them to whichever owns the
    command."""
    command = stream.Signature(command_layout(addr_width, length_width))
    return {
        "cmd": In(stream.Signature(exec_layout(addr_width))),
        "done": Out(stream.Signature(done_layout())),
        "abort": In(1),
        "dma_rd_cmd": Out(command),
        "dma_rd_data": In(stream.Signature(data.StructLayout({"data": BEAT, "last": 1}))),
        "dma_wr_cmd": Out(command),
        "dma_wr_data": Out(stream.Signature(data.StructLayout({"data": BEAT, "strb": BEAT // 8}))),
        "dma_rd_done": In(1), "dma_wr_done": In(1), "dma_error": In(DMA_ERROR_WIDTH),
    }


def _check_int(name, value, low, high):
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise ValueError(f"{name} must be an integer from {low} to {high}, not {value!r}")


class CommandEngine(wiring.Component):
    """CSRs, command ring, descriptor checks, completion write-back, interrupt and counters.

    Parameters
    ----------
    rows, cols : int
        Array size reported in ``CONFIG_ARRAY`` (1 to 255 each).
    rbits : int
        Random bits per stochastic rounding, reported in ``CONFIG_ARRAY`` (1 to 255).
    max_chunk : int
        Largest descriptor ``chunk`` (1 to 65535): ``BAD_CHUNK`` above; ``CONFIG_LIMITS``.
    ring_log2_max : int
        ``RING_SIZE`` may be at most ``2 ** ring_log2_max`` slots (0 to 12); ``CONFIG_LIMITS``.
    max_burst : int
        The DMA's burst length (``Dma(max_burst=...)``).
    pcm : PcmConfig or None
        The device's PCM tile, reported in ``CONFIG_PCM*``; without one the PCM opcodes are BAD_OPCODE.
    update : bool
        Whether an update executor takes UPDATE commands; without one UPDATE is BAD_OPCODE (a small
        FPGA's configuration). ``CONFIG_OPCODES`` reports the opcodes executed.
    serial_dma : bool
        A :class:`~fp8train.hw.bus.serial_dma.SerialDma` (one single-beat transaction at a time, tens
        of cycles a word, a third of the ``Dma``'s logic) instead of the pipelined ``Dma``: the iCE40
        UP5K's engine; ``max_burst`` is then unused.
    counter_width : int
        Bits of ``PERF_BUSY``, ``PERF_MAC`` and ``PERF_DMA_STALL`` (33 to 64): the 64-bit registers
        read 0 above them. 48 bits wrap only after 2**48 cycles (1.5 years at 6 MHz) and save the
        iCE40 UP5K some 80 logic cells.
    pointer_ring : bool
        Lend the descriptor buffer's four (address, stride) beats to the executor as a ring of
        pointers it turns (``exec_ring_turn``), so that a serial executor keeps no pointer
        registers of its own (:class:`~fp8train.hw.serial_gemm.SerialGemm`; the iCE40 UP5K's).

    Members
    -------
    s_axil : In(AxiLiteSignature(addr_width=12, data_width=32))
        Registers ``protocol.Reg``; unmapped addresses answer DECERR. Writes to read-only registers
        are ignored (OKAY); reading ``PERF_CLEAR`` gives 0. Reading a 64-bit counter's low word
        latches its high word, which the next read of ``+4`` returns (read low, then high).
    m_axi : Out(AxiSignature(addr_width=32, data_width=64))
        The DMA's port.
    irq : Out(1)
        ``|(IRQ_STATUS & IRQ_MASK)``, registered.
    exec_cmd : Out(stream.Signature(exec_layout()))
        A checked GEMM, UPDATE or PCM command. Offered in the cycle after the check; ``valid`` stays up
        until ``ready`` unless ``abort`` pulses (then the offer is withdrawn: the command completes
        ABORTED). The payload stays unchanged from the handshake until ``exec_done`` is taken (the
        descriptor buffer is written only by the next fetch, and by ``exec_ring_turn``), so an
        executor may read its fields there instead of keeping a copy.
    exec_done : In(stream.Signature(done_layout()))
        The executor's completion code (``OK``, ``READ_ERROR``, ``WRITE_ERROR``, ...), one per
        accepted ``exec_cmd``; ``ready`` is high from the ``exec_cmd`` handshake until it is taken,
        except in the cycle of an ``abort`` pulse. After ``abort`` the executor must not answer the
        aborted command.
    exec_dma_rd_cmd, exec_dma_wr_cmd, exec_dma_wr_data : In(stream)
    exec_dma_rd_data : Out(stream)
    exec_dma_rd_done, exec_dma_wr_done : Out(1)
    exec_dma_error : Out(4)
        The ``Dma``'s command/data streams, done pulses and sticky error (``DmaError``), connected to
        the executor only from the ``exec_cmd`` handshake to the ``exec_done`` handshake (otherwise
        the executor's streams see ``ready``/``valid`` 0 and the pulses 0). While the executor owns
        them the DMA window is ``WINDOW_BASE``/``WINDOW_LIMIT``. The engine clears the DMA error
        before and after each executor command: the executor reports a DMA error through its code.
    exec_ring_turn : In(1), exec_ring_tail : In(addr_width)
        With ``pointer_ring``, while the executor owns the DMA: each cycle ``exec_ring_turn`` is high
        the (address, stride) beats of A, B, C and D turn one place (``exec_cmd.p.addr_b`` into
        ``addr_a``, ...) and the first's stride goes round to the last with ``exec_ring_tail`` as its
        address. ``exec_cmd.p``'s other fields stay unchanged.
    mac_active : In(range(rows * cols + 1))
        MACs busy this cycle; summed into ``PERF_MAC``.
    abort : Out(1)
        One-cycle pulse: drop the current command (and an offered ``exec_cmd``) and return to idle.
        The engine pulses the DMA's ``abort`` in the same cycle, waits for the DMA to be idle, then
        completes the command with ``ABORTED``.

    Ring and cycle contract
    -----------------------
    In idle, with ``CTRL.ENABLE``, ``RING_HEAD != RING_TAIL`` and ``RING_SIZE`` a power of two from 1
    to ``2 ** ring_log2_max`` (otherwise nothing happens), the engine reads the 64 bytes at
    ``RING_BASE + (RING_TAIL % RING_SIZE) * 64`` (8 beats). The ring fetch and the status write-back
    are **not** window-checked (the DMA window is 0 .. 2**32 - 1 for them; the host owns the ring).
    Then four cycles check the buffers (one multiplier, A, B, C, D) and one decides the code in
    golden ``check()`` order: BAD_OPCODE, RESERVED_BITS, (FENCE: OK), BAD_FORMAT, BAD_DIMENSION,
    BAD_CHUNK (GEMM), MISALIGNED, OUT_OF_WINDOW; an UPDATE's flags, factor fields and single-row
    buffers follow golden ``_check_update``, a PCM command's golden ``_check_pcm``. A GEMM, UPDATE or PCM
    command that passes goes to the executor. The completion word
    ``STATUS_DONE | code`` is written as one beat with strobes 0xF0 at the slot address; after its
    write response the tail advances, ``PERF_DONE`` counts, ``IRQ_STATUS`` gets ``DONE`` (and
    ``ERROR`` with ``ERROR := code`` when the code is not OK). A DMA error on the fetch gives
    ``READ_ERROR`` (the write-back is still tried), on the write-back ``WRITE_ERROR``; the DMA error is
    cleared and the ring goes on. ``CTRL.ABORT`` during a command completes it with ``ABORTED``
    (a FENCE or a refused descriptor included, unless its write-back has begun); in idle it does
    nothing. ``STATUS.BUSY`` and ``PERF_BUSY`` count every cycle out of idle.
    """

    def __init__(self, *, rows: int, cols: int, rbits: int, max_chunk: int, ring_log2_max: int = 12,
                 max_burst: int = 16, pcm=None, update: bool = True, serial_dma: bool = False,
                 counter_width: int = 64, pointer_ring: bool = False):
        _check_int("rows", rows, 1, 255)
        _check_int("cols", cols, 1, 255)
        _check_int("rbits", rbits, 1, 255)
        _check_int("max_chunk", max_chunk, 1, (1 << CHUNK_WIDTH) - 1)
        _check_int("ring_log2_max", ring_log2_max, 0, 12)
        _check_int("counter_width", counter_width, WORD + 1, 2 * WORD)
        self.counter_width = counter_width
        self.rows, self.cols, self.rbits = rows, cols, rbits
        self.max_chunk, self.ring_log2_max = max_chunk, ring_log2_max
        if pcm is not None:
            check_pcm_tile(pcm)
        self.pcm = pcm
        if not isinstance(update, bool):
            raise TypeError(f"update must be True or False, not {update!r}")
        self.update = update
        if not isinstance(serial_dma, bool):
            raise TypeError(f"serial_dma must be True or False, not {serial_dma!r}")
        self.serial_dma = serial_dma
        if not isinstance(pointer_ring, bool):
            raise TypeError(f"pointer_ring must be True or False, not {pointer_ring!r}")
        self.pointer_ring = pointer_ring
        self.csr = AxiLiteCsr(addr_width=12, data_width=WORD)
        if serial_dma:
            self.dma = SerialDma(data_width=BEAT)
        else:
            self.dma = Dma(max_burst=max_burst, max_reads_outstanding=16, max_writes_outstanding=8,
                           data_width=BEAT)
        self.addr_width = self.dma.addr_width
        assert self.addr_width == WORD, "a descriptor's address is a word"
        command = stream.Signature(command_layout(self.addr_width, self.dma.length_width))
        super().__init__({
            "s_axil": In(AxiLiteSignature(addr_width=12, data_width=WORD)),
            "m_axi": Out(AxiSignature(addr_width=self.addr_width, data_width=BEAT)),
            "irq": Out(1),
            "exec_cmd": Out(stream.Signature(exec_layout(self.addr_width))),
            "exec_done": In(stream.Signature(done_layout())),
            # The executor's view of the DMA: the same directions as the Dma's own ports.
            "exec_dma_rd_cmd": In(command),
            "exec_dma_rd_data": Out(stream.Signature(data.StructLayout({"data": BEAT, "last": 1}))),
            "exec_dma_wr_cmd": In(command),
            "exec_dma_wr_data": In(stream.Signature(data.StructLayout({"data": BEAT,
                                                                       "strb": BEAT // 8}))),
            "exec_dma_rd_done": Out(1), "exec_dma_wr_done": Out(1),
            "exec_dma_error": Out(DMA_ERROR_WIDTH),
            "mac_active": In(range(rows * cols + 1)),
            "abort": Out(1),
            **({"exec_ring_turn": In(1), "exec_ring_tail": In(self.addr_width)} if pointer_ring else {}),
        })

    @property
    def opcodes(self) -> frozenset:
        """The opcodes this engine hands to an executor or completes itself (``CONFIG_OPCODES``)."""
        return frozenset({Opcode.FENCE, Opcode.GEMM} | ({Opcode.UPDATE} if self.update else set()) |
                         (PCM_OPCODES if self.pcm is not None else set()))

    # -- the register file -----------------------------------------------------------------------
    def _registers(self, m, r):
        csr = self.csr
        byte_mask = Signal(WORD)
        m.d.comb += byte_mask.eq(Mux(csr.w_strb[0], 0xFF, 0) | Mux(csr.w_strb[1], 0xFF00, 0) |
                                 Mux(csr.w_strb[2], 0xFF_0000, 0) | Mux(csr.w_strb[3], 0xFF00_0000, 0))

        def merged(reg):
            return (reg & ~byte_mask) | (csr.w_data & byte_mask)

        config_array = self.rows | self.cols << 8 | self.rbits << 16
        config_limits = self.max_chunk | self.ring_log2_max << 16
        read_value = Signal(WORD)
        mapped = Signal()
        writable = {Reg.CTRL, Reg.ERROR, Reg.IRQ_STATUS, Reg.IRQ_MASK, Reg.RING_BASE, Reg.RING_SIZE,
                    Reg.RING_HEAD, Reg.WINDOW_BASE, Reg.WINDOW_LIMIT, Reg.PERF_CLEAR}
        pcm_fields = None if self.pcm is None else {
            name: getattr(self.pcm, name) for layout in PCM_CONFIG_FIELDS.values() for name, _ in layout}
        values = {Reg.ID: DEVICE_ID, Reg.VERSION: VERSION, Reg.CONFIG_ARRAY: config_array,
                  Reg.CONFIG_LIMITS: config_limits, Reg.CONFIG_OPCODES: opcode_mask(self.opcodes),
                  **pack_pcm_config(pcm_fields), Reg.CTRL: r["enable"],
                  Reg.STATUS: Mux(r["busy"], Status.BUSY, 0) | Mux(r["error"] != 0, Status.ERROR, 0),
                  Reg.ERROR: r["error"], Reg.IRQ_STATUS: r["irq_status"], Reg.IRQ_MASK: r["irq_mask"],
                  Reg.RING_BASE: r["ring_base"], Reg.RING_SIZE: r["ring_size"],
                  Reg.RING_HEAD: r["head"], Reg.RING_TAIL: r["tail"],
                  Reg.WINDOW_BASE: r["window_base"], Reg.WINDOW_LIMIT: r["window_limit"],
                  Reg.PERF_DONE: r["done"], Reg.PERF_CLEAR: 0}
        counters = {Reg.PERF_BUSY: r["perf_busy"], Reg.PERF_MAC: r["perf_mac"],
                    Reg.PERF_DMA_STALL: r["perf_stall"]}
        high_latch = Signal(self.counter_width - WORD)
        # The read is a continuous OR of decodes (not a Switch: Icarus, see `elaborate`) that the
        # CSR samples in the cycle after ``r_stb``; a counter's high word is latched in that cycle
        # too, so that the two words are of one count.
        sampled = Signal()
        m.d.sync += sampled.eq(csr.r_stb)
        decode = [(addr, value) for addr, value in values.items()]
        for addr, counter in counters.items():
            decode += [(addr, counter[:WORD]), (addr + 4, high_latch)]
            with m.If(sampled & (csr.addr == addr)):
                m.d.sync += high_latch.eq(counter[WORD:])
        hits = [csr.addr == addr for addr, _ in decode]
        value_or = 0
        for hit, (_, value) in zip(hits, decode):
            value_or = value_or | Mux(hit, value, 0)
        mapped_or = 0
        for hit in hits:
            mapped_or = mapped_or | hit
        m.d.comb += [read_value.eq(value_or), mapped.eq(mapped_or)]
        m.d.comb += [csr.r_data.eq(read_value), csr.r_err.eq(~mapped), csr.w_err.eq(~mapped)]

        # Writes (the engine's own updates come after these in `elaborate`, and win).
        write = {addr: Signal(name=f"write_{addr.name.lower()}") for addr in writable}
        for addr, sig in write.items():
            m.d.comb += sig.eq(csr.w_stb & (csr.addr == addr))
        with m.If(write[Reg.CTRL]):
            m.d.sync += r["enable"].eq(merged(r["enable"])[0])
        for addr, name in ((Reg.ERROR, "error"), (Reg.IRQ_MASK, "irq_mask"), (Reg.RING_BASE, "ring_base"),
                           (Reg.RING_SIZE, "ring_size"), (Reg.WINDOW_BASE, "window_base"),
                           (Reg.WINDOW_LIMIT, "window_limit")):
            with m.If(write[addr]):
                m.d.sync += r[name].eq(merged(r[name]))
        with m.If(write[Reg.RING_HEAD]):
            m.d.sync += r["head"].eq(merged(r["head"])[:RING_COUNT_WIDTH])
        m.d.comb += [r["w1c"].eq(Mux(write[Reg.IRQ_STATUS], csr.w_data & byte_mask, 0)),
                     r["abort_write"].eq(write[Reg.CTRL] & (csr.w_data & byte_mask)[1]),
                     r["perf_clear"].eq(write[Reg.PERF_CLEAR])]
        assert Ctrl.ABORT == 1 << 1 and Ctrl.ENABLE == 1 << 0

    # -- descriptor checks -----------------------------------------------------------------------
    def _kept_k(self):
        """The bits of ``k`` kept: an UPDATE's or a PCM command's count, else a GEMM dimension."""
        return COUNT_WIDTH if self.update or self.pcm is not None else DIM_WIDTH

    def _fields(self, w, k_high_clear, reserved_clear):
        """Named fields of the descriptor words ``w`` (``protocol.Descriptor.pack``). Bits that only
        have to be 0 are not kept (words 14 and 15, the flags above ``FLAGS_DEFINED``, word 4's top
        byte): ``reserved_clear`` says whether they were; nor are ``k``'s above ``_kept_k()`` bits,
        whose being 0 ``k_high_clear`` says (``k``'s top bit here)."""
        f = {"opcode": w[0][:8], "flags": w[0][8:8 + FLAGS_WIDTH], "m": w[2][:16], "n": w[2][16:],
             "k": Cat(w[3][:self._kept_k()], ~k_high_clear), "chunk": w[4][:16], "scale": w[4][16:24],
             "seed": w[5], "reserved_clear": reserved_clear}
        for index, buf in enumerate("abcd"):
            f[f"addr_{buf}"], f[f"stride_{buf}"] = w[ADDR_A_WORD + 2 * index], w[ADDR_A_WORD + 1 + 2 * index]
        return f

    def _pcm_checks(self, f):
        """Golden ``_check_pcm`` on the fields ``f``: whether the dimensions are the tile's, whether an
        unused field is not 0, and (rows, bytes per row, present) of the A, B, C, D buffers (A: int16
        operands, D: PCM_MVM's int32 outputs). Constants without a tile (the opcodes are refused)."""
        if self.pcm is None:
            return Const(0), Const(0), [(0, 0, Const(0))] * 4
        tile = self.pcm
        program, mvm = f["opcode"] == Opcode.PCM_PROGRAM, f["opcode"] == Opcode.PCM_MVM
        dims_ok = Mux(program, (f["m"] == tile.rows) & (f["n"] == tile.cols),
                      Mux(mvm, (f["m"] != 0) & (f["k"] == tile.rows) & (f["n"] == tile.cols) &
                          at_most(f["chunk"], tile.acc_bits),
                          at_most(f["k"], tile.time_steps - 1)))
        unused_b_c = (f["addr_b"] != 0) | (f["stride_b"] != 0) | (f["addr_c"] != 0) | (f["stride_c"] != 0)
        unused_d = (f["addr_d"] != 0) | (f["stride_d"] != 0)
        reserved = (f["scale"] != 0) | unused_b_c | Mux(
            program, (f["k"] != 0) | (f["chunk"] != 0) | unused_d,
            Mux(mvm, f["seed"] != 0,
                (f["m"] != 0) | (f["n"] != 0) | (f["chunk"] != 0) | (f["seed"] != 0) | (f["addr_a"] != 0) |
                (f["stride_a"] != 0) | unused_d))
        a_bytes = Mux(program, f["n"], f["k"][:DIM_WIDTH]) << 1
        absent = (0, 0, Const(0))
        buffers = [(f["m"], a_bytes, program | mvm), absent, absent, (f["m"], f["n"] << 2, mvm)]
        return dims_ok, reserved, buffers

    def elaborate(self, platform):
        m = Module()
        m.submodules.csr = csr = self.csr
        m.submodules.dma = dma = self.dma
        wiring.connect(m, wiring.flipped(self.s_axil), csr.s_axil)
        wiring.connect(m, dma.m_axi, wiring.flipped(self.m_axi))

        # Registers.
        r = {"enable": Signal(), "error": Signal(CODE_WIDTH), "irq_status": Signal(IRQ_WIDTH),
             "irq_mask": Signal(IRQ_WIDTH), "ring_base": Signal(WORD),
             "ring_size": Signal(RING_SIZE_WIDTH, init=1),
             "head": Signal(RING_COUNT_WIDTH), "tail": Signal(RING_COUNT_WIDTH),
             "window_base": Signal(WORD), "window_limit": Signal(WORD), "done": Signal(WORD),
             "perf_busy": Signal(self.counter_width), "perf_mac": Signal(self.counter_width),
             "perf_stall": Signal(self.counter_width), "busy": Signal(),
             "w1c": Signal(WORD), "abort_write": Signal(), "perf_clear": Signal()}
        self._registers(m, r)
        busy = r["busy"]

        # Counters.
        with m.If(r["perf_clear"]):
            m.d.sync += [r["perf_busy"].eq(0), r["perf_mac"].eq(0), r["perf_stall"].eq(0),
                         r["done"].eq(0)]
        with m.Else():
            m.d.sync += [r["perf_busy"].eq(r["perf_busy"] + busy),
                         r["perf_mac"].eq(r["perf_mac"] + self.mac_active),
                         r["perf_stall"].eq(r["perf_stall"] + dma.stall)]

        # Descriptor buffer: the first 7 of its 8 beats of 64 bits; of reserved bits (the last beat
        # among them) only whether they are 0 is kept (flip-flops the iCE40 UP5K feels).
        beats = DESCRIPTOR_BYTES // ALIGN
        desc = Signal((beats - 1) * BEAT)
        words = [desc.word_select(i, WORD) for i in range(DESCRIPTOR_WORDS - BEAT // WORD)]
        # Whether the bits not kept were 0, per beat: (beat, first bit, flag), from the fetch.
        tail_clear, flags_high_clear, k_high_clear, scale_high_clear = (
            Signal(name=name) for name in ("tail_clear", "flags_high_clear", "k_high_clear", "scale_high_clear"))
        clear_checks = [(0, 8 + FLAGS_WIDTH, WORD, flags_high_clear), (1, WORD + self._kept_k(), BEAT, k_high_clear),
                        (2, 24, WORD, scale_high_clear), (beats - 1, 0, BEAT, tail_clear)]
        buffer_beats = desc[ADDR_A_WORD * WORD:(ADDR_A_WORD + 8) * WORD]     # (addr, stride) of A, B, C, D
        f = self._fields(words, k_high_clear, tail_clear & flags_high_clear & scale_high_clear)
        beat = Signal(range(beats))
        slot = Signal(self.addr_width)
        code = Signal(CODE_WIDTH)
        abort_req = Signal()
        issued = Signal()                    # fetch: rd_cmd taken; write-back: wr_cmd taken
        data_sent = Signal()                 # write-back: wr_data taken
        fetch_failed, complete, owner_exec = Signal(), Signal(), Signal()
        eng_rd_valid, eng_rd_ready, eng_wr_valid, eng_wd_valid = Signal(), Signal(), Signal(), Signal()

        # Early checks (combinational on the buffered descriptor).
        flags = f["flags"]
        out_format = flags[FLAG_OUT_SHIFT:FLAG_OUT_SHIFT + 2]
        k_ok = (f["k"] != 0) & at_most(f["k"], MAX_DIM)
        is_fence, is_gemm = f["opcode"] == Opcode.FENCE, f["opcode"] == Opcode.GEMM
        is_update = (f["opcode"] == Opcode.UPDATE) if self.update else Const(0)
        pcm_dims_ok, pcm_reserved, pcm_buffers = self._pcm_checks(f)
        is_pcm = Const(0) if self.pcm is None else (f["opcode"] == Opcode.PCM_PROGRAM) | (
            f["opcode"] == Opcode.PCM_MVM) | (f["opcode"] == Opcode.PCM_TIME)
        dims_ok = Mux(is_update, (f["k"] != 0) & at_most(f["k"], MAX_UPDATE_COUNT) & (f["m"] == 0) & (f["n"] == 0),
                      Mux(is_pcm, pcm_dims_ok, (f["m"] != 0) & (f["n"] != 0) & k_ok))
        # An UPDATE keeps its factors in the low halves of stride_a..c (sim/golden/device.py).
        update_reserved = ((f["stride_a"][16:] != 0) | (f["stride_b"][16:] != 0) | (f["stride_c"][16:] != 0) |
                           (f["stride_d"] != 0) | (f["chunk"] != 0))
        reserved_flags = Mux(is_update, flags & ~UPDATE_FLAGS, Mux(is_pcm, flags, flags & ~GEMM_FLAGS))

        # Buffer checks, one buffer per cycle: A, B, C, D (C only with HAS_C). An UPDATE's buffers
        # are single rows: w, g, v (with MOMENTUM), the FP8 copy (with an FP8 OUT_FORMAT). The four
        # (address, stride) beats of the buffer turn one place per cycle, so the buffer checked is
        # always in the first (four turns put them back): no multiplexer selects it.
        k16, m16, n16 = f["k"][:DIM_WIDTH], f["m"], f["n"]
        count = f["k"][:COUNT_WIDTH]
        trans_a, trans_b, has_c = flags[0], flags[1], flags[2]
        assert Flag.TRANS_A == 1 and Flag.TRANS_B == 2 and Flag.HAS_C == 4
        momentum = (flags & Flag.MOMENTUM) != 0
        d_bytes = Mux(out_format == OutFormat.FP16_169, n16 << 1, n16)
        buffers = [(Mux(trans_a, k16, m16), Mux(trans_a, m16, k16), 1),
                   (Mux(trans_b, n16, k16), Mux(trans_b, k16, n16), 1),
                   (m16, n16 << 1, has_c),
                   (m16, d_bytes, 1)]
        update_buffers = [(count << 1, 1), (count << 1, 1), (count << 1, momentum),
                          (count, out_format != OutFormat.FP16_169)]
        index = Signal(range(len(buffers)))
        b_addr, b_stride = f["addr_a"], f["stride_a"]
        b_rows, b_bytes, b_present = Signal(DIM_WIDTH), Signal(COUNT_WIDTH + 1), Signal()
        with m.Switch(index):
            for i, (rows, nbytes, present) in enumerate(buffers):
                with m.Case(i):
                    u_bytes, u_present = update_buffers[i]
                    p_rows, p_bytes, p_present = pcm_buffers[i]
                    m.d.comb += [b_rows.eq(Mux(is_update, 1, Mux(is_pcm, p_rows, rows))),
                                 b_bytes.eq(Mux(is_update, u_bytes, Mux(is_pcm, p_bytes, nbytes))),
                                 b_present.eq(Mux(is_update, u_present, Mux(is_pcm, p_present, present)))]
        low = (ALIGN - 1).bit_length()
        # The end of the buffer, addr + (rows - 1) * stride + bytes rounded up to words, in 34 bits: a
        # product of 2**32 or more is past any window anyway.
        product, span_end = Signal(WORD + DIM_WIDTH + 1), Signal(WORD + 2)
        m.d.comb += [product.eq((b_rows - 1) * b_stride),
                     span_end.eq(b_addr + product[:WORD] + (((b_bytes + ALIGN - 1) >> low) << low))]
        b_misaligned = b_present & ((b_addr[:low] != 0) |
                                    (~is_update & ((b_stride[:low] != 0) | (b_stride < b_bytes))))
        b_outside = b_present & ((b_addr < r["window_base"]) | (product[WORD:] != 0) | (span_end > r["window_limit"]))
        misaligned, outside = Signal(), Signal()

        decided = Signal(CODE_WIDTH)
        with m.If(~(is_fence | is_gemm | is_update | is_pcm)):
            m.d.comb += decided.eq(ErrorCode.BAD_OPCODE)
        with m.Elif(~f["reserved_clear"] | (reserved_flags != 0) | (is_update & update_reserved) |
                    (is_pcm & pcm_reserved)):
            m.d.comb += decided.eq(ErrorCode.RESERVED_BITS)
        with m.Elif(is_fence):
            m.d.comb += decided.eq(ErrorCode.OK)
        with m.Elif(out_format == 3):
            m.d.comb += decided.eq(ErrorCode.BAD_FORMAT)
        with m.Elif(~dims_ok):
            m.d.comb += decided.eq(ErrorCode.BAD_DIMENSION)
        with m.Elif(is_gemm & ~at_most(f["chunk"], self.max_chunk)):
            m.d.comb += decided.eq(ErrorCode.BAD_CHUNK)
        with m.Elif(misaligned):
            m.d.comb += decided.eq(ErrorCode.MISALIGNED)
        with m.Elif(outside):
            m.d.comb += decided.eq(ErrorCode.OUT_OF_WINDOW)
        with m.Else():
            m.d.comb += decided.eq(ErrorCode.OK)
        assert max(OutFormat) == 2

        # Ring state.
        size = r["ring_size"]
        size_ok = (size != 0) & ((size & (size - 1)) == 0) & at_most(size, 1 << self.ring_log2_max)
        start = r["enable"] & (r["head"] != r["tail"]) & size_ok
        slot_index = r["tail"] & (size - 1)[:RING_COUNT_WIDTH]
        slot_shift = (DESCRIPTOR_BYTES - 1).bit_length()

        # Executor payload.
        payload = self.exec_cmd.p
        m.d.comb += [payload.flags.eq(flags[:FLAGS_WIDTH]), payload.m.eq(m16), payload.n.eq(n16),
                      payload.k.eq(count), payload.opcode.eq(f["opcode"]), payload.chunk.eq(f["chunk"]),
                     payload.scale.eq(f["scale"]),
                     payload.seed.eq(f["seed"])]
        for buf in "abcd":
            m.d.comb += [payload[f"addr_{buf}"].eq(f[f"addr_{buf}"]),
                         payload[f"stride_{buf}"].eq(f[f"stride_{buf}"])]

        # Every output is a continuous expression of registers (the FSM's state included): Icarus
        # never evaluates an always block whose inputs keep their initial values (hw/bus/csr.py).
        fsm_state = {}
        with m.FSM(name="engine") as fsm:
            with m.State("IDLE"):
                m.d.sync += [abort_req.eq(0), issued.eq(0), beat.eq(0)]
                with m.If(start):
                    m.d.sync += slot.eq(r["ring_base"] + (slot_index << slot_shift))
                    m.next = "FETCH"
            with m.State("FETCH"):
                with m.If(dma.rd_cmd.ready):
                    m.d.sync += issued.eq(1)
                with m.If(dma.rd_data.valid):
                    m.d.sync += beat.eq(beat + 1)
                    with m.If(beat != beats - 1):
                        m.d.sync += desc.word_select(beat, BEAT).eq(dma.rd_data.p.data)
                    for at_beat, first, stop, clear in clear_checks:
                        with m.If(beat == at_beat):
                            m.d.sync += clear.eq(dma.rd_data.p.data[first:stop] == 0)
                    with m.If(dma.rd_data.p.last):
                        m.d.sync += [index.eq(0), misaligned.eq(0), outside.eq(0)]
                        m.next = "CHECK"
                with m.Elif(fetch_failed):
                    m.d.sync += [code.eq(ErrorCode.READ_ERROR), issued.eq(0), data_sent.eq(0)]
                    m.next = "WRITE_BACK"
            with m.State("CHECK"):
                m.d.sync += [misaligned.eq(misaligned | b_misaligned), outside.eq(outside | b_outside),
                             index.eq(index + 1), buffer_beats.eq(buffer_beats.rotate_right(BEAT))]
                with m.If(index == len(buffers) - 1):
                    m.next = "DECIDE"
            with m.State("DECIDE"):
                m.d.sync += [code.eq(Mux(abort_req, ErrorCode.ABORTED, decided)), issued.eq(0),
                             data_sent.eq(0)]
                with m.If(~abort_req & (is_gemm | is_update | is_pcm) & (decided == ErrorCode.OK)):
                    m.next = "DISPATCH"
                with m.Else():
                    m.next = "WRITE_BACK"
            with m.State("DISPATCH"):
                with m.If(abort_req):
                    m.d.sync += code.eq(ErrorCode.ABORTED)
                    m.next = "DRAIN"
                with m.Elif(self.exec_cmd.ready):
                    m.next = "EXECUTE"
            with m.State("EXECUTE"):
                with m.If(abort_req):
                    m.d.sync += code.eq(ErrorCode.ABORTED)
                    m.next = "DRAIN"
                with m.Elif(self.exec_done.valid):
                    m.d.sync += code.eq(self.exec_done.p.code)
                    m.next = "DRAIN"
                if self.pointer_ring:
                    head_stride = buffer_beats[WORD:BEAT]
                    with m.If(self.exec_ring_turn):
                        m.d.sync += buffer_beats.eq(Cat(buffer_beats[BEAT:], self.exec_ring_tail, head_stride))
            with m.State("DRAIN"):
                # Wait for the DMA to finish (or drop) the executor's work, then clear its error.
                with m.If(~dma.busy):
                    m.d.sync += [issued.eq(0), data_sent.eq(0)]
                    m.next = "WRITE_BACK"
            with m.State("WRITE_BACK"):
                with m.If(dma.wr_cmd.ready):
                    m.d.sync += issued.eq(1)
                with m.If(dma.wr_data.ready):
                    m.d.sync += data_sent.eq(1)
                with m.If(dma.wr_done):
                    with m.If(dma.error != 0):
                        m.d.sync += code.eq(ErrorCode.WRITE_ERROR)
                    m.next = "COMPLETE"
            with m.State("COMPLETE"):
                m.next = "IDLE"
        for name in ("IDLE", "FETCH", "DISPATCH", "EXECUTE", "DRAIN", "WRITE_BACK", "COMPLETE"):
            fsm_state[name] = Signal(name=f"in_{name.lower()}")
            m.d.comb += fsm_state[name].eq(fsm.ongoing(name))
        st = fsm_state
        m.d.comb += [
            fetch_failed.eq(dma.rd_done & (dma.error != 0)),
            busy.eq(~st["IDLE"]),
            complete.eq(st["COMPLETE"]),
            owner_exec.eq(st["EXECUTE"]),
            self.abort.eq((st["DISPATCH"] | st["EXECUTE"]) & abort_req),
            self.exec_cmd.valid.eq(st["DISPATCH"] & ~abort_req),
            self.exec_done.ready.eq(st["EXECUTE"] & ~abort_req),
            eng_rd_valid.eq(st["FETCH"] & ~issued),
            eng_rd_ready.eq(st["FETCH"]),
            eng_wr_valid.eq(st["WRITE_BACK"] & ~issued),
            eng_wd_valid.eq(st["WRITE_BACK"] & ~data_sent),
            dma.clear.eq(st["IDLE"] | st["COMPLETE"] | (st["FETCH"] & fetch_failed) |
                         (st["DRAIN"] & ~dma.busy)),
        ]

        # DMA ownership: the executor's while it executes, the engine's otherwise (Mux, not If:
        # continuous assignments, see above).
        abort = self.abort
        all_ones = (1 << self.addr_width) - 1
        ex_rd, ex_wr, ex_wd, ex_rdata = (self.exec_dma_rd_cmd, self.exec_dma_wr_cmd,
                                         self.exec_dma_wr_data, self.exec_dma_rd_data)
        eng_wdata = Signal.like(dma.wr_data.p.as_value())
        m.d.comb += eng_wdata.eq(Cat(Const(0, WORD), Const(STATUS_DONE, WORD) | code, Const(0xF0, ALIGN)))
        m.d.comb += [
            dma.rd_cmd.p.eq(Mux(owner_exec, ex_rd.p.as_value(), Cat(slot, Const(DESCRIPTOR_BYTES,
                                                                             self.dma.length_width)))),
            dma.rd_cmd.valid.eq(Mux(owner_exec, ex_rd.valid & ~abort, eng_rd_valid)),
            ex_rd.ready.eq(owner_exec & dma.rd_cmd.ready & ~abort),
            dma.wr_cmd.p.eq(Mux(owner_exec, ex_wr.p.as_value(), Cat(slot, Const(ALIGN,
                                                                             self.dma.length_width)))),
            dma.wr_cmd.valid.eq(Mux(owner_exec, ex_wr.valid & ~abort, eng_wr_valid)),
            ex_wr.ready.eq(owner_exec & dma.wr_cmd.ready & ~abort),
            dma.wr_data.p.eq(Mux(owner_exec, ex_wd.p.as_value(), eng_wdata)),
            dma.wr_data.valid.eq(Mux(owner_exec, ex_wd.valid, eng_wd_valid)),
            ex_wd.ready.eq(owner_exec & dma.wr_data.ready),
            ex_rdata.p.eq(dma.rd_data.p),
            ex_rdata.valid.eq(owner_exec & dma.rd_data.valid),
            dma.rd_data.ready.eq(Mux(owner_exec, ex_rdata.ready, eng_rd_ready)),
            self.exec_dma_rd_done.eq(owner_exec & dma.rd_done),
            self.exec_dma_wr_done.eq(owner_exec & dma.wr_done),
            self.exec_dma_error.eq(Mux(owner_exec, dma.error, 0)),
            dma.window_base.eq(Mux(owner_exec, r["window_base"], 0)),
            dma.window_limit.eq(Mux(owner_exec, r["window_limit"], all_ones)),
            dma.abort.eq(abort),
        ]

        # Completion bookkeeping (after the register writes, so it wins).
        irq_set = Signal(WORD)
        m.d.comb += irq_set.eq(Mux(complete, Irq.DONE | Mux(code != 0, Irq.ERROR, 0), 0))
        m.d.sync += r["irq_status"].eq((r["irq_status"] & ~r["w1c"]) | irq_set)
        m.d.sync += self.irq.eq(((r["irq_status"] & ~r["w1c"] | irq_set) & r["irq_mask"]) != 0)
        with m.If(complete):
            m.d.sync += [r["tail"].eq(r["tail"] + 1), r["done"].eq(Mux(r["perf_clear"], 0, r["done"]) + 1)]
            with m.If(code != 0):
                m.d.sync += r["error"].eq(code)
        with m.If(r["abort_write"] & busy):
            m.d.sync += abort_req.eq(1)
        return m
