"""The one set of Numba options every kernel is compiled with, and the cache's key.

- ``cache=True``: compiled machine code is written next to the sources, so a
  second process loads it instead of recompiling.
- ``error_model="numpy"``: division by zero gives inf/nan as in NumPy instead
  of raising, so no zero check is emitted in the inner loops.
- ``fastmath`` stays off: reductions keep IEEE order and NaN/inf semantics, which
  the non-finite loss detection relies on.

Numba decides whether a cached function is fresh from its *own* source file
only, but a function's cached machine code holds the helpers it calls from other
files, linked in or inlined (the drivers call ``_blas.gemm``, ``losses.correct_count``
and ``optim.sq_sum``; the kernels use ``mathfn``), and would keep them stale after
those files changed. fastbp's functions therefore use a cache locator whose freshness stamp
is a hash of every file that holds compiled code (``kernels/*.py``, ``_blas.py``,
this file): any change there recompiles all of them.
"""

import hashlib
import os

JIT = dict(nogil=True, cache=True, error_model="numpy", fastmath=False, boundscheck=False, no_cfunc_wrapper=True)
# (no C-ABI wrapper: nothing calls fastbp's functions through one; the drivers call the kernels
# with Numba's own calling convention, kernels/table.py)
#
# The drivers that only compose kernels (hidden_forward, train_batch, ...) are inlined into
# the entry points at the Numba IR level: compiled as functions of their own, each was
# optimised and turned into machine code on its own and then again, whole, inside every
# caller. The kernels themselves (relu_forward, softmax_xent_backward, adam_update, ...) are
# inlined the same way into their family's one-signature wrapper (relu_f, ..., see
# kernels/table.py), their only caller, which is compiled on its own and called by address.
# Inlining the small helpers that the drivers call many times (view2, in_place, ...) made
# it 20-40 % slower: Numba's inliner deep-copies the callee's IR at every call site, and
# each copy is typed and optimised again.
INLINE = dict(JIT, inline="always")
# Functions that only compiled code calls (the kernels' helpers): no CPython wrapper either, the
# ~27 ms of each compile that lets Python call a function (softmax_xent_f calls six of them)
HELPER = dict(JIT, no_cpython_wrapper=True)

# Options of functions written as ``numba.extending.overload``: they compile inside their
# caller, which is the cached function.
OVERLOAD_JIT = {k: v for k, v in JIT.items() if k != "cache"}

_PKG_DIR = os.path.dirname(os.path.abspath(__file__))


def _package_stamp():
    kernels = os.path.join(_PKG_DIR, "kernels")
    paths = [os.path.join(_PKG_DIR, "_config.py"), os.path.join(_PKG_DIR, "_blas.py")]
    paths += sorted(os.path.join(kernels, f) for f in os.listdir(kernels) if f.endswith(".py"))
    h = hashlib.sha256()
    for path in paths:
        h.update(os.path.relpath(path, _PKG_DIR).encode())
        with open(path, "rb") as f:
            h.update(f.read())
    return h.hexdigest()


def _install_cache_locators():
    try:
        from numba.core import caching
    except ImportError:  # pragma: no cover
        return
    impl = getattr(caching, "CacheImpl", None) or getattr(caching, "_CacheImpl", None)
    bases = [getattr(caching, n, None) or getattr(caching, "_" + n, None)
             for n in ("UserProvidedCacheLocator", "InTreeCacheLocator", "UserWideCacheLocator")]
    if impl is None or None in bases or not isinstance(getattr(impl, "_locator_classes", None), list):
        return  # unknown numba internals: keep numba's own per-file stamps
    stamp = _package_stamp()

    def make(base):
        class Locator(base):
            @classmethod
            def from_function(cls, py_func, py_file):
                if not os.path.abspath(py_file).startswith(_PKG_DIR + os.sep):
                    return None
                return super().from_function(py_func, py_file)

            def get_source_stamp(self):
                return stamp
        Locator.__name__ = "Fastbp" + base.__name__.lstrip("_")
        return Locator

    ours = [make(b) for b in bases]
    if not any(getattr(c, "__name__", "").startswith("Fastbp") for c in impl._locator_classes):
        impl._locator_classes[:0] = ours


_install_cache_locators()


# ---- one compile per machine, not one per process ------------------------------------------
# Two processes that need the same new driver at once (joblib or Dask workers, MPI ranks, a
# warmup's pool) would both compile it. The entry points the Python side calls are therefore
# dispatchers whose first compile of a signature takes an exclusive file lock in the cache
# folder, named by the function and its argument types: the first process compiles and saves
# to Numba's cache, and the others wait on the lock and then load that result from the cache
# (Numba's compile looks in the cache before compiling). Only a compile started from Python
# (not nested in another compile) locks, so two processes cannot wait on each other. Without a
# usable cache folder, or without fcntl (Windows), each process compiles as before.
try:
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None


def _lock_path(disp, sig):
    cache = getattr(disp, "_cache", None)
    folder = getattr(cache, "_cache_path", None)
    if fcntl is None or folder is None:
        return None
    from numba.core import sigutils
    args, _ = sigutils.normalize_signature(sig)
    key = hashlib.sha256(f"{disp.py_func.__module__}.{disp.py_func.__qualname__}{tuple(args)}".encode())
    return os.path.join(folder, f"fastbp-compile-{disp.py_func.__name__}-{key.hexdigest()[:16]}.lock")


def _locking_compile(self, sig):
    from numba.core import sigutils
    from numba.core.compiler_lock import global_compiler_lock
    if global_compiler_lock.is_locked():   # nested in a compile of this process: no file lock
        return self._unlocked_compile(sig)
    args, _ = sigutils.normalize_signature(sig)
    if not self._can_compile or tuple(args) in self.overloads:
        return self._unlocked_compile(sig)
    path = _lock_path(self, sig)
    f = None
    if path is not None:
        try:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            f = open(path, "a")
            fcntl.flock(f.fileno(), fcntl.LOCK_EX)   # blocks while another process compiles it
        except OSError:
            if f is not None:
                f.close()
            f = None
    try:
        return self._unlocked_compile(sig)
    finally:
        if f is not None:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)
            f.close()


def busy(disp, sig):
    """Whether someone else (another process, or another thread here) is compiling ``disp`` for
    ``sig`` now: the lock below is held."""
    path = _lock_path(disp, sig)
    if path is None or not os.path.exists(path):
        return False
    try:
        with open(path, "a") as f:
            try:
                fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return True
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)
    except OSError:
        pass
    return False


_LOCKING = {}


def compile_locked(disp):
    """Give the Numba dispatcher ``disp`` a compile guarded by a file lock (see above); returns it."""
    base = type(disp)
    cls = _LOCKING.get(base)
    if cls is None:
        cls = type("Locking" + base.__name__, (base,), {
            "compile": _locking_compile, "_unlocked_compile": base.compile,
            "__module__": __name__})
        _LOCKING[base] = cls
        globals()[cls.__name__] = cls   # picklable by reference
    if not isinstance(disp, cls):
        disp.__class__ = cls
    return disp
