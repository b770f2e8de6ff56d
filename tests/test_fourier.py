"""difftransforms.fourier against scipy.ndimage / scipy.signal / scikit-image."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.ndimage as ndi
import scipy.signal
import torch
from torch.autograd import gradcheck

from difftransforms.fourier import (
    GaussianBlur,
    UnsharpMask,
    WienerDenoise,
    estimate_noise_std,
    gaussian_blur,
    gaussian_kernel1d,
    gaussian_psf,
    richardson_lucy,
    unsharp_mask,
    wiener_deconvolve,
    wiener_denoise,
)

skr = pytest.importorskip("skimage.restoration")

SIGMAS = [0.5, 1.0, 4.0, 16.0]
SHAPES = [(17, 21), (16, 16), (24, 40)]
METHODS = ["fft", "direct", "auto"]
PAD_MODES = [("reflect", "reflect", 4.0), ("periodic", "wrap", 8.0)]


@pytest.fixture(autouse=True)
def _one_thread():
    """These tensors are small: a single intra-op thread avoids OpenMP fork/join stalls
    (gradcheck runs thousands of tiny ops, 10-50x slower on a loaded 2-core machine)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    return float(10 * np.log10(1.0 / np.mean((np.asarray(a, np.float64) - b) ** 2)))


def scipy_blur(a: np.ndarray, sigma, mode: str, truncate: float) -> np.ndarray:
    return ndi.gaussian_filter(a, sigma, mode=mode, truncate=truncate, axes=(-2, -1))


# --------------------------------------------------------------------------- Gaussian blur


@pytest.mark.parametrize("sigma", [0.3, 0.5, 1.0, 2.5, 16.0])
@pytest.mark.parametrize("truncate", [4.0, 2.0])
def test_kernel1d_equals_scipy_impulse_response(sigma: float, truncate: float) -> None:
    k = gaussian_kernel1d(sigma, truncate, dtype=torch.float64).numpy()
    r = int(truncate * sigma + 0.5)
    assert k.shape == (2 * r + 1,)
    impulse = np.zeros(4 * r + 3)
    impulse[2 * r + 1] = 1.0
    ref = ndi.gaussian_filter1d(impulse, sigma, truncate=truncate, mode="constant")
    np.testing.assert_allclose(k, ref[r + 1:3 * r + 2], rtol=0, atol=1e-15)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("padding,mode,truncate", PAD_MODES)
@pytest.mark.parametrize("shape", SHAPES)
def test_blur_matches_scipy_float32(method, padding, mode, truncate, shape) -> None:
    rng = np.random.default_rng(0)
    a = rng.random((2, 3, *shape)).astype(np.float32)
    x = torch.from_numpy(a)
    for sigma in SIGMAS:
        ref = scipy_blur(a.astype(np.float64), sigma, mode, truncate)
        out = gaussian_blur(x, sigma, padding, truncate, method)
        assert out.dtype == torch.float32 and out.shape == x.shape
        np.testing.assert_allclose(out.numpy(), ref, rtol=0, atol=1e-5,
                                   err_msg=f"sigma={sigma}")


@pytest.mark.parametrize("method", ["fft", "direct"])
@pytest.mark.parametrize("padding,mode,truncate", PAD_MODES + [("reflect", "reflect", 8.0)])
def test_blur_float64_anisotropic_and_tiny_images(method, padding, mode, truncate) -> None:
    # kernels far longer than the image: repeated reflection / wrapping, as scipy
    rng = np.random.default_rng(1)
    for shape, sigma in [((5, 7), (16.0, 4.0)), ((3, 2), 1.0), ((1, 9), (0.5, 2.0)),
                         ((31, 12), (1.3, 6.0))]:
        a = rng.random(shape)
        out = gaussian_blur(torch.from_numpy(a), sigma, padding, truncate, method)
        assert out.shape == shape
        ref = scipy_blur(a, sigma, mode, truncate)
        np.testing.assert_allclose(out.numpy(), ref, rtol=0, atol=1e-12)


