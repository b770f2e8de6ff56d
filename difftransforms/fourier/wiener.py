"""Noise estimation and Wiener denoising in a local Fourier (DCT) domain.

``wiener_denoise`` is a *two-stage empirical Wiener filter* on overlapping windows:

1. **pilot**: every ``8 x 8`` window (stride 2) is transformed with the DCT-II -- the
   Fourier transform of the window's mirrored (even) extension, which avoids the edge
   artefacts of a periodic window -- and coefficients below ``2.7 sigma`` are zeroed. The
   windows are put back by weighted overlap-add (Kaiser window, each window weighted by
   ``1 / (number of kept coefficients)``), which gives a pilot estimate of the clean image;
2. **Wiener**: the same windows of the noisy image are multiplied by the empirical Wiener
   gain ``P^2 / (P^2 + sigma^2)``, where ``P`` are the pilot's coefficients (its local
   spectrum), and aggregated the same way (weights ``1 / sum(gain^2)``).

The image is extended by half-sample reflection before windowing, so the borders get as
many windows as the interior. Each channel is filtered independently.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ._common import check_image, check_image_finite, extend, extension_index

__all__ = ["WienerDenoise", "estimate_noise_std", "wiener_denoise"]

# Daubechies-2 high-pass decomposition filter (PyWavelets' ``Wavelet('db2').dec_hi``).
_DB2_DEC_HI = (-0.48296291314453416, 0.8365163037378079,
               -0.2241438680420134, -0.12940952255126037)
# Phi^-1(3/4): the median absolute value of a standard normal variable.
_MAD_TO_STD = 0.6744897501960817


def _db2_detail(x: Tensor, dim: int) -> Tensor:
    """PyWavelets' ``dwt(x, 'db2', mode='symmetric')`` detail band along ``dim`` (-1/-2)."""
    n = x.shape[dim]
    ext = x.index_select(dim, extension_index(n, 3, 3, "reflect", x.device))
    taps = torch.tensor(_DB2_DEC_HI[::-1], dtype=x.dtype, device=x.device)
    nout = (n + 3) // 2
    moved = ext.movedim(dim, -1)
    lead = moved.shape[:-1]
    flat = moved.reshape(-1, 1, moved.shape[-1])
    out = F.conv1d(flat, taps.view(1, 1, 4))[..., 1::2][..., :nout]
    return out.reshape(*lead, nout).movedim(-1, dim)


