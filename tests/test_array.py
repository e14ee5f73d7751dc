# amaranth: UnusedElaboratable=no
"""RTL systolic array against golden ``matmul`` under cocotb, and its parameter checks."""

import os

import pytest

from fp8train.formats import E4M3, FP16, FP16_169
from fp8train.hw.array.pe import ProcessingElement
from fp8train.hw.array.systolic import SystolicArray
from fp8train.sim.benches import harness

# Two elaborations (each a separate simulator build): square, and non-square with fewer random bits
# so that a row/column mix-up or a slicing error of the lane's draw cannot pass unnoticed. The 16x16
# array (256 PEs, 16 MB of Verilog) runs in ``make test-long`` under Verilator only.
LONG = os.environ.get("FP8TRAIN_LONG") == "1" and os.environ.get("SIM", "verilator") == "verilator"
CONFIGS = [(2, 2, 8), (4, 3, 5)] + ([(16, 16, 8)] if LONG else [])


@pytest.mark.rtl
@pytest.mark.parametrize("rows,cols,rbits", CONFIGS, ids=[f"{r}x{c}-r{b}" for r, c, b in CONFIGS])
def test_array_matches_golden(rows, cols, rbits):
    harness.run(SystolicArray(rows=rows, cols=cols, rbits=rbits, max_chunk=64),
                f"systolic_{rows}x{cols}", "array_bench",
                params={"rows": rows, "cols": cols, "rbits": rbits, "seed": 100 * rows + cols,
                        "reduced": os.environ.get("SIM") == "icarus"})


@pytest.mark.parametrize("side", [0, 33, -1, 2.0, "4", True])
def test_bad_rows(side):
    with pytest.raises(ValueError, match=rf"^rows must be an integer from 1 to 32, not {side!r}$"):
        SystolicArray(rows=side, cols=2)


@pytest.mark.parametrize("side", [0, 33, None])
def test_bad_cols(side):
    with pytest.raises(ValueError, match=rf"^cols must be an integer from 1 to 32, not {side!r}$"):
        SystolicArray(rows=2, cols=side)


@pytest.mark.parametrize("rbits", [0, 15, 8.0])
def test_bad_rbits(rbits):
    with pytest.raises(ValueError, match=rf"^rbits must be an integer from 1 to 14, not {rbits!r}$"):
        SystolicArray(rows=2, cols=2, rbits=rbits)
    with pytest.raises(ValueError, match=rf"^rbits must be an integer from 1 to 14, not {rbits!r}$"):
        ProcessingElement(rbits=rbits)


@pytest.mark.parametrize("max_chunk", [0, -4, 2.0])
def test_bad_max_chunk(max_chunk):
    with pytest.raises(ValueError, match=rf"^max_chunk must be a positive integer, not {max_chunk!r}$"):
        SystolicArray(rows=2, cols=2, max_chunk=max_chunk)


def test_bad_formats():
    with pytest.raises(TypeError, match=r"^in_fmt must be a FloatFormat, not 'E5M2'$"):
        SystolicArray(rows=2, cols=2, in_fmt="E5M2")
    with pytest.raises(ValueError, match=r"^out_fmt's largest finite value must be at least max_a \* max_b "
                                         r"= 200704\.0, not 65504\.0$"):
        SystolicArray(rows=2, cols=2, in_fmt=E4M3, acc_fmt=FP16)
    SystolicArray(rows=1, cols=32, in_fmt=E4M3, acc_fmt=FP16_169)  # E4M3 products fit FP16_169
