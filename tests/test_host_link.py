# amaranth: UnusedElaboratable=no
"""The ``rtl`` backend's host link: RtlLink against a small register device, and host_ram.v alone.

Measures and prints start-up, CSR round-trip, backdoor bandwidth and idle simulation speed
(``pytest -s`` shows them). Icarus runs the same tests with smaller sizes.
"""

import hashlib
import os
import signal
import time
from pathlib import Path

import numpy as np
import pytest
from amaranth.hdl import Const, Module, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from fp8train.hw.bus.axi import AxiLiteSignature, AxiSignature
from fp8train.hw.bus.csr import AxiLiteCsr
from fp8train.sim.driver import BusError, LinkTimeout, SimulatorCrashed
from fp8train.sim.driver.rtl import RtlLink

pytestmark = pytest.mark.rtl

SIM = os.environ.get("SIM", "verilator")
ICARUS = SIM == "icarus"
DEVICE_ID = 0xF8A7_7E57


class Regs:
    ID = 0x00           # RO
    SCRATCH = 0x04      # RW
    COUNTER = 0x08      # RO  cycles since reset
    IRQ_DELAY = 0x0C    # RW  cycles from a RING write to irq
    RING = 0x10         # WO  start the countdown
    IRQ_CLEAR = 0x14    # WO  irq low


class TestDevice(wiring.Component):
    """A stand-in for the accelerator with the same top-level ports: the registers of :class:`Regs`
    behind :class:`AxiLiteCsr` (unmapped addresses answer DECERR), ``irq``, and an idle AXI4 master."""
    __test__ = False

    s_axil: In(AxiLiteSignature(addr_width=12, data_width=32))
    m_axi: Out(AxiSignature(addr_width=32, data_width=64, id_width=4))
    irq: Out(1)

    def elaborate(self, platform):
        m = Module()
        m.submodules.csr = csr = AxiLiteCsr(addr_width=12, data_width=32)
        wiring.connect(m, wiring.flipped(self.s_axil), csr.s_axil)
        scratch, counter, delay = Signal(32), Signal(32), Signal(32)
        countdown, armed = Signal(32), Signal()
        m.d.sync += counter.eq(counter + 1)
        with m.If(armed):
            with m.If(countdown == 0):
                m.d.sync += [self.irq.eq(1), armed.eq(0)]
            with m.Else():
                m.d.sync += countdown.eq(countdown - 1)
        regs = {Regs.ID: Const(DEVICE_ID, 32), Regs.SCRATCH: scratch, Regs.COUNTER: counter,
                Regs.IRQ_DELAY: delay, Regs.RING: Const(0, 32), Regs.IRQ_CLEAR: Const(0, 32)}
        mapped = Signal()
        with m.Switch(csr.addr):
            for addr, value in regs.items():
                with m.Case(addr):
                    m.d.comb += [mapped.eq(1), csr.r_data.eq(value)]
        m.d.comb += csr.r_err.eq(~mapped)
        m.d.comb += csr.w_err.eq(~mapped)
        with m.If(csr.w_stb):
            with m.Switch(csr.addr):
                with m.Case(Regs.SCRATCH):
                    m.d.sync += scratch.eq(csr.w_data)
                with m.Case(Regs.IRQ_DELAY):
                    m.d.sync += delay.eq(csr.w_data)
                with m.Case(Regs.RING):
                    m.d.sync += [countdown.eq(delay), armed.eq(1)]
                with m.Case(Regs.IRQ_CLEAR):
                    m.d.sync += self.irq.eq(0)
        return m


def open_link(**kwargs) -> RtlLink:
    return RtlLink.from_component(TestDevice(), "link_dut", **kwargs)


#: Host RAM for the link tests: 1 MiB (Icarus: 256 KiB).
MEM_BYTES = (1 << 18) if ICARUS else (1 << 20)
#: Cycles of the idle-speed measurement.
IDLE_CYCLES = 20_000 if ICARUS else 1_000_000


def report(what: str, value: str) -> None:
    print(f"\n[host link, {SIM}] {what}: {value}", end="")


@pytest.fixture(scope="module")
def link():
    with open_link(ram_bytes=MEM_BYTES) as link:
        yield link


def test_startup_cached():
    open_link(ram_bytes=MEM_BYTES).close()                  # make sure the build is cached
    start = time.monotonic()
    with open_link(ram_bytes=MEM_BYTES) as link:
        opened = time.monotonic() - start
        assert link.read_csr(Regs.ID) == DEVICE_ID
        assert link.info["sim"].lower().startswith(SIM[:4])
    report("start-up with a cached build (constructor to HELLO received)", f"{opened:.2f} s "
           f"(launch to HELLO {link.startup_s:.2f} s)")


