"""The texture-synthesis engine: optimise ``X`` until ``F(X) ~ F(Y)``.

"Texture synthesis: an optimal control problem" -- given an example ``Y`` and a
differentiable statistic ``F``, start from random noise and run L-BFGS (or Adam) on a loss
between ``F(X)`` and ``F(Y)``. One engine serves every ``F`` of the library (random
multiscale CNN, VGG19, scattering / covariance moments, scattering spectra) and any user
``nn.Module``.

Lifecycle of :class:`Synthesizer`::

    s = Synthesizer(example, model="cnn", size=(256, 256), seed=0)
    s.setup()                 # build F for the current scale, targets, X_0, optimiser
    while not s.should_stop():
        s.step()              # one outer step (one L-BFGS call / one Adam step)
        torch.save(s.state_dict(), "ckpt.pt")    # or s.save_checkpoint(path)
    x = s.result()            # (1, C, H, W) in [0, 1]

``s.run()`` does all of that (plus progress bar, callbacks, periodic atomic checkpoints).
A run resumed from a checkpoint gives the SAME image as an uninterrupted run: the state holds
the image, the optimiser state (L-BFGS history), the RNG that draws the sliced-Wasserstein
directions, the scale and the step counters.
"""

from __future__ import annotations

import math
import os
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from difftransforms._utils import as_bchw, check_finite, check_floating

from .colour import clamp_colour_range, match_histogram, resize_periodic, spectral_noise
from .losses import GramLoss, MomentLoss, SlicedWassersteinLoss
from .models import build_model, default_J, feature_list, loss_kind_for
from .models import resolve_name as _resolve_name

__all__ = ["Synthesizer", "synthesize", "SynthesisInfo", "CHECKPOINT_FORMAT"]

CHECKPOINT_FORMAT = "difftransforms.synthesis/1"

LOSSES = ("auto", "sw", "gram", "moments")

#: Default number of outer steps per model when neither ``steps`` nor ``time_budget`` is
#: given (one outer step = one L-BFGS call of ``lbfgs_iters`` iterations).
DEFAULT_STEPS = {
    "cnn": 12,
    "vgg19": 12,
    "scattering": 20,
    "covariance": 20,
    "spectra": 20,
    "custom": 20,
}

#: Fraction of the time budget given to the coarse scales (when there are several).
COARSE_TIME_FRACTION = 0.3

#: Points per cloud (pixels of one feature map) in the optional MMD term.
MMD_POINTS = 2048


class SynthesisInfo(dict):
    """What a ``callback`` receives after each step: keys ``step`` (1-based over the whole
    run), ``stage`` (scale index, 0 = coarsest), ``stages``, ``loss``, ``elapsed`` (s),
    ``image`` (current ``(1, C, h, w)`` estimate, detached, unclamped)."""

    __getattr__ = dict.__getitem__


def _parse_size(size: Any, example_hw: tuple[int, int]) -> tuple[int, int]:
    if size is None:
        return example_hw
    if isinstance(size, int):
        size = (size, size)
    if isinstance(size, str):
        parts = size.lower().replace(" ", "").split("x")
        try:
            size = tuple(int(p) for p in parts)
        except ValueError:
            raise ValueError(f"size {size!r} is not HxW (e.g. 256x256)") from None
        if len(size) == 1:
            size = (size[0], size[0])
    size = tuple(int(s) for s in size)
    if len(size) != 2:
        raise ValueError(f"size must be (H, W), got {size}")
    if min(size) < 8:
        raise ValueError(f"output size {size[0]}x{size[1]} is too small; use at least 8x8")
    return size  # type: ignore[return-value]


def _downsample(x: Tensor, factor: int) -> Tensor:
    """Anti-aliased downsampling of a (non-periodic) example by ``factor``."""
    if factor == 1:
        return x
    h, w = x.shape[-2:]
    return F.interpolate(
        x, size=(max(1, round(h / factor)), max(1, round(w / factor))), mode="bilinear",
        antialias=True, align_corners=False,
    )


def _atomic_save(obj: Any, path: str | os.PathLike) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


