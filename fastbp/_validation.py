"""Checks at the edge: public methods validate once, the kernels check nothing."""

import math
import numbers

import numpy as np

from .errors import InputError
from .kernels.activations import ACTIVATIONS, ALIASES
from .kernels.losses import DEFAULT_LOSS, PAIRS
from .kernels.norm import NORMS
from .kernels.losses import EXP_POISSON, SIGMOID_BCE, SOFTMAX_CE
from .kernels.optim import all_finite


def _as_array(a, name):
    if isinstance(a, np.ndarray):
        return a
    try:
        return np.asarray(a)
    except (ValueError, TypeError) as e:
        raise InputError(f"{name} could not be converted to an array: {e}") from None


def check_numeric(a, name):
    if a.dtype.kind not in "biuf":
        raise InputError(f"{name} must have a numeric dtype (bool, int or float), got {a.dtype}")


def finite(a):
    """True if every element is finite; no temporary array for float input."""
    if a.dtype.kind != "f":
        return True
    flat = a.reshape(-1) if a.flags.c_contiguous else np.ascontiguousarray(a).reshape(-1)
    return bool(all_finite(flat)) if a.dtype in (np.float32, np.float64) else bool(np.isfinite(flat).all())


def check_X(X, dtype, n_features, name="X"):
    """X -> C-contiguous, writeable (n, n_features) array of ``dtype``, all finite."""
    X = _as_array(X, name)
    check_numeric(X, name)
    if X.ndim != 2:
        hint = " (reshape a single feature with X.reshape(-1, 1))" if X.ndim == 1 else ""
        raise InputError(f"{name} must be 2-D (n_samples, n_features), got {X.ndim}-D shape {X.shape}{hint}")
    if X.shape[0] == 0:
        raise InputError(f"{name} is empty: it has 0 samples")
    if X.shape[1] != n_features:
        raise InputError(f"{name} has {X.shape[1]} features, but the network expects {n_features}")
    X = np.ascontiguousarray(X, dtype=dtype)
    if not X.flags.writeable:  # one compiled signature for all inputs
        X = X.copy()
    if not finite(X):
        raise InputError(f"{name} contains NaN or inf (after conversion to {np.dtype(dtype).name})")
    return X


def check_targets(y, loss_code, n_out, n, dtype, name="y", x_name="X"):
    """y -> (T, labels, use_labels) for the kernels; T (n, n_out) dtype or labels (n,) int64."""
    y = _as_array(y, name)
    check_numeric(y, name)
    if y.shape[:1] != (n,):
        raise InputError(f"{name} has {y.shape[0] if y.ndim else 0} rows but {x_name} has {n}: "
                         f"their lengths must match")
    if y.ndim == 2 and y.shape[1] == 1 and (loss_code == SOFTMAX_CE and n_out > 1):
        y = y[:, 0]
    if y.ndim > 2:
        raise InputError(f"{name} must be 1-D or 2-D, got shape {y.shape}")
    if y.dtype.kind == "f" and not finite(y):
        raise InputError(f"{name} contains NaN or inf")
    if loss_code == SOFTMAX_CE and y.ndim == 1:
        if y.dtype.kind == "f":
            if not np.all(y == np.round(y)):
                raise InputError(f"{name} holds class labels, which must be integers; got non-integer values")
        if y.dtype.kind == "b":
            y = y.astype(np.int64)
        lo, hi = y.min(), y.max()
        if lo < 0 or hi >= n_out:
            raise InputError(f"{name} has class labels in [{lo}, {hi}], but the network has {n_out} "
                             f"outputs, so labels must lie in [0, {n_out})")
        return None, np.require(y, np.int64, ["C", "W"]), True   # (writeable: a read-only array types apart)
    if y.ndim == 1:
        if n_out != 1:
            raise InputError(f"{name} is 1-D but the network has {n_out} outputs; give targets of shape (n, {n_out})")
        y = y.reshape(-1, 1)
    if y.shape[1] != n_out:
        raise InputError(f"{name} has {y.shape[1]} columns but the network has {n_out} outputs")
    if loss_code in (SOFTMAX_CE, SIGMOID_BCE) and (y.min() < 0 or y.max() > 1):
        what = "probabilities" if loss_code == SOFTMAX_CE else "binary targets"
        raise InputError(f"{name} holds {what}, which must lie in [0, 1]; got values in [{y.min()}, {y.max()}]")
    if loss_code == EXP_POISSON and y.min() < 0:
        raise InputError(f"{name} holds Poisson counts or rates, which must be >= 0; got a minimum of {y.min()}")
    T = np.ascontiguousarray(y, dtype=dtype)
    if not T.flags.writeable:
        T = T.copy()
    if not finite(T):
        raise InputError(f"{name} contains values that overflow {np.dtype(dtype).name}")
    return T, None, False


