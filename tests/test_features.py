"""CNN feature extractors: random multi-scale CNN, VGG19, FeatureExtractor, Gram matrices."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy import signal
from torch import nn

from difftransforms.features import (
    VGG19_LAYER_NAMES,
    WEIGHTS_ENV_VAR,
    FeatureExtractor,
    RandomMultiscaleCNN,
    VGG19Features,
    WeightsUnavailableError,
    circular_conv2d,
    gram_matrix,
)
from difftransforms.features import vgg as vgg_mod

# ------------------------------------------------------------------ RandomMultiscaleCNN


def _direct_circular(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    p = w.shape[-1] // 2
    return F.conv2d(F.pad(x, (p, p, p, p), mode="circular"), w)


@pytest.mark.parametrize("shape", [(40, 36), (33, 64)])
def test_fft_path_equals_direct_circular_conv(device, dtype, shape):
    torch.manual_seed(0)
    sizes = (3, 5, 11, 15, 23)
    net = RandomMultiscaleCNN(3, sizes=sizes, channels_per_size=6, seed=3, method="fft",
                              activation=None).to(device=device, dtype=dtype)
    x = torch.rand(2, 3, *shape, device=device, dtype=dtype)
    out = net(x)
    tol = 1e-5 if dtype == torch.float32 else 1e-12
    for s in sizes:
        ref = _direct_circular(x, net.weight(s))
        assert out[f"conv{s}"].shape == (2, 6, *shape)
        torch.testing.assert_close(out[f"conv{s}"], ref, atol=tol, rtol=0)


def test_auto_and_direct_methods_agree_with_fft():
    x = torch.rand(1, 3, 48, 48, dtype=torch.float64)
    kw = dict(sizes=(3, 7, 11, 23), channels_per_size=4, seed=1)
    outs = [RandomMultiscaleCNN(method=m, **kw).double()(x) for m in ("auto", "fft", "direct")]
    net = RandomMultiscaleCNN(**kw)
    assert [net.uses_fft(s) for s in kw["sizes"]] == [False, False, True, True]
    for name in outs[0]:
        torch.testing.assert_close(outs[0][name], outs[1][name], atol=1e-12, rtol=0)
        torch.testing.assert_close(outs[0][name], outs[2][name], atol=1e-12, rtol=0)


def test_kernel_larger_than_image_wraps_like_scipy():
    """Filters bigger than the image wrap around several times: numpy 'wrap' padding +
    scipy.signal.correlate is the outside reference."""
    rng = np.random.default_rng(0)
    x = rng.random((1, 2, 9, 7))
    net = RandomMultiscaleCNN(2, sizes=(23,), channels_per_size=3, activation=None).double()
    out = net(torch.from_numpy(x))["conv23"].numpy()
    w = net.weight(23).numpy()
    xp = np.pad(x[0], ((0, 0), (11, 11), (11, 11)), mode="wrap")
    for k in range(3):
        ref = sum(signal.correlate(xp[c], w[k, c], mode="valid") for c in range(2))
        np.testing.assert_allclose(out[0, k], ref, atol=1e-11)
    # the functional form agrees too
    y = circular_conv2d(torch.from_numpy(x), net.weight(23))
    np.testing.assert_allclose(y.numpy(), out, atol=1e-11)


def test_seed_reproducibility_and_filter_normalisation():
    a = RandomMultiscaleCNN(3, sizes=(3, 15), channels_per_size=8, seed=7)
    b = RandomMultiscaleCNN(3, sizes=(3, 15), channels_per_size=8, seed=7)
    c = RandomMultiscaleCNN(3, sizes=(3, 15), channels_per_size=8, seed=8)
    for s in (3, 15):
        assert torch.equal(a.weight(s), b.weight(s))
        assert not torch.allclose(a.weight(s), c.weight(s))
        w = a.weight(s).double().flatten(1)
        torch.testing.assert_close(w.mean(1), torch.zeros(8, dtype=torch.float64),
                                   atol=1e-7, rtol=0)
        torch.testing.assert_close(w.norm(dim=1), torch.ones(8, dtype=torch.float64),
                                   atol=1e-6, rtol=0)
    # zero-mean filters ignore a constant offset
    x = torch.rand(1, 3, 32, 32)
    fa, fb = a(x), a(x + 0.3)
    for k in fa:
        torch.testing.assert_close(fa[k], fb[k], atol=1e-5, rtol=0)
    # weights are buffers, saved and restored
    sd = a.state_dict()
    assert "weight_15" in sd and not list(a.parameters())
    c.load_state_dict(sd)
    assert torch.equal(c.weight(15), a.weight(15))


def test_shapes_names_and_defaults():
    net = RandomMultiscaleCNN()
    assert net.layer_names == [f"conv{s}" for s in (3, 5, 7, 11, 15, 23, 37, 55)]
    assert net.out_channels == 8 * 64
    small = RandomMultiscaleCNN(1, sizes=(3, 5, 37), channels_per_size=(2, 3, 4))
    out = small(torch.rand(2, 1, 20, 24))
    assert list(out) == ["conv3", "conv5", "conv37"]
    assert [tuple(v.shape) for v in out.values()] == [(2, 2, 20, 24), (2, 3, 20, 24),
                                                      (2, 4, 20, 24)]
    assert all(bool((v >= 0).all()) for v in out.values())  # ReLU


@pytest.mark.parametrize("method", ["fft", "direct"])
def test_gradcheck(method):
    net = RandomMultiscaleCNN(2, sizes=(3, 11), channels_per_size=2, method=method,
                              activation="softplus", bias_std=0.1).double()
    x = torch.rand(1, 2, 8, 6, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: tuple(net(t).values()), (x,), fast_mode=True)


def test_gradients_flow_and_spectra_cache():
    net = RandomMultiscaleCNN(3, sizes=(3, 23), channels_per_size=4)
    x = torch.rand(1, 3, 32, 32, requires_grad=True)
    sum(v.square().sum() for v in net(x).values()).backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert len(net._spectra) == 1
    net(torch.rand(1, 3, 32, 32))
    assert len(net._spectra) == 1  # reused
    net(torch.rand(1, 3, 16, 16))
    net(torch.rand(1, 3, 24, 16))
    assert len(net._spectra) == 2  # bounded
    net.double()
    assert len(net._spectra) == 0
    assert net(torch.rand(1, 3, 16, 16, dtype=torch.float64))["conv23"].dtype == torch.float64


def test_random_cnn_bad_arguments():
    with pytest.raises(ValueError, match="odd"):
        RandomMultiscaleCNN(sizes=(4,))
    with pytest.raises(ValueError, match="circular"):
        RandomMultiscaleCNN(padding="zeros")
    with pytest.raises(ValueError, match="activation"):
        RandomMultiscaleCNN(activation="swish!")
    net = RandomMultiscaleCNN(3, sizes=(3,), channels_per_size=2)
    with pytest.raises(ValueError, match="3 input channels"):
        net(torch.rand(1, 1, 8, 8))
    with pytest.raises(TypeError, match="floating"):
        net(torch.zeros(1, 3, 8, 8, dtype=torch.uint8))


# ------------------------------------------------------------------ Gram matrices


def test_gram_matrix_against_manual(dtype):
    f = torch.randn(2, 5, 6, 7, dtype=dtype)
    g = gram_matrix(f)
    ref = torch.einsum("bihw,bjhw->bij", f, f) / 42
    torch.testing.assert_close(g, ref)
    torch.testing.assert_close(gram_matrix(f, normalize=False), ref * 42)
    fc = f - f.mean(dim=(2, 3), keepdim=True)
    torch.testing.assert_close(gram_matrix(f, center=True),
                               torch.einsum("bihw,bjhw->bij", fc, fc) / 42)
    with pytest.raises(ValueError, match="B, K, H, W"):
        gram_matrix(torch.rand(3, 4))


# ------------------------------------------------------------------ VGG19


@pytest.fixture(scope="module")
def tv_features() -> nn.Sequential:
    """torchvision's vgg19 ``features`` (random weights) — the outside reference."""
    from torchvision.models.vgg import cfgs, make_layers

    torch.manual_seed(0)
    return make_layers(cfgs["E"], batch_norm=False).eval()


