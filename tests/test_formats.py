"""Number formats (fp8train/formats.py) against external truth: ml_dtypes and numpy casts.

DESIGN.md section 2 and section 7 layer 1; REFERENCES.md section 7 gives the format table. ml_dtypes does
not saturate, so the cast comparisons use ``overflow="inf"`` and saturation is checked on its own.
ml_dtypes' float64 -> bfloat16 cast goes through float32 (double rounding: 1 + 2**-8 + 2**-40 becomes
1.0), so every comparison with ml_dtypes starts from float32 values, which it rounds once.
"""

import ml_dtypes
import numpy as np
import pytest

from fp8train.formats import BF16, E4M3, E5M2, FP16, FP16_169, FP32, FloatFormat, by_name

SEED = 20240611

#: (preset, numpy/ml_dtypes dtype of the same encoding, unsigned view dtype)
CASTS = {
    "E5M2": (E5M2, ml_dtypes.float8_e5m2, np.uint8),
    "E4M3": (E4M3, ml_dtypes.float8_e4m3fn, np.uint8),
    "FP16": (FP16, np.float16, np.uint16),
    "BF16": (BF16, ml_dtypes.bfloat16, np.uint16),
}

#: Non-preset parameter sets that ml_dtypes also implements (checks the generic code paths).
GENERIC = {
    "E4M3_ieee": (FloatFormat(4, 3), ml_dtypes.float8_e4m3),
    "E3M4_ieee": (FloatFormat(3, 4), ml_dtypes.float8_e3m4),
    "E2M3_none": (FloatFormat(2, 3, specials="none"), ml_dtypes.float6_e2m3fn),
    "E3M2_none": (FloatFormat(3, 2, specials="none"), ml_dtypes.float6_e3m2fn),
    "E2M1_none": (FloatFormat(2, 1, specials="none"), ml_dtypes.float4_e2m1fn),
}


def ref_value(fmt: FloatFormat, code: int) -> float:
    """The value of one code, written from the field definitions (independent of ``decode``)."""
    sign = -1.0 if code >> (fmt.exp_bits + fmt.man_bits) & 1 else 1.0
    e = code >> fmt.man_bits & ((1 << fmt.exp_bits) - 1)
    m = code & ((1 << fmt.man_bits) - 1)
    top = e == (1 << fmt.exp_bits) - 1
    if fmt.specials == "ieee" and top:
        return sign * np.inf if m == 0 else np.nan
    if fmt.specials == "fn" and top and m == (1 << fmt.man_bits) - 1:
        return np.nan
    if e == 0:
        return sign * 0.0 if not fmt.subnormals else sign * m * 2.0 ** (1 - fmt.bias - fmt.man_bits)
    return sign * ((1 << fmt.man_bits) + m) * 2.0 ** (e - fmt.bias - fmt.man_bits)


def first_mismatch(bad, x, got, want, width):
    """Assertion text naming the first mismatch: input (hex float), got and want codes."""
    i = bad[0]
    digits = (width + 3) // 4
    return (f"{bad.size} mismatches (seed {SEED}); first at {i}: x={float(x[i]).hex()} ({float(x[i])!r}) "
            f"got {int(got[i]):#0{digits + 2}x} want {int(want[i]):#0{digits + 2}x}")


def mismatches(got, want, got_nan, want_nan):
    """Indices where codes differ, any NaN code being equal to any NaN code."""
    return np.flatnonzero(~((got == want) | (got_nan & want_nan)))


def check_decode(fmt, dtype, view, codes):
    got = fmt.decode(codes)
    with np.errstate(invalid="ignore"):
        want = codes.astype(view).view(dtype).astype(np.float64)
    same = (got == want) & (np.signbit(got) == np.signbit(want))
    bad = np.flatnonzero(~(same | (np.isnan(got) & np.isnan(want))))
    assert bad.size == 0, (f"{bad.size} mismatches; first code {int(codes[bad[0]]):#x}: "
                           f"got {got[bad[0]]!r} want {want[bad[0]]!r}")


# -- decode: every code ----------------------------------------------------------------------------
@pytest.mark.parametrize("name", CASTS)
def test_decode_every_code(name):
    fmt, dtype, view = CASTS[name]
    check_decode(fmt, dtype, view, np.arange(1 << fmt.width, dtype=np.uint32))


