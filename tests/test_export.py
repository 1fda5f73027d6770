"""fastbp.export: ONNX export (checked with ONNX Runtime), PyTorch interchange, scikit-learn
estimators <-> Network, and the skl2onnx converters.

Compile budget: every network here has its activations in its hidden layers (one layer per
activation, ``activation=[...]``) and its norms per layer, so the outputs x norms x dtypes are
covered by a few networks; with the suite's one-driver-per-dtype setting (conftest) the file
compiles the inference driver in both dtypes and the loss/gradient driver in float64.
"""

import numpy as np
import pytest

import fastbp as fb
from fastbp import export as E
from fastbp.names import ACTIVATIONS, OUTPUT_LOSS_PAIRS

onnx = pytest.importorskip("onnx", reason="ONNX export needs onnx (pip install fastbp[onnx])")
ort = pytest.importorskip("onnxruntime", reason="checking the exported graphs needs onnxruntime")

RTOL = {np.float64: 1e-10, np.float32: 1e-5}
NORM_CYCLE = (None, "batch", "layer")
N_IN, WIDTH = 5, 7


def _close(got, want, dtype, what=""):
    """Relative to the largest magnitude of ``want`` (outputs near 0 are compared absolutely)."""
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    assert got.shape == want.shape, (what, got.shape, want.shape)
    scale = max(np.abs(want).max(), np.finfo(np.float64).tiny)
    err = np.abs(got - want).max() / scale
    assert err <= RTOL[np.dtype(dtype).type], f"{what}: relative error {err:.3g} > {RTOL[np.dtype(dtype).type]}"


def _randomize(net, rng):
    """Non-trivial biases, norm scales/shifts and running statistics (fresh ones are 0/1)."""
    ws = []
    for w in net.get_weights():
        w = list(w)
        w[1] = rng.normal(0, 0.3, w[1].shape)
        if len(w) >= 4:
            w[2], w[3] = rng.uniform(0.5, 1.5, w[2].shape), rng.normal(0, 0.3, w[3].shape)
        if len(w) == 6:
            w[4], w[5] = rng.normal(0, 0.3, w[4].shape), rng.uniform(0.5, 2.0, w[5].shape)
        ws.append(tuple(w))
    net.set_weights(ws)
    return net


def _all_activations_net(output, loss, dtype, shift=0, rng=None, k=3):
    """One hidden layer per activation; layer i gets norm NORM_CYCLE[(i + shift) % 3], so over
    three shifts every activation sits once with each norm and once without."""
    acts = list(ACTIVATIONS)
    norms = [NORM_CYCLE[(i + shift) % 3] for i in range(len(acts))]
    net = fb.Network([N_IN] + [WIDTH] * len(acts) + [k], activation=acts, output=output, loss=loss, dtype=dtype,
                     norm=norms, seed=shift)
    return _randomize(net, rng if rng is not None else np.random.default_rng(shift))


def _session(model, threads=1):
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    return ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])


# ---- ONNX ------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["float64", "float32"])
@pytest.mark.parametrize("pair", OUTPUT_LOSS_PAIRS, ids=[f"{o}-{l}" for o, l in OUTPUT_LOSS_PAIRS])
def test_onnx_matches_predict_proba(pair, dtype):
    output, loss = pair
    shift = OUTPUT_LOSS_PAIRS.index(pair)
    net = _all_activations_net(output, loss, dtype, shift=shift)
    rng = np.random.default_rng(100 + shift)
    X = {n: rng.standard_normal((n, N_IN)).astype(dtype) for n in (1, 7, 1000)}
    want = {n: net.predict_proba(x) for n, x in X.items()}
    assert np.ptp(want[1000], axis=0).min() > 1e-3      # the outputs depend on the input (not saturated)
    # 13: layer norm from primitive ops; 17: the default (LayerNormalization); 20: Gelu (float32)
    for opset in (13, None, 20):
        model = E.to_onnx(net, opset=opset)
        onnx.checker.check_model(model, full_check=True)
        ops = {n.op_type for n in model.graph.node}
        assert not ops & {"Dropout"}
        assert ("LayerNormalization" in ops) == (opset != 13)
        assert "BatchNormalization" in ops
        assert ("Gelu" in ops) == (opset == 20 and dtype == np.float32)
        sess = _session(model)
        for n, x in X.items():
            (got,) = sess.run(None, {"X": x})
            assert got.dtype == dtype
            _close(got, want[n], dtype, f"opset {opset}, batch {n}")


