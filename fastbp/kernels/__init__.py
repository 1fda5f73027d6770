"""Numba kernels, one module per family, each op a ``*_forward``/``*_backward`` pair.

Conventions: outputs come first, then inputs, then parameters and sizes; gradient
buffers carry a ``d`` prefix. Kernels write only into the arrays they are given,
never allocate, never keep state. Gradients are *overwritten* (not accumulated).
"""
