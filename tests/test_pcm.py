"""The golden PCM tile against the published statistical model (REFERENCES.md §8), and its checks.

Tolerances (each test says which apply):

- sampling: the standard error of a standard deviation over N samples is ``1/sqrt(2N)`` of it; the
  populations here keep it below 0.8%, and the tolerances are about four standard errors;
- level quantisation: a conductance code is ``g_max / 512`` = 0.049 µS, a ``nu`` code 1/512; rounding
  adds ``LSB^2 / 12`` of variance (< 0.3% of the smallest sigma);
- table rounding: every table entry has 16 fraction bits (< 0.1% relative, except the drift factor,
  whose exponent is truncated to 8 fraction bits: < 0.27%);
- Gaussian approximation: the Irwin-Hall sum has exactly unit variance after scaling, but its tails
  stop at ±3.46 sigma (checked below) and its excess kurtosis is -0.3.
"""

import math

import numpy as np
import pytest

from fp8train.sim.golden.pcm import (G_MAX_US, LEVELS, T0, PcmConfig, PcmError, PcmOp, PcmTile, alpha_code,
                                     command_error, compensate, drift_mu, drift_sigma, read_q,
                                     read_time_factor, reference_read, sigma_prog_us)

SEED = 20201


def one_pair_tile(rows=256, cols=256, seed=SEED):
    """A one-pair tile with every weight -7..7 about equally often: each level on G+ and G-."""
    config = PcmConfig(rows=rows, cols=cols, slices=1)
    weights = np.random.default_rng(seed).integers(-7, 8, size=(rows, cols))
    tile = PcmTile(config)
    tile.program(weights, seed)
    return tile


def us(codes, config):
    return np.asarray(codes, dtype=np.float64) * G_MAX_US / config.g_max_code


def folded_normal(mu, sigma):
    """Mean and standard deviation of ``|mu + sigma N(0, 1)|``."""
    mean = sigma * math.sqrt(2 / math.pi) * math.exp(-mu * mu / (2 * sigma * sigma)) + mu * math.erf(
        mu / (sigma * math.sqrt(2)))
    return mean, math.sqrt(mu * mu + sigma * sigma - mean * mean)


@pytest.fixture(scope="module")
def tile():
    return one_pair_tile()


@pytest.mark.parametrize("level", range(1, LEVELS))
def test_programming_noise_sigma(tile, level):
    """sigma_p(r) within 3% (sampling 0.8-1.5%, quantisation < 0.3%), mean within 3% of sigma."""
    c = tile.config
    sel = tile.level == level
    error = us(tile.g[sel] - c.tables["g_target"][level], c)
    want = float(sigma_prog_us(level / 7))
    assert sel.sum() > 4000
    assert abs(error.std() / want - 1) < 0.03, f"level {level}: sigma {error.std():.4f} µS, model {want:.4f}"
    assert abs(error.mean()) < 0.03 * want, f"level {level}: mean offset {error.mean():.4f} µS"


def test_programming_noise_at_level_zero(tile):
    """The unused device: max(sigma_p(0) N, 0) has mean sigma/sqrt(2 pi) (within 3%); it is 0 when the
    noise rounds to a code <= 0, P(N < LSB / (2 sigma)) (within 0.01, five standard errors)."""
    c = tile.config
    g = us(tile.g[tile.level == 0], c)
    sigma = float(sigma_prog_us(0))
    assert abs(g.mean() / (sigma / math.sqrt(2 * math.pi)) - 1) < 0.03
    zero = 0.5 * (1 + math.erf(us(0.5, c) / sigma / math.sqrt(2)))
    assert abs((g == 0).mean() - zero) < 0.01, ((g == 0).mean(), zero)


def test_programming_noise_tails_are_truncated(tile):
    """The documented difference: Irwin-Hall with 4 terms stops at sqrt(12) = 3.46 sigma."""
    c = tile.config
    sel = tile.level == LEVELS - 1
    error = np.abs(us(tile.g[sel] - c.tables["g_target"][-1], c))
    sigma = float(sigma_prog_us(1.0))
    assert error.max() <= math.sqrt(12) * sigma + us(1, c)
    assert error.max() > 2.5 * sigma     # the tails are there, only shorter


@pytest.mark.parametrize("level", range(LEVELS))
def test_drift_exponent_mean_and_spread(tile, level):
    """nu = |mu + sigma N| per level: mean within 2%, spread within 5% (quantisation 1/512 adds up to
    0.25% to the smallest spread, 0.008; sampling ~1%)."""
    c = tile.config
    nu = tile.nu[tile.level == level] / (1 << c.nu_frac)
    r = level / 7
    mean, std = folded_normal(float(drift_mu(r)), float(drift_sigma(r)))
    assert abs(nu.mean() / mean - 1) < 0.02, f"level {level}: mean {nu.mean():.5f}, model {mean:.5f}"
    assert abs(nu.std() / std - 1) < 0.05, f"level {level}: spread {nu.std():.5f}, model {std:.5f}"


