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
from numba import njit, prange

from .._blas import f32_bits
from .._config import JIT
from ._util import MT_CHUNKS, MT_MIN_PARAMS, PARALLEL, chunk

_HALF = np.uint32(0x7FFF)
_ONE = np.uint32(1)
_SIXTEEN = np.uint32(16)
_ABS = np.uint32(0x7FFFFFFF)
_INF = np.uint32(0x7F800000)
_QUIET = np.uint32(0x40)


@njit(**JIT)
def bf16_bits(x):
    # the bit pattern (uint16) of float32 x rounded to the nearest bfloat16 (ties to even); NaN stays NaN
    u = f32_bits(np.float32(x))   # (float64 drivers compile it too; bf16 networks are float32)
    r = (u + _HALF + ((u >> _SIXTEEN) & _ONE)) >> _SIXTEEN
    return np.uint16(r if (u & _ABS) <= _INF else (u >> _SIXTEEN) | _QUIET)


@njit(**JIT)
def to_bf16(Y, X):
    # X (n, k) float32 -> Y (n, k) uint16: X rounded to the nearest bfloat16
    n, k = X.shape
    for i in range(n):
        for j in range(k):
            Y[i, j] = bf16_bits(X[i, j])


# ---- the bf16 copy of the parameters, one signature (table.py calls it by address) ----------------
# (ws, off, p): ws read as uint16 gets p (P,) rounded at [off, off + P); threaded for large networks
# (as the optimizer updates). (The uint16 view is taken here, not in the drivers: compiling
# ``ndarray.view`` there cost the epoch driver 0.4 s.)
@njit(**JIT)
def _copy(Y, X):
    for i in range(X.shape[0]):
        Y[i] = bf16_bits(X[i])


@njit(**JIT)
def copy_bf16(ws, off, X):
    _copy(ws.view(np.uint16)[off:off + X.shape[0]], X)


@njit(**PARALLEL)
def copy_bf16_mt(ws, off, X):
    Y = ws.view(np.uint16)[off:off + X.shape[0]]
    for c in prange(MT_CHUNKS):
        lo, hi = chunk(X.shape[0], c)
        _copy(Y[lo:hi], X[lo:hi])


SERIAL, THREADED = 0, 1
KERNELS = {SERIAL: copy_bf16, THREADED: copy_bf16_mt}


def copy_code(n_params):
    """The table code of the parameter copy of a bf16 network of ``n_params`` (threaded from
    MT_MIN_PARAMS on: wide's 6.3M parameters took 2.1 ms per step on one thread)."""
    return THREADED if n_params >= MT_MIN_PARAMS else SERIAL


def from_bf16(Y):
    """NumPy: the float32 values of bfloat16 bit patterns (uint16)."""
    return (np.asarray(Y, np.uint16).astype(np.uint32) << 16).view(np.float32)


def round_bf16(X):
    """NumPy: float32 X rounded to bfloat16 and back (what to_bf16 keeps of it)."""
    X = np.ascontiguousarray(X, np.float32)
    Y = np.empty(X.shape, np.uint16)
    to_bf16(Y.reshape(-1, X.shape[-1] if X.ndim else 1), X.reshape(-1, X.shape[-1] if X.ndim else 1))
    return from_bf16(Y)
