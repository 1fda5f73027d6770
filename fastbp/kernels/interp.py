"""The drivers of network.py run by the Python interpreter: a cold fit trains while they compile.

``train_epoch`` is most of a cold fit's compile (seconds), and nothing of it is needed to run a
batch but its order of calls: it slices views of the flat buffers and calls the kernels of the
table, the matrix products and a few element loops (``network.scaled``, ``gather_rows``, ...),
which are small and compile (or load from the cache) on their own. Here each driver is its own
source (the ``py_func`` of the dispatcher) run as plain Python, with the names it calls rebound:
the other drivers to their interpreted twins, ``call_<family>`` to the compiled kernel at that
address in the table (``table.entry``), ``gemm`` to the same BLAS call made through ctypes
(``_blas.gemm_from_python``), the shuffled batch's gather, the prediction's row copy and the
count of correct predictions to NumPy (copies and counts: the same values), and the other leaves
left as the compiled functions they are: ``all_finite``, which the input checks have compiled
already; ``transpose``, for layers whose dX goes through a copy of W^T (``_blas.dx_via_transpose``);
``sq_sum``, ``diff_sq_sum`` and the element loops, which only L2, clipping, gradient tracking and
sample weights call. So every floating-point operation is done by the same compiled code, in
the same order, as in the compiled driver, and the results are the same bit for bit
(tests/test_interp.py). One caveat: ``sq_sum`` and ``diff_sq_sum`` let LLVM reassociate their
sums, and the compiled driver has them inlined where here they run on their own; the same loop
vectorises the same way in both (the L2 / clipping / tracking case of the tests checks it), but
no rule guarantees that. Only the slicing and the calls cost more (about 0.1 ms a batch, against
the seconds the compile takes). ``fastbp._training`` runs a cold
fit's batches here while a helper process compiles the drivers (``fastbp._compile``).

A batch interpreted here could be interrupted between two kernels, which the compiled driver
cannot be: the runner holds Ctrl-C back until an interpreted ``train_epoch`` returns
(``_training``). The interpreted ``loss_all`` changes no state, so it needs no such guard.
"""

from types import FunctionType

import numpy as np

from .._blas import _data_address, gemm_from_python
from . import losses, network, table

# the drivers run interpreted (everything of network.py that calls a kernel by address or another
# driver); every other function they call stays compiled
DRIVERS = ("view2", "vec", "layer_params", "bf16_params", "forward_product", "backward_products", "hidden_forward",
           "loss_forward_all", "update_running", "l2_penalty", "backward_all", "train_batch", "train_epoch",
           "loss_all")


def _caller(family):
    def call(addr, *args):
        if addr == 0:
            raise RuntimeError(f"fastbp: no {family} kernel in the table")
        return table.entry(addr)(*args)
    call.__name__ = f"call_{family}"
    return call


def _gather_rows(Xb, Tb, Lb, Wb, X, T, labels, sw, rows, use_labels, weighted):
    # network.gather_rows by NumPy: copies, so the same values (and no compile before the first batch)
    n = rows.shape[0]
    np.take(X, rows, axis=0, out=Xb[:n])
    if use_labels:
        np.take(labels, rows, out=Lb[:n])
    else:
        np.take(T, rows, axis=0, out=Tb[:n])
    if weighted:
        np.take(sw, rows, out=Wb[:n])


def _correct_count(code, P, T, labels, use_labels):
    # losses.correct_count by NumPy: the same counts (argmax takes the first of equal maxima, as
    # its loop; P is finite, since only an accepted step counts)
    if code == losses.SOFTMAX_CE:
        truth = labels if use_labels else T.argmax(axis=1)
        return float(np.count_nonzero(P.argmax(axis=1) == truth))
    if code == losses.SIGMOID_BCE:
        return np.count_nonzero((P > 0.5) == (T > 0.5)) / P.shape[1]
    return 0.0


def _copy_rows(out, s, P):
    out[s:s + P.shape[0]] = P


# The views the drivers slice (view2, vec, layer_params) are the same arrays at every batch of a
# call: kept here for the call's length, with their data pointers for the products (a dict lookup
# instead of a slice and a reshape, or of numpy's ctypes attribute: the largest costs of an
# interpreted batch after the calls themselves)
_VIEWS = {}


def _kept(key, buf, make, *args):
    # make(*args), a view of (or the data pointer of) buf: the same object again for the same key
    # within a call (the entry holds buf, so its id cannot be reused meanwhile)
    hit = _VIEWS.get(key)
    if hit is None or hit[0] is not buf:
        hit = _VIEWS[key] = (buf, make(*args))
    return hit[1]


def _view2(buf, off, n, k):
    return _kept(("view2", id(buf), off, n, k), buf, _SLICED["view2"], buf, off, n, k)


def _vec(buf, off, k):
    return _kept(("vec", id(buf), off, k), buf, _SLICED["vec"], buf, off, k)


def _layer_params(params, layout, l):
    return _kept(("layer", id(params), id(layout), l), params, _SLICED["layer_params"], params, layout, l)


def _address(a):
    return _kept(("address", id(a)), a, _data_address, a)


def _gemm(trans_a, trans_b, alpha, A, B, beta, C):
    gemm_from_python(trans_a, trans_b, alpha, A, B, beta, C, _address)


def _for_one_call(f):
    def call(*args):
        try:
            return f(*args)
        finally:
            _VIEWS.clear()      # (they hold the buffers: not beyond the call)
    call.__name__ = f.__name__
    call.__doc__ = f.__doc__
    return call


def _interpreted():
    ns = dict(vars(network))
    for family in table.FAMILIES:
        ns[f"call_{family}"] = _caller(family)
    ns.update(gather_rows=_gather_rows, correct_count=_correct_count, copy_rows=_copy_rows, gemm=_gemm)
    for name in DRIVERS:
        f = getattr(network, name).py_func
        ns[name] = FunctionType(f.__code__, ns, name, f.__defaults__, f.__closure__)
    for name in _SLICED:      # (the slicing twins make what the kept views hand out)
        _SLICED[name] = ns[name]
    ns.update(view2=_view2, vec=_vec, layer_params=_layer_params)
    return ns


_SLICED = dict.fromkeys(("view2", "vec", "layer_params"))
_NS = _interpreted()
train_epoch = _for_one_call(_NS["train_epoch"])
loss_all = _for_one_call(_NS["loss_all"])
