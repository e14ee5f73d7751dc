"""AXI4-Lite slave turning host transactions into a simple register bus (DESIGN.md §4).

The core behind it decodes ``addr`` and implements the registers; this unit only does the AXI
handshakes, one transaction at a time.
"""

from amaranth.hdl import Module, Mux, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from fp8train.hw.bus.axi import AxiLiteSignature, AxiResp

__all__ = ["AxiLiteCsr"]


class AxiLiteCsr(wiring.Component):
    """AXI4-Lite slave → register bus.

    Parameters
    ----------
    addr_width : int
        Byte-address width of the AXI4-Lite port (4 KiB of registers by default).
    data_width : int
        32 or 64.

    Members
    -------
    s_axil : In(AxiLiteSignature(addr_width, data_width))
        The host's port (Verilog ``s_axil_awaddr``, ...). ``awaddr``/``araddr`` bits below the
        data width's byte count are ignored: every access is to a whole aligned register, and
        ``wstrb`` selects the bytes written.
    addr : Out(addr_width)
        Byte address of the current access, aligned (low bits zero). Stable from the strobe to the
        end of the following cycle (in fact until the next access is accepted).
    w_data : Out(data_width), w_strb : Out(data_width // 8)
        Write data and byte enables; valid with ``w_stb``.
    w_stb : Out(1)
        One-cycle write strobe: the register at ``addr`` takes the bytes of ``w_data`` enabled by
        ``w_strb`` at the clock edge that ends this cycle.
    r_stb : Out(1)
        One-cycle read strobe: the core starts a read of ``addr`` (a register with read side
        effects performs them on this strobe).
    r_data : In(data_width), r_err : In(1)
        Sampled in the cycle **after** ``r_stb`` (``addr`` is still stable then, so they may be a
        combinational decode of ``addr`` or registered by the core on ``r_stb``).
    w_err : In(1)
        Sampled in the cycle after ``w_stb`` (same rule as ``r_err``).

    ``r_err``/``w_err`` mean "no register at ``addr``": the response is DECERR (0b11). SLVERR (0b10)
    is never produced by this unit; it is reserved for errors of a mapped register. Writes to
    read-only registers are the core's business (ignoring them with OKAY is the usual choice).

    Cycle contract
    --------------
    One transaction at a time. A write needs both AW and W, which may arrive in either order or
    together; each is acknowledged (``awready``/``wready``) in the cycle it is valid while not yet
    held. Then ``w_stb`` (1 cycle), the ``w_err`` sample (1 cycle), and ``bvalid`` held until
    ``bready``. A read: ``arready`` in the cycle ``arvalid`` is seen, ``r_stb`` the next cycle, the
    sample the cycle after, ``rvalid`` held until ``rready``. With ``bready``/``rready`` high, an
    access takes 4 cycles from its valid address to the response handshake, and the next can be
    accepted in the cycle after that. When a read and a write contend in an idle cycle they
    alternate, so neither starves. A response is never dropped, and ``valid`` never falls before
    its handshake.
    """

    def __init__(self, *, addr_width: int = 12, data_width: int = 32):
        bus = AxiLiteSignature(addr_width=addr_width, data_width=data_width)
        low = (data_width // 8 - 1).bit_length()
        if addr_width <= low:
            raise ValueError(f"addr_width must be an integer from {low + 1} to 64, not {addr_width!r}")
        self.addr_width, self.data_width = addr_width, data_width
        super().__init__({
            "s_axil": In(bus),
            "addr": Out(addr_width),
            "w_data": Out(data_width), "w_strb": Out(data_width // 8), "w_stb": Out(1),
            "r_stb": Out(1), "r_data": In(data_width), "r_err": In(1), "w_err": In(1),
        })

    def elaborate(self, platform):
        m = Module()
        bus = self.s_axil
        low = (self.data_width // 8 - 1).bit_length()   # byte-offset bits below a register

        word = Signal(self.addr_width - low)               # the accepted access's register index
        aw_held = Signal()                                 # write address taken, waiting for data
        w_held = Signal()                                  # write data taken, waiting for address
        read_turn = Signal()                               # a contended idle cycle goes to the read
        m.d.comb += self.addr.eq(word << low)

        # Every output is a register or a continuous expression: an output set only inside an FSM
        # state comes out of Yosys as an always block that Icarus never evaluates while the state
        # keeps its initial value (the output stays X).
        with m.FSM(name="csr"):
            with m.State("IDLE"):
                writing = aw_held | w_held
                take_read = ~writing & bus.arvalid & (read_turn | ~(bus.awvalid | bus.wvalid))
                m.d.comb += [
                    bus.arready.eq(take_read),
                    bus.awready.eq(~take_read & ~aw_held),
                    bus.wready.eq(~take_read & ~w_held),
                ]
                with m.If(take_read):
                    m.d.sync += [word.eq(bus.araddr[low:]), read_turn.eq(0), self.r_stb.eq(1)]
                    m.next = "R_STB"
                with m.Else():
                    got_aw = aw_held | bus.awvalid
                    got_w = w_held | bus.wvalid
                    with m.If(bus.awvalid & ~aw_held):
                        m.d.sync += [word.eq(bus.awaddr[low:]), aw_held.eq(1)]
                    with m.If(bus.wvalid & ~w_held):
                        m.d.sync += [self.w_data.eq(bus.wdata), self.w_strb.eq(bus.wstrb), w_held.eq(1)]
                    with m.If(got_aw & got_w):
                        m.d.sync += [aw_held.eq(0), w_held.eq(0), read_turn.eq(1), self.w_stb.eq(1)]
                        m.next = "W_STB"
            with m.State("W_STB"):
                m.d.sync += self.w_stb.eq(0)
                m.next = "W_SAMPLE"
            with m.State("W_SAMPLE"):
                m.d.sync += [bus.bresp.eq(Mux(self.w_err, AxiResp.DECERR, AxiResp.OKAY)),
                             bus.bvalid.eq(1)]
                m.next = "B"
            with m.State("B"):
                with m.If(bus.bready):
                    m.d.sync += bus.bvalid.eq(0)
                    m.next = "IDLE"
            with m.State("R_STB"):
                m.d.sync += self.r_stb.eq(0)
                m.next = "R_SAMPLE"
            with m.State("R_SAMPLE"):
                m.d.sync += [bus.rdata.eq(self.r_data),
                             bus.rresp.eq(Mux(self.r_err, AxiResp.DECERR, AxiResp.OKAY)),
                             bus.rvalid.eq(1)]
                m.next = "R"
            with m.State("R"):
                with m.If(bus.rready):
                    m.d.sync += bus.rvalid.eq(0)
                    m.next = "IDLE"
        return m