@pytest.mark.parametrize("name", GENERIC)
def test_decode_every_code_generic(name):
    fmt, dtype = GENERIC[name]
    check_decode(fmt, dtype, np.uint8, np.arange(1 << fmt.width, dtype=np.uint32))


def test_decode_fp32_random_codes():
    rng = np.random.default_rng(SEED)
    codes = rng.integers(0, 1 << 32, size=200_000, dtype=np.uint64).astype(np.uint32)
    check_decode(FP32, np.float32, np.uint32, codes)


@pytest.mark.parametrize("fmt", [FP16_169, FloatFormat(6, 9, subnormals=False), FloatFormat(5, 2, bias=11),
                                 FloatFormat(4, 3, bias=11, specials="none")], ids=str)
def test_decode_every_code_formula(fmt):
    """Formats ml_dtypes does not have: every code against the field formula."""
    codes = np.arange(1 << fmt.width)
    got = fmt.decode(codes)
    want = np.array([ref_value(fmt, int(c)) for c in codes])
    same = ((got == want) & (np.signbit(got) == np.signbit(want))) | (np.isnan(got) & np.isnan(want))
    bad = np.flatnonzero(~same)
    assert bad.size == 0, f"{bad.size} mismatches; first code {bad[0]:#x}: got {got[bad[0]]!r} want {want[bad[0]]!r}"


# -- encode against casts --------------------------------------------------------------------------
def positive_grid(fmt):
    """Sorted finite non-negative values of ``fmt`` plus the first value beyond max finite."""
    values = np.array([ref_value(fmt, c) for c in range(1 << (fmt.width - 1))])
    values = np.unique(values[np.isfinite(values)])
    top = fmt.max_finite
    ulp_top = 2.0 ** (fmt.emax - fmt.man_bits)
    return np.append(values, top + ulp_top)       # 2**(emax+1) for ieee/none, the NaN slot for fn


def corner_values(fmt):
    """Ties (midpoints of neighbours, including 0/min subnormal and max/overflow) and their float32
    neighbours, the grid itself and both signs, for one target format: float32 array."""
    grid = positive_grid(fmt)
    mids = (grid[:-1] + grid[1:]) / 2
    exact = np.concatenate([grid, mids])
    exact = exact[exact <= np.finfo(np.float32).max]                  # BF16's 2**128 is not float32
    base = exact.astype(np.float32)
    assert np.array_equal(base.astype(np.float64), exact), "corner not float32"
    up = np.nextafter(base, np.float32(np.inf))
    down = np.nextafter(base, np.float32(0))
    values = np.concatenate([base, up, down])
    return np.concatenate([values, -values])


@pytest.fixture(scope="module")
def cast_inputs():
    """>= 10**6 float32 values: random bit patterns (every exponent, subnormals, NaN, inf) and the
    corners of every compared format."""
    rng = np.random.default_rng(SEED)
    random_bits = rng.integers(0, 1 << 32, size=1_000_000, dtype=np.uint64).astype(np.uint32).view(np.float32)
    specials = np.array([0.0, -0.0, np.inf, -np.inf, np.nan, -np.nan], dtype=np.float32)
    corners = [corner_values(fmt) for fmt, _, _ in CASTS.values()]
    corners += [corner_values(fmt) for fmt, _ in GENERIC.values()]
    x = np.concatenate([specials, random_bits, *corners])
    # random values concentrated in the narrow formats' ranges (exponents -30..20)
    narrow = np.ldexp(rng.random(200_000) + 0.5, rng.integers(-30, 20, 200_000)).astype(np.float32)
    narrow *= np.where(rng.random(narrow.size) < 0.5, -1, 1).astype(np.float32)
    return np.concatenate([x, narrow])


def wide(x):
    """float32 -> float64 (exact; quiets signalling NaNs without a warning)."""
    with np.errstate(invalid="ignore"):
        return x.astype(np.float64)


def cast_codes(x, dtype, view):
    with np.errstate(over="ignore", invalid="ignore"):
        return x.astype(dtype).view(view)


