"""fastbp.datasets: exact round trips of IDX, CSV and NPZ files written here, every kind of
damaged file, fetch's cache and atomicity over file:// URLs (never the network), and the
examples/mnist.py smoke test on a tiny fake MNIST."""

import gzip
import hashlib
import importlib.util
import os
import pathlib
import re
import struct
import subprocess
import sys
import urllib.request

import numpy as np
import pytest

import fastbp as fb
from fastbp import datasets
from fastbp.datasets import fetch, fetch_mnist, load_csv, load_fashion_mnist, load_mnist, load_npz, read_idx

EXAMPLE = pathlib.Path(__file__).resolve().parents[1] / "examples" / "mnist.py"
CODES = {np.uint8: 0x08, np.int8: 0x09, np.int16: 0x0B, np.int32: 0x0C, np.float32: 0x0D, np.float64: 0x0E}


def idx_bytes(a, code=None):
    """An IDX image of ``a``, written independently of the reader."""
    a = np.asarray(a)
    code = CODES[a.dtype.type] if code is None else code
    head = bytes([0, 0, code, a.ndim]) + struct.pack(f">{a.ndim}I", *a.shape)
    return head + a.astype(a.dtype.newbyteorder(">")).tobytes()


def write(path, data, gz=False):
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


def fake_mnist(folder, n_train=5, n_test=3, gz_test=True, seed=0):
    """A tiny MNIST folder: plain train files, gzipped test files; returns the arrays."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    for kind, stem, n, gz in (("train", "train", n_train, False), ("test", "t10k", n_test, gz_test)):
        images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        images[0, 0, :2] = (0, 255)
        labels = (np.arange(n) % 10).astype(np.uint8)
        suffix = ".gz" if gz else ""
        write(folder / f"{stem}-images-idx3-ubyte{suffix}", idx_bytes(images), gz)
        write(folder / f"{stem}-labels-idx1-ubyte{suffix}", idx_bytes(labels), gz)
        out[kind] = images, labels
    return out


def raises_data_error(match):
    """The error is a DataFileError, hence an InputError and a ValueError."""
    return pytest.raises(fb.DataFileError, match=match)


# ---- IDX -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("gz", [False, True], ids=["plain", "gzip"])
@pytest.mark.parametrize("dtype", list(CODES), ids=lambda t: np.dtype(t).name)
def test_idx_round_trip_every_type(tmp_path, dtype, gz):
    rng = np.random.default_rng(1)
    if np.dtype(dtype).kind == "f":
        a = rng.standard_normal((3, 4, 5)).astype(dtype)
        a[0, 0, :3] = (np.finfo(dtype).max, -np.finfo(dtype).tiny, -0.0)
    else:
        info = np.iinfo(dtype)
        a = rng.integers(info.min, info.max, (3, 4, 5), endpoint=True).astype(dtype)
        a[0, 0, :2] = (info.min, info.max)
    got = read_idx(write(tmp_path / "a.idx", idx_bytes(a), gz))
    assert got.dtype == np.dtype(dtype) and got.dtype.isnative
    assert got.shape == a.shape and np.array_equal(got, a)
    assert np.array_equal(np.signbit(got), np.signbit(a))        # -0.0 survives
    got[0, 0, 0] = 1                                              # writable


@pytest.mark.parametrize("shape", [(7,), (2, 3), (1, 2, 3, 4), (0, 5)])
def test_idx_shapes(tmp_path, shape):
    a = np.arange(int(np.prod(shape)), dtype=np.int32).reshape(shape)
    got = read_idx(write(tmp_path / "a", idx_bytes(a)))
    assert got.shape == shape and np.array_equal(got, a)


def test_idx_gzip_is_detected_by_content_not_name(tmp_path):
    a = np.arange(12, dtype=np.uint8).reshape(3, 4)
    assert np.array_equal(read_idx(write(tmp_path / "plain.gz", idx_bytes(a))), a)
    assert np.array_equal(read_idx(write(tmp_path / "packed.idx", idx_bytes(a), gz=True)), a)


@pytest.mark.parametrize("gz", [False, True], ids=["plain", "gzip"])
def test_idx_truncated(tmp_path, gz):
    data = idx_bytes(np.zeros((4, 3), np.float32))
    p = write(tmp_path / "short.idx", data[:-1], gz)
    with raises_data_error(r"short\.idx: truncated: .*shape \(4, 3\) of float32 \(48 data bytes\) but only 47"):
        read_idx(p)
    p = write(tmp_path / "head.idx", data[:9])     # 2 dims need 12 header bytes
    with raises_data_error(r"head\.idx: truncated IDX header: 2 dimensions need 12"):
        read_idx(p)
    with raises_data_error(r"tiny\.idx: not an IDX file: 2 bytes"):
        read_idx(write(tmp_path / "tiny.idx", b"\0\0"))
    with raises_data_error("0 bytes"):
        read_idx(write(tmp_path / "empty.idx", b""))


def test_idx_bad_magic_unknown_code_trailing_bytes(tmp_path):
    data = idx_bytes(np.arange(6, dtype=np.uint8))
    with raises_data_error(r"m\.idx: not an IDX file: bad magic number 01 00 08 01"):
        read_idx(write(tmp_path / "m.idx", b"\x01" + data[1:]))
    with raises_data_error(r"c\.idx: unknown IDX type code 0x0A"):
        read_idx(write(tmp_path / "c.idx", data[:2] + b"\x0a" + data[3:]))
    with raises_data_error(r"t\.idx: 3 unexpected bytes after the data of shape \(6,\)"):
        read_idx(write(tmp_path / "t.idx", data + b"abc", gz=True))


def test_idx_corrupt_gzip_and_missing_file(tmp_path):
    packed = bytearray(gzip.compress(idx_bytes(np.arange(1000, dtype=np.int32))))
    with raises_data_error(r"cut\.gz: corrupt gzip data"):
        read_idx(write(tmp_path / "cut.gz", bytes(packed[:len(packed) // 2])))
    packed[-8] ^= 0xFF                             # the CRC-32 trailer
    with raises_data_error(r"crc\.gz: corrupt gzip data"):
        read_idx(write(tmp_path / "crc.gz", bytes(packed)))
    with pytest.raises(FileNotFoundError, match="nothere"):
        read_idx(tmp_path / "nothere")


def test_data_file_error_is_an_input_error():
    assert issubclass(fb.DataFileError, fb.InputError) and issubclass(fb.DataFileError, ValueError)


# ---- MNIST -----------------------------------------------------------------------------------------------
def test_load_mnist_tiny_folder(tmp_path):
    arrays = fake_mnist(tmp_path)
    for kind in ("train", "test"):                 # train plain, test gzipped
        images, labels = arrays[kind]
        X, y = load_mnist(tmp_path, kind)
        assert X.shape == (len(images), 784) and X.dtype == np.float32 and X.flags.c_contiguous
        assert np.array_equal(X, images.reshape(len(images), -1).astype(np.float32) / np.float32(255))
        assert X.min() == 0.0 and X.max() == 1.0
        assert y.dtype == np.int64 and np.array_equal(y, labels)
    X, y = load_mnist(str(tmp_path), "train", normalize=False, dtype=np.float64)
    assert X.dtype == np.float64 and np.array_equal(X, arrays["train"][0].reshape(5, -1))
    X, _ = load_mnist(tmp_path, "train", normalize=False, dtype=np.uint8)
    assert np.array_equal(X, arrays["train"][0].reshape(5, -1))


def test_load_mnist_default_folder_dotted_names_and_fashion_alias(tmp_path, monkeypatch):
    monkeypatch.setenv("FASTBP_DATA", str(tmp_path))
    arrays = fake_mnist(tmp_path / "mnist")
    assert np.array_equal(load_mnist(kind="test")[1], arrays["test"][1])
    folder = tmp_path / "fashion-mnist"
    folder.mkdir()
    images = np.full((2, 28, 28), 51, np.uint8)
    write(folder / "train-images.idx3-ubyte", idx_bytes(images))
    write(folder / "train-labels.idx1-ubyte.gz", idx_bytes(np.array([9, 0], np.uint8)), gz=True)
    X, y = load_fashion_mnist()
    assert np.allclose(X, 0.2) and y.tolist() == [9, 0]


def test_load_mnist_mislabelled(tmp_path):
    fake_mnist(tmp_path)
    labels = np.array([1, 2, 12, 3, 200], np.uint8)
    write(tmp_path / "train-labels-idx1-ubyte", idx_bytes(labels))
    with raises_data_error(r"train-labels-idx1-ubyte: mislabelled: label 12 at index 2 is outside 0\.\.9 "
                           r"\(2 of 5 labels are\)"):
        load_mnist(tmp_path, "train")
    assert load_mnist(tmp_path, "test")[0].shape == (3, 784)     # the other split is unaffected


def test_load_mnist_count_mismatch_and_wrong_arrays(tmp_path):
    fake_mnist(tmp_path)
    labels_path = tmp_path / "train-labels-idx1-ubyte"
    write(labels_path, idx_bytes(np.arange(4, dtype=np.uint8)))
    with raises_data_error(r"train-images-idx3-ubyte holds 5 images but .*train-labels-idx1-ubyte holds 4 labels"):
        load_mnist(tmp_path, "train")
    write(labels_path, idx_bytes(np.zeros((5, 1), np.uint8)))
    with raises_data_error("labels must be a 1-D ubyte IDX array, got 2-D uint8"):
        load_mnist(tmp_path, "train")
    write(labels_path, idx_bytes(np.zeros(5, np.uint8)))
    write(tmp_path / "train-images-idx3-ubyte", idx_bytes(np.zeros((5, 28, 28), np.float32)))
    with raises_data_error("images must be a 3-D ubyte IDX array .* got 3-D float32"):
        load_mnist(tmp_path, "train")
    write(tmp_path / "train-images-idx3-ubyte", idx_bytes(np.zeros((5, 784), np.uint8)))
    with raises_data_error("got 2-D uint8"):
        load_mnist(tmp_path, "train")
    with pytest.raises(fb.InputError, match="kind must be 'train' or 'test'"):
        load_mnist(tmp_path, "validation")
    with pytest.raises(fb.InputError, match="floating-point"):
        load_mnist(tmp_path, "test", dtype=np.int32)


def test_load_mnist_missing_files_say_how_to_get_them(tmp_path, monkeypatch):
    with pytest.raises(FileNotFoundError) as e:
        load_mnist(tmp_path, "train")
    text = str(e.value)
    assert f"MNIST train files not found in {tmp_path}" in text
    assert "train-images-idx3-ubyte[.gz] and train-labels-idx1-ubyte[.gz]" in text
    assert "https://ossci-datasets.s3.amazonaws.com/mnist/" in text
    assert "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/" in text
    assert f"fetch_mnist({str(tmp_path)!r})" in text
    (tmp_path / "t10k-images-idx3-ubyte").write_bytes(idx_bytes(np.zeros((1, 28, 28), np.uint8)))
    with pytest.raises(FileNotFoundError, match=r"no t10k-labels-idx1-ubyte\[\.gz\]\.") as e:
        load_fashion_mnist(tmp_path, "test")
    assert "Fashion-MNIST test files" in str(e.value) and "fashion=True" in str(e.value)
    monkeypatch.setenv("FASTBP_DATA", str(tmp_path))              # the default folder needs no argument
    with pytest.raises(FileNotFoundError, match=r"fetch_mnist\(\)\"") as e:
        load_mnist()
    assert f"not found in {tmp_path / 'mnist'}" in str(e.value)


# ---- CSV -------------------------------------------------------------------------------------------------
def test_csv_round_trip_exact(tmp_path):
    rng = np.random.default_rng(2)
    A = rng.standard_normal((9, 4)) * 10.0 ** rng.integers(-8, 8, (9, 4))
    lines = ["a,b,c,target"] + [",".join(repr(float(v)) for v in row) for row in A]
    p = tmp_path / "d.csv"
    p.write_text("\n".join(lines) + "\n")
    X, y = load_csv(p, dtype=np.float64)
    assert np.array_equal(X, A[:, :3]) and np.array_equal(y, A[:, 3]) and y.dtype == np.float64
    X, y = load_csv(p)                                            # float32 by default
    assert X.dtype == y.dtype == np.float32 and np.array_equal(X, A[:, :3].astype(np.float32))
    X, y, classes = load_csv(p, target="b", dtype=np.float64, return_classes=True)
    assert np.array_equal(X, A[:, [0, 2, 3]]) and np.array_equal(y, A[:, 1]) and classes is None
    X, y = load_csv(p, target=0, header=True, dtype=np.float64)
    assert np.array_equal(y, A[:, 0]) and np.array_equal(X, A[:, 1:])


def test_csv_header_detection_delimiters_gzip_blank_lines(tmp_path):
    body = "1;2;0\n\n3; 4 ;1\n5;6;1\n\n"
    p = write(tmp_path / "semi.txt", body.encode(), gz=True)
    X, y = load_csv(p, delimiter=";", header="auto")               # no header: the first row is data
    assert X.tolist() == [[1, 2], [3, 4], [5, 6]] and y.tolist() == [0, 1, 1]
    p = tmp_path / "bom.csv"
    p.write_bytes("\ufeffx,y,label\n1,2,3\n".encode())            # byte-order mark dropped
    X, y = load_csv(p, target="label")
    assert X.tolist() == [[1, 2]] and y.tolist() == [3]
    p = tmp_path / "numnames.csv"                                  # numeric feature names, text target name
    p.write_text("1,2,label\n5,6,0\n7,8,1\n")
    X, y = load_csv(p)
    assert X.tolist() == [[5, 6], [7, 8]] and y.tolist() == [0, 1]
    X, y = load_csv(p, header=False, classification=True)         # forced: "label" becomes a class
    assert X.shape == (3, 2) and sorted(y.tolist()) == [0, 1, 2]


def test_csv_string_and_numeric_class_labels(tmp_path):
    p = tmp_path / "iris.csv"
    p.write_text("sl,sw,species\n1,2,setosa\n3,4, virginica\n5,6,setosa\n7,8,versicolor\n")
    X, y, classes = load_csv(p, return_classes=True)
    assert y.dtype == np.int64 and y.tolist() == [0, 2, 0, 1]
    assert classes.tolist() == ["setosa", "versicolor", "virginica"]
    assert classes[y].tolist() == ["setosa", "virginica", "setosa", "versicolor"]
    X2, y2 = load_csv(p)                                          # classification detected
    assert np.array_equal(X2, X) and np.array_equal(y2, y)
    with raises_data_error(r"iris\.csv, line 2, target column 3 \('species'\): 'setosa' is not a number "
                           r"\(pass classification=True"):
        load_csv(p, classification=False)
    q = tmp_path / "num.csv"
    q.write_text("1,5\n2,3\n3,1\n4,3\n")
    X, y, classes = load_csv(q, classification=True, return_classes=True)
    assert y.tolist() == [2, 1, 0, 1] and classes.tolist() == [1, 3, 5] and classes.dtype == np.int64
    q.write_text("1,0\n2,1\n3,2\n")                               # labels 0..k-1 keep their values
    assert load_csv(q, classification=True)[1].tolist() == [0, 1, 2]
    q.write_text("a,b,c\n1,2,x\n3,4, \n")
    with raises_data_error(r"line 3, target column 3 \('c'\): empty class label"):
        load_csv(q)


def test_csv_ragged_and_non_numeric_cells(tmp_path):
    p = tmp_path / "r.csv"
    p.write_text("a,b,c\n1,2,3\n4,5\n")
    with raises_data_error(r"r\.csv, line 3: 2 fields, expected 3 as on line 1"):
        load_csv(p)
    p.write_text("a,b,c\n1,2,3\n4,5,6,7\n")
    with raises_data_error("line 3: 4 fields, expected 3"):
        load_csv(p)
    p.write_text("a,b,c\n1,2,3\n\n4,oops,6\n")
    with raises_data_error(r"r\.csv, line 4, column 2 \('b'\): 'oops' is not a number"):
        load_csv(p)
    p.write_text("1,2,3\n4,5,6\n7,,9\n")
    with raises_data_error(r"line 3, column 2: empty cell"):
        load_csv(p)


def test_csv_unclosed_quote_is_an_error_not_lost_lines(tmp_path):
    # a quoted field may span lines: an unclosed one would swallow the rest of the file into one label
    p = tmp_path / "q.csv"
    p.write_text("x1,x2,label\n" + "".join(f"{i},{i + 1},cat\n" for i in range(3)) + '3,4,"dog\n'
                 + "".join(f"{i},{i + 1},dog\n" for i in range(5, 50)))
    with raises_data_error(r"q\.csv: malformed CSV \(unexpected end of data\)"):
        load_csv(p)
    p.write_text('x1,x2,label\n1,2,"cat"s\n')   # text after a closing quote
    with raises_data_error(r"q\.csv: malformed CSV"):
        load_csv(p)
    p.write_text('x1,x2,label\n1,2,"cat"\n3,4,"dog, big"\n')   # quoting done right still reads
    X, y, classes = load_csv(p, return_classes=True)
    assert X.shape == (2, 2) and list(classes) == ["cat", "dog, big"]


def test_csv_error_line_in_a_later_chunk(tmp_path, monkeypatch):
    monkeypatch.setattr(datasets, "_CSV_CHUNK", 4)
    rows = [f"{i},{i + 0.5},{i % 3}" for i in range(10)]
    p = tmp_path / "long.csv"
    p.write_text("\n".join(["x1,x2,y"] + rows) + "\n")
    X, y = load_csv(p, dtype=np.float64)
    assert np.array_equal(X[:, 1], np.arange(10) + 0.5) and np.array_equal(y, np.arange(10) % 3)
    rows[8] = "8,bad,2"
    p.write_text("\n".join(["x1,x2,y"] + rows) + "\n")
    with raises_data_error(r"line 10, column 2 \('x2'\): 'bad'"):
        load_csv(p)


def test_csv_empty_files_and_bad_targets(tmp_path):
    p = tmp_path / "e.csv"
    p.write_text("")
    with raises_data_error(r"e\.csv: the file is empty"):
        load_csv(p)
    p.write_text("\n\n")
    with raises_data_error("the file is empty"):
        load_csv(p)
    p.write_text("a,b\n")
    with raises_data_error("no data rows after the header on line 1"):
        load_csv(p, header=True)
    p.write_text("a\n1\n")
    with raises_data_error("1 column; need at least one feature column"):
        load_csv(p)
    p.write_text("a,b,c\n1,2,3\n")
    with raises_data_error(r"target column 3 is out of range for 3 columns"):
        load_csv(p, target=3)
    with raises_data_error(r"target column -4 is out of range"):
        load_csv(p, target=-4)
    with raises_data_error(r"no column named 'd' in the header \['a', 'b', 'c'\]"):
        load_csv(p, target="d")
    with pytest.raises(fb.InputError, match="needs header=True"):
        load_csv(p, target="c", header=False)
    with pytest.raises(fb.InputError, match="header must be"):
        load_csv(p, header="yes")
    p.write_bytes(b"a,b\n\xff\xfe,1\n")
    with raises_data_error("not a UTF-8 text file"):
        load_csv(p)
    with pytest.raises(FileNotFoundError):
        load_csv(tmp_path / "none.csv")


# ---- NPZ -------------------------------------------------------------------------------------------------
def test_npz_round_trip_and_keys(tmp_path):
    X = np.arange(12, dtype=np.float32).reshape(4, 3)
    y = np.array([0, 1, 1, 0])
    np.savez(tmp_path / "d.npz", X=X, y=y, extra=np.ones(2))
    gX, gy = load_npz(tmp_path / "d.npz")
    assert gX.dtype == X.dtype and np.array_equal(gX, X) and np.array_equal(gy, y)
    np.savez_compressed(tmp_path / "c.npz", images=X, labels=y)
    gX, gy = load_npz(tmp_path / "c.npz", x_key="images", y_key="labels")
    assert np.array_equal(gX, X) and np.array_equal(gy, y)
    gX, gy = load_npz(tmp_path / "c.npz", x_key="images", y_key=None)
    assert gy is None and np.array_equal(gX, X)
    with raises_data_error(r"c\.npz: no array named 'X'; the archive holds \['images', 'labels'\]"):
        load_npz(tmp_path / "c.npz")
    np.savez(tmp_path / "m.npz", X=X, y=y[:3])
    with raises_data_error(r"'X' has shape \(4, 3\) but 'y' has shape \(3,\)"):
        load_npz(tmp_path / "m.npz")


def test_npz_refuses_pickles_and_other_files(tmp_path):
    np.savez(tmp_path / "p.npz", X=np.zeros((2, 2)), y=np.array([{"a": 1}, None], dtype=object))
    with raises_data_error(r"p\.npz: array 'y' holds pickled Python objects"):
        load_npz(tmp_path / "p.npz")
    np.save(tmp_path / "a.npy", np.zeros(3))
    with raises_data_error(r"a\.npy: a single-array \.npy file, not an \.npz archive"):
        load_npz(tmp_path / "a.npy")
    (tmp_path / "t.npz").write_text("X,y\n1,2\n")
    with raises_data_error(r"t\.npz: not an \.npz archive"):
        load_npz(tmp_path / "t.npz")
    np.savez(tmp_path / "full.npz", X=np.zeros((50, 50)), y=np.zeros(50))
    data = (tmp_path / "full.npz").read_bytes()
    (tmp_path / "cut.npz").write_bytes(data[:len(data) // 2])
    with raises_data_error(r"cut\.npz: damaged \.npz archive"):
        load_npz(tmp_path / "cut.npz")
    with pytest.raises(FileNotFoundError):
        load_npz(tmp_path / "none.npz")


# ---- fetch -----------------------------------------------------------------------------------------------
def source(tmp_path, data=b"some bytes\x00\xff" * 1000):
    src = tmp_path / "src" / "blob.bin"
    src.parent.mkdir(exist_ok=True)
    src.write_bytes(data)
    return src, src.as_uri(), hashlib.sha256(data).hexdigest()


def no_network(*args, **kwargs):
    raise AssertionError("fetch opened a URL although the cached file was good")


def test_fetch_downloads_then_uses_the_cache(tmp_path, monkeypatch):
    src, url, digest = source(tmp_path)
    cache = tmp_path / "cache"
    path = fetch(url, cache, sha256=digest.upper())
    assert path == os.path.join(cache, "blob.bin") and pathlib.Path(path).read_bytes() == src.read_bytes()
    assert os.listdir(cache) == ["blob.bin"]
    src.unlink()
    monkeypatch.setattr(urllib.request, "urlopen", no_network)
    assert fetch(url, cache, sha256=digest) == path              # checksum matches: no download
    assert fetch(url, cache) == path                              # no checksum: present is enough
    assert fetch("file:///elsewhere/x.bin", cache, filename="blob.bin") == path


def test_fetch_default_folder_and_filename(tmp_path, monkeypatch):
    monkeypatch.setenv("FASTBP_DATA", str(tmp_path / "home"))
    src, url, _ = source(tmp_path)
    assert datasets.get_data_home() == str(tmp_path / "home")
    path = fetch(url, filename="renamed.bin")
    assert path == str(tmp_path / "home" / "renamed.bin") and pathlib.Path(path).read_bytes() == src.read_bytes()
    with pytest.raises(fb.InputError, match="64 hexadecimal digits"):
        fetch(url, sha256="abc")
    with pytest.raises(fb.InputError, match="plain file name"):
        fetch(url, filename="../x")


def test_fetch_checksum_mismatch_leaves_nothing(tmp_path):
    src, url, digest = source(tmp_path)
    cache = tmp_path / "cache"
    wrong = "0" * 64
    with raises_data_error(f"checksum mismatch for {url}: expected sha256 {wrong}, got {digest}; "
                           f"the download was discarded"):
        fetch(url, cache, sha256=wrong)
    assert os.listdir(cache) == []
    (cache / "blob.bin").write_bytes(b"stale")                   # a bad cached copy is replaced
    assert pathlib.Path(fetch(url, cache, sha256=digest)).read_bytes() == src.read_bytes()
    assert os.listdir(cache) == ["blob.bin"]


def test_fetch_is_atomic(tmp_path, monkeypatch):
    src, url, _ = source(tmp_path)
    cache = tmp_path / "cache"
    cache.mkdir()
    dest = cache / "blob.bin"
    dest.write_bytes(b"previous version")
    seen = []

    class Broken:
        """Gives one block, then fails like a dropped connection."""
        def __init__(self):
            self.calls = 0

        def read(self, n):
            self.calls += 1
            if self.calls == 1:
                return b"partial"
            # mid-download: the data goes to a hidden temp file, the target is untouched
            seen.append((sorted(os.listdir(cache)), dest.read_bytes()))
            raise ConnectionResetError("connection reset")

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

    monkeypatch.setattr(urllib.request, "urlopen", lambda url, timeout: Broken())
    with pytest.raises(OSError, match=f"downloading {url} failed"):
        fetch(url, cache, sha256="1" * 64)
    (names, content), = seen
    tmp, target = names
    assert target == "blob.bin" and tmp.startswith(".blob.bin.") and tmp.endswith(".part")
    assert content == b"previous version"
    assert os.listdir(cache) == ["blob.bin"] and dest.read_bytes() == b"previous version"
    monkeypatch.undo()
    with pytest.raises(OSError, match="downloading file:.*missing.bin failed"):
        fetch(src.parent.as_uri() + "/missing.bin", cache)
    assert os.listdir(cache) == ["blob.bin"]


def test_fetch_mnist_asks_for_the_four_files_with_checksums(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(datasets, "fetch", lambda url, folder, sha256: calls.append((url, folder, sha256)))
    monkeypatch.setenv("FASTBP_DATA", str(tmp_path))
    assert fetch_mnist() == str(tmp_path / "mnist")
    assert fetch_mnist(tmp_path / "f", fashion=True) == str(tmp_path / "f")
    names = ["train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz",
             "t10k-labels-idx1-ubyte.gz"]
    assert [c[0] for c in calls] == ([datasets.MNIST_URL + n for n in names]
                                     + [datasets.FASHION_MNIST_URL + n for n in names])
    assert [c[1] for c in calls] == [str(tmp_path / "mnist")] * 4 + [str(tmp_path / "f")] * 4
    assert len({c[2] for c in calls}) == 8 and all(len(c[2]) == 64 and int(c[2], 16) for c in calls)


# ---- synthetic data: make_spirals, make_xor, make_teacher ---------------------------------------------
@pytest.mark.parametrize("n", [2, 7, 200])
def test_make_spirals_two_arms_turned_by_half_a_turn(n):
    X, y = datasets.make_spirals(n, noise=0.0, seed=3)
    assert X.shape == (n, 2) and X.dtype == np.float32 and y.dtype == np.int64
    assert y.tolist() == [0] * (n // 2) + [1] * (n - n // 2)
    n0 = n // 2
    np.testing.assert_array_equal(X[n0:2 * n0], -X[:n0])          # class 1 is class 0 turned by 180 degrees
    r = np.hypot(X[:, 0], X[:, 1])
    assert np.all((r >= 0.05 - 1e-6) & (r <= 1 + 1e-6))          # r = sqrt(U(0.0025, 1))
    theta = 2 * np.pi * 2.0 * r[:n0]                             # on the arm r (cos 2 pi turns r, sin ...)
    np.testing.assert_allclose(X[:n0], np.c_[r[:n0] * np.cos(theta), r[:n0] * np.sin(theta)], atol=1e-6)


def test_make_xor_labels_are_the_sign_of_the_product():
    X, y = datasets.make_xor(500, noise=0.0, seed=1)
    assert X.shape == (500, 2) and X.dtype == np.float32 and y.dtype == np.int64
    np.testing.assert_array_equal(y, (X[:, 0] * X[:, 1] > 0).astype(np.int64))
    assert np.all(np.abs(X) <= 1) and 150 < y.sum() < 350
    Xn, yn = datasets.make_xor(500, noise=0.2, seed=1)
    np.testing.assert_array_equal(yn, y)                          # labels of the points before the noise
    assert 0.1 < np.std(Xn - X) < 0.3


def test_make_teacher_is_the_documented_network():
    """A NumPy twin of the docstring's formula: X first, then W1 ~ N(0, 4/d), then W2 ~ N(0, 1/32)."""
    n, d, k, seed = 300, 7, 3, 5
    rng = np.random.default_rng(seed)
    X_ref = rng.standard_normal((n, d), dtype=np.float32)
    W1 = rng.standard_normal((d, 32)) * 2.0 / np.sqrt(d)
    W2 = rng.standard_normal((32, k)) / np.sqrt(32)
    Z = np.tanh(X_ref @ W1) @ W2
    X, y = datasets.make_teacher(n, d, k, "classification", seed)
    np.testing.assert_array_equal(X, X_ref)
    np.testing.assert_array_equal(y, Z.argmax(axis=1))
    assert y.dtype == np.int64 and len(np.unique(y)) == k
    Xr, T = datasets.make_teacher(n, d, k, "regression", seed)
    np.testing.assert_array_equal(Xr, X)
    assert T.shape == (n, k) and T.dtype == np.float32
    np.testing.assert_allclose(T, (Z - Z.mean(axis=0)) / Z.std(axis=0), rtol=1e-6, atol=1e-6)


