"""Resolution of ``model=`` into a differentiable statistic ``F`` and its default loss.

A *model factory* builds ``F`` for one example image (the engine calls it once per scale of
the coarse-to-fine schedule, since e.g. the scattering depth ``J`` depends on the size).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from .colour import ColourPCA, ColourStatistics

__all__ = ["MODELS", "BuiltModel", "build_model", "feature_list", "default_J"]

#: Feature maps per filter size of the default random CNN.
CNN_CHANNELS = 32

#: Gaussian envelope of the random CNN's filters (std as a fraction of the filter size;
#: ``0``/``None`` for the plain square filters).
CNN_WINDOW = 0.25

#: Sizes of the local means whose distributions the CNN model also matches (1 = pixels).
CNN_PIXEL_POOLS = (1, 8, 32)

#: Names accepted by ``model=``.
MODELS = ("auto", "cnn", "vgg19", "scattering", "covariance", "spectra")

#: Default loss per model name (``"sw"`` sliced Wasserstein, ``"gram"``, ``"moments"``).
DEFAULT_LOSS = {
    "cnn": "sw",
    "vgg19": "sw",
    "scattering": "moments",
    "covariance": "moments",
    "spectra": "moments",
}


@dataclass
class BuiltModel:
    """A statistic ``F`` ready for the engine."""

    module: nn.Module
    name: str
    default_loss: str


def feature_list(out: Any) -> list[Tensor]:
    """Normalise a model output (Tensor, list/tuple, dict) into a list of tensors."""
    if isinstance(out, Tensor):
        return [out]
    if isinstance(out, dict):
        vals = list(out.values())
    elif isinstance(out, (list, tuple)):
        vals = list(out)
    else:
        raise TypeError(
            f"the model returned {type(out).__name__}; it must return a Tensor, or a "
            "list/tuple/dict of Tensors"
        )
    flat: list[Tensor] = []
    for v in vals:
        flat.extend(feature_list(v))
    if not flat:
        raise ValueError("the model returned no tensors")
    return flat


def default_J(size: tuple[int, int], max_J: int = 5) -> int:
    """Scattering depth for an image: the largest scale is ~1/4 of the smaller side."""
    return int(max(1, min(max_J, math.floor(math.log2(min(size))) - 3)))


class _GreyToRGB(nn.Module):
    """Feed a 1-channel image to a 3-channel network (VGG19)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: Tensor) -> Any:
        return self.model(x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x)


