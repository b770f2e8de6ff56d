"""Image I/O: round trips against Pillow's decoding (outside reference), bad input, atomicity."""

from __future__ import annotations

import os
import re
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageOps

from difftransforms.io import (
    check_output_path,
    format_supports_alpha,
    image_bit_depth,
    load_image,
    load_image_with_alpha,
    save_image,
    supports_16bit,
)

RNG = np.random.default_rng(0)
H, W = 24, 32


def _u8(*shape: int) -> np.ndarray:
    return RNG.integers(0, 256, size=shape, dtype=np.uint8)


def _u16(*shape: int) -> np.ndarray:
    return RNG.integers(0, 65536, size=shape, dtype=np.uint16)


def _png(w: int, h: int, bitdepth: int, ctype: int, raw: bytes) -> bytes:
    """A hand-built PNG (to make files Pillow cannot write: zero size, 16-bit colour)."""

    def chunk(t: bytes, d: bytes) -> bytes:
        crc = zlib.crc32(t + d) & 0xFFFFFFFF
        return struct.pack(">I", len(d)) + t + d + struct.pack(">I", crc)

    ihdr = struct.pack(">IIBBBBB", w, h, bitdepth, ctype, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(raw))
        + chunk(b"IEND", b"")
    )


def _ref(path: Path, convert: str | None = None) -> np.ndarray:
    """Pillow's decoding of the file as float64 (H, W, C) in [0, 1]."""
    img = Image.open(path)
    if convert is not None:
        img = img.convert(convert)
    a = np.asarray(img)
    scale = 65535.0 if a.dtype in (np.uint16, np.int32) or img.mode.startswith("I") else 255.0
    if img.mode == "F":
        scale = 1.0
    if img.mode == "1":
        a, scale = a.astype(np.float64), 1.0
    a = a.astype(np.float64) / scale
    return a[:, :, None] if a.ndim == 2 else a


def _ours(x: torch.Tensor) -> np.ndarray:
    assert x.dim() == 4 and x.shape[0] == 1
    return x[0].permute(1, 2, 0).double().cpu().numpy()


# --------------------------------------------------------------------------------------
# Round trips: write with Pillow, read with ours, compare with Pillow's array
# --------------------------------------------------------------------------------------

# (name, Pillow image factory, extensions, Pillow mode to compare against, channels)
CASES = {
    "L": (lambda: Image.fromarray(_u8(H, W), "L"), ["png", "jpg", "tif", "bmp", "pgm"], None, 1),
    "RGB": (
        lambda: Image.fromarray(_u8(H, W, 3), "RGB"),
        ["png", "jpg", "tif", "bmp", "ppm"],
        None,
        3,
    ),
    "1": (lambda: Image.fromarray(_u8(H, W) > 127), ["png", "bmp", "tif"], "L", 1),
    "P": (
        lambda: Image.fromarray(_u8(H, W, 3), "RGB").quantize(16),
        ["png", "bmp", "gif", "tif"],
        "RGB",
        3,
    ),
    "CMYK": (lambda: Image.fromarray(_u8(H, W, 4), "CMYK"), ["jpg", "tif"], "RGB", 3),
    "I;16": (lambda: Image.fromarray(_u16(H, W)), ["png", "tif", "pgm"], None, 1),
    "F": (
        lambda: Image.fromarray(RNG.random((H, W)).astype(np.float32), "F"),
        ["tif"],
        None,
        1,
    ),
}


@pytest.mark.parametrize(
    "mode,ext",
    [(m, e) for m, (_, exts, _, _) in CASES.items() for e in exts],
    ids=lambda v: str(v),
)
def test_round_trip_modes_and_formats(tmp_path: Path, mode: str, ext: str) -> None:
    make, _, convert, channels = CASES[mode]
    path = tmp_path / f"img.{ext}"
    make().save(path)
    x = load_image(path)
    assert x.dtype == torch.float32 and tuple(x.shape) == (1, channels, H, W)
    ref = _ref(path, convert)
    np.testing.assert_allclose(_ours(x), ref, atol=1e-6, rtol=0)
    assert float(x.min()) >= 0.0 and float(x.max()) <= 1.0