@pytest.mark.parametrize("seconds", [1, 3600, 86400 * 30, 86400 * 365])
def test_drift_follows_power_law(seconds):
    """g_d = g ((t + t0)/t0)^(-nu) per device, at the grid time nearest to ``seconds``: within the
    drift table's resolution (0.27%) plus one code; the grid time within half a step (2.2%) of t + t0."""
    tile = one_pair_tile(64, 64)
    c = tile.config
    k = c.step_of_time(seconds)
    t_k = float(c.time_of_step(k))
    assert abs(math.log2((t_k + T0) / (seconds + T0))) <= 0.5 / (1 << c.steps_log2)
    tile.set_step(k)
    want = tile.g * ((t_k + T0) / T0) ** (-tile.nu / (1 << c.nu_frac))
    assert np.all(np.abs(tile.drifted() - want) <= 0.0027 * want + 1)


@pytest.mark.parametrize("seconds", [0, 3600, 86400 * 365])
@pytest.mark.parametrize("level", [2, LEVELS - 1])
def test_read_noise_level(level, seconds):
    """Relative read noise std = Q_s(r) sqrt(ln((t + t0 + t_read)/(2 t_read))) within 3% (sampling
    ~0.7%, integer rounding of the noise < 0.5%); and within 6% of aihwkit's Q_s taken from each
    device's g_prog instead of its level (the documented per-level approximation)."""
    c = PcmConfig(rows=64, cols=64, slices=1)
    tile = PcmTile(c)
    tile.program(np.full((64, 64), level), SEED + level)
    tile.set_step(c.step_of_time(seconds))
    t_k = float(c.time_of_step(tile.step))
    g_d = tile.drifted()[..., 0, 0]
    rel = np.concatenate([(tile.read()[..., 0, 0] - g_d) / g_d for _ in range(4)])
    want = float(read_q(level / 7) * read_time_factor(t_k))
    assert abs(rel.std() / want - 1) < 0.03, f"level {level}, t {t_k:.3g} s: {rel.std():.5f} vs {want:.5f}"
    per_device = read_q(tile.g[..., 0, 0] / c.g_max_code) * read_time_factor(t_k)
    assert abs(rel.std() / math.sqrt(np.mean(per_device ** 2)) - 1) < 0.06


def test_drift_compensation_restores_accuracy():
    """One year after programming, the MVM error without compensation is over 4x the error at t0;
    the global compensation brings it back below 2x (what remains: read noise grows by
    sqrt(ln) (x1.35), and the spread of nu, which one global factor cannot undo)."""
    c = PcmConfig(rows=64, cols=32, slices=2)
    rng = np.random.default_rng(SEED)
    w = np.clip(np.rint(rng.normal(0, c.w_max / 3, size=(c.rows, c.cols))), -c.w_max, c.w_max).astype(np.int64)
    x = rng.integers(-c.x_max, c.x_max + 1, size=(40, c.rows))
    tile = PcmTile(c)
    tile.program(w, SEED)
    ideal = (x @ w) * (c.g_max_code / (LEVELS - 1))
    shift = int(np.abs(ideal).max()).bit_length() - (c.adc_bits - 1) - 3 * (c.slices - 1)
    ref_shift = (c.x_max * c.g_max_code).bit_length() - (c.adc_bits - 1)
    baseline = reference_read(tile, ref_shift)

    def error(y):
        return np.sqrt(np.mean((y * 2.0 ** shift - ideal) ** 2) / np.mean(ideal ** 2))

    at_t0 = error(tile.mvm(x, shift))
    tile.advance(365 * 86400)
    y = tile.mvm(x, shift)
    alpha = alpha_code(baseline, reference_read(tile, ref_shift))
    assert error(y) > 4 * at_t0, (error(y), at_t0)
    assert error(compensate(y, alpha)) < 2 * at_t0, (error(compensate(y, alpha)), at_t0)


def test_mvm_without_noise_sources_is_exact_arithmetic():
    """With read noise and drift at their smallest (step 0) the MVM still follows the spec exactly:
    recomputed from one read of the conductances with the same lanes."""
    c = PcmConfig(rows=6, cols=5, slices=3, adc_bits=16)
    rng = np.random.default_rng(1)
    w = rng.integers(-c.w_max, c.w_max + 1, size=(6, 5))
    x = rng.integers(-c.x_max, c.x_max + 1, size=6)
    a, b = PcmTile(c), PcmTile(c)
    a.program(w, 9)
    b.program(w, 9)
    g = b.read()
    acc = np.einsum("i,ijk->jk", x, g[..., 0] - g[..., 1])
    limit = (1 << (c.adc_bits - 1)) - 1
    want = (np.clip((acc + 16) >> 5, -limit, limit) * 8 ** np.arange(3)).sum(axis=1)
    assert np.array_equal(a.mvm(x, 5), want)


