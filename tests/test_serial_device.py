# amaranth: UnusedElaboratable=no
"""``Device(backend="serial")`` on a simulated board: the accelerator, its on-chip memory and the UART
bridge under Verilator or Icarus, a UART model on the pins, and the host's SerialLink through a byte pipe
(``fp8train.sim.driver.uart_sim``). The same user code as on the golden backend, bit-exact; malformed
frames are rejected and never executed; bit errors on the line in both directions are survived.
"""

import os
import struct
import time

import numpy as np
import pytest

from fp8train import Device
from fp8train.formats import E5M2, FP16_169
from fp8train.frames import SYNC_REPLY, Op, Status, crc16, pack_request
from fp8train.serial import SerialLink
from fp8train.sim.driver.link import BusError
from fp8train.sim.driver.uart_sim import SimUart

pytestmark = pytest.mark.rtl

ICARUS = os.environ.get("SIM") == "icarus"
#: One build per simulator: the smallest accelerator, 8 KiB of memory, 8 (Icarus: 4) cycles per bit.
BOARD = dict(rows=1, cols=1, k_block=8, max_chunk=64, mem_size=1 << 13, divisor=4 if ICARUS else 8,
             max_words=64)
#: Simulated cycles per wall second assumed for time-outs (well below what either simulator reaches).
CYCLE_RATE = 1000 if ICARUS else 5000