def test_16bit_keeps_precision(tmp_path: Path) -> None:
    a = _u16(H, W)
    for ext in ("png", "tif", "pgm"):
        p = tmp_path / f"g16.{ext}"
        Image.fromarray(a).save(p)
        x = load_image(p, dtype=torch.float64)
        np.testing.assert_array_equal(np.rint(_ours(x)[:, :, 0] * 65535).astype(np.uint16), a)
        assert image_bit_depth(p) == 16
    assert image_bit_depth(tmp_path / "g16.png") == 16


def test_big_endian_16bit_tiff(tmp_path: Path) -> None:
    a = _u16(H, W)
    p = tmp_path / "be.tif"
    Image.frombytes("I;16B", (W, H), a.astype(">u2").tobytes()).save(p)
    assert Image.open(p).mode == "I;16B"
    np.testing.assert_allclose(_ours(load_image(p))[:, :, 0], a / 65535.0, atol=1e-6)


def test_32bit_int_image(tmp_path: Path) -> None:
    a = RNG.integers(0, 65536, size=(H, W)).astype(np.int32)
    p = tmp_path / "i32.tif"
    Image.fromarray(a, "I").save(p)
    np.testing.assert_allclose(_ours(load_image(p))[:, :, 0], a / 65535.0, atol=1e-6)
    Image.fromarray(a * 4 + 70000, "I").save(p)
    with pytest.raises(ValueError, match=r"i32\.tif.*32-bit integer"):
        load_image(p)


def test_float_image_clipped_with_warning(tmp_path: Path) -> None:
    p = tmp_path / "f.tif"
    Image.fromarray((RNG.random((H, W)) * 3 - 1).astype(np.float32), "F").save(p)
    with pytest.warns(UserWarning, match="clipped"):
        x = load_image(p)
    assert float(x.min()) == 0.0 and float(x.max()) == 1.0


def test_float_image_with_nan(tmp_path: Path) -> None:
    a = RNG.random((H, W)).astype(np.float32)
    a[3, 4] = np.nan
    p = tmp_path / "nan.tif"
    Image.fromarray(a, "F").save(p)
    with pytest.raises(ValueError, match=r"nan\.tif.*NaN"):
        load_image(p)


@pytest.mark.parametrize("ext", ["png", "tif"])
def test_la_rgba_alpha(tmp_path: Path, ext: str) -> None:
    for mode, c in (("LA", 1), ("RGBA", 3)):
        p = tmp_path / f"{mode}.{ext}"
        Image.fromarray(_u8(H, W, c + 1), mode).save(p)
        ref = _ref(p)
        with pytest.warns(UserWarning, match=rf"{mode}\.{ext}.*alpha.*alpha=True"):
            x = load_image(p)
        assert x.shape[1] == c
        np.testing.assert_allclose(_ours(x), ref[:, :, :c], atol=1e-6)
        xa = load_image(p, alpha=True)
        assert xa.shape[1] == c + 1
        np.testing.assert_allclose(_ours(xa), ref, atol=1e-6)
        img, alpha = load_image_with_alpha(p)
        np.testing.assert_allclose(_ours(alpha)[:, :, 0], ref[:, :, c], atol=1e-6)


def test_alpha_true_without_alpha_is_opaque(tmp_path: Path) -> None:
    p = tmp_path / "rgb.png"
    Image.fromarray(_u8(H, W, 3), "RGB").save(p)
    x = load_image(p, alpha=True)
    assert x.shape[1] == 4 and bool((x[:, 3] == 1).all())
    assert load_image_with_alpha(p)[1] is None


