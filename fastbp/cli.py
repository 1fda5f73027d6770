"""The ``fastbp`` command line: scripted experiments from TOML files.

    fastbp train CONFIG.toml [--out DIR] [--set KEY=VALUE ...] [--dry-run] [--quiet]
    fastbp sweep CONFIG.toml [--out DIR] [--set KEY=VALUE ...] [--dry-run]
    fastbp bench [--workload small] [--peers fastbp] [--rounds 1] [--quick] ...
    fastbp info [--json]

A train config has five sections (every key but ``data.kind`` is optional)::

    [data]       kind = "spirals" | "xor" | "teacher" | "csv" | "npz" | "mnist"
                 seed, test_fraction, standardize, and the kind's own keys (see DATA_KINDS)
    [model]      hidden = [64, 64], activation, output, loss, dtype, dropout, init, norm
    [optimizer]  name = "adam" | "adamw" | "sgd" | "rmsprop", and that optimizer's arguments
    [schedule]   name = "CosineAnnealing" (or "cosine"), and that schedule's arguments
    [training]   epochs, batch_size, seed, validation_split, shuffle, clip_norm, class_weight,
                 verbose, threads, [training.early_stopping], [training.checkpoint]
    [output]     dir, plot, save_model

A sweep config adds ``[sweep]`` (method, n_trials, seed, metric, mode, save_runs, plots) and
``[sweep.params]``, whose dotted keys ("optimizer.lr") name train-config keys and whose
values list the candidates (random search also takes ``{log_uniform = [lo, hi]}``,
``{uniform = [lo, hi]}``, ``{int_uniform = [lo, hi]}``).

Every problem with a config (unknown key, wrong type, bad name, missing file) is reported
as one line, ``fastbp: error: FILE: dotted.key: problem``, with exit status 2, before any
training starts. Paths in a config are relative to the config file's folder.
"""

import argparse
import copy
import csv
import difflib
import hashlib
import importlib.metadata
import json
import math
import os
import platform
import re
import sys
import time
import warnings

import numpy as np

try:
    import tomllib
except ModuleNotFoundError:   # Python 3.10: the same parser as the tomli package
    try:
        import tomli as tomllib
    except ModuleNotFoundError:
        tomllib = None

from . import __version__
from .bench import WORKLOADS

EXIT_FAIL = 1
EXIT_CONFIG = 2
EXIT_INTERRUPTED = 130
_REQUIRED = object()
TOML_TYPES = {bool: "a boolean", int: "an integer", float: "a float", str: "a string", list: "an array",
              dict: "a table"}
RESULT_METRICS = ("loss", "accuracy", "val_loss", "val_accuracy", "test_loss", "test_accuracy")


# ---- errors --------------------------------------------------------------------------------------
class ConfigError(Exception):
    """A problem with a config, reported as ``FILE: KEY: message`` (one line, exit status 2)."""

    def __init__(self, file, key, message):
        self.file, self.key, self.message = file, key, message
        super().__init__(" ".join(f"{file}: {key + ': ' if key else ''}{message}".split()))


class _Bad(Exception):
    """A bad value; whoever knows its key turns it into a ConfigError."""


def _toml(v):
    """A value as TOML writes it (for messages and the resolved config)."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return "nan" if math.isnan(v) else ("inf" if v > 0 else "-inf") if math.isinf(v) else repr(v)
    if isinstance(v, int):
        return str(v)
    if isinstance(v, str):
        return json.dumps(v, ensure_ascii=False)
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{ " + ", ".join(f"{_key(k)} = {_toml(x)}" for k, x in v.items()) + " }"
    return repr(v)


def _show(v):
    text = _toml(v)
    text = text if len(text) <= 60 else text[:57] + "..."
    return f"{text} ({TOML_TYPES.get(type(v), type(v).__name__)})"


def _key(k):
    return k if re.fullmatch(r"[A-Za-z0-9_-]+", k) else json.dumps(k)


def _join(path, k):
    return f"{path}.{_key(k)}" if path else _key(k)


def _did_you_mean(word, choices):
    hint = difflib.get_close_matches(word, list(choices), 1)
    return f" (did you mean {json.dumps(hint[0])}?)" if hint else ""


# ---- value checkers: each returns the (normalised) value or raises _Bad --------------------------
def _int(lo=None, hi=None):
    def check(v):
        if isinstance(v, bool) or not isinstance(v, int):
            raise _Bad(f"expected an integer, got {_show(v)}")
        if (lo is not None and v < lo) or (hi is not None and v > hi):
            raise _Bad(f"must be {_range(lo, hi)}, got {v}")
        return v
    return check


def _range(lo, hi, lo_open=False, hi_open=False):
    if hi is None:
        return f"{'>' if lo_open else '>='} {lo}"
    if lo is None:
        return f"{'<' if hi_open else '<='} {hi}"
    return f"in {'(' if lo_open else '['}{lo}, {hi}{')' if hi_open else ']'}"


def _float(lo=None, hi=None, lo_open=False, hi_open=False):
    def check(v):
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise _Bad(f"expected a number, got {_show(v)}")
        f = float(v)
        bad = (not math.isfinite(f) or (lo is not None and (f <= lo if lo_open else f < lo))
               or (hi is not None and (f >= hi if hi_open else f > hi)))
        if bad:
            raise _Bad(f"must be a finite number {_range(lo, hi, lo_open, hi_open)}, got {_toml(v)}")
        return f
    return check


def _bool(v):
    if not isinstance(v, bool):
        raise _Bad(f"expected true or false, got {_show(v)}")
    return v


def _str(choices=None, aliases=None):
    def check(v):
        if not isinstance(v, str):
            raise _Bad(f"expected a string, got {_show(v)}")
        if choices is not None and v not in choices and v not in (aliases or {}):
            raise _Bad(f"unknown name {json.dumps(v)}{_did_you_mean(v, [*choices, *(aliases or {})])}; "
                       f"choose from {', '.join(map(json.dumps, choices))}")
        return v
    return check


def _list(item, n=None, min_n=0):
    def check(v):
        if not isinstance(v, list):
            raise _Bad(f"expected an array, got {_show(v)}")
        if (n is not None and len(v) != n) or len(v) < min_n:
            raise _Bad(f"expected {n if n is not None else f'at least {min_n}'} values, got {len(v)}")
        out = []
        for i, x in enumerate(v):
            try:
                out.append(item(x))
            except _Bad as e:
                raise _Bad(f"item {i}: {e}") from None
        return out
    return check


def _either(*checks):
    """The first check that accepts the value; else the first check's complaint."""
    def check(v):
        first = None
        for c in checks:
            try:
                return c(v)
            except _Bad as e:
                first = first or e
        raise first
    return check


def _one_or_list(item):
    def check(v):
        return _list(item, min_n=1)(v) if isinstance(v, list) else item(v)
    return check


def _any_table(v):
    if not isinstance(v, dict):
        raise _Bad(f"expected a table, got {_show(v)}")
    return v


