"""Image loading and atomic saving.

:func:`load_image` reads PNG, JPEG, TIFF, BMP and PGM/PPM (8- and 16-bit) into a float tensor
``(1, C, H, W)`` in ``[0, 1]``; :func:`save_image` writes one back, atomically (temporary file
in the same folder, then :func:`os.replace`) and never over an existing file unless asked.

Every problem with a file raises ``ValueError`` / ``FileNotFoundError`` / ``FileExistsError``
with a message that names the file, the problem and the fix.

>>> import torch, tempfile, os
>>> d = tempfile.mkdtemp()
>>> x = torch.rand(1, 3, 8, 8)
>>> save_image(x, os.path.join(d, "a.png"))
>>> y = load_image(os.path.join(d, "a.png"))
>>> tuple(y.shape), bool((y - x).abs().max() <= 0.5 / 255 + 1e-6)
((1, 3, 8, 8), True)
"""

from __future__ import annotations

import os
import secrets
import struct
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError
from torch import Tensor

__all__ = [
    "load_image",
    "load_image_with_alpha",
    "save_image",
    "check_output_path",
    "format_supports_alpha",
    "supports_16bit",
    "image_bit_depth",
]

PathLike = str | os.PathLike

# Extension → (Pillow format name, alpha supported, 16-bit greyscale supported).
_WRITE_FORMATS: dict[str, tuple[str, bool, bool]] = {
    ".png": ("PNG", True, True),
    ".jpg": ("JPEG", False, False),
    ".jpeg": ("JPEG", False, False),
    ".tif": ("TIFF", True, True),
    ".tiff": ("TIFF", True, True),
    ".bmp": ("BMP", False, False),
    ".pgm": ("PPM", False, True),
    ".ppm": ("PPM", False, True),
    ".pnm": ("PPM", False, True),
    ".webp": ("WEBP", True, False),
}
_EXT_LIST = ".png, .jpg, .tif, .bmp, .pgm/.ppm"
_SUPPORTED_INPUT = "PNG, JPEG, TIFF, BMP, PGM/PPM"
_JPEG_QUALITY = 95

# Pillow modes we read, and how: target mode for Image.convert (None: read as is).
_GREY_MODES = {"1", "L", "I;16", "I;16L", "I;16B", "I;16N", "I", "F"}
_ALPHA_MODES = {"LA", "La", "RGBA", "RGBa", "PA"}


# --------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------


def _sniff_zero_size(path: Path) -> bool:
    """True when the header of a PNG or PNM file declares a zero width or height."""
    try:
        with open(path, "rb") as f:
            head = f.read(64)
    except OSError:
        return False
    if head.startswith(b"\x89PNG\r\n\x1a\n") and len(head) >= 24 and head[12:16] == b"IHDR":
        w = int.from_bytes(head[16:20], "big")
        h = int.from_bytes(head[20:24], "big")
        return w == 0 or h == 0
    if len(head) >= 2 and head[:1] == b"P" and head[1:2] in b"123456":
        fields = []
        for line in head[2:].split(b"\n"):
            line = line.split(b"#", 1)[0]
            fields += line.split()
            if len(fields) >= 2:
                break
        try:
            return int(fields[0]) == 0 or int(fields[1]) == 0
        except (IndexError, ValueError):
            return False
    return False


def _truncation_problem(msg: str) -> str:
    return "is truncated" if "truncat" in msg.lower() else "is corrupt"


