"""Kernels compiled one by one and called through a table of addresses: a new network compiles only its new kernels.

The drivers in ``network.py`` are compiled once per dtype for every network. They do not
contain the activation, loss, norm, dropout and optimizer kernels: they call them through
machine-code addresses held in a small int64 array, the kernel table ``kt``, which the Python
side fills for each network (``kernel_table``). Each kernel is compiled on its own, once per
(kernel, dtype), and cached; a network that differs from what this machine has compiled in
one choice compiles that choice's kernels (well under a second), not new drivers (6-10 s, when
every combination had drivers of its own with its kernels inlined).

Every kernel of a family has the same signature per dtype (``signature``), fixed below and
listed in each family's module beside its ``KERNELS`` table; the driver calls one with
``call_<family>``, an intrinsic that checks the argument types against that signature at
compile time and calls the address with Numba's own calling convention (a zero address raises
instead of crashing).

``kt`` (n_layers + 1, N_SLOTS) int64: row l < n_layers holds layer l's kernels (the slots
ACT_F ... DROP_B; 0 where the layer has none), the last row the network's: LOSS_F, LOSS_B,
OPT_U, OUT_F (the loss pair's output function alone, for inference), ITEMSIZE (the dtype's
size, which the entry points check against their arrays, with the number of rows), CVT (a
bf16 network's parameter copy, precision.py; 0 otherwise) and MM16 (a bf16 network's products,
network.bf16_products, which registers itself in KERNELS; 0 otherwise). The drivers hold no
bf16 code but these calls, so a float32 network never compiles it.
"""

import numpy as np
from numba import types
from numba.core import cgutils, errors
from numba.core.typeconv import Conversion
from numba.extending import intrinsic

from .._config import busy, compile_locked
from . import activations, dropout, losses, norm, optim, precision

# slots of a layer's row and of the last row
ACT_F, ACT_B, NORM_F, NORM_B, NORM_U, DROP_F, DROP_B = range(7)
LOSS_F, LOSS_B, OPT_U, OUT_F, ITEMSIZE, CVT, MM16 = range(7)
N_SLOTS = 7


# ---- the signatures: each family's argument types, per dtype ------------------------------------
def _arg_types(family, dtype):
    f = types.float32 if np.dtype(dtype) == np.float32 else types.float64
    m, v = types.Array(f, 2, "C"), types.Array(f, 1, "C")
    i64, f64, b1 = types.int64, types.float64, types.boolean
    rng = types.Array(types.uint64, 1, "C")
    # the targets, labels and row weights are only read, and may be the caller's read-only arrays
    T, labels, sw = (types.Array(f, 2, "C", readonly=True), types.Array(types.int64, 1, "C", readonly=True),
                     types.Array(f, 1, "C", readonly=True))
    return {
        "act_f": (m, m, v, f64),                              # A, Z, b, alpha
        "act_b": (m, v, m, m, m, f64),                        # dZ, db, dA, A, Z, alpha
        "loss_f": (m, m, v, T, labels, b1, sw),               # P, Z, b, T, labels, use_labels, sw
        "loss_b": (m, v, m, T, labels, b1, sw),               # dZ, db, P, T, labels, use_labels, sw
        "out_f": (m, m, v),                                   # P, Z, b (the output function alone)
        "norm_f": (m, m, v, v, v, v, v, v, f64, b1),          # Z, XH, mu, rstd, b, gamma, rm, rv, eps, training
        "norm_b": (m, v, v, m, v, v),                         # dY, db, dgamma, XH, gamma, rstd
        "norm_u": (v, v, v, f64, i64),                        # mu, run_mean, run_var, momentum, n
        "drop_f": (m, m, m, f64, rng),                        # D, M, A, p, rng
        "drop_b": (m, m, m),                                  # dA, dD, M
        "opt_u": (v, v, v, v, v, types.Array(f64, 1, "C"), i64, f64),   # p, g, s1, s2, s3, hp, t, gscale
        "cvt": (v, i64, v),                                   # ws, offset of p16 in ws as uint16, p (bf16 copy)
        # a bf16 network's products (network.bf16_products): ws, layout, meta, l, which, A, B, C, W, c
        "mm16": (v, types.Array(i64, 2, "C"), types.Array(i64, 1, "C"), i64, i64, types.Array(f, 2, "C", readonly=True),
                 m, m, m, f64),
    }[family]


