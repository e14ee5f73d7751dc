"""Tile controller: the GEMM executor of the command engine (DESIGN.md §3).

It takes a checked GEMM from ``CommandEngine.exec_cmd``, tiles it over the ``rows x cols`` systolic
array and moves every operand and result through the engine's DMA (``exec_dma_*``), bit-exact with
golden ``run_gemm``. Four parts work at once, so that the array computes while operands load and
results leave:

- the *issuer* walks the GEMM in *steps* and issues the DMA reads of each step's operands into the
  free halves of the double-buffered scratchpads (and the C tiles into a ring of C slots), after
  hashing the lane keys the step needs; every read command carries a *route* (where its words go)
  through a FIFO, so reads of many commands are in flight at once;
- the *receiver* writes the words of each read into the scratchpad, C memory or nothing else the
  route names, and counts the steps and C tiles that are complete;
- the *sequencer* feeds each loaded step to the array, one tile after the other with no gap;
- the *writer* takes each finished tile's results (collected per row as they drain), runs them
  through the output unit with C, and writes D row by row, not waiting for write responses until
  the end of the command.

A step is one k block (``k_block`` values of k) of one column tile against an *A panel* of up to
``a_slots`` row tiles. When K fits one block the panel stays in the A scratchpad while every column
tile passes, so each B block is used ``a_slots`` times: for an 8 x 8 array a step computes for
``a_slots * K`` cycles and loads ``K`` beats of B, which leaves the 64-bit bus idle most of the
time. When K is longer, a step is one tile and one k block and both operands are loaded for every
step (the bus then limits an R x C array to ``8 / (R + C)`` of its peak).
"""

from amaranth.hdl import Cat, Const, Elaboratable, Module, Mux, ResetInserter, Signal, signed
from amaranth.lib import data, stream, wiring
from amaranth.lib.fifo import SyncFIFOBuffered
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from fp8train.formats import E5M2, FP16_169
from fp8train.hw.array.systolic import feed_layout
from fp8train.hw.bus.dma import DmaError
from fp8train.hw.engine import BEAT, exec_layout, executor_members
from fp8train.protocol import ALIGN, FLAG_OUT_SHIFT, ErrorCode, Flag, OutFormat

__all__ = ["TileController"]

KEY = 32
ACC = FP16_169.width
ELEMENTS_PER_BEAT = BEAT // ACC
COUNT = 8                                      # width of the wrapping step/tile counters


def _down8(value):
    """``value`` rounded down to a multiple of 8 (as an expression)."""
    return Cat(Const(0, 3), value[3:])


def _round8(value):
    """``value`` rounded up to a multiple of 8 (as an expression)."""
    return _down8(value + (ALIGN - 1))


def _min(a, b):
    return Mux(a < b, a, b)


def _ahead(later, earlier):
    """How far the wrapping counter ``later`` is ahead of ``earlier``."""
    return (later - earlier)[:COUNT]


class _Route(data.Struct):
    """Where the words of one DMA read go (travels through a FIFO beside the read)."""
    to_c: 1                 # C memory; else a scratchpad
    to_b: 1                 # B scratchpad; else A
    buffer: 1
    lane_rows: 1            # the stored row is one lane's k run (else one k across lanes)
    lane: signed(8)         # lane_rows: the lane; else the lane of byte 0 of the first word
    base: 16                # scratch k of the first word, or the C memory word
    ends_step: 1            # the last read of a step
    ends_c_tile: 1          # the last read of a C tile


class _Walk:
    """The GEMM's step order, walked by each part with its own registers.

    ``for i0 in panels: for j0 in column tiles: for k0 in k blocks`` (a panel is ``a_slots`` row
    tiles when K fits one block, else one)."""

    def __init__(self, ctl, cmd, streaming, name):
        self.ctl, self.cmd, self.streaming = ctl, cmd, streaming
        self.i0 = Signal(16, name=f"{name}_i0")
        self.j0 = Signal(16, name=f"{name}_j0")
        self.k0 = Signal(17, name=f"{name}_k0")
        self.name = name

    def derive(self, m):
        """Per-step values: tiles in the panel, k block length, first/last flags."""
        ctl, cmd = self.ctl, self.cmd
        R, S, KB = ctl.rows, ctl.a_slots, ctl.k_block
        self.tiles = Signal(range(S + 1), name=f"{self.name}_tiles")
        present = [Const(1)] + [~self.streaming & (self.i0 + s * R < cmd.m) for s in range(1, S)]
        m.d.comb += self.tiles.eq(sum(present))
        self.blen = Signal(range(KB + 1), name=f"{self.name}_blen")
        m.d.comb += self.blen.eq(_min(cmd.k - self.k0, KB))
        self.last_k = Signal(name=f"{self.name}_last_k")
        m.d.comb += self.last_k.eq(self.k0 + KB >= cmd.k)
        self.last_j = Signal(name=f"{self.name}_last_j")
        m.d.comb += self.last_j.eq(self.j0 + ctl.cols >= cmd.n)
        self.new_panel = Signal(name=f"{self.name}_new_panel")      # first step of an A panel
        m.d.comb += self.new_panel.eq(self.streaming | (self.j0 == 0))
        self.panel_ends = Signal(name=f"{self.name}_panel_ends")    # last step of an A panel
        m.d.comb += self.panel_ends.eq(self.streaming | (self.last_j & self.last_k))
        self.final = Signal(name=f"{self.name}_final")
        panel_rows = Mux(self.streaming, R, S * R)
        m.d.comb += self.final.eq(self.last_k & self.last_j & (self.i0 + panel_rows >= cmd.m))
        self.cols_valid = Signal(range(ctl.cols + 1), name=f"{self.name}_cols_valid")
        m.d.comb += self.cols_valid.eq(_min(cmd.n - self.j0, ctl.cols))
        return self

    def tile_row(self, slot):
        return self.i0 + slot * self.ctl.rows

    def rows_valid(self, m, slot, name):
        value = Signal(range(self.ctl.rows + 1), name=f"{self.name}_{name}")
        m.d.comb += value.eq(_min(self.cmd.m - self.tile_row(slot), self.ctl.rows))
        return value

    def advance(self, m, *, tiles_only=False):
        """Go to the next step (``tiles_only``: to the next step that ends tiles)."""
        ctl = self.ctl
        panel_rows = Mux(self.streaming, ctl.rows, ctl.a_slots * ctl.rows)
        with m.If(Const(0) if tiles_only else ~self.last_k):
            m.d.sync += self.k0.eq(self.k0 + ctl.k_block)
        with m.Else():
            m.d.sync += self.k0.eq(0)
            with m.If(~self.last_j):
                m.d.sync += self.j0.eq(self.j0 + ctl.cols)
            with m.Else():
                m.d.sync += [self.j0.eq(0), self.i0.eq(self.i0 + panel_rows)]


