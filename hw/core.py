"""The accelerator: command engine, tile controller, systolic array, operand scratchpads, output unit
and lane key hasher (DESIGN.md §3-4). Its host interface is the engine's: ``s_axil``, ``m_axi``,
``irq``."""

from amaranth.hdl import Module
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from fp8train.hw.arith.lane_keys import LaneKeyHasher
from fp8train.hw.arith.output import OutputUnit
from fp8train.hw.array.scratch import OperandScratch
from fp8train.hw.array.systolic import SystolicArray
from fp8train.hw.bus.axi import AxiLiteSignature, AxiSignature
from fp8train.hw.controller import TileController
from fp8train.hw.engine import BEAT, WORD, CommandEngine

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

    Members
    -------
    s_axil : In(AxiLiteSignature(addr_width=12, data_width=32))
    m_axi : Out(AxiSignature(addr_width=32, data_width=64))
    irq : Out(1)
    """

    def __init__(self, *, rows: int, cols: int, rbits: int = 8, max_chunk: int = 4096, k_block: int = 256):
        if isinstance(k_block, bool) or not isinstance(k_block, int) or k_block < 8 or k_block % 8:
            raise ValueError(f"k_block must be a positive multiple of 8, not {k_block!r}")
        self.rows, self.cols, self.rbits = rows, cols, rbits
        self.max_chunk, self.k_block = max_chunk, k_block
        self.engine = CommandEngine(rows=rows, cols=cols, rbits=rbits, max_chunk=max_chunk)
        self.controller = TileController(rows=rows, cols=cols, max_chunk=max_chunk, k_block=k_block,
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
        m.submodules.array = array = SystolicArray(rows=self.rows, cols=self.cols, rbits=self.rbits,
                                                   max_chunk=self.max_chunk)
        m.submodules.scratch_a = scratch_a = OperandScratch(lanes=self.rows, depth=self.k_block)
        m.submodules.scratch_b = scratch_b = OperandScratch(lanes=self.cols, depth=self.k_block)
        m.submodules.output = output = OutputUnit(rbits=self.rbits)
        m.submodules.keys = keys = LaneKeyHasher()

        wiring.connect(m, wiring.flipped(self.s_axil), engine.s_axil)
        wiring.connect(m, engine.m_axi, wiring.flipped(self.m_axi))
        m.d.comb += self.irq.eq(engine.irq)

        # Engine <-> controller.
        wiring.connect(m, engine.exec_cmd, ctl.cmd)
        wiring.connect(m, ctl.done, engine.exec_done)
        wiring.connect(m, ctl.dma_rd_cmd, engine.exec_dma_rd_cmd)
        wiring.connect(m, engine.exec_dma_rd_data, ctl.dma_rd_data)
        wiring.connect(m, ctl.dma_wr_cmd, engine.exec_dma_wr_cmd)
        wiring.connect(m, ctl.dma_wr_data, engine.exec_dma_wr_data)
        m.d.comb += [ctl.dma_rd_done.eq(engine.exec_dma_rd_done), ctl.dma_wr_done.eq(engine.exec_dma_wr_done),
                     ctl.dma_error.eq(engine.exec_dma_error), ctl.abort.eq(engine.abort),
                     engine.mac_active.eq(ctl.mac_active)]

        # Controller <-> array.
        wiring.connect(m, ctl.feed, array.feed)
        for r in range(self.rows):
            wiring.connect(m, array.o[r], ctl.o[r])
        m.d.comb += [array.chunk.eq(ctl.chunk), array.stochastic.eq(ctl.stochastic),
                     array.saturate.eq(ctl.saturate), array.seed.eq(ctl.seed),
                     ctl.array_mac_active.eq(array.mac_active)]

        # Controller <-> scratchpads.
        for scratch, prefix in ((scratch_a, "a"), (scratch_b, "b")):
            m.d.comb += [scratch.write.eq(getattr(ctl, f"{prefix}_write")), scratch.read_buffer.eq(0),
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
        return m
