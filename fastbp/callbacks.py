"""Callbacks: hooks that ``Network.fit`` calls while it trains (Keras' protocol, cut down).

A callback subclasses :class:`Callback` and overrides any of

- ``on_train_begin(logs)``, ``on_train_end(logs)``
- ``on_epoch_begin(epoch, logs)``, ``on_epoch_end(epoch, logs)``: ``logs`` holds that
  epoch's history values (``loss``, ``accuracy``, ``val_loss``, ``val_accuracy``, ``lr``, ...)
- ``on_batch_end(batch, logs)``: ``logs`` has ``loss`` and ``size``. fit runs many
  batches per compiled call; a callback that overrides ``on_batch_end`` makes it
  return after every batch (slower for small networks), so only do so when needed.

``self.model`` is the network being trained. Setting ``self.model.stop_training = True``
stops training after the current epoch (or batch, from ``on_batch_end``).
Epochs are 0-based in the hooks (``epoch + 1`` is what Keras prints).
"""

import csv
import math
import os
import string
import warnings

import numpy as np

from ._validation import check_float, check_int
from .errors import InputError

__all__ = ["Callback", "EarlyStopping", "ModelCheckpoint", "CSVLogger", "TerminateOnNaN", "LambdaCallback"]


class Callback:
    model = None
    #: a callback that overrides on_batch_end makes fit hand control back after every batch,
    #: unless it sets this to False (it is then called for each batch after the fact)
    needs_every_batch = True

    params = {}

    def set_model(self, model):
        self.model = model

    def set_params(self, params):
        """fit's settings before training starts (as Keras): ``verbose`` and ``epochs``."""
        self.params = params

    def _says(self, verbose):
        """Whether to print when acting: the callback's own ``verbose``, or None: fit's (>= 1)."""
        return bool(verbose) if verbose is not None else self.params.get("verbose", 0) >= 1

    def on_train_begin(self, logs=None):
        pass

    def on_train_end(self, logs=None):
        pass

    def on_epoch_begin(self, epoch, logs=None):
        pass

    def on_epoch_end(self, epoch, logs=None):
        pass

    def on_batch_end(self, batch, logs=None):
        pass

    def monitors(self):
        """History keys this callback reads; fit checks them before training starts."""
        return ()

    def _has_batch_hook(self):
        # overridden in a subclass, or set on the instance (LambdaCallback)
        return getattr(self.on_batch_end, "__func__", None) is not Callback.on_batch_end


def _mode(mode, monitor):
    if mode not in ("auto", "min", "max"):
        raise InputError(f"mode must be 'auto', 'min' or 'max', got {mode!r}")
    if mode == "auto":
        mode = "max" if "acc" in monitor else "min"
    return mode


def _check_monitor(monitor):
    if not isinstance(monitor, str) or not monitor:
        raise InputError(f"monitor must be a history key such as 'val_loss', got {monitor!r}")
    return monitor


class EarlyStopping(Callback):
    """Stop when ``monitor`` has not improved by more than ``min_delta`` for ``patience`` epochs.

    With ``restore_best_weights`` the network gets back the weights (and norm statistics)
    of its best epoch when it stops. ``baseline``: stop unless the value beats it within
    ``patience`` epochs. As Keras' EarlyStopping. When it stops it says so in one line if
    ``verbose`` (default None: when fit's verbose is 1 or 2).
    """

    def __init__(self, monitor="val_loss", min_delta=0.0, patience=0, mode="auto", restore_best_weights=False,
                 baseline=None, verbose=None):
        self.monitor = _check_monitor(monitor)
        self.min_delta = check_float(min_delta, "min_delta")
        self.patience = check_int(patience, "patience", 0)
        self.mode = _mode(mode, monitor)
        self.restore_best_weights, self.baseline, self.verbose = bool(restore_best_weights), baseline, verbose
        self.best_weights = None

    def monitors(self):
        return (self.monitor,)

    def _better(self, value, ref):
        if self.mode == "min":
            return value < ref - self.min_delta
        return value > ref + self.min_delta

    def on_train_begin(self, logs=None):
        self.wait, self.stopped_epoch, self.best_epoch = 0, -1, -1
        self.best = self.baseline if self.baseline is not None else (math.inf if self.mode == "min" else -math.inf)
        self.best_weights = None

    def on_epoch_end(self, epoch, logs=None):
        value = (logs or {}).get(self.monitor)
        if value is None or not math.isfinite(value):
            return
        self.wait += 1
        if self._better(value, self.best):
            self.best, self.best_epoch, self.wait = value, epoch, 0
            if self.restore_best_weights:
                self.best_weights = self.model._snapshot()
            return
        if self.wait >= self.patience and epoch > 0:
            self.stopped_epoch = epoch
            self.model.stop_training = True
            restored = self.restore_best_weights and self.best_weights is not None
            if restored:
                self.model._restore(self.best_weights)
            if self._says(self.verbose):
                said = (f"restored the weights of epoch {self.best_epoch + 1}" if restored else
                        f"best {self.monitor} {self.best:.6g} at epoch {self.best_epoch + 1}"
                        if self.best_epoch >= 0 else f"{self.monitor} never beat the baseline {self.best:.6g}")
                print(f"epoch {epoch + 1}: early stopping; {said}", flush=True)


