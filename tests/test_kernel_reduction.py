"""Kernel reductions vs the naive dense PyTorch computation (value, gradients), gradcheck,
gradgradcheck, linear memory, block-sparse error bound, MMD and feature MMD."""

from __future__ import annotations

import pytest
import torch
from torch.autograd import gradcheck, gradgradcheck

from difftransforms.ops import feature_mmd, kernel_norm, kernel_sum, median_heuristic, mmd
from difftransforms.ops.kernel_cluster import block_sparse_plan, kd_order
from difftransforms.ops.kernel_reduction import KERNELS, KernelSum, MMDLoss, sparsity_stats

F64 = torch.float64


def dense_kernel(x, y, kernel, sigma):
    """Outside reference: the dense N x M matrix from explicit differences (no GEMM trick)."""
    r2 = ((x[..., :, None, :] - y[..., None, :, :]) ** 2).sum(-1)
    if kernel == "gaussian":
        return torch.exp(-r2 / sigma**2)
    # sqrt with a zero gradient at r = 0 (the documented convention), computed independently
    pos = r2 > 0
    r = torch.where(pos, torch.sqrt(torch.where(pos, r2, torch.ones_like(r2))), 0.0)
    return torch.exp(-r / sigma) if kernel == "laplacian" else -r


def dense_sum(x, y, b, kernel, sigma):
    return dense_kernel(x, y, kernel, sigma) @ b


def _grads(out, inputs, g):
    gr = torch.autograd.grad(out, inputs, g, allow_unused=True)
    return [torch.zeros_like(i) if v is None else v for v, i in zip(gr, inputs, strict=False)]


