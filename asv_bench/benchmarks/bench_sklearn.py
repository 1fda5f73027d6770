"""fastbp.sklearn beside scikit-learn's own MLPs: the time of ``fit`` for the same estimator,
hyper-parameters and data, in float64 (scikit-learn's precision) and, for fastbp, float32.

Both start from the same initial weights (fastbp.sklearn draws them as scikit-learn does) and
run a fixed number of epochs (``tol=0`` and a large ``n_iter_no_change``, so neither stops
early), so the times compare the same work. Data: scikit-learn's digits (1797 x 64, 10 classes)
and a seeded synthetic set of 20000 x 64 with 10 classes (``make_classification``), both
standardised. The benchmark skips (NotImplementedError) where scikit-learn or
fastbp.sklearn is missing.
"""

import functools
import warnings

import numpy as np

from .common import use_threads

EPOCHS = {"digits": 20, "synthetic20k": 3}
HIDDEN = (100,)


@functools.lru_cache(maxsize=None)
def _data(name):
    from sklearn.datasets import load_digits, make_classification
    from sklearn.preprocessing import StandardScaler
    if name == "digits":
        X, y = load_digits(return_X_y=True)
    else:
        X, y = make_classification(n_samples=20000, n_features=64, n_informative=32, n_classes=10,
                                   random_state=0)
    return StandardScaler().fit_transform(X), y


def _estimator(library, solver, epochs):
    try:
        if library == "sklearn":
            from sklearn.neural_network import MLPClassifier
        else:
            from fastbp.sklearn import MLPClassifier
    except ImportError as e:
        raise NotImplementedError(f"{library} MLPClassifier unavailable: {e}") from None
    return MLPClassifier(hidden_layer_sizes=HIDDEN, solver=solver, max_iter=epochs, tol=0.0,
                         n_iter_no_change=10**6, random_state=0)


class SklearnFit:
    """``MLPClassifier.fit``: scikit-learn vs fastbp.sklearn (float64 input, and float32 input,
    which fastbp keeps in float32). Adam with batch_size='auto' (200), or L-BFGS."""
    params = [["digits", "synthetic20k"], ["sklearn", "fastbp", "fastbp-float32"], ["adam", "lbfgs"]]
    param_names = ["data", "library", "solver"]
    timeout = 300

    def setup(self, data, library, solver):
        use_threads()
        epochs = EPOCHS[data] if solver == "adam" else 5 * EPOCHS[data]
        X, y = _data(data)
        self.X = X.astype(np.float32) if library == "fastbp-float32" else X
        self.y = y
        self.est = _estimator(library.split("-")[0], solver, epochs)
        if library != "sklearn":      # load the compiled kernels outside the timing
            warm = _estimator("fastbp", solver, 1)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                warm.fit(self.X[:256], self.y[:256])

    def time_fit(self, data, library, solver):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")      # ConvergenceWarning: max_iter is reached on purpose
            self.est.fit(self.X, self.y)
