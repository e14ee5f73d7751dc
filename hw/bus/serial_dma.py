"""An area-minimal AXI4 master DMA for small FPGAs (iCE40 UP5K): :class:`~fp8train.hw.bus.dma.Dma`'s
ports and command contract, one single-beat transaction at a time per engine and bit-serial address
arithmetic (DESIGN.md §4).

Speed is traded for logic: a command's word address and word count sit in shift registers that a
one-bit adder walks in ``addr_width - log2(data_width / 8)`` cycles, once to check the window and
once per word to step to the next one, instead of the ``Dma``'s adders, comparators, FIFOs and burst
sizing, and no R data register: R goes straight to ``rd_data``. On the iCE40 (Yosys, default
widths, ``fp8train.boards.synth.synthesize``) that is 282 LUT4s and 199 flip-flops, against 568 and 331 for
``Dma(max_burst=1, max_reads_outstanding=1, max_writes_outstanding=1)``; 72 of the flip-flops are
the W register the AXI handshakes need.
"""

from amaranth.hdl import Cat, Const, Elaboratable, Module, Mux, Signal
from amaranth.lib import wiring

from fp8train.hw.bus.dma import DmaError, dma_members, fixed_attributes, sticky_error, word_shift

__all__ = ["SerialDma"]


class _Walk(Elaboratable):
    """The bit position every pass of both engines is at: a pass starts at position 0 and ends at
    ``positions - 1``, so that one pair of bit selects of ``window_base`` and ``window_limit`` serves
    both engines. Positions count word-address bits (byte-address bit ``shift + position``)."""

    def __init__(self, dma: "SerialDma"):
        self.dma = dma
        self.positions = dma.addr_width - dma._shift
        self.position = Signal(range(self.positions))
        self.first = Signal()        # position 0: a pass starts
        self.final = Signal()        # the last position: a pass ends
        self.in_length = Signal()    # the position holds a bit of a word count
        self.base_bit = Signal()
        self.limit_bit = Signal()
        self.base_rounds_up = Signal()   # window_base is not a whole word: the first allowed word is the next

    def elaborate(self, platform):
        m = Module()
        dma, shift = self.dma, self.dma._shift
        m.d.sync += self.position.eq(Mux(self.final, 0, self.position + 1))
        m.d.comb += [
            self.first.eq(self.position == 0),
            self.final.eq(self.position == self.positions - 1),
            self.in_length.eq(self.position < dma.length_width - shift),
            self.base_bit.eq(dma.window_base[shift:].bit_select(self.position, 1)),
            # A word-aligned sum exceeds window_limit iff its word address exceeds limit's.
            self.limit_bit.eq(dma.window_limit[shift:].bit_select(self.position, 1)),
            self.base_rounds_up.eq(dma.window_base[:shift] != 0 if shift else 0),
        ]
        return m


