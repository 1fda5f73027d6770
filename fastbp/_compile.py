"""A cold fit trains at once: its drivers compile in a helper process while it runs them interpreted.

Numba compiles one function at a time per process, and a cold fit needs the epoch driver
(``kernels.network.train_epoch``, most of the compile: seconds) and the network's kernels
(``kernels.table``, a fraction of a second each). When the driver is not in Numba's cache,
``start_helper`` starts ``python -m fastbp._compile`` to compile, into the cache, the kernels
that are missing (last first), then ``train_epoch`` and the inference driver (``loss_all``,
which evaluate, predict and a validation set use). Meanwhile this process fills the network's
kernel table (in order, while the helper goes from the last kernel: they meet in the middle; this
process fills in last a kernel the helper is compiling at that moment, and the helper skips one
this process is compiling, which it does not need itself) and trains: while the helper
has not finished a driver (``waiting``, ``interpreting``), ``_training`` and ``Network`` run its
interpreted twin (``kernels.interp``: the same source, calling the same
compiled kernels, so the same results bit for bit) and switch to the compiled driver, loaded
from the cache, as soon as it is there. Each compile holds the cross-process file lock of
``_config.compile_locked``, so whichever process reaches a function second waits for the first
and loads its result from the cache: nothing is compiled twice.

The helper is only started when the cache is usable (a compile can be shared), the driver is
not cached yet or at least MIN_KERNELS of the network's kernels are not (a network that differs
from what this machine compiled in several choices: the two processes then share the kernels), and
not under MPI (ranks share their compiles through the lock already).
``FASTBP_COMPILE_HELPER=0`` turns it off (the driver then compiles here, before the first
batch). It inherits the environment (``NUMBA_CACHE_DIR`` included). A process that ends while
its helper is still compiling leaves it to finish on its own (one core, a few seconds), since
that compile is what the next process would otherwise pay again; the helper runs in a session
of its own, so a Ctrl-C in the terminal ends the fit but not the compile. ``wait_for_helpers`` waits for them (the start-up benchmark
does, so that a cold figure's compile does not overlap the next figure).
"""

import atexit
import base64
import os
import pickle
import subprocess
import sys
import time

ENV = "FASTBP_COMPILE_HELPER"
_MPI_ENV = ("OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMI_RANK", "MPI_LOCALNRANKS")
_HELPERS = []
_OWNER = [None]   # the process whose helpers _HELPERS lists
_PENDING = {}     # name of a driver in kernels.network -> [(a helper compiling it, the signature)]
CHECK_SECONDS = 0.2
# With the epoch driver cached, a helper only for this many missing kernels or more: it takes
# ~0.5 s to start, and for the three of batch norm or of a loss pair (0.2-1 s) it gained nothing
# beyond the spread on the 2-core Zen 3; for the eight of elu + bce + adamw + dropout it took the
# first batch from 2.56-2.68 to 2.20-2.40 s.
MIN_KERNELS = 5


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
    """If ``driver`` (a dispatcher of kernels.network) is not cached for ``driver_sig``, or at least
    MIN_KERNELS of the ``kernels`` ((family, code) pairs of kernels.table) for ``dtype`` are not,
    start a helper compiling those kernels that are not cached (the last first), then ``driver``
    and the ``later`` drivers ((name in kernels.network, signature) pairs) that are not cached
    either; returns the process (the one already compiling ``driver`` for ``driver_sig``, if this
    process has one), or None when there is no helper to start. ``waiting`` and ``interpreting``
    tell when its drivers are there."""
    from .kernels import table
    import numpy as np
    dtype = np.dtype(dtype)
    driver_sig = tuple(driver_sig)
    name = driver.py_func.__name__
    for proc, sig in _compiling(name):
        if sig == driver_sig:
            return proc
    if not _usable(driver, driver_sig):
        return None
    todo = [k for k in kernels if not is_cached(table.KERNELS[k], table.signature(k[0], dtype).args)][::-1]
    from .kernels import network as K
    drivers = [] if is_cached(driver, driver_sig) else [(name, driver_sig)]
    if not drivers and len(todo) < MIN_KERNELS:
        return None
    drivers += [(n, tuple(sig)) for n, sig in later if not is_cached(getattr(K, n), sig)]
    work = (dtype.name, todo, drivers)
    proc = _fork(work) if _can_fork() else _spawn(work)
    if proc is None:
        return None
    if _OWNER[0] != os.getpid():       # first helper of this process (or of a fork of one that had some)
        _OWNER[0] = os.getpid()
        _HELPERS.clear()
        _PENDING.clear()
        atexit.register(_leave_helpers)
    _HELPERS.append(proc)
    for n, sig in drivers:
        _PENDING.setdefault(n, []).append((proc, sig))
    return proc


def _can_fork():
    # A fork only where it is safe: Linux, and no other Python thread that could hold a lock the
    # child needs (a notebook's kernel, Dask's or tqdm's threads: those get a new interpreter);
    # FASTBP_COMPILE_HELPER=spawn always starts one
    import threading
    return (sys.platform.startswith("linux") and hasattr(os, "fork") and os.environ.get(ENV) != "spawn"
            and threading.active_count() == 1)


