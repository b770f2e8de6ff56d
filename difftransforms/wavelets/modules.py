"""``nn.Module`` wrappers: :class:`DWT2`, :class:`IDWT2`, :class:`DWT`, :class:`IDWT`."""

from __future__ import annotations

from collections.abc import Sequence

import pywt
from torch import Tensor, nn

from ._filters import Wavelet, WaveletLike
from ._plans import check_mode
from .transform import wavedec, wavedec2, waverec, waverec2

__all__ = ["DWT2", "IDWT2", "DWT", "IDWT"]


def _as_module(wavelet: WaveletLike) -> Wavelet:
    if isinstance(wavelet, Wavelet):
        return wavelet
    if isinstance(wavelet, pywt.Wavelet):
        import torch

        bank = [torch.tensor(f, dtype=torch.float64) for f in wavelet.filter_bank]
        return Wavelet(dec_lo=bank[0], dec_hi=bank[1], rec_lo=bank[2], rec_hi=bank[3])
    return Wavelet(wavelet)


class DWT2(nn.Module):
    """Multilevel 2-D DWT module: ``x (..., H, W)`` -> ``[cA_n, (cH_n, cV_n, cD_n), ...]``.

    The filter bank is a submodule (buffers for named wavelets, parameters for a learnable
    :class:`Wavelet`), so ``.to()`` moves it and learnable filters get gradients.

    >>> import torch
    >>> c = DWT2("db2", level=2)(torch.rand(4, 3, 32, 32))
    >>> len(c), tuple(c[0].shape)
    (3, (4, 3, 10, 10))
    """

    def __init__(self, wavelet: WaveletLike = "db1", level: int | None = 1,
                 mode: str = "symmetric", axes: Sequence[int] = (-2, -1)) -> None:
        super().__init__()
        self.wavelet = _as_module(wavelet)
        self.level = level
        self.mode = check_mode(mode)
        self.axes = tuple(axes)

    def forward(self, x: Tensor) -> list:
        return wavedec2(x, self.wavelet, level=self.level, mode=self.mode, axes=self.axes)

    def extra_repr(self) -> str:
        return f"level={self.level}, mode={self.mode!r}, axes={self.axes}"


class IDWT2(nn.Module):
    """Inverse of :class:`DWT2`: coefficient list -> ``(..., H', W')``."""

    def __init__(self, wavelet: WaveletLike = "db1", mode: str = "symmetric",
                 axes: Sequence[int] = (-2, -1)) -> None:
        super().__init__()
        self.wavelet = _as_module(wavelet)
        self.mode = check_mode(mode)
        self.axes = tuple(axes)

    def forward(self, coeffs: Sequence) -> Tensor:
        return waverec2(coeffs, self.wavelet, mode=self.mode, axes=self.axes)

    def extra_repr(self) -> str:
        return f"mode={self.mode!r}, axes={self.axes}"


class DWT(nn.Module):
    """Multilevel 1-D DWT module along ``axis``: ``[cA_n, cD_n, ..., cD_1]``."""

    def __init__(self, wavelet: WaveletLike = "db1", level: int | None = 1,
                 mode: str = "symmetric", axis: int = -1) -> None:
        super().__init__()
        self.wavelet = _as_module(wavelet)
        self.level = level
        self.mode = check_mode(mode)
        self.axis = axis

    def forward(self, x: Tensor) -> list[Tensor]:
        return wavedec(x, self.wavelet, level=self.level, mode=self.mode, axis=self.axis)


class IDWT(nn.Module):
    """Inverse of :class:`DWT`."""

    def __init__(self, wavelet: WaveletLike = "db1", mode: str = "symmetric",
                 axis: int = -1) -> None:
        super().__init__()
        self.wavelet = _as_module(wavelet)
        self.mode = check_mode(mode)
        self.axis = axis

    def forward(self, coeffs: Sequence[Tensor]) -> Tensor:
        return waverec(coeffs, self.wavelet, mode=self.mode, axis=self.axis)
