import numpy as np
import pytest

import fastbp as fb


@pytest.fixture
def rng():
    return np.random.default_rng(12345)


@pytest.fixture(params=["openblas", "onednn"])
def gemm_provider(request):
    """Every float32 product on OpenBLAS, then on oneDNN (skipped where oneDNN cannot serve them)."""
    if request.param == "onednn" and not fb.BLAS_INFO.get("sgemm_onednn"):
        pytest.skip("no oneDNN beside NumPy's OpenBLAS here (the test extra installs it on Linux x86-64)")
    before = fb.set_gemm_provider(request.param)
    yield request.param
    fb.set_gemm_provider(before)


@pytest.fixture(params=[1, 2], ids=["1thread", "2threads"])
def threads(request):
    before = fb.get_num_threads()
    fb.set_num_threads(request.param)
    yield request.param
    fb.set_num_threads(before)


def make_data(rng, n, d, k, loss, dtype=np.float64):
    """Inputs and targets suited to a loss; labels for cross-entropy."""
    X = rng.standard_normal((n, d)).astype(dtype)
    if loss == "cross_entropy":
        y = rng.integers(0, k, n)
    elif loss == "binary_cross_entropy":
        y = (rng.random((n, k)) > 0.5).astype(dtype)
    elif loss == "poisson":
        y = rng.poisson(1.0, (n, k)).astype(dtype)
    else:
        y = rng.standard_normal((n, k)).astype(dtype)
    return X, y
