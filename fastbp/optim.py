"""Optimizers: small objects that own their state buffers and call one fused kernel.

Names, defaults and update rules are torch.optim's (see ``kernels/optim.py`` for
the equations). State buffers mirror the network's flat parameter buffer, so a
step is one pass over memory. An optimizer binds to the first network it
updates; use a new one for another network.
"""

import weakref
from typing import NamedTuple

import numpy as np

from ._validation import check_float
from .errors import InputError
from .kernels import optim as K
from .schedules import SCHEDULES, check_rate, check_schedule, schedule_from_config


# ---- state: three flat arrays mirroring the parameters (empty where unused), by name ---------------
class SGDState(NamedTuple):
    momentum_buffer: np.ndarray   # (P,) with momentum, else (0,)
    unused_1: np.ndarray          # (0,): the update kernel takes three state arrays
    unused_2: np.ndarray


class AdamState(NamedTuple):
    exp_avg: np.ndarray           # m (P,)
    exp_avg_sq: np.ndarray        # v (P,)
    max_exp_avg_sq: np.ndarray    # running max of v (P,) with amsgrad, else (0,)


class RMSpropState(NamedTuple):
    square_avg: np.ndarray        # (P,)
    grad_avg: np.ndarray          # (P,) when centered, else (0,)
    momentum_buffer: np.ndarray   # (P,) with momentum, else (0,)


class Optimizer:
    """Base class. A subclass names its kernel (``kind``), its hyper-parameters (``hparams()``,
    a NamedTuple of kernels/optim.py) and its state (``_State``, a NamedTuple of three arrays)."""
    kind = -1
    _State = None
    _nonneg_states = ()   # state fields that hold squares (must be >= 0)
    _fields = ()

    def __init__(self, schedule=None):
        self.schedule = check_schedule(schedule)
        self._hp = K.new_hparams_array(self.kind)
        self._step = np.zeros(1, np.int64)
        self._state = None
        self._owner = None
        self._lr_now = None

    # --- configuration ---------------------------------------------------------------
    def get_config(self):
        cfg = {"name": type(self).__name__, **{f: getattr(self, f) for f in self._fields}}
        if self.schedule is not None and type(self.schedule).__name__ in SCHEDULES:
            cfg["schedule"] = self.schedule.get_config()
        return cfg

    def __repr__(self):
        args = ", ".join(f"{f}={getattr(self, f)!r}" for f in self._fields)
        if self.schedule is not None:
            args += f", schedule={self.schedule!r}"
        return f"{type(self).__name__}({args})"

    @property
    def current_lr(self):
        """The rate of the current epoch (``lr`` unless a schedule set another)."""
        return self.lr if self._lr_now is None else self._lr_now

    def _set_epoch(self, epoch, samples_seen, dtype):
        """Apply the schedule for ``epoch``: only a number in the hyper-parameter array changes.
        A rate that is negative, not finite or beyond ``dtype`` (the network's) is an error,
        raised before the epoch trains (fit checks every epoch's rate up front too, but a
        schedule may depend on the samples seen or on what it has been told since)."""
        if self.schedule is None:
            self._lr_now = None
            return self.lr
        self._lr_now = check_rate(self.schedule, float(self.schedule(epoch, self.lr, samples_seen)), epoch, dtype)
        return self._lr_now

    def _check_hparams(self, dtype):
        """Every hyper-parameter must be finite in the network's ``dtype`` (the update computes in it)."""
        hp = self._hparams()
        big = np.abs(hp) > np.finfo(dtype).max
        if big.any():
            raise InputError(f"{self!r}: the hyper-parameter {hp[big][0]!r} overflows {np.dtype(dtype).name}, "
                             f"the network's dtype")

    @property
    def step_count(self):
        """Number of updates applied so far."""
        return int(self._step[0])

    def hparams(self):
        """The current hyper-parameters (the rate of the current epoch), a NamedTuple."""
        raise NotImplementedError

    def _hparams(self):
        """The current hyper-parameters packed into the persistent float64 array the kernel reads."""
        return K.pack(self._hp, self.hparams())

    def _state_sizes(self, n):
        raise NotImplementedError

    def _nonneg_indices(self):
        return tuple(self._State._fields.index(f) for f in self._nonneg_states)

    # --- state -------------------------------------------------------------------------
    def _bind(self, net):
        """Allocate state mirroring ``net.params`` (zeros), once; return (s1, s2, s3)."""
        owner = self._owner() if self._owner is not None else None
        if owner is not None and owner is not net:
            raise InputError(f"this {type(self).__name__} already holds the state of another network; "
                             "create a new optimizer for each network")
        sizes = self._state_sizes(net.params.shape[0])
        state = self._state
        if (state is None or state[0].dtype != net.dtype or state[0].shape[0] != sizes[0]
                or state[1].shape[0] != sizes[1] or state[2].shape[0] != sizes[2]):
            self._state = self._State(*(np.zeros(s, net.dtype) for s in sizes))
            self._step[0] = 0
        if owner is None:
            self._owner = weakref.ref(net)
        return self._state

    def state_arrays(self):
        """The state buffers (a NamedTuple of three arrays, see ``_State``), or None before the first step."""
        return self._state

    def _load_state(self, step, arrays):
        self._step[0] = step
        self._state = self._State(*(np.ascontiguousarray(a) for a in arrays))


