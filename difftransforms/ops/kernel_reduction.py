r"""Kernel reductions with linear memory: ``a_i = sum_j k(x_i, y_j) b_j``, kernel norms, MMD.

The dense PyTorch way, ``torch.exp(-torch.cdist(x, y) ** 2 / s**2) @ b``, stores the
``N x M`` kernel matrix (and autograd keeps several of them for the backward): 10 GB at
``N = M = 5e4``. Here the reduction is computed tile by tile (a few thousand rows and columns
at a time) and the backward passes recompute the tiles, so memory is ``O((N + M) (D + E))``
at any derivative order (the KeOps idea, see :mod:`.kernel_tiles`). Each tile is a handful of
matrix products: squared distances ``|x|^2 + |y|^2 - 2 x y^T`` in one GEMM on augmented
coordinates, ``exp`` in place, then ``K @ b``; the gradient tile is ``K^T g`` plus
``W = K * (g b^T)``, ``W @ y`` and ``W.sum(1) * x`` — no per-pair autograd graph.

Kernels (``r = |x - y|``, Euclidean; ``sigma > 0``):

=============  =======================  ==================================================
``kernel``     ``k(x, y)``              notes
=============  =======================  ==================================================
gaussian       ``exp(-r^2 / sigma^2)``  the talk's convention: ``/ sigma^2``, not ``2 sigma^2``
laplacian      ``exp(-r / sigma)``      gradient at ``x = y`` set to 0 (no NaN)
energy         ``-r``                   energy-distance kernel; ``sigma`` unused (grad 0);
                                        gradient at ``x = y`` set to 0 (no NaN)
=============  =======================  ==================================================

Kernel values below ``exp(-87)`` (float32; ``exp(-700)`` in float64) are rounded up to that
floor in the fast tiles: computing ``exp`` of more negative arguments is 10-30x slower on CPU.

Precision: squared distances come from a GEMM on coordinates centred per tile, so they carry
an absolute error of a few ``eps * R^2`` (``R``: radius of the tile's points, ``eps`` the
machine epsilon); pairs with ``r^2`` below that level count as coincident (``r = 0``).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from .kernel_cluster import block_sparse_plan, kd_order
from .kernel_tiles import TilePlan, TileSpec, VJPSpec, tile_reduce

__all__ = [
    "KERNELS",
    "kernel_sum",
    "kernel_norm",
    "mmd",
    "median_heuristic",
    "feature_mmd",
    "KernelSum",
    "MMDLoss",
]

KERNELS = ("gaussian", "laplacian", "energy")

_DEFAULT_BLOCK = {"cpu": 512, "cuda": 8192}


# ----------------------------------------------------------------------------- tile algebra


# exp() of arguments whose result is subnormal or 0 takes a 10-30x slower path on CPU; kernel
# values below exp(floor) (1.6e-38 in float32, 1e-304 in float64) are rounded up to it.
_EXP_FLOOR = {torch.float32: -87.0, torch.float64: -700.0, torch.float16: -9.0,
              torch.bfloat16: -87.0}


def _center(x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
    """Translate both clouds by the (detached) mean of ``x``: kernels are translation
    invariant and the GEMM distance formula is more precise near the origin."""
    c = x.detach().mean(-2, keepdim=True)
    return x - c, y - c


def _sq(x: Tensor) -> Tensor:
    return (x * x).sum(-1, keepdim=True)


def _t(x: Tensor) -> Tensor:
    """``(B, n, k) -> (B, k, n)`` contiguous: BLAS is much faster with the long dimension of
    both small-inner-dimension operands contiguous (``A @ B`` with ``B`` = ``(k, n)`` rows)."""
    return x.transpose(1, 2).contiguous()


def _gemm_sqdist(x: Tensor, y: Tensor, scale: float = 1.0) -> tuple[Tensor, Tensor]:
    """``scale * |x_i - y_j|^2`` as one batched GEMM on augmented coordinates
    ``[x, |x|^2, 1] . [-2 y, 1, |y|^2]``; also returns the coincidence tolerance on ``r^2``."""
    x2, y2 = _sq(x), _sq(y)
    xt = torch.cat([x, x2, torch.ones_like(x2)], -1)
    yt = torch.cat([y * (-2.0 * scale), torch.full_like(y2, scale), y2 * scale], -1)
    s = torch.bmm(xt, _t(yt))
    if x.numel() and y.numel():
        tol = 16 * torch.finfo(x.dtype).eps * (x2.amax() + y2.amax())
    else:
        tol = x.new_zeros(())
    return s, tol


def _fast_kernel(kind: str, x: Tensor, y: Tensor, sig: float, keep: bool
                 ) -> tuple[Tensor, Tensor | None]:
    """Kernel tile ``k`` (fresh tensor, no autograd) and an auxiliary tile for derivatives:
    ``e = -r^2/sigma^2`` (gaussian, only if ``keep``) or ``r`` (laplacian/energy, if ``keep``)."""
    lo = _EXP_FLOOR[x.dtype]
    if kind == "gaussian":
        e, _ = _gemm_sqdist(x, y, -1.0 / sig**2)
        e.clamp_(lo, 0.0)
        if keep:
            return e.exp(), e
        return e.exp_(), None
    s, tol = _gemm_sqdist(x, y)
    r = s.masked_fill_(s <= tol, 0.0).sqrt_()
    if kind == "laplacian":
        k = (r.mul(-1.0 / sig) if keep else r.mul_(-1.0 / sig)).clamp_min_(lo).exp_()
    else:
        k = r.neg() if keep else r.neg_()
    return k, (r if keep else None)


def _dk_dsigma(kind: str, k: Tensor, aux: Tensor, sig: float) -> Tensor | None:
    """``d k / d sigma`` tile (``None`` when identically 0)."""
    if kind == "gaussian":
        return k * aux * (-2.0 / sig)  # k * 2 r^2 / sigma^3
    if kind == "laplacian":
        return k * aux * (1.0 / sig**2)  # k * r / sigma^2
    return None


def _psi_inplace(kind: str, k: Tensor, aux: Tensor | None, sig: float
                 ) -> tuple[Tensor, float]:
    """``(w, scale)`` with ``d k(x_i, y_j) / d x_i = scale * w_ij * (x_i - y_j)``; may reuse
    (overwrite) ``k`` and ``aux``; ``w = 0`` where ``r = 0`` for laplacian/energy."""
    if kind == "gaussian":
        return k, -2.0 / sig**2
    assert aux is not None
    inv_r = aux.masked_fill_(aux == 0, math.inf).reciprocal_()
    if kind == "laplacian":
        return inv_r.mul_(k), -1.0 / sig
    return inv_r, -1.0


def _geo_grads(w: Tensor, x: Tensor, y: Tensor, need_x: bool, need_y: bool
               ) -> tuple[Tensor | None, Tensor | None]:
    """``sum_j w_ij (x_i - y_j)`` (B, bi, D) and ``sum_i w_ij (y_j - x_i)`` (B, bj, D) as two
    GEMMs against ``[y, 1]`` and ``[x, 1]`` (the row/column sums of ``w`` come for free)."""
    gx = gy = None
    if need_x:
        r = torch.bmm(w, _t(torch.cat([y, torch.ones_like(y[..., :1])], -1)).transpose(1, 2))
        gx = x * r[..., -1:] - r[..., :-1]
    if need_y:
        r = torch.bmm(_t(torch.cat([x, torch.ones_like(x[..., :1])], -1)), w).transpose(1, 2)
        gy = y * r[..., -1:] - r[..., :-1]
    return gx, gy


def _ref_kernel(kind: str, x: Tensor, y: Tensor, sigma: Tensor) -> Tensor:
    """Differentiable kernel tile (used for derivatives of order >= 2)."""
    xc, yc = _center(x, y)
    x2, y2 = _sq(xc), _sq(yc)
    s = (x2 + y2.transpose(1, 2) - 2.0 * torch.bmm(xc, yc.transpose(1, 2))).clamp_min(0.0)
    if kind == "gaussian":
        return torch.exp(-s / sigma**2)
    tol = 16 * torch.finfo(x.dtype).eps * (x2.detach().amax() + y2.detach().amax())
    pos = s > tol
    r = torch.where(pos, torch.sqrt(torch.where(pos, s, torch.ones_like(s))), 0.0)
    if kind == "laplacian":
        return torch.exp(-r / sigma)
    return -r


class KernelSumSpec(TileSpec):
    """``a_i = sum_j k(x_i, y_j) b_j``: xs = [x], ys = [y, b], ps = [sigma]."""

    def __init__(self, kind: str, sig: float) -> None:
        self.kind, self.sig = kind, sig

    def out_shapes(self, xs, ys, ps):
        return [tuple(ys[1].shape[2:])], [], []

    def tile(self, xs, ys, ps, fast):
        (x,), (y, b) = xs, ys
        if fast:
            xc, yc = _center(x, y)
            k, _ = _fast_kernel(self.kind, xc, yc, self.sig, keep=False)
            return [torch.bmm(k, _t(b).transpose(1, 2))], [], []
        return [torch.bmm(_ref_kernel(self.kind, x, y, ps[0]), b)], [], []

    def vjp(self, need, has, nx, ny, np_):
        return KernelSumVJPSpec(self, need, has, nx, ny, np_)


class KernelSumVJPSpec(VJPSpec):
    """Hand-written first derivative of :class:`KernelSumSpec` (2-5 GEMMs per tile); higher
    orders go through the generic :class:`VJPSpec` on the reference tile."""

    def tile(self, xs, ys, ps, fast):
        if not fast:
            return super().tile(xs, ys, ps, fast)
        base: KernelSumSpec = self.base  # type: ignore[assignment]
        kind, sig = base.kind, base.sig
        (x, g), (y, b) = xs, ys
        nx_, ny_, nb_, ns_ = self.need
        xc, yc = _center(x, y)
        need_geo = nx_ or ny_
        k, aux = _fast_kernel(kind, xc, yc, sig, keep=(ns_ or (need_geo and kind != "gaussian")))
        oi: list[Tensor] = []
        oj: list[Tensor] = []
        op: list[Tensor] = []
        gb = torch.bmm(_t(g), k).transpose(1, 2) if nb_ else None
        if need_geo or ns_:
            c = torch.bmm(g, _t(b))
            if ns_:
                dk = _dk_dsigma(kind, k, aux, sig)  # type: ignore[arg-type]
                op.append((dk * c).sum() if dk is not None else x.new_zeros(()))
            if need_geo:
                w, scale = _psi_inplace(kind, k, aux, sig)
                w.mul_(c)
                gx, gy = _geo_grads(w, xc, yc, nx_, ny_)
                if gx is not None:
                    oi.append(gx.mul_(scale))
                if gy is not None:
                    oj.append(gy.mul_(scale))
        if nb_:
            oj.append(gb)  # type: ignore[arg-type]
        return oi, oj, op


# ----------------------------------------------------------------------------- validation


def _check_kernel(kernel: str) -> None:
    if kernel not in KERNELS:
        raise ValueError(f"unknown kernel {kernel!r}; choose one of {', '.join(KERNELS)}")


def _as_sigma(sigma: float | Tensor, ref: Tensor, kernel: str) -> Tensor:
    if isinstance(sigma, Tensor):
        if sigma.numel() != 1:
            raise ValueError(f"sigma must be a scalar, got shape {tuple(sigma.shape)}")
        s = sigma.reshape(()).to(dtype=ref.dtype, device=ref.device)
    else:
        s = torch.tensor(float(sigma), dtype=ref.dtype, device=ref.device)
    if kernel != "energy" and not float(s.detach()) > 0:
        raise ValueError(f"sigma must be > 0 for the {kernel} kernel, got {float(s.detach())}")
    return s


def _check_points(t: Tensor, name: str, ndim_min: int = 2) -> None:
    if not isinstance(t, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if not t.is_floating_point() or t.is_complex():
        raise TypeError(f"{name} must be a real floating-point tensor, got {t.dtype}; "
                        f"convert with {name}.float()")
    if t.dtype in (torch.float16, torch.bfloat16):
        raise TypeError(f"{name} is {t.dtype}: kernel reductions need float32 or float64 (in "
                        f"half precision the squared distances and the exponentials lose "
                        f"the small kernel values); convert with {name}.float()")
    if t.dim() < ndim_min:
        raise ValueError(f"{name} must have shape (..., N, D), got {tuple(t.shape)}")


def _block_size(block_size: int | None, device: torch.device) -> int:
    if block_size is None:
        return _DEFAULT_BLOCK.get(device.type, 4096)
    if block_size < 1:
        raise ValueError(f"block_size must be >= 1, got {block_size}")
    return int(block_size)


# ----------------------------------------------------------------------------- public API


def kernel_sum(x: Tensor, y: Tensor, b: Tensor, kernel: str = "gaussian",
               sigma: float | Tensor = 1.0, *, eps: float | None = None,
               block_size: int | None = None) -> Tensor:
    r"""Kernel reduction ``a_i = sum_j k(x_i, y_j) b_j`` with ``O((N + M)(D + E))`` memory.

    Args:
        x: ``(..., N, D)`` points where the result is evaluated.
        y: ``(..., M, D)`` source points.
        b: ``(..., M, E)`` (or ``(..., M)``) weights carried by ``y``. A ``b`` with one
            dimension fewer than ``y`` and ``M`` entries last is always read as ``(..., M)``
            scalars; give ``(M, E)`` weights for a batched ``y`` their batch dimensions.
        kernel: ``"gaussian"`` ``exp(-|x-y|^2/sigma^2)``, ``"laplacian"``
            ``exp(-|x-y|/sigma)`` or ``"energy"`` ``-|x-y|`` (``sigma`` unused).
        sigma: scale, a float or a scalar tensor (differentiable).
        eps: if given (gaussian/laplacian), use the block-sparse, cluster-aware reduction:
            points are sorted into k-d tree blocks and tiles whose kernel bound is negligible
            are skipped, with the guarantee ``max_i |a_i - a~_i|_2 <= eps`` (see
            :mod:`.kernel_cluster`). Near-linear time when ``sigma`` is small vs the cloud.
        block_size: rows/columns per tile (default 512 on CPU, 8192 on CUDA).

    Returns:
        ``(..., N, E)`` (or ``(..., N)``), leading dims broadcast between ``x``, ``y``, ``b``.
        Differentiable w.r.t. ``x``, ``y``, ``b`` and ``sigma`` to any order.

    >>> x, y, b = torch.randn(5, 3), torch.randn(7, 3), torch.randn(7, 2)
    >>> dense = torch.exp(-torch.cdist(x, y) ** 2 / 0.5**2) @ b
    >>> torch.allclose(kernel_sum(x, y, b, sigma=0.5), dense, atol=1e-6)
    True
    """
    _check_kernel(kernel)
    _check_points(x, "x")
    _check_points(y, "y")
    _check_points(b, "b", 1)
    m_ = y.shape[-2]
    # one fixed rule (whatever the batch sizes): b with one dimension fewer than y and M
    # entries last holds one scalar per point of y
    vec = b.dim() == 1 or (b.dim() == y.dim() - 1 and b.shape[-1] == m_)
    if vec:
        b = b.unsqueeze(-1)
    if x.shape[-1] != y.shape[-1]:
        raise ValueError(f"x and y must have the same last dimension D, got {tuple(x.shape)} "
                         f"and {tuple(y.shape)}")
    if b.shape[-2] != y.shape[-2]:
        raise ValueError(f"b must have one row per point of y: y is {tuple(y.shape)}, "
                         f"b is {tuple(b.shape)}")
    if not (x.dtype == y.dtype == b.dtype) or not (x.device == y.device == b.device):
        raise TypeError(f"x, y, b must share dtype and device, got {x.dtype}/{x.device}, "
                        f"{y.dtype}/{y.device}, {b.dtype}/{b.device}")
    try:
        batch = torch.broadcast_shapes(x.shape[:-2], y.shape[:-2], b.shape[:-2])
    except RuntimeError:
        raise ValueError(f"batch dimensions of x {tuple(x.shape)}, y {tuple(y.shape)} and "
                         f"b {tuple(b.shape)} do not broadcast") from None
    sig = _as_sigma(sigma, x, kernel)
    n, d, m, e = x.shape[-2], x.shape[-1], y.shape[-2], b.shape[-1]
    nb = math.prod(batch)
    x3 = x.expand(*batch, n, d).reshape(nb, n, d).contiguous()
    y3 = y.expand(*batch, m, d).reshape(nb, m, d).contiguous()
    b3 = b.expand(*batch, m, e).reshape(nb, m, e).contiguous()
    bs = _block_size(block_size, x.device)
    spec = KernelSumSpec(kernel, float(sig.detach()))
    if eps is None:
        plan = TilePlan.dense(n, m, bs, bs)
        (a,) = tile_reduce(spec, plan, [x3], [y3, b3], [sig])
    else:
        a = _kernel_sum_sparse(spec, x3, y3, b3, sig, eps, block_size)
    a = a.reshape(*batch, n, e)
    return a.squeeze(-1) if vec else a


def _kernel_sum_sparse(spec: KernelSumSpec, x: Tensor, y: Tensor, b: Tensor, sig: Tensor,
                       eps: float, block_size: int | None) -> Tensor:
    if spec.kind == "energy":
        raise ValueError("eps (block-sparse reduction) needs a decaying kernel: gaussian or "
                         "laplacian, not energy")
    if not eps >= 0:
        raise ValueError(f"eps must be >= 0, got {eps}")
    block = 256 if block_size is None else int(block_size)
    outs = []
    for i in range(x.shape[0]):
        px, py = kd_order(x[i].detach(), block), kd_order(y[i].detach(), block)
        xs, ys, bs = x[i].index_select(0, px), y[i].index_select(0, py), b[i].index_select(0, py)
        plan, _ = block_sparse_plan(xs.detach(), ys.detach(), bs.detach(), spec.kind, spec.sig,
                                    eps, block=block)
        (a,) = tile_reduce(spec, plan, [xs[None]], [ys[None], bs[None]], [sig])
        inv = torch.empty_like(px)
        inv[px] = torch.arange(px.numel(), device=px.device)
        outs.append(a[0].index_select(0, inv))
    return torch.stack(outs) if outs else x.new_zeros(0, x.shape[1], b.shape[2])


def sparsity_stats(x: Tensor, y: Tensor, b: Tensor, kernel: str = "gaussian",
                   sigma: float = 1.0, eps: float = 1e-6, block_size: int = 256
                   ) -> dict[str, float]:
    """Fraction of kernel evaluations the block-sparse plan performs for ``(N, D)`` inputs
    (``density``) and the error bound it guarantees (``bound`` <= ``eps``)."""
    px, py = kd_order(x, block_size), kd_order(y, block_size)
    b2 = b if b.dim() == 2 else b[:, None]
    _, stats = block_sparse_plan(x[px], y[py], b2[py], kernel, sigma, eps, block=block_size)
    return stats


# ---------------------------------------------------------------- fused symmetric kernel norm


def _kernel_norm_fused(q: Tensor, p: Tensor, kind: str, sig: float, bs: int, need_q: bool,
                       need_s: bool) -> tuple[Tensor, Tensor, Tensor | None, Tensor | None]:
    """One sweep over the tiles ``I <= J`` of the symmetric matrix: returns ``H``,
    ``a = K p`` (= dH/dp) and optionally dH/dq, dH/dsigma."""
    bsz, n, _ = q.shape
    a = torch.zeros_like(p)
    pt = _t(p)
    at = torch.zeros_like(pt)
    gq = torch.zeros_like(q) if need_q else None
    gs = q.new_zeros(bsz) if need_s else None
    starts = list(range(0, n, bs))
    keep = need_s or (need_q and kind != "gaussian")
    for ii, i0 in enumerate(starts):
        i1 = min(i0 + bs, n)
        qi, pi = q[:, i0:i1], p[:, i0:i1]
        for j0 in starts[ii:]:
            j1 = min(j0 + bs, n)
            diag = j0 == i0
            qj = q[:, j0:j1]
            qic, qjc = _center(qi, qj)
            k, aux = _fast_kernel(kind, qic, qjc, sig, keep)
            pjt = pt[:, :, j0:j1]
            a[:, i0:i1].baddbmm_(k, pjt.transpose(1, 2))
            if not diag:
                at[:, :, j0:j1].baddbmm_(pt[:, :, i0:i1], k)
            if not (need_q or need_s):
                continue
            c = torch.bmm(pi, pjt)
            if need_s:
                dk = _dk_dsigma(kind, k, aux, sig)  # type: ignore[arg-type]
                if dk is not None:
                    gs += (dk * c).sum((1, 2)) * (0.5 if diag else 1.0)
            if need_q:
                w, scale = _psi_inplace(kind, k, aux, sig)
                w.mul_(c)
                gi, gj = _geo_grads(w, qic, qjc, True, not diag)
                gq[:, i0:i1] += gi.mul_(scale)  # type: ignore[union-attr]
                if gj is not None:
                    gq[:, j0:j1] += gj.mul_(scale)
    a += at.transpose(1, 2)
    h = 0.5 * (p * a).sum((1, 2))
    return h, a, gq, gs


class _KernelNorm(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q: Tensor, p: Tensor, sigma: Tensor, kind: str,  # type: ignore[override]
                bs: int) -> Tensor:
        need_q, need_p, need_s = q.requires_grad, p.requires_grad, sigma.requires_grad
        h, a, gq, gs = _kernel_norm_fused(q, p, kind, float(sigma), bs, need_q,
                                          need_s and kind != "energy")
        if need_s and gs is None:
            gs = q.new_zeros(q.shape[0])
        ctx.kind, ctx.bs = kind, bs
        ctx.save_for_backward(q, p, sigma, gq if need_q else None, a if need_p else None,
                              gs if need_s else None)
        return h

    @staticmethod
    def backward(ctx, gh: Tensor):  # type: ignore[override]
        q, p, sigma, gq, gp, gs = ctx.saved_tensors
        nq, np_, ns = ctx.needs_input_grad[:3]
        if torch.is_grad_enabled():  # create_graph: differentiable recomputation
            wrt = [t for t, n in zip((q, p, sigma), (nq, np_, ns), strict=False) if n]
            with torch.enable_grad():
                a = kernel_sum(q, q, p, ctx.kind, sigma, block_size=ctx.bs)
                h = 0.5 * (p * a).sum((1, 2))
                grads = iter(torch.autograd.grad(h, wrt, gh, create_graph=True,
                                                 allow_unused=True))
            out = [next(grads) if n else None for n in (nq, np_, ns)]
            out = [torch.zeros_like(t) if (n and o is None) else o
                   for o, t, n in zip(out, (q, p, sigma), (nq, np_, ns), strict=False)]
            return (*out, None, None)
        g3 = gh[:, None, None]
        return (gq * g3 if nq else None, gp * g3 if np_ else None,
                (gs * gh).sum() if ns else None, None, None)


def kernel_norm(q: Tensor, p: Tensor, sigma: float | Tensor = 1.0, kernel: str = "gaussian",
                *, eps: float | None = None, block_size: int | None = None) -> Tensor:
    r"""The talk's Hamiltonian ``H(q, p) = 1/2 sum_ij k(q_i, q_j) <p_i, p_j>``.

    Args:
        q: ``(..., N, D)`` positions. p: ``(..., N, E)`` momenta (or ``(..., N)``).
        sigma, kernel, eps, block_size: as in :func:`kernel_sum`.

    Returns:
        ``H`` with the batch shape ``(...)``. The value and the gradients w.r.t. ``q``, ``p``
        and ``sigma`` are computed in one sweep over half the tiles (the kernel matrix is
        symmetric) and reused by the backward; ``create_graph=True`` switches to the
        differentiable tile reduction (higher orders). With ``eps`` the block-sparse
        :func:`kernel_sum` is used.

    >>> q, p = torch.randn(100, 3), torch.randn(100, 3)
    >>> k = torch.exp(-torch.cdist(q, q) ** 2)
    >>> torch.allclose(kernel_norm(q, p), 0.5 * (p * (k @ p)).sum(), rtol=1e-5)
    True
    """
    _check_kernel(kernel)
    _check_points(q, "q")
    _check_points(p, "p", 1)
    if p.dim() == q.dim() - 1:
        p = p.unsqueeze(-1)
    if p.shape[:-1] != q.shape[:-1]:
        raise ValueError(f"p must have one row per point of q: q is {tuple(q.shape)}, p is "
                         f"{tuple(p.shape)}")
    if eps is not None:
        a = kernel_sum(q, q, p, kernel, sigma, eps=eps, block_size=block_size)
        return 0.5 * (p * a).sum((-2, -1))
    if p.dtype != q.dtype or p.device != q.device:
        raise TypeError(f"q and p must share dtype and device, got {q.dtype}/{q.device} and "
                        f"{p.dtype}/{p.device}")
    sig = _as_sigma(sigma, q, kernel)
    batch = q.shape[:-2]
    q3 = q.reshape(math.prod(batch), *q.shape[-2:]).contiguous()
    p3 = p.reshape(math.prod(batch), *p.shape[-2:]).contiguous()
    h = _KernelNorm.apply(q3, p3, sig, kernel, _block_size(block_size, q.device))
    return h.reshape(batch)


# ----------------------------------------------------------------------------- MMD


def mmd(x: Tensor, y: Tensor, kernel: str = "gaussian", sigma: float | Tensor = 1.0, *,
        biased: bool = True, eps: float | None = None, block_size: int | None = None
        ) -> Tensor:
    r"""Squared maximum mean discrepancy between point clouds ``x (..., N, D)``, ``y (..., M, D)``.

    ``biased=True`` (V-statistic, always >= 0 for the gaussian and laplacian kernels):
    ``mean K(x, x) + mean K(y, y) - 2 mean K(x, y)``, computed as ``2 H(z, w)`` with
    ``z = [x; y]``, ``w = [1/N; -1/M]`` (one symmetric sweep). ``biased=False``
    (U-statistic, unbiased): the diagonal terms ``k(x_i, x_i)`` are left out of the two
    self-similarity means. With ``kernel="energy"`` this is the energy distance
    ``2 E|x - y| - E|x - x'| - E|y - y'|``. Returns the batch shape ``(...)``.

    >>> x = torch.randn(200, 2, dtype=torch.float64)
    >>> float(mmd(x, x)) < 1e-12
    True
    """
    _check_points(x, "x")
    _check_points(y, "y")
    if x.shape[-1] != y.shape[-1]:
        raise ValueError(f"x and y must have the same dimension D, got {tuple(x.shape)} and "
                         f"{tuple(y.shape)}")
    n, m = x.shape[-2], y.shape[-2]
    if n < 1 or m < 1 or (not biased and (n < 2 or m < 2)):
        raise ValueError(f"mmd needs at least {1 if biased else 2} points per cloud, got "
                         f"N={n}, M={m}")
    batch = torch.broadcast_shapes(x.shape[:-2], y.shape[:-2])
    x = x.expand(*batch, n, x.shape[-1])
    y = y.expand(*batch, m, y.shape[-1])
    if biased:
        z = torch.cat([x, y], -2)
        w = torch.cat([x.new_full((n,), 1.0 / n), x.new_full((m,), -1.0 / m)])
        w = w.expand(*batch, n + m)
        return 2.0 * kernel_norm(z, w, sigma, kernel, eps=eps, block_size=block_size)
    k0 = 0.0 if kernel == "energy" else 1.0
    sxx = 2.0 * kernel_norm(x, x.new_ones(*batch, n), sigma, kernel, eps=eps,
                            block_size=block_size)
    syy = 2.0 * kernel_norm(y, y.new_ones(*batch, m), sigma, kernel, eps=eps,
                            block_size=block_size)
    sxy = kernel_sum(x, y, y.new_ones(*batch, m), kernel, sigma, eps=eps,
                     block_size=block_size).sum(-1)
    return (sxx - n * k0) / (n * (n - 1)) + (syy - m * k0) / (m * (m - 1)) - 2 * sxy / (n * m)


def median_heuristic(x: Tensor, y: Tensor | None = None, *, max_points: int = 1024,
                     generator: torch.Generator | None = None) -> Tensor:
    """Median pairwise distance of the pooled points ``(N, D)`` (detached, a scalar tensor),
    on a random subsample of at most ``max_points`` points. A common bandwidth choice.
    When more than half of the pairs coincide (median 0), the largest distance is used; 1
    when all points coincide or there are fewer than two: never a zero bandwidth.

    >>> float(median_heuristic(torch.tensor([[0.0], [1.0], [3.0]])))
    2.0
    """
    z = x.detach().reshape(-1, x.shape[-1])
    if y is not None:
        z = torch.cat([z, y.detach().reshape(-1, y.shape[-1])])
    if z.shape[0] > max_points:
        idx = torch.randperm(z.shape[0], generator=generator, device="cpu")[:max_points]
        z = z[idx.to(z.device)]
    d = torch.cdist(z, z, compute_mode="donot_use_mm_for_euclid_dist")
    iu = torch.triu_indices(z.shape[0], z.shape[0], 1, device=z.device)
    vals = d[iu[0], iu[1]]
    if vals.numel() == 0:
        return z.new_ones(())
    med = vals.median()
    top = vals.max()
    return torch.where(med > 0, med, torch.where(top > 0, top, torch.ones_like(top)))


def _as_clouds(f: Tensor, name: str) -> Tensor:
    if f.dim() == 4:
        b, c, h, w = f.shape
        return f.reshape(b, c, h * w).transpose(1, 2)
    if f.dim() == 2:
        return f[None]
    if f.dim() == 3:
        return f
    raise ValueError(f"{name} must be a feature map (B, C, H, W) or a point cloud (N, D) / "
                     f"(B, N, D), got shape {tuple(f.shape)}")


def _subsample(z: Tensor, k: int, generator: torch.Generator | None) -> Tensor:
    if z.shape[1] <= k:
        return z
    idx = torch.randperm(z.shape[1], generator=generator, device="cpu")[:k].to(z.device)
    return z.index_select(1, idx)


def feature_mmd(fx: Tensor, fy: Tensor, sigma: float | Tensor | None = None, *,
                kernel: str = "gaussian", max_points: int | None = 4096,
                generator: torch.Generator | None = None, biased: bool = True,
                reduction: str = "mean") -> Tensor:
    r"""MMD between the distributions of feature vectors of two feature maps.

    Each pixel of ``fx (B, C, H, W)`` is a point in ``R^C`` (a point cloud of ``H W`` points
    per batch element); ``(N, D)`` and ``(B, N, D)`` point clouds are accepted too. ``fy`` may
    have another spatial size and batch 1 (broadcast). Clouds larger than ``max_points`` are
    randomly subsampled (``generator`` for reproducibility; ``None`` keeps all points).
    ``sigma=None`` uses the median heuristic (detached) on the pooled points of the first
    batch element (:func:`median_heuristic`, at most 1024 points).

    Returns the squared MMD reduced over the batch (``reduction``: ``"mean"``, ``"sum"`` or
    ``"none"``). Differentiable w.r.t. ``fx`` and ``fy``.

    >>> g = torch.Generator().manual_seed(0)
    >>> a, b = torch.rand(1, 4, 16, 16), torch.rand(1, 4, 16, 16)
    >>> float(feature_mmd(a, a, generator=g)) < 1e-6 < float(feature_mmd(a, b + 1))
    True
    """
    _check_kernel(kernel)
    if reduction not in ("mean", "sum", "none"):
        raise ValueError(f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}")
    zx, zy = _as_clouds(fx, "fx"), _as_clouds(fy, "fy")
    if zx.shape[-1] != zy.shape[-1]:
        raise ValueError(f"fx and fy must have the same number of channels, got "
                         f"{zx.shape[-1]} and {zy.shape[-1]}")
    if max_points is not None:
        zx, zy = _subsample(zx, max_points, generator), _subsample(zy, max_points, generator)
    if sigma is None and kernel != "energy":
        sigma = median_heuristic(zx[0], zy[0], generator=generator)
    out = mmd(zx, zy, kernel, 1.0 if sigma is None else sigma, biased=biased)
    if reduction == "mean":
        return out.mean()
    if reduction == "sum":
        return out.sum()
    return out


# ----------------------------------------------------------------------------- modules


class KernelSum(nn.Module):
    """Module form of :func:`kernel_sum`; ``learnable=True`` makes ``sigma`` a parameter
    (stored as ``log_sigma`` so it stays positive)."""

    def __init__(self, kernel: str = "gaussian", sigma: float = 1.0, *, learnable: bool = False,
                 eps: float | None = None) -> None:
        super().__init__()
        _check_kernel(kernel)
        self.kernel, self.eps = kernel, eps
        if not float(sigma) > 0 or not math.isfinite(float(sigma)):
            raise ValueError(f"sigma must be a finite number > 0, got {sigma!r}")
        t = torch.tensor(math.log(sigma))
        if learnable:
            self.log_sigma = nn.Parameter(t)
        else:
            self.register_buffer("log_sigma", t)

    def forward(self, x: Tensor, y: Tensor, b: Tensor) -> Tensor:
        sigma = self.log_sigma.to(x.dtype).exp()
        return kernel_sum(x, y, b, self.kernel, sigma, eps=self.eps)


class MMDLoss(nn.Module):
    """Module form of :func:`feature_mmd`: ``MMDLoss()(fx, fy)`` -> scalar loss."""

    def __init__(self, kernel: str = "gaussian", sigma: float | None = None, *,
                 max_points: int | None = 4096, biased: bool = True, seed: int | None = 0,
                 reduction: str = "mean") -> None:
        super().__init__()
        _check_kernel(kernel)
        self.kernel, self.sigma, self.max_points = kernel, sigma, max_points
        self.biased, self.reduction = biased, reduction
        self.generator = torch.Generator().manual_seed(seed) if seed is not None else None

    def forward(self, fx: Tensor, fy: Tensor) -> Tensor:
        return feature_mmd(fx, fy, self.sigma, kernel=self.kernel, max_points=self.max_points,
                           generator=self.generator, biased=self.biased,
                           reduction=self.reduction)

