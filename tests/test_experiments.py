"""The accumulation experiment's claims, checked on its own output, and the golden-model bench.

The experiment runs through the golden model, so these tests check the qualitative findings of
REFERENCES.md §1 (plain 1-6-9 RNE swamps, chunking and SR track the exact sum), not bit patterns.
"""

import re

import pytest

from fp8train.sim.experiments import accumulation
from fp8train.sim.golden import bench

SEED = 1
MAX_LOG2 = 12          # N up to 4096: past plain RNE's stall for both operand distributions
VECTORS = 8
#: Where plain RNE stops: the first power of two whose half ulp in 1-6-9 (9 fraction bits) is at least
#: the largest product, so every addend rounds away (ties to even keep the even sum).
STALL = {"normal": 2048.0,   # products <= 1.25**2 < 2 = half ulp at 2**11
         "uniform": 1024.0}  # products <= 1 = half ulp at 2**10


@pytest.fixture(scope="module", params=accumulation.OPERANDS)
def rows(request):
    return request.param, accumulation.run(seed=SEED, max_log2=MAX_LOG2, vectors=VECTORS,
                                           operands=request.param)


def test_table_shape(rows):
    _, rows = rows
    assert [row["n"] for row in rows] == [1 << j for j in range(6, MAX_LOG2 + 1)]
    for row in rows:
        for method in accumulation.METHODS:
            assert {f"{method}_{stat}" for stat in ("rel", "bias", "sem", "mean")} <= row.keys()


def test_plain_rne_stalls(rows):
    operands, rows = rows
    last = rows[-1]
    assert last["rne_mean"] <= STALL[operands], f"plain RNE passed its stall point: {last['rne_mean']}"
    assert last["rne_rel"] > 0.2, f"seed {SEED}: plain RNE rel. error only {last['rne_rel']:.3g}"


def test_chunked_beats_plain(rows):
    _, rows = rows
    last = rows[-1]
    assert last["chunk_rel"] < last["rne_rel"] / 10, (
        f"seed {SEED}, N={last['n']}: chunked {last['chunk_rel']:.3g} vs plain {last['rne_rel']:.3g}")


def test_chunked_tracks_exact(rows):
    _, rows = rows
    worst = max(rows, key=lambda row: row["chunk_rel"])
    assert worst["chunk_rel"] < 0.01, f"seed {SEED}, N={worst['n']}: chunked rel. error {worst['chunk_rel']:.3g}"


def test_sr_unbiased(rows):
    _, rows = rows
    for row in rows:
        # Within four standard errors of zero, with a floor for the 8-bit truncation bias (< 2**-8 ulp).
        assert abs(row["sr_bias"]) < 4 * row["sr_sem"] + 2e-3, (
            f"seed {SEED}, N={row['n']}: SR bias {row['sr_bias']:+.3g} (standard error {row['sr_sem']:.2g})")
    assert rows[-1]["sr_rel"] < rows[-1]["rne_rel"] / 10


def test_fp32_is_exact_for_normal_operands():
    # N(1, 0.1) operands give products on a 2**-6 grid; FP32 holds sums below 2**17 on it exactly.
    rows = accumulation.run(seed=SEED, max_log2=8, vectors=4, methods=("fp32",))
    assert all(row["fp32_rel"] == 0 for row in rows)


def test_summary_names_stall():
    rows = accumulation.run(seed=SEED, max_log2=MAX_LOG2, vectors=4, methods=("rne",))
    line = accumulation.summary(rows)
    assert re.match(r"^summary: plain FP16_169 RNE first exceeds 1% mean rel\. error at N = \d+", line), line


def test_run_rejects_bad_arguments():
    with pytest.raises(ValueError, match=r"^operands must be one of \('normal', 'uniform'\), not 'cauchy'$"):
        accumulation.run(max_log2=6, operands="cauchy")
    with pytest.raises(ValueError, match=r"^min_log2 must not exceed max_log2, not 7 > 6$"):
        accumulation.run(min_log2=7, max_log2=6)
    with pytest.raises(ValueError, match=r"^methods must be among "):
        accumulation.run(max_log2=6, methods=("fp64",))


def test_accumulation_main_writes_plot(tmp_path, capsys):
    out = tmp_path / "plots" / "accumulation.png"
    assert accumulation.main(["--seed", "3", "--max-log2", "8", "--vectors", "2", "--out", str(out)]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    text = capsys.readouterr().out
    assert re.search(r"^\s+256\s", text, re.M), text
    assert "summary:" in text and str(out) in text


def test_bench_main_prints_mac_rate(capsys):
    assert bench.main(["--size", "32", "--repeats", "1"]) == 0
    lines = capsys.readouterr().out.splitlines()
    names = ["matmul nearest", "matmul stochastic", "chunk_dot nearest"]
    assert [line[:20].strip() for line in lines] == names
    for line in lines:
        rate = re.search(r"\s([0-9.]+) M MAC/s\s", line)
        assert rate and float(rate.group(1)) > 0, line
        assert "32x32x32" in line


def test_bench_rejects_bad_size():
    with pytest.raises(ValueError, match=r"^size must be a positive integer, not 0$"):
        bench.run(size=0)
