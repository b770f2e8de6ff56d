"""Wavelet filter banks: PyWavelets' discrete wavelets and learnable user filters."""

from __future__ import annotations

from functools import lru_cache
from typing import Union

import numpy as np
import pywt
import torch
from torch import Tensor, nn

__all__ = ["Wavelet", "wavelist", "WaveletLike"]


def wavelist() -> list[str]:
    """Names of every discrete wavelet PyWavelets knows (``pywt.wavelist(kind='discrete')``)."""
    return list(pywt.wavelist(kind="discrete"))


@lru_cache(maxsize=256)
def _named_bank(name: str) -> np.ndarray:
    """``(4, F)`` float64 array ``[dec_lo, dec_hi, rec_lo, rec_hi]`` of a PyWavelets wavelet."""
    if name not in pywt.wavelist(kind="discrete"):
        fams = ", ".join(pywt.families(short=True)[:7])
        hint = ""
        if name in pywt.wavelist(kind="continuous"):
            hint = f" ({name!r} is a continuous wavelet; the DWT needs a discrete one)"
        raise ValueError(
            f"unknown wavelet {name!r}{hint}; valid names are those of "
            f"pywt.wavelist(kind='discrete'), e.g. haar, db1-db38, sym2-sym20, coif1-coif17, "
            f"bior1.1-bior6.8, rbio1.1-rbio6.8, dmey (families: {fams}, ...)"
        )
    bank = np.asarray(pywt.Wavelet(name).filter_bank, dtype=np.float64)
    bank.setflags(write=False)
    return bank


def _bank_from_pywt(w: pywt.Wavelet) -> np.ndarray:
    return np.asarray(w.filter_bank, dtype=np.float64)


class Wavelet(nn.Module):
    """A two-channel filter bank ``(dec_lo, dec_hi, rec_lo, rec_hi)``, PyWavelets' convention.

    ``Wavelet("db4")`` holds PyWavelets' filters as buffers (moved by ``.to()``).
    ``Wavelet(dec_lo=..., dec_hi=..., rec_lo=..., rec_hi=...)`` uses the given tensors as
    they are, so they can be ``nn.Parameter``\\s: gradients flow into them (learnable
    wavelets). ``Wavelet.orthogonal(lowpass)`` builds the other three filters of an
    orthogonal bank from one (possibly learnable) low-pass filter.

    Filters must have the same even length (pad odd ones with a zero, as PyWavelets does).

    >>> w = Wavelet("db2")
    >>> w.dec_len, w.name
    (4, 'db2')
    >>> lo = nn.Parameter(torch.tensor([0.5, 0.5]) * 2 ** 0.5)
    >>> Wavelet.orthogonal(lo).filter_bank()[1]  # dec_hi of the learnable Haar
    tensor([-0.7071,  0.7071], grad_fn=<FlipBackward0>)
    """

    def __init__(self, name: str | None = None, *, dec_lo: Tensor | None = None,
                 dec_hi: Tensor | None = None, rec_lo: Tensor | None = None,
                 rec_hi: Tensor | None = None) -> None:
        super().__init__()
        given = [dec_lo, dec_hi, rec_lo, rec_hi]
        self._builder = None
        if name is not None:
            if any(g is not None for g in given):
                raise ValueError("give either a wavelet name or the four filters, not both")
            bank = torch.from_numpy(_named_bank(name).copy())
            for key, f in zip(("dec_lo", "dec_hi", "rec_lo", "rec_hi"), bank, strict=True):
                self.register_buffer(key, f.clone())
            self.name = name
            self.learnable = False
            return
        if any(g is None for g in given):
            raise ValueError("a custom Wavelet needs all four filters dec_lo, dec_hi, rec_lo, "
                             "rec_hi (or use Wavelet.orthogonal(lowpass))")
        lens = {int(g.numel()) for g in given}  # type: ignore[union-attr]
        if len(lens) != 1 or any(g.dim() != 1 for g in given):  # type: ignore[union-attr]
            raise ValueError("the four filters must be 1-D tensors of equal length, got "
                             f"shapes {[tuple(g.shape) for g in given]}")  # type: ignore[union-attr]
        if lens.pop() % 2:
            raise ValueError("filters must have even length; pad with one zero at the end "
                             "(PyWavelets' convention)")
        for key, f in zip(("dec_lo", "dec_hi", "rec_lo", "rec_hi"), given, strict=True):
            if isinstance(f, nn.Parameter):
                self.register_parameter(key, f)
            else:
                self.register_buffer(key, f)
        self.name = "custom"
        self.learnable = any(g.requires_grad for g in given)  # type: ignore[union-attr]

    @classmethod
    def orthogonal(cls, lowpass: Tensor) -> Wavelet:
        """Orthogonal bank from a low-pass filter ``h`` (an ``nn.Parameter`` stays learnable).

        ``dec_lo = h``, ``rec_lo = h[::-1]``, ``rec_hi[k] = (-1)^k h[k]``,
        ``dec_hi = rec_hi[::-1]`` (PyWavelets' convention for Daubechies filters).
        """
        w = cls.__new__(cls)
        nn.Module.__init__(w)
        if lowpass.dim() != 1 or lowpass.numel() % 2:
            raise ValueError("the low-pass filter must be a 1-D tensor of even length")
        if isinstance(lowpass, nn.Parameter):
            w.register_parameter("lowpass", lowpass)
        else:
            w.register_buffer("lowpass", lowpass)
        w.name = "orthogonal"
        w.learnable = lowpass.requires_grad
        w._builder = "orthogonal"
        return w

    @property
    def dec_len(self) -> int:
        return int(self.filter_bank()[0].numel())

    def filter_bank(self) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """``(dec_lo, dec_hi, rec_lo, rec_hi)``, rebuilt on each call (learnable-safe)."""
        if self._builder == "orthogonal":
            h = self.lowpass
            sign = torch.ones_like(h)
            sign[1::2] = -1
            rec_hi = h * sign
            return h, rec_hi.flip(0), h.flip(0), rec_hi
        return self.dec_lo, self.dec_hi, self.rec_lo, self.rec_hi

    def extra_repr(self) -> str:
        return f"name={self.name!r}, dec_len={self.dec_len}, learnable={self.learnable}"


