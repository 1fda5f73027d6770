"""Export and interchange: a fastbp ``Network`` as ONNX, as a PyTorch ``nn.Sequential``, and as
a scikit-learn estimator, and back.

Everything here reads a network through its public face (``layer_sizes``, ``activations``,
``output``, ``loss``, ``dtype``, ``norm``, ``norm_eps``, ``dropout``, ``get_weights``) and
builds one through ``Network(...)`` and ``set_weights``; no kernel is called. ``onnx``,
``torch`` and ``skl2onnx`` are optional and imported only inside the functions that need them.

The ONNX graph, per layer, in fastbp's order of operations::

    hidden:  Gemm(x, W, b) -> [BatchNormalization | LayerNormalization] -> activation
    output:  Gemm(x, W, b) -> Softmax | Sigmoid | Exp | (nothing, identity)

A norm layer's ``beta`` is the norm op's bias (fastbp adds it in the activation kernel: the
same sum). Batch norm uses its running statistics (inference), unfolded: folding it into the
Gemm would change the rounding. Dropout is absent (inference). Activations use the ONNX op
where ONNX Runtime has a kernel for the dtype and the op computes fastbp's function; the
others are written from primitive ops:

============ ========================== ==============================================
activation   float32                    float64
============ ========================== ==============================================
relu         Relu                       Relu
leaky_relu   LeakyRelu(alpha=0.01)      Relu(z) + alpha Min(z, 0)
elu          Elu(alpha=1)               Relu(z) + alpha (Exp(Min(z, 0)) - 1)
sigmoid      Sigmoid                    Sigmoid
tanh         Tanh                       Tanh
softplus     Softplus                   Max(z, 0) + Log(1 + Exp(-Abs(z)))
gelu         Gelu(approximate="tanh")   (z/2) (1 + Tanh(c (z + k z^3)))
             at opset >= 20, else as
             float64
identity     (nothing)                  (nothing)
============ ========================== ==============================================

fastbp's gelu is the tanh form (``kernels/mathfn.py``), which is what ONNX's
``Gelu(approximate="tanh")`` computes; the default ``Gelu`` is the erf form and is not used.
(ONNX Runtime 1.32's float64 Gelu kernel was 1e-8 off the formula, its float64 Elu, Softplus and
LeakyRelu kernels are missing.) Layer norm below opset 17 (no LayerNormalization op) is ReduceMean/Sub/Mul/Sqrt/Reciprocal.
"""

import json
import numbers

import numpy as np

from .names import ACTIVATIONS
from .network import Network

DEFAULT_OPSET = 17      # LayerNormalization exists from 17; ONNX Runtime >= 1.12 runs it
MIN_OPSET = 13          # Softmax over one axis (the semantics fastbp needs) from 13
GELU_OPSET = 20         # Gelu(approximate="tanh")
ALPHAS = {"leaky_relu": 0.01, "elu": 1.0}   # fastbp's fixed alphas (kernels/activations.py)
INPUT_NAME, OUTPUT_NAME = "X", "Y"
_GELU_C, _GELU_K = 0.7978845608028654, 0.044715   # sqrt(2/pi) and the cubic's k, as fastbp's
# scikit-learn's out_activation_ <-> fastbp's (output, loss)
_SK_OUTPUTS = {"softmax": ("softmax", "cross_entropy"), "logistic": ("sigmoid", "binary_cross_entropy"),
               "identity": ("identity", "mse"), "exp": ("exp", "poisson")}
_SK_ACTIVATION = {"sigmoid": "logistic"}      # fastbp name -> the estimators' name


def _import(name, extra):
    try:
        return __import__(name)
    except ImportError:
        raise ImportError(f"this needs {name} (pip install {extra})") from None


def _layers(net):
    """Per layer (W, b, activation or None for the output layer, norm, gamma, beta, mean, var)."""
    if not isinstance(net, Network):
        raise TypeError(f"expected a fastbp.Network, got {type(net).__name__}")
    out = []
    weights = net.get_weights()
    n_hidden = len(weights) - 1
    for l, w in enumerate(weights):
        hidden = l < n_hidden
        norm = net.norm[l] if hidden else None
        act = net.activations[l] if hidden else None
        gamma, beta = (w[2], w[3]) if norm else (None, None)
        mean, var = (w[4], w[5]) if norm == "batch" else (None, None)
        out.append(dict(W=w[0], b=w[1], act=act, norm=norm, gamma=gamma, beta=beta, mean=mean, var=var))
    return out


