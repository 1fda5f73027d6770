"""Model files: ``Network.save`` and ``Network.load`` (a plain ``.npz``, no pickle, written atomically).

A file holds ``format`` ("fastbp.Network"), ``format_version`` (1), ``config`` (the JSON of
``Network.get_config()``), ``params`` and ``norm_state`` (the flat buffers), ``rng`` (the dropout
generator's state), ``shuffle_state`` (the JSON of the shuffling generator's state) and, for a
network that has an optimizer, ``optimizer_config`` (JSON), ``optimizer_step`` and
``optimizer_state_0..2``.

Loading trusts nothing in the file: every array's header (shape, dtype) is read and checked
against the size of the data the archive holds for it, and the sizes the configuration implies
against those headers, before any array is read or any network is built, so a file cannot make
``load`` allocate more than the arrays it really contains.
"""

import json
import os
import tempfile
import zipfile

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
    }
    opt = net.optimizer
    if opt is not None:
        arrays["optimizer_config"] = np.array(json.dumps(opt.get_config()))
        arrays["optimizer_step"] = opt._step.copy()
        # an optimizer that has not stepped yet has no state: save the zeros it would start from
        states = opt.state_arrays() or [np.zeros(n, net.dtype) for n in opt._state_sizes(net.params.shape[0])]
        for i, a in enumerate(states):
            arrays[f"optimizer_state_{i}"] = a
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".fastbp-", suffix=".npz.tmp", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
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
                              norm_momentum=cfg.get("norm_momentum", 0.1), norm_eps=cfg.get("norm_eps", 1e-5))
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
        if opt is not None:
            opt._load_state(int(step[0]), states)
            opt._bind(net)
            net.optimizer = opt
    except ModelFileError:
        raise
    except (KeyError, IndexError, TypeError, ValueError, json.JSONDecodeError) as e:
        raise ModelFileError(f"{path!r} is damaged or not a fastbp model ({type(e).__name__}: {e})") from None
    return net
