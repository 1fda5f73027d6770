"""Bad input: every case raises InputError (a ValueError) with a clear message and leaves
the network, its optimizer and the optimizer's state exactly as they were.

Also the accepting side (any numeric dtype, any memory layout), an optimizer refusing
a second network, and divergence keeping the last finite weights.
"""

import contextlib

import numpy as np
import pytest

import fastbp as fb
from fastbp.schedules import CosineAnnealing, ExponentialDecay, ReduceLROnPlateau, Schedule

# converting 1e39 to float32 warns before the InputError it leads to
pytestmark = pytest.mark.filterwarnings("ignore:overflow encountered in cast:RuntimeWarning")

N, D, K = 8, 3, 3


def data(seed=0, n=N, d=D, k=K):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d)).astype(np.float32)
    y = np.arange(n) % k
    return X, y


def clf(dtype=np.float32, trained=True):
    """A small softmax classifier; trained=True gives it an Adam with state after one step."""
    net = fb.Network([D, 5, K], activation="tanh", dtype=dtype, seed=1)
    if trained:
        X, y = data()
        net.train_step(X, y, fb.Adam(lr=1e-2))
    return net


def reg(trained=True):
    net = fb.Network([D, 4, 2], activation="tanh", output="identity", seed=1)
    if trained:
        X, _ = data()
        net.train_step(X, X[:, :2], fb.SGD(lr=1e-2, momentum=0.9))
    return net


def binary(trained=True):
    net = fb.Network([D, 4, 2], activation="tanh", output="sigmoid", seed=1)
    if trained:
        X, _ = data()
        net.train_step(X, (X[:, :2] > 0).astype(np.float32), fb.RMSprop())
    return net


@contextlib.contextmanager
def unchanged(net, *fresh_optimizers):
    """Asserts the block leaves weights, optimizer, optimizer state/step and history untouched,
    and that optimizers passed to the failing call were never bound or stepped."""
    params = net.params.copy()
    opt, history = net.optimizer, net.history
    step = opt.step_count if opt is not None else None
    state = [a.copy() for a in opt.state_arrays()] if opt is not None else None
    yield
    assert np.array_equal(net.params, params), "weights changed before the error"
    assert net.optimizer is opt
    assert net.history is history
    if opt is not None:
        assert opt.step_count == step
        for a, b in zip(opt.state_arrays(), state):
            assert np.array_equal(a, b)
    for o in fresh_optimizers:
        assert o.state_arrays() is None and o.step_count == 0 and o._owner is None


XY_METHODS = {
    "fit": lambda net, X, y: net.fit(X, y, epochs=1, batch_size=4),
    "train_step": lambda net, X, y: net.train_step(X, y),
    "loss_and_gradients": lambda net, X, y: net.loss_and_gradients(X, y),
    "evaluate": lambda net, X, y: net.evaluate(X, y),
}
X_METHODS = {**XY_METHODS,
             "predict": lambda net, X, y: net.predict(X),
             "predict_proba": lambda net, X, y: net.predict_proba(X)}


def _with(X, i, j, v):
    X = X.copy()
    X[i, j] = v
    return X


X0, Y0 = data()
X64 = X0.astype(np.float64)

BAD_X = {
    "nan": (_with(X0, 2, 1, np.nan), r"X contains NaN or inf"),
    "+inf": (_with(X0, 0, 0, np.inf), r"X contains NaN or inf"),
    "-inf": (_with(X0, 7, 2, -np.inf), r"X contains NaN or inf"),
    "float64 overflowing float32": (_with(X64, 3, 0, 1e39), r"NaN or inf \(after conversion to float32\)"),
    "too many features": (np.zeros((N, D + 1), np.float32), r"X has 4 features, but the network expects 3"),
    "too few features": (np.zeros((N, D - 1), np.float32), r"X has 2 features, but the network expects 3"),
    "empty": (np.zeros((0, D), np.float32), r"X is empty: it has 0 samples"),
    "1-D": (X0[0], r"X must be 2-D .*got 1-D shape \(3,\).*reshape"),
    "3-D": (X0[:, :, None], r"X must be 2-D .*got 3-D shape \(8, 3, 1\)"),
    "0-D": (np.float32(1.0), r"X must be 2-D .*got 0-D"),
    "strings": (X0.astype(str), r"X must have a numeric dtype .*got <U"),
    "object strings": (X0.astype(str).astype(object), r"X must have a numeric dtype .*got object"),
    "complex": (X0.astype(np.complex64), r"X must have a numeric dtype .*got complex64"),
    "datetime": (np.zeros((N, D), "datetime64[s]"), r"X must have a numeric dtype .*got datetime64"),
    "None": (None, r"X must have a numeric dtype"),
    "ragged list": ([[1.0, 2.0, 3.0], [1.0, 2.0]], r"X could not be converted to an array"),
}


