"""fastbp.warmup and the compile lock, with real child processes on their own Numba caches.

Each child trains a small network in a fresh interpreter whose NUMBA_CACHE_DIR is a temporary
folder, and reports how often each driver of kernels/network.py was compiled (a cache miss)
or loaded from the cache (a hit), and the trained weights.
"""

import json
import os
import subprocess
import sys

import pytest

import fastbp
from fastbp import warmup

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(fastbp.__file__)))
DRIVERS = ("train_epoch", "loss_all", "train_batch", "loss_forward_all", "backward_all")

CHILD = r"""
import json, sys
import numpy as np
import fastbp as fb
from fastbp.kernels import network as K
cfg = json.loads(sys.argv[1])
rng = np.random.default_rng(0)
X = rng.standard_normal((40, 4)).astype(cfg["dtype"])
y = rng.integers(0, 3, 40)
if cfg["loss"] != "cross_entropy":
    y = (y[:, None] == np.arange(3)).astype(cfg["dtype"])
net = fb.Network([4, 6, 3], activation=cfg["activation"], output=cfg["output"], loss=cfg["loss"],
                 dtype=cfg["dtype"], seed=0)
net.fit(X, y, epochs=2, batch_size=16, optimizer=cfg["optimizer"], validation_data=(X[:8], y[:8]))
net.evaluate(X, y)
net.train_step(X[:16], y[:16], optimizer=cfg["optimizer"])
net.loss_and_gradients(X[:16], y[:16])
from fastbp.kernels import table
out = {name: [sum(getattr(K, name)._cache_hits.values()), sum(getattr(K, name)._cache_misses.values())]
       for name in sys.argv[2].split(",")}
out["kernels compiled"] = sorted(d.py_func.__name__ for d in set(table.KERNELS.values()) if d._cache_misses)
out["weights"] = [w.tolist() for wb in net.get_weights() for w in wb]
print(json.dumps(out))
"""


def _env(cache_dir):
    env = dict(os.environ, NUMBA_CACHE_DIR=str(cache_dir), FASTBP_COMPILE_HELPER="0")   # (the lock alone)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (ROOT, os.environ.get("PYTHONPATH")) if p)
    env.pop("NUMBA_DISABLE_JIT", None)
    return env


def _start(cache_dir, cfg):
    return subprocess.Popen([sys.executable, "-c", CHILD, json.dumps(cfg), ",".join(DRIVERS)], cwd=str(cache_dir),
                            env=_env(cache_dir), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _result(proc):
    out, err = proc.communicate(timeout=900)
    assert proc.returncode == 0, err[-3000:]
    return json.loads(out.strip().splitlines()[-1])


def test_two_processes_compile_once_and_agree(tmp_path):
    # both start on an empty cache at once: each driver is compiled by one of them and loaded
    # from the cache by the other, and the loaded code trains bit for bit as the fresh compile
    cfg = dict(activation="softplus", output="identity", loss="huber", optimizer="rmsprop", dtype="float32")
    a, b = _start(tmp_path, cfg), _start(tmp_path, cfg)
    ra, rb = _result(a), _result(b)
    for name in DRIVERS:
        hits = ra[name][0] + rb[name][0]
        misses = ra[name][1] + rb[name][1]
        assert (hits, misses) == (1, 1), (name, ra[name], rb[name])
    # and each of its kernels by one of them (the two lists hold no kernel twice)
    compiled = ra["kernels compiled"] + rb["kernels compiled"]
    assert sorted(compiled) == ["huber_b", "huber_f", "identity_out", "rmsprop_u", "softplus_b", "softplus_f"]
    assert ra["weights"] == rb["weights"]


def test_warmup_compiles_what_a_network_then_loads(tmp_path):
    argv = ["--activations", "elu", "--losses", "binary_cross_entropy", "--optimizers", "adamw", "--dtypes",
            "float64", "--quiet"]
    proc = subprocess.run([sys.executable, "-m", "fastbp.warmup", *argv], cwd=str(tmp_path), env=_env(tmp_path),
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    cfg = dict(activation="elu", output="sigmoid", loss="binary_cross_entropy", optimizer="adamw", dtype="float64")
    r = _result(_start(tmp_path, cfg))
    for name in DRIVERS:
        assert r[name] == [1, 0], (name, r[name])   # loaded, never compiled
    assert r["kernels compiled"] == []


def test_configurations_and_options(capsys):
    tasks = warmup.configurations(["relu", "tanh"], ["cross_entropy", "mse"], ["adam", "adamw"], ["float32", "float64"],
                                  norms=["none", "layer"], dropout=["no"])
    drivers = [t for t in tasks if t["kind"] == "drivers"]
    assert sorted((t["dtype"], t["part"]) for t in drivers) == sorted(
        (d, p) for d in ("float32", "float64") for p in warmup.DRIVER_PARTS)
    kernels = {(t["dtype"], k) for t in tasks if t["kind"] == "kernels" for k in t["kernels"]}
    from fastbp.kernels.activations import RELU, TANH
    from fastbp.kernels.losses import IDENTITY_MSE, SOFTMAX_CE
    from fastbp.kernels.norm import LAYER_NORM
    from fastbp.kernels.optim import ADAM
    want = ([(f, c) for c in (RELU, TANH) for f in ("act_f", "act_b")]
            + [(f, c) for c in (SOFTMAX_CE, IDENTITY_MSE) for f in ("loss_f", "loss_b", "out_f")]
            + [("norm_f", LAYER_NORM), ("norm_b", LAYER_NORM), ("opt_u", ADAM)])   # adamw is Adam's kernel
    assert kernels == {(d, k) for d in ("float32", "float64") for k in want}
    every = warmup.configurations(**warmup.PRESETS["all"])
    from fastbp.kernels.table import KERNELS
    assert {k for t in every if t["kind"] == "kernels" for k in t["kernels"]} == set(KERNELS)   # bf16 kernels too
    assert warmup.main(["--preset", "common", "--list"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines == ["drivers: fit, float32", "drivers: eval, float32", "drivers: step, float32",
                     "kernels: relu_f, relu_b, sigmoid_f, sigmoid_b, tanh_f, tanh_b, float32",
                     "kernels: softmax_xent_f, softmax_xent_b, softmax_out, mse_f, mse_b, identity_out, float32",
                     "kernels: sgd_u, adam_u, float32"]
    assert warmup.main(["--activations", "gelu", "--optimizers", "sgd", "--list"]) == 0
    assert capsys.readouterr().out.strip().splitlines() == [
        "drivers: fit, float32", "drivers: eval, float32", "drivers: step, float32",
        "kernels: gelu_f, gelu_b, float32", "kernels: softmax_xent_f, softmax_xent_b, softmax_out, float32",
        "kernels: sgd_u, float32"]
    for bad in (["--jobs", "0"], ["--activations", "nope"], ["--preset", "nope"]):
        with pytest.raises(SystemExit):
            warmup.main(bad + ["--list"])


def test_fastbp_warmup_is_the_cli_subcommand(capsys):
    from fastbp import cli
    assert cli.main(["warmup", "--list", "--preset", "common"]) == 0
    listed = capsys.readouterr().out
    assert "drivers: fit, float32" in listed and "tanh_f" in listed and "sgd_u" in listed
