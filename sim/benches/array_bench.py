"""cocotb bench: ``hw.array.systolic.SystolicArray`` against golden ``matmul``, tile by tile.

Every cycle is scripted in advance (beats, random bubbles, the spacing rule between ``last`` beats)
and played in one loop that also records ``o[r]`` and ``mac_active``; then every result is checked
for its value (golden ``matmul`` of the tile, or the tile's slice of the whole GEMM's golden result)
and for its cycle (``L + LATENCY + r + 2*c``), and ``mac_active`` for every cycle.

Parameters (``bench_params()``): ``rows``, ``cols``, ``rbits`` (the elaboration), ``seed``,
``reduced`` (Icarus: no long dot products).
"""

import dataclasses

import cocotb
import numpy as np
from cocotb.triggers import ReadOnly, RisingEdge

from fp8train.formats import E5M2
from fp8train.hw.array.systolic import LATENCY, feed_layout
from fp8train.sim.benches.streams import bench_params, long_run, reset, start_clock
from fp8train.sim.golden import matmul
from fp8train.sim.golden.lfsr import LfsrBank, col_key, row_key

ROUNDINGS = {"nearest": 0, "stochastic": 1}


@dataclasses.dataclass
class Tile:
    """One pass: operands, options, global position and the golden result (``mask``: checked values)."""
    a: np.ndarray            # rows x K codes
    b: np.ndarray            # K x cols codes
    chunk: int
    rounding: str
    saturate: int
    seed: int
    i0: int
    j0: int
    want: np.ndarray
    mask: np.ndarray

    @property
    def depth(self) -> int:
        return self.a.shape[1]


