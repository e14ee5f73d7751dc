"""The ``rtl`` backend's transport: a simulator running ``sim_top`` behind a socket (DESIGN.md §5, §8).

:class:`RtlLink` wraps the device's Verilog in :func:`~fp8train.sim.driver.top.sim_top` (host RAM and
clock), builds it once (cached under ``build/rtl/``), launches the simulator binary directly with one
end of a ``socketpair`` inherited, and waits for the ``HELLO`` of the cocotb server
(:mod:`fp8train.sim.driver.server`) inside. Every request then runs in lock-step: the simulation only
moves while a request is being served.

Failures are exceptions, never hangs: each request has a wall-clock deadline, after which the
simulator is killed (:class:`~fp8train.sim.driver.link.LinkTimeout`); a simulator that exits, or never
says hello, raises :class:`~fp8train.sim.driver.link.SimulatorCrashed`; both carry the tail of the
simulator's log. The simulator gets ``PR_SET_PDEATHSIG`` so it dies with this process.
"""

import ctypes
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from fp8train.sim.driver.build import cached_build, log_tail, simulator
from fp8train.sim.driver.link import BusError, HostLink, LinkError, LinkTimeout, SimulatorCrashed
from fp8train.sim.driver.top import CLOCK_NS, CLOCKS, ENV_CONFIG, ENV_FD, HOST_RAM, TOP, sim_top
from fp8train.sim.driver.wire import REPLY, VERSION, Op, Setting, Status, pack_request

__all__ = ["RtlLink", "SimulatorProcess", "Setting"]

_SERVER = "fp8train.sim.driver.server"
_PR_SET_PDEATHSIG = 1
_TIMING_ARGS = ["--timing", "-CFLAGS", "-std=gnu++20", "-CFLAGS", "-fcoroutines"]  # g++ 12: DESIGN §8

try:
    _libc = ctypes.CDLL(None, use_errno=True)
except OSError:          # not Linux: no parent-death signal
    _libc = None


def _die_with_parent(parent: int):
    def preexec():
        if _libc is not None:
            _libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != parent:       # the parent died before prctl took effect
            os._exit(1)
    return preexec


