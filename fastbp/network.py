"""The ``Network`` class: owns the buffers, validates at the edge, calls the kernels.

It contains no math: every number is computed by a kernel in ``fastbp.kernels``.
"""

import contextlib
import json
import math
import numbers
import os
import signal
import sys
import tempfile
import threading
import time
import warnings

import numpy as np

from . import _buffers
from ._validation import (check_choice, check_float, check_int, check_positive_int, check_sample_weight, check_targets, check_X,
                          class_weights_per_row)
from .callbacks import Callback
from .errors import DivergenceError, InputError, ModelFileError, ModelNotFoundError
from .kernels import network as K
from .kernels.activations import ACTIVATIONS, ALIASES, DEFAULT_ALPHA, RELU_LIKE
from .kernels.losses import DEFAULT_LOSS, PAIRS, SIGMOID_BCE, SOFTMAX_CE
from .kernels.kset import kernel_set
from .kernels.norm import NO_NORM, NORMS
from .names import history_keys
from .optim import Optimizer, from_config, get_optimizer
from .schedules import Schedule, check_rates, check_schedule

FORMAT = "fastbp.Network"
FORMAT_VERSION = 1
PREDICT_BATCH = 1024
MAX_WORKSPACES = 4    # cached workspaces (one per batch size), least recently used dropped first
CHUNK_SECONDS = 0.1   # fit hands control back to Python about this often (progress, Ctrl-C)
_STATUS_TEXT = {K.BAD_LOSS: "the training loss", K.BAD_GRAD: "a gradient"}


class History:
    """What ``fit`` returns: ``history`` maps a metric name to its per-epoch values."""

    def __init__(self):
        self.history = {}
        self.epoch = []
        self.interrupted = False   # True when Ctrl-C stopped the fit

    def _append(self, epoch, **values):
        self.epoch.append(epoch)
        for k, v in values.items():
            self.history.setdefault(k, []).append(v)

    def __repr__(self):
        return f"History(epochs={len(self.epoch)}, keys={list(self.history)})"


def _as_list(v):
    """list(v) for a non-string iterable, else None."""
    if isinstance(v, (str, bytes)):
        return None
    try:
        return list(v)
    except TypeError:
        return None


def _isatty(stream):
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


class _closing_on_error:
    """If fit raises, let callbacks release what they hold (CSVLogger's file) via ``_abort()``."""

    def __init__(self, callbacks):
        self.callbacks = callbacks

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is not None:
            for cb in self.callbacks:
                abort = getattr(cb, "_abort", None)
                if abort is not None:
                    abort()
        return False


class _InterruptFlag:
    """Within ``with``: the first Ctrl-C sets ``flag`` (fit stops after the running batches);
    a second one interrupts at once. Only in the main thread (signals go there)."""

    def __init__(self):
        self.flag = False
        self._old = None

    def _handler(self, signum, frame):
        if self.flag:
            raise KeyboardInterrupt
        self.flag = True

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            try:
                self._old = signal.signal(signal.SIGINT, self._handler)
            except (ValueError, OSError):
                self._old = None
        return self

    def __exit__(self, *exc):
        if self._old is not None:
            signal.signal(signal.SIGINT, self._old)
        return False


class _Progress:
    """verbose=1: a tqdm bar per epoch (samples/s, loss, ETA); verbose=2: a line per epoch."""

    def __init__(self, verbose, n, epochs):
        self.verbose, self.n, self.epochs, self.bar = verbose, n, epochs, None
        self._tqdm = None
        if verbose == 1:
            try:
                from tqdm.auto import tqdm
                self._tqdm = tqdm
            except ImportError:
                warnings.warn("verbose=1 needs tqdm (pip install tqdm); printing one line per epoch instead",
                              UserWarning, stacklevel=3)
                self.verbose = 2

    def start(self, epoch):
        if self._tqdm is not None:
            self.bar = self._tqdm(total=self.n, desc=f"epoch {epoch + 1}/{self.epochs}", unit=" samples",
                                  unit_scale=True, leave=True, file=sys.stderr, dynamic_ncols=True)

    def update(self, samples, loss):
        if self.bar is not None:
            self.bar.update(samples)
            self.bar.set_postfix_str(f"loss {loss:.4g}", refresh=False)

    def end(self, epoch, logs, seconds):
        text = " - ".join(f"{k}: {v:.4g}" for k, v in logs.items())
        if self.bar is not None:
            self.bar.set_postfix_str(text, refresh=True)
            self.close()
        elif self.verbose == 2:
            print(f"epoch {epoch + 1}/{self.epochs} - {seconds:.2f}s - {self.n / seconds:,.0f} samples/s - {text}",
                  flush=True)

    def close(self):
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def _dtype(dtype):
    try:
        dt = np.dtype(dtype)
    except TypeError:
        raise InputError(f"dtype must be float32 or float64, got {dtype!r}") from None
    if dt not in (np.float32, np.float64):
        raise InputError(f"dtype must be float32 or float64, got {dt}")
    return dt


