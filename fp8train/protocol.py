"""The host interface contract shared by the gateware, the golden device model and the driver.

Register map (AXI4-Lite, 32-bit registers), command descriptors (64 bytes in a ring in host memory),
opcodes, flags and error codes are defined once here (DESIGN.md section 4); the RTL decodes the same
constants and the driver packs with the same helpers.

Command ring: the host owns ``RING_HEAD`` (a free-running 16-bit producer count, written as the
doorbell), the device owns ``RING_TAIL`` (its consumer count). Slot ``n % RING_SIZE`` of the ring at
``RING_BASE`` holds descriptor ``n``; ``RING_SIZE`` is a power of two from 1 to 4096. The device
executes descriptors in order, writes each one's completion word (``STATUS_DONE`` and an
:class:`ErrorCode`) back into the descriptor, then advances the tail and raises ``IRQ_STATUS.DONE``
(and ``ERROR`` if the code is not ``OK``). A failed descriptor does not stop the ring.
"""

import enum
import struct
from dataclasses import dataclass, fields

__all__ = ["DEVICE_ID", "VERSION", "Reg", "Ctrl", "Status", "Irq", "REG_WRITE_MASKS", "Opcode", "Flag",
           "OutFormat", "ErrorCode", "Descriptor", "DESCRIPTOR_BYTES", "STATUS_DONE", "ALIGN", "MAX_DIM", "GEMM_FLAGS",
           "UPDATE_FLAGS", "FLAGS_DEFINED", "MAX_UPDATE_COUNT", "PCM_OPCODES", "PCM_CONFIG_FIELDS",
           "pack_pcm_config", "unpack_pcm_config", "opcode_mask", "unpack_opcodes"]

DEVICE_ID = 0xF8A7_0001
VERSION = 0x0001_0000            # major << 16 | minor

#: Bytes per descriptor and per ring slot.
DESCRIPTOR_BYTES = 64
#: Alignment of every buffer address and row stride (one 64-bit bus beat).
ALIGN = 8
#: Largest M, N or K a descriptor may ask for.
MAX_DIM = 65535
#: Bit set in a descriptor's status word when the device has completed it.
STATUS_DONE = 1 << 31


class Reg(enum.IntEnum):
    """Byte offsets of the 32-bit registers."""
    ID = 0x000              # RO  DEVICE_ID
    VERSION = 0x004         # RO
    CONFIG_ARRAY = 0x008    # RO  rows | cols << 8 | rbits << 16
    CONFIG_LIMITS = 0x00C   # RO  max_chunk | log2(ring slots max) << 16
    CONFIG_OPCODES = 0x024  # RO  bit ``op`` set for each Opcode the device executes (opcode_mask)
    CTRL = 0x010            # RW  Ctrl bits
    STATUS = 0x014          # RO  Status bits
    ERROR = 0x018           # RW  last ErrorCode (8 bits); write 0 to clear
    IRQ_STATUS = 0x01C      # W1C Irq bits
    IRQ_MASK = 0x020        # RW  Irq bits that drive the irq output (only the Irq bits are kept)
    RING_BASE = 0x030       # RW  8-byte aligned
    RING_SIZE = 0x034       # RW  slots, a power of two (16 bits)
    RING_HEAD = 0x038       # RW  doorbell: producer count (16 bits)
    RING_TAIL = 0x03C       # RO  consumer count (16 bits)
    WINDOW_BASE = 0x040     # RW  DMA window: base <= address and address + length <= limit
    WINDOW_LIMIT = 0x044    # RW
    PERF_BUSY = 0x080       # RO  64-bit counters, low word then high word
    PERF_MAC = 0x088
    PERF_DMA_STALL = 0x090
    PERF_DONE = 0x098       # RO  32-bit count of completed descriptors
    PERF_CLEAR = 0x09C      # WO  any write clears the counters
    CONFIG_PCM = 0x0C0      # RO  PCM tile: rows | cols << 12 | slices << 24 (0: no tile); PCM_CONFIG_FIELDS
    CONFIG_PCM_BITS = 0x0C4     # RO  the tile's converter, conductance, drift and time widths
    CONFIG_PCM_NOISE = 0x0C8    # RO  the tile's Gaussian and drift-table parameters


