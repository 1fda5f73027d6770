"""Data for fastbp: IDX (MNIST, Fashion-MNIST), CSV and NPZ readers, a cached download, and the
seeded synthetic sets ``make_spirals``, ``make_xor`` and ``make_teacher`` (from ``fastbp._synthetic``).

NumPy and the standard library only. Every damaged or inconsistent file raises
:class:`fastbp.DataFileError` (a ``ValueError``) naming the file and the problem; a missing
file raises ``FileNotFoundError``; a bad argument raises :class:`fastbp.InputError`.

    from fastbp.datasets import fetch_mnist, load_mnist
    folder = fetch_mnist()                     # once; cached under ~/.cache/fastbp/mnist
    X, y = load_mnist(folder, "train")         # (60000, 784) float32 in [0, 1], int64 labels
"""

import csv
import gzip
import hashlib
import io
import math
import os
import struct
import tempfile
import urllib.error
import urllib.parse
import urllib.request
import zipfile
import zlib

import numpy as np

from ._synthetic import make_spirals, make_teacher, make_xor
from ._io import new_file_mode
from .errors import DataFileError, InputError

MNIST_URL = "https://ossci-datasets.s3.amazonaws.com/mnist/"
FASHION_MNIST_URL = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"

# IDX type byte -> big-endian element type
IDX_DTYPES = {0x08: np.dtype(">u1"), 0x09: np.dtype(">i1"), 0x0B: np.dtype(">i2"),
              0x0C: np.dtype(">i4"), 0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}

# (images, labels) file stems per split; the same names serve MNIST and Fashion-MNIST
_MNIST_STEMS = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
                "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}

# SHA-256 of the four .gz files as distributed (the LeCun originals, which the ossci mirror
# serves unchanged, and Fashion-MNIST's current release), as published by torchvision,
# TensorFlow Datasets and others
_MNIST_SHA256 = {
    "train-images-idx3-ubyte.gz": "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
    "train-labels-idx1-ubyte.gz": "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
    "t10k-images-idx3-ubyte.gz": "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
    "t10k-labels-idx1-ubyte.gz": "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
}
_FASHION_SHA256 = {
    "train-images-idx3-ubyte.gz": "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84",
    "train-labels-idx1-ubyte.gz": "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845",
    "t10k-images-idx3-ubyte.gz": "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073",
    "t10k-labels-idx1-ubyte.gz": "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5",
}

_GZIP_MAGIC = b"\x1f\x8b"
_CSV_CHUNK = 4096          # rows converted to floats at a time
_DOWNLOAD_BLOCK = 1 << 20


# ---- files ---------------------------------------------------------------------------------------
def get_data_home():
    """The download cache: ``$FASTBP_DATA`` if set, else ``~/.cache/fastbp`` (not created here)."""
    return os.path.abspath(os.path.expanduser(os.environ.get("FASTBP_DATA") or "~/.cache/fastbp"))


def _read_bytes(path):
    """The file's bytes, gunzipped if they start with the gzip magic (whatever the file's name)."""
    with open(path, "rb") as f:
        data = f.read()
    if data[:2] != _GZIP_MAGIC:
        return data
    try:
        return gzip.decompress(data)
    except (gzip.BadGzipFile, EOFError, zlib.error) as e:
        raise DataFileError(f"{path}: corrupt gzip data ({e})") from None


def _float_dtype(dtype, name="dtype"):
    try:
        dt = np.dtype(dtype)
    except TypeError:
        raise InputError(f"{name} must be a floating-point dtype, got {dtype!r}") from None
    if dt.kind != "f":
        raise InputError(f"{name} must be a floating-point dtype, got {dt}")
    return dt


