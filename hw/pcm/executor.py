"""The PCM tile behind the command ring: PCM_PROGRAM, PCM_MVM and PCM_TIME through the DMA (DESIGN.md §4, §6).

Golden counterpart: :func:`fp8train.sim.golden.device.run_pcm` (descriptor formats in
:class:`fp8train.protocol.Descriptor`). The executor moves int16 operand rows from the DMA into
:class:`~fp8train.hw.pcm.tile.PcmTileUnit`, one row at a time, and the tile's outputs back as int32 rows.
It is sequential on purpose: the tile takes ``2 slices`` cycles per weight of an MVM, so the DMA is never
the bottleneck, and with at most one DMA command in flight an error or abort has nothing to unwind but
the tile, which is reset (left unprogrammed, as the protocol states).
"""

from amaranth.hdl import Cat, Const, Module, Mux, ResetInserter, Signal, signed
from amaranth.lib import wiring

from fp8train.hw.engine import BEAT, exec_layout, executor_members
from fp8train.protocol import ALIGN, ErrorCode, Opcode
from fp8train.sim.golden.device import PCM_OUT_BITS, check_pcm_tile
from fp8train.sim.golden.pcm import PcmConfig, PcmError, PcmOp

from .tile import PcmTileUnit

__all__ = ["PcmExecutor"]

#: Bits of an operand (weight or DAC code) in memory, and operands per bus beat.
OPERAND_BITS = 16
LANES = BEAT // OPERAND_BITS


