"""Public entry points of the scattering hot step: ``filter_fold`` and ``modulus``.

Dispatches to the compiled C++/CUDA custom ops (``torch.ops.difftransforms``) when they
are available, else to the pure-PyTorch reference in :mod:`.modconv_reference`.
Same signatures, same results (see that module for the exact conventions).

NOTE: this first version always uses the reference; the compiled backend is wired in
by the kernels work (issue 4).
"""

from __future__ import annotations

from torch import Tensor

from .modconv_reference import filter_fold_reference, modulus_reference


def filter_fold(xhat: Tensor, filters: Tensor, width: int, k: int) -> Tensor:
    """``(N, H, W//2+1)`` complex half spectrum x ``(F, H, W)`` real filters ->
    ``(N, F, H//k, W//k)`` complex folded product. See :mod:`.modconv_reference`."""
    return filter_fold_reference(xhat, filters, width, k)


def modulus(z: Tensor) -> Tensor:
    """``|z|`` with the stable gradient ``z/|z|`` (0 at ``z == 0``)."""
    return modulus_reference(z)