class TileController(wiring.Component):
    """Overlapped GEMM executor for an R x C :class:`~fp8train.hw.array.systolic.SystolicArray`.

    Parameters
    ----------
    rows, cols : int
        The array's size.
    max_chunk : int
        The array's ``max_chunk``.
    k_block : int
        k values per operand scratch block (a multiple of 8).
    a_slots : int
        Row tiles of an A panel (1 to 8); the A scratchpad holds ``2 * a_slots * k_block`` codes
        per lane.
    addr_width, length_width : int
        The DMA's widths.
    route_depth : int
        DMA reads in flight at most (the route FIFO's depth).

    Members
    -------
    cmd : In(stream(exec_layout))
        From ``CommandEngine.exec_cmd``.
    done : Out(stream(done_layout))
        To ``CommandEngine.exec_done``: OK, READ_ERROR or WRITE_ERROR.
    abort : In(1)
        The engine's abort pulse: drop the command, answer nothing.
    dma_rd_cmd, dma_rd_data, dma_wr_cmd, dma_wr_data, dma_rd_done, dma_wr_done, dma_error
        The engine's ``exec_dma_*`` ports (flipped); reads and writes are pipelined (the DMA takes a
        command while earlier ones are in flight), ``dma_wr_done`` is counted.
    feed, chunk, stochastic, saturate, seed, o, array_mac_active, mac_active
        The systolic array's ports (flipped); ``mac_active`` passes the array's count on.

    a_write, a_read_buffer, a_read_k, a_codes, b_write, b_read_buffer, b_read_k, b_codes
        The operand scratchpads' ports (A's depth is ``a_slots * k_block``, B's ``k_block``).
    out_i, out_o, out_*
        The output unit's ports (its ``o`` is always taken, so its ``i`` is always ready).
    key_i, key_o, wkey_i, wkey_o
        Two lane key hashers: the issuer's (keys fed to the array) and the writer's (keys of the
        output rounding).
    """

    def __init__(self, *, rows: int, cols: int, max_chunk: int = 4096, k_block: int = 256,
                 a_slots: int = 4, addr_width: int = 32, length_width: int = 20, route_depth: int = 32):
        if not isinstance(k_block, int) or k_block < ALIGN or k_block % ALIGN:
            raise ValueError(f"k_block must be a positive multiple of {ALIGN}, not {k_block!r}")
        if isinstance(a_slots, bool) or not isinstance(a_slots, int) or not 1 <= a_slots <= 8:
            raise ValueError(f"a_slots must be an integer from 1 to 8, not {a_slots!r}")
        if a_slots * k_block > 1 << 15:
            raise ValueError(f"a_slots * k_block must be at most {1 << 15}, not {a_slots * k_block}")
        if isinstance(route_depth, bool) or not isinstance(route_depth, int) or route_depth < 2:
            raise ValueError(f"route_depth must be an integer of at least 2, not {route_depth!r}")
        self.rows, self.cols, self.max_chunk, self.k_block = rows, cols, max_chunk, k_block
        self.a_slots, self.route_depth = a_slots, route_depth
        self.c_slots = 2 * a_slots
        # C memory words per row: the row's C values start anywhere in the first word.
        self.c_words = (ELEMENTS_PER_BEAT - 1 + cols + ELEMENTS_PER_BEAT - 1) // ELEMENTS_PER_BEAT
        self.addr_width, self.length_width = addr_width, length_width

        def scratch_write(depth):
            return data.StructLayout({"en": 1, "buffer": 1, "k_rows": 1, "lane": signed(8),
                                      "k": range(depth), "data": data.ArrayLayout(8, ALIGN)})
        super().__init__({
            **executor_members(addr_width, length_width),
            # Systolic array.
            "feed": Out(stream.Signature(feed_layout(E5M2, rows, cols), always_ready=True)),
            "chunk": Out(range(max_chunk + 1)), "stochastic": Out(1), "saturate": Out(1),
            "seed": Out(32),
            "o": In(stream.Signature(ACC, always_ready=True)).array(rows),
            "array_mac_active": In(range(rows * cols + 1)),
            "mac_active": Out(range(rows * cols + 1)),
            # Operand scratchpads.
            "a_write": Out(scratch_write(a_slots * k_block)), "a_read_buffer": Out(1),
            "a_read_k": Out(range(a_slots * k_block)), "a_codes": In(data.ArrayLayout(8, rows)),
            "b_write": Out(scratch_write(k_block)), "b_read_buffer": Out(1),
            "b_read_k": Out(range(k_block)), "b_codes": In(data.ArrayLayout(8, cols)),
            # Output unit.
            "out_i": Out(stream.Signature(data.StructLayout({"total": ACC, "c": ACC, "row_key": KEY,
                                                             "col_key": KEY}))),
            "out_o": In(stream.Signature(16)),
            "out_has_c": Out(1), "out_relu": Out(1), "out_stochastic": Out(1), "out_saturate": Out(1),
            "out_scale": Out(signed(8)), "out_format": Out(2), "out_seed": Out(32),
            # Lane key hashers.
            "key_i": Out(stream.Signature(data.StructLayout({"index": 16, "is_col": 1}))),
            "key_o": In(stream.Signature(KEY)),
            "wkey_i": Out(stream.Signature(data.StructLayout({"index": 16, "is_col": 1}))),
            "wkey_o": In(stream.Signature(KEY)),
        })

    def elaborate(self, platform):
        m = Module()
        aw = self.addr_width

        cmd = Signal(exec_layout(aw))
        running = Signal()                         # a command is in progress
        finished = Signal()                        # the writer has written and seen acknowledged every row
        code = Signal(8)
        streaming = Signal()                       # K longer than a k block
        m.d.comb += streaming.eq(cmd.k > self.k_block)

        # Shared state between the parts: wrapping counters and memories.
        clear = ~running
        shared = _Shared(self, m, cmd, streaming, clear)
        m.submodules.issuer = ResetInserter(clear)(_Issuer(self, shared))
        m.submodules.receiver = ResetInserter(clear)(_Receiver(self, shared))
        m.submodules.sequencer = ResetInserter(clear)(_Sequencer(self, shared))
        m.submodules.collector = ResetInserter(clear)(_Collector(self, shared))
        m.submodules.writer = ResetInserter(clear)(_Writer(self, shared, finished))

        dma_failed = self.dma_error != 0
        assert DmaError.READ_SLVERR % 2 == 0 and DmaError.WRITE_SLVERR % 2 == 1
        with m.FSM(name="controller") as fsm:
            with m.State("IDLE"):
                with m.If(self.cmd.valid & ~self.abort):
                    m.d.sync += [cmd.eq(self.cmd.p), running.eq(1)]
                    m.next = "RUN"
            with m.State("RUN"):
                with m.If(self.abort):
                    m.d.sync += running.eq(0)
                    m.next = "IDLE"
                with m.Elif(dma_failed):
                    m.d.sync += [running.eq(0), code.eq(Mux(self.dma_error[0], ErrorCode.WRITE_ERROR,
                                                            ErrorCode.READ_ERROR))]
                    m.next = "DONE"
                with m.Elif(finished):
                    m.d.sync += [running.eq(0), code.eq(ErrorCode.OK)]
                    m.next = "DONE"
            with m.State("DONE"):
                with m.If(self.abort | self.done.ready):
                    m.next = "IDLE"
        in_idle, in_done = Signal(), Signal()
        m.d.comb += [in_idle.eq(fsm.ongoing("IDLE")), in_done.eq(fsm.ongoing("DONE"))]
        m.d.comb += [self.cmd.ready.eq(in_idle & ~self.abort),
                     self.done.valid.eq(in_done & ~self.abort), self.done.p.code.eq(code)]

        # Command options to the array and the output unit.
        flags = cmd.flags
        assert Flag.ACC_STOCHASTIC == 16 and Flag.OUT_STOCHASTIC == 32 and Flag.OVERFLOW_INF == 64
        assert Flag.HAS_C == 4 and Flag.RELU == 8
        m.d.comb += [self.chunk.eq(cmd.chunk), self.stochastic.eq(flags[4]), self.saturate.eq(~flags[6]),
                     self.seed.eq(cmd.seed), self.mac_active.eq(self.array_mac_active),
                     self.out_has_c.eq(flags[2]), self.out_relu.eq(flags[3]),
                     self.out_stochastic.eq(flags[5]), self.out_saturate.eq(~flags[6]),
                     self.out_scale.eq(cmd.scale),
                     self.out_format.eq(flags[FLAG_OUT_SHIFT:FLAG_OUT_SHIFT + 2]),
                     self.out_seed.eq(cmd.seed)]
        return m


