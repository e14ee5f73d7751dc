"""``fp8train experiment accumulation``: why the accumulator is chunked (Wang et al. 2018; REFERENCES.md §1).

For each length ``N = 2**min_log2 ... 2**max_log2`` a set of independent dot products of ``N`` E5M2 operand
pairs is summed by the golden model (:func:`~fp8train.sim.golden.arith.chunk_dot`, k in order) in four
ways and compared with the exact sum (``math.fsum`` of the float64 products, which are exact):

``fp32``
    FP32 accumulator, round to nearest, one chunk (plain accumulation).
``rne``
    FP16_169 (1-6-9) accumulator, round to nearest, one chunk: the sum "swamps" once its half ulp
    exceeds the addends and stops growing.
``chunk``
    FP16_169, round to nearest, chunks of ``chunk`` products (default 64).
``sr``
    FP16_169, stochastic rounding with ``rbits`` random bits, one chunk; the bits come from an
    :class:`~fp8train.sim.golden.lfsr.LfsrBank` with one lane per vector, drawn as
    :func:`~fp8train.sim.golden.arith.matmul` does (chunk addition first, then total addition).

Operands (``operands``): ``normal`` draws both factors as E5M2-rounded N(1, 0.1) values (products near
1, at most 1.5625); ``uniform`` draws both as E5M2-rounded U(0, 1) values (products in (0, 1], mean about
1/4). The error of a method for one vector is ``(sum - exact) / exact``; the table reports the mean of its
absolute value over the vectors (``<m>_rel``), its signed mean (``<m>_bias``) with the standard error of
that mean (``<m>_sem``), and the mean sum (``<m>_mean``).
"""

import argparse
import math
import time
from pathlib import Path

import numpy as np

from ...formats import E5M2, FP16_169, FP32
from ...toolchain import build_path
from . import save_figure
from ..golden.arith import chunk_dot
from ..golden.lfsr import LfsrBank

__all__ = ["METHODS", "OPERANDS", "products", "run", "summary", "plot", "main"]

#: Method key -> legend label (the table's column order).
METHODS = {
    "fp32": "FP32 RNE",
    "rne": "FP16_169 RNE plain",
    "chunk": "FP16_169 RNE chunk {chunk}",
    "sr": "FP16_169 SR plain, {rbits} random bits",
}
OPERANDS = ("normal", "uniform")
#: Relative error above which plain RNE is said to have stagnated in the summary.
STAGNATION = 0.01


def products(rng: np.random.Generator, vectors: int, n: int, operands: str = "normal") -> np.ndarray:
    """Exact float64 products of ``vectors`` x ``n`` pairs of E5M2 operands (see the module docstring)."""
    if operands not in OPERANDS:
        raise ValueError(f"operands must be one of {OPERANDS}, not {operands!r}")
    draw = ((lambda: rng.normal(1.0, 0.1, (vectors, n))) if operands == "normal"
            else (lambda: rng.uniform(0.0, 1.0, (vectors, n))))
    a, b = (E5M2.decode(E5M2.encode(draw())) for _ in range(2))
    return a * b


def _sums(prods, method, *, chunk, rbits, lfsr_seed):
    """Float64 values of the golden accumulation of each row of ``prods`` by ``method``."""
    n = prods.shape[-1]
    if method == "fp32":
        codes, fmt = chunk_dot(prods, acc_fmt=FP32, chunk=n), FP32
    elif method == "rne":
        codes, fmt = chunk_dot(prods, acc_fmt=FP16_169, chunk=n), FP16_169
    elif method == "chunk":
        codes, fmt = chunk_dot(prods, acc_fmt=FP16_169, chunk=chunk), FP16_169
    elif method == "sr":
        bank = LfsrBank(prods.shape[:-1], seed=lfsr_seed, rbits=rbits)
        rand_chunk = np.empty(prods.shape, dtype=np.uint32)
        rand_total = np.empty(prods.shape, dtype=np.uint32)
        for k in range(n):
            rand_chunk[..., k] = bank.draw()
            rand_total[..., k] = bank.draw()
        codes, fmt = chunk_dot(prods, acc_fmt=FP16_169, chunk=n, rounding="stochastic",
                               rand_chunk=rand_chunk, rand_total=rand_total, rbits=rbits), FP16_169
    else:
        raise ValueError(f"method must be one of {tuple(METHODS)}, not {method!r}")
    return fmt.decode(codes)


