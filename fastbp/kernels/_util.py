"""Helpers shared by the kernel families."""

from numba import njit
from numba.core import cgutils, types
from numba.core.imputils import impl_ret_borrowed
from numba.extending import intrinsic
from numba.np.arrayobj import make_array, populate_array

from .._config import HELPER, INLINE, JIT

# The threaded kernels (parallel=True; the optimizer updates and the bf16 copy of the parameters
# of large networks) split their buffer into MT_CHUNKS contiguous chunks that Numba's threads
# share (prange: as many threads as fb.set_num_threads and the thread policy give). Every element
# gets the serial kernel's arithmetic, so results do not depend on the thread count. (A chunk per
# thread would need numba.get_num_threads(), which Numba cannot cache.)
MT_CHUNKS = 64
MT_MIN_PARAMS = 1 << 20   # networks of this many parameters and more get the threaded kernels (where they pay)
PARALLEL = dict(JIT, parallel=True)


@njit(**INLINE)
def chunk(n, c):
    """[lo, hi) of chunk c of MT_CHUNKS over n elements (whole 64-byte lines of float32)."""
    size = ((n + MT_CHUNKS - 1) // MT_CHUNKS + 15) // 16 * 16
    lo = min(n, c * size)
    return lo, min(n, lo + size)


@njit(**HELPER)
def in_place(out, inp):
    """Copy inp into out unless they are the same buffer; return out's shape.

    The kernels then work in place on ``out``: with one array in the loop LLVM
    vectorises it, whereas with two arrays that may alias it must check at run
    time and falls back to the scalar loop when they do (the network always
    passes the same buffer; relu was 2.5x slower that way).
    """
    n, k = out.shape
    if out.ctypes.data != inp.ctypes.data:
        for i in range(n):
            for j in range(k):
                out[i, j] = inp[i, j]
    return n, k


@intrinsic
def flat_view(typingctx, arr):
    """``arr.reshape(arr.size)`` of a C-contiguous array: the same 1-D view of every element,
    built directly (Numba's reshape compiles a subroutine of its own: 0.24 s of softmax's compile)."""
    if not isinstance(arr, types.Array) or arr.layout != "C":
        return None
    ret = arr.copy(ndim=1, layout="C")

    def codegen(context, builder, sig, args):
        src = make_array(arr)(context, builder, args[0])
        dst = make_array(ret)(context, builder)
        size = context.get_constant(types.intp, 1)
        for extent in cgutils.unpack_tuple(builder, src.shape, arr.ndim):
            size = builder.mul(size, extent)
        populate_array(dst, data=src.data, shape=[size], strides=[src.itemsize], itemsize=src.itemsize,
                       meminfo=src.meminfo, parent=src.parent)
        return impl_ret_borrowed(context, builder, ret, dst._getvalue())
    return ret(arr), codegen
