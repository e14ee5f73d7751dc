"""The serial host link's frame format: one source of truth for the UART bridge's gateware
(:mod:`fp8train.boards.bridge`) and the host's :class:`~fp8train.serial.SerialLink` (issue 7, item 2).

The link carries the host protocol of DESIGN.md §5 (read/write a register, read/write host memory, the
interrupt) over a UART (8N1). The host sends one request and waits for its reply; the device also sends
an unsolicited ``IRQ`` frame when its interrupt line rises. Multi-byte fields are little-endian, except
the CRC, which is sent most significant byte first so that the CRC run over a whole frame after its sync
byte, CRC included, is 0.

Request (host → device)::

    0xA5 | op | seq | count | addr (u32) | data (u32 × words) | crc (u16, MSB first)

Reply (device → host)::

    0x5A | status | seq | count | data (u32 × count) | crc (u16, MSB first)

=============  =========  =========================  ===================================================
op             ``count``  request data               reply data
=============  =========  =========================  ===================================================
``STATUS``     0          none                       1 word, :func:`info_word` (version, memory, burst)
``READ_CSR``   1          none                       the register (``addr``: its byte address < 4096)
``WRITE_CSR``  1          the value                  none
``READ_MEM``   1..max     none                       ``count`` words from byte address ``addr``
``WRITE_MEM``  1..max     ``count`` words            none
=============  =========  =========================  ===================================================

``max`` is the bridge's ``max_words`` (at most :data:`MAX_WORDS`), reported by ``STATUS``. Addresses
are multiples of 4; a memory span must lie inside the on-chip memory.

- ``seq`` is the host's sequence number, echoed in the reply. A reply's ``seq`` is 0 when the frame
  was rejected before its ``seq`` byte arrived.
- ``crc`` is CRC-16/CCITT-FALSE (:func:`crc16`: polynomial 0x1021, initial value 0xFFFF, no
  reflection, no final XOR; check value 0x29B1 for ``b"123456789"``) over every byte after the sync
  byte and before the CRC.
- ``status``: a :class:`Status` code in bits 0..6; bit 7 (:data:`IRQ_LEVEL`) is the level of the
  device's ``irq`` line when the reply was framed. ``SLVERR``/``DECERR`` are the AXI response of the
  register or memory access that failed; a burst stops there (the words before it were read or
  written, none after it) and its reply carries no data.

Rejection and resynchronisation. The bridge executes nothing of a frame before its CRC has been
checked. Between frames it drops every byte until a sync byte. A frame is rejected with an error reply,
and nothing executed, when: its CRC is wrong (``BAD_CRC``); the line falls quiet for the bridge's
inter-byte timeout in the middle of it (``TRUNCATED``); its ``op`` is unknown (``BAD_OP``) or its
``count`` wrong for the op (``BAD_LENGTH``, e.g. more words than ``max``); a byte had a bad stop bit
(``FRAMING``); or its address is misaligned or outside the register space or memory (``BAD_ADDRESS``,
reported after the CRC check). After ``BAD_OP``, ``BAD_LENGTH`` and ``FRAMING`` the length of the frame
is not trusted: the bridge drops bytes until the line has been quiet for the timeout, then replies.
Bytes arriving while the bridge executes a request or sends its reply are dropped (the host sends the
next request only after the reply, or after its own, longer, timeout).

Retries. The host may send a request again, with the same ``seq``, after an error reply or when no
reply came in time. That is safe because (a) reads have no side effects (no register of
:mod:`fp8train.protocol` changes when read, and memory does not), and (b) the bridge remembers the
``seq`` of the last write it executed successfully: a write frame carrying that ``seq`` again is
answered ``OK`` without being executed a second time (so even a write that is not idempotent, such as
``CTRL.ABORT`` or ``PERF_CLEAR``, happens once). Any executed read or ``STATUS`` forgets the remembered
``seq``; a host starts its session with ``STATUS``, so a stale number from an earlier session never
swallows its first write.

Interrupt: on a rising edge of ``irq`` the bridge sends an ``IRQ`` frame (``seq`` 0, ``count`` 0) as
soon as its transmitter is free (between replies, never inside one). It is a hint: the host confirms
the level with ``STATUS`` (whose reply has :data:`IRQ_LEVEL`), so a lost or stale ``IRQ`` frame costs
time, never correctness.
"""