class _Shared:
    """Signals and memories that connect the parts; each signal is driven by one part only."""

    def __init__(self, ctl: TileController, m: Module, cmd, streaming, clear):
        R, C, S = ctl.rows, ctl.cols, ctl.a_slots
        self.cmd, self.streaming = cmd, streaming
        flags = cmd.flags
        assert Flag.TRANS_A == 1 and Flag.TRANS_B == 2 and Flag.HAS_C == 4
        self.trans_a, self.trans_b, self.has_c = flags[0], flags[1], flags[2]
        out_format = flags[FLAG_OUT_SHIFT:FLAG_OUT_SHIFT + 2]
        self.fp16_out = Signal()
        m.d.comb += self.fp16_out.eq(out_format == OutFormat.FP16_169)

        # Wrapping counters (driver in brackets).
        self.panels_issued = Signal(COUNT)        # A panels whose reads are issued [issuer]
        self.steps_issued = Signal(COUNT)         # steps whose reads are issued [issuer]
        self.c_tiles_issued = Signal(COUNT)       # C tiles whose reads are issued [issuer]
        self.steps_loaded = Signal(COUNT)         # steps whose words are all in [receiver]
        self.c_tiles_loaded = Signal(COUNT)       # C tiles whose words are all in [receiver]
        self.panels_done = Signal(COUNT)          # A panels fed to the array [sequencer]
        self.steps_done = Signal(COUNT)           # steps fed to the array [sequencer]
        self.tiles_fed = Signal(COUNT)            # tiles whose last beat is fed [sequencer]
        self.tiles_taken = Signal(COUNT)          # tiles whose results and C are read [writer]
        self.rows_in = [Signal(2, name=f"rows_in{r}") for r in range(R)]   # tiles drained, per row [collector]

        self.route = SyncFIFOBuffered(width=_Route.as_shape().size, depth=ctl.route_depth)
        m.submodules.route = ResetInserter(clear)(self.route)

        # Lane keys of the array: per row lane (A buffer, slot), per column lane (B buffer).
        self.row_keys = [Memory(shape=KEY, depth=2 * S, init=[]) for _ in range(R)]
        self.col_keys = [Memory(shape=KEY, depth=2, init=[]) for _ in range(C)]
        # Results per row, two tiles; the C tiles in a ring of c_slots, words of four values.
        self.results = [Memory(shape=ACC, depth=2 * C, init=[]) for _ in range(R)]
        self.c_memory = Memory(shape=BEAT, depth=ctl.c_slots * R * ctl.c_words, init=[])
        for name, memories in (("row_key", self.row_keys), ("col_key", self.col_keys),
                               ("results", self.results)):
            for index, memory in enumerate(memories):
                m.submodules[f"{name}{index}"] = memory
        m.submodules.c_memory = self.c_memory
        self.row_key_write = [mem.write_port() for mem in self.row_keys]
        self.col_key_write = [mem.write_port() for mem in self.col_keys]
        self.row_key_read = [mem.read_port() for mem in self.row_keys]
        self.col_key_read = [mem.read_port() for mem in self.col_keys]
        self.results_write = [mem.write_port() for mem in self.results]
        self.results_read = [mem.read_port() for mem in self.results]
        self.c_write = self.c_memory.write_port()
        self.c_read = self.c_memory.read_port()


