"""Packed layouts of the number formats, derived from :class:`~fp8train.formats.FloatFormat`, and the
one decoder of their fields that every arithmetic unit starts from."""

from typing import NamedTuple

from amaranth.hdl import Cat, Const, Module, Mux, Signal, Value
from amaranth.lib import data

from ...formats import FloatFormat

__all__ = ["fp_layout", "Operand", "unpack"]


def fp_layout(fmt: FloatFormat) -> data.StructLayout:
    """A code of ``fmt`` as fields, LSB first, so the sign lands in the MSB as in the code."""
    return data.StructLayout({"man": fmt.man_bits, "exp": fmt.exp_bits, "sign": 1})


class Operand(NamedTuple):
    """A decoded code: the value is ``(-1)**sign * sig * 2**(exp_field - bias - man_bits)``."""
    sign: Value
    sig: Signal          # significand with its hidden bit (0 for subnormals); 0 where flushed
    exp_field: Signal    # the exponent field, with subnormals read as 1 (their true exponent)
    zero: Value
    inf: Value
    nan: Value


def unpack(m: Module, fmt: FloatFormat, code, name: str) -> Operand:
    """Decode a ``fmt`` code as golden ``decode`` does: subnormals keep their value unless the format
    flushes them (then they read as a zero of their sign); inf and NaN follow ``fmt.specials``."""
    view = data.View(fp_layout(fmt), code)
    normal = view.exp != 0
    top = view.exp == fmt.exp_max_field
    sig = Signal(fmt.man_bits + 1, name=f"{name}_sig")
    exp_field = Signal(range(1, fmt.exp_max_field + 1), name=f"{name}_exp_field")
    m.d.comb += [sig.eq(Mux(normal | fmt.subnormals, Cat(view.man, normal), 0)),
                 exp_field.eq(Mux(normal, view.exp, 1))]
    if fmt.specials == "ieee":
        inf, nan = top & (view.man == 0), top & (view.man != 0)
    elif fmt.specials == "fn":
        inf, nan = Const(0), top & (view.man == (1 << fmt.man_bits) - 1)
    else:
        inf = nan = Const(0)
    return Operand(view.sign, sig, exp_field, sig == 0, inf, nan)
