"""Cluster-aware, block-sparse tile plans for decaying kernels (gaussian, laplacian).

Points are sorted into the leaves of a balanced k-d tree (blocks of ``block`` points that
are compact boxes in space). For a row block ``I`` and a column block
``J`` with bounding boxes at distance ``d_min(I, J)``, every kernel value in the tile is at
most ``kmax(I, J) = k(d_min)`` (``exp(-d_min^2 / sigma^2)`` for gaussian,
``exp(-d_min / sigma)`` for laplacian), so the contribution of the whole tile to any output
row ``a_i`` (``i`` in ``I``) is bounded by ``kmax(I, J) * sum_{j in J} |b_j|`` (Euclidean
norms). For each row block the plan skips the column blocks with the smallest bounds as long
as the *sum* of the skipped bounds stays ``<= eps``, which guarantees

    max_i |a_i - a~_i|_2 <= eps        (a~ = block-sparse result).

Gradients are the exact gradients of the block-sparse approximation (same plan).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .kernel_tiles import TilePlan

__all__ = ["kd_order", "block_sparse_plan"]


def kd_order(x: Tensor, block: int) -> Tensor:
    """Permutation grouping points ``x`` ``(n, D)`` into the leaves of a balanced k-d tree:
    after ``x[perm]``, every consecutive chunk of ``block`` points is one leaf (a compact box).

    Each node is split at a multiple of ``block`` points along its widest coordinate, so the
    leaves are exactly the row/column blocks of the tile plan (only the last may be smaller).

    >>> x = torch.tensor([[0.75, 0.0], [0.0, 0.0], [0.25, 0.0], [1.0, 0.0]])
    >>> x[kd_order(x, 2)][:, 0].tolist()
    [0.0, 0.25, 0.75, 1.0]
    """
    n = x.shape[0]
    ids = torch.arange(n, device=x.device)
    leaves: list[Tensor] = []
    stack = [ids]
    while stack:
        node = stack.pop()
        if node.numel() <= block:
            leaves.append(node)
            continue
        pts = x[node]
        dim = int((pts.amax(0) - pts.amin(0)).argmax())
        nb = math.ceil(node.numel() / block)
        left = block * (nb // 2)
        order = torch.argsort(pts[:, dim], stable=True)
        stack.append(node[order[left:]])  # popped second: keeps left-to-right leaf order
        stack.append(node[order[:left]])
    return torch.cat(leaves) if leaves else ids


def _block_boxes(x: Tensor, block: int) -> tuple[Tensor, Tensor]:
    """Bounding boxes ``(nb, D)`` lo, hi of consecutive blocks of ``block`` points."""
    n, d = x.shape
    nb = math.ceil(n / block)
    pad = nb * block - n
    if pad:
        x = torch.cat([x, x[-1:].expand(pad, d)])
    xb = x.reshape(nb, block, d)
    return xb.amin(1), xb.amax(1)


def block_sparse_plan(x: Tensor, y: Tensor, b: Tensor, kernel: str, sigma: float, eps: float,
                      block: int = 256, max_cols: int = 8192
                      ) -> tuple[TilePlan, dict[str, float]]:
    """Tile plan over k-d sorted (:func:`kd_order`) ``x (n, D)``, ``y (m, D)``, ``b (m, E)``.

    Returns the plan (row blocks of ``block`` rows; for each, the kept columns gathered as
    index tensors of at most ``max_cols`` columns) and statistics (``density``: fraction of the
    ``n * m`` pairs evaluated, ``bound``: the guaranteed max-norm error bound actually used).
    """
    n, m = x.shape[0], y.shape[0]
    if n == 0 or m == 0:
        return TilePlan(n, m, ()), {"density": 0.0, "bound": 0.0}
    with torch.no_grad():
        lo_i, hi_i = _block_boxes(x, block)
        lo_j, hi_j = _block_boxes(y, block)
        nbj = lo_j.shape[0]
        wb = b.reshape(m, -1).norm(dim=1)
        pad = nbj * block - m
        if pad:
            wb = torch.cat([wb, wb.new_zeros(pad)])
        w_j = wb.reshape(nbj, block).sum(1)  # (nbj,)
        gap = (lo_j[None] - hi_i[:, None]).clamp_min(0) + (lo_i[:, None] - hi_j[None]).clamp_min(0)
        d2 = (gap * gap).sum(-1)  # (nbi, nbj)
        if kernel == "gaussian":
            kmax = torch.exp(-d2 / sigma**2)
        elif kernel == "laplacian":
            kmax = torch.exp(-d2.sqrt() / sigma)
        else:
            raise ValueError(f"block-sparse reduction needs a decaying kernel, got {kernel!r}")
        bound = kmax * w_j[None]  # (nbi, nbj)
        sb, order = torch.sort(bound, dim=1)
        skip_sorted = torch.cumsum(sb.double(), dim=1) <= eps
        keep = torch.ones_like(bound, dtype=torch.bool)
        keep.scatter_(1, order, ~skip_sorted)
        used = torch.where(skip_sorted, sb.double(), 0.0).sum(1).max().item()
        keep_cpu = keep.cpu()
    ar = torch.arange(m, device=y.device)
    blocks = []
    evaluated = 0
    for bi in range(keep_cpu.shape[0]):
        r0, r1 = bi * block, min((bi + 1) * block, n)
        kept = torch.nonzero(keep_cpu[bi]).flatten().tolist()
        if not kept:
            blocks.append((r0, r1, ()))
            continue
        # merge runs of consecutive kept blocks into column ranges, then gather into chunks
        idx = torch.cat([ar[j * block: min((j + 1) * block, m)] for j in kept])
        evaluated += (r1 - r0) * idx.numel()
        if idx.numel() == m:
            cols = tuple(slice(c, min(c + max_cols, m)) for c in range(0, m, max_cols))
        else:
            cols = tuple(idx[c: c + max_cols] for c in range(0, idx.numel(), max_cols))
        blocks.append((r0, r1, cols))
    return TilePlan(n, m, tuple(blocks)), {"density": evaluated / (n * m), "bound": used}
