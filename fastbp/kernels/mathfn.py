"""Elementary functions the kernels call, vectorisable where that is safe.

Inside ``@njit`` code, ``np.tanh`` and ``np.exp`` become scalar libm calls per
element (no SVML here), which blocks SIMD and dominated the tanh workloads.
``tanh`` and ``exp`` below dispatch on the argument's type: float32 gets an
approximation in float32 arithmetic that LLVM vectorises; float64 keeps libm
(float64 is the precision of the gradient checks, so it stays exact to libm's
accuracy). ``tests/test_mathfn.py`` checks the float32 paths against NumPy over
the whole float32 range, including ±inf and NaN.
"""

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic, overload

from .._config import HELPER, JIT

# Rational minimax approximation of tanh on [-c, c] (the coefficients of Eigen's
# float32 tanh, generic_fast_tanh_float): tanh(x) ~ x P(x^2) / Q(x^2).
# Beyond c = 7.9053111 tanh rounds to +-1 in float32.
_f = np.float32
_CLAMP = _f(7.90531110763549805)
_TINY = _f(0.0004)
_A1, _A3, _A5 = _f(4.89352455891786e-03), _f(6.37261928875436e-04), _f(1.48572235717979e-05)
_A7, _A9 = _f(5.12229709037114e-08), _f(-8.60467152213735e-11)
_A11, _A13 = _f(2.00018790482477e-13), _f(-2.76076847742355e-16)
_B0, _B2 = _f(4.89352518554385e-03), _f(2.26843463243900e-03)
_B4, _B6 = _f(1.18534705686654e-04), _f(1.19825839466702e-06)


@njit(**dict(HELPER, fastmath={"contract"}))   # FMAs: tanh_forward 32x64 0.85 -> 0.72 us
def tanh_f32(x):
    # x float32 -> float32; NaN propagates (it fails both comparisons), +-inf clamp to +-1
    c = x
    if c > _CLAMP:
        c = _CLAMP
    if c < -_CLAMP:
        c = -_CLAMP
    x2 = c * c
    p = x2 * _A13 + _A11
    p = x2 * p + _A9
    p = x2 * p + _A7
    p = x2 * p + _A5
    p = x2 * p + _A3
    p = x2 * p + _A1
    p = c * p
    q = x2 * _B6 + _B4
    q = x2 * q + _B2
    q = x2 * q + _B0
    r = p / q
    # with FMAs the clamp point gives 1 - 2^-22, not 1: saturate there exactly (a select)
    r = np.copysign(_f(1.0), c) if abs(c) >= _CLAMP else r
    return c if abs(c) < _TINY else r


def tanh(x):
    """tanh for scalars inside kernels (float32: vectorisable approximation; else libm)."""
    return np.tanh(x)


@overload(tanh, inline="always")
def _tanh_impl(x):
    if x == types.float32:
        return lambda x: tanh_f32(x)
    return lambda x: np.tanh(x)


# exp for float32: Cephes' expf. x = n ln2 + r with n = round(x / ln2), |r| <= ln2/2
# (ln2 split in two so n ln2 is exact), e^r by a degree-6 polynomial, times 2^n built
# from its bits in two halves so that results in the subnormal range come out too.
_LOG2E = _f(1.44269504088896341)
_LN2_HI, _LN2_LO = _f(0.693359375), _f(-2.12194440e-4)
_E1, _E2, _E3 = _f(1.9875691500e-4), _f(1.3981999507e-3), _f(8.3334519073e-3)
_E4, _E5, _E6 = _f(4.1665795894e-2), _f(1.6666665459e-1), _f(5.0000001201e-1)
_EXP_HI = _f(88.72283935546875)   # above: exp overflows float32 (inf)
_EXP_LO = _f(-104.0)              # below: exp underflows to 0


@intrinsic
def _f32_from_bits(typingctx, i):
    # the float32 whose bit pattern is the int32 i
    def codegen(context, builder, sig, args):
        return builder.bitcast(args[0], ir.FloatType())
    return types.float32(types.int32), codegen


@njit(**HELPER)
def _pow2_f32(n):
    # 2^n for an int32 n in the normal exponent range [-126, 127]
    return _f32_from_bits((n + np.int32(127)) << np.int32(23))


