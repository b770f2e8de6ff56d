"""``rfft2`` with a backward pass half as expensive as PyTorch's.

PyTorch differentiates ``torch.fft.rfft2`` by zero-filling the missing half of the spectrum
and running a full *complex* inverse FFT (``_fft_r2c_backward``), then dropping the
imaginary part. The same gradient is one *real* inverse FFT (``irfft2``) of the half
spectrum with its self-conjugate-free columns halved: ``irfft2`` adds each such column's
Hermitian mirror back, which is the ``Re`` the complex route takes. Half the arithmetic, no
full-size zero tensor. Scattering and random-CNN evaluations call ``rfft2`` on every map,
so this shows in every synthesis step.

>>> import torch
>>> x = torch.randn(2, 6, 5, dtype=torch.float64, requires_grad=True)
>>> g = torch.randn(2, 6, 3, dtype=torch.complex128)
>>> (ours,) = torch.autograd.grad(rfft2(x), x, g)
>>> (theirs,) = torch.autograd.grad(torch.fft.rfft2(x), x, g)
>>> bool(torch.allclose(ours, theirs))
True
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["rfft2", "rfft2_adjoint"]

_TWO_STEP_NUMEL = 2**21


def _column_weights(width: int, like: Tensor) -> Tensor:
    """``(W//2+1,)`` real weights: 1 on the columns that are their own mirror (0, and
    ``W/2`` for even ``W``), ½ on the others."""
    w = torch.full((width // 2 + 1,), 0.5, dtype=like.real.dtype, device=like.device)
    w[0] = 1.0
    if width % 2 == 0:
        w[-1] = 1.0
    return w


class _RFFT2(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:  # type: ignore[override]
        ctx.size = tuple(x.shape[-2:])
        return torch.fft.rfft2(x)

    @staticmethod
    def backward(ctx, g: Tensor) -> Tensor:  # type: ignore[override]
        return rfft2_adjoint(g, ctx.size)


def rfft2_adjoint(g: Tensor, size: tuple[int, int]) -> Tensor:
    """The gradient of ``<g, rfft2(x)>`` (real part of the inner product) in a real ``x``
    of spatial ``size`` ``(H, W)``: the backward pass of :func:`rfft2`, ``(..., H, W)``.
    Differentiable (built from differentiable ops)."""
    H, W = size
    gw = g * _column_weights(W, g)
    if g.numel() < _TWO_STEP_NUMEL:
        return torch.fft.irfft2(gw, s=(H, W), norm="forward")
    # big batches: a complex inverse FFT along H on the half spectrum, then a real one
    # along W, is ~25% faster on CPU than the fused irfft2 (which copies its input)
    return torch.fft.irfft(torch.fft.ifft(gw, dim=-2, norm="forward"), n=W, dim=-1,
                           norm="forward")


def rfft2(x: Tensor, *, out: Tensor | None = None) -> Tensor:
    """``torch.fft.rfft2(x)`` over the last two dimensions of a real ``(..., H, W)`` tensor,
    ``(..., H, W//2+1)`` complex, with the cheaper backward pass described above (same
    values and gradients, any order). ``out`` (written in place, returned) only when no
    gradient is recorded, as for ``torch.fft.rfft2``."""
    if out is not None or not x.requires_grad or x.is_complex():
        return torch.fft.rfft2(x, out=out)
    return _RFFT2.apply(x)
