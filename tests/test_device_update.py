"""The UPDATE command through the host protocol: ``Device.sgd_update`` and the golden device's checks.

Results are compared with the golden function :func:`fp8train.sim.golden.update.sgd_update` (itself
checked against an independent reference in test_golden_update.py); memory around every buffer is
guarded, and each error code of an UPDATE descriptor is provoked once, plus the order between them.
"""

import numpy as np
import pytest

import fp8train
from fp8train.formats import E4M3, E5M2, FP16_169
from fp8train.protocol import MAX_UPDATE_COUNT, Descriptor, ErrorCode, Flag, Opcode, OutFormat
from fp8train.sim.golden.device import DeviceConfig, GoldenDevice
from fp8train.sim.golden.update import sgd_update

SEED = 0x5EED_DE


def fp16(rng, shape, sigma=1.0):
    """Values exactly representable in FP16_169."""
    return FP16_169.decode(FP16_169.encode(rng.normal(0, sigma, shape)))


@pytest.mark.parametrize("rounding", ["nearest", "stochastic"])
@pytest.mark.parametrize("copy", [None, "e5m2", "e4m3"])
@pytest.mark.parametrize("shape", [(1,), (7,), (3, 5), (64, 9)])
def test_matches_golden(rounding, copy, shape):
    rng = np.random.default_rng([SEED, len(shape), sum(shape)])
    w, g, v = fp16(rng, shape), fp16(rng, shape, 2.0 ** 8), fp16(rng, shape)
    lr, mu, wd = 0.0625, 0.875, 2.0 ** -12
    with fp8train.Device("golden", seed=99) as dev:
        plain = dev.sgd_update(w, g, lr=lr, scale=-8, rounding=rounding, copy=copy)
        full = dev.sgd_update(w, g, lr=lr, momentum=mu, v=v, weight_decay=wd, scale=-8, rounding=rounding,
                              copy=copy)
    codes = lambda x: FP16_169.encode(x)
    copy_fmt = {None: None, "e5m2": E5M2, "e4m3": E4M3}[copy]
    want_plain = sgd_update(codes(w), codes(g), lr=int(codes(lr)), scale=-8, rounding=rounding, seed=99,
                            copy_fmt=copy_fmt)
    want_full = sgd_update(codes(w), codes(g), lr=int(codes(lr)), v=codes(v), momentum=int(codes(mu)),
                           weight_decay=int(codes(wd)), scale=-8, rounding=rounding, seed=100, copy_fmt=copy_fmt)
    for got, want in ((plain, want_plain), (full, want_full)):
        assert got[0].dtype == np.float32 and got[0].shape == shape
        np.testing.assert_array_equal(got[0], FP16_169.decode(want[0]))
        if want[1] is None:
            assert got[1] is None
        else:
            np.testing.assert_array_equal(got[1], FP16_169.decode(want[1]))
        if copy_fmt is None:
            assert got[2] is None
        else:
            np.testing.assert_array_equal(got[2], copy_fmt.decode(want[2]))


def test_each_call_gets_a_new_seed():
    """Call n uses seed + n, so repeating a stochastic update is not the same draw."""
    w = np.full(256, 1.0)
    g = np.full(256, 2.0 ** -11)                                   # a quarter ulp of 1.0
    with fp8train.Device("golden", seed=5) as dev:
        first = dev.sgd_update(w, g, lr=1.0)[0]
        second = dev.sgd_update(w, g, lr=1.0)[0]
    assert not np.array_equal(first, second)
    np.testing.assert_array_equal(first, FP16_169.decode(sgd_update(
        FP16_169.encode(w), FP16_169.encode(g), lr=0x3E00, rounding="stochastic", seed=5)[0]))


# -- descriptors on the golden device --------------------------------------------------------------
W, G, V, D = 0x1000, 0x2000, 0x3000, 0x4000
UPDATE_ON = DeviceConfig(opcodes=frozenset({Opcode.FENCE, Opcode.GEMM, Opcode.UPDATE}))


def update(**fields):
    base = dict(opcode=Opcode.UPDATE, k=5, addr_a=W, addr_b=G, addr_c=V, addr_d=D, stride_a=0x3C00,
                stride_b=0x3A00, stride_c=0x2000, flags=Flag.MOMENTUM | OutFormat.E5M2 << 8)
    base.update(fields)
    return Descriptor(**base)


def run(dev: GoldenDevice, desc: Descriptor) -> ErrorCode:
    """Put ``desc`` in slot 0 of a one-slot ring at 0 and ring the doorbell; return its completion code."""
    dev.write_csr(0x030, 0)                                          # RING_BASE
    dev.write_csr(0x040, 0)                                          # WINDOW_BASE
    dev.write_csr(0x044, 0x8000)                                     # WINDOW_LIMIT
    dev.write_csr(0x010, 1)                                          # CTRL.ENABLE
    dev.write_mem(0, desc.pack())
    head = dev.read_csr(0x038)
    dev.write_csr(0x038, (head + 1) & 0xFFFF)
    return ErrorCode(int.from_bytes(dev.read_mem(4, 4), "little") & 0xFF)


