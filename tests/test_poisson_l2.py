"""The exp + Poisson output pair against a NumPy twin, and the L2 term over the batch's
total sample weight (the two kernel changes behind fastbp.sklearn's MLPRegressor(loss="poisson")
and its sample weights)."""

import numpy as np
import pytest

import fastbp as fb
from fastbp.kernels.losses import EXP_POISSON, PAIRS, loss_backward, loss_forward, output_forward

DTYPES = [pytest.param(np.float32, id="f32"), pytest.param(np.float64, id="f64")]
TOL = {np.float32: 1e-5, np.float64: 1e-12}
SHAPES = [(1, 1), (7, 3), (33, 1), (5, 17)]


# ---- NumPy twins ----------------------------------------------------------------------------------
def poisson_rows(Zb, T):
    """Per-row half Poisson deviance of the log-rates Zb, mean over the k outputs:
    t log(t / p) - t + p with p = exp(z) (t log t = 0 at t = 0), as scikit-learn's poisson_loss."""
    Zb, T = np.asarray(Zb, np.float64), np.asarray(T, np.float64)
    P = np.exp(Zb)
    tlogt = np.where(T > 0, T * np.log(np.where(T > 0, T, 1.0)), 0.0)
    return np.mean(P - T * Zb + tlogt - T, axis=1)


def poisson_loss(Zb, T, sw=None):
    rows = poisson_rows(Zb, T)
    return float(np.average(rows, weights=sw))


def poisson_grad(Zb, T, sw=None):
    """d poisson_loss / d Zb = w_i (exp(z) - t) / (k sum w)."""
    Zb, T = np.asarray(Zb, np.float64), np.asarray(T, np.float64)
    n, k = Zb.shape
    w = np.ones(n) if sw is None else np.asarray(sw, np.float64)
    return (np.exp(Zb) - T) * w[:, None] / (k * w.sum())


def _data(rng, shape, dtype, weighted):
    n, k = shape
    Z = rng.normal(0, 1.0, shape).astype(dtype)
    b = rng.uniform(-0.5, 0.5, k).astype(dtype)
    T = rng.poisson(1.5, shape).astype(dtype)
    sw = rng.uniform(0, 3, n).astype(dtype) if weighted else np.zeros(0, dtype)
    return Z, b, T, sw


def _forward(Z, b, T, sw):
    Zc = Z.copy()
    P = np.full(Z.shape, np.nan, Z.dtype)
    loss = loss_forward(EXP_POISSON, P, Zc, b, T, np.zeros(0, np.int64), False, sw)
    return loss, P


def _backward(P, T, sw):
    dZ = np.full(P.shape, np.nan, P.dtype)
    db = np.full(P.shape[1], np.nan, P.dtype)
    loss_backward(EXP_POISSON, dZ, db, P, T, np.zeros(0, np.int64), False, sw)
    return dZ, db


def test_pair_is_registered():
    assert PAIRS[("exp", "poisson")] == EXP_POISSON
    net = fb.Network([3, 4, 2], output="exp", dtype=np.float64)
    assert net.loss == "poisson" and not net.is_classifier


@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "weighted"])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("dtype", DTYPES)
def test_poisson_forward_backward_match_twin(dtype, shape, weighted):
    rng = np.random.default_rng(7)
    Z, b, T, sw = _data(rng, shape, dtype, weighted)
    zb = Z.astype(np.float64) + b.astype(np.float64)
    w = sw.astype(np.float64) if weighted else None
    loss, P = _forward(Z, b, T, sw)
    tol = TOL[dtype]
    assert abs(loss - poisson_loss(zb, T, w)) <= tol * max(1.0, abs(poisson_loss(zb, T, w)))
    np.testing.assert_allclose(P, np.exp(zb), rtol=10 * tol)
    dZ, db = _backward(P, T, sw)
    g = poisson_grad(zb, T, w)
    np.testing.assert_allclose(dZ, g, rtol=10 * tol, atol=10 * tol * np.abs(g).max())
    np.testing.assert_allclose(db, g.sum(axis=0), rtol=10 * tol, atol=10 * tol * np.abs(g).max() * shape[0])
    # inference gives the same rates
    Po = np.full(shape, np.nan, dtype)
    output_forward(EXP_POISSON, Po, Z.copy(), b)
    np.testing.assert_array_equal(Po, P)


def test_poisson_perfect_fit_has_zero_loss_and_gradient():
    T = np.array([[0.0, 1.0, 4.0], [2.0, 0.5, 7.0]])
    Z = np.log(np.maximum(T, 1e-300))
    Z[T == 0] = -800.0                     # exp underflows to the rate 0 of a zero count
    b = np.zeros(3)
    loss, P = _forward(Z, b, T, np.zeros(0))
    assert loss == pytest.approx(0.0, abs=1e-12)
    dZ, _ = _backward(P, T, np.zeros(0))
    np.testing.assert_allclose(dZ, 0.0, atol=1e-12)


