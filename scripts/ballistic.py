"""Optimal control through an ODE solver driven by autodiff (the founding talk's example).

A mass ``m`` leaves ``source = (0, 0.5)`` with momentum ``P``; its trajectory follows
Hamilton's equations for the mechanical energy ``Emec(q, p) = m g q[1] + |p|^2 / (2 m)``,

    dq/dt = + dEmec/dp,    dp/dt = - dEmec/dq,

where both partial derivatives are obtained with ``torch.autograd.grad(...,
create_graph=True)`` (so the whole scheme stays differentiable), integrated with 10 Euler
steps of 0.1 s exactly as in the talk (``scheme="talk"``: both updates use the derivatives at
the current state) or with the symplectic Euler scheme (``scheme="symplectic"``: ``p`` first,
then ``q`` with ``dEmec/dp`` at the new ``p``). Three problems are solved by differentiating
through the scheme:

1. find ``P`` such that the final position hits ``target = (7, 2)`` (L-BFGS; the talk's
   plain gradient descent with ``lr=5`` is available as ``method="gd"``);
2. the same with a noisy command: ``dq += q[1] * 20 * randn(2)`` at every step (the talk's
   perturbation); the *expected* squared distance over ``samples`` noise draws (fixed
   draws: sample average approximation) is minimised;
3. with ``P`` fixed, find the gravity ``g`` that sends the mass to the target height.

Run ``python scripts/ballistic.py`` (a few seconds) to print the results and save the
trajectories to ``assets/figures/ballistic.png`` (needs matplotlib, the ``examples`` extra).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor
from torch.autograd import grad

ROOT = Path(__file__).resolve().parents[1]
DTYPE = torch.float64
SOURCE = (0.0, 0.5)
TARGET = (7.0, 2.0)


def emec(q: Tensor, p: Tensor, m: Tensor, g: Tensor) -> Tensor:
    """Mechanical energy of a particle of mass ``m`` in a gravitational field ``g``.

    ``q, p``: ``(..., 2)``; the energies of a batch of particles are summed (their
    gradients stay per particle)."""
    return (m * g * q[..., 1]).sum() + (p**2).sum() / (2 * m)


def shoot(P: Tensor, *, m: float | Tensor = 15.0, g: float | Tensor = 9.81,
          source: tuple[float, float] = SOURCE, steps: int = 10, dt: float = 0.1,
          noise: Tensor | None = None, scheme: str = "talk") -> Tensor:
    """Integrate Hamilton's equations from ``(source, P)``; returns the trajectory
    ``(steps + 1, ..., 2)``. ``P`` is ``(2,)`` or a batch ``(S, 2)``; ``noise`` ``(steps, S, 2)``
    (standard normal draws) adds the talk's ``q[1] * 20 * noise`` to ``dEmec/dq``."""
    if scheme not in ("talk", "symplectic"):
        raise ValueError(f"scheme must be 'talk' or 'symplectic', got {scheme!r}")
    m_t = torch.as_tensor(m, dtype=P.dtype)
    g_t = torch.as_tensor(g, dtype=P.dtype)
    q = torch.tensor(source, dtype=P.dtype).expand_as(P).clone().requires_grad_()
    p = P if P.requires_grad else P.clone().requires_grad_()
    traj = [q]
    for it in range(steps):
        if scheme == "talk":
            dq, dp = grad(emec(q, p, m_t, g_t), [q, p], create_graph=True)
            if noise is not None:
                dq = dq + q[..., 1:2] * 20 * noise[it]
            q, p = q + dt * dp, p - dt * dq
        else:
            (dq,) = grad(emec(q, p, m_t, g_t), [q], create_graph=True)
            if noise is not None:
                dq = dq + q[..., 1:2] * 20 * noise[it]
            p = p - dt * dq
            (dp,) = grad(emec(q, p, m_t, g_t), [p], create_graph=True)
            q = q + dt * dp
        traj.append(q)
    return torch.stack(traj)


