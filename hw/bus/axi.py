"""AXI4 and AXI4-Lite interface signatures (AMBA AXI and ACE Protocol Specification, ARM IHI 0022).

Members are named as in the specification (``awaddr``, ``rvalid``, ...) and their directions are
those of the **master**; a slave port is ``In(AxiLiteSignature(...))`` (the flipped signature).

At the Verilog top level (``fp8train.hw.units.top_ports``) the members of these signatures are
joined to the port name with a single underscore, ``s_axil_awaddr``, ``m_axi_arvalid``, so that
cocotbext-axi's ``AxiLiteBus.from_prefix(dut, "s_axil")`` and ``AxiBus.from_prefix(dut, "m_axi")``
bind them; every other member keeps Amaranth's ``__``. The class attribute ``flat_port_names`` marks
such a signature.

Only the signals fp8train uses are members. cocotbext-axi requires, for AXI4: ``awid awaddr awlen
awsize awburst awvalid awready``, ``wdata wlast wvalid wready``, ``bid bvalid bready``, ``arid araddr
arlen arsize arburst arvalid arready``, ``rid rdata rlast rvalid rready``; ``wstrb``, ``bresp`` and
``rresp`` are optional there and present here. ``awlock``, ``awcache``, ``awprot``, ``awqos``,
``awregion`` and the ``*user`` signals are left out (a slave sees their defaults: normal, non-
cacheable, unprivileged secure data access). For AXI4-Lite it requires ``awaddr awvalid awready``,
``wdata wvalid wready``, ``bvalid bready``, ``araddr arvalid arready``, ``rdata rvalid rready``;
``wstrb``, ``bresp`` and ``rresp`` are present here, ``awprot``/``arprot`` are not (the CSR slave
does not distinguish privileged or secure accesses).
"""

from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

__all__ = ["AxiResp", "AxiBurst", "AxiLiteSignature", "AxiSignature"]


class AxiResp:
    """``xRESP`` codes (IHI 0022 A3.4.4)."""
    OKAY = 0b00
    EXOKAY = 0b01
    SLVERR = 0b10
    DECERR = 0b11


class AxiBurst:
    """``AxBURST`` codes (IHI 0022 A3.4.1)."""
    FIXED = 0b00
    INCR = 0b01
    WRAP = 0b10


def _check(name, value, allowed):
    if not isinstance(value, int) or isinstance(value, bool) or value not in allowed:
        raise ValueError(f"{name} must be one of {', '.join(map(str, allowed))}, not {value!r}")


def _check_range(name, value, low, high):
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise ValueError(f"{name} must be an integer from {low} to {high}, not {value!r}")


_DATA_WIDTHS = (8, 16, 32, 64, 128, 256, 512, 1024)


class _FlatSignature(wiring.Signature):
    """A signature whose members are joined to their port's name with ``_`` (``flat_port_names``),
    in the Verilog ports (``units.top_ports``) and in the signals' own names, so that the generated
    Verilog has no second, ``__``-named alias wire per member."""
    flat_port_names = True

    def create(self, *, path=None, src_loc_at=0):
        interface = super().create(path=path, src_loc_at=1 + src_loc_at)
        for name in self.members:
            signal = getattr(interface, name)
            if signal.name.endswith(f"__{name}"):
                signal.name = f"{signal.name[:-len(name) - 2]}_{name}"
        return interface


class AxiLiteSignature(_FlatSignature):
    """AXI4-Lite, master's view.

    Parameters
    ----------
    addr_width : int
        Width of ``awaddr``/``araddr`` (byte addresses), 1 to 64.
    data_width : int
        Width of ``wdata``/``rdata``: 32 or 64 (AXI4-Lite allows no other); ``wstrb`` has one bit
        per byte.
    """

    def __init__(self, *, addr_width: int = 12, data_width: int = 32):
        _check_range("addr_width", addr_width, 1, 64)
        _check("data_width", data_width, (32, 64))
        self.addr_width, self.data_width = addr_width, data_width
        super().__init__({
            "awaddr": Out(addr_width), "awvalid": Out(1), "awready": In(1),
            "wdata": Out(data_width), "wstrb": Out(data_width // 8), "wvalid": Out(1), "wready": In(1),
            "bresp": In(2), "bvalid": In(1), "bready": Out(1),
            "araddr": Out(addr_width), "arvalid": Out(1), "arready": In(1),
            "rdata": In(data_width), "rresp": In(2), "rvalid": In(1), "rready": Out(1),
        })

    def __eq__(self, other):
        return (type(other) is type(self) and other.addr_width == self.addr_width and
                other.data_width == self.data_width)

    def __repr__(self):
        return f"AxiLiteSignature(addr_width={self.addr_width}, data_width={self.data_width})"


class AxiSignature(_FlatSignature):
    """AXI4 (full), master's view: INCR/WRAP/FIXED bursts of up to 256 beats, transaction IDs.

    Parameters
    ----------
    addr_width : int
        Width of ``awaddr``/``araddr`` (byte addresses), 12 to 64.
    data_width : int
        Width of ``wdata``/``rdata``, a power of two from 8 to 1024.
    id_width : int
        Width of ``awid``/``bid``/``arid``/``rid``, 1 to 32.
    """

    def __init__(self, *, addr_width: int = 32, data_width: int = 64, id_width: int = 4):
        _check_range("addr_width", addr_width, 12, 64)
        _check("data_width", data_width, _DATA_WIDTHS)
        _check_range("id_width", id_width, 1, 32)
        self.addr_width, self.data_width, self.id_width = addr_width, data_width, id_width
        super().__init__({
            "awid": Out(id_width), "awaddr": Out(addr_width), "awlen": Out(8), "awsize": Out(3),
            "awburst": Out(2), "awvalid": Out(1), "awready": In(1),
            "wdata": Out(data_width), "wstrb": Out(data_width // 8), "wlast": Out(1),
            "wvalid": Out(1), "wready": In(1),
            "bid": In(id_width), "bresp": In(2), "bvalid": In(1), "bready": Out(1),
            "arid": Out(id_width), "araddr": Out(addr_width), "arlen": Out(8), "arsize": Out(3),
            "arburst": Out(2), "arvalid": Out(1), "arready": In(1),
            "rid": In(id_width), "rdata": In(data_width), "rresp": In(2), "rlast": In(1),
            "rvalid": In(1), "rready": Out(1),
        })

    def __eq__(self, other):
        return (type(other) is type(self) and other.addr_width == self.addr_width and
                other.data_width == self.data_width and other.id_width == self.id_width)

    def __repr__(self):
        return (f"AxiSignature(addr_width={self.addr_width}, data_width={self.data_width}, "
                f"id_width={self.id_width})")