class ModelCheckpoint(Callback):
    """Save the network after every epoch, or only when ``monitor`` improves (``save_best_only``).

    ``path`` may hold format fields filled from the epoch (1-based) and its logs, e.g.
    ``"ckpt-{epoch:03d}-{val_loss:.3f}.npz"``. Every write is atomic (``Network.save``).
    """

    def __init__(self, path, monitor="val_loss", save_best_only=False, mode="auto", verbose=0):
        self.path = os.fspath(path)
        self.monitor = _check_monitor(monitor)
        self.save_best_only, self.verbose = bool(save_best_only), verbose
        self.mode = _mode(mode, monitor)
        self.best = None

    def monitors(self):
        # the monitored value, and every history key the path's format fields name
        try:
            fields = [f.split(".")[0].split("[")[0] for _, f, _, _ in string.Formatter().parse(self.path) if f]
        except ValueError as e:
            raise InputError(f"ModelCheckpoint path {self.path!r} is not a valid format string: {e}") from None
        keys = [f for f in fields if f != "epoch"]
        return ((self.monitor,) if self.save_best_only else ()) + tuple(keys)

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        if self.save_best_only:
            value = logs.get(self.monitor)
            if value is None or not math.isfinite(value):
                return
            if self.best is not None and not (value < self.best if self.mode == "min" else value > self.best):
                return
            self.best = value
        path = self.path.format(epoch=epoch + 1, **logs)
        self.model.save(path)
        if self.verbose:
            print(f"Epoch {epoch + 1}: saved {path}", flush=True)


class CSVLogger(Callback):
    """One CSV row per epoch: ``epoch`` (0-based, as Keras) and every history value.

    ``append=True`` continues an existing file (for resumed training). Rows are
    flushed as they are written.
    """

    def __init__(self, path, separator=",", append=False):
        self.path, self.separator, self.append = os.fspath(path), separator, bool(append)
        self._file = self._writer = None

    def on_train_begin(self, logs=None):
        exists = self.append and os.path.exists(self.path) and os.path.getsize(self.path) > 0
        self._file = open(self.path, "a" if self.append else "w", newline="")
        self._keys = None
        if exists:
            with open(self.path, newline="") as f:
                header = next(csv.reader(f, delimiter=self.separator), None)
            self._keys = header[1:] if header else None

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        if self._keys is None:
            self._keys = list(logs)
            self._writer = csv.writer(self._file, delimiter=self.separator)
            self._writer.writerow(["epoch"] + self._keys)
        if self._writer is None:
            self._writer = csv.writer(self._file, delimiter=self.separator)
        self._writer.writerow([epoch] + [logs.get(k, "") for k in self._keys])
        self._file.flush()

    def on_train_end(self, logs=None):
        if self._file is not None:
            self._file.close()
            self._file = self._writer = None

    def _abort(self):   # fit raised: close the file (rows written so far are kept)
        self.on_train_end()


class TerminateOnNaN(Callback):
    """Stop training, with a warning instead of an error, when the loss becomes NaN or inf.

    Without it, fit raises DivergenceError; either way the network keeps the weights of
    the last finite step (fit never applies a non-finite update).
    """
    needs_every_batch = False

    def on_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not np.isfinite(loss):
            warnings.warn(f"batch {batch}: non-finite loss {loss}; terminating training", RuntimeWarning,
                          stacklevel=2)
            self.model.stop_training = True

    def on_epoch_end(self, epoch, logs=None):
        for k, v in (logs or {}).items():
            if k.endswith("loss") and not np.isfinite(v):
                warnings.warn(f"epoch {epoch}: {k} is {v}; terminating training", RuntimeWarning, stacklevel=2)
                self.model.stop_training = True


class LambdaCallback(Callback):
    """A callback from plain functions: ``on_epoch_end(epoch, logs)``, ``on_batch_end(batch, logs)``,
    ``on_epoch_begin(epoch, logs)``, ``on_train_begin(logs)``, ``on_train_end(logs)``."""

    def __init__(self, on_epoch_begin=None, on_epoch_end=None, on_batch_end=None, on_train_begin=None,
                 on_train_end=None):
        for name, f in (("on_epoch_begin", on_epoch_begin), ("on_epoch_end", on_epoch_end),
                        ("on_batch_end", on_batch_end), ("on_train_begin", on_train_begin),
                        ("on_train_end", on_train_end)):
            if f is not None:
                if not callable(f):
                    raise InputError(f"{name} must be callable, got {f!r}")
                setattr(self, name, f)
