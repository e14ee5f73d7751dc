"""RTL lane-key hasher against golden row_key/col_key under cocotb."""

import os

import pytest

from fp8train.hw.arith.lane_keys import LaneKeyHasher
from fp8train.sim.benches import harness


@pytest.mark.rtl
def test_lane_keys_match_golden():
    count = 2_000 if os.environ.get("SIM") == "icarus" else 1 << 16
    harness.run(LaneKeyHasher(), "lane_key_hasher", "lane_keys_bench", params={"count": count})
