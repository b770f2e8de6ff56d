"""Neural style transfer ("Deep Art") on the texture-synthesis engine.

Gatys, Ecker & Bethge (2016), *Image style transfer using convolutional neural networks*:
optimise an image ``X`` so that

* its **texture statistics** match those of the *style* image (the engine's sliced
  Wasserstein loss between feature distributions by default, or Gram matrices), and
* its **content representation** matches that of the *content* image.

``loss = style_weight * (S(X, style) + range penalty) + content_weight * C(X, content)``

The content representation depends on the model:

* ``"vgg19"`` (pretrained VGG19): the ``relu4_2`` activations, as in the paper;
* ``"cnn"`` (the random multiscale CNN, no weights needed): a random single-layer network
  carries no notion of "objects", so the content term is a multi-scale Gaussian pyramid of
  the content's *luminance* (blurred at ``content_sigmas`` pixels, each level normalised by
  its variance). Fine detail is left free for the style's texture; the structure (shapes,
  light and shade) comes from the content.

Colour comes from the style: the content's luminance is first histogram-matched to the
style's luminance (so the two terms do not fight over brightness and contrast), only
luminance enters the content term, and the style term matches the style's pixel
distribution. The optimisation (L-BFGS, coarse-to-fine scales, time budget, progress bar,
atomic checkpoints, exact resume) is the engine's :class:`~.engine.Synthesizer`, of which
:class:`Stylizer` is a subclass that adds the content term to :meth:`Stylizer.objective`.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from difftransforms._utils import as_bchw, check_finite, check_floating

from .colour import match_histogram
from .engine import SynthesisInfo, Synthesizer, _parse_size

__all__ = ["stylize", "Stylizer", "luminance", "STYLIZE_MODELS"]

#: Names accepted by ``stylize(model=...)``.
STYLIZE_MODELS = ("auto", "cnn", "vgg19")

#: Default outer steps (L-BFGS calls) at the finest scale.
DEFAULT_STYLIZE_STEPS = 10

#: Default content weights (the losses are normalised, so these are relative to the style).
DEFAULT_CONTENT_WEIGHT = {"cnn": 1.0, "vgg19": 1.0}

#: Blur of the luminance-pyramid levels of the CNN content term (pixels of the output).
DEFAULT_CONTENT_SIGMAS = (2.0, 4.0, 8.0)

#: VGG19 layers (Gatys et al. 2016): style and content.
VGG_STYLE_LAYERS = ("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1")
VGG_CONTENT_LAYER = "relu4_2"

_LUMA = (0.299, 0.587, 0.114)

CHECKPOINT_KIND = "stylize"


def luminance(x: Tensor) -> Tensor:
    """Luma (ITU-R BT.601) of ``x`` ``(B, 3, H, W)`` -> ``(B, 1, H, W)``; grey is returned as is.

    >>> luminance(torch.ones(1, 3, 2, 2)).shape
    torch.Size([1, 1, 2, 2])
    """
    if x.shape[1] == 1:
        return x
    w = torch.tensor(_LUMA, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    return (x * w).sum(dim=1, keepdim=True)


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
        raise ValueError(f"{name} of {y.shape[-2]}x{y.shape[-1]} pixels is too small; use at "
                         "least 16x16")
    return y.clamp(0, 1)


def _resize(x: Tensor, size: tuple[int, int]) -> Tensor:
    """Anti-aliased resize of a (non-periodic) image."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=size, mode="bilinear", antialias=True, align_corners=False)


def vgg19_weights_available(weights: str | os.PathLike | None = None) -> bool:
    """Whether ``model="auto"`` picks VGG19: a weights file is given, set in the
    ``DIFFTRANSFORMS_VGG19_WEIGHTS`` environment variable, or in torch hub's cache.
    Never touches the network."""
    if weights is not None:
        return True
    from difftransforms.features import WEIGHTS_ENV_VAR

    if os.environ.get(WEIGHTS_ENV_VAR):
        return True
    try:
        from difftransforms.features import vgg

        return Path(vgg._cached_checkpoint()).is_file()
    except Exception:  # torchvision's enum moved: do not guess
        return False


class _VGGStyleContent(nn.Module):
    """One VGG19 pass: returns the style layers, keeps the content layer in ``.content``."""

    def __init__(self, weights: str | os.PathLike | None, style_layers: Sequence[str],
                 content_layer: str) -> None:
        super().__init__()
        from difftransforms.features import VGG19Features

        self.style_layers = tuple(style_layers)
        self.content_layer = content_layer
        layers = tuple(dict.fromkeys((*self.style_layers, content_layer)))
        self.net = VGG19Features(layers, weights=weights if weights is not None else "DEFAULT",
                                 padding_mode="reflect")
        self.content: Tensor | None = None

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        out = self.net(x)
        self.content = out[self.content_layer]
        return {k: out[k] for k in self.style_layers}