def _normalise(x: torch.Tensor) -> torch.Tensor:
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    return (x - mean) / std


def test_layer_names_match_torchvision_structure(tv_features):
    assert len(VGG19_LAYER_NAMES) == len(tv_features) == 37
    for name, m in zip(VGG19_LAYER_NAMES, tv_features, strict=True):
        kind = {"conv": nn.Conv2d, "relu": nn.ReLU, "pool": nn.MaxPool2d}[name[:4]]
        assert isinstance(m, kind), name
    assert VGG19_LAYER_NAMES.index("relu4_1") == 20  # torchvision features[20]
    with pytest.raises(ValueError, match="conv5_4"):  # the message lists valid names
        VGG19Features(("relu9_9",), weights=None)


@pytest.mark.parametrize("full", [True, False], ids=["vgg19-state-dict", "features-only"])
def test_vgg_from_local_file_matches_torchvision(tmp_path, tv_features, full):
    sd = tv_features.state_dict()
    if full:  # torchvision vgg19().state_dict() layout: features.* and classifier.*
        sd = {f"features.{k}": v for k, v in sd.items()}
        sd["classifier.0.weight"] = torch.zeros(2, 2)
    path = tmp_path / "vgg19.pth"
    torch.save(sd, path)
    layers = ("conv1_1", "relu1_1", "pool1", "relu3_1", "pool3")
    net = VGG19Features(layers, pooling="max", weights=str(path))
    assert net.pretrained and net.layer_names == list(layers)
    x = torch.rand(2, 3, 32, 32)
    out = net(x)
    h = _normalise(x)
    with torch.no_grad():
        for name in layers:
            k = VGG19_LAYER_NAMES.index(name)
            ref = tv_features[: k + 1](h)
            torch.testing.assert_close(out[name], ref, atol=1e-5, rtol=1e-5)


