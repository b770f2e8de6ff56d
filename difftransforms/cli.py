"""The ``difftransforms`` command line: a thin layer over the public API.

How to add a command (read this before editing)
-----------------------------------------------
1. Define it on the group with ``@main.command()``; the group's ``command_class`` gives it the
   shared error handling, so nothing else is needed for errors to print as ONE line.
2. Image-in / image-out commands use the shared decorators and helper::

       @main.command()
       @input_argument
       @click.option("--sigma", type=SIGMA, default="2", show_default=True, help="...")
       @output_options        # last: -o/--output, --force, --device, --debug (listed last)
       def blur(input: Path, output: Path, force: bool, device: str, sigma) -> None:
           '''One-line summary shown in ``difftransforms --help``.

           Longer description shown by ``difftransforms blur --help``.
           '''
           def op(x: Tensor) -> Tensor:                  # x: (1, C, H, W) in [0, 1]
               from difftransforms.fourier import gaussian_blur   # import lazily!
               return gaussian_blur(x, sigma)
           process_image(input, output, op, force=force, device=device)

   ``op`` may return a Tensor or ``(Tensor, "extra summary text")``. ``process_image`` checks
   the output path BEFORE loading (exists without --force, missing folder, unknown extension),
   loads the image (grey stays 1 channel, colour 3; an alpha channel is split off and put back
   unchanged), runs ``op`` under ``torch.no_grad()`` (pass ``grad=True`` if you optimise),
   validates the result (finite, right shape), saves atomically and prints one summary line.
   Commands that do not fit (e.g. several inputs, no input) use the building blocks directly:
   ``check_output_path``, ``load_input``, ``save_output``, ``echo_summary``, ``resolve_device``.
3. User errors: ``raise UserError("what is wrong; how to fix it")`` (exit 2, one ``error:``
   line on stderr). ``ValueError``/``FileNotFoundError``/``FileExistsError`` raised by the
   library are user errors too (their messages must name the problem). Anything else is an
   internal error: exit 1 with a hint to rerun with ``--debug`` (or DIFFTRANSFORMS_DEBUG=1),
   which shows the traceback.
4. Warnings (``warnings.warn``) are printed as one ``warning: ...`` line on stderr.
5. Import torch and the heavy sub-packages lazily inside commands so ``--help`` stays fast.
6. Tests: ``tests/test_cli.py`` shows how to test through ``click.testing.CliRunner``
   (``result.stderr`` is separate from ``result.stdout`` in click >= 8.2).

Exit codes: 0 success, 1 internal error, 2 user error (bad option, bad input, existing output).
"""

from __future__ import annotations

import os
import re
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

if TYPE_CHECKING:
    import torch
    from torch import Tensor

__all__ = [
    "main",
    "UserError",
    "input_argument",
    "output_options",
    "device_option",
    "SIGMA",
    "POSITIVE_FLOAT",
    "NONNEGATIVE_FLOAT",
    "check_output_path",
    "load_input",
    "save_output",
    "echo_summary",
    "resolve_device",
    "process_image",
]

DEBUG_ENV = "DIFFTRANSFORMS_DEBUG"
USER_ERROR_EXIT = 2
INTERNAL_ERROR_EXIT = 1


# --------------------------------------------------------------------------------------
# Error handling
# --------------------------------------------------------------------------------------


class UserError(click.ClickException):
    """A problem with the user's input or options: printed as one ``error:`` line, exit 2."""

    exit_code = USER_ERROR_EXIT


# Library exceptions that describe bad user input (their message names the problem).
_USER_EXCEPTIONS: tuple[type[BaseException], ...] = (
    ValueError,
    FileNotFoundError,
    FileExistsError,
    IsADirectoryError,
    NotADirectoryError,
    PermissionError,
)


def _one_line(message: str) -> str:
    """Collapse whitespace (including newlines) so an error prints as a single line."""
    return re.sub(r"\s+", " ", str(message)).strip()


def _debug_requested(args: Sequence[str] | None) -> bool:
    if os.environ.get(DEBUG_ENV, "").strip().lower() not in ("", "0", "false", "no"):
        return True
    argv = list(args) if args is not None else sys.argv[1:]
    return "--debug" in argv


def _error(message: str) -> None:
    click.echo(f"error: {_one_line(message)}", err=True)


def _format_warning(
    message: Warning | str,
    category: type[Warning],
    filename: str,
    lineno: int,
    file: Any = None,
    line: str | None = None,
) -> None:
    click.echo(f"warning: {_one_line(str(message))}", err=True)


def _usage_hint(exc: click.UsageError) -> str:
    ctx = exc.ctx
    if ctx is None:
        return ""
    names = list(ctx.help_option_names) or ["--help"]
    help_opt = next((n for n in names if n.startswith("--")), names[0])
    return f" (try '{ctx.command_path} {help_opt}')"


class _ErrorHandlingMixin:
    """Wraps ``main`` so every failure prints one ``error:`` line with a clear exit code."""

    def main(  # type: ignore[override]
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        **extra: Any,
    ) -> Any:
        parent_main = super().main  # type: ignore[misc]
        if not standalone_mode:  # caller wants raw exceptions (embedding, tests)
            return parent_main(args, prog_name, complete_var, standalone_mode=False, **extra)
        debug = _debug_requested(args)
        code = 0
        with warnings.catch_warnings():
            warnings.simplefilter("default", UserWarning)  # each warning once per location
            warnings.showwarning = _format_warning
            try:
                rv = parent_main(args, prog_name, complete_var, standalone_mode=False, **extra)
                code = rv if isinstance(rv, int) else 0
            except click.UsageError as e:  # bad option / argument (click's own or ours)
                if type(e).__name__ == "NoArgsIsHelpError" and e.ctx is not None:
                    click.echo(e.ctx.get_help())  # bare `difftransforms`: the help, as is
                    code = 0
                else:
                    _error(e.format_message() + _usage_hint(e))
                    code = USER_ERROR_EXIT
            except click.Abort as e:  # click turns Ctrl-C / EOF into Abort
                interrupted = isinstance(e.__cause__, KeyboardInterrupt)
                _error("interrupted" if interrupted else "aborted")
                code = 130 if interrupted else INTERNAL_ERROR_EXIT
            except click.ClickException as e:  # UserError, click.FileError, ...
                _error(e.format_message())
                code = USER_ERROR_EXIT
            except KeyboardInterrupt:
                _error("interrupted")
                code = 130
            except BrokenPipeError:  # e.g. `difftransforms --help | head`
                code = 0
            except _USER_EXCEPTIONS as e:
                if debug:
                    raise
                _error(str(e) or type(e).__name__)
                code = USER_ERROR_EXIT
            except MemoryError:
                if debug:
                    raise
                _error("out of memory; try a smaller image")
                code = INTERNAL_ERROR_EXIT
            except Exception as e:
                if debug:
                    raise
                if type(e).__name__ == "OutOfMemoryError":  # torch.cuda.OutOfMemoryError
                    _error("out of GPU memory; try --device cpu or a smaller image")
                else:
                    _error(
                        f"internal error: {type(e).__name__}: {_one_line(str(e))[:300]} "
                        f"(rerun with --debug or {DEBUG_ENV}=1 for the traceback and please "
                        "report it)"
                    )
                code = INTERNAL_ERROR_EXIT
        sys.exit(code)


