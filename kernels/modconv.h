// Shared declarations and argument checks of the difftransforms modulus-convolution ops.
//
// Conventions (identical to difftransforms/ops/modconv_reference.py):
//   xhat    (N, H, Wr) complex, Wr = W/2 + 1: torch.fft.rfft2 half spectrum of a real signal;
//           X[u, v] for v >= Wr is conj(xhat[(H - u) % H, W - v]) (Hermitian symmetry).
//   filters (F, H, W) real (float32 with complex64, float64 with complex128).
//   k       fold factor dividing H and W.
//   filter_fold(xhat, filters, W, k) -> out (N, F, H/k, W/k) complex,
//     out[n, f, u, v] = 1/k^2 sum_{a,b<k} filters[f, u + aH/k, v + bW/k] X[n, u + aH/k, v + bW/k]
//   filter_fold_backward(grad, filters, k) -> grad_xhat (N, H, Wr): the real-linear adjoint of
//     filter_fold in xhat (PyTorch's conjugate-Wirtinger convention): tile grad to (H, W),
//     multiply by the filters, add the direct term and the conjugated mirror term.
//   modulus(z) -> |z| (real);  modulus_backward(grad, z) -> grad * z / |z| (0 where z == 0).
#pragma once

#include "modconv_shape.h"

#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

#include <cstdint>

namespace difftransforms {


inline FoldShape check_filter_fold(const at::Tensor& xhat, const at::Tensor& filters,
                                   int64_t width, int64_t k) {
  TORCH_CHECK(xhat.dim() == 3, "filter_fold: xhat must be (N, H, W//2+1), got ", xhat.sizes());
  TORCH_CHECK(filters.dim() == 3, "filter_fold: filters must be (F, H, W), got ",
              filters.sizes());
  TORCH_CHECK(xhat.is_complex(), "filter_fold: xhat must be complex, got ", xhat.scalar_type());
  TORCH_CHECK(filters.scalar_type() == at::kFloat || filters.scalar_type() == at::kDouble,
              "filter_fold: filters must be float32 or float64, got ", filters.scalar_type());
  TORCH_CHECK(xhat.scalar_type() == c10::toComplexType(filters.scalar_type()),
              "filter_fold: xhat dtype ", xhat.scalar_type(), " does not match filters dtype ",
              filters.scalar_type(), " (complex64 goes with float32, complex128 with float64)");
  TORCH_CHECK(xhat.device() == filters.device(), "filter_fold: xhat is on ", xhat.device(),
              " but filters are on ", filters.device());
  FoldShape s{};
  s.N = xhat.size(0);
  s.H = xhat.size(1);
  s.Wr = xhat.size(2);
  s.F = filters.size(0);
  s.W = width;
  s.k = k;
  TORCH_CHECK(width >= 1 && s.Wr == width / 2 + 1, "filter_fold: xhat has ", s.Wr,
              " columns; expected width // 2 + 1 = ", width / 2 + 1, " for width ", width);
  TORCH_CHECK(filters.size(1) == s.H && filters.size(2) == width,
              "filter_fold: filters have spatial shape ", filters.sizes().slice(1),
              ", expected (", s.H, ", ", width, ")");
  TORCH_CHECK(k >= 1 && s.H % k == 0 && width % k == 0, "filter_fold: fold factor k=", k,
              " must divide the spectrum size (", s.H, ", ", width, ")");
  s.Hk = s.H / k;
  s.Wk = width / k;
  return s;
}

inline FoldShape check_filter_fold_backward(const at::Tensor& grad, const at::Tensor& filters,
                                            int64_t k) {
  TORCH_CHECK(grad.dim() == 4, "filter_fold_backward: grad must be (N, F, H/k, W/k), got ",
              grad.sizes());
  TORCH_CHECK(filters.dim() == 3, "filter_fold_backward: filters must be (F, H, W), got ",
              filters.sizes());
  TORCH_CHECK(filters.scalar_type() == at::kFloat || filters.scalar_type() == at::kDouble,
              "filter_fold_backward: filters must be float32 or float64, got ",
              filters.scalar_type());
  TORCH_CHECK(grad.scalar_type() == c10::toComplexType(filters.scalar_type()),
              "filter_fold_backward: grad dtype ", grad.scalar_type(),
              " does not match filters dtype ", filters.scalar_type());
  TORCH_CHECK(grad.device() == filters.device(), "filter_fold_backward: grad is on ",
              grad.device(), " but filters are on ", filters.device());
  FoldShape s{};
  s.N = grad.size(0);
  s.F = filters.size(0);
  s.H = filters.size(1);
  s.W = filters.size(2);
  s.Wr = s.W / 2 + 1;
  s.k = k;
  TORCH_CHECK(k >= 1 && s.H % k == 0 && s.W % k == 0, "filter_fold_backward: fold factor k=", k,
              " must divide the filter size (", s.H, ", ", s.W, ")");
  s.Hk = s.H / k;
  s.Wk = s.W / k;
  TORCH_CHECK(grad.size(1) == s.F && grad.size(2) == s.Hk && grad.size(3) == s.Wk,
              "filter_fold_backward: grad has shape ", grad.sizes(), ", expected (N, ", s.F,
              ", ", s.Hk, ", ", s.Wk, ")");
  return s;
}

// (F, k, k) bool: whether filters[f] has a non-zero value on the aliased block (a, b), i.e.
// rows [a H/k, (a+1) H/k) x columns [b W/k, (b+1) W/k). The kernels skip the dead blocks.
inline at::Tensor live_blocks(const at::Tensor& filters, const FoldShape& s) {
  return filters.reshape({s.F, s.k, s.Hk, s.k, s.Wk}).ne(0).any(4).any(2).contiguous();
}

inline void check_modulus(const at::Tensor& z) {
  TORCH_CHECK(z.scalar_type() == at::kComplexFloat || z.scalar_type() == at::kComplexDouble,
              "modulus: z must be complex64 or complex128, got ", z.scalar_type());
}

inline void check_modulus_backward(const at::Tensor& grad, const at::Tensor& z) {
  check_modulus(z);
  TORCH_CHECK(grad.scalar_type() == c10::toRealValueType(z.scalar_type()),
              "modulus_backward: grad dtype ", grad.scalar_type(), " does not match z dtype ",
              z.scalar_type());
  TORCH_CHECK(grad.sizes() == z.sizes(), "modulus_backward: grad shape ", grad.sizes(),
              " differs from z shape ", z.sizes());
  TORCH_CHECK(grad.device() == z.device(), "modulus_backward: grad is on ", grad.device(),
              " but z is on ", z.device());
}

}  // namespace difftransforms
