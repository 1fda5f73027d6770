"""Kernel sets: each network's compiled drivers hold only its own kernels (kernels/kset.py).

A specialised driver must train, predict and evaluate exactly as the driver with every
kernel (``ALL``), and must not compile the kernels it leaves out.
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from sklearn.exceptions import ConvergenceWarning

import fastbp as fb
from fastbp.kernels import kset as KS
from fastbp.kernels.activations import RELU, TANH
from fastbp.kernels.losses import IDENTITY_MSE, SOFTMAX_CE
from fastbp.kernels.norm import BATCH_NORM, NO_NORM
from fastbp.kernels.optim import ADAM, SGD
from fastbp.sklearn import MLPClassifier


@pytest.fixture(autouse=True)
def _specialise(monkeypatch):
    monkeypatch.setattr(KS, "SPECIALISE", True)   # conftest turns it off for the rest of the suite


def test_kernel_set_mask():
    ks = KS.kernel_set([RELU, TANH, RELU], SOFTMAX_CE, ADAM, [NO_NORM, BATCH_NORM], dropout=True)
    expect = ((1 << (KS.ACT_BIT + RELU)) | (1 << (KS.ACT_BIT + TANH)) | (1 << (KS.LOSS_BIT + SOFTMAX_CE))
              | (1 << (KS.OPT_BIT + ADAM)) | (1 << (KS.NORM_BIT + BATCH_NORM)) | (1 << KS.DROPOUT_BIT))
    assert ks == KS.KernelSet(expect)
    assert KS.kernel_set([RELU], IDENTITY_MSE) != KS.kernel_set([RELU], IDENTITY_MSE, SGD)
    assert KS.kernel_set() == KS.KernelSet(0)


def test_kernel_set_off_gives_all(monkeypatch):
    monkeypatch.setattr(KS, "SPECIALISE", False)
    assert KS.kernel_set([RELU], SOFTMAX_CE, ADAM) is KS.ALL


def test_network_kernel_sets():
    net = fb.Network([3, 4, 4, 2], activation=["relu", "tanh"], output="softmax", dropout=[0.0, 0.5])
    train = net._kernels(ADAM, True)
    infer = net._kernels()
    assert train == KS.kernel_set([RELU, TANH], SOFTMAX_CE, ADAM, [NO_NORM, NO_NORM], dropout=True)
    assert infer == KS.kernel_set([RELU, TANH], SOFTMAX_CE)   # inference: no optimizer, no dropout


CONFIGS = [
    dict(sizes=[5, 8, 3], activation="relu", output="softmax", optimizer="adam", dtype="float32"),
    dict(sizes=[5, 8, 6, 2], activation=["tanh", "gelu"], output="identity", loss="huber",
         optimizer=lambda: fb.SGD(lr=0.05, momentum=0.9, nesterov=True), dtype="float64", norm="layer"),
    dict(sizes=[5, 8, 6, 3], activation=["elu", "leaky_relu"], output="sigmoid", optimizer="rmsprop",
         dtype="float64", dropout=0.2, norm="batch"),
]


def _fit(cfg, X, y):
    cfg = dict(cfg)
    opt = cfg.pop("optimizer")
    opt = opt() if callable(opt) else opt   # an optimizer object belongs to one network
    sizes = cfg.pop("sizes")
    net = fb.Network(sizes, seed=3, **cfg)
    hist = net.fit(X, y, epochs=2, batch_size=16, optimizer=opt, shuffle=True, verbose=0)
    return net, hist


def _data(cfg, rng):
    X = rng.standard_normal((70, cfg["sizes"][0]))
    k = cfg["sizes"][-1]
    if cfg["output"] == "softmax":
        y = rng.integers(0, k, 70)
    elif cfg["output"] == "sigmoid":
        y = (rng.random((70, k)) > 0.5).astype(float)
    else:
        y = rng.standard_normal((70, k))
    return X, y


@pytest.mark.parametrize("cfg", CONFIGS, ids=["relu-softmax-adam-f32", "tanh-gelu-huber-sgd-ln", "elu-bce-rms-bn-drop"])
def test_specialised_driver_matches_all_kernels(cfg, rng, monkeypatch):
    X, y = _data(cfg, rng)
    X = X.astype(cfg["dtype"])
    special, h1 = _fit(cfg, X, y)
    assert special._kernels() != KS.ALL
    monkeypatch.setattr(KS, "SPECIALISE", False)
    everything, h2 = _fit(cfg, X, y)
    assert everything._kernels() is KS.ALL
    np.testing.assert_array_equal(special.params, everything.params)
    np.testing.assert_array_equal(special.norm_state, everything.norm_state)
    assert h1.history["loss"] == h2.history["loss"]
    np.testing.assert_array_equal(special.predict_proba(X) if cfg["output"] != "identity" else special.predict(X),
                                  everything.predict_proba(X) if cfg["output"] != "identity" else everything.predict(X))
    monkeypatch.setattr(KS, "SPECIALISE", True)
    assert special.evaluate(X, y) == everything.evaluate(X, y)


_PROBE = r"""
import json, re, numpy as np
from numba.core import event
seen = set()       # every function whose bytecode Numba translated: compiled, or inlined into a caller
dispatchers = []   # each compile of a kernel dispatcher (activation_forward_in's implementation, ...)