class _Issuer(Elaboratable):
    """Hashes each step's lane keys and issues its reads: the A panel (first step of a panel), the
    B block, and at a tile's last k block its C rows."""

    def __init__(self, ctl: TileController, shared: _Shared):
        self.ctl, self.sh = ctl, shared

    def elaborate(self, platform):
        m = Module()
        ctl, sh = self.ctl, self.sh
        cmd = sh.cmd
        R, C, S, KB = ctl.rows, ctl.cols, ctl.a_slots, ctl.k_block
        walk = _Walk(ctl, cmd, sh.streaming, "issue").derive(m)

        slot = Signal(range(S + 1))
        idx = Signal(17)                      # lane or k of the read, or the C row
        sent, got = Signal(range(S * R + C + 1)), Signal(range(S * R + C + 1))
        got_slot, got_lane = Signal(range(S + 1)), Signal(range(max(R, C) + 1))

        rows_valid = walk.rows_valid(m, slot, "rows_valid")
        tile_row = Signal(16)
        m.d.comb += tile_row.eq(walk.tile_row(slot))
        hash_rows = Signal(range(S * R + 1))
        m.d.comb += hash_rows.eq(Mux(walk.new_panel, walk.tiles * R, 0))

        a_buffer, b_buffer = sh.panels_issued[0], sh.steps_issued[0]
        c_slot = Signal(range(ctl.c_slots))
        m.d.comb += c_slot.eq(sh.c_tiles_issued[:(ctl.c_slots - 1).bit_length()])

        # The read being issued: operand A (is_b 0) or B (is_b 1) of the step, or a C row.
        is_b, is_c = Signal(), Signal()
        lane_rows = Signal()
        m.d.comb += lane_rows.eq(Mux(is_b, sh.trans_b, ~sh.trans_a))
        first_lane = Signal(16)
        lanes_valid = Signal(range(max(R, C) + 1))
        m.d.comb += [first_lane.eq(Mux(is_b, walk.j0, tile_row)),
                     lanes_valid.eq(Mux(is_b, walk.cols_valid, rows_valid))]
        count = Signal(17)
        m.d.comb += count.eq(Mux(is_c, rows_valid, Mux(lane_rows, lanes_valid, walk.blen)))
        span_start = Signal(17)
        m.d.comb += span_start.eq(_down8(first_lane))
        span_end = Signal(18)
        m.d.comb += span_end.eq(_round8(first_lane + lanes_valid))
        stored_row = Signal(17)
        m.d.comb += stored_row.eq(Mux(is_c, tile_row + idx, Mux(lane_rows, first_lane + idx, walk.k0 + idx)))
        c_start = Signal(18)
        m.d.comb += c_start.eq(_down8(walk.j0 << 1))
        base_addr = Mux(is_c, cmd.addr_c, Mux(is_b, cmd.addr_b, cmd.addr_a))
        stride = Mux(is_c, cmd.stride_c, Mux(is_b, cmd.stride_b, cmd.stride_a))
        offset = Mux(is_c, c_start, Mux(lane_rows, walk.k0, span_start))
        length = Mux(is_c, _round8((walk.j0 + walk.cols_valid) << 1) - c_start,
                     Mux(lane_rows, _round8(walk.blen), span_end - span_start))
        m.d.comb += [self.ctl.dma_rd_cmd.p.addr.eq(base_addr + stored_row * stride + offset),
                     self.ctl.dma_rd_cmd.p.length.eq(length)]

        route = Signal(_Route)
        last_read = idx == count - 1
        m.d.comb += [
            route.to_c.eq(is_c), route.to_b.eq(is_b), route.buffer.eq(Mux(is_b, b_buffer, a_buffer)),
            route.lane_rows.eq(lane_rows),
            route.lane.eq(Mux(lane_rows, idx, span_start - first_lane)),
            route.base.eq(Mux(is_c, (c_slot * R + idx) * ctl.c_words,
                              Mux(is_b, 0, slot * KB) + Mux(lane_rows, 0, idx))),
            route.ends_step.eq(is_b & last_read),
            route.ends_c_tile.eq(is_c & last_read),
            sh.route.w_data.eq(route.as_value()),
        ]
        issuing = Signal()
        fire = issuing & self.ctl.dma_rd_cmd.ready & sh.route.w_rdy
        m.d.comb += [self.ctl.dma_rd_cmd.valid.eq(issuing & sh.route.w_rdy),
                     sh.route.w_en.eq(fire)]

        # Lane keys: rows of the panel (first step of a panel) then the step's columns.
        hashing = Signal()
        key_i, key_o = self.ctl.key_i, self.ctl.key_o
        m.d.comb += [key_i.valid.eq(hashing & (sent != hash_rows + C)),
                     key_i.p.index.eq(Mux(sent < hash_rows, walk.i0 + sent, walk.j0 + sent - hash_rows)),
                     key_i.p.is_col.eq(sent >= hash_rows),
                     key_o.ready.eq(1)]
        with m.If(key_i.valid & key_i.ready):
            m.d.sync += sent.eq(sent + 1)
        receiving_rows = got < hash_rows
        for lane, port in enumerate(sh.row_key_write):
            m.d.comb += [port.addr.eq(a_buffer * S + got_slot), port.data.eq(key_o.payload),
                         port.en.eq(key_o.valid & receiving_rows & (got_lane == lane))]
        for lane, port in enumerate(sh.col_key_write):
            m.d.comb += [port.addr.eq(b_buffer), port.data.eq(key_o.payload),
                         port.en.eq(key_o.valid & ~receiving_rows & (got_lane == lane))]
        with m.If(key_o.valid):
            m.d.sync += got.eq(got + 1)
            with m.If(receiving_rows & (got_lane != R - 1)):
                m.d.sync += got_lane.eq(got_lane + 1)
            with m.Elif(receiving_rows):
                m.d.sync += [got_lane.eq(0), got_slot.eq(got_slot + 1)]
            with m.Else():
                m.d.sync += got_lane.eq(got_lane + 1)
            with m.If(got == hash_rows - 1):
                m.d.sync += got_lane.eq(0)

        with m.FSM(name="issuer"):
            with m.State("STEP"):
                panel_free = ~walk.new_panel | (_ahead(sh.panels_issued, sh.panels_done) < 2)
                block_free = _ahead(sh.steps_issued, sh.steps_done) < 2
                with m.If(panel_free & block_free):
                    m.d.sync += [sent.eq(0), got.eq(0), got_slot.eq(0), got_lane.eq(0)]
                    m.next = "HASH"
            with m.State("HASH"):
                m.d.comb += hashing.eq(1)
                with m.If(key_o.valid & (got == hash_rows + C - 1)):
                    m.d.sync += [slot.eq(0), idx.eq(0), is_b.eq(~walk.new_panel)]
                    m.next = "READ"
            with m.State("READ"):
                m.d.comb += issuing.eq(1)
                with m.If(fire):
                    m.d.sync += idx.eq(idx + 1)
                    with m.If(last_read & ~is_b):
                        m.d.sync += idx.eq(0)
                        with m.If(slot == walk.tiles - 1):
                            m.d.sync += [is_b.eq(1), sh.panels_issued.eq(sh.panels_issued + 1)]
                        with m.Else():
                            m.d.sync += slot.eq(slot + 1)
                    with m.If(last_read & is_b):
                        m.d.sync += [idx.eq(0), slot.eq(0), is_b.eq(0),
                                     sh.steps_issued.eq(sh.steps_issued + 1)]
                        with m.If(walk.last_k & sh.has_c):
                            m.next = "C_WAIT"
                        with m.Else():
                            m.next = "NEXT"
            with m.State("C_WAIT"):
                with m.If(_ahead(sh.c_tiles_issued, sh.tiles_taken) < ctl.c_slots):
                    m.d.sync += [idx.eq(0), is_c.eq(1)]
                    m.next = "C_READ"
            with m.State("C_READ"):
                m.d.comb += issuing.eq(1)
                with m.If(fire):
                    m.d.sync += idx.eq(idx + 1)
                    with m.If(last_read):
                        m.d.sync += [sh.c_tiles_issued.eq(sh.c_tiles_issued + 1), is_c.eq(0)]
                        with m.If(slot == walk.tiles - 1):
                            m.d.sync += slot.eq(0)
                            m.next = "NEXT"
                        with m.Else():
                            m.d.sync += slot.eq(slot + 1)
                            m.next = "C_WAIT"
            with m.State("NEXT"):
                walk.advance(m)
                with m.If(~walk.final):
                    m.next = "STEP"
                with m.Else():
                    m.next = "ISSUED"
            with m.State("ISSUED"):
                pass
        return m


