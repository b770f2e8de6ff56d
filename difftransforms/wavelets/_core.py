"""One-level analysis/synthesis along one or two axes, pure PyTorch or C++ kernel.

Conventions (see :mod:`._plans`): ``dec`` taps ``(2, F)`` = ``[dec_lo[::-1], dec_hi[::-1]]``,
``rec`` taps ``(2, F)`` = ``[rec_lo, rec_hi]``. 2-D band order is PyWavelets'
``(aa, da, ad, dd)`` = ``(cA, cH, cV, cD)``, where the first letter is the axis ``-2``
filter (``d`` = high-pass) and the second the axis ``-1`` filter.

The pure-PyTorch path (any device, learnable filters) is built from differentiable
primitives (index gathers, strided ``conv``/``conv_transpose``, ``index_add``), so autograd
is exact. The C++ path (CPU, fixed filters) is a fused kernel whose backward is the adjoint
kernel.
"""

from __future__ import annotations

from functools import lru_cache

import torch
import torch.nn.functional as F
from torch import Tensor

from . import _kernel
from ._plans import Plan

# ---------------------------------------------------------------------------- plan tensors


@lru_cache(maxsize=2048)
def _terms(plan: Plan, dtype: torch.dtype, device: torch.device
           ) -> tuple[Tensor, Tensor, Tensor, Tensor, bool]:
    """Left/right pad terms ``(li, lw, ri, rw, pure_gather)`` as tensors on ``device``."""
    idx, w = plan.terms()
    li = torch.as_tensor(idx[:, : plan.padL], device=device)
    ri = torch.as_tensor(idx[:, plan.padL :], device=device)
    lw = torch.as_tensor(w[:, : plan.padL], dtype=dtype, device=device)
    rw = torch.as_tensor(w[:, plan.padL :], dtype=dtype, device=device)
    pure = idx.shape[0] == 1 and bool((w == 1.0).all())
    return li, lw, ri, rw, pure


@lru_cache(maxsize=2048)
def _csr(plan: Plan) -> tuple[Tensor, Tensor, Tensor]:
    return (torch.from_numpy(plan.ptr), torch.from_numpy(plan.idx), torch.from_numpy(plan.w))


def _wshape(w: Tensor, dim: int, nd: int) -> Tensor:
    shape = [1] * nd
    shape[dim] = -1
    return w.reshape(shape)


def _pad_part(x: Tensor, idx: Tensor, w: Tensor, pure: bool, dim: int) -> Tensor:
    n = idx.shape[1]
    if idx.shape[0] == 0:  # zero extension
        shape = list(x.shape)
        shape[dim] = n
        return x.new_zeros(shape)
    if pure:
        return x.index_select(dim, idx[0])
    # accumulated in float64 (then cast back): smooth/antireflect pads extrapolate and cancel
    acc = torch.float64 if x.dtype in (torch.float32, torch.float16, torch.bfloat16) else x.dtype
    w = w.to(acc)
    out = x.index_select(dim, idx[0]).to(acc) * _wshape(w[0], dim, x.dim())
    for t in range(1, idx.shape[0]):
        out = out + x.index_select(dim, idx[t]).to(acc) * _wshape(w[t], dim, x.dim())
    return out.to(x.dtype)


def extend(x: Tensor, plan: Plan, dim: int) -> Tensor:
    """``B x`` along ``dim`` (length ``N`` -> ``Npad``)."""
    li, lw, ri, rw, pure = _terms(plan, x.dtype, x.device)
    parts = []
    if plan.padL:
        parts.append(_pad_part(x, li, lw, pure, dim))
    parts.append(x)
    if plan.padR:
        parts.append(_pad_part(x, ri, rw, pure, dim))
    return torch.cat(parts, dim) if len(parts) > 1 else x


