"""Side-by-side training benchmark of fastbp and its peers on the standard workloads.

    python -m fastbp.bench                                  # all four workloads, 3 rounds, 2 threads
    python -m fastbp.bench --workload small,regress --rounds 1 --json out.json
    python -m fastbp.bench --peers fastbp,torch --threads 1 --quick

The workloads are those of WORKLOADS.md. The driver makes the data (float32 X ~ N(0, 1),
targets from a fixed random "teacher" network) and the initial weights once, writes them to a
temporary ``.npz``, and runs every peer in its own worker process
(``python -m fastbp.bench --worker PEER ...``, one JSON line on stdout), interleaved: round 1
runs fastbp, torch, torch-fused, jax, sklearn, numpy, sgemm; round 2 the same, and so on. Every
peer starts from the same weights and trains on the same batches in the same order (no
shuffling), so the first-epoch losses must agree; the driver checks that. Ratios are the median
over rounds of the per-round ratio fastbp/peer (> 1: fastbp is faster), because the machines are
noisy and only side-by-side numbers compare.

Peers: ``fastbp``; ``torch`` (eager ``nn.Linear`` stack, default optimizer) and ``torch-fused``
(``fused=True``); ``jax`` (jit-compiled step, optimizer in ``jax.numpy``); ``sklearn``
(``MLPClassifier``/``MLPRegressor`` on float32); ``numpy`` (backprop by hand); and the
pseudo-peer ``sgemm`` (NumPy's best float32 matmul rate on the largest layer's shapes and on
2048^3, to put GFLOP/s in proportion). A peer that is not installed is skipped with a note.
Every worker also measures the machine itself, a short float32 GEMM before and after its run
(``machine_probe``); the driver names the runs whose probe fell well below the run's median,
when the machine, not the peer, was slow.
The exit status is 1 when a loss check fails or a worker fails, else 0.
"""

import argparse
import datetime
import importlib.metadata
import importlib.util
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import warnings

import numpy as np

# ---- the standard workloads (WORKLOADS.md) -------------------------------------------------
WORKLOADS = {
    "small": dict(layers=(64, 64, 64, 10), activation="relu", output="softmax", loss="cross_entropy",
                  optimizer="adam", lr=1e-3, momentum=0.0, batch=32, samples=20_000),
    "regress": dict(layers=(8, 64, 64, 1), activation="tanh", output="identity", loss="mse",
                    optimizer="sgd", lr=1e-2, momentum=0.9, batch=32, samples=50_000),
    "mnist": dict(layers=(784, 256, 128, 10), activation="relu", output="softmax", loss="cross_entropy",
                  optimizer="adam", lr=1e-3, momentum=0.0, batch=128, samples=60_000),
    "wide": dict(layers=(1024, 2048, 2048, 10), activation="relu", output="softmax", loss="cross_entropy",
                 optimizer="adam", lr=1e-3, momentum=0.0, batch=256, samples=16_384),
}
# --quick: a few batches (and a short last one where the workload has one), for tests
QUICK_SAMPLES = {"small": 512, "regress": 528, "mnist": 544, "wide": 512}

PEERS = ("fastbp", "torch", "torch-fused", "jax", "sklearn", "numpy", "sgemm")
PEER_MODULES = {"torch": "torch", "torch-fused": "torch", "jax": "jax", "sklearn": "sklearn"}
BETAS, EPS = (0.9, 0.999), 1e-8          # Adam's defaults, the same in every peer
LOSS_RTOL = 2e-2                         # first-epoch losses must agree to this
THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
WORKER_TIMEOUT_S = 1800


def n_weights(layers):
    """Entries of the weight matrices (biases left out): a step costs about 6 flops per weight
    and sample (2 forward, 4 backward)."""
    return sum(a * b for a, b in zip(layers[:-1], layers[1:]))


def gflops(layers, samples_per_s):
    return 6.0 * n_weights(layers) * samples_per_s / 1e9


# ---- data --------------------------------------------------------------------------------------
def make_data(name, quick=False, seed=1234):
    """X (n, d) float32 ~ N(0, 1) and targets from a fixed random teacher network (tanh, 32 units):
    class labels (argmax of its outputs) or standardised regression targets (n, 1)."""
    spec = WORKLOADS[name]
    d, k = spec["layers"][0], spec["layers"][-1]
    n = QUICK_SAMPLES[name] if quick else spec["samples"]
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d), dtype=np.float32)
    W1 = rng.standard_normal((d, 32)) * (2.0 / math.sqrt(d))
    W2 = rng.standard_normal((32, k)) / math.sqrt(32)
    Z = np.tanh(X @ W1) @ W2
    if spec["loss"] == "cross_entropy":
        y = np.argmax(Z, axis=1).astype(np.int64)
    else:
        y = ((Z - Z.mean()) / Z.std()).astype(np.float32)
    return X, y


def initial_weights(name):
    """The weights every peer starts from: fastbp's own initialisation (He normal for relu,
    Glorot uniform otherwise) with seed 0, made once by the driver."""
    return make_network(WORKLOADS[name])[0].get_weights()


def write_data(path, name, quick):
    X, y = make_data(name, quick)
    arrays = {"X": X, "y": y, "workload": np.array(name)}
    for l, (W, b) in enumerate(initial_weights(name)):
        arrays[f"W{l}"], arrays[f"b{l}"] = W, b
    np.savez(path, **arrays)


