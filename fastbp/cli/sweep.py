"""Sweeps: a grid or random search over train-config keys, one training run per trial, each
finished run a row of ``results.csv`` at once, so that the same command resumes a sweep."""

import copy
import csv
import json
import math
import os
import shutil
import sys

import numpy as np

from .build import build
from .checks import (EXIT_FAIL, EXIT_INTERRUPTED, BadValue, ConfigError, Context, array, check_table, integer,
                     join_key, number, show, toml_value)
from .config import apply_sets, read_config, resolve, run_id, set_key, split_key
from .data import load_data
from .run import default_out, fmt_metrics
from .schema import RESULT_METRICS, SWEEP
from .workers import DaskJobs, DaskUnreachable, InProcess, LocalJobs, cpu_count


def _check_space(ctx, sweep):
    """sweep.params -> [(dotted key, list of candidates or (distribution, lo, hi))]."""
    space = []
    if not sweep["params"]:
        raise ctx.error("sweep.params", "empty; list the values to try, e.g. \"optimizer.lr\" = [1e-3, 3e-3]")
    for k, v in sweep["params"].items():
        key = join_key("sweep.params", k)
        if (split_key(k) or [""])[0] == "sweep":
            raise ctx.error(key, "a sweep cannot vary its own [sweep] settings")
        if isinstance(v, dict) and len(v) == 1 and next(iter(v)) in ("uniform", "log_uniform", "int_uniform"):
            dist, bounds = next(iter(v.items()))
            if sweep["method"] == "grid":
                raise ctx.error(key, f"{dist} needs method = \"random\" or \"optuna\"; a grid takes a list of values")
            num = {"int_uniform": integer(), "log_uniform": number(0.0, lo_open=True)}.get(dist, number())
            try:
                lo, hi = array(num, n=2)(bounds)
            except BadValue as e:
                raise ctx.error(f"{key}.{dist}", str(e)) from None
            if not lo <= hi:
                raise ctx.error(f"{key}.{dist}", f"expected [low, high] with low <= high, got {toml_value(bounds)}")
            space.append((k, (dist, lo, hi)))
        elif isinstance(v, list) and v:
            space.append((k, v))
        else:
            raise ctx.error(key, "expected a non-empty array of values"
                                 + (" or {log_uniform = [lo, hi]}" if sweep["method"] != "grid" else "")
                                 + f", got {show(v)}")
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
    return {r[0]: dict(zip(header, r)) for r in complete if r[2] in ("ok", "diverged")}   # "failed": run again


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


def plan_trial(args, raw, ctx, sweep, params, i, cache):
    """One trial's resolved config, checked (data loaded into ``cache``, objects built), and the
    ranking metric, which every trial must report."""
    trial_raw = copy.deepcopy(raw)
    where = f"sweep.params (trial {i + 1}: " + ", ".join(f"{k} = {toml_value(v)}" for k, v in params.items()) + ")"
    over = dict(ctx.overrides)
    for k, v in params.items():
        try:
            over[set_key(trial_raw, k, copy.deepcopy(v))] = where
        except BadValue as e:
            raise ctx.error(join_key("sweep.params", k), str(e)) from None
    tctx = Context(args.config, over)
    cfg = resolve(trial_raw, tctx)
    dkey = json.dumps(cfg["data"], sort_keys=True)
    if dkey not in cache:
        cache[dkey] = load_data(cfg, tctx)
    net = build(cfg, cache[dkey], tctx)[0]
    has_val = cfg["data"].get("val_path") is not None or cfg["training"]["validation_split"] is not None
    has_test = cache[dkey].test is not None
    metric = sweep["metric"] or ("val_loss" if has_val else "test_loss" if has_test else "loss")
    missing = ("validation (training.validation_split or data.val_path)" if metric.startswith("val_") and not
               has_val else "a test set (data.test_fraction or a test file)" if metric.startswith("test_") and
               not has_test else "a classifier" if "accuracy" in metric and not net.is_classifier else None)
    if missing:
        raise tctx.error("sweep.metric", f"{json.dumps(metric)} needs {missing}")
    return params, cfg, tctx, dkey, run_id(cfg), metric


def make_row(rid, trial, params, s, err):
    """A results.csv row from a run's summary (or its error when it failed)."""
    row = {"run_id": rid, "trial": trial, **{k: _cell(v) for k, v in params.items()}}
    if s is None:
        row.update(status="failed", error=err)
        return row
    row.update({"status": s["status"], "epochs": s["epochs"], "time_s": f"{s['time_s']:.3f}",
                "error": s["error"] or ""})
    row.update({k: repr(v) for k, v in s["final"].items() if k in RESULT_METRICS})
    row.update({f"test_{k}": repr(v) for k, v in (s["test"] or {}).items()})
    return row


