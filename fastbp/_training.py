"""The training runner: what one fit needs besides the model, built once, reused every epoch.

``Runner(net, opt, X, T, labels, use_labels, sw, batch_size)`` owns the per-fit scratch (the
gathered batch Xb/Tb/Lb/Wb, per-batch stats, the control and gradient-health arrays, the
order and permutation) and runs batches ``[b0, b1)`` of an epoch as one compiled call
(``kernels.network.train_epoch``), or, while a cold fit's helper is still compiling that driver,
as one call of its interpreted twin (``kernels.interp.train_epoch``: the same results; see
``fastbp._compile``). ``Network.fit`` and the scikit-learn estimators train through it; it is the
only caller of ``train_epoch`` outside the tests of the kernels.

The protocol between ``Network`` and its users inside fastbp (this module, ``_io`` and the
scikit-learn estimators). Beyond the public attributes (``params``, ``grads``,
``norm_state``, ``dtype``, ``layer_sizes``, ``n_outputs``, ``is_classifier``, ``optimizer``)
they use only these members:

- ``net._rng``: the dropout generator's state, a (1,) uint64 array the kernels advance;
  ``net._shuffle_rng``, ``net._split_seed``: the shuffling generator, validation_split's seed;
- ``net._l2``: scikit-learn's L2 strength (0.0: off), read when a runner is built;
- ``net._bf16`` (bf16 products) and ``net._n_flat``: whether the optimizer update is the threaded
  kernel (kernels/optim.threaded_update), whose Numba threads then follow the thread policy too;
- ``net._loss_code``: the kernels' code of the output/loss pair;
- ``net._borrow(n)``: a context manager giving the workspace ``(ws, layout, fpar, meta)``
  for batches of up to ``n`` rows; ``net._drop_workspace(n)`` forgets a one-off size;
- ``net._training_kernels(kind)``: the kernel table (kernels/table.py) of a training step with optimizer ``kind``,
  and ``net._kernel_list(kind, True)`` the kernels in it (for fastbp._compile's helper);
- ``net._views(flat)``: per layer (W, b) or (W, b, gamma, beta) views into any array laid
  out as ``params``;
- ``net._check_xyw(X, y, sample_weight, class_weight, names)``: checked data
  ``(X, T, labels, use_labels, sw)``, with ``net._no_weights`` the empty ``sw`` (unweighted);
- ``net._loss_grad(X, T, labels, use_labels, sw)``: the loss of checked data, with its
  gradients written into ``net.grads``; ``net._predict_checked(X)``: outputs of checked X;
- ``Network._configured(...)``, ``net._n_flat``, ``net._n_state``, ``net._allocate()``: a
  network checked and laid out without allocating, its buffer lengths, then its buffers
  (``_io.load``);
- ``net._epoch``: the epochs trained (``epochs_trained``; saved), ``net._loaded_epoch``: that
  count as ``_io.load`` read it, until the next fit (``warn_restart``).

and of an optimizer: ``opt.kind``, ``opt._bind(net)`` (its state, allocated once),
``opt._hparams()`` (its hyper-parameters packed for the kernel), ``opt._step``, and for
files and pickles ``opt._state_sizes(n)``, ``opt._nonneg_indices()``, ``opt._load_state``.
"""

import numbers
import time
import warnings

import numpy as np

from . import _compile
from ._blas import ThreadPolicy
from ._progress import HeldInterrupts
from .callbacks import Callback
from .errors import DivergenceError, InputError
from .kernels import interp, network as K
from .kernels.losses import SIGMOID_BCE, SOFTMAX_CE, correct_count
from .kernels.optim import threaded_update
from .schedules import Schedule, check_schedule

OK = K.OK             # the status of an accepted step
CHUNK_SECONDS = 0.1   # fit hands control back to Python about this often (progress, Ctrl-C)
_STATUS_TEXT = {K.BAD_LOSS: "the training loss", K.BAD_GRAD: "a gradient"}


class History:
    """What ``fit`` returns: ``history`` maps a metric name to its per-epoch values."""

    def __init__(self):
        self.history = {}
        self.epoch = []
        self.interrupted = False   # True when Ctrl-C stopped the fit

    def _append(self, epoch, **values):
        self.epoch.append(epoch)
        for k, v in values.items():
            self.history.setdefault(k, []).append(v)

    def __repr__(self):
        return f"History(epochs={len(self.epoch)}, keys={list(self.history)})"