def read_data(path):
    with np.load(path, allow_pickle=False) as f:
        X, y = f["X"], f["y"]
        weights, l = [], 0
        while f"W{l}" in f.files:
            weights.append((f[f"W{l}"], f[f"b{l}"]))
            l += 1
    return X, y, weights


# ---- what every worker does --------------------------------------------------------------------
def time_training(run_epoch, n, epochs):
    """One warm-up epoch (compile + one epoch), then ``epochs`` timed epochs.

    ``run_epoch()`` trains one epoch over all batches in order and returns its mean batch loss
    weighted by batch size (as Keras' history)."""
    t0 = time.perf_counter()
    loss_first = float(run_epoch())
    first = time.perf_counter() - t0
    times, losses = [], [loss_first]
    cpu0 = time.process_time()
    for _ in range(epochs):
        t0 = time.perf_counter()
        losses.append(float(run_epoch()))
        times.append(time.perf_counter() - t0)
    # CPU seconds per wall second of the timed epochs: well under the thread count with a
    # spinning pool means the process was starved by others on the same cores
    cpu_per_wall = (time.process_time() - cpu0) / sum(times)
    return {"first_epoch_s": first, "epoch_s": times, "samples_per_s": n * epochs / sum(times),
            "loss_first": loss_first, "loss_last": losses[-1], "losses": losses, "cpu_per_wall": cpu_per_wall,
            "load_average": os.getloadavg()[0]}


def time_predict(predict, n, reps=3):
    """Samples/s of predicting all of X: one warm-up call, then the median of ``reps`` calls."""
    predict()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        predict()
        times.append(time.perf_counter() - t0)
    return n / statistics.median(times)


def limit_blas_threads(threads):
    """threadpoolctl's limit where installed; the *_NUM_THREADS variables set at spawn otherwise."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return
    threadpool_limits(threads)


def batches(n, batch):
    return [(i, min(i + batch, n)) for i in range(0, n, batch)]


# ---- peers -------------------------------------------------------------------------------------
def make_network(spec):
    """The workload's fastbp network (float32, seed 0) and a fresh optimizer for it."""
    import fastbp as fb
    net = fb.Network(spec["layers"], activation=spec["activation"], output=spec["output"],
                     loss=spec["loss"], dtype=np.float32, seed=0)
    opt = (fb.Adam(lr=spec["lr"], betas=BETAS, eps=EPS) if spec["optimizer"] == "adam"
           else fb.SGD(lr=spec["lr"], momentum=spec["momentum"]))
    return net, opt


def run_fastbp(spec, X, y, weights, threads, epochs):
    import fastbp as fb
    from fastbp.network import PREDICT_BATCH
    fb.set_num_threads(threads)  # the one knob: no thread environment variables for fastbp
    net, opt = make_network(spec)
    net.set_weights(weights)

    def run_epoch():
        return net.fit(X, y, epochs=1, batch_size=spec["batch"], optimizer=opt, shuffle=False).history["loss"][-1]

    out = time_training(run_epoch, X.shape[0], epochs)
    out["predict_samples_per_s"] = time_predict(lambda: net.predict_proba(X), X.shape[0])
    out["predict_batch"] = PREDICT_BATCH
    out["library"] = {"fastbp": fb.__version__, "blas": fb.BLAS_INFO.get("provider"),
                      "numba_threads": fb.get_num_threads()}
    return out


def run_torch(spec, X, y, weights, threads, epochs, fused=False):
    import torch
    from fastbp.network import PREDICT_BATCH
    torch.set_num_threads(threads)
    act = {"relu": torch.nn.ReLU, "tanh": torch.nn.Tanh}[spec["activation"]]
    mods = []
    for l, (W, b) in enumerate(weights):
        lin = torch.nn.Linear(*W.shape)
        with torch.no_grad():  # torch keeps Linear weights as (out, in)
            lin.weight.copy_(torch.from_numpy(np.ascontiguousarray(W.T)))
            lin.bias.copy_(torch.from_numpy(b))
        mods.append(lin)
        if l < len(weights) - 1:
            mods.append(act())
    model = torch.nn.Sequential(*mods)
    kw = {"fused": True} if fused else {}
    if spec["optimizer"] == "adam":
        opt = torch.optim.Adam(model.parameters(), lr=spec["lr"], betas=BETAS, eps=EPS, **kw)
    else:
        opt = torch.optim.SGD(model.parameters(), lr=spec["lr"], momentum=spec["momentum"], **kw)
    classify = spec["loss"] == "cross_entropy"
    crit = torch.nn.CrossEntropyLoss() if classify else torch.nn.MSELoss()
    Xt, yt, n = torch.from_numpy(X), torch.from_numpy(y), X.shape[0]
    spans = batches(n, spec["batch"])

    def run_epoch():
        model.train()
        total = 0.0
        for i, j in spans:
            opt.zero_grad(set_to_none=True)
            loss = crit(model(Xt[i:j]), yt[i:j])
            loss.backward()
            opt.step()
            total += loss.item() * (j - i)
        return total / n

    out = time_training(run_epoch, n, epochs)
    model.eval()
    res = torch.empty(n, spec["layers"][-1])

    def predict():  # the same chunking as fastbp's predict_proba
        with torch.inference_mode():
            for i in range(0, n, PREDICT_BATCH):
                z = model(Xt[i:i + PREDICT_BATCH])
                res[i:i + PREDICT_BATCH] = torch.softmax(z, dim=1) if classify else z

    out["predict_samples_per_s"] = time_predict(predict, n)
    out["predict_batch"] = PREDICT_BATCH
    out["library"] = {"torch": torch.__version__, "torch_threads": torch.get_num_threads(),
                      "optimizer_impl": "fused" if fused else "default (for-loop on CPU)"}
    return out


