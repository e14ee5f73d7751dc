"""LFSR bank: the random bits for stochastic rounding (DESIGN.md §2).

The sequence, seeding and draw order are specified in :mod:`fp8train.sim.golden.lfsr`; this module
implements that specification and takes the per-lane keys from it, so both stay one definition.
"""

from amaranth.hdl import Cat, Const, Module, Mux, Signal
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from fp8train.sim.golden.lfsr import MAX_RBITS, STATE_BITS, STATE_MASK, TAP, lane_key, seeded_state

__all__ = ["LfsrBank", "lfsr_draw"]


def lfsr_draw(state, rbits: int) -> tuple:
    """One draw of ``rbits`` bits (1 to 28) from a 31-bit lane ``state``: ``(drawn, next_state)``.

    Golden ``LfsrBank.draw``'s rule: every new bit comes from the old state, so the drawn integer is
    ``((state >> 3) ^ state)`` cut to ``rbits`` bits and the next state shifts it in at the top.
    Shared by :class:`LfsrBank` and the systolic array's per-output lanes.
    """
    if not isinstance(rbits, int) or not 1 <= rbits <= MAX_RBITS:
        raise ValueError(f"rbits must be an integer from 1 to {MAX_RBITS}, not {rbits!r}")
    drawn = (state[TAP:] ^ state)[:rbits]
    return drawn, Cat(state[rbits:], drawn)


class LfsrBank(wiring.Component):
    """``lanes`` Fibonacci LFSRs (x^31 + x^3 + 1) advanced together, ``rbits`` bits per draw.

    Parameters
    ----------
    lanes : int
        Number of independent lanes, at least 1.
    rbits : int
        Bits drawn per lane and advance, 1 to 28 (all new bits of one draw come from the old state).

    Members
    -------
    seed : In(32)
        Seed used by ``load``.
    load : In(1)
        When 1 on a clock edge, every lane loads its seeded state (this wins over an advance).
    o : Out(stream.Signature(ArrayLayout(unsigned(rbits), lanes), always_valid=True))
        The current draw of every lane, computed combinationally from the state (zero latency).
        A consumer asserting ``o.ready`` takes it and advances every lane by one draw on that edge,
        so the accepted payloads equal successive golden ``LfsrBank.draw()`` results.

    Reset puts every lane in its seeded state for seed 0.
    """

    def __init__(self, *, lanes: int, rbits: int):
        if not isinstance(lanes, int) or lanes < 1:
            raise ValueError(f"lanes must be a positive integer, not {lanes!r}")
        if not isinstance(rbits, int) or not 1 <= rbits <= MAX_RBITS:
            raise ValueError(f"rbits must be an integer from 1 to {MAX_RBITS}, not {rbits!r}")
        self._lanes = lanes
        self._rbits = rbits
        super().__init__({
            "seed": In(32),
            "load": In(1),
            "o": Out(stream.Signature(data.ArrayLayout(rbits, lanes), always_valid=True)),
        })

    def elaborate(self, platform):
        m = Module()
        rbits = self._rbits
        for i in range(self._lanes):
            state = Signal(STATE_BITS, name=f"state{i}", init=seeded_state(0, i))
            drawn, advanced = lfsr_draw(state, rbits)
            m.d.comb += self.o.payload[i].eq(drawn)

            key = Const(lane_key(i) & STATE_MASK, STATE_BITS)
            mixed = self.seed[:STATE_BITS] ^ key
            with m.If(self.load):
                m.d.sync += state.eq(Mux(mixed.any(), mixed, key))
            with m.Elif(self.o.ready):
                m.d.sync += state.eq(advanced)
        return m
