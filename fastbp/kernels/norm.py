"""Normalization layers (between a dense layer's GEMM and its activation), as forward/backward pairs.

Forward, in place on Z:  Z <- gamma * xhat,  xhat = (Z + b - mu) * rstd.
The shift ``beta`` is then added by the activation kernel (as its bias), so a
normalized layer is GEMM -> norm -> activation(+beta) -> dropout with no extra
pass. ``xhat`` is kept in XH for the backward pass, mu and rstd in two vectors.

- batch norm (as torch.nn.BatchNorm1d): mu, var per feature over the batch
  (biased var); at inference xhat uses the running statistics. The training
  forward leaves the batch's mean and variance in ``mu`` (2k long); a separate
  kernel, batchnorm_update_running, folds them into the running statistics as
  run = (1 - momentum) run + momentum stat (unbiased variance). The network
  runs it only once the step is accepted (finite loss and gradients), so a
  rejected step leaves the running statistics as they were.
- layer norm (as torch.nn.LayerNorm over the features): mu, var per row, the
  same in training and inference; no running statistics.

Backward, in place on dY (the gradient w.r.t. gamma * xhat, which the
activation's backward produced):  dZ <- d loss / d (Z + b), db = sum over rows
of dZ, dgamma = sum over rows of dY * xhat.
"""

import numpy as np
from numba import njit

from .._config import INLINE, JIT

NO_NORM, BATCH_NORM, LAYER_NORM = range(3)
NORMS = {None: NO_NORM, "none": NO_NORM, "batch": BATCH_NORM, "layer": LAYER_NORM}


# ---- batch norm -----------------------------------------------------------------------------
@njit(**INLINE)
def batchnorm_forward(Z, XH, mu, rstd, b, gamma, run_mean, run_var, eps, training):
    # Z, XH (n, k); mu (2k,): training writes the batch mean to mu[:k] and its (biased) variance
    # to mu[k:2k]; rstd, b, gamma, run_mean, run_var (k,). The running statistics are only read.
    n, k = Z.shape
    if training:
        for j in range(k):
            mu[j] = 0.0
            rstd[j] = 0.0
        for i in range(n):
            for j in range(k):
                mu[j] += Z[i, j] + b[j]
        for j in range(k):
            mu[j] /= n
        for i in range(n):
            for j in range(k):
                d = Z[i, j] + b[j] - mu[j]
                rstd[j] += d * d
        for j in range(k):
            var = rstd[j] / n
            mu[k + j] = var
            rstd[j] = 1.0 / np.sqrt(var + eps)
    else:
        for j in range(k):
            mu[j] = run_mean[j]
            rstd[j] = 1.0 / np.sqrt(run_var[j] + eps)
    for i in range(n):
        for j in range(k):
            xh = (Z[i, j] + b[j] - mu[j]) * rstd[j]
            XH[i, j] = xh
            Z[i, j] = gamma[j] * xh


@njit(**INLINE)
def batchnorm_update_running(mu, run_mean, run_var, momentum, n):
    # mu (2k,): a training forward's batch mean and biased variance over n rows; run_mean, run_var (k,)
    # run = (1 - momentum) run + momentum stat, with the unbiased variance (torch); a 1-row batch
    # leaves them alone
    k = run_mean.shape[0]
    if n <= 1:
        return
    for j in range(k):
        run_mean[j] = (1.0 - momentum) * run_mean[j] + momentum * mu[j]
        run_var[j] = (1.0 - momentum) * run_var[j] + momentum * mu[k + j] * n / (n - 1)


@njit(**INLINE)
def batchnorm_backward(dY, db, dgamma, XH, gamma, rstd):
    # dY (n, k) in place -> dZ;  db, dgamma, gamma, rstd (k,).  Inverts Y = gamma (Z + b - mu) rstd
    # with batch mu, rstd:  dZ = gamma rstd (dY - sum_i dY / n - xhat sum_i dY xhat / n)
    n, k = dY.shape
    for j in range(k):
        db[j] = 0.0          # holds sum_i dY until the last pass
        dgamma[j] = 0.0
    for i in range(n):
        for j in range(k):
            g = dY[i, j]
            db[j] += g
            dgamma[j] += g * XH[i, j]
    inv_n = 1.0 / n
    for j in range(k):
        db[j] *= inv_n
    for i in range(n):
        for j in range(k):
            dY[i, j] = gamma[j] * rstd[j] * (dY[i, j] - db[j] - XH[i, j] * dgamma[j] * inv_n)
    for j in range(k):
        db[j] = 0.0
    for i in range(n):
        for j in range(k):
            db[j] += dY[i, j]