def run_jax(spec, X, y, weights, threads, epochs):
    import jax
    import jax.numpy as jnp
    act = {"relu": jax.nn.relu, "tanh": jnp.tanh}[spec["activation"]]
    classify = spec["loss"] == "cross_entropy"
    lr, mu = spec["lr"], spec["momentum"]
    b1, b2 = BETAS

    def loss_fn(params, xb, yb):
        h = xb
        for W, b in params[:-1]:
            h = act(h @ W + b)
        W, b = params[-1]
        z = h @ W + b
        if classify:
            logp = jax.nn.log_softmax(z, axis=1)
            return -jnp.mean(jnp.take_along_axis(logp, yb[:, None], axis=1))
        return jnp.mean((z - yb) ** 2)

    # torch.optim's update rules written in jax.numpy; state = (step, s1, s2)
    def update(params, grads, state):
        t, s1, s2 = state
        t = t + 1
        if spec["optimizer"] == "adam":
            s1 = jax.tree.map(lambda m, g: b1 * m + (1 - b1) * g, s1, grads)
            s2 = jax.tree.map(lambda v, g: b2 * v + (1 - b2) * g * g, s2, grads)
            tf = t.astype(jnp.float32)
            step = lr / (1 - b1 ** tf)
            bc2 = jnp.sqrt(1 - b2 ** tf)
            params = jax.tree.map(lambda p, m, v: p - step * m / (jnp.sqrt(v) / bc2 + EPS), params, s1, s2)
        else:  # SGD with momentum: buf = mu buf + g (buf starts at 0, so the first buf is g); p -= lr buf
            s1 = jax.tree.map(lambda buf, g: mu * buf + g, s1, grads)
            params = jax.tree.map(lambda p, buf: p - lr * buf, params, s1)
        return params, (t, s1, s2)

    @jax.jit
    def train_step(params, state, xb, yb):
        loss, grads = jax.value_and_grad(loss_fn)(params, xb, yb)
        params, state = update(params, grads, state)
        return params, state, loss

    params = [(jnp.asarray(W), jnp.asarray(b)) for W, b in weights]
    zeros = lambda: jax.tree.map(jnp.zeros_like, params)
    state = [(jnp.zeros((), jnp.int32), zeros(), zeros())]
    n = X.shape[0]
    spans = batches(n, spec["batch"])
    # batches put on the device once, up front (a ready data loader); slicing a device array
    # inside the loop would add one dispatched op per step
    data = [(jax.device_put(X[i:j]), jax.device_put(y[i:j])) for i, j in spans]
    holder = [params]

    def run_epoch():
        p, s = holder[0], state[0]
        losses = []
        for xb, yb in data:
            p, s, loss = train_step(p, s, xb, yb)
            losses.append(loss)
        jax.block_until_ready(p)
        holder[0], state[0] = p, s
        return sum(float(l) * (j - i) for l, (i, j) in zip(losses, spans)) / n

    out = time_training(run_epoch, n, epochs)
    out["library"] = {"jax": jax.__version__, "backend": jax.default_backend(),
                      "XLA_FLAGS": os.environ.get("XLA_FLAGS", "")}
    return out


def run_sklearn(spec, X, y, weights, threads, epochs):
    import sklearn
    from sklearn.neural_network import MLPClassifier, MLPRegressor
    limit_blas_threads(threads)
    classify = spec["loss"] == "cross_entropy"
    base = MLPClassifier if classify else MLPRegressor

    class Preset(base):
        """Starts from the given weights: ``_initialize`` calls ``_init_coef`` once per layer, in
        order, appending to ``coefs_`` after each call."""

        def _init_coef(self, fan_in, fan_out, dtype):
            W, b = self.preset_weights_[len(self.coefs_)]
            return W.astype(dtype, copy=True), b.astype(dtype, copy=True)

    # sklearn's squared_error loss is half the MSE, so its gradient is half of ours: a doubled
    # learning rate gives the same updates (SGD with momentum, constant rate), and the loss it
    # reports is doubled below to compare with the others.
    lr = spec["lr"] if classify else 2 * spec["lr"]
    model = Preset(hidden_layer_sizes=spec["layers"][1:-1], activation=spec["activation"],
                   solver=spec["optimizer"], alpha=0.0, batch_size=spec["batch"], learning_rate="constant",
                   learning_rate_init=lr, momentum=spec["momentum"], nesterovs_momentum=False,
                   beta_1=BETAS[0], beta_2=BETAS[1], epsilon=EPS, shuffle=False, tol=0.0,
                   n_iter_no_change=10**9, early_stopping=False, random_state=0)
    model.preset_weights_ = weights
    scale = 1.0 if classify else 2.0
    yy = y if classify else y.ravel()
    kw = {"classes": np.arange(spec["layers"][-1])} if classify else {}

    def run_epoch():  # one epoch per partial_fit call
        model.partial_fit(X, yy, **kw)
        return scale * model.loss_

    out = time_training(run_epoch, X.shape[0], epochs)
    out["library"] = {"sklearn": sklearn.__version__, "coef_dtype": str(model.coefs_[0].dtype),
                      "note": "Adam's eps added to sqrt(v) without bias correction (sklearn's form)"}
    return out


