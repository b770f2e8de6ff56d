"""Build, cache, fallback and packaging of the compiled kernels; `difftransforms doctor`."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from difftransforms.ops import _build

ROOT = Path(__file__).resolve().parents[1]
KERNELS = ROOT / "kernels"


def _nvcc() -> str | None:
    for home in (os.environ.get("CUDA_HOME"), "/usr/local/cuda-13.0", "/usr/local/cuda"):
        if home and Path(home, "bin", "nvcc").is_file():
            return str(Path(home, "bin", "nvcc"))
    return shutil.which("nvcc")


def test_cuda_sources_compile(tmp_path):
    """Compile-only check of the CUDA extension, so that a CUDA syntax error can't land from a
    machine without a GPU: nvcc -c the device code (kernels/modconv_cuda.cu) and a host
    syntax check of its torch glue (kernels/modconv_cuda_ops.cpp). Skipped only without nvcc."""
    nvcc = _nvcc()
    if nvcc is None:
        pytest.skip("nvcc not found (set CUDA_HOME); the CUDA sources cannot be compiled here")
    from torch.utils import cpp_extension

    cuda_include = str(Path(nvcc).parent.parent / "include")
    # torch >= 2.10 headers need C++20; use the standard torch's own extension builder uses.
    std = "c++20" if "-std=c++20" in Path(cpp_extension.__file__).read_text() else "c++17"
    arch = os.environ.get("TORCH_CUDA_ARCH_LIST", "9.0").split(";")[0].split("+")[0]
    t0 = time.perf_counter()
    device_cmd = [nvcc, "-c", str(KERNELS / "modconv_cuda.cu"), "-o", str(tmp_path / "k.o"),
                  f"-arch=sm_{arch.replace('.', '')}", f"-std={std}", "-O2",
                  "--compiler-options", "-fPIC", f"-I{KERNELS}"]
    res = subprocess.run(device_cmd, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, f"nvcc failed:\n{' '.join(device_cmd)}\n{res.stderr[-4000:]}"
    assert (tmp_path / "k.o").stat().st_size > 0
    cxx = shutil.which(os.environ.get("CXX", "c++"))
    if cxx is not None:
        host_cmd = [cxx, "-fsyntax-only", f"-std={std}", "-fPIC", f"-I{KERNELS}",
                    *(f"-I{p}" for p in cpp_extension.include_paths("cpu")),
                    f"-I{cuda_include}", str(KERNELS / "modconv_cuda_ops.cpp")]
        res = subprocess.run(host_cmd, capture_output=True, text=True, timeout=600)
        assert res.returncode == 0, f"host compile failed:\n{res.stderr[-4000:]}"
    print(f"CUDA sources compile-only check took {time.perf_counter() - t0:.0f} s")


_LINK_AND_LOAD = """
import sys, torch
torch.cuda.is_available = lambda: True  # build as on a GPU machine; no kernel is launched
from difftransforms.ops import _build
st = _build.load("cuda")
print(st.reason)
if not st.loaded:
    sys.exit(1)
for op in ("filter_fold", "filter_fold_backward", "modulus", "modulus_backward"):
    table = torch._C._dispatch_dump(f"difftransforms::{op}")
    assert "\\nCUDA: registered at" in table and "modconv_cuda_ops.cpp" in table, table
