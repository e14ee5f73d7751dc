"""Operand scratchpad: double-buffered tiles of one GEMM operand, one bank per array row or column.

The DMA delivers 64-bit beats of a matrix's stored rows; the array wants, at every step k, one code per
lane (A: per array row, B: per array column). Each lane has its own bank of 64-bit words holding eight
consecutive k values, so both stored layouts load at one beat per cycle:

- ``lane_rows`` (A as stored M x K, or B stored N x K with ``trans_b``): a stored row is one lane's k
  run, and a beat fills one word of one bank;
- ``k_rows`` (A stored K x M with ``trans_a``, or B stored K x N): a stored row is one k across lanes, and
  a beat's eight bytes go to byte ``k % 8`` of word ``k // 8`` in eight consecutive banks (byte enables).

Reads return every lane's code at one k, one cycle after the address.
"""

from amaranth.hdl import Module, Signal, signed
from amaranth.lib import data, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

__all__ = ["OperandScratch", "BEAT_BYTES"]

BEAT_BYTES = 8


class OperandScratch(wiring.Component):
    """``lanes`` banks of ``2 * depth`` codes (two buffers of ``depth`` k values each).

    Parameters
    ----------
    lanes : int
        Banks (array rows for A, columns for B), 1 to 64.
    depth : int
        k values per buffer, a multiple of 8.

    Members
    -------
    write : In
        ``en``, ``buffer``, ``k_rows`` (the layout, above), ``lane`` (the bank of a ``lane_rows`` beat;
        for a ``k_rows`` beat the lane of its byte 0, negative when the beat starts before the tile's
        first lane), ``k`` (any k inside a ``lane_rows`` beat's word, or the k of a ``k_rows`` beat) and
        ``data`` (the beat). Bytes outside ``0 .. lanes - 1`` are dropped, so beats may overhang a tile.
    read_buffer, read_k : In
        Which buffer and k to read; ``codes`` (Out) has every lane's code one cycle later.
    """

    def __init__(self, *, lanes: int, depth: int):
        if not isinstance(lanes, int) or not 1 <= lanes <= 64:
            raise ValueError(f"lanes must be an integer from 1 to 64, not {lanes!r}")
        if not isinstance(depth, int) or depth < BEAT_BYTES or depth % BEAT_BYTES:
            raise ValueError(f"depth must be a positive multiple of {BEAT_BYTES}, not {depth!r}")
        self.lanes, self.depth = lanes, depth
        super().__init__({
            "write": In(data.StructLayout({
                "en": 1, "buffer": 1, "k_rows": 1, "lane": signed(8), "k": range(depth),
                "data": data.ArrayLayout(8, BEAT_BYTES)})),
            "read_buffer": In(1),
            "read_k": In(range(depth)),
            "codes": Out(data.ArrayLayout(8, lanes)),
        })

    def elaborate(self, platform):
        m = Module()
        words = self.depth // BEAT_BYTES
        write = self.write
        write_addr = write.buffer * words + (write.k >> 3)           # buffer 1 follows buffer 0
        read_addr = self.read_buffer * words + (self.read_k >> 3)
        byte = Signal(3)
        m.d.sync += byte.eq(self.read_k[:3])
        for lane in range(self.lanes):
            m.submodules[f"bank{lane}"] = bank = Memory(shape=data.ArrayLayout(8, BEAT_BYTES),
                                                       depth=2 * words, init=[])
            port = bank.write_port(granularity=1)          # one enable per byte element
            m.d.comb += port.addr.eq(write_addr)
            position = Signal(signed(9), name=f"bank{lane}_position")   # this bank's byte in the beat
            m.d.comb += position.eq(lane - write.lane)
            with m.If(write.en & write.k_rows & (position >= 0) & (position < BEAT_BYTES)):
                m.d.comb += [port.data.as_value().eq(write.data.as_value().word_select(position[:3], 8)
                                                     .replicate(BEAT_BYTES)),
                             port.en.eq(1 << write.k[:3])]
            with m.Elif(write.en & ~write.k_rows & (write.lane == lane)):
                m.d.comb += [port.data.eq(write.data), port.en.eq(-1)]
            read = bank.read_port()
            m.d.comb += [read.addr.eq(read_addr),
                         self.codes[lane].eq(read.data.as_value().word_select(byte, 8))]
        return m
