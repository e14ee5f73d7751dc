"""The PCM commands on the golden device: descriptor checks (each error code once, in the hardware's
order), what PCM_PROGRAM / PCM_MVM / PCM_TIME compute (against the golden ``PcmTile`` run directly), and
the tile's state after a failure."""

import numpy as np
import pytest

from fp8train.protocol import (PCM_CONFIG_FIELDS, Ctrl, Descriptor, ErrorCode, Opcode, Reg, pack_pcm_config,
                               unpack_pcm_config)
from fp8train.sim.golden.device import DeviceConfig, GoldenDevice, check
from fp8train.sim.golden.pcm import PcmConfig, PcmTile

TILE = PcmConfig(rows=5, cols=3, slices=2)
CONFIG = DeviceConfig(pcm=TILE)
WINDOW = (0, 1 << 16)
W, X, Y = 0x1000, 0x2000, 0x3000
SEED = 0x9C3


def program(**fields):
    return Descriptor(**(dict(opcode=Opcode.PCM_PROGRAM, m=TILE.rows, n=TILE.cols, seed=77, addr_a=W,
                              stride_a=8) | fields))


def mvm(**fields):
    return Descriptor(**(dict(opcode=Opcode.PCM_MVM, m=4, n=TILE.cols, k=TILE.rows, chunk=12, addr_a=X,
                              stride_a=16, addr_d=Y, stride_d=16) | fields))


def time(**fields):
    return Descriptor(**(dict(opcode=Opcode.PCM_TIME, k=40) | fields))


@pytest.mark.parametrize("desc, code", [
    (program(), ErrorCode.OK), (mvm(), ErrorCode.OK), (time(), ErrorCode.OK), (time(k=0), ErrorCode.OK),
    (program(flags=1), ErrorCode.RESERVED_BITS),
    (program(k=1), ErrorCode.RESERVED_BITS), (program(chunk=1), ErrorCode.RESERVED_BITS),
    (program(addr_d=Y), ErrorCode.RESERVED_BITS), (program(stride_b=8), ErrorCode.RESERVED_BITS),
    (mvm(seed=1), ErrorCode.RESERVED_BITS), (mvm(scale=-1), ErrorCode.RESERVED_BITS),
    (mvm(addr_c=8), ErrorCode.RESERVED_BITS), (time(m=1), ErrorCode.RESERVED_BITS),
    (time(addr_a=W), ErrorCode.RESERVED_BITS), (time(seed=3), ErrorCode.RESERVED_BITS),
    (program(m=TILE.rows - 1), ErrorCode.BAD_DIMENSION), (program(n=TILE.cols + 1), ErrorCode.BAD_DIMENSION),
    (mvm(m=0), ErrorCode.BAD_DIMENSION), (mvm(k=TILE.rows - 1), ErrorCode.BAD_DIMENSION),
    (mvm(n=1), ErrorCode.BAD_DIMENSION), (mvm(chunk=TILE.acc_bits + 1), ErrorCode.BAD_DIMENSION),
    (mvm(chunk=TILE.acc_bits), ErrorCode.OK), (time(k=TILE.time_steps), ErrorCode.BAD_DIMENSION),
    (time(k=TILE.time_steps - 1), ErrorCode.OK),
    (program(addr_a=W + 4), ErrorCode.MISALIGNED), (program(stride_a=4), ErrorCode.MISALIGNED),
    (mvm(stride_a=8), ErrorCode.MISALIGNED), (mvm(stride_d=12), ErrorCode.MISALIGNED),
    (mvm(addr_d=Y + 2), ErrorCode.MISALIGNED),
    (program(addr_a=WINDOW[1] - 32), ErrorCode.OUT_OF_WINDOW), (program(addr_a=WINDOW[1] - 40), ErrorCode.OK),
    (mvm(addr_d=WINDOW[1] - 56), ErrorCode.OUT_OF_WINDOW), (mvm(addr_d=WINDOW[1] - 64), ErrorCode.OK),
    (mvm(m=3, stride_d=16, k=TILE.rows + 1), ErrorCode.BAD_DIMENSION),
    (program(m=0, flags=1), ErrorCode.RESERVED_BITS),                # reserved before dimensions
    (mvm(m=0, addr_a=X + 1), ErrorCode.BAD_DIMENSION),               # dimensions before alignment
    (mvm(stride_a=4, addr_d=WINDOW[1]), ErrorCode.MISALIGNED),        # alignment before the window
], ids=lambda v: getattr(v, "name", None))
def test_check(desc, code):
    assert check(desc, True, CONFIG, WINDOW) == code


@pytest.mark.parametrize("opcode", [Opcode.PCM_PROGRAM, Opcode.PCM_MVM, Opcode.PCM_TIME])
def test_without_a_tile_the_opcodes_are_refused(opcode):
    desc = {Opcode.PCM_PROGRAM: program(), Opcode.PCM_MVM: mvm(), Opcode.PCM_TIME: time()}[opcode]
    assert check(desc, True, DeviceConfig(), WINDOW) == ErrorCode.BAD_OPCODE
    assert check(desc, False, CONFIG, WINDOW) == ErrorCode.RESERVED_BITS


def test_config_registers():
    dev = GoldenDevice(1 << 12, CONFIG)
    words = {reg: dev.read_csr(reg) for reg in PCM_CONFIG_FIELDS}
    assert PcmConfig(**unpack_pcm_config(words)) == TILE
    assert words[Reg.CONFIG_PCM] == TILE.rows | TILE.cols << 12 | TILE.slices << 24
    plain = GoldenDevice(1 << 12, DeviceConfig())
    assert all(plain.read_csr(reg) == 0 for reg in PCM_CONFIG_FIELDS)
    assert unpack_pcm_config(pack_pcm_config(None)) is None


