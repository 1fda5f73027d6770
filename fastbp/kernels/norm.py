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
from numba.extending import overload

from .._config import INLINE, JIT, OVERLOAD_JIT
from .kset import ALL, NORM_BIT, has

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


# ---- dispatch: the norms of a KernelSet (kset.py), or both ------------------------------------
def norm_forward_in(kset, code, Z, XH, mu, rstd, b, gamma, run_mean, run_var, eps, training):
    """Norm ``code``'s forward pass, compiling only the norms in ``kset``."""
    raise TypeError("norm_forward_in runs inside compiled code; call norm_forward")


def norm_update_running_in(kset, code, mu, run_mean, run_var, momentum, n):
    """After an accepted training step: batch norm folds the batch statistics into the running ones."""
    raise TypeError("norm_update_running_in runs inside compiled code")


def norm_backward_in(kset, code, dY, db, dgamma, XH, gamma, rstd):
    """Norm ``code``'s backward pass, compiling only the norms in ``kset``."""
    raise TypeError("norm_backward_in runs inside compiled code; call norm_backward")


def _norms_in(kset):
    return has(kset, NORM_BIT, BATCH_NORM), has(kset, NORM_BIT, LAYER_NORM)


@overload(norm_forward_in, jit_options=OVERLOAD_JIT)
def _norm_forward_in(kset, code, Z, XH, mu, rstd, b, gamma, run_mean, run_var, eps, training):
    batch, layer = _norms_in(kset)

    def impl(kset, code, Z, XH, mu, rstd, b, gamma, run_mean, run_var, eps, training):
        if batch and code == BATCH_NORM:
            batchnorm_forward(Z, XH, mu, rstd, b, gamma, run_mean, run_var, eps, training)
        elif layer and code == LAYER_NORM:
            layernorm_forward(Z, XH, mu, rstd, b, gamma, eps)
    return impl


@overload(norm_update_running_in, jit_options=OVERLOAD_JIT)
def _norm_update_running_in(kset, code, mu, run_mean, run_var, momentum, n):
    batch, _ = _norms_in(kset)

    def impl(kset, code, mu, run_mean, run_var, momentum, n):
        if batch and code == BATCH_NORM:
            batchnorm_update_running(mu, run_mean, run_var, momentum, n)
    return impl


@overload(norm_backward_in, jit_options=OVERLOAD_JIT)
def _norm_backward_in(kset, code, dY, db, dgamma, XH, gamma, rstd):
    batch, layer = _norms_in(kset)

    def impl(kset, code, dY, db, dgamma, XH, gamma, rstd):
        if batch and code == BATCH_NORM:
            batchnorm_backward(dY, db, dgamma, XH, gamma, rstd)
        elif layer and code == LAYER_NORM:
            layernorm_backward(dY, db, dgamma, XH, gamma, rstd)
    return impl


@njit(**JIT)
def norm_forward(code, Z, XH, mu, rstd, b, gamma, run_mean, run_var, eps, training):
    norm_forward_in(ALL, code, Z, XH, mu, rstd, b, gamma, run_mean, run_var, eps, training)


@njit(**JIT)
def norm_backward(code, dY, db, dgamma, XH, gamma, rstd):
    norm_backward_in(ALL, code, dY, db, dgamma, XH, gamma, rstd)
