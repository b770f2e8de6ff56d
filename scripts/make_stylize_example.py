"""Render the README's style-transfer figure: content | style | result, one row per pair.

    python scripts/make_stylize_example.py [--size 256] [--steps 6] [--threads 1]
                                           [--output assets/figures/stylize.png] [--force]

Uses the bundled photos (assets/, see assets/LICENSE.md): the content images give the
structure, crops of the colour photos (the wooden table of ``coffee.png``, the fur of
``chelsea.png``) the texture and colours. Random multiscale CNN (no weights), same seed,
same image. A few minutes on one CPU thread at the default size (6.5 min for the two
rows on a busy 2-core machine: about 190 s per pair).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

ROOT = Path(__file__).resolve().parents[1]
ASSETS = ROOT / "assets"
sys.path.insert(0, str(ROOT))

#: name -> (file, crop (top, left, height, width) or None, colour)
IMAGES: dict[str, tuple[str, tuple[int, int, int, int] | None, bool]] = {
    "astronaut": ("astronaut.png", None, True),
    "camera": ("camera.png", None, False),
    "chelsea": ("chelsea.png", None, True),
    "wood": ("coffee.png", (96, 488, 256, 112), True),
    "fur": ("chelsea.png", (0, 96, 96, 256), True),
    "brick": ("brick.png", None, False),
    "grass": ("grass.png", None, False),
}

#: (content, style) rows of the figure.
PAIRS = (("astronaut", "fur"), ("camera", "wood"))


def load(name: str) -> torch.Tensor:
    """A bundled image ``(1, C, H, W)`` float32 in [0, 1]."""
    file, crop, colour = IMAGES[name]
    with Image.open(ASSETS / file) as img:
        a = np.asarray(img.convert("RGB" if colour else "L"), dtype=np.float32) / 255.0
    t = torch.from_numpy(a)
    t = t.permute(2, 0, 1)[None] if t.dim() == 3 else t[None, None]
    if crop is not None:
        y, x, h, w = crop
        t = t[..., y : y + h, x : x + w]
    return t.contiguous()


def _fit(x: torch.Tensor, side: int) -> torch.Tensor:
    """Resize so that the larger side is ``side`` (anti-aliased)."""
    h, w = x.shape[-2:]
    s = side / max(h, w)
    size = (max(16, round(h * s)), max(16, round(w * s)))
    return torch.nn.functional.interpolate(x, size=size, mode="bilinear", antialias=True,
                                           align_corners=False).clamp(0, 1)


def _tile(x: torch.Tensor, side: int) -> Image.Image:
    a = (x[0].clamp(0, 1).permute(1, 2, 0).cpu().numpy() * 255).round().astype(np.uint8)
    if a.shape[2] == 1:
        a = np.repeat(a, 3, axis=2)
    im = Image.fromarray(a)
    s = min(side / im.width, side / im.height)
    if abs(s - 1) > 1e-6:
        im = im.resize((max(1, round(im.width * s)), max(1, round(im.height * s))),
                       Image.LANCZOS)
    return im


def sheet(rows: list[list[tuple[str, torch.Tensor]]], side: int) -> Image.Image:
    """Rows of labelled ``side x side`` tiles on a white background."""
    pad, label = 6, 16
    ncol = max(len(r) for r in rows)
    out = Image.new("RGB", (ncol * (side + pad) + pad, len(rows) * (side + label + pad) + pad),
                    "white")
    draw = ImageDraw.Draw(out)
    for i, row in enumerate(rows):
        top = pad + i * (side + label + pad)
        for j, (text, x) in enumerate(row):
            left = pad + j * (side + pad)
            im = _tile(x, side)
            out.paste(im, (left + (side - im.width) // 2, top + label + (side - im.height) // 2))
            draw.text((left, top + 2), text, fill="black")
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", type=int, default=256, help="output side (default 256)")
    p.add_argument("--steps", type=int, default=6, help="outer steps at the finest scale "
                   "(default 6)")
    p.add_argument("--channels", type=int, default=16,
                   help="random-CNN maps per filter size (default 16: half the engine's "
                        "default, twice as fast, hardly different here)")
    p.add_argument("--content-weight", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    p.add_argument("--pairs", default=",".join(f"{c}:{s}" for c, s in PAIRS),
                   help="content:style pairs, comma separated (names: "
                        f"{', '.join(IMAGES)})")
    p.add_argument("--output", type=Path, default=ASSETS / "figures" / "stylize.png")
    p.add_argument("--force", action="store_true", help="overwrite --output")
    args = p.parse_args(argv)
    if args.output.exists() and not args.force:
        p.error(f"{args.output} exists; pass --force to overwrite it")
    pairs = []
    for item in args.pairs.split(","):
        c, _, s = item.partition(":")
        if c not in IMAGES or s not in IMAGES:
            p.error(f"unknown image in {item!r}; choose from {', '.join(IMAGES)}")
        pairs.append((c, s))
    torch.set_num_threads(args.threads)
    from difftransforms.synthesis import stylize

    rows = []
    for c_name, s_name in pairs:
        content = _fit(load(c_name), args.size)
        style = load(s_name)
        t0 = time.perf_counter()
        out = stylize(content, style, "cnn", content_weight=args.content_weight,
                      steps=args.steps, seed=args.seed,
                      model_options={"channels_per_size": args.channels})
        dt = time.perf_counter() - t0
        print(f"{c_name} x {s_name}: {tuple(out.shape)} in {dt:.1f} s", flush=True)
        rows.append([(f"content: {c_name}", content), (f"style: {s_name}", style),
                     (f"stylize (content weight {args.content_weight:g})", out)])
    img = sheet(rows, args.size)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".stylize.", suffix=".png", dir=args.output.parent)
    os.close(fd)
    try:
        img.save(tmp, format="PNG", optimize=True)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600 files
        os.replace(tmp, args.output)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    print(f"wrote {args.output} ({img.width}x{img.height})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
