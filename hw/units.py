"""Registry of the gateware units and their conversion to Verilog.

``fp8train verilog``, the lint test and the RTL benches all go through :func:`to_verilog`, so every
consumer sees the same top-level port names (``<port>__<member>``, DESIGN.md §8).
"""

from dataclasses import dataclass, field
from typing import Callable

from amaranth.back import verilog
from amaranth.hdl import Const, ValueCastable
from amaranth.hdl._ir import PortDirection
from amaranth.lib import wiring

from fp8train.formats import E5M2, FP16_169
from fp8train.hw.arith.convert import FpConvert
from fp8train.hw.arith.add import FpAdd
from fp8train.hw.arith.lane_keys import LaneKeyHasher
from fp8train.hw.arith.lfsr import LfsrBank
from fp8train.hw.arith.mac import ChunkMac
from fp8train.hw.arith.mul import FpMul
from fp8train.hw.arith.output import OutputUnit

__all__ = ["Unit", "UNITS", "to_verilog", "top_ports"]


@dataclass(frozen=True)
class Unit:
    """A registered unit: a factory for a representative configuration and its lint waivers.

    ``waivers`` maps a Verilator warning code, or ``"CODE:signal"``, to the reason it is acceptable
    for this unit; a waiver without a reason, or one that matches no warning, fails the lint test.
    """
    name: str
    factory: Callable[[], wiring.Component]
    waivers: dict[str, str] = field(default_factory=dict)


_INLINED = ("Yosys inlines the driver of these named combinational intermediates at their uses; "
            "the wires stay for waves (each also drives logic, checked by the RTL benches)")

UNITS = [
    Unit("lfsr_bank", lambda: LfsrBank(lanes=4, rbits=8), waivers={
        "UNUSEDSIGNAL:seed": "the seed port is 32 bits wide, a lane state 31: bit 31 is not used",
    }),
    Unit("fp_mul", lambda: FpMul(fmt_a=E5M2, out_fmt=FP16_169), waivers={
        "WIDTHEXPAND": "Yosys writes Verilog operators with operands narrower than the result",
        "WIDTHTRUNC": "Yosys writes a logical NOT of a multi-bit slice ('! x[1:0]') for 'x == 0'",
        "UNUSEDSIGNAL:product_*": _INLINED,
    }),
    Unit("fp_add", lambda: FpAdd(FP16_169, rbits=8), waivers={
        "WIDTHEXPAND": "Yosys writes Verilog operators with operands narrower than the result",
        "WIDTHTRUNC": "Yosys writes a logical NOT of a multi-bit slice for 'x == 0'",
        "UNUSEDSIGNAL:add_*": _INLINED,
    }),
    Unit("chunk_mac", lambda: ChunkMac(max_chunk=4096, rbits=8), waivers={
        "WIDTHEXPAND": "Yosys writes Verilog operators with operands narrower than the result",
        "WIDTHTRUNC": "Yosys writes a logical NOT of a multi-bit slice for 'x == 0'",
        **{f"UNUSEDSIGNAL:{prefix}*": _INLINED for prefix in ("chunk_add_", "total_add_", "product_")},
    }),
    Unit("output_unit", lambda: OutputUnit(rbits=8), waivers={
        "WIDTHEXPAND": "Yosys writes Verilog operators with operands narrower than the result",
        "WIDTHTRUNC": "Yosys writes a logical NOT of a multi-bit slice for 'x == 0'",
        **{f"UNUSEDSIGNAL:{prefix}*": _INLINED for prefix in ("c_add_", "value_", "to_")},
    }),
    Unit("lane_key_hasher", LaneKeyHasher),
    Unit("fp_convert", lambda: FpConvert(src=FP16_169, dst=E5M2), waivers={
        "WIDTHEXPAND": "Yosys writes Verilog operators with operands narrower than the result",
        "WIDTHTRUNC": "Yosys writes a logical NOT of a multi-bit slice ('! x[8:0]') for 'x == 0'",
        "UNUSEDSIGNAL:convert_*": _INLINED,
    }),
]


def top_ports(component: wiring.Component) -> dict:
    """The component's signature members as Verilog top-level ports.

    Same naming as ``amaranth.back.verilog.convert``, but members that the signature fixes to a
    constant (``always_valid``/``always_ready`` stream handshakes) are left out: Amaranth refuses a
    constant as a port. A testbench treats a missing ``<port>__valid``/``__ready`` as constant 1.
    """
    ports = {}
    for path, member, value in component.signature.flatten(component):
        if isinstance(value, ValueCastable):
            value = value.as_value()
        if isinstance(value, Const):
            continue
        flow = PortDirection.Input if member.flow == wiring.In else PortDirection.Output
        ports["__".join(map(str, path))] = (value, flow)
    return ports


def to_verilog(component: wiring.Component, name: str, *, emit_src: bool = True) -> str:
    """Verilog text of ``component`` as a top module called ``name``.

    Benches pass ``emit_src=False``: source-location attributes change with every unrelated edit of
    a Python file, and the build cache is keyed by the Verilog text.
    """
    return verilog.convert(component, name=name, ports=top_ports(component), emit_src=emit_src)