def fold(z: Tensor, plan: Plan, dim: int) -> Tensor:
    """``B^T z`` along ``dim`` (length ``Npad`` -> ``N``)."""
    li, lw, ri, rw, pure = _terms(plan, z.dtype, z.device)
    x = z.narrow(dim, plan.padL, plan.N)
    for idx, w, start, n in ((li, lw, 0, plan.padL), (ri, rw, plan.padL + plan.N, plan.padR)):
        if n == 0 or idx.shape[0] == 0:
            continue
        zp = z.narrow(dim, start, n)
        for t in range(idx.shape[0]):
            src = zp if pure else zp * _wshape(w[t], dim, z.dim())
            x = x.index_add(dim, idx[t], src)
    return x


# ---------------------------------------------------------------------------- 1-D primitives
# Strided correlation as unfold (a view) + matmul, and its transpose as matmul + overlap-add
# (``F.fold``): fast for the small and float64 problems where ``conv1d`` is slow on CPU,
# and differentiable in both the signal and the taps.


def _correlate(xe: Tensor, taps: Tensor, dim: int) -> Tensor:
    """``y[..., k, ..., c] = sum_j taps[c, j] xe[..., 2k + j, ...]``: new last dim ``c``."""
    F_ = taps.shape[1]
    win = xe.unfold(dim, F_, 2)  # window appended as last dim
    return win @ taps.t()


def _overlap_add(blocks: Tensor, npad: int) -> Tensor:
    """``z[..., n] = sum_k blocks[..., k, n - 2k]`` for ``blocks (..., K, F)``."""
    lead = blocks.shape[:-2]
    K, F_ = blocks.shape[-2:]
    cols = blocks.reshape(-1, K, F_).transpose(1, 2)
    z = F.fold(cols, output_size=(1, npad), kernel_size=(1, F_), stride=(1, 2))
    return z.reshape(*lead, npad)


def analysis1d(x: Tensor, dec: Tensor, plan: Plan) -> tuple[Tensor, Tensor]:
    """``(..., N)`` -> ``(cA, cD)`` each ``(..., K)``."""
    y = _correlate(extend(x, plan, -1), dec, -1)
    return y[..., 0], y[..., 1]


def synthesis1d(a: Tensor, d: Tensor, rec: Tensor, plan: Plan) -> Tensor:
    """``(cA, cD)`` each ``(..., K)`` -> ``(..., N)``."""
    blocks = torch.stack([a, d], -1) @ rec                     # (..., K, F)
    return fold(_overlap_add(blocks, plan.npad), plan, -1)


# set to False (e.g. in tests, or to compare) to force the pure-PyTorch path
USE_KERNELS = True


def _use_kernel(t: Tensor, needs_grad: bool) -> bool:
    return (USE_KERNELS and t.device.type == "cpu" and t.dtype in (torch.float32, torch.float64)
            and not needs_grad and _kernel.available())


def analysis2d_torch(x: Tensor, dec: Tensor, ph: Plan, pw: Plan) -> Tensor:
    """``(M, H, W)`` -> ``(M, 4, Kh, Kw)`` bands ``(aa, da, ad, dd)``, pure PyTorch."""
    M = x.shape[0]
    y = _correlate(extend(x, pw, -1), dec, -1)                 # (M, H, Kw, wb)
    z = _correlate(extend(y, ph, 1), dec, 1)                   # (M, Kh, Kw, wb, hb)
    return z.permute(0, 3, 4, 1, 2).reshape(M, 4, ph.K, pw.K)


def synthesis2d_torch(a: Tensor, h: Tensor, v: Tensor, d: Tensor, rec: Tensor, ph: Plan,
                      pw: Plan) -> Tensor:
    """Bands ``(M, Kh, Kw)`` -> ``(M, Nh, Nw)``, pure PyTorch."""
    y = torch.stack([torch.stack([a, h], -1), torch.stack([v, d], -1)], -2)  # (M,Kh,Kw,wb,hb)
    bh = (y @ rec).permute(0, 2, 3, 1, 4)                       # (M, Kw, wb, Kh, F)
    u = fold(_overlap_add(bh, ph.npad), ph, -1)                # (M, Kw, wb, Nh)
    bw = (u.permute(0, 3, 1, 2) @ rec)                         # (M, Nh, Kw, F)
    return fold(_overlap_add(bw, pw.npad), pw, -1)


