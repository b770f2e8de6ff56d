"""Backends of the scattering core: the modulus-convolution primitive, swappable.

The scattering math (:mod:`.core`) never calls the custom ops directly; it receives a
:class:`Backend`, a small namespace of

- ``filter_fold(xhat, filters, width, k)``: ``(N, H, W//2+1)`` rfft2 half spectrum times
  ``(F, H, W)`` real Fourier filters, folded to ``(N, F, H//k, W//k)`` (so that ``ifft2`` of
  it is the filtered signal sampled every ``k`` pixels), see
  :mod:`difftransforms.ops.modconv_reference`;
- ``modulus(z)``: ``|z|`` with the stable gradient (0 at ``z == 0``);
- ``rfft2`` / ``ifft2`` / ``fft2`` over the last two dimensions;
- optionally ``maps_vjp(xhat, filters, width, k, grad)``: the gradient in ``xhat`` of
  ``<grad, modulus(ifft2(filter_fold(xhat, filters, width, k)))>`` recomputed from
  ``xhat`` alone, for the memory-efficient transforms (``None``: autograd recomputes).

Backends:

- ``"reference"``: :mod:`difftransforms.ops.modconv_reference` (the ops' ground truth; it
  materialises the full-resolution product and folds it with a reshape-mean);
- ``"compiled"``: the C++/CUDA custom ops of :mod:`difftransforms.ops` (an error if they
  are not built);
- ``"torch"``: a faster pure-PyTorch fold (full complex spectrum from ``fft2``, the fold
  as a sum over the ``k²`` aliased blocks, blocks where the filters vanish skipped);
- ``"auto"``: when the compiled CPU ops are built, each call runs the compiled op if it is
  built for the tensor's device and the ``"torch"`` fold otherwise (a CUDA machine without
  nvcc gets the fast pure-PyTorch fold, not the materialising reference); without them,
  ``"torch"``.

A backend's ``rfft2`` produces whatever spectrum its ``filter_fold`` consumes: the half
spectrum for the ops, the full spectrum for ``"torch"``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from difftransforms.ops.fft import rfft2 as _rfft2

__all__ = ["BACKENDS", "Backend", "filter_fold_torch", "get_backend"]

BACKENDS = ("auto", "reference", "compiled", "torch")


@dataclass(frozen=True)
class Backend:
    """What the scattering core needs from its backend (see the module docstring).

    ``materializes`` says that ``filter_fold`` builds the full ``(N, F, H, W)`` product (the
    reference does): the core then splits big batches to bound the peak memory.
    """

    name: str
    filter_fold: Callable[[Tensor, Tensor, int, int], Tensor]
    modulus: Callable[[Tensor], Tensor]
    materializes: bool = True
    rfft2: Callable[[Tensor], Tensor] = _rfft2
    fft2: Callable[[Tensor], Tensor] = torch.fft.fft2
    ifft2: Callable[[Tensor], Tensor] = torch.fft.ifft2
    maps_vjp: Callable[[Tensor, Tensor, int, int, Tensor], Tensor] | None = None


def _ops_info() -> str | None:
    """The ops package's own description of its active backend, if it offers one."""
    from difftransforms import ops

    for name in ("backend_info", "backend", "active_backend"):
        fn = getattr(ops, name, None)
        if callable(fn):
            try:
                info = fn()
            except Exception as e:  # report, do not hide
                return f"unknown ({type(e).__name__}: {e})"
            return str(info)
    return None


def _compiled_ops() -> tuple[Callable, Callable] | None:
    """The compiled ``filter_fold`` / ``modulus`` if the kernels are built and loaded."""
    from difftransforms.ops import modconv

    for ff, mod in (("filter_fold_compiled", "modulus_compiled"),
                    ("compiled_filter_fold", "compiled_modulus")):
        if callable(getattr(modconv, ff, None)) and callable(getattr(modconv, mod, None)):
            available = getattr(modconv, "compiled_available", None)
            if callable(available) and not available():
                return None
            return getattr(modconv, ff), getattr(modconv, mod)
    ns = getattr(torch.ops, "difftransforms", None)
    if ns is not None:
        try:
            return ns.filter_fold, ns.modulus
        except (AttributeError, RuntimeError):
            return None
    return None


