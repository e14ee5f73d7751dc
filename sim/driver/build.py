"""Simulator builds cached under ``build/``, keyed by a hash of the sources and build arguments.

One directory per distinct elaboration, ``build/rtl/<name>-<sim>-<hash>/``, an exclusive file lock so
that one pytest-xdist worker builds while the other waits, and tool versions in the key. Free of pytest:
the driver uses it in a user's process and :mod:`fp8train.sim.benches.harness` in the test suite.
"""

import fcntl
import hashlib
import json
import os
import re
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path

from fp8train.toolchain import build_path, configure

__all__ = ["SIMULATORS", "TIMESCALE", "BuildError", "locked", "cached_build", "simulator"]

SIMULATORS = ("verilator", "icarus")
TIMESCALE = ("1ns", "1ps")


#: Icarus does not run an ``always @*`` block until one of its inputs changes. Yosys reads a dummy
#: register in every such block to start it at time zero, but declares it ``= 0``, which Icarus applies
#: before any process waits, so a block whose real inputs keep their initial values (e.g. a decoded
#: FSM output while the FSM sits in its first state) leaves its outputs X. Assigning the register
#: with ``#0`` instead happens after every ``always`` block waits on it. (``always_comb`` would be the
#: other fix, but Icarus 11 supports it only in part: it warns on constant part-selects, and the
#: accelerator built that way hung.)
_START_REG = re.compile(r"reg (\\\$auto\$verilog_backend\.cc:\d+:dump_module\$\d+ ) = 0;")


def _for_simulator(text: str, sim: str) -> str:
    return _START_REG.sub(r"reg \1;\n  initial #0 \1 = 1'h0;", text) if sim == "icarus" else text


class BuildError(RuntimeError):
    """The simulator build failed; the message ends with the build log's tail."""


def simulator(sim: str | None = None) -> str:
    """``sim``, or ``$SIM``, or ``verilator``; checked."""
    sim = sim or os.environ.get("SIM", "verilator")
    if sim not in SIMULATORS:
        raise ValueError(f"SIM must be one of {', '.join(SIMULATORS)}, not {sim!r}")
    return sim


@contextmanager
def locked(path: Path):
    """Exclusive lock on ``path`` across processes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def log_tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def cached_build(name: str, sources: dict[str, str], toplevel: str, *, sim: str,
                 build_args: list[str], parameters: dict | None = None, waves: bool = False) -> Path:
    """Build ``sources`` (file name → Verilog text) with top module ``toplevel`` (and its
    ``parameters``) unless an identical
    build exists; returns its directory (Verilator: the binary ``<dir>/<toplevel>``; Icarus:
    ``<dir>/sim.vvp``)."""
    from cocotb_tools.runner import get_runner  # only needed on a cache miss, but cheap to check

    configure()
    tools = [metadata.version(package) for package in ("cocotb", "verilator")]
    parameters = dict(parameters or {})
    sources = {filename: _for_simulator(text, sim) for filename, text in sources.items()}
    key = hashlib.sha256(json.dumps([sorted(sources.items()), toplevel, sim, build_args, sorted(parameters.items()),
                                     waves, tools])
                         .encode()).hexdigest()[:12]
    build_dir = build_path("rtl", f"{name}-{sim}-{key}")
    with locked(build_dir.with_suffix(".lock")):
        if (build_dir / ".built").exists():
            return build_dir
        src = build_dir / "src"
        src.mkdir(parents=True, exist_ok=True)
        files = []
        for filename, text in sources.items():
            (src / filename).write_text(text)
            files.append(src / filename)
        log = build_dir / "build.log"
        try:
            get_runner(sim).build(sources=files, hdl_toplevel=toplevel, build_args=build_args,
                                  build_dir=build_dir, parameters=parameters, timescale=TIMESCALE, waves=waves,
                                  log_file=log)
        except (RuntimeError, SystemExit) as error:
            raise BuildError(f"{name}: {sim} build failed ({error}); end of {log}:\n{log_tail(log)}") from None
        (build_dir / ".built").touch()
    return build_dir
