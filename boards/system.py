"""What a board holds besides pins and clocks: the accelerator, on-chip memory standing in for host
memory, and the host bridge's attachment point (DESIGN.md §1, ``boards/``).

The host reaches the device through :data:`HostBridgeSignature`: the accelerator's AXI4-Lite CSR
port (``csr``), the on-chip memory's AXI4-Lite port (``mem``), the interrupt and the serial pins. The
UART host bridge (issue 7, item 2) is a component with that signature; until it exists, board builds
use :class:`ScanHost`, which keeps every host-side signal driven and observed so that synthesis keeps
and measures the whole accelerator, but speaks no protocol.
"""

from amaranth.hdl import Cat, Module, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from fp8train.hw.bus.axi import AxiLiteSignature

from .memory import HostMemory

__all__ = ["HostBridgeSignature", "AcceleratorSystem", "ScanHost"]

CSR_ADDR_WIDTH = 12


def HostBridgeSignature(mem_size: int) -> wiring.Signature:
    """The bridge's side: it masters ``csr`` (the accelerator's registers) and ``mem`` (``mem_size``
    bytes of host memory), sees ``irq``, and owns the serial pins ``rx``/``tx``."""
    return wiring.Signature({
        "csr": Out(AxiLiteSignature(addr_width=CSR_ADDR_WIDTH, data_width=32)),
        "mem": Out(AxiLiteSignature(addr_width=mem_size.bit_length() - 1, data_width=32)),
        "irq": In(1),
        "rx": In(1),
        "tx": Out(1),
    })


class AcceleratorSystem(wiring.Component):
    """The :class:`~fp8train.hw.core.Accelerator` with ``mem_size`` bytes of :class:`HostMemory` on its
    DMA master; the host side is ``host_csr``/``host_mem``/``irq`` (a bridge's ``csr``/``mem``/``irq``).

    Parameters
    ----------
    rows, cols, k_block, max_chunk, rbits
        The accelerator's (see :class:`~fp8train.hw.core.Accelerator`).
    mem_size : int
        Bytes of on-chip host memory (a power of two).
    """

    def __init__(self, *, rows: int, cols: int, k_block: int, max_chunk: int, mem_size: int, rbits: int = 8):
        from fp8train.hw.core import Accelerator

        self.accelerator = Accelerator(rows=rows, cols=cols, rbits=rbits, max_chunk=max_chunk, k_block=k_block)
        m_axi = self.accelerator.signature.members["m_axi"].signature
        self.memory = HostMemory(size=mem_size, addr_width=m_axi.addr_width, id_width=m_axi.id_width)
        self.mem_size = mem_size
        super().__init__({
            "host_csr": In(AxiLiteSignature(addr_width=CSR_ADDR_WIDTH, data_width=32)),
            "host_mem": In(AxiLiteSignature(addr_width=mem_size.bit_length() - 1, data_width=32)),
            "irq": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        m.submodules.accelerator = acc = self.accelerator
        m.submodules.memory = mem = self.memory
        wiring.connect(m, acc.m_axi, mem.dev)
        wiring.connect(m, wiring.flipped(self.host_csr), acc.s_axil)
        wiring.connect(m, wiring.flipped(self.host_mem), mem.host)
        m.d.comb += self.irq.eq(acc.irq)
        return m


class ScanHost(wiring.Component):
    """Build stand-in for the UART host bridge (same signature): every signal it drives on ``csr`` and
    ``mem`` is a bit of a shift register clocked in from ``rx``, and everything it receives (and
    ``irq``) is registered and XOR-reduced into ``tx``. Synthesis can then drop none of the
    accelerator's logic, so resources and timing are those of a complete device. It is not a protocol:
    a bitstream built with it computes nothing a host could ask for.
    """

    def __init__(self, *, mem_size: int):
        super().__init__(HostBridgeSignature(mem_size))

    def elaborate(self, platform):
        m = Module()
        driven, observed = [], [self.irq]
        for bus in (self.csr, self.mem):
            for path, member, value in bus.signature.flatten(bus):
                (driven if member.flow == Out else observed).append(value)
        chain = Signal(sum(len(v) for v in driven))
        m.d.sync += chain.eq(Cat(self.rx, chain[:-1]))
        m.d.comb += Cat(*driven).eq(chain)
        seen = Signal(sum(len(v) for v in observed))
        m.d.sync += [seen.eq(Cat(*observed)), self.tx.eq(seen.xor())]
        return m
