"""Weight-update unit: the UPDATE command's SGD step on FP16_169 master weights (DESIGN.md §3, §4).

Golden counterpart: :func:`fp8train.sim.golden.update.sgd_update` (every step rounded once into
FP16_169, the weight addition stochastically if asked, as Wang et al. 2018 keep master weights and the
update in FP16). :class:`UpdateUnit` is the element-wise datapath, one 64-bit bus beat (four elements)
per cycle, or with fewer ``lanes`` one every 2 or 4 cycles; :class:`UpdateExecutor` is the command
engine's executor for UPDATE descriptors, moving the buffers through the DMA in blocks.
"""

from amaranth.hdl import Array, Cat, Const, Module, Mux, ResetInserter, Signal, signed
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from fp8train.formats import FP16_169
from fp8train.hw.arith.add import add_codes
from fp8train.hw.arith.convert import MAX_RBITS, convert_code
from fp8train.hw.arith.lfsr import lfsr_draw
from fp8train.hw.arith.mul_round import mul_round_codes
from fp8train.hw.engine import BEAT, exec_layout, executor_members
from fp8train.protocol import ALIGN, FLAG_OUT_SHIFT, MAX_UPDATE_COUNT, ErrorCode, Flag, OutFormat
from fp8train.sim.golden.device import OUT_FORMATS
from fp8train.sim.golden.lfsr import (OUTPUT_FALLBACK_STATE, STATE_BITS, STATE_MASK, col_key, output_state,
                                      row_key)
from fp8train.sim.golden.update import LANES, SCALE_RANGE

__all__ = ["UpdateUnit", "UpdateExecutor", "update_in_layout", "update_out_layout", "check_lanes", "LATENCY"]

ELEM = FP16_169.width
SIGN = 1 << (ELEM - 1)
SCALE_BITS = (SCALE_RANGE[1] - SCALE_RANGE[0]).bit_length()
COPY_FORMATS = {code: fmt for code, fmt in OUT_FORMATS.items() if code != OutFormat.FP16_169}
FP8 = max(fmt.width for fmt in COPY_FORMATS.values())
assert LANES * ELEM == BEAT, "one LFSR lane per FP16 element of a bus beat"

#: Register stages of :class:`UpdateUnit`: scale and products, weight decay, momentum, learning rate,
#: weight addition, FP8 copy.
LATENCY = 6


def update_in_layout() -> data.StructLayout:
    """One beat of each input buffer: four FP16_169 codes of w, g and v (element ``4 b + p`` in lane p)."""
    beat = data.ArrayLayout(ELEM, LANES)
    return data.StructLayout({"w": beat, "g": beat, "v": beat})


def update_out_layout() -> data.StructLayout:
    """The beat's results: new w and v codes and the FP8 copy codes of the new w."""
    return data.StructLayout({"w": data.ArrayLayout(ELEM, LANES), "v": data.ArrayLayout(ELEM, LANES),
                              "copy": data.ArrayLayout(FP8, LANES)})


