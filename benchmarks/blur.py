"""Gaussian blur: difftransforms vs kornia and scipy.ndimage.

Run: ``python -m benchmarks.blur [--quick] [--no-write] [--sweep] [--device cuda]``.

Float32 ``8x3x512x512`` (``--quick``: ``2x3x256x256``), sigma 1, 4 and 16, reflect
boundaries: forward, and forward+backward (``x.requires_grad``, ``sum().backward()``).
kornia gets the same kernel (``kernel_size = 2 * int(4 * sigma + 0.5) + 1``,
``border_type='reflect'``; note kornia's reflect is whole-sample, scipy's half-sample);
scipy (``gaussian_filter(axes=(-2, -1))``) runs forward only, on the CPU.
``--sweep`` times our direct and FFT methods against each other over sigma, the
measurement behind ``AUTO_DIRECT_MAX_TAPS``.
"""

from __future__ import annotations

import numpy as np
import torch

from benchmarks._harness import Bench, parser, setup_threads, timeit
from difftransforms.fourier import gaussian
from difftransforms.fourier.gaussian import gaussian_blur

try:
    import kornia
except ImportError:  # reported as "not installed" in the table
    kornia = None
try:
    import scipy.ndimage as ndi
except ImportError:
    ndi = None


def _fwd_bwd(fn, x: torch.Tensor):
    def run() -> None:
        x.grad = None
        fn(x).sum().backward()

    return run


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--sweep", action="store_true", help="time direct vs fft over sigma")
    args = p.parse_args()
    setup_threads(args.threads)
    dev = torch.device(args.device)
    shape = (2, 3, 256, 256) if args.quick else (8, 3, 512, 512)
    torch.manual_seed(0)
    x = torch.rand(shape, device=dev)
    xg = x.clone().requires_grad_()
    x_np = x.cpu().numpy()
    kw = dict(repeat=args.repeat, warmup=1)

    if args.sweep:
        print("sigma taps direct fft")
        for sigma in (0.5, 1.0, 2.0, 4.0, 8.0, 12.0, 16.0, 24.0):
            taps = 2 * int(4 * sigma + 0.5) + 1
            td = timeit(lambda s=sigma: gaussian_blur(x, s, method="direct"), **kw)
            tf = timeit(lambda s=sigma: gaussian_blur(x, s, method="fft"), **kw)
            print(f"{sigma:5} {taps:4} {td * 1e3:8.1f} ms {tf * 1e3:8.1f} ms "
                  f"-> {'direct' if td < tf else 'fft'}", flush=True)
        print(f"current AUTO_DIRECT_MAX_TAPS = {gaussian.AUTO_DIRECT_MAX_TAPS} (both axes)")
        return

    bench = Bench(f"Gaussian blur, float32 {'x'.join(map(str, shape))}, reflect, "
                  f"{dev.type}")
    for sigma in (1.0, 4.0, 16.0):
        k = 2 * int(4 * sigma + 0.5) + 1

        def ours(t, s=sigma):
            return gaussian_blur(t, s)

        def korn(t, s=sigma, k=k):
            return kornia.filters.gaussian_blur2d(t, (k, k), (s, s), border_type="reflect")

        def scip(s=sigma):
            return ndi.gaussian_filter(x_np, s, mode="reflect", axes=(-2, -1))

        bench.compare(
            f"sigma={sigma:g} forward (k={k})", lambda f=ours: f(x),
            peers={"kornia": (lambda f=korn: f(x)) if kornia else None,
                   "scipy": (scip if ndi is not None and dev.type == "cpu" else None)},
            **kw)
        bench.compare(
            f"sigma={sigma:g} forward+backward", _fwd_bwd(ours, xg),
            peers={"kornia": _fwd_bwd(korn, xg) if kornia else None},
            **kw)
    a = np.random.default_rng(0).random((2, 3, 64, 80)).astype(np.float32)
    err = max(
        float(np.abs(gaussian_blur(torch.from_numpy(a), s).numpy()
                     - ndi.gaussian_filter(a.astype(np.float64), s, mode="reflect",
                                           axes=(-2, -1))).max())
        for s in (1.0, 4.0, 16.0)) if ndi is not None else float("nan")
    bench.note(f"max |ours - scipy| (float32, 2x3x64x80, sigma 1/4/16): {err:.1e}; "
               "scipy runs forward only (no autograd), on the CPU")
    bench.note(f"method='auto' is direct for <= {gaussian.AUTO_DIRECT_MAX_TAPS} taps "
               "(both axes together), FFT above")
    bench.report(write=not args.no_write)


if __name__ == "__main__":
    main()
