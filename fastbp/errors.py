"""The library's error types. Every input problem is a ``ValueError`` subclass."""


class FastbpError(Exception):
    """Base class of every error fastbp raises on purpose."""


class InputError(FastbpError, ValueError):
    """Bad data, shapes, dtypes, labels or arguments; raised before any weight changes."""


class ModelFileError(InputError):
    """A model file that is missing, truncated, not fastbp's, or holds pickled objects."""


class ModelNotFoundError(ModelFileError, FileNotFoundError):
    """The model file does not exist."""


class DataFileError(InputError):
    """A data file (IDX, CSV, NPZ or a download) that is truncated, corrupt, inconsistent or
    not in the format it claims; the message names the file and the problem."""


class DivergenceError(FastbpError, FloatingPointError):
    """The training loss or a gradient became NaN or inf.

    Raised by ``fit``/``train_step``; the failing step is not applied, so the
    network keeps the weights of the last step whose loss and gradients were finite.
    """
