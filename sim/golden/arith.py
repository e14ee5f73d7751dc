"""Bit-exact golden arithmetic: the specification every RTL unit is checked against.

Everything works on codes of a :class:`~fp8train.formats.FloatFormat` (numpy unsigned arrays) and
takes randomness explicitly, so a seed reproduces the hardware bit for bit. Rounding is the one
rule of :mod:`fp8train.formats`.
"""

import numpy as np

from ...formats import E5M2, FP16_169, FloatFormat

__all__ = ["mul", "add", "convert", "chunk_dot", "matmul"]


def mul(a, b, fmt_a: FloatFormat = E5M2, fmt_b: FloatFormat | None = None,
        out_fmt: FloatFormat | None = None):
    """Exact products of codes ``a`` (in ``fmt_a``) and ``b`` (in ``fmt_b``, default ``fmt_a``).

    Two FP8 significands multiply into at most eight bits, so the float64 product is exact and is
    never rounded. With ``out_fmt`` the products are returned as codes of that format, which must
    hold every product exactly (``ValueError`` otherwise); without it, as float64 values.
    """
    fmt_b = fmt_a if fmt_b is None else fmt_b
    with np.errstate(invalid="ignore"):             # 0 * inf is NaN, as specified
        product = fmt_a.decode(a) * fmt_b.decode(b)
    return product if out_fmt is None else out_fmt.code_of(product)


def _two_sum(x, y):
    """``s = fl(x + y)`` and the exact error ``e = (x + y) - s`` (Knuth's TwoSum)."""
    with np.errstate(invalid="ignore"):
        s = x + y
        y_virtual = s - x
        e = (x - (s - y_virtual)) + (y - y_virtual)
    return s, np.where(np.isfinite(s), e, 0.0)


def _round_sum(x, y, fmt, rounding, rand, rbits, overflow):
    """Values ``x + y`` rounded once into ``fmt``; ``x`` and ``y`` are float64 values of codes."""
    if rounding == "nearest":
        # Rounding fl(x + y) to nearest equals rounding x + y: double rounding is innocuous when float64
        # keeps 2p + 2 bits of a p-bit format (Figueroa 1995), true for every format here (p <= 24).
        with np.errstate(invalid="ignore"):         # inf - inf is NaN, as specified
            s = x + y
        return fmt.round(np.abs(s), np.signbit(s), 0, rounding, overflow=overflow)
    s, e = _two_sum(x, y)
    negative = np.signbit(s)
    tail = np.sign(np.where(negative, -e, e))       # the error's sign relative to |s|
    return fmt.round(np.abs(s), negative, tail, rounding, rand=rand, rbits=rbits, overflow=overflow)


def add(a, b, fmt: FloatFormat, rounding="nearest", *, rand=None, rbits=None, overflow="saturate"):
    """The exact sum of codes ``a`` and ``b`` (both in ``fmt``) rounded once into ``fmt``.

    IEEE zero signs: ``x + (-x)`` is ``+0``; ``-0 + -0`` is ``-0``. NaN propagates, ``inf - inf`` is NaN.
    """
    return fmt.code_of(_round_sum(fmt.decode(a), fmt.decode(b), fmt, rounding, rand, rbits, overflow))


def convert(codes, src: FloatFormat, dst: FloatFormat, rounding="nearest", *, rand=None, rbits=None,
            overflow="saturate"):
    """Codes of ``src`` rounded into ``dst`` (the output unit's FP16 -> FP8 step)."""
    return dst.encode(src.decode(codes), rounding, rand=rand, rbits=rbits, overflow=overflow)