# ---- IDX -----------------------------------------------------------------------------------------
def read_idx(path):
    """Read an IDX file (the MNIST format), plain or gzip-compressed, into a NumPy array.

    Layout: two zero bytes, a type byte (0x08 uint8, 0x09 int8, 0x0B int16, 0x0C int32,
    0x0D float32, 0x0E float64), a byte with the number of dimensions, one big-endian
    uint32 per dimension, then the elements, big-endian, in C order. Gzip is recognised
    by its magic bytes, not by the file name.

    Returns a writable array of that shape in native byte order (``uint8`` for MNIST).
    Raises ``DataFileError`` for a bad magic number, an unknown type byte, a file shorter
    than its header promises, bytes left after the data, or corrupt gzip data.
    """
    path = os.fspath(path)
    data = _read_bytes(path)
    if len(data) < 4:
        raise DataFileError(f"{path}: not an IDX file: {len(data)} bytes, shorter than the 4-byte magic number")
    if data[0] != 0 or data[1] != 0:
        raise DataFileError(f"{path}: not an IDX file: bad magic number {data[:4].hex(' ')} "
                            f"(an IDX file starts with two zero bytes)")
    code, ndim = data[2], data[3]
    if code not in IDX_DTYPES:
        known = ", ".join(f"0x{c:02X}" for c in IDX_DTYPES)
        raise DataFileError(f"{path}: unknown IDX type code 0x{code:02X} (known: {known})")
    dt = IDX_DTYPES[code]
    start = 4 + 4 * ndim
    if len(data) < start:
        raise DataFileError(f"{path}: truncated IDX header: {ndim} dimensions need {start} header bytes, "
                            f"the file has {len(data)}")
    shape = struct.unpack(f">{ndim}I", data[4:start])
    count = math.prod(shape)
    need = start + count * dt.itemsize
    if len(data) < need:
        raise DataFileError(f"{path}: truncated: the header promises shape {shape} of {dt.name} "
                            f"({count * dt.itemsize} data bytes) but only {len(data) - start} follow")
    if len(data) > need:
        raise DataFileError(f"{path}: {len(data) - need} unexpected bytes after the data of shape {shape}")
    arr = np.frombuffer(data, dtype=dt, count=count, offset=start).reshape(shape)
    return arr.astype(dt.newbyteorder("="))   # a native-order, writable copy


# ---- MNIST ---------------------------------------------------------------------------------------
def _mnist_folder(folder, fashion):
    if folder is None:
        return os.path.join(get_data_home(), "fashion-mnist" if fashion else "mnist")
    return os.path.abspath(os.path.expanduser(os.fspath(folder)))


def _find_file(folder, stem):
    """folder/stem, also with .gz and with the '.idx' spelling some copies use; None if absent."""
    dotted = stem.replace("-idx", ".idx")
    for name in (stem, stem + ".gz", dotted, dotted + ".gz"):
        p = os.path.join(folder, name)
        if os.path.isfile(p):
            return p
    return None


def mnist_help(folder=None, fashion=False):
    """How to get the (Fashion-)MNIST files into ``folder``: the text missing-file errors show."""
    folder = _mnist_folder(folder, fashion)
    args = [] if folder == _mnist_folder(None, fashion) else [repr(folder)]
    args += ["fashion=True"] if fashion else []
    names = ", ".join(f"{s}.gz" for pair in _MNIST_STEMS.values() for s in pair)
    sources = [f"    {MNIST_URL} (MNIST)", f"    {FASHION_MNIST_URL} (Fashion-MNIST)"]
    return (f"Download {'Fashion-MNIST' if fashion else 'MNIST'} with\n"
            f"    python -c \"from fastbp.datasets import fetch_mnist; fetch_mnist({', '.join(args)})\"\n"
            f"or put the four files {names} into {folder}; they are at\n"
            + "\n".join(sources[::-1] if fashion else sources))


