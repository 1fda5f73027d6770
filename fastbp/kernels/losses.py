"""Output layer + loss pairs with fused, numerically stable gradients.

Each forward writes the output P = f(Z + b) and returns the mean loss
(accumulated in float64); softmax also writes Z + b back into Z (it reads the
shifted logits twice). Each backward writes the
gradient of that mean loss w.r.t. the pre-activation into dZ (it may alias P)
and the bias gradient db = sum over rows of dZ.

Targets come as a dense (n, k) array T, or for softmax cross-entropy as integer
class labels (n,) when ``use_labels`` is set (T is then not read).

Means follow PyTorch: cross-entropy over the batch (CrossEntropyLoss), binary
cross-entropy, mse and huber over all n*k elements (BCEWithLogitsLoss, MSELoss,
HuberLoss with delta=1).
"""

import numpy as np
from numba import njit

from .._config import JIT

SOFTMAX_CE, SIGMOID_BCE, IDENTITY_MSE, IDENTITY_HUBER = range(4)
# (output, loss) -> code
PAIRS = {
    ("softmax", "cross_entropy"): SOFTMAX_CE,
    ("sigmoid", "binary_cross_entropy"): SIGMOID_BCE,
    ("identity", "mse"): IDENTITY_MSE,
    ("identity", "huber"): IDENTITY_HUBER,
}
DEFAULT_LOSS = {"softmax": "cross_entropy", "sigmoid": "binary_cross_entropy", "identity": "mse"}
HUBER_DELTA = 1.0


# ---- softmax + cross-entropy -------------------------------------------------------
@njit(**JIT)
def softmax_xent_forward(P, Z, b, T, labels, use_labels):
    # Z, P (n, k); b (k,); T (n, k) or labels (n,).  P must not alias Z (Z is read after P is written).
    # loss = -1/n sum_i sum_j T_ij log softmax(Z_i)_j, log-sum-exp shifted by the row max
    n, k = Z.shape
    total = 0.0
    for i in range(n):
        m = -np.inf
        for j in range(k):
            z = Z[i, j] + b[j]
            Z[i, j] = z
            m = max(m, z)
        s = 0.0
        for j in range(k):
            e = np.exp(Z[i, j] - m)
            P[i, j] = e
            s += e
        lse = m + np.log(s)
        inv = 1.0 / s
        for j in range(k):
            P[i, j] *= inv
        if use_labels:
            total += lse - Z[i, labels[i]]
        else:
            for j in range(k):
                t = T[i, j]
                if t != 0.0:
                    total += t * (lse - Z[i, j])
    return total / n


@njit(**JIT)
def softmax_xent_backward(dZ, db, P, T, labels, use_labels):
    # dZ = (P - T) / n      (inverts loss = -1/n sum T log softmax(Z))
    n, k = P.shape
    inv_n = 1.0 / n
    for j in range(k):
        db[j] = 0.0
    for i in range(n):
        for j in range(k):
            t = (1.0 if labels[i] == j else 0.0) if use_labels else T[i, j]
            g = (P[i, j] - t) * inv_n
            dZ[i, j] = g
            db[j] += g


# ---- sigmoid + binary cross-entropy from logits ------------------------------------
@njit(**JIT)
def sigmoid_bce_forward(P, Z, b, T):
    # loss = mean over n*k of max(z,0) - z t + log1p(exp(-|z|))
    n, k = Z.shape
    total = 0.0
    for i in range(n):
        for j in range(k):
            z = Z[i, j] + b[j]
            e = np.exp(-abs(z))
            total += max(z, 0.0) - z * T[i, j] + np.log1p(e)
            P[i, j] = 1.0 / (1.0 + e) if z >= 0 else e / (1.0 + e)
    return total / (n * k)


@njit(**JIT)
def sigmoid_bce_backward(dZ, db, P, T):
    # dZ = (sigmoid(Z) - T) / (n k)
    n, k = P.shape
    inv = 1.0 / (n * k)
    for j in range(k):
        db[j] = 0.0
    for i in range(n):
        for j in range(k):
            g = (P[i, j] - T[i, j]) * inv
            dZ[i, j] = g
            db[j] += g


