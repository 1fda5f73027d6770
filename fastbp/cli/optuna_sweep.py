"""``[sweep] method = "optuna"``: trials asked of an Optuna study (TPE, random or CMA-ES sampler,
a median pruner on the sweep's metric per epoch), kept in an RDB storage (default: a SQLite file
in the output folder), so a study resumes after a crash and several ``fastbp sweep`` processes,
on one machine or several sharing the URL, work on one study. Runs go to the same engines as a
grid's (``--jobs``, ``--dask``); each finished run is a row of ``results.csv`` too."""

import json
import math
import os
import sys
import time

from .checks import EXIT_FAIL, EXIT_INTERRUPTED, ConfigError
from .run import default_out, fmt_metrics
from .workers import OptunaPruning, median_pruner

FINISHED = ("COMPLETE", "PRUNED")


def _transient(e):
    """An error of two processes creating the same storage or study at once (retried)."""
    text = f"{type(e).__name__} {e}"
    return any(w in text for w in ("IntegrityError", "DuplicatedStudyError", "database is locked", "UNIQUE",
                                  "already exists"))


def _suggest(trial, space):
    params = {}
    for k, c in space:
        if isinstance(c, list):   # categorical: by index, so lists and tables are choices too
            params[k] = c[trial.suggest_categorical(k, list(range(len(c))))] if len(c) > 1 else c[0]
        else:
            dist, lo, hi = c
            params[k] = (trial.suggest_int(k, int(lo), int(hi)) if dist == "int_uniform" else
                         trial.suggest_float(k, lo, hi, log=dist == "log_uniform"))
    return params


