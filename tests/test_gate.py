"""Gate-level simulation (issue 7, item 5): the smallest accelerator synthesised by Yosys for iCE40,
its netlist with the iCE40 cell models under Verilator, running GEMMs and an UPDATE through the same
host link and ``Device`` API as the ``rtl`` backend, bit-exact against the golden model.

Opt-in (``FP8TRAIN_GATE=1``, ``make test-gate``): a first run took 14 minutes on this shared machine
(synthesis 5 minutes, 23 under heavy load; the cell models elaborated into the netlist 3; the
Verilator build about 6), each step cached under ``build/``; a cached run takes about 12 seconds.
"""

import os

import numpy as np
import pytest

from fp8train.device import Device
from fp8train.formats import E5M2, FP16_169
from fp8train.hw import core
from fp8train.hw.core import Accelerator
from fp8train.sim.driver import rtl
from fp8train.sim.driver.gate import gate_link

pytestmark = [pytest.mark.rtl, pytest.mark.skipif(os.environ.get("FP8TRAIN_GATE") != "1",
                                                  reason="minutes of synthesis: FP8TRAIN_GATE=1 (make test-gate)")]

#: The accelerator synthesised: one PE, the smallest scratchpads and chunk limit.
CONFIG = dict(rows=1, cols=1, k_block=8, max_chunk=64, a_slots=2)
MEMORY_BYTES = 1 << 16


@pytest.fixture(scope="module")
def device():
    """``Device("rtl")`` on the gate-level netlist: for this module the backend's accelerator is the
    small ``CONFIG`` one, and ``RtlLink.from_component`` its netlist's link (:func:`gate_link`)."""
    patch = pytest.MonkeyPatch()
    patch.setattr(core, "Accelerator", lambda **kwargs: Accelerator(**CONFIG))
    patch.setattr(rtl.RtlLink, "from_component", classmethod(
        lambda cls, component, name, **kwargs: gate_link(component, "accelerator_gate",
                                                        start_timeout=600, timeout=600, **kwargs)))
    try:
        with Device("rtl", memory_bytes=MEMORY_BYTES) as dev:
            yield dev
    finally:
        patch.undo()


def _fp8(rng, shape):
    return E5M2.decode(E5M2.encode(rng.normal(0, 1.0, shape))).astype(np.float32)


def _check(got, want, what):
    bad = np.flatnonzero(got.view(np.uint32) != want.view(np.uint32))
    assert bad.size == 0, f"{what}: {bad.size} mismatches; first at {bad[0]}: {got.flat[bad[0]]} != {want.flat[bad[0]]}"


def test_netlist_reports_its_configuration(device):
    assert (device.rows, device.cols, device.max_chunk) == (1, 1, 64)


@pytest.mark.parametrize("shape, options", [
    ((3, 2, 5), {}),
    ((2, 3, 17), dict(out="e5m2", rounding="stochastic", chunk=4, relu=True)),
    ((4, 4, 9), dict(trans_a=True, trans_b=True, chunk=3, scale=-2)),
])
def test_gemm_matches_golden(device, shape, options):
    m, n, k = shape
    rng = np.random.default_rng(m * 100 + n * 10 + k)
    a = _fp8(rng, (k, m) if options.get("trans_a") else (m, k))
    b = _fp8(rng, (n, k) if options.get("trans_b") else (k, n))
    with Device("golden", memory_bytes=MEMORY_BYTES, seed=device.seed + device.calls) as gold:
        want = gold.matmul(a, b, **options)
    _check(device.matmul(a, b, **options), want, f"gemm {shape} {options}")


def test_update_matches_golden(device):
    rng = np.random.default_rng(7)
    w = FP16_169.decode(FP16_169.encode(rng.normal(0, 1.0, 6))).astype(np.float32)
    g = FP16_169.decode(FP16_169.encode(rng.normal(0, 0.5, 6))).astype(np.float32)
    lr = np.float32(0.125)
    with Device("golden", memory_bytes=MEMORY_BYTES, seed=device.seed + device.calls) as gold:
        want = gold.sgd_update(w, g, lr=lr)
    got = device.sgd_update(w, g, lr=lr)
    for name, x, y in zip(("w", "v", "copy"), got, want):
        if y is None:
            assert x is None
        else:
            _check(x, y, f"update {name}")
