"""Registry of the gateware units and their conversion to Verilog.

``fp8train verilog``, the lint test and the RTL benches all go through :func:`to_verilog`, so every
consumer sees the same top-level port names (``<port>__<member>``, but ``<port>_<member>`` inside the AXI
signatures of ``hw.bus.axi``: DESIGN.md §8).
"""

from dataclasses import dataclass, field
from typing import Callable

from amaranth.back import verilog
from amaranth.hdl import Const, ValueCastable
from amaranth.hdl._ir import PortDirection
from amaranth.lib import wiring

from fp8train.boards.memory import HostMemory
from fp8train.boards.bridge import FrameParser, ReplyFramer, UartHostBridge
from fp8train.boards.uart import UartRx, UartTx
from fp8train.formats import E5M2, FP16_169
from fp8train.hw.arith.add import FpAdd
from fp8train.hw.arith.convert import FpConvert
from fp8train.hw.arith.lane_keys import LaneKeyHasher
from fp8train.hw.arith.lfsr import LfsrBank
from fp8train.hw.arith.mac import ChunkMac
from fp8train.hw.arith.mul import FpMul
from fp8train.hw.arith.mul_round import FpMulRound
from fp8train.hw.arith.output import OutputUnit
from fp8train.hw.array.scratch import OperandScratch
from fp8train.hw.array.systolic import SystolicArray
from fp8train.hw.bus.csr import AxiLiteCsr
from fp8train.hw.bus.dma import Dma
from fp8train.hw.bus.serial_dma import SerialDma
from fp8train.hw.core import Accelerator
from fp8train.hw.engine import CommandEngine
from fp8train.hw.pcm import PcmTileUnit
from fp8train.hw.pcm.executor import PcmExecutor
from fp8train.hw.reference.pe import ReferencePE
from fp8train.hw.serial_gemm import SerialGemm
from fp8train.hw.update import UpdateExecutor, UpdateUnit
from fp8train.sim.golden.pcm import PcmConfig

__all__ = ["Unit", "UNITS", "to_verilog", "top_ports"]


@dataclass(frozen=True)
class Unit:
    """A registered unit: a factory for a representative configuration and its lint waivers.

    ``waivers`` maps a Verilator warning code, or ``"CODE:signal"``, to the reason it is acceptable
    for this unit; a waiver without a reason, or one that matches no warning, fails the lint test.
    """
    name: str
    factory: Callable[[], wiring.Component]
    waivers: dict[str, str] = field(default_factory=dict)


_INLINED = ("Yosys inlines the driver of these named combinational intermediates at their uses; "
            "the wires stay for waves (each also drives logic, checked by the RTL benches)")

_PORT_ALIASES = ("Amaranth declares a wire in the parent for each port signal of a processing element, "
                 "an alias of the net the instance is connected to; inside an east-edge PE, drain_in "
                 "is the constant 0 that Yosys inlines")

_FSM_CASES = ("Amaranth writes an FSM's next-state and output decode as a case over the declared "
              "states only; other state codes are unreachable")

_FIFO_WIRES = ("Amaranth declares a wire for each port signal of a submodule (amaranth.lib.fifo "
               "buffers inside the DMA engines) and for the FIFOs' internal pointers; Yosys inlines "
               "their drivers at the uses")

# Waivers for the burst DMA's (``Dma``) internals, wherever it is instantiated.
_DMA_INTERNALS = {
    **{f"UNUSEDSIGNAL:{name}": _INLINED for name in ("beats", "capped", "to_boundary")},
    **{f"UNUSEDSIGNAL:{name}": _FIFO_WIRES
       for name in ("consume", "produce", "level", "r_level", "w_level", "r_port__data",
                    "w_port__data", "w_data", "rd_data__ready", "r_data$*", "r_rdy$*", "r_en$*")},
}

_SUBMODULE_PORTS = ("Amaranth declares a wire in the parent for each port signal of a submodule (engine, "
                    "tile controller, array, processing elements, scratchpads, output unit, key hasher, "
                    "CSR slave, DMA), an alias of the net it is connected to; constant or unread bits "
                    "(AXI attributes, IDs, address byte offsets) are inlined at the top ports")

