"""``Device("rtl")``: the generated accelerator in a simulator gives the golden backend's bits."""

import os

import numpy as np
import pytest

import fp8train
from fp8train.formats import E5M2, FP16_169
from fp8train.protocol import Descriptor, ErrorCode, Opcode

pytestmark = pytest.mark.rtl

ICARUS = os.environ.get("SIM") == "icarus"
# (M, K, N): one element, non-multiples of the array size, several scratchpad K blocks (256 each),
# and (Verilator only) K above 4,096.
SHAPES = [(1, 1, 1), (5, 9, 3), (3, 300, 6)] + ([] if ICARUS else [(2, 4100, 3), (9, 70, 11)])
OPTIONS = [dict(), dict(trans_a=True), dict(trans_b=True, out="e5m2", relu=True),
           dict(rounding="stochastic", chunk=16, out="e4m3", scale=-2),
           dict(c=True, rounding="stochastic", chunk=1), dict(chunk=4096, out="fp16")]


def values(rng, shape, fmt=E5M2, scale=1.0):
    return fmt.decode(fmt.encode(rng.normal(0, scale, shape)))


@pytest.mark.parametrize("rows,cols", [(2, 2), (4, 4)] if not ICARUS else [(2, 2)])
def test_rtl_matches_golden(rows, cols):
    rng = np.random.default_rng(rows * 10 + cols)
    with fp8train.Device("rtl", seed=5, rows=rows, cols=cols) as rtl, fp8train.Device("golden", seed=5) as gold:
        for m, k, n in SHAPES:
            for options in OPTIONS:
                a, b = values(rng, (m, k), scale=0.5), values(rng, (k, n), scale=0.5)
                kwargs = dict(options)
                if kwargs.pop("c", False):
                    kwargs["c"] = values(rng, (m, n), FP16_169, 4.0)
                a_in = a.T if kwargs.get("trans_a") else a
                b_in = b.T if kwargs.get("trans_b") else b
                got, want = rtl.matmul(a_in, b_in, **kwargs), gold.matmul(a_in, b_in, **kwargs)
                bad = np.argwhere(got != want)
                assert bad.size == 0, (f"{rows}x{cols} array, {m}x{k}x{n} {options}: first mismatch at "
                                       f"{tuple(bad[0])}: {got[tuple(bad[0])]} != {want[tuple(bad[0])]}")


def test_rtl_malformed_descriptor_then_recovers():
    with fp8train.Device("rtl", rows=2, cols=2) as dev:
        with pytest.raises(fp8train.DeviceError, match=rf"^device error {ErrorCode.MISALIGNED.name} "):
            dev.submit(Descriptor(opcode=Opcode.GEMM, m=2, n=2, k=2, addr_a=0x1004, stride_a=8,
                                  addr_b=0x2000, stride_b=8, addr_d=0x3000, stride_d=8))
        np.testing.assert_array_equal(dev.matmul(np.ones((2, 3)), np.ones((3, 2))), np.full((2, 2), 3.0))


def test_gemm_bench_reports_counters_and_matches_golden(capsys):
    from fp8train.sim.driver import gemm_bench
    assert gemm_bench.main(["--rows", "2", "--cols", "2", "--size", "8", "--latency", "3"]) == 0
    report = capsys.readouterr().out
    for line in ("PE utilisation", "simulated cycles/s", "host GEMM rate", "rtl == golden       True"):
        assert line in report, report
