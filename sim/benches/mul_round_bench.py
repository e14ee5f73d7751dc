"""cocotb bench: ``hw.arith.mul_round.FpMulRound`` against the golden rounding of the exact product
(``fmt.encode(fmt.decode(a) * fmt.decode(b))``, as ``sim.golden.update`` multiplies) (DESIGN.md §7.2).

Parameters (``bench_params()``): ``fmt`` (preset name, the elaboration), ``seed`` (every random
choice), ``random`` (random cases per overflow policy; ``FP8TRAIN_LONG=1`` raises it to
``long_random``), ``corners`` (cases per directed family, see :func:`directed_cases`), ``stall_cases``
(cases per handshake test). For IEEE ``FP16`` every nearest-even product with overflow to inf is also
compared with numpy's float16 multiplication.
"""

import cocotb
import numpy as np

from fp8train.formats import FP16, FloatFormat, by_name
from fp8train.sim.benches.add_bench import special_codes
from fp8train.sim.benches.lockstep import stream_lockstep, stream_stalled
from fp8train.sim.benches.streams import StreamPort, bench_params, long_run, reset, start_clock

__all__ = ["golden_products", "random_cases", "directed_cases"]

OVERFLOWS = {"saturate": 1, "inf": 0}

#: Random cases are streamed and checked in batches of this many (bounds memory under test-long).
BATCH = 1 << 20


def golden_products(a, b, fmt: FloatFormat, overflow: str) -> np.ndarray:
    """The exact float64 product (``2 * (man_bits + 1) <= 53`` bits) rounded once to nearest-even."""
    with np.errstate(invalid="ignore"):             # inf * 0 is NaN, as specified
        return fmt.encode(fmt.decode(a) * fmt.decode(b), overflow=overflow).astype(np.int64)


def _pack(fmt, s, e, m):
    return fmt.pack(s, e, m).astype(np.int64)


