"""Where a sweep's runs train: in this process, in local worker processes (``--jobs N``), or on a
Dask cluster (``--dask``). Each backend takes tasks and hands back (task, summary or error) as
runs finish; the scheduling is the engines' own (concurrent.futures, dask.distributed).

A task is a plain dict (picklable): the resolved config, the config file and overrides (for
messages and relative paths), the run folder, the plot flag and the run's thread count. A worker
loads the task's data itself (paths must be readable where the worker runs) and keeps it for
the next task with the same [data].
"""

import concurrent.futures as cf
import json
import multiprocessing
import os
import signal
import sys

from ..callbacks import Callback
from .checks import Context

_DATA = {}   # per worker process: json of cfg["data"] -> Data


def run_task(task):
    """Train one run as ``task`` says; the summary of :func:`fastbp.cli.run.run_training`."""
    from .. import set_num_threads
    from .data import load_data
    from .run import run_training
    ctx = Context(task["file"], task["overrides"])
    key = json.dumps(task["cfg"]["data"], sort_keys=True)
    if key not in _DATA:
        _DATA.clear()
        _DATA[key] = load_data(task["cfg"], ctx)
    if task["threads"] is not None:
        set_num_threads(task["threads"])
    s = run_training(task["cfg"], _DATA[key], ctx, task["run_dir"], verbose=0, plot=task["plot"],
                     log=lambda *a, **k: None, callbacks=task.get("callbacks", ()))
    s["pid"] = os.getpid()
    s["pruned"] = any(getattr(cb, "pruned", False) for cb in task.get("callbacks", ()))
    return s


def median_pruner():
    import optuna
    return optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=1)


class OptunaPruning(Callback):
    """A fit callback that reports the sweep's metric to an Optuna trial after every epoch and
    stops the run when the study's pruner says so. Picklable: it holds the storage URL, study
    name and trial id, and opens the trial where the run trains (any process that reaches the
    storage)."""
    def __init__(self, storage, study, number, monitor):
        self.storage, self.study, self.number, self.monitor = storage, study, number, monitor
        self.pruned = False
        self._trial = None

    def on_train_begin(self, logs=None):
        import optuna
        study = optuna.load_study(study_name=self.study, storage=self.storage, pruner=median_pruner())
        storage = optuna.storages.RDBStorage(self.storage)
        trial_id = storage.get_trial_id_from_study_id_trial_number(storage.get_study_id_from_name(self.study),
                                                                   self.number)
        self._trial = optuna.trial.Trial(study, trial_id)

    def on_epoch_end(self, epoch, logs=None):
        v = (logs or {}).get(self.monitor)
        if v is None or self._trial is None:
            return
        self._trial.report(float(v), epoch)
        if self._trial.should_prune():
            self.pruned = True
            self.model.stop_training = True

    def __getstate__(self):
        return {k: v for k, v in self.__dict__.items() if k not in ("_trial", "model")}

    def __setstate__(self, state):
        self.__dict__.update(state, _trial=None, model=None)


def _init_worker():
    signal.signal(signal.SIGINT, signal.SIG_IGN)   # Ctrl-C is the parent's to handle: it stops the workers


def cpu_count():
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


class InProcess:
    """``--jobs 1``: every run in this process, one after another."""
    name = "in this process"

    def __init__(self):
        self._queue = []

    def submit(self, task):
        self._queue.append(task)

    def running(self):
        return 0

    def results(self):
        while self._queue:
            task = self._queue.pop(0)
            yield task, run_task(task), None   # KeyboardInterrupt inside fit comes back as status "interrupted"

    def close(self, cancel=False):
        self._queue.clear()


def start_context():
    """How worker processes start: forked on Linux, so that a worker begins with this process's
    imports (NumPy, Numba, fastbp: 0.5-1 s a spawned worker spends first; a sweep of short runs
    on 2 cores went from 1.62x to 1.8x --jobs 1 with fork); spawned elsewhere. fastbp runs no
    thread pool of its own that a fork could break (no parallel=True kernel; NumPy's OpenBLAS
    re-creates its threads after a fork)."""
    if sys.platform.startswith("linux") and "fork" in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("fork")
    return multiprocessing.get_context("spawn")


