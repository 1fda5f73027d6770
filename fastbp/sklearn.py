"""scikit-learn drop-ins: ``MLPClassifier`` and ``MLPRegressor`` trained by fastbp's kernels.

Change one import, keep the code::

    from fastbp.sklearn import MLPClassifier   # instead of sklearn.neural_network

The constructor parameters, their names, defaults and meaning, the fitted attributes,
methods, warnings and errors are scikit-learn's (``sklearn/neural_network/
_multilayer_perceptron.py``, whose control flow this module follows step by step:
initialisation, early-stopping split, shuffling, the ``tol`` / ``n_iter_no_change`` rule,
learning-rate schedules, L-BFGS). What differs is the engine: a whole epoch of mini-batch
updates is one compiled call over fastbp's flat buffers, and ``lbfgs`` runs SciPy's
L-BFGS-B on fastbp's fused loss and gradient.

Matching scikit-learn's optimisation exactly. scikit-learn's output gradient is
``w_i (p_i - y_i) / sum(w)`` for every loss and its L2 term is ``alpha W / sum(w)``. fastbp's
loss kernels are means over the n*k elements (PyTorch's), so their output gradient is that
times ``s`` (1 for softmax cross-entropy, 1/k for sigmoid and Poisson, 2/k for squared
error with k outputs). The network gets ``alpha * s`` as its L2 strength, so its whole
gradient is ``s`` times scikit-learn's; then SGD runs with ``lr / s`` and Adam with
``epsilon * s``, L-BFGS sees the gradient divided by ``s``: the same steps in exact arithmetic.
Reported losses are converted back to scikit-learn's definitions (``_loss_scales``).

SGD's momentum buffer is ``torch.optim.SGD``'s (``b = mu b + g; p -= lr b``); scikit-learn's
velocity ``v = mu v - lr g`` is ``-lr b``, and the buffer is rescaled whenever the rate changes
('invscaling', 'adaptive'), so SGD takes scikit-learn's steps with every schedule.

Adam places epsilon as scikit-learn does (``Adam(eps_hat=True)``: added to ``sqrt(v)`` before
the bias correction, not to ``sqrt(v_hat)`` as PyTorch). With PyTorch's placement the
weights of a feature that is zero in every row, which only the L2 term moves, took up to
30x larger steps early on (digits scaled to [0, 1], ``hidden_layer_sizes=(32,)``, 10
epochs: weights 4e-2 apart, loss 0.4 %).

Deliberate differences: sparse input is densified;
float32 input trains in float32 with every solver (scikit-learn's L-BFGS promotes to
float64); a step whose loss or gradient is not finite is not applied and the weights
become NaN, as scikit-learn's would.
"""

import contextlib
import warnings
from numbers import Integral, Real

import numpy as np
import scipy.optimize
import scipy.sparse as sp
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin, _fit_context, is_classifier
from sklearn.exceptions import ConvergenceWarning
from sklearn.metrics import accuracy_score, r2_score
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import LabelBinarizer
from sklearn.utils import check_random_state, column_or_1d
from sklearn.utils._param_validation import Interval, Options, StrOptions
from sklearn.utils.metaestimators import available_if
from sklearn.utils.multiclass import _check_partial_fit_first_call, type_of_target, unique_labels
from sklearn.utils.optimize import _check_optimize_result
from sklearn.utils.validation import _check_sample_weight, check_is_fitted, validate_data

from . import get_thread_setting, set_num_threads
from ._training import OK, Runner
from .names import ACTIVATION_ALIASES, ACTIVATIONS, PRECISIONS
from .network import Network
from .optim import SGD, Adam, from_config

try:  # scikit-learn >= 1.6 passes iprint only to SciPy versions that still take it
    from sklearn.utils.fixes import _get_additional_lbfgs_options_dict
except ImportError:  # pragma: no cover
    def _get_additional_lbfgs_options_dict(key, value):
        return {}

__all__ = ["MLPClassifier", "MLPRegressor"]

_STOCHASTIC_SOLVERS = ["sgd", "adam"]
SKLEARN_ACTIVATIONS = {"identity", "logistic", "tanh", "relu"}
# fastbp's others (Glorot init as relu/tanh); "sigmoid" is scikit-learn's "logistic"
EXTRA_ACTIVATIONS = set(ACTIVATIONS) - {ACTIVATION_ALIASES.get(a, a) for a in SKLEARN_ACTIVATIONS}
# out_activation_ -> (fastbp output, fastbp loss)
_OUTPUTS = {"softmax": ("softmax", "cross_entropy"), "logistic": ("sigmoid", "binary_cross_entropy"),
            "identity": ("identity", "mse"), "exp": ("exp", "poisson")}
_NONFINITE_MSG = ("Solver produced non-finite parameter weights. The input data may contain large values and "
                  "need to be preprocessed.")


def _loss_scales(out_activation, k):
    """(s, c) for an output layer of ``k`` units.

    s: fastbp's gradient / scikit-learn's gradient (the output-delta factor).
    c: scikit-learn's loss = c * fastbp's loss + (1 - c s) * L2, L2 = alpha/(2 sum w) sum W^2
    (fastbp's loss includes s * L2). Only squared error with k > 1 has 1 - c s != 0:
    scikit-learn reports the mean over the outputs but follows the gradient of their sum.
    """
    if out_activation == "softmax":
        return 1.0, 1.0
    if out_activation == "identity":
        return 2.0 / k, 0.5
    return 1.0 / k, float(k)            # logistic (sum of k binary log-losses), exp (Poisson deviance)