@pytest.mark.parametrize("name", CASTS)
def test_encode_matches_cast(name, cast_inputs):
    fmt, dtype, view = CASTS[name]
    x = cast_inputs
    assert x.size >= 1_000_000
    got = fmt.encode(wide(x), overflow="inf")
    want = cast_codes(x, dtype, view)
    assert got.dtype == view
    bad = mismatches(got, want, np.isnan(got.view(dtype)), np.isnan(want.view(dtype)))
    assert bad.size == 0, first_mismatch(bad, x, got, want, fmt.width)


@pytest.mark.parametrize("name", GENERIC)
def test_encode_matches_cast_generic(name, cast_inputs):
    """``specials="none"`` formats have no NaN: ml_dtypes saturates them, as ``overflow="inf"`` must."""
    fmt, dtype = GENERIC[name]
    x = cast_inputs
    if not fmt.has_nan:
        x = x[~np.isnan(x)]
    got = fmt.encode(wide(x), overflow="inf")
    want = cast_codes(x, dtype, np.uint8)
    bad = mismatches(got, want, np.isnan(got.view(dtype)), np.isnan(want.view(dtype)))
    assert bad.size == 0, first_mismatch(bad, x, got, want, fmt.width)


def test_encode_fp32_matches_numpy():
    """float64 -> float32 (numpy rounds once, RNE): random exponents over float32's range and ties."""
    rng = np.random.default_rng(SEED)
    n = 200_000
    x = np.ldexp(1 + rng.random(n), rng.integers(-155, 130, n))
    f32 = rng.integers(0, 1 << 32, size=n, dtype=np.uint64).astype(np.uint32).view(np.float32)
    f32 = f32[np.isfinite(f32)].astype(np.float64)
    ties = (f32 + np.nextafter(f32.astype(np.float32), np.float32(np.inf)).astype(np.float64)) / 2
    ties = ties[np.isfinite(ties)]
    x = np.concatenate([x, -x, ties, np.nextafter(ties, np.inf), np.nextafter(ties, 0),
                        [0.0, -0.0, np.inf, -np.inf, np.nan]])
    got = FP32.encode(x, overflow="inf")
    with np.errstate(over="ignore"):
        want = x.astype(np.float32).view(np.uint32)
    bad = mismatches(got, want, np.isnan(got.view(np.float32)), np.isnan(want.view(np.float32)))
    assert bad.size == 0, first_mismatch(bad, x, got, want, 32)


def test_encode_fp16_from_float64_matches_numpy():
    """numpy rounds float64 -> float16 once: values a float64 ulp off FP16 ties (double-rounding trap)."""
    rng = np.random.default_rng(SEED)
    grid = positive_grid(FP16)
    mids = (grid[:-1] + grid[1:]) / 2
    x = np.concatenate([mids, np.nextafter(mids, np.inf), np.nextafter(mids, 0),
                        np.ldexp(1 + rng.random(200_000), rng.integers(-27, 17, 200_000))])
    x = np.concatenate([x, -x])
    got = FP16.encode(x, overflow="inf")
    with np.errstate(over="ignore"):
        want = x.astype(np.float16).view(np.uint16)
    bad = mismatches(got, want, np.isnan(got.view(np.float16)), np.isnan(want.view(np.float16)))
    assert bad.size == 0, first_mismatch(bad, x, got, want, 16)


# -- saturation ------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", CASTS)
def test_encode_saturate(name, cast_inputs):
    """Saturate: what the cast gives, except that a finite overflow clamps to +-max finite, inf stays
    inf in ieee formats and becomes +-max in E4M3; NaN stays NaN."""
    fmt, dtype, view = CASTS[name]
    x = cast_inputs
    got = fmt.encode(wide(x))                            # saturate is the default
    want = cast_codes(x, dtype, view).copy()
    want_val = want.view(dtype).astype(np.float64)
    max_code = np.where(np.signbit(x), fmt.max_code | (1 << (fmt.width - 1)), fmt.max_code).astype(view)
    if fmt.has_inf:
        clamp = np.isinf(want_val) & np.isfinite(x)
    else:
        clamp = np.isnan(want_val) & ~np.isnan(x)
    assert clamp.sum() > 10, "too few overflowing inputs"
    want[clamp] = max_code[clamp]
    bad = mismatches(got, want, np.isnan(got.view(dtype)), np.isnan(want.view(dtype)))
    assert bad.size == 0, first_mismatch(bad, x, got, want, fmt.width)


