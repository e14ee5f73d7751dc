"""Run a cocotb bench against an Amaranth component, from pytest (DESIGN.md §7, STYLE.md rule 15).

:func:`run` converts the component to Verilog, builds it once per distinct elaboration (cached under
``build/rtl/<name>-<sim>-<hash>/``, shared by pytest-xdist workers) and runs a bench module from
``fp8train.sim.benches`` on it, failing the calling pytest test with the failing cocotb tests named.
:func:`lint` and :func:`check_lint` run Verilator's linter on the same Verilog.
"""

import fnmatch
import json
import os
import re
import subprocess
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Union
from xml.etree import ElementTree

import pytest
from amaranth.lib import wiring
from cocotb_tools.runner import get_runner

from fp8train.hw.units import to_verilog
from fp8train.sim.benches.streams import PARAMS_ENV
from fp8train.sim.driver.build import TIMESCALE, BuildError, cached_build, simulator
from fp8train.toolchain import build_path, configure

__all__ = ["run", "lint", "check_lint", "LintWarning"]

# Yosys output trips Verilator's lint warnings (unused bits, width mismatches in its own temporaries);
# the build must not stop on them. The project's Verilog is linted separately by `lint()`.
_BUILD_ARGS = {"verilator": ["-Wno-fatal"], "icarus": []}

_TRUE = {"1", "yes", "y", "on", "true", "enable"}

ComponentOrFactory = Union[wiring.Component, Callable[[], wiring.Component]]


def _elaborate(dut: ComponentOrFactory) -> wiring.Component:
    return dut if isinstance(dut, wiring.Component) else dut()


def _run_dir_name() -> str:
    current = os.environ.get("PYTEST_CURRENT_TEST", "direct").rsplit(" ", 1)[0]
    return re.sub(r"[^\w.-]+", "_", current)


def _failures(results: Path) -> tuple[int, list[str]]:
    """Number of cocotb tests in a results file and a line per failed one."""
    tests, failed = 0, []
    for case in ElementTree.parse(results).getroot().iter("testcase"):
        tests += 1
        for problem in (*case.findall("failure"), *case.findall("error")):
            message = problem.get("message") or (problem.text or "").strip()
            failed.append(f"{case.get('name')}: {message}")
    return tests, failed


@contextmanager
def _deadline(seconds: float):
    """Kill the simulator after ``seconds``: a bench waiting for a handshake that never comes must
    fail the test, not hang the suite. The runner takes a command prefix only from the environment."""
    previous = os.environ.get("SIM_CMD_PREFIX")
    os.environ["SIM_CMD_PREFIX"] = f"timeout -k 5 {seconds:g} {previous or ''}".strip()
    try:
        yield
    finally:
        if previous is None:
            del os.environ["SIM_CMD_PREFIX"]
        else:
            os.environ["SIM_CMD_PREFIX"] = previous


def run(dut: ComponentOrFactory, name: str, bench: str, *, params: dict | None = None,
        extra_env: dict | None = None, testcase: str | None = None,
        timeout: float = 300, models: dict | None = None) -> Path:
    """Build ``dut`` (once per distinct Verilog) and run the cocotb module ``bench`` on it.

    Parameters
    ----------
    dut : Component or callable returning one
        The unit under test; its signature becomes the top-level ports (``<port>__<member>``).
    name : str
        Verilog top-level module name, also the build directory's prefix.
    bench : str
        Module under ``fp8train.sim.benches`` holding the ``@cocotb.test`` functions.
    params : dict, optional
        JSON-serialisable parameters for the bench (elaboration parameters, seeds, case counts);
        the bench reads them with ``fp8train.sim.benches.streams.bench_params()``.
    extra_env : dict, optional
        Further environment variables for the simulator process.
    testcase : str, optional
        Run only the cocotb tests with this name (comma-separated for several).
    timeout : float
        Seconds of wall time before the simulator is killed (ten times more under
        ``FP8TRAIN_LONG=1``).
    models : dict, optional
        Further Verilog files (name -> text) the build reads, e.g. the model of a vendor cell ``dut``
        instantiates (:func:`fp8train.sim.driver.gate.cell_model`).

    The simulator comes from ``$SIM`` (``verilator`` by default, or ``icarus``); ``WAVES=1`` records
    waves (VCD under Verilator, FST under Icarus) in the run directory
    ``<build dir>/runs/<pytest test name>/``. Returns the results file.
    """
    sim = simulator()
    waves = os.environ.get("WAVES", "").lower() in _TRUE  # as the runner reads it
    verilog = to_verilog(_elaborate(dut), name, emit_src=False)
    try:
        build_dir = cached_build(name, {f"{name}.v": verilog, **(models or {})}, name, sim=sim,
                                 build_args=_BUILD_ARGS[sim], waves=waves)
    except BuildError as error:
        pytest.fail(str(error), pytrace=False)
    runner = get_runner(sim)

    test_dir = build_dir / "runs" / _run_dir_name()
    results = test_dir / "results.xml"
    env = {var: str(value) for var, value in (extra_env or {}).items()}
    env[PARAMS_ENV] = json.dumps(params or {})
    # Icarus's dump module writes into the shared build directory unless told otherwise.
    plusargs = [f"+dumpfile_path={test_dir / name}.fst"] if waves and sim == "icarus" else []
    if os.environ.get("FP8TRAIN_LONG") == "1":
        timeout *= 10
    ended = "ended without a results file"
    try:
        with _deadline(timeout):
            runner.test(test_module=f"fp8train.sim.benches.{bench}", hdl_toplevel=name,
                        hdl_toplevel_lang="verilog", build_dir=build_dir, test_dir=test_dir,
                        results_xml=str(results), extra_env=env, testcase=testcase, waves=waves,
                        plusargs=plusargs, timescale=TIMESCALE)
    except SystemExit:
        pass  # under pytest the runner exits on failure; the results file says what failed
    except RuntimeError as error:  # the simulator exited non-zero (124: killed by the deadline)
        ended = f"was killed after {timeout:g} s" if "code: 124" in str(error) else f"failed ({error})"
    if not results.exists():
        pytest.fail(f"{name}: the simulation {ended}; see the output above and {test_dir}",
                    pytrace=False)
    tests, failed = _failures(results)
    if failed:
        pytest.fail(f"{name}: {len(failed)} of {tests} cocotb tests failed:\n" + "\n".join(failed),
                    pytrace=False)
    if tests == 0:
        pytest.fail(f"{name}: no cocotb test ran (bench {bench!r}, testcase {testcase!r})")
    return results