class _Engine(Elaboratable):
    """What both engines share: taking and checking a command, its word address and count, the
    passes and the command's end.

    One flag per phase, none set while idle: ``check`` (a pass: window check, count - 1), the
    engine's bus phases, ``next`` (waiting for a pass to start) and ``step`` (a pass: address + 1,
    count - 1). A command is taken as a pass ends, so that its check starts in the next cycle. A
    pass leaves ``last`` set iff the count it left is 0: the word of the transaction that follows
    is the command's last."""

    def __init__(self, dma: "SerialDma", walk: _Walk, write: int):
        self.dma, self.walk, self.write = dma, walk, write
        self.prefix = prefix = "wr" if write else "rd"
        self.cmd = dma.wr_cmd if write else dma.rd_cmd
        self.done = dma.wr_done if write else dma.rd_done
        self.addr = Signal(walk.positions, name=f"{prefix}_addr")     # word address
        self.count = Signal(dma.length_width - dma._shift, name=f"{prefix}_count")  # words after this one
        self.last = Signal(name=f"{prefix}_last")
        self.check = Signal(name=f"{prefix}_check")
        self.next = Signal(name=f"{prefix}_next")
        self.step = Signal(name=f"{prefix}_step")
        self.start = Signal(name=f"{prefix}_start")        # the bus phase of a word begins
        self.finishing = Signal(name=f"{prefix}_finishing")  # the command ends: done in the next cycle
        self.drop = Signal(name=f"{prefix}_drop")          # aborted: finish the bus transaction, no data
        self.busy = Signal(name=f"{prefix}_busy")
        self.stall = Signal(name=f"{prefix}_stall")
        self.err_stb = Signal(name=f"{prefix}_err_stb")
        self.err_code = Signal(4, name=f"{prefix}_err_code")

    def report(self, m, code):
        m.d.comb += [self.err_stb.eq(1), self.err_code.eq(code)]

    def response(self, m, valid, resp, keep=()):
        """The transaction's R or B, if ``valid``: the statements ``keep`` unless it is an error
        response or the command was aborted; the command ends after its last word, an error or an
        abort, else the next word's pass follows."""
        with m.If(valid):
            with m.If(self.drop | self.dma.abort):
                m.d.comb += self.finishing.eq(1)
            with m.Elif(resp[1]):       # SLVERR 0b10 → kind 1, DECERR 0b11 → kind 2
                self.report(m, (resp - 1) << 1 | self.write)
                m.d.comb += self.finishing.eq(1)
            with m.Else():
                m.d.sync += keep
                with m.If(self.last):
                    m.d.comb += self.finishing.eq(1)
                with m.Else():
                    m.d.sync += self.next.eq(1)

    def elaborate(self, platform):
        m = Module()
        dma, walk, shift, cmd, abort = self.dma, self.walk, self.dma._shift, self.cmd, self.dma.abort
        m.d.sync += self.done.eq(self.finishing)

        # One bit per cycle of a pass: addr + count > limit? addr < base? (check); addr + 1 (step);
        # count - 1 (both). The chains are set up for the next pass as one ends.
        check, step = self.check, self.step
        carry, below, above, borrow = (Signal(name=f"{self.prefix}_{name}")
                                       for name in ("carry", "below", "above", "borrow"))
        a = self.addr[0]
        n = self.count[0] & walk.in_length
        x = n & check
        s = a ^ x ^ carry
        below_next = Mux(a == walk.base_bit, below, walk.base_bit)
        above_next = Mux(s == walk.limit_bit, above, s)
        carry_next = (a & x) | (a & carry) | (x & carry)
        d = n ^ borrow
        borrow_next = borrow & ~n
        with m.If(check | step):
            m.d.sync += [carry.eq(carry_next), below.eq(below_next), above.eq(above_next),
                         borrow.eq(borrow_next), self.last.eq((walk.first | self.last) & ~d),
                         self.addr.eq(Cat(self.addr[1:], Mux(step, s, a)))]
            with m.If(walk.in_length):
                m.d.sync += self.count.eq(Cat(self.count[1:], d))
        with m.If(walk.final):
            m.d.sync += [carry.eq(self.next), below.eq(walk.base_rounds_up), above.eq(0), borrow.eq(1)]

        with m.If(walk.final & ~abort):
            m.d.sync += [check.eq(0), self.next.eq(0), step.eq(self.next)]
            with m.If(check):
                with m.If(below_next | above_next | carry_next):
                    self.report(m, DmaError.WRITE_WINDOW if self.write else DmaError.READ_WINDOW)
                    m.d.comb += self.finishing.eq(1)
                with m.Elif(borrow_next):      # length 0
                    m.d.comb += self.finishing.eq(1)
                with m.Else():
                    m.d.comb += self.start.eq(1)
            with m.If(step):
                m.d.comb += self.start.eq(1)
        with m.If(abort & (check | self.next | step)):
            m.d.sync += [check.eq(0), self.next.eq(0), step.eq(0)]
            m.d.comb += self.finishing.eq(1)

        m.d.comb += cmd.ready.eq(~self.busy & walk.final & (dma.error == 0) & ~abort)
        misaligned = (cmd.p.addr[:shift] != 0) | (cmd.p.length[:shift] != 0) if shift else Const(0)
        with m.If(cmd.valid & cmd.ready):
            m.d.sync += [self.addr.eq(cmd.p.addr[shift:]), self.count.eq(cmd.p.length[shift:])]
            with m.If(misaligned):
                self.report(m, DmaError.WRITE_MISALIGNED if self.write else DmaError.READ_MISALIGNED)
                m.d.comb += self.finishing.eq(1)
            with m.Else():
                m.d.sync += check.eq(1)

        self.bus_phases(m)
        with m.If(abort & self.busy):
            m.d.sync += self.drop.eq(1)
        with m.If(self.finishing):
            m.d.sync += self.drop.eq(0)
        return m