def _minimize(fn: Callable[[], Tensor], params: list[Tensor], method: str, iters: int,
              lr: float) -> list[float]:
    history: list[float] = []
    if method == "lbfgs":
        opt = torch.optim.LBFGS(params, lr=1.0, max_iter=iters, tolerance_grad=1e-14,
                                tolerance_change=1e-16, history_size=20,
                                line_search_fn="strong_wolfe")

        def closure() -> Tensor:
            opt.zero_grad()
            c = fn()
            c.backward()
            history.append(float(c.detach()))
            return c

        opt.step(closure)
    elif method == "gd":  # the talk's loop: P.data -= lr * dP.data
        for _ in range(iters):
            c = fn()
            grads = grad(c, params)
            with torch.no_grad():
                for t, d in zip(params, grads, strict=False):
                    t -= lr * d
            history.append(float(c.detach()))
    else:
        raise ValueError(f"method must be 'lbfgs' or 'gd', got {method!r}")
    return history


@dataclass
class Solution:
    value: Tensor            # the optimised control (P or g)
    endpoint_error: float    # |q_T - target| (root mean square over samples when noisy)
    trajectory: Tensor       # (steps + 1, [S,] 2), detached
    history: list[float]     # cost along the iterations


def solve_momentum(P0: tuple[float, float] = (60.0, 30.0), *, m: float = 15.0,
                   g: float = 9.81, target: tuple[float, float] = TARGET,
                   method: str = "lbfgs", iters: int = 100, lr: float = 5.0,
                   scheme: str = "talk") -> tuple[Tensor, float, Tensor]:
    """Noiseless control: ``(P, endpoint_error, trajectory (11, 2))``."""
    sol = _solve_momentum(P0, m=m, g=g, target=target, method=method, iters=iters, lr=lr,
                          scheme=scheme)
    return sol.value, sol.endpoint_error, sol.trajectory


def _solve_momentum(P0, *, m, g, target, method, iters, lr, scheme, noise=None) -> Solution:
    P = torch.tensor(P0, dtype=DTYPE, requires_grad=True)
    tgt = torch.tensor(target, dtype=DTYPE)

    def cost() -> Tensor:
        Ps = P if noise is None else P.expand(noise.shape[1], 2)
        qT = shoot(Ps, m=m, g=g, noise=noise, scheme=scheme)[-1]
        return ((qT - tgt) ** 2).sum(-1).mean()

    hist = _minimize(cost, [P], method, iters, lr)
    with torch.enable_grad():
        Ps = P if noise is None else P.expand(noise.shape[1], 2)
        traj = shoot(Ps, m=m, g=g, noise=noise, scheme=scheme).detach()
    err = float(((traj[-1] - tgt) ** 2).sum(-1).mean().sqrt())
    return Solution(P.detach(), err, traj, hist)


def solve_noisy_momentum(P0: tuple[float, float] = (60.0, 30.0), *, samples: int = 256,
                         seed: int = 0, m: float = 15.0, g: float = 9.81,
                         target: tuple[float, float] = TARGET, steps: int = 10,
                         iters: int = 100, scheme: str = "talk") -> Solution:
    """Minimise the expected squared endpoint distance over ``samples`` fixed noise draws."""
    gen = torch.Generator().manual_seed(seed)
    noise = torch.randn(steps, samples, 2, generator=gen, dtype=DTYPE)
    return _solve_momentum(P0, m=m, g=g, target=target, method="lbfgs", iters=iters, lr=0.0,
                           scheme=scheme, noise=noise)


def solve_gravity(P: tuple[float, float] = (105.0, 30.0), g0: float = 9.81, *, m: float = 15.0,
                  target: tuple[float, float] = TARGET, method: str = "lbfgs",
                  iters: int = 100, lr: float = 0.1, scheme: str = "talk") -> Solution:
    """With the momentum fixed, optimise ``g`` (``(105, 30)`` reaches ``x = 7`` in 1 s with
    ``m = 15``, so the target is reachable by tuning gravity alone)."""
    g = torch.tensor(g0, dtype=DTYPE, requires_grad=True)
    Pt = torch.tensor(P, dtype=DTYPE)
    tgt = torch.tensor(target, dtype=DTYPE)

    def cost() -> Tensor:
        return ((shoot(Pt, m=m, g=g, scheme=scheme)[-1] - tgt) ** 2).sum()

    hist = _minimize(cost, [g], method, iters, lr)
    traj = shoot(Pt, m=m, g=g.detach(), scheme=scheme).detach()
    err = float((traj[-1] - tgt).norm())
    return Solution(g.detach(), err, traj, hist)


