"""Style transfer (``stylize`` / ``Stylizer`` / ``difftransforms stylize``) and the engine's
optional kernel-MMD term (``Synthesizer(..., mmd_weight=...)``).

Outside references: scipy.ndimage (Sobel edges, Gaussian blur) for the structure measures,
scipy.spatial (pairwise distances) for the MMD bandwidth, and a dense PyTorch MMD.
"""

from __future__ import annotations

import importlib.util
import math
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image
from scipy import ndimage
from scipy.spatial.distance import pdist

from difftransforms.cli import main
from difftransforms.features import WEIGHTS_ENV_VAR, WeightsUnavailableError
from difftransforms.features import vgg as vgg_mod
from difftransforms.synthesis import Stylizer, Synthesizer, luminance, stylize
from difftransforms.synthesis.models import feature_list

ROOT = Path(__file__).resolve().parents[1]
SMALL_CNN = {"sizes": (3, 7, 15), "channels_per_size": 8}
FAST = {"model": "cnn", "model_options": SMALL_CNN, "lbfgs_iters": 5}


def _stripes(n: int = 48, seed: int = 0) -> torch.Tensor:
    """An RGB texture (1, 3, n, n): orange/blue diagonal stripes with noise."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.arange(n), torch.arange(n), indexing="ij")
    s = torch.sin(2 * math.pi * (xx + yy) / 6.0)[None]
    base = torch.tensor([0.9, 0.55, 0.2]).view(3, 1, 1)
    other = torch.tensor([0.2, 0.35, 0.8]).view(3, 1, 1)
    img = base * (s > 0) + other * (s <= 0) + 0.05 * torch.randn(3, n, n, generator=g)
    return img[None].clamp(0, 1).float()


def _shapes(n: int = 48) -> torch.Tensor:
    """A grey content image (1, 1, n, n): a bright disk and a dark bar on mid grey."""
    yy, xx = torch.meshgrid(torch.arange(n, dtype=torch.float32),
                            torch.arange(n, dtype=torch.float32), indexing="ij")
    img = torch.full((n, n), 0.5)
    img[(yy - n * 0.35) ** 2 + (xx - n * 0.35) ** 2 < (n * 0.2) ** 2] = 0.95
    img[int(n * 0.65): int(n * 0.8), int(n * 0.15): int(n * 0.85)] = 0.05
    return img[None, None]


def _edges(x: torch.Tensor, sigma: float = 2.0) -> np.ndarray:
    """Sobel gradient magnitude of the smoothed luminance (scipy)."""
    lum = ndimage.gaussian_filter(luminance(x)[0, 0].double().numpy(), sigma)
    return np.hypot(ndimage.sobel(lum, 0), ndimage.sobel(lum, 1))


def _corr(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(a.ravel(), b.ravel())[0, 1])


def _run(*args: object):
    return CliRunner().invoke(main, [str(a) for a in args])


def _png(path: Path, x: torch.Tensor) -> Path:
    a = (x[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    Image.fromarray(a[..., 0] if a.shape[2] == 1 else a).save(path)
    return path


# ----------------------------------------------------------------------------- API
def test_content_weight_moves_the_output_towards_the_content_structure() -> None:
    content, style = _shapes(), _stripes()
    kw = dict(FAST, steps=4, init="noise")  # from noise: the structure only comes from the term
    outs = {w: stylize(content, style, content_weight=w, **kw) for w in (0.0, 3.0)}
    ec, es = _edges(content), _edges(style)
    corr = {w: _corr(_edges(o), ec) for w, o in outs.items()}
    assert corr[3.0] > 0.6 and corr[3.0] > corr[0.0] + 0.3, corr
    assert corr[3.0] > _corr(_edges(outs[3.0]), es)
    # the colours come from the style: mean colour and spread of the channels
    out = outs[3.0]
    assert out.shape == (1, 3, 48, 48) and 0 <= float(out.min()) and float(out.max()) <= 1
    np.testing.assert_allclose(out.mean(dim=(2, 3)), style.mean(dim=(2, 3)), atol=0.08)
    assert float((out[:, 0] - out[:, 2]).abs().mean()) > 0.1  # really colour, not grey


def test_grey_and_colour_mixing_follow_the_style() -> None:
    """Output channels = the style's: grey content + RGB style -> RGB (style colours);
    RGB content + grey style -> grey (the content's luminance gives the structure)."""
    grey, rgb = _shapes(40), _stripes(40)
    a = stylize(grey, rgb, content_weight=3.0, steps=2, size=(40, 24), **FAST)
    assert a.shape == (1, 3, 40, 24)
    colour_content = torch.cat([_shapes(40), torch.full((1, 1, 40, 40), 0.3),
                                1 - _shapes(40)], dim=1)
    b = stylize(colour_content, luminance(rgb), content_weight=3.0, steps=2, **FAST)
    assert b.shape == (1, 1, 40, 40)
    assert _corr(_edges(b), _edges(colour_content)) > 0.5
    assert 0 <= float(b.min()) and float(b.max()) <= 1
    # colour content + colour style: even a strong content weight takes the colours from
    # the style (the content term is luminance only), not from the content
    c = stylize(colour_content, rgb, content_weight=10.0, steps=2, **FAST)
    mc, ms, mo = (t.mean(dim=(2, 3)) for t in (colour_content, rgb, c))
    assert float((mo - ms).norm()) < 0.5 * float((mo - mc).norm())
    assert _corr(_edges(c), _edges(colour_content)) > 0.5


def test_resume_gives_the_same_image_as_an_uninterrupted_run(tmp_path: Path) -> None:
    content, style = _shapes(64), _stripes(64)
    kw = dict(FAST, steps=4, lbfgs_iters=3, scales=2, seed=3)
    full = Stylizer(content, style, **kw).run()
    ck = tmp_path / "st.ckpt"
    first = Stylizer(content, style, checkpoint=ck, checkpoint_every=1, **kw)
    first.run(steps=3)  # "interrupted" after the coarse scale and one fine step
    assert first.stage == 1 and ck.exists()
    again = Stylizer(content, style, checkpoint=ck, resume=True, **kw)
    out = again.run()
    assert again.global_step() == 6  # 2 coarse + 4 fine steps in all
    assert torch.equal(out, full)
    # a checkpoint of another stylization is refused with a clear message
    other = Stylizer(content, style, checkpoint=ck, resume=True, **dict(kw, seed=4))
    with pytest.raises(ValueError, match="different synthesis"):
        other.run()


def test_bad_inputs_give_clear_errors() -> None:
    c, s = _shapes(32), _stripes(32)
    nan = c.clone()
    nan[0, 0, 3, 3] = float("nan")
    with pytest.raises(ValueError, match="content.*(finite|NaN)"):
        Stylizer(nan, s)
    with pytest.raises(ValueError, match="too small"):
        Stylizer(c[..., :8, :8], s)
    with pytest.raises(ValueError, match="grey .* or RGB"):
        Stylizer(c, torch.rand(1, 2, 32, 32))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        Stylizer(c * 255, s)
    with pytest.raises(ValueError, match="content_weight"):
        Stylizer(c, s, content_weight=-1.0)
    with pytest.raises(ValueError, match="feature maps"):
        Stylizer(c, s, model="covariance")
    with pytest.raises(ValueError, match="unknown init"):
        Stylizer(c, s, init="zeros")
    with pytest.raises(TypeError, match="content must be a torch.Tensor"):
        Stylizer(np.zeros((32, 32)), s)


def _offline(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> list[str]:
    """No weights anywhere and no network, as in tests/test_features.py."""
    monkeypatch.delenv(WEIGHTS_ENV_VAR, raising=False)
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    monkeypatch.setattr(vgg_mod, "_FAILED_DOWNLOAD", [])
    calls: list[str] = []

    def no_network(url: str, timeout: float) -> None:
        calls.append(url)
        raise OSError("no network (test)")

    monkeypatch.setattr(vgg_mod, "_download", no_network)
    return calls


def test_vgg_without_weights_fails_fast_with_the_option_to_pass(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = _offline(monkeypatch, tmp_path)
    t0 = time.perf_counter()
    with pytest.raises(WeightsUnavailableError, match="--weights PATH"):
        Stylizer(_shapes(32), _stripes(32), model="vgg19")
    assert time.perf_counter() - t0 < 5 and len(calls) == 1
    c = _png(tmp_path / "c.png", _shapes(32))
    r = _run("stylize", c, c, "-o", tmp_path / "o.png", "-m", "vgg19", "--steps", "1", "-q")
    assert r.exit_code == 2, r.output
    assert r.stderr.startswith("error:") and "--weights" in r.stderr
    assert "--model cnn" in r.stderr and "Traceback" not in r.output
    assert len(r.stderr.strip().splitlines()) == 1 and not (tmp_path / "o.png").exists()


def test_vgg_content_is_relu4_2_and_not_a_style_layer(tmp_path: Path) -> None:
    from difftransforms.features.vgg import _vgg19_features

    torch.manual_seed(0)
    path = tmp_path / "vgg19_random.pth"
    torch.save(_vgg19_features().state_dict(), path)  # random weights: tests the plumbing
    st = Stylizer(_shapes(32), _stripes(32), model="vgg19", steps=1, lbfgs_iters=2,
                  model_options={"weights": str(path)})
    out = st.run()
    assert out.shape == (1, 3, 32, 32) and torch.isfinite(out).all()
    assert st._net.content_layers == ("relu4_2",)
    assert [tuple(t.shape) for t in st._content_targets] == [(1, 512, 4, 4)]
    assert len(st._loss.targets) == 5  # relu1_1, pool1..pool4: relu4_2 is not matched as style


# ----------------------------------------------------------------------------- CLI
def test_cli_stylize_runs_and_rejects_bad_input(tmp_path: Path) -> None:
    grey = _png(tmp_path / "grey.png", _shapes(32))
    rgb = _png(tmp_path / "rgb.png", _stripes(32))
    out = tmp_path / "out.png"
    r = _run("stylize", grey, rgb, "-o", out, "--steps", "1", "-q", "--size", "24x16")
    assert r.exit_code == 0, r.stderr
    assert np.asarray(Image.open(out)).shape == (24, 16, 3)  # colour, from the style

    def fails(*args: object, match: str) -> None:
        res = _run("stylize", *args)
        assert res.exit_code == 2, res.output
        assert res.stderr.startswith("error:") and match in res.stderr, res.stderr
        assert len(res.stderr.strip().splitlines()) == 1

    fails(tmp_path / "missing.png", rgb, "-o", tmp_path / "a.png", match="missing.png")
    fails(grey, rgb, "-o", out, "--steps", "1", match="--force")
    fails(grey, rgb, "-o", tmp_path / "b.png", "--resume", match="--checkpoint")
    fails(grey, rgb, "-o", tmp_path / "b.png", "--content-weight", "-1", match="content-weight")
    fails(grey, rgb, "-o", tmp_path / "b.png", "--weights", grey, match="--model vgg19")
    tiny = _png(tmp_path / "tiny.png", _shapes(8))
    fails(tiny, rgb, "-o", tmp_path / "b.png", match="at least 16x16")
    nan = np.full((32, 32), 0.5, dtype=np.float32)
    nan[4, 4] = np.nan
    Image.fromarray(nan, mode="F").save(tmp_path / "nan.tif")
    fails(tmp_path / "nan.tif", rgb, "-o", tmp_path / "b.png", match="NaN")
    assert not (tmp_path / "b.png").exists()


# ----------------------------------------------------------------------------- MMD term
def test_mmd_term_matches_a_dense_reference_and_is_differentiable() -> None:
    y = _stripes(32).double()
    s = Synthesizer(y, "cnn", steps=3, lbfgs_iters=4, model_options=SMALL_CNN,
                    mmd_weight=2.0, dtype=torch.float64, seed=1)
    s.setup()
    s._mmd_seed = 7
    x = s.x
    feats = feature_list(s._model(x))
    term = s._mmd_term(feats)
    maps = [f for f in feats if f.dim() == 4]
    ref = 0.0
    for fx, fy, sig in zip(maps, s._mmd_targets, s._mmd_sigmas, strict=True):
        a = fx[0].reshape(fx.shape[1], -1).t()  # 1024 points < MMD_POINTS: no subsampling
        b = fy[0].reshape(fy.shape[1], -1).t()
        # bandwidth: median pairwise distance of the example's feature vectors (scipy)
        # (the lower middle value for an even count, as torch.median)
        d = np.sort(pdist(b.numpy()))
        np.testing.assert_allclose(float(sig), d[(len(d) - 1) // 2], rtol=1e-9)

        def k(u: torch.Tensor, v: torch.Tensor, sig: torch.Tensor = sig) -> torch.Tensor:
            return torch.exp(-torch.cdist(u, v).pow(2) / sig**2).mean()

        ref = ref + k(a, a) + k(b, b) - 2 * k(a, b)
    ref = 2.0 * ref / len(maps)
    torch.testing.assert_close(term, ref, rtol=1e-6, atol=1e-10)
    assert float(term.detach()) > 1e-4  # X (noise) is far from Y
    (g,) = torch.autograd.grad(term, x, retain_graph=True)
    (g_ref,) = torch.autograd.grad(ref, x)
    assert float(g.abs().max()) > 0
    torch.testing.assert_close(g, g_ref, rtol=1e-5, atol=1e-9)


def test_mmd_weight_optimises_and_bad_values_are_rejected() -> None:
    y = _stripes(32)
    s = Synthesizer(y, "cnn", steps=3, lbfgs_iters=4, model_options=SMALL_CNN, mmd_weight=1.0)
    x0 = None

    def first(info: dict) -> None:
        nonlocal x0
        if x0 is None:
            x0 = s._mmd_term(feature_list(s._model(info["image"])))

    s.callback = first
    s.run()
    assert s.losses[-1] < 0.5 * s.losses[0]
    mmd_end = float(s._mmd_term(feature_list(s._model(s.x.detach()))))
    assert mmd_end < float(x0)
    for bad in (-1.0, float("nan"), float("inf"), "1"):
        with pytest.raises(ValueError, match="mmd_weight"):
            Synthesizer(y, "cnn", mmd_weight=bad)

    class Stat(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x.mean(dim=(2, 3))

    with pytest.raises(ValueError, match="feature maps"):
        Synthesizer(y, Stat(), steps=1, mmd_weight=1.0).run()


def test_mmd_subsample_is_reproducible_across_resume(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from difftransforms.synthesis import engine

    monkeypatch.setattr(engine, "MMD_POINTS", 200)  # < 32 x 32 pixels: subsampled clouds
    y = _stripes(32)
    kw = dict(steps=3, lbfgs_iters=3, model_options=SMALL_CNN, mmd_weight=1.0, seed=5)
    full = Synthesizer(y, "cnn", **kw).run()
    ck = tmp_path / "mmd.ckpt"
    Synthesizer(y, "cnn", checkpoint=ck, **kw).run(steps=1)
    assert torch.equal(Synthesizer(y, "cnn", checkpoint=ck, resume=True, **kw).run(), full)


# ----------------------------------------------------------------------------- script
def test_make_stylize_example_script_runs_at_tiny_size(
        tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    spec = importlib.util.spec_from_file_location(
        "make_stylize_example", ROOT / "scripts" / "make_stylize_example.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    out = tmp_path / "sheet.png"
    args = ["--size", "32", "--steps", "1", "--pairs", "camera:wood", "--output", str(out)]
    assert mod.main(args) == 0
    assert "camera x wood" in capsys.readouterr().out
    with Image.open(out) as img:
        assert img.size[0] >= 3 * 32 and img.size[1] >= 32
    assert [p.name for p in tmp_path.iterdir()] == ["sheet.png"]  # no temp file left
    with pytest.raises(SystemExit):  # no overwrite without --force
        mod.main(args)