def random_cases(fmt: FloatFormat, count: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """``count`` pairs: a quarter uniform over all codes, the rest finite with exponent fields
    putting the product within a few binades of 1.0 (the bulk of the range) or of the overflow
    and underflow edges, where the product's exponent matters most."""
    exp_end = fmt.max_field[0] + 1
    man_end = 1 << fmt.man_bits
    kind = rng.integers(0, 3, count)
    exp_a = rng.integers(0, exp_end, count)
    target = 2 * fmt.bias + np.choose(kind, [0, fmt.emax, fmt.emin - fmt.man_bits])
    exp_b = np.clip(target - exp_a + rng.integers(-4, 5, count), 0, exp_end - 1)
    sign_a, sign_b = rng.integers(0, 2, (2, count))
    a = _pack(fmt, sign_a, exp_a, rng.integers(0, man_end, count))
    b = _pack(fmt, sign_b, exp_b, rng.integers(0, man_end, count))
    uniform = rng.random(count) < 0.25
    codes = rng.integers(0, 1 << fmt.width, (2, count))
    return np.where(uniform, codes[0], a), np.where(uniform, codes[1], b)


def directed_cases(fmt: FloatFormat, per_family: int, rng: np.random.Generator) -> dict:
    """Operand pairs by family, ``{name: (a, b)}``: every pair of special codes, then ``per_family``
    seeded cases of each corner of the multiplier's datapath."""
    n = per_family
    man_end = 1 << fmt.man_bits
    max_exp = fmt.max_field[0]
    specials = special_codes(fmt)
    s_a, s_b = np.meshgrid(specials, specials, indexing="ij")
    s = rng.integers(0, 2, n)
    t = rng.integers(0, 2, n)

    def man():
        return rng.integers(0, man_end, n)

    def exps_summing_to(total, spread):
        """Exponent fields with ``e_a + e_b = total +- spread``: product exponent ``total - 2 * bias``."""
        e_a = rng.integers(max(0, total - max_exp), min(max_exp, total) + 1, n)
        return e_a, np.clip(total - e_a + rng.integers(-spread, spread + 1, n), 0, max_exp)

    families = {"special x special": (s_a.ravel(), s_b.ravel())}
    e_a, e_b = exps_summing_to(2 * fmt.bias + fmt.emax, 1)
    families["overflow edge"] = (_pack(fmt, s, e_a, man()), _pack(fmt, t, e_b, man()))
    # Significand products just below 2 in the largest binade: the largest finite value, or a
    # rounding up into overflow.
    e_a, e_b = exps_summing_to(2 * fmt.bias + fmt.emax, 0)
    man_a = rng.integers(0, man_end, n)
    man_b = np.clip(np.floor((2 * man_end / (man_end + man_a) - 1) * man_end).astype(np.int64)
                    + rng.integers(-2, 1, n), 0, man_end - 1)
    families["largest binade, products just below 2"] = (_pack(fmt, s, e_a, man_a),
                                                          _pack(fmt, t, e_b, man_b))
    e_a, e_b = exps_summing_to(2 * fmt.bias + fmt.emin, 1)
    families["smallest normal edge"] = (_pack(fmt, s, e_a, man()), _pack(fmt, t, e_b, man()))
    for depth in (1, fmt.man_bits // 2, fmt.man_bits, fmt.man_bits + 1, fmt.man_bits + 2):
        e_a, e_b = exps_summing_to(2 * fmt.bias + fmt.emin - depth, 0)
        families[f"subnormal result, {depth} binades down"] = (
            _pack(fmt, s, e_a, man()), _pack(fmt, t, e_b, man()))
    families["subnormal x normal"] = (_pack(fmt, s, 0, man()),
                                      _pack(fmt, t, rng.integers(fmt.bias, max_exp + 1, n), man()))
    families["subnormal x subnormal (underflow)"] = (_pack(fmt, s, 0, man()), _pack(fmt, t, 0, man()))
    # Fractions with few low bits set make exact products and exact ties (remainder 1000...0).
    sparse = man_end - (1 << rng.integers(0, fmt.man_bits + 1, (2, n)))
    e_a, e_b = exps_summing_to(2 * fmt.bias, 3)
    families["ties and exact products"] = (_pack(fmt, s, e_a, sparse[0] & man()),
                                           _pack(fmt, t, e_b, (sparse[1] >> 1) | 1))
    ones = np.full(n, man_end - 1)
    families["1.11..1 x 1.11..1 (carry into the next binade)"] = (
        _pack(fmt, s, e_a, ones), _pack(fmt, t, e_b, ones - rng.integers(0, 4, n)))
    specials_b = specials[rng.integers(0, specials.size, n)]
    finite = _pack(fmt, s, rng.integers(0, max_exp + 1, n), man())
    families["special x finite"] = (np.concatenate([specials_b, finite]), np.concatenate([finite, specials_b]))
    return families


class MulRoundTB:
    """Clock, reset and the streams of one ``FpMulRound``, with golden checks of batches of pairs."""

    def __init__(self, dut):
        self.dut = dut
        params = bench_params()
        self.fmt, self.seed, self.params = by_name(params["fmt"]), params["seed"], params
        dut._log.info("seed %d", self.seed)
        self.i, self.o = StreamPort(dut, "i"), StreamPort(dut, "o")
        self.i.valid.value = 0
        self.o.ready.value = 0
        dut.saturate.value = 1
        start_clock(dut)

    def beats(self, a, b) -> list[int]:
        return (np.asarray(a, np.int64) | (np.asarray(b, np.int64) << self.fmt.width)).tolist()

    def compare(self, got, a, b, overflow, label, names=None) -> None:
        """Fail naming the first wrong product (and, with ``names``, the families of all wrong ones)."""
        want = golden_products(a, b, self.fmt, overflow)
        bad = np.flatnonzero(got != want)
        if bad.size:
            k = bad[0]
            where = "" if names is None else f" in {sorted(set(names[bad].tolist()))}; first: {names[k]}"
            raise AssertionError(
                f"{label}, {overflow}: {bad.size} of {len(a)} products wrong{where}; first at case {k}: "
                f"{self.fmt} {a[k]:#06x} * {b[k]:#06x} gave {got[k]:#06x}, golden {want[k]:#06x} "
                f"(seed {self.seed})")
        if self.fmt == FP16 and overflow == "inf":
            self.compare_numpy(got, a, b, label)

    def compare_numpy(self, got, a, b, label) -> None:
        """IEEE half products straight from numpy (the float32 product is exact: 22 <= 24 bits)."""
        with np.errstate(over="ignore", invalid="ignore"):
            want = a.astype(np.uint16).view(np.float16) * b.astype(np.uint16).view(np.float16)
        got16 = got.astype(np.uint16).view(np.float16)
        bad = np.flatnonzero((got.astype(np.uint16) != want.view(np.uint16))
                             & ~(np.isnan(got16) & np.isnan(want)))
        if bad.size:
            k = bad[0]
            raise AssertionError(f"{label}: {bad.size} of {len(a)} FP16 products differ from numpy "
                                 f"float16; first at case {k}: {a[k]:#06x} * {b[k]:#06x} gave "
                                 f"{got[k]:#06x}, numpy {int(want.view(np.uint16)[k]):#06x}")

    async def check(self, a, b, overflow, label, names=None) -> None:
        """Stream the pairs one per clock under one overflow policy; compare with golden."""
        self.dut.saturate.value = OVERFLOWS[overflow]
        got = await stream_lockstep(self.dut.clk, self.i, self.o, self.beats(a, b))
        self.compare(got, a, b, overflow, label, names)


@cocotb.test()
async def test_random(dut):
    """``random`` seeded pairs, in batches alternating the overflow policy, one per clock."""
    tb = MulRoundTB(dut)
    await reset(dut)
    total = tb.params["long_random"] if long_run() else tb.params["random"]
    rng = np.random.default_rng([tb.seed, 1])
    batch = min(BATCH, (total + 1) // 2)
    for index, first in enumerate(range(0, total, batch)):
        a, b = random_cases(tb.fmt, min(batch, total - first), rng)
        await tb.check(a, b, list(OVERFLOWS)[index % 2], f"random batch {index}")


@cocotb.test()
async def test_directed(dut):
    """Every directed family under both overflow policies."""
    tb = MulRoundTB(dut)
    await reset(dut)
    families = directed_cases(tb.fmt, tb.params["corners"], np.random.default_rng([tb.seed, 2]))
    a = np.concatenate([pair[0] for pair in families.values()])
    b = np.concatenate([pair[1] for pair in families.values()])
    names = np.concatenate([[name] * len(pair[0]) for name, pair in families.items()])
    for overflow in OVERFLOWS:
        await tb.check(a, b, overflow, "directed", names)
    dut._log.info("%d directed cases x 2 overflow policies in %d families", a.size, len(families))


@cocotb.test()
@cocotb.parametrize((("in_stall", "out_stall"), [("random", None), (None, "random"), ("random", "random")]))
async def test_handshake(dut, in_stall, out_stall):
    """Random pairs under idle input and backpressure: nothing lost, duplicated or reordered."""
    tb = MulRoundTB(dut)
    await reset(dut)
    a, b = random_cases(tb.fmt, tb.params["stall_cases"], np.random.default_rng([tb.seed, 3]))
    got = await stream_stalled(dut.clk, tb.i, tb.o, tb.beats(a, b), in_stall, out_stall, tb.seed)
    tb.compare(got, a, b, "saturate", f"stalls {in_stall}/{out_stall}")
