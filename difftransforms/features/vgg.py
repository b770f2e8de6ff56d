"""VGG19 feature extractor (Gatys et al. 2015 texture features) on torchvision's vgg19.

Weights come from, in this order: ``weights=PATH`` (a local ``.pth`` state dict of
torchvision's ``vgg19`` or of its ``.features``), the environment variable
``DIFFTRANSFORMS_VGG19_WEIGHTS``, torch hub's cache (``~/.cache/torch/hub/checkpoints``), or a
download with a short timeout. Offline with none of these, :class:`WeightsUnavailableError`
is raised at once with the options to pass, never a hang.
"""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor, nn

from difftransforms._utils import check_floating

__all__ = [
    "VGG19Features",
    "WeightsUnavailableError",
    "VGG19_LAYER_NAMES",
    "WEIGHTS_ENV_VAR",
    "load_vgg19_state_dict",
]

WEIGHTS_ENV_VAR = "DIFFTRANSFORMS_VGG19_WEIGHTS"
#: Seconds the download of the ImageNet weights may take to connect / stall before giving up.
DOWNLOAD_TIMEOUT = 6.0

_FAILED_DOWNLOAD: list[str] = []  # reason of a failed download in this process

_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)


def _layer_names() -> list[str]:
    cfg = [2, 2, 4, 4, 4]  # convolutions per block of VGG19
    names = []
    for block, n in enumerate(cfg, start=1):
        for i in range(1, n + 1):
            names += [f"conv{block}_{i}", f"relu{block}_{i}"]
        names.append(f"pool{block}")
    return names


#: Names of the 37 modules of ``torchvision.models.vgg19().features``, in order
#: (``conv1_1`` is the convolution before its ReLU, ``relu1_1`` after it).
VGG19_LAYER_NAMES: tuple[str, ...] = tuple(_layer_names())


class WeightsUnavailableError(RuntimeError):
    """The pretrained VGG19 weights are neither given, cached, nor downloadable."""


def _unavailable(reason: str) -> WeightsUnavailableError:
    return WeightsUnavailableError(
        f"VGG19 ImageNet weights are not available ({reason}). Download "
        "https://download.pytorch.org/models/vgg19-dcbb9e9d.pth on a machine with internet "
        "access and pass it: Python `VGG19Features(weights='path/to/vgg19.pth')`, CLI "
        f"`--weights PATH`, or set the environment variable {WEIGHTS_ENV_VAR}=PATH. "
        "For features that need no download, use RandomMultiscaleCNN."
    )


def _weights_enum():
    from torchvision.models import VGG19_Weights

    return VGG19_Weights.IMAGENET1K_V1


def _cached_checkpoint() -> Path:
    url = _weights_enum().url
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(url)


def _download(url: str, timeout: float) -> dict[str, Tensor]:
    """torch hub's download, with a connection probe and socket timeout (no hang offline)."""
    host = url.split("/")[2]
    result: dict[str, object] = {}

    def probe() -> None:  # getaddrinfo ignores socket timeouts: run it in a thread
        try:
            socket.create_connection((host, 443), timeout=timeout).close()
            result["ok"] = True
        except OSError as e:
            result["err"] = e

    t = threading.Thread(target=probe, daemon=True)
    t.start()
    t.join(timeout)
    if "ok" not in result:
        raise OSError(f"cannot reach {host}: {result.get('err', 'timed out')}")
    old = socket.getdefaulttimeout()
    socket.setdefaulttimeout(timeout)
    try:
        return torch.hub.load_state_dict_from_url(url, progress=False, check_hash=True,
                                                  map_location="cpu")
    finally:
        socket.setdefaulttimeout(old)


