"""scripts/denoise_and_blur.py runs end to end on a small input (skipped without matplotlib)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "denoise_and_blur.py"


def _script():
    spec = importlib.util.spec_from_file_location("denoise_and_blur", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_denoise_and_blur_script(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    pytest.importorskip("matplotlib")
    script = _script()
    out = tmp_path / "fig.png"
    assert script.main(["--size", "64", "--output", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "Wiener-denoised" in printed and "PSNR" in printed
    with Image.open(out) as img:
        assert img.size[0] > 600 and img.size[1] > 300
    assert [p.name for p in tmp_path.iterdir()] == ["fig.png"]  # no temp file left
    # an existing output is not overwritten without --force
    with pytest.raises(SystemExit):
        script.main(["--size", "64", "--output", str(out)])
    assert "--force" in capsys.readouterr().err
    # a colour, non-square input
    rgb = ["--size", "48", "--output", str(out), "--force",
           "--input", str(ROOT / "assets" / "chelsea.png")]
    assert script.main(rgb) == 0
