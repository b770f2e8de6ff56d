"""The compiled filter_fold / modulus ops against the pure-PyTorch reference and dense torch.

CPU cases need the compiled CPU extension: without a C++ compiler (or with
DIFFTRANSFORMS_BACKEND=reference) they skip with the reason; with a compiler present a
failed build is a test failure. CUDA cases run only on a GPU (the `device` fixture).
"""

from __future__ import annotations

import pytest
import torch
from conftest import CDTYPE, fold_inputs

from difftransforms.ops import _build, filter_fold, modulus
from difftransforms.ops.modconv import filter_fold_backward
from difftransforms.ops.modconv_reference import filter_fold_reference, modulus_reference

TOL = {torch.float32: {"rtol": 2e-5, "atol": 2e-5}, torch.float64: {"rtol": 1e-12, "atol": 1e-12}}

# (H, W, k): even / odd / non-square sizes, k in {1, 2, 4}; odd folded sizes too.
SHAPES = [(16, 16, 1), (16, 16, 2), (16, 16, 4), (12, 20, 4), (15, 9, 1), (10, 6, 2),
          (6, 10, 2), (1, 1, 1), (8, 2, 2)]


def _require_compiled(device: str) -> None:
    if _build.backend_setting() == "reference":
        pytest.skip("DIFFTRANSFORMS_BACKEND=reference forces the reference path")
    st = _build.load(device)
    if st.loaded:
        return
    if st.error:  # a toolchain is there but the build failed: that is a bug
        pytest.fail(f"compiled {device} ops failed to build: {st.reason}")
    pytest.skip(f"compiled {device} ops unavailable: {st.reason}")


@pytest.fixture
def ops(device: str):
    _require_compiled(device)
    return torch.ops.difftransforms


@pytest.mark.parametrize("hermitian", [True, False], ids=["rfft2", "arbitrary"])
@pytest.mark.parametrize(("H", "W", "k"), SHAPES, ids=[f"{h}x{w}k{k}" for h, w, k in SHAPES])
def test_filter_fold_matches_reference(ops, device, dtype, H, W, k, hermitian):
    xhat, filters = fold_inputs(3, 5, H, W, dtype, device, hermitian)
    xhat.requires_grad_(True)
    filters.requires_grad_(True)
    out = ops.filter_fold(xhat, filters, W, k)
    ref = filter_fold_reference(xhat, filters, W, k)
    assert out.shape == (3, 5, H // k, W // k) and out.dtype == CDTYPE[dtype]
    torch.testing.assert_close(out, ref, **TOL[dtype])
    g = torch.randn_like(out)
    gx, gf = torch.autograd.grad(out, (xhat, filters), g)
    rx, rf = torch.autograd.grad(ref, (xhat, filters), g)
    torch.testing.assert_close(gx, rx, **TOL[dtype])
    torch.testing.assert_close(gf, rf, rtol=TOL[dtype]["rtol"] * 10, atol=TOL[dtype]["atol"] * 10)


@pytest.mark.parametrize("k", [1, 2, 4])
def test_filter_fold_equals_dense_spatial_convolution(ops, device, dtype, k):
    """Outside reference: ifft2(out) == (filters * fft2(x)) convolved then sampled every k."""
    H, W = 16, 12
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, H, W, dtype=dtype, generator=g).to(device)
    filters = torch.rand(3, H, W, dtype=dtype, generator=g).to(device)
    out = ops.filter_fold(torch.fft.rfft2(x), filters, W, k)
    dense = torch.fft.ifft2(torch.fft.fft2(x)[:, None] * filters)[..., ::k, ::k]
    torch.testing.assert_close(torch.fft.ifft2(out), dense, **TOL[dtype])