def _open_checked(path: PathLike) -> tuple[Path, Image.Image, bool]:
    """Open and fully decode ``path``; every failure becomes a clear ValueError/FileNotFound.

    Returns the path, the decoded image and whether Pillow reduced 16-bit colour to 8 bits.
    """
    p = Path(path)
    if not p.exists():
        hint = ""
        if p.parent != Path("") and not p.parent.exists():
            hint = f" (folder {p.parent} does not exist either)"
        raise FileNotFoundError(f"{p}: no such file{hint}")
    if p.is_dir():
        raise ValueError(f"{p} is a directory, not an image file; give the path of an image")
    try:
        size = p.stat().st_size
    except OSError as e:
        raise ValueError(f"{p}: cannot read the file ({e.strerror})") from None
    if size == 0:
        raise ValueError(f"{p} is an empty file (0 bytes), not an image")
    try:
        img = Image.open(p)
    except UnidentifiedImageError:
        if _sniff_zero_size(p):
            raise ValueError(f"{p} is a zero-sized image (width or height is 0)") from None
        raise ValueError(
            f"{p} is not an image Pillow can read (supported: {_SUPPORTED_INPUT}); "
            "is it the right file?"
        ) from None
    except Image.DecompressionBombError as e:
        raise ValueError(f"{p} is too large to decode safely: {e}") from None
    except PermissionError:
        raise PermissionError(f"{p}: permission denied") from None
    except (OSError, SyntaxError, EOFError, ValueError, struct.error) as e:
        raise ValueError(
            f"{p} {_truncation_problem(str(e))} ({e}); re-download or re-export it"
        ) from None
    try:
        if img.width == 0 or img.height == 0:
            raise ValueError(f"{p} is a zero-sized image ({img.width}x{img.height})")
        tile = getattr(img, "tile", None) or []
        reduced16 = img.mode in ("RGB", "RGBA", "LA") and any(
            ";16" in str(getattr(t, "args", "")) for t in tile
        )
        try:
            img.load()  # force the full decode so truncation is caught here
        except Image.DecompressionBombError as e:
            raise ValueError(f"{p} is too large to decode safely: {e}") from None
        except (OSError, SyntaxError, EOFError, ValueError, struct.error) as e:
            raise ValueError(
                f"{p} {_truncation_problem(str(e))} ({e}); the file may be incomplete — "
                "re-download or re-export it"
            ) from None
        if getattr(img, "n_frames", 1) > 1:
            warnings.warn(
                f"{p} has {img.n_frames} frames; only the first one is read", stacklevel=4
            )
        return p, img, reduced16
    except BaseException:
        img.close()
        raise


def _palette_is_grey(img: Image.Image) -> bool:
    pal = img.getpalette() or []
    rgb = np.asarray(pal[: len(pal) - len(pal) % 3], dtype=np.int64).reshape(-1, 3)
    if rgb.size == 0:
        return False
    used = np.unique(np.asarray(img)).astype(np.int64)
    used = used[used < len(rgb)]
    sel = rgb[used]
    return bool((sel[:, 0] == sel[:, 1]).all() and (sel[:, 1] == sel[:, 2]).all())


def _decode(p: Path, img: Image.Image) -> tuple[np.ndarray, float, bool, int]:
    """Pillow image → (raw array (H, W, C), scale, has_alpha, bits per sample).

    ``raw / scale`` is in [0, 1]; C is 1 or 3 colour channels plus one alpha channel when
    ``has_alpha``.
    """
    try:
        img = ImageOps.exif_transpose(img) or img
    except Exception:  # a broken EXIF block must not make the image unreadable
        pass
    mode = img.mode
    has_transparency = img.info.get("transparency") is not None
    if mode == "P" or mode == "PA":
        grey = _palette_is_grey(img)
        alpha = mode == "PA" or has_transparency
        mode = ("LA" if alpha else "L") if grey else ("RGBA" if alpha else "RGB")
        img = img.convert(mode)
    elif mode in ("L", "RGB") and has_transparency:
        mode = "LA" if mode == "L" else "RGBA"
        img = img.convert(mode)
    elif mode in ("1", "CMYK", "YCbCr", "La", "RGBa"):
        mode = {"1": "L", "CMYK": "RGB", "YCbCr": "RGB", "La": "LA", "RGBa": "RGBA"}[mode]
        img = img.convert(mode)

    if mode in ("L", "LA", "RGB", "RGBA"):
        arr, scale, bits = np.array(img, dtype=np.uint8), 255.0, 8
    elif mode.startswith("I;16"):
        arr, scale, bits = np.array(img).astype(np.uint16), 65535.0, 16
    elif mode == "I":
        arr = np.array(img)
        lo, hi = (int(arr.min()), int(arr.max())) if arr.size else (0, 0)
        if lo < 0 or hi > 65535:
            raise ValueError(
                f"{p} is a 32-bit integer image with values in [{lo}, {hi}]; only 0..65535 "
                "(16-bit) is supported — rescale it and save as 16-bit PNG or TIFF"
            )
        arr, scale, bits = arr.astype(np.uint16), 65535.0, 16
    elif mode == "F":
        arr, scale, bits = np.array(img, dtype=np.float32), 1.0, 32
        if not np.isfinite(arr).all():
            raise ValueError(f"{p} contains NaN or infinite values; clean the image first")
        lo, hi = float(arr.min()), float(arr.max())
        if lo < 0 or hi > 1:
            warnings.warn(
                f"{p} is a floating-point image with values in [{lo:.3g}, {hi:.3g}]; "
                "they are clipped to [0, 1]",
                stacklevel=4,
            )
            arr = np.clip(arr, 0, 1)
    else:
        raise ValueError(
            f"{p} has unsupported image mode {mode!r}; convert it to greyscale or RGB "
            "(8 or 16 bits) first"
        )
    if arr.ndim == 2:
        arr = arr[:, :, None]
    return arr, scale, mode in ("LA", "RGBA"), bits


