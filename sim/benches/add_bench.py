"""cocotb bench: ``hw.arith.add.FpAdd`` against golden ``add`` (DESIGN.md §7.2).

Parameters (``bench_params()``): ``fmt`` (preset name, the elaboration), ``rbits`` (the elaboration),
``seed`` (every random choice), ``random`` (random cases per rounding mode; ``FP8TRAIN_LONG=1`` raises
it to ``long_random``), ``corners`` (cases per directed family, see :func:`directed_cases`),
``stall_cases`` (cases per handshake test).

Cases stream one per clock through :func:`~fp8train.sim.benches.lockstep.stream_lockstep`; each run
is one rounding mode and one overflow policy, as the unit's contract holds ``stochastic`` and
``saturate`` while beats flow.
"""

import cocotb
import numpy as np
from cocotb.utils import get_sim_time

from fp8train.formats import FP16, FloatFormat, by_name
from fp8train.sim.benches.lockstep import stream_lockstep, stream_stalled
from fp8train.sim.benches.streams import (CLOCK_NS, StreamPort, bench_params, long_run, reset,
                                          start_clock)
from fp8train.sim.golden import add

__all__ = ["special_codes", "random_cases", "directed_cases"]

ROUNDINGS = {"nearest": 0, "stochastic": 1}
OVERFLOWS = {"saturate": 1, "inf": 0}

#: Random cases are streamed and checked in batches of this many (bounds memory under test-long).
BATCH = 1 << 20


def _finite_fields(fmt: FloatFormat) -> tuple[int, int]:
    """Exclusive upper bounds of exponent and fraction fields that keep a code finite (for ``fn``
    formats the top binade minus its NaN code is left to the uniform cases)."""
    return (fmt.exp_max_field if fmt.specials == "ieee" else fmt.max_field[0]), 1 << fmt.man_bits


def special_codes(fmt: FloatFormat) -> np.ndarray:
    """Both signs of zero, the smallest and largest subnormal, the smallest normal and its
    neighbour, 1.0 and its lower neighbour, the largest finite value and its lower neighbour, the
    infinities and NaNs (quiet and signalling where they differ)."""
    top = (1 << fmt.man_bits) - 1
    max_exp, max_man = fmt.max_field
    one = fmt.bias << fmt.man_bits
    mags = [0, 1, top, 1 << fmt.man_bits, (1 << fmt.man_bits) + 1, one, one - 1, one + 1,
            fmt.max_code, fmt.max_code - 1, (max_exp << fmt.man_bits) | (max_man >> 1)]
    if fmt.specials == "ieee":
        mags += [fmt.inf_code, fmt.inf_code | 1, fmt.nan_code, fmt.inf_code | top]
    elif fmt.specials == "fn":
        mags += [fmt.nan_code]
    sign = 1 << (fmt.width - 1)
    return np.unique(np.array(mags + [m | sign for m in mags], dtype=np.int64))


