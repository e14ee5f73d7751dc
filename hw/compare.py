"""Comparisons with a constant as plain logic.

Yosys maps a comparison to a carry chain, which costs an iCE40 logic cell per bit even when one
side is a constant; a bound that is a constant needs only a few LUTs per bit group.
"""

from amaranth.hdl import Const

__all__ = ["at_most"]


def at_most(value, limit: int):
    """``value <= limit`` (``value`` unsigned) for a constant ``limit``."""
    if limit < 0:
        return Const(0)
    if limit >= (1 << len(value)) - 1:
        return Const(1)
    top = len(value) - 1
    rest = at_most(value[:top], limit & ((1 << top) - 1))
    return ~value[top] | rest if limit >> top & 1 else ~value[top] & rest