# ---- ONNX ----------------------------------------------------------------------------------------
class _Graph:
    """Collects nodes and initializers; ``unique(prefix)`` names every tensor and node (a plain
    counter for to_onnx, skl2onnx's scope inside its converter)."""

    def __init__(self, dtype, opset, unique):
        self.dtype, self.opset, self.unique = np.dtype(dtype), opset, unique
        self.nodes, self.inits = [], []     # (op, inputs, outputs, name, attrs), (name, array)

    def const(self, value, prefix):
        name = self.unique(prefix)
        self.inits.append((name, np.asarray(value, self.dtype)))
        return name

    def op(self, op_type, inputs, prefix, out=None, **attrs):
        out = out or self.unique(prefix)
        self.nodes.append((op_type, list(inputs), [out], self.unique(op_type), attrs))
        return out


def _activation(g, act, z, where, out=None):
    """Nodes for ``act`` on tensor ``z``; returns the result's name."""
    f64 = g.dtype == np.float64
    if act == "identity":
        return g.op("Identity", [z], where, out) if out else z
    if act == "relu":
        return g.op("Relu", [z], where, out)
    if act == "leaky_relu" and not f64:
        return g.op("LeakyRelu", [z], where, out, alpha=ALPHAS["leaky_relu"])
    if act == "leaky_relu":   # Relu(z) + alpha Min(z, 0): z for z > 0, alpha z else (exact)
        neg = g.op("Mul", [g.const(ALPHAS["leaky_relu"], "alpha"), g.op("Min", [z, g.const(0.0, "zero")], where)],
                   where)
        return g.op("Add", [g.op("Relu", [z], where), neg], where, out)
    if act == "sigmoid":
        return g.op("Sigmoid", [z], where, out)
    if act == "tanh":
        return g.op("Tanh", [z], where, out)
    if act == "elu" and not f64:
        return g.op("Elu", [z], where, out, alpha=ALPHAS["elu"])
    if act == "elu":    # Relu(z) + alpha (exp(min(z, 0)) - 1): z for z > 0, alpha (e^z - 1) else
        e = g.op("Exp", [g.op("Min", [z, g.const(0.0, "zero")], where)], where)
        neg = g.op("Mul", [g.const(ALPHAS["elu"], "alpha"), g.op("Sub", [e, g.const(1.0, "one")], where)], where)
        return g.op("Add", [g.op("Relu", [z], where), neg], where, out)
    if act == "softplus" and not f64:
        return g.op("Softplus", [z], where, out)
    if act == "softplus":   # max(z, 0) + log(1 + exp(-|z|)), fastbp's stable form (log1p -> log(1 + .))
        e = g.op("Exp", [g.op("Neg", [g.op("Abs", [z], where)], where)], where)
        lg = g.op("Log", [g.op("Add", [g.const(1.0, "one"), e], where)], where)
        return g.op("Add", [g.op("Max", [z, g.const(0.0, "zero")], where), lg], where, out)
    if act == "gelu" and g.opset >= GELU_OPSET and not f64:
        return g.op("Gelu", [z], where, out, approximate="tanh")
    if act == "gelu":       # (z/2) (1 + tanh(c (z + k z^3))), fastbp's order of operations
        z3 = g.op("Mul", [g.op("Mul", [z, z], where), z], where)
        inner = g.op("Add", [z, g.op("Mul", [g.const(_GELU_K, "gelu_k"), z3], where)], where)
        t = g.op("Tanh", [g.op("Mul", [g.const(_GELU_C, "gelu_c"), inner], where)], where)
        u = g.op("Add", [g.const(1.0, "one"), t], where)
        return g.op("Mul", [g.op("Mul", [g.const(0.5, "half"), z], where), u], where, out)
    raise ValueError(f"{where}: activation {act!r} has no ONNX form in fastbp.export")


def _layer_norm(g, z, gamma, beta, eps, where):
    if g.opset >= 17:
        return g.op("LayerNormalization", [z, g.const(gamma, "gamma"), g.const(beta, "beta")], where,
                    axis=-1, epsilon=float(eps))
    # opset 13-16: ReduceMean takes its axes as an attribute
    m = g.op("ReduceMean", [z], where, axes=[-1], keepdims=1)
    d = g.op("Sub", [z, m], where)
    v = g.op("ReduceMean", [g.op("Mul", [d, d], where)], where, axes=[-1], keepdims=1)
    r = g.op("Reciprocal", [g.op("Sqrt", [g.op("Add", [v, g.const(eps, "eps")], where)], where)], where)
    y = g.op("Mul", [g.const(gamma, "gamma"), g.op("Mul", [d, r], where)], where)
    return g.op("Add", [y, g.const(beta, "beta")], where)


