"""Learning-rate schedules: small objects that map an epoch to a rate.

A schedule is called once per epoch, before the epoch runs, as
``schedule(epoch, base_lr, samples_seen)`` (``epoch`` 0-based, ``base_lr`` the
optimizer's ``lr``, ``samples_seen`` the training rows seen before this epoch)
and returns the rate for that epoch, as torch.optim.lr_scheduler's epoch-wise
schedulers do. The rate is written into the optimizer's hyper-parameter array,
which the compiled kernels read at run time: changing it recompiles nothing.

Give one to an optimizer (``Adam(lr=1e-3, schedule=CosineAnnealing(20))``) or
to ``fit(schedule=...)``. Schedules with state (``ReduceLROnPlateau``) also get
``on_epoch_end(epoch, logs)``; their state is saved with the model.
"""

import math

import numpy as np

from ._validation import check_float, check_int
from .errors import InputError

__all__ = ["Schedule", "Constant", "StepDecay", "ExponentialDecay", "CosineAnnealing", "InverseScaling",
           "ReduceLROnPlateau", "schedule_from_config"]


class Schedule:
    """Base class: subclasses implement ``__call__(epoch, base_lr, samples_seen=0) -> rate``."""
    _fields = ()

    def __call__(self, epoch, base_lr, samples_seen=0):
        raise NotImplementedError

    def on_epoch_end(self, epoch, logs):
        """Called after each epoch with its logs (loss, val_loss, ...); stateless schedules ignore it."""

    def monitors(self):
        """History keys this schedule reads (checked against what fit records before training)."""
        return ()

    def get_config(self):
        return {"name": type(self).__name__, **{f: getattr(self, f) for f in self._fields}}

    def __repr__(self):
        return f"{type(self).__name__}({', '.join(f'{f}={getattr(self, f)!r}' for f in self._fields)})"


class Constant(Schedule):
    """The optimizer's ``lr`` throughout."""

    def __call__(self, epoch, base_lr, samples_seen=0):
        return base_lr


