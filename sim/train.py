"""``fp8train.sim.train``: a digits MLP trained on the device with the FP8 recipe of Wang et al. (2018).

The network is a 64-128-10 MLP (ReLU) on scikit-learn's bundled 8x8 digits (pixels / 16), with a fixed
80/20 train/test split drawn from the seed. A :class:`Trainer` runs one *variant* (:data:`VARIANTS`):

``fp32``
    The baseline, plain float32 NumPy: same initial weights, batches, hyper-parameters and update rule.
``recipe``
    Wang et al. 2018 / REFERENCES.md §1. Every GEMM runs on :meth:`fp8train.Device.matmul` with E5M2
    operands and FP16_169 accumulation in chunks of 64, rounded to nearest: forward ``x @ W1 + b1`` (ReLU
    and the conversion of the activations to E5M2 in the device's output unit) and ``h @ W2 + b2``
    (FP16_169 logits), backward-data ``dz2 @ W2^T`` (E5M2 out) and backward-weight ``h^T @ dz2``,
    ``x^T @ dz1``, ``1^T @ dz`` (FP16_169 gradients). Master weights and momentum stay in FP16_169 and are
    updated by :meth:`fp8train.Device.sgd_update` with stochastic rounding, which also writes the E5M2
    weight copy the next forward pass reads.
``no_chunk``
    As ``recipe`` with one chunk per dot product (``chunk`` = the device's maximum, above every K here).
``rne_update``
    As ``recipe`` with round-to-nearest in the weight update.
``hfp8``
    E4M3 forward / E5M2 backward (Sun et al. 2019 with OCP E4M3, as Micikevicius et al. 2022): forward
    operands, activations and the weight copy in E4M3; the backward GEMMs re-quantise them to E5M2 on the
    host. The device's GEMM reads E5M2 operands only, so the two E4M3 forward GEMMs run on the golden
    model's :func:`~fp8train.sim.golden.arith.matmul` with the device's output stage; this variant
    therefore needs the golden backend.

What stays in FP32 on the host (REFERENCES.md §1 keeps loss and softmax in higher precision): the
softmax, the cross-entropy loss and its gradient ``(softmax - onehot) / batch``, the ReLU derivative mask
(exact: it only zeroes values), and the loss-scale control. Unlike the paper, the first and last layers
are not kept in 16 bits: the device's GEMM only takes FP8 operands. The input pixels and the scaled
loss gradient are quantised to FP8 on the host with :mod:`fp8train.formats` (round to nearest-even).

Dynamic loss scaling (Micikevicius et al. 2018, Mellempudi et al. 2019): the loss gradient is multiplied
by ``2**log2_scale`` before its FP8 quantisation and the update divides it out exactly (UPDATE's
``scale``). A step whose scaled gradients overflow (inf/NaN, or a value saturated at the largest finite
number of its format) is skipped and the scale halved; after ``growth_interval`` clean steps in a row it
doubles. Every step returns a SHA-256 of the master weights' codes, so two runs compare step by step.
"""

import argparse
import hashlib
import json
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from ..device import BACKENDS, Device, DeviceError
from ..formats import E4M3, E5M2, FP16_169, FloatFormat
from .golden.arith import matmul as golden_matmul
from .golden.device import output_stage

__all__ = ["VARIANTS", "SCHEDULES", "Hyper", "Trainer", "load_digits_split", "batches", "train", "main"]

VARIANTS = {
    "fp32": "FP32 NumPy baseline",
    "recipe": "FP8 E5M2 GEMMs, FP16_169 chunk-64 accumulation, SR update",
    "no_chunk": "as recipe, no chunking (chunk >= K)",
    "rne_update": "as recipe, round-to-nearest update",
    "hfp8": "E4M3 forward / E5M2 backward, SR update",
}
LAYERS = (64, 128, 10)
PARAMS = ("w1", "b1", "w2", "b2")
SCHEDULES = ("cosine", "constant")
#: Range of the loss scale's exponent: UPDATE's ``scale`` (its negation) is a signed byte.
LOG2_SCALE_RANGE = (-127, 127)


