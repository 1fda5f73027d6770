"""save/load: exact round trips, plain-array files, and every kind of bad file."""

import json
import os
import re

import numpy as np
import pytest

import fastbp as fb
from fastbp.optim import from_config

rng0 = np.random.default_rng(7)
X = rng0.standard_normal((24, 3))
Y = np.arange(24) % 3

OPTIMIZERS = {
    "none": lambda: None,
    "adam": lambda: fb.Adam(lr=1e-2, betas=(0.8, 0.99), eps=1e-7, weight_decay=1e-3),
    "adamw-amsgrad": lambda: fb.AdamW(lr=1e-2, amsgrad=True),
    "adam-epshat": lambda: fb.Adam(lr=1e-2, eps=1e-3, eps_hat=True),
    "sgd": lambda: fb.SGD(lr=0.05),
    "sgd-nesterov": lambda: fb.SGD(lr=0.05, momentum=0.9, nesterov=True, weight_decay=1e-4),
    "rmsprop-centered": lambda: fb.RMSprop(lr=1e-3, centered=True, momentum=0.5),
}


def trained(dtype=np.float64, opt="adam", **kw):
    kw = {"activation": ["tanh", "relu"], "dropout": [0.2, 0.0], "seed": 3, **kw}
    net = fb.Network([3, 6, 5, 3], dtype=dtype, **kw)
    o = OPTIMIZERS[opt]()
    if o is not None:
        net.fit(X, Y, epochs=2, batch_size=5, optimizer=o)
    return net


def only_files(folder):
    return sorted(os.listdir(folder))


# ---- round trip ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("opt", list(OPTIMIZERS))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_round_trip_is_exact(tmp_path, dtype, opt):
    net = trained(dtype, opt)
    path = tmp_path / "model.npz"
    net.save(path)
    back = fb.Network.load(path)
    assert back.params.dtype == net.params.dtype == np.dtype(dtype)
    assert back.params.tobytes() == net.params.tobytes()  # bit-identical, padding included
    assert back.get_config() == net.get_config()
    assert (back.layer_sizes, back.activations, back.output, back.loss, back.dropout, back.seed, back.init) == \
           ([3, 6, 5, 3], ["tanh", "relu"], "softmax", "cross_entropy", [0.2, 0.0], 3, "auto")
    assert repr(back) == repr(net)
    assert np.array_equal(back.predict_proba(X), net.predict_proba(X))
    assert np.array_equal(back.predict(X), net.predict(X))
    assert back.evaluate(X, Y) == net.evaluate(X, Y)
    if net.optimizer is None:
        assert back.optimizer is None
        return
    assert type(back.optimizer) is type(net.optimizer)
    assert back.optimizer.get_config() == net.optimizer.get_config()
    assert back.optimizer.step_count == net.optimizer.step_count == 10
    for a, b in zip(back.optimizer.state_arrays(), net.optimizer.state_arrays(), strict=True):
        assert a.dtype == b.dtype and a.tobytes() == b.tobytes()
    assert back.optimizer._owner() is back


def test_optimizer_config_from_before_eps_hat_loads_with_torchs_placement():
    # files saved before Adam had eps_hat hold no such key: they trained with eps_hat=False
    cfg = fb.Adam(lr=1e-2, eps=1e-7).get_config()
    assert cfg.pop("eps_hat") is False
    back = from_config(cfg)
    assert type(back) is fb.Adam and back.eps_hat is False and back.eps == 1e-7
    assert from_config(fb.AdamW(eps_hat=True).get_config()).eps_hat is True


@pytest.mark.parametrize("output,loss,k", [("identity", "huber", 2), ("sigmoid", "binary_cross_entropy", 2),
                                           ("identity", "mse", 1)])
def test_round_trip_other_heads_and_no_hidden_layer(tmp_path, output, loss, k):
    for sizes in ([3, 4, k], [3, k]):
        net = fb.Network(sizes, activation="logistic", output=output, loss=loss, dtype=np.float32, seed=11)
        net.save(tmp_path / "m.npz")
        back = fb.Network.load(str(tmp_path / "m.npz"))
        assert back.get_config() == net.get_config()
        assert back.params.tobytes() == net.params.tobytes()
        assert np.array_equal(back.predict(X), net.predict(X))