def load_mnist(folder=None, kind="train", normalize=True, dtype=np.float32, *, fashion=False):
    """One split of MNIST (or Fashion-MNIST, same format) from the four standard IDX files.

    Parameters
    ----------
    folder : path, optional
        Holds ``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``,
        ``t10k-images-idx3-ubyte``, ``t10k-labels-idx1-ubyte``, each plain or ``.gz``
        (also accepted: ``train-images.idx3-ubyte`` spellings). Default: where
        :func:`fetch_mnist` puts them, ``get_data_home()/mnist`` (``fashion-mnist``).
    kind : {"train", "test"}
    normalize : bool
        Scale pixels to [0, 1] (divide by 255); otherwise keep 0..255.
    dtype : the dtype of ``X``, float32 by default.
    fashion : bool
        Only changes the download advice in the missing-file error.

    Returns
    -------
    X : (n, rows * cols) array of ``dtype`` (n, 784 for MNIST), one flattened image per row.
    y : (n,) int64 labels in 0..9.

    Raises ``FileNotFoundError`` (saying how to download them) if the files are absent and
    ``DataFileError`` if they are damaged, of the wrong kind or shape, disagree in length,
    or hold labels outside 0..9.
    """
    if kind not in _MNIST_STEMS:
        raise InputError(f"kind must be 'train' or 'test', got {kind!r}")
    if normalize:
        dt = _float_dtype(dtype)
    else:
        try:
            dt = np.dtype(dtype)
        except TypeError:
            dt = None
        if dt is None or dt.kind not in "biuf":
            raise InputError(f"dtype must be a numeric dtype, got {dtype!r}")
    folder = _mnist_folder(folder, fashion)
    stems = _MNIST_STEMS[kind]
    paths = [_find_file(folder, s) for s in stems]
    if None in paths:
        missing = " and ".join(f"{s}[.gz]" for s, p in zip(stems, paths) if p is None)
        what = "Fashion-MNIST" if fashion else "MNIST"
        raise FileNotFoundError(f"{what} {kind} files not found in {folder}: no {missing}.\n"
                                + mnist_help(folder, fashion))
    img_path, lab_path = paths
    images, labels = read_idx(img_path), read_idx(lab_path)
    if images.dtype != np.uint8 or images.ndim != 3:
        raise DataFileError(f"{img_path}: MNIST images must be a 3-D ubyte IDX array (n, rows, cols), "
                            f"got {images.ndim}-D {images.dtype}")
    if labels.dtype != np.uint8 or labels.ndim != 1:
        raise DataFileError(f"{lab_path}: MNIST labels must be a 1-D ubyte IDX array, "
                            f"got {labels.ndim}-D {labels.dtype}")
    if len(images) != len(labels):
        raise DataFileError(f"{img_path} holds {len(images)} images but {lab_path} holds {len(labels)} labels")
    bad = np.flatnonzero(labels > 9)
    if bad.size:
        i = bad[0]
        raise DataFileError(f"{lab_path}: mislabelled: label {labels[i]} at index {i} is outside 0..9 "
                            f"({bad.size} of {labels.size} labels are)")
    X = images.reshape(len(images), -1).astype(dt)
    if normalize:
        X /= 255
    return X, labels.astype(np.int64)


def load_fashion_mnist(folder=None, kind="train", normalize=True, dtype=np.float32):
    """:func:`load_mnist` for Fashion-MNIST (same files and checks); ``folder`` defaults to
    ``get_data_home()/fashion-mnist``."""
    return load_mnist(folder, kind, normalize, dtype, fashion=True)


# ---- CSV -----------------------------------------------------------------------------------------
def _is_number(s):
    try:
        float(s)
    except ValueError:
        return False
    return True


def _open_text(path):
    with open(path, "rb") as f:
        gz = f.read(2) == _GZIP_MAGIC
    raw = gzip.open(path, "rb") if gz else open(path, "rb")
    # utf-8-sig drops a byte-order mark; newline="" is what the csv module wants
    return io.TextIOWrapper(raw, encoding="utf-8-sig", newline="")


def _column_name(j, names):
    return f"column {j + 1}" + (f" ({names[j]!r})" if names else "")


