"""Public entry points of the scattering hot step: ``filter_fold`` and ``modulus``.

They dispatch to the compiled custom ops ``torch.ops.difftransforms.{filter_fold, modulus}``
(C++ kernels on CPU, CUDA kernels on GPU; built once on first use, see :mod:`._build`) and
fall back to the pure-PyTorch reference in :mod:`.modconv_reference` (same signature, same
results, exact conventions documented there) when the compiled ops are unavailable or
``DIFFTRANSFORMS_BACKEND=reference``.

The compiled ``filter_fold`` multiplies the rfft2 half spectrum by the filter bank and folds
the product to the subsampled size in one pass, reading the missing half through Hermitian
symmetry: the ``(N, F, H, W)`` full-resolution product the reference materialises never
exists. Its backward is another op, the adjoint (tile the gradient, multiply by the filters,
add the conjugated mirror term), whose own backward is ``filter_fold`` again, so gradients
of any order work. ``modulus`` has the stable gradient ``z / |z|`` (0 at ``z = 0``, no NaN).

Example (a real image, 4 filters, fold factor 2):

>>> import torch
>>> x = torch.randn(3, 16, 12, dtype=torch.float64)
>>> filters = torch.rand(4, 16, 12, dtype=torch.float64)
>>> out = filter_fold(torch.fft.rfft2(x), filters, width=12, k=2)
>>> tuple(out.shape), out.dtype
((3, 4, 8, 6), torch.complex128)
>>> u = modulus(torch.fft.ifft2(out))  # (filter * x) every 2nd pixel, then |.|
>>> tuple(u.shape), u.dtype
((3, 4, 8, 6), torch.float64)
"""

from __future__ import annotations

import torch
from torch import Tensor

from .._utils import as_int
from . import _build
from .modconv_reference import filter_fold_reference, full_spectrum, modulus_reference

__all__ = [
    "backend_info",
    "compiled_available",
    "filter_fold",
    "filter_fold_backward",
    "filter_fold_compiled",
    "modulus",
    "modulus_compiled",
    "modulus_maps_vjp",
]

_BACKEND_ARGS = (None, "auto", "reference", "compiled")


def _use_compiled(device_type: str, backend: str | None) -> bool:
    if backend not in _BACKEND_ARGS:
        raise ValueError(f"backend must be one of {_BACKEND_ARGS}, got {backend!r}")
    if backend == "reference":
        return False
    if backend == "compiled":
        if not _build.compiled_available(device_type):
            st = _build.status().get(device_type)
            why = st.reason if st is not None else "no compiled kernels for this device type"
            raise RuntimeError(f"backend='compiled' but the compiled {device_type} ops are "
                               f"unavailable: {why}. Run `difftransforms doctor`.")
        return True
    return _build.use_compiled(device_type)


def _as_int(v: object, name: str) -> int:
    """An integer argument (Python or NumPy int, 0-d integer tensor); no silent truncation."""
    i = as_int(v)
    if i is None:
        raise TypeError(f"filter_fold: {name} must be an integer, got {v!r}")
    return i


