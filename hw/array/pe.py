"""Processing element of the output-stationary systolic array (DESIGN.md section 3).

One PE owns one output of the tile: it multiplies the operands passing through it, accumulates the
exact products in chunks (the order of golden :func:`~fp8train.sim.golden.chunk_dot`, as
:class:`~fp8train.hw.arith.mac.ChunkMac`) and, when the dot product ends, puts the total into its
drain register. Operands, beat flags and the stochastic-rounding keys travel on through it one
register later, so a grid of PEs needs no other wiring than neighbour to neighbour.
"""

from amaranth.hdl import Const, Module, Mux, Signal
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from fp8train.sim.golden.lfsr import OUTPUT_FALLBACK_STATE, STATE_BITS

from ...formats import E5M2, FP16_169, FloatFormat
from ..arith.add import add_codes
from ..arith.layouts import fp_layout
from ..arith.lfsr import lfsr_draw
from ..arith.mul import check_exact_product, mul_codes

__all__ = ["PipelinedPE", "ProcessingElement", "CONTROL", "row_layout", "col_layout", "check_rbits"]

#: The flags of one beat, travelling with it through the grid (down column 0, then along each row).
#: ``chunk_end`` (the beat ends a chunk: the array's chunk counter or ``last``) and the rounding
#: options are decided once at the array's edge, so a PE needs no chunk counter of its own and a tile
#: may change the options without waiting for the previous tile to leave the grid.
CONTROL = data.StructLayout({"valid": 1, "first": 1, "last": 1, "chunk_end": 1,
                             "stochastic": 1, "saturate": 1})


def row_layout(in_fmt: FloatFormat) -> data.StructLayout:
    """What moves right along a row: the ``a`` operand and the row's lane key
    (``(seed ^ row_key) & (2**31 - 1)``, meaningful on a tile's first beat)."""
    return data.StructLayout({"a": fp_layout(in_fmt), "key": STATE_BITS})


def col_layout(in_fmt: FloatFormat) -> data.StructLayout:
    """What moves down a column: the ``b`` operand and the column's lane key (``col_key & (2**31 - 1)``)."""
    return data.StructLayout({"b": fp_layout(in_fmt), "key": STATE_BITS})


def check_rbits(rbits) -> None:
    """A beat draws ``2 * rbits`` bits from one 31-bit lane, which holds at most 28 new bits."""
    if isinstance(rbits, bool) or not isinstance(rbits, int) or not 1 <= rbits <= 14:
        raise ValueError(f"rbits must be an integer from 1 to 14, not {rbits!r}")


