"""Slow, plain NumPy twins of the fastbp kernels, for the tests.

Every twin computes in float64 and returns new arrays instead of writing into
buffers. They are written from the equations (the optimizers from the algorithms
that torch.optim documents), not from the kernel code, so a test compares two
independent implementations. Stable formulas are used where the naive one would
overflow, so the twins stay usable for the large-|z| edge cases.
"""

import numpy as np


def f64(x):
    return np.asarray(x, dtype=np.float64)


# ---- GEMM and the dense layer ---------------------------------------------------------
def gemm(trans_a, trans_b, alpha, A, B, beta, C):
    """alpha op(A) @ op(B) + beta C; beta = 0 ignores C entirely (NaN included), as BLAS does."""
    opA = f64(A).T if trans_a else f64(A)
    opB = f64(B).T if trans_b else f64(B)
    out = alpha * (opA @ opB)
    if beta != 0.0:
        out = out + beta * f64(C)
    return out


def dense_forward(X, W, b):
    # Z = X W + b
    return f64(X) @ f64(W) + f64(b)


def dense_backward(dZ, X, W):
    """(dX, dW, db) of Z = X W + b for upstream gradient dZ."""
    dZ, X, W = f64(dZ), f64(X), f64(W)
    return dZ @ W.T, X.T @ dZ, dZ.sum(axis=0)


# ---- activations: f(z) and f'(z), both from the pre-activation z ------------------------
GELU_C = np.sqrt(2.0 / np.pi)
GELU_K = 0.044715