def _link(uart, **kwargs):
    """A SerialLink whose time-outs follow the simulation's speed: a byte takes 10 * divisor cycles."""
    return SerialLink(uart, clock_hz=CYCLE_RATE, timeout=8.0 if ICARUS else 3.0,
                      baud=CYCLE_RATE // BOARD["divisor"], **kwargs)


def _e5m2(rng, shape):
    return E5M2.decode(rng.integers(0, 256, size=shape, dtype=np.uint8) & 0xFB).astype(np.float32)


def _check(got, want, what):
    bad = np.flatnonzero(~((got == want) | (np.isnan(got) & np.isnan(want))))
    assert bad.size == 0, f"{what}: {bad.size} mismatches; first at {bad[0]}: {got.flat[bad[0]]} != {want.flat[bad[0]]}"


def _workload(device, rng, shapes):
    """The user code: GEMMs of ``shapes`` with assorted options, then one SGD step."""
    results = []
    for index, (m, n, k) in enumerate(shapes):
        a, b = _e5m2(rng, (k, m) if index % 2 else (m, k)), _e5m2(rng, (n, k) if index % 3 == 1 else (k, n))
        results.append(device.matmul(a, b, trans_a=bool(index % 2), trans_b=index % 3 == 1,
                                     out="e5m2" if index % 2 else "fp16",
                                     rounding="stochastic" if index % 3 == 2 else "nearest", chunk=4))
    w = (rng.standard_normal(24) * 0.5).astype(np.float16).astype(np.float32)
    g = (rng.standard_normal(24) * 0.1).astype(np.float16).astype(np.float32)
    w, g = (FP16_169.decode(FP16_169.encode(x.astype(np.float64))) for x in (w, g))
    results.extend(x for x in device.sgd_update(w, g, lr=0.125) if x is not None)
    return results


def _compare(serial_device, seed, shapes):
    golden = Device("golden", seed=serial_device.seed, memory_bytes=serial_device.memory_bytes)
    golden.calls = serial_device.calls                  # the stochastic-rounding seeds follow the calls
    got = _workload(serial_device, np.random.default_rng(seed), shapes)
    want = _workload(golden, np.random.default_rng(seed), shapes)
    for index, (g, w) in enumerate(zip(got, want)):
        _check(g, w, f"result {index}")


def _reply(uart, timeout):
    """The next reply frame on the raw stream: (status, seq, words)."""
    buf = bytearray()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        uart.timeout = 0.2
        buf += uart.read(1)
        start = buf.find(SYNC_REPLY)
        if start < 0 or len(buf) - start < 4:
            continue
        end = start + 4 + 4 * buf[start + 3] + 2
        if len(buf) >= end:
            assert crc16(bytes(buf[start + 1:end])) == 0, f"reply {bytes(buf[start:end]).hex()} fails its CRC"
            status, seq, count = buf[start + 1] & 0x7F, buf[start + 2], buf[start + 3]
            if status != Status.IRQ:
                return status, seq, list(struct.unpack_from(f"<{count}I", buf, start + 4))
            del buf[:end]
    raise AssertionError(f"no reply within {timeout} s (got {bytes(buf).hex()})")


SHAPES = [(2, 3, 5)] if ICARUS else [(3, 5, 9), (8, 8, 8), (1, 7, 16), (5, 2, 3)]


def test_device_over_serial_matches_golden():
    """Identical user code on the simulated board and on the golden model; then malformed frames, each
    rejected with its error reply and not executed, and the link (and the device) still exact."""
    with SimUart(**BOARD) as uart:
        link = _link(uart)
        device = Device("serial", port=link, seed=11)
        _compare(device, 5, SHAPES)

        probe = 0x1F00                                  # a word no command uses
        link.write_mem(probe, b"\x11\x22\x33\x44")
        wait = 40 if ICARUS else 5
        good = pack_request(Op.WRITE_MEM, 200, probe, [0xDEADBEEF])
        bad_crc = good[:-1] + bytes([good[-1] ^ 0x10])
        uart.write(bad_crc)
        assert _reply(uart, wait)[:2] == (Status.BAD_CRC, 200)
        uart.write(good[:9])                            # truncated: the line falls quiet mid-frame
        assert _reply(uart, wait)[:2] == (Status.TRUNCATED, 200)
        oversized = pack_request(Op.WRITE_MEM, 201, probe, list(range(BOARD["max_words"] + 1)))
        uart.write(oversized)
        assert _reply(uart, wait)[:2] == (Status.BAD_LENGTH, 201)
        uart.write(bytes([0xA5, 0x37]) + bytes(8))     # unknown op
        assert _reply(uart, wait)[0] == Status.BAD_OP
        uart.write(pack_request(Op.READ_MEM, 202, 0x1FFC, count=2))   # runs past the memory's end
        assert _reply(uart, wait)[:2] == (Status.BAD_ADDRESS, 202)
        assert link.read_mem(probe, 4) == b"\x11\x22\x33\x44", "a rejected frame was executed"

        uart.write(pack_request(Op.WRITE_MEM, 203, probe, [0x01020304]))
        assert _reply(uart, wait)[:2] == (Status.OK, 203)
        uart.write(pack_request(Op.WRITE_MEM, 203, probe, [0x05060708]))    # a retry: not executed again
        assert _reply(uart, wait)[:2] == (Status.OK, 203)
        assert link.read_mem(probe, 4) == bytes([4, 3, 2, 1]), "a repeated write was executed twice"
        with pytest.raises(BusError, match=r"AXI error response 0b11$"):
            link.read_csr(0xFFC)                         # no register there: DECERR
        assert link.irq_frames > 0, "no IRQ frame arrived"
        _compare(device, 6, SHAPES[:1])
        device.close()


def test_device_over_noisy_serial_matches_golden():
    """Bits inverted on the line in both directions: frames are rejected or lost, requests retried, and
    every result still bit-exact."""
    with SimUart(**BOARD, flip_rx=3e-4, flip_tx=3e-4, seed=3) as uart:
        link = _link(uart, max_words=16)
        device = Device("serial", port=link, seed=12)
        _compare(device, 7, SHAPES)
        print(f"retried {link.retried} requests: {link.failures}")
        assert link.retried > 0, "no bit error hit a frame: raise the rate"
        device.close()


def test_icebreaker_accelerator_runs_gemms_and_refuses_update():
    """The iCEBreaker's system (compact accelerator without an update unit, host memory in SPRAM): GEMMs with
    stochastic rounding bit-exact over the serial link, the device reports no UPDATE in CONFIG_OPCODES, and
    the driver refuses ``sgd_update`` with a clear error."""
    import fp8train
    from fp8train.boards.tops import BOARDS
    from fp8train.protocol import Opcode

    icebreaker = BOARDS["icebreaker"]
    with SimUart(**BOARD, update_lanes=icebreaker.update_lanes, serial_keys=icebreaker.serial_keys,
                 compact=icebreaker.compact, spram=True) as uart:
        device = Device("serial", port=_link(uart), seed=13)
        assert device.opcodes == {Opcode.FENCE, Opcode.GEMM}
        golden = Device("golden", seed=13, memory_bytes=device.memory_bytes)
        rng = np.random.default_rng(8)
        for m, n, k in SHAPES:
            a, b = _e5m2(rng, (m, k)), _e5m2(rng, (k, n))
            _check(device.matmul(a, b, chunk=4, rounding="stochastic"),
                   golden.matmul(a, b, chunk=4, rounding="stochastic"), f"GEMM {m}x{n}x{k}")
        w = np.zeros(8, dtype=np.float32)
        with pytest.raises(fp8train.DeviceError, match=r"^device error BAD_OPCODE .*no update unit"):
            device.sgd_update(w, w, lr=0.125)
        device.close()
