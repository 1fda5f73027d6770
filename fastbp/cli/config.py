"""Config files: reading TOML and ``--set`` overrides, checking a config against the schema and
filling in its defaults (:func:`resolve`), and writing the resolved config back as TOML."""

import hashlib
import importlib.util
import json
import os
import re

try:
    import tomllib
except ModuleNotFoundError:   # Python 3.10: the same parser as the tomli package
    try:
        import tomli as tomllib
    except ModuleNotFoundError:
        tomllib = None

from .. import names
from .checks import (REQUIRED, BadValue, ConfigError, check_args, check_table, did_you_mean, join_key, number,
                     pick, section, show, string, toml_key, toml_value)
from .schema import (DATA_COMMON, DATA_KINDS, DATA_PATHS, MODEL, OPTIMIZER_ARGS, OUTPUT, SCHEDULE_ALIASES,
                     SCHEDULE_ARGS, SCHEDULE_REQUIRED, SECTIONS, TRAINING)


def resolve(raw, ctx):
    """Check a parsed config and fill in its defaults; data paths become absolute and must exist.

    Returns the resolved config (nested dicts, ``schedule`` None when absent). Raises ConfigError.
    """
    for k in raw:
        if k not in SECTIONS:
            raise ctx.error(toml_key(k), f"unknown section{did_you_mean(k, SECTIONS)}; "
                                         f"a config has {', '.join(f'[{s}]' for s in SECTIONS)}")
    if "data" not in raw:
        raise ctx.error("data", "missing section (required): [data] with kind = \"spirals\", \"csv\", ...")
    cfg = {"data": _data(ctx, section(ctx, raw, "data")),
           "model": _model(ctx, section(ctx, raw, "model")),
           "optimizer": _optimizer(ctx, section(ctx, raw, "optimizer")),
           "schedule": _schedule(ctx, section(ctx, raw, "schedule")) if "schedule" in raw else None}
    cfg["training"] = _training(ctx, raw.get("training", {}), cfg["data"], cfg["schedule"])
    cfg["output"] = check_table(ctx, raw.get("output", {}), OUTPUT, "output")
    if cfg["output"]["onnx"] and importlib.util.find_spec("onnx") is None:
        raise ctx.error("output.onnx", "needs the onnx package (pip install fastbp[onnx])")
    if cfg["output"]["dir"] is not None:
        cfg["output"]["dir"] = os.path.normpath(os.path.join(ctx.base, os.path.expanduser(cfg["output"]["dir"])))
    return cfg


def _data(ctx, raw):
    kind = pick(ctx, raw, "data", "kind", *DATA_COMMON["kind"])
    d = check_table(ctx, raw, {**DATA_COMMON, **DATA_KINDS[kind]}, "data")
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
    return d


def _model(ctx, raw):
    m = check_table(ctx, raw, MODEL, "model")
    if m["output"] is not None and m["loss"] is not None:
        if (m["output"], m["loss"]) not in names.OUTPUT_LOSS_PAIRS:
            valid = ", ".join(f"{o} + {l}" for o, l in names.OUTPUT_LOSS_PAIRS)
            raise ctx.error("model.loss", f"{json.dumps(m['loss'])} does not pair with output "
                                          f"{json.dumps(m['output'])}; valid pairs: {valid}")
    n_hidden = len(m["hidden"])
    for k in ("activation", "dropout", "norm"):
        if isinstance(m[k], list) and len(m[k]) != n_hidden:
            raise ctx.error(f"model.{k}", f"lists {len(m[k])} values but model.hidden has {n_hidden} layers")
    return m


def _optimizer(ctx, raw):
    name = pick(ctx, raw, "optimizer", "name", string(tuple(OPTIMIZER_ARGS)), "adam")
    return {"name": name, **check_args(ctx, raw, OPTIMIZER_ARGS[name], "optimizer", name)}


def _schedule(ctx, raw):
    name = pick(ctx, raw, "schedule", "name", string(tuple(SCHEDULE_ARGS), SCHEDULE_ALIASES), REQUIRED)
    name = SCHEDULE_ALIASES.get(name, name)
    return {"name": name, **check_args(ctx, raw, SCHEDULE_ARGS[name], "schedule", name,
                                       SCHEDULE_REQUIRED.get(name, ()))}


def _training(ctx, raw, data, schedule):
    t = check_table(ctx, raw, TRAINING, "training")
    if isinstance(t["class_weight"], dict):
        cw = {}
        for k, v in t["class_weight"].items():
            key = join_key("training.class_weight", k)
            if not re.fullmatch(r"\d+", k):
                raise ctx.error(key, "class_weight's keys are class indices (\"0\" = 2.0)")
            try:
                cw[k] = number(0.0)(v)
            except BadValue as e:
                raise ctx.error(key, str(e)) from None
        t["class_weight"] = cw
    if t["validation_split"] is not None and data.get("val_path") is not None:
        raise ctx.error("training.validation_split", "not with data.val_path (a validation file)")
    if schedule is not None and schedule["name"] == "CosineAnnealing" and "T_max" not in schedule:
        schedule["T_max"] = max(1, t["epochs"] - schedule.get("warmup_epochs", 0))   # anneal over the whole run
    return t


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


def split_key(dotted):
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
    parts = split_key(dotted)
    if not parts:
        raise BadValue(f"{dotted!r} is not a dotted key such as optimizer.lr")
    node = raw
    for i, p in enumerate(parts[:-1]):
        nxt = node.setdefault(p, {})
        if not isinstance(nxt, dict):
            raise BadValue(f"{'.'.join(parts[:i + 1])} is {show(nxt)}, not a table")
        node = nxt
    node[parts[-1]] = value
    return ".".join(toml_key(p) for p in parts)


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
        except BadValue as e:
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
        lines.extend(f"{toml_key(k)} = {toml_value(v)}" for k, v in scalars)
        for k, v in tables:
            table(v, join_key(path, k))

    table(cfg, "")
    return "\n".join(lines).lstrip("\n") + "\n"


def run_id(cfg):
    """A stable hash of everything in a resolved config that changes the result."""
    key = {k: v for k, v in cfg.items() if k not in ("output", "sweep")}
    key["training"] = {k: v for k, v in cfg["training"].items() if k not in ("verbose", "threads")}
    text = json.dumps(key, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:12]
