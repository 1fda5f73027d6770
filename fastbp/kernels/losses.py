"""Output layer + loss pairs with fused, numerically stable gradients.

Each forward writes the output P = f(Z + b) and returns the mean loss
(accumulated in float64); softmax also writes Z + b back into Z (it reads the
shifted logits twice). Each backward writes the
gradient of that mean loss w.r.t. the pre-activation into dZ (it may alias P)
and the bias gradient db = sum over rows of dZ.

Targets come as a dense (n, k) array T, or for softmax cross-entropy as integer
class labels (n,) when ``use_labels`` is set (T is then not read).

``sw`` holds per-row sample weights (n,), or is empty for unweighted rows. A
weighted loss is sum_i w_i l_i / sum_i w_i (l_i the row's loss), as PyTorch's
class-weighted cross-entropy and ``np.average`` define it, so a row of weight 2
counts exactly as the row twice. A batch whose weights sum to 0 has loss 0 and
zero gradient.

Means follow PyTorch: cross-entropy over the batch (CrossEntropyLoss), binary
cross-entropy, mse, huber and poisson over all n*k elements (BCEWithLogitsLoss,
MSELoss, HuberLoss with delta=1, PoissonNLLLoss from the log-rate). The poisson
loss is the half Poisson deviance t log(t/p) - t + p of the rate p = exp(z), as
scikit-learn's ``MLPRegressor(loss="poisson")``: PyTorch's p - t z plus the
constant t log t - t, so that a perfect fit has loss 0.
"""

import numpy as np
from numba import njit
from numba.extending import overload

from .._config import HELPER, INLINE, JIT, OVERLOAD_JIT
from ._util import flat_view
from .mathfn import exp

SOFTMAX_CE, SIGMOID_BCE, IDENTITY_MSE, IDENTITY_HUBER, EXP_POISSON = range(5)
# (output, loss) -> code
PAIRS = {
    ("softmax", "cross_entropy"): SOFTMAX_CE,
    ("sigmoid", "binary_cross_entropy"): SIGMOID_BCE,
    ("identity", "mse"): IDENTITY_MSE,
    ("identity", "huber"): IDENTITY_HUBER,
    ("exp", "poisson"): EXP_POISSON,
}
DEFAULT_LOSS = {"softmax": "cross_entropy", "sigmoid": "binary_cross_entropy", "identity": "mse", "exp": "poisson"}
HUBER_DELTA = 1.0


@njit(**JIT)   # (a CPython wrapper: the drivers call it, and interp.py runs them from Python)
def _inv_total(sw, n):
    # 1 / (sum of row weights); n rows of weight 1 when sw is empty; 0 for an all-zero batch
    if sw.shape[0] == 0:
        return 1.0 / n
    total = 0.0
    for i in range(n):
        total += sw[i]
    return 1.0 / total if total > 0.0 else 0.0


@njit(**HELPER)
def _row_weight(sw, i):
    return sw[i] if sw.shape[0] != 0 else 1.0


# ---- softmax + cross-entropy -------------------------------------------------------
def _exp_all(P):
    """P = exp(P) elementwise, in place (compiled: float32 gets the vectorisable exp)."""
    np.exp(P, out=P)


@overload(_exp_all, jit_options=OVERLOAD_JIT)
def _exp_all_impl(P):
    if P.layout == "C":
        def flat(P):
            # one loop over every element: a softmax row (k = 10) is too short to vectorise alone
            Pf = flat_view(P)
            for t in range(Pf.shape[0]):
                Pf[t] = exp(Pf[t])
        return flat

    def rows(P):
        for i in range(P.shape[0]):
            for j in range(P.shape[1]):
                P[i, j] = exp(P[i, j])
    return rows


@njit(**HELPER)
def _softmax_exp(P, Z, b):
    # Z (n, k) += b;  P = exp(Z - row max), not yet normalised
    n, k = Z.shape
    for i in range(n):
        m = Z.dtype.type(-np.inf)   # in Z's precision: float32 keeps the float32 exp
        for j in range(k):
            z = Z[i, j] + b[j]
            Z[i, j] = z
            m = max(m, z)
        for j in range(k):
            P[i, j] = Z[i, j] - m
    _exp_all(P)


