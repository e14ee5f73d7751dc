"""The accelerator: command engine, tile controller, systolic array, operand scratchpads, output unit,
lane key hashers and the weight-update executor (DESIGN.md §3-4). Its host interface is the engine's: ``s_axil``, ``m_axi``,
``irq``."""

from amaranth.hdl import Module, Mux, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from fp8train.hw.arith.lane_keys import LaneKeyHasher
from fp8train.hw.arith.output import OutputUnit
from fp8train.hw.array.scratch import OperandScratch
from fp8train.hw.array.systolic import SystolicArray
from fp8train.hw.bus.axi import AxiLiteSignature, AxiSignature
from fp8train.hw.controller import TileController
from fp8train.hw.engine import BEAT, WORD, CommandEngine
from fp8train.hw.update import UpdateExecutor

__all__ = ["Accelerator"]


class Accelerator(wiring.Component):
    """The whole device as its host sees it; behaves as golden ``GoldenDevice``.

    Parameters
    ----------
    rows, cols : int
        Systolic array size (1 to 32 each).
    rbits : int
        Random bits per stochastic rounding.
    max_chunk : int
        Largest descriptor ``chunk``.
    k_block : int
        k values per operand scratchpad block (a multiple of 8).
    a_slots : int
        Row tiles the A scratchpad holds per buffer (``TileController``'s A panel).

    Members
    -------
    s_axil : In(AxiLiteSignature(addr_width=12, data_width=32))
    m_axi : Out(AxiSignature(addr_width=32, data_width=64))
    irq : Out(1)
    """

    def __init__(self, *, rows: int, cols: int, rbits: int = 8, max_chunk: int = 4096, k_block: int = 256,
                 a_slots: int = 4):
        if isinstance(k_block, bool) or not isinstance(k_block, int) or k_block < 8 or k_block % 8:
            raise ValueError(f"k_block must be a positive multiple of 8, not {k_block!r}")
        self.rows, self.cols, self.rbits = rows, cols, rbits
        self.max_chunk, self.k_block, self.a_slots = max_chunk, k_block, a_slots
        self.engine = CommandEngine(rows=rows, cols=cols, rbits=rbits, max_chunk=max_chunk)
        self.controller = TileController(rows=rows, cols=cols, max_chunk=max_chunk, k_block=k_block,
                                         a_slots=a_slots,
                                         addr_width=self.engine.addr_width,
                                         length_width=self.engine.dma.length_width)
        super().__init__({
            "s_axil": In(AxiLiteSignature(addr_width=12, data_width=WORD)),
            "m_axi": Out(AxiSignature(addr_width=self.engine.addr_width, data_width=BEAT)),
            "irq": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        m.submodules.engine = engine = self.engine
        m.submodules.controller = ctl = self.controller
        array = SystolicArray(rows=self.rows, cols=self.cols, rbits=self.rbits, max_chunk=self.max_chunk)
        m.submodules.array = array
        m.submodules.scratch_a = scratch_a = OperandScratch(lanes=self.rows, depth=self.a_slots * self.k_block)
        m.submodules.scratch_b = scratch_b = OperandScratch(lanes=self.cols, depth=self.k_block)
        m.submodules.output = output = OutputUnit(rbits=self.rbits)
        m.submodules.keys = keys = LaneKeyHasher()
        m.submodules.output_keys = output_keys = LaneKeyHasher()
        m.submodules.update = update = UpdateExecutor(rbits=self.rbits, addr_width=self.engine.addr_width,
                                                      length_width=self.engine.dma.length_width)

        wiring.connect(m, wiring.flipped(self.s_axil), engine.s_axil)
        wiring.connect(m, engine.m_axi, wiring.flipped(self.m_axi))
        m.d.comb += self.irq.eq(engine.irq)

        # Engine <-> executors: the tile controller (GEMM) and the update executor (UPDATE) take turns;
        # the one named by the last exec_cmd owns the DMA ports and answers exec_done.
        m.d.comb += engine.mac_active.eq(ctl.mac_active)
        executors = (ctl, update)
        to_update = Signal()
        with m.If(engine.exec_cmd.valid & engine.exec_cmd.ready):
            m.d.sync += to_update.eq(engine.exec_cmd.p.update)
        cmd = engine.exec_cmd
        m.d.comb += [ctl.cmd.p.eq(cmd.p), update.cmd.p.eq(cmd.p),
                     ctl.cmd.valid.eq(cmd.valid & ~cmd.p.update), update.cmd.valid.eq(cmd.valid & cmd.p.update),
                     cmd.ready.eq(Mux(cmd.p.update, update.cmd.ready, ctl.cmd.ready))]
        for name in ("done", "dma_rd_cmd", "dma_wr_cmd", "dma_wr_data"):            # executor -> engine
            source = Mux(to_update, getattr(update, name).p.as_value(), getattr(ctl, name).p.as_value())
            sink = engine.exec_done if name == "done" else getattr(engine, f"exec_{name}")
            m.d.comb += [sink.p.eq(source),
                         sink.valid.eq(Mux(to_update, getattr(update, name).valid, getattr(ctl, name).valid))]
            for index, executor in enumerate(executors):
                m.d.comb += getattr(executor, name).ready.eq(sink.ready & (to_update == index))
        rd_data = engine.exec_dma_rd_data
        m.d.comb += rd_data.ready.eq(Mux(to_update, update.dma_rd_data.ready, ctl.dma_rd_data.ready))
        for index, executor in enumerate(executors):
            m.d.comb += [executor.dma_rd_data.p.eq(rd_data.p),
                         executor.dma_rd_data.valid.eq(rd_data.valid & (to_update == index)),
                         executor.dma_rd_done.eq(engine.exec_dma_rd_done & (to_update == index)),
                         executor.dma_wr_done.eq(engine.exec_dma_wr_done & (to_update == index)),
                         executor.dma_error.eq(Mux(to_update == index, engine.exec_dma_error, 0)),
                         executor.abort.eq(engine.abort)]

        # Controller <-> array.
        wiring.connect(m, ctl.feed, array.feed)
        for r in range(self.rows):
            wiring.connect(m, array.o[r], ctl.o[r])
        m.d.comb += [array.chunk.eq(ctl.chunk), array.stochastic.eq(ctl.stochastic),
                     array.saturate.eq(ctl.saturate), array.seed.eq(ctl.seed),
                     ctl.array_mac_active.eq(array.mac_active)]

        # Controller <-> scratchpads.
        for scratch, prefix in ((scratch_a, "a"), (scratch_b, "b")):
            m.d.comb += [scratch.write.eq(getattr(ctl, f"{prefix}_write")),
                         scratch.read_buffer.eq(getattr(ctl, f"{prefix}_read_buffer")),
                         scratch.read_k.eq(getattr(ctl, f"{prefix}_read_k")),
                         getattr(ctl, f"{prefix}_codes").eq(scratch.codes)]

        # Controller <-> output unit and key hasher.
        wiring.connect(m, ctl.out_i, output.i)
        wiring.connect(m, output.o, ctl.out_o)
        m.d.comb += [output.has_c.eq(ctl.out_has_c), output.relu.eq(ctl.out_relu),
                     output.stochastic.eq(ctl.out_stochastic), output.saturate.eq(ctl.out_saturate),
                     output.scale.eq(ctl.out_scale), output.out_format.eq(ctl.out_format),
                     output.seed.eq(ctl.out_seed)]
        wiring.connect(m, ctl.key_i, keys.i)
        wiring.connect(m, keys.o, ctl.key_o)
        wiring.connect(m, ctl.wkey_i, output_keys.i)
        wiring.connect(m, output_keys.o, ctl.wkey_o)
        return m
