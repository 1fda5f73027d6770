"""Side-by-side training benchmark of fastbp and its peers on the standard workloads.

    python -m fastbp.bench                                  # all four workloads, 3 rounds, 2 threads
    python -m fastbp.bench --workload small,regress --rounds 1 --json out.json
    python -m fastbp.bench --peers fastbp,torch --threads 1 --quick

The workloads are those of WORKLOADS.md. The driver makes the data (float32 X ~ N(0, 1),
targets from a fixed random "teacher" network) and the initial weights once, writes them to a
temporary ``.npz``, and runs every peer in its own worker process
(``python -m fastbp.bench --worker PEER ...``, one JSON line on stdout), interleaved: round 1
runs fastbp, torch, torch-fused, jax, sklearn, numpy, sgemm; round 2 the same, and so on. Every
peer starts from the same weights and trains on the same batches in the same order (no
shuffling), so the first-epoch losses must agree; the driver checks that. Ratios are the median
over rounds of the per-round ratio fastbp/peer (> 1: fastbp is faster), because the machines are
noisy and only side-by-side numbers compare.

Peers: ``fastbp``; ``torch`` (eager ``nn.Linear`` stack, default optimizer) and ``torch-fused``
(``fused=True``); ``jax`` (jit-compiled step, optimizer in ``jax.numpy``); ``sklearn``
(``MLPClassifier``/``MLPRegressor`` on float32); ``numpy`` (backprop by hand); and the
pseudo-peer ``sgemm`` (NumPy's best float32 matmul rate on the largest layer's shapes and on
2048^3, to put GFLOP/s in proportion). A peer that is not installed is skipped with a note.
Every worker also measures the machine itself, a short float32 GEMM before and after its run
(``machine_probe``); the driver names the runs whose probe fell well below the run's median
(or below the 1-thread rate it measured at start, an absolute floor), when the machine, not the
peer, was slow, and says STARVED when most probes did.
The exit status is 1 when a loss check fails or a worker fails, else 0.

The package, one job per module: ``workloads`` (the WORKLOADS table, data, networks, initial
weights), ``timing`` (timed epochs, GEMM rates, the machine probe), ``peers`` (one runner per
library), ``worker`` (one peer in its own process, and spawning it), ``report`` (summaries,
table, chart), ``driver`` (the interleaved rounds, ``main``).
"""

from .workloads import BETAS, EPS, QUICK_SAMPLES, WORKLOADS, gflops, initial_weights, make_data, make_network, n_weights
from .timing import PROBE_N, PROBE_N_QUICK, PROBE_SLOW, gemm_rate, machine_probe, slow_rounds, starved, time_training
from .peers import PEER_MODULES, PEERS, RUNNERS, available
from .worker import THREAD_VARS, WORKER_TIMEOUT_S, read_data, run_worker, worker_env, write_data
from .report import LOSS_RTOL, machine_info, print_table, summarise
from .driver import driver, main

__all__ = ["WORKLOADS", "QUICK_SAMPLES", "BETAS", "EPS", "n_weights", "gflops", "make_data", "make_network",
           "initial_weights", "PROBE_N", "PROBE_N_QUICK", "PROBE_SLOW", "gemm_rate", "machine_probe", "slow_rounds", "starved",
           "time_training", "PEERS", "PEER_MODULES", "RUNNERS", "available", "THREAD_VARS", "WORKER_TIMEOUT_S",
           "read_data", "write_data", "run_worker", "worker_env", "LOSS_RTOL", "machine_info", "print_table",
           "summarise", "driver", "main"]