def test_palette_with_transparency(tmp_path: Path) -> None:
    img = Image.fromarray(_u8(H, W, 3), "RGB").quantize(8)
    idx = np.asarray(img)
    p = tmp_path / "pt.png"
    img.save(p, transparency=int(idx[0, 0]))
    ref = _ref(p, "RGBA")
    assert (ref[:, :, 3] == 0).any() and (ref[:, :, 3] == 1).any()
    with pytest.warns(UserWarning, match="alpha"):
        x = load_image(p)
    np.testing.assert_allclose(_ours(x), ref[:, :, :3], atol=1e-6)
    np.testing.assert_allclose(_ours(load_image(p, alpha=True)), ref, atol=1e-6)


def test_grey_palette_gives_one_channel(tmp_path: Path) -> None:
    grey = Image.fromarray(_u8(H, W), "L").convert("P")  # Pillow's grey palette
    p = tmp_path / "gp.png"
    grey.save(p)
    assert Image.open(p).mode == "P"
    x = load_image(p)
    assert x.shape[1] == 1
    np.testing.assert_allclose(_ours(x), _ref(p, "L"), atol=1e-6)


def test_grey_with_transparent_colour_key(tmp_path: Path) -> None:
    a = _u8(H, W)
    p = tmp_path / "gk.png"
    Image.fromarray(a, "L").save(p, transparency=int(a[0, 0]))
    img, alpha = load_image_with_alpha(p)
    assert img.shape[1] == 1 and alpha is not None
    np.testing.assert_array_equal(_ours(alpha)[:, :, 0], (a != a[0, 0]).astype(float))


def test_mode_conversion(tmp_path: Path) -> None:
    rgb = _u8(H, W, 3)
    p = tmp_path / "rgb.png"
    Image.fromarray(rgb, "RGB").save(p)
    y = _ours(load_image(p, "L", dtype=torch.float64))[:, :, 0]
    luma = (rgb.astype(np.float64) @ [0.299, 0.587, 0.114]) / 255
    np.testing.assert_allclose(y, luma, atol=1e-6)
    # Pillow's integer conversion agrees up to its rounding
    np.testing.assert_allclose(y, _ref(p, "L")[:, :, 0], atol=1 / 255 + 1e-9)
    g = tmp_path / "g.png"
    Image.fromarray(rgb[:, :, 0], "L").save(g)
    x3 = load_image(g, "RGB")
    assert x3.shape[1] == 3
    np.testing.assert_array_equal(_ours(x3), np.repeat(_ref(g), 3, axis=2).astype(np.float32))
    assert load_image(p, "RGB").shape[1] == 3 and load_image(g, "L").shape[1] == 1
    with pytest.raises(ValueError, match="mode must be"):
        load_image(p, "CMYK")


def test_16bit_colour_png_warns(tmp_path: Path) -> None:
    a = _u16(4, 5, 3).astype(">u2")
    raw = b"".join(b"\x00" + a[i].tobytes() for i in range(4))
    p = tmp_path / "rgb16.png"
    p.write_bytes(_png(5, 4, 16, 2, raw))
    with pytest.warns(UserWarning, match="8-bit precision"):
        x = load_image(p)
    np.testing.assert_allclose(_ours(x) * 255, (a >> 8).astype(float), atol=1e-4)


def test_exif_orientation_applied(tmp_path: Path) -> None:
    img = Image.fromarray(_u8(H, W, 3), "RGB")
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise when displayed
    p = tmp_path / "rot.jpg"
    img.save(p, exif=exif)
    x = load_image(p)
    assert tuple(x.shape[-2:]) == (W, H)
    ref = np.asarray(ImageOps.exif_transpose(Image.open(p))) / 255.0
    np.testing.assert_allclose(_ours(x), ref, atol=1e-6)


def test_multiframe_reads_first_frame(tmp_path: Path) -> None:
    p = tmp_path / "mf.tif"
    Image.new("L", (W, H), 10).save(p, save_all=True, append_images=[Image.new("L", (W, H), 200)])
    with pytest.warns(UserWarning, match="2 frames"):
        x = load_image(p)
    assert torch.allclose(x, torch.full_like(x, 10 / 255))


