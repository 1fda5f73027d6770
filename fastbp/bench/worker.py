"""The worker side: one peer on one workload in its own process (``python -m fastbp.bench
--worker PEER ...``, one JSON line on stdout), and the driver's side of spawning it."""

import json
import os
import subprocess
import sys
import time
import warnings

import numpy as np

from .peers import RUNNERS
from .timing import PROBE_PAUSE_S, machine_probe
from .workloads import WORKLOADS, initial_weights, make_data

THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
WORKER_TIMEOUT_S = 1800


def write_data(path, name, quick):
    """The workload's data and initial weights in one ``.npz``, made once for every worker of a run."""
    X, y = make_data(name, quick)
    arrays = {"X": X, "y": y, "workload": np.array(name)}
    for l, (W, b) in enumerate(initial_weights(name)):
        arrays[f"W{l}"], arrays[f"b{l}"] = W, b
    np.savez(path, **arrays)


def read_data(path):
    """(X, y, [(W, b) per layer]) as ``write_data`` wrote them."""
    with np.load(path, allow_pickle=False) as f:
        X, y = f["X"], f["y"]
        weights, l = [], 0
        while f"W{l}" in f.files:
            weights.append((f[f"W{l}"], f[f"b{l}"]))
            l += 1
    return X, y, weights


def cores_for(threads):
    """The first ``threads`` cores this process may run on."""
    return sorted(os.sched_getaffinity(0))[:threads]


def worker(args):
    """Run one peer on one workload and print one JSON line."""
    os.sched_setaffinity(0, cores_for(args.threads))  # already inherited from the driver; made sure
    warnings.simplefilter("ignore")
    spec = WORKLOADS[args.workload]
    t0 = time.perf_counter()
    X, y, weights = read_data(args.data)
    out = {"peer": args.worker, "workload": args.workload, "threads": args.threads,
           "affinity": sorted(os.sched_getaffinity(0)), "n_samples": int(X.shape[0]),
           "batch": spec["batch"], "epochs": args.epochs, "shuffle": False}
    try:
        runner = RUNNERS[args.worker]
        before = machine_probe(args.threads, args.quick)
        if args.worker == "sgemm":
            res = runner(spec, X, y, weights, args.threads, args.epochs, quick=args.quick)
        else:
            res = runner(spec, X, y, weights, args.threads, args.epochs)
        out.update(res)
        time.sleep(0.0 if args.quick else PROBE_PAUSE_S)   # the peer's pools stop spinning first
        out["probe_gflops"] = [before, machine_probe(args.threads, args.quick)]
        out["ok"] = True
    except Exception as e:  # reported by the driver as an ERROR row
        out.update(ok=False, error=f"{type(e).__name__}: {e}")
    out["worker_s"] = time.perf_counter() - t0
    print(json.dumps(out), flush=True)
    return 0


def worker_env(peer, threads):
    env = dict(os.environ)
    for v in THREAD_VARS:
        env.pop(v, None)
    if not peer.startswith("fastbp"):  # fastbp gets no thread variables: fb.set_num_threads is its only knob
        env.update({v: str(threads) for v in THREAD_VARS})
    if peer == "jax":
        env["JAX_PLATFORMS"] = "cpu"
        env["TF_CPP_MIN_LOG_LEVEL"] = "2"
        if threads == 1:
            env["XLA_FLAGS"] = "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
    return env


def run_worker(peer, workload, threads, data, epochs, quick):
    cmd = [sys.executable, "-m", "fastbp.bench", "--worker", peer, "--workload", workload,
           "--threads", str(threads), "--data", data, "--epochs", str(epochs)] + (["--quick"] if quick else [])
    # the child inherits the spawning thread's CPU mask, so its thread pools start pinned
    saved = os.sched_getaffinity(0)
    os.sched_setaffinity(0, cores_for(threads))
    try:
        proc = subprocess.Popen(cmd, env=worker_env(peer, threads), stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
    finally:
        os.sched_setaffinity(0, saved)
    try:
        stdout, stderr = proc.communicate(timeout=WORKER_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        return {"peer": peer, "workload": workload, "ok": False, "error": f"timed out after {WORKER_TIMEOUT_S} s"}
    for line in reversed(stdout.splitlines()):
        if line.startswith("{"):
            try:
                return json.loads(line)
            except json.JSONDecodeError:
                continue
    tail = (stderr or stdout).strip().splitlines()[-3:]
    return {"peer": peer, "workload": workload, "ok": False,
            "error": f"worker exited with {proc.returncode}: " + " | ".join(tail)}