# ---- the schema ------------------------------------------------------------------------------------
# key -> (checker, default): default _REQUIRED, or None for optional keys left out unless given;
# a sub-table is ("table", its schema)
_PATH = _str()
DATA_COMMON = {
    "kind": (_str(("spirals", "xor", "teacher", "csv", "npz", "mnist")), _REQUIRED),
    "seed": (_int(0), 0),
    "test_fraction": (_float(0.0, 1.0, hi_open=True), 0.0),
    "standardize": (_bool, False),
}
DATA_KINDS = {
    "spirals": {"n_samples": (_int(4), 1000), "turns": (_float(0.0, lo_open=True), 2.0),
                "noise": (_float(0.0), 0.03)},
    "xor": {"n_samples": (_int(4), 1000), "noise": (_float(0.0), 0.05)},
    "teacher": {"workload": (_str(tuple(WORKLOADS)), None), "quick": (_bool, False),
                "n_samples": (_int(2), None), "n_features": (_int(1), None), "n_outputs": (_int(1), None),
                "task": (_str(("classification", "regression")), None)},
    "csv": {"path": (_PATH, _REQUIRED), "test_path": (_PATH, None), "val_path": (_PATH, None),
            "target": (_either(_int(), _str()), -1), "header": (_either(_bool, _str(("auto",))), "auto"),
            "delimiter": (_str(), ","), "classification": (_bool, None)},
    "npz": {"path": (_PATH, _REQUIRED), "test_path": (_PATH, None), "val_path": (_PATH, None),
            "x_key": (_str(), "X"), "y_key": (_str(), "y")},
    "mnist": {"folder": (_PATH, None), "fashion": (_bool, False), "use_test": (_bool, True),
              "n_train": (_int(1), None), "n_test": (_int(1), None)},
}
DATA_PATHS = ("path", "test_path", "val_path", "folder")

OPTIMIZER_ARGS = {
    "sgd": {"lr": _float(0.0), "momentum": _float(0.0), "dampening": _float(0.0, 1.0),
            "weight_decay": _float(0.0), "nesterov": _bool},
    "adam": {"lr": _float(0.0), "betas": _list(_float(0.0, 1.0, hi_open=True), n=2), "eps": _float(0.0),
             "weight_decay": _float(0.0), "amsgrad": _bool, "eps_hat": _bool},
    "rmsprop": {"lr": _float(0.0), "alpha": _float(0.0, 1.0), "eps": _float(0.0), "weight_decay": _float(0.0),
                "momentum": _float(0.0), "centered": _bool},
}
OPTIMIZER_ARGS["adamw"] = OPTIMIZER_ARGS["adam"]

SCHEDULE_ARGS = {   # class name -> {argument: checker}; required ones have no default in the class
    "Constant": {},
    "StepDecay": {"step_size": _int(1), "gamma": _float(0.0, lo_open=True)},
    "ExponentialDecay": {"gamma": _float(0.0, lo_open=True)},
    "CosineAnnealing": {"T_max": _int(1), "eta_min": _float(0.0), "warmup_epochs": _int(0)},
    "InverseScaling": {"power_t": _float(0.0), "per": _str(("epoch", "sample"))},
    "ReduceLROnPlateau": {"monitor": _str(), "factor": _float(0.0, 1.0, lo_open=True, hi_open=True),
                          "patience": _int(0), "min_delta": _float(0.0), "mode": _str(("auto", "min", "max")),
                          "cooldown": _int(0), "min_lr": _float(0.0)},
}
SCHEDULE_ALIASES = {"constant": "Constant", "step": "StepDecay", "step_decay": "StepDecay",
                    "exponential": "ExponentialDecay", "exponential_decay": "ExponentialDecay",
                    "cosine": "CosineAnnealing", "cosine_annealing": "CosineAnnealing",
                    "inverse_scaling": "InverseScaling", "invscaling": "InverseScaling",
                    "plateau": "ReduceLROnPlateau", "reduce_lr_on_plateau": "ReduceLROnPlateau"}

EARLY_STOPPING = {"monitor": (_str(), "val_loss"), "patience": (_int(0), 5), "min_delta": (_float(0.0), 0.0),
                  "mode": (_str(("auto", "min", "max")), "auto"), "restore_best_weights": (_bool, True),
                  "baseline": (_float(), None)}
CHECKPOINT = {"monitor": (_str(), "val_loss"), "save_best_only": (_bool, True),
              "mode": (_str(("auto", "min", "max")), "auto")}
TRAINING = {
    "epochs": (_int(1), 10), "batch_size": (_int(1), 32), "seed": (_int(0), 0),
    "validation_split": (_float(0.0, 1.0, lo_open=True, hi_open=True), None), "shuffle": (_bool, True),
    "clip_norm": (_float(0.0, lo_open=True), None), "class_weight": (_either(_str(("balanced",)), _any_table), None),
    "track_gradients": (_bool, False), "verbose": (_int(0, 2), 2), "threads": (_int(1), None),
    "early_stopping": ("table", EARLY_STOPPING), "checkpoint": ("table", CHECKPOINT),
}
OUTPUT = {"dir": (_PATH, None), "plot": (_bool, True), "save_model": (_bool, True)}
SWEEP = {"method": (_str(("grid", "random")), "grid"), "n_trials": (_int(1), None), "seed": (_int(0), 0),
         "metric": (_str(RESULT_METRICS), None), "mode": (_str(("auto", "min", "max")), "auto"),
         "save_runs": (_bool, True), "plots": (_bool, False), "params": (_any_table, _REQUIRED)}
SECTIONS = ("data", "model", "optimizer", "schedule", "training", "output", "sweep")


def _model_schema():
    """The [model] table, with the names the library knows."""
    from .kernels.activations import ACTIVATIONS, ALIASES
    from .kernels.losses import DEFAULT_LOSS, PAIRS
    losses = tuple(sorted({loss for _, loss in PAIRS}))
    return {
        "hidden": (_list(_int(1)), [64]),
        "activation": (_one_or_list(_str(tuple(ACTIVATIONS), ALIASES)), "relu"),
        "output": (_str(tuple(DEFAULT_LOSS)), None),
        "loss": (_str(losses), None),
        "dtype": (_str(("float32", "float64")), "float32"),
        "dropout": (_one_or_list(_float(0.0, 1.0, hi_open=True)), 0.0),
        "init": (_str(("auto", "he", "glorot")), "auto"),
        "norm": (_one_or_list(_str(("none", "batch", "layer"))), "none"),
        "norm_momentum": (_float(0.0, 1.0), 0.1),
        "norm_eps": (_float(0.0, lo_open=True), 1e-5),
    }


class _Ctx:
    """Where a config came from: its file name (for messages) and folder (for relative paths)."""

    def __init__(self, file, overrides=()):
        self.file = file
        self.base = os.path.dirname(os.path.abspath(file))
        self.overrides = dict(overrides)   # dotted key -> where it was set ("--set", "sweep trial 3")

    def error(self, key, message):
        origin = next((src for k, src in self.overrides.items() if key == k or key.startswith(k + ".")), None)
        return ConfigError(self.file, key, message + (f" (set by {origin})" if origin else ""))


def _check_table(ctx, value, schema, path):
    """Validate a table against ``schema``; fill defaults; return a new dict."""
    if not isinstance(value, dict):
        raise ctx.error(path, f"expected a table, got {_show(value)}")
    for k in value:
        if k not in schema:
            raise ctx.error(_join(path, k), f"unknown key{_did_you_mean(k, schema)}; "
                                            f"{path} takes {', '.join(schema)}")
    out = {}
    for k, (check, default) in schema.items():
        key = _join(path, k)
        if check == "table":
            out[k] = _check_table(ctx, value[k], default, key) if k in value else None
            continue
        if k not in value:
            if default is _REQUIRED:
                raise ctx.error(key, "missing (required)")
            out[k] = copy.deepcopy(default)
            continue
        try:
            out[k] = check(value[k])
        except _Bad as e:
            raise ctx.error(key, str(e)) from None
    return out


def _section(ctx, raw, name):
    value = raw.get(name, {})
    if not isinstance(value, dict):
        raise ctx.error(name, f"expected a table, got {_show(value)}")
    return value


def _pick(ctx, table, path, key, check, default):
    """One key checked ahead of its table: the one that decides the rest of the table's schema."""
    return _check_table(ctx, {key: table[key]} if key in table else {}, {key: (check, default)}, path)[key]


