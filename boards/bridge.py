"""The UART host bridge: the host protocol of DESIGN.md §5 over a serial line (issue 7, item 2).

The frame format, its CRC, the rejection rules and what makes retries safe are documented once, in
:mod:`fp8train.frames`; this module implements the device side:

* :class:`FrameParser` turns received bytes into checked requests (data words into the frame buffer);
* :class:`ReplyFramer` sends a reply (or ``IRQ``) frame, its data words from the frame buffer;
* :class:`UartHostBridge` (:data:`~fp8train.boards.system.HostBridgeSignature`) joins them to the UART
  and executes requests as AXI4-Lite transactions on ``csr`` and ``mem``.
"""

from amaranth.hdl import Cat, Const, Module, Mux, Signal
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out
from amaranth.utils import exact_log2

from fp8train.frames import (CRC_INIT, CSR_SPACE, IRQ_LEVEL, MAX_WORDS, SYNC_REPLY, SYNC_REQUEST, Op, Status,
                             info_word)
from fp8train.hw.compare import at_most

from .system import HostBridgeSignature
from .uart import UartRx, UartTx, crc16_step

__all__ = ["FrameParser", "ReplyFramer", "UartHostBridge", "request_layout", "reply_layout"]

request_layout = data.StructLayout({"op": 8, "seq": 8, "count": 8, "addr": 32, "error": 8})
reply_layout = data.StructLayout({"status": 8, "seq": 8, "count": 8})


def _check_max_words(max_words):
    if isinstance(max_words, bool) or not isinstance(max_words, int) or not 1 <= max_words <= MAX_WORDS:
        raise ValueError(f"max_words must be an integer from 1 to {MAX_WORDS}, not {max_words!r}")


