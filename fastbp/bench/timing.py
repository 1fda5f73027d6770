"""Measuring: timed epochs and predictions, NumPy's GEMM rate, and the machine probe that tells
a slow machine from a slow peer."""

import os
import statistics
import time

import numpy as np

def time_training(run_epoch, n, epochs):
    """One warm-up epoch (compile + one epoch), then ``epochs`` timed epochs.

    ``run_epoch()`` trains one epoch over all batches in order and returns its mean batch loss
    weighted by batch size (as Keras' history)."""
    t0 = time.perf_counter()
    loss_first = float(run_epoch())
    first = time.perf_counter() - t0
    times, losses = [], [loss_first]
    cpu0 = time.process_time()
    for _ in range(epochs):
        t0 = time.perf_counter()
        losses.append(float(run_epoch()))
        times.append(time.perf_counter() - t0)
    # CPU seconds per wall second of the timed epochs: well under the thread count with a
    # spinning pool means the process was starved by others on the same cores
    cpu_per_wall = (time.process_time() - cpu0) / sum(times)
    return {"first_epoch_s": first, "epoch_s": times, "samples_per_s": n * epochs / sum(times),
            "loss_first": loss_first, "loss_last": losses[-1], "losses": losses, "cpu_per_wall": cpu_per_wall,
            "load_average": os.getloadavg()[0]}


def time_predict(predict, n, reps=3):
    """Samples/s of predicting all of X: one warm-up call, then the median of ``reps`` calls."""
    predict()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        predict()
        times.append(time.perf_counter() - t0)
    return n / statistics.median(times)


def limit_blas_threads(threads):
    """threadpoolctl's limit where installed; the *_NUM_THREADS variables set at spawn otherwise."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return
    threadpool_limits(threads)


def batches(n, batch):
    return [(i, min(i + batch, n)) for i in range(0, n, batch)]


_LOOP = []


def _fastbp_gemm_loop():
    """A compiled loop of fastbp's product (made once per process)."""
    if not _LOOP:
        from numba import njit

        from .._blas import gemm

        @njit(cache=True)
        def run(ta, tb, A, B, C, count):
            for _ in range(count):
                gemm(ta, tb, 1.0, A, B, 0.0, C)
        _LOOP.append(run)
    return _LOOP[0]


def gemm_rate(m, k, n, trans_a=False, trans_b=False, min_time=0.02, reps=5, pick=min, provider=None):
    """float32 GFLOP/s of NumPy's matmul (``provider=None``), or of fastbp's own product with
    every float32 product on ``provider`` ("openblas", "onednn": ``fastbp.set_gemm_provider``)
    from compiled code, for C (m, n) = op(A) op(B), from ``reps`` timings of a loop long enough
    to take ``min_time`` seconds: the best one (``pick=min``) or, say, the median
    (``pick=statistics.median``)."""
    rng = np.random.default_rng(0)
    A = rng.standard_normal((k, m) if trans_a else (m, k), dtype=np.float32)
    B = rng.standard_normal((n, k) if trans_b else (k, n), dtype=np.float32)
    C = np.empty((m, n), np.float32)
    if provider is not None:
        import fastbp as fb
        run, before = _fastbp_gemm_loop(), fb.set_gemm_provider(provider)
        run(trans_a, trans_b, A, B, C, 1)   # compile or load it outside the timing

        def loop(count):
            t0 = time.perf_counter()
            run(trans_a, trans_b, A, B, C, count)
            return time.perf_counter() - t0
        try:
            return _rate(loop, m, n, k, min_time, reps, pick)
        finally:
            fb.set_gemm_provider(before)
    A, B = (A.T if trans_a else A), (B.T if trans_b else B)

    def loop(count):
        t0 = time.perf_counter()
        for _ in range(count):
            np.matmul(A, B, out=C)
        return time.perf_counter() - t0
    return _rate(loop, m, n, k, min_time, reps, pick)


def _rate(loop, m, n, k, min_time, reps, pick):
    """GFLOP/s of an m x n x k product from ``loop(count)`` (seconds for ``count`` products)."""
    count = 1
    while loop(count) < min_time and count < 1 << 20:
        count *= 2
    t = pick([loop(count) for _ in range(reps)]) / count
    return 2.0 * m * n * k / t / 1e9


PROBE_N, PROBE_N_QUICK = 512, 128   # the machine probe's square float32 product
PROBE_SLOW = 0.75        # a probe below this fraction of the run's median flags its round
PROBE_PAUSE_S = 0.25     # before the probe after a run (XLA's pool spun into an immediate one)


def machine_probe(threads, quick=False):
    """The machine's float32 GEMM rate right now, in GFLOP/s: NumPy's matmul of two n x n
    matrices on ``threads`` threads, the median of 5 loops of at least 10 ms.

    Every worker takes one before its run (the warm-up epoch separates it from the timed
    ones) and one after, so that a round run while the machine itself was slow can be told
    from a slow peer: on shared machines two virtual cores sometimes share one physical core,
    which halves a two-thread GEMM for seconds or minutes."""
    limit_blas_threads(threads)
    n = PROBE_N_QUICK if quick else PROBE_N
    return gemm_rate(n, n, n, min_time=0.001 if quick else 0.01, pick=statistics.median)


def slow_rounds(results, floor=None):
    """(reference GFLOP/s, [(workload, round, peer, before, after)]): the runs whose machine
    probe (either one) fell below PROBE_SLOW x the reference. The reference is the median of
    every probe of the run, but at least ``floor`` (the driver's 1-thread probe taken at start):
    a median that is itself tiny, every probe starved, must not make them all look normal."""
    probes = [g for r in results for g in r.get("probe_gflops") or ()]
    if not probes:
        return None, []
    ref = max(statistics.median(probes), floor or 0.0)
    slow = [(r["workload"], r["round"], r["peer"], *r["probe_gflops"]) for r in results
            if r.get("probe_gflops") and min(r["probe_gflops"]) < PROBE_SLOW * ref]
    return ref, slow


def starved(results, floor):
    """Whether the machine was starved for most of the run: the median probe (on the run's
    threads) below PROBE_SLOW x ``floor``, the 1-thread rate measured at start."""
    probes = [g for r in results for g in r.get("probe_gflops") or ()]
    return bool(probes) and floor is not None and statistics.median(probes) < PROBE_SLOW * floor


def fmt_gflops(g):
    """GFLOP/s to 3 significant digits (a starved probe is 0.3, not 0)."""
    return f"{g:.3g}"
