"""Custom operators: the scattering modulus-convolution step and kernel reductions."""

from .kernel_reduction import (
    KernelSum,
    MMDLoss,
    feature_mmd,
    kernel_norm,
    kernel_sum,
    median_heuristic,
    mmd,
)
from .modconv import (
    backend_info,
    compiled_available,
    filter_fold,
    filter_fold_backward,
    modulus,
    modulus_maps_vjp,
)
from .modconv_reference import filter_fold_reference, modulus_reference

__all__ = [
    "KernelSum",
    "MMDLoss",
    "feature_mmd",
    "kernel_norm",
    "kernel_sum",
    "median_heuristic",
    "mmd",
    "backend_info",
    "compiled_available",
    "filter_fold",
    "filter_fold_backward",
    "filter_fold_reference",
    "modulus",
    "modulus_maps_vjp",
    "modulus_reference",
]
