// difftransforms custom ops: torch glue of the CUDA kernels (host compiler).
//
// Checks arguments (modconv.h), allocates outputs, launches the kernels of modconv_cuda.cu on
// the current stream and registers them: TORCH_LIBRARY_IMPL(difftransforms, CUDA, m).

#define DIFFTRANSFORMS_DECLARE_CUDA_LAUNCHERS
#include "modconv.h"

#include <ATen/Dispatch.h>
#include <ATen/ops/empty.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <cuda_runtime_api.h>
#include <torch/library.h>

namespace difftransforms {
namespace {

void check_launch(int err, const char* op) {
  TORCH_CHECK(err == 0, op, ": CUDA kernel launch failed: ",
              cudaGetErrorString(static_cast<cudaError_t>(err)));
}

void* current_stream() {
  return static_cast<void*>(c10::cuda::getCurrentCUDAStream().stream());
}

at::Tensor filter_fold_cuda(const at::Tensor& xhat, const at::Tensor& filters, int64_t width,
                            int64_t k) {
  const FoldShape s = check_filter_fold(xhat, filters, width, k);
  TORCH_CHECK(xhat.is_cuda(), "filter_fold (CUDA kernel): xhat must be a CUDA tensor");
  const c10::cuda::CUDAGuard guard(xhat.device());
  const at::Tensor x = xhat.resolve_conj().resolve_neg().contiguous();
  const at::Tensor f = filters.resolve_conj().resolve_neg().contiguous();
  at::Tensor out = at::empty({s.N, s.F, s.Hk, s.Wk}, xhat.options());
  if (out.numel() == 0) return out;
  const at::Tensor live = live_blocks(f, s);
  AT_DISPATCH_FLOATING_TYPES(f.scalar_type(), "filter_fold_cuda", [&] {
    check_launch(launch_filter_fold<scalar_t>(
                     static_cast<const scalar_t*>(x.const_data_ptr()),
                     f.const_data_ptr<scalar_t>(), live.const_data_ptr<bool>(),
                     static_cast<scalar_t*>(out.mutable_data_ptr()), s, current_stream()),
                 "filter_fold");
  });
  return out;
}

at::Tensor filter_fold_backward_cuda(const at::Tensor& grad, const at::Tensor& filters,
                                     int64_t k) {
  const FoldShape s = check_filter_fold_backward(grad, filters, k);
  TORCH_CHECK(grad.is_cuda(), "filter_fold_backward (CUDA kernel): grad must be a CUDA tensor");
  const c10::cuda::CUDAGuard guard(grad.device());
  const at::Tensor g = grad.resolve_conj().resolve_neg().contiguous();
  const at::Tensor f = filters.resolve_conj().resolve_neg().contiguous();
  at::Tensor gx = at::empty({s.N, s.H, s.Wr}, grad.options());
  if (gx.numel() == 0) return gx;
  if (s.F == 0) return gx.zero_();
  const at::Tensor live = live_blocks(f, s);
  AT_DISPATCH_FLOATING_TYPES(f.scalar_type(), "filter_fold_backward_cuda", [&] {
    check_launch(launch_filter_fold_backward<scalar_t>(
                     static_cast<const scalar_t*>(g.const_data_ptr()),
                     f.const_data_ptr<scalar_t>(), live.const_data_ptr<bool>(),
                     static_cast<scalar_t*>(gx.mutable_data_ptr()), s, current_stream()),
                 "filter_fold_backward");
  });
  return gx;
}

at::Tensor modulus_cuda(const at::Tensor& z) {
  check_modulus(z);
  TORCH_CHECK(z.is_cuda(), "modulus (CUDA kernel): z must be a CUDA tensor");
  const c10::cuda::CUDAGuard guard(z.device());
  const at::Tensor zc = z.resolve_conj().resolve_neg().contiguous();
  at::Tensor out = at::empty(z.sizes(), z.options().dtype(c10::toRealValueType(z.scalar_type())));
  AT_DISPATCH_FLOATING_TYPES(out.scalar_type(), "modulus_cuda", [&] {
    check_launch(launch_modulus<scalar_t>(static_cast<const scalar_t*>(zc.const_data_ptr()),
                                          out.mutable_data_ptr<scalar_t>(), out.numel(),
                                          current_stream()),
                 "modulus");
  });
  return out;
}

at::Tensor modulus_backward_cuda(const at::Tensor& grad, const at::Tensor& z) {
  check_modulus_backward(grad, z);
  TORCH_CHECK(z.is_cuda(), "modulus_backward (CUDA kernel): z must be a CUDA tensor");
  const c10::cuda::CUDAGuard guard(z.device());
  const at::Tensor gc = grad.resolve_conj().resolve_neg().contiguous();
  const at::Tensor zc = z.resolve_conj().resolve_neg().contiguous();
  at::Tensor gz = at::empty(z.sizes(), z.options());
  AT_DISPATCH_FLOATING_TYPES(gc.scalar_type(), "modulus_backward_cuda", [&] {
    check_launch(launch_modulus_backward<scalar_t>(
                     gc.const_data_ptr<scalar_t>(),
                     static_cast<const scalar_t*>(zc.const_data_ptr()),
                     static_cast<scalar_t*>(gz.mutable_data_ptr()), gc.numel(),
                     current_stream()),
                 "modulus_backward");
  });
  return gz;
}

}  // namespace

TORCH_LIBRARY_IMPL(difftransforms, CUDA, m) {
  m.impl("filter_fold", &filter_fold_cuda);
  m.impl("filter_fold_backward", &filter_fold_backward_cuda);
  m.impl("modulus", &modulus_cuda);
  m.impl("modulus_backward", &modulus_backward_cuda);
}

}  // namespace difftransforms