def load_csv(path, target=-1, header="auto", delimiter=",", dtype=np.float32, classification=None,
             return_classes=False):
    """Features and target from a CSV file (plain or gzip-compressed, UTF-8).

    Parameters
    ----------
    target : int or str
        The target column: an index (negative counts from the end; default the last
        column) or a header name. Every other column is a feature.
    header : "auto", True or False
        Whether the first row names the columns. "auto": it does if one of its feature cells
        is not a number, or if its target cell is not a number while the next row's is.
        A target given by name implies a header.
    delimiter : str
    dtype : float dtype of ``X`` (and of ``y`` for regression), float32 by default.
    classification : None, True or False
        True: the target holds class labels; ``y`` is int64 codes 0..k-1 into the sorted
        distinct labels (so labels that are exactly 0..k-1 keep their values). False: ``y`` is the
        target as ``dtype``. None: classification exactly when some target cell is not a
        number (string labels).
    return_classes : bool
        Also return ``classes``.

    Returns
    -------
    ``(X, y)``, or ``(X, y, classes)`` with ``return_classes=True``: ``X`` (n, n_columns - 1),
    ``y`` (n,), and ``classes`` the sorted distinct labels (``str`` or numeric array) with
    ``classes[y]`` the original labels, or None for a regression target.

    Blank lines are skipped; cells may carry spaces; "nan" and "inf" parse as numbers.
    Raises ``DataFileError`` naming the line and column for a ragged row, a cell that is
    not a number, an empty file or one without data rows, and an unknown or out-of-range
    ``target``.
    """
    path = os.fspath(path)
    dt = _float_dtype(dtype)
    if header not in ("auto", True, False):
        raise InputError(f"header must be 'auto', True or False, got {header!r}")
    if classification not in (None, True, False):
        raise InputError(f"classification must be None, True or False, got {classification!r}")
    if isinstance(target, str):
        if header is False:
            raise InputError(f"target {target!r} is a column name, which needs header=True or 'auto'")
        header = True
    elif isinstance(target, bool) or not isinstance(target, (int, np.integer)):
        raise InputError(f"target must be a column index or a header name, got {target!r}")

    try:
        with _open_text(path) as f:
            reader = csv.reader(f, delimiter=delimiter, strict=True)   # a stray quote is an error, not lines lost
            rows = ((reader.line_num, row) for row in reader if row)   # skips blank lines
            X, tgt, lines, names, idx = _read_csv_rows(path, rows, target, header, dt)
    except UnicodeDecodeError as e:
        raise DataFileError(f"{path}: not a UTF-8 text file ({e})") from None
    except csv.Error as e:
        raise DataFileError(f"{path}: malformed CSV ({e})") from None
    except (gzip.BadGzipFile, EOFError, zlib.error) as e:
        raise DataFileError(f"{path}: corrupt gzip data ({e})") from None

    col = _column_name(idx, names)
    values = None
    try:
        values = np.array(tgt, dtype=object).astype(np.float64)
    except ValueError:
        if classification is False:
            i = next(i for i, s in enumerate(tgt) if not _is_number(s))
            raise DataFileError(f"{path}, line {lines[i]}, target {col}: {tgt[i]!r} is not a number "
                                f"(pass classification=True for string labels)") from None
    if classification is None:
        classification = values is None
    classes = None
    if not classification:
        y = values.astype(dt)
    elif values is not None:
        classes, y = np.unique(values, return_inverse=True)
        if np.all(np.isfinite(classes) & (classes == np.round(classes))):
            classes = classes.astype(np.int64)
    else:
        labels = [s.strip() for s in tgt]
        if "" in labels:
            i = labels.index("")
            raise DataFileError(f"{path}, line {lines[i]}, target {col}: empty class label")
        classes, y = np.unique(np.array(labels), return_inverse=True)
    if classification:
        y = y.reshape(-1).astype(np.int64)
    return (X, y, classes) if return_classes else (X, y)


