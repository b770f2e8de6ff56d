"""Find, build (JIT, once, cached) and load the compiled kernels; record why when we can't.

Two extensions, each loaded on first use (never at import):

- ``cpu``: ``kernels/modconv.cpp``. Defines the op library ``torch.ops.difftransforms``
  (``TORCH_LIBRARY``) and its CPU kernels. Needs a C++ compiler and ninja.
- ``cuda``: ``kernels/modconv_cuda.cu`` (device code) and ``kernels/modconv_cuda_ops.cpp`` (torch
  glue). Registers the CUDA kernels of the same ops; built only
  where ``torch.cuda.is_available()`` and nvcc is found, so CPU-only machines never need nvcc.

Builds go to a persistent cache, ``$DIFFTRANSFORMS_CACHE`` or ``~/.cache/difftransforms``,
under ``torch-<version>-py<X.Y>/<name>-<hash>`` where the hash covers the sources, the flags
and the toolchain: a user waits for the compiler once, later sessions load the cached library
directly (no compiler needed then). Concurrent first builds are serialised by a file lock.

``DIFFTRANSFORMS_BACKEND`` selects the backend: ``auto`` (default: compiled if it loads, else
the pure-PyTorch reference with a one-time warning), ``reference`` (never compile or load),
``cpp`` (compiled or a clear error). Every failure is recorded in :func:`status` (reason,
exception text, build log path) and explained by ``difftransforms doctor``.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import platform
import shutil
import sys
import threading
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import torch

__all__ = [
    "BACKEND_ENV",
    "CACHE_ENV",
    "ExtensionStatus",
    "backend_setting",
    "cache_root",
    "compiled_available",
    "doctor_report",
    "kernel_source_dir",
    "load",
    "status",
    "use_compiled",
]

BACKEND_ENV = "DIFFTRANSFORMS_BACKEND"
CACHE_ENV = "DIFFTRANSFORMS_CACHE"
_BACKENDS = ("auto", "reference", "cpp")

_CPU_SOURCES = ("modconv.cpp",)
_CUDA_SOURCES = ("modconv_cuda_ops.cpp", "modconv_cuda.cu")
_HEADERS = ("modconv.h", "modconv_shape.h")
_CUDA_HEADERS = ("modconv_cuda_kernels.cuh",)
_NAMES = {"cpu": "difftransforms_C", "cuda": "difftransforms_cuda"}

# -march=native: the kernels are built on the machine that runs them (the cache key includes
# the CPU's model and instruction-set flags, see _cpu_key), and AVX2/AVX-512 roughly halve the
# time of the fold loops.
# -fno-trapping-math: FP exceptions are never inspected, so loops with selects like
# ``r2 > 0 ? 1 / sqrt(r2) : 0`` can be if-converted and vectorised
_CFLAGS = ["-O3", "-march=native", "-fopenmp", "-fno-math-errno", "-fno-trapping-math"]
_LDFLAGS = ["-fopenmp"]
_CUDA_CFLAGS = ["-O3"]


@dataclass
class ExtensionStatus:
    """What happened to one compiled extension (``kind`` is ``"cpu"`` or ``"cuda"``)."""

    kind: str
    attempted: bool = False
    loaded: bool = False
    reason: str = "not loaded yet (extensions load at the first call of an op)"
    library: str | None = None
    build_dir: str | None = None
    log: str | None = None
    error: str | None = None
    seconds: float | None = None
    details: dict[str, str] = field(default_factory=dict)


_lock = threading.RLock()
_status: dict[str, ExtensionStatus] = {k: ExtensionStatus(k) for k in _NAMES}
_warned: set[str] = set()


def backend_setting() -> str:
    """The validated value of ``$DIFFTRANSFORMS_BACKEND`` (``auto`` when unset)."""
    value = os.environ.get(BACKEND_ENV, "auto").strip().lower() or "auto"
    if value not in _BACKENDS:
        raise ValueError(
            f"{BACKEND_ENV}={value!r} is not a backend; use one of {', '.join(_BACKENDS)}"
        )
    return value


def cache_root() -> Path:
    """Folder holding the compiled libraries for this torch / Python combination."""
    base = os.environ.get(CACHE_ENV)
    if base:
        root = Path(base).expanduser()
    else:
        xdg = os.environ.get("XDG_CACHE_HOME")
        root = (Path(xdg) if xdg else Path.home() / ".cache") / "difftransforms"
    tag = f"torch-{torch.__version__}-py{sys.version_info.major}.{sys.version_info.minor}"
    return root / tag.replace("+", "_")


def kernel_source_dir() -> Path | None:
    """Where the C++/CUDA sources are: the copy shipped in the package (``_kernels/``,
    non-editable installs), else the repository's top-level ``kernels/`` (checkouts)."""
    here = Path(__file__).resolve().parent.parent  # .../difftransforms
    for cand in (here / "_kernels", here.parent / "kernels"):
        if all((cand / f).is_file() for f in _CPU_SOURCES + _HEADERS):
            return cand
    return None


