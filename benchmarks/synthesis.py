"""Texture synthesis: time and quality per bundled example and model, plus a contact sheet.

    python -m benchmarks.synthesis [--quick] [--no-write] [--device cpu] [--plenoptic]

For each example texture (greyscale brick and grass; colour wood and fur crops) and each
model, runs the engine with the command line's defaults at a 256x256 output (on a CPU the
time budget of the bare ``difftransforms synthesize``: 60 s grey, 120 s colour; run it with
``--threads 1`` on a shared machine and note the load), and records the
wall time, the time per step and per loss evaluation, and the quality metrics of
:func:`difftransforms.metrics.texture_report` against the example (each metric is marked
``ok`` when it is within the range of a second crop of the example itself). The peer,
plenoptic's Portilla-Simoncelli metamer, is run behind ``--plenoptic`` (minutes per image,
on ``--plenoptic-examples``, default brick) and gets its own sheet, example | ours | PS
(``--peer-sheet``, default ``assets/gallery/vs_plenoptic.png``).

The images go into a side-by-side sheet (``--sheet``, default
``assets/gallery/benchmark_sheet.png``; not written with ``--no-write`` unless asked);
``--save-dir DIR`` also keeps each image, from which ``scripts/make_gallery.py --from DIR``
builds the README gallery without synthesising again.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from benchmarks._harness import BENCHMARKS_MD, ROOT, machine_description, setup_threads

ASSETS = ROOT / "assets"

#: name -> (file, crop (top, left, height, width) or None, colour)
EXAMPLES: dict[str, tuple[str, tuple[int, int, int, int] | None, bool]] = {
    "brick": ("brick.png", None, False),
    "grass": ("grass.png", None, False),
    "wood": ("coffee.png", (96, 488, 256, 112), True),
    "fur": ("chelsea.png", (0, 96, 80, 256), True),
}

MODELS = ("cnn", "scattering", "covariance", "spectra")
NON_SECOND_ORDER = ("histogram_gap", "wavelet_gap", "cnn_gap")


def load_example(name: str) -> torch.Tensor:
    """A bundled example texture ``(1, C, H, W)`` float32 in [0, 1]."""
    file, crop, colour = EXAMPLES[name]
    img = Image.open(ASSETS / file).convert("RGB" if colour else "L")
    a = torch.from_numpy(np.asarray(img, dtype=np.float32) / 255.0)
    t = a.permute(2, 0, 1)[None] if a.dim() == 3 else a[None, None]
    if crop is not None:
        y, x, h, w = crop
        t = t[..., y : y + h, x : x + w]
    return t.contiguous()


def to_uint8(x: torch.Tensor) -> np.ndarray:
    a = (x[0].detach().clamp(0, 1).permute(1, 2, 0).cpu().numpy() * 255).round()
    a = a.astype(np.uint8)
    return np.repeat(a, 3, axis=2) if a.shape[2] == 1 else a


def example_tile(y: torch.Tensor, size: tuple[int, int]) -> tuple[str, np.ndarray]:
    """The example's sheet tile: its central crop of the output ``size`` at native scale (a
    downscaled whole example would make its texture look finer than the synthesis)."""
    H, W = y.shape[-2:]
    h, w = min(H, size[0]), min(W, size[1])
    top, left = (H - h) // 2, (W - w) // 2
    label = "example" if (h, w) == (H, W) else f"example ({h}x{w} crop of {H}x{W})"
    return label, to_uint8(y[..., top:top + h, left:left + w])


def contact_sheet(rows: list[tuple[str, list[tuple[str, np.ndarray]]]], path: Path,
                  tile: int = 256) -> None:
    """Rows of labelled tiles (each image fitted in ``tile x tile``) written as one PNG."""
    from PIL import ImageDraw

    def fit(arr: np.ndarray) -> Image.Image:
        im = Image.fromarray(arr)
        scale = min(tile / im.width, tile / im.height, 1.0)
        if scale < 1.0:
            im = im.resize((max(1, round(im.width * scale)), max(1, round(im.height * scale))),
                           Image.LANCZOS)
        return im

    fitted = [[(label, fit(arr)) for label, arr in tiles] for _, tiles in rows]
    heights = [max(im.height for _, im in r) for r in fitted]
    widths = [max(im.width for _, im in r) for r in fitted]
    ncol = max(len(r) for r in fitted)
    pad, head = 6, 16
    col_w = max(max(widths), 150)
    sheet = Image.new("RGB", (ncol * (col_w + pad) + pad, sum(h + head + pad for h in heights)
                              + pad), "white")
    draw = ImageDraw.Draw(sheet)
    y0 = pad
    for (row_name, _), tiles, h in zip(rows, fitted, heights, strict=True):
        for c, (label, im) in enumerate(tiles):
            x0 = pad + c * (col_w + pad)
            sheet.paste(im, (x0, y0 + head))
            draw.text((x0 + 1, y0 + 2), f"{row_name}: {label}" if c == 0 else label,
                      fill=(0, 0, 0))
        y0 += h + head + pad
    path.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(path, optimize=True)


def run_one(y: torch.Tensor, model: str, size: tuple[int, int], device: str,
            budget: float | None, steps: int | None, seed: int = 0) -> tuple[torch.Tensor, Any]:
    from difftransforms.synthesis import Synthesizer
    from difftransforms.synthesis.engine import DEFAULT_STEPS

    if steps is None:
        steps = DEFAULT_STEPS[model]
    s = Synthesizer(y, model, size, steps=steps, time_budget=budget, seed=seed, device=device)
    t0 = time.perf_counter()
    x = s.run()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    s.wall = time.perf_counter() - t0  # type: ignore[attr-defined]
    return x.cpu(), s


def plenoptic_ps(y: torch.Tensor, size: tuple[int, int], iters: int,
                 seed: int = 0) -> torch.Tensor:
    """plenoptic's Portilla-Simoncelli metamer of ``y`` (its documented recipe: the PS loss
    factory, Adam with amsgrad, lr 0.02); colour examples channel by channel.

    PS needs a size divisible by ``2^(n_scales+1)``; the example is cropped to the output
    size (PS synthesises at the example's size).
    """
    import plenoptic as po

    torch.manual_seed(seed)
    outs = []
    for c in range(y.shape[1]):
        img = y[:, c : c + 1].double()
        h = min(img.shape[-2], size[0]) // 32 * 32
        w = min(img.shape[-1], size[1]) // 32 * 32
        img = img[..., :h, :w].contiguous()
        model = po.models.PortillaSimoncelli(img.shape[-2:])
        loss = po.loss.portilla_simoncelli_loss_factory(model, img)
        met = po.Metamer(img, model, loss_function=loss)
        met.setup(initial_image=torch.rand_like(img) * 0.2 + img.mean(),
                  optimizer_kwargs={"lr": 0.02, "amsgrad": True})
        met.synthesize(max_iter=iters, store_progress=False)
        outs.append(met.metamer.detach().clamp(0, 1).float())
    return torch.cat(outs, dim=1)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--device", default="cpu")
    p.add_argument("--quick", action="store_true",
                   help="128x128 outputs, 2 examples, cnn and covariance only")
    p.add_argument("--no-write", action="store_true", help="do not append to BENCHMARKS.md")
    p.add_argument("--models", default=",".join(MODELS))
    p.add_argument("--examples", default=",".join(EXAMPLES))
    p.add_argument("--steps", type=int, default=None,
                   help="outer steps (default: the model's); the time budget still applies")
    p.add_argument("--time", type=float, default=None,
                   help="budget per image in seconds (default on CPU: 60 grey, 120 colour; "
                        "none on GPU)")
    p.add_argument("--plenoptic", action="store_true",
                   help="also run plenoptic's Portilla-Simoncelli metamer (slow)")
    p.add_argument("--plenoptic-iters", type=int, default=800)
    p.add_argument("--plenoptic-examples", default="brick",
                   help="examples the (slow) plenoptic peer runs on (default: brick)")
    p.add_argument("--save-dir", type=Path, default=None,
                   help="also save every image as <dir>/<example>_<model>.png "
                        "(scripts/make_gallery.py --from <dir> builds the gallery from them)")
    p.add_argument("--peer-sheet", type=Path, default=None,
                   help="example | ours | plenoptic PS sheet (default "
                        "assets/gallery/vs_plenoptic.png with --plenoptic, unless --no-write)")
    p.add_argument("--sheet", type=Path, default=None,
                   help="contact sheet PNG (default assets/gallery/benchmark_sheet.png, "
                        "skipped with --no-write)")
    args = p.parse_args()
    setup_threads(args.threads)
    from difftransforms.metrics import copy_fraction, texture_baselines, texture_report

    examples = args.examples.split(",")
    models = args.models.split(",")
    side = 256
    if args.quick:
        examples, side = examples[:2], 128
        models = [m for m in models if m in ("cnn", "covariance")]
    cpu = args.device == "cpu"
    lines = []
    rows: list[tuple[str, list[tuple[str, np.ndarray]]]] = []
    peers: dict[str, dict[str, tuple[float, np.ndarray]]] = {}
    metric_names = ["spectrum_gap", *NON_SECOND_ORDER, "copy_fraction"]
    head = ["example", "model", "size", "time", "steps", "s/step", "s/eval",
            *metric_names, "verdict"]
    lines.append("| " + " | ".join(head) + " |")
    lines.append("|" + "---|" * len(head))
    for name in examples:
        y = load_example(name)
        # the target: 256x256 output whatever the example's shape (the command line
        # with --size 256x256)
        size = (side, side)
        budget = args.time
        if budget is None and cpu:
            budget = 60.0 if y.shape[1] == 1 else 120.0
        base = texture_baselines(y, metrics=metric_names)
        tiles = [example_tile(y, size)]
        todo: list[tuple[str, Any]] = [(m, None) for m in models]
        if args.plenoptic and name in args.plenoptic_examples.split(","):
            todo.append(("plenoptic-PS", "peer"))
        for model, peer in todo:
            t0 = time.perf_counter()
            if peer:
                x = plenoptic_ps(y, size, args.plenoptic_iters)
                wall, nsteps, nevals = time.perf_counter() - t0, args.plenoptic_iters, None
            else:
                x, s = run_one(y, model, size, args.device, budget, args.steps)
                wall, nsteps, nevals = s.wall, s.global_step(), s.evaluations
            rep = texture_report(y, x, baselines=base, metrics=metric_names)
            ok = [rep[m]["verdict"].startswith("within") for m in NON_SECOND_ORDER]
            copied = rep["copy_fraction"]["value"]
            verdict = ("ok" if all(ok) else
                       f"{sum(ok)}/{len(ok)} within") + (", COPY" if copied >= 0.05 else "")
            cells = [name, model, f"{x.shape[-2]}x{x.shape[-1]}x{x.shape[1]}", f"{wall:.1f} s",
                     str(nsteps), f"{wall / max(nsteps, 1):.2f}",
                     f"{wall / nevals:.3f}" if nevals else "n/a"]
            for m in metric_names:
                v = rep[m]["value"]
                if m == "copy_fraction":
                    # the copied-region share, and in brackets the share of patches that match
                    # alone (regular structure such as straight mortar lines does)
                    raw = copy_fraction(y, x, coherent=False)
                    cells.append(f"{v:.3g} (patches {raw:.3g})")
                    continue
                mark = " ✓" if rep[m]["verdict"].startswith("within") else " ✗"
                cells.append(f"{v:.3g}{mark}")
            cells.append(verdict)
            line = "| " + " | ".join(cells) + " |"
            print(line, flush=True)
            lines.append(line)
            tiles.append((f"{model} {wall:.0f}s", to_uint8(x)))
            if args.save_dir is not None:
                args.save_dir.mkdir(parents=True, exist_ok=True)
                Image.fromarray(to_uint8(x)).save(args.save_dir / f"{name}_{model}.png")
            if peer or model == "spectra":
                peers.setdefault(name, {})[model] = (wall, to_uint8(x))
        rows.append((name, tiles))
    crops = {m: [f"{v:.3g}" for v in base[m]["second_crop"]] for m in metric_names}
    md = "\n".join([
        "### Texture synthesis (256x256 output, command-line defaults)" if not args.quick
        else "### Texture synthesis (quick: 128x128)",
        "",
        f"{time.strftime('%Y-%m-%d')} · {machine_description()} · device {args.device}; "
        "✓ = within the range of a second crop of the example (what a perfect new sample "
        "scores), ✗ = outside; verdict over the non-second-order metrics (histogram, wavelet, "
        "CNN); COPY = 5% or more of the 16x16 patches in regions copied verbatim (in "
        "brackets: the share of patches that match alone, regular structure included)",
        "",
        *lines,
        "",
        f"- second-crop values of the last example ({examples[-1]}): {crops}",
    ]) + "\n"
    print()
    print(md)
    sheet = args.sheet
    if sheet is None and not args.no_write:
        sheet = ROOT / "assets" / "gallery" / "benchmark_sheet.png"
    if sheet is not None:
        contact_sheet(rows, sheet)
        print(f"sheet: {sheet}")
    peer_sheet = args.peer_sheet
    if peer_sheet is None and args.plenoptic and not args.no_write:
        peer_sheet = ROOT / "assets" / "gallery" / "vs_plenoptic.png"
    prow = [(n, d) for n, d in peers.items() if "plenoptic-PS" in d and "spectra" in d]
    if peer_sheet is not None and prow:
        contact_sheet([(n, [example_tile(load_example(n), (side, side)),
                            (f"ours: scattering spectra, {d['spectra'][0]:.0f} s",
                             d["spectra"][1]),
                            (f"plenoptic Portilla-Simoncelli, {d['plenoptic-PS'][0]:.0f} s",
                             d["plenoptic-PS"][1])]) for n, d in prow], peer_sheet)
        print(f"peer sheet: {peer_sheet}")
    if not args.no_write:
        new = not BENCHMARKS_MD.exists()
        with open(BENCHMARKS_MD, "a") as f:
            if new:
                f.write("# Benchmarks\n\nTables appended by `python -m benchmarks.<name>`.\n\n")
            f.write(md + "\n")


if __name__ == "__main__":
    main()
