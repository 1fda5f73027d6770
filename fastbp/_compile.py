"""A cold fit compiles in two processes: the driver here, its kernels (and inference) in a helper.

Numba compiles one function at a time per process, and a cold fit needs the epoch driver
(``kernels.network.train_epoch``, most of the compile) and the network's kernels
(``kernels.table``), which do not depend on each other until the first batch runs. When
neither is in Numba's cache, ``start_helper`` starts ``python -m fastbp._compile`` to compile
the missing kernels and then the inference driver (``loss_all``, which evaluate, predict and a
validation set use) into the cache, while this process compiles ``train_epoch``. Each compile
holds the cross-process file lock of ``_config.compile_locked``, so whichever process reaches a
function second waits for the first and loads its result from the cache: nothing is compiled
twice, and the results do not depend on which process compiled what (the same machine code,
loaded from the same cache).

The helper is only started when the cache is usable (a compile can be shared), the driver is
not cached yet (the helper then has several seconds to finish in), and not under MPI (ranks
share their compiles through the lock already). ``FASTBP_COMPILE_HELPER=0`` turns it off. It
inherits the environment (``NUMBA_CACHE_DIR`` included) and is stopped when this process
exits, if it is still running then (a process that ends without running its exit handlers, as
a forked multiprocessing worker does, leaves it to finish its compile and exit by itself).
"""

import atexit
import base64
import os
import pickle
import subprocess
import sys

ENV = "FASTBP_COMPILE_HELPER"
_MPI_ENV = ("OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMI_RANK", "MPI_LOCALNRANKS")
_HELPERS = []
_OWNER = [None]   # the process whose helpers _HELPERS lists


def is_cached(disp, sig):
    """Whether dispatcher ``disp`` has ``sig`` compiled in this process or in Numba's cache (read
    from the cache's index; nothing is loaded). False when that cannot be told."""
    sig = tuple(sig)
    if sig in disp.overloads:
        return True
    try:
        cache = disp._cache
        if not cache._enabled:
            return False
        key = cache._index_key(sig, disp.targetctx.codegen())
        return key in cache._cache_file._load_index()
    except Exception:   # noqa: BLE001 - numba internals of another version: assume not cached
        return False


def _usable(disp, sig):
    from ._config import _lock_path
    return os.environ.get(ENV, "1") != "0" and not any(v in os.environ for v in _MPI_ENV) and \
        _lock_path(disp, sig) is not None


def start_helper(driver, driver_sig, kernels, dtype, later=()):
    """If ``driver`` (a dispatcher) is not cached for ``driver_sig`` and some of ``kernels``
    ((family, code) pairs of kernels.table) are not either, start a helper compiling those
    kernels for ``dtype`` and then the ``later`` drivers ((name in kernels.network, signature)
    pairs) that are not cached; returns the process, or None when it is not worth one."""
    from .kernels import table
    import numpy as np
    dtype = np.dtype(dtype)
    if is_cached(driver, driver_sig) or not _usable(driver, driver_sig):
        return None
    todo = [k for k in kernels if not is_cached(table.KERNELS[k], table.signature(k[0], dtype).args)]
    if not todo:
        return None
    from .kernels import network as K
    later = [(name, tuple(sig)) for name, sig in later if not is_cached(getattr(K, name), sig)]
    payload = base64.b64encode(pickle.dumps((dtype.name, todo, later))).decode()
    env = dict(os.environ)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)   # this very fastbp
    try:
        proc = subprocess.Popen([sys.executable, "-m", "fastbp._compile", payload], env=env,
                                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    except OSError:
        return None
    if _OWNER[0] != os.getpid():       # first helper of this process (or of a fork of one that had some)
        _OWNER[0] = os.getpid()
        _HELPERS.clear()
        atexit.register(_stop_helpers)
    _HELPERS.append(proc)
    return proc


def _stop_helpers():
    for proc in _HELPERS:
        if proc.poll() is None:
            proc.terminate()     # (Numba writes cache files atomically: a stopped compile leaves none)
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:   # pragma: no cover
                proc.kill()
    _HELPERS.clear()


def main(argv=None):
    """The helper: compile the kernels, then the drivers, named in the payload."""
    argv = sys.argv[1:] if argv is None else argv
    dtype, kernels, later = pickle.loads(base64.b64decode(argv[0]))
    from .kernels import network as K
    from .kernels.table import address
    for family, code in kernels:
        address(family, code, dtype)
    for name, sig in later:
        getattr(K, name).compile(sig)
    return 0


if __name__ == "__main__":
    sys.exit(main())
