"""Style transfer (Gatys, Ecker & Bethge 2016) with the texture-synthesis engine.

Optimise an image ``X`` so that

* its **texture statistics** match the style image ``S`` -- exactly the synthesis loss of
  :class:`~difftransforms.synthesis.Synthesizer` (sliced Wasserstein on random multiscale
  CNN features, pixel values and local means by default; these also carry the colours), and
* its **structure** matches the content image ``C``:

  - with the random CNN (``model="cnn"``, no weights needed): the *luminance* of ``X``
    blurred at a few large scales (Gaussian ``sigma`` = 2, 4 and 8 pixels per 128 pixels
    of image side) against the same pyramid of ``C``'s luminance, itself first remapped to
    the style's luminance histogram. This representation holds the shapes and the shading
    of ``C`` but neither its colours (only luminance) nor its fine texture (blurred), so
    both come from ``S``. Random-CNN responses are a poor content representation: they
    keep ``C``'s fine texture and colours, and the output looks like ``C`` tinted.
  - with VGG19 (``model="vgg19"``, ImageNet weights): the ``relu4_2`` activations, as in
    Gatys et al.

Output channels follow the **style**: grey content + colour style gives a colour image
(colours from the style); colour content + grey style gives a grey image (the content is
only used through its luminance with the CNN; VGG19 sees its luminance repeated to RGB).

``X`` starts from the content image with its colours transferred to the style's (per
channel histogram matching): ``init="content"``, the default. ``init="noise"`` (the style's
spectral noise, Gatys et al.'s other option) gave nearly the same images on the README
pairs at the default weights -- the content term, not the start, fixes the structure --
but the content start begins closer to the answer.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from difftransforms._utils import as_bchw, check_finite, check_floating

from .colour import match_histogram, spectral_noise
from .engine import DEFAULT_STEPS, Synthesizer
from .models import feature_list

__all__ = ["Stylizer", "stylize", "luminance", "LuminanceStructure", "STYLIZE_MODELS"]

#: Names accepted by ``model=`` in :func:`stylize` (``"auto"`` = ``"cnn"``).
STYLIZE_MODELS = ("auto", "cnn", "vgg19")

#: ITU-R BT.601 luma weights.
LUMA = (0.299, 0.587, 0.114)

#: Blur scales of the CNN content representation, in pixels per :data:`SIGMA_REFERENCE`
#: pixels of the image's smaller side (2, 4, 8 at 128 pixels -> 4, 8, 16 at 256): coarse
#: enough that the style's texture shows, fine enough that faces stay recognisable
#: (compared by eye with (1, 2, 4) on the README figure's pairs).
CONTENT_SIGMAS = (2.0, 4.0, 8.0)
SIGMA_REFERENCE = 128

#: Default VGG19 layers: Gatys et al.'s style layers and their content layer.
VGG_STYLE_LAYERS = ("relu1_1", "pool1", "pool2", "pool3", "pool4")
VGG_CONTENT_LAYERS = ("relu4_2",)

INITS = ("content", "noise")


def luminance(x: Tensor) -> Tensor:
    """Luma ``(B, 1, H, W)`` of ``x`` ``(B, C, H, W)``: BT.601 weights for RGB, ``x`` itself
    for grey.

    >>> float(luminance(torch.ones(1, 3, 2, 2)).mean())
    1.0
    """
    if x.shape[1] == 1:
        return x
    if x.shape[1] != 3:
        raise ValueError(f"expected 1 (grey) or 3 (RGB) channels, got {x.shape[1]}")
    w = torch.tensor(LUMA, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    return (x * w).sum(dim=1, keepdim=True)


class LuminanceStructure(nn.Module):
    """Colour- and texture-blind content representation: a low-pass luminance pyramid.

    ``forward(x)`` maps ``(B, C, H, W)`` to a list of ``(B, 1, H, W)`` maps: the luminance
    of ``x`` blurred (reflect padding) with ``sigma = s * min(H, W) / reference`` for each
    ``s`` in ``sigmas``. The scales are relative to the image size, so the representation
    of a downsampled image is the downsampled representation (coarse-to-fine friendly).

    >>> maps = LuminanceStructure()(torch.rand(1, 3, 64, 64))
    >>> [tuple(m.shape) for m in maps]
    [(1, 1, 64, 64), (1, 1, 64, 64), (1, 1, 64, 64)]
    """

    def __init__(self, sigmas: Sequence[float] = CONTENT_SIGMAS,
                 reference: int = SIGMA_REFERENCE) -> None:
        super().__init__()
        self.sigmas = tuple(float(s) for s in sigmas)
        if not self.sigmas or min(self.sigmas) <= 0:
            raise ValueError(f"sigmas must be positive numbers, got {sigmas}")
        self.reference = int(reference)

    def forward(self, x: Tensor) -> list[Tensor]:
        from difftransforms.fourier import gaussian_blur

        lum = luminance(x)
        scale = min(x.shape[-2:]) / self.reference
        out = []
        for s in self.sigmas:
            sig = s * scale
            # the blur radius must stay below the image side (reflect padding)
            sig = min(sig, (min(x.shape[-2:]) - 1) / 4.0)
            out.append(gaussian_blur(lum, sig, padding="reflect") if sig >= 0.3 else lum)
        return out


class _StyleContentNet(nn.Module):
    """One forward pass for both terms: returns the style features (a dict, what the engine
    matches) and keeps the content representation of the same input in ``content_out``.

    For VGG19 the content layers come out of the same pass as the style layers; for the
    random CNN (or a user module) the content representation is :class:`LuminanceStructure`.
    """

    def __init__(self) -> None:
        super().__init__()
        self.style: nn.Module | None = None
        self.structure: nn.Module | None = None
        self.content_layers: tuple[str, ...] = ()
        self.shared: tuple[str, ...] = ()  # content layers that are style layers too
        self.content_out: list[Tensor] = []

    def forward(self, x: Tensor) -> Any:
        assert self.style is not None
        out = self.style(x)
        if self.structure is not None:
            self.content_out = self.structure(x)
            return out
        out = dict(out)
        self.content_out = [
            out[n] if n in self.shared else out.pop(n) for n in self.content_layers
        ]
        return out


def _check_image(x: Any, name: str) -> Tensor:
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    check_floating(x, name)
    y, _ = as_bchw(x, name)
    if y.shape[0] != 1:
        raise ValueError(f"{name} must hold ONE image, got a batch of {y.shape[0]}")
    if y.shape[1] not in (1, 3):
        raise ValueError(f"{name} must be grey (1 channel) or RGB (3 channels), got "
                         f"{y.shape[1]} channels")
    check_finite(y, name)
    lo, hi = float(y.min()), float(y.max())
    if lo < -1e-3 or hi > 1 + 1e-3:
        raise ValueError(f"{name} values must lie in [0, 1], got [{lo:.3g}, {hi:.3g}]; "
                         "divide 8-bit images by 255")
    if min(y.shape[-2:]) < 16:
        raise ValueError(f"{name} of {y.shape[-2]}x{y.shape[-1]} pixels is too small; "
                         "use at least 16x16")
    return y


def _resize(x: Tensor, size: tuple[int, int]) -> Tensor:
    """Anti-aliased resize of a (non-periodic) photo."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=size, mode="bilinear", antialias=True, align_corners=False)


