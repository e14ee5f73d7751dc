"""Serial GEMM executor: one processing element computes a GEMM output by output, every operand read
through the engine's DMA (DESIGN.md §3-4). It replaces the tile controller, the systolic array, the
operand scratchpads and the second lane-key hasher where logic is all that counts (the iCE40 UP5K),
bit-exact with golden ``run_gemm`` like them.
"""

import enum

from amaranth.hdl import Cat, Const, Module, Mux, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from fp8train.hw.arith.lane_keys import LaneKeyHasher
from fp8train.hw.arith.output import OutputUnit
from fp8train.hw.array.pe import ProcessingElement, check_rbits
from fp8train.hw.bus.dma import DmaError
from fp8train.hw.engine import BEAT, CHUNK_WIDTH, DIM_WIDTH, executor_members
from fp8train.protocol import ALIGN, FLAG_OUT_SHIFT, ErrorCode, Flag, OutFormat
from fp8train.sim.golden.lfsr import STATE_BITS

__all__ = ["SerialGemm"]

_LOW = (ALIGN - 1).bit_length()                 # byte-offset bits of an address in a bus word
_BUFFERS = "abcd"                               # the pointer ring's order: A, B, C, D


class _Step(enum.Enum):
    """What a turn of the pointer ring adds to each buffer's pointer (see :class:`SerialGemm`)."""
    NONE = 0
    BASE = 1        # addr_x (onto pointers cleared in idle)
    K = 2           # A(i, k) -> A(i, k + 1), B(k, j) -> B(k + 1, j)
    COLUMN = 3      # B(k, j) -> B(k, j + 1), C and D (i, j) -> (i, j + 1)
    ROW = 4         # A(i, k) -> A(i + 1, k), C and D (i, j) -> (i + 1, j)


class _State(enum.Enum):
    """The steps of a command (see :class:`SerialGemm`)."""
    IDLE = 0            # the ring and the counters cleared
    BASE = 1            # a turn: the pointers from the descriptor's addresses
    ROW_KEY = 2         # row i's key hashed into ``row_key``
    COLUMN_KEY = 3      # column j's key hashed, left on the hasher's output for the first beat
    READ = 4            # a turn: the words of A(i, k) and B(k, j) asked for; A and B step to k + 1
    A_WORD = 5          # A(i, k)'s code into ``a_code``
    B_WORD = 6          # B(k, j)'s word in: the PE's beat
    TOTAL = 7           # after the last k: the PE's total appears
    REWIND_K = 8        # K turns: A and B back to k = 0; the last asks for C(i, j)'s word
    OUTPUT = 9          # total and C into the output unit
    WRITE = 10          # a turn: D(i, j)'s write command; on to the next column (after the last, row)
    WRITTEN = 11        # D's word written and its response in
    REWIND_ROW = 12     # N - 1 turns: B, C and D back to column 0
    DONE = 13           # ``done`` offered


def _flag(flags, flag: Flag):
    """The bit of a one-bit :class:`~fp8train.protocol.Flag` in an ``exec_layout`` ``flags`` field."""
    assert flag & (flag - 1) == 0, f"{flag!r} is not a single bit"
    return flags[flag.bit_length() - 1]


def _check_int(name, value, low, high):
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ValueError(f"{name} must be an integer from {low} to {high}, not {value!r}")