def test_blur_layouts_and_tensor_sigma() -> None:
    rng = np.random.default_rng(2)
    a = rng.random((3, 20, 18))
    x = torch.from_numpy(a)
    ref = scipy_blur(a, (2.0, 0.7), "reflect", 4.0)
    np.testing.assert_allclose(gaussian_blur(x, (2.0, 0.7)).numpy(), ref, atol=1e-12)
    np.testing.assert_allclose(gaussian_blur(x, torch.tensor([2.0, 0.7])).numpy(), ref,
                               atol=1e-12)
    np.testing.assert_allclose(gaussian_blur(x[0], 2.0).numpy(),
                               scipy_blur(a[0], 2.0, "reflect", 4.0), atol=1e-12)


@pytest.mark.parametrize("method", ["fft", "direct"])
def test_blur_per_sample_sigma(method: str) -> None:
    x = torch.rand(3, 2, 19, 23, dtype=torch.float64)
    sig = torch.tensor([[0.6, 2.0], [3.0, 1.0], [1.5, 1.5]], dtype=torch.float64)
    out = gaussian_blur(x, sig, method=method)
    for i in range(3):
        ref = scipy_blur(x[i].numpy(), tuple(sig[i].tolist()), "reflect", 4.0)
        # the radius is the batch maximum's: the extra taps are tiny (exp(-8) level)
        np.testing.assert_allclose(out[i].numpy(), ref, atol=2e-4)
        one = gaussian_blur(x[i:i + 1], sig[i], method=method)
        assert torch.allclose(out[i], one[0], atol=2e-4)


@pytest.mark.parametrize("method", ["fft", "direct"])
@pytest.mark.parametrize("padding", ["reflect", "periodic"])
def test_blur_gradcheck_x_and_sigma(method: str, padding: str) -> None:
    x = torch.rand(2, 1, 5, 7, dtype=torch.float64, requires_grad=True)
    s = torch.tensor([0.9, 1.7], dtype=torch.float64, requires_grad=True)
    assert gradcheck(lambda x, s: gaussian_blur(x, s, padding, method=method), (x, s))
    s1 = torch.tensor(2.3, dtype=torch.float64, requires_grad=True)
    assert gradcheck(lambda s: gaussian_blur(x.detach(), s, padding, method=method), (s1,))


def test_blur_sigma_gradient_matches_finite_difference_of_scipy() -> None:
    # an outside check of d/dsigma: scipy at sigma +- h with the same (fixed) radius
    rng = np.random.default_rng(3)
    a = rng.random((12, 14))
    w = rng.random((12, 14))
    s0, h = 1.5, 1e-5  # truncate * s stays in the same radius bucket
    s = torch.tensor(s0, dtype=torch.float64, requires_grad=True)
    (gaussian_blur(torch.from_numpy(a), s) * torch.from_numpy(w)).sum().backward()
    fd = ((scipy_blur(a, s0 + h, "reflect", 4.0) - scipy_blur(a, s0 - h, "reflect", 4.0))
          * w).sum() / (2 * h)
    assert abs(float(s.grad) - fd) < 1e-6


def test_blur_device_dtype(device: str, dtype: torch.dtype) -> None:
    a = np.random.default_rng(4).random((2, 3, 33, 30))
    x = torch.tensor(a, dtype=dtype, device=device)
    tol = 1e-5 if dtype == torch.float32 else 1e-11
    for sigma in (1.0, 6.0):
        for method in ("fft", "direct"):
            out = gaussian_blur(x, sigma, method=method)
            assert out.device.type == device and out.dtype == dtype
            ref = scipy_blur(a, sigma, "reflect", 4.0)
            np.testing.assert_allclose(out.cpu().double().numpy(), ref, atol=tol)