class DTCommand(_ErrorHandlingMixin, click.Command):
    """A click command with difftransforms' one-line error reporting."""


class DTGroup(_ErrorHandlingMixin, click.Group):
    """The ``difftransforms`` group; its sub-commands are :class:`DTCommand` by default."""

    command_class = DTCommand


# --------------------------------------------------------------------------------------
# Shared parameter types and options
# --------------------------------------------------------------------------------------


class _PositiveFloat(click.ParamType):
    name = "FLOAT>0"

    def __init__(self, allow_zero: bool = False) -> None:
        self.allow_zero = allow_zero
        if allow_zero:
            self.name = "FLOAT>=0"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None):
        if isinstance(value, (int, float)):
            v = float(value)
        else:
            try:
                v = float(str(value).strip())
            except ValueError:
                self.fail(f"{value!r} is not a number", param, ctx)
        if v != v or v in (float("inf"), float("-inf")):
            self.fail(f"{value!r} must be a finite number", param, ctx)
        if v < 0 or (v == 0 and not self.allow_zero):
            bound = ">= 0" if self.allow_zero else "> 0"
            self.fail(f"{value!r} must be {bound}", param, ctx)
        return v


POSITIVE_FLOAT = _PositiveFloat()
NONNEGATIVE_FLOAT = _PositiveFloat(allow_zero=True)


class _Sigma(click.ParamType):
    """``2.0`` (isotropic) or ``SY,SX`` (anisotropic); converts to float or (float, float)."""

    name = "SIGMA"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None):
        if isinstance(value, (int, float)):
            parts: list[Any] = [value]
        elif isinstance(value, tuple):
            parts = list(value)
        else:
            parts = [p for p in str(value).replace(" ", "").split(",")]
        if len(parts) not in (1, 2) or any(p == "" for p in parts):
            self.fail(f"{value!r} is not FLOAT or SY,SX (e.g. 2 or 2,3.5)", param, ctx)
        vals = [POSITIVE_FLOAT.convert(p, param, ctx) for p in parts]
        return vals[0] if len(vals) == 1 else (vals[0], vals[1])


SIGMA = _Sigma()


class _Device(click.ParamType):
    """``auto``, ``cpu``, ``cuda`` or ``cuda:N``; validated against the GPUs present."""

    name = "DEVICE"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None):
        try:
            return str(resolve_device(str(value)))
        except UserError as e:
            self.fail(e.format_message(), param, ctx)


def resolve_device(spec: str) -> torch.device:
    """``auto`` → ``cuda`` when a GPU is present else ``cpu``; checks ``cuda``/``cuda:N`` exist.

    Raises :class:`UserError` with the fix when the device is unknown or absent.
    """
    import torch

    s = spec.strip().lower()
    if s == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if s == "cpu":
        return torch.device("cpu")
    m = re.fullmatch(r"cuda(?::(\d+))?", s)
    if m is None:
        raise UserError(f"unknown device {spec!r}; use auto, cpu, cuda or cuda:N")
    if not torch.cuda.is_available():
        raise UserError(f"device {spec!r} requested but no CUDA GPU is available; use --device cpu")
    index = int(m.group(1)) if m.group(1) is not None else torch.cuda.current_device()
    count = torch.cuda.device_count()
    if index >= count:
        raise UserError(
            f"device {spec!r} requested but only {count} CUDA GPU(s) exist "
            f"(cuda:0..cuda:{count - 1})"
        )
    return torch.device("cuda", index)


def _debug_callback(ctx: click.Context, param: click.Parameter, value: bool) -> None:
    # The flag is read from argv by the error handler; nothing to do here.
    return None


debug_option = click.option(
    "--debug",
    is_flag=True,
    expose_value=False,
    callback=_debug_callback,
    help=f"Show the full traceback of internal errors (or set {DEBUG_ENV}=1).",
)

device_option = click.option(
    "--device",
    type=_Device(),
    default="auto",
    show_default=True,
    help="auto, cpu, cuda or cuda:N (auto: the GPU when there is one).",
)

input_argument = click.argument(
    "input", metavar="INPUT", type=click.Path(path_type=Path, dir_okay=True)
)


def output_options(f: Callable[..., Any]) -> Callable[..., Any]:
    """Add ``-o/--output`` (required), ``--force``, ``--device`` and ``--debug`` to a command."""
    f = debug_option(f)
    f = device_option(f)
    f = click.option(
        "--force", "-f", is_flag=True, help="Overwrite OUTPUT if it already exists."
    )(f)
    f = click.option(
        "-o",
        "--output",
        required=True,
        type=click.Path(path_type=Path, dir_okay=False),
        help="Output image (format from the extension: .png .jpg .tif .bmp .pgm .ppm).",
    )(f)
    return f


# --------------------------------------------------------------------------------------
# Image-command helpers
# --------------------------------------------------------------------------------------


