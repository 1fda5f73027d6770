"""Memory of a whole fit: the process's peak resident set (peakmem_) and the peak of the
allocations that tracemalloc sees during the fit (NumPy reports its buffers to it), which
isolates what fit itself allocates from the interpreter, Numba and the compiled code."""

import tracemalloc

from .common import WORKLOADS, make_network, repeated_quick_data, use_threads

FIT_SAMPLES = {"small": 20_000, "mnist": 8192}   # mnist: fewer than its 60,000


class FitMemory:
    """Build the workload's network and optimizer and fit one epoch (float32 data, so fit
    needs no converted copy of X)."""
    params = [list(FIT_SAMPLES)]
    param_names = ["workload"]
    timeout = 180

    def setup(self, workload):
        use_threads()
        self.spec = WORKLOADS[workload]
        self.X, self.y = repeated_quick_data(workload, FIT_SAMPLES[workload])
        b = self.spec["batch"]
        net, opt = make_network(self.spec)
        net.fit(self.X[:b], self.y[:b], epochs=1, batch_size=b, optimizer=opt)  # compile outside

    def _fit(self):
        net, opt = make_network(self.spec)
        net.fit(self.X, self.y, epochs=1, batch_size=self.spec["batch"], optimizer=opt)

    def peakmem_fit(self, workload):
        self._fit()

    def track_fit_traced_peak(self, workload):
        tracemalloc.start()
        try:
            self._fit()
            return tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
    track_fit_traced_peak.unit = "bytes"
