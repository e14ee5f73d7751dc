"""``fp8train.Device``: NumPy arrays in, NumPy arrays out, the same code on every backend (DESIGN.md §5).

The driver speaks only the host protocol (read/write a register, read/write host memory, wait for the
interrupt) through a *link*; a backend is a link. ``golden`` is the register-level golden model
(:class:`~fp8train.sim.golden.device.GoldenDevice`). Every call lays its buffers out in device memory,
writes one descriptor into the command ring, rings the doorbell and reads the result back.
"""

import numpy as np

from .formats import E4M3, E5M2, FP16_169, FloatFormat
from .protocol import (ALIGN, DESCRIPTOR_BYTES, DEVICE_ID, FLAG_OUT_SHIFT, MAX_DIM, MAX_UPDATE_COUNT,
                       PCM_CONFIG_FIELDS, STATUS_DONE, Ctrl, Descriptor, ErrorCode, Flag, Irq, Opcode, OutFormat,
                       Reg, unpack_opcodes, unpack_pcm_config)

__all__ = ["Device", "DeviceError", "BACKENDS"]

BACKENDS = ("golden", "rtl", "serial")
OUTPUTS = {"fp16": (OutFormat.FP16_169, FP16_169), "e5m2": (OutFormat.E5M2, E5M2),
           "e4m3": (OutFormat.E4M3, E4M3)}
ROUNDINGS = ("nearest", "stochastic")
#: FP8 copy formats of :meth:`Device.sgd_update`.
COPIES = {None: (OutFormat.FP16_169, None), "e5m2": (OutFormat.E5M2, E5M2), "e4m3": (OutFormat.E4M3, E4M3)}
RING_SLOTS = 16
#: A command may take this many cycles per PE-step and per byte moved, plus a fixed allowance, before
#: the driver gives up on its interrupt (generous: a sequential controller needed about 3 per byte).
TIMEOUT_CYCLES_PER_UNIT = 64
TIMEOUT_CYCLES_FIXED = 100_000


class DeviceError(RuntimeError):
    """The device completed a command with an error code."""

    def __init__(self, code: ErrorCode, reason: str = ""):
        super().__init__(f"device error {code.name} ({code:#04x})" + (f": {reason}" if reason else ""))
        self.code = code