def _read_csv_rows(path, rows, target, header, dt):
    """X, target cells, line numbers, column names (or None) and the target index."""
    try:
        line0, first = next(rows)
    except StopIteration:
        raise DataFileError(f"{path}: the file is empty") from None
    ncol = len(first)
    if ncol < 2:
        raise DataFileError(f"{path}: line {line0} has {ncol} column; need at least one feature "
                            f"column and a target column (is the delimiter right?)")
    stripped = [c.strip() for c in first]
    if isinstance(target, str):
        found = [j for j, c in enumerate(stripped) if c == target]
        if len(found) != 1:
            problem = "no column" if not found else f"{len(found)} columns"
            raise DataFileError(f"{path}: {problem} named {target!r} in the header {stripped}")
        idx = found[0]
    else:
        idx = int(target) + ncol if target < 0 else int(target)
        if not 0 <= idx < ncol:
            raise DataFileError(f"{path}: target column {target} is out of range for {ncol} columns")

    second = next(rows, None)
    if header == "auto":
        text_feature = any(not _is_number(c) for j, c in enumerate(first) if j != idx)
        next_numeric = second is not None and len(second[1]) == ncol and _is_number(second[1][idx])
        header = text_feature or (not _is_number(first[idx]) and next_numeric)
    names = stripped if header else None

    def data_rows():
        if not header:
            yield line0, first
        if second is not None:
            yield second
        yield from rows

    nf = ncol - 1
    chunks, tgt, lines, cells = [], [], [], []
    start = 0   # index in `lines` of the current chunk's first row

    def flush():
        try:
            chunks.append(np.array(cells, dtype=object).astype(dt).reshape(-1, nf))
        except ValueError:
            for k, c in enumerate(cells):
                if not _is_number(c):
                    r, j = divmod(k, nf)
                    j += j >= idx
                    what = "empty cell" if not c.strip() else f"{c!r} is not a number"
                    where = f"line {lines[start + r]}, {_column_name(j, names)}"
                    raise DataFileError(f"{path}, {where}: {what}") from None
            raise
        cells.clear()

    for line, row in data_rows():
        if len(row) != ncol:
            raise DataFileError(f"{path}, line {line}: {len(row)} fields, expected {ncol} as on line {line0}")
        tgt.append(row[idx])
        lines.append(line)
        cells.extend(row[:idx])
        cells.extend(row[idx + 1:])
        if len(lines) - start == _CSV_CHUNK:
            flush()
            start = len(lines)
    if cells:
        flush()
    if not lines:
        raise DataFileError(f"{path}: no data rows after the header on line {line0}")
    return np.concatenate(chunks), tgt, lines, names, idx


# ---- NPZ -----------------------------------------------------------------------------------------
def load_npz(path, x_key="X", y_key="y"):
    """``(X, y)`` from a NumPy ``.npz`` archive, read with ``allow_pickle=False``.

    ``y_key=None`` reads no target and returns ``(X, None)``. Arrays come back as stored.
    Raises ``DataFileError`` for a file that is not an ``.npz`` archive (a ``.npy`` file
    included), a damaged archive, a missing key (naming the keys it has), an array of
    pickled Python objects, or ``X`` and ``y`` of different lengths.
    """
    path = os.fspath(path)
    with open(path, "rb") as f:
        magic = f.read(6)
    if magic.startswith(b"\x93NUMPY"):
        raise DataFileError(f"{path}: a single-array .npy file, not an .npz archive (read it with np.load)")
    if not magic.startswith(b"PK"):
        raise DataFileError(f"{path}: not an .npz archive (no zip signature)")

    def get(z, key):
        if key not in z.files:
            raise DataFileError(f"{path}: no array named {key!r}; the archive holds {sorted(z.files)}")
        try:
            return z[key]
        except ValueError as e:
            if "allow_pickle" in str(e):
                raise DataFileError(f"{path}: array {key!r} holds pickled Python objects, which fastbp "
                                    f"does not load (allow_pickle=False)") from None
            raise DataFileError(f"{path}: array {key!r} is damaged ({e})") from None

    try:
        with np.load(path, allow_pickle=False) as z:
            X = get(z, x_key)
            y = None if y_key is None else get(z, y_key)
    except DataFileError:
        raise
    except (zipfile.BadZipFile, EOFError, zlib.error, ValueError, OSError) as e:
        raise DataFileError(f"{path}: damaged .npz archive ({e})") from None
    if y is not None and (X.ndim == 0 or y.ndim == 0 or len(X) != len(y)):
        raise DataFileError(f"{path}: {x_key!r} has shape {X.shape} but {y_key!r} has shape {y.shape}; "
                            f"their lengths must match")
    return X, y


