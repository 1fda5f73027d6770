"""The matrix product used by every kernel, and the BLAS thread knob.

Numba's own ``np.dot`` goes through SciPy's bundled (older, LP64) OpenBLAS and
allocates its result. fastbp instead calls ``cblas_sgemm``/``cblas_dgemm`` of the
OpenBLAS that NumPy itself ships (ILP64, ``scipy_`` prefixed symbols), writing
into buffers we own, with transposes and ``beta`` (overwrite or accumulate) for
free.

The library's address is registered with LLVM under a fixed symbol name
(``fastbp_sgemm`` / ``fastbp_dgemm``) and the kernels call that name as an
external function. Because the address is resolved when code is linked, not
baked into it, ``cache=True`` keeps working across processes.

When NumPy ships no usable OpenBLAS (other platforms, or ``FASTBP_BLAS=numba``
in the environment), the same symbols point at a plain Numba ``cfunc`` GEMM:
correct, slower, and dependency-free.
"""

import ctypes
import ctypes.util
import glob
import os
import sys
import time

import llvmlite.binding as llvm
import numba
import numpy as np
from llvmlite import ir
from numba import carray, cfunc, njit, types
from numba.extending import intrinsic

from ._config import JIT

# CBLAS enums
ROW_MAJOR = 101
NO_TRANS = 111
TRANS = 112

_i32, _i64 = types.int32, types.int64


def _gemm_sig(ft, ptr):
    # (order, transa, transb, m, n, k, alpha, A, lda, B, ldb, beta, C, ldc)
    return types.void(_i32, _i32, _i32, _i64, _i64, _i64, ft, ptr, _i64, ptr, _i64, ft, ptr, _i64)


def _fallback_gemm(order, transa, transb, m, n, k, alpha, pa, lda, pb, ldb, beta, pc, ldc):
    # Row-major C = alpha op(A) op(B) + beta C, i-p-j order so the inner loop is contiguous in C.
    C = carray(pc, (m, ldc))
    A = carray(pa, (k if transa == TRANS else m, lda))
    B = carray(pb, (n if transb == TRANS else k, ldb))
    for i in range(m):
        for j in range(n):
            C[i, j] = 0.0 if beta == 0.0 else beta * C[i, j]
        for p in range(k):
            a = alpha * (A[p, i] if transa == TRANS else A[i, p])
            if transb == TRANS:
                for j in range(n):
                    C[i, j] += a * B[j, p]
            else:
                for j in range(n):
                    C[i, j] += a * B[p, j]


def _omatcopy_sig(ft, ptr):
    # (order, trans, rows, cols, alpha, A, lda, B, ldb): B (cols, rows) = alpha A^T for A (rows, cols)
    return types.void(_i32, _i32, _i64, _i64, ft, ptr, _i64, ptr, _i64)


def _fallback_omatcopy(order, trans, rows, cols, alpha, pa, lda, pb, ldb):
    # Row-major, transposing only (the one use): B = alpha A^T.
    A = carray(pa, (rows, lda))
    B = carray(pb, (cols, ldb))
    for i in range(rows):
        for j in range(cols):
            B[j, i] = alpha * A[i, j]


def _find_numpy_openblas():
    """(library, prefix) of NumPy's bundled ILP64 OpenBLAS, or (None, None)."""
    base = os.path.dirname(np.__file__)
    candidates = []
    for d in (base + ".libs", os.path.join(base, ".dylibs"), base):
        candidates += glob.glob(os.path.join(d, "*openblas*"))
    for path in candidates:
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        for prefix, suffix in (("scipy_", "64_"), ("", "64_")):
            names = [f"{prefix}cblas_{f}{suffix}" for f in ("sgemm", "dgemm")]
            if all(hasattr(lib, name) for name in names):
                return lib, (prefix, suffix, path)
    return None, None


def _address(fn):
    return ctypes.cast(fn, ctypes.c_void_p).value


_KEEP = []


def _compile_fallbacks(names):
    """Plain Numba cfuncs behind the ``fastbp_<name>`` symbols (see the module docstring)."""
    sigs = {"sgemm": (_fallback_gemm, _gemm_sig, types.float32), "dgemm": (_fallback_gemm, _gemm_sig, types.float64),
            "somatcopy": (_fallback_omatcopy, _omatcopy_sig, types.float32),
            "domatcopy": (_fallback_omatcopy, _omatcopy_sig, types.float64)}
    for name in names:
        fn, sig, ft = sigs[name]
        f = cfunc(sig(ft, types.CPointer(ft)), **JIT)(fn)
        llvm.add_symbol("fastbp_" + name, f.address)
        _KEEP.append(f)  # keep the compiled cfunc alive


