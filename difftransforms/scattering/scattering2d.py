"""The 2-D scattering transform: ``scattering2d`` and ``Scattering2D`` (kymatio-compatible).

``S x = [x ⋆ φ_J, |x ⋆ ψ_λ1| ⋆ φ_J, ||x ⋆ ψ_λ1| ⋆ ψ_λ2| ⋆ φ_J]`` subsampled by ``2^J``, with
kymatio 0.3's filters, ordering and (with ``padding="reflect"``) padding, so the numbers
equal ``kymatio.torch.Scattering2D``'s. The math lives in :mod:`.core`, the filters in
:mod:`.filter_bank`; the modulus-convolution primitive is a :mod:`.backend`.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable

import torch
from torch import Tensor, nn

from .._utils import check_finite, check_floating
from .backend import Backend, get_backend
from .core import scattering2d_core
from .filter_bank import MorletFilterBank, _check_int, _check_shape, morlet_filter_bank

__all__ = ["PADDINGS", "Scattering2D", "scattering2d", "scattering_meta"]

PADDINGS = ("reflect", "periodic")


def _check_order_params(J: int, L: int, max_order: int) -> None:
    """Validate the shared (J, L, max_order) arguments of every scattering front-end."""
    _check_int(J, "J")  # Python or NumPy ints; bools and floats are refused
    _check_int(L, "L")
    if max_order not in (1, 2):
        raise ValueError(f"max_order must be 1 or 2, got {max_order!r}")


def _check_params(J: int, L: int, max_order: int, padding: str) -> None:
    _check_order_params(J, L, max_order)
    if padding not in PADDINGS:
        raise ValueError(f"unknown padding {padding!r}; choose one of {PADDINGS}")


def padded_shape(shape: tuple[int, int], J: int, padding: str) -> tuple[int, int]:
    """The grid the filters live on: kymatio's ``compute_padding`` for ``"reflect"`` (a
    multiple of ``2^J`` leaving at least ``2^J`` pixels of padding each side), the input
    size for ``"periodic"``."""
    M, N = shape
    if 2**J > M or 2**J > N:
        fix = (f"use J <= {int(math.log2(min(M, N)))}" if min(M, N) >= 2 else
               "the image must be at least 2x2 pixels")
        raise ValueError(
            f"J={J} is too large for a {M}x{N} image: 2^J must not exceed the smaller side "
            f"({fix})")
    if padding == "periodic":
        if M % 2**J or N % 2**J:
            raise ValueError(
                f"padding='periodic' needs sizes divisible by 2^J={2**J}, got {M}x{N}; crop "
                f"the image or use padding='reflect'")
        return M, N
    return ((M + 2**J) // 2**J + 1) * 2**J, ((N + 2**J) // 2**J + 1) * 2**J


def _reflect_index(n: int, before: int, after: int) -> Tensor:
    """Indices of a reflect padding (``d c b | a b c d | c b a``) of any width: the signal
    extended with period ``2(n-1)``, as kymatio's padding does."""
    idx = torch.arange(-before, n + after)
    if n == 1:
        return torch.zeros_like(idx)
    p = 2 * (n - 1)
    idx = idx % p
    return torch.where(idx >= n, p - idx, idx)


def scattering_meta(J: int, L: int, max_order: int = 2) -> dict[str, list]:
    """For each output channel ``k``: its ``order``, scales ``j`` and angles ``theta``
    (tuples, kymatio's ``'j'`` / ``'theta'`` keys).

    >>> m = scattering_meta(2, 2)
    >>> m["order"], m["j"][-1], m["theta"][-1]
    ([0, 1, 1, 1, 1, 2, 2, 2, 2], (0, 1), (1, 1))
    """
    order, js, thetas = [0], [()], [()]
    for j1 in range(J):
        for t1 in range(L):
            order.append(1)
            js.append((j1,))
            thetas.append((t1,))
    if max_order == 2:
        for j1 in range(J):
            for t1 in range(L):
                for j2 in range(j1 + 1, J):
                    for t2 in range(L):
                        order.append(2)
                        js.append((j1, j2))
                        thetas.append((t1, t2))
    return {"order": order, "j": js, "theta": thetas}