@pytest.mark.parametrize("method", list(X_METHODS))
@pytest.mark.parametrize("case", list(BAD_X))
def test_bad_X(case, method):
    X, match = BAD_X[case]
    net = clf()
    with unchanged(net), pytest.raises(fb.InputError, match=match) as exc:
        X_METHODS[method](net, X, Y0)
    assert isinstance(exc.value, ValueError)


def _labels(*vals):
    y = np.array(Y0, dtype=np.float64)
    y[:len(vals)] = vals
    return y


P0 = np.eye(K, dtype=np.float32)[Y0]  # one-hot probability targets

BAD_Y_CLF = {
    "negative label": (_labels(-1).astype(np.int64), r"class labels in \[-1, 2\].*must lie in \[0, 3\)"),
    "label == k": (_labels(3).astype(np.int64), r"class labels in \[0, 3\].*must lie in \[0, 3\)"),
    "huge label": (_labels(1e12).astype(np.int64), r"must lie in \[0, 3\)"),
    "huge unsigned label": (np.full(N, 2 ** 63 + 5, np.uint64), r"must lie in \[0, 3\)"),
    "non-integer float label": (_labels(0.5), r"class labels, which must be integers"),
    "nan label": (_labels(np.nan), r"y contains NaN or inf"),
    "inf label": (_labels(np.inf), r"y contains NaN or inf"),
    "column labels out of range": (_labels(5).astype(np.int64)[:, None], r"must lie in \[0, 3\)"),
    "too few rows": (Y0[:-1], r"y has 7 rows but X has 8"),
    "too many rows": (np.r_[Y0, 0], r"y has 9 rows but X has 8"),
    "scalar": (np.int64(1), r"y has 0 rows but X has 8"),
    "empty": (np.zeros(0, np.int64), r"y has 0 rows but X has 8"),
    "strings": (Y0.astype(str), r"y must have a numeric dtype"),
    "object strings": (np.array(["a", "b", "c", "a", "b", "c", "a", "b"], object), r"y must have a numeric dtype"),
    "complex": (Y0.astype(np.complex128), r"y must have a numeric dtype .*complex128"),
    "None": (None, r"y must have a numeric dtype"),
    "probabilities > 1": (_with(P0, 1, 1, 1.5), r"y holds probabilities, which must lie in \[0, 1\]"),
    "probabilities < 0": (_with(P0, 1, 2, -0.25), r"y holds probabilities, which must lie in \[0, 1\]"),
    "probabilities nan": (_with(P0, 4, 0, np.nan), r"y contains NaN or inf"),
    "probabilities inf": (_with(P0, 4, 0, np.inf), r"y contains NaN or inf"),
    "too many target columns": (np.zeros((N, K + 1), np.float32), r"y has 4 columns but the network has 3 outputs"),
    "too few target columns": (np.zeros((N, K - 1), np.float32), r"y has 2 columns but the network has 3 outputs"),
    "3-D targets": (P0[:, :, None], r"y must be 1-D or 2-D"),
}

T0 = X0[:, :2].copy()
BAD_Y_REG = {
    "nan": (_with(T0, 0, 1, np.nan), r"y contains NaN or inf"),
    "+inf": (_with(T0, 3, 0, np.inf), r"y contains NaN or inf"),
    "-inf": (_with(T0, 3, 1, -np.inf), r"y contains NaN or inf"),
    "float64 overflowing float32": (_with(T0.astype(np.float64), 2, 0, -1e39), r"overflow float32"),
    "too many target columns": (np.zeros((N, 3), np.float32), r"y has 3 columns but the network has 2 outputs"),
    "1-D for 2 outputs": (T0[:, 0], r"y is 1-D but the network has 2 outputs"),
    "length mismatch": (T0[:5], r"y has 5 rows but X has 8"),
    "strings": (T0.astype(str), r"y must have a numeric dtype"),
    "complex": (T0.astype(np.complex64), r"y must have a numeric dtype"),
}

B0 = (X0[:, :2] > 0).astype(np.float32)
BAD_Y_BIN = {
    "target 2": (_with(B0, 0, 0, 2.0), r"y holds binary targets, which must lie in \[0, 1\]"),
    "target -1": (_with(B0, 0, 1, -1.0).astype(np.int64), r"y holds binary targets, which must lie in \[0, 1\]"),
    "nan": (_with(B0, 5, 1, np.nan), r"y contains NaN or inf"),
    "inf": (_with(B0, 5, 1, np.inf), r"y contains NaN or inf"),
    "too few target columns": (B0[:, :1], r"y has 1 columns but the network has 2 outputs"),
    "1-D for 2 outputs": (B0[:, 0], r"y is 1-D but the network has 2 outputs"),
}

Y_CASES = ([("clf", c) for c in BAD_Y_CLF] + [("reg", c) for c in BAD_Y_REG] +
           [("bin", c) for c in BAD_Y_BIN])
NETS = {"clf": (clf, BAD_Y_CLF), "reg": (reg, BAD_Y_REG), "bin": (binary, BAD_Y_BIN)}


