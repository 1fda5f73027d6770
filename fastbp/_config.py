"""The one set of Numba options every kernel is compiled with.

- ``cache=True``: compiled machine code is written next to the sources, so a
  second process loads it instead of recompiling.
- ``error_model="numpy"``: division by zero gives inf/nan as in NumPy instead
  of raising, so no zero check is emitted in the inner loops.
- ``fastmath`` stays off: reductions keep IEEE order and NaN/inf semantics, which
  the non-finite loss detection relies on.
"""

JIT = dict(nogil=True, cache=True, error_model="numpy", fastmath=False, boundscheck=False)
