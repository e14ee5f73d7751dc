"""UART receiver and transmitter (8 data bits, no parity, 1 stop bit, LSB first) for the host bridge.

The bit time is ``divisor`` clock cycles (the board clock over the baud rate, :func:`baud_divisor`).
"""

from amaranth.hdl import Cat, Const, Module, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.cdc import FFSynchronizer
from amaranth.lib.wiring import In, Out

from fp8train.frames import CRC_POLY

__all__ = ["UartRx", "UartTx", "baud_divisor", "crc16_step", "MIN_DIVISOR", "MAX_DIVISOR"]

MIN_DIVISOR = 4
MAX_DIVISOR = 1 << 16
#: Largest relative error of the achieved baud rate :func:`baud_divisor` accepts: both ends' errors
#: add up, and sampling a 10-bit frame in mid-bit tolerates about 5% in total.
BAUD_TOLERANCE = 0.02


def _check_divisor(divisor):
    if isinstance(divisor, bool) or not isinstance(divisor, int) or not MIN_DIVISOR <= divisor <= MAX_DIVISOR:
        raise ValueError(f"divisor must be an integer from {MIN_DIVISOR} to {MAX_DIVISOR} clock cycles per "
                         f"bit, not {divisor!r}")


def baud_divisor(clock_hz: float, baud: int) -> int:
    """Clock cycles per bit for ``baud`` at ``clock_hz``; ValueError when the nearest integer misses the
    rate by more than :data:`BAUD_TOLERANCE`."""
    if isinstance(baud, bool) or not isinstance(baud, int) or baud <= 0:
        raise ValueError(f"baud must be a positive integer, not {baud!r}")
    divisor = round(clock_hz / baud)
    if divisor < MIN_DIVISOR:
        raise ValueError(f"{baud} baud needs at least {MIN_DIVISOR} clock cycles per bit; a {clock_hz / 1e6:g} MHz "
                         f"clock gives {clock_hz / baud:.2f}")
    error = abs(clock_hz / divisor - baud) / baud
    if error > BAUD_TOLERANCE:
        raise ValueError(f"{baud} baud from a {clock_hz / 1e6:g} MHz clock: the nearest divisor {divisor} is "
                         f"{error:.1%} off (at most {BAUD_TOLERANCE:.0%})")
    _check_divisor(divisor)
    return divisor


def crc16_step(crc, byte):
    """The CRC-16/CCITT-FALSE register after ``byte`` (an Amaranth expression; see
    :func:`fp8train.frames.crc16`, its bit-serial Python twin)."""
    # The bit-serial register, run symbolically: each bit is the set of input bits it is the XOR of.
    state = [frozenset({("crc", i)}) for i in range(16)]
    for bit in range(7, -1, -1):
        feedback = state[15] ^ {("byte", bit)}
        state = [(state[i - 1] if i else frozenset()) ^ (feedback if CRC_POLY >> i & 1 else frozenset())
                 for i in range(16)]
    inputs = {"crc": crc, "byte": byte}
    return Cat(*(_xor([inputs[name][i] for name, i in sorted(terms)]) for terms in state))


def _xor(bits):
    result = bits[0]
    for bit in bits[1:]:
        result = result ^ bit
    return result


class UartRx(wiring.Component):
    """Receiver: bytes from the ``rx`` line.

    ``rx`` passes a two-flip-flop synchroniser. A falling edge starts a frame; half a bit later the
    start bit is checked again (a glitch shorter than that is ignored), then every bit is sampled in
    its middle. A byte whose stop bit is 0 is dropped and ``error`` pulses; the receiver then waits for
    the line to return high (a break) before it looks for the next start bit.

    Parameters
    ----------
    divisor : int
        Clock cycles per bit, :data:`MIN_DIVISOR` to :data:`MAX_DIVISOR`.

    Members
    -------
    rx : In(1)
        The serial line (idle high); asynchronous.
    o : Out(stream.Signature(8, always_ready=True))
        A received byte: ``valid`` for one cycle, about half a bit after its stop bit began.
    error : Out(1)
        One cycle: a framing error (stop bit 0).
    """

    def __init__(self, *, divisor: int):
        _check_divisor(divisor)
        self.divisor = divisor
        super().__init__({"rx": In(1, init=1), "o": Out(stream.Signature(8, always_ready=True)),
                          "error": Out(1)})

    def elaborate(self, platform):
        m = Module()
        line = Signal(init=1)
        m.submodules.sync = FFSynchronizer(self.rx, line, init=1)
        timer = Signal(range(self.divisor))
        bits = Signal(4)                     # data bits still to sample
        shift = Signal(8)
        m.d.sync += [self.o.valid.eq(0), self.error.eq(0)]
        m.d.comb += self.o.payload.eq(shift)
        with m.If(timer != 0):
            m.d.sync += timer.eq(timer - 1)
        with m.FSM(name="rx"):
            with m.State("IDLE"):
                with m.If(~line):
                    m.d.sync += timer.eq(self.divisor // 2 - 1)
                    m.next = "START"
            with m.State("START"):
                with m.If(timer == 0):
                    with m.If(line):         # a glitch, not a start bit
                        m.next = "IDLE"
                    with m.Else():
                        m.d.sync += [timer.eq(self.divisor - 1), bits.eq(8)]
                        m.next = "DATA"
            with m.State("DATA"):
                with m.If(timer == 0):
                    m.d.sync += [shift.eq(Cat(shift[1:], line)), bits.eq(bits - 1), timer.eq(self.divisor - 1)]
                    with m.If(bits == 1):
                        m.next = "STOP"
            with m.State("STOP"):
                with m.If(timer == 0):
                    with m.If(line):
                        m.d.sync += self.o.valid.eq(1)
                        m.next = "IDLE"
                    with m.Else():
                        m.d.sync += self.error.eq(1)
                        m.next = "BREAK"
            with m.State("BREAK"):
                with m.If(line):
                    m.next = "IDLE"
        return m


class UartTx(wiring.Component):
    """Transmitter: a byte from ``i`` per frame of start bit, 8 data bits (LSB first) and stop bit.

    Parameters
    ----------
    divisor : int
        Clock cycles per bit, :data:`MIN_DIVISOR` to :data:`MAX_DIVISOR`.

    Members
    -------
    i : In(stream.Signature(8))
        Bytes to send; ``ready`` while the transmitter is idle, so one is taken per ``10 * divisor``
        cycles when they come back to back.
    tx : Out(1)
        The serial line, a register (idle high).
    """

    def __init__(self, *, divisor: int):
        _check_divisor(divisor)
        self.divisor = divisor
        super().__init__({"i": In(stream.Signature(8)), "tx": Out(1, init=1)})

    def elaborate(self, platform):
        m = Module()
        timer = Signal(range(self.divisor))
        shift = Signal(9, init=0x1FF)        # data bits then the stop bit; tx holds the current bit
        bits = Signal(range(11))             # bits of the frame still to finish
        m.d.comb += self.i.ready.eq(bits == 0)
        with m.If(self.i.valid & self.i.ready):
            m.d.sync += [self.tx.eq(0), shift.eq(Cat(self.i.payload, Const(1, 1))), bits.eq(10),
                         timer.eq(self.divisor - 1)]
        with m.Elif(bits != 0):
            with m.If(timer == 0):
                m.d.sync += [self.tx.eq(shift[0]), shift.eq(Cat(shift[1:], Const(1, 1))), bits.eq(bits - 1),
                             timer.eq(self.divisor - 1)]
            with m.Else():
                m.d.sync += timer.eq(timer - 1)
        return m
