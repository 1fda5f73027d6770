"""Hidden-layer activations with the bias add fused in, as forward/backward pairs.

Forward:  A = f(Z + b).  ``A`` may be the same buffer as ``Z`` (except for gelu,
which writes Z + b back into Z because its backward reads it).
Backward: dZ = dA * f'(.), db = sum over rows of dZ.  ``dZ`` may be ``dA``.

Derivatives are taken from the *output* A wherever that is exact (as
scikit-learn does), so those activations run in place and store no
pre-activation; only gelu reads Z. ``alpha`` is the negative slope of
leaky_relu and the alpha of elu (unused by the others); it must be > 0, since
their backward passes read the sign of z from the sign of A.

Constants and ``alpha`` enter the loops in the arrays' precision (``like``): a
Python float would turn float32 arithmetic into float64 (relu's backward ran
2.7x slower that way).
"""

import numpy as np
from numba import njit

from .._config import HELPER, INLINE, JIT
from ._util import in_place
from .mathfn import exp, gelu, gelu_grad, like, tanh

IDENTITY, RELU, LEAKY_RELU, ELU, SIGMOID, TANH, SOFTPLUS, GELU = range(8)
ACTIVATIONS = {
    "identity": IDENTITY, "relu": RELU, "leaky_relu": LEAKY_RELU, "elu": ELU,
    "sigmoid": SIGMOID, "tanh": TANH, "softplus": SOFTPLUS, "gelu": GELU,
}
ALIASES = {"logistic": "sigmoid", "linear": "identity"}
DEFAULT_ALPHA = {LEAKY_RELU: 0.01, ELU: 1.0}
NEEDS_Z = (GELU,)          # backward reads the pre-activation
RELU_LIKE = (RELU, LEAKY_RELU, ELU, GELU, SOFTPLUS)  # He initialisation


@njit(**HELPER)
def _colsum_init(db):
    for j in range(db.shape[0]):
        db[j] = 0.0


# ---- identity: A = Z ------------------------------------------------------------
@njit(**INLINE)
def identity_forward(A, Z, b):
    # Z, A (n, k); b (k,)
    n, k = in_place(A, Z)
    for i in range(n):
        for j in range(k):
            A[i, j] = A[i, j] + b[j]


@njit(**INLINE)
def identity_backward(dZ, db, dA):
    # dZ, dA (n, k); db (k,)   inverts A = Z
    n, k = in_place(dZ, dA)
    _colsum_init(db)
    for i in range(n):
        for j in range(k):
            db[j] += dZ[i, j]


# ---- relu: A = max(Z, 0) -------------------------------------------------------
@njit(**INLINE)
def relu_forward(A, Z, b):
    n, k = in_place(A, Z)
    zero = like(0.0, A)
    for i in range(n):
        for j in range(k):
            z = A[i, j] + b[j]
            A[i, j] = zero if z <= 0 else z     # NaN stays NaN, as in NumPy and torch


@njit(**INLINE)
def relu_backward(dZ, db, dA, A):
    # f'(z) = 0 if A <= 0 else 1 (the forward's test: at A = NaN the gradient passes, as torch's)
    n, k = in_place(dZ, dA)
    zero = like(0.0, dZ)
    _colsum_init(db)
    for i in range(n):
        for j in range(k):
            g = zero if A[i, j] <= 0 else dZ[i, j]
            dZ[i, j] = g
            db[j] += g


# ---- leaky_relu: A = Z if Z > 0 else alpha Z (alpha > 0 keeps the sign) -------
@njit(**INLINE)
def leaky_relu_forward(A, Z, b, alpha):
    n, k = in_place(A, Z)
    al = like(alpha, A)
    for i in range(n):
        for j in range(k):
            z = A[i, j] + b[j]
            A[i, j] = z if z > 0 else al * z