class _Receiver(Elaboratable):
    """Writes each read word where its route says, and counts the complete steps and C tiles."""

    def __init__(self, ctl: TileController, shared: _Shared):
        self.ctl, self.sh = ctl, shared

    def elaborate(self, platform):
        m = Module()
        ctl, sh = self.ctl, self.sh
        rd = ctl.dma_rd_data
        route = Signal(_Route)
        m.d.comb += route.eq(sh.route.r_data)
        beat = Signal(16)
        word = rd.valid & sh.route.r_rdy
        m.d.comb += [rd.ready.eq(sh.route.r_rdy), sh.route.r_en.eq(word & rd.p.last)]
        with m.If(word):
            m.d.sync += beat.eq(Mux(rd.p.last, 0, beat + 1))
            with m.If(rd.p.last & route.ends_step):
                m.d.sync += sh.steps_loaded.eq(sh.steps_loaded + 1)
            with m.If(rd.p.last & route.ends_c_tile):
                m.d.sync += sh.c_tiles_loaded.eq(sh.c_tiles_loaded + 1)

        for port, is_b in ((ctl.a_write, 0), (ctl.b_write, 1)):
            m.d.comb += [port.en.eq(word & ~route.to_c & (route.to_b == is_b)), port.buffer.eq(route.buffer),
                         port.k_rows.eq(~route.lane_rows),
                         port.lane.eq(Mux(route.lane_rows, route.lane, route.lane + (beat << 3))),
                         port.k.eq((route.base + Mux(route.lane_rows, beat << 3, 0))[:len(port.k)]),
                         port.data.as_value().eq(rd.p.data)]
        m.d.comb += [sh.c_write.en.eq(word & route.to_c), sh.c_write.addr.eq(route.base + beat),
                     sh.c_write.data.eq(rd.p.data)]
        return m


