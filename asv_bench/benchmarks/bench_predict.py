"""Inference throughput: Network.predict_proba, predict and evaluate on 2048 held-out samples
(the network works through them PREDICT_BATCH rows at a time)."""

from .common import WORKLOADS, make_network, split, use_threads


class Predict:
    params = [["small", "regress", "mnist", "wide"]]
    param_names = ["workload"]

    def setup(self, workload):
        use_threads()
        self.X, self.y = split(workload)[2:]
        self.net = make_network(WORKLOADS[workload])[0]
        self.net.evaluate(self.X[:8], self.y[:8])    # compile / load the cache outside the timing
        self.net.predict(self.X[:8])

    def time_predict_proba(self, workload):
        self.net.predict_proba(self.X)

    def time_predict(self, workload):
        self.net.predict(self.X)

    def time_evaluate(self, workload):
        self.net.evaluate(self.X, self.y)