def _network_nodes(g, net, x, out):
    """The whole network from tensor ``x`` to tensor ``out`` (the output function's values)."""
    layers = _layers(net)
    for l, L in enumerate(layers):
        last = l == len(layers) - 1
        where = f"layer {l}"
        z = g.op("Gemm", [x, g.const(L["W"], f"W{l}"), g.const(L["b"], f"b{l}")], f"gemm{l}")
        if L["norm"] == "batch":
            z = g.op("BatchNormalization", [z, g.const(L["gamma"], f"gamma{l}"), g.const(L["beta"], f"beta{l}"),
                                            g.const(L["mean"], f"running_mean{l}"),
                                            g.const(L["var"], f"running_var{l}")], where, epsilon=float(net.norm_eps))
        elif L["norm"] == "layer":
            z = _layer_norm(g, z, L["gamma"], L["beta"], net.norm_eps, where)
        if not last:
            x = _activation(g, L["act"], z, where)
        elif net.output == "softmax":
            x = g.op("Softmax", [z], where, out, axis=-1)
        elif net.output == "sigmoid":
            x = g.op("Sigmoid", [z], where, out)
        elif net.output == "exp":
            x = g.op("Exp", [z], where, out)
        elif net.output == "identity":
            x = g.op("Identity", [z], where, out)
        else:
            raise ValueError(f"output layer: output {net.output!r} has no ONNX form in fastbp.export")
    return x


def _check_opset(opset):
    onnx = _import("onnx", "fastbp[onnx]")
    top = onnx.defs.onnx_opset_version()
    if opset is None:
        return min(DEFAULT_OPSET, top)
    if isinstance(opset, bool) or not isinstance(opset, numbers.Integral) or not MIN_OPSET <= opset <= top:
        raise ValueError(f"opset must be an integer from {MIN_OPSET} (Softmax over one axis) to {top} (the "
                         f"installed onnx's newest), got {opset!r}")
    return int(opset)


def _counter():
    used = {}

    def unique(prefix):
        used[prefix] = used.get(prefix, -1) + 1
        return prefix if used[prefix] == 0 else f"{prefix}_{used[prefix]}"
    return unique


def to_onnx(net, path=None, opset=None, input_name=INPUT_NAME, output_name=OUTPUT_NAME):
    """The network's inference function as an ONNX model.

    Input ``input_name`` of shape (batch, n_inputs) and output ``output_name`` of shape
    (batch, n_outputs), both in the network's dtype, with a dynamic batch dimension; the
    output is what ``predict_proba`` returns. Returns the ``onnx.ModelProto`` when ``path``
    is None, else writes it there (atomically) and returns ``path``.

    ``opset``: the ai.onnx opset, from 13 to the installed onnx's newest; default 17 (or
    the newest, if older). At 20 and above gelu is one ``Gelu`` node.
    """
    onnx = _import("onnx", "fastbp[onnx]")
    from onnx import helper, numpy_helper
    opset = _check_opset(opset)
    if not isinstance(net, Network):
        raise TypeError(f"to_onnx expects a fastbp.Network, got {type(net).__name__}")
    if input_name == output_name:
        raise ValueError(f"input and output need different names, got {input_name!r} for both")
    g = _Graph(net.dtype, opset, _counter())
    g.unique(input_name)
    g.unique(output_name)
    _network_nodes(g, net, input_name, output_name)
    elem = helper.np_dtype_to_tensor_dtype(net.dtype)
    graph = helper.make_graph(
        [helper.make_node(op, i, o, name=n, **a) for op, i, o, n, a in g.nodes], "fastbp_network",
        [helper.make_tensor_value_info(input_name, elem, ["batch", net.n_inputs])],
        [helper.make_tensor_value_info(output_name, elem, ["batch", net.n_outputs])],
        [numpy_helper.from_array(a, name) for name, a in g.inits])
    ops = [helper.make_opsetid("", opset)]
    model = helper.make_model(graph, opset_imports=ops, producer_name="fastbp",
                              ir_version=helper.find_min_ir_version_for(ops))
    from . import __version__
    model.producer_version = __version__
    helper.set_model_props(model, {"fastbp_config": json.dumps(net.get_config())})
    onnx.checker.check_model(model)
    if path is None:
        return model
    _write_atomic(path, model.SerializeToString())
    return path


def _write_atomic(path, data):
    import os
    import tempfile
    path = os.fspath(path)
    fd, tmp = tempfile.mkstemp(prefix=".fastbp-", suffix=".onnx.tmp", dir=os.path.dirname(os.path.abspath(path)))
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


# ---- PyTorch ---------------------------------------------------------------------------------
_TORCH_CLASSES = {}


def _exp_module():
    """An ``nn.Module`` computing exp (torch has none): the Poisson output of ``to_torch``."""
    if "Exp" not in _TORCH_CLASSES:
        import torch

        class Exp(torch.nn.Module):
            """y = exp(x): fastbp's Poisson output (the rate from the log-rate)."""

            def forward(self, x):
                return torch.exp(x)
        Exp.__module__ = __name__
        _TORCH_CLASSES["Exp"] = Exp
    return _TORCH_CLASSES["Exp"]


