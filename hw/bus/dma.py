"""AXI4 master DMA: a read engine and a write engine sharing one AXI4 port (DESIGN.md §4).

Both engines move whole bus words (``data_width // 8``-byte aligned addresses and lengths), split a
command into INCR bursts of at most ``max_burst`` beats that never cross a 4 KiB boundary
(IHI 0022 A3.4.1), keep several bursts in flight, check every response, and refuse a command outside
the DMA window before any bus transaction.
"""

import enum

from amaranth.hdl import Const, Elaboratable, Module, Mux, ResetInserter, Signal
from amaranth.lib import data, stream, wiring
from amaranth.lib.fifo import SyncFIFO, SyncFIFOBuffered
from amaranth.lib.wiring import In, Out

from fp8train.hw.bus.axi import AxiBurst, AxiSignature

__all__ = ["DmaError", "Dma", "command_layout"]

#: AXI's burst boundary: an INCR burst must not cross a multiple of this many bytes.
BOUNDARY = 4096


class DmaError(enum.IntEnum):
    """``Dma.error`` codes: ``kind << 1 | is_write`` with kind 1 SLVERR, 2 DECERR, 3 window
    refusal, 4 misalignment. The controller maps them onto ``protocol.ErrorCode``."""
    NONE = 0
    READ_SLVERR = 2
    WRITE_SLVERR = 3
    READ_DECERR = 4
    WRITE_DECERR = 5
    READ_WINDOW = 6
    WRITE_WINDOW = 7
    READ_MISALIGNED = 8
    WRITE_MISALIGNED = 9


_KIND_WINDOW, _KIND_MISALIGNED = 3, 4


def command_layout(addr_width: int, length_width: int) -> data.StructLayout:
    """A transfer: byte address and length in bytes."""
    return data.StructLayout({"addr": addr_width, "length": length_width})


