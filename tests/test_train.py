"""The training library (sim/train.py), its CLI and the ablation experiment, on the golden backend.

Fast checks of behaviour: learning happens, runs are bit-reproducible step by step, the loss scale backs
off on overflow and grows after clean steps, each variant wires the formats it claims, and bad arguments
fail with clear errors.
"""

import json

import numpy as np
import pytest

from fp8train import cli
from fp8train.formats import E4M3, E5M2, FP16_169
from fp8train.sim.experiments import ablations
from fp8train.sim.train import VARIANTS, Hyper, Trainer, batches, load_digits_split, train


@pytest.fixture(scope="module")
def digits():
    return load_digits_split(0)


def exact_in(values, fmt):
    return np.array_equal(fmt.decode(fmt.encode(values)), values)


@pytest.mark.parametrize("variant", ["recipe", "fp32", "hfp8"])
def test_training_reduces_loss(digits, variant):
    x, y = digits[0], digits[1]
    probe = slice(0, 256)
    with Trainer(variant, seed=3) as trainer:
        before, _ = trainer.evaluate(x[probe], y[probe])
        for index in batches(3, 0, len(y), 32)[:20]:
            trainer.step(x[index], y[index])
        after, accuracy = trainer.evaluate(x[probe], y[probe])
    assert after < 0.6 * before, (before, after)
    assert accuracy > 0.7


def test_same_seed_same_hashes_step_by_step():
    first = train("recipe", seed=7, epochs=1, steps=4)
    second = train("recipe", seed=7, epochs=1, steps=4)
    hashes = [s["hash"] for s in first.steps]
    assert len(hashes) == 4 and len(set(hashes)) == 4               # the weights change every step
    assert hashes == [s["hash"] for s in second.steps]
    other = train("recipe", seed=8, epochs=1, steps=1)
    assert other.steps[0]["hash"] != hashes[0]


def test_sr_update_differs_from_rne_update():
    sr = train("recipe", seed=1, epochs=1, steps=2)
    rne = train("rne_update", seed=1, epochs=1, steps=2)
    assert sr.steps[0]["loss"] == rne.steps[0]["loss"]              # same start, same first forward pass
    assert sr.steps[1]["hash"] != rne.steps[1]["hash"]


def test_loss_scale_backs_off_on_overflow(digits):
    x, y = digits[0][:32], digits[1][:32]
    # 2**40 * |dL/dlogit| overflows E5M2 (max 57344): skip the step, leave the weights, halve the scale
    with Trainer("recipe", hyper=Hyper(log2_scale=40)) as trainer:
        start = trainer.weights_hash()
        scales = []
        for _ in range(40):
            result = trainer.step(x, y)
            scales.append(result.log2_scale)
            if not result.skipped:
                break
            assert result.hash == start
        skipped = len(scales) - 1
        assert skipped >= 15 and scales[:skipped] == list(range(39, 39 - skipped, -1))
        assert result.hash != start and scales[-1] == scales[-2]    # the clean step keeps the scale


def test_loss_scale_grows_after_clean_steps(digits):
    x, y = digits[0][:32], digits[1][:32]
    with Trainer("recipe", hyper=Hyper(log2_scale=8, growth_interval=3)) as trainer:
        results = [trainer.step(x, y) for _ in range(7)]
    assert not any(r.skipped for r in results)
    assert [r.log2_scale for r in results] == [8, 8, 9, 9, 9, 10, 10]


def test_skipped_step_keeps_weights(digits):
    x, y = digits[0][:32], digits[1][:32]
    with Trainer("recipe", hyper=Hyper(log2_scale=60)) as trainer:
        start = trainer.weights_hash()
        result = trainer.step(x, y)
        assert result.skipped and result.hash == start and result.log2_scale == 59


def test_variants_use_their_formats(digits):
    x, y = digits[0][:32], digits[1][:32]
    with Trainer("recipe") as recipe, Trainer("hfp8") as hfp8, Trainer("no_chunk") as no_chunk:
        for trainer in (recipe, hfp8):
            trainer.step(x, y)
            for name in ("w1", "b1", "w2", "b2"):
                assert exact_in(trainer.params[name], FP16_169), name
        assert all(exact_in(recipe.copies[n], E5M2) for n in ("w1", "w2"))
        assert all(exact_in(hfp8.copies[n], E4M3) for n in ("w1", "w2"))
        assert not exact_in(hfp8.copies["w1"], E5M2)
        np.testing.assert_array_equal(recipe.copies["w1"], E5M2.decode(E5M2.encode(recipe.params["w1"])))
        assert recipe.chunk == 64 and no_chunk.chunk == no_chunk.device.max_chunk >= 128


