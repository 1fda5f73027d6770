"""Time to the first trained batch in a fresh process, with Numba's cache cold and warm.

Each call runs a new interpreter that imports fastbp, builds the ``small`` network and fits
one batch of 32 (``CHILD``), with ``NUMBA_CACHE_DIR`` pointed at a temporary folder. fastbp's
cache locators keep Numba's order, so the user-provided folder comes first: ``cold`` gives
each call an empty folder (every kernel and driver compiles), ``warm`` one folder filled by a
run before the first sample (everything loads from the cache). The time includes starting
Python and importing NumPy and Numba (about a second). Nothing is written outside the
temporary folders, which are removed when the benchmark process exits.
"""

import atexit
import os
import shutil
import site
import subprocess
import sys
import tempfile
import time

import fastbp

CHILD = """
import fastbp
from fastbp.bench import WORKLOADS, make_data, make_network
X, y = make_data("small", quick=True)
net, opt = make_network(WORKLOADS["small"])
net.fit(X[:32], y[:32], epochs=1, batch_size=32, optimizer=opt)
"""
CHILD_TIMEOUT_S = 600

_state = {}


def _tmp_root():
    """One temporary folder per process for all the caches, removed at exit (asv re-runs
    setup and teardown between samples, so they cannot own it)."""
    if "root" not in _state:
        _state["root"] = tempfile.mkdtemp(prefix="fastbp-asv-compile-")
        atexit.register(shutil.rmtree, _state["root"], True)
    return _state["root"]


def _child_env(cache_dir):
    env = dict(os.environ, NUMBA_CACHE_DIR=cache_dir)
    # the child must import the fastbp this process benchmarks: asv drops PYTHONPATH and puts
    # its own paths on sys.path, so name the folder that holds it (unless it is site-packages)
    root = os.path.dirname(os.path.dirname(os.path.abspath(fastbp.__file__)))
    if root not in site.getsitepackages():
        env["PYTHONPATH"] = os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p)
    return env


def run_child(cache_dir):
    """Run CHILD with the given Numba cache folder; its wall time in seconds."""
    env = _child_env(cache_dir)
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", CHILD], cwd=cache_dir, env=env, capture_output=True,
                          text=True, timeout=CHILD_TIMEOUT_S)
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"first-batch child failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return seconds


def warm_cache_dir():
    """A cache folder filled by one run of CHILD (once per process)."""
    if "warm" not in _state:
        d = tempfile.mkdtemp(prefix="warm-", dir=_tmp_root())
        run_child(d)
        _state["warm"] = d
    return _state["warm"]


class FirstBatch:
    params = [["cold", "warm"]]
    param_names = ["cache"]
    number = 1
    repeat = 1
    rounds = 2
    warmup_time = 0.0
    timeout = 900   # cold: about 9 s per call on 2 cores; warm adds one cold run to fill its cache

    def setup(self, cache):
        self.cache_dir = warm_cache_dir() if cache == "warm" else None
        self.cold_dirs = []

    def teardown(self, cache):
        for d in self.cold_dirs:
            shutil.rmtree(d, ignore_errors=True)

    def time_first_batch(self, cache):
        d = self.cache_dir
        if d is None:
            d = tempfile.mkdtemp(prefix="cold-", dir=_tmp_root())   # empty: everything compiles
            self.cold_dirs.append(d)
        run_child(d)
