"""Texture-synthesis engine: losses against outside references, the optimisation loop,
reproducibility, bit-exact resume, errors, and the ``synthesize`` command."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from difftransforms.synthesis import (
    ColourPCA,
    Synthesizer,
    match_histogram,
    resize_periodic,
    sliced_wasserstein,
    sorted_quantiles,
    synthesize,
)
from difftransforms.synthesis.losses import GramLoss, SlicedWassersteinLoss, gram

N = 32
SMALL_CNN = {"sizes": (3, 7, 15), "channels_per_size": 8}


def _texture(c: int = 1, n: int = N, seed: int = 0) -> torch.Tensor:
    """A periodic-ish test texture (1, C, n, n) in [0, 1] with oriented stripes and noise."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.arange(n), torch.arange(n), indexing="ij")
    chans = []
    for k in range(c):
        s = torch.sin(2 * torch.pi * (xx * (k + 2) + yy * 3) / n)
        chans.append(0.5 + 0.3 * s + 0.1 * torch.randn(n, n, generator=g))
    return torch.stack(chans)[None].clamp(0, 1).float()


# ----------------------------------------------------------------------------- losses
def test_sorted_quantiles_matches_numpy_linear_quantiles() -> None:
    rng = np.random.default_rng(0)
    v = np.sort(rng.standard_normal(37))
    for n in (5, 37, 80):
        ours = sorted_quantiles(torch.from_numpy(v).view(1, -1, 1), n).flatten().numpy()
        q = ((np.arange(n) + 0.5) * len(v) / n - 0.5) / (len(v) - 1)
        ref = np.quantile(v, np.clip(q, 0, 1), method="linear")
        np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-12)


def test_sliced_wasserstein_1d_equals_scipy_w2_for_equal_sizes() -> None:
    # in 1-D with one direction, SW2^2 is the exact W2^2 = mean squared sorted difference
    from scipy.stats import wasserstein_distance

    rng = np.random.default_rng(1)
    a, b = rng.standard_normal(64), rng.standard_normal(64) * 2 + 1
    fa = torch.from_numpy(a).view(1, 1, 8, 8)
    fb = torch.from_numpy(b).view(1, 1, 8, 8)
    sw = float(sliced_wasserstein(fa, fb, torch.ones(1, 1, dtype=torch.float64)))
    np.testing.assert_allclose(sw, np.mean((np.sort(a) - np.sort(b)) ** 2), rtol=1e-12)
    # W1 from scipy bounds W2 from below (Jensen): a cross-check with an outside reference
    assert wasserstein_distance(a, b) <= np.sqrt(sw) + 1e-12


def test_sliced_wasserstein_loss_zero_on_permuted_pixels_and_different_sizes() -> None:
    f = torch.randn(1, 5, 8, 8, dtype=torch.float64)
    perm = torch.randperm(64)
    fp = f.reshape(1, 5, 64)[..., perm].reshape(1, 5, 8, 8)
    loss = SlicedWassersteinLoss([f], generator=torch.Generator().manual_seed(0))
    loss.resample()
    assert float(loss([fp])) < 1e-20
    # the same distribution twice over (tiled 2x2): only the quantile interpolation error
    # (sizes may differ), far below a real difference (scaled features: loss 0.25)
    assert float(loss([fp.repeat(1, 1, 2, 2)])) < 0.01
    assert float(loss([fp * 1.5])) > 0.1


def test_gram_matches_einsum_and_gram_loss_gradcheck() -> None:
    f = torch.randn(2, 4, 5, 6, dtype=torch.float64)
    ref = torch.einsum("bkhw,blhw->bkl", f, f) / 30
    torch.testing.assert_close(gram(f), ref)
    target = torch.randn(1, 3, 4, 4, dtype=torch.float64)
    for centered in (False, True):
        loss = GramLoss([target], centered=centered)
        x = torch.randn(1, 3, 4, 4, dtype=torch.float64, requires_grad=True)
        assert torch.autograd.gradcheck(lambda t, lo=loss: lo([t]), (x,))


