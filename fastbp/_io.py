"""Model files: ``Network.save`` and ``Network.load`` (a plain ``.npz``, no pickle, written atomically).

A file holds ``format`` ("fastbp.Network"), ``format_version`` (1), ``config`` (the JSON of
``Network.get_config()``), ``params`` and ``norm_state`` (the flat buffers), ``rng`` (the dropout
generator's state), ``shuffle_state`` (the JSON of the shuffling generator's state), ``epoch``
(the epochs trained: what ``fit(initial_epoch=...)`` resumes at; files without it load) and, for a
network that has an optimizer, ``optimizer_config`` (JSON), ``optimizer_step`` and
``optimizer_state_0..2``.

Loading trusts nothing in the file: every array's header (shape, dtype) is read and checked
against the size of the data the archive holds for it, and the sizes the configuration implies
against those headers, before any array is read or any network is built, so a file cannot make
``load`` allocate more than the arrays it really contains.
"""

import errno
import json
import os
import stat
import tempfile
import time
import zipfile

try:
    import fcntl
except ImportError:   # Windows: no advisory locks, so stale temporaries are never removed
    fcntl = None

import numpy as np

from .errors import ModelFileError, ModelNotFoundError
from .optim import from_config

FORMAT = "fastbp.Network"
FORMAT_VERSION = 1
MAX_TEXT = 1 << 20   # characters in a JSON field (config, generator and optimizer states)


def save(net, path):
    """Write ``net`` to ``path`` (see Network.save)."""
    path = os.fspath(path)
    arrays = {
        "format": np.array(FORMAT), "format_version": np.array(FORMAT_VERSION),
        "config": np.array(json.dumps(net.get_config())), "params": net.params,
        "norm_state": net.norm_state, "rng": net._rng,
        "shuffle_state": np.array(json.dumps(net._shuffle_rng.bit_generator.state)),
        "epoch": np.array(int(getattr(net, "_epoch", 0)), np.int64),
    }
    opt = net.optimizer
    if opt is not None:
        arrays["optimizer_config"] = np.array(json.dumps(opt.get_config()))
        arrays["optimizer_step"] = opt._step.copy()
        # an optimizer that has not stepped yet has no state: save the zeros it would start from
        states = opt.state_arrays() or [np.zeros(n, net.dtype) for n in opt._state_sizes(net.params.shape[0])]
        for i, a in enumerate(states):
            arrays[f"optimizer_state_{i}"] = a
    write_atomically(path, lambda f: np.savez(f, **arrays))


TMP_PREFIX, TMP_SUFFIX = ".fastbp-", ".npz.tmp"
STALE_SECONDS = 60   # a temporary file this much older than now, and not locked, was left by a killed save