def _round_up(value: int) -> int:
    return -(-value // ALIGN) * ALIGN


def _codes(values, fmt: FloatFormat, name: str) -> np.ndarray:
    """Codes of ``values``, which must be exactly representable in ``fmt`` (ValueError otherwise)."""
    values = np.asarray(values)
    if values.dtype.kind not in "fiuV" and not values.dtype.name.startswith(("float8", "bfloat")):
        raise ValueError(f"{name} must be a numeric array, not {values.dtype}")
    as_float = values.astype(np.float64)
    codes = fmt.encode(as_float)
    exact = (fmt.decode(codes) == as_float) | (np.isnan(as_float) & fmt.has_nan)
    if not exact.all():
        index = tuple(int(i) for i in np.unravel_index(np.flatnonzero(~exact)[0], values.shape))
        raise ValueError(f"{name}{list(index)} = {float(as_float[index])!r} is not exactly "
                         f"representable in {fmt}")
    return codes


class Device:
    """The accelerator, through one backend.

    Parameters
    ----------
    backend : "golden" | "rtl" | "serial"
        Which implementation runs the commands: the register-level golden model, the generated
        Verilog of :class:`~fp8train.hw.core.Accelerator` in a simulator (``$SIM``: Verilator by
        default, or Icarus), built once and cached under ``build/``, or a board over its UART
        (:class:`~fp8train.serial.SerialLink`, ``port``).
    seed : int
        Base of the stochastic-rounding seeds: call ``n`` of the device uses ``seed + n``.
    memory_bytes : int, optional
        Device memory for the operands of one call (default 4 MiB; ``serial``: the board's memory).
    rows, cols : int
        Systolic array size of the ``rtl`` backend (results never depend on it).
    port : str or SerialLink, optional
        ``serial`` backend: the board's serial port (``"/dev/ttyUSB1"``), or an open
        :class:`~fp8train.serial.SerialLink` (e.g. to a simulated board, ``fp8train.sim.driver.uart_sim``).
    baud : int, optional
        ``serial`` backend with a port name: the line rate (default :data:`fp8train.serial.DEFAULT_BAUD`).
    pcm : PcmConfig, optional
        The PCM tile (``fp8train.sim.golden.pcm.PcmConfig``) behind :attr:`pcm` of the ``golden`` and
        ``rtl`` backends (the rtl accelerator is then a build of its own); None (the default): no tile.
        The same ``pcm`` and ``seed`` give bit-identical ``pcm`` results on both. A board reports its
        own tile (``CONFIG_PCM*``).
    """

    def __init__(self, backend: str = "golden", *, seed: int = 0, memory_bytes: int | None = None,
                 rows: int = 4, cols: int = 4, pcm=None, port=None, baud: int | None = None):
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {', '.join(map(repr, BACKENDS))}, not {backend!r}")
        if backend != "serial" and (port is not None or baud is not None):
            raise ValueError(f"port and baud belong to the serial backend, not {backend!r}")
        if backend == "serial" and pcm is not None:
            raise ValueError("pcm belongs to the golden and rtl backends; a board reports its own PCM tile")
        if backend == "serial":
            self.link = _serial_link(port, baud)
            if memory_bytes is None:
                memory_bytes = self.link.mem_size
            elif memory_bytes > self.link.mem_size:
                raise ValueError(f"memory_bytes {memory_bytes} exceeds the board's {self.link.mem_size}")
        elif memory_bytes is None:
            memory_bytes = 1 << 22
        if backend == "golden":
            from .sim.golden.device import DeviceConfig, GoldenDevice
            self.link = GoldenDevice(memory_bytes, DeviceConfig(pcm=pcm))
        elif backend == "rtl":
            from .hw.core import Accelerator
            from .sim.driver.rtl import RtlLink
            name = f"accelerator_{rows}x{cols}" + ("" if pcm is None else f"_pcm{pcm.rows}x{pcm.cols}")
            self.link = RtlLink.from_component(Accelerator(rows=rows, cols=cols, pcm=pcm), name,
                                               ram_bytes=memory_bytes)
        self.memory_bytes = memory_bytes
        self.seed = seed
        self.backend = backend
        self._pcm = None
        self.calls = 0
        if self.link.read_csr(Reg.ID) != DEVICE_ID:
            raise RuntimeError(f"no fp8train device on the {backend} backend")
        config = self.link.read_csr(Reg.CONFIG_ARRAY)
        self.rows, self.cols, self.rbits = config & 0xFF, (config >> 8) & 0xFF, (config >> 16) & 0xFF
        self.max_chunk = self.link.read_csr(Reg.CONFIG_LIMITS) & 0xFFFF
        self.opcodes = unpack_opcodes(self.link.read_csr(Reg.CONFIG_OPCODES))
        self.pcm_config = unpack_pcm_config({reg: self.link.read_csr(reg) for reg in PCM_CONFIG_FIELDS})
        if self.pcm_config is not None:
            from .sim.golden.pcm import PcmConfig
            self.pcm_config = PcmConfig(**self.pcm_config)
        self._head = 0
        self._ring = 0
        self.link.write_csr(Reg.RING_BASE, self._ring)
        self.link.write_csr(Reg.RING_SIZE, RING_SLOTS)
        self.link.write_csr(Reg.WINDOW_BASE, 0)
        self.link.write_csr(Reg.WINDOW_LIMIT, memory_bytes)
        self.link.write_csr(Reg.IRQ_MASK, Irq.DONE)
        self.link.write_csr(Reg.CTRL, Ctrl.ENABLE)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def require_update(self) -> None:
        """DeviceError (BAD_OPCODE) unless the device executes UPDATE (``CONFIG_OPCODES``): a host stops
        before sending work that would end in a refused update, e.g. on the iCEBreaker's accelerator."""
        if Opcode.UPDATE not in self.opcodes:
            raise DeviceError(ErrorCode.BAD_OPCODE, "this device has no update unit (CONFIG_OPCODES)")

    def close(self) -> None:
        close = getattr(self.link, "close", None)
        if close is not None:
            close()

    @property
    def pcm(self):
        """The device's PCM tile (DESIGN.md §6): ``program(weights)``, ``mvm(x)``, ``advance(seconds)``.

        Real-valued matrices of at most the tile's rows x cols, mapped as
        :class:`~fp8train.sim.golden.pcm.PcmMatrix` does (one weight scale, per-vector DAC scaling, the
        ADC shift, global drift compensation from a reference read of one-hot PCM_MVMs) onto the tile
        through PCM_PROGRAM / PCM_MVM / PCM_TIME descriptors; programming ``n`` uses seed ``seed + n``.
        """
        if self.pcm_config is None:
            raise RuntimeError(f"Device({self.backend!r}) has no PCM tile: give it one with "
                               "Device(..., pcm=PcmConfig(rows=..., cols=...))")
        if self._pcm is None:
            from .sim.golden.pcm import PcmAccessor
            self._pcm = PcmAccessor(self.seed, _PcmTile(self))
        return self._pcm

    def matmul(self, a, b, *, out="fp16", rounding="nearest", chunk=64, relu=False, trans_a=False,
               trans_b=False, c=None, scale=0) -> np.ndarray:
        """``op(a) @ op(b)`` with E5M2 operands, chunked FP16_169 accumulation and the chosen output.

        ``op`` transposes when ``trans_a``/``trans_b`` (the device reads the stored layout; nothing is
        transposed on the host). ``rounding`` applies to the accumulation and to the output conversion.
        ``c`` (values exact in FP16_169) is added before ReLU; ``scale`` multiplies by ``2**scale``
        before the conversion. Returns float32 values (every result format is exact in float32).
        """
        if out not in OUTPUTS:
            raise ValueError(f"out must be one of {', '.join(map(repr, OUTPUTS))}, not {out!r}")
        if rounding not in ROUNDINGS:
            raise ValueError(f"rounding must be one of {ROUNDINGS}, not {rounding!r}")
        if not isinstance(chunk, (int, np.integer)) or not 1 <= chunk <= self.max_chunk:
            raise ValueError(f"chunk must be an integer from 1 to {self.max_chunk}, not {chunk!r}")
        if not isinstance(scale, (int, np.integer)) or not -128 <= scale <= 127:
            raise ValueError(f"scale must be an integer from -128 to 127, not {scale!r}")
        a_codes, b_codes = _codes(a, E5M2, "a"), _codes(b, E5M2, "b")
        if a_codes.ndim != 2 or b_codes.ndim != 2:
            raise ValueError(f"a and b must be 2-D, not {a_codes.ndim}-D and {b_codes.ndim}-D")
        m, k = a_codes.shape[::-1] if trans_a else a_codes.shape
        k_b, n = b_codes.shape[::-1] if trans_b else b_codes.shape
        if k != k_b:
            raise ValueError(f"inner dimensions differ: op(a) is {m}x{k}, op(b) is {k_b}x{n}")
        out_code, out_fmt = OUTPUTS[out]
        flags = ((Flag.TRANS_A if trans_a else 0) | (Flag.TRANS_B if trans_b else 0)
                 | (Flag.RELU if relu else 0) | out_code << FLAG_OUT_SHIFT)
        if rounding == "stochastic":
            flags |= Flag.ACC_STOCHASTIC | Flag.OUT_STOCHASTIC

        buffers = _Allocator(RING_SLOTS * DESCRIPTOR_BYTES, self.memory_bytes)
        addr_a, stride_a = buffers.matrix(self.link, a_codes)
        addr_b, stride_b = buffers.matrix(self.link, b_codes)
        addr_c = stride_c = 0
        if c is not None:
            c_codes = _codes(c, FP16_169, "c")
            if c_codes.shape != (m, n):
                raise ValueError(f"c must have the result's shape {(m, n)}, not {c_codes.shape}")
            addr_c, stride_c = buffers.matrix(self.link, c_codes)
            flags |= Flag.HAS_C
        out_bytes = out_fmt.width // 8
        stride_d = _round_up(n * out_bytes)
        addr_d = buffers.take(m * stride_d)
        desc = Descriptor(opcode=Opcode.GEMM, flags=int(flags), m=m, n=n, k=k, chunk=int(chunk),
                          scale=int(scale), seed=(self.seed + self.calls) & 0xFFFF_FFFF,
                          addr_a=addr_a, stride_a=stride_a, addr_b=addr_b, stride_b=stride_b,
                          addr_c=addr_c, stride_c=stride_c, addr_d=addr_d, stride_d=stride_d)
        self.calls += 1
        self.submit(desc, timeout_cycles=TIMEOUT_CYCLES_FIXED + TIMEOUT_CYCLES_PER_UNIT * (
            m * n * k // (self.rows * self.cols) + buffers.next))
        raw = np.frombuffer(self.link.read_mem(addr_d, m * stride_d), dtype=np.uint8).reshape(m, stride_d)
        codes = raw[:, :n * out_bytes].copy().view("<u2" if out_bytes == 2 else np.uint8)
        return out_fmt.decode(codes).astype(np.float32)

    def sgd_update(self, w, g, *, lr, momentum=None, v=None, weight_decay=None, scale=0,
                   rounding="stochastic", copy="e5m2"):
        """One SGD step on FP16_169 master weights ``w`` (the UPDATE command, sim/golden/update.py).

        ``w``, ``g`` and ``v`` (the momentum buffer, needed with ``momentum`` and only then) are arrays of
        one shape; they and ``lr``, ``momentum``, ``weight_decay`` must be exactly representable in
        FP16_169. ``g`` is multiplied by ``2**scale`` first (undoing a loss scale); ``rounding`` applies to
        the weight addition. Returns float32 arrays ``(w_new, v_new or None, copy or None)``, ``copy``
        being the new weights rounded to nearest into ``copy`` ("e5m2", "e4m3" or None).
        """
        self.require_update()
        if rounding not in ROUNDINGS:
            raise ValueError(f"rounding must be one of {ROUNDINGS}, not {rounding!r}")
        if copy not in COPIES:
            raise ValueError(f"copy must be one of {', '.join(map(repr, COPIES))}, not {copy!r}")
        if isinstance(scale, bool) or not isinstance(scale, (int, np.integer)) or not -128 <= scale <= 127:
            raise ValueError(f"scale must be an integer from -128 to 127, not {scale!r}")
        if (momentum is None) != (v is None):
            raise ValueError("momentum and the momentum buffer v go together: give both or neither")
        w_codes, g_codes = _codes(w, FP16_169, "w"), _codes(g, FP16_169, "g")
        if g_codes.shape != w_codes.shape:
            raise ValueError(f"g must have the shape of w {w_codes.shape}, not {g_codes.shape}")
        if not 1 <= w_codes.size <= MAX_UPDATE_COUNT:
            raise ValueError(f"w must have 1 to {MAX_UPDATE_COUNT} elements, not {w_codes.size}")
        factors = {}
        for name, value in (("lr", lr), ("momentum", momentum), ("weight_decay", weight_decay)):
            if value is not None and np.ndim(value) != 0:
                raise ValueError(f"{name} must be a scalar, not an array of shape {np.shape(value)}")
            factors[name] = 0 if value is None else int(_codes(value, FP16_169, name))
        out_code, copy_fmt = COPIES[copy]
        flags = out_code << FLAG_OUT_SHIFT
        if rounding == "stochastic":
            flags |= Flag.OUT_STOCHASTIC
        if weight_decay is not None:
            flags |= Flag.WEIGHT_DECAY

        count = w_codes.size
        buffers = _Allocator(RING_SLOTS * DESCRIPTOR_BYTES, self.memory_bytes)
        addr_w, _ = buffers.matrix(self.link, w_codes.reshape(1, count))
        addr_g, _ = buffers.matrix(self.link, g_codes.reshape(1, count))
        addr_v = addr_copy = 0
        if v is not None:
            v_codes = _codes(v, FP16_169, "v")
            if v_codes.shape != w_codes.shape:
                raise ValueError(f"v must have the shape of w {w_codes.shape}, not {v_codes.shape}")
            addr_v, _ = buffers.matrix(self.link, v_codes.reshape(1, count))
            flags |= Flag.MOMENTUM
        if copy_fmt is not None:
            addr_copy = buffers.take(count)
        desc = Descriptor(opcode=Opcode.UPDATE, flags=int(flags), k=count, scale=int(scale),
                          seed=(self.seed + self.calls) & 0xFFFF_FFFF, addr_a=addr_w, stride_a=factors["lr"],
                          addr_b=addr_g, stride_b=factors["momentum"], addr_c=addr_v,
                          stride_c=factors["weight_decay"], addr_d=addr_copy)
        self.calls += 1
        self.submit(desc, timeout_cycles=TIMEOUT_CYCLES_FIXED + TIMEOUT_CYCLES_PER_UNIT * buffers.next)

        def fetch(addr, fmt):
            raw = np.frombuffer(self.link.read_mem(addr, count * fmt.width // 8), dtype=np.uint8)
            codes = raw.view("<u2") if fmt.width == 16 else raw
            return fmt.decode(codes).astype(np.float32).reshape(w_codes.shape)

        return (fetch(addr_w, FP16_169), fetch(addr_v, FP16_169) if v is not None else None,
                fetch(addr_copy, copy_fmt) if copy_fmt is not None else None)

    def submit(self, desc: Descriptor, *, timeout_cycles: int = TIMEOUT_CYCLES_FIXED) -> None:
        """Run one descriptor through the ring and wait for it; raise :class:`DeviceError` on failure."""
        slot = self._ring + (self._head % RING_SLOTS) * DESCRIPTOR_BYTES
        self.link.write_mem(slot, desc.replace(status=0).pack())
        self._head = (self._head + 1) & 0xFFFF
        self.link.write_csr(Reg.RING_HEAD, self._head)
        if not self.link.wait_irq(timeout_cycles):
            raise TimeoutError(f"the device did not complete the command within {timeout_cycles} cycles")
        self.link.write_csr(Reg.IRQ_STATUS, Irq.DONE | Irq.ERROR)
        status = int.from_bytes(self.link.read_mem(slot + 4, 4), "little")
        if not status & STATUS_DONE:
            raise RuntimeError(f"interrupt without completion (status {status:#x})")
        code = ErrorCode(status & 0xFF)
        if code != ErrorCode.OK:
            raise DeviceError(code)


class _PcmTile:
    """The device's PCM tile with the interface of the golden ``PcmTile`` that ``PcmMatrix`` uses: every
    call is PCM_* descriptors, so the golden device and the RTL compute it."""

    def __init__(self, device: Device):
        self.device, self.config, self.step = device, device.pcm_config, 0

    def _timeout(self, vectors: int) -> int:
        c = self.config
        return TIMEOUT_CYCLES_FIXED + TIMEOUT_CYCLES_PER_UNIT * vectors * (c.rows + 2) * c.cols * c.slices

    def program(self, weights, seed: int) -> None:
        """PCM_PROGRAM of the integer weight codes (``rows x cols``)."""
        c, w = self.config, np.asarray(weights)
        if w.shape != (c.rows, c.cols):
            raise ValueError(f"weights must have shape {(c.rows, c.cols)}, not {w.shape}")
        buffers = _Allocator(RING_SLOTS * DESCRIPTOR_BYTES, self.device.memory_bytes)
        addr, stride = buffers.matrix(self.device.link, w.astype("<i2"))
        self.device.submit(Descriptor(opcode=Opcode.PCM_PROGRAM, m=c.rows, n=c.cols, seed=int(seed),
                                      addr_a=addr, stride_a=stride), timeout_cycles=self._timeout(c.rows))
        self.step = 0

    def mvm(self, x, adc_shift: int) -> np.ndarray:
        """PCM_MVMs of the DAC codes ``x`` (``batch x rows``), as many vectors per descriptor as fit the
        device memory; int64 outputs ``batch x cols``."""
        c, x = self.config, np.atleast_2d(np.asarray(x))
        start = RING_SLOTS * DESCRIPTOR_BYTES
        per_vector = _round_up(2 * c.rows) + _round_up(4 * c.cols)
        step = max(1, min(MAX_DIM, (self.device.memory_bytes - start) // per_vector))
        outputs = [np.zeros((0, c.cols), dtype="<i4")]
        for first in range(0, len(x), step):
            part = x[first:first + step]
            buffers = _Allocator(start, self.device.memory_bytes)
            addr_a, stride_a = buffers.matrix(self.device.link, part.astype("<i2"))
            stride_d = _round_up(4 * c.cols)
            addr_d = buffers.take(len(part) * stride_d)
            self.device.submit(Descriptor(opcode=Opcode.PCM_MVM, m=len(part), n=c.cols, k=c.rows,
                                          chunk=int(adc_shift), addr_a=addr_a, stride_a=stride_a, addr_d=addr_d,
                                          stride_d=stride_d), timeout_cycles=self._timeout(len(part)))
            raw = np.frombuffer(self.device.link.read_mem(addr_d, len(part) * stride_d), dtype=np.uint8)
            outputs.append(raw.reshape(len(part), stride_d)[:, :4 * c.cols].copy().view("<i4"))
        return np.concatenate(outputs).astype(np.int64)

    def set_step(self, k: int) -> None:
        """PCM_TIME: the tile is now at time step ``k`` after programming."""
        self.device.submit(Descriptor(opcode=Opcode.PCM_TIME, k=int(k)), timeout_cycles=self._timeout(0))
        self.step = int(k)

    def advance(self, seconds: float) -> None:
        """Move the time since programming forward by ``seconds`` (to the nearest time step)."""
        self.set_step(self.config.step_of_time(float(self.config.time_of_step(self.step)) + seconds))


def _serial_link(port, baud):
    """The ``serial`` backend's link: ``port`` opened at ``baud``, or ``port`` itself if already a link."""
    from .serial import DEFAULT_BAUD, SerialLink
    if isinstance(port, SerialLink):
        if baud is not None:
            raise ValueError("baud applies to a port name, not to an open SerialLink")
        return port
    if not isinstance(port, str):
        raise ValueError(f"the serial backend needs port, a serial device name or a SerialLink, not {port!r}")
    return SerialLink.open(port, baud=DEFAULT_BAUD if baud is None else baud)


class _Allocator:
    """Bump allocation of one call's buffers in device memory, every row padded to whole bus beats."""

    def __init__(self, start: int, limit: int):
        self.next, self.limit = start, limit

    def take(self, nbytes: int) -> int:
        addr = self.next
        self.next = _round_up(addr + nbytes)
        if self.next > self.limit:
            raise ValueError(f"operands need {self.next} bytes of device memory, more than its {self.limit}")
        return addr

    def matrix(self, link, codes: np.ndarray) -> tuple[int, int]:
        """Store a code matrix row by row; returns (address, row stride)."""
        raw = codes.astype("<u2").view(np.uint8) if codes.dtype.itemsize == 2 else codes.astype(np.uint8)
        raw = raw.reshape(codes.shape[0], -1)
        stride = _round_up(raw.shape[1])
        padded = np.zeros((raw.shape[0], stride), dtype=np.uint8)
        padded[:, :raw.shape[1]] = raw
        addr = self.take(padded.size)
        link.write_mem(addr, padded.tobytes())
        return addr, stride
