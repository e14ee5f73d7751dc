"""The ``fp8train`` command (DESIGN.md §1): one entry point for the Makefile and for users.

Subcommands that belong to other parts of the project (``bench``, ``experiment``, ``train``) import their module
only when run, so ``fp8train verilog`` and ``--help`` work without them and without their cost.
"""

import argparse
import importlib
import sys
from pathlib import Path

from fp8train.toolchain import build_path

# Subcommand choice -> module whose main(argv) runs it; argv is the rest of the command line.
BENCHES = {"golden": "fp8train.sim.golden.bench", "gemm": "fp8train.sim.driver.gemm_bench"}
EXPERIMENTS = {"accumulation": "fp8train.sim.experiments.accumulation",
               "ablations": "fp8train.sim.experiments.ablations",
               "pcm": "fp8train.sim.experiments.pcm"}
TRAINERS = {"digits": "fp8train.sim.train"}
# Commands whose module parses all of its arguments itself (``fp8train report --help``): name -> (module, help).
TOOLS = {"report": ("fp8train.report", "synthesise the PEs, array and accelerator: resource and Fmax table"),
         "build": ("fp8train.boards.build", "build a board's bitstream and its report into build/BOARD"),
         "flash": ("fp8train.boards.flash", "program a board with its bitstream (openFPGALoader or iceprog)")}


def _run_module(parser, kind, module, argv):
    try:
        entry = importlib.import_module(module)
    except ModuleNotFoundError as error:
        if error.name and module.startswith(error.name):
            parser.error(f"{kind} is not available in this installation ({module} is missing)")
        raise
    return entry.main(argv)


def _verilog(args):
    from fp8train.hw.units import UNITS, to_verilog

    known = {unit.name: unit for unit in UNITS}
    unknown = [name for name in args.units if name not in known]
    if unknown:
        args.parser.error(f"unknown unit {', '.join(unknown)}; choose from {', '.join(known)}")
    args.out.mkdir(parents=True, exist_ok=True)
    for name in args.units or known:
        path = args.out / f"{name}.v"
        path.write_text(to_verilog(known[name].factory(), name))
        print(path)
    return 0


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="fp8train", description="FP8 training accelerator: Verilog, benchmarks, experiments.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    verilog = commands.add_parser("verilog", help="write the Verilog of every registered unit")
    verilog.add_argument("units", nargs="*", metavar="UNIT", help="only these units (default: all)")
    verilog.add_argument("-o", "--out", type=Path, default=build_path("verilog"),
                         help="output directory (default: build/verilog)")
    verilog.set_defaults(run=_verilog, parser=verilog)

    for name, help_text, choices in (
            ("bench", "time the golden model or the simulated accelerator", BENCHES),
            ("experiment", "run a numerical experiment", EXPERIMENTS),
            ("train", "train a network on the device", TRAINERS)):
        sub = commands.add_parser(name, help=help_text)
        sub.add_argument("which", choices=choices, metavar="{" + ",".join(choices) + "}")
        sub.add_argument("rest", nargs=argparse.REMAINDER, metavar="...",
                         help=f"arguments passed to the {name}")
        sub.set_defaults(run=lambda args, sub=sub, name=name, choices=choices: _run_module(
            sub, f"{name} {args.which!r}", choices[args.which], args.rest))

    for name, (module, help_text) in TOOLS.items():
        commands.add_parser(name, help=help_text, add_help=False)
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] in TOOLS:       # argparse would take the tool's own options for ours
        return _run_module(parser, argv[0], TOOLS[argv[0]][0], argv[1:])

    args = parser.parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