@njit(**HELPER)
def _softmax_normalise(P, i):
    # P[i] /= sum(P[i]); returns the sum (float64)
    s = 0.0
    for j in range(P.shape[1]):
        s += P[i, j]
    inv = 1.0 / s
    for j in range(P.shape[1]):
        P[i, j] *= inv
    return s


@njit(**INLINE)
def softmax_xent_forward(P, Z, b, T, labels, use_labels, sw):
    # Z, P (n, k); b (k,); T (n, k) or labels (n,); sw (n,) or (0,).  P must not alias Z.
    # loss = -1/sum(w) sum_i w_i sum_j T_ij log softmax(Z_i)_j, log-sum-exp shifted by the row max
    n, k = Z.shape
    _softmax_exp(P, Z, b)
    total = 0.0
    for i in range(n):
        m = -np.inf              # the row max again: a kernel has no scratch to keep it in,
        for j in range(k):       # and k compares cost less than a second pass of exp
            m = max(m, Z[i, j])
        lse = m + np.log(_softmax_normalise(P, i))
        row = 0.0
        if use_labels:
            row = lse - Z[i, labels[i]]
        else:
            for j in range(k):
                t = T[i, j]
                if t != 0.0:
                    row += t * (lse - Z[i, j])
        total += _row_weight(sw, i) * row
    return total * _inv_total(sw, n)


@njit(**INLINE)
def softmax_xent_backward(dZ, db, P, T, labels, use_labels, sw):
    # dZ_i = w_i (P_i sum_j T_ij - T_i) / sum(w)   (inverts loss = -1/sum(w) sum w T log softmax(Z));
    # sum_j T_ij = 1 for labels and one-hot rows, but soft targets need not sum to 1 (as in torch)
    n, k = P.shape
    inv_w = _inv_total(sw, n)
    for j in range(k):
        db[j] = 0.0
    for i in range(n):
        s = _row_weight(sw, i) * inv_w
        if use_labels:
            for j in range(k):
                g = (P[i, j] - (1.0 if labels[i] == j else 0.0)) * s
                dZ[i, j] = g
                db[j] += g
        else:
            tsum = 0.0
            for j in range(k):
                tsum += T[i, j]
            for j in range(k):
                g = (P[i, j] * tsum - T[i, j]) * s
                dZ[i, j] = g
                db[j] += g


# ---- sigmoid + binary cross-entropy from logits ------------------------------------
@njit(**INLINE)
def sigmoid_bce_forward(P, Z, b, T, sw):
    # loss = weighted mean over rows of the mean over k of max(z,0) - z t + log1p(exp(-|z|))
    n, k = Z.shape
    total = 0.0
    for i in range(n):
        row = 0.0
        for j in range(k):
            z = Z[i, j] + b[j]
            e = exp(-abs(z))
            row += max(z, 0.0) - z * T[i, j] + np.log1p(e)
            P[i, j] = 1.0 / (1.0 + e) if z >= 0 else e / (1.0 + e)
        total += _row_weight(sw, i) * row
    return total * _inv_total(sw, n) / k


@njit(**INLINE)
def sigmoid_bce_backward(dZ, db, P, T, sw):
    # dZ_i = w_i (sigmoid(Z_i) - T_i) / (k sum(w))
    n, k = P.shape
    inv = _inv_total(sw, n) / k
    for j in range(k):
        db[j] = 0.0
    for i in range(n):
        s = _row_weight(sw, i) * inv
        for j in range(k):
            g = (P[i, j] - T[i, j]) * s
            dZ[i, j] = g
            db[j] += g


# ---- identity + mean squared error --------------------------------------------------
@njit(**INLINE)
def mse_forward(P, Z, b, T, sw):
    # loss = weighted mean over rows of the mean over k of (Z - T)^2
    n, k = Z.shape
    total = 0.0
    for i in range(n):
        row = 0.0
        for j in range(k):
            z = Z[i, j] + b[j]
            P[i, j] = z
            d = z - T[i, j]
            row += d * d
        total += _row_weight(sw, i) * row
    return total * _inv_total(sw, n) / k


