"""Packaging shim: ship the C++/CUDA kernel sources inside the package.

The canonical sources live in the repository's top-level ``kernels/``; nothing is compiled
at install time (the kernels are JIT-built once on first use and cached, see
``difftransforms/ops/_build.py``). ``build_py`` copies ``kernels/*`` into
``difftransforms/_kernels/`` of the build tree so that wheels and non-editable installs
carry them; editable installs and checkouts read ``kernels/`` directly.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

KERNEL_SUFFIXES = {".cpp", ".cu", ".cuh", ".h", ".hpp"}


class BuildPyWithKernels(build_py):
    def run(self) -> None:
        super().run()
        src = Path(__file__).resolve().parent / "kernels"
        if not src.is_dir():  # building from an sdist that already has _kernels/
            return
        dst = Path(self.build_lib) / "difftransforms" / "_kernels"
        dst.mkdir(parents=True, exist_ok=True)
        for f in sorted(src.iterdir()):
            if f.is_file() and f.suffix in KERNEL_SUFFIXES:
                shutil.copy2(f, dst / f.name)


setup(cmdclass={"build_py": BuildPyWithKernels})