@dataclass(frozen=True)
class Hyper:
    """Hyper-parameters shared by every variant. ``lr``, ``momentum`` and ``weight_decay`` are used as
    their nearest FP16_169 values by every variant, FP32 included, so all runs use the same numbers.
    ``schedule="cosine"`` scales the learning rate of epoch ``e`` of ``E`` by ``(1 + cos(pi e / E)) / 2``."""
    batch: int = 32
    lr: float = 0.05
    schedule: str = "cosine"
    momentum: float = 0.9
    weight_decay: float = 0.0
    chunk: int = 64
    log2_scale: int = 10
    growth_interval: int = 200

    def __post_init__(self):
        for name in ("batch", "chunk", "growth_interval"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, not {value!r}")
        for name in ("lr", "momentum", "weight_decay"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not np.isfinite(value) or value < 0:
                raise ValueError(f"{name} must be a finite non-negative number, not {value!r}")
        if self.lr == 0:
            raise ValueError("lr must be positive")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {SCHEDULES}, not {self.schedule!r}")
        if not isinstance(self.log2_scale, int) or not LOG2_SCALE_RANGE[0] <= self.log2_scale <= LOG2_SCALE_RANGE[1]:
            raise ValueError(f"log2_scale must be an integer from {LOG2_SCALE_RANGE[0]} to "
                             f"{LOG2_SCALE_RANGE[1]}, not {self.log2_scale!r}")

    def fp16(self, name: str) -> float:
        """The FP16_169 value every variant uses for ``lr``, ``momentum`` or ``weight_decay``."""
        return float(FP16_169.decode(FP16_169.encode(getattr(self, name))))

    def lr_at(self, epoch: int, epochs: int) -> float:
        """The (FP16_169) learning rate of ``epoch`` (from 0) of ``epochs``."""
        factor = (1 + np.cos(np.pi * epoch / epochs)) / 2 if self.schedule == "cosine" else 1.0
        return float(FP16_169.decode(FP16_169.encode(self.lr * factor)))


def load_digits_split(seed: int, test_fraction: float = 0.2):
    """``(x_train, y_train, x_test, y_test)``: pixels / 16 as float32, a split fixed by ``seed``."""
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    order = np.random.default_rng([seed, 0]).permutation(len(y))
    n_test = int(round(test_fraction * len(y)))
    test, trn = order[:n_test], order[n_test:]
    x = (x / 16.0).astype(np.float32)
    return x[trn], y[trn].astype(np.int64), x[test], y[test].astype(np.int64)


def batches(seed: int, epoch: int, n: int, batch: int) -> list[np.ndarray]:
    """Index arrays of one epoch's batches: a permutation fixed by ``(seed, epoch)``, last partial batch dropped."""
    order = np.random.default_rng([seed, 1, epoch]).permutation(n)
    return [order[i:i + batch] for i in range(0, n - batch + 1, batch)]


def _quantise(x, fmt: FloatFormat, overflow="saturate") -> np.ndarray:
    """``x`` rounded to nearest-even into ``fmt``, as float32 values."""
    return fmt.decode(fmt.encode(np.asarray(x, dtype=np.float64), overflow=overflow)).astype(np.float32)


def _softmax_xent(logits: np.ndarray, y: np.ndarray):
    """Mean cross-entropy and its gradient with respect to the logits, in float32."""
    logits = logits.astype(np.float32)
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_p = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    loss = float(-log_p[np.arange(len(y)), y].mean())
    grad = np.exp(log_p)
    grad[np.arange(len(y)), y] -= 1
    return loss, (grad / np.float32(len(y))).astype(np.float32)


def _saturated(values: np.ndarray, fmt: FloatFormat) -> bool:
    """Whether any value overflowed ``fmt``: not finite, or clamped at its largest finite magnitude."""
    return bool(np.any(~np.isfinite(values)) or np.any(np.abs(values) >= fmt.max_finite))


def _initial_weights(seed: int) -> dict[str, np.ndarray]:
    """Glorot-uniform weights and zero biases, rounded to FP16_169 (so the FP32 baseline starts equal)."""
    rng = np.random.default_rng([seed, 2])
    params = {}
    for i, (fan_in, fan_out) in enumerate(zip(LAYERS, LAYERS[1:]), start=1):
        limit = np.sqrt(6.0 / (fan_in + fan_out))
        params[f"w{i}"] = _quantise(rng.uniform(-limit, limit, (fan_in, fan_out)), FP16_169)
        params[f"b{i}"] = np.zeros(fan_out, dtype=np.float32)
    return params


@dataclass
class StepResult:
    """One step: the batch's loss and accuracy before the update, and the state after it."""
    loss: float
    accuracy: float
    skipped: bool
    log2_scale: int
    hash: str


class Trainer:
    """One training run of a variant: the weights, the momentum buffers and the loss scale.

    Parameters
    ----------
    variant : str
        A key of :data:`VARIANTS`.
    backend : "golden" | "rtl"
        The :class:`~fp8train.Device` backend of the FP8 variants (``fp32`` runs on the host).
    seed : int
        Initial weights; the device's stochastic-rounding seeds start here too.
    hyper : Hyper
    device : Device, optional
        A device to use instead of opening one on ``backend``.
    """

    def __init__(self, variant: str = "recipe", *, backend: str = "golden", seed: int = 0,
                 hyper: Hyper = Hyper(), device: Device | None = None):
        if variant not in VARIANTS:
            raise ValueError(f"variant must be one of {', '.join(map(repr, VARIANTS))}, not {variant!r}")
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {', '.join(map(repr, BACKENDS))}, not {backend!r}")
        if variant == "hfp8" and backend != "golden":
            raise ValueError("variant 'hfp8' needs E4M3 GEMM operands, which the device does not read; "
                             "it runs on the golden backend only")
        if not isinstance(hyper, Hyper):
            raise TypeError(f"hyper must be a Hyper, not {type(hyper).__name__}")
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise ValueError(f"seed must be a non-negative integer, not {seed!r}")
        self.variant, self.backend, self.seed, self.hyper = variant, backend, seed, hyper
        self.params = _initial_weights(seed)
        self.velocity = {name: np.zeros_like(value) for name, value in self.params.items()}
        self.log2_scale = hyper.log2_scale
        self.lr = hyper.fp16("lr")                  # train() sets each epoch's rate of the schedule
        self.clean_steps = 0
        self.steps = 0
        self.device = None
        self._own_device = device is None
        if variant != "fp32":
            self.device = device if device is not None else Device(backend, seed=seed)
            try:
                self.device.require_update()
            except DeviceError:
                if self._own_device:
                    self.device.close()
                raise
            self.fwd_fmt = E4M3 if variant == "hfp8" else E5M2
            self.chunk = self.device.max_chunk if variant == "no_chunk" else hyper.chunk
            self.rounding = "nearest" if variant == "rne_update" else "stochastic"
            self.copies = {name: _quantise(self.params[name], self.fwd_fmt) for name in ("w1", "w2")}

    def close(self) -> None:
        """Close the device this trainer opened (not one it was given)."""
        if self.device is not None and self._own_device:
            self.device.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # -- the model -------------------------------------------------------------------------------
    def weights_hash(self) -> str:
        """SHA-256 of the master weights (FP16_169 codes, or float32 for the baseline), in PARAMS order."""
        digest = hashlib.sha256()
        for name in PARAMS:
            value = self.params[name]
            raw = value.astype("<f4") if self.variant == "fp32" else FP16_169.encode(value).astype("<u2")
            digest.update(raw.tobytes())
        return digest.hexdigest()

    def evaluate(self, x, y) -> tuple[float, float]:
        """``(mean loss, accuracy)`` of the current weights on ``x``, ``y``."""
        x, y = self._check_x(x), self._check_y(y, len(x))
        logits = self._forward(x)[2]
        loss, _ = _softmax_xent(logits, y)
        return loss, float(np.mean(logits.argmax(axis=1) == y))

    def _forward(self, x):
        """``(input as the first GEMM read it, hidden activations, logits)``."""
        p = self.params
        if self.variant == "fp32":
            h = np.maximum(x @ p["w1"] + p["b1"], 0)
            return x, h, h @ p["w2"] + p["b2"]
        fmt = self.fwd_fmt
        xq = _quantise(x, fmt)
        h = self._gemm(xq, self.copies["w1"], out=fmt, relu=True, c=np.tile(p["b1"], (len(x), 1)))
        logits = self._gemm(h, self.copies["w2"], out=FP16_169, c=np.tile(p["b2"], (len(x), 1)))
        return xq, h, logits

    def _gemm(self, a, b, *, out: FloatFormat, relu=False, c=None):
        """A forward GEMM in the forward format: on the device for E5M2, else on the golden matmul with the
        device's output stage (round to nearest, saturating), which is what the device would do."""
        if self.fwd_fmt is E5M2:
            out_name = {FP16_169: "fp16", E5M2: "e5m2", E4M3: "e4m3"}[out]
            return self.device.matmul(a, b, out=out_name, chunk=self.chunk, relu=relu, c=c)
        fmt = self.fwd_fmt
        total = golden_matmul(fmt.encode(a), fmt.encode(b), in_fmt=fmt, chunk=self.chunk,
                              c=FP16_169.encode(np.asarray(c, dtype=np.float64)))
        return out.decode(output_stage(total, out, relu=relu)).astype(np.float32)

    # -- one step --------------------------------------------------------------------------------
    def step(self, x, y) -> StepResult:
        """One SGD step on the batch ``x`` (batch x 64 pixels / 16), ``y`` (labels 0-9)."""
        x, y = self._check_x(x), self._check_y(y, len(x))
        x_fwd, h, logits = self._forward(x)
        loss, dlogits = _softmax_xent(logits, y)
        if self.variant == "fp32":
            grads = self._backward_fp32(x, h, dlogits)
            self._update_fp32(grads)
            skipped = False
        else:
            grads = self._backward_fp8(x_fwd, h, dlogits)
            skipped = grads is None
            if skipped:
                self.log2_scale -= 1
                self.clean_steps = 0
                if self.log2_scale < LOG2_SCALE_RANGE[0]:
                    raise FloatingPointError("gradients overflow at every loss scale (NaN in the loss?)")
            else:
                self._update_fp8(grads)
                self.clean_steps += 1
                if self.clean_steps == self.hyper.growth_interval:
                    self.log2_scale = min(self.log2_scale + 1, LOG2_SCALE_RANGE[1])
                    self.clean_steps = 0
        self.steps += 1
        return StepResult(loss=loss, accuracy=float(np.mean(logits.argmax(axis=1) == y)), skipped=skipped,
                          log2_scale=self.log2_scale, hash=self.weights_hash())

    def _backward_fp32(self, x, h, dlogits):
        p = self.params
        dh = dlogits @ p["w2"].T
        dz1 = np.where(h > 0, dh, 0).astype(np.float32)
        return {"w2": h.T @ dlogits, "b2": dlogits.sum(axis=0), "w1": x.T @ dz1, "b1": dz1.sum(axis=0)}

    def _backward_fp8(self, x_fwd, h, dlogits):
        """Scaled FP16_169 gradients from the device, or ``None`` if they overflowed (the step is skipped)."""
        dev, chunk = self.device, self.chunk
        dz2 = _quantise(dlogits * np.float32(2.0 ** self.log2_scale), E5M2, overflow="inf")
        if _saturated(dz2, E5M2):
            return None
        if self.fwd_fmt is E5M2:
            h_b, x_b, w2_b = h, x_fwd, self.copies["w2"]
        else:
            h_b, x_b, w2_b = (_quantise(v, E5M2) for v in (h, x_fwd, self.params["w2"]))
        ones = np.ones((1, len(h)), dtype=np.float32)
        dh = dev.matmul(dz2, w2_b, trans_b=True, out="e5m2", chunk=chunk)
        dz1 = np.where(h > 0, dh, 0).astype(np.float32)
        grads = {"w2": dev.matmul(h_b, dz2, trans_a=True, out="fp16", chunk=chunk),
                 "b2": dev.matmul(ones, dz2, out="fp16", chunk=chunk)[0],
                 "w1": dev.matmul(x_b, dz1, trans_a=True, out="fp16", chunk=chunk),
                 "b1": dev.matmul(ones, dz1, out="fp16", chunk=chunk)[0]}
        if _saturated(dh, E5M2) or any(_saturated(g, FP16_169) for g in grads.values()):
            return None
        return grads

    def _update_fp8(self, grads):
        hyper = self.hyper
        momentum = hyper.fp16("momentum") or None
        decay = hyper.fp16("weight_decay") or None
        copy = "e4m3" if self.fwd_fmt is E4M3 else "e5m2"
        for name in PARAMS:
            w, v, w_copy = self.device.sgd_update(
                self.params[name], grads[name], lr=self.lr, momentum=momentum,
                v=self.velocity[name] if momentum else None, weight_decay=decay, scale=-self.log2_scale,
                rounding=self.rounding, copy=copy if name in self.copies else None)
            self.params[name] = w
            if momentum:
                self.velocity[name] = v
            if name in self.copies:
                self.copies[name] = w_copy

    def _update_fp32(self, grads):
        """The UPDATE rule in float32: d = mu * v + (g + wd * w); w -= lr * d."""
        lr = np.float32(self.lr)
        mu, wd = (np.float32(self.hyper.fp16(name)) for name in ("momentum", "weight_decay"))
        for name in PARAMS:
            g = grads[name].astype(np.float32) + wd * self.params[name]
            if mu:
                self.velocity[name] = mu * self.velocity[name] + g
                g = self.velocity[name]
            self.params[name] = (self.params[name] - lr * g).astype(np.float32)

    @staticmethod
    def _check_x(x) -> np.ndarray:
        x = np.asarray(x)
        if x.dtype.kind not in "fiu":
            raise TypeError(f"x must be a numeric array, not {x.dtype}")
        if x.ndim != 2 or x.shape[1] != LAYERS[0] or len(x) == 0:
            raise ValueError(f"x must be a non-empty batch x {LAYERS[0]} array, not shape {x.shape}")
        if not np.all(np.isfinite(x)):
            bad = tuple(int(i) for i in np.argwhere(~np.isfinite(x))[0])
            raise ValueError(f"x{list(bad)} = {float(x[bad])!r} is not finite")
        return x.astype(np.float32)

    @staticmethod
    def _check_y(y, n: int) -> np.ndarray:
        y = np.asarray(y)
        if y.dtype.kind not in "iu":
            raise TypeError(f"y must hold integer labels, not {y.dtype}")
        if y.shape != (n,):
            raise ValueError(f"y must have shape ({n},) to match x, not {y.shape}")
        if y.size and (y.min() < 0 or y.max() >= LAYERS[-1]):
            raise ValueError(f"y must hold labels 0 to {LAYERS[-1] - 1}, not {int(y.min())}..{int(y.max())}")
        return y.astype(np.int64)


@dataclass
class Run:
    """What :func:`train` records: the settings (``planned_epochs`` sets the learning-rate schedule even when
    a step limit stops the run early), every step, and the metrics after every epoch."""
    variant: str
    backend: str
    seed: int
    planned_epochs: int
    hyper: dict
    steps: list = field(default_factory=list)
    epochs: list = field(default_factory=list)


def train(variant="recipe", *, backend="golden", seed=0, epochs=10, steps=None, hyper=Hyper(),
          progress=None, on_step=None, device=None) -> Run:
    """Train ``epochs`` epochs (or stop after ``steps`` steps); ``progress(epoch_metrics)`` after each
    epoch, which is also recorded when the step limit cuts it short, and ``on_step(step, total, result)``
    after each step. The train loss and accuracy of an
    epoch are the means over its batches, each measured by the step's own forward pass (before its
    update): a full pass over the train set would cost a fifth of the epoch again."""
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
        raise ValueError(f"epochs must be a positive integer, not {epochs!r}")
    if steps is not None and (isinstance(steps, bool) or not isinstance(steps, int) or steps < 1):
        raise ValueError(f"steps must be a positive integer or None, not {steps!r}")
    x_train, y_train, x_test, y_test = load_digits_split(seed)
    run = Run(variant, backend, seed, epochs, asdict(hyper))
    per_epoch = len(batches(seed, 0, len(y_train), hyper.batch))
    total = epochs * per_epoch if steps is None else min(steps, epochs * per_epoch)
    with Trainer(variant, backend=backend, seed=seed, hyper=hyper, device=device) as trainer:
        for epoch in range(epochs):
            start = time.perf_counter()
            trainer.lr = hyper.lr_at(epoch, epochs)
            results = []
            for index in batches(seed, epoch, len(y_train), hyper.batch):
                results.append(trainer.step(x_train[index], y_train[index]))
                run.steps.append(asdict(results[-1]))
                if on_step is not None:
                    on_step(trainer.steps, total, results[-1])
                if steps is not None and trainer.steps >= steps:
                    break
            test_loss, test_acc = trainer.evaluate(x_test, y_test)
            metrics = dict(epoch=epoch + 1, steps=trainer.steps, train_loss=float(np.mean([r.loss for r in results])),
                           train_acc=float(np.mean([r.accuracy for r in results])), test_loss=test_loss,
                           test_acc=test_acc,
                           lr=trainer.lr, log2_scale=trainer.log2_scale,
                           skipped=sum(s["skipped"] for s in run.steps), seconds=time.perf_counter() - start)
            run.epochs.append(metrics)
            if progress is not None:
                progress(metrics)
            if steps is not None and trainer.steps >= steps:
                break
    return run


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="fp8train train digits",
                                     description="Train the digits MLP on the device (see fp8train.sim.train).")
    parser.add_argument("--backend", choices=BACKENDS, default="golden", help="device backend (default golden)")
    parser.add_argument("--variant", choices=VARIANTS, default="recipe", help="what to train (default recipe)")
    parser.add_argument("--epochs", type=int, default=10, help="epochs (default 10)")
    parser.add_argument("--steps", type=int, default=None, help="stop after this many steps (default: none)")
    parser.add_argument("--seed", type=int, default=0, help="weights, split, batch order, SR seeds (default 0)")
    parser.add_argument("--batch", type=int, default=Hyper.batch, help=f"batch size (default {Hyper.batch})")
    parser.add_argument("--lr", type=float, default=Hyper.lr, help=f"learning rate (default {Hyper.lr})")
    parser.add_argument("--momentum", type=float, default=Hyper.momentum,
                        help=f"momentum, 0 for none (default {Hyper.momentum})")
    parser.add_argument("--weight-decay", type=float, default=Hyper.weight_decay,
                        help=f"weight decay (default {Hyper.weight_decay})")
    parser.add_argument("--schedule", choices=SCHEDULES, default=Hyper.schedule,
                        help=f"learning-rate schedule over the epochs (default {Hyper.schedule})")
    parser.add_argument("--chunk", type=int, default=Hyper.chunk, help=f"accumulation chunk (default {Hyper.chunk})")
    parser.add_argument("--out", type=Path, default=None, help="JSON results file (default: none)")
    parser.add_argument("--compare", type=Path, default=None, metavar="FILE",
                        help="check every step's weight hash against the results file of another run "
                             "(same variant, seed and hyper-parameters, e.g. the other backend's)")
    args = parser.parse_args(argv)
    try:
        hyper = Hyper(batch=args.batch, lr=args.lr, schedule=args.schedule, momentum=args.momentum,
                      weight_decay=args.weight_decay, chunk=args.chunk)
    except ValueError as error:
        parser.error(str(error))
    for name in ("epochs", "steps"):
        value = getattr(args, name)
        if value is not None and value < 1:
            parser.error(f"--{name} must be positive")
    if args.seed < 0:
        parser.error("--seed must be non-negative")
    if args.variant == "hfp8" and args.backend != "golden":
        parser.error("--variant hfp8 runs on the golden backend only (the device reads E5M2 GEMM operands)")
    reference = None
    if args.compare is not None:
        reference = json.loads(args.compare.read_text())
        mine = {"variant": args.variant, "seed": args.seed, "planned_epochs": args.epochs, "hyper": asdict(hyper)}
        theirs = {key: reference.get(key) for key in mine}
        if theirs != mine:
            parser.error(f"{args.compare} is a run of {theirs}, not of {mine}")

    print(f"train digits: variant {args.variant} ({VARIANTS[args.variant]}), backend {args.backend}, "
          f"seed {args.seed}, batch {hyper.batch}, lr {hyper.fp16('lr'):g} ({hyper.schedule}), "
          f"momentum {hyper.fp16('momentum'):g}, weight decay {hyper.fp16('weight_decay'):g}")
    bar = sys.stderr.isatty()
    started = time.perf_counter()

    def on_step(step, total, result):
        if bar:
            done = 30 * step // total
            print(f"\r[{'#' * done}{'.' * (30 - done)}] step {step}/{total}  loss {result.loss:.4f}  "
                  f"{time.perf_counter() - started:.0f} s", end="", file=sys.stderr, flush=True)

    def progress(m):
        if bar:
            print("\r\033[K", end="", file=sys.stderr)
        print(f"epoch {m['epoch']:3d}  step {m['steps']:5d}  loss {m['train_loss']:.4f}  "
              f"train {100 * m['train_acc']:6.2f}%  test {100 * m['test_acc']:6.2f}%  "
              f"lr {m['lr']:.4g}  scale 2^{m['log2_scale']}  skipped {m['skipped']}  {m['seconds']:.1f} s", flush=True)

    try:
        run = train(args.variant, backend=args.backend, seed=args.seed, epochs=args.epochs, steps=args.steps,
                    hyper=hyper, progress=progress, on_step=on_step)
    except DeviceError as error:
        print(f"fp8train train digits: {error} on the {args.backend} backend", file=sys.stderr)
        return 1
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(asdict(run), indent=1))
        print(f"results: {args.out}")
    if reference is None:
        return 0
    return _compare(run, reference, args.compare)


def _compare(run: Run, reference: dict, name) -> int:
    """Print one line per step: this backend's weight hash against the reference run's."""
    theirs = reference["steps"]
    mismatches = 0
    for i, step in enumerate(run.steps):
        if i >= len(theirs):
            print(f"step {i + 1}: {name} has only {len(theirs)} steps")
            return 1
        same = step["hash"] == theirs[i]["hash"]
        mismatches += not same
        print(f"step {i + 1}: {run.backend} {'==' if same else '!='} {reference['backend']}  {step['hash'][:16]}")
    print(f"{len(run.steps) - mismatches} of {len(run.steps)} steps bit-identical to {name}")
    return 1 if mismatches else 0


if __name__ == "__main__":
    sys.exit(main())
