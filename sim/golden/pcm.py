"""Bit-exact model of the PCM conductance-array tile (DESIGN.md §6, REFERENCES.md §8).

A tile stores ``rows x cols`` signed weights and computes ``y = x @ W`` in the "analog" domain: every
weight is ``slices`` differential pairs of phase-change-memory devices (G+ - G-) whose conductances
carry programming noise, drift and read noise, inputs pass a DAC and every column a clipping ADC.

Statistical model (Nandakumar et al., ICECS 2019; Joshi et al., Nat. Commun. 11:2473, 2020; as
implemented in IBM aihwkit 1.2.0 ``inference/noise/pcm.py``, ``PCMLikeNoiseModel``). Conductances in
µS, ``g_max = 25``, ``t0 = 20 s``, ``t_read = 250 ns``, ``r = g_T / g_max`` (at least 1e-7 under a log):

- programming noise ``sigma_p = (0.26348 + 1.9650 r - 1.1731 r^2) g_max / 25``,
  ``g_prog = max(g_T + sigma_p N(0, 1), 0)``;
- drift exponent, drawn at programming: ``mu = clip(-0.0155 ln r + 0.0244, 0.049, 0.1)``,
  ``sigma = clip(-0.0125 ln r - 0.0059, 0.008, 0.045)``, ``nu = |mu + sigma N(0, 1)|``;
- drift ``g_d = g_prog ((t + t0) / t0)^(-nu)``, ``t`` seconds after programming;
- read (1/f) noise ``Q_s = min(0.0088 / max(r^0.65, 1e-3), 0.2)``,
  ``sigma_r = Q_s sqrt(ln((t + t0 + t_read) / (2 t_read)))``, ``g = max(g_d + g_d sigma_r N(0, 1), 0)``;
- global drift compensation: a reference read of every input one-hot right after programming gives
  ``baseline = sum |Y|``; at time t the outputs are multiplied by ``alpha = baseline / sum |Y(t)|``.

Where this emulator differs, by design (the statistics tests state the resulting tolerances):

- **Levels and bit slicing.** Each device is programmed to one of 8 levels ``g_T = l g_max / 7``. A weight
  is a signed integer ``w`` with ``|w| < 8^slices``; base-8 digit ``k`` of ``|w|`` is the level of pair
  ``k`` (significance ``8^k``), on G+ for a positive and on G- for a negative weight, the other device at
  level 0 (and still programmed, so it carries the model's noise at ``r = 0``). Projected PCM reached
  8-bit scalar multiplication (Giannopoulos et al., IEDM 2018); its levels and slicing are not published,
  so these are our choice. Every pair has its own ADC; the digital periphery adds ``8^k``-shifted
  ADC outputs (as bit-sliced crossbars do).
- **Per-level functions.** ``sigma_p``, ``mu``, ``sigma`` and ``Q_s`` are evaluated at the target
  level (aihwkit takes ``Q_s`` from ``g_prog``): eight-entry tables.
- **Read noise at every read.** aihwkit draws the 1/f noise once per inference time; here every MVM
  reads every device anew, with ``sigma_r`` at the current time.
- **Time on a log grid.** ``advance`` moves to time step ``k`` with ``(t + t0)/t0 = 2^(k / steps)``
  (``steps`` per octave), the nearest grid point to the elapsed time.
- **Fixed point.** Conductances are ``g_bits``-bit integers, ``g_max`` at ``2^(g_bits - 1)``; ``nu`` has
  ``nu_frac`` fraction bits; every noise term is rounded to a conductance or ``nu`` step.
- **Gaussian approximation.** ``N(0, 1)`` is an Irwin-Hall sum of ``gauss_terms`` uniform
  ``gauss_bits``-bit integers from one LFSR draw (range ±3.46 sigma for 4 terms, excess kurtosis -0.3).

Fixed-point specification (every table below is built by :class:`PcmConfig` from the formulas above and
shared with the RTL). ``rshift(v, s) = floor((v + 2^(s-1)) / 2^s)`` (round half up; ``v`` for s = 0):

- **LFSR lanes.** Every device has its own lane (:mod:`fp8train.sim.golden.lfsr`'s rule), lane
  ``(i, c)`` with device column ``c = (j slices + k) 2 + p`` (``p`` = 0 for G+, 1 for G-). PROGRAM with
  ``seed`` restarts every lane at ``output_state(seed, i, c)``. A Gaussian draw takes
  ``R`` of ``gauss_terms * gauss_bits`` bits; ``z = 2 sum_m field_m(R) - terms (2^bits - 1)``,
  ``std(z) = sqrt(terms (4^bits - 1) / 3)``.
- **PROGRAM** (per device, level ``l``): ``z1``, then ``z2`` from its lane;
  ``g = clip(G_T[l] + rshift(z1 SIGMA_P[l], NOISE_FRAC), 0, 2^g_bits - 1)``,
  ``nu = min(|MU[l] + rshift(z2 SIGMA_NU[l], NOISE_FRAC)|, 2^nu_bits - 1)``; the time step becomes 0.
- **Drift** at step ``k``: ``e = nu k`` has ``E = nu_frac + log2(steps)`` fraction bits;
  ``n = e >> E``, ``f`` = the top ``drift_lut_bits`` bits of ``e``'s fraction;
  ``g_d = rshift(g DRIFT[f], DRIFT_FRAC + n)`` with ``DRIFT[f] = round(2^(DRIFT_FRAC - f / 2^lut_bits))``.
- **Read** (one ``z`` per device and MVM): ``g_r = clip(g_d + rshift(g_d Q[l] READ[k] z, Q_FRAC +
  READ_FRAC), 0, 2^g_bits - 1)`` with ``READ[k] = round(sqrt(ln((t_k + t0 + t_read) / (2 t_read))) /
  std(z) 2^READ_FRAC)``.
- **MVM** with DAC codes ``x`` (``|x| < 2^(dac_bits-1)``) and ``adc_shift``: per column ``j`` and pair
  ``k`` ``acc = sum_i x_i (g_r+ - g_r-)``, ``a = clip(rshift(acc, adc_shift), ±(2^(adc_bits-1) - 1))``;
  ``y_j = sum_k a_k 8^k``.
"""

