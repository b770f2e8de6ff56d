"""Shared benchmark harness: warm-up, median of N, ratio vs a peer, markdown tables.

Usage::

    from benchmarks._harness import Bench
    bench = Bench("Gaussian blur, float32 8x3x512x512")
    bench.compare("sigma=4 forward", ours=lambda: f(x), peers={"kornia": lambda: g(x)})
    bench.report()          # prints the table and appends it to BENCHMARKS.md

``ratio`` is peer time / our time (> 1 means we are faster). A peer that is not installed
or fails is reported as such, never silently dropped.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
BENCHMARKS_MD = ROOT / "BENCHMARKS.md"


def _sync() -> None:
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()


def timeit(fn: Callable[[], object], *, warmup: int = 2, repeat: int = 7,
           max_seconds: float = 60.0) -> float:
    """Median wall time of ``fn()`` in seconds (CUDA synchronised), after ``warmup`` calls.

    Stops repeating early once ``max_seconds`` of measured time have been spent (at least
    three timed runs are always made).
    """
    for _ in range(warmup):
        fn()
    _sync()
    times: list[float] = []
    spent = 0.0
    for i in range(repeat):
        t0 = time.perf_counter()
        fn()
        _sync()
        dt = time.perf_counter() - t0
        times.append(dt)
        spent += dt
        if spent > max_seconds and i >= 2:
            break
    return statistics.median(times)


def timeit_interleaved(fns: dict[str, Callable[[], object]], *, warmup: int = 2,
                       repeat: int = 7, max_seconds: float = 60.0) -> dict[str, float | str]:
    """Median wall time of each function, timed in alternation: round ``i`` runs every
    function once (in the given order), so a slow drift of the machine's speed (other
    jobs, memory compaction, frequency) affects all of them alike and their ratio stays
    fair. ``max_seconds`` bounds each function's measured time, as in :func:`timeit`. A
    function that raises is reported as ``"failed: <exception type>"``, never dropped."""
    out: dict[str, float | str] = {}
    live = dict(fns)
    for name, fn in list(live.items()):
        try:
            for _ in range(warmup):
                fn()
            _sync()
        except Exception as e:  # a failing peer is reported, not hidden
            if name == "":
                raise
            out[name] = f"failed: {type(e).__name__}"
            del live[name]
    times: dict[str, list[float]] = {name: [] for name in live}
    for i in range(repeat):
        for name, fn in live.items():
            if i >= 3 and sum(times[name]) > max_seconds:
                continue
            t0 = time.perf_counter()
            fn()
            _sync()
            times[name].append(time.perf_counter() - t0)
    for name in fns:
        if name in times:
            out[name] = statistics.median(times[name])
    return out


def peak_rss_mb(code: str, *, cwd: Path = ROOT) -> float:
    """Run ``code`` in a fresh Python process; return its peak RSS increase in MB.

    The baseline is the resident set after the process has executed everything up to a
    line ``#--measure--`` (imports, data creation); the result is the growth of the
    high-water mark after that line. The mark is read from ``/proc/self/status`` (VmHWM)
    and reset with ``/proc/self/clear_refs`` — not ``ru_maxrss``, which Linux carries over
    from the (possibly large) parent across fork + exec.
    """
    before, _, after = code.partition("#--measure--")
    script = (
        "import gc, sys\n"
        "def _kb(key):\n"
        "    for line in open('/proc/self/status'):\n"
        "        if line.startswith(key):\n"
        "            return int(line.split()[1])\n"
        + before
        + "\ngc.collect()\n_b = _kb('VmRSS:')\n"
        "open('/proc/self/clear_refs', 'w').write('5')\n"
        + after
        + "\n_a = _kb('VmHWM:')\n"
        + "print('PEAK_KB', max(_a - _b, 0))\n"
    )
    out = subprocess.run([sys.executable, "-c", script], cwd=cwd, capture_output=True,
                         text=True, env={**os.environ, "PYTHONPATH": str(cwd)})
    for line in out.stdout.splitlines():
        if line.startswith("PEAK_KB"):
            return int(line.split()[1]) / 1024.0
    raise RuntimeError(f"memory probe failed:\n{out.stderr[-2000:]}")


def machine_description() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    desc = f"{cpu}, {os.cpu_count()} cores, torch {torch.__version__}, " \
           f"{torch.get_num_threads()} threads, Python {platform.python_version()}"
    if torch.cuda.is_available():
        desc += f", GPU {torch.cuda.get_device_name()}"
    return desc


def _fmt(t: float | None) -> str:
    if t is None:
        return "n/a"
    if t >= 1:
        return f"{t:.2f} s"
    return f"{t * 1e3:.1f} ms"


@dataclass
class Row:
    case: str
    ours: float | None
    peers: dict[str, float | str] = field(default_factory=dict)


class Bench:
    """Collects timings of ours vs peers and renders one markdown table."""

    def __init__(self, title: str, *, unit_note: str = "median wall time") -> None:
        self.title = title
        self.unit_note = unit_note
        self.rows: list[Row] = []
        self.peer_names: list[str] = []
        self.notes: list[str] = []

    def compare(self, case: str, ours: Callable[[], object] | None,
                peers: dict[str, Callable[[], object] | None] | None = None,
                **kw: float) -> Row:
        """Time ``ours`` and each peer (``None`` = not available) in this same run,
        interleaved (see :func:`timeit_interleaved`)."""
        fns: dict[str, Callable[[], object]] = {}
        if ours is not None:
            fns[""] = ours
        row = Row(case, None)
        for name, fn in (peers or {}).items():
            if name not in self.peer_names:
                self.peer_names.append(name)
            if fn is None:
                row.peers[name] = "not installed"
            else:
                fns[name] = fn
        for name, t in timeit_interleaved(fns, **kw).items():
            if name == "":
                row.ours = t if isinstance(t, float) else None
            else:
                row.peers[name] = t
        self.rows.append(row)
        print(self._row_md(row), flush=True)
        return row

    def add(self, case: str, ours: float | None, peers: dict[str, float | str]) -> Row:
        """Record externally measured values (e.g. memory in MB; smaller is better)."""
        for name in peers:
            if name not in self.peer_names:
                self.peer_names.append(name)
        row = Row(case, ours, dict(peers))
        self.rows.append(row)
        print(self._row_md(row), flush=True)
        return row

    def note(self, text: str) -> None:
        self.notes.append(text)

    def _best_peer(self, row: Row) -> tuple[str, float] | None:
        vals = [(k, v) for k, v in row.peers.items() if isinstance(v, float)]
        return min(vals, key=lambda kv: kv[1]) if vals else None

    def _row_md(self, row: Row, fmt: Callable[[float | None], str] = _fmt) -> str:
        cells = [row.case, fmt(row.ours)]
        for name in self.peer_names:
            v = row.peers.get(name, "")
            cells.append(fmt(v) if isinstance(v, float) else str(v))
        best = self._best_peer(row)
        if best is not None and row.ours:
            cells.append(f"{best[1] / row.ours:.2f}x ({best[0]})")
        else:
            cells.append("n/a")
        return "| " + " | ".join(cells) + " |"

    def markdown(self, fmt: Callable[[float | None], str] = _fmt) -> str:
        head = ["case", "difftransforms", *self.peer_names, "speed-up vs best peer"]
        lines = [
            f"### {self.title}",
            "",
            f"{_dt.date.today().isoformat()} · {machine_description()} · {self.unit_note}; "
            "speed-up = best peer / ours (> 1: we are faster)",
            "",
            "| " + " | ".join(head) + " |",
            "|" + "---|" * len(head),
            *(self._row_md(r, fmt) for r in self.rows),
        ]
        if self.notes:
            lines += ["", *(f"- {n}" for n in self.notes)]
        return "\n".join(lines) + "\n"

    def report(self, *, write: bool = True,
               fmt: Callable[[float | None], str] = _fmt) -> str:
        md = self.markdown(fmt)
        print()
        print(md)
        if write:
            new = not BENCHMARKS_MD.exists()
            with open(BENCHMARKS_MD, "a") as f:
                if new:
                    f.write("# Benchmarks\n\nTables appended by `python -m benchmarks.<name>`.\n\n")
                f.write(md + "\n")
        return md


def parser(description: str) -> argparse.ArgumentParser:
    """Common CLI flags for benchmark scripts."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--threads", type=int, default=None,
                   help="torch.set_num_threads (default: torch's default)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--repeat", type=int, default=7)
    p.add_argument("--quick", action="store_true", help="smaller sizes, for a smoke test")
    p.add_argument("--no-write", action="store_true", help="do not append to BENCHMARKS.md")
    return p


def setup_threads(n: int | None) -> None:
    if n is not None:
        torch.set_num_threads(n)
