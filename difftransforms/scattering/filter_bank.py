"""Morlet and Gabor filter banks built directly in the Fourier domain (kymatio-exact).

kymatio builds each wavelet in space (a Gaussian envelope times a plane wave, periodised
over 5x5 neighbouring periods), takes its FFT and keeps the real part. By the Poisson
summation formula the DFT of the periodised samples of ``g`` is the continuous Fourier
transform ``ĝ`` sampled at ``ω = 2πk/M`` and *periodised over frequency periods of 2π*:

    DFT[k1, k2] = Σ_{m1, m2} ĝ(2π k1/M + 2π m1, 2π k2/N + 2π m2),

and the Fourier transform of a Gabor function is a Gaussian bump (real), so the whole bank
is a closed form evaluated on a tensor grid. A Gaussian bump is negligible (< 2e-16 of its
peak) outside a small box around its centre, so only that box is evaluated, for each
neighbouring period it overlaps: the bank for 512x512, J=6 takes milliseconds instead of
kymatio's minutes.

Conventions (kymatio 0.3, ``kymatio.scattering2d.filter_bank``):

- wavelet ``ψ_{j,l}``: ``σ = 0.8·2^j``, central frequency ``ξ = 3π/4 / 2^j``, angle
  ``θ_l = (int(L - L/2 - 1) - l)·π/L``, slant ``4/L`` (the envelope is ``1/slant`` times longer
  across the oscillation than along it);
- the Morlet is the Gabor minus ``β`` times its envelope, ``β`` chosen so that ``ψ̂(0) = 0``;
- the low-pass ``φ_J`` is the Gaussian of ``σ = 0.8·2^(J-1)`` (slant 1);
- the spatial normalisation is ``1 / (2·3.1415·σ²/slant)`` (kymatio's constant), so
  ``φ̂(0) = π/3.1415 ≈ 1.00003``;
- axis 0 of the grid is the first spatial axis (rows, ``x`` in kymatio's code).

``psi_levels[r]`` / ``phi_levels[r]`` are the filters for a signal already subsampled by
``2^r`` (kymatio's ``psi['levels'][r]``): the frequencies outside the band of the coarse
grid are zeroed and the rest wrapped onto the ``(M/2^r, N/2^r)`` grid.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from .._utils import as_int

__all__ = [
    "MorletFilterBank",
    "gabor_filter_bank",
    "gabor_fourier",
    "morlet_filter_bank",
    "morlet_fourier",
    "periodize_filter",
]

# exp(-_TAIL) ~ 2.3e-16: Gaussian values below this fraction of the peak are not evaluated.
_TAIL = 36.0
# kymatio normalises its spatial Gaussians by 2 * 3.1415 * sigma^2 / slant (not pi).
_KYMATIO_PI = 3.1415


def _check_shape(shape: tuple[int, int] | list[int]) -> tuple[int, int]:
    try:
        vals = [as_int(s) for s in shape]
    except TypeError:
        vals = []
    if len(vals) != 2 or any(v is None or v < 1 for v in vals):
        raise ValueError(f"shape must be two positive ints (M, N), got {shape!r}")
    return vals[0], vals[1]  # type: ignore[return-value]


def _check_int(v: object, name: str) -> int:
    i = as_int(v)
    if i is None or i < 1:
        raise ValueError(f"{name} must be an int >= 1, got {v!r}")
    return i


def _default_dtype(dtype: torch.dtype | None) -> torch.dtype:
    dtype = torch.float32 if dtype is None else dtype
    if dtype not in (torch.float32, torch.float64, torch.float16, torch.bfloat16):
        raise TypeError(f"dtype must be a real floating dtype, got {dtype}")
    return dtype


def kymatio_theta(l: int, L: int) -> float:
    """Angle of orientation index ``l`` out of ``L`` (kymatio's convention)."""
    return (int(L - L / 2 - 1) - l) * math.pi / L


def _lattice_box(lo: float, hi: float, step: float) -> Tensor:
    """Integers ``k`` with ``lo <= k * step <= hi``."""
    return torch.arange(math.ceil(lo / step), math.floor(hi / step) + 1, dtype=torch.float64)


def _add_wrapped(out: Tensor, block: Tensor, k1: int, k2: int) -> None:
    """``out (M, N) += block`` placed at lattice offset ``(k1, k2)`` on the torus (the block
    may wrap around, several times)."""
    M, N = out.shape
    n1, n2 = block.shape
    i = 0
    while i < n1:
        r = (k1 + i) % M
        h = min(n1 - i, M - r)
        j = 0
        while j < n2:
            c = (k2 + j) % N
            w = min(n2 - j, N - c)
            out[r:r + h, c:c + w] += block[i:i + h, j:j + w]
            j += w
        i += h


def _gaussian_bumps(M: int, N: int, sigma: float, thetas: list[float], xi: float,
                    slant: float, out: Tensor | None = None) -> Tensor:
    """``real(fft2(gabor_2d(M, N, sigma, theta, xi, slant)))`` for each angle: ``(T, M, N)``
    float64 on the CPU (written into ``out`` when given).

    The periodised spatial Gabor ``g(u) = exp(-uᵀAu + i ξ·u) / norm`` is evaluated either in
    space (then FFT) or directly in frequency (its transform is a real Gaussian bump,
    periodised over frequency periods), whichever box of non-negligible values is smaller.
    """
    s2 = sigma * sigma
    amp = math.pi / _KYMATIO_PI  # (2πσ²/slant) / (2·3.1415·σ²/slant): the bump's peak
    blocks = []
    for theta in thetas:
        c, s = math.cos(theta), math.sin(theta)
        # frequency exponent σ²/2 [(c u1 + s u2)² + (-s u1 + c u2)²/slant²] = a u1²+2b u1u2+d u2²
        a = s2 / 2 * (c * c + s * s / slant**2)
        d = s2 / 2 * (s * s + c * c / slant**2)
        b = s2 / 2 * (c * s - s * c / slant**2)
        det_f = a * d - b * b
        hf1, hf2 = math.sqrt(_TAIL * d / det_f), math.sqrt(_TAIL * a / det_f)
        # spatial exponent uᵀ P u, P = R diag(1, slant²) Rᵀ / (2σ²) = (1/4) Q⁻¹
        pa, pd, pb = d / (4 * det_f), a / (4 * det_f), -b / (4 * det_f)
        det_s = pa * pd - pb * pb
        hs1, hs2 = math.sqrt(_TAIL * pd / det_s), math.sqrt(_TAIL * pa / det_s)
        blocks.append((c, s, a, b, d, hf1, hf2, pa, pb, pd, hs1, hs2))
    # work estimate of each route (the spatial one pays an FFT per filter)
    fourier_pts = sum((2 * bl[5] * M / (2 * math.pi) + 1) * (2 * bl[6] * N / (2 * math.pi) + 1)
                      for bl in blocks)
    spatial_pts = sum((2 * bl[10] + 1) * (2 * bl[11] + 1) for bl in blocks)
    # an FFT point costs about as much as three evaluated Gaussian points (measured on CPU)
    spatial_pts += len(blocks) * 3 * M * N
    if out is None:
        out = torch.zeros(len(thetas), M, N, dtype=torch.float64)
    if spatial_pts < fourier_pts:
        norm = 2 * _KYMATIO_PI * s2 / slant
        sp = torch.zeros(len(thetas), M, N, dtype=torch.complex128)
        for t, (c, s, _, _, _, _, _, pa, pb, pd, hs1, hs2) in enumerate(blocks):
            x1 = _lattice_box(-hs1, hs1, 1.0)
            x2 = _lattice_box(-hs2, hs2, 1.0)
            u1, u2 = x1[:, None], x2[None, :]
            arg = -(pa * u1 * u1 + (2 * pb) * (u1 * u2) + pd * u2 * u2)
            g = torch.polar(torch.exp(arg) / norm, (xi * c) * u1 + (xi * s) * u2)
            _add_wrapped(sp[t], g, int(x1[0]), int(x2[0]))
        out.copy_(torch.fft.fft2(sp).real)
        return out
    step1, step2 = 2 * math.pi / M, 2 * math.pi / N
    for t, (c, s, a, b, d, hf1, hf2, *_) in enumerate(blocks):
        c1, c2 = xi * c, xi * s
        k1 = _lattice_box(c1 - hf1, c1 + hf1, step1)
        k2 = _lattice_box(c2 - hf2, c2 + hf2, step2)
        u1 = (k1 * step1 - c1)[:, None]
        u2 = (k2 * step2 - c2)[None, :]
        q = (a * u1 * u1) + (2 * b) * (u1 * u2) + (d * u2 * u2)
        _add_wrapped(out[t], torch.exp(-q).mul_(amp), int(k1[0]), int(k2[0]))
    return out


def gabor_fourier(shape: tuple[int, int], sigma: float, theta: float, xi: float,
                  slant: float = 1.0, *, dtype: torch.dtype | None = None,
                  device: torch.device | str | None = None) -> Tensor:
    """Fourier transform ``(M, N)`` (real) of kymatio's periodised 2-D Gabor filter
    ``gabor_2d(M, N, sigma, theta, xi, slant)``, i.e. ``real(fft2(gabor_2d(...)))``.

    >>> g = gabor_fourier((16, 16), sigma=2.0, theta=0.0, xi=0.0)
    >>> round(float(g[0, 0]), 4)  # kymatio's normalisation: ĝ(0) = π / 3.1415
    1.0
    """
    M, N = _check_shape(shape)
    g = _gaussian_bumps(M, N, float(sigma), [float(theta)], float(xi), float(slant))[0]
    return g.to(dtype=_default_dtype(dtype), device=device)


def morlet_fourier(shape: tuple[int, int], sigma: float, theta: float, xi: float,
                   slant: float = 0.5, *, dtype: torch.dtype | None = None,
                   device: torch.device | str | None = None) -> Tensor:
    """Fourier transform ``(M, N)`` (real, zero at frequency 0) of kymatio's Morlet
    ``morlet_2d(M, N, sigma, theta, xi, slant)``: Gabor minus ``β`` times its envelope."""
    M, N = _check_shape(shape)
    return _morlets(M, N, float(sigma), [float(theta)], float(xi), float(slant))[0].to(
        dtype=_default_dtype(dtype), device=device)


def _morlets(M: int, N: int, sigma: float, thetas: list[float], xi: float,
             slant: float, out: Tensor | None = None) -> Tensor:
    gab = _gaussian_bumps(M, N, sigma, thetas, xi, slant, out)
    env = _gaussian_bumps(M, N, sigma, thetas, 0.0, slant,
                          torch.zeros(len(thetas), M, N, dtype=gab.dtype))
    beta = gab[:, 0, 0] / env[:, 0, 0]
    return gab.sub_(env.mul_(beta[:, None, None]))


def periodize_filter(filters: Tensor, res: int) -> Tensor:
    """Filters ``(..., M, N)`` for a signal subsampled by ``2^res``: ``(..., M/2^res, N/2^res)``.

    kymatio's ``periodize_filter_fft``: the frequencies outside the band of the coarse grid
    are zeroed and the remaining ones wrapped onto the coarse grid, so each coarse frequency
    keeps the one full-grid value of the same (signed) frequency: a crop of the spectrum.
    """
    if res == 0:
        return filters
    M, N = filters.shape[-2:]
    k = 2**res
    if M % k or N % k:
        raise ValueError(f"filter size {(M, N)} is not divisible by 2^res = {k}")
    m, n = M // k, N // k
    sx, sy = int(M * 2 ** (-res - 1)), int(N * 2 ** (-res - 1))  # kymatio's mask start
    rows = torch.cat([filters[..., :sx, :], filters[..., M - (m - sx):, :]], dim=-2)
    return torch.cat([rows[..., :sy], rows[..., N - (n - sy):]], dim=-1)


@dataclass
class MorletFilterBank:
    """A Morlet filter bank in the Fourier domain (all real tensors).

    Attributes:
        psi: ``(J, L, M, N)`` wavelets ``ψ̂_{j,l}`` on the full grid.
        phi: ``(M, N)`` low-pass ``φ̂_J``.
        psi_levels: ``psi_levels[r]`` is ``(J, L, M/2^r, N/2^r)``: every wavelet for a signal
            subsampled by ``2^r`` (kymatio's ``psi[n]['levels'][r]``), ``r = 0 .. J-1``.
        phi_levels: ``phi_levels[r]`` is ``(M/2^r, N/2^r)``, ``r = 0 .. J-1``.
        J, L, shape: the parameters.
    """

    psi: Tensor
    phi: Tensor
    psi_levels: list[Tensor]
    phi_levels: list[Tensor]
    J: int
    L: int
    shape: tuple[int, int]

    def to(self, *args, **kwargs) -> MorletFilterBank:
        psi, phi = self.psi.to(*args, **kwargs), self.phi.to(*args, **kwargs)
        # level 0 is the full grid itself: keep it shared, not a second copy
        psi_levels = [psi if p is self.psi else p.to(*args, **kwargs) for p in self.psi_levels]
        phi_levels = [phi if p is self.phi else p.to(*args, **kwargs) for p in self.phi_levels]
        return MorletFilterBank(psi, phi, psi_levels, phi_levels, self.J, self.L, self.shape)


def morlet_filter_bank(shape: tuple[int, int], J: int, L: int = 8, *,
                       dtype: torch.dtype | None = None,
                       device: torch.device | str | None = None,
                       levels: bool = True) -> MorletFilterBank:
    """Morlet wavelets ``ψ_{j,θ}`` (``J`` scales, ``L`` orientations) and low-pass ``φ_J`` in
    the Fourier domain, equal to kymatio 0.3's ``filter_bank(M, N, J, L)``.

    Args:
        shape: ``(M, N)`` grid size (the padded size, for a padded transform).
        J: number of scales (``>= 1``); the low-pass has width ``0.8·2^(J-1)``.
        L: number of orientations (``>= 1``), angles ``θ_l = (int(L-L/2-1) - l)π/L``.
        dtype: float32 (default) or float64; computed in float64 and rounded once.
        device: where the tensors go.
        levels: also build ``psi_levels`` / ``phi_levels`` (filters for subsampled signals;
            all of them for ``r < J`` whatever the dimension is divisible by ``2^r``).

    Returns:
        a :class:`MorletFilterBank`.

    >>> fb = morlet_filter_bank((32, 48), J=3, L=4)
    >>> tuple(fb.psi.shape), tuple(fb.psi_levels[2].shape), float(fb.psi[..., 0, 0].abs().max())
    ((3, 4, 32, 48), (3, 4, 8, 12), 0.0)
    """
    M, N = _check_shape(shape)
    J, L = _check_int(J, "J"), _check_int(L, "L")
    dtype = _default_dtype(dtype)
    thetas = [kymatio_theta(l, L) for l in range(L)]
    # Gaussians are evaluated in float64 and accumulated in float64 for float64 banks, in
    # float32 otherwise (a few additions per value: ~1e-7 of the peak)
    work = torch.float64 if dtype == torch.float64 else torch.float32
    psi = torch.zeros(J, L, M, N, dtype=work)
    for j in range(J):
        _morlets(M, N, 0.8 * 2**j, thetas, 3.0 / 4.0 * math.pi / 2**j, 4.0 / L, psi[j])
    phi = _gaussian_bumps(M, N, 0.8 * 2 ** (J - 1), [0.0], 0.0, 1.0,
                          torch.zeros(1, M, N, dtype=work))[0]
    psi_levels: list[Tensor] = []
    phi_levels: list[Tensor] = []
    if levels:
        for r in range(J):
            if M % 2**r or N % 2**r:
                break
            psi_levels.append(periodize_filter(psi, r).to(dtype=dtype, device=device))
            phi_levels.append(periodize_filter(phi, r).to(dtype=dtype, device=device))
    return MorletFilterBank(psi.to(dtype=dtype, device=device),
                            phi.to(dtype=dtype, device=device),
                            psi_levels, phi_levels, J, L, (M, N))


def gabor_filter_bank(shape: tuple[int, int], J: int, L: int = 8, *,
                      dtype: torch.dtype | None = None,
                      device: torch.device | str | None = None) -> Tensor:
    """Gabor filters ``(J, L, M, N)`` in the Fourier domain: the Morlets of
    :func:`morlet_filter_bank` before the zero-mean correction (a Gaussian bump centred on
    ``ξ_j (cos θ_l, sin θ_l)``; not exactly zero at frequency 0).

    >>> g = gabor_filter_bank((32, 32), J=2, L=4)
    >>> tuple(g.shape), bool(g[0, 0, 0, 0] > 0)
    ((2, 4, 32, 32), True)
    """
    M, N = _check_shape(shape)
    J, L = _check_int(J, "J"), _check_int(L, "L")
    thetas = [kymatio_theta(l, L) for l in range(L)]
    g = torch.stack([_gaussian_bumps(M, N, 0.8 * 2**j, thetas, 3.0 / 4.0 * math.pi / 2**j,
                                     4.0 / L) for j in range(J)])
    return g.to(dtype=_default_dtype(dtype), device=device)
