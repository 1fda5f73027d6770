"""Helpers shared by the benchmark modules (no benchmarks here).

asv runs each benchmark in its own process and (asv_runner 0.3, which asv 0.6.6 installs) calls
``setup`` again before every timed call; so setups are cheap and repeatable: data is
generated once per process (memoised below), networks and buffers are rebuilt each time.
Benchmarks run the kernels and the training loop with ``THREADS`` threads, as the standard
workloads are measured (WORKLOADS.md); ``FASTBP_ASV_THREADS=1`` in the environment changes that
(steadier on a busy 2-core machine, where a second thread waits whenever another process holds
the other core).
"""

import functools
import importlib
import inspect
import os

import numpy as np

import fastbp as fb
from fastbp.bench import WORKLOADS, make_data, make_network

THREADS = int(os.environ.get("FASTBP_ASV_THREADS", "2"))
TRAIN_SAMPLES = 8192   # training set of the epoch, fit and track benchmarks
TEST_SAMPLES = 2048    # held out, for predict and the track benchmarks

__all__ = ["THREADS", "TRAIN_SAMPLES", "TEST_SAMPLES", "WORKLOADS", "make_network", "use_threads",
           "split", "repeated_quick_data", "kernel", "bind", "_KernelPair"]


def use_threads():
    fb.set_num_threads(THREADS)


@functools.lru_cache(maxsize=None)
def split(name):
    """(X_train, y_train, X_test, y_test): the first TRAIN_SAMPLES and last TEST_SAMPLES
    samples of the workload's seeded data (fastbp.bench.make_data: fastbp.datasets.make_teacher with the
    workload's shapes on recent commits), once per process.
    Callers must not write into them."""
    X, y = make_data(name)
    return (X[:TRAIN_SAMPLES].copy(), y[:TRAIN_SAMPLES].copy(),
            X[-TEST_SAMPLES:].copy(), y[-TEST_SAMPLES:].copy())


def repeated_quick_data(name, n):
    """The workload's small --quick data set repeated to n samples. For peakmem benchmarks:
    asv's peak memory is the whole process's, setup included, so setup must not build the
    full data set first."""
    X, y = make_data(name, quick=True)
    idx = np.arange(n) % X.shape[0]
    return X[idx], y[idx]


def kernel(family, name):
    """The Numba kernel ``fastbp.kernels.<family>.<name>``; NotImplementedError (asv: skipped)
    where the fastbp being benchmarked lacks it (asv also runs this code on older commits)."""
    try:
        module = importlib.import_module(f"fastbp.kernels.{family}")
    except ImportError as e:
        raise NotImplementedError(f"no fastbp.kernels.{family}: {e}") from None
    fn = getattr(module, name, None)
    if fn is None:
        raise NotImplementedError(f"fastbp.kernels.{family} has no kernel {name}")
    return fn


def bind(fn, values):
    """The positional arguments of the Numba kernel ``fn``, looked up by parameter name in
    ``values``. asv benchmarks older commits with today's benchmark code, and kernels gain
    arguments (``sw``, ``gscale``), so the benchmarks name what they have instead of relying
    on positions. NotImplementedError (asv: skipped) if ``fn`` wants a name not in ``values``."""
    names = list(inspect.signature(getattr(fn, "py_func", fn)).parameters)
    missing = [n for n in names if n not in values]
    if missing:
        raise NotImplementedError(f"{fn.__name__} takes {missing}, which the benchmark does not provide")
    return tuple(values[n] for n in names)


class _KernelPair:
    """Base of the kernel benchmarks: ``setup`` builds the named arrays ``v`` and calls
    ``self._bind_pair(family, op, v)``; time_forward / time_backward then call the
    <op>_forward / <op>_backward kernels. (A leading underscore: asv does not collect it.)"""

    def _bind_pair(self, family, op, v):
        self.fwd = kernel(family, op + "_forward")
        self.bwd = kernel(family, op + "_backward")
        self.fwd_args = bind(self.fwd, v)
        self.fwd(*self.fwd_args)           # compiles, and writes the backward's inputs
        self.bwd_args = bind(self.bwd, v)
        self.bwd(*self.bwd_args)

    def time_forward(self, *params):
        self.fwd(*self.fwd_args)

    def time_backward(self, *params):
        self.bwd(*self.bwd_args)
