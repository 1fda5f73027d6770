"""fastbp.sklearn as a drop-in for scikit-learn's MLPs: fit time and test score, side by side.

    python examples/sklearn_dropin.py [--rounds 3] [--threads 2] [--quick]

For each case the same estimator (same class name, hyper-parameters and random_state) is
fitted by scikit-learn and by fastbp.sklearn on the same standardised training data, in
float64, and by fastbp again on float32 input (which it keeps in float32). Fits are
interleaved (sklearn, fastbp, fastbp float32, then again) over ``--rounds`` rounds; the
printed time is the median, the ratio the median of the per-round ratios sklearn/fastbp.
Both libraries start from the same initial weights and stop by the same rule, so in float64
they run the same number of epochs and reach (nearly) the same model: the scores show it.
``--quick`` shrinks the data and epochs to check that the script runs (not a timing).
"""

import argparse
import statistics
import time
import warnings

import numpy as np
from sklearn import neural_network as sk
from sklearn.datasets import load_digits, make_classification, make_regression
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import StandardScaler

import fastbp
from fastbp import sklearn as fb


def datasets(quick):
    n = 2000 if quick else 20000
    X, y = load_digits(return_X_y=True)
    yield "digits 1797x64, 10 classes", X, y, True
    X, y = make_classification(n_samples=n, n_features=64, n_informative=32, n_classes=10, random_state=0)
    yield f"synthetic {n}x64, 10 classes", X, y, True
    X, y = make_regression(n_samples=n, n_features=64, n_informative=32, noise=10.0, random_state=0)
    yield f"synthetic {n}x64, regression", X, y / y.std(), False


def cases(quick):
    scale = 0.1 if quick else 1.0
    for name, X, y, classification in datasets(quick):
        Xtr, Xte, ytr, yte = train_test_split(X, y, test_size=0.2, random_state=0)
        sc = StandardScaler().fit(Xtr)
        data = (sc.transform(Xtr), sc.transform(Xte), ytr, yte)
        kind = "MLPClassifier" if classification else "MLPRegressor"
        small = name.startswith("digits")
        yield name, kind, dict(hidden_layer_sizes=(100,), max_iter=max(2, int(scale * (200 if small else 20)))), data
        if small:
            yield name, kind, dict(hidden_layer_sizes=(100,), solver="lbfgs", max_iter=max(2, int(scale * 200))), data
            yield name, kind, dict(hidden_layer_sizes=(100,), solver="sgd", learning_rate_init=0.01,
                                   max_iter=max(2, int(scale * 200))), data


def fit_time(cls, kw, Xtr, ytr):
    est = cls(random_state=0, **kw)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        t0 = time.perf_counter()
        est.fit(Xtr, ytr)
        return time.perf_counter() - t0, est


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    rounds = 1 if args.quick else args.rounds
    fastbp.set_num_threads(args.threads)      # fastbp's threads and NumPy's OpenBLAS, so scikit-learn's too
    print(f"scikit-learn vs fastbp.sklearn, {args.threads} threads, {rounds} round(s), median fit times")
    header = (f"{'data':32} {'estimator':40} {'sklearn':>8} {'fastbp':>8} {'ratio':>6} {'f32':>8} {'ratio':>6}"
              f" {'iters sk/fb':>11}  score sklearn / fastbp / fastbp f32")
    print(header)
    print("-" * len(header))
    for name, kind, kw, (Xtr, Xte, ytr, yte) in cases(args.quick):
        sk_cls, fb_cls = getattr(sk, kind), getattr(fb, kind)
        fit_time(fb_cls, dict(kw, max_iter=1), Xtr[:256], ytr[:256])      # load the compiled kernels
        Xtr32, Xte32 = Xtr.astype(np.float32), Xte.astype(np.float32)
        times = {"sk": [], "fb": [], "fb32": []}
        for _ in range(rounds):
            t, a = fit_time(sk_cls, kw, Xtr, ytr)
            times["sk"].append(t)
            t, b = fit_time(fb_cls, kw, Xtr, ytr)
            times["fb"].append(t)
            t, c = fit_time(fb_cls, kw, Xtr32, ytr)
            times["fb32"].append(t)
        ratio = statistics.median(s / f for s, f in zip(times["sk"], times["fb"]))
        ratio32 = statistics.median(s / f for s, f in zip(times["sk"], times["fb32"]))
        est = f"{kind}({kw.get('solver', 'adam')}, max_iter={kw['max_iter']})"
        scores = f"{a.score(Xte, yte):.4f} / {b.score(Xte, yte):.4f} / {c.score(Xte32, yte):.4f}"
        print(f"{name:32} {est:40} {statistics.median(times['sk']):7.3f}s {statistics.median(times['fb']):7.3f}s "
              f"{ratio:5.1f}x {statistics.median(times['fb32']):7.3f}s {ratio32:5.1f}x "
              f"{a.n_iter_:>5}/{b.n_iter_:<5}  {scores}", flush=True)


if __name__ == "__main__":
    main()
