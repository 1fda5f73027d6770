"""Two interleaved spirals: watch the decision boundary form as training goes on.

    python examples/spirals.py [--out DIR] [--quick]

The classic two-spirals problem (Lang & Witbrock, 1988): two classes of points on spirals
that wind around each other, which no linear or shallow-and-narrow model separates. A
2-64-64-2 relu network is trained in stages; ``fit`` called again continues from the current
weights, and passing the same ``fb.Adam`` object carries its moment estimates and step count
over, so the stages add up to the same run as one ``fit`` of as many epochs. After each
stage the script records the network's class-1 probability over a grid; the panels (one per
stage) go to DIR/spirals.png when matplotlib is installed.
"""

import argparse
import os
import time

import numpy as np

import fastbp as fb
from fastbp.datasets import make_spirals

# cumulative epochs at which a snapshot is taken
STAGES = (1, 10, 20, 25, 30, 60)
QUICK_STAGES = (1, 2)


def grid(lim=1.15, n=150):
    xs = np.linspace(-lim, lim, n, dtype=np.float32)
    gx, gy = np.meshgrid(xs, xs)
    return gx, gy, np.c_[gx.ravel(), gy.ravel()]


def plot(path, snapshots, X, y, gx, gy):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("note: matplotlib is not installed; no plot written")
        return
    cols = 3
    rows = (len(snapshots) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 4 * rows), squeeze=False)
    for ax in axes.flat[len(snapshots):]:
        ax.axis("off")
    for ax, (epoch, p1, acc) in zip(axes.flat, snapshots):
        ax.contourf(gx, gy, p1.reshape(gx.shape), levels=np.linspace(0, 1, 11), cmap="RdBu_r", alpha=0.7)
        ax.contour(gx, gy, p1.reshape(gx.shape), levels=[0.5], colors="k", linewidths=1)
        ax.scatter(X[:, 0], X[:, 1], c=y, cmap="RdBu_r", s=4, edgecolors="none")
        ax.set(title=f"after {epoch} epoch{'s' if epoch > 1 else ''}: test accuracy {acc:.1%}",
               xticks=[], yticks=[], aspect="equal")
    fig.suptitle("two spirals, 2-64-64-2 relu: P(class 1) and the 0.5 boundary")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    print(f"plot: {path}")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=".", help="folder for spirals.png (default: current directory)")
    ap.add_argument("--quick", action="store_true", help="200 points, 2 one-epoch stages (for tests)")
    args = ap.parse_args(argv)

    n = 100 if args.quick else 500
    stages = QUICK_STAGES if args.quick else STAGES
    X, y = make_spirals(2 * n, seed=0)           # n points per class
    Xte, yte = make_spirals(2 * n, seed=1)
    gx, gy, G = grid(n=40 if args.quick else 150)
    print(f"two spirals: {len(X)} training points, {len(Xte)} test points; snapshots after {list(stages)} epochs")

    net = fb.Network([2, 64, 64, 2], activation="relu", output="softmax", seed=0)
    opt = fb.Adam(lr=3e-3)                       # one optimizer for every stage: its state carries over
    snapshots, done = [], 0
    t0 = time.perf_counter()
    print(f"{'epochs':>6} {'train loss':>10} {'train acc':>9} {'test acc':>8}")
    for target in stages:
        net.fit(X, y, epochs=target - done, batch_size=32, optimizer=opt)
        done = target
        train, test = net.evaluate(X, y), net.evaluate(Xte, yte)
        snapshots.append((done, net.predict_proba(G)[:, 1], test["accuracy"]))
        print(f"{done:>6} {train['loss']:>10.4f} {train['accuracy']:>9.1%} {test['accuracy']:>8.1%}")
    seconds = time.perf_counter() - t0
    print(f"trained {done} epochs in {seconds:.2f} s (first call includes Numba compile or cache load)")

    os.makedirs(args.out, exist_ok=True)
    plot(os.path.join(args.out, "spirals.png"), snapshots, X, y, gx, gy)


if __name__ == "__main__":
    main()
