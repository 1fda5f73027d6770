"""Regression with an identity output and mean squared error: test R², predicted vs true.

    python examples/regression.py [--out DIR] [--epochs N] [--quick]

The data are scikit-learn's bundled diabetes set (442 patients, 10 features, disease
progression after one year) when scikit-learn is installed; otherwise 2,000 samples of a
generated smooth function of 5 inputs plus noise, and the output says so. Inputs and target
are standardised with the training split's statistics; 80% train, 20% test. The network is
small (10-16-1, tanh): the diabetes set is tiny and mostly linear, so a larger one only
overfits. The plot (predicted vs true on the test split, loss curves) goes to
DIR/regression.png when matplotlib is installed.
"""

import argparse
import os
import time

import numpy as np

import fastbp as fb


def load_data(seed=0):
    """X (n, d) float32, y (n,) float32, a description, and the target's name."""
    try:
        from sklearn.datasets import load_diabetes
    except ImportError:
        rng = np.random.default_rng(seed)
        X = rng.uniform(-2, 2, (2000, 5))
        y = np.sin(2 * X[:, 0]) + 0.5 * X[:, 1] ** 2 - X[:, 2] * X[:, 3] + 0.3 * X[:, 4]
        y += rng.normal(0, 0.1, y.shape)
        return (X.astype(np.float32), y.astype(np.float32),
                "generated stand-in: sin(2 x0) + x1^2/2 - x2 x3 + 0.3 x4 + noise "
                "(scikit-learn is not installed)", "y")
    d = load_diabetes()
    return (d.data.astype(np.float32), d.target.astype(np.float32),
            "scikit-learn's load_diabetes", "disease progression")


def r2_score(y, pred):
    """Coefficient of determination: 1 - SS_res / SS_tot."""
    return 1.0 - np.sum((y - pred) ** 2) / np.sum((y - y.mean()) ** 2)


def plot(path, hist, y_true, y_pred, r2, target):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("note: matplotlib is not installed; no plot written")
        return
    h, ep = hist.history, np.arange(1, len(hist.epoch) + 1)
    fig, (ax_sc, ax_loss) = plt.subplots(1, 2, figsize=(11, 4.5))
    lo, hi = min(y_true.min(), y_pred.min()), max(y_true.max(), y_pred.max())
    ax_sc.plot([lo, hi], [lo, hi], color="gray", lw=1, ls="--", label="y = x")
    ax_sc.scatter(y_true, y_pred, s=12, alpha=0.7)
    ax_sc.set(xlabel=f"true {target}", ylabel=f"predicted {target}", title=f"test split: R² = {r2:.3f}")
    ax_sc.legend()
    ax_loss.plot(ep, h["loss"], label="train", color="tab:blue")
    ax_loss.plot(ep, h["val_loss"], label="test", color="tab:orange")
    ax_loss.set(xlabel="epoch", ylabel="MSE (standardised target)", title="loss", yscale="log")
    ax_loss.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    print(f"plot: {path}")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=".", help="folder for regression.png (default: current directory)")
    ap.add_argument("--epochs", type=int, default=100)
    ap.add_argument("--quick", action="store_true", help="200 samples, 2 epochs (for tests)")
    args = ap.parse_args(argv)

    X, y, source, target = load_data()
    epochs = args.epochs
    if args.quick:
        X, y, epochs = X[:200], y[:200], 2
    idx = np.random.default_rng(0).permutation(len(X))
    n_train = int(0.8 * len(X))
    tr, te = idx[:n_train], idx[n_train:]
    x_mean, x_std = X[tr].mean(axis=0), X[tr].std(axis=0)
    y_mean, y_std = y[tr].mean(), y[tr].std()
    Xs = (X - x_mean) / x_std
    ys = (y - y_mean) / y_std
    print(f"data: {source}; {len(tr)} training, {len(te)} test samples, {X.shape[1]} features")

    d = X.shape[1]
    net = fb.Network([d, 16, 1], activation="tanh", output="identity", seed=0)   # loss: mse
    opt = fb.Adam(lr=1e-3)
    t0 = time.perf_counter()
    hist = net.fit(Xs[tr], ys[tr], epochs=epochs, batch_size=32, optimizer=opt, validation_data=(Xs[te], ys[te]))
    seconds = time.perf_counter() - t0
    h = hist.history
    print(f"{'epoch':>5} {'train mse':>10} {'test mse':>9}")
    for e in sorted({*range(0, epochs, max(1, epochs // 8)), epochs - 1}):
        print(f"{e + 1:>5} {h['loss'][e]:>10.4f} {h['val_loss'][e]:>9.4f}")
    print(f"trained {epochs} epochs in {seconds:.2f} s (first call includes Numba compile or cache load)")

    pred = net.predict(Xs[te]) * y_std + y_mean                 # back to the target's own units
    r2, r2_train = r2_score(y[te], pred), r2_score(y[tr], net.predict(Xs[tr]) * y_std + y_mean)
    rmse = np.sqrt(np.mean((y[te] - pred) ** 2))
    print(f"test R²: {r2:.3f}  (train R²: {r2_train:.3f}); test RMSE: {rmse:.2f} "
          f"(the target's spread: {y[te].std():.2f})")
    A = np.c_[Xs, np.ones(len(Xs))]                              # baseline: least squares on the same split
    w = np.linalg.lstsq(A[tr], ys[tr], rcond=None)[0]
    print(f"for comparison, linear least squares: test R² {r2_score(y[te], A[te] @ w * y_std + y_mean):.3f}")

    os.makedirs(args.out, exist_ok=True)
    plot(os.path.join(args.out, "regression.png"), hist, y[te], pred, r2, target)


if __name__ == "__main__":
    main()