def test_fp32_baseline_starts_from_the_same_weights():
    with Trainer("fp32", seed=4) as fp32, Trainer("recipe", seed=4) as recipe:
        for name in fp32.params:
            np.testing.assert_array_equal(fp32.params[name], recipe.params[name])
        assert fp32.device is None


def test_split_and_batches_are_fixed_by_the_seed():
    a, b = load_digits_split(5), load_digits_split(5)
    assert all(np.array_equal(u, v) for u, v in zip(a, b))
    assert len(a[1]) + len(a[3]) == 1797 and len(a[3]) == 359
    assert a[0].max() == 1.0 and a[0].min() == 0.0
    assert not np.array_equal(load_digits_split(6)[1], a[1])
    first = batches(5, 0, 100, 32)
    assert len(first) == 3 and all(len(b) == 32 for b in first)
    assert np.array_equal(np.concatenate(first), np.concatenate(batches(5, 0, 100, 32)))
    assert not np.array_equal(np.concatenate(first), np.concatenate(batches(5, 1, 100, 32)))


@pytest.mark.parametrize("call, error, match", [
    (lambda: Trainer("fp16"), ValueError, r"^variant must be one of 'fp32', 'recipe', 'no_chunk', 'rne_update', "
                                          r"'hfp8', not 'fp16'$"),
    (lambda: Trainer(backend="fpga"), ValueError, r"^backend must be one of 'golden', 'rtl', 'serial', not 'fpga'$"),
    (lambda: Trainer("hfp8", backend="rtl"), ValueError, r"^variant 'hfp8' needs E4M3 GEMM operands"),
    (lambda: Trainer(hyper={"lr": 0.1}), TypeError, r"^hyper must be a Hyper, not dict$"),
    (lambda: Trainer(seed=-1), ValueError, r"^seed must be a non-negative integer, not -1$"),
    (lambda: Hyper(schedule="step"), ValueError, r"^schedule must be one of \('cosine', 'constant'\), not 'step'$"),
    (lambda: Hyper(batch=0), ValueError, r"^batch must be a positive integer, not 0$"),
    (lambda: Hyper(lr=float("nan")), ValueError, r"^lr must be a finite non-negative number, not nan$"),
    (lambda: Hyper(lr=0.0), ValueError, r"^lr must be positive$"),
    (lambda: Hyper(log2_scale=200), ValueError, r"^log2_scale must be an integer from -127 to 127, not 200$"),
    (lambda: train(epochs=0), ValueError, r"^epochs must be a positive integer, not 0$"),
    (lambda: train(steps=-2), ValueError, r"^steps must be a positive integer or None, not -2$"),
])
def test_bad_arguments(call, error, match):
    with pytest.raises(error, match=match):
        call()


@pytest.mark.parametrize("variant", ["recipe", "fp32"])
@pytest.mark.parametrize("x, y, error, match", [
    (np.zeros((4, 63)), np.zeros(4, int), ValueError, r"^x must be a non-empty batch x 64 array, not shape \(4, 63\)$"),
    (np.zeros((0, 64)), np.zeros(0, int), ValueError, r"^x must be a non-empty batch x 64 array"),
    (np.full((4, 64), np.nan), np.zeros(4, int), ValueError, r"^x\[0, 0\] = nan is not finite$"),
    (np.array([["a"] * 64]), np.zeros(1, int), TypeError, r"^x must be a numeric array, not <U1$"),
    (np.zeros((4, 64)), np.zeros(3, int), ValueError, r"^y must have shape \(4,\) to match x, not \(3,\)$"),
    (np.zeros((4, 64)), np.zeros(4), TypeError, r"^y must hold integer labels, not float64$"),
    (np.zeros((4, 64)), np.array([0, 1, 2, 10]), ValueError, r"^y must hold labels 0 to 9, not 0\.\.10$"),
])
def test_bad_batches(variant, x, y, error, match):
    with Trainer(variant) as trainer:
        start = trainer.weights_hash()
        with pytest.raises(error, match=match):
            trainer.step(x, y)
        assert trainer.weights_hash() == start