class SimulatorProcess:
    """A simulator binary with one end of a ``socketpair`` inherited and a cocotb ``server`` module
    loaded, as ``cocotb_tools.runner`` would start it: launch, log, kill, crash report and clean close.
    Shared by :class:`RtlLink` and the serial backend's simulated board
    (:class:`~fp8train.sim.driver.uart_sim.SimUart`); a subclass sets ``sim``, ``build_dir`` and ``keep``,
    then calls :meth:`_new_run` and :meth:`_launch`."""

    _sock = None
    _proc = None
    _closed = False

    def _new_run(self) -> None:
        """A fresh run directory (``sim.log``, transfer files, waves) under the build."""
        runs = self.build_dir / "runs"
        runs.mkdir(exist_ok=True)
        self.run_dir = Path(tempfile.mkdtemp(prefix=f"{os.getpid()}-", dir=runs))
        self.log_path = self.run_dir / "sim.log"

    def _command(self, plusarg: str, waves: bool) -> list[str]:
        if self.sim == "verilator":
            return [str(self.build_dir / TOP), *(["--trace"] if waves else []), plusarg]
        import cocotb_tools.config
        return ["vvp", "-m", str(cocotb_tools.config.lib_entry("vpi", "icarus")),
                str(self.build_dir / "sim.vvp"), plusarg, "-fst" if waves else "-none"]

    def _environment(self, server: str, config: dict, fd: int) -> dict:
        """What ``cocotb_tools.runner`` sets for a test run (``_set_env_common``/``_set_env_test``)."""
        import cocotb_tools.config
        import find_libpython
        env = dict(os.environ)
        env.pop("COCOTB_TEST_FILTER", None)
        env["PATH"] = env.get("PATH", "") + os.pathsep + str(cocotb_tools.config.libs_dir)
        env["PYTHONPATH"] = os.pathsep.join(sys.path)
        env["PYGPI_PYTHON_BIN"] = sys.executable
        if "GPI_USERS" not in env:
            libpython = env.get("LIBPYTHON_LOC") or find_libpython.find_libpython()
            if libpython is None:
                raise LinkError("libpython not found (set LIBPYTHON_LOC)")
            env["GPI_USERS"] = ";".join([libpython, cocotb_tools.config.pygpi_entry_point()])
        env["COCOTB_TOPLEVEL"] = TOP
        env["COCOTB_TEST_MODULES"] = server
        env["TOPLEVEL_LANG"] = "verilog"
        env["COCOTB_RESULTS_FILE"] = str(self.run_dir / "results.xml")
        if self.sim == "verilator":
            env.setdefault("COCOTB_TRUST_INERTIAL_WRITES", "1")
        env[ENV_FD] = str(fd)
        env[ENV_CONFIG] = json.dumps(config)
        return env

    def _launch(self, server: str, config: dict, plusarg: str, waves: bool = False) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            with open(self.log_path, "wb") as log:
                self._proc = subprocess.Popen(
                    self._command(plusarg, waves), cwd=self.run_dir,
                    env=self._environment(server, config, theirs.fileno()),
                    stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                    pass_fds=[theirs.fileno()], preexec_fn=_die_with_parent(os.getpid()),
                    start_new_session=True)
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
        self._sock = ours

    @property
    def pid(self) -> int:
        return self._proc.pid

    def log_tail(self, lines: int = 40) -> str:
        """The last ``lines`` lines of the simulator's log."""
        return log_tail(self.log_path, lines)

    def _kill(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            try:
                os.kill(self._proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self._proc.wait()
        if self._sock is not None:
            self._sock.close()
        self._closed = True

    def _crashed(self, doing: str) -> SimulatorCrashed:
        try:
            code = self._proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            code = None
        self._kill()
        how = "did not exit" if code is None else (
            f"was killed by signal {-code}" if code < 0 else f"exited with status {code}")
        return SimulatorCrashed(f"{self.sim} simulator (pid {self._proc.pid}) {how} while {doing}; "
                                f"run directory {self.run_dir}", code, self.log_tail())

    def close(self) -> None:
        """End the session (closing the socket ends the simulation); idempotent. The run directory
        is removed after a clean exit unless ``keep``."""
        if self._closed:
            return
        self._closed = True
        if self._sock is not None:
            self._sock.close()
        if self._proc is not None:
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.kill(self._proc.pid, signal.SIGKILL)
                self._proc.wait()
            if not self.keep and self._proc.returncode == 0:
                shutil.rmtree(self.run_dir, ignore_errors=True)

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass


class RtlLink(SimulatorProcess, HostLink):
    """A device's Verilog under a simulator, driven over the host protocol.

    Parameters
    ----------
    verilog_sources : sequence of paths
        The device's Verilog files; one of them defines ``toplevel``.
    toplevel : str
        The device module: ``clk``, ``rst``, ``s_axil_*``, optionally ``m_axi_*`` (64-bit) and ``irq``.
    sim : "verilator" | "icarus", optional
        Default ``$SIM``, else Verilator.
    clock : "internal" | "cocotb"
        Clock generated in the wrapper (Verilator ``--timing``; the faster) or by cocotb.
    ram_bytes : int
        Host RAM size (a multiple of 8; 1 MiB by default).
    read_latency, write_latency : int
        Initial host RAM latencies in cycles (also settable at run time: :meth:`set_ram`).
    timeout : float
        Wall-clock seconds a request may take (``wait_irq``/``tick`` get ``timeout_cycles /
        min_cycle_rate`` more).
    start_timeout : float
        Seconds from launch to ``HELLO`` (the build, if not cached, comes before and is not counted).
    vpi_words : int
        Memory transfers of up to this many 64-bit words use per-word VPI handles, larger ones a
        ``$readmemh``/``$writememh`` file.
    waves : bool
        Record waves (Verilator VCD, Icarus FST) in the run directory.
    name : str, optional
        Prefix of the build directory (default: ``toplevel``).

    Attributes
    ----------
    info : dict
        The server's ``HELLO`` (simulator name and version, clock, RAM size).
    pid : int
        The simulator's process ID.
    run_dir : Path
        The session's directory (``sim.log``, transfer file, waves); removed by a clean
        :meth:`close` unless ``keep=True`` was given.
    startup_s : float
        Seconds from launch to ``HELLO``.
    """

    #: Slowest simulation speed (cycles per wall second) assumed when extending a deadline for a
    #: wait of many cycles.
    min_cycle_rate = 1000

    def __init__(self, verilog_sources: Sequence[str | os.PathLike], toplevel: str, *,
                 sim: str | None = None, clock: str = "internal", ram_bytes: int = 1 << 20,
                 read_latency: int = 0, write_latency: int = 0, timeout: float = 60.0,
                 start_timeout: float = 120.0, vpi_words: int = 128, waves: bool = False,
                 name: str | None = None, keep: bool = False):
        self.sim = simulator(sim)
        if clock not in CLOCKS:
            raise ValueError(f"clock must be one of {', '.join(map(repr, CLOCKS))}, not {clock!r}")
        if not isinstance(ram_bytes, int) or ram_bytes <= 0 or ram_bytes % 8:
            raise ValueError(f"ram_bytes must be a positive multiple of 8, not {ram_bytes!r}")
        if not isinstance(vpi_words, int) or vpi_words < 1:
            raise ValueError(f"vpi_words must be a positive integer, not {vpi_words!r}")
        self.timeout = timeout
        self.ram_bytes = ram_bytes
        self.keep = keep

        sources = {}
        for path in verilog_sources:
            path = Path(path)
            sources[path.name] = path.read_text()
        if len(sources) != len(verilog_sources):
            raise ValueError("verilog_sources must have distinct file names")
        sources["host_ram.v"] = HOST_RAM.read_text()
        sources[f"{TOP}.v"] = sim_top("\n".join(sources.values()), toplevel, clock=clock,
                                     ram_words=ram_bytes // 8, read_latency=read_latency,
                                     write_latency=write_latency)
        build_args = ["-Wno-fatal"] + (_TIMING_ARGS if clock == "internal" else []) \
            if self.sim == "verilator" else []
        self.build_dir = cached_build(name or toplevel, sources, TOP, sim=self.sim,
                                      build_args=build_args, waves=waves)

        self._new_run()
        xfer = self.run_dir / "xfer.hex"
        config = {"clock": clock, "clock_ns": CLOCK_NS, "ram_bytes": ram_bytes,
                  "vpi_words": vpi_words, "xfer_file": str(xfer)}
        self._launch(_SERVER, config, f"+host_ram_file={xfer}", waves)
        self.startup_s = 0.0
        start = time.monotonic()
        status, version, payload = self._reply(start + start_timeout, "starting")
        self.startup_s = time.monotonic() - start
        if status != Status.OK or version != VERSION:
            self._kill()
            raise LinkError(f"the simulator said hello with status {status}, version {version} "
                            f"(expected protocol version {VERSION})", self.log_tail())
        self.info = json.loads(payload)

    @classmethod
    def from_component(cls, component, name: str, **kwargs) -> "RtlLink":
        """An :class:`RtlLink` to an Amaranth component, converted with
        :func:`fp8train.hw.units.to_verilog` as module ``name``."""
        from fp8train.hw.units import to_verilog
        from fp8train.toolchain import build_path
        import hashlib
        verilog = to_verilog(component, name, emit_src=False)
        digest = hashlib.sha256(verilog.encode()).hexdigest()[:12]
        path = build_path("rtl", "src", digest, f"{name}.v")
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_text(verilog)
            tmp.replace(path)
        return cls([path], name, **kwargs)

    # ---- framing ------------------------------------------------------------------------------
    def _recv(self, nbytes: int, deadline: float, doing: str) -> bytes:
        buf = bytearray(nbytes)
        view = memoryview(buf)
        got = 0
        sock = self._sock
        while got < nbytes:
            left = deadline - time.monotonic()
            if left <= 0:
                self._kill()
                raise LinkTimeout(f"no answer from the {self.sim} simulator (pid {self._proc.pid}) "
                                  f"while {doing}; it was killed; run directory {self.run_dir}",
                                  self.log_tail())
            sock.settimeout(min(left, 0.5))
            try:
                n = sock.recv_into(view[got:])
            except socket.timeout:
                if self._proc.poll() is not None:
                    raise self._crashed(doing) from None
                continue
            except OSError:
                raise self._crashed(doing) from None
            if n == 0:
                raise self._crashed(doing)
            got += n
        return bytes(buf)

    def _reply(self, deadline: float, doing: str) -> tuple[int, int, bytes]:
        status, length, value = REPLY.unpack(self._recv(REPLY.size, deadline, doing))
        payload = self._recv(length, deadline, doing) if length else b""
        return status, value, payload

    def _call(self, op: Op, addr: int = 0, arg: int = 0, payload: bytes = b"", *,
              extra_s: float = 0.0, doing: str = "") -> tuple[int, bytes]:
        if self._closed:
            raise LinkError("the link is closed")
        doing = doing or op.name
        deadline = time.monotonic() + self.timeout + extra_s
        try:
            self._sock.settimeout(self.timeout + extra_s)
            self._sock.sendall(pack_request(op, addr, arg, payload))
        except socket.timeout:
            self._kill()
            raise LinkTimeout(f"the {self.sim} simulator did not take a request while {doing}; "
                              f"it was killed", self.log_tail()) from None
        except OSError:
            raise self._crashed(doing) from None
        status, value, data = self._reply(deadline, doing)
        if status == Status.OK:
            return value, data
        if status == Status.BUS_ERROR:
            raise BusError(f"{doing}: AXI error response {value:#04b}", value)
        raise LinkError(f"{doing}: the simulator refused the request ({Status(status).name}): "
                        f"{data.decode(errors='replace')}")

    # ---- HostLink -----------------------------------------------------------------------------
    def read_csr(self, addr: int) -> int:
        _check_reg(addr)
        return self._call(Op.READ_CSR, addr, doing=f"reading register {addr:#x}")[0]

    def write_csr(self, addr: int, value: int) -> None:
        _check_reg(addr)
        if not isinstance(value, int) or not 0 <= value < 1 << 32:
            raise ValueError(f"value must be a 32-bit unsigned integer, not {value!r}")
        self._call(Op.WRITE_CSR, addr, value, doing=f"writing register {addr:#x}")

    def read_mem(self, addr: int, nbytes: int) -> bytes:
        self._check_span(addr, nbytes)
        return self._call(Op.READ_MEM, addr, nbytes, doing=f"reading {nbytes} bytes at {addr:#x}")[1]

    def write_mem(self, addr: int, data: bytes) -> None:
        data = bytes(data)
        self._check_span(addr, len(data))
        self._call(Op.WRITE_MEM, addr, 0, data, doing=f"writing {len(data)} bytes at {addr:#x}")

    def wait_irq(self, timeout_cycles: int) -> bool:
        _check_cycles(timeout_cycles, "timeout_cycles")
        value, _ = self._call(Op.WAIT_IRQ, 0, timeout_cycles, extra_s=timeout_cycles / self.min_cycle_rate,
                              doing=f"waiting up to {timeout_cycles} cycles for irq")
        return bool(value)

    # ---- simulation only ----------------------------------------------------------------------
    def tick(self, cycles: int) -> None:
        """Let the clock run for ``cycles`` cycles."""
        _check_cycles(cycles, "cycles")
        self._call(Op.TICK, 0, cycles, extra_s=cycles / self.min_cycle_rate, doing=f"running {cycles} cycles")

    def cycles(self) -> int:
        """Clock cycles simulated since the simulator started (reset included)."""
        return self._call(Op.CYCLES)[0]

    def set_ram(self, setting: Setting, value: int) -> None:
        """Change a run-time setting of the host RAM model: read/write latency in cycles, or the
        error range ``[ERR_BASE, ERR_LIMIT)`` answered with ``ERR_RESP`` (2 SLVERR, 3 DECERR)."""
        self._call(Op.SET, Setting(setting), value, doing=f"setting {Setting(setting).name}")

    def _check_span(self, addr: int, nbytes: int) -> None:
        if not isinstance(addr, int) or not isinstance(nbytes, int) or addr < 0 or nbytes < 0 \
                or addr + nbytes > self.ram_bytes:
            raise ValueError(f"[{addr!r}, +{nbytes!r}) must lie within the host RAM "
                             f"({self.ram_bytes:#x} bytes)")


def _check_reg(addr: int) -> None:
    if not isinstance(addr, int) or addr < 0 or addr % 4:
        raise ValueError(f"register address must be a non-negative multiple of 4, not {addr!r}")


def _check_cycles(cycles: int, name: str) -> None:
    if not isinstance(cycles, int) or cycles < 0:
        raise ValueError(f"{name} must be a non-negative integer, not {cycles!r}")
