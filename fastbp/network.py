"""The ``Network`` class: a model (architecture, flat buffers and their views, inference,
weights) that validates at the edge and calls the kernels.

It contains no math: every number is computed by a kernel in ``fastbp.kernels``, the initial
values by ``_buffers.init_params``. Training runs through ``_training.Runner``, files through
``_io``; the members those modules use are listed in ``_training``'s docstring.
"""

import sys
import time
import warnings

import numpy as np

from . import _buffers, _compile, _io
from ._blas import bf16_support
from ._progress import InterruptFlag, Progress, closing_on_error, isatty
from ._training import (History, Runner, check_callbacks, check_monitors, raise_diverged, validation_set,
                        schedule_epoch_end, warn_interrupted, warn_restart)
from ._validation import (check_architecture, check_float, check_int, check_positive_int, check_sample_weight,
                          check_targets, check_weights, check_X, with_class_weights)
from .errors import InputError
from .kernels import interp, network as K
from .kernels.activations import ACTIVATIONS, DEFAULT_ALPHA
from .kernels.table import kernel_table, kernels_needed
from .kernels.losses import SIGMOID_BCE, SOFTMAX_CE, correct_count
from .kernels.norm import NO_NORM, NORMS
from .kernels.optim import update_code
from .kernels.precision import copy_code
from .names import history_keys
from .optim import Optimizer, get_optimizer
from .schedules import check_rates

FORMAT, FORMAT_VERSION = _io.FORMAT, _io.FORMAT_VERSION
PREDICT_BATCH = 1024

MAX_WORKSPACES = 4    # cached workspaces (one per batch size), least recently used dropped first