def test_vgg_avg_pooling_frozen_and_grey(tmp_path, tv_features):
    path = tmp_path / "features.pth"
    torch.save(tv_features.state_dict(), path)
    net = VGG19Features(("pool2",), pooling="avg", weights=path)
    ref_seq = nn.Sequential(*[nn.AvgPool2d(2, 2) if isinstance(m, nn.MaxPool2d) else m
                              for m in tv_features[:10]])
    x = torch.rand(1, 3, 16, 16, requires_grad=True)
    out = net(x)["pool2"]
    torch.testing.assert_close(out, ref_seq(_normalise(x)), atol=1e-5, rtol=1e-5)
    assert all(not p.requires_grad for p in net.parameters())
    out.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    net.train()
    assert not net.training
    g = torch.rand(1, 1, 16, 16)
    torch.testing.assert_close(net(g)["pool2"], net(g.expand(1, 3, 16, 16))["pool2"])
    with pytest.raises(ValueError, match="3 \\(RGB\\) or 1"):
        net(torch.rand(1, 2, 16, 16))
    with pytest.raises(TypeError, match=r"\.to\(x\)"):
        net(torch.rand(1, 3, 16, 16, dtype=torch.float64))


def test_vgg_default_offline_error_is_fast_and_clear(tmp_path, monkeypatch):
    monkeypatch.delenv(WEIGHTS_ENV_VAR, raising=False)
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    monkeypatch.setattr(vgg_mod, "_FAILED_DOWNLOAD", [])
    calls = []

    def no_network(url, timeout):
        calls.append(url)
        raise OSError("no network (test)")

    monkeypatch.setattr(vgg_mod, "_download", no_network)
    t0 = time.perf_counter()
    with pytest.raises(WeightsUnavailableError) as info:
        VGG19Features()
    assert time.perf_counter() - t0 < 5
    msg = str(info.value)
    assert "weights=" in msg and "--weights PATH" in msg and WEIGHTS_ENV_VAR in msg
    assert "no network (test)" in msg and len(calls) == 1
    with pytest.raises(WeightsUnavailableError):  # second try does not wait again
        VGG19Features()
    assert len(calls) == 1


def test_vgg_real_download_gives_up_quickly():
    """The real download routine against an unreachable host returns within its timeout."""
    t0 = time.perf_counter()
    with pytest.raises(OSError):
        vgg_mod._download("https://unreachable.invalid/vgg19.pth", timeout=1.0)
    assert time.perf_counter() - t0 < 4