# ---- layer norm -----------------------------------------------------------------------------
@njit(**INLINE)
def layernorm_forward(Z, XH, mu, rstd, b, gamma, eps):
    # Z, XH (n, k); mu, rstd (n,); b, gamma (k,)
    n, k = Z.shape
    for i in range(n):
        s = 0.0
        for j in range(k):
            s += Z[i, j] + b[j]
        m = s / k
        v = 0.0
        for j in range(k):
            d = Z[i, j] + b[j] - m
            v += d * d
        r = 1.0 / np.sqrt(v / k + eps)
        mu[i] = m
        rstd[i] = r
        for j in range(k):
            xh = (Z[i, j] + b[j] - m) * r
            XH[i, j] = xh
            Z[i, j] = gamma[j] * xh


@njit(**INLINE)
def layernorm_backward(dY, db, dgamma, XH, gamma, rstd):
    # dY (n, k) in place -> dZ;  rstd (n,).  Inverts Y = gamma (Z + b - mu_row) rstd_row:
    # g = gamma dY;  dZ = rstd (g - mean_j g - xhat mean_j (g xhat))
    n, k = dY.shape
    for j in range(k):
        db[j] = 0.0
        dgamma[j] = 0.0
    for i in range(n):
        a = 0.0
        c = 0.0
        for j in range(k):
            dy = dY[i, j]
            xh = XH[i, j]
            dgamma[j] += dy * xh
            g = gamma[j] * dy
            a += g
            c += g * xh
        a /= k
        c /= k
        r = rstd[i]
        for j in range(k):
            dz = r * (gamma[j] * dY[i, j] - a - XH[i, j] * c)
            dY[i, j] = dz
            db[j] += dz


# ---- the family's kernels, one signature each (table.py calls them by address) ---------------
# forward (Z, XH, mu, rstd, b, gamma, run_mean, run_var, eps, training), backward (dY, db, dgamma,
# XH, gamma, rstd), and batch norm's update of the running statistics (mu, run_mean, run_var,
# momentum, n); layer norm has none.
@njit(**JIT)
def batchnorm_f(Z, XH, mu, rstd, b, gamma, run_mean, run_var, eps, training):
    batchnorm_forward(Z, XH, mu, rstd, b, gamma, run_mean, run_var, eps, training)


@njit(**JIT)
def batchnorm_b(dY, db, dgamma, XH, gamma, rstd):
    batchnorm_backward(dY, db, dgamma, XH, gamma, rstd)


@njit(**JIT)
def batchnorm_u(mu, run_mean, run_var, momentum, n):
    batchnorm_update_running(mu, run_mean, run_var, momentum, n)


@njit(**JIT)
def layernorm_f(Z, XH, mu, rstd, b, gamma, run_mean, run_var, eps, training):
    layernorm_forward(Z, XH, mu, rstd, b, gamma, eps)


@njit(**JIT)
def layernorm_b(dY, db, dgamma, XH, gamma, rstd):
    layernorm_backward(dY, db, dgamma, XH, gamma, rstd)


# code -> (forward, backward, update of the running statistics or None)
KERNELS = {BATCH_NORM: (batchnorm_f, batchnorm_b, batchnorm_u), LAYER_NORM: (layernorm_f, layernorm_b, None)}


def norm_forward(code, Z, XH, mu, rstd, b, gamma, run_mean, run_var, eps, training):
    """Norm ``code``'s forward pass (from Python: the drivers call the kernel by address)."""
    KERNELS[code][0](Z, XH, mu, rstd, b, gamma, run_mean, run_var, eps, training)


def norm_backward(code, dY, db, dgamma, XH, gamma, rstd):
    """Norm ``code``'s backward pass."""
    KERNELS[code][1](dY, db, dgamma, XH, gamma, rstd)