class _ReadEngine(_Engine):
    """Bus phases ``issue`` (AR) and ``wait`` (R); the word goes straight from R to ``rd_data``, so
    ``rready`` is ``rd_data.ready`` (or 1 for an error response or a dropped word)."""

    def __init__(self, dma, walk):
        super().__init__(dma, walk, write=0)
        self.issue = Signal()    # ARVALID, driven by the parent: the AR port is not this unit's

    def bus_phases(self, m):
        dma, bus, issue = self.dma, self.dma.m_axi, self.issue
        wait = Signal(name="rd_wait")
        with m.If(self.start):
            m.d.sync += issue.eq(1)
        with m.If(issue & bus.arready):
            m.d.sync += [issue.eq(0), wait.eq(1)]
        # A word is passed on unless it is an error response or dropped (then R is taken at once). RRESP
        # counts only with RVALID: RREADY must not follow an idle bus's payload (X in simulation).
        refused = (bus.rvalid & bus.rresp[1]) | self.drop | dma.abort
        m.d.comb += [dma.rd_data.valid.eq(wait & bus.rvalid & ~refused),
                     dma.rd_data.p.data.eq(bus.rdata), dma.rd_data.p.last.eq(self.last),
                     bus.rready.eq(wait & (dma.rd_data.ready | refused))]
        with m.If(bus.rvalid & bus.rready):
            m.d.sync += wait.eq(0)
        self.response(m, bus.rvalid & bus.rready, bus.rresp)
        m.d.comb += [self.busy.eq(self.check | self.next | self.step | issue | wait),
                     self.stall.eq(issue | (wait & ~bus.rvalid))]


class _WriteEngine(_Engine):
    """Bus phases ``fetch`` (a ``wr_data`` word into the W register) and ``wait`` (AW and W offered
    together, each until taken, then B)."""

    def __init__(self, dma, walk):
        super().__init__(dma, walk, write=1)

    def bus_phases(self, m):
        dma, bus = self.dma, self.dma.m_axi
        fetch, wait = Signal(name="wr_fetch"), Signal(name="wr_wait")
        m.d.comb += dma.wr_data.ready.eq(fetch & ~dma.abort)
        with m.If(self.start):
            m.d.sync += fetch.eq(1)
        with m.If(bus.awready):
            m.d.sync += bus.awvalid.eq(0)
        with m.If(bus.wready):
            m.d.sync += bus.wvalid.eq(0)
        with m.If(dma.wr_data.valid & dma.wr_data.ready):
            m.d.sync += [fetch.eq(0), wait.eq(1), bus.awvalid.eq(1), bus.wvalid.eq(1),
                         bus.wdata.eq(dma.wr_data.p.data), bus.wstrb.eq(dma.wr_data.p.strb)]
        with m.If(dma.abort & fetch):
            m.d.sync += fetch.eq(0)
            m.d.comb += self.finishing.eq(1)
        # B comes only after the AW and W handshakes.
        with m.If(bus.bvalid):
            m.d.sync += wait.eq(0)
        self.response(m, wait & bus.bvalid, bus.bresp)
        m.d.comb += [self.busy.eq(self.check | self.next | self.step | fetch | wait),
                     self.stall.eq(wait & ~bus.bvalid)]