class ArrayTB:
    """Clock, reset, operand generation, the cycle script and the checks of one ``SystolicArray``."""

    def __init__(self, dut):
        self.dut = dut
        params = bench_params()
        self.rows, self.cols, self.rbits = params["rows"], params["cols"], params["rbits"]
        self.reduced = params.get("reduced", False)
        self.seed = params["seed"]
        layout = feed_layout(E5M2, self.rows, self.cols)
        self.offset = {name: layout[name].offset for name in ("a", "b", "first", "last", "row_key", "col_key")}
        self.outputs = [(getattr(dut, f"o__{r}__valid"), getattr(dut, f"o__{r}__payload"))
                        for r in range(self.rows)]
        dut.feed__valid.value = 0
        dut.feed__payload.value = 0
        for port in ("chunk", "stochastic", "saturate", "seed"):
            getattr(dut, port).value = 0
        start_clock(dut)

    # -- operands and golden results -------------------------------------------------------------
    @staticmethod
    def operands(rng: np.random.Generator, shape: tuple, kind: str) -> np.ndarray:
        """E5M2 codes: ``random`` finite codes, ``ones`` values near 1 (Wang et al.'s swamping case),
        ``specials`` random codes with inf/NaN left in, ``big`` the largest finite values."""
        if kind == "ones":
            return E5M2.encode(rng.uniform(0.5, 1.5, shape))
        if kind == "big":
            return np.full(shape, E5M2.max_code, dtype=np.uint8)
        codes = rng.integers(0, 256, shape, dtype=np.uint8)
        special = (codes & 0x7C) == 0x7C
        if kind == "specials":
            special &= rng.random(shape) > 0.03                  # keep about 3 % of them
        return np.where(special, np.uint8(0x3C), codes)         # 1.0 in place of inf/NaN

    def golden(self, a, b, chunk, rounding, saturate, seed, i0, j0) -> np.ndarray:
        lfsr = (LfsrBank.for_outputs(seed, a.shape[0], b.shape[1], self.rbits, row0=i0, col0=j0)
                if rounding == "stochastic" else None)
        return matmul(a, b, chunk=chunk if chunk else a.shape[1], rounding=rounding, lfsr=lfsr,
                      overflow="saturate" if saturate else "inf")

    def tile(self, rng, chunk, depth, kind, rounding, saturate, lockup=None) -> Tile:
        """A tile at a random global position, its golden result from its own lanes. ``lockup``
        (``"first"`` or ``"last"``) picks the seed that would start the lane of PE (0, 0) or of
        PE (R-1, C-1) in the all-zero state, so that it starts in the fallback state."""
        a = self.operands(rng, (self.rows, depth), kind)
        b = self.operands(rng, (depth, self.cols), kind)
        seed, i0, j0 = int(rng.integers(1 << 32)), int(rng.integers(5000)), int(rng.integers(5000))
        if lockup:
            r, c = (0, 0) if lockup == "first" else (self.rows - 1, self.cols - 1)
            seed = row_key(i0 + r) ^ col_key(j0 + c) ^ int(rng.integers(2)) << 31
        want = self.golden(a, b, chunk, rounding, saturate, seed, i0, j0)
        return Tile(a, b, chunk, rounding, saturate, seed, i0, j0, want, np.ones(want.shape, bool))

    def gemm_tiles(self, rng, m, n, depth, chunk, rounding) -> list[Tile]:
        """An M x N x K GEMM cut into tiles (edges padded with zeros) whose expected results are the
        slices of one golden ``matmul`` over the whole matrices, lanes seeded by global coordinates."""
        a, b = self.operands(rng, (m, depth), "random"), self.operands(rng, (depth, n), "random")
        seed = int(rng.integers(1 << 32))
        whole = self.golden(a, b, chunk, rounding, 1, seed, 0, 0)
        rows, cols = self.rows, self.cols
        pad_m, pad_n = -m % rows, -n % cols
        a_pad = np.pad(a, ((0, pad_m), (0, 0)))
        b_pad = np.pad(b, ((0, 0), (0, pad_n)))
        want_pad = np.pad(whole, ((0, pad_m), (0, pad_n)))
        mask_pad = np.pad(np.ones(whole.shape, bool), ((0, pad_m), (0, pad_n)))
        tiles = []
        for i0 in range(0, m, rows):
            for j0 in range(0, n, cols):
                tiles.append(Tile(a_pad[i0:i0 + rows], b_pad[:, j0:j0 + cols], chunk, rounding, 1, seed,
                                  i0, j0, want_pad[i0:i0 + rows, j0:j0 + cols],
                                  mask_pad[i0:i0 + rows, j0:j0 + cols]))
        return tiles

    # -- the cycle script ------------------------------------------------------------------------
    def payload(self, tile: Tile, k: int, rng) -> int:
        """Beat k of ``tile``; keys on the first beat, random bits in their place otherwise."""
        off = self.offset
        word = 0
        for r in range(self.rows):
            word |= int(tile.a[r, k]) << (off["a"] + 8 * r)
        for c in range(self.cols):
            word |= int(tile.b[k, c]) << (off["b"] + 8 * c)
        word |= int(k == 0) << off["first"] | int(k == tile.depth - 1) << off["last"]
        first = k == 0
        for r in range(self.rows):
            key = row_key(tile.i0 + r) if first else int(rng.integers(1 << 32))
            word |= key << (off["row_key"] + 32 * r)
        for c in range(self.cols):
            key = col_key(tile.j0 + c) if first else int(rng.integers(1 << 32))
            word |= key << (off["col_key"] + 32 * c)
        return word

    def script(self, tiles: list[Tile], rng, bubble_rate: float) -> tuple[list, list[int]]:
        """Per cycle ``(valid, payload, chunk, stochastic, saturate, seed)``, and each tile's last-beat
        cycle. Bubbles carry random operands and options; the options are held inside a tile, the seed
        and keys are right on first beats only; ``last`` beats keep the ``2*C - 1`` spacing."""
        spacing = 2 * self.cols - 1
        cycles, lasts = [], []
        width = sum(8 * n for n in (self.rows, self.cols)) + 2 + 32 * (self.rows + self.cols)

        def bubble(options):
            cycles.append((0, int(rng.integers(1 << 62)) % (1 << width), *options, int(rng.integers(1 << 32))))

        for tile in tiles:
            for _ in range(int(rng.integers(0, 4)) if bubble_rate else 0):
                bubble((int(rng.integers(8)), int(rng.integers(2)), int(rng.integers(2))))
            options = (tile.chunk, ROUNDINGS[tile.rounding], tile.saturate)
            for k in range(tile.depth):
                while rng.random() < bubble_rate:
                    bubble(options)
                if k == tile.depth - 1:
                    while lasts and len(cycles) - lasts[-1] < spacing:
                        bubble(options)
                    lasts.append(len(cycles))
                seed = tile.seed if k == 0 else int(rng.integers(1 << 32))
                cycles.append((1, self.payload(tile, k, rng), *options, seed))
        return cycles, lasts

    async def play(self, cycles: list) -> tuple[list[dict], list[int]]:
        """Drive the script, then idle until the grid is empty; returns ``{cycle: value}`` per row
        and ``mac_active`` per cycle."""
        dut = self.dut
        tail = LATENCY + self.rows + 2 * self.cols + 2
        seen = [{} for _ in range(self.rows)]
        active = []
        edge, settled = RisingEdge(dut.clk), ReadOnly()
        idle = (0, 0, 0, 0, 0, 0)
        for n in range(len(cycles) + tail):
            valid, word, chunk, stochastic, saturate, seed = cycles[n] if n < len(cycles) else idle
            dut.feed__valid.value = valid
            dut.feed__payload.value = word
            dut.chunk.value = chunk
            dut.stochastic.value = stochastic
            dut.saturate.value = saturate
            dut.seed.value = seed
            await settled
            for r, (o_valid, o_payload) in enumerate(self.outputs):
                if o_valid.value == 1:
                    seen[r][n] = int(o_payload.value)
            active.append(int(dut.mac_active.value))
            await edge
        return seen, active

    async def run(self, tiles: list[Tile], rng, bubble_rate: float, label: str) -> None:
        """Play ``tiles`` back to back and check every result, its cycle, and ``mac_active``."""
        cycles, lasts = self.script(tiles, rng, bubble_rate)
        self.dut._log.info("%s: %d tiles in %d cycles", label, len(tiles), len(cycles))
        seen, active = await self.play(cycles)
        errors = []
        for t, (tile, last) in enumerate(zip(tiles, lasts)):
            for r in range(self.rows):
                for c in range(self.cols):
                    at = last + LATENCY + r + 2 * c
                    got = seen[r].pop(at, None)
                    want = int(tile.want[r, c])
                    where = (f"tile {t} (K {tile.depth}, chunk {tile.chunk}, {tile.rounding}, "
                             f"saturate {tile.saturate}) row {r} col {c}")
                    if got is None:
                        errors.append(f"{where}: no result in cycle {at} (want {want:#06x})")
                    elif tile.mask[r, c] and got != want:
                        errors.append(f"{where}: got {got:#06x}, want {want:#06x}")
        for r in range(self.rows):
            for n, value in sorted(seen[r].items()):
                errors.append(f"row {r}: unexpected result {value:#06x} in cycle {n}")
        assert not errors, f"{label} (seed {self.seed}): {len(errors)} errors; first: {errors[0]}"

        # mac_active in cycle n counts the beats fed in cycle n - 2 - d on diagonal d = r + c.
        valid = np.array([cycle[0] for cycle in cycles] + [0] * (len(active) - len(cycles)))
        diagonal = np.bincount(np.add.outer(np.arange(self.rows), np.arange(self.cols)).ravel())
        want = np.convolve(valid, diagonal)[:len(active)]
        want = np.concatenate([[0, 0], want])[:len(active)]
        bad = np.flatnonzero(np.array(active) != want)
        assert bad.size == 0, (f"{label}: mac_active wrong in {bad.size} cycles; first in cycle {bad[0]}: "
                               f"{active[bad[0]]} != {want[bad[0]]}")
        assert sum(active) == self.rows * self.cols * sum(t.depth for t in tiles)


