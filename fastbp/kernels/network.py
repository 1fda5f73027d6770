"""Whole-network drivers: forward, backward, one training step, one epoch.

They walk a layer table and views into three flat buffers, so one compiled
function (per dtype) serves every architecture, and a Python call trains a
whole epoch. Their first argument ``kt`` is the network's kernel table
(table.py): the addresses of its activation, loss, norm, dropout and optimizer
kernels, each compiled on its own. The drivers hold none of those kernels, so
they are compiled once per dtype for every network.

``layout`` (n_layers, 19) int64, one row per dense layer:
    n_in, n_out, W offset, b offset (in params/grads), activation code,
    Z, A, D, M offsets (in ws; each slot holds batch_size * n_out values),
    norm code, gamma and beta offsets (params), XH, MU, RS offsets (ws),
    running mean and variance offsets (nstate), end of the layer's parameters,
    whether dX = dZ W^T is computed from a copy of W^T (_blas.dx_via_transpose),
    and (bf16 networks) the offset of the bf16 copy of the layer's input in ws viewed as uint16.
Z == A for activations that run in place, D == A for layers without dropout.
The output layer's A is the prediction P (never aliasing its Z). A layer's
parameters (W, b, and gamma, beta with a norm) span [W offset, end).
``fpar`` (n_layers, 4) float64: activation alpha, dropout probability, norm momentum, norm eps.
``meta`` int64: loss code, offsets of the two gradient ping-pong slots, the precision of the
matrix products (FP32 or BF16: see precision.py) and, for BF16, the offsets (in ws viewed as
uint16) of the bf16 copy of params and of the bf16 copy of a layer's dZ.
``nstate``: the norm layers' running statistics (not trained, not in params).
``sw``: per-row sample weights, or an empty array (see losses.py).
``ctl`` float64: clip norm (0: off), track gradient health (0/1), L2 alpha
(scikit-learn's: the loss gets alpha/(2 s) sum W^2 and dW gets alpha/s W, weights only,
with s the batch's total sample weight: its row count when unweighted).
"""

import numpy as np
from numba import njit

from .._blas import gemm, gemm_bf16, transpose
from .._config import INLINE, JIT, compile_locked
from .losses import _inv_total, correct_count
from .norm import NO_NORM
from .optim import all_finite, diff_sq_sum, sq_sum
from .precision import to_bf16
from . import table
from .table import (ACT_B, ACT_F, CVT, DROP_B, DROP_F, ITEMSIZE, LOSS_B, LOSS_F, MM16, NORM_B, NORM_F, NORM_U, OPT_U,
                    OUT_F, call_act_b, call_act_f, call_cvt, call_drop_b, call_drop_f, call_loss_b, call_loss_f,
                    call_mm16, call_norm_b, call_norm_f, call_norm_u, call_opt_u, call_out_f)

(N_IN, N_OUT, W_OFF, B_OFF, ACT, Z_OFF, A_OFF, D_OFF, M_OFF, NORM, G_OFF, BE_OFF, XH_OFF, MU_OFF, RS_OFF,
 RM_OFF, RV_OFF, P_END, WT, X16_OFF) = range(20)
N_COLS = 20
LOSS, G0_OFF, G1_OFF, PREC, P16_OFF, DZ16_OFF = range(6)
FP32, BF16 = 0, 1
ALPHA, DROP, MOMENTUM, EPS = range(4)
CLIP, TRACK, L2 = range(3)

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
def vec(buf, off, k):
    return buf[off:off + k]


# The drivers' element loops are functions of their own (leaves): the interpreted drivers
# (interp.py) call them compiled, as they call the kernels.
@njit(**JIT)
def scaled(C, c, W):
    # C = c W (c float64: the product in float64, rounded once to C's precision)
    for i in range(W.shape[0]):
        for j in range(W.shape[1]):
            C[i, j] = c * W[i, j]


@njit(**JIT)
def copy_vec(out, x):
    # out = x (a loop: slice assignment compiles a string-formatting error path)
    for i in range(x.shape[0]):
        out[i] = x[i]


@njit(**JIT)
def total_of(x):
    # sum of x in float64, in order
    s = 0.0
    for i in range(x.shape[0]):
        s += x[i]
    return s


