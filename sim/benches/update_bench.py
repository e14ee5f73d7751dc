"""cocotb bench: ``hw.update.UpdateUnit`` against golden ``sgd_update`` (DESIGN.md §7.2).

Every mode (momentum, weight decay, rounding, overflow policy, copy format) runs on seeded random
elements (realistic weights, gradients and momenta mixed with arbitrary codes, specials included) with
random lr/mu/wd codes, scale and seed; the last beat of each run is partial, its padding elements
random too (the lanes draw for them as golden does). Parameters (``bench_params()``): ``rbits`` (the
elaboration), ``seed``, ``elements`` (per mode; ``FP8TRAIN_LONG=1`` multiplies by 10) and
``stall_elements`` (per handshake case).
"""

import itertools

import cocotb
import numpy as np
from cocotb.triggers import RisingEdge, SimTimeoutError, with_timeout
from cocotb.utils import get_sim_time

from fp8train.formats import E4M3, E5M2, FP16_169
from fp8train.hw.update import LATENCY
from fp8train.protocol import OutFormat
from fp8train.sim.benches.lockstep import STALL_SLACK
from fp8train.sim.benches.streams import (CLOCK_NS, StreamPort, bench_params, collect, drive, long_run,
                                          reset, stalls, start_clock)
from fp8train.sim.golden.lfsr import OUTPUT_FALLBACK_STATE, STATE_MASK, col_key, output_state, row_key
from fp8train.sim.golden.update import LANES, sgd_update

__all__ = ["random_codes", "random_options"]

ELEM = FP16_169.width
BEAT = ELEM * LANES
COPY = {None: OutFormat.FP16_169, E5M2: OutFormat.E5M2, E4M3: OutFormat.E4M3}
MODES = list(itertools.product([False, True], [False, True], ["nearest", "stochastic"], ["saturate", "inf"],
                               list(COPY)))


def random_codes(rng: np.random.Generator, count: int, log2_scale: float) -> np.ndarray:
    """FP16_169 codes: 80 % normal values of spread ``2**log2_scale`` (nearest-even), 20 % any code."""
    values = FP16_169.encode(rng.normal(size=count) * 2.0 ** log2_scale)
    return np.where(rng.random(count) < 0.2, rng.integers(0, 1 << ELEM, count), values).astype(np.int64)


def random_options(rng: np.random.Generator) -> dict:
    """lr, mu, wd codes (mostly typical values, sometimes any code), scale and seed of one command."""
    def factor(typical):
        return int(rng.integers(0, 1 << ELEM) if rng.random() < 0.15 else FP16_169.encode(typical))
    scale = int(rng.choice([-128, 127])) if rng.random() < 0.1 else int(rng.integers(-24, 8))
    return {"lr": factor(2.0 ** -rng.uniform(0, 14)), "momentum": factor(rng.uniform(0.5, 1.0)),
            "weight_decay": factor(2.0 ** -rng.uniform(4, 20)), "scale": scale,
            "seed": int(rng.integers(0, 1 << 32))}


def fallback_seed(lane: int) -> int:
    """The seed that would start ``lane`` in the all-zero state: it starts at the fallback state."""
    seed = (row_key(lane) ^ col_key(0)) & STATE_MASK
    assert output_state(seed, lane, 0) == OUTPUT_FALLBACK_STATE
    return seed


def _pack(lanes: np.ndarray, width: int) -> list[int]:
    """Rows of ``LANES`` codes as integers, lane p in bits ``p * width`` up."""
    return [sum(int(code) << (p * width) for p, code in enumerate(row)) for row in lanes]


def _unpack(beats: np.ndarray, shift: int, width: int) -> np.ndarray:
    return np.array([[(int(b) >> (shift + p * width)) & ((1 << width) - 1) for p in range(LANES)]
                     for b in beats], dtype=np.int64).ravel()


