"""On-chip memory standing in for host memory on a board.

The accelerator's DMA master reaches it through an AXI4 slave port; the host link (the UART bridge)
through an AXI4-Lite port, to fill operands and the command ring and read results back. On ECP5 Yosys
maps it to block RAM (DP16KD). On the iCE40 UP5K an Amaranth memory does not become SPRAM (Amaranth
writes a zero initialiser for every word, SPRAM cannot be initialised, so ``synth_ice40 -spram`` maps
128 KiB to 256 block RAMs): there :class:`SpramWords` instantiates the four ``SB_SPRAM256KA`` directly.
"""

from amaranth.hdl import Cat, ClockSignal, Instance, Module, Mux, Signal
from amaranth.lib import wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from fp8train.hw.bus.axi import AxiBurst, AxiLiteSignature, AxiResp, AxiSignature

__all__ = ["HostMemory", "SpramWords"]

BEAT_BYTES = 8          # 64-bit words, the accelerator's AXI data width
SPRAM_WORDS = 1 << 14   # an SB_SPRAM256KA: 16 K words of 16 bits; four side by side make 64-bit words


class SpramWords(wiring.Component):
    """The iCE40 UP5K's four single-port RAMs as one 16 K x 64-bit RAM with byte enables: a read
    (``read_en``) gives ``read_data`` one cycle later and holds it until the next access; a write
    (any ``write_en`` bit) stores the enabled bytes. The contents start undefined (no initialiser).
    """

    addr: In(14)
    read_en: In(1)
    read_data: Out(8 * BEAT_BYTES)
    write_en: In(BEAT_BYTES)
    write_data: In(8 * BEAT_BYTES)

    def elaborate(self, platform):
        m = Module()
        write = self.write_en.any()
        for index in range(4):                         # bytes 2 * index and 2 * index + 1
            low, high = self.write_en[2 * index], self.write_en[2 * index + 1]
            m.submodules[f"spram{index}"] = Instance(
                "SB_SPRAM256KA",
                i_ADDRESS=self.addr, i_DATAIN=self.write_data.word_select(index, 16),
                i_MASKWREN=Cat(low, low, high, high), i_WREN=write, i_CHIPSELECT=write | self.read_en,
                i_CLOCK=ClockSignal(), i_STANDBY=0, i_SLEEP=0, i_POWEROFF=1,
                o_DATAOUT=self.read_data.word_select(index, 16))
        return m