class PipelinedPE(wiring.Component):
    """The pipeline shared by :class:`ProcessingElement` and the FP32 comparison PE
    (:class:`~fp8train.hw.reference.pe.ReferencePE`): input registers, LFSR lane, chunk and total
    accumulators, drain register. A subclass says how a beat's product is formed, as
    ``_product(m, a, b, beat)`` returning the ``acc_fmt`` code of ``a * b`` (operand codes in the input
    registers, ``beat`` their flags), and which formats it accepts; ``in_fmt`` and ``acc_fmt`` are checked to be formats here.
    """

    def __init__(self, *, in_fmt: FloatFormat, acc_fmt: FloatFormat, rbits: int):
        for label, fmt in (("in_fmt", in_fmt), ("acc_fmt", acc_fmt)):
            if not isinstance(fmt, FloatFormat):
                raise TypeError(f"{label} must be a FloatFormat, not {fmt!r}")
        check_rbits(rbits)
        self._in_fmt, self._acc_fmt, self._rbits = in_fmt, acc_fmt, rbits
        drain = stream.Signature(acc_fmt.width, always_ready=True)
        super().__init__({
            "west": In(row_layout(in_fmt)), "east": Out(row_layout(in_fmt)),
            "north": In(col_layout(in_fmt)), "south": Out(col_layout(in_fmt)),
            "ctl_in": In(CONTROL), "ctl_out": Out(CONTROL),
            "drain_in": In(drain), "drain_out": Out(drain),
        })

    def elaborate(self, platform):
        m = Module()
        acc_fmt, rbits = self._acc_fmt, self._rbits

        # Input registers: the beat in this PE, and what the neighbours see next cycle.
        beat = self.ctl_out
        m.d.sync += [beat.eq(self.ctl_in), self.east.a.eq(self.west.a), self.south.b.eq(self.north.b)]
        with m.If(self.ctl_in.valid & self.ctl_in.first):
            m.d.sync += [self.east.key.eq(self.west.key), self.south.key.eq(self.north.key)]

        # Stage 1: the product and this beat's random bits.
        product = self._product(m, self.east.a, self.south.b, beat)
        mixed = self.east.key ^ self.south.key
        lane = Signal(STATE_BITS, init=OUTPUT_FALLBACK_STATE, name="lane")
        current = Signal(STATE_BITS, name="lane_current")
        m.d.comb += current.eq(Mux(beat.first, Mux(mixed.any(), mixed, Const(OUTPUT_FALLBACK_STATE)), lane))
        drawn, advanced = lfsr_draw(current, 2 * rbits)
        with m.If(beat.valid):
            m.d.sync += lane.eq(advanced)
        p_valid, p_code, p_rand = Signal(), Signal(acc_fmt.width), Signal(2 * rbits)
        p_beat = Signal(CONTROL)
        m.d.sync += [p_valid.eq(beat.valid), p_code.eq(product), p_rand.eq(drawn), p_beat.eq(beat)]

        # Stages 2 and 3 share one adder. Stage 2 adds the beat's product to the chunk accumulator; a
        # chunk's first beat needs no adder (+0 + p is p, but -0 becomes +0). Stage 3 adds an ended
        # chunk to the total in the cycle after the chunk's last beat, and in that cycle stage 2 holds
        # either no beat or the next chunk's first: the two never need the adder at once.
        chunk_acc, chunk_restart = Signal(acc_fmt.width), Signal(init=1)
        restart = chunk_restart | p_beat.first
        c_valid, c_code, c_rand, c_beat = Signal(), Signal(acc_fmt.width), Signal(rbits), Signal(CONTROL)
        c_first_chunk = Signal()
        total, total_restart = Signal(acc_fmt.width), Signal(init=1)
        negative_zero = 1 << (acc_fmt.width - 1)
        first_term = Mux(p_code == negative_zero, 0, p_code)
        accumulated = Mux(c_valid, Mux(total_restart | c_first_chunk, 0, total), chunk_acc)
        added = add_codes(m, acc_fmt, accumulated, Mux(c_valid, c_code, p_code),
                      stochastic=Mux(c_valid, c_beat.stochastic, p_beat.stochastic),
                      rand=Mux(c_valid, c_rand, p_rand[:rbits]),
                      saturate=Mux(c_valid, c_beat.saturate, p_beat.saturate), name="add")
        chunk_sum = Signal(acc_fmt.width, name="chunk_sum")
        m.d.comb += chunk_sum.eq(Mux(restart, first_term, added))

        # Stage 2: the loop restarts from +0 after a chunk ends and on a tile's first beat (so a tile
        # abandoned before its last beat leaves nothing behind).
        in_first_chunk = Signal()              # the chunk in progress began with the tile's first beat
        first_chunk = Signal()
        m.d.comb += first_chunk.eq(p_beat.first | (in_first_chunk & ~chunk_restart))
        m.d.sync += [c_valid.eq(p_valid & p_beat.chunk_end), c_code.eq(chunk_sum),
                     c_rand.eq(p_rand[rbits:]), c_beat.eq(p_beat), c_first_chunk.eq(first_chunk)]
        with m.If(p_valid):
            m.d.sync += [chunk_acc.eq(chunk_sum), chunk_restart.eq(p_beat.chunk_end),
                         in_first_chunk.eq(first_chunk)]

        # Stage 3: the total, one addition per chunk, restarting with the tile's first chunk; the dot
        # product's last chunk completes it.
        with m.If(c_valid):
            m.d.sync += [total.eq(added), total_restart.eq(c_beat.last)]

        # Drain: a completed total enters; otherwise the east neighbour's register moves in.
        with m.If(c_valid & c_beat.last):
            m.d.sync += [self.drain_out.payload.eq(added), self.drain_out.valid.eq(1)]
        with m.Else():
            m.d.sync += [self.drain_out.payload.eq(self.drain_in.payload),
                         self.drain_out.valid.eq(self.drain_in.valid)]
        return m