_UART_PORTS = ("Amaranth declares a wire in the parent for each port signal of a submodule (receiver, "
               "transmitter, parser, framer, synchroniser), an alias of the net it is connected to")

_PCM_PORTS = ("Amaranth declares a wire in the parent for each port signal of a submodule (the device "
              "programmers and readers, the memories' ports), an alias of the net it is connected to")

#: The update unit's arithmetic, named per step and lane (``decay0_exp``, ``step_add3_sum``, ...).
_UPDATE_ARITH = ("scale?_*", "decay?_*", "mom?_*", "decay_add?_*", "mom_add?_*", "lr?_*", "step_add?_*",
                 "to_e5m2?_*", "to_e4m3?_*")

UNITS = [
    Unit("lfsr_bank", lambda: LfsrBank(lanes=4, rbits=8), waivers={
        "UNUSEDSIGNAL:seed": "the seed port is 32 bits wide, a lane state 31: bit 31 is not used",
    }),
    Unit("fp_mul", lambda: FpMul(fmt_a=E5M2, out_fmt=FP16_169), waivers={
        "WIDTHEXPAND": "Yosys writes Verilog operators with operands narrower than the result",
        "WIDTHTRUNC": "Yosys writes a logical NOT of a multi-bit slice ('! x[1:0]') for 'x == 0'",
        "UNUSEDSIGNAL:product_*": _INLINED,
    }),
    Unit("fp_mul_round", lambda: FpMulRound(FP16_169), waivers={
        "WIDTHEXPAND": "Yosys writes Verilog operators with operands narrower than the result",
        "WIDTHTRUNC": "Yosys writes a logical NOT of a multi-bit slice for 'x == 0'",
        "UNUSEDSIGNAL:product_*": _INLINED,
    }),
    Unit("fp_add", lambda: FpAdd(FP16_169, rbits=8), waivers={
        "WIDTHEXPAND": "Yosys writes Verilog operators with operands narrower than the result",
        "WIDTHTRUNC": "Yosys writes a logical NOT of a multi-bit slice for 'x == 0'",
        "UNUSEDSIGNAL:add_*": _INLINED,
    }),
    Unit("chunk_mac", lambda: ChunkMac(max_chunk=4096, rbits=8), waivers={
        "WIDTHEXPAND": "Yosys writes Verilog operators with operands narrower than the result",
        "WIDTHTRUNC": "Yosys writes a logical NOT of a multi-bit slice for 'x == 0'",
        **{f"UNUSEDSIGNAL:{prefix}*": _INLINED for prefix in ("chunk_add_", "total_add_", "product_")},
    }),
    Unit("output_unit", lambda: OutputUnit(rbits=8), waivers={
        "WIDTHEXPAND": "Yosys writes Verilog operators with operands narrower than the result",
        "WIDTHTRUNC": "Yosys writes a logical NOT of a multi-bit slice for 'x == 0'",
        **{f"UNUSEDSIGNAL:{prefix}*": _INLINED for prefix in ("c_add_", "value_", "to_")},
    }),
    Unit("lane_key_hasher", LaneKeyHasher),
    Unit("lane_key_hasher_serial", lambda: LaneKeyHasher(serial=True), waivers={
        "WIDTHEXPAND": "Yosys writes Verilog operators with operands narrower than the result",
        "WIDTHTRUNC": "Yosys writes a logical NOT of a multi-bit value for 'x == 0'",
        "CASEINCOMPLETE": "the step counters (multiplication 0-2, part 0-2) and the factor table's index "
                          "(3 * multiplication + part, 0-8) never take the other codes of their widths",
    }),
    *(Unit(name, lambda lanes=lanes: UpdateUnit(rbits=8, lanes=lanes), waivers={
        "WIDTHEXPAND": "Yosys writes Verilog operators with operands narrower than the result",
        "WIDTHTRUNC": "Yosys writes a logical NOT of a multi-bit slice for 'x == 0'",
        "UNUSEDSIGNAL:seed": "the seed port is 32 bits wide, a lane state 31: bit 31 is not used",
        **{f"UNUSEDSIGNAL:{name}": _INLINED for name in _UPDATE_ARITH},
    }) for name, lanes in (("update_unit", 4), ("update_unit_one_lane", 1))),
    Unit("update_executor", lambda: UpdateExecutor(block=128, rbits=8), waivers={
        "WIDTHEXPAND": "Yosys writes Verilog operators with operands narrower than the result",
        "WIDTHTRUNC": "Yosys writes a logical NOT of a multi-bit value for 'x == 0'",
        "CASEINCOMPLETE": _FSM_CASES,
        "DECLFILENAME": "Amaranth writes the update unit as a module into the top's one file",
        "SYMRSVDWORD:abort": "the port is named by the executor's contract; 'abort' is only also a C "
                             "library function, the Verilated model builds and runs",
        "UNUSEDSIGNAL:seed": "the seed is 32 bits wide, a lane state 31: bit 31 is not used",
        "UNUSEDSIGNAL:dma_rd_done": "part of the executor's DMA contract, not needed here: a read is "
                                    "complete when its last word is in",
        **{f"UNUSEDSIGNAL:{name}": "Amaranth declares a wire in the parent for each port signal of the "
                                   "update unit, an alias of the net it is connected to"
           for name in ("copy_format", "lr", "momentum", "mu", "o__ready", "scale", "stochastic", "wd",
                        "weight_decay")},
        **{f"UNUSEDSIGNAL:{name}": _INLINED
           for name in (*_UPDATE_ARITH, "code", "read_*", "write_*", "w_beats8", "writer_busy",
                        "valid_bytes")},
    }),
    Unit("fp_convert", lambda: FpConvert(src=FP16_169, dst=E5M2), waivers={
        "WIDTHEXPAND": "Yosys writes Verilog operators with operands narrower than the result",
        "WIDTHTRUNC": "Yosys writes a logical NOT of a multi-bit slice ('! x[8:0]') for 'x == 0'",
        "UNUSEDSIGNAL:convert_*": _INLINED,
    }),
    Unit("operand_scratch", lambda: OperandScratch(lanes=8, depth=256), waivers={
        "WIDTHEXPAND": "Yosys writes Verilog operators with operands narrower than the result",
        "WIDTHTRUNC": "Yosys writes a logical NOT of a multi-bit slice for 'x == 0'",
        **{f"UNUSEDSIGNAL:{port}__addr*": _INLINED for port in ("port", "read")},
    }),
    Unit("systolic_array", lambda: SystolicArray(rows=2, cols=2, rbits=8, max_chunk=4096), waivers={
        "WIDTHEXPAND": "Yosys writes Verilog operators with operands narrower than the result",
        "WIDTHTRUNC": "Yosys writes a logical NOT of a multi-bit slice for 'x == 0'",
        "DECLFILENAME": "Amaranth writes the processing elements as modules into the top's one file",
        **{f"UNUSEDSIGNAL:{prefix}*": _INLINED for prefix in ("add_", "product_")},
        **{f"UNUSEDSIGNAL:{port}*": _PORT_ALIASES
           for port in ("ctl_in", "west", "east", "north", "south", "drain_in__", "drain_out__")},
    }),
    Unit("axil_csr", AxiLiteCsr, waivers={
        "WIDTHEXPAND": "Yosys writes Verilog operators with operands narrower than the result",
        "WIDTHTRUNC": "Yosys writes a logical NOT of the multi-bit FSM state for 'state == 0'",
        "CASEINCOMPLETE": _FSM_CASES,
        "UNUSEDSIGNAL:s_axil_a?addr": "the byte-offset bits below a register are ignored: every "
                                      "access is to a whole register, wstrb selects the bytes",
    }),
    Unit("dma", Dma, waivers={
        "WIDTHEXPAND": "Yosys writes Verilog operators with operands narrower than the result",
        "WIDTHTRUNC": "Yosys writes a logical NOT of a multi-bit value for 'x == 0'",
        "DECLFILENAME": "Amaranth writes the engines and FIFOs as modules into the top's one file",
        "SYMRSVDWORD:abort": "the port is named by the controller's contract; 'abort' is only also "
                             "a C library function, the Verilated model builds and runs",
        "UNUSEDSIGNAL:m_axi_?id": "every transaction uses ID 0, so responses return in order and "
                                  "their IDs need no check",
        **_DMA_INTERNALS,
    }),
    Unit("serial_dma", SerialDma, waivers={
        "WIDTHTRUNC": "Yosys writes a logical NOT of a multi-bit value for 'x == 0'",
        "DECLFILENAME": "Amaranth writes the engines and the bit walk as modules into the top's one file",
        "SYMRSVDWORD:abort": "the port is named by the controller's contract; 'abort' is only also "
                             "a C library function, the Verilated model builds and runs",
        "UNUSEDSIGNAL:m_axi_?id": "every transaction uses ID 0, so responses return in order and "
                                  "their IDs need no check",
        "UNUSEDSIGNAL:m_axi_rlast": "every burst is a single beat, so every R beat is its burst's last",
        "UNUSEDSIGNAL:window_limit": "its byte-offset bits: a word-aligned end address exceeds the "
                                     "limit iff its word address exceeds the limit's",
        "UNUSEDSIGNAL:issue": "Amaranth declares a wire in the parent for each port signal of the read "
                              "engine, an alias of the net it is connected to",
    }),
    Unit("command_engine", lambda: CommandEngine(rows=2, cols=2, rbits=8, max_chunk=4096), waivers={
        "WIDTHEXPAND": "Yosys writes Verilog operators with operands narrower than the result",
        "WIDTHTRUNC": "Yosys writes a logical NOT of a multi-bit value for 'x == 0'",
        "CASEINCOMPLETE": _FSM_CASES + " (also the buffer select of the descriptor check)",
        "DECLFILENAME": "Amaranth writes the CSR slave, the DMA and its FIFOs as modules into the top's "
                        "one file",
        "SYMRSVDWORD:abort": "the port is named by the executor's contract; 'abort' is only also a C "
                             "library function, the Verilated model builds and runs",
        "UNUSEDSIGNAL:s_axil_*": "Amaranth declares a wire in the parent for each port signal of the CSR "
                                 "slave, an alias of the top port; inside it, the byte-offset bits of "
                                 "the addresses are ignored (every access is to a whole register)",
        "UNUSEDSIGNAL:m_axi_*": "Amaranth declares a wire in the parent for each port signal of the DMA, "
                                "an alias of the top port; inside it, the constant attributes (size, "
                                "burst, ID 0, rready/bready 1) are inlined at the top port and IDs are "
                                "not checked",
        **{f"UNUSEDSIGNAL:{name}": _INLINED
           for name in ("abort$*", "eng_wdata", "irq_set", "owner_exec", "span_end", "rd_data__payload")},
        "UNUSEDSIGNAL:r_data": "Amaranth declares a wire in the parent for each port signal of the CSR slave, "
                               "an alias of the net it is connected to",
        **_DMA_INTERNALS,
    }),
    Unit("serial_gemm", lambda: SerialGemm(max_chunk=64), waivers={
        "WIDTHEXPAND": "Yosys writes Verilog operators with operands narrower than the result",
        "WIDTHTRUNC": "Yosys writes a word select as a shift of the whole word, and a logical NOT of a "
                      "multi-bit value for 'x == 0'",
        "CASEINCOMPLETE": "Amaranth writes the switch over a command's steps, and the key hasher its step "
                          "counters, as a case over the codes in use; the other codes are unreachable",
        "DECLFILENAME": "Amaranth writes the key hasher as a module into the top's one file",
        "SYMRSVDWORD:abort": "the port is named by the executor's contract; 'abort' is only also a C "
                             "library function, the Verilated model builds and runs",
        "UNUSEDSIGNAL:dma_rd_done": "part of the executor's DMA contract, not needed here: a read is "
                                    "complete when its word is in",
        **{f"UNUSEDSIGNAL:{name}": _INLINED
           for name in ("add_*", "i_next", "k_next", "lane", "mixed", "product_*", "step", "step_low",
                        "stepped", "to_*", "value_*")},
    }),
    Unit("accelerator", lambda: Accelerator(rows=2, cols=2, rbits=8, max_chunk=4096, k_block=16), waivers={
        "WIDTHEXPAND": "Yosys writes Verilog operators with operands narrower than the result",
        "WIDTHTRUNC": "Yosys writes a logical NOT of a multi-bit value for 'x == 0'",
        "CASEINCOMPLETE": _FSM_CASES + " (also the engine's buffer select of the descriptor check)",
        "DECLFILENAME": "Amaranth writes every submodule as a module into the top's one file",
        **{f"UNUSEDSIGNAL:{name.rstrip('*')}*": _SUBMODULE_PORTS
           for name in ("a_read_k", "a_write", "abort", "array_mac_active", "b_read_k", "b_write", "chunk",
                        "cmd__*", "codes", "ctl_in", "dma_*", "drain_*", "east", "exec_*",
                        "feed__*", "has_c", "i__*", "irq", "key_*", "mac_active", "m_axi_*", "north",
                        "o__*", "out_*", "port__addr", "read__addr", "relu",
                        "s_axil_*", "saturate", "scale", "seed", "south", "stochastic", "west")},
        **{f"UNUSEDSIGNAL:{name.rstrip('*')}*": _INLINED
           for name in ("add_*", "beats", "c_add_*", "c_start", "capped", "code",
                        "count", "d_end", "d_first", "d_rel*", "eng_wdata", "irq_set",
                        "owner_exec", "product_*", "span", "span_*", "to_boundary", "to_e*", "to_fp16*",
                        "value_*")},
        **{f"UNUSEDSIGNAL:{name}": _FIFO_WIRES
           for name in ("consume", "produce", "level", "r_level", "w_level", "r_port__data",
                        "w_port__data", "w_data", "r_data", "r_rdy", "rd_data__*", "r_data$*", "r_rdy$*",
                        "r_en$*")},
        **{f"UNUSEDSIGNAL:{name}": _SUBMODULE_PORTS
           for name in ("a_read_buffer", "b_read_buffer", "wkey_*", "c_write__data", "copy_format", "lr",
                        "momentum", "mu", "wd", "weight_decay")},
        **{f"UNUSEDSIGNAL:{name}": _INLINED
           for name in ("issue_*", "feed_*", "write_*", "read_*", "hash_rows", "stored_row", "tile_row",
                        "c_slot", "c_word", "valid_bytes", "w_beats8", "writer_busy",
                        *_UPDATE_ARITH)},
    }),
    Unit("pcm_tile", lambda: PcmTileUnit(PcmConfig(rows=4, cols=3, slices=2)), waivers={
        "WIDTHEXPAND": "Yosys writes Verilog operators with operands narrower than the result",
        "WIDTHTRUNC": "Yosys writes a logical NOT of a multi-bit value for 'x == 0'",
        "CASEINCOMPLETE": _FSM_CASES,
        "DECLFILENAME": "Amaranth writes the device programmers and readers as modules into the top's one file",
        "UNUSEDSIGNAL:seed*": "the seed is 32 bits wide, a lane state 31: bit 31 is not used",
        "UNUSEDSIGNAL:exponent": "the drift exponent's bits below the 2^-f table's resolution are dropped "
                                 "by design (golden PcmConfig.drift truncates them the same way)",
        **{f"UNUSEDSIGNAL:{name}": _PCM_PORTS
           for name in ("device*", "lane*", "step*", "read_factor*", "pair_key_read__addr", "cell_write__addr")},
        **{f"UNUSEDSIGNAL:{name}": _INLINED
           for name in ("z_read", "z_prog", "z_nu", "drifted", "rounded", "converted", "y", "error", "arg")},
    }),
    Unit("pcm_executor", lambda: PcmExecutor(PcmConfig(rows=4, cols=3, slices=2)), waivers={
        "WIDTHEXPAND": "Yosys writes Verilog operators with operands narrower than the result",
        "WIDTHTRUNC": "Yosys writes a logical NOT of a multi-bit value for 'x == 0'",
        "CASEINCOMPLETE": _FSM_CASES,
        "DECLFILENAME": "Amaranth writes the tile and its device datapaths as modules into the top's one file",
        "SYMRSVDWORD:abort": "the port is named by the executor's contract; 'abort' is only also a C "
                             "library function, the Verilated model builds and runs",
        "UNUSEDSIGNAL:seed*": "the seed is 32 bits wide, a lane state 31: bit 31 is not used",
        "UNUSEDSIGNAL:exponent": "the drift exponent's bits below the 2^-f table's resolution are dropped "
                                 "by design (golden PcmConfig.drift truncates them the same way)",
        "UNUSEDSIGNAL:dma_rd_done": "part of the executor's DMA contract, not needed here: a read is "
                                    "complete when its last word is in",
        **{f"UNUSEDSIGNAL:{name}": _PCM_PORTS
           for name in ("device*", "lane*", "step*", "read_factor*", "pair_key_read__addr", "cell_write__addr",
                        "cmd__valid*", "operand__payload")},
        **{f"UNUSEDSIGNAL:{name}": _INLINED
           for name in ("z_read", "z_prog", "z_nu", "drifted", "rounded", "converted", "y", "error", "arg",
                        "code")},
    }),
    Unit("reference_pe", lambda: ReferencePE(rbits=8), waivers={
        "WIDTHEXPAND": "Yosys writes Verilog operators with operands narrower than the result",
        "WIDTHTRUNC": "Yosys writes a logical NOT of a multi-bit slice for 'x == 0'",
        **{f"UNUSEDSIGNAL:{prefix}*": _INLINED for prefix in ("add_", "product_")},
    }),
    Unit("host_memory", lambda: HostMemory(size=4096), waivers={
        "WIDTHEXPAND": "Yosys writes Verilog operators with operands narrower than the result",
        "WIDTHTRUNC": "Yosys writes a logical NOT of the multi-bit FSM state for 'state == 0'",
        "CASEINCOMPLETE": _FSM_CASES,
        "UNUSEDSIGNAL:*_a?addr": "addresses select 64-bit words (host: 32-bit halves); the byte offset "
                                 "bits below are ignored, wstrb selects the bytes",
        "UNUSEDSIGNAL:dev_awlen": "a write burst ends with wlast; the slave needs no beat count",
        **{f"UNUSEDSIGNAL:{name}": _INLINED for name in ("addr", "write__addr", "write_data")},
    }),
    # The UART host bridge (boards/bridge.py) at the iCEBreaker's 115200 baud from 6 MHz.
    Unit("uart_rx", lambda: UartRx(divisor=52), waivers={
        "WIDTHEXPAND": "Yosys writes Verilog operators with operands narrower than the result",
        "WIDTHTRUNC": "Yosys writes a logical NOT of a multi-bit value for 'x == 0'",
        "CASEINCOMPLETE": _FSM_CASES,
        "DECLFILENAME": "Amaranth writes the rx synchroniser as a module into the top's one file",
        "UNUSEDSIGNAL:shift": _INLINED,
        "UNUSEDSIGNAL:rst": "the rx synchroniser (amaranth.lib.cdc.FFSynchronizer) is not reset",
        "UNUSEDSIGNAL:line": _UART_PORTS,
    }),
    Unit("uart_tx", lambda: UartTx(divisor=52), waivers={
        "WIDTHTRUNC": "Yosys writes a logical NOT of a multi-bit value for 'x == 0'",
    }),
    Unit("frame_parser", lambda: FrameParser(max_words=64, timeout=60_000), waivers={
        "WIDTHEXPAND": "Yosys writes Verilog operators with operands narrower than the result",
        "WIDTHTRUNC": "Yosys writes a logical NOT of a multi-bit value for 'x == 0'",
        "CASEINCOMPLETE": _FSM_CASES,
    }),
    Unit("reply_framer", lambda: ReplyFramer(max_words=64), waivers={
        "WIDTHEXPAND": "Yosys writes Verilog operators with operands narrower than the result",
        "WIDTHTRUNC": "Yosys writes a byte select (word_select) as a shift of the whole word, and a "
                      "logical NOT of a multi-bit value for 'x == 0'",
        "CASEINCOMPLETE": _FSM_CASES,
    }),
    Unit("uart_host_bridge", lambda: UartHostBridge(mem_size=1 << 17, divisor=52, timeout=60_000), waivers={
        "WIDTHEXPAND": "Yosys writes Verilog operators with operands narrower than the result",
        "WIDTHTRUNC": "Yosys writes a byte select (word_select) as a shift of the whole word, and a "
                      "logical NOT of a multi-bit value for 'x == 0'",
        "CASEINCOMPLETE": _FSM_CASES,
        "DECLFILENAME": "Amaranth writes the UART, parser, framer and synchroniser as modules into the "
                        "top's one file",
        "UNUSEDSIGNAL:rst": "the rx synchroniser (amaranth.lib.cdc.FFSynchronizer) is not reset",
        **{f"UNUSEDSIGNAL:{name}": _UART_PORTS
           for name in ("error", "i__ready", "o__payload*", "o__valid*", "rx$*", "tx$*", "wdata", "wr_data",
                        "line")},
    }),
]