def _check_fold_args(xhat: Tensor, filters: Tensor, width: int, k: int) -> Tensor:
    """Validate the arguments of :func:`filter_fold`; return filters in xhat's precision."""
    if not isinstance(xhat, Tensor) or not isinstance(filters, Tensor):
        raise TypeError("filter_fold: xhat and filters must be torch.Tensors")
    if xhat.dim() != 3 or not xhat.is_complex():
        raise ValueError(f"filter_fold: xhat must be a complex (N, H, W//2+1) rfft2 half "
                         f"spectrum, got {xhat.dtype} of shape {tuple(xhat.shape)}")
    if filters.dim() != 3 or not filters.is_floating_point():
        raise ValueError(f"filter_fold: filters must be real floating (F, H, W), got "
                         f"{filters.dtype} of shape {tuple(filters.shape)}")
    if xhat.device != filters.device:
        raise ValueError(f"filter_fold: xhat is on {xhat.device} but filters are on "
                         f"{filters.device}; move them to the same device")
    width, k = _as_int(width, "width"), _as_int(k, "k")
    H, wr = xhat.shape[-2:]
    if width < 1 or wr != width // 2 + 1:
        raise ValueError(f"filter_fold: xhat has {wr} columns but width={width} needs "
                         f"width // 2 + 1 = {width // 2 + 1}")
    if tuple(filters.shape[-2:]) != (H, width):
        raise ValueError(f"filter_fold: filters have spatial shape {tuple(filters.shape[-2:])}, "
                         f"expected {(H, width)}")
    if k < 1 or H % k or width % k:
        raise ValueError(f"filter_fold: fold factor k={k} must divide the size {(H, width)}")
    real = torch.float64 if xhat.dtype == torch.complex128 else torch.float32
    if xhat.dtype not in (torch.complex64, torch.complex128):
        raise ValueError(f"filter_fold: xhat must be complex64 or complex128, got {xhat.dtype}")
    return filters.to(real)


def filter_fold(xhat: Tensor, filters: Tensor, width: int, k: int, *,
                backend: str | None = None) -> Tensor:
    """Multiply a half spectrum by a real filter bank and fold to the subsampled size.

    Args:
        xhat: ``(N, H, W//2+1)`` complex64/complex128, ``torch.fft.rfft2`` of real
            ``(N, H, W)`` signals.
        filters: ``(F, H, W)`` real Fourier-domain filters (cast to xhat's precision).
        width: ``W``, the signals' width (the half spectrum does not determine its parity).
        k: fold factor, dividing ``H`` and ``W`` (``2**j`` for subsampling by ``2**j``).
        backend: ``None``/``"auto"`` (``$DIFFTRANSFORMS_BACKEND``: compiled when available),
            ``"reference"`` or ``"compiled"`` (error if unavailable).

    Returns:
        ``(N, F, H//k, W//k)`` complex,
        ``out[n, f, u, v] = mean_{a,b<k} filters[f, u+aH/k, v+bW/k] X[n, u+aH/k, v+bW/k]``
        with ``X`` the full spectrum: ``ifft2(out)`` is ``ifft2(filters * X)`` sampled every
        ``k`` pixels. Differentiable in ``xhat`` and ``filters`` (any order).
    """
    filters = _check_fold_args(xhat, filters, width, k)
    if _use_compiled(xhat.device.type, backend):
        return torch.ops.difftransforms.filter_fold(xhat, filters, int(width), int(k))
    return filter_fold_reference(xhat, filters, int(width), int(k))