@njit(**INLINE)
def leaky_relu_backward(dZ, db, dA, A, alpha):
    n, k = in_place(dZ, dA)
    al = like(alpha, dZ)
    _colsum_init(db)
    for i in range(n):
        for j in range(k):
            g = dZ[i, j] if A[i, j] > 0 else al * dZ[i, j]
            dZ[i, j] = g
            db[j] += g


# ---- elu: A = Z if Z > 0 else alpha (exp(Z) - 1) -------------------------------
@njit(**INLINE)
def elu_forward(A, Z, b, alpha):
    n, k = in_place(A, Z)
    al = like(alpha, A)
    for i in range(n):
        for j in range(k):
            z = A[i, j] + b[j]
            A[i, j] = z if z > 0 else al * np.expm1(z)


@njit(**INLINE)
def elu_backward(dZ, db, dA, A, alpha):
    # f'(z) = 1 for z > 0, alpha exp(z) = A + alpha otherwise
    n, k = in_place(dZ, dA)
    al = like(alpha, dZ)
    _colsum_init(db)
    for i in range(n):
        for j in range(k):
            a = A[i, j]
            g = dZ[i, j] if a > 0 else dZ[i, j] * (a + al)
            dZ[i, j] = g
            db[j] += g


# ---- sigmoid: A = 1 / (1 + exp(-Z)) --------------------------------------------
@njit(**HELPER)
def _sigmoid(z):
    # stable for both signs: never exponentiates a large positive number
    e = exp(-abs(z))   # one branch-free expression, so the loop vectorises
    return 1.0 / (1.0 + e) if z >= 0 else e / (1.0 + e)


@njit(**INLINE)
def sigmoid_forward(A, Z, b):
    n, k = in_place(A, Z)
    for i in range(n):
        for j in range(k):
            A[i, j] = _sigmoid(A[i, j] + b[j])


@njit(**INLINE)
def sigmoid_backward(dZ, db, dA, A):
    # f'(z) = A (1 - A)
    n, k = in_place(dZ, dA)
    one = like(1.0, dZ)
    _colsum_init(db)
    for i in range(n):
        for j in range(k):
            a = A[i, j]
            g = dZ[i, j] * a * (one - a)
            dZ[i, j] = g
            db[j] += g


# ---- tanh ------------------------------------------------------------------------
@njit(**INLINE)
def tanh_forward(A, Z, b):
    n, k = in_place(A, Z)
    for i in range(n):
        for j in range(k):
            A[i, j] = tanh(A[i, j] + b[j])


@njit(**INLINE)
def tanh_backward(dZ, db, dA, A):
    # f'(z) = 1 - A^2
    n, k = in_place(dZ, dA)
    one = like(1.0, dZ)
    _colsum_init(db)
    for i in range(n):
        for j in range(k):
            a = A[i, j]
            g = dZ[i, j] * (one - a * a)
            dZ[i, j] = g
            db[j] += g


# ---- softplus: A = log(1 + exp(Z)) ---------------------------------------------
@njit(**INLINE)
def softplus_forward(A, Z, b):
    n, k = in_place(A, Z)
    for i in range(n):
        for j in range(k):
            z = A[i, j] + b[j]
            # max(z, 0) + log1p(exp(-|z|)) never overflows
            A[i, j] = max(z, 0.0) + np.log1p(np.exp(-abs(z)))


@njit(**INLINE)
def softplus_backward(dZ, db, dA, A):
    # f'(z) = sigmoid(z) = 1 - exp(-A) = -expm1(-A)   (expm1 keeps precision as A -> 0)
    n, k = in_place(dZ, dA)
    _colsum_init(db)
    for i in range(n):
        for j in range(k):
            g = dZ[i, j] * -np.expm1(-A[i, j])
            dZ[i, j] = g
            db[j] += g


# ---- gelu, tanh approximation: A = Z/2 (1 + tanh(c (Z + k Z^3))) ---------------
@njit(**INLINE)
def gelu_forward(A, Z, b):
    # Z keeps the pre-activation (backward needs it), so A must be a separate buffer
    n, k = Z.shape
    for i in range(n):
        for j in range(k):
            z = Z[i, j] + b[j]
            Z[i, j] = z
            A[i, j] = gelu(z)