class Ctrl(enum.IntFlag):
    ENABLE = 1 << 0         # fetch and execute descriptors
    ABORT = 1 << 1          # stop the current command, leave the device idle (self-clearing)


class Status(enum.IntFlag):
    BUSY = 1 << 0
    ERROR = 1 << 1          # ERROR register is not OK


class Irq(enum.IntFlag):
    DONE = 1 << 0
    ERROR = 1 << 1


#: The bits a read-write register keeps of a write (the others read 0): registers only as wide as
#: what they hold, which the iCE40 UP5K's logic budget feels. Registers not listed keep 32 bits.
REG_WRITE_MASKS = {Reg.CTRL: Ctrl.ENABLE, Reg.ERROR: 0xFF, Reg.IRQ_MASK: Irq.DONE | Irq.ERROR,
                   Reg.RING_SIZE: 0xFFFF, Reg.RING_HEAD: 0xFFFF}


class Opcode(enum.IntEnum):
    FENCE = 0x00            # completes when every earlier descriptor has
    GEMM = 0x01
    UPDATE = 0x02           # SGD step on FP16_169 master weights (sim/golden/update.py)
    PCM_PROGRAM = 0x10      # the PCM tile (DESIGN.md §6), when the device has one (CONFIG_PCM != 0)
    PCM_MVM = 0x11
    PCM_TIME = 0x12


class Flag(enum.IntFlag):
    TRANS_A = 1 << 0        # A is stored K x M
    TRANS_B = 1 << 1        # B is stored N x K
    HAS_C = 1 << 2          # add C (FP16_169, M x N) to the result
    RELU = 1 << 3
    ACC_STOCHASTIC = 1 << 4     # stochastic rounding in the accumulators
    OUT_STOCHASTIC = 1 << 5     # stochastic rounding in the output conversion
    OVERFLOW_INF = 1 << 6       # overflow gives inf/NaN instead of saturating
    MOMENTUM = 1 << 7           # UPDATE: momentum buffer at addr_c, factor in stride_b
    OUT_FORMAT = 0b11 << 8      # OutFormat
    WEIGHT_DECAY = 1 << 10      # UPDATE: weight decay, factor in stride_c


FLAG_OUT_SHIFT = 8
#: Flags a GEMM (and a FENCE, which ignores them) accepts; any other bit is RESERVED_BITS.
GEMM_FLAGS = int(Flag.TRANS_A | Flag.TRANS_B | Flag.HAS_C | Flag.RELU | Flag.ACC_STOCHASTIC
                 | Flag.OUT_STOCHASTIC | Flag.OVERFLOW_INF | Flag.OUT_FORMAT)
#: Flags an UPDATE accepts (OUT_STOCHASTIC: stochastic weight rounding; OUT_FORMAT: the FP8 copy).
UPDATE_FLAGS = int(Flag.OUT_STOCHASTIC | Flag.OVERFLOW_INF | Flag.OUT_FORMAT | Flag.MOMENTUM
                   | Flag.WEIGHT_DECAY)
#: Flags defined for some opcode.
FLAGS_DEFINED = GEMM_FLAGS | UPDATE_FLAGS
#: Largest element count of an UPDATE (its ``k``).
MAX_UPDATE_COUNT = (1 << 24) - 1


#: The PCM tile's commands (no flags; see :class:`Descriptor`).
PCM_OPCODES = frozenset({Opcode.PCM_PROGRAM, Opcode.PCM_MVM, Opcode.PCM_TIME})


def opcode_mask(opcodes) -> int:
    """``CONFIG_OPCODES`` of a device executing ``opcodes``: a device may leave out UPDATE (a small FPGA)
    or the PCM commands, and a host learns it before sending one."""
    return sum(1 << op for op in frozenset(opcodes))