class FrameParser(wiring.Component):
    """Request frames from received bytes, checked before anything is executed.

    Hunts for the sync byte, checks ``op`` and ``count`` as they arrive, stores the data words of a
    write at ``wr_addr`` 0, 1, ... and checks the CRC. Every frame it started ends as one request on
    ``o``: ``error`` is ``Status.OK`` for a good frame, else the reason (``BAD_CRC``, ``TRUNCATED``,
    ``BAD_OP``, ``BAD_LENGTH``, ``FRAMING``; see :mod:`fp8train.frames` for when each is reported).

    Parameters
    ----------
    max_words : int
        Largest ``count`` of a memory op, 1 to 255.
    timeout : int
        Clock cycles of silence that end a frame (``TRUNCATED``) or a discarded stretch; at least 1.

    Members
    -------
    i : In(stream.Signature(8, always_ready=True))
        Received bytes (:class:`~fp8train.boards.uart.UartRx`).
    rx_error : In(1)
        A framing error on the line.
    busy : In(1)
        The executor owns the frame buffer: bytes are dropped, and no frame starts.
    o : Out(stream.Signature(request_layout))
        The request; held until taken, and bytes that arrive meanwhile are dropped.
    wr_addr : Out(range(max_words)), wr_data : Out(32), wr_en : Out(4)
        The frame buffer's write port, with byte lanes: each data byte of a write request goes to
        its lane (``wr_en`` one-hot; ``wr_data`` has the byte in every lane) of word ``wr_addr`` as it
        arrives, so no word is assembled in flip-flops. A rejected frame may leave part of a word written.
    """

    def __init__(self, *, max_words: int, timeout: int):
        _check_max_words(max_words)
        if isinstance(timeout, bool) or not isinstance(timeout, int) or timeout < 1:
            raise ValueError(f"timeout must be a positive number of clock cycles, not {timeout!r}")
        self.max_words, self.timeout = max_words, timeout
        super().__init__({
            "i": In(stream.Signature(8, always_ready=True)), "rx_error": In(1), "busy": In(1),
            "o": Out(stream.Signature(request_layout)),
            "wr_addr": Out(range(max_words)), "wr_data": Out(32), "wr_en": Out(4),
        })

    def elaborate(self, platform):
        m = Module()
        byte, got = self.i.payload, self.i.valid
        req = self.o.payload
        crc = Signal(16, init=CRC_INIT)
        index = Signal(3)                      # header byte after the sync (0: op ... 6: addr[31:24])
        word = Signal(range(self.max_words + 1))   # data word being received
        lane = Signal(2)                       # its byte
        words = Signal(range(MAX_WORDS + 1))   # data words of this request (once its count is in)
        quiet = Signal(range(self.timeout + 1))
        m.d.comb += [self.wr_addr.eq(word), self.wr_data.eq(byte.replicate(4)),
                     words.eq(Mux((req.op == Op.WRITE_CSR) | (req.op == Op.WRITE_MEM), req.count, 0))]
        with m.If(got):
            m.d.sync += quiet.eq(0)
        with m.Elif(quiet != self.timeout):
            m.d.sync += quiet.eq(quiet + 1)
        timed_out = quiet == self.timeout

        counts_ok = Mux(req.op == Op.STATUS, byte == 0,
                        Mux(at_most(req.op, Op.WRITE_CSR), byte == 1, (byte != 0) & at_most(byte, self.max_words)))

        def finish(error):
            m.d.sync += [req.error.eq(error), self.o.valid.eq(1)]
            m.next = "EMIT"

        with m.FSM(name="parser"):
            with m.State("HUNT"):
                with m.If(got & ~self.busy & (byte == SYNC_REQUEST)):
                    m.d.sync += [crc.eq(CRC_INIT), index.eq(0), req.seq.eq(0), word.eq(0), lane.eq(0)]
                    m.next = "HEADER"
            with m.State("HEADER"):
                with m.If(self.rx_error):
                    m.d.sync += req.error.eq(Status.FRAMING)
                    m.next = "DISCARD"
                with m.Elif(got):
                    m.d.sync += [crc.eq(crc16_step(crc, byte)), index.eq(index + 1)]
                    with m.Switch(index):
                        with m.Case(0):
                            m.d.sync += req.op.eq(byte)
                            with m.If(~at_most(byte, Op.WRITE_MEM)):
                                m.d.sync += req.error.eq(Status.BAD_OP)
                                m.next = "DISCARD"
                        with m.Case(1):
                            m.d.sync += req.seq.eq(byte)
                        with m.Case(2):
                            m.d.sync += req.count.eq(byte)
                            with m.If(~counts_ok):
                                m.d.sync += req.error.eq(Status.BAD_LENGTH)
                                m.next = "DISCARD"
                        with m.Default():
                            m.d.sync += req.addr.eq(Cat(req.addr[8:], byte))
                            with m.If((index == 6) & (words != 0)):
                                m.next = "DATA"
                            with m.Elif(index == 6):
                                m.next = "CRC0"
                with m.Elif(timed_out):
                    finish(Status.TRUNCATED)
            with m.State("DATA"):
                with m.If(self.rx_error):
                    m.d.sync += req.error.eq(Status.FRAMING)
                    m.next = "DISCARD"
                with m.Elif(got):
                    m.d.comb += self.wr_en.eq(1 << lane)
                    m.d.sync += [crc.eq(crc16_step(crc, byte)), lane.eq(lane + 1)]
                    with m.If(lane == 3):
                        m.d.sync += word.eq(word + 1)
                        with m.If(word + 1 == words):
                            m.next = "CRC0"
                with m.Elif(timed_out):
                    finish(Status.TRUNCATED)
            for state, after in (("CRC0", "CRC1"), ("CRC1", None)):
                with m.State(state):
                    with m.If(self.rx_error):
                        m.d.sync += req.error.eq(Status.FRAMING)
                        m.next = "DISCARD"
                    with m.Elif(got):
                        m.d.sync += crc.eq(crc16_step(crc, byte))
                        if after is not None:
                            m.next = after
                        else:
                            finish(Mux(crc16_step(crc, byte) == 0, Status.OK, Status.BAD_CRC))
                    with m.Elif(timed_out):
                        finish(Status.TRUNCATED)
            with m.State("DISCARD"):                 # the frame's length is not trusted: wait for silence
                with m.If(timed_out):
                    m.d.sync += self.o.valid.eq(1)
                    m.next = "EMIT"
            with m.State("EMIT"):
                with m.If(self.o.ready):
                    m.d.sync += self.o.valid.eq(0)
                    m.next = "HUNT"
        return m