def check_int(v, name, lo):
    if isinstance(v, bool) or not isinstance(v, numbers.Integral) or v < lo:
        raise InputError(f"{name} must be an integer >= {lo}, got {v!r}")
    return int(v)


def check_positive_int(v, name):
    return check_int(v, name, 1)


def check_float(v, name, lo=0.0, hi=math.inf, lo_open=False, hi_open=False):
    """A real number (not a bool or a string), finite, in the interval [lo, hi] (ends open as asked)."""
    if isinstance(v, bool) or not isinstance(v, numbers.Real):
        raise InputError(f"{name} must be a number, got {v!r}")
    f = float(v)
    if not math.isfinite(f) or (f <= lo if lo_open else f < lo) or (f >= hi if hi_open else f > hi):
        raise InputError(f"{name} must be a finite number in {'(' if lo_open else '['}{lo}, {hi}"
                         f"{')' if hi_open else ']'}, got {v!r}")
    return f


def check_choice(v, name, choices):
    try:
        known = v in choices
    except TypeError:  # unhashable
        known = False
    if not known:
        raise InputError(f"unknown {name} {v!r}; choose one of {sorted(c for c in choices if c is not None)}")
    return v



def check_sample_weight(sw, n, dtype, name="sample_weight", x_name="X"):
    """sample_weight -> C-contiguous (n,) array of ``dtype``, finite, >= 0, not all zero."""
    sw = _as_array(sw, name)
    check_numeric(sw, name)
    if sw.ndim != 1 or sw.shape[0] != n:
        raise InputError(f"{name} must be 1-D with one weight per row of {x_name} ({n}), got shape {sw.shape}")
    sw = np.ascontiguousarray(sw, dtype=dtype)
    if not sw.flags.writeable:
        sw = sw.copy()
    if not finite(sw):
        raise InputError(f"{name} contains NaN or inf")
    if sw.min() < 0:
        raise InputError(f"{name} must be >= 0, got a minimum of {sw.min()}")
    if not sw.any():
        raise InputError(f"{name} is zero for every row, so there is nothing to fit")
    return sw


def class_weights_per_row(class_weight, loss_code, T, labels, use_labels, n_out):
    """Per-row weights (float64) from ``class_weight``: a dict {class: weight} or "balanced"
    (n / (n_classes * count), as scikit-learn). Classes are label indices for softmax outputs
    and 0/1 for a single sigmoid output."""
    if loss_code == SOFTMAX_CE:
        y = labels if use_labels else T.argmax(axis=1)
        n_classes = n_out
    elif loss_code == SIGMOID_BCE and n_out == 1:
        y = (T[:, 0] > 0.5).astype(np.int64)
        n_classes = 2
    else:
        raise InputError("class_weight needs a classifier (softmax output, or one sigmoid output); "
                         "use sample_weight for regression or multi-label targets")
    if isinstance(class_weight, str):
        if class_weight != "balanced":
            raise InputError(f"class_weight must be a dict or 'balanced', got {class_weight!r}")
        counts = np.bincount(y, minlength=n_classes).astype(np.float64)
        present = counts > 0
        table = np.zeros(n_classes)
        table[present] = y.shape[0] / (present.sum() * counts[present])
    elif isinstance(class_weight, dict):
        table = np.ones(n_classes)
        for c, w in class_weight.items():
            if isinstance(c, bool) or not isinstance(c, numbers.Integral) or not 0 <= c < n_classes:
                raise InputError(f"class_weight has the class {c!r}; classes are 0..{n_classes - 1}")
            if isinstance(w, bool) or not isinstance(w, numbers.Real) or not np.isfinite(w) or w < 0:
                raise InputError(f"class_weight[{c}] must be a finite number >= 0, got {w!r}")
            table[c] = float(w)
    else:
        raise InputError(f"class_weight must be a dict {{class: weight}} or 'balanced', got {class_weight!r}")
    return table[y]


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


