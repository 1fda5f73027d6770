"""The sweep benchmark: the same 8-run sweep of ``small`` networks with ``--jobs 1``, ``--jobs 2``
and a 2-worker Dask LocalCluster (when dask.distributed is installed), interleaved round by
round, each a fresh ``fastbp sweep`` process into a fresh folder (so each pays its start-up:
imports, worker processes, loading the compiled kernels from the Numba cache). Prints runs per
minute for each and the median ratios to ``--jobs 1``.

    python -m fastbp.bench.sweep [--rounds 3] [--epochs 60] [--samples 20000]
"""

import argparse
import importlib.util
import os
import statistics
import subprocess
import sys
import tempfile
import time

CONFIG = """
[data]
kind = "teacher"
workload = "small"
n_samples = {samples}

[model]
hidden = [64, 64]
activation = "relu"

[optimizer]
name = "adam"

[training]
epochs = {epochs}
batch_size = 32
validation_split = 0.2
verbose = 0
threads = 1

[output]
plot = false
save_model = false

[sweep]
method = "grid"
save_runs = false

[sweep.params]
"optimizer.lr" = [3e-4, 1e-3, 3e-3, 1e-2]
"training.seed" = [0, 1]
"""


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m fastbp.bench.sweep", description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=60)
    ap.add_argument("--samples", type=int, default=20_000)
    args = ap.parse_args(argv)
    ways = {"--jobs 1": ["--jobs", "1"], "--jobs 2": ["--jobs", "2"]}
    if importlib.util.find_spec("distributed") is not None:
        ways["dask local x2"] = ["--dask", "local", "--jobs", "2"]
    else:
        print("dask.distributed is not installed: no Dask figures (pip install 'fastbp[dask]')")
    times = {w: [] for w in ways}
    with tempfile.TemporaryDirectory() as tmp:
        cfg = os.path.join(tmp, "sweep.toml")
        with open(cfg, "w") as f:
            f.write(CONFIG.format(epochs=args.epochs, samples=args.samples))
        print(f"8-run sweep of small networks ({args.samples} samples, {args.epochs} epochs, 1 thread per run) "
              f"on {os.cpu_count()} cores; {args.rounds} interleaved rounds")
        for r in range(args.rounds):
            for way, extra in ways.items():
                out = os.path.join(tmp, f"out-{r}-{way.replace(' ', '_')}")
                t0 = time.perf_counter()
                proc = subprocess.run([sys.executable, "-m", "fastbp", "sweep", cfg, "--out", out, *extra],
                                      capture_output=True, text=True)
                wall = time.perf_counter() - t0
                if proc.returncode != 0:
                    print(f"{way}: failed (exit {proc.returncode}): {proc.stderr.strip()[-500:]}")
                    return 1
                times[way].append(wall)
                print(f"  round {r + 1} {way:<14} {wall:7.2f} s  {8 * 60 / wall:6.1f} runs/min", flush=True)
    base = statistics.median(times["--jobs 1"])
    print(f"\n{'way':<14} {'median s':>9} {'runs/min':>9} {'vs --jobs 1':>12}")
    for way, ts in times.items():
        med = statistics.median(ts)
        ratios = statistics.median(b / t for b, t in zip(times["--jobs 1"], ts))
        print(f"{way:<14} {med:9.2f} {8 * 60 / med:9.1f} {ratios:11.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
