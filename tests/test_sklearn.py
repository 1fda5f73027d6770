"""fastbp.sklearn: scikit-learn's own estimator checks and MLP tests, the same optimisation
steps as scikit-learn's MLPs, the same quality on the data sets scikit-learn ships, and
use in scikit-learn's tools."""

import copy
import os
import pickle
import subprocess
import sys
import warnings

import numpy as np
import pytest

sklearn = pytest.importorskip("sklearn")
pytest.importorskip("scipy")

from sklearn import neural_network as sk_nn  # noqa: E402
from sklearn.base import clone  # noqa: E402
from sklearn.datasets import load_breast_cancer, load_diabetes, load_digits, load_iris  # noqa: E402
from sklearn.exceptions import ConvergenceWarning  # noqa: E402
from sklearn.model_selection import GridSearchCV, cross_val_score, train_test_split  # noqa: E402
from sklearn.pipeline import make_pipeline  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402
from sklearn.utils.estimator_checks import parametrize_with_checks  # noqa: E402

from fastbp.sklearn import MLPClassifier, MLPRegressor  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")


# ---- scikit-learn's estimator checks ----------------------------------------------------------
# max_iter=100 as scikit-learn's own test of its MLPs; poisson runs at a higher rate so that
# it reaches the R^2 the regressor check asks for in 100 epochs.
CHECKED = [
    MLPClassifier(max_iter=100),
    MLPRegressor(max_iter=100),
    MLPClassifier(solver="lbfgs", max_iter=100),
    MLPRegressor(solver="sgd", max_iter=100),
    MLPRegressor(loss="poisson", learning_rate_init=0.01, max_iter=100),
]
# check name -> reason, for checks that fail for a reason we cannot fix. There are none.
EXPECTED_FAILED_CHECKS = {}


@parametrize_with_checks(CHECKED, expected_failed_checks=lambda est: EXPECTED_FAILED_CHECKS)
def test_sklearn_estimator_checks(estimator, check):
    check(estimator)


def test_sklearn_own_mlp_tests_pass_on_fastbp():
    """scikit-learn's tests/test_mlp.py, run with its MLPClassifier / MLPRegressor replaced
    by fastbp's (in a separate process, so that the replacement cannot leak)."""
    path = os.path.join(os.path.dirname(sklearn.__file__), "neural_network", "tests", "test_mlp.py")
    if not os.path.isfile(path):
        pytest.skip("this scikit-learn installation ships without its tests")
    root = os.path.dirname(os.path.dirname(sklearn.__file__))   # so that scikit-learn's conftest.py loads
    code = f"""
import sys, pytest
import sklearn.neural_network as nn, fastbp.sklearn as fb
nn.MLPClassifier, nn.MLPRegressor = fb.MLPClassifier, fb.MLPRegressor
rc = pytest.main([{path!r}, "-q", "-p", "no:cacheprovider", "-W", "ignore::DeprecationWarning",
                  "--rootdir", {root!r}, "--confcutdir", {root!r}, "-c", {os.devnull!r}])
mod = sys.modules.get("sklearn.neural_network.tests.test_mlp")
assert mod is not None and mod.MLPClassifier is fb.MLPClassifier and mod.MLPRegressor is fb.MLPRegressor
sys.exit(int(rc))
"""
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([repo, os.environ.get("PYTHONPATH", "")]))
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600, env=env,
                         cwd=root)
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-4000:]
    assert " passed" in res.stdout and " failed" not in res.stdout


# ---- the same steps as scikit-learn ------------------------------------------------------------
def _blobs(n=120, d=6, k=3, seed=0):
    rng = np.random.RandomState(seed)
    centers = rng.normal(0, 2, (k, d))
    y = rng.randint(0, k, n)
    return centers[y] + rng.normal(0, 1.5, (n, d)), y


def _regression(n=120, d=5, k=1, seed=0):
    rng = np.random.RandomState(seed)
    X = rng.normal(size=(n, d))
    Y = np.tanh(X @ rng.normal(size=(d, k))) + 0.1 * rng.normal(size=(n, k))
    return X, (Y[:, 0] if k == 1 else Y)


