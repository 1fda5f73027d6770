"""The fastbp command line (the fastbp/cli/ package): every command on tiny configs, mostly
in-process through ``cli.main``; the entry points themselves in subprocesses."""

import ast
import csv
import importlib.util
import json
import pathlib
import subprocess
import sys

import numpy as np
import pytest

import fastbp as fb
from fastbp import cli

if cli.tomllib is None:
    pytest.skip("reading TOML needs Python 3.11+ or tomli", allow_module_level=True)
tomllib = cli.tomllib

HAVE_MPL = importlib.util.find_spec("matplotlib") is not None
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
CONFIGS = pathlib.Path(__file__).resolve().parent.parent / "examples" / "configs"

TINY = """
[data]
kind = "spirals"
n_samples = 200
test_fraction = 0.25

[model]
hidden = [16]

[optimizer]
name = "adam"
lr = 1e-2

[training]
epochs = 4
batch_size = 32
validation_split = 0.2
verbose = 0
"""

SWEEP = TINY + """
[sweep]
method = "grid"

[sweep.params]
"optimizer.lr" = [3e-3, 1e-2]
"model.hidden" = [[8], [16, 8]]
"""


def write(tmp_path, text, name="exp.toml"):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def read_rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture
def count_fits(monkeypatch):
    """Counts Network.fit calls; ``calls.fail = True`` makes any further call fail the test."""
    real = fb.Network.fit

    class Calls:
        n = 0
        fail = False
        interrupt_at = None

    def fit(self, *a, **kw):
        assert not Calls.fail, "a finished run was trained again"
        Calls.n += 1
        if Calls.interrupt_at == Calls.n:
            raise KeyboardInterrupt
        return real(self, *a, **kw)

    monkeypatch.setattr(fb.Network, "fit", fit)
    return Calls


