"""Whole-network drivers: forward, backward, one training step, one epoch.

They walk a layer table and views into three flat buffers, so one compiled
function (per dtype) serves every architecture, and a Python call trains a
whole epoch.

``layout`` (n_layers, 9) int64, one row per dense layer:
    n_in, n_out, W offset, b offset (in params/grads), activation code,
    Z, A, D, M offsets (in ws; each slot holds batch_size * n_out values).
Z == A for activations that run in place, D == A for layers without dropout.
The output layer's A is the prediction P (never aliasing its Z).
``fpar`` (n_layers, 2) float64: activation alpha, dropout probability.
``meta`` int64: loss code, offsets of the two gradient ping-pong slots.
"""

import numpy as np
from numba import njit

from .._blas import gemm
from .._config import JIT
from .activations import activation_backward, activation_forward
from .dropout import dropout_backward, dropout_forward
from .losses import loss_backward, loss_forward, output_forward
from .optim import all_finite, optimizer_update

N_IN, N_OUT, W_OFF, B_OFF, ACT, Z_OFF, A_OFF, D_OFF, M_OFF = range(9)
LOSS, G0_OFF, G1_OFF = range(3)
ALPHA, DROP = range(2)

OK, BAD_LOSS, BAD_GRAD = range(3)


@njit(**JIT)
def view2(buf, off, n, k):
    # rows 0..n of the (?, k) slot that starts at ``off``: contiguous, no copy
    return buf[off:off + n * k].reshape((n, k))


@njit(**JIT)
def layer_params(params, layout, l):
    n_in, n_out = layout[l, N_IN], layout[l, N_OUT]
    W = view2(params, layout[l, W_OFF], n_in, n_out)
    b = params[layout[l, B_OFF]:layout[l, B_OFF] + n_out]
    return W, b


@njit(**JIT)
def hidden_forward(params, ws, layout, fpar, X, n, training, rng):
    # X (n, n_in0) -> returns the (n, n_out) input of the output layer (a view into ws)
    inp = X
    for l in range(layout.shape[0] - 1):
        k = layout[l, N_OUT]
        W, b = layer_params(params, layout, l)
        Z = view2(ws, layout[l, Z_OFF], n, k)
        A = view2(ws, layout[l, A_OFF], n, k)
        gemm(False, False, 1.0, inp, W, 0.0, Z)               # Z = X W
        activation_forward(layout[l, ACT], A, Z, b, fpar[l, ALPHA])  # A = f(Z + b)
        p = fpar[l, DROP]
        if training and p > 0.0:
            D = view2(ws, layout[l, D_OFF], n, k)
            M = view2(ws, layout[l, M_OFF], n, k)
            dropout_forward(D, M, A, p, rng)
            inp = D
        else:
            inp = A
    return inp


@njit(**JIT)
def predict_forward(params, ws, layout, fpar, meta, rng, X, n):
    # inference: no dropout (rng is not read); returns P (n, k_out), a view into ws
    inp = hidden_forward(params, ws, layout, fpar, X, n, False, rng)
    L = layout.shape[0] - 1
    k = layout[L, N_OUT]
    W, b = layer_params(params, layout, L)
    Z = view2(ws, layout[L, Z_OFF], n, k)
    P = view2(ws, layout[L, A_OFF], n, k)
    gemm(False, False, 1.0, inp, W, 0.0, Z)
    output_forward(meta[LOSS], P, Z, b)
    return P


@njit(**JIT)
def loss_forward_all(params, ws, layout, fpar, meta, X, T, labels, use_labels, n, training, rng):
    # forward through every layer and the loss; returns the mean loss of the n rows
    inp = hidden_forward(params, ws, layout, fpar, X, n, training, rng)
    L = layout.shape[0] - 1
    k = layout[L, N_OUT]
    W, b = layer_params(params, layout, L)
    Z = view2(ws, layout[L, Z_OFF], n, k)
    P = view2(ws, layout[L, A_OFF], n, k)
    gemm(False, False, 1.0, inp, W, 0.0, Z)
    return loss_forward(meta[LOSS], P, Z, b, T, labels, use_labels)