def _setup():
    info = {"provider": "numba-fallback", "library": None, "config": None, "omatcopy": "numba-fallback"}
    lib, found = (None, None) if os.environ.get("FASTBP_BLAS", "").lower() == "numba" else _find_numpy_openblas()
    set_threads = get_threads = None
    if lib is not None:
        prefix, suffix, path = found
        info["_sgemm_address"] = _address(getattr(lib, f"{prefix}cblas_sgemm{suffix}"))
        llvm.add_symbol("fastbp_sgemm", info["_sgemm_address"])
        llvm.add_symbol("fastbp_dgemm", _address(getattr(lib, f"{prefix}cblas_dgemm{suffix}")))
        omat = [getattr(lib, f"{prefix}cblas_{f}{suffix}", None) for f in ("somatcopy", "domatcopy")]
        if None in omat:   # an OpenBLAS without the extension: the transpose falls back, sgemm stays
            _compile_fallbacks(("somatcopy", "domatcopy"))
        else:
            llvm.add_symbol("fastbp_somatcopy", _address(omat[0]))
            llvm.add_symbol("fastbp_domatcopy", _address(omat[1]))
            info["omatcopy"] = "numpy-openblas"
        info.update(provider="numpy-openblas", library=path)
        for name in (f"{prefix}openblas_set_num_threads{suffix}", "openblas_set_num_threads"):
            if hasattr(lib, name):
                set_threads = getattr(lib, name)
                set_threads.argtypes = [ctypes.c_int]
                break
        for name in (f"{prefix}openblas_get_num_threads{suffix}", "openblas_get_num_threads"):
            if hasattr(lib, name):
                get_threads = getattr(lib, name)
                get_threads.restype = ctypes.c_int
                break
        cfg = getattr(lib, f"{prefix}openblas_get_config{suffix}", None)
        if cfg is not None:
            cfg.restype = ctypes.c_char_p
            info["config"] = cfg().decode()
    else:
        _compile_fallbacks(("sgemm", "dgemm", "somatcopy", "domatcopy"))
    return info, set_threads, get_threads


BLAS_INFO, _set_threads, _get_threads = _setup()
_SGEMM_ADDRESS = BLAS_INFO.pop("_sgemm_address", None)   # OpenBLAS's cblas_sgemm (the router's other way)

_sgemm = types.ExternalFunction("fastbp_sgemm", _gemm_sig(types.float32, types.uintp))
_dgemm = types.ExternalFunction("fastbp_dgemm", _gemm_sig(types.float64, types.uintp))
_somatcopy = types.ExternalFunction("fastbp_somatcopy", _omatcopy_sig(types.float32, types.uintp))
_domatcopy = types.ExternalFunction("fastbp_domatcopy", _omatcopy_sig(types.float64, types.uintp))


# ---- bfloat16 products (Network(precision="bf16")) ------------------------------------------------------------
# C (f32) = alpha op(A) op(B) + beta C with A, B bfloat16 (uint16 bit patterns): oneDNN's
# dnnl_gemm_bf16bf16f32 (row-major, transposes as 'N'/'T', 64-bit dimensions), which runs on
# AMX tiles or AVX512-BF16 where the CPU has them. oneDNN is optional (the ``bf16`` extra:
# onednn-cpu-gomp); without it the symbol points at a NumPy stand-in (a ctypes callback), so that the drivers
# link, and Network falls back to float32 (``bf16_support``).

def _gemm16_sig():
    # (transa, transb, m, n, k, alpha, A, lda, B, ldb, beta, C, ldc) -> status
    p = types.uintp
    return types.int32(types.int8, types.int8, _i64, _i64, _i64, types.float32, p, _i64, p, _i64, types.float32,
                       p, _i64)


@intrinsic
def f32_bits(typingctx, x):
    """The bit pattern (uint32) of a float32."""
    if x != types.float32:
        return None
    return types.uint32(types.float32), lambda context, builder, sig, args: builder.bitcast(args[0], ir.IntType(32))


def _fallback_gemm16(transa, transb, m, n, k, alpha, pa, lda, pb, ldb, beta, pc, ldc):
    # the same product in NumPy from the bit patterns (slow; only so that the drivers link without
    # oneDNN: a ctypes callback, so that nothing is compiled at import for users without it)
    def mat(ptr, rows, ld, ctype):
        return np.ctypeslib.as_array(ctypes.cast(ptr, ctypes.POINTER(ctype)), (rows, ld))

    def op(ptr, rows, cols, ld, trans):   # op(X) (rows, cols) as float32 from X's bit patterns
        x = mat(ptr, cols if trans else rows, ld, ctypes.c_uint16)[:, :rows if trans else cols]
        x = (x.astype(np.uint32) << 16).view(np.float32)
        return x.T if trans else x

    A, B = op(pa, m, k, lda, transa == 84), op(pb, k, n, ldb, transb == 84)
    C = mat(pc, m, ldc, ctypes.c_float)[:, :n]
    C[...] = alpha * (A @ B) + (0.0 if beta == 0.0 else beta * C)
    return 0


_GEMM16_C = ctypes.CFUNCTYPE(ctypes.c_int32, ctypes.c_int8, ctypes.c_int8, ctypes.c_int64, ctypes.c_int64,
                             ctypes.c_int64, ctypes.c_float, ctypes.c_void_p, ctypes.c_int64, ctypes.c_void_p,
                             ctypes.c_int64, ctypes.c_float, ctypes.c_void_p, ctypes.c_int64)


