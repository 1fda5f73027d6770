"""fastbp._compile: a cold fit compiles its kernels and the inference driver in a helper process.

Real child processes on empty Numba caches: with the helper the first process compiles only the
epoch driver itself and loads the kernels and ``loss_all`` from the cache the helper filled,
trains bit for bit as the test process does (from its own cache), and leaves no process behind.
"""

import json
import os
import subprocess
import sys

import numpy as np

import fastbp as fb
from fastbp import _compile
from fastbp.kernels import network as K

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(fb.__file__)))


def _train():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((64, 5)).astype(np.float32); y = rng.integers(0, 3, 64)
    net = fb.Network([5, 7, 3], activation="tanh", seed=0)
    net.fit(X, y, epochs=2, batch_size=16, optimizer="sgd", verbose=0)
    return net, net.predict_proba(X)


CHILD = r"""
import json, os
import numpy as np
import fastbp as fb
from fastbp import _compile
from fastbp.kernels import network as K, table as T
from tests.test_compile import _train
net, P = _train()
misses = lambda d: sum(d._cache_misses.values())
print(json.dumps({"compiled here": sorted(d.py_func.__name__ for d in {*T.KERNELS.values(), K.train_epoch, K.loss_all}
                                          if misses(d)),
                  "helpers": [p.pid for p in _compile._HELPERS],
                  "params": net.params.tolist(), "P": P.tolist()}))
"""


def _run(cache, helper):
    env = dict(os.environ, NUMBA_CACHE_DIR=str(cache), FASTBP_COMPILE_HELPER="1" if helper else "0")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (ROOT, os.environ.get("PYTHONPATH")) if p)
    for v in _compile._MPI_ENV:
        env.pop(v, None)
    out = subprocess.run([sys.executable, "-c", CHILD], env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as f:   # a zombie is not alive
        return f.read().split()[2] != "Z"


def test_a_cold_fit_shares_its_compile_with_a_helper_and_trains_the_same(tmp_path):
    # (tests/test_table.py checks what a cold process compiles without the helper: the network's
    # kernels and both drivers)
    with_helper = _run(tmp_path, True)
    # this process compiled the epoch driver, the helper the rest, and it is gone
    assert with_helper["compiled here"] == ["train_epoch"]
    assert len(with_helper["helpers"]) == 1 and not _alive(with_helper["helpers"][0])
    # bit for bit as this process trains, from the cache the suite's warmup filled (or its own compile)
    net, P = _train()
    assert with_helper["params"] == net.params.tolist() and with_helper["P"] == P.tolist()
    # a warm cache: no helper, nothing compiled
    warm = _run(tmp_path, True)
    assert warm["helpers"] == [] and warm["compiled here"] == []


def test_no_helper_when_the_driver_is_cached_or_it_is_turned_off(monkeypatch):
    net = fb.Network([3, 4, 2], seed=0)
    X, y = np.zeros((8, 3), np.float32), np.arange(8) % 2
    net.fit(X, y, epochs=1, verbose=0)            # this process has the driver now
    sig = next(iter(K.train_epoch.overloads))
    assert _compile.is_cached(K.train_epoch, sig)
    assert _compile.start_helper(K.train_epoch, sig, [("act_f", 1)], np.float32) is None
    monkeypatch.setenv("FASTBP_COMPILE_HELPER", "0")
    assert not _compile._usable(K.train_epoch, sig)
    monkeypatch.delenv("FASTBP_COMPILE_HELPER")
    monkeypatch.setenv("PMI_RANK", "0")           # under MPI
    assert not _compile._usable(K.train_epoch, sig)
