"""Each kernel of fastbp/kernels alone, on seeded data, compiled (or loaded from the cache) in setup.

Kernels are called with separate input and output buffers, so every call sees the same input
(the network calls the activation and dropout kernels in place on one buffer; called with two,
they first copy the input into the output, which these timings include). Biases are zero:
the gelu and softmax forwards write Z + b back into Z, so a nonzero b would drift the data
from call to call. Arguments are passed by parameter name (common.bind): a kernel that gains
an argument keeps working, and one the benchmarked commit lacks is skipped.
"""

import numpy as np

from .common import _KernelPair, bind, kernel, use_threads

DTYPES = ["float32", "float64"]


def _normal(rng, shape, dtype, scale=1.0):
    return (rng.standard_normal(shape) * scale).astype(dtype)


class Dense(_KernelPair):
    """Z = X @ W + b and its backward (dW, db and dX), a square layer: GEMMs through fastbp._blas."""
    params = [[32, 256], [64, 1024], DTYPES]
    param_names = ["batch", "width", "dtype"]

    def setup(self, batch, width, dtype):
        use_threads()
        rng = np.random.default_rng(0)
        X = _normal(rng, (batch, width), dtype)
        W = _normal(rng, (width, width), dtype, 1.0 / np.sqrt(width))
        v = dict(X=X, W=W, b=_normal(rng, width, dtype), Z=np.empty((batch, width), dtype),
                 dZ=_normal(rng, (batch, width), dtype), dX=np.empty_like(X), dW=np.empty_like(W),
                 db=np.empty(width, dtype), need_dx=True)
        self._bind_pair("dense", "dense", v)


ACTIVATIONS = ["identity", "relu", "leaky_relu", "elu", "sigmoid", "tanh", "softplus", "gelu"]
ALPHA = {"leaky_relu": 0.01, "elu": 1.0}
ACT_SHAPE = (256, 1024)


class Activation(_KernelPair):
    """A = f(Z + b) and dZ = dA f'(.) with db, on a (256, 1024) batch."""
    params = [ACTIVATIONS, DTYPES]
    param_names = ["activation", "dtype"]

    def setup(self, activation, dtype):
        rng = np.random.default_rng(1)
        n, k = ACT_SHAPE
        Z = _normal(rng, ACT_SHAPE, dtype, 2.0)
        v = dict(Z=Z, A=np.empty_like(Z), b=np.zeros(k, dtype), alpha=ALPHA.get(activation, 0.0),
                 dA=_normal(rng, ACT_SHAPE, dtype), dZ=np.empty_like(Z), db=np.empty(k, dtype))
        self._bind_pair("activations", activation, v)


LOSSES = ["softmax_xent", "sigmoid_bce", "mse", "huber", "poisson"]
LOSS_SHAPE = (1024, 10)


class Loss(_KernelPair):
    """Output layer + loss forward (returns the mean loss) and its fused gradient, (1024, 10)
    outputs; softmax cross-entropy from integer labels, as the network calls it for class labels.
    A pair the benchmarked fastbp lacks is skipped."""
    params = [LOSSES, DTYPES]
    param_names = ["loss", "dtype"]

    def setup(self, loss, dtype):
        rng = np.random.default_rng(2)
        n, k = LOSS_SHAPE
        Z = _normal(rng, LOSS_SHAPE, dtype, 2.0)
        labels = rng.integers(0, k, n)
        if loss == "softmax_xent":
            T = np.zeros((0, k), dtype)
        elif loss == "sigmoid_bce":
            T = (rng.random(LOSS_SHAPE) < 0.3).astype(dtype)
        elif loss == "poisson":
            T = rng.poisson(1.0, LOSS_SHAPE).astype(dtype)
        else:
            T = _normal(rng, LOSS_SHAPE, dtype)
        v = dict(Z=Z, P=np.empty_like(Z), b=np.zeros(k, dtype), T=T, labels=labels,
                 use_labels=loss == "softmax_xent", sw=np.zeros(0, dtype),
                 dZ=np.empty_like(Z), db=np.empty(k, dtype))
        self._bind_pair("losses", loss, v)


# kernel and hyper-parameters per optimizer (torch.optim's defaults; SGD with momentum)
OPTIMIZERS = {
    "sgd": ("sgd_update", dict(lr=1e-2, momentum=0.9, dampening=0.0, weight_decay=0.0, nesterov=False)),
    "adam": ("adam_update", dict(lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.0,
                                 decoupled=False, amsgrad=False, eps_hat=False)),
    "adamw": ("adam_update", dict(lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=1e-2,
                                  decoupled=True, amsgrad=False, eps_hat=False)),
    "rmsprop": ("rmsprop_update", dict(lr=1e-2, alpha=0.99, eps=1e-8, weight_decay=0.0, momentum=0.0,
                                       centered=False)),
}


class OptimizerUpdate:
    """One fused update over a flat parameter buffer of n_params entries (step 10)."""
    params = [list(OPTIMIZERS), [100_000, 1_000_000], DTYPES]
    param_names = ["optimizer", "n_params", "dtype"]

    def setup(self, optimizer, n_params, dtype):
        rng = np.random.default_rng(3)
        name, hp = OPTIMIZERS[optimizer]
        full, unused = (lambda: np.zeros(n_params, dtype)), np.zeros(0, dtype)
        v = dict(hp, p=_normal(rng, n_params, dtype), g=_normal(rng, n_params, dtype, 1e-2), t=10,
                 gscale=1.0, buf=full() if optimizer == "sgd" else unused, m=full(), v=full(),
                 vmax=unused, sq=full(), gavg=unused)
        self.update = kernel("optim", name)
        self.args = bind(self.update, v)
        self.update(*self.args)

    def time_update(self, optimizer, n_params, dtype):
        self.update(*self.args)


class Dropout(_KernelPair):
    """Inverted dropout (p = 0.2) forward with its mask, and backward, on a (256, 1024) batch."""
    params = [DTYPES]
    param_names = ["dtype"]

    def setup(self, dtype):
        rng = np.random.default_rng(4)
        A = _normal(rng, ACT_SHAPE, dtype)
        v = dict(A=A, D=np.empty_like(A), M=np.empty_like(A), p=0.2, rng=np.array([12345], np.uint64),
                 dD=_normal(rng, ACT_SHAPE, dtype), dA=np.empty_like(A))
        self._bind_pair("dropout", "dropout", v)


NORMS = ["batchnorm", "layernorm"]


class Norm(_KernelPair):
    """Batch and layer norm forward (in place on Z, training mode) and backward (in place on dY),
    on a (256, 1024) batch. Both are in-place only; normalising normalised data, or projecting
    an already projected gradient, changes it no further, so repeated calls see the same data."""
    params = [NORMS, DTYPES]
    param_names = ["norm", "dtype"]

    def setup(self, norm, dtype):
        rng = np.random.default_rng(5)
        n, k = ACT_SHAPE
        Z = _normal(rng, ACT_SHAPE, dtype, 2.0)
        stats = k if norm == "batchnorm" else n   # batch norm's mu holds the batch mean and variance
        v = dict(Z=Z, XH=np.empty_like(Z), mu=np.empty(2 * stats if norm == "batchnorm" else stats, dtype),
                 rstd=np.empty(stats, dtype), b=np.zeros(k, dtype), gamma=np.ones(k, dtype),
                 run_mean=np.zeros(k, dtype), run_var=np.ones(k, dtype), eps=1e-5, training=True,
                 dY=_normal(rng, ACT_SHAPE, dtype), db=np.empty(k, dtype), dgamma=np.empty(k, dtype))
        self._bind_pair("norm", norm, v)