def test_synthetic_sets_are_seeded():
    for make, args in [(datasets.make_spirals, (50,)), (datasets.make_xor, (50,)),
                       (datasets.make_teacher, (50, 4, 3))]:
        (X1, y1), (X2, y2) = make(*args, seed=11), make(*args, seed=11)
        np.testing.assert_array_equal(X1, X2)
        np.testing.assert_array_equal(y1, y2)
        assert not np.array_equal(X1, make(*args, seed=12)[0]), make.__name__


def test_bench_workload_data_is_make_teacher():
    """One teacher for the bench, asv and the command line: a workload's data is make_teacher with its shapes."""
    from fastbp import bench
    for name, spec in bench.WORKLOADS.items():
        X, y = bench.make_data(name, quick=True)
        task = "classification" if spec["loss"] == "cross_entropy" else "regression"
        Xt, yt = datasets.make_teacher(bench.QUICK_SAMPLES[name], spec["layers"][0], spec["layers"][-1], task, 1234)
        np.testing.assert_array_equal(X, Xt)
        np.testing.assert_array_equal(y, yt)


@pytest.mark.parametrize("call, words", [
    (lambda: datasets.make_spirals(1), "n_samples must be an integer >= 2"),
    (lambda: datasets.make_spirals(10, turns=0), "turns must be a finite number in (0.0"),
    (lambda: datasets.make_spirals(10, noise=-1.0), "noise must be a finite number"),
    (lambda: datasets.make_xor(0), "n_samples must be an integer >= 1"),
    (lambda: datasets.make_xor(10, noise=float("nan")), "noise must be a finite number"),
    (lambda: datasets.make_teacher(10, 0, 2), "n_features must be an integer >= 1"),
    (lambda: datasets.make_teacher(10, 3, 2.5), "n_outputs must be an integer >= 1"),
    (lambda: datasets.make_teacher(10, 3, 2, task="regresion"), "unknown task 'regresion'"),
])
def test_synthetic_sets_refuse_bad_arguments(call, words):
    with pytest.raises(fb.InputError, match=re.escape(words)):
        call()