_RETURNS = {"loss_f": types.float64}
FAMILIES = ("act_f", "act_b", "loss_f", "loss_b", "out_f", "norm_f", "norm_b", "norm_u", "drop_f", "drop_b",
            "opt_u", "cvt", "mm16")


def signature(family, dtype):
    """The Numba signature of the kernels of ``family`` for ``dtype``."""
    return _RETURNS.get(family, types.none)(*_arg_types(family, dtype))


def kernels():
    """Every kernel by (family, code): the family modules' KERNELS tables (dropout's code is 0)."""
    out = {}
    for code, (f, b) in activations.KERNELS.items():
        out["act_f", code], out["act_b", code] = f, b
    for code, (f, b, o) in losses.KERNELS.items():
        out["loss_f", code], out["loss_b", code], out["out_f", code] = f, b, o
    for code, (f, b, u) in norm.KERNELS.items():
        out["norm_f", code], out["norm_b", code] = f, b
        if u is not None:
            out["norm_u", code] = u
    out["drop_f", 0], out["drop_b", 0] = dropout.KERNELS
    for code, u in optim.KERNELS.items():
        out["opt_u", code] = u
    for code, c in precision.KERNELS.items():
        out["cvt", code] = c
    return out


KERNELS = kernels()
for _k in set(KERNELS.values()):
    compile_locked(_k)
del _k


# ---- calling a kernel by address from a driver ------------------------------------------------
def _typer(family, typingctx, addr, args):
    ret = _RETURNS.get(family, types.none)
    dtype = next((a.dtype for a in args if isinstance(a, types.Array) and a.dtype in (types.float32, types.float64)),
                 None)
    if dtype is None:
        raise errors.TypingError(f"call_{family}: no float array among the arguments")
    want = _arg_types(family, np.float32 if dtype == types.float32 else np.float64)
    if not isinstance(addr, types.Integer):
        raise errors.TypingError(f"call_{family}: the address is {addr}, not an integer")
    if len(args) != len(want):
        raise errors.TypingError(f"call_{family}: {len(args)} arguments, the kernels take {len(want)}")
    for i, (got, exp) in enumerate(zip(args, want)):
        conv = typingctx.can_convert(got, exp) if got != exp else Conversion.exact
        if conv is None or conv > Conversion.safe:
            raise errors.TypingError(f"call_{family}: argument {i + 2} is {got}, the kernels take {exp}")
    sig = ret(types.int64, *want)

    def codegen(context, builder, sig_, llargs):
        argtys = tuple(want)
        fnty = context.call_conv.get_function_type(ret, argtys)
        with cgutils.if_unlikely(builder, cgutils.is_null(builder, llargs[0])):
            context.call_conv.return_user_exc(builder, RuntimeError, (f"fastbp: no {family} kernel in the table",))
        fn = builder.inttoptr(llargs[0], fnty.as_pointer())
        status, res = context.call_conv.call_function(builder, fn, ret, argtys, list(llargs[1:]))
        with cgutils.if_unlikely(builder, status.is_error):
            context.call_conv.return_status_propagate(builder, status)
        return res if ret != types.none else context.get_dummy_value()
    return sig, codegen


def _caller(family):
    # call_<family>(addr, <the family's arguments>): an intrinsic of fixed arity (Numba's
    # lowering of intrinsics takes no *args)
    params = ", ".join(f"a{i}" for i in range(len(_arg_types(family, np.float64))))
    ns = {"_typer": _typer}
    exec(f"def call_{family}(typingctx, addr, {params}):\n"
         f"    return _typer({family!r}, typingctx, addr, ({params},))\n", ns)
    return intrinsic(ns[f"call_{family}"])


call_act_f, call_act_b, call_loss_f, call_loss_b, call_out_f, call_norm_f, call_norm_b, call_norm_u, call_drop_f, \
    call_drop_b, call_opt_u, call_cvt, call_mm16 = (_caller(f) for f in FAMILIES)


# ---- filling a table ----------------------------------------------------------------------------
_ADDRESS = {}   # (family, code, dtype name) -> address in this process
_TABLES = {}    # the arguments of kernel_table -> its table (shared: never write into one)
_ENTRY = {}     # address -> the kernel's compiled entry point for Python callers