def test_match_histogram_equals_skimage_and_keeps_ranks() -> None:
    from skimage.exposure import match_histograms

    rng = np.random.default_rng(2)
    x = rng.random((3, 16, 16))
    ref = rng.random((3, 16, 16)) ** 2
    ours = match_histogram(torch.from_numpy(x)[None], torch.from_numpy(ref)[None])[0].numpy()
    sk = match_histograms(x, ref, channel_axis=0)
    np.testing.assert_allclose(ours, sk, atol=1e-12)
    # different sizes: exact quantiles of the reference, same ordering as x
    small = match_histogram(torch.from_numpy(x[:1, :8, :12])[None], torch.from_numpy(ref[:1])[None])
    assert np.array_equal(np.argsort(small.flatten().numpy()), np.argsort(x[0, :8, :12].ravel()))


def test_colour_pca_decorrelates_example() -> None:
    y = _texture(3).double()
    y[:, 1] = 0.5 * y[:, 0] + 0.5 * y[:, 1]  # strongly correlated channels
    pca = ColourPCA(torch.nn.Identity(), y)
    p = pca.transform(y)
    assert p.shape[1] == 6  # 3 components + 3 pairwise sums
    cov = torch.cov(p[0, :3].reshape(3, -1))
    off = cov - torch.diag(torch.diag(cov))
    assert off.abs().max() < 1e-10


def test_resize_periodic_wraps_around() -> None:
    n = 32
    t = torch.arange(n, dtype=torch.float64)
    x = torch.sin(2 * torch.pi * t / n).view(1, 1, 1, n).expand(1, 1, 4, n)
    y = resize_periodic(x, (4, 2 * n))
    t2 = (torch.arange(2 * n, dtype=torch.float64) + 0.5) / 2 - 0.5
    ref = torch.sin(2 * torch.pi * t2 / n)
    # bilinear error of a sampled sinusoid; the wrap-around columns are as good as the rest
    assert (y[0, 0, 0] - ref).abs().max() < 0.01


# ----------------------------------------------------------------------------- engine
@pytest.mark.parametrize("loss", ["sw", "gram"])
def test_loss_decreases_cnn(loss: str) -> None:
    s = Synthesizer(_texture(), "cnn", steps=3, lbfgs_iters=4, loss=loss, model_options=SMALL_CNN)
    x = s.run()
    assert s.losses[-1] < 0.5 * s.losses[0]
    assert x.shape == (1, 1, N, N) and x.dtype == torch.float32
    assert float(x.min()) >= 0 and float(x.max()) <= 1


@pytest.mark.parametrize("model", ["covariance", "scattering"])
def test_loss_decreases_moment_models_colour(model: str) -> None:
    s = Synthesizer(_texture(3), model, steps=3, lbfgs_iters=5, model_options={"J": 2, "L": 4})
    x = s.run()
    assert x.shape == (1, 3, N, N)
    assert s.losses[-1] < s.losses[0]


def test_shapes_dtypes_device_and_size(device: str, dtype: torch.dtype) -> None:
    y = _texture(3).to(device=device, dtype=dtype)
    x = synthesize(y, "cnn", size=(24, 40), steps=1, lbfgs_iters=2, model_options=SMALL_CNN)
    assert x.shape == (1, 3, 24, 40) and x.dtype == dtype and x.device.type == device
    # (H, W) greyscale input gives a (1, 1, H, W) result
    g = synthesize(_texture()[0, 0].to(device, dtype), "cnn", steps=1, lbfgs_iters=2,
                   model_options=SMALL_CNN)
    assert g.shape == (1, 1, N, N)


def test_histogram_matched_output_has_example_histogram() -> None:
    y = _texture(3)
    x = synthesize(y, "cnn", steps=1, lbfgs_iters=2, model_options=SMALL_CNN,
                   colour_range=False)
    for c in range(3):
        torch.testing.assert_close(x[0, c].flatten().sort().values, y[0, c].flatten().sort().values)