import enum
import struct

__all__ = ["SYNC_REQUEST", "SYNC_REPLY", "MAX_WORDS", "VERSION", "IRQ_LEVEL", "Op", "Status", "CRC_INIT",
           "CRC_POLY", "crc16", "request_words", "pack_request", "pack_reply", "info_word", "parse_info",
           "HEADER_BYTES", "CSR_SPACE"]

SYNC_REQUEST = 0xA5
SYNC_REPLY = 0x5A
#: Bytes before the data: sync, op/status, seq, count (and, in a request, the 4 address bytes).
HEADER_BYTES = 4
#: Largest ``count`` the format allows (the ``count`` byte); a bridge's ``max_words`` may be smaller.
MAX_WORDS = 255
#: Frame format version, in the ``STATUS`` reply.
VERSION = 1
#: Status byte bit: the interrupt line's level.
IRQ_LEVEL = 0x80
#: Bytes of register address space (the accelerator's AXI4-Lite port).
CSR_SPACE = 4096

CRC_POLY = 0x1021
CRC_INIT = 0xFFFF


class Op(enum.IntEnum):
    STATUS = 0
    READ_CSR = 1
    WRITE_CSR = 2
    READ_MEM = 3
    WRITE_MEM = 4


class Status(enum.IntEnum):
    OK = 0x00
    SLVERR = 0x02           # AXI response codes of a failed access
    DECERR = 0x03
    BAD_CRC = 0x10
    TRUNCATED = 0x11
    BAD_LENGTH = 0x12
    BAD_OP = 0x13
    FRAMING = 0x14
    BAD_ADDRESS = 0x15
    IRQ = 0x20              # unsolicited: the interrupt line rose


#: Ops whose request carries ``count`` data words.
WRITES = (Op.WRITE_CSR, Op.WRITE_MEM)


def crc16(data: bytes, crc: int = CRC_INIT) -> int:
    """CRC-16/CCITT-FALSE of ``data``, continuing from ``crc``."""
    for byte in data:
        crc ^= byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ CRC_POLY if crc & 0x8000 else crc << 1) & 0xFFFF
    return crc


def _frame(sync: int, body: bytes) -> bytes:
    return bytes([sync]) + body + crc16(body).to_bytes(2, "big")


def request_words(op: int, count: int) -> int:
    """Data words a request of ``op`` carries."""
    return count if op in WRITES else 0


def pack_request(op: int, seq: int, addr: int = 0, words: list[int] | tuple = (), count: int | None = None) -> bytes:
    """A request frame; ``count`` defaults to ``len(words)`` (give it for ``READ_MEM``/``READ_CSR``)."""
    count = len(words) if count is None else count
    return _frame(SYNC_REQUEST, struct.pack(f"<BBBI{len(words)}I", op, seq, count, addr, *words))


def pack_reply(status: int, seq: int, words: list[int] | tuple = ()) -> bytes:
    """A reply frame (the device's side; used by tests and models)."""
    return _frame(SYNC_REPLY, struct.pack(f"<BBB{len(words)}I", status, seq, len(words), *words))


def info_word(mem_size: int, max_words: int) -> int:
    """The ``STATUS`` reply's word: ``VERSION | log2(mem_size) << 8 | max_words << 16``."""
    return VERSION | (mem_size.bit_length() - 1) << 8 | max_words << 16


def parse_info(word: int) -> dict:
    """``{"version", "mem_size", "max_words"}`` of a ``STATUS`` word."""
    return {"version": word & 0xFF, "mem_size": 1 << ((word >> 8) & 0xFF), "max_words": (word >> 16) & 0xFF}