def test_onnx_file_names_and_dynamic_batch(tmp_path):
    net = _all_activations_net("softmax", "cross_entropy", np.float64)
    path = tmp_path / "model.onnx"
    assert net.to_onnx(path, input_name="features", output_name="proba") == path   # the method is the function
    model = onnx.load(path)
    onnx.checker.check_model(model)
    (inp,), (out,) = model.graph.input, model.graph.output
    assert (inp.name, out.name) == ("features", "proba")
    for v, width in ((inp, N_IN), (out, 3)):
        assert v.type.tensor_type.elem_type == onnx.TensorProto.DOUBLE
        d0, d1 = v.type.tensor_type.shape.dim
        assert d0.dim_param == "batch" and not d0.HasField("dim_value") and d1.dim_value == width
    assert model.opset_import[0].version == E.DEFAULT_OPSET
    meta = {p.key: p.value for p in model.metadata_props}
    import json
    assert json.loads(meta["fastbp_config"])["activation"] == list(ACTIVATIONS)
    assert not list(tmp_path.glob(".fastbp-*"))     # the temporary file was renamed
    x = np.random.default_rng(0).standard_normal((4, N_IN))
    (got,) = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"features": x})
    _close(got, net.predict_proba(x), np.float64)


def test_onnx_dropout_is_absent_and_bad_arguments():
    net = fb.Network([3, 4, 2], activation="relu", dropout=0.5, dtype=np.float64)
    model = E.to_onnx(net)
    assert [n.op_type for n in model.graph.node] == ["Gemm", "Relu", "Gemm", "Softmax"]
    for opset in (12, 10**4, "17", 17.0, True):
        with pytest.raises(ValueError, match="opset must be an integer from 13"):
            E.to_onnx(net, opset=opset)
    with pytest.raises(ValueError, match="different names"):
        E.to_onnx(net, input_name="x", output_name="x")
    with pytest.raises(TypeError, match="fastbp.Network"):
        E.to_onnx("model.npz")


# ---- PyTorch -----------------------------------------------------------------------------------
def _torch():
    return pytest.importorskip("torch", reason="torch interchange needs torch (pip install torch==2.13.0)")


def _torch_loss(torch, seq, net, X, y):
    """The network's mean loss in torch, from the output Linear's values."""
    F = torch.nn.functional
    body = seq if net.output == "identity" else seq[:-1]
    z = body(torch.as_tensor(X))
    if net.loss == "cross_entropy":
        return F.cross_entropy(z, torch.as_tensor(y))
    t = torch.as_tensor(y)
    if net.loss == "binary_cross_entropy":
        return F.binary_cross_entropy_with_logits(z, t)
    if net.loss == "mse":
        return F.mse_loss(z, t)
    if net.loss == "huber":
        return F.huber_loss(z, t, delta=1.0)
    # fastbp's poisson is the half deviance: torch's exp(z) - t z plus the constant t log t - t
    return F.poisson_nll_loss(z, t, log_input=True, full=False) + torch.mean(torch.special.xlogy(t, t) - t)


def _torch_grads(torch, seq):
    """Per layer (dW as (n_in, n_out), db[, dgamma, dbeta]), as Network.loss_and_gradients gives."""
    layers = []
    for m in seq:
        if isinstance(m, torch.nn.Linear):
            layers.append([m.weight.grad.numpy().T, m.bias.grad.numpy()])
        elif isinstance(m, (torch.nn.BatchNorm1d, torch.nn.LayerNorm)):
            layers[-1] += [m.weight.grad.numpy(), m.bias.grad.numpy()]
    return layers


def _targets(rng, net, n):
    k = net.n_outputs
    return {"cross_entropy": lambda: rng.integers(0, k, n),
            "binary_cross_entropy": lambda: (rng.random((n, k)) > 0.5).astype(np.float64),
            "poisson": lambda: rng.poisson(1.5, (n, k)).astype(np.float64)}.get(
        net.loss, lambda: rng.normal(0, 1.5, (n, k)))()


