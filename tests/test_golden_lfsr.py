"""The golden LFSR bank against its specification (sim/golden/lfsr.py docstring)."""

import numpy as np
import pytest

from fp8train.sim.golden.lfsr import (MAX_RBITS, OUTPUT_FALLBACK_STATE, STATE_BITS, STATE_MASK, LfsrBank,
                                      col_key, fmix32, output_state, row_key,
                                      lane_key, seeded_state, step)

POLY = (1 << 31) | (1 << 3) | 1  # x^31 + x^3 + 1 as a GF(2) polynomial over bit positions


def pmulmod(a: int, b: int, mod: int) -> int:
    """Product of two GF(2) polynomials modulo ``mod``."""
    deg = mod.bit_length() - 1
    result = 0
    while b:
        if b & 1:
            result ^= a
        b >>= 1
        a <<= 1
        if a >> deg & 1:
            a ^= mod
    return result


def pgcd(a: int, b: int) -> int:
    while b:
        while a and a.bit_length() >= b.bit_length():
            a ^= b << (a.bit_length() - b.bit_length())
        a, b = b, a
    return a


def x_pow_2k(k: int, mod: int) -> int:
    """x^(2^k) mod ``mod``, by k squarings."""
    x = 0b10
    for _ in range(k):
        x = pmulmod(x, x, mod)
    return x


def test_polynomial_is_primitive():
    # Irreducible (Rabin): x^(2^31) = x mod p, and gcd(x^(2^(31/q)) - x, p) = 1 for the only prime
    # q = 31, i.e. gcd(x^2 - x, p) = 1. The multiplicative group then has prime order 2^31 - 1, so
    # every element other than 1 (x included) generates it: the polynomial is primitive.
    assert x_pow_2k(31, POLY) == 0b10
    assert pgcd(POLY, 0b110) == 1
    assert all((2**31 - 1) % d for d in range(2, 46341))  # 2^31 - 1 is prime


def test_fmix32_known_values():
    # MurmurHash3 fmix32 fixes 0 and maps 1 to 0x514E28B7 (the well-known avalanche vector).
    assert fmix32(0) == 0
    assert fmix32(1) == 0x514E28B7


def test_lane_keys_nonzero_and_distinct():
    keys = [lane_key(i) & STATE_MASK for i in range(4096)]
    assert 0 not in keys
    assert len(set(keys)) == len(keys)


def test_seeding_avoids_zero_state():
    assert seeded_state(lane_key(5), 5) == lane_key(5) & STATE_MASK
    assert seeded_state(lane_key(5) ^ 1 << 31, 5) == lane_key(5) & STATE_MASK
    assert seeded_state(0, 5) == lane_key(5) & STATE_MASK


def test_step_is_the_recurrence():
    # s_{n+31} = s_{n+3} ^ s_n: from state bit 3 set (s_3 = 1), the first new bit is 1.
    assert step(1 << 3, 1) == (1, (1 << 2) | (1 << 30))
    assert step(1, 1) == (1, 1 << 30)
    assert step(0b1001, 1) == (0, 0b100)


@pytest.mark.parametrize("rbits", [1, 2, 7, 13, 27, MAX_RBITS])
def test_bank_matches_single_lane_reference(rbits):
    lanes, seed = 5, 0x1234_5678
    bank = LfsrBank(lanes, seed, rbits)
    states = [seeded_state(seed, i) for i in range(lanes)]
    assert list(bank.state) == states
    for beat in range(2000):
        drawn = bank.draw()
        for i in range(lanes):
            want, states[i] = step(states[i], rbits)
            assert drawn[i] == want, f"beat {beat} lane {i}: {drawn[i]:#x} != {want:#x}"
    assert list(bank.state) == states


def test_draws_are_one_bitstream():
    # Drawing r bits k times gives the same lane bit sequence as drawing 1 bit r*k times.
    wide, narrow = LfsrBank(3, 99, 12), LfsrBank(3, 99, 1)
    bits = np.array([narrow.draw() for _ in range(12 * 50)]).reshape(50, 12, 3)
    packed = (bits.astype(np.uint32) << np.arange(12, dtype=np.uint32)[None, :, None]).sum(axis=1)
    assert np.array_equal(np.array([wide.draw() for _ in range(50)]), packed)


def test_shaped_bank_numbers_lanes_in_c_order():
    flat, shaped = LfsrBank(6, 7, 9), LfsrBank((2, 3), 7, 9)
    assert shaped.draw().shape == (2, 3)
    flat.draw()
    assert np.array_equal(shaped.state.ravel(), flat.state)


@pytest.mark.parametrize("rbits", [0, 29, 2.0])
def test_bad_rbits(rbits):
    with pytest.raises(ValueError, match=rf"^rbits must be an integer from 1 to 28, not {rbits!r}$"):
        LfsrBank(1, 0, rbits)


def test_bad_seed():
    with pytest.raises(ValueError, match=r"^seed must be a 32-bit unsigned integer, not 4294967296$"):
        LfsrBank(1, 1 << 32, 8)


def test_bad_lanes():
    with pytest.raises(ValueError, match=r"^lanes must describe at least one lane, not \(0, 3\)$"):
        LfsrBank((0, 3), 0, 8)


def test_state_bits_constant():
    assert STATE_BITS == 31 and MAX_RBITS == 28


def test_output_lanes_depend_on_coordinates_only():
    """A GEMM output's lane starts from (seed ^ row_key(i) ^ col_key(j)), whatever the matrix size,
    so a tile of a larger result draws exactly what the same outputs draw in the whole matrix."""
    seed = 0x1234_5678
    whole = LfsrBank.for_outputs(seed, 6, 5, rbits=9)
    want = np.stack([whole.draw() for _ in range(20)])
    for i0, j0 in [(0, 0), (2, 3), (5, 4)]:
        rows, cols = 6 - i0, 5 - j0
        tile = LfsrBank.for_outputs(seed, rows, cols, 9, row0=i0, col0=j0)
        got = np.stack([tile.draw() for _ in range(20)])
        assert np.array_equal(got, want[:, i0:, j0:]), f"tile at ({i0}, {j0})"


def test_output_state_formula_and_fallback():
    assert output_state(7, 3, 4) == (7 ^ row_key(3) ^ col_key(4)) & STATE_MASK
    zero_seed = (row_key(2) ^ col_key(1)) & STATE_MASK
    assert output_state(zero_seed, 2, 1) == OUTPUT_FALLBACK_STATE
    keys = {row_key(i) for i in range(512)} | {col_key(j) for j in range(512)}
    assert len(keys) == 1024, "row and column keys must all differ"