class LocalJobs:
    """``--jobs N``: N worker processes, one ``ProcessPoolExecutor(max_workers=1)`` each
    (``start_context``), reused run after run so each compiles once. One executor per worker, so
    a worker that dies breaks only its own run: that run is a failed row, the executor is replaced
    and the others go on. (A single N-worker pool marks every running future broken when one
    worker dies.)
    """

    def __init__(self, jobs):
        self.jobs = jobs
        self.name = f"{jobs} worker processes"
        self._ctx = start_context()
        self._free = [None] * jobs          # executors not running a task (None: start one when needed)
        self._busy = {}                     # future -> (executor, task)
        self._queue = []

    def _executor(self):
        ex = self._free.pop()
        return ex if ex is not None else cf.ProcessPoolExecutor(1, mp_context=self._ctx, initializer=_init_worker)

    def submit(self, task):
        self._queue.append(task)

    def _fill(self):
        while self._queue and self._free:
            task = self._queue.pop(0)
            ex = self._executor()
            try:
                fut = ex.submit(run_task, task)
            except cf.process.BrokenProcessPool:     # its worker died while idle: a fresh one
                ex.shutdown(wait=False)
                ex = cf.ProcessPoolExecutor(1, mp_context=self._ctx, initializer=_init_worker)
                fut = ex.submit(run_task, task)
            self._busy[fut] = (ex, task)

    def running(self):
        return len(self._busy)

    def results(self):
        self._fill()
        while self._busy:
            done, _ = cf.wait(list(self._busy), return_when=cf.FIRST_COMPLETED)
            for fut in done:
                ex, task = self._busy.pop(fut)
                try:
                    res, err = fut.result(), None
                    self._free.append(ex)
                except cf.process.BrokenProcessPool:
                    ex.shutdown(wait=False)
                    self._free.append(None)
                    res, err = None, "the worker process died (killed, or out of memory) during the run"
                except Exception as e:   # noqa: BLE001 - a run's own failure is its row, not the sweep's
                    self._free.append(ex)
                    res, err = None, f"{type(e).__name__}: {' '.join(str(e).split())}"
                self._fill()
                yield task, res, err

    def close(self, cancel=False):
        self._queue.clear()
        executors = [ex for ex in self._free if ex is not None] + [ex for ex, _ in self._busy.values()]
        procs = [p for ex in executors for p in (getattr(ex, "_processes", None) or {}).values()]
        for ex in executors:
            ex.shutdown(wait=not cancel, cancel_futures=cancel)
        if cancel:   # stop the running ones now (this sweep's workers only); their runs are not recorded
            for p in procs:
                if p.is_alive():
                    p.terminate()
            for p in procs:
                p.join(5)
        self._busy.clear()
        self._free = [None] * self.jobs


class DaskUnreachable(Exception):
    pass


class DaskJobs:
    """``--dask ADDRESS`` (or ``local``: a LocalCluster of ``jobs`` worker processes × 1 thread).
    A worker that dies is retried by the scheduler and, after its allowed failures, the run is a
    failed row (distributed's KilledWorker)."""

    def __init__(self, address, jobs, timeout=5):
        try:
            from dask.distributed import Client, LocalCluster
        except ImportError:
            raise ImportError("--dask needs dask.distributed: pip install 'fastbp[dask]'") from None
        self._cluster = None
        if address == "local":
            import dask
            # the worker processes start as --jobs's do (start_context): forked on Linux
            with dask.config.set({"distributed.worker.multiprocessing-method": start_context()._name}):
                self._cluster = LocalCluster(n_workers=jobs, threads_per_worker=1, processes=True,
                                             dashboard_address=None)
            self._client = Client(self._cluster)
            self.name = f"a Dask LocalCluster of {jobs} worker processes"
            self.jobs = jobs
        else:
            addr = address if "://" in address else f"tcp://{address}"
            try:
                self._client = Client(addr, timeout=timeout)
            except (OSError, TimeoutError) as e:
                raise DaskUnreachable(f"cannot reach the Dask scheduler at {addr} within {timeout} s "
                                      f"({type(e).__name__})") from None
            workers = self._client.scheduler_info()["workers"]
            self.jobs = max(1, sum(w.get("nthreads", 1) for w in workers.values()))
            self.name = f"the Dask cluster at {addr} ({len(workers)} workers)"
        self._futures = {}

    def submit(self, task):
        fut = self._client.submit(run_task, task, pure=False, key=f"fastbp-run-{os.path.basename(task['run_dir'])}-"
                                                                 f"{os.urandom(4).hex()}")
        self._futures[fut] = task

    def running(self):
        return sum(1 for f in self._futures if f.status == "pending")

    def results(self):
        from dask.distributed import as_completed
        for fut in as_completed(list(self._futures)):
            task = self._futures.pop(fut)
            try:
                res, err = fut.result(), None
            except Exception as e:   # noqa: BLE001 - KilledWorker, or the run's own failure
                res, err = None, f"{type(e).__name__}: {' '.join(str(e).split())}"
            yield task, res, err

    def close(self, cancel=False):
        if cancel and self._futures:
            self._client.cancel(list(self._futures))
        self._futures.clear()
        self._client.close()
        if self._cluster is not None:
            self._cluster.close()