def _read(
    path: PathLike, device: Any, dtype: torch.dtype
) -> tuple[Tensor, Tensor | None, int]:
    """File → (colour (1, C, H, W), alpha (1, 1, H, W) or None, bits), scaled in ``dtype``."""
    p, img, reduced16 = _open_checked(path)
    with img:
        arr, scale, has_alpha, bits = _decode(p, img)
    if reduced16:
        warnings.warn(
            f"{p} is a 16-bit colour image; Pillow decodes it with 8-bit precision",
            stacklevel=3,
        )
    t = torch.from_numpy(np.ascontiguousarray(arr.transpose(2, 0, 1)))[None]
    if t.dtype == torch.uint16:  # few ops support uint16; widen before the division
        t = t.to(torch.int32)
    t = t.to(device=device).to(dtype) / scale
    if has_alpha:
        return t[:, :-1], t[:, -1:], bits
    return t, None, bits


def _check_dtype(dtype: torch.dtype) -> None:
    if not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
        raise TypeError(f"dtype must be a floating-point torch.dtype, got {dtype!r}")


def _convert_colour(colour: Tensor, mode: str | None) -> Tensor:
    if mode is None:
        return colour
    if mode == "L":
        if colour.shape[1] == 3:  # ITU-R 601-2 luma, as Pillow's convert("L"), in float
            r, g, b = colour.unbind(1)
            return (0.299 * r + 0.587 * g + 0.114 * b)[:, None]
        return colour
    if mode == "RGB":
        return colour.expand(-1, 3, -1, -1).contiguous() if colour.shape[1] == 1 else colour
    raise ValueError(f"mode must be 'L', 'RGB' or None, got {mode!r}")


def load_image_with_alpha(
    path: PathLike,
    mode: str | None = None,
    *,
    device: Any = None,
    dtype: torch.dtype = torch.float32,
) -> tuple[Tensor, Tensor | None]:
    """Load an image and its alpha channel separately.

    Returns ``(image, alpha)``: ``image`` is ``(1, C, H, W)`` in ``[0, 1]`` (C as in
    :func:`load_image`), ``alpha`` is ``(1, 1, H, W)`` in ``[0, 1]`` or ``None`` when the file
    has no transparency (no alpha channel, no transparent palette entry or colour key).
    """
    _check_dtype(dtype)
    if mode not in (None, "L", "RGB"):
        raise ValueError(f"mode must be 'L', 'RGB' or None, got {mode!r}")
    colour, alpha, _ = _read(path, device, dtype)
    return _convert_colour(colour, mode), alpha


