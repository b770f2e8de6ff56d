"""The founding talk's Fourier section: blur, sharpen, denoise and deconvolve one image.

    python scripts/denoise_and_blur.py [--input assets/camera.png] [--size 256]
        [--output assets/figures/denoise_and_blur.png] [--force]

Makes one PNG with titled panels -- original, its log-magnitude spectrum, Gaussian blur,
unsharp mask, noisy (Gaussian noise std 0.1), Wiener-denoised, blurred (periodic,
sigma 2) + noisy (std 0.01), Wiener-deconvolved -- and prints the PSNRs. Needs matplotlib
(``pip install difftransforms[examples]``).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from difftransforms.fourier import (  # noqa: E402
    gaussian_blur,
    gaussian_psf,
    unsharp_mask,
    wiener_deconvolve,
    wiener_denoise,
)


def psnr(x: torch.Tensor, ref: torch.Tensor) -> float:
    mse = float(((x.double() - ref.double()) ** 2).mean())
    return float("inf") if mse == 0 else 10.0 * torch.log10(torch.tensor(1.0 / mse)).item()


def load(path: Path, size: int | None) -> torch.Tensor:
    """``(1, C, H, W)`` float32 in [0, 1]; the longer side resized to ``size`` if given."""
    from difftransforms.io import load_image

    x = load_image(path)
    if size is not None and max(x.shape[-2:]) != size:
        scale = size / max(x.shape[-2:])
        hw = (max(8, round(x.shape[-2] * scale)), max(8, round(x.shape[-1] * scale)))
        x = torch.nn.functional.interpolate(x, size=hw, mode="bilinear", antialias=True,
                                            align_corners=False).clamp(0, 1)
    return x


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--input", type=Path, default=ROOT / "assets" / "camera.png")
    p.add_argument("--output", type=Path,
                   default=ROOT / "assets" / "figures" / "denoise_and_blur.png")
    p.add_argument("--size", type=int, default=None,
                   help="resize so that the longer side is SIZE pixels (faster)")
    p.add_argument("--blur-sigma", type=float, default=2.0)
    p.add_argument("--noise", type=float, default=0.1, help="noise std for denoising")
    p.add_argument("--deconv-noise", type=float, default=0.01,
                   help="noise std added to the blurred image before deconvolution")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--force", action="store_true", help="overwrite --output if it exists")
    args = p.parse_args(argv)
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("error: this script needs matplotlib; install it with "
              "`pip install difftransforms[examples]`", file=sys.stderr)
        return 2
    if args.size is not None and args.size < 16:
        p.error("--size must be >= 16")
    if args.output.exists() and not args.force:
        p.error(f"{args.output} already exists; pass --force to overwrite it")

    t0 = time.perf_counter()
    x = load(args.input, args.size)
    g = torch.Generator().manual_seed(args.seed)
    s = args.blur_sigma
    blurred = gaussian_blur(x, s)
    sharp = unsharp_mask(x, s, amount=1.5)
    noisy = x + args.noise * torch.randn(x.shape, generator=g)
    denoised = wiener_denoise(noisy)
    psf = gaussian_psf(s)
    degraded = gaussian_blur(x, s, padding="periodic")
    degraded = degraded + args.deconv_noise * torch.randn(x.shape, generator=g)
    restored = wiener_deconvolve(degraded, psf)
    grey = x.mean(1)[0].double()
    spectrum = torch.fft.fftshift(torch.fft.fft2(grey - grey.mean())).abs().add(1e-3).log()

    rows = [
        ("original", x, None),
        ("log |FFT|", spectrum, None),
        (f"Gaussian blur, sigma={s:g}", blurred, psnr(blurred, x)),
        (f"unsharp mask, sigma={s:g}, amount=1.5", sharp, psnr(sharp, x)),
        (f"noisy, std={args.noise:g}", noisy, psnr(noisy, x)),
        ("Wiener-denoised", denoised, psnr(denoised, x)),
        (f"blurred (periodic) + noise {args.deconv_noise:g}", degraded, psnr(degraded, x)),
        ("Wiener-deconvolved", restored, psnr(restored, x)),
    ]
    fig, axes = plt.subplots(2, 4, figsize=(16, 9.2), layout="constrained")
    for ax, (title, img, db) in zip(axes.flat, rows, strict=True):
        if img.dim() == 4:
            arr = img[0].clamp(0, 1).permute(1, 2, 0).numpy()
            arr = arr[..., 0] if arr.shape[-1] == 1 else arr
            ax.imshow(arr, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
        else:
            ax.imshow(img.numpy(), cmap="magma", interpolation="nearest")
        ax.set_title(title + (f"\nPSNR {db:.2f} dB" if db is not None else "\n"), fontsize=10)
        ax.axis("off")
        if db is not None:
            print(f"{title:45s} PSNR {db:6.2f} dB")
    fig.suptitle(f"difftransforms.fourier on {args.input.name} "
                 f"({x.shape[-2]}x{x.shape[-1]})", fontsize=12)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.output.with_name(f".{args.output.name}.{os.getpid()}.tmp.png")
    try:
        fig.savefig(tmp, dpi=80)
        os.replace(tmp, args.output)  # atomic: never a half-written figure
    finally:
        plt.close(fig)
        if tmp.exists():
            tmp.unlink()
    print(f"wrote {args.output} in {time.perf_counter() - t0:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
