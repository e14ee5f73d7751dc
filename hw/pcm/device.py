"""Per-device datapaths of the PCM tile: programming and reading one device (DESIGN.md §6).

Both are combinational and written from the fixed-point specification in
:mod:`fp8train.sim.golden.pcm`; their lookup tables come from the same :class:`PcmConfig`, so golden model
and RTL share one definition of every published formula.
"""

from amaranth.hdl import Array, Const, Module, Mux, Signal, signed
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from fp8train.hw.arith.lfsr import lfsr_draw
from fp8train.sim.golden.lfsr import OUTPUT_FALLBACK_STATE, STATE_BITS
from fp8train.sim.golden.pcm import LEVEL_BITS, PcmConfig

__all__ = ["device_layout", "DeviceProgrammer", "DeviceReader"]


def device_layout(config: PcmConfig) -> data.StructLayout:
    """One device's stored state: programmed conductance, drift exponent, level and LFSR lane."""
    return data.StructLayout({"g": config.g_bits, "nu": config.nu_bits, "level": LEVEL_BITS,
                              "lane": STATE_BITS})


def _table(values) -> Array:
    """A small constant table indexed by a signal (the per-level tables)."""
    width = max(int(v) for v in values).bit_length() or 1
    return Array(Const(int(v), width) for v in values)


def _gaussian(m: Module, config: PcmConfig, drawn, name: str) -> Signal:
    """Irwin-Hall ``z = 2 sum(fields) - terms (2^bits - 1)`` of one LFSR draw."""
    bits, mask = config.gauss_bits, (1 << config.gauss_bits) - 1
    total = sum(drawn[t * bits:(t + 1) * bits] for t in range(config.gauss_terms))
    z = Signal(signed(bits + config.gauss_terms.bit_length() + 2), name=name)
    m.d.comb += z.eq(2 * total - config.gauss_terms * mask)
    return z


def _rshift(value, shift: int):
    """``floor((value + 2^(shift-1)) / 2^shift)``, as golden ``rshift`` (static ``shift >= 1``)."""
    return (value + (1 << (shift - 1))) >> shift


def _named(m: Module, value, name: str) -> Signal:
    """A named signal of ``value``'s exact shape (for waves; no bit is lost)."""
    sig = Signal(value.shape(), name=name)
    m.d.comb += sig.eq(value)
    return sig


def _clip(value, low: int, high: int):
    return Mux(value < low, low, Mux(value > high, high, value))


class DeviceProgrammer(wiring.Component):
    """Programs one device: seeds its lane and draws its conductance and drift exponent.

    Members
    -------
    level : In(3)
        Target level.
    seed : In(32)
        PROGRAM's seed.
    key : In(31)
        ``row_key(i) ^ col_key(c)`` of the device (low 31 bits).
    device : Out(device_layout)
        The programmed state (combinational).
    """

    def __init__(self, config: PcmConfig):
        if not isinstance(config, PcmConfig):
            raise TypeError(f"config must be a PcmConfig, not {type(config).__name__}")
        self._config = config
        super().__init__({"level": In(LEVEL_BITS), "seed": In(32), "key": In(STATE_BITS),
                          "device": Out(device_layout(config))})

    def elaborate(self, platform):
        m = Module()
        c, tables = self._config, self._config.tables
        start = Signal(STATE_BITS)
        m.d.comb += start.eq(self.seed[:STATE_BITS] ^ self.key)
        lane0 = Mux(start.any(), start, OUTPUT_FALLBACK_STATE)
        drawn1, lane1 = lfsr_draw(lane0, c.rbits)
        drawn2, lane2 = lfsr_draw(lane1, c.rbits)
        z_prog, z_nu = _gaussian(m, c, drawn1, "z_prog"), _gaussian(m, c, drawn2, "z_nu")

        level = self.level
        g = _named(m, _table(tables["g_target"])[level]
                   + _rshift(z_prog * _table(tables["sigma_p"])[level], c.NOISE_FRAC), "g_prog")
        nu = _named(m, _table(tables["mu"])[level]
                    + _rshift(z_nu * _table(tables["sigma_nu"])[level], c.NOISE_FRAC), "nu_signed")
        nu_abs = abs(nu)
        m.d.comb += [
            self.device.g.eq(_clip(g, 0, c.g_clip)),
            self.device.nu.eq(Mux(nu_abs > c.nu_max, c.nu_max, nu_abs)),
            self.device.level.eq(level),
            self.device.lane.eq(lane2),
        ]
        return m


class DeviceReader(wiring.Component):
    """Reads one device at time step ``step``: drift by lookup, then read noise from its lane.

    Members
    -------
    device : In(device_layout)
        The stored state.
    step : In(time_bits)
        Current time step ``k``.
    read_factor : In
        ``READ[k]`` of the read-noise time table.
    g : Out(g_bits)
        The conductance this read sees (combinational).
    lane : Out(31)
        The lane after the draw (to be written back).
    """

    def __init__(self, config: PcmConfig):
        if not isinstance(config, PcmConfig):
            raise TypeError(f"config must be a PcmConfig, not {type(config).__name__}")
        self._config = config
        super().__init__({"device": In(device_layout(config)), "step": In(config.time_bits),
                          "read_factor": In(max(int(v) for v in config.tables["read"]).bit_length()),
                          "g": Out(config.g_bits), "lane": Out(STATE_BITS)})

    def elaborate(self, platform):
        m = Module()
        c, tables = self._config, self._config.tables
        dev = self.device

        # Drift: g * 2^(-nu k / 2^E) with E = nu_frac + steps_log2 fraction bits in the exponent.
        frac_bits = c.nu_frac + c.steps_log2
        exponent = Signal(c.nu_bits + c.time_bits)
        m.d.comb += exponent.eq(dev.nu * self.step)
        drift_lut = _table(tables["drift"])
        product = Signal(c.g_bits + len(drift_lut[0]))
        m.d.comb += product.eq(dev.g * drift_lut[exponent[frac_bits - c.drift_lut_bits:frac_bits]])
        # rshift by s = DRIFT_FRAC + n (>= 1) as ((product >> (s - 1)) + 1) >> 1.
        halved = Signal.like(product)
        m.d.comb += halved.eq(product >> (c.DRIFT_FRAC - 1 + exponent[frac_bits:]))
        drifted = Signal(c.g_bits, name="drifted")
        m.d.comb += drifted.eq((halved + 1) >> 1)

        drawn, lane = lfsr_draw(dev.lane, c.rbits)
        z = _gaussian(m, c, drawn, "z_read")
        noise = _named(m, _rshift(drifted * _table(tables["q"])[dev.level] * self.read_factor * z,
                                  c.Q_FRAC + c.READ_FRAC), "noise")
        m.d.comb += [self.g.eq(_clip(drifted + noise, 0, c.g_clip)), self.lane.eq(lane)]
        return m