class SGD(Optimizer):
    """Stochastic gradient descent with optional (Nesterov) momentum, as ``torch.optim.SGD``.

    d = g + wd p;  buf = d on the first step, else mu buf + (1 - dampening) d;
    d = d + mu buf if nesterov else buf;  p = p - lr d.
    """
    kind = K.SGD
    _State = SGDState
    _fields = ("lr", "momentum", "dampening", "weight_decay", "nesterov")

    def __init__(self, lr=1e-3, momentum=0.0, dampening=0.0, weight_decay=0.0, nesterov=False, schedule=None):
        self.lr = check_float(lr, "lr")
        self.momentum = check_float(momentum, "momentum")
        self.dampening = check_float(dampening, "dampening", 0.0, 1.0)
        self.weight_decay = check_float(weight_decay, "weight_decay")
        self.nesterov = bool(nesterov)
        if self.nesterov and (self.momentum <= 0 or self.dampening != 0):
            raise InputError("Nesterov momentum requires momentum > 0 and dampening = 0")
        super().__init__(schedule)

    def hparams(self):
        return K.SGDHparams(self.current_lr, self.momentum, self.dampening, self.weight_decay, self.nesterov)

    def _state_sizes(self, n):
        return (n if self.momentum != 0 else 0, 0, 0)


class Adam(Optimizer):
    """Adam (Kingma & Ba, 2015) as ``torch.optim.Adam``: L2 ``weight_decay`` added to the gradient.

    m = b1 m + (1-b1) g;  v = b2 v + (1-b2) g^2;
    p = p - lr/(1 - b1^t) * m / (sqrt(v)/sqrt(1 - b2^t) + eps)   (v -> running max of v if amsgrad)

    ``eps_hat=True`` adds ``eps`` before the bias correction instead, as the paper's epsilon-hat
    (the formula before its section 2.1), Keras/TensorFlow and scikit-learn do:
    p = p - lr sqrt(1 - b2^t)/(1 - b1^t) * m / (sqrt(v) + eps). The two differ where sqrt(v)
    is near eps: early on, eps-hat is larger by 1/sqrt(1 - b2^t) (about 32x at step 1), so a
    parameter whose gradient is tiny (a weight of an all-zero feature, moved only by weight
    decay) takes a much smaller step.
    """
    kind = K.ADAM
    _State = AdamState
    _nonneg_states = ("exp_avg_sq", "max_exp_avg_sq")
    _fields = ("lr", "betas", "eps", "weight_decay", "amsgrad", "eps_hat")
    _decoupled = False

    def __init__(self, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, amsgrad=False, schedule=None,
                 eps_hat=False):
        self.lr = check_float(lr, "lr")
        try:
            b1, b2 = betas
        except (TypeError, ValueError):
            raise InputError(f"betas must be a pair (beta1, beta2), got {betas!r}") from None
        self.betas = (check_float(b1, "betas[0]", 0.0, 1.0, hi_open=True),
                      check_float(b2, "betas[1]", 0.0, 1.0, hi_open=True))
        self.eps = check_float(eps, "eps")
        self.weight_decay = check_float(weight_decay, "weight_decay")
        self.amsgrad = bool(amsgrad)
        self.eps_hat = bool(eps_hat)
        super().__init__(schedule)

    def hparams(self):
        return K.AdamHparams(self.current_lr, self.betas[0], self.betas[1], self.eps, self.weight_decay,
                             self._decoupled, self.amsgrad, self.eps_hat)

    def _state_sizes(self, n):
        return (n, n, n if self.amsgrad else 0)