def cmd_sweep(args):
    raw = read_config(args.config)
    ctx = Context(args.config, apply_sets(raw, args.set, args.config))
    if "sweep" not in raw:
        raise ctx.error("sweep", "missing section: a sweep config adds [sweep] with method and [sweep.params]")
    sweep = check_table(ctx, raw.pop("sweep"), SWEEP, "sweep")
    if sweep["method"] != "grid" and sweep["n_trials"] is None:
        raise ctx.error("sweep.n_trials", f"missing (required by method = \"{sweep['method']}\")")
    if sweep["method"] == "grid" and sweep["n_trials"] is not None:
        raise ctx.error("sweep.n_trials", "only with method = \"random\" (a grid runs every combination)")
    space = _check_space(ctx, sweep)

    if sweep["method"] == "optuna":
        from .optuna_sweep import optuna_sweep
        return optuna_sweep(args, raw, ctx, sweep, space)
    if sweep["sampler"] is not None or sweep["pruner"] is not None or sweep["storage"] is not None or \
            sweep["study"] is not None:
        raise ctx.error("sweep.sampler" if sweep["sampler"] is not None else "sweep.pruner" if sweep["pruner"]
                        is not None else "sweep.storage" if sweep["storage"] is not None else "sweep.study",
                        "only with method = \"optuna\"")
    trials = expand(sweep, space)

    # check every trial's config, data and objects before the first one trains
    cache, plans = {}, []
    for i, params in enumerate(trials):
        params, cfg, tctx, dkey, rid, metric = plan_trial(args, raw, ctx, sweep, params, i, cache)
        plans.append((params, cfg, tctx, dkey, rid))
    base_cfg = plans[0][1]
    maximize = sweep["mode"] == "max" or (sweep["mode"] == "auto" and "acc" in metric)

    out = args.out or base_cfg["output"]["dir"] or default_out(args.config)
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
    threads = base_cfg["training"]["threads"]
    backend = _backend(args, sweep, ctx, threads)   # a Dask scheduler that cannot be reached: nothing written
    os.makedirs(out, exist_ok=True)
    sys.stdout.flush()
    tags = {}
    for i, (params, cfg, tctx, dkey, rid) in enumerate(plans):
        tags[rid] = (i, f"[{i + 1}/{len(plans)}] {rid} {_fmt_params(params)}")
        if rid in done:
            print(f"{tags[rid][1]}: finished before, skipped")
            continue
        run_dir = os.path.join(out, "runs", rid) if sweep["save_runs"] else os.path.join(out, "runs", "_scratch", rid)
        backend.submit({"cfg": cfg, "file": tctx.file, "overrides": tctx.overrides, "run_dir": run_dir,
                        "plot": sweep["plots"], "threads": backend.threads, "rid": rid, "params": params})
    if todo:
        print(f"running {todo} runs {backend.name}" + (f", {backend.threads} thread(s) each" if backend.threads
                                                         else ""), flush=True)
    n_done = n_failed = 0
    best = None
    try:
        for task, s, err in backend.results():
            rid, params = task["rid"], task["params"]
            i, tag = tags[rid]
            if s is not None and s["status"] == "interrupted":
                print(f"{tag}: interrupted; not recorded. Run the same command again to resume.")
                backend.close(cancel=True)
                return EXIT_INTERRUPTED
            row = make_row(rid, i + 1, params, s, err)
            if s is None:
                n_failed += 1
                what = f"failed: {err}"
            else:
                done[rid] = {k: str(v) for k, v in row.items()}
                what = f"{s['status']}, {fmt_metrics(s['final'], s['test'])} ({s['time_s']:.2f} s)"
            _append_row(results, header, row)
            if not sweep["save_runs"]:
                shutil.rmtree(task["run_dir"], ignore_errors=True)
            n_done += 1
            v = _num(row, metric)
            if not math.isnan(v) and (best is None or (v > best[0] if maximize else v < best[0])):
                best = (v, rid)
            progress = (f"{n_done}/{todo} done, {backend.running()} running, {n_failed} failed"
                        + (f"; best {metric} {best[0]:.5g} ({best[1]})" if best else ""))
            print(f"{tag}: {what} | {progress}", flush=True)
    except KeyboardInterrupt:
        print(f"fastbp: interrupted; {n_done} finished runs are in {results}: run the same command again "
              f"to resume", file=sys.stderr)
        backend.close(cancel=True)
        return EXIT_INTERRUPTED
    backend.close()
    _print_ranking(plans, done, metric, maximize)
    print(f"results: {results}")
    return EXIT_FAIL if n_failed else 0


def _backend(args, sweep, ctx, threads):
    """The engine the runs go to: --dask / [sweep] dask, else --jobs / [sweep] jobs worker
    processes (default: as many as fit the cores at ``threads`` per run), or this process."""
    dask = getattr(args, "dask", None) or sweep["dask"]
    jobs = getattr(args, "jobs", None)
    if jobs is not None:
        try:
            integer(1)(jobs)
        except BadValue as e:
            raise ConfigError(ctx.file, "--jobs", str(e)) from None
    else:
        jobs = sweep["jobs"]
    cores = cpu_count()
    per_run = threads or 1
    if jobs is None:
        jobs = max(1, cores // per_run)
    elif jobs * per_run > cores and not dask:
        print(f"fastbp: warning: {jobs} jobs x {per_run} thread(s) = {jobs * per_run} busy threads on "
              f"{cores} cores: the runs will slow each other down", file=sys.stderr)
    if dask:
        try:
            backend = DaskJobs(dask, jobs)
        except (DaskUnreachable, ImportError) as e:
            raise ConfigError(ctx.file, "--dask" if getattr(args, "dask", None) else "sweep.dask", str(e)) from None
        backend.threads = per_run
    elif jobs == 1:
        backend = InProcess()
        backend.threads = threads          # as 'fastbp train' would: the configured count, else the default
    else:
        backend = LocalJobs(jobs)
        backend.threads = per_run
    return backend


def _fmt_params(params):
    return " ".join(f"{k}={toml_value(v)}" for k, v in params.items())


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