def test_device_and_dtype(tmp_path: Path, device: str, dtype: torch.dtype) -> None:
    p = tmp_path / "a.png"
    Image.fromarray(_u8(H, W, 3), "RGB").save(p)
    x = load_image(p, device=device, dtype=dtype)
    assert x.device.type == device and x.dtype == dtype
    np.testing.assert_allclose(_ours(x), _ref(p), atol=1e-6)
    with pytest.raises(TypeError, match="floating-point"):
        load_image(p, dtype=torch.uint8)


# --------------------------------------------------------------------------------------
# Bad input: each gets a message naming the file and the problem
# --------------------------------------------------------------------------------------


def _good_png(tmp_path: Path) -> bytes:
    p = tmp_path / "_good.png"
    Image.fromarray(_u8(64, 64, 3), "RGB").save(p)
    data = p.read_bytes()
    p.unlink()
    return data


def _bad_files(tmp_path: Path) -> dict[str, tuple[Path, type[Exception], str]]:
    cases: dict[str, tuple[Path, type[Exception], str]] = {}
    cases["missing"] = (tmp_path / "missing.png", FileNotFoundError, "no such file")
    cases["missing_dir"] = (tmp_path / "nodir" / "x.png", FileNotFoundError, "does not exist")
    d = tmp_path / "folder.png"
    d.mkdir()
    cases["directory"] = (d, ValueError, "is a directory")
    e = tmp_path / "empty.png"
    e.write_bytes(b"")
    cases["empty"] = (e, ValueError, "empty file")
    t = tmp_path / "text.png"
    t.write_text("hello, I am not a picture\n")
    cases["not_image"] = (t, ValueError, "not an image")
    good = _good_png(tmp_path)
    tr = tmp_path / "trunc.png"
    tr.write_bytes(good[: len(good) // 2])
    cases["truncated_png"] = (tr, ValueError, "truncated")
    j = tmp_path / "_j.jpg"
    Image.fromarray(_u8(64, 64, 3), "RGB").save(j)
    tj = tmp_path / "trunc.jpg"
    tj.write_bytes(j.read_bytes()[:300])
    cases["truncated_jpeg"] = (tj, ValueError, "truncated")
    z = tmp_path / "zero.png"
    z.write_bytes(_png(0, 5, 8, 0, b""))
    cases["zero_png"] = (z, ValueError, "zero-sized")
    zp = tmp_path / "zero.pgm"
    zp.write_bytes(b"P5\n0 0\n255\n")
    cases["zero_pgm"] = (zp, ValueError, "zero-sized")
    lab = tmp_path / "lab.tif"
    Image.new("LAB", (8, 8)).save(lab)
    cases["unsupported_mode"] = (lab, ValueError, "unsupported image mode 'LAB'")
    return cases


BAD = [
    "missing",
    "missing_dir",
    "directory",
    "empty",
    "not_image",
    "truncated_png",
    "truncated_jpeg",
    "zero_png",
    "zero_pgm",
    "unsupported_mode",
]


@pytest.mark.parametrize("case", BAD)
def test_bad_input_messages(tmp_path: Path, case: str) -> None:
    path, exc, text = _bad_files(tmp_path)[case]
    with pytest.raises(exc, match=re.escape(text)) as info:
        load_image(path)
    msg = str(info.value)
    assert path.name in msg  # the message names the file
    assert "\n" not in msg and "Traceback" not in msg
    assert info.value.__suppress_context__ or info.value.__cause__ is None


# --------------------------------------------------------------------------------------
# Saving
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "c,layout", [(1, "HW")] + [(c, lay) for c in (1, 2, 3, 4) for lay in ("CHW", "BCHW")]
)
def test_save_shapes_png(tmp_path: Path, c: int, layout: str) -> None:
    x = torch.rand(1, c, H, W, dtype=torch.float64)
    arg = {"HW": x[0, 0], "CHW": x[0], "BCHW": x}[layout]
    p = tmp_path / "o.png"
    save_image(arg, p)
    img = Image.open(p)
    assert img.mode == {1: "L", 2: "LA", 3: "RGB", 4: "RGBA"}[c]
    expect = np.rint(x[0].permute(1, 2, 0).numpy() * 255).astype(np.uint8)
    got = np.asarray(img)
    np.testing.assert_array_equal(got.reshape(expect.shape), expect)
    assert sorted(os.listdir(tmp_path)) == ["o.png"]  # no temporary file left


@pytest.mark.parametrize("ext", ["png", "tif", "bmp", "ppm", "pgm", "jpg"])
def test_save_formats_round_trip(tmp_path: Path, ext: str) -> None:
    c = 1 if ext == "pgm" else 3
    x = torch.rand(1, c, H, W)
    if ext == "jpg":  # JPEG is lossy: use a smooth image
        yy, xx = torch.meshgrid(torch.linspace(0, 1, H), torch.linspace(0, 1, W), indexing="ij")
        x = torch.stack([yy, xx, (yy + xx) / 2])[None]
    p = tmp_path / f"o.{ext}"
    save_image(x, p)
    img = Image.open(p)
    assert img.format == {"png": "PNG", "tif": "TIFF", "bmp": "BMP", "ppm": "PPM", "pgm": "PPM",
                          "jpg": "JPEG"}[ext]
    y = load_image(p)
    assert y.shape == x.shape
    tol = 0.02 if ext == "jpg" else 0.5 / 255 + 1e-6
    assert float((y - x).abs().mean() if ext == "jpg" else (y - x).abs().max()) <= tol


@pytest.mark.parametrize("ext", ["png", "tif", "pgm"])
def test_save_16bit(tmp_path: Path, ext: str) -> None:
    x = torch.rand(H, W, dtype=torch.float64)
    p = tmp_path / f"o16.{ext}"
    save_image(x, p, bits=16)
    got = np.asarray(Image.open(p)).astype(np.int64)
    np.testing.assert_array_equal(got, np.rint(x.numpy() * 65535).astype(np.int64))
    y = load_image(p, dtype=torch.float64)[0, 0]
    assert float((y - x).abs().max()) <= 0.5 / 65535 + 1e-12


def test_save_16bit_refusals(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="16 bits.*3-channel"):
        save_image(torch.rand(3, 8, 8), tmp_path / "c.png", bits=16)
    with pytest.raises(ValueError, match="JPEG files have no 16-bit"):
        save_image(torch.rand(8, 8), tmp_path / "c.jpg", bits=16)
    with pytest.raises(ValueError, match="bits must be 8 or 16"):
        save_image(torch.rand(8, 8), tmp_path / "c.png", bits=12)
    assert os.listdir(tmp_path) == []


def test_save_clamps(tmp_path: Path) -> None:
    x = torch.tensor([[-0.5, 0.0, 0.5, 1.0, 1.5]])
    save_image(x, tmp_path / "c.png")
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "c.png")),
                                  [[0, 0, 128, 255, 255]])


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_save_nonfinite_refused(tmp_path: Path, bad: float) -> None:
    x = torch.rand(3, 8, 8)
    x[1, 2, 3] = bad
    with pytest.raises(ValueError, match="NaN or infinite"):
        save_image(x, tmp_path / "n.png")
    assert os.listdir(tmp_path) == []


