"""Tile controller: the GEMM executor of the command engine (DESIGN.md §3).

It takes a checked GEMM from ``CommandEngine.exec_cmd``, tiles it over the ``rows x cols`` systolic
array and moves every operand and result through the engine's DMA (``exec_dma_*``), bit-exact with
golden ``run_gemm``. Version 1 is sequential: for each output tile it hashes the tile's lane keys,
then for each K block loads A and B into the operand scratchpads, feeds the block to the array, and
after the last block collects the results, adds C, runs the output unit and writes D row by row.
Nothing overlaps (left for performance: double-buffered scratch loads during compute, several
outstanding DMA reads, overlapping the output phase with the next tile's loads, streaming results
through the output unit while they drain).
"""

from amaranth.hdl import Cat, Const, Module, Mux, Signal, signed
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from fp8train.formats import E5M2, FP16_169
from fp8train.hw.array.systolic import feed_layout
from fp8train.hw.bus.dma import DmaError, command_layout
from fp8train.hw.engine import DMA_ERROR_WIDTH, done_layout, exec_layout
from fp8train.protocol import ALIGN, FLAG_OUT_SHIFT, ErrorCode, Flag, OutFormat

__all__ = ["TileController"]

BEAT = ALIGN * 8
KEY = 32
ACC = FP16_169.width


def _down8(value):
    """``value`` rounded down to a multiple of 8 (as an expression)."""
    return Cat(Const(0, 3), value[3:])


def _round8(value):
    """``value`` rounded up to a multiple of 8 (as an expression)."""
    return _down8(value + (ALIGN - 1))


def _min(a, b):
    return Mux(a < b, a, b)