class Network:
    """A dense feed-forward network trained by backpropagation.

    Parameters
    ----------
    layer_sizes : sequence of int
        Widths from input to output, e.g. ``[784, 256, 128, 10]``.
    activation : str or sequence of str
        Hidden-layer activation, one name or one per hidden layer: identity, relu,
        leaky_relu, elu, sigmoid (alias logistic), tanh, softplus, gelu.
    output : {"softmax", "sigmoid", "identity", "exp"}
    loss : {"cross_entropy", "binary_cross_entropy", "mse", "huber", "poisson"}, optional
        Must pair with ``output``; by default cross_entropy, binary_cross_entropy, mse
        (identity also pairs with huber), poisson (exp: the half Poisson deviance of counts >= 0).
    dtype : float32 (default) or float64
    seed : int
        Seeds the initial weights, the shuffling, the dropout masks and ``validation_split``.
    dropout : float or sequence of float
        Drop probability per hidden layer (inverted dropout, training only).
    init : {"auto", "he", "glorot"}
        "auto": He normal for relu-like layers, Glorot uniform otherwise. Biases start at 0.
    norm : None, "batch", "layer", or one per hidden layer
        Normalization between each hidden layer's matrix product and its activation:
        batch norm (batch statistics in training, running statistics at inference) or
        layer norm, with a learned scale gamma (starts at 1) and shift beta (starts at 0).
    norm_momentum, norm_eps : float
        Batch norm's running-statistics momentum and both norms' epsilon (PyTorch's
        defaults, 0.1 and 1e-5).
    """

    def __init__(self, layer_sizes, activation="relu", output="softmax", loss=None,
                 dtype=np.float32, seed=0, dropout=0.0, init="auto", norm=None, norm_momentum=0.1,
                 norm_eps=1e-5):
        sizes = _as_list(layer_sizes)
        if (not sizes or len(sizes) < 2 or
                any(isinstance(s, bool) or not isinstance(s, numbers.Integral) or s < 1 for s in sizes)):
            raise InputError(f"layer_sizes must list at least two positive integers "
                             f"(inputs, ..., outputs), got {layer_sizes!r}")
        self.layer_sizes = [int(s) for s in sizes]
        n_hidden = len(sizes) - 2
        acts = [activation] * n_hidden if isinstance(activation, str) else _as_list(activation)
        if acts is None:
            raise InputError(f"activation must be a name or a list of names, got {activation!r}")
        if len(acts) != n_hidden:
            raise InputError(f"activation lists {len(acts)} names but the network has {n_hidden} hidden layers")
        self.activations = [check_choice(ALIASES.get(a, a) if isinstance(a, str) else a, "activation", ACTIVATIONS)
                            for a in acts]
        self.output = check_choice(output, "output", DEFAULT_LOSS)
        self.loss = loss if loss is not None else DEFAULT_LOSS[output]
        if not isinstance(self.loss, str) or (self.output, self.loss) not in PAIRS:
            valid = ", ".join(f"{o}+{l}" for o, l in PAIRS)
            raise InputError(f"loss {self.loss!r} does not pair with output {self.output!r}; valid pairs: {valid}")
        self._loss_code = PAIRS[(self.output, self.loss)]
        self.dtype = _dtype(dtype)
        if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
            raise InputError(f"seed must be a non-negative integer, got {seed!r}")
        self.seed = int(seed)
        drops = [dropout] * n_hidden if isinstance(dropout, numbers.Real) else _as_list(dropout)
        if (drops is None or len(drops) != n_hidden
                or not all(isinstance(p, numbers.Real) and 0.0 <= p < 1.0 for p in drops)):
            raise InputError(f"dropout must be a probability in [0, 1) or one per hidden layer "
                             f"({n_hidden}), got {dropout!r}")
        self.dropout = [float(p) for p in drops]
        self.init = check_choice(init, "init", {"auto", "he", "glorot"})
        norms = [norm] * n_hidden if norm is None or isinstance(norm, str) else _as_list(norm)
        if norms is None or len(norms) != n_hidden:
            raise InputError(f"norm must be None, 'batch', 'layer' or one per hidden layer ({n_hidden}), "
                             f"got {norm!r}")
        self.norm = [None if check_choice(v, "norm", NORMS) in (None, "none") else v for v in norms]
        self.norm_momentum = check_float(norm_momentum, "norm_momentum", 0.0, 1.0)
        self.norm_eps = check_float(norm_eps, "norm_eps", lo_open=True)

        self._act_codes = [ACTIVATIONS[a] for a in self.activations]
        self._alphas = [DEFAULT_ALPHA.get(c, 0.0) for c in self._act_codes]
        self._norm_codes = [NORMS[v] for v in self.norm]
        self._param_offs, n_params = _buffers.param_layout(self.layer_sizes, self.dtype, self._norm_codes)
        self._state_offs, n_state = _buffers.state_layout(self.layer_sizes, self._norm_codes, self.dtype)
        self.params = _buffers.aligned_zeros(n_params, self.dtype)
        self.grads = _buffers.aligned_zeros(n_params, self.dtype)
        self.norm_state = _buffers.aligned_zeros(n_state, self.dtype)
        self._workspaces = {}
        self._ws_lock = threading.RLock()   # held while compiled code works in the cached workspaces
        self._no_T = np.zeros((0, self.n_outputs), self.dtype)
        self._no_labels = np.zeros(0, np.int64)
        self._no_weights = np.zeros(0, self.dtype)
        self._no_pprev = np.zeros(0, self.dtype)
        self._ctl = np.zeros(3, np.float64)
        self._tstats = np.zeros((len(self.layer_sizes) - 1, 2), np.float64)
        self._l2 = 0.0          # scikit-learn's alpha (used by fastbp.sklearn)
        init_ss, shuffle_ss, drop_ss, split_ss = np.random.SeedSequence(self.seed).spawn(4)
        self._shuffle_rng = np.random.default_rng(shuffle_ss)
        self._split_seed = split_ss
        self._rng = np.array([drop_ss.generate_state(1, np.uint64)[0]], np.uint64)
        self.optimizer = None
        self._trained_opt_kind = None   # the optimizer of the last training step (see _training_kernels)
        self.history = None
        self.stop_training = False
        self._init_weights(np.random.default_rng(init_ss))

    # ---- structure ----------------------------------------------------------------------
    @property
    def n_inputs(self):
        return self.layer_sizes[0]

    @property
    def n_outputs(self):
        return self.layer_sizes[-1]

    @property
    def n_params(self):
        """Number of trained parameters (without alignment padding)."""
        return sum(a * b + b for a, b in zip(self.layer_sizes[:-1], self.layer_sizes[1:])) + sum(
            2 * k for k, c in zip(self.layer_sizes[1:-1], self._norm_codes) if c != NO_NORM)

    def _views(self, flat):
        """Per layer (W, b), or (W, b, gamma, beta) with a norm: views into ``flat``."""
        out = []
        for (w, b, g, be, _), n_in, n_out in zip(self._param_offs, self.layer_sizes[:-1], self.layer_sizes[1:]):
            views = (flat[w:w + n_in * n_out].reshape(n_in, n_out), flat[b:b + n_out])
            if g >= 0:
                views += (flat[g:g + n_out], flat[be:be + n_out])
            out.append(views)
        return out

    def _state_views(self):
        """Per hidden layer (running_mean, running_var) for batch norm, else ()."""
        out = []
        for (m, v), k in zip(self._state_offs, self.layer_sizes[1:-1]):
            out.append((self.norm_state[m:m + k], self.norm_state[v:v + k]) if m >= 0 else ())
        out.append(())
        return out

    @property
    def layers(self):
        """[(W, b), ...] views into the flat parameter buffer (writing them changes the network)."""
        return [v[:2] for v in self._views(self.params)]

    def _init_weights(self, rng):
        n_layers = len(self.layer_sizes) - 1
        for l, views in enumerate(self._views(self.params)):
            W, b = views[:2]
            n_in, n_out = W.shape
            relu_like = l < n_layers - 1 and self._act_codes[l] in RELU_LIKE
            if self.init == "he" or (self.init == "auto" and relu_like):
                W[...] = rng.standard_normal((n_in, n_out)) * math.sqrt(2.0 / n_in)
            else:
                lim = math.sqrt(6.0 / (n_in + n_out))
                W[...] = rng.uniform(-lim, lim, (n_in, n_out))
            b[...] = 0.0
            if len(views) == 4:
                views[2][...] = 1.0
                views[3][...] = 0.0
        for stats in self._state_views():
            if stats:
                stats[0][...] = 0.0
                stats[1][...] = 1.0

    def _new_workspace(self, batch_size):
        layout, fpar, (g0, g1), size = _buffers.build_layout(
            self.layer_sizes, self._act_codes, self._alphas, self.dropout, self._param_offs,
            batch_size, self.dtype, self._norm_codes, (self.norm_momentum, self.norm_eps), self._state_offs)
        meta = np.array([self._loss_code, g0, g1], np.int64)
        return _buffers.aligned_zeros(size, self.dtype), layout, fpar, meta

    def _workspace(self, batch_size):
        """The cached workspace for batches of up to ``batch_size`` rows (hold ``_ws_lock``
        while using it). At most MAX_WORKSPACES are kept, so a stream of batch sizes
        (partial_fit on chunks of every length) does not pile them up."""
        ws = self._workspaces.pop(batch_size, None)
        if ws is None:
            ws = self._new_workspace(batch_size)
            while len(self._workspaces) >= MAX_WORKSPACES:
                del self._workspaces[next(iter(self._workspaces))]
        self._workspaces[batch_size] = ws   # the most recently used last
        return ws

    @contextlib.contextmanager
    def _borrow(self, batch_size):
        """A workspace for one call: the cached one, or a private one while another thread
        computes in the cached ones (compiled code runs without the GIL, so two threads
        predicting with one network would otherwise write the same buffers)."""
        if self._ws_lock.acquire(blocking=False):
            try:
                yield self._workspace(batch_size)
            finally:
                self._ws_lock.release()
        else:
            yield self._new_workspace(batch_size)

    def _drop_workspace(self, batch_size):
        """Forget the cached workspace for ``batch_size`` (a one-off size, e.g. a full-batch objective)."""
        with self._ws_lock:
            self._workspaces.pop(batch_size, None)

    def __repr__(self):
        acts = self.activations[0] if len(set(self.activations)) == 1 else self.activations
        extra = ""
        if any(self.norm):
            extra = f", norm={self.norm[0] if len(set(self.norm)) == 1 else self.norm!r}"
        return (f"Network({self.layer_sizes}, activation={acts!r}, output={self.output!r}, "
                f"loss={self.loss!r}, dtype={self.dtype.name}{extra})")

    @property
    def is_classifier(self):
        return self._loss_code in (SOFTMAX_CE, SIGMOID_BCE)

    # ---- validation helpers -----------------------------------------------------------------
    def _check_xy(self, X, y, names=("X", "y")):
        X = check_X(X, self.dtype, self.n_inputs, name=names[0])
        T, labels, use_labels = check_targets(y, self._loss_code, self.n_outputs, X.shape[0], self.dtype,
                                              name=names[1], x_name=names[0])
        return X, (T if T is not None else self._no_T), (labels if labels is not None else self._no_labels), use_labels

    def _check_xyw(self, X, y, sample_weight=None, class_weight=None, names=("X", "y", "sample_weight")):
        X, T, labels, use_labels = self._check_xy(X, y, names[:2])
        sw = self._no_weights
        if sample_weight is not None:
            sw = check_sample_weight(sample_weight, X.shape[0], self.dtype, name=names[2], x_name=names[0])
        if class_weight is not None:
            cw = class_weights_per_row(class_weight, self._loss_code, T, labels, use_labels, self.n_outputs)
            with np.errstate(over="ignore"):
                sw = (cw if sw.shape[0] == 0 else cw * sw).astype(self.dtype)
            if not np.all(np.isfinite(sw)):
                raise InputError(f"class_weight (with sample_weight) gives weights that overflow {self.dtype.name}")
            if not sw.any():
                raise InputError("class_weight (with sample_weight) gives every row the weight 0")
        return X, T, labels, use_labels, sw

    def _kernels(self, opt_kind=None, training=False):
        """The KernelSet the compiled drivers get (kernels/kset.py): this network's activations,
        loss pair and norms, and when training its dropout and the optimizer ``opt_kind``. A
        driver is compiled once per set, with only those kernels in it."""
        return kernel_set(self._act_codes, self._loss_code, opt_kind, self._norm_codes,
                          training and any(p > 0.0 for p in self.dropout))

    def _training_kernels(self, opt_kind):
        """The KernelSet of a training step with optimizer ``opt_kind``. Every training path
        (fit, train_step, the scikit-learn estimators) gets its set here, which remembers the
        optimizer for evaluation (``_eval_kernels``)."""
        self._trained_opt_kind = opt_kind
        return self._kernels(opt_kind, True)

    def _eval_kernels(self):
        """The KernelSet of evaluate and predict: the training set of the optimizer this network
        last trained with, if any. Evaluation runs no optimizer and no dropout, so any set with
        the network's activations, loss and norms serves; the training set's dispatchers are
        already compiled when a fit validates or is followed by evaluate/predict (a cold fit +
        evaluate + predict took ~6 % less than with a set of its own)."""
        kind = self._trained_opt_kind
        return self._kernels(kind, True) if kind is not None else self._kernels()

    def _kernel_optimizer(self, optimizer):
        opt = get_optimizer(optimizer if optimizer is not None else (self.optimizer or "adam"))
        opt._check_hparams(self.dtype)
        s1, s2, s3 = opt._bind(self)
        self.optimizer = opt
        return opt, s1, s2, s3

    def _raise_diverged(self, status, loss, where):
        if np.all(np.isfinite(self.params)):
            kept = "the step was not applied, so the network keeps the weights of the last finite step"
        else:   # finite loss and gradients, finite hyper-parameters, and yet an update overflowed
            kept = (f"the step was not applied, but an earlier update overflowed {self.dtype.name}: the weights "
                    f"are no longer finite")
        raise DivergenceError(
            f"{_STATUS_TEXT[status]} became non-finite ({where}, batch loss {loss}); {kept}. Lower the "
            f"learning rate or check the data scale.")

    # ---- training ------------------------------------------------------------------------------
    def train_step(self, X, y, optimizer=None, sample_weight=None):
        """One update on one batch (all rows of X); returns that batch's mean loss (before the update)."""
        X, T, labels, use_labels, sw = self._check_xyw(X, y, sample_weight)
        opt, s1, s2, s3 = self._kernel_optimizer(optimizer)
        n = X.shape[0]
        self._ctl[:] = (0.0, 0.0, self._l2)
        with self._borrow(n) as (ws, layout, fpar, meta):
            loss, _, status = K.train_batch(self._training_kernels(opt.kind), self.params, self.grads, self.norm_state, ws, layout, fpar,
                                         meta, self._rng, X, T, labels, use_labels, sw, n, opt.kind, s1, s2, s3,
                                         opt._hparams(), opt._step, self._ctl, self._tstats, self._no_pprev)
        if status != K.OK:
            self._raise_diverged(status, loss, "train_step")
        return float(loss)

    def _loss_grad(self, X, T, labels, use_labels, sw):
        n = X.shape[0]
        kset = self._kernels(training=True)
        with self._borrow(n) as (ws, layout, fpar, meta):
            loss = K.loss_forward_all(kset, self.params, self.norm_state, ws, layout, fpar, meta, X, T, labels,
                                      use_labels, sw, n, True, self._rng)
            if self._l2 > 0:
                loss += K.l2_penalty(self.params, layout, self._l2, sw, n)
            K.backward_all(kset, self.grads, self.params, ws, layout, fpar, meta, X, T, labels, use_labels, sw, n, self._l2)
            if self.norm_state.size and np.isfinite(loss) and K.all_finite(self.grads):
                K.update_running(kset, self.norm_state, ws, layout, fpar, n)
        return float(loss)

    def loss_and_gradients(self, X, y, sample_weight=None):
        """Mean loss of the batch and its gradients, per layer (dW, db) or (dW, db, dgamma, dbeta)
        (copies), without updating.

        Dropout, if set, is applied as in training; batch norm uses the batch's statistics
        (and, as in PyTorch's training mode, updates its running statistics, unless the loss or
        a gradient is not finite).
        """
        X, T, labels, use_labels, sw = self._check_xyw(X, y, sample_weight)
        loss = self._loss_grad(X, T, labels, use_labels, sw)
        return loss, [tuple(a.copy() for a in v) for v in self._views(self.grads)]

    def fit(self, X, y, epochs=1, batch_size=32, optimizer=None, shuffle=True, validation_data=None,
            validation_split=0.0, verbose="auto", callbacks=None, schedule=None, initial_epoch=0,
            sample_weight=None, class_weight=None, clip_norm=None, track_gradients=False):
        """Mini-batch training. Returns a :class:`History` (also kept as ``self.history``).

        Per epoch the history records ``loss`` (the mean of the epoch's batch losses, as
        Keras), ``accuracy`` for classifiers (counted during the epoch), ``lr``, and with
        validation ``val_loss``/``val_accuracy``; with ``track_gradients`` also each layer's
        mean gradient norm ``grad_norm_<l>`` and mean ``update_ratio_<l>`` = ||update|| / ||params||.

        Parameters
        ----------
        epochs : int
            Index of the last epoch (as Keras): trains epochs ``initial_epoch .. epochs-1``.
        optimizer : Optimizer or name, optional
            Defaults to the last one used, else ``Adam()``.
        validation_data : (X, y) or (X, y, sample_weight), optional
        validation_split : float in (0, 1), optional
            Holds out this fraction of the rows (stratified by class for classifiers,
            seeded by the network's seed) when ``validation_data`` is not given.
        verbose : "auto", 0, 1 or 2
            1: a progress bar per epoch (tqdm) with samples/s, loss and ETA; 2: one line per
            epoch; 0: silent. "auto": 1 when stderr is a terminal, else 0.
        callbacks : list of Callback (see :mod:`fastbp.callbacks`); a Schedule in the list is
            taken as ``schedule``.
        schedule : Schedule, optional
            Learning-rate schedule (see :mod:`fastbp.schedules`); it is attached to the optimizer
            (and saved with it).
        initial_epoch : int
            Epoch to resume at (schedules and logs continue from it).
        sample_weight : (n,) array, optional; class_weight : dict or "balanced", optional
            The loss becomes sum(w l) / sum(w) per batch.
        clip_norm : float, optional
            Scale the gradients so that their global L2 norm is at most this (in the update pass).
        track_gradients : bool
            Record per-layer gradient norms and update ratios.

        Ctrl-C stops training after the current batches (about 0.1 s of work), keeps the
        weights and history so far, and warns.
        """
        epochs = check_positive_int(epochs, "epochs")
        batch_size = check_positive_int(batch_size, "batch_size")
        initial_epoch = check_int(initial_epoch, "initial_epoch", 0)
        if verbose not in ("auto", 0, 1, 2) or isinstance(verbose, bool):
            raise InputError(f"verbose must be 'auto', 0, 1 or 2, got {verbose!r}")
        if clip_norm is not None:
            clip_norm = check_float(clip_norm, "clip_norm", lo_open=True)
        callbacks = list(callbacks or [])
        for cb in callbacks:
            if isinstance(cb, Schedule):
                if schedule is not None and schedule is not cb:
                    raise InputError("give a schedule either in callbacks or as schedule=, not both")
                schedule = cb
            elif not isinstance(cb, Callback):
                raise InputError(f"callbacks must be fastbp.callbacks.Callback instances, got {cb!r}")
        callbacks = [cb for cb in callbacks if not isinstance(cb, Schedule)]
        check_schedule(schedule)
        X, T, labels, use_labels, sw = self._check_xyw(X, y, sample_weight, class_weight)
        val = None
        if validation_data is not None:
            if not isinstance(validation_data, (tuple, list)) or len(validation_data) not in (2, 3):
                raise InputError("validation_data must be a pair (X_val, y_val) or a triple "
                                 "(X_val, y_val, sample_weight_val)")
            vw = validation_data[2] if len(validation_data) == 3 else None
            val = self._check_xyw(validation_data[0], validation_data[1], vw,
                                  names=("validation X", "validation y", "validation sample_weight"))
        elif validation_split:
            if (isinstance(validation_split, bool) or not isinstance(validation_split, numbers.Real)
                    or not 0.0 < validation_split < 1.0):
                raise InputError(f"validation_split must be a fraction in (0, 1), got {validation_split!r}")
            (X, T, labels, sw), val = self._split(X, T, labels, use_labels, sw, float(validation_split))
        opt = get_optimizer(optimizer if optimizer is not None else (self.optimizer or "adam"))
        if schedule is None:
            schedule = opt.schedule
        if schedule is not None:
            check_rates(schedule, opt.lr, initial_epoch, epochs, self.dtype)
        keys = history_keys(self.is_classifier, len(self.layer_sizes) - 1, val is not None, track_gradients)
        for obj in callbacks + ([schedule] if schedule is not None else []):
            for m in obj.monitors():
                if m not in keys:
                    raise InputError(f"{type(obj).__name__} monitors {m!r}, which this fit does not record; "
                                     f"it records {keys}")
        if verbose == "auto":
            verbose = 1 if _isatty(sys.stderr) else 0

        opt, s1, s2, s3 = self._kernel_optimizer(opt)
        opt.schedule = schedule   # attached (and saved with the optimizer) once every check has passed
        N, d = X.shape
        batch_size = min(batch_size, N)
        # per-fit buffers, reused by every epoch
        order = np.arange(N, dtype=np.int64)
        perm = order.copy()
        Xb = np.empty((batch_size, d), self.dtype)
        Tb = np.empty((batch_size if not use_labels else 0, self.n_outputs), self.dtype)
        Lb = np.empty(batch_size if use_labels else 0, np.int64)
        Wb = np.empty(batch_size if sw.shape[0] else 0, self.dtype)
        n_batches = (N + batch_size - 1) // batch_size
        stats = np.zeros((n_batches, 2), np.float64)
        sizes = np.full(n_batches, float(batch_size))
        sizes[-1] = N - (n_batches - 1) * batch_size
        ctl = self._ctl
        ctl[:] = (clip_norm or 0.0, 1.0 if track_gradients else 0.0, self._l2)
        tstats = self._tstats
        pprev = np.empty_like(self.params) if track_gradients else self._no_pprev
        batch_cbs = [cb for cb in callbacks if cb._has_batch_hook()]
        per_batch = any(cb.needs_every_batch for cb in batch_cbs)
        progress = _Progress(verbose, N, epochs)

        hist = History()
        self.history = hist
        self.stop_training = False
        for cb in callbacks:
            cb.set_model(self)
        interrupted = _InterruptFlag()
        samples_seen = initial_epoch * N
        chunk = 1
        with interrupted, _closing_on_error(callbacks), self._borrow(batch_size) as (ws, layout, fpar, meta):
            for cb in callbacks:
                cb.on_train_begin({})
            for epoch in range(initial_epoch, epochs):
                lr = opt._set_epoch(epoch, samples_seen, self.dtype)
                hp = opt._hparams()
                for cb in callbacks:
                    cb.on_epoch_begin(epoch, {})
                if shuffle:
                    perm[...] = order   # shuffle 0..N-1 afresh: the order depends only on the rng state (resume)
                    self._shuffle_rng.shuffle(perm)
                tstats[...] = 0.0
                progress.start(epoch)
                t0 = time.perf_counter()
                bi = 0
                kset = self._training_kernels(opt.kind)
                while bi < n_batches and not interrupted.flag:
                    b1 = min(n_batches, bi + (1 if per_batch else chunk))
                    tc = time.perf_counter()
                    done, status = K.train_epoch(
                        kset, self.params, self.grads, self.norm_state, ws, layout, fpar, meta, self._rng, X, T, labels,
                        use_labels, sw, perm, bool(shuffle), batch_size, bi, b1, opt.kind, s1, s2, s3, hp, opt._step,
                        Xb, Tb, Lb, Wb, stats, ctl, tstats, pprev)
                    dt = time.perf_counter() - tc
                    if status != K.OK:
                        logs = {"loss": float(stats[done, 0]), "size": int(sizes[done])}
                        for cb in batch_cbs:
                            cb.on_batch_end(done, logs)
                        progress.close()
                        if self.stop_training:   # a callback (TerminateOnNaN) chose to stop quietly
                            break
                        self._raise_diverged(status, stats[done, 0], f"epoch {epoch + 1}, batch {done + 1}")
                    chunk = max(1, min(n_batches, int(CHUNK_SECONDS * (b1 - bi) / max(dt, 1e-9))))
                    for b in range(bi, b1) if batch_cbs else ():
                        logs = {"loss": float(stats[b, 0]), "size": int(sizes[b])}
                        for cb in batch_cbs:
                            cb.on_batch_end(b, logs)
                    progress.update(int(sizes[bi:b1].sum()), float(stats[b1 - 1, 0]))
                    bi = b1
                    if self.stop_training:
                        break
                seconds = time.perf_counter() - t0
                if bi < n_batches:       # stopped inside the epoch: Ctrl-C, divergence or a batch callback
                    progress.close()
                    if interrupted.flag:
                        hist.interrupted = True
                        warnings.warn(f"Training interrupted by user in epoch {epoch + 1} after {bi} of {n_batches} "
                                      f"batches; the network keeps its weights and the history of the finished "
                                      f"epochs.", UserWarning, stacklevel=2)
                    break
                samples_seen += N
                logs = {"loss": float(stats[:, 0] @ sizes / N)}
                if self.is_classifier:
                    logs["accuracy"] = float(stats[:, 1].sum() / N)
                logs["lr"] = lr
                if val is not None:
                    logs.update({"val_" + k: v for k, v in self._evaluate_checked(*val).items()})
                if track_gradients:
                    for l in range(tstats.shape[0]):
                        logs[f"grad_norm_{l}"] = float(tstats[l, 0] / n_batches)
                        logs[f"update_ratio_{l}"] = float(tstats[l, 1] / n_batches)
                hist._append(epoch, **logs)
                if opt.schedule is not None:
                    opt.schedule.on_epoch_end(epoch, logs)
                for cb in callbacks:
                    cb.on_epoch_end(epoch, logs)
                progress.end(epoch, logs, seconds)
                if self.stop_training or interrupted.flag:
                    if interrupted.flag:
                        hist.interrupted = True
                        warnings.warn(f"Training interrupted by user after epoch {epoch + 1}; the network keeps "
                                      f"its weights and history.", UserWarning, stacklevel=2)
                    break
            for cb in callbacks:
                cb.on_train_end({})
        return hist

    def _split(self, X, T, labels, use_labels, sw, frac):
        """Hold out ``frac`` of the rows as validation data (stratified for classifiers)."""
        N = X.shape[0]
        rng = np.random.default_rng(self._split_seed)
        if self._loss_code == SOFTMAX_CE or (self._loss_code == SIGMOID_BCE and self.n_outputs == 1):
            cls = labels if use_labels else (T.argmax(axis=1) if self._loss_code == SOFTMAX_CE
                                              else (T[:, 0] > 0.5).astype(np.int64))
            val_idx = []
            for c in np.unique(cls):
                idx = np.flatnonzero(cls == c)
                rng.shuffle(idx)
                val_idx.append(idx[:int(round(frac * idx.size))])
            val_idx = np.concatenate(val_idx)
        else:
            val_idx = rng.permutation(N)[:int(round(frac * N))]
        if val_idx.size == 0 or val_idx.size == N:
            raise InputError(f"validation_split={frac} of {N} rows leaves no "
                             f"{'validation' if val_idx.size == 0 else 'training'} rows")
        mask = np.zeros(N, bool)
        mask[np.sort(val_idx)] = True

        def part(a, m):
            return np.ascontiguousarray(a[m]) if a.shape[0] else a

        train = tuple(part(a, ~mask) for a in (X, T, labels, sw))
        if sw.shape[0] and not train[3].any():
            raise InputError("validation_split leaves only rows of weight 0 for training")
        val = (part(X, mask), part(T, mask), part(labels, mask), use_labels, part(sw, mask))
        if val[4].shape[0] and not val[4].any():
            val = val[:4] + (self._no_weights,)
        return train, val

    # ---- inference ----------------------------------------------------------------------------
    def predict_proba(self, X):
        """The network's outputs: class probabilities (softmax/sigmoid) or values (identity), (n, k)."""
        X = check_X(X, self.dtype, self.n_inputs)
        return self._predict_checked(X)

    def _predict_checked(self, X):
        out = np.empty((X.shape[0], self.n_outputs), self.dtype)
        with self._borrow(PREDICT_BATCH) as (ws, layout, fpar, meta):
            K.loss_all(self._eval_kernels(), self.params, self.norm_state, ws, layout, fpar, meta, self._rng, X, self._no_T,
                       self._no_labels, True, self._no_weights, PREDICT_BATCH, out, False)
        return out

    def predict(self, X):
        """Class indices (softmax: argmax; sigmoid: 0/1 per output) or values (identity).

        Single-output networks give shape (n,), others (n, k).
        """
        P = self.predict_proba(X)
        if self._loss_code == SOFTMAX_CE:
            return P.argmax(axis=1)
        if self._loss_code == SIGMOID_BCE:
            P = (P > 0.5).astype(np.int64)
        return P[:, 0] if self.n_outputs == 1 else P

    def evaluate(self, X, y, sample_weight=None):
        """{"loss": (weighted) mean loss, "accuracy": ...} (accuracy for softmax/sigmoid outputs)."""
        return self._evaluate_checked(*self._check_xyw(X, y, sample_weight))

    def _evaluate_checked(self, X, T, labels, use_labels, sw):
        out = np.empty((X.shape[0], self.n_outputs), self.dtype)
        with self._borrow(PREDICT_BATCH) as (ws, layout, fpar, meta):
            loss = K.loss_all(self._eval_kernels(), self.params, self.norm_state, ws, layout, fpar, meta, self._rng, X, T,
                              labels, use_labels, sw, PREDICT_BATCH, out, True)
        res = {"loss": float(loss)}
        if self._loss_code == SOFTMAX_CE:
            truth = labels if use_labels else T.argmax(axis=1)
            res["accuracy"] = float(np.mean(out.argmax(axis=1) == truth))
        elif self._loss_code == SIGMOID_BCE:
            res["accuracy"] = float(np.mean((out > 0.5) == (T > 0.5)))
        return res

    def _snapshot(self):
        """Copies of the parameters and norm statistics (for EarlyStopping)."""
        return self.params.copy(), self.norm_state.copy()

    def _restore(self, snap):
        self.params[...] = snap[0]
        self.norm_state[...] = snap[1]

    # ---- weights --------------------------------------------------------------------------------
    def _weight_views(self):
        # per layer: (W, b), + (gamma, beta) with a norm, + (running_mean, running_var) with batch norm
        return [v + st for v, st in zip(self._views(self.params), self._state_views())]

    def get_weights(self):
        """Per layer a tuple of copies: (W, b) with W of shape (n_in, n_out); layers with a norm
        add (gamma, beta), batch norm also (running_mean, running_var)."""
        return [tuple(a.copy() for a in v) for v in self._weight_views()]

    def set_weights(self, weights):
        """Set every layer from tuples shaped as ``get_weights`` gives them."""
        pairs_msg = ("weights must be a list of (W, b) pairs, as get_weights() returns (layers with a norm "
                     "add gamma, beta, and for batch norm running_mean, running_var)")
        try:
            weights = [tuple(np.asarray(a) for a in w) for w in weights]
        except (TypeError, ValueError):
            raise InputError(pairs_msg) from None
        targets = self._weight_views()
        if len(weights) != len(targets):
            raise InputError(f"got {len(weights)} (W, b) pairs for a network of {len(targets)} layers")
        names = ("W", "b", "gamma", "beta", "running_mean", "running_var")
        for l, (w, t) in enumerate(zip(weights, targets)):
            if len(w) != len(t):
                raise InputError(f"{pairs_msg}; layer {l} needs {len(t)} arrays, got {len(w)}")
            if any(a.shape != a0.shape for a, a0 in zip(w, t)):
                raise InputError(f"layer {l}: expected " + " and ".join(f"{nm} {a0.shape}" for nm, a0 in zip(names, t))
                                 + ", got " + " and ".join(str(a.shape) for a in w))
            for a, name in zip(w, names):
                if a.dtype.kind not in "biuf" or not np.all(np.isfinite(a)):
                    raise InputError(f"layer {l}: {name} must be numeric and finite")
                if a.size and np.abs(a).max() > np.finfo(self.dtype).max:
                    raise InputError(f"layer {l}: {name} has values that overflow the network's {self.dtype.name}")
            if len(w) == 6 and np.any(w[5] < 0):
                raise InputError(f"layer {l}: running_var must be >= 0")
        for w, t in zip(weights, targets):
            for a, a0 in zip(w, t):
                a0[...] = a

    # ---- files ------------------------------------------------------------------------------------
    def get_config(self):
        return {"layer_sizes": self.layer_sizes, "activation": self.activations, "output": self.output,
                "loss": self.loss, "dtype": self.dtype.name, "seed": self.seed, "dropout": self.dropout,
                "init": self.init, "norm": self.norm, "norm_momentum": self.norm_momentum,
                "norm_eps": self.norm_eps}

    def save(self, path):
        """Write architecture, weights, norm statistics, generator states and optimizer state
        (with its step count and schedule) to a ``.npz``, so that ``load`` then
        ``fit(..., initial_epoch=...)`` continues exactly where training stopped.

        The file holds only plain arrays (it loads with ``allow_pickle=False``) and is
        written atomically: a temporary file in the same folder, then a rename.
        """
        path = os.fspath(path)
        arrays = {
            "format": np.array(FORMAT), "format_version": np.array(FORMAT_VERSION),
            "config": np.array(json.dumps(self.get_config())), "params": self.params,
            "norm_state": self.norm_state, "rng": self._rng,
            "shuffle_state": np.array(json.dumps(self._shuffle_rng.bit_generator.state)),
        }
        opt = self.optimizer
        if opt is not None:
            arrays["optimizer_config"] = np.array(json.dumps(opt.get_config()))
            arrays["optimizer_step"] = opt._step.copy()
            # an optimizer that has not stepped yet has no state: save the zeros it would start from
            states = opt.state_arrays() or [np.zeros(n, self.dtype) for n in opt._state_sizes(self.params.shape[0])]
            for i, a in enumerate(states):
                arrays[f"optimizer_state_{i}"] = a
        folder = os.path.dirname(os.path.abspath(path))
        fd, tmp = tempfile.mkstemp(prefix=".fastbp-", suffix=".npz.tmp", dir=folder)
        try:
            with os.fdopen(fd, "wb") as f:
                np.savez(f, **arrays)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise

    @classmethod
    def load(cls, path):
        """Read a file written by :meth:`save`; raises ModelFileError for anything else."""
        path = os.fspath(path)
        if not os.path.isfile(path):
            raise ModelNotFoundError(f"no model file at {path!r}")
        with open(path, "rb") as f:
            magic = f.read(6)
        if magic == b"\x93NUMPY":
            raise ModelFileError(f"{path!r} is a single .npy array, not a fastbp model (.npz)")
        if magic[:4] != b"PK\x03\x04":
            raise ModelFileError(f"{path!r} is truncated or not a fastbp model (not an .npz archive)")
        try:
            with np.load(path, allow_pickle=False) as f:
                data = {k: f[k] for k in f.files}
        except ValueError as e:
            if "pickle" in str(e):
                raise ModelFileError(f"{path!r} contains pickled objects; fastbp models never do, "
                                     f"so it is refused") from None
            raise ModelFileError(f"{path!r} is not a readable fastbp model: {e}") from None
        except Exception as e:  # zipfile.BadZipFile, EOFError, OSError, ... from a truncated file
            raise ModelFileError(f"{path!r} is truncated or not a fastbp model ({type(e).__name__}: {e})") from None

        def scalar(key, kind):
            a = data.get(key)
            if a is None or a.shape != () or a.dtype.kind not in kind:
                return None
            return a.item()

        if scalar("format", "U") != FORMAT:
            raise ModelFileError(f"{path!r} is not a fastbp model (no '{FORMAT}' marker)")
        version = scalar("format_version", "iu")
        if version != FORMAT_VERSION:
            raise ModelFileError(f"{path!r} has format version {-1 if version is None else version}; "
                                 f"this fastbp reads {FORMAT_VERSION}")
        try:
            cfg = json.loads(data["config"].item())
            net = cls(cfg["layer_sizes"], activation=cfg["activation"] or "relu", output=cfg["output"],
                      loss=cfg["loss"], dtype=cfg["dtype"], seed=cfg["seed"], dropout=cfg["dropout"] or 0.0,
                      init=cfg["init"], norm=cfg.get("norm") or None, norm_momentum=cfg.get("norm_momentum", 0.1),
                      norm_eps=cfg.get("norm_eps", 1e-5))
            params, rng = data["params"], data["rng"]
            if params.shape != net.params.shape or params.dtype != net.dtype:
                raise ModelFileError(f"{path!r}: parameters have shape {params.shape} {params.dtype}, "
                                     f"expected {net.params.shape} {net.dtype}")
            if not np.all(np.isfinite(params)):
                raise ModelFileError(f"{path!r}: parameters contain NaN or inf")
            net.params[...] = params
            if net.norm_state.size or "norm_state" in data:
                st = data["norm_state"]
                if st.shape != net.norm_state.shape or st.dtype != net.dtype or not np.all(np.isfinite(st)):
                    raise ModelFileError(f"{path!r}: norm statistics have shape {st.shape} {st.dtype} or are "
                                         f"not finite; expected {net.norm_state.shape} {net.dtype}")
                net.norm_state[...] = st
            net._rng[...] = rng
            net._shuffle_rng.bit_generator.state = json.loads(data["shuffle_state"].item())
            if "optimizer_config" in data:
                opt = from_config(json.loads(data["optimizer_config"].item()))
                sizes = opt._state_sizes(net.params.shape[0])
                states = [data[f"optimizer_state_{i}"] for i in range(3)]
                for i, (a, size) in enumerate(zip(states, sizes)):
                    if a.shape != (size,) or a.dtype != net.dtype:
                        raise ModelFileError(f"{path!r}: optimizer state {i} has shape {a.shape} {a.dtype}, "
                                             f"expected ({size},) {net.dtype}")
                    if not np.all(np.isfinite(a)) or (i in opt._nonneg_states and a.size and a.min() < 0):
                        raise ModelFileError(f"{path!r}: optimizer state {i} is not finite"
                                             + (" and >= 0" if i in opt._nonneg_states else ""))
                step = data["optimizer_step"]
                if step.shape != (1,) or step.dtype.kind not in "iu" or step[0] < 0:
                    raise ModelFileError(f"{path!r}: optimizer step count must be one non-negative integer")
                opt._load_state(int(step[0]), states)
                opt._bind(net)
                net.optimizer = opt
        except ModelFileError:
            raise
        except (KeyError, IndexError, TypeError, ValueError, json.JSONDecodeError) as e:
            raise ModelFileError(f"{path!r} is damaged or not a fastbp model ({type(e).__name__}: {e})") from None
        return net


__all__ = ["Network", "History", "Optimizer"]
