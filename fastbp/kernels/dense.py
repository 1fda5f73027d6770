"""Dense (fully connected) layer: Z = X @ W + b, W of shape (n_in, n_out).

The GEMMs go to BLAS (``fastbp._blas.gemm``). In the network drivers the bias
add is fused into the activation / loss pass that follows the GEMM; these
stand-alone kernels are the plain pair for a layer without activation.
"""

from numba import njit

from .._blas import gemm
from .._config import JIT


@njit(**JIT)
def dense_forward(Z, X, W, b):
    # X (n, n_in), W (n_in, n_out), b (n_out,) -> Z (n, n_out)
    gemm(False, False, 1.0, X, W, 0.0, Z)
    n, k = Z.shape
    for i in range(n):
        for j in range(k):
            Z[i, j] += b[j]


@njit(**JIT)
def dense_backward(dX, dW, db, dZ, X, W, need_dx):
    # inverts Z = X @ W + b:  dW = X^T dZ,  db = sum_rows dZ,  dX = dZ W^T (if need_dx)
    # dZ (n, n_out), X (n, n_in), W (n_in, n_out) -> dX (n, n_in), dW (n_in, n_out), db (n_out,)
    gemm(True, False, 1.0, X, dZ, 0.0, dW)
    n, k = dZ.shape
    for j in range(k):
        db[j] = 0.0
    for i in range(n):
        for j in range(k):
            db[j] += dZ[i, j]
    if need_dx:
        gemm(False, True, 1.0, dZ, W, 0.0, dX)
