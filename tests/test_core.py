# amaranth: UnusedElaboratable=no
"""RTL accelerator (command engine + tile controller + systolic array) under cocotbext-axi, against
``GoldenDevice``: whole-RAM comparison after rings of GEMMs, DMA errors and abort."""

import pytest

from fp8train.hw.core import Accelerator
from fp8train.hw.pcm.executor import PcmExecutor
from fp8train.sim.benches import harness
from fp8train.sim.golden.pcm import PcmConfig

CONFIG = dict(rows=2, cols=2, rbits=8, max_chunk=4096)
K_BLOCK = 16

TESTS = ["test_shapes", "test_transposes", "test_options", "test_updates", "test_read_error", "test_write_error",
         "test_abort",
         "test_pcm_refused_without_tile"]

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


@pytest.mark.parametrize("lanes", [3, 8, -1, 1.0, True])
def test_bad_update_lanes(lanes):
    with pytest.raises(ValueError, match=rf"^update_lanes must be 0, 1, 2 or 4, not {lanes!r}$"):
        Accelerator(rows=1, cols=1, update_lanes=lanes)


def test_bad_serial_keys():
    with pytest.raises(TypeError, match=r"^serial_keys must be True or False, not 'yes'$"):
        Accelerator(rows=1, cols=1, serial_keys="yes")


def test_bad_k_block():
    with pytest.raises(ValueError, match="k_block must be a positive multiple of 8"):
        Accelerator(**CONFIG, k_block=12)


#: The smallest array with a small PCM tile (a build of its own) for the PCM commands through the ring;
#: a second tile with an even column count, one pair per weight and narrower widths for the data path.
PCM_CONFIG = dict(rows=1, cols=1, rbits=8, max_chunk=4096)
PCM_TILE = dict(rows=4, cols=3, slices=2)
NARROW_TILE = dict(rows=3, cols=2, slices=1, dac_bits=6, adc_bits=7, g_bits=8, time_bits=7, steps_log2=2)


def _run_pcm(tile, test):
    harness.run(lambda: Accelerator(**PCM_CONFIG, k_block=8, pcm=PcmConfig(**tile)), "accelerator_pcm",
                "core_bench", params={**PCM_CONFIG, "seed": 8, "pcm": tile},
                extra_env={"COCOTB_TEST_FILTER": rf"\.{test}$"})


@pytest.mark.rtl
@pytest.mark.parametrize("test", ["test_pcm", "test_pcm_read_error", "test_pcm_write_error", "test_pcm_abort"])
def test_core_pcm(test):
    _run_pcm(PCM_TILE, test)


@pytest.mark.rtl
def test_core_pcm_narrow():
    _run_pcm(NARROW_TILE, "test_pcm")


def test_bad_pcm():
    with pytest.raises(TypeError, match=r"^pcm must be a PcmConfig or None, not dict$"):
        Accelerator(**CONFIG, k_block=16, pcm=PCM_TILE)
    with pytest.raises(ValueError, match=r"^the PCM tile's 34-bit outputs do not fit the descriptor's 32-bit"):
        Accelerator(**CONFIG, k_block=16, pcm=PcmConfig(rows=2, cols=2, slices=4, adc_bits=24))
    with pytest.raises(ValueError, match=r"^length_width must hold a row of the 300x300 tile, not 10$"):
        PcmExecutor(PcmConfig(rows=300, cols=300), length_width=10)