def _find_onednn():
    """oneDNN's library (the onednn-cpu-gomp wheel puts it in {prefix}/lib) as (lib, path), or None.
    It serves the bf16 products and, where it is faster than OpenBLAS, the float32 ones;
    FASTBP_ONEDNN=off keeps it out of the process altogether."""
    if os.environ.get("FASTBP_ONEDNN", "").lower() == "off":
        return None
    paths = [os.path.join(p, "lib", "libdnnl.so.3") for p in dict.fromkeys((sys.prefix, sys.base_prefix))]
    found = ctypes.util.find_library("dnnl")
    for path in paths + ([found] if found else []):
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        if hasattr(lib, "dnnl_gemm_bf16bf16f32") and hasattr(lib, "dnnl_sgemm"):
            return lib, path
    return None


_ONEDNN = _find_onednn()


def cpu_bf16():
    """The CPU's bfloat16 instructions LLVM sees on this host: a list of 'amx-bf16', 'avx512bf16' (may be empty)."""
    feats = llvm.get_host_cpu_features()
    return [f for f in ("amx-bf16", "avx512bf16") if feats.get(f, False)]


def _setup_omp():
    """oneDNN's OpenMP runtime (the gomp build), or None: the router sets its thread count."""
    if _ONEDNN is not None:
        try:
            omp = ctypes.CDLL("libgomp.so.1")
            omp.omp_set_num_threads.argtypes = [ctypes.c_int]
            omp.omp_get_max_threads.restype = ctypes.c_int
            return omp
        except (OSError, AttributeError):
            pass
    return None


def _setup_bf16():
    info = {"bf16_provider": None, "bf16_library": None, "bf16_cpu": cpu_bf16()}
    found = None if os.environ.get("FASTBP_BF16", "").lower() == "off" else _ONEDNN
    if found is not None:
        lib, path = found
        llvm.add_symbol("fastbp_gemm_bf16", _address(lib.dnnl_gemm_bf16bf16f32))
        info.update(bf16_provider="onednn", bf16_library=path)
    else:
        f = _GEMM16_C(_fallback_gemm16)
        llvm.add_symbol("fastbp_gemm_bf16", _address(f))
        _KEEP.append(f)
    return info


_OMP = _setup_omp()
_set_omp_threads = _OMP.omp_set_num_threads if _OMP is not None else None
BLAS_INFO.update(_setup_bf16())
_gemm16 = types.ExternalFunction("fastbp_gemm_bf16", _gemm16_sig())
# bf16 products below this m*n*k run on one thread (the router, below): oneDNN would start its
# OpenMP team for any size (OpenBLAS keeps small products on one thread itself), and on small
# layers two threads cost more than they give: at 2 threads the `small` and `regress` workloads
# trained at 0.83x and 0.59x of float32 that way, with cpu/wall 2.0
BF16_SERIAL_MNK = 1 << 22


def bf16_support():
    """(True, how) where bfloat16 products run at speed here: oneDNN found and a CPU with AMX-BF16 or
    AVX512-BF16; else (False, why)."""
    if BLAS_INFO["bf16_provider"] is None:
        return False, ("oneDNN was not found (pip install 'fastbp[bf16]', i.e. onednn-cpu-gomp, or "
                       "FASTBP_BF16=off is set)")
    if not BLAS_INFO["bf16_cpu"]:
        return False, "this CPU has neither AMX-BF16 nor AVX512-BF16 (oneDNN would emulate bfloat16, slower than float32)"
    return True, f"oneDNN ({BLAS_INFO['bf16_library']}) on {'+'.join(BLAS_INFO['bf16_cpu'])}"


@njit(**JIT)
def gemm_bf16(trans_a, trans_b, A, B, beta, C):
    """C = op(A) @ op(B) + beta * C for C-contiguous 2-D arrays, A and B bfloat16 bit patterns
    (uint16), C float32; op(A) (m, k), op(B) (k, n), C (m, n). Accumulates in float32."""
    m, n = C.shape
    k = A.shape[0] if trans_a else A.shape[1]
    if m == 0 or n == 0:
        return
    if k == 0:   # (oneDNN with k = 0)
        for i in range(m):
            for j in range(n):
                C[i, j] = 0.0 if beta == 0.0 else beta * C[i, j]
        return
    _gemm16(np.int8(84 if trans_a else 78), np.int8(84 if trans_b else 78), m, n, k, np.float32(1.0),
            A.ctypes.data, max(1, A.shape[1]), B.ctypes.data, max(1, B.shape[1]), np.float32(beta), C.ctypes.data,
            max(1, n))