class AdamW(Adam):
    """AdamW (Loshchilov & Hutter, 2019) as ``torch.optim.AdamW``: decoupled decay
    p = p (1 - lr wd) before the Adam step; default weight_decay 1e-2."""
    _decoupled = True

    def __init__(self, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2, amsgrad=False, schedule=None,
                 eps_hat=False):
        super().__init__(lr, betas, eps, weight_decay, amsgrad, schedule, eps_hat)


class RMSprop(Optimizer):
    """RMSprop as ``torch.optim.RMSprop`` (defaults lr=1e-2, alpha=0.99, eps=1e-8).

    g = g + wd p;  s = a s + (1-a) g^2;  avg = sqrt(s - gbar^2) if centered else sqrt(s), + eps;
    buf = mu buf + g/avg, p = p - lr buf  (momentum > 0)  or  p = p - lr g/avg.
    """
    kind = K.RMSPROP
    _State = RMSpropState
    _nonneg_states = ("square_avg",)
    _fields = ("lr", "alpha", "eps", "weight_decay", "momentum", "centered")

    def __init__(self, lr=1e-2, alpha=0.99, eps=1e-8, weight_decay=0.0, momentum=0.0, centered=False,
                 schedule=None):
        self.lr = check_float(lr, "lr")
        self.alpha = check_float(alpha, "alpha", 0.0, 1.0)
        self.eps = check_float(eps, "eps")
        self.weight_decay = check_float(weight_decay, "weight_decay")
        self.momentum = check_float(momentum, "momentum")
        self.centered = bool(centered)
        super().__init__(schedule)

    def hparams(self):
        return K.RMSpropHparams(self.current_lr, self.alpha, self.eps, self.weight_decay, self.momentum,
                                self.centered)

    def _state_sizes(self, n):
        return (n, n if self.centered else 0, n if self.momentum > 0 else 0)


OPTIMIZERS = {"sgd": SGD, "adam": Adam, "adamw": AdamW, "rmsprop": RMSprop}   # the one name table


def get_optimizer(opt):
    """An Optimizer instance from an instance, a class or a name ('adam', 'sgd', ...)."""
    if isinstance(opt, Optimizer):
        return opt
    if isinstance(opt, type) and issubclass(opt, Optimizer):
        return opt()
    if isinstance(opt, str) and opt.lower() in OPTIMIZERS:
        return OPTIMIZERS[opt.lower()]()
    raise InputError(f"unknown optimizer {opt!r}; give an instance (fastbp.Adam(lr=...)) or one of "
                     f"{sorted(OPTIMIZERS)}")


def from_config(cfg):
    cfg = dict(cfg)
    name = cfg.pop("name", None)
    classes = {c.__name__: c for c in OPTIMIZERS.values()}
    if name not in classes:
        raise InputError(f"unknown optimizer {name!r} in saved configuration")
    if "betas" in cfg:
        cfg["betas"] = tuple(cfg["betas"])
    if "schedule" in cfg:
        cfg["schedule"] = schedule_from_config(cfg["schedule"])
    return classes[name](**cfg)
