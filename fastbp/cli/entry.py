"""The ``fastbp`` command's entry point: argparse, and one exit status per kind of failure."""

import argparse
import os
import sys

from .. import __version__
from ..errors import InputError
from .checks import EXIT_CONFIG, EXIT_FAIL, EXIT_INTERRUPTED, ConfigError
from .config import tomllib
from .info import cmd_info
from .run import cmd_train
from .sweep import cmd_sweep


def _bench(argv):
    from .. import bench
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
  [output]     dir, plot, save_model, onnx
paths in a config are relative to its folder; a config error exits with status 2."""

SWEEP_EPILOG = """\
a sweep config is a train config plus:
  [sweep]          method = "grid"|"random"|"optuna", n_trials (random, optuna), seed, metric, mode,
                   save_runs, plots, jobs (runs at once, in worker processes), dask (a scheduler
                   address, or "local"); optuna: sampler = "tpe"|"random"|"cmaes", pruner =
                   "median"|"none", storage (default sqlite:///OUT/optuna.db), study (default: the
                   config's name)
  [sweep.params]   "optimizer.lr" = [1e-3, 3e-3]          # dotted train-config keys: values to try
                   "model.hidden" = [[64], [128, 64]]
                   "optimizer.weight_decay" = { log_uniform = [1e-5, 1e-2] }   # random, optuna; also
                                                          # uniform, int_uniform
results.csv gets one row per finished run (run_id = hash of the run's resolved config); runs already
in it are skipped, so the same command resumes an interrupted sweep; a failed run (a worker that
died) is a row with status "failed", run again next time. With --jobs N or --dask, rows come in
the order runs finish; set training.threads for rows bit-identical to --jobs 1."""


def build_parser():
    ap = argparse.ArgumentParser(
        prog="fastbp", description="Train dense networks from TOML configs, run sweeps and benchmarks.",
        epilog="Run 'fastbp COMMAND --help' for a command's options; the config format is described in "
               "fastbp/cli/__init__.py and examples/configs/.")
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
    p.add_argument("-j", "--jobs", type=int, metavar="N",
                   help="runs at once, each in its own worker process (default: [sweep] jobs, else as many "
                        "as fit the cores at training.threads per run; 1: in this process)")
    p.add_argument("--dask", metavar="ADDRESS",
                   help="send the runs to a dask.distributed scheduler (tcp://host:8786), or 'local' for a "
                        "LocalCluster of --jobs worker processes")
    p.set_defaults(func=cmd_sweep)

    sub.add_parser("bench", add_help=False, help="the standard workloads: samples/s and GFLOP/s "
                                                 "(options of python -m fastbp.bench; see fastbp bench --help)")

    sub.add_parser("warmup", add_help=False, help="compile configurations ahead of time, one process per core "
                                                  "(options of python -m fastbp.warmup; see fastbp warmup --help)")

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
    if argv[:1] == ["warmup"]:
        from .. import warmup
        return warmup.main(argv[1:])
    args = build_parser().parse_args(argv)
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