def _check_args(ctx, value, args, path, what, required=()):
    """Keyword arguments of an optimizer or schedule: known names, right types."""
    out = {}
    for k, v in value.items():
        if k == "name":
            continue
        if k not in args:
            raise ctx.error(_join(path, k), f"unknown key for {what}{_did_you_mean(k, args)}; "
                                            f"it takes {', '.join(['name', *args])}")
        try:
            out[k] = args[k](v)
        except _Bad as e:
            raise ctx.error(_join(path, k), str(e)) from None
    for k in required:
        if k not in out:
            raise ctx.error(_join(path, k), f"missing (required by {what})")
    return out


def resolve(raw, ctx):
    """Check a parsed config and fill in its defaults; data paths become absolute and must exist.

    Returns the resolved config (nested dicts, ``schedule`` None when absent). Raises ConfigError.
    """
    for k in raw:
        if k not in SECTIONS:
            raise ctx.error(_key(k), f"unknown section{_did_you_mean(k, SECTIONS)}; "
                                     f"a config has {', '.join(f'[{s}]' for s in SECTIONS)}")
    if "data" not in raw:
        raise ctx.error("data", "missing section (required): [data] with kind = \"spirals\", \"csv\", ...")
    data_raw = _section(ctx, raw, "data")
    kind = _pick(ctx, data_raw, "data", "kind", *DATA_COMMON["kind"])
    cfg = {"data": _check_table(ctx, data_raw, {**DATA_COMMON, **DATA_KINDS[kind]}, "data")}
    d = cfg["data"]
    for k in DATA_PATHS:
        if d.get(k) is not None:
            p = os.path.normpath(os.path.join(ctx.base, os.path.expanduser(d[k])))
            if k == "folder" and not os.path.isdir(p):
                raise ctx.error(f"data.{k}", f"no such folder: {p}")
            if k != "folder" and not os.path.isfile(p):
                raise ctx.error(f"data.{k}", f"no such file: {p}")
            d[k] = p
    if kind == "teacher":
        if d["workload"] is not None:
            for k in ("n_features", "n_outputs", "task"):
                if d[k] is not None:
                    raise ctx.error(f"data.{k}", "not with data.workload (the workload fixes the shapes)")
        elif d["quick"]:
            raise ctx.error("data.quick", "only with data.workload")
        else:
            for k, v in (("n_samples", 2000), ("n_features", 16), ("n_outputs", 4), ("task", "classification")):
                d[k] = v if d[k] is None else d[k]
    if kind == "mnist" and d["n_test"] is not None and not d["use_test"]:
        raise ctx.error("data.n_test", "only with use_test = true")
    if d.get("test_path") is not None or (kind == "mnist" and d["use_test"]):
        if d["test_fraction"]:
            raise ctx.error("data.test_fraction", "not with a test file (data.test_path, or mnist's use_test)")

    cfg["model"] = _check_table(ctx, _section(ctx, raw, "model"), _model_schema(), "model")
    m = cfg["model"]
    if m["output"] is not None and m["loss"] is not None:
        from .kernels.losses import PAIRS
        if (m["output"], m["loss"]) not in PAIRS:
            valid = ", ".join(f"{o} + {l}" for o, l in PAIRS)
            raise ctx.error("model.loss", f"{json.dumps(m['loss'])} does not pair with output "
                                          f"{json.dumps(m['output'])}; valid pairs: {valid}")
    n_hidden = len(m["hidden"])
    for k in ("activation", "dropout", "norm"):
        if isinstance(m[k], list) and len(m[k]) != n_hidden:
            raise ctx.error(f"model.{k}", f"lists {len(m[k])} values but model.hidden has {n_hidden} layers")

    opt_raw = _section(ctx, raw, "optimizer")
    name = _pick(ctx, opt_raw, "optimizer", "name", _str(tuple(OPTIMIZER_ARGS)), "adam")
    cfg["optimizer"] = {"name": name, **_check_args(ctx, opt_raw, OPTIMIZER_ARGS[name], "optimizer", name)}

    cfg["schedule"] = None
    if "schedule" in raw:
        s_raw = _section(ctx, raw, "schedule")
        name = _pick(ctx, s_raw, "schedule", "name", _str(tuple(SCHEDULE_ARGS), SCHEDULE_ALIASES), _REQUIRED)
        name = SCHEDULE_ALIASES.get(name, name)
        required = {"StepDecay": ("step_size",), "ExponentialDecay": ("gamma",)}.get(name, ())
        cfg["schedule"] = {"name": name, **_check_args(ctx, s_raw, SCHEDULE_ARGS[name], "schedule", name,
                                                       required)}

    cfg["training"] = _check_table(ctx, raw.get("training", {}), TRAINING, "training")
    t = cfg["training"]
    if isinstance(t["class_weight"], dict):
        cw = {}
        for k, v in t["class_weight"].items():
            key = _join("training.class_weight", k)
            if not re.fullmatch(r"\d+", k):
                raise ctx.error(key, "class_weight's keys are class indices (\"0\" = 2.0)")
            try:
                cw[k] = _float(0.0)(v)
            except _Bad as e:
                raise ctx.error(key, str(e)) from None
        t["class_weight"] = cw
    if t["validation_split"] is not None and d.get("val_path") is not None:
        raise ctx.error("training.validation_split", "not with data.val_path (a validation file)")
    sched = cfg["schedule"]
    if sched is not None and sched["name"] == "CosineAnnealing" and "T_max" not in sched:
        sched["T_max"] = max(1, t["epochs"] - sched.get("warmup_epochs", 0))   # anneal over the whole run

    cfg["output"] = _check_table(ctx, raw.get("output", {}), OUTPUT, "output")
    if cfg["output"]["dir"] is not None:
        cfg["output"]["dir"] = os.path.normpath(os.path.join(ctx.base, os.path.expanduser(cfg["output"]["dir"])))
    return cfg


