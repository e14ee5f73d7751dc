"""The ``serial`` backend's link: the host protocol over a UART to a board's
:class:`~fp8train.boards.bridge.UartHostBridge` (DESIGN.md §5, issue 7 item 2).

Frames, CRC and the device's rejection rules are in :mod:`fp8train.frames`. This side sends one
request at a time and waits for the reply with the same sequence number; after an error reply, a reply
that fails its CRC, or no reply within ``timeout`` seconds, it sends the same frame again (same
sequence number: safe, see "Retries" in :mod:`fp8train.frames`), at most ``retries`` times, then raises
:class:`~fp8train.sim.driver.link.LinkError` naming every failed attempt. An AXI error response is not
retried: it raises :class:`~fp8train.sim.driver.link.BusError` (registers) or ``LinkError`` (memory).

``wait_irq`` has no cycle counter to read on a board: ``timeout_cycles`` become wall time at
``clock_hz`` (plus ``timeout``). It asks ``STATUS`` for the interrupt line's level, then sleeps on the
line until an ``IRQ`` frame comes or ``poll_s`` passes, and asks again; an ``IRQ`` frame is only a hint
to ask at once, so a lost one costs at most ``poll_s``.

The byte stream is anything with pyserial's ``read(n)`` (up to ``n`` bytes, fewer when its
``timeout`` attribute, in seconds, runs out), ``write(data)`` and a settable ``timeout``; ``close()``
and ``reset_input_buffer()`` are used when present. :meth:`SerialLink.open` opens a serial port.
"""

import struct
import time

from .frames import (HEADER_BYTES, IRQ_LEVEL, MAX_WORDS, SYNC_REPLY, VERSION, CSR_SPACE, Op, Status, crc16,
                     pack_request, parse_info)
from .sim.driver.link import BusError, HostLink, LinkError

__all__ = ["SerialLink", "DEFAULT_BAUD", "DEFAULT_CLOCK_HZ"]

DEFAULT_BAUD = 115_200
#: Board clock assumed by ``wait_irq`` when none is given: the slowest board top (the iCEBreaker's
#: 6 MHz), so that the wall-clock bound is never shorter than the device's cycle budget.
DEFAULT_CLOCK_HZ = 6_000_000