@pytest.mark.parametrize("pair", OUTPUT_LOSS_PAIRS, ids=[f"{o}-{l}" for o, l in OUTPUT_LOSS_PAIRS])
def test_torch_round_trip_predictions_and_gradients(pair):
    torch = _torch()
    output, loss = pair
    shift = OUTPUT_LOSS_PAIRS.index(pair)
    net = _all_activations_net(output, loss, np.float64, shift=shift)
    rng = np.random.default_rng(200 + shift)
    X = rng.standard_normal((33, N_IN))
    seq = net.to_torch()
    assert not seq.training
    with torch.inference_mode():
        _close(seq(torch.as_tensor(X)).numpy(), net.predict_proba(X), np.float64, "to_torch predictions")

    back = E.from_torch(seq, loss=loss)
    assert back.get_config() == {**net.get_config(), "seed": 0}
    for w0, w1 in zip(net.get_weights(), back.get_weights()):
        assert len(w0) == len(w1) and all(np.array_equal(a, b) for a, b in zip(w0, w1))
    _close(back.predict_proba(X), net.predict_proba(X), np.float64, "from_torch predictions")

    # one training-mode batch (batch norm on the batch's statistics): same loss, same gradients
    y = _targets(rng, net, X.shape[0])
    seq.train()
    t_loss = _torch_loss(torch, seq, net, X, y)
    t_loss.backward()
    f_loss, f_grads = net.loss_and_gradients(X, y)
    assert abs(f_loss - t_loss.item()) <= 1e-10 * max(1.0, abs(f_loss))
    t_grads = _torch_grads(torch, seq)
    assert len(t_grads) == len(f_grads)
    for l, (tg, fg) in enumerate(zip(t_grads, f_grads)):
        assert len(tg) == len(fg)
        for name, a, b in zip(("dW", "db", "dgamma", "dbeta"), fg, tg):
            assert np.allclose(a, b, rtol=1e-9, atol=1e-12 * max(1.0, np.abs(b).max())), (l, name)


def test_torch_float32_and_plain_sequential():
    torch = _torch()
    nn = torch.nn
    torch.manual_seed(0)
    seq = nn.Sequential(nn.Linear(N_IN, 6), nn.Tanh(), nn.Dropout(0.25),
                        nn.Sequential(nn.Linear(6, 4), nn.GELU(approximate="tanh")), nn.Linear(4, 2)).eval()
    net = fb.Network.from_torch(seq)
    assert net.dtype == np.float32 and net.activations == ["tanh", "gelu"] and net.dropout == [0.25, 0.0]
    assert (net.output, net.loss) == ("identity", "mse")
    X = np.random.default_rng(1).standard_normal((50, N_IN)).astype(np.float32)
    with torch.inference_mode():
        _close(net.predict_proba(X), seq(torch.as_tensor(X)).numpy(), np.float32)
    assert E.from_torch(seq, dtype="float64").dtype == np.float64
    half = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2)).to(torch.bfloat16)
    hnet = E.from_torch(half, dtype="float32")
    assert hnet.dtype == np.float32
    np.testing.assert_array_equal(hnet.get_weights()[0][0], half[0].weight.detach().float().numpy().T)
    back = E.to_torch(net)
    assert [type(m).__name__ for m in back] == ["Linear", "Tanh", "Dropout", "Linear", "GELU", "Linear"]
    assert back[0].weight.dtype == torch.float32
    # to_torch's Exp output reads back as the Poisson output
    pois = E.to_torch(fb.Network([N_IN, 3, 2], activation="softplus", output="exp", dtype=np.float64))
    assert type(pois[-1]).__name__ == "Exp"
    assert (E.from_torch(pois).output, E.from_torch(pois).activations) == ("exp", ["softplus"])