def _torch_activation(nn, act):
    return {"identity": None, "relu": nn.ReLU, "sigmoid": nn.Sigmoid, "tanh": nn.Tanh, "softplus": nn.Softplus,
            "leaky_relu": lambda: nn.LeakyReLU(ALPHAS["leaky_relu"]), "elu": lambda: nn.ELU(ALPHAS["elu"]),
            "gelu": lambda: nn.GELU(approximate="tanh")}[act]


def to_torch(net):
    """The same network as a ``torch.nn.Sequential`` with the weights copied, in eval mode.

    Per hidden layer ``Linear`` (weight ``W.T``), ``BatchNorm1d`` (running statistics,
    momentum, eps) or ``LayerNorm`` where the network has a norm, the activation
    (``nn.GELU(approximate="tanh")`` for gelu; nothing for identity) and ``Dropout`` where
    p > 0; then the output ``Linear`` and ``Softmax(dim=-1)``, ``Sigmoid``, an ``Exp``
    module, or nothing (identity). Parameters are in the network's dtype. For training,
    feed the loss the output ``Linear``'s logits (``seq[:-1]``, unless the output is identity).
    """
    torch = _import("torch", "torch")
    nn = torch.nn
    tdtype = {np.float32: torch.float32, np.float64: torch.float64}[net.dtype.type]
    mods = []
    layers = _layers(net)

    def tensor(a):
        return torch.tensor(np.ascontiguousarray(a), dtype=tdtype)

    with torch.no_grad():
        for l, L in enumerate(layers):
            n_in, n_out = L["W"].shape
            lin = nn.Linear(n_in, n_out, dtype=tdtype)
            lin.weight.copy_(tensor(L["W"].T))
            lin.bias.copy_(tensor(L["b"]))
            mods.append(lin)
            if l == len(layers) - 1:
                break
            if L["norm"] == "batch":
                bn = nn.BatchNorm1d(n_out, eps=net.norm_eps, momentum=net.norm_momentum, dtype=tdtype)
                for name in ("gamma", "beta", "mean", "var"):
                    dest = {"gamma": bn.weight, "beta": bn.bias, "mean": bn.running_mean, "var": bn.running_var}[name]
                    dest.copy_(tensor(L[name]))
                mods.append(bn)
            elif L["norm"] == "layer":
                ln = nn.LayerNorm(n_out, eps=net.norm_eps, dtype=tdtype)
                ln.weight.copy_(tensor(L["gamma"]))
                ln.bias.copy_(tensor(L["beta"]))
                mods.append(ln)
            make = _torch_activation(nn, L["act"])
            if make is not None:
                mods.append(make())
            if net.dropout[l] > 0:
                mods.append(nn.Dropout(net.dropout[l]))
    out = {"softmax": lambda: nn.Softmax(dim=-1), "sigmoid": nn.Sigmoid, "exp": _exp_module(),
           "identity": None}[net.output]
    if out is not None:
        mods.append(out())
    return nn.Sequential(*mods).eval()


def _flatten(module, nn):
    if isinstance(module, nn.Sequential):
        return [m for child in module for m in _flatten(child, nn)]
    return [module]


