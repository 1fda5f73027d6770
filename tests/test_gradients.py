"""Whole-network central-difference gradient checks in float64 over the flat parameter vector."""

import numpy as np
import pytest

import fastbp as fb
from fastbp.kernels.activations import ACTIVATIONS
from fastbp.kernels.losses import PAIRS

from .conftest import make_data


def numeric_gradient(net, X, y, h=1e-6):
    p = net.params
    g = np.zeros_like(p)
    for i in range(p.size):
        old = p[i]
        p[i] = old + h
        lp, _ = net.loss_and_gradients(X, y)
        p[i] = old - h
        lm, _ = net.loss_and_gradients(X, y)
        p[i] = old
        g[i] = (lp - lm) / (2 * h)
    return g


def flat_grads(net, X, y):
    loss, grads = net.loss_and_gradients(X, y)
    flat = np.zeros_like(net.params)
    for (dW, db), (W, b) in zip(grads, net._views(flat)):
        W[...] = dW
        b[...] = db
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
