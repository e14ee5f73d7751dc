"""The Device API on the golden backend: GEMM semantics, descriptor errors and bad arguments."""

import ml_dtypes
import numpy as np
import pytest

import fp8train
from fp8train.formats import E4M3, E5M2, FP16_169
from fp8train.protocol import Descriptor, ErrorCode, Flag, Opcode
from fp8train.sim.golden import matmul
from fp8train.sim.golden.device import OUTPUT_SEED_SALT
from fp8train.sim.golden.lfsr import LfsrBank

SEED = 0xF8


def e5m2_values(rng, shape, scale=1.0):
    return E5M2.decode(E5M2.encode(rng.normal(0, scale, shape)))


def reference(a, b, *, out="fp16", rounding="nearest", chunk=64, relu=False, c=None, scale=0, seed=0):
    """The documented semantics written directly with the golden arithmetic."""
    a_codes, b_codes = E5M2.encode(a), E5M2.encode(b)
    m, n = a_codes.shape[0], b_codes.shape[1]
    sr = rounding == "stochastic"
    total = matmul(a_codes, b_codes, chunk=chunk, rounding=rounding,
                   lfsr=LfsrBank.for_outputs(seed, m, n, 8) if sr else None,
                   c=None if c is None else FP16_169.encode(c))
    value = FP16_169.decode(total)
    if relu:
        value = np.where(value < 0, 0.0, value)
    fmt = {"fp16": FP16_169, "e5m2": E5M2, "e4m3": E4M3}[out]
    rand = LfsrBank.for_outputs(seed ^ OUTPUT_SEED_SALT, m, n, 8).draw() if sr else None
    codes = fmt.encode(value * 2.0 ** scale, rounding, rand=rand, rbits=8 if sr else None)
    return fmt.decode(codes).astype(np.float32)


@pytest.mark.parametrize("shape", [(1, 1, 1), (5, 130, 3), (9, 17, 11)])
@pytest.mark.parametrize("trans_a,trans_b", [(False, False), (True, False), (False, True), (True, True)])
def test_matmul_matches_golden_with_transposes(shape, trans_a, trans_b):
    rng = np.random.default_rng(SEED)
    m, k, n = shape
    a, b = e5m2_values(rng, (m, k)), e5m2_values(rng, (k, n))
    with fp8train.Device("golden") as dev:
        got = dev.matmul(a.T if trans_a else a, b.T if trans_b else b, trans_a=trans_a, trans_b=trans_b,
                         chunk=16)
    np.testing.assert_array_equal(got, reference(a, b, chunk=16))


@pytest.mark.parametrize("out", ["fp16", "e5m2", "e4m3"])
@pytest.mark.parametrize("rounding", ["nearest", "stochastic"])
def test_matmul_options(out, rounding):
    rng = np.random.default_rng(SEED + 1)
    a, b = e5m2_values(rng, (6, 70)), e5m2_values(rng, (70, 5))
    c = FP16_169.decode(FP16_169.encode(rng.normal(0, 4, (6, 5))))
    with fp8train.Device("golden", seed=77) as dev:
        dev.matmul(a, b)                               # call 0 uses seed 77, call 1 seed 78
        got = dev.matmul(a, b, out=out, rounding=rounding, chunk=8, relu=True, c=c, scale=-3)
    want = reference(a, b, out=out, rounding=rounding, chunk=8, relu=True, c=c, scale=-3, seed=78)
    np.testing.assert_array_equal(got, want)


def test_ml_dtypes_inputs_and_ring_wrap():
    rng = np.random.default_rng(SEED + 2)
    with fp8train.Device("golden") as dev:
        for call in range(40):                         # the ring has 16 slots
            a = rng.normal(size=(3, 4)).astype(ml_dtypes.float8_e5m2)
            b = rng.normal(size=(4, 2)).astype(ml_dtypes.float8_e5m2)
            got = dev.matmul(a, b)
            np.testing.assert_array_equal(got, reference(a.astype(np.float64), b.astype(np.float64)),
                                          err_msg=f"call {call}")


def gemm(**fields):
    base = dict(opcode=Opcode.GEMM, m=2, n=2, k=2, addr_a=0x1000, stride_a=8, addr_b=0x2000, stride_b=8,
                addr_d=0x3000, stride_d=8)
    base.update(fields)
    return Descriptor(**base)


@pytest.mark.parametrize("desc,code", [
    (gemm(opcode=0x7F), ErrorCode.BAD_OPCODE),
    (gemm(opcode=Opcode.PCM_MVM), ErrorCode.BAD_OPCODE),
    (gemm(flags=1 << 20), ErrorCode.RESERVED_BITS),
    (gemm(flags=3 << 8), ErrorCode.BAD_FORMAT),
    (gemm(m=0), ErrorCode.BAD_DIMENSION),
    (gemm(k=70000), ErrorCode.BAD_DIMENSION),
    (gemm(chunk=5000), ErrorCode.BAD_CHUNK),
    (gemm(addr_a=0x1004), ErrorCode.MISALIGNED),
    (gemm(stride_b=12), ErrorCode.MISALIGNED),
    (gemm(n=9, stride_d=16), ErrorCode.MISALIGNED),
    (gemm(flags=Flag.HAS_C, addr_c=0x4000, stride_c=0), ErrorCode.MISALIGNED),
    (gemm(addr_d=(1 << 24) - 8), ErrorCode.OUT_OF_WINDOW),
], ids=lambda v: getattr(v, "name", None))
def test_malformed_descriptors_complete_with_their_error(desc, code):
    with fp8train.Device("golden") as dev:
        guard = dev.link.read_mem(0x3000, 64)
        with pytest.raises(fp8train.DeviceError, match=rf"^device error {code.name} "):
            dev.submit(desc)
        assert dev.link.read_mem(0x3000, 64) == guard, "a refused command wrote memory"
        dev.submit(gemm())                             # the device takes the next command


def test_fence_completes():
    with fp8train.Device("golden") as dev:
        dev.submit(Descriptor(opcode=Opcode.FENCE))


@pytest.mark.parametrize("kwargs,message", [
    (dict(out="fp32"), r"^out must be one of 'fp16', 'e5m2', 'e4m3', not 'fp32'$"),
    (dict(rounding="up"), r"^rounding must be one of \('nearest', 'stochastic'\), not 'up'$"),
    (dict(chunk=0), r"^chunk must be an integer from 1 to 4096, not 0$"),
    (dict(scale=200), r"^scale must be an integer from -128 to 127, not 200$"),
])
def test_bad_arguments(kwargs, message):
    with fp8train.Device("golden") as dev, pytest.raises(ValueError, match=message):
        dev.matmul(np.ones((2, 2)), np.ones((2, 2)), **kwargs)


def test_inputs_must_be_exact_in_e5m2():
    a = np.ones((2, 3))
    a[1, 2] = 1.1
    with fp8train.Device("golden") as dev:
        with pytest.raises(ValueError, match=r"^a\[1, 2\] = 1.1 is not exactly representable in E5M2$"):
            dev.matmul(a, np.ones((3, 2)))
        with pytest.raises(ValueError, match=r"^inner dimensions differ: op\(a\) is 2x3, op\(b\) is 2x2$"):
            dev.matmul(np.ones((2, 3)), np.ones((2, 2)))


def test_unknown_backend():
    with pytest.raises(ValueError, match=r"^backend must be one of 'golden', 'rtl', 'serial', not 'fpga'$"):
        fp8train.Device("fpga")