def test_cli_train_writes_step_hashes(tmp_path, capsys):
    out = tmp_path / "run.json"
    assert cli.main(["train", "digits", "--epochs", "2", "--steps", "3", "--seed", "2", "--batch", "16",
                     "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "epoch   1  step     3" in text and "test " in text
    record = json.loads(out.read_text())
    assert record["variant"] == "recipe" and record["backend"] == "golden" and record["seed"] == 2
    assert len(record["steps"]) == 3 and len(record["epochs"]) == 1
    assert [s["hash"] for s in record["steps"]] == [s.hash for s in _steps("recipe", 2, 3, Hyper(batch=16))]


def _steps(variant, seed, n, hyper):
    x, y, _, _ = load_digits_split(seed)
    with Trainer(variant, seed=seed, hyper=hyper) as trainer:
        return [trainer.step(x[i], y[i]) for i in batches(seed, 0, len(y), hyper.batch)[:n]]


def test_cli_rejects_unknown_variant_and_backend(capsys):
    for argv in (["train", "digits", "--variant", "fp16"], ["train", "digits", "--backend", "fpga"],
                 ["train", "mnist"], ["train", "digits", "--lr", "-1"], ["train", "digits", "--seed", "-1"],
                 ["train", "digits", "--variant", "hfp8", "--backend", "rtl"], ["train", "digits", "--steps", "0"]):
        with pytest.raises(SystemExit):
            cli.main(argv)
    assert "invalid choice" in capsys.readouterr().err


def test_ablations_table_json_and_plot(tmp_path, capsys):
    json_path, plot_path = tmp_path / "ablations.json", tmp_path / "training.png"
    assert ablations.main(["--seeds", "2", "--epochs", "2", "--batch", "256", "--variants", "fp32", "rne_update",
                           "--json", str(json_path), "--plot", str(plot_path)]) == 0
    text = capsys.readouterr().out
    assert "| fp32 | FP32 NumPy baseline |" in text and "| rne_update |" in text
    saved = json.loads(json_path.read_text())
    assert set(saved["results"]) == {"fp32", "rne_update"} and len(saved["results"]["fp32"]) == 2
    accs = [100 * r["epochs"][-1]["test_acc"] for r in saved["results"]["rne_update"]]
    row = next(line for line in text.splitlines() if line.startswith("| rne_update |"))
    assert f"{np.mean(accs):.2f} ± {np.std(accs, ddof=1):.2f}" in row
    assert plot_path.stat().st_size > 10_000
    with pytest.raises(ValueError, match=r"^unknown variant 'sgd'; choose from fp32, recipe"):
        ablations.run(["sgd"])
    assert set(VARIANTS) == {"fp32", "recipe", "no_chunk", "rne_update", "hfp8"}


def test_cli_compare_checks_every_step(tmp_path, capsys):
    ref = tmp_path / "golden.json"
    args = ["train", "digits", "--steps", "3", "--batch", "16", "--seed", "1"]
    assert cli.main(args + ["--out", str(ref)]) == 0
    capsys.readouterr()
    assert cli.main(args + ["--compare", str(ref)]) == 0
    text = capsys.readouterr().out
    assert [line.split()[3] for line in text.splitlines() if line.startswith("step ")] == ["=="] * 3
    assert "3 of 3 steps bit-identical" in text
    record = json.loads(ref.read_text())
    record["steps"][1]["hash"] = "0" * 64
    ref.write_text(json.dumps(record))
    assert cli.main(args + ["--compare", str(ref)]) == 1
    assert "step 2: golden != golden" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        cli.main(["train", "digits", "--steps", "3", "--seed", "2", "--compare", str(ref)])
    assert "is a run of" in capsys.readouterr().err


def test_cosine_schedule_in_fp16():
    hyper = Hyper(lr=0.05)
    rates = [hyper.lr_at(e, 4) for e in range(4)]
    assert rates[0] == hyper.fp16("lr") and rates == sorted(rates, reverse=True) and rates[-1] < 0.2 * rates[0]
    assert exact_in(np.array(rates), FP16_169)
    assert Hyper(schedule="constant").lr_at(3, 4) == hyper.fp16("lr")
    run = train("fp32", epochs=2, hyper=Hyper(batch=512))
    assert [e["lr"] for e in run.epochs] == [hyper.lr_at(0, 2), hyper.lr_at(1, 2)]


def test_device_without_update_fails_at_the_first_update():
    """A device without the UPDATE unit: the GEMMs run, the update is refused with a clear error."""
    import fp8train
    from fp8train.protocol import Opcode
    from fp8train.sim.golden.device import DeviceConfig

    with fp8train.Device("golden") as dev:
        dev.link.config = DeviceConfig(opcodes=frozenset({Opcode.FENCE, Opcode.GEMM}))
        with pytest.raises(fp8train.DeviceError, match=r"^device error BAD_OPCODE"):
            train("recipe", steps=1, device=dev)
        assert dev.calls == 8                                         # 7 GEMMs, then the refused UPDATE


def test_device_reporting_no_update_is_refused_before_training():
    """A device whose CONFIG_OPCODES lacks UPDATE (the iCEBreaker's): training stops before the first GEMM."""
    import fp8train
    from fp8train.protocol import Opcode

    with fp8train.Device("golden") as dev:
        dev.opcodes = frozenset({Opcode.FENCE, Opcode.GEMM})
        with pytest.raises(fp8train.DeviceError, match=r"^device error BAD_OPCODE .*no update unit"):
            train("recipe", steps=1, device=dev)
        assert dev.calls == 0