@njit(**dict(HELPER, fastmath={"contract"}))   # FMAs: faster, and no less accurate
def exp_f32(x):
    # x float32 -> float32; NaN propagates, +inf -> inf, -inf -> 0
    c = x
    if c > _EXP_HI:
        c = _EXP_HI
    if c < _EXP_LO:
        c = _EXP_LO
    if c != c:   # NaN: compute on 0, give NaN back below (no NaN -> int conversion)
        c = _f(0.0)
    fn = np.floor(c * _LOG2E + _f(0.5))
    r = c - fn * _LN2_HI
    r = r - fn * _LN2_LO
    p = r * _E1 + _E2
    p = r * p + _E3
    p = r * p + _E4
    p = r * p + _E5
    p = r * p + _E6
    p = (r * r) * p + r + _f(1.0)
    n = np.int32(fn)
    h = n >> np.int32(1)             # 2^n = 2^h 2^(n - h): both halves stay normal
    y = p * _pow2_f32(h) * _pow2_f32(n - h)
    if x > _EXP_HI:
        y = _f(np.inf)
    return x if x != x else y


def exp(x):
    """exp for scalars inside kernels (float32: vectorisable approximation; else libm)."""
    return np.exp(x)


@overload(exp, inline="always")
def _exp_impl(x):
    if x == types.float32:
        return lambda x: exp_f32(x)
    return lambda x: np.exp(x)


# gelu, tanh approximation, with constants in the argument's precision so float32
# stays float32 (a Python float constant would promote the arithmetic to float64).
_GELU_C = 0.7978845608028654  # sqrt(2/pi)
_GELU_K = 0.044715


def gelu(z):
    """z/2 (1 + tanh(c (z + k z^3))); -0.0 where the tanh is -1 (so gelu(-inf) is -0.0, not NaN)."""
    with np.errstate(over="ignore", invalid="ignore"):
        u = 1.0 + np.tanh(_GELU_C * (z + _GELU_K * z ** 3))
        return np.where(u != 0.0, 0.5 * z * u, -0.0)[()]


def gelu_grad(z):
    """d gelu / dz = (1 + t)/2 + z/2 (1 - t^2) c (1 + 3 k z^2),  t = tanh(c (z + k z^3));
    (1 + t)/2 where the tanh has saturated (so 1 at +inf, 0 at -inf)."""
    with np.errstate(over="ignore", invalid="ignore"):
        t = np.tanh(_GELU_C * (z + _GELU_K * z ** 3))
        s = 1.0 - t * t
        r = 0.5 * (1.0 + t)
        return np.where(s != 0.0, r + 0.5 * z * s * _GELU_C * (1.0 + 3.0 * _GELU_K * z * z), r)[()]


def _consts(z):
    ft = np.float32 if z == types.float32 else np.float64
    return ft(_GELU_C), ft(_GELU_K), ft(3.0 * _GELU_K), ft(0.5), ft(1.0), ft(0.0)


@overload(gelu, inline="always")
def _gelu_impl(z):
    c, k, _, half, one, zero = _consts(z)

    def impl(z):
        u = one + tanh(c * (z + k * z * z * z))
        # u is 0 only far left (z < -5 in float32): -0.0 there, as z u gives for finite z, and
        # not -inf * 0 = NaN at z = -inf
        return half * z * u if u != zero else -zero
    return impl


@overload(gelu_grad, inline="always")
def _gelu_grad_impl(z):
    c, k, k3, half, one, zero = _consts(z)

    def impl(z):
        t = tanh(c * (z + k * z * z * z))
        s = one - t * t
        r = half * (one + t)
        # where tanh has saturated (s = 0) the second term is 0, also when z^2 overflows or
        # z is infinite (0 * inf would make it NaN)
        return r + half * z * s * c * (one + k3 * z * z) if s != zero else r
    return impl


def like(x, arr):
    """The scalar x in arr's precision (float32 arithmetic stays float32 in a kernel)."""
    return arr.dtype.type(x)


@overload(like, inline="always")
def _like_impl(x, arr):
    if arr.dtype == types.float32:
        return lambda x, arr: np.float32(x)
    return lambda x, arr: np.float64(x)