print("CUDA kernels registered")
"""


def test_cuda_extension_builds_links_and_registers(tmp_path):
    """The whole CUDA extension through the loader's real build path (nvcc, host glue, link
    against torch and cudart), loaded in a fresh process: no undefined symbol, and every op
    has a CUDA kernel registered in the dispatcher. Skipped only without nvcc / a compiler.
    (Running the kernels needs a GPU: test_ops_modconv.py's CUDA cases and, thread by thread
    on the CPU, test_cuda_emulation.py.)"""
    nvcc = _nvcc()
    if nvcc is None or torch.version.cuda is None:
        pytest.skip("nvcc or a CUDA build of torch missing: the CUDA extension cannot be built")
    cxx = shutil.which(os.environ.get("CXX", "c++"))
    if cxx is None or _build.backend_setting() == "reference":
        pytest.skip("no C++ compiler, or DIFFTRANSFORMS_BACKEND=reference")
    env = {**os.environ, "PYTHONPATH": str(ROOT), _build.CACHE_ENV: str(tmp_path / "cache"),
           "CUDA_HOME": str(Path(nvcc).parent.parent),
           "TORCH_CUDA_ARCH_LIST": os.environ.get("TORCH_CUDA_ARCH_LIST", "9.0")}
    res = subprocess.run([sys.executable, "-c", _LINK_AND_LOAD], capture_output=True, text=True,
                         env=env, cwd=ROOT, timeout=900)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert "CUDA kernels registered" in res.stdout


def test_cpu_extension_loads_and_is_cached():
    if _build.backend_setting() == "reference":
        pytest.skip("DIFFTRANSFORMS_BACKEND=reference")
    st = _build.load("cpu")
    if not st.loaded:
        if st.error:
            pytest.fail(f"the CPU extension failed to build: {st.reason}")
        pytest.skip(f"compiled CPU ops unavailable: {st.reason}")
    lib = Path(st.library)
    assert lib.is_file() and _build.cache_root() in lib.parents
    assert hasattr(torch.ops.difftransforms, "filter_fold")
    t0 = time.perf_counter()
    assert _build.load("cpu") is st  # loaded once per process
    assert time.perf_counter() - t0 < 0.1
    # A fresh process loads the cached library without compiling (no compiler needed).
    code = ("from difftransforms.ops import _build; import sys; st = _build.load('cpu'); "
            "print(st.reason); sys.exit(0 if st.loaded else 1)")
    env = {**os.environ, "CXX": "/nonexistent/c++", "PYTHONPATH": str(ROOT)}
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                         cwd=ROOT, timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "loaded from the cache" in res.stdout
    assert "compiling" not in res.stderr


@pytest.fixture
def fresh_build_state(monkeypatch, tmp_path):
    """An isolated loader state: no extension attempted yet, an empty cache in tmp_path."""
    monkeypatch.setattr(_build, "_status", {k: _build.ExtensionStatus(k) for k in _build._NAMES})
    monkeypatch.setattr(_build, "_warned", set())
    monkeypatch.setenv(_build.CACHE_ENV, str(tmp_path / "cache"))
    monkeypatch.delenv(_build.BACKEND_ENV, raising=False)
    return tmp_path


def test_missing_compiler_falls_back_with_one_warning(fresh_build_state, monkeypatch):
    monkeypatch.setenv("CXX", "/nonexistent/c++")
    st = _build.load("cpu")
    assert not st.loaded and "no C++ compiler" in st.reason and st.error is None
    with pytest.warns(RuntimeWarning, match="no C\\+\\+ compiler.*difftransforms doctor"):
        assert _build.use_compiled("cpu") is False
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # warned once only
        assert _build.use_compiled("cpu") is False
    monkeypatch.setenv(_build.BACKEND_ENV, "cpp")
    with pytest.raises(RuntimeError, match="DIFFTRANSFORMS_BACKEND=cpp.*no C\\+\\+ compiler"):
        _build.use_compiled("cpu")
    assert "no C++ compiler" in _build.doctor_report(build=False)
    cuda = _build.load("cuda")
    assert not cuda.loaded and cuda.reason


def test_build_failure_is_recorded_with_log(fresh_build_state, monkeypatch):
    if shutil.which(os.environ.get("CXX", "c++")) is None:
        pytest.skip("no C++ compiler")
    broken = fresh_build_state / "src"
    broken.mkdir()
    for f in KERNELS.iterdir():
        if f.is_file():
            shutil.copy2(f, broken / f.name)
    text = (broken / "modconv.cpp").read_text()
    # A missing include is fatal at once (an #error would go on parsing all of torch).
    (broken / "modconv.cpp").write_text('#include "deliberately_broken_missing.h"\n' + text)
    monkeypatch.setattr(_build, "kernel_source_dir", lambda: broken)
    st = _build.load("cpu")
    if "ninja not found" in st.reason:
        pytest.skip(st.reason)
    assert not st.loaded
    assert st.error and "build failed" in st.reason
    assert st.log and "deliberately_broken_missing.h" in Path(st.log).read_text()
    assert not Path(st.library).exists()
    report = _build.doctor_report(build=False)
    assert "build log: " + st.log in report and "reference" in report
    with pytest.warns(RuntimeWarning, match="build failed"):
        _build.use_compiled("cpu")


def test_forced_reference_never_builds(fresh_build_state, monkeypatch):
    monkeypatch.setenv(_build.BACKEND_ENV, "reference")
    st = _build.load("cpu")
    assert not st.loaded and "forced reference" in st.reason
    assert not (fresh_build_state / "cache").exists()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # forcing the reference is not a fallback: no warning
        assert _build.use_compiled("cpu") is False


def test_doctor_command():
    from difftransforms.cli import main

    res = CliRunner().invoke(main, ["doctor"])
    assert res.exit_code == 0, res.output
    out = res.stdout
    for needle in ("torch", "cache dir", "CPU  ops", "CUDA ops", "why:", _build.BACKEND_ENV):
        assert needle in out
    assert ("compiled" in out) or ("reference" in out)
    if not torch.cuda.is_available():
        assert "no CUDA GPU" in out or "without CUDA" in out or "forced reference" in out


def test_build_py_ships_kernel_sources(tmp_path):
    """Non-editable installs get the sources: setup.py's build_py copies kernels/ into
    difftransforms/_kernels (the loader's first choice)."""
    cmd = [sys.executable, "setup.py", "-q", "build_py", "--build-lib", str(tmp_path)]
    res = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    shipped = tmp_path / "difftransforms" / "_kernels"
    for name in ("modconv.cpp", "modconv.h", "modconv_shape.h", "modconv_cuda.cu",
                 "modconv_cuda_kernels.cuh", "modconv_cuda_ops.cpp"):
        assert (shipped / name).read_bytes() == (KERNELS / name).read_bytes()


def test_wavelet_kernels_load_from_the_cache_without_a_compiler():
    """Once built, the wavelet kernels load in a fresh process with no compiler at all (the
    cache is keyed by content and toolchain, not by checkout path, and ninja is not re-run)."""
    from difftransforms.wavelets import _kernel

    if not _kernel.load():
        if shutil.which(os.environ.get("CXX", "c++")) is None:
            pytest.skip(f"wavelet kernels unavailable: {_kernel.load_error()}")
        pytest.fail(f"the wavelet kernels failed to build: {_kernel.load_error()}")
    code = ("from difftransforms.wavelets import _kernel; import sys; ok = _kernel.load(); "
            "print(_kernel.load_error()); sys.exit(0 if ok else 1)")
    env = {**os.environ, "CXX": "/nonexistent/c++", "PATH": "/nonexistent",
           "PYTHONPATH": str(ROOT)}
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                         cwd=ROOT, timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "compiling" not in res.stderr