def filled_device(rng, config=UPDATE_ON):
    dev = GoldenDevice(1 << 16, config)
    dev.write_mem(0x1000, rng.integers(0, 256, 0x4000, dtype=np.uint8).tobytes())
    return dev


@pytest.mark.parametrize("count", [1, 3, 4, 5, 8, 13])
@pytest.mark.parametrize("flags", [
    0, Flag.OUT_STOCHASTIC | Flag.MOMENTUM | OutFormat.E5M2 << 8,
    Flag.WEIGHT_DECAY | Flag.OVERFLOW_INF | OutFormat.E4M3 << 8,
    Flag.MOMENTUM | Flag.WEIGHT_DECAY | Flag.OUT_STOCHASTIC | Flag.OVERFLOW_INF])
def test_descriptor_writes_exactly_its_buffers(count, flags):
    """w and v in place, the copy at D, nothing else: bytes past the last element stay untouched."""
    rng = np.random.default_rng([SEED, count, int(flags)])
    dev = filled_device(rng)
    before = dev.memory.copy()
    desc = update(k=count, flags=int(flags), scale=-3, seed=0xC0FFEE)
    assert run(dev, desc) == ErrorCode.OK
    codes = lambda addr: before[addr:addr + 2 * count].view("<u2")
    out_fmt = {0: None, 1: E5M2, 2: E4M3}[(flags >> 8) & 3]
    momentum = bool(flags & Flag.MOMENTUM)
    w, v, copy = sgd_update(codes(W), codes(G), lr=desc.stride_a, v=codes(V) if momentum else None,
                            momentum=desc.stride_b if momentum else None,
                            weight_decay=desc.stride_c if flags & Flag.WEIGHT_DECAY else None, scale=-3,
                            rounding="stochastic" if flags & Flag.OUT_STOCHASTIC else "nearest",
                            seed=0xC0FFEE, rbits=UPDATE_ON.rbits, copy_fmt=out_fmt,
                            overflow="inf" if flags & Flag.OVERFLOW_INF else "saturate")
    want = before.copy()
    want[W:W + 2 * count] = w.view(np.uint8)
    if v is not None:
        want[V:V + 2 * count] = v.view(np.uint8)
    if copy is not None:
        want[D:D + count] = copy
    want[:64] = dev.memory[:64]                                      # the ring slot
    bad = np.flatnonzero(dev.memory != want)
    assert bad.size == 0, f"{bad.size} bytes differ; first at {bad[0]:#x}: {dev.memory[bad[0]]:#x} != {want[bad[0]]:#x}"


@pytest.mark.parametrize("desc,code", [
    (update(opcode=0x7F), ErrorCode.BAD_OPCODE),
    (update(flags=Flag.TRANS_A), ErrorCode.RESERVED_BITS),
    (update(flags=Flag.HAS_C), ErrorCode.RESERVED_BITS),
    (update(flags=Flag.ACC_STOCHASTIC), ErrorCode.RESERVED_BITS),
    (update(flags=1 << 11), ErrorCode.RESERVED_BITS),
    (update(stride_a=0x1_3C00), ErrorCode.RESERVED_BITS),
    (update(stride_b=0x8000_0000), ErrorCode.RESERVED_BITS),
    (update(stride_c=1 << 16), ErrorCode.RESERVED_BITS),
    (update(stride_d=8), ErrorCode.RESERVED_BITS),
    (update(chunk=1), ErrorCode.RESERVED_BITS),
    (update(flags=3 << 8), ErrorCode.BAD_FORMAT),
    (update(k=0), ErrorCode.BAD_DIMENSION),
    (update(k=MAX_UPDATE_COUNT + 1), ErrorCode.BAD_DIMENSION),
    (update(m=1), ErrorCode.BAD_DIMENSION),
    (update(n=1), ErrorCode.BAD_DIMENSION),
    (update(addr_a=W + 2), ErrorCode.MISALIGNED),
    (update(addr_b=G + 4), ErrorCode.MISALIGNED),
    (update(addr_c=V + 1), ErrorCode.MISALIGNED),
    (update(addr_d=D + 6), ErrorCode.MISALIGNED),
    (update(addr_a=0x8000 - 8, k=5), ErrorCode.OUT_OF_WINDOW),     # 10 bytes -> two beats
    (update(addr_b=0x8000 - 16, k=9), ErrorCode.OUT_OF_WINDOW),
    (update(addr_c=0x8000), ErrorCode.OUT_OF_WINDOW),
    (update(addr_d=0x8000 - 8, k=9), ErrorCode.OUT_OF_WINDOW),
    # the order: reserved bits before format, format before dimension, dimension before alignment,
    # alignment before the window
    (update(stride_d=8, flags=3 << 8), ErrorCode.RESERVED_BITS),
    (update(flags=3 << 8, k=0), ErrorCode.BAD_FORMAT),
    (update(k=0, addr_a=4), ErrorCode.BAD_DIMENSION),
    (update(addr_a=0x8004), ErrorCode.MISALIGNED),
], ids=lambda v: getattr(v, "name", None))
def test_malformed_update_completes_with_its_error(desc, code):
    rng = np.random.default_rng(SEED)
    dev = filled_device(rng)
    before = dev.memory.copy()
    assert run(dev, desc) == code
    before[:64] = dev.memory[:64]                                    # the ring slot
    assert np.array_equal(dev.memory, before), "a refused command wrote memory"


