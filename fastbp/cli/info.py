"""``fastbp info``: versions, threads, the BLAS fastbp calls, CPU features and the Numba cache."""

import importlib
import importlib.metadata
import json
import os
import platform
import sys

import numpy as np

CPU_FLAGS = ("sse4_2", "avx", "avx2", "fma", "f16c", "avx512f", "avx512dq", "avx512bw", "avx512vl",
             "avx512_vnni", "avx512_bf16", "avx512_fp16", "amx_tile", "amx_bf16", "asimd", "sve")


def _version(dist):
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def _cpu():
    model = flags = None
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                k, _, v = line.partition(":")
                k = k.strip()
                if k in ("model name", "Model", "Hardware") and model is None:
                    model = v.strip()
                elif k in ("flags", "Features") and flags is None:
                    flags = set(v.split())
    except OSError:
        pass
    model = model or platform.processor() or platform.machine()
    try:
        import llvmlite.binding as llvm
        host = llvm.get_host_cpu_name()
        if flags is None:
            flags = {f[1:].replace(".", "_") for f in llvm.get_host_cpu_features().flatten().split(",")
                     if f.startswith("+")}
    except Exception:   # an llvmlite without these functions: leave them out
        host = None
    return model, host, flags


def _threading_layers():
    out = {}
    for name, mod in (("tbb", "tbbpool"), ("omp", "omppool"), ("workqueue", "workqueue")):
        try:
            importlib.import_module(f"numba.np.ufunc.{mod}")
            out[name] = True
        except Exception:   # missing library (libtbb, libgomp): not available
            out[name] = False
    return out


POLICY_EXAMPLES = {"the scikit-learn drop-in on digits (64-100-10, batch 200)": ([64, 100, 10], 200),
                   "mnist (784-256-128-10, batch 128)": ([784, 256, 128, 10], 128),
                   "wide (1024-2048-2048-10, batch 256)": ([1024, 2048, 2048, 10], 256)}


def _thread_policy(fb):
    """What the default thread policy chooses (or that the user's count overrides it)."""
    from .._blas import POLICY_MIN_MNK, busy_elsewhere, cores, policy_threads
    setting = fb.get_thread_setting()
    return {"user_setting": None if setting == "auto" else setting, "min_mnk": POLICY_MIN_MNK, "cores": cores(),
            "busy_elsewhere_now": busy_elsewhere(),
            "examples": {k: policy_threads(*v)[1] for k, v in POLICY_EXAMPLES.items()}}