@njit(**JIT)
def gather_rows(Xb, Tb, Lb, Wb, X, T, labels, sw, rows, use_labels, weighted):
    # batch row r <- row rows[r] of X and of labels or T (and sw if weighted)
    d = X.shape[1]
    for r in range(rows.shape[0]):
        src = rows[r]
        for j in range(d):
            Xb[r, j] = X[src, j]
        if use_labels:
            Lb[r] = labels[src]
        else:
            for j in range(T.shape[1]):
                Tb[r, j] = T[src, j]
        if weighted:
            Wb[r] = sw[src]


@njit(**JIT)
def bf16_params(kt, ws, params, meta):
    # a bf16 network's bf16 copy of its parameters (once per step and per inference call)
    if meta[PREC] == BF16:
        call_cvt(kt[-1, CVT], ws, meta[P16_OFF], params)


@njit(**JIT)
def bf16_products(ws, layout, meta, l, which, A, B, C, W, c):
    # a bf16 network's products for layer l, from the bf16 copies in ws (the table's MM16 kernel: the
    # drivers hold no bf16 code, so float32 networks do not compile it). which 0: C = A W, A the
    # layer's input (its bf16 copy is kept for dW); 1: A = dZ, B = dZ W^T (dX, unless B has no rows)
    # and C = input^T dZ + c W (dW; c the L2 term, or 0)
    n = A.shape[0]
    n_in, n_out = layout[l, N_IN], layout[l, N_OUT]
    w16 = ws.view(np.uint16)
    W16 = view2(w16, meta[P16_OFF] + layout[l, W_OFF], n_in, n_out)
    X16 = view2(w16, layout[l, X16_OFF], n, n_in)
    if which == 0:
        to_bf16(X16, A)
        gemm_bf16(False, False, X16, W16, 0.0, C)
        return
    dZ16 = view2(w16, meta[DZ16_OFF], n, n_out)
    to_bf16(dZ16, A)
    if B.shape[0] > 0:
        gemm_bf16(False, True, dZ16, W16, 0.0, B)
    if c > 0.0:
        scaled(C, c, W)
    gemm_bf16(True, False, X16, dZ16, 1.0 if c > 0.0 else 0.0, C)


@njit(**JIT)
def forward_product(kt, ws, layout, meta, l, inp, W, Z, n):
    # Z = inp W for layer l (bf16 networks: bf16_products, by address)
    if meta[PREC] == BF16:
        call_mm16(kt[-1, MM16], ws, layout, meta, l, 0, inp, Z, Z, W, 0.0)
    else:
        gemm(False, False, 1.0, inp, W, 0.0, Z)


@njit(**JIT)
def backward_products(kt, ws, grads, layout, meta, l, dZ, W, inp, dA, dW, c):
    # layer l's dX = dZ W^T (into dA, unless it has no rows) and dW = inp^T dZ + c W (c: the L2 term, or 0)
    if meta[PREC] == BF16:
        call_mm16(kt[-1, MM16], ws, layout, meta, l, 1, dZ, dA, dW, W, c)
        return
    n, k = dZ.shape
    n_in = layout[l, N_IN]
    if dA.shape[0] > 0:
        if layout[l, WT] > 0:
            # W^T goes to the dW slot, which is written only after this
            WT_ = view2(grads, layout[l, W_OFF], k, n_in)
            transpose(W, WT_)
            gemm(False, False, 1.0, dZ, WT_, 0.0, dA)       # dX = dZ (W^T)
        else:
            gemm(False, True, 1.0, dZ, W, 0.0, dA)          # dX = dZ W^T
    if c > 0.0:
        scaled(dW, c, W)
    gemm(True, False, 1.0, inp, dZ, 1.0 if c > 0.0 else 0.0, dW)   # dW = X^T dZ (+ c W)


