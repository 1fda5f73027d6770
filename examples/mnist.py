"""Train a 784-256-128-10 relu MLP on MNIST (or Fashion-MNIST) and plot its learning curves.

Reads the four standard IDX files (plain or .gz) from --data; get them once with
    python -c "from fastbp.datasets import fetch_mnist; fetch_mnist()"
(add fashion=True for Fashion-MNIST). Without them it says how to get them and exits with
status 0. Adam(lr=1e-3), batch 128, seed 0; the test set serves as validation data.
Writes <out>/mnist_curves.png (fashion_mnist_curves.png) if matplotlib is installed.
"""

import argparse
import os
import sys
import time

import fastbp as fb
from fastbp.datasets import get_data_home, load_mnist


def plot_curves(history, path, title):
    """Loss and accuracy per epoch; False (with a note) if matplotlib is missing."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.ticker import MaxNLocator
    except ImportError:
        print("matplotlib is not installed: no plot (pip install matplotlib)")
        return False
    epochs = range(1, len(history["loss"]) + 1)
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 4))
    for key, label in (("loss", "train"), ("val_loss", "test")):
        if key in history:
            ax_loss.plot(epochs, history[key], "o-", label=label)
    for key, label in (("accuracy", "train"), ("val_accuracy", "test")):
        if key in history:
            ax_acc.plot(epochs, history[key], "o-", label=label)
    ax_loss.set(xlabel="epoch", ylabel="cross-entropy", title="loss")
    ax_acc.set(xlabel="epoch", ylabel="accuracy", title="accuracy")
    for ax in (ax_loss, ax_acc):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=None,
                    help="folder with the IDX files (default: $FASTBP_DATA or ~/.cache/fastbp, then /mnist "
                         "or /fashion-mnist)")
    ap.add_argument("--fashion", action="store_true", help="Fashion-MNIST instead of MNIST")
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--quick", action="store_true", help="the first 2000 training samples, 1 epoch")
    ap.add_argument("--out", default=".", help="folder for the PNG (default: the current one)")
    ap.add_argument("--threads", type=int, default=None, help="Numba + BLAS threads (default: all cores)")
    args = ap.parse_args(argv)
    name = "Fashion-MNIST" if args.fashion else "MNIST"
    data = args.data or os.path.join(get_data_home(), "fashion-mnist" if args.fashion else "mnist")

    try:
        Xtr, ytr = load_mnist(data, "train", fashion=args.fashion)
        Xte, yte = load_mnist(data, "test", fashion=args.fashion)
    except FileNotFoundError as e:
        print(f"{name} is not available, so there is nothing to train on.\n{e}")
        return 0
    if args.threads:
        fb.set_num_threads(args.threads)
    epochs = args.epochs
    if args.quick:
        Xtr, ytr, epochs = Xtr[:2000], ytr[:2000], 1
    print(f"fastbp {fb.__version__}, {name} from {data}: {len(Xtr):,} training and {len(Xte):,} test images, "
          f"{fb.get_num_threads()} thread(s)")

    net = fb.Network([784, 256, 128, 10], activation="relu", output="softmax", seed=0)
    t0 = time.perf_counter()
    # the first epoch includes compiling the kernels, or loading them from Numba's cache
    hist = net.fit(Xtr, ytr, epochs=epochs, batch_size=args.batch_size, optimizer=fb.Adam(lr=1e-3),
                   validation_data=(Xte, yte), verbose=2)
    seconds = time.perf_counter() - t0
    test = net.evaluate(Xte, yte)
    print(f"test loss {test['loss']:.4f}, test accuracy {test['accuracy']:.2%} "
          f"after {epochs} epoch(s), {seconds:.1f} s")

    os.makedirs(args.out, exist_ok=True)
    png = os.path.join(args.out, ("fashion_" if args.fashion else "") + "mnist_curves.png")
    if plot_curves(hist.history, png, f"fastbp 784-256-128-10 on {name}"):
        print(f"learning curves: {png}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
