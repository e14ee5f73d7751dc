"""Golden UPDATE (sim/golden/update.py) against an independent per-element reference.

The reference below is written again from the specification: codes are decoded from their fields into
exact :class:`fractions.Fraction` values (with signed zeros, inf and NaN kept apart), every step is
computed exactly and rounded by the rule of DESIGN.md section 2 in Fraction arithmetic, and the random
bits come from the bit-by-bit LFSR reference :func:`~fp8train.sim.golden.lfsr.step`. Every RNG is
seeded; failures name the first mismatching element in hex.
"""

from fractions import Fraction

import numpy as np
import pytest

from fp8train.formats import E4M3, E5M2, FP16, FP16_169, FloatFormat
from fp8train.sim.golden.lfsr import output_state, step
from fp8train.sim.golden.update import sgd_update, update_rand

SEED = 0x5EED_0D

NAN = "nan"
INF = "inf"


# -- independent reference --------------------------------------------------------------------------
def ref_decode(fmt: FloatFormat, code: int):
    """``NAN`` or ``(negative, magnitude)`` with a Fraction magnitude or ``INF``, from the field definitions."""
    negative = bool(code >> (fmt.exp_bits + fmt.man_bits) & 1)
    e = code >> fmt.man_bits & ((1 << fmt.exp_bits) - 1)
    m = code & ((1 << fmt.man_bits) - 1)
    if e == (1 << fmt.exp_bits) - 1 and fmt.specials == "ieee":
        return (negative, INF) if m == 0 else NAN
    if e == (1 << fmt.exp_bits) - 1 and fmt.specials == "fn" and m == (1 << fmt.man_bits) - 1:
        return NAN
    significand = m + (1 << fmt.man_bits if e else 0)
    return negative, Fraction(significand) * Fraction(2) ** (max(e, 1) - fmt.bias - fmt.man_bits)


def ref_largest(fmt: FloatFormat) -> Fraction:
    top_exp = (1 << fmt.exp_bits) - 1 - (fmt.specials == "ieee")
    top_man = (1 << fmt.man_bits) - 1 - (fmt.specials == "fn")
    return Fraction((1 << fmt.man_bits) + top_man) * Fraction(2) ** (top_exp - fmt.bias - fmt.man_bits)


def ref_nan_code(fmt: FloatFormat) -> int:
    """The canonical NaN: positive, exponent all ones, quiet bit (ieee) or all-ones fraction (fn)."""
    man = 1 << (fmt.man_bits - 1) if fmt.specials == "ieee" else (1 << fmt.man_bits) - 1
    return ((1 << fmt.exp_bits) - 1) << fmt.man_bits | man


def ref_encode(fmt: FloatFormat, x) -> int:
    """Code of a value the format holds exactly (``NAN``, or ``(negative, Fraction | INF)``)."""
    if x == NAN:
        return ref_nan_code(fmt)
    negative, mag = x
    sign = int(negative) << (fmt.width - 1)
    if mag == INF:
        return sign | ((1 << fmt.exp_bits) - 1) << fmt.man_bits
    if mag == 0:
        return sign
    e = max(binade(mag), 1 - fmt.bias)
    significand = mag / Fraction(2) ** (e - fmt.man_bits)
    assert significand.denominator == 1
    significand = significand.numerator
    exp_field = e + fmt.bias if significand >> fmt.man_bits else 0
    return sign | exp_field << fmt.man_bits | (significand & ((1 << fmt.man_bits) - 1))


def binade(m: Fraction) -> int:
    e = m.numerator.bit_length() - m.denominator.bit_length()
    return e if m >= Fraction(2) ** e else e - 1