@contextlib.contextmanager
def _threads(n):
    if n is None:
        yield
        return
    before = get_thread_setting()   # a count, or "auto" (the thread policy): restored as it was
    set_num_threads(int(n))
    try:
        yield
    finally:
        set_num_threads(before)


def _dense(X, dtype):
    """Kernel-ready input: dense, C-contiguous, writeable, of the network's dtype."""
    if sp.issparse(X):
        X = X.toarray()
    return np.require(X, dtype=dtype, requirements=["C", "W"])


class _BaseMLP(BaseEstimator):
    """Shared machinery; use MLPClassifier or MLPRegressor."""

    _parameter_constraints: dict = {
        "hidden_layer_sizes": ["array-like", Interval(Integral, 1, None, closed="left")],
        "activation": [StrOptions(SKLEARN_ACTIVATIONS | EXTRA_ACTIVATIONS)],
        "solver": [StrOptions({"lbfgs", "sgd", "adam"})],
        "alpha": [Interval(Real, 0, None, closed="left")],
        "batch_size": [StrOptions({"auto"}), Interval(Integral, 1, None, closed="left")],
        "learning_rate": [StrOptions({"constant", "invscaling", "adaptive"})],
        "learning_rate_init": [Interval(Real, 0, None, closed="neither")],
        "power_t": [Interval(Real, 0, None, closed="left")],
        "max_iter": [Interval(Integral, 1, None, closed="left")],
        "shuffle": ["boolean"],
        "random_state": ["random_state"],
        "tol": [Interval(Real, 0, None, closed="left")],
        "verbose": ["verbose"],
        "warm_start": ["boolean"],
        "momentum": [Interval(Real, 0, 1, closed="both")],
        "nesterovs_momentum": ["boolean"],
        "early_stopping": ["boolean"],
        "validation_fraction": [Interval(Real, 0, 1, closed="left")],
        "beta_1": [Interval(Real, 0, 1, closed="left")],
        "beta_2": [Interval(Real, 0, 1, closed="left")],
        "epsilon": [Interval(Real, 0, None, closed="neither")],
        "n_iter_no_change": [Interval(Integral, 1, None, closed="left"), Options(Real, {np.inf})],
        "max_fun": [Interval(Integral, 1, None, closed="left")],
        # fastbp's own
        "dtype": [None, StrOptions({"float32", "float64"}), Options(type, {np.float32, np.float64})],
        "n_threads": [None, Interval(Integral, 1, None, closed="left")],
        "dropout": [Interval(Real, 0, 1, closed="left")],
        "precision": [StrOptions(set(PRECISIONS))],
    }

    # ---- network ---------------------------------------------------------------------------
    def _scales(self):
        return _loss_scales(self.out_activation_, self.n_outputs_)

    def _make_network(self, layer_units, dtype, seed):
        output, loss = _OUTPUTS[self.out_activation_]
        return Network(layer_units, activation=self.activation, output=output, loss=loss, dtype=dtype,
                       seed=seed, dropout=self.dropout, precision=self.precision)

    def _bind_views(self):
        layers = self._net.layers
        self._coef_views = [W for W, _ in layers]
        self._intercept_views = [b for _, b in layers]
        self.coefs_ = list(self._coef_views)
        self.intercepts_ = list(self._intercept_views)

    def _sync_params(self, dtype=None):
        """Make the network hold coefs_/intercepts_: copy entries the user rebound, or build
        the network from them when there is none of their shapes (attributes set by hand)."""
        net = getattr(self, "_net", None)
        coefs, intercepts = list(self.coefs_), list(self.intercepts_)
        sizes = [np.shape(coefs[0])[0]] + [np.shape(c)[1] for c in coefs]
        if net is None or net.layer_sizes != sizes:
            if dtype is None:
                dtype = np.result_type(*coefs, *intercepts)
                dtype = dtype if dtype in (np.float32, np.float64) else np.float64
            self._net = self._make_network(sizes, dtype, 0)
            self._net._l2 = float(self.alpha) * self._scales()[0]
            self._bind_views()
            self._best_params = self._net.params.copy()
            self._optimizer = None
        for a, v in zip(coefs + intercepts, self._coef_views + self._intercept_views):
            if a is not v:
                v[...] = a

    def _packed_index(self):
        """Indices into the flat buffer of scikit-learn's packed vector (every W, then every b)
        and a mask of its weight entries (the ones L2 applies to)."""
        pos = np.arange(self._net.params.size, dtype=np.int64)
        views = [v[:2] for v in self._net._views(pos)]
        idx = np.concatenate([W.ravel() for W, _ in views] + [b for _, b in views])
        n_w = sum(W.size for W, _ in views)
        return idx, np.arange(idx.size) < n_w

    def _configure_network(self):
        """Bring a kept network in line with the current parameters (warm start, partial_fit)."""
        net = self._net
        n_hidden = len(net.layer_sizes) - 2
        want_acts = [ACTIVATION_ALIASES.get(self.activation, self.activation)] * n_hidden
        want_drop = [float(self.dropout)] * n_hidden
        if want_acts != net.activations or want_drop != net.dropout or self.precision != net.precision:
            new = self._make_network(net.layer_sizes, net.dtype, net.seed)
            new.params[...] = net.params
            new._rng[...] = net._rng
            self._net = new
            self._bind_views()
            if getattr(self, "_optimizer", None) is not None:
                self._optimizer.rebind(new)
        self._net._l2 = float(self.alpha) * self._scales()[0]

    # ---- pickling: the network and optimizer are rebuilt from plain arrays ---------------------
    def __getstate__(self):
        state = dict(super().__getstate__())
        net = state.pop("_net", None)
        state.pop("_coef_views", None)
        state.pop("_intercept_views", None)
        if net is not None:
            state["_net_state"] = {"layer_sizes": list(net.layer_sizes), "dtype": net.dtype.name,
                                   "seed": net.seed, "rng": net._rng.copy()}
            # coefs_ / intercepts_ pickle as arrays (copies of the views)
            state["coefs_"] = [np.array(a) for a in state["coefs_"]]
            state["intercepts_"] = [np.array(a) for a in state["intercepts_"]]
        return state

    def __setstate__(self, state):
        state = dict(state)
        net_state = state.pop("_net_state", None)
        super().__setstate__(state)
        if net_state is not None:
            net = self._make_network(net_state["layer_sizes"], net_state["dtype"], net_state["seed"])
            net._rng[...] = net_state["rng"]
            coefs, intercepts = self.coefs_, self.intercepts_
            self._net = net
            self._bind_views()
            for v, a in zip(self._coef_views + self._intercept_views, list(coefs) + list(intercepts)):
                v[...] = a
            net._l2 = float(self.alpha) * self._scales()[0]

    # ---- fitting (the structure of scikit-learn's BaseMultilayerPerceptron) --------------------
    def _init_coef(self, fan_in, fan_out, dtype):
        # Glorot et al.'s uniform initialisation, scikit-learn's factor and draw order
        factor = 2.0 if self.activation == "logistic" else 6.0
        init_bound = np.sqrt(factor / (fan_in + fan_out))
        coef_init = self._random_state.uniform(-init_bound, init_bound, (fan_in, fan_out))
        intercept_init = self._random_state.uniform(-init_bound, init_bound, fan_out)
        return coef_init.astype(dtype, copy=False), intercept_init.astype(dtype, copy=False)

    def _initialize(self, y, layer_units, dtype):
        self.n_iter_ = 0
        self.t_ = 0
        self.n_outputs_ = y.shape[1]
        self.n_layers_ = len(layer_units)
        if not is_classifier(self):
            self.out_activation_ = "exp" if self.loss == "poisson" else "identity"
        elif self._label_binarizer.y_type_ == "multiclass":
            self.out_activation_ = "softmax"
        else:
            self.out_activation_ = "logistic"
        inits = [self._init_coef(layer_units[i], layer_units[i + 1], dtype) for i in range(self.n_layers_ - 1)]
        # dropout masks need a seed: drawn only when used, so that without dropout the random
        # stream (initialisation, split, shuffles) is exactly scikit-learn's
        seed = int(self._random_state.randint(np.iinfo(np.int32).max)) if self.dropout > 0 else 0
        self._net = self._make_network(layer_units, dtype, seed)
        for (W, b), (coef, intercept) in zip(self._net.layers, inits):
            W[...] = coef
            b[...] = intercept
        self._bind_views()
        self._best_params = self._net.params.copy()
        self._optimizer = None
        if self.solver in _STOCHASTIC_SOLVERS:
            self.loss_curve_ = []
            self._no_improvement_count = 0
            if self.early_stopping:
                self.validation_scores_ = []
                self.best_validation_score_ = -np.inf
                self.best_loss_ = None
            else:
                self.best_loss_ = np.inf
                self.validation_scores_ = None
                self.best_validation_score_ = None

    def _fit_dtype(self, first_pass):
        if not first_pass and getattr(self, "_net", None) is not None:
            return self._net.dtype.type
        if self.dtype is None:
            if self.precision == "bf16":
                return np.float32             # mixed precision is for float32 networks
            return (np.float64, np.float32)   # float32 stays float32; anything else becomes float64
        return np.dtype(self.dtype).type

    def _fit(self, X, y, sample_weight=None, incremental=False):
        hidden_layer_sizes = self.hidden_layer_sizes
        if not hasattr(hidden_layer_sizes, "__iter__"):
            hidden_layer_sizes = [hidden_layer_sizes]
        hidden_layer_sizes = list(hidden_layer_sizes)
        if np.any(np.array(hidden_layer_sizes) <= 0):
            raise ValueError("hidden_layer_sizes must be > 0, got %s." % hidden_layer_sizes)
        if self.dropout > 0 and self.solver == "lbfgs":
            raise ValueError("dropout needs a stochastic solver ('sgd' or 'adam'); lbfgs minimises a fixed "
                             "objective")
        first_pass = not hasattr(self, "coefs_") or (not self.warm_start and not incremental)

        X, y = self._validate_input(X, y, incremental, reset=first_pass, dtype=self._fit_dtype(first_pass))
        dtype = X.dtype
        X = _dense(X, dtype)
        n_samples, n_features = X.shape
        if sample_weight is not None:
            sample_weight = _check_sample_weight(sample_weight, X, dtype=dtype)
        if y.ndim == 1:
            y = y.reshape((-1, 1))
        n_outputs = y.shape[1]
        layer_units = [n_features] + hidden_layer_sizes + [n_outputs]
        if not first_pass:
            kept = [np.shape(self.coefs_[0])[0]] + [np.shape(c)[1] for c in self.coefs_]
            if layer_units != kept:
                raise ValueError(f"the fitted network has layer sizes {kept}, but hidden_layer_sizes and the data "
                                 f"ask for {layer_units}; fit without warm_start to start afresh")
        self.n_outputs_ = n_outputs

        self._random_state = check_random_state(self.random_state)
        if first_pass:
            self._initialize(y, layer_units, dtype)
        else:
            self._sync_params(dtype)
            self._bind_views()
        self._configure_network()

        with _threads(self.n_threads):
            if self.solver in _STOCHASTIC_SOLVERS:
                self._fit_stochastic(X, y, sample_weight, incremental)
            elif self.solver == "lbfgs":
                self._fit_lbfgs(X, y, sample_weight)

        if not np.isfinite(self._net.params).all():
            raise ValueError(_NONFINITE_MSG)
        return self

    def _targets(self, y):
        """(T, labels, use_labels) for the kernels from 2-D targets (binarised for classifiers)."""
        net = self._net
        if self.out_activation_ == "softmax":
            no_T = np.zeros((0, net.n_outputs), net.dtype)
            return no_T, np.ascontiguousarray(np.argmax(y, axis=1), dtype=np.int64), True
        return np.require(y, dtype=net.dtype, requirements=["C", "W"]), np.zeros(0, np.int64), False

    def _weights(self, sample_weight):
        if sample_weight is None:
            return np.zeros(0, self._net.dtype)   # the kernels' "unweighted"
        return np.require(sample_weight, dtype=self._net.dtype, requirements=["C", "W"])

    def _lbfgs_objective(self, X, y, sample_weight):
        """x -> (scikit-learn's loss, its gradient) over the packed vector, on fastbp's kernels."""
        net = self._net
        T, labels, use_labels = self._targets(y)
        sw = self._weights(sample_weight)
        idx, is_w = self._packed_index()
        s, c = self._scales()
        corr = 1.0 - c * s
        total_w = float(sw.sum()) if sw.shape[0] else float(X.shape[0])
        l2_coef = 0.5 * self.alpha / total_w if total_w > 0 else 0.0
        params, grads = net.params, net.grads

        def loss_grad(x):
            params[idx] = x
            loss = c * net._loss_grad(X, T, labels, use_labels, sw)
            if corr != 0.0:
                xw = x[is_w]
                loss += corr * l2_coef * float(xw @ xw)
            return loss, grads[idx].astype(np.float64) / s

        return loss_grad, idx

    def _loss_grad_lbfgs(self, packed_coef_inter, X, y, sample_weight=None, *unused):
        """scikit-learn's private objective: (loss, packed gradient) at ``packed_coef_inter``
        (every coefs_ entry, then every intercepts_ entry), leaving those parameters in place."""
        y = np.asarray(y)
        loss_grad, _ = self._lbfgs_objective(_dense(X, self._net.dtype), y.reshape(y.shape[0], -1), sample_weight)
        return loss_grad(np.asarray(packed_coef_inter, np.float64))

    def _fit_lbfgs(self, X, y, sample_weight):
        loss_grad, idx = self._lbfgs_objective(X, y, sample_weight)
        iprint = 1 if self.verbose is True or self.verbose >= 1 else -1
        try:
            opt_res = scipy.optimize.minimize(
                loss_grad, self._net.params[idx].astype(np.float64), method="L-BFGS-B", jac=True,
                options={"maxfun": self.max_fun, "maxiter": self.max_iter, "gtol": self.tol,
                         **_get_additional_lbfgs_options_dict("iprint", iprint)})
        finally:
            self._net._drop_workspace(X.shape[0])   # the full-batch workspace (the data's size) is not kept
        self.n_iter_ = _check_optimize_result("lbfgs", opt_res, self.max_iter)
        self.loss_ = float(opt_res.fun)
        self._net.params[idx] = opt_res.x

    def _new_optimizer(self):
        s = self._scales()[0]
        if self.solver == "sgd":
            nesterov = bool(self.nesterovs_momentum) and self.momentum > 0
            opt = SGD(lr=self.learning_rate_init / s, momentum=self.momentum, nesterov=nesterov)
        else:
            opt = Adam(lr=self.learning_rate_init, betas=(self.beta_1, self.beta_2), eps=self.epsilon * s,
                       eps_hat=True)
        return _Optimizer(opt, self.learning_rate_init, s, self.learning_rate if self.solver == "sgd" else None,
                          self.power_t)

    def _fit_stochastic(self, X, y, sample_weight, incremental):
        if not incremental or getattr(self, "_optimizer", None) is None:
            self._optimizer = self._new_optimizer()
        if self.early_stopping and incremental:
            raise ValueError("partial_fit does not support early_stopping=True")
        early_stopping = self.early_stopping
        if early_stopping:
            # don't stratify in multilabel classification (nor, as scikit-learn, multiclass)
            should_stratify = is_classifier(self) and self.n_outputs_ == 1
            stratify = y if should_stratify else None
            if sample_weight is None:
                X_train, X_val, y_train, y_val = train_test_split(
                    X, y, random_state=self._random_state, test_size=self.validation_fraction, stratify=stratify)
                sample_weight_train = sample_weight_val = None
            else:
                X_train, X_val, y_train, y_val, sample_weight_train, sample_weight_val = train_test_split(
                    X, y, sample_weight, random_state=self._random_state, test_size=self.validation_fraction,
                    stratify=stratify)
            if X_val.shape[0] < 2:
                raise ValueError("The validation set is too small. Increase 'validation_fraction' or the size of "
                                 "your dataset.")
            if is_classifier(self):
                y_val = self._label_binarizer.inverse_transform(y_val)
            X_train, X_val = _dense(X_train, X.dtype), _dense(X_val, X.dtype)
        else:
            X_train, y_train, sample_weight_train = X, y, sample_weight
            X_val = y_val = sample_weight_val = None

        n_samples = X_train.shape[0]
        sample_idx = np.arange(n_samples, dtype=np.int64)
        if self.batch_size == "auto":
            batch_size = min(200, n_samples)
        else:
            if self.batch_size > n_samples:
                warnings.warn("Got `batch_size` less than 1 or larger than sample size. It is going to be clipped")
            batch_size = int(np.clip(self.batch_size, 1, n_samples))

        epoch = _Epoch(self._net, self._optimizer.opt, X_train, *self._targets(y_train),
                       self._weights(sample_weight_train), batch_size)
        s, c = self._scales()
        l2_extra = 1.0 - c * s      # squared error with several outputs: see _loss_scales

        try:
            self.n_iter_ = 0
            for it in range(self.max_iter):
                if self.shuffle:
                    # sklearn.utils.shuffle(sample_idx, random_state) without its validation:
                    # the previous order permuted by a shuffle of 0..n-1
                    order = np.arange(n_samples)
                    self._random_state.shuffle(order)
                    sample_idx = sample_idx[order]
                loss = c * epoch.run(sample_idx, self.shuffle)
                if l2_extra != 0.0:   # scikit-learn's penalty is the kernels' (alpha s) divided by s
                    loss += l2_extra * epoch.penalty() / s
                self.n_iter_ += 1
                self.loss_ = loss
                self.t_ += n_samples
                self.loss_curve_.append(self.loss_)
                if self.verbose:
                    print("Iteration %d, loss = %.8f" % (self.n_iter_, self.loss_))

                self._update_no_improvement_count(early_stopping, X_val, y_val, sample_weight_val)
                self._optimizer.iteration_ends(self.t_)

                if self._no_improvement_count > self.n_iter_no_change:
                    if early_stopping:
                        msg = ("Validation score did not improve more than tol=%f for %d consecutive epochs."
                               % (self.tol, self.n_iter_no_change))
                    else:
                        msg = ("Training loss did not improve more than tol=%f for %d consecutive epochs."
                               % (self.tol, self.n_iter_no_change))
                    if self._optimizer.trigger_stopping(msg, self.verbose):
                        break
                    self._no_improvement_count = 0

                if incremental:
                    break
                if self.n_iter_ == self.max_iter:
                    warnings.warn("Stochastic Optimizer: Maximum iterations (%d) reached and the optimization "
                                  "hasn't converged yet." % self.max_iter, ConvergenceWarning)
        except KeyboardInterrupt:
            warnings.warn("Training interrupted by user.")

        if early_stopping:
            self._net.params[...] = self._best_params

    def _update_no_improvement_count(self, early_stopping, X, y, sample_weight):
        if early_stopping:
            val_score = self._score(X, y, sample_weight=sample_weight, check_input=False)
            self.validation_scores_.append(val_score)
            if self.verbose:
                print("Validation score: %f" % self.validation_scores_[-1])
            last_valid_score = self.validation_scores_[-1]
            if last_valid_score < (self.best_validation_score_ + self.tol):
                self._no_improvement_count += 1
            else:
                self._no_improvement_count = 0
            if last_valid_score > self.best_validation_score_:
                self.best_validation_score_ = last_valid_score
                self._best_params[...] = self._net.params
        else:
            if self.loss_curve_[-1] > self.best_loss_ - self.tol:
                self._no_improvement_count += 1
            else:
                self._no_improvement_count = 0
            if self.loss_curve_[-1] < self.best_loss_:
                self.best_loss_ = self.loss_curve_[-1]

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y, sample_weight=None):
        """Fit the model to data matrix X and target(s) y.

        Parameters
        ----------
        X : {array-like, sparse matrix} of shape (n_samples, n_features)
            The input data (sparse input is densified).
        y : array-like of shape (n_samples,) or (n_samples, n_outputs)
            The target values (class labels in classification, real numbers in regression).
        sample_weight : array-like of shape (n_samples,), default=None
            Sample weights.

        Returns
        -------
        self : object
            Returns a trained MLP model.
        """
        return self._fit(X, y, sample_weight=sample_weight, incremental=False)

    def _check_solver(self):
        if self.solver not in _STOCHASTIC_SOLVERS:
            raise AttributeError("partial_fit is only available for stochastic optimizers. %s is not stochastic."
                                 % self.solver)
        return True

    # ---- inference ---------------------------------------------------------------------------------
    def _forward_pass_fast(self, X, check_input=True):
        """The network's output layer, (n_samples, n_outputs)."""
        if check_input:
            X = validate_data(self, X, accept_sparse=["csr", "csc"], reset=False)
        self._sync_params()
        net = self._net
        in_dtype = X.dtype
        X = _dense(X, net.dtype)
        with _threads(self.n_threads):
            out = net._predict_checked(X)
        if in_dtype.kind == "f" and in_dtype.itemsize > net.dtype.itemsize:
            out = out.astype(in_dtype)   # as scikit-learn's float64 data times float32 weights
        return out

    def _score(self, X, y, sample_weight=None, check_input=True):
        y_pred = self._predict(X, check_input=check_input)
        if np.issubdtype(y_pred.dtype, np.floating) and not np.isfinite(y_pred).all():
            return np.nan
        return self._score_function(y, y_pred, sample_weight=sample_weight)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = True
        return tags

    def to_network(self):
        """The fitted model as a :class:`fastbp.Network` (a copy: training one leaves the other)."""
        check_is_fitted(self)
        from .export import estimator_to_network
        return estimator_to_network(self)

    @classmethod
    def from_network(cls, net, classes=None, **params):
        """A fitted estimator computing what ``net`` computes, for scikit-learn pipelines;
        ``classes`` names the classes of a classifier (default 0..k-1), ``params`` are the
        estimator's constructor arguments."""
        from .export import estimator_from_network
        est = estimator_from_network(net, classes=classes, **params)
        if not isinstance(est, cls):
            raise ValueError(f"a {net.output!r} network gives a {type(est).__name__}, not a {cls.__name__}")
        return est