def test_file_is_plain_arrays_loadable_without_pickle(tmp_path):
    path = tmp_path / "model.npz"
    trained(np.float32, "adam").save(path)
    with np.load(path, allow_pickle=False) as f:
        data = {k: f[k] for k in f.files}
    assert data["format"].item() == "fastbp.Network" and int(data["format_version"]) == 1
    assert json.loads(data["config"].item())["layer_sizes"] == [3, 6, 5, 3]
    assert json.loads(data["optimizer_config"].item())["name"] == "Adam"
    assert all(a.dtype.kind != "O" for a in data.values())


def test_save_uses_the_exact_path_overwrites_and_leaves_no_temporary_files(tmp_path):
    a, b = trained(np.float32, "sgd"), trained(np.float32, "adam")
    path = tmp_path / "weights.bin"  # no .npz appended
    a.save(path)
    b.save(path)
    assert only_files(tmp_path) == ["weights.bin"]
    assert fb.Network.load(path).params.tobytes() == b.params.tobytes()


@pytest.mark.parametrize("opt", ["adam", "sgd-nesterov"])
def test_training_continues_identically_after_load(tmp_path, opt):
    net = trained(np.float64, opt)
    net.save(tmp_path / "m.npz")
    back = fb.Network.load(tmp_path / "m.npz")
    # dropout masks, shuffling and the optimizer all carry on where they stopped
    h1 = net.fit(X, Y, epochs=3, batch_size=5)
    h2 = back.fit(X, Y, epochs=3, batch_size=5)
    assert h1.history == h2.history
    assert net.train_step(X[:7], Y[:7]) == back.train_step(X[:7], Y[:7])
    assert back.params.tobytes() == net.params.tobytes()
    assert back.optimizer.step_count == net.optimizer.step_count == 10 + 15 + 1
    for a, b in zip(back.optimizer.state_arrays(), net.optimizer.state_arrays()):
        assert a.tobytes() == b.tobytes()
    # and the loaded net's optimizer refuses a third network, like any bound optimizer
    with pytest.raises(fb.InputError, match="another network"):
        trained(np.float64, "none").train_step(X, Y, back.optimizer)


# ---- missing and damaged files ----------------------------------------------------------------------------
def test_missing_file(tmp_path):
    path = tmp_path / "nope.npz"
    with pytest.raises(fb.ModelNotFoundError, match=r"no model file at .*nope\.npz") as exc:
        fb.Network.load(path)
    assert isinstance(exc.value, FileNotFoundError)
    assert isinstance(exc.value, ValueError)
    assert isinstance(exc.value, fb.ModelFileError)
    with pytest.raises(FileNotFoundError):
        fb.Network.load(str(path))


@pytest.fixture
def saved(tmp_path):
    path = tmp_path / "model.npz"
    trained(np.float64, "adam").save(path)
    return path


CUTS = [0, 4, 10, 100, 0.25, 0.5, 0.9, -30, -22, -1]


@pytest.mark.parametrize("cut", CUTS)
def test_truncated_file(saved, cut):
    raw = saved.read_bytes()
    n = int(cut * len(raw)) if isinstance(cut, float) else cut % len(raw)
    saved.write_bytes(raw[:n])
    with pytest.raises(fb.ModelFileError, match=r"is truncated or not a fastbp model"):
        fb.Network.load(saved)


@pytest.mark.parametrize("cut", [1, 2, 3])
def test_truncated_to_a_few_bytes_is_a_model_file_error(saved, cut):
    saved.write_bytes(saved.read_bytes()[:cut])
    with pytest.raises(fb.ModelFileError, match=re.escape(repr(str(saved)))):
        fb.Network.load(saved)


def _random_bytes(path):
    data = np.random.default_rng(0).bytes(2000)
    assert not data.startswith((b"PK", b"\x93NUMPY"))
    path.write_bytes(data)
    return path


def _text(path):
    path.write_text("layer_sizes = [3, 6, 3]\nthis is not a model\n")
    return path