# ---- identity + mean squared error --------------------------------------------------
@njit(**JIT)
def mse_forward(P, Z, b, T):
    # loss = mean over n*k of (Z - T)^2
    n, k = Z.shape
    total = 0.0
    for i in range(n):
        for j in range(k):
            z = Z[i, j] + b[j]
            P[i, j] = z
            d = z - T[i, j]
            total += d * d
    return total / (n * k)


@njit(**JIT)
def mse_backward(dZ, db, P, T):
    # dZ = 2 (P - T) / (n k)
    n, k = P.shape
    s = 2.0 / (n * k)
    for j in range(k):
        db[j] = 0.0
    for i in range(n):
        for j in range(k):
            g = (P[i, j] - T[i, j]) * s
            dZ[i, j] = g
            db[j] += g


# ---- identity + huber (delta = 1) ----------------------------------------------------
@njit(**JIT)
def huber_forward(P, Z, b, T):
    # l(d) = d^2/2 if |d| <= delta else delta (|d| - delta/2), mean over n*k
    n, k = Z.shape
    total = 0.0
    for i in range(n):
        for j in range(k):
            z = Z[i, j] + b[j]
            P[i, j] = z
            d = abs(z - T[i, j])
            total += 0.5 * d * d if d <= HUBER_DELTA else HUBER_DELTA * (d - 0.5 * HUBER_DELTA)
    return total / (n * k)


@njit(**JIT)
def huber_backward(dZ, db, P, T):
    # dZ = clip(P - T, -delta, delta) / (n k)
    n, k = P.shape
    inv = 1.0 / (n * k)
    for j in range(k):
        db[j] = 0.0
    for i in range(n):
        for j in range(k):
            d = P[i, j] - T[i, j]
            g = min(max(d, -HUBER_DELTA), HUBER_DELTA) * inv
            dZ[i, j] = g
            db[j] += g


# ---- dispatch --------------------------------------------------------------------------
@njit(**JIT)
def loss_forward(code, P, Z, b, T, labels, use_labels):
    if code == SOFTMAX_CE:
        return softmax_xent_forward(P, Z, b, T, labels, use_labels)
    elif code == SIGMOID_BCE:
        return sigmoid_bce_forward(P, Z, b, T)
    elif code == IDENTITY_HUBER:
        return huber_forward(P, Z, b, T)
    return mse_forward(P, Z, b, T)


@njit(**JIT)
def loss_backward(code, dZ, db, P, T, labels, use_labels):
    if code == SOFTMAX_CE:
        softmax_xent_backward(dZ, db, P, T, labels, use_labels)
    elif code == SIGMOID_BCE:
        sigmoid_bce_backward(dZ, db, P, T)
    elif code == IDENTITY_HUBER:
        huber_backward(dZ, db, P, T)
    else:
        mse_backward(dZ, db, P, T)


# ---- output function alone (inference: no targets, no loss) ---------------------------
@njit(**JIT)
def output_forward(code, P, Z, b):
    # Z, P (n, k): P = softmax / sigmoid / identity of Z + b;  P must not alias Z for softmax
    n, k = Z.shape
    for i in range(n):
        if code == SOFTMAX_CE:
            m = -np.inf
            for j in range(k):
                z = Z[i, j] + b[j]
                Z[i, j] = z
                m = max(m, z)
            s = 0.0
            for j in range(k):
                e = np.exp(Z[i, j] - m)
                P[i, j] = e
                s += e
            inv = 1.0 / s
            for j in range(k):
                P[i, j] *= inv
        elif code == SIGMOID_BCE:
            for j in range(k):
                z = Z[i, j] + b[j]
                e = np.exp(-abs(z))
                P[i, j] = 1.0 / (1.0 + e) if z >= 0 else e / (1.0 + e)
        else:
            for j in range(k):
                P[i, j] = Z[i, j] + b[j]
