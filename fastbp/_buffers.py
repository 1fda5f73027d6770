"""Buffer bookkeeping: where every layer's parameters and activations live.

Parameters: one flat array [W0, b0, (gamma0, beta0,) W1, b1, ...], each block
starting on a 64-byte boundary (padding stays zero, its gradient is zero,
optimizers leave it zero); gamma and beta only for layers with a norm.
Gradients and optimizer state use the same offsets. The norm layers' running
statistics live in a second, untrained flat buffer (``nstate``).

Workspace (one flat array per batch size B): per hidden layer a slot for A
(and Z for activations whose derivative needs it, D and M with dropout), the
output layer's Z and P, and two gradient slots for the backward ping-pong.
A bf16 network's workspace also holds, read as uint16 (kernels/precision.py), a bf16 copy
of the parameters, of each layer's input and of one layer's dZ.
A batch of n <= B rows uses the first n rows of each slot: views, no copies.
"""

import contextlib
import math
import threading

import numpy as np

from ._blas import dx_via_transpose
from .kernels.activations import NEEDS_Z, RELU_LIKE
from .kernels.network import (A_OFF, ACT, ALPHA, B_OFF, BE_OFF, D_OFF, DROP, EPS, G_OFF, M_OFF, MOMENTUM, MU_OFF,
                              N_COLS, N_IN, N_OUT, NORM, P_END, RM_OFF, RS_OFF, RV_OFF, W_OFF, WT, X16_OFF, XH_OFF,
                              Z_OFF)
from .kernels.norm import BATCH_NORM, NO_NORM

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


def param_layout(sizes, dtype, norms=None):
    """Per layer (w_off, b_off, gamma_off, beta_off, end) (gamma/beta -1 without a norm),
    and the total length of the flat parameter buffer."""
    item = np.dtype(dtype).itemsize
    norms = norms or [NO_NORM] * (len(sizes) - 2)
    offs, pos = [], 0
    for l, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        w = pos
        b = pos = _align(pos + n_in * n_out, item)
        g = be = -1
        if l < len(sizes) - 2 and norms[l] != NO_NORM:
            g = pos = _align(pos + n_out, item)
            be = pos = _align(pos + n_out, item)
        pos = _align(pos + n_out, item)
        offs.append((w, b, g, be, pos))
    return offs, pos


def state_layout(sizes, norms, dtype):
    """Per hidden layer (running-mean offset, running-var offset) in nstate (-1 unless batch norm),
    and nstate's length."""
    item = np.dtype(dtype).itemsize
    offs, pos = [], 0
    for l, k in enumerate(sizes[1:-1]):
        if norms[l] == BATCH_NORM:
            offs.append((pos, _align(pos + k, item)))
            pos = _align(offs[-1][1] + k, item)
        else:
            offs.append((-1, -1))
    return offs, pos


