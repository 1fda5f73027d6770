"""The ``Network`` class: owns the buffers, validates at the edge, calls the kernels.

It contains no math: every number is computed by a kernel in ``fastbp.kernels``.
"""

import json
import math
import numbers
import os
import tempfile
import time

import numpy as np

from . import _buffers
from ._validation import check_choice, check_positive_int, check_targets, check_X
from .errors import DivergenceError, InputError, ModelFileError, ModelNotFoundError
from .kernels import network as K
from .kernels.activations import ACTIVATIONS, ALIASES, DEFAULT_ALPHA, RELU_LIKE
from .kernels.losses import DEFAULT_LOSS, PAIRS, SIGMOID_BCE, SOFTMAX_CE
from .optim import Optimizer, from_config, get_optimizer

FORMAT = "fastbp.Network"
FORMAT_VERSION = 1
PREDICT_BATCH = 1024
_STATUS_TEXT = {K.BAD_LOSS: "the training loss", K.BAD_GRAD: "a gradient"}


class History:
    """What ``fit`` returns: ``history`` maps a metric name to its per-epoch values."""

    def __init__(self):
        self.history = {}
        self.epoch = []

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
    output : {"softmax", "sigmoid", "identity"}
    loss : {"cross_entropy", "binary_cross_entropy", "mse", "huber"}, optional
        Must pair with ``output``; by default cross_entropy, binary_cross_entropy, mse.
    dtype : float32 (default) or float64
    seed : int
        Seeds the initial weights, the shuffling and the dropout masks.
    dropout : float or sequence of float
        Drop probability per hidden layer (inverted dropout, training only).
    init : {"auto", "he", "glorot"}
        "auto": He normal for relu-like layers, Glorot uniform otherwise. Biases start at 0.
    """

    def __init__(self, layer_sizes, activation="relu", output="softmax", loss=None,
                 dtype=np.float32, seed=0, dropout=0.0, init="auto"):
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

        self._act_codes = [ACTIVATIONS[a] for a in self.activations]
        self._alphas = [DEFAULT_ALPHA.get(c, 0.0) for c in self._act_codes]
        self._param_offs, n_params = _buffers.param_layout(self.layer_sizes, self.dtype)
        self.params = _buffers.aligned_zeros(n_params, self.dtype)
        self.grads = _buffers.aligned_zeros(n_params, self.dtype)
        self._workspaces = {}
        self._no_T = np.zeros((0, self.n_outputs), self.dtype)
        self._no_labels = np.zeros(0, np.int64)
        init_ss, shuffle_ss, drop_ss = np.random.SeedSequence(self.seed).spawn(3)
        self._shuffle_rng = np.random.default_rng(shuffle_ss)
        self._rng = np.array([drop_ss.generate_state(1, np.uint64)[0]], np.uint64)
        self.optimizer = None
        self.history = None
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
        """Number of weights and biases (without alignment padding)."""
        return sum(a * b + b for a, b in zip(self.layer_sizes[:-1], self.layer_sizes[1:]))

    def _views(self, flat):
        out = []
        for (w, b), n_in, n_out in zip(self._param_offs, self.layer_sizes[:-1], self.layer_sizes[1:]):
            out.append((flat[w:w + n_in * n_out].reshape(n_in, n_out), flat[b:b + n_out]))
        return out

    @property
    def layers(self):
        """[(W, b), ...] views into the flat parameter buffer (writing them changes the network)."""
        return self._views(self.params)

    def _init_weights(self, rng):
        n_layers = len(self.layer_sizes) - 1
        for l, (W, b) in enumerate(self.layers):
            n_in, n_out = W.shape
            relu_like = l < n_layers - 1 and self._act_codes[l] in RELU_LIKE
            if self.init == "he" or (self.init == "auto" and relu_like):
                W[...] = rng.standard_normal((n_in, n_out)) * math.sqrt(2.0 / n_in)
            else:
                lim = math.sqrt(6.0 / (n_in + n_out))
                W[...] = rng.uniform(-lim, lim, (n_in, n_out))
            b[...] = 0.0

    def _workspace(self, batch_size):
        ws = self._workspaces.get(batch_size)
        if ws is None:
            layout, fpar, (g0, g1), size = _buffers.build_layout(
                self.layer_sizes, self._act_codes, self._alphas, self.dropout, self._param_offs,
                batch_size, self.dtype)
            meta = np.array([self._loss_code, g0, g1], np.int64)
            ws = (_buffers.aligned_zeros(size, self.dtype), layout, fpar, meta)
            self._workspaces[batch_size] = ws
        return ws

    def __repr__(self):
        acts = self.activations[0] if len(set(self.activations)) == 1 else self.activations
        return (f"Network({self.layer_sizes}, activation={acts!r}, output={self.output!r}, "
                f"loss={self.loss!r}, dtype={self.dtype.name})")

    # ---- validation helpers -----------------------------------------------------------------
    def _check_xy(self, X, y, names=("X", "y")):
        X = check_X(X, self.dtype, self.n_inputs, name=names[0])
        T, labels, use_labels = check_targets(y, self._loss_code, self.n_outputs, X.shape[0], self.dtype,
                                              name=names[1], x_name=names[0])
        return X, (T if T is not None else self._no_T), (labels if labels is not None else self._no_labels), use_labels

    def _kernel_optimizer(self, optimizer):
        opt = get_optimizer(optimizer if optimizer is not None else (self.optimizer or "adam"))
        s1, s2, s3 = opt._bind(self)
        self.optimizer = opt
        return opt, s1, s2, s3

    def _raise_diverged(self, status, loss, where):
        raise DivergenceError(
            f"{_STATUS_TEXT[status]} became non-finite ({where}, batch loss {loss}); the step was not "
            f"applied, so the network keeps the weights of the last finite step. Lower the learning rate "
            f"or check the data scale.")

    # ---- training ------------------------------------------------------------------------------
    def train_step(self, X, y, optimizer=None):
        """One update on one batch (all rows of X); returns that batch's mean loss (before the update)."""
        X, T, labels, use_labels = self._check_xy(X, y)
        opt, s1, s2, s3 = self._kernel_optimizer(optimizer)
        n = X.shape[0]
        ws, layout, fpar, meta = self._workspace(n)
        loss, status = K.train_batch(self.params, self.grads, ws, layout, fpar, meta, self._rng, X, T, labels,
                                     use_labels, n, opt.kind, s1, s2, s3, opt._hparams(), opt._step)
        if status != K.OK:
            self._raise_diverged(status, loss, "train_step")
        return float(loss)

    def loss_and_gradients(self, X, y):
        """Mean loss of the batch and its gradients [(dW, db), ...] (copies), without updating.

        Dropout, if set, is applied as in training.
        """
        X, T, labels, use_labels = self._check_xy(X, y)
        n = X.shape[0]
        ws, layout, fpar, meta = self._workspace(n)
        loss = K.loss_forward_all(self.params, ws, layout, fpar, meta, X, T, labels, use_labels, n, True, self._rng)
        K.backward_all(self.grads, self.params, ws, layout, fpar, meta, X, T, labels, use_labels, n)
        return float(loss), [(dW.copy(), db.copy()) for dW, db in self._views(self.grads)]

    def fit(self, X, y, epochs=1, batch_size=32, optimizer=None, shuffle=True, validation_data=None,
            verbose=0):
        """Mini-batch training. Returns a :class:`History` (also kept as ``self.history``).

        ``history["loss"]`` is each epoch's mean training loss over its batches (as
        Keras reports it); with ``validation_data=(Xv, yv)`` also ``val_loss`` and, for
        classifiers, ``val_accuracy``. ``optimizer`` defaults to the last one used,
        else ``Adam()``. ``verbose=1`` prints one line per epoch.
        """
        epochs = check_positive_int(epochs, "epochs")
        batch_size = check_positive_int(batch_size, "batch_size")
        X, T, labels, use_labels = self._check_xy(X, y)
        val = None
        if validation_data is not None:
            try:
                Xv, yv = validation_data
            except (TypeError, ValueError):
                raise InputError("validation_data must be a pair (X_val, y_val)") from None
            val = self._check_xy(Xv, yv, names=("validation X", "validation y"))
        N, d = X.shape
        batch_size = min(batch_size, N)
        opt, s1, s2, s3 = self._kernel_optimizer(optimizer)
        ws, layout, fpar, meta = self._workspace(batch_size)
        # per-fit buffers, reused by every epoch
        perm = np.arange(N, dtype=np.int64)
        Xb = np.empty((batch_size, d), self.dtype)
        Tb = np.empty((batch_size if not use_labels else 0, self.n_outputs), self.dtype)
        Lb = np.empty(batch_size if use_labels else 0, np.int64)
        n_batches = (N + batch_size - 1) // batch_size
        losses = np.zeros(n_batches, np.float64)
        weights = np.full(n_batches, batch_size / N)
        weights[-1] = (N - (n_batches - 1) * batch_size) / N

        hist = History()
        self.history = hist
        for epoch in range(epochs):
            if shuffle:
                self._shuffle_rng.shuffle(perm)
            t0 = time.perf_counter()
            done, status = K.train_epoch(self.params, self.grads, ws, layout, fpar, meta, self._rng, X, T, labels,
                                         use_labels, perm, bool(shuffle), batch_size, opt.kind, s1, s2, s3,
                                         opt._hparams(), opt._step, Xb, Tb, Lb, losses)
            seconds = time.perf_counter() - t0
            if status != K.OK:
                self._raise_diverged(status, losses[done], f"epoch {epoch + 1}")
            logs = {"loss": float(losses @ weights)}
            if val is not None:
                logs.update({"val_" + k: v for k, v in self._evaluate_checked(*val).items()})
            hist._append(epoch, **logs)
            if verbose:
                text = " - ".join(f"{k}: {v:.4g}" for k, v in logs.items())
                print(f"epoch {epoch + 1}/{epochs} - {seconds:.2f}s - {N / seconds:,.0f} samples/s - {text}",
                      flush=True)
        return hist

    # ---- inference ----------------------------------------------------------------------------
    def predict_proba(self, X):
        """The network's outputs: class probabilities (softmax/sigmoid) or values (identity), (n, k)."""
        X = check_X(X, self.dtype, self.n_inputs)
        return self._predict_checked(X)

    def _predict_checked(self, X):
        out = np.empty((X.shape[0], self.n_outputs), self.dtype)
        ws, layout, fpar, meta = self._workspace(PREDICT_BATCH)
        K.predict_all(out, self.params, ws, layout, fpar, meta, self._rng, X, PREDICT_BATCH)
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

    def evaluate(self, X, y):
        """{"loss": mean loss, "accuracy": ...} (accuracy for softmax/sigmoid outputs)."""
        return self._evaluate_checked(*self._check_xy(X, y))

    def _evaluate_checked(self, X, T, labels, use_labels):
        out = np.empty((X.shape[0], self.n_outputs), self.dtype)
        ws, layout, fpar, meta = self._workspace(PREDICT_BATCH)
        loss = K.loss_all(self.params, ws, layout, fpar, meta, self._rng, X, T, labels, use_labels,
                          PREDICT_BATCH, out)
        res = {"loss": float(loss)}
        if self._loss_code == SOFTMAX_CE:
            truth = labels if use_labels else T.argmax(axis=1)
            res["accuracy"] = float(np.mean(out.argmax(axis=1) == truth))
        elif self._loss_code == SIGMOID_BCE:
            res["accuracy"] = float(np.mean((out > 0.5) == (T > 0.5)))
        return res

    # ---- weights --------------------------------------------------------------------------------
    def get_weights(self):
        """[(W0, b0), (W1, b1), ...] as copies; W of shape (n_in, n_out)."""
        return [(W.copy(), b.copy()) for W, b in self.layers]

    def set_weights(self, weights):
        """Set every layer from [(W, b), ...] with the shapes ``get_weights`` gives."""
        try:
            weights = [(np.asarray(W), np.asarray(b)) for W, b in weights]
        except (TypeError, ValueError):
            raise InputError("weights must be a list of (W, b) pairs, as get_weights() returns") from None
        if len(weights) != len(self.layer_sizes) - 1:
            raise InputError(f"got {len(weights)} (W, b) pairs for a network of {len(self.layer_sizes) - 1} layers")
        for l, ((W, b), (W0, b0)) in enumerate(zip(weights, self.layers)):
            if W.shape != W0.shape or b.shape != b0.shape:
                raise InputError(f"layer {l}: expected W {W0.shape} and b {b0.shape}, got {W.shape} and {b.shape}")
            for a, name in ((W, "W"), (b, "b")):
                if a.dtype.kind not in "biuf" or not np.all(np.isfinite(a)):
                    raise InputError(f"layer {l}: {name} must be numeric and finite")
        for (W, b), (W0, b0) in zip(weights, self.layers):
            W0[...] = W
            b0[...] = b

    # ---- files ------------------------------------------------------------------------------------
    def get_config(self):
        return {"layer_sizes": self.layer_sizes, "activation": self.activations, "output": self.output,
                "loss": self.loss, "dtype": self.dtype.name, "seed": self.seed, "dropout": self.dropout,
                "init": self.init}

    def save(self, path):
        """Write architecture, weights, generator state and optimizer state to a ``.npz``.

        The file holds only plain arrays (it loads with ``allow_pickle=False``) and is
        written atomically: a temporary file in the same folder, then a rename.
        """
        path = os.fspath(path)
        arrays = {
            "format": np.array(FORMAT), "format_version": np.array(FORMAT_VERSION),
            "config": np.array(json.dumps(self.get_config())), "params": self.params,
            "rng": self._rng,
            "shuffle_state": np.array(json.dumps(self._shuffle_rng.bit_generator.state)),
        }
        opt = self.optimizer
        if opt is not None:
            arrays["optimizer_config"] = np.array(json.dumps(opt.get_config()))
            arrays["optimizer_step"] = opt._step.copy()
            for i, a in enumerate(opt.state_arrays() or ()):
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
                      init=cfg["init"])
            params, rng = data["params"], data["rng"]
            if params.shape != net.params.shape or params.dtype != net.dtype:
                raise ModelFileError(f"{path!r}: parameters have shape {params.shape} {params.dtype}, "
                                     f"expected {net.params.shape} {net.dtype}")
            if not np.all(np.isfinite(params)):
                raise ModelFileError(f"{path!r}: parameters contain NaN or inf")
            net.params[...] = params
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