def test_filter_fold_adjoint_identity(ops, device, dtype):
    """<A x, y> == <x, A* y> in the real inner product (xhat treated as free variables)."""
    H, W, k = 12, 10, 2
    xhat, filters = fold_inputs(2, 4, H, W, dtype, device, hermitian=False)
    y = torch.randn(2, 4, H // k, W // k, dtype=CDTYPE[dtype], device=device)
    lhs = (ops.filter_fold(xhat, filters, W, k).conj() * y).real.sum()
    rhs = (xhat.conj() * ops.filter_fold_backward(y, filters, k)).real.sum()
    torch.testing.assert_close(lhs, rhs, **TOL[dtype])


@pytest.mark.parametrize(("W", "k"), [(6, 1), (6, 2), (5, 1), (4, 4)])
def test_end_to_end_gradient_through_rfft2(ops, device, dtype, W, k):
    """x real -> rfft2 -> filter_fold -> ifft2 -> modulus -> sum: same grads as the reference
    pipeline (the test that checks the self-conjugate columns v = 0 and v = W/2)."""
    H = 8
    g = torch.Generator().manual_seed(2)
    x0 = torch.randn(2, H, W, dtype=dtype, generator=g).to(device)
    filters = torch.rand(3, H, W, dtype=dtype, generator=g).to(device)

    def pipeline(fold, mod):
        x = x0.clone().requires_grad_(True)
        u = mod(torch.fft.ifft2(fold(torch.fft.rfft2(x), filters, W, k)))
        (u * torch.linspace(0.5, 2, u.numel(), dtype=dtype, device=device).view(u.shape)
         ).sum().backward()
        return u, x.grad

    u, gx = pipeline(ops.filter_fold, ops.modulus)
    ur, gr = pipeline(filter_fold_reference, modulus_reference)
    torch.testing.assert_close(u, ur, **TOL[dtype])
    torch.testing.assert_close(gx, gr, **TOL[dtype])
    if dtype == torch.float64:  # and against finite differences of the whole pipeline

        def f(x):
            return ops.modulus(torch.fft.ifft2(ops.filter_fold(torch.fft.rfft2(x), filters, W,
                                                               k)))

        assert torch.autograd.gradcheck(f, (x0.clone().requires_grad_(True),), fast_mode=True)


@pytest.mark.parametrize(("H", "W", "k"), [(4, 6, 2), (3, 5, 1), (4, 4, 4)])
def test_filter_fold_gradcheck_complex128(ops, device, H, W, k):
    xhat, filters = fold_inputs(2, 2, H, W, torch.float64, device, hermitian=False)
    xhat.requires_grad_(True)
    filters.requires_grad_(True)

    def f(a, b):
        return ops.filter_fold(a, b, W, k)

    assert torch.autograd.gradcheck(f, (xhat, filters), fast_mode=k != 2)
    assert torch.autograd.gradgradcheck(f, (xhat, filters), fast_mode=True)


def test_filter_fold_backward_gradcheck(ops, device):
    H, W, k = 4, 6, 2
    _, filters = fold_inputs(2, 2, H, W, torch.float64, device)
    grad = torch.randn(2, 2, H // k, W // k, dtype=torch.complex128, device=device,
                       requires_grad=True)
    filters.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda g, f: ops.filter_fold_backward(g, f, k),
                                    (grad, filters), fast_mode=True)


def test_opcheck_filter_fold(ops, device, dtype):
    xhat, filters = fold_inputs(2, 3, 6, 5, dtype, device, hermitian=False)
    xhat.requires_grad_(True)
    filters.requires_grad_(True)
    torch.library.opcheck(ops.filter_fold, (xhat, filters, 5, 1))
    g = torch.randn(2, 3, 3, 5, dtype=CDTYPE[dtype], device=device, requires_grad=True)
    xhat2, filters2 = fold_inputs(2, 3, 6, 10, dtype, device)
    torch.library.opcheck(ops.filter_fold, (xhat2, filters2, 10, 2))
    torch.library.opcheck(ops.filter_fold_backward, (g, filters2, 2))


def test_opcheck_modulus(ops, device, dtype):
    z = torch.randn(3, 4, 5, dtype=CDTYPE[dtype], device=device, requires_grad=True)
    torch.library.opcheck(ops.modulus, (z,))
    g = torch.randn(3, 4, 5, dtype=dtype, device=device, requires_grad=True)
    torch.library.opcheck(ops.modulus_backward, (g, z))


def test_modulus_matches_abs_and_stable_gradient(ops, device, dtype):
    z = torch.randn(4, 33, dtype=CDTYPE[dtype], device=device)
    z[0, :5] = 0
    z[1, 0] = complex(3e30, 4e30) if dtype == torch.float32 else complex(3e300, 4e300)
    z[1, 1] = complex(1e-30, 0) if dtype == torch.float32 else complex(1e-300, 0)
    z.requires_grad_(True)
    m = ops.modulus(z)
    torch.testing.assert_close(m, z.detach().abs(), rtol=1e-6 if dtype == torch.float32 else 1e-15,
                               atol=0)
    assert torch.isfinite(m).all()
    (gz,) = torch.autograd.grad(m.sum(), z)
    assert torch.isfinite(gz.real).all() and torch.isfinite(gz.imag).all()
    assert (gz[0, :5] == 0).all()
    (gr,) = torch.autograd.grad(modulus_reference(z).sum(), z)
    torch.testing.assert_close(gz, gr, **TOL[dtype])