@pytest.mark.parametrize("method", list(XY_METHODS))
@pytest.mark.parametrize("kind,case", Y_CASES, ids=[f"{k}-{c}" for k, c in Y_CASES])
def test_bad_y(kind, case, method):
    make, cases = NETS[kind]
    y, match = cases[case]
    net = make()
    with unchanged(net), pytest.raises(fb.InputError, match=match):
        XY_METHODS[method](net, X0, y)


@pytest.mark.parametrize("value", [0, -1, 2.5, 4.0, True, False, "4", None, np.float64(4)])
def test_bad_batch_size(value):
    net, opt = clf(), fb.Adam()
    with unchanged(net, opt), pytest.raises(fb.InputError, match=r"batch_size must be an integer >= 1"):
        net.fit(X0, Y0, batch_size=value, optimizer=opt)


@pytest.mark.parametrize("value", [0, -3, 1.5, 2.0, True, "2", None])
def test_bad_epochs(value):
    net, opt = clf(), fb.Adam()
    with unchanged(net, opt), pytest.raises(fb.InputError, match=r"epochs must be an integer >= 1"):
        net.fit(X0, Y0, epochs=value, optimizer=opt)


def test_numpy_integer_epochs_and_batch_size_are_accepted():
    net = clf(trained=False)
    h = net.fit(X0, Y0, epochs=np.int64(2), batch_size=np.int32(4))
    assert len(h.epoch) == 2


@pytest.mark.parametrize("opt", ["adagrad", "", 5, None.__class__, object(), fb.Network])
@pytest.mark.parametrize("method", ["fit", "train_step"])
def test_unknown_optimizer(opt, method):
    net = clf()
    with unchanged(net), pytest.raises(fb.InputError, match=r"unknown optimizer .*'adam', 'adamw', 'rmsprop', 'sgd'"):
        if method == "fit":
            net.fit(X0, Y0, optimizer=opt)
        else:
            net.train_step(X0, Y0, optimizer=opt)


@pytest.mark.parametrize("make,match", [
    (lambda: fb.SGD(lr=-0.1), r"lr must be a finite number in \[0.0, inf\], got -0.1"),
    (lambda: fb.Adam(lr=-1e-3), r"lr must be a finite number"),
    (lambda: fb.AdamW(lr=float("nan")), r"lr must be a finite number"),
    (lambda: fb.RMSprop(lr=float("inf")), r"lr must be a finite number"),
    (lambda: fb.Adam(lr="fast"), r"lr must be a number, got 'fast'"),
    (lambda: fb.Adam(lr=None), r"lr must be a number, got None"),
    (lambda: fb.Adam(betas=(1.0, 0.999)), r"betas\[0\] must be a finite number in \[0.0, 1.0\), got 1.0"),
    (lambda: fb.Adam(betas=(0.9, 1.0)), r"betas\[1\] must be a finite number in \[0.0, 1.0\)"),
    (lambda: fb.Adam(betas=(-0.1, 0.999)), r"betas\[0\] must be a finite number"),
    (lambda: fb.AdamW(betas=(0.9, 1.5)), r"betas\[1\] must be a finite number"),
    (lambda: fb.Adam(betas=0.9), r"betas must be a pair"),
    (lambda: fb.Adam(betas=(0.9, 0.99, 0.999)), r"betas must be a pair"),
    (lambda: fb.Adam(eps=-1e-8), r"eps must be a finite number"),
    (lambda: fb.Adam(weight_decay=-0.01), r"weight_decay must be a finite number"),
    (lambda: fb.SGD(momentum=-0.9), r"momentum must be a finite number"),
    (lambda: fb.SGD(lr=0.1, dampening=1.5), r"dampening must be a finite number in \[0.0, 1.0\]"),
    (lambda: fb.SGD(lr=0.1, nesterov=True), r"Nesterov momentum requires momentum > 0"),
    (lambda: fb.SGD(lr=0.1, momentum=0.9, dampening=0.1, nesterov=True), r"Nesterov .* dampening = 0"),
    (lambda: fb.RMSprop(alpha=1.01), r"alpha must be a finite number in \[0.0, 1.0\]"),
    (lambda: fb.RMSprop(momentum=-1), r"momentum must be a finite number"),
], ids=lambda v: v if isinstance(v, str) else "")
def test_bad_optimizer_hyperparameters(make, match):
    with pytest.raises(fb.InputError, match=match):
        make()


# ---- validation_data: checked before the first step --------------------------------------------
@pytest.mark.parametrize("vd", [(X0,), (X0, Y0, Y0, Y0), 42, [X0]], ids=["1-tuple", "4-tuple", "int", "1-list"])
def test_validation_data_not_a_pair(vd):
    net, opt = clf(), fb.Adam()
    with unchanged(net, opt), pytest.raises(fb.InputError, match=r"validation_data must be a pair \(X_val, y_val\)"):
        net.fit(X0, Y0, epochs=2, validation_data=vd, optimizer=opt)


