"""The standard workloads (WORKLOADS.md): their networks, their data and their initial weights.

Defined once, here: the bench, asv (``asv_bench/``) and the command line's ``[data] kind =
"teacher"`` with ``workload = ...`` read these.
"""

import numpy as np

from ..datasets import make_teacher

WORKLOADS = {
    "small": dict(layers=(64, 64, 64, 10), activation="relu", output="softmax", loss="cross_entropy",
                  optimizer="adam", lr=1e-3, momentum=0.0, batch=32, samples=20_000),
    "regress": dict(layers=(8, 64, 64, 1), activation="tanh", output="identity", loss="mse",
                    optimizer="sgd", lr=1e-2, momentum=0.9, batch=32, samples=50_000),
    "mnist": dict(layers=(784, 256, 128, 10), activation="relu", output="softmax", loss="cross_entropy",
                  optimizer="adam", lr=1e-3, momentum=0.0, batch=128, samples=60_000),
    "wide": dict(layers=(1024, 2048, 2048, 10), activation="relu", output="softmax", loss="cross_entropy",
                 optimizer="adam", lr=1e-3, momentum=0.0, batch=256, samples=16_384),
    # not one of WORKLOADS.md's four: issue 22's deeper net (4 x 512 hidden, batch 64), where the
    # products are mid-sized and many; run it by name (--workload deep)
    "deep": dict(layers=(512, 512, 512, 512, 512, 10), activation="relu", output="softmax", loss="cross_entropy",
                 optimizer="adam", lr=1e-3, momentum=0.0, batch=64, samples=32_768),
}
STANDARD = ("small", "regress", "mnist", "wide")   # WORKLOADS.md's four: the default of every benchmark
# --quick: a few batches (and a short last one where the workload has one), for tests
QUICK_SAMPLES = {"small": 512, "regress": 528, "mnist": 544, "wide": 512, "deep": 544}
BETAS, EPS = (0.9, 0.999), 1e-8          # Adam's defaults, the same in every peer


def n_weights(layers):
    """Entries of the weight matrices (biases left out): a step costs about 6 flops per weight
    and sample (2 forward, 4 backward)."""
    return sum(a * b for a, b in zip(layers[:-1], layers[1:]))


def gflops(layers, samples_per_s):
    return 6.0 * n_weights(layers) * samples_per_s / 1e9


def make_data(name, quick=False, seed=1234):
    """X (n, d) float32 ~ N(0, 1) and targets from a fixed random teacher network (tanh, 32 units;
    :func:`fastbp.datasets.make_teacher`): class labels (argmax of its outputs) or standardised
    regression targets (n, 1)."""
    spec = WORKLOADS[name]
    d, k = spec["layers"][0], spec["layers"][-1]
    n = QUICK_SAMPLES[name] if quick else spec["samples"]
    return make_teacher(n, d, k, "classification" if spec["loss"] == "cross_entropy" else "regression", seed)


def make_network(spec, precision="fp32"):
    """The workload's fastbp network (float32, seed 0) and a fresh optimizer for it."""
    import fastbp as fb
    net = fb.Network(spec["layers"], activation=spec["activation"], output=spec["output"],
                     loss=spec["loss"], dtype=np.float32, seed=0, precision=precision)
    opt = (fb.Adam(lr=spec["lr"], betas=BETAS, eps=EPS) if spec["optimizer"] == "adam"
           else fb.SGD(lr=spec["lr"], momentum=spec["momentum"]))
    return net, opt


def initial_weights(name):
    """The weights every peer starts from: fastbp's own initialisation (He normal for relu,
    Glorot uniform otherwise) with seed 0, made once by the driver."""
    return make_network(WORKLOADS[name])[0].get_weights()