class ProcessingElement(PipelinedPE):
    """One output of the systolic array: exact product, chunk accumulator, total, drain register.

    Pipeline (a beat held in the PE's input registers in cycle ``t``):

    * ``t``: the input registers (``east``, ``south``, ``ctl_out``, also the neighbours' inputs) hold
      the beat; the exact product is formed and the lane draws ``2 * rbits`` bits. On a ``first`` beat
      the lane draws from its start state ``(row key ^ column key)`` (or ``OUTPUT_FALLBACK_STATE``
      when that is zero), as golden ``output_state``; every valid beat advances it, golden
      ``matmul``'s two draws per k step (low half: chunk addition, high half: total addition).
    * ``t + 1``: chunk addition ``chunk_acc + product`` (the one-cycle loop of ``ChunkMac``).
    * ``t + 2``: on a chunk end, total addition, in the same adder: a chunk's first beat is not
      added (``+0 + p`` is ``p``), and the beat in stage ``t + 1`` then is either none or the next
      chunk's first. On the ``last`` beat the new total goes into the drain register, which holds it
      in ``t + 3``. One adder instead of two halves the PE (README "Resources and Fmax").

    The drain register otherwise copies ``drain_in`` (the east neighbour's drain register) every
    cycle: results shift toward column 0, one PE per cycle. A completing total wins over the shifted
    value; the array's spacing rule keeps the two from meeting.

    The chunk addition's loop closes in one cycle (the critical path, DESIGN.md section 8). The way to
    a higher clock is to pipeline the adder and interleave independent outputs through it (e.g. a PE
    holding several outputs of different tiles), never to split one output's sum into partial sums.

    Parameters
    ----------
    in_fmt : FloatFormat
        Operand format.
    acc_fmt : FloatFormat
        Accumulation format; it must hold every product exactly.
    rbits : int
        Random bits per stochastic rounding, 1 to 14.

    Members
    -------
    west : In(row_layout(in_fmt))
        ``a`` and the row key from the west neighbour (or the array's row skew).
    east : Out(row_layout(in_fmt))
        ``west`` one cycle later (the key is taken only with a valid ``first`` beat and held).
    north : In(col_layout(in_fmt))
        ``b`` and the column key from the north neighbour (or the array's column skew).
    south : Out(col_layout(in_fmt))
        ``north`` one cycle later (the key as in ``east``).
    ctl_in : In(CONTROL)
        The flags of the beat arriving with ``west``/``north``.
    ctl_out : Out(CONTROL)
        ``ctl_in`` one cycle later: the beat in this PE's input registers (``ctl_out.valid`` means the
        PE multiplies this cycle).
    drain_in : In(stream.Signature(acc_fmt.width, always_ready=True))
        The east neighbour's drain register (``valid`` 0 at the east edge).
    drain_out : Out(stream.Signature(acc_fmt.width, always_ready=True))
        This PE's drain register.
    """

    def __init__(self, *, in_fmt: FloatFormat = E5M2, acc_fmt: FloatFormat = FP16_169, rbits: int = 8):
        super().__init__(in_fmt=in_fmt, acc_fmt=acc_fmt, rbits=rbits)
        check_exact_product(in_fmt, in_fmt, acc_fmt)

    def _product(self, m, a, b, beat):
        """Exact: ``acc_fmt`` holds every product of two ``in_fmt`` values."""
        return mul_codes(m, self._in_fmt, self._in_fmt, self._acc_fmt, a, b, name="product")
