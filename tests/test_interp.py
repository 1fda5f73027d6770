"""kernels.interp: the drivers run interpreted (while a cold fit's helper compiles them) train,
evaluate and predict bit for bit as the compiled drivers do, in every configuration.

Each case fits the same network twice in this process, once with the compiled drivers and once
with ``fastbp._compile.waiting`` and ``interpreting`` saying yes to every call (so every batch,
validation pass, evaluate and predict runs interpreted), and compares parameters, norm statistics, history and
outputs exactly.
"""

import signal
import threading

import numpy as np
import pytest

import fastbp as fb
from fastbp import _compile
from fastbp._progress import HeldInterrupts, InterruptFlag
from fastbp.kernels import interp, network as K

CASES = {
    "default": dict(),
    "dropout": dict(net=dict(dropout=0.25)),
    "batch norm, tanh": dict(net=dict(norm="batch", activation="tanh")),
    "layer norm, float64, sgd": dict(net=dict(norm="layer", dtype=np.float64), fit=dict(optimizer="sgd")),
    "l2, clip, gradient tracking": dict(l2=1e-2, fit=dict(clip_norm=0.5, track_gradients=True, optimizer="adamw")),
    "sample weights, unshuffled": dict(weights=True, fit=dict(shuffle=False)),
    "validation data, mse": dict(net=dict(output="identity", loss="mse", activation="elu"), dense=True, val=True),
    "sigmoid bce, weights": dict(net=dict(output="sigmoid", loss="binary_cross_entropy"), dense=True, weights=True),
    "bf16, dropout, l2": dict(net=dict(precision="bf16", dropout=0.1), l2=1e-3),
}
BF16_OK, BF16_WHY = fb.bf16_support()


def _fit(case, interpreted, monkeypatch):
    rng = np.random.default_rng(1)
    dtype = case.get("net", {}).get("dtype", np.float32)
    X = rng.standard_normal((150, 6)).astype(dtype)
    y = rng.integers(0, 3, 150)
    if case.get("dense"):
        y = (y[:, None] == np.arange(3)).astype(dtype)
    fit = dict(epochs=2, batch_size=32, verbose=0, **case.get("fit", {}))
    if case.get("weights"):
        fit["sample_weight"] = rng.uniform(0.0, 2.0, 150)
    if case.get("val"):
        fit["validation_data"] = (X[:40], y[:40])
    net = fb.Network([6, 9, 7, 3], seed=3, **case.get("net", {}))
    net._l2 = case.get("l2", 0.0)
    calls = []
    if interpreted:
        monkeypatch.setattr(_compile, "interpreting", lambda driver, args: calls.append(driver) or True)
        monkeypatch.setattr(_compile, "waiting", lambda driver, sig: lambda: calls.append(driver) or True)
    hist = net.fit(X, y, **fit)
    big = np.tile(X, (17, 1))                 # 2,550 rows: three inference chunks, the last one short
    out = (net.params.copy(), net.norm_state.copy(), hist.history, net.predict_proba(big), net.evaluate(X, y))
    monkeypatch.undo()
    return out, calls


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.skipif(
    "bf16" in n and not BF16_OK, reason=f"bf16 cannot run here: {BF16_WHY}")) for n in CASES])
def test_interpreted_drivers_train_and_predict_bit_for_bit_as_compiled(name, monkeypatch):
    compiled, _ = _fit(CASES[name], False, monkeypatch)
    interpreted, calls = _fit(CASES[name], True, monkeypatch)
    assert K.train_epoch in calls and K.loss_all in calls
    for a, b in zip(compiled[:2] + compiled[3:4], interpreted[:2] + interpreted[3:4]):
        assert a.dtype == b.dtype and np.array_equal(a, b)
    assert compiled[2] == interpreted[2] and compiled[4] == interpreted[4]


def test_a_non_finite_step_is_refused_at_the_same_batch_with_the_same_weights(monkeypatch):
    results = []
    for interpreted in (False, True):
        net = fb.Network([6, 9, 3], seed=3)
        rng = np.random.default_rng(1)
        X, y = rng.standard_normal((150, 6)).astype(np.float32) * 1e3, rng.integers(0, 3, 150)
        if interpreted:
            monkeypatch.setattr(_compile, "waiting", lambda driver, sig: lambda: True)
        with pytest.raises(fb.DivergenceError) as exc:
            net.fit(X, y, epochs=3, batch_size=32, verbose=0, optimizer=fb.SGD(lr=1e30))
        monkeypatch.undo()
        results.append((str(exc.value), net.params.copy()))
    assert results[0][0] == results[1][0] and np.array_equal(results[0][1], results[1][1])
    assert np.isfinite(results[1][1]).all()