import enum
import math
from dataclasses import dataclass, field

import numpy as np

from .lfsr import MAX_RBITS, LfsrBank

__all__ = ["LEVELS", "LEVEL_BITS", "G_MAX_US", "T0", "T_READ", "PcmOp", "PcmError", "PcmConfig", "PcmTile",
           "rshift", "sigma_prog_us", "drift_mu", "drift_sigma", "read_q", "read_time_factor",
           "command_error", "reference_read", "alpha_code", "compensate", "adc_shift_for",
           "PcmMatrix", "PcmAccessor"]

#: Programmable conductance levels per device, and the bits of a level (a base-8 digit of a weight).
LEVELS = 8
LEVEL_BITS = 3
#: aihwkit PCMLikeNoiseModel defaults (REFERENCES.md §8).
G_MAX_US = 25.0
T0 = 20.0
T_READ = 250e-9
_R_MIN = 1e-7


class PcmOp(enum.IntEnum):
    """Command opcodes of the tile (the PCM_* commands of the accelerator's ring)."""
    PROGRAM = 0   # arg: seed (32 bits); operands: rows * cols weights, row-major
    MVM = 1       # arg: ADC shift; operands: rows DAC codes; results: cols outputs
    TIME = 2      # arg: time step k


class PcmError(enum.IntEnum):
    """The tile's answer to a command (the ``done`` stream)."""
    OK = 0
    BAD_OPCODE = 1
    BAD_ARGUMENT = 2      # TIME step beyond the table, ADC shift beyond the accumulator
    NOT_PROGRAMMED = 3    # MVM or TIME before the first PROGRAM


# --- The published per-device functions (float, REFERENCES.md §8) ------------------------------------------

def sigma_prog_us(r):
    """Programming-noise standard deviation in µS at relative target conductance ``r``."""
    r = np.asarray(r, dtype=np.float64)
    return (0.26348 + 1.9650 * r - 1.1731 * r * r) * G_MAX_US / 25.0