# ---- the float32 provider, per product ------------------------------------------------------------------------
# Where oneDNN is installed, fastbp_sgemm points at a small router written in LLVM IR (compiled
# here, ~15 ms; nothing Numba compiles or caches changes): a product of m*n*k >= ..._onednn_mnk
# goes to oneDNN's dnnl_sgemm, any other (and any with k = 0) to OpenBLAS's cblas_sgemm. The
# bound is a runtime value, so the provider can change between fits (set_gemm_provider) without
# recompiling a kernel; at INT64_MAX the router is OpenBLAS plus one indirect call.
# oneDNN runs on an OpenMP team whose size is a per-thread setting of libgomp, so the router
# sets the calling thread's count to the BLAS thread count (..._threads, written by
# set_blas_threads) where it differs, and to 1 for products below ..._serial_mnk (oneDNN would
# start its team for any size), and puts the thread's count back after the call. A oneDNN call
# that fails (a status other than 0: bad arguments, no memory for its packing buffers, which
# it checks before it writes C) is counted (route_errors) and computed by OpenBLAS instead.
_ROUTE_IR = r"""
@fastbp_route_blas = global ptr null
@fastbp_route_dnnl = global ptr null
@fastbp_route_dnnl16 = global ptr null
@fastbp_route_omp_get = global ptr null
@fastbp_route_omp_set = global ptr null
@fastbp_route_onednn_mnk = global i64 9223372036854775807
@fastbp_route_serial_mnk = global i64 0
@fastbp_route_bf16_serial_mnk = global i64 0
@fastbp_route_threads = global i32 1
@fastbp_route_errors = global i64 0

; oneDNN's product %g (dnnl_sgemm and dnnl_gemm_bf16bf16f32 take the same arguments) on the BLAS
; thread count, or on one thread when m*n*k < %serial, with the calling thread's count put back
define internal i32 @onednn(ptr %g, i64 %serial, i8 %ta, i8 %tb, i64 %m, i64 %n, i64 %k, float %alpha, ptr %A,
                            i64 %lda, ptr %B, i64 %ldb, float %beta, ptr %C, i64 %ldc) alwaysinline {
entry:
  %mn = mul i64 %m, %n
  %mnk = mul i64 %mn, %k
  %small = icmp slt i64 %mnk, %serial
  %nt = load i32, ptr @fastbp_route_threads
  %want = select i1 %small, i32 1, i32 %nt
  %get = load ptr, ptr @fastbp_route_omp_get
  %cur = call i32 %get()
  %same = icmp eq i32 %cur, %want
  br i1 %same, label %direct, label %switch
direct:
  %s1 = call i32 %g(i8 signext %ta, i8 signext %tb, i64 %m, i64 %n, i64 %k, float %alpha, ptr %A, i64 %lda,
                    ptr %B, i64 %ldb, float %beta, ptr %C, i64 %ldc)
  ret i32 %s1
switch:
  %set = load ptr, ptr @fastbp_route_omp_set
  call void %set(i32 %want)
  %s2 = call i32 %g(i8 signext %ta, i8 signext %tb, i64 %m, i64 %n, i64 %k, float %alpha, ptr %A, i64 %lda,
                    ptr %B, i64 %ldb, float %beta, ptr %C, i64 %ldc)
  call void %set(i32 %cur)
  ret i32 %s2
}

define i32 @fastbp_gemm_bf16_route(i8 signext %ta, i8 signext %tb, i64 %m, i64 %n, i64 %k, float %alpha, ptr %A,
                                   i64 %lda, ptr %B, i64 %ldb, float %beta, ptr %C, i64 %ldc) {
entry:
  %g = load ptr, ptr @fastbp_route_dnnl16
  %slim = load i64, ptr @fastbp_route_bf16_serial_mnk
  %s = call i32 @onednn(ptr %g, i64 %slim, i8 %ta, i8 %tb, i64 %m, i64 %n, i64 %k, float %alpha, ptr %A, i64 %lda,
                        ptr %B, i64 %ldb, float %beta, ptr %C, i64 %ldc)
  ret i32 %s
}

define void @fastbp_sgemm_route(i32 %order, i32 %ta, i32 %tb, i64 %m, i64 %n, i64 %k, float %alpha, ptr %A,
                                i64 %lda, ptr %B, i64 %ldb, float %beta, ptr %C, i64 %ldc) {
entry:
  %mn = mul i64 %m, %n
  %mnk = mul i64 %mn, %k
  %lim = load i64, ptr @fastbp_route_onednn_mnk
  %big = icmp sge i64 %mnk, %lim
  %k0 = icmp sgt i64 %k, 0
  %use = and i1 %big, %k0
  br i1 %use, label %onednn, label %openblas
openblas:
  %f = load ptr, ptr @fastbp_route_blas
  call void %f(i32 %order, i32 %ta, i32 %tb, i64 %m, i64 %n, i64 %k, float %alpha, ptr %A, i64 %lda, ptr %B,
               i64 %ldb, float %beta, ptr %C, i64 %ldc)
  ret void
onednn:
  %tta = icmp eq i32 %ta, 112
  %ca = select i1 %tta, i8 84, i8 78
  %ttb = icmp eq i32 %tb, 112
  %cb = select i1 %ttb, i8 84, i8 78
  %g = load ptr, ptr @fastbp_route_dnnl
  %slim = load i64, ptr @fastbp_route_serial_mnk
  %s = call i32 @onednn(ptr %g, i64 %slim, i8 %ca, i8 %cb, i64 %m, i64 %n, i64 %k, float %alpha, ptr %A, i64 %lda,
                        ptr %B, i64 %ldb, float %beta, ptr %C, i64 %ldc)
  %ok = icmp eq i32 %s, 0
  br i1 %ok, label %done, label %failed
failed:
  %errs = atomicrmw add ptr @fastbp_route_errors, i64 1 monotonic
  br label %openblas
done:
  ret void
}
"""
_NEVER = (1 << 63) - 1
# Measured on an AMD EPYC Zen 5 (OpenBLAS 0.3.31 runs its Haswell kernels there; oneDNN 3.2),
# from compiled code, 1 and 2 threads, 32x32x32 to 256x2048x2048: oneDNN was faster at every
# shape (0.58 vs 0.73 us at 32^3, 1.8-2x from 64^3 up), so where it is chosen it takes every
# float32 product (the bound stays for other CPUs), and products below SGEMM_SERIAL_MNK run it on
# one thread (2 threads paid from 200x64x100 up).
ONEDNN_MIN_MNK = 0
SGEMM_SERIAL_MNK = 1 << 19
# OpenBLAS's AVX-512 kernel sets: where OpenBLAS runs one of these, oneDNN is not chosen by
# default (Intel Xeon with AMX, 2026-12-02: oneDNN 10 % faster on 1 thread, level on 2)
AVX512_CORES = ("skylakex", "cooperlake", "sapphirerapids")
GEMM_PROVIDERS = ("auto", "openblas", "onednn")
_ROUTE = {"engine": None, "sgemm": False, "missing": ""}   # the setting itself: BLAS_INFO["sgemm_*"]


