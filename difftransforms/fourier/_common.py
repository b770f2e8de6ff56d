"""Private helpers shared by the Fourier filters: validation, boundary indices, FFT sizes."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .._utils import as_bchw, check_finite, check_floating

PADDINGS = ("reflect", "periodic")


def check_image(x: Tensor, name: str = "x") -> tuple[Tensor, object]:
    """Validate a real float image and view it as ``(B, C, H, W)``."""
    x4, restore = as_bchw(x, name)
    check_floating(x4, name)
    if x4.dtype not in (torch.float32, torch.float64):
        raise TypeError(f"{name} must be float32 or float64, got {x4.dtype}; "
                        f"convert with {name}.float()")
    if x4.shape[-1] < 1 or x4.shape[-2] < 1:
        raise ValueError(f"{name} must have a non-empty spatial size, got {tuple(x.shape)}")
    return x4, restore


def check_image_finite(x: Tensor, name: str = "x") -> tuple[Tensor, object]:
    """:func:`check_image` plus a NaN/inf check (one device sync)."""
    x4, restore = check_image(x, name)
    check_finite(x4, name)
    return x4, restore


def check_padding(padding: str) -> str:
    if not isinstance(padding, str) or padding not in PADDINGS:
        raise ValueError(
            f"unknown padding {padding!r}; valid choices are "
            + ", ".join(repr(p) for p in PADDINGS)
        )
    return padding


def extension_index(n: int, before: int, after: int, padding: str, device) -> Tensor:
    """Indices into a length-``n`` axis extended by ``before``/``after`` samples.

    ``"reflect"`` is the half-sample symmetric extension of scipy.ndimage's ``mode='reflect'``
    (``d c b a | a b c d | d c b a``), repeated as often as needed (period ``2n``);
    ``"periodic"`` wraps around (period ``n``), like ``mode='wrap'``.
    """
    i = torch.arange(-before, n + after, device=device)
    if padding == "periodic":
        return torch.remainder(i, n)
    m = torch.remainder(i, 2 * n)
    return torch.where(m >= n, 2 * n - 1 - m, m)


def extend(x: Tensor, pads: tuple[int, int, int, int], padding: str) -> Tensor:
    """Extend the last two axes of ``x`` by ``(top, bottom, left, right)`` samples."""
    top, bottom, left, right = pads
    h, w = x.shape[-2:]
    if top or bottom:
        x = _extend_axis(x, -2, h, top, bottom, padding)
    if left or right:
        x = _extend_axis(x, -1, w, left, right, padding)
    return x


def _extend_axis(x: Tensor, dim: int, n: int, before: int, after: int, padding: str) -> Tensor:
    if before > n or after > n:  # several reflections / wraps: gather
        return x.index_select(dim, extension_index(n, before, after, padding, x.device))
    parts = []
    if padding == "periodic":
        if before:
            parts.append(x.narrow(dim, n - before, before))
        parts.append(x)
        if after:
            parts.append(x.narrow(dim, 0, after))
    else:
        if before:
            parts.append(x.narrow(dim, 0, before).flip(dim))
        parts.append(x)
        if after:
            parts.append(x.narrow(dim, n - after, after).flip(dim))
    return torch.cat(parts, dim)


def next_fast_len(n: int) -> int:
    """Smallest 5-smooth integer ``>= n`` (sizes the FFT libraries handle fastest)."""
    if n <= 6:
        return max(n, 1)
    best = 2 ** math.ceil(math.log2(n))
    p5 = 1
    while p5 < best:
        p35 = p5
        while p35 < best:
            # smallest power of two times p35 that is >= n
            q = -(-n // p35)
            p2 = 2 ** (q - 1).bit_length()
            cand = p2 * p35
            if cand < best:
                best = cand
            p35 *= 3
        p5 *= 5
    return best


def real_dtype(x: Tensor) -> torch.dtype:
    return x.dtype if x.dtype in (torch.float32, torch.float64) else torch.float32