def ref_round(fmt: FloatFormat, x, overflow, R=None, r=None):
    """Value ``x`` rounded into ``fmt``: to nearest-even, or stochastically with the r-bit integer ``R``."""
    if x == NAN:
        return NAN
    negative, mag = x
    if mag == INF:
        if fmt.specials == "ieee":
            return x
        return NAN if overflow == "inf" else (negative, ref_largest(fmt))
    if mag == 0:
        return x
    ulp = Fraction(2) ** (max(binade(mag), 1 - fmt.bias) - fmt.man_bits)
    q, f = divmod(mag / ulp, 1)
    if R is None:
        up = f > Fraction(1, 2) or (f == Fraction(1, 2) and q % 2 == 1)
    else:
        up = int(f * 2**r) + R >= 2**r
    result = (q + up) * ulp
    if result > ref_largest(fmt):
        if overflow == "saturate":
            return negative, ref_largest(fmt)
        return (negative, INF) if fmt.specials == "ieee" else NAN
    return negative, result


def ref_mul(x, y):
    """Exact product (IEEE signs; ``0 * inf`` is NaN)."""
    if NAN in (x, y):
        return NAN
    (sx, mx), (sy, my) = x, y
    if INF in (mx, my):
        return NAN if 0 in (mx, my) else (sx != sy, INF)
    return sx != sy, mx * my


def ref_add(x, y):
    """Exact sum (``inf - inf`` is NaN; an exact zero is ``+0`` unless both operands are ``-0``)."""
    if NAN in (x, y):
        return NAN
    (sx, mx), (sy, my) = x, y
    if mx == INF or my == INF:
        if mx == INF and my == INF:
            return x if sx == sy else NAN
        return x if mx == INF else y
    total = (-mx if sx else mx) + (-my if sy else my)
    if total == 0:
        return (sx and sy and mx == 0 and my == 0), Fraction(0)
    return total < 0, abs(total)


