# amaranth: UnusedElaboratable=no
"""``fp8train report``'s machinery: synthesis and place-and-route of a small design, the parsers, the
table and the README update. The full report is `make report` (minutes), not part of the suite."""

import dataclasses

import pytest

from fp8train.boards.synth import (FAMILIES, SynthError, breakdown, dsp_equivalent, fit_failure, harness_verilog,
                                   parse_nextpnr, parse_stat, synthesize)
from fp8train.cli import main as cli_main
from fp8train.formats import E5M2, FP16_169
from fp8train.hw.arith.mul import FpMul
from fp8train.hw.array.systolic import SystolicArray
from fp8train.report import BEGIN, END, render, render_breakdown, update_readme


def test_harness_registers_every_port_bit():
    dut, harness = harness_verilog(FpMul(fmt_a=E5M2, out_fmt=FP16_169), "mul")
    # inputs: i__payload (16) + i__valid + o__ready; outputs: i__ready + o__payload (16) + o__valid
    assert "reg [17:0] chain;" in harness and "reg [17:0] outs_q;" in harness
    assert ".i__payload(chain[15:0])" in harness and ".o__payload(outs[16:1])" in harness
    assert "module mul(" in dut


def test_small_design_synthesises_places_and_parses(tmp_path):
    result = synthesize(FpMul(fmt_a=E5M2, out_fmt=FP16_169), "mul", "ice40", out_dir=tmp_path, freq_mhz=12)
    assert result.placed is True and result.fit_error is None
    assert 20 < result.luts < 400 and result.ffs == 17 and result.dsps == 0, result   # o payload + valid
    assert result.fmax_mhz is not None and result.fmax_mhz > 12, result
    used, available = result.utilisation["ICESTORM_LC"]
    assert used >= result.luts and available == 5280
    # The same netlist on a device too small for it is refused before placement.
    tiny = dataclasses.replace(FAMILIES["ice40"], capacity={**FAMILIES["ice40"].capacity, "luts": 10})
    refused = synthesize(FpMul(fmt_a=E5M2, out_fmt=FP16_169), "mul", tiny, out_dir=tmp_path, place="if_fits")
    assert refused.placed is False and refused.fit_error == f"synthesis: luts {result.luts} > 10"


def test_breakdown_counts_each_module_without_its_submodules(tmp_path):
    rows = breakdown(SystolicArray(rows=1, cols=2, max_chunk=64), "array", "ice40", out_dir=tmp_path)
    by_module = {row["module"]: row for row in rows}
    assert set(by_module) >= {"array", "array.pe_0_0", "array.pe_0_1"}, by_module
    pe = by_module["array.pe_0_0"]
    assert 300 < pe["luts"] < 1500 and pe["ffs"] > 100 and pe["dsps"] == 0, pe
    assert by_module["array"]["luts"] < pe["luts"]          # the PEs are not counted in their parent
    assert [row["luts"] for row in rows] == sorted((row["luts"] for row in rows), reverse=True)
    table = render_breakdown(rows, "iCE40UP5K-SG48", "array")
    assert f"| array.pe_0_0 | {pe['luts']} |" in table
    assert f"| total | {sum(row['luts'] for row in rows)} |" in table


@pytest.mark.parametrize("run", [
    lambda out: synthesize(FpMul(fmt_a=E5M2, out_fmt=FP16_169), "mul", "xc7", out_dir=out, place=False),
    lambda out: breakdown(FpMul(fmt_a=E5M2, out_fmt=FP16_169), "mul", "xc7", out_dir=out),
    lambda out: dsp_equivalent("xc7", out),
])
def test_unknown_family_is_refused_before_any_tool_runs(tmp_path, run):
    with pytest.raises(ValueError, match=r"^family must be one of ice40, ecp5, not 'xc7'$"):
        run(tmp_path)
    assert not any(tmp_path.iterdir())


def test_fit_failure_names_the_resources_over_capacity(tmp_path):
    """nextpnr's log of the iCEBreaker build (shortened): the message leads with what is over."""
    log = tmp_path / "top.tim"
    log.write_text("Info: Device utilisation:\n"
                   "Info: \t         ICESTORM_LC:   12122/   5280   229%\n"
                   "Info: \t        ICESTORM_RAM:      19/     30    63%\n"
                   "Info: \t        ICESTORM_DSP:       8/      8   100%\n"
                   "ERROR: Unable to place cell 'x_DFFLC', no BELs remaining to implement cell type 'ICESTORM_LC'\n")
    assert fit_failure(log) == ("ICESTORM_LC 12122/5280 (229%): Unable to place cell 'x_DFFLC', no BELs remaining "
                                "to implement cell type 'ICESTORM_LC'")
    log.write_text("ERROR: Design uses 10 DSPs but device has 8\n")
    assert fit_failure(log) == "Design uses 10 DSPs but device has 8"
    log.write_text("ERROR: IO pin 'x' is unconstrained\n")
    assert fit_failure(log) is None


