"""The float32 products' provider (``fastbp.set_gemm_provider``): OpenBLAS or oneDNN behind the
one ``fastbp_sgemm`` symbol, chosen at run time by a small router (``_blas._ROUTE_IR``).

The products themselves are checked under both providers in test_kernels.py (``gemm_provider``
fixture: every shape, transpose, alpha/beta, 1 and 2 threads) and the zero-allocation steady
state in test_training.py; here: the rule, the setting, the environment variables, that the
router routes (a counting stand-in for oneDNN), falls back on an error and keeps each thread's
OpenMP count (float32 and bf16 products), and whole fits that agree across providers to
rounding and are deterministic within one.
"""

import ctypes
import os
import subprocess
import sys

import numpy as np
import pytest

import fastbp as fb
from fastbp import _blas

ONEDNN = bool(fb.BLAS_INFO.get("sgemm_onednn"))
needs_onednn = pytest.mark.skipif(not ONEDNN, reason="no oneDNN beside NumPy's OpenBLAS here "
                                                     "(the test extra installs it on Linux x86-64)")


@pytest.fixture
def restore_provider():
    before = fb.get_gemm_provider()[0]
    yield
    fb.set_gemm_provider(before)


@pytest.mark.parametrize("core, avx512, want", [("Haswell", True, "onednn"), ("Zen", True, "onednn"),
                                                ("SkylakeX", True, "openblas"), ("Cooperlake", True, "openblas"),
                                                ("SapphireRapids", True, "openblas"), ("Haswell", False, "openblas"),
                                                (None, False, "openblas"), (None, True, "openblas")])
def test_auto_rule(core, avx512, want):
    provider, why = _blas._auto_provider({"openblas_core": core}, {"avx512f": avx512})
    assert provider == want
    assert (core or "unknown") in why


def test_openblas_core_is_read_from_its_config():
    cfg = "OpenBLAS 0.3.31.188.0  USE64BITINT DYNAMIC_ARCH NO_AFFINITY Haswell MAX_THREADS=64"
    assert _blas._openblas_core({"config": cfg}) == "Haswell"
    assert _blas._openblas_core({"config": None}) is None
    if fb.BLAS_INFO["provider"] == "numpy-openblas":
        assert fb.BLAS_INFO["openblas_core"]


@pytest.mark.parametrize("name", ["mkl", "OpenBLAS", "", None, 1])
def test_unknown_provider_is_a_value_error(name, restore_provider):
    before = fb.get_gemm_provider()
    with pytest.raises(ValueError, match="gemm provider must be one of 'auto', 'openblas', 'onednn'"):
        fb.set_gemm_provider(name)
    assert fb.get_gemm_provider() == before


@needs_onednn
def test_setting_and_info(restore_provider):
    assert fb.set_gemm_provider("openblas") in _blas.GEMM_PROVIDERS
    assert fb.get_gemm_provider() == ("openblas", "openblas", "set by the user")
    assert fb.set_gemm_provider("onednn") == "openblas"
    assert fb.get_gemm_provider()[:2] == ("onednn", "onednn")
    assert (fb.BLAS_INFO["sgemm_provider"], fb.BLAS_INFO["sgemm_setting"]) == ("onednn", "onednn")
    fb.set_gemm_provider("auto")
    assert fb.get_gemm_provider()[1] == _blas._auto_provider(fb.BLAS_INFO)[0]