def run_numpy(spec, X, y, weights, threads, epochs):
    limit_blas_threads(threads)
    Ws = [W.copy() for W, _ in weights]
    bs = [b.copy() for _, b in weights]
    params = Ws + bs
    classify = spec["loss"] == "cross_entropy"
    relu = spec["activation"] == "relu"
    s1 = [np.zeros_like(p) for p in params]
    s2 = [np.zeros_like(p) for p in params]
    step = [0]
    lr, mu = spec["lr"], spec["momentum"]
    b1, b2 = BETAS
    L = len(Ws)

    clip_eps = float(np.finfo(np.float32).eps)
    sk_losses = []  # the warm-up epoch's batch losses as sklearn reports them (see below)

    def train_step(xb, yb, sk_loss=False):
        m = xb.shape[0]
        A = [xb]                                  # A[l] is the input of layer l
        for l in range(L - 1):
            Z = A[l] @ Ws[l]
            Z += bs[l]
            if relu:
                np.maximum(Z, 0, out=Z)
            else:
                np.tanh(Z, out=Z)
            A.append(Z)
        Z = A[-1] @ Ws[-1]
        Z += bs[-1]
        if classify:                              # softmax + cross-entropy, delta = (P - onehot)/m
            Z -= Z.max(axis=1, keepdims=True)
            np.exp(Z, out=Z)
            s = Z.sum(axis=1, keepdims=True)
            rows = np.arange(m)
            loss = float(np.mean(np.log(s[:, 0]) - np.log(Z[rows, yb])))
            if sk_loss:  # sklearn's log_loss clips p to [eps, 1 - eps] first: at most 15.9 per sample
                p_true = np.clip(Z[rows, yb] / s[:, 0], clip_eps, 1 - clip_eps)
                sk_losses.append(float(-np.mean(np.log(p_true))) * m)
            Z /= s
            Z[rows, yb] -= 1
            Z /= m
        else:                                     # MSE over all outputs, delta = 2 (Z - y)/(m k)
            Z -= yb
            loss = float(np.mean(Z * Z))
            Z *= 2.0 / Z.size
        dZ, grads = Z, [None] * (2 * L)
        for l in range(L - 1, -1, -1):
            grads[l] = A[l].T @ dZ
            grads[L + l] = dZ.sum(axis=0)
            if l > 0:
                dA = dZ @ Ws[l].T
                if relu:
                    dA *= A[l] > 0
                else:
                    dA *= 1 - A[l] * A[l]
                dZ = dA
        step[0] += 1
        t = step[0]
        if spec["optimizer"] == "adam":
            lr_t, bc2 = lr / (1 - b1 ** t), math.sqrt(1 - b2 ** t)
            for p, g, m1, v in zip(params, grads, s1, s2):
                m1 *= b1
                m1 += (1 - b1) * g
                v *= b2
                v += (1 - b2) * (g * g)
                p -= lr_t * m1 / (np.sqrt(v) / bc2 + EPS)
        else:
            for p, g, buf in zip(params, grads, s1):
                buf *= mu
                buf += g
                p -= lr * buf
        return loss

    n = X.shape[0]
    spans = batches(n, spec["batch"])

    def run_epoch():
        warm_up = step[0] == 0
        return sum(train_step(X[i:j], y[i:j], warm_up and classify) * (j - i) for i, j in spans) / n

    out = time_training(run_epoch, n, epochs)
    if sk_losses:
        out["loss_first_sklearn_convention"] = sum(sk_losses) / n
    out["library"] = {"numpy": np.__version__}
    return out


def gemm_rate(m, k, n, trans_a=False, trans_b=False, min_time=0.02, reps=5, pick=min):
    """float32 GFLOP/s of NumPy's matmul for C (m, n) = op(A) op(B), from ``reps`` timings of a
    loop long enough to take ``min_time`` seconds: the best one (``pick=min``) or, say, the
    median (``pick=statistics.median``)."""
    rng = np.random.default_rng(0)
    A = rng.standard_normal((k, m) if trans_a else (m, k), dtype=np.float32)
    B = rng.standard_normal((n, k) if trans_b else (k, n), dtype=np.float32)
    A, B = (A.T if trans_a else A), (B.T if trans_b else B)
    C = np.empty((m, n), np.float32)

    def loop(count):
        t0 = time.perf_counter()
        for _ in range(count):
            np.matmul(A, B, out=C)
        return time.perf_counter() - t0

    count = 1
    while loop(count) < min_time and count < 1 << 20:
        count *= 2
    t = pick([loop(count) for _ in range(reps)]) / count
    return 2.0 * m * n * k / t / 1e9


PROBE_N, PROBE_N_QUICK = 512, 128   # the machine probe's square float32 product
PROBE_SLOW = 0.75        # a probe below this fraction of the run's median flags its round
PROBE_PAUSE_S = 0.25     # before the probe after a run (XLA's pool spun into an immediate one)


