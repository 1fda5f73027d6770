"""Compile fastbp's drivers and kernels ahead of time, in parallel processes, into Numba's cache.

``python -m fastbp.warmup [--preset NAME] [--activations ...] [--optimizers ...] [--losses ...]
[--norms ...] [--dropout no yes] [--dtypes ...] [--precisions fp32 bf16] [--jobs N] [--list]``

fastbp compiles on first use, once per machine (Numba caches the machine code, in
``NUMBA_CACHE_DIR`` when set, else next to the sources): the drivers that walk a network
(kernels/network.py), once per dtype for every network, and each kernel a network uses
(an activation, a loss pair, a norm, dropout, an optimizer: kernels/table.py), once per dtype.
Numba compiles one function at a time per process, so this runs the work in ``--jobs``
processes (default: the number of cores): per dtype, three groups of drivers (fit, evaluate
and predict, train_step and loss_and_gradients, each compiled by running a small network
through the public API) and the chosen kernels in groups. Two processes needing the same
function share one compile (``_config.compile_locked``).

Presets: ``default`` what ``fb.Network(sizes)`` with Adam uses, float32; ``common``
relu/tanh/sigmoid, softmax cross-entropy and identity/MSE, Adam and SGD, float32; ``all``
every kernel, float32; ``suite`` every kernel, float32 and float64 (what the test suite
uses). ``all`` and ``suite`` include the kernels only bf16 networks use (``--precisions bf16``:
the bf16 parameter copy and, for large networks, the threaded optimizer updates; float32 only).
Options given explicitly replace the preset's values.
"""

import argparse
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor

from . import names

PAIRS = {"cross_entropy": "softmax", "mse": "identity", "binary_cross_entropy": "sigmoid",
         "huber": "identity", "poisson": "exp"}
_EVERY = dict(activations=list(names.ACTIVATIONS), losses=sorted(PAIRS), optimizers=list(names.OPTIMIZERS),
              norms=list(names.NORMS), dropout=["no", "yes"], precisions=list(names.PRECISIONS))
PRESETS = {
    "default": dict(activations=["relu"], losses=["cross_entropy"], optimizers=["adam"], norms=["none"],
                    dropout=["no"], dtypes=["float32"], precisions=["fp32"]),
    "common": dict(activations=["relu", "tanh", "sigmoid"], losses=["cross_entropy", "mse"],
                   optimizers=["adam", "sgd"], norms=["none"], dropout=["no"], dtypes=["float32"], precisions=["fp32"]),
    "all": dict(_EVERY, dtypes=["float32"]),
    "suite": dict(_EVERY, dtypes=["float32", "float64"]),
}
DRIVER_PARTS = ("fit", "eval", "step")


def _drivers(part, dtype):
    """Run a small relu/softmax/Adam network through the public calls of driver group ``part``."""
    import numpy as np

    import fastbp as fb
    rng = np.random.default_rng(0)
    X = rng.standard_normal((40, 4)).astype(dtype)
    y = rng.integers(0, 3, 40)
    net = fb.Network([4, 5, 5, 3], dtype=dtype, seed=0)
    if part == "fit":
        net.fit(X, y, epochs=1, batch_size=16, optimizer="adam")
    elif part == "eval":
        net.evaluate(X, y)
        net.predict(X)
    else:
        net.train_step(X[:16], y[:16], optimizer="adam")
        net.loss_and_gradients(X[:16], y[:16])
        # the other entry points Python calls, each with one signature per dtype: batch norm's
        # update after loss_and_gradients, the L2 term (scikit-learn's lbfgs), and the count of
        # correct predictions (data-parallel training); on this network they change nothing
        from .kernels import network as K
        from .kernels.losses import correct_count
        with net._borrow(16) as (ws, layout, fpar, meta):
            K.update_running(net._kernels(training=True), net.norm_state, ws, layout, fpar, 16)
            K.l2_penalty(net.params, layout, 0.1, net._no_weights, 16)
        correct_count(net._loss_code, np.zeros((16, 3), dtype), net._no_T, y[:16].astype(np.int64), True)


def _task(task):
    """In a worker: compile one task's drivers or kernels; returns (task, seconds)."""
    t0 = time.perf_counter()
    if task["kind"] == "drivers":
        _drivers(task["part"], task["dtype"])
    else:
        from .kernels.table import address
        for family, code in task["kernels"]:
            address(family, code, task["dtype"])
    return task, time.perf_counter() - t0