class _KernelAnalysis(torch.autograd.Function):
    """The analysis op returning its four bands as separate outputs.

    The backward hands the four band gradients straight to the synthesis op (no stacking
    into one tensor, no zero-filled select_backward buffers); it is itself differentiable
    (the ops have registered autograd), so double backward works.
    """

    @staticmethod
    def forward(ctx, x: Tensor, dec: Tensor, ph: Plan, pw: Plan  # type: ignore[override]
                ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        ptrH, idxH, wH = _csr(ph)
        ptrW, idxW, wW = _csr(pw)
        o = torch.ops.difftransforms_wavelets.analysis2d(
            x, dec, ph.K, ph.padL, ptrH, idxH, wH, pw.K, pw.padL, ptrW, idxW, wW)
        ctx.save_for_backward(dec)
        ctx.plans = (ph, pw)
        return tuple(o.unbind(1))  # type: ignore[return-value]

    @staticmethod
    def backward(ctx, ga: Tensor, gh: Tensor, gv: Tensor, gd: Tensor  # type: ignore[override]
                 ) -> tuple[Tensor, None, None, None]:
        (dec,) = ctx.saved_tensors
        ph, pw = ctx.plans
        grads = [ga, gh, gv, gd]
        if any(g.stride(-1) != 1 for g in grads):  # e.g. expanded grads of .sum()
            buf = torch.empty_strided((ga.shape[0], 4, ph.K, pw.K),
                                      _kernel.band_strides(ph.K, pw.K), dtype=ga.dtype)
            for i, g in enumerate(grads):
                buf[:, i].copy_(g)  # bands kept apart in memory (see kernels/wavelets.cpp)
            ga, gh, gv, gd = buf.unbind(1)
        ptrH, idxH, wH = _csr(ph)
        ptrW, idxW, wW = _csr(pw)
        gx = torch.ops.difftransforms_wavelets.synthesis2d(
            ga, gh, gv, gd, dec, ph.N, ph.padL, ptrH, idxH, wH, pw.N, pw.padL, ptrW, idxW, wW)
        return gx, None, None, None


def analysis2d(x: Tensor, dec: Tensor, ph: Plan, pw: Plan, needs_grad: bool
               ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """``(M, H, W)`` -> bands ``(aa, da, ad, dd)`` each ``(M, Kh, Kw)``; C++ when possible."""
    if dec.shape[1] <= 128 and _use_kernel(x, needs_grad):
        if torch.is_grad_enabled() and x.requires_grad:
            return _KernelAnalysis.apply(x, dec, ph, pw)
        ptrH, idxH, wH = _csr(ph)
        ptrW, idxW, wW = _csr(pw)
        o = torch.ops.difftransforms_wavelets.analysis2d(
            x, dec, ph.K, ph.padL, ptrH, idxH, wH, pw.K, pw.padL, ptrW, idxW, wW)
        return tuple(o.unbind(1))  # type: ignore[return-value]
    return tuple(analysis2d_torch(x, dec, ph, pw).unbind(1))  # type: ignore[return-value]


def synthesis2d(a: Tensor, h: Tensor, v: Tensor, d: Tensor, rec: Tensor, ph: Plan, pw: Plan,
                needs_grad: bool) -> Tensor:
    """Bands ``(M, Kh, Kw)`` -> ``(M, Nh, Nw)``; C++ kernel when possible."""
    if rec.shape[1] <= 128 and _use_kernel(a, needs_grad):
        ptrH, idxH, wH = _csr(ph)
        ptrW, idxW, wW = _csr(pw)
        return torch.ops.difftransforms_wavelets.synthesis2d(
            a, h, v, d, rec, ph.N, ph.padL, ptrH, idxH, wH, pw.N, pw.padL, ptrW, idxW, wW)
    return synthesis2d_torch(a, h, v, d, rec, ph, pw)
