# amaranth: UnusedElaboratable=no
"""RTL AXI4 master DMA against cocotbext-axi's AxiRam (pauses, injected errors), and its parameter
checks."""

import os

import pytest

from fp8train.hw.bus.dma import Dma
from fp8train.sim.benches import harness

MAX_BURST, MAX_READS = 16, 4


def _params(seed=4096):
    icarus = os.environ.get("SIM") == "icarus"
    return {"max_burst": MAX_BURST, "max_reads_outstanding": MAX_READS, "seed": seed,
            "count": 8 if icarus else 40}


@pytest.mark.rtl
@pytest.mark.parametrize("group", ["sweeps", "errors"])
def test_dma_against_axi_ram(group):
    """Two runs of one build, so that pytest-xdist spreads the bench over both cores."""
    tests = {"sweeps": ["test_reads_around_4k", "test_writes_around_4k",
                        "test_concurrent_reads_and_writes", "test_pipelined_commands"],
             "errors": ["test_reads_outstanding_and_buffer_limit", "test_window_and_alignment_refused",
                        "test_read_error", "test_write_error", "test_abort"]}[group]
    # A filter of our own: the runner's `testcase` does not match parametrised names ("name/a=1").
    test_filter = r"\.(" + "|".join(tests) + r")(/.*)?$"
    harness.run(Dma(max_burst=MAX_BURST, max_reads_outstanding=MAX_READS), "dma", "dma_bench",
                params=_params(), extra_env={"COCOTB_TEST_FILTER": test_filter})


@pytest.mark.parametrize("max_burst", [0, 257, 4.0])
def test_bad_max_burst(max_burst):
    with pytest.raises(ValueError, match=rf"^max_burst must be an integer from 1 to 256, not "
                                         rf"{max_burst!r}$"):
        Dma(max_burst=max_burst)


@pytest.mark.parametrize("count", [0, -1, None])
def test_bad_max_reads_outstanding(count):
    with pytest.raises(ValueError, match=rf"^max_reads_outstanding must be an integer from 1 to 64, "
                                         rf"not {count!r}$"):
        Dma(max_reads_outstanding=count)


@pytest.mark.parametrize("length_width", [3, 33])
def test_bad_length_width(length_width):
    with pytest.raises(ValueError, match=rf"^length_width must be an integer from 4 to 32, not "
                                         rf"{length_width!r}$"):
        Dma(length_width=length_width)