class _Optimizer:
    """scikit-learn's SGDOptimizer / AdamOptimizer bookkeeping around a fastbp optimizer.

    ``learning_rate`` is on scikit-learn's scale; the fastbp optimizer ``opt`` runs at
    ``learning_rate / s`` (see the module docstring). ``lr_schedule`` is None for Adam.
    """

    def __init__(self, opt, learning_rate_init, s, lr_schedule, power_t):
        self.opt, self.s = opt, s
        self.learning_rate_init = float(learning_rate_init)
        self.lr_schedule, self.power_t = lr_schedule, power_t
        self.learning_rate = self.learning_rate_init

    def _set(self, lr):
        # scikit-learn's velocity is v = mu v - lr g, PyTorch's buffer b = mu b + g with the step
        # -lr b, so v = -lr b while the rate holds; when it changes, b *= old / new keeps every
        # following step equal to scikit-learn's (SGD's momentum_buffer)
        state = self.opt.state_arrays()
        if isinstance(self.opt, SGD) and self.opt.momentum != 0 and state is not None and lr != self.learning_rate:
            buf = state.momentum_buffer
            buf *= buf.dtype.type(self.learning_rate / lr)
        self.learning_rate = lr
        self.opt.lr = lr / self.s

    def iteration_ends(self, time_step):
        if self.lr_schedule == "invscaling":
            self._set(self.learning_rate_init / (time_step + 1) ** self.power_t)

    def trigger_stopping(self, msg, verbose):
        if self.lr_schedule != "adaptive":
            if verbose:
                print(msg + " Stopping.")
            return True
        if self.learning_rate <= 1e-6:
            if verbose:
                print(msg + " Learning rate too small. Stopping.")
            return True
        self._set(self.learning_rate / 5.0)
        if verbose:
            print(msg + " Setting learning rate to %f" % self.learning_rate)
        return False

    def rebind(self, net):
        """A copy of the fastbp optimizer's state, bound to ``net`` (a rebuilt network)."""
        old = self.opt
        self.opt = from_config(old.get_config())
        if old.state_arrays() is not None:
            self.opt._load_state(old.step_count, [np.array(a) for a in old.state_arrays()])
        self.opt._bind(net)

    def __getstate__(self):
        state = dict(self.__dict__)
        opt = state.pop("opt")
        arrays = opt.state_arrays()
        state["_opt"] = (opt.get_config(), opt.step_count, None if arrays is None else [a.copy() for a in arrays])
        return state

    def __setstate__(self, state):
        state = dict(state)
        cfg, step, arrays = state.pop("_opt")
        if cfg.get("name") == "Adam":
            # scikit-learn's placement of epsilon, also for estimators pickled before Adam had eps_hat
            cfg = dict(cfg, eps_hat=True)
        self.__dict__.update(state)
        self.opt = from_config(cfg)
        if arrays is not None:
            self.opt._load_state(step, [np.array(a) for a in arrays])   # bound to the network on first use


