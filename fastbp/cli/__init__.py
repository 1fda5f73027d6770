"""The ``fastbp`` command line: scripted experiments from TOML files.

    fastbp train CONFIG.toml [--out DIR] [--set KEY=VALUE ...] [--dry-run] [--quiet]
    fastbp sweep CONFIG.toml [--out DIR] [--set KEY=VALUE ...] [--dry-run] [--jobs N] [--dask ADDRESS]
    fastbp bench [--workload small] [--peers fastbp] [--rounds 1] [--quick] ...
    fastbp warmup [--preset common] [--activations ...] [--jobs N] ...
    fastbp info [--json]

A train config has five sections (every key but ``data.kind`` is optional)::

    [data]       kind = "spirals" | "xor" | "teacher" | "csv" | "npz" | "mnist"
                 seed, test_fraction, standardize, and the kind's own keys (see DATA_KINDS)
    [model]      hidden = [64, 64], activation, output, loss, dtype, dropout, init, norm
    [optimizer]  name = "adam" | "adamw" | "sgd" | "rmsprop", and that optimizer's arguments
    [schedule]   name = "CosineAnnealing" (or "cosine"), and that schedule's arguments
    [training]   epochs, batch_size, seed, validation_split, shuffle, clip_norm, class_weight,
                 verbose, threads, [training.early_stopping], [training.checkpoint]
    [output]     dir, plot, save_model, onnx

A sweep config adds ``[sweep]`` (method = grid | random | optuna, n_trials, seed, metric, mode,
save_runs, plots, jobs, dask; for optuna also sampler, pruner, storage, study) and
``[sweep.params]``, whose dotted keys ("optimizer.lr") name train-config keys and whose
values list the candidates (random search also takes ``{log_uniform = [lo, hi]}``,
``{uniform = [lo, hi]}``, ``{int_uniform = [lo, hi]}``).

Every problem with a config (unknown key, wrong type, bad name, missing file) is reported
as one line, ``fastbp: error: FILE: dotted.key: problem``, with exit status 2, before any
training starts. Paths in a config are relative to the config file's folder.

The package, one job per module: ``checks`` (value checkers, ConfigError), ``schema`` (every
section's keys), ``config`` (TOML in and out, ``--set``, :func:`resolve`), ``data`` (the data a
config describes), ``build`` (network, optimizer, schedule; monitors checked), ``run`` (one
training run and its files; ``train``), ``sweep`` (grid and random search, results.csv),
``workers`` (where runs train: this process, ``--jobs`` worker processes, Dask), ``optuna_sweep``,
``info``, ``entry`` (argparse, :func:`main`).
"""

from .checks import EXIT_CONFIG, EXIT_FAIL, EXIT_INTERRUPTED, ConfigError, Context
from .config import apply_sets, dumps_toml, parse_value, read_config, resolve, run_id, set_key, tomllib
from .data import Data, load_data
from .build import build
from .run import run_training
from .sweep import expand
from .info import collect_info
from .entry import build_parser, main

__all__ = ["main", "build_parser", "ConfigError", "Context", "EXIT_CONFIG", "EXIT_FAIL", "EXIT_INTERRUPTED",
           "read_config", "resolve", "apply_sets", "set_key", "parse_value", "dumps_toml", "run_id", "tomllib",
           "Data", "load_data", "build", "run_training", "expand", "collect_info"]