def word_shift(data_width: int) -> int:
    """log2 of the bytes per bus word: the address bits below a word."""
    return (data_width // 8 - 1).bit_length()


def dma_members(*, addr_width: int, data_width: int, id_width: int, length_width: int) -> dict:
    """The ports of :class:`Dma` (and of ``SerialDma``, its drop-in replacement), with the width
    checks: the bus's by ``AxiSignature``, then ``length_width``'s."""
    bus = AxiSignature(addr_width=addr_width, data_width=data_width, id_width=id_width)
    shift = word_shift(data_width)
    if not isinstance(length_width, int) or not shift < length_width <= addr_width:
        raise ValueError(f"length_width must be an integer from {shift + 1} to {addr_width}, "
                         f"not {length_width!r}")
    command = stream.Signature(command_layout(addr_width, length_width))
    return {
        "m_axi": Out(bus),
        "rd_cmd": In(command),
        "rd_data": Out(stream.Signature(data.StructLayout({"data": data_width, "last": 1}))),
        "wr_cmd": In(command),
        "wr_data": In(stream.Signature(data.StructLayout({"data": data_width,
                                                          "strb": data_width // 8}))),
        "window_base": In(addr_width), "window_limit": In(addr_width),
        "error": Out(4), "clear": In(1), "abort": In(1),
        "rd_done": Out(1), "wr_done": Out(1), "busy": Out(1), "stall": Out(1),
    }


def sticky_error(m: Module, dma, read, write) -> None:
    """``dma.error``: the first code reported (``err_stb``/``err_code``) by the engines since
    ``clear``, the read engine's if both report at once; a report in the cycle of ``clear`` wins."""
    with m.If(read.err_stb & ((dma.error == 0) | dma.clear)):
        m.d.sync += dma.error.eq(read.err_code)
    with m.Elif(write.err_stb & ((dma.error == 0) | dma.clear)):
        m.d.sync += dma.error.eq(write.err_code)
    with m.Elif(dma.clear):
        m.d.sync += dma.error.eq(DmaError.NONE)


def fixed_attributes(m: Module, bus, shift: int, *, r_always_ready: bool = True) -> None:
    """Whole-word INCR bursts with ID 0; B is always accepted, and R too unless ``r_always_ready`` is
    False (the caller then drives ``rready``)."""
    m.d.comb += [bus.arsize.eq(shift), bus.arburst.eq(AxiBurst.INCR), bus.arid.eq(0),
                 bus.awsize.eq(shift), bus.awburst.eq(AxiBurst.INCR), bus.awid.eq(0), bus.bready.eq(1)]
    if r_always_ready:
        m.d.comb += bus.rready.eq(1)


def _positive(name, value, high=None):
    if not isinstance(value, int) or isinstance(value, bool) or value < 1 or (high and value > high):
        rule = f"an integer from 1 to {high}" if high else "a positive integer"
        raise ValueError(f"{name} must be {rule}, not {value!r}")


class _Engine(Elaboratable):
    """What both engines share: command checks, burst sizing, the per-burst "ends its command" tags
    and their status to the ``Dma``.

    An engine is *issuing* from taking a command until its last AR/AW is registered; it then takes
    the next command while the bursts of earlier ones are still in flight (``tags``, one entry per
    burst, oldest first, 1 on a command's last burst)."""

    def __init__(self, dma: "Dma", write: int):
        self.dma, self.write = dma, write
        prefix = "wr" if write else "rd"
        self.issuing = Signal(name=f"{prefix}_issuing")
        self.busy = Signal(name=f"{prefix}_busy")
        self.stall = Signal(name=f"{prefix}_stall")
        self.err_stb = Signal(name=f"{prefix}_err_stb")
        self.err_code = Signal(4, name=f"{prefix}_err_code")

    def accept(self, m, cmd, done, addr, left, in_flight):
        """Take a command from ``cmd`` when not issuing and error-free; check it, then start it (load
        ``addr`` and the beat count ``left``) or refuse it (error code, ``done`` pulse). A command
        that moves no data is taken only with nothing ``in_flight``, so its ``done`` pulse never
        coincides with that of a burst."""
        dma = self.dma
        shift = dma._shift
        misaligned = (cmd.p.addr[:shift] != 0) | (cmd.p.length[:shift] != 0) if shift else Const(0)
        outside = (cmd.p.addr < dma.window_base) | (cmd.p.addr + cmd.p.length > dma.window_limit)
        no_data = misaligned | outside | (cmd.p.length == 0)
        m.d.comb += cmd.ready.eq(~self.issuing & (dma.error == 0) & ~dma.abort & (~no_data | ~in_flight))
        with m.If(cmd.valid & cmd.ready):
            with m.If(misaligned):
                m.d.comb += [self.err_stb.eq(1), self.err_code.eq(_KIND_MISALIGNED << 1 | self.write)]
                m.d.sync += done.eq(1)
            with m.Elif(outside):
                m.d.comb += [self.err_stb.eq(1), self.err_code.eq(_KIND_WINDOW << 1 | self.write)]
                m.d.sync += done.eq(1)
            with m.Elif(cmd.p.length == 0):
                m.d.sync += done.eq(1)
            with m.Else():
                m.d.sync += [self.issuing.eq(1), addr.eq(cmd.p.addr), left.eq(cmd.p.length >> shift)]

    def burst(self, m, addr, left):
        """Beats of the next burst: ``min(left, max_burst, beats to the next 4 KiB boundary)``."""
        dma, shift = self.dma, self.dma._shift
        to_boundary = Signal(range((BOUNDARY >> shift) + 1))
        capped = Signal(range(dma.max_burst + 1))
        beats = Signal(range(dma.max_burst + 1))
        m.d.comb += [
            to_boundary.eq((BOUNDARY >> shift) - addr[shift:BOUNDARY.bit_length() - 1]),
            capped.eq(Mux(left < dma.max_burst, left, dma.max_burst)),
            beats.eq(Mux(to_boundary < capped, to_boundary, capped)),
        ]
        return beats

    def issue_address(self, m, issue, valid, ready, bus_addr, bus_len, addr, left, beats, tags):
        """Register the next AR/AW when ``issue``, tag it, and end issuing after the last one."""
        m.d.comb += [tags.w_en.eq(issue), tags.w_data.eq(left == beats)]
        with m.If(issue):
            m.d.sync += [valid.eq(1), bus_addr.eq(addr), bus_len.eq(beats - 1),
                         addr.eq(addr + (beats << self.dma._shift)), left.eq(left - beats)]
            with m.If(left == beats):
                m.d.sync += self.issuing.eq(0)
        with m.Elif(ready):
            m.d.sync += valid.eq(0)

    def response_error(self, m, resp):
        """Report an error response (SLVERR 0b10 → kind 1, DECERR 0b11 → kind 2)."""
        m.d.comb += [self.err_stb.eq(1), self.err_code.eq((resp - 1) << 1 | self.write)]


class _ReadEngine(_Engine):
    """AR bursts up to ``max_reads_outstanding`` in flight, of one or several commands; R beats into
    a buffer of ``max_burst * max_reads_outstanding`` words, with an AR issued only when the buffer
    has room for all its beats, so ``rready`` is always 1 and a slow consumer never holds the bus."""

    def __init__(self, dma):
        super().__init__(dma, write=0)

    def elaborate(self, platform):
        m = Module()
        dma, bus = self.dma, self.dma.m_axi
        depth = dma.max_burst * dma.max_reads_outstanding
        flush = Signal()
        m.submodules.buffer = buffer = ResetInserter(flush)(
            SyncFIFOBuffered(width=len(dma.rd_data.p.as_value()), depth=depth))
        m.submodules.tags = tags = SyncFIFO(width=1, depth=dma.max_reads_outstanding)

        addr = Signal(dma.addr_width)
        left = Signal(dma._beats_width)          # beats of the issuing command not yet requested
        fail = Signal()                          # drop everything in flight
        expected = Signal(range(depth + 1))      # beats requested, not received
        in_flight = tags.r_rdy | bus.arvalid

        m.d.sync += dma.rd_done.eq(0)            # a pulse, unless set below
        self.accept(m, dma.rd_cmd, dma.rd_done, addr, left, in_flight)

        # Address channel: a registered AR, reloaded in the cycle its handshake completes.
        beats = self.burst(m, addr, left)
        room = buffer.level + expected + beats <= depth
        issue = self.issuing & ~fail & (~bus.arvalid | bus.arready) & tags.w_rdy & room
        self.issue_address(m, issue, bus.arvalid, bus.arready, bus.araddr, bus.arlen, addr, left, beats, tags)

        # Data channel: always ready (the buffer has room for every requested beat).
        beat = bus.rvalid
        ends_burst = beat & bus.rlast
        ends_command = ends_burst & tags.r_data
        m.d.comb += tags.r_en.eq(ends_burst)
        m.d.sync += expected.eq(expected + Mux(issue, beats, 0) - beat)
        with m.If(beat & ~fail):
            with m.If(bus.rresp[1]):
                self.response_error(m, bus.rresp)
                m.d.sync += fail.eq(1)
                m.d.comb += flush.eq(1)
            with m.Else():
                m.d.comb += [buffer.w_en.eq(1),
                             buffer.w_data.eq(bus.rdata | ends_command << dma.data_width)]
                with m.If(ends_command):
                    m.d.sync += dma.rd_done.eq(1)
        with m.If(dma.abort):
            m.d.comb += flush.eq(1)
            with m.If(self.busy):
                m.d.sync += fail.eq(1)

        m.d.comb += [dma.rd_data.p.eq(buffer.r_data), dma.rd_data.valid.eq(buffer.r_rdy),
                     buffer.r_en.eq(dma.rd_data.ready)]

        # A failure ends once every issued burst is back: one done pulse for the dropped commands.
        with m.If(fail & ~bus.arvalid & ~tags.r_rdy):
            m.d.sync += [fail.eq(0), self.issuing.eq(0), dma.rd_done.eq(1)]

        m.d.comb += self.busy.eq(self.issuing | in_flight | fail)
        # Waiting on the bus: an AR not taken, or beats requested and none arriving. Not a stall:
        # nothing requested because the buffer is full (the consumer is the bottleneck).
        m.d.comb += self.stall.eq(self.busy & ~beat &
                                  (bus.arvalid | (expected != 0) | (self.issuing & room) | fail))
        return m


class _WriteEngine(_Engine):
    """AW bursts up to ``max_writes_outstanding`` awaiting their B, of one or several commands; W
    beats through an output register, after the burst's AW has been issued, ``wlast`` on each burst's
    last beat."""

    def __init__(self, dma):
        super().__init__(dma, write=1)

    def elaborate(self, platform):
        m = Module()
        dma, bus = self.dma, self.dma.m_axi
        # Beats minus one of each burst whose AW is issued and whose W beats are not all loaded.
        m.submodules.bursts = bursts = SyncFIFO(width=8, depth=dma.max_writes_outstanding)
        m.submodules.tags = tags = SyncFIFO(width=1, depth=dma.max_writes_outstanding)

        addr = Signal(dma.addr_width)
        left = Signal(dma._beats_width)          # beats of the issuing command not yet covered by an AW
        fail = Signal()                          # drop everything in flight
        loaded = Signal(8)                       # beats of the head burst loaded into W
        in_flight = tags.r_rdy | bus.awvalid

        m.d.sync += dma.wr_done.eq(0)            # a pulse, unless set below
        self.accept(m, dma.wr_cmd, dma.wr_done, addr, left, in_flight)

        # Address channel.
        beats = self.burst(m, addr, left)
        issue = self.issuing & ~fail & (~bus.awvalid | bus.awready) & tags.w_rdy & bursts.w_rdy
        m.d.comb += [bursts.w_en.eq(issue), bursts.w_data.eq(beats - 1)]
        self.issue_address(m, issue, bus.awvalid, bus.awready, bus.awaddr, bus.awlen, addr, left, beats, tags)

        # Data channel: an output register loaded from wr_data, or with empty beats (wstrb 0,
        # wr_data not consumed) once the command fails, so every issued AW gets its beats.
        load = ~bus.wvalid | bus.wready
        source = bursts.r_rdy & (fail | dma.wr_data.valid)
        last = loaded == bursts.r_data
        m.d.comb += dma.wr_data.ready.eq(bursts.r_rdy & load & ~fail)
        with m.If(load):
            m.d.sync += bus.wvalid.eq(source)
            with m.If(source):
                m.d.sync += [bus.wdata.eq(Mux(fail, 0, dma.wr_data.p.data)),
                             bus.wstrb.eq(Mux(fail, 0, dma.wr_data.p.strb)),
                             bus.wlast.eq(last), loaded.eq(Mux(last, 0, loaded + 1))]
                m.d.comb += bursts.r_en.eq(last)

        # Response channel: always ready; every response counted and checked.
        response = bus.bvalid
        m.d.comb += tags.r_en.eq(response)
        with m.If(response & ~fail):
            with m.If(bus.bresp[1]):
                self.response_error(m, bus.bresp)
                m.d.sync += fail.eq(1)
            with m.Elif(tags.r_data):
                m.d.sync += dma.wr_done.eq(1)
        with m.If(dma.abort & self.busy):
            m.d.sync += fail.eq(1)

        # A failure ends once every issued burst has its beats and its response.
        with m.If(fail & ~bus.awvalid & ~bursts.r_rdy & ~bus.wvalid & ~tags.r_rdy):
            m.d.sync += [fail.eq(0), self.issuing.eq(0), dma.wr_done.eq(1)]

        m.d.comb += self.busy.eq(self.issuing | in_flight | fail)
        # Waiting on the bus, except when the W register is empty for want of write data.
        starved = bursts.r_rdy & ~fail & ~dma.wr_data.valid & ~bus.wvalid
        m.d.comb += self.stall.eq(self.busy & ~(bus.wvalid & bus.wready) & ~starved)
        return m


class Dma(wiring.Component):
    """AXI4 master DMA: a read engine (memory → ``rd_data``) and a write engine (``wr_data`` →
    memory) on one AXI4 port, each with several commands in flight.

    Parameters
    ----------
    max_burst : int
        Beats per burst, 1 to 256 (an AXI4 INCR burst's limit).
    max_reads_outstanding : int
        AR bursts in flight; the read buffer holds ``max_burst * max_reads_outstanding`` words.
    max_writes_outstanding : int
        AW bursts awaiting their write response.
    addr_width, data_width, id_width : int
        The AXI4 port's widths (``AxiSignature``). Every transaction uses ID 0, so responses come
        back in order; ``rid``/``bid`` are not checked.
    length_width : int
        Width of a command's byte length (1 MiB - 1 at most by default).

    Members
    -------
    m_axi : Out(AxiSignature(addr_width, data_width, id_width))
        Verilog ``m_axi_awaddr``, ... ``awsize``/``arsize`` = log2(data_width / 8), INCR bursts.
    rd_cmd : In(stream.Signature(command_layout))
        ``addr`` and ``length`` in bytes, both multiples of ``data_width // 8``.
    rd_data : Out(stream.Signature({data, last}))
        The command's words in address order; ``last`` marks the last word of a command.
    wr_cmd : In(stream.Signature(command_layout))
    wr_data : In(stream.Signature({data, strb}))
        ``length // (data_width // 8)`` words per write command, in address order; ``strb`` is
        ``wstrb`` (all ones for a plain write).
    window_base, window_limit : In(addr_width)
        A command is allowed iff ``window_base <= addr`` and ``addr + length <= window_limit``.
    error : Out(4)
        Sticky :class:`DmaError`, the first error since the last ``clear``.
    clear : In(1)
        Pulse: ``error`` back to 0 (an error reported in the same cycle wins).
    abort : In(1)
        Pulse: drop all work (see below) and return to idle.
    rd_done, wr_done : Out(1)
        One-cycle pulse per command taken from ``rd_cmd``/``wr_cmd``, in command order: when its last
        burst is complete on the bus (for reads all R beats received; the words may still be in the
        buffer), or the cycle after a refused or zero-length command is dropped. After a failure or
        an abort, one pulse when everything in flight is dropped (commands completed before it have
        had theirs; the dropped ones get none of their own).
    busy : Out(1)
        A command is being issued or has bursts in flight in either engine (read words still buffered
        do not count).
    stall : Out(1)
        An engine has a command in progress and is waiting on the bus: an AR/AW/W not taken, or
        beats/responses outstanding and none arriving this cycle. Cycles in which the engine waits
        for the controller (read buffer full, write data not offered) are not stalls.

    Command contract
    ----------------
    A command is taken (``ready``) once the engine has issued every AR/AW of the previous one (its
    bursts may still be in flight), while ``error`` is 0 and ``abort`` is low; so after an error,
    new commands wait until ``clear``. A taken command is checked first: misaligned (``addr`` or
    ``length`` not a multiple of ``data_width // 8``) → ``*_MISALIGNED``; outside the window →
    ``*_WINDOW``; in both cases it is consumed with no bus transaction, no ``rd_data`` word and no
    ``wr_data`` word taken, and ``*_done`` pulses. Length 0 is consumed likewise without an error.
    Such a command, which moves no data, is taken only when nothing of the engine is in flight
    (``ready`` depends on the payload).

    Bursts: INCR, ``min(max_burst, words left, words to the next 4 KiB boundary)`` beats, issued in
    address order. Reads: an AR is issued only when the buffer can take all its beats (``rready``
    is always 1). Writes: a burst's W beats are offered from the cycle after its AW becomes valid
    (so possibly before the AW handshake, as AXI allows; never before AWVALID), through a register
    (``wvalid``/payload stable until ``wready``); ``bready`` is always 1. Throughput: one beat per
    cycle on R and on W when neither side pauses; a command's first AR/AW follows the previous
    command's last one without waiting for its data or responses, so short commands pipeline.

    Errors and abort: an RRESP/BRESP of SLVERR or DECERR sets ``error`` (if 0) and makes that
    engine drop everything in flight (the failing command and any later ones): no new AR/AW; R beats
    of issued ARs are accepted and discarded, the read buffer is flushed and no further ``rd_data``
    word appears (the failing command's ``last`` never comes); issued AWs get their remaining W beats with ``wstrb`` 0 and
    ``wr_data`` is no longer consumed (the controller drops the rest of its write data itself);
    every B is awaited. Then ``*_done`` pulses and the engine is idle. The other engine's command is
    not affected. ``abort`` does the same to both engines without setting ``error`` and also
    flushes buffered read words of earlier commands; the controller must not offer a command in the
    cycle of ``abort``. No AXI handshake is ever left pending: valid signals stay up until taken.
    """

    #: R and B are always accepted (``rready`` and ``bready`` are 1).
    r_always_ready = True

    def __init__(self, *, max_burst: int = 16, max_reads_outstanding: int = 4,
                 max_writes_outstanding: int = 4, addr_width: int = 32, data_width: int = 64,
                 id_width: int = 4, length_width: int = 20):
        _positive("max_burst", max_burst, 256)
        _positive("max_reads_outstanding", max_reads_outstanding, 64)
        _positive("max_writes_outstanding", max_writes_outstanding, 64)
        self.max_burst = max_burst
        self.max_reads_outstanding = max_reads_outstanding
        self.max_writes_outstanding = max_writes_outstanding
        self.addr_width, self.data_width, self.length_width = addr_width, data_width, length_width
        self._shift = word_shift(data_width)
        self._beats_width = length_width - self._shift
        super().__init__(dma_members(addr_width=addr_width, data_width=data_width, id_width=id_width,
                                     length_width=length_width))

    def elaborate(self, platform):
        m = Module()
        m.submodules.read = read = _ReadEngine(self)
        m.submodules.write = write = _WriteEngine(self)
        sticky_error(m, self, read, write)
        fixed_attributes(m, self.m_axi, self._shift)
        m.d.comb += [self.busy.eq(read.busy | write.busy),
                     self.stall.eq(read.stall | write.stall)]
        return m
