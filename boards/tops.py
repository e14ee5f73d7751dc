"""Board tops (STYLE.md rule 8: they only wire pins and clocks): the iCEBreaker (iCE40UP5K) and the ULX3S
(ECP5, 85F by default) around :class:`~fp8train.boards.system.AcceleratorSystem`.

Clock: the board oscillator through the PLL to ``freq_mhz`` (on the iCEBreaker below the PLL's 16 MHz
floor: the 12 MHz clock divided by an integer, through a global buffer). Reset: the user button (or
``PWR`` on the ULX3S) and PLL lock, synchronised. Host: the :class:`~fp8train.boards.bridge.UartHostBridge`
(``bridge``) on the FTDI UART pins at ``baud`` (its divisor from the achieved clock, checked by
:func:`~fp8train.boards.uart.baud_divisor`); the interrupt also lights an LED.
"""

from dataclasses import dataclass, field

from amaranth.hdl import ClockDomain, ClockSignal, Elaboratable, Instance, Module, Signal
from amaranth.lib import io, wiring
from amaranth.lib.cdc import ResetSynchronizer

from .pll import ecp5_instance, ecp5_pll, ice40_instance, ice40_pll
from .bridge import UartHostBridge
from .system import AcceleratorSystem
from .uart import baud_divisor

__all__ = ["BoardConfig", "BOARDS", "BoardTop", "board_platform", "BRIDGE_TIMEOUT_S", "ACCELERATOR_KEYS",
           "OVERRIDES", "BOOLEAN_KEYS"]

#: The bridge's inter-byte timeout: USB serial adapters leave gaps of up to about a millisecond
#: between the packets of one write (full-speed USB frames), which must not truncate a frame.
BRIDGE_TIMEOUT_S = 0.01


#: The :class:`BoardConfig` fields that configure the accelerator, and all a build may override.
ACCELERATOR_KEYS = ("rows", "cols", "k_block", "max_chunk", "update_lanes", "serial_keys", "compact")
OVERRIDES = ACCELERATOR_KEYS + ("mem_size", "freq_mhz")
#: The accelerator keys that are switches (``--[no-]<key>`` on the command line).
BOOLEAN_KEYS = ("serial_keys", "compact")


@dataclass(frozen=True)
class BoardConfig:
    """A board and the accelerator configuration built for it."""
    name: str
    family: str                 # "ice40" or "ecp5" (boards.synth.FAMILIES)
    platform: str               # amaranth_boards class, "module:Class"
    freq_mhz: float
    rows: int
    cols: int
    k_block: int
    max_chunk: int
    mem_size: int
    loader_board: str           # openFPGALoader's -b name (an iCEBreaker is its "ice40_generic")
    update_lanes: int = 4
    serial_keys: bool = False
    compact: bool = False
    reset_button: tuple = ("button", 0)
    baud: int = 115_200
    variants: dict = field(default_factory=dict)   # --device choice -> platform class


#: Chosen from measurements (README "Resources and Fmax"): the UP5K holds the compact accelerator (one
#: FP16 adder computing output by output, a single-transaction DMA, no update unit, serial key hashers,
#: SPRAM host memory) at 98% of its logic cells with the bridge, timing met at 6 MHz (7.8 achieved); a
#: systolic 1x1 needed 229%. On the ULX3S an 8x8 accelerator needs 102% of the 85F's logic; 8x6 with one
#: update lane placed at 74% (20.1 MHz estimated) but its routing had not converged after 45 minutes;
#: 7x6 routed at 67% and 19.67 MHz, so 7x6 at 12.5 MHz.
BOARDS = {
    "icebreaker": BoardConfig(
        name="icebreaker", family="ice40", platform="amaranth_boards.icebreaker:ICEBreakerPlatform",
        freq_mhz=6.0, rows=1, cols=1, k_block=8, max_chunk=64, mem_size=1 << 17, update_lanes=0,
        serial_keys=True, compact=True, loader_board="ice40_generic"),
    "ulx3s": BoardConfig(
        name="ulx3s", family="ecp5", platform="amaranth_boards.ulx3s:ULX3S_85F_Platform",
        freq_mhz=12.5, rows=7, cols=6, k_block=64, max_chunk=4096, mem_size=1 << 17, update_lanes=1,
        reset_button=("button_pwr", 0), loader_board="ulx3s",
        variants={"12f": "amaranth_boards.ulx3s:ULX3S_12F_Platform",
                  "25f": "amaranth_boards.ulx3s:ULX3S_25F_Platform",
                  "45f": "amaranth_boards.ulx3s:ULX3S_45F_Platform",
                  "85f": "amaranth_boards.ulx3s:ULX3S_85F_Platform"}),
}