# ---- examples/mnist.py -----------------------------------------------------------------------------------
def run_example(tmp_path, *args):
    env = dict(os.environ, MPLBACKEND="Agg", FASTBP_DATA=str(tmp_path / "home"))
    return subprocess.run([sys.executable, str(EXAMPLE), *args], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=600)


def test_mnist_example_trains_on_a_tiny_fake_mnist(tmp_path):
    fake_mnist(tmp_path / "data", n_train=64, n_test=32)
    res = run_example(tmp_path, "--quick", "--data", str(tmp_path / "data"), "--out", str(tmp_path / "out"))
    assert res.returncode == 0, res.stdout + res.stderr
    assert "64 training and 32 test images" in res.stdout
    assert "epoch 1/1" in res.stdout and "test accuracy" in res.stdout
    png = tmp_path / "out" / "mnist_curves.png"
    if importlib.util.find_spec("matplotlib") is not None:
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    else:
        assert "matplotlib is not installed" in res.stdout and not png.exists()


def test_mnist_example_without_data_says_how_to_get_it(tmp_path):
    (tmp_path / "empty").mkdir()
    res = run_example(tmp_path, "--data", str(tmp_path / "empty"), "--out", str(tmp_path / "out"))
    assert res.returncode == 0, res.stdout + res.stderr
    assert "MNIST is not available" in res.stdout
    assert "from fastbp.datasets import fetch_mnist; fetch_mnist(" in res.stdout
    assert "https://ossci-datasets.s3.amazonaws.com/mnist/" in res.stdout
    assert not (tmp_path / "out").exists()


def test_fetched_files_get_the_mode_a_plain_open_would(tmp_path):
    # mkstemp creates 0600 files; a download is data for every user a plain open() would let read it
    src, url, digest = source(tmp_path)
    old = os.umask(0o022)
    try:
        path = fetch(url, tmp_path / "cache", sha256=digest)
    finally:
        os.umask(old)
    assert os.stat(path).st_mode & 0o777 == 0o644
