"""Rough edges a new user hits (issue 21): file modes and errors, stale temporaries, resuming,
progress output, what callbacks say, the bench's machine check, the thread policy's choice."""

import io
import os
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

import fastbp as fb
from fastbp import _io

rng0 = np.random.default_rng(5)
X = rng0.standard_normal((40, 3))
Y = np.arange(40) % 3


def small(seed=1):
    return fb.Network([3, 5, 3], seed=seed)


# ==== 3. files ==================================================================================================
@pytest.fixture
def umask():
    old = os.umask(0o022)
    os.umask(old)
    yield lambda m: os.umask(m)
    os.umask(old)


@pytest.mark.skipif(os.name != "posix", reason="POSIX modes")
@pytest.mark.parametrize("mask", [0o022, 0o077, 0o002, 0o027])
def test_saved_file_gets_the_mode_a_plain_open_would(tmp_path, umask, mask):
    umask(mask)
    net = small()
    net.save(tmp_path / "m.npz")
    np.savez(tmp_path / "plain.npz", a=np.zeros(2))
    mode = os.stat(tmp_path / "m.npz").st_mode & 0o777
    assert mode == 0o666 & ~mask == os.stat(tmp_path / "plain.npz").st_mode & 0o777
    # replacing an existing file, and a checkpoint, too
    net.save(tmp_path / "m.npz")
    assert os.stat(tmp_path / "m.npz").st_mode & 0o777 == 0o666 & ~mask
    net.fit(X, Y, epochs=1, verbose=0, callbacks=[fb.ModelCheckpoint(tmp_path / "ck-{epoch}.npz", monitor="loss")])
    assert os.stat(tmp_path / "ck-1.npz").st_mode & 0o777 == 0o666 & ~mask
    assert os.umask(mask) == mask   # saving leaves the umask as it was


def test_save_into_a_missing_folder_names_the_users_path(tmp_path):
    path = tmp_path / "missing" / "folder" / "m.npz"
    with pytest.raises(FileNotFoundError) as exc:
        small().save(path)
    assert exc.value.filename == str(path)
    assert str(path) in str(exc.value) and ".fastbp-" not in str(exc.value)
    assert not (tmp_path / "missing").exists()


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="POSIX permissions (root ignores them)")
def test_save_into_a_read_only_folder_names_the_users_path(tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o500)
    try:
        with pytest.raises(PermissionError) as exc:
            small().save(folder / "m.npz")
    finally:
        folder.chmod(0o700)
    assert exc.value.filename == str(folder / "m.npz") and ".fastbp-" not in str(exc.value)


def _age(path, seconds):
    t = time.time() - seconds
    os.utime(path, (t, t))


@pytest.mark.skipif(_io.fcntl is None, reason="needs flock")
def test_a_save_killed_midway_leaves_a_temporary_that_the_next_save_removes(tmp_path):
    # a real writer: it holds its temporary file's lock and is then killed with SIGKILL
    code = textwrap.dedent(f"""
        import sys, time
        from fastbp import _io
        def write(f):
            f.write(b"PK partial")
            f.flush()
            print("writing", flush=True)
            time.sleep(60)
        _io.write_atomically({str(tmp_path / "m.npz")!r}, write)
    """)
    p = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True,
                         env={**os.environ, "PYTHONPATH": os.path.dirname(os.path.dirname(fb.__file__))})
    try:
        assert p.stdout.readline().strip() == "writing"
        (tmp,) = [f for f in os.listdir(tmp_path) if f.startswith(".fastbp-")]
        _age(tmp_path / tmp, 120)
        small().save(tmp_path / "other.npz")       # the writer still runs and holds its lock: kept
        assert tmp in os.listdir(tmp_path)
    finally:
        p.kill()
        p.wait()
    fresh = tmp_path / ".fastbp-abcd1234.npz.tmp"   # a killed save of a minute ago or less: kept
    fresh.write_bytes(b"x")
    unknown = tmp_path / ".fastbp-x.npz.tmp"        # not a name our saves make: kept
    unknown.write_bytes(b"x")
    _age(unknown, 3600)
    assert tmp in os.listdir(tmp_path)
    small().save(tmp_path / "other.npz")
    names = set(os.listdir(tmp_path))
    assert tmp not in names                         # killed over a minute ago, lock released: removed
    assert {"other.npz", fresh.name, unknown.name} <= names


# ==== 4. resuming ===============================================================================================
def _saved_after(tmp_path, epochs, schedule):
    net = small()
    net.fit(X, Y, epochs=epochs, verbose=0, optimizer=fb.SGD(lr=0.1), schedule=schedule)
    net.save(tmp_path / "m.npz")
    return fb.Network.load(tmp_path / "m.npz")