class TileController(wiring.Component):
    """Sequential GEMM executor for an R x C :class:`~fp8train.hw.array.systolic.SystolicArray`.

    Parameters
    ----------
    rows, cols : int
        The array's size.
    max_chunk : int
        The array's ``max_chunk``.
    k_block : int
        k values per operand scratch block (a multiple of 8); the scratchpads' ``depth``.
    addr_width, length_width : int
        The DMA's widths.

    Members
    -------
    cmd : In(stream(exec_layout))
        From ``CommandEngine.exec_cmd``.
    done : Out(stream(done_layout))
        To ``CommandEngine.exec_done``: OK, READ_ERROR or WRITE_ERROR.
    abort : In(1)
        The engine's abort pulse: drop the command, answer nothing.
    dma_rd_cmd, dma_rd_data, dma_wr_cmd, dma_wr_data, dma_rd_done, dma_wr_done, dma_error
        The engine's ``exec_dma_*`` ports (flipped).
    feed, chunk, stochastic, saturate, seed, o, array_mac_active, mac_active
        The systolic array's ports (flipped); ``mac_active`` passes the array's count on.
    a_write, a_read_k, a_codes, b_write, b_read_k, b_codes
        The two operand scratchpads' ports (buffer 0 is used).
    out_i, out_o, out_*
        The output unit's ports.
    key_i, key_o
        The lane key hasher's ports.
    """

    def __init__(self, *, rows: int, cols: int, max_chunk: int = 4096, k_block: int = 256,
                 addr_width: int = 32, length_width: int = 20):
        if not isinstance(k_block, int) or k_block < ALIGN or k_block % ALIGN:
            raise ValueError(f"k_block must be a positive multiple of {ALIGN}, not {k_block!r}")
        self.rows, self.cols, self.max_chunk, self.k_block = rows, cols, max_chunk, k_block
        self.addr_width, self.length_width = addr_width, length_width
        command = stream.Signature(command_layout(addr_width, length_width))
        scratch_write = data.StructLayout({
            "en": 1, "buffer": 1, "k_rows": 1, "lane": signed(8), "k": range(k_block),
            "data": data.ArrayLayout(8, ALIGN)})
        super().__init__({
            "cmd": In(stream.Signature(exec_layout(addr_width))),
            "done": Out(stream.Signature(done_layout())),
            "abort": In(1),
            "dma_rd_cmd": Out(command),
            "dma_rd_data": In(stream.Signature(data.StructLayout({"data": BEAT, "last": 1}))),
            "dma_wr_cmd": Out(command),
            "dma_wr_data": Out(stream.Signature(data.StructLayout({"data": BEAT, "strb": BEAT // 8}))),
            "dma_rd_done": In(1), "dma_wr_done": In(1), "dma_error": In(DMA_ERROR_WIDTH),
            # Systolic array.
            "feed": Out(stream.Signature(feed_layout(E5M2, rows, cols), always_ready=True)),
            "chunk": Out(range(max_chunk + 1)), "stochastic": Out(1), "saturate": Out(1),
            "seed": Out(32),
            "o": In(stream.Signature(ACC, always_ready=True)).array(rows),
            "array_mac_active": In(range(rows * cols + 1)),
            "mac_active": Out(range(rows * cols + 1)),
            # Operand scratchpads.
            "a_write": Out(scratch_write), "a_read_k": Out(range(k_block)),
            "a_codes": In(data.ArrayLayout(8, rows)),
            "b_write": Out(scratch_write), "b_read_k": Out(range(k_block)),
            "b_codes": In(data.ArrayLayout(8, cols)),
            # Output unit.
            "out_i": Out(stream.Signature(data.StructLayout({"total": ACC, "c": ACC, "row_key": KEY,
                                                             "col_key": KEY}))),
            "out_o": In(stream.Signature(16)),
            "out_has_c": Out(1), "out_relu": Out(1), "out_stochastic": Out(1), "out_saturate": Out(1),
            "out_scale": Out(signed(8)), "out_format": Out(2), "out_seed": Out(32),
            # Lane key hasher.
            "key_i": Out(stream.Signature(data.StructLayout({"index": 16, "is_col": 1}))),
            "key_o": In(stream.Signature(KEY)),
        })

    def elaborate(self, platform):
        m = Module()
        R, C, KB = self.rows, self.cols, self.k_block
        aw = self.addr_width

        cmd = Signal(exec_layout(aw))
        flags = cmd.flags
        trans_a, trans_b, has_c = flags[0], flags[1], flags[2]
        assert Flag.TRANS_A == 1 and Flag.TRANS_B == 2 and Flag.HAS_C == 4
        relu, acc_sr, out_sr, ovf_inf = flags[3], flags[4], flags[5], flags[6]
        assert Flag.RELU == 8 and Flag.ACC_STOCHASTIC == 16 and Flag.OUT_STOCHASTIC == 32
        assert Flag.OVERFLOW_INF == 64
        out_format = flags[FLAG_OUT_SHIFT:FLAG_OUT_SHIFT + 2]
        fp16_out = out_format == OutFormat.FP16_169

        # Tile position and counters.
        i0, j0 = Signal(16), Signal(16)
        k0 = Signal(17)
        op = Signal()                                  # loading 0: A, 1: B
        idx = Signal(17)                               # lane or k of the current load
        beat = Signal(16)
        kk = Signal(range(KB + 1))
        hsent, hrecv = Signal(range(R + C + 1)), Signal(range(R + C + 1))
        orow = Signal(range(R + 1))
        oc_in, oc_out = Signal(range(C + 1)), Signal(range(C + 1))
        wbeat = Signal(16)
        cmd_sent = Signal()
        code = Signal(8)
        feed_pend, feed_first, feed_last = Signal(), Signal(), Signal()

        row_keys = [Signal(KEY, name=f"row_key{r}") for r in range(R)]
        col_keys = [Signal(KEY, name=f"col_key{c}") for c in range(C)]
        results = [[Signal(ACC, name=f"result{r}_{c}") for c in range(C)] for r in range(R)]
        col_count = [Signal(range(C + 1), name=f"collected{r}") for r in range(R)]
        cbuf = [Signal(ACC, name=f"c{c}") for c in range(C)]
        obuf = [Signal(16, name=f"out{c}") for c in range(C)]

        # Derived sizes.
        rows_valid, cols_valid, blen = Signal(range(R + 1)), Signal(range(C + 1)), Signal(range(KB + 1))
        m.d.comb += [rows_valid.eq(_min(cmd.m - i0, R)), cols_valid.eq(_min(cmd.n - j0, C)),
                     blen.eq(_min(cmd.k - k0, KB))]

        # Load parameters (A: op 0, B: op 1).
        lane_rows = Signal()
        m.d.comb += lane_rows.eq(Mux(op, trans_b, ~trans_a))
        first_lane = Mux(op, j0, i0)
        lane_limit = Mux(op, cmd.n, cmd.m)
        lanes = Mux(op, C, R)
        count = Signal(17)
        m.d.comb += count.eq(Mux(lane_rows, Mux(op, cols_valid, rows_valid), blen))
        span_start = Signal(17)
        m.d.comb += span_start.eq(_down8(first_lane))
        span_end = Signal(18)
        m.d.comb += span_end.eq(_round8(_min(first_lane + lanes, lane_limit)))
        load_row = Signal(17)
        m.d.comb += load_row.eq(Mux(lane_rows, first_lane + idx, k0 + idx))
        load_addr = Signal(aw)
        m.d.comb += load_addr.eq(Mux(op, cmd.addr_b, cmd.addr_a)
                                 + load_row * Mux(op, cmd.stride_b, cmd.stride_a)
                                 + Mux(lane_rows, k0, span_start))
        load_len = Signal(self.length_width)
        m.d.comb += load_len.eq(Mux(lane_rows, _round8(blen), span_end - span_start))

        # C row read and D row write.
        out_row = Signal(17)
        m.d.comb += out_row.eq(i0 + orow)
        c_start = Signal(18)
        m.d.comb += c_start.eq(_down8(j0 << 1))
        c_addr, c_len = Signal(aw), Signal(self.length_width)
        m.d.comb += [c_addr.eq(cmd.addr_c + out_row * cmd.stride_c + c_start),
                     c_len.eq(_round8((j0 + cols_valid) << 1) - c_start)]
        d_first = Signal(18)                           # byte offset of the tile's first output in the row
        m.d.comb += d_first.eq(Mux(fp16_out, j0 << 1, j0))
        d_start, d_end = Signal(18), Signal(19)
        m.d.comb += [d_start.eq(_down8(d_first)),
                     d_end.eq(_round8(Mux(fp16_out, (j0 + cols_valid) << 1, j0 + cols_valid)))]
        d_addr, d_len = Signal(aw), Signal(self.length_width)
        m.d.comb += [d_addr.eq(cmd.addr_d + out_row * cmd.stride_d + d_start), d_len.eq(d_end - d_start)]
        d_valid_bytes = Signal(range(2 * C + 1))
        m.d.comb += d_valid_bytes.eq(Mux(fp16_out, cols_valid << 1, cols_valid))

        dma_failed = self.dma_error != 0
        read_error = self.dma_error[0] == 0
        assert DmaError.READ_SLVERR % 2 == 0 and DmaError.WRITE_SLVERR % 2 == 1
        results_in = Signal()
        m.d.comb += results_in.eq(Cat(*(count_r == C for count_r in col_count)).all())

        c_rel = [Signal(signed(19), name=f"c_rel{c}") for c in range(C)]
        m.d.comb += [rel.eq(j0[:2] + c - (beat << 2)) for c, rel in enumerate(c_rel)]

        def guard(abort_only):
            """DMA errors end the command (the rest is dropped); abort drops it silently."""
            if not abort_only:
                with m.If(dma_failed):
                    m.d.sync += code.eq(Mux(read_error, ErrorCode.READ_ERROR, ErrorCode.WRITE_ERROR))
                    m.next = "DONE"
            with m.If(self.abort):
                m.next = "IDLE"

        with m.FSM(name="controller") as fsm:
            with m.State("IDLE"):
                with m.If(self.cmd.valid & ~self.abort):
                    m.d.sync += [cmd.eq(self.cmd.p), i0.eq(0), j0.eq(0)]
                    m.next = "TILE"
            with m.State("TILE"):
                m.d.sync += [hsent.eq(0), hrecv.eq(0), k0.eq(0), op.eq(0), idx.eq(0)]
                m.d.sync += [count_r.eq(0) for count_r in col_count]
                m.next = "HASH"
                guard(False)
            with m.State("HASH"):
                with m.If(self.key_i.ready & (hsent != R + C)):
                    m.d.sync += hsent.eq(hsent + 1)
                with m.If(self.key_o.valid):
                    m.d.sync += hrecv.eq(hrecv + 1)
                    for n, key in enumerate(row_keys + col_keys):
                        with m.If(hrecv == n):
                            m.d.sync += key.eq(self.key_o.payload)
                    with m.If(hrecv == R + C - 1):
                        m.next = "LOAD_CMD"
                guard(False)
            with m.State("LOAD_CMD"):
                with m.If(idx == count):
                    m.d.sync += idx.eq(0)
                    with m.If(op == 0):
                        m.d.sync += op.eq(1)
                    with m.Else():
                        m.d.sync += [op.eq(0), kk.eq(0)]
                        m.next = "FEED"
                with m.Elif(self.dma_rd_cmd.ready):
                    m.d.sync += beat.eq(0)
                    m.next = "LOAD_DATA"
                guard(False)
            with m.State("LOAD_DATA"):
                with m.If(self.dma_rd_data.valid):
                    m.d.sync += beat.eq(beat + 1)
                    with m.If(self.dma_rd_data.p.last):
                        m.d.sync += idx.eq(idx + 1)
                        m.next = "LOAD_CMD"
                guard(False)
            with m.State("FEED"):
                m.d.sync += [feed_first.eq((k0 == 0) & (kk == 0)), feed_last.eq(k0 + kk == cmd.k - 1),
                             kk.eq(kk + 1)]
                with m.If(kk == blen - 1):
                    m.d.sync += k0.eq(k0 + KB)
                    with m.If(k0 + kk == cmd.k - 1):
                        m.next = "DRAIN"
                    with m.Else():
                        m.next = "LOAD_CMD"
                guard(False)
            with m.State("DRAIN"):
                m.d.sync += orow.eq(0)
                with m.If(results_in & ~feed_pend):
                    m.next = "OUT_ROW"
                guard(False)
            with m.State("OUT_ROW"):
                m.d.sync += [oc_in.eq(0), oc_out.eq(0), wbeat.eq(0), cmd_sent.eq(0), beat.eq(0)]
                with m.If(orow == rows_valid):
                    with m.If(j0 + C >= cmd.n):
                        m.d.sync += j0.eq(0)
                        with m.If(i0 + R >= cmd.m):
                            m.d.sync += code.eq(ErrorCode.OK)
                            m.next = "DONE"
                        with m.Else():
                            m.d.sync += i0.eq(i0 + R)
                            m.next = "TILE"
                    with m.Else():
                        m.d.sync += j0.eq(j0 + C)
                        m.next = "TILE"
                with m.Elif(has_c):
                    m.next = "C_CMD"
                with m.Else():
                    m.d.sync += [c.eq(0) for c in cbuf]
                    m.next = "OUTPUT"
                guard(False)
            with m.State("C_CMD"):
                with m.If(self.dma_rd_cmd.ready):
                    m.next = "C_DATA"
                guard(False)
            with m.State("C_DATA"):
                with m.If(self.dma_rd_data.valid):
                    m.d.sync += beat.eq(beat + 1)
                    for c, rel in enumerate(c_rel):
                        with m.If((rel >= 0) & (rel < 4)):
                            m.d.sync += cbuf[c].eq(self.dma_rd_data.p.data.word_select(rel[:2], ACC))
                    with m.If(self.dma_rd_data.p.last):
                        m.next = "OUTPUT"
                guard(False)
            with m.State("OUTPUT"):
                with m.If(self.out_i.ready & (oc_in != C)):
                    m.d.sync += oc_in.eq(oc_in + 1)
                with m.If(self.out_o.valid):
                    m.d.sync += oc_out.eq(oc_out + 1)
                    for c in range(C):
                        with m.If(oc_out == c):
                            m.d.sync += obuf[c].eq(self.out_o.payload)
                    with m.If(oc_out == C - 1):
                        m.next = "WRITE"
                guard(False)
            with m.State("WRITE"):
                with m.If(self.dma_wr_cmd.ready & self.dma_wr_cmd.valid):
                    m.d.sync += cmd_sent.eq(1)
                with m.If(self.dma_wr_data.ready & self.dma_wr_data.valid):
                    m.d.sync += wbeat.eq(wbeat + 1)
                with m.If(self.dma_wr_done):
                    m.d.sync += orow.eq(orow + 1)
                    m.next = "OUT_ROW"
                guard(False)
            with m.State("DONE"):
                with m.If(self.done.ready):
                    m.next = "IDLE"
                guard(True)

        st = {}
        for name in ("IDLE", "HASH", "LOAD_CMD", "LOAD_DATA", "FEED", "C_CMD", "C_DATA", "OUTPUT",
                     "WRITE", "DONE"):
            st[name] = Signal(name=f"in_{name.lower()}")
            m.d.comb += st[name].eq(fsm.ongoing(name))

        # Results: row r's PEs arrive on o[r] in column order.
        for r in range(R):
            with m.If(self.o[r].valid & (col_count[r] != C)):
                m.d.sync += col_count[r].eq(col_count[r] + 1)
                for c in range(C):
                    with m.If(col_count[r] == c):
                        m.d.sync += results[r][c].eq(self.o[r].payload)

        # Feed: scratch read in the FEED cycle, the beat the cycle after.
        m.d.sync += feed_pend.eq(st["FEED"] & ~self.abort)
        feed = self.feed.p
        m.d.comb += [self.a_read_k.eq(kk[:len(self.a_read_k)]), self.b_read_k.eq(kk[:len(self.b_read_k)]),
                     self.feed.valid.eq(feed_pend), feed.first.eq(feed_first), feed.last.eq(feed_last)]
        m.d.comb += [feed.a[r].as_value().eq(self.a_codes[r]) for r in range(R)]
        m.d.comb += [feed.b[c].as_value().eq(self.b_codes[c]) for c in range(C)]
        m.d.comb += [feed.row_key[r].eq(row_keys[r]) for r in range(R)]
        m.d.comb += [feed.col_key[c].eq(col_keys[c]) for c in range(C)]
        m.d.comb += [self.chunk.eq(cmd.chunk), self.stochastic.eq(acc_sr), self.saturate.eq(~ovf_inf),
                     self.seed.eq(cmd.seed), self.mac_active.eq(self.array_mac_active)]

        # Scratch writes from the load beats.
        rd = self.dma_rd_data
        lane = Signal(signed(8))
        m.d.comb += lane.eq(Mux(lane_rows, idx, span_start - first_lane + (beat << 3)))
        for port, which in ((self.a_write, 0), (self.b_write, 1)):
            m.d.comb += [port.en.eq(st["LOAD_DATA"] & rd.valid & (op == which)), port.buffer.eq(0),
                         port.k_rows.eq(~lane_rows), port.lane.eq(lane),
                         port.k.eq(Mux(lane_rows, beat << 3, idx)[:len(port.k)]),
                         port.data.as_value().eq(rd.p.data)]

        # DMA commands and data.
        m.d.comb += [
            self.dma_rd_cmd.valid.eq((st["LOAD_CMD"] & (idx != count)) | st["C_CMD"]),
            self.dma_rd_cmd.p.addr.eq(Mux(st["C_CMD"], c_addr, load_addr)),
            self.dma_rd_cmd.p.length.eq(Mux(st["C_CMD"], c_len, load_len)),
            rd.ready.eq(st["LOAD_DATA"] | st["C_DATA"]),
            self.dma_wr_cmd.valid.eq(st["WRITE"] & ~cmd_sent & ~dma_failed),
            self.dma_wr_cmd.p.addr.eq(d_addr),
            self.dma_wr_cmd.p.length.eq(d_len),
        ]
        # D beats: byte y of beat w is byte (d_start + 8 w + y - d_first) of the row's results.
        packed = Signal(16 * C)
        m.d.comb += packed.eq(Mux(fp16_out, Cat(*obuf), Cat(*(code_c[:8] for code_c in obuf))))
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
        m.d.comb += [
            self.dma_wr_data.valid.eq(st["WRITE"] & (wbeat < (d_len >> 3)) & ~dma_failed),
            self.dma_wr_data.p.data.eq(Cat(*wdata)),
            self.dma_wr_data.p.strb.eq(Cat(*wstrb)),
        ]

        # Lane keys.
        m.d.comb += [
            self.key_i.valid.eq(st["HASH"] & (hsent != R + C)),
            self.key_i.p.index.eq(Mux(hsent < R, i0 + hsent, j0 + hsent - R)),
            self.key_i.p.is_col.eq(hsent >= R),
            self.key_o.ready.eq(1),
        ]

        # Output unit.
        total = Signal(ACC)
        c_value = Signal(ACC)
        row_key, col_key = Signal(KEY), Signal(KEY)
        flat_results = Cat(*(results[r][c] for r in range(R) for c in range(C)))
        flat_c = Cat(*cbuf)
        flat_row_keys, flat_col_keys = Cat(*row_keys), Cat(*col_keys)
        m.d.comb += [
            total.eq(flat_results.word_select(orow * C + oc_in, ACC)),
            c_value.eq(flat_c.word_select(oc_in, ACC)),
            row_key.eq(flat_row_keys.word_select(orow, KEY)),
            col_key.eq(flat_col_keys.word_select(oc_in, KEY)),
            self.out_i.valid.eq(st["OUTPUT"] & (oc_in != C)),
            self.out_i.p.total.eq(total), self.out_i.p.c.eq(c_value),
            self.out_i.p.row_key.eq(row_key), self.out_i.p.col_key.eq(col_key),
            self.out_o.ready.eq(1),
            self.out_has_c.eq(has_c), self.out_relu.eq(relu), self.out_stochastic.eq(out_sr),
            self.out_saturate.eq(~ovf_inf), self.out_scale.eq(cmd.scale), self.out_format.eq(out_format),
            self.out_seed.eq(cmd.seed),
        ]

        # Engine handshakes.
        m.d.comb += [self.cmd.ready.eq(st["IDLE"] & ~self.abort),
                     self.done.valid.eq(st["DONE"] & ~self.abort), self.done.p.code.eq(code)]
        return m
