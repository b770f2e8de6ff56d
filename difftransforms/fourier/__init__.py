"""Fourier-domain filters: Gaussian blur, unsharp mask, Wiener denoising and deconvolution.

All functions take ``(H, W)``, ``(C, H, W)`` or ``(B, C, H, W)`` float32/float64 tensors on
any device and are differentiable; each has a thin ``nn.Module`` twin where it makes sense.

- :func:`gaussian_blur` -- scipy.ndimage.gaussian_filter-exact blur (FFT or direct).
- :func:`unsharp_mask` -- ``x + amount * (x - blur(x))``.
- :func:`estimate_noise_std` -- Donoho's wavelet MAD noise estimate (skimage's).
- :func:`wiener_denoise` -- two-stage empirical Wiener filter on local spectra.
- :func:`wiener_deconvolve`, :func:`richardson_lucy` -- deconvolution by a known PSF.
"""

from .deconv import psf_transfer, richardson_lucy, wiener_deconvolve
from .gaussian import (
    GaussianBlur,
    gaussian_blur,
    gaussian_kernel1d,
    gaussian_psf,
    gaussian_psf_size,
)
from .unsharp import UnsharpMask, unsharp_mask
from .wiener import WienerDenoise, estimate_noise_std, wiener_denoise

__all__ = [
    "GaussianBlur",
    "UnsharpMask",
    "WienerDenoise",
    "estimate_noise_std",
    "gaussian_blur",
    "gaussian_kernel1d",
    "gaussian_psf",
    "gaussian_psf_size",
    "psf_transfer",
    "richardson_lucy",
    "unsharp_mask",
    "wiener_denoise",
    "wiener_deconvolve",
]