def drift_mu(r):
    """Mean drift exponent at relative target conductance ``r``."""
    return np.clip(-0.0155 * np.log(np.maximum(r, _R_MIN)) + 0.0244, 0.049, 0.1)


def drift_sigma(r):
    """Spread of the drift exponent at relative target conductance ``r``."""
    return np.clip(-0.0125 * np.log(np.maximum(r, _R_MIN)) - 0.0059, 0.008, 0.045)


def read_q(r):
    """Read-noise coefficient ``Q_s`` at relative conductance ``r``."""
    return np.minimum(0.0088 / np.maximum(np.asarray(r, dtype=np.float64) ** 0.65, 1e-3), 0.2)


def read_time_factor(t):
    """``sqrt(ln((t + t0 + t_read) / (2 t_read)))``: read noise grows with the time since programming."""
    return np.sqrt(np.log((np.asarray(t, dtype=np.float64) + T0 + T_READ) / (2 * T_READ)))


def rshift(v, s):
    """``floor((v + 2^(s-1)) / 2^s)`` elementwise on integers (round half up); ``v`` where ``s == 0``."""
    v = np.asarray(v, dtype=np.int64)
    s = np.asarray(s, dtype=np.int64)
    half = np.where(s > 0, np.left_shift(np.int64(1), np.maximum(s - 1, 0)), 0)
    return np.right_shift(v + half, s)


def _check_int(name, value, low, high=None):
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < low or (
            high is not None and value > high):
        rule = f"an integer from {low} to {high}" if high is not None else f"an integer >= {low}"
        raise ValueError(f"{name} must be {rule}, not {value!r}")