@njit(**INLINE)
def mse_backward(dZ, db, P, T, sw):
    # dZ_i = 2 w_i (P_i - T_i) / (k sum(w))
    n, k = P.shape
    inv = 2.0 * _inv_total(sw, n) / k
    for j in range(k):
        db[j] = 0.0
    for i in range(n):
        s = _row_weight(sw, i) * inv
        for j in range(k):
            g = (P[i, j] - T[i, j]) * s
            dZ[i, j] = g
            db[j] += g


# ---- identity + huber (delta = 1) ----------------------------------------------------
@njit(**INLINE)
def huber_forward(P, Z, b, T, sw):
    # l(d) = d^2/2 if |d| <= delta else delta (|d| - delta/2), weighted mean over rows of the mean over k
    n, k = Z.shape
    total = 0.0
    for i in range(n):
        row = 0.0
        for j in range(k):
            z = Z[i, j] + b[j]
            P[i, j] = z
            d = abs(z - T[i, j])
            row += 0.5 * d * d if d <= HUBER_DELTA else HUBER_DELTA * (d - 0.5 * HUBER_DELTA)
        total += _row_weight(sw, i) * row
    return total * _inv_total(sw, n) / k


@njit(**INLINE)
def huber_backward(dZ, db, P, T, sw):
    # dZ_i = w_i clip(P_i - T_i, -delta, delta) / (k sum(w))
    n, k = P.shape
    inv = _inv_total(sw, n) / k
    for j in range(k):
        db[j] = 0.0
    for i in range(n):
        s = _row_weight(sw, i) * inv
        for j in range(k):
            d = P[i, j] - T[i, j]
            g = min(max(d, -HUBER_DELTA), HUBER_DELTA) * s
            dZ[i, j] = g
            db[j] += g


# ---- exp + half Poisson deviance ------------------------------------------------------
@njit(**INLINE)
def poisson_forward(P, Z, b, T, sw):
    # P = exp(Z + b); loss = weighted mean over rows of the mean over k of
    # t log(t / p) - t + p = p - t z + t log t - t   (t log t = 0 at t = 0; targets t >= 0)
    n, k = Z.shape
    total = 0.0
    for i in range(n):
        row = 0.0
        for j in range(k):
            z = Z[i, j] + b[j]
            p = exp(z)
            P[i, j] = p
            t = T[i, j]
            row += p - t * z + (t * np.log(t) - t if t > 0.0 else 0.0)
        total += _row_weight(sw, i) * row
    return total * _inv_total(sw, n) / k


@njit(**INLINE)
def poisson_backward(dZ, db, P, T, sw):
    # dZ_i = w_i (P_i - T_i) / (k sum(w))      (d/dz of p - t z, with p = exp(z))
    n, k = P.shape
    inv = _inv_total(sw, n) / k
    for j in range(k):
        db[j] = 0.0
    for i in range(n):
        s = _row_weight(sw, i) * inv
        for j in range(k):
            g = (P[i, j] - T[i, j]) * s
            dZ[i, j] = g
            db[j] += g


# ---- the family's kernels, one signature each (table.py calls them by address) ---------------
# forward (P, Z, b, T, labels, use_labels, sw) -> mean loss, backward (dZ, db, P, T, labels,
# use_labels, sw); each reads what it needs, and each is compiled on its own, once per dtype.
@njit(**JIT)
def softmax_xent_f(P, Z, b, T, labels, use_labels, sw):
    return softmax_xent_forward(P, Z, b, T, labels, use_labels, sw)


@njit(**JIT)
def softmax_xent_b(dZ, db, P, T, labels, use_labels, sw):
    softmax_xent_backward(dZ, db, P, T, labels, use_labels, sw)


@njit(**JIT)
def sigmoid_bce_f(P, Z, b, T, labels, use_labels, sw):
    return sigmoid_bce_forward(P, Z, b, T, sw)


@njit(**JIT)
def sigmoid_bce_b(dZ, db, P, T, labels, use_labels, sw):
    sigmoid_bce_backward(dZ, db, P, T, sw)


