"""Stream a large batch through a one-register unit at one beat per clock, with one await per cycle.

:func:`~fp8train.sim.benches.streams.drive` and :func:`~fp8train.sim.benches.streams.collect` handle
any stall pattern but cost two coroutines and two awaits per cycle; for hundreds of thousands of
beats with ``valid`` and ``ready`` held high this helper is several times faster. Inputs are written
and outputs read at the falling edge, where everything the rising edge produced has settled, so the
same code works under Verilator and Icarus. It checks the stream contract as it goes: ``i.ready`` must
stay high while ``o.ready`` is high, and each beat must come out ``latency`` edges after it went in.
"""

import cocotb
import numpy as np
from cocotb.triggers import FallingEdge, RisingEdge, SimTimeoutError, with_timeout

from fp8train.sim.benches.streams import CLOCK_NS, StreamPort, collect, drive, stalls

__all__ = ["stream_lockstep", "stream_stalled"]

#: A stalled run may take this many cycles per beat before beats count as lost (30 % idle on each
#: side averages about two cycles per beat).
STALL_SLACK = 6


async def stream_lockstep(clk, i: StreamPort, o: StreamPort, beats, *, latency: int = 1) -> np.ndarray:
    """Send ``beats`` (payload integers) one per clock and return the output payloads in order.

    Start anywhere after reset; returns right after a rising edge with ``i.valid`` low and
    ``o.ready`` high. Fails (``AssertionError`` naming the cycle) if the unit stalls its input or its
    output beats do not follow the input ``latency`` edges later.
    """
    beats = list(beats)
    count = len(beats)
    got = np.zeros(count, dtype=np.int64)
    falling = FallingEdge(clk)
    i_payload, i_valid, i_ready = i.payload, i.valid, i.ready
    o_payload, o_valid = o.payload, o.valid
    if o.ready is not None:
        o.ready.value = 1
    await falling
    i_valid.value = 1
    for cycle in range(count + latency - 1):
        if cycle < count:
            if i_ready is not None and not i_ready.value:
                raise AssertionError(f"i.ready low at cycle {cycle} although o.ready is high")
            i_payload.value = beats[cycle]
        elif cycle == count:
            i_valid.value = 0
        await falling
        out = cycle + 1 - latency                 # the beat whose result is on o now
        if 0 <= out < count:
            if o_valid is not None and not o_valid.value:
                raise AssertionError(f"o.valid low at cycle {cycle + 1}: beat {out} is not out "
                                     f"{latency} edge(s) after it went in")
            got[out] = int(o_payload.value)
    i_valid.value = 0
    await RisingEdge(clk)
    return got


async def stream_stalled(clk, i: StreamPort, o: StreamPort, beats, in_stall: str | None,
                         out_stall: str | None, seed: int, cycles_per_beat: int = 1) -> np.ndarray:
    """Send ``beats`` and take as many results under the :func:`~fp8train.sim.benches.streams.stalls`
    patterns ``in_stall`` (idle input) and ``out_stall`` (backpressure); returns the results.

    Fails, instead of waiting forever, when they do not all come out within ``STALL_SLACK`` times
    ``cycles_per_beat`` (the unit's own pace) cycles per beat (a unit that drops beats under backpressure).
    """
    beats = list(beats)
    sender = cocotb.start_soon(drive(clk, i, beats, stalls(in_stall, seed + 1)))
    limit = STALL_SLACK * cycles_per_beat * len(beats) + 20
    try:
        got = await with_timeout(collect(clk, o, len(beats), stalls(out_stall, seed + 2)),
                                 limit * CLOCK_NS, "ns")
    except SimTimeoutError:
        sender.cancel()
        raise AssertionError(f"{len(beats)} beats sent (stalls {in_stall}/{out_stall}), but not all "
                             f"results came out within {limit} cycles: beats were lost") from None
    await sender
    return np.array(got, dtype=np.int64)
