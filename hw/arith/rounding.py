"""The one rounding datapath of the RTL: an exact value with a sticky bit into a format's code.

Every unit that rounds (adder, accumulators, converters) ends in :func:`round_to_code`, so the rule of
:mod:`fp8train.formats` is written once in hardware as it is once in the golden model.
"""

from amaranth.hdl import Cat, Const, Module, Mux, Signal, Value, signed

from ...formats import FloatFormat

__all__ = ["Rounding", "round_to_code", "min_exp_width", "leading_zeros", "shifted_out"]


class Rounding:
    """Run-time rounding mode encoding (one bit), shared by every unit and the register map."""
    NEAREST = 0
    STOCHASTIC = 1


def min_exp_width(*fmts: FloatFormat) -> int:
    """Signed width holding the unbiased exponents of ``fmts`` with room for normalisation shifts."""
    span = max(max(abs(f.emin - f.man_bits), f.exp_max_field - f.bias) for f in fmts)
    return (2 * span + 4).bit_length() + 1


def leading_zeros(m: Module, value: Value, name: str) -> Signal:
    """Number of leading zero bits of ``value`` (its width when zero), as a priority encoder."""
    width = len(value)
    count = Signal(range(width + 1), name=name)
    m.d.comb += count.eq(width)
    for bit in range(width):                     # the most significant set bit is assigned last and wins
        with m.If(value[bit]):
            m.d.comb += count.eq(width - 1 - bit)
    return count


def shifted_out(value: Value, distance: Value) -> Value:
    """Whether ``value >> distance`` loses a set bit: a mask from comparisons against constants, a
    fraction of the LUTs of shifting back and comparing."""
    return Cat(value[bit] & (distance > bit) for bit in range(len(value))).any()


def round_to_code(m: Module, fmt: FloatFormat, *, negative, exp, sig, sticky, nan, inf,
                  stochastic, rand, saturate, name: str, below_normal: bool = True) -> Signal:
    """Code of ``(-1)**negative * (sig * 2**(exp - len(sig) + 1) + sticky * epsilon)`` in ``fmt``.

    ``sig`` is normalised (MSB set) or zero, ``exp`` is the signed unbiased exponent of its MSB and
    ``sticky`` says that nonzero bits lie below ``sig``'s LSB. ``sig`` must carry at least
    ``len(rand) + 1`` bits below the target's ``man_bits + 1``, so the top ``len(rand)`` bits of the
    remainder never depend on the sticky bit. Results below the normal range are shifted right into
    the subnormal range (collecting sticky bits), then rounded: ties to even when ``stochastic`` is 0,
    else up iff ``t + rand >= 2**len(rand)`` with ``t`` the top remainder bits. ``saturate`` clamps
    overflow to the largest finite magnitude; otherwise it gives inf (NaN where the format has none).
    ``nan`` and ``inf`` override the value. The result is combinational.

    ``below_normal=False`` promises ``exp >= fmt.emin``, with ``sig`` unnormalised where the value is
    subnormal (an adder that stops normalising at ``emin``): the subnormal shifter is left out.
    """
    man_bits = fmt.man_bits
    width = len(sig)
    rem_bits = width - man_bits - 1
    rbits = len(rand)
    if rem_bits < rbits + 1:
        raise ValueError(f"sig must have at least {man_bits + rbits + 2} bits for {fmt} with "
                         f"{rbits} random bits, not {width}")

    # Into the subnormal range: shift right by emin - exp, keeping what falls off as sticky.
    if below_normal:
        denorm = Signal(range(width + 2), name=f"{name}_denorm")
        with m.If(exp < fmt.emin):
            m.d.comb += denorm.eq(Mux(fmt.emin - exp > width + 1, width + 1, fmt.emin - exp))
        aligned = Signal(width, name=f"{name}_aligned")
        lost = Signal(name=f"{name}_lost")
        m.d.comb += [aligned.eq(sig >> denorm), lost.eq(shifted_out(sig, denorm) | sticky)]
        target_exp = Signal(signed(len(exp) + 1), name=f"{name}_target_exp")
        m.d.comb += target_exp.eq(Mux(exp < fmt.emin, fmt.emin, exp))
    else:
        aligned, lost, target_exp = sig, sticky, exp

    kept = aligned[rem_bits:]                        # man_bits + 1 bits: the truncated significand
    rem = aligned[:rem_bits]
    up = Signal(name=f"{name}_up")
    with m.If(stochastic):
        top = rem[rem_bits - rbits:]
        m.d.comb += up.eq((top + rand)[rbits])
    with m.Else():
        half = rem[rem_bits - 1]
        rest = (rem[:rem_bits - 1] != 0) | lost
        m.d.comb += up.eq(half & (rest | kept[0]))

    rounded = Signal(man_bits + 2, name=f"{name}_rounded")
    m.d.comb += rounded.eq(kept + up)
    carry = rounded[man_bits + 1]
    man_field = Mux(carry, 0, rounded[:man_bits])
    normal = carry | rounded[man_bits]
    biased = Signal(signed(len(target_exp) + 1), name=f"{name}_biased")
    m.d.comb += biased.eq(target_exp + fmt.bias + carry)

    max_exp, max_man = fmt.max_field
    overflow = Signal(name=f"{name}_overflow")
    if max_man == (1 << man_bits) - 1:              # the top finite binade is whole
        m.d.comb += overflow.eq(normal & (biased > max_exp))
    else:                                            # "fn": the top code of the binade is NaN
        m.d.comb += overflow.eq(normal & ((biased > max_exp) | ((biased == max_exp) & (man_field > max_man))))

    magnitude = Signal(fmt.width - 1, name=f"{name}_magnitude")
    max_code = Const(fmt.max_code, fmt.width - 1)
    if fmt.has_inf:
        inf_code = Const(fmt.inf_code, fmt.width - 1)
        overflow_code = Mux(saturate, max_code, inf_code)
    elif fmt.has_nan:                                # without saturation: the canonical NaN below
        inf_code = overflow_code = max_code
        nan = nan | ((inf | overflow) & ~saturate)
    else:
        inf_code = overflow_code = max_code
    with m.If(inf):
        m.d.comb += magnitude.eq(inf_code)
    with m.Elif(overflow):
        m.d.comb += magnitude.eq(overflow_code)
    with m.Elif(normal):
        m.d.comb += magnitude.eq(Cat(man_field, biased[:fmt.exp_bits]))
    with m.Else():
        if fmt.subnormals:                           # otherwise flushed to a zero of the same sign
            m.d.comb += magnitude.eq(rounded[:man_bits])

    code = Signal(fmt.width, name=f"{name}_code")
    if fmt.has_nan:
        with m.If(nan):
            m.d.comb += code.eq(fmt.nan_code)
        with m.Else():
            m.d.comb += code.eq(Cat(magnitude, negative))
    else:
        m.d.comb += code.eq(Cat(magnitude, negative))
    return code
