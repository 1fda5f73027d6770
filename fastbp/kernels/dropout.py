"""Inverted dropout, with a counter-based generator so the kernels stay stateless.

The generator is splitmix64 over a counter held by the caller in ``rng`` (a
uint64 array of length 1): element i of a call draws from ``rng[0] + i``, and the
call advances ``rng[0]`` by the number of elements. Same seed, same masks.
"""

import numpy as np
from numba import njit

from .._config import INLINE, JIT
from ._util import in_place

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_INV53 = 1.0 / 9007199254740992.0  # 2**-53


@njit(**JIT)
def uniform01(counter):
    """splitmix64(counter) mapped to [0, 1) with 53 random bits."""
    z = counter * _GOLDEN
    z = (z ^ (z >> np.uint64(30))) * _M1
    z = (z ^ (z >> np.uint64(27))) * _M2
    z = z ^ (z >> np.uint64(31))
    return np.float64(z >> np.uint64(11)) * _INV53


@njit(**INLINE)
def dropout_forward(D, M, A, p, rng):
    # A, D, M (n, k); p drop probability in [0, 1); rng uint64 (1,)
    # M = [u >= p] / (1 - p),  D = A * M
    n, k = A.shape
    scale = 1.0 / (1.0 - p)
    base = rng[0]
    for i in range(n):
        for j in range(k):
            u = uniform01(base + np.uint64(i * k + j))
            m = scale if u >= p else 0.0
            M[i, j] = m
            D[i, j] = A[i, j] * m
    rng[0] = base + np.uint64(n * k)


@njit(**INLINE)
def dropout_backward(dA, dD, M):
    # dA = dD * M   (inverts D = A * M with the mask saved by the forward pass); dA may be dD
    n, k = in_place(dA, dD)
    for i in range(n):
        for j in range(k):
            dA[i, j] *= M[i, j]


# ---- the kernels the drivers call by address (table.py), compiled once per dtype ---------------
@njit(**JIT)
def dropout_f(D, M, A, p, rng):
    dropout_forward(D, M, A, p, rng)


@njit(**JIT)
def dropout_b(dA, dD, M):
    dropout_backward(dA, dD, M)


KERNELS = (dropout_f, dropout_b)
