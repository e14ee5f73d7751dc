"""Golden arithmetic (sim/golden/arith.py) against external truth (DESIGN.md section 2, section 7 layer 1).

References: numpy float16 addition (float32 sum, innocuous double rounding), ml_dtypes casts from float32,
and exact sums as :class:`fractions.Fraction` rounded by the rule of DESIGN.md section 2 written here
again from the text. Every RNG is seeded; failures name the seed and the first mismatch in hex.
"""

from fractions import Fraction

import ml_dtypes
import numpy as np
import pytest

from fp8train.formats import BF16, E4M3, E5M2, FP16, FP16_169, FloatFormat
from fp8train.sim.golden import add, chunk_dot, convert, matmul, mul
from fp8train.sim.golden.lfsr import LfsrBank

SEED = 0x5EED_F8


# -- independent references -----------------------------------------------------------------------
def ref_value(fmt: FloatFormat, code: int):
    """Exact value of one code: a Fraction, or a float inf/NaN (written from the field definitions)."""
    negative = code >> (fmt.exp_bits + fmt.man_bits) & 1
    e = code >> fmt.man_bits & ((1 << fmt.exp_bits) - 1)
    m = code & ((1 << fmt.man_bits) - 1)
    top = e == (1 << fmt.exp_bits) - 1
    if (fmt.specials == "ieee" and top) or (fmt.specials == "fn" and top and m == (1 << fmt.man_bits) - 1):
        return float("nan") if m or fmt.specials == "fn" else (-1) ** negative * float("inf")
    if e == 0 and not fmt.subnormals:
        m = 0
    value = Fraction(m + (1 << fmt.man_bits if e else 0)) * Fraction(2) ** (max(e, 1) - fmt.bias - fmt.man_bits)
    return -value if negative else value


class Codebook:
    """Value <-> code tables of one format built from :func:`ref_value` (not from the golden model)."""

    def __init__(self, fmt):
        self.fmt = fmt
        self.sign = 1 << (fmt.width - 1)
        self.code = {}
        for c in range(self.sign):
            v = ref_value(fmt, c)
            if v == v:                                             # not NaN
                self.code.setdefault(v, c)
        top = max(v for v in self.code if v != float("inf"))
        assert top == Fraction(fmt.max_finite)
        self.max = top

    def encode(self, negative, value):
        """Code of ``(-1)**negative * value`` (value a non-negative Fraction, inf, or None for NaN)."""
        if value is None:
            return None
        return self.code[value] | (self.sign if negative else 0)


def binade(m: Fraction) -> int:
    """floor(log2(m)) of a positive Fraction."""
    e = m.numerator.bit_length() - m.denominator.bit_length()
    return e if m >= Fraction(2) ** e else e - 1


def ref_round(book: Codebook, x, rounding="nearest", R=None, r=None, overflow="saturate"):
    """Code of the exact value ``x`` (Fraction, +-inf or NaN) rounded into ``book.fmt``.

    DESIGN.md section 2: ``q`` target ulps and a remainder ``f``; nearest rounds up iff ``f > 1/2`` or
    ``f == 1/2`` and ``q`` odd; stochastic truncates ``f`` to ``t = floor(f * 2**r)`` and rounds up iff
    ``t + R >= 2**r``; the sign is applied after; the binade below the smallest normal is the subnormal one.
    """
    fmt = book.fmt
    if isinstance(x, float):
        if x != x:
            return None
        if not fmt.has_inf:
            return None if overflow == "inf" else book.encode(x < 0, book.max)
        return book.encode(x < 0, float("inf"))
    negative, m = x < 0, abs(x)
    if m == 0:
        return book.encode(negative, Fraction(0))        # only Fraction(0): the caller passes the zero's sign
    target_exp = max(binade(m), fmt.emin)
    ulp = Fraction(2) ** (target_exp - fmt.man_bits)
    scaled = m / ulp
    q = scaled.numerator // scaled.denominator
    f = scaled - q
    if rounding == "nearest":
        up = f > Fraction(1, 2) or (f == Fraction(1, 2) and q % 2 == 1)
    else:
        t = (f * 2**r).numerator // (f * 2**r).denominator
        up = t + R >= 2**r
    result = (q + up) * ulp
    if not fmt.subnormals and result < Fraction(fmt.min_normal):
        result = Fraction(0)
    if result > book.max:
        if overflow == "saturate":
            result = book.max
        elif fmt.has_inf:
            result = float("inf")
        else:
            return None
    return book.encode(negative, result)


def exact_sum(book_in: Codebook, a: int, b: int):
    """Exact sum of two codes: a Fraction (IEEE zero sign handled by the caller) or inf/NaN."""
    x, y = ref_value(book_in.fmt, a), ref_value(book_in.fmt, b)
    if isinstance(x, float) or isinstance(y, float):
        return float(x) + float(y)                      # inf/NaN arithmetic is exact in float
    return x + y