class _Frozen(nn.Module):
    """Wrap a user model: evaluation mode, no parameter gradients."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model.eval()
        for p in self.model.parameters():
            p.requires_grad_(False)

    def forward(self, x: Tensor) -> Any:
        return self.model(x)


def _cnn(example: Tensor, opts: dict[str, Any]) -> nn.Module:
    try:
        from difftransforms.features import RandomMultiscaleCNN
    except ImportError:  # package __init__ not exporting it yet
        from difftransforms.features.random_cnn import RandomMultiscaleCNN

    kw: dict[str, Any] = {"in_channels": example.shape[1], "seed": opts.get("model_seed", 0)}
    if opts.get("sizes") is not None:
        kw["sizes"] = opts["sizes"]
    # 32 maps per size: as convincing as 64 with the sliced Wasserstein loss (compared by eye
    # on the bundled textures) at half the cost per step
    kw["channels_per_size"] = opts.get("channels_per_size") or CNN_CHANNELS
    net = RandomMultiscaleCNN(**kw)
    window = opts.get("filter_window", CNN_WINDOW)
    if window:
        _window_filters(net, float(window))
    pools = opts.get("pixel_pools", CNN_PIXEL_POOLS)
    return _WithPixels(net, pools) if pools else net


class _WithPixels(nn.Module):
    """Append the image and periodic local means of it to a feature dict.

    The random CNN's filters are zero-mean, so it is blind to the image's low frequencies:
    flat regions of any level cost nothing, and the optimisation drifts into flat blocks.
    Matching the distribution of the pixels and of their local means (periodic average
    pooling over ``p x p`` windows) removes that blind spot at a negligible cost.
    """

    def __init__(self, net: nn.Module, pools: tuple[int, ...]) -> None:
        super().__init__()
        self.net = net
        self.pools = tuple(int(p) for p in pools)

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        out = dict(self.net(x))
        for p in self.pools:
            if p <= 1:
                out["pixels"] = x
            elif p <= min(x.shape[-2:]) // 2:
                q = p // 2
                xp = torch.nn.functional.pad(x, (q, p - 1 - q, q, p - 1 - q), mode="circular")
                out[f"mean{p}"] = torch.nn.functional.avg_pool2d(xp, p, stride=1)
        return out


def _window_filters(net: nn.Module, width: float) -> None:
    """Give the random filters a smooth Gaussian envelope (std ``width * size``).

    Random filters with a square support respond strongly to axis-aligned edges, which
    shows as rectangular blocks in the syntheses; a smooth envelope removes that
    preference. Filters stay zero-mean (within the envelope) with unit norm.
    """
    with torch.no_grad():
        for s in net.sizes:
            w = net.weight(s)
            if s < 3:
                continue
            t = torch.arange(s, dtype=torch.float64) - (s - 1) / 2
            g = torch.exp(-(t[:, None] ** 2 + t[None, :] ** 2) / (2 * (width * s) ** 2))
            g = g.to(w)
            v = w * g
            v = v - g * (v.sum(dim=(1, 2, 3), keepdim=True) / (g.sum() * w.shape[1]))
            v = v / v.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, 1, 1, 1)
            w.copy_(v)
    net.clear_cache()


def _vgg19(example: Tensor, opts: dict[str, Any]) -> nn.Module:
    from difftransforms.features import VGG19Features

    kw: dict[str, Any] = {"weights": opts.get("weights") or "DEFAULT", "padding_mode": "circular"}
    if opts.get("layers") is not None:
        kw["layers"] = opts["layers"]
    net = VGG19Features(**kw)
    return _GreyToRGB(net) if example.shape[1] == 1 else net


def _check_J(example: Tensor, J: int, name: str) -> None:
    h, w = example.shape[-2:]
    need = 2 ** (J + 1)
    if min(h, w) < need:
        raise ValueError(
            f"the example ({h}x{w}) is too small for the {name} model with J={J}: "
            f"it needs at least {need}x{need} pixels; use a smaller J or a larger image"
        )


def _scattering_like(kind: str) -> Callable[[Tensor, dict[str, Any]], nn.Module]:
    def factory(example: Tensor, opts: dict[str, Any]) -> nn.Module:
        from difftransforms import scattering as sc

        size = tuple(example.shape[-2:])
        J = opts.get("J") or default_J(size)  # type: ignore[arg-type]
        L = opts.get("L") or (4 if kind == "spectra" else 8)
        _check_J(example, J, kind)
        cls_name = {
            "scattering": "ScatteringMoments",
            "covariance": "CovarianceMoments",
            "spectra": "ScatteringSpectra",
        }[kind]
        cls = getattr(sc, cls_name, None)
        if cls is None:
            raise ValueError(
                f"model {kind!r} needs difftransforms.scattering.{cls_name}, which is not "
                "available in this installation"
            )
        if example.shape[1] > 1 and opts.get("colour", "fast") == "fast":
            # luminance in full, subsampled chroma + pair sums, full-resolution band power
            return ColourStatistics(lambda j: cls(J=j, L=L), example, J, L)
        if opts.get("colour", "fast") not in ("fast", "full"):
            raise ValueError(f"colour must be 'fast' or 'full', got {opts['colour']!r}")
        net = cls(J=J, L=L)
        return ColourPCA(net, example, cross=example.shape[1] > 1)

    return factory


_FACTORIES: dict[str, Callable[[Tensor, dict[str, Any]], nn.Module]] = {
    "cnn": _cnn,
    "vgg19": _vgg19,
    "scattering": _scattering_like("scattering"),
    "covariance": _scattering_like("covariance"),
    "spectra": _scattering_like("spectra"),
}


def resolve_name(model: str | nn.Module) -> str:
    """Canonical model name (``"custom"`` for a user ``nn.Module``)."""
    if isinstance(model, nn.Module):
        return "custom"
    if not isinstance(model, str):
        raise TypeError(
            f"model must be one of {MODELS} or an nn.Module, got {type(model).__name__}"
        )
    name = model.lower()
    if name == "auto":
        return "spectra"
    if name not in _FACTORIES:
        raise ValueError(
            f"unknown model {model!r}; choose one of {', '.join(MODELS)} or pass an nn.Module"
        )
    return name


def build_model(model: str | nn.Module, example: Tensor, opts: dict[str, Any]) -> BuiltModel:
    """Build ``F`` for ``example`` ``(1, C, H, W)`` (already on its device and dtype)."""
    name = resolve_name(model)
    if name == "custom":
        assert isinstance(model, nn.Module)
        module: nn.Module = _Frozen(model)
        return BuiltModel(module.to(example.device), name, "auto")
    module = _FACTORIES[name](example, opts)
    module = module.to(device=example.device, dtype=example.dtype).eval()
    for p in module.parameters():
        p.requires_grad_(False)
    return BuiltModel(module, name, DEFAULT_LOSS[name])


def loss_kind_for(feats: list[Tensor]) -> str:
    """``"auto"`` loss: sliced Wasserstein for feature maps, L2 moments for statistics."""
    return "sw" if all(f.dim() == 4 for f in feats) else "moments"


def to_dtype(module: nn.Module, dtype: torch.dtype) -> nn.Module:
    return module.to(dtype=dtype)
