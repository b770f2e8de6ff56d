"""Render the README gallery: example -> synthesised texture, for each model.

    python scripts/make_gallery.py [--device cuda] [--out assets/gallery] [--steps N]
    python scripts/make_gallery.py --from DIR   # the images saved by
                                                # python -m benchmarks.synthesis --save-dir DIR

Writes one PNG sheet per example (``assets/gallery/<example>.png``: the example, then one
synthesis per model, 256x256 output) and ``tiling.png`` (a scattering-spectra synthesis
tiled 2x2, to show that the output is periodic). Same seed, same images (with ``--steps``;
a ``--time`` budget stops after a machine-dependent number of steps).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.synthesis import (  # noqa: E402
    EXAMPLES,
    contact_sheet,
    example_tile,
    load_example,
    to_uint8,
)

MODELS = ("cnn", "scattering", "covariance", "spectra")
LABEL = {
    "cnn": "random CNN + sliced W.",
    "scattering": "scattering moments",
    "covariance": "wavelet covariance",
    "spectra": "scattering spectra",
    "vgg19": "VGG19 + sliced W.",
}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--out", type=Path, default=ROOT / "assets" / "gallery")
    p.add_argument("--examples", default=",".join(EXAMPLES))
    p.add_argument("--models", default=",".join(MODELS))
    p.add_argument("--steps", type=int, default=None, help="outer steps (default: model's)")
    p.add_argument("--size", type=int, default=256, help="output side (default 256)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--time", type=float, default=None,
                   help="time budget per image in seconds (default: none, the model's steps)")
    p.add_argument("--from", dest="source", type=Path, default=None,
                   help="build the sheets from <dir>/<example>_<model>.png (written by "
                        "benchmarks.synthesis --save-dir) instead of synthesising")
    args = p.parse_args()
    from difftransforms.synthesis import synthesize

    args.out.mkdir(parents=True, exist_ok=True)
    first = None
    for name in args.examples.split(","):
        y = load_example(name)
        size = (args.size, args.size)
        tiles = [example_tile(y, size)]
        for model in args.models.split(","):
            t0 = time.perf_counter()
            if args.source is not None:
                f = args.source / f"{name}_{model}.png"
                if not f.exists():
                    raise SystemExit(f"{f} is missing: run python -m benchmarks.synthesis "
                                     f"--save-dir {args.source} first")
                a = np.asarray(Image.open(f).convert("RGB" if y.shape[1] == 3 else "L"))
                a = torch.from_numpy(a.astype(np.float32) / 255)
                x = a.permute(2, 0, 1)[None] if a.dim() == 3 else a[None, None]
            else:
                x = synthesize(y, model, size=size, steps=args.steps, time_budget=args.time,
                               seed=args.seed, device=args.device).cpu()
            dt = time.perf_counter() - t0
            print(f"{name:8s} {model:11s} {tuple(x.shape)} {dt:.1f} s", flush=True)
            tiles.append((LABEL.get(model, model), to_uint8(x)))
            if first is None and model == "spectra":  # the default model
                first = (name, x)
        contact_sheet([(name, tiles)], args.out / f"{name}.png")
    if first is not None:
        name, x = first
        tiled = x.repeat(1, 1, 2, 2)
        contact_sheet([(name, [("2x2 tiling of one synthesis (seamless)", to_uint8(tiled))])],
                      args.out / "tiling.png", tile=512)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