def check_architecture(layer_sizes, activation="relu", output="softmax", loss=None, dtype=np.float32, seed=0,
                       dropout=0.0, init="auto", norm=None, norm_momentum=0.1, norm_eps=1e-5, precision="fp32"):
    """Network's arguments checked (InputError naming the problem) and normalised: a dict of
    its attributes (layer_sizes, activations, output, loss, _loss_code, dtype, seed, dropout,
    init, norm, norm_momentum, norm_eps, precision). Allocates nothing."""
    sizes = _as_list(layer_sizes)
    if (not sizes or len(sizes) < 2 or
            any(isinstance(s, bool) or not isinstance(s, numbers.Integral) or s < 1 for s in sizes)):
        raise InputError(f"layer_sizes must list at least two positive integers "
                         f"(inputs, ..., outputs), got {layer_sizes!r}")
    layer_sizes = [int(s) for s in sizes]
    n_hidden = len(sizes) - 2
    acts = [activation] * n_hidden if isinstance(activation, str) else _as_list(activation)
    if acts is None:
        raise InputError(f"activation must be a name or a list of names, got {activation!r}")
    if len(acts) != n_hidden:
        raise InputError(f"activation lists {len(acts)} names but the network has {n_hidden} hidden layers")
    activations = [check_choice(ALIASES.get(a, a) if isinstance(a, str) else a, "activation", ACTIVATIONS)
                   for a in acts]
    output = check_choice(output, "output", DEFAULT_LOSS)
    loss = loss if loss is not None else DEFAULT_LOSS[output]
    if not isinstance(loss, str) or (output, loss) not in PAIRS:
        valid = ", ".join(f"{o}+{l}" for o, l in PAIRS)
        raise InputError(f"loss {loss!r} does not pair with output {output!r}; valid pairs: {valid}")
    loss_code = PAIRS[(output, loss)]
    dtype = _dtype(dtype)
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
        raise InputError(f"seed must be a non-negative integer, got {seed!r}")
    seed = int(seed)
    drops = [dropout] * n_hidden if isinstance(dropout, numbers.Real) else _as_list(dropout)
    if (drops is None or len(drops) != n_hidden
            or not all(isinstance(p, numbers.Real) and 0.0 <= p < 1.0 for p in drops)):
        raise InputError(f"dropout must be a probability in [0, 1) or one per hidden layer "
                         f"({n_hidden}), got {dropout!r}")
    dropout = [float(p) for p in drops]
    from .names import INITS, PRECISION_ALIASES, PRECISIONS   # (names imports optim, which imports this module)
    init = check_choice(init, "init", set(INITS))
    norms = [norm] * n_hidden if norm is None or isinstance(norm, str) else _as_list(norm)
    if norms is None or len(norms) != n_hidden:
        raise InputError(f"norm must be None, 'batch', 'layer' or one per hidden layer ({n_hidden}), "
                         f"got {norm!r}")
    norm = [None if check_choice(v, "norm", NORMS) in (None, "none") else v for v in norms]
    norm_momentum = check_float(norm_momentum, "norm_momentum", 0.0, 1.0)
    norm_eps = check_float(norm_eps, "norm_eps", lo_open=True)
    precision = check_choice(PRECISION_ALIASES.get(precision, precision) if isinstance(precision, str) else precision,
                             "precision", PRECISIONS)
    if precision == "bf16" and dtype != np.float32:
        raise InputError(f"precision='bf16' is mixed precision for float32 networks, got dtype {dtype.name}")
    return {"layer_sizes": layer_sizes, "activations": activations, "output": output, "loss": loss,
            "_loss_code": loss_code, "dtype": dtype, "seed": seed, "dropout": dropout, "init": init, "norm": norm,
            "norm_momentum": norm_momentum, "norm_eps": norm_eps, "precision": precision}


def check_weights(weights, targets, dtype):
    """``weights`` for Network.set_weights checked against ``targets`` (the network's views,
    per layer (W, b[, gamma, beta[, running_mean, running_var]])): a list of tuples of arrays."""
    pairs_msg = ("weights must be a list of (W, b) pairs, as get_weights() returns (layers with a norm "
                 "add gamma, beta, and for batch norm running_mean, running_var)")
    try:
        weights = [tuple(np.asarray(a) for a in w) for w in weights]
    except (TypeError, ValueError):
        raise InputError(pairs_msg) from None
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
            if a.size and np.abs(a).max() > np.finfo(dtype).max:
                raise InputError(f"layer {l}: {name} has values that overflow the network's {dtype.name}")
        if len(w) == 6 and np.any(w[5] < 0):
            raise InputError(f"layer {l}: running_var must be >= 0")
    return weights


def with_class_weights(sw, class_weight, loss_code, T, labels, use_labels, n_out, dtype):
    """The per-row weights ``sw`` (or none: an empty array) times ``class_weight``'s per row."""
    cw = class_weights_per_row(class_weight, loss_code, T, labels, use_labels, n_out)
    with np.errstate(over="ignore"):
        sw = (cw if sw.shape[0] == 0 else cw * sw).astype(dtype)
    if not np.all(np.isfinite(sw)):
        raise InputError(f"class_weight (with sample_weight) gives weights that overflow {dtype.name}")
    if not sw.any():
        raise InputError("class_weight (with sample_weight) gives every row the weight 0")
    return sw
