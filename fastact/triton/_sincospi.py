"""sin(pi q) and cos(pi q) on [0, 1/4], and rounding to the nearest integer, in Triton: the
DCT kernels' mirror of sincospi_quarter (csrc/include/fastact/dct.h) and round_to_integer
(csrc/include/fastact/primitives.h)."""

import triton
import triton.language as tl

# Coefficients of sin(pi q) / q and cos(pi q) in q^2 (see sincospi_quarter in dct.h).
_SIN32 = [tl.constexpr(float.fromhex(h)) for h in (
    "0x1.921fb52e6a14ep+1", "-0x1.4abbb900384bap+2", "0x1.465e91edb88dfp+1",
    "-0x1.2d93020f8ef45p-1",)]
_COS32 = [tl.constexpr(float.fromhex(h)) for h in (
    "0x1.0000000000000p+0", "-0x1.3bd3cc7b834e6p+2", "0x1.03c1dd95f824ap+2",
    "-0x1.55c5dfb0099aap+0", "0x1.d9d57b00c1358p-3",)]
_SIN64 = [tl.constexpr(float.fromhex(h)) for h in (
    "0x1.921fb54442d18p+1", "-0x1.4abbce625be41p+2", "0x1.466bc67758700p+1",
    "-0x1.32d2cce2d535fp-1", "0x1.50782fca38aacp-4", "-0x1.e30063a01d33fp-8",
    "0x1.e3eed5ca3247ep-12",)]
_COS64 = [tl.constexpr(float.fromhex(h)) for h in (
    "0x1.0000000000000p+0", "-0x1.3bd3cc9be45dep+2", "0x1.03c1f081b5aaep+2",
    "-0x1.55d3c7e3c9280p+0", "0x1.e1f5068367abdp-3", "-0x1.a6d1ec7e074dbp-6",
    "0x1.f9cc40a9c4aecp-10", "-0x1.b263c2807b052p-14",)]
S32_0, S32_1, S32_2, S32_3 = _SIN32
C32_0, C32_1, C32_2, C32_3, C32_4 = _COS32
S64_0, S64_1, S64_2, S64_3, S64_4, S64_5, S64_6 = _SIN64
C64_0, C64_1, C64_2, C64_3, C64_4, C64_5, C64_6, C64_7 = _COS64


@triton.jit
def round_to_integer(v, ACC: tl.constexpr):
    # Nearest integer, ties to even: adding and subtracting 2^23 (2^52) rounds the fraction
    # away; larger |v| are integers already; NaN and inf pass.
    if ACC == tl.float64:
        big = 4503599627370496.0
    else:
        big = 8388608.0
    shift = tl.where(v < 0.0, -big, big)
    rounded = (v + shift) - shift
    return tl.where(tl.abs(v) < big, rounded, v)


@triton.jit
def sincospi_quarter(q, ACC: tl.constexpr):
    # sin(pi q) and cos(pi q) for q in [0, 1/4].
    q2 = q * q
    if ACC == tl.float64:
        s = S64_6 * q2 + S64_5
        s = s * q2 + S64_4
        s = s * q2 + S64_3
        s = s * q2 + S64_2
        s = s * q2 + S64_1
        s = s * q2 + S64_0
        c = C64_7 * q2 + C64_6
        c = c * q2 + C64_5
        c = c * q2 + C64_4
        c = c * q2 + C64_3
        c = c * q2 + C64_2
        c = c * q2 + C64_1
        c = c * q2 + C64_0
    else:
        s = S32_3 * q2 + S32_2
        s = s * q2 + S32_1
        s = s * q2 + S32_0
        c = C32_4 * q2 + C32_3
        c = c * q2 + C32_2
        c = c * q2 + C32_1
        c = c * q2 + C32_0
    return s * q, c