def collect_info():
    import numba

    import fastbp as fb
    model, host, flags = _cpu()
    try:
        active = numba.threading_layer()
    except ValueError:
        active = None
    cache = numba.config.CACHE_DIR or None
    pkg = os.path.dirname(os.path.abspath(fb.__file__))
    return {
        "versions": {"fastbp": fb.__version__, "python": platform.python_version(), "numpy": np.__version__,
                     "numba": numba.__version__, "llvmlite": _version("llvmlite"),
                     "scikit-learn": _version("scikit-learn"), "torch": _version("torch"), "tqdm": _version("tqdm"),
                     "matplotlib": _version("matplotlib"),
                     "onednn": _version("onednn-cpu-gomp")},
        "python": {"implementation": platform.python_implementation(), "executable": sys.executable,
                   "platform": platform.platform()},
        "threads": {"fastbp (BLAS)": fb.get_num_threads(), "numba": numba.get_num_threads(),
                    "NUMBA_NUM_THREADS": numba.config.NUMBA_NUM_THREADS, "cpu_count": os.cpu_count(),
                    "cores_available": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
                    else os.cpu_count()},
        "thread_policy": _thread_policy(fb),
        "numba_threading_layer": {"requested": numba.config.THREADING_LAYER, "active": active,
                                  "available": [k for k, v in _threading_layers().items() if v]},
        "blas": dict(fb.BLAS_INFO),
        "cpu": {"model": model, "llvm_target": host,
                "features": [f for f in CPU_FLAGS if flags and f in flags],
                "missing": [f for f in CPU_FLAGS if flags is not None and f not in flags
                            and f not in ("asimd", "sve", "amx_tile", "amx_bf16", "avx512_fp16")]},
        "bf16": dict(zip(("available", "why"), fb.bf16_support()), onednn=_version("onednn-cpu-gomp")),
        "numba_cache": {"dir": cache or os.path.join(pkg, "__pycache__"),
                        "where": "NUMBA_CACHE_DIR" if cache else "next to the sources (NUMBA_CACHE_DIR unset)",
                        "disabled": bool(numba.config.DISABLE_JIT)},
        "env": {k: os.environ[k] for k in ("FASTBP_BLAS", "FASTBP_SGEMM", "FASTBP_ONEDNN", "FASTBP_BF16", "FASTBP_DATA", "NUMBA_NUM_THREADS", "NUMBA_CACHE_DIR",
                                           "NUMBA_THREADING_LAYER", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS")
                if k in os.environ},
    }


def cmd_info(args):
    info = collect_info()
    if args.json:
        print(json.dumps(info, indent=1))
        return 0
    v = info["versions"]
    print("versions:  " + "  ".join(f"{k} {v[k] or 'not installed'}" for k in v))
    p = info["python"]
    print(f"python:    {p['implementation']} {v['python']} at {p['executable']} ({p['platform']})")
    b = info["blas"]
    print(f"BLAS:      {b.get('provider')}" + (f", {b['library']}" if b.get("library") else "")
          + (f" ({b['config'].strip()})" if b.get("config") else ""))
    print(f"float32 products: {b.get('sgemm_provider')} (gemm provider {b.get('sgemm_setting')!r}: {b.get('sgemm_why')}; "
          f"FASTBP_SGEMM or fastbp.set_gemm_provider to choose)")
    bf = info["bf16"]
    print("bf16:      precision='bf16' " + ("runs here: " if bf["available"] else "falls back to float32 here: ")
          + bf["why"])
    th = info["threads"]
    print(f"threads:   fastbp.get_num_threads() = {th['fastbp (BLAS)']} (BLAS); numba {th['numba']} of "
          f"NUMBA_NUM_THREADS {th['NUMBA_NUM_THREADS']}; {th['cores_available']} of {th['cpu_count']} cores "
          f"available to this process")
    tp = info["thread_policy"]
    if tp["user_setting"] is not None:
        print(f"thread policy: off: the user set {tp['user_setting']} thread(s) (fastbp.set_num_threads, "
              f"n_threads, or OPENBLAS_NUM_THREADS/OMP_NUM_THREADS)")
    else:
        busy = tp["busy_elsewhere_now"]
        print(f"thread policy: on (no count set): each fit takes 1 BLAS thread when its largest product "
              f"(batch x n_in x n_out) is below {tp['min_mnk']:,}, else the {tp['cores']} core(s) less those "
              f"other processes keep busy" + ("" if busy is None else f" ({busy} now)") + "; it chooses now:")
        for k, v in tp["examples"].items():
            print(f"  {k}: {v}")
    tl = info["numba_threading_layer"]
    print(f"numba threading layer: requested {tl['requested']!r}, available: {', '.join(tl['available']) or 'none'}; "
          + (f"active {tl['active']!r}" if tl["active"] else
             "not started (fastbp's kernels are serial; its GEMMs use the BLAS threads)"))
    c = info["cpu"]
    print(f"CPU:       {c['model']}" + (f" (LLVM target {c['llvm_target']})" if c["llvm_target"] else ""))
    print(f"CPU features: {' '.join(c['features']) or 'unknown'}"
          + (f"; without {' '.join(c['missing'])}" if c["missing"] else ""))
    nc = info["numba_cache"]
    print(f"Numba cache: {nc['dir']}, {nc['where']}" + ("; NUMBA_DISABLE_JIT is set" if nc["disabled"] else ""))
    if info["env"]:
        print("environment: " + "  ".join(f"{k}={val}" for k, val in info["env"].items()))
    return 0