def test_csr_round_trip(link):
    assert link.read_csr(Regs.ID) == DEVICE_ID
    for value in (0, 1, 0xFFFF_FFFF, 0xDEAD_BEEF, 0x8000_0001):
        link.write_csr(Regs.SCRATCH, value)
        assert link.read_csr(Regs.SCRATCH) == value
    first = link.read_csr(Regs.COUNTER)
    assert link.read_csr(Regs.COUNTER) > first
    count = 100 if ICARUS else 1000
    start = time.monotonic()
    for index in range(count):
        link.write_csr(Regs.SCRATCH, index)
        assert link.read_csr(Regs.SCRATCH) == index
    per = (time.monotonic() - start) / (2 * count)
    report("CSR access (write or read, round trip)", f"{per * 1e6:.0f} us")


def test_csr_bus_error(link):
    with pytest.raises(BusError, match=r"reading register 0x100: AXI error response 0b11") as error:
        link.read_csr(0x100)
    assert error.value.resp == 3
    with pytest.raises(BusError):
        link.write_csr(0x104, 1)
    assert link.read_csr(Regs.ID) == DEVICE_ID                # still usable


def test_csr_arguments(link):
    with pytest.raises(ValueError, match=r"^register address must be a non-negative multiple of 4"):
        link.read_csr(2)
    with pytest.raises(ValueError, match=r"^value must be a 32-bit unsigned integer"):
        link.write_csr(Regs.SCRATCH, 1 << 32)


def test_irq(link):
    link.write_csr(Regs.IRQ_CLEAR, 1)
    link.write_csr(Regs.IRQ_DELAY, 500)
    before = link.cycles()
    link.write_csr(Regs.RING, 1)
    assert link.wait_irq(10_000)
    waited = link.cycles() - before
    assert 500 <= waited < 520, f"irq after {waited} cycles"
    assert link.wait_irq(0) and link.wait_irq(10)             # level: still high, returns at once
    assert link.cycles() - before == waited
    link.write_csr(Regs.IRQ_CLEAR, 1)
    before = link.cycles()
    assert not link.wait_irq(300)
    assert link.cycles() - before == 300
    assert not link.wait_irq(0)


def test_memory_bulk(link):
    data = np.random.default_rng(2024).integers(0, 256, MEM_BYTES, dtype=np.uint8).tobytes()
    start = time.monotonic()
    link.write_mem(0, data)
    write = time.monotonic() - start
    start = time.monotonic()
    back = link.read_mem(0, MEM_BYTES)
    read = time.monotonic() - start
    assert hashlib.sha256(back).hexdigest() == hashlib.sha256(data).hexdigest()
    mib = MEM_BYTES / (1 << 20)
    report(f"backdoor {MEM_BYTES >> 10} KiB by $readmemh/$writememh", f"write {mib / write:.1f} MiB/s, "
           f"read {mib / read:.1f} MiB/s")


@pytest.mark.parametrize("addr, size", [(0, 1), (5, 3), (7, 2), (8, 8), (13, 100), (3, 1000), (6, 64 * 8)])
def test_memory_unaligned(link, addr, size):
    """Partial words keep their other bytes, through both the VPI and the file path."""
    base = 0x4000
    around = bytes((i * 37 + 11) & 0xFF for i in range(size + 32))
    link.write_mem(base - 16 + addr, around)
    data = bytes((i * 91 + 5) & 0xFF for i in range(size))
    link.write_mem(base + addr, data)
    assert link.read_mem(base + addr, size) == data
    assert link.read_mem(base - 16 + addr, size + 32) == around[:16] + data + around[16 + size:]


def test_memory_arguments(link):
    with pytest.raises(ValueError, match=r"must lie within the host RAM"):
        link.read_mem(MEM_BYTES - 4, 8)
    with pytest.raises(ValueError, match=r"must lie within the host RAM"):
        link.write_mem(-8, b"12345678")
    assert link.read_mem(0, 0) == b""


def test_idle_speed(link):
    before, start = link.cycles(), time.monotonic()
    link.tick(IDLE_CYCLES)
    elapsed = time.monotonic() - start
    assert link.cycles() - before == IDLE_CYCLES
    report("simulated cycles/s, device idle", f"{IDLE_CYCLES / elapsed:,.0f}")