# ---- downloads -----------------------------------------------------------------------------------
def _sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(_DOWNLOAD_BLOCK), b""):
            h.update(block)
    return h.hexdigest()


def fetch(url, folder=None, sha256=None, filename=None):
    """Download ``url`` into ``folder`` once; return the local path.

    ``folder`` defaults to :func:`get_data_home` (``$FASTBP_DATA`` or ``~/.cache/fastbp``) and
    is created if needed; ``filename`` defaults to the last part of the URL's path. If the
    file is already there (and, with ``sha256``, its checksum matches) nothing is
    downloaded. Otherwise the data goes to a temporary file in the same folder, is checked
    against ``sha256`` (hex) when given and only then renamed over the target
    (``os.replace``, atomic): an interrupted or failed download, or a checksum mismatch,
    leaves no partial file behind and an existing file untouched.

    Raises ``DataFileError`` on a checksum mismatch and ``OSError`` (naming the URL) if the
    download fails. Any scheme urllib handles works, ``file://`` included.
    """
    if sha256 is not None:
        sha256 = str(sha256).strip().lower()
        if len(sha256) != 64 or any(c not in "0123456789abcdef" for c in sha256):
            raise InputError(f"sha256 must be 64 hexadecimal digits, got {sha256!r}")
    if filename is None:
        filename = os.path.basename(urllib.parse.urlparse(url).path)
        if not filename:
            raise InputError(f"cannot take a file name from the URL {url!r}; pass filename=")
    if os.path.basename(filename) != filename or filename in (".", ".."):
        raise InputError(f"filename must be a plain file name, got {filename!r}")
    folder = get_data_home() if folder is None else os.path.expanduser(os.fspath(folder))
    dest = os.path.join(folder, filename)
    if os.path.isfile(dest) and (sha256 is None or _sha256_file(dest) == sha256):
        return dest

    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{filename}.", suffix=".part")
    try:
        os.chmod(tmp, new_file_mode())   # mkstemp makes it 0600; the data gets what open() would give
        h = hashlib.sha256()
        with os.fdopen(fd, "wb") as out:
            try:
                with urllib.request.urlopen(url, timeout=60) as resp:
                    for block in iter(lambda: resp.read(_DOWNLOAD_BLOCK), b""):
                        h.update(block)
                        out.write(block)
            except (urllib.error.URLError, OSError) as e:
                detail = e if isinstance(e, urllib.error.HTTPError) else getattr(e, "reason", e)
                raise OSError(f"downloading {url} failed: {detail}") from e
        if sha256 is not None and h.hexdigest() != sha256:
            raise DataFileError(f"checksum mismatch for {url}: expected sha256 {sha256}, got {h.hexdigest()}; "
                                f"the download was discarded")
        os.replace(tmp, dest)
    except BaseException:
        try:
            os.remove(tmp)
        except OSError:
            pass
        raise
    return dest


def fetch_mnist(folder=None, fashion=False):
    """Download the four MNIST (or, with ``fashion=True``, Fashion-MNIST) ``.gz`` files.

    ``folder`` defaults to ``get_data_home()/mnist`` (``fashion-mnist``), where
    :func:`load_mnist` looks by default. MNIST comes from the mirror PyTorch uses,
    https://ossci-datasets.s3.amazonaws.com/mnist/ , Fashion-MNIST from
    http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/ . Each file is checked
    against its published SHA-256. Files already present and intact are not downloaded
    again. Returns the folder.
    """
    folder = _mnist_folder(folder, fashion)
    base, sums = (FASHION_MNIST_URL, _FASHION_SHA256) if fashion else (MNIST_URL, _MNIST_SHA256)
    for name, digest in sums.items():
        fetch(base + name, folder, sha256=digest)
    return folder


__all__ = ["get_data_home", "read_idx", "mnist_help", "load_mnist", "load_fashion_mnist", "load_csv", "load_npz",
           "fetch", "fetch_mnist", "make_spirals", "make_xor", "make_teacher", "MNIST_URL", "FASHION_MNIST_URL",
           "IDX_DTYPES"]