# ---- reading configs and overrides -----------------------------------------------------------------
def read_config(path):
    """The parsed TOML file; ConfigError for a missing, unreadable or malformed file."""
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(path, None, "no such config file") from None
    except IsADirectoryError:
        raise ConfigError(path, None, "is a folder, not a config file") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(path, None, f"not valid TOML: {e}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(path, None, f"cannot read it: {e}") from None


def _split_key(dotted):
    """'optimizer.lr' -> ['optimizer', 'lr'] (TOML's dotted-key rules: quoted parts stay whole)."""
    try:
        node = tomllib.loads(f"{dotted} = 0")
    except tomllib.TOMLDecodeError:
        return None
    parts = []
    while isinstance(node, dict):
        k, node = next(iter(node.items()))
        parts.append(k)
    return parts


def set_key(raw, dotted, value):
    """Set ``raw[a][b]... = value`` for the dotted key ``a.b...``, creating tables on the way."""
    parts = _split_key(dotted)
    if not parts:
        raise _Bad(f"{dotted!r} is not a dotted key such as optimizer.lr")
    node = raw
    for i, p in enumerate(parts[:-1]):
        nxt = node.setdefault(p, {})
        if not isinstance(nxt, dict):
            raise _Bad(f"{'.'.join(parts[:i + 1])} is {_show(nxt)}, not a table")
        node = nxt
    node[parts[-1]] = value
    return ".".join(_key(p) for p in parts)


def parse_value(text):
    """A --set value as TOML (0.01, true, [64, 32], "relu"); bare words are strings."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def apply_sets(raw, sets, file):
    overrides = {}
    for item in sets or ():
        key, eq, text = item.partition("=")
        if not eq or not key.strip():
            raise ConfigError(file, None, f"--set {item!r}: expected KEY=VALUE, e.g. optimizer.lr=0.01")
        try:
            k = set_key(raw, key.strip(), parse_value(text.strip()))
        except _Bad as e:
            raise ConfigError(file, key.strip(), f"--set: {e}") from None
        overrides[k] = "--set"
    return overrides


# ---- writing TOML (the resolved config) -----------------------------------------------------------------
def dumps_toml(cfg):
    """TOML text for nested dicts of TOML values (None values are left out)."""
    lines = []

    def table(d, path):
        scalars = [(k, v) for k, v in d.items() if v is not None and not isinstance(v, dict)]
        tables = [(k, v) for k, v in d.items() if isinstance(v, dict)]
        if path and (scalars or not tables):
            lines.append(f"\n[{path}]")
        lines.extend(f"{_key(k)} = {_toml(v)}" for k, v in scalars)
        for k, v in tables:
            table(v, _join(path, k))

    table(cfg, "")
    return "\n".join(lines).lstrip("\n") + "\n"


def run_id(cfg):
    """A stable hash of everything in a resolved config that changes the result."""
    key = {k: v for k, v in cfg.items() if k not in ("output", "sweep")}
    key["training"] = {k: v for k, v in cfg["training"].items() if k not in ("verbose", "threads")}
    text = json.dumps(key, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:12]


# ---- data ---------------------------------------------------------------------------------------------
class Data:
    """Train / validation / test arrays and what the network needs to know about them."""

    def __init__(self, X, y, val=None, test=None, classes=None, description=""):
        self.X, self.y, self.val, self.test = X, y, val, test
        self.classes, self.description = classes, description
        self.scaler = None

    @property
    def classification(self):
        return self.y.ndim == 1 and self.y.dtype.kind in "iub"


def make_spirals(n, turns=2.0, noise=0.03, seed=0):
    """Two interleaved spirals: X (n, 2) float32 in about [-1, 1]^2, y (n,) int64 in {0, 1}."""
    rng = np.random.default_rng(seed)
    n0 = n // 2
    r = np.sqrt(rng.uniform(0.0025, 1.0, n0))           # sqrt: even density along the arm
    theta = 2 * np.pi * turns * r
    arm = np.c_[r * np.cos(theta), r * np.sin(theta)]
    n1 = n - n0
    X = np.r_[arm, -arm[:n1]] + rng.normal(0.0, noise, (n0 + n1, 2))
    y = np.r_[np.zeros(n0, np.int64), np.ones(n1, np.int64)]
    return X.astype(np.float32), y


def make_xor(n, noise=0.05, seed=0):
    """XOR of the signs: X (n, 2) uniform in [-1, 1]^2 plus Gaussian jitter, y = [x0 x1 > 0]."""
    rng = np.random.default_rng(seed)
    X = rng.uniform(-1.0, 1.0, (n, 2))
    y = (X[:, 0] * X[:, 1] > 0).astype(np.int64)
    return (X + rng.normal(0.0, noise, X.shape)).astype(np.float32), y


def make_teacher(n, d, k, task="classification", seed=0):
    """X ~ N(0, 1) (n, d) float32 and targets from a random tanh teacher network with 32 units
    (as fastbp.bench.make_data): class labels (argmax) or standardised regression targets (n, k)."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d), dtype=np.float32)
    W1 = rng.standard_normal((d, 32)) * (2.0 / math.sqrt(d))
    W2 = rng.standard_normal((32, k)) / math.sqrt(32)
    Z = np.tanh(X @ W1) @ W2
    if task == "classification":
        return X, np.argmax(Z, axis=1).astype(np.int64)
    return X, ((Z - Z.mean(axis=0)) / Z.std(axis=0)).astype(np.float32)


def _relabel(y, classes, ref, path):
    """Codes into ``ref`` (the training file's classes) for labels coded into ``classes``."""
    if ref is None or classes is None:
        return y
    labels = np.asarray(classes)[y]
    idx = np.searchsorted(ref, labels)
    idx = np.clip(idx, 0, len(ref) - 1)
    bad = np.asarray(ref)[idx] != labels
    if bad.any():
        raise _Bad(f"{path}: class label {labels[bad][0]!r} does not occur in the training file")
    return idx.astype(np.int64)


def load_data(cfg, ctx):
    """Load (or generate) the data a resolved config describes. Raises ConfigError."""
    from . import datasets
    d = cfg["data"]
    kind = d["kind"]
    val = test = classes = None
    key = "data.path"
    try:
        if kind == "spirals":
            X, y = make_spirals(d["n_samples"], d["turns"], d["noise"], d["seed"])
            desc = f"spirals: {d['n_samples']} points"
        elif kind == "xor":
            X, y = make_xor(d["n_samples"], d["noise"], d["seed"])
            desc = f"xor: {d['n_samples']} points"
        elif kind == "teacher":
            if d["workload"] is not None:
                from .bench import make_data
                X, y = make_data(d["workload"], quick=d["quick"], seed=d["seed"])
                desc = f"teacher data of the {d['workload']} workload"
            else:
                X, y = make_teacher(d["n_samples"], d["n_features"], d["n_outputs"], d["task"], d["seed"])
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
    except (OSError, ValueError, _Bad) as e:   # DataFileError and InputError are ValueErrors
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


# ---- building the network, optimizer, schedule and callbacks ---------------------------------------------
def _n_outputs(data, output, all_y):
    if data.y.ndim == 2:
        return data.y.shape[1]
    if output == "softmax":
        if data.classes is not None:
            return len(data.classes)
        top = max(int(np.max(y)) for y in all_y if len(y))
        return max(top + 1, 2)
    return 1


def _library_key(section, message, keys):
    """The dotted key a library InputError is about: section.<first word> when that is a key."""
    word = re.match(r"[A-Za-z_]+", message)
    if word and word.group(0) in keys:
        return f"{section}.{word.group(0)}"
    return section


def build(cfg, data, ctx):
    """Network, optimizer and schedule for a resolved config and its data (nothing trained)."""
    import fastbp as fb
    from .errors import InputError
    m, t = cfg["model"], cfg["training"]
    all_y = [data.y] + [p[1] for p in (data.val, data.test) if p is not None]
    output = m["output"] or ("softmax" if data.classification else "identity")
    if data.X.ndim != 2:
        raise ctx.error("data", f"X must be 2-D (rows, features), got shape {data.X.shape}")
    try:
        k = _n_outputs(data, output, all_y)
    except (TypeError, ValueError) as e:
        raise ctx.error("data", f"cannot count the classes of y: {e}") from None
    sizes = [data.X.shape[1], *m["hidden"], k]
    try:
        net = fb.Network(sizes, activation=m["activation"], output=output, loss=m["loss"], dtype=m["dtype"],
                         seed=t["seed"], dropout=m["dropout"], init=m["init"],
                         norm=None if m["norm"] == "none" else m["norm"], norm_momentum=m["norm_momentum"],
                         norm_eps=m["norm_eps"])
    except InputError as e:
        raise ctx.error(_library_key("model", str(e), m), str(e)) from None
    o = dict(cfg["optimizer"])
    name = o.pop("name")
    if "betas" in o:
        o["betas"] = tuple(o["betas"])
    try:
        opt = {"sgd": fb.SGD, "adam": fb.Adam, "adamw": fb.AdamW, "rmsprop": fb.RMSprop}[name](**o)
    except InputError as e:
        raise ctx.error(_library_key("optimizer", str(e), o), str(e)) from None
    schedule = None
    if cfg["schedule"] is not None:
        s = dict(cfg["schedule"])
        cls = getattr(fb.schedules, s.pop("name"))
        try:
            schedule = cls(**s)
        except InputError as e:
            raise ctx.error(_library_key("schedule", str(e), s), str(e)) from None

    # what fit will record, so monitors are checked now rather than when the trial starts
    validation = data.val is not None or t["validation_split"] is not None
    keys = ["loss"] + (["accuracy"] if net.is_classifier else []) + ["lr"]
    keys += [f"val_{k}" for k in keys if k != "lr"] if validation else []
    watched = [("training.early_stopping.monitor", t["early_stopping"]),
               ("training.checkpoint.monitor", t["checkpoint"] if t["checkpoint"] and
                t["checkpoint"]["save_best_only"] else None)]
    if cfg["schedule"] is not None and cfg["schedule"]["name"] == "ReduceLROnPlateau":
        watched.append(("schedule.monitor", {"monitor": cfg["schedule"].get("monitor", "val_loss")}))
    for key, table in watched:
        if table is not None and table["monitor"] not in keys:
            raise ctx.error(key, f"{json.dumps(table['monitor'])} is not recorded by this run; it records "
                                 f"{', '.join(keys)}" + ("" if validation else
                                                          " (set training.validation_split for val_*)"))
    if t["class_weight"] is not None and not net.is_classifier:
        raise ctx.error("training.class_weight", "needs a classifier (softmax or sigmoid output)")
    return net, opt, schedule


# ---- one training run -------------------------------------------------------------------------------------
def _plot(path, hist, test, best=None):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib is not installed; no learning-curve plot"
    h = hist.history
    epochs = [e + 1 for e in hist.epoch]
    panels = [("loss", "loss")] + ([("accuracy", "accuracy")] if "accuracy" in h else [])
    if len(set(h.get("lr", []))) > 1:
        panels.append(("lr", "learning rate"))
    fig, axes = plt.subplots(1, len(panels), figsize=(4.5 * len(panels), 3.6), squeeze=False)
    for ax, (key, label) in zip(axes[0], panels):
        if key == "lr":
            ax.plot(epochs, h["lr"], color="tab:gray")
        else:
            ax.plot(epochs, h[key], label="train", marker="." if len(epochs) < 30 else None)
            if f"val_{key}" in h:
                ax.plot(epochs, h[f"val_{key}"], label="validation", marker="." if len(epochs) < 30 else None)
            if test and key in test:
                ax.axhline(test[key], color="tab:red", ls="--", lw=1, label=f"test ({test[key]:.4g})")
            if best is not None:
                ax.axvline(best + 1, color="tab:green", ls=":", lw=1, label=f"weights kept (epoch {best + 1})")
            ax.legend()
        if key == "loss" and min(min(h["loss"]), min(h.get("val_loss", [1.0]))) > 0:
            ax.set_yscale("log")
        ax.set(xlabel="epoch", ylabel=label, title=label)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return None


def _write_json(path, obj):
    tmp = path + ".tmp"
    with open(path + ".tmp", "w") as f:
        json.dump(obj, f, indent=1, default=_json_default)
        f.write("\n")
    os.replace(tmp, path)


def _json_default(o):
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def run_training(cfg, data, ctx, out, verbose=None, plot=None, log=print):
    """Train as ``cfg`` says and write the model, metrics, plot and config into ``out``.

    Returns a summary dict: status ("ok", "diverged" or "interrupted"), epochs, time_s,
    the final metrics (those of the weights kept) and the test metrics.
    """
    import fastbp as fb
    from .errors import DivergenceError
    t, o = cfg["training"], cfg["output"]
    net, opt, schedule = build(cfg, data, ctx)
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "config.toml"), "w") as f:
        f.write(f"# resolved from {os.path.abspath(ctx.file)} by fastbp {__version__}\n")
        f.write(dumps_toml({k: v for k, v in cfg.items() if v is not None}))
    if data.scaler is not None:
        np.savez(os.path.join(out, "scaler.npz"), mean=data.scaler[0], std=data.scaler[1])
    if t["threads"] is not None:
        fb.set_num_threads(t["threads"])

    callbacks = [fb.CSVLogger(os.path.join(out, "metrics.csv"))]
    es = None
    if t["early_stopping"] is not None:
        es = fb.EarlyStopping(**t["early_stopping"])
        callbacks.append(es)
    if t["checkpoint"] is not None:
        callbacks.append(fb.ModelCheckpoint(os.path.join(out, "checkpoint.npz"), **t["checkpoint"]))
    cw = t["class_weight"]
    if isinstance(cw, dict):
        cw = {int(k): v for k, v in cw.items()}
    fit_kw = dict(epochs=t["epochs"], batch_size=t["batch_size"], optimizer=opt, shuffle=t["shuffle"],
                  schedule=schedule, callbacks=callbacks, clip_norm=t["clip_norm"], class_weight=cw,
                  track_gradients=t["track_gradients"], verbose=t["verbose"] if verbose is None else verbose)
    if data.val is not None:
        fit_kw["validation_data"] = data.val
    elif t["validation_split"] is not None:
        fit_kw["validation_split"] = t["validation_split"]

    status, error = "ok", None
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Training interrupted by user")
        try:
            net.fit(data.X, data.y, **fit_kw)
        except DivergenceError as e:
            status, error = "diverged", str(e)
        finally:
            for cb in callbacks:     # fit leaves the CSV open when it raises
                if isinstance(cb, fb.CSVLogger):
                    cb.on_train_end({})
    seconds = time.perf_counter() - t0
    hist = net.history           # also after a DivergenceError: the epochs that finished
    done = len(hist.epoch)
    if status == "ok" and done < t["epochs"] and not net.stop_training:
        status = "interrupted"

    # the metrics of the weights the network keeps: the best epoch's when early stopping restored them
    idx = done - 1
    if es is not None and es.restore_best_weights and es.stopped_epoch >= 0 and es.best_weights is not None:
        idx = hist.epoch.index(es.best_epoch)
    final = {k: v[idx] for k, v in hist.history.items()} if done else {}
    test = net.evaluate(*data.test) if data.test is not None and status != "diverged" else None
    files = ["config.toml", "metrics.csv"]
    if o["save_model"]:
        net.save(os.path.join(out, "model.npz"))
        files.insert(0, "model.npz")
    summary = {
        "status": status, "error": error, "epochs": done, "time_s": seconds, "final": final, "test": test,
        "best_epoch": hist.epoch[idx] if done else None,
        "stopped_early": bool(net.stop_training and done < t["epochs"]),
    }
    report = {"fastbp": __version__, "config_file": os.path.abspath(ctx.file), "run_id": run_id(cfg),
              "data": data.description, "n_train": int(data.X.shape[0]), "layer_sizes": net.layer_sizes,
              "n_params": net.n_params, **summary, "epoch": hist.epoch, "history": hist.history}
    _write_json(os.path.join(out, "metrics.json"), report)
    files.append("metrics.json")
    if data.scaler is not None:
        files.append("scaler.npz")
    if (o["plot"] if plot is None else plot) and done:
        restored = idx != done - 1
        note = _plot(os.path.join(out, "learning_curves.png"), hist, test, hist.epoch[idx] if restored else None)
        if note:
            log(f"note: {note}")
        else:
            files.append("learning_curves.png")
    summary["files"] = files
    return summary