def from_torch(module, loss=None, dtype=None, seed=0):
    """A fastbp ``Network`` from a plain-MLP ``torch.nn.Sequential`` (nested ones are flattened).

    Accepted, per hidden layer: ``Linear``, then optionally ``BatchNorm1d`` (tracking running
    statistics) or ``LayerNorm`` over the features, then optionally one activation (``ReLU``,
    ``LeakyReLU(0.01)``, ``ELU(1.0)``, ``Sigmoid``, ``Tanh``, ``Softplus(beta=1)``,
    ``GELU(approximate="tanh")``, ``Identity``; none means identity), then optionally
    ``Dropout``. The last ``Linear`` may be followed by ``Softmax`` over the last dim,
    ``Sigmoid``, ``to_torch``'s ``Exp``, or nothing (identity output). ``loss`` defaults to
    the output's default loss; ``dtype`` to the parameters' (float32 or float64). Anything else
    raises ``ValueError`` naming the module and why.
    """
    torch = _import("torch", "torch")
    nn = torch.nn
    if not isinstance(module, nn.Module):
        raise ValueError(f"from_torch expects a torch.nn.Sequential, got {type(module).__name__}")
    if not isinstance(module, nn.Sequential):
        raise ValueError(f"from_torch reads an nn.Sequential of Linear and activation layers, got "
                         f"{type(module).__name__}: a custom forward() cannot be read as a plain MLP")
    mods = _flatten(module, nn)

    def _np(t):   # float32/float64 stay as they are; others (half, bfloat16) go through float64
        t = t.detach().cpu()
        return (t if t.dtype in (torch.float32, torch.float64) else t.double()).numpy()
    where = {id(m): f"module {i} ({m!r})" for i, m in enumerate(mods)}
    act_of = {nn.ReLU: "relu", nn.Sigmoid: "sigmoid", nn.Tanh: "tanh", nn.Identity: "identity"}
    Exp = _exp_module()
    sizes, acts, norms, drops, weights = [], [], [], [], []
    eps, momentum, output = set(), set(), None
    i = 0
    while i < len(mods):
        lin = mods[i]
        if not isinstance(lin, nn.Linear):
            raise ValueError(f"{where[id(lin)]}: expected a Linear layer here (a plain MLP is Linear, "
                             f"[BatchNorm1d|LayerNorm], activation, [Dropout], ..., Linear, [output])")
        W = _np(lin.weight).T
        b = _np(lin.bias) if lin.bias is not None else np.zeros(W.shape[1], W.dtype)
        if sizes and sizes[-1] != W.shape[0]:
            raise ValueError(f"{where[id(lin)]}: takes {W.shape[0]} inputs but the layer before gives {sizes[-1]}")
        if not sizes:
            sizes.append(W.shape[0])
        sizes.append(W.shape[1])
        layer = [W, b]
        i += 1
        rest = mods[i:]
        # the output layer: nothing after it, or exactly one output function
        if not rest or (len(rest) == 1 and (isinstance(rest[0], (nn.Softmax, nn.Sigmoid, nn.Identity, Exp)))):
            if rest and isinstance(rest[0], nn.Softmax) and rest[0].dim not in (-1, 1):
                raise ValueError(f"{where[id(rest[0])]}: softmax must run over the features (dim=-1 or 1), "
                                 f"got dim={rest[0].dim}")
            output = ("identity" if not rest or isinstance(rest[0], nn.Identity) else
                      "softmax" if isinstance(rest[0], nn.Softmax) else
                      "sigmoid" if isinstance(rest[0], nn.Sigmoid) else "exp")
            weights.append(tuple(layer))
            break
        k = W.shape[1]
        norm = None
        m = mods[i]
        if isinstance(m, nn.BatchNorm1d):
            if not m.track_running_stats or m.running_mean is None:
                raise ValueError(f"{where[id(m)]}: batch norm without running statistics uses the batch's at "
                                 f"inference; fastbp's uses running statistics")
            if m.momentum is None:
                raise ValueError(f"{where[id(m)]}: momentum=None (a cumulative average) is not fastbp's running "
                                 f"average; give a momentum")
            if m.num_features != k:
                raise ValueError(f"{where[id(m)]}: normalizes {m.num_features} features, the Linear gives {k}")
            norm = "batch"
            momentum.add(float(m.momentum))
        elif isinstance(m, nn.LayerNorm):
            if tuple(m.normalized_shape) != (k,):
                raise ValueError(f"{where[id(m)]}: fastbp's layer norm is over the {k} features of the row, "
                                 f"got normalized_shape={tuple(m.normalized_shape)}")
            norm = "layer"
        if norm is not None:
            eps.add(float(m.eps))
            gamma = (_np(m.weight) if getattr(m, "weight", None) is not None
                     else np.ones(k, W.dtype))
            beta = _np(m.bias) if getattr(m, "bias", None) is not None else np.zeros(k, W.dtype)
            layer += [gamma, beta]
            if norm == "batch":
                layer += [_np(m.running_mean), _np(m.running_var)]
            i += 1
        act = "identity"
        m = mods[i] if i < len(mods) else None
        if m is not None and not isinstance(m, (nn.Linear, nn.Dropout)):
            if type(m) in act_of:
                act = act_of[type(m)]
            elif isinstance(m, nn.LeakyReLU):
                if m.negative_slope != ALPHAS["leaky_relu"]:
                    raise ValueError(f"{where[id(m)]}: fastbp's leaky_relu has negative_slope "
                                     f"{ALPHAS['leaky_relu']}, got {m.negative_slope}")
                act = "leaky_relu"
            elif isinstance(m, nn.ELU):
                if m.alpha != ALPHAS["elu"]:
                    raise ValueError(f"{where[id(m)]}: fastbp's elu has alpha {ALPHAS['elu']}, got {m.alpha}")
                act = "elu"
            elif isinstance(m, nn.Softplus):
                if m.beta != 1:
                    raise ValueError(f"{where[id(m)]}: fastbp's softplus has beta 1, got {m.beta}")
                act = "softplus"
            elif isinstance(m, nn.GELU):
                if m.approximate != "tanh":
                    raise ValueError(f"{where[id(m)]}: fastbp's gelu is the tanh approximation; "
                                     f"GELU(approximate={m.approximate!r}) differs from it by up to ~1e-3")
                act = "gelu"
            elif isinstance(m, (nn.BatchNorm1d, nn.LayerNorm)):
                raise ValueError(f"{where[id(m)]}: fastbp puts a norm between the Linear and the activation, "
                                 f"once per layer")
            elif i == len(mods) - 1:
                raise ValueError(f"{where[id(m)]}: {type(m).__name__} is not an output fastbp has (Softmax over "
                                 f"the features, Sigmoid, Exp, or none for identity)")
            else:
                raise ValueError(f"{where[id(m)]}: {type(m).__name__} is not an activation fastbp has "
                                 f"({', '.join(ACTIVATIONS)})")
            i += 1
        p = 0.0
        m = mods[i] if i < len(mods) else None
        if isinstance(m, (nn.BatchNorm1d, nn.LayerNorm)):
            raise ValueError(f"{where[id(m)]}: fastbp puts a norm between the Linear and the activation, "
                             f"once per layer")
        if isinstance(m, nn.Dropout):
            p = float(m.p)
            if not 0.0 <= p < 1.0:
                raise ValueError(f"{where[id(m)]}: dropout probability must be in [0, 1), got {p}")
            i += 1
        if i >= len(mods):
            raise ValueError(f"{where[id(mods[-1])]}: the network must end with a Linear output layer "
                             f"(and optionally Softmax, Sigmoid or Exp)")
        acts.append(act)
        norms.append(norm)
        drops.append(p)
        weights.append(tuple(layer))
    if output is None:
        raise ValueError("from_torch: found no Linear output layer")
    if len(eps) > 1:
        raise ValueError(f"the norm layers use different eps {sorted(eps)}; a fastbp network has one norm_eps")
    if len(momentum) > 1:
        raise ValueError(f"the batch norm layers use different momentum {sorted(momentum)}; a fastbp network "
                         f"has one norm_momentum")
    if dtype is None:
        pdtype = mods[0].weight.dtype
        if pdtype not in (torch.float32, torch.float64):
            raise ValueError(f"module 0: parameters are {pdtype}; give dtype='float32' or 'float64'")
        dtype = np.float32 if pdtype == torch.float32 else np.float64
    kw = {}
    if eps:
        kw["norm_eps"] = eps.pop()
    if momentum:
        kw["norm_momentum"] = momentum.pop()
    net = Network(sizes, activation=acts, output=output, loss=loss, dtype=dtype, seed=seed, dropout=drops,
                  norm=norms, **kw)
    net.set_weights([tuple(np.asarray(a, dtype=net.dtype) for a in w) for w in weights])
    return net