class _Geometry:
    """Padding/unpadding of one input shape."""

    def __init__(self, shape: tuple[int, int], J: int, padding: str) -> None:
        self.shape = (int(shape[0]), int(shape[1]))
        self.J = J
        self.padding = padding
        self.padded = padded_shape(self.shape, J, padding)
        M, N = self.shape
        Mp, Np = self.padded
        if padding == "reflect":
            self.rows = _reflect_index(M, (Mp - M) // 2, (Mp - M + 1) // 2)
            self.cols = _reflect_index(N, (Np - N) // 2, (Np - N + 1) // 2)
            self.out_shape = (Mp // 2**J - 2, Np // 2**J - 2)
        else:
            self.out_shape = (M // 2**J, N // 2**J)

    def pad(self, x: Tensor) -> Tensor:
        if self.padding == "periodic":
            return x
        x = x.index_select(-2, self.rows.to(x.device))
        return x.index_select(-1, self.cols.to(x.device))

    def unpad(self, s: Tensor) -> Tensor:
        if self.padding == "periodic":
            return s
        return s[..., 1:-1, 1:-1]


def _check_image_tensor(x: Tensor) -> None:
    """Validate a real float32/float64 ``(..., H, W)`` input of the scattering front-ends."""
    if not isinstance(x, Tensor):
        raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() < 2:
        raise ValueError(f"x must have shape (..., H, W), got {tuple(x.shape)}")
    check_floating(x)
    if x.dtype not in (torch.float32, torch.float64):
        raise TypeError(f"x must be float32 or float64, got {x.dtype}; convert with x.float()")


def _prepare(x: Tensor, shape: tuple[int, int] | None) -> Tensor:
    _check_image_tensor(x)
    if shape is not None and tuple(x.shape[-2:]) != tuple(shape):
        raise ValueError(
            f"this Scattering2D was built for {shape[0]}x{shape[1]} inputs, got "
            f"{x.shape[-2]}x{x.shape[-1]}; build one with shape={tuple(x.shape[-2:])}")
    check_finite(x)
    return x


@functools.lru_cache(maxsize=4)
def _cached_bank(shape: tuple[int, int], J: int, L: int) -> MorletFilterBank:
    return morlet_filter_bank(shape, J, L, dtype=torch.float64)


@functools.lru_cache(maxsize=8)
def _cached_bank_as(shape: tuple[int, int], J: int, L: int, dtype: torch.dtype,
                    device: torch.device) -> MorletFilterBank:
    return _cached_bank(shape, J, L).to(dtype=dtype, device=device)


def bank_for(shape: tuple[int, int], J: int, L: int, x: Tensor) -> MorletFilterBank:
    """The Morlet bank of ``shape`` in ``x``'s dtype and on its device, built (in float64)
    and cast once, then cached: functional calls in a loop neither rebuild the filters nor
    copy them to the GPU again."""
    return _cached_bank_as(tuple(shape), J, L, x.dtype, x.device)


def empty_batch(fn: Callable[[Tensor], Tensor], x: Tensor) -> Tensor:
    """``fn(x)`` for an ``x`` ``(..., H, W)`` holding no image (a zero-size batch or channel
    dimension): the shape ``fn`` gives one ``(H, W)`` image, with ``x``'s leading dimensions,
    no values, and still connected to ``x`` for autograd (its gradient is empty)."""
    one = fn(x.new_zeros(x.shape[-2:]))
    return one.new_zeros(*x.shape[:-2], *one.shape) + x.sum() * 0


def _run(x: Tensor, geo: _Geometry, psi_levels: list[Tensor], phi_levels: list[Tensor],
         J: int, max_order: int, backend: Backend, memory_efficient: bool) -> Tensor:
    if x.numel() == 0:
        return empty_batch(lambda z: _run(z, geo, psi_levels, phi_levels, J, max_order,
                                          backend, memory_efficient), x)
    lead = x.shape[:-2]
    xs = geo.pad(x.reshape(-1, *x.shape[-2:]))
    psi = [p.to(dtype=x.dtype, device=x.device) for p in psi_levels]
    phi = [p.to(dtype=x.dtype, device=x.device) for p in phi_levels]
    s = scattering2d_core(xs.contiguous(), backend, psi, phi, J, max_order,
                          1 if geo.padding == "reflect" else 0, memory_efficient)
    return s.reshape(*lead, *s.shape[1:])


def scattering2d(x: Tensor, J: int, L: int = 8, max_order: int = 2, *,
                 padding: str = "reflect", backend: str | Backend = "auto",
                 memory_efficient: bool = True) -> Tensor:
    """2-D scattering transform of ``x`` ``(..., H, W)`` -> ``(..., K, H', W')``.

    ``K = 1 + J·L + L²·J(J-1)/2`` (order 2) or ``1 + J·L`` (order 1) channels in kymatio's
    order (see :func:`scattering_meta`); ``H' = H // 2^J`` (``"reflect"``; kymatio's
    padding) or ``H / 2^J`` (``"periodic"``, sizes divisible by ``2^J``). Differentiable
    with respect to ``x``. The filter bank of each shape is cached.

    Args:
        x: real float32/float64 tensor ``(..., H, W)`` with ``2^J <= min(H, W)``.
        J: number of scales (log2 of the averaging window).
        L: number of orientations.
        max_order: 1 or 2.
        padding: ``"reflect"`` (equals kymatio) or ``"periodic"`` (no padding).
        backend: ``"auto"``, ``"reference"``, ``"compiled"``, ``"torch"`` or a
            :class:`Backend` (see :mod:`.backend`).
        memory_efficient: keep no complex wavelet maps for the backward pass: compute
            them in small chunks, recomputed in the backward pass (about half the
            peak memory of forward+backward, ~20-50% more backward time; first-order
            gradients only). ``False`` stores them (fastest; double backward works).

    >>> x = torch.rand(2, 3, 32, 32)
    >>> tuple(scattering2d(x, J=2, L=4).shape)
    (2, 3, 25, 8, 8)
    """
    _check_params(J, L, max_order, padding)
    x = _prepare(x, None)
    geo = _Geometry(tuple(x.shape[-2:]), J, padding)
    fb = bank_for(geo.padded, J, L, x)
    return _run(x, geo, fb.psi_levels, fb.phi_levels, J, max_order, get_backend(backend),
                memory_efficient)


class Scattering2D(nn.Module):
    """2-D scattering transform module (kymatio's ``Scattering2D``), filters as buffers.

    Args:
        J: number of scales; ``2^J`` must not exceed the smaller side of ``shape``.
        shape: ``(H, W)`` of the inputs.
        L: number of orientations (default 8).
        max_order: 1 or 2 (default 2).
        padding: ``"reflect"`` (kymatio's padding, equal results) or ``"periodic"``.
        backend: ``"auto"`` (compiled ops when available), ``"reference"``, ``"compiled"``,
            ``"torch"`` or a :class:`Backend` (see :mod:`.backend`).
        memory_efficient: keep no complex wavelet maps for the backward pass but
            recompute them there, chunk by chunk (about 4 MB of maps each): roughly half
            the peak memory of forward+backward for ~20-40% more backward time.
            ``False`` stores them (fastest backward, most memory).

    Shape:
        ``(..., H, W)`` -> ``(..., K, H', W')`` with ``K`` = :attr:`n_coefficients` and
        ``(H', W')`` = :attr:`output_shape`; e.g. ``(B, C, H, W) -> (B, C, K, H/2^J, W/2^J)``.

    >>> S = Scattering2D(J=2, shape=(32, 48), L=4)
    >>> tuple(S(torch.rand(1, 3, 32, 48)).shape), S.n_coefficients
    ((1, 3, 25, 8, 12), 25)
    """

    def __init__(self, J: int, shape: tuple[int, int], L: int = 8, max_order: int = 2, *,
                 padding: str = "reflect", backend: str | Backend = "auto",
                 memory_efficient: bool = True) -> None:
        super().__init__()
        _check_params(J, L, max_order, padding)
        shape = _check_shape(shape)  # two positive ints
        self.J, self.L, self.max_order, self.padding = J, L, max_order, padding
        self.shape = (int(shape[0]), int(shape[1]))
        self.memory_efficient = memory_efficient
        self.backend = get_backend(backend)
        self._geo = _Geometry(self.shape, J, padding)
        fb = morlet_filter_bank(self._geo.padded, J, L, dtype=torch.float32)
        self._n_levels = len(fb.psi_levels)
        for r in range(self._n_levels):
            self.register_buffer(f"psi_{r}", fb.psi_levels[r])
            self.register_buffer(f"phi_{r}", fb.phi_levels[r])

    def _apply(self, fn, recurse: bool = True):  # noqa: ANN001, ANN202
        # .double() / .to(float64) would upcast the float32 filters (float32-accurate
        # results); refill them from the float64 bank instead, exactly like the functional
        super()._apply(fn, recurse)
        if self.psi_0.dtype == torch.float64:
            fb = _cached_bank(self._geo.padded, self.J, self.L)
            with torch.no_grad():
                for r in range(self._n_levels):
                    getattr(self, f"psi_{r}").copy_(fb.psi_levels[r])
                    getattr(self, f"phi_{r}").copy_(fb.phi_levels[r])
        return self

    @property
    def n_coefficients(self) -> int:
        """Number of output channels ``K``."""
        J, L = self.J, self.L
        return 1 + J * L + (L * L * J * (J - 1) // 2 if self.max_order == 2 else 0)

    @property
    def output_shape(self) -> tuple[int, int]:
        """Spatial size of the output."""
        return self._geo.out_shape

    def meta(self) -> dict[str, list]:
        """Order, scales and angles of each output channel (see :func:`scattering_meta`)."""
        return scattering_meta(self.J, self.L, self.max_order)

    def forward(self, x: Tensor) -> Tensor:
        x = _prepare(x, self.shape)
        psi = [getattr(self, f"psi_{r}") for r in range(self._n_levels)]
        phi = [getattr(self, f"phi_{r}") for r in range(self._n_levels)]
        return _run(x, self._geo, psi, phi, self.J, self.max_order, self.backend,
                    self.memory_efficient)

    def extra_repr(self) -> str:
        return (f"J={self.J}, shape={self.shape}, L={self.L}, max_order={self.max_order}, "
                f"padding={self.padding!r}, backend={self.backend.name!r}")
