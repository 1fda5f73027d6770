"""Training behaviour: learning, determinism, dtypes, threads, allocation, divergence."""

import re
import threading
import tracemalloc
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from numba.core.runtime import _nrt_python, rtsys

import fastbp as fb
import fastbp._blas as blas
import fastbp._buffers as buffers
import fastbp.network as network_module
from fastbp._blas import BLAS_INFO, _direct_kernels
from fastbp._training import Runner
from fastbp.kernels import network as K

from .conftest import make_data


def spirals(n_per_class=100, noise=0.0, seed=0):
    rng = np.random.default_rng(seed)
    t = np.sqrt(rng.random(n_per_class)) * 3 * np.pi
    a = np.c_[t * np.cos(t), t * np.sin(t)] / (3 * np.pi)
    X = np.vstack([a, -a]) + noise * rng.standard_normal((2 * n_per_class, 2))
    y = np.r_[np.zeros(n_per_class, int), np.ones(n_per_class, int)]
    return X.astype(np.float32), y


def test_xor_reaches_100_percent():
    X = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], np.float32)
    y = np.array([0, 1, 1, 0])
    net = fb.Network([2, 8, 2], activation="tanh", seed=0)
    net.fit(X, y, epochs=300, batch_size=4, optimizer=fb.Adam(lr=0.05))
    assert net.evaluate(X, y)["accuracy"] == 1.0
    assert np.array_equal(net.predict(X), y)


def test_two_spirals_at_least_98_percent():
    X, y = spirals()
    net = fb.Network([2, 64, 64, 2], activation="relu", seed=0)
    net.fit(X, y, epochs=300, batch_size=32, optimizer=fb.Adam(lr=0.01))
    assert net.evaluate(X, y)["accuracy"] >= 0.98


def test_regression_and_multilabel_learn(rng):
    X = rng.standard_normal((256, 3)).astype(np.float32)
    y = np.c_[np.sin(X[:, 0]), X[:, 1] * X[:, 2]]
    net = fb.Network([3, 32, 32, 2], activation="tanh", output="identity", seed=0)
    first = net.evaluate(X, y)["loss"]
    net.fit(X, y, epochs=100, batch_size=32, optimizer=fb.Adam(lr=3e-3))
    assert net.evaluate(X, y)["loss"] < 0.1 * first
    Y = (X[:, :2] > 0).astype(np.float32)
    ml = fb.Network([3, 16, 2], output="sigmoid", seed=0)
    ml.fit(X, Y, epochs=100, batch_size=32, optimizer=fb.Adam(lr=1e-2))
    assert ml.evaluate(X, Y)["accuracy"] > 0.97
    assert ml.predict(X).shape == (256, 2)


def test_same_seed_same_weights_and_losses(rng):
    X, y = make_data(rng, 100, 5, 3, "cross_entropy", np.float32)
    runs = []
    for _ in range(2):
        net = fb.Network([5, 16, 3], seed=7, dropout=0.2)
        h = net.fit(X, y, epochs=3, batch_size=16, optimizer=fb.Adam(1e-2))
        runs.append((net.params.copy(), h.history["loss"]))
    assert np.array_equal(runs[0][0], runs[1][0])
    assert runs[0][1] == runs[1][1]
    other = fb.Network([5, 16, 3], seed=8)
    assert not np.array_equal(other.params, fb.Network([5, 16, 3], seed=7).params)


def flat(net):
    return np.concatenate([np.r_[W.ravel(), b] for W, b in net.get_weights()])


def test_float32_matches_float64(rng):
    X, y = make_data(rng, 64, 6, 4, "cross_entropy")
    nets = [fb.Network([6, 12, 12, 4], activation="tanh", dtype=dt, seed=2) for dt in (np.float32, np.float64)]
    np.testing.assert_allclose(flat(nets[0]), flat(nets[1]), rtol=1e-6, atol=1e-7)
    losses = [n.fit(X, y, epochs=3, batch_size=16, optimizer=fb.SGD(lr=0.1, momentum=0.9)).history["loss"]
              for n in nets]
    np.testing.assert_allclose(losses[0], losses[1], rtol=1e-4)
    np.testing.assert_allclose(flat(nets[0]), flat(nets[1]), rtol=1e-3, atol=1e-4)
    np.testing.assert_allclose(nets[0].predict_proba(X), nets[1].predict_proba(X), atol=1e-4)


