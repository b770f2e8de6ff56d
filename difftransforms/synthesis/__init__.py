"""Texture synthesis: optimise an image ``X`` until ``F(X) ~ F(Y)`` for an example ``Y``.

>>> import torch
>>> from difftransforms.synthesis import synthesize
>>> y = torch.rand(1, 1, 32, 32)
>>> net = torch.nn.Conv2d(1, 4, 3, padding=1, padding_mode="circular")
>>> synthesize(y, model=net, steps=1, lbfgs_iters=2).shape
torch.Size([1, 1, 32, 32])
"""

from __future__ import annotations

from .colour import ColourPCA, match_histogram, resize_periodic, spectral_noise
from .engine import CHECKPOINT_FORMAT, SynthesisInfo, Synthesizer, synthesize
from .losses import (
    GramLoss,
    MomentLoss,
    SlicedWassersteinLoss,
    gram,
    sliced_wasserstein,
    sorted_quantiles,
)
from .models import MODELS
from .style_transfer import LuminanceStructure, Stylizer, luminance, stylize

__all__ = [
    "synthesize",
    "stylize",
    "Stylizer",
    "LuminanceStructure",
    "luminance",
    "Synthesizer",
    "SynthesisInfo",
    "CHECKPOINT_FORMAT",
    "MODELS",
    "SlicedWassersteinLoss",
    "GramLoss",
    "MomentLoss",
    "sliced_wasserstein",
    "gram",
    "sorted_quantiles",
    "ColourPCA",
    "match_histogram",
    "resize_periodic",
    "spectral_noise",
]