BAD_VAL = {
    "X nan": ((_with(X0, 0, 0, np.nan), Y0), r"contains NaN or inf"),
    "X wrong features": ((X0[:, :2], Y0), r"has 2 features, but the network expects 3"),
    "X empty": ((X0[:0], Y0[:0]), r"is empty"),
    "X 1-D": ((X0[0], Y0[:1]), r"must be 2-D"),
    "X strings": ((X0.astype(str), Y0), r"numeric dtype"),
    "y label too large": ((X0, _labels(7).astype(int)), r"must lie in \[0, 3\)"),
    "y non-integer": ((X0, _labels(1.25)), r"must be integers"),
    "length mismatch": ((X0, Y0[:3]), r"validation y has 3 rows but validation X has 8"),
    "y None": ((X0, None), r"numeric dtype"),
}


@pytest.mark.parametrize("case", list(BAD_VAL))
@pytest.mark.parametrize("which_opt", ["existing", "fresh"])
def test_bad_validation_data_is_rejected_before_training(case, which_opt):
    vd, match = BAD_VAL[case]
    net = clf()
    fresh = fb.SGD(lr=0.5) if which_opt == "fresh" else None
    with unchanged(net, *([fresh] if fresh else [])), pytest.raises(fb.InputError, match=match):
        net.fit(X0, Y0, epochs=3, batch_size=2, validation_data=vd, optimizer=fresh)


@pytest.mark.parametrize("case", ["X wrong features", "y label too large", "X nan"])
def test_bad_validation_data_message_names_validation_data(case):
    vd, _ = BAD_VAL[case]
    net = clf()
    with unchanged(net), pytest.raises(fb.InputError, match=r"validation|X_val|y_val"):
        net.fit(X0, Y0, validation_data=vd)


# ---- constructor arguments ----------------------------------------------------------------------------
BAD_CTOR = {
    "one layer": (dict(layer_sizes=[3]), r"layer_sizes must list at least two positive integers"),
    "no layers": (dict(layer_sizes=[]), r"layer_sizes must list at least two"),
    "zero width": (dict(layer_sizes=[3, 0, 2]), r"layer_sizes must list at least two positive integers"),
    "negative width": (dict(layer_sizes=[3, -4, 2]), r"layer_sizes"),
    "float width": (dict(layer_sizes=[3, 4.0, 2]), r"layer_sizes"),
    "bool width": (dict(layer_sizes=[3, True, 2]), r"layer_sizes"),
    "string layer_sizes": (dict(layer_sizes="32"), r"layer_sizes"),
    "string width": (dict(layer_sizes=[3, "4", 2]), r"layer_sizes"),
    "unknown activation": (dict(activation="swish"), r"unknown activation 'swish'; choose one of"),
    "unknown activation in list": (dict(layer_sizes=[3, 4, 4, 2], activation=["relu", "Relu"]),
                                   r"unknown activation 'Relu'"),
    "activation list too short": (dict(layer_sizes=[3, 4, 4, 2], activation=["relu"]),
                                  r"activation lists 1 names but the network has 2 hidden layers"),
    "unknown output": (dict(output="softplus"), r"unknown output 'softplus'"),
    "unknown loss": (dict(loss="hinge"), r"loss 'hinge' does not pair with output 'softmax'; valid pairs"),
    "softmax + mse": (dict(output="softmax", loss="mse"), r"loss 'mse' does not pair with output 'softmax'"),
    "identity + cross_entropy": (dict(output="identity", loss="cross_entropy"), r"does not pair with output 'identity'"),
    "sigmoid + cross_entropy": (dict(output="sigmoid", loss="cross_entropy"), r"does not pair with output 'sigmoid'"),
    "softmax + huber": (dict(output="softmax", loss="huber"), r"does not pair"),
    "dtype float16": (dict(dtype=np.float16), r"dtype must be float32 or float64, got float16"),
    "dtype int32": (dict(dtype=np.int32), r"dtype must be float32 or float64, got int32"),
    "dtype complex": (dict(dtype=np.complex128), r"dtype must be float32 or float64"),
    "dtype unknown name": (dict(dtype="float99"), r"dtype must be float32 or float64, got 'float99'"),
    "seed negative": (dict(seed=-1), r"seed must be a non-negative integer, got -1"),
    "seed float": (dict(seed=1.5), r"seed must be a non-negative integer"),
    "seed bool": (dict(seed=True), r"seed must be a non-negative integer"),
    "seed string": (dict(seed="0"), r"seed must be a non-negative integer"),
    "seed None": (dict(seed=None), r"seed must be a non-negative integer"),
    "dropout 1": (dict(dropout=1.0), r"dropout must be a probability in \[0, 1\)"),
    "dropout negative": (dict(dropout=-0.1), r"dropout must be a probability"),
    "dropout nan": (dict(dropout=float("nan")), r"dropout must be a probability"),
    "dropout list too short": (dict(layer_sizes=[3, 4, 4, 2], dropout=[0.1]), r"one per hidden layer \(2\)"),
    "dropout list bad entry": (dict(layer_sizes=[3, 4, 4, 2], dropout=[0.1, 1.2]), r"dropout must be a probability"),
    "dropout string": (dict(dropout="0.5"), r"dropout must be a probability"),
    "unknown init": (dict(init="xavier"), r"unknown init 'xavier'"),
}