class Seen(event.Listener):
    def on_start(self, ev):
        m = re.fullmatch(r"translate_bytecode \[(.+)\]", ev.data["name"])
        if m:
            seen.add(m.group(1))

    def on_end(self, ev):
        pass

class Compiled(event.Listener):
    def on_start(self, ev):
        name = ev.data["dispatcher"].py_func.__qualname__
        if name.endswith("_in.<locals>.impl"):
            dispatchers.append(name.split(".")[0])

    def on_end(self, ev):
        pass

event.register("numba:run_pass", Seen())
event.register("numba:compile", Compiled())
import fastbp as fb
from fastbp.kernels import activations, losses, optim, norm, dropout
rng = np.random.default_rng(0)
X = rng.standard_normal((40, 4)).astype(np.float32); y = rng.integers(0, 3, 40)
net = fb.Network([4, 8, 3], activation="relu", output="softmax", seed=0)
net.fit(X, y, epochs=1, batch_size=16, optimizer="adam", verbose=0)
net.evaluate(X, y); net.predict(X)
kernels = {name for mod in (activations, losses, optim, norm, dropout) for name in vars(mod)
           if name.endswith(("_forward", "_backward", "_update"))}
print(json.dumps([sorted(seen & kernels), sorted(dispatchers)]))
"""


def test_a_network_compiles_only_its_kernels(tmp_path):
    # a fresh process with an empty cache: the kernels it compiled (standalone, or inlined
    # into the dispatcher that calls them) are the ones listed
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path))
    out = subprocess.run([sys.executable, "-c", _PROBE], env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    compiled, dispatchers = json.loads(out.stdout.strip().splitlines()[-1])
    # output_forward (the output function alone, for predict) has every output in one loop
    assert compiled == ["adam_update", "output_forward", "relu_backward", "relu_forward",
                        "softmax_xent_backward", "softmax_xent_forward"]
    # evaluate and predict use the training kernel set, so each dispatcher compiles once
    assert dispatchers == ["_activation_backward_in", "_activation_forward_in", "_dropout_backward_in",
                           "_dropout_forward_in", "_loss_backward_in", "_loss_forward_in", "_norm_backward_in",
                           "_norm_forward_in", "_norm_update_running_in", "_optimizer_update_in"]


def test_evaluation_uses_the_kernel_set_training_compiled():
    # evaluate/predict take the set of the optimizer last trained with, whichever path trained
    # (fit, train_step, the scikit-learn estimators, which do not set net.optimizer)
    X = np.random.default_rng(0).standard_normal((30, 4))
    y = np.arange(30) % 3
    net = fb.Network([4, 5, 3], dropout=0.2, seed=0)
    assert net._eval_kernels() == net._kernels()
    net.train_step(X, y, optimizer=fb.SGD(0.1))
    assert net._eval_kernels() == net._kernels(SGD, True) != net._kernels()
    net.fit(X, y, epochs=1, optimizer="adam", verbose=0)
    assert net._eval_kernels() == net._kernels(ADAM, True)
    with pytest.warns(ConvergenceWarning):
        est = MLPClassifier(hidden_layer_sizes=(5,), max_iter=2, random_state=0).fit(X, y)
    assert est._net.optimizer is None and est._net._eval_kernels() == est._net._kernels(ADAM, True)