class Stylizer(Synthesizer):
    """Style transfer with the synthesis engine's lifecycle (``setup`` / ``step`` /
    ``run``, progress, time budget, atomic checkpoints, bit-exact resume).

    Args:
        content: the content image ``C``: ``(H, W)``, ``(C, H, W)`` or ``(1, C, H, W)``
            float tensor in ``[0, 1]``, grey or RGB.
        style: the style image ``S``, same conventions; the output has its channels.
        model: ``"auto"`` (= ``"cnn"``: random multiscale CNN, no weights), ``"vgg19"``
            (ImageNet weights: ``model_options={"weights": PATH}``, the environment variable
            ``DIFFTRANSFORMS_VGG19_WEIGHTS`` or torch hub's cache) or an ``nn.Module``
            returning feature maps (its features give the style; the content term is then
            the luminance pyramid).
        size: output ``(H, W)`` (or ``"HxW"`` / an int), default the content's size.
        content_weight: weight of the content term (larger keeps more of the content's
            structure; 0 gives a texture synthesis started from the content).
        style_weight: weight of the style (texture statistics) term.
        init: ``"content"`` (the content with the style's colours, default), ``"noise"``
            (the style's spectral noise) or a Tensor.
        content_layers: VGG19 content layers (default ``("relu4_2",)``).
        content_sigmas: blur scales of the CNN content representation (see
            :class:`LuminanceStructure`; default ``(2, 4, 8)`` per 128 pixels).
        steps, time_budget, seed, progress, checkpoint, resume, ...: as in
            :class:`Synthesizer` (all its keyword options are accepted; ``mmd_weight``
            adds the kernel MMD between the style features, ``histogram_matching``
            defaults to ``False``).
    """

    label = "stylize"

    def __init__(
        self,
        content: Tensor,
        style: Tensor,
        model: str | nn.Module = "auto",
        size: Any = None,
        *,
        content_weight: float = 1.0,
        style_weight: float = 1.0,
        init: str | Tensor = "content",
        content_layers: Sequence[str] | None = None,
        content_sigmas: Sequence[float] = CONTENT_SIGMAS,
        steps: int | None = None,
        time_budget: float | None = None,
        histogram_matching: bool = False,
        **kwargs: Any,
    ) -> None:
        c = _check_image(content, "content")
        s = _check_image(style, "style")
        for name, w in (("content_weight", content_weight), ("style_weight", style_weight)):
            if not (isinstance(w, (int, float)) and math.isfinite(w) and w >= 0):
                raise ValueError(f"{name} must be a finite number >= 0, got {w!r}")
        if content_weight == 0 and style_weight == 0:
            raise ValueError("content_weight and style_weight are both 0: nothing to optimise; "
                             "make at least one positive (--content-weight / --style-weight)")
        if isinstance(init, str) and init not in INITS:
            raise ValueError(f"unknown init {init!r}; use 'content', 'noise' or a Tensor")
        if isinstance(model, nn.Module):
            kind = "custom"
        elif isinstance(model, str) and model.lower() in STYLIZE_MODELS:
            kind = "cnn" if model.lower() == "auto" else model.lower()
        else:
            raise ValueError(
                f"style transfer needs a model with feature maps: model='cnn' (random CNN, "
                f"no weights), 'vgg19' or an nn.Module returning feature maps; got {model!r}"
            )
        if steps is None and time_budget is None:
            steps = DEFAULT_STEPS[kind]
        self._net = _StyleContentNet()
        super().__init__(
            s, self._net, c.shape[-2:] if size is None else size, steps=steps,
            time_budget=time_budget, init="spectral", histogram_matching=histogram_matching,
            **kwargs,
        )
        self.name = kind
        self.kind = kind
        self.content_weight = float(content_weight)
        self.style_weight = float(style_weight)
        self.stylize_init = init
        # the content at the output size, in the style's channels (grey <-> RGB), and its
        # luminance remapped to the style's luminance histogram (the CNN content target)
        c = _resize(c.detach().to(self.device, self.dtype), self.size)
        if c.shape[1] != self.channels:
            c = luminance(c).expand(-1, self.channels, -1, -1).contiguous()
        self.content = c
        self.content_luminance = match_histogram(luminance(c), luminance(self.example))
        self._build_net(model, content_layers, content_sigmas)

    # ------------------------------------------------------------------ model
    def _build_net(self, model: str | nn.Module, content_layers: Sequence[str] | None,
                   content_sigmas: Sequence[float]) -> None:
        net = self._net
        if self.kind == "vgg19":
            from difftransforms.features import VGG19Features

            style_layers = tuple(self.model_options.get("layers") or VGG_STYLE_LAYERS)
            cl = tuple(content_layers or VGG_CONTENT_LAYERS)
            layers = style_layers + tuple(n for n in cl if n not in style_layers)
            vgg = VGG19Features(layers, weights=self.model_options.get("weights") or "DEFAULT",
                                padding_mode="reflect")
            net.style, net.content_layers = vgg, cl
            net.shared = tuple(n for n in cl if n in style_layers)
        else:
            if content_layers is not None:
                raise ValueError("content_layers is only used by model='vgg19'")
            if self.kind == "cnn":
                from .models import _cnn

                net.style = _cnn(self.example, self.model_options)
            else:
                assert isinstance(model, nn.Module)
                net.style = model.eval()
            net.structure = LuminanceStructure(content_sigmas)
        net.to(device=self.device, dtype=self.dtype)
        for p in net.parameters():
            p.requires_grad_(False)

    # ------------------------------------------------------------------ engine hooks
    def setup(self) -> Stylizer:
        """As :meth:`Synthesizer.setup`, plus the content targets of the current scale."""
        if self._ready:
            return self
        pix = self._net.style
        if hasattr(pix, "pools") and not hasattr(self, "_all_pools"):
            self._all_pools = tuple(pix.pools)
        if hasattr(self, "_all_pools"):
            # the CNN's local-mean maps exist for windows up to half the image side: keep
            # those that both X and the (differently sized) style have at this scale
            ex = self._stage_example(self.stage)
            small = min(*self.stage_size(), *ex.shape[-2:])
            pix.pools = tuple(p for p in self._all_pools if p <= 1 or p <= small // 2)
        super().setup()
        hw = self.stage_size()
        with torch.no_grad():
            if self.kind == "vgg19":
                self._net(_resize(self.content, hw))
            else:
                self._net.content_out = self._net.structure(_resize(self.content_luminance, hw))
            targets = [t.detach() for t in self._net.content_out]
        self._content_targets = targets
        self._content_scales = [
            (t - t.mean(dim=(-2, -1), keepdim=True)).pow(2).mean().clamp_min(1e-8)
            for t in targets
        ]
        return self

    def _initial_image(self) -> Tensor:
        hw = self.stage_size()
        if isinstance(self.stylize_init, Tensor):
            self.init = self.stylize_init
            return super()._initial_image()
        if self.stylize_init == "noise":
            return spectral_noise(self._stage_example(self.stage), hw, self.generator)
        # the content, each channel remapped to the style's histogram (colour transfer)
        return match_histogram(_resize(self.content, hw), self.example)

    def content_loss(self) -> Tensor:
        """Content term of the last forward pass (normalised L2 per level, averaged)."""
        terms = [
            (a - b).pow(2).mean() / sc
            for a, b, sc in zip(self._net.content_out, self._content_targets,
                                self._content_scales, strict=True)
        ]
        return sum(terms) / len(terms)  # type: ignore[return-value]

    def objective(self, x: Tensor) -> Tensor:
        """``style_weight * style + content_weight * content + mmd + range penalty``."""
        assert self._model is not None and self._loss is not None
        feats = feature_list(self._model(x))
        val = self.style_weight * self._loss(feats) + self._mmd_term(feats)
        if self.content_weight > 0:
            val = val + self.content_weight * self.content_loss()
        return val + self._range_term(x)

    def _signature(self) -> dict[str, Any]:
        sig = super()._signature()
        sig.update(content=tuple(self.content.shape), content_weight=self.content_weight,
                   style_weight=self.style_weight,
                   init=self.stylize_init if isinstance(self.stylize_init, str) else "tensor")
        return sig


def stylize(
    content: Tensor,
    style: Tensor,
    model: str | nn.Module = "auto",
    content_weight: float = 1.0,
    size: int | Sequence[int] | str | None = None,
    steps: int | None = None,
    time_budget: float | None = None,
    seed: int = 0,
    device: str | torch.device | None = None,
    *,
    style_weight: float = 1.0,
    progress: bool = False,
    checkpoint: str | os.PathLike | None = None,
    resume: bool = False,
    **kwargs: Any,
) -> Tensor:
    """Repaint ``content`` with the texture and colours of ``style`` (Gatys et al. 2016).

    Args:
        content: ``(H, W)``, ``(C, H, W)`` or ``(1, C, H, W)`` float tensor in ``[0, 1]``
            (grey or RGB): gives the structure (shapes, shading).
        style: same conventions: gives the texture and the colours; the output has its
            number of channels.
        model: ``"auto"``/``"cnn"`` (random multiscale CNN; content = blurred luminance
            pyramid), ``"vgg19"`` (needs ImageNet weights, ``model_options={"weights":
            PATH}``; content = ``relu4_2``) or an ``nn.Module`` giving feature maps.
        content_weight: larger keeps more of the content's structure (default 1).
        size: output ``(H, W)`` (default: the content's size).
        steps, time_budget: outer steps at the finest scale / wall-clock seconds.
        seed: same seed, same machine, same steps -> same image.
        style_weight: weight of the style statistics (default 1).
        progress, checkpoint, resume: progress bar; atomic checkpoint file; continue from
            it (a resumed run gives the same image as an uninterrupted one).
        kwargs: other :class:`Stylizer` / :class:`Synthesizer` options (``init``,
            ``lbfgs_iters``, ``scales``, ``loss``, ``mmd_weight``, ``model_options`` ...).

    Returns:
        ``(1, C_style, H, W)`` tensor in ``[0, 1]``.

    >>> c, s = torch.rand(1, 1, 32, 32), torch.rand(1, 3, 32, 32)
    >>> net = torch.nn.Conv2d(3, 4, 3, padding=1, padding_mode="circular")
    >>> stylize(c, s, model=net, steps=1, lbfgs_iters=2).shape
    torch.Size([1, 3, 32, 32])
    """
    st = Stylizer(content, style, model, size, content_weight=content_weight,
                  style_weight=style_weight, steps=steps, time_budget=time_budget, seed=seed,
                  device=device, progress=progress, checkpoint=checkpoint, resume=resume,
                  **kwargs)
    return st.run()
