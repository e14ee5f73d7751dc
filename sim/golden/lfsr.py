"""Bit-exact model of the LFSR bank that supplies stochastic-rounding bits (DESIGN.md §2).

Every lane is a Fibonacci LFSR over the bit sequence ``s_n`` with the recurrence
``s_{n+31} = s_{n+3} XOR s_n`` (characteristic polynomial ``x^31 + x^3 + 1``, primitive,
period ``2^31 - 1``). A lane's 31-bit state holds ``s_{n+i}`` in bit ``i``.

Draw order. One draw of ``r`` bits (``1 <= r <= 28``) advances a lane by ``r`` steps. The new bits
``s_{n+31+j} = s_{n+3+j} XOR s_{n+j}`` for ``j = 0..r-1`` all come from the old state (``3 + j <= 30``),
so the drawn integer is ``R = ((state >> 3) XOR state) & (2^r - 1)`` (bit ``j`` is ``s_{n+31+j}``)
and the new state is ``(state >> r) | (R << (31 - r))``.

Seeding. Lane ``i`` of a bank seeded with the 32-bit ``S`` starts at ``(S XOR K_i) & (2^31 - 1)``,
or at ``K_i & (2^31 - 1)`` if that is zero (the all-zero state is the one state outside the cycle).
``K_i = lane_key(i)`` is MurmurHash3's 32-bit finaliser of ``(i + 1) * 0x9E3779B9 mod 2^32``, with 1
in place of a key whose low 31 bits are zero. Lanes of a multi-dimensional bank are numbered in C
order. The RTL (``fp8train.hw.arith.lfsr``) bakes the same keys in as constants.
"""

import numpy as np

STATE_BITS = 31
TAP = 3
MAX_RBITS = STATE_BITS - TAP
STATE_MASK = (1 << STATE_BITS) - 1


def fmix32(h: int) -> int:
    """MurmurHash3's 32-bit finaliser: an invertible mix, so distinct lanes get distinct keys."""
    h ^= h >> 16
    h = (h * 0x85EBCA6B) & 0xFFFFFFFF
    h ^= h >> 13
    h = (h * 0xC2B2AE35) & 0xFFFFFFFF
    h ^= h >> 16
    return h


def lane_key(i: int) -> int:
    """The constant that decorrelates lane ``i`` from the others under one shared seed."""
    key = fmix32(((i + 1) * 0x9E3779B9) & 0xFFFFFFFF)
    return key if key & STATE_MASK else 1


def seeded_state(seed: int, i: int) -> int:
    """Start state of lane ``i`` for the 32-bit ``seed``; never the all-zero lock-up state."""
    key = lane_key(i)
    return ((seed ^ key) & STATE_MASK) or (key & STATE_MASK)


def row_key(i: int) -> int:
    """Key of GEMM output row ``i`` (see :meth:`LfsrBank.for_outputs`)."""
    return fmix32(((2 * i + 1) * 0x9E3779B9) & 0xFFFFFFFF)


def col_key(j: int) -> int:
    """Key of GEMM output column ``j`` (see :meth:`LfsrBank.for_outputs`)."""
    return fmix32(((2 * j + 2) * 0x9E3779B9) & 0xFFFFFFFF)


#: Start state used where a GEMM output's seeded state would be the all-zero lock-up state.
OUTPUT_FALLBACK_STATE = 0x5EED


def output_state(seed: int, i: int, j: int) -> int:
    """Start state of the lane of GEMM output ``(i, j)`` for the 32-bit ``seed``."""
    return ((seed ^ row_key(i) ^ col_key(j)) & STATE_MASK) or OUTPUT_FALLBACK_STATE


def step(state: int, rbits: int) -> tuple[int, int]:
    """One draw from a single lane, written bit by bit from the recurrence as a reference.

    Returns ``(R, new_state)``.
    """
    bits = [(state >> i) & 1 for i in range(STATE_BITS)]
    for _ in range(rbits):
        bits.append(bits[-STATE_BITS + TAP] ^ bits[-STATE_BITS])
    new = bits[STATE_BITS:]
    drawn = sum(bit << j for j, bit in enumerate(new))
    window = bits[rbits:]
    return drawn, sum(bit << i for i, bit in enumerate(window))


def _check_rbits(rbits):
    if not isinstance(rbits, int) or not 1 <= rbits <= MAX_RBITS:
        raise ValueError(f"rbits must be an integer from 1 to {MAX_RBITS}, not {rbits!r}")


class LfsrBank:
    """A bank of independent LFSR lanes, all advanced together by ``rbits`` per draw.

    Parameters
    ----------
    lanes : int or tuple of int
        Number of lanes, or the shape of the array of lanes (numbered in C order).
    seed : int
        32-bit seed shared by every lane (see the module docstring for the per-lane start state).
    rbits : int
        Bits per draw, ``1 <= rbits <= 28``.
    """

    def __init__(self, lanes, seed: int, rbits: int):
        _check_rbits(rbits)
        if not isinstance(seed, (int, np.integer)) or not 0 <= seed < 1 << 32:
            raise ValueError(f"seed must be a 32-bit unsigned integer, not {seed!r}")
        self.shape = (lanes,) if isinstance(lanes, (int, np.integer)) else tuple(lanes)
        count = int(np.prod(self.shape))
        if count < 1:
            raise ValueError(f"lanes must describe at least one lane, not {lanes!r}")
        self.rbits = rbits
        self._mask = np.uint32((1 << rbits) - 1)
        self._state = np.array([seeded_state(int(seed), i) for i in range(count)],
                               dtype=np.uint32).reshape(self.shape)

    @classmethod
    def for_outputs(cls, seed: int, rows: int, cols: int, rbits: int, *, row0: int = 0,
                    col0: int = 0) -> "LfsrBank":
        """One lane per output of a ``rows x cols`` GEMM result (or of its tile whose first output is
        ``(row0, col0)``), as the systolic array seeds them.

        Output ``(i, j)`` starts at ``(seed ^ row_key(i) ^ col_key(j)) & (2^31 - 1)`` (or
        :data:`OUTPUT_FALLBACK_STATE` if that is zero). The key depends on the output's coordinates
        only, never on the array size or tiling, so a seed gives the same result on every device; and
        a row key and a column key suffice, so the array needs one hash per tile row and column, not
        one per processing element.
        """
        bank = cls((rows, cols), seed, rbits)
        bank._state = np.array([[output_state(int(seed), row0 + i, col0 + j) for j in range(cols)]
                                for i in range(rows)],
                               dtype=np.uint32).reshape(bank.shape)
        return bank

    @property
    def state(self) -> np.ndarray:
        """Current 31-bit state of every lane (a copy)."""
        return self._state.copy()

    def draw(self) -> np.ndarray:
        """The next ``rbits``-bit integer of every lane, as a uint32 array of the bank's shape."""
        st = self._state
        drawn = ((st >> np.uint32(TAP)) ^ st) & self._mask
        self._state = (st >> np.uint32(self.rbits)) | (drawn << np.uint32(STATE_BITS - self.rbits))
        return drawn