def _run(code, **env):
    out = subprocess.run([sys.executable, "-c", code], env=dict(os.environ, FASTBP_COMPILE_HELPER="0", **env),
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    return out


def test_without_a_router_only_the_one_provider_there_is():
    # FASTBP_BLAS=numba: no OpenBLAS, so no router; asking for either library says why
    out = _run("""
import fastbp as fb
print(fb.get_gemm_provider()[1])
for name in ("onednn", "openblas"):
    try:
        fb.set_gemm_provider(name)
    except ValueError as e:
        print("refused:", e)
print(fb.set_gemm_provider("auto"), fb.get_gemm_provider()[1])
""", FASTBP_BLAS="numba")
    lines = out.stdout.strip().splitlines()[-4:]
    assert lines[0] == "numba-fallback"
    for name, line in zip(("onednn", "openblas"), lines[1:3]):
        assert line.startswith(f"refused: gemm provider '{name}' is not available here (numba-fallback computes "
                               f"every product): NumPy's OpenBLAS is not in use"), line
    assert lines[3] == "auto numba-fallback"


@needs_onednn
def test_fastbp_onednn_off_keeps_onednn_out():
    out = _run("""
import fastbp as fb
from fastbp import _blas
print(fb.BLAS_INFO["sgemm_onednn"], fb.BLAS_INFO["bf16_provider"], fb.get_gemm_provider()[1], _blas._ONEDNN)
""", FASTBP_ONEDNN="off")
    assert out.stdout.split()[-4:] == ["None", "None", "openblas", "None"]


_DNNL_C = ctypes.CFUNCTYPE(ctypes.c_int32, ctypes.c_char, ctypes.c_char, ctypes.c_int64, ctypes.c_int64,
                           ctypes.c_int64, ctypes.c_float, ctypes.c_void_p, ctypes.c_int64, ctypes.c_void_p,
                           ctypes.c_int64, ctypes.c_float, ctypes.c_void_p, ctypes.c_int64)


@pytest.fixture
def dnnl_calls():
    """The router's oneDNN float32 pointer swapped for a counting stand-in that calls dnnl_sgemm
    (or returns ``status`` without calling it, when set): the list of calls it saw."""
    real = _DNNL_C(ctypes.cast(_blas._ONEDNN[0].dnnl_sgemm, ctypes.c_void_p).value)
    calls, state = [], {"status": 0}

    def counting(*args):
        calls.append(args[:5])
        return state["status"] or real(*args)
    stand_in = _DNNL_C(counting)
    slot = _blas._route_global("dnnl", ctypes.c_void_p)
    before, slot.value = slot.value, ctypes.cast(stand_in, ctypes.c_void_p).value
    try:
        yield calls, state
    finally:
        slot.value = before


@needs_onednn
@pytest.mark.parametrize("provider", ["openblas", "onednn"])
def test_the_router_sends_products_where_the_setting_says(provider, restore_provider, dnnl_calls):
    calls, _ = dnnl_calls
    fb.set_gemm_provider(provider)
    rng = np.random.default_rng(0)
    A, B = rng.standard_normal((40, 30), dtype=np.float32), rng.standard_normal((30, 20), dtype=np.float32)
    C, CT = np.empty((40, 20), np.float32), np.empty((20, 40), np.float32)
    _blas.gemm(False, False, 1.0, A, B, 0.0, C)
    _blas.gemm(True, True, 1.0, B, A, 0.0, CT)
    # oneDNN's own arguments: transposes as 'N'/'T', then m, n, k
    assert calls == ([(b"N", b"N", 40, 20, 30), (b"T", b"T", 20, 40, 30)] if provider == "onednn" else [])
    np.testing.assert_allclose(C, A.astype(np.float64) @ B, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(CT, C.T, rtol=1e-5, atol=1e-5)
    # k = 0 stays with OpenBLAS, which scales C by beta
    D = np.full((3, 4), 2.0, np.float32)
    _blas.gemm(False, False, 1.0, np.zeros((3, 0), np.float32), np.zeros((0, 4), np.float32), 0.5, D)
    assert len(calls) == (2 if provider == "onednn" else 0) and np.all(D == 1.0)


@needs_onednn
def test_a_failed_onednn_call_is_counted_and_computed_by_openblas(restore_provider, dnnl_calls):
    calls, state = dnnl_calls
    fb.set_gemm_provider("onednn")
    state["status"] = 2   # dnnl_invalid_arguments
    A = np.arange(12, dtype=np.float32).reshape(3, 4)
    C = np.full((3, 3), np.nan, np.float32)
    errors = _blas.route_errors()
    _blas.gemm(False, True, 1.0, A, A, 0.0, C)
    assert len(calls) == 1 and _blas.route_errors() == errors + 1
    np.testing.assert_array_equal(C, A @ A.T)


def _small_product(kind):
    """run(C): C = a 16x16x16 product of ones (every entry 16) by ``kind`` ("fp32": gemm, "bf16": gemm_bf16)."""
    A = np.ones((16, 16), np.float32)
    if kind == "fp32":
        return lambda C: _blas.gemm(False, False, 1.0, A, A, 0.0, C)
    from fastbp.kernels.precision import to_bf16
    A16 = np.zeros((16, 16), np.uint16)
    to_bf16(A16, A)
    return lambda C: _blas.gemm_bf16(False, False, A16, A16, 0.0, C)


@pytest.mark.parametrize("kind", ["fp32", "bf16"])
def test_the_router_keeps_each_threads_openmp_count(kind, restore_provider):
    # a small product runs oneDNN on one thread and puts the caller's count back, on the thread
    # that set the count and on a Python thread of its own (libgomp's count is per thread)
    import threading
    if kind == "fp32" and not ONEDNN:
        pytest.skip("no oneDNN beside NumPy's OpenBLAS here (the test extra installs it on Linux x86-64)")
    if kind == "bf16" and not (fb.bf16_support()[0] and _blas._ROUTE["engine"] is not None):
        pytest.skip(f"no bf16 router here: {fb.bf16_support()[1]}; {_blas._ROUTE['missing']}")
    if kind == "fp32":
        fb.set_gemm_provider("onednn")
    run = _small_product(kind)
    omp = _blas._OMP
    before = fb.get_num_threads()
    try:
        fb.set_num_threads(2)
        C = np.zeros((16, 16), np.float32)
        run(C)
        assert omp.omp_get_max_threads() == 2 and np.all(C == 16.0)
        seen = []

        def other():
            mine = omp.omp_get_max_threads()
            D = np.zeros((16, 16), np.float32)
            run(D)
            seen.append((mine, omp.omp_get_max_threads(), bool(np.all(D == 16.0))))
        t = threading.Thread(target=other)
        t.start()
        t.join()
        assert seen[0][0] == seen[0][1] and seen[0][2]
    finally:
        fb.set_num_threads(before)


def _fit(provider, X, y, **kw):
    fb.set_gemm_provider(provider)
    net = fb.Network([X.shape[1], 96, 64, 10], seed=3, **kw)
    h = net.fit(X, y, epochs=3, batch_size=64, optimizer=fb.Adam(1e-3))
    return net.params.copy(), h.history["loss"], net.predict_proba(X)


@needs_onednn
@pytest.mark.parametrize("kw", [{}, dict(norm="batch", dropout=0.1, activation="tanh")])
def test_providers_train_alike_and_each_is_deterministic(kw, restore_provider):
    rng = np.random.default_rng(0)
    X = rng.standard_normal((1000, 48)).astype(np.float32)
    y = rng.integers(0, 10, 1000)
    a1, a2 = _fit("onednn", X, y, **kw), _fit("onednn", X, y, **kw)
    b = _fit("openblas", X, y, **kw)
    # one provider, one thread count: the same bits every time
    assert np.array_equal(a1[0], a2[0]) and a1[1] == a2[1] and np.array_equal(a1[2], a2[2])
    # two providers: the same training but for the products' float32 rounding (sums in another
    # order: ~1e-7 relative per product), grown by 3 epochs of Adam's steps: with batch norm
    # and dropout the predicted probabilities measured up to 2.8e-4 apart (Zen 5), so 5x that
    np.testing.assert_allclose(a1[1], b[1], rtol=1e-6)   # epoch losses: measured 3e-9 apart
    np.testing.assert_allclose(a1[2], b[2], rtol=0, atol=1.5e-3)
    # (parameter by parameter Adam's normalised steps let a near-zero gradient of another sign
    # move a weight by ~lr per step, so the parameters are compared as a whole: measured 1.5e-3
    # with batch norm and dropout, 3e-8 without)
    assert np.linalg.norm(a1[0] - b[0]) <= 5e-3 * np.linalg.norm(b[0])
    assert not np.array_equal(a1[0], b[0])   # ...and it is another provider that ran