def check_output_path(output: Path, force: bool) -> None:
    """Fail fast (before any work) if OUTPUT cannot be written.

    Checks: the folder exists, OUTPUT is not a folder, the extension is a writable image
    format, and OUTPUT does not exist unless ``force``.
    """
    from difftransforms.io import check_output_path as _check

    try:
        _check(output, overwrite=force)
    except FileExistsError:
        raise UserError(f"{output} already exists; pass --force to overwrite it") from None
    except (ValueError, OSError) as e:
        raise UserError(str(e)) from None


def load_input(path: Path, device: str | torch.device = "cpu") -> tuple[Tensor, Tensor | None]:
    """Load INPUT as ``(1, C, H, W)`` float32 in [0, 1] (C = 1 grey or 3 colour) on ``device``.

    Returns ``(image, alpha)``: ``alpha`` is ``(1, 1, H, W)`` or ``None`` when the file has
    no transparency.
    """
    from difftransforms.io import load_image_with_alpha

    try:
        return load_image_with_alpha(path, device=device)
    except (ValueError, OSError) as e:
        raise UserError(str(e)) from None


def save_output(
    image: Tensor,
    output: Path,
    *,
    force: bool,
    alpha: Tensor | None = None,
    bits: int = 8,
) -> Tensor:
    """Save ``image`` (``(1, C, H, W)``) plus optional alpha atomically to OUTPUT.

    The alpha channel is appended when the format stores one and the sizes match (otherwise
    a warning says it is dropped). Returns the tensor that was written.
    """
    import torch

    from difftransforms.io import format_supports_alpha, save_image

    if alpha is not None:
        if alpha.shape[-2:] != image.shape[-2:]:
            warnings.warn(
                "output size differs from the input, so the input's alpha channel is dropped",
                stacklevel=2,
            )
        elif not format_supports_alpha(output):
            warnings.warn(
                f"{output.suffix} files have no alpha channel; transparency is dropped "
                "(use .png or .tif to keep it)",
                stacklevel=2,
            )
        else:
            image = torch.cat([image, alpha.to(image)], dim=1)
    try:
        save_image(image, output, overwrite=force, bits=bits)
    except FileExistsError:
        raise UserError(f"{output} already exists; pass --force to overwrite it") from None
    except (ValueError, OSError) as e:
        raise UserError(str(e)) from None
    return image


def _check_checkpoint_args(checkpoint: Path | None, resume: bool, force: bool) -> None:
    """--checkpoint / --resume / --force of synthesize and stylize, checked before any work."""
    if resume and checkpoint is None:
        raise UserError("--resume needs --checkpoint FILE (the file of the interrupted run)")
    if checkpoint is not None and not checkpoint.parent.is_dir():
        raise UserError(f"--checkpoint: folder {checkpoint.parent} does not exist; create it "
                        "first (as for -o)")
    if checkpoint is not None and checkpoint.exists() and not resume and not force:
        raise UserError(f"checkpoint {checkpoint} already exists; pass --resume to continue "
                        "that run or --force to start over")


def _run_optimization(synth: Any, checkpoint: Path | None) -> Tensor:
    """``synth.run()`` for synthesize/stylize, saying what a user needs to know: a resumed
    run without a checkpoint file yet, progress saved on Ctrl-C, a stop by the time budget
    before the planned steps."""
    if checkpoint is not None and synth.resume and not checkpoint.exists():
        click.echo(f"note: no checkpoint at {checkpoint} yet; starting a new run", err=True)
    try:
        y = synth.run()
    except KeyboardInterrupt:
        if synth.saved_on_interrupt:
            click.echo(f"progress saved in {checkpoint} (step {synth.global_step()}); rerun "
                       "the same command with --resume to continue", err=True)
        raise
    total = synth.total_steps()
    if (synth.time_budget is not None and total and synth.global_step() < total
            and synth.elapsed >= synth.time_budget):
        click.echo(f"note: stopped by the {synth.time_budget:g} s time budget after "
                   f"{synth.global_step()} of {total} steps; pass --time SECONDS or --steps N "
                   "for a longer run", err=True)
    return y


def echo_summary(
    output: Path, image: Tensor, seconds: float, extra: str = "", *, bits: int = 8
) -> None:
    """Print one line: ``wrote OUT (WxH grey|RGB[, 16-bit]) in 0.12 s; extra``.

    ``image`` is what was written, ``(..., C, H, W)``; C counts an alpha channel.
    """
    c, h, w = image.shape[-3:]
    kind = {1: "grey", 2: "grey+alpha", 3: "RGB", 4: "RGBA"}.get(int(c), f"{c} channels")
    depth = ", 16-bit" if bits == 16 else ""
    msg = f"wrote {output} ({w}x{h} {kind}{depth}) in {seconds:.2f} s"
    if extra:
        msg += f"; {extra}"
    click.echo(msg)


def _check_result(y: Any, x: Tensor, name: str) -> Tensor:
    import torch

    if not isinstance(y, torch.Tensor):
        raise TypeError(f"{name} returned {type(y).__name__}, expected a Tensor")
    if y.dim() != 4 or y.shape[0] != 1 or y.shape[1] != x.shape[1]:
        raise RuntimeError(f"{name} returned shape {tuple(y.shape)} for input {tuple(x.shape)}")
    if not bool(torch.isfinite(y).all()):
        raise UserError(
            f"{name} produced NaN or infinite values (the options may be too extreme for "
            "this image); nothing was written"
        )
    return y


