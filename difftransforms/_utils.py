"""Small shared helpers: shape normalisation and input validation."""

from __future__ import annotations

import operator
from collections.abc import Callable

import torch
from torch import Tensor


def as_bchw(x: Tensor, name: str = "x") -> tuple[Tensor, Callable[[Tensor], Tensor]]:
    """View ``x`` of shape ``(H, W)``, ``(C, H, W)`` or ``(B, C, H, W)`` as ``(B, C, H, W)``.

    Returns the 4-D view and a function that maps a ``(B, C, H', W')`` result back to
    the caller's layout (same number of leading dimensions as ``x``).

    >>> y, restore = as_bchw(torch.zeros(5, 7))
    >>> tuple(y.shape), tuple(restore(y).shape)
    ((1, 1, 5, 7), (5, 7))
    """
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    nd = x.dim()
    if nd == 2:
        return x[None, None], lambda y: y[0, 0]
    if nd == 3:
        return x[None], lambda y: y[0]
    if nd == 4:
        return x, lambda y: y
    raise ValueError(
        f"{name} must have shape (H, W), (C, H, W) or (B, C, H, W); got {tuple(x.shape)}"
    )


def check_floating(x: Tensor, name: str = "x") -> None:
    """Raise a clear ``TypeError`` unless ``x`` is a real floating-point tensor."""
    if not x.is_floating_point():
        raise TypeError(
            f"{name} must be a floating-point tensor (float32 or float64), got {x.dtype}; "
            f"convert with {name}.float()"
        )


def check_finite(x: Tensor, name: str = "x") -> None:
    """Raise ``ValueError`` if ``x`` holds NaN or infinity (one sync; use at API edges)."""
    if not bool(torch.isfinite(x).all()):
        raise ValueError(f"{name} contains NaN or infinite values; clean the input first")


def as_int(v: object) -> int | None:
    """``v`` as an int if it is an integer (Python or NumPy int, 0-d integer tensor), else
    ``None`` (bools and floats too: no silent truncation)."""
    if isinstance(v, bool):
        return None
    try:
        return operator.index(v)  # type: ignore[arg-type]
    except TypeError:
        return None