def raise_diverged(net, status, loss, where):
    """The DivergenceError of a refused step (``status`` from the kernels)."""
    if np.all(np.isfinite(net.params)):
        kept = "the step was not applied, so the network keeps the weights of the last finite step"
    else:   # finite loss and gradients, finite hyper-parameters, and yet an update overflowed
        kept = (f"the step was not applied, but an earlier update overflowed {net.dtype.name}: the weights "
                f"are no longer finite")
    raise DivergenceError(
        f"{_STATUS_TEXT[status]} became non-finite ({where}, batch loss {loss}); {kept}. Lower the "
        f"learning rate or check the data scale.")


class Runner:
    """Mini-batch training of ``net`` by ``opt`` on checked data, ``batch_size`` rows a batch.

    Use it within ``with runner:`` (which holds the network's workspace); per epoch call
    ``start_epoch`` and then ``run`` over the batches (in one call or in chunks). ``stats[b]``
    holds batch b's loss, its number of correct predictions and (``record_penalty``) the L2
    penalty included in its loss; ``tstats[l]`` with ``track_gradients`` the sums over the
    epoch's batches of layer l's gradient norm and update ratio.
    """

    def __init__(self, net, opt, X, T, labels, use_labels, sw, batch_size, clip_norm=None,
                 track_gradients=False, record_penalty=False):
        self.net, self.opt = net, opt
        self.X, self.T, self.labels, self.use_labels, self.sw = X, T, labels, use_labels, sw
        N, d = X.shape
        self.N, self.batch_size = N, batch_size
        self.n_batches = n_batches = (N + batch_size - 1) // batch_size
        self.order = np.arange(N, dtype=np.int64)
        self.perm = self.order.copy()
        self.Xb = np.empty((batch_size, d), net.dtype)
        self.Tb = np.empty((batch_size if not use_labels else 0, net.n_outputs), net.dtype)
        self.Lb = np.empty(batch_size if use_labels else 0, np.int64)
        self.Wb = np.empty(batch_size if sw.shape[0] else 0, net.dtype)
        self.stats = np.zeros((n_batches, 3 if record_penalty else 2), np.float64)
        self.sizes = np.full(n_batches, float(batch_size))
        self.sizes[-1] = N - (n_batches - 1) * batch_size
        self.ctl = np.zeros(3, np.float64)
        self.ctl[K.CLIP], self.ctl[K.TRACK], self.ctl[K.L2] = clip_norm or 0.0, float(track_gradients), net._l2
        self.tstats = np.zeros((len(net.layer_sizes) - 1, 2), np.float64)
        self.pprev = np.empty_like(net.params) if track_gradients else np.zeros(0, net.dtype)
        self.state = opt._bind(net)
        self.hp = opt._hparams()
        self.kt = None          # the kernel table, made at the first run (see _first_run)
        self._compiling = None  # whether a helper is still compiling the epoch driver (_first_run)
        self.chunk = 1          # batches per call when Python wants control back every CHUNK_SECONDS
        self._ws = self._borrowed = None
        # the BLAS threads unless the user set them (and Numba's, for the threaded optimizer kernels)
        self.threads = ThreadPolicy(net.layer_sizes, batch_size, threaded_update(net._n_flat, net._bf16))

    def __enter__(self):
        self._borrowed = self.net._borrow(self.batch_size)
        self._ws = self._borrowed.__enter__()
        self.threads.__enter__()
        return self

    def __exit__(self, *exc):
        self.threads.__exit__(*exc)
        borrowed, self._borrowed, self._ws = self._borrowed, None, None
        return borrowed.__exit__(*exc)

    def start_epoch(self, shuffle_rng=None):
        """Take the optimizer's current hyper-parameters (a schedule may have changed the rate),
        reset the gradient tallies and, with ``shuffle_rng``, draw the epoch's order afresh
        from 0..N-1 (so that it depends only on the generator's state: resuming repeats it)."""
        self.hp = self.opt._hparams()
        self.tstats[...] = 0.0
        self.threads.recheck()
        if shuffle_rng is not None:
            self.perm[...] = self.order
            shuffle_rng.shuffle(self.perm)

    def run(self, b0, b1, perm=None, shuffle=True):
        """Train batches ``[b0, b1)`` in the order ``perm`` (default: the runner's, drawn by
        ``start_epoch``) or, unshuffled, as stored. Returns (next batch, status): at a step
        that was refused (status not OK) it stops and returns that batch."""
        net = self.net
        ws, layout, fpar, meta = self._ws
        s1, s2, s3 = self.state
        args = (net.params, net.grads, net.norm_state, ws, layout, fpar, meta, net._rng,
                self.X, self.T, self.labels, self.use_labels, self.sw,
                self.perm if perm is None else perm, bool(shuffle), self.batch_size, b0, b1,
                s1, s2, s3, self.hp, self.opt._step, self.Xb, self.Tb, self.Lb, self.Wb,
                self.stats, self.ctl, self.tstats, self.pprev)
        if self.kt is None:
            self._first_run(args)
        if self._compiling():
            with HeldInterrupts():     # (a compiled call cannot be interrupted halfway: nor can this)
                return interp.train_epoch(self.kt, *args)
        return K.train_epoch(self.kt, *args)

    def _first_run(self, args):
        """Make the kernel table. On a cold cache a helper process compiles the epoch and inference
        drivers (and the kernels this one has not reached), and the batches run interpreted until
        the compiled driver is in the cache (fastbp._compile)."""
        from numba import typeof
        net = self.net
        kt = np.zeros((1, 1), np.int64)            # (the type of every kernel table)
        sig = tuple(typeof(a) for a in (kt, *args))
        ws, layout, fpar, meta = args[3:7]
        out = np.zeros((1, net.n_outputs), net.dtype)
        infer = tuple(typeof(a) for a in (kt, net.params, net.norm_state, ws, layout, fpar, meta, net._rng, self.X,
                                          net._no_T, net._no_labels, True, net._no_weights, 1, out, False))
        _compile.start_helper(K.train_epoch, sig, net._kernel_list(self.opt.kind, True), net.dtype,
                              later=[("loss_all", infer)])
        self._compiling = _compile.waiting(K.train_epoch, sig)
        self.kt = net._training_kernels(self.opt.kind)

    def run_epoch(self, shuffle, should_stop, batch_callbacks=(), per_batch=False, progress=None, where=""):
        """Every batch of the epoch in chunks of about CHUNK_SECONDS (one batch a call when a
        callback needs every batch), calling ``on_batch_end`` and ``progress`` after each chunk
        and stopping when ``should_stop()``. A refused step raises DivergenceError (after the
        batch callbacks saw it) unless a callback set ``net.stop_training``. Returns the
        number of batches trained."""
        net, n_batches, stats, sizes = self.net, self.n_batches, self.stats, self.sizes
        bi = 0
        while bi < n_batches and not should_stop():
            b1 = min(n_batches, bi + (1 if per_batch else self.chunk))
            tc = time.perf_counter()
            done, status = self.run(bi, b1, shuffle=shuffle)
            dt = time.perf_counter() - tc
            if status != OK:
                logs = {"loss": float(stats[done, 0]), "size": int(sizes[done])}
                for cb in batch_callbacks:
                    cb.on_batch_end(done, logs)
                if progress is not None:
                    progress.close()
                if net.stop_training:   # a callback (TerminateOnNaN) chose to stop quietly
                    return done
                raise_diverged(net, status, stats[done, 0], f"{where}batch {done + 1}")
            self.chunk = max(1, min(n_batches, int(CHUNK_SECONDS * (b1 - bi) / max(dt, 1e-9))))
            for b in range(bi, b1) if batch_callbacks else ():
                logs = {"loss": float(stats[b, 0]), "size": int(sizes[b])}
                for cb in batch_callbacks:
                    cb.on_batch_end(b, logs)
            if progress is not None:
                progress.update(int(sizes[bi:b1].sum()), float(stats[b1 - 1, 0]))
            bi = b1
            if net.stop_training:
                break
        return bi

    def mean_loss(self):
        """The epoch's mean batch loss weighted by batch rows (as Keras)."""
        return float(self.stats[:, 0] @ self.sizes / self.N)

    def accuracy(self):
        """The fraction of the epoch's rows predicted correctly (counted as each batch trained)."""
        return float(self.stats[:, 1].sum() / self.N)

    def penalty(self):
        """The epoch's L2 penalty (included in its loss; needs ``record_penalty``): the mean over
        batches b of l2/(2 s_b) sum W^2 with the weights before batch b, weighted by batch rows."""
        return float(self.stats[:, 2] @ self.sizes / self.N)

    def gradient_logs(self):
        """Per layer l the epoch's mean ``grad_norm_<l>`` and ``update_ratio_<l>`` (track_gradients)."""
        logs = {}
        for l in range(self.tstats.shape[0]):
            logs[f"grad_norm_{l}"] = float(self.tstats[l, 0] / self.n_batches)
            logs[f"update_ratio_{l}"] = float(self.tstats[l, 1] / self.n_batches)
        return logs


