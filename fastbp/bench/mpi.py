"""Data-parallel benchmark (not a test): ``python -m fastbp.bench.mpi``.

For the ``mnist`` and ``wide`` workloads (WORKLOADS.md; fewer samples than the standard
epoch) it measures training samples/s of

- ``fit 2t``: one process, ``Network.fit``, 2 threads, the workload's batch B;
- ``fit 1t``: the same with 1 thread;
- ``mpi 1x1t``: ``fastbp.distributed.fit`` in one rank (1 thread), batch B (its overhead);
- ``mpi 2x1t``: two ranks under ``mpiexec -n 2``, 1 thread each, local batch B/2 (the same
  global batch B, so the same training as ``fit``);

each a separate process, the modes interleaved over ``--rounds`` rounds (median reported),
plus the measured Allreduce time of each network's gradient buffer between the 2 local
ranks and the compute time of one step (1 thread, no communication). It then prints the
cost model of N machines: an Allreduce costs ``latency + 2 (N-1)/N x bytes / bandwidth``
(ring), for stated bandwidths and latencies, and the N at which communication takes half
the step, when the global batch stays B (strong scaling: compute per rank B/N rows) and
when each rank keeps B rows (weak scaling).
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import time

import numpy as np

from .workloads import WORKLOADS, make_data, make_network

SAMPLES = {"mnist": 8192, "wide": 2048}
# (name, bandwidth in bytes/s, latency in s): stated assumptions for the model, not measurements
NETWORKS = (("10 Gb/s Ethernet", 10e9 / 8, 50e-6), ("100 Gb/s InfiniBand", 100e9 / 8, 5e-6))


def _worker(args):
    import fastbp as fb
    from fastbp import distributed
    fb.set_num_threads(args.threads)
    spec = WORKLOADS[args.workload]
    X, y = make_data(args.workload)
    X, y = X[:args.samples], y[:args.samples]
    net, opt = make_network(spec)
    comm = distributed.world() if args.mode == "mpi" else None
    res = {}
    if args.mode == "fit":
        net.fit(X, y, epochs=1, batch_size=spec["batch"], optimizer=opt, verbose=0)   # warm-up: compile
        t0 = time.perf_counter()
        net.fit(X, y, epochs=2, initial_epoch=1, batch_size=spec["batch"], verbose=0)
        res["samples_per_s"] = X.shape[0] / (time.perf_counter() - t0)
    else:
        if comm is None:
            from mpi4py import MPI
            comm = MPI.COMM_WORLD
        R = comm.size
        B = spec["batch"] // R
        distributed.fit(net, X, y, epochs=1, batch_size=B, optimizer=opt, comm=comm)   # warm-up
        comm.Barrier()
        t0 = time.perf_counter()
        distributed.fit(net, X, y, epochs=2, initial_epoch=1, batch_size=B, comm=comm)
        comm.Barrier()
        res["samples_per_s"] = X.shape[0] / (time.perf_counter() - t0)
        if R > 1:   # the Allreduce of the gradient buffer alone
            from mpi4py import MPI
            buf = np.ones(net.n_params + 5, net.dtype)
            times = []
            for i in range(25):
                comm.Barrier()
                t = time.perf_counter()
                comm.Allreduce(MPI.IN_PLACE, buf, op=MPI.SUM)
                times.append(time.perf_counter() - t)
            res["allreduce_s"] = float(np.median(times[5:]))
            res["bytes"] = int(buf.nbytes)
        else:   # one step's compute, 1 thread, the workload's batch: the model's t_c
            from fastbp._training import SplitStep
            Xc, T, labels, use_labels, sw = net._check_xyw(X[:spec["batch"]], y[:spec["batch"]])
            g = np.empty_like(net.params)
            with SplitStep(net, opt, spec["batch"]) as step:
                times = []
                for i in range(12):
                    t = time.perf_counter()
                    step.local(g, Xc, T, labels, use_labels, sw)
                    step.apply(g, 1.0, Xc.shape[0])
                    times.append(time.perf_counter() - t)
            res["step_s"] = float(np.median(times[2:]))
        if comm.rank != 0:
            return
    res["n_params"] = net.n_params
    print("RESULT " + json.dumps(res), flush=True)


def _launch(cmd, env):
    p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
    for line in p.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[7:])
    raise RuntimeError(f"{' '.join(cmd)} failed:\n{p.stdout}\n{p.stderr}")


def _model(name, step_s, batch, nbytes):
    lines = [f"{name}: compute per step {step_s * 1e3:.1f} ms (batch {batch}, 1 thread), "
             f"gradient {nbytes / 1e6:.2f} MB"]
    for net_name, bw, lat in NETWORKS:
        def comm_s(N):
            return lat + 2 * (N - 1) / N * nbytes / bw
        # strong scaling: global batch stays `batch`, compute per rank step_s / N
        strong = next((N for N in range(2, 100_001) if comm_s(N) >= step_s / N), None)
        # weak scaling: each rank keeps `batch` rows, compute stays step_s; comm tends to lat + 2 bytes / bw
        weak = next((N for N in range(2, 100_001) if comm_s(N) >= step_s), None)
        lines.append(f"  {net_name} ({lat * 1e6:.0f} us latency): Allreduce at N=2 {comm_s(2) * 1e3:.2f} ms, "
                     f"N->inf {(lat + 2 * nbytes / bw) * 1e3:.2f} ms; communication half the step at "
                     f"N = {strong or '>1e5'} with the global batch fixed at {batch}, "
                     f"{'never' if weak is None else f'N = {weak}'} with {batch} rows per rank")
    return lines


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m fastbp.bench.mpi", description=__doc__.splitlines()[0])
    ap.add_argument("--workloads", default="mnist,wide")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--samples", type=int, default=None, help="rows per epoch (default: mnist 8192, wide 2048)")
    ap.add_argument("--worker", dest="workload", help=argparse.SUPPRESS)
    ap.add_argument("--mode", default="fit", help=argparse.SUPPRESS)
    ap.add_argument("--threads", type=int, default=1, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.workload:
        return _worker(args)
    mpiexec = shutil.which("mpiexec", path=os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""))
    if mpiexec is None:
        sys.exit("python -m fastbp.bench.mpi needs mpiexec: pip install 'fastbp[mpi]' mpich")
    me = [sys.executable, "-m", "fastbp.bench.mpi"]
    print(f"fastbp data-parallel benchmark; {os.cpu_count()} CPUs; medians of {args.rounds} interleaved rounds; "
          f"samples/s over one epoch after a warm-up epoch")
    for w in args.workloads.split(","):
        n = args.samples or SAMPLES[w]
        B = WORKLOADS[w]["batch"]
        modes = {
            "fit 2t": (me + ["--worker", w, "--mode", "fit", "--threads", "2"], 2),
            "fit 1t": (me + ["--worker", w, "--mode", "fit", "--threads", "1"], 1),
            "mpi 1x1t": ([mpiexec, "-n", "1"] + me + ["--worker", w, "--mode", "mpi"], 1),
            "mpi 2x1t": ([mpiexec, "-n", "2"] + me + ["--worker", w, "--mode", "mpi"], 1),
        }
        res = {m: [] for m in modes}
        for r in range(args.rounds):
            for m, (cmd, threads) in modes.items():
                env = dict(os.environ, NUMBA_NUM_THREADS=str(threads), OMP_NUM_THREADS=str(threads),
                           OPENBLAS_NUM_THREADS=str(threads))
                res[m].append(_launch(cmd + ["--samples", str(n)], env))
        med = {m: float(np.median([x["samples_per_s"] for x in v])) for m, v in res.items()}
        ar = float(np.median([x["allreduce_s"] for x in res["mpi 2x1t"]]))
        nbytes = res["mpi 2x1t"][0]["bytes"]
        step_s = float(np.median([x["step_s"] for x in res["mpi 1x1t"]]))
        print(f"\n{w}: {res['fit 2t'][0]['n_params']:,} parameters, {n} samples, global batch {B}")
        for m, v in med.items():
            print(f"  {m:9s} {v:10.0f} samples/s  ({v / med['fit 2t']:.2f}x fit 2t)")
        print(f"  Allreduce of {nbytes / 1e6:.2f} MB between 2 local ranks (pip mpich): {ar * 1e3:.2f} ms "
              f"({nbytes / ar / 1e9:.1f} GB/s)")
        print("  model: " + "\n  ".join(_model(w, step_s, B, nbytes)))


if __name__ == "__main__":
    main()
