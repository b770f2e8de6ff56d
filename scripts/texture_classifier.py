"""Transforms inside training code: classify texture patches with scattering moments.

Six grey texture classes are cut from the bundled assets (brick, grass, the wooden table
of ``coffee``, the cat's fur of ``chelsea``, the flag of ``astronaut``, the field of
``camera``). Each class region is cut into DISJOINT bands, alternately for training and for
testing, so a classifier never sees a test pixel.

Two classifiers, both trained with PyTorch (Adam, full batch) on the same patches:

(a) ``difftransforms.scattering.ScatteringMoments(J, L)`` (fixed, differentiable, no
    learned weights) -> standardisation -> one linear layer;
(b) a small CNN (three conv layers, global average pooling, linear) trained end to end.

For several numbers of training patches per class it prints test accuracy and training
time, and saves a figure (accuracy vs training samples per class, plus example patches) to
assets/figures/texture_classifier.png (matplotlib, the ``examples`` extra). With few
samples, the scattering moments + linear layer is far ahead: its features already encode
the texture statistics the CNN still has to learn.

    python scripts/texture_classifier.py                      # ~ 30 s on a 2-core CPU
    python scripts/texture_classifier.py --n-train 5,10,20,40,80,160 --seeds 3
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor, nn

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(ROOT))

ASSETS = ROOT / "assets"
DEFAULT_FIGURE = ASSETS / "figures" / "texture_classifier.png"

#: class name -> (asset, (row0, row1, col0, col1)) of a texture-like region
CLASSES: dict[str, tuple[str, tuple[int, int, int, int]]] = {
    "brick": ("brick.png", (0, 512, 0, 512)),
    "grass": ("grass.png", (0, 512, 0, 512)),
    "wood": ("coffee.png", (0, 400, 470, 600)),
    "fur": ("chelsea.png", (0, 75, 100, 330)),
    "flag": ("astronaut.png", (0, 300, 0, 80)),
    "field": ("camera.png", (260, 512, 416, 512)),
}


def load_grey(name: str) -> np.ndarray:
    """An asset as grey float32 in [0, 1] (ITU-R 601 luma for colour images)."""
    img = Image.open(ASSETS / name).convert("L")
    return np.asarray(img, dtype=np.float32) / 255.0


def class_regions(patch: int) -> dict[str, tuple[list[np.ndarray], list[np.ndarray]]]:
    """``{class: (train_bands, test_bands)}``: each region is cut along its longer side into
    bands ``2 * patch`` wide, alternately for training and testing. The two sets are
    disjoint (no test pixel is ever seen in training) yet both cover the whole region, so
    slow changes across it (lighting, the flag's stars above its stripes) do not become a
    train/test shift."""
    out = {}
    for cls, (asset, (r0, r1, c0, c1)) in CLASSES.items():
        region = load_grey(asset)[r0:r1, c0:c1]
        if min(region.shape) < patch:
            raise ValueError(f"class {cls!r}: region {region.shape} smaller than the patch")
        long_axis = 1 if region.shape[1] >= region.shape[0] else 0
        band = 2 * patch
        n = region.shape[long_axis] // band
        if n < 2:
            raise ValueError(f"class {cls!r}: region {region.shape} too small for "
                             f"{patch}x{patch} patches")
        bands = [np.take(region, range(i * band, (i + 1) * band), axis=long_axis)
                 for i in range(n)]
        out[cls] = (bands[0::2], bands[1::2])
    return out


def sample_patches(bands: list[np.ndarray], n: int, patch: int,
                   rng: np.random.Generator) -> Tensor:
    """``n`` random ``patch x patch`` crops lying inside one of ``bands``:
    ``(n, 1, patch, patch)``."""
    crops = []
    for b in rng.integers(0, len(bands), size=n):
        h, w = bands[b].shape
        r, c = rng.integers(0, h - patch + 1), rng.integers(0, w - patch + 1)
        crops.append(bands[b][r:r + patch, c:c + patch])
    return torch.from_numpy(np.stack(crops))[:, None]


def make_split(regions, n_train: int, n_test: int, patch: int, seed: int):
    """Train patches ``(K * n_train, 1, p, p)`` from the training bands, test patches from
    the test bands, labels in class order; train patches are ordered per class so that
    :func:`subset` can take the first ``n`` of each class (nested training sets)."""
    rng = np.random.default_rng(seed)
    xs, ys, xt, yt = [], [], [], []
    for label, (train_bands, test_bands) in enumerate(regions.values()):
        xs.append(sample_patches(train_bands, n_train, patch, rng))
        xt.append(sample_patches(test_bands, n_test, patch, rng))
        ys += [label] * n_train
        yt += [label] * n_test
    return torch.cat(xs), torch.tensor(ys), torch.cat(xt), torch.tensor(yt)


def subset(x: Tensor, y: Tensor, n_pool: int, n: int) -> tuple[Tensor, Tensor]:
    """The first ``n`` of the ``n_pool`` training patches of every class."""
    k = x.shape[0] // n_pool
    idx = torch.cat([torch.arange(c * n_pool, c * n_pool + n) for c in range(k)])
    return x[idx], y[idx]


# ------------------------------------------------------------------ models


class ScatteringLinear(nn.Module):
    """Fixed scattering moments -> standardisation (train statistics) -> linear layer."""

    def __init__(self, n_classes: int, J: int, L: int) -> None:
        super().__init__()
        from difftransforms.scattering import ScatteringMoments

        self.features = ScatteringMoments(J=J, L=L)
        k = self.features.n_moments
        self.register_buffer("mu", torch.zeros(k))
        self.register_buffer("sd", torch.ones(k))
        self.linear = nn.Linear(k, n_classes)

    def moments(self, x: Tensor) -> Tensor:
        with torch.no_grad():
            return self.features(x)[:, 0]  # (B, 1, K) -> (B, K)

    def fit_standardisation(self, feats: Tensor) -> None:
        self.mu.copy_(feats.mean(0))
        self.sd.copy_(feats.std(0).clamp_min(1e-6))

    def head(self, feats: Tensor) -> Tensor:
        return self.linear((feats - self.mu) / self.sd)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.moments(x))


class SmallCNN(nn.Module):
    """Three 3x3 conv layers (8, 16, 32 maps), max pooling, global average pooling, linear."""

    def __init__(self, n_classes: int, width: int = 8) -> None:
        super().__init__()
        w = width
        self.net = nn.Sequential(
            nn.Conv2d(1, w, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(w, 2 * w, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(2 * w, 4 * w, 3, padding=1), nn.ReLU(),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4 * w, n_classes),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x - 0.5)


def train(params, forward, x: Tensor, y: Tensor, steps: int, lr: float,
          weight_decay: float = 1e-4) -> None:
    """Full-batch Adam on the cross-entropy of ``forward(x)``, updating ``params``."""
    opt = torch.optim.Adam(list(params), lr=lr, weight_decay=weight_decay)
    loss_fn = nn.CrossEntropyLoss()
    for _ in range(steps):
        opt.zero_grad()
        loss = loss_fn(forward(x), y)
        loss.backward()
        opt.step()


def accuracy(logits: Tensor, y: Tensor) -> float:
    return float((logits.argmax(1) == y).double().mean())


@dataclass
class Result:
    method: str
    n_train: int
    seed: int
    accuracy: float
    train_s: float


def run_scattering(model: ScatteringLinear, x: Tensor, y: Tensor, test_feats: Tensor,
                   yt: Tensor, steps: int) -> tuple[float, float]:
    """Train the linear head on the moments of ``x``; the train time includes computing
    those moments. ``test_feats``: the moments of the test patches (computed once)."""
    torch.manual_seed(0)
    model.linear.reset_parameters()
    t0 = time.perf_counter()
    feats = model.moments(x)  # the fixed transform: computed once, not per step
    model.fit_standardisation(feats)
    train(model.linear.parameters(), model.head, feats, y, steps, lr=0.05,
          weight_decay=1e-2)
    train_s = time.perf_counter() - t0
    with torch.no_grad():
        acc = accuracy(model.head(test_feats), yt)
    return acc, train_s


def run_cnn(x, y, xt, yt, steps, n_classes) -> tuple[float, float]:
    torch.manual_seed(0)
    model = SmallCNN(n_classes)
    t0 = time.perf_counter()
    train(model.parameters(), model, x, y, steps, lr=5e-3)
    train_s = time.perf_counter() - t0
    with torch.no_grad():
        acc = accuracy(model(xt), yt)
    return acc, train_s


def run(n_train: list[int], n_test: int = 50, patch: int = 32, J: int = 3, L: int = 8,
        seeds: int = 1, steps_linear: int = 300, steps_cnn: int = 150,
        verbose: bool = True) -> list[Result]:
    """Accuracy and train time of both classifiers for each training size and seed."""
    regions = class_regions(patch)
    n_classes = len(regions)
    results: list[Result] = []
    scat = ScatteringLinear(n_classes, J, L)
    scat_name = f"scattering J={J} L={L} + linear"
    if verbose:
        print(f"{n_classes} classes ({', '.join(regions)}), {patch}x{patch} grey patches, "
              f"{n_test} test patches per class from disjoint bands, chance "
              f"{1 / n_classes:.2f}")
        print(f"{'train/class':>11}  {'seed':>4}  {'method':<32} {'test acc':>8}  "
              f"{'train time':>10}")
    n_pool = max(n_train)
    for seed in range(seeds):
        x_pool, y_pool, xt, yt = make_split(regions, n_pool, n_test, patch, seed)
        test_feats = scat.moments(xt)
        for n in sorted(n_train):
            x, y = subset(x_pool, y_pool, n_pool, n)
            runs = [(scat_name, run_scattering(scat, x, y, test_feats, yt, steps_linear)),
                    ("small CNN", run_cnn(x, y, xt, yt, steps_cnn, n_classes))]
            for method, (acc, t) in runs:
                results.append(Result(method, n, seed, acc, t))
                if verbose:
                    print(f"{n:>11}  {seed:>4}  {method:<32} {acc:>8.3f}  {t:>9.2f}s",
                          flush=True)
    return results


def plot(results: list[Result], output: Path, patch: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    regions = class_regions(patch)
    fig = plt.figure(figsize=(10, 4.2))
    ax = fig.add_axes((0.07, 0.13, 0.45, 0.78))
    for method in dict.fromkeys(r.method for r in results):
        ns = sorted({r.n_train for r in results if r.method == method})
        mean = [np.mean([r.accuracy for r in results if r.method == method and r.n_train == n])
                for n in ns]
        ax.plot(ns, mean, "o-", label=method)
    ax.axhline(1 / len(regions), color="grey", ls=":", label="chance")
    ax.set_xscale("log")
    all_ns = sorted({r.n_train for r in results})
    ax.set_xticks(all_ns, [str(n) for n in all_ns])
    ax.minorticks_off()
    ax.set_xlabel("training patches per class")
    ax.set_ylabel("test accuracy (disjoint regions)")
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    ax.set_title("Texture classification from few samples")
    rng = np.random.default_rng(0)
    for i, (cls, (a, _)) in enumerate(regions.items()):
        sub = fig.add_axes((0.58 + 0.14 * (i % 3), 0.52 - 0.4 * (i // 3), 0.12, 0.34))
        sub.imshow(sample_patches(a, 1, patch, rng)[0, 0].numpy(), cmap="gray", vmin=0,
                   vmax=1)
        sub.set_title(cls, fontsize=9)
        sub.axis("off")
    output.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=".png", dir=output.parent)
    os.close(fd)
    try:
        fig.savefig(tmp, dpi=110)
        os.replace(tmp, output)  # atomic
    finally:
        plt.close(fig)
        if os.path.exists(tmp):
            os.unlink(tmp)


def _int_list(text: str) -> list[int]:
    try:
        vals = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of "
                                         "integers") from None
    if not vals or min(vals) < 1:
        raise argparse.ArgumentTypeError("training sizes must be >= 1")
    return vals


def main(argv: list[str] | None = None) -> list[Result]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n-train", type=_int_list, default=[5, 20, 80],
                   help="training patches per class, comma-separated (default 5,20,80)")
    p.add_argument("--n-test", type=int, default=50, help="test patches per class")
    p.add_argument("--patch", type=int, default=32, help="patch size (pixels)")
    p.add_argument("-J", type=int, default=3, help="scattering scales")
    p.add_argument("-L", type=int, default=8, help="scattering orientations")
    p.add_argument("--seeds", type=int, default=1, help="repetitions with other samples")
    p.add_argument("--steps-linear", type=int, default=300,
                   help="Adam steps for the linear head on scattering moments")
    p.add_argument("--steps-cnn", type=int, default=150, help="Adam steps for the CNN")
    p.add_argument("--output", type=Path, default=DEFAULT_FIGURE, help="figure path")
    p.add_argument("--no-plot", action="store_true", help="do not save a figure")
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads (default 1: the models are tiny, and extra threads "
                        "only add overhead, badly so on a busy machine)")
    args = p.parse_args(argv)
    torch.set_num_threads(max(1, args.threads))
    if args.patch < 2 ** (args.J + 1):
        p.error(f"--patch {args.patch} is too small for J={args.J}; use >= {2 ** (args.J + 1)}")
    t0 = time.perf_counter()
    results = run(args.n_train, args.n_test, args.patch, args.J, args.L, args.seeds,
                  args.steps_linear, args.steps_cnn)
    print(f"total {time.perf_counter() - t0:.1f} s")
    if not args.no_plot:
        try:
            plot(results, args.output, args.patch)
            print(f"figure: {args.output}")
        except ImportError:
            print("matplotlib is not installed (pip install 'difftransforms[examples]'); "
                  "no figure", file=sys.stderr)
    return results


if __name__ == "__main__":
    main()
