"""Verilator ``--lint-only -Wall`` on every registered unit (DESIGN.md §7.5); waivers need a reason."""

import pytest

from fp8train.hw.units import UNITS
from fp8train.sim.benches.harness import check_lint


@pytest.mark.parametrize("unit", UNITS, ids=[unit.name for unit in UNITS])
def test_lint(unit):
    check_lint(unit.factory(), unit.name, unit.waivers)
