"""The data a config describes: generated (spirals, xor, teacher), or read from CSV, NPZ or
MNIST files; a test split, and standardisation with the training rows' mean and std."""

import numpy as np

from .. import datasets
from ..bench.workloads import make_data
from .checks import BadValue


class Data:
    """Train / validation / test arrays and what the network needs to know about them."""

    def __init__(self, X, y, val=None, test=None, classes=None, description=""):
        self.X, self.y, self.val, self.test = X, y, val, test
        self.classes, self.description = classes, description
        self.scaler = None

    @property
    def classification(self):
        return self.y.ndim == 1 and self.y.dtype.kind in "iub"




def _relabel(y, classes, ref, path):
    """Codes into ``ref`` (the training file's classes) for labels coded into ``classes``."""
    if ref is None or classes is None:
        return y
    labels = np.asarray(classes)[y]
    idx = np.searchsorted(ref, labels)
    idx = np.clip(idx, 0, len(ref) - 1)
    bad = np.asarray(ref)[idx] != labels
    if bad.any():
        raise BadValue(f"{path}: class label {labels[bad][0]!r} does not occur in the training file")
    return idx.astype(np.int64)


def load_data(cfg, ctx):
    """Load (or generate) the data a resolved config describes. Raises ConfigError."""
    d = cfg["data"]
    kind = d["kind"]
    val = test = classes = None
    key = "data.path"
    try:
        if kind == "spirals":
            X, y = datasets.make_spirals(d["n_samples"], d["turns"], d["noise"], d["seed"])
            desc = f"spirals: {d['n_samples']} points"
        elif kind == "xor":
            X, y = datasets.make_xor(d["n_samples"], d["noise"], d["seed"])
            desc = f"xor: {d['n_samples']} points"
        elif kind == "teacher":
            if d["workload"] is not None:
                X, y = make_data(d["workload"], quick=d["quick"], seed=d["seed"])
                desc = f"teacher data of the {d['workload']} workload"
            else:
                X, y = datasets.make_teacher(d["n_samples"], d["n_features"], d["n_outputs"], d["task"], d["seed"])
                desc = f"teacher {d['task']}: {d['n_features']} features, {d['n_outputs']} outputs"
            if d["n_samples"] is not None:
                X, y = X[:d["n_samples"]], y[:d["n_samples"]]
        elif kind == "csv":
            opts = dict(target=d["target"], header=d["header"], delimiter=d["delimiter"],
                        classification=d["classification"], return_classes=True)
            X, y, classes = datasets.load_csv(d["path"], **opts)
            if classes is not None:
                opts["classification"] = True
            for k in ("val_path", "test_path"):
                if d[k] is not None:
                    key = f"data.{k}"
                    Xo, yo, co = datasets.load_csv(d[k], **opts)
                    pair = (Xo, _relabel(yo, co, classes, d[k]))
                    val, test = (pair, test) if k == "val_path" else (val, pair)
            desc = f"{d['path']}"
        elif kind == "npz":
            X, y = datasets.load_npz(d["path"], d["x_key"], d["y_key"])
            for k in ("val_path", "test_path"):
                if d[k] is not None:
                    key = f"data.{k}"
                    pair = datasets.load_npz(d[k], d["x_key"], d["y_key"])
                    val, test = (pair, test) if k == "val_path" else (val, pair)
            desc = f"{d['path']}"
        else:  # mnist
            key = "data.folder"
            X, y = datasets.load_mnist(d["folder"], "train", fashion=d["fashion"])
            if d["n_train"] is not None:
                X, y = X[:d["n_train"]], y[:d["n_train"]]
            if d["use_test"]:
                Xt, yt = datasets.load_mnist(d["folder"], "test", fashion=d["fashion"])
                test = (Xt[:d["n_test"]], yt[:d["n_test"]]) if d["n_test"] is not None else (Xt, yt)
            desc = "Fashion-MNIST" if d["fashion"] else "MNIST"
    except (OSError, ValueError, BadValue) as e:   # DataFileError and InputError are ValueErrors
        raise ctx.error(key, str(e)) from None

    if d["test_fraction"]:
        rng = np.random.default_rng(np.random.SeedSequence([d["seed"], 1]))
        n = X.shape[0]
        n_test = int(round(d["test_fraction"] * n))
        if n_test == 0 or n_test == n:
            raise ctx.error("data.test_fraction", f"{d['test_fraction']} of {n} rows leaves no "
                                                  f"{'test' if n_test == 0 else 'training'} rows")
        perm = rng.permutation(n)
        te, tr = np.sort(perm[:n_test]), np.sort(perm[n_test:])
        test = (X[te], y[te])
        X, y = X[tr], y[tr]
    data = Data(X, y, val, test, classes, desc)
    if d["standardize"]:
        Xf = np.asarray(X, np.float64)
        mean, std = Xf.mean(axis=0), Xf.std(axis=0)
        std[std == 0] = 1.0

        def scale(A):
            return ((np.asarray(A, np.float64) - mean) / std).astype(cfg["model"]["dtype"])
        data.X = scale(X)
        data.val = None if val is None else (scale(val[0]), val[1])
        data.test = None if test is None else (scale(test[0]), test[1])
        data.scaler = (mean, std)
    return data