def process_image(
    input: Path,
    output: Path,
    op: Callable[[Tensor], Tensor | tuple[Tensor, str]],
    *,
    force: bool,
    device: str | torch.device = "cpu",
    grad: bool = False,
    bits: int | None = None,
    name: str | None = None,
) -> Tensor:
    """Load INPUT → ``op`` → save OUTPUT atomically → print a summary line.

    Parameters
    ----------
    input, output:
        Paths from the command line. OUTPUT is checked first (exists without ``force``,
        missing folder, unknown extension) so no work is wasted.
    op:
        ``op(x)`` with ``x`` of shape ``(1, C, H, W)`` (C = 1 or 3, alpha removed) in [0, 1]
        on ``device``; returns the result Tensor ``(1, C, H', W')`` or ``(Tensor, text)``
        where ``text`` is appended to the summary line (e.g. ``"noise std 0.021"``).
        ``ValueError`` raised by ``op`` is reported as a user error.
    grad:
        Run ``op`` with autograd enabled (default: under ``torch.no_grad()``).
    bits:
        Output bit depth; ``None`` keeps 16 bits for a 16-bit greyscale input written to
        .png/.tif/.pgm, else 8.
    name:
        Used in messages; defaults to the running command's name.

    Returns the saved image (without alpha) for callers that want it.
    """
    import torch

    from difftransforms.io import image_bit_depth, supports_16bit

    if name is None:
        ctx = click.get_current_context(silent=True)
        name = ctx.info_name if ctx is not None and ctx.info_name else "operation"
    check_output_path(output, force)
    t0 = time.perf_counter()
    x, alpha = load_input(input, device)
    with torch.set_grad_enabled(grad):
        result = op(x)
    extra = ""
    if isinstance(result, tuple):
        result, extra = result
    y = _check_result(result, x, name).detach()
    if bits is None:
        bits = 16 if image_bit_depth(input) == 16 and y.shape[1] == 1 and alpha is None else 8
        if bits == 16 and not supports_16bit(output):
            bits = 8
    written = save_output(y, output, force=force, alpha=alpha, bits=bits)
    echo_summary(output, written, time.perf_counter() - t0, extra, bits=bits)
    return y


# --------------------------------------------------------------------------------------
# The group
# --------------------------------------------------------------------------------------


def _version() -> str:
    from difftransforms import __version__

    return __version__


@click.group(
    name="difftransforms",
    cls=DTGroup,
    context_settings={"help_option_names": ["-h", "--help"]},
)
@click.version_option(_version(), "--version", "-V", prog_name="difftransforms")
@debug_option
def main() -> None:
    """Differentiable image transforms and texture synthesis.

    Every command reads an image (PNG, JPEG, TIFF, BMP, PGM/PPM; 8- or 16-bit) and writes
    the result atomically; an existing OUTPUT is only replaced with --force. Errors print
    one line and exit with status 2 (bad input or options) or 1 (internal error; rerun with
    --debug for the traceback).
    """


# --------------------------------------------------------------------------------------
# Filtering commands (Fourier and wavelet API)
# --------------------------------------------------------------------------------------

_PADDING = click.Choice(["reflect", "periodic"], case_sensitive=False)


def _fmt_std(std: Tensor) -> str:
    vals = [f"{float(v):.4g}" for v in std.reshape(-1)]
    return vals[0] if len(vals) == 1 else "(" + ", ".join(vals) + ")"


@main.command()
@input_argument
@click.option(
    "--sigma",
    type=SIGMA,
    default="2",
    show_default=True,
    help="Standard deviation in pixels: FLOAT, or SY,SX for an anisotropic blur.",
)
@click.option(
    "--padding",
    type=_PADDING,
    default="reflect",
    show_default=True,
    help="Boundary handling: mirror the edges, or wrap around (periodic).",
)
@output_options
def blur(input: Path, output: Path, force: bool, device: str, sigma: Any, padding: str) -> None:
    """Gaussian blur.

    Example: difftransforms blur photo.png -o soft.png --sigma 3
    """

    def op(x: Tensor) -> Tensor:
        from difftransforms.fourier import gaussian_blur

        return gaussian_blur(x, sigma, padding=padding.lower())

    process_image(input, output, op, force=force, device=device)


@main.command()
@input_argument
@click.option(
    "--sigma",
    type=SIGMA,
    default="1",
    show_default=True,
    help="Scale of the detail to enhance (Gaussian sigma in pixels, FLOAT or SY,SX).",
)
@click.option(
    "--amount",
    type=NONNEGATIVE_FLOAT,
    default=1.0,
    show_default=True,
    help="Strength: output = x + amount * (x - blur(x)).",
)
@click.option(
    "--padding",
    type=_PADDING,
    default="reflect",
    show_default=True,
    help="Boundary handling of the blur: mirror the edges, or wrap around (periodic).",
)
@output_options
def sharpen(
    input: Path,
    output: Path,
    force: bool,
    device: str,
    sigma: Any,
    amount: float,
    padding: str,
) -> None:
    """Sharpen with an unsharp mask (result clipped to [0, 1]).

    Example: difftransforms sharpen photo.png -o crisp.png --sigma 1.5 --amount 0.8
    """

    def op(x: Tensor) -> Tensor:
        from difftransforms.fourier import unsharp_mask

        return unsharp_mask(x, sigma, amount=amount, padding=padding.lower())

    process_image(input, output, op, force=force, device=device)


@main.command()
@input_argument
@click.option(
    "--method",
    type=click.Choice(["wavelet", "wiener"], case_sensitive=False),
    default="wavelet",
    show_default=True,
    help="wavelet: BayesShrink soft thresholding; wiener: Fourier Wiener filter.",
)
@click.option(
    "--noise-std",
    type=POSITIVE_FLOAT,
    default=None,
    help="Noise standard deviation on the [0, 1] scale (default: estimated from the image).",
)
@click.option(
    "--wavelet",
    default="db4",
    show_default=True,
    help="Wavelet for --method wavelet (PyWavelets' names: haar, dbN, symN, coifN, "
    "biorX.Y, rbioX.Y, dmey).",
)
@click.option(
    "--threshold",
    type=click.Choice(["BayesShrink", "VisuShrink"], case_sensitive=False),
    default="BayesShrink",
    show_default=True,
    help="Threshold rule for --method wavelet.",
)
@output_options
def denoise(
    input: Path,
    output: Path,
    force: bool,
    device: str,
    method: str,
    noise_std: float | None,
    wavelet: str,
    threshold: str,
) -> None:
    """Remove additive Gaussian noise.

    Prints the noise standard deviation used (estimated when --noise-std is not given).

    Example: difftransforms denoise noisy.png -o clean.png --method wavelet
    """
    method = method.lower()
    src = click.get_current_context().get_parameter_source("wavelet")
    if method == "wiener" and src is click.core.ParameterSource.COMMANDLINE:
        raise UserError("--wavelet only applies to --method wavelet")
    src_t = click.get_current_context().get_parameter_source("threshold")
    if method == "wiener" and src_t is click.core.ParameterSource.COMMANDLINE:
        raise UserError("--threshold only applies to --method wavelet")
    rule = {"bayesshrink": "BayesShrink", "visushrink": "VisuShrink"}[threshold.lower()]

    def op(x: Tensor) -> tuple[Tensor, str]:
        from difftransforms.fourier import estimate_noise_std, wiener_denoise

        if noise_std is None:
            info = f"estimated noise std {_fmt_std(estimate_noise_std(x))}"
        else:
            info = f"noise std {noise_std:.4g}"
        if method == "wiener":
            return wiener_denoise(x, noise_std=noise_std), info
        from difftransforms.wavelets import wavelet_denoise

        _check_wavelet_levels(x, wavelet, None, "--method wiener")
        y = wavelet_denoise(x, wavelet=wavelet, method=rule, noise_std=noise_std)
        return y, info

    process_image(input, output, op, force=force, device=device)