def test_vgg_default_uses_cache_then_env_var(tmp_path, monkeypatch, tv_features):
    monkeypatch.delenv(WEIGHTS_ENV_VAR, raising=False)
    monkeypatch.setattr(vgg_mod, "_download", lambda *a: pytest.fail("must not download"))
    hub = tmp_path / "hub"
    (hub / "checkpoints").mkdir(parents=True)
    sd = {f"features.{k}": v for k, v in tv_features.state_dict().items()}
    torch.save(sd, hub / "checkpoints" / "vgg19-dcbb9e9d.pth")
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(hub))
    net = VGG19Features(("relu1_1",))
    assert net.pretrained
    torch.testing.assert_close(net.body[0].weight, tv_features[0].weight)
    other = {k: v + 1 for k, v in tv_features.state_dict().items()}
    torch.save(other, tmp_path / "env.pth")
    monkeypatch.setenv(WEIGHTS_ENV_VAR, str(tmp_path / "env.pth"))
    net = VGG19Features(("relu1_1",))
    torch.testing.assert_close(net.body[0].weight, tv_features[0].weight + 1)


def test_vgg_bad_weight_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        VGG19Features(weights=tmp_path / "missing.pth")
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="cannot read"):
        VGG19Features(weights=tmp_path / "junk.pth")
    torch.save({"fc.weight": torch.zeros(1)}, tmp_path / "other.pth")
    with pytest.raises(ValueError, match="not a VGG19 state dict"):
        VGG19Features(weights=tmp_path / "other.pth")


# ------------------------------------------------------------------ FeatureExtractor


def test_feature_extractor_fx_matches_manual_forward():
    from torchvision.models import resnet18

    torch.manual_seed(0)
    model = resnet18(num_classes=10).eval()
    ex = FeatureExtractor(model, ["relu", "layer1.0.relu", "layer2", "fc"])
    assert ex.method == "hooks"  # "layer2" is a module, not a traced node -> hooks
    ex = FeatureExtractor(model, ["relu", "layer1.0.add", "layer2.1.relu_1", "fc"])
    assert ex.method == "fx"
    x = torch.rand(2, 3, 32, 32)
    out = ex(x)
    with torch.no_grad():
        h0 = model.relu(model.bn1(model.conv1(x)))
        b = model.layer1[0]
        add = b.bn2(b.conv2(b.relu(b.bn1(b.conv1(model.maxpool(h0)))))) + model.maxpool(h0)
        l2 = model.layer2(model.layer1(model.maxpool(h0)))
        logits = model(x)
    torch.testing.assert_close(out["relu"], h0)  # not overwritten by later in-place ReLUs
    torch.testing.assert_close(out["layer1.0.add"], add)
    torch.testing.assert_close(out["layer2.1.relu_1"], l2)
    torch.testing.assert_close(out["fc"], logits)


class _Branchy(nn.Module):
    """Data-dependent control flow: torch.fx cannot trace it."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(1, 3, 3, padding=1)
        self.act = nn.ReLU(inplace=True)
        self.b = nn.Conv2d(3, 2, 3, padding=1)
        self.c = nn.Linear(2, 2)

    def forward(self, x):
        h = self.a(x)
        if h.mean() > 0:
            h = -h
        h = self.b(self.act(h))
        return self.c(h.mean(dim=(2, 3)))


def test_feature_extractor_hooks_fallback_and_errors():
    torch.manual_seed(0)
    model = _Branchy()
    ex = FeatureExtractor(model, ["b", "a"])
    assert ex.method == "hooks"
    x = torch.rand(1, 1, 8, 8)
    out = ex(x)
    assert list(out) == ["b", "a"]
    h = model.a(x)
    torch.testing.assert_close(out["a"], h)  # cloned before the in-place ReLU
    torch.testing.assert_close(out["b"], model.b(F.relu(-h if h.mean() > 0 else h)))
    with pytest.raises(ValueError, match=r"unknown layer name\(s\) \['d'\].*a, act, b, c"):
        FeatureExtractor(model, ["d"])
    with pytest.raises(RuntimeError, match="hooks"):
        FeatureExtractor(model, ["a"], method="fx")
    with pytest.raises(ValueError, match="valid names"):
        FeatureExtractor(nn.Sequential(nn.Conv2d(1, 1, 3)), ["5"])