class Stylizer(Synthesizer):
    """Style transfer with the engine's lifecycle (``setup``/``step``/``run``/checkpoints).

    ``Stylizer(content, style, ...)`` is a :class:`~.engine.Synthesizer` whose example is
    the style image and whose objective adds ``content_weight * C(X)``; see :func:`stylize`
    for the arguments. Extra keyword arguments go to the engine (``lbfgs_iters``,
    ``scales``, ``n_directions``, ``range_weight``, ``checkpoint_every``, ``tol``, ...).
    """

    def __init__(
        self,
        content: Tensor,
        style: Tensor,
        *,
        model: str = "auto",
        content_weight: float | None = None,
        style_weight: float = 1.0,
        size: Any = None,
        steps: int | None = None,
        time_budget: float | None = None,
        seed: int = 0,
        device: str | torch.device | None = None,
        init: str | Tensor = "content",
        loss: str | None = None,
        weights: str | os.PathLike | None = None,
        content_sigmas: Sequence[float] = DEFAULT_CONTENT_SIGMAS,
        histogram_matching: bool = False,
        callback: Callable[[SynthesisInfo], Any] | None = None,
        checkpoint: str | os.PathLike | None = None,
        resume: bool = False,
        progress: bool = True,
        **engine_options: Any,
    ) -> None:
        c = _check_image(content, "content")
        s = _check_image(style, "style")
        if not isinstance(model, str) or model.lower() not in STYLIZE_MODELS:
            raise ValueError(f"unknown model {model!r}; choose one of "
                             f"{', '.join(STYLIZE_MODELS)}")
        name = model.lower()
        if name == "auto":
            name = "vgg19" if vgg19_weights_available(weights) else "cnn"
        if weights is not None and name != "vgg19":
            raise ValueError("weights are only used by model='vgg19'")
        if content_weight is None:
            content_weight = DEFAULT_CONTENT_WEIGHT[name]
        content_weight, style_weight = float(content_weight), float(style_weight)
        if not content_weight >= 0 or not style_weight >= 0 or content_weight + style_weight == 0:
            raise ValueError(f"content_weight ({content_weight}) and style_weight "
                             f"({style_weight}) must be >= 0 and not both 0")
        sig = tuple(float(v) for v in content_sigmas)
        if not sig or min(sig) <= 0:
            raise ValueError(f"content_sigmas must be positive numbers, got {content_sigmas}")
        if isinstance(init, str) and init not in ("content", "noise"):
            raise ValueError(f"unknown init {init!r}; use 'content', 'noise' or a Tensor")
        # grey + colour -> both RGB (colour comes from the style: a grey style gives a
        # grey-looking RGB result); grey + grey stays grey
        if c.shape[1] != s.shape[1]:
            c, s = c.expand(-1, 3, -1, -1), s.expand(-1, 3, -1, -1)
        dev = torch.device(device) if device is not None else c.device
        dtype = torch.float64 if c.dtype == torch.float64 else torch.float32
        c = c.to(device=dev, dtype=dtype)
        s = s.to(device=dev, dtype=dtype)
        out_size = _parse_size(size, tuple(c.shape[-2:]))
        self.content_image = _resize(c, out_size)
        self.style_model = name
        self.content_weight = content_weight
        self.style_weight = style_weight
        self.content_sigmas = sig
        self._vgg: _VGGStyleContent | None = None
        if name == "vgg19":
            self._vgg = _VGGStyleContent(weights, VGG_STYLE_LAYERS, VGG_CONTENT_LAYER).to(
                device=dev, dtype=dtype)
            engine_model: str | nn.Module = self._vgg
        else:
            engine_model = "cnn"
        # the content's luminance, remapped to the style's luminance histogram
        self._target_lum = match_histogram(luminance(self.content_image), luminance(s))
        if isinstance(init, str) and init == "content":
            # the content with the style's colours: per-channel histogram matching
            init = match_histogram(self.content_image, s)
        if steps is None and time_budget is None:
            steps = DEFAULT_STYLIZE_STEPS
        super().__init__(
            s, engine_model, out_size, steps=steps, time_budget=time_budget, seed=seed,
            device=dev, dtype=dtype, loss=loss, init=init,
            histogram_matching=histogram_matching, progress=progress, callback=callback,
            checkpoint=checkpoint, resume=resume, **engine_options,
        )
        self._content_cache: dict[tuple[int, int], list[Tensor]] = {}

    # ------------------------------------------------------------------ content term
    def _content_repr(self, x: Tensor) -> list[Tensor]:
        """Content representation of ``x`` at the current scale (list of tensors)."""
        if self._vgg is not None:
            assert self._vgg.content is not None
            return [self._vgg.content]
        from difftransforms.fourier import gaussian_blur

        lum = luminance(x)
        scale = x.shape[-1] / self.size[1]  # sigmas are given in output pixels
        out = []
        for sg in self.content_sigmas:
            s = sg * scale
            b = gaussian_blur(lum, s) if s >= 0.3 else lum
            k = max(1, int(s))  # subsample: the blurred map is smooth at that step
            out.append(b[..., ::k, ::k])
        return out

    def content_targets(self) -> list[Tensor]:
        """The content representation of the content image at the current scale."""
        hw = self.stage_size()
        t = self._content_cache.get(hw)
        if t is None:
            with torch.no_grad():
                if self._vgg is not None:
                    self._vgg(_resize(self.content_image, hw))
                    assert self._vgg.content is not None
                    t = [self._vgg.content.detach()]
                else:
                    t = [r.detach() for r in self._content_repr(_resize(self._target_lum, hw))]
            self._content_cache = {hw: t}
        return t

    def content_loss(self, x: Tensor) -> Tensor:
        """Normalised L2 content term at ``x`` (after a forward pass for VGG19)."""
        targets = self.content_targets()
        reps = self._content_repr(x)
        total = x.new_zeros(())
        for r, t in zip(reps, targets, strict=True):
            if self._vgg is not None:
                scale = t.pow(2).mean()  # ||F(C)||^2: features are non-negative
            else:
                scale = t.var()  # luminance levels: relative to their contrast
            total = total + (r - t).pow(2).mean() / scale.clamp_min(1e-12)
        return total / len(targets)

    def objective(self, x: Tensor) -> Tensor:
        """``style_weight * (S + range penalty) + content_weight * C`` at ``x``."""
        val = super().objective(x)  # runs the model forward (VGG: stores the content layer)
        if self.style_weight != 1.0:
            val = val * self.style_weight
        if self.content_weight > 0:
            val = val + self.content_weight * self.content_loss(x)
        return val

    def result(self) -> Tensor:
        """The stylised image ``(1, C, H, W)`` in ``[0, 1]``."""
        x = self.current()
        if tuple(x.shape[-2:]) != self.size:
            x = _resize(x, self.size)
        if self.histogram_matching:
            x = match_histogram(x, self.example)
        return x.clamp(0, 1)

    def _signature(self) -> dict[str, Any]:
        sig = super()._signature()
        sig.update(
            kind=CHECKPOINT_KIND,
            model=self.style_model,
            content_shape=tuple(self.content_image.shape),
            content_weight=self.content_weight,
            style_weight=self.style_weight,
            content_sigmas=list(self.content_sigmas),
        )
        return sig