@pytest.mark.parametrize("fmt", [E5M2, E4M3, FP16, BF16, FP16_169, FP32], ids=str)
def test_saturate_corners(fmt):
    top = fmt.max_finite
    tie = top + 2.0 ** (fmt.emax - fmt.man_bits - 1)        # halfway to the next (unrepresentable) value
    over = np.nextafter(tie, np.inf)
    sign = 1 << (fmt.width - 1)
    x = np.array([top, tie, over, 2 * top, 1e300, np.inf, -over, -np.inf, np.nan])
    got = fmt.encode(x)
    inf = fmt.inf_code if fmt.has_inf else fmt.max_code
    want = [fmt.max_code] * 5 + [inf, sign | fmt.max_code, sign | inf]
    assert got[:8].tolist() == want, f"{fmt}: got {[hex(c) for c in got]} want {[hex(c) for c in want]}"
    got = fmt.encode(x, overflow="inf")
    beyond = fmt.inf_code if fmt.has_inf else fmt.nan_code
    # the tie goes to even: the max's significand is odd in ieee formats, even in E4M3 (1.110)
    tie_code = beyond if fmt.has_inf else fmt.max_code
    want = [fmt.max_code, tie_code, beyond, beyond, beyond, beyond]
    assert got[:6].tolist() == want, f"{fmt}: got {[hex(c) for c in got]} want {[hex(c) for c in want]}"
    assert (int(got[6]) & (sign - 1)) == (beyond & (sign - 1)) and (int(got[7]) & (sign - 1)) == (beyond & (sign - 1))
    assert np.isnan(fmt.decode(fmt.encode(np.nan))) and np.isnan(fmt.decode(got[8]))


def test_saturate_stochastic():
    """Stochastic rounding obeys the same overflow policy (R = 255 rounds up any remainder >= 1/256)."""
    x = np.array([E5M2.max_finite + 1000, -E5M2.max_finite - 1000, np.inf])
    rand = np.full(3, 255)
    assert E5M2.encode(x, "stochastic", rand=rand, rbits=8).tolist() == [0x7B, 0xFB, 0x7C]
    assert E5M2.encode(x, "stochastic", rand=rand, rbits=8, overflow="inf").tolist() == [0x7C, 0xFC, 0x7C]
    assert E5M2.encode(x, "stochastic", rand=np.zeros(3, int), rbits=8, overflow="inf").tolist() == [0x7B, 0xFB, 0x7C]
    assert E4M3.encode([449.0, np.inf], "stochastic", rand=[255, 0], rbits=8).tolist() == [0x7E, 0x7E]
    assert np.isnan(E4M3.decode(E4M3.encode([449.0], "stochastic", rand=[255], rbits=8, overflow="inf")))[0]


# -- presets ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", CASTS)
def test_preset_limits_match_finfo(name):
    fmt, dtype, _ = CASTS[name]
    info = ml_dtypes.finfo(dtype) if dtype is not np.float16 else np.finfo(np.float16)
    assert fmt.max_finite == float(info.max)
    assert fmt.min_normal == float(info.smallest_normal)
    assert fmt.min_subnormal == float(info.smallest_subnormal)
    assert fmt.width == info.bits
    assert fmt.man_bits == info.nmant


def test_reference_table():
    """REFERENCES.md section 7."""
    assert (E5M2.bias, E5M2.max_finite, E5M2.min_normal, E5M2.min_subnormal) == (15, 57344, 2**-14, 2**-16)
    assert (E4M3.bias, E4M3.max_finite, E4M3.min_normal, E4M3.min_subnormal) == (7, 448, 2**-6, 2**-9)
    assert not E4M3.has_inf and E4M3.nan_code == 0x7F and E5M2.inf_code == 0x7C
    assert by_name("fp16_169") is FP16_169 and by_name("E4M3") is E4M3


def test_fp16_169_preset():
    f = FP16_169
    assert (f.exp_bits, f.man_bits, f.bias, f.specials, f.subnormals, f.width) == (6, 9, 31, "ieee", True, 16)
    assert f.max_finite == (2 - 2**-9) * 2**31
    assert f.min_subnormal == 2**-39
    assert f.min_normal == 2**-30
    assert f.decode(f.max_code) == (2 - 2**-9) * 2**31 and f.decode(1) == 2**-39
    assert f.decode(f.inf_code) == np.inf and np.isnan(f.decode(f.nan_code))