def test_blur_bad_inputs() -> None:
    x = torch.rand(8, 8)
    with pytest.raises(ValueError, match="'reflect', 'periodic'"):
        gaussian_blur(x, 1.0, padding="zeros")
    with pytest.raises(ValueError, match="> 0"):
        gaussian_blur(x, 0.0)
    with pytest.raises(ValueError, match="> 0"):
        gaussian_blur(x, (1.0, -2.0))
    with pytest.raises(ValueError, match="'auto', 'fft', 'direct'"):
        gaussian_blur(x, 1.0, method="fast")
    with pytest.raises(TypeError, match="floating-point"):
        gaussian_blur(torch.ones(8, 8, dtype=torch.int64), 1.0)
    with pytest.raises(ValueError, match=r"\(H, W\)"):
        gaussian_blur(torch.rand(1, 1, 1, 8, 8), 1.0)
    with pytest.raises(ValueError, match="shape"):
        gaussian_blur(x, torch.ones(3))
    with pytest.raises(ValueError, match="truncate"):
        gaussian_blur(x, 1.0, truncate=-1.0)
    with pytest.raises(TypeError):
        gaussian_blur(x, "big")


def test_gaussian_blur_module() -> None:
    x = torch.rand(2, 3, 20, 20, dtype=torch.float64)
    m = GaussianBlur((1.0, 3.0), padding="periodic")
    assert torch.allclose(m(x), gaussian_blur(x, (1.0, 3.0), "periodic"), atol=1e-12)
    assert {n for n, _ in m.named_buffers()} >= {"kernel_y", "kernel_x"}
    assert m(x.float()).dtype == torch.float32
    ml = GaussianBlur(2.0, learnable=True)
    assert [n for n, _ in ml.named_parameters()] == ["log_sigma"]
    opt = torch.optim.Adam(ml.parameters(), lr=0.05)
    target = gaussian_blur(x, 1.0)
    with torch.no_grad():
        loss0 = float(((ml(x) - target) ** 2).mean())
    for _ in range(5):  # learning the blur moves sigma towards the truth
        opt.zero_grad()
        loss = ((ml(x) - target) ** 2).mean()
        loss.backward()
        opt.step()
    with torch.no_grad():
        assert float(((ml(x) - target) ** 2).mean()) < loss0
    assert float(ml.sigma.detach().max()) < 2.0
    with pytest.raises(ValueError, match="too large"):
        gaussian_blur(x, 1e9)


def test_gaussian_psf() -> None:
    p = gaussian_psf(2.0, dtype=torch.float64)
    assert p.shape == (17, 17)
    assert abs(float(p.sum()) - 1) < 1e-12
    assert p.argmax() == 8 * 17 + 8
    q = gaussian_psf((1.0, 2.0), (7, 10), dtype=torch.float64)
    assert q.shape == (7, 10) and tuple(divmod(int(q.argmax()), 10)) == (3, 5)
    gy = np.exp(-0.5 * (np.arange(7) - 3) ** 2)
    gx = np.exp(-0.5 * ((np.arange(10) - 5) / 2.0) ** 2)
    ref = np.outer(gy, gx)
    np.testing.assert_allclose(q.numpy(), ref / ref.sum(), atol=1e-15)
    with pytest.raises(ValueError):
        gaussian_psf(1.0, 0)


# --------------------------------------------------------------------------- unsharp mask


def test_unsharp_mask_matches_formula_with_scipy() -> None:
    a = np.random.default_rng(5).random((2, 30, 25))
    ref = a + 1.5 * (a - scipy_blur(a, 2.0, "reflect", 4.0))
    out = unsharp_mask(torch.from_numpy(a), 2.0, 1.5)
    np.testing.assert_allclose(out.numpy(), ref, atol=1e-12)
    ref = a + 0.5 * (a - scipy_blur(a, 1.0, "wrap", 4.0))
    out = unsharp_mask(torch.from_numpy(a), 1.0, 0.5, padding="periodic")
    np.testing.assert_allclose(out.numpy(), ref, atol=1e-12)


def test_unsharp_gradcheck_and_module() -> None:
    x = torch.rand(1, 2, 8, 9, dtype=torch.float64, requires_grad=True)
    s = torch.tensor(1.2, dtype=torch.float64, requires_grad=True)
    a = torch.tensor(0.7, dtype=torch.float64, requires_grad=True)
    assert gradcheck(lambda x, s, a: unsharp_mask(x, s, a), (x, s, a))
    m = UnsharpMask(1.2, 0.7)
    assert torch.allclose(m(x), unsharp_mask(x, 1.2, 0.7), atol=1e-12)
    ml = UnsharpMask(1.2, 0.7, learnable=True)
    ml(x.float().detach()).sum().backward()
    assert ml.amount.grad is not None and ml.blur.log_sigma.grad is not None
    with pytest.raises(ValueError, match="'reflect', 'periodic'"):
        unsharp_mask(x, 1.0, padding="mirror")