class Synthesizer:
    """Texture synthesis by optimisation, with an explicit lifecycle.

    Args:
        example: the example texture ``Y``: ``(H, W)``, ``(C, H, W)`` or ``(1, C, H, W)``
            float tensor with values in ``[0, 1]`` (``C`` = 1 grey or 3 RGB).
        model: ``"auto"`` (= ``"spectra"``, Cheng & Morel scattering spectra: the best
            looking textures within a CPU minute), ``"cnn"`` (random multiscale CNN, no weights
            needed), ``"vgg19"`` (pretrained VGG19, needs weights), ``"scattering"``
            (scattering moments), ``"covariance"`` (wavelet covariance moments), ``"spectra"``
            (scattering spectra), or any ``nn.Module`` mapping ``(1, C, H, W)`` to a Tensor or
            a list/dict of Tensors (``(1, K, h, w)`` feature maps or ``(1, ...)`` statistics).
        size: output ``(H, W)`` (or ``"HxW"`` / an int), default the example's size.
        steps: outer steps at the finest scale (one L-BFGS call of ``lbfgs_iters`` iterations,
            or one Adam step). Default: per model when ``time_budget`` is not given either.
        time_budget: wall-clock seconds for the whole run (checked between steps).
        seed: seeds the initial noise and the random projections (the CNN's filters use
            ``model_options["model_seed"]``, default 0).
        device, dtype: where to compute (default: the example's device, float32 unless the
            example is float64).
        loss: ``"auto"`` (sliced Wasserstein for feature maps, normalised L2 for statistics),
            ``"sw"``, ``"gram"`` or ``"moments"``.
        optimizer: ``"lbfgs"`` (strong-Wolfe line search) or ``"adam"``.
        lr: Adam learning rate (default 0.02) or L-BFGS step scale (default 1).
        lbfgs_iters: L-BFGS iterations per outer step (default 10); random projections stay
            fixed within one L-BFGS call and are redrawn between calls (Heitz et al. 2021).
        scales: number of coarse-to-fine scales (``None``: for feature-map models 3 when the
            output and the example are at least 256 pixels on each side, 2 from 128, else 1;
            1 for the scattering / covariance / spectra moments).
        init: ``"spectral"`` (Gaussian noise with the example's spectrum and colours,
            default), ``"noise"`` (white noise around the example's mean colour) or a Tensor.
        histogram_matching: match each channel's histogram to the example at the end.
        colour_range: at the end, pull every colour into the range the example's colours
            span on their principal axes (:func:`~.colour.clamp_colour_range`: no
            off-hue speckles).
        range_weight: weight of the soft penalty keeping pixels in ``[0, 1]``.
        n_directions: sliced-Wasserstein directions per layer (default: number of channels).
        mmd_weight: weight of an additional kernel MMD term (Gaussian kernel, bandwidth
            from the median heuristic on the example's features, fixed per scale) between
            the pixel distributions of ``X``'s and ``Y``'s feature maps: every pixel of a
            map is a point of ``R^K`` (:func:`difftransforms.ops.feature_mmd`, at most
            :data:`MMD_POINTS` points per cloud, the subsample redrawn once per outer
            step from the checkpointed generator). Feature-map models only.
        tol, patience: stop (or move to the next scale) when the loss improved by less than
            ``tol`` (relative) over ``patience`` steps.
        progress: show a tqdm bar with the loss and speed.
        store_progress: keep a snapshot every that many steps in :attr:`progress`
            (``True`` = every step).
        callback: ``callback(info: SynthesisInfo)`` after each step; returning ``True``
            stops the run.
        checkpoint: file written atomically every ``checkpoint_every`` steps and at the end.
        resume: load ``checkpoint`` (if it exists) before running.
        model_options: passed to the model factory (``J``, ``L``, ``sizes``,
            ``channels_per_size``, ``model_seed``, ``weights``, ``layers``).
    """

    #: Name shown in the progress bar.
    label = "synthesize"

    def __init__(
        self,
        example: Tensor,
        model: str | nn.Module = "auto",
        size: Any = None,
        *,
        steps: int | None = None,
        time_budget: float | None = None,
        seed: int = 0,
        device: str | torch.device | None = None,
        dtype: torch.dtype | None = None,
        loss: str | None = None,
        optimizer: str = "lbfgs",
        lr: float | None = None,
        lbfgs_iters: int = 10,
        scales: int | None = None,
        init: str | Tensor = "spectral",
        histogram_matching: bool = True,
        colour_range: bool = True,
        range_weight: float = 10.0,
        n_directions: int | None = None,
        mmd_weight: float = 0.0,
        tol: float = 1e-3,
        patience: int = 4,
        progress: bool = False,
        store_progress: bool | int = False,
        callback: Callable[[SynthesisInfo], Any] | None = None,
        checkpoint: str | os.PathLike | None = None,
        checkpoint_every: int = 5,
        resume: bool = False,
        model_options: dict[str, Any] | None = None,
    ) -> None:
        if not isinstance(example, Tensor):
            raise TypeError(f"example must be a torch.Tensor, got {type(example).__name__}")
        check_floating(example, "example")
        y, _ = as_bchw(example, "example")
        if y.shape[0] != 1:
            raise ValueError(f"example must hold ONE image, got a batch of {y.shape[0]}")
        check_finite(y, "example")
        lo, hi = float(y.min()), float(y.max())
        if lo < -1e-3 or hi > 1 + 1e-3:
            raise ValueError(
                f"example values must lie in [0, 1], got [{lo:.3g}, {hi:.3g}]; "
                "divide 8-bit images by 255"
            )
        if min(y.shape[-2:]) < 8:
            raise ValueError(f"example of {y.shape[-2]}x{y.shape[-1]} pixels is too small; "
                             "use at least 8x8")
        self.name = _resolve_name(model)  # validates the model name early
        self.model_spec = model
        if loss is None:
            loss = "auto"
        if loss not in LOSSES:
            raise ValueError(f"unknown loss {loss!r}; choose one of {', '.join(LOSSES)}")
        if optimizer not in ("lbfgs", "adam"):
            raise ValueError(f"unknown optimizer {optimizer!r}; choose 'lbfgs' or 'adam'")
        if steps is not None and steps < 0:
            raise ValueError(f"steps must be >= 0, got {steps}")
        if time_budget is not None and not time_budget > 0:
            raise ValueError(f"time_budget must be > 0 seconds, got {time_budget}")
        self.device = torch.device(device) if device is not None else y.device
        if dtype is None:
            dtype = torch.float64 if y.dtype == torch.float64 else torch.float32
        self.dtype = dtype
        self.example = y.detach().to(device=self.device, dtype=dtype)
        self.size = _parse_size(size, tuple(y.shape[-2:]))
        self.channels = y.shape[1]
        self.loss_name = loss
        self.optimizer_name = optimizer
        self.lr = lr if lr is not None else (1.0 if optimizer == "lbfgs" else 0.02)
        self.lbfgs_iters = int(lbfgs_iters)
        self.init = init
        self.histogram_matching = histogram_matching
        self.colour_range = bool(colour_range)
        self.range_weight = float(range_weight)
        self.n_directions = n_directions
        if not (isinstance(mmd_weight, (int, float)) and math.isfinite(mmd_weight)
                and mmd_weight >= 0):
            raise ValueError(f"mmd_weight must be a finite number >= 0, got {mmd_weight!r}")
        self.mmd_weight = float(mmd_weight)
        self.tol = float(tol)
        self.patience = int(patience)
        self.seed = int(seed)
        self.time_budget = time_budget
        self.show_progress = progress
        self.store_every = int(store_progress) if store_progress else 0
        self.callback = callback
        self.checkpoint = Path(checkpoint) if checkpoint is not None else None
        self.checkpoint_every = int(checkpoint_every)
        self.resume = resume
        self.model_options = dict(model_options or {})
        if steps is None and time_budget is None:
            steps = DEFAULT_STEPS[self.name]
        self.steps = steps
        self.factors = self._schedule(scales)
        self.progress: list[tuple[int, float, Tensor]] = []
        self.losses: list[float] = []
        self.evaluations = 0  # loss + gradient evaluations (for speed reports)

        # mutable run state (what state_dict saves)
        self.generator = torch.Generator().manual_seed(self.seed)
        self.stage = 0
        self.stage_step = 0
        self.elapsed = 0.0
        self.saved_on_interrupt = False
        self.done = False
        self.x: Tensor | None = None
        self._ready = False
        self._stalled = False
        # per-stage objects
        self._model: nn.Module | None = None
        self._loss: Any = None
        self._opt: torch.optim.Optimizer | None = None
        self._mmd_targets: list[Tensor] | None = None
        self._mmd_sigmas: list[Tensor] = []
        self._mmd_seed = 0
        # validate the model for the finest scale now (clear errors before any work)
        self._check_model_sizes()

    # ------------------------------------------------------------------ schedule
    def _schedule(self, scales: int | None) -> list[int]:
        """Downsampling factors of the stages, coarsest first (e.g. ``[2, 1]``)."""
        h, w = self.size
        eh, ew = self.example.shape[-2:]
        smallest = min(h, w, eh, ew)
        if scales is None and self.name in ("scattering", "covariance", "spectra"):
            # their J already spans the large scales, and upsampling a coarse solution
            # leaves a pixel grid that phase-blind moments do not erase: one scale
            scales = 1
        if scales is None:  # coarsest scale of at least 64 pixels, at most 3 scales
            scales = 3 if smallest >= 256 else 2 if smallest >= 128 else 1
        if scales < 1:
            raise ValueError(f"scales must be >= 1, got {scales}")
        factors = [2**k for k in range(scales)]
        factors = [f for f in factors if smallest // f >= 32] or [1]
        return factors[::-1]

    @property
    def stages(self) -> int:
        return len(self.factors)

    def stage_size(self, stage: int | None = None) -> tuple[int, int]:
        f = self.factors[self.stage if stage is None else stage]
        return (max(8, round(self.size[0] / f)), max(8, round(self.size[1] / f)))

    def _stage_example(self, stage: int) -> Tensor:
        return _downsample(self.example, self.factors[stage])

    def _check_model_sizes(self) -> None:
        if self.name in ("scattering", "covariance", "spectra"):
            J = self.model_options.get("J")
            for st in range(self.stages):
                ex = self._stage_example(st)
                hw = self.stage_size(st)
                small = min(min(ex.shape[-2:]), *hw)
                j = J or default_J((small, small))
                if small < 2 ** (j + 1):
                    raise ValueError(
                        f"the image ({small} pixels on its smaller side at scale {st}) is too "
                        f"small for the {self.name} model with J={j}: it needs at least "
                        f"{2 ** (j + 1)} pixels; use a smaller J or a larger image/size"
                    )

    def _stage_steps(self, stage: int) -> int | None:
        """Steps of a stage (``None``: limited by time only)."""
        if self.steps is None:
            return None
        if stage == self.stages - 1:
            return self.steps
        return max(1, math.ceil(self.steps / 2))

    def _stage_deadline(self, stage: int) -> float | None:
        if self.time_budget is None:
            return None
        if stage == self.stages - 1:
            return self.time_budget
        return self.time_budget * COARSE_TIME_FRACTION * (stage + 1) / (self.stages - 1)

    # ------------------------------------------------------------------ setup
    def setup(self) -> Synthesizer:
        """Build ``F`` and the targets for the current scale; create ``X`` and the optimiser.

        Idempotent; called by :meth:`step` and :meth:`run` when needed. After
        :meth:`load_state_dict` it restores the loaded image and optimiser state.
        """
        if self._ready:
            return self
        if self.name in ("scattering", "covariance", "spectra"):
            # Load (on a new machine: build, once, ~1 min) the compiled scattering kernels
            # before the clock starts, so a time budget is spent optimising, not compiling.
            from difftransforms.ops.modconv import compiled_available

            compiled_available(self.example.device)
        t_setup = time.perf_counter()
        ex = self._stage_example(self.stage)
        opts = dict(self.model_options)
        if self.name in ("scattering", "covariance", "spectra") and "J" not in opts:
            small = min(*ex.shape[-2:], *self.stage_size())
            opts["J"] = default_J((small, small))
        built = build_model(self.model_spec, ex, opts)
        self._model = built.module
        pools = getattr(self._model, "pools", None)
        if pools is not None:
            # local-mean maps exist for windows up to half the image side: keep the windows
            # that both X and a differently sized example have, so their feature lists match
            small = min(*ex.shape[-2:], *self.stage_size())
            self._model.pools = tuple(p for p in pools if p <= 1 or p <= small // 2)
        with torch.no_grad():
            feats = feature_list(self._model(ex))
        for f in feats:
            if not torch.isfinite(f).all():
                raise ValueError("the model gives non-finite statistics for the example")
        kind = self.loss_name
        if kind == "auto":
            kind = built.default_loss if built.default_loss != "auto" else loss_kind_for(feats)
        if kind in ("sw", "gram") and any(f.dim() != 4 for f in feats):
            raise ValueError(
                f"loss {kind!r} needs (B, K, H, W) feature maps but the model returns "
                f"shapes {[tuple(f.shape) for f in feats]}; use loss='moments' "
                f"(--loss moments)"
            )
        if kind == "moments" and any(f.dim() == 4 for f in feats):
            raise ValueError(
                f"loss 'moments' compares statistic vectors, but the {self.name} model returns "
                f"(B, K, H, W) feature maps (a pixel-by-pixel match would copy the example); "
                f"use loss='gram' or 'sw' (--loss gram|sw)"
            )
        self.loss_kind = kind
        if kind == "sw":
            self._loss = SlicedWassersteinLoss(feats, self.n_directions, self.generator)
        elif kind == "gram":
            self._loss = GramLoss(feats, centered=self.name == "cnn")
        else:
            self._loss = MomentLoss(feats)
        if self.mmd_weight > 0:
            self._setup_mmd(feats)
        if self.x is None:
            self.x = self._initial_image()
        # a fresh leaf: never alias the example, the content or a user's init tensor
        self.x = self.x.detach().to(device=self.device, dtype=self.dtype).clone()
        self.x.requires_grad_(True)
        self._opt = self._make_optimizer(self.x)
        if getattr(self, "_pending_opt_state", None) is not None:
            self._opt.load_state_dict(self._pending_opt_state)
            self._pending_opt_state = None
        self._ready = True
        # building F and the targets counts towards the time budget (examples can be large)
        self.elapsed += time.perf_counter() - t_setup
        return self

    def _initial_image(self) -> Tensor:
        hw = self.stage_size()
        ex = self._stage_example(self.stage)
        if isinstance(self.init, Tensor):
            x0, _ = as_bchw(self.init.detach(), "init")
            if x0.shape[1] != self.channels:
                raise ValueError(f"init has {x0.shape[1]} channels, the example {self.channels}")
            return resize_periodic(x0.to(device=self.device, dtype=self.dtype), hw)
        if self.init == "spectral":
            return spectral_noise(ex, hw, self.generator)
        if self.init == "noise":
            mean = ex.mean(dim=(2, 3), keepdim=True)
            std = ex.std(dim=(2, 3), keepdim=True)
            n = torch.randn(1, self.channels, *hw, generator=self.generator, dtype=torch.float64)
            return n.to(ex) * std + mean
        raise ValueError(f"unknown init {self.init!r}; use 'spectral', 'noise' or a Tensor")

    def _make_optimizer(self, x: Tensor) -> torch.optim.Optimizer:
        if self.optimizer_name == "lbfgs":
            return torch.optim.LBFGS(
                [x], lr=self.lr, max_iter=self.lbfgs_iters, history_size=20,
                tolerance_grad=0.0, tolerance_change=0.0, line_search_fn="strong_wolfe",
            )
        return torch.optim.Adam([x], lr=self.lr)

    # ------------------------------------------------------------------ objective
    def objective(self, x: Tensor) -> Tensor:
        """The scalar loss at ``x`` for the current scale (statistics + range penalty)."""
        assert self._model is not None and self._loss is not None
        feats = feature_list(self._model(x))
        return self._loss(feats) + self._mmd_term(feats) + self._range_term(x)

    def _range_term(self, x: Tensor) -> Tensor | float:
        """Soft penalty keeping the pixels in ``[0, 1]``."""
        if self.range_weight <= 0:
            return 0.0
        return self.range_weight * (F.relu(-x).pow(2) + F.relu(x - 1).pow(2)).mean()

    def _setup_mmd(self, feats: list[Tensor]) -> None:
        """MMD targets of the current scale and their fixed Gaussian bandwidths."""
        from difftransforms.ops.kernel_reduction import median_heuristic

        maps = [f.detach() for f in feats if f.dim() == 4]
        if not maps:
            raise ValueError(
                f"mmd_weight needs a model with (B, K, H, W) feature maps; {self.name!r} "
                "gives only statistics"
            )
        g = torch.Generator().manual_seed(self.seed)
        self._mmd_targets = maps
        self._mmd_sigmas = [
            median_heuristic(m[0].reshape(m.shape[1], -1).t(), generator=g) for m in maps
        ]

    def _mmd_term(self, feats: list[Tensor]) -> Tensor | float:
        """``mmd_weight`` x mean over feature maps of the squared MMD between ``X``'s and
        ``Y``'s pixel clouds (the same random subsample in every evaluation of a step)."""
        if self.mmd_weight <= 0 or not self._mmd_targets:
            return 0.0
        from difftransforms.ops import feature_mmd

        fm = [f for f in feats if f.dim() == 4]
        g = torch.Generator().manual_seed(self._mmd_seed)
        terms = [
            feature_mmd(a, b, sig, max_points=MMD_POINTS, generator=g)
            for a, b, sig in zip(fm, self._mmd_targets, self._mmd_sigmas, strict=True)
        ]
        return self.mmd_weight * sum(terms) / len(terms)

    # ------------------------------------------------------------------ stepping
    def step(self) -> float:
        """One outer step at the current scale; returns its loss (min over evaluations)."""
        self.setup()
        assert self.x is not None and self._opt is not None
        t0 = time.perf_counter()
        self._loss.resample()  # fresh random projections for this outer step
        if self.mmd_weight > 0:  # fresh MMD subsample, fixed within the step
            self._mmd_seed = int(torch.randint(0, 2**62, (1,), generator=self.generator))
        best = [math.inf]
        best_x: list[Tensor | None] = [None]
        x, opt = self.x, self._opt
        deadline = self._stage_deadline(self.stage)
        # time left for this step (the budget is also honoured inside an L-BFGS call)
        left = None if deadline is None else deadline - self.elapsed

        def closure() -> Tensor:
            if left is not None and best_x[0] is not None and time.perf_counter() - t0 > left:
                raise _OutOfTime
            opt.zero_grad(set_to_none=True)
            val = self.objective(x)
            val.backward()
            self.evaluations += 1
            v = float(val.detach())
            if v < best[0]:
                best[0] = v
                if left is not None:
                    best_x[0] = x.detach().clone()
            return val

        out_of_time = False
        try:
            if self.optimizer_name == "lbfgs":
                opt.step(closure)
            else:
                closure()
                opt.step()
        except _OutOfTime:
            # stopped inside a line search: keep the best point evaluated in this step; the
            # optimiser state is stale, but this scale is over (a fresh one is built next)
            out_of_time = True
            with torch.no_grad():
                x.copy_(best_x[0])
        loss = best[0]
        if not math.isfinite(loss):
            raise FloatingPointError(
                "the loss became non-finite; try optimizer='adam' or a smaller lr"
            )
        self.stage_step += 1
        self.losses.append(loss)
        self.elapsed += time.perf_counter() - t0
        if out_of_time:
            self.elapsed = max(self.elapsed, deadline or 0.0)
        self._update_stall()
        return loss

    def _update_stall(self) -> None:
        p = self.patience
        hist = self.losses[-(p + 1):] if self.stage_step > p else []
        self._stalled = bool(hist) and (hist[0] - min(hist[1:])) <= self.tol * abs(hist[0])

    def _stage_finished(self) -> bool:
        n = self._stage_steps(self.stage)
        if n is not None and self.stage_step >= n:
            return True
        dl = self._stage_deadline(self.stage)
        if dl is not None and self.elapsed >= dl:
            return True
        return self._stalled

    def should_stop(self) -> bool:
        """True when the run is over; advances to the next scale when the current is done."""
        if self.done:
            return True
        while self._stage_finished():
            if self.stage == self.stages - 1:
                self.done = True
                return True
            self._next_stage()
        return False

    def _next_stage(self) -> None:
        assert self.x is not None
        self.stage += 1
        self.stage_step = 0
        self._stalled = False
        self.x = resize_periodic(self.x.detach(), self.stage_size())
        self._ready = False
        self._opt = None
        self.setup()

    # ------------------------------------------------------------------ result
    def current(self) -> Tensor:
        """The current estimate ``(1, C, h, w)`` (current scale), clamped to ``[0, 1]``."""
        self.setup()
        assert self.x is not None
        return self.x.detach().clamp(0, 1)

    def result(self) -> Tensor:
        """The synthesised texture ``(1, C, H, W)`` in ``[0, 1]`` at the output size."""
        x = self.current()
        if tuple(x.shape[-2:]) != self.size:
            x = resize_periodic(x, self.size)
        if self.histogram_matching:
            x = match_histogram(x, self.example)
        if self.colour_range and self.channels > 1:
            x = clamp_colour_range(x, self.example)
        return x.clamp(0, 1)

    def run(self, steps: int | None = None) -> Tensor:
        """Run until :meth:`should_stop` (or ``steps`` more steps); returns :meth:`result`."""
        if self.resume and self.checkpoint is not None and self.checkpoint.exists():
            self.load_checkpoint(self.checkpoint)
            self.resume = False
        self.setup()
        bar = None
        if self.show_progress:
            from tqdm.auto import tqdm

            total = self.total_steps()
            bar = tqdm(total=total, desc=f"{self.label}[{self.name}]", unit="step",
                       initial=self.global_step(), dynamic_ncols=True, leave=True)
        done_here = 0
        try:
            while not self.should_stop():
                if steps is not None and done_here >= steps:
                    break
                loss = self.step()
                done_here += 1
                gstep = self.global_step()
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(loss=f"{loss:.4g}", scale=f"{self.stage + 1}/{self.stages}")
                if self.store_every and gstep % self.store_every == 0:
                    self.progress.append((gstep, loss, self.current().cpu()))
                if (self.checkpoint is not None and self.checkpoint_every > 0
                        and gstep % self.checkpoint_every == 0):
                    self.save_checkpoint(self.checkpoint)
                if self.callback is not None:
                    info = SynthesisInfo(step=gstep, stage=self.stage, stages=self.stages,
                                         loss=loss, elapsed=self.elapsed,
                                         image=self.x.detach())
                    if self.callback(info) is True:
                        break
        except KeyboardInterrupt:
            # keep the work: the estimate as it stands (an interrupted optimizer step at
            # worst leaves it mid line search), resumable with resume=True
            if self.checkpoint is not None and self.global_step() > 0:
                self.save_checkpoint(self.checkpoint)
                self.saved_on_interrupt = True
            raise
        finally:
            if bar is not None:
                bar.close()
        if self.checkpoint is not None:
            self.save_checkpoint(self.checkpoint)
        return self.result()

    def global_step(self) -> int:
        """Steps done so far over all scales."""
        return len(self.losses)

    def total_steps(self) -> int | None:
        if self.steps is None:
            return None
        return sum(self._stage_steps(s) or 0 for s in range(self.stages))

    # ------------------------------------------------------------------ state
    def _signature(self) -> dict[str, Any]:
        return {
            "model": self.name,
            "size": tuple(self.size),
            "channels": self.channels,
            "example_shape": tuple(self.example.shape),
            "factors": list(self.factors),
            "optimizer": self.optimizer_name,
            "seed": self.seed,
            "mmd_weight": self.mmd_weight,
        }

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue the run bit-for-bit (CPU tensors)."""
        return {
            "format": CHECKPOINT_FORMAT,
            "signature": self._signature(),
            "stage": self.stage,
            "stage_step": self.stage_step,
            "x": None if self.x is None else self.x.detach().cpu().clone(),
            "optimizer": None if self._opt is None else _to_cpu(self._opt.state_dict()),
            "generator": self.generator.get_state(),
            "losses": list(self.losses),
            "elapsed": self.elapsed,
            "done": self.done,
            "stalled": self._stalled,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a :meth:`state_dict` (checks it belongs to the same synthesis setup)."""
        if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
            raise ValueError("not a difftransforms synthesis checkpoint")
        sig, mine = state["signature"], self._signature()
        diff = [k for k in mine if sig.get(k) != mine[k]]
        if diff:
            raise ValueError(
                "the checkpoint belongs to a different synthesis (differs in "
                + ", ".join(f"{k}: {sig.get(k)} vs {mine[k]}" for k in diff)
                + "); use the same options or another checkpoint file"
            )
        self.stage = int(state["stage"])
        self.stage_step = int(state["stage_step"])
        self.x = None if state["x"] is None else state["x"].to(self.device, self.dtype)
        self.generator.set_state(state["generator"])
        self.losses = list(state["losses"])
        self.elapsed = float(state["elapsed"])
        self.done = bool(state["done"])
        self._stalled = bool(state.get("stalled", False))
        self._pending_opt_state = state["optimizer"]
        self._ready = False
        self._opt = None

    def save_checkpoint(self, path: str | os.PathLike) -> None:
        """Write :meth:`state_dict` to ``path`` atomically (temporary file + rename)."""
        _atomic_save(self.state_dict(), path)

    def load_checkpoint(self, path: str | os.PathLike) -> None:
        """Load a checkpoint written by :meth:`save_checkpoint`."""
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"checkpoint {path} does not exist")
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)  # data only
        except Exception as e:  # corrupted / foreign file
            raise ValueError(f"cannot read checkpoint {path}: not a checkpoint written by "
                             f"difftransforms (torch.load said: {e})") from None
        self.load_state_dict(state)


