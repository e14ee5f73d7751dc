# amaranth: UnusedElaboratable=no
"""RTL LFSR bank against the golden model under cocotb, and its parameter checks."""

import pytest

from fp8train.hw.arith.lfsr import LfsrBank
from fp8train.sim.benches import harness

# Three elaborations (each is a separate simulator build): a single 1-bit lane, the widest draw,
# and a bank whose lanes are packed into one wide payload.
CONFIGS = [(1, 1), (3, 28), (8, 13)]


@pytest.mark.rtl
@pytest.mark.parametrize("lanes,rbits", CONFIGS, ids=[f"lanes{l}-r{r}" for l, r in CONFIGS])
def test_lfsr_bank_matches_golden(lanes, rbits):
    harness.run(LfsrBank(lanes=lanes, rbits=rbits), f"lfsr_l{lanes}_r{rbits}", "lfsr_bench",
                params={"lanes": lanes, "rbits": rbits, "seed": 1000 * lanes + rbits, "beats": 1500})


@pytest.mark.parametrize("lanes", [0, -1, 1.5, "4"])
def test_bad_lanes(lanes):
    with pytest.raises(ValueError, match=rf"^lanes must be a positive integer, not {lanes!r}$"):
        LfsrBank(lanes=lanes, rbits=8)


@pytest.mark.parametrize("rbits", [0, 29, None])
def test_bad_rbits(rbits):
    with pytest.raises(ValueError, match=rf"^rbits must be an integer from 1 to 28, not {rbits!r}$"):
        LfsrBank(lanes=1, rbits=rbits)