def ref_rand(seed: int, count: int, rbits: int) -> list[int]:
    """Lane ``i % 4`` seeded as GEMM output ``(i % 4, 0)``, one draw per group of four (bit-by-bit LFSR)."""
    states = [output_state(seed, p, 0) for p in range(4)]
    out = []
    for _ in range(-(-count // 4)):
        for p in range(4):
            drawn, states[p] = step(states[p], rbits)
            out.append(drawn)
    return out[:count]


def ref_update(w, g, *, lr, v=None, momentum=None, weight_decay=None, scale=0, rounding="nearest",
               seed=0, rbits=8, copy_fmt=None, overflow="saturate"):
    """The UPDATE command element by element."""
    fmt = FP16_169
    rnd = lambda x: ref_round(fmt, x, overflow)
    dec = lambda c: ref_decode(fmt, int(c))
    rand = ref_rand(seed, len(w), rbits) if rounding == "stochastic" else None
    w_new, v_new, copy = [], [], []
    for i in range(len(w)):
        gi = dec(g[i])
        if gi != NAN and gi[1] != INF:
            gi = (gi[0], gi[1] * Fraction(2) ** scale)
        g1 = rnd(gi)
        if weight_decay is not None:
            g1 = rnd(ref_add(g1, rnd(ref_mul(dec(weight_decay), dec(w[i])))))
        if momentum is not None:
            d = rnd(ref_add(rnd(ref_mul(dec(momentum), dec(v[i]))), g1))
            v_new.append(ref_encode(fmt, d))
        else:
            d = g1
        p = rnd(ref_mul(dec(lr), d))
        neg_p = NAN if p == NAN else (not p[0], p[1])
        total = ref_add(dec(w[i]), neg_p)
        wi = ref_round(fmt, total, overflow, *((rand[i], rbits) if rand else ()))
        w_new.append(ref_encode(fmt, wi))
        if copy_fmt is not None:
            copy.append(ref_encode(copy_fmt, ref_round(copy_fmt, wi, overflow)))
    return w_new, (v_new if momentum is not None else None), (copy if copy_fmt is not None else None)


def assert_codes(name, got, want, width):
    got = np.asarray(got).ravel().astype(np.int64)
    want = np.asarray(want, dtype=np.int64)
    bad = np.flatnonzero(got != want)
    digits = (width + 3) // 4
    assert bad.size == 0, (f"{name}: {bad.size} of {want.size} mismatch; first at {bad[0]}: "
                           f"{got[bad[0]]:#0{digits + 2}x} != {want[bad[0]]:#0{digits + 2}x}")


def check(w, g, **kwargs):
    w_new, v_new, copy = sgd_update(np.asarray(w, np.uint16), np.asarray(g, np.uint16), **kwargs)
    want_w, want_v, want_copy = ref_update(list(w), list(g), **kwargs)
    assert_codes("w", w_new, want_w, 16)
    if want_v is None:
        assert v_new is None
    else:
        assert_codes("v", v_new, want_v, 16)
    if want_copy is None:
        assert copy is None
    else:
        assert copy.dtype == kwargs["copy_fmt"].dtype
        assert_codes("copy", copy, want_copy, 8)
    return w_new


# -- inputs ------------------------------------------------------------------------------------------
def code(x: float) -> int:
    """Code of a value FP16_169 holds exactly."""
    return int(FP16_169.code_of(x))


def near(x: float) -> int:
    """Code of the FP16_169 value nearest to ``x``."""
    return int(FP16_169.encode(x))


def any_codes(rng, n):
    """Uniform over all 16-bit codes: specials, subnormals, overflow of every step."""
    return rng.integers(0, 1 << 16, n).astype(np.uint16)


def training_codes(rng, n, sigma):
    """Values like weights or gradients: normal, then nearest FP16_169."""
    return FP16_169.encode(rng.normal(0, sigma, n))


def small_codes(rng, n):
    """Subnormals and the smallest normals, both signs."""
    return (rng.integers(0, 1 << 11, n) | rng.integers(0, 2, n) << 15).astype(np.uint16)


N = 600


@pytest.mark.parametrize("rounding", ["nearest", "stochastic"])
@pytest.mark.parametrize("overflow", ["saturate", "inf"])
def test_any_codes(rounding, overflow):
    rng = np.random.default_rng([SEED, rounding == "nearest", overflow == "inf"])
    for scale in (0, -7, 5):
        check(any_codes(rng, N), any_codes(rng, N), lr=int(rng.integers(0, 1 << 16)), scale=scale,
              rounding=rounding, seed=int(rng.integers(0, 1 << 32)), overflow=overflow)


@pytest.mark.parametrize("copy_fmt", [None, E5M2, E4M3])
@pytest.mark.parametrize("rounding", ["nearest", "stochastic"])
def test_momentum_and_weight_decay(copy_fmt, rounding):
    rng = np.random.default_rng([SEED, 1, rounding == "nearest"])
    for overflow in ("saturate", "inf"):
        check(any_codes(rng, N), any_codes(rng, N), v=any_codes(rng, N), lr=int(rng.integers(0, 1 << 16)),
              momentum=int(rng.integers(0, 1 << 16)), weight_decay=int(rng.integers(0, 1 << 16)),
              scale=int(rng.integers(-128, 128)), rounding=rounding, seed=int(rng.integers(0, 1 << 32)),
              copy_fmt=copy_fmt, overflow=overflow)


@pytest.mark.parametrize("flags", ["plain", "momentum", "decay", "both"])
def test_training_like_values(flags):
    """Realistic magnitudes: loss scale 2**12, lr 0.05, mu 0.9, wd 1e-4; updates far below an ulp of w."""
    rng = np.random.default_rng([SEED, 2, len(flags)])
    w = training_codes(rng, N, 0.1)
    g = training_codes(rng, N, 2.0 ** 12 * 0.01)
    extra = {}
    if flags in ("momentum", "both"):
        extra.update(v=training_codes(rng, N, 0.01), momentum=near(0.9))
    if flags in ("decay", "both"):
        extra.update(weight_decay=near(1e-4))
    for rounding in ("nearest", "stochastic"):
        check(w, g, lr=near(0.05), scale=-12, rounding=rounding, seed=77,
              copy_fmt=E5M2, **extra)


def test_subnormals():
    rng = np.random.default_rng([SEED, 3])
    for rounding in ("nearest", "stochastic"):
        check(small_codes(rng, N), small_codes(rng, N), v=small_codes(rng, N), lr=code(0.75),
              momentum=code(0.5), weight_decay=code(2.0 ** -20), scale=int(rng.integers(-3, 4)),
              rounding=rounding, seed=3, copy_fmt=E4M3)


def test_scale_is_exact_until_it_leaves_the_range():
    """g * 2**scale is exact for moderate scales, and rounds/saturates at the ends of FP16_169."""
    g = np.array([code(x) for x in (1.0, -3.0, 1.5 * 2 ** -30, 1.75, FP16_169.max_finite)], np.uint16)
    w = np.zeros(g.size, np.uint16)
    out, _, _ = sgd_update(w, g, lr=code(-1.0), scale=-3)             # w' = 0 + g / 8
    assert FP16_169.decode(out).tolist() == [1 / 8, -3 / 8, 1.5 * 2 ** -33, 1.75 / 8, FP16_169.max_finite / 8]
    out, _, _ = sgd_update(w, g, lr=code(-1.0), scale=127)
    assert FP16_169.decode(out).tolist() == [FP16_169.max_finite, -FP16_169.max_finite] + [FP16_169.max_finite] * 3
    out, _, _ = sgd_update(w, g, lr=code(-1.0), scale=127, overflow="inf")
    assert FP16_169.decode(out).tolist() == [np.inf, -np.inf, np.inf, np.inf, np.inf]
    out, _, _ = sgd_update(w, g, lr=code(-1.0), scale=-128)
    assert FP16_169.decode(out).tolist() == [0.0] * 5
    for scale in (-128, -20, 0, 40, 127):
        check(w, g, lr=code(-1.0), scale=scale)


def test_saturation_and_infinity():
    big = code(FP16_169.max_finite)
    w = np.array([big, big ^ 0x8000, big, code(1.0)], np.uint16)
    g = np.array([code(-2.0 ** 30), code(2.0 ** 30), code(2.0 ** 30), code(-2.0 ** 30)], np.uint16)
    sat, _, _ = sgd_update(w, g, lr=code(1.0))
    inf, _, copy = sgd_update(w, g, lr=code(1.0), overflow="inf", copy_fmt=E4M3)
    top = FP16_169.max_finite
    assert FP16_169.decode(sat).tolist() == [top, -top, top - 2.0 ** 30, 2.0 ** 30]        # 1 + 2**30 rounds
    assert FP16_169.decode(inf).tolist() == [np.inf, -np.inf, top - 2.0 ** 30, 2.0 ** 30]
    assert copy.tolist() == [E4M3.nan_code] * 4          # E4M3 has no inf, and 2**30 overflows it
    _, _, copy = sgd_update(w, g, lr=code(1.0), copy_fmt=E5M2)
    assert E5M2.decode(copy).tolist() == [E5M2.max_finite, -E5M2.max_finite, E5M2.max_finite, E5M2.max_finite]


def test_nan_and_inf_propagate():
    inf, nan = FP16_169.inf_code, FP16_169.nan_code
    w = np.array([inf, code(1.0), code(1.0), inf, code(1.0), nan | 0x8000, inf], np.uint16)
    g = np.array([code(1.0), inf, nan, code(-1.0), code(0.0), code(1.0), inf], np.uint16)
    out, _, _ = sgd_update(w, g, lr=code(0.5))
    got = FP16_169.decode(out)
    assert got[0] == np.inf and got[1] == -np.inf and np.isnan(got[2]) and got[3] == np.inf
    assert got[4] == 1.0 and out[5] == nan and out[6] == nan        # canonical NaN; inf - inf is NaN
    out, _, _ = sgd_update(w, g, lr=code(0.0))                      # 0 * inf is NaN; inf - 0 is inf
    assert out[1] == nan and out[0] == inf and out[3] == inf
    check(w, g, lr=code(0.5), v=g[::-1].copy(), momentum=inf, weight_decay=code(0.0))


def test_signed_zeros():
    zero, neg_zero = code(0.0), code(-0.0)
    w = np.array([zero, neg_zero, neg_zero, code(1.0)], np.uint16)
    g = np.array([zero, zero, neg_zero, code(-2.0 ** -39)], np.uint16)
    out, _, _ = sgd_update(w, g, lr=code(1.0))
    assert out.tolist() == [zero, neg_zero, zero, code(1.0)]       # +0 - +0 = +0; -0 - +0 = -0; -0 - -0 = +0
    check(w, g, lr=code(1.0), rounding="stochastic", seed=9)


def test_stochastic_moves_weights_that_nearest_cannot():
    """An update of 0.3 ulp never moves a weight under RNE; under SR it moves 30% of them, one ulp."""
    n = 40000
    w = np.full(n, code(1.0), np.uint16)
    ulp = 2.0 ** -9
    g = np.full(n, code(0.3125 * ulp * 2 ** 10), np.uint16)        # 0.3125 ulp after scale -10
    nearest, _, _ = sgd_update(w, g, lr=code(-1.0), scale=-10)
    assert np.all(nearest == w)
    moved, _, _ = sgd_update(w, g, lr=code(-1.0), scale=-10, rounding="stochastic", seed=1234)
    steps = (FP16_169.decode(moved) - 1.0) / ulp
    assert set(np.unique(steps)) == {0.0, 1.0}
    # 0.3125 = 80/256 is exact in 8 random bits, so the mean step is unbiased: 0.3125 +- 5 sigma
    sigma = np.sqrt(0.3125 * 0.6875 / n)
    assert abs(steps.mean() - 0.3125) < 5 * sigma, steps.mean()


@pytest.mark.parametrize("fraction", [1 / 256, 37 / 256, 0.5, 201 / 256])
def test_stochastic_rounding_is_unbiased(fraction):
    """Mean of SR results over many elements and seeds equals the exact sum (fractions exact in rbits=8)."""
    n, seeds = 8192, 4
    rng = np.random.default_rng([SEED, 4, int(fraction * 256)])
    w = FP16_169.encode(rng.uniform(1, 1.99, n))                   # binade [1, 2): ulp 2**-9
    step = fraction * 2.0 ** -9
    g = np.full(n, code(step), np.uint16)
    total = np.zeros(n)
    for seed in range(seeds):
        out, _, _ = sgd_update(w, g, lr=code(-1.0), rounding="stochastic", seed=seed)
        total += FP16_169.decode(out) - FP16_169.decode(w)
    mean = total.mean() / seeds / 2.0 ** -9
    sigma = np.sqrt(fraction * (1 - fraction) / (n * seeds))
    assert abs(mean - fraction) < 5 * sigma + 1e-12, (mean, fraction)


def test_rand_lane_and_draw_order():
    """rand[i] = draws[i // 4][i % 4], lane p seeded as output (p, 0); a partial group still draws all lanes."""
    for seed, count, rbits in [(0, 1, 8), (0xDEADBEEF, 13, 8), (5, 64, 3), (1 << 31, 7, 28)]:
        got = update_rand(seed, count, rbits)
        assert got.tolist() == ref_rand(seed, count, rbits), (seed, count, rbits)
    assert update_rand(9, 5, 8).tolist() == update_rand(9, 8, 8)[:5].tolist()
    assert update_rand(9, 0, 8).size == 0


def test_stochastic_uses_the_lane_of_each_element():
    """Element i rounds with rand[i]: check one element per rand value against the threshold rule."""
    n = 64
    rand = update_rand(42, n, 8)
    f = 100                                                         # exact remainder 100/256 ulp
    w = np.full(n, code(1.0), np.uint16)
    g = np.full(n, code(f / 256 * 2.0 ** -9), np.uint16)
    out, _, _ = sgd_update(w, g, lr=code(-1.0), rounding="stochastic", seed=42)
    up = FP16_169.decode(out) > 1.0
    assert up.tolist() == (rand + f >= 256).tolist()
    shaped, _, _ = sgd_update(w.reshape(8, 8), g.reshape(8, 8), lr=code(-1.0), rounding="stochastic", seed=42)
    assert shaped.shape == (8, 8) and shaped.ravel().tolist() == out.tolist()   # C order


def test_rbits():
    rng = np.random.default_rng([SEED, 5])
    for rbits in (1, 3, 28):
        check(training_codes(rng, N, 1.0), training_codes(rng, N, 1e-3), lr=code(1.0),
              rounding="stochastic", seed=11, rbits=rbits)


def test_inputs_untouched_and_types():
    rng = np.random.default_rng([SEED, 6])
    w, g, v = training_codes(rng, 9, 1.0), training_codes(rng, 9, 1.0), training_codes(rng, 9, 1.0)
    copies = w.copy(), g.copy(), v.copy()
    w_new, v_new, copy = sgd_update(w, g, v=v, lr=near(0.1), momentum=near(0.9), copy_fmt=E5M2)
    assert all(np.array_equal(a, b) for a, b in zip((w, g, v), copies))
    assert w_new.dtype == np.uint16 and v_new.dtype == np.uint16 and copy.dtype == np.uint8


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(w=np.zeros(3), g=np.zeros(3, np.uint16)), TypeError, r"^w must hold integer FP16_169 codes, not float64$"),
    (dict(g=np.array([1, 70000, 2])), ValueError, r"^g\[1\] = 70000 is not a 16-bit code$"),
    (dict(g=np.zeros(4, np.uint16)), ValueError, r"^g must have the shape of w \(3,\), not \(4,\)$"),
    (dict(lr=1.0), TypeError, r"^lr must be a 16-bit FP16_169 code \(an int\), not 1\.0$"),
    (dict(lr=1 << 16), TypeError, r"^lr must be a 16-bit FP16_169 code"),
    (dict(momentum=0x3E00), ValueError, r"^momentum and the momentum buffer v go together"),
    (dict(v=np.zeros(3, np.uint16)), ValueError, r"^momentum and the momentum buffer v go together"),
    (dict(v=np.zeros(2, np.uint16), momentum=1), ValueError, r"^v must have the shape of w \(3,\), not \(2,\)$"),
    (dict(weight_decay=-1), TypeError, r"^weight_decay must be a 16-bit FP16_169 code"),
    (dict(scale=128), ValueError, r"^scale must be an integer from -128 to 127, not 128$"),
    (dict(scale=1.0), ValueError, r"^scale must be an integer from -128 to 127, not 1\.0$"),
    (dict(rounding="up"), ValueError, r"^rounding must be one of \('nearest', 'stochastic'\), not 'up'$"),
    (dict(overflow="wrap"), ValueError, r"^overflow must be one of \('saturate', 'inf'\), not 'wrap'$"),
    (dict(rbits=0), ValueError, r"^rbits must be an integer from 1 to 28, not 0$"),
    (dict(seed=-1), ValueError, r"^seed must be a 32-bit unsigned integer, not -1$"),
    (dict(copy_fmt=FP16), ValueError, r"^copy_fmt must be None, E5M2 or E4M3, not "),
])
def test_bad_arguments(kwargs, error, match):
    args = dict(w=np.zeros(3, np.uint16), g=np.zeros(3, np.uint16), lr=0x3C00) | kwargs
    with pytest.raises(error, match=match):
        sgd_update(args.pop("w"), args.pop("g"), **args)
    with pytest.raises(ValueError, match=r"^count must be a non-negative integer, not -1$"):
        update_rand(0, -1, 8)