def sigmoid(z):
    z = f64(z)
    e = np.exp(-np.abs(z))                      # never overflows
    return np.where(z >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


def _f(name, z, alpha):
    if name == "identity":
        return z
    if name == "relu":
        return np.maximum(z, 0.0)
    if name == "leaky_relu":
        return np.where(z > 0, z, alpha * z)
    if name == "elu":
        return np.where(z > 0, z, alpha * np.expm1(np.minimum(z, 0.0)))
    if name == "sigmoid":
        return sigmoid(z)
    if name == "tanh":
        return np.tanh(z)
    if name == "softplus":
        return np.logaddexp(0.0, z)             # log(1 + e^z)
    if name == "gelu":
        return 0.5 * z * (1.0 + np.tanh(GELU_C * (z + GELU_K * z ** 3)))
    raise ValueError(name)


def _fprime(name, z, alpha):
    if name == "identity":
        return np.ones_like(z)
    if name == "relu":
        return (z > 0).astype(np.float64)
    if name == "leaky_relu":
        return np.where(z > 0, 1.0, alpha)
    if name == "elu":
        return np.where(z > 0, 1.0, alpha * np.exp(np.minimum(z, 0.0)))
    if name == "sigmoid":
        s = sigmoid(z)
        return s * (1.0 - s)
    if name == "tanh":
        return 1.0 - np.tanh(z) ** 2
    if name == "softplus":
        return sigmoid(z)
    if name == "gelu":
        u = GELU_C * (z + GELU_K * z ** 3)
        t = np.tanh(u)
        return 0.5 * (1.0 + t) + 0.5 * z * (1.0 - t * t) * GELU_C * (1.0 + 3.0 * GELU_K * z * z)
    raise ValueError(name)


def activation_forward(name, Z, b, alpha):
    """A = f(Z + b)."""
    return _f(name, f64(Z) + f64(b), alpha)


def activation_backward(name, dA, Zb, alpha):
    """(dZ, db) for A = f(Zb), Zb the pre-activation (bias included): dZ = dA f'(Zb), db = sum_rows dZ."""
    dZ = f64(dA) * _fprime(name, f64(Zb), alpha)
    return dZ, dZ.sum(axis=0)


# ---- output layer + loss (PyTorch mean conventions) --------------------------------------
def softmax(Z):
    Z = f64(Z)
    e = np.exp(Z - Z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def log_softmax(Z):
    Z = f64(Z)
    m = Z.max(axis=1, keepdims=True)
    return Z - m - np.log(np.exp(Z - m).sum(axis=1, keepdims=True))


def one_hot(labels, k):
    T = np.zeros((len(labels), k))
    T[np.arange(len(labels)), labels] = 1.0
    return T


def output_forward(output, Z, b):
    """P = softmax / sigmoid / identity of Z + b."""
    Zb = f64(Z) + f64(b)
    if output == "softmax":
        return softmax(Zb)
    if output == "sigmoid":
        return sigmoid(Zb)
    return Zb


def loss_value(loss, Zb, T):
    """Mean loss of logits Zb against dense targets T (one-hot rows for class labels).

    cross_entropy: -1/n sum T log softmax(Zb)      (CrossEntropyLoss, mean over the batch)
    binary_cross_entropy: mean of softplus(z) - z t (BCEWithLogitsLoss, mean over n*k)
    mse: mean of (z - t)^2;  huber: mean of d^2/2 if |d| < 1 else |d| - 1/2
    """
    Zb, T = f64(Zb), f64(T)
    n = Zb.shape[0]
    if loss == "cross_entropy":
        return -np.where(T != 0, T * log_softmax(Zb), 0.0).sum() / n
    if loss == "binary_cross_entropy":
        return np.mean(np.logaddexp(0.0, Zb) - Zb * T)
    d = Zb - T
    if loss == "mse":
        return np.mean(d * d)
    if loss == "huber":
        a = np.abs(d)
        return np.mean(np.where(a < 1.0, 0.5 * d * d, a - 0.5))
    raise ValueError(loss)


def loss_gradient(loss, Zb, T):
    """(dZ, db): gradient of loss_value w.r.t. the logits Zb, and its column sums."""
    Zb, T = f64(Zb), f64(T)
    n, k = Zb.shape
    if loss == "cross_entropy":   # target rows need not sum to 1 (soft labels, as torch)
        dZ = (softmax(Zb) * T.sum(axis=1, keepdims=True) - T) / n
    elif loss == "binary_cross_entropy":
        dZ = (sigmoid(Zb) - T) / (n * k)
    elif loss == "mse":
        dZ = 2.0 * (Zb - T) / (n * k)
    elif loss == "huber":
        dZ = np.clip(Zb - T, -1.0, 1.0) / (n * k)
    else:
        raise ValueError(loss)
    return dZ, dZ.sum(axis=0)


# ---- dropout: splitmix64 over a counter --------------------------------------------------
GOLDEN = np.uint64(0x9E3779B97F4A7C15)
MIX1 = np.uint64(0xBF58476D1CE4E5B9)
MIX2 = np.uint64(0x94D049BB133111EB)


def splitmix64(counters):
    """splitmix64 output for each uint64 counter c: the mix of state c * golden (mod 2**64)."""
    z = np.asarray(counters, dtype=np.uint64)
    with np.errstate(over="ignore"):
        z = z * GOLDEN
        z = (z ^ (z >> np.uint64(30))) * MIX1
        z = (z ^ (z >> np.uint64(27))) * MIX2
    return z ^ (z >> np.uint64(31))


def uniform01(counters):
    """Top 53 bits of splitmix64 as a float in [0, 1)."""
    return (splitmix64(counters) >> np.uint64(11)).astype(np.float64) * 2.0 ** -53


def dropout_forward(A, p, counter):
    """(D, M, next counter): element (i, j) draws from counter + i k + j (wrapping mod 2**64);
    kept (M = 1/(1-p)) when its uniform is >= p, else dropped (M = 0); D = A M."""
    n, k = np.shape(A)
    with np.errstate(over="ignore"):
        counters = np.uint64(counter) + np.arange(n * k, dtype=np.uint64)
        nxt = np.uint64(counter) + np.uint64(n * k)
    keep = uniform01(counters).reshape(n, k) >= p
    M = np.where(keep, 1.0 / (1.0 - p), 0.0)
    return f64(A) * M, M, nxt


def dropout_backward(dD, M):
    return f64(dD) * f64(M)


# ---- optimizers, from torch.optim's documented algorithms ---------------------------------
# Each step takes (p, g, state dict, t) with t the 1-based step number and returns
# (new p, new state); inputs are not modified.
def sgd_step(p, g, state, t, lr, momentum=0.0, dampening=0.0, weight_decay=0.0, nesterov=False):
    """torch.optim.SGD:
        g = g + wd p
        if mu != 0:  b = g (t = 1) else mu b + (1 - dampening) g
                     g = g + mu b (nesterov) else b
        p = p - lr g
    """
    p, g = f64(p), f64(g)
    state = dict(state)
    if weight_decay != 0.0:
        g = g + weight_decay * p
    if momentum != 0.0:
        if t > 1:
            b = momentum * f64(state["buf"]) + (1.0 - dampening) * g
        else:
            b = g.copy()
        state["buf"] = b
        g = g + momentum * b if nesterov else b
    return p - lr * g, state


def adam_step(p, g, state, t, lr, beta1, beta2, eps, weight_decay=0.0, decoupled=False, amsgrad=False,
              eps_hat=False):
    """torch.optim.Adam (decoupled=False) / torch.optim.AdamW (decoupled=True):
        Adam: g = g + wd p            AdamW: p = p - lr wd p
        m = b1 m + (1 - b1) g;  v = b2 v + (1 - b2) g^2;  mhat = m / (1 - b1^t)
        amsgrad: vmax = max(vmax, v), vhat = vmax / (1 - b2^t)   else vhat = v / (1 - b2^t)
        p = p - lr mhat / (sqrt(vhat) + eps)
    eps_hat: scikit-learn's AdamOptimizer (and Keras'), written as they write it:
        lr_t = lr sqrt(1 - b2^t) / (1 - b1^t);  p = p - lr_t m / (sqrt(vmax or v) + eps)
    """
    p, g = f64(p), f64(g)
    state = dict(state)
    if decoupled:
        p = p - lr * weight_decay * p
    elif weight_decay != 0.0:
        g = g + weight_decay * p
    m = beta1 * f64(state["m"]) + (1.0 - beta1) * g
    v = beta2 * f64(state["v"]) + (1.0 - beta2) * g * g
    state["m"], state["v"] = m, v
    mhat = m / (1.0 - beta1 ** t)
    if amsgrad:
        vmax = np.maximum(f64(state["vmax"]), v)
        state["vmax"] = vmax
    vv = vmax if amsgrad else v
    if eps_hat:
        lr_t = lr * np.sqrt(1.0 - beta2 ** t) / (1.0 - beta1 ** t)
        return p - lr_t * m / (np.sqrt(vv) + eps), state
    vhat = vv / (1.0 - beta2 ** t)
    return p - lr * mhat / (np.sqrt(vhat) + eps), state


def rmsprop_step(p, g, state, t, lr, alpha, eps, weight_decay=0.0, momentum=0.0, centered=False):
    """torch.optim.RMSprop:
        g = g + wd p;  v = alpha v + (1 - alpha) g^2;  vt = v
        centered: gave = alpha gave + (1 - alpha) g;  vt = vt - gave^2
        mu > 0: b = mu b + g / (sqrt(vt) + eps), p = p - lr b   else p = p - lr g / (sqrt(vt) + eps)
    """
    p, g = f64(p), f64(g)
    state = dict(state)
    if weight_decay != 0.0:
        g = g + weight_decay * p
    v = alpha * f64(state["sq"]) + (1.0 - alpha) * g * g
    state["sq"] = v
    vt = v
    if centered:
        gave = alpha * f64(state["gavg"]) + (1.0 - alpha) * g
        state["gavg"] = gave
        vt = vt - gave * gave
    if momentum > 0.0:
        b = momentum * f64(state["buf"]) + g / (np.sqrt(vt) + eps)
        state["buf"] = b
        return p - lr * b, state
    return p - lr * g / (np.sqrt(vt) + eps), state


def all_finite(x):
    return bool(np.isfinite(x).all())


# ---- weighted losses: sum_i w_i l_i / sum_i w_i (a row of weight 2 counts as the row twice) --
def row_losses(loss, Zb, T):
    """Per-row loss l_i of logits Zb against dense targets T: cross-entropy summed over the
    classes, the other losses averaged over the k outputs (PyTorch's element means)."""
    Zb, T = f64(Zb), f64(T)
    if loss == "cross_entropy":
        return -np.where(T != 0, T * log_softmax(Zb), 0.0).sum(axis=1)
    if loss == "binary_cross_entropy":
        return np.mean(np.logaddexp(0.0, Zb) - Zb * T, axis=1)
    d = Zb - T
    if loss == "mse":
        return np.mean(d * d, axis=1)
    if loss == "huber":
        a = np.abs(d)
        return np.mean(np.where(a < 1.0, 0.5 * d * d, a - 0.5), axis=1)
    raise ValueError(loss)


def row_loss_gradients(loss, Zb, T):
    """d l_i / d Zb_i for every row."""
    Zb, T = f64(Zb), f64(T)
    k = Zb.shape[1]
    if loss == "cross_entropy":
        return softmax(Zb) * T.sum(axis=1, keepdims=True) - T
    if loss == "binary_cross_entropy":
        return (sigmoid(Zb) - T) / k
    if loss == "mse":
        return 2.0 * (Zb - T) / k
    if loss == "huber":
        return np.clip(Zb - T, -1.0, 1.0) / k
    raise ValueError(loss)


def weighted_loss_value(loss, Zb, T, w):
    """np.average of the row losses with weights w; 0 when every weight is 0."""
    w = f64(w)
    return float(w @ row_losses(loss, Zb, T) / w.sum()) if w.sum() > 0 else 0.0


def weighted_loss_gradient(loss, Zb, T, w):
    """(dZ, db) of weighted_loss_value: dZ_i = w_i / sum(w) * d l_i / d Zb_i."""
    w = f64(w)
    c = w / w.sum() if w.sum() > 0 else np.zeros_like(w)
    dZ = c[:, None] * row_loss_gradients(loss, Zb, T)
    return dZ, dZ.sum(axis=0)


def correct_count(output, P, T):
    """Correct predictions in rows: softmax: argmax(P) == argmax(T) per row; sigmoid: the
    fraction of a row's outputs with (P > 0.5) == (T > 0.5), summed; identity: 0."""
    P, T = f64(P), f64(T)
    if output == "softmax":
        return float(np.sum(P.argmax(axis=1) == T.argmax(axis=1)))
    if output == "sigmoid":
        return float(np.sum(np.mean((P > 0.5) == (T > 0.5), axis=1)))
    return 0.0


# ---- normalization layers (the norm's output is gamma * xhat; beta is the activation's bias) --
def batchnorm_forward(Z, b, gamma, run_mean, run_var, momentum, eps, training):
    """torch.nn.BatchNorm1d without the shift: returns (Y, xhat, mu, rstd, run_mean, run_var).

    training: mu, var = mean and biased variance over the rows of Zb = Z + b, and the
    running statistics become (1 - momentum) run + momentum (mu, unbiased var) when n > 1
    (torch refuses a 1-row batch; the kernel leaves the statistics alone).
    inference: mu, var = the running statistics, which stay as they are.
    xhat = (Zb - mu) / sqrt(var + eps);  Y = gamma xhat.
    """
    Zb = f64(Z) + f64(b)
    run_mean, run_var = f64(run_mean).copy(), f64(run_var).copy()
    n = Zb.shape[0]
    if training:
        mu, var = Zb.mean(axis=0), Zb.var(axis=0)
        if n > 1:
            run_mean = (1.0 - momentum) * run_mean + momentum * mu
            run_var = (1.0 - momentum) * run_var + momentum * Zb.var(axis=0, ddof=1)
    else:
        mu, var = run_mean, run_var
    rstd = 1.0 / np.sqrt(var + eps)
    xhat = (Zb - mu) * rstd
    return f64(gamma) * xhat, xhat, mu, rstd, run_mean, run_var


def batchnorm_backward(dY, xhat, gamma, rstd):
    """(dZ, db, dgamma) of Y = gamma (Zb - mu) rstd with the batch's mu and rstd (training):
    dxhat = gamma dY;  dZ = rstd (dxhat - mean_rows dxhat - xhat mean_rows(dxhat xhat))."""
    dY, xhat = f64(dY), f64(xhat)
    dxh = f64(gamma) * dY
    dZ = f64(rstd) * (dxh - dxh.mean(axis=0) - xhat * (dxh * xhat).mean(axis=0))
    return dZ, dZ.sum(axis=0), (dY * xhat).sum(axis=0)


def layernorm_forward(Z, b, gamma, eps):
    """torch.nn.LayerNorm over the features, without the shift: (Y, xhat, mu, rstd), mu and
    rstd per row."""
    Zb = f64(Z) + f64(b)
    mu = Zb.mean(axis=1)
    rstd = 1.0 / np.sqrt(Zb.var(axis=1) + eps)
    xhat = (Zb - mu[:, None]) * rstd[:, None]
    return f64(gamma) * xhat, xhat, mu, rstd


def layernorm_backward(dY, xhat, gamma, rstd):
    """(dZ, db, dgamma) of Y = gamma (Zb - mu_row) rstd_row:
    dxhat = gamma dY;  dZ = rstd (dxhat - mean_cols dxhat - xhat mean_cols(dxhat xhat))."""
    dY, xhat = f64(dY), f64(xhat)
    dxh = f64(gamma) * dY
    dZ = f64(rstd)[:, None] * (dxh - dxh.mean(axis=1, keepdims=True)
                               - xhat * (dxh * xhat).mean(axis=1, keepdims=True))
    return dZ, dZ.sum(axis=0), (dY * xhat).sum(axis=0)


def clip_scale(grads, max_norm):
    """torch.nn.utils.clip_grad_norm_'s factor: min(1, max_norm / (global L2 norm + 1e-6))."""
    total = np.sqrt(sum(np.sum(f64(g) ** 2) for g in grads))
    return min(1.0, max_norm / (total + 1e-6))