def optuna_sweep(args, raw, ctx, sweep, space):
    from . import sweep as grid
    try:
        import optuna
    except ImportError:
        raise ctx.error("sweep.method", "\"optuna\" needs the optuna package: pip install 'fastbp[optuna]'") from None
    if sweep["sampler"] == "cmaes":
        import importlib.util
        if importlib.util.find_spec("cmaes") is None:
            raise ctx.error("sweep.sampler", "\"cmaes\" needs the cmaes package: pip install cmaes")
    cache = {}
    base = grid.plan_trial(args, raw, ctx, sweep, {}, 0, cache)
    metric, base_cfg = base[5], base[1]
    maximize = sweep["mode"] == "max" or (sweep["mode"] == "auto" and "acc" in metric)
    out = args.out or base_cfg["output"]["dir"] or default_out(args.config)
    storage_url = sweep["storage"] or "sqlite:///" + os.path.abspath(os.path.join(out, "optuna.db"))
    study_name = sweep["study"] or os.path.splitext(os.path.basename(args.config))[0]
    signature = json.dumps({"space": space, "metric": metric, "maximize": maximize}, sort_keys=True)
    key = "sweep.storage" if sweep["storage"] else "sweep"
    if sweep["storage"] is None:
        if args.dry_run and not os.path.isdir(out):
            storage_url = None
        else:
            os.makedirs(out, exist_ok=True)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = None
    if storage_url is not None:
        # a storage given to share a study: each process seeds its sampler apart, else they would
        # all propose the same trials
        seed = sweep["seed"] if sweep["storage"] is None else (sweep["seed"] * 1_000_003 + os.getpid()) % 2**31
        sampler = {"tpe": lambda: optuna.samplers.TPESampler(seed=seed),
                   "random": lambda: optuna.samplers.RandomSampler(seed=seed),
                   "cmaes": lambda: optuna.samplers.CmaEsSampler(seed=seed)}[sweep["sampler"] or "tpe"]()
        pruner = optuna.pruners.NopPruner() if sweep["pruner"] == "none" else median_pruner()
        for attempt in range(6):   # processes that start together race to create the tables and the study
            try:
                storage = optuna.storages.RDBStorage(storage_url)
                study = optuna.create_study(storage=storage, study_name=study_name, sampler=sampler, pruner=pruner,
                                            direction="maximize" if maximize else "minimize", load_if_exists=True)
                break
            except Exception as e:   # noqa: BLE001 - a URL optuna/SQLAlchemy cannot open
                if attempt < 5 and _transient(e):
                    time.sleep(0.2 * (attempt + 1))
                    continue
                raise ctx.error(key, f"cannot open the Optuna storage {storage_url!r}: "
                                     f"{' '.join(str(e).split())[:200]}") from None
        have = study.user_attrs.get("fastbp_sweep")
        if have is None:
            study.set_user_attr("fastbp_sweep", signature)
        elif have != signature:
            raise ctx.error("sweep.study", f"study {study_name!r} in {storage_url} has another search space or "
                                           f"metric; choose another [sweep] study name or storage")
    finished = [t for t in study.trials if t.state.name in FINISHED] if study else []
    print(f"sweep: optuna search ({sweep['sampler'] or 'tpe'} sampler, {sweep['pruner'] or 'median'} pruner), "
          f"{sweep['n_trials']} trials over {', '.join(k for k, _ in space)}; {len(finished)} already finished in "
          f"study {study_name!r} ({storage_url}); ranking by {metric} ({'max' if maximize else 'min'})")
    if args.dry_run:
        print("dry run: the config is valid; nothing trained")
        return 0
    backend = grid._backend(args, sweep, ctx, base_cfg["training"]["threads"])
    results = os.path.join(out, "results.csv")
    keys = [k for k, _ in space]
    header = ["run_id", "trial", "status", *keys, "epochs", "time_s", *grid.RESULT_METRICS, "error"]
    done = grid._read_results(results, header, ctx)
    slots = getattr(backend, "jobs", 1)
    in_flight, n_done, n_failed = {}, 0, 0

    def ask():
        trial = study.ask()
        params = _suggest(trial, space)
        _, cfg, tctx, _, rid, _ = grid.plan_trial(args, raw, ctx, sweep, params, trial.number, cache)
        if rid in done:                        # the same config again: its row's value, no training
            v = grid._num(done[rid], metric)
            study.tell(trial, v if not math.isnan(v) else None,
                       state=None if not math.isnan(v) else optuna.trial.TrialState.FAIL)
            return False
        run_dir = os.path.join(out, "runs", rid) if sweep["save_runs"] else os.path.join(out, "runs", "_scratch", rid)
        monitor = metric if not metric.startswith("test_") and sweep["pruner"] != "none" else None
        cbs = (OptunaPruning(storage_url, study_name, trial.number, monitor),) if monitor else ()
        backend.submit({"cfg": cfg, "file": tctx.file, "overrides": tctx.overrides, "run_dir": run_dir,
                        "plot": sweep["plots"], "threads": backend.threads, "rid": rid, "params": params,
                        "callbacks": cbs})
        in_flight[rid] = trial
        return True

    def n_finished():
        return sum(1 for t in study.get_trials(deepcopy=False) if t.state.name in FINISHED)

    try:
        while True:
            while len(in_flight) < slots and n_finished() + len(in_flight) < sweep["n_trials"]:
                ask()
            if not in_flight:
                break
            task, s, err = next(iter(backend.results()))
            trial = in_flight.pop(task["rid"])
            if s is not None and s["status"] == "interrupted":
                study.tell(trial, state=optuna.trial.TrialState.FAIL)
                backend.close(cancel=True)
                return EXIT_INTERRUPTED
            row = grid.make_row(task["rid"], trial.number + 1, task["params"], s, err)
            value = grid._num(row, metric)
            if s is None or math.isnan(value):
                n_failed += s is None
                study.tell(trial, state=optuna.trial.TrialState.FAIL)
            elif s["pruned"]:
                row["status"] = "pruned"
                study.tell(trial, state=optuna.trial.TrialState.PRUNED)
            else:
                study.tell(trial, value)
            if s is not None:
                done[task["rid"]] = {k: str(v) for k, v in row.items()}
            grid._append_row(results, header, row)
            n_done += 1
            best = (f"; best {metric} {study.best_value:.5g} (trial {study.best_trial.number + 1})"
                    if any(t.state.name == "COMPLETE" for t in study.get_trials(deepcopy=False)) else "")
            what = f"failed: {err}" if s is None else \
                f"{row['status']}, {fmt_metrics(s['final'], s['test'])} ({s['time_s']:.2f} s)"
            print(f"[trial {trial.number + 1}] {task['rid']} {grid._fmt_params(task['params'])}: {what} | "
                  f"{n_done} done, {len(in_flight)} running, {n_failed} failed{best}", flush=True)
    except KeyboardInterrupt:
        for trial in in_flight.values():
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
        print(f"fastbp: interrupted; {n_done} finished runs are in {results} and study {study_name!r}: run the "
              f"same command again to resume", file=sys.stderr)
        backend.close(cancel=True)
        return EXIT_INTERRUPTED
    backend.close()
    if any(t.state.name == "COMPLETE" for t in study.trials):
        b = study.best_trial
        print(f"best: trial {b.number + 1} with {metric} {b.value:.5g}: "
              + " ".join(f"{k}={v}" for k, v in b.params.items()))
    print(f"results: {results}; study {study_name!r} in {storage_url}")
    return EXIT_FAIL if n_failed else 0


__all__ = ["optuna_sweep", "ConfigError"]