# --------------------------------------------------------------------------- noise estimate


def test_estimate_noise_std_equals_skimage() -> None:
    rng = np.random.default_rng(6)
    for shape in [(40, 33), (17, 64)]:
        a = rng.random(shape) + 0.05 * rng.standard_normal(shape)
        ours = float(estimate_noise_std(torch.from_numpy(a)))
        assert abs(ours - skr.estimate_sigma(a)) < 1e-12
    rgb = rng.random((2, 3, 20, 24))
    ours = estimate_noise_std(torch.from_numpy(rgb))
    assert ours.shape == (2, 3)
    for b in range(2):
        ref = skr.estimate_sigma(rgb[b], channel_axis=0, average_sigmas=False)
        np.testing.assert_allclose(ours[b].numpy(), ref, atol=1e-12)


def test_estimate_noise_std_on_camera(camera: np.ndarray) -> None:
    noisy = camera + 0.1 * np.random.default_rng(0).standard_normal(camera.shape)
    est = float(estimate_noise_std(torch.tensor(noisy, dtype=torch.float32)))
    assert abs(est - 0.1) < 0.005
    assert abs(est - skr.estimate_sigma(noisy)) < 1e-5


# --------------------------------------------------------------------------- Wiener denoise


def test_wiener_denoise_quality_on_camera(camera: np.ndarray) -> None:
    noisy = camera + 0.1 * np.random.default_rng(0).standard_normal(camera.shape)
    p_noisy = psnr(noisy, camera)
    p_scipy = psnr(scipy.signal.wiener(noisy, (5, 5)), camera)
    out = wiener_denoise(torch.tensor(noisy, dtype=torch.float32))
    p_ours = psnr(out.double().numpy(), camera)
    print(f"noisy {p_noisy:.2f} dB, scipy.signal.wiener 5x5 {p_scipy:.2f} dB, ours {p_ours:.2f}")
    assert p_ours >= 27.5
    assert p_ours >= 28.5  # the two-stage empirical Wiener: ~29 dB
    assert p_ours >= p_scipy + 1.0


def test_wiener_denoise_channels_module_and_gradient(device: str, dtype: torch.dtype) -> None:
    g = torch.Generator().manual_seed(1)
    clean = torch.rand(1, 1, 6, 6, generator=g, dtype=torch.float64)
    clean = torch.nn.functional.interpolate(clean, size=(40, 36), mode="bilinear")
    clean = torch.cat([clean, 1 - clean, clean ** 2], 1).repeat(2, 1, 1, 1)
    noisy = (clean + 0.05 * torch.randn(clean.shape, generator=g, dtype=torch.float64))
    noisy = noisy.to(device=device, dtype=dtype)
    out = wiener_denoise(noisy)
    assert out.shape == noisy.shape and out.dtype == dtype and out.device.type == device
    # each plane is filtered independently
    one = wiener_denoise(noisy[1, 2])
    assert torch.allclose(out[1, 2], one, atol=1e-5)
    mse = ((out.cpu().double() - clean) ** 2).mean()
    assert mse < ((noisy.cpu().double() - clean) ** 2).mean() / 3
    m = WienerDenoise(noise_std=0.05).to(device)
    assert torch.allclose(m(noisy), wiener_denoise(noisy, 0.05), atol=1e-5)
    # differentiable in x
    xr = noisy.detach().requires_grad_()
    wiener_denoise(xr, 0.05).square().sum().backward()
    assert xr.grad is not None and bool(torch.isfinite(xr.grad).all())


def test_wiener_denoise_gradcheck() -> None:
    x = (0.5 + 0.1 * torch.randn(1, 1, 12, 10, dtype=torch.float64)).requires_grad_()
    assert gradcheck(lambda x: wiener_denoise(x, 0.1), (x,), atol=1e-6)


