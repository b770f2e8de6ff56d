"""Scattering2D / ScatteringMoments vs kymatio 0.3 (torch frontend), CPU by default.

    python -m benchmarks.scattering --threads 1 [--quick] [--no-write] [--no-memory]

Times forward and forward+backward of ``Scattering2D`` (reflect padding, equal to
kymatio's output) and of ``ScatteringMoments`` against kymatio's ``Scattering2D`` in the
same run, the peak memory of forward+backward of each in its own process, and the filter
bank construction. kymatio objects are built outside the timed regions.
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from benchmarks._harness import ROOT, Bench, parser, peak_rss_mb, setup_threads

try:  # kymatio's public entry point fails with scipy >= 1.17; the frontend class works
    from kymatio.scattering2d.filter_bank import filter_bank as kymatio_filter_bank
    from kymatio.scattering2d.frontend.torch_frontend import ScatteringTorch2D
except Exception:  # pragma: no cover - reported in the table
    ScatteringTorch2D = None
    kymatio_filter_bank = None

from difftransforms.scattering import (
    Scattering2D,
    ScatteringMoments,
    get_backend,
    morlet_filter_bank,
)

CASES = [((1, 1, 256, 256), 4), ((8, 3, 256, 256), 4), ((1, 1, 512, 512), 5)]
QUICK = [((1, 1, 64, 64), 3), ((2, 3, 64, 64), 3)]

_MEM = """
import torch
{threads}
S = torch.load({path!r}, weights_only=False)
x = torch.rand({shape}, requires_grad=True)
# one-time costs out of the measured region, the same for both libraries: the compiled
# ops library (loaded lazily by an unpickled module: the .so and its registrations) and
# the first FFT/autograd call
from difftransforms.ops.modconv import compiled_available
compiled_available()
_w = torch.rand(2, 8, 8, requires_grad=True)
torch.fft.ifft2(torch.fft.fft2(_w)).abs().sum().backward()
del _w
#--measure--
S(x).sum().backward()
"""



# glibc's malloc keeps freed heap memory mapped (its mmap threshold rises with the largest
# block freed, so later blocks come from a heap that is rarely trimmed): peak RSS then also
# measures the allocator's fragmentation, and varies from run to run. A fixed threshold makes
# big blocks go back to the system when freed, so peak RSS tracks the memory a library holds.
FIXED_MMAP = {"MALLOC_MMAP_THRESHOLD_": "262144"}


def _peak_mb(code: str, env: dict[str, str] | None = None) -> float:
    """Peak RSS growth (MB) of the part of ``code`` after ``#--measure--``, in a fresh process.

    Like ``_harness.peak_rss_mb`` but the high-water mark is reset (``/proc/self/clear_refs``)
    at the marker, so that neither imports nor the parent's footprint (``ru_maxrss`` is
    inherited through fork) hide the growth; falls back to the harness elsewhere.
    """
    if not Path("/proc/self/clear_refs").exists():
        return peak_rss_mb(code)
    before, _, after = code.partition("#--measure--")

    def kb(field: str) -> str:
        return (f"int([l for l in open('/proc/self/status') if l.startswith('{field}:')][0]"
                f".split()[1])")

    script = (before + "\nimport gc; gc.collect()\n"
              "open('/proc/self/clear_refs', 'w').write('5')\n"
              f"_b = {kb('VmRSS')}\n" + after + f"\n_a = {kb('VmHWM')}\n"
              "print('PEAK_KB', _a - _b)\n")
    out = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True,
                         text=True, env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})})
    for line in out.stdout.splitlines():
        if line.startswith("PEAK_KB"):
            return int(line.split()[1]) / 1024.0
    raise RuntimeError(f"memory probe failed:\n{out.stderr[-2000:]}")


def _fwd_bwd(f, x):
    def run():
        x.grad = None
        f(x).sum().backward()
    return run


def _case(bench: Bench, membench: Bench, args, backend, threads: str, shape, J: int,
          kw: dict) -> None:
    B, C, H, W = shape
    tag = f"{B}x{C}x{H}x{W} J={J}"
    x = torch.rand(shape, device=args.device)
    ours = Scattering2D(J, (H, W), L=8, backend=backend).to(args.device)
    fast = Scattering2D(J, (H, W), L=8, backend=backend, memory_efficient=False).to(args.device)
    mom = ScatteringMoments(J, L=8, backend=backend)
    kym = None
    if ScatteringTorch2D is not None:
        t0 = time.perf_counter()
        kym = ScatteringTorch2D(J, (H, W), L=8, max_order=2).to(args.device)
        bench.note(f"kymatio Scattering2D construction for {H}x{W} J={J}: "
                   f"{time.perf_counter() - t0:.1f} s (not timed below)")
        with torch.no_grad():
            err = ((ours(x) - kym(x)).abs().max() / kym(x).abs().max()).item()
        bench.note(f"{tag}: max |ours - kymatio| / max |kymatio| = {err:.1e}")
    peers = {"kymatio": (lambda: kym(x)) if kym is not None else None}
    if not args.no_time:
        _time_case(bench, ours, fast, mom, kym, x, peers, tag, kw)
    if args.no_memory or args.device != "cpu":
        return
    _memory_case(membench, ours, fast, mom, kym, threads, shape, tag)


def _time_case(bench: Bench, ours, fast, mom, kym, x, peers, tag: str, kw: dict) -> None:
    with torch.no_grad():
        bench.compare(f"Scattering2D fwd {tag}", lambda: ours(x), peers, **kw)
        bench.compare(f"ScatteringMoments fwd {tag}", lambda: mom(x), peers, **kw)
    xg = x.clone().requires_grad_(True)
    peers_bwd = {"kymatio": _fwd_bwd(kym, xg) if kym is not None else None}
    bench.compare(f"Scattering2D fwd+bwd {tag}", _fwd_bwd(ours, xg), peers_bwd, **kw)
    bench.compare(f"Scattering2D(memory_efficient=False) fwd+bwd {tag}", _fwd_bwd(fast, xg),
                  peers_bwd, **kw)
    bench.compare(f"ScatteringMoments fwd+bwd {tag}", _fwd_bwd(mom, xg), peers_bwd, **kw)


def _memory_case(membench: Bench, ours, fast, mom, kym, threads: str, shape,
                 tag: str) -> None:
    # the objects are pickled and loaded by the probes, so that filter construction (and
    # its temporaries) does not count: only what forward+backward allocates
    tmp = Path(tempfile.mkdtemp(prefix="dt_scat_bench_"))
    objs = {"ours": ours, "fast": fast, "moments": mom, "kymatio": kym}
    try:
        for env_name, env in (("", None), (" [fixed mmap threshold]", FIXED_MMAP)):
            mem: dict[str, float | str] = {}
            for name, obj in objs.items():
                if obj is None:
                    mem[name] = "not installed"
                    continue
                path = tmp / f"{name}.pt"
                if not path.exists():
                    torch.save(obj, path)
                code = _MEM.format(threads=threads, path=str(path), shape=shape)
                try:  # median of 3 fresh processes: peak RSS varies between identical runs
                    mem[name] = statistics.median(_peak_mb(code, env) for _ in range(3))
                except RuntimeError as e:
                    mem[name] = f"failed: {str(e).splitlines()[-1][:60]}"
            for name, label in (("ours", "Scattering2D"),
                                ("fast", "Scattering2D(memory_efficient=False)"),
                                ("moments", "ScatteringMoments")):
                v = mem[name]
                membench.add(f"{label} fwd+bwd {tag}{env_name}",
                             v if isinstance(v, float) else None, {"kymatio": mem["kymatio"]})
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--backend", default="auto", help="auto | reference | compiled")
    p.add_argument("--no-memory", action="store_true", help="skip the peak-memory probes")
    p.add_argument("--no-time", action="store_true",
                   help="skip the timings (peak-memory probes and filter banks only)")
    p.add_argument("--case", type=int, action="append",
                   help="run only these case indices (0: 1x1x256² J=4, 1: 8x3x256² J=4, "
                        "2: 1x1x512² J=5); repeatable")
    args = p.parse_args()
    setup_threads(args.threads)
    threads = f"torch.set_num_threads({args.threads})" if args.threads else ""
    backend = get_backend(args.backend)
    cases = QUICK if args.quick else CASES
    if args.case:
        cases = [cases[i] for i in args.case]
    bench = Bench(f"Scattering2D / ScatteringMoments vs kymatio 0.3, L=8, order 2, float32, "
                  f"{args.device}")
    bench.note(f"difftransforms backend: {backend.name}")
    membench = Bench("Scattering2D / ScatteringMoments vs kymatio 0.3: peak memory of "
                     "forward+backward, float32, cpu",
                     unit_note="peak RSS increase of a fresh process")
    membench.note("'speed-up' column here = kymatio's memory / ours (> 1: we use less)")
    membench.note("rows marked [fixed mmap threshold] run both libraries with "
                  "MALLOC_MMAP_THRESHOLD_=262144, so that peak RSS is the memory each one "
                  "holds rather than what glibc's heap keeps cached (default rows)")
    kw = {"repeat": args.repeat, "max_seconds": 30.0}

    for shape, J in cases:
        _case(bench, membench, args, backend, threads, shape, J, kw)

    # filter construction
    fb_shape, fb_J = ((288, 288), 4) if not args.quick else ((80, 80), 3)
    peer_fb = None
    if kymatio_filter_bank is not None:
        def peer_fb():
            return kymatio_filter_bank(fb_shape[0], fb_shape[1], fb_J, 8)
    bench.compare(f"filter bank {fb_shape[0]}x{fb_shape[1]} J={fb_J} L=8 (padded 256², J=4)",
                  lambda: morlet_filter_bank(fb_shape, fb_J, 8),
                  {"kymatio": peer_fb}, warmup=0, repeat=1)
    bench.compare("filter bank 512x512 J=6 L=8 (ours only)",
                  lambda: morlet_filter_bank((512, 512), 6, 8), {}, warmup=1, repeat=3)
    c0 = time.process_time()
    morlet_filter_bank((512, 512), 6, 8)
    bench.note(f"filter bank 512x512 J=6 L=8: {time.process_time() - c0:.2f} s of CPU time "
               f"(wall time above includes waiting for a busy machine)")
    bench.report(write=not args.no_write)
    if membench.rows:
        membench.report(write=not args.no_write,
                        fmt=lambda v: "n/a" if v is None else f"{v:.0f} MB")


if __name__ == "__main__":
    main()
