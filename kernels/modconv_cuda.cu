// difftransforms custom ops: CUDA kernels (TORCH_LIBRARY_IMPL CUDA).
//
// Built as a separate extension, loaded after the CPU extension (modconv.cpp) that defines the
// schemas. See modconv.h for the conventions.
//
// filter_fold: one thread per output element (n, f, u, v), v fastest (coalesced), summing its
// k^2 aliases; reads of the mirrored half (v >= W/2 + 1) use Hermitian symmetry. Nothing of
// size (N, F, H, W) is ever allocated.
// filter_fold_backward: one thread per grad_xhat element (n, p, q), q fastest, summing over
// the F filters the direct and the conjugated mirror contributions: no atomics.

#include "modconv.h"

#include <ATen/Dispatch.h>
#include <c10/cuda/CUDAStream.h>
#include <ATen/ops/empty.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/util/complex.h>
#include <torch/library.h>

#include <algorithm>

namespace difftransforms {
namespace {

constexpr int kThreads = 256;

inline unsigned int num_blocks(int64_t total) {
  const int64_t blocks = (total + kThreads - 1) / kThreads;
  return static_cast<unsigned int>(std::min<int64_t>(std::max<int64_t>(blocks, 1), 1 << 20));
}

template <typename T>
__global__ void filter_fold_cuda_kernel(const c10::complex<T>* __restrict__ X,
                                        const T* __restrict__ filt,
                                        c10::complex<T>* __restrict__ out, const FoldShape s,
                                        const int64_t total) {
  const T scale = T(1) / T(s.k * s.k);
  for (int64_t idx = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; idx < total;
       idx += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t vp = idx % s.Wk;
    int64_t t = idx / s.Wk;
    const int64_t up = t % s.Hk;
    t /= s.Hk;
    const int64_t f = t % s.F;
    const int64_t n = t / s.F;
    T re = 0, im = 0;
    for (int64_t a = 0; a < s.k; ++a) {
      const int64_t p = up + a * s.Hk;
      const int64_t pm = (s.H - p) % s.H;
      const T* frow = filt + (f * s.H + p) * s.W;
      const c10::complex<T>* xrow = X + (n * s.H + p) * s.Wr;
      const c10::complex<T>* xmrow = X + (n * s.H + pm) * s.Wr;
      for (int64_t b = 0; b < s.k; ++b) {
        const int64_t q = vp + b * s.Wk;
        const T w = frow[q];
        if (q < s.Wr) {
          const c10::complex<T> x = xrow[q];
          re += w * x.real();
          im += w * x.imag();
        } else {  // X[p, q] = conj(xhat[pm, W - q])
          const c10::complex<T> x = xmrow[s.W - q];
          re += w * x.real();
          im -= w * x.imag();
        }
      }
    }
    out[idx] = c10::complex<T>(re * scale, im * scale);
  }
}

template <typename T>
__global__ void filter_fold_backward_cuda_kernel(const c10::complex<T>* __restrict__ G,
                                                 const T* __restrict__ filt,
                                                 c10::complex<T>* __restrict__ gx,
                                                 const FoldShape s, const int64_t total) {
  const T scale = T(1) / T(s.k * s.k);
  for (int64_t idx = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; idx < total;
       idx += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t q = idx % s.Wr;
    const int64_t t = idx / s.Wr;
    const int64_t p = t % s.H;
    const int64_t n = t / s.H;
    const int64_t pm = (s.H - p) % s.H;
    const int64_t up = p % s.Hk;
    const int64_t upm = pm % s.Hk;
    const int64_t vq = q % s.Wk;
    const bool mirror = q >= 1 && q <= s.W - s.Wr;  // column W - q is not stored
    const int64_t qq = s.W - q;
    const int64_t vqq = qq % s.Wk;
    T re = 0, im = 0;
    for (int64_t f = 0; f < s.F; ++f) {
      const c10::complex<T>* gbase = G + (n * s.F + f) * s.Hk * s.Wk;
      const T w = filt[(f * s.H + p) * s.W + q];
      const c10::complex<T> g = gbase[up * s.Wk + vq];
      re += w * g.real();
      im += w * g.imag();
      if (mirror) {
        const T wm = filt[(f * s.H + pm) * s.W + qq];
        const c10::complex<T> gm = gbase[upm * s.Wk + vqq];
        re += wm * gm.real();
        im -= wm * gm.imag();
      }
    }
    gx[idx] = c10::complex<T>(re * scale, im * scale);
  }
}

__device__ inline float hypot_(float a, float b) { return ::hypotf(a, b); }
__device__ inline double hypot_(double a, double b) { return ::hypot(a, b); }

template <typename T>
__global__ void modulus_cuda_kernel(const c10::complex<T>* __restrict__ z, T* __restrict__ out,
                                    const int64_t total) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const c10::complex<T> v = z[i];
    out[i] = hypot_(v.real(), v.imag());
  }
}

