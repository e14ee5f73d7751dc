"""Output-stationary systolic array: one R x C tile of a chunk-accumulated GEMM per pass
(DESIGN.md section 3), bit-exact with golden :func:`~fp8train.sim.golden.matmul`.
"""

from amaranth.hdl import Module, Mux, Signal
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from fp8train.sim.golden.lfsr import STATE_BITS

from ...formats import E5M2, FP16_169, FloatFormat
from ..arith.layouts import fp_layout
from ..arith.mul import check_exact_product
from .pe import CONTROL, ProcessingElement, check_rbits, col_layout, row_layout

__all__ = ["SystolicArray", "feed_layout", "MAX_SIDE", "LATENCY"]

#: Largest number of rows or columns.
MAX_SIDE = 32

#: Cycles from a tile's ``last`` beat at ``feed`` to the result of PE (0, 0) on ``o[0]``; PE (r, c)'s
#: result follows ``r + 2 * c`` cycles later (see :class:`SystolicArray`).
LATENCY = 4


def feed_layout(in_fmt: FloatFormat, rows: int, cols: int) -> data.StructLayout:
    """Payload of :class:`SystolicArray`'s ``feed``: one k step of a tile."""
    return data.StructLayout({
        "a": data.ArrayLayout(fp_layout(in_fmt), rows),
        "b": data.ArrayLayout(fp_layout(in_fmt), cols),
        "first": 1,
        "last": 1,
        "row_key": data.ArrayLayout(32, rows),
        "col_key": data.ArrayLayout(32, cols),
    })


def _delayed(m: Module, value, cycles: int, name: str):
    """``value`` through ``cycles`` registers (the skew of one row or column)."""
    for stage in range(cycles):
        reg = Signal.like(value, name=f"{name}_{stage}")
        m.d.sync += reg.eq(value)
        value = reg
    return value


def _popcount(bits: list):
    """Sum of one-bit values as a balanced adder tree."""
    values = list(bits)
    while len(values) > 1:
        values = [values[i] + values[i + 1] if i + 1 < len(values) else values[i]
                  for i in range(0, len(values), 2)]
    return values[0]


