"""CNN feature extractors for texture statistics.

- :class:`RandomMultiscaleCNN` — one layer of random filters of sizes 3 ... 55 + ReLU
  (Ustyuzhaninov et al. 2017); no weights to download; large filters via the FFT.
- :class:`VGG19Features` — torchvision's VGG19 (Gatys et al. 2015 layers), ImageNet
  normalisation inside, frozen; weights from a local file, the hub cache or a download.
- :class:`FeatureExtractor` — named activations of any ``nn.Module``.
- :func:`gram_matrix` — ``(B, K, H, W) -> (B, K, K)``.

Every extractor maps ``(B, C, H, W)`` to an ordered ``{name: (B, K, H', W')}`` dict and has
``.layer_names``.
"""

from difftransforms.features.extractor import FeatureExtractor, gram_matrix
from difftransforms.features.random_cnn import DEFAULT_SIZES, RandomMultiscaleCNN, circular_conv2d
from difftransforms.features.vgg import (
    VGG19_LAYER_NAMES,
    WEIGHTS_ENV_VAR,
    VGG19Features,
    WeightsUnavailableError,
    load_vgg19_state_dict,
)

__all__ = [
    "RandomMultiscaleCNN",
    "DEFAULT_SIZES",
    "circular_conv2d",
    "VGG19Features",
    "VGG19_LAYER_NAMES",
    "WEIGHTS_ENV_VAR",
    "WeightsUnavailableError",
    "load_vgg19_state_dict",
    "FeatureExtractor",
    "gram_matrix",
]
