"""Colour handling, histogram matching and spectrum-matched initial noise."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .losses import sorted_quantiles

__all__ = [
    "ColourPCA",
    "ColourStatistics",
    "match_histogram",
    "clamp_colour_range",
    "spectral_noise",
    "resize_periodic",
]


class ColourPCA(nn.Module):
    """Wrap a per-channel statistics model so that it sees decorrelated colour channels.

    The example's colour covariance is diagonalised (as in Portilla & Simoncelli's colour
    extension): ``x`` ``(B, 3, H, W)`` is centred by the example's mean colour, projected on
    the principal axes and whitened; the pairwise sums ``(p_i + p_j) / sqrt(2)`` are
    appended, so a model computing statistics channel by channel also constrains the
    cross-channel correlations at every scale and orientation (the moments of a sum contain
    the cross terms). The wrapped model receives ``(B, 6, H, W)``. Greyscale (``C == 1``)
    inputs are only centred.
    """

    def __init__(self, model: nn.Module, example: Tensor, cross: bool = True) -> None:
        super().__init__()
        self.model = model
        c = example.shape[1]
        pix = example[0].reshape(c, -1).double()
        mean = pix.mean(dim=1)
        if c == 1:
            basis = torch.ones(1, 1, dtype=torch.float64)
        else:
            cov = torch.cov(pix)
            evals, evecs = torch.linalg.eigh(cov)
            order = torch.argsort(evals, descending=True)
            evals, evecs = evals[order], evecs[:, order]
            # whiten with a floor so a near-grey example does not amplify noise
            std = evals.clamp_min(evals[0] * 1e-3 + 1e-12).sqrt()
            basis = evecs.T / std[:, None] * std[0]
        pairs = [(i, j) for i in range(c) for j in range(i + 1, c)] if cross else []
        self.pairs = pairs
        self.register_buffer("mean", mean.to(example.dtype).view(1, c, 1, 1))
        self.register_buffer("basis", basis.to(example.dtype))

    @property
    def out_channels(self) -> int:
        return self.basis.shape[0] + len(self.pairs)

    def transform(self, x: Tensor) -> Tensor:
        """``(B, C, H, W)`` -> decorrelated channels plus pairwise sums ``(B, C', H, W)``."""
        p = torch.einsum("kc,bchw->bkhw", self.basis, x - self.mean)
        if self.pairs:
            s = [(p[:, i] + p[:, j]) / math.sqrt(2.0) for i, j in self.pairs]
            p = torch.cat([p, torch.stack(s, dim=1)], dim=1)
        return p

    def forward(self, x: Tensor):  # noqa: ANN201 - passes through the model's output type
        return self.model(self.transform(x))

    def pca(self, x: Tensor) -> Tensor:
        """``(B, C, H, W)`` -> the whitened principal components ``(B, C, H, W)``."""
        return torch.einsum("kc,bchw->bkhw", self.basis, x - self.mean)

    def inverse(self, p: Tensor) -> Tensor:
        """Inverse of :meth:`pca`: components ``(B, C, H, W)`` -> colours."""
        return torch.einsum("ck,bkhw->bchw", torch.linalg.inv(self.basis), p) + self.mean


def fourier_downsample(x: Tensor, size: tuple[int, int]) -> Tensor:
    """Band-limited periodic downsampling of ``x`` ``(B, C, H, W)`` to ``size`` (smaller).

    Keeps the DFT coefficients of the frequencies the smaller grid can hold (the ideal
    periodic low-pass): no pixel-block pattern in the image or in the gradient, unlike
    2x2 means. The mean is preserved.

    >>> x = torch.rand(1, 1, 16, 16)
    >>> y = fourier_downsample(x, (8, 8))
    >>> tuple(y.shape), bool(torch.allclose(y.mean(), x.mean()))
    ((1, 1, 8, 8), True)
    """
    h, w = x.shape[-2:]
    sh, sw = size
    if (sh, sw) == (h, w):
        return x
    X = torch.fft.fft2(x)
    ky = torch.fft.fftfreq(sh, 1 / sh, device=x.device).round().long() % h
    kx = torch.fft.fftfreq(sw, 1 / sw, device=x.device).round().long() % w
    Xc = X.index_select(-2, ky).index_select(-1, kx)
    # (the real part symmetrises the Nyquist rows / columns of an even smaller grid)
    return torch.fft.ifft2(Xc).real * (sh * sw / (h * w))


def _half(x: Tensor) -> Tensor:
    """Periodic 2x band-limited downsampling (see :func:`fourier_downsample`)."""
    h, w = x.shape[-2:]
    return fourier_downsample(x, (max(1, h // 2), max(1, w // 2)))


class ColourStatistics(ColourPCA):
    """Colour statistics at about twice the cost of the grey ones (instead of six times).

    Like :class:`ColourPCA` (principal components of the example's colours, whitened, and
    their pairwise sums ``(p_i + p_j) / sqrt(2)`` so that per-channel statistics also hold
    the cross-channel terms) but, as in JPEG's chroma subsampling, the eye's far lower
    acuity for colour than for luminance sets the budget:

    * the first component (luminance-like) gets the full statistics ``make(J)`` at full
      resolution;
    * the two minor components and the three pair sums get the statistics ``make(J - 1)``
      of their 2x downsampled maps (a quarter of the pixels, one scale fewer, the same
      largest scale);
    * all six channels get the wavelet power per band at full resolution
      (:class:`~difftransforms.scattering.CovarianceMoments`, by Parseval, nearly free),
      so the finest-scale colour variations and the colour cross-spectra at every scale
      and orientation are still constrained.

    ``x`` ``(B, 3, H, W)`` -> a list of three ``(B, ...)`` statistics tensors (luminance,
    subsampled chroma and pairs, power per band), each weighing the same in the loss.
    """

    def __init__(self, make: Callable[[int], nn.Module], example: Tensor, J: int,
                 L: int) -> None:
        super().__init__(nn.Identity(), example, cross=True)
        if example.shape[1] < 2:
            raise ValueError("ColourStatistics needs a colour example (C >= 2)")
        from difftransforms.scattering import CovarianceMoments

        self.J = int(J)
        self.half = self.J >= 2
        self.luma = make(self.J)
        self.chroma = make(self.J - 1) if self.half else make(self.J)
        self.power = CovarianceMoments(J=self.J, L=L)

    def forward(self, x: Tensor) -> list[Tensor]:  # type: ignore[override]
        b = x.shape[0]
        p = self.transform(x)  # (B, 6, H, W): 3 components + 3 pair sums
        c = p[:, 1:]
        if self.half:
            c = _half(c)
        return [
            self.luma(p[:, :1]).reshape(b, -1),
            self.chroma(c).reshape(b, -1),
            self.power(p).reshape(b, -1),
        ]


def match_histogram(x: Tensor, ref: Tensor) -> Tensor:
    """Exact per-channel histogram matching of ``x`` ``(B, C, H, W)`` to ``ref`` ``(1, C, h, w)``.

    Sort-based: the k-th smallest pixel of each channel of ``x`` gets the value of the
    matching quantile of ``ref`` (interpolated when the sizes differ). The ranks of ``x``
    are kept, so the image structure is unchanged.

    >>> x = torch.tensor([[[[3.0, 1.0], [2.0, 0.0]]]])
    >>> match_histogram(x, torch.tensor([[[[10.0, 20.0], [30.0, 40.0]]]])).flatten().tolist()
    [40.0, 20.0, 30.0, 10.0]
    """
    b, c, h, w = x.shape
    flat = x.reshape(b, c, -1)
    order = torch.argsort(flat, dim=-1, stable=True)
    rs = torch.sort(ref.reshape(1, c, -1).to(x), dim=-1).values  # (1, C, N)
    q = sorted_quantiles(rs.transpose(1, 2), h * w).transpose(1, 2)  # (1, C, h*w)
    out = torch.empty_like(flat)
    out.scatter_(-1, order, q.expand(b, c, -1).contiguous())
    return out.reshape(b, c, h, w)


def clamp_colour_range(x: Tensor, ref: Tensor) -> Tensor:
    """Pull the colours of ``x`` ``(B, C, H, W)`` into the colour range of ``ref`` ``(1, C, h, w)``.

    Each pixel's coordinates on the principal axes of ``ref``'s colours are clamped to
    the range ``ref`` spans on those axes (a box aligned with the colour distribution,
    much tighter than the RGB cube for a brownish texture): removes off-hue speckles
    (e.g. bluish dots in fur) that per-channel RGB clamping or histogram matching keep.
    Greyscale (``C == 1``) is returned as is.

    >>> g = torch.Generator().manual_seed(0)
    >>> ref = torch.rand(1, 3, 8, 8, generator=g) * 0.2 + 0.4
    >>> bool(torch.allclose(clamp_colour_range(ref, ref), ref, atol=1e-6))  # inside: kept
    True
    >>> far = clamp_colour_range(torch.zeros(1, 3, 2, 2), ref)  # black: pulled in
    >>> bool(far.min() > 0.2)
    True
    """
    c = x.shape[1]
    if c == 1:
        return x
    pix = ref[0].reshape(c, -1).double()
    mean = pix.mean(dim=1, keepdim=True)
    _, evecs = torch.linalg.eigh(torch.cov(pix))
    q = evecs.T @ (pix - mean)
    lo, hi = q.min(dim=1).values, q.max(dim=1).values
    xf = x.double().reshape(x.shape[0], c, -1)
    p = torch.einsum("ck,bcn->bkn", evecs, xf - mean)
    p = torch.maximum(torch.minimum(p, hi.view(1, c, 1)), lo.view(1, c, 1))
    out = torch.einsum("ck,bkn->bcn", evecs, p) + mean
    return out.reshape(x.shape).to(x.dtype)


def resize_periodic(x: Tensor, size: tuple[int, int]) -> Tensor:
    """Resize a periodic image ``(B, C, H, W)`` to ``size`` (bilinear with wrap-around)."""
    h, w = x.shape[-2:]
    if (h, w) == tuple(size):
        return x
    if size[0] < h and size[1] < w and h % size[0] == 0 and w % size[1] == 0:
        return F.avg_pool2d(x, (h // size[0], w // size[1]))
    # pad one period-wrapped pixel on each side so the interpolation sees the wrap
    xp = F.pad(x, (1, 1, 1, 1), mode="circular")
    sh, sw = size
    gy = (torch.arange(sh, device=x.device, dtype=x.dtype) + 0.5) * (h / sh) - 0.5 + 1
    gx = (torch.arange(sw, device=x.device, dtype=x.dtype) + 0.5) * (w / sw) - 0.5 + 1
    # normalised coords for grid_sample with align_corners=True over the padded image
    gy = gy / (h + 1) * 2 - 1
    gx = gx / (w + 1) * 2 - 1
    grid = torch.stack(torch.meshgrid(gx, gy, indexing="xy"), dim=-1)
    grid = grid.unsqueeze(0).expand(x.shape[0], -1, -1, -1)
    return F.grid_sample(xp, grid, mode="bilinear", padding_mode="border", align_corners=True)


def spectral_noise(example: Tensor, size: tuple[int, int], generator: torch.Generator) -> Tensor:
    """Asymptotic discrete spot noise (Galerne et al. 2011) of ``example`` at ``size``.

    A Gaussian texture with the example's mean colour, power spectrum and colour
    covariance: the centred example (periodic-ish crop or zero-padded "spot" when the
    output is larger) is circularly convolved with one white-noise field shared by all
    channels. A good, cheap starting point for the optimisation.
    """
    _, c, h, w = example.shape
    oh, ow = size
    mean = example.mean(dim=(2, 3), keepdim=True)
    spot = example - mean
    ch, cw = min(h, oh), min(w, ow)
    top, left = (h - ch) // 2, (w - cw) // 2
    spot = spot[..., top : top + ch, left : left + cw]
    # smooth window to avoid the crop's border discontinuities showing as a cross
    wy = torch.hann_window(ch + 2, periodic=False, dtype=example.dtype, device=example.device)
    wx = torch.hann_window(cw + 2, periodic=False, dtype=example.dtype, device=example.device)
    win = (wy[1:-1, None] * wx[None, 1:-1]).sqrt()
    spot = spot * win / win.pow(2).mean().sqrt()
    spot = F.pad(spot, (0, ow - cw, 0, oh - ch)) / math.sqrt(ch * cw)
    noise = torch.randn(1, 1, oh, ow, generator=generator, dtype=torch.float64)
    noise = noise.to(device=example.device, dtype=example.dtype)
    out = torch.fft.irfft2(torch.fft.rfft2(spot) * torch.fft.rfft2(noise), s=(oh, ow))
    return out + mean
