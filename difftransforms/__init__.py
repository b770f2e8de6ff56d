"""difftransforms: differentiable image transforms and texture synthesis on PyTorch.

Every transform takes ``(B, C, H, W)`` tensors (most also ``(H, W)`` and ``(C, H, W)``)
of float32/float64 on any device and is differentiable end to end.

Sub-packages (imported lazily, so ``import difftransforms`` is cheap):

- :mod:`difftransforms.fourier`    Gaussian blur, unsharp mask, Wiener filters.
- :mod:`difftransforms.wavelets`   Daubechies fast wavelet transform (PyWavelets-exact).
- :mod:`difftransforms.scattering` Morlet filter banks, scattering transform and moments.
- :mod:`difftransforms.features`   CNN feature extractors (random multiscale CNN, VGG19).
- :mod:`difftransforms.ops`        Custom operators (C++/CUDA kernels, kernel reductions).
- :mod:`difftransforms.synthesis`  Texture synthesis engine.
- :mod:`difftransforms.io`         Image loading and atomic saving.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_SUBMODULES = {
    "fourier",
    "wavelets",
    "scattering",
    "features",
    "ops",
    "synthesis",
    "io",
    "metrics",
    "cli",
}

__all__ = ["__version__", *sorted(_SUBMODULES)]


def __getattr__(name: str) -> Any:
    if name in _SUBMODULES:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