class _Sequencer(Elaboratable):
    """Feeds the loaded steps to the array, tile after tile, from the scratchpads' read halves.

    Two conditions hold beats back: a tile's ``last`` beat follows the previous one by at least
    ``2 * cols - 1`` cycles (the array's spacing contract), and a tile is finished only when the
    writer has taken the tile two before it (results are collected in two halves)."""

    def __init__(self, ctl: TileController, shared: _Shared):
        self.ctl, self.sh = ctl, shared

    def elaborate(self, platform):
        m = Module()
        ctl, sh = self.ctl, self.sh
        R, C, S, KB = ctl.rows, ctl.cols, ctl.a_slots, ctl.k_block
        walk = _Walk(ctl, sh.cmd, sh.streaming, "feed").derive(m)
        slot = Signal(range(S))
        kk = Signal(range(KB + 1))
        gap = Signal(range(2 * C))
        a_buffer, b_buffer = sh.panels_done[0], sh.steps_done[0]

        last_beat = walk.last_k & (kk == walk.blen - 1)
        results_free = _ahead(sh.tiles_fed, sh.tiles_taken) < 2
        feeding = Signal()
        go = feeding & ~((kk == 0) & walk.last_k & ~results_free) & ~(last_beat & (gap != 0))

        with m.If(go & last_beat):
            m.d.sync += gap.eq(2 * C - 2)
        with m.Elif(gap != 0):
            m.d.sync += gap.eq(gap - 1)

        with m.FSM(name="sequencer"):
            with m.State("WAIT"):
                with m.If(_ahead(sh.steps_loaded, sh.steps_done) != 0):
                    m.d.sync += [slot.eq(0), kk.eq(0)]
                    m.next = "FEED"
            with m.State("FEED"):
                m.d.comb += feeding.eq(1)
                with m.If(go):
                    m.d.sync += kk.eq(kk + 1)
                    with m.If(kk == walk.blen - 1):
                        m.d.sync += kk.eq(0)
                        with m.If(walk.last_k):
                            m.d.sync += sh.tiles_fed.eq(sh.tiles_fed + 1)
                        with m.If(slot != walk.tiles - 1):
                            m.d.sync += slot.eq(slot + 1)
                        with m.Else():
                            m.d.sync += sh.steps_done.eq(sh.steps_done + 1)
                            with m.If(walk.panel_ends):
                                m.d.sync += sh.panels_done.eq(sh.panels_done + 1)
                            walk.advance(m)
                            with m.If(walk.final):
                                m.next = "FED"
                            with m.Else():
                                m.next = "WAIT"
            with m.State("FED"):
                pass

        # Reads in the cycle of ``go``; the beat (scratch words, keys) one cycle later.
        pending, first, last = Signal(), Signal(), Signal()
        m.d.sync += [pending.eq(go), first.eq((walk.k0 == 0) & (kk == 0)), last.eq(last_beat)]
        feed = ctl.feed.p
        m.d.comb += [ctl.a_read_buffer.eq(a_buffer), ctl.a_read_k.eq(slot * KB + kk),
                     ctl.b_read_buffer.eq(b_buffer), ctl.b_read_k.eq(kk[:len(ctl.b_read_k)]),
                     ctl.feed.valid.eq(pending), feed.first.eq(first), feed.last.eq(last)]
        m.d.comb += [feed.a[r].as_value().eq(ctl.a_codes[r]) for r in range(R)]
        m.d.comb += [feed.b[c].as_value().eq(ctl.b_codes[c]) for c in range(C)]
        for r, port in enumerate(sh.row_key_read):
            m.d.comb += [port.addr.eq(a_buffer * S + slot), feed.row_key[r].eq(port.data)]
        for c, port in enumerate(sh.col_key_read):
            m.d.comb += [port.addr.eq(b_buffer), feed.col_key[c].eq(port.data)]
        return m


