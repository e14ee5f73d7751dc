# amaranth: UnusedElaboratable=no
"""RTL chunk-accumulating MAC against golden ``chunk_dot`` under cocotb, and its parameter checks."""

import os

import pytest

from fp8train.hw.arith.mac import ChunkMac
from fp8train.sim.benches import harness

RBITS = 8
# (chunk, K): chunk 0 is plain accumulation; K spans one product, chunk edges and 4,096 (Verilator).
CASES = [(1, 1), (4, 1), (4, 7), (4, 8), (4, 9), (64, 63), (64, 64), (64, 65), (1, 40), (0, 50), (64, 300)]
LONG_CASES = [(64, 4096), (4, 4096), (1, 1000), (0, 4096)]


@pytest.mark.rtl
def test_mac_dot_products_match_golden():
    icarus = os.environ.get("SIM") == "icarus"
    harness.run(ChunkMac(max_chunk=64, rbits=RBITS), "chunk_mac", "mac_bench",
                params={"rbits": RBITS, "seed": 2018, "cases": CASES + ([] if icarus else LONG_CASES)})


@pytest.mark.parametrize("max_chunk", [0, -4, 2.0])
def test_bad_max_chunk(max_chunk):
    with pytest.raises(ValueError, match=rf"^max_chunk must be a positive integer, not {max_chunk!r}$"):
        ChunkMac(max_chunk=max_chunk)


@pytest.mark.parametrize("rbits", [0, 15, None])
def test_bad_rbits(rbits):
    with pytest.raises(ValueError, match=rf"^rbits must be an integer from 1 to 14, not {rbits!r}$"):
        ChunkMac(rbits=rbits)
