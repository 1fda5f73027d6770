"""Run under ``mpiexec -n 2`` by tests/test_mpi.py: ``python tests/mpi_worker.py SCENARIO OUTDIR``.
Each scenario trains with fastbp.distributed and writes this rank's results to OUTDIR."""

import os
import sys

import numpy as np

import fastbp as fb
from fastbp import distributed


def data(dtype, n=1280, d=6, k=3, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d)).astype(dtype)
    y = (X[:, :k].argmax(axis=1) + (X[:, -1] > 1.0)) % k
    return X, y


def net_for(dtype, norm=None, seed=1):
    return fb.Network([6, 8, 3], activation="tanh", output="softmax", dtype=dtype, seed=seed, norm=norm)


def main(scenario, out):
    comm = distributed.world()
    rank = comm.rank
    res = {}
    if scenario == "equal":   # SGD, Adam (+ L2), float64 and float32, 2 x 32 rows a step, 20 steps
        for dtype in ("float64", "float32"):
            X, y = data(dtype)
            for name in ("sgd", "adam"):
                for l2 in (0.0, 1e-2):
                    opt = fb.SGD(lr=0.1, momentum=0.9) if name == "sgd" else fb.Adam(lr=0.01)
                    net = net_for(dtype, seed=1 + rank)   # rank 1's own init is overwritten by rank 0's
                    net._l2 = l2
                    h = distributed.fit(net, X, y, epochs=1, batch_size=32, optimizer=opt, shuffle=False)
                    res[f"{dtype}_{name}_{l2}"] = net.params
                    res[f"{dtype}_{name}_{l2}_loss"] = np.array(h.history["loss"])
    elif scenario == "uneven":   # local shards of 520 and 480 weighted rows: steps of 64, 64, ..., 32, 8 rows
        X, y = data("float64", n=1000)
        w = np.linspace(0.5, 2.0, 1000)
        lo, hi = (0, 520) if rank == 0 else (520, 1000)
        net = net_for("float64")
        h = distributed.fit(net, X[lo:hi], y[lo:hi], epochs=1, batch_size=32, optimizer=fb.Adam(lr=0.01),
                            shuffle=False, sample_weight=w[lo:hi], shard="local")
        res["params"] = net.params
        res["loss"] = np.array(h.history["loss"])
    elif scenario == "shuffle":   # shuffled, clipped, 3 epochs of 1000 rows (blocks of 500)
        X, y = data("float64", n=1000)
        net = net_for("float64")
        h = distributed.fit(net, X, y, epochs=3, batch_size=32, optimizer=fb.Adam(lr=0.01), clip_norm=0.5)
        res["params"] = net.params
        res["loss"] = np.array(h.history["loss"])
    elif scenario == "batchnorm":   # per-rank batch statistics
        X, y = data("float64", n=640)
        net = net_for("float64", norm="batch")
        distributed.fit(net, X, y, epochs=1, batch_size=32, optimizer=fb.SGD(lr=0.1), shuffle=False)
        res["params"] = net.params
        res["norm_state"] = net.norm_state
    elif scenario == "checkpoint":   # rank 0 writes a checkpoint each epoch; resume from it
        X, y = data("float64", n=640)
        ck = os.path.join(out, "ck.npz")
        net = net_for("float64")
        distributed.fit(net, X, y, epochs=2, batch_size=32, optimizer=fb.Adam(lr=0.01),
                        callbacks=[fb.ModelCheckpoint(ck)], validation_data=(X[:100], y[:100]))
        comm.Barrier()
        net2 = fb.Network.load(ck)
        h = distributed.fit(net2, X, y, epochs=4, initial_epoch=2, batch_size=32,
                            validation_data=(X[:100], y[:100]))
        res["resumed"] = net2.params
        res["val_loss"] = np.array(h.history["val_loss"])
    elif scenario == "diverge":   # rank 1's targets overflow the squared error in its 4th batch
        X, _ = data("float64", n=640)
        y = X[:, :1].copy()
        if rank == 1:
            y[100:] = 1e200
        net = fb.Network([6, 8, 1], activation="tanh", output="identity", dtype="float64", seed=1)
        try:
            distributed.fit(net, X[:320], y[:320], epochs=1, batch_size=32, optimizer=fb.SGD(lr=0.01),
                            shuffle=False, shard="local")
        except fb.DivergenceError as e:
            res["error"] = np.array(str(e))
            res["steps"] = np.array(net.optimizer.step_count)
    elif scenario == "die":   # rank 1 fails alone mid-training: the job must end, not hang
        X, y = data("float64", n=640)
        net = net_for("float64")
        cb = fb.LambdaCallback(on_epoch_end=lambda epoch, logs: (_ for _ in ()).throw(RuntimeError("boom"))
                               if rank == 1 else None)
        distributed.fit(net, X, y, epochs=3, batch_size=32, callbacks=[cb])
    elif scenario == "interrupt":   # Ctrl-C (SIGINT to mpiexec) while training: every rank stops at one step
        X, y = data("float64", n=640)
        net = net_for("float64")
        started = fb.LambdaCallback(on_epoch_end=lambda epoch, logs: epoch == 1 and rank == 0 and print(
            "TRAINING", flush=True))
        import warnings
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            h = distributed.fit(net, X, y, epochs=100000, batch_size=32, callbacks=[started])
        res["interrupted"] = np.array(h.interrupted)
        res["steps"] = np.array(net.optimizer.step_count)
        res["params"] = net.params
        res["warned"] = np.array(any("interrupted" in str(w.message) for w in caught))
    np.savez(os.path.join(out, f"rank{rank}.npz"), **res)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
