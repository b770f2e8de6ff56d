"""Texture losses: sliced Wasserstein, Gram matrices and normalised-statistics L2.

Every loss compares the features of the synthesised image ``X`` with *precomputed* targets
built once from the example ``Y`` (``prepare``), so one optimisation step never recomputes
``F(Y)``. Each loss is made dimensionless (divided by a scale of the target) so that the total
loss starts near 1 whatever the model, which keeps the pixel-range penalty and the stopping
tolerances meaningful for every transform.

Feature maps are ``(B, K, H, W)`` tensors; statistics are ``(B, ...)`` tensors.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

__all__ = [
    "SlicedWassersteinLoss",
    "GramLoss",
    "MomentLoss",
    "sliced_wasserstein",
    "gram",
    "sorted_quantiles",
]


def gram(f: Tensor) -> Tensor:
    """Gram matrix ``(B, K, K)`` of feature maps ``f`` ``(B, K, H, W)``, averaged over pixels."""
    b, k = f.shape[:2]
    m = f.reshape(b, k, -1)
    return m @ m.transpose(1, 2) / m.shape[-1]


def sorted_quantiles(sorted_vals: Tensor, n: int) -> Tensor:
    """Resample sorted samples ``(B, N, P)`` (sorted along dim 1) to ``n`` quantiles.

    Linear interpolation of the empirical quantile function at the mid-points
    ``(i + 0.5) / n``; the identity when ``n == N``. Lets images of different sizes be
    compared in the sliced Wasserstein loss and in histogram matching.

    >>> v = torch.arange(4.0).reshape(1, 4, 1)
    >>> sorted_quantiles(v, 2).flatten().tolist()
    [0.5, 2.5]
    """
    big_n = sorted_vals.shape[1]
    if big_n == n:
        return sorted_vals
    pos = (torch.arange(n, device=sorted_vals.device, dtype=sorted_vals.dtype) + 0.5) * (
        big_n / n
    ) - 0.5
    pos = pos.clamp(0, big_n - 1)
    lo = pos.floor().long()
    hi = (lo + 1).clamp(max=big_n - 1)
    w = (pos - lo.to(pos.dtype)).view(1, n, 1)
    return sorted_vals[:, lo] * (1 - w) + sorted_vals[:, hi] * w


def _project(f: Tensor, directions: Tensor) -> Tensor:
    """Project the pixels of ``f`` ``(B, K, H, W)`` on ``directions`` ``(K, P)``:
    ``(B, P, H*W)`` (contiguous along pixels, so sorting along the last dim is fast)."""
    b, k = f.shape[:2]
    return directions.t() @ f.reshape(b, k, -1)


def sliced_wasserstein(fx: Tensor, fy: Tensor, directions: Tensor) -> Tensor:
    """Sliced Wasserstein-2 distance (squared) between the pixel distributions of two maps.

    ``fx`` ``(B, K, Hx, Wx)`` and ``fy`` ``(B or 1, K, Hy, Wy)``: every pixel is a point of
    ``R^K``. Points are projected on the unit ``directions`` ``(K, P)``, sorted, and compared
    quantile by quantile (Heitz et al., CVPR 2021); different pixel counts are handled by
    interpolating the sorted projections of ``fy``. Returns ``(B,)``.

    >>> f = torch.randn(1, 3, 8, 8)
    >>> float(sliced_wasserstein(f, f.flip(-1), torch.eye(3)))  # same pixels, other order
    0.0
    """
    px = torch.sort(_project(fx, directions), dim=-1).values
    py = torch.sort(_project(fy, directions), dim=-1).values
    py = _quantiles_last(py, px.shape[-1])
    return (px - py).pow(2).mean(dim=(1, 2))


def _quantiles_last(sorted_vals: Tensor, n: int) -> Tensor:
    """:func:`sorted_quantiles` along the last dimension."""
    if sorted_vals.shape[-1] == n:
        return sorted_vals
    return sorted_quantiles(sorted_vals.transpose(-1, -2), n).transpose(-1, -2)


def _random_directions(k: int, p: int, generator: torch.Generator, like: Tensor) -> Tensor:
    d = torch.randn(k, p, generator=generator, dtype=torch.float64)
    d = d / d.norm(dim=0, keepdim=True).clamp_min(1e-12)
    return d.to(device=like.device, dtype=like.dtype)


class SlicedWassersteinLoss:
    """Sliced Wasserstein feature loss with directions redrawn by :meth:`resample`.

    Parameters
    ----------
    targets:
        Feature maps of the example, one ``(1, K_l, H_l, W_l)`` tensor per layer.
    n_directions:
        Directions per layer; ``None`` uses ``K_l`` (as in Heitz et al.).
    generator:
        CPU generator the directions are drawn from (its state is checkpointed by the engine).
    max_target_points:
        The target quantiles of a layer with more pixels than this are estimated from that
        many randomly drawn pixels (redrawn at each :meth:`resample`); ``None``: all.

    The directions and the sorted target projections are fixed between two calls to
    :meth:`resample`: the engine redraws them once per outer step (one L-BFGS call, or
    one Adam step), following the paper.
    """

    kind = "sw"

    def __init__(self, targets: Sequence[Tensor], n_directions: int | None = None,
                 generator: torch.Generator | None = None,
                 max_target_points: int | None = 65536) -> None:
        self.targets = [t.detach() for t in targets]
        self.max_target_points = max_target_points
        self.n_directions = n_directions
        self.generator = generator if generator is not None else torch.Generator().manual_seed(0)
        self.directions: list[Tensor] = []
        self._sorted: list[Tensor] = []
        self._scale: list[Tensor] = []
        # no draw here: the engine calls resample() at the start of every step, so that the
        # generator's state alone (checkpointed) determines the directions


    def resample(self) -> None:
        """Draw fresh random directions and cache the sorted target projections."""
        self.directions, self._sorted, self._scale = [], [], []
        for t in self.targets:
            k = t.shape[1]
            p = self.n_directions or max(k, 4)
            d = _random_directions(k, p, self.generator, t)
            proj = _project(t, d)  # (1, P, N_y)
            n_y, cap = proj.shape[-1], self.max_target_points
            if cap is not None and n_y > cap:
                # quantiles of a large example from a random subset of its pixels (redrawn
                # with the directions): the sort per step stays cheap for big examples
                idx = torch.randperm(n_y, generator=self.generator)[:cap].to(proj.device)
                proj = proj[..., idx]
            s = torch.sort(proj, dim=-1).values
            self.directions.append(d)
            self._sorted.append(s)
            # dimensionless: divide by the mean variance of the target projections
            self._scale.append(s.var(dim=-1).mean().clamp_min(1e-12))

    def __call__(self, feats: Sequence[Tensor]) -> Tensor:
        if not self.directions:
            self.resample()
        total = feats[0].new_zeros(())
        for f, d, s, sc in zip(feats, self.directions, self._sorted, self._scale, strict=True):
            px = torch.sort(_project(f, d), dim=-1).values
            py = _quantiles_last(s, px.shape[-1])
            total = total + ((px - py).pow(2).mean(dim=(1, 2)) / sc).mean()
        return total / len(self.targets)


class GramLoss:
    """Gram-matrix loss (Gatys et al. 2015): ``sum_l ||G_l(X) - G_l(Y)||^2 / ||G_l(Y)||^2``.

    Features are centred by the example's mean first when ``centered`` (a covariance
    loss, which conditions far better for random CNNs with large positive activations).
    """

    kind = "gram"

    def __init__(self, targets: Sequence[Tensor], centered: bool = False) -> None:
        self.centered = centered
        self.means = [t.mean(dim=(0, 2, 3), keepdim=True).detach() for t in targets]
        self.grams: list[Tensor] = []
        self.scales: list[Tensor] = []
        for t, m in zip(targets, self.means, strict=True):
            g = gram(t - m if centered else t).detach()
            self.grams.append(g)
            self.scales.append(g.pow(2).sum().clamp_min(1e-12))

    def resample(self) -> None:  # deterministic loss: nothing to redraw
        pass

    def __call__(self, feats: Sequence[Tensor]) -> Tensor:
        total = feats[0].new_zeros(())
        for f, m, g, sc in zip(feats, self.means, self.grams, self.scales, strict=True):
            gx = gram(f - m if self.centered else f)
            total = total + (gx - g).pow(2).sum(dim=(1, 2)).mean() / sc
            if self.centered:  # the means are then matched separately
                total = total + (f.mean(dim=(2, 3), keepdim=True) - m).pow(2).sum(
                    dim=1).mean() / m.pow(2).sum().clamp_min(1e-12)
        return total / len(self.grams)


class MomentLoss:
    """L2 distance between normalised statistics (scattering / covariance moments).

    Each target statistic ``s_y`` gets the scale ``|s_y| + floor * rms(s_y)`` (per tensor),
    so every moment weighs about the same, and near-zero moments (cross correlations) are
    not blown up.
    """

    kind = "moments"

    def __init__(self, targets: Sequence[Tensor], floor: float = 0.1) -> None:
        self.targets = [t.detach() for t in targets]
        self.scales = [
            (t.abs() + floor * t.pow(2).mean().sqrt()).clamp_min(1e-12) for t in self.targets
        ]

    def resample(self) -> None:
        pass

    def __call__(self, feats: Sequence[Tensor]) -> Tensor:
        total = feats[0].new_zeros(())
        for f, t, sc in zip(feats, self.targets, self.scales, strict=True):
            total = total + ((f - t) / sc).pow(2).mean()
        return total / len(self.targets)