def _check_wavelet_levels(x: Tensor, wavelet: str, level: int | None,
                          other: str | None) -> None:
    """The image must allow one level of ``wavelet`` (and ``level`` if given): else one
    error naming the sizes and the CLI's fixes (not the library's ``level=None``)."""
    from difftransforms.wavelets import dwt_max_level

    h, w = x.shape[-2:]
    try:
        deepest = dwt_max_level(min(h, w), wavelet)
    except ValueError:
        return  # an unknown wavelet: the library's own message names the valid ones
    if deepest < 1:
        alt = f", or {other}" if other else ""
        raise UserError(f"a {w}x{h} image is too small for the {wavelet} wavelet (it needs at "
                        f"least one decomposition level); use --wavelet haar{alt}")
    if level is not None and level > deepest:
        raise UserError(f"--level {level} is too deep for a {w}x{h} image with {wavelet}: use "
                        f"--level 1..{deepest}, or omit --level for the deepest")


def _load_psf(path: Path, device: str) -> Tensor:
    """A PSF image (any format, grey or colour → luma) as an (h, w) kernel summing to 1."""
    import torch

    from difftransforms.io import load_image_with_alpha

    try:
        k, _ = load_image_with_alpha(path, "L", device=device, dtype=torch.float64)
    except (ValueError, OSError) as e:
        raise UserError(f"--psf: {e}") from None
    k = k[0, 0]
    total = float(k.sum())
    if total <= 0:
        raise UserError(f"--psf: {path} is all black; the kernel must have a positive sum")
    return (k / total).to(torch.float32)


@main.command()
@input_argument
@click.option(
    "--psf-sigma",
    type=SIGMA,
    default=None,
    help="The blur is Gaussian with this sigma in pixels (FLOAT or SY,SX).",
)
@click.option(
    "--psf",
    "psf_file",
    type=click.Path(path_type=Path),
    default=None,
    help="The blur kernel as an image file (normalised to sum 1).",
)
@click.option(
    "--method",
    type=click.Choice(["wiener", "richardson-lucy"], case_sensitive=False),
    default="wiener",
    show_default=True,
    help="wiener: regularised inverse filter (fast); richardson-lucy: iterative, positive.",
)
@click.option(
    "--balance",
    type=POSITIVE_FLOAT,
    default=None,
    help="Wiener regularisation (noise-to-signal ratio); default: from the noise std.",
)
@click.option(
    "--noise-std",
    type=POSITIVE_FLOAT,
    default=None,
    help="Noise std on the [0, 1] scale for --method wiener (default: estimated).",
)
@click.option(
    "--steps",
    type=click.IntRange(min=1, max=100000),
    default=None,
    help="Iterations for --method richardson-lucy.  [default: 30]",
)
@output_options
def deconvolve(
    input: Path,
    output: Path,
    force: bool,
    device: str,
    psf_sigma: Any,
    psf_file: Path | None,
    method: str,
    balance: float | None,
    noise_std: float | None,
    steps: int | None,
) -> None:
    """Undo a known blur (Wiener or Richardson-Lucy deconvolution).

    Give the blur either as --psf-sigma (Gaussian) or as --psf KERNEL.png. The image is
    mirror-extended at its borders during the computation so that edges do not ring.

    Example: difftransforms deconvolve blurred.png -o sharp.png --psf-sigma 2
    """
    method = method.lower()
    if (psf_sigma is None) == (psf_file is None):
        raise UserError("give exactly one of --psf-sigma SIGMA or --psf KERNEL_IMAGE")
    if method == "wiener" and steps is not None:
        raise UserError("--steps only applies to --method richardson-lucy")
    if method == "richardson-lucy" and (balance is not None or noise_std is not None):
        raise UserError("--balance and --noise-std only apply to --method wiener")
    check_output_path(output, force)
    psf = _load_psf(psf_file, device) if psf_file is not None else None

    def op(x: Tensor) -> Tensor:
        import torch.nn.functional as F

        from difftransforms.fourier import (
            estimate_noise_std,
            gaussian_psf,
            gaussian_psf_size,
            richardson_lucy,
            wiener_deconvolve,
        )

        h, w = x.shape[-2:]
        # checked before a Gaussian kernel is built (a huge sigma would not fit in memory)
        kh, kw = psf.shape[-2:] if psf is not None else gaussian_psf_size(psf_sigma)
        if kh > h or kw > w:
            size = f"{kh}x{kw}" if max(kh, kw) < 10**7 else "over 10^7 pixels wide"
            raise UserError(
                f"the PSF ({size}) is larger than the image ({h}x{w}); "
                "use a smaller --psf-sigma or crop the kernel image"
            )
        k = (psf if psf is not None else gaussian_psf(psf_sigma)).to(x)
        # Mirror-extend the borders by the PSF size so that neither the periodic model
        # (Wiener) nor the zero padding (Richardson-Lucy) rings at the image edges.
        py, px = min(k.shape[-2], h - 1), min(k.shape[-1], w - 1)
        xp = F.pad(x, (px, px, py, py), mode="reflect")
        if method == "wiener":
            std = noise_std
            if std is None and balance is None:
                std = estimate_noise_std(x)  # from the image itself, not the padding
            y = wiener_deconvolve(xp, k, noise_std=std, balance=balance)
        else:
            y = richardson_lucy(xp, k, steps=30 if steps is None else steps)
        return y[..., py : py + h, px : px + w]

    process_image(input, output, op, force=force, device=device)