def _fit_both(Sk, Fb, X, y, sample_weight=None, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        a = Sk(random_state=0, **kw).fit(X, y, sample_weight=sample_weight)
        b = Fb(random_state=0, **kw).fit(X, y, sample_weight=sample_weight)
    return a, b


def _assert_same_model(a, b, rtol, loss_rtol=None):
    assert a.n_iter_ == b.n_iter_
    assert a.t_ == b.t_
    assert b.out_activation_ == a.out_activation_ and b.n_layers_ == a.n_layers_ and b.n_outputs_ == a.n_outputs_
    for ca, cb in zip(a.coefs_ + a.intercepts_, b.coefs_ + b.intercepts_):
        np.testing.assert_allclose(cb, ca, rtol=rtol, atol=rtol)
    np.testing.assert_allclose(b.loss_, a.loss_, rtol=loss_rtol or rtol)
    if hasattr(a, "loss_curve_"):
        np.testing.assert_allclose(b.loss_curve_, a.loss_curve_, rtol=loss_rtol or rtol)


SAME_STEPS = [  # (kind, data options, estimator options): float64, constant rate or momentum 0
    ("clf", dict(k=3), dict(solver="sgd", learning_rate_init=0.05)),
    ("clf", dict(k=3), dict(solver="sgd", nesterovs_momentum=False, activation="tanh", batch_size=32)),
    ("clf", dict(k=2), dict(solver="sgd", momentum=0.0, activation="logistic", shuffle=False)),
    ("clf", dict(k=3), dict(solver="sgd", momentum=0.0, learning_rate="invscaling", learning_rate_init=0.5)),
    ("clf", dict(k=3), dict(solver="sgd", momentum=0.0, learning_rate="adaptive", tol=1e-2, n_iter_no_change=2,
                            max_iter=80)),
    ("clf", dict(k=3), dict(solver="sgd", learning_rate="invscaling", learning_rate_init=0.5, power_t=0.25)),
    ("clf", dict(k=3), dict(solver="sgd", learning_rate="adaptive", tol=1e-2, n_iter_no_change=2, max_iter=80,
                            nesterovs_momentum=False)),
    ("clf", dict(k=3), dict(solver="sgd", early_stopping=True, validation_fraction=0.2)),
    ("clf", dict(k=2), dict(solver="sgd", early_stopping=True, hidden_layer_sizes=(7, 5))),
    ("clf", dict(k=3), dict(solver="lbfgs", alpha=1e-3)),
    ("clf", dict(k=2), dict(solver="lbfgs", activation="identity")),
    ("reg", dict(k=1), dict(solver="sgd", learning_rate_init=0.01)),
    ("reg", dict(k=1), dict(solver="sgd", learning_rate_init=0.01, early_stopping=True, alpha=0.01)),
    ("reg", dict(k=1), dict(solver="lbfgs", alpha=1e-2)),
    ("reg", dict(k=3), dict(solver="lbfgs", hidden_layer_sizes=(8, 8))),
    ("poisson", dict(k=1), dict(solver="sgd", learning_rate_init=0.01)),
    ("poisson", dict(k=2), dict(solver="lbfgs")),
    # Adam: scikit-learn's epsilon placement; a feature that is 0 in every row has weights that
    # only the L2 term moves, where PyTorch's placement takes up to 30x larger steps
    ("clf", dict(k=3), dict(solver="adam")),
    ("clf", dict(k=3, zero_feature=True), dict(solver="adam", learning_rate_init=0.01)),
    ("clf", dict(k=2, zero_feature=True), dict(solver="adam", early_stopping=True, hidden_layer_sizes=(7, 5))),
    ("reg", dict(k=1, zero_feature=True), dict(solver="adam", alpha=0.01)),
    ("reg", dict(k=3), dict(solver="adam", beta_1=0.8, epsilon=1e-6, batch_size=16)),
    ("poisson", dict(k=1), dict(solver="adam", learning_rate_init=0.01)),
]


def _problem(kind, k, zero_feature=False):
    if kind == "clf":
        X, y = _blobs(k=k)
    else:
        X, y = _regression(k=k)
        if kind == "poisson":
            y = np.random.RandomState(1).poisson(np.exp(0.5 * y))
    if zero_feature:
        X[:, 0] = 0.0
    return X, y


@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "weighted"])
@pytest.mark.parametrize("kind,data,kw", SAME_STEPS)
def test_same_steps_as_sklearn(kind, data, kw, weighted):
    """Same initialisation, split, shuffles, loss, gradient and stopping rule: float64 runs
    reproduce scikit-learn's weights, losses and iteration counts to rounding."""
    X, y = _problem(kind, **data)
    sw = np.random.RandomState(2).uniform(0.2, 3.0, X.shape[0]) if weighted else None
    Sk, Fb = (sk_nn.MLPClassifier, MLPClassifier) if kind == "clf" else (sk_nn.MLPRegressor, MLPRegressor)
    if kind == "poisson":
        kw = dict(kw, loss="poisson")
    kw = dict(dict(hidden_layer_sizes=(10,), max_iter=40), **kw)
    a, b = _fit_both(Sk, Fb, X, y, sample_weight=sw, **kw)
    _assert_same_model(a, b, rtol=1e-7 if kw["solver"] in ("sgd", "adam") else 1e-5)
    if kw.get("early_stopping"):
        np.testing.assert_allclose(b.validation_scores_, a.validation_scores_, rtol=1e-9)
        assert b.best_validation_score_ == pytest.approx(a.best_validation_score_)
        assert b.best_loss_ is None
    elif kw["solver"] == "sgd":
        assert b.best_loss_ == pytest.approx(a.best_loss_, rel=1e-7)
    np.testing.assert_allclose(b.predict_proba(X) if kind == "clf" else b.predict(X),
                               a.predict_proba(X) if kind == "clf" else a.predict(X), rtol=1e-6, atol=1e-8)


