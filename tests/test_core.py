# amaranth: UnusedElaboratable=no
"""RTL accelerator (command engine + tile controller + systolic array, or the serial GEMM executor) under
cocotbext-axi, against ``GoldenDevice``: whole-RAM comparison after rings of GEMMs, DMA errors and abort."""

import pytest

from fp8train.hw.core import Accelerator
from fp8train.hw.pcm.executor import PcmExecutor
from fp8train.hw.serial_gemm import SerialGemm
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


def _run(config, k_block, test, name="accelerator", params=None, **options):
    harness.run(lambda: Accelerator(**config, k_block=k_block, **options), name, "core_bench",
                params={**config, "seed": 8, **(params or {})}, extra_env={"COCOTB_TEST_FILTER": rf"\.{test}$"})


@pytest.mark.rtl
@pytest.mark.parametrize("test", TESTS)
def test_core(test):
    _run(CONFIG, K_BLOCK, test)


@pytest.mark.rtl
@pytest.mark.parametrize("test", ["test_shapes", "test_transposes", "test_options"])
def test_core_3x4(test):
    _run(OTHER, OTHER_K_BLOCK, test)


#: The compact accelerator as the iCE40 UP5K configures it (no update unit, chunks up to 64); its bench
#: checks PERF_MAC exactly and allows rings ten times longer (about 150 cycles a MAC).
COMPACT = dict(rows=1, cols=1, rbits=8, max_chunk=64)
COMPACT_PARAMS = {"exact_macs": True, "timeout_us": 20_000}


@pytest.mark.rtl
@pytest.mark.parametrize("test", ["test_shapes", "test_transposes", "test_options", "test_read_error",
                                  "test_write_error", "test_abort"])
def test_core_compact(test):
    _run(COMPACT, 8, test, "accelerator_compact", COMPACT_PARAMS, compact=True, update_lanes=0)


@pytest.mark.rtl
def test_core_compact_updates():
    """UPDATE between compact GEMMs: the executors' routing with SerialGemm as the GEMM executor, the
    update executor on the SerialDma."""
    _run(COMPACT, 8, "test_updates", "accelerator_compact_update", COMPACT_PARAMS, compact=True)


@pytest.mark.parametrize("lanes", [3, 8, -1, 1.0, True])
def test_bad_update_lanes(lanes):
    with pytest.raises(ValueError, match=rf"^update_lanes must be 0, 1, 2 or 4, not {lanes!r}$"):
        Accelerator(rows=1, cols=1, update_lanes=lanes)


def test_bad_serial_keys():
    with pytest.raises(TypeError, match=r"^serial_keys must be True or False, not 'yes'$"):
        Accelerator(rows=1, cols=1, serial_keys="yes")


def test_bad_compact():
    with pytest.raises(TypeError, match=r"^compact must be True or False, not 1$"):
        Accelerator(rows=1, cols=1, compact=1)
    with pytest.raises(ValueError, match=r"^compact needs rows = cols = 1, not 2 x 1$"):
        Accelerator(rows=2, cols=1, compact=True)


@pytest.mark.parametrize("args, message", [
    (dict(rbits=15), "rbits must be an integer from 1 to 14, not 15"),
    (dict(max_chunk=0), "max_chunk must be an integer from 1 to 65535, not 0"),
    (dict(max_chunk=True), "max_chunk must be an integer from 1 to 65535, not True"),
    (dict(addr_width=3), "addr_width must be an integer from 4 to 64, not 3"),
    (dict(addr_width=16, length_width=17), "length_width must be an integer from 4 to 16, not 17"),
    (dict(length_width=3), "length_width must be an integer from 4 to 32, not 3"),
])
def test_bad_serial_gemm(args, message):
    with pytest.raises(ValueError, match=rf"^{message}$"):
        SerialGemm(**args)


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