def test_save_bad_arguments(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="batch of 2"):
        save_image(torch.rand(2, 3, 8, 8), tmp_path / "b.png")
    with pytest.raises(ValueError, match="5 channels"):
        save_image(torch.rand(5, 8, 8), tmp_path / "b.png")
    with pytest.raises(ValueError, match=r"shape \(H, W\)"):
        save_image(torch.rand(8), tmp_path / "b.png")
    with pytest.raises(TypeError, match="floating-point"):
        save_image(torch.zeros(8, 8, dtype=torch.uint8), tmp_path / "b.png")
    with pytest.raises(ValueError, match="cannot choose an image format.*'.xyz'"):
        save_image(torch.rand(8, 8), tmp_path / "b.xyz")
    with pytest.raises(ValueError, match="no extension"):
        save_image(torch.rand(8, 8), tmp_path / "noext")
    with pytest.raises(ValueError, match="cannot store an alpha"):
        save_image(torch.rand(4, 8, 8), tmp_path / "b.jpg")
    with pytest.raises(ValueError, match="pgm file is greyscale"):
        save_image(torch.rand(3, 8, 8), tmp_path / "b.pgm")
    (tmp_path / "adir.png").mkdir()
    with pytest.raises(ValueError, match="is a directory"):
        save_image(torch.rand(8, 8), tmp_path / "adir.png")
    assert os.listdir(tmp_path) == ["adir.png"]


