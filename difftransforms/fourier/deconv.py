"""Deconvolution by a known point-spread function: Wiener(-Hunt) and Richardson-Lucy."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from ._common import check_image_finite, next_fast_len
from .wiener import estimate_noise_std, noise_std_as_tensor

__all__ = ["psf_transfer", "richardson_lucy", "wiener_deconvolve"]


def _check_psf(psf: Tensor, x4: Tensor, name: str = "psf") -> Tensor:
    """Validate ``psf``: ``(h, w)``, or with leading dims broadcastable to ``x``'s ``(B, C)``."""
    if not isinstance(psf, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(psf).__name__}")
    if not psf.is_floating_point() or psf.is_complex():
        raise TypeError(f"{name} must be a real floating-point tensor, got {psf.dtype}")
    if psf.dim() < 2 or psf.dim() > 4:
        raise ValueError(f"{name} must have shape (h, w), (C, h, w) or (B, C, h, w); "
                         f"got {tuple(psf.shape)}")
    p4 = psf.reshape((1,) * (4 - psf.dim()) + tuple(psf.shape))
    for d in (0, 1):
        if p4.shape[d] not in (1, x4.shape[d]):
            raise ValueError(f"{name} of shape {tuple(psf.shape)} does not broadcast against "
                             f"the image batch/channels {tuple(x4.shape[:2])}")
    if psf.shape[-2] > x4.shape[-2] or psf.shape[-1] > x4.shape[-1]:
        raise ValueError(f"{name} ({psf.shape[-2]}x{psf.shape[-1]}) is larger than the image "
                         f"({x4.shape[-2]}x{x4.shape[-1]}); crop the PSF or pad the image")
    if not bool(torch.isfinite(psf).all()):
        raise ValueError(f"{name} contains NaN or infinite values")
    return p4.to(dtype=x4.dtype, device=x4.device)


