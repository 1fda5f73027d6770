"""The float32 products' provider (``fastbp.set_gemm_provider``): OpenBLAS or oneDNN behind the
one ``fastbp_sgemm`` symbol, chosen at run time by a small router (``_blas._ROUTE_IR``).

The products themselves are checked under both providers in test_kernels.py (``gemm_provider``
fixture: every shape, transpose, alpha/beta, 1 and 2 threads) and the zero-allocation steady
state in test_training.py; here: the rule, the setting, the environment variable, and whole
fits that agree across providers to rounding and are deterministic within one.
"""

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
    before = fb.gemm_provider()[0]
    yield
    fb.set_gemm_provider(before)


@pytest.mark.parametrize("core, avx512, want", [("Haswell", True, "onednn"), ("Zen", True, "onednn"),
                                                ("SkylakeX", True, "openblas"), ("Cooperlake", True, "openblas"),
                                                ("SapphireRapids", True, "openblas"), ("Haswell", False, "openblas"),
                                                (None, False, "openblas")])
def test_auto_rule(core, avx512, want):
    provider, why = _blas._auto_provider({"openblas_core": core}, {"avx512f": avx512})
    assert provider == want
    assert (core or "?") in why


def test_openblas_core_is_read_from_its_config():
    cfg = "OpenBLAS 0.3.31.188.0  USE64BITINT DYNAMIC_ARCH NO_AFFINITY Haswell MAX_THREADS=64"
    assert _blas._openblas_core({"config": cfg}) == "Haswell"
    assert _blas._openblas_core({"config": None}) is None
    if fb.BLAS_INFO["provider"] == "numpy-openblas":
        assert fb.BLAS_INFO["openblas_core"]


@pytest.mark.parametrize("name", ["mkl", "OpenBLAS", "", None, 1])
def test_unknown_provider_is_a_value_error(name, restore_provider):
    before = fb.gemm_provider()
    with pytest.raises(ValueError, match="gemm provider must be one of 'auto', 'openblas', 'onednn'"):
        fb.set_gemm_provider(name)
    assert fb.gemm_provider() == before


@needs_onednn
def test_setting_and_info(restore_provider):
    assert fb.set_gemm_provider("openblas") in _blas.GEMM_PROVIDERS
    assert fb.gemm_provider() == ("openblas", "openblas", "set by the user")
    assert fb.set_gemm_provider("onednn") == "openblas"
    assert fb.gemm_provider()[:2] == ("onednn", "onednn")
    assert (fb.BLAS_INFO["sgemm_provider"], fb.BLAS_INFO["sgemm_setting"]) == ("onednn", "onednn")
    fb.set_gemm_provider("auto")
    assert fb.gemm_provider()[1] == _blas._auto_provider(fb.BLAS_INFO)[0]


def _run(code, **env):
    out = subprocess.run([sys.executable, "-c", code], env=dict(os.environ, FASTBP_COMPILE_HELPER="0", **env),
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    return out


def test_without_a_router_onednn_is_refused_and_openblas_is_the_only_provider():
    # FASTBP_BLAS=numba: no OpenBLAS, so no router; asking for oneDNN says why
    out = _run("""
import fastbp as fb
print(fb.gemm_provider()[1])
try:
    fb.set_gemm_provider("onednn")
except ValueError as e:
    print("refused:", e)
print(fb.set_gemm_provider("openblas"), fb.gemm_provider()[1])
""", FASTBP_BLAS="numba")
    first, second, third = out.stdout.strip().splitlines()[-3:]
    assert first == "numba-fallback"
    assert second.startswith("refused: gemm provider 'onednn' is not available here: NumPy's OpenBLAS is not in use")
    assert third == "auto numba-fallback"


@needs_onednn
def test_environment_variable_sets_the_provider():
    code = "import fastbp as fb; print(*fb.gemm_provider()[:2])"
    assert _run(code, FASTBP_SGEMM="openblas").stdout.split()[-2:] == ["openblas", "openblas"]
    assert _run(code, FASTBP_SGEMM="onednn").stdout.split()[-2:] == ["onednn", "onednn"]
    bad = _run("import warnings; warnings.simplefilter('always')\n" + code, FASTBP_SGEMM="mkl")
    assert "FASTBP_SGEMM='mkl' ignored" in bad.stderr
    assert bad.stdout.split()[-2] == "auto"


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
    np.testing.assert_allclose(a1[1], b[1], rtol=1e-5)
    np.testing.assert_allclose(a1[2], b[2], rtol=0, atol=1.5e-3)
    # (parameter by parameter Adam's normalised steps let a near-zero gradient of another sign
    # move a weight by ~lr per step, so the parameters are compared as a whole: measured 1.5e-3
    # with batch norm and dropout, 3e-8 without)
    assert np.linalg.norm(a1[0] - b[0]) <= 5e-3 * np.linalg.norm(b[0])
    assert not np.array_equal(a1[0], b[0])   # ...and it is another provider that ran


@needs_onednn
def test_float64_networks_stay_on_openblas(restore_provider):
    # the router sees only float32 products: float64 ones go straight to OpenBLAS's dgemm, so a
    # float64 fit is bit-identical under either setting
    rng = np.random.default_rng(1)
    X = rng.standard_normal((300, 20))
    y = rng.integers(0, 3, 300)
    out = []
    for p in ("onednn", "openblas"):
        fb.set_gemm_provider(p)
        net = fb.Network([20, 40, 3], dtype=np.float64, seed=0)
        net.fit(X, y, epochs=2, batch_size=50, optimizer=fb.Adam(1e-3))
        out.append(net.params.copy())
    assert np.array_equal(out[0], out[1])
