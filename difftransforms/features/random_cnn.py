"""Random multi-scale CNN: one untrained layer of filters of many sizes.

Ustyuzhaninov, Brendel, Gatys & Bethge (2017), *What does it take to generate natural
textures?* (ICLR): a single convolutional layer with random filters of sizes 3 ... 55 and a
ReLU is enough for Gram-matrix texture synthesis comparable to VGG19. No training, no
downloaded weights.

Large filters are applied through the FFT (one ``rfft2`` of the input, a product with filter
spectra cached for the current input shape, one ``irfft2``); small filters through
``conv2d`` with circular padding. Both compute the same circular cross-correlation.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from difftransforms._utils import check_floating

__all__ = ["RandomMultiscaleCNN", "DEFAULT_SIZES", "circular_conv2d"]

DEFAULT_SIZES: tuple[int, ...] = (3, 5, 7, 11, 15, 23, 37, 55)

#: Filter sizes from this value up go through the FFT when ``method="auto"`` (measured on
#: a 2-core CPU, 256x256 input, 64 maps per size: direct conv2d is faster for 3..7, the FFT
#: from 11 on — see ``benchmarks/random_cnn.py``).
FFT_MIN_SIZE = 11

_ActSpec = str | nn.Module | Callable[[Tensor], Tensor] | None


def circular_conv2d(x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """Circular ("wrap-around") cross-correlation with an odd square kernel, same size out.

    ``x``: ``(B, C, H, W)``; ``weight``: ``(K, C, s, s)`` with odd ``s``; returns
    ``(B, K, H, W)`` with ``y[i, j] = sum w[u, v] x[(i + u - s//2) % H, (j + v - s//2) % W]``.
    Kernels larger than the image wrap around several times (computed by the FFT).

    >>> x = torch.arange(16.).reshape(1, 1, 4, 4)
    >>> w = torch.zeros(1, 1, 3, 3); w[0, 0, 1, 2] = 1.0   # picks the right neighbour
    >>> circular_conv2d(x, w)[0, 0, 0].tolist()
    [1.0, 2.0, 3.0, 0.0]
    """
    s = weight.shape[-1]
    p = s // 2
    H, W = x.shape[-2:]
    if p <= H and p <= W:
        return F.conv2d(F.pad(x, (p, p, p, p), mode="circular"), weight, bias)
    spec = _filter_spectra(weight, H, W)
    y = _fft_apply(torch.fft.rfft2(x), spec, (H, W))
    return y if bias is None else y + bias.view(1, -1, 1, 1)


def _filter_spectra(weight: Tensor, H: int, W: int) -> Tensor:
    """``rfft2`` of the circular-convolution kernels equivalent to cross-correlating with
    ``weight`` ``(K, C, s, s)`` on an ``H x W`` torus: ``(K, C, H, W // 2 + 1)`` complex."""
    K, C, s, _ = weight.shape
    p = s // 2
    # cross-correlation tap w[u, v] = convolution tap g[(p - u) % H, (p - v) % W]
    ri = (p - torch.arange(s, device=weight.device)) % H
    ci = (p - torch.arange(s, device=weight.device)) % W
    g = weight.new_zeros(K, C, H, W)
    # index_put_ on the last two dims (accumulate handles kernels larger than the image)
    gt = g.permute(2, 3, 0, 1)  # (H, W, K, C) view
    gt.index_put_((ri[:, None], ci[None, :]), weight.permute(2, 3, 0, 1), accumulate=True)
    return torch.fft.rfft2(g)


def _fft_apply(xf: Tensor, spec: Tensor, size: tuple[int, int]) -> Tensor:
    """``irfft2(sum_c xf[:, c] * spec[:, c])``: ``xf`` ``(B, C, H, Wf)``, ``spec``
    ``(K, C, H, Wf)`` -> ``(B, K, H, W)`` real."""
    C = xf.shape[1]
    yf = xf[:, None, 0] * spec[None, :, 0]
    for c in range(1, C):
        yf = yf + xf[:, None, c] * spec[None, :, c]
    return torch.fft.irfft2(yf, s=size)


def _make_activation(act: _ActSpec) -> Callable[[Tensor], Tensor] | None:
    if act is None:
        return None
    if isinstance(act, str):
        table: dict[str, Callable[[Tensor], Tensor]] = {
            "relu": F.relu, "gelu": F.gelu, "softplus": F.softplus, "tanh": torch.tanh,
            "abs": torch.abs, "identity": lambda t: t, "none": lambda t: t,
        }
        key = act.lower()
        if key not in table:
            raise ValueError(f"unknown activation {act!r}; choose one of {sorted(table)}, "
                             "an nn.Module or a callable")
        return table[key]
    if isinstance(act, type) and issubclass(act, nn.Module):
        return act()
    if callable(act):
        return act
    raise TypeError(f"activation must be a string, nn.Module or callable, got {type(act)}")


class RandomMultiscaleCNN(nn.Module):
    """One layer of random, fixed filters of several sizes, followed by a nonlinearity.

    Args:
        in_channels: image channels ``C``.
        sizes: odd filter sizes (default ``(3, 5, 7, 11, 15, 23, 37, 55)``).
        channels_per_size: feature maps per size ``K_s`` (int, or one int per size).
            The default 64 (512 maps) is a good speed/quality point on a CPU; the paper
            uses 128.
        seed: seed of the ``torch.Generator`` the weights are drawn from (same seed, same
            filters, on any machine).
        padding: ``"circular"`` (the only mode: textures are treated as periodic).
        activation: ``"relu"`` (default), another name, an ``nn.Module``, a callable, or
            ``None`` for the linear responses.
        bias_std: standard deviation of a random bias (default 0: no bias).
        method: ``"auto"`` (FFT for sizes ``>= fft_min_size``), ``"fft"`` or ``"direct"``.
        fft_min_size: threshold of ``"auto"``.
        max_cached_shapes: filter spectra are cached for this many recent input shapes.

    Weights are Gaussian, made zero-mean per filter (so the output ignores the image mean)
    and scaled to unit L2 norm per filter (so every scale has the same gain on white noise).
    They are buffers: fixed, saved in ``state_dict``, moved by ``.to()``.

    ``forward(x)`` maps ``(B, C, H, W)`` to an ordered dict ``{"conv3": (B, K_3, H, W), ...}``
    (one entry per size, names in :attr:`layer_names`). Gradients flow to ``x``.

    >>> net = RandomMultiscaleCNN(3, sizes=(3, 15), channels_per_size=4, seed=0)
    >>> feats = net(torch.rand(2, 3, 32, 32))
    >>> net.layer_names, tuple(feats["conv15"].shape)
    (['conv3', 'conv15'], (2, 4, 32, 32))
    """

    def __init__(
        self,
        in_channels: int = 3,
        sizes: Sequence[int] = DEFAULT_SIZES,
        channels_per_size: int | Sequence[int] = 64,
        seed: int = 0,
        padding: str = "circular",
        activation: _ActSpec = "relu",
        bias_std: float = 0.0,
        method: str = "auto",
        fft_min_size: int = FFT_MIN_SIZE,
        max_cached_shapes: int = 2,
    ) -> None:
        super().__init__()
        sizes = tuple(int(s) for s in sizes)
        if not sizes:
            raise ValueError("sizes must name at least one filter size")
        bad = [s for s in sizes if s < 1 or s % 2 == 0]
        if bad:
            raise ValueError(f"filter sizes must be odd and >= 1, got {bad}")
        if len(set(sizes)) != len(sizes):
            raise ValueError(f"filter sizes must be distinct, got {sizes}")
        if isinstance(channels_per_size, int):
            counts = (channels_per_size,) * len(sizes)
        else:
            counts = tuple(int(k) for k in channels_per_size)
            if len(counts) != len(sizes):
                raise ValueError(f"channels_per_size has {len(counts)} entries for "
                                 f"{len(sizes)} sizes")
        if min(counts) < 1:
            raise ValueError("channels_per_size must be >= 1")
        if in_channels < 1:
            raise ValueError(f"in_channels must be >= 1, got {in_channels}")
        if padding != "circular":
            raise ValueError(f"padding={padding!r} is not supported; only 'circular' "
                             "(textures are periodic)")
        if method not in ("auto", "fft", "direct"):
            raise ValueError(f"method must be 'auto', 'fft' or 'direct', got {method!r}")
        self.in_channels = in_channels
        self.sizes = sizes
        self.channels = counts
        self.seed = seed
        self.padding = padding
        self.method = method
        self.fft_min_size = fft_min_size
        self.max_cached_shapes = max_cached_shapes
        self.activation = _make_activation(activation)

        gen = torch.Generator().manual_seed(seed)
        for s, k in zip(sizes, counts, strict=True):
            w = torch.randn(k, in_channels, s, s, generator=gen, dtype=torch.float64)
            w = w - w.mean(dim=(1, 2, 3), keepdim=True)
            if w[0].numel() > 1:
                w = w / w.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
            self.register_buffer(f"weight_{s}", w.float())
            b = torch.randn(k, generator=gen, dtype=torch.float64) * bias_std
            self.register_buffer(f"bias_{s}", b.float() if bias_std > 0 else None)
        self._spectra: OrderedDict[tuple, Tensor] = OrderedDict()

    # ----------------------------------------------------------------------------------
    @property
    def layer_names(self) -> list[str]:
        """Names of the outputs, one per filter size: ``["conv3", "conv5", ...]``."""
        return [f"conv{s}" for s in self.sizes]

    @property
    def out_channels(self) -> int:
        """Total number of feature maps."""
        return sum(self.channels)

    def weight(self, size: int) -> Tensor:
        """The ``(K_s, C, s, s)`` filters of one size."""
        return getattr(self, f"weight_{size}")

    def uses_fft(self, size: int, shape: tuple[int, int] | None = None) -> bool:
        """Whether filters of ``size`` go through the FFT (for an input ``shape``)."""
        if shape is not None and size // 2 > min(shape):
            return True  # F.pad circular cannot wrap more than once
        if self.method == "fft":
            return True
        if self.method == "direct":
            return False
        return size >= self.fft_min_size

    def clear_cache(self) -> None:
        """Drop the cached filter spectra (done automatically on ``.to()``)."""
        self._spectra.clear()

    def _apply(self, fn, recurse=True):  # type: ignore[override]
        w = self.weight(self.sizes[0])
        before = (w.dtype, w.device)
        out = super()._apply(fn, recurse)
        w = self.weight(self.sizes[0])
        if (w.dtype, w.device) != before:  # a no-op .to() keeps the cache
            self.clear_cache()
        return out

    def _fft_sizes(self, H: int, W: int) -> list[int]:
        return [s for s in self.sizes if self.uses_fft(s, (H, W))]

    def spectra(self, H: int, W: int, dtype: torch.dtype,
                device: torch.device) -> dict[int, Tensor]:
        """Filter spectra of the FFT-path sizes for an ``H x W`` input: ``{size:
        (K_s, C, H, W // 2 + 1) complex}``, cached per shape/dtype/device."""
        key = (H, W, dtype, device)
        spec = self._spectra.get(key)
        if spec is not None:
            self._spectra.move_to_end(key)
            return spec
        spec = {}
        with torch.no_grad():
            for s in self._fft_sizes(H, W):
                w = self.weight(s).to(device=device, dtype=dtype)
                spec[s] = _filter_spectra(w, H, W)
        if self.max_cached_shapes > 0:
            self._spectra[key] = spec
            while len(self._spectra) > self.max_cached_shapes:
                self._spectra.popitem(last=False)
        return spec

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        """``(B, C, H, W)`` -> ``{"conv<s>": (B, K_s, H, W)}`` in the order of ``sizes``."""
        if x.dim() != 4:
            raise ValueError(f"expected a (B, C, H, W) tensor, got shape {tuple(x.shape)}")
        check_floating(x)
        if x.shape[1] != self.in_channels:
            raise ValueError(f"expected {self.in_channels} input channels, got {x.shape[1]}")
        H, W = x.shape[-2:]
        w0 = self.weight(self.sizes[0])
        if w0.dtype != x.dtype or w0.device != x.device:
            wdt = {"dtype": x.dtype, "device": x.device}
        else:
            wdt = None
        out: dict[str, Tensor] = {}
        fft_sizes = self._fft_sizes(H, W)
        if fft_sizes:
            spec = self.spectra(H, W, x.dtype, x.device)
            xf = torch.fft.rfft2(x)
            # one size at a time: the (B, K_s, H, W/2+1) complex products stay cache-sized
            # (stacking all sizes into one product is 3x slower on a CPU)
            for s in fft_sizes:
                out[f"conv{s}"] = _fft_apply(xf, spec[s], (H, W))
        for s in self.sizes:
            if s in fft_sizes:
                continue
            w = self.weight(s)
            w = w if wdt is None else w.to(**wdt)
            p = s // 2
            out[f"conv{s}"] = F.conv2d(F.pad(x, (p, p, p, p), mode="circular"), w)
        result: dict[str, Tensor] = {}
        for s in self.sizes:
            name = f"conv{s}"
            y = out[name]
            b = getattr(self, f"bias_{s}")
            if b is not None:
                y = y + b.to(dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
            result[name] = self.activation(y) if self.activation is not None else y
        return result

    def extra_repr(self) -> str:
        return (f"in_channels={self.in_channels}, sizes={self.sizes}, "
                f"channels={self.channels}, seed={self.seed}, method={self.method!r}")