def _waivers_of(*names: str, drop: tuple = ()) -> dict:
    """The registered units' waivers together, but ``drop``."""
    return {code: why for unit in UNITS if unit.name in names for code, why in unit.waivers.items()
            if code not in drop}


# The accelerator with a PCM tile: the engine's PCM checks and the executors' routing; inside it the PCM
# executor's ports are not top ports (no 'abort' symbol).
UNITS.append(Unit("accelerator_pcm", lambda: Accelerator(rows=2, cols=2, rbits=8, max_chunk=4096, k_block=16,
                                                         pcm=PcmConfig(rows=4, cols=3, slices=2)),
                  waivers=_waivers_of("accelerator", "pcm_executor", drop=("SYMRSVDWORD:abort",))))

# The UP5K's accelerator: the serial GEMM executor instead of the tile controller and its datapath, the serial
# DMA, no update unit; the engine's, the DMA's and the executor's waivers, and the wires of the ports between them.
UNITS.append(Unit("accelerator_compact", lambda: Accelerator(rows=1, cols=1, rbits=8, max_chunk=64, update_lanes=0,
                                                             compact=True),
                  waivers={**_waivers_of("command_engine", "serial_dma", "serial_gemm",
                                         drop=("SYMRSVDWORD:abort", "UNUSEDSIGNAL:m_axi_?id", "UNUSEDSIGNAL:m_axi_rlast",
                                               *_DMA_INTERNALS)),
                           **{f"UNUSEDSIGNAL:{name}": "Amaranth declares a wire in the parent for each port "
                                                      "signal of a submodule (engine, serial GEMM executor), "
                                                      "an alias of the net it is connected to"
                              for name in ("cmd__payload", "dma_*", "done__*", "exec_dma_rd_data__payload",
                                           "irq*", "mac_active*", "ring_tail", "ring_turn")}}))