def address(family, code, dtype):
    """The address of kernel (``family``, ``code``) for ``dtype``, compiling it (or loading it from
    Numba's cache) on first use."""
    key = (family, int(code), np.dtype(dtype).name)
    addr = _ADDRESS.get(key)
    if addr is None:
        disp = KERNELS[family, int(code)]
        sig = signature(family, dtype)
        # compiled for the argument types alone, as a call from Python compiles it: Numba keys its
        # cache by what compile() was given, and a kernel compiled with the return type in its
        # signature was compiled (and cached) a second time when Python called it. The call_*
        # intrinsics read the result as the family's type, checked here instead
        disp.compile(sig.args)
        cres = disp.overloads[sig.args]
        if cres.signature.return_type != sig.return_type:
            raise TypeError(f"{disp.py_func.__name__} returns {cres.signature.return_type}, not {sig.return_type}")
        addr = _ADDRESS[key] = int(cres.library.get_pointer_to_function(cres.fndesc.llvm_func_name))
        _ENTRY[addr] = cres.entry_point
    return addr


def entry(addr):
    """The compiled kernel at ``addr`` (an address that ``address`` returned), callable from Python
    with the family's argument types (interp.py: the drivers run by the interpreter)."""
    return _ENTRY[int(addr)]


def _slots(act_codes, loss_code, opt_kind, norm_codes, dropout, cvt=None):
    """(row, slot, family, code) of every kernel in the table with these arguments (row -1: the
    network's own row)."""
    for l, code in enumerate(act_codes):
        yield l, ACT_F, "act_f", code
        yield l, ACT_B, "act_b", code
        nc = norm_codes[l] if l < len(norm_codes) else 0
        if nc:
            yield l, NORM_F, "norm_f", nc
            yield l, NORM_B, "norm_b", nc
            if ("norm_u", nc) in KERNELS:       # (layer norm keeps no running statistics)
                yield l, NORM_U, "norm_u", nc
        if l < len(dropout) and dropout[l]:
            yield l, DROP_F, "drop_f", 0
            yield l, DROP_B, "drop_b", 0
    yield -1, LOSS_F, "loss_f", loss_code
    yield -1, LOSS_B, "loss_b", loss_code
    yield -1, OUT_F, "out_f", loss_code
    if opt_kind is not None:
        yield -1, OPT_U, "opt_u", opt_kind
    if cvt is not None:
        yield -1, CVT, "cvt", cvt
        yield -1, MM16, "mm16", 0


def kernels_needed(act_codes, loss_code, opt_kind=None, norm_codes=(), dropout=(), cvt=None):
    """The (family, code) kernels of ``kernel_table`` with these arguments, in the order it fills them."""
    return list(dict.fromkeys((f, int(c)) for _, _, f, c in _slots(act_codes, loss_code, opt_kind, norm_codes,
                                                                   dropout, cvt)))


def kernel_table(dtype, act_codes, loss_code, opt_kind=None, norm_codes=(), dropout=(), cvt=None):
    """The kernel table of a network: ``act_codes``/``norm_codes``/``dropout`` (flags) per hidden
    layer (tuples: they key the cache), ``loss_code`` its loss pair, ``opt_kind`` the optimizer
    (None: no update, evaluation), ``cvt`` the bf16 parameter copy of a bf16 network (None: float32
    products). Dropout kernels go in only where a flag is set (none for evaluation). The table is shared by every network with these arguments; it stays writeable
    only because Numba types a read-only array on its slow path, which allocates at every call."""
    key = (dtype, act_codes, loss_code, opt_kind, norm_codes, dropout, cvt)
    kt = _TABLES.get(key)
    if kt is None:
        kt = np.zeros((len(act_codes) + 2, N_SLOTS), np.int64)
        # kernels that another process is compiling now (a cold fit's helper, fastbp._compile) last:
        # this one compiles the others meanwhile, then loads those from the cache
        later = []
        for row, slot, family, code in _slots(act_codes, loss_code, opt_kind, norm_codes, dropout, cvt):
            if (family, int(code), np.dtype(dtype).name) not in _ADDRESS and \
                    busy(KERNELS[family, int(code)], signature(family, dtype).args):
                later.append((row, slot, family, code))
            else:
                kt[row, slot] = address(family, code, dtype)
        for row, slot, family, code in later:
            kt[row, slot] = address(family, code, dtype)
        kt[-1, ITEMSIZE] = np.dtype(dtype).itemsize
        _TABLES[key] = kt
    return kt


from . import network  # noqa: E402,F401  (registers ("mm16", 0) in KERNELS)