def _fmt_metrics(final, test):
    items = [(k, v) for k, v in (final or {}).items() if k in RESULT_METRICS]
    items += [(f"test_{k}", v) for k, v in (test or {}).items()]
    return ", ".join(f"{k} {v:.4g}" for k, v in items)


# ---- commands ------------------------------------------------------------------------------------------
def _default_out(config):
    return os.path.join("out", os.path.splitext(os.path.basename(config))[0])


def cmd_train(args):
    raw = read_config(args.config)
    ctx = _Ctx(args.config, apply_sets(raw, args.set, args.config))
    raw.pop("sweep", None)
    cfg = resolve(raw, ctx)
    out = args.out or cfg["output"]["dir"] or _default_out(args.config)
    data = load_data(cfg, ctx)
    net, opt, schedule = build(cfg, data, ctx)
    t = cfg["training"]
    val = ("validation file" if data.val is not None else
           f"validation_split {t['validation_split']}" if t["validation_split"] else "no validation")
    print(f"data: {data.description}; {data.X.shape[0]} training rows, {data.X.shape[1]} features"
          f"{'' if data.test is None else f', {data.test[0].shape[0]} test rows'}; {val}")
    print(f"model: {net!r}, {net.n_params:,} parameters; optimizer: {opt!r}"
          + (f"; schedule: {schedule!r}" if schedule is not None else ""))
    print(f"training: {t['epochs']} epochs, batch {t['batch_size']}, seed {t['seed']}; output: {out}")
    if args.dry_run:
        print("dry run: the config is valid; nothing trained")
        return 0
    sys.stdout.flush()
    s = run_training(cfg, data, ctx, out, verbose=0 if args.quiet else None)
    when = f"{s['epochs']} epochs in {s['time_s']:.2f} s"
    if s["status"] == "diverged":
        print(f"fastbp: training diverged after {when}: {s['error']}", file=sys.stderr)
    elif s["status"] == "interrupted":
        print(f"interrupted after {when}; the model and metrics so far are saved")
    else:
        print(f"trained {when}" + (" (stopped early)" if s["stopped_early"] else ""))
    print(f"final: {_fmt_metrics(s['final'], s['test'])}")
    print(f"wrote {', '.join(os.path.join(out, f) for f in s['files'])}")
    return {"ok": 0, "diverged": EXIT_FAIL, "interrupted": EXIT_INTERRUPTED}[s["status"]]


