"""Bit-exact golden model of the UPDATE command: an element-wise SGD step on FP16 master weights.

Wang et al. (2018) keep the master weights, the momentum buffer and the update itself in FP16 (here
the 1-6-9 format :data:`~fp8train.formats.FP16_169`) and round the weight update stochastically, so
that updates far below half an ulp of a weight still move it on average. Every step below works on
FP16_169 codes and is rounded once into FP16_169; overflow saturates to the largest finite value
unless ``overflow="inf"``; NaN and inf propagate as in :mod:`fp8train.formats`::

    g1 = RNE(g * 2**scale)                       undo the loss scaling (exact unless it under/overflows)
    g1 = RNE(g1 + RNE(wd * w))                   with weight decay
    v' = RNE(RNE(mu * v) + g1);  d = v'          with momentum (v' is written back); else d = g1
    w' = ROUND(w + -RNE(lr * d))                 ROUND = stochastic (rbits random bits) or nearest-even
    copy = RNE(w' into E5M2 or E4M3)             only when a copy format is chosen

Random bits come from four LFSR lanes, one per FP16 element of a 64-bit bus beat: lane ``p`` starts at
``output_state(seed, p, 0)`` (:meth:`LfsrBank.for_outputs` with 4 x 1 lanes), element ``i`` (C order)
uses lane ``i % 4``, and the bank draws once per group of four elements, so
``rand[i] = draws[i // 4][i % 4]`` (:func:`update_rand`).
"""

import numpy as np

from ...formats import E4M3, E5M2, FP16_169, OVERFLOWS, ROUNDINGS
from .arith import add, convert
from .lfsr import MAX_RBITS, LfsrBank

__all__ = ["sgd_update", "update_rand", "LANES", "COPY_FORMATS", "SCALE_RANGE"]

#: FP16 elements per 64-bit bus beat, and so LFSR lanes of the update unit.
LANES = 4
#: Formats the updated weights may be copied into.
COPY_FORMATS = (E5M2, E4M3)
#: The descriptor's signed 8-bit scale field.
SCALE_RANGE = (-128, 127)


