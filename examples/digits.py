"""Handwritten digits: a 64-64-10 classifier, its learning curves and its confusion matrix.

    python examples/digits.py [--out DIR] [--epochs N] [--quick]

The data are scikit-learn's bundled 8x8 digits (1,797 images, no download) when scikit-learn
is installed; otherwise a generated stand-in of the same shape (noisy copies of ten
overlapping prototype images), and the output says so. Features are standardised with the
training split's mean and spread; 80% train, 20% validation. The plot (learning curves and
confusion matrix) goes to DIR/digits.png when matplotlib is installed.
"""

import argparse
import os
import time

import numpy as np

import fastbp as fb


def load_data(seed=0):
    """X (n, 64) float32, y (n,) int64 class 0-9, and where they came from."""
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        rng = np.random.default_rng(seed)
        # one "image" per class, pixels 0-16 as in sklearn's, all near a shared base so they overlap
        protos = np.clip(rng.uniform(0, 16, 64) + rng.normal(0, 5, (10, 64)), 0, 16)
        y = rng.integers(0, 10, 1797)
        X = np.clip(protos[y] + rng.normal(0, 8, (y.size, 64)), 0, 16)
        return X.astype(np.float32), y, "generated stand-in (scikit-learn is not installed)"
    d = load_digits()
    return d.data.astype(np.float32), d.target.astype(np.int64), "scikit-learn's load_digits"


def confusion_matrix(truth, pred, k):
    """(k, k) counts: row = true class, column = predicted class."""
    return np.bincount(truth * k + pred, minlength=k * k).reshape(k, k)


def plot(path, hist, cm):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("note: matplotlib is not installed; no plot written")
        return
    h, ep = hist.history, np.arange(1, len(hist.epoch) + 1)
    fig, (ax_loss, ax_acc, ax_cm) = plt.subplots(1, 3, figsize=(15, 4.5))
    ax_loss.plot(ep, h["loss"], label="train", color="tab:blue")
    ax_loss.plot(ep, h["val_loss"], label="validation", color="tab:orange")
    ax_loss.set(xlabel="epoch", ylabel="cross-entropy", title="loss", yscale="log")
    ax_loss.legend()
    if "accuracy" in h:                                  # training accuracy, where fit reports it
        ax_acc.plot(ep, h["accuracy"], label="train", color="tab:blue")
    ax_acc.plot(ep, h["val_accuracy"], label="validation", color="tab:orange")
    ax_acc.set(xlabel="epoch", ylabel="accuracy", title="accuracy")
    ax_acc.legend()
    ax_cm.imshow(cm, cmap="Blues")
    for i, j in np.ndindex(cm.shape):
        ax_cm.text(j, i, cm[i, j], ha="center", va="center", fontsize=8,
                   color="white" if cm[i, j] > cm.max() / 2 else "black")
    ax_cm.set(xlabel="predicted", ylabel="true", title="confusion matrix (validation)",
              xticks=range(10), yticks=range(10))
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    print(f"plot: {path}")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=".", help="folder for digits.png (default: current directory)")
    ap.add_argument("--epochs", type=int, default=40)
    ap.add_argument("--quick", action="store_true", help="300 samples, 2 epochs (for tests)")
    args = ap.parse_args(argv)

    X, y, source = load_data()
    epochs = args.epochs
    if args.quick:
        X, y, epochs = X[:300], y[:300], 2
    rng = np.random.default_rng(0)
    idx = rng.permutation(len(X))
    n_train = int(0.8 * len(X))
    tr, va = idx[:n_train], idx[n_train:]
    mean, std = X[tr].mean(axis=0), X[tr].std(axis=0)
    std[std < 1e-3] = 1.0                                # some border pixels are always 0
    X = (X - mean) / std
    Xtr, ytr, Xva, yva = X[tr], y[tr], X[va], y[va]
    print(f"data: {source}; {len(Xtr)} training, {len(Xva)} validation samples, 64 features, 10 classes")

    net = fb.Network([64, 64, 10], activation="relu", output="softmax", seed=0)
    opt = fb.Adam(lr=1e-3)
    t0 = time.perf_counter()
    hist = net.fit(Xtr, ytr, epochs=epochs, batch_size=32, optimizer=opt, validation_data=(Xva, yva))
    seconds = time.perf_counter() - t0
    h = hist.history

    # training accuracy where fit reports it; each epoch's row of losses, then accuracies
    cols = [("loss", 8, ".4f"), ("val_loss", 9, ".4f")] + [("accuracy", 9, ".2%")] * ("accuracy" in h) \
        + [("val_accuracy", 12, ".2%")]
    print(f"{'epoch':>5} " + " ".join(f"{k:>{w}}" for k, w, _ in cols))
    for e in sorted({*range(0, epochs, max(1, epochs // 8)), epochs - 1}):
        print(f"{e + 1:>5} " + " ".join(f"{h[k][e]:>{w}{f}}" for k, w, f in cols))
    print(f"trained {epochs} epochs in {seconds:.2f} s (first call includes Numba compile or cache load)")

    pred = net.predict(Xva)
    cm = confusion_matrix(yva, pred, 10)
    print(f"validation accuracy: {np.mean(pred == yva):.2%}")
    print("confusion matrix (rows: true class, columns: predicted):")
    print("      " + " ".join(f"{j:>3}" for j in range(10)))
    for i in range(10):
        print(f"  {i:>2}: " + " ".join(f"{c:>3}" for c in cm[i]))
    worst = np.argsort(np.diag(cm) / np.maximum(cm.sum(axis=1), 1))[:3]
    print("hardest classes: " + ", ".join(f"{c} ({cm[c, c]}/{cm[c].sum()})" for c in worst))

    os.makedirs(args.out, exist_ok=True)
    plot(os.path.join(args.out, "digits.png"), hist, cm)


if __name__ == "__main__":
    main()