def unpack_opcodes(mask: int) -> frozenset:
    """The opcodes a ``CONFIG_OPCODES`` value names (unknown bits are ignored)."""
    return frozenset(op for op in Opcode if mask >> op & 1)

#: The PCM tile's ``PcmConfig`` fields in the CONFIG_PCM* registers: (name, bits) from bit 0 up.
PCM_CONFIG_FIELDS = {
    Reg.CONFIG_PCM: (("rows", 12), ("cols", 12), ("slices", 8)),
    Reg.CONFIG_PCM_BITS: (("dac_bits", 5), ("adc_bits", 5), ("g_bits", 5), ("nu_bits", 5), ("nu_frac", 5),
                          ("time_bits", 5)),
    Reg.CONFIG_PCM_NOISE: (("gauss_terms", 5), ("gauss_bits", 5), ("steps_log2", 5), ("drift_lut_bits", 5)),
}


def pack_pcm_config(values: dict | None) -> dict:
    """The CONFIG_PCM* register values of a tile's ``PcmConfig`` fields (all 0 without a tile)."""
    words = {}
    for reg, layout in PCM_CONFIG_FIELDS.items():
        word, shift = 0, 0
        for name, bits in layout:
            value = 0 if values is None else values[name]
            if not 0 <= value < 1 << bits:
                raise ValueError(f"PCM tile {name} {value} does not fit its {bits}-bit register field")
            word |= value << shift
            shift += bits
        words[reg] = word
    return words


def unpack_pcm_config(words: dict) -> dict | None:
    """The ``PcmConfig`` fields in CONFIG_PCM* register values, or None when the device has no tile."""
    if words[Reg.CONFIG_PCM] == 0:
        return None
    values = {}
    for reg, layout in PCM_CONFIG_FIELDS.items():
        shift = 0
        for name, bits in layout:
            values[name] = (words[reg] >> shift) & ((1 << bits) - 1)
            shift += bits
    return values


class OutFormat(enum.IntEnum):
    FP16_169 = 0
    E5M2 = 1
    E4M3 = 2


class ErrorCode(enum.IntEnum):
    OK = 0x00
    BAD_OPCODE = 0x01
    BAD_DIMENSION = 0x02    # M, N or K zero or above the device's limit; PCM: not the tile's size or range
    MISALIGNED = 0x03       # an address or stride not a multiple of ALIGN, or a stride too short
    RESERVED_BITS = 0x04    # reserved flag bits or reserved words not zero
    BAD_CHUNK = 0x05        # chunk above the device's max_chunk
    OUT_OF_WINDOW = 0x06    # a buffer outside the DMA window (refused before any bus transaction)
    BAD_FORMAT = 0x07       # OutFormat value 3
    BAD_OPERAND = 0x08      # PCM: a weight or DAC code in memory beyond the tile's range
    NOT_PROGRAMMED = 0x09   # PCM_MVM or PCM_TIME before a PCM_PROGRAM completed (or after one failed)
    READ_ERROR = 0x10       # SLVERR/DECERR on a read beat
    WRITE_ERROR = 0x11      # SLVERR/DECERR on a write response
    ABORTED = 0x20          # CTRL.ABORT during the command