def _umask():
    """The process's umask, read without changing it where the OS tells (Linux), else by setting
    and restoring it."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _lock(fd, blocking=True):
    """An exclusive advisory lock on the open file ``fd`` (released when the file is closed or its
    process dies); False when another process holds it. True where there is no flock."""
    if fcntl is None:
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        return True
    except OSError:
        return False


def _stale_name(name):
    # exactly what mkstemp(prefix=TMP_PREFIX, suffix=TMP_SUFFIX) makes: 8 characters in between
    return (name.startswith(TMP_PREFIX) and name.endswith(TMP_SUFFIX)
            and len(name) == len(TMP_PREFIX) + 8 + len(TMP_SUFFIX))


def remove_stale_temporaries(folder, now=None):
    """Delete the ``.fastbp-XXXXXXXX.npz.tmp`` files in ``folder`` that a save killed midway
    (``kill -9``, power loss) left: only regular files of this user, last written more than
    STALE_SECONDS ago, whose lock no process holds (every save holds one on its temporary file
    until it is renamed, and the OS drops it when the writer dies). Without flock (Windows)
    nothing is removed. Returns the paths removed; errors are ignored (another process may
    remove the same file)."""
    if fcntl is None:
        return []
    now = time.time() if now is None else now
    removed = []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed
    for entry in entries:
        if not _stale_name(entry.name):
            continue
        try:
            st = entry.stat(follow_symlinks=False)
            if not stat.S_ISREG(st.st_mode) or st.st_uid != os.getuid() or now - st.st_mtime < STALE_SECONDS:
                continue
            fd = os.open(entry.path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
        except OSError:
            continue
        try:
            if _lock(fd, blocking=False) and os.path.samestat(os.fstat(fd), st):
                os.unlink(entry.path)
                removed.append(entry.path)
        except OSError:
            pass
        finally:
            os.close(fd)
    return removed


def new_file_mode():
    """The mode a plain ``open(path, "w")`` gives a new file: 0666 less the umask."""
    return 0o666 & ~_umask()


def write_atomically(path, write):
    """Create or replace the file ``path`` with what ``write(binary_file)`` writes, atomically: a
    temporary file in the same folder, flushed to disk, then renamed over ``path``. The file gets
    the mode a plain ``open(path, "w")`` would give it (0666 less the umask), and errors name
    ``path``, not the temporary file. Stale temporary files of killed saves in that folder are
    removed first (see remove_stale_temporaries)."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise FileNotFoundError(errno.ENOENT, f"cannot save: the folder {folder!r} does not exist", path)
    remove_stale_temporaries(folder)
    try:
        fd, tmp = tempfile.mkstemp(prefix=TMP_PREFIX, suffix=TMP_SUFFIX, dir=folder)
    except OSError as e:
        raise type(e)(e.errno, f"cannot save in {folder!r}: {e.strerror}", path) from None
    try:
        with os.fdopen(fd, "wb") as f:
            _lock(f.fileno())   # mkstemp's file is new: nobody else holds its lock
            mode = new_file_mode()
            if hasattr(os, "fchmod"):
                os.fchmod(f.fileno(), mode)
            else:
                os.chmod(tmp, mode)
            write(f)
            f.flush()
            os.fsync(f.fileno())
            if fcntl is not None:
                os.replace(tmp, path)   # still locked, so no cleanup can take the file meanwhile
        if fcntl is None:
            os.replace(tmp, path)   # Windows renames only closed files
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _headers(path):
    """{name: (shape, dtype)} of every array in the archive, from the .npy headers only.

    Refuses object arrays (pickles) and any header that claims more data than the archive
    holds for that member."""
    out = {}
    with zipfile.ZipFile(path) as z:
        for info in z.infolist():
            if not info.filename.endswith(".npy"):
                continue
            with z.open(info) as fp:
                version = np.lib.format.read_magic(fp)
                if version == (1, 0):
                    shape, _, dtype = np.lib.format.read_array_header_1_0(fp)
                elif version == (2, 0):
                    shape, _, dtype = np.lib.format.read_array_header_2_0(fp)
                else:
                    raise ValueError(f"the array {info.filename[:-4]!r} has .npy format version {version}")
                header_bytes = fp.tell()
            if dtype.hasobject:
                raise ValueError("Object arrays cannot be loaded when allow_pickle=False (pickle)")
            claimed = int(np.prod(shape, dtype=object)) * dtype.itemsize
            if claimed > info.file_size - header_bytes:
                raise ModelFileError(f"{path!r}: the array {info.filename[:-4]!r} claims {shape} {dtype} "
                                     f"({claimed} bytes) but the file holds {info.file_size - header_bytes} "
                                     f"bytes for it")
            out[info.filename[:-4]] = (tuple(shape), dtype)
    return out


def _check_header(path, headers, key, shape, dtype, what):
    """Raise ModelFileError unless the stored ``key`` is ``shape`` of ``dtype`` (KeyError if absent)."""
    got_shape, got_dtype = headers[key]
    if got_shape != shape or got_dtype != dtype:
        raise ModelFileError(what.format(shape=got_shape, dtype=got_dtype))


