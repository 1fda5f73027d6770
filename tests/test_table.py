"""The kernel table (kernels/table.py): drivers compiled once per dtype, kernels one by one.

A network's table holds the addresses of exactly its kernels; the drivers call them through
intrinsics that check types at compile time and refuse an empty slot; a fresh process compiles
only the kernels it uses, and a network that differs in one choice from what the cache holds
compiles only that choice's kernels and no driver.
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from numba import njit
from numba.core.errors import TypingError

import fastbp as fb
from fastbp.kernels import network as K
from fastbp.kernels import table as T
from fastbp.kernels.activations import RELU, TANH
from fastbp.kernels.losses import SOFTMAX_CE
from fastbp.kernels.norm import BATCH_NORM, LAYER_NORM
from fastbp.kernels.optim import ADAM, SGD


def test_network_kernel_tables():
    net = fb.Network([3, 4, 4, 2], activation=["relu", "tanh"], output="softmax", dropout=[0.0, 0.5],
                     norm=["batch", "layer"], dtype=np.float32)
    train = net._kernels(ADAM, True)
    infer = net._kernels()
    assert train.shape == (4, T.N_SLOTS)
    a = lambda fam, code: T.address(fam, code, np.float32)   # noqa: E731
    assert list(train[0]) == [a("act_f", RELU), a("act_b", RELU), a("norm_f", BATCH_NORM), a("norm_b", BATCH_NORM),
                              a("norm_u", BATCH_NORM), 0, 0]
    assert list(train[1]) == [a("act_f", TANH), a("act_b", TANH), a("norm_f", LAYER_NORM), a("norm_b", LAYER_NORM),
                              0, a("drop_f", 0), a("drop_b", 0)]       # layer norm keeps no running statistics
    assert list(train[2]) == [0] * T.N_SLOTS                          # the output layer's kernels are the loss's
    assert list(train[3][:4]) == [a("loss_f", SOFTMAX_CE), a("loss_b", SOFTMAX_CE), a("opt_u", ADAM),
                                  a("out_f", SOFTMAX_CE)]
    # evaluation: no optimizer, no dropout
    assert list(infer[1][T.DROP_F:]) == [0, 0] and infer[3][T.OPT_U] == 0
    assert np.array_equal(infer[:3, :T.DROP_F], train[:3, :T.DROP_F]) and list(infer[3][[0, 1, 3]]) == list(train[3][[0, 1, 3]])
    assert net._kernels(ADAM, True) is train                          # made once per process
    assert net._kernels(SGD, True)[3][T.OPT_U] == a("opt_u", SGD)
    f64 = fb.Network([3, 4, 2], dtype=np.float64)._kernels()
    assert f64[0][T.ACT_F] == T.address("act_f", RELU, np.float64) != a("act_f", RELU)


def test_every_kernel_has_its_family_signature():
    for (family, code), disp in T.KERNELS.items():
        # (a bf16 network's parameter copy and products: float32 networks only, _validation refuses others)
        for dtype in (np.float32,) if family in ("cvt", "mm16") else (np.float32, np.float64):
            sig = T.signature(family, dtype)
            assert len(sig.args) == disp.py_func.__code__.co_argcount, (family, code)
            T.address(family, code, dtype)    # compiles for those argument types and checks the return type
            assert disp.overloads[sig.args].signature == sig, (family, code)


def test_a_table_for_another_network_is_refused():
    X = np.zeros((4, 3), np.float32)
    a = fb.Network([3, 4, 2], dtype=np.float32, seed=0)
    b = fb.Network([3, 4, 4, 2], dtype=np.float32, seed=0)
    c = fb.Network([3, 4, 2], dtype=np.float64, seed=0)
    for wrong in (b._kernels(), c._kernels()):   # a row too few / a float64 table for float32 arrays
        with a._borrow(4) as (ws, layout, fpar, meta), pytest.raises(ValueError, match="not this network's"):
            K.loss_all(wrong, a.params, a.norm_state, ws, layout, fpar, meta, a._rng, X, a._no_T, a._no_labels,
                       True, a._no_weights, 4, np.empty((4, 2), np.float32), False)


@njit
def _relu_through(addr, A, Z, b):
    T.call_act_f(addr, A, Z, b, 0.0)


def test_a_call_runs_the_kernel_and_an_empty_slot_raises():
    rng = np.random.default_rng(0)
    Z = rng.standard_normal((5, 3)).astype(np.float32)
    b = rng.standard_normal(3).astype(np.float32)
    A = np.empty_like(Z)
    _relu_through(T.address("act_f", RELU, np.float32), A, Z, b)
    np.testing.assert_array_equal(A, np.maximum(Z + b, 0))
    with pytest.raises(RuntimeError, match="no act_f kernel in the table"):
        _relu_through(0, A, Z, b)


def test_a_call_with_the_wrong_types_does_not_compile():
    Z = np.zeros((5, 3), np.float32)
    with pytest.raises(TypingError, match="call_act_f: argument 4 is .* the kernels take"):
        _relu_through(0, Z, Z, np.zeros(3, np.float64))    # a float64 bias for float32 arrays
    with pytest.raises(TypingError, match="call_act_f"):
        _relu_through(0, Z, np.asfortranarray(Z), np.zeros(3, np.float32))   # not C-contiguous


_PROBE = r"""
import json, sys
import numpy as np
import fastbp as fb
from fastbp.kernels import network as K, table as T
cfg = json.loads(sys.argv[1])
rng = np.random.default_rng(0)
X = rng.standard_normal((40, 4)).astype(np.float32); y = rng.integers(0, 3, 40)
net = fb.Network([4, 8, 3], activation=cfg["activation"], output="softmax", seed=0, dropout=cfg["dropout"])
net.fit(X, y, epochs=1, batch_size=16, optimizer=cfg["optimizer"], verbose=0)
net.evaluate(X, y); net.predict(X)
misses = lambda d: sum(d._cache_misses.values())
print(json.dumps({"kernels": sorted(d.py_func.__name__ for d in set(T.KERNELS.values()) if misses(d)),
                  "drivers": sorted(n for n in ("train_epoch", "loss_all") if misses(getattr(K, n)))}))