@njit(**JIT)
def backward_all(grads, params, ws, layout, fpar, meta, X, T, labels, use_labels, n):
    # after loss_forward_all(training=True): grads (same layout as params) <- d loss / d params
    L = layout.shape[0] - 1
    cur, other = meta[G0_OFF], meta[G1_OFF]
    k = layout[L, N_OUT]
    dZ = view2(ws, cur, n, k)
    P = view2(ws, layout[L, A_OFF], n, k)
    dW, db = layer_params(grads, layout, L)
    loss_backward(meta[LOSS], dZ, db, P, T, labels, use_labels)
    for l in range(L, -1, -1):
        n_in = layout[l, N_IN]
        W, _ = layer_params(params, layout, l)
        dW, _ = layer_params(grads, layout, l)
        inp = X if l == 0 else view2(ws, layout[l - 1, D_OFF], n, n_in)
        gemm(True, False, 1.0, inp, dZ, 0.0, dW)              # dW = X^T dZ
        if l == 0:
            break
        dA = view2(ws, other, n, n_in)
        gemm(False, True, 1.0, dZ, W, 0.0, dA)                # dX = dZ W^T
        if fpar[l - 1, DROP] > 0.0:
            dropout_backward(dA, dA, view2(ws, layout[l - 1, M_OFF], n, n_in))
        _, db = layer_params(grads, layout, l - 1)
        A = view2(ws, layout[l - 1, A_OFF], n, n_in)
        Z = view2(ws, layout[l - 1, Z_OFF], n, n_in)
        activation_backward(layout[l - 1, ACT], dA, db, dA, A, Z, fpar[l - 1, ALPHA])  # dZ = dA f'
        dZ = dA
        cur, other = other, cur


@njit(**JIT)
def train_batch(params, grads, ws, layout, fpar, meta, rng, X, T, labels, use_labels, n,
                opt_kind, s1, s2, s3, hp, step):
    """One step on rows 0..n of X/T/labels. Returns (loss, status); the update is
    applied only when the loss and every gradient are finite (status OK)."""
    loss = loss_forward_all(params, ws, layout, fpar, meta, X, T, labels, use_labels, n, True, rng)
    if not np.isfinite(loss):
        return loss, BAD_LOSS
    backward_all(grads, params, ws, layout, fpar, meta, X, T, labels, use_labels, n)
    if not all_finite(grads):
        return loss, BAD_GRAD
    step[0] += 1
    optimizer_update(opt_kind, params, grads, s1, s2, s3, hp, step[0])
    return loss, OK


@njit(**JIT)
def train_epoch(params, grads, ws, layout, fpar, meta, rng, X, T, labels, use_labels,
                perm, shuffle, batch_size, opt_kind, s1, s2, s3, hp, step, Xb, Tb, Lb, losses):
    """Mini-batches of ``batch_size`` rows in the order ``perm`` (if ``shuffle``)
    or as stored; the last batch may be short. Shuffled rows are gathered into the
    preallocated Xb/Tb/Lb; unshuffled batches are views of X. losses[i] gets batch
    i's loss. Returns (batches done, status); it stops at the first non-OK batch."""
    N = X.shape[0]
    n_batches = (N + batch_size - 1) // batch_size
    d = X.shape[1]
    for bi in range(n_batches):
        s = bi * batch_size
        e = min(N, s + batch_size)
        n = e - s
        if shuffle:
            for r in range(n):
                src = perm[s + r]
                for j in range(d):
                    Xb[r, j] = X[src, j]
                if use_labels:
                    Lb[r] = labels[src]
                else:
                    for j in range(T.shape[1]):
                        Tb[r, j] = T[src, j]
            xb, tb, lb = Xb[:n], Tb[:n], Lb[:n]
        else:
            xb, tb, lb = X[s:e], T[s:e], labels[s:e]
        loss, status = train_batch(params, grads, ws, layout, fpar, meta, rng, xb, tb, lb,
                                   use_labels, n, opt_kind, s1, s2, s3, hp, step)
        losses[bi] = loss
        if status != OK:
            return bi, status
    return n_batches, OK


@njit(**JIT)
def predict_all(out, params, ws, layout, fpar, meta, rng, X, batch_size):
    # out (N, k_out) <- network output for every row of X, batch_size rows at a time
    N = X.shape[0]
    for s in range(0, N, batch_size):
        e = min(N, s + batch_size)
        P = predict_forward(params, ws, layout, fpar, meta, rng, X[s:e], e - s)
        out[s:e] = P


@njit(**JIT)
def loss_all(params, ws, layout, fpar, meta, rng, X, T, labels, use_labels, batch_size, out):
    # mean loss over all rows (inference mode), and out (N, k_out) <- predictions
    N = X.shape[0]
    total = 0.0
    for s in range(0, N, batch_size):
        e = min(N, s + batch_size)
        n = e - s
        total += n * loss_forward_all(params, ws, layout, fpar, meta, X[s:e], T[s:e], labels[s:e],
                                      use_labels, n, False, rng)
        out[s:e] = view2(ws, layout[layout.shape[0] - 1, A_OFF], n, out.shape[1])
    return total / N