@pytest.mark.parametrize("case", list(BAD_CTOR))
def test_bad_constructor_arguments(case):
    kwargs, match = BAD_CTOR[case]
    kwargs = {"layer_sizes": [3, 4, 2], **kwargs}
    with pytest.raises(fb.InputError, match=match):
        fb.Network(**kwargs)


@pytest.mark.parametrize("kwargs", [
    dict(layer_sizes=None), dict(layer_sizes=5), dict(layer_sizes=[3, 4, 2], activation=None),
    dict(layer_sizes=[3, 4, 2], activation=5), dict(layer_sizes=[3, 4, 2], dropout=None),
    dict(layer_sizes=[3, 4, 2], output=["softmax"]), dict(layer_sizes=[3, 4, 2], loss=["mse"]),
    dict(layer_sizes=[3, 4, 2], activation=[["relu"]]),
], ids=["layer_sizes=None", "layer_sizes=5", "activation=None", "activation=5", "dropout=None",
        "output=list", "loss=list", "activation=nested-list"])
def test_non_iterable_or_unhashable_constructor_arguments_raise_input_error(kwargs):
    with pytest.raises(fb.InputError, match=r"layer_sizes|activation|dropout|output|loss"):
        fb.Network(**kwargs)


# ---- set_weights / set_num_threads -----------------------------------------------------------------
def _weights_with(fn):
    w = clf(trained=False).get_weights()
    return fn([list(p) for p in w])


def _set(w, l, i, v):
    w[l][i] = v
    return w


BAD_WEIGHTS = {
    "too few layers": (lambda w: w[:1], r"got 1 \(W, b\) pairs for a network of 2 layers"),
    "too many layers": (lambda w: w + w[:1], r"got 3 \(W, b\) pairs for a network of 2 layers"),
    "transposed W": (lambda w: _set(w, 0, 0, w[0][0].T), r"layer 0: expected W \(3, 5\) and b \(5,\), got \(5, 3\)"),
    "W wrong shape": (lambda w: _set(w, 1, 0, np.zeros((5, 4))), r"layer 1: expected W \(5, 3\)"),
    "b as column": (lambda w: _set(w, 1, 1, w[1][1][:, None]), r"layer 1: .*got \(5, 3\) and \(3, 1\)"),
    "NaN in W of last layer": (lambda w: _set(w, 1, 0, _with(w[1][0], 0, 0, np.nan)), r"layer 1: W must be numeric and finite"),
    "inf in b": (lambda w: _set(w, 0, 1, np.full(5, np.inf)), r"layer 0: b must be numeric and finite"),
    "string W": (lambda w: _set(w, 0, 0, w[0][0].astype(str)), r"layer 0: W must be numeric"),
    "not pairs": (lambda w: [w[0][0], w[1][0]], r"list of \(W, b\) pairs"),
    "triples": (lambda w: [(W, b, b) for W, b in w], r"list of \(W, b\) pairs"),
    "None": (lambda w: None, r"list of \(W, b\) pairs"),
}


@pytest.mark.parametrize("case", list(BAD_WEIGHTS))
def test_bad_set_weights_changes_nothing(case):
    fn, match = BAD_WEIGHTS[case]
    w = _weights_with(lambda w: w)
    for W, b in w:  # a valid, different first layer: must not be written when a later layer is bad
        W += 1.0
    net = clf()
    with unchanged(net), pytest.raises(fb.InputError, match=match):
        net.set_weights(fn(w))


def test_set_weights_accepts_integer_arrays_and_lists():
    net = clf(trained=False)
    w = [(np.ones((3, 5), np.int64), [1, 2, 3, 4, 5]), (np.zeros((5, 3), bool), np.arange(3))]
    net.set_weights(w)
    assert np.array_equal(net.get_weights()[0][1], np.arange(1, 6, dtype=np.float32))


@pytest.mark.parametrize("n", [0, -1, 1.5, True, "2", None])
def test_set_num_threads_rejects_bad_counts(n):
    before = fb.get_num_threads()
    with pytest.raises(fb.InputError, match=r"number of threads must be an integer >= 1"):
        fb.set_num_threads(n)
    assert fb.get_num_threads() == before


# ---- the accepting side: any numeric dtype and memory layout -----------------------------------------
def _results(net, X, y, T=None):
    """Everything the public methods compute for X (and y), on a fresh copy of ``net``."""
    twin = fb.Network([D, 5, K], activation="tanh", dtype=net.dtype, seed=1)
    out = [twin.predict_proba(X), twin.predict(X), twin.evaluate(X, y)["loss"]]
    loss, grads = twin.loss_and_gradients(X, y)
    out += [loss] + [g for pair in grads for g in pair]
    twin.train_step(X, y, fb.SGD(lr=0.1, momentum=0.9))
    twin.fit(X, y, epochs=2, batch_size=3, optimizer=fb.Adam(lr=1e-2))
    out.append(twin.params.copy())
    return out