@dataclass(frozen=True, kw_only=True)
class PcmConfig:
    """Sizes, fixed-point widths and the lookup tables of one tile (shared by golden model and RTL).

    Parameters
    ----------
    rows, cols : int
        Inputs and outputs of the tile (weights ``rows x cols``).
    slices : int
        Differential pairs per weight, of significance ``8^k``: weights are integers with
        ``|w| <= 8^slices - 1`` (1 to 4 pairs: 4- to 13-bit signed weights).
    dac_bits, adc_bits : int
        Signed input and per-pair output code widths (2 to 16 and 2 to 24 bits).
    g_bits : int
        Conductance register width; ``g_max`` is ``2^(g_bits - 1)`` (headroom for noise above it).
    nu_bits, nu_frac : int
        Drift exponent register width and its fraction bits (``nu_frac <= nu_bits + 1``: the register
        holds nu up to at least 0.5; the model's nu exceeds 0.3 with probability below 1e-5).
    gauss_terms, gauss_bits : int
        Irwin-Hall Gaussian: uniform terms per sample and their width (``terms * bits <= 28``).
    time_bits, steps_log2 : int
        Time step register width and ``log2`` of the time steps per octave of ``(t + t0) / t0``.
    drift_lut_bits : int
        Fraction bits of the drift exponent that index the ``2^(-f)`` table.
    """
    rows: int
    cols: int
    slices: int = 2
    dac_bits: int = 8
    adc_bits: int = 8
    g_bits: int = 10
    nu_bits: int = 8
    nu_frac: int = 9
    gauss_terms: int = 4
    gauss_bits: int = 7
    time_bits: int = 9
    steps_log2: int = 4
    drift_lut_bits: int = 8
    #: Fraction bits of the noise, drift, read-noise coefficient and read-time tables.
    NOISE_FRAC = 16
    DRIFT_FRAC = 16
    Q_FRAC = 16
    READ_FRAC = 16
    tables: dict = field(init=False, repr=False, compare=False)

    def __post_init__(self):
        _check_int("rows", self.rows, 1, 4096)
        _check_int("cols", self.cols, 1, 4096)
        _check_int("slices", self.slices, 1, 4)
        _check_int("dac_bits", self.dac_bits, 2, 16)
        _check_int("adc_bits", self.adc_bits, 2, 24)
        _check_int("g_bits", self.g_bits, 4, 16)
        _check_int("nu_bits", self.nu_bits, 2, 12)
        _check_int("nu_frac", self.nu_frac, 1, self.nu_bits + 1)  # nu up to >= 0.5 fits
        _check_int("gauss_terms", self.gauss_terms, 1, MAX_RBITS)
        _check_int("gauss_bits", self.gauss_bits, 1, MAX_RBITS // self.gauss_terms)
        _check_int("time_bits", self.time_bits, 1, 16)
        _check_int("steps_log2", self.steps_log2, 0, 8)
        _check_int("drift_lut_bits", self.drift_lut_bits, 1, self.nu_frac + self.steps_log2)
        object.__setattr__(self, "tables", self._build_tables())

    # Derived sizes --------------------------------------------------------------------------------------
    @property
    def weight_bits(self) -> int:
        """Two's-complement width of a weight code."""
        return LEVEL_BITS * self.slices + 1

    @property
    def w_max(self) -> int:
        return LEVELS ** self.slices - 1

    @property
    def x_max(self) -> int:
        return (1 << (self.dac_bits - 1)) - 1

    @property
    def g_max_code(self) -> int:
        """The code of ``g_max``."""
        return 1 << (self.g_bits - 1)

    @property
    def g_clip(self) -> int:
        return (1 << self.g_bits) - 1

    @property
    def nu_max(self) -> int:
        return (1 << self.nu_bits) - 1

    @property
    def time_steps(self) -> int:
        return 1 << self.time_bits

    @property
    def acc_bits(self) -> int:
        """Signed width that holds every per-pair column sum ``sum_i x_i (g+ - g-)``."""
        return self.dac_bits + self.g_bits + 1 + max(self.rows - 1, 1).bit_length()

    @property
    def out_bits(self) -> int:
        """Signed width of a tile output ``sum_k a_k 8^k``."""
        return self.adc_bits + LEVEL_BITS * (self.slices - 1) + 1

    @property
    def rbits(self) -> int:
        """LFSR bits per Gaussian draw."""
        return self.gauss_terms * self.gauss_bits

    @property
    def z_std(self) -> float:
        return math.sqrt(self.gauss_terms * (4 ** self.gauss_bits - 1) / 3)

    @property
    def device_cols(self) -> int:
        """Lane columns: ``cols * slices`` pairs of two devices."""
        return self.cols * self.slices * 2

    def time_of_step(self, k):
        """Seconds after programming of time step ``k``: ``t0 (2^(k / steps) - 1)``."""
        return T0 * (2.0 ** (np.asarray(k, dtype=np.float64) / (1 << self.steps_log2)) - 1)

    def step_of_time(self, seconds: float) -> int:
        """The time step nearest to ``seconds`` on the log grid (ValueError beyond the last one)."""
        if not isinstance(seconds, (int, float, np.integer, np.floating)) or not seconds >= 0:
            raise ValueError(f"seconds must be a non-negative number, not {seconds!r}")
        k = round(math.log2((seconds + T0) / T0) * (1 << self.steps_log2))
        if k >= self.time_steps:
            raise ValueError(f"{seconds!r} s is beyond the last time step "
                             f"({float(self.time_of_step(self.time_steps - 1)):.3g} s)")
        return k

    def _build_tables(self) -> dict:
        """Integer tables from the published formulas (REFERENCES.md §8): one source for golden and RTL."""
        r = np.arange(LEVELS) / (LEVELS - 1)
        to_code = self.g_max_code / G_MAX_US          # conductance codes per µS
        noise_scale = (1 << self.NOISE_FRAC) / self.z_std
        frac_steps = np.arange(1 << self.drift_lut_bits) / (1 << self.drift_lut_bits)
        k = np.arange(self.time_steps)
        as_int = lambda v: np.rint(v).astype(np.int64)
        return {
            "g_target": as_int(r * self.g_max_code),
            "sigma_p": as_int(sigma_prog_us(r) * to_code * noise_scale),
            "mu": as_int(drift_mu(r) * (1 << self.nu_frac)),
            "sigma_nu": as_int(drift_sigma(r) * (1 << self.nu_frac) * noise_scale),
            "q": as_int(read_q(r) * (1 << self.Q_FRAC)),
            "drift": as_int(2.0 ** (self.DRIFT_FRAC - frac_steps)),
            "read": as_int(read_time_factor(self.time_of_step(k)) / self.z_std * (1 << self.READ_FRAC)),
        }

    # Bit-level operations shared by the golden tile (and written out again in the RTL) ---------------------
    def gaussian(self, drawn: np.ndarray) -> np.ndarray:
        """Irwin-Hall ``z`` of LFSR draws of ``rbits`` bits (see the module docstring)."""
        drawn = np.asarray(drawn, dtype=np.int64)
        mask = (1 << self.gauss_bits) - 1
        total = sum((drawn >> (m * self.gauss_bits)) & mask for m in range(self.gauss_terms))
        return 2 * total - self.gauss_terms * mask

    def drift(self, g: np.ndarray, nu: np.ndarray, k: int) -> np.ndarray:
        """Drifted conductance codes at time step ``k``."""
        e = np.asarray(nu, dtype=np.int64) * k
        frac_bits = self.nu_frac + self.steps_log2
        n = e >> frac_bits
        f = (e & ((1 << frac_bits) - 1)) >> (frac_bits - self.drift_lut_bits)
        product = np.asarray(g, dtype=np.int64) * self.tables["drift"][f]
        # Shifts past the product's width give 0; cap them so numpy's shift stays defined.
        return rshift(product, np.minimum(self.DRIFT_FRAC + n, 62))


def _levels_of(w: np.ndarray, slices: int) -> np.ndarray:
    """Levels (rows, cols, slices, 2) of signed weight codes: digit k of |w| on G+ (w > 0) or G- (w < 0)."""
    mag = np.abs(w)
    digits = np.stack([(mag >> (LEVEL_BITS * k)) & (LEVELS - 1) for k in range(slices)], axis=-1)
    return np.stack([np.where(w[..., None] > 0, digits, 0), np.where(w[..., None] < 0, digits, 0)], axis=-1)


class PcmTile:
    """Golden PCM tile: program integer weights, run MVMs on DAC codes, advance time.

    State per device (index ``[i, j, k, p]``: input row, output column, pair, polarity): ``level``,
    programmed conductance ``g`` and drift exponent ``nu`` codes, and its LFSR lane.
    """

    def __init__(self, config: PcmConfig):
        if not isinstance(config, PcmConfig):
            raise TypeError(f"config must be a PcmConfig, not {type(config).__name__}")
        self.config = config
        self.level = self.g = self.nu = None
        self.step = 0
        self._lanes = None

    @property
    def programmed(self) -> bool:
        return self.g is not None

    def _shape(self):
        c = self.config
        return (c.rows, c.cols, c.slices, 2)

    def _draw(self) -> np.ndarray:
        """One Gaussian ``z`` per device, from its own lane."""
        return self.config.gaussian(self._lanes.draw()).reshape(self._shape())

    def program(self, weights, seed: int) -> None:
        """PROGRAM: write signed integer weight codes (``rows x cols``, ``|w| <= 8^slices - 1``)."""
        c, t = self.config, self.config.tables
        w = np.asarray(weights)
        if w.shape != (c.rows, c.cols):
            raise ValueError(f"weights must have shape {(c.rows, c.cols)}, not {w.shape}")
        if w.dtype.kind not in "iu" or np.abs(w.astype(np.int64)).max(initial=0) > c.w_max:
            raise ValueError(f"weights must be integers from {-c.w_max} to {c.w_max}")
        if not isinstance(seed, (int, np.integer)) or not 0 <= seed < 1 << 32:
            raise ValueError(f"seed must be a 32-bit unsigned integer, not {seed!r}")
        self._lanes = LfsrBank.for_outputs(int(seed), c.rows, c.device_cols, c.rbits)
        level = _levels_of(w.astype(np.int64), c.slices)
        z_prog, z_nu = self._draw(), self._draw()
        self.level = level
        self.g = np.clip(t["g_target"][level] + rshift(z_prog * t["sigma_p"][level], c.NOISE_FRAC), 0, c.g_clip)
        self.nu = np.minimum(np.abs(t["mu"][level] + rshift(z_nu * t["sigma_nu"][level], c.NOISE_FRAC)),
                             c.nu_max)
        self.step = 0

    def erase(self) -> None:
        """Forget the programming, as a PCM command that fails on the device does (``protocol.Descriptor``)."""
        self.level = self.g = self.nu = None
        self.step = 0

    def set_step(self, k: int) -> None:
        """TIME: the devices are now at time step ``k`` after programming."""
        if not self.programmed:
            raise RuntimeError("the tile is not programmed")
        _check_int("time step", k, 0, self.config.time_steps - 1)
        self.step = int(k)

    def advance(self, seconds: float) -> None:
        """Move the time since programming forward by ``seconds`` (to the nearest time step)."""
        self.set_step(self.config.step_of_time(float(self.config.time_of_step(self.step)) + seconds))

    def drifted(self) -> np.ndarray:
        """Conductance codes after drift, before read noise (no random draws)."""
        return self.config.drift(self.g, self.nu, self.step)

    def read(self) -> np.ndarray:
        """One read of every device (what an MVM sees): drift, then read noise; draws once per device."""
        if not self.programmed:
            raise RuntimeError("the tile is not programmed")
        c, t = self.config, self.config.tables
        g_d = self.drifted()
        noise = rshift(g_d * t["q"][self.level] * t["read"][self.step] * self._draw(), c.Q_FRAC + c.READ_FRAC)
        return np.clip(g_d + noise, 0, c.g_clip)

    def mvm(self, x, adc_shift: int) -> np.ndarray:
        """MVM of DAC codes ``x`` (``rows`` or ``batch x rows``), one read per vector; int64 outputs."""
        c = self.config
        x = np.asarray(x)
        if x.shape[-1:] != (c.rows,) or x.ndim > 2:
            raise ValueError(f"x must have shape ({c.rows},) or (batch, {c.rows}), not {x.shape}")
        if x.dtype.kind not in "iu" or np.abs(x.astype(np.int64)).max(initial=0) > c.x_max:
            raise ValueError(f"x must be integers from {-c.x_max} to {c.x_max}")
        _check_int("adc_shift", adc_shift, 0, c.acc_bits)
        if not self.programmed:
            raise RuntimeError("the tile is not programmed")
        batch = x.astype(np.int64).reshape(-1, c.rows)
        limit = (1 << (c.adc_bits - 1)) - 1
        weight = LEVELS ** np.arange(c.slices)
        out = np.empty((batch.shape[0], c.cols), dtype=np.int64)
        for b, vector in enumerate(batch):
            g = self.read()
            acc = np.einsum("i,ijk->jk", vector, g[..., 0] - g[..., 1])
            out[b] = np.clip(rshift(acc, adc_shift), -limit, limit) @ weight
        return out.reshape(x.shape[:-1] + (c.cols,))


def command_error(tile: PcmTile, op: int, arg: int) -> PcmError:
    """The tile's answer to command ``(op, arg)`` before it runs, in the order the hardware checks:
    opcode, then (MVM, TIME) programmed, then the argument's range. A rejected command changes nothing."""
    if op not in set(PcmOp):
        return PcmError.BAD_OPCODE
    if op == PcmOp.PROGRAM:
        return PcmError.OK
    if not tile.programmed:
        return PcmError.NOT_PROGRAMMED
    limit = tile.config.acc_bits if op == PcmOp.MVM else tile.config.time_steps - 1
    return PcmError.OK if 0 <= arg <= limit else PcmError.BAD_ARGUMENT


# --- Global drift compensation (digital periphery, fixed point) --------------------------------------------

#: Fraction bits of the compensation factor alpha.
ALPHA_FRAC = 16


def reference_read(tile, adc_shift: int, rows: int | None = None, cols: int | None = None) -> int:
    """``sum |Y|`` over the MVMs of the one-hot inputs ``x_max e_i``, ``i < rows`` (one MVM each, in ``i``
    order), and the outputs ``j < cols`` (by default the whole tile; a matrix smaller than its tile uses
    its own rows and columns)."""
    c = tile.config
    rows = c.rows if rows is None else rows
    cols = c.cols if cols is None else cols
    x = np.zeros((rows, c.rows), dtype=np.int64)
    x[np.arange(rows), np.arange(rows)] = c.x_max
    return int(np.abs(tile.mvm(x, adc_shift)[:, :cols]).sum())


def alpha_code(baseline: int, current: int) -> int:
    """``alpha = baseline / current`` with :data:`ALPHA_FRAC` fraction bits, rounded down (1.0 if
    ``current`` is 0: nothing to scale)."""
    return (baseline << ALPHA_FRAC) // current if current else 1 << ALPHA_FRAC


def compensate(y, alpha: int) -> np.ndarray:
    """Outputs ``y`` multiplied by the fixed-point ``alpha``, rounded."""
    return rshift(np.asarray(y, dtype=np.int64) * alpha, ALPHA_FRAC)


# --- Host side: real-valued matrices on a tile (the driver's mapping; Device.pcm) ----------------------------

def adc_shift_for(config: PcmConfig, peak: float) -> int:
    """The smallest ADC shift that keeps a per-pair column sum of magnitude ``peak`` (conductance codes
    times DAC codes) inside the ADC's range."""
    limit = (1 << (config.adc_bits - 1)) - 1
    shift = 0
    while shift < config.acc_bits and peak / (1 << shift) > limit:
        shift += 1
    return shift


class PcmMatrix:
    """A real-valued weight matrix on one PCM tile, with the digital periphery around it.

    Weights map to integer codes with one scale per tile, ``s = (8^slices - 1) / max|W|`` (aihwkit's
    mapping, REFERENCES.md §8); every input vector is scaled to the DAC's full range by its own
    ``max|x|``; the ADC shift is the smallest that keeps the column sums of ``calibration`` inputs (or,
    without them, of every full-scale input) in range; outputs are scaled back to real values. With
    ``compensate`` a reference read right after programming and after every ``advance`` gives the
    global drift compensation factor.

    Parameters
    ----------
    weights : array (inputs, outputs)
        Real weights; the tile computes ``x @ weights``.
    seed : int
        PROGRAM's seed (every device's noise).
    calibration : array (n, inputs), optional
        Typical inputs for the ADC range.
    tile : optional
        The tile to program: a :class:`PcmTile` or anything with its ``config``, ``program``, ``mvm``
        and ``advance`` (``Device.pcm`` passes one that submits PCM_* descriptors). A matrix smaller
        than the tile takes its first rows and columns; the rest get zero weights and zero inputs.
        Without it, a new :class:`PcmTile` of the matrix's size.
    config : dict
        Further ``PcmConfig`` arguments (``slices``, ``adc_bits``, ...) of the new tile (not with ``tile``).
    """

    def __init__(self, weights, *, seed: int, calibration=None, tile=None, **config):
        w = np.asarray(weights, dtype=np.float64)
        if w.ndim != 2 or not np.isfinite(w).all():
            raise ValueError(f"weights must be a finite 2-D array, not shape {w.shape}")
        if tile is None:
            tile = PcmTile(PcmConfig(rows=w.shape[0], cols=w.shape[1], **config))
        elif config:
            raise ValueError(f"{', '.join(sorted(config))}: the tile's configuration is fixed; "
                             "PcmConfig arguments go with a new tile only")
        self.config = c = tile.config
        if w.shape[0] > c.rows or w.shape[1] > c.cols:
            raise ValueError(f"a {w.shape[0]}x{w.shape[1]} matrix does not fit the {c.rows}x{c.cols} tile")
        self.rows, self.cols = w.shape
        peak = np.abs(w).max()
        self.w_scale = c.w_max / peak if peak > 0 else 1.0
        self.codes = codes = np.rint(w * self.w_scale).astype(np.int64)
        self.tile = tile
        padded = np.zeros((c.rows, c.cols), dtype=np.int64)
        padded[:self.rows, :self.cols] = codes
        self.tile.program(padded, seed)
        # Per-pair column sums are at most what the top digits give; the ADC must hold the largest.
        digits = _levels_of(codes, c.slices)
        unit = c.g_max_code / (LEVELS - 1)
        if calibration is None:
            peak_acc = c.x_max * np.abs(digits[..., 0] - digits[..., 1]).sum(axis=0).max() * unit
        else:
            x = self.dac(calibration)[0]
            peak_acc = np.abs(np.einsum("bi,ijk->bjk", x, digits[..., 0] - digits[..., 1])).max() * unit
        self.adc_shift = adc_shift_for(c, peak_acc)
        self.ref_shift = adc_shift_for(c, c.x_max * c.g_max_code)
        self.baseline = reference_read(self.tile, self.ref_shift, self.rows, self.cols)
        self.alpha = alpha_code(self.baseline, self.baseline)

    def dac(self, x) -> tuple:
        """DAC codes of real inputs (``batch x inputs``) and each vector's scale."""
        x = np.asarray(x, dtype=np.float64)
        if x.ndim != 2 or x.shape[1] != self.rows or not np.isfinite(x).all():
            raise ValueError(f"x must be a finite array of shape (batch, {self.rows}), not {x.shape}")
        peak = np.abs(x).max(axis=1, keepdims=True)
        scale = np.where(peak > 0, self.config.x_max / np.where(peak > 0, peak, 1), 1.0)
        return np.rint(x * scale).astype(np.int64), scale

    def advance(self, seconds: float) -> None:
        """Let ``seconds`` pass; the reference read gives the new compensation factor."""
        self.tile.advance(seconds)
        self.alpha = alpha_code(self.baseline, reference_read(self.tile, self.ref_shift, self.rows, self.cols))

    def mvm(self, x, *, compensate_drift: bool = True) -> np.ndarray:
        """``x @ W`` through the tile (``x``: one input vector or batch x inputs), real-valued."""
        codes, scale = self.dac(np.atleast_2d(x))
        padded = np.zeros((codes.shape[0], self.config.rows), dtype=np.int64)
        padded[:, :self.rows] = codes
        y = self.tile.mvm(padded, self.adc_shift)[:, :self.cols]
        if compensate_drift:
            y = compensate(y, self.alpha)
        unit = self.config.g_max_code / (LEVELS - 1)
        out = y * (2.0 ** self.adc_shift / unit / self.w_scale) / scale
        return out[0] if np.ndim(x) == 1 else out


class PcmAccessor:
    """``Device.pcm``: ``program(weights)``, ``mvm(x)``, ``advance(seconds)`` on a :class:`PcmMatrix` on
    the device's ``tile``; programming ``n`` of the device uses seed ``seed + n``."""

    def __init__(self, seed: int, tile):
        self.seed, self.tile, self.programs, self.matrix = seed, tile, 0, None

    def program(self, weights, *, calibration=None) -> None:
        """Program ``weights`` (inputs x outputs, at most the tile's rows x cols) onto the tile."""
        seed = (self.seed + self.programs) & 0xFFFF_FFFF
        self.matrix = None
        self.matrix = PcmMatrix(weights, seed=seed, calibration=calibration, tile=self.tile)
        self.programs += 1

    def _programmed(self) -> PcmMatrix:
        if self.matrix is None:
            raise RuntimeError("Device.pcm: program(weights) first")
        return self.matrix

    def mvm(self, x, *, compensate_drift: bool = True) -> np.ndarray:
        """``x @ weights`` through the tile, with global drift compensation unless told otherwise."""
        return self._programmed().mvm(x, compensate_drift=compensate_drift)

    def advance(self, seconds: float) -> None:
        """Let ``seconds`` pass since the last call (drift; reference read for the compensation)."""
        self._programmed().advance(seconds)