def _median(v: Tensor) -> Tensor:
    """Median over the last dim, averaging the two middle values (NumPy's convention)."""
    s = v.sort(dim=-1).values
    m = s.shape[-1]
    return 0.5 * (s[..., (m - 1) // 2] + s[..., m // 2])


def estimate_noise_std(x: Tensor) -> Tensor:
    """Estimate the standard deviation of additive white Gaussian noise, per channel.

    Donoho & Johnstone's robust estimator, as ``skimage.restoration.estimate_sigma``:
    ``median(|d|) / 0.6745`` where ``d`` is the finest diagonal detail band of the
    Daubechies-2 wavelet transform (PyWavelets' ``dwtn(x, 'db2', mode='symmetric')['dd']``).
    Image structure inflates the estimate slightly on textured images.

    Args:
        x: ``(H, W)``, ``(C, H, W)`` or ``(B, C, H, W)`` float image.

    Returns:
        ``()``, ``(C,)`` or ``(B, C)`` tensor (the input's leading dims).

    >>> g = torch.Generator().manual_seed(0)
    >>> s = estimate_noise_std(0.5 + 0.1 * torch.randn(2, 128, 128, generator=g))
    >>> s.shape, bool(((s - 0.1).abs() < 0.01).all())
    (torch.Size([2]), True)
    """
    x4, _ = check_image(x)
    dd = _db2_detail(_db2_detail(x4, -2), -1)
    sigma = _median(dd.abs().flatten(-2)) / _MAD_TO_STD
    return sigma.reshape(x.shape[:-2])


def noise_std_as_tensor(noise_std: float | Tensor, x4: Tensor) -> Tensor:
    """``noise_std`` broadcast to ``(B, C)`` for a ``(B, C, H, W)`` image, validated."""
    if isinstance(noise_std, Tensor):
        s = noise_std.to(dtype=x4.dtype, device=x4.device)
    elif isinstance(noise_std, bool) or not isinstance(noise_std, (int, float)):
        raise TypeError(f"noise_std must be a number, a tensor or None, "
                        f"got {type(noise_std).__name__}")
    else:
        s = torch.tensor(float(noise_std), dtype=x4.dtype, device=x4.device)
    try:
        s = torch.broadcast_to(s, x4.shape[:2])
    except RuntimeError:
        raise ValueError(f"noise_std of shape {tuple(s.shape)} does not broadcast to the "
                         f"image's (B, C) = {tuple(x4.shape[:2])}") from None
    if not bool(torch.isfinite(s).all()) or bool((s < 0).any()):
        raise ValueError("noise_std must be finite and >= 0")
    return s


def dct_basis(size: int, dtype=torch.float64, device=None) -> Tensor:
    """Orthonormal 2-D DCT-II basis as convolution filters, ``(size**2, 1, size, size)``."""
    n = torch.arange(size, dtype=torch.float64)
    d = torch.cos(math.pi * (2 * n[None, :] + 1) * n[:, None] / (2 * size)) * math.sqrt(2 / size)
    d[0] /= math.sqrt(2)
    basis = d[:, None, :, None] * d[None, :, None, :]  # (u, v, i, j)
    return basis.reshape(size * size, 1, size, size).to(dtype=dtype, device=device)


def _window(size: int, dtype=torch.float64, device=None) -> Tensor:
    w = torch.kaiser_window(size, periodic=False, beta=2.0, dtype=torch.float64)
    return (w[:, None] * w[None, :]).to(dtype=dtype, device=device)


def _local_wiener(x4: Tensor, sigma: Tensor, basis: Tensor, window: Tensor, stride: int,
                  threshold: float) -> Tensor:
    b, c, h, w = x4.shape
    k = basis.shape[-1]
    g = b * c
    # extend so that every pixel is covered by the same number of windows
    pad = k - 1
    ext_h = -(-(h + 2 * pad - k) // stride) * stride + k
    ext_w = -(-(w + 2 * pad - k) // stride) * stride + k
    xe = extend(x4, (pad, ext_h - h - pad, pad, ext_w - w - pad), "reflect")
    xe = xe.reshape(g, 1, ext_h, ext_w)
    sig = sigma.reshape(g, 1, 1, 1)
    analysis = basis
    synthesis = basis * window  # inverse DCT and the aggregation window in one filter

    def aggregate(coef: Tensor, weight: Tensor) -> Tensor:
        num = F.conv_transpose2d(coef * weight, synthesis, stride=stride)
        den = F.conv_transpose2d(weight, window[None, None], stride=stride)
        return num / den

    coef = F.conv2d(xe, analysis, stride=stride)  # (g, k*k, L1, L2)
    # stage 1: hard thresholding of the local spectra -> pilot
    keep = (coef.abs() > threshold * sig).to(x4.dtype)
    keep[:, 0] = 1.0  # always keep the window's mean
    pilot = aggregate(coef * keep, 1.0 / keep.sum(1, keepdim=True))
    # stage 2: empirical Wiener gain from the pilot's local spectra
    pc = F.conv2d(pilot, analysis, stride=stride)
    p2 = pc * pc
    gain = p2 / (p2 + sig * sig).clamp_min(torch.finfo(x4.dtype).tiny)
    weight = 1.0 / (gain * gain).sum(1, keepdim=True).clamp_min(1e-12)
    out = aggregate(coef * gain, weight)
    out = out.reshape(b, c, ext_h, ext_w)[..., pad:pad + h, pad:pad + w]
    return out


def wiener_denoise(x: Tensor, noise_std: float | Tensor | None = None) -> Tensor:
    """Denoise additive white Gaussian noise with a two-stage empirical Wiener filter.

    See the module docstring: local spectra of overlapping ``8 x 8`` windows (DCT-II, the
    Fourier transform of the mirrored window), a hard-thresholded pilot, then the Wiener
    gain ``P^2 / (P^2 + sigma^2)`` from the pilot spectra. On ``camera`` with noise std 0.1
    it gives about 29 dB PSNR (``scipy.signal.wiener`` 5x5: 27.5 dB).

    Args:
        x: noisy image ``(H, W)``, ``(C, H, W)`` or ``(B, C, H, W)``, float32/float64.
        noise_std: noise standard deviation (number, or tensor broadcastable to ``(B, C)``);
            ``None`` estimates it per channel with :func:`estimate_noise_std`.

    Returns:
        The denoised image, same shape; differentiable in ``x``.

    >>> g = torch.Generator().manual_seed(0)
    >>> clean = torch.linspace(0, 1, 64)[None, :].repeat(64, 1)
    >>> noisy = clean + 0.1 * torch.randn(64, 64, generator=g)
    >>> err = lambda y: float(((y - clean) ** 2).mean())
    >>> bool(err(wiener_denoise(noisy)) < err(noisy) / 10)
    True
    """
    return _denoise(x, noise_std, None, None)


def _denoise(x: Tensor, noise_std, basis: Tensor | None, window: Tensor | None,
             size: int = 8, stride: int = 2, threshold: float = 2.7) -> Tensor:
    x4, restore = check_image_finite(x)
    if noise_std is None:
        sigma = estimate_noise_std(x4)
    else:
        sigma = noise_std_as_tensor(noise_std, x4)
    if basis is None:
        basis = dct_basis(size, x4.dtype, x4.device)
    if window is None:
        window = _window(size, x4.dtype, x4.device)
    basis = basis.to(dtype=x4.dtype, device=x4.device)
    window = window.to(dtype=x4.dtype, device=x4.device)
    return restore(_local_wiener(x4, sigma, basis, window, stride, threshold))


class WienerDenoise(nn.Module):
    """Module form of :func:`wiener_denoise`; the DCT filters are buffers built once.

    Args:
        noise_std: fixed noise standard deviation, or ``None`` to estimate it per call.
        window_size: side of the square windows (8).
        stride: window step (2; 1 is ~4x slower and ~0.1 dB better).
        threshold: pilot hard threshold in units of ``noise_std`` (2.7).

    >>> WienerDenoise()(torch.rand(2, 3, 32, 32)).shape
    torch.Size([2, 3, 32, 32])
    """

    def __init__(self, noise_std: float | None = None, window_size: int = 8, stride: int = 2,
                 threshold: float = 2.7) -> None:
        super().__init__()
        if not isinstance(window_size, int) or window_size < 2:
            raise ValueError(f"window_size must be an int >= 2, got {window_size!r}")
        if not isinstance(stride, int) or not 1 <= stride <= window_size:
            raise ValueError(f"stride must be an int in [1, window_size], got {stride!r}")
        if not threshold > 0:
            raise ValueError(f"threshold must be > 0, got {threshold!r}")
        if noise_std is not None and not noise_std >= 0:
            raise ValueError(f"noise_std must be >= 0 or None, got {noise_std!r}")
        self.noise_std = noise_std
        self.window_size, self.stride, self.threshold = window_size, stride, float(threshold)
        self.register_buffer("basis", dct_basis(window_size), persistent=False)
        self.register_buffer("window", _window(window_size), persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        return _denoise(x, self.noise_std, self.basis, self.window, self.window_size,
                        self.stride, self.threshold)

    def extra_repr(self) -> str:
        return (f"noise_std={self.noise_std}, window_size={self.window_size}, "
                f"stride={self.stride}, threshold={self.threshold}")
