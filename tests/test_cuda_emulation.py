"""The CUDA kernels, run on the CPU: kernels/modconv_cuda_kernels.cuh compiled by the host
compiler (tests/cuda_emulation/modconv_emulated.cpp) and executed block by block, thread by
thread, then compared with the pure-PyTorch reference, dense torch and finite differences.

The kernels use no shared memory, barriers or atomics and each thread writes only its own
outputs, so a sequential run computes what the GPU computes: this checks their index
arithmetic, Hermitian mirroring, dead-block skipping and grid-stride loops on machines with
no GPU. Launches and the device runtime are exercised only by the CUDA cases of
test_ops_modconv.py on a real GPU. Skipped without a C++ compiler (or with
DIFFTRANSFORMS_BACKEND=reference); with one, a failed build is a failure.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
from pathlib import Path
from types import ModuleType

import pytest
import torch
from conftest import CDTYPE, fold_inputs

from difftransforms.ops import _build
from difftransforms.ops.modconv_reference import filter_fold_reference, modulus_reference

ROOT = Path(__file__).resolve().parents[1]
KERNELS = ROOT / "kernels"
EMULATOR = Path(__file__).resolve().parent / "cuda_emulation" / "modconv_emulated.cpp"

TOL = {torch.float32: {"rtol": 2e-5, "atol": 2e-5}, torch.float64: {"rtol": 1e-12, "atol": 1e-12}}
SHAPES = [(16, 16, 1), (16, 16, 2), (16, 16, 4), (12, 20, 4), (15, 9, 1), (10, 6, 2),
          (6, 10, 2), (9, 9, 3), (1, 1, 1), (8, 2, 2)]
# (grid, block): the launchers' own choice (0: num_blocks(work) x 256), and small grids whose
# threads take several turns of the grid-stride loop, with a block size not a power of two.
LAUNCHES = [(0, 0), (1, 1), (3, 7)]


@pytest.fixture(scope="module")
def emu() -> ModuleType:
    if _build.backend_setting() == "reference":
        pytest.skip("DIFFTRANSFORMS_BACKEND=reference: no compiled code")
    if shutil.which(os.environ.get("CXX", "c++")) is None:
        pytest.skip("no C++ compiler: the CUDA kernels cannot be emulated")
    logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)
    from torch.utils import cpp_extension

    sources = [EMULATOR, KERNELS / "modconv_cuda_kernels.cuh", KERNELS / "modconv.h",
               KERNELS / "modconv_shape.h"]
    digest = hashlib.sha256(b"".join(p.read_bytes() for p in sources)).hexdigest()[:16]
    build_dir = _build.cache_root() / f"cuda_emulation-{digest}"
    build_dir.mkdir(parents=True, exist_ok=True)
    return cpp_extension.load(name="difftransforms_cuda_emulated", sources=[str(EMULATOR)],
                              extra_include_paths=[str(KERNELS)], extra_cflags=["-O2"],
                              build_directory=str(build_dir), verbose=False)


def _adjoint_reference(grad, filters, k):
    """grad -> xhat gradient of the reference fold (autograd's real-linear adjoint)."""
    N = grad.shape[0]
    _, H, W = filters.shape
    xhat = torch.zeros(N, H, W // 2 + 1, dtype=grad.dtype, requires_grad=True)
    (g,) = torch.autograd.grad(filter_fold_reference(xhat, filters, W, k), xhat, grad)
    return g


@pytest.mark.parametrize(("grid", "block"), LAUNCHES, ids=[f"g{g}b{b}" for g, b in LAUNCHES])
@pytest.mark.parametrize("hermitian", [True, False], ids=["rfft2", "arbitrary"])
@pytest.mark.parametrize(("H", "W", "k"), SHAPES, ids=[f"{h}x{w}k{k}" for h, w, k in SHAPES])
def test_filter_fold_kernels_match_reference(emu, dtype, H, W, k, hermitian, grid, block):
    xhat, filters = fold_inputs(3, 5, H, W, dtype, hermitian=hermitian)
    out = emu.filter_fold(xhat, filters, W, k, grid, block)
    assert out.shape == (3, 5, H // k, W // k) and out.dtype == CDTYPE[dtype]
    torch.testing.assert_close(out, filter_fold_reference(xhat, filters, W, k), **TOL[dtype])
    g = torch.randn(out.shape, dtype=out.dtype, generator=torch.Generator().manual_seed(1))
    gx = emu.filter_fold_backward(g, filters, k, grid, block)
    assert gx.shape == xhat.shape
    torch.testing.assert_close(gx, _adjoint_reference(g, filters, k), **TOL[dtype])


@pytest.mark.parametrize("k", [1, 2, 4])
def test_filter_fold_kernel_equals_dense_spatial_convolution(emu, dtype, k):
    """Outside reference: ifft2(out) == (filters * fft2(x)) convolved then sampled every k."""
    H, W = 16, 12
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, H, W, dtype=dtype, generator=g)
    filters = torch.rand(3, H, W, dtype=dtype, generator=g)
    out = emu.filter_fold(torch.fft.rfft2(x), filters, W, k)
    dense = torch.fft.ifft2(torch.fft.fft2(x)[:, None] * filters)[..., ::k, ::k]
    torch.testing.assert_close(torch.fft.ifft2(out), dense, **TOL[dtype])


@pytest.mark.parametrize(("H", "W", "k"), [(16, 12, 2), (16, 16, 4), (8, 9, 1), (12, 12, 3)])
def test_filter_fold_kernels_skip_dead_blocks_correctly(emu, dtype, H, W, k):
    """Filters exactly zero on some aliased blocks (and one filter zero everywhere): the
    kernels skip those blocks through the live-block map; nothing may change."""
    xhat, filters = fold_inputs(4, 4, H, W, dtype, hermitian=False)
    dead = torch.rand(4, k, k, generator=torch.Generator().manual_seed(3)) < 0.6
    dead[0] = True
    mask = (~dead).repeat_interleave(H // k, 1).repeat_interleave(W // k, 2)
    filters = filters * mask
    for grid, block in LAUNCHES:
        out = emu.filter_fold(xhat, filters, W, k, grid, block)
        torch.testing.assert_close(out, filter_fold_reference(xhat, filters, W, k), **TOL[dtype])
        assert (out[:, 0] == 0).all()
        g = torch.randn_like(out)
        torch.testing.assert_close(emu.filter_fold_backward(g, filters, k, grid, block),
                                   _adjoint_reference(g, filters, k), **TOL[dtype])


class _EmulatedFold(torch.autograd.Function):
    """filter_fold with the emulated CUDA kernels forward and backward (xhat only)."""

    @staticmethod
    def forward(ctx, xhat, filters, emu, width, k):  # noqa: ANN001, ANN205
        ctx.save_for_backward(filters)
        ctx.emu, ctx.k = emu, k
        return emu.filter_fold(xhat, filters, width, k)

    @staticmethod
    def backward(ctx, grad):  # noqa: ANN001, ANN205
        (filters,) = ctx.saved_tensors
        gx = ctx.emu.filter_fold_backward(grad.contiguous(), filters, ctx.k)
        return gx, None, None, None, None


@pytest.mark.parametrize(("H", "W", "k"), [(4, 6, 2), (3, 5, 1), (4, 4, 4), (6, 6, 3)])
def test_backward_kernel_is_the_adjoint_gradcheck(emu, H, W, k):
    """Finite differences (float64): the backward kernel is the gradient of the forward one."""
    xhat, filters = fold_inputs(2, 3, H, W, torch.float64, hermitian=False)
    xhat.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda a: _EmulatedFold.apply(a, filters, emu, W, k),
                                    (xhat,))


def test_adjoint_identity(emu, dtype):
    """<A x, y> == <x, A* y> in the real inner product."""
    H, W, k = 12, 10, 2
    xhat, filters = fold_inputs(2, 4, H, W, dtype, hermitian=False)
    y = torch.randn(2, 4, H // k, W // k, dtype=CDTYPE[dtype])
    lhs = (emu.filter_fold(xhat, filters, W, k).conj() * y).real.sum()
    rhs = (xhat.conj() * emu.filter_fold_backward(y, filters, k)).real.sum()
    torch.testing.assert_close(lhs, rhs, **TOL[dtype])


@pytest.mark.parametrize(("grid", "block"), LAUNCHES, ids=[f"g{g}b{b}" for g, b in LAUNCHES])
def test_modulus_kernels(emu, dtype, grid, block):
    g = torch.Generator().manual_seed(4)
    z = torch.randn(3, 700, dtype=CDTYPE[dtype], generator=g)
    z[0, :5] = 0
    big, small = (1e30, 1e-30) if dtype == torch.float32 else (1e300, 1e-300)
    z[1, 0] = complex(3 * big, 4 * big)  # squares overflow: the kernel uses hypot
    z[1, 1] = complex(small, 0)
    m = emu.modulus(z, grid, block)
    torch.testing.assert_close(m, z.abs(), rtol=1e-6 if dtype == torch.float32 else 1e-15,
                               atol=0)
    torch.testing.assert_close(m, modulus_reference(z), **TOL[dtype])
    gout = torch.randn(3, 700, dtype=dtype, generator=g)
    gz = emu.modulus_backward(gout, z, grid, block)
    assert torch.isfinite(torch.view_as_real(gz)).all()
    assert (gz[0, :5] == 0).all()  # stable at z == 0: zero, never NaN
    zd = z.to(torch.complex128)
    want = gout.double() * torch.where(zd.abs() > 0, zd / zd.abs().clamp_min(1e-300), 0)
    ok = torch.ones(3, 700, dtype=torch.bool)
    ok[1, :2] = False  # z / |z| of the extreme values: checked for finiteness above
    torch.testing.assert_close(gz[ok].to(torch.complex128), want[ok],
                               rtol=1e-6 if dtype == torch.float32 else 1e-14, atol=1e-6)


def test_modulus_kernel_non_finite_values(emu, dtype):
    inf, nan = float("inf"), float("nan")
    z = torch.tensor([complex(inf, 0), complex(0, -inf), complex(inf, nan), complex(nan, inf),
                      complex(nan, 1), complex(3, 4)], dtype=CDTYPE[dtype])
    torch.testing.assert_close(emu.modulus(z), z.abs(), equal_nan=True)


def test_scattering_like_pipeline_gradient(emu):
    """x -> rfft2 -> fold -> ifft2 -> |.| -> weighted sum, every kernel emulated: the gradient
    equals autograd through the reference ops (float64)."""
    H, W, k = 8, 6, 2
    g = torch.Generator().manual_seed(2)
    x = torch.randn(2, H, W, dtype=torch.float64, generator=g)
    filters = torch.rand(3, H, W, dtype=torch.float64, generator=g)
    filters[:, 0, 0] = 0
    weights = torch.linspace(0.5, 2, 2 * 3 * (H // k) * (W // k), dtype=torch.float64)
    weights = weights.view(2, 3, H // k, W // k)
    xh = torch.fft.rfft2(x)
    z = torch.fft.ifft2(emu.filter_fold(xh, filters, W, k))
    u = emu.modulus(z)
    gz = emu.modulus_backward(weights, z)  # d/dz of sum(weights * |z|)
    gxhat = emu.filter_fold_backward(torch.fft.fft2(gz, norm="forward"), filters, k)
    xr = x.clone().requires_grad_(True)
    ur = modulus_reference(torch.fft.ifft2(filter_fold_reference(torch.fft.rfft2(xr), filters,
                                                                  W, k)))
    (want,) = torch.autograd.grad((ur * weights).sum(), xr)
    torch.testing.assert_close(u, ur.detach(), rtol=1e-12, atol=1e-12)
    xr2 = x.clone().requires_grad_(True)
    (got,) = torch.autograd.grad(torch.fft.rfft2(xr2), xr2, gxhat)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)


def test_kernel_argument_errors(emu):
    xhat, filters = fold_inputs(2, 3, 8, 6, torch.float64)
    with pytest.raises(RuntimeError, match="must divide"):
        emu.filter_fold(xhat, filters, 6, 4)
    with pytest.raises(RuntimeError, match="does not match filters dtype"):
        emu.filter_fold(xhat, filters.float(), 6, 2)


class _EmulatedModulus(torch.autograd.Function):
    @staticmethod
    def forward(ctx, z, emu):  # noqa: ANN001, ANN205
        ctx.save_for_backward(z)
        ctx.emu = emu
        return emu.modulus(z)

    @staticmethod
    def backward(ctx, grad):  # noqa: ANN001, ANN205
        (z,) = ctx.saved_tensors
        return ctx.emu.modulus_backward(grad.contiguous(), z), None


def _emulated_backend(emu):
    """A scattering Backend whose primitives are the CUDA kernels (emulated), wired like the
    compiled backend: the core does not know the difference."""
    from difftransforms.scattering.backend import Backend

    def fold(xhat, filters, width, k):  # noqa: ANN001, ANN202
        return _EmulatedFold.apply(xhat, filters.to(xhat.real.dtype).contiguous(), emu,
                                   width, k)

    def maps_vjp(xhat, filters, width, k, grad):  # noqa: ANN001, ANN202
        f = filters.to(xhat.real.dtype).contiguous()
        z = torch.fft.ifft2(emu.filter_fold(xhat.contiguous(), f, width, k))
        gz = torch.fft.fft2(emu.modulus_backward(grad.to(f.dtype).contiguous(), z),
                            norm="forward")
        return emu.filter_fold_backward(gz, f, k)

    return Backend("cuda kernels, emulated on the CPU", fold,
                   lambda z: _EmulatedModulus.apply(z, emu), False, maps_vjp=maps_vjp)


@pytest.mark.parametrize("memory_efficient", [True, False], ids=["chunked", "stored"])
def test_scattering2d_on_emulated_cuda_kernels(emu, memory_efficient):
    """Scattering2D, forward and input gradient, with every fold and modulus run by the CUDA
    kernels (emulated): equal to the pure-PyTorch reference backend (float64)."""
    from difftransforms.scattering import Scattering2D

    g = torch.Generator().manual_seed(5)
    x = torch.rand(2, 1, 24, 20, dtype=torch.float64, generator=g)
    w = torch.randn(2, 1, 25, 6, 5, dtype=torch.float64, generator=g)
    outs = []
    for backend in (_emulated_backend(emu), "reference"):
        S = Scattering2D(J=2, shape=(24, 20), L=4, backend=backend,
                         memory_efficient=memory_efficient).double()
        xr = x.clone().requires_grad_(True)
        s = S(xr)
        (gx,) = torch.autograd.grad((s * w).sum(), xr)
        outs.append((s.detach(), gx))
    assert outs[0][0].shape == (2, 1, 25, 6, 5)
    torch.testing.assert_close(outs[0][0], outs[1][0], rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(outs[0][1], outs[1][1], rtol=1e-10, atol=1e-12)
