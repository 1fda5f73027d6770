"""Start-up times: what a user waits for before the first trained batch, cold and warm.

``python -m fastbp.bench.startup [--rounds R] [--skip-warmup] [--json FILE]``

Every figure comes from a fresh child interpreter with its own ``NUMBA_CACHE_DIR`` in a
temporary folder (removed afterwards), and is wall time from just before the child is
started (so Python, NumPy, Numba and fastbp's imports are in it):

- ``cold first batch`` / ``cold fit+eval+predict``: the default small network (64-64-64-10,
  relu, softmax + cross-entropy, Adam, float32) with an empty cache: the child builds the
  network, fits one batch of 32 (first mark), then fits one epoch of 512 rows, evaluates and
  predicts (second mark).
- ``warm``: the same child on the cache the cold run left; ``warm over numpy`` subtracts the
  median start of ``python -c "import numpy"``.
- ``one change``: a network differing in one choice (activation, optimizer, dropout, norm,
  loss) run on a copy of the warm default cache: the time over the warm default run is the
  compile that choice costs.
- ``after warmup``: ``python -m fastbp.warmup --preset all`` (``--warmup-args``) fills an
  empty cache, then each configuration above (and one that changes everything) runs on it; a
  row the warmup did not cover shows its compile.

Rounds alternate so that a noisy neighbour spreads over all rows; the table gives the median.
"""

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

DEFAULT = dict(activation="relu", output="softmax", loss="cross_entropy", optimizer="adam",
               dropout=0.0, norm=None)
# one choice changed at a time (the "one change" rows), then everything at once
CHANGES = {
    "activation=tanh": dict(activation="tanh"),
    "optimizer=sgd": dict(optimizer="sgd"),
    "dropout=0.2": dict(dropout=0.2),
    "norm=batch": dict(norm="batch"),
    "loss=mse": dict(output="identity", loss="mse"),
}
EVERYTHING = {"elu+bce+adamw+dropout": dict(activation="elu", output="sigmoid", loss="binary_cross_entropy",
                                            optimizer="adamw", dropout=0.1)}

CHILD = r"""
import os, sys, time, json
T0 = float(os.environ["FASTBP_STARTUP_T0"])
cfg = json.loads(sys.argv[1])
import numpy as np
import fastbp as fb
rng = np.random.default_rng(0)
X = rng.standard_normal((512, 64), dtype=np.float32)
y = rng.integers(0, 10, 512)
if cfg["loss"] != "cross_entropy":
    y = (y[:, None] == np.arange(10)).astype(np.float32)
net = fb.Network([64, 64, 64, 10], activation=cfg["activation"], output=cfg["output"], loss=cfg["loss"],
                 dtype=np.float32, seed=0, dropout=cfg["dropout"], norm=cfg["norm"])
net.fit(X[:32], y[:32], epochs=1, batch_size=32, optimizer=cfg["optimizer"], shuffle=False)
t1 = time.time() - T0
net.fit(X, y, epochs=1, batch_size=32, optimizer=cfg["optimizer"])
net.evaluate(X, y)
net.predict(X)
t2 = time.time() - T0
print(json.dumps({"first_batch": t1, "fit_eval_predict": t2}), flush=True)
from fastbp import _compile
_compile.wait_for_helpers()   # (a cold child's helper goes on compiling: not into the next figure)
"""
TIMEOUT_S = 900


def _env(cache_dir):
    import fastbp
    root = os.path.dirname(os.path.dirname(os.path.abspath(fastbp.__file__)))
    env = dict(os.environ, NUMBA_CACHE_DIR=cache_dir)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p)
    env.pop("NUMBA_DISABLE_JIT", None)
    return env