def test_levels_follow_the_bit_slicing():
    c = PcmConfig(rows=1, cols=4, slices=2)
    tile = PcmTile(c)
    tile.program(np.array([[0o57, -0o57, 0, -1]]), 0)
    assert tile.level[0].tolist() == [[[7, 0], [5, 0]], [[0, 7], [0, 5]], [[0, 0], [0, 0]], [[0, 1], [0, 0]]]


def test_same_seed_same_tile_other_seed_other_noise():
    w = np.random.default_rng(0).integers(-63, 64, size=(8, 8))
    tiles = [PcmTile(PcmConfig(rows=8, cols=8)) for _ in range(3)]
    for tile, seed in zip(tiles, (5, 5, 6)):
        tile.program(w, seed)
    assert np.array_equal(tiles[0].g, tiles[1].g) and np.array_equal(tiles[0].nu, tiles[1].nu)
    assert not np.array_equal(tiles[0].g, tiles[2].g)
    x = np.arange(8) - 4
    assert np.array_equal(tiles[0].mvm(x, 6), tiles[1].mvm(x, 6))


def test_time_grid():
    c = PcmConfig(rows=1, cols=1)
    assert c.step_of_time(0) == 0 and float(c.time_of_step(0)) == 0
    assert c.step_of_time(T0) == 1 << c.steps_log2          # (t + t0)/t0 = 2: one octave
    with pytest.raises(ValueError, match=r"^1e\+20 s is beyond the last time step \("):
        c.step_of_time(1e20)
    with pytest.raises(ValueError, match=r"^seconds must be a non-negative number, not -1$"):
        c.step_of_time(-1)


@pytest.mark.parametrize("kwargs,message", [
    (dict(rows=0, cols=1), r"^rows must be an integer from 1 to 4096, not 0$"),
    (dict(rows=2, cols=1.5), r"^cols must be an integer from 1 to 4096, not 1.5$"),
    (dict(rows=2, cols=2, slices=5), r"^slices must be an integer from 1 to 4, not 5$"),
    (dict(rows=2, cols=2, adc_bits=1), r"^adc_bits must be an integer from 2 to 24, not 1$"),
    (dict(rows=2, cols=2, gauss_terms=4, gauss_bits=8), r"^gauss_bits must be an integer from 1 to 7, not 8$"),
    (dict(rows=2, cols=2, drift_lut_bits=14), r"^drift_lut_bits must be an integer from 1 to 13, not 14$"),
])
def test_bad_config(kwargs, message):
    with pytest.raises(ValueError, match=message):
        PcmConfig(**kwargs)


def test_bad_calls():
    c = PcmConfig(rows=2, cols=3)
    tile = PcmTile(c)
    with pytest.raises(TypeError, match=r"^config must be a PcmConfig, not dict$"):
        PcmTile({})
    with pytest.raises(RuntimeError, match=r"^the tile is not programmed$"):
        tile.mvm([1, 2], 0)
    with pytest.raises(ValueError, match=r"^weights must have shape \(2, 3\), not \(3, 2\)$"):
        tile.program(np.zeros((3, 2), dtype=int), 0)
    with pytest.raises(ValueError, match=r"^weights must be integers from -63 to 63$"):
        tile.program(np.full((2, 3), 64), 0)
    with pytest.raises(ValueError, match=r"^weights must be integers from -63 to 63$"):
        tile.program(np.full((2, 3), 0.5), 0)
    with pytest.raises(ValueError, match=r"^seed must be a 32-bit unsigned integer, not -1$"):
        tile.program(np.zeros((2, 3), dtype=int), -1)
    tile.program(np.zeros((2, 3), dtype=int), 0)
    with pytest.raises(ValueError, match=r"^x must have shape \(2,\) or \(batch, 2\), not \(3,\)$"):
        tile.mvm([1, 2, 3], 0)
    with pytest.raises(ValueError, match=r"^x must be integers from -127 to 127$"):
        tile.mvm([128, 0], 0)
    with pytest.raises(ValueError, match=rf"^adc_shift must be an integer from 0 to {c.acc_bits}, not 99$"):
        tile.mvm([1, 0], 99)
    with pytest.raises(ValueError, match=r"^time step must be an integer from 0 to 511, not 512$"):
        tile.set_step(512)


def test_command_errors():
    tile = PcmTile(PcmConfig(rows=2, cols=2))
    assert command_error(tile, 7, 0) == PcmError.BAD_OPCODE
    assert command_error(tile, PcmOp.MVM, 0) == PcmError.NOT_PROGRAMMED
    assert command_error(tile, PcmOp.PROGRAM, 123) == PcmError.OK
    tile.program(np.zeros((2, 2), dtype=int), 0)
    assert command_error(tile, PcmOp.MVM, tile.config.acc_bits) == PcmError.OK
    assert command_error(tile, PcmOp.MVM, tile.config.acc_bits + 1) == PcmError.BAD_ARGUMENT
    assert command_error(tile, PcmOp.TIME, 512) == PcmError.BAD_ARGUMENT
