"""Second-order and scattering-covariance statistics: ``CovarianceMoments``, ``ScatteringSpectra``.

- :class:`CovarianceMoments`: the power ``P(λ) = mean |x ⋆ ψ_λ|²`` of every wavelet band (the
  talk's "covariance moments"): a band-averaged power spectrum, all that a stationary
  Gaussian texture model keeps. Phase alignments (edges, blobs) are invisible to it.
- :class:`ScatteringSpectra`: the *scattering spectra* of Cheng & Morel et al. (2023,
  "Scattering Spectra Models for Physics"), low-order moments of the wavelet transform and
  its modulus that also capture non-Gaussian structure:

  * ``S1(λ) = mean |x ⋆ ψ_λ|``, reported as ``S1 / sqrt(P)``: the *sparsity* of band ``λ``
    (``√π/2 ≈ 0.886`` for a Gaussian field, smaller for sparse/intermittent ones);
  * ``S2(λ) = P(λ)``, reported as ``P / var(x)``: the fraction of variance per band;
  * ``S3(λ1, λ2) = Cov(x ⋆ ψ_λ2, |x ⋆ ψ_λ1| ⋆ ψ_λ2)`` for ``j1 <= j2``, divided by
    ``sqrt(P(λ1) P(λ2))``: phase alignment between a band and the envelope of a finer
    band (zero for a Gaussian field; the sign tells e.g. edges from lines);
  * ``S4(λ1, λ2, λ3) = Cov(|x ⋆ ψ_λ1| ⋆ ψ_λ3, |x ⋆ ψ_λ2| ⋆ ψ_λ3)`` for ``j1 <= j2 <= j3``,
    divided by ``sqrt(P(λ1) P(λ2))``: correlations of the envelopes of two bands at the
    larger scale ``j3`` (cross-scale dependence: shapes, alignments, intermittency).

  ``S3`` and ``S4`` are complex: their real and imaginary parts are both returned.

All statistics are means over the whole periodic image (no padding), exact up to the
sampling of intermediate maps (see ``oversampling``): covariances are computed by Parseval
from the spectra of the modulus maps (no inverse FFT), band-limited to the support of the
outer wavelet.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .backend import Backend, get_backend
from .core import fold
from .filter_bank import periodize_filter
from .moments import _check, _check_input
from .scattering2d import bank_for, empty_batch

__all__ = ["CovarianceMoments", "ScatteringSpectra", "covariance_moments", "scattering_spectra",
           "spectra_meta"]

_MATMUL_BUDGET = 64 * 2**20


def _power(x: Tensor, psi: Tensor) -> Tensor:
    """``P`` ``(n, J, L)`` = mean over pixels of ``|x ⋆ ψ|²``, by Parseval."""
    n, H, W = x.shape
    J, L = psi.shape[:2]
    spec = torch.fft.fft2(x).abs().square().reshape(n, H * W)
    return (spec @ psi.square().reshape(J * L, H * W).T).reshape(n, J, L) / (H * W) ** 2


def covariance_moments(x: Tensor, J: int, L: int = 8, *, normalize: bool = True,
                       eps: float = 1e-12) -> Tensor:
    """Power per wavelet band of ``x`` ``(..., H, W)`` -> ``(..., 2 + J·L)``, periodic.

    Layout: ``[mean, var, P(j, θ) for j < J, θ < L]`` with ``P(λ) = mean |x ⋆ ψ_λ|²``
    (exact, by Parseval). ``normalize=True`` divides ``P`` by ``var(x) + eps``: the fraction
    of the variance in each band (scale-free). They do not sum to one: the Morlets tile
    only about half of the frequency plane (one of each pair of opposite frequencies, whose
    power is the same for a real image) and leave out the lowest frequencies (below the
    coarsest band), so the sum is about 0.55-0.6 for white noise and 0.5-0.9 for natural
    (1/f) images.

    >>> tuple(covariance_moments(torch.rand(2, 32, 32), J=3, L=4).shape)
    (2, 14)
    """
    _check(J, L, 1, 0)
    x = _check_input(x, J)
    if x.numel() == 0:
        return empty_batch(lambda z: covariance_moments(z, J, L, normalize=normalize, eps=eps),
                           x)
    lead = x.shape[:-2]
    xs = x.reshape(-1, *x.shape[-2:])
    psi = bank_for(tuple(x.shape[-2:]), J, L, x).psi
    p = _power(xs, psi).reshape(xs.shape[0], -1)
    var = xs.var(dim=(-2, -1), unbiased=False)
    if normalize:
        p = p / (var[:, None] + eps)
    out = torch.cat([xs.mean(dim=(-2, -1))[:, None], var[:, None], p], dim=1)
    return out.reshape(*lead, out.shape[-1])


class CovarianceMoments(nn.Module):
    """Module form of :func:`covariance_moments` (the Gaussian-model statistics).

    Shape: ``(..., H, W)`` -> ``(..., 2 + J·L)``.

    >>> tuple(CovarianceMoments(J=2, L=4)(torch.rand(1, 3, 16, 16)).shape)
    (1, 3, 10)
    """

    def __init__(self, J: int, L: int = 8, *, normalize: bool = True,
                 eps: float = 1e-12) -> None:
        super().__init__()
        _check(J, L, 1, 0)
        self.J, self.L, self.normalize, self.eps = J, L, normalize, eps

    def forward(self, x: Tensor) -> Tensor:
        return covariance_moments(x, self.J, self.L, normalize=self.normalize, eps=self.eps)

    def extra_repr(self) -> str:
        return f"J={self.J}, L={self.L}, normalize={self.normalize}"


def spectra_meta(J: int, L: int) -> dict[str, list]:
    """Kind, scales and angles of each entry of :func:`scattering_spectra`'s output.

    ``kind`` is one of ``mean, var, S2, S1, S3re, S3im, S4re, S4im``; ``j`` / ``theta`` are
    tuples ``(j1, j2[, j3])`` / ``(θ1, θ2[, θ3])``.

    >>> m = spectra_meta(2, 1)
    >>> from collections import Counter
    >>> Counter(spectra_meta(2, 1)["kind"])
    Counter({'S4re': 4, 'S4im': 4, 'S3re': 3, 'S3im': 3, 'S2': 2, 'S1': 2, 'mean': 1, 'var': 1})
    """
    kind, js, th = ["mean", "var"], [(), ()], [(), ()]
    for k in ("S2", "S1"):
        for j in range(J):
            for t in range(L):
                kind.append(k)
                js.append((j,))
                th.append((t,))
    s3 = [((j1, j2), (t1, t2)) for j2 in range(J) for j1 in range(j2 + 1)
          for t1 in range(L) for t2 in range(L)]
    s4 = [((j1, j2, j3), (t1, t2, t3)) for j3 in range(J) for j2 in range(j3 + 1)
          for j1 in range(j2 + 1) for t3 in range(L) for t1 in range(L) for t2 in range(L)]
    for k, items in (("S3re", s3), ("S3im", s3), ("S4re", s4), ("S4im", s4)):
        for j, t in items:
            kind.append(k)
            js.append(j)
            th.append(t)
    return {"kind": kind, "j": js, "theta": th}


def _crop(spec: Tensor, d: int) -> Tensor:
    """DFT ``(..., h, w)`` of coarse samples -> DFT of the band-limited signal sampled ``2^d``
    times coarser (frequencies outside the coarser band dropped, rescaled)."""
    if d == 0:
        return spec
    return periodize_filter(spec, d) / 4**d


def _spectra(x: Tensor, fb_psi: list[Tensor], J: int, L: int, oversampling: int,
             eps: float, backend: Backend) -> Tensor:
    if x.numel() == 0:
        return empty_batch(lambda z: _spectra(z, fb_psi, J, L, oversampling, eps, backend), x)
    lead = x.shape[:-2]
    xs = x.reshape(-1, *x.shape[-2:]).contiguous()
    n, H, W = xs.shape
    psi = [p.to(dtype=x.dtype, device=x.device) for p in fb_psi]
    r_max = len(psi) - 1

    def res(j: int) -> int:
        return min(max(j - oversampling, 0), r_max)

    power = _power(xs, psi[0])  # (n, J, L)
    var = xs.var(dim=(-2, -1), unbiased=False)
    mean = xs.mean(dim=(-2, -1))
    xhat = backend.rfft2(xs)
    y: list[Tensor] = []  # DFT of coarse samples of x ⋆ ψ_j, (n, L, h_j, w_j)
    uhat: list[Tensor] = []  # DFT of coarse samples of |x ⋆ ψ_j|
    s1 = []
    for j in range(J):
        yj = fold(backend, xhat, psi[0][j], W, 2 ** res(j))
        uj = backend.modulus(backend.ifft2(yj))
        s1.append(uj.mean(dim=(-2, -1)))
        y.append(yj)
        uhat.append(backend.fft2(uj))
    s1 = torch.stack(s1, dim=1)
    sq = power.clamp_min(0).add(eps).sqrt()  # (n, J, L)
    s3 = []
    for j2 in range(J):
        r2 = res(j2)
        h2, w2 = y[j2].shape[-2:]
        a = (y[j2] * psi[r2][j2]).reshape(n, L, h2 * w2)  # (n, L2, K)
        for j1 in range(j2 + 1):
            u = _crop(uhat[j1], r2 - res(j1)).reshape(n, L, h2 * w2)  # (n, L1, K)
            # (n, L1, L2): E[y_λ2 conj(|y_λ1| ⋆ ψ_λ2)] = Σ_k Ŷ2 ψ2 conj(Û1) / (h w)²
            c = torch.conj(u) @ a.transpose(1, 2) / (h2 * w2) ** 2
            c = c / (sq[:, j1, :, None] * sq[:, j2, None, :])
            s3.append(c.reshape(n, -1))
    s4 = []
    for j3 in range(J):
        r3 = res(j3)
        h3, w3 = y[j3].shape[-2:]
        k = h3 * w3
        w = psi[r3][j3].square().reshape(L, k)  # (L3, K)
        crops = [_crop(uhat[j], r3 - res(j)).reshape(n, L, k) for j in range(j3 + 1)]
        for j2 in range(j3 + 1):
            u2 = torch.conj(crops[j2]).transpose(1, 2)  # (n, K, L2)
            for j1 in range(j2 + 1):
                u1 = crops[j1]
                if n * L * L * k * u1.element_size() <= _MATMUL_BUDGET:
                    v = (u1[:, None] * w[None, :, None]).reshape(n, L * L, k)
                    c = (v @ u2).reshape(n, L, L, L)  # (n, L3, L1, L2)
                else:
                    c = torch.stack([(u1 * w[l3]) @ u2 for l3 in range(L)], dim=1)
                c = c / (k * k)
                c = c / (sq[:, j1, None, :, None] * sq[:, j2, None, None, :])
                s4.append(c.reshape(n, -1))
    s3c = torch.cat(s3, dim=1)
    s4c = torch.cat(s4, dim=1)
    out = torch.cat([mean[:, None], var[:, None],
                     (power / (var[:, None, None] + eps)).reshape(n, -1),
                     (s1 / sq).reshape(n, -1),
                     s3c.real, s3c.imag, s4c.real, s4c.imag], dim=1)
    return out.reshape(*lead, out.shape[-1])


def scattering_spectra(x: Tensor, J: int, L: int = 8, *, oversampling: int = 1,
                       eps: float = 1e-12, backend: str | Backend = "auto") -> Tensor:
    """Scattering spectra of ``x`` ``(..., H, W)`` -> ``(..., K)``, periodic boundary.

    Layout (see :func:`spectra_meta` and the module docstring): ``[mean, var,
    P/var (J·L), S1/sqrt(P) (J·L), Re S3, Im S3 (L²·J(J+1)/2 each), Re S4, Im S4
    (L³·J(J+1)(J+2)/6 each)]``, ``S3``/``S4`` divided by ``sqrt(P(λ1) P(λ2))`` so that every
    entry is scale-free and ``O(1)``.

    ``oversampling`` as in :func:`~.moments.scattering_moments` (maps of scale ``j`` on the
    grid subsampled by ``2^max(j - oversampling, 0)``).

    >>> tuple(scattering_spectra(torch.rand(2, 32, 32), J=2, L=2).shape)
    (2, 98)
    """
    _check(J, L, 2, oversampling)
    x = _check_input(x, J)
    fb = bank_for(tuple(x.shape[-2:]), J, L, x)
    return _spectra(x, fb.psi_levels, J, L, oversampling, eps, get_backend(backend))


class ScatteringSpectra(nn.Module):
    """Module form of :func:`scattering_spectra` (filters cached per input size).

    Shape: ``(..., H, W)`` -> ``(..., K)``, ``K`` = :attr:`n_statistics`.

    >>> s = ScatteringSpectra(J=2, L=2)
    >>> tuple(s(torch.rand(1, 3, 16, 16)).shape), s.n_statistics
    ((1, 3, 98), 98)
    """

    def __init__(self, J: int, L: int = 8, *, oversampling: int = 1, eps: float = 1e-12,
                 backend: str | Backend = "auto") -> None:
        super().__init__()
        _check(J, L, 2, oversampling)
        self.J, self.L, self.oversampling, self.eps = J, L, oversampling, eps
        self.backend = get_backend(backend)

    @property
    def n_statistics(self) -> int:
        J, L = self.J, self.L
        return 2 + 2 * J * L + L * L * J * (J + 1) + L**3 * J * (J + 1) * (J + 2) // 3

    def meta(self) -> dict[str, list]:
        return spectra_meta(self.J, self.L)

    def forward(self, x: Tensor) -> Tensor:
        x = _check_input(x, self.J)
        fb = bank_for(tuple(x.shape[-2:]), self.J, self.L, x)
        return _spectra(x, fb.psi_levels, self.J, self.L, self.oversampling, self.eps,
                        self.backend)

    def extra_repr(self) -> str:
        return f"J={self.J}, L={self.L}, oversampling={self.oversampling}"
