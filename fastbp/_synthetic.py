"""Synthetic data sets, seeded: two spirals, XOR, and a random "teacher" network's labels.

Public as ``fastbp.datasets.make_spirals``, ``make_xor`` and ``make_teacher``; the command
line's ``[data] kind = "spirals" | "xor" | "teacher"``, the bench's workload data
(``fastbp.bench.make_data``), asv and the examples all draw from these. Each returns float32
``X`` and int64 labels (or float32 regression targets), the same arrays for the same arguments.
"""

import math

import numpy as np

from ._validation import check_choice, check_float, check_int

TEACHER_HIDDEN = 32     # tanh units of the teacher network
TASKS = ("classification", "regression")


def make_spirals(n_samples, turns=2.0, noise=0.03, seed=0):
    """Two interleaved spirals (Lang & Witbrock, 1988).

    ``X`` (n_samples, 2) float32 in about [-1, 1]^2 and ``y`` (n_samples,) int64: the first
    ``n_samples // 2`` rows are class 0, on one arm ``r (cos 2 pi turns r, sin 2 pi turns r)``
    with ``r = sqrt(u)``, ``u ~ U(0.0025, 1)`` (even density along the arm); the rest are class 1,
    the same points turned by 180 degrees (one more for odd ``n_samples``); then Gaussian noise
    of standard deviation ``noise``.
    """
    n_samples = check_int(n_samples, "n_samples", 2)
    turns = check_float(turns, "turns", lo_open=True)
    noise = check_float(noise, "noise")
    rng = np.random.default_rng(seed)
    n0, n1 = n_samples // 2, n_samples - n_samples // 2      # n1 = n0 + 1 for odd n_samples
    r = np.sqrt(rng.uniform(0.0025, 1.0, n1))
    theta = 2 * np.pi * turns * r
    arm = np.c_[r * np.cos(theta), r * np.sin(theta)]
    X = np.r_[arm[:n0], -arm] + rng.normal(0.0, noise, (n_samples, 2))
    y = np.r_[np.zeros(n0, np.int64), np.ones(n1, np.int64)]
    return X.astype(np.float32), y


def make_xor(n_samples, noise=0.05, seed=0):
    """XOR of the signs: ``X`` (n_samples, 2) float32, uniform in [-1, 1]^2 plus Gaussian noise
    of standard deviation ``noise``; ``y = [x0 x1 > 0]`` (int64) of the points before the noise."""
    n_samples = check_int(n_samples, "n_samples", 1)
    noise = check_float(noise, "noise")
    rng = np.random.default_rng(seed)
    X = rng.uniform(-1.0, 1.0, (n_samples, 2))
    y = (X[:, 0] * X[:, 1] > 0).astype(np.int64)
    return (X + rng.normal(0.0, noise, X.shape)).astype(np.float32), y


def make_teacher(n_samples, n_features, n_outputs, task="classification", seed=0):
    """Inputs and the targets a fixed random network gives them: a learnable, non-linear task.

    ``X`` (n_samples, n_features) float32 ~ N(0, 1); the teacher is
    ``Z = tanh(X W1) W2`` with ``W1`` (n_features, 32) ~ N(0, 4 / n_features) and ``W2``
    (32, n_outputs) ~ N(0, 1 / 32), drawn in that order from ``default_rng(seed)`` after ``X``.
    ``task="classification"``: ``y = argmax(Z)`` (n_samples,) int64; ``"regression"``: ``Z``
    standardised per column (n_samples, n_outputs) float32. The standard workloads' data
    (WORKLOADS.md) is this with the workload's shapes.
    """
    n_samples = check_int(n_samples, "n_samples", 1)
    n_features = check_int(n_features, "n_features", 1)
    n_outputs = check_int(n_outputs, "n_outputs", 1)
    check_choice(task, "task", TASKS)
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n_samples, n_features), dtype=np.float32)
    W1 = rng.standard_normal((n_features, TEACHER_HIDDEN)) * (2.0 / math.sqrt(n_features))
    W2 = rng.standard_normal((TEACHER_HIDDEN, n_outputs)) / math.sqrt(TEACHER_HIDDEN)
    Z = np.tanh(X @ W1) @ W2
    if task == "classification":
        return X, np.argmax(Z, axis=1).astype(np.int64)
    return X, ((Z - Z.mean(axis=0)) / Z.std(axis=0)).astype(np.float32)


__all__ = ["make_spirals", "make_xor", "make_teacher"]
