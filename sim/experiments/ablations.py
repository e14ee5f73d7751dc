"""``fp8train experiment ablations``: which ingredient of the FP8 recipe matters for the digits MLP.

Trains every variant of :mod:`fp8train.sim.train` (FP32 baseline; the recipe of Wang et al. 2018: E5M2
GEMMs, FP16_169 chunk-64 accumulation, SR weight update; no chunking; round-to-nearest update; HFP8
E4M3 forward / E5M2 backward) on the golden backend with the same seeds, initial weights, batches and
hyper-parameters, and reports the final test accuracy as mean ± standard deviation over the seeds
(sample std, ``ddof=1``), each variant's difference to FP32 paired by seed, a markdown table, the curves in
``build/plots/training.png`` and every number in ``build/ablations.json``.
"""

import argparse
import json
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np

from ...toolchain import build_path
from . import save_figure
from ..train import SCHEDULES, VARIANTS, Hyper, train

__all__ = ["run", "table", "plot", "main"]


def run(variants=tuple(VARIANTS), seeds=(0, 1, 2), epochs=5, hyper=Hyper(), log=print) -> dict:
    """``{variant: [Run as dict, one per seed]}``, trained on the golden backend."""
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        raise ValueError(f"unknown variant {', '.join(map(repr, unknown))}; choose from {', '.join(VARIANTS)}")
    results = {}
    for variant in variants:
        results[variant] = []
        for seed in seeds:
            start = time.perf_counter()
            record = asdict(train(variant, backend="golden", seed=seed, epochs=epochs, hyper=hyper))
            del record["steps"]                     # per-step hashes are for `fp8train train --out`
            results[variant].append(record)
            last = record["epochs"][-1]
            log(f"{variant:10s} seed {seed}: test {100 * last['test_acc']:6.2f}%  train loss "
                f"{last['train_loss']:.4f}  skipped {last['skipped']}  ({time.perf_counter() - start:.1f} s)")
    return results


def _final(records, key):
    return np.array([r["epochs"][-1][key] for r in records])


def table(results: dict) -> str:
    """Markdown table: final test accuracy (mean ± std over seeds), its difference to FP32 paired by seed
    (the seed fixes the split, the initial weights and the batches, so pairing removes their spread), the
    final epoch's train loss and the time per epoch."""
    lines = ["| variant | what | test accuracy % | Δ vs FP32, paired by seed (points) | train loss | s / epoch |",
             "|---|---|---|---|---|---|"]
    base = 100 * _final(results["fp32"], "test_acc") if "fp32" in results else None
    for variant, records in results.items():
        acc = 100 * _final(records, "test_acc")
        gap = ""
        if base is not None and variant != "fp32":
            gap = _mean_std(acc - base, "+")
        seconds = np.mean([e["seconds"] for r in records for e in r["epochs"]])
        lines.append(f"| {variant} | {VARIANTS[variant]} | {_mean_std(acc)} | {gap} | "
                     f"{_final(records, 'train_loss').mean():.4f} | {seconds:.2f} |")
    return "\n".join(lines)


def _mean_std(values, sign=""):
    """``mean ± sample std`` (std 0 for one value)."""
    std = values.std(ddof=1) if len(values) > 1 else 0.0
    return f"{values.mean():{sign}.2f} ± {std:.2f}"


def plot(results: dict, out: Path, title: str = "") -> Path:
    """Train loss and test accuracy per epoch (mean over seeds) of every variant."""
    import matplotlib
    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(11, 4.2))
    for variant, records in results.items():
        epochs = [e["epoch"] for e in records[0]["epochs"]]
        loss = np.mean([[e["train_loss"] for e in r["epochs"]] for r in records], axis=0)
        acc = np.mean([[100 * e["test_acc"] for e in r["epochs"]] for r in records], axis=0)
        style = "k--" if variant == "fp32" else "o-"
        ax_loss.plot(epochs, loss, style, label=VARIANTS[variant])
        ax_acc.plot(epochs, acc, style, label=VARIANTS[variant])
    ax_loss.set_yscale("log")
    ax_loss.set_xlabel("epoch")
    ax_loss.set_ylabel("train loss (mean over the epoch's batches)")
    ax_acc.set_xlabel("epoch")
    ax_acc.set_ylabel("test accuracy %")
    for ax in (ax_loss, ax_acc):
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7)
    return save_figure(fig, out, title)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="fp8train experiment ablations", description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3, help="seeds 0 .. N-1 (default 3)")
    parser.add_argument("--epochs", type=int, default=5, help="epochs per run (default 5)")
    parser.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS),
                        help="variants to run (default: all)")
    parser.add_argument("--batch", type=int, default=Hyper.batch, help=f"batch size (default {Hyper.batch})")
    parser.add_argument("--lr", type=float, default=Hyper.lr, help=f"learning rate (default {Hyper.lr})")
    parser.add_argument("--momentum", type=float, default=Hyper.momentum,
                        help=f"momentum, 0 for none (default {Hyper.momentum})")
    parser.add_argument("--schedule", choices=SCHEDULES, default=Hyper.schedule,
                        help=f"learning-rate schedule (default {Hyper.schedule})")
    parser.add_argument("--json", type=Path, default=build_path("ablations.json"),
                        help="results file (default build/ablations.json)")
    parser.add_argument("--plot", type=Path, default=build_path("plots", "training.png"),
                        help="plot file (default build/plots/training.png)")
    args = parser.parse_args(argv)
    if args.seeds < 1 or args.epochs < 1:
        parser.error("--seeds and --epochs must be positive")
    try:
        hyper = Hyper(batch=args.batch, lr=args.lr, momentum=args.momentum, schedule=args.schedule)
    except ValueError as error:
        parser.error(str(error))

    start = time.perf_counter()
    config = (f"{args.seeds} seeds x {args.epochs} epochs, batch {hyper.batch}, lr {hyper.fp16('lr'):g} "
              f"({hyper.schedule}), momentum {hyper.fp16('momentum'):g}, golden backend")
    print(f"ablations: digits MLP 64-128-10, {config}")
    results = run(args.variants, seeds=tuple(range(args.seeds)), epochs=args.epochs, hyper=hyper)
    print(table(results))
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"config": config, "hyper": asdict(hyper), "results": results}, indent=1))
    out = plot(results, args.plot, title=f"digits MLP: {config}")
    print(f"results: {args.json}\nplot: {out}  ({time.perf_counter() - start:.0f} s)")
    return 0
