"""Compiled filter_fold / modulus ops vs the pure-PyTorch reference (same run, same inputs).

Shapes are those of a J=4, L=8 scattering transform of a batch of B=4 RGB images: one call
per (resolution, fold factor) with F = L = 8 filters; order 1 has N = B*C = 12 signals,
order 2 has N = B*C*L = 96 signals (the order-1 moduli at resolution 2^-j1).
The reference materialises the (N, F, H, W) full-resolution product then folds it with a
reshape-mean; the compiled op folds while multiplying and reads the missing half spectrum
through Hermitian symmetry.

    python -m benchmarks.ops [--quick] [--threads N] [--device cuda] [--no-write]
"""

from __future__ import annotations

import textwrap

import torch

from benchmarks._harness import Bench, parser, peak_rss_mb, setup_threads
from difftransforms.ops import _build, filter_fold, modulus


def _case(N: int, F: int, H: int, W: int, device: str, dtype=torch.float32, morlet_j=None):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(N, H, W, dtype=dtype, generator=g)
    xhat = torch.fft.rfft2(x).to(device)
    if morlet_j is None:  # dense random filters: no block is skipped
        filters = torch.rand(F, H, W, dtype=dtype, generator=g).to(device)
    else:  # the real J=4, L=F Morlet bank at scale j (exactly zero on most aliased blocks)
        from difftransforms.scattering.filter_bank import morlet_filter_bank

        bank = morlet_filter_bank((H, W), J=4, L=F, dtype=dtype, levels=False)
        filters = bank.psi[morlet_j].contiguous().to(device)
    return xhat, filters


def _morlet_j(name: str, k: int) -> int | None:
    return k.bit_length() - 1 if "Morlet" in name else None


def _fwd(xhat, filters, W, k, backend):
    return lambda: filter_fold(xhat, filters, W, k, backend=backend)


def _fwd_bwd(xhat, filters, W, k, backend, grad):
    x = xhat.detach().requires_grad_(True)

    def run():
        out = filter_fold(x, filters, W, k, backend=backend)
        out.backward(grad)
        x.grad = None

    return run


_MEM_CODE = """
import torch
from difftransforms.ops import filter_fold
torch.set_num_threads({threads})
N, F, H, W, k = {N}, {F}, {H}, {W}, {k}
xhat = torch.randn(N, H, W // 2 + 1, dtype=torch.complex64, requires_grad=True)
filters = torch.rand(F, H, W)
grad = torch.randn(N, F, H // k, W // k, dtype=torch.complex64)
filter_fold(xhat[:1, :8, :5].detach(), filters[:, :8, :8], 8, 1, backend={backend!r})
#--measure--
out = filter_fold(xhat, filters, W, k, backend={backend!r})
out.backward(grad)
"""


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    args = p.parse_args()
    setup_threads(args.threads)
    device = args.device
    if not _build.compiled_available(device.split(":")[0]):
        raise SystemExit(f"compiled {device} ops unavailable: "
                         f"{_build.status()[device.split(':')[0]].reason}")
    B, C, L = 4, 3, 8
    if args.quick:
        cases = [("128² order 1, j=1", B * C, 128, 2), ("128² order 2, j1=0 j2=2", 24, 128, 4),
                 ("128² order 1, j=3, Morlet bank", B * C, 128, 8)]
    else:
        cases = [
            ("256² order 1, j=1", B * C, 256, 2),
            ("256² order 2, j1=0 j2=2", B * C * L, 256, 4),
            ("512² order 1, j=0", B * C, 512, 1),
            ("512² order 2, j1=1 j2=2 (at 256²)", B * C * L, 256, 2),
            ("256² order 1, j=3, Morlet bank", B * C, 256, 8),
        ]
    mem = None
    if device == "cpu":
        # Probe memory FIRST: Linux keeps a process's peak RSS across fork+exec, so a child
        # spawned after the big timing runs would inherit that peak as its baseline.
        threads = torch.get_num_threads()
        mem_cases = cases[1:2] if args.quick else [cases[1], cases[3]]
        mem = Bench("Scattering filter-fold op: peak memory of forward+backward (RSS growth)",
                    unit_note="peak RSS increase in MB (smaller is better)")
        for name, N, H, k in mem_cases:
            res = {}
            for backend in ("compiled", "reference"):
                code = textwrap.dedent(_MEM_CODE).format(threads=threads, N=N, F=L, H=H, W=H,
                                                         k=k, backend=backend)
                res[backend] = peak_rss_mb(code)
            mem.add(f"{name}: N={N}, k={k}", res["compiled"], {"reference": res["reference"]})

    kw = {"repeat": args.repeat, "max_seconds": 20.0}
    bench = Bench(f"Scattering filter-fold op, float32, {device} (N signals x F={L} filters)")
    bench.note("random dense filters unless 'Morlet bank' (the real J=4, L=8 bank at scale j, "
               "exactly zero on most aliased blocks, which the kernels skip)")
    for name, N, H, k in cases:
        xhat, filters = _case(N, L, H, H, device, morlet_j=_morlet_j(name, k))
        grad = torch.randn(N, L, H // k, H // k, dtype=torch.complex64, device=device)
        label = f"{name}: N={N}, k={k}"
        bench.compare(f"{label}, forward", _fwd(xhat, filters, H, k, "compiled"),
                      {"reference": _fwd(xhat, filters, H, k, "reference")}, **kw)
        bench.compare(f"{label}, forward+backward",
                      _fwd_bwd(xhat, filters, H, k, "compiled", grad),
                      {"reference": _fwd_bwd(xhat, filters, H, k, "reference", grad)}, **kw)
        del xhat, filters, grad

    n_mod = 24 if args.quick else 96
    z = torch.randn(n_mod, L, 128, 128, dtype=torch.complex64, device=device)
    zr = z.clone().requires_grad_(True)
    gm = torch.rand(n_mod, L, 128, 128, device=device)

    def mod_fb(backend):
        def run():
            modulus(zr, backend=backend).backward(gm)
            zr.grad = None
        return run

    bench.compare(f"modulus {n_mod}x{L}x128², forward+backward", mod_fb("compiled"),
                  {"torch.abs (reference)": mod_fb("reference")}, **kw)

    if mem is not None:
        bench.report(write=not args.no_write)
        mem.report(write=not args.no_write, fmt=lambda v: "n/a" if v is None else f"{v:.0f} MB")
    else:
        mem = Bench(f"Scattering filter-fold op: peak {device} memory of forward+backward",
                    unit_note="torch.cuda.max_memory_allocated growth in MB (smaller is better)")
        for name, N, H, k in cases:
            xhat, filters = _case(N, L, H, H, device, morlet_j=_morlet_j(name, k))
            grad = torch.randn(N, L, H // k, H // k, dtype=torch.complex64, device=device)
            res = {}
            for backend in ("compiled", "reference"):
                run = _fwd_bwd(xhat, filters, H, k, backend, grad)
                torch.cuda.synchronize()
                torch.cuda.reset_peak_memory_stats()
                base = torch.cuda.memory_allocated()
                run()
                torch.cuda.synchronize()
                res[backend] = (torch.cuda.max_memory_allocated() - base) / 2**20
            mem.add(f"{name}: N={N}, k={k}", res["compiled"], {"reference": res["reference"]})
            del xhat, filters, grad
        bench.report(write=not args.no_write)
        mem.report(write=not args.no_write, fmt=lambda v: "n/a" if v is None else f"{v:.0f} MB")


if __name__ == "__main__":
    main()
