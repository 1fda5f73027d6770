"""Vanishing gradients, made visible: a deep sigmoid network against relu with He init.

Both networks have 8 hidden layers of 64 units and train on the same data with
``fit(..., track_gradients=True)``, which records each layer's mean gradient norm
per epoch. In the sigmoid network the gradient shrinks by roughly the factor
max sigmoid' = 1/4 per layer on its way down, so the first layers barely learn;
relu with He initialisation keeps the norms of the same order through the depth.
A third run adds batch norm to the sigmoid network.

    python examples/gradient_health.py [--quick] [--out DIR]
"""

import argparse
import os

import numpy as np

import fastbp as fb

DEPTH, WIDTH = 8, 64


def make_data(n, rng):
    # a smooth 2-class problem in 16 dimensions
    X = rng.standard_normal((n, 16)).astype(np.float32)
    y = (np.sin(X[:, 0] * 1.5) + X[:, 1] * X[:, 2] > 0).astype(np.int64)
    return X, y


def run(name, activation, init, norm, X, y, epochs):
    net = fb.Network([16] + [WIDTH] * DEPTH + [2], activation=activation, init=init, norm=norm, seed=0)
    h = net.fit(X, y, epochs=epochs, batch_size=64, optimizer=fb.SGD(lr=0.05, momentum=0.9),
                validation_split=0.2, track_gradients=True, verbose=0)
    norms = np.array([[h.history[f"grad_norm_{l}"][e] for l in range(DEPTH + 1)] for e in range(epochs)])
    print(f"{name:28s} first-layer / last-layer gradient norm (epoch 1): "
          f"{norms[0, 0]:.2e} / {norms[0, -1]:.2e} (ratio {norms[0, 0] / norms[0, -1]:.1e}); "
          f"val accuracy after {epochs} epochs: {h.history['val_accuracy'][-1]:.3f}")
    return norms, h


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="tiny data, 2 epochs (for tests)")
    ap.add_argument("--out", default=".", help="folder for gradient_health.png")
    args = ap.parse_args(argv)
    rng = np.random.default_rng(0)
    X, y = make_data(1000 if args.quick else 20_000, rng)
    epochs = 2 if args.quick else 15
    runs = {
        "sigmoid, Glorot init": run("sigmoid, Glorot init", "sigmoid", "glorot", None, X, y, epochs),
        "relu, He init": run("relu, He init", "relu", "he", None, X, y, epochs),
        "sigmoid + batch norm": run("sigmoid + batch norm", "sigmoid", "glorot", "batch", X, y, epochs),
    }
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed (pip install matplotlib): no plot")
        return 0
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    for (name, (norms, h)), color in zip(runs.items(), ("C3", "C0", "C2")):
        ax1.semilogy(range(1, DEPTH + 2), norms[0], "o-", color=color, label=name)
        ax2.plot(h.epoch, h.history["val_accuracy"], "o-", color=color, label=name)
    ax1.set(xlabel="layer (1 = input side)", ylabel="mean gradient norm, epoch 1",
            title="gradient norm by depth")
    ax2.set(xlabel="epoch", ylabel="validation accuracy", title="learning")
    ax1.legend()
    ax2.legend()
    fig.tight_layout()
    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, "gradient_health.png")
    fig.savefig(path, dpi=110)
    plt.close(fig)
    print(f"plot: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
