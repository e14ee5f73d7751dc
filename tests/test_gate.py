"""Gate-level simulation (issue 7, item 5): accelerators synthesised by Yosys for iCE40, their netlists
with the iCE40 cell models under Verilator, running GEMMs (and an UPDATE where there is an update unit)
through the same host link and ``Device`` API as the ``rtl`` backend, bit-exact against the golden model.
Two configurations: the smallest systolic one (1x1, with an update unit) and the iCEBreaker's own
accelerator (``BOARDS["icebreaker"]``: compact, no update unit), the one its bitstream holds.

Opt-in (``FP8TRAIN_GATE=1``, ``make test-gate``): a first run takes minutes, each step cached under
``build/``: here the 1x1 netlist 9.5 minutes (synthesis 4.9, then the cell models elaborated into it and
the Verilator build), the iCEBreaker's 3.2 (synthesis 1.0), the two run side by side; a cached run of
both 20 seconds.
"""

import os

import numpy as np
import pytest

import fp8train
from fp8train.boards.build import SYNTH_OPTIONS
from fp8train.boards.tops import ACCELERATOR_KEYS, BOARDS
from fp8train.device import Device
from fp8train.formats import E5M2, FP16_169
from fp8train.hw import core
from fp8train.hw.core import Accelerator
from fp8train.protocol import Opcode
from fp8train.sim.driver import rtl
from fp8train.sim.driver.gate import gate_link

pytestmark = [pytest.mark.rtl, pytest.mark.skipif(os.environ.get("FP8TRAIN_GATE") != "1",
                                                  reason="minutes of synthesis: FP8TRAIN_GATE=1 (make test-gate)")]

#: The accelerators synthesised, by netlist name: (configuration, Yosys options). One PE with the smallest
#: scratchpads and chunk limit, by plain ``synth_ice40`` (with ``-dff`` ABC had not finished after 36
#: minutes here); and the iCEBreaker board's accelerator, synthesised as its bitstream build does.
CONFIGS = {
    "accelerator_gate": (dict(rows=1, cols=1, k_block=8, max_chunk=64, a_slots=2), ""),
    "accelerator_icebreaker_gate": ({key: getattr(BOARDS["icebreaker"], key) for key in ACCELERATOR_KEYS},
                                    SYNTH_OPTIONS["ice40"]),
}
MEMORY_BYTES = 1 << 16


@pytest.fixture(scope="module", params=list(CONFIGS))
def device(request):
    """``Device("rtl")`` on a gate-level netlist: for this fixture the backend's accelerator is the
    ``CONFIGS`` one, and ``RtlLink.from_component`` its netlist's link (:func:`gate_link`)."""
    name, (config, synth_options) = request.param, CONFIGS[request.param]
    patch = pytest.MonkeyPatch()
    patch.setattr(core, "Accelerator", lambda **kwargs: Accelerator(**config))
    patch.setattr(rtl.RtlLink, "from_component", classmethod(
        lambda cls, component, _, **kwargs: gate_link(component, name, synth_options=synth_options,
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
    assert (Opcode.UPDATE in device.opcodes) == (not _compact(device))


def _compact(device) -> bool:
    return device.opcodes == {Opcode.FENCE, Opcode.GEMM}


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


def test_update_matches_golden_or_is_refused(device):
    """UPDATE bit-exact where the netlist has an update unit; the compact one's driver refuses it."""
    if _compact(device):
        w = np.zeros(8, dtype=np.float32)
        with pytest.raises(fp8train.DeviceError, match=r"^device error BAD_OPCODE .*no update unit"):
            device.sgd_update(w, w, lr=0.125)
        return
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