def chunk_dot(products, acc_fmt: FloatFormat = FP16_169, chunk=64, rounding="nearest", *,
              rand_chunk=None, rand_total=None, rbits=None, overflow="saturate"):
    """Chunk-based accumulation of exact products along the last axis (Wang et al. 2018).

    Products ``p[..., k]`` (float64 values exactly representable in ``acc_fmt``) are added in k order
    into a chunk accumulator; after every ``chunk`` products, and after the last, the chunk sum is added
    into the total accumulator and the chunk accumulator restarts. Both start at +0 and every addition
    rounds once. With stochastic rounding, step k's chunk addition uses ``rand_chunk[..., k]`` and a
    total addition made at step k uses ``rand_total[..., k]`` (the value at other steps is ignored).
    Returns the total as ``acc_fmt`` codes.
    """
    products = np.asarray(products, dtype=np.float64)
    acc_fmt.code_of(products)                       # raises unless every product is exact in acc_fmt
    stochastic = rounding == "stochastic"
    rand_chunk, rand_total = np.asarray(rand_chunk), np.asarray(rand_total)
    return _chunk_accumulate(products.shape[:-1], products.shape[-1], lambda k: products[..., k],
                             (lambda k: (rand_chunk[..., k], rand_total[..., k])) if stochastic else None,
                             acc_fmt, chunk, rounding, rbits, overflow)


def matmul(a, b, *, in_fmt: FloatFormat = E5M2, acc_fmt: FloatFormat = FP16_169, chunk=64,
           rounding="nearest", lfsr=None, overflow="saturate", c=None):
    """Chunk-accumulated GEMM of codes: ``a`` (M x K) times ``b`` (K x N) into ``acc_fmt`` codes.

    Output ``(i, j)`` is :func:`chunk_dot` of ``a[i, k] * b[k, j]`` in k order. With
    ``rounding="stochastic"``, ``lfsr`` is a :class:`~fp8train.sim.golden.lfsr.LfsrBank` with one
    lane per output (lane shape ``(M, N)``); every k step draws twice from every lane, first for the
    chunk addition, then for the total addition (used only when that step ends a chunk) -- the same
    bits as one ``2 * rbits`` draw per cycle split low/high, which is what a PE's lane supplies;
    :meth:`~fp8train.sim.golden.lfsr.LfsrBank.for_outputs` seeds such a bank as the array does.
    ``c`` (``acc_fmt`` codes, M x N) is added to the totals at the end, rounded to nearest-even (the
    output unit's adder), so it costs one rounding and no random bits.
    """
    a, b = np.asarray(a), np.asarray(b)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[0]:
        raise ValueError(f"matmul needs M x K and K x N code arrays, not {a.shape} and {b.shape}")
    if (rounding == "stochastic") != (lfsr is not None):
        raise ValueError("an lfsr is needed with rounding='stochastic' and only then")
    out_shape = (a.shape[0], b.shape[1])
    if lfsr is not None and tuple(lfsr.shape) != out_shape:
        raise ValueError(f"lfsr lanes must have the output's shape {out_shape}, not {tuple(lfsr.shape)}")
    if c is not None and np.shape(c) != out_shape:
        raise ValueError(f"c must have the output's shape {out_shape}, not {np.shape(c)}")
    a_val, b_val = in_fmt.decode(a), in_fmt.decode(b)
    total = _chunk_accumulate(out_shape, a.shape[1], lambda k: np.multiply.outer(a_val[:, k], b_val[k, :]),
                              (lambda k: (lfsr.draw(), lfsr.draw())) if lfsr is not None else None,
                              acc_fmt, chunk, rounding, None if lfsr is None else lfsr.rbits, overflow)
    return total if c is None else add(total, c, acc_fmt, overflow=overflow)


def _chunk_accumulate(shape, depth, product_at, rands_at, acc_fmt, chunk, rounding, rbits, overflow):
    """The chunked summation shared by :func:`chunk_dot` and :func:`matmul`."""
    _check_chunk(chunk)
    chunk_acc = np.zeros(shape)
    total = np.zeros(shape)
    for k in range(depth):
        rand_chunk, rand_total = (None, None) if rands_at is None else rands_at(k)
        chunk_acc = _round_sum(chunk_acc, product_at(k), acc_fmt, rounding, rand_chunk, rbits, overflow)
        if (k + 1) % chunk == 0 or k == depth - 1:
            total = _round_sum(total, chunk_acc, acc_fmt, rounding, rand_total, rbits, overflow)
            chunk_acc = np.zeros(shape)
    return acc_fmt.code_of(total)


def _check_chunk(chunk):
    if not isinstance(chunk, (int, np.integer)) or chunk < 1:
        raise ValueError(f"chunk must be a positive integer, not {chunk!r}")
