"""Whole training steps and epochs on the standard workloads (defined once, in fastbp.bench),
and the loss and accuracy a short seeded fit reaches (so numerical drift shows up as a step)."""

import functools
import math

from fastbp.bench import make_data

from .common import WORKLOADS, make_network, split, use_threads

NAMES = ["small", "regress", "mnist"]  # wide, 2 s per 8192 samples: TrainStep and fastbp.bench
TRACK_EPOCHS = 3


class TrainStep:
    """One Network.train_step on one batch of the workload's batch size."""
    params = [NAMES + ["wide"]]
    param_names = ["workload"]

    def setup(self, workload):
        use_threads()
        spec = WORKLOADS[workload]
        X, y = make_data(workload, quick=True)
        self.X, self.y = X[:spec["batch"]], y[:spec["batch"]]
        self.net, self.opt = make_network(spec)
        self.net.train_step(self.X, self.y, self.opt)  # compile / load the cache outside the timing

    def time_train_step(self, workload):
        self.net.train_step(self.X, self.y, self.opt)


class TrainStepPrecision:
    """One Network.train_step with float32 or bf16 matrix products (Network(precision=...)).
    Skipped where bf16 cannot run (no oneDNN or no BF16 CPU: fastbp.bf16_support()) and on
    commits before it existed."""
    params = [["mnist", "wide"], ["fp32", "bf16"]]
    param_names = ["workload", "precision"]

    def setup(self, workload, precision):
        import fastbp as fb
        support = getattr(fb, "bf16_support", None)
        if support is None:
            raise NotImplementedError("this fastbp has no precision option")
        if precision == "bf16" and not support()[0]:
            raise NotImplementedError(f"bf16 cannot run here: {support()[1]}")
        use_threads()
        spec = WORKLOADS[workload]
        X, y = make_data(workload, quick=True)
        self.X, self.y = X[:spec["batch"]], y[:spec["batch"]]
        self.net, self.opt = make_network(spec, precision)
        self.net.train_step(self.X, self.y, self.opt)

    def time_train_step(self, workload, precision):
        self.net.train_step(self.X, self.y, self.opt)


class TrainStepProvider:
    """One Network.train_step with every float32 product on OpenBLAS or on oneDNN
    (fastbp.set_gemm_provider). Skipped where oneDNN cannot serve them (not installed, or no
    OpenBLAS beside it) and on commits before the setting existed."""
    params = [["small", "mnist", "wide"], ["openblas", "onednn"]]
    param_names = ["workload", "provider"]

    def setup(self, workload, provider):
        import fastbp as fb
        if getattr(fb, "set_gemm_provider", None) is None:
            raise NotImplementedError("this fastbp has no gemm provider setting")
        try:
            self.before = fb.set_gemm_provider(provider)
        except ValueError as e:
            raise NotImplementedError(str(e))
        use_threads()
        spec = WORKLOADS[workload]
        X, y = make_data(workload, quick=True)
        self.X, self.y = X[:spec["batch"]], y[:spec["batch"]]
        self.net, self.opt = make_network(spec)
        self.net.train_step(self.X, self.y, self.opt)

    def teardown(self, workload, provider):
        import fastbp as fb
        fb.set_gemm_provider(self.before)

    def time_train_step(self, workload, provider):
        self.net.train_step(self.X, self.y, self.opt)


class Epoch:
    """One Network.fit epoch over 8192 samples (shuffled, the workload's batch size)."""
    params = [NAMES]
    param_names = ["workload"]
    timeout = 180

    def setup(self, workload):
        use_threads()
        spec = WORKLOADS[workload]
        self.batch = spec["batch"]
        self.X, self.y = split(workload)[:2]
        self.net, self.opt = make_network(spec)
        self.net.fit(self.X[:self.batch], self.y[:self.batch], epochs=1, batch_size=self.batch,
                     optimizer=self.opt)

    def time_epoch_8192_samples(self, workload):
        self.net.fit(self.X, self.y, epochs=1, batch_size=self.batch, optimizer=self.opt)


@functools.lru_cache(maxsize=None)
def _short_fit(workload):
    """TRACK_EPOCHS epochs of the workload's network (seed 0) on its first 8192 samples;
    (final training loss, test loss, test accuracy or None) on 2048 held-out samples."""
    use_threads()
    spec = WORKLOADS[workload]
    X, y, Xt, yt = split(workload)
    net, opt = make_network(spec)
    hist = net.fit(X, y, epochs=TRACK_EPOCHS, batch_size=spec["batch"], optimizer=opt)
    test = net.evaluate(Xt, yt)
    return hist.history["loss"][-1], test["loss"], test.get("accuracy")


class FitLoss:
    """Training loss (mean of the last epoch's batches) and held-out loss after a 3-epoch seeded fit."""
    params = [NAMES]
    param_names = ["workload"]
    timeout = 180

    def setup(self, workload):
        self.result = _short_fit(workload)

    def track_train_loss(self, workload):
        return self.result[0]
    track_train_loss.unit = "loss"

    def track_test_loss(self, workload):
        return self.result[1]
    track_test_loss.unit = "loss"


class FitAccuracy:
    """Held-out accuracy after the same 3-epoch seeded fit (the classification workloads)."""
    params = [["small", "mnist"]]
    param_names = ["workload"]
    timeout = 180

    def setup(self, workload):
        self.accuracy = _short_fit(workload)[2]
        assert self.accuracy is not None and math.isfinite(self.accuracy)

    def track_test_accuracy(self, workload):
        return self.accuracy
    track_test_accuracy.unit = "fraction correct"
