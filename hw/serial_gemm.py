"""Serial GEMM executor: one floating-point adder computes a GEMM output by output, every operand read
through the engine's DMA (DESIGN.md §3-4). It replaces the tile controller, the systolic array, the
operand scratchpads and the second lane-key hasher where logic is all that counts (the iCE40 UP5K),
bit-exact with golden ``run_gemm`` like them.
"""

import enum

from amaranth.hdl import Cat, Const, Module, Mux, Signal
from amaranth.lib import data, wiring
from amaranth.lib.wiring import Out

from fp8train.formats import E5M2, FP16_169
from fp8train.hw.arith.add import add_codes
from fp8train.hw.arith.convert import convert_code
from fp8train.hw.arith.lane_keys import LaneKeyHasher
from fp8train.hw.arith.layouts import fp_layout, unpack
from fp8train.hw.arith.lfsr import lfsr_draw
from fp8train.hw.arith.mul import mul_codes
from fp8train.hw.array.pe import check_rbits
from fp8train.hw.bus.dma import DmaError
from fp8train.hw.engine import BEAT, CHUNK_WIDTH, DIM_WIDTH, executor_members
from fp8train.protocol import ALIGN, FLAG_OUT_SHIFT, ErrorCode, Flag, OutFormat
from fp8train.sim.golden.device import OUT_FORMATS, OUTPUT_SEED_SALT
from fp8train.sim.golden.lfsr import OUTPUT_FALLBACK_STATE, STATE_BITS

__all__ = ["SerialGemm"]

_LOW = (ALIGN - 1).bit_length()                 # byte-offset bits of an address in a bus word
_BUFFERS = "abcd"                               # the pointer ring's order: A, B, C, D


class _Step(enum.Enum):
    """What a turn of the pointer ring adds to each buffer's pointer (see :class:`SerialGemm`)."""
    NONE = 0
    K = 1           # A(i, k) -> A(i, k + 1), B(k, j) -> B(k + 1, j)
    COLUMN = 2      # B(k, j) -> B(k, j + 1), C and D (i, j) -> (i, j + 1)
    ROW = 3         # A(i, k) -> A(i + 1, k), C and D (i, j) -> (i + 1, j)


class _State(enum.Enum):
    """The steps of a command (see :class:`SerialGemm`)."""
    IDLE = 0            # the counters cleared
    ROW_KEY = 1         # row i's key hashed, ``seed ^ row_key`` kept
    COLUMN_KEY = 2      # column j's key hashed (left on the hasher's output until D is written): the lane seeded
    READ = 3            # a turn: A(i, k)'s word asked for and its code into ``a_code`` (the ring
                        # held at the B place meanwhile), then B(k, j)'s asked for; A and B step to k + 1
    B_WORD = 4          # B(k, j)'s word in: the beat (the product registered)
    REWIND_K = 5        # K turns: A and B back to k = 0; the last asks for C(i, j)'s word
    OUTPUT = 6          # C(i, j) into ``held`` (HAS_C)
    WRITE = 7           # a turn: D(i, j)'s write command; on to the next column (after the last, row)
    DATA = 8            # D's word offered
    WRITTEN = 9         # D's write response in
    REWIND_ROW = 10     # N - 1 turns: B, C and D back to column 0
    DONE = 11           # ``done`` offered


def _flag(flags, flag: Flag):
    """The bit of a one-bit :class:`~fp8train.protocol.Flag` in an ``exec_layout`` ``flags`` field."""
    assert flag & (flag - 1) == 0, f"{flag!r} is not a single bit"
    return flags[flag.bit_length() - 1]


def _check_int(name, value, low, high):
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ValueError(f"{name} must be an integer from {low} to {high}, not {value!r}")


