"""fastbp: fast CPU training of dense neural networks by backpropagation.

Numba kernels over preallocated flat buffers; see README.md for the design.
"""

import numba as _numba

from ._blas import BLAS_INFO, get_blas_threads, set_blas_threads
from .errors import (DataFileError, DivergenceError, FastbpError, InputError, ModelFileError,
                     ModelNotFoundError)
from . import callbacks, schedules
from . import distributed   # noqa: E402  (imports mpi4py only when used)
from .callbacks import CSVLogger, EarlyStopping, LambdaCallback, ModelCheckpoint, TerminateOnNaN
from .network import History, Network
from .schedules import (Constant, CosineAnnealing, ExponentialDecay, InverseScaling, ReduceLROnPlateau,
                        StepDecay)
from .optim import SGD, Adam, AdamW, Optimizer, RMSprop

__version__ = "0.1.0"


def set_num_threads(n):
    """The one thread knob: sets both Numba's threads and the BLAS threads to ``n``.

    Numba's count is capped at the size of its pool (``NUMBA_NUM_THREADS``).
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise InputError(f"number of threads must be an integer >= 1, got {n!r}")
    _numba.set_num_threads(min(n, _numba.config.NUMBA_NUM_THREADS))
    set_blas_threads(n)


def get_num_threads():
    """The thread count in force for the GEMMs (the BLAS pool)."""
    return get_blas_threads()


__all__ = ["Network", "History", "callbacks", "schedules", "distributed", "EarlyStopping", "ModelCheckpoint", "CSVLogger",
           "TerminateOnNaN", "LambdaCallback", "Constant", "StepDecay", "ExponentialDecay", "CosineAnnealing",
           "InverseScaling", "ReduceLROnPlateau", "SGD", "Adam", "AdamW", "RMSprop", "Optimizer", "set_num_threads",
           "get_num_threads", "FastbpError", "InputError", "ModelFileError", "ModelNotFoundError",
           "DivergenceError", "DataFileError", "BLAS_INFO", "__version__"]
