"""Triton kernels for CUDA tensors, and for CPU tensors through the Triton interpreter.

The interpreter is chosen by Triton when a kernel is defined, so TRITON_INTERPRET=1 must be
set before fastact is imported (the tests do this on machines without a GPU).
"""

import os

try:
    import triton  # noqa: F401

    AVAILABLE = True
except ImportError:
    AVAILABLE = False

INTERPRET = os.environ.get("TRITON_INTERPRET", "0") == "1"