def test_vpi_backdoor_speed():
    """Measurement only: the per-word VPI path for a bulk transfer (vs. the file path above)."""
    size = MEM_BYTES // 4
    data = np.random.default_rng(7).integers(0, 256, size, dtype=np.uint8).tobytes()
    with open_link(ram_bytes=MEM_BYTES, vpi_words=size // 8) as link:
        for label in ("first (handles made)", "again (handles cached)"):
            start = time.monotonic()
            link.write_mem(0, data)
            write = time.monotonic() - start
            start = time.monotonic()
            assert link.read_mem(0, size) == data
            read = time.monotonic() - start
            mib = size / (1 << 20)
            report(f"backdoor {size >> 10} KiB by per-word VPI, {label}",
                   f"write {mib / write:.1f} MiB/s, read {mib / read:.1f} MiB/s")


def test_killed_simulator_raises():
    link = open_link(ram_bytes=MEM_BYTES)
    os.kill(link.pid, signal.SIGKILL)
    start = time.monotonic()
    with pytest.raises(SimulatorCrashed, match=r"was killed by signal 9 while reading register 0x0") as error:
        link.read_csr(Regs.ID)
    assert time.monotonic() - start < 5
    assert error.value.returncode == -signal.SIGKILL
    assert "cocotb" in error.value.log_tail
    with pytest.raises(Exception, match="closed"):
        link.read_csr(Regs.ID)
    link.close()


def test_hung_simulator_raises():
    link = open_link(ram_bytes=MEM_BYTES, timeout=2.0)
    os.kill(link.pid, signal.SIGSTOP)                          # a simulator that stops answering
    start = time.monotonic()
    with pytest.raises(LinkTimeout, match=r"no answer .* while writing register 0x4; it was killed"):
        link.write_csr(Regs.SCRATCH, 1)
    assert time.monotonic() - start < 4
    assert link._proc.poll() is not None                      # gone, not orphaned
    link.close()


def test_two_links_in_sequence():
    for value in (0x1111, 0x2222):
        with open_link(ram_bytes=MEM_BYTES) as link:
            assert link.read_csr(Regs.SCRATCH) == 0           # a fresh device each time
            link.write_csr(Regs.SCRATCH, value)
            link.write_mem(8, value.to_bytes(8, "little"))
            assert link.read_mem(8, 8) == value.to_bytes(8, "little")
            pid = link.pid
        assert link._proc.returncode == 0, f"simulator {pid} exited with {link._proc.returncode}"
        assert not link.run_dir.exists()


def test_cocotb_clock():
    """The other clock source (a separate build): same behaviour, measured idle speed."""
    with open_link(ram_bytes=MEM_BYTES, clock="cocotb") as link:
        assert link.info["clock"] == "cocotb"
        link.write_csr(Regs.SCRATCH, 0xC0C07B)
        assert link.read_csr(Regs.SCRATCH) == 0xC0C07B
        link.write_csr(Regs.IRQ_DELAY, 50)
        link.write_csr(Regs.RING, 1)
        assert link.wait_irq(1000)
        start = time.monotonic()
        for _ in range(200):
            link.read_csr(Regs.SCRATCH)
        per = (time.monotonic() - start) / 200
        link.write_csr(Regs.IRQ_CLEAR, 1)
        before, start = link.cycles(), time.monotonic()
        link.tick(IDLE_CYCLES)
        rate = IDLE_CYCLES / (time.monotonic() - start)
        assert link.cycles() - before == IDLE_CYCLES
    report("cocotb-driven clock", f"CSR read {per * 1e6:.0f} us, {rate:,.0f} cycles/s idle")


def test_host_ram_axi():
    """host_ram.v on its own under cocotbext-axi's AxiMaster (sim/driver/host_ram_bench.py)."""
    from cocotb_tools.runner import get_results, get_runner

    from fp8train.sim.benches.streams import PARAMS_ENV
    from fp8train.sim.driver.build import TIMESCALE, cached_build
    from fp8train.sim.driver.top import HOST_RAM
    import json

    words = 1024
    build_dir = cached_build("host_ram", {"host_ram.v": HOST_RAM.read_text()}, "host_ram", sim=SIM,
                             build_args=["-Wno-fatal"] if SIM == "verilator" else [],
                             parameters={"WORDS": words})
    test_dir = build_dir / "runs" / "axi"
    results = test_dir / "results.xml"
    try:
        get_runner(SIM).test(test_module="fp8train.sim.driver.host_ram_bench", hdl_toplevel="host_ram",
                             hdl_toplevel_lang="verilog", build_dir=build_dir, test_dir=test_dir,
                             results_xml=str(results), timescale=TIMESCALE,
                             extra_env={PARAMS_ENV: json.dumps({"words": words, "seed": 1})})
    except SystemExit:
        pass
    tests, failed = get_results(results)
    assert tests == 4 and failed == 0, f"{failed} of {tests} host_ram tests failed; see {test_dir}"


def test_simulator_without_server_raises(monkeypatch):
    """The simulator exits 0 when the test module fails to import: only the handshake tells."""
    import fp8train.sim.driver.rtl as rtl
    monkeypatch.setattr(rtl, "_SERVER", "fp8train.sim.driver.no_such_module")
    start = time.monotonic()
    with pytest.raises(SimulatorCrashed, match=r"exited with status \d+ while starting") as error:
        open_link(ram_bytes=MEM_BYTES)
    assert time.monotonic() - start < 30
    assert "no_such_module" in error.value.log_tail


def test_no_orphan_when_the_host_dies(tmp_path):
    """PR_SET_PDEATHSIG: killing the host process takes its simulator with it."""
    import subprocess
    import sys
    script = (f"import sys; sys.path.insert(0, {str(Path(__file__).parent)!r}); "
              "import test_host_link as t; link = t.open_link(ram_bytes=t.MEM_BYTES); "
              "print(link.pid, flush=True); import time; time.sleep(60)")
    host = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        pid = int(host.stdout.readline())
        os.kill(pid, 0)                                        # the simulator runs
    finally:
        host.kill()
        host.wait()
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)
    os.kill(pid, signal.SIGKILL)
    pytest.fail(f"simulator {pid} outlived its host")
