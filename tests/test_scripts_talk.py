"""The founding talk's worked examples: scripts/ballistic.py and scripts/kernel_norm.py."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
import torch

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"


def load(name: str):
    spec = importlib.util.spec_from_file_location(f"_talk_{name}", SCRIPTS / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses need the module registered
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def ballistic():
    return load("ballistic")


def closed_form_endpoint(P, m=15.0, g=9.81, steps=10, dt=0.1, source=(0.0, 0.5)):
    """Outside reference: the talk's explicit Euler scheme written out by hand
    (q += dt p / m; p -= dt (0, m g)), no autodiff."""
    q = list(source)
    p = [float(P[0]), float(P[1])]
    for _ in range(steps):
        q = [q[0] + dt * p[0] / m, q[1] + dt * p[1] / m]
        p = [p[0], p[1] - dt * m * g]
    return q


def test_hamiltonian_scheme_matches_hand_written_euler(ballistic):
    P = torch.tensor([60.0, 30.0], dtype=torch.float64)
    traj = ballistic.shoot(P)
    assert traj.shape == (11, 2)
    expected = closed_form_endpoint(P)
    torch.testing.assert_close(traj[-1].detach(), torch.tensor(expected, dtype=torch.float64))


def test_noiseless_control_hits_the_target(ballistic):
    P, err, traj = ballistic.solve_momentum()
    assert err < 1e-3
    end = closed_form_endpoint(P)
    assert abs(end[0] - 7.0) < 1e-3 and abs(end[1] - 2.0) < 1e-3
    assert traj.shape == (11, 2)
    # the talk's plain gradient descent (lr = 5) decreases the error too, just slowly
    end0 = torch.tensor(closed_form_endpoint((60.0, 30.0))) - torch.tensor([7.0, 2.0])
    _, err_gd, _ = ballistic.solve_momentum(method="gd", iters=30)
    assert err_gd < 0.5 * float(end0.norm())
    _, err_sym, _ = ballistic.solve_momentum(scheme="symplectic")
    assert err_sym < 1e-3


def test_noisy_command_and_gravity(ballistic):
    noisy = ballistic.solve_noisy_momentum(samples=64, seed=1)
    assert noisy.trajectory.shape == (11, 64, 2)
    assert noisy.history[-1] < noisy.history[0]
    # the optimum of the expected cost is stationary: its gradient vanishes
    noise = torch.randn(10, 64, 2, generator=torch.Generator().manual_seed(1),
                        dtype=torch.float64)
    P = noisy.value.clone().requires_grad_()
    qT = ballistic.shoot(P.expand(64, 2), noise=noise)[-1]
    cost = ((qT - torch.tensor([7.0, 2.0], dtype=torch.float64)) ** 2).sum(-1).mean()
    (gP,) = torch.autograd.grad(cost, P)
    assert gP.abs().max() < 1e-5
    grav = ballistic.solve_gravity()
    assert grav.endpoint_error < 1e-3
    end = closed_form_endpoint((105.0, 30.0), g=float(grav.value))
    assert abs(end[1] - 2.0) < 1e-3


def test_ballistic_main_writes_plot(ballistic, tmp_path):
    pytest.importorskip("matplotlib")
    out = tmp_path / "b.png"
    assert ballistic.main(["--output", str(out), "--samples", "16"]) == 0
    assert out.stat().st_size > 1000


def test_kernel_norm_script_tiny(tmp_path, capsys):
    kn = load("kernel_norm")
    out = tmp_path / "kn.png"
    args = ["--sizes", "300", "600", "--repeat", "1", "--threads", "1", "--no-memory",
            "--output", str(out)]
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        args.append("--no-plot")
    assert kn.main(args) == 0
    text = capsys.readouterr().out
    assert "difftransforms" in text and "dense torch" in text and "faster than dense" in text
    if "--no-plot" not in args:
        assert out.stat().st_size > 1000
    assert kn.main(["--sizes", "0"]) == 2
    # the memory probe (fresh process): ours grows far less than the dense N x N matrices
    ours, dense = kn.peak_memory_mb("difftransforms", 2000, "cpu"), kn.peak_memory_mb(
        "dense torch", 2000, "cpu")
    assert ours is not None and dense is not None and ours < dense / 4
