"""Texture-quality metrics: how close are the statistics of a synthesis ``X`` to an example ``Y``?

Every metric takes the example ``Y`` and the synthesis ``X`` (tensors ``(1, C, H, W)``,
``(C, H, W)`` or ``(H, W)`` with values in ``[0, 1]``; the two sizes may differ, the channel
counts must agree) and returns a float, computed offline (no downloaded weights):

========================  ================================================================
``spectrum_gap``          mean ``|log10 P_Y(f) - log10 P_X(f)|`` of the radially averaged,
                          windowed power spectra on a common log-spaced frequency grid
                          (decades; second-order statistics)
``histogram_gap``         Wasserstein-1 distance between the pixel distributions, per
                          channel, averaged (intensity units; first-order statistics)
``wavelet_gap``           W1 between the coefficient distributions of each subband of a
                          periodised ``db2`` wavelet decomposition, divided by the subband's
                          pooled standard deviation, averaged (dimensionless)
``cnn_gap``               sliced Wasserstein-1 distance between the feature-vector
                          distributions of a random multi-scale CNN with its own fixed seed
                          (12345, not one a synthesis optimises), features standardised by
                          ``Y``'s statistics (dimensionless; higher-order statistics)
``copy_fraction``         share of ``X``'s 16x16 patches (stride 8) with a near-exact copy
                          (RMS < 0.02) in ``Y`` at the same offset as a horizontal and a
                          vertical neighbour's — verbatim copied regions, in ``[0, 1]``
========================  ================================================================

The four gaps are 0 for identical statistics and grow with degradation (blur, noise).
:func:`texture_report` puts each value next to two references computed from ``Y`` alone:
the *second-crop* range (the metric between disjoint crops of ``Y``: what a perfect new
sample of the same texture scores) and *random-phase noise* (:func:`random_phase_noise`:
``Y``'s Fourier modulus with random phases). Second-order metrics alone cannot tell
random-phase noise from the texture: its ``spectrum_gap`` is ~0 by construction, so a good
spectrum score means little on its own; the histogram, wavelet and CNN gaps do separate
them for structured textures.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from difftransforms._utils import as_bchw, check_finite, check_floating

__all__ = [
    "wasserstein_1d",
    "spectrum_gap",
    "radial_power_spectrum",
    "histogram_gap",
    "wavelet_gap",
    "cnn_gap",
    "copy_fraction",
    "nearest_patch_rms",
    "nearest_patches",
    "PatchMatches",
    "random_phase_noise",
    "second_crops",
    "texture_baselines",
    "texture_report",
    "METRICS",
    "MIN_SIZE",
]

#: Smallest image side the metrics accept.
MIN_SIZE = 32
#: Seed of the random CNN of :func:`cnn_gap` (kept apart from the seeds synthesis optimises).
CNN_SEED = 12345


# --------------------------------------------------------------------------------------
# input handling
# --------------------------------------------------------------------------------------


def _prep(img: Tensor | np.ndarray, name: str) -> Tensor:
    """Validate one image; return it as ``(C, H, W)`` float64 (same device)."""
    if isinstance(img, np.ndarray):
        img = torch.from_numpy(np.asarray(img, dtype=np.float64))
    x, _ = as_bchw(img, name)
    if x.shape[0] != 1:
        raise ValueError(f"{name} must hold one image (batch size 1), got batch {x.shape[0]}")
    check_floating(x, name)
    check_finite(x, name)
    if min(x.shape[-2:]) < MIN_SIZE:
        raise ValueError(f"{name} is {x.shape[-2]}x{x.shape[-1]}; texture metrics need at "
                         f"least {MIN_SIZE}x{MIN_SIZE} pixels")
    return x[0].to(torch.float64)


def _pair(Y: Tensor, X: Tensor) -> tuple[Tensor, Tensor]:
    y, x = _prep(Y, "Y"), _prep(X, "X")
    if y.shape[0] != x.shape[0]:
        raise ValueError(f"Y has {y.shape[0]} channel(s) but X has {x.shape[0]}; compare "
                         "images of the same kind (both grey or both RGB)")
    return y, x.to(y.device)


# --------------------------------------------------------------------------------------
# 1-D Wasserstein distance
# --------------------------------------------------------------------------------------


def _w1_columns(u: Tensor, v: Tensor) -> Tensor:
    """Exact W1 between the empirical distributions of the columns: ``u`` ``(n, P)``,
    ``v`` ``(m, P)`` -> ``(P,)``.

    ``W1 = int_0^1 |F_u^-1(q) - F_v^-1(q)| dq``; both quantile functions are constant
    between consecutive breakpoints ``{i / n} U {j / m}``, so after sorting the columns the
    integral is a weighted sum over those intervals (indices shared by all columns).
    """
    n, m = u.shape[0], v.shape[0]
    us = torch.sort(u.T.contiguous(), dim=1).values  # (P, n): sorting rows is 2x faster
    vs = torch.sort(v.T.contiguous(), dim=1).values
    if n == m:
        return (us - vs).abs().mean(dim=1)
    q = torch.cat([torch.arange(1, n + 1, dtype=torch.float64) / n,
                   torch.arange(1, m + 1, dtype=torch.float64) / m]).sort().values
    q = torch.unique_consecutive(torch.cat([torch.zeros(1, dtype=torch.float64), q]))
    widths = (q[1:] - q[:-1]).to(u.device, u.dtype)
    mid = (q[1:] + q[:-1]) / 2
    iu = (mid * n).floor().long().clamp_(0, n - 1).to(u.device)
    iv = (mid * m).floor().long().clamp_(0, m - 1).to(u.device)
    return (us[:, iu] - vs[:, iv]).abs() @ widths


def wasserstein_1d(u: Tensor | np.ndarray, v: Tensor | np.ndarray) -> float:
    """Wasserstein-1 distance between two 1-D samples (any sizes), exact.

    Equals ``scipy.stats.wasserstein_distance(u, v)``: the integral of ``|F_u - F_v|``.

    >>> wasserstein_1d(torch.tensor([0.0, 1.0]), torch.tensor([0.5]))
    0.5
    """
    u = torch.as_tensor(u, dtype=torch.float64).reshape(-1, 1)
    v = torch.as_tensor(v, dtype=torch.float64).reshape(-1, 1).to(u.device)
    if u.numel() == 0 or v.numel() == 0:
        raise ValueError("wasserstein_1d needs two non-empty samples")
    return float(_w1_columns(u, v)[0])


# --------------------------------------------------------------------------------------
# power spectrum
# --------------------------------------------------------------------------------------


def _hann2d(H: int, W: int, like: Tensor) -> Tensor:
    wy = torch.hann_window(H, periodic=False, dtype=like.dtype, device=like.device)
    wx = torch.hann_window(W, periodic=False, dtype=like.dtype, device=like.device)
    return wy[:, None] * wx[None, :]


def _log_edges(min_side: int, nbins: int) -> Tensor:
    """Log-spaced radial-frequency bin edges (cycles/pixel) from ``4 / min_side`` to 0.5
    (lower rings hold too few frequencies for a stable average)."""
    return torch.logspace(math.log10(4.0 / min_side), math.log10(0.5), nbins + 1,
                          dtype=torch.float64)


def radial_power_spectrum(img: Tensor, edges: Tensor) -> tuple[Tensor, Tensor]:
    """Radially averaged power spectral density of a ``(C, H, W)`` image.

    Each channel minus its mean is multiplied by a 2-D Hann window; the power
    ``|FFT|^2 / sum(window^2)`` (so white noise of variance ``s^2`` has density ``s^2`` at any
    image size) is averaged over rings ``edges[i] <= |f| < edges[i + 1]`` (cycles/pixel).
    Returns ``(C, nbins)`` mean powers and the ``(nbins,)`` number of frequencies per ring.
    """
    C, H, W = img.shape
    win = _hann2d(H, W, img)
    x = (img - img.mean(dim=(1, 2), keepdim=True)) * win
    power = torch.fft.rfft2(x).abs().square() / win.square().sum()
    fy = torch.fft.fftfreq(H, dtype=img.dtype, device=img.device)
    fx = torch.fft.rfftfreq(W, dtype=img.dtype, device=img.device)
    r = torch.sqrt(fy[:, None] ** 2 + fx[None, :] ** 2)
    # rfft keeps columns 0..W/2: the interior columns stand for two frequencies each
    weight = torch.full_like(r, 2.0)
    weight[:, 0] = 1.0
    if W % 2 == 0:
        weight[:, -1] = 1.0
    edges = edges.to(img.device, img.dtype)
    idx = torch.bucketize(r.flatten(), edges, right=True) - 1  # bin i: [e_i, e_{i+1})
    nb = edges.numel() - 1
    ok = (idx >= 0) & (idx < nb)
    idx, w = idx[ok], weight.flatten()[ok]
    counts = torch.zeros(nb, dtype=img.dtype, device=img.device).index_add_(0, idx, w)
    sums = torch.zeros(C, nb, dtype=img.dtype, device=img.device)
    sums.index_add_(1, idx, power.flatten(1)[:, ok] * w)
    return sums / counts.clamp_min(1e-300), counts


def spectrum_gap(Y: Tensor, X: Tensor, *, nbins: int = 16) -> float:
    """Mean absolute difference of the log10 radially averaged power spectra of ``Y``, ``X``.

    Both spectra (see :func:`radial_power_spectrum`) are evaluated on the same ``nbins``
    log-spaced rings from ``4 / min_side`` to 0.5 cycles/pixel (each octave weighs the same);
    rings that hold no frequency of either image are skipped. Averaged over channels. In
    decades: 0.3 means a typical factor of 2 in power. Second-order only (see the module
    docstring).

    >>> y = torch.rand(1, 64, 64)
    >>> spectrum_gap(y, y)
    0.0
    """
    y, x = _pair(Y, X)
    edges = _log_edges(min(*y.shape[1:], *x.shape[1:]), nbins)
    py, cy = radial_power_spectrum(y, edges)
    px, cx = radial_power_spectrum(x, edges)
    ok = (cy > 0) & (cx > 0)
    tiny = 1e-20
    d = (torch.log10(py[:, ok] + tiny) - torch.log10(px[:, ok] + tiny)).abs()
    return float(d.mean())


# --------------------------------------------------------------------------------------
# histograms
# --------------------------------------------------------------------------------------


def histogram_gap(Y: Tensor, X: Tensor) -> float:
    """Wasserstein-1 distance between the pixel-value distributions of ``Y`` and ``X``,
    per channel, averaged (in intensity units: 0.01 = one percent of the range).

    >>> y = torch.rand(1, 32, 32)
    >>> histogram_gap(y, y), round(histogram_gap(y, y + 0.1), 6)
    (0.0, 0.1)
    """
    y, x = _pair(Y, X)
    return float(_w1_columns(y.flatten(1).T, x.flatten(1).T).mean())


def _wavelet_bands(img: Tensor, wavelet: str, levels: int) -> list[list[np.ndarray]]:
    import pywt

    bands: list[list[np.ndarray]] = []
    for c in img.cpu().numpy():
        coeffs = pywt.wavedec2(c, wavelet, mode="periodization", level=levels)
        bands.append([b for detail in coeffs[1:] for b in detail])  # coarse -> fine
    return bands


def wavelet_gap(Y: Tensor, X: Tensor, *, wavelet: str = "db2", levels: int = 4) -> float:
    """Subband-histogram gap of a ``levels``-level periodised wavelet decomposition.

    For each channel, level and orientation (H, V, D), the W1 distance between ``Y``'s and
    ``X``'s coefficient distributions divided by their pooled standard deviation
    ``sqrt((var_Y + var_X) / 2)`` (each subband weighs the same; a subband emptied by blur
    scores about 1), averaged. ``levels`` is reduced for small images (the coarsest subband
    keeps at least 4x4 coefficients in both images). Uses PyWavelets.

    >>> y = torch.rand(1, 64, 64)
    >>> wavelet_gap(y, y)
    0.0
    """
    y, x = _pair(Y, X)
    min_side = min(*y.shape[1:], *x.shape[1:])
    levels = max(1, min(levels, int(math.log2(min_side / 4))))
    by, bx = _wavelet_bands(y, wavelet, levels), _wavelet_bands(x, wavelet, levels)
    gaps = []
    for cy, cx in zip(by, bx, strict=True):
        for a, b in zip(cy, cx, strict=True):
            ta, tb = torch.from_numpy(a.reshape(-1, 1)), torch.from_numpy(b.reshape(-1, 1))
            scale = math.sqrt((float(ta.var()) + float(tb.var())) / 2)
            w1 = float(_w1_columns(ta, tb)[0])
            gaps.append(w1 / scale if scale > 1e-12 else (0.0 if w1 == 0 else math.inf))
    return float(np.mean(gaps))


# --------------------------------------------------------------------------------------
# random-CNN features
# --------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=4)
def _metric_cnn(channels: int) -> torch.nn.Module:
    from difftransforms.features import RandomMultiscaleCNN

    return RandomMultiscaleCNN(channels, sizes=(3, 7, 15, 31), channels_per_size=16,
                               seed=CNN_SEED).eval()


def _cnn_features(img: Tensor) -> Tensor:
    net = _metric_cnn(img.shape[0]).to(img.device)
    with torch.no_grad():
        feats = net(img[None].float())
    return torch.cat(list(feats.values()), dim=1)[0].flatten(1).T.double()  # (HW, K)


def cnn_gap(Y: Tensor, X: Tensor, *, projections: int = 64, seed: int = 0) -> float:
    """Sliced Wasserstein-1 distance between the feature-vector distributions of ``Y`` and
    ``X`` under a random multi-scale CNN (sizes 3, 7, 15, 31; 16 ReLU maps each; seed 12345).

    Each pixel gives a 64-dim feature vector; features are standardised by ``Y``'s per-map
    mean and std, projected on ``projections`` random unit directions (``seed``), and the
    exact 1-D W1 distances are averaged. Captures the joint (higher-order) statistics that
    spectra and histograms miss.

    >>> y = torch.rand(1, 48, 48)
    >>> cnn_gap(y, y)
    0.0
    """
    y, x = _pair(Y, X)
    fy, fx = _cnn_features(y), _cnn_features(x)
    mu, sd = fy.mean(0), fy.std(0)
    sd = torch.where(sd > 1e-12, sd, torch.ones_like(sd))
    fy, fx = (fy - mu) / sd, (fx - mu) / sd
    g = torch.Generator().manual_seed(seed)
    d = torch.randn(fy.shape[1], projections, generator=g, dtype=torch.float64)
    d = (d / d.norm(dim=0, keepdim=True)).to(fy.device)
    # float32 projections: sorting 64 x H*W values is the cost; 1e-7 relative is plenty
    return float(_w1_columns((fy @ d).float(), (fx @ d).float()).double().mean())


# --------------------------------------------------------------------------------------
# verbatim copies
# --------------------------------------------------------------------------------------


class PatchMatches(NamedTuple):
    """Nearest-neighbour field of :func:`nearest_patches`; every field is ``(nh, nw)``."""

    rms: Tensor
    """RMS distance to the nearest ``Y`` patch (float64)."""
    contrast: Tensor
    """RMS contrast (standard deviation, averaged over channels) of the ``X`` patch."""
    dy: Tensor
    """Row offset of the match: it sits at row ``stride * i + dy`` of ``Y`` (int64)."""
    dx: Tensor
    """Column offset of the match: column ``stride * j + dx`` of ``Y`` (int64)."""


def nearest_patches(Y: Tensor, X: Tensor, *, patch: int = 16, stride: int = 8,
                    block: int = 256) -> PatchMatches:
    """Nearest patch of ``Y`` (all positions, all channels) for every ``patch x patch``
    patch of ``X`` taken every ``stride`` pixels: RMS distance, the ``X`` patch's contrast,
    and the match's offset, as a :class:`PatchMatches` of ``(nh, nw)`` tensors.

    Uses ``|x - y|^2 = |x|^2 + |y|^2 - 2 <x, y>`` with the correlations computed by
    ``conv2d`` (``block`` X-patches at a time, bounded memory).

    >>> y = torch.rand(1, 48, 48)
    >>> m = nearest_patches(y, y[:, 5:45, 3:43], patch=8, stride=8)
    >>> bool((m.dy == 5).all() and (m.dx == 3).all() and (m.rms < 1e-3).all())
    True
    """
    y, x = _pair(Y, X)
    if patch < 2 or stride < 1:
        raise ValueError(f"patch must be >= 2 and stride >= 1, got {patch}, {stride}")
    if patch > min(*y.shape[1:], *x.shape[1:]):
        raise ValueError(f"patch={patch} is larger than an image")
    C = y.shape[0]
    y32, x32 = y.float()[None], x.float()[None]
    px = F.unfold(x32, patch, stride=stride)[0].T  # (Np, C*p*p)
    nh = (x.shape[1] - patch) // stride + 1
    nw = (x.shape[2] - patch) // stride + 1
    ysq = F.avg_pool2d(y32.square().sum(1, keepdim=True), patch, stride=1)[0, 0] * patch**2
    wy = ysq.shape[1]
    xsq = px.square().sum(1)
    best = torch.empty(px.shape[0], dtype=torch.float32, device=y.device)
    where = torch.empty(px.shape[0], dtype=torch.long, device=y.device)
    for i in range(0, px.shape[0], block):
        w = px[i:i + block].reshape(-1, C, patch, patch)
        corr = F.conv2d(y32, w)[0]  # (nb, Hy-p+1, Wy-p+1)
        d2 = ysq[None] + xsq[i:i + block, None, None] - 2 * corr
        best[i:i + block], where[i:i + block] = d2.flatten(1).min(dim=1)
    rms = (best.clamp_min(0) / (C * patch * patch)).sqrt()
    contrast = px.double().reshape(-1, C, patch * patch).std(dim=2, unbiased=False).mean(1)
    rows = torch.arange(nh, device=y.device)[:, None] * stride
    cols = torch.arange(nw, device=y.device)[None, :] * stride
    return PatchMatches(rms.reshape(nh, nw).double(), contrast.reshape(nh, nw),
                        (where // wy).reshape(nh, nw) - rows,
                        (where % wy).reshape(nh, nw) - cols)


def nearest_patch_rms(Y: Tensor, X: Tensor, *, patch: int = 16, stride: int = 8,
                      block: int = 256) -> tuple[Tensor, Tensor]:
    """RMS distance from each ``patch x patch`` patch of ``X`` (taken every ``stride``
    pixels) to its nearest patch in ``Y``, and the RMS contrast of that ``X`` patch: the
    first two fields of :func:`nearest_patches`, two ``(nh, nw)`` tensors."""
    m = nearest_patches(Y, X, patch=patch, stride=stride, block=block)
    return m.rms, m.contrast


def _coherent(close: Tensor, dy: Tensor, dx: Tensor, step: tuple[int, int],
              tol: int) -> Tensor:
    """Patches that are close and whose neighbour ``step`` away (either side) is close too
    and matched at the same offset (within ``tol`` pixels)."""
    nh, nw = close.shape
    out = torch.zeros_like(close)
    for sy, sx in (step, (-step[0], -step[1])):
        a = (slice(max(0, -sy), nh - max(0, sy)), slice(max(0, -sx), nw - max(0, sx)))
        b = (slice(max(0, sy), nh - max(0, -sy)), slice(max(0, sx), nw - max(0, -sx)))
        same = ((dy[a] - dy[b]).abs() <= tol) & ((dx[a] - dx[b]).abs() <= tol)
        out[a] |= close[a] & close[b] & same
    return out


def copy_fraction(Y: Tensor, X: Tensor, *, patch: int = 16, stride: int = 8,
                  threshold: float = 0.02, relative: float = 0.25,
                  coherent: bool = True, tolerance: int = 1) -> float:
    """Share of ``X``'s patches that lie in a region copied verbatim from ``Y``.

    A ``patch x patch`` patch of ``X`` (every ``stride`` pixels) *matches* when its nearest
    patch in ``Y`` is closer than ``threshold`` in RMS (intensity units; 0.02 is about 5
    grey levels of 255) *and* closer than ``relative`` times the patch's own RMS contrast
    (so that a flat patch, which matches any flat region, is not evidence of copying unless
    it is reproduced exactly).

    A single matching patch is not yet a copy: a straight edge or a regular motif (a
    brick's mortar line) matches some place of ``Y`` by itself — disjoint halves of a brick
    wall "copy" each other at 4–18% by that test alone. A copy is a *region*: with
    ``coherent=True`` (default) a matching patch counts only when a horizontal and a
    vertical neighbour (``stride`` pixels away) match too, at the same offset in ``Y``
    (within ``tolerance`` pixels) — the nearest-neighbour-field coherence used to find
    copy-move forgeries. So a copied piece must be at least ``patch + stride`` pixels wide
    and high (24x24 by default). ``coherent=False`` counts every matching patch.

    1.0: ``X`` is a collage of ``Y``; ~0 for a new sample.

    >>> y = torch.rand(1, 64, 64)
    >>> copy_fraction(y, y[:, 8:48, 5:50])
    1.0
    """
    m = nearest_patches(Y, X, patch=patch, stride=stride)
    copied = (m.rms < threshold) & (m.rms <= relative * m.contrast)
    if coherent:
        copied = (copied & _coherent(copied, m.dy, m.dx, (0, 1), tolerance)
                  & _coherent(copied, m.dy, m.dx, (1, 0), tolerance))
    return float(copied.double().mean())


# --------------------------------------------------------------------------------------
# baselines
# --------------------------------------------------------------------------------------


def random_phase_noise(Y: Tensor, seed: int = 0) -> Tensor:
    """Random-phase noise of ``Y``: same Fourier modulus, random phases.

    ``X_c = mean_c + IFFT(FFT(Y_c - mean_c) * exp(i theta))`` with one random phase field
    ``theta`` (the phase of the FFT of white noise, so ``X`` is real) shared by all channels
    (Galerne et al. 2011: keeps the colour cross-spectra). ``X`` has exactly ``Y``'s power
    spectrum, mean and variance; values are not clipped and may leave ``[0, 1]``. Returns the
    same layout as ``Y``.

    >>> y = torch.rand(3, 40, 50)
    >>> x = random_phase_noise(y, seed=1)
    >>> torch.allclose(torch.fft.fft2(x).abs(), torch.fft.fft2(y).abs(), atol=1e-4)
    True
    """
    if not isinstance(Y, Tensor):
        raise TypeError(f"Y must be a torch.Tensor, got {type(Y).__name__}")
    y4, restore = as_bchw(Y, "Y")
    check_floating(y4, "Y")
    check_finite(y4, "Y")
    B, C, H, W = y4.shape
    g = torch.Generator().manual_seed(seed)
    noise = torch.randn(B, 1, H, W, generator=g, dtype=torch.float64).to(y4.device)
    nf = torch.fft.rfft2(noise)
    phase = nf / nf.abs().clamp_min(1e-300)
    phase[..., 0, 0] = 1.0
    yd = y4.double()
    mean = yd.mean(dim=(2, 3), keepdim=True)
    out = torch.fft.irfft2(torch.fft.rfft2(yd - mean) * phase, s=(H, W)) + mean
    return restore(out.to(y4.dtype))


def second_crops(Y: Tensor) -> list[tuple[Tensor, Tensor]]:
    """Pairs of disjoint crops of ``Y`` ``(C, H, W)``: left/right halves, top/bottom halves,
    and the two diagonals of quadrants (quadrant pairs only if quadrants are >= MIN_SIZE)."""
    C, H, W = Y.shape
    h2, w2 = H // 2, W // 2
    pairs = []
    if w2 >= MIN_SIZE:
        pairs.append((Y[:, :, :w2], Y[:, :, W - w2:]))
    if h2 >= MIN_SIZE:
        pairs.append((Y[:, :h2], Y[:, H - h2:]))
    if h2 >= MIN_SIZE and w2 >= MIN_SIZE:
        pairs.append((Y[:, :h2, :w2], Y[:, H - h2:, W - w2:]))
        pairs.append((Y[:, :h2, W - w2:], Y[:, H - h2:, :w2]))
    return pairs


Metric = Callable[[Tensor, Tensor], float]

#: The metrics of :func:`texture_report`: name -> (function, lower_is_better, description).
METRICS: dict[str, tuple[Metric, bool, str]] = {
    "spectrum_gap": (spectrum_gap, True, "log10 radial power spectrum, mean |diff| (decades)"),
    "histogram_gap": (histogram_gap, True, "pixel histogram W1 (intensity)"),
    "wavelet_gap": (wavelet_gap, True, "wavelet subband histogram W1 / std"),
    "cnn_gap": (cnn_gap, True, "random-CNN feature sliced W1 / std"),
    "copy_fraction": (copy_fraction, True, "share of 16x16 patches in regions copied verbatim"),
}


def _select(metrics: Sequence[str] | None) -> list[str]:
    names = list(METRICS) if metrics is None else list(metrics)
    unknown = [m for m in names if m not in METRICS]
    if unknown:
        raise ValueError(f"unknown metric(s) {unknown}; choose from {list(METRICS)}")
    return names


def texture_baselines(Y: Tensor, *, seed: int = 0,
                      metrics: Sequence[str] | None = None) -> dict[str, dict[str, Any]]:
    """Reference values of each metric computed from ``Y`` alone.

    ``{name: {"second_crop": [values over pairs of disjoint crops of Y], "second_crop_max":
    float | None, "random_phase": metric(Y, random_phase_noise(Y, seed))}}``. The second-crop
    list is empty (max ``None``) when ``Y`` is smaller than ``2 * MIN_SIZE``.
    """
    y = _prep(Y, "Y")
    names = _select(metrics)
    pairs = second_crops(y)
    rpn = random_phase_noise(y, seed=seed)
    out: dict[str, dict[str, Any]] = {}
    for name in names:
        fn = METRICS[name][0]
        crops = [fn(a, b) for a, b in pairs]
        out[name] = {
            "second_crop": crops,
            "second_crop_max": max(crops) if crops else None,
            "random_phase": fn(y, rpn),
        }
    return out


def texture_report(Y: Tensor, X: Tensor, *, baselines: bool | dict = True, seed: int = 0,
                   metrics: Sequence[str] | None = None) -> dict[str, dict[str, Any]]:
    """Every metric for ``X`` against ``Y``, with reference values and a verdict.

    Returns ``{name: {"value": float, "description": str, ...}}``; with ``baselines`` (True,
    or the dict of a previous :func:`texture_baselines` call to reuse) each entry also has
    ``second_crop``, ``second_crop_max``, ``random_phase`` and ``verdict``:
    ``"within second-crop range"`` when ``value <= second_crop_max`` (as good as a fresh
    crop of the example), else ``"outside second-crop range"`` (``"no second crop (Y too
    small)"`` when ``Y`` cannot be split). Remember that a spectrum within range says little
    alone: random-phase noise is always within it.

    >>> y = torch.rand(1, 64, 64)
    >>> r = texture_report(y, y[:, :40, :40], metrics=["histogram_gap"])
    >>> sorted(r["histogram_gap"])
    ['description', 'random_phase', 'second_crop', 'second_crop_max', 'value', 'verdict']
    """
    y, x = _pair(Y, X)
    names = _select(metrics)
    base: dict[str, dict[str, Any]] | None = None
    if isinstance(baselines, dict):
        missing = [n for n in names if n not in baselines]
        if missing:
            raise ValueError(f"the baselines given lack {missing}")
        base = baselines
    elif baselines:
        base = texture_baselines(y, seed=seed, metrics=names)
    report: dict[str, dict[str, Any]] = {}
    for name in names:
        fn, _, desc = METRICS[name]
        entry: dict[str, Any] = {"value": fn(y, x), "description": desc}
        if base is not None:
            entry.update(base[name])
            top = entry["second_crop_max"]
            if top is None:
                entry["verdict"] = "no second crop (Y too small)"
            else:
                ok = entry["value"] <= top * (1 + 1e-9) + 1e-12
                entry["verdict"] = ("within second-crop range" if ok
                                    else "outside second-crop range")
        report[name] = entry
    return report
