"""Whole training steps and epochs on the standard workloads (defined once, in fastbp.bench)."""

from fastbp.bench import WORKLOADS, make_data, make_network

NAMES = ["small", "regress", "mnist"]  # wide: minutes per sample, left to python -m fastbp.bench
EPOCH_SAMPLES = 8192


class TrainStep:
    params = [NAMES]
    param_names = ["workload"]

    def setup(self, workload):
        spec = WORKLOADS[workload]
        X, y = make_data(workload, quick=True)
        self.X, self.y = X[:spec["batch"]], y[:spec["batch"]]
        self.net, self.opt = make_network(spec)
        self.net.train_step(self.X, self.y, self.opt)  # compile / load the cache outside the timing

    def time_train_step(self, workload):
        self.net.train_step(self.X, self.y, self.opt)


class Epoch:
    params = [NAMES]
    param_names = ["workload"]
    timeout = 120

    def setup(self, workload):
        spec = WORKLOADS[workload]
        self.batch = spec["batch"]
        X, y = make_data(workload)
        self.X, self.y = X[:EPOCH_SAMPLES], y[:EPOCH_SAMPLES]
        self.net, self.opt = make_network(spec)
        self.net.fit(self.X[:self.batch], self.y[:self.batch], epochs=1, batch_size=self.batch,
                     optimizer=self.opt)

    def time_epoch_8192_samples(self, workload):
        self.net.fit(self.X, self.y, epochs=1, batch_size=self.batch, optimizer=self.opt)

    def track_loss_after_2_epochs(self, workload):
        net, opt = make_network(WORKLOADS[workload])
        return net.fit(self.X, self.y, epochs=2, batch_size=self.batch, optimizer=opt).history["loss"][-1]
