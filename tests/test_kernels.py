"""Every kernel against its NumPy twin in tests/naive.py, per-kernel gradient checks, edge cases.

Kernels are called with the argument types the network drivers use (C-contiguous arrays of one
dtype, int64 codes and labels, float64 scalars as Python floats, flags as Python bools), so each
kernel is compiled once per dtype (Numba caches it, so warm runs take seconds).

Tolerances: 1e-5 (float32) and 1e-12 (float64) relative to a *scale*. The scale is |expected|
unless a comment says why the rounding of the inputs, or of cancelling terms, bounds the error
by something larger (e.g. the GEMM bound |alpha| |A| |B| + |beta| |C|).
"""

import os
import subprocess
import sys

import numpy as np
import pytest

import fastbp as fb
from fastbp._blas import gemm, transpose
from fastbp.kernels.activations import ACTIVATIONS, activation_backward, activation_forward
from fastbp.kernels.dense import dense_backward, dense_forward
from fastbp.kernels.dropout import dropout_backward, dropout_forward
from fastbp.kernels.losses import (IDENTITY_HUBER, IDENTITY_MSE, SIGMOID_BCE, SOFTMAX_CE, correct_count,
                                   loss_backward, loss_forward, output_forward)
from fastbp.kernels.norm import (batchnorm_backward, batchnorm_forward, batchnorm_update_running, layernorm_backward,
                                 layernorm_forward)
from fastbp.kernels.optim import all_finite, optimizer_update

from . import naive

DTYPES = [pytest.param(np.float32, id="f32"), pytest.param(np.float64, id="f64")]
TOL = {np.float32: 1e-5, np.float64: 1e-12}
ACT_NAMES = sorted(ACTIVATIONS)
# non-default alphas, so a kernel that ignored alpha would show
ACT_ALPHA = {"leaky_relu": 0.2, "elu": 0.7}
NO_LABELS = np.zeros(0, np.int64)
NO_STATE = np.zeros(0, np.float64)  # an unused float64 state buffer, as optimizers allocate it


def shape_id(shape):
    return "x".join(map(str, shape))


def assert_close(actual, expected, dtype, scale=None):
    """|actual - expected| <= tol(dtype) * max(|expected|, scale), elementwise (NaN fails)."""
    tol = TOL[np.dtype(dtype).type]
    actual, expected = naive.f64(actual), naive.f64(expected)
    assert actual.shape == expected.shape
    bound = np.abs(expected) if scale is None else np.maximum(np.abs(expected), scale)
    err = np.abs(actual - expected)
    bad = ~(err <= tol * bound)
    if bad.any():
        i = np.unravel_index(np.argmax(np.where(bad, err / np.maximum(bound, 1e-300), 0)), bad.shape)
        raise AssertionError(f"{bad.sum()} of {bad.size} elements off; worst at {i}: got {actual[i]!r}, "
                             f"expected {expected[i]!r}, allowed {tol * bound[i]:.3g}")


def rel_error(a, b):
    return np.linalg.norm(a - b) / max(np.linalg.norm(a) + np.linalg.norm(b), 1e-300)


def numeric_gradient(f, x, h=1e-6):
    """Central differences of the scalar f() w.r.t. every entry of x (perturbed in place, restored)."""
    g = np.zeros_like(x)
    for i in np.ndindex(x.shape):
        old = x[i]
        x[i] = old + h
        fp = f()
        x[i] = old - h
        fm = f()
        x[i] = old
        g[i] = (fp - fm) / (2 * h)
    return g


# ---- gemm ---------------------------------------------------------------------------------
GEMM_SHAPES = [(1, 1, 1), (7, 1, 33), (1, 33, 7), (33, 7, 1), (7, 33, 33),
               (150, 120, 100)]  # the last is big enough for OpenBLAS to use its threads