def test_multilabel_and_multioutput_same_steps():
    X, y = _blobs(k=4)
    Y = np.stack([y == 0, y == 1, y >= 2], axis=1).astype(int)
    a, b = _fit_both(sk_nn.MLPClassifier, MLPClassifier, X, Y, hidden_layer_sizes=(9,), solver="sgd", max_iter=30)
    assert b.out_activation_ == "logistic" and b.predict_proba(X).shape == (X.shape[0], 3)
    _assert_same_model(a, b, rtol=1e-7)
    np.testing.assert_array_equal(b.predict(X), a.predict(X))
    # squared error over 3 outputs: identical steps; scikit-learn's reported loss counts the L2
    # term of its summed-over-outputs gradient once, with each batch's weights before its update
    # (fastbp's kernels report each batch's penalty for it)
    X, Y = _regression(k=3)
    sw = np.random.RandomState(2).uniform(0.2, 3.0, X.shape[0])
    for kw in (dict(alpha=0.5), dict(alpha=0.5, sample_weight=sw), dict(alpha=1e-4, tol=1e-4, n_iter_no_change=3,
                                                                         max_iter=300)):
        a, b = _fit_both(sk_nn.MLPRegressor, MLPRegressor, X, Y, **dict(dict(
            hidden_layer_sizes=(9,), solver="sgd", max_iter=30, learning_rate_init=0.01), **kw))
        _assert_same_model(a, b, rtol=1e-7)
        assert b.n_iter_ == a.n_iter_ and b.best_loss_ == pytest.approx(a.best_loss_, rel=1e-9)



# ---- the same quality on scikit-learn's bundled data sets ------------------------------------------
def _split(loader, classification):
    X, y = loader(return_X_y=True)
    Xtr, Xte, ytr, yte = train_test_split(X, y, test_size=0.25, random_state=0,
                                          stratify=y if classification else None)
    scaler = StandardScaler().fit(Xtr)
    Xtr, Xte = scaler.transform(Xtr), scaler.transform(Xte)
    if not classification:   # R^2 does not depend on the target's scale; the fit does
        mu, sd = ytr.mean(), ytr.std()
        ytr, yte = (ytr - mu) / sd, (yte - mu) / sd
    return Xtr, Xte, ytr, yte


QUALITY = [  # (data set, loader, classification, hyper-parameters)
    ("digits", load_digits, True, dict(hidden_layer_sizes=(64,), max_iter=200)),
    ("digits", load_digits, True, dict(hidden_layer_sizes=(64,), solver="sgd", learning_rate_init=0.05)),
    ("breast_cancer", load_breast_cancer, True, dict(hidden_layer_sizes=(32,), max_iter=300)),
    ("breast_cancer", load_breast_cancer, True, dict(hidden_layer_sizes=(32,), solver="lbfgs", alpha=1e-2)),
    ("iris", load_iris, True, dict(hidden_layer_sizes=(16,), max_iter=1000)),
    ("iris", load_iris, True, dict(hidden_layer_sizes=(16,), solver="lbfgs", max_iter=300)),
    ("diabetes", load_diabetes, False, dict(hidden_layer_sizes=(16,), alpha=1.0, max_iter=200)),
    ("diabetes", load_diabetes, False, dict(hidden_layer_sizes=(16,), solver="lbfgs", alpha=30.0, max_iter=300)),
]
QUALITY_SCORES = {}


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["float64", "float32"])
@pytest.mark.parametrize("name,loader,classification,kw", QUALITY,
                         ids=[f"{q[0]}-{q[3].get('solver', 'adam')}" for q in QUALITY])