def load_image(
    path: PathLike,
    mode: str | None = None,
    *,
    alpha: bool = False,
    device: Any = None,
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """Read an image file into a float tensor ``(1, C, H, W)`` with values in ``[0, 1]``.

    Formats: PNG, JPEG, TIFF, BMP, PGM/PPM (anything Pillow reads). Pillow modes ``1``, ``L``,
    ``LA``, ``RGB``, ``RGBA``, ``P``/``PA`` (palette, expanded through the palette; a
    transparent entry becomes alpha), ``CMYK``/``YCbCr`` (converted to RGB), 16-bit
    ``I;16``/``I;16B`` and ``I`` (divided by 65535) and ``F`` (taken as [0, 1]; clipped with a
    warning). A grey palette gives one channel. EXIF orientation is applied.

    Args:
        path: the file.
        mode: ``None`` keeps grey images as 1 channel and colour as 3; ``"L"`` converts to
            grey (ITU-R 601-2 luma ``0.299 R + 0.587 G + 0.114 B``, computed in float);
            ``"RGB"`` repeats a grey channel three times.
        alpha: keep transparency as a last channel (C = 2 or 4; an image without one gets an
            opaque alpha of 1). When ``False`` an existing alpha channel is dropped with a
            warning.
        device, dtype: of the result (``dtype`` must be floating point).

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: a directory, an empty, zero-sized, truncated or corrupt file, not an
            image, or an unsupported mode; the message names the file and the problem.
    """
    img, a = load_image_with_alpha(path, mode, device=device, dtype=dtype)
    if alpha:
        if a is None:
            a = torch.ones_like(img[:, :1])
        return torch.cat([img, a], dim=1)
    if a is not None:
        warnings.warn(
            f"{path} has an alpha channel, which is dropped; pass alpha=True to keep it",
            stacklevel=2,
        )
    return img


def image_bit_depth(path: PathLike) -> int:
    """Bits per sample of an image file (8, 16 or 32 for float) without decoding pixels."""
    p = Path(path)
    try:
        with Image.open(p) as img:
            if img.mode.startswith("I;16") or img.mode == "I":
                return 16
            if img.mode == "F":
                return 32
            return 8
    except (OSError, UnidentifiedImageError, ValueError):
        return 8


# --------------------------------------------------------------------------------------
# Saving
# --------------------------------------------------------------------------------------


def _write_format(path: Path) -> tuple[str, bool, bool]:
    ext = path.suffix.lower()
    if ext not in _WRITE_FORMATS:
        what = f"extension {ext!r}" if ext else "no extension"
        raise ValueError(
            f"cannot choose an image format for {path} ({what}); use one of {_EXT_LIST}"
        )
    return _WRITE_FORMATS[ext]


def format_supports_alpha(path: PathLike) -> bool:
    """Whether the format chosen by ``path``'s extension stores an alpha channel."""
    return _write_format(Path(path))[1]


def supports_16bit(path: PathLike) -> bool:
    """Whether the format chosen by ``path``'s extension stores 16-bit greyscale."""
    return _write_format(Path(path))[2]


def check_output_path(path: PathLike, *, overwrite: bool = False) -> Path:
    """Check that ``path`` can be written by :func:`save_image` (cheap; no file is created).

    Raises ``FileExistsError`` if it exists and ``overwrite`` is false, ``FileNotFoundError``
    if its folder is missing, ``ValueError`` for a folder or an unknown extension.
    """
    p = Path(path)
    if p.is_dir():
        raise ValueError(f"{p} is a directory; give a file name such as {p / 'out.png'}")
    _write_format(p)
    parent = p.parent if str(p.parent) else Path(".")
    if not parent.exists():
        raise FileNotFoundError(
            f"output folder {parent} does not exist; create it first (mkdir -p {parent})"
        )
    if not parent.is_dir():
        raise ValueError(f"cannot write {p}: {parent} is not a folder")
    if p.exists() and not overwrite:
        raise FileExistsError(
            f"{p} already exists; pass overwrite=True (CLI: --force) to replace it"
        )
    return p


def _to_uint(x: Tensor, bits: int) -> np.ndarray:
    """(C, H, W) float tensor in [0, 1] → (H, W, C) uint8/uint16 array, rounded."""
    scale = 255.0 if bits == 8 else 65535.0
    a = x.detach().to("cpu", torch.float64).clamp(0.0, 1.0).mul(scale).round()
    a = a.permute(1, 2, 0).numpy()
    return a.astype(np.uint8 if bits == 8 else np.uint16)


def save_image(x: Tensor, path: PathLike, *, overwrite: bool = False, bits: int = 8) -> None:
    """Write ``x`` to ``path`` atomically; the format comes from the extension.

    Args:
        x: ``(H, W)``, ``(C, H, W)`` or ``(1, C, H, W)`` with C = 1 (grey), 2 (grey + alpha),
            3 (RGB) or 4 (RGBA); values are clamped to ``[0, 1]`` and rounded. NaN or
            infinity raises ``ValueError`` (nothing is written).
        path: ``.png``, ``.jpg``/``.jpeg`` (quality 95), ``.tif``/``.tiff``, ``.bmp``,
            ``.pgm``/``.ppm``/``.pnm``, ``.webp``.
        overwrite: replace an existing file; otherwise ``FileExistsError``.
        bits: 8, or 16 for greyscale (C = 1) PNG, TIFF or PGM.

    The image is written to a hidden temporary file in the same folder, flushed to disk and
    renamed over ``path`` (:func:`os.replace`), so readers never see a partial file; the
    temporary file is removed if anything fails.
    """
    if not isinstance(x, Tensor):
        if isinstance(x, np.ndarray):
            x = torch.from_numpy(x)
        else:
            raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(
            f"x must be a floating-point tensor with values in [0, 1], got {x.dtype}; "
            "for uint8 data use x.float() / 255"
        )
    if x.dim() == 2:
        x = x[None]
    elif x.dim() == 4:
        if x.shape[0] != 1:
            raise ValueError(
                f"save_image writes one image, got a batch of {x.shape[0]} "
                f"(shape {tuple(x.shape)}); save x[i] for each i"
            )
        x = x[0]
    elif x.dim() != 3:
        raise ValueError(
            f"x must have shape (H, W), (C, H, W) or (1, C, H, W); got {tuple(x.shape)}"
        )
    c, h, w = x.shape
    if c not in (1, 2, 3, 4):
        raise ValueError(
            f"x has {c} channels (shape {tuple(x.shape)}); an image file holds 1 (grey), "
            "2 (grey+alpha), 3 (RGB) or 4 (RGBA)"
        )
    if h == 0 or w == 0:
        raise ValueError(f"cannot save a zero-sized image ({h}x{w})")
    if bits not in (8, 16):
        raise ValueError(f"bits must be 8 or 16, got {bits!r}")
    if not bool(torch.isfinite(x).all()):
        raise ValueError(
            f"refusing to save {path}: the image contains NaN or infinite values"
        )

    p = check_output_path(path, overwrite=overwrite)
    fmt, has_alpha, has_16 = _write_format(p)
    ext = p.suffix.lower()
    if c in (2, 4) and not has_alpha:
        raise ValueError(
            f"{p}: {fmt} files cannot store an alpha channel (got {c} channels); "
            "drop it (x[:, :-1]) or save as .png or .tif"
        )
    if ext == ".pgm" and c != 1:
        raise ValueError(f"{p}: a .pgm file is greyscale; save colour as .ppm or .png")
    if bits == 16 and not (has_16 and c == 1):
        if c != 1:
            why = f"{c}-channel images are saved with 8 bits (Pillow writes 16-bit grey only)"
        else:
            why = f"{fmt} files have no 16-bit support"
        raise ValueError(
            f"{p}: cannot save 16 bits: {why}; use bits=8, or a greyscale .png/.tif/.pgm"
        )

    arr = _to_uint(x, bits)
    if bits == 16:
        img = Image.fromarray(arr[:, :, 0])
        if img.mode != "I;16":
            img = img.convert("I;16")
    else:
        img = Image.fromarray(arr[:, :, 0] if c == 1 else arr, {1: "L", 2: "LA", 3: "RGB",
                                                                 4: "RGBA"}[c])
    params: dict[str, Any] = {}
    if fmt == "JPEG":
        params["quality"] = _JPEG_QUALITY
    elif fmt == "TIFF":
        params["compression"] = "tiff_deflate"

    _atomic_write(p, lambda f: img.save(f, format=fmt, **params), overwrite=overwrite)


def _atomic_write(p: Path, write: Any, *, overwrite: bool) -> None:
    parent = p.parent if str(p.parent) else Path(".")
    tmp = parent / f".{p.name}.{secrets.token_hex(4)}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)  # mode honours umask
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        if overwrite:
            os.replace(tmp, p)
        else:
            try:  # atomic "create only if absent": a hard link fails if p appeared meanwhile
                os.link(tmp, p)
            except FileExistsError:
                raise FileExistsError(
                    f"{p} already exists; pass overwrite=True (CLI: --force) to replace it"
                ) from None
            except OSError:  # no hard links on this filesystem
                if p.exists():
                    raise FileExistsError(
                        f"{p} already exists; pass overwrite=True (CLI: --force) to replace it"
                    ) from None
                os.replace(tmp, p)
            finally:
                if tmp.exists():
                    os.unlink(tmp)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
