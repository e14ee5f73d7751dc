# amaranth: UnusedElaboratable=no
"""The FP32 comparison PE of ``fp8train report`` against numpy float32 and golden, and its checks."""

import os

import pytest

from fp8train.hw.reference.pe import ReferencePE
from fp8train.sim.benches import harness

RBITS = 8


@pytest.mark.rtl
def test_reference_pe_matches_float32():
    dots = 20 if os.environ.get("SIM") == "icarus" else 150
    harness.run(ReferencePE(rbits=RBITS), "reference_pe", "reference_pe_bench",
                params={"rbits": RBITS, "seed": 32, "dots": dots * (10 if os.environ.get("FP8TRAIN_LONG") == "1" else 1)})


def test_bad_fmt():
    with pytest.raises(TypeError, match=r"^fmt must be a FloatFormat, not 'FP32'$"):
        ReferencePE(fmt="FP32")


@pytest.mark.parametrize("rbits", [0, 15, 8.0])
def test_bad_rbits(rbits):
    with pytest.raises(ValueError, match=rf"^rbits must be an integer from 1 to 14, not {rbits!r}$"):
        ReferencePE(rbits=rbits)
