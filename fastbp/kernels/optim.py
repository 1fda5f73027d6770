"""Fused optimizer updates over the one flat parameter buffer.

Each update is a single pass over p, g and the state arrays (which mirror p's
layout). The rules, defaults and weight-decay semantics are torch.optim's
documented algorithms (L2 added to the gradient for SGD, Adam and RMSprop;
decoupled decay for AdamW). As in torch.optim, the arithmetic is done in the
parameters' precision (hyper-parameters are rounded to it once per call; the
bias corrections are computed in float64 first), so float32 runs 16 lanes wide.
``t`` is the 1-based step count *including* this step. ``gscale`` multiplies
every gradient as it is read (gradient clipping by global norm, fused into the
update: 1.0 when not clipping).
"""

from typing import NamedTuple

import numpy as np
from numba import njit, prange

from .._config import INLINE, JIT
from ._util import MT_CHUNKS, MT_MIN_PARAMS, PARALLEL, chunk
from .mathfn import like

SGD, ADAM, RMSPROP = range(3)


# ---- hyper-parameters by name ------------------------------------------------------------------
# The compiled update takes them as one float64 array ``hp`` (flags as 0.0/1.0); ``pack`` writes
# a NamedTuple into it and the dispatcher below reads it back through the index constants, so
# the order is written down once, here.
class SGDHparams(NamedTuple):
    lr: float
    momentum: float
    dampening: float
    weight_decay: float
    nesterov: bool


class AdamHparams(NamedTuple):
    lr: float
    beta1: float
    beta2: float
    eps: float
    weight_decay: float
    decoupled: bool      # AdamW: p *= 1 - lr wd instead of g += wd p
    amsgrad: bool
    eps_hat: bool        # eps added before the bias correction (Keras, scikit-learn)


class RMSpropHparams(NamedTuple):
    lr: float
    alpha: float
    eps: float
    weight_decay: float
    momentum: float
    centered: bool


HPARAMS = {SGD: SGDHparams, ADAM: AdamHparams, RMSPROP: RMSpropHparams}

SGD_LR, SGD_MOMENTUM, SGD_DAMPENING, SGD_WEIGHT_DECAY, SGD_NESTEROV = range(len(SGDHparams._fields))
(ADAM_LR, ADAM_BETA1, ADAM_BETA2, ADAM_EPS, ADAM_WEIGHT_DECAY, ADAM_DECOUPLED, ADAM_AMSGRAD,
 ADAM_EPS_HAT) = range(len(AdamHparams._fields))
(RMS_LR, RMS_ALPHA, RMS_EPS, RMS_WEIGHT_DECAY, RMS_MOMENTUM, RMS_CENTERED) = range(len(RMSpropHparams._fields))


def new_hparams_array(kind):
    """The float64 array ``pack`` writes optimizer ``kind``'s hyper-parameters into (one per
    optimizer, reused every step)."""
    return np.zeros(len(HPARAMS[kind]._fields), np.float64)


def pack(hp, hparams):
    """Write the NamedTuple ``hparams`` into ``hp`` (no allocation) and return ``hp``."""
    for i, v in enumerate(hparams):
        hp[i] = v
    return hp


@njit(**INLINE)
def sgd_update(p, g, buf, t, lr, momentum, dampening, weight_decay, nesterov, gscale):
    # p, g, buf (P,)
    # d = s g + wd p;  buf = d (t = 1) else mu buf + (1 - damp) d;
    # d = d + mu buf (nesterov) else buf;  p -= lr d
    lr_, mu, damp, wd = like(lr, p), like(momentum, p), like(1.0 - dampening, p), like(weight_decay, p)
    gs = like(gscale, p)
    for i in range(p.shape[0]):
        d = gs * g[i] + wd * p[i]
        if momentum != 0.0:
            bi = d if t == 1 else mu * buf[i] + damp * d
            buf[i] = bi
            d = d + mu * bi if nesterov else bi
        p[i] = p[i] - lr_ * d