def test_save_requires_grad_and_numpy(tmp_path: Path) -> None:
    x = torch.rand(8, 8, requires_grad=True)
    save_image(x * 1, tmp_path / "g.png")
    save_image(np.ones((8, 8)), tmp_path / "n.png")
    assert np.asarray(Image.open(tmp_path / "n.png")).min() == 255


def test_missing_parent_folder(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"output folder .*nodir does not exist"):
        save_image(torch.rand(8, 8), tmp_path / "nodir" / "x.png")


def test_overwrite_refused_then_allowed(tmp_path: Path) -> None:
    p = tmp_path / "o.png"
    save_image(torch.zeros(8, 8), p)
    before = p.read_bytes()
    with pytest.raises(FileExistsError, match=r"o\.png.*pass overwrite=True \(CLI: --force\)"):
        save_image(torch.ones(8, 8), p)
    assert p.read_bytes() == before
    save_image(torch.ones(8, 8), p, overwrite=True)
    assert np.asarray(Image.open(p)).min() == 255
    assert sorted(os.listdir(tmp_path)) == ["o.png"]
    with pytest.raises(FileExistsError):
        check_output_path(p)
    assert check_output_path(p, overwrite=True) == p


def test_atomic_write_cleans_up_on_failure(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    p = tmp_path / "o.png"
    save_image(torch.zeros(8, 8), p)
    before = p.read_bytes()

    def broken_save(self: Image.Image, fp, *args, **kwargs) -> None:  # noqa: ANN001
        fp.write(b"\x89PNG partial")
        raise OSError("disk full")

    monkeypatch.setattr(Image.Image, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        save_image(torch.ones(8, 8), p, overwrite=True)
    with pytest.raises(OSError, match="disk full"):
        save_image(torch.ones(8, 8), tmp_path / "new.png")
    assert sorted(os.listdir(tmp_path)) == ["o.png"]
    assert p.read_bytes() == before  # the old file is intact


def test_saved_file_permissions_follow_umask(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        save_image(torch.rand(8, 8), tmp_path / "perm.png")
    finally:
        os.umask(old)
    assert (tmp_path / "perm.png").stat().st_mode & 0o777 == 0o644


def test_format_helpers() -> None:
    assert format_supports_alpha("a.png") and format_supports_alpha("a.TIF")
    assert not format_supports_alpha("a.jpg") and not format_supports_alpha("a.bmp")
    assert supports_16bit("a.png") and supports_16bit("a.pgm") and not supports_16bit("a.jpg")


def test_load_real_assets(assets_dir: Path) -> None:
    cam = load_image(assets_dir / "camera.png")
    assert tuple(cam.shape) == (1, 1, 512, 512)
    np.testing.assert_allclose(_ours(cam), _ref(assets_dir / "camera.png"), atol=1e-6)
    cof = load_image(assets_dir / "coffee.png")
    assert tuple(cof.shape) == (1, 3, 400, 600)
