"""Gaussian blur: FFT or direct separable convolution, scipy.ndimage-exact boundaries.

The kernel is scipy.ndimage.gaussian_filter's (and kornia's): the Gaussian sampled on the
integers ``-r..r`` with ``r = int(truncate * sigma + 0.5)``, normalised to sum to one. Two
boundary conventions are supported:

- ``"reflect"``: scipy's ``mode='reflect'`` (half-sample symmetric, ``d c b a | a b c d |
  d c b a``), reflected repeatedly when the kernel is longer than the image;
- ``"periodic"``: circular convolution, scipy's ``mode='wrap'`` (the kernel wraps around
  as many times as needed when it is longer than the image).

Both methods give the same numbers (to floating-point rounding): ``"direct"`` extends the
image by the kernel radius and runs two 1-D convolutions; ``"fft"`` multiplies the
``rfft2`` of the (extended) image by the separable transfer function of the *sampled*
kernel. The reflect extension is ``2n``-periodic, so for kernels wider than the image the
FFT path works on the even (DCT-like) extension of length ``2n`` instead.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ._common import check_image, check_padding, extend, next_fast_len

__all__ = ["GaussianBlur", "gaussian_blur", "gaussian_kernel1d", "gaussian_psf",
           "gaussian_psf_size"]

# Direct separable convolution is used by ``method="auto"`` when the two 1-D kernels have
# at most this many taps together (measured on CPU, float32 8x3x512x512 with
# ``python -m benchmarks.blur --sweep``: the depthwise convolution wins up to about 80 taps
# per axis, sigma ~10, the FFT above).
AUTO_DIRECT_MAX_TAPS = 160
METHODS = ("auto", "fft", "direct")
MAX_RADIUS = 1 << 20


def _radius(sigma: float, truncate: float) -> int:
    return int(truncate * sigma + 0.5)


def _check_truncate(truncate: float) -> float:
    if isinstance(truncate, bool) or not isinstance(truncate, (int, float)):
        raise TypeError(f"truncate must be a number, got {type(truncate).__name__}")
    if not (math.isfinite(truncate) and truncate > 0):
        raise ValueError(f"truncate must be a positive finite number, got {truncate}")
    return float(truncate)


def _as_sigma_tensor(s, name: str, dtype, device) -> Tensor:
    if isinstance(s, Tensor):
        if s.is_complex() or not (s.is_floating_point() or s.dtype in (torch.int32, torch.int64)):
            raise TypeError(f"{name} must be a real number or float tensor, got {s.dtype}")
        t = s.to(dtype=dtype, device=device)
    elif isinstance(s, bool) or not isinstance(s, (int, float)):
        raise TypeError(f"{name} must be a float, a tuple of floats or a tensor, "
                        f"got {type(s).__name__}")
    else:
        t = torch.tensor(float(s), dtype=dtype, device=device)
    if not bool(torch.isfinite(t).all()) or not bool((t > 0).all()):
        vals = t.detach().cpu().flatten().tolist()
        raise ValueError(f"{name} must be > 0 and finite, got {vals[:8]}")
    return t


def parse_sigma(sigma, dtype, device, batch: int | None = None,
                name: str = "sigma") -> tuple[Tensor, Tensor]:
    """``sigma`` as two tensors ``(sy, sx)`` of shape ``(1,)`` or ``(B,)``.

    Accepts a number, a pair ``(sigma_y, sigma_x)`` of numbers or 0-d tensors, or a tensor of
    shape ``()``, ``(2,)`` (``(sigma_y, sigma_x)``) or ``(B, 2)`` (one pair per batch item).
    """
    if isinstance(sigma, (tuple, list)):
        if len(sigma) != 2:
            raise ValueError(f"{name} as a sequence must be (sigma_y, sigma_x), got {sigma!r}")
        sy = _as_sigma_tensor(sigma[0], name, dtype, device).reshape(-1)
        sx = _as_sigma_tensor(sigma[1], name, dtype, device).reshape(-1)
        if sy.numel() != 1 or sx.numel() != 1:
            raise ValueError(f"{name} entries must be scalars")
        return sy, sx
    t = _as_sigma_tensor(sigma, name, dtype, device)
    if t.dim() == 0:
        return t.reshape(1), t.reshape(1)
    if t.shape == (2,):
        return t[0:1], t[1:2]
    if t.dim() == 2 and t.shape[1] == 2:
        if batch is not None and t.shape[0] not in (1, batch):
            raise ValueError(f"{name} of shape {tuple(t.shape)} does not match the batch "
                             f"size {batch}; use shape (B, 2) or (2,)")
        return t[:, 0], t[:, 1]
    raise ValueError(f"{name} must be a number, (sigma_y, sigma_x), or a tensor of shape (), "
                     f"(2,) or (B, 2); got shape {tuple(t.shape)}")


def _kernels(s: Tensor, radius: int) -> Tensor:
    """Sampled normalised Gaussians, ``(len(s), 2 * radius + 1)``, differentiable in ``s``."""
    grid = torch.arange(-radius, radius + 1, dtype=s.dtype, device=s.device)
    phi = torch.exp(-0.5 * (grid[None, :] / s[:, None]) ** 2)
    return phi / phi.sum(dim=1, keepdim=True)


def gaussian_kernel1d(sigma: float | Tensor, truncate: float = 4.0, *, dtype=None,
                      device=None) -> Tensor:
    """The sampled, normalised 1-D Gaussian of scipy.ndimage.gaussian_filter.

    Args:
        sigma: standard deviation in pixels (> 0); a 0-d tensor keeps the graph so the
            kernel is differentiable in ``sigma``.
        truncate: the radius is ``int(truncate * sigma + 0.5)`` (scipy's rule); under
            differentiation the radius is a constant.
        dtype, device: of the result (default: ``sigma``'s for a tensor, else float32/cpu).

    Returns:
        ``(2 * r + 1,)`` tensor summing to one.

    >>> k = gaussian_kernel1d(1.0)
    >>> k.shape, round(float(k.sum()), 6), round(float(k[4]), 6)
    (torch.Size([9]), 1.0, 0.398943)
    """
    truncate = _check_truncate(truncate)
    if isinstance(sigma, Tensor):
        dtype = dtype or (sigma.dtype if sigma.is_floating_point() else torch.float32)
        device = device or sigma.device
        if sigma.numel() != 1:
            raise ValueError(f"sigma must be a scalar, got shape {tuple(sigma.shape)}")
    dtype = dtype or torch.float32
    s = _as_sigma_tensor(sigma, "sigma", dtype, device).reshape(1)
    r = _radius(float(s.detach()), truncate)
    if r > MAX_RADIUS:
        raise ValueError(f"sigma={float(s):.4g} is too large (kernel radius {r} > {MAX_RADIUS})")
    return _kernels(s, r)[0]


def gaussian_psf_size(sigma: float | tuple[float, float]) -> tuple[int, int]:
    """Default ``(h, w)`` of :func:`gaussian_psf`: ``2 * ceil(4 * sigma) + 1`` per axis
    (cheap: lets a caller check the size before building a huge kernel).

    >>> gaussian_psf_size(1.5), gaussian_psf_size((1.0, 2.0))
    ((13, 13), (9, 17))
    """
    sy, sx = sigma if isinstance(sigma, (tuple, list)) else (sigma, sigma)
    return 2 * math.ceil(4 * float(sy)) + 1, 2 * math.ceil(4 * float(sx)) + 1


def gaussian_psf(sigma: float | tuple[float, float], size: int | tuple[int, int] | None = None,
                 *, dtype=None, device=None) -> Tensor:
    """A 2-D Gaussian point-spread function of shape ``(h, w)`` that sums to one.

    The Gaussian is sampled on the integer grid centred on pixel ``(h // 2, w // 2)`` (the
    centre convention of :func:`wiener_deconvolve` and skimage's ``ir2tf``). The default size
    is ``2 * ceil(4 * sigma) + 1`` per axis.

    Args:
        sigma: standard deviation, or ``(sigma_y, sigma_x)``.
        size: ``h`` (square) or ``(h, w)``.

    >>> p = gaussian_psf(1.5)
    >>> p.shape, round(float(p.sum()), 6)
    (torch.Size([13, 13]), 1.0)
    """
    dtype = dtype or torch.float32
    sy, sx = parse_sigma(sigma, dtype, device)
    if size is None:
        size = gaussian_psf_size((float(sy), float(sx)))
    elif isinstance(size, int) and not isinstance(size, bool):
        size = (size, size)
    if (not isinstance(size, (tuple, list)) or len(size) != 2
            or not all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in size)):
        raise ValueError(f"size must be a positive int or a pair of positive ints, got {size!r}")
    h, w = size
    gy = torch.arange(h, dtype=dtype, device=device) - h // 2
    gx = torch.arange(w, dtype=dtype, device=device) - w // 2
    py = torch.exp(-0.5 * (gy / sy) ** 2)
    px = torch.exp(-0.5 * (gx / sx) ** 2)
    psf = py[:, None] * px[None, :]
    return psf / psf.sum()


def _direct(x: Tensor, ky: Tensor, kx: Tensor, padding: str) -> Tensor:
    """Separable convolution on the extended image (``ky``/``kx``: ``(1 or B, K)``).

    Runs as a depthwise convolution over the ``B * C`` planes (much faster on CPU than a
    single-channel convolution over a batch of ``B * C``).
    """
    b, c, h, w = x.shape
    ry, rx = ky.shape[1] // 2, kx.shape[1] // 2
    g = b * c
    wy = ky.repeat_interleave(c, 0) if ky.shape[0] > 1 else ky.expand(g, -1)
    wx = kx.repeat_interleave(c, 0) if kx.shape[0] > 1 else kx.expand(g, -1)
    out = extend(x, (ry, ry, 0, 0), padding).reshape(1, g, h + 2 * ry, w)
    out = F.conv2d(out, wy[:, None, :, None], groups=g)
    out = extend(out, (0, 0, rx, rx), padding)
    out = F.conv2d(out, wx[:, None, None, :], groups=g)
    return out.reshape(b, c, h, w)


def _fft_layout(n: int, r: int, padding: str) -> tuple[int, int, int]:
    """FFT length and (before, after) extension for one axis."""
    if padding == "periodic":
        return n, 0, 0
    if n + 2 * r < 2 * n:
        length = min(next_fast_len(n + 2 * r), 2 * n)
        return length, r, length - n - r
    return 2 * n, 0, n  # the 2n-periodic even extension: exact for any radius


def _wrap(k: Tensor, length: int) -> Tensor:
    """Kernel taps ``-r..r`` folded onto a circle of ``length`` samples, ``(B', length)``."""
    r = k.shape[1] // 2
    idx = torch.remainder(torch.arange(-r, r + 1, device=k.device), length)
    out = k.new_zeros(k.shape[0], length)
    return out.index_add(1, idx, k)


def _fft(x: Tensor, ky: Tensor, kx: Tensor, padding: str) -> Tensor:
    """Separable FFT convolution; every FFT runs along the contiguous last axis.

    ``rfft`` along W of the W-extended image, transpose (fused with the H extension into
    one copy), ``fft``/``ifft`` along H with the transfer function in between, transpose
    back and ``irfft`` along W. About 1.5x faster on CPU than ``rfft2``/``irfft2``, which
    transform along the strided H axis.
    """
    b, c, h, w = x.shape
    ly, ty, by = _fft_layout(h, ky.shape[1] // 2, padding)
    lx, tx, bx = _fft_layout(w, kx.shape[1] // 2, padding)
    # the wrapped kernels are even, so their transforms are real
    fy = torch.fft.fft(_wrap(ky, ly)).real  # (B', ly)
    fx = torch.fft.rfft(_wrap(kx, lx)).real  # (B', lx // 2 + 1)
    tf = (fx[:, :, None] * fy[:, None, :])[:, None]  # (B', 1, lx // 2 + 1, ly)
    spec = torch.fft.rfft(extend(x, (0, 0, tx, bx), padding), dim=-1)  # (B, C, h, wf)
    spec = extend(spec.transpose(-1, -2), (0, 0, ty, by), padding)  # (B, C, wf, ly)
    spec = torch.fft.fft(spec, dim=-1) * tf
    spec = torch.fft.ifft(spec, dim=-1)[..., ty:ty + h].transpose(-1, -2)  # (B, C, h, wf)
    return torch.fft.irfft(spec, n=lx, dim=-1)[..., tx:tx + w]


def gaussian_blur(x: Tensor, sigma: float | tuple[float, float] | Tensor,
                  padding: str = "reflect", truncate: float = 4.0,
                  method: str = "auto") -> Tensor:
    """Gaussian blur, equal to ``scipy.ndimage.gaussian_filter`` on the last two axes.

    Args:
        x: image ``(H, W)``, ``(C, H, W)`` or ``(B, C, H, W)``, float32/float64, any device.
        sigma: standard deviation in pixels: a number, ``(sigma_y, sigma_x)``, or a tensor
            of shape ``()``, ``(2,)`` or ``(B, 2)`` (one pair per batch item). Tensors keep
            the graph: the result is differentiable in ``sigma`` (the kernel radius,
            ``int(truncate * sigma + 0.5)``, is held constant, as in kornia).
        padding: ``"reflect"`` (scipy ``mode='reflect'``, half-sample symmetric) or
            ``"periodic"`` (circular, scipy ``mode='wrap'``).
        truncate: kernel radius in standard deviations (scipy's rule).
        method: ``"fft"`` (``torch.fft.rfft2``), ``"direct"`` (two 1-D convolutions) or
            ``"auto"`` (direct for small kernels, FFT otherwise); all give the same result.

    Returns:
        The blurred image, same shape, dtype and device as ``x``.

    >>> x = torch.zeros(1, 1, 9, 9, dtype=torch.float64); x[..., 4, 4] = 1
    >>> y = gaussian_blur(x, 1.0)
    >>> round(float(y.sum()), 6), round(float(y[0, 0, 4, 4]), 6)
    (1.0, 0.159156)
    >>> torch.allclose(gaussian_blur(x, 2.0, method="fft"), gaussian_blur(x, 2.0, method="direct"),
    ...                atol=1e-6)
    True
    """
    x4, restore = check_image(x)
    padding = check_padding(padding)
    truncate = _check_truncate(truncate)
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; valid choices are "
                         + ", ".join(repr(m) for m in METHODS))
    sy, sx = parse_sigma(sigma, x4.dtype, x4.device, batch=x4.shape[0])
    ry = _radius(float(sy.detach().max()), truncate)
    rx = _radius(float(sx.detach().max()), truncate)
    if max(ry, rx) > MAX_RADIUS:
        raise ValueError(f"sigma={float(max(sy.max(), sx.max())):.4g} is too large (kernel radius "
                         f"{max(ry, rx)} > {MAX_RADIUS}); blur a downsampled image instead")
    return restore(blur_with_kernels(x4, _kernels(sy, ry), _kernels(sx, rx), padding, method))


def blur_with_kernels(x: Tensor, ky: Tensor, kx: Tensor, padding: str,
                      method: str = "auto") -> Tensor:
    """Separable blur of ``(B, C, H, W)`` ``x`` by symmetric kernels ``(1 or B, K)``."""
    if method == "auto":
        method = "direct" if ky.shape[1] + kx.shape[1] <= AUTO_DIRECT_MAX_TAPS else "fft"
    if method == "direct":
        return _direct(x, ky, kx, padding)
    return _fft(x, ky, kx, padding)


class GaussianBlur(nn.Module):
    """Module form of :func:`gaussian_blur`.

    Args:
        sigma: number or ``(sigma_y, sigma_x)``.
        padding: ``"reflect"`` or ``"periodic"``.
        truncate: kernel radius in standard deviations.
        learnable: if True, ``sigma`` is learned through ``log_sigma`` (an ``nn.Parameter``
            of shape ``(2,)``, so it stays positive); the kernel is rebuilt on each call.

    Shape: ``(B, C, H, W)`` (or ``(H, W)``, ``(C, H, W)``) to the same shape.

    >>> blur = GaussianBlur(2.0, learnable=True)
    >>> y = blur(torch.rand(2, 3, 16, 16)); y.sum().backward()
    >>> blur.log_sigma.grad.shape
    torch.Size([2])
    """

    def __init__(self, sigma: float | tuple[float, float], padding: str = "reflect",
                 truncate: float = 4.0, learnable: bool = False) -> None:
        super().__init__()
        self.padding = check_padding(padding)
        self.truncate = _check_truncate(truncate)
        sy, sx = parse_sigma(sigma, torch.float64, "cpu")
        if sy.numel() != 1:
            raise ValueError("GaussianBlur takes one sigma or one (sigma_y, sigma_x) pair")
        init = torch.cat([sy, sx])
        self.learnable = bool(learnable)
        if self.learnable:
            self.log_sigma = nn.Parameter(init.float().log())
        else:
            # fixed filters are built once, as float64 buffers (cast to the input's dtype)
            self.register_buffer("sigma_yx", init)
            self.register_buffer("kernel_y", _kernels(sy, _radius(float(sy), self.truncate)))
            self.register_buffer("kernel_x", _kernels(sx, _radius(float(sx), self.truncate)))

    @property
    def sigma(self) -> Tensor:
        """Current ``(sigma_y, sigma_x)``."""
        return self.log_sigma.exp() if self.learnable else self.sigma_yx

    def forward(self, x: Tensor) -> Tensor:
        if self.learnable:
            return gaussian_blur(x, self.sigma, self.padding, self.truncate)
        x4, restore = check_image(x)
        ky = self.kernel_y.to(dtype=x4.dtype, device=x4.device)
        kx = self.kernel_x.to(dtype=x4.dtype, device=x4.device)
        return restore(blur_with_kernels(x4, ky, kx, self.padding))

    def extra_repr(self) -> str:
        s = [round(float(v), 4) for v in self.sigma.detach()]
        return (f"sigma=({s[0]}, {s[1]}), padding={self.padding!r}, "
                f"truncate={self.truncate}, learnable={self.learnable}")