def filter_fold_backward(grad: Tensor, filters: Tensor, k: int, *,
                         backend: str | None = None) -> Tensor:
    """Adjoint of :func:`filter_fold` in ``xhat``: ``(N, F, H/k, W/k)`` -> ``(N, H, W//2+1)``.

    ``filters`` is ``(F, H, W)`` in grad's precision. This is the gradient
    ``filter_fold``'s backward computes (PyTorch's conjugate-Wirtinger convention): the tiled
    gradient times the filters, plus the conjugated contribution of the mirrored columns.
    """
    if not isinstance(grad, Tensor) or not isinstance(filters, Tensor):
        raise TypeError("filter_fold_backward: grad and filters must be torch.Tensors")
    if grad.dim() != 4 or filters.dim() != 3:
        raise ValueError(f"filter_fold_backward: grad must be (N, F, H/k, W/k) and filters "
                         f"(F, H, W); got {tuple(grad.shape)} and {tuple(filters.shape)}")
    if grad.dtype not in (torch.complex64, torch.complex128):
        raise ValueError(f"filter_fold_backward: grad must be complex64/complex128 (the "
                         f"gradient of filter_fold's complex output), got {grad.dtype}")
    if not filters.is_floating_point():
        raise ValueError(f"filter_fold_backward: filters must be real floating, got "
                         f"{filters.dtype}")
    if grad.device != filters.device:
        raise ValueError(f"filter_fold_backward: grad is on {grad.device} but filters are on "
                         f"{filters.device}; move them to the same device")
    k = _as_int(k, "k")
    H, W = filters.shape[-2:]
    if k < 1 or H % k or W % k or tuple(grad.shape[1:]) != (filters.shape[0], H // k, W // k):
        raise ValueError(f"filter_fold_backward: grad {tuple(grad.shape)} does not match "
                         f"filters {tuple(filters.shape)} folded by k={k}: expected "
                         f"(N, {filters.shape[0]}, H/k, W/k) with k dividing {(H, W)}")
    filters = filters.to(_real_dtype(grad.dtype))
    if _use_compiled(grad.device.type, backend):
        return torch.ops.difftransforms.filter_fold_backward(grad, filters, int(k))
    return _filter_fold_adjoint_reference(grad, filters, int(k))


def modulus(z: Tensor, *, backend: str | None = None) -> Tensor:
    """``|z|`` of a complex tensor (any shape) with the stable gradient ``z/|z|`` (0 at 0).

    Returns a real tensor of the same shape (float32 for complex64, float64 for complex128).
    """
    if not isinstance(z, Tensor) or z.dtype not in (torch.complex64, torch.complex128):
        dt = z.dtype if isinstance(z, Tensor) else type(z).__name__
        raise ValueError(f"modulus: z must be a complex64/complex128 tensor, got {dt}")
    if _use_compiled(z.device.type, backend):
        return torch.ops.difftransforms.modulus(z)
    return modulus_reference(z)


def modulus_maps_vjp(xhat: Tensor, filters: Tensor, width: int, k: int, grad: Tensor, *,
                     backend: str | None = None) -> Tensor:
    """Gradient in ``xhat`` of ``<grad, modulus(ifft2(filter_fold(xhat, filters, width, k)))>``,
    recomputing the complex maps: the backward pass of a modulus-convolution whose forward
    kept nothing but ``xhat``.

    One fold, one inverse FFT, ``grad · z/|z|`` (0 at ``z = 0``), one forward FFT and the
    fold's adjoint, with no autograd graph and no stored ``|z|`` (a checkpointed autograd
    recompute would also recompute the modulus and keep both complex buffers alive).

    Args:
        xhat: ``(N, H, W//2+1)`` complex half spectra; filters: ``(F, H, W)`` real.
        grad: ``(N, F, H//k, W//k)`` real, the gradient of the modulus maps.

    Returns:
        ``(N, H, W//2+1)`` complex, like :func:`filter_fold`'s backward.
    """
    filters = _check_fold_args(xhat, filters, width, k)
    width, k = int(width), int(k)
    if not isinstance(grad, Tensor) or grad.is_complex() or not grad.is_floating_point():
        dt = grad.dtype if isinstance(grad, Tensor) else type(grad).__name__
        raise ValueError(f"modulus_maps_vjp: grad is the gradient of the real modulus maps "
                         f"and must be a real floating tensor, got {dt}")
    if _use_compiled(xhat.device.type, backend):
        ops = torch.ops.difftransforms
        z = torch.fft.ifft2(ops.filter_fold(xhat, filters, width, k))
        gz = ops.modulus_backward(grad.to(filters.dtype).contiguous(), z)
        del z
        # ifft2's adjoint (PyTorch's conjugate-Wirtinger convention) is fft2 / (h w)
        gz = torch.fft.fft2(gz, norm="forward")
        return ops.filter_fold_backward(gz, filters, k)
    with torch.enable_grad():
        xd = xhat.detach().requires_grad_(True)
        u = modulus_reference(torch.fft.ifft2(filter_fold_reference(xd, filters, width, k)))
        (gx,) = torch.autograd.grad((u * grad).sum(), xd)
    return gx


def _real_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.complex128 else torch.float32


def compiled_available(device: str | torch.device = "cpu") -> bool:
    """Whether the compiled ops run on ``device`` (builds/loads them on first call; ``False``
    when ``DIFFTRANSFORMS_BACKEND=reference``)."""
    dev = torch.device(device).type
    return _build.backend_setting() != "reference" and _build.compiled_available(dev)


def backend_info(device: str | torch.device = "cpu") -> str:
    """One line: which implementation :func:`filter_fold`/:func:`modulus` use on ``device``
    and why (``"compiled C++ kernels ..."`` or ``"reference ...: <reason>"``)."""
    dev = torch.device(device).type
    if _build.backend_setting() == "reference":
        return f"reference (forced by {_build.BACKEND_ENV}=reference)"
    if dev not in _build.status():
        return f"reference (no compiled kernels for device type {dev!r})"
    st = _build.load(dev)
    kind = "CUDA" if dev == "cuda" else "C++"
    return f"compiled {kind} kernels" if st.loaded else f"reference: {st.reason}"


def filter_fold_compiled(xhat: Tensor, filters: Tensor, width: int, k: int) -> Tensor:
    """:func:`filter_fold` forced onto the compiled op (``RuntimeError`` if unavailable)."""
    return filter_fold(xhat, filters, width, k, backend="compiled")


def modulus_compiled(z: Tensor) -> Tensor:
    """:func:`modulus` forced onto the compiled op (``RuntimeError`` if unavailable)."""
    return modulus(z, backend="compiled")


# --------------------------------------------------------------------------------------
# Pure-PyTorch pieces of the autograd formulas (differentiable, any device)


def _filters_grad(xhat: Tensor, grad: Tensor, width: int, k: int) -> Tensor:
    """Gradient of ``Re <grad, filter_fold(xhat, filters)>`` in the real ``filters``:
    ``Re(conj(tile(grad)) * X) / k^2`` summed over the batch, ``(F, H, W)``. Contracts over
    N without forming an ``(N, F, H, W)`` tensor."""
    full = full_spectrum(xhat, width)
    N, H, W = full.shape
    F = grad.shape[1]
    hk, wk = H // k, W // k
    g = torch.einsum("nfhw,nahbw->fahbw", grad.conj(), full.reshape(N, k, hk, k, wk))
    return (g.real / (k * k)).reshape(F, H, W)


def _filter_fold_adjoint_reference(grad: Tensor, filters: Tensor, k: int) -> Tensor:
    """Pure-PyTorch adjoint (autograd of the reference), for the fallback path."""
    N = grad.shape[0]
    _, H, W = filters.shape
    xhat = torch.zeros(N, H, W // 2 + 1, dtype=grad.dtype, device=grad.device,
                       requires_grad=True)
    with torch.enable_grad():
        out = filter_fold_reference(xhat, filters.to(_real_dtype(grad.dtype)), W, k)
        (g,) = torch.autograd.grad(out, xhat, grad, create_graph=torch.is_grad_enabled())
    return g


# --------------------------------------------------------------------------------------
# Python-side registrations of the compiled ops (called by _build once the library loads)

_registered = False


def _ff_setup(ctx, inputs, output) -> None:  # noqa: ANN001
    xhat, filters, width, k = inputs
    # xhat is only needed for the filters' gradient: a fixed bank (buffers) keeps no copy
    # of the spectra alive for the backward pass
    ctx.save_for_backward(xhat if filters.requires_grad else None, filters)
    ctx.width, ctx.k = width, k


def _ff_backward(ctx, grad: Tensor):  # noqa: ANN001, ANN202
    xhat, filters = ctx.saved_tensors
    gx = gf = None
    if ctx.needs_input_grad[0]:
        gx = torch.ops.difftransforms.filter_fold_backward(grad, filters, ctx.k)
    if ctx.needs_input_grad[1]:
        gf = _filters_grad(xhat, grad, ctx.width, ctx.k)
    return gx, gf, None, None


def _ffb_setup(ctx, inputs, output) -> None:  # noqa: ANN001
    grad, filters, k = inputs
    ctx.save_for_backward(grad if filters.requires_grad else None, filters)
    ctx.k = k


def _ffb_backward(ctx, r: Tensor):  # noqa: ANN001, ANN202
    # filter_fold_backward is the real-linear adjoint A* of A = filter_fold(., filters), so
    # its own adjoint is A again; in the filters, Re<r, A*_f(g)> = Re<A_f(r), g>.
    grad, filters = ctx.saved_tensors
    width = filters.shape[-1]
    gg = gf = None
    if ctx.needs_input_grad[0]:
        gg = torch.ops.difftransforms.filter_fold(r, filters, width, ctx.k)
    if ctx.needs_input_grad[1]:
        gf = _filters_grad(r, grad, width, ctx.k)
    return gg, gf, None


def _mod_setup(ctx, inputs, output) -> None:  # noqa: ANN001
    (z,) = inputs
    ctx.save_for_backward(z)


def _mod_backward(ctx, grad: Tensor):  # noqa: ANN001, ANN202
    (z,) = ctx.saved_tensors
    return torch.ops.difftransforms.modulus_backward(grad, z)


def _modb_setup(ctx, inputs, output) -> None:  # noqa: ANN001
    ctx.save_for_backward(*inputs)


def _modb_backward(ctx, y: Tensor):  # noqa: ANN001, ANN202
    # d(g z/|z|): in g, Re(conj(y) s); in z, g (y - Re(conj(y) s) s) / |z|, 0 at z = 0.
    g, z = ctx.saved_tensors
    s = torch.sgn(z)
    proj = (y.conj() * s).real
    gg = proj if ctx.needs_input_grad[0] else None
    gz = None
    if ctx.needs_input_grad[1]:
        r = z.abs()
        nz = r > 0
        gz = torch.where(nz, g * (y - proj * s) / torch.where(nz, r, torch.ones_like(r)), 0)
    return gg, gz


def _register_python_impls() -> None:
    """Fake (meta) kernels and autograd formulas of ``torch.ops.difftransforms.*``."""
    global _registered
    if _registered:
        return
    _registered = True

    @torch.library.register_fake("difftransforms::filter_fold")
    def _ff_fake(xhat: Tensor, filters: Tensor, width: int, k: int) -> Tensor:
        torch._check(xhat.dim() == 3 and filters.dim() == 3, lambda: "filter_fold: bad dims")
        torch._check(xhat.shape[-1] == width // 2 + 1, lambda: "filter_fold: bad width")
        N, H = xhat.shape[0], xhat.shape[1]
        return xhat.new_empty((N, filters.shape[0], H // k, width // k))

    @torch.library.register_fake("difftransforms::filter_fold_backward")
    def _ffb_fake(grad: Tensor, filters: Tensor, k: int) -> Tensor:
        torch._check(grad.dim() == 4 and filters.dim() == 3, lambda: "filter_fold_backward")
        return grad.new_empty((grad.shape[0], filters.shape[1], filters.shape[2] // 2 + 1))

    @torch.library.register_fake("difftransforms::modulus")
    def _mod_fake(z: Tensor) -> Tensor:
        return z.new_empty(z.shape, dtype=_real_dtype(z.dtype))

    @torch.library.register_fake("difftransforms::modulus_backward")
    def _modb_fake(grad: Tensor, z: Tensor) -> Tensor:
        return z.new_empty(z.shape)

    torch.library.register_autograd("difftransforms::filter_fold", _ff_backward,
                                    setup_context=_ff_setup)
    torch.library.register_autograd("difftransforms::filter_fold_backward", _ffb_backward,
                                    setup_context=_ffb_setup)
    torch.library.register_autograd("difftransforms::modulus", _mod_backward,
                                    setup_context=_mod_setup)
    torch.library.register_autograd("difftransforms::modulus_backward", _modb_backward,
                                    setup_context=_modb_setup)
