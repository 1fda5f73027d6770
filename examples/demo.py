"""The `make demo` job: train a classifier on data made here, report loss, accuracy, speed.

The data: 70,000 samples of 16 Gaussian features, labelled 0-9 by a fixed random
"teacher" network (``fastbp.datasets.make_teacher``: the task is learnable but not linear);
60,000 train, 10,000 test.
The student is 16-128-64-10, relu, softmax + cross-entropy, Adam(lr=1e-3), batch 32.
"""

import argparse
import time

import numpy as np

import fastbp as fb
from fastbp.datasets import make_teacher


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--threads", type=int, default=None, help="Numba + BLAS threads (default: all cores)")
    args = ap.parse_args(argv)
    if args.threads:
        fb.set_num_threads(args.threads)

    X, y = make_teacher(70_000, 16, 10)
    Xtr, ytr, Xte, yte = X[:60_000], y[:60_000], X[60_000:], y[60_000:]
    print(f"fastbp {fb.__version__}: {Xtr.shape[0]:,} training samples, {Xte.shape[0]:,} test samples, "
          f"{fb.get_num_threads()} thread(s), BLAS: {fb.BLAS_INFO['provider']}")

    def new_model():
        return fb.Network([16, 128, 64, 10], activation="relu", output="softmax", seed=0), fb.Adam(lr=1e-3)

    # compile every kernel the run needs (or load them from Numba's cache) on a throw-away model
    t0 = time.perf_counter()
    warm, warm_opt = new_model()
    warm.fit(Xtr[:64], ytr[:64], epochs=1, batch_size=32, optimizer=warm_opt, validation_data=(Xte[:8], yte[:8]))
    t_first = time.perf_counter() - t0
    net, opt = new_model()

    print(f"compile (first run) or load from cache: {t_first:.2f} s")
    t0 = time.perf_counter()
    hist = net.fit(Xtr, ytr, epochs=args.epochs, batch_size=32, optimizer=opt,
                   validation_data=(Xte, yte), verbose=2)
    seconds = time.perf_counter() - t0
    test = net.evaluate(Xte, yte)
    train = net.evaluate(Xtr, ytr)
    print(f"final: train loss {train['loss']:.4f}, train accuracy {train['accuracy']:.2%}; "
          f"test loss {test['loss']:.4f}, test accuracy {test['accuracy']:.2%}")
    print(f"training speed: {args.epochs * Xtr.shape[0] / seconds:,.0f} samples/s over {args.epochs} epochs "
          f"({seconds:.2f} s, validation included)")
    assert np.isfinite(hist.history["loss"][-1])


if __name__ == "__main__":
    main()