class PcmExecutor(wiring.Component):
    """The command engine's executor for the PCM opcodes, around one :class:`PcmTileUnit`.

    Parameters
    ----------
    config : PcmConfig
        The tile (``sim.golden.device.check_pcm_tile``: outputs fit int32).
    addr_width, length_width : int
        The engine's DMA command widths.

    Members
    -------
    The ports of :func:`fp8train.hw.engine.executor_members` (see ``CommandEngine``'s ``exec_*``).

    Per command: the tile command (PROGRAM with ``seed``, MVM with ADC shift ``chunk``, TIME with step
    ``k``); for PROGRAM the ``m`` weight rows at ``addr_a`` (``stride_a``), each read by one DMA command
    once the tile takes operands; for MVM, per vector: the tile command, its row of DAC codes, then one
    DMA write of its int32 outputs (two per beat, the last beat strobed to the row) that completes before
    the next vector. Every operand is range-checked on its way to the tile (BAD_OPERAND). A tile answer
    ``NOT_PROGRAMMED`` ends the command with that code before any data moves. A DMA error, a bad operand
    or ``abort`` while busy resets the tile; the command ends with READ_ERROR / WRITE_ERROR / BAD_OPERAND
    (after dropping the rest of the row being read), or silently after ``abort``.
    """

    def __init__(self, config: PcmConfig, *, addr_width: int = 32, length_width: int = 20):
        check_pcm_tile(config)
        if max(config.rows, config.cols) * PCM_OUT_BITS // 8 + ALIGN >= 1 << length_width:
            raise ValueError(f"length_width must hold a row of the {config.rows}x{config.cols} tile, "
                             f"not {length_width!r}")
        self.config, self.addr_width, self.length_width = config, addr_width, length_width
        self.tile = PcmTileUnit(config)
        super().__init__(executor_members(addr_width, length_width))

    def elaborate(self, platform):
        m = Module()
        c = self.config
        flush, failed = Signal(), Signal()            # reset the tile; a DMA error or a bad operand
        m.submodules.tile = tile = ResetInserter(flush)(self.tile)

        cmd = Signal(exec_layout(self.addr_width))
        program, mvm = cmd.opcode == Opcode.PCM_PROGRAM, cmd.opcode == Opcode.PCM_MVM
        code = Signal.like(self.done.p.code)
        row = Signal.like(cmd.m)                       # weight row or vector
        row_addr, out_addr = Signal(self.addr_width), Signal(self.addr_width)
        row_len = Mux(program, cmd.n, cmd.k[:len(cmd.n)])
        issued = Signal()                              # this row's DMA command is taken
        beat, have, last_seen = Signal(BEAT), Signal(), Signal()
        lane = Signal(range(LANES))
        elem = Signal.like(cmd.n)                      # operands of the row sent, or results taken
        low, high = Signal(signed(PCM_OUT_BITS)), Signal(signed(PCM_OUT_BITS))
        half, pair, out_valid, out_last, written = Signal(), Signal(), Signal(), Signal(), Signal()

        operand = Signal(signed(OPERAND_BITS))
        limit = Mux(program, c.w_max, c.x_max)
        in_range = (operand <= limit) & (operand >= -limit)
        tile_code = Mux(tile.done.p == PcmError.NOT_PROGRAMMED, ErrorCode.NOT_PROGRAMMED,
                        Mux(tile.done.p == PcmError.OK, ErrorCode.OK, ErrorCode.BAD_DIMENSION))
        dma_failed = self.dma_error != 0
        dma_code = Mux(self.dma_error[0], ErrorCode.WRITE_ERROR, ErrorCode.READ_ERROR)
        m.d.comb += operand.eq(beat.word_select(lane, OPERAND_BITS))

        def guard(dma=True):
            """A DMA error ends the command with its code (and resets the tile); abort drops it."""
            if dma:
                with m.If(dma_failed):
                    m.d.sync += code.eq(dma_code)
                    m.d.comb += failed.eq(1)
                    m.next = "DONE"
            with m.If(self.abort):
                m.next = "IDLE"

        with m.FSM(name="pcm") as fsm:
            with m.State("IDLE"):
                with m.If(self.cmd.valid & ~self.abort):
                    p = self.cmd.p
                    m.d.sync += [cmd.eq(p), row.eq(0), row_addr.eq(p.addr_a), out_addr.eq(p.addr_d),
                                 code.eq(ErrorCode.OK)]
                    m.next = "TILE_CMD"
            with m.State("TILE_CMD"):
                m.d.sync += [issued.eq(0), have.eq(0), last_seen.eq(0), lane.eq(0), elem.eq(0), half.eq(0),
                             out_valid.eq(0), written.eq(0)]
                with m.If(tile.cmd.ready):
                    m.next = "WAIT_TILE"
                guard(dma=False)
            with m.State("WAIT_TILE"):                 # operands wanted, or an answer (TIME, errors)
                with m.If(tile.done.valid):
                    m.d.sync += code.eq(tile_code)
                    m.next = "DONE"
                with m.Elif(tile.operand.ready):
                    m.next = "READ"
                guard(dma=False)
            with m.State("READ"):
                with m.If(self.dma_rd_cmd.valid & self.dma_rd_cmd.ready):
                    m.d.sync += issued.eq(1)
                with m.If(self.dma_rd_data.valid & self.dma_rd_data.ready):
                    m.d.sync += [beat.eq(self.dma_rd_data.p.data), have.eq(1), lane.eq(0),
                                 last_seen.eq(self.dma_rd_data.p.last)]
                with m.If(have & ~in_range):
                    m.d.sync += code.eq(ErrorCode.BAD_OPERAND)
                    m.d.comb += failed.eq(1)
                    m.next = "DRAIN"
                with m.Elif(have & tile.operand.ready):
                    m.d.sync += [elem.eq(elem + 1), lane.eq(lane + 1)]
                    with m.If((lane == LANES - 1) | (elem == row_len - 1)):
                        m.d.sync += have.eq(0)
                    with m.If(elem == row_len - 1):
                        m.d.sync += [row.eq(row + 1), row_addr.eq(row_addr + cmd.stride_a), issued.eq(0),
                                     elem.eq(0)]
                        with m.If(mvm):
                            m.next = "RESULTS"
                        with m.Elif(row == cmd.m - 1):
                            m.next = "WAIT_TILE"
                guard()
            with m.State("DRAIN"):                     # the rest of the row after a bad operand
                with m.If(last_seen | (self.dma_rd_data.valid & self.dma_rd_data.p.last) | dma_failed):
                    m.next = "DONE"
                guard(dma=False)
            with m.State("RESULTS"):
                with m.If(self.dma_wr_cmd.valid & self.dma_wr_cmd.ready):
                    m.d.sync += issued.eq(1)
                with m.If(tile.result.valid & tile.result.ready):
                    m.d.sync += [elem.eq(elem + 1), half.eq(~half), out_last.eq(elem == cmd.n - 1)]
                    with m.If(half):
                        m.d.sync += [high.eq(tile.result.p), pair.eq(1), out_valid.eq(1)]
                    with m.Else():
                        m.d.sync += [low.eq(tile.result.p), pair.eq(0), out_valid.eq(elem == cmd.n - 1)]
                with m.If(self.dma_wr_data.valid & self.dma_wr_data.ready):
                    m.d.sync += out_valid.eq(0)
                    with m.If(out_last):
                        m.next = "WRITTEN"
                guard()
            with m.State("WRITTEN"):                   # the tile's answer and the write's response
                with m.If(tile.done.valid & tile.done.ready):
                    m.d.sync += [out_addr.eq(out_addr + cmd.stride_d), code.eq(tile_code)]
                    m.next = "NEXT"
                guard()
            with m.State("NEXT"):
                with m.If(row == cmd.m):
                    m.next = "DONE"
                with m.Else():
                    m.next = "TILE_CMD"
                guard(dma=False)
            with m.State("DONE"):
                with m.If(self.done.ready):
                    m.next = "IDLE"
                guard(dma=False)
        with m.If(self.dma_wr_done):
            m.d.sync += written.eq(1)

        state = {name: Signal(name=f"in_{name.lower()}")
                 for name in ("IDLE", "TILE_CMD", "WAIT_TILE", "READ", "DRAIN", "RESULTS", "WRITTEN", "DONE")}
        for name, sig in state.items():
            m.d.comb += sig.eq(fsm.ongoing(name))
        arg = Mux(program, cmd.seed, Mux(mvm, cmd.chunk, cmd.k))
        op = Mux(program, PcmOp.PROGRAM, Mux(mvm, PcmOp.MVM, PcmOp.TIME))
        row_bytes = ((row_len + LANES - 1) >> (LANES - 1).bit_length()) << (ALIGN - 1).bit_length()
        out_bytes = ((cmd.n + 1) >> 1) << (ALIGN - 1).bit_length()
        m.d.comb += [
            flush.eq(failed | (self.abort & ~state["IDLE"])),
            self.cmd.ready.eq(state["IDLE"] & ~self.abort),
            tile.cmd.valid.eq(state["TILE_CMD"]), tile.cmd.p.op.eq(op), tile.cmd.p.arg.eq(arg),
            tile.operand.valid.eq(state["READ"] & have & in_range), tile.operand.p.eq(operand),
            tile.result.ready.eq(state["RESULTS"] & ~out_valid),
            tile.done.ready.eq(state["WAIT_TILE"] | (state["WRITTEN"] & (written | self.dma_wr_done))),
            self.dma_rd_cmd.valid.eq(state["READ"] & ~issued & ~dma_failed),
            self.dma_rd_cmd.p.addr.eq(row_addr), self.dma_rd_cmd.p.length.eq(row_bytes),
            self.dma_rd_data.ready.eq((state["READ"] & ~have) | state["DRAIN"]),
            self.dma_wr_cmd.valid.eq(state["RESULTS"] & ~issued & ~dma_failed),
            self.dma_wr_cmd.p.addr.eq(out_addr), self.dma_wr_cmd.p.length.eq(out_bytes),
            self.dma_wr_data.valid.eq(state["RESULTS"] & out_valid & issued),
            self.dma_wr_data.p.data.eq(Cat(low, Mux(pair, high, 0))),
            self.dma_wr_data.p.strb.eq(Mux(pair, Const(0xFF, BEAT // 8), Const(0x0F, BEAT // 8))),
            self.done.valid.eq(state["DONE"] & ~self.abort), self.done.p.code.eq(code),
        ]
        return m