# ---- scikit-learn estimators -------------------------------------------------------------------
def estimator_to_network(est):
    """A ``Network`` holding a fitted MLP estimator's model: fastbp's ``MLPClassifier`` /
    ``MLPRegressor`` or scikit-learn's own. Reads only the fitted attributes ``coefs_``,
    ``intercepts_``, ``activation``, ``out_activation_`` (and ``dropout`` where present);
    the network's dtype is that of ``coefs_``."""
    for attr in ("coefs_", "intercepts_", "out_activation_", "activation"):
        if not hasattr(est, attr):
            raise ValueError(f"{type(est).__name__} has no {attr}: fit it first (or it is not an MLP estimator)")
    if est.out_activation_ not in _SK_OUTPUTS:
        raise ValueError(f"out_activation_ {est.out_activation_!r} has no fastbp output")
    output, loss = _SK_OUTPUTS[est.out_activation_]
    coefs, intercepts = list(est.coefs_), list(est.intercepts_)
    dt = np.result_type(*coefs)
    dt = dt if dt in (np.float32, np.float64) else np.float64
    sizes = [np.shape(coefs[0])[0]] + [np.shape(c)[1] for c in coefs]
    net = Network(sizes, activation=est.activation, output=output, loss=loss, dtype=dt,
                  dropout=float(getattr(est, "dropout", 0.0) or 0.0))
    net.set_weights([(np.asarray(W, dt), np.asarray(b, dt)) for W, b in zip(coefs, intercepts)])
    return net