# ---- sweeps ------------------------------------------------------------------------------------------------
def _check_space(ctx, sweep):
    """sweep.params -> [(dotted key, list of candidates or (distribution, lo, hi))]."""
    space = []
    if not sweep["params"]:
        raise ctx.error("sweep.params", "empty; list the values to try, e.g. \"optimizer.lr\" = [1e-3, 3e-3]")
    for k, v in sweep["params"].items():
        key = _join("sweep.params", k)
        if (_split_key(k) or [""])[0] == "sweep":
            raise ctx.error(key, "a sweep cannot vary its own [sweep] settings")
        if isinstance(v, dict) and len(v) == 1 and next(iter(v)) in ("uniform", "log_uniform", "int_uniform"):
            dist, bounds = next(iter(v.items()))
            if sweep["method"] != "random":
                raise ctx.error(key, f"{dist} needs method = \"random\"; a grid takes a list of values")
            num = _int() if dist == "int_uniform" else _float(0.0, lo_open=True) if dist == "log_uniform" else _float()
            try:
                lo, hi = _list(num, n=2)(bounds)
            except _Bad as e:
                raise ctx.error(f"{key}.{dist}", str(e)) from None
            if not lo <= hi:
                raise ctx.error(f"{key}.{dist}", f"expected [low, high] with low <= high, got {_toml(bounds)}")
            space.append((k, (dist, lo, hi)))
        elif isinstance(v, list) and v:
            space.append((k, v))
        else:
            raise ctx.error(key, "expected a non-empty array of values"
                                 + (" or {log_uniform = [lo, hi]}" if sweep["method"] == "random" else "")
                                 + f", got {_show(v)}")
    return space


def _round(v):
    return float(f"{v:.4g}")


def expand(sweep, space):
    """The trials, each a dict {dotted key: value}, in a fixed order for a given seed."""
    keys = [k for k, _ in space]
    discrete = all(isinstance(c, list) for _, c in space)
    if sweep["method"] == "grid":
        trials = [[]]
        for _, cands in space:
            trials = [t + [c] for t in trials for c in cands]
        return [dict(zip(keys, t)) for t in trials]
    rng = np.random.default_rng(sweep["seed"])
    n = sweep["n_trials"]
    sizes = [len(c) if isinstance(c, list) else 0 for _, c in space]
    if discrete and math.prod(sizes) <= 1_000_000:   # without replacement, in an order independent of n
        order = rng.permutation(math.prod(sizes))[:n]
        out = []
        for flat in order:
            idx = np.unravel_index(flat, sizes)
            out.append({k: c[i] for (k, c), i in zip(space, idx)})
        return out
    out = []
    for _ in range(n):   # trial i draws the same values whatever n_trials is
        t = {}
        for k, c in space:
            if isinstance(c, list):
                t[k] = c[int(rng.integers(len(c)))]
            else:
                dist, lo, hi = c
                u = rng.random()
                t[k] = (int(lo + math.floor(u * (hi - lo + 1))) if dist == "int_uniform" else
                        _round(math.exp(math.log(lo) + u * (math.log(hi) - math.log(lo)))) if dist == "log_uniform"
                        else _round(lo + u * (hi - lo)))
        out.append(t)
    return out


def _cell(v):
    return v if isinstance(v, str) else json.dumps(v)


def _read_results(path, header, ctx):
    """{run_id: row} of the finished runs in an existing results file. A row cut short by a
    crash is dropped from the file (rewritten atomically), so its run is done again."""
    if not os.path.exists(path) or os.path.getsize(path) == 0:
        return {}
    with open(path, newline="") as f:
        reader = csv.reader(f)
        have = next(reader, None)
        if have != header:
            raise ctx.error("sweep.params", f"{path} holds the results of another sweep (columns {have}); "
                                            f"this one writes {header}: choose another --out or move it away")
        complete = [r for r in reader if len(r) == len(header)]
        f.seek(0)
        n_lines = sum(1 for _ in csv.reader(f)) - 1
    if len(complete) != n_lines:
        with open(path + ".tmp", "w", newline="") as f:
            csv.writer(f, lineterminator="\n").writerows([header, *complete])
        os.replace(path + ".tmp", path)
    return {r[0]: dict(zip(header, r)) for r in complete if r[2] in ("ok", "diverged")}


def _append_row(path, header, row):
    new = not os.path.exists(path) or os.path.getsize(path) == 0
    with open(path, "a+", newline="") as f:
        if not new:                       # a row cut short by a crash: finish its line first
            f.seek(f.tell() - 1)
            if f.read(1) != "\n":
                f.write("\n")
        w = csv.writer(f, lineterminator="\n")
        if new:
            w.writerow(header)
        w.writerow([row.get(k, "") for k in header])
        f.flush()
        os.fsync(f.fileno())