class SerialGemm(wiring.Component):
    """GEMM executor of the command engine on one FP16_169 adder and one serial
    :class:`~fp8train.hw.arith.lane_keys.LaneKeyHasher`: golden ``run_gemm`` in the least logic, at
    any speed.

    Outputs are computed one at a time, row by row: per k the 8-byte words holding A(i, k) and B(k, j)
    are read (two one-word DMA reads, issued back to back) and their exact product is registered (the
    beat); then C(i, j) (HAS_C, its word read likewise) is added, and D(i, j) is written as one word
    whose ``strb`` selects the element's bytes, its response awaited before the next output. Nothing
    of an operand is kept but the A code of the current k. A MAC takes two turns of the pointer ring
    (below) and a cycle per word, 10 cycles, plus what the reads' latency adds; an output adds its
    column key (about 12 cycles), the C read and the D write, a row its row key and N - 1 turns.

    Arithmetic: what a :class:`~fp8train.hw.array.pe.ProcessingElement` and the
    :class:`~fp8train.hw.arith.output.OutputUnit` compute, in one adder where they have three, since
    a MAC takes several cycles here anyway. The output's LFSR lane starts at golden ``output_state``
    and each beat draws ``2 * rbits`` bits from it. In the cycle after a beat the adder adds the
    product to the chunk accumulator with the draw's low half; in the next, if the beat ended a chunk,
    it adds the chunk to the total of the chunks before with the high half (golden ``matmul``'s two
    draws per k step), both with the command's rounding. C is added to the total to nearest-even (the
    guard bits sized for stochastic rounding round a nearest-even sum correctly too), and ReLU clears
    a negative result. The output stage (scale and the conversion into each output format, golden
    ``output_stage``) is combinational on the result while D's word is offered; its random bits are
    the first draw of the same lane, restarted from the output conversion's seed once the additions
    are over. The steps between beats outlast the additions, so the FSM never waits for the adder.

    Steps (``_State``): IDLE; per row ROW_KEY; per output COLUMN_KEY, then per k READ, B_WORD; then REWIND_K, OUTPUT, WRITE, DATA, WRITTEN; after a row REWIND_ROW; at the end DONE.
    ``abort`` returns to IDLE from any step; a DMA error goes to DONE.

    The command's fields are read from ``cmd.p`` while it runs, never copied: the engine holds
    ``exec_cmd.p`` from the handshake until ``exec_done`` is taken, but for the ring's turns. The engine
    has also checked the descriptor, which this unit relies on: addresses and strides are multiples of 8
    (the byte of an element in its word follows from the indices), ``m``, ``n``, ``k`` fit ``MAX_DIM``
    and ``chunk`` is at most ``max_chunk``.

    Addresses: four byte pointers, A(i, k), B(k, j), C(i, j) and D(i, j), in a ring that turns one place
    per cycle through one adder: the head (the DMA's address) plus a step goes to the tail. The ring is
    the engine's descriptor buffer (``CommandEngine(pointer_ring=True)``): its four (address, stride)
    beats, which start as the descriptor's A, B, C and D and turn with their strides, so the head's
    stride is always at hand and the pointers cost no register here. A turn of four cycles applies one
    step to each pointer (:class:`_Step`: the buffer's stride, its element size or nothing); a pointer
    is reached by turning, so no register is selected by a multiplexer. Going back is subtracting the
    same steps: after an output's K MACs, K turns take A and B back to k = 0; the write of a row's last
    output steps A, C and D to the next row, and N - 1 turns take B, C and D back to column 0. Beside
    the ring only the counters ``i``, ``j``, ``k`` and the chunk counter are kept.

    The column key stays on the hasher's output from COLUMN_KEY until D's write response (the next
    output hashes its own only then anyway), so only ``seed ^ row_key`` is kept beside it.

    Parameters
    ----------
    rbits : int
        Random bits per stochastic rounding (1 to 14: a beat draws ``2 * rbits`` bits from a 31-bit
        lane, as a PE's).
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
        The engine's abort pulse: back to idle at once, answer nothing. The hasher may then still
        hold or compute a key; idle takes it (the engine needs far more cycles than its latency
        before it offers the next command). The adder's pending additions end within two cycles;
        the next output restarts its registers.
    dma_rd_cmd, dma_rd_data, dma_wr_cmd, dma_wr_data, dma_rd_done, dma_wr_done, dma_error
        The engine's ``exec_dma_*`` ports (flipped). Every command is one aligned word (length 8);
        at most the two reads of one k, or one write, are in flight. ``dma_rd_done`` is not needed:
        a read is complete when its word is in.
    mac_active : Out(1)
        A MAC this cycle (a beat's chunk addition: one cycle per product), for ``PERF_MAC``.
    ring_turn : Out(1), ring_tail : Out(addr_width)
        To ``CommandEngine.exec_ring_turn``/``exec_ring_tail``: turn the pointer ring (``cmd.p``'s
        addr_a and stride_a are its head), ``ring_tail`` the head's next address.
    """

    def __init__(self, *, rbits: int = 8, max_chunk: int = 4096, addr_width: int = 32, length_width: int = 20):
        check_rbits(rbits)
        _check_int("max_chunk", max_chunk, 1, (1 << CHUNK_WIDTH) - 1)
        _check_int("addr_width", addr_width, _LOW + 1, 64)
        _check_int("length_width", length_width, _LOW + 1, addr_width)
        self.rbits, self.max_chunk = rbits, max_chunk
        self.addr_width, self.length_width = addr_width, length_width
        super().__init__({**executor_members(addr_width, length_width), "mac_active": Out(1),
                          "ring_turn": Out(1), "ring_tail": Out(addr_width)})

    def elaborate(self, platform):
        m = Module()
        aw = self.addr_width
        m.submodules.keys = keys = LaneKeyHasher(serial=True)

        cmd = self.cmd.p
        trans_a, trans_b = _flag(cmd.flags, Flag.TRANS_A), _flag(cmd.flags, Flag.TRANS_B)
        has_c = _flag(cmd.flags, Flag.HAS_C)
        out_format = cmd.flags[FLAG_OUT_SHIFT:FLAG_OUT_SHIFT + 2]
        fp16_out = out_format == OutFormat.FP16_169
        dma_failed = self.dma_error != 0
        assert DmaError.READ_SLVERR % 2 == 0 and DmaError.WRITE_SLVERR % 2 == 1
        state = Signal(_State)                              # the FSM's, set below the datapath

        # -- The pointer ring, in the engine: addr_a is the head, ``phase`` names its buffer (0 = A ... 3 = D).
        head, head_stride = cmd.addr_a, cmd.stride_a
        phase = Signal(range(len(_BUFFERS)))
        rotate, subtract = self.ring_turn, Signal(name="subtract")
        step_kind = Signal(_Step)
        turned = Signal()                                  # the last place of a turn
        m.d.comb += turned.eq(rotate & (phase == len(_BUFFERS) - 1))
        # A buffer's step of each kind: (the stride?, else a constant below 8, its element size or 0).
        steps = {_Step.K: {"a": (trans_a, ~trans_a), "b": (~trans_b, trans_b)},
                 _Step.COLUMN: {"b": (trans_b, ~trans_b), "c": (0, 2), "d": (0, Cat(~fp16_out, fp16_out))},
                 _Step.ROW: {"a": (~trans_a, trans_a), "c": (1, 0), "d": (1, 0)}}
        stride_on = Signal(name="stride_on")
        low = 0                     # the step below bit 3 (strides and addresses are multiples of 8)
        for index, buf in enumerate(_BUFFERS):
            for kind, per_buffer in steps.items():
                if buf in per_buffer:
                    use_stride, constant = per_buffer[buf]
                    now = (phase == index) & (step_kind == kind)
                    with m.If(now):
                        m.d.comb += stride_on.eq(use_stride)
                    low = low | Mux(now, constant, 0)
        step, step_low = Signal(aw, name="step"), Signal(_LOW, name="step_low")
        m.d.comb += [step_low.eq(low), step.eq(Cat(step_low, head_stride[_LOW:] & stride_on.replicate(aw - _LOW)))]
        # head + step, or head - step as head + ~step + 1: the carry-in rides below bit 0.
        stepped = Signal(aw + 1)
        m.d.comb += [stepped.eq(Cat(subtract, head) + Cat(subtract, step ^ Mux(subtract, (1 << aw) - 1, 0))),
                     self.ring_tail.eq(stepped[1:])]
        with m.If(rotate):
            m.d.sync += phase.eq(phase + 1)
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
        m.d.comb += lane.eq(Mux(state == _State.READ, Mux(trans_a, i, k),
                                Mux(state == _State.B_WORD, Mux(trans_b, k, j), Cat(Const(0, 1), j[:2]))))
        half = Signal(16)
        m.d.comb += half.eq(rd.p.data.word_select(lane[1:], 16))
        code = half.word_select(lane[0], 8)
        a_code, a_in = Signal(8), Signal(name="a_in")      # A(i, k)'s code; it is in (READ)

        # -- Datapath: the product, the lane and one adder for the chunk, total and C additions.
        acc_fmt, rbits = FP16_169, self.rbits
        saturate = ~_flag(cmd.flags, Flag.OVERFLOW_INF)
        row_seed = Signal(STATE_BITS, name="row_seed")        # (seed ^ row_key) & (2**31 - 1)
        col_key = keys.o.payload        # the output's column key waits on ``keys.o`` until D is written
        start, beat, c_load = Signal(name="start"), Signal(name="beat"), Signal(name="c_load")
        # The hasher's whole payload as continuous expressions of registers: Icarus never evaluates an
        # always block whose inputs keep their initial values, and index then stays X (hw/bus/csr.py).
        m.d.comb += [keys.i.p.index.eq(Mux(state == _State.ROW_KEY, i, j)),
                     keys.i.p.is_col.eq(state == _State.COLUMN_KEY)]

        # The output's lane starts at golden ``output_state`` and draws ``2 * rbits`` bits per beat (golden
        # ``matmul``'s two draws per k step); the draw lands in the lane's top bits, where the chunk
        # addition (low half) and the total addition (high half) find it without a register of their own.
        # In OUTPUT, after the last addition that draws, the lane restarts as the output conversion's
        # (``seed ^ OUTPUT_SEED_SALT``, golden ``LfsrBank.for_outputs``), whose first draw rounds D.
        lane_state = Signal(STATE_BITS, name="lane_state")
        salted = state == _State.OUTPUT
        mixed = Signal(STATE_BITS, name="mixed")
        m.d.comb += mixed.eq(row_seed ^ col_key ^ Mux(salted, OUTPUT_SEED_SALT, 0))
        _, advanced = lfsr_draw(lane_state, 2 * rbits)
        with m.If(start | salted):
            m.d.sync += lane_state.eq(Mux(mixed.any(), mixed, OUTPUT_FALLBACK_STATE))
        with m.Elif(beat):
            m.d.sync += lane_state.eq(advanced)
        drawn = lane_state[STATE_BITS - 2 * rbits:]
        product = Signal(acc_fmt.width, name="product_code")
        exact = mul_codes(m, E5M2, E5M2, acc_fmt, data.View(fp_layout(E5M2), a_code),
                          data.View(fp_layout(E5M2), code), name="product")
        with m.If(beat):
            m.d.sync += [product.eq(exact), chunk_count.eq(Mux(chunk_end, 0, chunk_count + 1))]

        # The additions follow a beat, or C's word, by a cycle or two (the FSM's next steps take longer):
        # ``chunk_step`` acc + product; ``total_step`` (after a chunk's end) held + acc, into ``held``
        # with acc restarting from +0, or after the output's last chunk into ``acc``; ``c_step`` acc + C,
        # nearest-even. ``acc`` is always one operand, so only the other needs a multiplexer; the adder
        # is commutative, and adding to a restarted +0 is golden's ``+0 + p`` (-0 becomes +0).
        chunk_step = self.mac_active    # a MAC this cycle: one chunk addition per product
        ended, total_step, c_step, last = (Signal(name=name) for name in ("ended", "total_step", "c_step", "last"))
        m.d.sync += [chunk_step.eq(beat), ended.eq(beat & chunk_end), total_step.eq(ended), c_step.eq(c_load)]
        with m.If(beat):
            m.d.sync += last.eq(last_k)
        acc, held = Signal(acc_fmt.width, name="acc"), Signal(acc_fmt.width, name="held")
        summed = add_codes(m, acc_fmt, acc, Mux(chunk_step, product, held),
                           stochastic=_flag(cmd.flags, Flag.ACC_STOCHASTIC) & ~c_step,
                           rand=Mux(chunk_step, drawn[:rbits], drawn[rbits:]), saturate=saturate, name="add")
        with m.If(start):
            m.d.sync += [acc.eq(0), held.eq(0)]
        with m.If(chunk_step | c_step | (total_step & last)):
            m.d.sync += acc.eq(summed)
        with m.Elif(total_step):
            m.d.sync += [held.eq(summed), acc.eq(0)]
        with m.If(c_load):
            m.d.sync += held.eq(half)
        # ReLU: a negative result (not NaN, -0 included) becomes +0 as WRITE's turn ends, three cycles
        # or more after C's addition; a register reset where a multiplexer would sit before the output
        # stage.
        value = unpack(m, acc_fmt, acc, "value")
        with m.If((state == _State.WRITE) & turned & _flag(cmd.flags, Flag.RELU) & value.sign & ~value.nan):
            m.d.sync += acc.eq(0)

        # -- Output stage (golden ``output_stage`` after ReLU) on ``acc`` and D: the result in every lane
        # of the word, ``strb`` on the element's.
        out_rand, _ = lfsr_draw(lane_state, rbits)
        result = Signal(16, name="result")
        for out_code, fmt in OUT_FORMATS.items():
            converted = convert_code(m, acc_fmt, fmt, acc, stochastic=_flag(cmd.flags, Flag.OUT_STOCHASTIC),
                                     rand=out_rand, saturate=saturate, scale=cmd.scale,
                                     name=f"to_{OutFormat(out_code).name.lower()}")
            with m.If(out_format == out_code):
                m.d.comb += result.eq(converted)
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
                # The engine's ring starts at A; take what an aborted command left behind.
                m.d.sync += [phase.eq(0), i.eq(0), j.eq(0), k.eq(0), chunk_count.eq(0), a_in.eq(0)]
                m.d.comb += [self.cmd.ready.eq(~self.abort), keys.o.ready.eq(1)]
                with m.If(self.cmd.valid & ~self.abort):
                    m.d.sync += state.eq(_State.ROW_KEY)
            with m.Case(_State.ROW_KEY):
                m.d.comb += [keys.i.valid.eq(1), keys.o.ready.eq(1)]
                with m.If(keys.o.valid):
                    m.d.sync += [row_seed.eq(cmd.seed ^ keys.o.payload), state.eq(_State.COLUMN_KEY)]
            with m.Case(_State.COLUMN_KEY):
                # The key stays on ``keys.o`` (until WRITTEN): it seeds the lane now and again in OUTPUT.
                m.d.comb += [keys.i.valid.eq(1), start.eq(keys.o.valid)]
                with m.If(keys.o.valid):
                    m.d.sync += state.eq(_State.READ)
            with m.Case(_State.READ):
                # A's word asked for at the A place; at the B place the ring waits for that word (the
                # DMA has no R buffer and takes B's command only once A's read has ended), then B's
                # word is asked for. Both pointers step on to k + 1.
                a_place, b_place = phase == _BUFFERS.index("a"), phase == _BUFFERS.index("b")
                m.d.comb += [self.dma_rd_cmd.valid.eq(a_place | (b_place & a_in)), rd.ready.eq(b_place & ~a_in)]
                turn(_Step.K, issue=self.dma_rd_cmd)
                with m.If(b_place & ~a_in):
                    m.d.comb += rotate.eq(0)
                with m.If(rd.valid & rd.ready):
                    m.d.sync += [a_code.eq(code), a_in.eq(1)]
                with m.If(turned):
                    m.d.sync += [a_in.eq(0), state.eq(_State.B_WORD)]
            with m.Case(_State.B_WORD):
                m.d.comb += [rd.ready.eq(1), beat.eq(rd.valid)]
                with m.If(rd.valid):
                    m.d.sync += k.eq(Mux(last_k, 0, k_next))
                    with m.If(last_k):
                        m.d.sync += state.eq(_State.REWIND_K)
                    with m.Else():
                        m.d.sync += state.eq(_State.READ)
            with m.Case(_State.REWIND_K):
                # Back to k = 0; the last turn reads C's word (HAS_C) at the C place.
                m.d.comb += self.dma_rd_cmd.valid.eq(has_c & last_k & (phase == _BUFFERS.index("c")))
                turn(_Step.K, back=True, issue=self.dma_rd_cmd)
                with m.If(turned):
                    m.d.sync += k.eq(Mux(last_k, 0, k_next))
                    with m.If(last_k):
                        m.d.sync += state.eq(_State.OUTPUT)
            with m.Case(_State.OUTPUT):
                # C's word into ``held`` (added in the next cycle); the lane restarts for the conversion.
                m.d.comb += [rd.ready.eq(has_c), c_load.eq(has_c & rd.valid)]
                with m.If(~has_c | rd.valid):
                    m.d.sync += state.eq(_State.WRITE)
            with m.Case(_State.WRITE):
                # D's command at the D place; B, C and D step on to column j + 1, or after the row's last
                # column A, C and D to the next row.
                m.d.comb += self.dma_wr_cmd.valid.eq(phase == _BUFFERS.index("d"))
                turn(Mux(last_column, _Step.ROW, _Step.COLUMN), issue=self.dma_wr_cmd)
                with m.If(turned):
                    m.d.sync += state.eq(_State.DATA)
            with m.Case(_State.DATA):
                m.d.comb += self.dma_wr_data.valid.eq(1)
                with m.If(self.dma_wr_data.ready):
                    m.d.sync += state.eq(_State.WRITTEN)
            with m.Case(_State.WRITTEN):
                # The column key leaves ``keys.o``: the next output's COLUMN_KEY hashes its own.
                m.d.comb += keys.o.ready.eq(self.dma_wr_done)
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