def _same(a, b):
    assert len(a) == len(b)
    for u, v in zip(a, b):
        assert np.array_equal(u, v)


@pytest.mark.parametrize("dtype", [np.int8, np.int32, np.int64, np.uint8, np.bool_, np.float16, np.float64])
def test_any_numeric_X_dtype_equals_the_float32_array(dtype):
    rng = np.random.default_rng(3)
    if dtype == np.bool_:
        X = rng.random((N, D)) > 0.5
    elif np.dtype(dtype).kind in "iu":
        X = rng.integers(0, 4, (N, D)).astype(dtype)
    else:
        X = rng.standard_normal((N, D)).astype(dtype)
    net = clf(trained=False)
    _same(_results(net, X, Y0), _results(net, X.astype(np.float32), Y0))


@pytest.mark.parametrize("y", [Y0.astype(np.int8), Y0.astype(np.uint8), Y0.astype(np.int32), Y0.astype(np.float64),
                               Y0.astype(np.float16), Y0[:, None], list(Y0)],
                         ids=["int8", "uint8", "int32", "float64", "float16", "column", "list"])
def test_label_dtypes_and_shapes_equal_int64_labels(y):
    net = clf(trained=False)
    _same(_results(net, X0, y), _results(net, X0, Y0.astype(np.int64)))


def _layouts(A):
    """Views of A with the same values and different memory layouts."""
    wide = np.zeros((A.shape[0] * 2, A.shape[1] * 3), A.dtype)
    wide[::2, ::3] = A
    flipped = A[::-1].copy()[::-1]
    ro = A.copy()
    ro.flags.writeable = False
    return {"fortran": np.asfortranarray(A), "row-strided": wide[::2, ::3],
            "negative strides": flipped, "read-only": ro, "list": A.tolist()}