def _openblas_core(info):
    cfg = (info.get("config") or "").split()
    for i, word in enumerate(cfg):
        if word.startswith("MAX_THREADS") and i > 0:
            return cfg[i - 1]
    return None


def _route_global(name, ctype=ctypes.c_int64):
    return ctype.from_address(_ROUTE["engine"].get_global_value_address("fastbp_route_" + name))


def _setup_route(info):
    """Compile the router where oneDNN is; point fastbp_gemm_bf16 at its bf16 route (when bf16
    is on) and, where NumPy's OpenBLAS is too, fastbp_sgemm at its float32 route. Returns the
    BLAS_INFO fields."""
    out = {"sgemm_provider": "openblas" if info["provider"] == "numpy-openblas" else info["provider"],
           "sgemm_onednn": None, "openblas_core": _openblas_core(info)}
    if _ONEDNN is None:
        _ROUTE["missing"] = ("oneDNN is not installed (pip install 'fastbp[bf16]', i.e. onednn-cpu-gomp) "
                             "or FASTBP_ONEDNN=off is set")
        return out
    if _OMP is None:
        _ROUTE["missing"] = "oneDNN's OpenMP runtime (libgomp.so.1) did not load"
        return out
    try:   # (opaque pointers: llvmlite >= 0.45; with an older one the products go to the libraries directly)
        llvm.initialize_native_target()
        llvm.initialize_native_asmprinter()
        mod = llvm.parse_assembly(_ROUTE_IR)
        mod.verify()
        engine = llvm.create_mcjit_compiler(mod, llvm.Target.from_default_triple().create_target_machine(opt=2))
        engine.finalize_object()
    except Exception as e:   # noqa: BLE001 (any failure here leaves the libraries called directly)
        _ROUTE["missing"] = f"the oneDNN router did not compile ({type(e).__name__}: {str(e)[:120]})"
        return out
    _ROUTE["engine"] = engine
    for name, value in (("dnnl", _address(_ONEDNN[0].dnnl_sgemm)),
                        ("dnnl16", _address(_ONEDNN[0].dnnl_gemm_bf16bf16f32)),
                        ("omp_get", _address(_OMP.omp_get_max_threads)),
                        ("omp_set", _address(_OMP.omp_set_num_threads))):
        _route_global(name, ctypes.c_void_p).value = value
    _route_global("serial_mnk").value = SGEMM_SERIAL_MNK
    _route_global("bf16_serial_mnk").value = BF16_SERIAL_MNK
    _route_global("threads", ctypes.c_int32).value = max(1, get_blas_threads() if _get_threads else cores())
    if info.get("bf16_provider") == "onednn":
        llvm.add_symbol("fastbp_gemm_bf16", engine.get_function_address("fastbp_gemm_bf16_route"))
    if info["provider"] != "numpy-openblas":
        _ROUTE["missing"] = "NumPy's OpenBLAS is not in use (FASTBP_BLAS=numba, or none found)"
        return out
    _route_global("blas", ctypes.c_void_p).value = _SGEMM_ADDRESS
    llvm.add_symbol("fastbp_sgemm", engine.get_function_address("fastbp_sgemm_route"))
    _ROUTE["sgemm"] = True
    out["sgemm_onednn"] = _ONEDNN[1]
    return out