class SerialLink(HostLink):
    """A board's accelerator through its UART bridge.

    Parameters
    ----------
    stream : byte stream
        The serial port (see the module docstring), e.g. a ``serial.Serial``.
    clock_hz : float
        The board clock, for ``wait_irq``'s cycle budget.
    timeout : float
        Seconds to wait for a reply (on top of the time its bytes take on the line at ``baud``).
    retries : int
        Sends of a request after the first before :class:`LinkError`.
    baud : int, optional
        The line's rate, to add each frame's transfer time to ``timeout`` (default: the stream's
        ``baudrate`` if it has one, else none added).
    poll_s : float
        Longest sleep of ``wait_irq`` between two ``STATUS`` requests.
    max_words : int, optional
        Longest memory burst to use, in words (default: the bridge's); shorter bursts lose less to a
        bit error on a noisy line.

    Attributes
    ----------
    mem_size, max_words : int
        Of the bridge (its ``STATUS`` reply, asked when the link opens).
    retried : int
        Requests sent again so far; ``failures`` lists why (most recent last).
    irq_frames : int
        ``IRQ`` frames received so far.
    """

    def __init__(self, stream, *, clock_hz: float = DEFAULT_CLOCK_HZ, timeout: float = 1.0, retries: int = 8,
                 baud: int | None = None, poll_s: float = 0.2, max_words: int | None = None):
        if not isinstance(clock_hz, (int, float)) or isinstance(clock_hz, bool) or clock_hz <= 0:
            raise ValueError(f"clock_hz must be a positive number, not {clock_hz!r}")
        if not isinstance(timeout, (int, float)) or isinstance(timeout, bool) or timeout <= 0:
            raise ValueError(f"timeout must be a positive number of seconds, not {timeout!r}")
        if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
            raise ValueError(f"retries must be a non-negative integer, not {retries!r}")
        if max_words is not None and (isinstance(max_words, bool) or not isinstance(max_words, int)
                                      or max_words < 1):
            raise ValueError(f"max_words must be a positive integer, not {max_words!r}")
        self._stream = stream
        self.clock_hz, self.timeout, self.retries, self.poll_s = clock_hz, timeout, retries, poll_s
        baud = baud if baud is not None else getattr(stream, "baudrate", None)
        self._byte_s = 10 / baud if baud else 0.0
        self._rx = bytearray()
        self._seq = 0
        self._irq_hint = False
        self._reply_irq = False
        self._closed = False
        self.retried = 0
        self.irq_frames = 0
        self.failures: list[str] = []
        self.max_words = MAX_WORDS
        try:
            info = parse_info(self._transact(Op.STATUS, expect=1)[0])
        except LinkError as error:
            raise LinkError(f"no UART host bridge answers on {stream!r} (is the board programmed, the port "
                            f"and baud rate right?): {error}") from None
        if info["version"] != VERSION:
            raise LinkError(f"the bridge speaks frame format version {info['version']}, this host {VERSION}")
        self.mem_size, self.max_words = info["mem_size"], info["max_words"]
        if max_words is not None:
            self.max_words = min(max_words, self.max_words)

    @classmethod
    def open(cls, port: str, *, baud: int = DEFAULT_BAUD, **kwargs) -> "SerialLink":
        """A link over the serial port ``port`` (pyserial) at ``baud``."""
        import serial
        return cls(serial.Serial(port, baud, timeout=0.1), baud=baud, **kwargs)

    # ---- frames -------------------------------------------------------------------------------
    def _next_seq(self) -> int:
        self._seq = (self._seq + 1) & 0xFF
        return self._seq

    def _fill(self, need: int, deadline: float) -> bool:
        """Read until ``need`` bytes are buffered; False when the deadline passes first."""
        while len(self._rx) < need:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            self._stream.timeout = min(left, self.poll_s)
            self._rx += self._stream.read(need - len(self._rx))
        return True

    def _frame(self, deadline: float, expect: int) -> tuple[int, int, list[int]] | None:
        """The next good frame (status, seq, words) whose count is ``expect`` or 0, or None at the
        deadline. Bytes before a sync byte, and frames failing their CRC, are dropped."""
        while True:
            start = self._rx.find(SYNC_REPLY)
            if start < 0:
                self._rx.clear()
            else:
                del self._rx[:start]
            if not self._fill(HEADER_BYTES, deadline):
                return None
            if self._rx[0] != SYNC_REPLY:
                continue
            count = self._rx[3]
            if count not in (0, expect):
                del self._rx[:1]
                continue
            end = HEADER_BYTES + 4 * count + 2
            if not self._fill(end, deadline):
                return None
            if crc16(bytes(self._rx[1:end])) != 0:
                self.failures.append("a reply failed its CRC")
                del self._rx[:1]
                continue
            status, seq = self._rx[1], self._rx[2]
            words = list(struct.unpack_from(f"<{count}I", self._rx, HEADER_BYTES))
            del self._rx[:end]
            return status, seq, words

    def _transact(self, op: Op, addr: int = 0, words=(), *, count: int | None = None, expect: int = 0,
                  doing: str = "") -> list[int]:
        if self._closed:
            raise LinkError("the link is closed")
        doing = doing or op.name
        seq = self._next_seq()
        frame = pack_request(op, seq, addr, words, count)
        wait = self.timeout + self._byte_s * (len(frame) + HEADER_BYTES + 2 + 4 * expect)
        attempts = []
        for attempt in range(self.retries + 1):
            if attempt:
                self.retried += 1
                self.failures.append(f"{doing}: {attempts[-1]}")
            self._stream.write(frame)
            deadline = time.monotonic() + wait
            while True:
                reply = self._frame(deadline, expect)
                if reply is None:
                    attempts.append(f"no reply in {wait:.3g} s")
                    self._rx.clear()
                    if hasattr(self._stream, "reset_input_buffer"):
                        self._stream.reset_input_buffer()
                    break
                status, reply_seq, data = reply
                code = status & ~IRQ_LEVEL
                if code == Status.IRQ:
                    self._irq_hint = True
                    self.irq_frames += 1
                    continue
                refused = code not in (Status.OK, Status.SLVERR, Status.DECERR)
                if reply_seq != seq and not (refused and reply_seq == 0):
                    continue                      # a reply to an earlier request (0: seq never received)
                if code == Status.OK and len(data) == expect:
                    self._reply_irq = bool(status & IRQ_LEVEL)
                    return data
                if code in (Status.SLVERR, Status.DECERR):
                    raise BusError(f"{doing}: AXI error response {code:#04b}", code)
                if code == Status.BAD_ADDRESS and reply_seq == seq:
                    raise LinkError(f"{doing}: the bridge refused the address")
                attempts.append(f"error reply {_name(code)}")
                break
        raise LinkError(f"{doing}: no good reply after {len(attempts)} attempts ({'; '.join(attempts)})")

    # ---- HostLink -----------------------------------------------------------------------------
    def read_csr(self, addr: int) -> int:
        _check_reg(addr)
        return self._transact(Op.READ_CSR, addr, count=1, expect=1, doing=f"reading register {addr:#x}")[0]

    def write_csr(self, addr: int, value: int) -> None:
        _check_reg(addr)
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 1 << 32:
            raise ValueError(f"value must be a 32-bit unsigned integer, not {value!r}")
        self._transact(Op.WRITE_CSR, addr, [value], doing=f"writing register {addr:#x}")

    def read_mem(self, addr: int, nbytes: int) -> bytes:
        self._check_span(addr, nbytes)
        first, end = addr & ~3, (addr + nbytes + 3) & ~3
        out = bytearray()
        for start in range(first, end, 4 * self.max_words):
            count = min(self.max_words, (end - start) // 4)
            words = self._transact(Op.READ_MEM, start, count=count, expect=count,
                                   doing=f"reading {4 * count} bytes at {start:#x}")
            out += struct.pack(f"<{count}I", *words)
        return bytes(out[addr - first:addr - first + nbytes])

    def write_mem(self, addr: int, data: bytes) -> None:
        data = bytes(data)
        self._check_span(addr, len(data))
        if not data:
            return
        first, end = addr & ~3, (addr + len(data) + 3) & ~3
        head, tail = addr - first, end - addr - len(data)
        if head or tail:                          # keep the bytes around an unaligned span
            whole = bytearray(self.read_mem(first, 4)) + bytearray(end - first - 4)
            whole[-4:] = self.read_mem(end - 4, 4)
            whole[head:head + len(data)] = data
            data = bytes(whole)
        for offset in range(0, len(data), 4 * self.max_words):
            chunk = data[offset:offset + 4 * self.max_words]
            self._transact(Op.WRITE_MEM, first + offset, struct.unpack(f"<{len(chunk) // 4}I", chunk),
                           doing=f"writing {len(chunk)} bytes at {first + offset:#x}")

    def irq_level(self) -> bool:
        """The interrupt line's level now (a ``STATUS`` request: its reply carries it)."""
        self._transact(Op.STATUS, expect=1)
        return self._reply_irq

    def wait_irq(self, timeout_cycles: int) -> bool:
        if isinstance(timeout_cycles, bool) or not isinstance(timeout_cycles, int) or timeout_cycles < 0:
            raise ValueError(f"timeout_cycles must be a non-negative integer, not {timeout_cycles!r}")
        deadline = time.monotonic() + timeout_cycles / self.clock_hz + self.timeout
        while True:
            self._irq_hint = False
            if self.irq_level():
                return True
            if time.monotonic() >= deadline:
                return False
            hint_deadline = min(deadline, time.monotonic() + self.poll_s)
            while not self._irq_hint and time.monotonic() < hint_deadline:
                frame = self._frame(hint_deadline, 0)
                if frame is not None and frame[0] & ~IRQ_LEVEL == Status.IRQ:
                    self._irq_hint = True
                    self.irq_frames += 1

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        close = getattr(self._stream, "close", None)
        if close is not None:
            close()

    def _check_span(self, addr: int, nbytes: int) -> None:
        if (isinstance(addr, bool) or isinstance(nbytes, bool) or not isinstance(addr, int)
                or not isinstance(nbytes, int) or addr < 0 or nbytes < 0 or addr + nbytes > self.mem_size):
            raise ValueError(f"[{addr!r}, +{nbytes!r}) must lie within the board's memory "
                             f"({self.mem_size:#x} bytes)")


def _name(code: int) -> str:
    try:
        return Status(code).name
    except ValueError:
        return f"status {code:#04x}"


def _check_reg(addr: int) -> None:
    if isinstance(addr, bool) or not isinstance(addr, int) or not 0 <= addr < CSR_SPACE or addr % 4:
        raise ValueError(f"register address must be a multiple of 4 below {CSR_SPACE:#x}, not {addr!r}")
