"""The vectorisable elementary functions against NumPy over the whole float32 range."""

import numpy as np
import pytest
from numba import njit

from fastbp.kernels.mathfn import gelu, gelu_grad, tanh


@njit
def _apply_tanh(out, x):
    for i in range(x.shape[0]):
        out[i] = tanh(x[i])


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