def top_ports(component: wiring.Component) -> dict:
    """The component's signature members as Verilog top-level ports.

    Same naming as ``amaranth.back.verilog.convert``, but members that the signature fixes to a
    constant (``always_valid``/``always_ready`` stream handshakes) are left out: Amaranth refuses a
    constant as a port. A testbench treats a missing ``<port>__valid``/``__ready`` as constant 1.
    """
    ports = {}
    for path, member, value in component.signature.flatten(component):
        if isinstance(value, ValueCastable):
            value = value.as_value()
        if isinstance(value, Const):
            continue
        flow = PortDirection.Input if member.flow == wiring.In else PortDirection.Output
        ports[_port_name(component.signature, path)] = (value, flow)
    return ports


def _port_name(signature: wiring.Signature, path: tuple) -> str:
    """``path`` joined with ``__``, except that the members of a signature whose class sets
    ``flat_port_names`` (the AXI signatures of ``hw.bus.axi``) are joined with ``_``:
    ``s_axil_awaddr``, ``m_axi_rvalid``, as cocotbext-axi's ``from_prefix`` expects."""
    name, member = str(path[0]), signature.members[path[0]]
    dims = list(member.dimensions)
    for part in path[1:]:
        if dims:                                  # an index into an array member
            dims.pop(0)
            name += f"__{part}"
            continue
        flat = getattr(member.signature, "flat_port_names", False)
        name += ("_" if flat else "__") + str(part)
        member = member.signature.members[part]
        dims = list(member.dimensions)
    return name


def to_verilog(component: wiring.Component, name: str, *, emit_src: bool = True) -> str:
    """Verilog text of ``component`` as a top module called ``name``.

    Benches pass ``emit_src=False``: source-location attributes change with every unrelated edit of
    a Python file, and the build cache is keyed by the Verilog text.
    """
    return verilog.convert(component, name=name, ports=top_ports(component), emit_src=emit_src)
