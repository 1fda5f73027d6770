"""The objects a resolved config asks for: the network, its optimizer and schedule (nothing
trained), and a check that every monitor names a key the fit will record."""

import json
import re

import numpy as np

from .. import schedules
from ..errors import InputError
from ..names import history_keys
from ..network import Network
from ..optim import OPTIMIZERS


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


def _make(section, cls, kwargs, ctx, keys=None):
    """``cls(**kwargs)``; its InputError becomes a ConfigError naming the config key."""
    try:
        return cls(**kwargs)
    except InputError as e:
        raise ctx.error(_library_key(section, str(e), kwargs if keys is None else keys), str(e)) from None


def check_monitors(cfg, net, validation, ctx):
    """Every monitor (early stopping, best-only checkpoint, ReduceLROnPlateau) must name a key
    this fit records (:func:`fastbp.names.history_keys`), checked now rather than when it starts."""
    t = cfg["training"]
    keys = history_keys(net.is_classifier, len(net.layer_sizes) - 1, validation, t["track_gradients"])
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


def build(cfg, data, ctx):
    """Network, optimizer and schedule for a resolved config and its data (nothing trained)."""
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
    net = _make("model", Network, dict(
        layer_sizes=sizes, activation=m["activation"], output=output, loss=m["loss"], dtype=m["dtype"],
        seed=t["seed"], dropout=m["dropout"], init=m["init"], norm=None if m["norm"] == "none" else m["norm"],
        norm_momentum=m["norm_momentum"], norm_eps=m["norm_eps"], precision=m["precision"]), ctx, keys=m)
    o = dict(cfg["optimizer"])
    name = o.pop("name")
    if "betas" in o:
        o["betas"] = tuple(o["betas"])
    opt = _make("optimizer", OPTIMIZERS[name], o, ctx)
    schedule = None
    if cfg["schedule"] is not None:
        s = dict(cfg["schedule"])
        schedule = _make("schedule", getattr(schedules, s.pop("name")), s, ctx)
    check_monitors(cfg, net, data.val is not None or t["validation_split"] is not None, ctx)
    if t["class_weight"] is not None and not net.is_classifier:
        raise ctx.error("training.class_weight", "needs a classifier (softmax or sigmoid output)")
    return net, opt, schedule