@pytest.mark.parametrize("kernel", KERNELS)
def test_kernel_sum_matches_dense(kernel, device, dtype):
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, 67, 3, generator=gen, dtype=dtype).to(device).requires_grad_()
    y = torch.randn(2, 45, 3, generator=gen, dtype=dtype).to(device).requires_grad_()
    b = torch.randn(2, 45, 2, generator=gen, dtype=dtype).to(device).requires_grad_()
    s = torch.tensor(0.9, dtype=dtype, device=device, requires_grad=True)
    a = kernel_sum(x, y, b, kernel, s, block_size=16)  # 5 x 3 tiles, ragged edges
    ref = dense_sum(x, y, b, kernel, s)
    tol = dict(rtol=1e-4, atol=1e-4) if dtype == torch.float32 else dict(rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(a, ref, **tol)
    g = torch.randn_like(a)
    for ours, theirs in zip(_grads(a, [x, y, b, s], g), _grads(ref, [x, y, b, s], g), strict=False):
        torch.testing.assert_close(ours, theirs, **tol)


@pytest.mark.parametrize("kernel", KERNELS)
def test_kernel_sum_gradcheck_and_gradgradcheck(kernel):
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(1, 6, 2, generator=gen, dtype=F64, requires_grad=True)
    y = torch.randn(1, 5, 2, generator=gen, dtype=F64, requires_grad=True)
    b = torch.randn(1, 5, 3, generator=gen, dtype=F64, requires_grad=True)
    s = torch.tensor(0.8, dtype=F64, requires_grad=True)

    def f(x, y, b, s):
        return kernel_sum(x, y, b, kernel, s, block_size=4)

    assert gradcheck(f, (x, y, b, s))
    assert gradgradcheck(f, (x, y, b, s))


def test_third_order_derivative_matches_dense():
    """The tile reduction is closed under differentiation: 3rd derivatives still agree."""
    x = torch.randn(7, 2, dtype=F64, requires_grad=True)
    b = torch.randn(7, 1, dtype=F64)

    def third(fn):
        h = fn(x)
        (g1,) = torch.autograd.grad(h, x, create_graph=True)
        (g2,) = torch.autograd.grad(g1.pow(2).sum(), x, create_graph=True)
        (g3,) = torch.autograd.grad(g2.sin().sum(), x)
        return g3

    ours = third(lambda x: (kernel_sum(x, x, b, "gaussian", 1.3, block_size=3) * b).sum())
    ref = third(lambda x: (dense_sum(x, x, b, "gaussian", 1.3) * b).sum())
    torch.testing.assert_close(ours, ref, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("kernel", KERNELS)
def test_kernel_norm_matches_dense(kernel, dtype):
    gen = torch.Generator().manual_seed(2)
    q = torch.randn(3, 50, 3, generator=gen, dtype=dtype, requires_grad=True)
    p = torch.randn(3, 50, 2, generator=gen, dtype=dtype, requires_grad=True)
    s = torch.tensor(1.1, dtype=dtype, requires_grad=True)
    h = kernel_norm(q, p, s, kernel, block_size=16)
    ref = 0.5 * (p * dense_sum(q, q, p, kernel, s)).sum((-2, -1))
    assert h.shape == (3,)
    tol = dict(rtol=1e-4, atol=1e-3) if dtype == torch.float32 else dict(rtol=1e-10, atol=1e-9)
    torch.testing.assert_close(h, ref, **tol)
    g = torch.randn_like(h)
    for ours, theirs in zip(_grads(h, [q, p, s], g), _grads(ref, [q, p, s], g), strict=False):
        torch.testing.assert_close(ours, theirs, **tol)


@pytest.mark.parametrize("kernel", KERNELS)
def test_kernel_norm_gradgradcheck(kernel):
    gen = torch.Generator().manual_seed(3)
    q = torch.randn(6, 2, generator=gen, dtype=F64, requires_grad=True)
    p = torch.randn(6, 1, generator=gen, dtype=F64, requires_grad=True)
    s = torch.tensor(0.7, dtype=F64, requires_grad=True)

    def f(q, p, s):
        return kernel_norm(q, p, s, kernel, block_size=4)

    assert gradcheck(f, (q, p, s))
    assert gradgradcheck(f, (q, p, s))


def test_talk_example_shape_and_hamiltonian_flow():
    """The talk's H(q, p) with D = 3 and its gradient (Hamilton's equations) vs dense."""
    torch.manual_seed(0)
    q = torch.rand(1500, 3, dtype=F64, requires_grad=True)
    p = torch.rand(1500, 3, dtype=F64, requires_grad=True)
    h = kernel_norm(q, p, 1.0)
    dq, dp = torch.autograd.grad(h, [q, p])
    sqd = ((q[:, None, :] - q[None, :, :]) ** 2).sum(2)
    h_ref = 0.5 * torch.dot(p.view(-1), (torch.exp(-sqd) @ p).view(-1))
    dq_ref, dp_ref = torch.autograd.grad(h_ref, [q, p])
    torch.testing.assert_close(h, h_ref, rtol=1e-12, atol=0)
    torch.testing.assert_close(dq, dq_ref, rtol=1e-10, atol=1e-9)
    torch.testing.assert_close(dp, dp_ref, rtol=1e-10, atol=1e-9)


@pytest.mark.parametrize("kernel", ["laplacian", "energy"])
def test_coincident_points_have_zero_gradient_no_nan(kernel, dtype):
    x = torch.tensor([[0.0, 0.0], [1.0, 2.0], [1.0, 2.0]], dtype=dtype, requires_grad=True)
    b = torch.ones(3, 1, dtype=dtype)
    a = kernel_sum(x, x, b, kernel, 1.0)
    (g,) = torch.autograd.grad(a.sum(), x)
    assert torch.isfinite(g).all()
    # the self-pairs and the duplicate pair contribute 0; only the pair (0, 1) pulls
    d = torch.tensor([1.0, 2.0], dtype=dtype)
    u = d / d.norm()
    k01 = torch.exp(-d.norm()) if kernel == "laplacian" else torch.tensor(-1.0, dtype=dtype)
    c = k01 if kernel == "laplacian" else torch.tensor(1.0, dtype=dtype)
    # d/dx0 of 2 * sum_{j=1,2} k(x0, xj) = 2 * 2 * dk/dr * (-u)
    expect0 = 4 * c * u if kernel == "laplacian" else 4 * u
    tol = dict(rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(g[0], expect0, **tol)
    h = kernel_norm(x, b, 1.0, kernel)
    (gh,) = torch.autograd.grad(h, x)
    assert torch.isfinite(gh).all()
    torch.testing.assert_close(gh[0], expect0 / 2, **tol)


def test_broadcast_batch_and_vector_weights():
    x = torch.randn(4, 10, 3, dtype=F64)
    y = torch.randn(1, 8, 3, dtype=F64)
    b = torch.randn(8, dtype=F64)
    a = kernel_sum(x, y, b, "gaussian", 2.0)
    assert a.shape == (4, 10)
    torch.testing.assert_close(a, dense_sum(x, y, b[:, None], "gaussian", 2.0)[..., 0])
    x5 = torch.randn(2, 3, 6, 2, dtype=F64)
    assert kernel_sum(x5, x5, x5, "laplacian", 1.0).shape == (2, 3, 6, 2)
    assert kernel_norm(x5, x5, 1.0).shape == (2, 3)


def test_empty_inputs():
    x = torch.zeros(0, 3)
    y = torch.randn(5, 3)
    assert kernel_sum(x, y, torch.ones(5, 2)).shape == (0, 2)
    assert kernel_sum(y, x, torch.ones(0, 2)).abs().sum() == 0


def test_bad_inputs_have_clear_errors():
    x = torch.randn(5, 3)
    with pytest.raises(ValueError, match="unknown kernel"):
        kernel_sum(x, x, x, "cauchy")
    with pytest.raises(ValueError, match="same last dimension"):
        kernel_sum(x, torch.randn(5, 2), x)
    with pytest.raises(ValueError, match="one row per point"):
        kernel_sum(x, x, torch.randn(4, 1))
    with pytest.raises(TypeError, match="floating-point"):
        kernel_sum(x.long(), x.long(), x.long())
    with pytest.raises(ValueError, match="sigma must be > 0"):
        kernel_sum(x, x, x, "gaussian", 0.0)
    with pytest.raises(ValueError, match="decaying kernel"):
        kernel_sum(x, x, x, "energy", eps=1e-3)
    with pytest.raises(ValueError, match="do not broadcast"):
        kernel_sum(torch.randn(2, 5, 3), torch.randn(3, 5, 3), torch.randn(3, 5, 1))
    with pytest.raises(ValueError, match="feature map"):
        feature_mmd(torch.randn(5), torch.randn(5))


def test_linear_memory_at_a_size_where_dense_needs_gigabytes():
    """N = M = 2e4: the kernel matrix alone is 1.6 GB (dense autograd keeps several); the
    reduction allocates tiles only."""
    import resource

    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    n = 20_000
    x = torch.rand(n, 3) * 30
    p = torch.randn(n, 1)
    xr = x.clone().requires_grad_()
    # value + gradient through the block-sparse path (~5% of the pairs)
    h = kernel_norm(xr, p, 0.3, eps=1e-4, block_size=128)
    (g,) = torch.autograd.grad(h, xr)
    assert g.shape == x.shape and torch.isfinite(g).all()
    grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert grown_mb < 500


@pytest.mark.parametrize("kernel", ["gaussian", "laplacian"])
def test_block_sparse_error_bound_and_gradients(kernel):
    gen = torch.Generator().manual_seed(4)
    x = torch.rand(3000, 2, generator=gen, dtype=F64) * 10
    y = torch.rand(2500, 2, generator=gen, dtype=F64) * 10
    b = torch.randn(2500, 2, generator=gen, dtype=F64)
    sigma = 0.3 if kernel == "gaussian" else 0.1
    exact = dense_sum(x, y, b, kernel, sigma)
    for eps in (1e-2, 1e-6):
        stats = sparsity_stats(x, y, b, kernel, sigma, eps, block_size=64)
        assert stats["bound"] <= eps
        assert stats["density"] < 0.4  # actually skips tiles
        approx = kernel_sum(x, y, b, kernel, sigma, eps=eps, block_size=64)
        err = (approx - exact).norm(dim=-1).max().item()
        assert err <= eps
    # gradients: of the approximation, close to the exact ones at a tight eps
    xr, yr, br = (t.clone().requires_grad_() for t in (x[:400], y[:300], b[:300]))
    g = torch.randn(400, 2, dtype=F64)
    ours = _grads(kernel_sum(xr, yr, br, kernel, sigma, eps=1e-9, block_size=64), [xr, yr, br], g)
    ref = _grads(dense_sum(xr, yr, br, kernel, sigma), [xr, yr, br], g)
    for o, r in zip(ours, ref, strict=False):
        torch.testing.assert_close(o, r, rtol=1e-6, atol=1e-6)


def test_block_sparse_plan_skips_far_blocks():
    x = torch.cat([torch.zeros(300, 2), torch.full((300, 2), 100.0)])
    x = x + 0.01 * torch.randn(600, 2)
    xs = x[kd_order(x, 100)]
    plan, stats = block_sparse_plan(xs, xs, torch.ones(600, 1), "gaussian", 1.0, 1e-6, block=100)
    assert stats["density"] == pytest.approx(0.5, abs=0.1)
    assert plan.n_pairs() == int(stats["density"] * 600 * 600)


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("biased", [True, False])
def test_mmd_matches_dense(kernel, biased):
    gen = torch.Generator().manual_seed(5)
    x = torch.randn(40, 3, generator=gen, dtype=F64, requires_grad=True)
    y = (torch.randn(30, 3, generator=gen, dtype=F64) + 0.5).requires_grad_()
    kxx = dense_kernel(x, x, kernel, 0.9)
    kyy = dense_kernel(y, y, kernel, 0.9)
    kxy = dense_kernel(x, y, kernel, 0.9)
    if biased:
        ref = kxx.mean() + kyy.mean() - 2 * kxy.mean()
    else:
        off = lambda k: (k.sum() - k.diagonal().sum()) / (k.shape[0] * (k.shape[0] - 1))  # noqa
        ref = off(kxx) + off(kyy) - 2 * kxy.mean()
    ours = mmd(x, y, kernel, 0.9, biased=biased)
    torch.testing.assert_close(ours, ref, rtol=1e-10, atol=1e-12)
    for o, r in zip(_grads(ours, [x, y], None), _grads(ref, [x, y], None), strict=False):
        torch.testing.assert_close(o, r, rtol=1e-9, atol=1e-12)


def test_mmd_properties():
    x = torch.randn(300, 2, dtype=F64)
    assert abs(mmd(x, x).item()) < 1e-12
    assert mmd(x, x + 3.0).item() > 0.2
    # the energy distance of two point masses at distance d is 2 d
    e = mmd(torch.zeros(1, 2, dtype=F64), torch.tensor([[3.0, 4.0]], dtype=F64), "energy")
    assert e.item() == pytest.approx(10.0)
    assert mmd(torch.randn(5, 4, 20, 2), torch.randn(1, 30, 2)).shape == (5, 4)


def test_median_heuristic_and_feature_mmd(dtype):
    gen = torch.Generator().manual_seed(6)
    z = torch.randn(50, 3, generator=gen, dtype=dtype)
    ref = torch.pdist(z).median()
    torch.testing.assert_close(median_heuristic(z), ref)
    fx = torch.rand(2, 4, 12, 12, generator=gen, dtype=dtype, requires_grad=True)
    fy = torch.rand(1, 4, 10, 10, generator=gen, dtype=dtype)
    loss = feature_mmd(fx, fy, 0.5)
    pts_x = fx.flatten(2).transpose(1, 2)
    pts_y = fy.flatten(2).transpose(1, 2)
    ref = torch.stack([mmd_dense(pts_x[i], pts_y[0], 0.5) for i in range(2)]).mean()
    torch.testing.assert_close(loss, ref, rtol=1e-4, atol=1e-6)
    (g,) = torch.autograd.grad(loss, fx)
    assert torch.isfinite(g).all() and g.abs().sum() > 0
    # subsampling is reproducible with a generator, and the median sigma is detached
    a = feature_mmd(fx, fy, max_points=50, generator=torch.Generator().manual_seed(1))
    b = feature_mmd(fx, fy, max_points=50, generator=torch.Generator().manual_seed(1))
    assert a.item() == b.item()
    assert MMDLoss(max_points=50)(fx, fy).requires_grad
    assert feature_mmd(fx, fy, reduction="none").shape == (2,)


def mmd_dense(x, y, sigma):
    return (dense_kernel(x, x, "gaussian", sigma).mean() + dense_kernel(y, y, "gaussian", sigma)
            .mean() - 2 * dense_kernel(x, y, "gaussian", sigma).mean())


def test_kernel_sum_module_learnable_sigma():
    m = KernelSum("gaussian", 0.5, learnable=True)
    x = torch.randn(20, 2)
    out = m(x, x, torch.ones(20, 1)).sum()
    out.backward()
    assert m.log_sigma.grad is not None and m.log_sigma.grad.abs() > 0


def test_half_precision_is_refused_clearly():
    x = torch.zeros(1, 2)
    y = torch.full((100, 2), 10.0) + torch.rand(100, 2)
    b = torch.ones(100, 1)
    for t in (torch.float16, torch.bfloat16):
        with pytest.raises(TypeError, match="float32 or float64.*x.float"):
            kernel_sum(x.to(t), y.to(t), b.to(t))


def test_vector_weights_rule_does_not_depend_on_batch_size():
    """b with one dimension fewer than y and M entries last is per-point scalars, also when
    the batch size happens to equal M (it used to switch to (M, E) weights then)."""
    g = torch.Generator().manual_seed(0)
    for B in (4, 5, 6):
        x = torch.randn(B, 4, 3, generator=g, dtype=torch.float64)
        y = torch.randn(B, 5, 3, generator=g, dtype=torch.float64)
        b = torch.randn(B, 5, generator=g, dtype=torch.float64)
        a = kernel_sum(x, y, b, sigma=0.7)
        assert a.shape == (B, 4)
        dense = torch.exp(-torch.cdist(x, y) ** 2 / 0.7**2) @ b[..., None]
        torch.testing.assert_close(a, dense[..., 0])


def test_median_heuristic_with_coincident_points_uses_the_cloud_scale():
    z = torch.tensor([[0.0], [0.0], [0.0], [0.0], [0.01]])
    assert float(median_heuristic(z)) == pytest.approx(0.01)
    assert float(median_heuristic(torch.zeros(4, 2))) == 1.0


def test_kernel_sum_module_rejects_bad_sigma():
    from difftransforms.ops import KernelSum

    for bad in (0.0, -1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="sigma must be a finite number > 0"):
            KernelSum(sigma=bad)
