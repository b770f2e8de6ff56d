"""PyWavelets-exact, differentiable, batched discrete wavelet transforms.

Same calls, coefficient layout and numbers as PyWavelets (``pywt.dwt``, ``wavedec``,
``dwt2``, ``wavedec2`` and their inverses), on tensors with any number of leading
dimensions, on any device, differentiable with respect to the input and (for
:class:`~difftransforms.wavelets.Wavelet` filters that require grad) the filters.

Two implementations give the same results: a fused C++ kernel (CPU, fixed filters, 2-D)
and pure PyTorch (everything else: 1-D, CUDA, learnable filters).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from . import _core
from ._filters import WaveletLike, taps
from ._plans import analysis_plan, check_mode, synthesis_plan

__all__ = [
    "dwt", "idwt", "wavedec", "waverec", "dwt2", "idwt2", "wavedec2", "waverec2",
    "dwt_max_level", "dwt_coeff_len",
]

Coeffs2 = tuple[Tensor, tuple[Tensor, Tensor, Tensor]]


def _check_input(x: Tensor, name: str = "x") -> None:
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point() or x.is_complex():
        raise TypeError(f"{name} must be a real floating-point tensor (float32 or float64), "
                        f"got {x.dtype}; convert with {name}.float()")


def _filter_len(wavelet: WaveletLike | int) -> int:
    if isinstance(wavelet, int):
        return wavelet
    return taps(wavelet, torch.float64, torch.device("cpu"))[0].shape[1]


def dwt_max_level(data_len: int, filter_len: WaveletLike | int) -> int:
    """Deepest useful level, ``floor(log2(data_len / (filter_len - 1)))`` (``pywt.dwt_max_level``).

    >>> dwt_max_level(512, "db2"), dwt_max_level(7, "db4")
    (7, 0)
    """
    F = _filter_len(filter_len)
    if data_len < 1:
        raise ValueError("data_len must be >= 1")
    if F < 2:
        raise ValueError("filter_len must be >= 2")
    if data_len < F - 1:
        return 0
    return int(math.floor(math.log2(data_len / (F - 1))))


def dwt_coeff_len(data_len: int, filter_len: WaveletLike | int, mode: str) -> int:
    """Length of each coefficient array of one level (``pywt.dwt_coeff_len``)."""
    mode = check_mode(mode)
    F = _filter_len(filter_len)
    return (data_len + 1) // 2 if mode == "periodization" else (data_len + F - 1) // 2


def _norm_axis(axis: int, nd: int) -> int:
    if not -nd <= axis < nd:
        raise ValueError(f"axis {axis} is out of range for a tensor with {nd} dimensions")
    return axis % nd


def _norm_axes(axes: Sequence[int], nd: int) -> tuple[int, int]:
    if len(axes) != 2:
        raise ValueError(f"axes must be a pair of dimensions, got {axes!r}")
    if nd < 2:
        raise ValueError(f"a 2-D transform needs at least 2 dimensions, got shape with {nd}")
    a0, a1 = (_norm_axis(a, nd) for a in axes)
    if a0 == a1:
        raise ValueError(f"axes must be two different dimensions, got {tuple(axes)}")
    return a0, a1


def _check_level(level: int | None, sizes: Sequence[int], F: int) -> int:
    max_level = min(dwt_max_level(n, F) for n in sizes)
    if level is None:
        return max_level
    if not isinstance(level, int) or isinstance(level, bool):
        raise TypeError(f"level must be an int or None, got {type(level).__name__}")
    if level < 0 or level > max_level:
        shape = "x".join(str(n) for n in sizes)
        raise ValueError(
            f"level {level} is invalid for size {shape} and filter length {F}: valid levels "
            f"are 0..{max_level} (dwt_max_level); use level=None for the deepest one"
        )
    return level


# ------------------------------------------------------------------------------------ 1-D


def dwt(x: Tensor, wavelet: WaveletLike, mode: str = "symmetric", axis: int = -1
        ) -> tuple[Tensor, Tensor]:
    """Single-level 1-D DWT along ``axis``: ``(cA, cD)`` as ``pywt.dwt``.

    Shapes: ``x (..., N, ...)`` -> two tensors with ``N`` replaced by
    ``dwt_coeff_len(N, F, mode)``.

    >>> x = torch.arange(8.0)
    >>> cA, cD = dwt(x, "haar")
    >>> cA
    tensor([0.7071, 3.5355, 6.3640, 9.1924])
    """
    _check_input(x)
    mode = check_mode(mode)
    ax = _norm_axis(axis, x.dim())
    dec, _, _, _ = taps(wavelet, x.dtype, x.device)
    xt = x.movedim(ax, -1)
    plan = analysis_plan(xt.shape[-1], dec.shape[1], mode)
    a, d = _core.analysis1d(xt, dec, plan)
    return a.movedim(-1, ax), d.movedim(-1, ax)


def idwt(cA: Tensor | None, cD: Tensor | None, wavelet: WaveletLike,
         mode: str = "symmetric", axis: int = -1) -> Tensor:
    """Single-level inverse 1-D DWT (``pywt.idwt``); a ``None`` band counts as zeros."""
    mode = check_mode(mode)
    if cA is None and cD is None:
        raise ValueError("at least one of cA and cD must be given")
    ref = cA if cA is not None else cD
    assert ref is not None
    _check_input(ref, "cA" if cA is not None else "cD")
    if cA is not None and cD is not None and cA.shape != cD.shape:
        raise ValueError(f"cA and cD must have the same shape, got {tuple(cA.shape)} and "
                         f"{tuple(cD.shape)}")
    cA = torch.zeros_like(ref) if cA is None else cA
    cD = torch.zeros_like(ref) if cD is None else cD
    ax = _norm_axis(axis, ref.dim())
    _, rec, _, _ = taps(wavelet, ref.dtype, ref.device)
    a, d = cA.movedim(ax, -1), cD.movedim(ax, -1)
    plan = synthesis_plan(a.shape[-1], rec.shape[1], mode)
    return _core.synthesis1d(a, d, rec, plan).movedim(-1, ax)


def wavedec(x: Tensor, wavelet: WaveletLike, level: int | None = None,
            mode: str = "symmetric", axis: int = -1) -> list[Tensor]:
    """Multilevel 1-D DWT ``[cA_n, cD_n, ..., cD_1]`` (``pywt.wavedec``).

    ``level=None`` is ``dwt_max_level``; deeper levels raise ``ValueError``.
    """
    _check_input(x)
    mode = check_mode(mode)
    ax = _norm_axis(axis, x.dim())
    dec, _, _, _ = taps(wavelet, x.dtype, x.device)
    level = _check_level(level, [x.shape[ax]], dec.shape[1])
    a = x.movedim(ax, -1)
    details = []
    for _ in range(level):
        a, d = _core.analysis1d(a, dec, analysis_plan(a.shape[-1], dec.shape[1], mode))
        details.append(d)
    return [a.movedim(-1, ax)] + [d.movedim(-1, ax) for d in reversed(details)]


def waverec(coeffs: Sequence[Tensor], wavelet: WaveletLike, mode: str = "symmetric",
            axis: int = -1) -> Tensor:
    """Inverse of :func:`wavedec` (``pywt.waverec``)."""
    if not isinstance(coeffs, (list, tuple)) or len(coeffs) == 0:
        raise ValueError("coeffs must be a non-empty list [cA_n, cD_n, ..., cD_1]")
    if len(coeffs) == 1:
        return coeffs[0]
    mode = check_mode(mode)
    a = coeffs[0]
    _check_input(a, "cA")
    ax = _norm_axis(axis, a.dim())
    _, rec, _, _ = taps(wavelet, a.dtype, a.device)
    a = a.movedim(ax, -1)
    for d in coeffs[1:]:
        d = d.movedim(ax, -1)
        if a.shape[-1] == d.shape[-1] + 1:
            a = a[..., :-1]
        if a.shape != d.shape:
            raise ValueError(f"coefficient shapes do not match: {tuple(a.shape)} vs "
                             f"{tuple(d.shape)} (along axis {axis}); pass wavedec's output")
        a = _core.synthesis1d(a, d, rec, synthesis_plan(a.shape[-1], rec.shape[1], mode))
    return a.movedim(-1, ax)


# ------------------------------------------------------------------------------------ 2-D


def _to_mhw(x: Tensor, axes: tuple[int, int]) -> tuple[Tensor, tuple[int, ...]]:
    xt = x.movedim(axes, (-2, -1))
    lead = tuple(xt.shape[:-2])
    return xt.reshape(-1, xt.shape[-2], xt.shape[-1]), lead


def _from_mhw(y: Tensor, lead: tuple[int, ...], axes: tuple[int, int]) -> Tensor:
    return y.reshape(*lead, y.shape[-2], y.shape[-1]).movedim((-2, -1), axes)


def _analysis_level(a: Tensor, dec: Tensor, mode: str, needs_grad: bool
                    ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    F = dec.shape[1]
    ph = analysis_plan(a.shape[-2], F, mode)
    pw = analysis_plan(a.shape[-1], F, mode)
    return _core.analysis2d(a, dec, ph, pw, needs_grad)


def _synthesis_level(a: Tensor | None, d: Sequence[Tensor | None], rec: Tensor, mode: str,
                     needs_grad: bool) -> Tensor:
    bands = [a, *d]
    ref = next(b for b in bands if b is not None)
    full = [b if b is not None else torch.zeros_like(ref) for b in bands]
    F = rec.shape[1]
    ph = synthesis_plan(ref.shape[-2], F, mode)
    pw = synthesis_plan(ref.shape[-1], F, mode)
    return _core.synthesis2d(*full, rec, ph, pw, needs_grad)


def dwt2(x: Tensor, wavelet: WaveletLike, mode: str = "symmetric",
         axes: Sequence[int] = (-2, -1)) -> Coeffs2:
    """Single-level 2-D DWT: ``(cA, (cH, cV, cD))`` as ``pywt.dwt2``.

    Shapes: ``x (..., H, W)`` -> four ``(..., Kh, Kw)`` tensors.
    """
    coeffs = wavedec2(x, wavelet, level=1, mode=mode, axes=axes, _check=False)
    return coeffs[0], coeffs[1]  # type: ignore[return-value]


def idwt2(coeffs: Coeffs2 | Sequence, wavelet: WaveletLike, mode: str = "symmetric",
          axes: Sequence[int] = (-2, -1)) -> Tensor:
    """Single-level inverse 2-D DWT (``pywt.idwt2``); ``None`` bands count as zeros."""
    if not isinstance(coeffs, (list, tuple)) or len(coeffs) != 2:
        raise ValueError("coeffs must be (cA, (cH, cV, cD))")
    a, d = coeffs
    if not isinstance(d, (list, tuple)) or len(d) != 3:
        raise ValueError("coeffs must be (cA, (cH, cV, cD)) with three detail bands")
    bands = [a, *d]
    if all(b is None for b in bands):
        raise ValueError("at least one band must be given")
    shapes = {tuple(b.shape) for b in bands if b is not None}
    if len(shapes) != 1:
        raise ValueError(f"all bands must have the same shape, got {sorted(shapes)}")
    return waverec2([a, tuple(d)], wavelet, mode=mode, axes=axes)


def wavedec2(x: Tensor, wavelet: WaveletLike, level: int | None = None,
             mode: str = "symmetric", axes: Sequence[int] = (-2, -1), *, _check: bool = True
             ) -> list:
    """Multilevel 2-D DWT ``[cA_n, (cH_n, cV_n, cD_n), ..., (cH_1, cV_1, cD_1)]``.

    Exactly ``pywt.wavedec2`` (same layout and values) on ``x (..., H, W)`` (any number
    of leading dimensions; ``axes`` picks the two transformed dimensions).
    ``level=None`` is the deepest level ``dwt_max_level(min(H, W), F)``.

    >>> c = wavedec2(torch.rand(2, 3, 64, 48), "db2", level=2)
    >>> tuple(c[0].shape), tuple(c[1][0].shape), tuple(c[2][2].shape)
    ((2, 3, 18, 14), (2, 3, 18, 14), (2, 3, 33, 25))
    """
    _check_input(x)
    mode = check_mode(mode)
    ax = _norm_axes(axes, x.dim())
    dec, _, _, needs_grad = taps(wavelet, x.dtype, x.device)
    F = dec.shape[1]
    sizes = [x.shape[ax[0]], x.shape[ax[1]]]
    if _check:
        level = _check_level(level, sizes, F)
    elif level is None:
        level = 1
    a, lead = _to_mhw(x, ax)
    out = []
    for _ in range(level):
        a, h, v, d = _analysis_level(a, dec, mode, needs_grad)
        out.append(tuple(_from_mhw(b, lead, ax) for b in (h, v, d)))
    return [_from_mhw(a, lead, ax)] + out[::-1]


def waverec2(coeffs: Sequence, wavelet: WaveletLike, mode: str = "symmetric",
             axes: Sequence[int] = (-2, -1)) -> Tensor:
    """Inverse of :func:`wavedec2` (``pywt.waverec2``), trimming ``cA`` as PyWavelets does."""
    if not isinstance(coeffs, (list, tuple)) or len(coeffs) == 0:
        raise ValueError("coeffs must be a non-empty list [cA_n, (cH_n, cV_n, cD_n), ...]")
    mode = check_mode(mode)
    a = coeffs[0]
    if len(coeffs) == 1:
        if a is None:
            raise ValueError("coeffs[0] is None and there are no detail bands")
        return a
    ref = a
    if ref is None:
        ref = next(b for b in coeffs[1] if b is not None)
    _check_input(ref, "coefficients")
    ax = _norm_axes(axes, ref.dim())
    _, rec, _, needs_grad = taps(wavelet, ref.dtype, ref.device)
    lead: tuple[int, ...] | None = None
    am = None
    if a is not None:
        am, lead = _to_mhw(a, ax)
    for d in coeffs[1:]:
        if not isinstance(d, (list, tuple)) or len(d) != 3:
            raise ValueError("each detail level must be a tuple (cH, cV, cD)")
        dm = []
        for b in d:
            if b is None:
                dm.append(None)
                continue
            bm, lead_b = _to_mhw(b, ax)
            if lead is not None and lead_b != lead:
                raise ValueError(f"leading dimensions differ between bands: {lead} vs {lead_b}")
            lead = lead_b
            dm.append(bm)
        shapes = {tuple(b.shape) for b in dm if b is not None}
        if len(shapes) > 1:
            raise ValueError(f"all detail bands of a level must have the same shape, got "
                             f"{sorted(shapes)}")
        if shapes and am is not None:
            dshape = shapes.pop()
            kh, kw = dshape[-2:]
            h, w = am.shape[-2:]
            if h == kh + 1:
                am = am[:, :-1]
            if w == kw + 1:
                am = am[:, :, :-1]
            if tuple(am.shape) != dshape:
                raise ValueError(f"approximation {tuple(am.shape[-2:])} and detail "
                                 f"{dshape[-2:]} shapes do not match; pass wavedec2's output")
        if am is None and all(b is None for b in dm):
            continue
        am = _synthesis_level(am, dm, rec, mode, needs_grad)
    assert am is not None and lead is not None
    return _from_mhw(am, lead, ax)