def test_same_quality_as_sklearn(name, loader, classification, kw, dtype):
    """Test accuracy within 1 point, R^2 within 0.02 of scikit-learn's (float64) or better,
    with the same hyper-parameters; fastbp also in float32."""
    Xtr, Xte, ytr, yte = _split(loader, classification)
    Sk, Fb = (sk_nn.MLPClassifier, MLPClassifier) if classification else (sk_nn.MLPRegressor, MLPRegressor)
    key = (name, kw.get("solver", "adam"))
    if key not in QUALITY_SCORES:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            QUALITY_SCORES[key] = Sk(random_state=0, **kw).fit(Xtr, ytr).score(Xte, yte)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        fb = Fb(random_state=0, **kw).fit(Xtr.astype(dtype), ytr)
    assert fb.coefs_[0].dtype == dtype
    score = fb.score(Xte.astype(dtype), yte)
    tolerance = 0.01 if classification else 0.02
    print(f"{name} {key[1]} {np.dtype(dtype).name}: sklearn {QUALITY_SCORES[key]:.4f} fastbp {score:.4f}")
    assert score >= QUALITY_SCORES[key] - tolerance


# ---- scikit-learn's tools, pickling, dtypes ---------------------------------------------------------
def test_pipeline_gridsearch_cross_val_score_clone():
    X, y = _blobs(n=150, k=3)
    pipe = make_pipeline(StandardScaler(), MLPClassifier(hidden_layer_sizes=(8,), learning_rate_init=0.01,
                                                         max_iter=200, random_state=0))
    scores = cross_val_score(pipe, X, y, cv=3)
    assert scores.shape == (3,) and scores.mean() > 0.7
    grid = GridSearchCV(pipe, {"mlpclassifier__alpha": [1e-4, 1e-1], "mlpclassifier__solver": ["adam", "lbfgs"]},
                        cv=3).fit(X, y)
    assert grid.best_score_ > 0.7
    assert set(grid.best_params_) == {"mlpclassifier__alpha", "mlpclassifier__solver"}
    est = MLPRegressor(hidden_layer_sizes=(5, 4), alpha=0.3, n_threads=1, dtype="float32")
    twin = clone(est)
    assert twin is not est and twin.get_params() == est.get_params()
    assert "dtype='float32'" in repr(est)


@pytest.mark.parametrize("solver", ["adam", "sgd", "lbfgs"])
def test_pickle_round_trip(solver):
    X, y = _blobs(k=3)
    est = MLPClassifier(hidden_layer_sizes=(7,), solver=solver, max_iter=20, random_state=0).fit(X, y)
    blob = pickle.dumps(est)
    loaded = pickle.loads(blob)
    np.testing.assert_array_equal(loaded.predict_proba(X), est.predict_proba(X))
    np.testing.assert_array_equal(loaded.predict(X), est.predict(X))
    for ca, cb in zip(est.coefs_ + est.intercepts_, loaded.coefs_ + loaded.intercepts_):
        np.testing.assert_array_equal(ca, cb)
    deep = copy.deepcopy(est)
    np.testing.assert_array_equal(deep.predict_proba(X), est.predict_proba(X))
    if solver != "lbfgs":
        # the optimizer's state travels too: partial_fit continues identically
        est.partial_fit(X, y)
        loaded.partial_fit(X, y)
        np.testing.assert_array_equal(loaded.predict_proba(X), est.predict_proba(X))
        assert loaded.t_ == est.t_