@njit(**JIT)
def mse_f(P, Z, b, T, labels, use_labels, sw):
    return mse_forward(P, Z, b, T, sw)


@njit(**JIT)
def mse_b(dZ, db, P, T, labels, use_labels, sw):
    mse_backward(dZ, db, P, T, sw)


@njit(**JIT)
def huber_f(P, Z, b, T, labels, use_labels, sw):
    return huber_forward(P, Z, b, T, sw)


@njit(**JIT)
def huber_b(dZ, db, P, T, labels, use_labels, sw):
    huber_backward(dZ, db, P, T, sw)


@njit(**JIT)
def poisson_f(P, Z, b, T, labels, use_labels, sw):
    return poisson_forward(P, Z, b, T, sw)


@njit(**JIT)
def poisson_b(dZ, db, P, T, labels, use_labels, sw):
    poisson_backward(dZ, db, P, T, sw)


# ---- metric: correct predictions (training accuracy without a second forward pass) -----
@njit(**JIT)
def correct_count(code, P, T, labels, use_labels):
    # softmax: rows whose argmax is the label (or T's argmax); sigmoid: elements with
    # (P > 0.5) == (T > 0.5), divided by k so that the count is in rows; others: 0
    n, k = P.shape
    c = 0.0
    if code == SOFTMAX_CE:
        for i in range(n):
            best = 0
            for j in range(1, k):
                if P[i, j] > P[i, best]:
                    best = j
            if use_labels:
                truth = labels[i]
            else:
                truth = 0
                for j in range(1, k):
                    if T[i, j] > T[i, truth]:
                        truth = j
            if best == truth:
                c += 1.0
    elif code == SIGMOID_BCE:
        for i in range(n):
            for j in range(k):
                if (P[i, j] > 0.5) == (T[i, j] > 0.5):
                    c += 1.0
        c /= k
    return c


# ---- output function alone (inference: no targets, no loss): out (P, Z, b) ------------------
# Z, P (n, k): P = the pair's output function of Z + b; P must not alias Z for softmax
@njit(**JIT)
def softmax_out(P, Z, b):
    _softmax_exp(P, Z, b)
    for i in range(Z.shape[0]):
        _softmax_normalise(P, i)


@njit(**JIT)
def sigmoid_out(P, Z, b):
    n, k = Z.shape
    for i in range(n):
        for j in range(k):
            z = Z[i, j] + b[j]
            e = exp(-abs(z))
            P[i, j] = 1.0 / (1.0 + e) if z >= 0 else e / (1.0 + e)


@njit(**JIT)
def exp_out(P, Z, b):
    n, k = Z.shape
    for i in range(n):
        for j in range(k):
            P[i, j] = exp(Z[i, j] + b[j])


@njit(**JIT)
def identity_out(P, Z, b):
    n, k = Z.shape
    for i in range(n):
        for j in range(k):
            P[i, j] = Z[i, j] + b[j]


# code -> (forward, backward, output alone)
KERNELS = {SOFTMAX_CE: (softmax_xent_f, softmax_xent_b, softmax_out),
           SIGMOID_BCE: (sigmoid_bce_f, sigmoid_bce_b, sigmoid_out),
           IDENTITY_MSE: (mse_f, mse_b, identity_out), IDENTITY_HUBER: (huber_f, huber_b, identity_out),
           EXP_POISSON: (poisson_f, poisson_b, exp_out)}


def loss_forward(code, P, Z, b, T, labels, use_labels, sw):
    """Loss pair ``code``'s forward pass (from Python: the drivers call the kernel by address)."""
    return KERNELS[code][0](P, Z, b, T, labels, use_labels, sw)


def loss_backward(code, dZ, db, P, T, labels, use_labels, sw):
    """Loss pair ``code``'s backward pass."""
    KERNELS[code][1](dZ, db, P, T, labels, use_labels, sw)


def output_forward(code, P, Z, b):
    """P = the output function of loss pair ``code`` of Z + b, no loss (inference)."""
    KERNELS[code][2](P, Z, b)