class UpdateTB:
    """Clock, reset, the unit's streams and options, and a golden check of one command's elements."""

    def __init__(self, dut):
        self.dut = dut
        params = bench_params()
        self.rbits, self.seed = params["rbits"], params["seed"]
        self.groups = LANES // params["lanes"]        # cycles per beat
        self.params = params
        dut._log.info("seed %d", self.seed)
        self.i, self.o = StreamPort(dut, "i"), StreamPort(dut, "o")
        self.i.valid.value = 0
        self.o.ready.value = 0
        dut.load.value = 0
        start_clock(dut)

    async def configure(self, momentum, weight_decay, rounding, overflow, copy_fmt, options) -> None:
        """Set the command's options and load the lanes (one edge with ``load``)."""
        dut = self.dut
        dut.momentum.value, dut.weight_decay.value = int(momentum), int(weight_decay)
        dut.stochastic.value = int(rounding == "stochastic")
        dut.saturate.value = int(overflow == "saturate")
        dut.copy_format.value = int(COPY[copy_fmt])
        dut.scale.value = options["scale"] & 0xFF
        dut.lr.value, dut.mu.value, dut.wd.value = options["lr"], options["momentum"], options["weight_decay"]
        dut.seed.value = options["seed"]
        dut.load.value = 1
        await RisingEdge(dut.clk)
        dut.load.value = 0

    async def stream(self, beats, in_stall=None, out_stall=None) -> tuple[list[int], int]:
        """Send ``beats`` and take as many results (payloads wider than 64 bits, so not
        ``lockstep``'s int64 arrays); returns them and the cycles from the first beat offered to the
        last result taken. Fails if results are lost (``STALL_SLACK`` cycles per beat)."""
        start = get_sim_time("ns")
        sender = cocotb.start_soon(drive(self.dut.clk, self.i, beats, stalls(in_stall, self.seed + 1)))
        limit = STALL_SLACK * len(beats) * self.groups + LATENCY + 20
        try:
            got = await with_timeout(collect(self.dut.clk, self.o, len(beats), stalls(out_stall, self.seed + 2)),
                                     limit * CLOCK_NS, "ns")
        except SimTimeoutError:
            sender.cancel()
            raise AssertionError(f"{len(beats)} beats sent (stalls {in_stall}/{out_stall}), but not all "
                                 f"results came out within {limit} cycles: beats were lost") from None
        await sender
        return got, round((get_sim_time("ns") - start) / CLOCK_NS)

    def elements(self, rng, count):
        """w, g, v codes of ``count`` elements padded with random codes to whole beats."""
        padded = -(-count // LANES) * LANES
        return (random_codes(rng, padded, 0), random_codes(rng, padded, rng.uniform(-10, 12)),
                random_codes(rng, padded, rng.uniform(-12, 0)))

    def beats(self, w, g, v) -> list[int]:
        words = [_pack(x.reshape(-1, LANES), ELEM) for x in (w, g, v)]
        return [a | b << BEAT | c << (2 * BEAT) for a, b, c in zip(*words)]

    def compare(self, got, w, g, v, count, mode, options, label) -> None:
        """Fail naming the output and element of the first mismatch with golden ``sgd_update``."""
        momentum, weight_decay, rounding, overflow, copy_fmt = mode
        w_new, v_new, copy = sgd_update(
            w[:count], g[:count], lr=options["lr"], v=v[:count] if momentum else None,
            momentum=options["momentum"] if momentum else None,
            weight_decay=options["weight_decay"] if weight_decay else None, scale=options["scale"],
            rounding=rounding, seed=options["seed"], rbits=self.rbits, copy_fmt=copy_fmt, overflow=overflow)
        outputs = {"w": (_unpack(got, 0, ELEM), w_new), "v": (_unpack(got, BEAT, ELEM), v_new),
                   "copy": (_unpack(got, 2 * BEAT, 8), copy)}
        for name, (have, want) in outputs.items():
            if want is None:
                continue
            have, want = have[:count], want.astype(np.int64)
            bad = np.flatnonzero(have != want)
            if bad.size:
                k = bad[0]
                raise AssertionError(
                    f"{label}: {bad.size} of {count} {name} codes wrong in mode momentum={momentum} "
                    f"weight_decay={weight_decay} {rounding}/{overflow} copy={copy_fmt}, options {options}; "
                    f"first element {k}: w {w[k]:#06x} g {g[k]:#06x} v {v[k]:#06x} gave {have[k]:#x}, golden "
                    f"{want[k]:#x} (seed {self.seed})")


@cocotb.test()
async def test_modes(dut):
    """Every mode on ``elements`` random elements (a partial last beat): one beat per ``4 / lanes``
    clocks, the last result :data:`LATENCY` cycles after the last beat's last group. Four stochastic modes use a seed that
    puts one lane on the fallback state (golden ``output_state``)."""
    tb = UpdateTB(dut)
    await reset(dut)
    rng = np.random.default_rng([tb.seed, 1])
    per_mode = tb.params["elements"] * (10 if long_run() else 1)
    for index, mode in enumerate(MODES):
        count = per_mode - int(rng.integers(1, LANES))         # never a whole number of beats
        options = random_options(rng)
        if index % 12 == 7:                                   # stochastic modes, one per lane
            options["seed"] = fallback_seed(index // 12 % LANES)
        w, g, v = tb.elements(rng, count)
        await tb.configure(*mode, options)
        beats = tb.beats(w, g, v)
        got, cycles = await tb.stream(beats)
        assert cycles == len(beats) * tb.groups + LATENCY, (
            f"mode {index}: {len(beats)} beats took {cycles} cycles, not {len(beats)} x {tb.groups} "
            f"+ latency {LATENCY}")
        tb.compare(got, w, g, v, count, mode, options, f"mode {index}")
    dut._log.info("%d modes x %d elements", len(MODES), per_mode)


@cocotb.test()
@cocotb.parametrize((("in_stall", "out_stall"), [("random", None), (None, "random"), ("random", "random")]))
async def test_handshake(dut, in_stall, out_stall):
    """Stochastic rounding with momentum, weight decay and a copy under idle input and backpressure:
    every beat comes out once, in order, with its own random bits."""
    tb = UpdateTB(dut)
    await reset(dut)
    rng = np.random.default_rng([tb.seed, 2])
    count = tb.params["stall_elements"] - 1
    mode = (True, True, "stochastic", "saturate", E5M2)
    options = random_options(rng)
    w, g, v = tb.elements(rng, count)
    await tb.configure(*mode, options)
    got, _ = await tb.stream(tb.beats(w, g, v), in_stall, out_stall)
    tb.compare(got, w, g, v, count, mode, options, f"stalls {in_stall}/{out_stall}")
