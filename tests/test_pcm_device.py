"""``Device.pcm``: real-valued matrices on the golden PCM tile, and the rtl backend's clear refusal."""

import numpy as np
import pytest

import fp8train
from fp8train.device import Device


def relative_error(got, want):
    return float(np.linalg.norm(got - want) / np.linalg.norm(want))


@pytest.fixture(scope="module")
def problem():
    rng = np.random.default_rng(4)
    return rng.normal(size=(48, 24)), rng.normal(size=(30, 48))


def test_program_mvm_advance(problem):
    """Near x @ W after programming; a year of drift shrinks the raw outputs, compensation undoes it."""
    w, x = problem
    dev = fp8train.Device("golden", seed=3)
    dev.pcm.program(w, calibration=x)
    want = x @ w
    at_t0 = relative_error(dev.pcm.mvm(x), want)
    assert at_t0 < 0.12
    dev.pcm.advance(365 * 86400)
    raw, compensated = dev.pcm.mvm(x, compensate_drift=False), dev.pcm.mvm(x)
    assert np.linalg.norm(raw) < 0.6 * np.linalg.norm(want)
    assert relative_error(compensated, want) < 2 * at_t0
    assert dev.pcm.mvm(x[0]).shape == (24,)


def test_same_seed_same_results(problem):
    w, x = problem
    results = []
    for seed in (7, 7, 8):
        dev = fp8train.Device("golden", seed=seed)
        dev.pcm.program(w)
        results.append(dev.pcm.mvm(x))
    assert np.array_equal(results[0], results[1]) and not np.array_equal(results[0], results[2])


def test_bad_use(problem):
    w, x = problem
    dev = fp8train.Device("golden")
    with pytest.raises(RuntimeError, match=r"^Device.pcm: program\(weights\) first$"):
        dev.pcm.mvm(x)
    with pytest.raises(ValueError, match=r"^weights must be a finite 2-D array, not shape \(3,\)$"):
        dev.pcm.program(np.ones(3))
    dev.pcm.program(w)
    with pytest.raises(ValueError, match=r"^x must be a finite array of shape \(batch, 48\), not \(1, 5\)$"):
        dev.pcm.mvm(np.ones(5))
    with pytest.raises(ValueError, match=r"^slices must be an integer from 1 to 4, not 9$"):
        dev.pcm.program(w, slices=9)


def test_rtl_backend_refuses_clearly():
    # Only the property is under test: an rtl Device would first build the whole accelerator.
    dev = Device.__new__(Device)
    dev.backend, dev._pcm = "rtl", None
    with pytest.raises(NotImplementedError, match=r"^Device\('rtl'\).pcm: the PCM_PROGRAM/PCM_MVM/PCM_TIME "
                                                  r"opcodes are not on the command ring yet"):
        dev.pcm