def route_errors():
    """oneDNN float32 calls that failed and went to OpenBLAS since import (0 without the router)."""
    return int(_route_global("errors").value) if _ROUTE["sgemm"] else 0


def _auto_provider(info, features=None):
    """("onednn" | "openblas", why) for this machine: the rule measured so far (see AVX512_CORES)."""
    core = info.get("openblas_core")
    if not core:
        return "openblas", "OpenBLAS's kernel set is unknown"
    features = llvm.get_host_cpu_features() if features is None else features
    if features.get("avx512f", False) and core.lower() not in AVX512_CORES:
        return "onednn", (f"OpenBLAS runs its {core} kernels (no AVX-512) on this AVX-512 CPU; oneDNN's "
                          f"sgemm is AVX-512 code")
    return "openblas", f"OpenBLAS runs its {core} kernels" + (" (AVX-512)" if core.lower() in AVX512_CORES else "")


def set_gemm_provider(name):
    """Which library computes the float32 products from now on: "auto" (the rule of
    _auto_provider), "openblas" or "onednn" (which needs oneDNN, the ``bf16`` extra, beside
    NumPy's OpenBLAS). Float64 products are always OpenBLAS's. A network keeps the layout it
    chose for its batch sizes (whether dX uses W^T copied out, dx_via_transpose) from its first
    fit at them: that is speed only, the products are the same. Returns the setting before."""
    if name not in GEMM_PROVIDERS:
        raise ValueError(f"gemm provider must be one of {', '.join(map(repr, GEMM_PROVIDERS))}, got {name!r}")
    before = BLAS_INFO.get("sgemm_setting", "auto")
    if not _ROUTE["sgemm"]:   # no float32 router: the one provider there is
        only = BLAS_INFO["sgemm_provider"]
        if name not in ("auto", only):
            raise ValueError(f"gemm provider {name!r} is not available here ({only} computes every product): "
                             f"{_ROUTE['missing']}")
        provider, why = only, _ROUTE["missing"]
    else:
        provider, why = _auto_provider(BLAS_INFO) if name == "auto" else (name, "set by the user")
        _route_global("onednn_mnk").value = ONEDNN_MIN_MNK if provider == "onednn" else _NEVER
    BLAS_INFO.update(sgemm_provider=provider, sgemm_setting=name, sgemm_why=why)
    return before


def get_gemm_provider():
    """(setting, provider in force, why) for the float32 products: see set_gemm_provider."""
    return BLAS_INFO["sgemm_setting"], BLAS_INFO["sgemm_provider"], BLAS_INFO["sgemm_why"]


def set_blas_threads(n):
    if _set_threads is not None:
        _set_threads(int(n))
    if _set_omp_threads is not None:
        _set_omp_threads(int(n))
    if _ROUTE["engine"] is not None:   # oneDNN's products, on whichever thread calls them
        _route_global("threads", ctypes.c_int32).value = max(1, int(n))


def get_blas_threads():
    return int(_get_threads()) if _get_threads is not None else 1


def _setup_provider():
    BLAS_INFO.update(_setup_route(BLAS_INFO))
    name = os.environ.get("FASTBP_SGEMM", "auto").lower() or "auto"
    try:
        set_gemm_provider(name)
    except ValueError as e:
        import warnings
        warnings.warn(f"FASTBP_SGEMM={name!r} ignored: {e}", RuntimeWarning, stacklevel=1)
        set_gemm_provider("auto")


@njit(**JIT)
def gemm(trans_a, trans_b, alpha, A, B, beta, C):
    """C = alpha * op(A) @ op(B) + beta * C for C-contiguous 2-D arrays.

    op(X) is X or X.T as ``trans_*`` says; op(A) is (m, k), op(B) is (k, n), C is (m, n).
    beta = 0 overwrites C (BLAS ignores its old contents, NaN included).
    """
    m, n = C.shape
    k = A.shape[0] if trans_a else A.shape[1]
    if m == 0 or n == 0:
        return
    ta = np.int32(TRANS if trans_a else NO_TRANS)
    tb = np.int32(TRANS if trans_b else NO_TRANS)
    lda = max(1, A.shape[1])
    ldb = max(1, B.shape[1])
    ldc = max(1, n)
    if C.itemsize == 4:
        _sgemm(np.int32(ROW_MAJOR), ta, tb, m, n, k, np.float32(alpha), A.ctypes.data, lda,
               B.ctypes.data, ldb, np.float32(beta), C.ctypes.data, ldc)
    else:
        _dgemm(np.int32(ROW_MAJOR), ta, tb, m, n, k, np.float64(alpha), A.ctypes.data, lda,
               B.ctypes.data, ldb, np.float64(beta), C.ctypes.data, ldc)


_GEMM_C = {}   # itemsize -> the fastbp_sgemm / fastbp_dgemm symbol as a ctypes function


def _data_address(a):
    return a.ctypes.data


