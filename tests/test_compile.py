"""fastbp._compile: a cold fit trains interpreted while a helper process compiles its drivers.

Real child processes on empty Numba caches: with the helper the first process compiles none of
the drivers (the helper does, and some of the kernels), runs its batches and predictions through
the interpreted drivers (kernels.interp), trains bit for bit as the test process does (from its
own cache), and leaves the helper to finish its compile by itself when it exits.
"""

import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest

import fastbp as fb
from fastbp import _compile
from fastbp.kernels import network as K

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(fb.__file__)))


def _train(epochs=None, **net_kw):
    # epochs=None: until an epoch ran with the compiled driver (a cold process: its helper then
    # compiled it meanwhile), a short pause after each so that the epochs stay few. Returns the
    # network, its predictions after the first epoch and at the end, and the epochs trained
    rng = np.random.default_rng(0)
    X = rng.standard_normal((64, 5)).astype(np.float32); y = rng.integers(0, 3, 64)
    net = fb.Network([5, 7, 3], **dict(dict(activation="tanh", seed=0), **net_kw))
    first = []
    t0 = time.monotonic()

    class Probe(fb.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if epoch == 0:
                first.append(net.predict_proba(X))
            if epochs is None:
                net.stop_training = bool(K.train_epoch.overloads) or time.monotonic() - t0 > 120
                time.sleep(0.02)

    hist = net.fit(X, y, epochs=epochs or 10 ** 6, batch_size=16, optimizer="sgd", verbose=0, callbacks=[Probe()])
    return net, first[0], net.predict_proba(X), len(hist.history["loss"])


CHILD = r"""
import json, os, sys
import numpy as np
import fastbp as fb
from fastbp import _compile
from fastbp.kernels import network as K, table as T
from fastbp.kernels import interp
from tests.test_compile import _train
calls = []
for name in ("train_epoch", "loss_all"):
    def counted(*args, _f=getattr(interp, name), _name=name):
        calls.append(_name)
        return _f(*args)
    setattr(interp, name, counted)
net, P0, P, epochs = _train(**json.loads(sys.argv[1]))
misses = lambda d: sum(d._cache_misses.values())
print(json.dumps({"compiled here": sorted(d.py_func.__name__ for d in {*T.KERNELS.values(), K.train_epoch, K.loss_all}
                                          if misses(d)),
                  "interpreted": sorted(set(calls)), "interpreted calls": calls.count("train_epoch"),
                  "compiled": bool(K.train_epoch.overloads), "epochs": epochs,
                  "helpers": [p.pid for p in _compile._HELPERS],
                  "forked": [isinstance(p, _compile._Forked) for p in _compile._HELPERS],
                  "params": net.params.tolist(), "P0": P0.tolist(), "P": P.tolist()}))
"""


def _run(cache, helper, **net_kw):
    # helper: True (a fork of the child), "spawn" (a new interpreter) or False (none)
    env = dict(os.environ, NUMBA_CACHE_DIR=str(cache), FASTBP_COMPILE_HELPER={True: "1", False: "0"}.get(helper, helper))
    env["PYTHONPATH"] = os.pathsep.join(p for p in (ROOT, os.environ.get("PYTHONPATH")) if p)
    for v in _compile._MPI_ENV:
        env.pop(v, None)
    out = subprocess.run([sys.executable, "-W", "default::ResourceWarning", "-c", CHILD, json.dumps(net_kw)], env=env,
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "ResourceWarning" not in out.stderr, out.stderr[-3000:]   # (a helper left to finish is no leak)
    return json.loads(out.stdout.strip().splitlines()[-1])


def _gone(pid, timeout=120):
    # the helper a child left behind finishes its compile on its own
    t0 = time.monotonic()
    while _alive(pid):
        assert time.monotonic() - t0 < timeout, "the helper is still running"
        time.sleep(0.05)
    return True


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as f:   # a zombie is not alive
        return f.read().split()[2] != "Z"


def test_a_cold_fit_trains_interpreted_while_a_helper_compiles_and_trains_the_same(tmp_path):
    # (tests/test_table.py checks what a cold process compiles without the helper: the network's
    # kernels and both drivers)
    cold = _run(tmp_path, True)
    # the helper compiled the drivers (this process at most some of the kernels); the first epochs
    # and the prediction after the first ran interpreted meanwhile, then the fit went on with the
    # compiled driver, loaded from the cache; the helper, left behind, finishes by itself
    assert "train_epoch" not in cold["compiled here"] and "loss_all" not in cold["compiled here"]
    assert cold["interpreted"] == ["loss_all", "train_epoch"] and cold["compiled"]
    assert cold["interpreted calls"] >= 1 and cold["epochs"] > 1
    assert len(cold["helpers"]) == 1 and cold["forked"] == [True] and _gone(cold["helpers"][0])
    # bit for bit as this process trains, from the cache the suite's warmup filled (or its own compile)
    net, P0, P, _ = _train(cold["epochs"])
    assert cold["params"] == net.params.tolist() and cold["P0"] == P0.tolist() and cold["P"] == P.tolist()
    # a warm cache (what the helper compiled): no helper, nothing compiled or interpreted
    warm = _run(tmp_path, True)
    assert warm["helpers"] == [] and warm["compiled here"] == [] and warm["interpreted"] == []
    # the drivers cached, five new kernels (elu's and batch norm's): a helper shares them, nothing
    # runs interpreted; this time the helper is a new interpreter (FASTBP_COMPILE_HELPER=spawn, as
    # where a fork is not safe: _can_fork)
    new = _run(tmp_path, "spawn", activation="elu", norm="batch")
    assert len(new["helpers"]) == 1 and new["forked"] == [False] and _gone(new["helpers"][0])
    assert new["interpreted"] == []
    assert set(new["compiled here"]) <= {"elu_f", "elu_b", "batchnorm_f", "batchnorm_b", "batchnorm_u"}
    assert new["compiled here"], "this process compiles its share (the first ones) itself"
    # two new kernels (relu's): no helper
    assert _run(tmp_path, True, activation="relu")["helpers"] == []


def test_no_helper_when_the_driver_is_cached_or_it_is_turned_off(monkeypatch):
    net = fb.Network([3, 4, 2], seed=0)
    X, y = np.zeros((8, 3), np.float32), np.arange(8) % 2
    net.fit(X, y, epochs=1, verbose=0)            # this process has the driver now
    _compile.wait_for_helpers()                   # (and a helper it started on a cold cache is done)
    sig = next(iter(K.train_epoch.overloads))
    assert _compile.is_cached(K.train_epoch, sig)
    assert _compile.start_helper(K.train_epoch, sig, [("act_f", 1)], np.float32) is None
    monkeypatch.setenv("FASTBP_COMPILE_HELPER", "0")
    assert not _compile._usable(K.train_epoch, sig)
    monkeypatch.delenv("FASTBP_COMPILE_HELPER")
    monkeypatch.setenv("PMI_RANK", "0")           # under MPI
    assert not _compile._usable(K.train_epoch, sig)


def test_busy_tells_that_another_process_compiles_a_kernel(tmp_path):
    # kernels.table fills a table with what no other process is compiling first (_config.busy)
    from fastbp._config import _lock_path, busy
    from fastbp.kernels import table
    disp, sig = table.KERNELS["act_f", 1], table.signature("act_f", np.float32).args
    path = _lock_path(disp, sig)
    if path is None:
        import pytest
        pytest.skip("no cache folder with file locks here")
    holder = subprocess.Popen([sys.executable, "-c", f"import fcntl, sys, time\nf = open({path!r}, 'a')\n"
                               "fcntl.flock(f.fileno(), fcntl.LOCK_EX)\nprint('held', flush=True)\ntime.sleep(60)"],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        assert busy(disp, sig)
    finally:
        holder.kill()
        holder.wait()
    assert not busy(disp, sig)


_CAN_FORK = r"""
import os, threading
from fastbp import _compile
out = [_compile._can_fork()]
os.environ["FASTBP_COMPILE_HELPER"] = "spawn"
out.append(_compile._can_fork())
del os.environ["FASTBP_COMPILE_HELPER"]
stop = threading.Event()
other = threading.Thread(target=stop.wait)
other.start()
out.append(_compile._can_fork())     # (a notebook's, Dask's or tqdm's threads: a new interpreter)
stop.set(); other.join()
out.append(_compile._can_fork())
print(out)
"""


def test_a_fork_only_where_no_other_python_thread_runs():
    # (in a process of its own: the test process may have threads of its own, pytest-xdist's)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (ROOT, os.environ.get("PYTHONPATH")) if p))
    env.pop("FASTBP_COMPILE_HELPER", None)
    out = subprocess.run([sys.executable, "-c", _CAN_FORK], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    linux = sys.platform.startswith("linux")
    assert out.stdout.split() == [f"[{linux},", "False,", "False,", f"{linux}]"]


def test_a_forked_helper_is_waited_for_and_reaped():
    if not hasattr(os, "fork"):
        pytest.skip("no os.fork on this platform (the helper is then always a new interpreter)")
    pid = os.fork()
    if pid == 0:
        time.sleep(0.3)
        os._exit(3)
    proc = _compile._Forked(pid)
    assert proc.poll() is None
    with pytest.raises(subprocess.TimeoutExpired):
        proc.wait(0.05)
    assert proc.wait(30) == 3 and proc.poll() == 3 and not _alive(pid)