def kernels_for(activations=(), losses=(), optimizers=(), norms=(), dropout=(), precisions=()):
    """The (family, code) kernels these choices need, by group: activations, losses, the rest
    (and with "bf16" in ``precisions``, a fourth: what only bf16 networks use)."""
    from .kernels import precision
    from .kernels.activations import ACTIVATIONS, ALIASES
    from .kernels.losses import PAIRS as LOSS_PAIRS
    from .kernels.norm import NORMS
    from .kernels.optim import MT
    from .kernels.table import KERNELS
    from .optim import get_optimizer
    acts = sorted({ACTIVATIONS[ALIASES.get(a, a)] for a in activations})
    pairs = sorted({LOSS_PAIRS[PAIRS[loss], loss] for loss in losses})
    rest = [(f, NORMS[nm]) for nm in dict.fromkeys(norms) if NORMS[nm] for f in ("norm_f", "norm_b", "norm_u")]
    rest += [("drop_f", 0), ("drop_b", 0)] if "yes" in dropout else []
    kinds = sorted({get_optimizer(o).kind for o in optimizers})
    rest += [("opt_u", k) for k in kinds]
    groups = ([(f, c) for c in acts for f in ("act_f", "act_b")],
              [(f, c) for c in pairs for f in ("loss_f", "loss_b", "out_f")], rest)
    if "bf16" in precisions:
        groups += ([("cvt", c) for c in sorted(precision.KERNELS)] + [("mm16", 0)] + [("opt_u", k + MT) for k in kinds],)
    return [[k for k in g if k in KERNELS] for g in groups]


def configurations(activations, losses, optimizers, dtypes, norms=("none",), dropout=("no",), precisions=("fp32",)):
    """The worker tasks for these choices: per dtype, the three driver groups and the kernels in
    up to four groups (bf16's for float32 only)."""
    tasks = []
    for d in dtypes:
        tasks += [dict(kind="drivers", part=p, dtype=d) for p in DRIVER_PARTS]
        prec = precisions if d == "float32" else ()
        tasks += [dict(kind="kernels", kernels=g, dtype=d)
                  for g in kernels_for(activations, losses, optimizers, norms, dropout, prec) if g]
    return tasks


def _no_helper():
    # a worker compiles what its task names itself: a fit's compile helper (fastbp._compile) would
    # be one process more than the cores, compiling what another worker's task holds
    os.environ["FASTBP_COMPILE_HELPER"] = "0"


def warmup(tasks, jobs=None, verbose=True):
    """Run the tasks in ``jobs`` processes (default: one per core); returns the seconds each took."""
    jobs = max(1, min(jobs or os.cpu_count() or 1, len(tasks)))
    out = []
    t0 = time.perf_counter()
    with ProcessPoolExecutor(max_workers=jobs, initializer=_no_helper) as pool:
        for task, seconds in pool.map(_task, tasks):
            out.append(seconds)
            if verbose:
                print(f"  {seconds:6.1f} s  {_describe(task)}", flush=True)
    if verbose:
        print(f"warmup: {len(tasks)} tasks in {time.perf_counter() - t0:.1f} s with {jobs} processes", flush=True)
    return out


def _describe(task):
    if task["kind"] == "drivers":
        return f"drivers: {task['part']}, {task['dtype']}"
    from .kernels.table import KERNELS
    listed = ", ".join(KERNELS[k].py_func.__name__ for k in task["kernels"])
    return f"kernels: {listed}, {task['dtype']}"


def main(argv=None):
    """``fastbp warmup``: parse ``argv`` (default ``sys.argv[1:]``), compile, return 0."""
    ap = argparse.ArgumentParser(prog="fastbp warmup", description=__doc__.splitlines()[0])
    ap.add_argument("--preset", choices=sorted(PRESETS), default="default")
    ap.add_argument("--activations", nargs="+", choices=names.ACTIVATIONS, metavar="NAME")
    ap.add_argument("--losses", nargs="+", choices=sorted(PAIRS), metavar="NAME",
                    help="each with its usual output (cross_entropy: softmax, mse: identity, ...)")
    ap.add_argument("--optimizers", nargs="+", choices=names.OPTIMIZERS, metavar="NAME")
    ap.add_argument("--dtypes", nargs="+", choices=("float32", "float64"))
    ap.add_argument("--norms", nargs="+", choices=names.NORMS, metavar="NAME")
    ap.add_argument("--dropout", nargs="+", choices=("no", "yes"), help="compile without and/or with dropout")
    ap.add_argument("--precisions", nargs="+", choices=names.PRECISIONS,
                    help="bf16: also the kernels only bf16 networks use (float32)")
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
    tasks = configurations(**p)
    if args.list:
        for cfg in tasks:
            print(_describe(cfg))
        return 0
    warmup(tasks, args.jobs, verbose=not args.quiet)
    return 0


if __name__ == "__main__":
    sys.exit(main())