DIRECT_INFO = {"provider": "numpy-openblas", "omatcopy": "numpy-openblas",
               "config": "OpenBLAS 0.3.31 USE64BITINT DYNAMIC_ARCH NO_AFFINITY SkylakeX MAX_THREADS=64"}


@pytest.mark.parametrize("blas_info", ["this machine's", "with direct kernels", "without", "onednn 1 thread",
                                       "onednn 2 threads"])
def test_dx_via_transpose_only_where_it_pays(blas_info, monkeypatch):
    # small float32 layers take dX = dZ (W^T copied) (OpenBLAS's direct small-matrix path), others dZ W^T;
    # the layer table is checked for a BLAS with and one without those kernels on every CPU. Where
    # oneDNN computes the products, small layers and (on more than one thread) large ones take the copy.
    haswell = dict(DIRECT_INFO, config=DIRECT_INFO["config"].replace("SkylakeX", "Haswell"))
    if blas_info.startswith("onednn"):
        monkeypatch.setattr(blas, "BLAS_INFO", dict(haswell, sgemm_provider="onednn"))
        monkeypatch.setitem(blas._USER, "threads", int(blas_info.split()[1]))
    elif blas_info != "this machine's":
        monkeypatch.setattr(blas, "BLAS_INFO", DIRECT_INFO if blas_info == "with direct kernels" else haswell)
    onednn = blas.BLAS_INFO.get("sgemm_provider") == "onednn"
    ours = onednn or _direct_kernels(blas.BLAS_INFO)
    assert ours == (blas_info == "with direct kernels" or onednn) or blas_info == "this machine's"
    wt = lambda net, m: list(net._workspace(m)[1][:, K.WT])  # noqa: E731
    assert wt(fb.Network([64, 64, 64, 10]), 32) == ([0, 1, 1] if ours else [0, 0, 0])
    assert wt(fb.Network([64, 64, 64, 10], dtype=np.float64), 32) == [0, 0, 0]
    threads = blas._USER["threads"] or blas.cores()
    assert wt(fb.Network([784, 512, 512, 1]), 256) == ([0, int(onednn and threads > 1), 1] if ours else [0, 0, 0])
    # mid-sized (128x256x128) never; large (128 x 128 x 2048) only with oneDNN on > 1 thread
    assert wt(fb.Network([16, 256, 128, 2048, 3]), 128)[1:3] == [0, int(onednn and threads > 1)]


def test_dx_via_transpose_needs_openblas_small_kernels_and_its_omatcopy():
    info = {"provider": "numpy-openblas", "omatcopy": "numpy-openblas",
            "config": "OpenBLAS 0.3.31 USE64BITINT DYNAMIC_ARCH NO_AFFINITY SkylakeX MAX_THREADS=64"}
    assert _direct_kernels(info)
    assert _direct_kernels(dict(info, config=info["config"].replace("SkylakeX", "SapphireRapids")))
    assert not _direct_kernels(dict(info, config=info["config"].replace("SkylakeX", "Haswell")))
    assert not _direct_kernels(dict(info, config=None))
    assert not _direct_kernels(dict(info, omatcopy="numba-fallback"))
    assert not _direct_kernels(dict(info, provider="numba-fallback"))
    assert not _direct_kernels(dict(info, sgemm_provider="onednn"))   # oneDNN computes the products