def machine_probe(threads, quick=False):
    """The machine's float32 GEMM rate right now, in GFLOP/s: NumPy's matmul of two n x n
    matrices on ``threads`` threads, the median of 5 loops of at least 10 ms.

    Every worker takes one before its run (the warm-up epoch separates it from the timed
    ones) and one after, so that a round run while the machine itself was slow can be told
    from a slow peer: on shared machines two virtual cores sometimes share one physical core,
    which halves a two-thread GEMM for seconds or minutes."""
    limit_blas_threads(threads)
    n = PROBE_N_QUICK if quick else PROBE_N
    return gemm_rate(n, n, n, min_time=0.001 if quick else 0.01, pick=statistics.median)


def slow_rounds(results):
    """(reference GFLOP/s, [(workload, round, peer, before, after)]): the runs whose machine
    probe (either one) fell below PROBE_SLOW x the median of every probe of the run."""
    probes = [g for r in results for g in r.get("probe_gflops") or ()]
    if not probes:
        return None, []
    ref = statistics.median(probes)
    slow = [(r["workload"], r["round"], r["peer"], *r["probe_gflops"]) for r in results
            if r.get("probe_gflops") and min(r["probe_gflops"]) < PROBE_SLOW * ref]
    return ref, slow


def run_sgemm(spec, X, y, weights, threads, epochs, quick=False):
    """The GEMMs of a training step for the largest layer (forward X W, dW = X^T dZ,
    dX = dZ W^T) at the workload's batch size, and one large square product."""
    limit_blas_threads(threads)
    layers, B = spec["layers"], spec["batch"]
    l = max(range(len(layers) - 1), key=lambda i: layers[i] * layers[i + 1])
    d_in, d_out = layers[l], layers[l + 1]
    shapes = {"forward": (B, d_in, d_out, False, False), "dW": (d_in, B, d_out, True, False),
              "dX": (B, d_out, d_in, False, True)}
    rates = {name: gemm_rate(*s) for name, s in shapes.items()}
    flops = {name: 2.0 * s[0] * s[1] * s[2] for name, s in shapes.items()}
    layer_rate = sum(flops.values()) / sum(flops[k] / rates[k] for k in rates)
    big = 512 if quick else 2048
    return {"samples_per_s": None, "layer": [d_in, d_out], "batch": B, "gemm_gflops": rates,
            "gemm_layer_gflops": layer_rate, "gemm_square_n": big,
            "gemm_square_gflops": gemm_rate(big, big, big, min_time=0.1 if not quick else 0.01,
                                            reps=5 if not quick else 2),
            "library": {"numpy": np.__version__}}


RUNNERS = {"fastbp": run_fastbp, "torch": run_torch,
           "torch-fused": lambda *a: run_torch(*a, fused=True), "jax": run_jax,
           "sklearn": run_sklearn, "numpy": run_numpy, "sgemm": run_sgemm}


def cores_for(threads):
    """The first ``threads`` cores this process may run on."""
    return sorted(os.sched_getaffinity(0))[:threads]


def worker(args):
    """Run one peer on one workload and print one JSON line."""
    os.sched_setaffinity(0, cores_for(args.threads))  # already inherited from the driver; made sure
    warnings.simplefilter("ignore")
    spec = WORKLOADS[args.workload]
    t0 = time.perf_counter()
    X, y, weights = read_data(args.data)
    out = {"peer": args.worker, "workload": args.workload, "threads": args.threads,
           "affinity": sorted(os.sched_getaffinity(0)), "n_samples": int(X.shape[0]),
           "batch": spec["batch"], "epochs": args.epochs, "shuffle": False}
    try:
        runner = RUNNERS[args.worker]
        before = machine_probe(args.threads, args.quick)
        if args.worker == "sgemm":
            res = runner(spec, X, y, weights, args.threads, args.epochs, quick=args.quick)
        else:
            res = runner(spec, X, y, weights, args.threads, args.epochs)
        out.update(res)
        time.sleep(0.0 if args.quick else PROBE_PAUSE_S)   # the peer's pools stop spinning first
        out["probe_gflops"] = [before, machine_probe(args.threads, args.quick)]
        out["ok"] = True
    except Exception as e:  # reported by the driver as an ERROR row
        out.update(ok=False, error=f"{type(e).__name__}: {e}")
    out["worker_s"] = time.perf_counter() - t0
    print(json.dumps(out), flush=True)
    return 0


# ---- driver ------------------------------------------------------------------------------------
def worker_env(peer, threads):
    env = dict(os.environ)
    for v in THREAD_VARS:
        env.pop(v, None)
    if peer != "fastbp":  # fastbp gets no thread variables: fb.set_num_threads is its only knob
        env.update({v: str(threads) for v in THREAD_VARS})
    if peer == "jax":
        env["JAX_PLATFORMS"] = "cpu"
        env["TF_CPP_MIN_LOG_LEVEL"] = "2"
        if threads == 1:
            env["XLA_FLAGS"] = "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
    return env