def _live_blocks(filters: Tensor, k: int) -> list[tuple[int, int]]:
    """The aliased ``(a, b)`` blocks of ``filters`` holding a non-zero value (the bank's
    filters are exactly zero far from their support): one reduction over the filters."""
    F, H, W = filters.shape
    live = filters.detach().abs().reshape(F, k, H // k, k, W // k).amax(dim=(0, 2, 4))
    return [(a, b) for a, row in enumerate((live > 1e-30).tolist())
            for b, v in enumerate(row) if v]


def _block_slices(a: int, b: int, h: int, w: int) -> tuple[slice, slice]:
    return slice(a * h, (a + 1) * h), slice(b * w, (b + 1) * w)


class _FoldTorch(torch.autograd.Function):
    """Multiply-and-fold of a full spectrum by real filters, over the live aliased blocks.

    The blocks partition the spectrum, so the backward writes each block of the input
    gradient once (autograd's slice backward would allocate a full-size zero tensor per
    block)."""

    @staticmethod
    def forward(ctx, xhat: Tensor, fc: Tensor, k: int,  # type: ignore[override]
                blocks: list[tuple[int, int]]) -> Tensor:
        N, H, W = xhat.shape
        F = fc.shape[0]
        h, w = H // k, W // k
        out = xhat.new_zeros(N, F, h, w)
        for a, b in blocks:
            rs, cs = _block_slices(a, b, h, w)
            out.addcmul_(xhat[:, None, rs, cs], fc[None, :, rs, cs])
        ctx.save_for_backward(fc)
        ctx.k, ctx.blocks, ctx.shape = k, blocks, (N, H, W)
        return out

    @staticmethod
    def backward(ctx, g: Tensor):  # type: ignore[override]
        (fc,) = ctx.saved_tensors
        N, H, W = ctx.shape
        k = ctx.k
        h, w = H // k, W // k
        grad = g.new_zeros(N, H, W)
        for a, b in ctx.blocks:
            rs, cs = _block_slices(a, b, h, w)
            # d out / d xhat = fc (real filters, conj is a no-op)
            grad[:, rs, cs] = (g * fc[None, :, rs, cs].conj()).sum(dim=1)
        return grad, None, None, None


def filter_fold_torch(xhat: Tensor, filters: Tensor, width: int, k: int) -> Tensor:
    """``filter_fold`` (same result as the reference) as a sum over the ``k²`` aliased blocks
    of the product, skipping blocks where every filter is exactly zero (on CPU, where the
    check costs no device sync). Differentiable with respect to ``xhat`` only.

    Accepts the rfft2 half spectrum ``(N, H, W//2+1)`` or the full spectrum ``(N, H, W)``.
    """
    if xhat.shape[-1] != width:
        from difftransforms.ops.modconv_reference import full_spectrum

        xhat = full_spectrum(xhat, width)
    N, H, W = xhat.shape
    F = filters.shape[0]
    if filters.shape[-2:] != (H, W):
        raise ValueError(f"filters have spatial shape {tuple(filters.shape[-2:])}, "
                         f"expected {(H, W)}")
    if H % k or W % k:
        raise ValueError(f"fold factor k={k} must divide the spectrum size {(H, W)}")
    if filters.requires_grad:
        raise ValueError("filter_fold_torch does not differentiate the filters; use the "
                         "'reference' backend for learnable filters")
    # complex x complex is several times faster than complex x real in PyTorch (CPU)
    if k == 1:
        return xhat[:, None] * filters.to(xhat.dtype)[None]
    fc = filters.to(xhat.dtype) * (1.0 / (k * k))
    if filters.device.type == "cpu":
        blocks = _live_blocks(filters, k)
    else:
        blocks = [(a, b) for a in range(k) for b in range(k)]
    if not blocks:
        return xhat.new_zeros(N, F, H // k, W // k) + 0 * xhat.sum()
    return _FoldTorch.apply(xhat, fc, k, blocks)


def get_backend(name: str | Backend = "auto") -> Backend:
    """The :class:`Backend` called ``name``: ``"auto"``, ``"reference"``, ``"compiled"`` or
    ``"torch"`` (see the module docstring); a :class:`Backend` is returned as is.

    >>> get_backend("reference").name
    'reference'
    """
    if isinstance(name, Backend):
        return name
    if name not in BACKENDS:
        raise ValueError(f"unknown backend {name!r}; choose one of {BACKENDS}")
    if name == "reference":
        from difftransforms.ops.modconv_reference import filter_fold_reference, modulus_reference

        return Backend("reference", filter_fold_reference, modulus_reference, True)
    if name == "compiled":
        ops = _compiled_ops()
        if ops is None:
            raise RuntimeError(
                "the compiled scattering ops (difftransforms.ops) are not available; build "
                "them (see `difftransforms doctor`) or use backend='reference' / 'auto'")
        from functools import partial

        from difftransforms.ops.modconv import modulus_maps_vjp

        return Backend("compiled", ops[0], ops[1], False,
                       maps_vjp=partial(modulus_maps_vjp, backend="compiled"))
    if name == "torch":
        return Backend("torch", filter_fold_torch, torch.abs, False, rfft2=torch.fft.fft2)
    info = _ops_info()
    compiled = info is not None and "compiled" in info.lower() and "reference" not in info.lower()
    if compiled:
        return Backend(f"auto: compiled ({info}), else torch per device", _auto_filter_fold,
                       _auto_modulus, False, maps_vjp=_auto_maps_vjp)
    return Backend("auto: torch" + (f" (ops: {info})" if info else ""), filter_fold_torch,
                   torch.abs, False, rfft2=torch.fft.fft2)


# "auto" when the compiled CPU ops are built: each call runs the compiled op on a device where
# it is built and the pure-PyTorch "torch" fold elsewhere. The ops' own fallback is the
# reference, which materialises the full-resolution product (k² times the folded maps): a
# CUDA machine without nvcc must not get that silently while the CPU kernels are compiled.


def _compiled_on(t: Tensor) -> bool:
    from difftransforms.ops import _build

    if _build.backend_setting() == "cpp":
        return _build.use_compiled(t.device.type)  # a clear error where it is not built
    return _build.compiled_available(t.device.type)


def _auto_filter_fold(xhat: Tensor, filters: Tensor, width: int, k: int) -> Tensor:
    from difftransforms import ops

    if _compiled_on(xhat) or filters.requires_grad:  # the torch fold has no filter gradient
        return ops.filter_fold(xhat, filters, width, k)
    return filter_fold_torch(xhat, filters.to(xhat.real.dtype), width, k)


def _auto_modulus(z: Tensor) -> Tensor:
    from difftransforms import ops

    return ops.modulus(z) if _compiled_on(z) else torch.abs(z)


def _auto_maps_vjp(xhat: Tensor, filters: Tensor, width: int, k: int, grad: Tensor) -> Tensor:
    from difftransforms.ops.modconv import modulus_maps_vjp

    if _compiled_on(xhat):
        return modulus_maps_vjp(xhat, filters, width, k, grad)
    with torch.enable_grad():  # recompute with the torch fold and differentiate
        xd = xhat.detach().requires_grad_(True)
        f = filters.detach().to(xhat.real.dtype)
        u = torch.abs(torch.fft.ifft2(filter_fold_torch(xd, f, width, k)))
        (gx,) = torch.autograd.grad(u, xd, grad.to(u.dtype))
    return gx


def backend_description(name: str | Backend = "auto") -> str:
    """One line saying which implementation ``name`` resolves to (for benchmarks/doctor)."""
    b = get_backend(name)
    return b.name