"""


def _probe(cache, **cfg):
    # (without the compile helper of fastbp._compile, so that this process compiles everything
    # it needs and its cache misses list it; tests/test_compile.py tests the helper)
    env = dict(os.environ, NUMBA_CACHE_DIR=str(cache), FASTBP_COMPILE_HELPER="0")
    out = subprocess.run([sys.executable, "-c", _PROBE, json.dumps(cfg)], env=env, capture_output=True, text=True,
                         timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_a_fresh_cache_compiles_only_the_networks_kernels_and_a_new_choice_only_its_own(tmp_path):
    first = _probe(tmp_path, activation="relu", optimizer="adam", dropout=0.0)
    assert first == {"kernels": ["adam_u", "relu_b", "relu_f", "softmax_out", "softmax_xent_b", "softmax_xent_f"],
                     "drivers": ["loss_all", "train_epoch"]}
    # one choice changed at a time, on the cache the first run left: that choice's kernels, no driver
    assert _probe(tmp_path, activation="tanh", optimizer="adam", dropout=0.0) == {
        "kernels": ["tanh_b", "tanh_f"], "drivers": []}
    assert _probe(tmp_path, activation="relu", optimizer="sgd", dropout=0.2) == {
        "kernels": ["dropout_b", "dropout_f", "sgd_u"], "drivers": []}
    assert _probe(tmp_path, activation="tanh", optimizer="sgd", dropout=0.2) == {"kernels": [], "drivers": []}


def test_tables_follow_the_network_when_made_afresh_and_after_a_new_dropout(rng):
    X = rng.standard_normal((32, 3))
    y = rng.integers(0, 2, 32)
    net = fb.Network([3, 4, 2], seed=0)
    net.fit(X, y, epochs=1, verbose=0)
    before = net.predict_proba(X)
    net.__dict__.pop("_layer_codes")         # made again on first use
    np.testing.assert_array_equal(net.predict_proba(X), before)
    assert net._kernels(ADAM, True)[0][T.DROP_F] == 0
    net.dropout[0] = 0.5                     # dropout changed in place: the training table gains its kernels
    net.fit(X, y, epochs=1, verbose=0)
    assert net._kernels(ADAM, True)[0][T.DROP_F] == T.address("drop_f", 0, net.dtype)


_BY_ADDRESS_THEN_PYTHON = r"""
import json, sys
import numpy as np
import fastbp as fb
from fastbp.kernels import optim, table
disp = table.KERNELS["opt_u", optim.SGD]
if sys.argv[1] == "address":          # as warmup and a network's table compile it
    table.address("opt_u", optim.SGD, np.float32)
else:                                 # as fastbp.distributed's step calls it, from Python
    p, g, e = np.ones(8, np.float32), np.ones(8, np.float32), np.zeros(0, np.float32)
    optim.optimizer_update(optim.SGD, p, g, e, e, e, fb.SGD(lr=0.5)._hparams(), 1, 1.0)
    assert (p == 0.5).all(), p
print(json.dumps([sum(disp._cache_hits.values()), sum(disp._cache_misses.values())]))
"""


def test_a_kernel_compiled_for_its_table_is_loaded_when_python_calls_it(tmp_path):
    # Numba keys its cache by what compile() was given: a table compile with the return type in the
    # signature was once cached apart from a Python call's and compiled again for it
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path), FASTBP_COMPILE_HELPER="0")
    runs = [subprocess.run([sys.executable, "-c", _BY_ADDRESS_THEN_PYTHON, how], env=env, capture_output=True,
                           text=True, timeout=600) for how in ("address", "python")]
    for r in runs:
        assert r.returncode == 0, r.stderr[-3000:]
    assert [json.loads(r.stdout.strip().splitlines()[-1]) for r in runs] == [[0, 1], [1, 0]]