template <typename T>
__global__ void modulus_backward_cuda_kernel(const T* __restrict__ g,
                                             const c10::complex<T>* __restrict__ z,
                                             c10::complex<T>* __restrict__ gz,
                                             const int64_t total) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const c10::complex<T> v = z[i];
    const T r = hypot_(v.real(), v.imag());
    const T c = r > T(0) ? g[i] / r : T(0);  // stable: 0 at z == 0, never NaN
    gz[i] = c10::complex<T>(c * v.real(), c * v.imag());
  }
}

at::Tensor filter_fold_cuda(const at::Tensor& xhat, const at::Tensor& filters, int64_t width,
                            int64_t k) {
  const FoldShape s = check_filter_fold(xhat, filters, width, k);
  TORCH_CHECK(xhat.is_cuda(), "filter_fold (CUDA kernel): xhat must be a CUDA tensor");
  const c10::cuda::CUDAGuard guard(xhat.device());
  const at::Tensor x = xhat.resolve_conj().resolve_neg().contiguous();
  const at::Tensor f = filters.resolve_conj().resolve_neg().contiguous();
  at::Tensor out = at::empty({s.N, s.F, s.Hk, s.Wk}, xhat.options());
  const int64_t total = out.numel();
  if (total == 0) return out;
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES(f.scalar_type(), "filter_fold_cuda", [&] {
    using C = c10::complex<scalar_t>;
    filter_fold_cuda_kernel<scalar_t><<<num_blocks(total), kThreads, 0, stream>>>(
        static_cast<const C*>(x.const_data_ptr()), f.const_data_ptr<scalar_t>(),
        static_cast<C*>(out.mutable_data_ptr()), s, total);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
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
  const int64_t total = gx.numel();
  if (total == 0) return gx;
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES(f.scalar_type(), "filter_fold_backward_cuda", [&] {
    using C = c10::complex<scalar_t>;
    filter_fold_backward_cuda_kernel<scalar_t><<<num_blocks(total), kThreads, 0, stream>>>(
        static_cast<const C*>(g.const_data_ptr()), f.const_data_ptr<scalar_t>(),
        static_cast<C*>(gx.mutable_data_ptr()), s, total);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return gx;
}

at::Tensor modulus_cuda(const at::Tensor& z) {
  check_modulus(z);
  TORCH_CHECK(z.is_cuda(), "modulus (CUDA kernel): z must be a CUDA tensor");
  const c10::cuda::CUDAGuard guard(z.device());
  const at::Tensor zc = z.resolve_conj().resolve_neg().contiguous();
  at::Tensor out = at::empty(z.sizes(), z.options().dtype(c10::toRealValueType(z.scalar_type())));
  const int64_t total = out.numel();
  if (total == 0) return out;
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES(out.scalar_type(), "modulus_cuda", [&] {
    using C = c10::complex<scalar_t>;
    modulus_cuda_kernel<scalar_t><<<num_blocks(total), kThreads, 0, stream>>>(
        static_cast<const C*>(zc.const_data_ptr()), out.mutable_data_ptr<scalar_t>(), total);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
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
  const int64_t total = gz.numel();
  if (total == 0) return gz;
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES(gc.scalar_type(), "modulus_backward_cuda", [&] {
    using C = c10::complex<scalar_t>;
    modulus_backward_cuda_kernel<scalar_t><<<num_blocks(total), kThreads, 0, stream>>>(
        gc.const_data_ptr<scalar_t>(), static_cast<const C*>(zc.const_data_ptr()),
        static_cast<C*>(gz.mutable_data_ptr()), total);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
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