def estimator_from_network(net, classes=None, **params):
    """A fitted fastbp ``MLPClassifier`` (softmax or sigmoid outputs) or ``MLPRegressor``
    (identity/mse, exp/poisson) holding ``net``'s weights (copies), ready for ``predict``,
    ``score`` and scikit-learn pipelines; ``params`` go to the estimator's constructor
    (e.g. ``solver``, ``alpha`` for further fitting).

    ``classes``: the labels of the outputs (default ``0 .. k-1``; two for a one-output
    sigmoid). A two-output softmax becomes scikit-learn's binary form, one logistic output
    on the logit difference (the same probabilities, up to rounding); k > 1 sigmoid outputs
    are a multilabel classifier. A network with a norm, per-layer activations or dropouts,
    or the huber loss has no estimator form: ``ValueError``.
    """
    from sklearn.preprocessing import LabelBinarizer
    from .sklearn import MLPClassifier, MLPRegressor
    if not isinstance(net, Network):
        raise TypeError(f"expected a fastbp.Network, got {type(net).__name__}")
    for l, n in enumerate(net.norm):
        if n:
            raise ValueError(f"layer {l}: the scikit-learn estimators have no {n} norm")
    if len(set(net.activations)) > 1:
        raise ValueError(f"the estimators use one activation for every hidden layer, the network has "
                         f"{net.activations}")
    if len(set(net.dropout)) > 1:
        raise ValueError(f"the estimators use one dropout for every hidden layer, the network has {net.dropout}")
    if net.loss == "huber":
        raise ValueError("output layer: the estimators have no huber loss (MLPRegressor: squared_error, poisson)")
    if len(net.layer_sizes) < 3:
        raise ValueError("the estimators need at least one hidden layer")
    act = net.activations[0]
    act = _SK_ACTIVATION.get(act, act)
    weights = [w[:2] for w in net.get_weights()]
    k = net.n_outputs
    common = dict(hidden_layer_sizes=tuple(net.layer_sizes[1:-1]), activation=act, dtype=net.dtype.name,
                  dropout=net.dropout[0] if net.dropout else 0.0)
    common.update(params)
    if net.output in ("softmax", "sigmoid"):
        if net.output == "softmax" and k == 1:
            raise ValueError("output layer: a softmax over one output is the constant 1, not a classifier")
        est = MLPClassifier(**common)
        multilabel = net.output == "sigmoid" and k > 1
        n_classes = k if net.output == "softmax" else (k if multilabel else 2)
        classes = np.arange(n_classes) if classes is None else np.asarray(classes)
        if classes.ndim != 1 or classes.shape[0] != n_classes or np.unique(classes).shape[0] != n_classes:
            raise ValueError(f"classes must list {n_classes} distinct labels for this network's {k} "
                             f"{net.output} outputs, got {classes!r}")
        if net.output == "softmax" and k == 2:   # softmax(z0, z1)[1] = sigmoid(z1 - z0)
            W, b = weights[-1]
            weights[-1] = (W[:, 1:] - W[:, :1], b[1:] - b[:1])
            k = 1
        lb = LabelBinarizer()
        lb.fit(np.eye(n_classes, dtype=int) if multilabel else classes)
        est._label_binarizer = lb     # read by predict (scikit-learn's own attribute)
        est.classes_ = lb.classes_ if not multilabel else classes
        est.out_activation_ = "softmax" if k > 1 and not multilabel else "logistic"
    else:
        if classes is not None:
            raise ValueError(f"classes is for classifiers; this network's output is {net.output!r}")
        est = MLPRegressor(loss="poisson" if net.output == "exp" else "squared_error", **common)
        est.out_activation_ = net.output
    est.coefs_ = [np.array(W) for W, _ in weights]
    est.intercepts_ = [np.array(b) for _, b in weights]
    est.n_features_in_ = net.n_inputs
    est.n_outputs_ = k
    est.n_layers_ = len(net.layer_sizes)
    est.n_iter_ = 0
    est.t_ = 0
    return est


# ---- skl2onnx ------------------------------------------------------------------------------------
def _convert_classifier(scope, operator, container):
    _convert(scope, operator, container, classifier=True)


def _convert_regressor(scope, operator, container):
    _convert(scope, operator, container, classifier=False)