def gemm_from_python(trans_a, trans_b, alpha, A, B, beta, C, address=_data_address):
    """``gemm`` called from Python with nothing to compile (kernels/interp.py): the same call, with
    the same arguments, of the function behind the same symbol, through ctypes (``address(X)``:
    X's data pointer; the caller may keep them)."""
    m, n = C.shape
    k = A.shape[0] if trans_a else A.shape[1]
    if m == 0 or n == 0:
        return
    f = _GEMM_C.get(C.itemsize)
    if f is None:
        ft = ctypes.c_float if C.itemsize == 4 else ctypes.c_double
        i32, i64, p = ctypes.c_int32, ctypes.c_int64, ctypes.c_void_p
        f = _GEMM_C[C.itemsize] = ctypes.CFUNCTYPE(None, i32, i32, i32, i64, i64, i64, ft, p, i64, p, i64, ft, p, i64)(
            llvm.address_of_symbol("fastbp_sgemm" if C.itemsize == 4 else "fastbp_dgemm"))
    f(ROW_MAJOR, TRANS if trans_a else NO_TRANS, TRANS if trans_b else NO_TRANS, m, n, k, alpha, address(A),
      max(1, A.shape[1]), address(B), max(1, B.shape[1]), beta, address(C), max(1, n))


@njit(**JIT)
def transpose(A, AT):
    """AT = A.T for C-contiguous A (m, k) and AT (k, m)."""
    m, k = A.shape
    if m == 0 or k == 0:
        return
    if A.itemsize == 4:
        _somatcopy(np.int32(ROW_MAJOR), np.int32(TRANS), m, k, np.float32(1.0), A.ctypes.data, k, AT.ctypes.data, m)
    else:
        _domatcopy(np.int32(ROW_MAJOR), np.int32(TRANS), m, k, np.float64(1.0), A.ctypes.data, k, AT.ctypes.data, m)


# OpenBLAS computes small row-major, untransposed float32 products (alpha 1, beta 0,
# m*n*k < 2*350*512 when it may use more than one thread) in its "direct" SkylakeX kernel,
# without packing; a product with a transposed operand takes the packing path. Measured
# here (OpenBLAS 0.3.31, 1 and 2 threads), dX = dZ W^T as an explicit transpose of W plus
# that direct product took 0.55-0.85x the time of the transposed product up to
# m*n*k ~ 6.6e5 (32x64x64: 4.7 -> 2.6 us) and the same time above 4e6 (1024x512x1: 0.3-0.4x,
# a one-column W is copied for nothing); float64 gains nothing. (dW = X^T dZ, transposed
# the other way, is as fast as X^T copied out plus the direct product: 2.56 vs 2.63 us.)
# The small-matrix kernels are AVX-512 code (OpenBLAS's SkylakeX kernel set, which its
# Cooperlake and SapphireRapids cores and, in 0.3.31, Zen 4 use too); on other cores,
# where it was not measured, the transposed product stays.
DIRECT_MNK = 1 << 20


def _direct_kernels(info):
    # (OpenBLAS's trick: not where oneDNN computes the float32 products, set_gemm_provider)
    return (info["provider"] == "numpy-openblas" and info.get("omatcopy") == "numpy-openblas"
            and info.get("sgemm_provider", "openblas") != "onednn"
            and any(core in (info.get("config") or "").lower() for core in AVX512_CORES))


# oneDNN (set_gemm_provider): its transposed dX product is slower than W^T copied out plus the
# plain product on small layers at any thread count (32x64x64: 2.6 -> 1.8 us, 200x64x100:
# 13.3 -> 12.5 on 1 thread) and on large ones on 2 threads (64x512x512: 220 -> 130 us,
# 256x1024x2048: 4.4-4.6 -> 3.5-3.9 ms, 256x2048x2048: 7.9-9.0 -> 7.5-7.7), but not on large
# ones on 1 thread (256x1024x2048: 5.7 -> 6.3 ms) nor mid-sized ones (128x256x128: level);
# Zen 5, 3 alternated runs. Large means a product the thread policy gives more than one
# thread (POLICY_MIN_MNK), when more than one is there to give.


def dx_via_transpose(m, n_in, n_out, dtype):
    """Whether a layer's dX = dZ W^T, dZ (m, n_out), W (n_in, n_out), should be computed as
    dZ @ (W^T copied out) rather than as a transposed product (see DIRECT_MNK and above)."""
    if np.dtype(dtype) != np.float32:
        return False
    mnk = m * n_in * n_out
    if BLAS_INFO.get("sgemm_provider") == "onednn":
        return (mnk <= DIRECT_MNK or n_out == 1
                or (mnk >= POLICY_MIN_MNK and (_USER["threads"] or cores()) > 1))
    return _direct_kernels(BLAS_INFO) and (mnk <= DIRECT_MNK or n_out == 1)