class SystolicArray(wiring.Component):
    """An output-stationary ``rows x cols`` grid of :class:`~fp8train.hw.array.pe.ProcessingElement`.

    A pass computes the tile ``C[i0:i0+R, j0:j0+C] = A[i0:i0+R, :] @ B[:, j0:j0+C]`` (R = ``rows``,
    C = ``cols``): beat k of the tile carries column k of the A block and row k of the B block. The
    array skews them itself (row r's operand is delayed r cycles, column c's c cycles; operands then
    move right / down one PE per cycle), so the controller feeds unskewed vectors. There is no
    stall: a cycle with ``feed.valid = 0`` passes through the grid as a bubble.

    Every PE sums its products as golden ``chunk_dot`` (multiply, chunk addition, one total addition
    per chunk) and rounds with its own LFSR lane, seeded on the tile's ``first`` beat with golden
    ``output_state(seed, i0 + r, j0 + c)`` = ``(seed ^ row_key ^ col_key) & (2**31 - 1)`` (or
    ``OUTPUT_FALLBACK_STATE`` if zero) and drawing ``2 * rbits`` bits on every valid beat, ``first``
    included; so a GEMM tiled over the array equals golden ``matmul(..., lfsr=LfsrBank.for_outputs(
    seed, M, N, rbits))`` bit for bit whatever the tiling.

    Timing contract (cycle numbers count clock edges: a beat "in cycle t" is sampled by edge t)

    * Result of PE (r, c) of a tile whose ``last`` beat is in cycle L: ``o[r].valid = 1`` with
      ``o[r].payload`` = that result in cycle ``L + LATENCY + r + 2*c`` (``LATENCY`` = 4), i.e. row r
      emits its C results in column order 0..C-1 on every other cycle (in cycles
      ``L + 4 + r``, ``L + 6 + r``, ..., ``L + 2 + r + 2*C``), nothing in between. The tile's last
      result (PE (R-1, C-1)) is in cycle ``L + 4 + (R - 1) + 2*(C - 1)``; the minimum latency, from
      a beat to a result (K = 1, PE (0, 0)), is 4 cycles.
    * Spacing: the ``last`` beats of consecutive tiles must be at least ``2*C - 1`` cycles apart
      (``L' - L >= 2*C - 1``; the controller adds bubbles when K is shorter). Results drain toward
      column 0 one PE per cycle while the next tile computes; PE c's result of the next tile would
      overwrite a result of the previous one still passing through exactly when ``L' - L`` is one of
      ``2, 4, ..., 2*(C - 1 - c)``, so odd spacings are also safe, but only ``>= 2*C - 1`` is part of
      the contract. The first beats need no spacing beyond that of the last beats.

    Parameters
    ----------
    rows, cols : int
        Grid size, 1 to 32 each.
    in_fmt : FloatFormat
        Format of the ``a`` and ``b`` operands.
    acc_fmt : FloatFormat
        Accumulation and result format; it must hold every product exactly.
    rbits : int
        Random bits per stochastic rounding, 1 to 14 (a beat draws ``2 * rbits`` bits per PE).
    max_chunk : int
        Largest chunk length (>= 1); sets the width of the ``chunk`` port.

    Members
    -------
    feed : In(stream.Signature(feed_layout(in_fmt, rows, cols), always_ready=True))
        One k step per valid beat: ``a[r]`` = A[i0 + r, k], ``b[c]`` = B[k, j0 + c], ``first``
        (k = 0), ``last`` (k = K - 1; a one-beat tile has both), and on the ``first`` beat the keys
        ``row_key[r]`` = golden ``row_key(i0 + r)``, ``col_key[c]`` = ``col_key(j0 + c)``
        (bit 31 of a key, like that of ``seed``, does not matter: a lane has 31 bits).
    chunk : In(range(max_chunk + 1))
        Products per chunk (0, or a chunk at least K, is plain accumulation), as ``ChunkMac``.
    stochastic : In(1)
        Rounding of both additions: 0 nearest-even, 1 stochastic.
    saturate : In(1)
        Overflow clamps to the largest finite value when 1, gives inf when 0.
    seed : In(32)
        The GEMM's seed.
    o : Out(stream.Signature(acc_fmt.width, always_ready=True)).array(rows)
        Row r's results (``acc_fmt`` codes), timed as above; no backpressure.
    mac_active : Out(range(rows * cols + 1))
        Number of PEs that multiplied a valid beat in the previous cycle (a registered popcount of the
        PEs' valid input registers), for the MAC-active performance counter. A beat fed in cycle t is
        in PE (r, c) in cycle ``t + 1 + r + c`` and counted in ``mac_active`` in ``t + 2 + r + c``;
        over a tile's life the counts add up to ``K * rows * cols``.

    ``seed`` and the keys are read on ``first`` beats only; ``chunk``, ``stochastic`` and
    ``saturate`` are read with every valid beat and must be held from a tile's first beat to its last
    (they may change between tiles without draining the array).
    """

    def __init__(self, *, rows: int, cols: int, in_fmt: FloatFormat = E5M2,
                 acc_fmt: FloatFormat = FP16_169, rbits: int = 8, max_chunk: int = 4096):
        for label, side in (("rows", rows), ("cols", cols)):
            if isinstance(side, bool) or not isinstance(side, int) or not 1 <= side <= MAX_SIDE:
                raise ValueError(f"{label} must be an integer from 1 to {MAX_SIDE}, not {side!r}")
        for label, fmt in (("in_fmt", in_fmt), ("acc_fmt", acc_fmt)):
            if not isinstance(fmt, FloatFormat):
                raise TypeError(f"{label} must be a FloatFormat, not {fmt!r}")
        check_exact_product(in_fmt, in_fmt, acc_fmt)
        check_rbits(rbits)
        if isinstance(max_chunk, bool) or not isinstance(max_chunk, int) or max_chunk < 1:
            raise ValueError(f"max_chunk must be a positive integer, not {max_chunk!r}")
        self.rows, self.cols = rows, cols
        self.in_fmt, self.acc_fmt = in_fmt, acc_fmt
        self.rbits, self.max_chunk = rbits, max_chunk
        super().__init__({
            "feed": In(stream.Signature(feed_layout(in_fmt, rows, cols), always_ready=True)),
            "chunk": In(range(max_chunk + 1)),
            "stochastic": In(1),
            "saturate": In(1),
            "seed": In(32),
            "o": Out(stream.Signature(acc_fmt.width, always_ready=True)).array(rows),
            "mac_active": Out(range(rows * cols + 1)),
        })

    def elaborate(self, platform):
        m = Module()
        rows, cols, feed = self.rows, self.cols, self.feed.payload

        # Chunk ends are counted once, at the edge, and travel with the beat.
        count = Signal(range(self.max_chunk), name="chunk_count")
        count_now = Mux(feed.first, 0, count)
        chunk_end = ((self.chunk != 0) & (count_now == self.chunk - 1)) | feed.last
        with m.If(self.feed.valid):
            m.d.sync += count.eq(Mux(chunk_end, 0, count_now + 1))
        edge_ctl = Signal(CONTROL, name="edge_ctl")
        m.d.comb += [edge_ctl.valid.eq(self.feed.valid), edge_ctl.first.eq(feed.first),
                     edge_ctl.last.eq(feed.last), edge_ctl.chunk_end.eq(chunk_end),
                     edge_ctl.stochastic.eq(self.stochastic), edge_ctl.saturate.eq(self.saturate)]

        pes = [[ProcessingElement(in_fmt=self.in_fmt, acc_fmt=self.acc_fmt, rbits=self.rbits)
                for _ in range(cols)] for _ in range(rows)]
        for r in range(rows):
            for c in range(cols):
                m.submodules[f"pe_{r}_{c}"] = pes[r][c]

        # Skew: row r enters r cycles late, column c c cycles late.
        for r in range(rows):
            west = Signal(row_layout(self.in_fmt), name=f"row{r}_in")
            m.d.comb += [west.a.eq(feed.a[r]),
                         west.key.eq((self.seed ^ feed.row_key[r])[:STATE_BITS])]
            m.d.comb += pes[r][0].west.eq(_delayed(m, west, r, f"row{r}_skew"))
        for c in range(cols):
            north = Signal(col_layout(self.in_fmt), name=f"col{c}_in")
            m.d.comb += [north.b.eq(feed.b[c]), north.key.eq(feed.col_key[c][:STATE_BITS])]
            m.d.comb += pes[0][c].north.eq(_delayed(m, north, c, f"col{c}_skew"))

        # Neighbours: operands right and down, flags down column 0 then right, results left.
        for r in range(rows):
            for c in range(cols):
                pe = pes[r][c]
                if c > 0:
                    m.d.comb += [pe.west.eq(pes[r][c - 1].east), pe.ctl_in.eq(pes[r][c - 1].ctl_out)]
                elif r > 0:
                    m.d.comb += pe.ctl_in.eq(pes[r - 1][0].ctl_out)
                else:
                    m.d.comb += pe.ctl_in.eq(edge_ctl)
                if r > 0:
                    m.d.comb += pe.north.eq(pes[r - 1][c].south)
                if c + 1 < cols:
                    wiring.connect(m, pes[r][c + 1].drain_out, pe.drain_in)
            wiring.connect(m, pes[r][0].drain_out, wiring.flipped(self.o[r]))

        m.d.sync += self.mac_active.eq(_popcount([pe.ctl_out.valid for row in pes for pe in row]))
        return m
