"""Compile fastbp's drivers ahead of time, in parallel processes, into Numba's cache.

``python -m fastbp.warmup [--preset NAME] [--activations ...] [--optimizers ...] [--losses ...]
[--dtypes ...] [--jobs N] [--list]``

fastbp compiles a network's drivers the first time it is used (for its activations, loss
pair, norms, dropout and optimizer, once per machine: Numba caches the machine code, in
``NUMBA_CACHE_DIR`` when set, else next to the sources). Numba compiles one function at a
time per process, so this runs one process per configuration (``--jobs``, default: the
number of cores): each builds a small network of that configuration through the public API
and fits, evaluates, predicts and takes a ``train_step`` and ``loss_and_gradients`` on it,
which compiles and caches exactly what a user's network of that configuration will load.
Two processes needing the same driver share one compile (``_config.compile_locked``).

Presets: ``default`` the configuration of ``fb.Network(sizes)`` with Adam, float32;
``common`` activations relu/tanh/sigmoid × softmax cross-entropy and identity/MSE × Adam/SGD,
float32 (16 configurations: what scikit-learn-style sweeps use); ``suite`` the all-kernel
drivers the test suite runs with (kernels/kset.py, SPECIALISE off), float32 and float64.
Options given explicitly replace the preset's values.
"""

import argparse
import itertools
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor

PAIRS = {"cross_entropy": "softmax", "mse": "identity", "binary_cross_entropy": "sigmoid",
         "huber": "identity", "poisson": "exp"}
_ONE = dict(norms=["none"], dropout=["no"])
PRESETS = {
    "default": dict(activations=["relu"], losses=["cross_entropy"], optimizers=["adam"], dtypes=["float32"], **_ONE),
    "common": dict(activations=["relu", "tanh", "sigmoid"], losses=["cross_entropy", "mse"],
                   optimizers=["adam", "sgd"], dtypes=["float32"], **_ONE),
    "suite": dict(activations=["relu"], losses=["cross_entropy"], optimizers=["adam"],
                  dtypes=["float32", "float64"], **_ONE),
}
# the suite preset's jobs: one per driver group and dtype (with every kernel in, the drivers do
# not depend on the configuration, so the groups compile in parallel)
SUITE_PARTS = ("fit", "eval", "step")


def _task(cfg):
    """In a worker: compile one configuration's drivers (or, with ``part``, one group of the
    all-kernel drivers); returns (cfg, seconds)."""
    t0 = time.perf_counter()
    import numpy as np

    import fastbp as fb
    if cfg.get("part"):
        from .kernels import kset
        kset.SPECIALISE = False
    dtype = np.dtype(cfg["dtype"])
    rng = np.random.default_rng(0)
    k = 3
    X = rng.standard_normal((40, 4)).astype(dtype)
    labels = rng.integers(0, k, 40)
    loss = cfg["loss"]
    y = labels if loss == "cross_entropy" else (labels[:, None] == np.arange(k)).astype(dtype)
    output = cfg.get("output") or PAIRS[loss]
    net = fb.Network([4, 5, 5, k], activation=cfg["activation"], output=output, loss=loss, dtype=dtype, seed=0,
                     dropout=cfg.get("dropout", 0.0), norm=cfg.get("norm"))
    part = cfg.get("part")
    if part in (None, "fit"):   # (the "fit" group leaves the validation's loss_all to "eval")
        net.fit(X, y, epochs=1, batch_size=16, optimizer=cfg["optimizer"],
                validation_data=None if part else (X[:8], y[:8]))
    if part in (None, "eval"):
        net.evaluate(X, y)
        net.predict(X)
    if part in (None, "step"):
        net.train_step(X[:16], y[:16], optimizer=cfg["optimizer"])
        net.loss_and_gradients(X[:16], y[:16])
    return cfg, time.perf_counter() - t0


def configurations(activations, losses, optimizers, dtypes, norms=("none",), dropout=("no",), suite=False):
    """The worker tasks for these choices (every combination; ``dropout`` lists "no"/"yes"), or
    the suite's all-kernel groups."""
    if suite:
        return [dict(activation="relu", loss="cross_entropy", optimizer="adam", dtype=d, part=p)
                for d in dtypes for p in SUITE_PARTS]
    return [dict(activation=a, loss=l, optimizer=o, dtype=d, norm=None if nm == "none" else nm,
                 dropout=0.1 if dr == "yes" else 0.0)
            for a, l, o, d, nm, dr in itertools.product(activations, losses, optimizers, dtypes, norms, dropout)]


def warmup(tasks, jobs=None, verbose=True):
    """Run the tasks in ``jobs`` processes (default: one per core); returns the seconds each took."""
    jobs = max(1, min(jobs or os.cpu_count() or 1, len(tasks)))
    out = []
    t0 = time.perf_counter()
    with ProcessPoolExecutor(max_workers=jobs) as pool:
        for cfg, seconds in pool.map(_task, tasks):
            out.append(seconds)
            if verbose:
                print(f"  {seconds:6.1f} s  {_describe(cfg)}", flush=True)
    if verbose:
        print(f"warmup: {len(tasks)} configurations in {time.perf_counter() - t0:.1f} s with {jobs} processes",
              flush=True)
    return out


def _describe(cfg):
    if cfg.get("part"):
        return f"all kernels, {cfg['dtype']}, {cfg['part']}"
    extra = (f" / norm={cfg['norm']}" if cfg.get("norm") else "") + (" / dropout" if cfg.get("dropout") else "")
    return f"{cfg['activation']} / {cfg['loss']} / {cfg['optimizer']} / {cfg['dtype']}{extra}"


def main(argv=None):
    """``fastbp warmup``: parse ``argv`` (default ``sys.argv[1:]``), compile, return 0."""
    from . import names
    ap = argparse.ArgumentParser(prog="fastbp warmup", description=__doc__.splitlines()[0])
    ap.add_argument("--preset", choices=sorted(PRESETS), default="default")
    ap.add_argument("--activations", nargs="+", choices=names.ACTIVATIONS, metavar="NAME")
    ap.add_argument("--losses", nargs="+", choices=sorted(PAIRS), metavar="NAME",
                    help="each with its usual output (cross_entropy: softmax, mse: identity, ...)")
    ap.add_argument("--optimizers", nargs="+", choices=names.OPTIMIZERS, metavar="NAME")
    ap.add_argument("--dtypes", nargs="+", choices=("float32", "float64"))
    ap.add_argument("--norms", nargs="+", choices=names.NORMS, metavar="NAME")
    ap.add_argument("--dropout", nargs="+", choices=("no", "yes"), help="compile without and/or with dropout")
    ap.add_argument("--jobs", type=int, default=None, help="processes (default: the number of cores)")
    ap.add_argument("--list", action="store_true", help="print the configurations and compile nothing")
    ap.add_argument("--quiet", action="store_true")
    args = ap.parse_args(sys.argv[1:] if argv is None else argv)
    if args.jobs is not None and args.jobs < 1:
        ap.error("--jobs must be at least 1")
    p = dict(PRESETS[args.preset])
    for key in p:
        if getattr(args, key) is not None:
            p[key] = getattr(args, key)
    tasks = configurations(suite=args.preset == "suite", **p)
    if args.list:
        for cfg in tasks:
            print(_describe(cfg))
        return 0
    warmup(tasks, args.jobs, verbose=not args.quiet)
    return 0


if __name__ == "__main__":
    sys.exit(main())
