"""Pack wavelet coefficients into one tensor (``pywt.coeffs_to_array``) and back."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

__all__ = ["coeffs_to_tensor", "tensor_to_coeffs"]

_KEYS2 = ("da", "ad", "dd")  # (cH, cV, cD) in PyWavelets' wavedecn key convention


def _as_dicts(coeffs: Sequence) -> tuple[list, int]:
    if isinstance(coeffs[1], dict):
        return list(coeffs), len(next(iter(coeffs[1])))
    if isinstance(coeffs[1], Tensor):
        return [coeffs[0]] + [{"d": d} for d in coeffs[1:]], 1
    if isinstance(coeffs[1], (tuple, list)):
        out = [coeffs[0]]
        for d in coeffs[1:]:
            if len(d) != 3:
                raise ValueError("each 2-D detail level must be a tuple (cH, cV, cD)")
            out.append(dict(zip(_KEYS2, d, strict=True)))
        return out, 2
    raise ValueError("coeffs must be the output of wavedec, wavedec2 or a wavedecn-style list")


def coeffs_to_tensor(coeffs: Sequence, padding: float = 0.0,
                     axes: Sequence[int] | None = None) -> tuple[Tensor, list]:
    """Pack ``wavedec``/``wavedec2`` coefficients into one tensor, as ``pywt.coeffs_to_array``.

    Returns ``(packed, slices)``: ``cA`` in the top-left corner and, for every level from
    coarse to fine, ``cV`` to its right, ``cH`` below and ``cD`` diagonally (2-D), so a CNN
    can consume all coefficients as one ``(..., H', W')`` image. ``slices`` has exactly
    PyWavelets' format (so ``pywt.array_to_coeffs`` works too); gaps are ``padding``.
    Differentiable. ``axes`` defaults to the last one (1-D) or the last two (2-D).

    >>> from difftransforms.wavelets import wavedec2
    >>> arr, sl = coeffs_to_tensor(wavedec2(torch.rand(1, 3, 32, 32), "haar", level=2))
    >>> tuple(arr.shape)
    (1, 3, 32, 32)
    """
    if not isinstance(coeffs, (list, tuple)) or len(coeffs) == 0:
        raise ValueError("coeffs must be a non-empty list of coefficients")
    a = coeffs[0]
    if not isinstance(a, Tensor):
        raise TypeError("coeffs[0] must be a tensor (missing coefficients are not supported)")
    nd = a.dim()
    if len(coeffs) == 1:
        return a, [tuple([slice(None)] * nd)]
    cd, ndt = _as_dicts(coeffs)
    if axes is None:
        axes = tuple(range(-ndt, 0))
    axes = tuple(int(ax) % nd for ax in axes)
    if len(axes) != ndt:
        raise ValueError(f"axes {axes} do not match the {ndt}-D coefficients")
    dkey = "d" * ndt
    shape = list(a.shape)
    for lev in cd[1:]:
        if any(v is None for v in lev.values()):
            raise ValueError("coeffs_to_tensor does not support missing (None) coefficients")
        for ax in axes:
            shape[ax] += lev[dkey].shape[ax]
    out = torch.full(shape, float(padding), dtype=a.dtype, device=a.device)
    a_shape = list(a.shape)
    a_sl = tuple(slice(s) for s in a_shape)
    out[a_sl] = a
    slices: list = [a_sl]
    for lev in cd[1:]:
        slices.append({})
        d_shape = lev[dkey].shape
        for key, d in lev.items():
            sl = [slice(None)] * nd
            for i, let in enumerate(key):
                ax = axes[i]
                if let == "a":
                    sl[ax] = slice(d.shape[ax])
                elif let == "d":
                    sl[ax] = slice(a_shape[ax], a_shape[ax] + d.shape[ax])
                else:
                    raise ValueError(f"unexpected coefficient key {key!r}")
            t = tuple(sl)
            out[t] = d
            slices[-1][key] = t
        a_shape = [a_shape[n] + d_shape[n] for n in range(nd)]
    return out, slices


def tensor_to_coeffs(arr: Tensor, slices: Sequence, output_format: str | None = None) -> list:
    """Inverse of :func:`coeffs_to_tensor` (``pywt.array_to_coeffs``); returns views.

    ``output_format`` is ``"wavedec"``, ``"wavedec2"`` or ``"wavedecn"``; by default it is
    inferred from ``slices`` (keys ``"d"`` -> wavedec, ``"da"/"ad"/"dd"`` -> wavedec2).
    """
    if not isinstance(slices, (list, tuple)) or len(slices) == 0:
        raise ValueError("slices must be the list returned by coeffs_to_tensor")
    out: list = [arr[slices[0]]]
    if len(slices) == 1:
        return out
    if output_format is None:
        keys = set(slices[1])
        output_format = ("wavedec" if keys == {"d"} else
                         "wavedec2" if keys == set(_KEYS2) else "wavedecn")
    for s in slices[1:]:
        if output_format == "wavedec":
            out.append(arr[s["d"]])
        elif output_format == "wavedec2":
            out.append(tuple(arr[s[k]] for k in _KEYS2))
        elif output_format == "wavedecn":
            out.append({k: arr[v] for k, v in s.items()})
        else:
            raise ValueError(f"unknown output_format {output_format!r}; valid: wavedec, "
                             "wavedec2, wavedecn")
    return out
