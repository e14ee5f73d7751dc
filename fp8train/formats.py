"""Number formats: the one definition shared by the RTL and the golden model (DESIGN.md section 2).

A :class:`FloatFormat` is a sign bit, ``exp_bits`` of biased exponent and ``man_bits`` of fraction,
packed LSB first as ``man | exp << man_bits | sign << (exp_bits + man_bits)``. The hardware takes its
field widths, bias and special-value encoding from here; the golden model uses :meth:`decode` and
:meth:`encode`, whose rounding is the specification the RTL is checked against.

Rounding (one rule for every conversion, adder and accumulator)
    The exact value is split into ``q`` target ulps plus a remainder ``f`` in ``[0, 1)`` ulp.
    ``nearest`` rounds up iff ``f > 1/2``, or ``f == 1/2`` and ``q`` is odd (ties to even).
    ``stochastic`` with ``r`` random bits truncates ``f`` to its top ``r`` bits ``t`` and rounds up iff
    ``t + R >= 2**r``, with ``R`` the caller's r-bit random integer; the sign is applied afterwards.
    The result is unbiased up to the truncation of ``f`` (bias below ``2**-r`` ulp).
"""

import dataclasses

import numpy as np

__all__ = ["FloatFormat", "E5M2", "E4M3", "FP16_169", "FP16", "BF16", "FP32",
           "ROUNDINGS", "OVERFLOWS", "SPECIALS"]

SPECIALS = ("ieee", "fn", "none")
ROUNDINGS = ("nearest", "stochastic")
OVERFLOWS = ("saturate", "inf")

#: Random bits are applied below the target ulp of a float64 significand (53 bits), so
#: ``man_bits + rbits`` must leave room for one guard bit there.
_F64_SIG_BITS = 53


