"""Golden model of the whole accelerator at its host interface: registers, command ring, descriptors.

:class:`GoldenDevice` answers the same host operations as the simulated and the real device (read/write
a register, read/write host memory, wait for the interrupt), so the driver is written once and every
backend is checked against this one. Command semantics live in :func:`check` (which error a descriptor
earns, in the order the hardware tests them), :func:`run_gemm` (what a GEMM writes) and :func:`run_update`
(what an UPDATE writes).
"""

from dataclasses import dataclass

import numpy as np

from ...formats import E4M3, E5M2, FP16_169, FloatFormat
from ...protocol import (ALIGN, DESCRIPTOR_BYTES, DEVICE_ID, FLAG_OUT_SHIFT, GEMM_FLAGS, MAX_DIM,
                         MAX_UPDATE_COUNT, PCM_CONFIG_FIELDS, PCM_OPCODES, REG_WRITE_MASKS, STATUS_DONE,
                         UPDATE_FLAGS, VERSION, Ctrl, Descriptor, ErrorCode, Flag, Irq, Opcode, OutFormat, Reg,
                         Status, opcode_mask, pack_pcm_config)
from .arith import matmul
from .lfsr import LfsrBank
from .pcm import PcmConfig, PcmTile
from .update import sgd_update

__all__ = ["DeviceConfig", "GoldenDevice", "check", "run_gemm", "run_update", "run_pcm", "check_pcm_tile",
           "output_stage", "OUT_FORMATS", "OUTPUT_SEED_SALT", "OPCODE_FLAGS", "PCM_OUT_BITS"]

OUT_FORMATS = {OutFormat.FP16_169: FP16_169, OutFormat.E5M2: E5M2, OutFormat.E4M3: E4M3}
#: The output conversion's random bits come from output lanes seeded with ``seed ^ OUTPUT_SEED_SALT``
#: (one draw per output), so they never repeat the accumulation's bits.
OUTPUT_SEED_SALT = 0xA5A5_5A5A
#: Flags each implemented opcode accepts (a FENCE ignores the GEMM flags).
OPCODE_FLAGS = {Opcode.FENCE: GEMM_FLAGS, Opcode.GEMM: GEMM_FLAGS, Opcode.UPDATE: UPDATE_FLAGS}
#: Codes with which a PCM command that reached the tile leaves it erased (``protocol.Descriptor``).
_PCM_FAILURES = (ErrorCode.READ_ERROR, ErrorCode.WRITE_ERROR, ErrorCode.ABORTED, ErrorCode.BAD_OPERAND)
#: The low half of an UPDATE's stride_a..c holds an FP16_169 code; the high half is reserved.
_CODE_MASK = (1 << FP16_169.width) - 1


#: Width of a PCM_MVM output word in memory (int32): a device's tile must fit its outputs in it.
PCM_OUT_BITS = 32


def check_pcm_tile(pcm) -> None:
    """A device's PCM tile: a :class:`PcmConfig` whose fields fit the CONFIG_PCM* registers, whose
    weights and DAC codes fit int16 and whose outputs fit int32 (the PCM descriptors' formats)."""
    if not isinstance(pcm, PcmConfig):
        raise TypeError(f"pcm must be a PcmConfig or None, not {type(pcm).__name__}")
    if pcm.out_bits > PCM_OUT_BITS:
        raise ValueError(f"the PCM tile's {pcm.out_bits}-bit outputs do not fit the descriptor's "
                         f"{PCM_OUT_BITS}-bit words (fewer adc_bits or slices)")
    pack_pcm_config({name: getattr(pcm, name) for layout in PCM_CONFIG_FIELDS.values() for name, _ in layout})


