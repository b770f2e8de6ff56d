"""Tiled map-reduce with linear memory and autodiff of any order (the engine under
:mod:`difftransforms.ops.kernel_reduction`).

A *tile reduction* takes

- ``i``-variables ``xs`` of shape ``(B, N, *)`` (indexed by the output row ``i``),
- ``j``-variables ``ys`` of shape ``(B, M, *)`` (indexed by the reduced index ``j``),
- parameters ``ps`` (any shape, shared by all tiles),

and a :class:`TileSpec` whose :meth:`TileSpec.tile` maps one tile (a block of rows ``I`` and a
block of columns ``J``) to three lists of partial results: ``i``-indexed ``(B, |I|, *)``,
``j``-indexed ``(B, |J|, *)`` and parameter-shaped. The reduction sums the partial results of
all tiles of a :class:`TilePlan` into ``(B, N, *)``, ``(B, M, *)`` and parameter-shaped
outputs. Only one tile lives at a time: memory is ``O((N + M) * width)``, never ``N x M``.

The class is closed under differentiation: the vector-Jacobian product of a tile reduction
is again a tile reduction (over the same plan) whose tile is the VJP of the original tile,
with the output cotangents as extra variables. :class:`_TileReduce.backward` therefore
calls :class:`_TileReduce` again, so ``create_graph=True``, double backward and
``gradgradcheck`` work with the same linear memory (tiles are recomputed, never stored).
Specs may provide a hand-written fast VJP (see ``KernelSumSpec`` in kernel_reduction);
the generic :class:`VJPSpec` differentiates the differentiable ("reference") tile with
:func:`torch.autograd.grad` tile by tile.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["TilePlan", "TileSpec", "VJPSpec", "tile_reduce"]

ColSel = slice | Tensor  # a contiguous column range or an index tensor (block-sparse plans)


@dataclass(frozen=True)
class TilePlan:
    """Which tiles to visit: for each row range, the column selections to reduce over.

    ``blocks`` is a sequence of ``(row_start, row_end, [colsel, ...])`` where a colsel is a
    ``slice`` of columns or a 1-D ``LongTensor`` of column indices (gathered for the tile and
    scattered back with ``index_add_``). Row ranges must be disjoint.
    """

    n: int
    m: int
    blocks: tuple[tuple[int, int, tuple[ColSel, ...]], ...]

    @staticmethod
    def dense(n: int, m: int, block_rows: int, block_cols: int) -> TilePlan:
        cols = tuple(slice(c, min(c + block_cols, m)) for c in range(0, m, block_cols))
        rows = tuple((r, min(r + block_rows, n), cols) for r in range(0, n, block_rows))
        return TilePlan(n, m, rows)

    def __iter__(self) -> Iterator[tuple[int, int, tuple[ColSel, ...]]]:
        return iter(self.blocks)

    def n_pairs(self) -> int:
        """Number of (i, j) kernel evaluations the plan performs (per batch element)."""
        tot = 0
        for r0, r1, cols in self.blocks:
            for c in cols:
                w = (c.stop - c.start) if isinstance(c, slice) else int(c.numel())
                tot += (r1 - r0) * w
        return tot


class TileSpec:
    """A tile formula. Subclasses implement :meth:`out_shapes` and :meth:`tile`.

    ``tile(xs, ys, ps, fast)`` receives ``xs`` blocks ``(B, bi, *)``, ``ys`` blocks
    ``(B, bj, *)`` and the parameters, and returns ``(outs_i, outs_j, outs_p)``. With
    ``fast=True`` it runs under ``no_grad`` and may work in place; with ``fast=False`` it must
    be built from differentiable torch ops (it is differentiated for higher-order derivatives).
    """

    def out_shapes(self, xs: Sequence[Tensor], ys: Sequence[Tensor], ps: Sequence[Tensor]
                   ) -> tuple[list[tuple[int, ...]], list[tuple[int, ...]],
                              list[tuple[int, ...]]]:
        """Trailing shapes of the i- and j-outputs (after ``(B, n)``) and param-output shapes."""
        raise NotImplementedError

    def tile(self, xs: Sequence[Tensor], ys: Sequence[Tensor], ps: Sequence[Tensor],
             fast: bool) -> tuple[list[Tensor], list[Tensor], list[Tensor]]:
        raise NotImplementedError

    def vjp(self, need: tuple[bool, ...], has: tuple[bool, ...], nx: int, ny: int, np_: int
            ) -> TileSpec:
        """The spec of the VJP: ``need`` flags per input, ``has`` flags per output cotangent."""
        return VJPSpec(self, need, has, nx, ny, np_)


class VJPSpec(TileSpec):
    """Generic VJP of a spec, by :func:`torch.autograd.grad` of its reference tile.

    Variables: ``xs = base_xs + present i-cotangents``, ``ys = base_ys + present
    j-cotangents``, ``ps = base_ps + present param-cotangents``. Outputs: the gradients of the
    needed base inputs, i-indexed for ``xs``, j-indexed for ``ys``, param-shaped for ``ps``.
    """

    def __init__(self, base: TileSpec, need: tuple[bool, ...], has: tuple[bool, ...],
                 nx: int, ny: int, np_: int, n_out: tuple[int, int, int] | None = None
                 ) -> None:
        self.base = base
        self.need = need
        self.has = has
        self.nx, self.ny, self.np = nx, ny, np_
        self.n_out = n_out

    def _split(self, xs: Sequence[Tensor], ys: Sequence[Tensor], ps: Sequence[Tensor]):
        return (list(xs[: self.nx]), list(xs[self.nx:]), list(ys[: self.ny]),
                list(ys[self.ny:]), list(ps[: self.np]), list(ps[self.np:]))

    def out_shapes(self, xs, ys, ps):
        bx, _, by, _, bp, _ = self._split(xs, ys, ps)
        nx, ny = self.nx, self.ny
        si = [tuple(t.shape[2:]) for t, n in zip(bx, self.need[:nx], strict=False) if n]
        sj = [tuple(t.shape[2:]) for t, n in zip(by, self.need[nx:nx + ny], strict=False) if n]
        sp = [tuple(t.shape) for t, n in zip(bp, self.need[nx + ny:], strict=False) if n]
        return si, sj, sp

    def tile(self, xs, ys, ps, fast):
        bx, gi, by, gj, bp, gp = self._split(xs, ys, ps)
        inputs = bx + by + bp
        with torch.enable_grad():
            if fast:
                leaves = [t.detach().requires_grad_(n)
                          for t, n in zip(inputs, self.need, strict=False)]
            else:
                leaves = [t.detach().requires_grad_() if (n and not t.requires_grad) else t
                          for t, n in zip(inputs, self.need, strict=False)]
            nx, ny = self.nx, self.ny
            oi, oj, op = self.base.tile(leaves[:nx], leaves[nx:nx + ny], leaves[nx + ny:],
                                        fast=False)
            outs = [o for o, h in zip(oi + oj + op, self.has, strict=False) if h]
            cots = gi + gj + gp
            wrt = [t for t, n in zip(leaves, self.need, strict=False) if n]
            pairs = [(o, c) for o, c in zip(outs, cots, strict=False) if o.requires_grad]
            if pairs:
                grads = list(torch.autograd.grad([o for o, _ in pairs], wrt,
                                                 [c for _, c in pairs],
                                                 create_graph=not fast, allow_unused=True))
            else:
                grads = [None] * len(wrt)
        grads = [torch.zeros_like(w) if g is None else g for g, w in zip(grads, wrt, strict=False)]
        if fast:
            grads = [g.detach() for g in grads]
        kx = sum(self.need[:nx])
        ky = sum(self.need[nx:nx + ny])
        return grads[:kx], grads[kx:kx + ky], grads[kx + ky:]


def _run(spec: TileSpec, plan: TilePlan, xs: Sequence[Tensor], ys: Sequence[Tensor],
         ps: Sequence[Tensor]) -> list[Tensor]:
    ref = (list(xs) + list(ys))[0]
    batch = ref.shape[0]
    si, sj, sp = spec.out_shapes(xs, ys, ps)
    oi = [ref.new_zeros((batch, plan.n, *s)) for s in si]
    oj = [ref.new_zeros((batch, plan.m, *s)) for s in sj]
    op = [ref.new_zeros(s) for s in sp]
    for r0, r1, cols in plan:
        xb = [x[:, r0:r1] for x in xs]
        for cs in cols:
            if isinstance(cs, slice):
                yb = [y[:, cs] for y in ys]
            else:
                yb = [y.index_select(1, cs) for y in ys]
            ti, tj, tp = spec.tile(xb, yb, ps, fast=True)
            for o, t in zip(oi, ti, strict=False):
                o[:, r0:r1] += t
            for o, t in zip(oj, tj, strict=False):
                if isinstance(cs, slice):
                    o[:, cs] += t
                else:
                    o.index_add_(1, cs, t)
            for o, t in zip(op, tp, strict=False):
                o += t
    return oi + oj + op


class _TileReduce(torch.autograd.Function):
    @staticmethod
    def forward(ctx, spec: TileSpec, plan: TilePlan, nx: int, ny: int,  # type: ignore[override]
                *tensors: Tensor) -> tuple[Tensor, ...]:
        ctx.set_materialize_grads(False)
        xs, ys, ps = tensors[:nx], tensors[nx:nx + ny], tensors[nx + ny:]
        with torch.no_grad():
            outs = _run(spec, plan, xs, ys, ps)
        si, sj, sp = spec.out_shapes(xs, ys, ps)
        ctx.spec, ctx.plan, ctx.nx, ctx.ny = spec, plan, nx, ny
        ctx.nout = (len(si), len(sj), len(sp))
        ctx.save_for_backward(*tensors)
        return tuple(outs)

    @staticmethod
    def backward(ctx, *gouts: Tensor | None):  # type: ignore[override]
        tensors = ctx.saved_tensors
        nx, ny = ctx.nx, ctx.ny
        np_ = len(tensors) - nx - ny
        need = tuple(bool(n) for n in ctx.needs_input_grad[4:])
        has = tuple(g is not None for g in gouts)
        nones: tuple[None, ...] = (None,) * (4 + len(tensors))
        if not any(need) or not any(has):
            return nones
        ni, nj, _ = ctx.nout
        gi = [g.contiguous() for g in gouts[:ni] if g is not None]
        gj = [g.contiguous() for g in gouts[ni:ni + nj] if g is not None]
        gp = [g for g in gouts[ni + nj:] if g is not None]
        xs, ys, ps = list(tensors[:nx]), list(tensors[nx:nx + ny]), list(tensors[nx + ny:])
        vspec = ctx.spec.vjp(need, has, nx, ny, np_)
        new = [*xs, *gi, *ys, *gj, *ps, *gp]
        grads = iter(_TileReduce.apply(vspec, ctx.plan, nx + len(gi), ny + len(gj), *new))
        return (None, None, None, None, *(next(grads) if n else None for n in need))


def tile_reduce(spec: TileSpec, plan: TilePlan, xs: Sequence[Tensor], ys: Sequence[Tensor],
                ps: Sequence[Tensor] = ()) -> list[Tensor]:
    """Run a tile reduction (differentiable to any order). Returns ``outs_i + outs_j + outs_p``.

    All ``xs`` must be ``(B, plan.n, *)`` and all ``ys`` ``(B, plan.m, *)`` with the same ``B``.
    """
    xs, ys, ps = list(xs), list(ys), list(ps)
    return list(_TileReduce.apply(spec, plan, len(xs), len(ys), *xs, *ys, *ps))
