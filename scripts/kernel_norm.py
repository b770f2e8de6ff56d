"""The founding talk's benchmark: kernel norm + gradient, time and memory vs N (log-log).

H(q, p) = 1/2 sum_ij exp(-|q_i - q_j|^2 / s^2) <p_i, p_j> with q, p ~ U[0, 1]^(N x 3),
s = 1, float32, value + gradient w.r.t. (q, p), for

- difftransforms.ops.kernel_norm (tiled, linear memory),
- the talk's dense PyTorch code (skipped where it would need more than --dense-limit-gb or
  above --dense-max-n: it is slow and its memory is quadratic),
- pykeops LazyTensor (only with --keops: its first call compiles for minutes on a CPU).

Peak memory is measured in a fresh subprocess per point (RSS growth on CPU,
max_memory_allocated on CUDA). Prints a table and saves assets/figures/kernel_norm.png
(matplotlib, the ``examples`` extra; --output to change, --no-plot to skip).

    python scripts/kernel_norm.py                    # N = 1e3 ... 2e4, < 1 minute on CPU
    python scripts/kernel_norm.py --max-n 1e5 --keops
    python scripts/kernel_norm.py --device cuda --max-n 1e6 --dense-limit-gb 40
"""

from __future__ import annotations

import argparse
import math
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(ROOT))

from difftransforms.ops import kernel_norm  # noqa: E402

METHODS = ("difftransforms", "dense torch", "pykeops")


def dense_gb(n: int, d: int = 3) -> float:
    """Approximate memory of the talk's dense code: (N, N, D) differences + 4 (N, N)."""
    return 4.0 * n * n * (d + 4) / 1e9


def _ours(q, p, s):
    h = kernel_norm(q, p, s)
    return torch.autograd.grad(h, [q, p])


def _dense(q, p, s):
    sqd = ((q[:, None, :] - q[None, :, :]) ** 2).sum(2)
    h = 0.5 * torch.dot(p.view(-1), (torch.exp(-sqd / s**2) @ p).view(-1))
    return torch.autograd.grad(h, [q, p])


