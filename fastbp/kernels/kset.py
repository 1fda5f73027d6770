"""Which kernels a compiled driver contains: a compile-time set, so a network compiles only its own.

The drivers in ``network.py`` dispatch at run time on the codes in the layer table
(activation, loss, optimizer, norm, dropout). Numba compiles every branch of such a
dispatch, so a driver that could run any network compiled all sixteen activation
kernels, five loss pairs, three optimizers, two norms and dropout: about 35 kernel
functions, most of a cold compile. Each driver therefore also takes a ``KernelSet``:
a bit mask whose *Numba type* carries the mask, so a driver is compiled (and cached)
once per set, and the ``*_in`` dispatchers below compile only the branches in the set.
A relu/softmax/Adam network compiles relu, softmax cross-entropy and Adam, nothing else.

The pruning is Numba's own dead-branch removal: in the dispatchers' implementations
each branch is guarded by a constant (``if relu and code == RELU``), which Numba drops
before type inference, so a pruned kernel is never typed or compiled.

``ALL`` holds every kernel: the plain dispatchers (``activation_forward`` and friends,
callable from Python) use it, and so does a driver when ``SPECIALISE`` is False (one
compiled driver per dtype for every network; the test suite runs that way, so that
hundreds of activation/loss/optimizer combinations share one compile).
"""

from numba.core import types
from numba.core.imputils import lower_constant
from numba.extending import NativeValue, models, register_model, typeof_impl, unbox

# bit offsets of the families in the mask (each family's codes count up from its offset)
ACT_BIT = 0        # activations.py codes 0..7
LOSS_BIT = 8       # losses.py codes 0..4
OPT_BIT = 16       # optim.py kinds 0..2
NORM_BIT = 24      # norm.py codes 1..2 (NO_NORM = 0 needs no kernel)
DROPOUT_BIT = 30

SPECIALISE = True  # False: every driver is compiled with ALL


class KernelSet:
    """A set of kernels, as a bit mask (see the module docstring)."""

    __slots__ = ("mask",)

    def __init__(self, mask):
        self.mask = int(mask)

    def __repr__(self):
        return f"KernelSet({self.mask:#x})"

    def __eq__(self, other):
        return isinstance(other, KernelSet) and other.mask == self.mask

    def __hash__(self):
        return hash(self.mask)


ALL = KernelSet((1 << 31) - 1)


def kernel_set(activations=(), loss=None, optimizer=None, norms=(), dropout=False):
    """The KernelSet for these codes (``ALL`` when SPECIALISE is off)."""
    if not SPECIALISE:
        return ALL
    mask = 0
    for c in activations:
        mask |= 1 << (ACT_BIT + int(c))
    if loss is not None:
        mask |= 1 << (LOSS_BIT + int(loss))
    if optimizer is not None:
        mask |= 1 << (OPT_BIT + int(optimizer))
    for c in norms:
        if c:
            mask |= 1 << (NORM_BIT + int(c))
    if dropout:
        mask |= 1 << DROPOUT_BIT
    return KernelSet(mask)


class KernelSetType(types.Type):
    """Numba type of a KernelSet: one type per mask, so each mask compiles its own driver."""

    def __init__(self, mask):
        self.mask = int(mask)
        super().__init__(name=f"KernelSet({self.mask:#x})")


def has(kset_type, family_bit, code):
    """At typing time: is kernel ``code`` of the family at ``family_bit`` in the set?"""
    return bool(kset_type.mask >> (family_bit + int(code)) & 1)


@typeof_impl.register(KernelSet)
def _typeof_kernel_set(val, c):
    return KernelSetType(val.mask)


register_model(KernelSetType)(models.OpaqueModel)


@unbox(KernelSetType)
def _unbox_kernel_set(typ, obj, c):
    return NativeValue(c.context.get_dummy_value())


@lower_constant(KernelSetType)
def _constant_kernel_set(context, builder, ty, pyval):
    return context.get_dummy_value()