@pytest.mark.parametrize("src", [E5M2, E4M3], ids=str)
def test_fp8_products_exact_in_fp16_169(src):
    """Every FP8 x FP8 product (65,536) is exactly an FP16_169 value (DESIGN.md section 2)."""
    from fp8train.sim.golden import mul
    a, b = (c.ravel() for c in np.meshgrid(np.arange(256), np.arange(256), indexing="ij"))
    with np.errstate(invalid="ignore"):                                 # 0 * inf
        codes = mul(a, b, src, out_fmt=FP16_169)                        # raises if any is inexact
        want = src.decode(a) * src.decode(b)
    got = FP16_169.decode(codes)
    same = ((got == want) & (np.signbit(got) == np.signbit(want))) | (np.isnan(got) & np.isnan(want))
    bad = np.flatnonzero(~same)
    assert bad.size == 0, (f"{bad.size} mismatches; first {a[bad[0]]:#04x} * {b[bad[0]]:#04x}: "
                           f"got {int(codes[bad[0]]):#06x} want {want[bad[0]]!r}")


# -- flush to zero ------------------------------------------------------------------------------------
@pytest.mark.parametrize("base", [E5M2, FP16, FP16_169], ids=str)
def test_subnormals_false_flushes(base):
    ftz = FloatFormat(base.exp_bits, base.man_bits, base.bias, subnormals=False, specials=base.specials)
    sign = 1 << (base.width - 1)
    # inputs: subnormal codes decode to a zero of their sign
    sub = np.arange(1, 1 << base.man_bits)
    assert np.array_equal(ftz.decode(sub), np.zeros(sub.size))
    neg = ftz.decode(sub | sign)
    assert np.all(neg == 0) and np.all(np.signbit(neg))
    # every other code decodes as with subnormals
    normal = np.arange(1 << base.man_bits, sign)
    assert np.array_equal(ftz.decode(normal), base.decode(normal), equal_nan=True)
    # results: what the subnormal-honouring format gives, but a zero of the sign below min normal
    rng = np.random.default_rng(SEED)
    x = np.ldexp(rng.random(50_000) + 0.5, rng.integers(base.emin - base.man_bits - 3, base.emin + 3, 50_000))
    x = np.concatenate([x, -x, [base.min_normal, base.min_normal * (1 - 2.0 ** -(base.man_bits + 2))]])
    full = base.encode(x)
    want = np.where(np.abs(base.decode(full)) < base.min_normal, full & sign, full)
    got = ftz.encode(x)
    bad = np.flatnonzero(got != want)
    assert bad.size == 0, first_mismatch(bad, x, got, want, base.width)
    magnitude = got & (sign - 1)
    assert np.sum(magnitude == 0) > 1000 and np.sum(magnitude != 0) > 1000


# -- parameter validation -------------------------------------------------------------------------------
@pytest.mark.parametrize(("kwargs", "message"), [
    (dict(exp_bits=1, man_bits=2), r"^exp_bits must be an integer from 2 to 8, not 1$"),
    (dict(exp_bits=9, man_bits=2), r"^exp_bits must be an integer from 2 to 8, not 9$"),
    (dict(exp_bits=5.0, man_bits=2), r"^exp_bits must be an integer from 2 to 8, not 5\.0$"),
    (dict(exp_bits=5, man_bits=0), r"^man_bits must be an integer from 1 to 23, not 0$"),
    (dict(exp_bits=5, man_bits=24), r"^man_bits must be an integer from 1 to 23, not 24$"),
    (dict(exp_bits=5, man_bits=2, bias=-1), r"^bias must be an integer from 0 to 31, not -1$"),
    (dict(exp_bits=5, man_bits=2, bias=32), r"^bias must be an integer from 0 to 31, not 32$"),
    (dict(exp_bits=5, man_bits=2, specials="fnuz"), r"^specials must be one of \('ieee', 'fn', 'none'\), not 'fnuz'$"),
])
def test_format_parameters(kwargs, message):
    with pytest.raises(ValueError, match=message):
        FloatFormat(**kwargs)


