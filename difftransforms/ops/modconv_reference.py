"""Pure-PyTorch reference for the scattering hot step (the custom ops' ground truth).

The step, per scattering order: multiply the spectrum of a real signal by a bank of
real Fourier-domain wavelet filters, fold (periodize) the product down to the
subsampled size ``(H/k, W/k)``, inverse FFT (done by the caller), modulus.

Conventions (shared by the C++/CUDA ops in ``kernels/``):

- ``xhat``: ``(N, H, W//2 + 1)`` complex, ``torch.fft.rfft2`` of a real ``(N, H, W)`` signal
  (the half spectrum; the other half follows from Hermitian symmetry
  ``X[-u, -v] = conj(X[u, v])``).
- ``filters``: ``(F, H, W)`` real, the full Fourier-domain filters (Morlet spectra are real).
- ``k``: fold factor (``2**j``), must divide ``H`` and ``W``.
- result: ``(N, F, H//k, W//k)`` complex,
  ``out[n, f, u, v] = mean_{a,b<k} filters[f, u + aH/k, v + bW/k] * X[n, u + aH/k, v + bW/k]``
  so that ``ifft2(out)`` is ``(filter * x)`` sampled every ``k`` pixels.
"""

from __future__ import annotations

import torch
from torch import Tensor


def full_spectrum(xhat: Tensor, width: int) -> Tensor:
    """Rebuild the full ``(..., H, W)`` spectrum from an rfft2 half spectrum
    ``(..., H, W//2+1)``."""
    H = xhat.shape[-2]
    wr = xhat.shape[-1]
    if wr != width // 2 + 1:
        raise ValueError(
            f"half spectrum has {wr} columns; expected width // 2 + 1 = {width // 2 + 1}"
        )
    n_missing = width - wr  # columns v = wr .. width-1, mirrored from width - v
    if n_missing == 0:
        return xhat
    cols = torch.arange(wr, width, device=xhat.device)
    src_cols = width - cols  # in 1 .. width - wr
    rows = (-torch.arange(H, device=xhat.device)) % H
    mirrored = xhat[..., rows, :][..., src_cols].conj()
    return torch.cat([xhat, mirrored], dim=-1)


def filter_fold_reference(xhat: Tensor, filters: Tensor, width: int, k: int) -> Tensor:
    """Reference ``(N, H, W//2+1) x (F, H, W) -> (N, F, H//k, W//k)`` multiply-and-fold.

    Materialises the full-resolution product (``N*F*H*W`` complex values): that is
    exactly the memory the custom ops avoid.
    """
    full = full_spectrum(xhat, width)
    N, H, W = full.shape
    F = filters.shape[0]
    if filters.shape[-2:] != (H, W):
        raise ValueError(
            f"filters have spatial shape {tuple(filters.shape[-2:])}, expected {(H, W)}"
        )
    if H % k or W % k:
        raise ValueError(f"fold factor k={k} must divide the spectrum size {(H, W)}")
    prod = full[:, None] * filters[None].to(full.dtype)
    return prod.reshape(N, F, k, H // k, k, W // k).mean(dim=(2, 4))


def modulus_reference(z: Tensor) -> Tensor:
    """``|z|`` of a complex tensor; its gradient is ``z/|z|``, and 0 where ``z == 0``."""
    return torch.abs(z)