class HostMemory(wiring.Component):
    """``size`` bytes of single-port RAM, 64 bits wide, shared by an AXI4 slave and an AXI4-Lite slave.

    One transaction at a time, so the memory needs only one port (each iCE40 SPRAM has one); the
    AXI4 port wins over the host port when both ask in the same cycle. The AXI4 port takes INCR
    bursts of 8-byte beats and streams them at one beat per cycle after one cycle of read latency;
    beats outside the memory, or of another burst type or size, answer ``DECERR`` (reads per beat,
    writes once in ``bresp``) and write nothing. A refused read beat carries whatever RAM word its
    address wraps to: AXI leaves an error response's data to the slave, the DMA drops it, and
    zeroing it would cost a LUT per data bit.

    Parameters
    ----------
    size : int
        Bytes, a power of two from 64 to 2**24.
    addr_width, id_width : int
        Of the AXI4 port (the accelerator's ``m_axi``).
    spram : bool
        In the iCE40 UP5K's single-port RAMs (:class:`SpramWords`; ``size`` at most 128 KiB, contents
        undefined until written) instead of an Amaranth memory (zeros at reset).

    Members
    -------
    dev : In(AxiSignature(addr_width=addr_width, data_width=64, id_width=id_width))
        The accelerator's DMA.
    host : In(AxiLiteSignature(addr_width=log2(size), data_width=32))
        The host link; every address is inside the memory.
    """

    def __init__(self, *, size: int, addr_width: int = 32, id_width: int = 4, spram: bool = False):
        if (isinstance(size, bool) or not isinstance(size, int) or not 64 <= size <= 1 << 24
                or size & (size - 1)):
            raise ValueError(f"size must be a power of two from 64 to 2**24 bytes, not {size!r}")
        if not isinstance(spram, bool):
            raise TypeError(f"spram must be True or False, not {spram!r}")
        if spram and size > SPRAM_WORDS * BEAT_BYTES:
            raise ValueError(f"size must be at most {SPRAM_WORDS * BEAT_BYTES} bytes in SPRAM, not {size}")
        self.size, self.spram = size, spram
        self._word_bits = (size // BEAT_BYTES).bit_length() - 1
        super().__init__({
            "dev": In(AxiSignature(addr_width=addr_width, data_width=8 * BEAT_BYTES, id_width=id_width)),
            "host": In(AxiLiteSignature(addr_width=size.bit_length() - 1, data_width=32)),
        })

    def elaborate(self, platform):
        m = Module()
        dev, host = self.dev, self.host
        addr = Signal(self._word_bits)                # the one address of the single-port RAM
        read_en, read_data = Signal(), Signal(8 * BEAT_BYTES)
        write_en, write_data = Signal(BEAT_BYTES), Signal(8 * BEAT_BYTES)
        if self.spram:
            m.submodules.ram = ram = SpramWords()
            m.d.comb += [ram.addr.eq(addr), ram.read_en.eq(read_en), read_data.eq(ram.read_data),
                         ram.write_en.eq(write_en), ram.write_data.eq(write_data)]
        else:
            m.submodules.mem = mem = Memory(shape=8 * BEAT_BYTES, depth=self.size // BEAT_BYTES, init=[])
            read, write = mem.read_port(), mem.write_port(granularity=8)
            m.d.comb += [read.addr.eq(addr), write.addr.eq(addr), read.en.eq(read_en), read_data.eq(read.data),
                         write.en.eq(write_en), write.data.eq(write_data)]

        # The current beat's word address: its bits inside the memory, and whether any bit above is set
        # (an INCR burst only counts up, so it stays outside once it carried out of the memory; it
        # could only come back by wrapping at 2**addr_width, which crossing a 4 KiB boundary forbids).
        word, outside = Signal(self._word_bits), Signal()
        next_word = word + 1
        remaining, ident = Signal(8), Signal(len(dev.arid))   # remaining: read beats after this one
        bad_burst, error = Signal(), Signal()         # error: a write beat was refused
        refused = bad_burst | outside
        half = Signal()                               # host: which 32-bit half of the word
        m.d.comb += addr.eq(word)

        def step():
            """To the burst's next beat."""
            m.d.sync += [word.eq(next_word), outside.eq(outside | next_word[self._word_bits])]

        def accept(address):
            """A burst (or host access) from byte ``address`` on."""
            m.d.sync += [word.eq(address[3:]), outside.eq(address[3 + self._word_bits:] != 0)]

        with m.FSM():
            with m.State("IDLE"):
                with m.If(dev.arvalid):
                    m.d.comb += dev.arready.eq(1)
                    accept(dev.araddr)
                    m.d.sync += [remaining.eq(dev.arlen), ident.eq(dev.arid),
                                 bad_burst.eq((dev.arburst != AxiBurst.INCR) | (dev.arsize != 3))]
                    m.next = "DEV_READ"
                with m.Elif(dev.awvalid):
                    m.d.comb += dev.awready.eq(1)
                    accept(dev.awaddr)
                    m.d.sync += [ident.eq(dev.awid), error.eq(0),
                                 bad_burst.eq((dev.awburst != AxiBurst.INCR) | (dev.awsize != 3))]
                    m.next = "DEV_WRITE"
                with m.Elif(host.arvalid):
                    m.d.comb += host.arready.eq(1)
                    accept(host.araddr)
                    m.d.sync += half.eq(host.araddr[2])
                    m.next = "HOST_READ"
                with m.Elif(host.awvalid & host.wvalid):
                    m.d.comb += [host.awready.eq(1), host.wready.eq(1), addr.eq(host.awaddr[3:]),
                                 write_data.eq(Cat(host.wdata, host.wdata)),
                                 write_en.eq(Mux(host.awaddr[2], host.wstrb << 4, host.wstrb))]
                    m.next = "HOST_RESP"
            with m.State("DEV_READ"):                 # the first beat's address goes to the RAM
                m.d.comb += read_en.eq(1)
                m.next = "DEV_DATA"
            with m.State("DEV_DATA"):                 # a beat on R; the next one's address to the RAM
                last = remaining == 0
                m.d.comb += [dev.rvalid.eq(1), dev.rid.eq(ident), dev.rlast.eq(last),
                             dev.rdata.eq(read_data),
                             dev.rresp.eq(Mux(refused, AxiResp.DECERR, AxiResp.OKAY))]
                with m.If(dev.rready):
                    with m.If(last):
                        m.next = "IDLE"
                    with m.Else():
                        m.d.comb += [addr.eq(next_word), read_en.eq(1)]
                        m.d.sync += remaining.eq(remaining - 1)
                        step()
            with m.State("DEV_WRITE"):
                m.d.comb += [dev.wready.eq(1), write_data.eq(dev.wdata)]
                with m.If(dev.wvalid):
                    m.d.comb += write_en.eq(Mux(refused, 0, dev.wstrb))
                    m.d.sync += error.eq(error | refused)
                    step()
                    with m.If(dev.wlast):
                        m.next = "DEV_RESP"
            with m.State("DEV_RESP"):
                m.d.comb += [dev.bvalid.eq(1), dev.bid.eq(ident),
                             dev.bresp.eq(Mux(error, AxiResp.DECERR, AxiResp.OKAY))]
                with m.If(dev.bready):
                    m.next = "IDLE"
            with m.State("HOST_READ"):
                m.d.comb += read_en.eq(1)
                m.next = "HOST_DATA"
            with m.State("HOST_DATA"):
                m.d.comb += [host.rvalid.eq(1), host.rresp.eq(AxiResp.OKAY),
                             host.rdata.eq(Mux(half, read_data[32:], read_data[:32]))]
                with m.If(host.rready):
                    m.next = "IDLE"
            with m.State("HOST_RESP"):
                m.d.comb += [host.bvalid.eq(1), host.bresp.eq(AxiResp.OKAY)]
                with m.If(host.bready):
                    m.next = "IDLE"
        return m
