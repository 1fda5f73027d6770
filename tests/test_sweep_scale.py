"""Sweeps at scale: ``--jobs N`` worker processes and ``--dask`` give the rows of ``--jobs 1``
(bit for bit, given training.threads), a killed worker is a failed row, Ctrl-C keeps the finished
rows, bad engines are one-line errors (exit 2) with nothing written; fastbp.experiments.sweep.

One tiny network configuration throughout (the learning rate is what varies), so each worker
process compiles one driver, once, from the shared on-disk cache."""

import csv
import importlib.util
import os
import signal
import subprocess
import sys
import time

import pytest

from fastbp import cli

if cli.tomllib is None:
    pytest.skip("reading TOML needs Python 3.11+ or tomli", allow_module_level=True)

HAVE_DASK = importlib.util.find_spec("distributed") is not None
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

CONFIG = """
[data]
kind = "spirals"
n_samples = 160
test_fraction = 0.25

[model]
hidden = [8]

[optimizer]
name = "adam"

[training]
epochs = {epochs}
batch_size = 32
validation_split = 0.2
verbose = 0
threads = 1

[sweep]
method = "grid"
save_runs = {save_runs}

[sweep.params]
{params}
"""


LR_GRID = '"optimizer.lr" = [1e-3, 3e-3, 1e-2, 3e-2]'


def write(tmp_path, epochs=3, save_runs="false", name="sweep.toml", params=LR_GRID):
    path = tmp_path / name
    path.write_text(CONFIG.format(epochs=epochs, save_runs=save_runs, params=params))
    return str(path)


def rows(out):
    with open(os.path.join(out, "results.csv"), newline="") as f:
        return list(csv.DictReader(f))


def by_run(table):
    """The rows by run_id, without the wall time (the one column that may differ)."""
    return {r["run_id"]: {k: v for k, v in r.items() if k != "time_s"} for r in table}


@pytest.fixture(scope="module")
def jobs1(tmp_path_factory):
    """The reference: the sweep run in this process."""
    tmp = tmp_path_factory.mktemp("jobs1")
    out = str(tmp / "out")
    assert cli.main(["sweep", write(tmp), "--out", out, "--jobs", "1"]) == 0
    table = rows(out)
    assert len(table) == 4 and all(r["status"] == "ok" and float(r["val_loss"]) > 0 for r in table)
    return by_run(table)


def test_jobs_2_gives_the_rows_of_jobs_1(tmp_path, jobs1, capsys):
    out = str(tmp_path / "out")
    assert cli.main(["sweep", write(tmp_path), "--out", out, "--jobs", "2"]) == 0
    text = capsys.readouterr().out
    assert "running 4 runs 2 worker processes, 1 thread(s) each" in text
    assert "4/4 done, 0 running, 0 failed; best val_loss" in text
    assert by_run(rows(out)) == jobs1
    assert not os.path.exists(os.path.join(out, "runs", "_scratch", next(iter(jobs1))))   # save_runs = false
    # a rerun finds every run finished and starts no worker
    assert cli.main(["sweep", write(tmp_path), "--out", out, "--jobs", "2"]) == 0
    assert capsys.readouterr().out.count("finished before, skipped") == 4


@pytest.mark.skipif(not HAVE_DASK, reason="dask.distributed is not installed (pip install 'fastbp[dask]')")
def test_dask_local_cluster_gives_the_rows_of_jobs_1(tmp_path, jobs1, capsys):
    out = str(tmp_path / "out")
    assert cli.main(["sweep", write(tmp_path), "--out", out, "--dask", "local", "--jobs", "2"]) == 0
    assert "a Dask LocalCluster of 2 worker processes" in capsys.readouterr().out
    assert by_run(rows(out)) == jobs1