@dataclass(frozen=True)
class LintWarning:
    code: str
    text: str


_WARNING = re.compile(r"^%Warning-(?P<code>[A-Z0-9_]+): (?P<text>.*)$", re.MULTILINE)

# Warnings about how Amaranth and Yosys write Verilog rather than about the design; waived for every
# unit, each with its reason. The patterns match Verilator's message text.
GENERATOR_WAIVERS = [
    ("UNUSEDSIGNAL", re.compile(r"used: '\$"),
     "Yosys temporaries ('$N') are full-width; the design uses only a slice of them"),
    ("UNUSEDSIGNAL", re.compile(r"Signal is not used: '[^']*[.\[][^']*'$"),
     "Amaranth adds read-only alias wires per layout field/element ('o__payload[0]') for waves"),
    ("PROCASSINIT", re.compile(r""),
     "Amaranth declares every register with its init value and also assigns it on reset"),
]


def lint(component: wiring.Component, name: str) -> list[LintWarning]:
    """Warnings of ``verilator --lint-only -Wall`` on ``component``'s Verilog (top module ``name``),
    less the generator artefacts in ``GENERATOR_WAIVERS``."""
    configure()
    source = build_path("lint", name, f"{name}.v")  # -Wall wants file and module names to match
    source.parent.mkdir(parents=True, exist_ok=True)
    source.write_text(to_verilog(component, name, emit_src=False))
    result = subprocess.run(["verilator", "--lint-only", "-Wall", "-Wno-fatal",
                             "--top-module", name, str(source)],
                            capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"verilator failed on {source}:\n{result.stderr}")
    return [LintWarning(m["code"], m["text"]) for m in _WARNING.finditer(result.stderr)
            if not any(m["code"] == code and pattern.search(m["text"])
                       for code, pattern, _ in GENERATOR_WAIVERS)]


def _waives(key: str, warning: LintWarning) -> bool:
    code, _, signal = key.partition(":")
    if code != warning.code:
        return False
    named = re.search(r"'([^']*)'", warning.text)
    return not signal or bool(named and fnmatch.fnmatchcase(named.group(1), signal))


def check_lint(component: wiring.Component, name: str, waivers: dict[str, str]) -> None:
    """Fail unless every lint warning is waived, each waiver has a reason and is still needed.

    A waiver key is a warning code (``"WIDTHEXPAND"``) or a code and the signal it is about, a
    glob pattern (``"UNUSEDSIGNAL:seed"``, ``"UNUSEDSIGNAL:chunk_add_*"``); its value is the reason
    the warning is acceptable.
    """
    unjustified = [key for key, reason in waivers.items()
                   if not isinstance(reason, str) or not reason.strip()]
    assert not unjustified, f"{name}: lint waivers without a reason: {', '.join(unjustified)}"
    warnings = lint(component, name)
    left = [f"%Warning-{w.code}: {w.text}" for w in warnings
            if not any(_waives(key, w) for key in waivers)]
    assert not left, f"{name}: {len(left)} lint warnings:\n" + "\n".join(left)
    stale = [key for key in waivers if not any(_waives(key, w) for w in warnings)]
    assert not stale, f"{name}: waivers that match no warning (remove them): {', '.join(stale)}"