class _Epoch:
    """One epoch of mini-batch updates in scikit-learn's order, as one compiled call (the runner's)."""

    def __init__(self, net, opt, X, T, labels, use_labels, sw, batch_size):
        self.runner = Runner(net, opt, X, T, labels, use_labels, sw, batch_size, record_penalty=True)

    def run(self, perm, shuffle):
        """Train one epoch in the order ``perm``; the mean batch loss weighted by batch rows
        (fastbp's scale), or NaN if a step was refused (the weights then become NaN too)."""
        runner = self.runner
        runner.start_epoch()
        with runner:
            _, status = runner.run(0, runner.n_batches, perm, shuffle)
        if status != OK:
            # scikit-learn applies the non-finite step; its weights turn NaN and stay so
            runner.net.params[...] = np.nan
            return float("nan")
        return runner.mean_loss()

    def penalty(self):
        """The last epoch's L2 penalty (the kernels', included in its loss), see Runner.penalty."""
        return self.runner.penalty()


_DOC_COMMON = """
    Parameters
    ----------
    hidden_layer_sizes : array-like of shape(n_layers - 2,), default=(100,)
        The ith element represents the number of neurons in the ith hidden layer.
    activation : {'identity', 'logistic', 'tanh', 'relu'}, default='relu'
        Activation function for the hidden layers. fastbp also takes 'leaky_relu', 'elu',
        'softplus' and 'gelu' (Glorot initialisation with factor 6, as for 'relu').
    solver : {'lbfgs', 'sgd', 'adam'}, default='adam'
        'lbfgs' runs SciPy's L-BFGS-B on the full-batch loss and gradient; 'sgd' and
        'adam' train mini-batches, one compiled call per epoch.
    alpha : float, default=0.0001
        Strength of the L2 regularization term, divided by the (weighted) sample size of
        each batch when added to the loss.
    batch_size : int, default='auto'
        Size of minibatches for stochastic optimizers; 'auto' is ``min(200, n_samples)``.
    learning_rate : {'constant', 'invscaling', 'adaptive'}, default='constant'
        Learning rate schedule for 'sgd': constant; ``learning_rate_init / (t_ + 1) **
        power_t`` after each epoch; or divided by 5 each time ``n_iter_no_change``
        epochs fail to improve by ``tol`` (training stops once it is <= 1e-6).
    learning_rate_init : float, default=0.001
    power_t : float, default=0.5
    max_iter : int, default=200
        Epochs for 'sgd'/'adam', iterations for 'lbfgs'.
    shuffle : bool, default=True
    random_state : int, RandomState instance, default=None
        Initialisation, the early-stopping split and the shuffles, drawn exactly as
        scikit-learn draws them.
    tol : float, default=1e-4
    verbose : bool, default=False
    warm_start : bool, default=False
    momentum : float, default=0.9
    nesterovs_momentum : bool, default=True
    early_stopping : bool, default=False
        Hold out ``validation_fraction`` of the data (stratified for binary targets, as
        scikit-learn) and stop when its score has not improved by ``tol`` for
        ``n_iter_no_change`` epochs; the best weights are restored.
    validation_fraction : float, default=0.1
    beta_1 : float, default=0.9
    beta_2 : float, default=0.999
    epsilon : float, default=1e-8
    n_iter_no_change : int, default=10
    max_fun : int, default=15000
        Maximum number of loss evaluations for 'lbfgs'.
    dtype : {None, 'float32', 'float64'}, default=None
        fastbp only. Precision of the network: None keeps float32 input in float32 and
        trains everything else in float64 (scikit-learn's rule).
    n_threads : int, default=None
        fastbp only. Threads for fit and predict (BLAS and Numba); None keeps the current
        setting (``fastbp.set_num_threads``).
    dropout : float, default=0.0
        fastbp only. Inverted dropout on every hidden layer during 'sgd'/'adam' training.
    precision : {'fp32', 'bf16'}, default='fp32'
        fastbp only. 'bf16': bfloat16 matrix products with float32 accumulation and float32
        weights (``fastbp.Network``'s ``precision``); the network is then float32 (dtype None
        or 'float32'). Falls back to float32 with a RuntimeWarning where the machine cannot run
        it (``fastbp.bf16_support()``).

    Attributes
    ----------
    loss_, best_loss_, loss_curve_, validation_scores_, best_validation_score_, t_,
    coefs_, intercepts_, n_features_in_, feature_names_in_, n_iter_, n_layers_,
    n_outputs_, out_activation_ : as scikit-learn's. ``coefs_[i]`` (n_in, n_out) and
    ``intercepts_[i]`` are views into fastbp's flat parameter buffer.
"""