def test_from_torch_rejects_what_is_not_a_plain_mlp():
    torch = _torch()
    nn = torch.nn

    class Custom(nn.Module):
        def forward(self, x):
            return x

    cases = [
        (Custom(), "custom forward"),
        (nn.Sequential(nn.Linear(3, 4), nn.GELU(), nn.Linear(4, 2)), r"module 1 \(GELU.*tanh approximation"),
        (nn.Sequential(nn.Linear(3, 4), nn.LeakyReLU(0.2), nn.Linear(4, 2)), r"module 1 .*negative_slope 0.01"),
        (nn.Sequential(nn.Linear(3, 4), nn.ELU(0.5), nn.Linear(4, 2)), r"module 1 .*alpha 1.0"),
        (nn.Sequential(nn.Linear(3, 4), nn.Softplus(beta=2), nn.Linear(4, 2)), r"module 1 .*beta 1"),
        (nn.Sequential(nn.Linear(3, 4), nn.Hardswish(), nn.Linear(4, 2)), r"module 1 .*Hardswish is not an activation"),
        (nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.BatchNorm1d(4), nn.Linear(4, 2)),
         r"module 2 .*between the Linear and the activation"),
        (nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4, track_running_stats=False), nn.ReLU(), nn.Linear(4, 2)),
         r"module 1 .*running statistics"),
        (nn.Sequential(nn.Linear(3, 4), nn.LayerNorm([2, 2]), nn.ReLU(), nn.Linear(4, 2)), r"module 1 .*normalized_shape"),
        (nn.Sequential(nn.Conv1d(3, 4, 1), nn.Linear(4, 2)), r"module 0 \(Conv1d.*expected a Linear"),
        (nn.Sequential(nn.Linear(3, 4), nn.Linear(5, 2)), r"module 1 .*takes 5 inputs"),
        (nn.Sequential(nn.Linear(3, 4), nn.ReLU()), r"module 1 .*must end with a Linear output"),
        (nn.Sequential(nn.Linear(3, 4), nn.Softmax(dim=0)), r"module 1 .*dim=-1 or 1"),
        (nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2), nn.LogSoftmax(dim=1)),
         r"module 3 .*LogSoftmax is not an output"),
        (nn.Sequential(nn.Linear(3, 4), nn.LayerNorm(4, eps=1e-3), nn.ReLU(), nn.Linear(4, 4), nn.LayerNorm(4),
                       nn.ReLU(), nn.Linear(4, 2)), "different eps"),
        (nn.Sequential(nn.Linear(3, 4, dtype=torch.bfloat16), nn.Linear(4, 2, dtype=torch.bfloat16)), "give dtype"),
    ]
    for module, match in cases:
        with pytest.raises(ValueError, match=match):
            E.from_torch(module)


# ---- scikit-learn estimators ------------------------------------------------------------------------
@pytest.fixture(scope="module")
def blobs():
    rng = np.random.default_rng(7)
    X = rng.standard_normal((120, N_IN))
    y = (X[:, 0] + 0.5 * X[:, 1] > 0).astype(int) + (X[:, 2] > 0.5)
    return X, y


def test_estimator_to_network_reads_scikit_learns_own_mlps(blobs):
    pytest.importorskip("sklearn")
    import warnings
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPClassifier, MLPRegressor
    X, y = blobs
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf = MLPClassifier((6, 5), activation="tanh", max_iter=30, random_state=0).fit(X, y)
        reg = MLPRegressor(hidden_layer_sizes=(6,), activation="logistic", max_iter=30, random_state=0).fit(X, X[:, :2] @ [1.0, -2.0])
    net = E.estimator_to_network(clf)
    assert (net.layer_sizes, net.activations, net.output, net.dtype) == ([N_IN, 6, 5, 3], ["tanh"] * 2, "softmax",
                                                                          np.float64)
    _close(net.predict_proba(X), clf.predict_proba(X), np.float64)
    rnet = E.estimator_to_network(reg)
    assert (rnet.activations, rnet.output) == (["sigmoid"], "identity")
    _close(rnet.predict_proba(X)[:, 0], reg.predict(X), np.float64)
    with pytest.raises(ValueError, match="fit it first"):
        E.estimator_to_network(MLPClassifier())