@pytest.mark.parametrize("dropout", [0.0, 0.3])
def test_dx_via_transpose_trains_as_the_transposed_product(dropout, rng, monkeypatch):
    X, y = make_data(rng, 90, 6, 4, "cross_entropy", np.float32)
    runs = []
    for via in (False, True):
        monkeypatch.setattr(buffers, "dx_via_transpose", lambda *a, via=via: via)
        net = fb.Network([6, 12, 9, 4], seed=2, dropout=dropout)
        net._l2 = 1e-3 if dropout else 0.0   # the L2 branch writes dW after dX too
        h = net.fit(X, y, epochs=3, batch_size=16, optimizer=fb.Adam(1e-2))
        assert list(net._workspace(16)[1][:, K.WT]) == [0, int(via), int(via)]
        runs.append((h.history["loss"], net.params.copy()))
    np.testing.assert_allclose(runs[0][0], runs[1][0], rtol=1e-5)
    np.testing.assert_allclose(runs[0][1], runs[1][1], rtol=1e-4, atol=1e-5)


def test_one_and_two_threads_agree(rng):
    X, y = make_data(rng, 300, 40, 5, "cross_entropy", np.float64)
    results = []
    before = fb.get_num_threads()
    try:
        for n in (1, 2):
            fb.set_num_threads(n)
            assert fb.get_num_threads() == n
            net = fb.Network([40, 200, 150, 5], dtype=np.float64, seed=4)
            net.fit(X, y, epochs=2, batch_size=100, optimizer=fb.Adam(1e-3))
            results.append(net.params.copy())
    finally:
        fb.set_num_threads(before)
    np.testing.assert_allclose(results[0], results[1], rtol=1e-10, atol=1e-12)


def test_hand_worked_single_sgd_step():
    # one layer, identity + mse: loss = mean((x w + b - t)^2); by hand:
    # z = 1*0.5 + 2*(-1) + 0.25 = -1.25, d = z - 3 = -4.25, dL/dz = 2 d = -8.5 (n = k = 1)
    net = fb.Network([2, 1], output="identity", dtype=np.float64)
    net.set_weights([(np.array([[0.5], [-1.0]]), np.array([0.25]))])
    loss = net.train_step(np.array([[1.0, 2.0]]), np.array([3.0]), fb.SGD(lr=0.1))
    assert loss == pytest.approx(4.25 ** 2)
    (W, b), = net.get_weights()
    np.testing.assert_allclose(W[:, 0], [0.5 + 0.1 * 8.5, -1.0 + 0.1 * 17.0])
    np.testing.assert_allclose(b, [0.25 + 0.1 * 8.5])


def test_seeded_loss_sequence_regression():
    # a fixed short run recorded in float64 (the gradient checks establish that it was
    # right); it guards against silent numerical changes in later optimisations
    rng = np.random.default_rng(0)
    X = rng.standard_normal((40, 3))
    y = rng.integers(0, 3, 40)
    net = fb.Network([3, 8, 3], activation="tanh", dtype=np.float64, seed=0)
    losses = [net.train_step(X, y, fb.SGD(lr=0.5)) if i == 0 else net.train_step(X, y) for i in range(5)]
    expected = [1.3338820281742205, 1.1720739366119421, 1.1087121035198844, 1.0815152083107833,
                1.0689517012807996]
    np.testing.assert_allclose(losses, expected, rtol=1e-10)


def test_train_step_matches_loss_and_gradients_then_update(rng):
    X, y = make_data(rng, 16, 4, 3, "cross_entropy")
    a = fb.Network([4, 7, 3], dtype=np.float64, seed=5)
    b = fb.Network([4, 7, 3], dtype=np.float64, seed=5)
    loss, grads = b.loss_and_gradients(X, y)
    assert a.train_step(X, y, fb.SGD(lr=0.3)) == pytest.approx(loss, rel=1e-14)
    for (Wa, ba), (Wb, bb), (dW, db) in zip(a.get_weights(), b.get_weights(), grads):
        np.testing.assert_allclose(Wa, Wb - 0.3 * dW, rtol=1e-14, atol=1e-15)
        np.testing.assert_allclose(ba, bb - 0.3 * db, rtol=1e-14, atol=1e-15)