# ---- the default thread policy ----------------------------------------------------------------------------------
# Until the user picks a count (fastbp.set_num_threads, an estimator's n_threads, or
# OPENBLAS_NUM_THREADS / OMP_NUM_THREADS in the environment), a fit chooses the BLAS threads
# from its network and the machine (``policy_threads``): one thread when every product of a
# step is small, and never more threads than cores free of other runnable work. A second BLAS
# thread pays only on large products (``wide``: 1.75x on 2 cores, idle) and costs at small ones
# (digits' 200x64x100 step: no gain idle; and on a busy machine a descheduled BLAS thread stalls
# every product that waits for it: 4-22x slower fits, issue 21). OpenBLAS itself runs products
# of m*n*k <= 262144 on one thread; POLICY_MIN_MNK moves that bound up to where the split paid.
# The forward, dW and dX products of a layer have the same m*n*k (batch x n_in x n_out), so the
# network's largest layer decides; the threads are set once per fit (per product would need a
# call inside the compiled kernels) and the free cores re-read every POLICY_RECHECK_S.
POLICY_MIN_MNK = 8 << 20
POLICY_RECHECK_S = 0.5
_USER = {"threads": None}   # the user's count, or None: the policy


def _env_threads():
    for k in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS"):
        try:
            n = int(os.environ.get(k, ""))
        except ValueError:
            continue
        if n >= 1:
            return n
    return None


_USER["threads"] = _env_threads()


def set_user_threads(n):
    """Record the user's thread count (None: back to the policy) and apply it to the BLAS."""
    _USER["threads"] = None if n is None else int(n)
    set_blas_threads(n if n is not None else cores())


def user_threads():
    return _USER["threads"]


def cores():
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def _own_running():
    """This process's threads in state R (one at least: the one asking)."""
    n = 0
    try:
        for t in os.listdir("/proc/self/task"):
            try:
                with open(f"/proc/self/task/{t}/stat", "rb") as f:
                    if f.read().rsplit(b")", 1)[1].split()[0] == b"R":
                        n += 1
            except (OSError, IndexError):
                pass
    except OSError:
        return 1
    return max(n, 1)


def busy_elsewhere():
    """Runnable threads of other processes right now (Linux: /proc/loadavg's running count less
    this process's own); None where the OS does not say. On a machine shared with other work
    this counts, e.g., the other jobs of a CI runner or a compile next to the fit."""
    try:
        with open("/proc/loadavg") as f:
            running = int(f.read().split()[3].split("/")[0])
    except (OSError, ValueError, IndexError):
        return None
    return max(0, running - _own_running())


def largest_product(layer_sizes, batch):
    """The largest m*n*k of a training step's products: batch x n_in x n_out of the widest layer."""
    return max((batch * a * b for a, b in zip(layer_sizes[:-1], layer_sizes[1:])), default=0)


def policy_threads(layer_sizes, batch):
    """(threads, why) the default policy gives a fit of a network of ``layer_sizes`` at
    ``batch`` rows now: 1 when its largest product is below POLICY_MIN_MNK, else all cores
    less those other processes keep busy (at least 1)."""
    mnk, n = largest_product(layer_sizes, batch), cores()
    if mnk < POLICY_MIN_MNK:
        return 1, f"1: its largest product ({mnk:,} = batch x n_in x n_out) is below {POLICY_MIN_MNK:,}"
    busy = busy_elsewhere()
    free = n if busy is None else max(1, n - busy)
    return free, (f"{free}: a large product ({mnk:,}); {n} core(s)"
                  + ("" if busy is None else f", {busy} kept busy by other processes now"))


class ThreadPolicy:
    """Within ``with``: the BLAS threads of one fit under the policy, unless the user set a
    count (then nothing changes); ``recheck()`` (each epoch) follows the free cores at most every
    POLICY_RECHECK_S. The count in force before is restored on exit."""

    def __init__(self, layer_sizes, batch, kernel_threads=False):
        self.layer_sizes, self.batch = list(layer_sizes), batch
        self.active = _USER["threads"] is None and _set_threads is not None
        self.kernel_threads = kernel_threads   # Numba's threads follow too (the threaded optimizer kernels)
        self.threads = self._before = self._numba_before = None
        self._checked = 0.0

    def __enter__(self):
        if self.active:
            self._before = get_blas_threads()
            if self.kernel_threads:
                self._numba_before = numba.get_num_threads()
            self.recheck(force=True)
        return self

    def recheck(self, force=False):
        if not self.active:
            return
        now = time.perf_counter()
        if not force and now - self._checked < POLICY_RECHECK_S:
            return
        self._checked = now
        n, _ = policy_threads(self.layer_sizes, self.batch)
        if n != self.threads:
            set_blas_threads(n)
            if self.kernel_threads:
                numba.set_num_threads(min(n, numba.config.NUMBA_NUM_THREADS))
            self.threads = n

    def __exit__(self, *exc):
        if self.active and self._before is not None and self.threads != self._before:
            set_blas_threads(self._before)
        if self.active and self._numba_before is not None:
            numba.set_num_threads(self._numba_before)
        return False


_setup_provider()   # (last: it reads the thread helpers above)