def _save_figure(fig, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=path.suffix, dir=path.parent)
    os.close(fd)
    try:
        fig.savefig(tmp, dpi=120, bbox_inches="tight")
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def plot(results: dict[str, Solution], initial: Tensor, initial_g: Tensor, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2), sharey=True)
    tx, ty = TARGET
    sol = results["momentum"]
    ax = axes[0]
    ax.plot(*initial.T, "o--", color="0.6", label="initial P = (60, 30)")
    ax.plot(*sol.trajectory.T, "o-", color="C0",
            label=f"optimal P = ({sol.value[0]:.2f}, {sol.value[1]:.2f})")
    ax.set_title(f"noiseless: endpoint error {sol.endpoint_error:.1e}")
    noisy = results["noisy"]
    ax = axes[1]
    for k in range(min(40, noisy.trajectory.shape[1])):
        ax.plot(*noisy.trajectory[:, k].T, "-", color="C1", alpha=0.25, lw=1)
    ax.plot(*sol.trajectory.T, "-", color="C0", lw=2, label="noiseless optimum")
    ax.set_title(f"noisy command: P = ({noisy.value[0]:.1f}, {noisy.value[1]:.1f}), "
                 f"RMS error {noisy.endpoint_error:.2f}")
    grav = results["gravity"]
    ax = axes[2]
    ax.plot(*initial_g.T, "o--", color="0.6", label="g = 9.81")
    ax.plot(*grav.trajectory.T, "o-", color="C2", label=f"optimal g = {float(grav.value):.3f}")
    ax.set_title(f"gravity, P = (105, 30): endpoint error {grav.endpoint_error:.1e}")
    for ax in axes:
        ax.plot([SOURCE[0]], [SOURCE[1]], "ks", label="source")
        ax.plot([tx], [ty], "r*", ms=14, label="target")
        ax.set_xlabel("x")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="lower center")
    axes[0].set_ylabel("height")
    _save_figure(fig, path)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--output", type=Path, default=ROOT / "assets" / "figures" / "ballistic.png")
    ap.add_argument("--no-plot", action="store_true")
    ap.add_argument("--samples", type=int, default=256, help="noise draws (noisy problem)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--method", choices=["lbfgs", "gd"], default="lbfgs",
                    help="optimiser for the noiseless problem (gd: the talk's lr=5 loop)")
    ap.add_argument("--scheme", choices=["talk", "symplectic"], default="talk")
    args = ap.parse_args(argv)

    sol = _solve_momentum((60.0, 30.0), m=15.0, g=9.81, target=TARGET, method=args.method,
                          iters=100, lr=5.0, scheme=args.scheme)
    P, err = sol.value, sol.endpoint_error
    print(f"noiseless : P = ({P[0]:.6f}, {P[1]:.6f}), endpoint error {err:.2e} "
          f"({len(sol.history)} cost evaluations)")
    noisy = solve_noisy_momentum(samples=args.samples, seed=args.seed, scheme=args.scheme)
    print(f"noisy     : P = ({noisy.value[0]:.4f}, {noisy.value[1]:.4f}), RMS endpoint error "
          f"{noisy.endpoint_error:.4f} over {args.samples} draws")
    grav = solve_gravity(scheme=args.scheme)
    print(f"gravity   : g = {float(grav.value):.6f} with P = (105, 30), endpoint error "
          f"{grav.endpoint_error:.2e}")
    if not args.no_plot:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            print("matplotlib not installed (pip install 'difftransforms[examples]'): no plot",
                  file=sys.stderr)
            return 0
        initial = shoot(torch.tensor([60.0, 30.0], dtype=DTYPE), scheme=args.scheme).detach()
        initial_g = shoot(torch.tensor([105.0, 30.0], dtype=DTYPE), scheme=args.scheme).detach()
        plot({"momentum": sol, "noisy": noisy, "gravity": grav}, initial, initial_g,
             args.output)
        print(f"saved {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