def _pca_coords(x: torch.Tensor, ref: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Coordinates of the pixels of x and ref on ref's principal colour axes (numpy PCA)."""
    r = ref[0].reshape(3, -1).double().numpy()
    _, vecs = np.linalg.eigh(np.cov(r))
    m = r.mean(axis=1, keepdims=True)
    return vecs.T @ (x[0].reshape(3, -1).double().numpy() - m), vecs.T @ (r - m)


def test_colour_output_stays_in_example_colour_range() -> None:
    # a brownish example (correlated channels, narrow hue range) and a start far outside it
    g = torch.Generator().manual_seed(3)
    lum = torch.rand(1, 1, N, N, generator=g)
    y = torch.cat([0.3 + 0.5 * lum, 0.2 + 0.4 * lum, 0.1 + 0.2 * lum], 1)
    y = (y + 0.02 * torch.randn(1, 3, N, N, generator=g)).clamp(0, 1)
    init = torch.rand(1, 3, N, N, generator=g)  # any colour of the RGB cube
    for hist in (True, False):
        x = synthesize(y, "cnn", steps=0, init=init, histogram_matching=hist,
                       model_options=SMALL_CNN)
        px, py = _pca_coords(x, y)
        assert (px.min(axis=1) >= py.min(axis=1) - 1e-5).all()
        assert (px.max(axis=1) <= py.max(axis=1) + 1e-5).all()
    # the RGB histograms stay close to the example's (the clamp moves few pixels a little)
    x = synthesize(y, "cnn", steps=1, lbfgs_iters=2, model_options=SMALL_CNN)
    for c in range(3):
        d = x[0, c].flatten().sort().values - y[0, c].flatten().sort().values
        assert float(d.abs().mean()) < 0.01
    # without the clamp, the off-range start leaves colours outside the example's range
    x = synthesize(y, "cnn", steps=0, init=init, histogram_matching=False, colour_range=False,
                   model_options=SMALL_CNN)
    px, py = _pca_coords(x, y)
    assert (px.max(axis=1) > py.max(axis=1) + 0.01).any()


def test_custom_module_maps_and_statistics() -> None:
    y = _texture()
    torch.manual_seed(0)  # the conv's random init: independent of the other tests' draws
    conv = torch.nn.Conv2d(1, 4, 5, padding=2, padding_mode="circular")
    s = Synthesizer(y, conv, steps=3, lbfgs_iters=4)
    s.run()
    assert s.loss_kind == "sw" and s.losses[-1] < s.losses[0]
    assert all(p.grad is None for p in conv.parameters())

    class Stats(torch.nn.Module):  # returns (B, K) statistics -> normalised L2 loss
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            d = x - x.roll(1, -1)
            return torch.stack([x.mean((1, 2, 3)), x.var((1, 2, 3)), d.abs().mean((1, 2, 3))], 1)

    s = Synthesizer(y, Stats(), steps=3, lbfgs_iters=4)
    s.run()
    assert s.loss_kind == "moments" and s.losses[-1] < s.losses[0]


def test_seed_reproducibility() -> None:
    y = _texture(3)
    kw = {"steps": 2, "lbfgs_iters": 3, "model_options": SMALL_CNN}
    a = synthesize(y, "cnn", seed=3, **kw)
    b = synthesize(y, "cnn", seed=3, **kw)
    c = synthesize(y, "cnn", seed=4, **kw)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


@pytest.mark.parametrize("optimizer", ["lbfgs", "adam"])
def test_resume_equals_uninterrupted(tmp_path: Path, optimizer: str) -> None:
    # 2 scales (64 -> 32 pixels), the scale change inside the resumed half; the random SW
    # directions, the L-BFGS history and the RNG state must all be restored
    y = _texture(3, n=64)
    kw = {"steps": 2, "lbfgs_iters": 3, "optimizer": optimizer, "scales": 2,
          "model_options": SMALL_CNN, "seed": 7}
    straight = Synthesizer(y, "cnn", **kw)
    ref = straight.run()
    assert straight.stages == 2 and straight.global_step() == 1 + 2

    ckpt = tmp_path / "run.ckpt"
    first = Synthesizer(y, "cnn", checkpoint=ckpt, checkpoint_every=100, **kw)
    first.run(steps=1)  # stops after the coarse scale: the resumed run changes scale
    assert ckpt.exists() and not first.done
    del first
    second = Synthesizer(y, "cnn", checkpoint=ckpt, resume=True, **kw)  # "new process"
    out = second.run()
    assert second.global_step() == straight.global_step()
    assert torch.equal(out, ref)
    assert second.losses == straight.losses


def test_state_dict_round_trip_through_torch_save(tmp_path: Path) -> None:
    y = _texture()
    s = Synthesizer(y, "cnn", steps=3, lbfgs_iters=2, model_options=SMALL_CNN)
    s.setup()
    s.step()
    torch.save(s.state_dict(), tmp_path / "s.pt")
    s.step()
    s2 = Synthesizer(y, "cnn", steps=3, lbfgs_iters=2, model_options=SMALL_CNN)
    s2.load_state_dict(torch.load(tmp_path / "s.pt", weights_only=False))
    s2.step()
    assert torch.equal(s.current(), s2.current())
    other = Synthesizer(y, "cnn", size=(16, 16), steps=3, model_options=SMALL_CNN)
    with pytest.raises(ValueError, match="different synthesis"):
        other.load_state_dict(s.state_dict())


def test_time_budget_callback_and_progress_snapshots() -> None:
    y = _texture()
    s = Synthesizer(y, "cnn", time_budget=0.01, lbfgs_iters=2, model_options=SMALL_CNN)
    s.run()
    # setup counts towards the budget, and the budget stops an L-BFGS call itself after
    # its first evaluation: at most one step, one evaluation
    assert s.done and s.global_step() <= 1 and s.evaluations <= 1
    s = Synthesizer(y, "cnn", time_budget=3.0, lbfgs_iters=50, model_options=SMALL_CNN)
    s.run()  # one long L-BFGS call would take longer: cut inside the call, at the budget
    assert s.done and s.elapsed < 3.0 + 5.0
    seen: list[int] = []

    def cb(info: dict) -> bool:
        seen.append(info["step"])
        return info["step"] >= 2

    s = Synthesizer(y, "cnn", steps=10, lbfgs_iters=2, callback=cb, store_progress=1,
                    model_options=SMALL_CNN)
    s.run()
    assert seen == [1, 2] and [p[0] for p in s.progress] == [1, 2]
    assert s.progress[0][2].shape == (1, 1, N, N)


def test_stall_stops_early() -> None:
    y = _texture()
    s = Synthesizer(y, "cnn", steps=50, lbfgs_iters=2, tol=1.0, patience=2,
                    model_options=SMALL_CNN)
    s.run()
    assert s.global_step() == 3


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"model": "nope"}, "unknown model"),
        ({"loss": "l1"}, "unknown loss"),
        ({"optimizer": "sgd"}, "unknown optimizer"),
        ({"model": "scattering", "model_options": {"J": 5}}, "too small"),
        ({"size": (4, 4)}, "too small"),
        ({"size": "12by4"}, "HxW"),
    ],
)
def test_bad_options(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        Synthesizer(_texture(), **kwargs)


def test_bad_examples() -> None:
    y = _texture()
    bad = y.clone()
    bad[0, 0, 3, 3] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        Synthesizer(bad)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        Synthesizer(y * 255)
    with pytest.raises(ValueError, match="ONE image"):
        Synthesizer(y.repeat(2, 1, 1, 1))
    with pytest.raises(TypeError, match="floating"):
        Synthesizer((y * 255).to(torch.uint8))
    with pytest.raises(ValueError, match="too small"):
        Synthesizer(y[..., :4, :4])


# ----------------------------------------------------------------------------- CLI
def _run(*args: object):
    from difftransforms.cli import main

    try:
        runner = CliRunner(mix_stderr=False)  # type: ignore[call-arg]
    except TypeError:
        runner = CliRunner()
    return runner.invoke(main, [str(a) for a in args])


@pytest.fixture
def example_png(tmp_path: Path) -> Path:
    p = tmp_path / "ex.png"
    arr = (_texture(3)[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    Image.fromarray(arr, "RGB").save(p)
    return p


def test_cli_synthesize_happy_path_and_resume(tmp_path: Path, example_png: Path) -> None:
    out = tmp_path / "out.png"
    ck = tmp_path / "run.ckpt"
    r = _run("synthesize", example_png, "-o", out, "--size", "24x40", "--steps", "1",
             "--model", "covariance", "--device", "cpu", "-q", "--checkpoint", ck)
    assert r.exit_code == 0, r.output + r.stderr
    assert "wrote" in r.output
    img = np.asarray(Image.open(out))
    assert img.shape == (24, 40, 3)
    # the checkpoint exists: a second run must ask for --resume (or --force)
    r = _run("synthesize", example_png, "-o", tmp_path / "o2.png", "--steps", "1",
             "--size", "24x40", "--model", "covariance", "-q", "--checkpoint", ck)
    assert r.exit_code == 2 and "--resume" in r.stderr
    r = _run("synthesize", example_png, "-o", tmp_path / "o2.png", "--steps", "1",
             "--size", "24x40", "--model", "covariance", "-q", "--checkpoint", ck, "--resume")
    assert r.exit_code == 0, r.stderr
    assert np.array_equal(np.asarray(Image.open(tmp_path / "o2.png")), img)


@pytest.mark.parametrize(
    ("args", "match"),
    [
        (["--model", "nope"], "Invalid value for '--model'"),
        (["--model", "scattering", "-J", "5"], "too small"),
        (["--size", "0x3"], "between 16 and 8192"),
        (["--resume"], "--checkpoint"),
        (["--model", "cnn", "--loss", "moments", "--size", "32"], "--loss gram|sw"),
        (["--model", "covariance", "--loss", "gram"], "--loss moments"),
        (["--checkpoint", "/nonexistent-dir/x.ckpt"], "does not exist"),
    ],
)
def test_cli_synthesize_errors(tmp_path: Path, example_png: Path, args: list, match: str) -> None:
    r = _run("synthesize", example_png, "-o", tmp_path / "o.png", "--steps", "1", "-q", *args)
    assert r.exit_code == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and match in lines[0], r.stderr


def test_cli_synthesize_refuses_existing_output(tmp_path: Path, example_png: Path) -> None:
    out = tmp_path / "o.png"
    out.write_bytes(b"keep")
    r = _run("synthesize", example_png, "-o", out, "--steps", "1", "-q")
    assert r.exit_code == 2 and "--force" in r.stderr
    assert out.read_bytes() == b"keep"


def test_cli_vgg19_without_weights_is_a_user_error(tmp_path: Path, example_png: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    from difftransforms.features import WeightsUnavailableError

    def unavailable(*a, **k):
        raise WeightsUnavailableError("VGG19 weights are not available offline")

    monkeypatch.setattr("difftransforms.synthesis.models._vgg19", unavailable)
    monkeypatch.setitem(
        __import__("difftransforms.synthesis.models", fromlist=["x"])._FACTORIES,
        "vgg19", unavailable,
    )
    r = _run("synthesize", example_png, "-o", tmp_path / "o.png", "--steps", "1", "-q",
             "--model", "vgg19")
    assert r.exit_code == 2 and r.stderr.startswith("error:") and "weights" in r.stderr


# ----------------------------------------------------------------------------- stylize
def test_stylize_keeps_content_and_moves_towards_style(tmp_path: Path, example_png: Path) -> None:
    from difftransforms.synthesis import stylize

    content = _texture(1, seed=1)
    content = (content * 0 + torch.linspace(0.2, 0.8, N).view(1, 1, 1, N)).contiguous()  # ramp
    style = _texture(1, seed=2)
    kw = {"model": "cnn", "steps": 2, "lbfgs_iters": 3, "model_options": SMALL_CNN}
    strong = stylize(content, style, content_weight=100.0, **kw)
    weak = stylize(content, style, content_weight=0.01, **kw)
    assert strong.shape == content.shape
    # a strong content weight stays closer to the content than a weak one
    assert (strong - content).pow(2).mean() < (weak - content).pow(2).mean()
    with pytest.raises(ValueError, match="feature maps"):
        stylize(content, style, model="covariance", steps=1)
    r = _run("stylize", example_png, example_png, "-o", tmp_path / "s.png", "--steps", "1",
             "-q", "--size", "24x24")
    assert r.exit_code == 0, r.stderr
    assert np.asarray(Image.open(tmp_path / "s.png")).shape == (24, 24, 3)


# ----------------------------------------------------------------------------- colour path
def test_fourier_downsample_matches_scipy_resample() -> None:
    from scipy.signal import resample

    from difftransforms.synthesis.colour import fourier_downsample

    rng = np.random.default_rng(4)
    for h, w, sh, sw in [(16, 16, 7, 9), (15, 17, 7, 5), (33, 20, 11, 9)]:  # odd targets
        x = rng.standard_normal((h, w))
        ref = resample(resample(x, sh, axis=0), sw, axis=1)
        ours = fourier_downsample(torch.from_numpy(x)[None, None], (sh, sw))[0, 0].numpy()
        np.testing.assert_allclose(ours, ref, atol=1e-12)
    # even target, band-limited input (nothing at or above the new Nyquist): exact samples
    t = np.arange(32) / 32
    x = np.cos(2 * np.pi * (3 * t[:, None] + 5 * t[None, :])) + np.sin(2 * np.pi * 7 * t)[:, None]
    ours = fourier_downsample(torch.from_numpy(x)[None, None], (16, 16))[0, 0].numpy()
    np.testing.assert_allclose(ours, x[::2, ::2], atol=1e-12)


def test_colour_statistics_layout_and_reference() -> None:
    from scipy.signal import resample

    from difftransforms.scattering import CovarianceMoments, ScatteringSpectra
    from difftransforms.synthesis.colour import ColourStatistics

    y = _texture(3).double()
    y[:, 1] = 0.6 * y[:, 0] + 0.4 * y[:, 1]
    J, L = 3, 2
    cs = ColourStatistics(lambda j: ScatteringSpectra(J=j, L=L), y, J, L)
    lum, chroma, power = cs(y)
    n = lambda j: ScatteringSpectra(J=j, L=L).n_statistics  # noqa: E731
    assert lum.shape == (1, n(J)) and chroma.shape == (1, 5 * n(J - 1))
    assert power.shape == (1, 6 * (2 + J * L))
    # outside reference: numpy PCA of the example's colours (whitened, largest first) and
    # scipy's Fourier resampling of the chroma and pair-sum channels
    pix = y[0].reshape(3, -1).numpy()
    vals, vecs = np.linalg.eigh(np.cov(pix))
    vals, vecs = vals[::-1], vecs[:, ::-1]
    std = np.sqrt(np.maximum(vals, vals[0] * 1e-3 + 1e-12))
    p = (vecs.T / std[:, None] * std[0]) @ (pix - pix.mean(axis=1, keepdims=True))
    p = p * np.sign((p * cs.pca(y)[0].reshape(3, -1).numpy()).sum(axis=1, keepdims=True))
    p = p.reshape(3, N, N)
    pairs = [(p[i] + p[j]) / np.sqrt(2) for i, j in ((0, 1), (0, 2), (1, 2))]
    six = torch.from_numpy(np.stack([*p, *pairs])[None].copy())
    torch.testing.assert_close(lum, ScatteringSpectra(J=J, L=L)(six[:, :1]).reshape(1, -1))
    torch.testing.assert_close(power, CovarianceMoments(J=J, L=L)(six).reshape(1, -1))
    # chroma + pairs at half resolution; an odd half size (34 -> 17), where scipy's Fourier
    # resampling and ours agree exactly
    y34 = torch.nn.functional.pad(y, (1, 1, 1, 1), mode="circular")
    _, chroma34, _ = cs(y34)
    p34 = cs.transform(y34)[0, 1:].numpy()
    half = np.stack([resample(resample(c, 17, axis=0), 17, axis=1) for c in p34])
    ref = ScatteringSpectra(J=J - 1, L=L)(torch.from_numpy(half[None].copy()))
    torch.testing.assert_close(chroma34, ref.reshape(1, -1))


def test_colour_statistics_see_cross_channel_structure() -> None:
    # same per-component statistics, different colour correlations: the pair sums tell them
    from difftransforms.scattering import ScatteringSpectra
    from difftransforms.synthesis.colour import ColourStatistics

    y = _texture(3).double()
    cs = ColourStatistics(lambda j: ScatteringSpectra(J=j, L=2), y, 2, 2)
    p = cs.pca(y)
    q = p.clone()
    q[:, 1] = p[:, 1].roll(6, dims=-1)  # component 1 alone shifted (even: exact at half res)
    lum_p, ch_p, pw_p = cs(y)
    lum_q, ch_q, pw_q = cs(cs.inverse(q))
    torch.testing.assert_close(lum_p, lum_q)
    k = ch_p.shape[1] // 5  # the first block of the chroma stats: component 1 itself
    torch.testing.assert_close(ch_p[:, :k], ch_q[:, :k])
    assert (pw_p - pw_q).abs().max() > 1e-3  # the pair sums' band power moved
    assert (ch_p[:, 2 * k:] - ch_q[:, 2 * k:]).abs().max() > 1e-3


@pytest.mark.parametrize("model", ["spectra", "covariance"])
def test_colour_fast_path_is_default_and_optimises(model: str) -> None:
    from difftransforms.synthesis.colour import ColourStatistics

    s = Synthesizer(_texture(3), model, steps=2, lbfgs_iters=4, model_options={"J": 2, "L": 2})
    x = s.run()
    assert isinstance(s._model, ColourStatistics)
    assert x.shape == (1, 3, N, N) and s.losses[-1] < s.losses[0]
    full = Synthesizer(_texture(3), model, steps=1, lbfgs_iters=1,
                       model_options={"J": 2, "L": 2, "colour": "full"})
    full.setup()
    assert not isinstance(full._model, ColourStatistics)
    with pytest.raises(ValueError, match="colour must be"):
        Synthesizer(_texture(3), model, steps=1, model_options={"colour": "fancy"}).setup()


def test_cnn_output_smaller_than_example_keeps_matching_feature_lists():
    # the CNN's local-mean maps depend on the image size: X (32²) and the example (64²)
    # must still produce the same list of feature maps
    from difftransforms.synthesis import synthesize

    y = torch.rand(1, 1, 64, 64, generator=torch.Generator().manual_seed(0))
    x = synthesize(y, model="cnn", size=32, steps=1, seed=0)
    assert x.shape == (1, 1, 32, 32)
    assert torch.isfinite(x).all()


def test_cli_synthesize_notes_and_interrupt(tmp_path: Path, example_png: Path,
                                            monkeypatch) -> None:
    """A --resume without a checkpoint file says it starts anew; Ctrl-C saves the progress
    (and says so); a time budget that cuts the planned steps says so."""
    ck = tmp_path / "new.ckpt"
    r = _run("synthesize", example_png, "-o", tmp_path / "a.png", "--steps", "1", "--size",
             "24x40", "--model", "covariance", "-q", "--checkpoint", ck, "--resume")
    assert r.exit_code == 0 and "no checkpoint at" in r.stderr and ck.exists()

    from difftransforms.synthesis import Synthesizer

    real_step = Synthesizer.step
    calls = {"n": 0}

    def step_then_interrupt(self):  # noqa: ANN001, ANN202
        calls["n"] += 1
        if calls["n"] > 2:
            raise KeyboardInterrupt
        return real_step(self)

    monkeypatch.setattr(Synthesizer, "step", step_then_interrupt)
    ck2 = tmp_path / "int.ckpt"
    r = _run("synthesize", example_png, "-o", tmp_path / "b.png", "--steps", "10", "--size",
             "24x40", "--model", "covariance", "-q", "--checkpoint", ck2)
    assert r.exit_code == 130 and ck2.exists() and not (tmp_path / "b.png").exists()
    assert "progress saved in" in r.stderr and "step 2" in r.stderr and "--resume" in r.stderr
    monkeypatch.setattr(Synthesizer, "step", real_step)
    r = _run("synthesize", example_png, "-o", tmp_path / "b.png", "--steps", "3", "--size",
             "24x40", "--model", "covariance", "-q", "--checkpoint", ck2, "--resume")
    assert r.exit_code == 0, r.stderr
    assert "3 steps" in r.output  # 2 saved + 1 more

    r = _run("synthesize", example_png, "-o", tmp_path / "c.png", "--steps", "100000",
             "--time", "0.5", "--size", "24x40", "--model", "covariance", "-q")
    assert r.exit_code == 0 and "stopped by the 0.5 s time budget" in r.stderr
