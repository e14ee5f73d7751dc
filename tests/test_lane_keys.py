# amaranth: UnusedElaboratable=no
"""RTL lane-key hasher against golden row_key/col_key under cocotb."""

import os

import pytest

from fp8train.hw.arith.lane_keys import LaneKeyHasher
from fp8train.sim.benches import harness


@pytest.mark.rtl
@pytest.mark.parametrize("serial", [False, True], ids=["pipelined", "serial"])
def test_lane_keys_match_golden(serial):
    """Every 16-bit row and column index (a sample under Icarus), both hasher forms."""
    count = 2_000 if os.environ.get("SIM") == "icarus" else 1 << 16
    harness.run(LaneKeyHasher(serial=serial), "lane_key_hasher" + "_serial" * serial, "lane_keys_bench",
                params={"count": count, "serial": serial})


def test_serial_must_be_bool():
    with pytest.raises(TypeError, match=r"^serial must be True or False, not 1$"):
        LaneKeyHasher(serial=1)