def stylize(
    content: Tensor,
    style: Tensor,
    *,
    model: str = "auto",
    content_weight: float | None = None,
    style_weight: float = 1.0,
    size: int | Sequence[int] | str | None = None,
    steps: int | None = None,
    time_budget: float | None = None,
    seed: int = 0,
    device: str | torch.device | None = None,
    init: str | Tensor = "content",
    callback: Callable[[SynthesisInfo], Any] | None = None,
    checkpoint: str | os.PathLike | None = None,
    resume: bool = False,
    progress: bool = True,
    **kwargs: Any,
) -> Tensor:
    """Paint ``content`` in the style of ``style`` (Gatys et al. 2016).

    Args:
        content: ``(H, W)``, ``(C, H, W)`` or ``(1, C, H, W)`` float tensor in ``[0, 1]``
            (grey or RGB). Gives the structure.
        style: same conventions, any size (its scale sets the size of the brush strokes).
            Gives the texture and the colours. Grey and RGB mix: the result is RGB.
        model: ``"auto"`` (VGG19 when its weights are available locally, else ``"cnn"``),
            ``"cnn"`` (random multiscale CNN, no download) or ``"vgg19"``.
        content_weight, style_weight: weights of the (normalised) content and style terms;
            a larger ``content_weight`` keeps more of the content. Default 1 and 1.
        size: output ``(H, W)`` (or ``"HxW"``/int); default the content's size.
        steps, time_budget: outer steps (L-BFGS calls) at the finest scale / seconds.
            Default 10 steps.
        seed: seeds the random projections (and the noise of ``init="noise"``).
        device: where to compute (default the content's device).
        init: ``"content"`` (the content with the style's colours), ``"noise"`` or a Tensor.
        callback: ``callback(info)`` after each step (see :class:`~.engine.SynthesisInfo`);
            returning ``True`` stops.
        checkpoint, resume: atomic checkpoint file; ``resume=True`` continues from it and
            gives the same image as an uninterrupted run.
        progress: show a progress bar.
        kwargs: :class:`Stylizer` / engine options: ``weights`` (VGG19 state dict path),
            ``loss`` (``"sw"`` default or ``"gram"``), ``content_sigmas`` (CNN content
            pyramid, default ``(2, 4, 8)`` pixels), ``histogram_matching`` (match the
            result's colour histograms to the style, default ``False``), ``lbfgs_iters``,
            ``scales``, ``range_weight``, ...

    Returns:
        ``(1, C, H, W)`` tensor in ``[0, 1]`` (``C`` = 3 unless both images are grey).

    >>> c, s = torch.rand(1, 3, 32, 32), torch.rand(1, 3, 40, 36)
    >>> stylize(c, s, model="cnn", steps=1, lbfgs_iters=2, progress=False).shape
    torch.Size([1, 3, 32, 32])
    """
    st = Stylizer(content, style, model=model, content_weight=content_weight,
                  style_weight=style_weight, size=size, steps=steps, time_budget=time_budget,
                  seed=seed, device=device, init=init, callback=callback,
                  checkpoint=checkpoint, resume=resume, progress=progress, **kwargs)
    return st.run()