def board_platform(config: BoardConfig, device: str | None = None):
    """An instance of the board's amaranth-boards platform (``device``: a ULX3S size, e.g. ``"45f"``)."""
    import importlib

    target = config.platform
    if device is not None:
        if device not in config.variants:
            raise ValueError(f"device must be one of {', '.join(config.variants) or '(none)'} for "
                             f"{config.name}, not {device!r}")
        target = config.variants[device]
    module, cls = target.split(":")
    return getattr(importlib.import_module(module), cls)()


class BoardTop(Elaboratable):
    """Pins, clock and reset of ``config``'s board around the accelerator system and a host bridge.

    Parameters
    ----------
    config : BoardConfig
        The board; ``rows``/``cols``/... override its accelerator configuration.
    """

    def __init__(self, config: BoardConfig, **overrides):
        if not isinstance(config, BoardConfig):
            raise TypeError(f"config must be a BoardConfig, not {config!r}")
        unknown = set(overrides) - {*OVERRIDES, "baud"}
        if unknown:
            raise TypeError(f"unknown board parameters {', '.join(sorted(unknown))}")
        values = {key: overrides.get(key, getattr(config, key)) for key in OVERRIDES}
        self.config, self.freq_mhz = config, values.pop("freq_mhz")
        self.baud = overrides.get("baud", config.baud)
        if config.family == "ice40" and self.freq_mhz < 16:
            divider = round(12 / self.freq_mhz)
            if divider < 1 or abs(12 / divider - self.freq_mhz) > 1e-9:
                raise ValueError(f"freq_mhz below 16 on the iCEBreaker must be 12 MHz / an integer, "
                                 f"not {self.freq_mhz!r}")
            self.pll, self.divider = None, divider
        elif config.family == "ice40":
            self.pll, self.divider = ice40_pll(12, self.freq_mhz), None
        else:
            self.pll, self.divider = ecp5_pll(25, self.freq_mhz), None
        self.achieved_mhz = self.pll.f_out if self.pll is not None else 12 / self.divider
        self.system = AcceleratorSystem(**values, spram=config.family == "ice40")
        clock_hz = self.achieved_mhz * 1e6
        self.bridge = UartHostBridge(mem_size=values["mem_size"], divisor=baud_divisor(clock_hz, self.baud),
                                     timeout=round(clock_hz * BRIDGE_TIMEOUT_S))

    def elaborate(self, platform):
        m = Module()
        # The clock net is the domain's own signal, so the constraint below names a net nextpnr finds.
        m.domains.sync = sync = ClockDomain("sync")
        clk, lock = sync.clk, Signal(name="pll_lock")
        if self.config.family == "ice40":
            if self.pll is not None:
                pad = platform.request("clk12", dir="-")
                m.submodules.pll = ice40_instance(self.pll, pad.io, clk, lock)
            elif self.divider == 1:
                m.submodules.clk12 = clk12 = io.Buffer("i", platform.request("clk12", 0, dir="-"))
                m.d.comb += [clk.eq(clk12.i), lock.eq(1)]
            else:                                    # 12 MHz / divider from a fabric counter, global buffer
                m.domains.board = ClockDomain("board", reset_less=True)
                m.submodules.clk12 = clk12 = io.Buffer("i", platform.request("clk12", 0, dir="-"))
                m.d.comb += ClockSignal("board").eq(clk12.i)
                count, slow = Signal(range(self.divider)), Signal()
                m.d.board += [count.eq(count + 1), slow.eq(count < self.divider // 2)]
                with m.If(count == self.divider - 1):
                    m.d.board += count.eq(0)
                m.submodules.clk_buffer = Instance("SB_GB", i_USER_SIGNAL_TO_GLOBAL_BUFFER=slow,
                                                   o_GLOBAL_BUFFER_OUTPUT=clk)
                m.d.comb += lock.eq(1)
        else:
            m.submodules.clk25 = clk25 = io.Buffer("i", platform.request("clk25", 0, dir="-"))
            m.submodules.pll = ecp5_instance(self.pll, clk25.i, clk, lock)
        platform.add_clock_constraint(clk, self.achieved_mhz * 1e6)

        m.submodules.button = button = io.Buffer("i", platform.request(*self.config.reset_button, dir="-"))
        m.submodules.reset_sync = ResetSynchronizer(button.i | ~lock, domain="sync")

        m.submodules.system = system = self.system
        m.submodules.bridge = bridge = self.bridge
        wiring.connect(m, bridge.csr, system.host_csr)
        wiring.connect(m, bridge.mem, system.host_mem)
        uart = platform.request("uart", 0, dir="-")
        m.submodules.uart_rx = rx = io.Buffer("i", uart.rx)
        m.submodules.uart_tx = tx = io.Buffer("o", uart.tx)
        m.submodules.led = led = io.Buffer("o", platform.request("led", 0, dir="-"))
        m.d.comb += [bridge.irq.eq(system.irq), bridge.rx.eq(rx.i), tx.o.eq(bridge.tx), led.o.eq(system.irq)]
        return m
