# amaranth: UnusedElaboratable=no
"""Weight-update unit and executor: RTL against golden ``sgd_update`` under cocotb.

The first line silences Amaranth's warning about components whose constructor raised.
"""

import os

import pytest

from fp8train.hw.update import UpdateExecutor, UpdateUnit
from fp8train.sim.benches import harness
from fp8train.sim.benches.update_exec_bench import ExecutorHarness

RBITS = 8
# Elements per mode (48 modes) and per handshake case; Icarus is ~300x slower.
UNIT_SIZES = {"verilator": {"elements": 2000, "stall_elements": 800},
              "icarus": {"elements": 40, "stall_elements": 60}}


@pytest.mark.rtl
@pytest.mark.parametrize("lanes", [4, 2, 1])
def test_update_unit_matches_golden(lanes):
    sizes = UNIT_SIZES[os.environ.get("SIM", "verilator")]
    harness.run(UpdateUnit(rbits=RBITS, lanes=lanes), f"update_unit_l{lanes}", "update_bench",
                params={"rbits": RBITS, "lanes": lanes, "seed": 5000 + lanes, **sizes})


@pytest.mark.parametrize("rbits", [0, 17, 8.0, True])
def test_unit_rbits(rbits):
    with pytest.raises(ValueError, match=rf"^rbits must be an integer from 1 to 16, not {rbits!r}$"):
        UpdateUnit(rbits=rbits)


BLOCK = 32
# Commands (each of the 48 modes once per 48), elements per command at most (up to 4 blocks) and
# cycles between the abort points swept over a command.
EXEC_SIZES = {"verilator": {"commands": 48, "max_count": 4 * BLOCK + 5, "abort_step": 3},
              "icarus": {"commands": 4, "max_count": BLOCK + 5, "abort_step": 40}}


@pytest.mark.rtl
@pytest.mark.parametrize("lanes", [4, 1])
def test_update_executor_matches_golden(lanes):
    """With one lane the unit takes a beat every four cycles: the executor's feed must wait for it."""
    sizes = EXEC_SIZES[os.environ.get("SIM", "verilator")]
    harness.run(lambda: ExecutorHarness(block=BLOCK, rbits=RBITS, lanes=lanes), f"update_executor_l{lanes}",
                "update_exec_bench", params={"block": BLOCK, "rbits": RBITS, "seed": 6000 + lanes, **sizes})


@pytest.mark.parametrize("block", [0, 4, 12, 8.0, True])
def test_executor_block(block):
    with pytest.raises(ValueError, match=rf"^block must be a positive multiple of 8, not {block!r}$"):
        UpdateExecutor(block=block)


@pytest.mark.parametrize("lanes", [0, 3, 8, 4.0, True])
def test_lanes(lanes):
    for make in (lambda: UpdateUnit(lanes=lanes), lambda: UpdateExecutor(lanes=lanes)):
        with pytest.raises(ValueError, match=rf"^lanes must be 1, 2 or 4, not {lanes!r}$"):
            make()


def test_executor_length_width():
    with pytest.raises(ValueError, match=r"^length_width must hold a block's 1024 bytes, not 10$"):
        UpdateExecutor(block=512, length_width=10)