def warn_interrupted(epoch, done, n_batches):
    """fit's warning after Ctrl-C: inside epoch ``epoch`` after ``done`` batches, or after it."""
    if done < n_batches:
        warnings.warn(f"Training interrupted by user in epoch {epoch + 1} after {done} of {n_batches} "
                      f"batches; the network keeps its weights and the history of the finished "
                      f"epochs.", UserWarning, stacklevel=3)
    else:
        warnings.warn(f"Training interrupted by user after epoch {epoch + 1}; the network keeps "
                      f"its weights and history.", UserWarning, stacklevel=3)


def schedule_epoch_end(opt, epoch, logs, samples_seen, verbose):
    """Tell ``opt``'s schedule the epoch's logs; when that changes the next epoch's rate
    (ReduceLROnPlateau) and ``verbose`` >= 1, say so in one line (as Keras)."""
    schedule = opt.schedule
    before = float(schedule(epoch + 1, opt.lr, samples_seen)) if verbose else None
    schedule.on_epoch_end(epoch, logs)
    if verbose:
        after = float(schedule(epoch + 1, opt.lr, samples_seen))
        if after != before:
            print(f"epoch {epoch + 1}: {type(schedule).__name__} {'reduced' if after < before else 'changed'} "
                  f"the learning rate to {after:.4g}", flush=True)


