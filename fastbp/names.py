"""The public name tables: every name a user can give for a choice, in one place.

``Network``, the scikit-learn estimators, the command line and the docs read these; nobody
keeps a copy. The compiled side's codes stay in ``fastbp.kernels``; these tables only name
what exists there.
"""

from .kernels.activations import ACTIVATIONS as _ACTIVATION_CODES
from .kernels.activations import ALIASES as _ACTIVATION_ALIASES
from .kernels.losses import DEFAULT_LOSS as _DEFAULT_LOSS
from .kernels.losses import PAIRS as _PAIRS
from .optim import OPTIMIZERS as _OPTIMIZERS

ACTIVATIONS = tuple(_ACTIVATION_CODES)              # hidden-layer activations
ACTIVATION_ALIASES = dict(_ACTIVATION_ALIASES)      # other names accepted for them (scikit-learn's)
OUTPUTS = tuple(_DEFAULT_LOSS)                      # output-layer functions
DEFAULT_LOSS = dict(_DEFAULT_LOSS)                  # output -> the loss it pairs with by default
OUTPUT_LOSS_PAIRS = tuple(_PAIRS)                   # every (output, loss) pair there is
LOSSES = tuple(sorted({loss for _, loss in _PAIRS}))
NORMS = ("none", "batch", "layer")
INITS = ("auto", "he", "glorot")
DTYPES = ("float32", "float64")
PRECISIONS = ("fp32", "bf16")                       # Network(precision=...): the matrix products' operands
PRECISION_ALIASES = {"float32": "fp32", "bfloat16": "bf16", "mixed_bfloat16": "bf16"}   # other names for them
OPTIMIZERS = tuple(_OPTIMIZERS)                     # names ``fastbp.optim.get_optimizer`` takes


def history_keys(is_classifier, n_layers, validation=False, track_gradients=False):
    """The keys a ``Network.fit`` records per epoch, in the order it records them.

    ``loss``, ``accuracy`` (classifiers), ``lr``; with validation ``val_loss`` and
    ``val_accuracy`` (classifiers); with ``track_gradients`` ``grad_norm_<l>`` and
    ``update_ratio_<l>`` for each of the ``n_layers`` weight layers.
    """
    keys = ["loss"] + (["accuracy"] if is_classifier else []) + ["lr"]
    if validation:
        keys += ["val_loss"] + (["val_accuracy"] if is_classifier else [])
    if track_gradients:
        for l in range(n_layers):
            keys += [f"grad_norm_{l}", f"update_ratio_{l}"]
    return keys


__all__ = ["ACTIVATIONS", "ACTIVATION_ALIASES", "OUTPUTS", "DEFAULT_LOSS", "OUTPUT_LOSS_PAIRS", "LOSSES",
           "NORMS", "INITS", "DTYPES", "PRECISIONS", "PRECISION_ALIASES", "OPTIMIZERS", "history_keys"]
