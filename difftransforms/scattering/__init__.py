"""Scattering transforms and texture statistics on Morlet wavelets (kymatio-compatible).

- :func:`morlet_filter_bank`, :func:`gabor_filter_bank`: Fourier-domain filter banks
  (kymatio's filters, built in milliseconds).
- :class:`Scattering2D` / :func:`scattering2d`: the scattering transform
  ``(..., H, W) -> (..., K, H/2^J, W/2^J)``, equal to kymatio's with ``padding="reflect"``.
- :class:`ScatteringMoments` / :func:`scattering_moments`: spatial means of the scattering
  moduli (L1 "scattering moments"), the fast texture statistics of the synthesis engine.
- :class:`CovarianceMoments` / :func:`covariance_moments`: power per wavelet band.
- :class:`ScatteringSpectra` / :func:`scattering_spectra`: Cheng & Morel's scattering
  spectra (S1, S2, S3, S4).
- :func:`get_backend`: the swappable modulus-convolution primitive (``"auto"``,
  ``"reference"``, ``"compiled"``) the backend-agnostic :mod:`.core` runs on.
"""

from .backend import BACKENDS, Backend, get_backend
from .covariance import (
    CovarianceMoments,
    ScatteringSpectra,
    covariance_moments,
    scattering_spectra,
    spectra_meta,
)
from .filter_bank import (
    MorletFilterBank,
    gabor_filter_bank,
    gabor_fourier,
    morlet_filter_bank,
    morlet_fourier,
    periodize_filter,
)
from .moments import ScatteringMoments, moments_meta, scattering_moments
from .scattering2d import Scattering2D, scattering2d, scattering_meta

__all__ = [
    "BACKENDS",
    "Backend",
    "CovarianceMoments",
    "MorletFilterBank",
    "Scattering2D",
    "ScatteringMoments",
    "ScatteringSpectra",
    "covariance_moments",
    "gabor_filter_bank",
    "gabor_fourier",
    "get_backend",
    "moments_meta",
    "morlet_filter_bank",
    "morlet_fourier",
    "periodize_filter",
    "scattering2d",
    "scattering_meta",
    "scattering_moments",
    "scattering_spectra",
    "spectra_meta",
]
