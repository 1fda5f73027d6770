"""bfloat16 copies for the matrix products of ``Network(precision="bf16")``.

A bf16 network keeps float32 master weights, activations, losses and optimizer state, as
``torch.autocast(device_type="cpu", dtype=torch.bfloat16)`` does with float32 parameters: only
the operands of the matrix products are rounded to bfloat16 (the weights once per step, each
layer's input and each gradient dZ once), and the products accumulate in float32
(``_blas.gemm_bf16``). The rounding's backward is the identity (its gradient passes straight
through, as under autocast), so the pair below has no backward kernel.

bfloat16 values are held as their uint16 bit patterns: the upper half of a float32's bits.
"""

import numpy as np
from numba import njit

from .._blas import f32_bits
from .._config import JIT

_HALF = np.uint32(0x7FFF)
_ONE = np.uint32(1)
_SIXTEEN = np.uint32(16)
_ABS = np.uint32(0x7FFFFFFF)
_INF = np.uint32(0x7F800000)
_QUIET = np.uint32(0x40)


@njit(**JIT)
def to_bf16(Y, X):
    # X (n, k) float32 -> Y (n, k) uint16: X rounded to the nearest bfloat16 (ties to even); NaN stays NaN
    n, k = X.shape
    for i in range(n):
        for j in range(k):
            u = f32_bits(np.float32(X[i, j]))   # (float64 drivers compile it too; bf16 networks are float32)
            r = (u + _HALF + ((u >> _SIXTEEN) & _ONE)) >> _SIXTEEN
            Y[i, j] = r if (u & _ABS) <= _INF else (u >> _SIXTEEN) | _QUIET


def from_bf16(Y):
    """NumPy: the float32 values of bfloat16 bit patterns (uint16)."""
    return (np.asarray(Y, np.uint16).astype(np.uint32) << 16).view(np.float32)


def round_bf16(X):
    """NumPy: float32 X rounded to bfloat16 and back (what to_bf16 keeps of it)."""
    X = np.ascontiguousarray(X, np.float32)
    Y = np.empty(X.shape, np.uint16)
    to_bf16(Y.reshape(-1, X.shape[-1] if X.ndim else 1), X.reshape(-1, X.shape[-1] if X.ndim else 1))
    return from_bf16(Y)