# ---- entry point, help, version ---------------------------------------------------------------------
def test_module_entry_point_help_and_train(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "fastbp", "--help"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    for command in ("train", "sweep", "bench", "info"):
        assert command in proc.stdout
    cfg = write(tmp_path, TINY)
    proc = subprocess.run([sys.executable, "-m", "fastbp", "train", cfg, "--out", str(tmp_path / "run")],
                          capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "trained 4 epochs" in proc.stdout and "test_accuracy" in proc.stdout
    assert (tmp_path / "run" / "model.npz").is_file()


def test_python_m_fastbp_cli_is_the_same_command():
    proc = subprocess.run([sys.executable, "-m", "fastbp.cli", "--version"], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0 and f"fastbp {fb.__version__}" in proc.stdout, proc.stderr


@pytest.mark.parametrize("command", ["train", "sweep", "info", "bench"])
def test_help_on_every_command(command, capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main([command, "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert "usage:" in out
    assert ("--workload" if command == "bench" else "--json" if command == "info" else "--out") in out


def test_version(capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["--version"])
    assert exc.value.code == 0 and fb.__version__ in capsys.readouterr().out


# ---- train --------------------------------------------------------------------------------------------------
def test_train_writes_model_metrics_plot_and_config(tmp_path, capsys):
    cfg = write(tmp_path, TINY + """
[schedule]
name = "cosine"

[training.early_stopping]
monitor = "val_loss"
patience = 50

[training.checkpoint]
monitor = "val_accuracy"
""")
    out = tmp_path / "run"
    assert cli.main(["train", cfg, "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "trained 4 epochs" in printed and "test_loss" in printed

    net = fb.Network.load(out / "model.npz")
    assert net.layer_sizes == [2, 16, 2]
    report = json.loads((out / "metrics.json").read_text())
    assert report["status"] == "ok" and report["epochs"] == 4 and report["layer_sizes"] == [2, 16, 2]
    assert set(report["history"]) >= {"loss", "accuracy", "lr", "val_loss", "val_accuracy"}
    assert all(len(v) == 4 for v in report["history"].values())
    assert report["history"]["lr"][0] > report["history"]["lr"][-1]          # cosine annealing ran
    assert report["test"]["accuracy"] == pytest.approx(report["test"]["accuracy"]) and "loss" in report["test"]
    assert report["n_train"] == 150                                          # 200 less the 25% test rows
    rows = read_rows(out / "metrics.csv")
    assert [int(r["epoch"]) for r in rows] == [0, 1, 2, 3]
    assert float(rows[-1]["loss"]) == pytest.approx(report["history"]["loss"][-1])
    assert (out / "checkpoint.npz").is_file()
    if HAVE_MPL:
        assert (out / "learning_curves.png").read_bytes()[:8] == PNG_SIGNATURE

    # the resolved config is complete TOML: training from it is the same run
    resolved = tomllib.loads((out / "config.toml").read_text())
    assert resolved["schedule"] == {"name": "CosineAnnealing", "T_max": 4}
    assert resolved["training"]["batch_size"] == 32 and resolved["model"]["dtype"] == "float32"
    assert cli.main(["train", str(out / "config.toml"), "--out", str(tmp_path / "again")]) == 0
    again = json.loads((tmp_path / "again" / "metrics.json").read_text())
    assert again["run_id"] == report["run_id"] and again["history"] == report["history"]


def test_train_csv_with_string_labels_test_file_and_standardize(tmp_path):
    rng = np.random.default_rng(0)

    def csv_file(name, n, labels):
        X = rng.normal(size=(n, 3)) * [1, 10, 100] + [0, 5, -50]
        y = rng.choice(labels, n)
        lines = ["a,b,c,species"] + [f"{x[0]},{x[1]},{x[2]},{c}" for x, c in zip(X, y)]
        (tmp_path / name).write_text("\n".join(lines) + "\n")

    csv_file("train.csv", 120, ["cat", "dog", "emu"])
    csv_file("test.csv", 30, ["dog", "emu"])        # a class missing: codes must follow the training file
    cfg = write(tmp_path, """
[data]
kind = "csv"
path = "train.csv"
test_path = "test.csv"
target = "species"
standardize = true

[model]
hidden = [8]

[training]
epochs = 2
verbose = 0
""")
    assert cli.main(["train", cfg, "--out", str(tmp_path / "run"), "--set", "output.plot=false"]) == 0
    report = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert report["layer_sizes"] == [3, 8, 3] and report["test"] is not None
    with np.load(tmp_path / "run" / "scaler.npz") as f:
        assert f["mean"].shape == (3,) and np.all(f["std"] > 0)
    assert not (tmp_path / "run" / "learning_curves.png").exists()


def test_train_regression_teacher_and_dry_run(tmp_path, capsys, count_fits):
    cfg = write(tmp_path, """
[data]
kind = "teacher"
n_samples = 300
n_features = 5
n_outputs = 2
task = "regression"

[model]
hidden = [8]
activation = "tanh"

[optimizer]
name = "sgd"
lr = 0.01
momentum = 0.9

[training]
epochs = 2
""")
    assert cli.main(["train", cfg, "--dry-run", "--out", str(tmp_path / "run")]) == 0
    out = capsys.readouterr().out
    assert "Network([5, 8, 2]" in out and "output='identity'" in out and "dry run" in out
    assert count_fits.n == 0 and not (tmp_path / "run").exists()
    assert cli.main(["train", cfg, "-q", "--out", str(tmp_path / "run")]) == 0
    assert "epoch 1/2" not in capsys.readouterr().out              # --quiet
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["history"]["loss"][-1] > 0


def test_train_divergence_is_reported(tmp_path, capsys):
    cfg = write(tmp_path, """
[data]
kind = "teacher"
n_samples = 64
n_features = 4
n_outputs = 1
task = "regression"

[model]
hidden = [8]
activation = "relu"

[optimizer]
name = "sgd"
lr = 1e30

[training]
epochs = 3
verbose = 0
""")
    assert cli.main(["train", cfg, "--out", str(tmp_path / "run")]) == 1
    assert "diverged" in capsys.readouterr().err
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["status"] == "diverged"


# ---- config errors: one line naming the file and the key, exit status 2, nothing trained ----------------------
@pytest.mark.parametrize("change, key, words", [
    (("[model]", "[model]\nhiden = [3]"), "model.hiden", "unknown key"),
    (("epochs = 4", "epochs = \"four\""), "training.epochs", "expected an integer"),
    (("kind = \"spirals\"\nn_samples = 200", "kind = \"csv\"\npath = \"missing.csv\""), "data.path", "no such file"),
    (("name = \"adam\"", "name = \"adamm\""), "optimizer.name", "unknown name"),
    (("hidden = [16]", "hidden = [16]\nactivation = \"relux\""), "model.activation", "unknown name"),
    (("[training]", "[schedule]\nname = \"cosine_anealing\"\n\n[training]"), "schedule.name", "unknown name"),
    (("lr = 1e-2", "lr = 1e-2\nmomentum = 0.9"), "optimizer.momentum", "unknown key for adam"),
    (("validation_split = 0.2", "validation_split = 1.5"), "training.validation_split", "must be"),
    (("[training]", "[trainnig]\nepochs = 1\n[training]"), "trainnig", "unknown section"),
])
def test_config_errors_name_file_and_key(tmp_path, capsys, count_fits, change, key, words):
    cfg = write(tmp_path, TINY.replace(*change), name="broken.toml")
    assert cli.main(["train", cfg, "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith(f"fastbp: error: {cfg}: {key}: ") and words in err
    assert count_fits.n == 0 and not (tmp_path / "run").exists()


def test_config_errors_in_files_and_overrides(tmp_path, capsys):
    assert cli.main(["train", str(tmp_path / "nope.toml")]) == 2
    assert "nope.toml: no such config file" in capsys.readouterr().err
    cfg = write(tmp_path, "[data\nkind = 1")
    assert cli.main(["train", cfg]) == 2
    assert "not valid TOML" in capsys.readouterr().err
    cfg = write(tmp_path, TINY)
    assert cli.main(["train", cfg, "--set", "training.batch_size=0"]) == 2
    err = capsys.readouterr().err
    assert "training.batch_size: must be >= 1, got 0 (set by --set)" in err
    assert cli.main(["train", cfg, "--set", "training.early_stopping.monitor=val_acc"]) == 2
    assert "training.early_stopping.monitor" in capsys.readouterr().err


def test_monitors_are_the_keys_fit_records(tmp_path, capsys):
    """With track_gradients, fit records grad_norm_<l> and update_ratio_<l> (fastbp.names.history_keys),
    so early stopping and checkpoints may watch them; without it the CLI refuses them up front."""
    cfg = write(tmp_path, TINY + """
track_gradients = true

[training.early_stopping]
monitor = "grad_norm_0"
patience = 50

[training.checkpoint]
monitor = "update_ratio_1"
""")
    assert cli.main(["train", cfg, "--out", str(tmp_path / "run"), "--set", "output.plot=false"]) == 0
    report = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert report["status"] == "ok" and len(report["history"]["grad_norm_0"]) == 4
    assert (tmp_path / "run" / "checkpoint.npz").is_file()
    capsys.readouterr()
    assert cli.main(["train", cfg, "--dry-run", "--set", "training.track_gradients=false"]) == 2
    err = capsys.readouterr().err
    assert f"{cfg}: training.early_stopping.monitor: \"grad_norm_0\" is not recorded by this run" in err
    assert "it records loss, accuracy, lr, val_loss, val_accuracy" in err


def test_every_optimizer_and_its_arguments_are_checked(tmp_path, capsys):
    """The [optimizer] schema follows fastbp.optim's table: every optimizer, every argument of its
    constructor with a checker of its own (so a wrong type names the key before anything trains)."""
    from fastbp import names
    from fastbp.cli import checks, schema
    assert set(schema.OPTIMIZER_ARGS) == set(names.OPTIMIZERS)
    for name, args in schema.OPTIMIZER_ARGS.items():
        assert args and all(check is not checks.anything for check in args.values()), name
        cfg = write(tmp_path, TINY.replace('name = "adam"', f'name = "{name}"'))
        assert cli.main(["train", cfg, "--dry-run"]) == 0, capsys.readouterr().err
        assert cli.main(["train", cfg, "--set", "optimizer.lr=true"]) == 2
        assert f"{cfg}: optimizer.lr: expected a number, got true (a boolean)" in capsys.readouterr().err


def test_cli_imports_nothing_from_the_kernels():
    """The CLI stands on Network and the public tables (fastbp.names), never on fastbp.kernels."""
    package = pathlib.Path(cli.__file__).parent
    for path in package.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                mods = [node.module or ""] + [f"{node.module or ''}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                mods = [a.name for a in node.names]
            else:
                continue
            assert not any("kernels" in m.split(".") for m in mods), (path.name, mods)


def test_library_input_error_is_one_clean_line(tmp_path, capsys):
    X = np.zeros((20, 3))
    X[4, 1] = np.nan
    np.savez(tmp_path / "d.npz", X=X, y=np.arange(20) % 2)
    cfg = write(tmp_path, "[data]\nkind = \"npz\"\npath = \"d.npz\"\n[training]\nepochs = 1\nverbose = 0\n")
    assert cli.main(["train", cfg, "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "NaN" in err and cfg in err


def write_idx(path, array):
    """An IDX file of unsigned bytes, as MNIST's."""
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(n).to_bytes(4, "big") for n in array.shape)
    path.write_bytes(header + array.astype(np.uint8).tobytes())


def test_data_kinds_mnist_npz_xor_teacher(tmp_path, capsys):
    rng = np.random.default_rng(0)
    folder = tmp_path / "mnist"
    folder.mkdir()
    for split, n in (("train", 40), ("t10k", 10)):
        write_idx(folder / f"{split}-images-idx3-ubyte", rng.integers(0, 256, (n, 4, 4)))
        write_idx(folder / f"{split}-labels-idx1-ubyte", np.arange(n) % 10)
    cfg = write(tmp_path, '[data]\nkind = "mnist"\nfolder = "mnist"\nn_train = 30\n[model]\nhidden = [8]\n'
                          '[training]\nepochs = 1\nverbose = 0\n[output]\nplot = false\n')
    assert cli.main(["train", cfg, "--out", str(tmp_path / "run")]) == 0
    report = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert report["layer_sizes"] == [16, 8, 10] and report["n_train"] == 30 and "accuracy" in report["test"]
    (folder / "t10k-labels-idx1-ubyte").unlink()
    assert cli.main(["train", cfg]) == 2
    err = capsys.readouterr().err
    assert f"{cfg}: data.folder: MNIST test files not found" in err and err.count("\n") == 1

    np.savez(tmp_path / "tr.npz", X=rng.normal(size=(50, 3)), y=rng.normal(size=(50, 2)))
    np.savez(tmp_path / "va.npz", X=rng.normal(size=(10, 3)), y=rng.normal(size=(10, 2)))
    for data, expect in [('kind = "npz"\npath = "tr.npz"\nval_path = "va.npz"', "Network([3, 4, 2]"),
                         ('kind = "xor"\nn_samples = 64', "Network([2, 4, 2]"),
                         ('kind = "spirals"\nn_samples = 201', "Network([2, 4, 2]"),   # odd: 100 + 101 points
                         ('kind = "teacher"\nworkload = "regress"\nquick = true', "Network([8, 4, 1]")]:
        cfg = write(tmp_path, f"[data]\n{data}\n[model]\nhidden = [4]\n")
        assert cli.main(["train", cfg, "--dry-run"]) == 0
        out = capsys.readouterr().out
        assert expect in out, out


# ---- sweep ----------------------------------------------------------------------------------------------
def test_sweep_grid_one_row_per_run_and_resume(tmp_path, capsys, count_fits):
    cfg = write(tmp_path, SWEEP)
    out = tmp_path / "sweep"
    assert cli.main(["sweep", cfg, "--out", str(out), "--jobs", "1"]) == 0
    rows = read_rows(out / "results.csv")
    assert len(rows) == 4 and count_fits.n == 4
    assert {(r["optimizer.lr"], r["model.hidden"]) for r in rows} == {
        (lr, h) for lr in ("0.003", "0.01") for h in ("[8]", "[16, 8]")}
    assert all(r["status"] == "ok" and r["epochs"] == "4" and float(r["val_loss"]) > 0 and r["test_accuracy"]
               for r in rows)
    assert len({r["run_id"] for r in rows}) == 4
    for r in rows:
        assert (out / "runs" / r["run_id"] / "model.npz").is_file()
    assert "best:" in capsys.readouterr().out

    count_fits.fail = True                      # a second invocation trains nothing
    assert cli.main(["sweep", cfg, "--out", str(out), "--jobs", "1"]) == 0
    assert capsys.readouterr().out.count("finished before, skipped") == 4
    assert read_rows(out / "results.csv") == rows

    count_fits.fail = False                     # a wider grid runs only the new combinations
    wider = write(tmp_path, SWEEP.replace("[3e-3, 1e-2]", "[3e-3, 1e-2, 3e-2]"))
    n = count_fits.n
    assert cli.main(["sweep", wider, "--out", str(out), "--jobs", "1"]) == 0
    assert count_fits.n - n == 2 and len(read_rows(out / "results.csv")) == 6


def test_sweep_interrupted_then_resumed(tmp_path, capsys, count_fits):
    cfg = write(tmp_path, SWEEP)
    out = tmp_path / "sweep"
    count_fits.interrupt_at = 3
    assert cli.main(["sweep", cfg, "--out", str(out), "--jobs", "1"]) == 130
    rows = read_rows(out / "results.csv")
    assert len(rows) == 2                                     # the running trial is lost, no more
    text = (out / "results.csv").read_text()                 # a crash in the middle of writing row 2
    (out / "results.csv").write_text(text[:text.rindex(",ok,") + 3])
    count_fits.interrupt_at = None
    assert cli.main(["sweep", cfg, "--out", str(out), "--jobs", "1"]) == 0
    rows = read_rows(out / "results.csv")                     # the broken row is gone
    assert all(None not in r.values() for r in rows)
    assert len(rows) == 4 and count_fits.n == 3 + 3 and len({r["run_id"] for r in rows}) == 4
    assert capsys.readouterr().out.count("skipped") == 1


def test_sweep_random_search(tmp_path, capsys, count_fits):
    cfg = write(tmp_path, TINY + """
[sweep]
method = "random"
n_trials = 3
seed = 7
metric = "val_accuracy"

[sweep.params]
"optimizer.lr" = { log_uniform = [1e-3, 1e-1] }
"model.activation" = ["relu", "tanh"]
"training.batch_size" = { int_uniform = [16, 64] }
""")
    out = tmp_path / "random"
    assert cli.main(["sweep", cfg, "--out", str(out), "--jobs", "1"]) == 0
    rows = read_rows(out / "results.csv")
    assert len(rows) == 3 and count_fits.n == 3
    for r in rows:
        assert 1e-3 <= float(r["optimizer.lr"]) <= 1e-1
        assert r["model.activation"] in ("relu", "tanh") and 16 <= int(r["training.batch_size"]) <= 64
    assert "ranking by val_accuracy (max)" in capsys.readouterr().out
    count_fits.fail = True                      # the same seed draws the same trials: all finished
    assert cli.main(["sweep", cfg, "--out", str(out), "--jobs", "1"]) == 0
    assert len(read_rows(out / "results.csv")) == 3


def test_sweep_config_errors_before_any_training(tmp_path, capsys, count_fits):
    out = tmp_path / "sweep"
    cases = [
        (SWEEP.replace('"model.hidden"', '"model.hiden"'), "model.hiden", "unknown key"),
        (SWEEP.replace("[[8], [16, 8]]", "[[8], 16]"), "model.hidden", "expected an array"),
        (SWEEP.replace('method = "grid"', 'method = "grid"\nn_trials = 3'), "sweep.n_trials", "only with"),
        (SWEEP.replace('"optimizer.lr" = [3e-3, 1e-2]', '"optimizer.lr" = { log_uniform = [1e-3, 1e-1] }'),
         'sweep.params."optimizer.lr"', "needs method"),
        (TINY, "sweep", "missing section"),
        (SWEEP.replace("test_fraction = 0.25", "").replace('method = "grid"', 'metric = "test_accuracy"'),
         "sweep.metric", "needs a test set"),
    ]
    for text, key, words in cases:
        cfg = write(tmp_path, text, name="sweep.toml")
        assert cli.main(["sweep", cfg, "--out", str(out), "--jobs", "1"]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"fastbp: error: {cfg}: {key}: ") and words in err and err.count("\n") == 1, err
    assert count_fits.n == 0 and not out.exists()


# ---- bench and info --------------------------------------------------------------------------------------
def test_bench_quick_passes_options_through(capsys):
    code = cli.main(["bench", "--workload", "small", "--peers", "fastbp", "--rounds", "1", "--quick",
                     "--threads", "1"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "GFLOP/s" in out and "samples/s" in out and "QUICK mode" in out


def test_info_prints_versions_and_machine(capsys):
    import numba
    assert cli.main(["info"]) == 0
    out = capsys.readouterr().out
    for text in (f"fastbp {fb.__version__}", f"numpy {np.__version__}", f"numba {numba.__version__}",
                 "BLAS:", "threading layer", "CPU features:", "Numba cache:"):
        assert text in out
    assert cli.main(["info", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["threads"]["fastbp (BLAS)"] == fb.get_num_threads()
    assert info["blas"]["provider"] == fb.BLAS_INFO["provider"]


# ---- pieces ------------------------------------------------------------------------------------------------
def test_toml_round_trip_and_dotted_keys():
    cfg = {"a": {"x": 1, "y": [1.5, 2.0], "s": "q\"uote", "b": True, "inf": float("inf")},
           "sweep": {"params": {"optimizer.lr": [1e-3], "m.h": {"log_uniform": [1e-4, 1.0]}}}}
    assert tomllib.loads(cli.dumps_toml(cfg)) == cfg
    raw = {}
    assert cli.set_key(raw, "training.early_stopping.patience", 3) == "training.early_stopping.patience"
    assert raw == {"training": {"early_stopping": {"patience": 3}}}
    assert cli.parse_value("[64, 32]") == [64, 32] and cli.parse_value("relu") == "relu"
    assert cli.parse_value("1e-3") == 1e-3 and cli.parse_value("true") is True


def test_example_configs_are_valid(capsys):
    for path in sorted(CONFIGS.glob("*.toml")):
        command = "sweep" if "[sweep]" in path.read_text() else "train"
        code = cli.main([command, str(path), "--dry-run"])
        err = capsys.readouterr().err
        if path.name == "mnist.toml" and code == 2:     # the files are not downloaded here
            assert "data.folder: MNIST train files not found" in err
            continue
        assert code == 0, (path, err)
