# amaranth: UnusedElaboratable=no
"""RTL accelerator (command engine + tile controller + systolic array) under cocotbext-axi, against
``GoldenDevice``: whole-RAM comparison after rings of GEMMs, DMA errors and abort."""

import pytest

from fp8train.hw.core import Accelerator
from fp8train.sim.benches import harness

CONFIG = dict(rows=2, cols=2, rbits=8, max_chunk=4096)
K_BLOCK = 16

TESTS = ["test_shapes", "test_transposes", "test_options", "test_updates", "test_read_error", "test_write_error",
         "test_abort"]

#: A second array shape (odd rows, wider than tall, the smallest K block) for the data paths.
OTHER = dict(rows=3, cols=4, rbits=8, max_chunk=4096)
OTHER_K_BLOCK = 8


def _run(config, k_block, test):
    harness.run(lambda: Accelerator(**config, k_block=k_block), "accelerator", "core_bench",
                params={**config, "seed": 8}, extra_env={"COCOTB_TEST_FILTER": rf"\.{test}$"})


@pytest.mark.rtl
@pytest.mark.parametrize("test", TESTS)
def test_core(test):
    _run(CONFIG, K_BLOCK, test)


@pytest.mark.rtl
@pytest.mark.parametrize("test", ["test_shapes", "test_transposes", "test_options"])
def test_core_3x4(test):
    _run(OTHER, OTHER_K_BLOCK, test)


def test_bad_k_block():
    with pytest.raises(ValueError, match="k_block must be a positive multiple of 8"):
        Accelerator(**CONFIG, k_block=12)
