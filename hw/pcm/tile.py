"""PCM conductance-array tile: program, MVM and time steps as streamed commands (DESIGN.md §6).

The tile executes the commands of :class:`~fp8train.sim.golden.pcm.PcmOp` bit-exactly as
:class:`~fp8train.sim.golden.pcm.PcmTile` does. It is built to sit behind the accelerator's command ring:
a command beat, then its operand beats, then its result beats and one ``done`` beat with a
:class:`~fp8train.sim.golden.pcm.PcmError` code.
"""

from amaranth.hdl import Module, Mux, Signal, signed
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from fp8train.sim.golden.lfsr import STATE_BITS, STATE_MASK, col_key, row_key
from fp8train.sim.golden.pcm import LEVEL_BITS, PcmConfig, PcmError, PcmOp

from .device import DeviceProgrammer, DeviceReader, device_layout

__all__ = ["PcmTileUnit", "command_layout", "OP_BITS", "ARG_BITS", "ERROR_BITS"]

OP_BITS = 4
ARG_BITS = 32
ERROR_BITS = 8


def command_layout() -> data.StructLayout:
    return data.StructLayout({"op": OP_BITS, "arg": ARG_BITS})


class PcmTileUnit(wiring.Component):
    """A ``rows x cols`` tile of ``slices`` differential PCM pairs per weight.

    Parameters
    ----------
    config : PcmConfig
        Sizes, widths and tables (shared with the golden model).

    Members
    -------
    cmd : In(stream of command_layout)
        ``op`` (:class:`PcmOp`) and ``arg``: PROGRAM's seed, MVM's ADC shift, TIME's step. Taken only
        when the tile is idle.
    operand : In(stream of signed(max(weight_bits, dac_bits)))
        PROGRAM: ``rows * cols`` weight codes in row-major order; MVM: ``rows`` DAC codes.
    result : Out(stream of signed(out_bits))
        MVM: ``cols`` outputs, column 0 first.
    done : Out(stream of 8 bits)
        One :class:`PcmError` code per command, after its last result. A rejected command takes no
        operands and gives no results.

    Timing: PROGRAM takes ``slices + 1`` cycles per weight; an MVM one cycle per input, two per device
    pair (fetch, then read both devices and accumulate), one per ADC conversion and one per output
    (more under backpressure). Conductances, drift exponents, levels and LFSR lanes live in one memory
    word per pair, address ``(j * slices + k) * rows + i``; each read writes the advanced lanes back.
    """

    def __init__(self, config: PcmConfig):
        if not isinstance(config, PcmConfig):
            raise TypeError(f"config must be a PcmConfig, not {type(config).__name__}")
        self.config = config
        super().__init__({
            "cmd": In(stream.Signature(command_layout())),
            "operand": In(stream.Signature(signed(max(config.weight_bits, config.dac_bits)))),
            "result": Out(stream.Signature(signed(config.out_bits))),
            "done": Out(stream.Signature(ERROR_BITS)),
        })

    def elaborate(self, platform):
        m = Module()
        c = self.config
        pairs = c.cols * c.slices
        pair_layout = data.ArrayLayout(device_layout(c), 2)

        m.submodules.cells = cells = Memory(shape=pair_layout, depth=c.rows * pairs, init=[])
        cell_read, cell_write = cells.read_port(), cells.write_port()
        m.submodules.inputs = inputs = Memory(shape=signed(c.dac_bits), depth=c.rows, init=[])
        x_read, x_write = inputs.read_port(domain="comb"), inputs.write_port()
        # The lane keys of every device, baked in as the LFSR bank does (golden output_state's keys).
        m.submodules.row_keys = row_keys = Memory(shape=STATE_BITS, depth=c.rows,
                                                  init=[row_key(i) & STATE_MASK for i in range(c.rows)])
        m.submodules.pair_keys = pair_keys = Memory(
            shape=2 * STATE_BITS, depth=pairs,
            init=[(col_key(2 * q) & STATE_MASK) | (col_key(2 * q + 1) & STATE_MASK) << STATE_BITS
                  for q in range(pairs)])
        m.submodules.read_table = read_table = Memory(
            shape=max(int(v) for v in c.tables["read"]).bit_length(), depth=c.time_steps,
            init=[int(v) for v in c.tables["read"]])
        row_key_read, pair_key_read = row_keys.read_port(domain="comb"), pair_keys.read_port(domain="comb")
        read_factor = read_table.read_port(domain="comb")

        arg = Signal(ARG_BITS)
        error = Signal(ERROR_BITS)
        programmed = Signal()
        step = Signal(c.time_bits)
        adc_shift = Signal(range(c.acc_bits + 1))
        i, j, k = Signal(range(c.rows)), Signal(range(c.cols)), Signal(range(c.slices))
        weight = Signal(signed(c.weight_bits))
        acc = Signal(signed(c.acc_bits))
        y = Signal(signed(c.out_bits))

        pair = j * c.slices + k
        m.d.comb += [
            cell_read.addr.eq(pair * c.rows + i),
            cell_write.addr.eq(pair * c.rows + i),
            x_read.addr.eq(i),
            row_key_read.addr.eq(i),
            pair_key_read.addr.eq(pair),
            read_factor.addr.eq(step),
        ]

        # Programming: digit k of |w| is the level of G+ (w > 0) or G- (w < 0); the other device at 0.
        digit = (abs(weight) >> (LEVEL_BITS * k))[:LEVEL_BITS]
        for p, programmer in enumerate((DeviceProgrammer(c), DeviceProgrammer(c))):
            m.submodules[f"program{p}"] = programmer
            on_this_side = weight > 0 if p == 0 else weight < 0
            m.d.comb += [
                programmer.level.eq(Mux(on_this_side, digit, 0)),
                programmer.seed.eq(arg),
                programmer.key.eq(row_key_read.data ^ pair_key_read.data.word_select(p, STATE_BITS)),
            ]
        # Reading: both devices of the pair at once; the MVM takes their difference.
        readers = [DeviceReader(c), DeviceReader(c)]
        for p, reader in enumerate(readers):
            m.submodules[f"read{p}"] = reader
            m.d.comb += [reader.device.eq(cell_read.data[p]), reader.step.eq(step),
                         reader.read_factor.eq(read_factor.data)]
        contribution = Signal(signed(c.dac_bits + c.g_bits + 1))
        m.d.comb += contribution.eq(x_read.data * (readers[0].g - readers[1].g))

        # ADC: round, clip, then weight the pair by 8^k.
        limit = (1 << (c.adc_bits - 1)) - 1
        rounded = Signal(signed(c.acc_bits))
        m.d.comb += rounded.eq(Mux(adc_shift == 0, acc, ((acc >> (adc_shift - 1).as_unsigned()) + 1) >> 1))
        converted = Signal(signed(c.adc_bits))
        m.d.comb += converted.eq(Mux(rounded > limit, limit, Mux(rounded < -limit, -limit, rounded)))

        last_i, last_j, last_k = i == c.rows - 1, j == c.cols - 1, k == c.slices - 1
        m.d.comb += [self.result.payload.eq(y), self.done.payload.eq(error)]

        with m.FSM() as fsm:
            with m.State("IDLE"):
                with m.If(self.cmd.valid):
                    cmd = self.cmd.payload
                    m.d.sync += [arg.eq(cmd.arg), i.eq(0), j.eq(0), k.eq(0),
                                 error.eq(PcmError.OK)]
                    with m.If(cmd.op == PcmOp.PROGRAM):
                        m.next = "PROGRAM_TAKE"
                    with m.Elif((cmd.op == PcmOp.MVM) | (cmd.op == PcmOp.TIME)):
                        limit_arg = Mux(cmd.op == PcmOp.MVM, c.acc_bits, c.time_steps - 1)
                        with m.If(~programmed):
                            m.d.sync += error.eq(PcmError.NOT_PROGRAMMED)
                            m.next = "ANSWER"
                        with m.Elif(cmd.arg > limit_arg):
                            m.d.sync += error.eq(PcmError.BAD_ARGUMENT)
                            m.next = "ANSWER"
                        with m.Elif(cmd.op == PcmOp.MVM):
                            m.d.sync += adc_shift.eq(cmd.arg)
                            m.next = "MVM_TAKE"
                        with m.Else():
                            m.d.sync += step.eq(cmd.arg)
                            m.next = "ANSWER"
                    with m.Else():
                        m.d.sync += error.eq(PcmError.BAD_OPCODE)
                        m.next = "ANSWER"

            with m.State("PROGRAM_TAKE"):
                with m.If(self.operand.valid):
                    m.d.sync += [weight.eq(self.operand.payload), k.eq(0)]
                    m.next = "PROGRAM_WRITE"

            with m.State("PROGRAM_WRITE"):
                m.d.comb += [cell_write.en.eq(1),
                             cell_write.data[0].eq(m.submodules.program0.device),
                             cell_write.data[1].eq(m.submodules.program1.device)]
                m.d.sync += k.eq(k + 1)
                with m.If(last_k):
                    m.d.sync += [k.eq(0), j.eq(Mux(last_j, 0, j + 1)), i.eq(Mux(last_j, i + 1, i))]
                    m.next = "PROGRAM_TAKE"
                    with m.If(last_i & last_j):
                        m.d.sync += [programmed.eq(1), step.eq(0)]
                        m.next = "ANSWER"

            with m.State("MVM_TAKE"):
                m.d.comb += [x_write.addr.eq(i), x_write.data.eq(self.operand.payload)]
                with m.If(self.operand.valid):
                    m.d.comb += x_write.en.eq(1)
                    m.d.sync += i.eq(i + 1)
                    with m.If(last_i):
                        m.d.sync += [i.eq(0), acc.eq(0), y.eq(0)]
                        m.next = "MVM_FETCH"

            with m.State("MVM_FETCH"):        # the pair's word arrives from the memory on this edge
                m.next = "MVM_READ"

            with m.State("MVM_READ"):
                m.d.comb += [cell_write.en.eq(1), cell_write.data.eq(cell_read.data),
                             cell_write.data[0].lane.eq(readers[0].lane),
                             cell_write.data[1].lane.eq(readers[1].lane)]
                m.d.sync += [acc.eq(acc + contribution), i.eq(i + 1)]
                m.next = "MVM_FETCH"
                with m.If(last_i):
                    m.d.sync += i.eq(0)
                    m.next = "MVM_CONVERT"

            with m.State("MVM_CONVERT"):
                m.d.sync += [y.eq(y + (converted << (LEVEL_BITS * k))), acc.eq(0), k.eq(k + 1)]
                m.next = "MVM_FETCH"
                with m.If(last_k):
                    m.d.sync += k.eq(0)
                    m.next = "MVM_EMIT"

            with m.State("MVM_EMIT"):
                with m.If(self.result.ready):
                    m.d.sync += [y.eq(0), j.eq(j + 1)]
                    m.next = "MVM_FETCH"
                    with m.If(last_j):
                        m.d.sync += j.eq(0)
                        m.next = "ANSWER"

            with m.State("ANSWER"):
                with m.If(self.done.ready):
                    m.next = "IDLE"
        # Handshakes as plain decodes of the state, outside the FSM's processes: Icarus evaluates a
        # combinational process only when an input changes, so one that reads only the state register
        # stays X from time 0 until the first transition.
        m.d.comb += [
            self.cmd.ready.eq(fsm.ongoing("IDLE")),
            self.operand.ready.eq(fsm.ongoing("PROGRAM_TAKE") | fsm.ongoing("MVM_TAKE")),
            self.result.valid.eq(fsm.ongoing("MVM_EMIT")),
            self.done.valid.eq(fsm.ongoing("ANSWER")),
        ]
        return m
