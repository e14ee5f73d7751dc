# amaranth: UnusedElaboratable=no
"""RTL output unit (C addition, ReLU, scale, conversion) against the golden model under cocotb."""

import os

import pytest

from fp8train.hw.arith.output import OutputUnit
from fp8train.protocol import OutFormat
from fp8train.sim.benches import harness

# (out_format, stochastic, relu, has_c, scale, saturate): every format and option, scales that
# underflow into subnormals, overflow past max, and none.
CONFIGS = [
    (OutFormat.FP16_169, 0, 0, 0, 0, 1), (OutFormat.FP16_169, 0, 1, 1, -20, 0),
    (OutFormat.FP16_169, 1, 0, 1, 5, 1), (OutFormat.E5M2, 0, 0, 1, 0, 1), (OutFormat.E5M2, 1, 1, 0, -7, 0),
    (OutFormat.E5M2, 1, 0, 1, 12, 1), (OutFormat.E4M3, 0, 1, 1, 3, 0), (OutFormat.E4M3, 1, 0, 0, -30, 1),
    (OutFormat.E4M3, 0, 0, 0, 127, 0), (OutFormat.E5M2, 0, 0, 1, -128, 1),
]


@pytest.mark.rtl
def test_output_unit_matches_golden():
    cases = 300 if os.environ.get("SIM") == "icarus" else 20_000
    harness.run(OutputUnit(rbits=8), "output_unit", "output_bench",
                params={"seed": 17, "cases": cases, "configs": [list(map(int, c)) for c in CONFIGS]})


@pytest.mark.parametrize("rbits", [0, 29])
def test_bad_rbits(rbits):
    with pytest.raises(ValueError, match=rf"^rbits must be an integer from 1 to 28, not {rbits}$"):
        OutputUnit(rbits=rbits)
