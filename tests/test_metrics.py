"""Texture-quality metrics (difftransforms.metrics) against outside references."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from scipy import ndimage
from scipy.stats import wasserstein_distance

from difftransforms import metrics as M

ASSETS = Path(__file__).resolve().parents[1] / "assets"


def load_asset(name: str) -> np.ndarray:
    return np.asarray(Image.open(ASSETS / name), dtype=np.float64) / 255.0

GAPS = ["spectrum_gap", "histogram_gap", "wavelet_gap", "cnn_gap"]


def _t(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(a[None] if a.ndim == 2 else a.transpose(2, 0, 1).copy())


@pytest.fixture(scope="module")
def brick() -> np.ndarray:
    return load_asset("brick.png")


@pytest.fixture(scope="module")
def grass() -> np.ndarray:
    return load_asset("grass.png")


@pytest.fixture(scope="module")
def chelsea() -> np.ndarray:
    return load_asset("chelsea.png")


# ------------------------------------------------------------------ Wasserstein-1


@pytest.mark.parametrize("n,m", [(1, 1), (5, 7), (200, 200), (1000, 37), (3, 3000)])
def test_wasserstein_1d_matches_scipy(n, m):
    rng = np.random.default_rng(n * 1000 + m)
    u = rng.normal(size=n)
    v = rng.exponential(size=m) + rng.integers(0, 3, size=m)  # ties too
    assert M.wasserstein_1d(u, v) == pytest.approx(wasserstein_distance(u, v), abs=1e-12)
    assert M.wasserstein_1d(torch.from_numpy(v), u) == pytest.approx(
        wasserstein_distance(v, u), abs=1e-12)


def test_histogram_gap_matches_scipy_per_channel(chelsea):
    y = chelsea[:120, :150]
    x = chelsea[150:, 200:] ** 1.3  # different size and different histogram
    ref = np.mean([wasserstein_distance(y[..., c].ravel(), x[..., c].ravel())
                   for c in range(3)])
    assert M.histogram_gap(_t(y), _t(x)) == pytest.approx(ref, abs=1e-12)
    assert M.histogram_gap(_t(y), _t(y)) == 0.0


# ------------------------------------------------------------------ each gap


@pytest.mark.parametrize("name", GAPS)
def test_gap_zero_for_identical_and_grows_with_degradation(name, brick):
    fn = M.METRICS[name][0]
    y = brick[:96, :96]
    rng = np.random.default_rng(0)
    assert fn(_t(y), _t(y)) == pytest.approx(0.0, abs=1e-12)
    blur1, blur3 = ndimage.gaussian_filter(y, 1.0), ndimage.gaussian_filter(y, 3.0)
    g_blur1, g_blur3 = fn(_t(y), _t(blur1)), fn(_t(y), _t(blur3))
    assert 0 < g_blur1 < g_blur3
    noise = rng.standard_normal(y.shape)
    g_n1, g_n2 = fn(_t(y), _t(y + 0.03 * noise)), fn(_t(y), _t(y + 0.2 * noise))
    assert 0 < g_n1 < g_n2


def test_gaps_accept_different_sizes_and_layouts(grass):
    y = grass[:128, :128]
    x = grass[200:264, 300:396]  # 64 x 96: another sample of the same texture
    far = np.full_like(x, x.mean()) + 0.3 * np.random.default_rng(1).standard_normal(x.shape)
    for name in GAPS:
        fn = M.METRICS[name][0]
        same_texture = fn(torch.from_numpy(y), torch.from_numpy(x))  # (H, W) layout
        assert same_texture == pytest.approx(fn(_t(y)[None], _t(x)), rel=1e-9)
        assert same_texture < fn(_t(y), _t(far)), name


def test_spectrum_against_numpy_periodogram():
    """A pure cosine puts all the power in the ring of its frequency (numpy reference)."""
    H = W = 64
    yy, xx = np.mgrid[:H, :W]
    img = 0.5 + 0.2 * np.cos(2 * np.pi * (8 * xx / W + 4 * yy / H))
    edges = M._log_edges(64, 16)
    power, counts = M.radial_power_spectrum(_t(img), edges)
    f = np.hypot(8 / W, 4 / H)
    ring = int(np.searchsorted(edges.numpy(), f, side="right")) - 1
    p = power[0].numpy() * counts.numpy()
    assert p.argmax() == ring
    # total power = windowed variance (Parseval), computed with numpy
    win = np.outer(np.hanning(H), np.hanning(W))
    xw = (img - img.mean()) * win
    total = (np.abs(np.fft.fft2(xw)) ** 2).sum() / (win**2).sum()
    assert p.sum() == pytest.approx(total, rel=0.02)  # rings miss only DC and corners


def test_wavelet_gap_against_pywt_by_hand(brick):
    import pywt

    y, x = brick[:64, :64], brick[64:128, 100:164]
    got = M.wavelet_gap(_t(y), _t(x), levels=2)
    cy = pywt.wavedec2(y, "db2", mode="periodization", level=2)
    cx = pywt.wavedec2(x, "db2", mode="periodization", level=2)
    ref = []
    for dy, dx in zip(cy[1:], cx[1:], strict=True):
        for a, b in zip(dy, dx, strict=True):
            s = np.sqrt((a.var(ddof=1) + b.var(ddof=1)) / 2)
            ref.append(wasserstein_distance(a.ravel(), b.ravel()) / s)
    assert got == pytest.approx(np.mean(ref), rel=1e-10)


def test_cnn_gap_uses_its_own_fixed_network():
    y = torch.rand(1, 48, 48, generator=torch.Generator().manual_seed(0))
    x = torch.rand(1, 48, 48, generator=torch.Generator().manual_seed(1)) ** 2
    a = M.cnn_gap(y, x)
    assert a == M.cnn_gap(y, x)  # deterministic
    assert M._metric_cnn(1).seed == M.CNN_SEED == 12345
    assert M.cnn_gap(y, x, seed=1) != a  # other projections


# ------------------------------------------------------------------ copies


def test_copy_fraction_detects_crops_not_noise(brick, grass):
    y = grass[:128, :128]
    crop = y[17:97, 30:110]
    assert M.copy_fraction(_t(y), _t(crop)) == 1.0
    # a collage: left half copied, right half new
    collage = np.concatenate([y[:64, :32], grass[300:364, 300:332]], axis=1)
    assert M.copy_fraction(_t(y), _t(collage)) == pytest.approx(3 / 7, abs=0.05)
    rpn = M.random_phase_noise(_t(y), seed=3)
    assert M.copy_fraction(_t(y), rpn) == 0.0
    assert M.copy_fraction(_t(y), _t(grass[200:328, 200:328])) < 0.02
    # 8-bit requantised copies still count; a flat patch is not evidence of copying
    q = np.round(crop * 255) / 255
    assert M.copy_fraction(_t(y), _t(q)) == 1.0
    flat = np.full((64, 64), y.mean())
    assert M.copy_fraction(_t(y), _t(flat)) == 0.0


def test_copy_fraction_needs_coherent_regions(brick, grass):
    y = grass[:128, :128]
    rng = np.random.default_rng(1)
    # isolated 16x16 patches of Y pasted into new texture: each matches alone, no region does
    x = grass[256:384, 256:384].copy()
    for i, j in [(8, 8), (8, 56), (56, 24), (96, 96), (40, 96)]:
        a, b = rng.integers(0, 112, 2)
        x[i:i + 16, j:j + 16] = y[a:a + 16, b:b + 16]
    assert M.copy_fraction(_t(y), _t(x), coherent=False) == pytest.approx(5 / 225)
    assert M.copy_fraction(_t(y), _t(x)) == 0.0
    # a collage of shuffled 32x32 tiles of Y: every patch inside a tile is in a copied region
    tiles = [y[a:a + 32, b:b + 32] for a, b in rng.integers(0, 96, (16, 2))]
    collage = np.block([[tiles[4 * r + c] for c in range(4)] for r in range(4)])
    inside = 9 * 16 / 225  # 3x3 patch positions per tile lie wholly inside it
    assert M.copy_fraction(_t(y), _t(collage)) == pytest.approx(inside, abs=0.02)
    # a regular texture: disjoint halves of a brick wall match patch by patch (straight mortar
    # lines) but are not copies of each other
    top, bottom = brick[:256, :256], brick[256:, :256]
    assert M.copy_fraction(_t(top), _t(bottom), coherent=False) > 0.05
    assert M.copy_fraction(_t(top), _t(bottom)) < 0.01


def test_nearest_patches_offsets_against_brute_force():
    rng = np.random.default_rng(2)
    y, x = rng.random((1, 40, 36)), rng.random((1, 34, 33))
    x[:, 6:14, 12:20] = y[:, 20:28, 3:11]  # patch (1, 2) is an exact copy
    m = M.nearest_patches(_t(y[0]), _t(x[0]), patch=8, stride=6)
    for i in range(m.rms.shape[0]):
        for j in range(m.rms.shape[1]):
            px = x[:, 6 * i:6 * i + 8, 6 * j:6 * j + 8]
            d = np.array([[np.mean((y[:, a:a + 8, b:b + 8] - px) ** 2) for b in range(29)]
                          for a in range(33)])
            a, b = np.unravel_index(d.argmin(), d.shape)
            assert (m.dy[i, j].item(), m.dx[i, j].item()) == (a - 6 * i, b - 6 * j)
    assert (m.dy[1, 2].item(), m.dx[1, 2].item()) == (14, -9)
    assert m.rms[1, 2].item() < 1e-3


def test_nearest_patch_rms_against_brute_force():
    rng = np.random.default_rng(0)
    y, x = rng.random((2, 40, 36)), rng.random((2, 34, 33))
    rms, contrast = M.nearest_patch_rms(_t(y.transpose(1, 2, 0)), _t(x.transpose(1, 2, 0)),
                                        patch=8, stride=6)
    assert rms.shape == ((34 - 8) // 6 + 1, (33 - 8) // 6 + 1)
    for i in range(rms.shape[0]):
        for j in range(rms.shape[1]):
            px = x[:, 6 * i:6 * i + 8, 6 * j:6 * j + 8]
            best = min(np.sqrt(np.mean((y[:, a:a + 8, b:b + 8] - px) ** 2))
                       for a in range(33) for b in range(29))
            assert rms[i, j].item() == pytest.approx(best, abs=1e-4)
            assert contrast[i, j].item() == pytest.approx(px.reshape(2, -1).std(1).mean())


# ------------------------------------------------------------------ random-phase noise


def test_random_phase_noise_preserves_power_spectrum(chelsea):
    y = chelsea[:100, :90]
    x = M.random_phase_noise(_t(y).double(), seed=4).numpy()
    fy = np.abs(np.fft.fft2(y, axes=(0, 1)))
    fx = np.abs(np.fft.fft2(x.transpose(1, 2, 0), axes=(0, 1)))
    np.testing.assert_allclose(fx, fy, atol=1e-9 * fy.max())
    np.testing.assert_allclose(x.mean(axis=(1, 2)), y.mean(axis=(0, 1)), atol=1e-12)
    np.testing.assert_allclose(x.var(axis=(1, 2)), y.var(axis=(0, 1)), rtol=1e-9)
    # cross-spectra (colour correlations) kept: same phase shift on every channel
    cy = np.fft.fft2(y[..., 0]) * np.conj(np.fft.fft2(y[..., 1]))
    cx = np.fft.fft2(x[0]) * np.conj(np.fft.fft2(x[1]))
    np.testing.assert_allclose(cx, cy, atol=1e-8 * np.abs(cy).max())
    # new phases: not the image, reproducible by seed
    assert np.abs(x.transpose(1, 2, 0) - y).mean() > 0.05
    again = M.random_phase_noise(_t(y).double(), seed=4).numpy()
    np.testing.assert_array_equal(x, again)
    assert not np.allclose(M.random_phase_noise(_t(y).double(), seed=5).numpy(), x)
    assert M.random_phase_noise(torch.rand(30, 31)).shape == (30, 31)


# ------------------------------------------------------------------ report


@pytest.fixture(scope="module")
def brick_report_inputs(brick):
    y = _t(brick[:128, :128])
    base = M.texture_baselines(y, seed=0)
    return y, base


def test_texture_report_verdicts(brick, brick_report_inputs):
    y, base = brick_report_inputs
    assert set(base) == set(M.METRICS)
    for entry in base.values():
        assert len(entry["second_crop"]) == 4
        assert entry["second_crop_max"] == max(entry["second_crop"])
    # second-order statistics cannot tell random-phase noise from the texture ...
    assert base["spectrum_gap"]["random_phase"] <= base["spectrum_gap"]["second_crop_max"]
    # ... but brick's histogram / wavelet statistics can
    for name in ("histogram_gap", "wavelet_gap"):
        assert base[name]["random_phase"] > base[name]["second_crop_max"]
    assert base["copy_fraction"]["random_phase"] == 0.0

    blurred = _t(ndimage.gaussian_filter(brick[:128, :128], 2.0))
    rep = M.texture_report(y, blurred, baselines=base)
    for name in GAPS:
        assert rep[name]["verdict"] == "outside second-crop range", name
        assert rep[name]["value"] > rep[name]["second_crop_max"]
    exact = M.texture_report(y, y, baselines=base)
    for name in GAPS:
        assert exact[name]["value"] == pytest.approx(0.0, abs=1e-12)
        assert exact[name]["verdict"] == "within second-crop range"
    assert exact["copy_fraction"]["value"] == 1.0
    assert exact["copy_fraction"]["verdict"] == "outside second-crop range"


def test_texture_report_options_and_errors():
    y = torch.rand(1, 48, 48)
    r = M.texture_report(y, torch.rand(1, 40, 44), metrics=["histogram_gap"])
    assert list(r) == ["histogram_gap"]
    assert r["histogram_gap"]["verdict"] == "no second crop (Y too small)"
    r = M.texture_report(y, y, baselines=False, metrics=["spectrum_gap"])
    assert set(r["spectrum_gap"]) == {"value", "description"}
    with pytest.raises(ValueError, match="unknown metric"):
        M.texture_report(y, y, metrics=["psnr"])
    with pytest.raises(ValueError, match="channel"):
        M.histogram_gap(torch.rand(3, 40, 40), torch.rand(1, 40, 40))
    with pytest.raises(ValueError, match="at least 32x32"):
        M.spectrum_gap(y, torch.rand(1, 16, 40))
    with pytest.raises(ValueError, match="NaN"):
        M.wavelet_gap(y, torch.full((1, 40, 40), float("nan")))
    with pytest.raises(ValueError, match="batch"):
        M.cnn_gap(torch.rand(2, 1, 40, 40), y)
    with pytest.raises(TypeError, match="floating"):
        M.copy_fraction(y, torch.zeros(1, 40, 40, dtype=torch.uint8))


# ------------------------------------------------------------------ CLI


def _cli(*args: object):
    from click.testing import CliRunner

    from difftransforms.cli import main

    try:
        runner = CliRunner(mix_stderr=False)  # type: ignore[call-arg]
    except TypeError:
        runner = CliRunner()
    return runner.invoke(main, [str(a) for a in args])


def test_cli_compare_table_json_and_errors(tmp_path, brick):
    import json

    def save(a: np.ndarray, name: str) -> Path:
        p = tmp_path / name
        Image.fromarray(np.round(a * 255).astype(np.uint8)).save(p)
        return p

    ex = save(brick[:80, :80], "example.png")
    s1 = save(brick[200:264, 200:264], "crop.png")
    s2 = save(ndimage.gaussian_filter(brick[:80, :80], 2.0), "blur.png")
    r = _cli("compare", ex, s1, s2, "--metrics", "histogram_gap,wavelet_gap")
    assert r.exit_code == 0, r.output
    lines = r.stdout.splitlines()
    assert "second crop" in lines[1] and "crop.png" in lines[1] and "blur.png" in lines[1]
    wav = next(line for line in lines if line.startswith("wavelet_gap"))
    assert wav.split()[-1] == "HIGH"  # the blurred image is outside the second-crop range
    r = _cli("compare", ex, s1, "--json", "--no-baselines", "--metrics", "histogram_gap")
    assert r.exit_code == 0
    data = json.loads(r.stdout)
    ref = wasserstein_distance(np.asarray(Image.open(ex), float).ravel() / 255,
                               np.asarray(Image.open(s1), float).ravel() / 255)
    got = data["images"][str(s1)]["histogram_gap"]["value"]
    assert got == pytest.approx(ref, rel=1e-5)
    assert data["baselines"] is None
    for args, msg in [
        ((ex, tmp_path / "missing.png"), "missing.png"),
        ((ex, s1, "--metrics", "psnr"), "unknown metric"),
        ((ex, save(np.zeros((20, 40)), "tiny.png")), "at least 32x32"),
        ((ex, save(np.zeros((40, 40, 3)), "rgb.png")), "same kind"),
        ((ex,), "Missing argument"),
    ]:
        r = _cli("compare", *args)
        assert r.exit_code == 2, (args, r.output)
        err = r.stderr.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error:") and msg in err[0], err