class StepDecay(Schedule):
    """``base_lr * gamma ** (epoch // step_size)`` (torch's StepLR)."""
    _fields = ("step_size", "gamma")

    def __init__(self, step_size, gamma=0.1):
        self.step_size = check_int(step_size, "step_size", 1)
        self.gamma = check_float(gamma, "gamma", 0.0, lo_open=True)

    def __call__(self, epoch, base_lr, samples_seen=0):
        return base_lr * self.gamma ** (epoch // self.step_size)


class ExponentialDecay(Schedule):
    """``base_lr * gamma ** epoch`` (torch's ExponentialLR)."""
    _fields = ("gamma",)

    def __init__(self, gamma):
        self.gamma = check_float(gamma, "gamma", 0.0, lo_open=True)

    def __call__(self, epoch, base_lr, samples_seen=0):
        return base_lr * self.gamma ** epoch


class CosineAnnealing(Schedule):
    """Cosine annealing from ``base_lr`` to ``eta_min`` over ``T_max`` epochs (torch's
    CosineAnnealingLR, without restarts; ``eta_min`` after ``T_max``), after an
    optional linear warm-up: epoch e < warmup_epochs runs at base_lr (e + 1) / (warmup_epochs + 1).

    lr = eta_min + (base_lr - eta_min) (1 + cos(pi min(e', T_max) / T_max)) / 2,  e' = epoch - warmup_epochs
    """
    _fields = ("T_max", "eta_min", "warmup_epochs")

    def __init__(self, T_max, eta_min=0.0, warmup_epochs=0):
        self.T_max = check_int(T_max, "T_max", 1)
        self.eta_min = check_float(eta_min, "eta_min")
        self.warmup_epochs = check_int(warmup_epochs, "warmup_epochs", 0)

    def __call__(self, epoch, base_lr, samples_seen=0):
        if epoch < self.warmup_epochs:
            return base_lr * (epoch + 1) / (self.warmup_epochs + 1)
        e = min(epoch - self.warmup_epochs, self.T_max)
        return self.eta_min + (base_lr - self.eta_min) * (1.0 + math.cos(math.pi * e / self.T_max)) / 2.0


class InverseScaling(Schedule):
    """``base_lr / (t + 1) ** power_t`` with t the epoch (``per="epoch"``) or, as
    scikit-learn's ``learning_rate="invscaling"``, the number of samples seen (``per="sample"``)."""
    _fields = ("power_t", "per")

    def __init__(self, power_t=0.5, per="epoch"):
        self.power_t = check_float(power_t, "power_t")
        if per not in ("epoch", "sample"):
            raise InputError(f"per must be 'epoch' or 'sample', got {per!r}")
        self.per = per

    def __call__(self, epoch, base_lr, samples_seen=0):
        t = epoch if self.per == "epoch" else samples_seen
        return base_lr / (t + 1.0) ** self.power_t


class ReduceLROnPlateau(Schedule):
    """Multiply the rate by ``factor`` when ``monitor`` has not improved by more than
    ``min_delta`` for ``patience`` epochs (Keras' ReduceLROnPlateau; scikit-learn's
    ``adaptive`` is ``ReduceLROnPlateau("loss", factor=0.2, patience=2, min_delta=tol)``).
    After a reduction it waits ``cooldown`` epochs; the rate never goes below ``min_lr``.
    ``mode``: "min", "max", or "auto" (max for accuracies, min otherwise).
    """
    _fields = ("monitor", "factor", "patience", "min_delta", "mode", "cooldown", "min_lr")
    _state = ("scale", "best", "wait", "cooldown_left")

    def __init__(self, monitor="val_loss", factor=0.1, patience=10, min_delta=1e-4, mode="auto", cooldown=0,
                 min_lr=0.0):
        if not isinstance(monitor, str):
            raise InputError(f"monitor must be a history key such as 'val_loss', got {monitor!r}")
        self.monitor = monitor
        self.factor = check_float(factor, "factor", 0.0, lo_open=True, hi=1.0, hi_open=True)
        self.patience = check_int(patience, "patience", 0)
        self.min_delta = check_float(min_delta, "min_delta")
        if mode not in ("auto", "min", "max"):
            raise InputError(f"mode must be 'auto', 'min' or 'max', got {mode!r}")
        self.mode = mode
        self.cooldown = check_int(cooldown, "cooldown", 0)
        self.min_lr = check_float(min_lr, "min_lr")
        self.scale, self.best, self.wait, self.cooldown_left = 1.0, None, 0, 0

    def monitors(self):
        return (self.monitor,)

    def _maximize(self):
        return self.mode == "max" or (self.mode == "auto" and "acc" in self.monitor)

    def __call__(self, epoch, base_lr, samples_seen=0):
        return max(self.min_lr, base_lr * self.scale) if base_lr > 0 else base_lr

    def on_epoch_end(self, epoch, logs):
        value = logs.get(self.monitor)
        if value is None or not math.isfinite(value):
            return
        if self.cooldown_left > 0:
            self.cooldown_left -= 1
            self.wait = 0
        sign = -1.0 if self._maximize() else 1.0
        if self.best is None or sign * (value - self.best) < -self.min_delta:
            self.best, self.wait = value, 0
        elif self.cooldown_left == 0:
            self.wait += 1
            if self.wait >= self.patience:
                self.scale *= self.factor
                self.cooldown_left, self.wait = self.cooldown, 0

    def get_config(self):
        return {**super().get_config(), "state": {k: getattr(self, k) for k in self._state}}


SCHEDULES = {c.__name__: c for c in (Constant, StepDecay, ExponentialDecay, CosineAnnealing, InverseScaling,
                                     ReduceLROnPlateau)}


def schedule_from_config(cfg):
    """Rebuild a schedule (and its state) from ``get_config()``."""
    cfg = dict(cfg)
    cls = SCHEDULES.get(cfg.pop("name", None))
    if cls is None:
        raise InputError(f"unknown schedule in saved configuration: {cfg!r}")
    state = cfg.pop("state", None)
    sched = cls(**cfg)
    for k, v in (state or {}).items():
        if k in getattr(cls, "_state", ()):
            setattr(sched, k, v)
    return sched


def check_schedule(schedule):
    if schedule is not None and not isinstance(schedule, Schedule):
        raise InputError(f"schedule must be a fastbp.schedules.Schedule (e.g. CosineAnnealing(20)), "
                         f"got {schedule!r}")
    return schedule


def check_rate(schedule, rate, epoch, dtype):
    """A rate that is negative, NaN or beyond ``dtype`` (the network's, which the update
    computes in) is an error naming the epoch."""
    if not 0.0 <= rate <= np.finfo(dtype).max:
        raise InputError(f"{schedule!r} gives the learning rate {rate} at epoch {epoch}; rates must be >= 0 "
                         f"and finite in {np.dtype(dtype).name}")
    return rate


def check_rates(schedule, base_lr, first_epoch, last_epoch, dtype):
    """Evaluate the schedule for every epoch of a fit before it starts (with no samples
    seen; the optimizer checks each epoch's rate again when it applies it)."""
    for e in range(first_epoch, last_epoch):
        try:
            r = float(schedule(e, base_lr, 0))
        except (TypeError, ValueError, OverflowError, ZeroDivisionError) as exc:
            raise InputError(f"{schedule!r} fails at epoch {e}: {exc}") from None
        check_rate(schedule, r, e, dtype)
