"""Daubechies fast wavelet transform (Mallat 1989), PyWavelets-exact and differentiable.

Functions mirror PyWavelets (same names, arguments, coefficient layout and values) on
batched tensors of any device, float32/float64, differentiable end to end:

- 1-D: :func:`dwt`, :func:`idwt`, :func:`wavedec`, :func:`waverec`
- 2-D: :func:`dwt2`, :func:`idwt2`, :func:`wavedec2`, :func:`waverec2`
- packing: :func:`coeffs_to_tensor`, :func:`tensor_to_coeffs` (``pywt.coeffs_to_array``)
- modules: :class:`DWT2`, :class:`IDWT2`, :class:`DWT`, :class:`IDWT`
- filters: :class:`Wavelet` (PyWavelets' discrete wavelets or learnable filters)
- applications: :func:`wavelet_denoise`, :func:`wavelet_compress`

All nine PyWavelets extension modes are supported: ``zero, constant, symmetric, periodic,
smooth, periodization, reflect, antisymmetric, antireflect``.
"""

from ._filters import Wavelet, wavelist
from ._kernel import available as kernels_available
from ._kernel import load_error as kernels_load_error
from ._plans import MODES
from .applications import CompressionResult, estimate_sigma, wavelet_compress, wavelet_denoise
from .modules import DWT, DWT2, IDWT, IDWT2
from .packing import coeffs_to_tensor, tensor_to_coeffs
from .transform import (
    dwt,
    dwt2,
    dwt_coeff_len,
    dwt_max_level,
    idwt,
    idwt2,
    wavedec,
    wavedec2,
    waverec,
    waverec2,
)

__all__ = [
    "MODES", "Wavelet", "wavelist", "dwt", "idwt", "wavedec", "waverec", "dwt2", "idwt2",
    "wavedec2", "waverec2", "dwt_max_level", "dwt_coeff_len", "coeffs_to_tensor",
    "tensor_to_coeffs", "DWT", "IDWT", "DWT2", "IDWT2", "wavelet_denoise", "wavelet_compress",
    "CompressionResult", "estimate_sigma", "kernels_available", "kernels_load_error",
]
