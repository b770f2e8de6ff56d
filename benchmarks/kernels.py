"""Kernel norm H(q, p) = 1/2 sum_ij exp(-|q_i - q_j|^2 / s^2) <p_i, p_j>: value + gradient.

Ours (:func:`difftransforms.ops.kernel_norm`, tiled, linear memory) vs the talk's dense
PyTorch code and pykeops (``LazyTensor``), ``D = 3``, float32, ``q, p ~ U[0, 1]^3``,
``s = 1`` (the talk's setting). Dense is skipped above ``--dense-limit-gb`` with a
``n/a (needs X GB)`` cell. pykeops' compile time is measured separately on its first call.
Peak memory of ours is measured in a fresh subprocess (RSS on CPU, ``max_memory_allocated``
on CUDA). A second table times the block-sparse mode (``eps``) at a small ``s``.

    python -m benchmarks.kernels --no-write                   # CPU, N = 1e3 ... 1e5
    python -m benchmarks.kernels --device cuda --sizes 1e4 1e5 1e6
"""

from __future__ import annotations

import os
import time

import torch

from benchmarks._harness import Bench, parser, peak_rss_mb, setup_threads, timeit
from difftransforms.ops import kernel_norm

os.environ.setdefault("KEOPS_CACHE_FOLDER", "/tmp/keops_cache")


def dense_bytes(n: int, d: int = 3) -> float:
    """Memory of the talk's dense code: (N, N, D) differences + (N, N) sqd, K, grad buffers."""
    return 4.0 * n * n * (d + 4)


def dense_norm_and_grad(q: torch.Tensor, p: torch.Tensor, s: float):
    q = q.detach().requires_grad_()
    p = p.detach().requires_grad_()
    sqd = ((q[:, None, :] - q[None, :, :]) ** 2).sum(2)
    k = torch.exp(-sqd / s**2)
    h = 0.5 * torch.dot(p.view(-1), (k @ p).view(-1))
    return torch.autograd.grad(h, [q, p])


def ours_norm_and_grad(q: torch.Tensor, p: torch.Tensor, s: float, **kw):
    q = q.detach().requires_grad_()
    p = p.detach().requires_grad_()
    h = kernel_norm(q, p, s, **kw)
    return torch.autograd.grad(h, [q, p])


def keops_fn():
    try:
        import pykeops

        pykeops.set_verbose(False)
        try:
            pykeops.set_build_folder(os.path.join(os.environ["KEOPS_CACHE_FOLDER"], "build"))
        except Exception:
            pass
        from pykeops.torch import LazyTensor
    except Exception:
        return None

    def run(q: torch.Tensor, p: torch.Tensor, s: float):
        q = q.detach().requires_grad_()
        p = p.detach().requires_grad_()
        qi, qj = LazyTensor(q[:, None, :]), LazyTensor(q[None, :, :])
        kij = (-((qi - qj) ** 2).sum(-1) / s**2).exp()
        a = (kij * LazyTensor(p[None, :, :])).sum(dim=1)
        h = 0.5 * (p * a).sum()
        return torch.autograd.grad(h, [q, p])

    return run


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def peak_memory_mb(n: int, device: str, extra: str = "") -> float:
    setup = (
        "import torch\nfrom difftransforms.ops import kernel_norm\n"
        f"torch.manual_seed(0)\nq = torch.rand({n}, 3, device='{device}')\n"
        f"p = torch.rand({n}, 3, device='{device}')\n"
        "q.requires_grad_(); p.requires_grad_()\n"
        f"h = kernel_norm(q[:64], p[:64], 1.0{extra})\n"  # warm-up: lazy imports, allocator
    )
    body = (
        f"h = kernel_norm(q, p, 1.0{extra})\ng = torch.autograd.grad(h, [q, p])\n"
    )
    if device.startswith("cuda"):
        code = (setup + "torch.cuda.reset_peak_memory_stats()\nb0 = torch.cuda.memory_allocated()\n"
                + body + "print('PEAK_KB', (torch.cuda.max_memory_allocated() - b0) // 1024)\n")
        import subprocess
        import sys

        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                             env={**os.environ, "PYTHONPATH": os.getcwd()})
        for line in out.stdout.splitlines():
            if line.startswith("PEAK_KB"):
                return int(line.split()[1]) / 1024.0
        raise RuntimeError(out.stderr[-2000:])
    # reset the RSS high-water mark first (Linux >= 4.0): import-time peaks (torch alone
    # peaks at ~500 MB) would otherwise hide allocations smaller than them
    reset = ("try:\n    open('/proc/self/clear_refs', 'w').write('5')\n"
             "except OSError:\n    pass\n")
    return peak_rss_mb(setup + reset + "#--measure--\n" + body)