def build_layout(sizes, act_codes, alphas, drops, param_offs, batch_size, dtype, norms=None, norm_fpar=None,
                 state_offs=None, n_params=0, bf16=False):
    """Layer table (int64), per-layer floats, the offsets (g0, g1, p16, dz16) of the two gradient
    slots and, with ``bf16`` (float32 only), of the bf16 copies of the ``n_params`` parameters and
    of a dZ (in the workspace read as uint16; -1 without), and the workspace length."""
    item = np.dtype(dtype).itemsize
    L = len(sizes) - 1
    norms = norms or [NO_NORM] * (L - 1)
    layout = np.full((L, N_COLS), -1, np.int64)
    fpar = np.zeros((L, 4), np.float64)
    pos = 0

    def slot(width):
        nonlocal pos
        off = pos
        pos = _align(pos + batch_size * width, item)
        return off

    def slot16(count):   # room for ``count`` uint16 in the float32 workspace, as a uint16 offset
        nonlocal pos
        off = pos
        pos = _align(pos + (count + 1) // 2, item)
        return 2 * off

    for l in range(L):
        k = sizes[l + 1]
        row = layout[l]
        row[N_IN], row[N_OUT] = sizes[l], k
        row[W_OFF], row[B_OFF], row[G_OFF], row[BE_OFF], row[P_END] = param_offs[l]
        row[NORM] = NO_NORM
        row[WT] = int(l > 0 and not bf16 and dx_via_transpose(batch_size, sizes[l], k, dtype))
        if bf16:
            row[X16_OFF] = slot16(batch_size * sizes[l])
        if l < L - 1:
            row[ACT] = act_codes[l]
            if norms[l] != NO_NORM:
                row[NORM] = norms[l]
                row[XH_OFF] = slot(k)
                row[MU_OFF] = pos   # layer norm: a mean per row; batch norm: mean and variance per feature
                pos = _align(pos + max(2 * k, batch_size), item)
                row[RS_OFF] = pos
                pos = _align(pos + max(k, batch_size), item)
                row[RM_OFF], row[RV_OFF] = state_offs[l]
                fpar[l, MOMENTUM], fpar[l, EPS] = norm_fpar
            row[A_OFF] = slot(k)
            row[Z_OFF] = slot(k) if act_codes[l] in NEEDS_Z else row[A_OFF]
            if drops[l] > 0:
                row[D_OFF], row[M_OFF] = slot(k), slot(k)
            else:
                row[D_OFF] = row[M_OFF] = row[A_OFF]
            fpar[l, ALPHA], fpar[l, DROP] = alphas[l], drops[l]
        else:
            row[ACT] = 0
            row[Z_OFF], row[A_OFF] = slot(k), slot(k)
            row[D_OFF] = row[M_OFF] = row[A_OFF]
    widest = max(sizes[1:])
    g0, g1 = slot(widest), slot(widest)
    p16 = dz16 = -1
    if bf16:
        p16, dz16 = slot16(n_params), slot16(batch_size * widest)
    return layout, fpar, (g0, g1, p16, dz16), pos


def init_params(param_views, state_views, act_codes, init, rng):
    """Initial values, in place: per layer W He normal N(0, 2/n_in) (``init`` "he", or "auto"
    for a relu-like hidden layer) or Glorot uniform U(+-sqrt(6/(n_in + n_out))), b = 0; norm
    layers gamma = 1, beta = 0; batch norm's running mean 0 and variance 1.

    ``param_views``: per layer (W, b) or (W, b, gamma, beta); ``state_views``: per layer
    (running_mean, running_var) or (); ``act_codes``: the hidden layers' activations."""
    n_layers = len(param_views)
    for l, views in enumerate(param_views):
        W, b = views[:2]
        n_in, n_out = W.shape
        relu_like = l < n_layers - 1 and act_codes[l] in RELU_LIKE
        if init == "he" or (init == "auto" and relu_like):
            W[...] = rng.standard_normal((n_in, n_out)) * math.sqrt(2.0 / n_in)
        else:
            lim = math.sqrt(6.0 / (n_in + n_out))
            W[...] = rng.uniform(-lim, lim, (n_in, n_out))
        b[...] = 0.0
        if len(views) == 4:
            views[2][...] = 1.0
            views[3][...] = 0.0
    for stats in state_views:
        if stats:
            stats[0][...] = 0.0
            stats[1][...] = 1.0


class Workspaces:
    """A network's workspaces, one per batch size, built by ``build(batch_size)`` on first use.

    ``cache`` holds at most ``limit`` of them, the most recently used last, so that a stream of
    batch sizes (partial_fit on chunks of every length) does not pile them up. ``lock`` is held
    while compiled code works in a cached one."""

    def __init__(self, build, limit):
        self.build, self.limit = build, limit
        self.cache = {}
        self.lock = threading.RLock()

    def get(self, batch_size):
        """The cached workspace for batches of up to ``batch_size`` rows (hold ``lock`` while using it)."""
        ws = self.cache.pop(batch_size, None)
        if ws is None:
            ws = self.build(batch_size)
            while len(self.cache) >= self.limit:
                del self.cache[next(iter(self.cache))]
        self.cache[batch_size] = ws
        return ws

    @contextlib.contextmanager
    def borrow(self, batch_size):
        """A workspace for one call: the cached one, or a private one while another thread
        computes in the cached ones (compiled code runs without the GIL, so two threads
        predicting with one network would otherwise write the same buffers)."""
        if self.lock.acquire(blocking=False):
            try:
                yield self.get(batch_size)
            finally:
                self.lock.release()
        else:
            yield self.build(batch_size)

    def drop(self, batch_size):
        """Forget the cached workspace for ``batch_size``."""
        with self.lock:
            self.cache.pop(batch_size, None)