@main.command()
@input_argument
@click.option(
    "--keep",
    type=click.FloatRange(min=0.0, max=1.0, min_open=True),
    default=0.05,
    show_default=True,
    help="Fraction of wavelet coefficients kept (the largest in magnitude).",
)
@click.option("--wavelet", default="db4", show_default=True,
              help="Wavelet (PyWavelets' names: haar, dbN, symN, coifN, biorX.Y, rbioX.Y, dmey).")
@click.option(
    "--level",
    type=click.IntRange(min=1),
    default=None,
    help="Decomposition levels (default: as many as the image size allows).",
)
@output_options
def compress(
    input: Path,
    output: Path,
    force: bool,
    device: str,
    keep: float,
    wavelet: str,
    level: int | None,
) -> None:
    """Wavelet compression: keep the largest coefficients, write the reconstruction.

    Prints the compression ratio and the PSNR of the reconstruction.

    Example: difftransforms compress photo.png -o approx.png --keep 0.02
    """

    def op(x: Tensor) -> tuple[Tensor, str]:
        from difftransforms.wavelets import wavelet_compress

        _check_wavelet_levels(x, wavelet, level, None)
        res = wavelet_compress(x, keep=keep, wavelet=wavelet, level=level)
        kept = getattr(res, "kept", None)
        total = getattr(res, "total", None)
        info = f"kept {kept} of {total} coefficients, " if kept is not None else ""
        info += f"ratio {float(res.ratio):.3g}:1, PSNR {float(res.psnr):.2f} dB"
        return res.image, info

    process_image(input, output, op, force=force, device=device)


# --------------------------------------------------------------------------------------
# Diagnostics
# --------------------------------------------------------------------------------------


@main.command()
@click.option("--no-build", is_flag=True, help="Report only: do not compile or load kernels.")
def doctor(no_build: bool) -> None:
    """Show which backend each custom op uses and why.

    Loads the compiled C++/CUDA kernels (compiling them once if needed, about a minute) and
    prints the torch/CUDA versions, compiler, kernel cache folder and, for the CPU and CUDA
    ops, whether the compiled kernels or the pure-PyTorch reference is used and why
    (compiler missing, build error and its log file, no GPU, forced by
    DIFFTRANSFORMS_BACKEND=reference).

    Example: difftransforms doctor
    """
    from difftransforms.ops import _build

    click.echo(_build.doctor_report(build=not no_build), nl=False)


# --------------------------------------------------------------------------------------
# Texture synthesis
# --------------------------------------------------------------------------------------

_SYNTH_MODELS = click.Choice(
    ["auto", "cnn", "vgg19", "scattering", "covariance", "spectra"], case_sensitive=False
)


class _Size(click.ParamType):
    """``HxW`` (e.g. ``512x256``) or one int for a square."""

    name = "HxW"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None):
        if isinstance(value, tuple):
            return value
        m = re.fullmatch(r"\s*(\d+)\s*(?:[xX*,]\s*(\d+))?\s*", str(value))
        if m is None:
            self.fail(f"{value!r} is not HxW (e.g. 256x256) or one integer", param, ctx)
        h = int(m.group(1))
        w = int(m.group(2)) if m.group(2) is not None else h
        if min(h, w) < 16 or max(h, w) > 8192:
            self.fail(f"{value!r}: each side must be between 16 and 8192 pixels", param, ctx)
        return (h, w)


#: Default wall-clock budget (seconds) of the bare command on a CPU: grey, colour.
SYNTH_CPU_BUDGET = (60.0, 120.0)
#: Default output side cap of the bare command.
SYNTH_DEFAULT_MAX_SIDE = 256


@main.command()
@input_argument
@click.option("--model", "-m", type=_SYNTH_MODELS, default="auto", show_default=True,
              help="Statistics to match: scattering spectra (auto), random multiscale CNN, "
                   "pretrained VGG19, scattering moments, wavelet covariance.")
@click.option("--size", type=_Size(), default=None,
              help=f"Output HxW (default: the example's size, at most "
                   f"{SYNTH_DEFAULT_MAX_SIDE} per side). The output tiles seamlessly.")
@click.option("--steps", type=click.IntRange(min=1), default=None,
              help="Optimisation steps (L-BFGS calls) at the finest scale.")
@click.option("--time", "time_budget", type=POSITIVE_FLOAT, default=None,
              help="Stop after this many seconds (default on a CPU without --steps: "
                   f"{SYNTH_CPU_BUDGET[0]:g} grey, {SYNTH_CPU_BUDGET[1]:g} colour).")
@click.option("--seed", type=int, default=0, show_default=True,
              help="Same seed, same machine, same --steps: same image (a time budget, "
                   "the CPU default, stops after a machine-dependent number of steps).")
@click.option("--loss", type=click.Choice(["auto", "sw", "gram", "moments"]), default="auto",
              show_default=True,
              help="sw: sliced Wasserstein (CNN default), gram, moments: normalised L2.")
@click.option("--optimizer", type=click.Choice(["lbfgs", "adam"]), default="lbfgs",
              show_default=True)
@click.option("--checkpoint", type=click.Path(path_type=Path, dir_okay=False), default=None,
              help="Save the run's state to this file every few steps (atomically).")
@click.option("--resume", is_flag=True,
              help="Continue the run saved in --checkpoint (same options give the same "
                   "image as an uninterrupted run).")
@click.option("--weights", type=click.Path(path_type=Path, dir_okay=False, exists=True),
              default=None, help="Local VGG19 state dict for --model vgg19.")
@click.option("-J", "--J", "J", type=click.IntRange(min=1, max=8), default=None,
              help="Number of wavelet scales of the scattering/covariance/spectra models "
                   "(default: from the image size, at most 5).")
