"""Fused optimizer updates over the one flat parameter buffer.

Each update is a single pass over p, g and the state arrays (which mirror p's
layout). The rules, defaults and weight-decay semantics are torch.optim's
documented algorithms (L2 added to the gradient for SGD, Adam and RMSprop;
decoupled decay for AdamW). Arithmetic is done in float64 and rounded once on
store. ``t`` is the 1-based step count *including* this step.
"""

import numpy as np
from numba import njit

from .._config import JIT

SGD, ADAM, RMSPROP = range(3)


@njit(**JIT)
def sgd_update(p, g, buf, t, lr, momentum, dampening, weight_decay, nesterov):
    # p, g, buf (P,)
    # d = g + wd p;  buf = d (t = 1) else mu buf + (1 - damp) d;
    # d = d + mu buf (nesterov) else buf;  p -= lr d
    for i in range(p.shape[0]):
        d = g[i] + weight_decay * p[i]
        if momentum != 0.0:
            bi = d if t == 1 else momentum * buf[i] + (1.0 - dampening) * d
            buf[i] = bi
            d = d + momentum * bi if nesterov else bi
        p[i] = p[i] - lr * d


@njit(**JIT)
def adam_update(p, g, m, v, vmax, t, lr, beta1, beta2, eps, weight_decay, decoupled, amsgrad):
    # p, g, m, v (P,); vmax (P,) if amsgrad else unused
    # Adam:  g += wd p.   AdamW: p *= 1 - lr wd.
    # m = b1 m + (1-b1) g;  v = b2 v + (1-b2) g^2;  vhat = max(vmax, v) if amsgrad else v
    # p -= lr / (1 - b1^t) * m / (sqrt(vhat) / sqrt(1 - b2^t) + eps)
    step_size = lr / (1.0 - beta1 ** t)
    inv_sqrt_bc2 = 1.0 / np.sqrt(1.0 - beta2 ** t)
    decay = 1.0 - lr * weight_decay
    for i in range(p.shape[0]):
        pi = np.float64(p[i])
        gi = np.float64(g[i])
        if decoupled:
            pi *= decay
        else:
            gi += weight_decay * pi
        mi = beta1 * m[i] + (1.0 - beta1) * gi
        vi = beta2 * v[i] + (1.0 - beta2) * gi * gi
        m[i] = mi
        v[i] = vi
        if amsgrad:
            vi = max(vmax[i], vi)
            vmax[i] = vi
        p[i] = pi - step_size * mi / (np.sqrt(vi) * inv_sqrt_bc2 + eps)


@njit(**JIT)
def rmsprop_update(p, g, sq, gavg, buf, lr, alpha, eps, weight_decay, momentum, centered):
    # p, g, sq (P,); gavg (P,) if centered; buf (P,) if momentum > 0
    # g += wd p;  sq = a sq + (1-a) g^2;  avg = sqrt(sq - gavg^2) (centered) or sqrt(sq), + eps
    # buf = mu buf + g / avg, p -= lr buf (momentum)  or  p -= lr g / avg
    for i in range(p.shape[0]):
        gi = g[i] + weight_decay * p[i]
        si = alpha * sq[i] + (1.0 - alpha) * gi * gi
        sq[i] = si
        if centered:
            ga = alpha * gavg[i] + (1.0 - alpha) * gi
            gavg[i] = ga
            si = si - ga * ga
        step = gi / (np.sqrt(si) + eps)
        if momentum > 0.0:
            step = momentum * buf[i] + step
            buf[i] = step
        p[i] = p[i] - lr * step


@njit(**JIT)
def optimizer_update(kind, p, g, s1, s2, s3, hp, t):
    """Dispatch on ``kind``; ``hp`` holds the hyper-parameters in the order the
    Python optimizer classes document, s1..s3 the state buffers they allocate."""
    if kind == SGD:
        sgd_update(p, g, s1, t, hp[0], hp[1], hp[2], hp[3], hp[4] != 0.0)
    elif kind == ADAM:
        adam_update(p, g, s1, s2, s3, t, hp[0], hp[1], hp[2], hp[3], hp[4], hp[5] != 0.0, hp[6] != 0.0)
    else:
        rmsprop_update(p, g, s1, s2, s3, hp[0], hp[1], hp[2], hp[3], hp[4], hp[5] != 0.0)


@njit(**dict(JIT, fastmath={"reassoc"}))
def all_finite(x):
    # 0 * x is 0 for finite x and NaN for NaN/inf. 'reassoc' alone lets the sum
    # vectorise; NaN/inf semantics are kept (no 'nnan'/'ninf'), and any order gives NaN.
    s = 0.0
    for i in range(x.shape[0]):
        s += 0.0 * x[i]
    return s == 0.0