def test_wiener_denoise_bad_inputs() -> None:
    with pytest.raises(ValueError, match="noise_std"):
        wiener_denoise(torch.rand(3, 16, 16), torch.ones(4))
    with pytest.raises(ValueError, match="noise_std"):
        wiener_denoise(torch.rand(16, 16), -0.1)
    with pytest.raises(TypeError, match="floating"):
        wiener_denoise(torch.ones(16, 16, dtype=torch.uint8))
    with pytest.raises(TypeError, match="float32 or float64"):
        wiener_denoise(torch.rand(16, 16).half())
    with pytest.raises(ValueError, match="NaN"):
        wiener_denoise(torch.full((16, 16), float("nan")))
    for shape in [(1, 1), (2, 3), (5, 4)]:  # tiny images: repeated reflection
        assert wiener_denoise(torch.rand(shape), 0.1).shape == shape


# --------------------------------------------------------------------------- deconvolution


@pytest.mark.parametrize("shape,psf_shape", [((32, 32), (9, 9)), ((33, 20), (7, 4)),
                                             ((16, 25), (6, 5))])
@pytest.mark.parametrize("balance", [1e-3, 0.05, 1.0])
def test_wiener_deconvolve_balance_equals_skimage(shape, psf_shape, balance) -> None:
    rng = np.random.default_rng(7)
    img = rng.random(shape)
    psf = rng.random(psf_shape)
    psf /= psf.sum()
    ref = skr.wiener(img, psf, balance, clip=False)
    out = wiener_deconvolve(torch.from_numpy(img), torch.from_numpy(psf), balance=balance)
    np.testing.assert_allclose(out.numpy(), ref, rtol=0, atol=1e-6)
    ref = skr.wiener(img, psf, balance, clip=True)
    out = wiener_deconvolve(torch.from_numpy(img), torch.from_numpy(psf), balance=balance,
                            clip=True)
    np.testing.assert_allclose(out.numpy(), ref, rtol=0, atol=1e-6)


def test_wiener_deconvolve_batch_and_gradcheck() -> None:
    rng = np.random.default_rng(8)
    img = rng.random((2, 3, 20, 22))
    psf = gaussian_psf(1.0, 5, dtype=torch.float64)
    out = wiener_deconvolve(torch.from_numpy(img), psf, balance=0.01)
    for b in range(2):
        for c in range(3):
            ref = skr.wiener(img[b, c], psf.numpy(), 0.01, clip=False)
            np.testing.assert_allclose(out[b, c].numpy(), ref, atol=1e-10)
    x = torch.rand(1, 1, 10, 9, dtype=torch.float64, requires_grad=True)
    p = gaussian_psf(1.0, 3, dtype=torch.float64).requires_grad_()
    assert gradcheck(lambda x, p: wiener_deconvolve(x, p, balance=0.05), (x, p))
    # noise path: the data-driven regularisation is a constant under differentiation
    y = wiener_deconvolve(x, p.detach(), noise_std=0.05)
    (gx,) = torch.autograd.grad(y.square().sum(), x)
    assert bool(torch.isfinite(gx).all()) and float(gx.abs().sum()) > 0


def test_wiener_deconvolve_quality_on_camera(camera: np.ndarray) -> None:
    # camera blurred by a Gaussian (sigma 2) with PERIODIC boundaries + noise 0.01
    psf = gaussian_psf(2.0, dtype=torch.float64)
    blurred = gaussian_blur(torch.from_numpy(camera), 2.0, padding="periodic").numpy()
    obs = blurred + 0.01 * np.random.default_rng(0).standard_normal(camera.shape)
    best_sk = max(psnr(skr.wiener(obs, psf.numpy(), b, clip=False), camera)
                  for b in np.logspace(-4, 0, 17))
    out = wiener_deconvolve(torch.tensor(obs, dtype=torch.float32), psf.float())
    p_ours = psnr(out.double().numpy(), camera)
    print(f"blurred {psnr(obs, camera):.2f} dB, skimage best grid {best_sk:.2f}, ours {p_ours:.2f}")
    assert p_ours >= 27.0
    assert p_ours >= best_sk - 0.1
    known = wiener_deconvolve(torch.from_numpy(obs), psf, noise_std=0.01)
    assert psnr(known.numpy(), camera) >= best_sk - 0.1


