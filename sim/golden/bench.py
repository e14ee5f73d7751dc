"""``fp8train bench golden``: throughput of the golden model, in millions of MACs per second on one core.

Three configurations of one ``size`` x ``size`` x ``size`` GEMM of random finite E5M2 codes (seeded),
accumulated in FP16_169 in chunks of ``chunk`` (DESIGN.md section 2):

``matmul nearest``
    :func:`~fp8train.sim.golden.arith.matmul` with round-to-nearest-even.
``matmul stochastic``
    the same with stochastic rounding, random bits from an
    :class:`~fp8train.sim.golden.lfsr.LfsrBank` with one lane per output (the bank is built outside the
    timed region, its draws are inside).
``chunk_dot nearest``
    :func:`~fp8train.sim.golden.arith.chunk_dot` on the ``size**2`` exact product vectors, laid out
    ``(size, size, size)`` with k last; the products (:func:`~fp8train.sim.golden.arith.mul`) are
    formed outside the timed region.

Each figure is the best of ``repeats`` runs. The issue's target is 20 M MAC/s for ``matmul nearest``.
"""

import argparse
import time

import numpy as np

from ...formats import E5M2, FP16_169
from .arith import chunk_dot, matmul, mul
from .lfsr import LfsrBank

__all__ = ["random_codes", "run", "main"]

TARGET_MMACS = 20.0


def random_codes(rng: np.random.Generator, shape, fmt=E5M2) -> np.ndarray:
    """Uniformly random codes of ``fmt`` that are finite numbers (both signs, subnormals included)."""
    codes = rng.integers(0, 1 << fmt.width, size=shape, dtype=np.uint64)
    finite = np.isfinite(fmt.decode(codes))
    while not finite.all():
        codes[~finite] = rng.integers(0, 1 << fmt.width, size=int((~finite).sum()), dtype=np.uint64)
        finite = np.isfinite(fmt.decode(codes))
    return codes.astype(fmt.dtype)


def _best_of(repeats, setup, body):
    """Shortest wall time of ``body(setup())`` over ``repeats`` runs (setup is not timed)."""
    best = float("inf")
    for _ in range(repeats):
        state = setup()
        start = time.perf_counter()
        body(state)
        best = min(best, time.perf_counter() - start)
    return best


def run(*, size=256, chunk=64, repeats=3, seed=1, rbits=8) -> list[dict]:
    """Time the three configurations; one dict per configuration with ``name``, ``seconds``, ``mmacs``."""
    for name, value in (("size", size), ("chunk", chunk), ("repeats", repeats)):
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive integer, not {value!r}")
    rng = np.random.default_rng(seed)
    a = random_codes(rng, (size, size))
    b = random_codes(rng, (size, size))
    macs = size ** 3
    common = dict(in_fmt=E5M2, acc_fmt=FP16_169, chunk=chunk)
    cases = [
        ("matmul", "nearest", "",
         lambda: None, lambda _: matmul(a, b, **common)),
        ("matmul", "stochastic", f", LfsrBank lanes ({size}, {size}) rbits {rbits}",
         lambda: LfsrBank((size, size), seed=seed, rbits=rbits),
         lambda bank: matmul(a, b, **common, rounding="stochastic", lfsr=bank)),
        ("chunk_dot", "nearest", ", products precomputed",
         lambda: None, lambda _: chunk_dot(products, acc_fmt=FP16_169, chunk=chunk)),
    ]
    products = mul(a[:, None, :], b.T[None, :, :], E5M2)        # (i, j, k) = a[i, k] * b[k, j]
    results = []
    for func, rounding, extra, setup, body in cases:
        seconds = _best_of(repeats, setup, body)
        results.append({
            "name": f"{func} {rounding}",
            "config": (f"{size}x{size}x{size} E5M2 -> FP16_169, chunk {chunk}, {rounding}{extra}, "
                       f"best of {repeats}, seed {seed}"),
            "macs": macs, "seconds": seconds, "mmacs": macs / seconds / 1e6,
        })
    return results


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="fp8train bench golden", description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=256, help="M = N = K of the GEMM (default 256)")
    parser.add_argument("--chunk", type=int, default=64, help="chunk length (default 64)")
    parser.add_argument("--repeats", type=int, default=3, help="runs per configuration; the best counts")
    parser.add_argument("--rbits", type=int, default=8, help="random bits per stochastic rounding")
    parser.add_argument("--seed", type=int, default=1, help="seed of the operands and the LFSR bank")
    args = parser.parse_args(argv)
    if args.size < 1 or args.chunk < 1 or args.repeats < 1:
        parser.error("--size, --chunk and --repeats must be positive")
    for result in run(size=args.size, chunk=args.chunk, repeats=args.repeats, seed=args.seed,
                      rbits=args.rbits):
        note = ""
        if result["name"] == "matmul nearest":
            note = f"  (target >= {TARGET_MMACS:g})"
        print(f"{result['name']:<20} {result['mmacs']:8.1f} M MAC/s  {result['seconds']:7.3f} s  "
              f"[{result['config']}]{note}")
    return 0