def cmd_sweep(args):
    raw = read_config(args.config)
    ctx = _Ctx(args.config, apply_sets(raw, args.set, args.config))
    if "sweep" not in raw:
        raise ctx.error("sweep", "missing section: a sweep config adds [sweep] with method and [sweep.params]")
    sweep = _check_table(ctx, raw.pop("sweep"), SWEEP, "sweep")
    if sweep["method"] == "random" and sweep["n_trials"] is None:
        raise ctx.error("sweep.n_trials", "missing (required by method = \"random\")")
    if sweep["method"] == "grid" and sweep["n_trials"] is not None:
        raise ctx.error("sweep.n_trials", "only with method = \"random\" (a grid runs every combination)")
    space = _check_space(ctx, sweep)
    trials = expand(sweep, space)

    # check every trial's config, data and objects before the first one trains
    cache, plans = {}, []
    for i, params in enumerate(trials):
        trial_raw = copy.deepcopy(raw)
        where = f"sweep.params (trial {i + 1}: " + ", ".join(f"{k} = {_toml(v)}" for k, v in params.items()) + ")"
        over = dict(ctx.overrides)
        for k, v in params.items():
            try:
                over[set_key(trial_raw, k, copy.deepcopy(v))] = where
            except _Bad as e:
                raise ctx.error(_join("sweep.params", k), str(e)) from None
        tctx = _Ctx(args.config, over)
        cfg = resolve(trial_raw, tctx)
        dkey = json.dumps(cfg["data"], sort_keys=True)
        if dkey not in cache:
            cache[dkey] = load_data(cfg, tctx)
        net = build(cfg, cache[dkey], tctx)[0]
        plans.append((params, cfg, tctx, dkey, run_id(cfg)))
        # the ranking metric must be one that every trial reports
        has_val = cfg["data"].get("val_path") is not None or cfg["training"]["validation_split"] is not None
        has_test = cache[dkey].test is not None
        metric = sweep["metric"] or ("val_loss" if has_val else "test_loss" if has_test else "loss")
        missing = ("validation (training.validation_split or data.val_path)" if metric.startswith("val_") and not
                   has_val else "a test set (data.test_fraction or a test file)" if metric.startswith("test_") and
                   not has_test else "a classifier" if "accuracy" in metric and not net.is_classifier else None)
        if missing:
            raise tctx.error("sweep.metric", f"{json.dumps(metric)} needs {missing}")
    base_cfg = plans[0][1]
    maximize = sweep["mode"] == "max" or (sweep["mode"] == "auto" and "acc" in metric)

    out = args.out or base_cfg["output"]["dir"] or _default_out(args.config)
    results = os.path.join(out, "results.csv")
    keys = [k for k, _ in space]
    header = ["run_id", "trial", "status", *keys, "epochs", "time_s", *RESULT_METRICS, "error"]
    done = _read_results(results, header, ctx)
    todo = sum(1 for p in plans if p[4] not in done)
    print(f"sweep: {sweep['method']} search, {len(plans)} trials over {', '.join(keys)}; {len(plans) - todo} "
          f"already finished in {results}; ranking by {metric} ({'max' if maximize else 'min'})")
    if args.dry_run:
        for i, (params, *_, rid) in enumerate(plans):
            state = "finished" if rid in done else "to run"
            print(f"  [{i + 1}/{len(plans)}] {rid} {_fmt_params(params)}: {state}")
        print("dry run: every trial's config is valid; nothing trained")
        return 0
    os.makedirs(out, exist_ok=True)
    sys.stdout.flush()
    for i, (params, cfg, tctx, dkey, rid) in enumerate(plans):
        tag = f"[{i + 1}/{len(plans)}] {rid} {_fmt_params(params)}"
        if rid in done:
            print(f"{tag}: finished before, skipped")
            continue
        run_dir = os.path.join(out, "runs", rid) if sweep["save_runs"] else os.path.join(out, "runs", "_last")
        s = run_training(cfg, cache[dkey], tctx, run_dir, verbose=0, plot=sweep["plots"])
        if s["status"] == "interrupted":
            print(f"{tag}: interrupted; not recorded. Run the same command again to resume.")
            return EXIT_INTERRUPTED
        row = {"run_id": rid, "trial": i + 1, "status": s["status"], "epochs": s["epochs"],
               "time_s": f"{s['time_s']:.3f}", "error": s["error"] or "",
               **{k: _cell(v) for k, v in params.items()}}
        row.update({k: repr(v) for k, v in s["final"].items() if k in RESULT_METRICS})
        row.update({f"test_{k}": repr(v) for k, v in (s["test"] or {}).items()})
        _append_row(results, header, row)
        done[rid] = {k: str(v) for k, v in row.items()}
        print(f"{tag}: {s['status']}, {_fmt_metrics(s['final'], s['test'])} ({s['time_s']:.2f} s)", flush=True)
    _print_ranking(plans, done, metric, maximize)
    print(f"results: {results}")
    return 0


def _fmt_params(params):
    return " ".join(f"{k}={_toml(v)}" for k, v in params.items())


def _num(row, key):
    try:
        return float(row.get(key) or "nan")
    except ValueError:
        return math.nan


def _print_ranking(plans, done, metric, maximize):
    rows = {rid: (params, done[rid]) for params, *_, rid in plans if rid in done}
    tie = metric.replace("accuracy", "loss")   # equal accuracies: the lower loss first

    def order(item):
        v, t = _num(item[1][1], metric), _num(item[1][1], tie)
        return (math.isnan(v), -v if maximize else v, math.isnan(t), t)
    ranked = sorted(rows.items(), key=order)
    print(f"\nrank  run_id        {metric:>12}  {'status':<9} params")
    for n, (rid, (params, r)) in enumerate(ranked, 1):
        print(f"{n:>4}  {rid}  {_num(r, metric):>12.5g}  {r['status']:<9} {_fmt_params(params)}")
    if ranked and not math.isnan(_num(ranked[0][1][1], metric)):
        rid, (params, r) = ranked[0]
        print(f"best: {rid} with {metric} {_num(r, metric):.5g}: {_fmt_params(params)}")


# ---- info --------------------------------------------------------------------------------------------------
CPU_FLAGS = ("sse4_2", "avx", "avx2", "fma", "f16c", "avx512f", "avx512dq", "avx512bw", "avx512vl",
             "avx512_vnni", "avx512_bf16", "avx512_fp16", "amx_tile", "asimd", "sve")


def _version(dist):
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def _cpu():
    model = flags = None
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                k, _, v = line.partition(":")
                k = k.strip()
                if k in ("model name", "Model", "Hardware") and model is None:
                    model = v.strip()
                elif k in ("flags", "Features") and flags is None:
                    flags = set(v.split())
    except OSError:
        pass
    model = model or platform.processor() or platform.machine()
    try:
        import llvmlite.binding as llvm
        host = llvm.get_host_cpu_name()
        if flags is None:
            flags = {f[1:].replace(".", "_") for f in llvm.get_host_cpu_features().flatten().split(",")
                     if f.startswith("+")}
    except Exception:   # an llvmlite without these functions: leave them out
        host = None
    return model, host, flags


def _threading_layers():
    import importlib
    out = {}
    for name, mod in (("tbb", "tbbpool"), ("omp", "omppool"), ("workqueue", "workqueue")):
        try:
            importlib.import_module(f"numba.np.ufunc.{mod}")
            out[name] = True
        except Exception:   # missing library (libtbb, libgomp): not available
            out[name] = False
    return out


