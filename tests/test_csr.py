# amaranth: UnusedElaboratable=no
"""RTL AXI4-Lite CSR slave under cocotbext-axi's AxiLiteMaster, and its parameter checks."""

import os

import pytest
from amaranth.hdl import Const, Module, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In

from fp8train.hw.bus.axi import AxiLiteSignature
from fp8train.hw.bus.csr import AxiLiteCsr
from fp8train.sim.benches import harness

ID = 0xF8A1_0001
# Byte address -> (kind, reset value): one read-only ID register, seven RW ones, holes between.
REGS = {0x00: ("ro", ID), 0x04: ("rw", 0), 0x08: ("rw", 0x1234_5678), 0x0C: ("rw", 0),
        0x14: ("rw", 0xFFFF_FFFF), 0x1C: ("rw", 0), 0x20: ("rw", 0xA5A5_0000), 0x40: ("rw", 7)}


class RegFile(wiring.Component):
    """The CSR slave and a register file decoding its bus: ``regs`` as above. ``r_data``/``r_err``
    are registered on ``r_stb``; ``w_err`` is a combinational decode of ``addr`` (both allowed)."""

    def __init__(self, regs=REGS, **kwargs):
        self.regs = regs
        self.csr = AxiLiteCsr(**kwargs)
        super().__init__({"s_axil": In(AxiLiteSignature(addr_width=self.csr.addr_width,
                                                        data_width=self.csr.data_width))})

    def elaborate(self, platform):
        m = Module()
        m.submodules.csr = csr = self.csr
        wiring.connect(m, wiring.flipped(self.s_axil), csr.s_axil)
        width = csr.data_width
        mapped = Signal()
        m.d.comb += mapped.eq(0)
        for addr, (kind, init) in self.regs.items():
            hit = csr.addr == addr
            with m.If(hit):
                m.d.comb += mapped.eq(1)
            if kind == "ro":
                value = Const(init, width)
            else:
                value = Signal(width, init=init, name=f"reg_{addr:03x}")
                with m.If(csr.w_stb & hit):
                    for byte in range(width // 8):
                        with m.If(csr.w_strb[byte]):
                            m.d.sync += value.word_select(byte, 8).eq(csr.w_data.word_select(byte, 8))
            with m.If(csr.r_stb & hit):
                m.d.sync += csr.r_data.eq(value)
        m.d.comb += csr.w_err.eq(~mapped)
        with m.If(csr.r_stb):
            m.d.sync += csr.r_err.eq(~mapped)
            with m.If(~mapped):
                m.d.sync += csr.r_data.eq(0)
        return m


def _params(seed=1):
    icarus = os.environ.get("SIM") == "icarus"
    return {"regs": {str(addr): list(reg) for addr, reg in REGS.items()}, "seed": seed,
            "ops": 60 if icarus else 400}


@pytest.mark.rtl
def test_csr_against_axil_master():
    harness.run(RegFile(), "axil_csr_regfile", "csr_bench", params=_params())


@pytest.mark.rtl
def test_csr_64bit_small_space():
    regs = {addr * 2: reg for addr, reg in REGS.items()}
    harness.run(RegFile(regs, addr_width=8, data_width=64), "axil_csr_regfile64", "csr_bench",
                params={**_params(2), "regs": {str(a): list(r) for a, r in regs.items()}})


@pytest.mark.parametrize("data_width", [16, 128, "32"])
def test_bad_data_width(data_width):
    with pytest.raises(ValueError, match=rf"^data_width must be one of 32, 64, not {data_width!r}$"):
        AxiLiteCsr(data_width=data_width)


@pytest.mark.parametrize("addr_width", [0, 2, 65])
def test_bad_addr_width(addr_width):
    with pytest.raises(ValueError, match=r"^addr_width must be an integer from \d+ to 64, not "
                                         rf"{addr_width!r}$"):
        AxiLiteCsr(addr_width=addr_width)


def test_flat_port_names():
    from fp8train.hw.units import top_ports
    ports = top_ports(AxiLiteCsr())
    assert {"s_axil_awaddr", "s_axil_wstrb", "s_axil_rresp", "addr", "w_stb"} <= set(ports)
    assert not any(name.startswith("s_axil__") for name in ports)
