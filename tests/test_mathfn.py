"""The vectorisable elementary functions against NumPy over the whole float32 range."""

import numpy as np
import pytest
from numba import njit

from fastbp.kernels.mathfn import exp, gelu, gelu_grad, tanh


@njit
def _apply_tanh(out, x):
    for i in range(x.shape[0]):
        out[i] = tanh(x[i])


@njit
def _apply_exp(out, x):
    for i in range(x.shape[0]):
        out[i] = exp(x[i])


@njit
def _apply_gelu(out, dout, x):
    for i in range(x.shape[0]):
        out[i] = gelu(x[i])
        dout[i] = gelu_grad(x[i])


def _all_float32_sample(n=2_000_000, seed=0):
    """A dense grid where tanh bends, random bit patterns over the whole range, and specials."""
    rng = np.random.default_rng(seed)
    grid = np.linspace(-12, 12, n, dtype=np.float32)
    bits = rng.integers(0, 2**32, n, dtype=np.uint64).astype(np.uint32).view(np.float32)
    special = np.array([0.0, -0.0, 1e-45, -1e-45, 1e-38, 3.9e-4, 4e-4, 7.905311, 7.9053113, 8.0,
                        -8.0, 3.4e38, -3.4e38, np.inf, -np.inf, np.nan], np.float32)
    return np.concatenate([grid, bits, special])


def test_tanh_float32_accuracy_full_range():
    x = _all_float32_sample()
    out = np.empty_like(x)
    _apply_tanh(out, x)
    with np.errstate(invalid="ignore"):  # signalling NaN bit patterns
        ref = np.tanh(x.astype(np.float64))
    nan = np.isnan(x)
    assert np.all(np.isnan(out[nan]))
    ok = ~nan
    err = np.abs(out[ok].astype(np.float64) - ref[ok])
    # absolute error below 4 float32 ulps of 1.0 everywhere, relative error below 1e-6 near 0
    assert err.max() <= 4.8e-7
    small = np.abs(ref[ok]) < 0.5
    assert np.max(err[small] / np.maximum(np.abs(ref[ok][small]), 1e-38)) <= 1e-6
    assert np.all(np.abs(out[ok]) <= 1.0)
    assert out[x == np.inf].item() == 1.0 and out[x == -np.inf].item() == -1.0
    # odd symmetry and exact zero / signed zero
    xs = x[ok & np.isfinite(x)]
    o1, o2 = np.empty_like(xs), np.empty_like(xs)
    _apply_tanh(o1, xs)
    _apply_tanh(o2, -xs)
    assert np.array_equal(o1, -o2)
    z = np.array([0.0, -0.0], np.float32)
    oz = np.empty_like(z)
    _apply_tanh(oz, z)
    assert np.array_equal(np.signbit(oz), [False, True]) and np.all(oz == 0)


def test_tanh_float64_is_libm():
    x = np.concatenate([np.linspace(-30, 30, 10001), [np.inf, -np.inf, np.nan, 0.0, 1e-300]])
    out = np.empty_like(x)
    _apply_tanh(out, x)
    np.testing.assert_allclose(out, np.tanh(x), rtol=4e-16, atol=0)


