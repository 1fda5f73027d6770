"""Every kernel against its NumPy twin in tests/naive.py, per-kernel gradient checks, edge cases.

Kernels are called with the argument types the network drivers use (C-contiguous arrays of one
dtype, int64 codes and labels, float64 scalars as Python floats, flags as Python bools), so each
kernel is compiled once per dtype (Numba caches it, so warm runs take seconds).

Tolerances: 1e-5 (float32) and 1e-12 (float64) relative to a *scale*. The scale is |expected|
unless a comment says why the rounding of the inputs, or of cancelling terms, bounds the error
by something larger (e.g. the GEMM bound |alpha| |A| |B| + |beta| |C|).
"""

import numpy as np
import pytest

import fastbp as fb
from fastbp._blas import gemm
from fastbp.kernels.activations import ACTIVATIONS, activation_backward, activation_forward
from fastbp.kernels.dense import dense_backward, dense_forward
from fastbp.kernels.dropout import dropout_backward, dropout_forward
from fastbp.kernels.losses import (IDENTITY_HUBER, IDENTITY_MSE, SIGMOID_BCE, SOFTMAX_CE, loss_backward,
                                   loss_forward, output_forward)
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
def test_gemm_matches_naive(dtype, trans, m, n, k, threads, rng):
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
def test_gemm_empty_inner_dimension_scales_c(dtype):
    A, B = np.zeros((3, 0), dtype), np.zeros((0, 4), dtype)
    C = np.full((3, 4), np.nan, dtype)
    gemm(False, False, 1.0, A, B, 0.0, C)
    assert np.array_equal(C, np.zeros((3, 4)))
    C[...] = 2.0
    gemm(False, False, 1.0, A, B, 0.5, C)
    assert np.array_equal(C, np.ones((3, 4)))


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
def test_dense_forward_matches_naive(dtype, shape, threads, rng):
    X, W, b = dense_data(rng, shape, dtype)
    Z = np.full((shape[0], shape[2]), np.nan, dtype)
    dense_forward(Z, X, W, b)
    scale = np.abs(naive.f64(X)) @ np.abs(naive.f64(W)) + np.abs(naive.f64(b))
    assert_close(Z, naive.dense_forward(X, W, b), dtype, scale)


@pytest.mark.parametrize("need_dx", [True, False], ids=["dx", "no_dx"])
@pytest.mark.parametrize("shape", DENSE_SHAPES, ids=shape_id)
@pytest.mark.parametrize("dtype", DTYPES)
def test_dense_backward_matches_naive(dtype, shape, need_dx, threads, rng):
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
    pytest.param(lambda: fb.AdamW(lr=0.05), id="adamw"),
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
                                                    opt.amsgrad)), ("m", "v", "vmax")
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