def test_poisson_kernel_gradient_by_central_differences():
    rng = np.random.default_rng(3)
    Z, b, T, sw = _data(rng, (6, 3), np.float64, True)

    def value():
        return _forward(Z, b, T, sw)[0]

    _, P = _forward(Z, b, T, sw)
    dZ, db = _backward(P, T, sw)
    num = np.zeros_like(Z)
    for i in np.ndindex(Z.shape):
        old = Z[i]
        Z[i] = old + 1e-6
        lp = value()
        Z[i] = old - 1e-6
        lm = value()
        Z[i] = old
        num[i] = (lp - lm) / 2e-6
    np.testing.assert_allclose(dZ, num, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(db, num.sum(axis=0), rtol=1e-6, atol=1e-9)


def test_negative_poisson_targets_are_refused():
    net = fb.Network([2, 3, 1], output="exp", dtype=np.float64)
    with pytest.raises(fb.InputError, match="must be >= 0"):
        net.evaluate(np.ones((3, 2)), np.array([1.0, -1.0, 0.0]))


# ---- L2 over the total sample weight -----------------------------------------------------------------
def _flat(net, grads):
    out = np.zeros_like(net.params)
    for (dW, db), (W, b) in zip(grads, net._views(out)):
        W[...] = dW
        b[...] = db
    return out


@pytest.mark.parametrize("output", ["softmax", "sigmoid", "identity", "exp"])
def test_l2_divides_by_the_total_weight_and_gradient_matches(output):
    rng = np.random.default_rng(11)
    net = fb.Network([4, 5, 3], activation="tanh", output=output, dtype=np.float64, seed=2)
    alpha = 0.7
    n = 9
    X = rng.normal(size=(n, 4))
    y = {"softmax": rng.integers(0, 3, n), "sigmoid": (rng.random((n, 3)) > 0.5).astype(float),
         "identity": rng.normal(size=(n, 3)), "exp": rng.poisson(1.0, (n, 3)).astype(float)}[output]
    sw = rng.uniform(0.1, 4.0, n)
    data_loss = net.evaluate(X, y, sample_weight=sw)["loss"]
    net._l2 = alpha
    loss, grads = net.loss_and_gradients(X, y, sample_weight=sw)
    sq = sum(float((W * W).sum()) for W, _ in net.layers)
    assert loss == pytest.approx(data_loss + 0.5 * alpha * sq / sw.sum(), rel=1e-12)
    analytic = _flat(net, grads)
    numeric = np.zeros_like(net.params)
    p = net.params
    for i in range(p.size):
        old = p[i]
        p[i] = old + 1e-6
        lp = net.loss_and_gradients(X, y, sample_weight=sw)[0]
        p[i] = old - 1e-6
        lm = net.loss_and_gradients(X, y, sample_weight=sw)[0]
        p[i] = old
        numeric[i] = (lp - lm) / 2e-6
    assert np.linalg.norm(analytic - numeric) <= 1e-6 * np.linalg.norm(analytic)


def test_weight_two_equals_a_repeated_row_with_l2():
    """With the L2 term over sum(w), an integer weight is exactly that many copies of the row
    (scikit-learn's sample-weight equivalence), also in a training step."""
    rng = np.random.default_rng(5)
    X = rng.normal(size=(6, 3))
    y = rng.integers(0, 2, 6)
    w = np.array([2, 1, 0, 3, 1, 1])
    nets = [fb.Network([3, 4, 2], activation="relu", dtype=np.float64, seed=1) for _ in range(2)]
    for net in nets:
        net._l2 = 0.3
    la, ga = nets[0].loss_and_gradients(X, y, sample_weight=w.astype(float))
    lb, gb = nets[1].loss_and_gradients(np.repeat(X, w, axis=0), np.repeat(y, w))
    assert la == pytest.approx(lb, rel=1e-12)
    np.testing.assert_allclose(_flat(nets[0], ga), _flat(nets[1], gb), rtol=1e-10, atol=1e-14)
    opts = [fb.SGD(lr=0.1, momentum=0.9) for _ in range(2)]
    nets[0].train_step(X, y, opts[0], sample_weight=w.astype(float))
    nets[1].train_step(np.repeat(X, w, axis=0), np.repeat(y, w), opts[1])
    np.testing.assert_allclose(nets[0].params, nets[1].params, rtol=1e-10, atol=1e-14)


def test_unweighted_l2_is_over_the_row_count():
    rng = np.random.default_rng(6)
    net = fb.Network([3, 4, 1], output="identity", dtype=np.float64, seed=0)
    X, y = rng.normal(size=(5, 3)), rng.normal(size=5)
    data_loss = net.evaluate(X, y)["loss"]
    net._l2 = 2.0
    sq = sum(float((W * W).sum()) for W, _ in net.layers)
    assert net.loss_and_gradients(X, y)[0] == pytest.approx(data_loss + sq / 5, rel=1e-12)