def test_the_file_knows_the_epochs_trained(tmp_path):
    net = small()
    assert net.epochs_trained == 0
    net.fit(X, Y, epochs=3, verbose=0)
    assert net.epochs_trained == 3
    net.save(tmp_path / "m.npz")
    back = fb.Network.load(tmp_path / "m.npz")
    assert back.epochs_trained == 3
    back.fit(X, Y, epochs=5, initial_epoch=back.epochs_trained, verbose=0)
    assert back.epochs_trained == 5


def test_old_files_without_the_epoch_still_load(tmp_path):
    small().save(tmp_path / "m.npz")
    with np.load(tmp_path / "m.npz") as z:
        arrays = {k: z[k] for k in z.files if k != "epoch"}
    np.savez(tmp_path / "old.npz", **arrays)
    assert fb.Network.load(tmp_path / "old.npz").epochs_trained == 0


def test_fitting_a_loaded_network_from_epoch_0_with_a_schedule_warns_once(tmp_path, recwarn):
    back = _saved_after(tmp_path, 3, fb.ExponentialDecay(0.5))
    with pytest.warns(UserWarning, match=r"saved after epoch 3 .*ExponentialDecay restarts, and the learning "
                                         r"rate goes back to 0\.1 .*pass initial_epoch=3") as w:
        h = back.fit(X, Y, epochs=2, verbose=0)
    assert len([x for x in w if "saved after epoch" in str(x.message)]) == 1
    assert h.history["lr"][0] == pytest.approx(0.1)   # Keras's meaning kept: it did restart
    recwarn.clear()
    back.fit(X, Y, epochs=2, verbose=0)                # once
    assert not [x for x in recwarn if "saved after epoch" in str(x.message)]


@pytest.mark.parametrize("case", ["resumed", "no schedule", "new optimizer", "plateau"])
def test_no_resume_warning_when_nothing_restarts(tmp_path, recwarn, case):
    schedule = (None if case == "no schedule" else
                fb.ReduceLROnPlateau("loss") if case == "plateau" else fb.ExponentialDecay(0.5))
    back = _saved_after(tmp_path, 3, schedule)
    if case == "resumed":
        h = back.fit(X, Y, epochs=5, initial_epoch=3, verbose=0)
        assert h.history["lr"][0] == pytest.approx(0.1 * 0.5 ** 3)
    elif case == "new optimizer":
        back.fit(X, Y, epochs=1, optimizer=fb.SGD(lr=0.1, schedule=fb.ExponentialDecay(0.5)), verbose=0)
    else:
        back.fit(X, Y, epochs=1, verbose=0)
    assert not [x for x in recwarn if "saved after epoch" in str(x.message)]


# ==== 2. progress and what callbacks say ========================================================================
LOGS = {"loss": 0.1234, "accuracy": 0.95432, "lr": 0.001, "val_loss": 0.2345, "val_accuracy": 0.9321}