def load_vgg19_state_dict(path: str | os.PathLike) -> dict[str, Tensor]:
    """Read a local VGG19 checkpoint; return the state dict of ``vgg19().features``.

    Accepts a state dict of torchvision's full ``vgg19`` (``features.0.weight``, ...), of its
    ``.features`` (``0.weight``, ...), or either wrapped as ``{"state_dict": ...}``.
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"VGG19 weights file {str(p)!r} does not exist")
    try:
        sd = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as e:
        raise ValueError(f"cannot read VGG19 weights from {str(p)!r}: not a state dict "
                         f"saved with torch.save (torch.load said: {e})") from e
    if isinstance(sd, dict) and "state_dict" in sd and isinstance(sd["state_dict"], dict):
        sd = sd["state_dict"]
    if not isinstance(sd, dict):
        raise ValueError(f"{str(p)!r} does not hold a state dict (got {type(sd).__name__})")
    out: dict[str, Tensor] = {}
    for k, v in sd.items():
        if k.startswith("module."):
            k = k[len("module."):]
        if k.startswith("features."):
            out[k[len("features."):]] = v
        elif k.split(".")[0].isdigit():
            out[k] = v
    if "0.weight" not in out:
        raise ValueError(f"{str(p)!r} is not a VGG19 state dict (no 'features.0.weight' or "
                         "'0.weight' key); save torchvision's vgg19().state_dict()")
    return out


def _resolve_weights(weights: str | os.PathLike | None) -> dict[str, Tensor] | None:
    if weights is None:
        return None
    if isinstance(weights, str) and weights.upper() in ("DEFAULT", "IMAGENET1K_V1"):
        env = os.environ.get(WEIGHTS_ENV_VAR)
        if env:
            return load_vgg19_state_dict(env)
        cached = _cached_checkpoint()
        if cached.is_file():
            return load_vgg19_state_dict(cached)
        if _FAILED_DOWNLOAD:  # do not wait for the network twice in one process
            raise _unavailable(f"not cached at {cached}; {_FAILED_DOWNLOAD[0]}")
        try:
            sd = _download(_weights_enum().url, DOWNLOAD_TIMEOUT)
        except Exception as e:  # no network, timeout, HTTP error, bad hash
            _FAILED_DOWNLOAD.append(f"the download failed: {type(e).__name__}: {e}")
            raise _unavailable(f"not cached at {cached} and {_FAILED_DOWNLOAD[0]}") from e
        return {k[len("features."):]: v for k, v in sd.items() if k.startswith("features.")}
    return load_vgg19_state_dict(weights)


def _vgg19_features() -> nn.Sequential:
    """``torchvision.models.vgg19().features`` with torchvision's initialisation, without
    building the 120M-parameter classifier (13 s on a small CPU)."""
    try:
        from torchvision.models.vgg import cfgs, make_layers

        features = make_layers(cfgs["E"], batch_norm=False)
    except (ImportError, KeyError):  # private API moved: build the whole model
        from torchvision.models import vgg19

        return vgg19(weights=None).features
    for m in features.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            nn.init.zeros_(m.bias)
    return features


class VGG19Features(nn.Module):
    """Intermediate activations of torchvision's VGG19, for Gram-matrix texture losses.

    Args:
        layers: names from :data:`VGG19_LAYER_NAMES` (``conv1_1`` pre-ReLU, ``relu1_1``,
            ``pool1``, ...). The default ``("relu1_1", "pool1", "pool2", "pool3", "pool4")`` is
            Gatys et al.'s texture set (Caffe's in-place ReLU makes their ``conv1_1``
            our ``relu1_1``). Only the network up to the deepest layer is kept.
        pooling: ``"avg"`` (Gatys et al.: smoother gradients) or ``"max"`` (torchvision).
        weights: ``"DEFAULT"`` (ImageNet, see the module docstring for where from), a path
            to a local state dict, or ``None`` for torchvision's random initialisation.
        padding_mode: ``"zeros"`` (as trained), ``"reflect"`` or ``"circular"``.

    Input ``(B, 3, H, W)`` (or ``(B, 1, H, W)``, repeated to RGB) in ``[0, 1]``; ImageNet
    normalisation is applied inside. ``forward`` returns ``{name: (B, K, H', W')}`` in the
    order of ``layers``. Parameters are frozen (``requires_grad=False``), the module stays in
    eval mode; gradients still flow to the input.

    >>> net = VGG19Features(("relu1_1", "pool2"), weights=None)
    >>> {k: tuple(v.shape) for k, v in net(torch.rand(1, 3, 32, 32)).items()}
    {'relu1_1': (1, 64, 32, 32), 'pool2': (1, 128, 8, 8)}
    """

    def __init__(
        self,
        layers: Sequence[str] = ("relu1_1", "pool1", "pool2", "pool3", "pool4"),
        pooling: str = "avg",
        weights: str | os.PathLike | None = "DEFAULT",
        padding_mode: str = "zeros",
    ) -> None:
        super().__init__()
        if isinstance(layers, str):
            layers = (layers,)
        layers = tuple(layers)
        if not layers:
            raise ValueError("layers must name at least one VGG19 layer")
        unknown = [name for name in layers if name not in VGG19_LAYER_NAMES]
        if unknown:
            raise ValueError(f"unknown VGG19 layer(s) {unknown}; valid names: "
                             f"{', '.join(VGG19_LAYER_NAMES)}")
        if len(set(layers)) != len(layers):
            raise ValueError(f"duplicate layer names in {layers}")
        if pooling not in ("avg", "max"):
            raise ValueError(f"pooling must be 'avg' or 'max', got {pooling!r}")
        if padding_mode not in ("zeros", "reflect", "circular", "replicate"):
            raise ValueError(f"padding_mode must be 'zeros', 'reflect', 'circular' or "
                             f"'replicate', got {padding_mode!r}")
        state = _resolve_weights(weights)
        features = _vgg19_features()
        if state is not None:
            missing, unexpected = features.load_state_dict(state, strict=False)
            if missing:
                raise ValueError(f"VGG19 weights lack {missing}; the file is not a vgg19 "
                                 "state dict")
        depth = max(VGG19_LAYER_NAMES.index(name) for name in layers) + 1
        mods = []
        for i in range(depth):
            m = features[i]
            if isinstance(m, nn.MaxPool2d) and pooling == "avg":
                m = nn.AvgPool2d(kernel_size=2, stride=2)
            if isinstance(m, nn.ReLU):
                m = nn.ReLU(inplace=False)  # the pre-ReLU output may be requested
            if isinstance(m, nn.Conv2d):
                m.padding_mode = padding_mode
            mods.append(m)
        self.body = nn.Sequential(*mods)
        self.layers = layers
        self.pooling = pooling
        self.pretrained = state is not None
        self._index = {VGG19_LAYER_NAMES.index(name): name for name in layers}
        self.register_buffer("mean", torch.tensor(_IMAGENET_MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(_IMAGENET_STD).view(1, 3, 1, 1))
        for p in self.parameters():
            p.requires_grad_(False)
        self.eval()

    @property
    def layer_names(self) -> list[str]:
        return list(self.layers)

    def train(self, mode: bool = True) -> VGG19Features:
        """Always stays in eval mode (no dropout/batch-norm in ``features`` anyway)."""
        return super().train(False)

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        """``(B, 3 or 1, H, W)`` in ``[0, 1]`` -> ``{layer: (B, K, H', W')}``."""
        if x.dim() != 4:
            raise ValueError(f"expected a (B, C, H, W) tensor, got shape {tuple(x.shape)}")
        check_floating(x)
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        elif x.shape[1] != 3:
            raise ValueError(f"VGG19 takes 3 (RGB) or 1 (grey) channels, got {x.shape[1]}")
        p0 = self.body[0].weight
        if p0.dtype != x.dtype or p0.device != x.device:
            raise TypeError(f"input is {x.dtype} on {x.device} but VGG19Features is "
                            f"{p0.dtype} on {p0.device}; call .to(x) on the module")
        h = (x - self.mean) / self.std
        found: dict[str, Tensor] = {}
        for i, m in enumerate(self.body):
            h = m(h)
            if i in self._index:
                found[self._index[i]] = h
        return {name: found[name] for name in self.layers}
