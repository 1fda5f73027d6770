"""One training run: train as a resolved config says and write the model, ``metrics.csv``,
``metrics.json``, the learning curves and the resolved config; and the ``train`` command."""

import json
import os
import sys
import tempfile
import time
import warnings

import numpy as np

from .. import __version__, distributed, set_num_threads
from ..callbacks import CSVLogger, EarlyStopping, ModelCheckpoint
from ..errors import DivergenceError
from .build import build
from .checks import EXIT_FAIL, EXIT_INTERRUPTED, Context
from .config import apply_sets, dumps_toml, read_config, resolve, run_id
from .data import load_data
from .schema import RESULT_METRICS


def plot_curves(path, hist, test, best=None):
    """Loss (and accuracy, and the learning rate when it changed) per epoch into a PNG; the test
    metrics as lines, and the epoch whose weights were kept. A note instead without matplotlib."""
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


def write_json(path, obj):
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


def run_training(cfg, data, ctx, out, verbose=None, plot=None, log=print, callbacks=()):
    """Train as ``cfg`` says and write the model, metrics, plot and config into ``out``.

    Returns a summary dict: status ("ok", "diverged" or "interrupted"), epochs, time_s,
    the final metrics (those of the weights kept) and the test metrics. ``callbacks`` are
    added to fit's (a sweep's pruner).
    """
    t, o = cfg["training"], cfg["output"]
    net, opt, schedule = build(cfg, data, ctx)
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "config.toml"), "w") as f:
        f.write(f"# resolved from {os.path.abspath(ctx.file)} by fastbp {__version__}\n")
        f.write(dumps_toml({k: v for k, v in cfg.items() if v is not None}))
    if data.scaler is not None:
        np.savez(os.path.join(out, "scaler.npz"), mean=data.scaler[0], std=data.scaler[1])
    if t["threads"] is not None:
        set_num_threads(t["threads"])

    callbacks = [CSVLogger(os.path.join(out, "metrics.csv")), *callbacks]
    es = None
    if t["early_stopping"] is not None:
        es = EarlyStopping(**t["early_stopping"])
        callbacks.append(es)
    if t["checkpoint"] is not None:
        callbacks.append(ModelCheckpoint(os.path.join(out, "checkpoint.npz"), **t["checkpoint"]))
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

    comm = distributed.world()   # under mpiexec: data-parallel (fastbp.distributed), every rank the full data
    fit = net.fit if comm is None else (lambda X, y, **kw: distributed.fit(net, X, y, comm=comm, **kw))
    status, error = "ok", None
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Training interrupted by user")
        try:
            fit(data.X, data.y, **fit_kw)
        except DivergenceError as e:
            status, error = "diverged", str(e)
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
    if o["onnx"] and status != "diverged":
        net.to_onnx(os.path.join(out, "model.onnx"))
        files.insert(1 if o["save_model"] else 0, "model.onnx")
    summary = {
        "status": status, "error": error, "epochs": done, "time_s": seconds, "final": final, "test": test,
        "best_epoch": hist.epoch[idx] if done else None,
        "stopped_early": bool(net.stop_training and done < t["epochs"]),
    }
    report = {"fastbp": __version__, "config_file": os.path.abspath(ctx.file), "run_id": run_id(cfg),
              "data": data.description, "n_train": int(data.X.shape[0]), "layer_sizes": net.layer_sizes,
              "n_params": net.n_params, **summary, "epoch": hist.epoch, "history": hist.history}
    write_json(os.path.join(out, "metrics.json"), report)
    files.append("metrics.json")
    if data.scaler is not None:
        files.append("scaler.npz")
    if (o["plot"] if plot is None else plot) and done:
        restored = idx != done - 1
        note = plot_curves(os.path.join(out, "learning_curves.png"), hist, test, hist.epoch[idx] if restored else None)
        if note:
            log(f"note: {note}")
        else:
            files.append("learning_curves.png")
    summary["files"] = files
    return summary


def fmt_metrics(final, test):
    items = [(k, v) for k, v in (final or {}).items() if k in RESULT_METRICS]
    items += [(f"test_{k}", v) for k, v in (test or {}).items()]
    return ", ".join(f"{k} {v:.4g}" for k, v in items)


# ---- the train command ------------------------------------------------------------------------------------------
def default_out(config):
    return os.path.join("out", os.path.splitext(os.path.basename(config))[0])


def cmd_train(args):
    raw = read_config(args.config)
    ctx = Context(args.config, apply_sets(raw, args.set, args.config))
    raw.pop("sweep", None)
    cfg = resolve(raw, ctx)
    out = args.out or cfg["output"]["dir"] or default_out(args.config)
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
    comm = distributed.world()
    if comm is not None and comm.rank != 0:   # rank 0 prints and writes the output; the others are quiet
        sys.stdout, out = open(os.devnull, "w"), tempfile.mkdtemp(prefix=f"fastbp-rank{comm.rank}-")
    s = run_training(cfg, data, ctx, out, verbose=0 if args.quiet else None)
    when = f"{s['epochs']} epochs in {s['time_s']:.2f} s"
    if s["status"] == "diverged":
        print(f"fastbp: training diverged after {when}: {s['error']}", file=sys.stderr)
    elif s["status"] == "interrupted":
        print(f"interrupted after {when}; the model and metrics so far are saved")
    else:
        print(f"trained {when}" + (" (stopped early)" if s["stopped_early"] else ""))
    print(f"final: {fmt_metrics(s['final'], s['test'])}")
    print(f"wrote {', '.join(os.path.join(out, f) for f in s['files'])}")
    return {"ok": 0, "diverged": EXIT_FAIL, "interrupted": EXIT_INTERRUPTED}[s["status"]]