class MLPClassifier(ClassifierMixin, _BaseMLP):
    __doc__ = ("""Multi-layer perceptron classifier: scikit-learn's ``MLPClassifier`` on fastbp's kernels.

    Binary targets train one logistic output, multiclass a softmax, multilabel one
    logistic output per label; the loss is the log-loss plus ``alpha``'s L2 term.
""" + _DOC_COMMON + """    classes_ : ndarray or list of ndarray of shape (n_classes,)
        Class labels for each output.
    """)

    def __init__(self, hidden_layer_sizes=(100,), activation="relu", *, solver="adam", alpha=0.0001,
                 batch_size="auto", learning_rate="constant", learning_rate_init=0.001, power_t=0.5, max_iter=200,
                 shuffle=True, random_state=None, tol=1e-4, verbose=False, warm_start=False, momentum=0.9,
                 nesterovs_momentum=True, early_stopping=False, validation_fraction=0.1, beta_1=0.9, beta_2=0.999,
                 epsilon=1e-8, n_iter_no_change=10, max_fun=15000, dtype=None, n_threads=None, dropout=0.0,
                 precision="fp32"):
        self.hidden_layer_sizes = hidden_layer_sizes
        self.activation = activation
        self.solver = solver
        self.alpha = alpha
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.learning_rate_init = learning_rate_init
        self.power_t = power_t
        self.max_iter = max_iter
        self.shuffle = shuffle
        self.random_state = random_state
        self.tol = tol
        self.verbose = verbose
        self.warm_start = warm_start
        self.momentum = momentum
        self.nesterovs_momentum = nesterovs_momentum
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.beta_1 = beta_1
        self.beta_2 = beta_2
        self.epsilon = epsilon
        self.n_iter_no_change = n_iter_no_change
        self.max_fun = max_fun
        self.dtype = dtype
        self.n_threads = n_threads
        self.dropout = dropout
        self.precision = precision

    loss = "log_loss"   # scikit-learn's classifier has this fixed attribute (not a parameter)

    def _score_function(self, y, y_pred, sample_weight=None):
        return accuracy_score(y, y_pred, sample_weight=sample_weight)

    def _validate_input(self, X, y, incremental, reset, dtype):
        X, y = validate_data(self, X, y, accept_sparse=["csr", "csc"], multi_output=True, dtype=dtype, reset=reset)
        if y.ndim == 2 and y.shape[1] == 1:
            y = column_or_1d(y, warn=True)
        # see scikit-learn: (re)define classes_ on a fresh fit, else check compatibility
        if (not hasattr(self, "classes_")) or (not self.warm_start and not incremental):
            self._label_binarizer = LabelBinarizer()
            self._label_binarizer.fit(y)
            self.classes_ = self._label_binarizer.classes_
        else:
            classes = unique_labels(y)
            if self.warm_start:
                if set(classes) != set(self.classes_):
                    raise ValueError("warm_start can only be used where `y` has the same classes as in the "
                                     f"previous call to fit. Previously got {self.classes_}, `y` has {classes}")
            elif len(np.setdiff1d(classes, self.classes_, assume_unique=True)):
                raise ValueError(f"`y` has classes not in `self.classes_`. `self.classes_` has {self.classes_}. "
                                 f"'y' has {classes}.")
        y = self._label_binarizer.transform(y).astype(bool)
        return X, y

    def predict(self, X):
        """Predict using the multi-layer perceptron classifier.

        Returns
        -------
        y : ndarray, shape (n_samples,) or (n_samples, n_classes)
            The predicted classes.
        """
        check_is_fitted(self)
        return self._predict(X)

    def _predict(self, X, check_input=True):
        y_pred = self._forward_pass_fast(X, check_input=check_input)
        if self.n_outputs_ == 1:
            y_pred = y_pred.ravel()
        return self._label_binarizer.inverse_transform(y_pred)

    @available_if(lambda est: est._check_solver())
    @_fit_context(prefer_skip_nested_validation=True)
    def partial_fit(self, X, y, sample_weight=None, classes=None):
        """Update the model with a single iteration over the given data.

        ``classes`` (all the classes across calls) is required on the first call.
        """
        if _check_partial_fit_first_call(self, classes):
            self._label_binarizer = LabelBinarizer()
            if type_of_target(y).startswith("multilabel"):
                self._label_binarizer.fit(y)
            else:
                self._label_binarizer.fit(classes)
        return self._fit(X, y, sample_weight=sample_weight, incremental=True)

    def predict_log_proba(self, X):
        """Log of the probability estimates, ``log(predict_proba(X))``."""
        y_prob = self.predict_proba(X)
        return np.log(y_prob, out=y_prob)

    def predict_proba(self, X):
        """Probability estimates, (n_samples, n_classes), columns ordered as ``classes_``."""
        check_is_fitted(self)
        y_pred = self._forward_pass_fast(X)
        if self.n_outputs_ == 1:
            y_pred = y_pred.ravel()
        if y_pred.ndim == 1:
            return np.vstack([1 - y_pred, y_pred]).T
        return y_pred

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.classifier_tags.multi_label = True
        return tags