def _keops():
    os.environ.setdefault("KEOPS_CACHE_FOLDER", "/tmp/keops_cache")
    import pykeops

    pykeops.set_verbose(False)
    from pykeops.torch import LazyTensor

    def run(q, p, s):
        qi, qj = LazyTensor(q[:, None, :]), LazyTensor(q[None, :, :])
        a = ((-((qi - qj) ** 2).sum(-1) / s**2).exp() * LazyTensor(p[None, :, :])).sum(dim=1)
        h = 0.5 * (p * a).sum()
        return torch.autograd.grad(h, [q, p])

    return run


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def time_call(fn: Callable, n: int, device: str, repeat: int) -> float:
    """Median time of value + gradient at size ``n`` (one warm-up call)."""
    torch.manual_seed(0)
    q = torch.rand(n, 3, device=device, requires_grad=True)
    p = torch.rand(n, 3, device=device, requires_grad=True)
    fn(q, p, 1.0)
    _sync(device)
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn(q, p, 1.0)
        _sync(device)
        times.append(time.perf_counter() - t0)
    return sorted(times)[len(times) // 2]


_MEM_CODE = """
import resource, sys, torch
sys.path.insert(0, {root!r})
import importlib.util
spec = importlib.util.spec_from_file_location("kn", {script!r})
kn = importlib.util.module_from_spec(spec); spec.loader.exec_module(kn)
fn = {{"difftransforms": kn._ours, "dense torch": kn._dense}}[{method!r}]
dev = {device!r}
q = torch.rand({n}, 3, device=dev, requires_grad=True)
p = torch.rand({n}, 3, device=dev, requires_grad=True)
fn(q[:64].detach().requires_grad_(), p[:64].detach().requires_grad_(), 1.0)
if dev.startswith("cuda"):
    torch.cuda.synchronize(); torch.cuda.reset_peak_memory_stats()
    b = torch.cuda.memory_allocated()
    fn(q, p, 1.0); torch.cuda.synchronize()
    print("PEAK_MB", (torch.cuda.max_memory_allocated() - b) / 2**20)
else:
    def status(key):
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(key):
                    return int(line.split()[1])
    try:  # reset the RSS high-water mark (Linux >= 4.0) so import-time peaks do not hide ours
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        b = status("VmRSS:")
        fn(q, p, 1.0)
        print("PEAK_MB", (status("VmHWM:") - b) / 1024)
    except OSError:
        b = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        fn(q, p, 1.0)
        print("PEAK_MB", (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - b) / 1024)
"""


def peak_memory_mb(method: str, n: int, device: str) -> float | None:
    code = _MEM_CODE.format(root=str(ROOT), script=str(Path(__file__).resolve()),
                            method=method, device=device, n=n)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    for line in out.stdout.splitlines():
        if line.startswith("PEAK_MB"):
            return float(line.split()[1])
    return None


def sizes_up_to(max_n: int) -> list[int]:
    out = []
    for e in range(2, 8):
        for m in (1, 2, 5):
            v = m * 10**e
            if 1000 <= v <= max_n:
                out.append(v)
    if max_n not in out and max_n >= 1000:
        out.append(max_n)
    return out


def run(sizes: list[int], device: str, *, keops: bool, dense_limit_gb: float,
        dense_max_n: int, memory: bool, repeat: int) -> dict[str, dict[int, dict[str, float]]]:
    fns: dict[str, Callable] = {"difftransforms": _ours, "dense torch": _dense}
    if keops:
        try:
            fns["pykeops"] = _keops()
        except Exception as e:  # not installed / cannot build: reported, not hidden
            print(f"pykeops unavailable: {type(e).__name__}: {e}", file=sys.stderr)
    res: dict[str, dict[int, dict[str, float]]] = {k: {} for k in fns}
    for n in sizes:
        row = [f"N = {n:>9,}"]
        for name, fn in fns.items():
            if name == "dense torch" and (dense_gb(n) > dense_limit_gb or n > dense_max_n):
                row.append(f"{name}: n/a (needs ~{dense_gb(n):.1f} GB)")
                continue
            if name == "pykeops" and not res[name]:
                t0 = time.perf_counter()
                small = torch.rand(100, 3, device=device, requires_grad=True)
                fn(small, small.detach().clone().requires_grad_(), 1.0)
                print(f"pykeops compile + first call: {time.perf_counter() - t0:.1f} s",
                      flush=True)
            t = time_call(fn, n, device, repeat if n < 20_000 else 1)
            res[name][n] = {"time": t}
            cell = f"{name}: {t * 1e3:9.1f} ms"
            if memory and name != "pykeops":
                mb = peak_memory_mb(name, n, device)
                if mb is not None:
                    res[name][n]["memory"] = mb
                    cell += f" / {mb:7.1f} MB"
            row.append(cell)
        print(" | ".join(row), flush=True)
    return res


def plot(res, device: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    has_mem = any("memory" in v for r in res.values() for v in r.values())
    fig, axes = plt.subplots(1, 2 if has_mem else 1, figsize=(12 if has_mem else 6.5, 4.5))
    axes = list(axes) if has_mem else [axes]
    style = {"difftransforms": "o-", "dense torch": "s--", "pykeops": "^-."}
    for name, r in res.items():
        ns = sorted(r)
        if not ns:
            continue
        axes[0].loglog(ns, [r[n]["time"] for n in ns], style[name], label=name)
        if has_mem:
            mn = [n for n in ns if "memory" in r[n]]
            if mn:
                axes[1].loglog(mn, [max(r[n]["memory"], 0.1) for n in mn], style[name],
                               label=name)
    axes[0].set_title(f"kernel norm + gradient, D = 3, float32 ({device})")
    axes[0].set_ylabel("time (s)")
    if has_mem:
        axes[1].set_title("peak memory growth (fresh process)")
        axes[1].set_ylabel("MB")
    for ax in axes:
        ax.set_xlabel("number of points N")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=path.suffix, dir=path.parent)
    os.close(fd)
    try:
        fig.savefig(tmp, dpi=120, bbox_inches="tight")
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--max-n", type=float, default=2e4, help="largest N (default 2e4)")
    ap.add_argument("--sizes", type=float, nargs="+", default=None,
                    help="explicit list of N (overrides --max-n)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--keops", action="store_true", help="include pykeops (compiles first)")
    ap.add_argument("--dense-limit-gb", type=float, default=4.0)
    ap.add_argument("--dense-max-n", type=float, default=5000,
                    help="largest N for the (slow) dense code (default 5000)")
    ap.add_argument("--no-memory", action="store_true", help="skip memory measurements")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    ap.add_argument("--output", type=Path, default=ROOT / "assets" / "figures" / "kernel_norm.png")
    ap.add_argument("--no-plot", action="store_true")
    args = ap.parse_args(argv)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("error: --device cuda but no CUDA GPU is available; use --device cpu",
              file=sys.stderr)
        return 2
    if args.threads:
        torch.set_num_threads(args.threads)
    sizes = [int(s) for s in args.sizes] if args.sizes else sizes_up_to(int(args.max_n))
    if not sizes or min(sizes) < 1:
        print("error: need at least one size >= 1 (e.g. --max-n 1e4)", file=sys.stderr)
        return 2
    res = run(sizes, args.device, keops=args.keops, dense_limit_gb=args.dense_limit_gb,
              dense_max_n=int(args.dense_max_n), memory=not args.no_memory,
              repeat=max(1, args.repeat))
    ours = res["difftransforms"]
    if "dense torch" in res:
        common = [n for n in res["dense torch"] if n in ours]
        for n in common:
            r = res["dense torch"][n]["time"] / ours[n]["time"]
            print(f"N = {n:,}: ours is {r:.1f}x faster than dense")
    if len(ours) >= 2:
        ns = sorted(ours)
        slope = math.log(ours[ns[-1]]["time"] / ours[ns[0]]["time"]) / math.log(ns[-1] / ns[0])
        print(f"time ~ N^{slope:.2f} for ours (quadratic work, linear memory)")
    if not args.no_plot:
        try:
            plot(res, args.device, args.output)
            print(f"saved {args.output}")
        except ImportError:
            print("matplotlib not installed (pip install 'difftransforms[examples]'): no plot",
                  file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