def _inference(args):
    # the inference driver for these arguments: interpreted while a cold fit's helper compiles it
    # (fastbp._compile; the same results), else compiled
    return interp.loss_all if _compile.interpreting(K.loss_all, args) else K.loss_all


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
    precision : {"fp32", "bf16"}
        "bf16": mixed precision as ``torch.autocast(device_type="cpu", dtype=torch.bfloat16)``
        with float32 parameters: the matrix products take bfloat16 operands (the weights
        rounded once per step, each layer's input and gradient once) and accumulate in
        float32; weights, activations, losses and optimizer state stay float32. Needs oneDNN
        (``pip install 'fastbp[bf16]'``) and a CPU with AMX-BF16 or AVX512-BF16; elsewhere the
        network computes in float32 and says so in a RuntimeWarning (``compute_precision``
        tells which). float32 networks only.
    """

    def __init__(self, layer_sizes, activation="relu", output="softmax", loss=None,
                 dtype=np.float32, seed=0, dropout=0.0, init="auto", norm=None, norm_momentum=0.1,
                 norm_eps=1e-5, precision="fp32"):
        self._configure(layer_sizes, activation, output, loss, dtype, seed, dropout, init, norm, norm_momentum,
                        norm_eps, precision)
        self._allocate()

    @classmethod
    def _configured(cls, *args, **kwargs):
        """A network checked and laid out (``_n_flat``, ``_n_state``) but without buffers
        (``_allocate`` adds them): ``_io.load`` compares the sizes a file's configuration
        implies with its arrays before anything is allocated."""
        net = cls.__new__(cls)
        net._configure(*args, **kwargs)
        return net

    def _configure(self, *args, **kwargs):
        """Check every argument (as __init__'s) and compute the buffer layout; no allocation."""
        self.__dict__.update(check_architecture(*args, **kwargs))
        self._act_codes = [ACTIVATIONS[a] for a in self.activations]
        self._alphas = [DEFAULT_ALPHA.get(c, 0.0) for c in self._act_codes]
        self._norm_codes = [NORMS[v] for v in self.norm]
        self._param_offs, self._n_flat = _buffers.param_layout(self.layer_sizes, self.dtype, self._norm_codes)
        self._state_offs, self._n_state = _buffers.state_layout(self.layer_sizes, self._norm_codes, self.dtype)
        self._bf16 = self.precision == "bf16"
        if self._bf16:
            ok, why = bf16_support()
            if not ok:
                warnings.warn(f"precision='bf16' computes in float32 here: {why}", RuntimeWarning, stacklevel=3)
                self._bf16 = False

    @property
    def compute_precision(self):
        """The precision of the matrix products: "bf16", or "fp32" (also where bf16 was asked
        for but this machine cannot run it at speed)."""
        return "bf16" if self._bf16 else "fp32"

    def _allocate(self):
        """The buffers, generators and initial weights of a configured network."""
        self.params = _buffers.aligned_zeros(self._n_flat, self.dtype)
        self.grads = _buffers.aligned_zeros(self._n_flat, self.dtype)
        self.norm_state = _buffers.aligned_zeros(self._n_state, self.dtype)
        self._ws = _buffers.Workspaces(self._new_workspace, MAX_WORKSPACES)
        self._workspaces = self._ws.cache
        self._no_T = np.zeros((0, self.n_outputs), self.dtype)
        self._no_labels = np.zeros(0, np.int64)
        self._no_weights = np.zeros(0, self.dtype)
        self._no_pprev = np.zeros(0, self.dtype)
        self._ctl = np.zeros(3, np.float64)      # train_step's control and gradient-health arrays
        self._tstats = np.zeros((len(self.layer_sizes) - 1, 2), np.float64)
        self._l2 = 0.0          # scikit-learn's alpha (used by fastbp.sklearn)
        init_ss, shuffle_ss, drop_ss, split_ss = np.random.SeedSequence(self.seed).spawn(4)
        self._shuffle_rng = np.random.default_rng(shuffle_ss)
        self._split_seed = split_ss
        self._rng = np.array([drop_ss.generate_state(1, np.uint64)[0]], np.uint64)
        self.optimizer = None
        self.history = None
        self.stop_training = False
        self._epoch = 0            # epochs trained so far (the next fit's initial_epoch to resume; saved)
        self._loaded_epoch = None  # that count as a file gave it, until the first fit after load
        _buffers.init_params(self._views(self.params), self._state_views(), self._act_codes, self.init,
                             np.random.default_rng(init_ss))

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

    def _new_workspace(self, batch_size):
        layout, fpar, (g0, g1, p16, dz16), size = _buffers.build_layout(
            self.layer_sizes, self._act_codes, self._alphas, self.dropout, self._param_offs,
            batch_size, self.dtype, self._norm_codes, (self.norm_momentum, self.norm_eps), self._state_offs,
            self._n_flat, self._bf16)
        meta = np.array([self._loss_code, g0, g1, K.BF16 if self._bf16 else K.FP32, p16, dz16], np.int64)
        return _buffers.aligned_zeros(size, self.dtype), layout, fpar, meta

    def _workspace(self, batch_size):
        """The cached workspace for batches of up to ``batch_size`` rows (see _buffers.Workspaces)."""
        return self._ws.get(batch_size)

    def _borrow(self, batch_size):
        """A context manager giving a workspace for one call (see _buffers.Workspaces.borrow)."""
        return self._ws.borrow(batch_size)

    def _drop_workspace(self, batch_size):
        """Forget the cached workspace for ``batch_size`` (a one-off size, e.g. a full-batch objective)."""
        self._ws.drop(batch_size)

    def __repr__(self):
        acts = self.activations[0] if len(set(self.activations)) == 1 else self.activations
        extra = ""
        if any(self.norm):
            extra = f", norm={self.norm[0] if len(set(self.norm)) == 1 else self.norm!r}"
        if self.precision != "fp32":
            extra += f", precision={self.precision!r}"
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
            sw = with_class_weights(sw, class_weight, self._loss_code, T, labels, use_labels, self.n_outputs,
                                    self.dtype)
        return X, T, labels, use_labels, sw

    def _layer_kernel_codes(self):
        """(dropout as seen, activation codes, norm codes, dropout flags) per hidden layer, as
        kernel_table takes them: made once (again only after ``dropout`` changed), so a
        steady-state step builds nothing to look its table up with."""
        made = self.__dict__.get("_layer_codes")
        if made is None or made[0] != self.dropout:
            made = self._layer_codes = (list(self.dropout), tuple(self._act_codes), tuple(self._norm_codes),
                                        tuple(p > 0.0 for p in self.dropout))
        return made

    def _kernels(self, opt_kind=None, training=False):
        """The kernel table the compiled drivers get (kernels/table.py): this network's activation,
        loss and norm kernels and, when training, its dropout and the optimizer ``opt_kind``
        (evaluate and predict use ``_kernels()``). Each kernel is compiled (or loaded from the
        cache) on first use; the drivers are the same for every network of a dtype."""
        _, acts, norms, drop = self._layer_kernel_codes()
        opt = None if opt_kind is None else update_code(opt_kind, self._n_flat, self._bf16)
        cvt = copy_code(self._n_flat) if self._bf16 else None
        return kernel_table(self.dtype, acts, self._loss_code, opt, norms, drop if training else (), cvt)

    def _kernel_list(self, opt_kind=None, training=False):
        """The (family, code) kernels of ``_kernels(opt_kind, training)``'s table."""
        _, acts, norms, drop = self._layer_kernel_codes()
        opt = None if opt_kind is None else update_code(opt_kind, self._n_flat, self._bf16)
        cvt = copy_code(self._n_flat) if self._bf16 else None
        return kernels_needed(acts, self._loss_code, opt, norms, drop if training else (), cvt)

    def _training_kernels(self, opt_kind):
        """The kernel table of a training step with optimizer ``opt_kind`` (fit, train_step, the
        scikit-learn estimators)."""
        return self._kernels(opt_kind, True)

    def _kernel_optimizer(self, optimizer):
        opt = get_optimizer(optimizer if optimizer is not None else (self.optimizer or "adam"))
        opt._check_hparams(self.dtype)
        state = opt._bind(self)
        self.optimizer = opt
        return opt, state

    # ---- training ------------------------------------------------------------------------------
    def train_step(self, X, y, optimizer=None, sample_weight=None):
        """One update on one batch (all rows of X); returns that batch's mean loss (before the update)."""
        X, T, labels, use_labels, sw = self._check_xyw(X, y, sample_weight)
        opt, (s1, s2, s3) = self._kernel_optimizer(optimizer)
        n = X.shape[0]
        self._ctl[:] = (0.0, 0.0, self._l2)
        with self._borrow(n) as (ws, layout, fpar, meta):
            loss, _, status = K.train_batch(self._training_kernels(opt.kind), self.params, self.grads, self.norm_state,
                                            ws, layout, fpar, meta, self._rng, X, T, labels, use_labels, sw, n,
                                            s1, s2, s3, opt._hparams(), opt._step, self._ctl, self._tstats,
                                            self._no_pprev)
        if status != K.OK:
            raise_diverged(self, status, loss, "train_step")
        return float(loss)

    def _loss_grad(self, X, T, labels, use_labels, sw):
        n = X.shape[0]
        kt = self._kernels(training=True)
        with self._borrow(n) as (ws, layout, fpar, meta):
            loss = K.loss_forward_all(kt, self.params, self.norm_state, ws, layout, fpar, meta, X, T, labels,
                                      use_labels, sw, n, True, self._rng)
            if self._l2 > 0:
                loss += K.l2_penalty(self.params, layout, self._l2, sw, n)
            K.backward_all(kt, self.grads, self.params, ws, layout, fpar, meta, X, T, labels, use_labels, sw, n, self._l2)
            if self.norm_state.size and np.isfinite(loss) and K.all_finite(self.grads):
                K.update_running(kt, self.norm_state, ws, layout, fpar, n)
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
            Epoch to resume at (schedules and logs continue from it). After ``load``, pass
            ``initial_epoch=net.epochs_trained`` to continue; fitting a loaded network whose
            schedule would restart from 0 warns once.
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
        callbacks, schedule = check_callbacks(callbacks, schedule)
        X, T, labels, use_labels, sw = self._check_xyw(X, y, sample_weight, class_weight)
        (X, T, labels, sw), val = validation_set(self, validation_data, validation_split, X, T, labels, use_labels, sw)
        opt = get_optimizer(optimizer if optimizer is not None else (self.optimizer or "adam"))
        if schedule is None:
            schedule = opt.schedule
        if schedule is not None:
            check_rates(schedule, opt.lr, initial_epoch, epochs, self.dtype)
        keys = history_keys(self.is_classifier, len(self.layer_sizes) - 1, val is not None, track_gradients)
        check_monitors(callbacks + ([schedule] if schedule is not None else []), keys)
        if verbose == "auto":
            verbose = 1 if isatty(sys.stderr) else 0

        warn_restart(self, opt, schedule, initial_epoch, X.shape[0])
        opt, _ = self._kernel_optimizer(opt)
        opt.schedule = schedule   # attached (and saved with the optimizer) once every check has passed
        N = X.shape[0]
        runner = Runner(self, opt, X, T, labels, use_labels, sw, min(batch_size, N), clip_norm, track_gradients)
        batch_cbs = [cb for cb in callbacks if cb._has_batch_hook()]
        per_batch = any(cb.needs_every_batch for cb in batch_cbs)
        progress = Progress(verbose, N, epochs)
        hist = self.history = History()
        self.stop_training = False
        for cb in callbacks:
            cb.set_model(self)
            cb.set_params({"verbose": verbose, "epochs": epochs})
        interrupted = InterruptFlag()
        samples_seen = initial_epoch * N
        with interrupted, closing_on_error(callbacks), runner:
            for cb in callbacks:
                cb.on_train_begin({})
            for epoch in range(initial_epoch, epochs):
                lr = opt._set_epoch(epoch, samples_seen, self.dtype)
                for cb in callbacks:
                    cb.on_epoch_begin(epoch, {})
                runner.start_epoch(self._shuffle_rng if shuffle else None)
                progress.start(epoch)
                t0 = time.perf_counter()
                done = runner.run_epoch(shuffle, lambda: interrupted.flag, batch_cbs, per_batch, progress,
                                        f"epoch {epoch + 1}, ")
                seconds = time.perf_counter() - t0
                if done < runner.n_batches:   # stopped inside the epoch: Ctrl-C or a callback
                    progress.close()
                    if interrupted.flag:
                        hist.interrupted = True
                        warn_interrupted(epoch, done, runner.n_batches)
                    break
                samples_seen += N
                logs = {"loss": runner.mean_loss(), **({"accuracy": runner.accuracy()} if self.is_classifier else {}),
                        "lr": lr}
                if val is not None:
                    logs.update({"val_" + k: v for k, v in self._evaluate_checked(*val).items()})
                if track_gradients:
                    logs.update(runner.gradient_logs())
                hist._append(epoch, **logs)
                self._epoch = epoch + 1
                progress.end(epoch, logs, seconds)   # the epoch's line, then what callbacks say
                if opt.schedule is not None:
                    schedule_epoch_end(opt, epoch, logs, samples_seen, verbose)
                for cb in callbacks:
                    cb.on_epoch_end(epoch, logs)
                if self.stop_training or interrupted.flag:
                    if interrupted.flag:
                        hist.interrupted = True
                        warn_interrupted(epoch, done, runner.n_batches)
                    break
            for cb in callbacks:
                cb.on_train_end({})
        return hist

    @property
    def epochs_trained(self):
        """Epochs finished by ``fit`` so far (kept in saved files): where a resumed fit continues."""
        return getattr(self, "_epoch", 0)   # 0 for a network pickled before it was kept

    # ---- inference ----------------------------------------------------------------------------
    def predict_proba(self, X):
        """The network's outputs: class probabilities (softmax/sigmoid) or values (identity), (n, k)."""
        X = check_X(X, self.dtype, self.n_inputs)
        return self._predict_checked(X)

    def _predict_checked(self, X):
        out = np.empty((X.shape[0], self.n_outputs), self.dtype)
        with self._borrow(PREDICT_BATCH) as (ws, layout, fpar, meta):
            args = (self._kernels(), self.params, self.norm_state, ws, layout, fpar, meta, self._rng, X, self._no_T,
                    self._no_labels, True, self._no_weights, PREDICT_BATCH, out, False)
            _inference(args)(*args)
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
            args = (self._kernels(), self.params, self.norm_state, ws, layout, fpar, meta, self._rng, X, T,
                    labels, use_labels, sw, PREDICT_BATCH, out, True)
            loss = _inference(args)(*args)
        res = {"loss": float(loss)}
        if self.is_classifier:   # the kernels' count of correct predictions, as fit's accuracy
            res["accuracy"] = float(correct_count(self._loss_code, out, T, labels, use_labels) / X.shape[0])
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
        for w, t in zip(check_weights(weights, self._weight_views(), self.dtype), self._weight_views()):
            for a, a0 in zip(w, t):
                a0[...] = a

    # ---- files ------------------------------------------------------------------------------------
    def get_config(self):
        return {"layer_sizes": self.layer_sizes, "activation": self.activations, "output": self.output,
                "loss": self.loss, "dtype": self.dtype.name, "seed": self.seed, "dropout": self.dropout,
                "init": self.init, "norm": self.norm, "norm_momentum": self.norm_momentum,
                "norm_eps": self.norm_eps, "precision": self.precision}

    def save(self, path):
        """Write architecture, weights, norm statistics, generator states and optimizer state
        (with its step count and schedule) to a ``.npz``, so that ``load`` then
        ``fit(..., initial_epoch=...)`` continues exactly where training stopped.

        The file holds only plain arrays (it loads with ``allow_pickle=False``) and is
        written atomically: a temporary file in the same folder, then a rename.
        """
        _io.save(self, path)

    @classmethod
    def load(cls, path):
        """Read a file written by :meth:`save`; raises ModelFileError for anything else."""
        return _io.load(cls, path)

    # ---- interchange (fastbp.export; onnx and torch are imported only here) ----------------
    def to_onnx(self, path=None, opset=None, input_name="X", output_name="Y"):
        """The inference function as an ONNX graph (:func:`fastbp.export.to_onnx`): written
        atomically to ``path``, or returned as a ``ModelProto`` when ``path`` is None."""
        from .export import to_onnx
        return to_onnx(self, path, opset=opset, input_name=input_name, output_name=output_name)

    def to_torch(self):
        """The same network as a ``torch.nn.Sequential`` in eval mode, weights copied."""
        from .export import to_torch
        return to_torch(self)

    @classmethod
    def from_torch(cls, module, loss=None, dtype=None, seed=0):
        """A Network from an ``nn.Sequential`` of Linear, supported activations and norms;
        ``ValueError`` naming the module for anything that is not such a plain MLP."""
        from .export import from_torch
        return from_torch(module, loss=loss, dtype=dtype, seed=seed)


__all__ = ["Network", "History", "Optimizer"]