def run_worker(peer, workload, threads, data, epochs, quick):
    cmd = [sys.executable, "-m", "fastbp.bench", "--worker", peer, "--workload", workload,
           "--threads", str(threads), "--data", data, "--epochs", str(epochs)] + (["--quick"] if quick else [])
    # the child inherits the spawning thread's CPU mask, so its thread pools start pinned
    saved = os.sched_getaffinity(0)
    os.sched_setaffinity(0, cores_for(threads))
    try:
        proc = subprocess.Popen(cmd, env=worker_env(peer, threads), stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
    finally:
        os.sched_setaffinity(0, saved)
    try:
        stdout, stderr = proc.communicate(timeout=WORKER_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        return {"peer": peer, "workload": workload, "ok": False, "error": f"timed out after {WORKER_TIMEOUT_S} s"}
    for line in reversed(stdout.splitlines()):
        if line.startswith("{"):
            try:
                return json.loads(line)
            except json.JSONDecodeError:
                continue
    tail = (stderr or stdout).strip().splitlines()[-3:]
    return {"peer": peer, "workload": workload, "ok": False,
            "error": f"worker exited with {proc.returncode}: " + " | ".join(tail)}


def version(dist):
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def machine_info(threads):
    import numba

    import fastbp as fb
    cpu = platform.processor() or "?"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((l.split(":", 1)[1].strip() for l in f if l.startswith("model name")), cpu)
    except OSError:
        pass
    return {"date": datetime.datetime.now().isoformat(timespec="seconds"), "cpu": cpu,
            "cores": os.cpu_count(), "cores_available": len(os.sched_getaffinity(0)), "threads": threads,
            "python": platform.python_version(), "numpy": np.__version__, "numba": numba.__version__,
            "torch": version("torch"), "jax": version("jax"), "sklearn": version("scikit-learn"),
            "fastbp": fb.__version__, "fastbp_blas": fb.BLAS_INFO.get("provider"),
            "fastbp_blas_config": fb.BLAS_INFO.get("config"),
            "load_average": [round(x, 2) for x in os.getloadavg()]}


def available(peer):
    mod = PEER_MODULES.get(peer)
    return mod is None or importlib.util.find_spec(mod) is not None


def summarise(name, results, peers):
    """Per peer: median/min/max samples/s, the median per-round ratio fastbp/peer and the loss check."""
    spec = WORKLOADS[name]
    rows = {}
    by_peer = {p: [r for r in results if r["peer"] == p] for p in peers}
    ref_peer = next((p for p in ("fastbp", "numpy", "torch") if any(r.get("ok") for r in by_peer.get(p, []))),
                    None)
    ref = {r["round"]: r for r in by_peer.get(ref_peer, []) if r.get("ok")}
    fb_rounds = {r["round"]: r for r in by_peer.get("fastbp", []) if r.get("ok")}
    for p in peers:
        ok = [r for r in by_peer[p] if r.get("ok")]
        row = {"peer": p, "runs": len(by_peer[p]), "errors": [r["error"] for r in by_peer[p] if not r.get("ok")]}
        if p == "sgemm":
            if ok:
                row.update(gemm_layer_gflops=max(r["gemm_layer_gflops"] for r in ok),
                           gemm_square_gflops=max(r["gemm_square_gflops"] for r in ok),
                           gemm_square_n=ok[0]["gemm_square_n"], layer=ok[0]["layer"])
            rows[p] = row
            continue
        if ok:
            sps = [r["samples_per_s"] for r in ok]
            row.update(samples_per_s=statistics.median(sps), samples_per_s_min=min(sps),
                       samples_per_s_max=max(sps), gflops=gflops(spec["layers"], statistics.median(sps)),
                       first_epoch_s=statistics.median(r["first_epoch_s"] for r in ok),
                       loss_first=statistics.median(r["loss_first"] for r in ok),
                       loss_last=statistics.median(r["loss_last"] for r in ok),
                       cpu_per_wall=statistics.median(r["cpu_per_wall"] for r in ok))
            pred = [r["predict_samples_per_s"] for r in ok if r.get("predict_samples_per_s")]
            if pred:
                row["predict_samples_per_s"] = statistics.median(pred)
            ratios = [fb_rounds[r["round"]]["samples_per_s"] / r["samples_per_s"]
                      for r in ok if r["round"] in fb_rounds]
            if ratios:
                row["ratio"] = statistics.median(ratios)
            # sklearn's log-loss clips p to [eps, 1 - eps], so it reports less than the others once
            # some sample's loss passes -log(eps) = 15.9: compare it with the numpy peer's loss
            # computed the same way (sklearn's training itself is unaffected: its delta is P - Y)
            sk_ref = {r["round"]: r for r in by_peer.get("numpy", [])
                      if r.get("ok") and "loss_first_sklearn_convention" in r}
            key, refs = "loss_first", ref
            if p == "sklearn" and spec["loss"] == "cross_entropy" and sk_ref:
                key, refs = "loss_first_sklearn_convention", sk_ref
                row["loss_reference"] = "numpy, with sklearn's clipped log-loss"
                row["loss_reference_value"] = statistics.median(r[key] for r in sk_ref.values())
            diffs = [abs(r["loss_first"] - refs[r["round"]][key]) / abs(refs[r["round"]][key])
                     for r in ok if r["round"] in refs]
            if diffs:
                row["loss_rel_diff"] = max(diffs)
                row["loss_ok"] = row["loss_rel_diff"] <= LOSS_RTOL
        rows[p] = row
    return {"workload": name, "loss_reference": ref_peer, "peers": rows}


def fmt_rate(x):
    if x is None:
        return "-"
    return f"{x / 1e6:.2f}M" if x >= 1e6 else f"{x / 1e3:.1f}k" if x >= 1e3 else f"{x:.0f}"


def print_table(summary, notes):
    name = summary["workload"]
    spec = WORKLOADS[name]
    layers = "-".join(map(str, spec["layers"]))
    opt = (f"Adam lr {spec['lr']:g}" if spec["optimizer"] == "adam"
           else f"SGD lr {spec['lr']:g} momentum {spec['momentum']:g}")
    print(f"\n== {name}: {layers} {spec['activation']}, {spec['output']}/{spec['loss']}, {opt}, "
          f"batch {spec['batch']}, {n_weights(spec['layers']):,} weights")
    head = (f"{'peer':<12} {'samples/s median (min-max)':>28} {'GFLOP/s':>8} {'1st epoch s':>11} "
            f"{'loss 1st -> last':>19} {'check':>8} {'fastbp/peer':>11} {'predict/s':>9} {'cpu/wall':>8}")
    print(head)
    print("-" * len(head))
    for p, row in summary["peers"].items():
        if p == "sgemm":
            continue
        if "samples_per_s" not in row:
            print(f"{p:<12} ERROR: {'; '.join(row['errors'])[:200]}")
            continue
        rng = f"{fmt_rate(row['samples_per_s'])} ({fmt_rate(row['samples_per_s_min'])}-" \
              f"{fmt_rate(row['samples_per_s_max'])})"
        check = "-" if "loss_ok" not in row else "ok" if row["loss_ok"] else "MISMATCH"
        if p == summary["loss_reference"]:
            check = "ref"
        ratio = f"{row['ratio']:.2f}" if "ratio" in row else "-"
        loss = f"{row['loss_first']:.4f} -> {row['loss_last']:.4f}"
        print(f"{p:<12} {rng:>28} {row['gflops']:>8.2f} {row['first_epoch_s']:>11.2f} {loss:>19} "
              f"{check:>8} {ratio:>11} {fmt_rate(row.get('predict_samples_per_s')):>9} {row['cpu_per_wall']:>8.2f}")
        if row["errors"]:
            print(f"{'':<12} ({len(row['errors'])} failed run(s): {row['errors'][0][:150]})")
        if "loss_reference" in row:
            print(f"{'':<12} (1st-epoch loss checked against {row['loss_reference']}: "
                  f"{row['loss_reference_value']:.4f})")
        elif (p == "sklearn" and spec["loss"] == "cross_entropy" and row.get("loss_ok") is False
              and row["loss_first"] < summary["peers"][summary["loss_reference"]]["loss_first"]):
            print(f"{'':<12} (sklearn's log-loss clips p at float32 eps; add the numpy peer to check it "
                  f"with the same convention)")
    g = summary["peers"].get("sgemm")
    if g and "gemm_layer_gflops" in g:
        line = (f"sgemm (NumPy matmul, float32): layer {g['layer'][0]}x{g['layer'][1]} at batch {spec['batch']} "
                f"{g['gemm_layer_gflops']:.1f} GFLOP/s; {g['gemm_square_n']}^3 {g['gemm_square_gflops']:.1f} GFLOP/s")
        fb_row = summary["peers"].get("fastbp", {})
        if "gflops" in fb_row:
            line += (f"; fastbp reaches {100 * fb_row['gflops'] / g['gemm_layer_gflops']:.1f}% of the layer rate, "
                     f"{100 * fb_row['gflops'] / g['gemm_square_gflops']:.1f}% of the square rate")
        print(line)
    elif g and g["errors"]:
        print(f"sgemm ERROR: {g['errors'][0][:200]}")
    for n in notes:
        print(f"note: {n}")


def plot(path, summaries):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    fig, axes = plt.subplots(1, len(summaries), figsize=(4.5 * len(summaries), 4), squeeze=False)
    for ax, s in zip(axes[0], summaries):
        rows = [r for p, r in s["peers"].items() if p != "sgemm" and "samples_per_s" in r]
        med = [r["samples_per_s"] for r in rows]
        err = [[m - r["samples_per_s_min"] for m, r in zip(med, rows)],
               [r["samples_per_s_max"] - m for m, r in zip(med, rows)]]
        ax.bar([r["peer"] for r in rows], med, yerr=err, capsize=3,
               color=["tab:red" if r["peer"] == "fastbp" else "tab:gray" for r in rows])
        ax.set_title(s["workload"])
        ax.set_ylabel("training samples/s")
        ax.tick_params(axis="x", rotation=45)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def parse_list(values, allowed, what):
    out = []
    for v in values or []:
        out += [x.strip() for x in v.split(",") if x.strip()]
    bad = [x for x in out if x not in allowed]
    if bad:
        raise SystemExit(f"unknown {what} {bad}; choose from {list(allowed)}")
    return out


def driver(args):
    workloads = parse_list(args.workload, WORKLOADS, "workload") or list(WORKLOADS)
    asked = parse_list([args.peers] if args.peers else None, PEERS, "peer") or list(PEERS)
    peers = [p for p in PEERS if p in asked]
    notes = [f"{p} skipped: {PEER_MODULES[p]} is not installed" for p in peers if not available(p)]
    peers = [p for p in peers if available(p)]
    info = machine_info(args.threads)
    print(f"fastbp.bench  {info['date']}  {info['cpu']}, {info['cores']} cores "
          f"({info['cores_available']} available), {args.threads} thread(s), pinned to the first "
          f"{args.threads} core(s); load average {info['load_average'][0]:.2f} at start")
    print("  " + "  ".join(f"{k} {info[k] or 'n/a'}" for k in
                           ("python", "numpy", "numba", "torch", "jax", "sklearn", "fastbp")) +
          f"  fastbp BLAS: {info['fastbp_blas']}")
    print(f"  {args.rounds} round(s), peers interleaved in each ({', '.join(peers)}); each in its own process; "
          f"1 warm-up epoch then {args.epochs} timed epoch(s); no shuffling: every peer trains on the "
          f"same batches in the same order from the same initial weights"
          + ("; QUICK mode (tiny data)" if args.quick else ""))
    print("  GFLOP/s = 6 x weights x samples/s; fastbp/peer = median over rounds of the per-round "
          "ratio (> 1: fastbp faster); loss = mean batch loss of the warm-up (1st) and last epoch;\n"
          "  predict/s = predict_proba over all of X in chunks of fastbp's PREDICT_BATCH; cpu/wall = CPU "
          "seconds per second of the timed epochs (well under the threads with a spinning pool: starved)")
    if info["load_average"][0] > 1.0:
        print("  note: other processes may be using these cores (see the load average); pools that "
              "spin (OpenMP, OpenBLAS) suffer most from that: check cpu/wall")
    for n in notes:
        print(f"  note: {n}")
    sys.stdout.flush()

    all_results, summaries = [], []
    with tempfile.TemporaryDirectory(prefix="fastbp-bench-") as tmp:
        for name in workloads:
            data = os.path.join(tmp, f"{name}.npz")
            write_data(data, name, args.quick)
            results = []
            for rnd in range(1, args.rounds + 1):
                for p in peers:
                    t0 = time.perf_counter()
                    r = run_worker(p, name, args.threads, data, args.epochs, args.quick)
                    r.update(round=rnd, peer=p, workload=name)
                    results.append(r)
                    what = (f"{fmt_rate(r['samples_per_s'])} samples/s, loss {r['loss_first']:.4f}, "
                            f"cpu/wall {r['cpu_per_wall']:.2f}, load {r['load_average']:.2f}"
                            if r.get("ok") and r.get("samples_per_s") else
                            f"{r['gemm_layer_gflops']:.1f} GFLOP/s" if r.get("ok") else "ERROR " + r["error"])
                    probe = ("; probe {:.0f}/{:.0f} GFLOP/s".format(*r["probe_gflops"])
                             if r.get("probe_gflops") else "")
                    print(f"[{name} round {rnd}/{args.rounds}] {p}: {what} ({time.perf_counter() - t0:.1f} s{probe})",
                          file=sys.stderr, flush=True)
            os.unlink(data)
            s = summarise(name, results, peers)
            print_table(s, [])
            sys.stdout.flush()
            all_results += results
            summaries.append(s)

    mismatches = [f"{s['workload']}/{p} ({r['loss_rel_diff']:.2e} vs {s['loss_reference']})"
                  for s in summaries for p, r in s["peers"].items() if r.get("loss_ok") is False]
    errors = [f"{s['workload']}/{p}" for s in summaries for p, r in s["peers"].items() if r["errors"]]
    print()
    print("loss check: " + (f"MISMATCH in {', '.join(mismatches)}" if mismatches else
                            f"every peer's first-epoch loss within {LOSS_RTOL:g} (relative) of the reference"))
    if errors:
        print("errors in: " + ", ".join(errors))
    ref, slow = slow_rounds(all_results)
    if ref is not None:
        print(f"machine check: GEMM probe ({PROBE_N_QUICK if args.quick else PROBE_N}^3, {args.threads} thread(s), "
              f"before/after each run) median {ref:.0f} GFLOP/s; " +
              ("every probe within {:.0%} of it".format(PROBE_SLOW) if not slow else
               "below {:.0%} of it (the machine, not the peer, was slow; compare those rounds with care): ".format(
                   PROBE_SLOW) + ", ".join(f"{w} round {rnd} {p} ({b:.0f}/{a:.0f})" for w, rnd, p, b, a in slow)))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"meta": {**info, "rounds": args.rounds, "epochs": args.epochs, "quick": args.quick,
                                "peers": peers, "workloads": workloads, "notes": notes, "shuffle": False,
                                "loss_rtol": LOSS_RTOL},
                       "results": all_results, "summary": summaries,
                       "loss_check": {"ok": not mismatches, "mismatches": mismatches}, "errors": errors,
                       "machine_check": {"probe_median_gflops": ref, "slow_fraction": PROBE_SLOW,
                                         "slow": [dict(zip(("workload", "round", "peer", "before", "after"), x))
                                                  for x in slow]}},
                      f, indent=1)
    if args.plot:
        plot(args.plot, summaries)
    return 1 if mismatches or errors else 0


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m fastbp.bench", description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workload", action="append", help="name or comma list, repeatable (default: all four)")
    ap.add_argument("--peers", help=f"comma list, a subset of {','.join(PEERS)} (default: all installed)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--epochs", type=int, default=1, help="timed epochs after the warm-up epoch")
    ap.add_argument("--json", help="write every raw result and the summary here")
    ap.add_argument("--plot", help="write a bar chart here (needs matplotlib)")
    ap.add_argument("--quick", action="store_true", help="tiny sample counts (for tests)")
    ap.add_argument("--worker", choices=PEERS, help=argparse.SUPPRESS)
    ap.add_argument("--data", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.rounds < 1 or args.threads < 1 or args.epochs < 1:
        ap.error("--rounds, --threads and --epochs must be >= 1")
    if args.worker:
        if not args.data or not args.workload or len(args.workload) != 1:
            ap.error("--worker needs --data and one --workload")
        args.workload = args.workload[0]
        return worker(args)
    return driver(args)


if __name__ == "__main__":
    sys.exit(main())
