"""Scattering: filter banks and Scattering2D against kymatio 0.3, moments and spectra against
naive full-resolution torch.fft computations (with kymatio's filters), gradients."""

from __future__ import annotations

import functools

import numpy as np
import pytest
import torch
from conftest import load_asset

from difftransforms.ops.modconv_reference import filter_fold_reference
from difftransforms.scattering import (
    CovarianceMoments,
    Scattering2D,
    ScatteringMoments,
    ScatteringSpectra,
    covariance_moments,
    gabor_filter_bank,
    get_backend,
    moments_meta,
    morlet_filter_bank,
    scattering2d,
    scattering_moments,
    scattering_spectra,
    spectra_meta,
)
from difftransforms.scattering.backend import filter_fold_torch

kymatio_fb = pytest.importorskip("kymatio.scattering2d.filter_bank")
kymatio_frontend = pytest.importorskip("kymatio.scattering2d.frontend.torch_frontend")


# kymatio's filter construction is slow: build each object once per session
@functools.cache
def kymatio_bank(M: int, N: int, J: int, L: int) -> dict:
    return kymatio_fb.filter_bank(M, N, J, L)


@functools.cache
def kymatio_scattering(J: int, shape: tuple[int, int], L: int, max_order: int,
                       pre_pad: bool = False):
    return kymatio_frontend.ScatteringTorch2D(J, shape, L=L, max_order=max_order,
                                              pre_pad=pre_pad)


def kymatio_psi(M: int, N: int, J: int, L: int) -> torch.Tensor:
    """kymatio's wavelets as a float64 ``(J, L, M, N)``."""
    psi = kymatio_bank(M, N, J, L)["psi"]
    return torch.stack([torch.from_numpy(np.asarray(p["levels"][0], dtype=np.float64))
                        for p in psi]).reshape(J, L, M, N)


def kymatio_psi_level(M: int, N: int, J: int, L: int, j: int, res: int) -> torch.Tensor:
    """kymatio's wavelets of scale ``j`` for a signal subsampled by ``2^res``: ``(L, m, n)``."""
    psi = kymatio_bank(M, N, J, L)["psi"]
    return torch.stack([torch.from_numpy(np.asarray(p["levels"][res], dtype=np.float64))
                        for p in psi if p["j"] == j])


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.detach().double().cpu(), b.detach().double().cpu()
    return float((a - b).abs().max() / b.abs().max())


def brick(h: int, w: int, n: int = 2) -> torch.Tensor:
    img = load_asset("brick.png")
    crops = [img[i * 37:i * 37 + h, i * 53:i * 53 + w] for i in range(n)]
    return torch.from_numpy(np.stack(crops))[:, None].float()


# ---------------------------------------------------------------------------- filter banks


@pytest.mark.parametrize("M,N,J,L", [(32, 32, 2, 8), (40, 48, 3, 6), (16, 24, 1, 5)])
def test_filter_bank_matches_kymatio(M, N, J, L, dtype, device):
    ref = kymatio_bank(M, N, J, L)
    fb = morlet_filter_bank((M, N), J, L, dtype=dtype, device=device)
    assert fb.psi.dtype == dtype and fb.psi.device.type == device
    for p in ref["psi"]:
        for r, level in enumerate(p["levels"]):
            ours = fb.psi_levels[r][p["j"], p["theta"]]
            assert rel_err(ours, torch.from_numpy(level)) < 1e-6, (p["j"], p["theta"], r)
    for r, level in enumerate(ref["phi"]["levels"]):
        assert rel_err(fb.phi_levels[r], torch.from_numpy(level)) < 1e-6
    assert rel_err(fb.phi, torch.from_numpy(ref["phi"]["levels"][0])) < 1e-6


