"""Scripted experiments: the ``fastbp sweep`` command as a function.

    >>> from fastbp import experiments
    >>> table = experiments.sweep("examples/configs/sweep.toml", jobs=2)           # local workers
    >>> table = experiments.sweep("sweep.toml", dask="tcp://scheduler:8786")      # a Dask cluster

The runs go where the command would send them (``jobs`` worker processes, a Dask cluster, or
this process with ``jobs=1``), rows land in ``OUT/results.csv`` as runs finish, and a second
call resumes. A config problem raises :class:`fastbp.cli.ConfigError` before anything runs.
"""

import argparse
import csv
import io
import os
import contextlib

from .cli.checks import EXIT_INTERRUPTED, ConfigError
from .cli.run import default_out

_NUMERIC = ("trial", "epochs", "time_s", "loss", "accuracy", "val_loss", "val_accuracy", "test_loss",
            "test_accuracy")


def sweep(config, *, out=None, jobs=None, dask=None, sets=(), quiet=True):
    """Run the sweep of ``config`` (a TOML file with [sweep]) and return its results table.

    ``jobs``: runs at once in worker processes (default: [sweep] jobs, else as many as fit the
    cores); ``dask``: a scheduler address or "local"; ``sets``: "KEY=VALUE" overrides as with
    ``--set``. Returns a pandas DataFrame when pandas is installed, else a list of dicts (one
    per row of ``results.csv``; metrics as floats, swept values parsed as TOML). Raises
    ConfigError for a bad config or engine, KeyboardInterrupt when interrupted.
    """
    from .cli.config import parse_value
    from .cli.sweep import cmd_sweep
    args = argparse.Namespace(config=str(config), out=out, set=list(sets), dry_run=False, jobs=jobs, dask=dask)
    sink = io.StringIO()
    with contextlib.redirect_stdout(sink) if quiet else contextlib.nullcontext():
        code = cmd_sweep(args)
    if code == EXIT_INTERRUPTED:
        raise KeyboardInterrupt("sweep interrupted; the finished rows are kept")
    path = os.path.join(out or _out_dir(config), "results.csv")
    with open(path, newline="") as f:
        table = list(csv.DictReader(f))
    fixed = {"run_id", "status", "error", *_NUMERIC}
    for row in table:
        for k, v in row.items():
            if k in _NUMERIC:
                row[k] = float(v) if v not in ("", None) else float("nan")
                if k in ("trial", "epochs") and row[k] == row[k]:
                    row[k] = int(row[k])
            elif k not in fixed:
                row[k] = parse_value(v)
    try:
        import pandas
    except ImportError:
        return table
    return pandas.DataFrame(table)


def _out_dir(config):
    from .cli.config import read_config
    raw = read_config(config)
    d = raw.get("output", {}).get("dir")
    return os.path.join(os.path.dirname(os.path.abspath(config)), d) if d else default_out(str(config))


__all__ = ["sweep", "ConfigError"]
