"""``Device.pcm``: real-valued matrices on the device's PCM tile through PCM_* descriptors, on the golden
backend (against ``PcmMatrix`` on a local golden tile) and on the rtl backend (bit-identical to golden)."""

import os

import numpy as np
import pytest

import fp8train
from fp8train.sim.golden.pcm import PcmConfig, PcmMatrix

TILE = PcmConfig(rows=48, cols=24)


def relative_error(got, want):
    return float(np.linalg.norm(got - want) / np.linalg.norm(want))


@pytest.fixture(scope="module")
def problem():
    rng = np.random.default_rng(4)
    return rng.normal(size=(48, 24)), rng.normal(size=(30, 48))


def test_program_mvm_advance(problem):
    """Near x @ W after programming; a year of drift shrinks the raw outputs, compensation undoes it."""
    w, x = problem
    dev = fp8train.Device("golden", seed=3, pcm=TILE)
    dev.pcm.program(w, calibration=x)
    want = x @ w
    at_t0 = relative_error(dev.pcm.mvm(x), want)
    assert at_t0 < 0.12
    dev.pcm.advance(365 * 86400)
    raw, compensated = dev.pcm.mvm(x, compensate_drift=False), dev.pcm.mvm(x)
    assert np.linalg.norm(raw) < 0.6 * np.linalg.norm(want)
    assert relative_error(compensated, want) < 2 * at_t0
    assert dev.pcm.mvm(x[0]).shape == (24,)


def test_descriptors_match_the_local_tile(problem):
    """Through descriptors the golden device gives exactly what PcmMatrix on a local tile gives; a
    smaller matrix on a larger tile too (the lanes are keyed by row and column, the padding is zero)."""
    w, x = problem
    w, x = w[:40, :20], x[:, :40]
    for tile in (PcmConfig(rows=40, cols=20), TILE):
        local = PcmMatrix(w, seed=11, calibration=x)
        dev = fp8train.Device("golden", seed=11, pcm=tile)
        dev.pcm.program(w, calibration=x)
        np.testing.assert_array_equal(dev.pcm.mvm(x), local.mvm(x))
        for seconds in (3600, 86400 * 30):
            local.advance(seconds)
            dev.pcm.advance(seconds)
            for compensate in (False, True):
                np.testing.assert_array_equal(dev.pcm.mvm(x, compensate_drift=compensate),
                                              local.mvm(x, compensate_drift=compensate))


def test_same_seed_same_results(problem):
    w, x = problem
    results = []
    for seed in (7, 7, 8):
        dev = fp8train.Device("golden", seed=seed, pcm=TILE)
        dev.pcm.program(w)
        results.append(dev.pcm.mvm(x))
    assert np.array_equal(results[0], results[1]) and not np.array_equal(results[0], results[2])


def test_bad_use(problem):
    w, x = problem
    dev = fp8train.Device("golden", pcm=TILE)
    with pytest.raises(RuntimeError, match=r"^Device.pcm: program\(weights\) first$"):
        dev.pcm.mvm(x)
    with pytest.raises(ValueError, match=r"^weights must be a finite 2-D array, not shape \(3,\)$"):
        dev.pcm.program(np.ones(3))
    with pytest.raises(ValueError, match=r"^a 49x24 matrix does not fit the 48x24 tile$"):
        dev.pcm.program(np.ones((49, 24)))
    dev.pcm.program(w)
    with pytest.raises(ValueError, match=r"^x must be a finite array of shape \(batch, 48\), not \(1, 5\)$"):
        dev.pcm.mvm(np.ones(5))
    with pytest.raises(ValueError, match=r"^slices: the tile's configuration is fixed"):
        PcmMatrix(w, seed=1, tile=dev.pcm.tile, slices=3)


def test_a_device_without_a_tile_says_so():
    with pytest.raises(RuntimeError, match=r"^Device\('golden'\) has no PCM tile: give it one with "
                                           r"Device\(\.\.\., pcm=PcmConfig\(rows=\.\.\., cols=\.\.\.\)\)$"):
        fp8train.Device("golden").pcm


#: The rtl check: the smallest array and a small tile (a Verilator build of its own, a few minutes).
RTL_TILE = PcmConfig(rows=4, cols=3, slices=2)


@pytest.mark.rtl
def test_rtl_matches_golden():
    """program, mvm, advance, mvm (with and without compensation) on the rtl accelerator's tile are
    bit-identical to the golden device's."""
    rng = np.random.default_rng(12)
    w, x = rng.normal(size=(4, 3)), rng.normal(size=(2 if os.environ.get("SIM") == "icarus" else 5, 4))
    results = {}
    for backend in ("golden", "rtl"):
        with fp8train.Device(backend, seed=21, rows=1, cols=1, pcm=RTL_TILE, memory_bytes=1 << 16) as dev:
            assert dev.pcm_config == RTL_TILE
            dev.pcm.program(w[:3, :2])
            got = [dev.pcm.mvm(x[:, :3])]
            dev.pcm.advance(86400)
            got += [dev.pcm.mvm(x[:, :3]), dev.pcm.mvm(x[:, :3], compensate_drift=False)]
            dev.pcm.program(w, calibration=x)
            got.append(dev.pcm.mvm(x))
            results[backend] = got
    for index, (rtl, golden) in enumerate(zip(results["rtl"], results["golden"])):
        np.testing.assert_array_equal(rtl, golden, err_msg=f"result {index}")
