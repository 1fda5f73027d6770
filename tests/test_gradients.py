"""Whole-network central-difference gradient checks in float64 over the flat parameter vector."""

import numpy as np
import pytest

import fastbp as fb
import fastbp._buffers as buffers
from fastbp.kernels.activations import ACTIVATIONS
from fastbp.kernels.losses import PAIRS
from fastbp.kernels.network import WT

from .conftest import make_data


def numeric_gradient(net, X, y, h=1e-6, sample_weight=None):
    p = net.params
    g = np.zeros_like(p)
    for i in range(p.size):
        old = p[i]
        p[i] = old + h
        lp, _ = net.loss_and_gradients(X, y, sample_weight)
        p[i] = old - h
        lm, _ = net.loss_and_gradients(X, y, sample_weight)
        p[i] = old
        g[i] = (lp - lm) / (2 * h)
    return g


def flat_grads(net, X, y, sample_weight=None):
    """(loss, gradient as a flat buffer laid out as net.params); layers give (dW, db) or
    (dW, db, dgamma, dbeta)."""
    loss, grads = net.loss_and_gradients(X, y, sample_weight)
    flat = np.zeros_like(net.params)
    for g, views in zip(grads, net._views(flat)):
        assert len(g) == len(views)
        for a, v in zip(g, views):
            v[...] = a
    return loss, flat


def rel_error(a, b):
    return np.linalg.norm(a - b) / max(np.linalg.norm(a) + np.linalg.norm(b), 1e-300)


@pytest.mark.parametrize("output,loss", list(PAIRS))
@pytest.mark.parametrize("activation", sorted(ACTIVATIONS))
def test_network_gradient(activation, output, loss, rng):
    k = 3
    net = fb.Network([4, 6, 5, k], activation=activation, output=output, loss=loss, dtype=np.float64, seed=3)
    # move biases off zero so relu-like kinks are not hit by symmetric inputs
    for W, b in net.layers:
        b[...] = rng.uniform(-0.3, 0.3, b.shape)
    X, y = make_data(rng, 7, 4, k, loss)
    _, analytic = flat_grads(net, X, y)
    numeric = numeric_gradient(net, X, y)
    assert rel_error(analytic, numeric) <= 1e-6


@pytest.mark.parametrize("activation", ["relu", "tanh", "gelu"])
def test_gradient_probability_targets_and_mixed_activations(activation, rng):
    net = fb.Network([3, 5, 4, 4], activation=[activation, "sigmoid"], dtype=np.float64, seed=1)
    X = rng.standard_normal((6, 3))
    T = rng.dirichlet(np.ones(4), 6)
    _, analytic = flat_grads(net, X, T)
    assert rel_error(analytic, numeric_gradient(net, X, T)) <= 1e-6


def test_gradient_soft_targets_whose_rows_do_not_sum_to_one(rng):
    # multi-hot, all-zero and unnormalised rows: the gradient is P sum(T) - T, not P - T (torch agrees)
    net = fb.Network([3, 5, 4], dtype=np.float64, seed=2)
    X = rng.standard_normal((5, 3))
    T = np.array([[1, 1, 0, 0], [0, 0, 0, 0], [0.5, 0.5, 0.5, 0], [0, 0, 0, 1], [0.2, 0, 0.1, 0]], float)
    _, analytic = flat_grads(net, X, T)
    assert rel_error(analytic, numeric_gradient(net, X, T)) <= 1e-6


def test_gradient_single_layer_and_single_output(rng):
    net = fb.Network([5, 1], output="sigmoid", dtype=np.float64)
    X = rng.standard_normal((9, 5))
    y = (rng.random(9) > 0.5).astype(float)
    _, analytic = flat_grads(net, X, y)
    assert rel_error(analytic, numeric_gradient(net, X, y)) <= 1e-6


def test_padding_gets_zero_gradient(rng):
    # alignment padding between blocks of the flat buffer must stay inert
    net = fb.Network([3, 5, 3], dtype=np.float64)
    X, y = make_data(rng, 4, 3, 3, "cross_entropy")
    net.loss_and_gradients(X, y)
    used = np.zeros(net.params.size, bool)
    for W, b in net._views(used):
        W[...] = True
        b[...] = True
    assert (~used).sum() > 0
    assert np.all(net.grads[~used] == 0) and np.all(net.params[~used] == 0)


# ---- norm layers, sample and class weights, L2 ------------------------------------------------------
def randomize(net, rng):
    """Biases off zero (relu kinks away from symmetric inputs), gamma away from 1, beta off 0."""
    for views in net._views(net.params):
        for a in views[1:]:
            a[...] += rng.uniform(-0.3, 0.3, a.shape)


NORM_ACTIVATIONS = ["relu", "tanh", "gelu", "elu"]


@pytest.mark.parametrize("output,loss", list(PAIRS))
@pytest.mark.parametrize("activation", NORM_ACTIVATIONS)
@pytest.mark.parametrize("norm", ["batch", "layer"])
def test_network_gradient_with_norm(norm, activation, output, loss, rng):
    k = 3
    net = fb.Network([4, 6, 5, k], activation=activation, output=output, loss=loss, dtype=np.float64, seed=3,
                     norm=norm)
    randomize(net, rng)
    X, y = make_data(rng, 7, 4, k, loss)
    _, grads = net.loss_and_gradients(X, y)
    assert [len(g) for g in grads] == [4, 4, 2]       # (dW, db, dgamma, dbeta) for the normed layers
    _, analytic = flat_grads(net, X, y)
    assert rel_error(analytic, numeric_gradient(net, X, y)) <= 1e-6


