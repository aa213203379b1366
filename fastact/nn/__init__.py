"""Drop-in torch.nn modules for fastact's activations, one file per op family: hat.py (Hat),
dct.py (DCTActivation, fit_coeffs), layer.py (the GmP layers GeometricReLU and
GeometricReLUConv2d, and InputMeanNorm)."""

from fastact.nn.dct import DCTActivation, fit_coeffs
from fastact.nn.hat import Hat
from fastact.nn.layer import GeometricReLU, GeometricReLUConv2d, InputMeanNorm

__all__ = ["Hat", "DCTActivation", "InputMeanNorm", "GeometricReLU", "GeometricReLUConv2d"]