class _Collector(Elaboratable):
    """Stores the results draining from each array row into that row's half for its tile."""

    def __init__(self, ctl: TileController, shared: _Shared):
        self.ctl, self.sh = ctl, shared

    def elaborate(self, platform):
        m = Module()
        C = self.ctl.cols
        for r, (o, port) in enumerate(zip(self.ctl.o, self.sh.results_write)):
            column = Signal(range(C), name=f"column{r}")
            rows_in = self.sh.rows_in[r]
            m.d.comb += [port.en.eq(o.valid), port.addr.eq(rows_in[0] * C + column), port.data.eq(o.payload)]
            with m.If(o.valid):
                m.d.sync += column.eq(Mux(column == C - 1, 0, column + 1))
                with m.If(column == C - 1):
                    m.d.sync += rows_in.eq(rows_in + 1)
        return m


class _Writer(Elaboratable):
    """Per finished tile: hash its keys, then per valid row run the results (+ C) through the output
    unit and write the row of D; at the end wait for every write response."""

    def __init__(self, ctl: TileController, shared: _Shared, finished):
        self.ctl, self.sh, self.finished = ctl, shared, finished

    def elaborate(self, platform):
        m = Module()
        ctl, sh = self.ctl, self.sh
        R, C = ctl.rows, ctl.cols
        walk = _Walk(ctl, sh.cmd, sh.streaming, "write").derive(m)
        slot = Signal(range(ctl.a_slots))
        row = Signal(range(R + 1))
        tile_row = Signal(16)
        m.d.comb += tile_row.eq(walk.tile_row(slot))
        rows_valid = walk.rows_valid(m, slot, "rows_valid")
        cols_valid = walk.cols_valid
        half = sh.tiles_taken[0]
        c_slot = sh.tiles_taken[:(ctl.c_slots - 1).bit_length()]

        # Keys of the tile's rows and columns.
        row_keys = [Signal(KEY, name=f"row_key{r}") for r in range(R)]
        col_keys = [Signal(KEY, name=f"col_key{c}") for c in range(C)]
        sent, got = Signal(range(R + C + 1)), Signal(range(R + C + 1))
        hashing = Signal()
        m.d.comb += [ctl.wkey_i.valid.eq(hashing & (sent != R + C)),
                     ctl.wkey_i.p.index.eq(Mux(sent < R, tile_row + sent, walk.j0 + sent - R)),
                     ctl.wkey_i.p.is_col.eq(sent >= R), ctl.wkey_o.ready.eq(1)]
        with m.If(ctl.wkey_i.valid & ctl.wkey_i.ready):
            m.d.sync += sent.eq(sent + 1)
        with m.If(ctl.wkey_o.valid):
            m.d.sync += got.eq(got + 1)
            for n, key in enumerate(row_keys + col_keys):
                with m.If(got == n):
                    m.d.sync += key.eq(ctl.wkey_o.payload)

        # Output unit: element ``col_in`` read from the memories in one cycle, offered the next.
        col_in, col_out = Signal(range(C + 1)), Signal(range(C + 1))
        reading = Signal()
        offered_col = Signal(range(C))
        c_lane = Signal(2)
        c_word = Signal(range(ctl.c_words + 1))
        c_position = Signal(range(C + ELEMENTS_PER_BEAT))
        m.d.comb += [c_position.eq(walk.j0[:2] + col_in), c_word.eq(c_position >> 2)]
        m.d.comb += [port.addr.eq(half * C + col_in) for port in sh.results_read]
        m.d.comb += sh.c_read.addr.eq((c_slot * R + row) * ctl.c_words + c_word)
        m.d.sync += [ctl.out_i.valid.eq(reading & (col_in != C)), offered_col.eq(col_in), c_lane.eq(c_position[:2])]
        with m.If(reading & (col_in != C)):
            m.d.sync += col_in.eq(col_in + 1)
        total = Signal(ACC)
        m.d.comb += total.eq(Cat(*(port.data for port in sh.results_read)).word_select(row[:max(1, (R - 1).bit_length())], ACC))
        m.d.comb += [ctl.out_i.p.total.eq(total),
                     ctl.out_i.p.c.eq(Mux(sh.has_c, sh.c_read.data.word_select(c_lane, ACC), 0)),
                     ctl.out_i.p.row_key.eq(Cat(*row_keys).word_select(row[:max(1, (R - 1).bit_length())], KEY)),
                     ctl.out_i.p.col_key.eq(Cat(*col_keys).word_select(offered_col, KEY)),
                     ctl.out_o.ready.eq(1)]
        results = [Signal(16, name=f"out{c}") for c in range(C)]
        with m.If(ctl.out_o.valid):
            m.d.sync += col_out.eq(col_out + 1)
            for c, result in enumerate(results):
                with m.If(col_out == c):
                    m.d.sync += result.eq(ctl.out_o.payload)

        # D row write: bytes from d_first, whole beats from d_start.
        out_row = Signal(17)
        m.d.comb += out_row.eq(tile_row + row)
        d_first = Signal(18)
        m.d.comb += d_first.eq(Mux(sh.fp16_out, walk.j0 << 1, walk.j0))
        d_start, d_end = Signal(18), Signal(19)
        m.d.comb += [d_start.eq(_down8(d_first)),
                     d_end.eq(_round8(Mux(sh.fp16_out, (walk.j0 + cols_valid) << 1, walk.j0 + cols_valid)))]
        d_len = Signal(ctl.length_width)
        m.d.comb += [ctl.dma_wr_cmd.p.addr.eq(sh.cmd.addr_d + out_row * sh.cmd.stride_d + d_start),
                     d_len.eq(d_end - d_start), ctl.dma_wr_cmd.p.length.eq(d_len)]
        d_valid_bytes = Signal(range(2 * C + 1))
        m.d.comb += d_valid_bytes.eq(Mux(sh.fp16_out, cols_valid << 1, cols_valid))
        packed = Signal(16 * C)
        m.d.comb += packed.eq(Mux(sh.fp16_out, Cat(*results), Cat(*(value[:8] for value in results))))
        wbeat = Signal(16)
        cmd_sent = Signal()
        writing = Signal()
        wdata, wstrb = [], []
        for y in range(ALIGN):
            rel = Signal(signed(20), name=f"d_rel{y}")
            m.d.comb += rel.eq(d_start + (wbeat << 3) + y - d_first)
            ok = Signal(name=f"d_strb{y}")
            m.d.comb += ok.eq((rel >= 0) & (rel < d_valid_bytes))
            byte = Signal(8, name=f"d_byte{y}")
            m.d.comb += byte.eq(Mux(ok, packed.bit_select(rel[:(2 * C - 1).bit_length() or 1] << 3, 8), 0))
            wdata.append(byte)
            wstrb.append(ok)
        data_left = wbeat < (d_len >> 3)
        m.d.comb += [ctl.dma_wr_cmd.valid.eq(writing & ~cmd_sent),
                     ctl.dma_wr_data.valid.eq(writing & data_left),
                     ctl.dma_wr_data.p.data.eq(Cat(*wdata)), ctl.dma_wr_data.p.strb.eq(Cat(*wstrb))]
        with m.If(ctl.dma_wr_cmd.valid & ctl.dma_wr_cmd.ready):
            m.d.sync += cmd_sent.eq(1)
        with m.If(ctl.dma_wr_data.valid & ctl.dma_wr_data.ready):
            m.d.sync += wbeat.eq(wbeat + 1)

        rows_issued, rows_acked = Signal(24), Signal(24)
        with m.If(ctl.dma_wr_done):
            m.d.sync += rows_acked.eq(rows_acked + 1)

        tile_in = Cat(*((rows_in - sh.tiles_taken[:2])[:2] != 0 for rows_in in sh.rows_in)).all()
        c_in = ~sh.has_c | (_ahead(sh.c_tiles_loaded, sh.tiles_taken) != 0)
        with m.FSM(name="writer"):
            with m.State("WAIT"):
                with m.If(tile_in & c_in):
                    m.d.sync += [sent.eq(0), got.eq(0)]
                    m.next = "HASH"
            with m.State("HASH"):
                m.d.comb += hashing.eq(1)
                with m.If(ctl.wkey_o.valid & (got == R + C - 1)):
                    m.d.sync += row.eq(0)
                    m.next = "ROW"
            with m.State("ROW"):
                m.d.sync += [col_in.eq(0), col_out.eq(0), wbeat.eq(0), cmd_sent.eq(0)]
                with m.If(row == rows_valid):
                    m.d.sync += sh.tiles_taken.eq(sh.tiles_taken + 1)
                    with m.If(slot != walk.tiles - 1):
                        m.d.sync += slot.eq(slot + 1)
                        m.next = "WAIT"
                    with m.Else():
                        m.d.sync += slot.eq(0)
                        walk.advance(m, tiles_only=True)
                        with m.If(walk.last_j & (walk.i0 + Mux(sh.streaming, R, ctl.a_slots * R) >= sh.cmd.m)):
                            m.next = "FLUSH"
                        with m.Else():
                            m.next = "WAIT"
                with m.Else():
                    m.next = "OUTPUT"
            with m.State("OUTPUT"):
                m.d.comb += reading.eq(1)
                with m.If(ctl.out_o.valid & (col_out == C - 1)):
                    m.next = "WRITE"
            with m.State("WRITE"):
                m.d.comb += writing.eq(1)
                sent_now = cmd_sent | ctl.dma_wr_cmd.ready
                beats_now = (wbeat + (ctl.dma_wr_data.valid & ctl.dma_wr_data.ready)) == (d_len >> 3)
                with m.If(sent_now & beats_now):
                    m.d.sync += [rows_issued.eq(rows_issued + 1), row.eq(row + 1)]
                    m.next = "ROW"
            with m.State("FLUSH"):
                with m.If(rows_acked == rows_issued):
                    m.d.comb += self.finished.eq(1)
        return m
