"""``fp8train experiment pcm``: an MLP's accuracy on emulated PCM tiles as the conductances drift (DESIGN.md §6).

A 64-128-10 ReLU MLP is trained in FP32 on scikit-learn's 8x8 digits (bundled, no download) with a
small NumPy SGD loop. Each layer's weights then go onto one PCM tile (:class:`~fp8train.sim.golden.pcm.PcmMatrix`:
``slices`` differential pairs per weight, 8-bit DAC and ADC by default; biases and ReLU stay digital), and
the test accuracy is measured at 1 s, 1 h, 1 day, 1 month and 1 year after programming, with and without
global drift compensation, over several programming seeds (mean ± standard deviation).

The rtl check runs the output layer's tile (128 x 10) in the generated Verilog of
:class:`~fp8train.hw.pcm.PcmTileUnit` (``$SIM``, Verilator by default) for a few test inferences, at the
first and the last time, and compares its outputs with a golden tile given the same program and MVMs.
"""

import argparse
import contextlib
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

from ...toolchain import build_path
from . import save_figure
from ..golden.pcm import PcmMatrix, PcmTile

__all__ = ["TIMES", "train_mlp", "run", "rtl_check", "table", "plot", "main"]

#: Label -> seconds after programming.
TIMES = {"1 s": 1.0, "1 h": 3600.0, "1 day": 86400.0, "1 month": 30 * 86400.0, "1 year": 365 * 86400.0}
HIDDEN = 128


def load_digits_split(seed: int, test_fraction: float = 0.25):
    """Digits scaled to [0, 1], split into train and test sets by ``seed``."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    x, y = load_digits(return_X_y=True)
    return train_test_split(x / 16.0, y, test_size=test_fraction, random_state=seed, stratify=y)


def forward(params, x, matmul=None):
    """Logits of the MLP; ``matmul(layer, x)`` replaces ``x @ w`` of layer 0 and 1 when given."""
    w1, b1, w2, b2 = params
    matmul = matmul or (lambda layer, v: v @ (w1, w2)[layer])
    hidden = np.maximum(matmul(0, x) + b1, 0)
    return matmul(1, hidden) + b2, hidden


def train_mlp(x, y, *, seed: int, epochs: int = 40, lr: float = 0.1, batch: int = 32):
    """FP32 SGD with momentum 0.9 on softmax cross-entropy; He initialisation."""
    rng = np.random.default_rng(seed)
    f32 = np.float32
    params = [(rng.normal(size=(64, HIDDEN)) * np.sqrt(2 / 64)).astype(f32), np.zeros(HIDDEN, f32),
              (rng.normal(size=(HIDDEN, 10)) * np.sqrt(2 / HIDDEN)).astype(f32), np.zeros(10, f32)]
    velocity = [np.zeros_like(p) for p in params]
    x, onehot = x.astype(f32), np.eye(10, dtype=f32)[y]
    for _ in range(epochs):
        order = rng.permutation(len(x))
        for start in range(0, len(x), batch):
            idx = order[start:start + batch]
            logits, hidden = forward(params, x[idx])
            p = np.exp(logits - logits.max(axis=1, keepdims=True))
            d_logits = (p / p.sum(axis=1, keepdims=True) - onehot[idx]) / len(idx)
            d_hidden = (d_logits @ params[2].T) * (hidden > 0)
            grads = [x[idx].T @ d_hidden, d_hidden.sum(0), hidden.T @ d_logits, d_logits.sum(0)]
            for p_, v, g in zip(params, velocity, grads):
                v *= 0.9
                v -= lr * g
                p_ += v
    return params


def accuracy(logits, y) -> float:
    return float((np.argmax(logits, axis=1) == y).mean())


def _on_tiles(params, x_train, seed, pcm_config):
    """Both layers programmed onto tiles; the ADC ranges calibrated on the training inputs."""
    w1, _, w2, _ = params
    _, hidden = forward(params, x_train)
    return [PcmMatrix(w1, seed=(2 * seed) & 0xFFFF_FFFF, calibration=x_train, **pcm_config),
            PcmMatrix(w2, seed=(2 * seed + 1) & 0xFFFF_FFFF, calibration=hidden, **pcm_config)]


def run(*, seeds=(1, 2, 3, 4, 5), train_seed: int = 0, epochs: int = 40, times=TIMES, **pcm_config) -> dict:
    """Accuracies: ``fp32`` (float), and per time label ``[(no compensation, compensation) per seed]`` of
    test accuracy (``times``) and of the logits' relative error against FP32 (``logit_error``)."""
    if not seeds:
        raise ValueError("seeds must name at least one programming seed")
    x_train, x_test, y_train, y_test = load_digits_split(train_seed)
    params = train_mlp(x_train, y_train, seed=train_seed, epochs=epochs)
    reference = forward(params, x_test)[0]
    result = {"fp32": accuracy(reference, y_test), "times": {label: [] for label in times},
              "logit_error": {label: [] for label in times}}
    for seed in seeds:
        tiles = _on_tiles(params, x_train, seed, pcm_config)
        elapsed = 0.0
        for label, seconds in times.items():
            for tile in tiles:
                tile.advance(seconds - elapsed)
            elapsed = seconds
            logits = [forward(params, x_test, lambda layer, v, c=comp: tiles[layer].mvm(v, compensate_drift=c))[0]
                      for comp in (False, True)]
            result["times"][label].append(tuple(accuracy(z, y_test) for z in logits))
            result["logit_error"][label].append(tuple(
                float(np.linalg.norm(z - reference) / np.linalg.norm(reference)) for z in logits))
    return result


