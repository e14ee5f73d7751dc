"""``fp8train bench gemm``: a whole GEMM through the simulated accelerator's DMA, timed by its counters.

Prints the PE utilisation from the hardware counters (MAC-active PE-cycles over PEs x busy cycles), the
simulated cycles per wall-clock second and the host-observed GEMM rate of the ``rtl`` backend, and checks
the result against the golden backend.
"""

import argparse
import time

import numpy as np

from fp8train.device import Device
from fp8train.formats import E5M2
from fp8train.protocol import Reg
from fp8train.sim.driver.wire import Setting


def counter(link, reg: Reg) -> int:
    low = link.read_csr(reg)
    return low | link.read_csr(reg + 4) << 32


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="fp8train bench gemm", description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=8)
    parser.add_argument("--cols", type=int, default=8)
    parser.add_argument("--size", type=int, default=256, help="M = N = K (default 256)")
    parser.add_argument("--latency", type=int, default=20, help="host memory read/write latency, cycles")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    if args.size < 1 or args.latency < 0:
        parser.error("--size must be positive and --latency non-negative")

    rng = np.random.default_rng(args.seed)
    size = args.size
    a, b = (E5M2.decode(E5M2.encode(rng.normal(0, 0.5, (size, size)))) for _ in range(2))
    start = time.perf_counter()
    with Device("rtl", rows=args.rows, cols=args.cols, memory_bytes=max(1 << 20, 8 * size * size)) as dev:
        setup = time.perf_counter() - start
        link = dev.link
        for setting in (Setting.READ_LATENCY, Setting.WRITE_LATENCY):
            link.set_ram(setting, args.latency)
        link.write_csr(Reg.PERF_CLEAR, 1)
        cycles0, wall0 = link.cycles(), time.perf_counter()
        got = dev.matmul(a, b)
        wall = time.perf_counter() - wall0
        cycles = link.cycles() - cycles0
        busy, macs = counter(link, Reg.PERF_BUSY), counter(link, Reg.PERF_MAC)
        stall = counter(link, Reg.PERF_DMA_STALL)
    with Device("golden") as gold:
        exact = np.array_equal(got, gold.matmul(a, b))
    pes = args.rows * args.cols
    print(f"gemm {size}x{size}x{size} on a {args.rows}x{args.cols} array, memory latency {args.latency} "
          f"cycles, 64-bit beats (start-up incl. build {setup:.1f} s)")
    print(f"  busy cycles         {busy:>12,}   (ideal {size ** 3 // pes:,} at one MAC per PE per cycle)")
    print(f"  PE utilisation      {macs / (pes * busy):>12.1%}   (MAC-active PE-cycles / PEs x busy cycles)")
    print(f"  DMA stall cycles    {stall:>12,}")
    print(f"  simulated cycles/s  {cycles / wall:>12,.0f}")
    print(f"  host GEMM rate      {size ** 3 / wall / 1e6:>12.2f} M MAC/s   ({wall:.2f} s wall)")
    print(f"  rtl == golden       {exact}")
    return 0 if exact else 1