def test_shuffle_off_and_partial_batch_use_one_workspace(rng):
    X, y = make_data(rng, 50, 4, 2, "cross_entropy", np.float32)
    net = fb.Network([4, 8, 2], seed=0)
    h = net.fit(X, y, epochs=2, batch_size=16, shuffle=False)  # batches 16, 16, 16, 2
    assert len(h.history["loss"]) == 2
    assert set(net._workspaces) == {16}
    # unshuffled epochs are order-dependent only: a second identical net gives the same result
    net2 = fb.Network([4, 8, 2], seed=0)
    net2.fit(X, y, epochs=2, batch_size=16, shuffle=False)
    assert np.array_equal(net.params, net2.params)


def test_workspaces_are_capped_and_least_recently_used_go_first(rng):
    X, y = make_data(rng, 40, 4, 2, "cross_entropy", np.float32)
    net = fb.Network([4, 8, 2], seed=0)
    net.fit(X, y, epochs=1, batch_size=8)
    for n in range(2, 20):                     # a stream of batch sizes (partial_fit on odd chunks)
        net.train_step(X[:n], y[:n])
    assert len(net._workspaces) == network_module.MAX_WORKSPACES
    assert list(net._workspaces) == list(range(20 - network_module.MAX_WORKSPACES, 20))
    net.predict(X)
    assert list(net._workspaces)[-1] == network_module.PREDICT_BATCH


def test_predict_from_many_threads_at_once(rng):
    # compiled code runs without the GIL: concurrent calls on one network must not share scratch buffers
    X, y = make_data(rng, 200, 16, 3, "cross_entropy", np.float32)
    net = fb.Network([16, 64, 64, 3], seed=0)
    net.fit(X, y, epochs=1, batch_size=32)
    batches = [rng.standard_normal((3000, 16)).astype(np.float32) for _ in range(6)]
    ref = [net.predict_proba(b) for b in batches]
    with ThreadPoolExecutor(3) as ex:
        for _ in range(5):
            for out, r in zip(ex.map(net.predict_proba, batches), ref):
                assert np.array_equal(out, r)
    # and deterministically: while another thread holds the cached workspaces, a call gets its own
    held, release = threading.Event(), threading.Event()

    def hold():
        with net._borrow(network_module.PREDICT_BATCH):
            held.set()
            release.wait(10)

    t = threading.Thread(target=hold)
    t.start()
    try:
        held.wait(10)
        with net._borrow(network_module.PREDICT_BATCH) as ws:
            assert ws[0] is not net._workspaces[network_module.PREDICT_BATCH][0]
        assert np.array_equal(net.predict_proba(batches[0]), ref[0])
    finally:
        release.set()
        t.join()
    with net._borrow(network_module.PREDICT_BATCH) as ws:
        assert ws[0] is net._workspaces[network_module.PREDICT_BATCH][0]


def test_validation_history_and_dropout_off_at_inference(rng):
    X, y = make_data(rng, 80, 5, 3, "cross_entropy", np.float32)
    net = fb.Network([5, 32, 3], dropout=0.5, seed=0)
    h = net.fit(X, y, epochs=4, batch_size=20, validation_data=(X, y))
    assert set(h.history) == {"loss", "accuracy", "lr", "val_loss", "val_accuracy"} and h.epoch == [0, 1, 2, 3]
    P = net.predict_proba(X)
    assert np.array_equal(P, net.predict_proba(X))   # deterministic: no dropout masks drawn
    same = fb.Network([5, 32, 3], dropout=0.0, seed=0)
    same.set_weights(net.get_weights())
    assert np.array_equal(P, same.predict_proba(X))   # ...and no dropout scaling: the network without dropout
    assert net.evaluate(X, y)["loss"] == pytest.approx(h.history["val_loss"][-1], rel=1e-6)


def _nrt_allocs():
    return rtsys.get_allocation_stats().alloc


@pytest.mark.parametrize("precision", ["fp32", pytest.param("bf16", marks=pytest.mark.skipif(
    not fb.bf16_support()[0], reason=f"bf16 cannot run here: {fb.bf16_support()[1]}"))])