def rtl_check(*, inferences: int = 4, seed: int = 1, train_seed: int = 0, epochs: int = 40,
              **pcm_config) -> dict:
    """The output layer of ``inferences`` test digits on the RTL tile and on a golden tile: one PROGRAM,
    then the MVMs at the first and the last time of :data:`TIMES`. Returns counts and whether every
    output is bit-identical."""
    from ...hw.pcm import PcmTileUnit
    from ..benches import harness

    x_train, x_test, y_train, _ = load_digits_split(train_seed)
    params = train_mlp(x_train, y_train, seed=train_seed, epochs=epochs)
    layer = _on_tiles(params, x_train, seed, pcm_config)[1]
    config, program_seed = layer.config, (2 * seed + 1) & 0xFFFF_FFFF
    _, hidden = forward(params, x_test[:inferences])
    codes = layer.dac(hidden)[0]
    steps = [config.step_of_time(s) for s in (min(TIMES.values()), max(TIMES.values()))]
    mvms = [[k, layer.adc_shift, x.tolist()] for k in steps for x in codes]

    golden = PcmTile(config)
    golden.program(layer.codes, program_seed)
    want = []
    for k, shift, x in mvms:
        golden.set_step(k)
        want.append(golden.mvm(np.array(x), shift).tolist())

    out = build_path("pcm", "rtl_check.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.unlink(missing_ok=True)
    fields = {name: getattr(config, name) for name in config.__dataclass_fields__ if name != "tables"}
    log = out.with_suffix(".log")
    with _output_to(log):
        harness.run(lambda: PcmTileUnit(config), f"pcm_tile_{config.rows}x{config.cols}", "pcm_bench",
                    testcase="test_replay",
                    params={"config": fields, "seed": seed, "rounds": 0, "mvms": 0,
                            "replay": {"weights": layer.codes.tolist(), "program_seed": program_seed,
                                       "mvms": mvms, "out": str(out)}})
    got = json.loads(out.read_text())
    return {"mvms": len(mvms), "outputs": sum(len(row) for row in want), "identical": got == want,
            "tile": f"{config.rows}x{config.cols}, {config.slices} pairs per weight", "log": str(log)}


@contextlib.contextmanager
def _output_to(path: Path):
    """Send this process's and its children's stdout and stderr (the simulator's log) to ``path``."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    with open(path, "w") as log:
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
        try:
            yield
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            for fd in saved:
                os.close(fd)


def table(result) -> str:
    """Markdown: accuracy and logit error (mean ± standard deviation over the seeds) per time."""
    lines = ["| time after programming | accuracy, no compensation | accuracy, compensated "
             "| logit error, no compensation | logit error, compensated |", "|---|---:|---:|---:|---:|"]
    for label, pairs in result["times"].items():
        acc, err = np.array(pairs) * 100, np.array(result["logit_error"][label]) * 100
        cells = [f"{a[:, i].mean():.1f} ± {a[:, i].std():.1f}%" for a in (acc, err) for i in (0, 1)]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(result, out: Path, *, title: str = "") -> Path:
    """Accuracy and logit error against the time after programming, with and without compensation."""
    import matplotlib
    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    seconds = np.array([TIMES[label] for label in result["times"]])
    fig, (ax_acc, ax_err) = plt.subplots(1, 2, figsize=(11, 4.4))
    for key, ax, unit in (("times", ax_acc, "test accuracy (%)"), ("logit_error", ax_err,
                                                                   "logit error vs FP32 (%)")):
        for column, label in ((0, "no compensation"), (1, "global drift compensation")):
            values = np.array([np.array(pairs)[:, column] for pairs in result[key].values()]) * 100
            ax.errorbar(seconds, values.mean(axis=1), yerr=values.std(axis=1), marker="o", capsize=3,
                        label=label)
        ax.set_xscale("log")
        ax.set_xticks(seconds, list(result[key]))
        ax.set_xlabel("time after programming")
        ax.set_ylabel(unit)
    ax_acc.axhline(result["fp32"] * 100, color="grey", linestyle="--", label="FP32")
    ax_acc.legend()
    return save_figure(fig, out, title)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="fp8train experiment pcm", description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5, help="programming seeds 1..N (default 5)")
    parser.add_argument("--epochs", type=int, default=40, help="FP32 training epochs (default 40)")
    parser.add_argument("--slices", type=int, default=2, help="device pairs per weight (default 2)")
    parser.add_argument("--adc-bits", type=int, default=8, help="ADC bits (default 8)")
    parser.add_argument("--dac-bits", type=int, default=8, help="DAC bits (default 8)")
    parser.add_argument("--no-rtl", action="store_true", help="skip the rtl check")
    parser.add_argument("--out", type=Path, default=build_path("plots", "pcm_drift.png"),
                        help="plot file (default build/plots/pcm_drift.png)")
    args = parser.parse_args(argv)
    if args.seeds < 1 or args.epochs < 1:
        parser.error("--seeds and --epochs must be positive")
    pcm_config = dict(slices=args.slices, adc_bits=args.adc_bits, dac_bits=args.dac_bits)

    start = time.perf_counter()
    result = run(seeds=tuple(range(1, args.seeds + 1)), epochs=args.epochs, **pcm_config)
    config = (f"digits MLP 64-128-10, FP32 test accuracy {result['fp32']:.1%}; PCM tiles with {args.slices} "
              f"pairs per weight, {args.dac_bits}-bit DAC, {args.adc_bits}-bit ADC; {args.seeds} seeds")
    print(f"pcm: {config}")
    print(table(result))
    out = plot(result, args.out, title=config)
    print(f"plot: {out}  ({time.perf_counter() - start:.1f} s)")
    if not args.no_rtl:
        check = rtl_check(epochs=args.epochs, **pcm_config)
        print(f"rtl check ({check['tile']}): {check['mvms']} MVMs, {check['outputs']} outputs, "
              f"bit-identical to golden: {check['identical']} (simulator log: {check['log']})")
        if not check["identical"]:
            return 1
    return 0
