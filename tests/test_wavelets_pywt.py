"""Wavelet transforms against PyWavelets: every discrete wavelet, every mode, 1-D and 2-D."""

from __future__ import annotations

import numpy as np
import pytest
import pywt
import torch

import difftransforms.wavelets as wt
from difftransforms.wavelets import _core

MODES = pywt.Modes.modes
DISCRETE = pywt.wavelist(kind="discrete")
# two or more members of every family, all of db1-db20, for the 2-D matrix
WAVELETS_2D = ["haar", "db1", "db2", "db5", "sym3", "sym8", "coif1", "coif4", "bior1.3",
               "bior3.5", "rbio2.4", "rbio6.8", "dmey"]
SIZES_2D = [(31, 31), (32, 64), (64, 32), (97, 130)]


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """These are many tiny problems: intra-op threads only add wake-up latency."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def close(ours: torch.Tensor, ref: np.ndarray, dtype: torch.dtype,
          ref32: np.ndarray | None = None) -> None:
    """Max error within 1e-12 (float64) / 1e-5 (float32) of the data's scale (max |ref|, >= 1).

    float64 allows 8e-12 (a few levels of multi-tap sums in another order than PyWavelets'
    C loops). For float32, ``ref32`` (PyWavelets run in float32) adds an allowance of three times
    PyWavelets' own float32 error: deep levels of long filters in smooth mode extrapolate
    far and cancel, so float32 itself cannot do better there.
    """
    assert tuple(ours.shape) == ref.shape, (tuple(ours.shape), ref.shape)
    o = ours.detach().cpu().double().numpy()
    scale = max(1.0, float(np.abs(ref).max()) if ref.size else 1.0)
    eps = 1e-5 if dtype == torch.float32 else 1e-12 * 8
    err = float(np.abs(o - ref).max()) if ref.size else 0.0
    allow = eps * scale
    if ref32 is not None and ref.size:
        allow += 3 * float(np.abs(ref32.astype(np.float64) - ref).max())
    assert err <= allow, f"max error {err:.3g} > {allow:.3g}"


def pr(rec: torch.Tensor, x: np.ndarray, pywt_rec: np.ndarray, dtype: torch.dtype) -> None:
    """Perfect reconstruction, as perfect as PyWavelets' own filters allow.

    PyWavelets' tabulated filters are PR only to ~1e-10 (sym3) and dmey is a truncated
    FIR (~1e-2), so the allowance is our tolerance plus three times PyWavelets' own round-trip
    error on the same input.
    """
    o = rec.detach().cpu().double().numpy()
    own = float(np.abs(pywt_rec.astype(np.float64) - x).max())
    eps = 1e-5 if dtype == torch.float32 else 1e-12 * 8
    err = float(np.abs(o - x).max())
    assert err <= eps * max(1.0, float(np.abs(x).max())) + 3 * own, (err, own)


@pytest.fixture(params=[True, False], ids=["kernel", "torch"])
def backend(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> bool:
    if request.param and not wt.kernels_available():
        pytest.skip(f"C++ kernels unavailable: {wt.kernels_load_error()}")
    monkeypatch.setattr(_core, "USE_KERNELS", request.param)
    return request.param


# ------------------------------------------------------------------------------ 1-D


@pytest.mark.parametrize("name", DISCRETE)
def test_wavedec_waverec_1d_all_wavelets_all_modes(name: str) -> None:
    """Every discrete wavelet x 9 modes x lengths {7, 64, 65, 127} x every level, float64."""
    rng = np.random.default_rng(0)
    F = pywt.Wavelet(name).dec_len
    for n in (7, 64, 65, 127):
        x = rng.standard_normal((2, n))
        xt = torch.from_numpy(x)
        maxl = pywt.dwt_max_level(n, F)
        for mode in MODES:
            for level in range(1, maxl + 1):
                ref = pywt.wavedec(x, name, mode=mode, level=level)
                ours = wt.wavedec(xt, name, level=level, mode=mode)
                assert len(ours) == len(ref)
                for o, r in zip(ours, ref, strict=True):
                    close(o, r, torch.float64)
                rec_ref = pywt.waverec(ref, name, mode=mode)
                rec = wt.waverec([torch.from_numpy(r) for r in ref], name, mode=mode)
                close(rec, rec_ref, torch.float64)
                pr(rec[..., :n], x, rec_ref[..., :n], torch.float64)


@pytest.mark.parametrize("name", ["db1", "db3", "sym4", "coif2", "bior2.6", "rbio3.3", "dmey"])
def test_wavedec_1d_float32_and_axis(name: str) -> None:
    rng = np.random.default_rng(1)
    x = rng.standard_normal((3, 65, 2)).astype(np.float32)
    for mode in MODES:
        ref = pywt.wavedec(x.astype(np.float64), name, mode=mode, axis=1)
        ours = wt.wavedec(torch.from_numpy(x), name, mode=mode, axis=1)
        for o, r in zip(ours, ref, strict=True):
            assert o.dtype == torch.float32
            close(o, r, torch.float32)
        rec = wt.waverec(ours, name, mode=mode, axis=1)
        close(rec[:, :65], x.astype(np.float64), torch.float32)


@pytest.mark.parametrize("mode", MODES)
def test_dwt_idwt_1d_short_signals(mode: str) -> None:
    """Filters longer than the signal wrap around several times (F > N), as in PyWavelets."""
    rng = np.random.default_rng(2)
    for name in ("db4", "coif5", "dmey"):
        for n in (1, 2, 3, 5):
            x = rng.standard_normal(n)
            if n == 1 and mode in ("reflect", "antireflect"):
                with pytest.raises(ValueError):
                    pywt.dwt(x, name, mode)
                with pytest.raises(ValueError, match="at least 2 samples"):
                    wt.dwt(torch.from_numpy(x), name, mode)
                continue
            a_ref, d_ref = pywt.dwt(x, name, mode)
            a, d = wt.dwt(torch.from_numpy(x), name, mode)
            close(a, a_ref, torch.float64)
            close(d, d_ref, torch.float64)
            close(wt.idwt(a, d, name, mode), pywt.idwt(a_ref, d_ref, name, mode),
                  torch.float64)
            close(wt.idwt(None, d, name, mode), pywt.idwt(None, d_ref, name, mode),
                  torch.float64)


def test_length_one_is_a_clear_error() -> None:
    x = torch.ones(1, dtype=torch.float64)
    with pytest.raises(ValueError, match=r"valid levels are 0\.\.0"):
        wt.wavedec(x, "haar", level=1)
    assert wt.wavedec(x, "haar")[0] is not None  # level=None -> 0 levels, like pywt
    assert len(wt.wavedec(x, "haar")) == 1


# ------------------------------------------------------------------------------ 2-D


@pytest.mark.parametrize("name", WAVELETS_2D)
def test_wavedec2_waverec2_matrix(name: str, backend: bool, dtype: torch.dtype) -> None:
    """Sizes {31², 32x64, 64x32, 97x130} x 9 modes x every level, batched, both backends."""
    if not backend and dtype == torch.float32 and wt.kernels_available():
        pytest.skip("float32 runs on the kernel backend (time budget); float64 on both")
    rng = np.random.default_rng(3)
    np_dtype = np.float64 if dtype == torch.float64 else np.float32
    for H, W in SIZES_2D:
        x = rng.standard_normal((2, 1, H, W)).astype(np_dtype)
        xt = torch.from_numpy(x)
        maxl = pywt.dwtn_max_level((H, W), name)
        is32 = dtype == torch.float32
        levels = range(1, maxl + 1) if dtype == torch.float64 else [maxl] if maxl else []
        for mode in MODES:
            for level in levels:
                ref = pywt.wavedec2(x.astype(np.float64), name, mode=mode, level=level)
                r32 = pywt.wavedec2(x, name, mode=mode, level=level) if is32 else None
                ours = wt.wavedec2(xt, name, level=level, mode=mode)
                close(ours[0], ref[0], dtype, r32[0] if r32 else None)
                for i, (lo, lr) in enumerate(zip(ours[1:], ref[1:], strict=True)):
                    for j, (o, r) in enumerate(zip(lo, lr, strict=True)):
                        close(o, r, dtype, r32[i + 1][j] if r32 else None)
                rec_ref = pywt.waverec2(ref, name, mode=mode)
                rec = wt.waverec2(ours, name, mode=mode)
                close(rec, rec_ref, dtype, pywt.waverec2(r32, name, mode=mode) if r32 else None)
                own = pywt.waverec2(r32, name, mode=mode) if r32 else rec_ref
                pr(rec[..., :H, :W], x.astype(np.float64), own[..., :H, :W], dtype)


@pytest.mark.parametrize("mode", MODES)
def test_dwt2_idwt2_other_axes_and_missing_bands(mode: str, backend: bool) -> None:
    rng = np.random.default_rng(4)
    x = rng.standard_normal((5, 3, 9, 2))
    cA, (cH, cV, cD) = pywt.dwt2(x, "db3", mode=mode, axes=(0, 2))
    oA, (oH, oV, oD) = wt.dwt2(torch.from_numpy(x), "db3", mode=mode, axes=(0, 2))
    for o, r in zip((oA, oH, oV, oD), (cA, cH, cV, cD), strict=True):
        close(o, r, torch.float64)
    ref = pywt.idwt2((cA, (None, cV, cD)), "db3", mode=mode, axes=(0, 2))
    ours = wt.idwt2((oA, (None, oV, oD)), "db3", mode=mode, axes=(0, 2))
    close(ours, ref, torch.float64)


def test_kernel_matches_torch_reference_big_filters() -> None:
    """Odd sizes, long filters on short axes (several wrap-arounds), every mode."""
    if not wt.kernels_available():
        pytest.skip(f"C++ kernels unavailable: {wt.kernels_load_error()}")
    from difftransforms.wavelets._plans import analysis_plan, synthesis_plan

    g = torch.Generator().manual_seed(0)
    for name in ("coif17",):
        dec, rec, _, _ = wt._filters.taps(name, torch.float64, torch.device("cpu"))
        F = dec.shape[1]
        for mode in MODES:
            for H, W in ((3, 2), (11, 40)):
                x = torch.randn(2, H, W, generator=g, dtype=torch.float64)
                ph, pw = analysis_plan(H, F, mode), analysis_plan(W, F, mode)
                k = torch.stack(_core.analysis2d(x, dec, ph, pw, needs_grad=False), 1)
                r = _core.analysis2d_torch(x, dec, ph, pw)
                torch.testing.assert_close(k, r, rtol=1e-10, atol=1e-10 * r.abs().max())
                sh, sw = synthesis_plan(ph.K, F, mode), synthesis_plan(pw.K, F, mode)
                bands = [k[:, i] for i in range(4)]
                torch.testing.assert_close(
                    _core.synthesis2d(*bands, rec, sh, sw, needs_grad=False),
                    _core.synthesis2d_torch(*bands, rec, sh, sw), rtol=1e-10,
                    atol=1e-10 * k.abs().max())


# ------------------------------------------------------------------------------ packing


def test_coeffs_to_tensor_matches_pywt() -> None:
    rng = np.random.default_rng(5)
    x = rng.standard_normal((2, 3, 37, 50))
    ref = pywt.wavedec2(x, "db2", mode="symmetric", level=3, axes=(-2, -1))
    arr_ref, sl_ref = pywt.coeffs_to_array(ref, padding=0, axes=(-2, -1))
    coeffs = wt.wavedec2(torch.from_numpy(x), "db2", level=3)
    arr, sl = wt.coeffs_to_tensor(coeffs)
    close(arr, arr_ref, torch.float64)
    assert sl == [s if isinstance(s, tuple) else dict(s) for s in sl_ref]
    back = wt.tensor_to_coeffs(arr, sl)
    torch.testing.assert_close(back[0], coeffs[0])
    for lb, lc in zip(back[1:], coeffs[1:], strict=True):
        for b, c in zip(lb, lc, strict=True):
            torch.testing.assert_close(b, c)
    # pywt can read our slices
    back_np = pywt.array_to_coeffs(arr.numpy(), sl, output_format="wavedec2")
    np.testing.assert_allclose(back_np[1][0], ref[1][0], rtol=1e-12, atol=1e-12)
    # 1-D
    x1 = rng.standard_normal(33)
    ref1 = pywt.wavedec(x1, "sym3", level=2)
    a1, _ = pywt.coeffs_to_array(ref1)
    o1, s1 = wt.coeffs_to_tensor(wt.wavedec(torch.from_numpy(x1), "sym3", level=2))
    close(o1, a1, torch.float64)
    assert len(wt.tensor_to_coeffs(o1, s1)) == 3