def test_modulus_fast_and_scaled_blocks(ops, device, dtype):
    """The kernels square |z| directly and redo only blocks whose squares under- or overflow
    with hypot's scaling: mixed blocks, extreme magnitudes (subnormal, huge, zero), large
    upstream gradients; against float64/complex128 evaluations."""
    g = torch.Generator().manual_seed(1)
    n = 5000
    z = torch.randn(3, n, dtype=torch.complex128, generator=g)
    big, small = (1e30, 1e-30) if dtype == torch.float32 else (1e300, 1e-300)
    sub = 1e-40 if dtype == torch.float32 else 1e-310  # subnormal
    z[0, 17] *= big
    z[0, 3000] *= small
    z[1, 700] = complex(sub, -sub)
    z[1, 701] = complex(0.0, sub)
    z[1, 4000:4010] = 0
    z[2, 2500] = complex(1e-20, 3e-20)  # squares underflow in float32 only
    zd = z.to(CDTYPE[dtype]).to(device)
    ref = zd.to(torch.complex128).abs()  # exact magnitudes of the rounded inputs
    m = ops.modulus(zd)
    fi = torch.finfo(dtype)
    sub_ulp = 2 * fi.tiny * fi.eps  # results in the subnormal range have absolute precision
    torch.testing.assert_close(m.to(torch.float64), ref, rtol=3e-7 if dtype == torch.float32
                               else 1e-15, atol=sub_ulp)
    gout = torch.randn(3, n, dtype=torch.float64, generator=g).to(device)
    gout[2, :100] *= 1e30 if dtype == torch.float32 else 1e300  # large upstream gradients
    gz = ops.modulus_backward(gout.to(dtype), zd)
    # z / |z| of an exactly rescaled z (a power of two per element: no subnormals)
    v = torch.view_as_real(zd.to(torch.complex128))
    v = torch.ldexp(v, -torch.frexp(v.abs().amax(-1, keepdim=True)).exponent)
    r = v.norm(dim=-1, keepdim=True)
    unit = torch.view_as_complex(torch.where(r > 0, v / r.clamp_min(1e-300), 0).contiguous())
    want = gout.to(dtype).to(torch.float64) * unit
    assert torch.isfinite(torch.view_as_real(gz)).all()
    torch.testing.assert_close(gz.to(torch.complex128), want,
                               rtol=1e-6 if dtype == torch.float32 else 1e-14, atol=0)
    assert (gz[1, 4000:4010] == 0).all()


def test_modulus_of_non_finite_values_is_torch_abs(ops, device, dtype):
    inf, nan = float("inf"), float("nan")
    vals = [complex(inf, 0), complex(0, -inf), complex(inf, nan), complex(nan, inf),
            complex(nan, 1), complex(-inf, inf), complex(3, 4)]
    z = torch.tensor(vals * 40, dtype=CDTYPE[dtype], device=device)  # > one 512 block too
    torch.testing.assert_close(ops.modulus(z), z.abs(), equal_nan=True)


def test_modulus_gradgradcheck(ops, device):
    z = torch.randn(3, 5, dtype=torch.complex128, device=device, requires_grad=True)
    assert torch.autograd.gradcheck(ops.modulus, (z,))
    assert torch.autograd.gradgradcheck(ops.modulus, (z,))
    g = torch.randn(3, 5, dtype=torch.float64, device=device, requires_grad=True)
    assert torch.autograd.gradcheck(ops.modulus_backward, (g, z))


def test_constant_image_has_finite_gradients(ops, device, dtype):
    """A constant image: the wavelet-like filters (zero at DC) give exactly zero coefficients,
    the modulus sits at z = 0; the gradient must be finite (0), not NaN."""
    H = W = 16
    x = torch.full((2, H, W), 0.7, dtype=dtype, device=device, requires_grad=True)
    filters = torch.rand(4, H, W, dtype=dtype, device=device)
    filters[:, 0, 0] = 0  # band-pass
    u1 = ops.modulus(torch.fft.ifft2(ops.filter_fold(torch.fft.rfft2(x), filters, W, 2)))
    u2 = ops.modulus(torch.fft.ifft2(ops.filter_fold(torch.fft.rfft2(u1.reshape(8, 8, 8)),
                                                     filters[:, ::2, ::2].contiguous(), 8, 2)))
    (u1.sum() + u2.sum()).backward()
    assert torch.isfinite(x.grad).all()
    assert (x.grad == 0).all()