@pytest.mark.parametrize("make", [_random_bytes, _text], ids=["random-bytes", "text"])
def test_non_numpy_file_is_a_model_file_error(tmp_path, make):
    path = make(tmp_path / "junk.npz")
    with pytest.raises(fb.ModelFileError, match=r"junk\.npz") as exc:
        fb.Network.load(path)
    assert isinstance(exc.value, ValueError) and not isinstance(exc.value, FileNotFoundError)


@pytest.mark.parametrize("make", [_random_bytes, _text, "cut2"], ids=["random-bytes", "text", "cut-to-2-bytes"])
def test_non_numpy_file_message_does_not_claim_pickled_objects(tmp_path, saved, make):
    if make == "cut2":
        saved.write_bytes(saved.read_bytes()[:2])
        path = saved
    else:
        path = make(tmp_path / "junk.npz")
    with pytest.raises(fb.ModelFileError, match=r"truncated|not a fastbp model") as exc:
        fb.Network.load(path)
    assert "pickled" not in str(exc.value)


def test_npz_that_is_not_a_fastbp_model(tmp_path):
    path = tmp_path / "other.npz"
    np.savez(path, weights=np.ones(3), bias=np.zeros(2))
    with pytest.raises(fb.ModelFileError, match=r"is not a fastbp model \(no 'fastbp.Network' marker\)"):
        fb.Network.load(path)


def test_single_npy_file(tmp_path):
    path = tmp_path / "params.npy"
    np.save(path, np.ones(40))
    with pytest.raises(fb.ModelFileError, match=r"not a fastbp model"):
        fb.Network.load(path)


def test_single_npy_file_message_says_so(tmp_path):
    path = tmp_path / "params.npy"
    np.save(path, np.ones(40))
    with pytest.raises(fb.ModelFileError, match=r"single \.npy array"):
        fb.Network.load(path)


def _rewrite(path, **changes):
    """Rewrite a saved model with some arrays replaced (or dropped, with None)."""
    with np.load(path) as f:
        data = {k: f[k] for k in f.files}
    for k, v in changes.items():
        if v is None:
            data.pop(k)
        else:
            data[k] = v
    with open(path, "wb") as f:  # np.savez(path) would append .npz to other names
        np.savez(f, **data)
    return data


@pytest.mark.parametrize("payload", [np.array([{"layer_sizes": [3, 3]}], dtype=object),
                                     np.array(["a", "b"], dtype=object)], ids=["dict", "strings"])
def test_npz_with_pickled_object_array_is_refused(saved, payload):
    _rewrite(saved, config=payload)
    with pytest.raises(fb.ModelFileError, match=r"contains pickled objects; fastbp models never do"):
        fb.Network.load(saved)


@pytest.mark.parametrize("version", [0, 2, 99])
def test_wrong_format_version(saved, version):
    _rewrite(saved, format_version=np.array(version))
    with pytest.raises(fb.ModelFileError, match=rf"has format version {version}; this fastbp reads 1"):
        fb.Network.load(saved)


def test_missing_format_version(saved):
    _rewrite(saved, format_version=None)
    with pytest.raises(fb.ModelFileError, match=r"has format version -1"):
        fb.Network.load(saved)


@pytest.mark.parametrize("changes", [dict(format_version=np.array("one")), dict(format_version=np.array([1, 1])),
                                     dict(format=np.array(["fastbp.Network", "x"]))],
                         ids=["version-string", "version-array", "format-array"])
def test_malformed_format_fields(saved, changes):
    _rewrite(saved, **changes)
    with pytest.raises(fb.ModelFileError, match=r"format|not a fastbp model|damaged"):
        fb.Network.load(saved)