def _drawn(width, n=60000, epochs=10):
    pytest.importorskip("tqdm")
    from fastbp._progress import Progress
    f = io.StringIO()
    p = Progress(1, n, epochs, file=f, width=width)
    p.start(epochs - 1)
    for _ in range(10):
        p.update(n // 10, 0.25)
    p.end(epochs - 1, LOGS, 3.2)
    return f.getvalue()


@pytest.mark.parametrize("width", [80, 100, 120])
def test_the_epoch_summary_shows_in_full_and_the_bar_stays_readable(width):
    out = _drawn(width)
    pieces = [p for line in out.split("\n") for p in line.split("\r") if p]
    bars = [p for p in pieces if "|" in p]
    assert bars and all(len(b) <= width for b in bars)
    assert all(b.split("|")[1].count("#") + b.split("|")[1].count(" ") >= 10 for b in bars)   # a real bar
    assert "100%" in bars[-1] and "60.0k/60.0k" in bars[-1]
    summary = [p for p in pieces if "val_accuracy: 0.9321" in p]
    assert len(summary) == 1 and all(f"{k}: " in summary[0] for k in LOGS)


def test_a_wide_terminal_keeps_the_summary_on_the_bar():
    out = _drawn(250)
    assert "|" in out.split("\n")[-2] and "val_accuracy: 0.9321" in out.split("\n")[-2]
    assert out.count("epoch 10/10") == out.count("epoch 10/10 ")   # no separate summary line


@pytest.mark.parametrize("width", [0, 10])
def test_unknown_or_tiny_width_prints_one_line_per_epoch(width):
    out = _drawn(width)
    assert out == "epoch 10/10 - 3.20s - 18,750 samples/s - loss: 0.1234 - accuracy: 0.9543 - lr: 0.001 - " \
                  "val_loss: 0.2345 - val_accuracy: 0.9321\n"


def test_fit_at_width_0_prints_lines_not_empty_ones(capsys, monkeypatch):
    pytest.importorskip("tqdm")
    monkeypatch.setenv("COLUMNS", "0")
    small().fit(X, Y, epochs=2, batch_size=16, verbose=1, validation_data=(X, Y))
    out, err = capsys.readouterr()
    lines = err.strip("\n").split("\n")
    assert out == "" and len(lines) == 2
    for e, line in enumerate(lines):
        assert line.startswith(f"epoch {e + 1}/2 - ") and "val_loss: " in line and "val_accuracy: " in line


def _stops(es, verbose):
    net = small()
    # lr never improves: EarlyStopping on it stops after `patience` epochs
    net.fit(X, Y, epochs=10, verbose=verbose, callbacks=[es])
    return net


@pytest.mark.parametrize("verbose", [1, 2])
def test_early_stopping_says_one_line_when_it_acts(capsys, verbose, monkeypatch):
    monkeypatch.setenv("COLUMNS", "0")
    _stops(fb.EarlyStopping("lr", patience=2, restore_best_weights=True), verbose)
    out = capsys.readouterr().out
    assert [line for line in out.splitlines() if "early stopping" in line] == \
        ["epoch 3: early stopping; restored the weights of epoch 1"]
    _stops(fb.EarlyStopping("lr", patience=2), verbose)
    assert "epoch 3: early stopping; best lr 0.001 at epoch 1\n" in capsys.readouterr().out


def test_early_stopping_is_quiet_at_verbose_0_or_when_told(capsys):
    _stops(fb.EarlyStopping("lr", patience=2), 0)
    _stops(fb.EarlyStopping("lr", patience=2, verbose=0), 2)
    assert "early stopping" not in capsys.readouterr().out
    _stops(fb.EarlyStopping("lr", patience=2, verbose=1), 0)
    assert capsys.readouterr().out == "epoch 3: early stopping; best lr 0.001 at epoch 1\n"


@pytest.mark.parametrize("verbose", [0, 2])
def test_reduce_lr_on_plateau_says_one_line_when_it_acts(capsys, verbose):
    net = small()
    h = net.fit(X, Y, epochs=4, verbose=verbose, optimizer=fb.SGD(lr=0.1),
                schedule=fb.ReduceLROnPlateau("lr", factor=0.5, patience=1, min_delta=0.0))
    said = [line for line in capsys.readouterr().out.splitlines() if "ReduceLROnPlateau" in line]
    assert h.history["lr"] == pytest.approx([0.1, 0.1, 0.05, 0.05])
    assert said == ([] if verbose == 0 else ["epoch 2: ReduceLROnPlateau reduced the learning rate to 0.05",
                                             "epoch 4: ReduceLROnPlateau reduced the learning rate to 0.025"])


# ==== 5. the bench's machine check ===============================================================================
def test_a_starved_machine_is_not_measured_against_its_own_starved_median():
    from fastbp import bench
    # issue 21: 2-thread probes of about 1 GFLOP/s while one thread had done 91 at start
    res = [{"workload": "digits", "round": r, "peer": p, "probe_gflops": g}
           for r, p, g in [(1, "fastbp", [1.05, 0.9]), (1, "torch", [1.1, 0.8]), (2, "fastbp", [1.0, 1.2])]]
    ref, slow = bench.slow_rounds(res, floor=91.0)
    assert ref == 91.0 and len(slow) == 3
    assert bench.starved(res, 91.0)
    assert bench.slow_rounds(res)[1] == []                  # the median alone saw nothing wrong
    fine = [{"workload": "w", "round": 1, "peer": "p", "probe_gflops": [150.0, 160.0]}]
    assert bench.slow_rounds(fine, floor=91.0) == (155.0, []) and not bench.starved(fine, 91.0)
    assert not bench.starved(fine, None)


def test_probe_rates_print_with_significant_digits():
    from fastbp.bench.timing import fmt_gflops
    assert fmt_gflops(0.27) == "0.27" and fmt_gflops(1.05) == "1.05" and fmt_gflops(91.4) == "91.4"


# ==== 6. the example config says what it does ==================================================================
def test_spirals_config_comment_states_the_resolved_T_max():
    import pathlib
    from fastbp.cli.checks import Context
    from fastbp.cli.config import read_config, resolve
    path = pathlib.Path(__file__).resolve().parent.parent / "examples" / "configs" / "spirals.toml"
    raw = read_config(path)
    cfg = resolve(raw, Context(str(path)))
    s, epochs = cfg["schedule"], cfg["training"]["epochs"]
    line = next(l for l in path.read_text().splitlines() if "T_max" in l)
    assert "T_max defaults to epochs - warmup_epochs" in line
    assert s["T_max"] == epochs - s["warmup_epochs"]


# ==== 1. the thread policy (its speed is the benchmark fastbp.bench.threads; these check what it chooses) ====
from fastbp import _blas   # noqa: E402


@pytest.fixture
def policy():
    before = fb.get_thread_setting()
    fb.set_num_threads("auto")
    yield
    fb.set_num_threads(before)


def _threads_during_fit(sizes, batch):
    seen = []
    net = fb.Network(sizes, seed=0)
    Xs = rng0.standard_normal((2 * batch, sizes[0])).astype(np.float32)
    ys = np.arange(2 * batch) % sizes[-1]
    net.fit(Xs, ys, epochs=1, batch_size=batch, verbose=0,
            callbacks=[fb.LambdaCallback(on_epoch_end=lambda e, logs: seen.append(fb.get_num_threads()))])
    return seen[0]


@pytest.mark.skipif(_blas._set_threads is None, reason="a BLAS without a thread knob")
def test_small_networks_train_on_one_blas_thread_by_default(policy):
    before = fb.get_num_threads()
    assert fb.get_thread_setting() == "auto"
    assert _threads_during_fit([64, 100, 10], 200) == 1     # digits' drop-in: 200 x 64 x 100
    assert fb.get_num_threads() == before                    # restored after the fit


@pytest.mark.skipif(_blas._set_threads is None or _blas.cores() < 2, reason="needs 2 cores and a thread knob")
def test_a_count_the_user_set_is_kept(policy):
    fb.set_num_threads(2)
    assert fb.get_thread_setting() == 2
    assert _threads_during_fit([64, 100, 10], 200) == 2
    fb.set_num_threads("auto")
    assert fb.get_thread_setting() == "auto" and fb.get_num_threads() == _blas.cores()


def test_an_estimators_n_threads_leaves_the_policy_in_place(policy):
    # the estimator sets its count for its own calls and then restores the setting it found:
    # "auto" stays "auto" (restoring the count it read would have fixed every later default fit)
    pytest.importorskip("sklearn")
    from fastbp.sklearn import MLPClassifier
    X = rng0.standard_normal((40, 4)).astype(np.float32)
    y = np.arange(40) % 2
    MLPClassifier((5,), max_iter=2, n_threads=1, random_state=0).fit(X, y)
    assert fb.get_thread_setting() == "auto"


def test_policy_chooses_by_the_largest_product_and_the_free_cores(monkeypatch):
    assert _blas.largest_product([64, 100, 10], 200) == 200 * 64 * 100
    assert _blas.policy_threads([64, 100, 10], 200)[0] == 1
    monkeypatch.setattr(_blas, "cores", lambda: 4)
    monkeypatch.setattr(_blas, "busy_elsewhere", lambda: 0)
    assert _blas.policy_threads([1024, 2048, 2048, 10], 256)[0] == 4
    monkeypatch.setattr(_blas, "busy_elsewhere", lambda: 1)
    n, why = _blas.policy_threads([1024, 2048, 2048, 10], 256)
    assert n == 3 and "1 kept busy by other processes" in why
    monkeypatch.setattr(_blas, "busy_elsewhere", lambda: 9)
    assert _blas.policy_threads([1024, 2048, 2048, 10], 256)[0] == 1
    monkeypatch.setattr(_blas, "busy_elsewhere", lambda: None)       # the OS does not say
    assert _blas.policy_threads([1024, 2048, 2048, 10], 256)[0] == 4


@pytest.mark.skipif(not os.path.exists("/proc/loadavg"), reason="Linux")
def test_a_busy_competitor_is_seen():
    p = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.5)
        assert max(_blas.busy_elsewhere() for _ in range(20)) >= 1
    finally:
        p.kill()
        p.wait()


def test_environment_thread_variables_count_as_the_users_setting():
    code = "import fastbp as fb; print(fb.get_thread_setting(), fb.get_num_threads())"
    env = {**os.environ, "PYTHONPATH": os.path.dirname(os.path.dirname(fb.__file__)), "OPENBLAS_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    assert out.split() == ["1", "1"]


def test_info_says_what_the_policy_chose(policy):
    from fastbp.cli.info import collect_info
    tp = collect_info()["thread_policy"]
    assert tp["user_setting"] is None and tp["min_mnk"] == _blas.POLICY_MIN_MNK
    assert tp["examples"]["the scikit-learn drop-in on digits (64-100-10, batch 200)"].startswith("1: ")
    fb.set_num_threads(1)
    assert collect_info()["thread_policy"]["user_setting"] == 1


def test_set_num_threads_refuses_bad_counts():
    for bad in (0, -1, 1.5, True, "2", None, "Auto"):
        with pytest.raises(fb.InputError, match=r"number of threads must be an integer >= 1 or \"auto\""):
            fb.set_num_threads(bad)