class MLPRegressor(RegressorMixin, _BaseMLP):
    __doc__ = ("""Multi-layer perceptron regressor: scikit-learn's ``MLPRegressor`` on fastbp's kernels.

    loss : {'squared_error', 'poisson'}, default='squared_error'
        Half squared error with an identity output, or half Poisson deviance with an
        exponential output (targets must be >= 0).
""" + _DOC_COMMON)

    _parameter_constraints: dict = {**_BaseMLP._parameter_constraints,
                                    "loss": [StrOptions({"squared_error", "poisson"})]}

    def __init__(self, loss="squared_error", hidden_layer_sizes=(100,), activation="relu", *, solver="adam",
                 alpha=0.0001, batch_size="auto", learning_rate="constant", learning_rate_init=0.001, power_t=0.5,
                 max_iter=200, shuffle=True, random_state=None, tol=1e-4, verbose=False, warm_start=False,
                 momentum=0.9, nesterovs_momentum=True, early_stopping=False, validation_fraction=0.1, beta_1=0.9,
                 beta_2=0.999, epsilon=1e-8, n_iter_no_change=10, max_fun=15000, dtype=None, n_threads=None,
                 dropout=0.0, precision="fp32"):
        self.loss = loss
        self.hidden_layer_sizes = hidden_layer_sizes
        self.activation = activation
        self.solver = solver
        self.alpha = alpha
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.learning_rate_init = learning_rate_init
        self.power_t = power_t
        self.max_iter = max_iter
        self.shuffle = shuffle
        self.random_state = random_state
        self.tol = tol
        self.verbose = verbose
        self.warm_start = warm_start
        self.momentum = momentum
        self.nesterovs_momentum = nesterovs_momentum
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.beta_1 = beta_1
        self.beta_2 = beta_2
        self.epsilon = epsilon
        self.n_iter_no_change = n_iter_no_change
        self.max_fun = max_fun
        self.dtype = dtype
        self.n_threads = n_threads
        self.dropout = dropout
        self.precision = precision

    def _score_function(self, y, y_pred, sample_weight=None):
        return r2_score(y, y_pred, sample_weight=sample_weight)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.positive_only = self.loss == "poisson"
        return tags

    def _validate_input(self, X, y, incremental, reset, dtype):
        X, y = validate_data(self, X, y, accept_sparse=["csr", "csc"], multi_output=True, y_numeric=True,
                             dtype=dtype, reset=reset)
        if y.ndim == 2 and y.shape[1] == 1:
            y = column_or_1d(y, warn=True)
        if self.loss == "poisson" and y.size and np.min(y) < 0:
            raise ValueError("Some value(s) of y are negative which is not allowed for Poisson regression.")
        return X, y

    def predict(self, X):
        """Predict using the multi-layer perceptron model: (n_samples,) or (n_samples, n_outputs)."""
        check_is_fitted(self)
        return self._predict(X)

    def _predict(self, X, check_input=True):
        y_pred = self._forward_pass_fast(X, check_input=check_input)
        if y_pred.shape[1] == 1:
            return y_pred.ravel()
        return y_pred

    @available_if(lambda est: est._check_solver())
    @_fit_context(prefer_skip_nested_validation=True)
    def partial_fit(self, X, y, sample_weight=None):
        """Update the model with a single iteration over the given data."""
        return self._fit(X, y, sample_weight=sample_weight, incremental=True)