@njit(**INLINE)
def hidden_forward(kt, params, nstate, ws, layout, fpar, meta, X, n, training, rng):
    # X (n, n_in0) -> returns the (n, n_out) input of the output layer (a view into ws)
    inp = X
    for l in range(layout.shape[0] - 1):
        k = layout[l, N_OUT]
        W, b = layer_params(params, layout, l)
        Z = view2(ws, layout[l, Z_OFF], n, k)
        A = view2(ws, layout[l, A_OFF], n, k)
        forward_product(kt, ws, layout, meta, l, inp, W, Z, n)    # Z = X W
        norm = layout[l, NORM]
        if norm != NO_NORM:
            call_norm_f(kt[l, NORM_F], Z, view2(ws, layout[l, XH_OFF], n, k), vec(ws, layout[l, MU_OFF], max(n, 2 * k)),
                         vec(ws, layout[l, RS_OFF], max(n, k)), b, vec(params, layout[l, G_OFF], k),
                         vec(nstate, layout[l, RM_OFF], k), vec(nstate, layout[l, RV_OFF], k),
                         fpar[l, EPS], training)  # Z = gamma xhat(Z + b)
            b = vec(params, layout[l, BE_OFF], k)
        call_act_f(kt[l, ACT_F], A, Z, b, fpar[l, ALPHA])  # A = f(Z + b)  (b: beta with a norm)
        p = fpar[l, DROP]
        if training and p > 0.0:
            D = view2(ws, layout[l, D_OFF], n, k)
            M = view2(ws, layout[l, M_OFF], n, k)
            call_drop_f(kt[l, DROP_F], D, M, A, p, rng)
            inp = D
        else:
            inp = A
    return inp


@njit(**INLINE)
def loss_forward_all(kt, params, nstate, ws, layout, fpar, meta, X, T, labels, use_labels, sw, n, training, rng):
    # forward through every layer and the loss; returns the (weighted) mean loss of the n rows
    bf16_params(kt, ws, params, meta)
    inp = hidden_forward(kt, params, nstate, ws, layout, fpar, meta, X, n, training, rng)
    L = layout.shape[0] - 1
    k = layout[L, N_OUT]
    W, b = layer_params(params, layout, L)
    Z = view2(ws, layout[L, Z_OFF], n, k)
    P = view2(ws, layout[L, A_OFF], n, k)
    forward_product(kt, ws, layout, meta, L, inp, W, Z, n)
    return call_loss_f(kt[-1, LOSS_F], P, Z, b, T, labels, use_labels, sw)


@njit(**INLINE)
def update_running(kt, nstate, ws, layout, fpar, n):
    # after a training forward of n rows: batch norm layers fold the batch statistics it left in
    # their MU slots into the running statistics (called once the step is accepted)
    for l in range(layout.shape[0] - 1):
        if kt[l, NORM_U] != 0:
            k = layout[l, N_OUT]
            call_norm_u(kt[l, NORM_U], vec(ws, layout[l, MU_OFF], 2 * k),
                        vec(nstate, layout[l, RM_OFF], k), vec(nstate, layout[l, RV_OFF], k), fpar[l, MOMENTUM], n)


@njit(**JIT)
def l2_penalty(params, layout, alpha, sw, n):
    # alpha / (2 s) * sum of every W^2 (biases and norm parameters excluded), s = sum of the
    # batch's row weights (n when unweighted; a batch of weight 0 gets no penalty), as scikit-learn
    s = 0.0
    for l in range(layout.shape[0]):
        W_off = layout[l, W_OFF]
        s += sq_sum(params[W_off:W_off + layout[l, N_IN] * layout[l, N_OUT]])
    return 0.5 * alpha * s * _inv_total(sw, n)


@njit(**INLINE)
def backward_all(kt, grads, params, ws, layout, fpar, meta, X, T, labels, use_labels, sw, n, l2):
    # after loss_forward_all(training=True): grads (same layout as params) <- d loss / d params
    # (overwritten, not accumulated); with l2 = alpha > 0, dW also gets alpha/s W (s: see l2_penalty)
    L = layout.shape[0] - 1
    cur, other = meta[G0_OFF], meta[G1_OFF]
    k = layout[L, N_OUT]
    dZ = view2(ws, cur, n, k)
    P = view2(ws, layout[L, A_OFF], n, k)
    dW, db = layer_params(grads, layout, L)
    call_loss_b(kt[-1, LOSS_B], dZ, db, P, T, labels, use_labels, sw)
    for l in range(L, -1, -1):
        n_in = layout[l, N_IN]
        W, _ = layer_params(params, layout, l)
        dW, _ = layer_params(grads, layout, l)
        dA = view2(ws, other, n if l > 0 else 0, n_in)       # (layer 0 has no dX)
        inp = X if l == 0 else view2(ws, layout[l - 1, D_OFF], n, n_in)
        backward_products(kt, ws, grads, layout, meta, l, dZ, W, inp, dA, dW, l2 * _inv_total(sw, n) if l2 > 0.0 else 0.0)
        if l == 0:
            break
        h = l - 1
        if fpar[h, DROP] > 0.0:
            call_drop_b(kt[h, DROP_B], dA, dA, view2(ws, layout[h, M_OFF], n, n_in))
        _, db = layer_params(grads, layout, h)
        A = view2(ws, layout[h, A_OFF], n, n_in)
        Z = view2(ws, layout[h, Z_OFF], n, n_in)
        norm = layout[h, NORM]
        if norm != NO_NORM:
            dbeta = vec(grads, layout[h, BE_OFF], n_in)
            call_act_b(kt[h, ACT_B], dA, dbeta, dA, A, Z, fpar[h, ALPHA])  # dY = dA f'
            call_norm_b(kt[h, NORM_B], dA, db, vec(grads, layout[h, G_OFF], n_in), view2(ws, layout[h, XH_OFF], n, n_in),
                          vec(params, layout[h, G_OFF], n_in), vec(ws, layout[h, RS_OFF], max(n, n_in)))
        else:
            call_act_b(kt[h, ACT_B], dA, db, dA, A, Z, fpar[h, ALPHA])  # dZ = dA f'
        dZ = dA
        cur, other = other, cur


