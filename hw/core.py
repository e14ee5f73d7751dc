"""The accelerator: command engine, tile controller, systolic array, operand scratchpads, output unit and
lane key hashers (or, on the smallest FPGAs, the serial GEMM executor in place of the last five), optionally
the weight-update executor and the PCM tile's executor (DESIGN.md §3-4, §6). Its host interface is the
engine's: ``s_axil``, ``m_axi``, ``irq``."""

from amaranth.hdl import Module, Mux, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from fp8train.hw.arith.lane_keys import LaneKeyHasher
from fp8train.hw.arith.output import OutputUnit
from fp8train.hw.array.scratch import OperandScratch
from fp8train.hw.array.systolic import SystolicArray
from fp8train.hw.bus.axi import AxiLiteSignature, AxiSignature
from fp8train.hw.controller import TileController
from fp8train.hw.engine import BEAT, WORD, CommandEngine, executor_members
from fp8train.hw.pcm.executor import PcmExecutor
from fp8train.hw.serial_gemm import SerialGemm
from fp8train.hw.update import UpdateExecutor
from fp8train.protocol import PCM_OPCODES, Opcode
from fp8train.sim.golden.device import check_pcm_tile
from fp8train.sim.golden.pcm import PcmConfig

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
    update_lanes : int
        Elements per cycle of the weight-update datapath (4, 2 or 1: :class:`~fp8train.hw.update.UpdateUnit`),
        an area knob for small FPGAs; results do not depend on it. 0: no update executor, UPDATE completes
        BAD_OPCODE (``CONFIG_OPCODES`` says so): the iCE40 UP5K's configuration.
    serial_keys : bool
        Lane-key hashers on one 16 x 16 multiplier each instead of nine (:class:`~fp8train.hw.arith.lane_keys.
        LaneKeyHasher` ``serial``): 2 DSP blocks instead of 18 on an iCE40, a tile starts a few cycles later.
    pcm : PcmConfig or None
        The PCM tile behind PCM_PROGRAM / PCM_MVM / PCM_TIME (:class:`~fp8train.hw.pcm.executor.PcmExecutor`),
        or None: no tile, the PCM opcodes complete BAD_OPCODE.
    compact : bool
        The least logic, at any speed, for the smallest FPGAs (the iCE40 UP5K): one adder computing the
        GEMM output by output (:class:`~fp8train.hw.serial_gemm.SerialGemm`) instead of the systolic array
        and its tile controller, with its pointers in the engine's descriptor buffer
        (``CommandEngine(pointer_ring=True)``), the engine's single-transaction DMA
        (``serial_dma=True``) and 48-bit performance counters (``counter_width=48``, wrapping after
        1.5 years at 6 MHz); needs ``rows = cols = 1``. ``k_block``, ``a_slots`` and
        ``serial_keys`` are then unused (its one key hasher is serial).

    Members
    -------
    s_axil : In(AxiLiteSignature(addr_width=12, data_width=32))
    m_axi : Out(AxiSignature(addr_width=32, data_width=64))
    irq : Out(1)
    """

    def __init__(self, *, rows: int, cols: int, rbits: int = 8, max_chunk: int = 4096, k_block: int = 256,
                 a_slots: int = 4, update_lanes: int = 4, serial_keys: bool = False, pcm: PcmConfig | None = None,
                 compact: bool = False):
        if isinstance(k_block, bool) or not isinstance(k_block, int) or k_block < 8 or k_block % 8:
            raise ValueError(f"k_block must be a positive multiple of 8, not {k_block!r}")
        self.rows, self.cols, self.rbits = rows, cols, rbits
        self.max_chunk, self.k_block, self.a_slots = max_chunk, k_block, a_slots
        if type(update_lanes) is not int or update_lanes not in (0, 1, 2, 4):
            raise ValueError(f"update_lanes must be 0, 1, 2 or 4, not {update_lanes!r}")
        self.update_lanes = update_lanes
        if not isinstance(serial_keys, bool):
            raise TypeError(f"serial_keys must be True or False, not {serial_keys!r}")
        self.serial_keys = serial_keys
        if not isinstance(compact, bool):
            raise TypeError(f"compact must be True or False, not {compact!r}")
        if compact and (rows, cols) != (1, 1):
            raise ValueError(f"compact needs rows = cols = 1, not {rows} x {cols}")
        self.compact = compact
        if pcm is not None:
            check_pcm_tile(pcm)
        self.pcm = pcm
        self.engine = CommandEngine(rows=rows, cols=cols, rbits=rbits, max_chunk=max_chunk, pcm=pcm,
                                    update=update_lanes != 0, serial_dma=compact, pointer_ring=compact,
                                    counter_width=48 if compact else 64)
        widths = dict(addr_width=self.engine.addr_width, length_width=self.engine.dma.length_width)
        if compact:
            self.controller = SerialGemm(rbits=rbits, max_chunk=max_chunk, **widths)
        else:
            self.controller = TileController(rows=rows, cols=cols, max_chunk=max_chunk, k_block=k_block,
                                             a_slots=a_slots, **widths)
        super().__init__({
            "s_axil": In(AxiLiteSignature(addr_width=12, data_width=WORD)),
            "m_axi": Out(AxiSignature(addr_width=self.engine.addr_width, data_width=BEAT)),
            "irq": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        m.submodules.engine = engine = self.engine
        m.submodules.controller = ctl = self.controller
        if not self.compact:
            self._tile_datapath(m, ctl)

        wiring.connect(m, wiring.flipped(self.s_axil), engine.s_axil)
        wiring.connect(m, engine.m_axi, wiring.flipped(self.m_axi))
        m.d.comb += self.irq.eq(engine.irq)

        # Engine <-> executors, each owning a set of opcodes: the one named by the last exec_cmd owns the
        # DMA ports and answers exec_done; abort goes to all (an idle executor ignores it).
        m.d.comb += engine.mac_active.eq(ctl.mac_active)
        if self.compact:
            m.d.comb += [engine.exec_ring_turn.eq(ctl.ring_turn), engine.exec_ring_tail.eq(ctl.ring_tail)]
        executors = [(ctl, {Opcode.GEMM})]
        if self.update_lanes:
            m.submodules.update = update = UpdateExecutor(rbits=self.rbits, addr_width=self.engine.addr_width,
                                                          length_width=self.engine.dma.length_width,
                                                          lanes=self.update_lanes)
            executors.append((update, {Opcode.UPDATE}))
        if self.pcm is not None:
            m.submodules.pcm = pcm = PcmExecutor(self.pcm, addr_width=self.engine.addr_width,
                                                 length_width=self.engine.dma.length_width)
            executors.append((pcm, PCM_OPCODES))
        cmd = engine.exec_cmd
        picks = []
        for index, (executor, opcodes) in enumerate(executors):
            pick = Signal(name=f"pick_{index}")
            m.d.comb += pick.eq(sum(cmd.p.opcode == op for op in opcodes) != 0)
            picks.append(pick)
        owner = Signal(range(max(len(executors), 2)))
        ready = 0
        for index, ((executor, _), pick) in enumerate(zip(executors, picks)):
            m.d.comb += [executor.cmd.p.eq(cmd.p), executor.cmd.valid.eq(cmd.valid & pick)]
            ready = ready | (pick & executor.cmd.ready)
            with m.If(cmd.valid & cmd.ready & pick):
                m.d.sync += owner.eq(index)
        m.d.comb += cmd.ready.eq(ready)
        members = executor_members(self.engine.addr_width, self.engine.dma.length_width)
        for name, member in members.items():
            if name == "cmd":
                continue
            port = engine.abort if name == "abort" else getattr(engine, f"exec_{name}")
            ports = [getattr(executor, name) for executor, _ in executors]
            if name == "abort":
                m.d.comb += [p.eq(port) for p in ports]
            elif not member.is_signature:                 # the DMA's pulses and error: the owner's
                m.d.comb += [p.eq(Mux(owner == index, port, 0)) for index, p in enumerate(ports)]
            elif member.flow == Out:                      # executor -> engine streams
                assert isinstance(member.signature, stream.Signature)
                payload, valid = ports[0].p.as_value(), ports[0].valid
                for index, p in enumerate(ports[1:], 1):
                    payload = Mux(owner == index, p.p.as_value(), payload)
                    valid = Mux(owner == index, p.valid, valid)
                m.d.comb += [port.p.eq(payload), port.valid.eq(valid)]
                m.d.comb += [p.ready.eq(port.ready & (owner == index)) for index, p in enumerate(ports)]
            else:                                         # engine -> executor: the DMA's read data
                ready = 0
                for index, p in enumerate(ports):
                    m.d.comb += [p.p.eq(port.p), p.valid.eq(port.valid & (owner == index))]
                    ready = ready | (p.ready & (owner == index))
                m.d.comb += port.ready.eq(ready)

        return m

    def _tile_datapath(self, m, ctl):
        """The tile controller's systolic array, operand scratchpads, output unit and key hashers."""
        m.submodules.array = array = SystolicArray(rows=self.rows, cols=self.cols, rbits=self.rbits,
                                                   max_chunk=self.max_chunk)
        m.submodules.scratch_a = scratch_a = OperandScratch(lanes=self.rows, depth=self.a_slots * self.k_block)
        m.submodules.scratch_b = scratch_b = OperandScratch(lanes=self.cols, depth=self.k_block)
        m.submodules.output = output = OutputUnit(rbits=self.rbits)
        m.submodules.keys = keys = LaneKeyHasher(serial=self.serial_keys)
        m.submodules.output_keys = output_keys = LaneKeyHasher(serial=self.serial_keys)

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
