"""The one-register stream stage that ends every combinational arithmetic unit (STYLE.md rule 4)."""

from amaranth.hdl import Module, Value

__all__ = ["register_stage"]


def register_stage(m: Module, i, o, result: Value) -> None:
    """Register ``result`` (computed from ``i``'s payload) into ``o``: one beat per cycle, latency 1.

    ``i.ready = ~o.valid | o.ready``: a beat is taken whenever the output register is empty or being
    emptied, so ``o.valid`` never waits on ``o.ready`` and nothing is dropped under backpressure.
    """
    m.d.comb += i.ready.eq(~o.valid | o.ready)
    with m.If(i.valid & i.ready):
        m.d.sync += [o.payload.eq(result), o.valid.eq(1)]
    with m.Elif(o.ready):
        m.d.sync += o.valid.eq(0)