def warn_restart(net, opt, schedule, initial_epoch, n_rows):
    """Warn, once after ``load``, when a network whose saved optimizer has stepped is fit from
    epoch 0 with a schedule that gives epoch 0 another rate than the saved epoch: ``initial_epoch``
    keeps Keras's meaning (default 0), so the schedule restarts, although the file says how far
    training went."""
    saved, net._loaded_epoch = getattr(net, "_loaded_epoch", None), None
    if not saved or initial_epoch != 0 or schedule is None or opt is not net.optimizer or not opt._step[0]:
        return
    first, then = float(schedule(0, opt.lr, 0)), float(schedule(saved, opt.lr, saved * n_rows))
    if first == then:
        return
    warnings.warn(f"this network was loaded from a file saved after epoch {saved} (optimizer step "
                  f"{int(opt._step[0])}), but fit starts at initial_epoch=0: the schedule "
                  f"{type(schedule).__name__} restarts, and the learning rate goes back to {first:.4g} "
                  f"(epoch {saved + 1} would have {then:.4g}). To continue where training stopped, pass "
                  f"initial_epoch={saved} (net.epochs_trained, with epochs > {saved}); to restart, ignore this (it is given "
                  f"once after load).", UserWarning, stacklevel=3)


def validation_set(net, validation_data, validation_split, X, T, labels, use_labels, sw):
    """fit's validation data checked: ((X, T, labels, sw) to train on, the validation set
    (X, T, labels, use_labels, sw) or None), from ``validation_data`` or by ``split``."""
    if validation_data is not None:
        if not isinstance(validation_data, (tuple, list)) or len(validation_data) not in (2, 3):
            raise InputError("validation_data must be a pair (X_val, y_val) or a triple "
                             "(X_val, y_val, sample_weight_val)")
        vw = validation_data[2] if len(validation_data) == 3 else None
        return (X, T, labels, sw), net._check_xyw(validation_data[0], validation_data[1], vw,
                                                  names=("validation X", "validation y", "validation sample_weight"))
    if validation_split:
        if (isinstance(validation_split, bool) or not isinstance(validation_split, numbers.Real)
                or not 0.0 < validation_split < 1.0):
            raise InputError(f"validation_split must be a fraction in (0, 1), got {validation_split!r}")
        return split(net, X, T, labels, use_labels, sw, float(validation_split))
    return (X, T, labels, sw), None


def split(net, X, T, labels, use_labels, sw, frac):
    """Hold out ``frac`` of the rows as validation data (stratified for classifiers)."""
    N = X.shape[0]
    rng = np.random.default_rng(net._split_seed)
    if net._loss_code == SOFTMAX_CE or (net._loss_code == SIGMOID_BCE and net.n_outputs == 1):
        cls = labels if use_labels else (T.argmax(axis=1) if net._loss_code == SOFTMAX_CE
                                          else (T[:, 0] > 0.5).astype(np.int64))
        val_idx = []
        for c in np.unique(cls):
            idx = np.flatnonzero(cls == c)
            rng.shuffle(idx)
            val_idx.append(idx[:int(round(frac * idx.size))])
        val_idx = np.concatenate(val_idx)
    else:
        val_idx = rng.permutation(N)[:int(round(frac * N))]
    if val_idx.size == 0 or val_idx.size == N:
        raise InputError(f"validation_split={frac} of {N} rows leaves no "
                         f"{'validation' if val_idx.size == 0 else 'training'} rows")
    mask = np.zeros(N, bool)
    mask[np.sort(val_idx)] = True

    def part(a, m):
        return np.ascontiguousarray(a[m]) if a.shape[0] else a

    train = tuple(part(a, ~mask) for a in (X, T, labels, sw))
    if sw.shape[0] and not train[3].any():
        raise InputError("validation_split leaves only rows of weight 0 for training")
    val = (part(X, mask), part(T, mask), part(labels, mask), use_labels, part(sw, mask))
    if val[4].shape[0] and not val[4].any():
        val = val[:4] + (net._no_weights,)
    return train, val