def main() -> None:
    ap = parser(__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=float, nargs="+", default=None,
                    help="values of N (default 1e3 2e3 5e3 1e4 2e4 5e4 1e5; 1e6 too on CUDA)")
    ap.add_argument("--dense-limit-gb", type=float, default=4.0,
                    help="skip dense when it would need more memory than this")
    ap.add_argument("--no-keops", action="store_true", help="skip pykeops")
    ap.add_argument("--keops-max-n", type=float, default=5e4,
                    help="largest N timed with pykeops (slow on CPU)")
    ap.add_argument("--no-memory", action="store_true", help="skip the memory subprocesses")
    ap.add_argument("--no-sparse", action="store_true", help="skip the block-sparse table")
    args = ap.parse_args()
    setup_threads(args.threads)
    dev = args.device
    if args.sizes:
        sizes = [int(s) for s in args.sizes]
    elif args.quick:
        sizes = [1000, 5000]
    else:
        sizes = [1000, 2000, 5000, 10_000, 20_000, 50_000, 100_000]
        if dev.startswith("cuda"):
            sizes += [200_000, 500_000, 1_000_000]
    s = 1.0
    keops = None if args.no_keops else keops_fn()
    keops_label = "pykeops" if not args.no_keops else None
    bench = Bench(f"Kernel norm value + gradient (q, p), D = 3, float32, {dev}")
    mem = Bench(f"Kernel norm value + gradient: peak memory of ours, {dev}",
                unit_note="peak memory growth in MB (fresh process)")
    compiled = False
    for n in sizes:
        torch.manual_seed(0)
        q = torch.rand(n, 3, device=dev)
        p = torch.rand(n, 3, device=dev)
        big = n >= 20_000
        kw = dict(warmup=1 if big else 2, repeat=3 if big else args.repeat, max_seconds=30.0)
        t_ours = timeit(lambda q=q, p=p: ours_norm_and_grad(q, p, s), **kw)
        peers: dict[str, float | str] = {}
        need = dense_bytes(n) / 1e9
        if need > args.dense_limit_gb:
            peers["dense torch"] = f"n/a (needs {need:.0f} GB)"
        else:
            try:
                peers["dense torch"] = timeit(lambda q=q, p=p: dense_norm_and_grad(q, p, s), **kw)
            except RuntimeError as e:  # out of memory
                peers["dense torch"] = f"failed: {str(e)[:40]}"
        if keops_label is not None:
            if keops is None:
                peers[keops_label] = "not installed"
            elif n > args.keops_max_n:
                peers[keops_label] = f"skipped (N > {args.keops_max_n:.0e})"
            else:
                try:
                    if not compiled:
                        t0 = time.perf_counter()
                        keops(q[:100], p[:100], s)
                        sync(dev)
                        bench.note(f"pykeops compile + first call: "
                                   f"{time.perf_counter() - t0:.1f} s (excluded from timings)")
                        compiled = True
                    # compiled already: at large N one call is enough (minutes on CPU)
                    peers[keops_label] = timeit(lambda q=q, p=p: keops(q, p, s),
                                                warmup=0 if big else 1,
                                                repeat=1 if n >= 50_000 else 3,
                                                max_seconds=60.0)
                except Exception as e:
                    peers[keops_label] = f"failed: {type(e).__name__}"
        bench.add(f"N = {n:,}", t_ours, peers)
        if not args.no_memory:
            try:
                ours_mb = peak_memory_mb(n, dev)
            except Exception as e:
                print("memory probe failed:", e)
                ours_mb = None
            mpeer: dict[str, float | str] = {"dense torch (estimate)": dense_bytes(n) / 2**20}
            mem.add(f"N = {n:,}", ours_mb, mpeer)
    bench.note("ours: difftransforms.ops.kernel_norm (one symmetric tiled sweep computes H, "
               "dH/dq, dH/dp); dense: the talk's code; pykeops: LazyTensor, same formula.")
    write = not args.no_write
    bench.report(write=write)
    if mem.rows:
        mem.note("dense column: analytic estimate 4 N^2 (D + 4) bytes, not measured; "
                 "ratio = dense / ours")
        mem.report(write=write, fmt=lambda v: "n/a" if v is None else f"{v:,.1f} MB")
    if not args.no_sparse:
        sparse_table(dev, sizes, args, write)


def sparse_table(dev: str, sizes: list[int], args, write: bool) -> None:
    """Small sigma: block-sparse (eps = 1e-4) vs exact tiled, same function call."""
    from difftransforms.ops.kernel_reduction import sparsity_stats

    s = 0.02
    bench = Bench(f"Kernel norm value + gradient, small sigma = {s} in the unit cube, {dev}: "
                  "block-sparse (eps = 1e-4) vs exact tiled")
    for n in sizes:
        if n < 20_000:
            continue
        torch.manual_seed(0)
        q = torch.rand(n, 3, device=dev)
        p = torch.rand(n, 3, device=dev)
        big = n >= 50_000
        kw = dict(warmup=1, repeat=3 if big else args.repeat, max_seconds=30.0)
        st = sparsity_stats(q, q, p, "gaussian", s, 1e-4, block_size=256)
        t_sp = timeit(lambda q=q, p=p: ours_norm_and_grad(q, p, s, eps=1e-4), **kw)
        exact = (timeit(lambda q=q, p=p: ours_norm_and_grad(q, p, s), **kw)
                 if n <= 100_000 or dev.startswith("cuda") else None)
        bench.add(f"N = {n:,} (pairs evaluated: {100 * st['density']:.1f}%)", t_sp,
                  {"ours exact (tiled)": exact if exact is not None else "skipped"})
    bench.note("max-norm error of a = K p guaranteed <= eps (sum of skipped tile bounds "
               "exp(-d_min^2/s^2) * sum_J |p_j|)")
    bench.report(write=write)


if __name__ == "__main__":
    main()