def _convert(scope, operator, container, classifier):
    from onnx import TensorProto, helper
    from skl2onnx.common.data_types import guess_proto_type
    est = operator.raw_operator
    net = estimator_to_network(est)
    x = operator.inputs[0].full_name
    in_type = guess_proto_type(operator.inputs[0].type)
    if in_type not in (TensorProto.FLOAT, TensorProto.DOUBLE):
        in_type = TensorProto.FLOAT
    net_type = helper.np_dtype_to_tensor_dtype(net.dtype)
    opset = container.target_opset
    if isinstance(opset, dict):
        opset = opset.get("", DEFAULT_OPSET)
    opset = int(opset or DEFAULT_OPSET)
    g = _Graph(net.dtype, opset, scope.get_unique_variable_name)
    x_net = g.op("Cast", [x], "cast_input", to=net_type)      # predict casts X to the network's dtype
    y = _network_nodes(g, net, x_net, g.unique("network_output"))
    # back to the input's type, as the estimators' predict_proba for wider input (and the declared type)
    if net_type != in_type:
        y = g.op("Cast", [y], "cast_output", to=in_type)
    for op, ins, outs, name, attrs in g.nodes:
        container.add_node(op, ins, outs, name=name, op_version=opset, **attrs)
    for name, a in g.inits:
        container.add_initializer(name, net_type, list(a.shape), a.ravel().tolist())
    out_proba = operator.outputs[1 if classifier else 0].full_name
    if not classifier:
        container.add_node("Identity", [y], [out_proba], name=scope.get_unique_operator_name("Identity"))
        return
    prob_t = in_type
    if est.n_outputs_ == 1:    # binary: columns [1 - p, p]
        one = scope.get_unique_variable_name("one")
        container.add_initializer(one, prob_t, [], [1.0])
        neg = scope.get_unique_variable_name("negative_proba")
        container.add_node("Sub", [one, y], [neg], name=scope.get_unique_operator_name("Sub"))
        container.add_node("Concat", [neg, y], [out_proba], axis=1, name=scope.get_unique_operator_name("Concat"))
    else:
        container.add_node("Identity", [y], [out_proba], name=scope.get_unique_operator_name("Identity"))
    label = operator.outputs[0].full_name
    if est.out_activation_ == "logistic" and est.n_outputs_ > 1:   # multilabel: p > 0.5 per output
        half = scope.get_unique_variable_name("half")
        container.add_initializer(half, prob_t, [], [0.5])
        gt = scope.get_unique_variable_name("above_half")
        container.add_node("Greater", [out_proba, half], [gt], name=scope.get_unique_operator_name("Greater"))
        container.add_node("Cast", [gt], [label], to=TensorProto.INT64, name=scope.get_unique_operator_name("Cast"))
        return
    from skl2onnx.common.utils_classifier import get_label_classes
    classes = np.asarray(get_label_classes(scope, est))    # 0 .. k-1 with the option nocl=True
    if classes.dtype.kind in "iub":
        class_t, values = TensorProto.INT64, classes.astype(np.int64)
    elif classes.dtype.kind == "f":   # as skl2onnx's own MLP converter: float labels become integers
        class_t, values = TensorProto.INT64, classes.astype(np.int64)
    else:
        class_t, values = TensorProto.STRING, np.array([str(c).encode("utf-8") for c in classes])
    cls = scope.get_unique_variable_name("classes")
    container.add_initializer(cls, class_t, list(values.shape), values.tolist())
    am = scope.get_unique_variable_name("argmax")
    container.add_node("ArgMax", [out_proba], [am], axis=1, keepdims=0, name=scope.get_unique_operator_name("ArgMax"))
    container.add_node("Gather", [cls, am], [label], axis=0, name=scope.get_unique_operator_name("Gather"))


def _shapes(operator):
    """Output types and shapes: label (N,) — (N, k) multilabel — and probabilities (N, classes)
    for classifiers, variable (N, n_outputs) for regressors, in the input's float type."""
    from skl2onnx.common.data_types import (DoubleTensorType, FloatTensorType, Int64TensorType,
                                            StringTensorType)
    est = operator.raw_operator
    N = operator.inputs[0].get_first_dimension()
    ftype = DoubleTensorType if isinstance(operator.inputs[0].type, DoubleTensorType) else FloatTensorType
    k = int(est.n_outputs_)
    if not hasattr(est, "classes_"):
        operator.outputs[0].type = ftype([N, k])
        return
    multilabel = est.out_activation_ == "logistic" and k > 1
    from skl2onnx.common.utils_classifier import get_label_classes
    kind = np.asarray(get_label_classes(operator.scope_inst, est)).dtype.kind
    ltype = Int64TensorType if multilabel or kind in "iubf" else StringTensorType
    operator.outputs[0].type = ltype([N, k] if multilabel else [N])
    operator.outputs[1].type = ftype([N, k if k > 1 else 2])


_REGISTERED = []


def register_skl2onnx():
    """Register fastbp's ``MLPClassifier`` and ``MLPRegressor`` with skl2onnx, so that
    ``skl2onnx.to_onnx(est, X[:1])`` converts them as scikit-learn's MLPs: classifiers give
    ``label`` and ``probabilities`` with ``options={"zipmap": False}``, else skl2onnx's ZipMap
    outputs ``output_label`` and ``output_probability`` (a list of {class: probability}; float32
    input only, as for scikit-learn's MLPs); regressors give ``variable`` (N, n_outputs).
    Idempotent."""
    if _REGISTERED:
        return
    from skl2onnx import update_registered_converter
    from .sklearn import MLPClassifier, MLPRegressor
    update_registered_converter(MLPClassifier, "FastbpMLPClassifier", _shapes, _convert_classifier,
                                options={"zipmap": [True, False, "columns"], "nocl": [True, False]})
    update_registered_converter(MLPRegressor, "FastbpMLPRegressor", _shapes, _convert_regressor)
    _REGISTERED.append(True)


__all__ = ["to_onnx", "to_torch", "from_torch", "estimator_to_network", "estimator_from_network",
           "register_skl2onnx", "DEFAULT_OPSET"]