@njit(**INLINE)
def adam_update(p, g, m, v, vmax, t, lr, beta1, beta2, eps, weight_decay, decoupled, amsgrad, eps_hat, gscale):
    # p, g, m, v (P,); vmax (P,) if amsgrad else unused
    # Adam:  g += wd p.   AdamW: p *= 1 - lr wd.
    # m = b1 m + (1-b1) g;  v = b2 v + (1-b2) g^2;  vhat = max(vmax, v) if amsgrad else v
    # p -= lr / (1 - b1^t) * m / (sqrt(vhat) / sqrt(1 - b2^t) + eps)          (torch.optim)
    # eps_hat: eps is the paper's epsilon-hat, added before the bias correction (Keras, scikit-learn):
    # p -= lr sqrt(1 - b2^t) / (1 - b1^t) * m / (sqrt(vhat) + eps), i.e. the above with eps / sqrt(1 - b2^t)
    b1, c1, b2, c2 = like(beta1, p), like(1.0 - beta1, p), like(beta2, p), like(1.0 - beta2, p)
    step_size = like(lr / (1.0 - beta1 ** t), p)
    isb = 1.0 / np.sqrt(1.0 - beta2 ** t)
    inv_sqrt_bc2 = like(isb, p)
    eps_, wd, decay = like(eps * isb if eps_hat else eps, p), like(weight_decay, p), like(1.0 - lr * weight_decay, p)
    gs = like(gscale, p)
    for i in range(p.shape[0]):
        pi = p[i]
        gi = gs * g[i]
        if decoupled:
            pi = pi * decay
        else:
            gi = gi + wd * pi
        mi = b1 * m[i] + c1 * gi
        vi = b2 * v[i] + c2 * (gi * gi)
        m[i] = mi
        v[i] = vi
        if amsgrad:
            vi = max(vmax[i], vi)
            vmax[i] = vi
        p[i] = pi - step_size * mi / (np.sqrt(vi) * inv_sqrt_bc2 + eps_)


@njit(**INLINE)
def rmsprop_update(p, g, sq, gavg, buf, lr, alpha, eps, weight_decay, momentum, centered, gscale):
    # p, g, sq (P,); gavg (P,) if centered; buf (P,) if momentum > 0
    # g += wd p;  sq = a sq + (1-a) g^2;  avg = sqrt(sq - gavg^2) (centered) or sqrt(sq), + eps
    # buf = mu buf + g / avg, p -= lr buf (momentum)  or  p -= lr g / avg
    a, c, eps_, wd = like(alpha, p), like(1.0 - alpha, p), like(eps, p), like(weight_decay, p)
    lr_, mu, gs = like(lr, p), like(momentum, p), like(gscale, p)
    for i in range(p.shape[0]):
        gi = gs * g[i] + wd * p[i]
        si = a * sq[i] + c * (gi * gi)
        sq[i] = si
        if centered:
            ga = a * gavg[i] + c * gi
            gavg[i] = ga
            si = si - ga * ga
        step = gi / (np.sqrt(si) + eps_)
        if momentum > 0.0:
            step = mu * buf[i] + step
            buf[i] = step
        p[i] = p[i] - lr_ * step


# ---- the family's kernels, one signature each (table.py calls them by address) ---------------
# (p, g, s1, s2, s3, hp, t, gscale): hp holds the hyper-parameters as ``pack`` writes them (the
# fields of HPARAMS[kind]), s1..s3 the state buffers the optimizer allocates.
@njit(**JIT)
def sgd_u(p, g, s1, s2, s3, hp, t, gscale):
    sgd_update(p, g, s1, t, hp[SGD_LR], hp[SGD_MOMENTUM], hp[SGD_DAMPENING], hp[SGD_WEIGHT_DECAY],
               hp[SGD_NESTEROV] != 0.0, gscale)


@njit(**JIT)
def adam_u(p, g, s1, s2, s3, hp, t, gscale):
    adam_update(p, g, s1, s2, s3, t, hp[ADAM_LR], hp[ADAM_BETA1], hp[ADAM_BETA2], hp[ADAM_EPS],
                hp[ADAM_WEIGHT_DECAY], hp[ADAM_DECOUPLED] != 0.0, hp[ADAM_AMSGRAD] != 0.0,
                hp[ADAM_EPS_HAT] != 0.0, gscale)


@njit(**JIT)
def rmsprop_u(p, g, s1, s2, s3, hp, t, gscale):
    rmsprop_update(p, g, s1, s2, s3, hp[RMS_LR], hp[RMS_ALPHA], hp[RMS_EPS], hp[RMS_WEIGHT_DECAY],
                   hp[RMS_MOMENTUM], hp[RMS_CENTERED] != 0.0, gscale)