@pytest.mark.parametrize("params,match", [
    (lambda p: p[:-1], r"parameters have shape \(\d+,\) float64, expected \(\d+,\) float64"),
    (lambda p: np.r_[p, 0.0], r"parameters have shape"),
    (lambda p: p.reshape(1, -1), r"parameters have shape \(1, \d+\)"),
    (lambda p: p.astype(np.float32), r"parameters have shape \(\d+,\) float32, expected \(\d+,\) float64"),
    (lambda p: np.where(np.arange(p.size) == 5, np.nan, p), r"parameters contain NaN or inf"),
    (lambda p: np.where(np.arange(p.size) == 0, -np.inf, p), r"parameters contain NaN or inf"),
], ids=["short", "long", "2-D", "float32", "nan", "inf"])
def test_bad_params(saved, params, match):
    with np.load(saved) as f:
        p = f["params"]
    _rewrite(saved, params=params(p))
    with pytest.raises(fb.ModelFileError, match=match):
        fb.Network.load(saved)


@pytest.mark.parametrize("changes", [
    dict(params=None), dict(config=None), dict(rng=None), dict(shuffle_state=None), dict(optimizer_step=None),
    dict(config=np.array("{not json")), dict(config=np.array('{"layer_sizes": [3, 3]}')),
    dict(config=np.array('[1, 2]')), dict(config=np.array('{"layer_sizes": [3, 0], "activation": [], '
                                                          '"output": "softmax", "loss": "cross_entropy", '
                                                          '"dtype": "float64", "seed": 0, "dropout": [], '
                                                          '"init": "auto"}')),
    dict(shuffle_state=np.array('{"bit_generator": "MT19937"}')), dict(rng=np.array([1, 2], np.uint64)),
    dict(optimizer_config=np.array('{"name": "Adagrad", "lr": 0.1}')),
    dict(optimizer_config=np.array('{"name": "Adam", "lr": -1}')),
], ids=["no-params", "no-config", "no-rng", "no-shuffle", "no-step", "config-not-json", "config-incomplete",
        "config-list", "config-invalid", "shuffle-wrong", "rng-shape", "optimizer-unknown", "optimizer-bad-lr"])
def test_damaged_contents(saved, changes):
    _rewrite(saved, **changes)
    with pytest.raises(fb.ModelFileError, match=r"is damaged or not a fastbp model|parameters"):
        fb.Network.load(saved)


@pytest.mark.parametrize("changes", [dict(optimizer_state_2=None),
                                     dict(optimizer_state_0=None, optimizer_state_1=None, optimizer_state_2=None),
                                     dict(optimizer_step=np.array(10))],
                         ids=["no-state-2", "no-states", "0-d-step"])
def test_missing_optimizer_state_is_a_model_file_error(saved, changes):
    _rewrite(saved, **changes)
    with pytest.raises(fb.ModelFileError):
        fb.Network.load(saved)


@pytest.mark.parametrize("which", ["short", "float32"])
def test_optimizer_state_of_wrong_shape_is_a_model_file_error(saved, which):
    with np.load(saved) as f:
        s0 = f["optimizer_state_0"]
    _rewrite(saved, optimizer_state_0=s0[:-3] if which == "short" else s0.astype(np.float32))
    with pytest.raises(fb.ModelFileError, match=r"optimizer"):
        fb.Network.load(saved)


# ---- atomic save ------------------------------------------------------------------------------------------
def _failing_savez(exc):
    def savez(f, **arrays):
        f.write(b"PK\x03\x04" + b"\0" * 100)  # a partial file...
        raise exc                              # ...then the disk fills up (or the user hits Ctrl-C)
    return savez


@pytest.mark.parametrize("exc", [OSError(28, "No space left on device"), KeyboardInterrupt()],
                         ids=["OSError", "KeyboardInterrupt"])
def test_failed_save_keeps_previous_file_and_leaves_no_temporary(tmp_path, monkeypatch, exc):
    old, new = trained(np.float32, "adam"), trained(np.float32, "sgd", seed=9)
    path = tmp_path / "model.npz"
    old.save(path)
    before = path.read_bytes()
    monkeypatch.setattr(np, "savez", _failing_savez(exc))
    with pytest.raises(type(exc)):
        new.save(path)
    monkeypatch.undo()
    assert only_files(tmp_path) == ["model.npz"]
    assert path.read_bytes() == before
    assert fb.Network.load(path).params.tobytes() == old.params.tobytes()


