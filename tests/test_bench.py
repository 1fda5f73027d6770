"""The comparison harness (fastbp.bench) end to end in --quick mode, with the peers that are
always there: fastbp, plain NumPy and the sgemm pseudo-peer."""

import json
import subprocess
import sys

import numpy as np

from fastbp import bench


def test_quick_run_writes_consistent_json(tmp_path):
    out = tmp_path / "bench.json"
    cmd = [sys.executable, "-m", "fastbp.bench", "--quick", "--rounds", "1", "--threads", "1",
           "--peers", "fastbp,numpy,sgemm", "--workload", "small", "--workload", "regress", "--json", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "no shuffling" in proc.stdout and "MISMATCH" not in proc.stdout

    report = json.loads(out.read_text())
    assert report["meta"]["quick"] and report["meta"]["threads"] == 1
    assert report["loss_check"]["ok"] and not report["errors"]
    runs = {(r["workload"], r["peer"]): r for r in report["results"]}
    assert set(runs) == {(w, p) for w in ("small", "regress") for p in ("fastbp", "numpy", "sgemm")}
    for (w, p), r in runs.items():
        assert r["ok"] and r["round"] == 1 and r["threads"] == 1 and len(r["affinity"]) == 1
        assert len(r["probe_gflops"]) == 2 and min(r["probe_gflops"]) > 0
        if p == "sgemm":
            assert r["gemm_layer_gflops"] > 0 and r["gemm_square_gflops"] > 0
            continue
        assert r["n_samples"] == bench.QUICK_SAMPLES[w] and not r["shuffle"]
        assert r["samples_per_s"] > 0 and r["first_epoch_s"] > 0
        assert np.isfinite(r["loss_first"]) and np.isfinite(r["loss_last"])
        assert r["loss_last"] < r["loss_first"]  # it learns
    assert runs["small", "fastbp"]["predict_samples_per_s"] > 0
    mc = report["machine_check"]
    assert mc["probe_median_gflops"] > 0 and isinstance(mc["slow"], list) and "machine check: GEMM probe" in proc.stdout
    for s in report["summary"]:
        assert s["loss_reference"] == "fastbp"
        assert s["peers"]["numpy"]["loss_ok"] and s["peers"]["numpy"]["ratio"] > 0
        assert s["peers"]["fastbp"]["ratio"] == 1.0


def test_slow_rounds_names_the_runs_whose_probe_fell():
    res = [{"workload": "mnist", "round": r, "peer": p, "probe_gflops": g}
           for r, p, g in [(1, "fastbp", [180.0, 178.0]), (1, "torch", [182.0, 120.0]), (2, "fastbp", [179.0, 181.0]),
                           (2, "torch", [177.0, 183.0])]]
    res.append({"workload": "mnist", "round": 2, "peer": "jax", "ok": False, "error": "x"})   # no probe: skipped
    ref, slow = bench.slow_rounds(res)
    assert ref == 179.5 and slow == [("mnist", 1, "torch", 182.0, 120.0)]
    assert bench.slow_rounds([{"workload": "w", "round": 1, "peer": "p"}]) == (None, [])


def test_data_and_weights_are_fixed():
    X1, y1 = bench.make_data("regress", quick=True)
    X2, y2 = bench.make_data("regress", quick=True)
    assert X1.dtype == np.float32 and y1.dtype == np.float32 and y1.shape == (X1.shape[0], 1)
    assert np.array_equal(X1, X2) and np.array_equal(y1, y2)
    _, labels = bench.make_data("small", quick=True)
    assert labels.dtype == np.int64 and len(np.unique(labels)) > 1
    w1, w2 = bench.initial_weights("small"), bench.initial_weights("small")
    assert all(np.array_equal(a, b) for (a, _), (b, _) in zip(w1, w2))
    assert [W.shape for W, _ in w1] == [(64, 64), (64, 64), (64, 10)]


def test_worker_environment():
    env = bench.worker_env("fastbp", 2)
    assert not any(v in env for v in bench.THREAD_VARS)  # fastbp's only knob is set_num_threads
    env = bench.worker_env("torch", 2)
    assert all(env[v] == "2" for v in bench.THREAD_VARS)
    assert "xla_cpu_multi_thread_eigen=false" in bench.worker_env("jax", 1)["XLA_FLAGS"]