@njit(**INLINE)
def train_batch(kt, params, grads, nstate, ws, layout, fpar, meta, rng, X, T, labels, use_labels, sw, n,
                s1, s2, s3, hp, step, ctl, tstats, pprev):
    """One step on rows 0..n of X/T/labels/sw. Returns (loss, penalty, status): the loss
    includes the L2 penalty (0 without ctl[L2]), which is also returned on its own; the
    update is applied only when the loss and every gradient are finite (status OK).

    With ctl[CLIP] > 0 the gradients are scaled by min(1, clip / (norm + 1e-6)) inside
    the update (torch's clip_grad_norm_). With ctl[TRACK], tstats[l] accumulates
    layer l's gradient norm (before clipping) and ||update|| / ||W, b|| over batches
    (pprev (P,) is scratch for the parameters before the update)."""
    l2 = ctl[L2]
    loss = loss_forward_all(kt, params, nstate, ws, layout, fpar, meta, X, T, labels, use_labels, sw, n, True, rng)
    penalty = l2_penalty(params, layout, l2, sw, n) if l2 > 0.0 else 0.0
    loss += penalty
    if not np.isfinite(loss):
        return loss, penalty, BAD_LOSS
    backward_all(kt, grads, params, ws, layout, fpar, meta, X, T, labels, use_labels, sw, n, l2)
    clip = ctl[CLIP]
    track = ctl[TRACK] != 0.0
    gscale = 1.0
    if clip > 0.0 or track:
        total = 0.0
        for l in range(layout.shape[0]):
            s = sq_sum(grads[layout[l, W_OFF]:layout[l, P_END]])
            total += s
            if track:
                tstats[l, 0] += np.sqrt(s)
        if not np.isfinite(total):
            return loss, penalty, BAD_GRAD
        if clip > 0.0:
            gscale = min(1.0, clip / (np.sqrt(total) + 1e-6))
    elif not all_finite(grads):
        return loss, penalty, BAD_GRAD
    if track:
        copy_vec(pprev, params)
    step[0] += 1
    call_opt_u(kt[-1, OPT_U], params, grads, s1, s2, s3, hp, step[0], gscale)
    update_running(kt, nstate, ws, layout, fpar, n)   # the step is accepted: so are its batch statistics
    if track:
        for l in range(layout.shape[0]):
            a, e = layout[l, W_OFF], layout[l, P_END]
            d = diff_sq_sum(params[a:e], pprev[a:e])
            p = sq_sum(params[a:e])
            tstats[l, 1] += np.sqrt(d / p) if p > 0.0 else 0.0
    return loss, penalty, OK


