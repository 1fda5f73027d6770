"""The training features, through the public API: sample and class weights,
learning-rate schedules, callbacks, validation_split, progress output, gradient clipping,
gradient tracking, resume after save/load, Ctrl-C, determinism and the norm layers.

The kernels behind them have their twins in test_kernels.py and their gradient checks in
test_gradients.py; here networks are small and runs short (float64 where results are
compared bit for bit or to a formula).
"""

import contextlib
import csv
import math
import os
import signal
import sys

import numpy as np
import pytest

import fastbp as fb
from fastbp._training import split
from fastbp.callbacks import Callback
from fastbp.kernels import network as K
from fastbp.kernels.losses import PAIRS
from fastbp.schedules import Schedule

from . import naive
from .conftest import make_data


def blobs(n=90, d=5, k=3, seed=0, dtype=np.float64):
    """k Gaussian clusters (separable but overlapping), labels 0..k-1 in turn."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % k
    centers = rng.standard_normal((k, d)) * 2.0
    X = (centers[y] + rng.standard_normal((n, d))).astype(dtype)
    return X, y


def small_net(**kw):
    kw = {"activation": "tanh", "dtype": np.float64, "seed": 1, **kw}
    return fb.Network([5, 8, 3], **kw)


@contextlib.contextmanager
def unchanged(net):
    """The block leaves weights, norm statistics, optimizer (state, step count) and history as they were."""
    params, nstate = net.params.copy(), net.norm_state.copy()
    opt, history = net.optimizer, net.history
    step = opt.step_count if opt is not None else None
    state = [a.copy() for a in opt.state_arrays()] if opt is not None and opt.state_arrays() else None
    yield
    assert np.array_equal(net.params, params), "weights changed before the error"
    assert np.array_equal(net.norm_state, nstate), "norm statistics changed before the error"
    assert net.optimizer is opt and net.history is history
    if opt is not None:
        assert opt.step_count == step
        for a, b in zip(opt.state_arrays() or (), state or ()):
            assert np.array_equal(a, b)


def trained_clf(**kw):
    """A small classifier with optimizer state (one train_step), for the bad-input tests."""
    net = small_net(**kw)
    X, y = blobs()
    net.train_step(X, y, fb.Adam(lr=1e-2))
    return net


def layer_norms(net, flat):
    """Per layer, the L2 norm of all its parameters (W, b, and gamma, beta) in ``flat``."""
    return [math.sqrt(sum(float(np.sum(a.astype(np.float64) ** 2)) for a in v)) for v in net._views(flat)]


# ==== sample_weight and class_weight ===========================================================
def dup(X, y, w):
    """Rows repeated by their integer weights."""
    w = np.asarray(w, int)
    return np.repeat(X, w, axis=0), np.repeat(y, w, axis=0)


@pytest.mark.parametrize("norm", [None, "layer"])   # batch norm: duplicated rows change the batch statistics
@pytest.mark.parametrize("output,loss", list(PAIRS))
def test_integer_weights_equal_duplicated_rows(output, loss, norm, rng):
    k = 2
    net = fb.Network([4, 6, k], activation="tanh", output=output, loss=loss, dtype=np.float64, seed=2, norm=norm)
    X, y = make_data(rng, 9, 4, k, loss)
    for w in (np.r_[2, np.ones(8)],                      # weight 2 on one row == that row twice
              np.array([0, 1, 3, 2, 1, 0, 2, 1, 1])):     # integer weights, zeros included
        Xd, yd = dup(X, y, w)
        ev_w, ev_d = net.evaluate(X, y, sample_weight=w), net.evaluate(Xd, yd)
        assert ev_w["loss"] == pytest.approx(ev_d["loss"], rel=1e-12)
        lw, gw = net.loss_and_gradients(X, y, sample_weight=w)
        ld, gd = net.loss_and_gradients(Xd, yd)
        assert lw == pytest.approx(ld, rel=1e-12)
        for a, b in zip(gw, gd):
            for u, v in zip(a, b):
                np.testing.assert_allclose(u, v, rtol=1e-10, atol=1e-14)
    # and weights do something: all-ones differs from the weighted loss
    assert net.evaluate(X, y)["loss"] != pytest.approx(ev_w["loss"], rel=1e-6)


def test_weighted_fit_equals_fit_on_duplicated_rows(rng):
    # full-batch training: weights [0..3] give the same trajectory as the rows repeated
    X, y = make_data(rng, 12, 5, 3, "cross_entropy")
    w = rng.integers(0, 4, 12)
    w[0] = 2
    Xd, yd = dup(X, y, w)
    a, b = small_net(), small_net()
    ha = a.fit(X, y, sample_weight=w, epochs=5, batch_size=12, optimizer=fb.SGD(0.5, momentum=0.9), shuffle=False)
    hb = b.fit(Xd, yd, epochs=5, batch_size=len(Xd), optimizer=fb.SGD(0.5, momentum=0.9), shuffle=False)
    np.testing.assert_allclose(a.params, b.params, rtol=1e-10, atol=1e-13)
    np.testing.assert_allclose(ha.history["loss"], hb.history["loss"], rtol=1e-10)
    # train_step takes weights too
    la, lb = a.train_step(X, y, sample_weight=w), b.train_step(Xd, yd)
    assert la == pytest.approx(lb, rel=1e-10)


def test_class_weight_balanced_is_the_sklearn_formula():
    # 3 of 4 classes present, counts 10, 5, 3: weight n / (n_classes_present * count)
    y = np.r_[np.zeros(10, int), np.ones(5, int), np.full(3, 3)]
    X = np.random.default_rng(0).standard_normal((18, 5))
    counts = {0: 10, 1: 5, 3: 3}
    expected = np.array([18 / (3 * counts[c]) for c in y])
    try:
        from sklearn.utils.class_weight import compute_class_weight
    except ImportError:
        pass
    else:
        table = compute_class_weight("balanced", classes=np.unique(y), y=y)
        np.testing.assert_allclose(expected, table[np.searchsorted(np.unique(y), y)], rtol=1e-15)
    runs = []
    for kw in ({"class_weight": "balanced"}, {"sample_weight": expected}):
        net = fb.Network([5, 6, 4], dtype=np.float64, seed=3)
        h = net.fit(X, y, epochs=2, batch_size=18, optimizer=fb.SGD(0.3), shuffle=False, **kw)
        runs.append((net.params.copy(), h.history["loss"]))
    assert np.array_equal(runs[0][0], runs[1][0]) and runs[0][1] == runs[1][1]


@pytest.mark.parametrize("case", ["dict", "dict-times-sample_weight", "sigmoid-balanced"])
def test_class_weight_equals_per_row_sample_weight(case, rng):
    X, y = make_data(rng, 20, 5, 3, "cross_entropy")
    sw = rng.uniform(0.5, 2.0, 20)
    if case == "sigmoid-balanced":
        y = (rng.random(20) < 0.3).astype(float)
        make = lambda: fb.Network([5, 6, 1], output="sigmoid", dtype=np.float64, seed=3)  # noqa: E731
        counts = np.bincount(y.astype(int), minlength=2)
        kw, rows = {"class_weight": "balanced"}, 20 / (2 * counts[y.astype(int)])
    else:
        make = lambda: fb.Network([5, 6, 3], dtype=np.float64, seed=3)  # noqa: E731
        table = {0: 2.0, 2: 0.25}                          # class 1 keeps weight 1
        rows = np.array([table.get(c, 1.0) for c in y])
        kw = {"class_weight": table}
        if case == "dict-times-sample_weight":
            kw["sample_weight"], rows = sw, rows * sw       # the two multiply
    a, b = make(), make()
    a.fit(X, y, epochs=2, batch_size=20, optimizer=fb.SGD(0.3), shuffle=False, **kw)
    b.fit(X, y, epochs=2, batch_size=20, optimizer=fb.SGD(0.3), shuffle=False, sample_weight=rows)
    np.testing.assert_allclose(a.params, b.params, rtol=1e-14, atol=1e-15)


X_B, Y_B = blobs()
BAD_WEIGHTS = {
    "too short": (np.ones(89), r"sample_weight must be 1-D with one weight per row of X \(90\), got shape \(89,\)"),
    "too long": (np.ones(91), r"one weight per row of X \(90\)"),
    "2-D": (np.ones((90, 1)), r"sample_weight must be 1-D"),
    "negative": (np.r_[np.ones(89), -0.5], r"sample_weight must be >= 0, got a minimum of -0.5"),
    "nan": (np.r_[np.nan, np.ones(89)], r"sample_weight contains NaN or inf"),
    "inf": (np.r_[np.ones(89), np.inf], r"sample_weight contains NaN or inf"),
    "all zero": (np.zeros(90), r"sample_weight is zero for every row"),
    "strings": (np.full(90, "a"), r"sample_weight must have a numeric dtype"),
}
WEIGHT_METHODS = {
    "fit": lambda net, w: net.fit(X_B, Y_B, sample_weight=w, epochs=1),
    "train_step": lambda net, w: net.train_step(X_B, Y_B, sample_weight=w),
    "evaluate": lambda net, w: net.evaluate(X_B, Y_B, sample_weight=w),
    "loss_and_gradients": lambda net, w: net.loss_and_gradients(X_B, Y_B, sample_weight=w),
    "validation_data": lambda net, w: net.fit(X_B, Y_B, validation_data=(X_B, Y_B, w), epochs=1),
}


@pytest.mark.parametrize("method", list(WEIGHT_METHODS))
@pytest.mark.parametrize("case", list(BAD_WEIGHTS))
def test_bad_sample_weight_raises_before_any_change(case, method):
    w, match = BAD_WEIGHTS[case]
    if method == "validation_data":
        match = match.replace("sample_weight", "validation sample_weight").replace("of X", "of validation X")
    net = trained_clf(norm="batch")
    with unchanged(net), pytest.raises(fb.InputError, match=match):
        WEIGHT_METHODS[method](net, w)


@pytest.mark.parametrize("class_weight,match", [
    ({5: 1.0}, r"class_weight has the class 5; classes are 0..2"),
    ({0: -1.0}, r"class_weight\[0\] must be a finite number >= 0"),
    ({0: np.nan}, r"class_weight\[0\] must be a finite number >= 0"),
    ("balance", r"class_weight must be a dict or 'balanced'"),
    ({0: 0.0, 1: 0.0, 2: 0.0}, r"gives every row the weight 0"),
    ([1.0, 2.0, 3.0], r"class_weight must be a dict"),
])
def test_bad_class_weight_raises_before_any_change(class_weight, match):
    net = trained_clf()
    with unchanged(net), pytest.raises(fb.InputError, match=match):
        net.fit(X_B, Y_B, class_weight=class_weight, epochs=1)


def test_class_weight_for_regression_is_refused():
    net = fb.Network([5, 4, 2], output="identity", dtype=np.float64)
    with unchanged(net), pytest.raises(fb.InputError, match=r"class_weight needs a classifier"):
        net.fit(X_B, X_B[:, :2], class_weight="balanced", epochs=1)


# ==== schedules ========================================================================================
def torch_rates(make_scheduler, lr, epochs):
    torch = pytest.importorskip("torch")
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=lr)
    sched = make_scheduler(torch.optim.lr_scheduler, opt)
    rates = []
    for _ in range(epochs):
        rates.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return rates


SCHEDULE_CASES = {
    "step": (fb.StepDecay(3, gamma=0.5), lambda e, lr: lr * 0.5 ** (e // 3),
             lambda S, o: S.StepLR(o, step_size=3, gamma=0.5)),
    "exponential": (fb.ExponentialDecay(0.8), lambda e, lr: lr * 0.8 ** e,
                    lambda S, o: S.ExponentialLR(o, gamma=0.8)),
    "cosine": (fb.CosineAnnealing(6, eta_min=0.01), lambda e, lr: 0.01 + (lr - 0.01) * (1 + math.cos(math.pi * min(e, 6) / 6)) / 2,
               lambda S, o: S.CosineAnnealingLR(o, T_max=6, eta_min=0.01)),
    "cosine-warmup": (fb.CosineAnnealing(5, warmup_epochs=3),
                      lambda e, lr: lr * (e + 1) / 4 if e < 3 else lr * (1 + math.cos(math.pi * min(e - 3, 5) / 5)) / 2,
                      None),
    "inverse-epoch": (fb.InverseScaling(0.5), lambda e, lr: lr / math.sqrt(e + 1), None),
    "constant": (fb.Constant(), lambda e, lr: lr, lambda S, o: S.ConstantLR(o, factor=1.0)),
}


@pytest.mark.parametrize("case", list(SCHEDULE_CASES))
def test_schedule_values_follow_their_formula(case):
    sched, formula, _ = SCHEDULE_CASES[case]
    for e in range(12):
        assert sched(e, 0.2) == pytest.approx(formula(e, 0.2), rel=1e-14, abs=1e-300)


@pytest.mark.parametrize("case", [c for c in SCHEDULE_CASES if SCHEDULE_CASES[c][2] is not None])
def test_schedule_values_match_torch_lr_scheduler(case):
    sched, _, make = SCHEDULE_CASES[case]
    epochs = 7 if case == "cosine" else 12   # torch's cosine rises again after T_max; fastbp stays at eta_min
    ref = torch_rates(make, 0.2, epochs)
    np.testing.assert_allclose([sched(e, 0.2) for e in range(epochs)], ref, rtol=1e-12, atol=1e-15)


def test_cosine_warmup_is_linear_then_starts_the_cosine_at_base_lr():
    s = fb.CosineAnnealing(4, eta_min=0.0, warmup_epochs=4)
    assert [s(e, 1.0) for e in range(4)] == pytest.approx([0.2, 0.4, 0.6, 0.8], rel=1e-15)
    assert s(4, 1.0) == 1.0 and s(6, 1.0) == pytest.approx(0.5) and s(8, 1.0) == pytest.approx(0.0, abs=1e-16)
    assert s(20, 1.0) == pytest.approx(0.0, abs=1e-16)


@pytest.mark.parametrize("sched,expected", [
    (fb.StepDecay(2, gamma=0.1), lambda e, N: 0.05 * 0.1 ** (e // 2)),
    (fb.InverseScaling(0.5, per="sample"), lambda e, N: 0.05 / math.sqrt(e * N + 1)),   # sklearn's invscaling
    (fb.CosineAnnealing(3, warmup_epochs=1), lambda e, N: 0.05 * (e + 1) / 2 if e < 1 else
     0.05 * (1 + math.cos(math.pi * min(e - 1, 3) / 3)) / 2),
])
def test_history_lr_is_the_schedules_rate_per_epoch(sched, expected):
    X, y = blobs(n=40)
    net = small_net()
    opt = fb.SGD(0.05)
    h = net.fit(X, y, epochs=5, batch_size=16, optimizer=opt, schedule=sched)
    np.testing.assert_allclose(h.history["lr"], [expected(e, 40) for e in range(5)], rtol=1e-14)
    assert opt.schedule is sched and opt.current_lr == h.history["lr"][-1]


def test_scheduled_rate_is_the_rate_the_update_uses():
    # SGD without momentum, one full batch per epoch: the step is lr_e * gradient
    X, y = blobs(n=30)
    net = small_net()
    opt = fb.SGD(0.4, schedule=fb.StepDecay(1, gamma=0.5))
    for e, lr in enumerate([0.4, 0.2, 0.1]):
        _, grads = net.loss_and_gradients(X, y)
        before = net.params.copy()
        net.fit(X, y, epochs=e + 1, initial_epoch=e, batch_size=30, shuffle=False, optimizer=opt)
        np.testing.assert_allclose(before - net.params, lr * flat(net, grads), rtol=1e-10, atol=1e-15)


def test_changing_the_rate_does_not_recompile():
    X, y = blobs(n=40)
    Xv, yv = X[:10], y[:10]
    small_net().fit(X, y, epochs=1, batch_size=16, validation_data=(Xv, yv))   # compiled (or loaded) once
    counts = (len(K.train_epoch.signatures), len(K.loss_all.signatures))
    for sched in (None, fb.Constant(), fb.StepDecay(1), fb.ExponentialDecay(0.5), fb.CosineAnnealing(3, warmup_epochs=1),
                  fb.InverseScaling(per="sample"), fb.ReduceLROnPlateau("val_loss", patience=0)):
        for opt in (fb.SGD(0.1, momentum=0.5), fb.Adam(1e-2)):
            small_net().fit(X, y, epochs=3, batch_size=16, optimizer=opt, schedule=sched, validation_data=(Xv, yv))
    assert (len(K.train_epoch.signatures), len(K.loss_all.signatures)) == counts


class FakeModel:
    stop_training = False


def test_reduce_on_plateau_follows_keras():
    # patience 2: the rate halves on the 2nd epoch in a row without an improvement of more than min_delta
    s = fb.ReduceLROnPlateau("val_loss", factor=0.5, patience=2, min_delta=0.01)
    values = [1.0, 0.9, 0.895, 0.9, 0.85, 0.86, 0.86, 0.86, 0.5]
    rates = []
    for e, v in enumerate(values):
        rates.append(s(e, 0.1))
        s.on_epoch_end(e, {"val_loss": v})
    #          1.0  0.9  0.895(w1) 0.9(w2: halve) 0.85  0.86(w1) 0.86(w2: halve) 0.86(w1) 0.5
    assert rates == pytest.approx([0.1, 0.1, 0.1, 0.1, 0.05, 0.05, 0.05, 0.025, 0.025], rel=1e-15)
    assert s(9, 0.1) == pytest.approx(0.025) and s.best == 0.5


def test_reduce_on_plateau_cooldown_min_lr_and_max_mode():
    s = fb.ReduceLROnPlateau("val_accuracy", factor=0.1, patience=1, cooldown=2, min_lr=0.002, min_delta=0.0)
    rates = []
    for e, v in enumerate([0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.6, 0.6]):   # "acc" in the name: higher is better
        rates.append(s(e, 0.1))
        s.on_epoch_end(e, {"val_accuracy": v})
    # e1 stalls: x0.1; e2 cools down; at e3 the cooldown ends and, as in Keras, e3 already counts:
    # x0.1 -> 0.001, floored at min_lr; e6 improves (max mode), e7 stalls (the floor holds)
    assert rates == pytest.approx([0.1, 0.1, 0.01, 0.01, 0.002, 0.002, 0.002, 0.002], rel=1e-15)
    assert s.best == 0.6 and s.scale == pytest.approx(1e-4)
    state = (s.scale, s.best, s.wait, s.cooldown_left)
    s.on_epoch_end(8, {"other": 1.0})   # the monitored value missing or not finite: ignored
    s.on_epoch_end(9, {"val_accuracy": float("nan")})
    assert (s.scale, s.best, s.wait, s.cooldown_left) == state


def test_reduce_on_plateau_in_fit():
    X, y = blobs(n=40)
    # min_delta larger than any change: every epoch after the first is a plateau
    h = small_net().fit(X, y, epochs=4, batch_size=40, optimizer=fb.SGD(0.1),
                        callbacks=[fb.ReduceLROnPlateau("loss", factor=0.5, patience=1, min_delta=1e9)])
    assert h.history["lr"] == pytest.approx([0.1, 0.1, 0.05, 0.025], rel=1e-15)
    # full-batch gradient descent with a small rate keeps improving: the rate stays
    h = small_net().fit(X, y, epochs=5, batch_size=40, optimizer=fb.SGD(0.05, schedule=fb.ReduceLROnPlateau(
        "loss", factor=0.5, patience=1, min_delta=0.0)), shuffle=False)
    assert np.all(np.diff(h.history["loss"]) < 0) and h.history["lr"] == [0.05] * 5


class Scripted(Schedule):
    """Rates from a list (a monitored value fit records and the test controls: history['lr'])."""

    def __init__(self, rates):
        self.rates = rates

    def __call__(self, epoch, base_lr, samples_seen=0):
        return self.rates[epoch]


@pytest.mark.parametrize("lr,sched,match", [
    (0.1, fb.ExponentialDecay(gamma=1e308), r"ExponentialDecay\(gamma=1e\+308\) fails at epoch 2"),  # 1e308**2
    (1e300, fb.ExponentialDecay(gamma=1e10), r"gives the learning rate inf at epoch 1"),            # 1e300 * 1e10
    (0.1, Scripted([0.1, 0.1, -0.01, 0.1]), r"gives the learning rate -0.01 at epoch 2; rates must be >= 0 and finite in float64"),
    (0.1, Scripted([0.1, float("nan"), 0.1, 0.1]), r"gives the learning rate nan at epoch 1"),
], ids=["overflow", "inf", "negative", "nan"])
def test_bad_rate_raises_before_training(lr, sched, match):
    X, y = blobs(n=40)
    net = trained_clf()
    with unchanged(net), pytest.raises(fb.InputError, match=match):
        net.fit(X, y, epochs=4, optimizer=fb.SGD(lr), schedule=sched)


@pytest.mark.parametrize("make,match", [
    (lambda: fb.StepDecay(0), r"step_size must be an integer >= 1"),
    (lambda: fb.StepDecay(2.5), r"step_size must be an integer >= 1"),
    (lambda: fb.StepDecay(2, gamma=0.0), r"gamma must be a finite number in \(0.0"),
    (lambda: fb.ExponentialDecay(-0.5), r"gamma must be a finite number"),
    (lambda: fb.ExponentialDecay(float("inf")), r"gamma must be a finite number"),
    (lambda: fb.CosineAnnealing(0), r"T_max must be an integer >= 1"),
    (lambda: fb.CosineAnnealing(5, eta_min=-1.0), r"eta_min must be a finite number"),
    (lambda: fb.CosineAnnealing(5, warmup_epochs=-1), r"warmup_epochs must be an integer >= 0"),
    (lambda: fb.InverseScaling(power_t=-0.5), r"power_t must be a finite number"),
    (lambda: fb.InverseScaling(per="batch"), r"per must be 'epoch' or 'sample'"),
    (lambda: fb.ReduceLROnPlateau(factor=1.0), r"factor must be a finite number in \(0.0, 1.0\)"),
    (lambda: fb.ReduceLROnPlateau(factor=0.0), r"factor must be"),
    (lambda: fb.ReduceLROnPlateau(patience=-1), r"patience must be an integer >= 0"),
    (lambda: fb.ReduceLROnPlateau(mode="up"), r"mode must be 'auto', 'min' or 'max'"),
    (lambda: fb.ReduceLROnPlateau(min_lr=-1e-3), r"min_lr must be"),
    (lambda: fb.ReduceLROnPlateau(monitor=3), r"monitor must be a history key"),
    (lambda: fb.Adam(schedule="cosine"), r"schedule must be a fastbp.schedules.Schedule"),
])
def test_invalid_schedule_arguments(make, match):
    with pytest.raises(fb.InputError, match=match):
        make()


def test_fit_refuses_a_schedule_that_is_not_one():
    net = trained_clf()
    with unchanged(net), pytest.raises(fb.InputError, match=r"schedule must be a fastbp.schedules.Schedule"):
        net.fit(X_B, Y_B, schedule=lambda e, lr: lr)
    with unchanged(net), pytest.raises(fb.InputError, match=r"either in callbacks or as schedule="):
        net.fit(X_B, Y_B, schedule=fb.Constant(), callbacks=[fb.StepDecay(2)])


# ==== callbacks ==============================================================================================
# lr per epoch, monitored as "lr" (mode min): the improvements are at 0, 1, 3, 5 (min_delta 0) or 0, 1, 3 (0.005)
LR_SCRIPT = [0.05, 0.04, 0.045, 0.03, 0.035, 0.028, 0.029, 0.031, 0.033, 0.02, 0.02, 0.02]


@pytest.mark.parametrize("min_delta,best,stopped", [(0.0, 5, 8), (0.005, 3, 6)])
def test_early_stopping_restores_the_best_epochs_weights(min_delta, best, stopped, tmp_path):
    X, y = blobs(n=40)
    net = small_net(norm="batch", dropout=0.1)
    snaps = []
    keep = fb.LambdaCallback(on_epoch_end=lambda e, logs: snaps.append((net.params.copy(), net.norm_state.copy())))
    es = fb.EarlyStopping(monitor="lr", patience=3, min_delta=min_delta, restore_best_weights=True)
    ck = fb.ModelCheckpoint(tmp_path / "best.npz", monitor="lr", save_best_only=True)
    h = net.fit(X, y, epochs=len(LR_SCRIPT), batch_size=16, optimizer=fb.SGD(0.1),
                schedule=Scripted(LR_SCRIPT), callbacks=[keep, es, ck])
    assert h.epoch == list(range(stopped + 1)) and es.stopped_epoch == stopped and es.best_epoch == best
    assert not np.array_equal(net.params, snaps[-1][0])            # it did go back
    assert np.array_equal(net.params, snaps[best][0]) and np.array_equal(net.norm_state, snaps[best][1])
    if min_delta == 0.0:   # the checkpoint of the best epoch holds the same weights
        saved = fb.Network.load(tmp_path / "best.npz")
        assert np.array_equal(saved.params, net.params) and np.array_equal(saved.norm_state, net.norm_state)


def test_early_stopping_without_restore_keeps_the_last_weights():
    X, y = blobs(n=40)
    net = small_net()
    snaps = []
    h = net.fit(X, y, epochs=len(LR_SCRIPT), batch_size=16, optimizer=fb.SGD(0.1), schedule=Scripted(LR_SCRIPT),
                callbacks=[fb.LambdaCallback(on_epoch_end=lambda e, logs: snaps.append(net.params.copy())),
                           fb.EarlyStopping(monitor="lr", patience=2)])
    # patience 2: improvements at 0, 1, 3, 5, misses at 6 and 7: stops after epoch 7 with its own weights
    assert h.epoch == list(range(8)) and np.array_equal(net.params, snaps[-1])


def test_early_stopping_on_validation_loss_of_an_overfitting_net():
    # random labels: the validation loss must turn up; the weights come back from its minimum
    rng = np.random.default_rng(5)
    X, Xv = rng.standard_normal((40, 5)), rng.standard_normal((40, 5))
    y, yv = rng.integers(0, 3, 40), rng.integers(0, 3, 40)
    net = fb.Network([5, 64, 3], dtype=np.float64, seed=0)
    snaps = []
    es = fb.EarlyStopping(patience=3, restore_best_weights=True)
    h = net.fit(X, y, epochs=200, batch_size=8, optimizer=fb.Adam(0.02), validation_data=(Xv, yv),
                callbacks=[fb.LambdaCallback(on_epoch_end=lambda e, logs: snaps.append(net.params.copy())), es])
    val = h.history["val_loss"]
    best = int(np.argmin(val))
    assert len(val) < 200 and len(val) == best + 4 and es.best_epoch == best
    assert np.array_equal(net.params, snaps[best])
    assert net.evaluate(Xv, yv)["loss"] == pytest.approx(val[best], rel=1e-12)


@pytest.mark.parametrize("make", [
    lambda: fb.EarlyStopping("val_los"),
    lambda: fb.EarlyStopping("val_loss"),                       # no validation data given
    lambda: fb.EarlyStopping("val_accuracy"),
    lambda: fb.ModelCheckpoint("never.npz", monitor="acc", save_best_only=True),
    lambda: fb.ReduceLROnPlateau("val_loss"),
    lambda: fb.EarlyStopping("grad_norm_0"),                    # only with track_gradients
], ids=["typo", "no-val", "no-val-acc", "checkpoint", "plateau", "grad-norm"])
def test_unknown_monitor_raises_before_training(make, tmp_path, monkeypatch):
    net = trained_clf()
    monkeypatch.chdir(tmp_path)
    with unchanged(net), pytest.raises(fb.InputError, match=r"monitors '[a-z_0-9]+', which this fit does not record; "
                                                           r"it records \['loss', 'accuracy', 'lr'\]"):
        net.fit(X_B, Y_B, epochs=2, callbacks=[make()])
    assert os.listdir(tmp_path) == []


def test_regression_has_no_accuracy_to_monitor():
    net = fb.Network([5, 4, 2], output="identity", dtype=np.float64)
    with unchanged(net), pytest.raises(fb.InputError, match=r"'val_accuracy'.*records \['loss', 'lr', 'val_loss'\]"):
        net.fit(X_B, X_B[:, :2], validation_data=(X_B, X_B[:, :2]), callbacks=[fb.EarlyStopping("val_accuracy")])


def only_files(folder):
    return sorted(os.listdir(folder))


def test_model_checkpoint_every_epoch_with_format_fields(tmp_path):
    X, y = blobs(n=40)
    net = small_net(norm="batch")
    h = net.fit(X, y, epochs=3, batch_size=16, optimizer=fb.Adam(1e-2),
                callbacks=[fb.ModelCheckpoint(str(tmp_path / "ck-{epoch:02d}-{loss:.4f}.npz"))])
    names = [f"ck-{e + 1:02d}-{h.history['loss'][e]:.4f}.npz" for e in range(3)]
    assert only_files(tmp_path) == names                 # atomic writes: no temporary files left
    last = fb.Network.load(tmp_path / names[-1])
    assert np.array_equal(last.params, net.params) and np.array_equal(last.norm_state, net.norm_state)
    assert last.optimizer.step_count == net.optimizer.step_count == 9
    assert not np.array_equal(fb.Network.load(tmp_path / names[0]).params, net.params)


def test_model_checkpoint_save_best_only_writes_on_improvement(tmp_path):
    X, y = blobs(n=40)
    net = small_net()
    saved = []
    net.fit(X, y, epochs=9, batch_size=16, optimizer=fb.SGD(0.1), schedule=Scripted(LR_SCRIPT),
            callbacks=[fb.ModelCheckpoint(tmp_path / "b-{epoch}.npz", monitor="lr", save_best_only=True),
                       fb.LambdaCallback(on_epoch_end=lambda e, logs: saved.append(net.params.copy()))])
    assert only_files(tmp_path) == ["b-1.npz", "b-2.npz", "b-4.npz", "b-6.npz"]
    assert np.array_equal(fb.Network.load(tmp_path / "b-6.npz").params, saved[5])
    # mode max on the same values: saves epoch 1 only... and every later higher value
    for f in os.listdir(tmp_path):
        os.unlink(tmp_path / f)
    small_net().fit(X, y, epochs=9, batch_size=16, optimizer=fb.SGD(0.1), schedule=Scripted(LR_SCRIPT),
                    callbacks=[fb.ModelCheckpoint(tmp_path / "b-{epoch}.npz", monitor="lr", mode="max",
                                                  save_best_only=True)])
    assert only_files(tmp_path) == ["b-1.npz"]


def test_model_checkpoint_path_field_fit_does_not_record_is_refused_before_training(tmp_path):
    X, y = blobs(n=40)
    net = trained_clf()
    with unchanged(net), pytest.raises(fb.InputError, match=r"val_loss"):
        net.fit(X, y, epochs=2, callbacks=[fb.ModelCheckpoint(str(tmp_path / "ck-{val_loss:.3f}.npz"))])


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.reader(f))


def test_csv_logger_one_row_per_epoch_and_append(tmp_path):
    X, y = blobs(n=40)
    path = tmp_path / "log.csv"
    net = small_net()
    h = net.fit(X, y, epochs=3, batch_size=16, validation_data=(X, y), callbacks=[fb.CSVLogger(path)])
    rows = read_csv(path)
    assert rows[0] == ["epoch", "loss", "accuracy", "lr", "val_loss", "val_accuracy"]
    assert len(rows) == 4 and [r[0] for r in rows[1:]] == ["0", "1", "2"]
    for e, row in enumerate(rows[1:]):
        for key, value in zip(rows[0][1:], row[1:]):
            assert float(value) == h.history[key][e]        # written exactly (repr of the float)
    # resumed training appends below the same header
    h2 = net.fit(X, y, epochs=5, initial_epoch=3, batch_size=16, validation_data=(X, y),
                 callbacks=[fb.CSVLogger(path, append=True)])
    rows = read_csv(path)
    assert len(rows) == 6 and rows[0][0] == "epoch" and [r[0] for r in rows[1:]] == ["0", "1", "2", "3", "4"]
    assert float(rows[-1][1]) == h2.history["loss"][-1]
    # without append the file starts afresh
    net.fit(X, y, epochs=1, batch_size=16, callbacks=[fb.CSVLogger(path)])
    rows = read_csv(path)
    assert rows[0] == ["epoch", "loss", "accuracy", "lr"] and len(rows) == 2


def diverging():
    """A regression whose rate jumps to 1e8 in epoch 2: the loss overflows a few batches later."""
    rng = np.random.default_rng(0)
    X = rng.standard_normal((64, 4)).astype(np.float32)
    y = rng.standard_normal((64, 1)).astype(np.float32)
    opt = fb.SGD(0.01, schedule=Scripted([0.01, 0.01] + [1e8] * 8))
    return X, y, fb.Network([4, 16, 1], output="identity", seed=0), opt


def test_terminate_on_nan_stops_cleanly_with_the_last_finite_weights():
    X, y, net, opt = diverging()
    finite = []

    def keep(batch, logs):
        if math.isfinite(logs["loss"]):
            finite.append((batch, net.params.copy()))

    with pytest.warns(RuntimeWarning, match=r"non-finite loss .*terminating training"):
        h = net.fit(X, y, epochs=10, batch_size=8, optimizer=opt,
                    callbacks=[fb.LambdaCallback(on_batch_end=keep), fb.TerminateOnNaN()])
    assert 16 < len(finite) < 24                    # it diverged inside epoch 2
    assert np.all(np.isfinite(net.params)) and np.array_equal(net.params, finite[-1][1])
    assert h.epoch == [0, 1] and np.all(np.isfinite(h.history["loss"]))   # only the finished epochs
    # without it: DivergenceError, and the same last finite weights
    X, y, net2, opt2 = diverging()
    with pytest.raises(fb.DivergenceError, match=r"non-finite .*epoch 3, batch " + str(len(finite) - 16 + 1)):
        net2.fit(X, y, epochs=10, batch_size=8, optimizer=opt2)
    assert np.array_equal(net2.params, net.params) and net2.history.epoch == [0, 1]


def test_csv_logger_closes_its_file_when_fit_raises(tmp_path):
    X, y, net, opt = diverging()
    logger = fb.CSVLogger(tmp_path / "log.csv")
    with pytest.raises(fb.DivergenceError):
        net.fit(X, y, epochs=10, batch_size=8, optimizer=opt, callbacks=[logger])
    assert len(read_csv(tmp_path / "log.csv")) == 3      # header and the two finished epochs
    assert logger._file is None


def test_lambda_on_batch_end_sees_every_batch():
    X, y = blobs(n=50)
    calls, epochs = [], []
    net = small_net()
    h = net.fit(X, y, epochs=2, batch_size=16, callbacks=[fb.LambdaCallback(
        on_batch_end=lambda b, logs: calls.append((b, logs["size"], logs["loss"])),
        on_epoch_begin=lambda e, logs: epochs.append(("begin", e)),
        on_epoch_end=lambda e, logs: epochs.append(("end", e)))])
    assert [(b, s) for b, s, _ in calls] == [(0, 16), (1, 16), (2, 16), (3, 2)] * 2
    assert epochs == [("begin", 0), ("end", 0), ("begin", 1), ("end", 1)]
    for e in range(2):   # the epoch's loss is the size-weighted mean of its batch losses
        part = calls[4 * e:4 * e + 4]
        assert h.history["loss"][e] == pytest.approx(sum(s * v for _, s, v in part) / 50, rel=1e-12)
    assert net.optimizer.step_count == 8


def test_callback_subclass_with_all_hooks_and_stop_mid_epoch():
    class Recorder(Callback):
        def __init__(self):
            self.events = []

        def on_train_begin(self, logs=None):
            self.events.append("train_begin")

        def on_batch_end(self, batch, logs=None):
            self.events.append(("batch", batch))
            if len(self.model.history.epoch) == 1 and batch == 2:
                self.model.stop_training = True     # stops after this batch of the second epoch

        def on_epoch_end(self, epoch, logs=None):
            self.events.append(("epoch", epoch))

        def on_train_end(self, logs=None):
            self.events.append("train_end")

    X, y = blobs(n=64)
    net = small_net()
    rec = Recorder()
    h = net.fit(X, y, epochs=5, batch_size=16, callbacks=[rec])
    assert rec.events == (["train_begin"] + [("batch", b) for b in range(4)] + [("epoch", 0)]
                          + [("batch", b) for b in range(3)] + ["train_end"])
    assert h.epoch == [0] and net.optimizer.step_count == 7 and rec.model is net


def test_bad_callbacks_are_refused():
    net = trained_clf()
    with unchanged(net), pytest.raises(fb.InputError, match=r"callbacks must be fastbp.callbacks.Callback"):
        net.fit(X_B, Y_B, callbacks=[lambda *a: None])
    with pytest.raises(fb.InputError, match=r"on_epoch_end must be callable"):
        fb.LambdaCallback(on_epoch_end=3)
    with pytest.raises(fb.InputError, match=r"patience must be an integer >= 0"):
        fb.EarlyStopping(patience=-1)
    with pytest.raises(fb.InputError, match=r"mode must be 'auto', 'min' or 'max'"):
        fb.ModelCheckpoint("x.npz", mode="best")


# ==== validation_split ==========================================================================================
@pytest.mark.parametrize("frac,match", [
    (1.0, r"validation_split must be a fraction in \(0, 1\), got 1.0"),
    (1.5, r"validation_split must be a fraction in \(0, 1\)"),
    (-0.1, r"validation_split must be a fraction in \(0, 1\)"),
    (float("nan"), r"validation_split must be a fraction in \(0, 1\)"),
    (True, r"validation_split must be a fraction in \(0, 1\)"),
    ("0.2", r"validation_split must be a fraction in \(0, 1\)"),
    (0.001, r"validation_split=0.001 of 90 rows leaves no validation rows"),
    (0.999, r"leaves no training rows"),
])
def test_bad_validation_split(frac, match):
    net = trained_clf()
    with unchanged(net), pytest.raises(fb.InputError, match=match):
        net.fit(X_B, Y_B, validation_split=frac, epochs=1)


def split_of(net, X, y, frac):
    """The rows fit would hold out, as an index into X (through the network's own split)."""
    Xc, T, labels, use_labels, sw = net._check_xyw(X, y)
    _, val = split(net, Xc, T, labels, use_labels, sw, frac)
    return np.array([int(np.flatnonzero(np.all(X == row, axis=1))[0]) for row in val[0]])


def test_validation_split_is_stratified_and_seeded():
    rng = np.random.default_rng(3)
    y = np.r_[np.zeros(60, int), np.ones(30, int), np.full(10, 2)]
    rng.shuffle(y)
    X = rng.standard_normal((100, 5))
    idx = split_of(small_net(seed=4), X, y, 0.2)
    assert np.bincount(y[idx], minlength=3).tolist() == [12, 6, 2]        # 20% of each class
    assert np.array_equal(idx, split_of(small_net(seed=4), X, y, 0.2))     # same seed, same rows
    assert not np.array_equal(np.sort(idx), np.sort(split_of(small_net(seed=5), X, y, 0.2)))
    # fit trains on the other 80 rows and validates on these 20
    net = small_net(seed=4)
    sizes = []
    h = net.fit(X, y, epochs=2, batch_size=32, validation_split=0.2,
                callbacks=[fb.LambdaCallback(on_batch_end=lambda b, logs: sizes.append(logs["size"]))])
    assert sizes == [32, 32, 16] * 2
    assert set(h.history) == {"loss", "accuracy", "lr", "val_loss", "val_accuracy"}
    ev = net.evaluate(X[idx], y[idx])
    assert h.history["val_loss"][-1] == ev["loss"] and h.history["val_accuracy"][-1] == ev["accuracy"]


def test_validation_split_stratifies_one_hot_and_binary_targets():
    rng = np.random.default_rng(1)
    y = np.r_[np.zeros(40, int), np.ones(10, int)]
    X = rng.standard_normal((50, 5))
    idx = split_of(small_net(), X, np.eye(3)[y], 0.2)
    assert np.bincount(y[idx], minlength=2).tolist() == [8, 2]
    binary = fb.Network([5, 4, 1], output="sigmoid", dtype=np.float64)
    idx = split_of(binary, X, y.astype(float), 0.3)
    assert np.bincount(y[idx], minlength=2).tolist() == [12, 3]


def test_validation_split_for_regression():
    rng = np.random.default_rng(2)
    X = rng.standard_normal((50, 5))
    Y = X[:, :2] ** 2
    net = fb.Network([5, 8, 2], output="identity", dtype=np.float64, seed=0)
    idx = split_of(net, X, Y, 0.3)
    assert len(idx) == 15 and len(set(idx)) == 15
    h = net.fit(X, Y, epochs=2, batch_size=8, validation_split=0.3)
    assert set(h.history) == {"loss", "lr", "val_loss"} and h.epoch == [0, 1]
    assert h.history["val_loss"][-1] == net.evaluate(X[idx], Y[idx])["loss"]


def test_validation_split_carries_the_sample_weights():
    X, y = blobs(n=60)
    w = np.random.default_rng(0).uniform(0.5, 2.0, 60)
    net = small_net()
    idx = split_of(net, X, y, 0.25)
    h = net.fit(X, y, sample_weight=w, epochs=1, batch_size=64, validation_split=0.25)
    assert h.history["val_loss"][0] == pytest.approx(net.evaluate(X[idx], y[idx], sample_weight=w[idx])["loss"],
                                                     rel=1e-14)


# ==== progress output ============================================================================================
def test_verbose_2_prints_one_line_per_epoch(capsys):
    X, y = blobs(n=40)
    small_net().fit(X, y, epochs=3, batch_size=16, verbose=2, validation_data=(X, y))
    out, err = capsys.readouterr()
    lines = out.strip().splitlines()
    assert len(lines) == 3 and err == ""
    for e, line in enumerate(lines):
        assert line.startswith(f"epoch {e + 1}/3 - ") and "samples/s" in line
        assert "loss: " in line and "val_loss: " in line and "val_accuracy: " in line


@pytest.mark.parametrize("verbose", [0, "auto"])
def test_silent_unless_asked_or_on_a_terminal(verbose, capsys):
    X, y = blobs(n=40)
    assert not sys.stderr.isatty()        # pytest captures: not a terminal, so "auto" is silent
    small_net().fit(X, y, epochs=2, batch_size=16, verbose=verbose)
    assert capsys.readouterr() == ("", "")


def test_verbose_1_draws_a_tqdm_bar(capsys, monkeypatch):
    pytest.importorskip("tqdm")
    monkeypatch.setenv("COLUMNS", "100")   # captured stderr has no width: without one it prints lines
    X, y = blobs(n=40)
    small_net().fit(X, y, epochs=2, batch_size=16, verbose=1)
    out, err = capsys.readouterr()
    assert out == ""
    assert "epoch 1/2" in err and "epoch 2/2" in err and "samples" in err and "loss" in err
    assert "100%" in err and "40.0/40.0" in err


def test_verbose_1_without_tqdm_warns_and_prints_lines(capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "tqdm", None)       # import tqdm now raises ImportError
    monkeypatch.setitem(sys.modules, "tqdm.auto", None)
    X, y = blobs(n=40)
    with pytest.warns(UserWarning, match=r"verbose=1 needs tqdm"):
        small_net().fit(X, y, epochs=2, batch_size=16, verbose=1)
    assert len(capsys.readouterr().out.strip().splitlines()) == 2


@pytest.mark.parametrize("verbose", [3, True, "yes", -1])
def test_bad_verbose(verbose):
    net = trained_clf()
    with unchanged(net), pytest.raises(fb.InputError, match=r"verbose must be 'auto', 0, 1 or 2"):
        net.fit(X_B, Y_B, verbose=verbose)


# ==== gradient clipping ===========================================================================================
def flat(net, grads):
    out = np.zeros_like(net.params)
    for g, v in zip(grads, net._views(out)):
        for a, b in zip(g, v):
            b[...] = a
    return out


def one_sgd_step(net, X, y, **kw):
    """Parameter change of one full-batch SGD(lr=1) step through fit."""
    before = net.params.copy()
    h = net.fit(X, y, epochs=1, batch_size=len(X), optimizer=fb.SGD(lr=1.0), shuffle=False, **kw)
    return before - net.params, h


@pytest.mark.parametrize("factor", [0.1, 0.5])
def test_clip_norm_bounds_the_update(factor, rng):
    X, y = make_data(rng, 24, 5, 3, "cross_entropy")
    make = lambda: small_net(norm="batch")  # noqa: E731  (gamma and beta count in the global norm)
    _, grads = make().loss_and_gradients(X, y)
    g = flat(make(), grads)
    norm = np.linalg.norm(g)
    c = factor * norm
    step, h = one_sgd_step(make(), X, y, clip_norm=c, track_gradients=True)
    assert np.linalg.norm(step) <= c * (1 + 1e-12)
    assert np.linalg.norm(step) == pytest.approx(c * norm / (norm + 1e-6), rel=1e-10)
    scale = naive.clip_scale([g], c)
    np.testing.assert_allclose(step, scale * g, rtol=1e-10, atol=1e-15)
    # the recorded gradient norms are taken before clipping
    recorded = [h.history[f"grad_norm_{l}"][0] for l in range(2)]
    assert math.sqrt(sum(r * r for r in recorded)) == pytest.approx(norm, rel=1e-12)
    torch = pytest.importorskip("torch")
    params = []
    for a in (a for layer in grads for a in layer):
        params.append(torch.zeros(a.shape, dtype=torch.float64, requires_grad=True))
        params[-1].grad = torch.from_numpy(a.copy())
    torch.nn.utils.clip_grad_norm_(params, c)
    clipped = iter(p.grad.numpy() for p in params)
    np.testing.assert_allclose(step, flat(make(), [[next(clipped) for _ in layer] for layer in grads]),
                               rtol=1e-10, atol=1e-15)


def test_clip_norm_above_the_gradient_norm_changes_nothing(rng):
    X, y = make_data(rng, 24, 5, 3, "cross_entropy")
    _, grads = small_net().loss_and_gradients(X, y)
    norm = np.linalg.norm(flat(small_net(), grads))
    clipped, _ = one_sgd_step(small_net(), X, y, clip_norm=2 * norm)
    plain, _ = one_sgd_step(small_net(), X, y)
    assert np.array_equal(clipped, plain)


@pytest.mark.parametrize("clip_norm", [0, -1.0, float("inf"), float("nan"), "1"])
def test_bad_clip_norm(clip_norm):
    net = trained_clf()
    with unchanged(net), pytest.raises(fb.InputError, match=r"clip_norm must be"):
        net.fit(X_B, Y_B, clip_norm=clip_norm)


# ==== track_gradients =============================================================================================
def test_track_gradients_records_norms_and_update_ratios():
    X, y = blobs(n=50)
    net = fb.Network([5, 8, 6, 3], dtype=np.float64, seed=0, norm=["batch", None])
    h = net.fit(X, y, epochs=3, batch_size=16, track_gradients=True)
    for l in range(3):
        for key in (f"grad_norm_{l}", f"update_ratio_{l}"):
            v = np.array(h.history[key])
            assert v.shape == (3,) and np.all(np.isfinite(v)) and np.all(v > 0)
    assert "grad_norm_3" not in h.history
    assert not any(k.startswith("grad_norm") for k in small_net().fit(X, y, epochs=1).history)


def test_track_gradients_values_for_one_full_batch_step():
    X, y = blobs(n=30)
    make = lambda: fb.Network([5, 8, 6, 3], dtype=np.float64, seed=0, norm=["batch", "layer"])  # noqa: E731
    net = make()
    _, grads = make().loss_and_gradients(X, y)
    before = net.params.copy()
    h = net.fit(X, y, epochs=1, batch_size=30, optimizer=fb.SGD(lr=0.1), shuffle=False, track_gradients=True)
    expected_g = [math.sqrt(sum(float(np.sum(a ** 2)) for a in layer)) for layer in grads]
    assert [len(layer) for layer in grads] == [4, 4, 2]     # gamma and beta are part of their layer
    got_g = [h.history[f"grad_norm_{l}"][0] for l in range(3)]
    np.testing.assert_allclose(got_g, expected_g, rtol=1e-12)
    dp = layer_norms(net, net.params - before)
    p = layer_norms(net, net.params)
    np.testing.assert_allclose([h.history[f"update_ratio_{l}"][0] for l in range(3)], np.array(dp) / np.array(p),
                               rtol=1e-10)
    np.testing.assert_allclose(dp, 0.1 * np.array(expected_g), rtol=1e-10)   # SGD: the step is lr * gradient


# ==== resume =========================================================================================================
RESUME_CASES = {
    "adam-cosine": lambda: fb.Adam(1e-2, schedule=fb.CosineAnnealing(3, warmup_epochs=1)),
    "adam-plateau": lambda: fb.Adam(1e-2, schedule=fb.ReduceLROnPlateau("val_loss", factor=0.5, patience=1,
                                                                      min_delta=10.0)),
    "sgd-nesterov": lambda: fb.SGD(0.05, momentum=0.9, nesterov=True),
    "rmsprop-centered": lambda: fb.RMSprop(1e-2, centered=True, momentum=0.5),
}


@pytest.mark.parametrize("case", list(RESUME_CASES))
def test_resume_after_save_and_load_is_bit_identical(case, tmp_path):
    X, y = blobs(n=90)                     # batches of 16: the last one has 10 rows
    Xv, yv = X[::3], y[::3]

    def make():
        return fb.Network([5, 8, 8, 3], dtype=np.float64, seed=1, norm="batch", dropout=0.2)

    def fit(net, optimizer, **kw):
        return net.fit(X, y, batch_size=16, optimizer=optimizer, shuffle=True, validation_data=(Xv, yv), **kw)

    once = make()
    h_once = fit(once, RESUME_CASES[case](), epochs=4)
    first = make()
    fit(first, RESUME_CASES[case](), epochs=2)
    first.save(tmp_path / "m.npz")
    resumed = fb.Network.load(tmp_path / "m.npz")
    assert resumed.optimizer.step_count == first.optimizer.step_count == 12
    h_rest = fit(resumed, resumed.optimizer, epochs=4, initial_epoch=2)
    assert np.array_equal(resumed.params, once.params)
    assert np.array_equal(resumed.norm_state, once.norm_state)
    assert resumed.optimizer.step_count == once.optimizer.step_count == 24
    for a, b in zip(resumed.optimizer.state_arrays(), once.optimizer.state_arrays()):
        assert np.array_equal(a, b)
    assert h_rest.epoch == [2, 3]
    for key in h_once.history:
        assert h_rest.history[key] == h_once.history[key][2:], key
    if case == "adam-plateau":             # the schedule's state travelled with the file
        assert h_once.history["lr"] == [0.01, 0.01, 0.005, 0.0025]


def test_resume_without_save_continues_the_same_way():
    X, y = blobs(n=50)
    a, b = small_net(dropout=0.3), small_net(dropout=0.3)
    a.fit(X, y, epochs=3, batch_size=16, optimizer=fb.Adam(1e-2))
    b.fit(X, y, epochs=1, batch_size=16, optimizer=fb.Adam(1e-2))
    b.fit(X, y, epochs=3, initial_epoch=1, batch_size=16)
    assert np.array_equal(a.params, b.params)


# ==== Ctrl-C =========================================================================================================
def test_ctrl_c_stops_after_the_current_batch_and_keeps_everything():
    X, y = blobs(n=200)                     # 10 batches of 20 per epoch
    net = small_net(norm="batch")
    initial = net.params.copy()
    previous = signal.getsignal(signal.SIGINT)
    seen = []

    def on_batch_end(batch, logs):
        seen.append((len(net.history.epoch), batch))
        if seen[-1] == (1, 3):              # batch 3 of epoch 1 (0-based)
            signal.raise_signal(signal.SIGINT)

    with pytest.warns(UserWarning, match=r"interrupted by user in epoch 2 after 4 of 10 batches"):
        h = net.fit(X, y, epochs=5, batch_size=20, callbacks=[fb.LambdaCallback(on_batch_end=on_batch_end)])
    assert seen[-1] == (1, 3) and len(seen) == 14
    assert h.epoch == [0] and all(len(v) == 1 for v in h.history.values())
    assert net.optimizer.step_count == 14
    assert np.all(np.isfinite(net.params)) and not np.array_equal(net.params, initial)
    assert signal.getsignal(signal.SIGINT) is previous


def test_second_ctrl_c_interrupts_at_once():
    X, y = blobs(n=100)
    net = small_net()
    previous = signal.getsignal(signal.SIGINT)

    def twice(batch, logs):
        signal.raise_signal(signal.SIGINT)
        signal.raise_signal(signal.SIGINT)

    with pytest.raises(KeyboardInterrupt):
        net.fit(X, y, epochs=3, batch_size=20, callbacks=[fb.LambdaCallback(on_batch_end=twice)])
    assert signal.getsignal(signal.SIGINT) is previous
    assert np.all(np.isfinite(net.params)) and net.optimizer.step_count == 1


# ==== determinism ====================================================================================================
def test_same_seed_and_threads_give_bit_identical_training():
    X, y = blobs(n=100, dtype=np.float32)
    runs = []
    for _ in range(2):
        net = fb.Network([5, 16, 16, 3], seed=7, dropout=0.25, norm=["batch", "layer"])
        h = net.fit(X, y, epochs=3, batch_size=16, shuffle=True, validation_split=0.2, optimizer=fb.Adam(1e-2))
        runs.append((net.params.copy(), net.norm_state.copy(), h.history))
    assert np.array_equal(runs[0][0], runs[1][0]) and np.array_equal(runs[0][1], runs[1][1])
    assert runs[0][2] == runs[1][2]


def _blas_products_thread_invariant(shapes, dtype):
    """Whether the BLAS fastbp calls gives the same bits on 1 and 2 threads for these (m, k, n)
    products, in the three transpositions a training step uses (X W, dZ W^T, X^T dZ)."""
    rng = np.random.default_rng(1)
    before = fb.get_num_threads()
    try:
        for m, k, n in shapes:
            A, B = rng.standard_normal((m, k)).astype(dtype), rng.standard_normal((k, n)).astype(dtype)
            C = rng.standard_normal((m, n)).astype(dtype)
            out = []
            for t in (1, 2):
                fb.set_num_threads(t)
                out.append((A @ B, C @ B.T, A.T @ C))
            if not all(np.array_equal(a, b) for a, b in zip(*out)):
                return False
    finally:
        fb.set_num_threads(before)
    return True


def test_one_and_two_threads_agree_for_small_layers():
    # The Numba kernels are serial, so only the BLAS GEMMs depend on the thread count. Whether
    # OpenBLAS's threaded driver gives the same bits depends on the kernel set it runs: its
    # AVX-512 (SkylakeX) small-matrix kernels did for every inner dimension <= 128; its Haswell
    # kernels (AVX2 CPUs, e.g. AMD Zen 3) cut even 64x64x128 into panels differently on 2 threads.
    # So: bit-identical wherever the products alone are, else the same training to rounding.
    rng = np.random.default_rng(0)
    X = rng.standard_normal((1024, 64)).astype(np.float32)
    y = rng.integers(0, 10, 1024)
    before = fb.get_num_threads()
    results = []
    try:
        for n in (1, 2):
            fb.set_num_threads(n)
            net = fb.Network([64, 128, 128, 10], seed=0, dropout=0.1, norm="batch")
            h = net.fit(X, y, epochs=2, batch_size=64, optimizer=fb.Adam(1e-3))
            results.append((net.params.copy(), h.history["loss"], net.evaluate(X, y)))
    finally:
        fb.set_num_threads(before)
    shapes = [(64, 64, 128), (64, 128, 128), (64, 128, 10)]
    if _blas_products_thread_invariant(shapes, np.float32):
        assert np.array_equal(results[0][0], results[1][0]) and results[0][1] == results[1][1]
    else:
        # products differing in the last bits: each epoch's mean loss agrees to float32 rounding
        # of a sum over 1024 rows (measured 3e-8 relative on Zen 3), and so does the final evaluation
        np.testing.assert_allclose(results[0][1], results[1][1], rtol=1e-6)
        np.testing.assert_allclose(results[0][2]["loss"], results[1][2]["loss"], rtol=1e-5)
        assert abs(results[0][2]["accuracy"] - results[1][2]["accuracy"]) <= 2 / 1024


# ==== norm layers ====================================================================================================
def test_get_and_set_weights_round_trip_with_norm_layers(rng):
    net = fb.Network([4, 6, 5, 3], dtype=np.float64, norm=["batch", "layer"], seed=0)
    weights = net.get_weights()
    assert [len(w) for w in weights] == [6, 4, 2]          # (W, b, gamma, beta, running_mean, running_var)
    W, b, gamma, beta, rm, rv = weights[0]
    assert np.all(gamma == 1) and np.all(beta == 0) and np.all(rm == 0) and np.all(rv == 1)
    new = [tuple(rng.uniform(0.1, 1.0, a.shape) for a in w) for w in weights]
    X = rng.standard_normal((7, 4))
    before = net.predict_proba(X)
    net.set_weights(new)
    for got, want in zip(net.get_weights(), new):
        assert all(np.array_equal(a, b) for a, b in zip(got, want))
    assert not np.allclose(net.predict_proba(X), before)
    assert np.array_equal(net._state_views()[0][1], new[0][5])   # running_var went into norm_state
    # copies, not views
    net.get_weights()[0][2][...] = 7.0
    assert np.array_equal(net.get_weights()[0][2], new[0][2])


@pytest.mark.parametrize("change,match", [
    (lambda w: [w[0][:2]] + w[1:], r"layer 0 needs 6 arrays, got 2"),
    (lambda w: [w[0][:5] + (-w[0][5],)] + w[1:], r"layer 0: running_var must be >= 0"),
    (lambda w: [w[0], w[1][:3] + (np.ones(2),), w[2]], r"layer 1: expected .*beta \(5,\)"),
    (lambda w: [w[0], w[1][:2] + (np.full(5, np.nan),) + w[1][3:], w[2]], r"layer 1: gamma must be numeric and finite"),
])
def test_set_weights_refuses_bad_norm_arrays(change, match):
    net = fb.Network([4, 6, 5, 3], dtype=np.float64, norm=["batch", "layer"], seed=0)
    with unchanged(net), pytest.raises(fb.InputError, match=match):
        net.set_weights(change(net.get_weights()))


def test_save_and_load_keep_the_norm_statistics(tmp_path):
    X, y = blobs(n=60)
    net = fb.Network([5, 8, 6, 3], dtype=np.float64, seed=0, norm=["batch", "layer"])
    net.fit(X, y, epochs=3, batch_size=16)
    net.save(tmp_path / "n.npz")
    back = fb.Network.load(tmp_path / "n.npz")
    assert back.norm == ["batch", "layer"] and back.norm_momentum == 0.1 and back.norm_eps == 1e-5
    assert np.array_equal(back.norm_state, net.norm_state) and np.array_equal(back.params, net.params)
    for a, b in zip(back.get_weights(), net.get_weights()):
        assert all(np.array_equal(u, v) for u, v in zip(a, b))
    assert np.array_equal(back.predict_proba(X), net.predict_proba(X))


def numpy_forward(net, X, batch_stats):
    """The network's output in NumPy: batch norm with the running (or the batch's) statistics."""
    A = naive.f64(X)
    views, states = net._views(net.params), net._state_views()
    for l, (v, st) in enumerate(zip(views[:-1], states[:-1])):
        Zb = A @ v[0] + v[1]
        if batch_stats:
            mu, var = Zb.mean(axis=0), Zb.var(axis=0)
        else:
            mu, var = st
        xhat = (Zb - mu) / np.sqrt(var + net.norm_eps)
        A = naive.activation_forward(net.activations[l], v[2] * xhat, v[3], 0.0)
    return naive.softmax(A @ views[-1][0] + views[-1][1])


def test_predict_uses_the_running_statistics():
    X, y = blobs(n=64)
    net = fb.Network([5, 8, 3], activation="tanh", dtype=np.float64, seed=0, norm="batch")
    net.fit(X, y, epochs=4, batch_size=16, optimizer=fb.Adam(1e-2))
    rm, rv = net._state_views()[0]
    assert not np.allclose(rm, 0) and not np.allclose(rv, 1)           # training moved them
    P = net.predict_proba(X)
    np.testing.assert_allclose(P, numpy_forward(net, X, batch_stats=False), rtol=1e-12)
    assert not np.allclose(P, numpy_forward(net, X, batch_stats=True), rtol=1e-3)
    for i in (0, 17):   # each row on its own: no batch statistics involved
        np.testing.assert_allclose(net.predict_proba(X[i:i + 1])[0], P[i], rtol=1e-13)
    # evaluate (inference) and the training-mode loss differ: batch vs running statistics
    assert net.evaluate(X, y)["loss"] != pytest.approx(net.loss_and_gradients(X, y)[0], rel=1e-6)


def test_batch_norm_running_statistics_follow_loss_and_gradients_and_train_step():
    # torch's training-mode forward: run = 0.9 run + 0.1 (batch mean, unbiased batch variance)
    X, y = blobs(n=24)
    nets = [fb.Network([5, 8, 3], activation="tanh", dtype=np.float64, seed=0, norm="batch") for _ in range(2)]
    W, b, gamma = nets[0].get_weights()[0][:3]
    Zb = X @ W + b
    nets[0].loss_and_gradients(X, y)
    nets[1].train_step(X, y, fb.SGD(lr=0.0))
    for net in nets:
        rm, rv = net._state_views()[0]
        np.testing.assert_allclose(rm, 0.1 * Zb.mean(axis=0), rtol=1e-12, atol=1e-15)
        np.testing.assert_allclose(rv, 0.9 + 0.1 * Zb.var(axis=0, ddof=1), rtol=1e-12)


def test_layer_norm_is_the_same_in_training_and_inference():
    X, y = blobs(n=40)
    net = fb.Network([5, 8, 3], activation="tanh", dtype=np.float64, seed=0, norm="layer")
    net.fit(X, y, epochs=2, batch_size=16)
    assert net.norm_state.size == 0
    assert net.evaluate(X, y)["loss"] == pytest.approx(net.loss_and_gradients(X, y)[0], rel=1e-13)
    np.testing.assert_allclose(net.predict_proba(X[3:4])[0], net.predict_proba(X)[3], rtol=1e-13)


@pytest.mark.parametrize("norm", ["batch", "layer"])
def test_norm_networks_learn_a_nonlinear_task(norm):
    rng = np.random.default_rng(0)
    X = rng.uniform(-1, 1, (600, 2)).astype(np.float32)
    y = ((X[:, 0] * X[:, 1]) > 0).astype(int)                # XOR of the signs
    net = fb.Network([2, 32, 32, 2], activation="relu", seed=0, norm=norm)
    net.fit(X[:400], y[:400], epochs=40, batch_size=32, optimizer=fb.Adam(1e-2))
    assert net.evaluate(X[400:], y[400:])["accuracy"] >= 0.95


@pytest.mark.parametrize("kw,match", [
    ({"norm": "group"}, r"unknown norm 'group'"),
    ({"norm": ["batch"]}, r"norm must be None, 'batch', 'layer' or one per hidden layer \(2\)"),
    ({"norm_momentum": 1.5}, r"norm_momentum must be a finite number in \[0.0, 1.0\]"),
    ({"norm_eps": 0.0}, r"norm_eps must be a finite number in \(0.0, inf\]"),
])
def test_bad_norm_arguments(kw, match):
    with pytest.raises(fb.InputError, match=match):
        fb.Network([4, 6, 5, 3], **kw)