@njit(**INLINE)
def gelu_backward(dZ, db, dA, Z):
    # f'(z) = (1 + t)/2 + z/2 (1 - t^2) c (1 + 3 k z^2),  t = tanh(c (z + k z^3))
    n, k = in_place(dZ, dA)
    _colsum_init(db)
    for i in range(n):
        for j in range(k):
            g = dZ[i, j] * gelu_grad(Z[i, j])
            dZ[i, j] = g
            db[j] += g


# ---- the family's kernels, one signature each (table.py calls them by address) ---------------
# forward (A, Z, b, alpha), backward (dZ, db, dA, A, Z, alpha): each reads what it needs. Each is
# compiled on its own, once per dtype, so a network compiles only the activations it uses.
@njit(**JIT)
def identity_f(A, Z, b, alpha):
    identity_forward(A, Z, b)


@njit(**JIT)
def identity_b(dZ, db, dA, A, Z, alpha):
    identity_backward(dZ, db, dA)


@njit(**JIT)
def relu_f(A, Z, b, alpha):
    relu_forward(A, Z, b)


@njit(**JIT)
def relu_b(dZ, db, dA, A, Z, alpha):
    relu_backward(dZ, db, dA, A)


@njit(**JIT)
def leaky_relu_f(A, Z, b, alpha):
    leaky_relu_forward(A, Z, b, alpha)


@njit(**JIT)
def leaky_relu_b(dZ, db, dA, A, Z, alpha):
    leaky_relu_backward(dZ, db, dA, A, alpha)


@njit(**JIT)
def elu_f(A, Z, b, alpha):
    elu_forward(A, Z, b, alpha)


@njit(**JIT)
def elu_b(dZ, db, dA, A, Z, alpha):
    elu_backward(dZ, db, dA, A, alpha)


@njit(**JIT)
def sigmoid_f(A, Z, b, alpha):
    sigmoid_forward(A, Z, b)


@njit(**JIT)
def sigmoid_b(dZ, db, dA, A, Z, alpha):
    sigmoid_backward(dZ, db, dA, A)


@njit(**JIT)
def tanh_f(A, Z, b, alpha):
    tanh_forward(A, Z, b)


@njit(**JIT)
def tanh_b(dZ, db, dA, A, Z, alpha):
    tanh_backward(dZ, db, dA, A)


@njit(**JIT)
def softplus_f(A, Z, b, alpha):
    softplus_forward(A, Z, b)


@njit(**JIT)
def softplus_b(dZ, db, dA, A, Z, alpha):
    softplus_backward(dZ, db, dA, A)


@njit(**JIT)
def gelu_f(A, Z, b, alpha):
    gelu_forward(A, Z, b)


@njit(**JIT)
def gelu_b(dZ, db, dA, A, Z, alpha):
    gelu_backward(dZ, db, dA, Z)


# code -> (forward, backward)
KERNELS = {IDENTITY: (identity_f, identity_b), RELU: (relu_f, relu_b), LEAKY_RELU: (leaky_relu_f, leaky_relu_b),
           ELU: (elu_f, elu_b), SIGMOID: (sigmoid_f, sigmoid_b), TANH: (tanh_f, tanh_b),
           SOFTPLUS: (softplus_f, softplus_b), GELU: (gelu_f, gelu_b)}


def activation_forward(code, A, Z, b, alpha):
    """A = f(Z + b) for activation ``code`` (from Python: the drivers call the kernel by address)."""
    KERNELS[code][0](A, Z, b, alpha)


def activation_backward(code, dZ, db, dA, A, Z, alpha):
    """dZ = dA f'(.), db = column sums, for activation ``code``."""
    KERNELS[code][1](dZ, db, dA, A, Z, alpha)