@pytest.mark.parametrize("desc", [
    update(flags=0, addr_c=3, addr_d=5),                            # v and the copy unused: not checked
    update(flags=0, addr_c=0xFFFF_FFF8, addr_d=0xFFFF_FFF8),
    update(flags=Flag.MOMENTUM, addr_d=0x8000),                     # no copy
    update(addr_a=0x8000 - 8, k=4),                                 # exactly the last beat
    update(addr_d=0x8000 - 8, k=8),
], ids=str)
def test_unused_buffers_are_not_checked(desc):
    assert run(filled_device(np.random.default_rng(SEED)), desc) == ErrorCode.OK


def test_update_is_refused_where_not_enabled():
    """A device configured without the update unit refuses UPDATE (the default has it, as the RTL)."""
    dev = filled_device(np.random.default_rng(SEED), DeviceConfig(opcodes=frozenset({Opcode.FENCE, Opcode.GEMM})))
    assert run(dev, update()) == ErrorCode.BAD_OPCODE
    assert Opcode.UPDATE in DeviceConfig().opcodes


@pytest.mark.parametrize("flag", [Flag.MOMENTUM, Flag.WEIGHT_DECAY])
def test_update_flags_stay_reserved_for_gemm_and_fence(flag):
    rng = np.random.default_rng(SEED)
    gemm = Descriptor(opcode=Opcode.GEMM, flags=int(flag), m=2, n=2, k=2, addr_a=W, stride_a=8, addr_b=G,
                      stride_b=8, addr_d=D, stride_d=8)
    assert run(filled_device(rng), gemm) == ErrorCode.RESERVED_BITS
    assert run(filled_device(rng), Descriptor(opcode=Opcode.FENCE, flags=int(flag))) == ErrorCode.RESERVED_BITS
    assert run(filled_device(rng), gemm.replace(flags=0)) == ErrorCode.OK


def test_config_opcodes_are_checked():
    with pytest.raises(ValueError, match=r"^opcodes must be a frozenset of FENCE, GEMM, UPDATE, not "):
        DeviceConfig(opcodes=frozenset({Opcode.PCM_MVM}))
    with pytest.raises(ValueError, match=r"^opcodes must be a frozenset"):
        DeviceConfig(opcodes={Opcode.GEMM})


# -- Device.sgd_update arguments -------------------------------------------------------------------
@pytest.mark.parametrize("kwargs, match", [
    (dict(w=np.array([1.0, 0.1])), r"^w\[1\] = 0\.1 is not exactly representable in FP16_169$"),
    (dict(g=np.array([[1.0, 2.0]])), r"^g must have the shape of w \(2,\), not \(1, 2\)$"),
    (dict(w=np.array(["a", "b"])), r"^w must be a numeric array, not <U1$"),
    (dict(lr=0.1), r"^lr\[\] = 0\.1 is not exactly representable in FP16_169$"),
    (dict(lr=np.array([0.5, 0.5])), r"^lr must be a scalar, not an array of shape \(2,\)$"),
    (dict(momentum=0.5), r"^momentum and the momentum buffer v go together"),
    (dict(v=np.zeros(2)), r"^momentum and the momentum buffer v go together"),
    (dict(v=np.zeros(3), momentum=0.5), r"^v must have the shape of w \(2,\), not \(3,\)$"),
    (dict(weight_decay=1e-9), r"^weight_decay\[\] = 1e-09 is not exactly representable"),
    (dict(scale=200), r"^scale must be an integer from -128 to 127, not 200$"),
    (dict(rounding="down"), r"^rounding must be one of \('nearest', 'stochastic'\), not 'down'$"),
    (dict(copy="fp16"), r"^copy must be one of None, 'e5m2', 'e4m3', not 'fp16'$"),
    (dict(w=np.zeros(0), g=np.zeros(0)), r"^w must have 1 to 16777215 elements, not 0$"),
])
def test_bad_arguments(kwargs, match):
    args = dict(w=np.array([1.0, 2.0]), g=np.array([0.5, 0.5]), lr=0.5) | kwargs
    with fp8train.Device("golden") as dev, pytest.raises(ValueError, match=match):
        dev.sgd_update(args.pop("w"), args.pop("g"), **args)