def collect_info():
    import numba

    import fastbp as fb
    model, host, flags = _cpu()
    try:
        active = numba.threading_layer()
    except ValueError:
        active = None
    cache = numba.config.CACHE_DIR or None
    pkg = os.path.dirname(os.path.abspath(fb.__file__))
    return {
        "versions": {"fastbp": fb.__version__, "python": platform.python_version(), "numpy": np.__version__,
                     "numba": numba.__version__, "llvmlite": _version("llvmlite"),
                     "scikit-learn": _version("scikit-learn"), "torch": _version("torch"), "tqdm": _version("tqdm"),
                     "matplotlib": _version("matplotlib")},
        "python": {"implementation": platform.python_implementation(), "executable": sys.executable,
                   "platform": platform.platform()},
        "threads": {"fastbp (BLAS)": fb.get_num_threads(), "numba": numba.get_num_threads(),
                    "NUMBA_NUM_THREADS": numba.config.NUMBA_NUM_THREADS, "cpu_count": os.cpu_count(),
                    "cores_available": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
                    else os.cpu_count()},
        "numba_threading_layer": {"requested": numba.config.THREADING_LAYER, "active": active,
                                  "available": [k for k, v in _threading_layers().items() if v]},
        "blas": dict(fb.BLAS_INFO),
        "cpu": {"model": model, "llvm_target": host,
                "features": [f for f in CPU_FLAGS if flags and f in flags],
                "missing": [f for f in CPU_FLAGS if flags is not None and f not in flags
                            and f not in ("asimd", "sve", "amx_tile", "avx512_fp16")]},
        "numba_cache": {"dir": cache or os.path.join(pkg, "__pycache__"),
                        "where": "NUMBA_CACHE_DIR" if cache else "next to the sources (NUMBA_CACHE_DIR unset)",
                        "disabled": bool(numba.config.DISABLE_JIT)},
        "env": {k: os.environ[k] for k in ("FASTBP_BLAS", "FASTBP_DATA", "NUMBA_NUM_THREADS", "NUMBA_CACHE_DIR",
                                           "NUMBA_THREADING_LAYER", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS")
                if k in os.environ},
    }


def cmd_info(args):
    info = collect_info()
    if args.json:
        print(json.dumps(info, indent=1))
        return 0
    v = info["versions"]
    print("versions:  " + "  ".join(f"{k} {v[k] or 'not installed'}" for k in v))
    p = info["python"]
    print(f"python:    {p['implementation']} {v['python']} at {p['executable']} ({p['platform']})")
    b = info["blas"]
    print(f"BLAS:      {b.get('provider')}" + (f", {b['library']}" if b.get("library") else "")
          + (f" ({b['config'].strip()})" if b.get("config") else ""))
    th = info["threads"]
    print(f"threads:   fastbp.get_num_threads() = {th['fastbp (BLAS)']} (BLAS); numba {th['numba']} of "
          f"NUMBA_NUM_THREADS {th['NUMBA_NUM_THREADS']}; {th['cores_available']} of {th['cpu_count']} cores "
          f"available to this process")
    tl = info["numba_threading_layer"]
    print(f"numba threading layer: requested {tl['requested']!r}, available: {', '.join(tl['available']) or 'none'}; "
          + (f"active {tl['active']!r}" if tl["active"] else
             "not started (fastbp's kernels are serial; its GEMMs use the BLAS threads)"))
    c = info["cpu"]
    print(f"CPU:       {c['model']}" + (f" (LLVM target {c['llvm_target']})" if c["llvm_target"] else ""))
    print(f"CPU features: {' '.join(c['features']) or 'unknown'}"
          + (f"; without {' '.join(c['missing'])}" if c["missing"] else ""))
    nc = info["numba_cache"]
    print(f"Numba cache: {nc['dir']}, {nc['where']}" + ("; NUMBA_DISABLE_JIT is set" if nc["disabled"] else ""))
    if info["env"]:
        print("environment: " + "  ".join(f"{k}={val}" for k, val in info["env"].items()))
    return 0


# ---- entry point ---------------------------------------------------------------------------------------------
def _bench(argv):
    from . import bench
    return bench.main(argv)


TRAIN_EPILOG = """\
config sections (every key but data.kind is optional; examples/configs/ has commented examples):
  [data]       kind = spirals|xor|teacher|csv|npz|mnist; seed, test_fraction, standardize, and
               per kind: n_samples, noise, turns | workload, quick, n_features, n_outputs, task |
               path, test_path, val_path, target, header, delimiter, classification | x_key, y_key |
               folder, fashion, use_test, n_train, n_test
  [model]      hidden = [64], activation, output, loss, dtype, dropout, init, norm
  [optimizer]  name = adam|adamw|sgd|rmsprop and its arguments (lr, momentum, betas, weight_decay, ...)
  [schedule]   name = CosineAnnealing|StepDecay|ExponentialDecay|InverseScaling|ReduceLROnPlateau|
               Constant (or cosine, step, ...) and its arguments
  [training]   epochs, batch_size, seed, validation_split, shuffle, clip_norm, class_weight, verbose,
               threads, track_gradients; [training.early_stopping], [training.checkpoint]
  [output]     dir, plot, save_model
paths in a config are relative to its folder; a config error exits with status 2."""

SWEEP_EPILOG = """\
a sweep config is a train config plus:
  [sweep]          method = "grid"|"random", n_trials (random), seed, metric, mode, save_runs, plots
  [sweep.params]   "optimizer.lr" = [1e-3, 3e-3]          # dotted train-config keys: values to try
                   "model.hidden" = [[64], [128, 64]]
                   "optimizer.weight_decay" = { log_uniform = [1e-5, 1e-2] }   # random only; also
                                                          # uniform, int_uniform
results.csv gets one row per finished run (run_id = hash of the run's resolved config); runs already
in it are skipped, so the same command resumes an interrupted sweep."""


def build_parser():
    ap = argparse.ArgumentParser(
        prog="fastbp", description="Train dense networks from TOML configs, run sweeps and benchmarks.",
        epilog="Run 'fastbp COMMAND --help' for a command's options; the config format is described in "
               "fastbp/cli.py and examples/configs/.")
    ap.add_argument("--version", action="version", version=f"fastbp {__version__}")
    sub = ap.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def common(p):
        p.add_argument("config", metavar="CONFIG.toml", help="the experiment's config file")
        p.add_argument("--out", metavar="DIR",
                       help="output folder (default: [output] dir, else out/<config name>)")
        p.add_argument("-s", "--set", action="append", metavar="KEY=VALUE",
                       help="override a config key, e.g. --set optimizer.lr=0.01 (repeatable; VALUE is TOML)")
        p.add_argument("--dry-run", action="store_true",
                       help="check the config, load the data, build the model; train nothing")

    p = sub.add_parser("train", help="train one model from a config",
                       description="Train one model as CONFIG.toml says; write model.npz, metrics.csv,\n"
                                   "metrics.json, learning_curves.png and the resolved config.toml to the\n"
                                   "output folder.", epilog=TRAIN_EPILOG,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    common(p)
    p.add_argument("-q", "--quiet", action="store_true", help="no per-epoch lines (training.verbose = 0)")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("sweep", help="grid or random search over hyper-parameters (resumable)",
                       description="Run every trial of CONFIG.toml's [sweep] (grid or random search): each\n"
                                   "trains as 'fastbp train' would into DIR/runs/RUN_ID/ and adds a row to\n"
                                   "DIR/results.csv as soon as it finishes.",
                       epilog=SWEEP_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    common(p)
    p.set_defaults(func=cmd_sweep)

    sub.add_parser("bench", add_help=False, help="the standard workloads: samples/s and GFLOP/s "
                                                 "(options of python -m fastbp.bench; see fastbp bench --help)")

    p = sub.add_parser("info", help="versions, threads, BLAS, CPU features, Numba cache",
                       description="Print versions, thread counts, the BLAS fastbp calls, CPU features and "
                                   "where Numba caches compiled code.")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=cmd_info)
    return ap


def main(argv=None):
    """The ``fastbp`` command; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["bench"]:
        return _bench(argv[1:])
    args = build_parser().parse_args(argv)
    from .errors import InputError
    if tomllib is None and args.command in ("train", "sweep"):
        print("fastbp: error: reading TOML configs needs Python 3.11+ or the tomli package (pip install tomli)",
              file=sys.stderr)
        return EXIT_CONFIG
    try:
        return args.func(args)
    except ConfigError as e:
        print(f"fastbp: error: {e}", file=sys.stderr)
        return EXIT_CONFIG
    except InputError as e:   # bad data the library found at the start of fit
        where = f"{args.config}: " if getattr(args, "config", None) else ""
        print(f"fastbp: error: {where}{' '.join(str(e).split())}", file=sys.stderr)
        return EXIT_CONFIG
    except KeyboardInterrupt:
        print("fastbp: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:   # output piped into head and the like: stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_FAIL
    except OSError as e:      # an output folder that cannot be written, a full disk, ...
        print(f"fastbp: error: {e}", file=sys.stderr)
        return EXIT_FAIL


if __name__ == "__main__":
    sys.exit(main())