def status() -> dict[str, ExtensionStatus]:
    """Status of each extension (``"cpu"``, ``"cuda"``); does not trigger a build."""
    return _status


def _hash(files: list[Path], extra: list[str]) -> str:
    h = hashlib.sha256()
    for f in files:
        h.update(f.name.encode())
        h.update(f.read_bytes())
    for e in extra:
        h.update(e.encode())
        h.update(b"\0")
    return h.hexdigest()


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    """Exclusive inter-process lock (flock on POSIX; a no-op elsewhere, where torch's own
    build baton still serialises the compilation itself)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield
        return
    with open(path, "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _lib_name(name: str) -> str:
    return name + (".pyd" if sys.platform == "win32" else ".so")


def _cuda_home() -> str | None:
    home = os.environ.get("CUDA_HOME") or os.environ.get("CUDA_PATH")
    if home:
        return home
    nvcc = shutil.which("nvcc")
    if nvcc:
        return str(Path(nvcc).resolve().parent.parent)
    if Path("/usr/local/cuda").is_dir():
        return "/usr/local/cuda"
    return None


def _missing_cpu_toolchain() -> str | None:
    cxx = os.environ.get("CXX", "c++")
    if shutil.which(cxx) is None:
        return (f"no C++ compiler found (looked for {cxx!r}; set $CXX or install g++/clang); "
                "the pure-PyTorch reference is used")
    if shutil.which("ninja") is None:
        # `pip install ninja` puts the binary next to python: usable without an activated venv.
        bindir = str(Path(sys.executable).parent)
        if shutil.which("ninja", path=bindir) is None:
            return "ninja not found (pip install ninja); the pure-PyTorch reference is used"
        os.environ["PATH"] = bindir + os.pathsep + os.environ.get("PATH", "")
    return None


def _missing_cuda_toolchain() -> str | None:
    if torch.version.cuda is None:
        return f"this torch ({torch.__version__}) is built without CUDA"
    if not torch.cuda.is_available():
        return "no CUDA GPU (torch.cuda.is_available() is False)"
    home = _cuda_home()
    nvcc = Path(home, "bin", "nvcc") if home else None
    if nvcc is None or not nvcc.exists():
        return (f"nvcc not found (CUDA_HOME={home!r}); set CUDA_HOME to a CUDA toolkit "
                f"matching torch's CUDA {torch.version.cuda}")
    return None


def _cpu_key() -> str:
    """The CPU model and instruction-set flags (``-march=native`` binaries are only valid on
    the same kind of CPU: a cache shared between machines must not mix them)."""
    try:
        with open("/proc/cpuinfo") as f:
            lines = [ln for ln in f if ln.startswith(("model name", "flags", "Features"))]
        return "".join(sorted(set(lines)))
    except OSError:
        return platform.processor()


def _toolchain_key(kind: str) -> list[str]:
    key = [torch.__version__, platform.machine(), sys.version]
    if kind == "cpu":
        key.append(_cpu_key())
    if kind == "cuda":
        key += [str(torch.version.cuda), str(_cuda_home()),
                os.environ.get("TORCH_CUDA_ARCH_LIST", "")]
        if not os.environ.get("TORCH_CUDA_ARCH_LIST") and torch.cuda.is_available():
            caps = {torch.cuda.get_device_capability(i) for i in range(torch.cuda.device_count())}
            key.append(repr(sorted(caps)))
    return key


def _build_and_load(st: ExtensionStatus, src: Path) -> None:
    kind = st.kind
    name = _NAMES[kind]
    sources = [src / s for s in (_CUDA_SOURCES if kind == "cuda" else _CPU_SOURCES)]
    flags = _CFLAGS + _LDFLAGS + (_CUDA_CFLAGS if kind == "cuda" else [])
    headers = _HEADERS + (_CUDA_HEADERS if kind == "cuda" else ())
    digest = _hash(sources + [src / h for h in headers], flags + _toolchain_key(kind))
    build_dir = cache_root() / f"{name}-{digest[:16]}"
    lib = build_dir / _lib_name(name)
    log = build_dir / "build.log"
    st.build_dir, st.library = str(build_dir), str(lib)
    t0 = time.perf_counter()
    with _file_lock(cache_root() / f"{name}-{digest[:16]}.lock"):
        if lib.is_file():
            torch.ops.load_library(str(lib))
            st.loaded, st.seconds = True, time.perf_counter() - t0
            st.reason = f"compiled {kind} kernels loaded from the cache ({lib})"
            return
        missing = _missing_cuda_toolchain() if kind == "cuda" else _missing_cpu_toolchain()
        if missing:
            st.reason = missing
            return
        build_dir.mkdir(parents=True, exist_ok=True)
        print(f"difftransforms: compiling the {kind.upper()} kernels (once, about a minute; "
              f"cached in {build_dir})", file=sys.stderr, flush=True)
        # torch warns at import about CUDA_HOME when building CPU-only code: not news
        logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)
        from torch.utils import cpp_extension

        if kind == "cuda" and not os.environ.get("CUDA_HOME"):
            os.environ["CUDA_HOME"] = str(_cuda_home())
        try:
            cpp_extension.load(
                name=name,
                sources=[str(s) for s in sources],
                extra_cflags=_CFLAGS,
                extra_ldflags=_LDFLAGS,
                extra_cuda_cflags=_CUDA_CFLAGS if kind == "cuda" else None,
                extra_include_paths=[str(src)],
                build_directory=str(build_dir),
                with_cuda=kind == "cuda",
                is_python_module=False,
                verbose=False,
            )
        except Exception as exc:  # recorded and explained, never swallowed silently
            log.write_text(f"building {name} from {src} failed:\n\n{exc}\n")
            with contextlib.suppress(OSError):  # a failed build must not look cached
                lib.unlink()
            st.error = f"{type(exc).__name__}: {str(exc).strip().splitlines()[-1][:300]}"
            st.log = str(log)
            st.reason = f"the {kind} build failed ({st.error}); full log: {log}"
            return
        st.seconds = time.perf_counter() - t0
        log.write_text(f"built {name} from {src} in {st.seconds:.1f} s\n")
        st.log = str(log)
        st.loaded = True
        st.reason = f"compiled {kind} kernels built now in {st.seconds:.0f} s ({lib})"


def load(kind: str = "cpu") -> ExtensionStatus:
    """Load (building once if needed) the ``"cpu"`` or ``"cuda"`` extension; never raises
    for a build problem (see the returned status), only for an unknown ``kind``."""
    if kind not in _NAMES:
        raise ValueError(f"unknown extension kind {kind!r}; use 'cpu' or 'cuda'")
    with _lock:
        st = _status[kind]
        if st.attempted:
            return st
        st.attempted = True
        if backend_setting() == "reference":
            st.reason = f"forced reference ({BACKEND_ENV}=reference)"
            return st
        if kind == "cuda":
            cpu = load("cpu")
            if not cpu.loaded:
                st.reason = f"needs the CPU extension, which defines the ops: {cpu.reason}"
                return st
        src = kernel_source_dir()
        if src is None:
            st.reason = ("kernel sources not found (neither difftransforms/_kernels nor the "
                         "repository's kernels/); reinstall the package")
            return st
        try:
            _build_and_load(st, src)
        except Exception as exc:  # e.g. a cached library that no longer loads
            st.loaded = False
            st.error = f"{type(exc).__name__}: {exc}"
            st.reason = f"loading the {kind} library failed: {st.error}"
        if st.loaded and kind == "cpu":
            from . import modconv

            modconv._register_python_impls()
        return st


def compiled_available(device_type: str) -> bool:
    """Whether the compiled ops run on ``device_type`` (loads them on first call)."""
    if device_type not in _NAMES:
        return False
    return load(device_type).loaded


def use_compiled(device_type: str) -> bool:
    """Backend decision for one call on ``device_type``: True for the compiled op.

    ``auto``: compiled when it loads, else False with a one-time warning explaining why.
    ``reference``: always False. ``cpp``: True, or a ``RuntimeError`` naming the reason.
    """
    setting = backend_setting()
    if setting == "reference":
        return False
    if device_type not in _NAMES:
        if setting == "cpp":
            raise RuntimeError(f"{BACKEND_ENV}=cpp but there are no compiled kernels for device "
                               f"type {device_type!r} (only cpu and cuda)")
        return False
    st = load(device_type)
    if st.loaded:
        return True
    if setting == "cpp":
        raise RuntimeError(f"{BACKEND_ENV}=cpp but the compiled {device_type} kernels are "
                           f"unavailable: {st.reason}. Run `difftransforms doctor`.")
    if device_type not in _warned:
        _warned.add(device_type)
        warnings.warn(
            f"difftransforms: compiled {device_type} kernels unavailable ({st.reason}); using "
            "the pure-PyTorch reference (same results, slower, more memory). "
            "Run `difftransforms doctor` for details.",
            RuntimeWarning,
            stacklevel=3,
        )
    return False


def doctor_report(build: bool = True) -> str:
    """A human-readable report: versions, cache, and which backend each op uses and why.

    With ``build=True`` the extensions are loaded (compiled first if needed) before reporting.
    """
    setting = os.environ.get(BACKEND_ENV, "auto")
    lines = [
        f"difftransforms backend report (Python {platform.python_version()}, "
        f"{platform.system()} {platform.machine()})",
        f"  torch            {torch.__version__} (CUDA {torch.version.cuda or 'none'})",
        f"  CUDA available   {torch.cuda.is_available()}"
        + (f" ({torch.cuda.get_device_name()})" if torch.cuda.is_available() else ""),
        f"  CUDA_HOME        {_cuda_home()}",
        f"  C++ compiler     {shutil.which(os.environ.get('CXX', 'c++'))}",
        f"  ninja            {shutil.which('ninja')}",
        f"  kernel sources   {kernel_source_dir()}",
        f"  cache dir        {cache_root()}  (${CACHE_ENV} overrides)",
        f"  {BACKEND_ENV} = {setting}",
        "",
    ]
    try:
        backend_setting()
    except ValueError as exc:
        return "\n".join([*lines, f"error: {exc}"]) + "\n"
    if build:
        for kind in _NAMES:
            load(kind)
    ops = "filter_fold, filter_fold_backward, modulus, modulus_backward"
    for kind, st in _status.items():
        backend = "compiled" if st.loaded else "reference (pure PyTorch)"
        lines.append(f"{kind.upper():4s} ops ({ops}): {backend}")
        lines.append(f"     why: {st.reason}")
        if st.error:
            lines.append(f"     error: {st.error}")
        if st.log:
            lines.append(f"     build log: {st.log}")
    return "\n".join(lines) + "\n"