WaveletLike = Union[str, pywt.Wavelet, Wavelet]  # noqa: UP007 (runtime alias, py3.10)


@lru_cache(maxsize=512)
def _cached_taps(name: str, dtype: torch.dtype, device: torch.device) -> tuple[Tensor, Tensor]:
    bank = _named_bank(name)
    dec = torch.tensor(np.ascontiguousarray(bank[:2, ::-1]), dtype=dtype, device=device)
    rec = torch.tensor(np.ascontiguousarray(bank[2:]), dtype=dtype, device=device)
    return dec, rec


def taps(wavelet: WaveletLike, dtype: torch.dtype, device: torch.device
         ) -> tuple[Tensor, Tensor, str, bool]:
    """``(dec_taps (2, F), rec_taps (2, F), name, needs_grad)`` for the plan formulation.

    ``dec_taps = [dec_lo[::-1], dec_hi[::-1]]`` (correlation taps), ``rec_taps =
    [rec_lo, rec_hi]`` (convolution taps).
    """
    if isinstance(wavelet, str):
        dec, rec = _cached_taps(wavelet, dtype, torch.device(device))
        return dec, rec, wavelet, False
    if isinstance(wavelet, pywt.Wavelet):
        if wavelet.name in pywt.wavelist(kind="discrete") and np.array_equal(
                _bank_from_pywt(wavelet), _named_bank(wavelet.name)):
            dec, rec = _cached_taps(wavelet.name, dtype, torch.device(device))
            return dec, rec, wavelet.name, False
        bank = torch.tensor(_bank_from_pywt(wavelet), dtype=dtype, device=device)
        if bank.shape[1] % 2:
            raise ValueError("filters must have even length")
        return bank[:2].flip(-1).contiguous(), bank[2:].contiguous(), wavelet.name, False
    if isinstance(wavelet, Wavelet):
        dl, dh, rl, rh = (f.to(dtype=dtype, device=device) for f in wavelet.filter_bank())
        dec = torch.stack([dl.flip(0), dh.flip(0)])
        rec = torch.stack([rl, rh])
        return dec, rec, wavelet.name, bool(dec.requires_grad or rec.requires_grad)
    raise TypeError("wavelet must be a name (str), a pywt.Wavelet or a "
                    f"difftransforms.wavelets.Wavelet, got {type(wavelet).__name__}")
