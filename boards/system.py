"""What a board holds besides pins and clocks: the accelerator, on-chip memory standing in for host
memory, and the host bridge's attachment point (DESIGN.md §1, ``boards/``).

The host reaches the device through :data:`HostBridgeSignature`: the accelerator's AXI4-Lite CSR
port (``csr``), the on-chip memory's AXI4-Lite port (``mem``), the interrupt and the serial pins. The
UART host bridge (:class:`~fp8train.boards.bridge.UartHostBridge`) is the component with that signature.
"""

from amaranth.hdl import Module
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from fp8train.hw.bus.axi import AxiLiteSignature

from .memory import HostMemory

__all__ = ["HostBridgeSignature", "AcceleratorSystem"]

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
    rows, cols, k_block, max_chunk, update_lanes, serial_keys, compact, rbits
        The accelerator's (see :class:`~fp8train.hw.core.Accelerator`; ``update_lanes=0``: no update unit;
        ``compact``: one PE and a single-transaction DMA).
    mem_size : int
        Bytes of on-chip host memory (a power of two).
    spram : bool
        The host memory in the iCE40 UP5K's SPRAM (:class:`~fp8train.boards.memory.HostMemory`).
    """

    def __init__(self, *, rows: int, cols: int, k_block: int, max_chunk: int, mem_size: int, update_lanes: int = 4,
                 serial_keys: bool = False, compact: bool = False, rbits: int = 8, spram: bool = False):
        from fp8train.hw.core import Accelerator

        self.accelerator = Accelerator(rows=rows, cols=cols, rbits=rbits, max_chunk=max_chunk, k_block=k_block,
                                       update_lanes=update_lanes, serial_keys=serial_keys, compact=compact)
        m_axi = self.accelerator.signature.members["m_axi"].signature
        self.memory = HostMemory(size=mem_size, addr_width=m_axi.addr_width, id_width=m_axi.id_width, spram=spram)
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