def psf_transfer(psf: Tensor, shape: tuple[int, int], onesided: bool = True) -> Tensor:
    """Transfer function (unnormalised ``rfft2``) of ``psf`` on a periodic ``shape`` grid.

    The PSF's centre pixel ``(h // 2, w // 2)`` is moved to the origin, exactly as
    skimage's ``restoration.uft.ir2tf``. Returns ``(..., H, W // 2 + 1)`` (or ``(..., H, W)``
    with ``onesided=False``).

    >>> tf = psf_transfer(torch.ones(3, 3) / 9, (8, 8))
    >>> tf.shape, round(float(tf[0, 0].real), 6)
    (torch.Size([8, 5]), 1.0)
    """
    h, w = psf.shape[-2:]
    big = F.pad(psf, (0, shape[1] - w, 0, shape[0] - h))
    big = torch.roll(big, shifts=(-(h // 2), -(w // 2)), dims=(-2, -1))
    return torch.fft.rfft2(big) if onesided else torch.fft.fft2(big)


def _laplacian_transfer(shape: tuple[int, int], dtype, device) -> Tensor:
    """``|rfft2|`` of skimage's default regulariser, the 3x3 Laplacian, on ``shape``."""
    lap = torch.tensor([[0.0, -1.0, 0.0], [-1.0, 4.0, -1.0], [0.0, -1.0, 0.0]],
                       dtype=dtype, device=device)
    return psf_transfer(lap, shape).real  # even kernel: real transfer function


def _radial_frequency(shape: tuple[int, int], dtype, device) -> Tensor:
    """``|f|`` in cycles per pixel on the ``rfft2`` grid, ``(H, W // 2 + 1)``."""
    fy = torch.fft.fftfreq(shape[0], dtype=dtype, device=device)
    fx = torch.fft.rfftfreq(shape[1], dtype=dtype, device=device)
    return torch.sqrt(fy[:, None] ** 2 + fx[None, :] ** 2)


def _power_law_spectrum(y_power: Tensor, h2: Tensor, noise_power: Tensor,
                        shape: tuple[int, int]) -> Tensor:
    """Maximum-likelihood fit of a power-law clean spectrum ``S(f) = A |f|^-alpha``.

    Under the Gaussian model ``Y(f) ~ CN(0, |H(f)|^2 S(f) + N sigma^2)`` (independent
    frequencies), the negative log-likelihood
    ``sum_f log v_f + |Y_f|^2 / v_f`` with ``v_f = |H_f|^2 A |f|^-alpha + N sigma^2`` is
    minimised over ``alpha`` (grid 1..4, refined by a parabola) and ``log A`` (bisection on
    the derivative) for each image plane, on a subsampled set of about 16k frequency bins.
    This is the "empirical Bayes" choice of the Wiener prior; the DC term is kept from the data.
    Returns ``S`` on the ``rfft2`` grid, ``(B, C, H, W // 2 + 1)``.
    """
    dt = torch.float64
    f = _radial_frequency(shape, dt, y_power.device)
    logf = torch.log(f.clamp_min(1.0 / max(shape)))
    # rfft half-plane: interior columns stand for two bins; skip DC; subsample by 2
    wgt = torch.ones_like(f)
    wgt[:, 1:(shape[1] + 1) // 2] = 2.0
    wgt[0, 0] = 0.0
    step = max(1, round(math.sqrt(f.numel() / 16384)))  # about 16k bins are plenty
    sub = (slice(None, None, step), slice(None, None, step))
    wgt, logf_s = wgt[sub].reshape(-1), logf[sub].reshape(-1)
    alphas = torch.linspace(1.0, 4.0, 16, dtype=dt, device=y_power.device)
    b, c = y_power.shape[:2]
    h2 = h2.to(dt).expand(b, c, *h2.shape[-2:])
    out = torch.empty(b, c, dtype=dt, device=y_power.device), \
        torch.empty(b, c, dtype=dt, device=y_power.device)
    for i in range(b):
        for j in range(c):
            p = y_power[i, j].to(dt)[sub].reshape(-1)
            hh = h2[i, j][sub].reshape(-1)
            n = noise_power[i, j].to(dt).clamp_min(1e-30)
            base = hh[None, :] * torch.exp(-alphas[:, None] * logf_s[None, :])  # (A, F)

            def nll(t: Tensor, base=base, p=p, n=n) -> Tensor:
                v = base * torch.exp(t)[:, None] + n
                return (wgt * (torch.log(v) + p / v)).sum(-1)

            t0 = torch.log(p.mean() / base.mean(-1))
            lo, hi = t0 - 40.0, t0 + 40.0
            for _ in range(32):  # bisection on d nll / d log A
                t = 0.5 * (lo + hi)
                u = base * torch.exp(t)[:, None]
                v = u + n
                grad = (wgt * u * (v - p) / (v * v)).sum(-1)
                pos = grad > 0
                hi = torch.where(pos, t, hi)
                lo = torch.where(pos, lo, t)
            t = 0.5 * (lo + hi)
            vals = nll(t)
            k = int(vals.argmin())
            alpha, logamp = alphas[k], t[k]
            if 0 < k < len(alphas) - 1:  # parabolic refinement of alpha
                y0, y1, y2 = vals[k - 1], vals[k], vals[k + 1]
                den = y0 - 2 * y1 + y2
                if float(den) > 0:
                    step = 0.5 * (y0 - y2) / den
                    alpha = alpha + step.clamp(-1, 1) * (alphas[1] - alphas[0])
                    logamp = t[k] + step.clamp(-1, 1) * 0.5 * (t[k + 1] - t[k - 1])
            out[0][i, j], out[1][i, j] = alpha, logamp
    alpha, logamp = out
    spec = torch.exp(logamp[..., None, None] - alpha[..., None, None] * logf)
    # the DC term is the image mean, which the data determine well: keep it
    dc = (y_power[..., 0, 0].to(dt) - noise_power.to(dt)).clamp_min(0)
    dc = dc / h2[..., 0, 0].clamp_min(1e-12)
    spec[..., 0, 0] = torch.maximum(spec[..., 0, 0], dc)
    return spec.to(y_power.dtype)


def wiener_deconvolve(x: Tensor, psf: Tensor, noise_std: float | Tensor | None = None,
                      balance: float | None = None, clip: bool = False) -> Tensor:
    """Wiener deconvolution of ``x`` blurred by a known ``psf`` (periodic boundaries).

    Two regularisations:

    - ``balance`` given: Wiener-Hunt with a Laplacian prior, **identical** to
      ``skimage.restoration.wiener(image, psf, balance, clip=False)``:
      ``X = conj(H) Y / (|H|^2 + balance |L|^2)``, with ``H`` the PSF's transfer function
      (centre ``(h // 2, w // 2)`` at the origin) and ``L`` the 3x3 Laplacian's;
    - otherwise a Wiener filter ``conj(H) S / (|H|^2 S + N sigma^2)`` whose clean-signal
      spectrum ``S(f) = A |f|^-alpha`` (the power law of natural images) is fitted to the
      data by maximum likelihood, and whose noise level ``sigma`` is ``noise_std`` or,
      when ``None``, :func:`estimate_noise_std` of ``x``.

    The blur model is circular (the image is treated as periodic), like skimage's.

    Args:
        x: blurred image ``(H, W)``, ``(C, H, W)`` or ``(B, C, H, W)``.
        psf: ``(h, w)`` point-spread function (or with leading dims broadcastable to
            ``x``'s), no larger than the image; normalise it to sum to one.
        noise_std: noise standard deviation, a number or a tensor broadcastable to ``(B, C)``.
        balance: Laplacian regularisation weight (takes precedence over ``noise_std``).
        clip: clip the result to ``[-1, 1]`` (skimage's ``clip=True``).

    Returns:
        Deconvolved image, same shape as ``x``; differentiable in ``x`` and ``psf`` (the
        spectrum and noise level estimated from the data are constants for autograd).

    >>> from difftransforms.fourier import gaussian_blur, gaussian_psf
    >>> x = torch.rand(32, 32, dtype=torch.float64)
    >>> y = gaussian_blur(x, 0.8, padding="periodic")  # radius int(4 * 0.8 + 0.5) = 3
    >>> z = wiener_deconvolve(y, gaussian_psf(0.8, 7, dtype=torch.float64), balance=1e-12)
    >>> bool((z - x).abs().max() < 1e-4)
    True
    """
    x4, restore = check_image_finite(x)
    p4 = _check_psf(psf, x4)
    shape = (x4.shape[-2], x4.shape[-1])
    tf = psf_transfer(p4, shape)
    y = torch.fft.rfft2(x4)
    if balance is not None:
        if isinstance(balance, Tensor):
            balance = balance.to(dtype=x4.dtype, device=x4.device)
        elif isinstance(balance, bool) or not isinstance(balance, (int, float)):
            raise TypeError(f"balance must be a number, got {type(balance).__name__}")
        if not (float(balance) >= 0 and math.isfinite(float(balance))):
            raise ValueError(f"balance must be a finite number >= 0, got {balance}")
        reg = _laplacian_transfer(shape, x4.dtype, x4.device)
        gain = tf.conj() / (tf.real ** 2 + tf.imag ** 2 + balance * reg ** 2)
    else:
        if noise_std is None:
            sigma = estimate_noise_std(x4)
        else:
            sigma = noise_std_as_tensor(noise_std, x4)
        npix = shape[0] * shape[1]
        noise_power = npix * sigma ** 2  # E|FFT(n)|^2 for white noise (unnormalised FFT)
        h2 = tf.real ** 2 + tf.imag ** 2
        spec = _power_law_spectrum((y.real ** 2 + y.imag ** 2).detach(), h2.detach(),
                                   noise_power.detach(), shape)
        gain = tf.conj() * spec / (h2 * spec + noise_power[..., None, None].clamp_min(1e-30))
    out = torch.fft.irfft2(gain * y, s=shape)
    if clip:
        out = out.clamp(-1.0, 1.0)
    return restore(out)


def _conv_same(x: Tensor, psf: Tensor, psf_ft: Tensor | None, fft_shape) -> Tensor:
    """``scipy.signal.convolve(x, psf, mode='same')`` (zero boundaries) on ``(B, C, H, W)``."""
    kh, kw = psf.shape[-2:]
    h, w = x.shape[-2:]
    if psf_ft is None:  # small PSF: direct depthwise convolution
        b, c = x.shape[:2]
        pad = (kw // 2, (kw - 1) // 2, kh // 2, (kh - 1) // 2)
        weight = psf.flip((-2, -1)).expand(b, c, kh, kw).reshape(b * c, 1, kh, kw)
        out = F.conv2d(F.pad(x, pad).reshape(1, b * c, h + kh - 1, w + kw - 1), weight,
                       groups=b * c)
        return out.reshape(b, c, h, w)
    full = torch.fft.irfft2(torch.fft.rfft2(x, s=fft_shape) * psf_ft, s=fft_shape)
    oy, ox = (kh - 1) // 2, (kw - 1) // 2
    return full[..., oy:oy + h, ox:ox + w]


def richardson_lucy(x: Tensor, psf: Tensor, steps: int = 30, clip: bool = True, *,
                    filter_epsilon: float | None = None) -> Tensor:
    """Richardson-Lucy deconvolution, matching ``skimage.restoration.richardson_lucy``.

    Starts from a constant 0.5 image and iterates
    ``u <- u * conv(x / (conv(u, psf) + 1e-12), flip(psf))`` ``steps`` times, with
    zero-padded "same" convolutions (``scipy.signal.convolve(mode='same')``, as skimage).
    Small PSFs use a direct convolution, larger ones the FFT (computed once).

    Args:
        x: blurred non-negative image ``(H, W)``, ``(C, H, W)`` or ``(B, C, H, W)``.
        psf: ``(h, w)`` point-spread function (or with leading dims broadcastable to ``x``).
        steps: number of iterations (skimage's ``num_iter``; acts as regularisation).
        clip: clip the result to ``[-1, 1]`` (skimage's default).
        filter_epsilon: ratios where the reblurred estimate is below this value are set to 0.

    Returns:
        The deconvolved image, same shape as ``x``; differentiable in ``x``.

    >>> from difftransforms.fourier import gaussian_psf
    >>> psf = gaussian_psf(1.0, 7, dtype=torch.float64)
    >>> richardson_lucy(torch.rand(16, 16, dtype=torch.float64), psf, steps=5).shape
    torch.Size([16, 16])
    """
    x4, restore = check_image_finite(x)
    p4 = _check_psf(psf, x4)
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
        raise ValueError(f"steps must be a non-negative int, got {steps!r}")
    kh, kw = p4.shape[-2:]
    h, w = x4.shape[-2:]
    use_fft = kh * kw > 49
    fwd_ft = bwd_ft = None
    fft_shape = (next_fast_len(h + kh - 1), next_fast_len(w + kw - 1))
    mirror = p4.flip((-2, -1))
    if use_fft:
        fwd_ft = torch.fft.rfft2(p4, s=fft_shape)
        bwd_ft = torch.fft.rfft2(mirror, s=fft_shape)
    est = torch.full_like(x4, 0.5)
    for _ in range(steps):
        conv = _conv_same(est, p4, fwd_ft, fft_shape) + 1e-12
        if filter_epsilon:
            rel = torch.where(conv < filter_epsilon, torch.zeros_like(conv), x4 / conv)
        else:
            rel = x4 / conv
        est = est * _conv_same(rel, mirror, bwd_ft, fft_shape)
    if clip:
        est = est.clamp(-1.0, 1.0)
    return restore(est)