def test_network_gradient_mixed_norms(rng):
    net = fb.Network([3, 5, 6, 4, 2], activation=["tanh", "relu", "sigmoid"], dtype=np.float64, seed=2,
                     norm=["layer", None, "batch"], output="sigmoid")
    randomize(net, rng)
    X, y = make_data(rng, 6, 3, 2, "binary_cross_entropy")
    _, analytic = flat_grads(net, X, y)
    assert rel_error(analytic, numeric_gradient(net, X, y)) <= 1e-6


@pytest.mark.parametrize("norm", [None, "batch"])
@pytest.mark.parametrize("output,loss", list(PAIRS))
def test_network_gradient_with_sample_weight(output, loss, norm, rng):
    k = 3
    net = fb.Network([4, 6, k], activation="tanh", output=output, loss=loss, dtype=np.float64, seed=3, norm=norm)
    randomize(net, rng)
    X, y = make_data(rng, 8, 4, k, loss)
    w = rng.uniform(0.2, 3.0, 8)
    w[2] = 0.0
    loss_w, analytic = flat_grads(net, X, y, w)
    assert rel_error(analytic, numeric_gradient(net, X, y, sample_weight=w)) <= 1e-6
    # and the weights matter: the unweighted gradient is a different vector
    _, unweighted = flat_grads(net, X, y)
    assert rel_error(analytic, unweighted) > 1e-3


def test_class_weight_gradient_is_the_weighted_loss_gradient(rng):
    # fit with class_weight, one full batch of plain SGD with lr = 1: the step is minus the gradient of
    # sum_i cw[y_i] l_i / sum_i cw[y_i], checked against central differences of that loss
    cw = {0: 0.5, 1: 2.0, 2: 1.25}
    X, y = make_data(rng, 9, 4, 3, "cross_entropy")
    net = fb.Network([4, 5, 3], activation="tanh", dtype=np.float64, seed=1)
    randomize(net, rng)
    w = np.array([cw[c] for c in y])
    numeric = numeric_gradient(net, X, y, sample_weight=w)
    before = net.params.copy()
    h = net.fit(X, y, epochs=1, batch_size=9, optimizer=fb.SGD(lr=1.0), shuffle=False, class_weight=cw, verbose=0)
    assert rel_error(before - net.params, numeric) <= 1e-6
    net.params[...] = before
    assert h.history["loss"][0] == pytest.approx(net.loss_and_gradients(X, y, w)[0], rel=1e-13)


@pytest.mark.parametrize("norm", [None, "batch"])
@pytest.mark.parametrize("output,loss", list(PAIRS))
def test_network_gradient_with_l2(output, loss, norm, rng):
    # scikit-learn's alpha: loss + alpha/(2n) sum W^2, dW + alpha/n W; biases, gamma and beta untouched
    k, n, alpha = 2, 7, 0.3
    net = fb.Network([4, 6, 5, k], activation="tanh", output=output, loss=loss, dtype=np.float64, seed=3, norm=norm)
    randomize(net, rng)
    X, y = make_data(rng, n, 4, k, loss)
    loss0, grads0 = net.loss_and_gradients(X, y)
    net._l2 = alpha
    loss1, grads1 = net.loss_and_gradients(X, y)
    _, analytic = flat_grads(net, X, y)
    assert rel_error(analytic, numeric_gradient(net, X, y)) <= 1e-6
    W_sq = sum(np.sum(v[0] ** 2) for v in net._views(net.params))
    assert loss1 == pytest.approx(loss0 + alpha / (2 * n) * W_sq, rel=1e-13)
    for g0, g1, views in zip(grads0, grads1, net._views(net.params)):
        np.testing.assert_allclose(g1[0], g0[0] + alpha / n * views[0], rtol=1e-12, atol=1e-15)
        for a0, a1 in zip(g0[1:], g1[1:]):
            assert np.array_equal(a0, a1)


@pytest.mark.parametrize("l2", [0.0, 0.3])
@pytest.mark.parametrize("norm", [None, "batch"])
@pytest.mark.parametrize("k,output,activation", [(3, "softmax", "relu"), (1, "identity", "tanh")])
def test_network_gradient_dx_via_transpose(k, output, activation, norm, l2, rng, monkeypatch):
    # the backward pass's other way to dX = dZ W^T (W^T copied into the dW slot first, used by
    # small float32 layers: _blas.dx_via_transpose), forced on for every layer here
    monkeypatch.setattr(buffers, "dx_via_transpose", lambda *a: True)
    loss = "cross_entropy" if output == "softmax" else "mse"
    net = fb.Network([4, 6, 5, k], activation=activation, output=output, dtype=np.float64, seed=3, norm=norm)
    randomize(net, rng)
    net._l2 = l2
    X, y = make_data(rng, 7, 4, k, loss)
    if k == 1:
        y = y.ravel()
    _, analytic = flat_grads(net, X, y)
    layout = net._workspace(7)[1]
    assert list(layout[:, WT]) == [0, 1, 1]
    assert rel_error(analytic, numeric_gradient(net, X, y)) <= 1e-6