@pytest.mark.parametrize("layout", ["fortran", "row-strided", "negative strides", "read-only", "list"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_non_contiguous_inputs_equal_c_contiguous(layout, dtype):
    X = X0.astype(dtype)
    Xv = _layouts(X)[layout]
    yv = _layouts(Y0[:, None])[layout]
    yv = np.asarray(yv)[:, 0] if layout != "list" else [r[0] for r in yv]
    net = clf(dtype=dtype, trained=False)
    before = X.copy()
    _same(_results(net, Xv, yv), _results(net, X, Y0))
    if isinstance(Xv, np.ndarray):
        assert np.array_equal(Xv, before)  # inputs are never modified


def test_non_contiguous_float_targets_equal_c_contiguous():
    T = np.asfortranarray(X0[:, :2] * 3)
    wide = np.zeros((N, 6), np.float32)
    wide[:, ::3] = T
    results = []
    for t in (np.ascontiguousarray(T), T, wide[:, ::3]):
        net = reg(trained=False)
        net.fit(X0, t, epochs=2, batch_size=4, optimizer=fb.SGD(lr=0.05, momentum=0.9))
        results.append((net.params.copy(), net.evaluate(X0, t)["loss"]))
    for p, loss in results[1:]:
        assert np.array_equal(p, results[0][0]) and loss == results[0][1]


# ---- optimizer ownership ---------------------------------------------------------------------------
@pytest.mark.parametrize("method", ["fit", "train_step"])
def test_optimizer_bound_to_one_network_refuses_another(method):
    a = clf(trained=False)
    opt = fb.Adam(lr=1e-2)
    a.train_step(X0, Y0, opt)
    a_params, a_state = a.params.copy(), [s.copy() for s in opt.state_arrays()]
    b = clf()
    with unchanged(b), pytest.raises(fb.InputError, match=r"this Adam already holds the state of another network; "
                                                          r"create a new optimizer for each network"):
        if method == "fit":
            b.fit(X0, Y0, optimizer=opt)
        else:
            b.train_step(X0, Y0, opt)
    assert opt.step_count == 1 and a.optimizer is opt
    assert np.array_equal(a.params, a_params)
    for s, t in zip(opt.state_arrays(), a_state):
        assert np.array_equal(s, t)
    a.train_step(X0, Y0)  # still works with its own network
    assert opt.step_count == 2


# ---- divergence -------------------------------------------------------------------------------------------
def _diverging_regression(dtype):
    rng = np.random.default_rng(0)
    X = rng.standard_normal((16, 3)).astype(dtype)
    y = rng.standard_normal((16, 2)).astype(dtype)
    net = fb.Network([3, 4, 2], activation="tanh", output="identity", dtype=dtype, seed=0)
    return net, X, y


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_train_step_divergence_on_regression_keeps_last_finite_step(dtype):
    net, X, y = _diverging_regression(dtype)
    opt = fb.SGD(lr=1e10, momentum=0.5)
    steps = 0
    with pytest.raises(fb.DivergenceError, match=r"non-finite \(train_step, batch loss") as exc:
        for steps in range(200):
            params, buf = net.params.copy(), opt.state_arrays()[0].copy() if steps else None
            net.train_step(X, y, opt)
    assert isinstance(exc.value, FloatingPointError) and isinstance(exc.value, fb.FastbpError)
    assert not isinstance(exc.value, ValueError)
    assert steps > 1
    assert np.array_equal(net.params, params) and np.all(np.isfinite(net.params))
    assert opt.step_count == steps  # the failing step was not counted...
    assert np.array_equal(opt.state_arrays()[0], buf)  # ...nor its momentum applied
    with pytest.raises(fb.DivergenceError):  # and it fails the same way again, without changing anything
        net.train_step(X, y)
    assert np.array_equal(net.params, params) and opt.step_count == steps


@pytest.mark.parametrize("mode", ["fit", "train_step"])
def test_divergence_with_batch_norm_keeps_the_running_statistics(mode, tmp_path):
    # the failing step's forward computes non-finite batch statistics: they must not reach the
    # running statistics (which are saved with the model, and load checks that they are finite)
    rng = np.random.default_rng(0)
    X = rng.standard_normal((64, 4)).astype(np.float32)
    y = X @ rng.standard_normal((4, 1)).astype(np.float32)
    net = fb.Network([4, 16, 16, 1], activation="relu", output="identity", norm="batch", seed=0)
    opt = fb.SGD(lr=1e3)
    with pytest.raises(fb.DivergenceError):
        for _ in range(50):
            params, nstate = net.params.copy(), net.norm_state.copy()
            if mode == "fit":
                net.fit(X, y, epochs=1, batch_size=64, optimizer=opt, shuffle=False, verbose=0)
            else:
                net.train_step(X, y, opt)
    assert opt.step_count > 1
    assert np.array_equal(net.params, params) and np.array_equal(net.norm_state, nstate)
    assert np.all(np.isfinite(net.norm_state)) and not np.array_equal(nstate, fb.Network(
        [4, 16, 16, 1], activation="relu", output="identity", norm="batch", seed=0).norm_state)
    net.save(tmp_path / "m.npz")
    back = fb.Network.load(tmp_path / "m.npz")
    assert np.array_equal(back.norm_state, net.norm_state)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_fit_divergence_keeps_exactly_the_last_finite_weights(dtype):
    net, X, y = _diverging_regression(dtype)
    with pytest.raises(fb.DivergenceError, match=r"non-finite \(epoch \d+, batch \d+, batch loss"):
        net.fit(X, y, epochs=100, batch_size=4, shuffle=False, optimizer=fb.SGD(lr=1e10, momentum=0.5))
    # the same steps one batch at a time, up to the first that diverges
    twin, _, _ = _diverging_regression(dtype)
    opt = fb.SGD(lr=1e10, momentum=0.5)
    with pytest.raises(fb.DivergenceError):
        for _ in range(100):
            for i in range(0, 16, 4):
                twin.train_step(X[i:i + 4], y[i:i + 4], opt)
    assert net.optimizer.step_count == opt.step_count > 1
    assert np.array_equal(net.params, twin.params) and np.all(np.isfinite(net.params))
    assert np.array_equal(net.optimizer.state_arrays()[0], opt.state_arrays()[0])
    assert len(net.history.epoch) == opt.step_count // 4  # only completed epochs are recorded


# ---- rates, hyper-parameters and optimizer state that would break the update ---------------------------
class _RateBySamples(Schedule):
    """A rate that turns NaN (or negative) once enough samples were seen: only the epoch's own check sees it."""

    def __init__(self, bad):
        self.bad = bad

    def __call__(self, epoch, base_lr, samples_seen=0):
        return base_lr if samples_seen < 80 else self.bad


@pytest.mark.parametrize("bad", [float("nan"), -0.1, 1e39])
def test_a_rate_that_turns_bad_mid_fit_stops_before_its_epoch(bad):
    rng = np.random.default_rng(0)
    X = rng.standard_normal((40, 4)).astype(np.float32)
    y = rng.integers(0, 3, 40)
    net = fb.Network([4, 8, 3], seed=0)
    keep = []
    cb = fb.callbacks.LambdaCallback(on_epoch_end=lambda e, logs: keep.append(net.params.copy()))
    with pytest.raises(fb.InputError, match=r"learning rate .* at epoch 2; rates must be >= 0 and finite in float32"):
        net.fit(X, y, epochs=4, batch_size=8, optimizer=fb.SGD(lr=0.5), schedule=_RateBySamples(bad),
                callbacks=[cb], verbose=0)
    assert len(keep) == 2 and np.array_equal(net.params, keep[-1])
    assert net.optimizer.step_count == 10 and np.all(np.isfinite(net.params))


@pytest.mark.parametrize("make", [lambda: fb.Adam(lr=1e39), lambda: fb.SGD(lr=0.1, weight_decay=1e39),
                                  lambda: fb.RMSprop(lr=1e-3, eps=1e39)], ids=["adam lr", "sgd weight_decay", "rmsprop eps"])
def test_hyper_parameters_that_overflow_float32_are_refused(make):
    opt = make()
    X = np.ones((4, 3), np.float32)
    y = np.array([0, 1, 0, 1])
    net = fb.Network([3, 4, 2], seed=0)
    with unchanged(net, opt), pytest.raises(fb.InputError, match="overflows float32"):
        net.train_step(X, y, opt)
    fb.Network([3, 4, 2], seed=0, dtype=np.float64).train_step(X, y, opt)   # fine in float64


def test_a_rejected_fit_leaves_the_optimizer_schedule_alone():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((40, 4)).astype(np.float32)
    y = rng.integers(0, 3, 40)
    net = fb.Network([4, 8, 3], seed=0)
    cosine = CosineAnnealing(10)
    opt = fb.Adam(lr=1e-2, schedule=cosine)
    net.fit(X, y, epochs=1, optimizer=opt, verbose=0)
    with pytest.raises(fb.InputError, match="monitors 'val_loss'"):   # no validation data
        net.fit(X, y, epochs=2, initial_epoch=1, schedule=ReduceLROnPlateau("val_loss"), verbose=0)
    assert opt.schedule is cosine
    other = fb.Network([4, 8, 3], seed=1)
    with pytest.raises(fb.InputError, match="another network"):
        other.fit(X, y, epochs=1, optimizer=opt, schedule=ExponentialDecay(0.5), verbose=0)
    assert opt.schedule is cosine
    with pytest.raises(fb.InputError, match=r"ExponentialDecay\(gamma=1e\+200\) gives the learning rate 1e\+198 at epoch 1; "
                                             r"rates must be >= 0 and finite in float32"):
        net.fit(X, y, epochs=3, optimizer=opt, schedule=ExponentialDecay(1e200), verbose=0)
    assert opt.schedule is cosine
    net.fit(X, y, epochs=2, initial_epoch=1, verbose=0)                # the old schedule still works
    net.fit(X, y, epochs=3, initial_epoch=2, schedule=ExponentialDecay(0.5), verbose=0)
    assert isinstance(opt.schedule, ExponentialDecay)                  # an accepted fit attaches it


def test_save_before_the_first_step_loads(tmp_path):
    net = fb.Network([3, 4, 2], seed=0)
    net.optimizer = fb.Adam(lr=1e-2)
    net.save(tmp_path / "m.npz")
    back = fb.Network.load(tmp_path / "m.npz")
    assert isinstance(back.optimizer, fb.Adam) and back.optimizer.step_count == 0
    assert all(not a.any() for a in back.optimizer.state_arrays())


@pytest.mark.parametrize("opt,i,value", [(fb.Adam(), 1, -1.0), (fb.Adam(), 0, np.nan), (fb.SGD(momentum=0.9), 0, np.inf),
                                         (fb.RMSprop(), 0, -1.0)], ids=["adam v < 0", "adam m nan", "sgd buf inf",
                                                                        "rmsprop square < 0"])
def test_load_refuses_optimizer_state_an_update_cannot_use(opt, i, value, tmp_path):
    X = np.ones((4, 3), np.float32)
    y = np.array([0, 1, 0, 1])
    net = fb.Network([3, 4, 2], seed=0)
    net.train_step(X, y, opt)
    net.save(tmp_path / "m.npz")
    with np.load(tmp_path / "m.npz") as f:
        data = dict(f)
    data[f"optimizer_state_{i}"][0] = value
    np.savez(tmp_path / "bad.npz", **data)
    with pytest.raises(fb.ModelFileError, match=f"optimizer state {i} is not finite"):
        fb.Network.load(tmp_path / "bad.npz")


def test_weights_and_class_weights_that_overflow_float32_are_refused():
    net = fb.Network([3, 4, 2], seed=0)
    w = net.get_weights()
    with unchanged(net), pytest.raises(fb.InputError, match="layer 0: W has values that overflow the network's float32"):
        net.set_weights([(np.full((3, 4), 1e39), w[0][1]), w[1]])
    X = np.ones((4, 3), np.float32)
    y = np.array([0, 1, 0, 1])
    with unchanged(net), pytest.raises(fb.InputError, match="class_weight .* overflow float32"):
        net.fit(X, y, epochs=1, class_weight={0: 1e300, 1: 1.0}, sample_weight=np.full(4, 1e10))


def test_divergence_message_says_when_an_update_overflowed():
    net, X, y = _diverging_regression(np.float32)
    net.layers[-1][1][...] = np.inf   # as after an update that overflowed (finite gradients, huge steps)
    with pytest.raises(fb.DivergenceError, match="an earlier update overflowed float32: the weights are no longer finite"):
        net.train_step(X, y, fb.SGD(lr=0.1))