def test_gabor_filter_bank_matches_kymatio_gabor():
    M, N, J, L = 24, 32, 2, 4
    ours = gabor_filter_bank((M, N), J, L, dtype=torch.float64)
    for j in range(J):
        for t in range(L):
            theta = (int(L - L / 2 - 1) - t) * np.pi / L
            g = kymatio_fb.gabor_2d(M, N, 0.8 * 2**j, theta, 3 / 4 * np.pi / 2**j, 4 / L)
            assert rel_err(ours[j, t], torch.from_numpy(np.fft.fft2(g).real)) < 1e-6


def test_filter_bank_bad_arguments():
    with pytest.raises(ValueError, match="J must be"):
        morlet_filter_bank((32, 32), 0)
    with pytest.raises(ValueError, match="shape"):
        morlet_filter_bank((32,), 2)


# ---------------------------------------------------------------------------- Scattering2D


CASES = [((32, 32), 2, 8, 2), ((32, 48), 3, 8, 2), ((16, 16), 4, 4, 2), ((33, 40), 3, 4, 1)]


@pytest.mark.parametrize("shape,J,L,max_order", CASES)
def test_scattering2d_matches_kymatio(shape, J, L, max_order, dtype, device):
    torch.manual_seed(0)
    x = torch.rand(2, 3, *shape)
    ref = kymatio_scattering(J, shape, L, max_order)(x)
    S = Scattering2D(J, shape, L=L, max_order=max_order).to(device)
    out = S(x.to(device=device, dtype=dtype))
    assert out.shape == ref.shape == (2, 3, S.n_coefficients, *S.output_shape)
    assert out.dtype == dtype
    assert rel_err(out, ref) < 1e-4
    # functional twin, same numbers
    f = scattering2d(x.to(device=device, dtype=dtype), J, L, max_order)
    assert rel_err(f, out) < 1e-6


@pytest.mark.parametrize("backend", ["reference", "torch"])
def test_scattering2d_on_brick_matches_kymatio(backend, device):
    x = brick(32, 48)
    ref = kymatio_scattering(3, (32, 48), 8, 2)(x)
    out = Scattering2D(3, (32, 48), backend=backend).to(device)(x.to(device))
    assert rel_err(out, ref) < 1e-4


