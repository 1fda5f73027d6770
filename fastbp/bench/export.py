"""Inference speed: fastbp ``predict_proba`` against ONNX Runtime and torch on the exported model.

    python -m fastbp.bench.export [--rounds 3] [--workloads small,regress,mnist,wide]
                                  [--batches 1,32,4096] [--threads 2] [--min-time 0.3]

The networks are the four standard workloads' (WORKLOADS.md, float32, fastbp's initial
weights, seed 0); the same weights go to ONNX Runtime through ``fastbp.export.to_onnx`` (1 and
2 intra-op threads) and to torch through ``fastbp.export.to_torch`` (``torch.inference_mode``,
``torch.set_num_threads(threads)``). fastbp runs with ``fb.set_num_threads(threads)``.

Every peer runs in its own worker process (``--worker PEER --workload NAME``), interleaved:
round 1 runs fastbp, ort-1, ort-2, torch on a workload, round 2 the same, and so on, so that one
runtime's thread pool never spins while another computes. A worker times each batch size as
the median per-call time over calls filling ``--min-time`` seconds (at least 3 calls, after 2
warm-up calls), on a fixed random batch, and returns its outputs on a fixed probe batch; the
driver checks that every peer's outputs agree with fastbp's (relative 1e-4). Ratios are the
median over rounds of fastbp / peer (> 1: fastbp is faster).
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

import numpy as np

PEERS = ("fastbp", "ort-1", "ort-2", "torch")
BATCHES = (1, 32, 4096)
PROBE_ROWS = 64
AGREE_RTOL = 1e-4


def _workloads():
    from .workloads import WORKLOADS
    return WORKLOADS


def _network(name):
    import fastbp as fb
    spec = _workloads()[name]
    return fb.Network(list(spec["layers"]), activation=spec["activation"], output=spec["output"],
                      loss=spec["loss"], dtype=np.float32, seed=0)


def _time(fn, x, min_time):
    for _ in range(2):
        fn(x)
    times = []
    start = time.perf_counter()
    while len(times) < 3 or time.perf_counter() - start < min_time:
        t0 = time.perf_counter()
        fn(x)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _predictor(peer, net, threads):
    if peer == "fastbp":
        import fastbp as fb
        fb.set_num_threads(threads)
        return net.predict_proba
    if peer.startswith("ort-"):
        import onnxruntime as ort
        from .export import to_onnx
        so = ort.SessionOptions()
        so.intra_op_num_threads = int(peer.split("-")[1])
        so.inter_op_num_threads = 1
        sess = ort.InferenceSession(to_onnx(net).SerializeToString(), so, providers=["CPUExecutionProvider"])
        return lambda x: sess.run(None, {"X": x})[0]
    if peer == "torch":
        import torch
        from .export import to_torch
        torch.set_num_threads(threads)
        seq = to_torch(net)

        def run(x):
            with torch.inference_mode():
                return seq(torch.from_numpy(x)).numpy()
        return run
    raise ValueError(f"unknown peer {peer!r}")


def worker(peer, name, batches, threads, min_time):
    net = _network(name)
    predict = _predictor(peer, net, threads)
    rng = np.random.default_rng(99)
    probe = rng.standard_normal((PROBE_ROWS, net.n_inputs)).astype(np.float32)
    out = {"peer": peer, "workload": name, "probe": np.asarray(predict(probe), np.float64).tolist(), "rate": {}}
    for b in batches:
        x = rng.standard_normal((b, net.n_inputs)).astype(np.float32)
        out["rate"][str(b)] = b / _time(predict, x, min_time)
    return out


def _run_worker(peer, name, args):
    cmd = [sys.executable, "-m", "fastbp.bench.export", "--worker", peer, "--workload", name,
           "--batches", ",".join(map(str, args.batches)), "--threads", str(args.threads),
           "--min-time", str(args.min_time)]
    env = dict(os.environ)
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        env[var] = str(args.threads)
    res = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=1800)
    if res.returncode != 0:
        raise RuntimeError(f"worker {peer} {name} failed:\n{res.stderr[-3000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def _available(peer):
    mod = {"fastbp": "numpy", "ort-1": "onnxruntime", "ort-2": "onnxruntime", "torch": "torch"}[peer]
    try:
        __import__(mod)
        return peer == "fastbp" or mod != "onnxruntime" or __import__("onnx") is not None
    except ImportError:
        return False


def _fmt(x):
    return f"{x / 1e6:.2f}M" if x >= 1e6 else f"{x / 1e3:.1f}k" if x >= 1e3 else f"{x:.0f}"


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m fastbp.bench.export", description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--workloads", default="small,regress,mnist,wide")
    p.add_argument("--batches", default=",".join(map(str, BATCHES)))
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--min-time", type=float, default=0.3)
    p.add_argument("--worker")
    p.add_argument("--workload")
    args = p.parse_args(argv)
    args.batches = [int(b) for b in args.batches.split(",")]
    if args.worker:
        print(json.dumps(worker(args.worker, args.workload, args.batches, args.threads, args.min_time)))
        return 0
    names = args.workloads.split(",")
    unknown = set(names) - set(_workloads())
    if unknown:
        p.error(f"unknown workloads {sorted(unknown)}; choose from {sorted(_workloads())}")
    peers = [q for q in PEERS if _available(q)]
    missing = sorted(set(PEERS) - set(peers))
    import platform
    print(f"fastbp inference benchmark: float32, {args.threads} threads (fastbp, torch), {args.rounds} rounds, "
          f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs"
          + (f"; not installed: {', '.join(missing)}" if missing else ""))
    results = {}   # (workload, peer) -> list of per-round {batch: rate}
    for name in names:
        for r in range(args.rounds):
            for peer in peers:
                res = _run_worker(peer, name, args)
                results.setdefault((name, peer), []).append(res)
        ref = np.array(results[(name, "fastbp")][0]["probe"])
        for peer in peers:
            got = np.array(results[(name, peer)][0]["probe"])
            err = np.abs(got - ref).max() / np.abs(ref).max()
            if err > AGREE_RTOL:
                raise RuntimeError(f"{name}: {peer}'s outputs differ from fastbp's by {err:.2g} (relative)")
    cols = [q for q in peers if q != "fastbp"]
    print("\nsamples/s (median over rounds); \"vs PEER\": fastbp / peer, the median of per-round ratios "
          "(> 1: fastbp faster)")
    print(f"{'workload':<9}{'batch':>6}" + "".join(f"{q:>12}" for q in peers) + "".join(f"{'vs ' + q:>12}" for q in cols))
    for name in names:
        for b in args.batches:
            key = str(b)
            rates = {q: [res["rate"][key] for res in results[(name, q)]] for q in peers}
            row = f"{name:<9}{b:>6}" + "".join(f"{_fmt(statistics.median(rates[q])):>12}" for q in peers)
            for q in cols:
                ratio = statistics.median(f / o for f, o in zip(rates["fastbp"], rates[q]))
                row += f"{ratio:>11.2f}x"
            print(row)
    return 0


if __name__ == "__main__":
    sys.exit(main())