class SerialDma(wiring.Component):
    """AXI4 master DMA with :class:`~fp8train.hw.bus.dma.Dma`'s ports (``Dma``'s docstring describes
    them) and command contract, in as little logic as possible: for small FPGAs where speed does not
    matter.

    Parameters
    ----------
    addr_width, data_width, id_width, length_width : int
        As for ``Dma``, checked alike.

    Differences from ``Dma``
    ------------------------
    Every transaction is a single beat (``arlen``/``awlen`` 0, so no burst crosses 4 KiB), and each
    engine has one transaction on the bus at a time; the engines run concurrently. Its bus behaviour
    is that of ``Dma(max_burst=1, max_reads_outstanding=1, max_writes_outstanding=1)`` (the class
    attributes of those names say so), with these simplifications:

    - A command is taken only when the previous command of that engine has ended (its ``*_done``
      pulsed), so commands do not pipeline.
    - The window check and every step to the next word are serial: a pass over the
      ``P = addr_width - log2(data_width / 8)`` word-address bits, one per cycle, in step with a
      free-running bit counter. A command is taken as a pass ends (``ready`` waits up to ``P``
      cycles for that); a misaligned one is refused at once (``*_done`` in the next cycle), any
      other is checked in the following ``P`` cycles, after which its first transaction starts or,
      if it is outside the window or of length 0, its ``*_done`` pulses. Each further word starts
      up to ``2 P`` cycles after the previous one's R or B. ``window_base`` and ``window_limit``
      are read bit by bit during the check, so they must not change while a command is checked
      (``Dma`` reads them in the cycle it takes a command).
    - Reads: R goes straight to ``rd_data`` (``last`` on the command's last word), so ``rready`` is
      ``rd_data.ready``; an error response, or any response after ``abort``, is taken at once and
      not passed on. So no word is buffered: a failing or aborted read has none to flush.
    - Writes: a word is taken from ``wr_data`` into the W register first, then AW and W are offered
      together (in the same cycle, which AXI allows; still never W before AWVALID), each until
      taken, ``wlast`` 1. So no AW waits for data, and a failing or aborted write has no remaining
      beats to fill with ``wstrb`` 0.
    - On SLVERR/DECERR nothing else of the engine is in flight: the code is set, the command
      dropped, and ``*_done`` pulses in the next cycle. On ``abort`` an engine with an AR/AW/W up or
      a response awaited finishes that transaction (a response then is neither data nor error) and
      pulses ``*_done``; an engine busy otherwise pulses ``*_done`` in the next cycle.
    - ``busy``: an engine has a command taken and not ended. ``stall``: an AR, AW or W is up, or an
      R or B is awaited and not arriving; passes and waiting for the controller are not stalls.
    """

    #: The ``Dma`` configuration whose bus behaviour this unit has.
    max_burst = 1
    max_reads_outstanding = 1
    max_writes_outstanding = 1
    #: ``rready`` follows ``rd_data.ready`` (the ``Dma`` always accepts R).
    r_always_ready = False

    def __init__(self, *, addr_width: int = 32, data_width: int = 64, id_width: int = 4,
                 length_width: int = 20):
        self.addr_width, self.data_width, self.length_width = addr_width, data_width, length_width
        super().__init__(dma_members(addr_width=addr_width, data_width=data_width, id_width=id_width,
                                     length_width=length_width))
        self._shift = word_shift(data_width)

    def elaborate(self, platform):
        m = Module()
        m.submodules.walk = walk = _Walk(self)
        m.submodules.read = read = _ReadEngine(self, walk)
        m.submodules.write = write = _WriteEngine(self, walk)
        sticky_error(m, self, read, write)
        bus, offset = self.m_axi, Const(0, self._shift)
        fixed_attributes(m, bus, self._shift, r_always_ready=False)
        m.d.comb += [bus.arvalid.eq(read.issue), bus.araddr.eq(Cat(offset, read.addr)), bus.awaddr.eq(Cat(offset, write.addr)),
                     bus.arlen.eq(0), bus.awlen.eq(0), bus.wlast.eq(1),
                     self.busy.eq(read.busy | write.busy),
                     self.stall.eq(read.stall | write.stall)]
        return m