def test_parsers():
    stat = {"modules": {"\\dut": {"num_cells_by_type": {"LUT4": 10, "CCU2C": 3, "TRELLIS_FF": 4,
                                                          "MULT18X18D": 2, "DP16KD": 1}}}}
    counts = parse_stat(stat, "dut", FAMILIES["ecp5"])
    assert (counts["luts"], counts["ffs"], counts["dsps"], counts["brams"]) == (16, 4, 2, 1)
    with pytest.raises(SynthError, match=r"^module top not in the Yosys statistics \(modules: dut\)$"):
        parse_stat(stat, "top", FAMILIES["ecp5"])
    report = {"fmax": {"clk_a": {"achieved": 31.5, "constraint": 25.0}, "clk_b": {"achieved": 12.0}},
              "utilization": {"TRELLIS_COMB": {"used": 100, "available": 83640},
                              "DP16KD": {"used": 0, "available": 208}}}
    assert parse_nextpnr(report) == (12.0, {"TRELLIS_COMB": [100, 83640]})
    assert parse_nextpnr(report, "clk_a")[0] == 31.5


def _result(design, family, kind, luts, dsps, pes=1, placed=True, fmax=20.0):
    return {"design": design, "family": family, "device": FAMILIES[family].device, "kind": kind, "pes": pes,
            "luts": luts, "ffs": 10, "dsps": dsps, "brams": 0, "sprams": 0, "placed": placed,
            "fit_error": None if placed else "synthesis: luts 9999 > 5280", "fmax_mhz": fmax if placed else None,
            "utilisation": {FAMILIES[family].logic_resource: [luts + 5, 5280]} if placed else {}}


def test_render_states_the_area_ratio_and_fit():
    report = {"families": ["ice40"], "freq_mhz": 25.0, "seed": 1, "dsp_lut_equiv": {"ice40": 100},
              "results": [_result("pe_fp8", "ice40", "pe_fp8", 500, 0),
                          _result("pe_fp32", "ice40", "pe_fp32", 1600, 4),
                          _result("array_2x2", "ice40", "array", 2100, 0, pes=4),
                          _result("array_4x4", "ice40", "array", 9999, 0, pes=16, placed=False)]}
    text = render(report)
    assert "| pe_fp32 | iCE40UP5K-SG48 | 1600 | 10 | 4 | 0 | 0 | 2000 | 2000 |" in text
    assert "FP8 PE / FP32 PE LUT-equivalent area = 500 / 2000 = 0.25 (target <= 0.25: met)" in text
    assert "arrays placed: 2x2;" in text and "no (synthesis: luts 9999 > 5280)" in text
    report["results"][0]["luts"] = 501
    assert "(target <= 0.25: NOT met)" in render(report)


def test_update_readme(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text(f"# x\n\n{BEGIN}\nold table\n{END}\n\nrest\n")
    update_readme(readme, "| new |\n")
    assert readme.read_text() == f"# x\n\n{BEGIN}\n| new |\n{END}\n\nrest\n"
    readme.write_text("# no markers\n")
    with pytest.raises(ValueError, match=r"must contain the marker lines"):
        update_readme(readme, "| new |\n")


def test_designs_take_the_board_options():
    """The iCEBreaker's accelerator options reach the reported design (``--update-lanes 0 --serial-keys
    --compact``)."""
    from fp8train.report import designs

    accelerator = designs([], [(1, 1)], k_block=8, max_chunk=64, update_lanes=0, serial_keys=True,
                          compact=True)[-1]
    top = accelerator.factory()
    assert accelerator.name == "accelerator_1x1" and top.update_lanes == 0 and top.serial_keys and top.compact


def test_cli_passes_options_to_report(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli_main(["report", "--help"])
    assert exit_info.value.code == 0 and "--update-readme" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        cli_main(["report", "--arrays", "0x3"])
    assert "a size must be ROWSxCOLS with 1 to 32 each, not '0x3'" in capsys.readouterr().err
