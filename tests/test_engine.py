# amaranth: UnusedElaboratable=no
"""RTL command engine (CSRs, ring, descriptor checks, write-back, IRQ, abort) under cocotbext-axi,
against golden ``check()`` and ``GoldenDevice``; and its parameter checks."""

import os

import pytest

from fp8train.hw.engine import CommandEngine
from fp8train.sim.benches import harness

CONFIG = dict(rows=4, cols=4, rbits=8, max_chunk=4096, ring_log2_max=12)

GROUPS = {
    "registers": ["test_registers", "test_fence", "test_irq_mask_and_w1c", "test_executor_codes"],
    "malformed": ["test_malformed_descriptors"],
    "ring": ["test_ring_wraps"],
    "recovery": ["test_abort", "test_reset_mid_command", "test_dma_error_on_ring"],
}


def _params(seed=64, update=True):
    icarus = os.environ.get("SIM") == "icarus"
    return {**CONFIG, "seed": seed, "commands": 12 if icarus else 40, "update": update}


def _filter(groups):
    return r"\.(" + "|".join(name for group in groups for name in GROUPS[group]) + r")(/.*)?$"


@pytest.mark.rtl
@pytest.mark.parametrize("group", list(GROUPS))
def test_engine(group):
    """Runs of one build, so that pytest-xdist spreads the bench over both cores."""
    harness.run(CommandEngine(**CONFIG), "command_engine", "engine_bench", params=_params(),
                extra_env={"COCOTB_TEST_FILTER": _filter([group])})


@pytest.mark.rtl
def test_engine_without_update_refuses_update():
    """``update=False`` (a small board's engine): UPDATE completes BAD_OPCODE like golden's device without
    it, ``CONFIG_OPCODES`` says so, and the other commands are unchanged."""
    harness.run(CommandEngine(**CONFIG, update=False), "command_engine_no_update", "engine_bench",
                params=_params(update=False), extra_env={"COCOTB_TEST_FILTER": _filter(["registers", "malformed"])})


@pytest.mark.rtl
@pytest.mark.parametrize("group", list(GROUPS))
def test_engine_with_serial_dma(group):
    """``serial_dma=True`` (the iCE40 UP5K's engine): the same registers, checks, ring, recovery and DMA
    errors through the single-transaction ``SerialDma``."""
    harness.run(CommandEngine(**CONFIG, update=False, serial_dma=True), "command_engine_serial_dma",
                "engine_bench", params=_params(update=False), extra_env={"COCOTB_TEST_FILTER": _filter([group])})


def test_engine_serial_dma_flag_must_be_bool():
    with pytest.raises(TypeError, match=r"^serial_dma must be True or False, not 'yes'$"):
        CommandEngine(**CONFIG, serial_dma="yes")


def test_engine_update_flag_must_be_bool():
    with pytest.raises(TypeError, match=r"^update must be True or False, not 1$"):
        CommandEngine(**CONFIG, update=1)


@pytest.mark.parametrize("name,value,low,high", [
    ("rows", 0, 1, 255), ("cols", 256, 1, 255), ("rbits", 2.0, 1, 255),
    ("max_chunk", 65536, 1, 65535), ("ring_log2_max", 13, 0, 12), ("rows", True, 1, 255),
])
def test_bad_parameters(name, value, low, high):
    kwargs = {**CONFIG, name: value}
    with pytest.raises(ValueError, match=rf"^{name} must be an integer from {low} to {high}, not "
                                         rf"{value!r}$"):
        CommandEngine(**kwargs)


def test_parameters_are_keyword_only():
    with pytest.raises(TypeError):
        CommandEngine(4, 4, 8, 4096)