def corner_cases(cols: int, reduced: bool) -> list[tuple]:
    """``(chunk, K, kind, rounding, saturate[, lockup])``: one beat, K below the array width, chunk
    edges, chunk 1, plain accumulation, long dot products (not under Icarus), overflow both ways,
    specials, lanes whose seeded state is zero (near-1 values: most of their additions round)."""
    cases = [(0, 1, "random", "nearest", 1), (4, 1, "random", "stochastic", 1),
             (4, max(1, cols - 1), "random", "stochastic", 1), (0, 2, "ones", "nearest", 1),
             (4, 3, "random", "nearest", 1), (4, 4, "ones", "stochastic", 1),
             (4, 5, "random", "stochastic", 1), (16, 15, "ones", "nearest", 1),
             (16, 16, "random", "stochastic", 1), (16, 17, "ones", "stochastic", 1),
             (1, 7, "random", "stochastic", 1), (0, 40, "ones", "stochastic", 1),
             (64, 63, "ones", "stochastic", 1), (64, 65, "ones", "nearest", 1),
             (4, 6, "big", "nearest", 1), (4, 6, "big", "stochastic", 0),
             (8, 30, "specials", "stochastic", 1), (0, 20, "ones", "nearest", 0),
             (8, 40, "ones", "stochastic", 1, "first"), (8, 40, "ones", "stochastic", 1, "last")]
    if not reduced:
        cases += [(64, 300, "ones", "stochastic", 1), (64, 300, "random", "nearest", 1),
                  (0, 290, "ones", "nearest", 1), (32, 301, "ones", "stochastic", 0)]
    if long_run():
        cases += [(64, 4096, "ones", "stochastic", 1), (0, 4096, "ones", "nearest", 1)]
    return cases


@cocotb.test()
@cocotb.parametrize(bubbles=[0.0, 0.25])
async def test_tiles_match_golden(dut, bubbles):
    """The corner cases back to back (tightest spacing, or with random bubbles), each tile against
    golden ``matmul`` with its own global position and seed."""
    tb = ArrayTB(dut)
    await reset(dut)
    rng = np.random.default_rng([tb.seed, int(bubbles * 100)])
    tiles = [tb.tile(rng, *case) for case in corner_cases(tb.cols, tb.reduced)]
    await tb.run(tiles, rng, bubbles, f"corner tiles, bubble rate {bubbles}")


@cocotb.test()
@cocotb.parametrize(rounding=list(ROUNDINGS))
async def test_tiled_gemm_matches_whole_golden(dut, rounding):
    """A GEMM larger than the array, with padded edges, tiled: the tiles together equal one golden
    ``matmul`` of the whole matrices (stochastic lanes seeded by global output coordinates)."""
    tb = ArrayTB(dut)
    await reset(dut)
    rng = np.random.default_rng([tb.seed, ROUNDINGS[rounding]])
    m, n = 2 * tb.rows + 1, 2 * tb.cols - 1 if tb.cols > 1 else 2
    depth = 9 if tb.reduced else 37
    tiles = tb.gemm_tiles(rng, m, n, depth, 8, rounding)
    await tb.run(tiles, rng, 0.1, f"{m} x {n} x {depth} GEMM, {rounding}")
