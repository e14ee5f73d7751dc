"""The host protocol on the wire: length-prefixed request and reply frames (DESIGN.md §5).

Shared by the ``rtl`` backend (over a ``socketpair`` into the simulator) and, later, the ``serial``
backend (over a UART), so it depends on nothing but the standard library. Everything is little-endian.

Request (:data:`REQUEST`, 24 bytes, then ``length`` payload bytes)::

    u8 op | u8[3] zero | u32 length | u64 addr | u64 arg

Reply (:data:`REPLY`, 16 bytes, then ``length`` payload bytes)::

    u8 status | u8[3] zero | u32 length | u64 value

=================  ==================================  ==============================================
op                 request                             reply
=================  ==================================  ==============================================
``HELLO``          (sent unasked by the device side,   value = :data:`VERSION`; payload = JSON
                   as the ready handshake)             ``{"clock_ns", "ram_bytes", "sim", ...}``
``READ_CSR``       addr                                value = register
``WRITE_CSR``      addr, arg = value                   -
``READ_MEM``       addr, arg = byte count              payload = the bytes
``WRITE_MEM``      addr, payload = the bytes           -
``WAIT_IRQ``       arg = timeout in cycles             value = 1 if ``irq`` is high, else 0
``TICK``           arg = cycles                        - (simulation only: let the clock run)
``CYCLES``         -                                   value = clock cycles since start
``SET``            addr = :class:`Setting`, arg        - (simulation only: host RAM latency, errors)
=================  ==================================  ==============================================

``status`` is :data:`OK`, :data:`BUS_ERROR` (``value`` = the AXI response code), :data:`BAD_REQUEST`
or :data:`FAILED` (both with a UTF-8 message as payload). Closing the channel ends the session.
"""

import enum
import struct

__all__ = ["VERSION", "Op", "Status", "Setting", "REQUEST", "REPLY", "pack_request", "pack_reply"]

#: Protocol version, sent in HELLO.
VERSION = 1

REQUEST = struct.Struct("<B3xIQQ")
REPLY = struct.Struct("<B3xIQ")


class Op(enum.IntEnum):
    HELLO = 0
    READ_CSR = 1
    WRITE_CSR = 2
    READ_MEM = 3
    WRITE_MEM = 4
    WAIT_IRQ = 5
    TICK = 6
    CYCLES = 7
    SET = 8


class Status(enum.IntEnum):
    OK = 0
    BUS_ERROR = 1
    BAD_REQUEST = 2
    FAILED = 3


class Setting(enum.IntEnum):
    """Run-time settings of the simulated host RAM (``SET`` op)."""
    READ_LATENCY = 0
    WRITE_LATENCY = 1
    ERR_BASE = 2
    ERR_LIMIT = 3
    ERR_RESP = 4


def pack_request(op: int, addr: int = 0, arg: int = 0, payload: bytes = b"") -> bytes:
    return REQUEST.pack(op, len(payload), addr, arg) + payload


def pack_reply(status: int, value: int = 0, payload: bytes = b"") -> bytes:
    return REPLY.pack(status, len(payload), value) + payload