def random_cases(fmt: FloatFormat, count: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """``count`` operand pairs: a quarter uniform over all codes (specials included), the rest
    finite with the second operand's exponent near the first's (alignment, cancellation, carry),
    within the sticky range, or its negation give or take a few ulps (massive cancellation)."""
    exp_end, man_end = _finite_fields(fmt)
    kind = rng.integers(0, 4, count)
    sign_a, sign_b = rng.integers(0, 2, (2, count))
    exp_a = rng.integers(0, exp_end, count)
    near = np.clip(exp_a + rng.integers(-3, 4, count), 0, exp_end - 1)
    sticky = np.clip(exp_a - rng.integers(0, fmt.man_bits + 16, count), 0, exp_end - 1)
    exp_b = np.where(kind == 2, sticky, near)
    a = fmt.pack(sign_a, exp_a, rng.integers(0, man_end, count)).astype(np.int64)
    b = fmt.pack(sign_b, exp_b, rng.integers(0, man_end, count)).astype(np.int64)
    sign = np.int64(1 << (fmt.width - 1))
    magnitude = np.clip((a & (sign - 1)) + rng.integers(-2, 3, count), 0, fmt.max_code)
    b = np.where(kind == 3, magnitude | ((a & sign) ^ sign), b)
    uniform = rng.random(count) < 0.25
    codes = rng.integers(0, 1 << fmt.width, (2, count))
    return np.where(uniform, codes[0], a), np.where(uniform, codes[1], b)


def directed_cases(fmt: FloatFormat, per_family: int, rng: np.random.Generator) -> dict:
    """Operand pairs by family, ``{name: (a, b)}``: every pair of :func:`special_codes`, then
    ``per_family`` seeded cases of each corner the adder's datapath has."""
    n = per_family
    man_end = 1 << fmt.man_bits
    top = man_end - 1
    exp_end = _finite_fields(fmt)[0]
    sign = np.int64(1 << (fmt.width - 1))
    specials = special_codes(fmt)
    s_a, s_b = np.meshgrid(specials, specials, indexing="ij")

    def pack(s, e, m):
        return fmt.pack(s, e, m).astype(np.int64)

    def finite(count, exp_lo=0, exp_hi=None):
        return pack(rng.integers(0, 2, count), rng.integers(exp_lo, exp_hi or exp_end, count),
                    rng.integers(0, man_end, count))

    families = {"special x special": (s_a.ravel(), s_b.ravel())}
    a = finite(n)
    magnitude = a & (sign - 1)
    neg = (a & sign) ^ sign
    families["a + -a"] = (a, magnitude | neg)
    families["a + -(a +- 1 ulp)"] = (np.concatenate([a, a]),
                                     np.concatenate([np.minimum(magnitude + 1, fmt.max_code) | neg,
                                                     np.maximum(magnitude - 1, 0) | neg]))
    e = rng.integers(1, exp_end, n)
    s = rng.integers(0, 2, n)
    for d in (0, 1, 2):                              # opposite signs, exponents d apart
        families[f"cancellation, exponents {d} apart"] = (
            pack(s, e, rng.integers(0, man_end, n)),
            pack(1 - s, np.maximum(e - d, 0), rng.integers(0, man_end, n)))
    families["carry into the next binade"] = (
        pack(s, e, rng.integers(man_end // 2, man_end, n)),
        pack(s, np.maximum(e - rng.integers(0, 3, n), 0), rng.integers(man_end // 2, man_end, n)))
    # 1.11...1 * 2**e plus something near half an ulp: rounding carries into the next binade.
    half_ulp = np.maximum(e - fmt.man_bits - 1, 0)
    families["round-up carry"] = (pack(s, e, np.full(n, top)),
                                  pack(s, half_ulp, rng.integers(0, man_end, n)))
    families["subnormal + subnormal"] = (pack(s, 0, rng.integers(0, man_end, n)),
                                         pack(rng.integers(0, 2, n), 0, rng.integers(0, man_end, n)))
    families["subnormal + subnormal -> normal"] = (pack(s, 0, rng.integers(man_end // 2, man_end, n)),
                                                   pack(s, 0, rng.integers(man_end // 2, man_end, n)))
    families["normal - normal -> subnormal"] = (
        pack(s, rng.integers(1, 3, n), rng.integers(0, man_end, n)),
        pack(1 - s, rng.integers(0, 3, n), rng.integers(0, man_end, n)))
    max_exp = fmt.max_field[0]
    families["overflow"] = (
        pack(s, max_exp, rng.integers(0, man_end, n) if fmt.specials == "ieee" else
             np.minimum(rng.integers(0, man_end, n), fmt.max_field[1])),
        pack(s, np.clip(max_exp - rng.integers(0, fmt.man_bits + 3, n), 0, exp_end - 1),
             rng.integers(0, man_end, n)))
    specials_b = specials[rng.integers(0, specials.size, n)]
    families["special + finite"] = (np.concatenate([specials_b, finite(n)]),
                                    np.concatenate([finite(n), specials_b]))
    # Exponent differences around and far beyond the alignment window: only the sticky bit is left.
    big_e = rng.integers(min(fmt.man_bits + 20, exp_end - 1), exp_end, n)
    gap = rng.integers(fmt.man_bits, fmt.man_bits + 20, n)
    families["huge exponent difference"] = (
        pack(s, big_e, rng.integers(0, man_end, n)),
        pack(rng.integers(0, 2, n), np.maximum(big_e - gap, 0), rng.integers(0, man_end, n)))
    families["huge exponent difference, tiny b"] = (
        pack(s, big_e, rng.integers(0, man_end, n)),
        pack(rng.integers(0, 2, n), 0, rng.integers(1, man_end, n)))
    return families


class AddTB:
    """Clock, reset and the streams of one ``FpAdd``, with golden checks of batches of cases."""

    def __init__(self, dut):
        self.dut = dut
        params = bench_params()
        self.fmt, self.rbits, self.seed = by_name(params["fmt"]), params["rbits"], params["seed"]
        self.params = params
        dut._log.info("seed %d", self.seed)
        self.width = self.fmt.width
        self.i, self.o = StreamPort(dut, "i"), StreamPort(dut, "o")
        self.i.valid.value = 0
        self.o.ready.value = 0
        dut.stochastic.value = 0
        dut.saturate.value = 1
        start_clock(dut)

    def beats(self, a, b, rand) -> list[int]:
        a, b, rand = (np.asarray(v, dtype=np.uint64) for v in (a, b, rand))
        w = np.uint64(self.width)
        return (a | (b << w) | (rand << (w + w))).tolist()

    def golden(self, a, b, rand, rounding, overflow) -> np.ndarray:
        kwargs = {"rand": rand, "rbits": self.rbits} if rounding == "stochastic" else {}
        return add(a, b, self.fmt, rounding, overflow=overflow, **kwargs).astype(np.int64)

    def compare(self, got, a, b, rand, rounding, overflow, label, names=None) -> None:
        """Fail naming the first wrong sum (and, with ``names``, the families of all wrong ones)."""
        want = self.golden(a, b, rand, rounding, overflow)
        bad = np.flatnonzero(got != want)
        if bad.size:
            k = bad[0]
            where = "" if names is None else f" in {sorted(set(names[bad].tolist()))}; first: {names[k]}"
            raise AssertionError(
                f"{label}, {rounding}/{overflow}: {bad.size} of {len(a)} sums wrong{where}; first at "
                f"case {k}: {self.fmt} {a[k]:#06x} + {b[k]:#06x} (rand {rand[k]:#x}) gave "
                f"{got[k]:#06x}, golden {want[k]:#06x} (seed {self.seed})")
        if self.fmt == FP16 and rounding == "nearest" and overflow == "inf":
            self.compare_numpy(got, a, b, label)

    def compare_numpy(self, got, a, b, label) -> None:
        """IEEE half sums straight from numpy (float32 sum rounded once: exact, 24 >= 2 * 11 + 2)."""
        with np.errstate(over="ignore", invalid="ignore"):
            want = (a.astype(np.uint16).view(np.float16) + b.astype(np.uint16).view(np.float16))
        got16 = got.astype(np.uint16).view(np.float16)
        bad = np.flatnonzero((got.astype(np.uint16) != want.view(np.uint16))
                             & ~(np.isnan(got16) & np.isnan(want)))
        if bad.size:
            k = bad[0]
            raise AssertionError(f"{label}: {bad.size} of {len(a)} FP16 sums differ from numpy float16; "
                                 f"first at case {k}: {a[k]:#06x} + {b[k]:#06x} gave {got[k]:#06x}, "
                                 f"numpy {int(want.view(np.uint16)[k]):#06x}")

    async def check(self, a, b, rand, rounding, overflow, label, names=None) -> None:
        """Stream ``(a, b, rand)`` one per clock in one mode, compare every sum with golden."""
        self.dut.stochastic.value = ROUNDINGS[rounding]
        self.dut.saturate.value = OVERFLOWS[overflow]
        got = await stream_lockstep(self.dut.clk, self.i, self.o, self.beats(a, b, rand))
        self.compare(got, a, b, rand, rounding, overflow, label, names)


@cocotb.test()
@cocotb.parametrize(rounding=list(ROUNDINGS))
async def test_random(dut, rounding):
    """``random`` seeded cases per rounding mode, half with each overflow policy, one per clock."""
    tb = AddTB(dut)
    await reset(dut)
    total = tb.params["long_random"] if long_run() else tb.params["random"]
    rng = np.random.default_rng([tb.seed, ROUNDINGS[rounding]])
    batch = min(BATCH, (total + 1) // 2)            # batches alternate the overflow policy
    start = get_sim_time("ns")
    for index, first in enumerate(range(0, total, batch)):
        count = min(batch, total - first)
        a, b = random_cases(tb.fmt, count, rng)
        rand = rng.integers(0, 1 << tb.rbits, count)
        await tb.check(a, b, rand, rounding, list(OVERFLOWS)[index % 2], f"random batch {index}")
    cycles = round((get_sim_time("ns") - start) / CLOCK_NS)
    dut._log.info("%d %s cases in %d cycles", total, rounding, cycles)


@cocotb.test()
async def test_directed(dut):
    """Every directed family in nearest-even and in stochastic rounding with ``rand`` all zeros
    (never rounds up), all ones (rounds up iff the top ``rbits`` remainder bits are not all zero;
    with a far smaller operand they are, by the sticky bit alone, the borrowed unit of an effective
    subtraction) and random, under both overflow policies."""
    tb = AddTB(dut)
    await reset(dut)
    rng = np.random.default_rng([tb.seed, 2])
    families = directed_cases(tb.fmt, tb.params["corners"], rng)
    a = np.concatenate([pair[0] for pair in families.values()])
    b = np.concatenate([pair[1] for pair in families.values()])
    names = np.concatenate([[name] * len(pair[0]) for name, pair in families.items()])
    top = (1 << tb.rbits) - 1
    rands = {"nearest": [("any", rng.integers(0, top + 1, a.size))],
             "stochastic": [("0", np.zeros(a.size, np.int64)), ("2^r-1", np.full(a.size, top)),
                            ("random", rng.integers(0, top + 1, a.size))]}
    for rounding, choices in rands.items():
        for rand_label, rand in choices:
            for overflow in OVERFLOWS:
                await tb.check(a, b, rand, rounding, overflow, f"directed, rand {rand_label}", names)
    dut._log.info("%d directed cases x 8 modes in %d families", a.size, len(families))


@cocotb.test()
@cocotb.parametrize((("in_stall", "out_stall"), [("random", None), (None, "random"), ("random", "random")]))
async def test_handshake(dut, in_stall, out_stall):
    """Random cases under idle input and backpressure: nothing lost, duplicated or reordered."""
    tb = AddTB(dut)
    await reset(dut)
    rng = np.random.default_rng([tb.seed, 3])
    count = tb.params["stall_cases"]
    a, b = random_cases(tb.fmt, count, rng)
    rand = rng.integers(0, 1 << tb.rbits, count)
    dut.stochastic.value = 1
    dut.saturate.value = 1
    got = await stream_stalled(dut.clk, tb.i, tb.o, tb.beats(a, b, rand), in_stall, out_stall, tb.seed)
    tb.compare(got, a, b, rand, "stochastic", "saturate", f"stalls {in_stall}/{out_stall}")
