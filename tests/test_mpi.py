"""Data-parallel training (fastbp.distributed) under ``mpiexec -n 2``: each test launches
tests/mpi_worker.py (or the CLI) as a 2-rank MPI job with a timeout and checks what the ranks
wrote against one process. Skipped when mpi4py or an ``mpiexec`` is not installed
(``pip install 'fastbp[mpi]' mpich``)."""

import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

import fastbp as fb

pytest.importorskip("mpi4py", reason="needs mpi4py (pip install 'fastbp[mpi]' mpich)")
MPIEXEC = shutil.which("mpiexec", path=os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""))
if MPIEXEC is None:
    pytest.skip("no mpiexec (pip install mpich, or a system MPI)", allow_module_level=True)

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from mpi_worker import data, net_for  # noqa: E402

TIMEOUT = 300   # seconds: a cold Numba compile in each rank, far above a warm run's few seconds


def mpirun(args, cwd=None, timeout=TIMEOUT):
    """``mpiexec -n 2 python ARGS`` (1 thread per rank), killed after ``timeout`` (a hang fails)."""
    env = dict(os.environ, NUMBA_NUM_THREADS="1", OMP_NUM_THREADS="1",
               PYTHONPATH=os.pathsep.join([os.path.dirname(HERE), os.environ.get("PYTHONPATH", "")]))
    return subprocess.run([MPIEXEC, "-n", "2", sys.executable, *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout)


def run_worker(scenario, tmp_path, ok=True):
    p = mpirun([os.path.join(HERE, "mpi_worker.py"), scenario, str(tmp_path)])
    if ok:
        assert p.returncode == 0, p.stdout + p.stderr
        return [np.load(tmp_path / f"rank{r}.npz") for r in (0, 1)], p
    return None, p


def block_order(n_per_rank, b=32):
    # the rows of 1 process x batch 2b that 2 ranks (blocks of n_per_rank rows) x batch b train on
    return np.concatenate([np.r_[np.arange(b * i, b * i + b), n_per_rank + np.arange(b * i, b * i + b)]
                           for i in range(n_per_rank // b)])


def test_two_ranks_equal_one_process_with_twice_the_batch(tmp_path):
    (r0, r1), _ = run_worker("equal", tmp_path)
    for dtype, tol in (("float64", 1e-12), ("float32", 20 * np.finfo(np.float32).eps)):
        X, y = data(dtype)
        order = block_order(640)
        for name in ("sgd", "adam"):
            for l2 in (0.0, 1e-2):
                opt = fb.SGD(lr=0.1, momentum=0.9) if name == "sgd" else fb.Adam(lr=0.01)
                net = net_for(dtype)
                net._l2 = l2     # scikit-learn's L2 (the estimators' alpha)
                h = net.fit(X[order], y[order], epochs=1, batch_size=64, optimizer=opt, shuffle=False, verbose=0)
                key = f"{dtype}_{name}_{l2}"
                assert np.array_equal(r0[key], r1[key]), key           # bit-identical across ranks
                assert np.abs(net.params - net_for(dtype).params).max() > 0.05   # it trained
                rel = np.abs(r0[key] - net.params).max() / np.abs(net.params).max()
                assert rel <= tol, (key, rel)
                assert abs(r0[key + "_loss"][0] - h.history["loss"][0]) <= tol * 10, key


def test_uneven_weighted_shards_equal_one_process_steps(tmp_path):
    # rank 0 has 520 rows, rank 1 480: global steps of 64 rows, then 32 (rank 0 alone), then 8
    (r0, r1), _ = run_worker("uneven", tmp_path)
    X, y = data("float64", n=1000)
    w = np.linspace(0.5, 2.0, 1000)
    net = net_for("float64")
    opt = fb.Adam(lr=0.01)
    losses, rows = [], []
    for i in range(17):
        idx = np.r_[np.arange(32 * i, min(520, 32 * i + 32)), 520 + np.arange(32 * i, min(480, 32 * i + 32))]
        losses.append(net.train_step(X[idx], y[idx], optimizer=opt, sample_weight=w[idx]))
        rows.append(idx.size)
    assert rows[-3:] == [64, 32, 8]
    assert np.array_equal(r0["params"], r1["params"])
    assert np.abs(r0["params"] - net.params).max() / np.abs(net.params).max() <= 1e-12
    assert abs(r0["loss"][0] - np.dot(losses, rows) / 1000) <= 1e-12


def test_shuffled_clipped_training_keeps_ranks_identical(tmp_path):
    (r0, r1), _ = run_worker("shuffle", tmp_path)
    assert np.array_equal(r0["params"], r1["params"])
    assert np.array_equal(r0["loss"], r1["loss"])
    assert r0["loss"][-1] < r0["loss"][0]


def test_batch_norm_uses_per_rank_statistics(tmp_path):
    # each rank normalises with its own 32 rows (torch DDP without SyncBatchNorm): the step is the
    # mean of the two half-batches' gradients, not the gradient of one 64-row batch; the running
    # statistics kept are rank 0's
    (r0, r1), _ = run_worker("batchnorm", tmp_path)
    X, y = data("float64", n=640)
    net = net_for("float64", norm="batch")
    lr = 0.1
    for i in range(10):
        a, b = np.arange(32 * i, 32 * i + 32), 320 + np.arange(32 * i, 32 * i + 32)
        ns = net.norm_state.copy()
        net.loss_and_gradients(X[b], y[b])
        gb = net.grads.copy()
        net.norm_state[...] = ns          # rank 1's statistics are not kept
        net.loss_and_gradients(X[a], y[a])
        net.params -= lr * 0.5 * (net.grads + gb)
    assert np.array_equal(r0["params"], r1["params"]) and np.array_equal(r0["norm_state"], r1["norm_state"])
    assert np.abs(r0["params"] - net.params).max() <= 1e-12
    assert np.abs(r0["norm_state"] - net.norm_state).max() <= 1e-12
    one = net_for("float64", norm="batch")   # one process, 64-row batches: a different result
    order = block_order(320)
    one.fit(X[order], y[order], epochs=1, batch_size=64, optimizer=fb.SGD(lr=lr), shuffle=False, verbose=0)
    assert np.abs(one.params - r0["params"]).max() > 1e-6


def test_rank0_checkpoint_loads_and_resumes(tmp_path):
    (r0, r1), _ = run_worker("checkpoint", tmp_path)
    assert np.array_equal(r0["resumed"], r1["resumed"])
    assert np.array_equal(r0["val_loss"], r1["val_loss"]) and r0["val_loss"].shape == (2,)
    ck = fb.Network.load(tmp_path / "ck.npz")
    assert ck.optimizer.step_count == 2 * 10      # 640 rows / (2 x 32) = 10 steps an epoch
    assert not np.array_equal(ck.params, r0["resumed"])   # the resumed fit trained on


def test_divergence_on_one_rank_raises_on_both(tmp_path):
    (r0, r1), _ = run_worker("diverge", tmp_path)
    assert "became non-finite" in str(r0["error"])
    assert str(r0["error"]) == str(r1["error"])
    assert "batch 4" in str(r0["error"]) and r0["steps"] == r1["steps"] == 3


def test_a_rank_failing_alone_ends_the_job(tmp_path):
    _, p = run_worker("die", tmp_path, ok=False)      # a hang would raise TimeoutExpired
    assert p.returncode != 0
    assert "boom" in p.stderr + p.stdout
    assert not (tmp_path / "rank0.npz").exists()


def test_cli_train_under_mpiexec(tmp_path):
    (tmp_path / "c.toml").write_text(
        '[data]\nkind = "spirals"\nn_samples = 200\ntest_fraction = 0.25\n'
        '[model]\nhidden = [8]\n'
        '[training]\nepochs = 2\nbatch_size = 25\nverbose = 0\n'
        '[output]\nplot = false\n')
    p = mpirun(["-m", "fastbp", "train", "c.toml", "--out", "out"], cwd=tmp_path)
    assert p.returncode == 0, p.stdout + p.stderr
    assert p.stdout.count("trained 2 epochs") == 1           # rank 0 prints, rank 1 is quiet
    net = fb.Network.load(tmp_path / "out" / "model.npz")
    assert net.optimizer.step_count == 2 * 3                  # 150 rows: 75 a rank, 3 steps of 2 x 25 an epoch
    assert len((tmp_path / "out" / "metrics.csv").read_text().strip().splitlines()) == 3


def test_ctrl_c_stops_every_rank_at_the_same_step(tmp_path):
    # SIGINT to mpiexec (as Ctrl-C in a terminal): it forwards it to both ranks, whose flags meet
    # in the step's Allreduce, so both stop after the same step, keep identical weights and warn
    env = dict(os.environ, NUMBA_NUM_THREADS="1", OMP_NUM_THREADS="1",
               PYTHONPATH=os.pathsep.join([os.path.dirname(HERE), os.environ.get("PYTHONPATH", "")]))
    p = subprocess.Popen([MPIEXEC, "-n", "2", sys.executable, os.path.join(HERE, "mpi_worker.py"), "interrupt",
                          str(tmp_path)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        for line in p.stdout:            # rank 0 prints after its second epoch
            if "TRAINING" in line:
                break
        time.sleep(0.3)
        p.send_signal(signal.SIGINT)
        out, err = p.communicate(timeout=TIMEOUT)
    finally:
        if p.poll() is None:
            p.kill()
    assert p.returncode == 0, out + err
    r0, r1 = (np.load(tmp_path / f"rank{r}.npz") for r in (0, 1))
    assert r0["interrupted"] and r1["interrupted"] and r0["warned"] and r1["warned"]
    assert r0["steps"] == r1["steps"] >= 20
    assert np.array_equal(r0["params"], r1["params"])
