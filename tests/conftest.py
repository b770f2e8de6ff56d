"""Shared fixtures: devices (CUDA skipped, never faked, without a GPU), dtypes, assets."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

ASSETS = Path(__file__).resolve().parents[1] / "assets"

CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
DEVICES = ["cpu", pytest.param("cuda", marks=[CUDA, pytest.mark.cuda])]
DTYPES = [torch.float32, torch.float64]


@pytest.fixture(params=DEVICES)
def device(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture(params=DTYPES, ids=["float32", "float64"])
def dtype(request: pytest.FixtureRequest) -> torch.dtype:
    return request.param


@pytest.fixture(scope="session")
def assets_dir() -> Path:
    return ASSETS


def load_asset(name: str) -> np.ndarray:
    """An asset as a float64 array in [0, 1], (H, W) or (H, W, 3), read with PIL only."""
    img = Image.open(ASSETS / name)
    arr = np.asarray(img, dtype=np.float64) / 255.0
    return arr


@pytest.fixture(scope="session")
def camera() -> np.ndarray:
    """The 512x512 greyscale cameraman, float64 in [0, 1]."""
    return load_asset("camera.png")


CDTYPE = {torch.float32: torch.complex64, torch.float64: torch.complex128}


def fold_inputs(N: int, F: int, H: int, W: int, dtype: torch.dtype, device: str = "cpu",
                hermitian: bool = True, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """``(xhat, filters)`` for the filter_fold ops: ``(N, H, W//2+1)`` half spectra (of real
    signals, or arbitrary with ``hermitian=False``) and ``(F, H, W)`` real filters."""
    g = torch.Generator().manual_seed(seed)
    if hermitian:  # the spectrum of a real signal
        xhat = torch.fft.rfft2(torch.randn(N, H, W, dtype=dtype, generator=g))
    else:  # an arbitrary half spectrum (imag parts on self-conjugate columns too)
        xhat = torch.randn(N, H, W // 2 + 1, dtype=CDTYPE[dtype], generator=g)
    filters = torch.rand(F, H, W, dtype=dtype, generator=g) - 0.3
    return xhat.to(device), filters.to(device)