def test_noncontiguous_and_conjfold_inputs(ops, device):
    H, W, k = 8, 6, 2
    xhat, filters = fold_inputs(3, 4, H, W, torch.float64, device, hermitian=False)
    xt = xhat.transpose(0, 1).contiguous().transpose(0, 1)  # non-contiguous, same values
    ft = filters.flip(0).contiguous().flip(0)[:, :, :]
    torch.testing.assert_close(ops.filter_fold(xt, ft, W, k),
                               filter_fold_reference(xhat, filters, W, k))
    xc = xhat.conj()  # lazily conjugated view
    torch.testing.assert_close(ops.filter_fold(xc, filters, W, k),
                               filter_fold_reference(xc.resolve_conj(), filters, W, k))
    torch.testing.assert_close(ops.modulus(xc[:, ::2]), xhat[:, ::2].abs())


def test_kernel_errors_are_clear(ops, device):
    xhat, filters = fold_inputs(2, 3, 8, 6, torch.float64, device)
    with pytest.raises(RuntimeError, match="does not match filters dtype"):
        ops.filter_fold(xhat, filters.float(), 6, 2)
    with pytest.raises(RuntimeError, match="must divide"):
        ops.filter_fold(xhat, filters, 6, 4)
    with pytest.raises(RuntimeError, match="width // 2 \\+ 1"):
        ops.filter_fold(xhat, filters, 9, 1)
    with pytest.raises(RuntimeError, match="complex64 or complex128"):
        ops.modulus(filters)


# ----------------------------------------------------------------------------------------
# Public API: dispatch, validation, fallback


def test_public_api_dispatch_and_backend_arg(device, dtype):
    xhat, filters = fold_inputs(2, 3, 8, 6, dtype, device)
    ref = filter_fold(xhat, filters, 6, 2, backend="reference")
    torch.testing.assert_close(ref, filter_fold_reference(xhat, filters, 6, 2))
    auto = filter_fold(xhat, filters.double(), 6, 2)  # filters follow xhat's precision
    torch.testing.assert_close(auto, ref, **TOL[dtype])
    z = torch.fft.ifft2(auto)
    torch.testing.assert_close(modulus(z), z.abs(), **TOL[dtype])
    gb = filter_fold_backward(auto, filters, 2, backend="reference")
    assert gb.shape == xhat.shape
    if _build.load(device).loaded:
        torch.testing.assert_close(filter_fold(xhat, filters, 6, 2, backend="compiled"), ref,
                                   **TOL[dtype])
        torch.testing.assert_close(filter_fold_backward(auto, filters, 2), gb, **TOL[dtype])


def test_public_api_validation():
    xhat = torch.zeros(2, 8, 4, dtype=torch.complex64)
    f = torch.zeros(3, 8, 6)
    with pytest.raises(ValueError, match="width // 2 \\+ 1"):
        filter_fold(xhat, f, 9, 1)
    with pytest.raises(ValueError, match="must divide"):
        filter_fold(xhat, f, 6, 4)
    with pytest.raises(ValueError, match="spatial shape"):
        filter_fold(xhat, torch.zeros(3, 8, 7), 6, 1)
    with pytest.raises(ValueError, match="complex"):
        filter_fold(xhat.real, f, 6, 1)
    with pytest.raises(ValueError, match="backend"):
        filter_fold(xhat, f, 6, 1, backend="fast")
    with pytest.raises(ValueError, match="complex64/complex128"):
        modulus(f)


def test_backend_info_and_compiled_helpers(monkeypatch):
    from difftransforms.ops import modconv

    info = modconv.backend_info("cpu")
    assert info.startswith("compiled") == modconv.compiled_available("cpu")
    assert modconv.backend_info("mps").startswith("reference")
    if modconv.compiled_available("cpu"):
        z = torch.randn(3, 4, dtype=torch.complex64)
        torch.testing.assert_close(modconv.modulus_compiled(z), z.abs())
    monkeypatch.setenv(_build.BACKEND_ENV, "reference")
    assert "forced" in modconv.backend_info("cpu") and not modconv.compiled_available("cpu")