def run(*, seed=1, min_log2=6, max_log2=16, vectors=16, chunk=64, rbits=8, operands="normal",
        methods=tuple(METHODS)) -> list[dict]:
    """The experiment's table: one dict per length, ``n``, ``exact_mean`` and per method ``<m>_rel``,
    ``<m>_bias``, ``<m>_sem``, ``<m>_mean`` (see the module docstring).

    Length ``2**j`` draws its operands from ``numpy.random.default_rng([seed, j])`` and seeds its LFSR
    bank with ``(seed * 65537 + j) mod 2**32``, so each row is reproducible on its own.
    """
    for name, value in (("min_log2", min_log2), ("max_log2", max_log2), ("vectors", vectors),
                        ("chunk", chunk)):
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive integer, not {value!r}")
    if min_log2 > max_log2:
        raise ValueError(f"min_log2 must not exceed max_log2, not {min_log2} > {max_log2}")
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise ValueError(f"methods must be among {tuple(METHODS)}, not {unknown!r}")
    rows = []
    for j in range(min_log2, max_log2 + 1):
        n = 1 << j
        prods = products(np.random.default_rng([seed, j]), vectors, n, operands)
        exact = np.array([math.fsum(row) for row in prods])
        row = {"n": n, "exact_mean": float(exact.mean())}
        for method in methods:
            got = _sums(prods, method, chunk=chunk, rbits=rbits,
                        lfsr_seed=(seed * 65537 + j) % (1 << 32))
            err = (got - exact) / exact
            row[f"{method}_rel"] = float(np.abs(err).mean())
            row[f"{method}_bias"] = float(err.mean())
            row[f"{method}_sem"] = float(err.std(ddof=1) / math.sqrt(vectors)) if vectors > 1 else math.nan
            row[f"{method}_mean"] = float(got.mean())
        rows.append(row)
    return rows


def summary(rows, *, chunk=64, threshold=STAGNATION) -> str:
    """One line: where plain RNE stagnates and the worst errors of the other methods."""
    parts = []
    if "rne_rel" in rows[0]:
        over = [row["n"] for row in rows if row["rne_rel"] > threshold]
        last = rows[-1]
        if over:
            parts.append(f"plain FP16_169 RNE first exceeds {threshold:.0%} mean rel. error at N = {over[0]}")
        else:
            parts.append(f"plain FP16_169 RNE stays within {threshold:.0%} up to N = {last['n']}")
        flat = [row["n"] for i, row in enumerate(rows[:-1])
                if all(later["rne_mean"] < (1 + threshold) * row["rne_mean"] for later in rows[i + 1:])]
        if flat:
            parts.append(f"its mean sum stops growing (by < {threshold:.0%}) from N = {flat[0]}, "
                         f"at N = {last['n']} it is {last['rne_mean']:.6g} vs exact {last['exact_mean']:.6g}")
    labels = {"chunk": f"chunk-{chunk} RNE", "sr": "plain SR", "fp32": "FP32"}
    worst = [f"{label} {max(row[f'{m}_rel'] for row in rows):.3g}"
             for m, label in labels.items() if f"{m}_rel" in rows[0]]
    if worst:
        parts.append("max mean rel. error over N: " + ", ".join(worst))
    if "sr_bias" in rows[0]:
        last = rows[-1]
        parts.append(f"plain SR bias at N = {last['n']}: {last['sr_bias']:+.3g} "
                     f"(standard error {last['sr_sem']:.2g})")
    return "summary: " + "; ".join(parts)


