"""Backend-agnostic scattering math (kymatio's ``core``): no padding, no filter building.

Every function here takes its modulus-convolution primitive as a :class:`~.backend.Backend`
argument and works on real ``(N, H, W)`` signals (the frontends flatten batch and channel
dimensions into ``N``). The hot step is always the same:

    rfft2(signal) -> filter_fold(all filters of one scale and resolution) -> ifft2 -> modulus

with all ``L`` orientations (and all scales sharing a fold factor) in one ``filter_fold``
call, and every second-order path of a ``(j1, j2)`` pair batched over ``(N·L1, L2)``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from difftransforms.ops.fft import rfft2, rfft2_adjoint

from .backend import Backend

__all__ = ["fold", "modulus_maps", "moments_core", "scattering2d_core"]

# The reference filter_fold materialises (N, F, H, W) complex values: split bigger batches.
FOLD_BUDGET_BYTES = 96 * 2**20


def fold(backend: Backend, xhat: Tensor, filters: Tensor, width: int, k: int) -> Tensor:
    """``backend.filter_fold`` over ``(N, H, W//2+1)`` with the batch split so that a
    materialising backend never builds more than :data:`FOLD_BUDGET_BYTES` at once."""
    n = xhat.shape[0]
    per_item = filters.shape[0] * xhat.shape[-2] * width * xhat.element_size() * 2
    if not backend.materializes or n * per_item <= FOLD_BUDGET_BYTES or n == 1:
        return backend.filter_fold(xhat, filters, width, k)
    step = max(1, FOLD_BUDGET_BYTES // per_item)
    return torch.cat([backend.filter_fold(xhat[i:i + step], filters, width, k)
                      for i in range(0, n, step)])


def _modulus_maps(backend: Backend, xhat: Tensor, filters: Tensor, width: int,
                  k: int) -> Tensor:
    return backend.modulus(backend.ifft2(fold(backend, xhat, filters, width, k)))


def modulus_maps(backend: Backend, xhat: Tensor, filters: Tensor, width: int, k: int,
                 recompute: bool = False) -> Tensor:
    """``|ifft2(filter_fold(xhat, filters, width, k))|``: ``(N, F, H/k, W/k)`` real maps of
    ``|x ⋆ ψ_f|`` sampled every ``k`` pixels.

    With ``recompute``, the complex maps (what the modulus needs for its gradient, twice the
    size of the result) are not kept for the backward pass but recomputed there from
    ``xhat`` (one more fold and inverse FFT)."""
    if recompute and torch.is_grad_enabled() and xhat.requires_grad:
        if backend.maps_vjp is not None and not filters.requires_grad:
            return _MapsRecompute.apply(backend, xhat, filters, width, k)
        return checkpoint(lambda xh: _modulus_maps(backend, xh, filters, width, k), xhat)
    return _modulus_maps(backend, xhat, filters, width, k)


class _MapsRecompute(torch.autograd.Function):
    """``|ifft2(filter_fold(xhat, filters))|`` keeping only ``xhat`` for the backward pass,
    where the backend's ``maps_vjp`` recomputes the complex maps and applies the adjoint
    directly (no autograd graph, no recomputed modulus). First-order gradients only."""

    @staticmethod
    def forward(ctx, backend: Backend, xhat: Tensor, filters: Tensor,  # type: ignore[override]
                width: int, k: int) -> Tensor:
        ctx.backend, ctx.width, ctx.k = backend, width, k
        ctx.save_for_backward(xhat, filters)
        return _modulus_maps(backend, xhat, filters, width, k)

    @staticmethod
    def backward(ctx, g: Tensor):  # type: ignore[override]
        if torch.is_grad_enabled():
            raise RuntimeError(_NO_DOUBLE_BACKWARD)
        xhat, filters = ctx.saved_tensors
        gx = ctx.backend.maps_vjp(xhat, filters, ctx.width, ctx.k, g)
        return None, gx, None, None, None


def _lowpass(backend: Backend, uhat: Tensor, phi: Tensor, width: int, k: int) -> Tensor:
    """``(N, h, w//2+1)`` spectra -> ``(N, h/k, w/k)`` real ``u ⋆ φ`` sampled every ``k``."""
    return backend.ifft2(fold(backend, uhat, phi[None], width, k))[:, 0].real


_NO_DOUBLE_BACKWARD = (
    "second-order gradients (create_graph=True) through a memory-efficient scattering "
    "transform are not supported; build it with memory_efficient=False")


class _Recompute(torch.autograd.Function):
    """``fn(x)`` that keeps only ``x`` for the backward pass and recomputes ``fn`` there (a
    minimal reentrant checkpoint: ``torch.utils.checkpoint`` costs ~150 MB of lazy imports
    on its first call). First-order gradients only: a ``create_graph`` backward raises a
    clear error instead of returning a gradient disconnected from ``x``."""

    @staticmethod
    def forward(ctx, fn: Callable[[Tensor], Tensor], x: Tensor) -> Tensor:  # type: ignore[override]
        ctx.fn = fn
        ctx.save_for_backward(x)
        with torch.no_grad():
            return fn(x)

    @staticmethod
    def backward(ctx, g: Tensor):  # type: ignore[override]
        if torch.is_grad_enabled():
            raise RuntimeError(_NO_DOUBLE_BACKWARD)
        (x,) = ctx.saved_tensors
        with torch.enable_grad():
            xd = x.detach().requires_grad_(True)
            out = ctx.fn(xd)
            # <g, out> as a scalar: autograd.grad with a grad_outputs tensor would import
            # torch.fx's symbolic shapes (sympy, ~36 MB) on its first call
            dot = (torch.view_as_real(out) * torch.view_as_real(g)).sum() if out.is_complex() \
                else (out * g).sum()
        (gx,) = torch.autograd.grad(dot, xd)
        return None, gx


def checkpoint(fn: Callable[[Tensor], Tensor], x: Tensor) -> Tensor:
    """``fn(x)``, recomputed in the backward pass instead of storing its intermediates."""
    return _Recompute.apply(fn, x)


# Peak working set allowed for one chunk of a memory-efficient batched call.
CHUNK_BUDGET_BYTES = 192 * 2**20
# Memory-efficient transforms split each modulus_maps call into chunks of complex maps of
# about 1/MAPS_FRACTION of the call's total, kept between MAPS_MIN_BYTES and
# MAPS_BUDGET_BYTES: small inputs get small chunks (the memory stays a fraction of storing
# everything), big batches big ones (few calls, full speed).
MAPS_BUDGET_BYTES = 16 * 2**20
MAPS_MIN_BYTES = 2**20
MAPS_FRACTION = 16


def run_batched(fn: Callable[[Tensor], Tensor], x: Tensor, per_item_bytes: int,
                memory_efficient: bool = True) -> Tensor:
    """``fn(x)`` for a function acting independently on each item of ``x``'s first dimension.

    With ``memory_efficient``, a batch whose estimated working set (``per_item_bytes`` per
    item) exceeds :data:`CHUNK_BUDGET_BYTES` is processed in chunks, each recomputed in the
    backward pass instead of storing its intermediates: the peak memory of forward+backward
    stays about one chunk's, for about one extra forward pass of time.
    """
    n = x.shape[0]
    chunk = max(1, CHUNK_BUDGET_BYTES // max(1, per_item_bytes))
    if not memory_efficient or n <= chunk:
        return fn(x)
    need_grad = torch.is_grad_enabled() and x.requires_grad
    return torch.cat([checkpoint(fn, xc) if need_grad else fn(xc) for xc in x.split(chunk)])


def lowpass_matrices(phi: Tensor, k: int, crop: int) -> tuple[Tensor, Tensor]:
    """Real ``(h, M)`` and ``(w, N)`` matrices ``C``, ``D`` with ``C @ u @ D.T`` equal to
    ``ifft2(fold(rfft2(u) · phi, k)).real`` (the low-pass ``u ⋆ φ`` sampled every ``k``
    pixels) without its ``crop`` outer rows and columns, for a separable low-pass
    ``phi`` ``(M, N)`` (the Gaussian ``φ_J`` of the Morlet bank is: its Fourier transform is
    the outer product of its first column and first row).

    The low-pass of the many second-order maps becomes two matrix products (a small
    circulant convolution evaluated only at the output samples) instead of an ``rfft2`` of
    every map: several times less work forward, and much less backward.
    """
    M, N = phi.shape
    p64 = phi.detach().to(torch.float64)
    a, b = p64[:, 0], p64[0, :] / p64[0, 0]

    def rows(f: Tensor, n: int) -> Tensor:
        c = torch.fft.ifft(f).real  # the 1-D impulse response (even: the real part is it)
        i = torch.arange(crop, n // k - crop, device=phi.device)
        m = torch.arange(n, device=phi.device)
        return c[(k * i[:, None] - m[None, :]) % n].to(phi.dtype)

    return rows(a, M), rows(b, N)


def spatial_lowpass(u: Tensor, C: Tensor, D: Tensor) -> Tensor:
    """``C @ u @ D.T`` over the last two dimensions of ``u`` ``(..., M, N)``: the first
    product is one large matrix multiplication over all maps."""
    lead = u.shape[:-2]
    M, N = u.shape[-2:]
    m, n = C.shape[0], D.shape[0]
    t = (u.reshape(-1, N) @ D.T).reshape(-1, M, n)  # (B, M, n)
    # the second product as one (m, M) @ (M, B·n) matrix product on the transposed (small)
    # intermediate: a broadcast matmul would be a bmm whose backward loops over the batch
    t = C @ t.transpose(0, 1).reshape(M, -1)  # (m, B·n)
    return t.reshape(m, -1, n).transpose(0, 1).reshape(*lead, m, n)


def _chunks(N: int, F: int, per_map: int) -> list[tuple[slice, slice]]:
    """``(rows, filters)`` slices covering an ``(N, F)`` grid of maps, each chunk holding
    about ``1/MAPS_FRACTION`` of the call's complex maps (between :data:`MAPS_MIN_BYTES`
    and :data:`MAPS_BUDGET_BYTES`): whole rows when a row fits, else one row split over
    the filters."""
    budget = min(MAPS_BUDGET_BYTES, max(MAPS_MIN_BYTES, N * F * per_map // MAPS_FRACTION))
    maps = max(1, budget // per_map)
    every = slice(0, F)
    if maps >= N * F:
        return [(slice(0, N), every)]
    if maps >= F:
        step = maps // F
        return [(slice(i, min(i + step, N)), every) for i in range(0, N, step)]
    fstep = -(-F // -(-F // maps))  # equal filter groups of at most `maps`
    return [(slice(i, i + 1), slice(f, min(f + fstep, F)))
            for i in range(N) for f in range(0, F, fstep)]


@dataclass(frozen=True)
class MapsGroup:
    """One family of modulus maps of a shared spectrum for :func:`maps_then_groups`:
    ``post(|ifft2(filter_fold(xhat, filters, width, k))|)``.

    ``post`` acts independently on each ``(row, filter)`` map and returns ``(rows, filters,
    ...)``. A *linear* ``post`` may come with its adjoint ``post_adjoint`` (the memory-
    efficient backward then applies it explicitly) and ``post_into(u, out)`` writing
    ``post(u)`` into ``out`` (chunks then land in the result without a copy).
    """

    filters: Tensor
    k: int
    post: Callable[[Tensor], Tensor]
    post_adjoint: Callable[[Tensor], Tensor] | None = None
    post_into: Callable[[Tensor, Tensor], object] | None = None


class _ChunkedMaps(torch.autograd.Function):
    """Every group's ``post(modulus_maps(xhat, filters, width, k))``, chunk by chunk, for
    linear posts with known adjoints, keeping only ``xhat`` for the backward pass.

    Forward: each chunk's maps are computed, passed through ``post`` and written into the
    group's preallocated output. Backward: per group and chunk, ``post_adjoint`` of the
    output gradient and the backend's ``maps_vjp`` (recomputed complex maps, adjoint
    applied directly), written or added into *one* gradient buffer for all groups. One
    autograd node per spectrum: no per-chunk graph, no concatenation of chunk outputs, no
    full-size gradient per group (each a fresh, page-faulted allocation) summed afterwards,
    and never more than one chunk's maps alive. First-order gradients only."""

    @staticmethod
    def forward(ctx, xhat: Tensor, backend: Backend, width: int,  # type: ignore[override]
                plan: list[tuple[MapsGroup, list[tuple[slice, slice]]]],
                *filters: Tensor) -> tuple[Tensor, ...]:
        ctx.backend, ctx.width, ctx.plan = backend, width, plan
        ctx.save_for_backward(xhat, *filters)  # the filters' version counters are checked
        outs = []
        for group, chunks in plan:
            out: Tensor | None = None
            for rows, fs in chunks:
                u = _modulus_maps(backend, xhat[rows], group.filters[fs], width, group.k)
                if out is None:
                    y = group.post(u)
                    out = y.new_empty((xhat.shape[0], group.filters.shape[0], *y.shape[2:]))
                    out[rows, fs] = y
                    del y
                elif group.post_into is not None:
                    group.post_into(u, out[rows, fs])  # contiguous: whole rows or one row
                else:
                    out[rows, fs] = group.post(u)
                del u
            assert out is not None
            outs.append(out)
        return tuple(outs)

    @staticmethod
    def backward(ctx, *grads: Tensor):  # type: ignore[override]
        if torch.is_grad_enabled():
            raise RuntimeError(_NO_DOUBLE_BACKWARD)
        xhat, *filters = ctx.saved_tensors
        gx: Tensor | None = None
        for (group, chunks), f, g in zip(ctx.plan, filters, grads, strict=True):
            split = any(fs.stop - fs.start < f.shape[0] for _, fs in chunks)
            if gx is None:  # the first group writes (or, split over filters, adds)
                gx = torch.zeros_like(xhat) if split else torch.empty_like(xhat)
                add = split
            else:
                add = True
            for rows, fs in chunks:
                assert group.post_adjoint is not None
                gu = group.post_adjoint(g[rows, fs])
                v = ctx.backend.maps_vjp(xhat[rows], f[fs], ctx.width, group.k, gu)
                del gu
                if add:
                    gx[rows] += v
                else:
                    gx[rows] = v
                del v
        return gx, None, None, None, *([None] * len(filters))


def spatial_lowpass_adjoint(g: Tensor, C: Tensor, D: Tensor) -> Tensor:
    """``C.T @ g @ D`` over the last two dimensions of ``g`` ``(..., m, n)``: the adjoint of
    :func:`spatial_lowpass`, ``(..., M, N)``."""
    lead = g.shape[:-2]
    m, n = g.shape[-2:]
    M, N = C.shape[1], D.shape[1]
    # C.T first, on the small maps: the transposes copy (B, m, n) and (M, B, n) tensors, and
    # the last product writes the large (B·M, N) result contiguous (no copy of it)
    t = C.T @ g.reshape(-1, m, n).transpose(0, 1).reshape(m, -1)  # (M, B·n)
    t = t.reshape(M, -1, n).transpose(0, 1).reshape(-1, n)  # (B·M, n)
    return (t @ D).reshape(*lead, M, N)


def maps_then(backend: Backend, xhat: Tensor, filters: Tensor, width: int, k: int,
              post: Callable[[Tensor], Tensor], memory_efficient: bool,
              post_adjoint: Callable[[Tensor], Tensor] | None = None,
              post_into: Callable[[Tensor, Tensor], object] | None = None) -> Tensor:
    """``post(modulus_maps(xhat, filters, width, k))``: :func:`maps_then_groups` for one
    :class:`MapsGroup`."""
    group = MapsGroup(filters, k, post, post_adjoint, post_into)
    return maps_then_groups(backend, xhat, width, [group], memory_efficient)[0]


def maps_then_groups(backend: Backend, xhat: Tensor, width: int, groups: list[MapsGroup],
                     memory_efficient: bool) -> list[Tensor]:
    """``group.post(modulus_maps(xhat, group.filters, width, group.k))`` for every group.

    With ``memory_efficient``, the maps are computed in chunks of rows (or of filters, for a
    single row) holding about ``1/MAPS_FRACTION`` of the call's complex maps (between
    :data:`MAPS_MIN_BYTES` and :data:`MAPS_BUDGET_BYTES`), each followed by ``post`` and
    recomputed in the backward pass: the full-resolution complex maps of the whole batch
    never exist at once, and none is stored for the backward pass. When every ``post`` is
    linear with a known adjoint (and the backend has ``maps_vjp``), all groups run as one
    autograd node (:class:`_ChunkedMaps`) with one gradient buffer.
    """
    if not memory_efficient:
        return [g.post(modulus_maps(backend, xhat, g.filters, width, g.k)) for g in groups]
    N = xhat.shape[0]
    plan = [(g, _chunks(N, g.filters.shape[0],
                        (xhat.shape[-2] // g.k) * (width // g.k) * xhat.element_size()))
            for g in groups]
    need_x = torch.is_grad_enabled() and xhat.requires_grad
    need_f = torch.is_grad_enabled() and any(g.filters.requires_grad for g in groups)
    if not need_x and not need_f:
        with torch.no_grad():
            return list(_ChunkedMaps.forward(_NoCtx(), xhat, backend, width, plan))
    if (not need_f and backend.maps_vjp is not None
            and all(g.post_adjoint is not None for g in groups)):
        return list(_ChunkedMaps.apply(xhat, backend, width, plan,
                                       *[g.filters for g in groups]))

    def run(g: MapsGroup, rows: slice, fs: slice) -> Tensor:
        return g.post(modulus_maps(backend, xhat[rows], g.filters[fs], width, g.k,
                                   recompute=True))

    def cat(parts: list[Tensor], dim: int) -> Tensor:
        return parts[0] if len(parts) == 1 else torch.cat(parts, dim)

    outs = []
    for g, chunks in plan:
        rows_parts: dict[tuple[int, int], list[Tensor]] = {}  # filter groups of each row chunk
        for rows, fs in chunks:
            rows_parts.setdefault((rows.start, rows.stop), []).append(run(g, rows, fs))
        outs.append(cat([cat(p, 1) for p in rows_parts.values()], 0))
    return outs


class _NoCtx:
    """Stand-in for an autograd context when :class:`_ChunkedMaps` runs without autograd."""

    def save_for_backward(self, *tensors: Tensor) -> None:
        pass


def scattering2d_core(x: Tensor, backend: Backend, psi_levels: list[Tensor],
                      phi_levels: list[Tensor], J: int, max_order: int,
                      crop: int = 0, memory_efficient: bool = False) -> Tensor:
    """Scattering coefficients ``(N, K, h, w)`` of real signals ``x`` ``(N, M, N')`` (already
    padded to sizes divisible by ``2^J``), in kymatio's order: order 0; order 1 by
    ``(j1, θ1)``; order 2 by ``(j1, θ1, j2, θ2)`` with ``j2 > j1``.

    Args:
        psi_levels: ``psi_levels[r]`` ``(J, L, M/2^r, N'/2^r)`` wavelets for resolution ``r``.
        phi_levels: ``phi_levels[r]`` ``(M/2^r, N'/2^r)`` low-pass for resolution ``r``.
        crop: rows and columns removed on each side of the ``(M/2^J, N'/2^J)`` low-passed
            maps (1 for kymatio's reflect padding, 0 for periodic signals).
        memory_efficient: compute the modulus maps in small chunks recomputed in the
            backward pass (see :func:`maps_then`): the memory of forward+backward is the
            spectra of the first-order maps plus one chunk, for one more fold and inverse
            FFT per map in the backward pass (first-order gradients only).
    """
    n, M, W = x.shape
    L = psi_levels[0].shape[1]
    me = memory_efficient

    def unpad(t: Tensor) -> Tensor:
        return t[..., crop:t.shape[-2] - crop, crop:t.shape[-1] - crop] if crop else t

    xhat = backend.rfft2(x)
    # second-order low-pass operators, one pair per j2 (shared by every j1 < j2)
    lowpass = ({j2: lowpass_matrices(phi_levels[j2], 2 ** (J - j2), crop)
                for j2 in range(1, J)} if max_order == 2 else {})
    out = [unpad(_lowpass(backend, xhat, phi_levels[0], W, 2**J))[:, None]]
    s1: list[Tensor] = []
    s2: list[Tensor] = []
    for j1 in range(J):
        h1, w1 = M // 2**j1, W // 2**j1
        # the ops' rfft2 (half spectrum) has an explicit adjoint and writes in place
        ours = backend.rfft2 is rfft2
        adj1 = (lambda g, h1=h1, w1=w1: rfft2_adjoint(g, (h1, w1))) if ours else None
        into1 = (lambda u, out: rfft2(u, out=out)) if ours else None
        u1hat = maps_then(backend, xhat, psi_levels[0][j1], W, 2**j1, backend.rfft2, me, adj1,
                          into1)
        u1hat = u1hat.reshape(n * L, h1, -1)  # (n·L, h1, w1//2+1)
        s1.append(unpad(_lowpass(backend, u1hat, phi_levels[j1], w1, 2 ** (J - j1)))
                  .reshape(n, L, *out[0].shape[-2:]))
        if max_order < 2 or j1 == J - 1:
            continue
        groups = []
        for j2 in range(j1 + 1, J):
            C, D = lowpass[j2]

            def post(u2: Tensor, C: Tensor = C, D: Tensor = D) -> Tensor:
                return spatial_lowpass(u2, C, D)

            def adj(g: Tensor, C: Tensor = C, D: Tensor = D) -> Tensor:
                return spatial_lowpass_adjoint(g, C, D)

            groups.append(MapsGroup(psi_levels[j1][j2], 2 ** (j2 - j1), post, adj))
        # every j2 of this j1 in one call: one node, one gradient buffer for u1hat
        blocks = [s.reshape(n, L, 1, L, *s.shape[-2:])
                  for s in maps_then_groups(backend, u1hat, w1, groups, me)]
        # (n, L1, j2, L2, h, w): kymatio's (θ1, j2, θ2) order within j1
        s2.append(torch.cat(blocks, dim=2).reshape(n, -1, *blocks[0].shape[-2:]))
    return torch.cat(out + s1 + s2, dim=1)


def moments_core(x: Tensor, backend: Backend, psi_levels: list[Tensor], J: int, *,
                 max_order: int = 2, oversampling: int = 0) -> tuple[Tensor, Tensor | None]:
    """Spatial means of scattering moduli of periodic signals ``x`` ``(N, H, W)``.

    Returns ``S1`` ``(N, J, L)`` = ``mean |x ⋆ ψ_{j,θ}|`` and ``S2`` ``(N, P)`` =
    ``mean ||x ⋆ ψ_{j1,θ1}| ⋆ ψ_{j2,θ2}|`` for ``j2 > j1`` in kymatio's ``(j1, θ1, j2, θ2)``
    order (``None`` when ``max_order == 1``).

    Every map at scale ``j`` is computed exactly (no aliasing: ``filter_fold`` subsamples
    the exact convolution) on the grid subsampled by ``2^r``, ``r = max(j - oversampling, 0)``
    (capped by the largest power of two dividing ``H`` and ``W``, and by ``len(psi_levels)``).
    ``oversampling=0`` is kymatio's critical sampling (second-order maps are then exactly
    kymatio's ``U2`` maps); each extra step doubles the grids and brings the means closer to
    full-resolution means (``2``: ~1e-6).
    """
    n, H, W = x.shape
    L = psi_levels[0].shape[1]
    r_max = len(psi_levels) - 1

    def res(j: int) -> int:
        return min(max(j - oversampling, 0), r_max)

    xhat = backend.rfft2(x)
    # order 1, scales sharing a resolution in one call
    u1s: dict[int, Tensor] = {}
    for r in sorted({res(j) for j in range(J)}):
        js = [j for j in range(J) if res(j) == r]
        filt = psi_levels[0][js].reshape(len(js) * L, H, W)
        u = modulus_maps(backend, xhat, filt, W, 2**r).reshape(n, len(js), L, *[
            s // 2**r for s in (H, W)])
        for i, j in enumerate(js):
            u1s[j] = u[:, i]
    s1 = torch.stack([u1s[j].mean(dim=(-2, -1)) for j in range(J)], dim=1)
    if max_order < 2 or J < 2:
        return s1, None
    s2: list[Tensor] = []
    for j1 in range(J - 1):
        r1 = res(j1)
        u1 = u1s[j1]
        h1, w1 = u1.shape[-2:]

        def second(u1: Tensor, j1: int = j1, r1: int = r1, h1: int = h1,
                   w1: int = w1) -> Tensor:
            u1hat = backend.rfft2(u1).reshape(n * L, h1, -1)
            means: dict[int, Tensor] = {}
            j2s = list(range(j1 + 1, J))
            for r2 in sorted({res(j2) for j2 in j2s}):
                grp = [j2 for j2 in j2s if res(j2) == r2]
                filt = psi_levels[r1][grp].reshape(len(grp) * L, h1, w1)
                m = modulus_maps(backend, u1hat, filt, w1, 2 ** (r2 - r1)).mean(dim=(-2, -1))
                m = m.reshape(n, L, len(grp), L)
                for i, j2 in enumerate(grp):
                    means[j2] = m[:, :, i]
            # (n, L1, j2, L2)
            return torch.stack([means[j2] for j2 in j2s], dim=2).reshape(n, -1)

        s2.append(second(u1))
    return s1, torch.cat(s2, dim=1)
