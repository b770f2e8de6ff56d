"""Custom operators: the scattering modulus-convolution step and kernel reductions."""

from .modconv import filter_fold, modulus

__all__ = ["filter_fold", "modulus"]