def table(rows) -> str:
    """The rows as aligned text."""
    methods = [m for m in METHODS if f"{m}_rel" in rows[0]]
    head = f"{'N':>6} {'exact mean':>12} " + " ".join(f"{m + ' rel':>10} {m + ' bias':>10}" for m in methods)
    lines = [head]
    for row in rows:
        lines.append(f"{row['n']:>6} {row['exact_mean']:>12.6g} "
                     + " ".join(f"{row[m + '_rel']:>10.3g} {row[m + '_bias']:>+10.3g}" for m in methods))
    return "\n".join(lines)


def plot(rows, out: Path, *, chunk=64, rbits=8, title="", floor=1e-9) -> Path:
    """Write the two-panel figure (relative error and mean sum against N) to ``out``."""
    import matplotlib
    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    methods = [m for m in METHODS if f"{m}_rel" in rows[0]]
    log2n = np.log2([row["n"] for row in rows])
    fig, (ax_err, ax_sum) = plt.subplots(1, 2, figsize=(11, 4.2))
    for m in methods:
        err = np.array([row[f"{m}_rel"] for row in rows])
        label = METHODS[m].format(chunk=chunk, rbits=rbits)
        ax_err.plot(log2n, np.maximum(err, floor), "o-", label=label)
        ax_sum.plot(log2n, [row[f"{m}_mean"] for row in rows], "o-", label=label)
    ax_err.axhline(floor, color="grey", lw=0.8, ls=":")
    ax_err.text(log2n[0], floor * 1.6, "exact (error 0)", color="grey", fontsize=8)
    ax_err.set_yscale("log")
    ax_err.set_xlabel("log2 N")
    ax_err.set_ylabel("mean |relative error|")
    ax_err.grid(True, which="both", alpha=0.3)
    ax_err.legend(fontsize=8)
    ax_sum.plot(log2n, [row["exact_mean"] for row in rows], "k--", label="exact (fsum)")
    ax_sum.set_yscale("log", base=2)
    ax_sum.set_xlabel("log2 N")
    ax_sum.set_ylabel("mean sum")
    ax_sum.grid(True, which="both", alpha=0.3)
    ax_sum.legend(fontsize=8)
    return save_figure(fig, out, title)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="fp8train experiment accumulation",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=1, help="seed of operands and LFSR banks (default 1)")
    parser.add_argument("--out", type=Path, default=build_path("plots", "accumulation.png"),
                        help="plot file (default build/plots/accumulation.png)")
    parser.add_argument("--min-log2", type=int, default=6, help="shortest length is 2**this (default 6)")
    parser.add_argument("--max-log2", type=int, default=16, help="longest length is 2**this (default 16)")
    parser.add_argument("--vectors", type=int, default=16, help="independent vectors per length (default 16)")
    parser.add_argument("--chunk", type=int, default=64, help="chunk length of the chunked method (default 64)")
    parser.add_argument("--rbits", type=int, default=8, help="random bits per stochastic rounding (default 8)")
    parser.add_argument("--operands", choices=OPERANDS, default="normal",
                        help="operand distribution (default normal: E5M2-rounded N(1, 0.1))")
    args = parser.parse_args(argv)
    if not 1 <= args.min_log2 <= args.max_log2:
        parser.error("need 1 <= --min-log2 <= --max-log2")
    if args.vectors < 1 or args.chunk < 1:
        parser.error("--vectors and --chunk must be positive")

    start = time.perf_counter()
    rows = run(seed=args.seed, min_log2=args.min_log2, max_log2=args.max_log2, vectors=args.vectors,
               chunk=args.chunk, rbits=args.rbits, operands=args.operands)
    config = (f"{args.vectors} vectors per N of E5M2 x E5M2 products ({args.operands} operands), "
              f"chunk {args.chunk}, SR rbits {args.rbits}, seed {args.seed}")
    print(f"accumulation: {config}")
    print("rel = mean |sum - exact| / exact, bias = mean signed relative error")
    print(table(rows))
    print(summary(rows, chunk=args.chunk))
    out = plot(rows, args.out, chunk=args.chunk, rbits=args.rbits, title=f"Accumulation of E5M2 products: {config}")
    print(f"plot: {out}  ({time.perf_counter() - start:.1f} s)")
    return 0
