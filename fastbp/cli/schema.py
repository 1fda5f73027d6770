"""The config schema: every section's keys, their checkers and defaults.

A schema maps key -> (checker, default); the default is ``REQUIRED``, or None for an optional
key left out unless given; a sub-table is ("table", its schema). The names the library knows
come from its public tables (:mod:`fastbp.names`, :data:`fastbp.optim.OPTIMIZERS`, the classes
of :mod:`fastbp.schedules`), never from copies here.
"""

import inspect

from .. import names
from ..bench.workloads import WORKLOADS
from ..optim import OPTIMIZERS
from .checks import (REQUIRED, any_table, anything, array, boolean, either, integer, number, one_or_list,
                     string)

RESULT_METRICS = ("loss", "accuracy", "val_loss", "val_accuracy", "test_loss", "test_accuracy")
SECTIONS = ("data", "model", "optimizer", "schedule", "training", "output", "sweep")
MODES = ("auto", "min", "max")

PATH = string()
DATA_COMMON = {
    "kind": (string(("spirals", "xor", "teacher", "csv", "npz", "mnist")), REQUIRED),
    "seed": (integer(0), 0),
    "test_fraction": (number(0.0, 1.0, hi_open=True), 0.0),
    "standardize": (boolean, False),
}
DATA_KINDS = {
    "spirals": {"n_samples": (integer(4), 1000), "turns": (number(0.0, lo_open=True), 2.0),
                "noise": (number(0.0), 0.03)},
    "xor": {"n_samples": (integer(4), 1000), "noise": (number(0.0), 0.05)},
    "teacher": {"workload": (string(tuple(WORKLOADS)), None), "quick": (boolean, False),
                "n_samples": (integer(2), None), "n_features": (integer(1), None), "n_outputs": (integer(1), None),
                "task": (string(("classification", "regression")), None)},
    "csv": {"path": (PATH, REQUIRED), "test_path": (PATH, None), "val_path": (PATH, None),
            "target": (either(integer(), string()), -1), "header": (either(boolean, string(("auto",))), "auto"),
            "delimiter": (string(), ","), "classification": (boolean, None)},
    "npz": {"path": (PATH, REQUIRED), "test_path": (PATH, None), "val_path": (PATH, None),
            "x_key": (string(), "X"), "y_key": (string(), "y")},
    "mnist": {"folder": (PATH, None), "fashion": (boolean, False), "use_test": (boolean, True),
              "n_train": (integer(1), None), "n_test": (integer(1), None)},
}
DATA_PATHS = ("path", "test_path", "val_path", "folder")

MODEL = {
    "hidden": (array(integer(1)), [64]),
    "activation": (one_or_list(string(names.ACTIVATIONS, names.ACTIVATION_ALIASES)), "relu"),
    "output": (string(names.OUTPUTS), None),
    "loss": (string(names.LOSSES), None),
    "dtype": (string(names.DTYPES), "float32"),
    "dropout": (one_or_list(number(0.0, 1.0, hi_open=True)), 0.0),
    "init": (string(names.INITS), "auto"),
    "norm": (one_or_list(string(names.NORMS)), "none"),
    "norm_momentum": (number(0.0, 1.0), 0.1),
    "norm_eps": (number(0.0, lo_open=True), 1e-5),
    "precision": (string(names.PRECISIONS, names.PRECISION_ALIASES), "fp32"),
}

# an optimizer argument's checker, by the argument's name; the arguments each optimizer takes
# are read from its constructor (an argument without a checker here is left to the library)
OPTIMIZER_ARG_CHECKS = {
    "lr": number(0.0), "momentum": number(0.0), "dampening": number(0.0, 1.0), "weight_decay": number(0.0),
    "nesterov": boolean, "betas": array(number(0.0, 1.0, hi_open=True), n=2), "eps": number(0.0),
    "amsgrad": boolean, "eps_hat": boolean, "alpha": number(0.0, 1.0), "centered": boolean,
}


def constructor_args(cls, leave_out=("schedule",)):
    """The keyword arguments ``cls(...)`` takes, in their order."""
    kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    return [k for k, p in inspect.signature(cls).parameters.items() if p.kind in kinds and k not in leave_out]


OPTIMIZER_ARGS = {name: {k: OPTIMIZER_ARG_CHECKS.get(k, anything) for k in constructor_args(cls)}
                  for name, cls in OPTIMIZERS.items()}

SCHEDULE_ARGS = {   # class name -> {argument: checker}; required ones have no default in the class
    "Constant": {},
    "StepDecay": {"step_size": integer(1), "gamma": number(0.0, lo_open=True)},
    "ExponentialDecay": {"gamma": number(0.0, lo_open=True)},
    "CosineAnnealing": {"T_max": integer(1), "eta_min": number(0.0), "warmup_epochs": integer(0)},
    "InverseScaling": {"power_t": number(0.0), "per": string(("epoch", "sample"))},
    "ReduceLROnPlateau": {"monitor": string(), "factor": number(0.0, 1.0, lo_open=True, hi_open=True),
                          "patience": integer(0), "min_delta": number(0.0), "mode": string(MODES),
                          "cooldown": integer(0), "min_lr": number(0.0)},
}
SCHEDULE_REQUIRED = {"StepDecay": ("step_size",), "ExponentialDecay": ("gamma",)}
SCHEDULE_ALIASES = {"constant": "Constant", "step": "StepDecay", "step_decay": "StepDecay",
                    "exponential": "ExponentialDecay", "exponential_decay": "ExponentialDecay",
                    "cosine": "CosineAnnealing", "cosine_annealing": "CosineAnnealing",
                    "inverse_scaling": "InverseScaling", "invscaling": "InverseScaling",
                    "plateau": "ReduceLROnPlateau", "reduce_lr_on_plateau": "ReduceLROnPlateau"}

EARLY_STOPPING = {"monitor": (string(), "val_loss"), "patience": (integer(0), 5), "min_delta": (number(0.0), 0.0),
                  "mode": (string(MODES), "auto"), "restore_best_weights": (boolean, True),
                  "baseline": (number(), None)}
CHECKPOINT = {"monitor": (string(), "val_loss"), "save_best_only": (boolean, True), "mode": (string(MODES), "auto")}
TRAINING = {
    "epochs": (integer(1), 10), "batch_size": (integer(1), 32), "seed": (integer(0), 0),
    "validation_split": (number(0.0, 1.0, lo_open=True, hi_open=True), None), "shuffle": (boolean, True),
    "clip_norm": (number(0.0, lo_open=True), None),
    "class_weight": (either(string(("balanced",)), any_table), None),
    "track_gradients": (boolean, False), "verbose": (integer(0, 2), 2), "threads": (integer(1), None),
    "early_stopping": ("table", EARLY_STOPPING), "checkpoint": ("table", CHECKPOINT),
}
OUTPUT = {"dir": (PATH, None), "plot": (boolean, True), "save_model": (boolean, True), "onnx": (boolean, False)}
SWEEP = {"method": (string(("grid", "random", "optuna")), "grid"), "n_trials": (integer(1), None), "seed": (integer(0), 0),
         "metric": (string(RESULT_METRICS), None), "mode": (string(MODES), "auto"),
         "save_runs": (boolean, True), "plots": (boolean, False), "params": (any_table, REQUIRED),
         "jobs": (integer(1), None), "dask": (string(), None),
         # method = "optuna"
         "sampler": (string(("tpe", "random", "cmaes")), None), "pruner": (string(("median", "none")), None),
         "storage": (string(), None), "study": (string(), None)}