def update_rand(seed: int, count: int, rbits: int) -> np.ndarray:
    """The ``rbits``-bit random integer of each of ``count`` elements, as uint32 (see module docstring).

    A lane's successive draws read its bit sequence contiguously, whatever their widths (lfsr.py), so
    the ``count / 4`` draws of ``rbits`` bits are cut from fewer draws of :data:`MAX_RBITS` bits (speed).
    """
    if not isinstance(count, (int, np.integer)) or count < 0:
        raise ValueError(f"count must be a non-negative integer, not {count!r}")
    groups = -(-int(count) // LANES)
    bank = LfsrBank.for_outputs(seed, LANES, 1, MAX_RBITS)
    wide = np.array([bank.draw().ravel() for _ in range(-(-groups * rbits // MAX_RBITS))],
                    dtype=np.uint32).reshape(-1, LANES)                      # (draws, lanes)
    stream = (wide.T[:, :, None] >> np.arange(MAX_RBITS, dtype=np.uint32)) & 1  # lane, draw, bit
    bits = stream.reshape(LANES, -1)[:, :groups * rbits].reshape(LANES, groups, rbits)
    values = (bits << np.arange(rbits, dtype=np.uint32)).sum(axis=2, dtype=np.uint32)
    return values.T.ravel()[:count]


def _codes(name, codes):
    """``codes`` as an array of FP16_169 codes, or a TypeError/ValueError naming the argument."""
    arr = np.asarray(codes)
    if arr.dtype.kind not in "iu":
        raise TypeError(f"{name} must hold integer FP16_169 codes, not {arr.dtype}")
    if arr.size and (arr.min() < 0 or arr.max() >= 1 << FP16_169.width):
        bad = np.flatnonzero((arr.ravel() < 0) | (arr.ravel() >= 1 << FP16_169.width))[0]
        raise ValueError(f"{name}[{bad}] = {int(arr.ravel()[bad])} is not a {FP16_169.width}-bit code")
    return arr.astype(FP16_169.dtype)


def _scalar_code(name, code):
    if isinstance(code, (bool, np.bool_)) or not isinstance(code, (int, np.integer)) \
            or not 0 <= code < 1 << FP16_169.width:
        raise TypeError(f"{name} must be a {FP16_169.width}-bit FP16_169 code (an int), not {code!r}")
    return np.full((), code, dtype=FP16_169.dtype)


def _rne_mul(x, y, overflow):
    """RNE(x * y) of FP16_169 codes: 10-bit significands multiply exactly in float64, then one rounding."""
    with np.errstate(invalid="ignore"):             # 0 * inf is NaN, as specified
        return FP16_169.encode(FP16_169.decode(x) * FP16_169.decode(y), overflow=overflow)


def _negate(codes):
    """-x by flipping the sign bit (exact; the adder canonicalises NaN)."""
    return codes ^ FP16_169.dtype(1 << (FP16_169.width - 1))


def sgd_update(w, g, *, lr, v=None, momentum=None, weight_decay=None, scale=0, rounding="nearest",
               seed=0, rbits=8, copy_fmt=None, overflow="saturate"):
    """One SGD step of FP16_169 weight codes ``w`` with gradient codes ``g`` (same shape).

    Parameters
    ----------
    w, g : array of int
        FP16_169 codes of the master weights and the (loss-scaled) gradients.
    lr, momentum, weight_decay : int
        FP16_169 codes of the learning rate, momentum factor and weight-decay factor. Giving
        ``momentum`` (the MOMENTUM flag) needs the momentum buffer ``v`` (FP16_169 codes, shape of ``w``);
        giving ``weight_decay`` is the WEIGHT_DECAY flag.
    scale : int
        Gradients are multiplied by ``2**scale`` first, -128 to 127 (``-log2`` of the loss scale).
    rounding : "nearest" | "stochastic"
        Rounding of the weight addition only; every other step rounds to nearest-even.
    seed, rbits : int
        LFSR seed (32 bits) and random bits per element (1 to 28), used with ``rounding="stochastic"``.
    copy_fmt : None | E5M2 | E4M3
        Also return the new weights converted (nearest-even) into this FP8 format.
    overflow : "saturate" | "inf"

    Returns
    -------
    (w_new, v_new, copy)
        uint16 codes shaped like ``w``; ``v_new`` is ``None`` without momentum, ``copy`` (uint8 codes)
        ``None`` without ``copy_fmt``.
    """
    w, g = _codes("w", w), _codes("g", g)
    if g.shape != w.shape:
        raise ValueError(f"g must have the shape of w {w.shape}, not {g.shape}")
    lr = _scalar_code("lr", lr)
    if (momentum is None) != (v is None):
        raise ValueError("momentum and the momentum buffer v go together: give both or neither")
    if v is not None:
        v = _codes("v", v)
        if v.shape != w.shape:
            raise ValueError(f"v must have the shape of w {w.shape}, not {v.shape}")
        momentum = _scalar_code("momentum", momentum)
    if weight_decay is not None:
        weight_decay = _scalar_code("weight_decay", weight_decay)
    if isinstance(scale, (bool, np.bool_)) or not isinstance(scale, (int, np.integer)) \
            or not SCALE_RANGE[0] <= scale <= SCALE_RANGE[1]:
        raise ValueError(f"scale must be an integer from {SCALE_RANGE[0]} to {SCALE_RANGE[1]}, not {scale!r}")
    if rounding not in ROUNDINGS:
        raise ValueError(f"rounding must be one of {ROUNDINGS}, not {rounding!r}")
    if overflow not in OVERFLOWS:
        raise ValueError(f"overflow must be one of {OVERFLOWS}, not {overflow!r}")
    if not isinstance(rbits, int) or not 1 <= rbits <= MAX_RBITS:
        raise ValueError(f"rbits must be an integer from 1 to {MAX_RBITS}, not {rbits!r}")
    if not isinstance(seed, (int, np.integer)) or not 0 <= seed < 1 << 32:
        raise ValueError(f"seed must be a 32-bit unsigned integer, not {seed!r}")
    if copy_fmt is not None and copy_fmt not in COPY_FORMATS:
        raise ValueError(f"copy_fmt must be None, E5M2 or E4M3, not {copy_fmt!r}")

    with np.errstate(invalid="ignore"):
        g1 = FP16_169.encode(np.ldexp(FP16_169.decode(g), int(scale)), overflow=overflow)
    if weight_decay is not None:
        g1 = add(g1, _rne_mul(weight_decay, w, overflow), FP16_169, overflow=overflow)
    if v is not None:
        v = add(_rne_mul(momentum, v, overflow), g1, FP16_169, overflow=overflow)
        d = v
    else:
        d = g1
    step = _negate(_rne_mul(lr, d, overflow))
    if rounding == "stochastic":
        rand = update_rand(int(seed), w.size, rbits).reshape(w.shape)
        w_new = add(w, step, FP16_169, "stochastic", rand=rand, rbits=rbits, overflow=overflow)
    else:
        w_new = add(w, step, FP16_169, overflow=overflow)
    copy = None if copy_fmt is None else convert(w_new, FP16_169, copy_fmt, overflow=overflow)
    return w_new, v, copy