def test_deconvolution_devices(device: str, dtype: torch.dtype) -> None:
    rng = np.random.default_rng(9)
    img = rng.random((2, 24, 28))
    psf = gaussian_psf(1.5, 7, dtype=torch.float64).numpy()
    x = torch.tensor(img, dtype=dtype, device=device)
    p = torch.tensor(psf, dtype=dtype, device=device)
    tol = 1e-5 if dtype == torch.float32 else 1e-10
    out = wiener_deconvolve(x, p, balance=0.1)
    np.testing.assert_allclose(out[1].cpu().double().numpy(),
                               skr.wiener(img[1], psf, 0.1, clip=False), atol=tol)
    out = richardson_lucy(x, p, steps=5)
    ref = skr.richardson_lucy(img[0], psf, num_iter=5)
    np.testing.assert_allclose(out[0].cpu().double().numpy(), ref, atol=tol)
    assert wiener_deconvolve(x, p).device.type == device


@pytest.mark.parametrize("psf_shape", [(3, 3), (5, 8), (17, 17)])  # direct and FFT paths
@pytest.mark.parametrize("filter_epsilon", [None, 0.2])
def test_richardson_lucy_equals_skimage(psf_shape, filter_epsilon) -> None:
    rng = np.random.default_rng(10)
    img = rng.random((40, 31))
    psf = rng.random(psf_shape)
    psf /= psf.sum()
    obs = scipy.signal.convolve(img, psf, mode="same")
    ref = skr.richardson_lucy(obs, psf, num_iter=12, clip=True, filter_epsilon=filter_epsilon)
    out = richardson_lucy(torch.from_numpy(obs), torch.from_numpy(psf), steps=12,
                          filter_epsilon=filter_epsilon)
    np.testing.assert_allclose(out.numpy(), ref, rtol=0, atol=1e-10)
    out32 = richardson_lucy(torch.tensor(obs, dtype=torch.float32),
                            torch.tensor(psf, dtype=torch.float32), steps=12,
                            filter_epsilon=filter_epsilon)
    np.testing.assert_allclose(out32.numpy(), ref, rtol=0, atol=1e-5)
    ref = skr.richardson_lucy(obs * 3, psf, num_iter=4, clip=False)
    out = richardson_lucy(torch.from_numpy(obs * 3), torch.from_numpy(psf), 4, clip=False)
    np.testing.assert_allclose(out.numpy(), ref, rtol=0, atol=1e-10)


def test_richardson_lucy_gradcheck() -> None:
    x = (0.2 + torch.rand(1, 1, 9, 8, dtype=torch.float64)).requires_grad_()
    p = gaussian_psf(1.0, 3, dtype=torch.float64)
    assert gradcheck(lambda x: richardson_lucy(x, p, steps=3, clip=False), (x,))


def test_deconvolution_bad_inputs() -> None:
    x = torch.rand(16, 16)
    with pytest.raises(ValueError, match="larger than the image"):
        wiener_deconvolve(x, torch.ones(17, 3) / 51, balance=0.1)
    with pytest.raises(ValueError, match="broadcast"):
        wiener_deconvolve(torch.rand(3, 16, 16), torch.ones(2, 3, 3) / 9, balance=0.1)
    with pytest.raises(TypeError, match="psf"):
        richardson_lucy(x, np.ones((3, 3)))
    with pytest.raises(ValueError, match="steps"):
        richardson_lucy(x, torch.ones(3, 3) / 9, steps=-1)
    with pytest.raises(ValueError, match="balance"):
        wiener_deconvolve(x, torch.ones(3, 3) / 9, balance=-1.0)
    with pytest.raises(ValueError, match="NaN"):
        richardson_lucy(x.clone().fill_(float("inf")), torch.ones(3, 3) / 9)
    with pytest.raises(ValueError, match="psf contains NaN"):
        wiener_deconvolve(x, torch.full((3, 3), float("nan")))