def test_estimator_from_network_and_back(blobs):
    pytest.importorskip("sklearn")
    from sklearn.base import clone
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import FunctionTransformer
    from fastbp.sklearn import MLPClassifier, MLPRegressor
    X, y = blobs
    rng = np.random.default_rng(3)
    # multiclass softmax, with labels
    net = _randomize(fb.Network([N_IN, 6, 6, 3], activation="sigmoid", output="softmax", dtype=np.float64), rng)
    labels = np.array(["a", "b", "c"])
    est = MLPClassifier.from_network(net, classes=labels)
    with pytest.raises(ValueError, match="gives a MLPClassifier, not a MLPRegressor"):
        MLPRegressor.from_network(net)
    assert isinstance(est, MLPClassifier) and est.activation == "logistic" and est.hidden_layer_sizes == (6, 6)
    np.testing.assert_array_equal(est.classes_, labels)
    P = net.predict_proba(X)
    np.testing.assert_array_equal(est.predict_proba(X), P)
    np.testing.assert_array_equal(est.predict(X), labels[P.argmax(axis=1)])
    pipe = make_pipeline(FunctionTransformer(lambda a: a * 1.0), est)
    np.testing.assert_array_equal(pipe.predict(X), est.predict(X))
    assert 0.0 <= est.score(X, labels[y]) <= 1.0
    back = E.estimator_to_network(est)
    assert back.get_config() == {**net.get_config(), "seed": 0}
    assert all(np.array_equal(a, b) for w0, w1 in zip(net.get_weights(), back.get_weights()) for a, b in zip(w0, w1))
    assert clone(est).get_params()["activation"] == "logistic"
    # the estimator keeps training from the network's weights (lbfgs: a fixed objective)
    refit = E.estimator_from_network(net, solver="lbfgs", max_iter=5, warm_start=True)
    import warnings
    from sklearn.exceptions import ConvergenceWarning
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        refit.fit(X, y)
    assert refit.n_iter_ >= 1 and refit.coefs_[0].shape == (N_IN, 6)

    # a 2-output softmax becomes the binary form: one logistic output on the logit difference
    net2 = _randomize(fb.Network([N_IN, 6, 6, 2], activation="sigmoid", output="softmax", dtype=np.float64), rng)
    est2 = E.estimator_from_network(net2, classes=[-1, 1])
    assert est2.out_activation_ == "logistic" and est2.coefs_[-1].shape == (6, 1)
    _close(est2.predict_proba(X), net2.predict_proba(X), np.float64)
    # one sigmoid output: binary; k sigmoid outputs: multilabel
    net1 = _randomize(fb.Network([N_IN, 6, 6, 1], activation="sigmoid", output="sigmoid", dtype=np.float64), rng)
    est1 = E.estimator_from_network(net1)
    np.testing.assert_array_equal(est1.predict_proba(X)[:, 1], net1.predict_proba(X)[:, 0])
    np.testing.assert_array_equal(est1.predict(X), (net1.predict_proba(X)[:, 0] > 0.5).astype(int))
    net3 = _randomize(fb.Network([N_IN, 6, 6, 3], activation="sigmoid", output="sigmoid", dtype=np.float64), rng)
    est3 = E.estimator_from_network(net3)
    np.testing.assert_array_equal(est3.predict(X), (net3.predict_proba(X) > 0.5).astype(int))
    # regressors
    for output, loss in (("identity", "mse"), ("exp", "poisson")):
        rnet = _randomize(fb.Network([N_IN, 6, 6, 2], activation="sigmoid", output=output, dtype=np.float64), rng)
        reg = E.estimator_from_network(rnet)
        assert isinstance(reg, MLPRegressor) and reg.loss == ("poisson" if loss == "poisson" else "squared_error")
        np.testing.assert_array_equal(reg.predict(X), rnet.predict_proba(X))
        assert E.estimator_to_network(reg).output == output
    # what the estimators cannot hold
    bad = [(fb.Network([3, 4, 2], norm="layer"), "layer 0: .* no layer norm"),
           (fb.Network([3, 4, 4, 2], activation=["relu", "tanh"]), "one activation"),
           (fb.Network([3, 4, 1], output="identity", loss="huber"), "no huber"),
           (fb.Network([3, 2]), "at least one hidden layer")]
    for bnet, match in bad:
        with pytest.raises(ValueError, match=match):
            E.estimator_from_network(bnet)
    for classes in (["a", "b"], ["a", "a", "b"], [[0, 1, 2]]):
        with pytest.raises(ValueError, match="classes must list 3 distinct labels"):
            E.estimator_from_network(net, classes=classes)
    with pytest.raises(ValueError, match="classes is for classifiers"):
        E.estimator_from_network(rnet, classes=[0, 1])


def test_fitted_fastbp_estimator_to_network(blobs):
    pytest.importorskip("sklearn")
    from fastbp.sklearn import MLPClassifier
    X, y = blobs
    est = MLPClassifier((6,), activation="elu", solver="lbfgs", max_iter=5, random_state=0, dtype="float64")
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        est.fit(X, y)
    net = est.to_network()
    assert net.activations == ["elu"] and net.output == "softmax"
    np.testing.assert_array_equal(net.predict_proba(X), est.predict_proba(X))