@pytest.mark.parametrize(("kwargs", "message"), [
    (dict(rounding="up"), r"^rounding must be one of \('nearest', 'stochastic'\), not 'up'$"),
    (dict(overflow="wrap"), r"^overflow must be one of \('saturate', 'inf'\), not 'wrap'$"),
    (dict(rand=[0, 0, 0]), r"^rand and rbits are only used with rounding='stochastic'$"),
    (dict(rbits=4), r"^rand and rbits are only used with rounding='stochastic'$"),
    (dict(rounding="stochastic", rbits=4), r"^rounding='stochastic' needs rand: one rbits-bit integer per value$"),
    (dict(rounding="stochastic", rand=[0, 0, 0]), r"^rbits must be an integer from 1 to 49 for E5M2, not None$"),
    (dict(rounding="stochastic", rand=[0, 0, 0], rbits=0), r"^rbits must be an integer from 1 to 49 for E5M2, not 0$"),
    (dict(rounding="stochastic", rand=[0, 0, 0], rbits=50), r"^rbits must be an integer from 1 to 49 for E5M2, not 50$"),
    (dict(rounding="stochastic", rand=[0, 0], rbits=4), r"^rand must have the shape of the values \(3,\), not \(2,\)$"),
    (dict(rounding="stochastic", rand=[[0, 0, 0]], rbits=4), r"^rand must have the shape of the values \(3,\), not \(1, 3\)$"),
    (dict(rounding="stochastic", rand=[0.0, 1.0, 2.0], rbits=4), r"^rand must hold integers, not float64$"),
    (dict(rounding="stochastic", rand=[0, 16, 0], rbits=4), r"^rand must hold integers from 0 to 15 for rbits=4$"),
    (dict(rounding="stochastic", rand=[0, -1, 0], rbits=4), r"^rand must hold integers from 0 to 15 for rbits=4$"),
])
def test_encode_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        E5M2.encode([1.0, 2.0, 3.0], **kwargs)


def test_rbits_limit_leaves_a_guard_bit():
    """man_bits + rbits stays below float64's 53-bit significand with a guard bit: 51 - man_bits."""
    for fmt in (E5M2, E4M3, FP16_169, FP16, BF16, FP32):
        limit = 51 - fmt.man_bits
        fmt.encode([1.0], "stochastic", rand=[0], rbits=limit)
        with pytest.raises(ValueError, match=rf"^rbits must be an integer from 1 to {limit} for {fmt}, not {limit + 1}$"):
            fmt.encode([1.0], "stochastic", rand=[0], rbits=limit + 1)


@pytest.mark.parametrize(("fmt", "codes", "message"), [
    (E5M2, [0, 256], r"^code 256 at flat index 1 is out of range for 8-bit E5M2$"),
    (E5M2, [-1], r"^code -1 at flat index 0 is out of range for 8-bit E5M2$"),
    (FP16_169, [[0, 1], [65536, 2]], r"^code 65536 at flat index 2 is out of range for 16-bit FP16_169$"),
    (E4M3, [1.0], r"^codes must be integers, not float64$"),
])
def test_codes_out_of_range(fmt, codes, message):
    with pytest.raises(ValueError, match=message):
        fmt.decode(codes)


def test_other_errors():
    with pytest.raises(ValueError, match=r"^value 1\.125 at flat index 1 is not exactly representable in E5M2$"):
        E5M2.code_of([1.0, 1.125])
    with pytest.raises(ValueError, match=r"^value 65536\.0 at flat index 0 is not exactly representable in E5M2$"):
        E5M2.code_of([65536.0])
    with pytest.raises(ValueError, match=r"^E4M3 has no infinity$"):
        E4M3.inf_code
    none = FloatFormat(3, 2, specials="none")
    with pytest.raises(ValueError, match=r"^FloatFormat\(exp_bits=3, man_bits=2, bias=3, subnormals=True, "
                                         r"specials='none'\) cannot represent NaN \(first at flat index 1\)$"):
        none.encode([1.0, np.nan])
    with pytest.raises(ValueError, match=r"^unknown format 'fp12'; presets are E5M2, E4M3, FP16_169, FP16, BF16, FP32$"):
        by_name("fp12")