def load(cls, path):
    """Read a file written by :func:`save` as a ``cls`` (Network); ModelFileError for anything else."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ModelNotFoundError(f"no model file at {path!r}")
    with open(path, "rb") as f:
        magic = f.read(6)
    if magic == b"\x93NUMPY":
        raise ModelFileError(f"{path!r} is a single .npy array, not a fastbp model (.npz)")
    if magic[:4] != b"PK\x03\x04":
        raise ModelFileError(f"{path!r} is truncated or not a fastbp model (not an .npz archive)")
    try:
        headers = _headers(path)
        npz = np.load(path, allow_pickle=False)
    except ModelFileError:
        raise
    except ValueError as e:
        if "pickle" in str(e):
            raise ModelFileError(f"{path!r} contains pickled objects; fastbp models never do, "
                                 f"so it is refused") from None
        raise ModelFileError(f"{path!r} is not a readable fastbp model: {e}") from None
    except Exception as e:  # zipfile.BadZipFile, EOFError, OSError, ... from a truncated file
        raise ModelFileError(f"{path!r} is truncated or not a fastbp model ({type(e).__name__}: {e})") from None
    with npz:
        return _load(cls, path, headers, npz)


def _load(cls, path, headers, npz):
    def read(key):
        try:
            return npz[key]
        except KeyError:
            raise
        except Exception as e:  # a damaged member: zlib/CRC errors, short reads
            raise ModelFileError(f"{path!r} is truncated or not a fastbp model ({type(e).__name__}: {e})") from None

    def scalar(key, kind):
        h = headers.get(key)
        if h is None or h[0] != () or h[1].kind not in kind or (kind == "U" and h[1].itemsize > 4 * MAX_TEXT):
            return None
        return read(key).item()

    if scalar("format", "U") != FORMAT:
        raise ModelFileError(f"{path!r} is not a fastbp model (no '{FORMAT}' marker)")
    version = scalar("format_version", "iu")
    if version != FORMAT_VERSION:
        raise ModelFileError(f"{path!r} has format version {-1 if version is None else version}; "
                             f"this fastbp reads {FORMAT_VERSION}")

    def text(key):
        value = scalar(key, "U")
        if value is None:
            raise KeyError(f"{key} (a JSON text of at most {MAX_TEXT} characters)")
        return json.loads(value)

    try:
        cfg = text("config")
        # the architecture is checked and laid out without allocating, then compared with the
        # stored arrays' headers: only then is anything built
        net = cls._configured(cfg["layer_sizes"], activation=cfg["activation"] or "relu", output=cfg["output"],
                              loss=cfg["loss"], dtype=cfg["dtype"], seed=cfg["seed"],
                              dropout=cfg["dropout"] or 0.0, init=cfg["init"], norm=cfg.get("norm") or None,
                              norm_momentum=cfg.get("norm_momentum", 0.1), norm_eps=cfg.get("norm_eps", 1e-5),
                              precision=cfg.get("precision", "fp32"))
        n_params, n_state, dtype = net._n_flat, net._n_state, net.dtype
        _check_header(path, headers, "params", (n_params,), dtype,
                      f"{path!r}: parameters have shape {{shape}} {{dtype}}, expected {(n_params,)} {dtype}")
        has_state = n_state > 0 or "norm_state" in headers
        if has_state:
            shape, dt = headers["norm_state"]
            if shape != (n_state,) or dt != dtype:
                raise ModelFileError(f"{path!r}: norm statistics have shape {shape} {dt} or are "
                                     f"not finite; expected {(n_state,)} {dtype}")
        if headers["rng"][0] not in ((), (1,)):
            raise ValueError(f"the dropout generator's state has shape {headers['rng'][0]}, expected (1,)")
        shuffle_state = text("shuffle_state")
        epoch = scalar("epoch", "iu") if "epoch" in headers else None
        if "epoch" in headers and (epoch is None or epoch < 0):
            raise ModelFileError(f"{path!r}: the epoch count must be one non-negative integer")
        opt = None
        if "optimizer_config" in headers:
            opt = from_config(text("optimizer_config"))
            sizes = opt._state_sizes(n_params)
            for i, size in enumerate(sizes):
                _check_header(path, headers, f"optimizer_state_{i}", (size,), dtype,
                              f"{path!r}: optimizer state {i} has shape {{shape}} {{dtype}}, "
                              f"expected {(size,)} {dtype}")
            if headers["optimizer_step"][0] != (1,):
                raise ModelFileError(f"{path!r}: optimizer step count must be one non-negative integer")

        # every claim is consistent with what the file holds: read and check the values
        params = read("params")
        if not np.all(np.isfinite(params)):
            raise ModelFileError(f"{path!r}: parameters contain NaN or inf")
        st = read("norm_state") if has_state else None
        if st is not None and not np.all(np.isfinite(st)):
            raise ModelFileError(f"{path!r}: norm statistics have shape {st.shape} {st.dtype} or are "
                                 f"not finite; expected {(n_state,)} {dtype}")
        rng = read("rng")
        if opt is not None:
            states = [read(f"optimizer_state_{i}") for i in range(3)]
            nonneg = opt._nonneg_indices()
            for i, a in enumerate(states):
                if not np.all(np.isfinite(a)) or (i in nonneg and a.size and a.min() < 0):
                    raise ModelFileError(f"{path!r}: optimizer state {i} is not finite"
                                         + (" and >= 0" if i in nonneg else ""))
            step = read("optimizer_step")
            if step.shape != (1,) or step.dtype.kind not in "iu" or step[0] < 0:
                raise ModelFileError(f"{path!r}: optimizer step count must be one non-negative integer")

        net._allocate()
        net.params[...] = params
        if st is not None:
            net.norm_state[...] = st
        net._rng[...] = rng
        net._shuffle_rng.bit_generator.state = shuffle_state
        if epoch is not None:
            net._epoch = net._loaded_epoch = int(epoch)
        if opt is not None:
            opt._load_state(int(step[0]), states)
            opt._bind(net)
            net.optimizer = opt
    except ModelFileError:
        raise
    except (KeyError, IndexError, TypeError, ValueError, json.JSONDecodeError) as e:
        raise ModelFileError(f"{path!r} is damaged or not a fastbp model ({type(e).__name__}: {e})") from None
    return net