# ---- skl2onnx ----------------------------------------------------------------------------------------
def _skl2onnx():
    skl2onnx = pytest.importorskip("skl2onnx", reason="the skl2onnx converters need skl2onnx")
    E.register_skl2onnx()
    return skl2onnx


def test_skl2onnx_converts_fastbp_estimators(blobs):
    skl2onnx = _skl2onnx()
    X, y = blobs
    rng = np.random.default_rng(11)
    cases = []
    for k, output, classes in ((3, "softmax", np.array([10, 20, 30])), (1, "sigmoid", np.array(["no", "yes"])),
                               (3, "sigmoid", None), (2, "identity", None), (2, "exp", None)):
        acts = "gelu" if output != "sigmoid" else "leaky_relu"
        net = _randomize(fb.Network([N_IN, 6, 6, k], activation=acts, output=output, dtype=np.float64), rng)
        cases.append(E.estimator_from_network(net, classes=classes))
    for est in cases:
        for dtype in (np.float64, np.float32):
            Xd = X.astype(dtype)
            classifier = hasattr(est, "classes_")
            options = {id(est): {"zipmap": False}} if classifier else None
            model = skl2onnx.to_onnx(est, Xd[:1], options=options)
            onnx.checker.check_model(model)
            outs = _session(model).run(None, {"X": Xd})
            if classifier:
                label, proba = outs
                assert [o.name for o in model.graph.output] == ["label", "probabilities"]
                _close(proba, est.predict_proba(Xd), np.float32 if dtype == np.float32 else np.float64)
                np.testing.assert_array_equal(label, est.predict(Xd))
            else:
                (values,) = outs
                assert [o.name for o in model.graph.output] == ["variable"]
                _close(values, est.predict(Xd).reshape(values.shape), dtype)
    # inside a pipeline, as any scikit-learn step
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    pipe = make_pipeline(StandardScaler().fit(X), cases[0])
    model = skl2onnx.to_onnx(pipe, X[:1].astype(np.float32), options={id(cases[0]): {"zipmap": False}})
    label, proba = _session(model).run(None, {"X": X.astype(np.float32)})
    np.testing.assert_array_equal(label, pipe.predict(X))
    _close(proba, pipe.predict_proba(X), np.float32)
    # option nocl: labels are the class indices
    model = skl2onnx.to_onnx(cases[0], X[:1], options={id(cases[0]): {"zipmap": False, "nocl": True}})
    np.testing.assert_array_equal(_session(model).run(None, {"X": X})[0], cases[0].predict_proba(X).argmax(axis=1))
    # the default ZipMap output (float32 input, as for scikit-learn's MLPs): one {class: probability} per row
    est = cases[0]
    X = X.astype(np.float32)
    model = skl2onnx.to_onnx(est, X[:1])
    assert [o.name for o in model.graph.output] == ["output_label", "output_probability"]
    label, proba = _session(model).run(None, {"X": X})
    np.testing.assert_array_equal(label, est.predict(X))
    P = est.predict_proba(X)
    assert all(sorted(row) == [10, 20, 30] for row in proba)
    _close(np.array([[row[c] for c in (10, 20, 30)] for row in proba]), P, np.float32)


# ---- the command line ------------------------------------------------------------------------------------
def test_cli_writes_model_onnx_next_to_model_npz(tmp_path):
    from fastbp import cli
    cfg = tmp_path / "x.toml"
    cfg.write_text('[data]\nkind = "xor"\nn_samples = 64\n[model]\nhidden = [4]\n'
                   '[training]\nepochs = 1\nverbose = 0\n[output]\nplot = false\nonnx = true\n')
    assert cli.main(["train", str(cfg), "--out", str(tmp_path / "run")]) == 0
    net = fb.Network.load(tmp_path / "run" / "model.npz")
    model = onnx.load(tmp_path / "run" / "model.onnx")
    onnx.checker.check_model(model)
    x = np.random.default_rng(0).standard_normal((7, 2)).astype(np.float32)
    (got,) = _session(model).run(None, {"X": x})
    _close(got, net.predict_proba(x), np.float32)