@dataclass
class Descriptor:
    """One 64-byte command: sixteen little-endian 32-bit words in field order.

    ``scale`` is a signed power of two applied before the output conversion. ``status`` is written by
    the device (``STATUS_DONE | ErrorCode``); the host writes 0. ``reserved`` words must be 0.

    An UPDATE uses the fields differently: ``k`` is the element count (``m = n = chunk = stride_d = 0``),
    ``addr_a``/``addr_b``/``addr_c``/``addr_d`` hold w, g, the momentum buffer and the FP8 copy, the low
    halves of ``stride_a``/``stride_b``/``stride_c`` the FP16_169 codes of lr, momentum and weight decay,
    and ``scale`` the power of two applied to g.

    The PCM commands (the device's tile of ``rows x cols`` weights, ``CONFIG_PCM``; DESIGN.md §6,
    ``sim/golden/pcm.py``) take no flags; every field not named here must be 0 (RESERVED_BITS):

    - PCM_PROGRAM: ``m = rows``, ``n = cols``, ``seed`` the programming seed; ``addr_a``/``stride_a``:
      ``m`` rows of ``n`` little-endian int16 weight codes (``|w| <= 8^slices - 1``, else BAD_OPERAND).
    - PCM_MVM: ``m`` input vectors (1 to MAX_DIM), ``k = rows``, ``n = cols``, ``chunk`` the ADC shift
      (0 to the tile's accumulator width); ``addr_a``/``stride_a``: ``m`` rows of ``k`` int16 DAC codes
      (``|x| <= 2^(dac_bits-1) - 1``, else BAD_OPERAND); ``addr_d``/``stride_d``: ``m`` rows of ``n``
      little-endian int32 outputs. One read of the tile per vector, in row order.
    - PCM_TIME: ``k`` the time step since programming (0 to ``2^time_bits - 1``).

    Sizes must equal the tile's (BAD_DIMENSION): the host pads a smaller matrix with zero weights and
    zero inputs (a device's noise depends only on its row and column, so the results are those of a tile
    of the matrix's size). A PCM command that fails once it reached the tile (READ_ERROR, WRITE_ERROR,
    ABORTED, BAD_OPERAND; the vectors before a bad one are computed and written) leaves the tile
    unprogrammed: PCM_MVM and PCM_TIME then complete with NOT_PROGRAMMED until the next PCM_PROGRAM.
    """
    opcode: int = Opcode.FENCE
    flags: int = 0
    status: int = 0
    m: int = 0
    n: int = 0
    k: int = 0
    chunk: int = 0
    scale: int = 0
    seed: int = 0
    addr_a: int = 0
    stride_a: int = 0
    addr_b: int = 0
    stride_b: int = 0
    addr_c: int = 0
    stride_c: int = 0
    addr_d: int = 0
    stride_d: int = 0

    # word 0: opcode | flags << 8; word 1: status; word 2: m | n << 16; word 3: k;
    # word 4: chunk | (scale & 0xff) << 16; word 5: seed; words 6..13: addresses and strides;
    # words 14, 15: reserved.
    def pack(self) -> bytes:
        words = [self.opcode | self.flags << 8, self.status, self.m | self.n << 16, self.k,
                 self.chunk | (self.scale & 0xFF) << 16, self.seed,
                 self.addr_a, self.stride_a, self.addr_b, self.stride_b,
                 self.addr_c, self.stride_c, self.addr_d, self.stride_d, 0, 0]
        return struct.pack("<16I", *(w & 0xFFFF_FFFF for w in words))

    @classmethod
    def unpack(cls, raw: bytes) -> tuple["Descriptor", bool]:
        """The descriptor in ``raw`` and whether its reserved bits are all zero."""
        if len(raw) != DESCRIPTOR_BYTES:
            raise ValueError(f"a descriptor is {DESCRIPTOR_BYTES} bytes, not {len(raw)}")
        w = struct.unpack("<16I", raw)
        scale = (w[4] >> 16) & 0xFF
        desc = cls(opcode=w[0] & 0xFF, flags=w[0] >> 8, status=w[1], m=w[2] & 0xFFFF, n=w[2] >> 16,
                   k=w[3], chunk=w[4] & 0xFFFF, scale=scale - 256 if scale & 0x80 else scale, seed=w[5],
                   addr_a=w[6], stride_a=w[7], addr_b=w[8], stride_b=w[9], addr_c=w[10], stride_c=w[11],
                   addr_d=w[12], stride_d=w[13])
        reserved_clear = (w[4] >> 24) == 0 and w[14] == 0 and w[15] == 0
        return desc, reserved_clear

    def replace(self, **changes) -> "Descriptor":
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        values.update(changes)
        return Descriptor(**values)