class ReplyFramer(wiring.Component):
    """Sends one reply frame: sync, the header of ``i``, ``count`` data words read from the frame
    buffer (``rd_addr`` 0, 1, ...), and the CRC.

    Parameters
    ----------
    max_words : int
        Depth of the frame buffer, 1 to 255.

    Members
    -------
    i : In(stream.Signature(reply_layout))
        The reply's header (``status`` with :data:`~fp8train.frames.IRQ_LEVEL` already merged);
        ``ready`` when the previous frame has been handed to ``o`` in full. The payload is read while
        the frame is sent, not stored: hold it until ``ready`` returns (the bridge keeps it in its own
        registers anyway).
    o : Out(stream.Signature(8))
        The frame's bytes (to :class:`~fp8train.boards.uart.UartTx`), a register.
    rd_addr : Out(range(max_words)), rd_data : In(32)
        The frame buffer's read port; ``rd_data`` is the word at the ``rd_addr`` of the cycle before.
    """

    def __init__(self, *, max_words: int):
        _check_max_words(max_words)
        self.max_words = max_words
        super().__init__({"i": In(stream.Signature(reply_layout)), "o": Out(stream.Signature(8)),
                          "rd_addr": Out(range(max_words)), "rd_data": In(32)})

    def elaborate(self, platform):
        m = Module()
        crc = Signal(16)
        index = Signal(2)
        word = Signal(range(self.max_words + 1))
        lane = Signal(2)
        m.d.comb += self.rd_addr.eq(word)
        free = ~self.o.valid | self.o.ready
        with m.If(self.o.ready):
            m.d.sync += self.o.valid.eq(0)
        # The CRC takes a byte from o.payload the cycle after it is sent: from a register, not from the
        # byte multiplexer. Only the CRC bytes wait for it, a cycle the transmitter never notices.
        fresh = Signal()                         # o.payload holds a byte the CRC has yet to take
        m.d.sync += fresh.eq(0)
        with m.If(fresh):
            m.d.sync += crc.eq(crc16_step(crc, self.o.payload))

        def send(byte, checked=True):
            m.d.sync += [self.o.payload.eq(byte), self.o.valid.eq(1), fresh.eq(checked)]

        with m.FSM(name="framer"):
            with m.State("IDLE"):
                m.d.comb += self.i.ready.eq(1)
                with m.If(self.i.valid):
                    m.d.sync += [crc.eq(CRC_INIT), index.eq(0), word.eq(0), lane.eq(0)]
                    m.next = "SYNC"
            with m.State("SYNC"):
                with m.If(free):
                    send(Const(SYNC_REPLY, 8), checked=False)
                    m.next = "HEADER"
            with m.State("HEADER"):
                with m.If(free):
                    send(self.i.payload.as_value().word_select(index, 8))
                    m.d.sync += index.eq(index + 1)
                    with m.If(index == 2):
                        m.next = "FETCH"
                        with m.If(self.i.payload.count == 0):
                            m.next = "CRC_HIGH"
            with m.State("FETCH"):                   # the word's address reaches the buffer
                m.next = "DATA"
            with m.State("DATA"):
                with m.If(free):
                    send(self.rd_data.word_select(lane, 8))
                    m.d.sync += lane.eq(lane + 1)
                    with m.If(lane == 3):
                        m.d.sync += word.eq(word + 1)
                        m.next = "FETCH"
                        with m.If(word + 1 == self.i.payload.count):
                            m.next = "CRC_HIGH"
            with m.State("CRC_HIGH"):
                with m.If(free & ~fresh):
                    send(crc[8:], checked=False)
                    m.next = "CRC_LOW"
            with m.State("CRC_LOW"):
                with m.If(free):
                    send(crc[:8], checked=False)
                    m.next = "IDLE"
        return m


