"""Formal properties of the AXI4-Lite CSR slave, the AXI4 DMA masters and the UART bridge's frame parser
(fp8train.formal, SymbiYosys).

Each proof is paired with a deliberately broken unit that must give a counterexample, so the
properties are known to be able to fail. Both proofs and counterexamples run in ``make test`` (about a
minute); the DMA in the engine's own, larger configuration is checked by BMC with FP8TRAIN_LONG=1
(``make test-formal``).
"""

import os

import pytest
from amaranth.hdl import Const

from fp8train import formal
from fp8train.hw.bus import dma as dma_module
from fp8train.hw.bus import serial_dma as serial_dma_module
from fp8train.hw.bus.csr import AxiLiteCsr
from fp8train.hw.bus.dma import Dma

LONG = os.environ.get("FP8TRAIN_LONG") == "1"
ENGINE_DEPTH = 12


def _describe(result) -> str:
    return f"{result.check}: {result.status} in {result.seconds:.1f} s, failed {result.failed}; log in {result.workdir}"


class _DropsResponse(AxiLiteCsr):
    """A CSR slave that withdraws ``bvalid`` when the master is not ready (an AXI violation)."""

    def elaborate(self, platform):
        m = super().elaborate(platform)
        with m.If(~self.s_axil.bready):
            m.d.sync += self.s_axil.bvalid.eq(0)
        return m


def test_csr_slave_proved(tmp_path):
    result = formal.run("csr", out_dir=tmp_path)
    assert result.passed, _describe(result)


def test_csr_counterexample_when_response_dropped(tmp_path):
    harness = formal.CsrProperties(dut=_DropsResponse(addr_width=12, data_width=32), internal=False)
    result = formal.run("csr_drops_response", harness=harness, depth=8, mode="bmc", out_dir=tmp_path)
    assert result.status == "FAIL", _describe(result)
    assert "b: valid fell before ready" in result.failed, _describe(result)
    assert result.trace is not None and result.trace.exists()


def test_dma_counterexample_when_bursts_cross_4k(tmp_path, monkeypatch):
    # The DMA's own boundary constant doubled: bursts may now cross a 4 KiB line.
    monkeypatch.setattr(dma_module, "BOUNDARY", 2 * dma_module.BOUNDARY)
    result = formal.run("dma_crosses_4k", harness=formal.DmaProperties(internal=False), depth=6, mode="bmc",
                        out_dir=tmp_path)
    assert result.status == "FAIL", _describe(result)
    assert {"AR: crosses 4 KiB", "AW: crosses 4 KiB"} & set(result.failed), _describe(result)
    assert result.trace is not None and result.trace.exists()


def test_dma_master_proved(tmp_path):
    result = formal.run("dma", out_dir=tmp_path)
    assert result.passed, _describe(result)


@pytest.mark.skipif(not LONG, reason="minutes of solver time: FP8TRAIN_LONG=1 (make test-formal)")
def test_dma_engine_configuration_bounded(tmp_path):
    """The DMA exactly as the command engine builds it, checked from reset for ENGINE_DEPTH cycles."""
    harness = formal.DmaProperties(dut=Dma(max_burst=16, max_reads_outstanding=16, max_writes_outstanding=8,
                                           data_width=64), internal=False)
    result = formal.run("dma_engine", harness=harness, depth=ENGINE_DEPTH, mode="bmc", out_dir=tmp_path)
    assert result.passed, _describe(result)


def test_serial_dma_bounded(tmp_path):
    result = formal.run("serial_dma", out_dir=tmp_path)
    assert result.passed, _describe(result)


def test_serial_dma_counterexample_when_abort_withdraws_aw_and_w(tmp_path, monkeypatch):
    bus_phases = serial_dma_module._WriteEngine.bus_phases

    def withdrawing(self, m):
        bus_phases(self, m)
        with m.If(self.dma.abort):
            m.d.sync += [self.dma.m_axi.awvalid.eq(0), self.dma.m_axi.wvalid.eq(0)]

    monkeypatch.setattr(serial_dma_module._WriteEngine, "bus_phases", withdrawing)
    result = formal.run("serial_dma_abort_withdraws", harness=formal.SerialDmaProperties(), depth=40, mode="bmc",
                        out_dir=tmp_path)
    assert result.status == "FAIL", _describe(result)
    assert {"aw: valid fell before ready", "w: valid fell before ready"} & set(result.failed), _describe(result)
    assert result.trace is not None and result.trace.exists()


def test_frame_parser_proved(tmp_path):
    result = formal.run("frame_parser", out_dir=tmp_path)
    assert result.passed, _describe(result)


def test_frame_parser_counterexample_when_crc_ignored(tmp_path, monkeypatch):
    from fp8train.boards import bridge

    # The parser's CRC register stuck at 0: every complete frame passes its CRC check.
    monkeypatch.setattr(bridge, "crc16_step", lambda crc, byte: Const(0, 16))
    harness = formal.FrameParserProperties(internal=False)
    result = formal.run("frame_parser_no_crc", harness=harness, depth=12, mode="bmc", out_dir=tmp_path)
    assert result.status == "FAIL", _describe(result)
    assert "a request from a frame whose CRC fails" in result.failed, _describe(result)


def test_unknown_check_is_refused():
    with pytest.raises(ValueError, match=r"^check must be one of csr, dma, serial_dma, frame_parser, not 'nope'$"):
        formal.run("nope")