@dataclass(frozen=True)
class DeviceConfig:
    """What a device reports in its CONFIG registers; results never depend on ``rows``/``cols``.

    ``opcodes`` are the commands the device executes; any other opcode completes with BAD_OPCODE. The
    default is what the RTL accelerator implements. ``pcm`` is the device's PCM tile (a
    :class:`~.pcm.PcmConfig`, ``CONFIG_PCM*``) or None; with a tile, ``opcodes`` gains the PCM_* opcodes.
    """
    rows: int = 8
    cols: int = 8
    rbits: int = 8
    max_chunk: int = 4096
    ring_log2_max: int = 12
    opcodes: frozenset = frozenset({Opcode.FENCE, Opcode.GEMM, Opcode.UPDATE})
    pcm: PcmConfig | None = None

    def __post_init__(self):
        allowed = OPCODE_FLAGS.keys() | (PCM_OPCODES if self.pcm is not None else set())
        if not isinstance(self.opcodes, frozenset) or not self.opcodes <= allowed:
            raise ValueError(f"opcodes must be a frozenset of {', '.join(op.name for op in OPCODE_FLAGS)}, "
                             f"not {self.opcodes!r}")
        if self.pcm is not None:
            check_pcm_tile(self.pcm)
            object.__setattr__(self, "opcodes", self.opcodes | PCM_OPCODES)


def _row_bytes(desc: Descriptor):
    """(rows, bytes per row) of the A, B, C and D buffers as stored in memory."""
    trans_a, trans_b = desc.flags & Flag.TRANS_A, desc.flags & Flag.TRANS_B
    out_bytes = 2 if (desc.flags & Flag.OUT_FORMAT) >> FLAG_OUT_SHIFT == OutFormat.FP16_169 else 1
    buffers = {
        "a": (desc.addr_a, desc.stride_a, *((desc.k, desc.m) if trans_a else (desc.m, desc.k))),
        "b": (desc.addr_b, desc.stride_b, *((desc.n, desc.k) if trans_b else (desc.k, desc.n))),
        "d": (desc.addr_d, desc.stride_d, desc.m, desc.n * out_bytes),
    }
    if desc.flags & Flag.HAS_C:
        buffers["c"] = (desc.addr_c, desc.stride_c, desc.m, 2 * desc.n)
    return buffers