def test_config_checks():
    with pytest.raises(ValueError, match=r"^the PCM tile's 34-bit outputs do not fit the descriptor's 32-bit "):
        DeviceConfig(pcm=PcmConfig(rows=2, cols=2, slices=4, adc_bits=24))
    with pytest.raises(ValueError, match=r"^PCM tile rows 4096 does not fit its 12-bit register field$"):
        DeviceConfig(pcm=PcmConfig(rows=4096, cols=2))
    with pytest.raises(TypeError, match=r"^pcm must be a PcmConfig or None, not dict$"):
        DeviceConfig(pcm={"rows": 2})
    assert Opcode.PCM_MVM in CONFIG.opcodes and Opcode.PCM_MVM not in DeviceConfig().opcodes


class Ring:
    """A golden device with a 16-slot ring at 0 and the PCM tile; ``run`` returns the completion codes."""

    def __init__(self):
        self.dev = GoldenDevice(1 << 16, CONFIG)
        self.head = 0
        for reg, value in ((Reg.RING_BASE, 0), (Reg.RING_SIZE, 16), (Reg.WINDOW_BASE, WINDOW[0]),
                           (Reg.WINDOW_LIMIT, WINDOW[1]), (Reg.CTRL, Ctrl.ENABLE)):
            self.dev.write_csr(reg, value)

    def run(self, *descs):
        slots = []
        for desc in descs:
            slots.append((self.head % 16) * 64)
            self.dev.write_mem(slots[-1], desc.pack())
            self.head += 1
        self.dev.write_csr(Reg.RING_HEAD, self.head)
        return [ErrorCode(self.dev.read_mem(slot + 4, 1)[0]) for slot in slots]

    def rows(self, addr, stride, values, dtype):
        for i, row in enumerate(values):
            self.dev.write_mem(addr + i * stride, np.asarray(row).astype(dtype).tobytes())

    def outputs(self, batch, stride=16):
        raw = np.frombuffer(self.dev.read_mem(Y, batch * stride), np.uint8).reshape(batch, stride)
        return raw[:, :4 * TILE.cols].copy().view("<i4").astype(np.int64)


def test_commands_match_the_golden_tile():
    """PROGRAM, MVM batches and TIME through descriptors give exactly what the tile gives directly."""
    rng = np.random.default_rng(SEED)
    ring, tile = Ring(), PcmTile(TILE)
    w = rng.integers(-TILE.w_max, TILE.w_max + 1, (TILE.rows, TILE.cols))
    ring.rows(W, 8, w, "<i2")
    assert ring.run(program(seed=1234)) == [ErrorCode.OK]
    tile.program(w, 1234)
    for step in (None, 37, 200):
        if step is not None:
            assert ring.run(time(k=step)) == [ErrorCode.OK]
            tile.set_step(step)
        x = rng.integers(-TILE.x_max, TILE.x_max + 1, (4, TILE.rows))
        ring.rows(X, 16, x, "<i2")
        assert ring.run(mvm()) == [ErrorCode.OK]
        np.testing.assert_array_equal(ring.outputs(4), tile.mvm(x, 12))


def test_failures_leave_the_tile_unprogrammed():
    rng = np.random.default_rng(SEED + 1)
    ring, tile = Ring(), PcmTile(TILE)
    assert ring.run(mvm(), time()) == [ErrorCode.NOT_PROGRAMMED] * 2
    w = rng.integers(-TILE.w_max, TILE.w_max + 1, (TILE.rows, TILE.cols))
    w[2, 1] = TILE.w_max + 1
    ring.rows(W, 8, w, "<i2")
    assert ring.run(program(), mvm()) == [ErrorCode.BAD_OPERAND, ErrorCode.NOT_PROGRAMMED]
    w[2, 1] = -TILE.w_max
    ring.rows(W, 8, w, "<i2")
    x = rng.integers(-TILE.x_max, TILE.x_max + 1, (4, TILE.rows))
    x[2, 0] = -TILE.x_max - 1
    ring.rows(X, 16, x, "<i2")
    guard = ring.dev.read_mem(Y, 64)
    refused = mvm(chunk=TILE.acc_bits + 1)
    assert ring.run(program(seed=5), refused, mvm(), time()) == [
        ErrorCode.OK, ErrorCode.BAD_DIMENSION, ErrorCode.BAD_OPERAND, ErrorCode.NOT_PROGRAMMED]
    tile.program(w, 5)
    got = np.frombuffer(ring.dev.read_mem(Y, 64), np.uint8).reshape(4, 16)
    np.testing.assert_array_equal(ring.outputs(2), tile.mvm(x[:2], 12))       # before the bad vector
    assert got[2:].tobytes() == guard[32:], "the bad vector and those after it wrote outputs"


def test_bus_errors_and_abort_erase_the_tile():
    """The codes the RTL reports after it reset its tile (a bench's golden mirror returns them)."""
    for code in (ErrorCode.READ_ERROR, ErrorCode.WRITE_ERROR, ErrorCode.ABORTED):
        ring = Ring()
        ring.rows(W, 8, np.zeros((TILE.rows, TILE.cols)), "<i2")
        assert ring.run(program()) == [ErrorCode.OK]
        ring.dev.execute = lambda desc, code=code: code
        assert ring.run(time()) == [code]
        del ring.dev.execute
        assert ring.run(time()) == [ErrorCode.NOT_PROGRAMMED]
