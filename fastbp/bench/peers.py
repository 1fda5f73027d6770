"""The peers: one function per library that trains the workload from the given weights on the
given batches, in order, and returns its timings (``time_training``) and library versions."""

import importlib.util
import math
import os

import numpy as np

from .timing import batches, gemm_rate, limit_blas_threads, time_predict, time_training
from .workloads import BETAS, EPS, make_network

PEERS = ("fastbp", "fastbp-openblas", "torch", "torch-fused", "jax", "sklearn", "numpy", "sgemm", "fastbp-bf16", "torch-bf16")
PEER_MODULES = {"torch": "torch", "torch-fused": "torch", "jax": "jax", "sklearn": "sklearn", "torch-bf16": "torch"}
# the bf16 mixed-precision peers (``--precision bf16``): fastbp with Network(precision="bf16"), and
# torch under torch.autocast("cpu", torch.bfloat16) with float32 parameters and fused Adam/SGD
BF16_PEERS = ("fastbp-bf16", "torch-bf16")


def available(peer):
    mod = PEER_MODULES.get(peer)
    return mod is None or importlib.util.find_spec(mod) is not None


def run_fastbp(spec, X, y, weights, threads, epochs, precision="fp32", gemm="auto"):
    import fastbp as fb
    from fastbp.network import PREDICT_BATCH
    fb.set_num_threads(threads)  # the one knob: no thread environment variables for fastbp
    fb.set_gemm_provider(gemm)
    net, opt = make_network(spec, precision)
    if net.compute_precision != precision:
        raise RuntimeError(f"precision={precision!r} is not available here: {fb.bf16_support()[1]}")
    net.set_weights(weights)

    def run_epoch():
        return net.fit(X, y, epochs=1, batch_size=spec["batch"], optimizer=opt, shuffle=False).history["loss"][-1]

    out = time_training(run_epoch, X.shape[0], epochs)
    out["predict_samples_per_s"] = time_predict(lambda: net.predict_proba(X), X.shape[0])
    out["predict_batch"] = PREDICT_BATCH
    out["library"] = {"fastbp": fb.__version__, "blas": fb.BLAS_INFO.get("provider"),
                      "sgemm_provider": fb.get_gemm_provider()[1],
                      "numba_threads": fb.get_num_threads(), "precision": net.compute_precision}
    if precision == "bf16":
        out["library"]["bf16_provider"] = fb.BLAS_INFO.get("bf16_provider")
    return out


def run_torch(spec, X, y, weights, threads, epochs, fused=False, bf16=False):
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
            with torch.autocast(device_type="cpu", dtype=torch.bfloat16, enabled=bf16):
                loss = crit(model(Xt[i:j]), yt[i:j])   # (autocast runs the loss itself in float32)
            loss.backward()
            opt.step()
            total += loss.item() * (j - i)
        return total / n

    out = time_training(run_epoch, n, epochs)
    model.eval()
    res = torch.empty(n, spec["layers"][-1])

    def predict():  # the same chunking as fastbp's predict_proba
        with torch.inference_mode(), torch.autocast(device_type="cpu", dtype=torch.bfloat16, enabled=bf16):
            for i in range(0, n, PREDICT_BATCH):
                z = model(Xt[i:i + PREDICT_BATCH]).float()
                res[i:i + PREDICT_BATCH] = torch.softmax(z, dim=1) if classify else z

    out["predict_samples_per_s"] = time_predict(predict, n)
    out["predict_batch"] = PREDICT_BATCH
    out["library"] = {"torch": torch.__version__, "torch_threads": torch.get_num_threads(),
                      "optimizer_impl": "fused" if fused else "default (for-loop on CPU)",
                      "autocast": "bf16" if bf16 else None}
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


def run_sgemm(spec, X, y, weights, threads, epochs, quick=False):
    """The GEMMs of a training step for the largest layer (forward X W, dW = X^T dZ,
    dX = dZ W^T) at the workload's batch size, and one large square product."""
    limit_blas_threads(threads)
    layers, B = spec["layers"], spec["batch"]
    l = max(range(len(layers) - 1), key=lambda i: layers[i] * layers[i + 1])
    d_in, d_out = layers[l], layers[l + 1]
    shapes = {"forward": (B, d_in, d_out, False, False), "dW": (d_in, B, d_out, True, False),
              "dX": (B, d_out, d_in, False, True)}
    flops = {name: 2.0 * s[0] * s[1] * s[2] for name, s in shapes.items()}
    big = 512 if quick else 2048
    out = {"samples_per_s": None, "layer": [d_in, d_out], "batch": B, "gemm_square_n": big,
           "library": {"numpy": np.__version__}}
    # NumPy's matmul (OpenBLAS), and where fastbp's float32 products go to oneDNN, oneDNN's rate
    # through fastbp's own product (compiled code: no Python call in the loop)
    import fastbp as fb
    for key, provider in [("", None)] + ([("onednn_", "onednn")] if fb.get_gemm_provider()[1] == "onednn" else []):
        rates = {name: gemm_rate(*s, provider=provider) for name, s in shapes.items()}
        out[key + "gemm_gflops"] = rates
        out[key + "gemm_layer_gflops"] = sum(flops.values()) / sum(flops[k] / rates[k] for k in rates)
        out[key + "gemm_square_gflops"] = gemm_rate(big, big, big, min_time=0.1 if not quick else 0.01,
                                                    reps=5 if not quick else 2, provider=provider)
    return out


RUNNERS = {"fastbp": run_fastbp, "fastbp-openblas": lambda *a: run_fastbp(*a, gemm="openblas"), "torch": run_torch,
           "torch-fused": lambda *a: run_torch(*a, fused=True), "jax": run_jax,
           "sklearn": run_sklearn, "numpy": run_numpy, "sgemm": run_sgemm,
           "fastbp-bf16": lambda *a: run_fastbp(*a, precision="bf16"),
           "torch-bf16": lambda *a: run_torch(*a, fused=True, bf16=True)}