class SerialGemm(wiring.Component):
    """GEMM executor of the command engine on one :class:`~fp8train.hw.array.pe.ProcessingElement`,
    one :class:`~fp8train.hw.arith.output.OutputUnit` and one serial
    :class:`~fp8train.hw.arith.lane_keys.LaneKeyHasher`: golden ``run_gemm`` in the least logic, at
    any speed.

    Outputs are computed one at a time, row by row, each as a PE of the systolic array computes it:
    per k the 8-byte words holding A(i, k) and B(k, j) are read (two one-word DMA reads, issued back
    to back) and the PE takes one beat; then the total and C(i, j) (HAS_C, its word read likewise) go
    through the output unit, and D(i, j) is written as one word whose ``strb`` selects the element's
    bytes, its response awaited before the next output. Nothing of an operand is kept but the A code
    of the current k. A MAC takes two turns of the pointer ring (below) and a cycle per word, 10
    cycles, plus what the reads' latency adds; an output adds its column key (about 12 cycles), the
    C read, the output unit and the D write, a row its row key and N - 1 turns.

    Steps (``_State``): IDLE; BASE; per row ROW_KEY; per output COLUMN_KEY, then per k READ, A_WORD,
    B_WORD; then TOTAL, REWIND_K, OUTPUT, WRITE, WRITTEN; after a row REWIND_ROW; at the end DONE.
    ``abort`` returns to IDLE from any step; a DMA error goes to DONE.

    The command's fields are read from ``cmd.p`` while it runs, never copied: the engine holds
    ``exec_cmd.p`` from the handshake until ``exec_done`` is taken. The engine has also checked the
    descriptor, which this unit relies on: addresses and strides are multiples of 8 (the byte of an
    element in its word follows from the indices), ``m``, ``n``, ``k`` fit ``MAX_DIM`` and ``chunk``
    is at most ``max_chunk``.

    Addresses: four byte pointers, A(i, k), B(k, j), C(i, j) and D(i, j), in a ring of registers
    that turns one place per cycle through one adder: the head (the DMA's address) plus a step goes
    to the tail. A turn of four cycles applies one step to each pointer (:class:`_Step`: the
    buffer's stride, its element size or nothing); a pointer is reached by turning, so no register is
    selected by a multiplexer. Going back is subtracting the same steps: after an output's K MACs, K
    turns take A and B back to k = 0; the write of a row's last output steps A, C and D to the next
    row, and N - 1 turns take B, C and D back to column 0. Beside the ring only the counters ``i``,
    ``j``, ``k`` and the chunk counter are kept.

    The PE's total stays in its drain register (``drain_in`` takes ``drain_out``'s payload back, with
    ``valid`` 0) until the next output's total replaces it; the output unit gets the row key from a
    register and the column key from the PE's ``south.key``, which it holds from the output's first
    beat.

    Parameters
    ----------
    rbits : int
        Random bits per stochastic rounding (1 to 14, the PE's limit).
    max_chunk : int
        Largest descriptor ``chunk`` (1 to 65535; the engine's).
    addr_width, length_width : int
        The DMA's widths (``addr_width`` 4 to 64, ``length_width`` 4 to ``addr_width``).

    Members
    -------
    cmd : In(stream(exec_layout))
        From ``CommandEngine.exec_cmd``; taken in idle.
    done : Out(stream(done_layout))
        To ``CommandEngine.exec_done``: OK after the last D write's ``dma_wr_done``; READ_ERROR or
        WRITE_ERROR (``dma_error`` bit 0) as soon as ``dma_error`` is not 0, the code read from the
        DMA's error, which stays until the engine clears it after ``done``.
    abort : In(1)
        The engine's abort pulse: back to idle at once, answer nothing. The hasher and the output
        unit may then still hold a result; idle takes it (the engine needs far more cycles than
        their latencies before it offers the next command).
    dma_rd_cmd, dma_rd_data, dma_wr_cmd, dma_wr_data, dma_rd_done, dma_wr_done, dma_error
        The engine's ``exec_dma_*`` ports (flipped). Every command is one aligned word (length 8);
        at most the two reads of one k, or one write, are in flight. ``dma_rd_done`` is not needed:
        a read is complete when its word is in.
    mac_active : Out(1)
        The PE multiplies this cycle (its ``ctl_out.valid``), for ``PERF_MAC``.
    """

    def __init__(self, *, rbits: int = 8, max_chunk: int = 4096, addr_width: int = 32, length_width: int = 20):
        check_rbits(rbits)
        _check_int("max_chunk", max_chunk, 1, (1 << CHUNK_WIDTH) - 1)
        _check_int("addr_width", addr_width, _LOW + 1, 64)
        _check_int("length_width", length_width, _LOW + 1, addr_width)
        self.rbits, self.max_chunk = rbits, max_chunk
        self.addr_width, self.length_width = addr_width, length_width
        super().__init__({**executor_members(addr_width, length_width), "mac_active": Out(1)})

    def elaborate(self, platform):
        m = Module()
        aw = self.addr_width
        m.submodules.pe = pe = ProcessingElement(rbits=self.rbits)
        m.submodules.output = output = OutputUnit(rbits=self.rbits)
        m.submodules.keys = keys = LaneKeyHasher(serial=True)

        cmd = self.cmd.p
        trans_a, trans_b = _flag(cmd.flags, Flag.TRANS_A), _flag(cmd.flags, Flag.TRANS_B)
        has_c = _flag(cmd.flags, Flag.HAS_C)
        out_format = cmd.flags[FLAG_OUT_SHIFT:FLAG_OUT_SHIFT + 2]
        fp16_out = out_format == OutFormat.FP16_169
        dma_failed = self.dma_error != 0
        assert DmaError.READ_SLVERR % 2 == 0 and DmaError.WRITE_SLVERR % 2 == 1
        state = Signal(_State)                              # the FSM's, set below the datapath

        # -- The pointer ring: ptrs[0] is the head, ``phase`` names its buffer (0 = A ... 3 = D).
        ptrs = [Signal(aw, name=f"ptr{n}") for n in range(len(_BUFFERS))]
        head = ptrs[0]
        phase = Signal(range(len(_BUFFERS)))
        rotate, subtract = Signal(name="rotate"), Signal(name="subtract")
        step_kind = Signal(_Step)
        turned = Signal()                                  # the last place of a turn
        m.d.comb += turned.eq(rotate & (phase == len(_BUFFERS) - 1))
        # A buffer's step of each kind: (the stride?, else a constant below 8, its element size or 0).
        steps = {_Step.K: {"a": (trans_a, ~trans_a), "b": (~trans_b, trans_b)},
                 _Step.COLUMN: {"b": (trans_b, ~trans_b), "c": (0, 2), "d": (0, Cat(~fp16_out, fp16_out))},
                 _Step.ROW: {"a": (~trans_a, trans_a), "c": (1, 0), "d": (1, 0)}}
        high, low = 0, 0            # the step above and below bit 3 (strides and addresses are multiples of 8)
        for index, buf in enumerate(_BUFFERS):
            stride_on, addr_on = Signal(name=f"{buf}_stride_on"), Signal(name=f"{buf}_addr_on")
            here = phase == index
            m.d.comb += addr_on.eq(here & (step_kind == _Step.BASE))
            for kind, per_buffer in steps.items():
                if buf in per_buffer:
                    use_stride, constant = per_buffer[buf]
                    now = here & (step_kind == kind)
                    with m.If(now):
                        m.d.comb += stride_on.eq(use_stride)
                    low = low | Mux(now, constant, 0)
            field = Signal(aw - _LOW, name=f"{buf}_step")
            m.d.comb += field.eq((cmd[f"stride_{buf}"][_LOW:] & stride_on.replicate(aw - _LOW)) |
                                 (cmd[f"addr_{buf}"][_LOW:] & addr_on.replicate(aw - _LOW)))
            high = high | field
        step, step_low = Signal(aw, name="step"), Signal(_LOW, name="step_low")
        m.d.comb += [step_low.eq(low), step.eq(Cat(step_low, high))]
        # head + step, or head - step as head + ~step + 1: the carry-in rides below bit 0.
        stepped = Signal(aw + 1)
        m.d.comb += stepped.eq(Cat(subtract, head) + Cat(subtract, step ^ Mux(subtract, (1 << aw) - 1, 0)))
        with m.If(rotate):
            m.d.sync += [ptrs[n].eq(ptrs[n + 1]) for n in range(len(ptrs) - 1)]
            m.d.sync += [ptrs[-1].eq(stepped[1:]), phase.eq(phase + 1)]
        word = Cat(Const(0, _LOW), head[_LOW:])
        m.d.comb += [self.dma_rd_cmd.p.addr.eq(word), self.dma_rd_cmd.p.length.eq(ALIGN),
                     self.dma_wr_cmd.p.addr.eq(word), self.dma_wr_cmd.p.length.eq(ALIGN)]

        # -- Counters: output (i, j), k of the dot product (or of the rewind), chunk position.
        i, j, k = Signal(DIM_WIDTH, name="i"), Signal(DIM_WIDTH, name="j"), Signal(DIM_WIDTH, name="k")
        i_next, k_next = Signal(DIM_WIDTH, name="i_next"), Signal(DIM_WIDTH, name="k_next")
        # One adder counts j both ways; counting down, it carries out unless j is 0.
        j_down, j_step = Signal(name="j_down"), Signal(DIM_WIDTH + 1, name="j_step")
        m.d.comb += [i_next.eq(i + 1), k_next.eq(k + 1),
                     j_step.eq(j + Cat(Const(1, 1), j_down.replicate(DIM_WIDTH - 1)))]
        j_next, j_zero = j_step[:DIM_WIDTH], ~j_step[DIM_WIDTH]
        last_k, last_column, last_row = k_next == cmd.k[:DIM_WIDTH], j_next == cmd.n, i_next == cmd.m
        chunk = cmd.chunk[:self.max_chunk.bit_length()]
        chunk_count = Signal(range(self.max_chunk))
        chunk_end = (chunk_count + 1 == chunk) | last_k          # chunk 0 never matches: plain accumulation

        # -- Operand bytes: the element's lane in its word follows from the indices (addresses and
        # strides are multiples of 8): A(i, k)'s, B(k, j)'s, or C(i, j)'s (a half-word).
        rd = self.dma_rd_data
        lane = Signal(_LOW)
        m.d.comb += lane.eq(Mux(state == _State.A_WORD, Mux(trans_a, i, k),
                                Mux(state == _State.B_WORD, Mux(trans_b, k, j), Cat(Const(0, 1), j[:2]))))
        half = Signal(16)
        m.d.comb += half.eq(rd.p.data.word_select(lane[1:], 16))
        code = half.word_select(lane[0], 8)
        a_code = Signal(8)

        # -- PE: one beat per MAC; the total is kept in its drain register.
        row_key = Signal(STATE_BITS)
        beat = Signal()
        first = keys.o.valid            # the column key waits on ``keys.o`` for the output's first beat
        # The hasher's whole payload as continuous expressions of registers: Icarus never evaluates an
        # always block whose inputs keep their initial values, and index then stays X (hw/bus/csr.py).
        m.d.comb += [keys.i.p.index.eq(Mux(state == _State.ROW_KEY, i, j)),
                     keys.i.p.is_col.eq(state == _State.COLUMN_KEY)]
        m.d.comb += [pe.west.a.eq(a_code), pe.west.key.eq((cmd.seed ^ row_key)[:STATE_BITS]),
                     pe.north.b.eq(code), pe.north.key.eq(keys.o.payload[:STATE_BITS]),
                     pe.ctl_in.valid.eq(beat), pe.ctl_in.first.eq(first), pe.ctl_in.last.eq(last_k),
                     pe.ctl_in.chunk_end.eq(chunk_end),
                     pe.ctl_in.stochastic.eq(_flag(cmd.flags, Flag.ACC_STOCHASTIC)),
                     pe.ctl_in.saturate.eq(~_flag(cmd.flags, Flag.OVERFLOW_INF)),
                     pe.drain_in.payload.eq(pe.drain_out.payload),
                     self.mac_active.eq(pe.ctl_out.valid)]
        with m.If(beat):
            m.d.sync += chunk_count.eq(Mux(chunk_end, 0, chunk_count + 1))

        # -- Output unit and D: the result in every lane of the word, ``strb`` on the element's.
        m.d.comb += [output.i.p.total.eq(pe.drain_out.payload), output.i.p.c.eq(half),
                     output.i.p.row_key.eq(row_key), output.i.p.col_key.eq(pe.south.key),
                     output.has_c.eq(has_c), output.relu.eq(_flag(cmd.flags, Flag.RELU)),
                     output.stochastic.eq(_flag(cmd.flags, Flag.OUT_STOCHASTIC)),
                     output.saturate.eq(~_flag(cmd.flags, Flag.OVERFLOW_INF)), output.scale.eq(cmd.scale),
                     output.out_format.eq(out_format), output.seed.eq(cmd.seed)]
        result = output.o.payload
        m.d.comb += [self.dma_wr_data.p.data.eq(Mux(fp16_out, result.replicate(BEAT // 16),
                                                     result[:8].replicate(BEAT // 8))),
                     self.dma_wr_data.p.strb.eq(Cat(*(Mux(fp16_out, j[:2] == byte // 2, j[:3] == byte)
                                                      for byte in range(ALIGN))))]

        def turn(kind, *, back=False, issue=None):
            """Turn the ring with ``kind`` steps; ``issue``: a DMA command stream whose ``valid`` holds
            the ring until taken."""
            m.d.comb += [step_kind.eq(kind), subtract.eq(back)]
            m.d.comb += rotate.eq(1 if issue is None else ~issue.valid | issue.ready)

        with m.Switch(state):
            with m.Case(_State.IDLE):
                # Clear the ring (BASE then loads it) and take what an aborted command left behind.
                m.d.sync += [*(p.eq(0) for p in ptrs), phase.eq(0), i.eq(0), j.eq(0), k.eq(0),
                             chunk_count.eq(0)]
                m.d.comb += [self.cmd.ready.eq(~self.abort), keys.o.ready.eq(1), output.o.ready.eq(1)]
                with m.If(self.cmd.valid & ~self.abort):
                    m.d.sync += state.eq(_State.BASE)
            with m.Case(_State.BASE):
                turn(_Step.BASE)
                with m.If(turned):
                    m.d.sync += state.eq(_State.ROW_KEY)
            with m.Case(_State.ROW_KEY):
                m.d.comb += [keys.i.valid.eq(1), keys.o.ready.eq(1)]
                with m.If(keys.o.valid):
                    m.d.sync += [row_key.eq(keys.o.payload), state.eq(_State.COLUMN_KEY)]
            with m.Case(_State.COLUMN_KEY):
                # The key stays on ``keys.o`` until the output's first beat takes it.
                m.d.comb += keys.i.valid.eq(1)
                with m.If(keys.o.valid):
                    m.d.sync += state.eq(_State.READ)
            with m.Case(_State.READ):
                # A's word at the A place, B's at the B place; both pointers step on to k + 1.
                m.d.comb += self.dma_rd_cmd.valid.eq(phase <= _BUFFERS.index("b"))
                turn(_Step.K, issue=self.dma_rd_cmd)
                with m.If(turned):
                    m.d.sync += state.eq(_State.A_WORD)
            with m.Case(_State.A_WORD):
                m.d.comb += rd.ready.eq(1)
                with m.If(rd.valid):
                    m.d.sync += [a_code.eq(code), state.eq(_State.B_WORD)]
            with m.Case(_State.B_WORD):
                # The first beat takes the column key off ``keys.o`` (later beats find it empty).
                m.d.comb += [rd.ready.eq(1), beat.eq(rd.valid), keys.o.ready.eq(rd.valid)]
                with m.If(rd.valid):
                    m.d.sync += k.eq(Mux(last_k, 0, k_next))
                    with m.If(last_k):
                        m.d.sync += state.eq(_State.TOTAL)
                    with m.Else():
                        m.d.sync += state.eq(_State.READ)
            with m.Case(_State.TOTAL):
                with m.If(pe.drain_out.valid):
                    m.d.sync += state.eq(_State.REWIND_K)
            with m.Case(_State.REWIND_K):
                # Back to k = 0; the last turn reads C's word (HAS_C) at the C place.
                m.d.comb += self.dma_rd_cmd.valid.eq(has_c & last_k & (phase == _BUFFERS.index("c")))
                turn(_Step.K, back=True, issue=self.dma_rd_cmd)
                with m.If(turned):
                    m.d.sync += k.eq(Mux(last_k, 0, k_next))
                    with m.If(last_k):
                        m.d.sync += state.eq(_State.OUTPUT)
            with m.Case(_State.OUTPUT):
                m.d.comb += [output.i.valid.eq(~has_c | rd.valid), rd.ready.eq(has_c & output.i.ready)]
                with m.If(output.i.valid & output.i.ready):
                    m.d.sync += state.eq(_State.WRITE)
            with m.Case(_State.WRITE):
                # D's command at the D place; B, C and D step on to column j + 1, or after the row's last
                # column A, C and D to the next row.
                m.d.comb += self.dma_wr_cmd.valid.eq(phase == _BUFFERS.index("d"))
                turn(Mux(last_column, _Step.ROW, _Step.COLUMN), issue=self.dma_wr_cmd)
                with m.If(turned):
                    m.d.sync += state.eq(_State.WRITTEN)
            with m.Case(_State.WRITTEN):
                m.d.comb += [self.dma_wr_data.valid.eq(output.o.valid), output.o.ready.eq(self.dma_wr_data.ready)]
                with m.If(self.dma_wr_done):
                    with m.If(~last_column):
                        m.d.sync += [j.eq(j_next), state.eq(_State.COLUMN_KEY)]
                    with m.Elif(~last_row):
                        m.d.sync += [i.eq(i_next), state.eq(_State.REWIND_ROW)]
                    with m.Else():
                        m.d.sync += state.eq(_State.DONE)
            with m.Case(_State.REWIND_ROW):
                # N - 1 turns take B, C and D back to column 0 (j counts down to 0).
                m.d.comb += j_down.eq(1)
                with m.If(j_zero):
                    m.d.sync += state.eq(_State.ROW_KEY)
                with m.Else():
                    turn(_Step.COLUMN, back=True)
                    with m.If(turned):
                        m.d.sync += j.eq(j_next)
            with m.Case(_State.DONE):
                m.d.comb += [self.done.valid.eq(~self.abort),
                             self.done.p.code.eq(Mux(dma_failed, Mux(self.dma_error[0], ErrorCode.WRITE_ERROR,
                                                                     ErrorCode.READ_ERROR), ErrorCode.OK))]
                with m.If(self.done.ready):
                    m.d.sync += state.eq(_State.IDLE)
        # Abort drops the command; a DMA error ends it (the DMA drops what is in flight, and its error
        # stays until the engine has taken ``done``).
        with m.If(self.abort):
            m.d.sync += state.eq(_State.IDLE)
        with m.Elif(dma_failed & (state != _State.IDLE) & (state != _State.DONE)):
            m.d.sync += state.eq(_State.DONE)
        return m