@pytest.mark.parametrize("m,n,k", GEMM_SHAPES, ids=[f"m{m}-n{n}-k{k}" for m, n, k in GEMM_SHAPES])
@pytest.mark.parametrize("trans", ["NN", "NT", "TN", "TT"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_gemm_matches_naive(dtype, trans, m, n, k, threads, gemm_provider, rng):
    ta, tb = trans[0] == "T", trans[1] == "T"
    A = rng.standard_normal((k, m) if ta else (m, k)).astype(dtype)
    B = rng.standard_normal((n, k) if tb else (k, n)).astype(dtype)
    opA, opB = (A.T if ta else A), (B.T if tb else B)
    for alpha, beta in [(1.0, 0.0), (-0.5, 1.0), (2.0, 0.75)]:
        C0 = rng.standard_normal((m, n)).astype(dtype)
        if beta == 0.0:
            C0[...] = np.nan  # beta = 0 overwrites: old contents, NaN included, are ignored
        C = C0.copy()
        gemm(ta, tb, alpha, A, B, beta, C)
        # standard GEMM error bound: eps * (|alpha| |op(A)| |op(B)| + |beta| |C|)
        scale = abs(alpha) * (np.abs(naive.f64(opA)) @ np.abs(naive.f64(opB)))
        if beta != 0.0:
            scale += abs(beta) * np.abs(naive.f64(C0))
        assert_close(C, naive.gemm(ta, tb, alpha, A, B, beta, C0), dtype, scale)


@pytest.mark.parametrize("dtype", DTYPES)
def test_gemm_empty_inner_dimension_scales_c(dtype, gemm_provider):
    A, B = np.zeros((3, 0), dtype), np.zeros((0, 4), dtype)
    C = np.full((3, 4), np.nan, dtype)
    gemm(False, False, 1.0, A, B, 0.0, C)
    assert np.array_equal(C, np.zeros((3, 4)))
    C[...] = 2.0
    gemm(False, False, 1.0, A, B, 0.5, C)
    assert np.array_equal(C, np.ones((3, 4)))


@pytest.mark.parametrize("shape", [(1, 1), (1, 7), (7, 1), (64, 10), (33, 65), (0, 4), (4, 0)])
@pytest.mark.parametrize("dtype", DTYPES)
def test_transpose_matches_numpy(dtype, shape, rng):
    A = rng.standard_normal(shape).astype(dtype)
    AT = np.full(shape[::-1], np.nan, dtype)
    transpose(A, AT)
    assert np.array_equal(AT, A.T)


_FALLBACK_SCRIPT = """
import numpy as np
import fastbp as fb
from fastbp._blas import BLAS_INFO, gemm, transpose
assert BLAS_INFO["provider"] == "numba-fallback" and BLAS_INFO["omatcopy"] == "numba-fallback", BLAS_INFO
rng = np.random.default_rng(0)
for dt in (np.float32, np.float64):
    tol = 1e-4 if dt == np.float32 else 1e-12
    for ta in (False, True):
        for tb in (False, True):
            A = rng.standard_normal((5, 3) if ta else (3, 5)).astype(dt)
            B = rng.standard_normal((4, 5) if tb else (5, 4)).astype(dt)
            C = rng.standard_normal((3, 4)).astype(dt)
            want = 0.5 * (A.T if ta else A) @ (B.T if tb else B) + 2.0 * C
            gemm(ta, tb, 0.5, A, B, 2.0, C)
            np.testing.assert_allclose(C, want, rtol=tol, atol=tol)
    A = rng.standard_normal((3, 7)).astype(dt)
    AT = np.empty((7, 3), dt)
    transpose(A, AT)
    assert np.array_equal(AT, A.T)
data = np.random.default_rng(1)
X = data.standard_normal((40, 6)).astype(np.float32)
y = data.integers(0, 3, 40)
net = fb.Network([6, 8, 3], seed=0)
print(repr(net.fit(X, y, epochs=2, batch_size=16, optimizer=fb.Adam(1e-2), verbose=0).history["loss"][-1]))
"""


def test_numba_fallback_blas_in_a_fresh_process():
    # FASTBP_BLAS=numba: every GEMM and transpose goes to the plain Numba cfuncs (the path of
    # platforms where NumPy ships no usable OpenBLAS); they match NumPy, and a network trains to
    # the same loss as with OpenBLAS (cached drivers link against whichever is registered)
    env = dict(os.environ, FASTBP_BLAS="numba")
    out = subprocess.run([sys.executable, "-c", _FALLBACK_SCRIPT], env=env, capture_output=True, text=True,
                         timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    data = np.random.default_rng(1)   # the script's X, y
    X = data.standard_normal((40, 6)).astype(np.float32)
    y = data.integers(0, 3, 40)
    net = fb.Network([6, 8, 3], seed=0)
    ours = net.fit(X, y, epochs=2, batch_size=16, optimizer=fb.Adam(1e-2), verbose=0).history["loss"][-1]
    assert float(out.stdout.strip()) == pytest.approx(ours, rel=1e-5)


# ---- dense ----------------------------------------------------------------------------------
DENSE_SHAPES = [(1, 1, 1), (7, 33, 1), (33, 1, 7), (7, 7, 33), (33, 33, 33)]  # (n, n_in, n_out)


def dense_data(rng, shape, dtype):
    n, n_in, n_out = shape
    X = rng.standard_normal((n, n_in)).astype(dtype)
    W = rng.standard_normal((n_in, n_out)).astype(dtype)
    b = rng.standard_normal(n_out).astype(dtype)
    return X, W, b


@pytest.mark.parametrize("shape", DENSE_SHAPES, ids=shape_id)
@pytest.mark.parametrize("dtype", DTYPES)
def test_dense_forward_matches_naive(dtype, shape, threads, gemm_provider, rng):
    X, W, b = dense_data(rng, shape, dtype)
    Z = np.full((shape[0], shape[2]), np.nan, dtype)
    dense_forward(Z, X, W, b)
    scale = np.abs(naive.f64(X)) @ np.abs(naive.f64(W)) + np.abs(naive.f64(b))
    assert_close(Z, naive.dense_forward(X, W, b), dtype, scale)


@pytest.mark.parametrize("need_dx", [True, False], ids=["dx", "no_dx"])
@pytest.mark.parametrize("shape", DENSE_SHAPES, ids=shape_id)
@pytest.mark.parametrize("dtype", DTYPES)
def test_dense_backward_matches_naive(dtype, shape, need_dx, threads, gemm_provider, rng):
    n, n_in, n_out = shape
    X, W, _ = dense_data(rng, shape, dtype)
    dZ = rng.standard_normal((n, n_out)).astype(dtype)
    dX = np.full((n, n_in), np.nan, dtype)
    dW = np.full((n_in, n_out), np.nan, dtype)
    db = np.full(n_out, np.nan, dtype)
    dense_backward(dX, dW, db, dZ, X, W, need_dx)
    dX_ref, dW_ref, db_ref = naive.dense_backward(dZ, X, W)
    aX, aW, adZ = np.abs(naive.f64(X)), np.abs(naive.f64(W)), np.abs(naive.f64(dZ))
    assert_close(dW, dW_ref, dtype, aX.T @ adZ)
    assert_close(db, db_ref, dtype, adZ.sum(axis=0))
    if need_dx:
        assert_close(dX, dX_ref, dtype, adZ @ aW.T)
    else:
        assert np.isnan(dX).all()  # not written


@pytest.mark.parametrize("shape", [(1, 1, 1), (7, 5, 3)], ids=shape_id)
def test_dense_gradient(shape, rng):
    # loss = sum(Z * dout): the backward kernel fed dout must give its central differences
    X, W, b = dense_data(rng, shape, np.float64)
    dout = rng.standard_normal((shape[0], shape[2]))
    Z = np.empty_like(dout)

    def loss():
        dense_forward(Z, X, W, b)
        return np.sum(Z * dout)

    dX, dW, db = np.empty_like(X), np.empty_like(W), np.empty_like(b)
    dense_backward(dX, dW, db, dout, X, W, True)
    for analytic, x in ((dX, X), (dW, W), (db, b)):
        assert rel_error(analytic, numeric_gradient(loss, x)) <= 1e-6


# ---- activations --------------------------------------------------------------------------
ACT_SHAPES = [(1, 1), (7, 33), (33, 7)]


def act_data(rng, shape, dtype):
    Z = rng.standard_normal(shape).astype(dtype)
    b = rng.uniform(-0.5, 0.5, shape[1]).astype(dtype)
    return Z, b


def run_forward(name, Z, b):
    """(A, Z after the call): the kernel with a separate output buffer, Z copied first."""
    Z = Z.copy()
    A = np.full(Z.shape, np.nan, Z.dtype)
    activation_forward(ACTIVATIONS[name], A, Z, b, ACT_ALPHA.get(name, 0.0))
    return A, Z


def run_backward(name, dA, A, Z):
    dZ = np.full(dA.shape, np.nan, dA.dtype)
    db = np.full(dA.shape[1], np.nan, dA.dtype)
    activation_backward(ACTIVATIONS[name], dZ, db, dA, A, Z, ACT_ALPHA.get(name, 0.0))
    return dZ, db


@pytest.mark.parametrize("shape", ACT_SHAPES, ids=shape_id)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", ACT_NAMES)
def test_activation_forward_matches_naive(name, dtype, shape, rng):
    Z, b = act_data(rng, shape, dtype)
    A, Zk = run_forward(name, Z, b)
    zb = naive.f64(Z) + naive.f64(b)
    # z + b is rounded once to dtype, and every f has |f'| <= 1.13: the error is ~eps |z|
    assert_close(A, naive.activation_forward(name, Z, b, ACT_ALPHA.get(name, 0.0)), dtype, np.abs(zb))
    if name == "gelu":  # gelu keeps the biased pre-activation for its backward pass
        assert np.array_equal(Zk, Z + b)


@pytest.mark.parametrize("shape", ACT_SHAPES, ids=shape_id)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", ACT_NAMES)
def test_activation_backward_matches_naive(name, dtype, shape, rng):
    Z, b = act_data(rng, shape, dtype)
    dA = rng.standard_normal(shape).astype(dtype)
    A, Zk = run_forward(name, Z, b)
    dZ, db = run_backward(name, dA, A, Zk)
    zb = naive.f64(Z) + naive.f64(b)
    dZ_ref, db_ref = naive.activation_backward(name, dA, zb, ACT_ALPHA.get(name, 0.0))
    # the kernel takes f' from the stored A (or z), each rounded to dtype; f' moves by at most
    # ~2 eps (1 + |z|) under those roundings, so the scale is |dA| (1 + |z|)
    scale = np.abs(naive.f64(dA)) * (1.0 + np.abs(zb))
    assert_close(dZ, dZ_ref, dtype, scale)
    assert_close(db, db_ref, dtype, scale.sum(axis=0))


# f and f' at the ends of the range: the limits, and NaN in gives NaN out (as NumPy and torch);
# relu' and leaky_relu' at NaN follow torch's backward: relu passes the gradient (its test is
# A <= 0), leaky_relu scales it (A > 0 is false)
# (z is -inf, -max, -1e4, -0, 0, 1e4, max, inf or NaN; a is the activation's alpha)
_EXTREME_F = {
    "identity": lambda z, a: z, "relu": lambda z, a: np.where(z <= 0, 0.0, z),
    "leaky_relu": lambda z, a: np.where(z > 0, z, a * z), "elu": lambda z, a: np.where(z > 0, z, a * np.expm1(z)),
    "sigmoid": lambda z, a: 1 / (1 + np.exp(-z)), "tanh": lambda z, a: np.tanh(z),
    "softplus": lambda z, a: np.logaddexp(0, z),
    "gelu": lambda z, a: np.where((z >= 0) | np.isnan(z), z, -0.0),
}
_EXTREME_DF = {
    "identity": lambda z, a: np.ones_like(z), "relu": lambda z, a: np.where(z <= 0, 0.0, 1.0),
    "leaky_relu": lambda z, a: np.where(z > 0, 1.0, a), "elu": lambda z, a: np.where(z > 0, 1.0, a * np.exp(z)),
    "sigmoid": lambda z, a: np.where(np.isnan(z), z, np.where(np.abs(z) > 1, 0.0, 0.25)),
    "tanh": lambda z, a: np.where(np.isnan(z), z, np.where(np.abs(z) > 1, 0.0, 1.0)),
    "softplus": lambda z, a: np.where(np.isnan(z), z, np.where(z > 1, 1.0, np.where(z < -1, 0.0, 0.5))),
    "gelu": lambda z, a: np.where(np.isnan(z), z, np.where(z > 1, 1.0, np.where(z < -1, 0.0, 0.5))),
}


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", ACT_NAMES)
def test_activation_limits_at_inf_nan_and_the_largest_floats(name, dtype):
    big = np.finfo(dtype).max
    Z = np.array([[-np.inf, -big, -1e4, -0.0, 0.0, 1e4, big, np.inf, np.nan]], dtype)
    b = np.full(Z.shape[1], -0.0, dtype)   # z + (-0) is z, -0 included (+0 would turn -0 into +0)
    A, Zk = run_forward(name, Z, b)
    dZ, _ = run_backward(name, np.ones_like(Z), A, Zk)
    z = Z.astype(np.float64)
    alpha = ACT_ALPHA.get(name, 0.0)
    with np.errstate(all="ignore"):
        f_ref, df_ref = _EXTREME_F[name](z, alpha).astype(dtype), _EXTREME_DF[name](z, alpha).astype(dtype)
    assert np.array_equal(A, f_ref, equal_nan=True), (A, f_ref)
    assert np.array_equal(dZ, df_ref, equal_nan=True), (dZ, df_ref)
    num = ~np.isnan(f_ref)   # and the signs of the zeros (array_equal takes -0 == +0)
    assert np.array_equal(np.signbit(A[num]), np.signbit(f_ref[num])), (A, f_ref)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", [a for a in ACT_NAMES if a != "gelu"])
def test_activation_forward_in_place(name, dtype, rng):
    # documented: A may be the same buffer as Z (all but gelu, which keeps Z)
    Z, b = act_data(rng, (7, 33), dtype)
    A, _ = run_forward(name, Z, b)
    activation_forward(ACTIVATIONS[name], Z, Z, b, ACT_ALPHA.get(name, 0.0))
    assert np.array_equal(Z, A)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", ACT_NAMES)
def test_activation_backward_in_place(name, dtype, rng):
    # documented: dZ may be dA (backward_all runs it that way)
    Z, b = act_data(rng, (7, 33), dtype)
    dA = rng.standard_normal((7, 33)).astype(dtype)
    A, Zk = run_forward(name, Z, b)
    dZ, db = run_backward(name, dA, A, Zk)
    db2 = np.full(33, np.nan, dtype)
    activation_backward(ACTIVATIONS[name], dA, db2, dA, A, Zk, ACT_ALPHA.get(name, 0.0))
    assert np.array_equal(dA, dZ)
    assert np.array_equal(db2, db)


@pytest.mark.parametrize("name", ACT_NAMES)
def test_activation_gradient(name, rng):
    # loss = sum(f(Z + b) * dout); central differences w.r.t. Z and b, float64
    Z, b = act_data(rng, (7, 5), np.float64)
    dout = rng.standard_normal((7, 5))

    def loss():
        A, _ = run_forward(name, Z, b)
        return np.sum(A * dout)

    A, Zk = run_forward(name, Z, b)
    dZ, db = run_backward(name, dout, A, Zk)
    assert rel_error(dZ, numeric_gradient(loss, Z)) <= 1e-6
    assert rel_error(db, numeric_gradient(loss, b)) <= 1e-6


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", ACT_NAMES)
def test_activation_large_inputs_are_finite(name, dtype, rng):
    z = np.array([-1000.0, -50.0, -20.0, 0.0, 20.0, 50.0, 1000.0])
    Z = np.tile(z, (3, 1)).astype(dtype)
    b = np.zeros(z.size, dtype)
    dA = rng.standard_normal(Z.shape).astype(dtype)
    A, Zk = run_forward(name, Z, b)
    assert np.isfinite(A).all()
    # relative accuracy holds in the tails too (sigmoid(-50) ~ 2e-22, softplus(-50) likewise)
    assert_close(A, naive.activation_forward(name, Z, b, ACT_ALPHA.get(name, 0.0)), dtype,
                 np.finfo(dtype).tiny)
    dZ, db = run_backward(name, dA, A, Zk)
    assert np.isfinite(dZ).all() and np.isfinite(db).all()
    # f' is taken from the rounded output (tanh(20) rounds to 1): absolute error ~eps |dA|
    dZ_ref, _ = naive.activation_backward(name, dA, Z, ACT_ALPHA.get(name, 0.0))
    assert_close(dZ, dZ_ref, dtype, np.abs(naive.f64(dA)))


# ---- output layer + losses ------------------------------------------------------------------
# (id, output, loss, code, use_labels)
LOSS_CASES = [
    pytest.param("softmax", "cross_entropy", SOFTMAX_CE, True, id="softmax_ce-labels"),
    pytest.param("softmax", "cross_entropy", SOFTMAX_CE, False, id="softmax_ce-probs"),
    pytest.param("sigmoid", "binary_cross_entropy", SIGMOID_BCE, False, id="sigmoid_bce"),
    pytest.param("identity", "mse", IDENTITY_MSE, False, id="mse"),
    pytest.param("identity", "huber", IDENTITY_HUBER, False, id="huber"),
]
LOSS_SHAPES = [(1, 1), (7, 7), (33, 3), (7, 33)]
# d loss / d z = GRAD_NORM * (P - T)-like term (clipped for huber)
GRAD_NORM = {"cross_entropy": lambda n, k: 1.0 / n, "binary_cross_entropy": lambda n, k: 1.0 / (n * k),
             "mse": lambda n, k: 2.0 / (n * k), "huber": lambda n, k: 1.0 / (n * k)}


def loss_data(rng, output, use_labels, shape, dtype):
    """(Z, b, T for the kernel, labels for the kernel, dense float64 targets for the twin)."""
    n, k = shape
    Z = (2.0 * rng.standard_normal(shape)).astype(dtype)  # wide enough for both huber regimes
    b = rng.uniform(-0.5, 0.5, k).astype(dtype)
    if use_labels:
        labels = rng.integers(0, k, n).astype(np.int64)
        return Z, b, np.zeros((0, k), dtype), labels, naive.one_hot(labels, k)
    if output == "softmax":
        T = rng.dirichlet(np.ones(k), n).astype(dtype)
    elif output == "sigmoid":
        T = rng.random(shape).astype(dtype)  # soft targets in [0, 1]
    else:
        T = (1.5 * rng.standard_normal(shape)).astype(dtype)
    return Z, b, T, NO_LABELS, naive.f64(T)


def run_loss_forward(code, Z, b, T, labels, use_labels):
    """(loss, P, Z after the call)."""
    Z = Z.copy()
    P = np.full(Z.shape, np.nan, Z.dtype)
    loss = loss_forward(code, P, Z, b, T, labels, use_labels, np.zeros(0, Z.dtype))
    return loss, P, Z


def run_loss_backward(code, P, T, labels, use_labels):
    dZ = np.full(P.shape, np.nan, P.dtype)
    db = np.full(P.shape[1], np.nan, P.dtype)
    loss_backward(code, dZ, db, P, T, labels, use_labels, np.zeros(0, P.dtype))
    return dZ, db


@pytest.mark.parametrize("shape", LOSS_SHAPES, ids=shape_id)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("output,loss,code,use_labels", LOSS_CASES)
def test_loss_forward_matches_naive(output, loss, code, use_labels, dtype, shape, rng):
    Z, b, T, labels, Tref = loss_data(rng, output, use_labels, shape, dtype)
    value, P, Zk = run_loss_forward(code, Z, b, T, labels, use_labels)
    zb = naive.f64(Z) + naive.f64(b)
    # per-element terms are computed in dtype from z rounded once: error ~eps (|z| + |t|)
    assert_close(value, naive.loss_value(loss, zb, Tref), dtype, np.mean(np.abs(zb)) + np.mean(np.abs(Tref)))
    # softmax / sigmoid move by ~eps |z|max relative when z is rounded
    P_ref = naive.output_forward(output, Z, b)
    assert_close(P, P_ref, dtype, np.abs(P_ref) * (1.0 + np.abs(zb).max()))
    if output == "softmax":  # documented: the bias is added to Z in place
        assert np.array_equal(Zk, Z + b)


@pytest.mark.parametrize("shape", LOSS_SHAPES, ids=shape_id)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("output,loss,code,use_labels", LOSS_CASES)
def test_loss_backward_matches_naive(output, loss, code, use_labels, dtype, shape, rng):
    n, k = shape
    Z, b, T, labels, Tref = loss_data(rng, output, use_labels, shape, dtype)
    _, P, _ = run_loss_forward(code, Z, b, T, labels, use_labels)
    dZ, db = run_loss_backward(code, P, T, labels, use_labels)
    zb = naive.f64(Z) + naive.f64(b)
    dZ_ref, db_ref = naive.loss_gradient(loss, zb, Tref)
    # dZ = c (P - T) from the stored P: P's rounding (see the forward test) and the cancellation
    # of P against T bound the error, so the scale is c (|P| (1 + |z|max) + |T|)
    P_ref = naive.output_forward(output, Z, b)
    scale = GRAD_NORM[loss](n, k) * (np.abs(P_ref) * (1.0 + np.abs(zb).max()) + np.abs(Tref))
    assert_close(dZ, dZ_ref, dtype, scale)
    assert_close(db, db_ref, dtype, scale.sum(axis=0))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("output,loss,code,use_labels", LOSS_CASES)
def test_loss_backward_in_place(output, loss, code, use_labels, dtype, rng):
    # documented: dZ may alias P
    Z, b, T, labels, _ = loss_data(rng, output, use_labels, (7, 5), dtype)
    _, P, _ = run_loss_forward(code, Z, b, T, labels, use_labels)
    dZ, db = run_loss_backward(code, P, T, labels, use_labels)
    db2 = np.full(5, np.nan, dtype)
    loss_backward(code, P, db2, P, T, labels, use_labels, np.zeros(0, P.dtype))
    assert np.array_equal(P, dZ)
    assert np.array_equal(db2, db)


@pytest.mark.parametrize("output,loss,code,use_labels", LOSS_CASES)
def test_loss_gradient(output, loss, code, use_labels, rng):
    # central differences of the mean loss w.r.t. the logits Z and the bias b, float64
    Z, b, T, labels, _ = loss_data(rng, output, use_labels, (7, 4), np.float64)

    def value():
        return run_loss_forward(code, Z, b, T, labels, use_labels)[0]

    _, P, _ = run_loss_forward(code, Z, b, T, labels, use_labels)
    dZ, db = run_loss_backward(code, P, T, labels, use_labels)
    assert rel_error(dZ, numeric_gradient(value, Z)) <= 1e-6
    assert rel_error(db, numeric_gradient(value, b)) <= 1e-6


OUTPUTS = [pytest.param("softmax", SOFTMAX_CE, id="softmax"), pytest.param("sigmoid", SIGMOID_BCE, id="sigmoid"),
           pytest.param("identity", IDENTITY_MSE, id="identity-mse"),
           pytest.param("identity", IDENTITY_HUBER, id="identity-huber")]


@pytest.mark.parametrize("shape", LOSS_SHAPES, ids=shape_id)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("output,code", OUTPUTS)
def test_output_forward_matches_naive_and_loss_forward(output, code, dtype, shape, rng):
    Z, b, T, labels, _ = loss_data(rng, output, False, shape, dtype)
    Zo = Z.copy()
    P = np.full(shape, np.nan, dtype)
    output_forward(code, P, Zo, b)
    zb = naive.f64(Z) + naive.f64(b)
    P_ref = naive.output_forward(output, Z, b)
    assert_close(P, P_ref, dtype, np.abs(P_ref) * (1.0 + np.abs(zb).max()))
    # inference and training outputs are the same numbers
    _, P_loss, _ = run_loss_forward(code, Z, b, T, labels, False)
    assert np.array_equal(P, P_loss)


HUGE_LOGITS = np.array([[1000.0, 0.0, -1000.0],
                        [-1000.0, -1000.0, -1000.0],
                        [1000.0, 999.0, 1000.0],
                        [50.0, -50.0, 20.0]])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("use_labels", [True, False], ids=["labels", "probs"])
def test_softmax_huge_logits_are_stable(use_labels, dtype):
    Z = HUGE_LOGITS.astype(dtype)
    n, k = Z.shape
    b = np.zeros(k, dtype)
    labels = np.array([0, 1, 2, 1], np.int64)
    Tref = naive.one_hot(labels, k) if use_labels else np.full((n, k), 1.0 / k)
    T = np.zeros((0, k), dtype) if use_labels else Tref.astype(dtype)
    lab = labels if use_labels else NO_LABELS
    value, P, _ = run_loss_forward(SOFTMAX_CE, Z, b, T, lab, use_labels)
    assert np.isfinite(value) and np.isfinite(P).all()
    assert_close(P.sum(axis=1), np.ones(n), dtype, 2.0)
    # lse - z at |z| = 1000 cancels: the error scale is the logits' size
    assert_close(value, naive.loss_value("cross_entropy", Z, Tref), dtype, 1000.0)
    assert_close(P, naive.softmax(Z), dtype, 1.0)
    dZ, db = run_loss_backward(SOFTMAX_CE, P, T, lab, use_labels)
    assert np.isfinite(dZ).all() and np.isfinite(db).all()
    assert_close(dZ, naive.loss_gradient("cross_entropy", Z, Tref)[0], dtype, 1.0 / n)
    Po = np.full((n, k), np.nan, dtype)
    output_forward(SOFTMAX_CE, Po, Z.copy(), b)
    assert np.array_equal(Po, P)


@pytest.mark.parametrize("dtype", DTYPES)
def test_sigmoid_bce_huge_logits_are_stable(dtype):
    Z = HUGE_LOGITS.astype(dtype)
    b = np.zeros(3, dtype)
    T = np.tile(np.array([1.0, 0.0, 0.5], dtype), (4, 1))
    value, P, _ = run_loss_forward(SIGMOID_BCE, Z, b, T, NO_LABELS, False)
    assert np.isfinite(value) and np.isfinite(P).all() and ((P >= 0) & (P <= 1)).all()
    assert_close(value, naive.loss_value("binary_cross_entropy", Z, T), dtype, 1000.0)
    dZ, db = run_loss_backward(SIGMOID_BCE, P, T, NO_LABELS, False)
    assert np.isfinite(dZ).all() and np.isfinite(db).all()
    assert_close(dZ, naive.loss_gradient("binary_cross_entropy", Z, T)[0], dtype, 1.0 / Z.size)


# ---- dropout ------------------------------------------------------------------------------
def test_splitmix64_twin_matches_reference_vectors():
    # splitmix64 seeded with 0: its first outputs (Vigna's reference implementation)
    assert naive.splitmix64(np.array([1, 2], np.uint64)).tolist() == [0xE220A8397B1DCDAF, 0x6E789E6AA1B965F4]


@pytest.mark.parametrize("shape", [(1, 1), (7, 33), (33, 7)], ids=shape_id)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("p", [0.0, 0.2, 0.5, 0.9])
def test_dropout_forward_matches_naive(p, dtype, shape, rng):
    seed = rng.integers(0, 2 ** 64, dtype=np.uint64)
    state = np.array([seed], np.uint64)
    A = rng.standard_normal(shape).astype(dtype)
    D, M = np.full(shape, np.nan, dtype), np.full(shape, np.nan, dtype)
    dropout_forward(D, M, A, p, state)
    D_ref, M_ref, nxt = naive.dropout_forward(A, p, seed)
    # one rounding each (1/(1-p) and A m, computed in float64): bit-identical
    assert np.array_equal(M, M_ref.astype(dtype))
    assert np.array_equal(D, D_ref.astype(dtype))
    assert state[0] == nxt


@pytest.mark.parametrize("dtype", DTYPES)
def test_dropout_counter_wraps_and_continues(dtype, rng):
    # counters wrap mod 2**64, and two calls of 3 + 4 rows draw what one call of 7 rows draws
    seed = np.uint64(2 ** 64 - 10)
    A = rng.standard_normal((7, 3)).astype(dtype)
    D, M = np.empty_like(A), np.empty_like(A)
    state = np.array([seed], np.uint64)
    dropout_forward(D, M, A, 0.5, state)
    D_ref, M_ref, nxt = naive.dropout_forward(A, 0.5, seed)
    assert np.array_equal(M, M_ref.astype(dtype)) and state[0] == nxt == np.uint64(11)
    D2, M2 = np.empty_like(A), np.empty_like(A)
    state[0] = seed
    dropout_forward(D2[:3], M2[:3], np.ascontiguousarray(A[:3]), 0.5, state)
    dropout_forward(D2[3:], M2[3:], np.ascontiguousarray(A[3:]), 0.5, state)
    assert np.array_equal(M2, M) and np.array_equal(D2, D) and state[0] == nxt


@pytest.mark.parametrize("p", [0.1, 0.5, 0.9])
def test_dropout_drop_rate(p):
    # 10,000 draws: the dropped fraction is within 5 standard deviations of p
    A = np.ones((200, 50))
    D, M = np.empty_like(A), np.empty_like(A)
    dropout_forward(D, M, A, p, np.array([12345], np.uint64))
    assert abs((M == 0).mean() - p) <= 5 * np.sqrt(p * (1 - p) / A.size)
    assert np.allclose(M[M != 0], 1 / (1 - p))


@pytest.mark.parametrize("dtype", DTYPES)
def test_dropout_backward_matches_naive(dtype, rng):
    A = rng.standard_normal((7, 33)).astype(dtype)
    D, M = np.empty_like(A), np.empty_like(A)
    dropout_forward(D, M, A, 0.3, np.array([7], np.uint64))
    dD = rng.standard_normal(A.shape).astype(dtype)
    dA = np.full(A.shape, np.nan, dtype)
    dropout_backward(dA, dD, M)
    expected = naive.dropout_backward(dD, M).astype(dtype)  # one product, one rounding
    assert np.array_equal(dA, expected)
    dropout_backward(dD, dD, M)  # in place, as backward_all calls it
    assert np.array_equal(dD, expected)


# ---- optimizers -----------------------------------------------------------------------------
OPTIMIZERS = [
    pytest.param(lambda: fb.SGD(lr=0.1), id="sgd"),
    pytest.param(lambda: fb.SGD(lr=0.1, weight_decay=0.05), id="sgd-wd"),
    pytest.param(lambda: fb.SGD(lr=0.1, momentum=0.9), id="sgd-mom"),
    pytest.param(lambda: fb.SGD(lr=0.1, momentum=0.8, dampening=0.3), id="sgd-mom-damp"),
    pytest.param(lambda: fb.SGD(lr=0.1, momentum=0.9, nesterov=True), id="sgd-nesterov"),
    pytest.param(lambda: fb.SGD(lr=0.05, momentum=0.7, dampening=0.2, weight_decay=0.1), id="sgd-mom-damp-wd"),
    pytest.param(lambda: fb.SGD(lr=0.05, momentum=0.9, weight_decay=0.1, nesterov=True), id="sgd-nesterov-wd"),
    pytest.param(lambda: fb.Adam(lr=0.05), id="adam"),
    pytest.param(lambda: fb.Adam(lr=0.05, weight_decay=0.1), id="adam-wd"),
    pytest.param(lambda: fb.Adam(lr=0.05, amsgrad=True), id="adam-amsgrad"),
    pytest.param(lambda: fb.Adam(lr=0.05, betas=(0.8, 0.99), eps=1e-3, weight_decay=0.1, amsgrad=True),
                 id="adam-amsgrad-wd-betas-eps"),
    pytest.param(lambda: fb.Adam(lr=0.05, eps=1e-2, eps_hat=True), id="adam-epshat"),
    pytest.param(lambda: fb.Adam(lr=0.05, eps=1e-2, weight_decay=0.1, amsgrad=True, eps_hat=True),
                 id="adam-epshat-amsgrad-wd"),
    pytest.param(lambda: fb.AdamW(lr=0.05), id="adamw"),
    pytest.param(lambda: fb.AdamW(lr=0.05, eps=1e-2, eps_hat=True), id="adamw-epshat"),
    pytest.param(lambda: fb.AdamW(lr=0.05, weight_decay=0.3, amsgrad=True), id="adamw-amsgrad"),
    pytest.param(lambda: fb.AdamW(lr=0.05, weight_decay=0.0), id="adamw-wd0"),
    pytest.param(lambda: fb.RMSprop(lr=0.01), id="rmsprop"),
    pytest.param(lambda: fb.RMSprop(lr=0.01, alpha=0.9, weight_decay=0.1), id="rmsprop-wd"),
    pytest.param(lambda: fb.RMSprop(lr=0.01, centered=True), id="rmsprop-centered"),
    pytest.param(lambda: fb.RMSprop(lr=0.01, momentum=0.9), id="rmsprop-mom"),
    pytest.param(lambda: fb.RMSprop(lr=0.01, alpha=0.9, eps=1e-4, weight_decay=0.1, momentum=0.5, centered=True),
                 id="rmsprop-centered-mom-wd"),
]


def twin_of(opt):
    """(step function, names of the kernel's state buffers s1, s2, s3 in the twin's state)."""
    if isinstance(opt, fb.SGD):
        return (lambda p, g, st, t: naive.sgd_step(p, g, st, t, opt.lr, opt.momentum, opt.dampening,
                                                   opt.weight_decay, opt.nesterov)), ("buf", None, None)
    if isinstance(opt, fb.Adam):
        return (lambda p, g, st, t: naive.adam_step(p, g, st, t, opt.lr, opt.betas[0], opt.betas[1], opt.eps,
                                                    opt.weight_decay, isinstance(opt, fb.AdamW),
                                                    opt.amsgrad, opt.eps_hat)), ("m", "v", "vmax")
    return (lambda p, g, st, t: naive.rmsprop_step(p, g, st, t, opt.lr, opt.alpha, opt.eps, opt.weight_decay,
                                                   opt.momentum, opt.centered)), ("sq", "gavg", "buf")


def random_state(rng, names, sizes, dtype):
    """A plausible mid-training state: second moments >= 0, centered sq >= gavg^2."""
    out = {}
    for name, size in zip(names, sizes):
        if name in ("buf", "m", "gavg"):
            out[name] = 0.3 * rng.standard_normal(size)
        elif name in ("v", "vmax"):
            out[name] = rng.uniform(0.0, 0.5, size)  # vmax below v in places: the max matters
    if "sq" in names:
        gavg = out["gavg"] if sizes[1] else 0.0
        out["sq"] = gavg ** 2 + rng.uniform(0.05, 1.0, sizes[0])
    return {k: v.astype(dtype) for k, v in out.items()}


@pytest.mark.parametrize("start", ["fresh", "resumed"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("make", OPTIMIZERS)
def test_optimizer_matches_torch_algorithm(make, dtype, start, rng):
    # 6 steps from zero state at t = 1 ("fresh") or from a random state at t = 4 ("resumed")
    opt = make()
    step, names = twin_of(opt)
    n = 33
    sizes = opt._state_sizes(n)
    p = rng.standard_normal(n).astype(dtype)
    if start == "fresh":
        t0 = 1
        init = {name: np.zeros(s, dtype) for name, s in zip(names, sizes) if name is not None}
        if isinstance(opt, fb.SGD) and sizes[0]:
            init["buf"][...] = np.nan  # at t = 1 the momentum buffer is set, never read
    else:
        t0 = 4
        init = random_state(rng, names, sizes, dtype)
    bufs = [init[name].copy() if name is not None and s else np.zeros(0, dtype) for name, s in zip(names, sizes)]
    ref_p, ref = p.astype(np.float64), {k: v.astype(np.float64) for k, v in init.items() if v.size}
    hp = opt._hparams()
    for t in range(t0, t0 + 6):
        g = rng.standard_normal(n).astype(dtype)
        optimizer_update(opt.kind, p, g, bufs[0], bufs[1], bufs[2], hp, t, 1.0)
        ref_p, ref = step(ref_p, g, ref, t)
        # the kernel stores p and its state in dtype after each step: round the twin the same way
        ref_p = naive.f64(ref_p.astype(dtype))
        ref = {k: naive.f64(v.astype(dtype)) for k, v in ref.items()}
    # compared relative to each array's largest entry (state entries can cancel towards 0)
    assert_close(p, ref_p, dtype, np.abs(ref_p).max())
    for name, buf, s in zip(names, bufs, sizes):
        if s:
            assert_close(buf, ref[name], dtype, np.abs(ref[name]).max())


@pytest.mark.parametrize("make", OPTIMIZERS)
def test_hyper_parameters_are_packed_by_name(make):
    # the array the kernel reads holds the NamedTuple's fields in order; the dispatcher's index
    # constants name those positions
    from fastbp.kernels import optim as KO
    opt = make()
    named = opt.hparams()
    assert type(named) is KO.HPARAMS[opt.kind]
    hp = opt._hparams()
    assert hp.dtype == np.float64 and hp.tolist() == [float(v) for v in named]
    prefix = {KO.SGD: "SGD_", KO.ADAM: "ADAM_", KO.RMSPROP: "RMS_"}[opt.kind]
    for i, field in enumerate(named._fields):
        assert getattr(KO, prefix + field.upper()) == i
    assert opt._hparams() is hp   # one array per optimizer, rewritten in place


def test_optimizer_state_by_name():
    for opt, fields, sizes in ((fb.Adam(amsgrad=True), ("exp_avg", "exp_avg_sq", "max_exp_avg_sq"), (1, 1, 1)),
                               (fb.SGD(momentum=0.9), ("momentum_buffer", "unused_1", "unused_2"), (1, 0, 0)),
                               (fb.RMSprop(centered=True), ("square_avg", "grad_avg", "momentum_buffer"), (1, 1, 0))):
        net = fb.Network([3, 4, 2])
        state = opt._bind(net)
        assert state._fields == fields and opt.state_arrays() is state
        assert [a.size for a in state] == [s * net.params.size for s in sizes]


def test_sgd_one_step_by_hand():
    # t = 2, mu = 0.9, wd = 0.1:  d = 0.4 + 0.1 * 1 = 0.5;  buf = 0.9 * 0.2 + 0.5 = 0.68
    # nesterov: d = 0.5 + 0.9 * 0.68 = 1.112;  p = 1 - 0.1 * 1.112 = 0.8888
    opt = fb.SGD(lr=0.1, momentum=0.9, weight_decay=0.1, nesterov=True)
    p, g, buf = np.array([1.0]), np.array([0.4]), np.array([0.2])
    optimizer_update(opt.kind, p, g, buf, NO_STATE, NO_STATE, opt._hparams(), 2, 1.0)
    assert buf[0] == pytest.approx(0.68, rel=1e-15) and p[0] == pytest.approx(0.8888, rel=1e-15)


def test_adam_first_step_is_lr_times_sign():
    # from zero state, mhat = g and vhat = g^2, so p moves by lr g / (|g| + eps) ~ lr sign(g)
    opt = fb.Adam(lr=0.01)
    g = np.array([3.0, -0.2, 1e-3])
    p = np.zeros(3)
    m, v = np.zeros(3), np.zeros(3)
    optimizer_update(opt.kind, p, g, m, v, NO_STATE, opt._hparams(), 1, 1.0)
    assert np.allclose(p, -0.01 * g / (np.abs(g) + 1e-8), rtol=1e-12, atol=0)



# ---- all_finite -------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("size", [1, 7, 33, 100])
def test_all_finite_detects_nonfinite_at_any_position(size, dtype, rng):
    x = rng.standard_normal(size).astype(dtype)
    assert all_finite(x) and naive.all_finite(x)
    for bad in (np.nan, np.inf, -np.inf):
        for i in range(size):
            y = x.copy()
            y[i] = bad
            assert not all_finite(y), (bad, i)


@pytest.mark.parametrize("dtype", DTYPES)
def test_all_finite_extremes(dtype):
    fi = np.finfo(dtype)
    x = np.array([fi.max, -fi.max, fi.tiny, fi.smallest_subnormal, -0.0, 0.0, fi.eps], dtype)
    assert all_finite(x)
    assert all_finite(np.zeros(0, dtype))
    assert not all_finite(np.array([np.inf, -np.inf], dtype))
    assert not all_finite(np.array([fi.max, np.nan, -fi.max], dtype))


# ---- weighted losses and the correct-prediction count ------------------------------------------
def weights_for(rng, n, kind, dtype):
    if kind == "random":    # a zero among positive weights
        w = rng.uniform(0.1, 3.0, n)
        w[n // 2] = 0.0 if n > 1 else w[0]
    elif kind == "integer":
        w = rng.integers(1, 4, n).astype(float)
    else:                   # every row weight 0: the batch contributes nothing
        w = np.zeros(n)
    return w.astype(dtype)


@pytest.mark.parametrize("kind", ["random", "integer", "zero"])
@pytest.mark.parametrize("shape", [(1, 1), (7, 3), (33, 7)], ids=shape_id)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("output,loss,code,use_labels", LOSS_CASES)
def test_weighted_loss_matches_naive(output, loss, code, use_labels, dtype, shape, kind, rng):
    # loss = sum_i w_i l_i / sum_i w_i, dZ_i = w_i / sum(w) d l_i / d z_i (losses.py's docstring)
    n, k = shape
    Z, b, T, labels, Tref = loss_data(rng, output, use_labels, shape, dtype)
    w = weights_for(rng, n, kind, dtype)
    Zk = Z.copy()
    P = np.full(shape, np.nan, dtype)
    value = loss_forward(code, P, Zk, b, T, labels, use_labels, w)
    dZ = np.full(shape, np.nan, dtype)
    db = np.full(k, np.nan, dtype)
    loss_backward(code, dZ, db, P, T, labels, use_labels, w)
    zb = naive.f64(Z) + naive.f64(b)
    if kind == "zero":
        assert value == 0.0 and not dZ.any() and not db.any()
        return
    # as the unweighted tests: the row terms carry ~eps (|z| + |t|), the gradient ~eps c (|P| (1 + |z|) + |T|)
    assert_close(value, naive.weighted_loss_value(loss, zb, Tref, w), dtype,
                 np.mean(np.abs(zb)) + np.mean(np.abs(Tref)))
    dZ_ref, db_ref = naive.weighted_loss_gradient(loss, zb, Tref, w)
    P_ref = naive.output_forward(output, Z, b)
    c = naive.f64(w)[:, None] / naive.f64(w).sum() * (1.0 if loss == "cross_entropy" else 2.0 / k)
    scale = c * (np.abs(P_ref) * (1.0 + np.abs(zb).max()) + np.abs(Tref))
    assert_close(dZ, dZ_ref, dtype, scale)
    assert_close(db, db_ref, dtype, scale.sum(axis=0))


@pytest.mark.parametrize("output,loss,code,use_labels", LOSS_CASES)
def test_weighted_loss_gradient(output, loss, code, use_labels, rng):
    # central differences of the weighted mean loss w.r.t. Z and b, float64
    Z, b, T, labels, _ = loss_data(rng, output, use_labels, (7, 4), np.float64)
    w = weights_for(rng, 7, "random", np.float64)

    def value():
        return loss_forward(code, np.empty_like(Z), Z.copy(), b, T, labels, use_labels, w)

    P = np.empty_like(Z)
    loss_forward(code, P, Z.copy(), b, T, labels, use_labels, w)
    dZ, db = np.empty_like(Z), np.empty_like(b)
    loss_backward(code, dZ, db, P, T, labels, use_labels, w)
    assert rel_error(dZ, numeric_gradient(value, Z)) <= 1e-6
    assert rel_error(db, numeric_gradient(value, b)) <= 1e-6


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("output,loss,code,use_labels", LOSS_CASES)
def test_unit_weights_equal_no_weights(output, loss, code, use_labels, dtype, rng):
    Z, b, T, labels, _ = loss_data(rng, output, use_labels, (33, 5), dtype)
    outs = []
    for w in (np.zeros(0, dtype), np.ones(33, dtype)):
        P = np.empty_like(Z)
        value = loss_forward(code, P, Z.copy(), b, T, labels, use_labels, w)
        dZ, db = np.empty_like(Z), np.empty_like(b)
        loss_backward(code, dZ, db, P, T, labels, use_labels, w)
        outs.append((value, dZ, db))
    # 1/n against 1/sum(1...1): the same number, so the same results up to the order of a sum
    assert outs[0][0] == pytest.approx(outs[1][0], rel=TOL[dtype])
    assert_close(outs[1][1], outs[0][1], dtype, np.abs(outs[0][1]).max())


@pytest.mark.parametrize("shape", [(1, 1), (7, 3), (33, 7), (9, 1)], ids=shape_id)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("output,code,use_labels", [("softmax", SOFTMAX_CE, True), ("softmax", SOFTMAX_CE, False),
                                                    ("sigmoid", SIGMOID_BCE, False), ("identity", IDENTITY_MSE, False)],
                         ids=["softmax-labels", "softmax-probs", "sigmoid", "identity"])
def test_correct_count_matches_naive(output, code, use_labels, dtype, shape, rng):
    n, k = shape
    P = rng.random(shape).astype(dtype)
    if use_labels:
        labels = rng.integers(0, k, n).astype(np.int64)
        T, Tref = np.zeros((0, k), dtype), naive.one_hot(labels, k)
    else:
        labels = NO_LABELS
        T = (rng.dirichlet(np.ones(k), n) if output == "softmax" else rng.random(shape)).astype(dtype)
        Tref = T
    got = correct_count(code, P, T, labels, use_labels)
    assert got == pytest.approx(naive.correct_count(output, P, Tref), rel=1e-12, abs=0)
    if output == "softmax":  # a perfect prediction counts every row
        assert correct_count(code, naive.one_hot(Tref.argmax(axis=1), k).astype(dtype), T, labels, use_labels) == n


# ---- optimizer updates with a gradient scale (clipping) -------------------------------------------
@pytest.mark.parametrize("gscale", [0.37, 1e-3])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("make", OPTIMIZERS)
def test_optimizer_gscale_equals_scaled_gradient(make, dtype, gscale, rng):
    # update(g, gscale) == update(g * gscale, 1): the scale multiplies the gradient as it is read,
    # before weight decay, momentum and the moment estimates (torch's clip_grad_norm_ then step())
    opt = make()
    _, names = twin_of(opt)
    n = 33
    sizes = opt._state_sizes(n)
    init = random_state(rng, names, sizes, dtype)
    p0 = rng.standard_normal(n).astype(dtype)
    runs = []
    for scale_in_kernel in (True, False):
        p = p0.copy()
        bufs = [init[name].copy() if name is not None and s else np.zeros(0, dtype) for name, s in zip(names, sizes)]
        g_rng = np.random.default_rng(7)
        for t in range(4, 7):
            g = g_rng.standard_normal(n).astype(dtype)
            if scale_in_kernel:
                optimizer_update(opt.kind, p, g, bufs[0], bufs[1], bufs[2], opt._hparams(), t, gscale)
            else:
                optimizer_update(opt.kind, p, g * dtype(gscale), bufs[0], bufs[1], bufs[2], opt._hparams(), t, 1.0)
        runs.append([p] + bufs)
    for a, b in zip(*runs):
        assert np.array_equal(a, b)


# ---- batch norm and layer norm --------------------------------------------------------------------
NORM_SHAPES = [(1, 7), (7, 1), (7, 33), (33, 7), (33, 33)]   # (n, k)
MOMENTUM, EPS = 0.1, 1e-5


def norm_data(rng, shape, dtype):
    n, k = shape
    Z = (1.5 * rng.standard_normal(shape) + rng.uniform(-2, 2, k)).astype(dtype)   # off-centre columns
    b = rng.uniform(-0.5, 0.5, k).astype(dtype)
    gamma = rng.uniform(0.5, 1.5, k).astype(dtype)
    run_mean = rng.standard_normal(k).astype(dtype)
    run_var = rng.uniform(0.5, 2.0, k).astype(dtype)
    return Z, b, gamma, run_mean, run_var


def run_bn_forward(Z, b, gamma, run_mean, run_var, training):
    """(Y, XH, mu, rstd, run_mean, run_var) from the kernels (the forward, then in training the
    running-statistics update that the network runs once a step is accepted); inputs are not modified."""
    n, k = Z.shape
    Y, rm, rv = Z.copy(), run_mean.copy(), run_var.copy()
    XH = np.full(Z.shape, np.nan, Z.dtype)
    mu, rstd = np.full(2 * k, np.nan, Z.dtype), np.full(k, np.nan, Z.dtype)
    batchnorm_forward(Y, XH, mu, rstd, b, gamma, rm, rv, EPS, training)
    assert np.array_equal(rm, run_mean) and np.array_equal(rv, run_var), "the forward wrote the running statistics"
    if training:
        batchnorm_update_running(mu, rm, rv, MOMENTUM, n)
    return Y, XH, mu[:k], rstd, rm, rv


def run_ln_forward(Z, b, gamma):
    n, k = Z.shape
    Y = Z.copy()
    XH = np.full(Z.shape, np.nan, Z.dtype)
    mu, rstd = np.full(n, np.nan, Z.dtype), np.full(n, np.nan, Z.dtype)
    layernorm_forward(Y, XH, mu, rstd, b, gamma, EPS)
    return Y, XH, mu, rstd


def run_norm_backward(kernel, dY, XH, gamma, rstd):
    dZ = dY.copy()
    db = np.full(dY.shape[1], np.nan, dY.dtype)
    dgamma = np.full(dY.shape[1], np.nan, dY.dtype)
    kernel(dZ, db, dgamma, XH, gamma, rstd)
    return dZ, db, dgamma


def xhat_scale(Zb, xhat, rstd, axis):
    # mu and var are sums in dtype: |error of xhat| ~ eps (|Zb|max rstd + |xhat|) (times the row count)
    return np.abs(Zb).max(axis=axis, keepdims=True) * np.expand_dims(naive.f64(rstd), axis) + np.abs(xhat)


@pytest.mark.parametrize("training", [True, False], ids=["train", "infer"])
@pytest.mark.parametrize("shape", NORM_SHAPES, ids=shape_id)
@pytest.mark.parametrize("dtype", DTYPES)
def test_batchnorm_forward_matches_naive(dtype, shape, training, rng):
    n, k = shape
    Z, b, gamma, rm0, rv0 = norm_data(rng, shape, dtype)
    Y, XH, mu, rstd, rm, rv = run_bn_forward(Z, b, gamma, rm0, rv0, training)
    Y_ref, xh_ref, mu_ref, rstd_ref, rm_ref, rv_ref = naive.batchnorm_forward(Z, b, gamma, rm0, rv0, MOMENTUM, EPS,
                                                                              training)
    Zb = naive.f64(Z) + naive.f64(b)
    scale = n * xhat_scale(Zb, xh_ref, rstd_ref, 0)
    assert_close(XH, xh_ref, dtype, scale)
    assert_close(Y, Y_ref, dtype, naive.f64(gamma) * scale)
    assert_close(mu, mu_ref, dtype, n * np.abs(Zb).max(axis=0))
    assert_close(rstd, rstd_ref, dtype, n * np.abs(rstd_ref))
    assert_close(rm, rm_ref, dtype, n * (np.abs(Zb).max(axis=0) + np.abs(rm_ref)))
    assert_close(rv, rv_ref, dtype, n * (Zb ** 2).max(axis=0) + np.abs(rv_ref))
    if not training or n == 1:   # inference reads the running statistics; a 1-row batch leaves them alone
        assert np.array_equal(rm, rm0) and np.array_equal(rv, rv0)
    if training and n == 1:      # the batch's own mean: xhat = 0
        assert not XH.any() and not Y.any()


@pytest.mark.parametrize("shape", NORM_SHAPES, ids=shape_id)
@pytest.mark.parametrize("dtype", DTYPES)
def test_batchnorm_backward_matches_naive(dtype, shape, rng):
    Z, b, gamma, rm, rv = norm_data(rng, shape, dtype)
    _, XH, _, rstd, _, _ = run_bn_forward(Z, b, gamma, rm, rv, True)
    dY = rng.standard_normal(shape).astype(dtype)
    dZ, db, dgamma = run_norm_backward(batchnorm_backward, dY, XH, gamma, rstd)
    dZ_ref, db_ref, dg_ref = naive.batchnorm_backward(dY, XH, gamma, rstd)
    # three terms that cancel: scale by their magnitudes (and the row count of the column sums)
    n = shape[0]
    g, r, xh, dy = naive.f64(gamma), naive.f64(rstd), naive.f64(XH), naive.f64(dY)
    scale = n * g * r * (np.abs(dy) + np.abs(dy).mean(axis=0) + np.abs(xh) * np.abs(dy * xh).mean(axis=0))
    assert_close(dZ, dZ_ref, dtype, scale)
    assert_close(db, db_ref, dtype, scale.sum(axis=0))
    assert_close(dgamma, dg_ref, dtype, n * np.abs(dy * xh).sum(axis=0))


@pytest.mark.parametrize("shape", [s for s in NORM_SHAPES if s[1] > 1], ids=shape_id)
@pytest.mark.parametrize("dtype", DTYPES)
def test_layernorm_forward_matches_naive(dtype, shape, rng):
    n, k = shape
    Z, b, gamma, _, _ = norm_data(rng, shape, dtype)
    Y, XH, mu, rstd = run_ln_forward(Z, b, gamma)
    Y_ref, xh_ref, mu_ref, rstd_ref = naive.layernorm_forward(Z, b, gamma, EPS)
    Zb = naive.f64(Z) + naive.f64(b)
    scale = k * xhat_scale(Zb, xh_ref, rstd_ref, 1)
    assert_close(XH, xh_ref, dtype, scale)
    assert_close(Y, Y_ref, dtype, naive.f64(gamma) * scale)
    assert_close(mu, mu_ref, dtype, k * np.abs(Zb).max(axis=1))
    assert_close(rstd, rstd_ref, dtype, k * np.abs(rstd_ref))


@pytest.mark.parametrize("shape", [s for s in NORM_SHAPES if s[1] > 1], ids=shape_id)
@pytest.mark.parametrize("dtype", DTYPES)
def test_layernorm_backward_matches_naive(dtype, shape, rng):
    n, k = shape
    Z, b, gamma, _, _ = norm_data(rng, shape, dtype)
    _, XH, _, rstd = run_ln_forward(Z, b, gamma)
    dY = rng.standard_normal(shape).astype(dtype)
    dZ, db, dgamma = run_norm_backward(layernorm_backward, dY, XH, gamma, rstd)
    dZ_ref, db_ref, dg_ref = naive.layernorm_backward(dY, XH, gamma, rstd)
    g, r, xh, dy = naive.f64(gamma), naive.f64(rstd)[:, None], naive.f64(XH), naive.f64(dY)
    gd = np.abs(g * dy)
    scale = k * r * (gd + gd.mean(axis=1, keepdims=True) + np.abs(xh) * (gd * np.abs(xh)).mean(axis=1, keepdims=True))
    assert_close(dZ, dZ_ref, dtype, scale)
    assert_close(db, db_ref, dtype, n * scale.sum(axis=0))
    assert_close(dgamma, dg_ref, dtype, n * np.abs(dy * xh).sum(axis=0))


def test_layernorm_single_feature_is_zero():
    # one feature: the row's mean is the value itself, so xhat = 0 (and so is the gradient)
    Z = np.array([[3.0], [-2.0]])
    Y, XH, _, rstd = run_ln_forward(Z, np.array([0.5]), np.array([2.0]))
    assert not Y.any() and not XH.any()
    dZ, db, dgamma = run_norm_backward(layernorm_backward, np.ones_like(Z), XH, np.array([2.0]), rstd)
    assert not dZ.any() and not db.any() and not dgamma.any()


def test_batchnorm_running_statistics_follow_torch_semantics(rng):
    # momentum 0.1: run = 0.9 run + 0.1 stat with the *unbiased* batch variance; written out by hand
    Z = np.array([[1.0, 10.0], [3.0, 10.0], [8.0, 13.0]])
    b = np.array([0.0, -10.0])
    rm, rv = np.array([0.5, -1.0]), np.array([2.0, 0.25])
    _, _, mu, rstd, rm1, rv1 = run_bn_forward(Z, b, np.ones(2), rm, rv, True)
    # column 0: mean 4, unbiased var ((-3)^2 + (-1)^2 + 4^2) / 2 = 13; column 1: mean 1, var (1 + 1 + 4) / 2 = 3
    np.testing.assert_allclose(mu, [4.0, 1.0], rtol=1e-15)
    np.testing.assert_allclose(rstd, 1.0 / np.sqrt(np.array([26.0 / 3, 2.0]) + EPS), rtol=1e-15)  # biased var
    np.testing.assert_allclose(rm1, [0.9 * 0.5 + 0.1 * 4.0, 0.9 * -1.0 + 0.1 * 1.0], rtol=1e-15)
    np.testing.assert_allclose(rv1, [0.9 * 2.0 + 0.1 * 13.0, 0.9 * 0.25 + 0.1 * 3.0], rtol=1e-15)
    # inference: (Z + b - run_mean) / sqrt(run_var + eps)
    Y, XH, _, _, rm2, rv2 = run_bn_forward(Z, b, np.full(2, 2.0), rm1, rv1, False)
    np.testing.assert_allclose(XH, (Z + b - rm1) / np.sqrt(rv1 + EPS), rtol=1e-14)
    np.testing.assert_allclose(Y, 2.0 * XH, rtol=1e-15)
    assert np.array_equal(rm2, rm1) and np.array_equal(rv2, rv1)


def test_batchnorm_matches_torch_batchnorm1d(rng):
    torch = pytest.importorskip("torch")
    n, k = 9, 5
    Z, b, gamma, rm, rv = norm_data(rng, (n, k), np.float64)
    bn = torch.nn.BatchNorm1d(k, momentum=MOMENTUM, eps=EPS, dtype=torch.float64)
    with torch.no_grad():
        bn.weight.copy_(torch.from_numpy(gamma))
        bn.bias.zero_()
        bn.running_mean.copy_(torch.from_numpy(rm))
        bn.running_var.copy_(torch.from_numpy(rv))
    x = torch.from_numpy(Z + b).requires_grad_(True)
    dY = rng.standard_normal((n, k))
    bn.train()
    out = bn(x)
    out.backward(torch.from_numpy(dY))
    Y, XH, _, rstd, rm1, rv1 = run_bn_forward(Z, b, gamma, rm, rv, True)
    np.testing.assert_allclose(Y, out.detach().numpy(), rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(rm1, bn.running_mean.numpy(), rtol=1e-13)
    np.testing.assert_allclose(rv1, bn.running_var.numpy(), rtol=1e-13)
    dZ, db, dgamma = run_norm_backward(batchnorm_backward, dY, XH, gamma, rstd)
    np.testing.assert_allclose(dZ, x.grad.numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(dgamma, bn.weight.grad.numpy(), rtol=1e-12)
    bn.eval()
    with torch.no_grad():
        out_eval = bn(torch.from_numpy(Z + b)).numpy()
    np.testing.assert_allclose(run_bn_forward(Z, b, gamma, rm1, rv1, False)[0], out_eval, rtol=1e-12, atol=1e-13)


def test_layernorm_matches_torch_layernorm(rng):
    torch = pytest.importorskip("torch")
    n, k = 6, 7
    Z, b, gamma, _, _ = norm_data(rng, (n, k), np.float64)
    ln = torch.nn.LayerNorm(k, eps=EPS, dtype=torch.float64)
    with torch.no_grad():
        ln.weight.copy_(torch.from_numpy(gamma))
        ln.bias.zero_()
    x = torch.from_numpy(Z + b).requires_grad_(True)
    dY = rng.standard_normal((n, k))
    out = ln(x)
    out.backward(torch.from_numpy(dY))
    Y, XH, _, rstd = run_ln_forward(Z, b, gamma)
    np.testing.assert_allclose(Y, out.detach().numpy(), rtol=1e-12, atol=1e-13)
    dZ, _, dgamma = run_norm_backward(layernorm_backward, dY, XH, gamma, rstd)
    np.testing.assert_allclose(dZ, x.grad.numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(dgamma, ln.weight.grad.numpy(), rtol=1e-12)


@pytest.mark.parametrize("kind", ["batch", "layer"])
def test_norm_gradient(kind, rng):
    # central differences of sum(Y * dY) w.r.t. Z, b and gamma (training mode), float64
    shape = (6, 5)
    Z, b, gamma, rm, rv = norm_data(rng, shape, np.float64)
    dY = rng.standard_normal(shape)

    def forward():
        return run_bn_forward(Z, b, gamma, rm, rv, True) if kind == "batch" else run_ln_forward(Z, b, gamma)

    def value():
        return float(np.sum(forward()[0] * dY))

    out = forward()
    XH, rstd = out[1], out[3]
    dZ, db, dgamma = run_norm_backward(batchnorm_backward if kind == "batch" else layernorm_backward,
                                       dY, XH, gamma, rstd)
    assert rel_error(dZ, numeric_gradient(value, Z)) <= 1e-6
    assert rel_error(dgamma, numeric_gradient(value, gamma)) <= 1e-6
    num_db = numeric_gradient(value, b)
    if kind == "batch":   # the batch mean absorbs b: its gradient is 0 (up to rounding on both sides)
        assert np.abs(db).max() <= 1e-12 and np.abs(num_db).max() <= 1e-8
    else:
        assert rel_error(db, num_db) <= 1e-6