def test_failed_first_save_leaves_nothing(tmp_path, monkeypatch):
    monkeypatch.setattr(np, "savez", _failing_savez(OSError("disk full")))
    with pytest.raises(OSError, match="disk full"):
        trained(np.float32, "none").save(tmp_path / "model.npz")
    assert only_files(tmp_path) == []


def test_failed_rename_keeps_previous_file_and_leaves_no_temporary(tmp_path, monkeypatch):
    old = trained(np.float32, "adam")
    path = tmp_path / "model.npz"
    old.save(path)
    before = path.read_bytes()

    def replace(src, dst):
        raise PermissionError("rename refused")
    monkeypatch.setattr(os, "replace", replace)
    with pytest.raises(PermissionError):
        trained(np.float32, "sgd", seed=9).save(path)
    monkeypatch.undo()
    assert only_files(tmp_path) == ["model.npz"]
    assert path.read_bytes() == before


# ---- hostile files: sizes are checked against the stored arrays before anything is allocated -----------
def _with_config(path, **changes):
    with np.load(path) as f:
        cfg = json.loads(f["config"].item())
    cfg.update(changes)
    _rewrite(path, config=np.array(json.dumps(cfg)))


def _peak_bytes(fn):
    import tracemalloc   # numpy reports its allocations to tracemalloc
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        fn()
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return peak


@pytest.mark.parametrize("sizes", [[3000, 3000, 3], [55000, 55000, 3], [10 ** 6, 10 ** 6, 1]],
                         ids=["72MB", "24GB", "1e12-params"])
def test_config_claiming_a_bigger_network_than_its_arrays_is_refused_before_allocating(saved, sizes):
    _with_config(saved, layer_sizes=sizes, activation=["relu"], dropout=[0.0], norm=None)

    def load():
        with pytest.raises(fb.ModelFileError, match=r"parameters have shape \(\d+,\) float64, expected"):
            fb.Network.load(saved)
    assert _peak_bytes(load) < 4 << 20   # the file's own arrays are a few kB; the claim is 72 MB and up


def _forge_header(path, key, shape):
    """Rewrite the archive with member ``key``'s .npy header claiming ``shape`` (its data unchanged)."""
    import io
    import zipfile
    with zipfile.ZipFile(path) as z:
        members = {i.filename: z.read(i) for i in z.infolist()}
    raw = members[key + ".npy"]
    fp = io.BytesIO(raw)
    version = np.lib.format.read_magic(fp)
    _, fortran, dtype = np.lib.format.read_array_header_1_0(fp) if version == (1, 0) else \
        np.lib.format.read_array_header_2_0(fp)
    data = raw[fp.tell():]
    out = io.BytesIO()
    np.lib.format.write_array_header_2_0(out, {"descr": np.lib.format.dtype_to_descr(dtype),
                                               "fortran_order": fortran, "shape": shape})
    members[key + ".npy"] = out.getvalue() + data
    with zipfile.ZipFile(path, "w") as z:
        for name, b in members.items():
            z.writestr(name, b)


@pytest.mark.parametrize("key", ["params", "norm_state", "optimizer_state_1", "rng", "config"])
@pytest.mark.parametrize("shape", [(10 ** 12,), (10 ** 5, 10 ** 5)], ids=["1e12", "1e10"])
def test_array_header_claiming_more_data_than_the_file_holds_is_refused(saved, key, shape):
    _forge_header(saved, key, shape)

    def load():
        with pytest.raises(fb.ModelFileError, match=rf"the array '{key}' claims .* but the file holds \d+ bytes"):
            fb.Network.load(saved)
    assert _peak_bytes(load) < 4 << 20


def test_optimizer_state_header_of_the_wrong_size_is_refused_before_reading(saved):
    _forge_header(saved, "optimizer_state_0", (5,))   # claims less than it holds: consistent, but wrong
    with pytest.raises(fb.ModelFileError, match=r"optimizer state 0 has shape \(5,\) float64, expected"):
        fb.Network.load(saved)


def test_header_check_keeps_old_files_loading(saved):
    back = fb.Network.load(saved)
    with np.load(saved) as f:
        assert np.array_equal(back.params, f["params"]) and np.array_equal(back.norm_state, f["norm_state"])