@click.option("--no-histogram-matching", "no_hist", is_flag=True,
              help="Do not match each channel's histogram to the example at the end.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
@output_options
def synthesize(
    input: Path,
    output: Path,
    force: bool,
    device: str,
    model: str,
    size: tuple[int, int] | None,
    steps: int | None,
    time_budget: float | None,
    seed: int,
    loss: str,
    optimizer: str,
    checkpoint: Path | None,
    resume: bool,
    weights: Path | None,
    J: int | None,
    no_hist: bool,
    quiet: bool,
) -> None:
    """Synthesise a new texture that looks like INPUT (optimises F(X) ~ F(INPUT)).

    Starts from noise and optimises the image until its statistics (Cheng & Morel's
    scattering spectra by default; --model cnn for random CNN features compared with a
    sliced Wasserstein loss) match the example's.
    Colour examples give colour textures; the result is periodic (tiles seamlessly).

    Example: difftransforms synthesize brick.png -o new_brick.png --size 512x512
    """
    import torch

    from difftransforms.synthesis import Synthesizer
    from difftransforms.synthesis.engine import DEFAULT_STEPS

    check_output_path(output, force)
    _check_checkpoint_args(checkpoint, resume, force)
    if weights is not None and model.lower() != "vgg19":
        raise UserError("--weights is only used by --model vgg19")
    t0 = time.perf_counter()
    x, _alpha = load_input(input, device)  # transparency is not synthesised
    if size is None:
        h, w = x.shape[-2:]
        size = (min(h, SYNTH_DEFAULT_MAX_SIDE), min(w, SYNTH_DEFAULT_MAX_SIDE))
    name = "spectra" if model.lower() == "auto" else model.lower()
    if steps is None and time_budget is None and torch.device(device).type == "cpu":
        time_budget = SYNTH_CPU_BUDGET[0 if x.shape[1] == 1 else 1]
        steps = DEFAULT_STEPS[name]
    opts: dict[str, Any] = {}
    if weights is not None:
        opts["weights"] = str(weights)
    if J is not None:
        if name not in ("scattering", "covariance", "spectra"):
            raise UserError("-J is only used by the scattering, covariance and spectra models")
        opts["J"] = J
    try:
        from difftransforms.features import WeightsUnavailableError
    except ImportError:  # pragma: no cover - features package always ships it
        WeightsUnavailableError = RuntimeError  # noqa: N806
    try:
        synth = Synthesizer(
            x, name, size, steps=steps, time_budget=time_budget, seed=seed, device=device,
            loss=loss, optimizer=optimizer, histogram_matching=not no_hist,
            progress=not quiet, checkpoint=checkpoint, resume=resume, model_options=opts,
        )
        y = _run_optimization(synth, checkpoint)
    except WeightsUnavailableError as e:
        raise UserError(f"{e} (or use --model cnn, which needs no weights)") from None
    except FloatingPointError as e:
        raise UserError(str(e)) from None
    written = save_output(y, output, force=force)
    extra = (f"model {synth.name}, {synth.global_step()} steps, "
             f"{synth.evaluations} evaluations, loss {synth.losses[-1]:.3g}"
             if synth.losses else f"model {synth.name}, 0 steps")
    echo_summary(output, written, time.perf_counter() - t0, extra)


# --------------------------------------------------------------------------------------
# compare (texture-quality metrics)
# --------------------------------------------------------------------------------------


@main.command()
@click.argument("example", metavar="EXAMPLE", type=click.Path(path_type=Path, dir_okay=False))
@click.argument("synth", metavar="SYNTH...", nargs=-1, required=True,
                type=click.Path(path_type=Path, dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON.")
@click.option("--metrics", default="all", show_default=True,
              help="Comma-separated subset of: spectrum_gap, histogram_gap, wavelet_gap, "
                   "cnn_gap, copy_fraction.")
@click.option("--no-baselines", is_flag=True,
              help="Skip the second-crop and random-phase references (faster).")
@click.option("--seed", type=int, default=0, show_default=True,
              help="Seed of the random-phase noise baseline.")
@debug_option
def compare(example: Path, synth: tuple[Path, ...], as_json: bool, metrics: str,
            no_baselines: bool, seed: int) -> None:
    """Texture statistics of SYNTH image(s) against the EXAMPLE they imitate.

    Prints, per metric (0 = identical statistics; lower is better), the value for each
    SYNTH next to two references computed from EXAMPLE alone: "second crop" (the range of
    the metric between disjoint crops of EXAMPLE: what a fresh sample of the texture
    scores) and "random phase" (EXAMPLE's spectrum with random phases). "ok" marks a value
    within the second-crop range, "HIGH" one above it. copy_fraction is the share of
    16x16 patches lying in a region (24x24 or more) copied verbatim from EXAMPLE. Sizes
    may differ; channels must agree.
    """
    import json

    from difftransforms import metrics as M

    names = list(M.METRICS) if metrics.strip().lower() == "all" else [
        m.strip() for m in metrics.split(",") if m.strip()]
    unknown = [m for m in names if m not in M.METRICS]
    if unknown or not names:
        raise UserError(f"unknown metric(s) {unknown or [metrics]}; choose from "
                        f"{', '.join(M.METRICS)} or all")
    y, _ = load_input(example, "cpu")
    images = [(p, load_input(p, "cpu")[0]) for p in synth]
    for p, x in [(example, y), *images]:
        if min(x.shape[-2:]) < M.MIN_SIZE:
            raise UserError(f"{p} is {x.shape[-2]}x{x.shape[-1]}; compare needs images of at "
                            f"least {M.MIN_SIZE}x{M.MIN_SIZE} pixels")
    for p, x in images:
        if x.shape[1] != y.shape[1]:
            kind = {1: "grey", 3: "colour"}
            raise UserError(f"{p} is {kind.get(x.shape[1])} but {example} is "
                            f"{kind.get(y.shape[1])}; compare images of the same kind")
    base = None if no_baselines else M.texture_baselines(y, seed=seed, metrics=names)
    reports = [(p, M.texture_report(y, x, baselines=base if base else False, metrics=names))
               for p, x in images]
    if as_json:
        out = {
            "example": str(example),
            "baselines": base,
            "images": {str(p): {m: {k: v for k, v in r[m].items()
                                    if k in ("value", "verdict")} for m in names}
                       for p, r in reports},
            "descriptions": {m: M.METRICS[m][2] for m in names},
        }
        click.echo(json.dumps(out, indent=2))
        return
    head = ["metric"]
    if base:
        head += ["second crop", "random phase"]
    head += [p.name for p, _ in reports]
    rows = []
    for m in names:
        row = [m]
        if base:
            crops = base[m]["second_crop"]
            row.append(f"{min(crops):.3g}-{max(crops):.3g}" if crops else "n/a")
            row.append(f"{base[m]['random_phase']:.3g}")
        for _, r in reports:
            e = r[m]
            mark = ""
            if "verdict" in e:
                mark = {"within second-crop range": " ok",
                        "outside second-crop range": " HIGH"}.get(e["verdict"], "")
            row.append(f"{e['value']:.3g}{mark}")
        rows.append(row)
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
    click.echo(f"example: {example} ({y.shape[-2]}x{y.shape[-1]}, "
               f"{'grey' if y.shape[1] == 1 else 'colour'})")
    for r in [head, *rows]:
        click.echo("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())
    if base:
        click.echo("ok: within the second-crop range (as good as a fresh crop of the example); "
                   "HIGH: above it. Lower is better for every metric. Random-phase noise "
                   "matches the spectrum: a good spectrum_gap alone proves little.")


@main.command()
@click.argument("content", metavar="CONTENT", type=click.Path(path_type=Path, dir_okay=True))
@click.argument("style", metavar="STYLE", type=click.Path(path_type=Path, dir_okay=True))
@click.option("--model", "-m", type=click.Choice(["auto", "cnn", "vgg19"], case_sensitive=False),
              default="auto", show_default=True,
              help="Features: random multiscale CNN (auto, no weights; content = blurred "
                   "luminance) or pretrained VGG19 (content = relu4_2; needs --weights or a "
                   "cached download).")
@click.option("--content-weight", type=NONNEGATIVE_FLOAT, default=1.0, show_default=True,
              help="Larger keeps more of CONTENT's structure.")
@click.option("--style-weight", type=NONNEGATIVE_FLOAT, default=1.0, show_default=True,
              help="Weight of STYLE's texture statistics.")
@click.option("--size", type=_Size(), default=None,
              help=f"Output HxW (default: CONTENT's aspect ratio, at most "
                   f"{SYNTH_DEFAULT_MAX_SIDE} per side).")
@click.option("--steps", type=click.IntRange(min=1), default=None,
              help="Optimisation steps (L-BFGS calls) at the finest scale.")
@click.option("--time", "time_budget", type=POSITIVE_FLOAT, default=None,
              help="Stop after this many seconds (default on a CPU without --steps: "
                   f"{SYNTH_CPU_BUDGET[1]:g}).")
@click.option("--seed", type=int, default=0, show_default=True,
              help="Same seed, same machine, same --steps: same image.")
@click.option("--init", type=click.Choice(["content", "noise"]), default="content",
              show_default=True,
              help="Start from CONTENT with STYLE's colours, or from STYLE's spectral noise.")
@click.option("--checkpoint", type=click.Path(path_type=Path, dir_okay=False), default=None,
              help="Save the run's state to this file every few steps (atomically).")
@click.option("--resume", is_flag=True,
              help="Continue the run saved in --checkpoint (same options give the same "
                   "image as an uninterrupted run).")
@click.option("--weights", type=click.Path(path_type=Path, dir_okay=False, exists=True),
              default=None, help="Local VGG19 state dict for --model vgg19.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
@output_options
def stylize(
    content: Path,
    style: Path,
    output: Path,
    force: bool,
    device: str,
    model: str,
    content_weight: float,
    style_weight: float,
    size: tuple[int, int] | None,
    steps: int | None,
    time_budget: float | None,
    seed: int,
    init: str,
    checkpoint: Path | None,
    resume: bool,
    weights: Path | None,
    quiet: bool,
) -> None:
    """Style transfer: repaint CONTENT with the texture and colours of STYLE (Gatys et al.).

    The synthesis engine with a content term: the output keeps CONTENT's structure (its
    luminance at large scales with the random CNN, VGG19's relu4_2 with --model vgg19)
    while its texture statistics match STYLE's. The output has STYLE's channels: a grey
    CONTENT with a colour STYLE gives a colour image, a grey STYLE a grey one.

    Example: difftransforms stylize photo.png wood.png -o wooden_photo.png
    """
    import torch

    from difftransforms.synthesis import Stylizer
    from difftransforms.synthesis.engine import DEFAULT_STEPS

    check_output_path(output, force)
    _check_checkpoint_args(checkpoint, resume, force)
    if weights is not None and model.lower() != "vgg19":
        raise UserError("--weights is only used by --model vgg19")
    t0 = time.perf_counter()
    c, _ = load_input(content, device)  # transparency is ignored
    s, _ = load_input(style, device)
    for path, img in ((content, c), (style, s)):
        if min(img.shape[-2:]) < 16:
            raise UserError(f"{path} is {img.shape[-2]}x{img.shape[-1]} pixels; stylize needs "
                            "images of at least 16x16")
    if size is None:
        h, w = c.shape[-2:]
        k = min(1.0, SYNTH_DEFAULT_MAX_SIDE / max(h, w))
        size = (max(16, round(h * k)), max(16, round(w * k)))
    name = "cnn" if model.lower() == "auto" else model.lower()
    if steps is None and time_budget is None and torch.device(device).type == "cpu":
        time_budget = SYNTH_CPU_BUDGET[1]
        steps = DEFAULT_STEPS[name]
    opts: dict[str, Any] = {"weights": str(weights)} if weights is not None else {}
    from difftransforms.features import WeightsUnavailableError

    try:
        synth = Stylizer(
            c, s, name, size, content_weight=content_weight, style_weight=style_weight,
            init=init, steps=steps, time_budget=time_budget, seed=seed, device=device,
            progress=not quiet, checkpoint=checkpoint, resume=resume, model_options=opts,
        )
        y = _run_optimization(synth, checkpoint)
    except WeightsUnavailableError as e:
        raise UserError(f"{e} (or use --model cnn, which needs no weights)") from None
    except FloatingPointError as e:
        raise UserError(str(e)) from None
    written = save_output(y, output, force=force)
    extra = (f"model {synth.name}, {synth.global_step()} steps, loss {synth.losses[-1]:.3g}"
             if synth.losses else f"model {synth.name}, 0 steps")
    echo_summary(output, written, time.perf_counter() - t0, extra)