def test_the_interpreted_drivers_check_their_table_as_the_compiled_ones():
    net = fb.Network([4, 5, 2], seed=0)
    with net._borrow(8) as (ws, layout, fpar, meta):
        kt = np.zeros((1, 7), np.int64)      # not this network's table (rows)
        X = np.zeros((8, 4), np.float32)
        args = (kt, net.params, net.norm_state, ws, layout, fpar, meta, net._rng, X, net._no_T, net._no_labels, True,
                net._no_weights, 8, np.zeros((8, 2), np.float32), False)
        for f in (K.loss_all, interp.loss_all):
            with pytest.raises(ValueError, match="kernel table is not this network's"):
                f(*args)


@pytest.mark.skipif(threading.current_thread() is not threading.main_thread(), reason="signals go to the main thread")
def test_ctrl_c_is_held_until_an_interpreted_call_returns():
    # (fit's InterruptFlag below it: the first Ctrl-C asks to stop after the running batches, a
    # second one interrupts at once)
    previous = signal.getsignal(signal.SIGINT)
    with InterruptFlag() as flag:
        with pytest.raises(KeyboardInterrupt):     # both delivered when the block ends
            with HeldInterrupts():
                signal.raise_signal(signal.SIGINT)
                signal.raise_signal(signal.SIGINT)
                for _ in range(1000):              # (Python runs signal handlers between bytecodes)
                    pass
                held = flag.flag
        assert not held and flag.flag
    assert signal.getsignal(signal.SIGINT) is previous


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_the_twins_of_the_leaves_give_the_compiled_leaves_values(dtype):
    from fastbp import _blas
    from fastbp.kernels import losses
    rng = np.random.default_rng(0)
    # the products, every transpose and beta, through the same symbol
    for ta in (False, True):
        for tb in (False, True):
            A = rng.standard_normal((7, 5) if ta else (5, 7)).astype(dtype)
            B = rng.standard_normal((9, 7) if tb else (7, 9)).astype(dtype)
            C0 = rng.standard_normal((5, 9)).astype(dtype)
            for beta in (0.0, 1.0):
                C1, C2 = C0.copy(), C0.copy()
                _blas.gemm(ta, tb, 1.0, A, B, beta, C1)
                _blas.gemm_from_python(ta, tb, 1.0, A, B, beta, C2)
                assert np.array_equal(C1, C2)
    _blas.gemm_from_python(False, False, 1.0, A[:0], B, 0.0, C0[:0])     # no rows: nothing to call
    # the gathered batch
    X = rng.standard_normal((20, 3)).astype(dtype); T = rng.standard_normal((20, 4)).astype(dtype)
    labels, sw, rows = rng.integers(0, 4, 20), rng.uniform(size=20).astype(dtype), rng.permutation(20)[:6]
    for use_labels in (True, False):
        out = [(np.zeros((8, 3), dtype), np.zeros((8, 4), dtype), np.zeros(8, np.int64), np.zeros(8, dtype))
               for _ in range(2)]
        K.gather_rows(*out[0], X, T, labels, sw, rows, use_labels, True)
        interp._gather_rows(*out[1], X, T, labels, sw, rows, use_labels, True)
        assert all(np.array_equal(a, b) for a, b in zip(*out))
    # the counts, with ties (equal maxima: the first counts) and for every loss code
    P = rng.integers(0, 3, (40, 4)).astype(dtype)
    Td = rng.integers(0, 2, (40, 4)).astype(dtype)
    lab = rng.integers(0, 4, 40)
    for code in losses.KERNELS:
        for use_labels in (True, False):
            assert interp._correct_count(code, P, Td, lab, use_labels) == \
                K.correct_count(code, P, Td, lab, use_labels)
    Ps = rng.uniform(size=(40, 4)).astype(dtype)
    assert interp._correct_count(losses.SIGMOID_BCE, Ps, Td, lab, False) == \
        K.correct_count(losses.SIGMOID_BCE, Ps, Td, lab, False)


def test_every_compiled_function_the_drivers_name_can_be_called_from_python():
    # interp runs the drivers' source from Python, so whatever compiled function they call must
    # keep its CPython wrapper (a kernel helper compiled without one, _config.HELPER, would crash
    # the interpreter when called from Python, not raise)
    from numba.core.registry import CPUDispatcher
    named = {n for f in vars(K).values() if isinstance(f, CPUDispatcher) and f.py_func.__module__ == K.__name__
             for n in f.py_func.__code__.co_names}
    called = {n: f for n, f in vars(K).items() if n in named and isinstance(f, CPUDispatcher)}
    assert "_inv_total" in called and "sq_sum" in called
    assert not [n for n, f in called.items() if f.targetoptions.get("no_cpython_wrapper")]