def test_backend_env(monkeypatch):
    monkeypatch.setenv(_build.BACKEND_ENV, "reference")
    assert _build.use_compiled("cpu") is False
    monkeypatch.setenv(_build.BACKEND_ENV, "bogus")
    with pytest.raises(ValueError, match="DIFFTRANSFORMS_BACKEND"):
        _build.use_compiled("cpu")
    monkeypatch.setenv(_build.BACKEND_ENV, "cpp")
    with pytest.raises(RuntimeError, match="no compiled kernels for device type 'mps'"):
        _build.use_compiled("mps")


@pytest.mark.parametrize(("H", "W", "k"), [(16, 12, 2), (16, 16, 4), (8, 9, 1)])
def test_filter_fold_skips_zero_filter_blocks_correctly(ops, device, dtype, H, W, k):
    """Band-pass banks are exactly zero on most aliased blocks at coarse scales; the kernels
    skip those blocks: results (and gradients) must not change."""
    xhat, filters = fold_inputs(5, 4, H, W, dtype, device, hermitian=False)
    hk, wk = H // k, W // k
    g = torch.Generator().manual_seed(3)
    dead = torch.rand(4, k, k, generator=g) < 0.6
    dead[0] = True  # one filter entirely zero
    mask = (~dead).repeat_interleave(hk, 1).repeat_interleave(wk, 2).to(device)
    filters = (filters * mask).requires_grad_(True)
    xhat.requires_grad_(True)
    out = ops.filter_fold(xhat, filters, W, k)
    ref = filter_fold_reference(xhat, filters, W, k)
    torch.testing.assert_close(out, ref, **TOL[dtype])
    gout = torch.randn_like(out)
    got = torch.autograd.grad(out, (xhat, filters), gout)
    exp = torch.autograd.grad(ref, (xhat, filters), gout)
    torch.testing.assert_close(got[0], exp[0], **TOL[dtype])
    torch.testing.assert_close(got[1], exp[1], rtol=TOL[dtype]["rtol"] * 10,
                               atol=TOL[dtype]["atol"] * 10)
    assert (out[:, 0] == 0).all()


@pytest.mark.parametrize("backend", ["compiled", "reference"])
def test_modulus_maps_vjp_equals_autograd(device, backend):
    """The direct recompute-and-adjoint backward of |ifft2(filter_fold(.))| equals autograd
    through the reference ops (float64), zero responses included."""
    from difftransforms.ops.modconv import modulus_maps_vjp

    if backend == "compiled":
        _require_compiled(device)
    xhat, filters = fold_inputs(3, 5, 12, 10, torch.float64, device)
    filters[1] = 0  # exactly zero maps: gradient 0, not NaN
    g = torch.randn(3, 5, 6, 5, dtype=torch.float64, device=device)
    got = modulus_maps_vjp(xhat, filters, 10, 2, g, backend=backend)
    xd = xhat.clone().requires_grad_(True)
    u = modulus_reference(torch.fft.ifft2(filter_fold_reference(xd, filters, 10, 2)))
    (want,) = torch.autograd.grad((u * g).sum(), xd)
    assert torch.isfinite(torch.view_as_real(got)).all()
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)


def test_public_api_argument_types():
    import numpy as np

    xhat = torch.fft.rfft2(torch.rand(2, 8, 12))
    f = torch.rand(3, 8, 12)
    assert filter_fold(xhat, f, np.int64(12), np.int64(2)).shape == (2, 3, 4, 6)
    with pytest.raises(TypeError, match="width must be an integer"):
        filter_fold(xhat, f, 12.7, 2)
    with pytest.raises(ValueError, match="grad must be complex64/complex128"):
        filter_fold_backward(torch.rand(2, 3, 4, 6), f, 2)
    with pytest.raises(ValueError, match="does not match filters"):
        filter_fold_backward(torch.rand(2, 3, 4, 5, dtype=torch.complex64), f, 2)
    g = torch.randn(2, 3, 4, 6, dtype=torch.complex128)
    for backend in ("reference", None):  # float32 filters follow grad's precision
        out = filter_fold_backward(g, f, 2, backend=backend)
        assert out.dtype == torch.complex128
        torch.testing.assert_close(out, filter_fold_backward(g, f.double(), 2,
                                                             backend="reference"))
    from difftransforms.ops import modulus_maps_vjp

    with pytest.raises(ValueError, match="real floating"):
        modulus_maps_vjp(xhat, f, 12, 2, g)
