"""Drop-in torch.nn modules for fastact's activations, one file per op family: hat.py (Hat),
dct.py (DCTActivation, fit_coeffs), layer.py (the GmP layers GeometricReLU and
GeometricReLUConv2d, and InputMeanNorm).

Each module's forward calls one function that each file hands to torch.fx.wrap: under
torch.fx.symbolic_trace (create_feature_extractor, FX quantisation, ...) it becomes one
call_function node, run with real tensors later, as the op's argument checks cannot run on
Proxies and the backend must be chosen when the graph runs, not when it is traced.
"""

from fastact.nn.dct import DCTActivation, fit_coeffs
from fastact.nn.hat import Hat
from fastact.nn.layer import GeometricReLU, GeometricReLUConv2d, InputMeanNorm

__all__ = ["Hat", "DCTActivation", "InputMeanNorm", "GeometricReLU", "GeometricReLUConv2d"]