@pytest.mark.parametrize("dtype, tol", [(np.float32, 2e-6), (np.float64, 1e-14)], ids=["f32", "f64"])
def test_gelu_and_derivative(dtype, tol):
    x = np.concatenate([np.linspace(-12, 12, 20001), [-1e4, 1e4]]).astype(dtype)
    out, dout = np.empty_like(x), np.empty_like(x)
    _apply_gelu(out, dout, x)
    x64 = x.astype(np.float64)
    with np.errstate(invalid="ignore", over="ignore"):
        ref = 0.5 * x64 * (1 + np.tanh(0.7978845608028654 * (x64 + 0.044715 * x64**3)))
        t = np.tanh(0.7978845608028654 * (x64 + 0.044715 * x64**3))
        dref = 0.5 * (1 + t) + 0.5 * x64 * (1 - t * t) * 0.7978845608028654 * (1 + 3 * 0.044715 * x64**2)
    fin = np.isfinite(x)
    scale = np.maximum(1.0, np.abs(ref[fin]))
    assert np.max(np.abs(out[fin] - ref[fin]) / scale) <= tol
    assert np.max(np.abs(dout[fin] - dref[fin])) <= 10 * tol


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
def test_gelu_limits_at_inf_nan_and_overflowing_cubes(dtype):
    # the formula's z (1 + tanh) and z (1 - t^2) (1 + 3 k z^2) are 0 * inf = NaN at z = -inf,
    # z = +-inf and wherever z^2 overflows; the limits are gelu(-inf) = -0, gelu' = 0 / 1
    big = np.finfo(dtype).max
    x = np.array([-np.inf, -big, -1e30, -1e19, -1e4, 1e4, 1e19, 1e30, big, np.inf, np.nan], dtype)
    out, dout = np.empty_like(x), np.empty_like(x)
    _apply_gelu(out, dout, x)
    neg = x < 0
    assert np.array_equal(out[neg], np.zeros(neg.sum(), dtype)) and np.all(np.signbit(out[neg]))
    pos = x > 0
    assert np.array_equal(out[pos], x[pos])
    assert np.array_equal(dout[neg], np.zeros(neg.sum(), dtype))
    assert np.array_equal(dout[pos], np.ones(pos.sum(), dtype))
    assert np.isnan(out[-1]) and np.isnan(dout[-1])
    # the Python reference versions agree
    with np.errstate(all="ignore"):
        assert np.array_equal(gelu(x.astype(np.float64)), out.astype(np.float64), equal_nan=True)
        assert np.array_equal(gelu_grad(x.astype(np.float64)), dout.astype(np.float64), equal_nan=True)


FLT_MIN = float(np.finfo(np.float32).tiny)   # smallest normal float32
FLT_TRUE_MIN = 2.0 ** -149                    # smallest subnormal float32


def test_exp_float32_accuracy_full_range():
    rng = np.random.default_rng(1)
    n = 2_000_000
    x = np.concatenate([
        np.linspace(-110, 90, n, dtype=np.float32),      # overflow to underflow, subnormals included
        rng.integers(0, 2**32, n, dtype=np.uint64).astype(np.uint32).view(np.float32),
        np.array([0.0, -0.0, 1e-45, -1e-45, 88.72283, 88.722839, 88.72284, -87.33, -87.34, -103.2,
                  -103.3, -104.0, -150.0, 3.4e38, -3.4e38, np.inf, -np.inf, np.nan], np.float32)])
    out = np.empty_like(x)
    _apply_exp(out, x)
    with np.errstate(all="ignore"):
        ref = np.exp(x.astype(np.float64))
        ref32 = ref.astype(np.float32)   # the correctly rounded float32 result (or inf / 0)
    nan = np.isnan(x)
    assert np.all(np.isnan(out[nan]))
    ok = ~nan
    o, r, r32 = out[ok], ref[ok], ref32[ok]
    # overflow and underflow where float32 rounding puts them
    assert np.array_equal(np.isinf(o), np.isinf(r32))
    assert o[x[ok] == np.inf].item() == np.inf and o[x[ok] == -np.inf].item() == 0.0
    fin = np.isfinite(r32)
    normal = fin & (r >= FLT_MIN)
    # normal results: within 1 ulp of the correctly rounded value (relative error < 1e-7)
    ulps = np.abs(o[normal].view(np.int32).astype(np.int64) - r32[normal].view(np.int32).astype(np.int64))
    assert ulps.max() <= 1
    assert np.max(np.abs(o[normal] - r[normal]) / r[normal]) < 1e-7
    # subnormal results: within one subnormal step
    sub = fin & (r < FLT_MIN)
    assert np.max(np.abs(o[sub].astype(np.float64) - r[sub])) <= FLT_TRUE_MIN
    assert np.all(o >= 0.0)
    assert np.count_nonzero(x == 0) >= 2 and np.all(out[x == 0] == 1.0)   # exp(+-0) is exactly 1


def test_exp_float64_is_libm():
    x = np.concatenate([np.linspace(-800, 800, 10001), [np.inf, -np.inf, np.nan, 0.0, 1e-300]])
    out = np.empty_like(x)
    _apply_exp(out, x)
    with np.errstate(over="ignore"):
        np.testing.assert_allclose(out, np.exp(x), rtol=4e-16, atol=0)   # libm and NumPy's SIMD exp: 1 ulp