def test_scattering2d_periodic_matches_kymatio_prepadded(device):
    # kymatio with pre_pad=True skips padding: the same circular transform on the padded
    # size, cropped by one output pixel per side
    kym = kymatio_scattering(2, (16, 16), 4, 2, pre_pad=True)
    Mp, Np = kym._M_padded, kym._N_padded
    x = torch.rand(2, Mp, Np)
    ref = kym(x)
    out = Scattering2D(2, (Mp, Np), L=4, padding="periodic").to(device)(x.to(device))
    assert out.shape[-2:] == (Mp // 4, Np // 4)
    assert rel_err(out[..., 1:-1, 1:-1], ref) < 1e-4


def test_scattering2d_shapes_and_meta():
    S = Scattering2D(2, (20, 24), L=3)
    assert S(torch.rand(20, 24)).shape == (S.n_coefficients, 5, 6)
    assert S(torch.rand(4, 20, 24)).shape == (4, S.n_coefficients, 5, 6)
    assert S(torch.rand(2, 1, 3, 20, 24)).shape == (2, 1, 3, S.n_coefficients, 5, 6)
    meta = S.meta()
    assert len(meta["order"]) == S.n_coefficients == 1 + 2 * 3 + 9
    assert meta["j"][7:] == [(0, 1)] * 9
    # J up to log2(min side) works; beyond is a clear error
    assert Scattering2D(4, (16, 24), L=2)(torch.rand(16, 24)).shape[-2:] == (1, 1)
    with pytest.raises(ValueError, match="J=5 is too large"):
        Scattering2D(5, (16, 24))
    with pytest.raises(ValueError, match="divisible"):
        Scattering2D(2, (18, 24), padding="periodic")


def test_scattering2d_bad_inputs():
    S = Scattering2D(2, (16, 16), L=2)
    with pytest.raises(ValueError, match="built for 16x16"):
        S(torch.rand(1, 16, 20))
    with pytest.raises(TypeError, match="floating"):
        S(torch.zeros(16, 16, dtype=torch.int64))
    x = torch.rand(16, 16)
    x[3, 3] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        S(x)
    with pytest.raises(ValueError, match="padding"):
        Scattering2D(2, (16, 16), padding="zeros")
    with pytest.raises(ValueError, match="backend"):
        Scattering2D(2, (16, 16), backend="magic")
    with pytest.raises(ValueError, match="max_order"):
        Scattering2D(2, (16, 16), max_order=3)


@pytest.mark.parametrize("padding", ["reflect", "periodic"])
def test_scattering2d_gradcheck(padding, device):
    S = Scattering2D(2, (8, 12), L=2, padding=padding).double().to(device)
    x = torch.rand(1, 8, 12, dtype=torch.float64, device=device, requires_grad=True)
    assert torch.autograd.gradcheck(S, (x,), eps=1e-6, atol=1e-6, rtol=1e-4, fast_mode=True)


def test_memory_efficient_moments_chunks_same_values_and_gradient(monkeypatch):
    from difftransforms.scattering import core

    x = torch.rand(3, 16, 16, dtype=torch.float64, requires_grad=True)
    results = []
    for me in (True, False):
        monkeypatch.setattr(core, "CHUNK_BUDGET_BYTES", 1)  # one image per chunk
        m = ScatteringMoments(3, L=2, memory_efficient=me).double()
        out = m(x)
        (g,) = torch.autograd.grad(out.square().sum(), x)
        results.append((out.detach(), g))
    assert torch.allclose(results[0][0], results[1][0], rtol=1e-12)
    assert torch.allclose(results[0][1], results[1][1], rtol=1e-10, atol=1e-12)


# MAPS_BUDGET_BYTES: 1 -> one filter per call (filter split); 2**12 -> a few rows per call;
# 2**30 -> one call (still recomputed in the backward pass)
# backend "auto": the compiled ops' direct recompute (maps_vjp) when they are built;
# "torch": autograd's checkpointed recompute
@pytest.mark.parametrize("backend", ["auto", "torch"])
@pytest.mark.parametrize("budget", [1, 2**12, 2**30])
@pytest.mark.parametrize("padding", ["reflect", "periodic"])
def test_memory_efficient_scattering_equals_stored(budget, padding, backend, monkeypatch):
    from difftransforms.scattering import core

    monkeypatch.setattr(core, "MAPS_BUDGET_BYTES", budget)
    x = torch.rand(2, 3, 16, 24, dtype=torch.float64, requires_grad=True)
    results = []
    for me in (True, False):
        S = Scattering2D(3, (16, 24), L=3, padding=padding, memory_efficient=me,
                         backend=backend).double()
        out = S(x)
        (g,) = torch.autograd.grad((out.square() * torch.linspace(0, 1, out.shape[-1],
                                   dtype=out.dtype)).sum(), x)
        results.append((out.detach(), g))
    assert torch.allclose(results[0][0], results[1][0], rtol=1e-13, atol=1e-15)
    assert torch.allclose(results[0][1], results[1][1], rtol=1e-11, atol=1e-14)


@pytest.mark.parametrize("budget", [1, 2**12])
def test_memory_efficient_no_grad_forward_equals_stored(budget, monkeypatch):
    # the chunked forward without autograd (inference) writes every chunk in place
    from difftransforms.scattering import core

    monkeypatch.setattr(core, "MAPS_BUDGET_BYTES", budget)
    x = torch.rand(2, 3, 16, 24, dtype=torch.float64)
    with torch.no_grad():
        a = Scattering2D(3, (16, 24), L=3, memory_efficient=True).double()(x)
    b = Scattering2D(3, (16, 24), L=3, memory_efficient=False).double()(x)
    assert torch.allclose(a, b, rtol=1e-13, atol=1e-15)


@pytest.mark.parametrize("N,F,per_map", [(1, 8, 2**19), (5, 3, 2**20), (40, 8, 2**12),
                                         (3, 7, 2**23), (2, 1, 2**30)])
def test_chunks_cover_every_map_once(N, F, per_map):
    from difftransforms.scattering import core

    seen = torch.zeros(N, F, dtype=torch.int64)
    chunks = core._chunks(N, F, per_map)
    for rows, fs in chunks:
        seen[rows, fs] += 1
        # whole rows, or one row's filters: the output slice is contiguous
        assert fs == slice(0, F) or rows.stop - rows.start == 1
    assert (seen == 1).all()


def test_linear_post_adjoints():
    # <post(u), g> == <u, post_adjoint(g)> for the two linear maps the chunked path inverts
    from difftransforms.ops.fft import rfft2, rfft2_adjoint
    from difftransforms.scattering import core, morlet_filter_bank

    torch.manual_seed(0)
    for H, W in ((12, 10), (9, 7)):
        u = torch.randn(3, 2, H, W, dtype=torch.float64)
        g = torch.randn(3, 2, H, W // 2 + 1, dtype=torch.complex128)
        lhs = (torch.fft.rfft2(u) * g.conj()).real.sum()
        assert torch.allclose(lhs, (u * rfft2_adjoint(g, (H, W))).sum())
        uu = u.clone().requires_grad_(True)
        (ref,) = torch.autograd.grad(torch.fft.rfft2(uu), uu, g)
        assert torch.allclose(rfft2_adjoint(g, (H, W)), ref)
        assert torch.equal(rfft2(u, out=torch.empty_like(g)), torch.fft.rfft2(u))
    fb = morlet_filter_bank((48, 40), 3, 4, dtype=torch.float64)
    C, D = core.lowpass_matrices(fb.phi_levels[1], 4, 1)
    u = torch.randn(5, 2, 24, 20, dtype=torch.float64)
    g = torch.randn(5, 2, C.shape[0], D.shape[0], dtype=torch.float64)
    lhs = (core.spatial_lowpass(u, C, D) * g).sum()
    assert torch.allclose(lhs, (u * core.spatial_lowpass_adjoint(g, C, D)).sum())


def test_second_order_gradients(monkeypatch):
    # memory_efficient=False: double backward works; True: a clear error, never a wrong value
    from difftransforms.scattering import core

    S = Scattering2D(2, (8, 8), L=2, memory_efficient=False).double()
    x = torch.rand(1, 8, 8, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradgradcheck(S, (x,), eps=1e-6, atol=1e-5, rtol=1e-3,
                                        fast_mode=True)
    monkeypatch.setattr(core, "MAPS_BUDGET_BYTES", 2**10)
    for backend in ("auto", "torch"):
        me = Scattering2D(2, (8, 8), L=2, memory_efficient=True, backend=backend).double()
        with pytest.raises(RuntimeError, match="memory_efficient=False"):
            torch.autograd.grad(me(x).square().sum(), x, create_graph=True)


def test_spatial_lowpass_equals_fourier_lowpass():
    # the second-order low-pass as two matrix products == rfft2 -> fold(φ) -> ifft2
    from difftransforms.scattering import core, get_backend, morlet_filter_bank

    fb = morlet_filter_bank((48, 40), 3, 4, dtype=torch.float64)
    backend = get_backend("reference")
    u = torch.rand(5, 24, 20, dtype=torch.float64)
    for crop in (0, 1):
        C, D = core.lowpass_matrices(fb.phi_levels[1], 4, crop)
        ours = core.spatial_lowpass(u, C, D)
        ref = core._lowpass(backend, torch.fft.rfft2(u), fb.phi_levels[1], 20, 4)
        if crop:
            ref = ref[..., 1:-1, 1:-1]
        assert ours.shape == ref.shape
        assert torch.allclose(ours, ref, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("module", ["scattering", "moments", "spectra"])
def test_constant_image_gradient_is_finite(module, dtype, device):
    # every wavelet response of a constant image is (numerically) zero: |z| at z = 0
    x = torch.full((1, 2, 16, 16), 0.5, dtype=dtype, device=device, requires_grad=True)
    m = {"scattering": Scattering2D(2, (16, 16), L=4),
         "moments": ScatteringMoments(2, L=4),
         "spectra": ScatteringSpectra(2, L=2)}[module].to(device)
    out = m(x)
    out.sum().backward()
    assert torch.isfinite(out).all()
    assert torch.isfinite(x.grad).all()


# ---------------------------------------------------------------------------- backends


@pytest.mark.parametrize("k", [1, 2, 4])
def test_filter_fold_torch_matches_reference(k, device):
    torch.manual_seed(1)
    x = torch.randn(2, 8, 12, dtype=torch.float64, device=device)
    f = torch.rand(3, 8, 12, dtype=torch.float64, device=device)
    f[:, 2:4] = 0  # whole aliased blocks of zeros are skipped
    half = torch.fft.rfft2(x)
    ref = filter_fold_reference(half, f, 12, k)
    assert torch.allclose(filter_fold_torch(half, f, 12, k), ref, atol=1e-12)
    assert torch.allclose(filter_fold_torch(torch.fft.fft2(x), f, 12, k), ref, atol=1e-12)
    xf = torch.fft.fft2(x).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda z: filter_fold_torch(z, f, 12, k), (xf,),
                                    fast_mode=True)


def test_auto_backend_uses_the_torch_fold_where_ops_are_not_built(monkeypatch):
    """'auto' with the CPU ops compiled: on a device type whose compiled ops are not built
    (a CUDA machine without nvcc), the fast non-materialising torch fold runs, not the ops'
    reference fallback; values and input gradients are unchanged (chunked and stored)."""
    from difftransforms.ops import _build
    from difftransforms.scattering import backend as bk

    auto = get_backend("auto")
    if "compiled" not in auto.name.split("(")[0]:
        pytest.skip(f"compiled CPU ops not built: {auto.name}")
    calls = []
    real_torch_fold = bk.filter_fold_torch

    def counting(*a, **kw):  # noqa: ANN002, ANN003, ANN202
        calls.append(a[0].shape)
        return real_torch_fold(*a, **kw)

    x = torch.rand(2, 24, 20, dtype=torch.float64, requires_grad=True)
    for me in (True, False):
        want = scattering2d(x, 2, 4, backend="reference", memory_efficient=me)
        (gwant,) = torch.autograd.grad(want.square().sum(), x)
        with monkeypatch.context() as m:
            m.setattr(_build, "compiled_available", lambda device_type: False)
            m.setattr(bk, "filter_fold_torch", counting)
            got = scattering2d(x, 2, 4, backend=auto, memory_efficient=me)
            (ggot,) = torch.autograd.grad(got.square().sum(), x)
        assert calls, "the torch fold was not used"
        calls.clear()
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(ggot, gwant, rtol=1e-10, atol=1e-12)
    with monkeypatch.context() as m:  # where the ops are built, they run
        m.setattr(bk, "filter_fold_torch", counting)
        scattering2d(x, 2, 4, backend=auto).sum().backward()
    assert not calls
    m = scattering_moments(x.detach(), 2, 4, backend=auto)
    torch.testing.assert_close(m, scattering_moments(x.detach(), 2, 4, backend="reference"),
                               rtol=1e-10, atol=1e-12)


def test_backends():
    assert get_backend("reference").name == "reference"
    assert get_backend("torch").name == "torch"
    assert get_backend("auto").name.startswith("auto")
    x = torch.rand(2, 32, 32, dtype=torch.float64)
    names = ["reference", "torch", "auto"]
    try:
        get_backend("compiled")
        names.append("compiled")
    except RuntimeError:
        pass
    for b in names:
        assert torch.allclose(scattering_moments(x, 3, 4, backend=b),
                              scattering_moments(x, 3, 4, backend="reference"), rtol=1e-10)
        assert torch.allclose(scattering2d(x, 2, 4, backend=b),
                              scattering2d(x, 2, 4, backend="reference"), rtol=1e-10)
    with pytest.raises(ValueError, match="unknown backend"):
        get_backend("fast")


# ---------------------------------------------------------------------------- moments


def naive_moments(x: torch.Tensor, J: int, L: int, oversampling: int | None) -> torch.Tensor:
    """S1, S2 by plain full-resolution FFT convolutions with kymatio's filters and
    torch.abs; ``oversampling=None``: means over all pixels; an int ``o``: maps of scale
    ``j`` sampled every ``2^max(j-o, 0)`` pixels (kymatio's sampling for ``o=0``)."""
    H, W = x.shape[-2:]
    psi = kymatio_psi(H, W, J, L)
    X = torch.fft.fft2(x.double())

    def step(j: int) -> int:
        return 1 if oversampling is None else 2 ** max(j - oversampling, 0)

    u1 = [torch.fft.ifft2(X[..., None, :, :] * psi[j]).abs() for j in range(J)]
    s1 = [u1[j][..., ::step(j), ::step(j)].mean(dim=(-2, -1)) for j in range(J)]
    s2 = []
    for j1 in range(J):
        k1 = step(j1)
        u = u1[j1][..., ::k1, ::k1]  # (..., L1, h, w) on the grid of scale j1
        if j1 == J - 1:
            break
        res = int(np.log2(k1))
        Uh = torch.fft.fft2(u)
        for t1 in range(L):
            for j2 in range(j1 + 1, J):
                k = step(j2) // k1
                v = torch.fft.ifft2(Uh[..., t1, None, :, :]
                                    * kymatio_psi_level(H, W, J, L, j2, res))
                s2.append(v.abs()[..., ::k, ::k].mean(dim=(-2, -1)))
    return torch.cat([torch.stack(s1, -2).flatten(-2), torch.cat(s2, -1)], -1)


@pytest.mark.parametrize("oversampling", [0, 1, 2])
def test_moments_match_naive(oversampling, dtype, device):
    x = brick(32, 48).squeeze(1).double()
    J, L = 3, 4
    out = scattering_moments(x.to(device=device, dtype=dtype), J, L,
                             oversampling=oversampling, normalize=False)
    assert out.shape == (2, 2 + J * L + L * L * 3) and out.dtype == dtype
    assert torch.allclose(out[:, 0].cpu().double(), x.mean(dim=(-2, -1)), rtol=1e-5)
    assert torch.allclose(out[:, 1].cpu().double(), x.var(dim=(-2, -1), unbiased=False),
                          rtol=1e-4)
    tol = 1e-5 if dtype == torch.float64 else 1e-4
    # exactly the same sampling as the naive computation
    assert rel_err(out[:, 2:], naive_moments(x, J, L, oversampling)) < tol
    # and close to full-resolution means (exact at oversampling=2 for J=3)
    full_tol = {0: 2e-2, 1: 3e-3, 2: tol}[oversampling]
    full = naive_moments(x, J, L, None)
    assert float(((out[:, 2:].cpu().double() - full).abs() / full).max()) < full_tol


def test_moments_any_size_and_normalisation(device):
    torch.manual_seed(2)
    x = torch.rand(1, 2, 30, 44, dtype=torch.float64, device=device)  # 30 = 2 x 15
    m = ScatteringMoments(2, L=3).to(device)
    out = m(x)
    assert out.shape == (1, 2, m.n_moments) and len(m.meta()["kind"]) == m.n_moments
    raw = scattering_moments(x, 2, 3, normalize=False)
    meta = moments_meta(2, 3)
    kinds = np.array(meta["kind"])
    assert torch.allclose(out[..., kinds != "S2"], raw[..., kinds != "S2"])
    # S2 / S1(j1, θ1) it comes from
    s1 = {(j[0], t[0]): raw[..., i] for i, (k, j, t) in
          enumerate(zip(meta["kind"], meta["j"], meta["theta"], strict=True)) if k == "S1"}
    for i, (k, j, t) in enumerate(zip(meta["kind"], meta["j"], meta["theta"], strict=True)):
        if k == "S2":
            assert torch.allclose(out[..., i], raw[..., i] / (s1[j[0], t[0]] + 1e-8))
    naive = naive_moments(x.cpu().reshape(2, 30, 44), 2, 3, 0)
    assert rel_err(raw.reshape(2, -1)[:, 2:], naive) < 1e-6  # kymatio: float32 filters
    # a second size reuses the module, the filters are built lazily per size
    assert m(torch.rand(16, 16, dtype=torch.float64, device=device)).shape == (m.n_moments,)
    with pytest.raises(ValueError, match="too large"):
        m(torch.rand(3, 3, device=device))


def test_moments_gradcheck(device):
    x = torch.rand(1, 8, 12, dtype=torch.float64, device=device, requires_grad=True)
    m = ScatteringMoments(2, L=2)
    assert torch.autograd.gradcheck(m, (x,), eps=1e-6, atol=1e-6, rtol=1e-4, fast_mode=True)


# ---------------------------------------------------------------------------- covariance / spectra


def naive_spectra(x: torch.Tensor, J: int, L: int) -> torch.Tensor:
    H, W = x.shape[-2:]
    psi = kymatio_psi(H, W, J, L)
    y = torch.fft.ifft2(torch.fft.fft2(x)[..., None, None, :, :] * psi)  # (J, L, H, W)
    u = y.abs()
    P = (u**2).mean(dim=(-2, -1))
    var = x.var(unbiased=False)
    vals = [x.mean()[None], var[None], (P / var).flatten(), (u.mean((-2, -1)) / P.sqrt()).flatten()]
    uh = torch.fft.fft2(u)
    s3, s4 = [], []
    for j2 in range(J):
        for j1 in range(j2 + 1):
            for t1 in range(L):
                for t2 in range(L):
                    b = torch.fft.ifft2(uh[j1, t1] * psi[j2, t2])
                    s3.append((y[j2, t2] * b.conj()).mean() / (P[j1, t1] * P[j2, t2]).sqrt())
    for j3 in range(J):
        for j2 in range(j3 + 1):
            for j1 in range(j2 + 1):
                for t3 in range(L):
                    for t1 in range(L):
                        for t2 in range(L):
                            a = torch.fft.ifft2(uh[j1, t1] * psi[j3, t3])
                            b = torch.fft.ifft2(uh[j2, t2] * psi[j3, t3])
                            s4.append((a * b.conj()).mean() / (P[j1, t1] * P[j2, t2]).sqrt())
    s3, s4 = torch.stack(s3), torch.stack(s4)
    return torch.cat(vals + [s3.real, s3.imag, s4.real, s4.imag])


@pytest.mark.parametrize("oversampling", [1, 2])
def test_spectra_match_naive(oversampling, device):
    x = brick(32, 32, 1)[0, 0].double()
    J, L = 3, 2
    S = ScatteringSpectra(J, L, oversampling=oversampling).to(device)
    out = S(x.to(device)).cpu()
    ref = naive_spectra(x, J, L)
    assert out.shape == ref.shape == (S.n_statistics,)
    assert len(spectra_meta(J, L)["kind"]) == S.n_statistics
    err = (out - ref).abs().max()
    assert err < (2e-6 if oversampling == 2 else 2e-3), err  # kymatio: float32 filters
    assert torch.allclose(scattering_spectra(x, J, L, oversampling=oversampling), out)


def test_spectra_gradcheck():
    x = torch.rand(8, 8, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda z: scattering_spectra(z, 2, 2), (x,), eps=1e-6,
                                    atol=1e-6, rtol=1e-4, fast_mode=True)


def test_covariance_moments_power(dtype, device):
    torch.manual_seed(3)
    x = torch.rand(2, 24, 40, dtype=torch.float64)
    J, L = 3, 4
    psi = kymatio_psi(24, 40, J, L)
    P = torch.fft.ifft2(torch.fft.fft2(x)[:, None, None] * psi).abs().square().mean((-2, -1))
    out = CovarianceMoments(J, L, normalize=False)(x.to(device=device, dtype=dtype)).cpu()
    assert out.shape == (2, 2 + J * L) and out.dtype == dtype
    assert rel_err(out[:, 2:], P.reshape(2, -1)) < (1e-6 if dtype == torch.float64 else 1e-5)
    normed = covariance_moments(x, J, L)
    assert torch.allclose(normed[:, 2:] * normed[:, 1:2], P.reshape(2, -1), rtol=1e-8)


@pytest.mark.parametrize("shape", [(0, 24, 20), (2, 0, 24, 20)], ids=["B=0", "C=0"])
def test_empty_batches_give_empty_outputs(shape):
    """No images in: empty outputs of the right shape (and an empty gradient), never an FFT
    library error, from every front-end."""
    x = torch.rand(shape, requires_grad=True)
    lead = shape[:-2]
    cases = [
        (lambda z: scattering2d(z, J=2, L=2), (9, 6, 5)),
        (lambda z: Scattering2D(2, (24, 20), L=2)(z), (9, 6, 5)),
        (lambda z: scattering2d(z, J=2, L=2, padding="periodic"), (9, 6, 5)),
        (lambda z: ScatteringMoments(2, 2)(z), (10,)),
        (lambda z: scattering_moments(z, 2, 2, memory_efficient=False), (10,)),
        (lambda z: CovarianceMoments(2, 2)(z), (6,)),
        (lambda z: ScatteringSpectra(2, 2)(z), (98,)),
    ]
    for fn, tail in cases:
        y = fn(x)
        assert y.shape == (*lead, *tail)
        (g,) = torch.autograd.grad(y.sum(), x)
        assert g.shape == x.shape


def test_module_in_float64_equals_functional_exactly():
    """.double() refills the filters from the float64 bank (not an upcast of float32
    filters), so module and functional agree to float64 precision."""
    x = torch.rand(2, 3, 32, 32, dtype=torch.float64)
    S = Scattering2D(J=3, shape=(32, 32), L=4).double()
    torch.testing.assert_close(S(x), scattering2d(x, J=3, L=4), rtol=1e-13, atol=1e-15)
    S32 = S.float()  # and back: float32 filters rounded from float64
    assert S32.psi_0.dtype == torch.float32
    torch.testing.assert_close(S32(x.float()), scattering2d(x.float(), J=3, L=4))


def test_functional_filters_are_cast_once_and_cached():
    from difftransforms.scattering.scattering2d import bank_for

    x = torch.rand(1, 32, 32)
    a = bank_for((32, 32), 2, 4, x)
    assert bank_for((32, 32), 2, 4, x) is a  # no rebuild, no second cast
    assert a.psi.dtype == torch.float32 and a.psi_levels[0] is a.psi  # level 0 shared
    assert bank_for((32, 32), 2, 4, x.double()).psi.dtype == torch.float64


def test_integer_parameters_validation():
    """NumPy integers are integers; bools, floats and non-positive sizes are refused with the
    parameter's name, the same way in every front-end."""
    S = Scattering2D(J=np.int64(2), shape=np.array([16, 16]), L=np.int64(2))
    assert S(torch.rand(1, 16, 16)).shape == (1, 9, 4, 4)
    assert morlet_filter_bank(np.array([16, 16]), np.int64(2), 4).psi.shape == (2, 4, 16, 16)
    for make in (lambda: morlet_filter_bank((16, 16), True), lambda: gabor_filter_bank((16, 16),
                 True), lambda: Scattering2D(J=True, shape=(16, 16)),
                 lambda: morlet_filter_bank((16, 16), 2.0)):
        with pytest.raises(ValueError, match="J must be an int >= 1"):
            make()
    with pytest.raises(ValueError, match="shape must be two positive ints"):
        Scattering2D(J=1, shape=(-4, 16))
    with pytest.raises(ValueError, match="at least 2x2 pixels"):
        scattering2d(torch.rand(1, 2), J=1)