def test_estimator_pickled_before_eps_hat_continues_with_sklearns_adam():
    # a pickle from before Adam had eps_hat holds an optimizer config without the key; the
    # estimator's Adam is scikit-learn's, so partial_fit goes on with scikit-learn's steps
    X, y = _blobs(k=3)
    X[:, 0] = 0.0
    a, b = _fit_both(sk_nn.MLPClassifier, MLPClassifier, X, y, hidden_layer_sizes=(7,), max_iter=5)
    cfg, step, arrays = b._optimizer.__getstate__()["_opt"]
    del cfg["eps_hat"]
    b = pickle.loads(pickle.dumps(b))
    b._optimizer.__setstate__(dict(b._optimizer.__getstate__(), _opt=(cfg, step, arrays)))
    assert b._optimizer.opt.eps_hat
    for _ in range(3):
        a.partial_fit(X, y)
        b.partial_fit(X, y)
    _assert_same_model(a, b, rtol=1e-7)


@pytest.mark.parametrize("Est", [MLPClassifier, MLPRegressor])
@pytest.mark.parametrize("solver", ["adam", "sgd", "lbfgs"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_input_dtype_is_kept(Est, solver, dtype):
    X, y = _blobs(n=60, k=3)
    est = Est(hidden_layer_sizes=(5,), solver=solver, max_iter=5).fit(X.astype(dtype), y)
    assert all(c.dtype == dtype for c in est.coefs_ + est.intercepts_)
    assert est._net.dtype == dtype
    out = est.predict_proba(X.astype(dtype)) if Est is MLPClassifier else est.predict(X.astype(dtype))
    assert out.dtype == dtype
    # integers train in float64, as scikit-learn; dtype= overrides
    assert Est(hidden_layer_sizes=(3,), max_iter=2).fit(X.astype(np.int32), y).coefs_[0].dtype == np.float64
    assert Est(hidden_layer_sizes=(3,), max_iter=2, dtype="float32").fit(X, y).coefs_[0].dtype == np.float32


def test_coefs_are_live_views_and_settable():
    X, y = _regression()
    est = MLPRegressor(hidden_layer_sizes=(6,), max_iter=10, random_state=0).fit(X, y)
    before = est.predict(X)
    b1 = est.intercepts_[1].copy()
    est.coefs_[1] *= 2.0                            # in place: the network sees it
    np.testing.assert_allclose(est.predict(X), 2.0 * (before - b1) + b1, rtol=1e-6)
    est.intercepts_[1] = b1 + 1.0                   # rebound: copied in before predicting
    np.testing.assert_allclose(est.predict(X), 2.0 * (before - b1) + b1 + 1.0, rtol=1e-6)
    # attributes set by hand on a fresh estimator (as scikit-learn's tests do) are adopted
    twin = MLPRegressor(hidden_layer_sizes=(6,))
    for name in ("coefs_", "intercepts_", "n_outputs_", "n_layers_", "out_activation_", "n_features_in_"):
        setattr(twin, name, copy.deepcopy(getattr(est, name)))
    np.testing.assert_allclose(twin.predict(X), est.predict(X), rtol=1e-12)


def test_partial_fit_classes_multilabel_and_log_proba():
    X, y = _blobs(k=3)
    est = MLPClassifier(hidden_layer_sizes=(6,), random_state=0)
    with pytest.raises(ValueError, match="classes must be passed on the first call"):
        est.partial_fit(X, y)
    for _ in range(3):
        est.partial_fit(X[y < 2], y[y < 2], classes=[0, 1, 2])
    assert list(est.classes_) == [0, 1, 2] and est.predict_proba(X).shape == (X.shape[0], 3)
    assert est.n_iter_ == 1 and est.t_ == 3 * int((y < 2).sum())
    np.testing.assert_allclose(est.predict_log_proba(X), np.log(est.predict_proba(X)), rtol=1e-6)
    with pytest.raises(AttributeError, match="partial_fit"):
        MLPClassifier(solver="lbfgs").partial_fit
    labels = np.array(["a", "b", "a", "c"] * 30)
    est = MLPClassifier(hidden_layer_sizes=(4,), max_iter=5).fit(X, labels)
    assert set(est.predict(X)) <= {"a", "b", "c"}


def test_warnings_and_errors_as_sklearn():
    X, y = _blobs(k=3)
    with pytest.warns(ConvergenceWarning, match="Maximum iterations"):
        MLPClassifier(max_iter=2).fit(X, y)
    with pytest.warns(ConvergenceWarning, match="lbfgs failed to converge"):
        MLPClassifier(solver="lbfgs", max_iter=2).fit(X, y)
    for bad in (np.nan, np.inf):
        Xb = X.copy()
        Xb[3, 1] = bad
        with pytest.raises(ValueError, match="Input X contains"):
            MLPClassifier(max_iter=2).fit(Xb, y)
    fitted = MLPClassifier(max_iter=2).fit(X, y)
    Xb = X.copy()
    Xb[0, 0] = np.nan
    with pytest.raises(ValueError, match="Input X contains NaN"):
        fitted.predict(Xb)
    with pytest.raises(ValueError, match="partial_fit does not support early_stopping"):
        MLPClassifier(early_stopping=True).partial_fit(X, y, classes=[0, 1, 2])
    with pytest.raises(ValueError, match="Some value"):
        MLPRegressor(loss="poisson").fit(X, -np.abs(X[:, 0]))
    with pytest.raises(ValueError, match="dropout needs a stochastic solver"):
        MLPClassifier(solver="lbfgs", dropout=0.5).fit(X, y)


def test_divergence_gives_nonfinite_weights_error_or_best_weights():
    # as scikit-learn's test_nonfinite_params and test_mlp_diverging_loss
    rng = np.random.RandomState(0)
    X = np.finfo(np.float64).max * rng.uniform(size=(10, 2))
    y = rng.standard_normal(size=10)
    with pytest.raises(ValueError, match="Solver produced non-finite parameter weights"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            MLPRegressor().fit(X, y)
    X, y = load_iris(return_X_y=True)
    est = MLPRegressor(hidden_layer_sizes=100, activation="identity", solver="sgd", learning_rate_init=1,
                       max_iter=20, early_stopping=True, random_state=0).fit(X, y)
    assert np.isnan(est.validation_scores_[-1]) and isinstance(est.validation_scores_[-1], float)
    assert np.isfinite(est.predict(X)).all()       # the best (finite) weights were restored


def test_extras_threads_dropout_activations():
    X, y = _blobs(k=3)
    a = MLPClassifier(hidden_layer_sizes=(8,), max_iter=30, random_state=0).fit(X, y)
    b = MLPClassifier(hidden_layer_sizes=(8,), max_iter=30, random_state=0, n_threads=1).fit(X, y)
    np.testing.assert_allclose(b.predict_proba(X), a.predict_proba(X), rtol=1e-6)
    for act in ("leaky_relu", "elu", "softplus", "gelu"):
        est = MLPClassifier(hidden_layer_sizes=(8,), activation=act, learning_rate_init=0.01, max_iter=200,
                            random_state=0).fit(X, y)
        assert est.score(X, y) > 0.6
    d1 = MLPClassifier(hidden_layer_sizes=(16,), dropout=0.3, learning_rate_init=0.01, max_iter=200,
                       random_state=0).fit(X, y)
    d2 = MLPClassifier(hidden_layer_sizes=(16,), dropout=0.3, learning_rate_init=0.01, max_iter=200,
                       random_state=0).fit(X, y)
    np.testing.assert_array_equal(d1.predict_proba(X), d2.predict_proba(X))   # seeded by random_state
    assert d1.score(X, y) > 0.6
    # warm start may change the activation: the weights carry over
    est = MLPClassifier(hidden_layer_sizes=(8,), max_iter=5, warm_start=True, random_state=0).fit(X, y)
    W = est.coefs_[0].copy()
    est.set_params(activation="tanh", max_iter=1).fit(X, y)
    assert est._net.activations == ["tanh"] and np.abs(est.coefs_[0] - W).max() < 0.1


def test_dropin_example_runs():
    script = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples", "sklearn_dropin.py")
    res = subprocess.run([sys.executable, script, "--quick", "--threads", "1"], capture_output=True, text=True,
                         timeout=300)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    assert "score sklearn / fastbp / fastbp f32" in res.stdout
    assert res.stdout.count("MLPClassifier(") == 4 and "MLPRegressor(adam" in res.stdout


def test_lbfgs_keeps_no_full_batch_workspace():
    # the full-batch objective needs a workspace the size of the data; the fitted model keeps none
    rng = np.random.default_rng(0)
    X = rng.standard_normal((300, 4))
    est = MLPRegressor(hidden_layer_sizes=(8,), solver="lbfgs", max_iter=5, random_state=0).fit(X, X[:, 0])
    assert X.shape[0] not in est._net._workspaces
    est.predict(X)