# ---- the same updates on every thread, for large buffers ---------------------------------------
# An update is one pass over memory (Adam reads p, g, m, v and writes p, m, v): on a large buffer a
# single thread is bound by its own bandwidth (wide's 6.3M parameters: 6.0 ms per Adam step on one
# thread). Above MT_MIN_PARAMS the table takes these instead (code + MT): the buffer split into
# contiguous chunks that Numba's threads share (_util.chunk), each updated by the serial kernel.
# Compiled (parallel=True) only for networks that large, or by warmup.
MT = 16


@njit(**INLINE)
def _part(x, lo, hi):
    # a chunk of a state buffer, or the buffer itself when the update does not use it (empty)
    return x[lo:hi] if x.shape[0] != 0 else x


@njit(**PARALLEL)
def sgd_u_mt(p, g, s1, s2, s3, hp, t, gscale):
    for c in prange(MT_CHUNKS):
        lo, hi = chunk(p.shape[0], c)
        sgd_u(p[lo:hi], g[lo:hi], _part(s1, lo, hi), s2, s3, hp, t, gscale)


@njit(**PARALLEL)
def adam_u_mt(p, g, s1, s2, s3, hp, t, gscale):
    for c in prange(MT_CHUNKS):
        lo, hi = chunk(p.shape[0], c)
        adam_u(p[lo:hi], g[lo:hi], s1[lo:hi], s2[lo:hi], _part(s3, lo, hi), hp, t, gscale)


@njit(**PARALLEL)
def rmsprop_u_mt(p, g, s1, s2, s3, hp, t, gscale):
    for c in prange(MT_CHUNKS):
        lo, hi = chunk(p.shape[0], c)
        rmsprop_u(p[lo:hi], g[lo:hi], s1[lo:hi], _part(s2, lo, hi), _part(s3, lo, hi), hp, t, gscale)


def threaded_update(n_params, threaded_pool):
    """Whether a network of ``n_params`` takes the threaded update: from MT_MIN_PARAMS on, where the
    products' threads are the OpenMP pool Numba's threads use too (``threaded_pool``: bf16 networks,
    whose products run on oneDNN's OpenMP threads). Beside OpenBLAS's threads, which spin for a
    while after every product, the threaded update made float32 `wide` 8 % slower (6.5k -> 6.0k
    samples/s, 3 interleaved rounds in one process), while it made bf16 `wide` 16 % faster
    (13.1k -> 15.2k)."""
    return threaded_pool and n_params >= MT_MIN_PARAMS


def update_code(kind, n_params, threaded_pool):
    """The table code of optimizer ``kind``'s update (see threaded_update)."""
    return kind + MT if threaded_update(n_params, threaded_pool) else kind


KERNELS = {SGD: sgd_u, ADAM: adam_u, RMSPROP: rmsprop_u,
           SGD + MT: sgd_u_mt, ADAM + MT: adam_u_mt, RMSPROP + MT: rmsprop_u_mt}


def optimizer_update(kind, p, g, s1, s2, s3, hp, t, gscale):
    """Optimizer ``kind``'s update (from Python: the drivers call the kernel by address)."""
    KERNELS[kind](p, g, s1, s2, s3, hp, t, gscale)


@njit(**dict(JIT, fastmath={"reassoc"}))
def all_finite(x):
    # 0 * x is 0 for finite x and NaN for NaN/inf. 'reassoc' alone lets the sum
    # vectorise; NaN/inf semantics are kept (no 'nnan'/'ninf'), and any order gives NaN.
    zero = like(0.0, x)   # in x's precision: float32 runs 16 lanes wide
    s = zero
    for i in range(x.shape[0]):
        s += zero * x[i]
    return s == 0.0


@njit(**dict(JIT, fastmath={"reassoc"}))
def sq_sum(x):
    # sum of squares in float64 ('reassoc' lets it vectorise); NaN/inf give NaN/inf
    s = 0.0
    for i in range(x.shape[0]):
        v = np.float64(x[i])
        s += v * v
    return s


@njit(**dict(JIT, fastmath={"reassoc"}))
def diff_sq_sum(a, b):
    # sum of (a - b)^2 in float64
    s = 0.0
    for i in range(a.shape[0]):
        v = np.float64(a[i]) - np.float64(b[i])
        s += v * v
    return s