class UartHostBridge(wiring.Component):
    """The host protocol of :mod:`fp8train.frames` over a UART, as AXI4-Lite transactions on the
    accelerator's registers (``csr``) and the on-chip memory (``mem``).

    One request at a time: a checked request from :class:`FrameParser` is executed (memory bursts as
    one AXI4-Lite access per word, each waiting for its response), its read data collected in the
    frame buffer, and the reply sent by :class:`ReplyFramer`. An error response stops a burst and is
    the reply's status. A rising ``irq`` queues an ``IRQ`` frame, sent when no reply is due.

    Parameters
    ----------
    mem_size : int
        Bytes of on-chip memory behind ``mem`` (a power of two from 64 to 2**24).
    divisor : int
        UART clock cycles per bit (:func:`~fp8train.boards.uart.baud_divisor`).
    max_words : int
        Largest memory burst in 32-bit words, 1 to 255 (the frame buffer's depth).
    timeout : int, optional
        Inter-byte timeout in clock cycles (default: 32 byte times). On a board, leave room for
        the gaps a USB serial adapter puts between its packets (around a millisecond).

    Members
    -------
    The :data:`~fp8train.boards.system.HostBridgeSignature` of ``mem_size``.
    """

    def __init__(self, *, mem_size: int, divisor: int, max_words: int = 64, timeout: int | None = None):
        if (isinstance(mem_size, bool) or not isinstance(mem_size, int) or not 64 <= mem_size <= 1 << 24
                or mem_size & (mem_size - 1)):
            raise ValueError(f"mem_size must be a power of two from 64 to 2**24 bytes, not {mem_size!r}")
        _check_max_words(max_words)
        timeout = 32 * 10 * divisor if timeout is None else timeout
        self.rx_unit = UartRx(divisor=divisor)
        self.tx_unit = UartTx(divisor=divisor)
        self.parser = FrameParser(max_words=max_words, timeout=timeout)
        self.framer = ReplyFramer(max_words=max_words)
        self.mem_size, self.divisor, self.max_words, self.timeout = mem_size, divisor, max_words, timeout
        super().__init__(HostBridgeSignature(mem_size))

    def elaborate(self, platform):
        m = Module()
        m.submodules.rx = rx = self.rx_unit
        m.submodules.tx = tx = self.tx_unit
        m.submodules.parser = parser = self.parser
        m.submodules.framer = framer = self.framer
        m.submodules.buffer = buffer = Memory(shape=32, depth=self.max_words, init=[])
        rd, wr = buffer.read_port(), buffer.write_port(granularity=8)
        m.d.comb += [rx.rx.eq(self.rx), self.tx.eq(tx.tx), parser.rx_error.eq(rx.error)]
        wiring.connect(m, rx.o, parser.i)
        wiring.connect(m, framer.o, tx.i)

        incoming = parser.o.payload                  # held by the parser until the next request
        index = Signal(range(self.max_words + 1))    # word of the burst
        addr = incoming.addr + (index << 2)          # its byte address
        wdata = Signal(32)
        status, count = Signal(8), Signal(8)         # of the reply
        last_write, remembered = Signal(8), Signal() # seq of the last write executed (retry detection)
        irq_seen, irq_pending, irq_reply = Signal(), Signal(), Signal()

        for bus in (self.csr, self.mem):
            m.d.comb += [bus.araddr.eq(addr), bus.awaddr.eq(addr), bus.wdata.eq(wdata), bus.wstrb.eq(0b1111)]
        m.d.sync += irq_seen.eq(self.irq)

        is_write = (incoming.op == Op.WRITE_CSR) | (incoming.op == Op.WRITE_MEM)
        aligned = incoming.addr[:2] == 0
        in_csr = incoming.addr[exact_log2(CSR_SPACE):] == 0
        # Given aligned and count >= 1: the words addr[2:] .. addr[2:] + count - 1 inside the memory.
        mem_bits = exact_log2(self.mem_size)
        in_mem = (incoming.addr[mem_bits:] == 0) & at_most(incoming.addr[2:mem_bits] + incoming.count,
                                                            self.mem_size >> 2)
        addr_ok = Mux(incoming.op == Op.STATUS, 1,
                      aligned & Mux(at_most(incoming.op, Op.WRITE_CSR), in_csr, in_mem))

        # The frame buffer: the parser writes a request's data, the executor read results; the framer
        # reads a reply's data, the executor a write's. Never both at once (the parser is held busy).
        exec_we, exec_waddr, exec_wdata = Signal(), Signal(range(self.max_words)), Signal(32)
        m.d.comb += [wr.en.eq(Mux(exec_we, 0b1111, parser.wr_en)), wr.addr.eq(Mux(exec_we, exec_waddr, parser.wr_addr)),
                     wr.data.eq(Mux(exec_we, exec_wdata, parser.wr_data)), framer.rd_data.eq(rd.data)]

        def reply(code, words):
            m.d.sync += [status.eq(code), count.eq(words)]
            m.next = "REPLY"

        def start(bus, op):
            """Begin a read (``op`` a read) or write access at ``addr`` on ``bus``."""
            if op in (Op.READ_CSR, Op.READ_MEM):
                m.d.sync += [bus.arvalid.eq(1), bus.rready.eq(1)]
            else:
                m.d.sync += [bus.awvalid.eq(1), bus.wvalid.eq(1), bus.bready.eq(1), wdata.eq(rd.data)]

        with m.FSM(name="bridge") as fsm:
            with m.State("IDLE"):
                m.d.comb += [parser.o.ready.eq(1), rd.addr.eq(0)]
                with m.If(parser.o.valid):
                    m.d.sync += [index.eq(0), irq_reply.eq(0)]
                    with m.If(incoming.error != Status.OK):
                        reply(incoming.error, 0)
                    with m.Elif(~addr_ok):
                        reply(Status.BAD_ADDRESS, 0)
                    with m.Elif(is_write & remembered & (incoming.seq == last_write)):
                        reply(Status.OK, 0)              # a retry of the write just executed
                    with m.Else():
                        with m.If(~is_write):
                            m.d.sync += remembered.eq(0)
                        with m.Switch(incoming.op):
                            with m.Case(Op.STATUS):
                                m.d.comb += [exec_we.eq(1),
                                             exec_wdata.eq(info_word(self.mem_size, self.max_words))]
                                reply(Status.OK, 1)
                            with m.Case(Op.READ_CSR):
                                start(self.csr, Op.READ_CSR)
                                m.next = "CSR_READ"
                            with m.Case(Op.READ_MEM):
                                start(self.mem, Op.READ_MEM)
                                m.next = "MEM_READ"
                            with m.Default():            # writes: the first word leaves the buffer
                                m.next = "FETCH"
                with m.Elif(irq_pending):
                    m.d.sync += [irq_reply.eq(1), irq_pending.eq(0)]
                    reply(Status.IRQ, 0)
            with m.State("FETCH"):
                m.d.comb += rd.addr.eq(index)
                with m.If(incoming.op == Op.WRITE_CSR):
                    m.next = "CSR_WRITE"
                with m.Else():
                    m.next = "MEM_WRITE"
            for bus, name in ((self.csr, "CSR"), (self.mem, "MEM")):
                with m.State(f"{name}_READ"):
                    with m.If(bus.arvalid & bus.arready):
                        m.d.sync += bus.arvalid.eq(0)
                    with m.If(bus.rvalid & bus.rready):
                        m.d.comb += [exec_we.eq(1), exec_waddr.eq(index), exec_wdata.eq(bus.rdata)]
                        m.d.sync += index.eq(index + 1)
                        with m.If(bus.rresp != 0):
                            m.d.sync += bus.rready.eq(0)
                            reply(bus.rresp, 0)
                        with m.Elif(index + 1 == incoming.count):
                            m.d.sync += bus.rready.eq(0)
                            reply(Status.OK, incoming.count)
                        with m.Else():
                            m.d.sync += bus.arvalid.eq(1)
                with m.State(f"{name}_WRITE"):
                    with m.If(~(bus.awvalid | bus.wvalid | bus.bready)):
                        start(bus, Op.WRITE_MEM)     # the word from FETCH is on rd.data
                    m.d.comb += rd.addr.eq(index)
                    with m.If(bus.awvalid & bus.awready):
                        m.d.sync += bus.awvalid.eq(0)
                    with m.If(bus.wvalid & bus.wready):
                        m.d.sync += bus.wvalid.eq(0)
                    with m.If(bus.bvalid & bus.bready):
                        m.d.sync += [bus.bready.eq(0), index.eq(index + 1)]
                        with m.If(bus.bresp != 0):
                            m.d.sync += remembered.eq(0)
                            reply(bus.bresp, 0)
                        with m.Elif(index + 1 == incoming.count):
                            m.d.sync += [remembered.eq(1), last_write.eq(incoming.seq)]
                            reply(Status.OK, 0)
                        with m.Else():
                            m.next = "FETCH"
            with m.State("REPLY"):
                m.d.comb += [framer.i.valid.eq(1), rd.addr.eq(framer.rd_addr)]
                # The level when framed (REPLY lasts one cycle: the framer is idle whenever it is reached).
                m.d.sync += status.eq(status | Mux(self.irq, IRQ_LEVEL, 0))
                with m.If(framer.i.ready):
                    m.next = "SENDING"
            with m.State("SENDING"):
                m.d.comb += rd.addr.eq(framer.rd_addr)
                with m.If(framer.i.ready):
                    m.next = "IDLE"
        m.d.comb += [parser.busy.eq(~fsm.ongoing("IDLE") & ~irq_reply),
                     framer.i.payload.status.eq(status), framer.i.payload.seq.eq(Mux(irq_reply, 0, incoming.seq)),
                     framer.i.payload.count.eq(count)]
        with m.If(self.irq & ~irq_seen):
            m.d.sync += irq_pending.eq(1)
        return m
