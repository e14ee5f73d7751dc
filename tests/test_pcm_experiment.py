"""``fp8train experiment pcm``: its claims checked on its own (reduced) output, and its rtl check."""

import re

import numpy as np
import pytest

from fp8train.sim.experiments import pcm

EPOCHS = 20


@pytest.fixture(scope="module")
def result():
    return pcm.run(seeds=(1, 2), epochs=EPOCHS, times={k: pcm.TIMES[k] for k in ("1 s", "1 year")})


def test_fp32_mlp_learns_digits(result):
    assert result["fp32"] > 0.95


def test_pcm_tiles_keep_accuracy_after_programming(result):
    acc = np.array(result["times"]["1 s"])
    assert np.all(acc > result["fp32"] - 0.02), acc


def test_drift_and_compensation_on_the_logits(result):
    """A year of drift: the raw logits shrink (error > 4x the 1 s error); compensation keeps the error
    within 2x of the 1 s level and the accuracy within 2 points of FP32."""
    early, late = np.array(result["logit_error"]["1 s"]), np.array(result["logit_error"]["1 year"])
    assert np.all(late[:, 0] > 4 * early[:, 0]), (early, late)
    assert np.all(late[:, 1] < 2 * early[:, 1]), (early, late)
    assert np.all(np.array(result["times"]["1 year"])[:, 1] > result["fp32"] - 0.02)


def test_table_and_plot(result, tmp_path):
    text = pcm.table(result)
    assert re.search(r"^\| 1 year \| \d+\.\d ± \d+\.\d% \|", text, re.M), text
    out = pcm.plot(result, tmp_path / "plots" / "pcm.png")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_main_without_rtl(tmp_path, capsys):
    out = tmp_path / "pcm_drift.png"
    assert pcm.main(["--seeds", "1", "--epochs", "5", "--no-rtl", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "| 1 month |" in text and str(out) in text and out.exists()


def test_run_rejects_no_seeds():
    with pytest.raises(ValueError, match=r"^seeds must name at least one programming seed$"):
        pcm.run(seeds=())


@pytest.mark.rtl
def test_rtl_check_is_bit_identical():
    check = pcm.rtl_check(inferences=2, epochs=EPOCHS)
    assert check["identical"] and check["outputs"] == 2 * 2 * 10, check
