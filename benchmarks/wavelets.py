"""Fast wavelet transform: difftransforms vs PyWavelets, ptwt and pytorch_wavelets.

    python -m benchmarks.wavelets [--quick] [--threads N] [--no-write]

db2, 3 levels, float32, modes periodization and symmetric, on 8x3x512x512 and
1x1x2048x2048: decomposition (wavedec2), reconstruction (waverec2) and decomposition
forward + backward (loss = sum of all coefficients). Every peer is timed in the same run.
ptwt has no periodization mode (its 'periodic' is another transform), so it is only timed
in symmetric mode; PyWavelets has no backward.
"""

from __future__ import annotations

import numpy as np
import pywt
import torch

from benchmarks._harness import Bench, parser, setup_threads
from difftransforms.wavelets import kernels_available, kernels_load_error, wavedec2, waverec2

WAVE, LEVEL = "db2", 3


def _flat(coeffs: list) -> list[torch.Tensor]:
    return [coeffs[0], *[d for lev in coeffs[1:] for d in lev]]


def _loss(ts: list[torch.Tensor]) -> torch.Tensor:
    return sum(t.sum() for t in ts)  # type: ignore[return-value]


def peers_for(x: torch.Tensor, mode: str) -> dict[str, dict[str, object]]:
    xn = x.numpy()
    out: dict[str, dict[str, object]] = {"dec": {}, "rec": {}, "fb": {}}
    # PyWavelets (numpy, batched over leading axes, single-threaded C)
    pc = pywt.wavedec2(xn, WAVE, mode=mode, level=LEVEL, axes=(-2, -1))
    out["dec"]["pywt"] = lambda: pywt.wavedec2(xn, WAVE, mode=mode, level=LEVEL, axes=(-2, -1))
    out["rec"]["pywt"] = lambda: pywt.waverec2(pc, WAVE, mode=mode, axes=(-2, -1))
    # no autograd in PyWavelets: no fwd+bwd cell
    # pytorch_wavelets
    try:
        from pytorch_wavelets import DWTForward, DWTInverse

        fwd = DWTForward(J=LEVEL, wave=WAVE, mode=mode)
        inv = DWTInverse(wave=WAVE, mode=mode)
        yl, yh = fwd(x)
        out["dec"]["pytorch_wavelets"] = lambda: fwd(x)
        out["rec"]["pytorch_wavelets"] = lambda: inv((yl, yh))

        def ptw_fb() -> None:
            xr = x.detach().requires_grad_()
            lo, hi = fwd(xr)
            (lo.sum() + sum(h.sum() for h in hi)).backward()

        out["fb"]["pytorch_wavelets"] = ptw_fb
    except ImportError:
        for k in out:
            out[k]["pytorch_wavelets"] = None
    # ptwt
    try:
        import ptwt

        if mode == "periodization":  # no such mode in ptwt: leave its cells empty
            return out
        pt = ptwt.wavedec2(x, pywt.Wavelet(WAVE), mode=mode, level=LEVEL)
        out["dec"]["ptwt"] = lambda: ptwt.wavedec2(x, pywt.Wavelet(WAVE), mode=mode, level=LEVEL)
        out["rec"]["ptwt"] = lambda: ptwt.waverec2(pt, pywt.Wavelet(WAVE))

        def ptwt_fb() -> None:
            xr = x.detach().requires_grad_()
            c = ptwt.wavedec2(xr, pywt.Wavelet(WAVE), mode=mode, level=LEVEL)
            _loss([c[0], *[d for lev in c[1:] for d in lev]]).backward()

        out["fb"]["ptwt"] = ptwt_fb
    except ImportError:
        for k in out:
            out[k]["ptwt"] = None
    return out


def main() -> None:
    args = parser(__doc__ or "").parse_args()
    setup_threads(args.threads)
    torch.manual_seed(0)
    shapes = [(2, 3, 256, 256), (1, 1, 512, 512)] if args.quick else \
        [(8, 3, 512, 512), (1, 1, 2048, 2048)]
    bench = Bench("Fast wavelet transform (db2, 3 levels, float32)")
    if not kernels_available():
        bench.note(f"C++ kernels NOT in use ({kernels_load_error()}): pure-PyTorch fallback")
    for shape in shapes:
        x = torch.randn(*shape, dtype=torch.float32, device=args.device)
        label = "x".join(map(str, shape))
        for mode in ("periodization", "symmetric"):
            ours_c = wavedec2(x, WAVE, level=LEVEL, mode=mode)
            ref = pywt.wavedec2(x.numpy(), WAVE, mode=mode, level=LEVEL, axes=(-2, -1))
            err = float(np.abs(ours_c[0].numpy() - ref[0]).max())
            assert err < 1e-3, f"benchmark sanity: cA differs from pywt by {err}"

            def ours_fb(x: torch.Tensor = x, mode: str = mode) -> None:
                xr = x.detach().requires_grad_()
                _loss(_flat(wavedec2(xr, WAVE, level=LEVEL, mode=mode))).backward()

            peers = peers_for(x, mode)
            kw = {"repeat": args.repeat}
            bench.compare(f"{label} {mode} decomposition",
                          lambda x=x, mode=mode: wavedec2(x, WAVE, level=LEVEL, mode=mode),
                          peers["dec"], **kw)
            bench.compare(f"{label} {mode} reconstruction",
                          lambda c=ours_c, mode=mode: waverec2(c, WAVE, mode=mode),
                          peers["rec"], **kw)
            bench.compare(f"{label} {mode} decomposition fwd+bwd", ours_fb, peers["fb"], **kw)
    bench.note("pywt: numpy wavedec2/waverec2 with axes=(-2, -1) on the whole batch "
               "(no autograd); ptwt: no periodization mode; pytorch_wavelets: "
               "DWTForward/DWTInverse")
    bench.report(write=not args.no_write)


if __name__ == "__main__":
    main()
