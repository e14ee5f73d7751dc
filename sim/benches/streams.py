"""cocotb-side helpers shared by every bench: clock, reset, parameters and ``lib.stream`` ports.

Amaranth names a stream port's members ``<port>__valid``, ``<port>__ready`` and
``<port>__payload``; a handshake fixed by ``always_valid``/``always_ready`` is not a port at all
(``fp8train.hw.units.top_ports``) and counts as constant 1 here.

Per-cycle loops await one ``RisingEdge`` and one ``ReadOnly`` and touch each handle once: inputs are
written right after the edge, and handshakes are read once settled, which is what the next edge
samples. A combinational ``ready``/``valid`` in the design is therefore seen correctly.
"""

import itertools
import json
import logging
import os
import random
from collections.abc import Iterable, Iterator

from cocotb.clock import Clock
from cocotb.triggers import ReadOnly, RisingEdge

__all__ = ["PARAMS_ENV", "CLOCK_NS", "start_clock", "reset", "bench_params", "long_run", "StreamPort",
           "stalls", "drive", "collect"]

#: Environment variable carrying a bench's parameters (JSON) from ``harness.run`` into the simulator.
PARAMS_ENV = "FP8TRAIN_PARAMS"

#: Clock period of every bench; the design has no notion of time, only of edges.
CLOCK_NS = 10

log = logging.getLogger("fp8train.bench")


def start_clock(dut) -> None:
    """Run ``dut.clk`` for the rest of the test."""
    Clock(dut.clk, CLOCK_NS, unit="ns").start()


async def reset(dut, cycles: int = 2) -> None:
    """Hold ``dut.rst`` for ``cycles`` edges; returns just after the edge that releases it."""
    dut.rst.value = 1
    for _ in range(cycles):
        await RisingEdge(dut.clk)
    dut.rst.value = 0
    await RisingEdge(dut.clk)


def bench_params() -> dict:
    """The parameters the pytest side passed to ``harness.run(params=...)``."""
    return json.loads(os.environ.get(PARAMS_ENV, "{}"))


def long_run() -> bool:
    """True under ``make test-long`` (``FP8TRAIN_LONG=1``): benches enlarge their case counts."""
    return os.environ.get("FP8TRAIN_LONG") == "1"


class StreamPort:
    """Handles of one stream port, found by its prefix; ``valid``/``ready`` are None when constant."""

    def __init__(self, dut, prefix: str):
        self.payload = getattr(dut, f"{prefix}__payload")
        self.valid = getattr(dut, f"{prefix}__valid", None)
        self.ready = getattr(dut, f"{prefix}__ready", None)


def stalls(kind: str | None, seed: int = 0) -> Iterator[bool]:
    """A stall pattern: ``None`` never stalls, ``"every_third"`` stalls one cycle in three,
    ``"random"`` stalls 30 % of cycles from a seeded generator (the seed is logged)."""
    if kind is None:
        return itertools.repeat(False)
    if kind == "every_third":
        return itertools.cycle([False, False, True])
    if kind == "random":
        log.info("random stall pattern, seed %d", seed)
        rng = random.Random(seed)
        return (rng.random() < 0.3 for _ in itertools.count())
    raise ValueError(f"stall kind must be None, 'every_third' or 'random', not {kind!r}")


async def drive(clk, port: StreamPort, beats: Iterable[int], stall: Iterator[bool] | None = None):
    """Send ``beats`` (payload integers) on an input stream, idling where ``stall`` says.

    Start right after a rising edge; returns right after the edge that took the last beat.
    """
    stall = stall or itertools.repeat(False)
    edge, settled = RisingEdge(clk), ReadOnly()
    for beat in beats:
        while True:
            valid = not next(stall)
            port.valid.value = valid
            if valid:
                port.payload.value = beat
            await settled
            taken = valid and (port.ready is None or port.ready.value == 1)
            await edge
            if taken:
                break
    port.valid.value = 0


async def collect(clk, port: StreamPort, count: int, stall: Iterator[bool] | None = None) -> list[int]:
    """Take ``count`` beats from an output stream, deasserting ``ready`` where ``stall`` says.

    Start right after a rising edge; returns right after the edge that took the last beat, with
    ``ready`` low again.
    """
    stall = stall or itertools.repeat(False)
    edge, settled = RisingEdge(clk), ReadOnly()
    beats = []
    while len(beats) < count:
        ready = not next(stall)
        if port.ready is not None:
            port.ready.value = ready
        await settled
        if ready and (port.valid is None or port.valid.value == 1):
            beats.append(int(port.payload.value))
        await edge
    if port.ready is not None:
        port.ready.value = 0
    return beats