def run_config(cache_dir, cfg):
    """One child on ``cache_dir`` with configuration ``cfg``: its two marks, in seconds."""
    env = _env(cache_dir)
    env["FASTBP_STARTUP_T0"] = repr(time.time())
    proc = subprocess.run([sys.executable, "-c", CHILD, json.dumps(cfg)], cwd=cache_dir, env=env,
                          capture_output=True, text=True, timeout=TIMEOUT_S)
    if proc.returncode != 0:
        raise RuntimeError(f"start-up child failed ({proc.returncode}) for {cfg}:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def numpy_start(cache_dir):
    t0 = time.time()
    subprocess.run([sys.executable, "-c", "import numpy"], cwd=cache_dir, env=_env(cache_dir), check=True,
                   timeout=TIMEOUT_S)
    return time.time() - t0


def run_warmup(cache_dir, argv=()):
    t0 = time.time()
    proc = subprocess.run([sys.executable, "-m", "fastbp.warmup", *argv], cwd=cache_dir, env=_env(cache_dir),
                          capture_output=True, text=True, timeout=TIMEOUT_S)
    if proc.returncode != 0:
        raise RuntimeError(f"warmup failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return time.time() - t0


def one_round(root, with_warmup, warmup_args=()):
    """Every row once; returns {row: seconds}."""
    out = {}
    cold = tempfile.mkdtemp(prefix="cold-", dir=root)
    r = run_config(cold, DEFAULT)
    out["cold first batch"], out["cold fit+eval+predict"] = r["first_batch"], r["fit_eval_predict"]
    np_s = numpy_start(cold)
    r = run_config(cold, DEFAULT)
    out["python -c 'import numpy'"] = np_s
    out["warm first batch"], out["warm fit+eval+predict"] = r["first_batch"], r["fit_eval_predict"]
    out["warm first batch over numpy"] = r["first_batch"] - np_s
    warm_fep = r["fit_eval_predict"]
    for name, change in CHANGES.items():
        d = tempfile.mkdtemp(prefix="one-", dir=root)
        shutil.rmtree(d)
        shutil.copytree(cold, d)
        r = run_config(d, dict(DEFAULT, **change))
        out[f"one change: {name} (over warm)"] = r["fit_eval_predict"] - warm_fep
        shutil.rmtree(d, ignore_errors=True)
    if with_warmup:
        d = tempfile.mkdtemp(prefix="warmup-", dir=root)
        out["python -m fastbp.warmup (empty cache)"] = run_warmup(d, warmup_args)
        for name, change in {"default": {}, **CHANGES, **EVERYTHING}.items():
            r = run_config(d, dict(DEFAULT, **change))
            out[f"after warmup: {name} (over warm)"] = r["fit_eval_predict"] - warm_fep
        shutil.rmtree(d, ignore_errors=True)
    shutil.rmtree(cold, ignore_errors=True)
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m fastbp.bench.startup", description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=1, help="rounds of every row (median reported)")
    ap.add_argument("--skip-warmup", action="store_true", help="leave out the rows after fastbp.warmup")
    ap.add_argument("--json", help="also write the samples to this file")
    ap.add_argument("--warmup-args", default="--preset all",
                    help="arguments of the warmup run (default: %(default)s, every kernel for float32, which "
                         "covers every row)")
    args = ap.parse_args(argv)
    with_warmup = not args.skip_warmup
    if with_warmup:
        try:
            import fastbp.warmup  # noqa: F401
        except ImportError:
            with_warmup = False
    root = tempfile.mkdtemp(prefix="fastbp-startup-")
    samples = {}
    try:
        for i in range(args.rounds):
            for k, v in one_round(root, with_warmup, args.warmup_args.split()).items():
                samples.setdefault(k, []).append(v)
            print(f"round {i + 1}/{args.rounds} done", file=sys.stderr, flush=True)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    width = max(len(k) for k in samples)
    print(f"{'start-up (s, median of ' + str(args.rounds) + ')':<{width}}  median    min    max")
    for k, v in samples.items():
        print(f"{k:<{width}}  {statistics.median(v):6.2f} {min(v):6.2f} {max(v):6.2f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(samples, f, indent=1)
    return samples


if __name__ == "__main__":
    main()