def _span(addr, stride, rows, row_bytes):
    """Bytes a buffer occupies, its last row rounded up to whole bus beats (the DMA reads whole beats)."""
    return (rows - 1) * stride + -(-row_bytes // ALIGN) * ALIGN


def check(desc: Descriptor, reserved_clear: bool, config: DeviceConfig, window: tuple[int, int]) -> ErrorCode:
    """The error a descriptor completes with before any data moves, in the hardware's order."""
    if desc.opcode not in config.opcodes:
        return ErrorCode.BAD_OPCODE
    if not reserved_clear or desc.flags & ~OPCODE_FLAGS.get(desc.opcode, 0):
        return ErrorCode.RESERVED_BITS
    if desc.opcode == Opcode.FENCE:
        return ErrorCode.OK
    if desc.opcode == Opcode.UPDATE:
        return _check_update(desc, window)
    if desc.opcode in PCM_OPCODES:
        return _check_pcm(desc, config.pcm, window)
    if (desc.flags & Flag.OUT_FORMAT) >> FLAG_OUT_SHIFT not in OUT_FORMATS:
        return ErrorCode.BAD_FORMAT
    if not all(1 <= dim <= MAX_DIM for dim in (desc.m, desc.n, desc.k)):
        return ErrorCode.BAD_DIMENSION
    if desc.chunk > config.max_chunk:
        return ErrorCode.BAD_CHUNK
    buffers = _row_bytes(desc)
    for addr, stride, rows, row_bytes in buffers.values():
        if addr % ALIGN or stride % ALIGN or stride < row_bytes:
            return ErrorCode.MISALIGNED
    base, limit = window
    for addr, stride, rows, row_bytes in buffers.values():
        if addr < base or addr + _span(addr, stride, rows, row_bytes) > limit:
            return ErrorCode.OUT_OF_WINDOW
    return ErrorCode.OK


def _update_buffers(desc: Descriptor):
    """(address, bytes) of the buffers an UPDATE reads or writes: w, g, then v and the copy if used."""
    count = desc.k
    buffers = {"w": (desc.addr_a, 2 * count), "g": (desc.addr_b, 2 * count)}
    if desc.flags & Flag.MOMENTUM:
        buffers["v"] = (desc.addr_c, 2 * count)
    if (desc.flags & Flag.OUT_FORMAT) >> FLAG_OUT_SHIFT != OutFormat.FP16_169:
        buffers["copy"] = (desc.addr_d, count)
    return buffers


def _check_update(desc: Descriptor, window: tuple[int, int]) -> ErrorCode:
    """UPDATE checks after BAD_OPCODE and the reserved flags, in order: RESERVED_BITS (high halves of
    stride_a..c, stride_d or chunk not zero), BAD_FORMAT (OutFormat 3), BAD_DIMENSION (count zero or above
    :data:`MAX_UPDATE_COUNT`, or m or n not zero), MISALIGNED (an address of a buffer in use), OUT_OF_WINDOW
    (a buffer in use, rounded up to whole beats, outside the window). Unused addresses are ignored."""
    if any(stride & ~_CODE_MASK for stride in (desc.stride_a, desc.stride_b, desc.stride_c)) \
            or desc.stride_d or desc.chunk:
        return ErrorCode.RESERVED_BITS
    if (desc.flags & Flag.OUT_FORMAT) >> FLAG_OUT_SHIFT not in OUT_FORMATS:
        return ErrorCode.BAD_FORMAT
    if not 1 <= desc.k <= MAX_UPDATE_COUNT or desc.m or desc.n:
        return ErrorCode.BAD_DIMENSION
    buffers = _update_buffers(desc)
    if any(addr % ALIGN for addr, _ in buffers.values()):
        return ErrorCode.MISALIGNED
    base, limit = window
    if any(addr < base or addr + -(-nbytes // ALIGN) * ALIGN > limit for addr, nbytes in buffers.values()):
        return ErrorCode.OUT_OF_WINDOW
    return ErrorCode.OK


#: The descriptor fields each PCM command uses (``protocol.Descriptor``); the others must be 0.
PCM_FIELDS = {Opcode.PCM_PROGRAM: {"m", "n", "seed", "addr_a", "stride_a"},
              Opcode.PCM_MVM: {"m", "n", "k", "chunk", "addr_a", "stride_a", "addr_d", "stride_d"},
              Opcode.PCM_TIME: {"k"}}
_PCM_ZERO = ("m", "n", "k", "chunk", "scale", "seed", "addr_a", "stride_a", "addr_b", "stride_b", "addr_c",
             "stride_c", "addr_d", "stride_d")


def _pcm_buffers(desc: Descriptor):
    """(address, stride, rows, bytes per row) of a PCM command's operands (int16) and outputs (int32)."""
    if desc.opcode == Opcode.PCM_PROGRAM:
        return [(desc.addr_a, desc.stride_a, desc.m, 2 * desc.n)]
    if desc.opcode == Opcode.PCM_MVM:
        return [(desc.addr_a, desc.stride_a, desc.m, 2 * desc.k), (desc.addr_d, desc.stride_d, desc.m, 4 * desc.n)]
    return []


def _check_pcm(desc: Descriptor, tile: PcmConfig, window: tuple[int, int]) -> ErrorCode:
    """PCM checks after BAD_OPCODE and the reserved flags, in order: RESERVED_BITS (a field the command
    does not use is not 0), BAD_DIMENSION (PROGRAM: ``m, n`` not the tile's ``rows, cols``; MVM: ``m``
    zero or above MAX_DIM, ``k, n`` not ``rows, cols``, ADC shift ``chunk`` above the accumulator
    width; TIME: step ``k`` beyond the last), MISALIGNED and OUT_OF_WINDOW as for a GEMM's buffers."""
    if any(getattr(desc, name) for name in _PCM_ZERO if name not in PCM_FIELDS[desc.opcode]):
        return ErrorCode.RESERVED_BITS
    if desc.opcode == Opcode.PCM_PROGRAM:
        dims_ok = (desc.m, desc.n) == (tile.rows, tile.cols)
    elif desc.opcode == Opcode.PCM_MVM:
        dims_ok = (1 <= desc.m <= MAX_DIM and (desc.k, desc.n) == (tile.rows, tile.cols)
                   and desc.chunk <= tile.acc_bits)
    else:
        dims_ok = desc.k < tile.time_steps
    if not dims_ok:
        return ErrorCode.BAD_DIMENSION
    buffers = _pcm_buffers(desc)
    if any(addr % ALIGN or stride % ALIGN or stride < row_bytes for addr, stride, _, row_bytes in buffers):
        return ErrorCode.MISALIGNED
    base, limit = window
    if any(addr < base or addr + _span(addr, stride, rows, row_bytes) > limit
           for addr, stride, rows, row_bytes in buffers):
        return ErrorCode.OUT_OF_WINDOW
    return ErrorCode.OK


def run_pcm(desc: Descriptor, memory: np.ndarray, tile: PcmTile) -> ErrorCode:
    """Execute a checked PCM command on ``tile`` and ``memory``; returns its completion code.

    PROGRAM reads the int16 weights (a code beyond ``±w_max``: BAD_OPERAND, the tile erased); MVM and
    TIME need a programmed tile (NOT_PROGRAMMED); MVM reads and checks each vector's int16 DAC codes in
    turn (beyond ``±x_max``: BAD_OPERAND, the tile erased, the earlier vectors' outputs written), runs
    it (one read of the tile) with ADC shift ``chunk`` and writes its int32 outputs.
    """
    c = tile.config
    if desc.opcode == Opcode.PCM_PROGRAM:
        w = _read_matrix(memory, desc.addr_a, desc.stride_a, desc.m, desc.n, 2).view("<i2").astype(np.int64)
        if np.abs(w).max() > c.w_max:
            tile.erase()
            return ErrorCode.BAD_OPERAND
        tile.program(w, desc.seed)
        return ErrorCode.OK
    if not tile.programmed:
        return ErrorCode.NOT_PROGRAMMED
    if desc.opcode == Opcode.PCM_TIME:
        tile.set_step(desc.k)
        return ErrorCode.OK
    x = _read_matrix(memory, desc.addr_a, desc.stride_a, desc.m, desc.k, 2).view("<i2").astype(np.int64)
    for b, vector in enumerate(x):
        if np.abs(vector).max() > c.x_max:
            tile.erase()
            return ErrorCode.BAD_OPERAND
        y = tile.mvm(vector, desc.chunk).astype("<i4").view(np.uint8)
        start = desc.addr_d + b * desc.stride_d
        memory[start:start + y.size] = y
    return ErrorCode.OK


def run_update(desc: Descriptor, memory: np.ndarray, config: DeviceConfig) -> None:
    """Execute a checked UPDATE descriptor on ``memory``: golden :func:`~.update.sgd_update` of the w, g
    (and v) buffers, writing w and v in place and the FP8 copy at ``addr_d``, exactly ``2 * count`` (or
    ``count``) bytes each. Overlapping buffers give unspecified results."""
    flags = desc.flags
    buffers = _update_buffers(desc)
    read = lambda name: memory[buffers[name][0]:sum(buffers[name])].view("<u2")
    momentum = bool(flags & Flag.MOMENTUM)
    copy_fmt = OUT_FORMATS[OutFormat((flags & Flag.OUT_FORMAT) >> FLAG_OUT_SHIFT)]
    w_new, v_new, copy = sgd_update(
        read("w"), read("g"), lr=desc.stride_a, v=read("v") if momentum else None,
        momentum=desc.stride_b if momentum else None,
        weight_decay=desc.stride_c if flags & Flag.WEIGHT_DECAY else None, scale=desc.scale,
        rounding="stochastic" if flags & Flag.OUT_STOCHASTIC else "nearest", seed=desc.seed,
        rbits=config.rbits, copy_fmt=None if copy_fmt is FP16_169 else copy_fmt,
        overflow="inf" if flags & Flag.OVERFLOW_INF else "saturate")
    for name, values in (("w", w_new), ("v", v_new), ("copy", copy)):
        if values is not None:
            addr, nbytes = buffers[name]
            memory[addr:addr + nbytes] = values.astype(values.dtype.newbyteorder("<")).view(np.uint8)


def _read_matrix(memory, addr, stride, rows, cols, itemsize):
    view = np.lib.stride_tricks.as_strided(memory[addr:], shape=(rows, cols * itemsize), strides=(stride, 1))
    raw = np.ascontiguousarray(view)
    return raw.view("<u2") if itemsize == 2 else raw


def run_gemm(desc: Descriptor, memory: np.ndarray, config: DeviceConfig) -> None:
    """Execute a checked GEMM descriptor on ``memory`` (a uint8 array), writing D.

    D = out(relu(chunked(A @ B) + C) * 2**scale): A and B are E5M2 codes, the accumulation is golden
    ``matmul`` into FP16_169 (stochastic lanes from ``LfsrBank.for_outputs(seed, M, N)``), C is added
    with round-to-nearest, ReLU turns negative values (not NaN) into +0, and the scaled value is rounded
    once into the output format (stochastic bits from one draw of the ``seed ^ OUTPUT_SEED_SALT`` lanes).
    """
    flags, m, n, k = Flag(desc.flags & GEMM_FLAGS), desc.m, desc.n, desc.k
    a = _read_matrix(memory, desc.addr_a, desc.stride_a, *((k, m) if flags & Flag.TRANS_A else (m, k)), 1)
    b = _read_matrix(memory, desc.addr_b, desc.stride_b, *((n, k) if flags & Flag.TRANS_B else (k, n)), 1)
    a = a.T if flags & Flag.TRANS_A else a
    b = b.T if flags & Flag.TRANS_B else b
    overflow = "inf" if flags & Flag.OVERFLOW_INF else "saturate"
    acc_sr = bool(flags & Flag.ACC_STOCHASTIC)
    c = _read_matrix(memory, desc.addr_c, desc.stride_c, m, n, 2) if flags & Flag.HAS_C else None
    total = matmul(a, b, chunk=desc.chunk or k, rounding="stochastic" if acc_sr else "nearest",
                   lfsr=LfsrBank.for_outputs(desc.seed, m, n, config.rbits) if acc_sr else None,
                   overflow=overflow, c=c)
    out_fmt = OUT_FORMATS[OutFormat((desc.flags & Flag.OUT_FORMAT) >> FLAG_OUT_SHIFT)]
    rand = None
    if flags & Flag.OUT_STOCHASTIC:
        rand = LfsrBank.for_outputs(desc.seed ^ OUTPUT_SEED_SALT, m, n, config.rbits).draw()
    d = output_stage(total, out_fmt, relu=bool(flags & Flag.RELU), scale=desc.scale, rand=rand,
                     rbits=config.rbits, overflow=overflow)
    raw = d.astype("<u2").view(np.uint8) if out_fmt.width == 16 else d.astype(np.uint8)
    raw = raw.reshape(m, -1)
    for i in range(m):
        start = desc.addr_d + i * desc.stride_d
        memory[start:start + raw.shape[1]] = raw[i]


def output_stage(total, out_fmt: FloatFormat, *, relu=False, scale=0, rand=None, rbits=None,
                 overflow="saturate"):
    """The output unit on FP16_169 codes (C already added): ReLU turns a negative value (not NaN,
    -0 included) into +0, then ``value * 2**scale`` is rounded once into ``out_fmt``, stochastically
    when ``rand`` is given."""
    total = np.asarray(total)
    if relu:
        negative = (total >> (FP16_169.width - 1) == 1) & ~np.isnan(FP16_169.decode(total))
        total = np.where(negative, 0, total).astype(total.dtype)
    scaled = FP16_169.decode(total) * 2.0 ** scale
    if rand is None:
        return out_fmt.encode(scaled, overflow=overflow)
    return out_fmt.encode(scaled, "stochastic", rand=rand, rbits=rbits, overflow=overflow)


class GoldenDevice:
    """The accelerator as its host sees it, executing each descriptor when the doorbell rings.

    Parameters
    ----------
    memory_bytes : int
        Size of the host memory the device's DMA reaches (addresses 0 .. memory_bytes - 1).
    config : DeviceConfig
    """

    def __init__(self, memory_bytes: int = 1 << 20, config: DeviceConfig = DeviceConfig()):
        self.memory = np.zeros(memory_bytes, dtype=np.uint8)
        self.config = config
        self.regs = {Reg.CTRL: 0, Reg.ERROR: 0, Reg.IRQ_STATUS: 0, Reg.IRQ_MASK: 0, Reg.RING_BASE: 0,
                     Reg.RING_SIZE: 1, Reg.RING_HEAD: 0, Reg.RING_TAIL: 0, Reg.WINDOW_BASE: 0,
                     Reg.WINDOW_LIMIT: 0}
        self.done = 0
        self.mac_cycles = 0
        self.pcm = None if config.pcm is None else PcmTile(config.pcm)

    # -- host operations ------------------------------------------------------------------------
    def read_csr(self, addr: int) -> int:
        config = self.config
        fixed = {Reg.ID: DEVICE_ID, Reg.VERSION: VERSION,
                 Reg.CONFIG_ARRAY: config.rows | config.cols << 8 | config.rbits << 16,
                 Reg.CONFIG_LIMITS: config.max_chunk | config.ring_log2_max << 16,
                 Reg.CONFIG_OPCODES: opcode_mask(config.opcodes),
                 **pack_pcm_config(None if config.pcm is None else
                                   {name: getattr(config.pcm, name)
                                    for layout in PCM_CONFIG_FIELDS.values() for name, _ in layout}),
                 Reg.STATUS: Status.ERROR if self.regs[Reg.ERROR] else 0,
                 Reg.PERF_DONE: self.done}
        if addr in fixed:
            return int(fixed[addr])
        if addr in self.regs:
            return self.regs[addr]
        if addr in (Reg.PERF_BUSY, Reg.PERF_BUSY + 4, Reg.PERF_MAC, Reg.PERF_MAC + 4,
                    Reg.PERF_DMA_STALL, Reg.PERF_DMA_STALL + 4):
            return 0                                   # the golden model has no notion of cycles
        raise ValueError(f"no register at {addr:#x}")

    def write_csr(self, addr: int, value: int) -> None:
        if addr == Reg.IRQ_STATUS:
            self.regs[addr] &= ~value
        elif addr == Reg.PERF_CLEAR:
            self.done = 0
        elif addr in self.regs and addr != Reg.RING_TAIL:
            self.regs[addr] = value & REG_WRITE_MASKS.get(addr, 0xFFFF_FFFF)
        else:
            raise ValueError(f"no writable register at {addr:#x}")
        self._run()

    def read_mem(self, addr: int, nbytes: int) -> bytes:
        return self.memory[addr:addr + nbytes].tobytes()

    def write_mem(self, addr: int, data: bytes) -> None:
        self.memory[addr:addr + len(data)] = np.frombuffer(data, dtype=np.uint8)

    def irq(self) -> bool:
        return bool(self.regs[Reg.IRQ_STATUS] & self.regs[Reg.IRQ_MASK])

    def wait_irq(self, timeout_cycles: int) -> bool:
        return self.irq()

    # -- the command engine ---------------------------------------------------------------------
    def execute(self, desc: Descriptor) -> ErrorCode:
        """Run a checked GEMM, UPDATE or PCM command and return its completion code; a bench that mirrors
        a device without the datapath, or with injected bus errors, overrides this and nothing else."""
        if desc.opcode in PCM_OPCODES:
            return run_pcm(desc, self.memory, self.pcm)
        run = run_update if desc.opcode == Opcode.UPDATE else run_gemm
        run(desc, self.memory, self.config)
        return ErrorCode.OK

    def _run(self) -> None:
        regs = self.regs
        size = regs[Reg.RING_SIZE]
        if not regs[Reg.CTRL] & Ctrl.ENABLE or size & (size - 1) or not 1 <= size <= 1 << self.config.ring_log2_max:
            return
        while regs[Reg.RING_TAIL] != regs[Reg.RING_HEAD]:
            slot = regs[Reg.RING_BASE] + (regs[Reg.RING_TAIL] % size) * DESCRIPTOR_BYTES
            desc, reserved_clear = Descriptor.unpack(self.read_mem(slot, DESCRIPTOR_BYTES))
            code = check(desc, reserved_clear, self.config, (regs[Reg.WINDOW_BASE], regs[Reg.WINDOW_LIMIT]))
            if code == ErrorCode.OK and desc.opcode != Opcode.FENCE:
                code = self.execute(desc)
                if desc.opcode in PCM_OPCODES and code in _PCM_FAILURES:
                    self.pcm.erase()
            self.write_mem(slot + 4, int(STATUS_DONE | code).to_bytes(4, "little"))
            regs[Reg.RING_TAIL] = (regs[Reg.RING_TAIL] + 1) & 0xFFFF
            regs[Reg.IRQ_STATUS] |= Irq.DONE | (Irq.ERROR if code else 0)
            if code:
                regs[Reg.ERROR] = code
            self.done += 1