def test_steady_state_training_allocates_nothing(rng, precision, gemm_provider):
    X, y = make_data(rng, 4000, 32, 10, "cross_entropy", np.float32)
    net = fb.Network([32, 128, 128, 10], seed=0, dropout=[0.1, 0.0], precision=precision)
    assert net.compute_precision == precision
    opt = fb.Adam()

    def run_epoch(n_rows):
        Xs, ys = X[:n_rows], y[:n_rows].astype(np.int64)
        runner = Runner(net, opt, Xs, np.zeros((0, 10), np.float32), ys, True, np.zeros(0, np.float32), 64)
        with runner:
            runner.start_epoch(np.random.default_rng(0))
            before = _nrt_allocs()
            done, status = runner.run(0, runner.n_batches)
            after = _nrt_allocs()
        assert (done, status) == (runner.n_batches, K.OK)
        return after - before

    _nrt_python.memsys_enable_stats()
    try:
        run_epoch(4000)  # compile + warm up
        few, many = run_epoch(640), run_epoch(4000)  # 10 and 63 batches (the last one short)
    finally:
        _nrt_python.memsys_disable_stats()
    # the only NRT allocations are per call (unboxing arguments), none per step
    assert few == many

    # the runner's Python side, one batch a call (as fit with a per-batch callback), keeps nothing
    runner = Runner(net, opt, X, np.zeros((0, 10), np.float32), y.astype(np.int64), True,
                    np.zeros(0, np.float32), 64)
    with runner:
        runner.start_epoch(np.random.default_rng(1))
        runner.run(0, 2)
        tracemalloc.start()
        try:
            base, _ = tracemalloc.get_traced_memory()
            tracemalloc.reset_peak()
            for b in range(2, runner.n_batches):
                runner.run(b, b + 1)
            current, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    assert peak - base < 64 * 128 * 4 / 4 and current - base < 4096

    # and the Python side of train_step allocates no arrays: traced memory stays flat
    Xb, yb = X[:64], y[:64]
    for _ in range(3):
        net.train_step(Xb, yb, opt)
    tracemalloc.start()
    try:
        base, _ = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        for _ in range(200):
            net.train_step(Xb, yb, opt)
        current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    one_activation = 64 * 128 * 4
    assert peak - base < one_activation / 4
    assert current - base < 4096


def test_divergence_stops_and_keeps_last_finite_weights(rng):
    X, y = make_data(rng, 32, 4, 3, "cross_entropy", np.float64)
    net = fb.Network([4, 8, 3], dtype=np.float64, seed=0)
    opt = fb.SGD(lr=1e200)
    net.train_step(X, y, opt)             # finite loss and gradients: applied
    after_first = net.params.copy()
    assert np.all(np.isfinite(after_first))
    with pytest.raises(fb.DivergenceError, match="non-finite"):
        for _ in range(5):
            net.train_step(X, y, opt)
            after_first = net.params.copy()
    assert np.array_equal(net.params, after_first)
    assert np.all(np.isfinite(net.params))


def test_fit_divergence_keeps_history_and_finite_weights(rng):
    # the rate grows tenfold an epoch until a step overflows: the finished epochs stay in the history
    X, y = make_data(rng, 64, 4, 1, "mse", np.float32)
    net = fb.Network([4, 16, 1], output="identity", seed=0)
    with pytest.raises(fb.DivergenceError, match=r"epoch \d+, batch \d+") as exc:
        net.fit(X, y, epochs=30, batch_size=8, optimizer=fb.SGD(lr=1e-3), schedule=fb.ExponentialDecay(10.0))
    failed = int(re.search(r"epoch (\d+),", str(exc.value)).group(1))
    assert failed > 1
    h = net.history
    assert h.epoch == list(range(failed - 1)) and set(h.history) == {"loss", "lr"}
    assert h.history["lr"] == pytest.approx([1e-3 * 10.0 ** e for e in h.epoch])
    assert len(h.history["loss"]) == failed - 1 and np.all(np.isfinite(h.history["loss"]))
    assert not h.interrupted
    assert np.all(np.isfinite(net.params))
