"""``fp8train flash BOARD``: program the board with ``build/<board>``'s bitstream (see :func:`build.flash`)."""

import argparse
from pathlib import Path

from .build import flash
from .tops import BOARDS

__all__ = ["main"]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="fp8train flash", description=__doc__.split("\n\n")[0])
    parser.add_argument("board", choices=list(BOARDS))
    parser.add_argument("--out", type=Path, help="build directory holding the bitstream (default build/<board>)")
    args = parser.parse_args(argv)
    return flash(args.board, out=args.out)
