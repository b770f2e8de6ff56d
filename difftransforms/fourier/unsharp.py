"""Unsharp masking: ``x + amount * (x - gaussian_blur(x, sigma))``."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ._common import check_image, check_padding
from .gaussian import GaussianBlur, gaussian_blur

__all__ = ["UnsharpMask", "unsharp_mask"]


def _amount(amount: float | Tensor, x4: Tensor) -> Tensor | float:
    if isinstance(amount, Tensor):
        if amount.dim() == 1 and amount.numel() == x4.shape[0] and x4.shape[0] > 1:
            return amount.to(dtype=x4.dtype, device=x4.device).view(-1, 1, 1, 1)
        if amount.numel() != 1:
            raise ValueError(f"amount must be a scalar or one value per batch item, "
                             f"got shape {tuple(amount.shape)}")
        return amount.to(dtype=x4.dtype, device=x4.device).reshape(())
    if isinstance(amount, bool) or not isinstance(amount, (int, float)):
        raise TypeError(f"amount must be a number or a tensor, got {type(amount).__name__}")
    return float(amount)


def unsharp_mask(x: Tensor, sigma: float | tuple[float, float] | Tensor,
                 amount: float | Tensor = 1.0, padding: str = "reflect") -> Tensor:
    """Sharpen: ``x + amount * (x - gaussian_blur(x, sigma, padding))`` (skimage's formula).

    Args:
        x: image ``(H, W)``, ``(C, H, W)`` or ``(B, C, H, W)``.
        sigma: blur standard deviation (see :func:`gaussian_blur`); differentiable if a tensor.
        amount: strength (a number, a 0-d tensor, or a ``(B,)`` tensor); differentiable.
        padding: ``"reflect"`` or ``"periodic"``.

    The result is not clipped.

    >>> x = torch.zeros(7, 7); x[3, 3] = 1
    >>> y = unsharp_mask(x, 1.0, amount=2.0)
    >>> round(float(y.sum()), 5), bool(y[3, 3] > 1)
    (1.0, True)
    """
    x4, restore = check_image(x)
    padding = check_padding(padding)
    a = _amount(amount, x4)
    return restore(x4 + a * (x4 - gaussian_blur(x4, sigma, padding)))


class UnsharpMask(nn.Module):
    """Module form of :func:`unsharp_mask`.

    Args:
        sigma: blur standard deviation or ``(sigma_y, sigma_x)``.
        amount: sharpening strength.
        padding: ``"reflect"`` or ``"periodic"``.
        learnable: if True, ``sigma`` (log-parametrised) and ``amount`` are ``nn.Parameter``.

    >>> m = UnsharpMask(1.5, 0.8, learnable=True)
    >>> m(torch.rand(1, 3, 16, 16)).sum().backward()
    >>> m.amount.grad is not None and m.blur.log_sigma.grad is not None
    True
    """

    def __init__(self, sigma: float | tuple[float, float], amount: float = 1.0,
                 padding: str = "reflect", learnable: bool = False) -> None:
        super().__init__()
        self.blur = GaussianBlur(sigma, padding=padding, learnable=learnable)
        if isinstance(amount, bool) or not isinstance(amount, (int, float)):
            raise TypeError(f"amount must be a number, got {type(amount).__name__}")
        self.learnable = bool(learnable)
        if self.learnable:
            self.amount = nn.Parameter(torch.tensor(float(amount)))
        else:
            self.amount = float(amount)

    def forward(self, x: Tensor) -> Tensor:
        x4, restore = check_image(x)
        a = self.amount.to(x4.dtype) if isinstance(self.amount, Tensor) else self.amount
        return restore(x4 + a * (x4 - self.blur(x4)))

    def extra_repr(self) -> str:
        return f"amount={float(self.amount):.4g}, learnable={self.learnable}"
