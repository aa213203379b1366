"""fastact: fused kernels for the Hat, DCT-basis (ENN) and geometric ReLU (GmP) activations.

    import fastact
    y = fastact.hat(x)                       # or fastact.nn.Hat() in a model
    with fastact.use_backend("reference"):   # "auto" (default), "cpu", "cuda", "triton",
        ...                                  # "cuda-emulated" (fastact.available_backends())

See README.md for backends and dtypes, docs/ for benchmarks and the papers.
"""

from fastact._version import __version__
from fastact import _extension  # noqa: F401  (loads fastact._C, or warns once)
from fastact._backend import available_backends, use_backend
from fastact import reference
from fastact.hat import hat
from fastact.dct import dct_activation
from fastact.sphere import cartesian_to_spherical, spherical_to_cartesian
from fastact.layer import geometric_relu, geometric_relu_conv2d
from fastact import nn
from fastact import spectral
from fastact.convert import Conversion, convert
from fastact.plot import plot_activations

__all__ = [
    "__version__",
    "available_backends",
    "use_backend",
    "reference",
    "hat",
    "dct_activation",
    "spherical_to_cartesian",
    "cartesian_to_spherical",
    "geometric_relu",
    "geometric_relu_conv2d",
    "nn",
    "spectral",
    "convert",
    "Conversion",
    "plot_activations",
]
