"""Wavelet shrinkage denoising (scikit-image-exact) and JPEG 2000-style compression."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from .._utils import as_bchw, check_finite, check_floating
from ._filters import WaveletLike, taps
from ._plans import check_mode
from .transform import dwt_max_level, wavedec2, waverec2

__all__ = ["wavelet_denoise", "wavelet_compress", "CompressionResult", "estimate_sigma"]

_MAD_TO_SIGMA = 0.6744897501960817  # scipy.stats.norm.ppf(0.75)
_METHODS = ("BayesShrink", "VisuShrink")
_THRESH = ("soft", "hard")


def _median_nonzero_abs(d: Tensor) -> Tensor:
    """``np.median(|d[d != 0]|)`` per plane of ``d (B, C, h, w)`` -> ``(B, C)``."""
    a = d.abs().flatten(-2)
    a = torch.where(a == 0, torch.full_like(a, float("nan")), a)
    med = torch.nanquantile(a, 0.5, dim=-1)
    return torch.nan_to_num(med, nan=0.0)  # an all-zero band: no noise


def estimate_sigma(x: Tensor, wavelet: WaveletLike = "db2") -> Tensor:
    """Noise standard deviation per plane from the finest diagonal band (Donoho's MAD).

    ``median(|cD_1|) / 0.6745`` over the non-zero coefficients of one ``wavelet`` level
    (symmetric mode), as ``skimage.restoration.estimate_sigma`` (which uses ``db2``).
    Shapes: ``(H, W)`` -> ``()``, ``(C, H, W)`` -> ``(C,)``, ``(B, C, H, W)`` -> ``(B, C)``.
    """
    check_floating(x)
    x4, _ = as_bchw(x)
    cD = wavedec2(x4, wavelet, level=1, mode="symmetric")[1][2]
    s = _median_nonzero_abs(cD) / _MAD_TO_SIGMA
    return s.reshape(x.shape[:-2])


def _threshold(d: Tensor, t: Tensor, mode: str) -> Tensor:
    t = t[..., None, None]
    if mode == "soft":
        return torch.sign(d) * torch.clamp(d.abs() - t, min=0)
    return d * (d.abs() >= t)


def wavelet_denoise(x: Tensor, wavelet: WaveletLike = "db4", method: str = "BayesShrink",
                    mode: str = "soft", noise_std: float | Tensor | None = None,
                    level: int | None = None) -> Tensor:
    """Wavelet shrinkage denoising, equal to ``skimage.restoration.denoise_wavelet``.

    Every ``(H, W)`` plane of ``x`` (``(H, W)``, ``(C, H, W)`` or ``(B, C, H, W)``) is
    denoised on its own, exactly as scikit-image does for one grey image with
    ``rescale_sigma=False``: ``wavedec2`` in mode ``symmetric`` with ``level`` levels
    (default ``max(dwt_max_level(min(H, W)) - 3, 1)``), the noise ``sigma`` estimated as
    ``median(|cD_1|) / 0.6745`` (non-zero coefficients of the finest diagonal band) unless
    ``noise_std`` is given, detail bands thresholded (``mode`` ``"soft"`` or ``"hard"``)
    with BayesShrink's per-band ``sigma^2 / sqrt(max(var(band) - sigma^2, eps))`` or
    VisuShrink's universal ``sigma * sqrt(2 log(H W))``, and the inverse transform cropped
    to the input size. Differentiable in ``x``.

    >>> x = torch.rand(64, 64)
    >>> wavelet_denoise(x, "db2").shape
    torch.Size([64, 64])
    """
    check_floating(x)
    check_finite(x)
    if method not in _METHODS:
        raise ValueError(f"unknown method {method!r}; valid methods: {', '.join(_METHODS)}")
    if mode not in _THRESH:
        raise ValueError(f"unknown threshold mode {mode!r}; valid modes: {', '.join(_THRESH)}")
    x4, restore = as_bchw(x)
    H, W = x4.shape[-2:]
    F = taps(wavelet, x.dtype, x.device)[0].shape[1]
    if level is None:
        level = max(dwt_max_level(min(H, W), F) - 3, 1)
    coeffs = wavedec2(x4, wavelet, level=level, mode="symmetric")
    if noise_std is None:
        sigma = _median_nonzero_abs(coeffs[-1][2]) / _MAD_TO_SIGMA
    else:
        sigma = torch.as_tensor(noise_std, dtype=x.dtype, device=x.device)
        if (sigma < 0).any():
            raise ValueError("noise_std must be >= 0")
        sigma = sigma.expand(x4.shape[:2]) if sigma.dim() == 0 else sigma.reshape(x4.shape[:2])
    var = sigma * sigma
    eps = torch.finfo(x.dtype).eps
    out = [coeffs[0]]
    for lev in coeffs[1:]:
        bands = []
        for d in lev:
            if method == "BayesShrink":
                dvar = (d * d).mean(dim=(-2, -1))
                t = var / torch.sqrt(torch.clamp(dvar - var, min=eps))
            else:
                t = sigma * math.sqrt(2 * math.log(H * W))
            bands.append(_threshold(d, t, mode))
        out.append(tuple(bands))
    rec = waverec2(out, wavelet, mode="symmetric")[..., :H, :W]
    return restore(rec)


@dataclass
class CompressionResult:
    """Outcome of :func:`wavelet_compress`.

    ``image``: the reconstruction (shape of the input); ``ratio``: input pixels per kept
    coefficient (``1 / keep`` for periodization); ``psnr``: dB over the whole input with
    peak ``data_range``; ``kept`` / ``total``: kept and total coefficients (all planes);
    ``threshold``: smallest kept magnitude per plane ``(B, C)``.
    """

    image: Tensor
    ratio: float
    psnr: float
    kept: int
    total: int
    threshold: Tensor
    data_range: float


def wavelet_compress(x: Tensor, keep: float = 0.05, wavelet: WaveletLike = "db4",
                     level: int | None = None, mode: str = "periodization",
                     data_range: float | None = None) -> CompressionResult:
    """Keep the largest ``keep`` fraction of wavelet coefficients (JPEG 2000's idea).

    Each ``(H, W)`` plane is decomposed with ``wavedec2`` (``level=None``: as deep as
    possible), its ``round(keep * n)`` largest-magnitude coefficients (approximation band
    included) are kept, the rest set to zero, and the plane is reconstructed. Reports the
    achieved ratio and PSNR (peak ``data_range``: 1 for images in [0, 1], else the input's
    max - min). Differentiable in ``x`` through the kept coefficients.

    >>> r = wavelet_compress(torch.rand(1, 1, 64, 64), keep=0.1, wavelet="haar")
    >>> round(r.ratio, 1), r.image.shape
    (10.0, torch.Size([1, 1, 64, 64]))
    """
    check_floating(x)
    check_finite(x)
    if not 0 < keep <= 1:
        raise ValueError(f"keep must be a fraction in (0, 1], got {keep}")
    mode = check_mode(mode)
    x4, restore = as_bchw(x)
    B, C, H, W = x4.shape
    coeffs = wavedec2(x4, wavelet, level=level, mode=mode)
    flat = [coeffs[0].flatten(-2)] + [d.flatten(-2) for lev in coeffs[1:] for d in lev]
    allc = torch.cat(flat, -1)                                      # (B, C, n)
    n = allc.shape[-1]
    k = max(1, min(n, round(keep * n)))
    mag = allc.detach().abs()
    top = torch.topk(mag, k, dim=-1)
    mask = torch.zeros_like(mag, dtype=torch.bool).scatter_(-1, top.indices, True)
    kept_c = allc * mask
    pieces = torch.split(kept_c, [f.shape[-1] for f in flat], dim=-1)
    new = [pieces[0].reshape(coeffs[0].shape)]
    i = 1
    for lev in coeffs[1:]:
        new.append(tuple(pieces[i + j].reshape(lev[j].shape) for j in range(3)))
        i += 3
    rec = waverec2(new, wavelet, mode=mode)[..., :H, :W]
    if data_range is None:
        lo, hi = float(x.min()), float(x.max())
        data_range = 1.0 if (lo >= 0 and hi <= 1) else max(hi - lo, 1e-12)
    mse = float(((rec.detach() - x4.detach()) ** 2).mean())
    psnr = float("inf") if mse == 0 else 10 * math.log10(data_range ** 2 / mse)
    return CompressionResult(
        image=restore(rec), ratio=(H * W) / k, psnr=psnr, kept=k * B * C, total=n * B * C,
        threshold=top.values[..., -1], data_range=float(data_range))