@njit(**JIT)
def train_epoch(kt, params, grads, nstate, ws, layout, fpar, meta, rng, X, T, labels, use_labels, sw,
                perm, shuffle, batch_size, b0, b1, s1, s2, s3, hp, step, Xb, Tb, Lb, Wb,
                stats, ctl, tstats, pprev):
    """Mini-batches b0..b1-1 of an epoch of ``batch_size`` rows, in the order ``perm``
    (if ``shuffle``) or as stored; the last batch may be short. Shuffled rows are
    gathered into the preallocated Xb/Tb/Lb/Wb; unshuffled batches are views of X.
    stats[i] gets batch i's loss, its number of correct predictions (see
    losses.correct_count) and, if stats has a third column, the L2 penalty included
    in that loss. Returns (next batch, status); it stops at the first
    non-OK batch and returns that batch's index."""
    if kt.shape[0] != layout.shape[0] + 1 or kt[-1, ITEMSIZE] != params.itemsize:
        raise ValueError("fastbp: the kernel table is not this network's (rows or dtype)")
    N = X.shape[0]
    L = layout.shape[0] - 1
    weighted = sw.shape[0] != 0
    for bi in range(b0, b1):
        s = bi * batch_size
        e = min(N, s + batch_size)
        n = e - s
        if shuffle:
            gather_rows(Xb, Tb, Lb, Wb, X, T, labels, sw, perm[s:e], use_labels, weighted)
            xb, tb, lb, wb = Xb[:n], Tb[:n], Lb[:n], Wb[:n] if weighted else sw
        else:
            xb, tb, lb, wb = X[s:e], T[s:e], labels[s:e], sw[s:e] if weighted else sw
        loss, penalty, status = train_batch(kt, params, grads, nstate, ws, layout, fpar, meta, rng, xb, tb, lb,
                                   use_labels, wb, n, s1, s2, s3, hp, step, ctl, tstats, pprev)
        stats[bi, 0] = loss
        if stats.shape[1] > 2:
            stats[bi, 2] = penalty
        if status != OK:
            return bi, status
        P = view2(ws, layout[L, A_OFF], n, layout[L, N_OUT])
        stats[bi, 1] = correct_count(meta[LOSS], P, tb, lb, use_labels)
    return b1, OK


@njit(**JIT)
def copy_rows(out, s, P):
    # out[s:s + n] = P, P (n, k): a loop, since slice assignment compiles a string-formatting error path
    for i in range(P.shape[0]):
        for j in range(P.shape[1]):
            out[s + i, j] = P[i, j]


@njit(**JIT)
def loss_all(kt, params, nstate, ws, layout, fpar, meta, rng, X, T, labels, use_labels, sw, batch_size, out,
             with_loss):
    # inference, batch_size rows at a time: out (N, k_out) <- the network's output for every row
    # of X and, if with_loss, returns the (weighted) mean loss against T/labels (else 0; T, labels
    # and sw are then not read). One function for evaluate and predict, with one forward pass in
    # it: one compile, not two (each inlined copy of the forward is compiled again).
    if kt.shape[0] != layout.shape[0] + 1 or kt[-1, ITEMSIZE] != params.itemsize:
        raise ValueError("fastbp: the kernel table is not this network's (rows or dtype)")
    N = X.shape[0]
    L = layout.shape[0] - 1
    k = layout[L, N_OUT]
    W, b = layer_params(params, layout, L)
    weighted = sw.shape[0] != 0
    bf16_params(kt, ws, params, meta)
    total = 0.0
    wtotal = 0.0
    for s in range(0, N, batch_size):
        e = min(N, s + batch_size)
        n = e - s
        inp = hidden_forward(kt, params, nstate, ws, layout, fpar, meta, X[s:e], n, False, rng)
        Z = view2(ws, layout[L, Z_OFF], n, k)
        P = view2(ws, layout[L, A_OFF], n, k)
        forward_product(kt, ws, layout, meta, L, inp, W, Z, n)
        if with_loss:
            wb = sw[s:e] if weighted else sw
            wsum = total_of(wb) if weighted else float(n)
            total += wsum * call_loss_f(kt[-1, LOSS_F], P, Z, b, T[s:e], labels[s:e], use_labels, wb)
            wtotal += wsum
        else:
            call_out_f(kt[-1, OUT_F], P, Z, b)             # P = output(Z + b), no loss
        copy_rows(out, s, P)
    return total / wtotal if wtotal > 0.0 else 0.0


# the entry points the Python side calls: their first compile of a signature is one per machine
# at a time (_config.compile_locked)
for _driver in (train_epoch, loss_all, train_batch, loss_forward_all, backward_all, update_running, l2_penalty,
                bf16_products):
    compile_locked(_driver)
del _driver
# (the table's module cannot import this one, which imports the table)
table.KERNELS["mm16", 0] = bf16_products
