"""Whole training steps on the standard workloads (definitions in fastbp's README / WORKLOADS)."""

import numpy as np

import fastbp as fb

WORKLOADS = {
    # name: (layer sizes, activation, output, optimizer factory, batch size)
    "small": ([64, 64, 64, 10], "relu", "softmax", lambda: fb.Adam(lr=1e-3), 32),
    "regress": ([8, 64, 64, 1], "tanh", "identity", lambda: fb.SGD(lr=1e-2, momentum=0.9), 32),
    "mnist": ([784, 256, 128, 10], "relu", "softmax", lambda: fb.Adam(lr=1e-3), 128),
}


def _data(sizes, output, n, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, sizes[0])).astype(np.float32)
    teacher = rng.standard_normal((sizes[0], sizes[-1])).astype(np.float32) / np.sqrt(sizes[0])
    out = np.tanh(X @ teacher)
    y = out.argmax(axis=1) if output == "softmax" else out.astype(np.float32)
    return X, y


class TrainStep:
    params = [list(WORKLOADS)]
    param_names = ["workload"]

    def setup(self, workload):
        sizes, act, output, make_opt, batch = WORKLOADS[workload]
        self.X, self.y = _data(sizes, output, batch)
        self.net = fb.Network(sizes, activation=act, output=output, seed=0)
        self.opt = make_opt()
        self.net.train_step(self.X, self.y, self.opt)  # compile / load cache outside the timing

    def time_train_step(self, workload):
        self.net.train_step(self.X, self.y, self.opt)


class Epoch:
    params = [list(WORKLOADS)]
    param_names = ["workload"]
    timeout = 120

    def setup(self, workload):
        sizes, act, output, make_opt, batch = WORKLOADS[workload]
        self.batch = batch
        self.X, self.y = _data(sizes, output, 8192)
        self.net = fb.Network(sizes, activation=act, output=output, seed=0)
        self.opt = make_opt()
        self.net.fit(self.X[:batch], self.y[:batch], epochs=1, batch_size=batch, optimizer=self.opt)

    def time_epoch_8192_samples(self, workload):
        self.net.fit(self.X, self.y, epochs=1, batch_size=self.batch, optimizer=self.opt)

    def track_loss_after_2_epochs(self, workload):
        sizes, act, output, make_opt, batch = WORKLOADS[workload]
        net = fb.Network(sizes, activation=act, output=output, seed=0)
        return net.fit(self.X, self.y, epochs=2, batch_size=batch, optimizer=make_opt()).history["loss"][-1]
