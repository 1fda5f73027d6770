"""fastbp: fast CPU training of dense neural networks by backpropagation.

Numba kernels over preallocated flat buffers; see README.md for the design.
"""

import numba as _numba

from ._blas import (BLAS_INFO, bf16_support, get_blas_threads, get_gemm_provider, set_blas_threads, set_gemm_provider,
                    set_user_threads, user_threads)
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
    """The one thread knob: sets both Numba's threads and the BLAS threads to ``n``, for every
    fit from now on. ``"auto"``: back to the default policy, under which each fit picks the BLAS
    threads itself (one thread for networks whose products are all small, never more than the
    cores other processes leave free; see ``fastbp info``). OPENBLAS_NUM_THREADS or
    OMP_NUM_THREADS in the environment count as the user's setting.

    Numba's count is capped at the size of its pool (``NUMBA_NUM_THREADS``).
    """
    if isinstance(n, str) and n == "auto":
        _numba.set_num_threads(_numba.config.NUMBA_NUM_THREADS)
        set_user_threads(None)
        return
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise InputError(f'number of threads must be an integer >= 1 or "auto", got {n!r}')
    _numba.set_num_threads(min(n, _numba.config.NUMBA_NUM_THREADS))
    set_user_threads(n)


def get_num_threads():
    """The thread count in force for the GEMMs (the BLAS pool) right now."""
    return get_blas_threads()


def get_thread_setting():
    """The count the user set (``set_num_threads``, the environment), or ``"auto"``: the policy.
    ``set_num_threads(get_thread_setting())`` restores either."""
    n = user_threads()
    return "auto" if n is None else n


__all__ = ["Network", "History", "callbacks", "schedules", "distributed", "EarlyStopping", "ModelCheckpoint", "CSVLogger",
           "TerminateOnNaN", "LambdaCallback", "Constant", "StepDecay", "ExponentialDecay", "CosineAnnealing",
           "InverseScaling", "ReduceLROnPlateau", "SGD", "Adam", "AdamW", "RMSprop", "Optimizer", "set_num_threads",
           "get_num_threads", "get_thread_setting", "FastbpError", "InputError", "ModelFileError", "ModelNotFoundError",
           "DivergenceError", "DataFileError", "BLAS_INFO", "bf16_support", "set_gemm_provider", "get_gemm_provider",
           "__version__"]
