"""Buffer bookkeeping: where every layer's parameters and activations live.

Parameters: one flat array [W0, b0, W1, b1, ...], each block starting on a
64-byte boundary (padding stays zero, its gradient is zero, optimizers leave it
zero). Gradients and optimizer state use the same offsets.

Workspace (one flat array per batch size B): per hidden layer a slot for A
(and Z for activations whose derivative needs it, D and M with dropout), the
output layer's Z and P, and two gradient slots for the backward ping-pong.
A batch of n <= B rows uses the first n rows of each slot: views, no copies.
"""

import numpy as np

from .kernels.activations import NEEDS_Z
from .kernels.network import A_OFF, ACT, ALPHA, B_OFF, D_OFF, DROP, M_OFF, N_IN, N_OUT, W_OFF, Z_OFF

ALIGN_BYTES = 64


def _align(n, itemsize):
    q = ALIGN_BYTES // itemsize
    return (n + q - 1) // q * q


def aligned_zeros(n, dtype):
    """Zeroed 1-D array of n elements whose data starts on a 64-byte boundary."""
    dtype = np.dtype(dtype)
    raw = np.zeros(n + ALIGN_BYTES // dtype.itemsize, dtype)
    start = (-raw.ctypes.data % ALIGN_BYTES) // dtype.itemsize
    return raw[start:start + n]


def param_layout(sizes, dtype):
    """[(w_off, b_off)] per layer and the total length of the flat parameter buffer."""
    item = np.dtype(dtype).itemsize
    offs, pos = [], 0
    for n_in, n_out in zip(sizes[:-1], sizes[1:]):
        w = pos
        pos = _align(pos + n_in * n_out, item)
        offs.append((w, pos))
        pos = _align(pos + n_out, item)
    return offs, pos


def build_layout(sizes, act_codes, alphas, drops, param_offs, batch_size, dtype):
    """Layer table (int64), per-layer floats, the two gradient-slot offsets and workspace length."""
    item = np.dtype(dtype).itemsize
    L = len(sizes) - 1
    layout = np.zeros((L, 9), np.int64)
    fpar = np.zeros((L, 2), np.float64)
    pos = 0

    def slot(width):
        nonlocal pos
        off = pos
        pos = _align(pos + batch_size * width, item)
        return off

    for l in range(L):
        k = sizes[l + 1]
        row = layout[l]
        row[N_IN], row[N_OUT] = sizes[l], k
        row[W_OFF], row[B_OFF] = param_offs[l]
        if l < L - 1:
            row[ACT] = act_codes[l]
            row[A_OFF] = slot(k)
            row[Z_OFF] = slot(k) if act_codes[l] in NEEDS_Z else row[A_OFF]
            if drops[l] > 0:
                row[D_OFF], row[M_OFF] = slot(k), slot(k)
            else:
                row[D_OFF] = row[M_OFF] = row[A_OFF]
            fpar[l, ALPHA], fpar[l, DROP] = alphas[l], drops[l]
        else:
            row[Z_OFF], row[A_OFF] = slot(k), slot(k)
            row[D_OFF] = row[M_OFF] = row[A_OFF]
    widest = max(sizes[1:])
    g0, g1 = slot(widest), slot(widest)
    return layout, fpar, (g0, g1), pos