class UpdateUnit(wiring.Component):
    """The SGD step of ``sgd_update`` on four elements per cycle, fully pipelined.

    Per element, each step rounded once into FP16_169 (nearest-even unless said otherwise)::

        g1 = g * 2**scale;  g1 = g1 + wd * w (weight_decay);  v' = mu * v + g1 (momentum);  d = v' or g1
        w' = w + -(lr * d)   (stochastic with the lane's random bits when ``stochastic``)
        copy = w' converted into E5M2 or E4M3 (``copy_format``; 0 when FP16_169)

    Parameters
    ----------
    rbits : int
        Random bits per stochastic weight rounding, 1 to 16 (the device's ``rbits``).
    lanes : int
        Elements computed per cycle: 4 (a beat per cycle), 2 or 1 (a beat every 2 or 4 cycles, a half
        or a quarter of the datapath: the unit is most of a small accelerator's area, README
        "Resources and Fmax"). Results are the same for every value.

    Members
    -------
    i : In(stream.Signature(update_in_layout()))
        Input beats. ``v`` is ignored without ``momentum``. Every accepted beat draws once from the
        four LFSR lanes (lane p for element p), whether or not ``stochastic`` is set, so beat ``b``
        gets golden ``update_rand`` draw ``b``. A beat is taken with its last group of ``lanes``
        elements; ``i.ready`` is low while the others enter and while the output waits.
    o : Out(stream.Signature(update_out_layout()))
        Results, :data:`LATENCY` cycles after their beat's last group when ``o.ready`` stays high.
        Backpressure stalls the whole pipeline (nothing is dropped).
    seed : In(32), load : In(1)
        On an edge with ``load`` lane p starts over at golden ``output_state(seed, p, 0)``
        (``LfsrBank.for_outputs(seed, 4, 1, rbits)``); load before the command's first beat.
    momentum, weight_decay, stochastic, saturate : In(1)
    copy_format : In(2)
        An :class:`~fp8train.protocol.OutFormat` value.
    scale : In(signed(8))
    lr, mu, wd : In(16)
        FP16_169 codes. The options are command constants: hold them while beats are in the pipeline.
    """

    def __init__(self, *, rbits: int = 8, lanes: int = LANES):
        if not isinstance(rbits, int) or isinstance(rbits, bool) or not 1 <= rbits <= MAX_RBITS:
            raise ValueError(f"rbits must be an integer from 1 to {MAX_RBITS}, not {rbits!r}")
        check_lanes(lanes)
        self.rbits, self.lanes = rbits, lanes
        super().__init__({
            "i": In(stream.Signature(update_in_layout())),
            "o": Out(stream.Signature(update_out_layout())),
            "seed": In(32), "load": In(1),
            "momentum": In(1), "weight_decay": In(1), "stochastic": In(1), "saturate": In(1),
            "copy_format": In(2), "scale": In(signed(SCALE_BITS)),
            "lr": In(ELEM), "mu": In(ELEM), "wd": In(ELEM),
        })

    def _draws(self, m, take):
        """The four LFSR lanes' current draws; lane p advances when ``take[p]``, all restart on ``load``."""
        draws = []
        for p in range(LANES):
            state = Signal(STATE_BITS, name=f"lane{p}_state", init=output_state(0, p, 0))
            drawn, advanced = lfsr_draw(state, self.rbits)
            key = Const((row_key(p) ^ col_key(0)) & STATE_MASK, STATE_BITS)
            mixed = Signal(STATE_BITS, name=f"lane{p}_seeded")
            m.d.comb += mixed.eq(self.seed[:STATE_BITS] ^ key)
            with m.If(self.load):
                m.d.sync += state.eq(Mux(mixed.any(), mixed, OUTPUT_FALLBACK_STATE))
            with m.Elif(take[p]):
                m.d.sync += state.eq(advanced)
            draws.append(drawn)
        return draws

    def elaborate(self, platform):
        m = Module()
        width, groups = self.lanes, LANES // self.lanes
        advance = Signal()
        m.d.comb += advance.eq(~self.o.valid | self.o.ready)

        # The beat enters in groups of ``width`` elements: group ``part`` holds elements
        # ``part * width + q``; the beat is taken with its last group.
        part = Signal(range(groups)) if groups > 1 else Const(0)
        last_part = part == groups - 1
        m.d.comb += self.i.ready.eq(advance & last_part)
        if groups > 1:
            with m.If(self.i.valid & advance):
                m.d.sync += part.eq(Mux(last_part, 0, part + 1))
        draws = self._draws(m, [self.i.valid & advance & (part == p // width) for p in range(LANES)])
        valid = self.i.valid
        tag = part

        def stage(index, make, lanes):
            """Register ``make(q, lane)`` (name -> value) of every datapath lane, the group's valid bit
            and its part whenever the pipeline advances; returns the registered lanes."""
            nonlocal valid, tag
            stage_valid = Signal(name=f"s{index}_valid")
            registered = []
            with m.If(advance):
                m.d.sync += stage_valid.eq(valid)
            if groups > 1:
                stage_tag = Signal.like(part, name=f"s{index}_part")
                with m.If(advance):
                    m.d.sync += stage_tag.eq(tag)
                tag = stage_tag
            for q, lane in enumerate(lanes):
                regs = {}
                for key, value in make(q, lane).items():
                    regs[key] = Signal(len(value), name=f"s{index}_{key}{q}")
                    with m.If(advance):
                        m.d.sync += regs[key].eq(value)
                registered.append(regs)
            valid = stage_valid
            return registered

        fmt, saturate, nearest, no_rand = FP16_169, self.saturate, Const(0), Const(0, 1)

        def add(q, label, a, b, stochastic=nearest, rand=no_rand):
            return add_codes(m, fmt, a, b, stochastic=stochastic, rand=rand, saturate=saturate,
                             name=f"{label}{q}")

        def mul(q, label, a, b):
            return mul_round_codes(m, fmt, a, b, saturate=saturate, name=f"{label}{q}")

        def copy(q, s):
            code = Signal(FP8, name=f"copy{q}")
            for value, dst in COPY_FORMATS.items():
                converted = convert_code(m, fmt, dst, s["w"], stochastic=nearest, rand=no_rand,
                                         saturate=saturate, name=f"to_{OutFormat(value).name.lower()}{q}")
                with m.If(self.copy_format == value):
                    m.d.comb += code.eq(converted)
            return {"w": s["w"], "v": s["v"], "copy": code}

        def group(values):
            """Element ``part * width + q`` of a beat's four ``values``, for each datapath lane q."""
            if groups == 1:
                return values
            return [Array(values[g * width + q] for g in range(groups))[part] for q in range(width)]

        i = self.i.p
        lanes = [{"w": w, "g": g, "v": v, "rand": rand}
                 for w, g, v, rand in zip(group(list(i.w)), group(list(i.g)), group(list(i.v)), group(draws))]
        lanes = stage(1, lambda q, s: {
            "w": s["w"], "rand": s["rand"],
            "g1": convert_code(m, fmt, fmt, s["g"], stochastic=nearest, rand=no_rand, saturate=saturate,
                               scale=self.scale, name=f"scale{q}"),
            "wdw": mul(q, "decay", self.wd, s["w"]), "muv": mul(q, "mom", self.mu, s["v"])}, lanes)
        lanes = stage(2, lambda q, s: {
            "w": s["w"], "rand": s["rand"], "muv": s["muv"],
            "g2": Mux(self.weight_decay, add(q, "decay_add", s["g1"], s["wdw"]), s["g1"])}, lanes)
        lanes = stage(3, lambda q, s: {
            "w": s["w"], "rand": s["rand"], "g2": s["g2"], "v": add(q, "mom_add", s["muv"], s["g2"])},
            lanes)
        lanes = stage(4, lambda q, s: {
            "w": s["w"], "rand": s["rand"], "v": s["v"],
            "step": mul(q, "lr", self.lr, Mux(self.momentum, s["v"], s["g2"])) ^ SIGN}, lanes)
        lanes = stage(5, lambda q, s: {
            "v": s["v"],
            "w": add(q, "step_add", s["w"], s["step"], stochastic=self.stochastic, rand=s["rand"])}, lanes)

        # Stage 6 gathers the groups into the output beat: it is valid with the beat's last group.
        results = [copy(q, s) for q, s in enumerate(lanes)]
        with m.If(advance):
            m.d.sync += self.o.valid.eq(valid & (tag == groups - 1))
            with m.If(valid):
                for g in range(groups):
                    with m.If(tag == g):
                        for q, result in enumerate(results):
                            p = g * width + q
                            m.d.sync += [self.o.p.w[p].eq(result["w"]), self.o.p.v[p].eq(result["v"]),
                                         self.o.p.copy[p].eq(result["copy"])]
        return m


def check_lanes(lanes) -> None:
    """The update datapath's elements per cycle: a divisor of a beat's four."""
    if type(lanes) is not int or lanes not in (1, 2, 4):
        raise ValueError(f"lanes must be 1, 2 or 4, not {lanes!r}")


def _flag_bit(flags, flag: Flag):
    """The bit of a one-bit :class:`~fp8train.protocol.Flag` in an ``exec_layout`` ``flags`` field."""
    assert flag & (flag - 1) == 0, f"{flag!r} is not a single bit"
    return flags[flag.bit_length() - 1]


class UpdateExecutor(wiring.Component):
    """The command engine's executor for UPDATE descriptors: w, g (and v) through an :class:`UpdateUnit`
    in blocks, w' (and v') written back in place and the FP8 copy to ``addr_d``.

    Two processes share two banks of four buffers (w, g, v, copy). The *reader* takes block ``k``
    (``block`` elements, the last one shorter) into one bank: read commands for w, g and, with
    MOMENTUM, v back to back (the DMA may accept the next before the previous one's data is in; the
    words arrive in command order with ``last`` on each command's last word), then the block streams
    through the unit, results overwriting w and v in the bank and the copy going to its copy buffer.
    It hands the bank to the *writer* as soon as the writer is idle and goes on with block ``k + 1``
    in the other bank, while the writer issues write commands for w', v' (MOMENTUM) and the copy
    (OUT_FORMAT E5M2/E4M3), streams the bank out and waits for every ``dma_wr_done``. Buffers move
    as whole 8-byte beats: reads may take bytes past the last element, writes strobe only the
    elements' bytes. So block ``k``'s writes overlap block ``k + 1``'s reads and computation: with
    ``n`` beats per FP16 buffer a block costs about ``max((2 + momentum) n + n + LATENCY,
    (1 + momentum + copy / 2) n)`` cycles plus the DMA's command latencies (the reads and the
    computation of one block do not overlap). Measured on a RAM without pauses
    (``update_exec_bench.test_throughput``, 4 blocks + 5 elements, weight decay, SR): with
    ``block=32`` 1.4 cycles per element without momentum, 1.7 with momentum and an FP8 copy; with
    ``block=128`` 0.95 and 1.31.

    A DMA error ends the command with READ_ERROR or WRITE_ERROR (``dma_error`` bit 0: the write
    engine), but only once nothing of it is left in the DMA (DRAIN): after a write error the read
    words still coming for accepted read commands are taken and dropped; after a read error the
    writer completes the write commands the DMA has accepted (their data and ``dma_wr_done``), while
    the read engine discards the rest of its reads itself. So no word of a failed command reaches
    the next one, and no write command of it waits for data.

    Parameters
    ----------
    block : int
        Elements per block, a multiple of 8 (so a block's copy is whole beats); sizes the four
        buffers (``block / 4`` beats each, the copy ``block / 8``).
    rbits : int
        Random bits per stochastic weight rounding (the device's ``rbits``).
    addr_width, length_width : int
        The DMA's widths; ``2 * block`` bytes must fit ``length_width``.
    lanes : int
        The :class:`UpdateUnit`'s elements per cycle (4, 2 or 1); fewer make a block's computation
        take up to four times as long.

    Members
    -------
    cmd : In(stream(exec_layout))
        A checked UPDATE (``CommandEngine.exec_cmd``). Used fields: ``k`` (element count, at least 1),
        ``flags`` (MOMENTUM, WEIGHT_DECAY, OUT_STOCHASTIC, OVERFLOW_INF, OUT_FORMAT), ``scale``,
        ``seed``, ``addr_a`` (w), ``addr_b`` (g), ``addr_c`` (v), ``addr_d`` (copy) and the low 16 bits
        of ``stride_a``/``stride_b``/``stride_c`` (lr, mu, wd codes). Taken only in idle.
    done : Out(stream(done_layout))
        OK after the last write's ``dma_wr_done``; READ_ERROR / WRITE_ERROR after a DMA error (the
        rest of the command dropped, see above).
    abort : In(1)
        The engine's abort pulse: drop the command (the unit's pipeline is flushed), answer nothing.
    dma_rd_cmd, dma_rd_data, dma_wr_cmd, dma_wr_data, dma_rd_done, dma_wr_done, dma_error
        The engine's ``exec_dma_*`` ports (flipped), as :class:`~fp8train.hw.controller.TileController`'s.
        ``dma_rd_done`` is not needed: a read is complete when its ``last`` word is in.
    """

    def __init__(self, *, block: int = 128, rbits: int = 8, addr_width: int = 32, length_width: int = 20,
                 lanes: int = LANES):
        if not isinstance(block, int) or isinstance(block, bool) or block < ALIGN or block % ALIGN:
            raise ValueError(f"block must be a positive multiple of {ALIGN}, not {block!r}")
        if not isinstance(length_width, int) or 2 * block >= 1 << length_width:
            raise ValueError(f"length_width must hold a block's {2 * block} bytes, not {length_width!r}")
        self.block, self.addr_width, self.length_width = block, addr_width, length_width
        self.unit = UpdateUnit(rbits=rbits, lanes=lanes)
        super().__init__({
            **executor_members(addr_width, length_width),
        })

    def elaborate(self, platform):
        m = Module()
        block, aw = self.block, self.addr_width
        wide_beats, copy_beats = block // LANES, block // ALIGN
        flush = Signal()                        # abort, or a DMA error while the unit may hold beats
        m.submodules.unit = unit = ResetInserter(flush)(self.unit)
        # Two banks per buffer: the reader fills and computes one while the writer empties the other.
        bufs = {name: Memory(shape=BEAT, depth=2 * depth, init=[])
                for name, depth in (("w", wide_beats), ("g", wide_beats), ("v", wide_beats),
                                    ("copy", copy_beats))}
        for name, buf in bufs.items():
            m.submodules[f"{name}_buf"] = buf
        writes = {name: bufs[name].write_port(granularity=BEAT // 2 if name == "copy" else None)
                  for name in bufs}

        cmd = Signal(exec_layout(aw))
        momentum = _flag_bit(cmd.flags, Flag.MOMENTUM)
        copy_format = cmd.flags[FLAG_OUT_SHIFT:FLAG_OUT_SHIFT + 2]
        m.d.comb += [
            unit.seed.eq(self.cmd.p.seed), unit.load.eq(self.cmd.valid & self.cmd.ready),
            unit.momentum.eq(momentum), unit.weight_decay.eq(_flag_bit(cmd.flags, Flag.WEIGHT_DECAY)),
            unit.stochastic.eq(_flag_bit(cmd.flags, Flag.OUT_STOCHASTIC)),
            unit.saturate.eq(~_flag_bit(cmd.flags, Flag.OVERFLOW_INF)), unit.copy_format.eq(copy_format),
            unit.scale.eq(cmd.scale), unit.lr.eq(cmd.stride_a[:ELEM]), unit.mu.eq(cmd.stride_b[:ELEM]),
            unit.wd.eq(cmd.stride_c[:ELEM]),
        ]

        def geometry(first, name):
            """Whether the block at element ``first`` is the last, its elements and beats per FP16
            buffer."""
            left = Signal(len(first), name=f"{name}_left")
            elements = Signal(range(block + 1), name=f"{name}_elements")
            beats = Signal(range(wide_beats + 1), name=f"{name}_beats")
            m.d.comb += [left.eq(cmd.k - first), elements.eq(Mux(left < block, left, block)),
                         beats.eq((elements + LANES - 1) >> 2)]
            return left <= block, elements, beats

        def fetcher(name, ports, bank_offsets, end, active, taking, restart):
            """A one-beat register in front of ``ports`` (read ports, one per buffer), refilled
            whenever it is empty or being taken, with the beats ``0 .. end - 1`` of a bank."""
            index = Signal(range(wide_beats + 1), name=f"{name}_index")
            valid = Signal(name=f"{name}_valid")
            enable = ~valid | taking
            for port, offset in zip(ports, bank_offsets):
                m.d.comb += [port.addr.eq(offset + index), port.en.eq(enable)]
            with m.If(restart):
                m.d.sync += [index.eq(0), valid.eq(0)]
            with m.Elif(enable):
                more = active & (index < end)
                m.d.sync += valid.eq(more)
                with m.If(more):
                    m.d.sync += index.eq(index + 1)
            return valid

        code = Signal(8)
        dma_failed = self.dma_error != 0
        dma_code = Mux(self.dma_error[0], ErrorCode.WRITE_ERROR, ErrorCode.READ_ERROR)
        write_start = Signal()                  # the reader hands a computed block to the writer
        writer_busy = Signal()

        # -- Reader: reads a block's w, g (and v) into its bank, streams it through the unit (results
        # over w and v, copy into the copy buffer), hands the bank to the writer and takes the other.
        first, bank = Signal(range(MAX_UPDATE_COUNT + block + 1)), Signal()
        last_block, _, beats = geometry(first, "read")
        rd_sent, rd_stream = Signal(2), Signal(2)
        rd_streams = 2 + momentum
        beat = Signal(range(wide_beats + 1))                # beat of the read stream
        out_beat = Signal(range(wide_beats + 1))            # unit results taken
        compute_restart = Signal()

        error_exit = Signal()
        m.d.comb += flush.eq(self.abort | error_exit)

        def guard(*, dma=True):
            """A DMA error ends the command with its code (the rest is dropped, after DRAIN); abort
            drops it."""
            if dma:
                with m.If(dma_failed):
                    m.d.sync += code.eq(dma_code)
                    m.d.comb += error_exit.eq(1)
                    m.next = "DRAIN"
            with m.If(self.abort):
                m.next = "IDLE"

        with m.FSM(name="reader") as reader:
            with m.State("IDLE"):
                with m.If(self.cmd.valid & ~self.abort):
                    m.d.sync += [cmd.eq(self.cmd.p), first.eq(0), bank.eq(0), rd_sent.eq(0),
                                 rd_stream.eq(0), beat.eq(0)]
                    m.next = "READ"
            with m.State("READ"):
                with m.If(self.dma_rd_cmd.valid & self.dma_rd_cmd.ready):
                    m.d.sync += rd_sent.eq(rd_sent + 1)
                with m.If(self.dma_rd_data.valid):
                    m.d.sync += beat.eq(beat + 1)
                    with m.If(self.dma_rd_data.p.last):
                        m.d.sync += [rd_stream.eq(rd_stream + 1), beat.eq(0)]
                        with m.If(rd_stream == rd_streams - 1):
                            m.d.sync += out_beat.eq(0)
                            m.d.comb += compute_restart.eq(1)
                            m.next = "COMPUTE"
                guard()
            with m.State("COMPUTE"):
                with m.If(unit.o.valid):
                    m.d.sync += out_beat.eq(out_beat + 1)
                    with m.If(out_beat == beats - 1):
                        m.next = "HANDOFF"
                guard()
            with m.State("HANDOFF"):
                # The writer is idle, so it is done with the other bank, which is filled next.
                with m.If(~writer_busy):
                    m.d.comb += write_start.eq(1)
                    with m.If(last_block):
                        m.next = "FINISH"
                    with m.Else():
                        m.d.sync += [first.eq(first + block), bank.eq(~bank), rd_sent.eq(0),
                                     rd_stream.eq(0), beat.eq(0)]
                        m.next = "READ"
                guard()
            with m.State("FINISH"):
                with m.If(~writer_busy):
                    m.d.sync += code.eq(ErrorCode.OK)
                    m.next = "DONE"
                guard()
            with m.State("DRAIN"):
                # The DMA engine without the error finishes what it has accepted: a read's words
                # (after a write error) are taken and dropped, the writer completes its accepted
                # writes (after a read error), so nothing of this command reaches the next one.
                with m.If(self.dma_rd_data.valid & self.dma_rd_data.p.last):
                    m.d.sync += rd_stream.eq(rd_stream + 1)
                with m.If(((rd_stream == rd_sent) | ~self.dma_error[0]) & ~writer_busy):
                    m.next = "DONE"
                guard(dma=False)
            with m.State("DONE"):
                with m.If(self.done.ready):
                    m.next = "IDLE"
                guard(dma=False)
        reading, computing = reader.ongoing("READ"), reader.ongoing("COMPUTE")
        stopped = reader.ongoing("IDLE") | reader.ongoing("DONE")

        wide_base = Mux(bank, wide_beats, 0)
        compute_ports = [bufs[name].read_port() for name in ("w", "g", "v")]
        compute_valid = fetcher("compute", compute_ports, [wide_base] * 3, beats, computing,
                                unit.i.ready, compute_restart)
        rd_base = Mux(rd_sent == 0, cmd.addr_a, Mux(rd_sent == 1, cmd.addr_b, cmd.addr_c))
        m.d.comb += [
            self.dma_rd_cmd.valid.eq(reading & (rd_sent < rd_streams)),
            self.dma_rd_cmd.p.addr.eq(rd_base + (first << 1)),
            self.dma_rd_cmd.p.length.eq(beats << 3),
            self.dma_rd_data.ready.eq(reading | reader.ongoing("DRAIN")),
            unit.i.valid.eq(computing & compute_valid),
            unit.i.p.w.as_value().eq(compute_ports[0].data), unit.i.p.g.as_value().eq(compute_ports[1].data),
            unit.i.p.v.as_value().eq(compute_ports[2].data),
            unit.o.ready.eq(1),
        ]
        # DMA words into the bank's w, g, v; then the unit's results over w and v and into the copy.
        for index, name in enumerate(("w", "g", "v")):
            port = writes[name]
            m.d.comb += [port.addr.eq(wide_base + Mux(reading, beat, out_beat)),
                         port.data.eq(self.dma_rd_data.p.data),
                         port.en.eq(reading & self.dma_rd_data.valid & (rd_stream == index))]
        results = unit.o.valid & computing
        with m.If(results):
            m.d.comb += [writes["w"].data.eq(unit.o.p.w.as_value()), writes["w"].en.eq(1),
                         writes["v"].data.eq(unit.o.p.v.as_value()), writes["v"].en.eq(1)]
        half = unit.o.p.copy.as_value()
        m.d.comb += [writes["copy"].addr.eq(Mux(bank, copy_beats, 0) + (out_beat >> 1)),
                     writes["copy"].data.eq(Cat(half, half)),
                     writes["copy"].en.eq(Mux(results, Mux(out_beat[0], 0b10, 0b01), 0))]

        # -- Writer: w', v' (MOMENTUM) and the copy (OUT_FORMAT E5M2/E4M3) of a handed-over bank, each a
        # write command and its beats strobed to the block's elements; idle after every dma_wr_done.
        w_first, w_bank = Signal.like(first), Signal()
        _, w_elements, w_beats = geometry(w_first, "write")
        w_beats8 = Signal(range(copy_beats + 1))
        m.d.comb += w_beats8.eq((w_elements + ALIGN - 1) >> 3)
        wr_sent, wr_stream = Signal(2), Signal(2)        # streams issued or skipped, streamed out
        wr_accepted, wr_done = Signal(2), Signal(2)         # commands taken by the DMA, completed
        write_failed = dma_failed & self.dma_error[0]
        dropped = Signal()                                  # the DMA's done pulse after a write error
        wr_used = Cat(Const(1), momentum, copy_format != OutFormat.FP16_169)
        w_beat = Signal(range(wide_beats + 1))
        w_end = Mux(wr_stream == 2, w_beats8, w_beats)
        w_restart = Signal()
        with m.FSM(name="writer") as writer:
            with m.State("IDLE"):
                with m.If(write_start & ~self.abort):
                    m.d.sync += [w_first.eq(first), w_bank.eq(bank), wr_sent.eq(0), wr_stream.eq(0),
                                 wr_accepted.eq(0), wr_done.eq(0), w_beat.eq(0), dropped.eq(0)]
                    m.d.comb += w_restart.eq(1)
                    m.next = "WRITE"
            with m.State("WRITE"):
                issued = self.dma_wr_cmd.valid & self.dma_wr_cmd.ready
                with m.If(issued | ((wr_sent != 3) & ~wr_used.bit_select(wr_sent, 1) & ~dma_failed)):
                    m.d.sync += wr_sent.eq(wr_sent + 1)
                with m.If(issued):
                    m.d.sync += wr_accepted.eq(wr_accepted + 1)
                with m.If(wr_stream < wr_sent):         # a stream's data once its command is out
                    with m.If(~wr_used.bit_select(wr_stream, 1)):
                        m.d.sync += wr_stream.eq(wr_stream + 1)
                    with m.Elif(self.dma_wr_data.valid & self.dma_wr_data.ready):
                        m.d.sync += w_beat.eq(w_beat + 1)
                        with m.If(w_beat == w_end - 1):
                            m.d.sync += [wr_stream.eq(wr_stream + 1), w_beat.eq(0)]
                            m.d.comb += w_restart.eq(1)
                with m.If(self.dma_wr_done):
                    m.d.sync += wr_done.eq(wr_done + 1)
                    with m.If(write_failed):
                        m.d.sync += dropped.eq(1)
                # Done when every accepted command's data is out and its dma_wr_done is in: all three
                # streams normally, those accepted before a read error (no new command after it).
                # After a write error the DMA takes no more data and drops every command in flight
                # with one done pulse.
                all_done = Mux(write_failed, dropped | self.dma_wr_done,
                               (wr_done == wr_accepted) & (wr_stream == wr_sent))
                with m.If(all_done & ((wr_sent == 3) | dma_failed)):
                    m.next = "IDLE"
                with m.If(self.abort | stopped):
                    m.next = "IDLE"
        writing = writer.ongoing("WRITE")
        m.d.comb += writer_busy.eq(~writer.ongoing("IDLE"))

        write_ports = [bufs[name].read_port() for name in ("w", "v", "copy")]
        w_wide_base = Mux(w_bank, wide_beats, 0)
        write_valid = fetcher("write", write_ports, [w_wide_base, w_wide_base, Mux(w_bank, copy_beats, 0)],
                              w_end, writing & (wr_stream < wr_sent) & wr_used.bit_select(wr_stream, 1),
                              self.dma_wr_data.ready, w_restart)
        wr_base = Mux(wr_sent == 0, cmd.addr_a + (w_first << 1),
                      Mux(wr_sent == 1, cmd.addr_c + (w_first << 1), cmd.addr_d + w_first))
        valid_bytes = Signal(range(2 * block + 1))
        m.d.comb += valid_bytes.eq(Mux(wr_stream == 2, w_elements, w_elements << 1) - (w_beat << 3))
        m.d.comb += [
            self.dma_wr_cmd.valid.eq(writing & (wr_sent != 3) & wr_used.bit_select(wr_sent, 1) & ~dma_failed),
            self.dma_wr_cmd.p.addr.eq(wr_base),
            self.dma_wr_cmd.p.length.eq(Mux(wr_sent == 2, w_beats8, w_beats) << 3),
            self.dma_wr_data.valid.eq(writing & write_valid & (wr_stream < wr_sent)),
            self.dma_wr_data.p.data.eq(Mux(wr_stream == 0, write_ports[0].data,
                                           Mux(wr_stream == 1, write_ports[1].data, write_ports[2].data))),
            self.dma_wr_data.p.strb.eq(Cat(*((valid_bytes > byte) for byte in range(BEAT // 8)))),
        ]

        # Engine handshakes.
        m.d.comb += [self.cmd.ready.eq(reader.ongoing("IDLE") & ~self.abort),
                     self.done.valid.eq(reader.ongoing("DONE") & ~self.abort), self.done.p.code.eq(code)]
        return m