class _OutOfTime(Exception):
    """Raised inside the closure when the time budget runs out mid L-BFGS call."""


def _to_cpu(obj: Any) -> Any:
    if isinstance(obj, Tensor):
        return obj.detach().cpu().clone()
    if isinstance(obj, dict):
        return {k: _to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_to_cpu(v) for v in obj)
    return obj


def synthesize(
    example: Tensor,
    model: str | nn.Module = "auto",
    size: int | Sequence[int] | str | None = None,
    steps: int | None = None,
    time_budget: float | None = None,
    seed: int = 0,
    device: str | torch.device | None = None,
    callback: Callable[[SynthesisInfo], Any] | None = None,
    loss: str | None = None,
    optimizer: str = "lbfgs",
    **kwargs: Any,
) -> Tensor:
    """Synthesise a texture that has the statistics ``F`` of ``example``.

    Args:
        example: ``(H, W)``, ``(C, H, W)`` or ``(1, C, H, W)`` float tensor in ``[0, 1]``.
        model: ``"auto"`` (= ``"spectra"``), ``"cnn"``, ``"vgg19"``, ``"scattering"``,
            ``"covariance"``, ``"spectra"`` or an ``nn.Module`` (see :class:`Synthesizer`).
        size: output ``(H, W)`` (default: the example's size); the output is periodic.
        steps, time_budget: stop after that many outer steps / seconds.
        seed: same seed, same machine -> same image.
        kwargs: any other :class:`Synthesizer` option (``progress``, ``checkpoint``,
            ``resume``, ``scales``, ``histogram_matching``, ``model_options`` ...).

    Returns:
        ``(1, C, H, W)`` tensor in ``[0, 1]`` on ``device`` (default: the example's).

    >>> y = torch.rand(1, 1, 32, 32)
    >>> net = torch.nn.Conv2d(1, 4, 3, padding=1, padding_mode="circular")
    >>> synthesize(y, model=net, steps=1, lbfgs_iters=2).shape
    torch.Size([1, 1, 32, 32])
    """
    s = Synthesizer(example, model, size, steps=steps, time_budget=time_budget, seed=seed,
                    device=device, callback=callback, loss=loss, optimizer=optimizer, **kwargs)
    return s.run()