def check_callbacks(callbacks, schedule):
    """fit's ``callbacks`` and ``schedule`` checked: (the callbacks, the schedule), a Schedule
    given in the list taken as the schedule."""
    callbacks = list(callbacks or [])
    for cb in callbacks:
        if isinstance(cb, Schedule):
            if schedule is not None and schedule is not cb:
                raise InputError("give a schedule either in callbacks or as schedule=, not both")
            schedule = cb
        elif not isinstance(cb, Callback):
            raise InputError(f"callbacks must be fastbp.callbacks.Callback instances, got {cb!r}")
    return [cb for cb in callbacks if not isinstance(cb, Schedule)], check_schedule(schedule)


def check_monitors(objects, keys):
    """Every metric a callback or schedule in ``objects`` monitors must be one of ``keys``."""
    for obj in objects:
        for m in obj.monitors():
            if m not in keys:
                raise InputError(f"{type(obj).__name__} monitors {m!r}, which this fit does not record; "
                                 f"it records {keys}")


class SplitStep:
    """A training step in two halves, for data-parallel training (``fastbp.distributed``):
    ``local`` writes one batch's mean loss gradients into a caller's buffer (laid out as
    ``params``; no L2, no update), the caller combines them across processes, and
    ``apply`` makes the optimizer's update from the combined gradients. Use within ``with``
    (which holds the workspace for batches of up to ``batch_size`` rows)."""

    def __init__(self, net, opt, batch_size):
        from .kernels.optim import optimizer_update
        self.net, self.opt, self.batch_size = net, opt, batch_size
        self.kt = net._training_kernels(opt.kind)
        self.state = opt._bind(net)
        self.hp = opt._hparams()
        self._update = optimizer_update
        self._ws = self._borrowed = None

    def __enter__(self):
        self._borrowed = self.net._borrow(self.batch_size)
        self._ws = self._borrowed.__enter__()
        return self

    def __exit__(self, *exc):
        borrowed, self._borrowed, self._ws = self._borrowed, None, None
        return borrowed.__exit__(*exc)

    def start_epoch(self):
        """Take the optimizer's current hyper-parameters (a schedule may have changed the rate)."""
        self.hp = self.opt._hparams()

    def local(self, g, X, T, labels, use_labels, sw):
        """The mean loss of the n = len(X) rows (n >= 1) and their number of correct predictions;
        ``g`` <- d loss / d params (overwritten; the data term only, no L2)."""
        net = self.net
        ws, layout, fpar, meta = self._ws
        n = X.shape[0]
        loss = K.loss_forward_all(self.kt, net.params, net.norm_state, ws, layout, fpar, meta, X, T, labels,
                                  use_labels, sw, n, True, net._rng)
        K.backward_all(self.kt, g, net.params, ws, layout, fpar, meta, X, T, labels, use_labels, sw, n, 0.0)
        L = layout.shape[0] - 1
        k = layout[L, K.N_OUT]
        off = layout[L, K.A_OFF]
        P = ws[off:off + n * k].reshape(n, k)
        return float(loss), float(correct_count(meta[K.LOSS], P, T, labels, use_labels))

    def apply(self, g, gscale, n_local):
        """The optimizer's update from gradients ``g`` scaled by ``gscale`` (one step); batch norm
        layers then fold the statistics of this process's last ``local`` batch (``n_local`` rows,
        0: none) into their running statistics."""
        net = self.net
        ws, layout, fpar, meta = self._ws
        s1, s2, s3 = self.state
        self.opt._step[0] += 1
        self._update(self.opt.kind, net.params, g, s1, s2, s3, self.hp, self.opt._step[0], gscale)
        if n_local > 0 and net.norm_state.size:
            K.update_running(self.kt, net.norm_state, ws, layout, fpar, n_local)

    def finite(self, g):
        """Whether every value of ``g`` is finite."""
        return bool(K.all_finite(g))