@dataclasses.dataclass(frozen=True)
class FloatFormat:
    """A binary floating-point format.

    Parameters
    ----------
    exp_bits : int
        Exponent field width, 2 to 8.
    man_bits : int
        Fraction field width (the stored significand bits without the hidden one), 1 to 23.
    bias : int or None
        Exponent bias; ``None`` means the IEEE choice ``2**(exp_bits-1) - 1``.
    subnormals : bool
        ``False`` flushes subnormal results and inputs to a zero of the same sign.
    specials : "ieee" | "fn" | "none"
        ``ieee``: the top exponent holds inf (fraction 0) and NaN (fraction != 0).
        ``fn``: finite with one NaN fraction (all ones) in the top exponent, as OCP E4M3.
        ``none``: every code is a finite number.
    """

    exp_bits: int
    man_bits: int
    bias: int | None = None
    subnormals: bool = True
    specials: str = "ieee"

    def __post_init__(self):
        if not isinstance(self.exp_bits, int) or not 2 <= self.exp_bits <= 8:
            raise ValueError(f"exp_bits must be an integer from 2 to 8, not {self.exp_bits!r}")
        if not isinstance(self.man_bits, int) or not 1 <= self.man_bits <= 23:
            raise ValueError(f"man_bits must be an integer from 1 to 23, not {self.man_bits!r}")
        if self.bias is None:
            object.__setattr__(self, "bias", (1 << (self.exp_bits - 1)) - 1)
        elif not isinstance(self.bias, int) or not 0 <= self.bias < (1 << self.exp_bits):
            raise ValueError(f"bias must be an integer from 0 to {(1 << self.exp_bits) - 1}, "
                             f"not {self.bias!r}")
        if self.specials not in SPECIALS:
            raise ValueError(f"specials must be one of {SPECIALS}, not {self.specials!r}")

    # -- field geometry, used by the RTL for its widths ------------------------------------------
    @property
    def width(self) -> int:
        """Total code width in bits."""
        return 1 + self.exp_bits + self.man_bits

    @property
    def exp_max_field(self) -> int:
        """All-ones exponent field."""
        return (1 << self.exp_bits) - 1

    @property
    def emin(self) -> int:
        """Unbiased exponent of the smallest normal number (also the subnormals' exponent)."""
        return 1 - self.bias

    @property
    def max_field(self) -> tuple[int, int]:
        """``(exp_field, man_field)`` of the largest finite magnitude."""
        all_ones = (1 << self.man_bits) - 1
        if self.specials == "ieee":
            return self.exp_max_field - 1, all_ones
        if self.specials == "fn":
            return self.exp_max_field, all_ones - 1
        return self.exp_max_field, all_ones

    @property
    def emax(self) -> int:
        """Unbiased exponent of the largest finite number."""
        return self.max_field[0] - self.bias

    @property
    def max_finite(self) -> float:
        exp_field, man_field = self.max_field
        return float(np.ldexp((1 << self.man_bits) + man_field, exp_field - self.bias - self.man_bits))

    @property
    def min_normal(self) -> float:
        return float(np.ldexp(1.0, self.emin))

    @property
    def min_subnormal(self) -> float:
        return float(np.ldexp(1.0, self.emin - self.man_bits))

    @property
    def has_inf(self) -> bool:
        return self.specials == "ieee"

    @property
    def has_nan(self) -> bool:
        return self.specials != "none"

    @property
    def dtype(self) -> type:
        """Smallest unsigned numpy integer type holding a code."""
        return np.uint8 if self.width <= 8 else np.uint16 if self.width <= 16 else np.uint32

    def pack(self, sign, exp_field, man_field):
        """Code from fields (vectorised)."""
        sign, exp_field, man_field = (np.asarray(v, dtype=np.uint64) for v in (sign, exp_field, man_field))
        return ((sign << np.uint64(self.exp_bits + self.man_bits))
                | (exp_field << np.uint64(self.man_bits)) | man_field).astype(self.dtype)

    def unpack(self, codes):
        """``(sign, exp_field, man_field)`` of codes, as uint64 arrays."""
        codes = self._check_codes(codes)
        return ((codes >> np.uint64(self.exp_bits + self.man_bits)) & np.uint64(1),
                (codes >> np.uint64(self.man_bits)) & np.uint64(self.exp_max_field),
                codes & np.uint64((1 << self.man_bits) - 1))

    @property
    def max_code(self) -> int:
        """Code of the largest positive finite number."""
        exp_field, man_field = self.max_field
        return (exp_field << self.man_bits) | man_field

    @property
    def inf_code(self) -> int:
        if not self.has_inf:
            raise ValueError(f"{self} has no infinity")
        return self.exp_max_field << self.man_bits

    @property
    def nan_code(self) -> int:
        """The canonical NaN the golden model and the RTL produce: positive, quiet (fraction MSB set)."""
        if self.specials == "ieee":
            return (self.exp_max_field << self.man_bits) | (1 << (self.man_bits - 1))
        if self.specials == "fn":
            return (self.exp_max_field << self.man_bits) | ((1 << self.man_bits) - 1)
        raise ValueError(f"{self} has no NaN")

    def __str__(self):
        for name, preset in _PRESETS.items():
            if preset == self:
                return name
        return (f"FloatFormat(exp_bits={self.exp_bits}, man_bits={self.man_bits}, bias={self.bias}, "
                f"subnormals={self.subnormals}, specials={self.specials!r})")

    # -- golden semantics ----------------------------------------------------------------------
    def _check_codes(self, codes):
        codes = np.asarray(codes)
        if codes.dtype.kind not in "iu":
            raise ValueError(f"codes must be integers, not {codes.dtype}")
        if codes.size and (codes.min() < 0 or codes.max() >= (1 << self.width)):
            bad = np.flatnonzero((codes.ravel() < 0) | (codes.ravel() >= (1 << self.width)))[0]
            raise ValueError(f"code {int(codes.ravel()[bad])} at flat index {bad} is out of range for "
                             f"{self.width}-bit {self}")
        return codes.astype(np.uint64)

    def decode(self, codes) -> np.ndarray:
        """Exact float64 values of ``codes`` (NaN and +-inf where the format has them)."""
        sign, exp_field, man_field = self.unpack(codes)
        normal = exp_field != 0
        significand = man_field + (normal.astype(np.uint64) << np.uint64(self.man_bits))
        exponent = np.maximum(exp_field.astype(np.int64), 1) - self.bias - self.man_bits
        value = np.ldexp(significand.astype(np.float64), exponent)
        if not self.subnormals:
            value = np.where(normal, value, 0.0)
        top = exp_field == self.exp_max_field
        if self.specials == "ieee":
            value = np.where(top, np.where(man_field == 0, np.inf, np.nan), value)
        elif self.specials == "fn":
            value = np.where(top & (man_field == (1 << self.man_bits) - 1), np.nan, value)
        return np.where(sign == 1, -value, value)

    def encode(self, x, rounding="nearest", *, rand=None, rbits=None, overflow="saturate"):
        """Codes of ``x`` (float64 values) rounded into this format.

        ``rand`` holds one ``rbits``-bit random integer per element of ``x`` for
        ``rounding="stochastic"`` (see the module docstring). ``overflow="saturate"`` clamps
        finite results beyond the largest finite number (and infinities, in formats without
        one) to it; ``overflow="inf"`` gives inf, or NaN in formats without inf.
        """
        x = np.asarray(x, dtype=np.float64)
        return self.code_of(self.round(np.abs(x), np.signbit(x), 0, rounding,
                                       rand=rand, rbits=rbits, overflow=overflow))

    def round(self, magnitude, negative, tail, rounding="nearest", *, rand=None, rbits=None,
              overflow="saturate"):
        """Round the exact value ``(-1)**negative * (magnitude + tail * epsilon)`` into this format.

        Returns float64 values that this format represents exactly (or inf/NaN). ``tail`` (-1, 0
        or +1, broadcast) stands for an infinitesimal remainder below the last bit of the float64
        ``magnitude``: it lets :func:`fp8train.sim.golden.add` hand over an exact sum that float64
        alone cannot hold (``s + e`` from TwoSum) and still round it exactly once.
        """
        rand = self._check_rounding(rounding, rand, rbits, overflow, np.shape(magnitude))
        magnitude = np.asarray(magnitude, dtype=np.float64)
        negative = np.asarray(negative, dtype=bool)
        tail = np.asarray(tail)
        if rounding == "nearest" and not tail.any():
            rounded = self._round_nearest_fast(magnitude)
        else:
            rounded = self._round_magnitude(magnitude, tail, rounding, rand, rbits)
        if not self.subnormals:
            rounded = np.where(rounded < self.min_normal, 0.0, rounded)

        if overflow == "saturate" or not self.has_nan:
            overflowed = self.max_finite
        else:
            overflowed = np.inf if self.has_inf else np.nan
        rounded = np.where(rounded > self.max_finite, overflowed, rounded)
        infinite = np.inf if self.has_inf else overflowed
        rounded = np.where(np.isinf(magnitude), infinite, rounded)
        if not self.has_nan and np.isnan(rounded).any():
            bad = np.flatnonzero(np.isnan(rounded).ravel())[0]
            raise ValueError(f"{self} cannot represent NaN (first at flat index {bad})")
        return np.where(negative, -rounded, rounded)

    def _round_magnitude(self, magnitude, tail, rounding, rand, rbits):
        """The rounding rule, written as the specification: unbounded exponent above, subnormal below."""
        finite = np.isfinite(magnitude)
        mag = np.where(finite, magnitude, 0.0)

        fraction, e = np.frexp(mag)
        # A power of two with a negative tail lies in the binade below, where the ulp is half.
        binade = e.astype(np.int64) - 1 - ((tail < 0) & (fraction == 0.5))
        target_exp = np.maximum(binade, self.emin)
        scaled = np.ldexp(mag, self.man_bits - target_exp)               # exact, in target ulps
        q = np.floor(scaled)
        f = scaled - q
        if rounding == "nearest":
            tie_up = (tail > 0) | ((tail == 0) & (np.fmod(q, 2) == 1))
            up = (f > 0.5) | ((f == 0.5) & tie_up)
        else:
            scale = float(1 << rbits)
            t = np.floor(f * scale)
            below = (tail < 0) & (t == f * scale)                        # exact value just under t
            q = np.where(below & (f == 0), q - 1, q)
            t = np.where(below, np.where(f == 0, scale - 1, t - 1), t)
            up = t + rand >= scale
        return np.where(finite, np.ldexp(q + up, target_exp - self.man_bits), magnitude)

    def _round_nearest_fast(self, magnitude):
        """:meth:`_round_magnitude` for ``nearest`` without a tail, at a third of the cost.

        Adding and subtracting ``1.5 * 2**52`` target ulps makes float64's own ties-to-even addition
        round to a multiple of the ulp (the golden matmul spends most of its time here).
        """
        magnitude = np.minimum(magnitude, 4 * self.max_finite)          # keeps the magic term finite
        _, e = np.frexp(magnitude)
        ulp = np.ldexp(1.0, np.maximum(e - 1, self.emin) - self.man_bits)
        magic = ulp * float(3 << 51)
        with np.errstate(invalid="ignore"):
            return (magnitude + magic) - magic

    def code_of(self, values):
        """Codes of float64 values this format represents exactly (NaN becomes :attr:`nan_code`)."""
        values = np.asarray(values, dtype=np.float64)
        mag = np.abs(values)
        finite = np.isfinite(mag)
        _, e = np.frexp(np.where(finite, mag, 0.0))
        target_exp = np.maximum(e.astype(np.int64) - 1, self.emin)
        significand = np.ldexp(np.where(finite, mag, 0.0), self.man_bits - target_exp)
        if np.any(significand != np.floor(significand)) or np.any(mag[finite] > self.max_finite):
            bad = np.flatnonzero(((significand != np.floor(significand)) | (finite & (mag > self.max_finite))).ravel())[0]
            raise ValueError(f"value {float(values.ravel()[bad])!r} at flat index {bad} is not exactly "
                             f"representable in {self}")
        code = self._fields_to_code(significand, target_exp)
        if self.has_inf:
            code = np.where(np.isinf(mag), self.inf_code, code)
        code = code | (np.signbit(values).astype(np.uint64) << np.uint64(self.width - 1))
        if self.has_nan:
            code = np.where(np.isnan(mag), self.nan_code, code)
        elif np.isnan(mag).any() or np.isinf(mag).any():
            raise ValueError(f"{self} has no NaN or infinity")
        return code.astype(self.dtype)

    def _fields_to_code(self, significand, target_exp):
        """Unsigned code of ``significand * 2**(target_exp - man_bits)``, a representable magnitude."""
        significand = significand.astype(np.uint64)
        carry = significand >> np.uint64(self.man_bits + 1)               # a new binade
        significand = significand >> carry
        exp = target_exp + carry.astype(np.int64)
        normal = significand >> np.uint64(self.man_bits)
        exp_field = np.where(normal == 1, exp + self.bias, 0).astype(np.uint64)
        man_field = significand & np.uint64((1 << self.man_bits) - 1)
        return (exp_field << np.uint64(self.man_bits)) | man_field

    def _check_rounding(self, rounding, rand, rbits, overflow, shape):
        if rounding not in ROUNDINGS:
            raise ValueError(f"rounding must be one of {ROUNDINGS}, not {rounding!r}")
        if overflow not in OVERFLOWS:
            raise ValueError(f"overflow must be one of {OVERFLOWS}, not {overflow!r}")
        if rounding == "nearest":
            if rand is not None or rbits is not None:
                raise ValueError("rand and rbits are only used with rounding='stochastic'")
            return None
        limit = _F64_SIG_BITS - 2 - self.man_bits
        if not isinstance(rbits, int) or not 1 <= rbits <= limit:
            raise ValueError(f"rbits must be an integer from 1 to {limit} for {self}, not {rbits!r}")
        if rand is None:
            raise ValueError("rounding='stochastic' needs rand: one rbits-bit integer per value")
        rand = np.asarray(rand)
        if rand.shape != tuple(shape):
            raise ValueError(f"rand must have the shape of the values {tuple(shape)}, not {rand.shape}")
        if rand.dtype.kind not in "iu":
            raise ValueError(f"rand must hold integers, not {rand.dtype}")
        if rand.size and (rand.min() < 0 or rand.max() >= (1 << rbits)):
            raise ValueError(f"rand must hold integers from 0 to {(1 << rbits) - 1} for rbits={rbits}")
        return rand.astype(np.float64)


E5M2 = FloatFormat(5, 2)
"""IBM / OCP FP8 1-5-2 (bias 15, IEEE specials), as ml_dtypes ``float8_e5m2``."""
E4M3 = FloatFormat(4, 3, specials="fn")
"""OCP FP8 E4M3 (bias 7, no inf, NaN S.1111.111), as ml_dtypes ``float8_e4m3fn``."""
FP16_169 = FloatFormat(6, 9)
"""IBM's 1-6-9 accumulation format (bias 31, IEEE specials): every FP8 product is exact in it."""
FP16 = FloatFormat(5, 10)
"""IEEE binary16."""
BF16 = FloatFormat(8, 7)
"""bfloat16."""
FP32 = FloatFormat(8, 23)
"""IEEE binary32."""

_PRESETS = {"E5M2": E5M2, "E4M3": E4M3, "FP16_169": FP16_169, "FP16": FP16, "BF16": BF16, "FP32": FP32}


def by_name(name: str) -> FloatFormat:
    """Preset by its name (case-insensitive), for command lines and descriptors."""
    for key, fmt in _PRESETS.items():
        if key.lower() == str(name).lower():
            return fmt
    raise ValueError(f"unknown format {name!r}; presets are {', '.join(_PRESETS)}")
