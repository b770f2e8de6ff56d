"""Loader of the C++ wavelet kernels (``kernels/wavelets.cpp``), JIT-compiled once.

The library is built with :func:`torch.utils.cpp_extension.load` into a cache folder keyed
by a hash of the source, the flags and the toolchain (``$DIFFTRANSFORMS_CACHE`` or
``~/.cache/difftransforms``, as for the scattering ops); later processes, from any checkout,
load the cached library without invoking the compiler. It registers the custom ops
``torch.ops.difftransforms_wavelets.analysis2d`` / ``synthesis2d`` (CPU). Autograd and fake
(meta) implementations are registered here in Python.

If there is no compiler (or the build fails) the wavelet transforms fall back to the
pure-PyTorch implementation; the reason is kept in :func:`load_error` (shown by
``difftransforms doctor``), never swallowed silently. ``DIFFTRANSFORMS_NO_KERNELS=1``
disables the kernels.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import warnings
from pathlib import Path

import torch

_SRC = Path(__file__).resolve().parents[2] / "kernels" / "wavelets.cpp"
_PKG_SRC = Path(__file__).resolve().parents[1] / "_kernels" / "wavelets.cpp"
_FLAGS = ["-O3", "-march=native", "-fopenmp"]
_lock = threading.Lock()
_state: dict[str, object] = {"tried": False, "ok": False, "error": None}


def _source() -> Path | None:
    for p in (_SRC, _PKG_SRC):
        if p.is_file():
            return p
    return None


def _cache_dir(src: Path) -> Path:
    """The build folder: keyed by the source's content, the flags and the toolchain (torch,
    Python, the CPU for -march=native), not by where the source lives, so every checkout
    and venv on a machine shares one build."""
    from difftransforms.ops import _build

    h = _build._hash([src], _FLAGS + _build._toolchain_key("cpu"))[:16]
    return _build.cache_root() / f"wavelets-{h}"


def band_strides(Kh: int, Kw: int) -> tuple[int, int, int, int]:
    """Strides of the ``(M, 4, Kh, Kw)`` analysis output (bands padded apart, see the C++)."""
    S = Kh * Kw + 16
    return (4 * S, S, Kw, 1)


def as_band_layout(g: torch.Tensor) -> torch.Tensor:
    """``g`` (M, 4, Kh, Kw) in the padded band layout (copy unless already laid out so)."""
    M, _, Kh, Kw = g.shape
    st = band_strides(Kh, Kw)
    if g.stride()[1:] == st[1:]:
        return g
    out = torch.empty_strided(g.shape, st, dtype=g.dtype, device=g.device)
    out.copy_(g)
    return out


def _register_python_side() -> None:
    from torch.library import register_autograd, register_fake

    ns = "difftransforms_wavelets"

    @register_fake(f"{ns}::analysis2d")
    def _(x, taps, Kh, padLh, ptrH, idxH, wH, Kw, padLw, ptrW, idxW, wW):
        return x.new_empty_strided((x.shape[0], 4, Kh, Kw), band_strides(Kh, Kw))

    @register_fake(f"{ns}::synthesis2d")
    def _(a, h, v, d, taps, Nh, padLh, ptrH, idxH, wH, Nw, padLw, ptrW, idxW, wW):
        return a.new_empty((a.shape[0], Nh, Nw))

    def _setup_analysis(ctx, inputs, output):
        x, taps, Kh, padLh, ptrH, idxH, wH, Kw, padLw, ptrW, idxW, wW = inputs
        ctx.save_for_backward(taps, ptrH, idxH, wH, ptrW, idxW, wW)
        ctx.sizes = (x.shape[1], padLh, x.shape[2], padLw)

    def _backward_analysis(ctx, grad):
        taps, ptrH, idxH, wH, ptrW, idxW, wW = ctx.saved_tensors
        H, padLh, W, padLw = ctx.sizes
        grad = as_band_layout(grad)
        gx = torch.ops.difftransforms_wavelets.synthesis2d(
            grad[:, 0], grad[:, 1], grad[:, 2], grad[:, 3], taps, H, padLh, ptrH, idxH, wH,
            W, padLw, ptrW, idxW, wW)
        return (gx,) + (None,) * 11

    register_autograd(f"{ns}::analysis2d", _backward_analysis, setup_context=_setup_analysis)

    def _setup_synthesis(ctx, inputs, output):
        a, h, v, d, taps, Nh, padLh, ptrH, idxH, wH, Nw, padLw, ptrW, idxW, wW = inputs
        ctx.save_for_backward(taps, ptrH, idxH, wH, ptrW, idxW, wW)
        ctx.sizes = (a.shape[1], padLh, a.shape[2], padLw)

    def _backward_synthesis(ctx, grad):
        taps, ptrH, idxH, wH, ptrW, idxW, wW = ctx.saved_tensors
        Kh, padLh, Kw, padLw = ctx.sizes
        g = torch.ops.difftransforms_wavelets.analysis2d(
            grad, taps, Kh, padLh, ptrH, idxH, wH, Kw, padLw, ptrW, idxW, wW)
        return (g[:, 0], g[:, 1], g[:, 2], g[:, 3]) + (None,) * 11

    register_autograd(f"{ns}::synthesis2d", _backward_synthesis, setup_context=_setup_synthesis)


def load(verbose: bool = False) -> bool:
    """Build/load the kernels once; True if ``torch.ops.difftransforms_wavelets`` is usable."""
    if _state["tried"]:
        return bool(_state["ok"])
    with _lock:
        if _state["tried"]:
            return bool(_state["ok"])
        try:
            if os.environ.get("DIFFTRANSFORMS_NO_KERNELS"):
                raise RuntimeError("disabled by DIFFTRANSFORMS_NO_KERNELS")
            src = _source()
            if src is None:
                raise RuntimeError(f"kernel source not found ({_SRC})")
            # torch warns at import about CUDA_HOME when building CPU-only code: not news
            logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)
            from torch.utils.cpp_extension import load as _load

            from difftransforms.ops import _build

            build_dir = _cache_dir(src)
            lib = build_dir / _build._lib_name("difftransforms_wavelets")
            with _build._file_lock(build_dir.with_suffix(".lock")):
                if lib.is_file():  # built before (from any checkout): load, never re-run ninja
                    torch.ops.load_library(str(lib))
                else:
                    missing = _build._missing_cpu_toolchain()
                    if missing:
                        raise RuntimeError(missing)
                    build_dir.mkdir(parents=True, exist_ok=True)
                    print("difftransforms: compiling the wavelet kernels (once, about a "
                          f"minute; cached in {build_dir})", file=sys.stderr, flush=True)
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore")
                        try:
                            _load(name="difftransforms_wavelets", sources=[str(src)],
                                  extra_cflags=_FLAGS, extra_ldflags=["-fopenmp"],
                                  build_directory=str(build_dir), is_python_module=False,
                                  verbose=verbose)
                        except Exception:
                            lib.unlink(missing_ok=True)  # a failed build must not look cached
                            raise
            _register_python_side()
            _state["ok"] = True
        except Exception as e:  # recorded, reported by load_error() / doctor
            _state["ok"] = False
            _state["error"] = f"{type(e).__name__}: {e}"
        _state["tried"] = True
    return bool(_state["ok"])


def available() -> bool:
    """True if the compiled CPU kernels are loaded (building them on first call)."""
    return load()


def load_error() -> str | None:
    """Why the kernels are not in use (``None`` if they are, or were not tried yet)."""
    return None if _state["ok"] else _state["error"]  # type: ignore[return-value]