@pytest.mark.skipif(not HAVE_DASK, reason="dask.distributed is not installed (pip install 'fastbp[dask]')")
def test_unreachable_dask_scheduler_is_a_one_line_error(tmp_path, capsys):
    out = tmp_path / "out"
    t0 = time.perf_counter()
    assert cli.main(["sweep", write(tmp_path), "--out", str(out), "--dask", "tcp://127.0.0.1:9"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "--dask: cannot reach the Dask scheduler at tcp://127.0.0.1:9" in err
    assert not out.exists() and time.perf_counter() - t0 < 30


def test_bad_jobs_is_a_one_line_error_and_nothing_is_written(tmp_path, capsys):
    out = tmp_path / "out"
    assert cli.main(["sweep", write(tmp_path), "--out", str(out), "--jobs", "0"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "--jobs: must be >= 1, got 0" in err, err
    assert not out.exists()
    cfg = write(tmp_path).replace("sweep.toml", "sweep.toml")
    assert cli.main(["sweep", cfg, "--out", str(out), "--set", "sweep.jobs=0"]) == 2
    assert "sweep.jobs" in capsys.readouterr().err and not out.exists()


def test_more_busy_threads_than_cores_warns(tmp_path, capsys, monkeypatch):
    from fastbp.cli import sweep
    monkeypatch.setattr(sweep, "cpu_count", lambda: 2)
    out = str(tmp_path / "out")
    assert cli.main(["sweep", write(tmp_path), "--out", out, "--jobs", "3", "--dry-run"]) == 0
    assert cli.main(["sweep", write(tmp_path), "--out", out, "--jobs", "2", "--set", "training.threads=2",
                     "--set", "sweep.params.\"optimizer.lr\"=[1e-2]"]) == 0
    assert "2 jobs x 2 thread(s) = 4 busy threads on 2 cores" in capsys.readouterr().err


def _default_sigint():
    # a suite started in the background (`make test &`) ignores SIGINT, and a child inherits that
    # (Python then installs no handler of its own): the sweep gets Ctrl-C as from a terminal
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _sweep_process(cfg, out, jobs=2):
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.Popen([sys.executable, "-m", "fastbp", "sweep", cfg, "--out", out, "--jobs", str(jobs)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            preexec_fn=_default_sigint)


def _workers(proc):
    psutil = pytest.importorskip("psutil")
    return [c for c in psutil.Process(proc.pid).children()
            if "resource_tracker" not in " ".join(c.cmdline())]


def _wait(cond, proc, timeout=240):
    t0 = time.time()
    while not cond():
        assert proc.poll() is None, proc.communicate()
        assert time.time() - t0 < timeout, "timed out"
        time.sleep(0.05)


def test_a_killed_worker_is_a_failed_row_and_the_others_go_on(tmp_path):
    cfg = write(tmp_path, epochs=400, save_runs="true")
    out = str(tmp_path / "out")
    proc = _sweep_process(cfg, out)
    try:   # both workers are mid-run once both runs have written their config
        _wait(lambda: os.path.isdir(os.path.join(out, "runs")) and len(os.listdir(os.path.join(out, "runs"))) >= 2,
              proc)
        victim = _workers(proc)[0]
        victim.send_signal(signal.SIGKILL)
        stdout, stderr = proc.communicate(timeout=300)
    finally:
        proc.kill()
    assert proc.returncode == 1, (stdout, stderr)
    table = rows(out)
    assert sorted(r["status"] for r in table) == ["failed", "ok", "ok", "ok"], table
    failed = next(r for r in table if r["status"] == "failed")
    assert "worker process died" in failed["error"] and "1 failed" in stdout
    # the rerun trains only the failed run
    assert cli.main(["sweep", cfg, "--out", out, "--jobs", "1"]) == 0
    ok = [r for r in rows(out) if r["status"] == "ok"]
    assert len(ok) == 4 and len({r["run_id"] for r in ok}) == 4


def test_ctrl_c_stops_the_workers_and_keeps_finished_rows(tmp_path):
    # two short runs (their rows come at once) and two long ones, which Ctrl-C interrupts (a run of
    # 20000 epochs took 2.2 s on a 2-core EPYC with a warm cache, 600 epochs 0.03 s)
    cfg = write(tmp_path, params='"training.epochs" = [100, 20000]\n"optimizer.lr" = [1e-3, 1e-2]')
    out = str(tmp_path / "out")
    proc = _sweep_process(cfg, out)
    try:
        _wait(lambda: os.path.exists(os.path.join(out, "results.csv")) and len(rows(out)) >= 1, proc)
        workers = _workers(proc)
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 130, (stdout, stderr)
    assert "run the same command again to resume" in stderr
    finished = rows(out)
    assert 1 <= len(finished) < 4 and all(r["status"] == "ok" for r in finished)
    time.sleep(0.5)
    assert not any(w.is_running() and w.status() != "zombie" for w in workers)   # no worker left behind
    again = _sweep_process(cfg, out)        # resumes: the unfinished runs, on two workers
    stdout, stderr = again.communicate(timeout=240)
    assert again.returncode == 0, stderr
    assert "finished before, skipped" in stdout + stderr
    assert len(rows(out)) == 4 and all(r["status"] == "ok" for r in rows(out))


def test_python_api_returns_the_table(tmp_path, jobs1):
    from fastbp import experiments
    table = experiments.sweep(write(tmp_path), out=str(tmp_path / "out"), jobs=1)
    records = table.to_dict("records") if hasattr(table, "to_dict") else table
    assert len(records) == 4
    got = {r["run_id"]: r for r in records}
    for rid, ref in jobs1.items():
        assert got[rid]["status"] == "ok" and got[rid]["val_loss"] == float(ref["val_loss"])
        assert got[rid]["optimizer.lr"] == float(ref["optimizer.lr"])
    with pytest.raises(cli.ConfigError, match="--jobs"):
        experiments.sweep(write(tmp_path), out=str(tmp_path / "out2"), jobs=0)


# ---- Optuna ---------------------------------------------------------------------------------------------------
HAVE_OPTUNA = importlib.util.find_spec("optuna") is not None
needs_optuna = pytest.mark.skipif(not HAVE_OPTUNA, reason="optuna is not installed (pip install 'fastbp[optuna]')")

OPTUNA = """
[sweep]
method = "optuna"
n_trials = {n}
sampler = "{sampler}"
{extra}

[sweep.params]
"optimizer.lr" = {{ log_uniform = [1e-3, 1e-1] }}
"training.batch_size" = [16, 32]
"""


def write_optuna(tmp_path, n=4, sampler="tpe", extra="", epochs=3, name="opt.toml"):
    text = CONFIG.format(epochs=epochs, save_runs="false", params=LR_GRID)
    text = text[:text.index("[sweep]")] + OPTUNA.format(n=n, sampler=sampler, extra=extra)
    path = tmp_path / name
    path.write_text(text)
    return str(path)


@needs_optuna
@pytest.mark.parametrize("sampler", ["tpe", "random", "cmaes"])
def test_optuna_study_in_sqlite_resumes(tmp_path, capsys, sampler):
    import optuna
    out = str(tmp_path / "out")
    cfg = write_optuna(tmp_path, n=3, sampler=sampler)
    assert cli.main(["sweep", cfg, "--out", out, "--jobs", "1"]) == 0
    assert "best: trial" in capsys.readouterr().out
    study = optuna.load_study(study_name="opt", storage=f"sqlite:///{out}/optuna.db")
    assert len([t for t in study.trials if t.state.name in ("COMPLETE", "PRUNED")]) == 3
    table = rows(out)
    assert len(table) == 3 and all(r["status"] in ("ok", "pruned") for r in table)
    assert all(1e-3 <= float(r["optimizer.lr"]) <= 1e-1 and r["training.batch_size"] in ("16", "32") for r in table)
    # more trials asked of the same study: only the new ones run
    assert cli.main(["sweep", cfg, "--out", out, "--jobs", "1", "--set", "sweep.n_trials=5"]) == 0
    assert "3 already finished" in capsys.readouterr().out
    study = optuna.load_study(study_name="opt", storage=f"sqlite:///{out}/optuna.db")
    assert len([t for t in study.trials if t.state.name in ("COMPLETE", "PRUNED")]) == 5


@needs_optuna
def test_optuna_pruner_stops_bad_trials_per_epoch(tmp_path, capsys):
    out = str(tmp_path / "out")
    cfg = write_optuna(tmp_path, n=8, sampler="random", epochs=6,
                       extra='seed = 3')
    # a wide learning-rate range: some trials are far worse after the first epochs than the median
    text = open(cfg).read().replace("log_uniform = [1e-3, 1e-1]", "log_uniform = [1e-5, 1e-1]")
    open(cfg, "w").write(text)
    assert cli.main(["sweep", cfg, "--out", out, "--jobs", "1"]) == 0
    table = rows(out)
    pruned = [r for r in table if r["status"] == "pruned"]
    assert pruned and all(int(r["epochs"]) < 6 for r in pruned), table
    assert any(r["status"] == "ok" and r["epochs"] == "6" for r in table)


@needs_optuna
def test_optuna_with_two_jobs_and_two_processes_on_one_study(tmp_path):
    import optuna
    out = str(tmp_path / "out")
    db = f"sqlite:///{tmp_path}/shared.db"
    cfg = write_optuna(tmp_path, n=6, extra=f'storage = "{db}"\nstudy = "shared"\npruner = "none"')
    procs = [_sweep_process(cfg, str(tmp_path / f"out{i}"), jobs=j) for i, j in ((1, 1), (2, 2))]
    for p in procs:
        stdout, stderr = p.communicate(timeout=300)
        assert p.returncode == 0, (stdout, stderr)
    study = optuna.load_study(study_name="shared", storage=db)
    complete = [t for t in study.trials if t.state.name == "COMPLETE"]
    assert all(t.state.name == "COMPLETE" for t in study.trials)      # pruner = "none"
    assert 6 <= len(complete) <= 6 + 2            # each process stops at n_trials; at most its in-flight runs more
    assert len({t.number for t in complete}) == len(complete)
    n_rows = sum(len(rows(str(tmp_path / f"out{i}"))) for i in (1, 2))
    assert n_rows == len(complete), ([(t.number, t.state.name, t.params) for t in study.trials],
                                     [[(r["trial"], r["status"], r["optimizer.lr"]) for r in rows(str(tmp_path / f"out{i}"))]
                                      for i in (1, 2)])     # every trial ran in one of the two processes


@needs_optuna
def test_optuna_bad_storage_and_conflicting_study_are_one_line_errors(tmp_path, capsys):
    out = tmp_path / "out"
    cfg = write_optuna(tmp_path, extra='storage = "nosuchdb://x/y"')
    assert cli.main(["sweep", cfg, "--out", str(out), "--jobs", "1"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "sweep.storage: cannot open the Optuna storage 'nosuchdb://x/y'" in err
    assert not out.exists()
    db = f"sqlite:///{tmp_path}/s.db"
    cfg = write_optuna(tmp_path, n=1, extra=f'storage = "{db}"\nstudy = "s"')
    assert cli.main(["sweep", cfg, "--out", str(out), "--jobs", "1"]) == 0
    other = open(cfg).read().replace('"training.batch_size" = [16, 32]', '"training.batch_size" = [8, 64]')
    cfg2 = write(tmp_path, name="unused.toml")
    open(cfg2, "w").write(other)
    capsys.readouterr()
    before = (out / "results.csv").read_text()
    assert cli.main(["sweep", cfg2, "--out", str(out), "--jobs", "1"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "sweep.study: study 's'" in err and "another search space" in err
    assert (out / "results.csv").read_text() == before
    assert cli.main(["sweep", write(tmp_path), "--out", str(out), "--set", 'sweep.sampler="tpe"']) == 2
    assert "sweep.sampler: only with method = \"optuna\"" in capsys.readouterr().err
