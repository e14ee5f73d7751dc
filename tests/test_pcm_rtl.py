# amaranth: UnusedElaboratable=no
"""RTL PCM tile against the golden tile under cocotb, and its parameter checks."""

import os

import pytest

from fp8train.hw.pcm import PcmTileUnit
from fp8train.sim.benches import harness
from fp8train.sim.golden.pcm import PcmConfig

# Two elaborations: the default widths with two pairs per weight, and a narrow one-pair tile with
# other noise, time and converter widths (tables rebuilt from the same formulas).
CONFIGS = {
    "default": dict(rows=4, cols=3, slices=2),
    "narrow": dict(rows=5, cols=2, slices=1, dac_bits=5, adc_bits=6, g_bits=8, nu_bits=7, nu_frac=8,
                   gauss_terms=3, gauss_bits=5, time_bits=7, steps_log2=2, drift_lut_bits=6),
}


@pytest.mark.rtl
@pytest.mark.parametrize("name", CONFIGS)
def test_pcm_tile_matches_golden(name):
    config = CONFIGS[name]
    icarus = os.environ.get("SIM") == "icarus"
    harness.run(lambda: PcmTileUnit(PcmConfig(**config)), f"pcm_tile_{name}", "pcm_bench",
                params={"config": config, "seed": 61 + len(name), "rounds": 2 if icarus else 10,
                        "mvms": 3 if icarus else 8})


def test_bad_config():
    with pytest.raises(TypeError, match=r"^config must be a PcmConfig, not dict$"):
        PcmTileUnit({"rows": 4})
