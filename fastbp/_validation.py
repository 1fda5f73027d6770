"""Checks at the edge: public methods validate once, the kernels check nothing."""

import math
import numbers

import numpy as np

from .errors import InputError
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
        return None, np.ascontiguousarray(y, dtype=np.int64), True
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
