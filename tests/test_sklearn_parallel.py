"""fastbp.sklearn estimators under joblib: GridSearchCV(n_jobs=2) on loky workers finds the
parameters n_jobs=1 finds, and with n_threads=None each worker keeps to the thread limits joblib
gives it (NUMBA_NUM_THREADS / OPENBLAS_NUM_THREADS / OMP_NUM_THREADS = cores // n_jobs), so
n_jobs x threads <= cores; also under joblib's Dask backend on a LocalCluster."""

import importlib.util
import os
import time

import numpy as np
import pytest

pytest.importorskip("sklearn")
joblib = pytest.importorskip("joblib")
from sklearn.model_selection import GridSearchCV  # noqa: E402

from fastbp.sklearn import MLPClassifier  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")   # 15 epochs on purpose

GRID = {"learning_rate_init": [1e-3, 1e-2], "alpha": [1e-4, 1e-1]}


def data():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((240, 6)).astype(np.float32)
    y = (X[:, 0] * X[:, 1] + 0.3 * X[:, 2] > 0).astype(np.int64)
    return X, y


def search(n_jobs):
    est = MLPClassifier(hidden_layer_sizes=(16,), max_iter=15, random_state=0, batch_size=32)
    return GridSearchCV(est, GRID, cv=2, n_jobs=n_jobs).fit(*data())


def _worker_threads(_):
    import numba

    import fastbp as fb
    return os.getpid(), fb.get_num_threads(), numba.get_num_threads(), numba.config.NUMBA_NUM_THREADS


def test_loky_workers_keep_to_their_thread_limits():
    cores = os.cpu_count()
    seen = joblib.Parallel(n_jobs=2)(joblib.delayed(_worker_threads)(i) for i in range(4))
    assert len({pid for pid, *_ in seen} - {os.getpid()}) >= 1      # they ran in worker processes
    limit = max(1, cores // 2)
    for _, blas, numba_now, numba_pool in seen:
        assert blas <= limit and numba_now <= limit and numba_pool <= limit, seen


def test_gridsearch_n_jobs_2_same_best_params_without_oversubscription():
    psutil = pytest.importorskip("psutil")
    ref = search(1)
    search(2)                                            # start and warm the loky workers (compiles)
    me = psutil.Process()

    def cpu():
        procs = [me] + me.children(recursive=True)
        total = 0.0
        for p in procs:
            try:
                t = p.cpu_times()
                total += t.user + t.system
            except psutil.NoSuchProcess:
                pass
        return total

    c0, t0 = cpu(), time.perf_counter()
    par = search(2)
    wall, used = time.perf_counter() - t0, cpu() - c0
    assert par.best_params_ == ref.best_params_
    np.testing.assert_array_equal(par.cv_results_["mean_test_score"], ref.cv_results_["mean_test_score"])
    assert used / wall <= 1.1 * min(2, os.cpu_count()), (used, wall)


@pytest.mark.skipif(importlib.util.find_spec("distributed") is None, reason="dask.distributed is not installed")
def test_gridsearch_on_joblibs_dask_backend():
    from dask.distributed import Client, LocalCluster
    ref = search(1)
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster, \
            Client(cluster):
        with joblib.parallel_config(backend="dask"):
            par = search(-1)
    assert par.best_params_ == ref.best_params_
    np.testing.assert_array_equal(par.cv_results_["mean_test_score"], ref.cv_results_["mean_test_score"])