def same_code(fmt, got, want):
    """Codes equal, any NaN (want None or a NaN code) equal to any NaN."""
    if want is None:
        return bool(np.isnan(fmt.decode(got)))
    return int(got) == want


BOOKS = {}


def book(fmt):
    if fmt not in BOOKS:
        BOOKS[fmt] = Codebook(fmt)
    return BOOKS[fmt]


def hexcode(c, fmt):
    return "NaN" if c is None else f"{int(c):#0{(fmt.width + 3) // 4 + 2}x}"


# -- random inputs --------------------------------------------------------------------------------
def random_finite_codes(rng, fmt, n):
    """Uniform random finite codes."""
    codes = rng.integers(0, 1 << fmt.width, n)
    values = fmt.decode(codes)
    return codes[np.isfinite(values)]


def field_codes(fmt, sign, exp_field, man_field):
    return (np.asarray(sign) << (fmt.exp_bits + fmt.man_bits)) | (np.asarray(exp_field) << fmt.man_bits) | man_field


def hard_pairs(rng, fmt, n):
    """Finite code pairs stressing a correctly rounded adder: uniform; huge exponent differences (the
    small operand is only a sticky bit); a power of two plus or minus a few small ulps; sums landing
    on or next to a power of two; near cancellation; both near the overflow threshold; subnormals."""
    top_exp = fmt.max_field[0]
    man = 1 << fmt.man_bits
    k = n // 8
    sign = lambda: rng.integers(0, 2, k)
    pairs = []
    a, b = random_finite_codes(rng, fmt, 2 * k), random_finite_codes(rng, fmt, 2 * k)
    m = min(a.size, b.size)
    pairs.append((a[:m], b[:m]))
    # huge exponent difference
    ea = rng.integers(top_exp // 2, top_exp + 1, k)
    eb = np.maximum(ea - rng.integers(fmt.man_bits + 2, top_exp + 1, k), 0)
    pairs.append((field_codes(fmt, sign(), ea, rng.integers(0, man, k)),
                  field_codes(fmt, sign(), eb, rng.integers(0, man, k))))
    # power of two +- a small operand
    ea = rng.integers(1, top_exp + 1, k)
    eb = np.maximum(ea - rng.integers(1, 2 * fmt.man_bits + 6, k), 0)
    pairs.append((field_codes(fmt, sign(), ea, 0), field_codes(fmt, sign(), eb, rng.integers(0, man, k))))
    # a power of two and a sticky bit of the other sign beyond float64's precision (FP16_169 spans 70
    # binades): fl(a + b) is the power of two and only TwoSum's error says the sum lies below it
    if top_exp > 56:
        ea = rng.integers(56, top_exp + 1, k)
        eb = np.maximum(ea - rng.integers(55, top_exp + 2, k), 0)
        s = sign()
        pairs.append((field_codes(fmt, s, ea, 0), field_codes(fmt, 1 - s, eb, rng.integers(0, man, k))))
    # sums on or next to a power of two: b ~ 2**j - a (rounded into fmt), j one above a's binade
    a = random_finite_codes(rng, fmt, k)
    va = fmt.decode(a)
    with np.errstate(divide="ignore"):
        target = np.copysign(np.ldexp(1.0, np.frexp(va)[1]), va)
    b = fmt.encode((target - va) * (1 + rng.integers(-2, 3, a.size) * 2.0 ** -(fmt.man_bits + 3)))
    pairs.append((a, b))
    # near cancellation: b = -(a +- a few ulps)
    a = random_finite_codes(rng, fmt, k)
    b = np.clip(a.astype(np.int64) + rng.integers(-3, 4, a.size), 0, None) ^ (1 << (fmt.width - 1))
    keep = np.isfinite(fmt.decode(b))
    pairs.append((a[keep], b[keep]))
    # near overflow, same sign
    s = sign()
    pairs.append((field_codes(fmt, s, rng.integers(top_exp - 2, top_exp + 1, k), rng.integers(0, man, k)),
                  field_codes(fmt, s, rng.integers(top_exp - 12, top_exp + 1, k), rng.integers(0, man, k))))
    # subnormals and the smallest normals
    pairs.append((field_codes(fmt, sign(), rng.integers(0, 3, k), rng.integers(0, man, k)),
                  field_codes(fmt, sign(), rng.integers(0, 3, k), rng.integers(0, man, k))))
    a = np.concatenate([p[0] for p in pairs]).astype(np.int64)
    b = np.concatenate([p[1] for p in pairs]).astype(np.int64)
    keep = np.isfinite(fmt.decode(a)) & np.isfinite(fmt.decode(b))
    return a[keep], b[keep]


def zero_sign_sum(x, y, s):
    """IEEE sign of an exactly zero sum of two values: negative only for -0 + -0."""
    return bool(np.signbit(x) and np.signbit(y))


def check_add_against_fraction(fmt, a, b, rounding, rand, rbits, overflow, seed):
    got = add(a, b, fmt, rounding, rand=rand, rbits=rbits, overflow=overflow)
    bk = book(fmt)
    x, y = fmt.decode(a), fmt.decode(b)
    for i in range(a.size):
        s = exact_sum(bk, int(a[i]), int(b[i]))
        if not isinstance(s, float) and s == 0:
            want = bk.encode(zero_sign_sum(x[i], y[i], s), Fraction(0))
        else:
            want = ref_round(bk, s, rounding, None if rand is None else int(rand[i]), rbits, overflow)
        assert same_code(fmt, got[i], want), (
            f"seed {seed:#x}: {fmt} add({hexcode(a[i], fmt)}, {hexcode(b[i], fmt)}) {rounding} "
            f"R={None if rand is None else int(rand[i])} rbits={rbits} overflow={overflow}: "
            f"got {hexcode(got[i], fmt)} want {hexcode(want, fmt)} (exact sum {s})")
    return a.size


# -- FP16 add vs numpy ------------------------------------------------------------------------------
def numpy_add_codes(a, b):
    with np.errstate(over="ignore", invalid="ignore"):
        return (a.astype(np.uint16).view(np.float16) + b.astype(np.uint16).view(np.float16)).view(np.uint16)


def check_fp16_add(a, b, what):
    got = add(a, b, FP16, overflow="inf")
    want = numpy_add_codes(a, b)
    nan = np.isnan(got.view(np.float16)) & np.isnan(want.view(np.float16))
    bad = np.flatnonzero((got != want) & ~nan)
    assert bad.size == 0, (f"{what}: {bad.size} mismatches; first {int(a[bad[0]]):#06x} + {int(b[bad[0]]):#06x}: "
                           f"got {int(got[bad[0]]):#06x} want {int(want[bad[0]]):#06x}")


def test_fp16_add_matches_numpy_random():
    rng = np.random.default_rng(SEED)
    n = 1_000_000
    a = rng.integers(0, 1 << 16, n)
    b = rng.integers(0, 1 << 16, n)
    # half of them with close exponents (where rounding is non-trivial)
    close = rng.random(n) < 0.5
    b = np.where(close, (b & 0x83FF) | (np.clip((a >> 10 & 31) + rng.integers(-3, 4, n), 0, 31) << 10), b)
    check_fp16_add(a, b, f"seed {SEED:#x}")


def special_codes(fmt):
    sign = 1 << (fmt.width - 1)
    one = fmt.code_of(1.0)
    positive = [0, fmt.inf_code, fmt.nan_code, 1, fmt.max_code, int(one)]
    return np.array(positive + [c | sign for c in positive])


def test_fp16_add_specials_exhaustive():
    s = special_codes(FP16)
    a, b = (c.ravel() for c in np.meshgrid(s, s, indexing="ij"))
    check_fp16_add(a, b, "specials")


@pytest.mark.parametrize("fmt", [FP16_169, BF16, E5M2], ids=str)
def test_add_specials_exhaustive_fraction(fmt):
    """The same special set in other formats, both roundings and overflow policies."""
    s = special_codes(fmt)
    a, b = (c.ravel() for c in np.meshgrid(s, s, indexing="ij"))
    for overflow in ("saturate", "inf"):
        check_add_against_fraction(fmt, a, b, "nearest", None, None, overflow, 0)
        rand = np.arange(a.size) % 16
        check_add_against_fraction(fmt, a, b, "stochastic", rand, 4, overflow, 0)


# -- BF16 add ---------------------------------------------------------------------------------------
def test_bf16_add_matches_ml_dtypes_on_float32_exact_sums():
    """Where the exact sum of two bfloat16 values is a float32 (exponent difference small enough),
    ml_dtypes rounds it once; compare codes on >= 10**6 such pairs."""
    rng = np.random.default_rng(SEED)
    n = 1_300_000
    a = rng.integers(0, 1 << 16, n)
    b = (rng.integers(0, 2, n) << 15) | (np.clip((a >> 7 & 255) + rng.integers(-12, 13, n), 0, 255) << 7) \
        | rng.integers(0, 128, n)
    x, y = BF16.decode(a), BF16.decode(b)
    with np.errstate(invalid="ignore", over="ignore"):
        s = x + y                                               # exact iff TwoSum's error is 0
        y_virtual = s - x
        error = (x - (s - y_virtual)) + (y - y_virtual)
        exact32 = (error == 0) & (s.astype(np.float32).astype(np.float64) == s)
    keep = exact32 | ~np.isfinite(s)
    a, b, s = a[keep], b[keep], s[keep]
    assert a.size >= 1_000_000
    got = add(a, b, BF16, overflow="inf")
    with np.errstate(over="ignore", invalid="ignore"):
        want = s.astype(np.float32).astype(ml_dtypes.bfloat16).view(np.uint16)
    nan = np.isnan(got.view(ml_dtypes.bfloat16)) & np.isnan(want.view(ml_dtypes.bfloat16))
    bad = np.flatnonzero((got != want) & ~nan)
    assert bad.size == 0, (f"seed {SEED:#x}: {bad.size} mismatches; first {int(a[bad[0]]):#06x} + "
                           f"{int(b[bad[0]]):#06x}: got {int(got[bad[0]]):#06x} want {int(want[bad[0]]):#06x}")


def test_bf16_add_fraction_all_exponent_differences():
    rng = np.random.default_rng(SEED + 1)
    a, b = hard_pairs(rng, BF16, 8_000)
    for overflow in ("saturate", "inf"):
        check_add_against_fraction(BF16, a, b, "nearest", None, None, overflow, SEED + 1)


# -- exact RNE and stochastic add against Fractions ----------------------------------------------------
@pytest.mark.parametrize("overflow", ["saturate", "inf"])
def test_fp16_169_add_nearest_fraction(overflow):
    seed = SEED + 2
    rng = np.random.default_rng(seed)
    a, b = hard_pairs(rng, FP16_169, 10_000)
    check_add_against_fraction(FP16_169, a, b, "nearest", None, None, overflow, seed)


@pytest.mark.parametrize("fmt", [FP16_169, FP16], ids=str)
def test_add_stochastic_fraction(fmt):
    """>= 20,000 stochastic additions per format against the Fraction rule (TwoSum tail logic)."""
    seed = SEED + 3
    rng = np.random.default_rng(seed)
    limit = 51 - fmt.man_bits
    total = 0
    for rbits, overflow in [(1, "saturate"), (3, "inf"), (8, "saturate"), (13, "inf"), (limit, "saturate")]:
        a, b = hard_pairs(rng, fmt, 4_300)
        rand = rng.integers(0, 1 << rbits, a.size)
        # R at the extremes too: 0 (only exact values stay) and 2**r - 1 (any remainder >= 2**-r rounds up)
        rand[::7] = 0
        rand[1::7] = (1 << rbits) - 1
        total += check_add_against_fraction(fmt, a, b, "stochastic", rand, rbits, overflow, seed)
    assert total >= 20_000


@pytest.mark.parametrize("fmt", [FP16_169, FP16, BF16, E5M2, E4M3], ids=str)
def test_encode_stochastic_fraction(fmt):
    """Stochastic ``encode`` of float64 values (random 53-bit significands over the whole range, the
    target's grid and its midpoints, subnormals, overflow) against the Fraction rule."""
    seed = SEED + 4
    rng = np.random.default_rng(seed)
    bk = book(fmt)
    limit = 51 - fmt.man_bits
    n = 1_000
    for rbits, overflow in [(1, "inf"), (2, "saturate"), (5, "inf"), (10, "saturate"), (limit, "inf")]:
        random53 = np.ldexp(1 + rng.random(n), rng.integers(fmt.emin - fmt.man_bits - 3, fmt.emax + 3, n))
        grid = fmt.decode(random_finite_codes(rng, fmt, n // 4))
        grid_mid = grid + np.ldexp(1.0, np.maximum(np.frexp(grid)[1] - 1, fmt.emin) - fmt.man_bits - 1)
        short = np.ldexp(rng.integers(1, 1 << (fmt.man_bits + 1 + rbits), n // 4).astype(float),
                         rng.integers(fmt.emin - 2 * fmt.man_bits - rbits, fmt.emax - fmt.man_bits - rbits, n // 4))
        x = np.concatenate([random53, grid, grid_mid, short, [0.0, -0.0]])
        x *= np.where(rng.random(x.size) < 0.5, -1, 1)
        rand = rng.integers(0, 1 << rbits, x.size)
        got = fmt.encode(x, "stochastic", rand=rand, rbits=rbits, overflow=overflow)
        for i in range(x.size):
            if x[i] == 0:
                want = bk.encode(np.signbit(x[i]), Fraction(0))
            else:
                want = ref_round(bk, Fraction(x[i]), "stochastic", int(rand[i]), rbits, overflow)
            assert same_code(fmt, got[i], want), (
                f"seed {seed:#x}: {fmt}.encode({float(x[i]).hex()}, stochastic, R={int(rand[i])}, "
                f"rbits={rbits}, overflow={overflow}): got {hexcode(got[i], fmt)} want {hexcode(want, fmt)}")


@pytest.mark.parametrize("fmt", [FP16_169, FP16, E5M2, E4M3], ids=str)
def test_round_with_tail_fraction(fmt):
    """``FloatFormat.round`` of ``magnitude + tail * epsilon`` (the exact-sum hand-over of ``add``) for
    both roundings: grid values, midpoints and powers of two with tails -1, 0, +1."""
    seed = SEED + 12
    rng = np.random.default_rng(seed)
    bk = book(fmt)
    tiny = Fraction(2) ** -1200                           # below any float64 ulp in play
    n = 1_500
    grid = np.abs(fmt.decode(random_finite_codes(rng, fmt, n)))
    ulp = np.ldexp(1.0, np.maximum(np.frexp(grid)[1] - 1, fmt.emin) - fmt.man_bits)
    powers = np.ldexp(1.0, rng.integers(fmt.emin - fmt.man_bits, fmt.emax + 2, n))
    x = np.concatenate([grid, grid + ulp / 2, grid + ulp / 4, powers,
                        np.ldexp(1 + rng.random(n), rng.integers(fmt.emin - fmt.man_bits - 2, fmt.emax + 2, n))])
    x = x[x > 0]
    negative = rng.random(x.size) < 0.5
    tail = rng.integers(-1, 2, x.size)
    for rounding, rbits in [("nearest", None), ("stochastic", 5)]:
        rand = None if rbits is None else rng.integers(0, 1 << rbits, x.size)
        rand_kw = {} if rbits is None else dict(rand=rand, rbits=rbits)
        for overflow in ("saturate", "inf"):
            values = fmt.round(x, negative, tail, rounding, overflow=overflow, **rand_kw)
            got = fmt.code_of(values)
            for i in range(x.size):
                exact = (Fraction(x[i]) + int(tail[i]) * tiny) * (-1 if negative[i] else 1)
                want = ref_round(bk, exact, rounding, None if rand is None else int(rand[i]), rbits, overflow)
                assert same_code(fmt, got[i], want), (
                    f"seed {seed:#x}: {fmt}.round({float(x[i]).hex()}, negative={negative[i]}, tail={tail[i]}, "
                    f"{rounding}, R={None if rand is None else int(rand[i])}, overflow={overflow}): "
                    f"got {hexcode(got[i], fmt)} want {hexcode(want, fmt)}")


# -- unbiasedness -----------------------------------------------------------------------------------
def test_stochastic_unbiased_exact_remainders():
    """Remainders that are multiples of 2**-r: SR(x) - x has mean exactly 0; the sample mean of 10**6
    draws lies within 3 standard errors."""
    seed = SEED + 5
    rng = np.random.default_rng(seed)
    fmt, rbits, n = FP16_169, 8, 1_000_000
    exp = rng.integers(fmt.emin - 3, fmt.emax, n)                      # includes the subnormal binade
    target = np.maximum(exp, fmt.emin)
    q = np.where(exp >= fmt.emin, rng.integers(1 << fmt.man_bits, 1 << (fmt.man_bits + 1), n),
                 rng.integers(0, 1 << fmt.man_bits, n))
    j = rng.integers(1, 1 << rbits, n)
    ulp = np.ldexp(1.0, target - fmt.man_bits)
    x = (q + j / 2.0**rbits) * ulp * np.where(rng.random(n) < 0.5, -1, 1)
    rand = rng.integers(0, 1 << rbits, n)
    err = (fmt.decode(fmt.encode(x, "stochastic", rand=rand, rbits=rbits, overflow="inf")) - x) / ulp
    assert np.all(np.isfinite(err))
    mean, se = err.mean(), err.std() / np.sqrt(n)
    assert abs(mean) < 3 * se, f"seed {seed:#x}: mean error {mean} ulp, standard error {se}"
    # and for every x the rounding is one of its two neighbours
    assert np.all((np.abs(err) < 1) & (err != 0)), f"seed {seed:#x}"


def test_stochastic_unbiased_add_fp16():
    """10**6 stochastic FP16 sums (exact in float64): the mean error is within 3 standard errors of
    the truncation bias interval (-2**-r, 0] ulp, measured in the magnitude's direction."""
    seed = SEED + 6
    rng = np.random.default_rng(seed)
    n, rbits = 1_000_000, 6
    a = rng.integers(0, 0x7400, n) | (rng.integers(0, 2, n) << 15)       # below 2**14: no overflow
    b = rng.integers(0, 0x7400, n) | (rng.integers(0, 2, n) << 15)
    rand = rng.integers(0, 1 << rbits, n)
    exact = FP16.decode(a) + FP16.decode(b)
    got = FP16.decode(add(a, b, FP16, "stochastic", rand=rand, rbits=rbits))
    _, e = np.frexp(np.abs(exact))
    ulp = np.ldexp(1.0, np.maximum(e - 1, FP16.emin) - FP16.man_bits)
    err = (np.abs(got) - np.abs(exact)) / ulp
    inexact = np.floor(np.abs(exact) / ulp) != np.abs(exact) / ulp
    err = err[inexact]
    assert err.size > n // 2
    mean, se = err.mean(), err.std() / np.sqrt(err.size)
    assert -2.0**-rbits - 3 * se < mean < 3 * se, f"seed {seed:#x}: mean error {mean} ulp, standard error {se}"


def test_stochastic_every_r_value():
    """Deterministic: over all 2**r values of R, x rounds up exactly t = floor(f * 2**r) times."""
    seed = SEED + 7
    rng = np.random.default_rng(seed)
    fmt, rbits = FP16, 7
    x = np.ldexp(1 + rng.random(300), rng.integers(-26, 15, 300))
    values = np.repeat(x, 1 << rbits)
    rand = np.tile(np.arange(1 << rbits), x.size)
    got = fmt.decode(fmt.encode(values, "stochastic", rand=rand, rbits=rbits)).reshape(x.size, -1)
    _, e = np.frexp(x)
    ulp = np.ldexp(1.0, np.maximum(e - 1, fmt.emin) - fmt.man_bits)
    q = np.floor(x / ulp)
    t = np.floor((x / ulp - q) * 2**rbits)
    ups = np.sum(got > (q * ulp)[:, None], axis=1)
    bad = np.flatnonzero(ups != t)
    assert bad.size == 0, f"seed {seed:#x}: x={x[bad[0]].hex()} rounds up {ups[bad[0]]} times, want {t[bad[0]]}"


# -- matmul ---------------------------------------------------------------------------------------------
def random_matrices(rng, in_fmt, m, k, n, kind):
    if kind == "codes":                        # every finite code, plus one inf and one NaN in a
        a = random_finite_codes(rng, in_fmt, 4 * m * k)[:m * k].reshape(m, k)
        b = random_finite_codes(rng, in_fmt, 4 * k * n)[:k * n].reshape(k, n)
        a[0, k // 2] = in_fmt.inf_code if in_fmt.has_inf else in_fmt.nan_code
        a[-1, k // 3] = in_fmt.nan_code
        return a, b
    dtype = ml_dtypes.float8_e5m2 if in_fmt is E5M2 else ml_dtypes.float8_e4m3fn
    scale = 2.0 ** rng.integers(-6, 7, (m, 1))
    a = (rng.standard_normal((m, k)) * scale).astype(np.float32).astype(dtype).view(np.uint8)
    b = (rng.standard_normal((k, n)) * 4).astype(np.float32).astype(dtype).view(np.uint8)
    return a.astype(np.int64), b.astype(np.int64)


def assert_codes_equal(got, want, what):
    nan = np.isnan(FP16_169.decode(got)) & np.isnan(FP16_169.decode(want))
    bad = np.argwhere((got != want) & ~nan)
    assert bad.size == 0, (f"{what}: {len(bad)} mismatches; first at {tuple(bad[0])}: "
                           f"got {int(got[tuple(bad[0])]):#06x} want {int(want[tuple(bad[0])]):#06x}")


@pytest.mark.parametrize(("in_fmt", "kind", "shape"), [
    (E5M2, "normal", (7, 300, 9)), (E5M2, "codes", (5, 100, 6)), (E4M3, "normal", (6, 200, 5)),
])
def test_matmul_plain_accumulation(in_fmt, kind, shape):
    """chunk >= K: every step rounds float64(acc + product) with FP16_169.encode (saturating)."""
    seed = SEED + 8
    rng = np.random.default_rng(seed)
    m, k, n = shape
    a, b = random_matrices(rng, in_fmt, m, k, n, kind)
    acc = np.zeros((m, n))
    av, bv = in_fmt.decode(a), in_fmt.decode(b)
    with np.errstate(invalid="ignore"):
        for kk in range(k):
            acc = FP16_169.decode(FP16_169.encode(acc + np.multiply.outer(av[:, kk], bv[kk, :])))
    want = FP16_169.encode(acc)
    for chunk in (k, k + 1, 10**9):
        with np.errstate(invalid="ignore"):
            got = matmul(a, b, in_fmt=in_fmt, chunk=chunk)
        assert_codes_equal(got, want, f"seed {seed:#x} {kind} {shape} chunk={chunk}")
    assert np.unique(want).size > m * n // 2, "degenerate test data"


def loop_chunked(a, b, in_fmt, chunk):
    """Chunk-based accumulation written element by element (DESIGN.md section 2)."""
    m, k = a.shape
    n = b.shape[1]
    enc = lambda v: float(FP16_169.decode(FP16_169.encode(v)))
    out = np.zeros((m, n), dtype=np.uint16)
    for i in range(m):
        for j in range(n):
            total = part = 0.0
            for kk in range(k):
                p = float(in_fmt.decode(a[i, kk])) * float(in_fmt.decode(b[kk, j]))
                part = enc(part + p)
                if (kk + 1) % chunk == 0 or kk == k - 1:
                    total = enc(total + part)
                    part = 0.0
            out[i, j] = FP16_169.encode(total)
    return out


@pytest.mark.parametrize(("kind", "shape", "chunk"), [
    ("normal", (3, 37, 4), 1), ("normal", (3, 37, 4), 4), ("normal", (4, 64, 3), 16),
    ("normal", (2, 50, 3), 49), ("codes", (3, 41, 3), 5), ("normal", (2, 1, 2), 1),
])
def test_matmul_chunked_matches_loop(kind, shape, chunk):
    seed = SEED + 9
    rng = np.random.default_rng(seed)
    m, k, n = shape
    a, b = random_matrices(rng, E5M2, m, k, n, kind)
    with np.errstate(invalid="ignore"):
        got = matmul(a, b, chunk=chunk)
        want = loop_chunked(a, b, E5M2, chunk)
    assert_codes_equal(got, want, f"seed {seed:#x} {kind} {shape} chunk={chunk}")
    if kind == "normal" and 1 < chunk <= k // 2:          # chunk 1 is plain accumulation
        assert not np.array_equal(got, matmul(a, b, chunk=k)), "chunking made no difference: weak test data"


@pytest.mark.parametrize(("shape", "chunk", "rbits"), [((3, 40, 4), 8, 8), ((2, 33, 5), 1, 3), ((4, 20, 2), 64, 13)])
def test_matmul_stochastic_matches_chunk_dot(shape, chunk, rbits):
    """matmul draws twice per k step from every lane (chunk, then total): chunk_dot fed those draws from
    an identically seeded bank gives the same codes."""
    seed = SEED + 10
    rng = np.random.default_rng(seed)
    m, k, n = shape
    a, b = random_matrices(rng, E5M2, m, k, n, "normal")
    got = matmul(a, b, chunk=chunk, rounding="stochastic", lfsr=LfsrBank((m, n), seed=seed, rbits=rbits))
    bank = LfsrBank((m, n), seed=seed, rbits=rbits)
    draws = [(bank.draw(), bank.draw()) for _ in range(k)]
    rand_chunk = np.stack([d[0] for d in draws], axis=-1)
    rand_total = np.stack([d[1] for d in draws], axis=-1)
    products = mul(a[:, None, :], b.T[None, :, :])
    want = chunk_dot(products, FP16_169, chunk, "stochastic", rand_chunk=rand_chunk, rand_total=rand_total,
                     rbits=rbits)
    assert_codes_equal(got, want, f"seed {seed:#x} {shape} chunk={chunk} rbits={rbits}")
    nearest = matmul(a, b, chunk=chunk)
    assert not np.array_equal(got, nearest), "stochastic equals nearest: weak test"


@pytest.mark.parametrize(("chunk", "rbits", "overflow"), [(4, 6, "saturate"), (1, 2, "inf"), (100, 20, "saturate")])
def test_chunk_dot_stochastic_fraction(chunk, rbits, overflow):
    """chunk_dot with explicit rands against a per-element loop of Fraction-exact stochastic additions."""
    seed = SEED + 11
    rng = np.random.default_rng(seed)
    lanes, k = 12, 30
    a, b = random_matrices(rng, E5M2, lanes, k, 1, "normal")
    products = mul(a, np.repeat(b.T, lanes, axis=0))
    if overflow == "inf":
        products[0] = mul(rng.integers(0x70, 0x7B, k), rng.integers(0x70, 0x7B, k))   # overflows FP16_169
    rand_chunk = rng.integers(0, 1 << rbits, (lanes, k))
    rand_total = rng.integers(0, 1 << rbits, (lanes, k))
    got = chunk_dot(products, FP16_169, chunk, "stochastic", rand_chunk=rand_chunk, rand_total=rand_total,
                    rbits=rbits, overflow=overflow)
    bk = book(FP16_169)

    def sr_add(x, y, r):
        s = exact_sum(bk, int(x), int(y))
        if not isinstance(s, float) and s == 0:
            return bk.encode(bool(np.signbit(FP16_169.decode(x)) and np.signbit(FP16_169.decode(y))), Fraction(0))
        code = ref_round(bk, s, "stochastic", int(r), rbits, overflow)
        return FP16_169.nan_code if code is None else code

    for lane in range(lanes):
        total = part = 0
        for kk in range(k):
            part = sr_add(part, int(FP16_169.code_of(products[lane, kk])), rand_chunk[lane, kk])
            if (kk + 1) % chunk == 0 or kk == k - 1:
                total = sr_add(total, part, rand_total[lane, kk])
                part = 0
        assert same_code(FP16_169, got[lane], None if np.isnan(FP16_169.decode(total)) else total), (
            f"seed {seed:#x} lane {lane}: got {int(got[lane]):#06x} want {total:#06x}")


# -- convert ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("src", "src_dtype", "dst", "dst_dtype"), [
    (FP16, np.float16, E5M2, ml_dtypes.float8_e5m2),
    (FP16, np.float16, E4M3, ml_dtypes.float8_e4m3fn),
    (BF16, ml_dtypes.bfloat16, E5M2, ml_dtypes.float8_e5m2),
    (FP16_169, None, E5M2, ml_dtypes.float8_e5m2),
    (FP16_169, None, E4M3, ml_dtypes.float8_e4m3fn),
])
def test_convert_matches_cast(src, src_dtype, dst, dst_dtype):
    """Every 16-bit code: RNE with overflow="inf" equals ml_dtypes' cast (FP16_169 values via float32,
    which holds them exactly)."""
    codes = np.arange(1 << 16)
    got = convert(codes, src, dst, overflow="inf")
    with np.errstate(over="ignore", invalid="ignore"):
        if src_dtype is None:
            values = src.decode(codes).astype(np.float32)
            assert np.array_equal(values.astype(np.float64), src.decode(codes), equal_nan=True)
        else:
            values = codes.astype(np.uint16).view(src_dtype)
        want = values.astype(dst_dtype).view(np.uint8)
    nan = np.isnan(got.view(dst_dtype)) & np.isnan(want.view(dst_dtype))
    bad = np.flatnonzero((got != want) & ~nan)
    assert bad.size == 0, (f"{bad.size} mismatches; first {src} code {bad[0]:#06x}: got {int(got[bad[0]]):#04x} "
                           f"want {int(want[bad[0]]):#04x}")


def test_convert_saturates_by_default():
    codes = np.array([0x7BFF, 0xFBFF, 0x7C00, 0x7A00])       # 65504, -65504, inf, 49152
    assert convert(codes, FP16, E5M2).tolist() == [0x7B, 0xFB, 0x7C, 0x7A]
    assert convert(codes, FP16, E4M3).tolist() == [0x7E, 0xFE, 0x7E, 0x7E]


# -- argument errors ----------------------------------------------------------------------------------------
def test_matmul_arguments():
    a, b = np.zeros((2, 3), dtype=np.uint8), np.zeros((3, 4), dtype=np.uint8)
    with pytest.raises(ValueError, match=r"^matmul needs M x K and K x N code arrays, not \(2, 3\) and \(4, 3\)$"):
        matmul(a, b.T)
    with pytest.raises(ValueError, match=r"^matmul needs M x K and K x N code arrays, not \(3,\) and \(3, 4\)$"):
        matmul(a[0], b)
    with pytest.raises(ValueError, match=r"^chunk must be a positive integer, not 0$"):
        matmul(a, b, chunk=0)
    with pytest.raises(ValueError, match=r"^chunk must be a positive integer, not 2\.0$"):
        matmul(a, b, chunk=2.0)
    with pytest.raises(ValueError, match=r"^an lfsr is needed with rounding='stochastic' and only then$"):
        matmul(a, b, lfsr=LfsrBank((2, 4), seed=1, rbits=4))
    with pytest.raises(ValueError, match=r"^an lfsr is needed with rounding='stochastic' and only then$"):
        matmul(a, b, rounding="stochastic")
    with pytest.raises(ValueError, match=r"^lfsr lanes must have the output's shape \(2, 4\), not \(4, 2\)$"):
        matmul(a, b, rounding="stochastic", lfsr=LfsrBank((4, 2), seed=1, rbits=4))
    with pytest.raises(ValueError, match=r"^lfsr lanes must have the output's shape \(2, 4\), not \(8,\)$"):
        matmul(a, b, rounding="stochastic", lfsr=LfsrBank(8, seed=1, rbits=4))


def test_add_arguments():
    with pytest.raises(ValueError, match=r"^rounding='stochastic' needs rand: one rbits-bit integer per value$"):
        add([1], [2], FP16, "stochastic", rbits=4)
    with pytest.raises(ValueError, match=r"^code 65536 at flat index 0 is out of range for 16-bit FP16$"):
        add([65536], [0], FP16)


def test_matmul_adds_c_once_at_the_end():
    """c joins the chunked totals in one round-to-nearest addition (the output unit's adder)."""
    rng = np.random.default_rng(SEED + 20)
    a, b = random_matrices(rng, E5M2, 3, 70, 4, "normal")
    c = FP16_169.encode(rng.normal(0, 8, (3, 4)))
    total = matmul(a, b, chunk=16)
    assert_codes_equal(matmul(a, b, chunk=16, c=c), add(total, c, FP16_169), f"seed {SEED + 20:#x}")
    with pytest.raises(ValueError, match=r"^c must have the output's shape \(3, 4\), not \(4, 3\)$"):
        matmul(a, b, c=c.T)


def test_adding_a_product_to_positive_zero_only_changes_negative_zero():
    """The PE starts a chunk with the product itself instead of ``+0 + p`` (hw/array/pe.py): every
    E5M2 product in FP16_169, added to +0 in each mode, is unchanged but for -0, which becomes +0."""
    a, b = np.meshgrid(np.arange(256), np.arange(256))
    products = mul(a.ravel(), b.ravel(), E5M2, out_fmt=FP16_169)
    expected = np.where(products == 1 << (FP16_169.width - 1), 0, products)
    rand = np.random.default_rng(7).integers(0, 256, products.shape)
    for overflow in ("saturate", "inf"):
        assert np.array_equal(add(products, np.zeros_like(products), FP16_169, overflow=overflow), expected)
        assert np.array_equal(add(products, np.zeros_like(products), FP16_169, "stochastic", rand=rand,
                                  rbits=8, overflow=overflow), expected)