def _spawn(work):
    # the helper as a new interpreter: python -m fastbp._compile PAYLOAD
    payload = base64.b64encode(pickle.dumps(work)).decode()
    env = dict(os.environ)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)   # this very fastbp
    try:
        # (a session of its own: a Ctrl-C in the terminal, which ends the fit, leaves the compile to finish)
        return subprocess.Popen([sys.executable, "-m", "fastbp._compile", payload], env=env,
                                start_new_session=True, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
    except OSError:
        return None


class _Forked:
    """The few methods of subprocess.Popen that a helper needs, for a forked child."""

    def __init__(self, pid):
        self.pid, self.returncode = pid, None

    def poll(self):
        if self.returncode is None:
            try:
                pid, status = os.waitpid(self.pid, os.WNOHANG)
            except ChildProcessError:     # (reaped by someone else: a SIGCHLD handler)
                self.returncode = 0
            else:
                if pid:
                    self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def wait(self, timeout=None):
        end = None if timeout is None else time.monotonic() + timeout
        while self.poll() is None:
            if end is not None and time.monotonic() >= end:
                raise subprocess.TimeoutExpired(f"fastbp compile helper {self.pid}", timeout)
            time.sleep(0.01)
        return self.returncode


def _fork(work):
    """The helper as a fork of this process: it compiles from the first moment, where a new
    interpreter first spends 0.5-1.2 s importing NumPy, Numba and fastbp and setting up Numba's
    compiler (on the 2-core Zen 3 that was a third of a cold first batch). The fork is made
    holding Numba's compiler lock (no compile of this process is halfway in it; only ``_can_fork``'s
    one Python thread exists), and the child only compiles into the cache, in a session of its
    own, with the standard streams on /dev/null and no other file of this process open, and
    leaves through os._exit (no atexit handler, no flush of this process's buffers)."""
    import signal
    import warnings
    from numba.core.compiler_lock import global_compiler_lock
    with global_compiler_lock, warnings.catch_warnings():
        # (Python >= 3.12 warns of a fork beside native threads: OpenBLAS's idle pool; the child
        # runs no BLAS and takes no lock that such a thread could hold)
        warnings.filterwarnings("ignore", message=".*fork", category=DeprecationWarning)
        try:
            pid = os.fork()
        except OSError:
            return None
        if pid == 0:                                # the helper
            code = 1
            try:
                os.setsid()
                for sig in (signal.SIGINT, signal.SIGTERM):
                    signal.signal(sig, signal.SIG_DFL)
                null = os.open(os.devnull, os.O_RDWR)
                for fd in (0, 1, 2):
                    os.dup2(null, fd)
                for fd in [int(f) for f in os.listdir("/proc/self/fd")]:
                    if fd > 2:
                        try:
                            os.close(fd)
                        except OSError:
                            pass
                global_compiler_lock.release()
                _compile_all(*work)
                code = 0
            finally:
                os._exit(code)
    return _Forked(pid)


def _compiling(name):
    # (helper, signature) of every helper of this process still compiling driver ``name``
    if _OWNER[0] != os.getpid():
        return []
    live = _PENDING[name] = [(p, sig) for p, sig in _PENDING.get(name, ()) if p.poll() is None]
    return live


def waiting(driver, sig):
    """A function that says, each time it is called, whether ``driver`` for ``sig`` is still being
    compiled by a helper of this process (its caller then runs the interpreted twin,
    kernels.interp); from the first time it says no (the driver is in the cache or in this
    process, or the helper is gone) it always does. It looks at the cache at most every
    CHECK_SECONDS (a lookup reads the cache's index)."""
    sig = tuple(sig)
    procs = [p for p, s in _compiling(driver.py_func.__name__) if s == sig]
    if not procs or sig in driver.overloads:
        return lambda: False
    state = {"done": False, "next": 0.0}

    def still():
        if state["done"]:
            return False
        now = time.monotonic()
        if now < state["next"]:
            return True
        state["next"] = now + CHECK_SECONDS
        state["done"] = all(p.poll() is not None for p in procs) or is_cached(driver, sig)
        return not state["done"]
    return still


def interpreting(driver, args):
    """Whether a call of ``driver`` with ``args`` should run its interpreted twin: a helper of this
    process is compiling ``driver`` (for these or other argument types: a cold fit's helper
    compiles loss_all for predict, and an evaluate with targets waits for it too), and it is not
    in this process or the cache for these arguments' types."""
    if not _compiling(driver.py_func.__name__):
        return False
    from numba import typeof
    sig = tuple(typeof(a) for a in args)
    return sig not in driver.overloads and not is_cached(driver, sig)


def _leave_helpers():
    # at exit, helpers still compiling go on by themselves (on purpose): mark them so that Popen does
    # not take them for a leak when it is collected ("ResourceWarning: subprocess ... is still running")
    if _OWNER[0] == os.getpid():
        for proc in _HELPERS:
            if proc.poll() is None:
                proc.returncode = 0


def wait_for_helpers(timeout=None):
    """Wait until this process's helpers have finished (at most ``timeout`` seconds); returns
    whether they have."""
    if _OWNER[0] != os.getpid():
        return True
    end = None if timeout is None else time.monotonic() + timeout
    try:
        for proc in _HELPERS:
            proc.wait(None if end is None else max(0.0, end - time.monotonic()))
    except subprocess.TimeoutExpired:
        return False
    return True


def main(argv=None):
    """The helper: compile the kernels, then the drivers, named in the payload."""
    argv = sys.argv[1:] if argv is None else argv
    _compile_all(*pickle.loads(base64.b64decode(argv[0])))
    return 0


def _compile_all(dtype, kernels, drivers):
    from ._config import busy
    from .kernels import network as K, table
    for family, code in kernels:     # (the fit's own process needs them, not this one: skip what it compiles)
        disp, sig = table.KERNELS[family, code], table.signature(family, dtype).args
        if not is_cached(disp, sig) and not busy(disp, sig):
            table.address(family, code, dtype)
    for name, sig in drivers:
        getattr(K, name).compile(sig)


if __name__ == "__main__":
    sys.exit(main())
