// difftransforms custom ops: schemas (TORCH_LIBRARY) and CPU kernels (TORCH_LIBRARY_IMPL CPU).
//
// See modconv.h for the exact conventions. The CUDA kernels live in a separate extension
// (modconv_cuda.cu) so that CPU-only machines never need nvcc; that extension only registers
// CUDA implementations of the schemas defined here.
//
// Layout: complex tensors are read as interleaved (re, im) pairs of the real scalar type.
// filter_fold never materialises the (N, F, H, W) full-resolution product: each (f, block of n)
// task accumulates the k^2 aliases straight into its (H/k, W/k) output tile.

#include "modconv.h"

#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <type_traits>

namespace difftransforms {
namespace {

// Number of signals sharing one read of a filter row (keeps that row in L1).
constexpr int64_t kNBlock = 4;

template <typename T>
void filter_fold_cpu_kernel(const T* __restrict X, const T* __restrict filt, T* __restrict out,
                            const FoldShape s) {
  const int64_t nblocks = (s.N + kNBlock - 1) / kNBlock;
  const T scale = T(1) / T(s.k * s.k);
  const int64_t tile = s.Hk * s.Wk * 2;
  at::parallel_for(0, s.F * nblocks, 1, [&](int64_t begin, int64_t end) {
    for (int64_t item = begin; item < end; ++item) {
      const int64_t f = item / nblocks;
      const int64_t n0 = (item % nblocks) * kNBlock;
      const int64_t n1 = std::min(s.N, n0 + kNBlock);
      const T* fbase = filt + f * s.H * s.W;
      for (int64_t n = n0; n < n1; ++n) {
        std::fill_n(out + (n * s.F + f) * tile, tile, T(0));
      }
      for (int64_t up = 0; up < s.Hk; ++up) {
        for (int64_t a = 0; a < s.k; ++a) {
          const int64_t p = up + a * s.Hk;
          const int64_t pm = (s.H - p) % s.H;  // row of the Hermitian mirror
          const T* __restrict frow = fbase + p * s.W;
          for (int64_t b = 0; b < s.k; ++b) {
            const int64_t q0 = b * s.Wk;
            const int64_t q1 = q0 + s.Wk;
            const int64_t qd_end = std::min(q1, s.Wr);   // stored columns [q0, qd_end)
            const int64_t qm_begin = std::max(q0, s.Wr);  // mirrored columns [qm_begin, q1)
            for (int64_t n = n0; n < n1; ++n) {
              T* __restrict orow = out + (n * s.F + f) * tile + up * s.Wk * 2 - 2 * q0;
              const T* __restrict xrow = X + (n * s.H + p) * s.Wr * 2;
              const T* __restrict xmrow = X + (n * s.H + pm) * s.Wr * 2 + 2 * s.W;
              for (int64_t q = q0; q < qd_end; ++q) {
                const T w = frow[q];
                orow[2 * q] += w * xrow[2 * q];
                orow[2 * q + 1] += w * xrow[2 * q + 1];
              }
              // X[p, q] = conj(xhat[pm, W - q]) for q >= Wr.
              for (int64_t q = qm_begin; q < q1; ++q) {
                const T w = frow[q];
                orow[2 * q] += w * xmrow[-2 * q];
                orow[2 * q + 1] -= w * xmrow[-2 * q + 1];
              }
            }
          }
        }
      }
      if (s.k > 1) {
        for (int64_t n = n0; n < n1; ++n) {
          T* o = out + (n * s.F + f) * tile;
          for (int64_t i = 0; i < tile; ++i) o[i] *= scale;
        }
      }
    }
  });
}

template <typename T>
void filter_fold_backward_cpu_kernel(const T* __restrict G, const T* __restrict filt,
                                     T* __restrict gx, const FoldShape s) {
  // gx[n, p, q] = 1/k^2 sum_f filt[f, p, q] G[n, f, p % Hk, q % Wk]                 (direct)
  //             + 1/k^2 sum_f filt[f, pm, W - q] conj(G[n, f, pm % Hk, (W - q) % Wk])
  //               for 1 <= q <= W - Wr, pm = (H - p) % H                              (mirror)
  // Each task owns rows p of a block of signals: no write conflicts, no atomics.
  const int64_t nblocks = (s.N + kNBlock - 1) / kNBlock;
  const T scale = T(1) / T(s.k * s.k);
  const int64_t tile = s.Hk * s.Wk * 2;
  at::parallel_for(0, s.H * nblocks, 1, [&](int64_t begin, int64_t end) {
    for (int64_t item = begin; item < end; ++item) {
      const int64_t p = item / nblocks;
      const int64_t n0 = (item % nblocks) * kNBlock;
      const int64_t n1 = std::min(s.N, n0 + kNBlock);
      const int64_t pm = (s.H - p) % s.H;
      const int64_t up = p % s.Hk;
      const int64_t upm = pm % s.Hk;
      for (int64_t n = n0; n < n1; ++n) {
        std::fill_n(gx + (n * s.H + p) * s.Wr * 2, s.Wr * 2, T(0));
      }
      for (int64_t f = 0; f < s.F; ++f) {
        const T* __restrict frow = filt + (f * s.H + p) * s.W;
        const T* __restrict fmrow = filt + (f * s.H + pm) * s.W;
        for (int64_t n = n0; n < n1; ++n) {
          T* row = gx + (n * s.H + p) * s.Wr * 2;  // no __restrict: row and rowm alias
          const T* __restrict grow = G + (n * s.F + f) * tile + up * s.Wk * 2;
          const T* __restrict gmrow = G + (n * s.F + f) * tile + upm * s.Wk * 2;
          for (int64_t b = 0; b < s.k; ++b) {
            const int64_t q0 = b * s.Wk;
            const int64_t qd_end = std::min(q0 + s.Wk, s.Wr);
            const T* __restrict g = grow - 2 * q0;
            for (int64_t q = q0; q < qd_end; ++q) {
              const T w = frow[q];
              row[2 * q] += w * g[2 * q];
              row[2 * q + 1] += w * g[2 * q + 1];
            }
            // Mirror: source column qq = W - q in [max(q0, Wr), q0 + Wk).
            const int64_t qq_begin = std::max(q0, s.Wr);
            const int64_t qq_end = q0 + s.Wk;
            const T* __restrict gm = gmrow - 2 * q0;
            T* rowm = row + 2 * s.W;  // rowm[-2 qq] = row[2 (W - qq)]
            for (int64_t qq = qq_begin; qq < qq_end; ++qq) {
              const T w = fmrow[qq];
              rowm[-2 * qq] += w * gm[2 * qq];
              rowm[-2 * qq + 1] -= w * gm[2 * qq + 1];
            }
          }
        }
      }
      if (s.k > 1) {
        for (int64_t n = n0; n < n1; ++n) {
          T* r = gx + (n * s.H + p) * s.Wr * 2;
          for (int64_t i = 0; i < s.Wr * 2; ++i) r[i] *= scale;
        }
      }
    }
  });
}

// |z| = sqrt(re^2 + im^2), vectorisable. float32 is computed in double, where the squares
// can neither overflow nor underflow; for float64 the rare |z| outside [1e-150, 1e150]
// (squares out of range) take std::hypot, so |z| is right over the whole range.
template <typename T>
struct AccOf {
  using type = double;
};

template <typename T>
inline double abs2d(double re, double im) {
  const double r = std::sqrt(re * re + im * im);
  if constexpr (std::is_same_v<T, double>) {
    if (!(r > 1e-150 && r < 1e150) && (re != 0 || im != 0)) return std::hypot(re, im);
  }
  return r;
}

template <typename T>
void modulus_cpu_kernel(const T* __restrict z, T* __restrict out, int64_t numel) {
  at::parallel_for(0, numel, 16384, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      out[i] = static_cast<T>(abs2d<T>(z[2 * i], z[2 * i + 1]));
    }
  });
}

template <typename T>
void modulus_backward_cpu_kernel(const T* __restrict g, const T* __restrict z, T* __restrict gz,
                                 int64_t numel) {
  using acc_t = typename AccOf<T>::type;
  at::parallel_for(0, numel, 16384, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      const acc_t re = z[2 * i];
      const acc_t im = z[2 * i + 1];
      const acc_t r = abs2d<T>(re, im);
      // Stable gradient: z / |z| is defined as 0 at z == 0 (subgradient), never NaN.
      const acc_t c = r > acc_t(0) ? acc_t(g[i]) / r : acc_t(0);
      gz[2 * i] = static_cast<T>(c * re);
      gz[2 * i + 1] = static_cast<T>(c * im);
    }
  });
}

at::Tensor filter_fold_cpu(const at::Tensor& xhat, const at::Tensor& filters, int64_t width,
                           int64_t k) {
  const FoldShape s = check_filter_fold(xhat, filters, width, k);
  TORCH_CHECK(xhat.device().is_cpu(), "filter_fold (CPU kernel): xhat must be on the CPU");
  const at::Tensor x = xhat.resolve_conj().resolve_neg().contiguous();
  const at::Tensor f = filters.resolve_conj().resolve_neg().contiguous();
  at::Tensor out = at::empty({s.N, s.F, s.Hk, s.Wk}, xhat.options());
  if (out.numel() == 0) return out;
  AT_DISPATCH_FLOATING_TYPES(f.scalar_type(), "filter_fold_cpu", [&] {
    filter_fold_cpu_kernel<scalar_t>(static_cast<const scalar_t*>(x.const_data_ptr()),
                                     f.const_data_ptr<scalar_t>(),
                                     static_cast<scalar_t*>(out.mutable_data_ptr()), s);
  });
  return out;
}

at::Tensor filter_fold_backward_cpu(const at::Tensor& grad, const at::Tensor& filters,
                                    int64_t k) {
  const FoldShape s = check_filter_fold_backward(grad, filters, k);
  TORCH_CHECK(grad.device().is_cpu(), "filter_fold_backward (CPU kernel): grad must be on CPU");
  const at::Tensor g = grad.resolve_conj().resolve_neg().contiguous();
  const at::Tensor f = filters.resolve_conj().resolve_neg().contiguous();
  at::Tensor gx = at::empty({s.N, s.H, s.Wr}, grad.options());
  if (gx.numel() == 0) return gx;
  if (s.F == 0) return gx.zero_();
  AT_DISPATCH_FLOATING_TYPES(f.scalar_type(), "filter_fold_backward_cpu", [&] {
    filter_fold_backward_cpu_kernel<scalar_t>(static_cast<const scalar_t*>(g.const_data_ptr()),
                                              f.const_data_ptr<scalar_t>(),
                                              static_cast<scalar_t*>(gx.mutable_data_ptr()), s);
  });
  return gx;
}

at::Tensor modulus_cpu(const at::Tensor& z) {
  check_modulus(z);
  TORCH_CHECK(z.device().is_cpu(), "modulus (CPU kernel): z must be on the CPU");
  const at::Tensor zc = z.resolve_conj().resolve_neg().contiguous();
  at::Tensor out = at::empty(z.sizes(), z.options().dtype(c10::toRealValueType(z.scalar_type())));
  AT_DISPATCH_FLOATING_TYPES(out.scalar_type(), "modulus_cpu", [&] {
    modulus_cpu_kernel<scalar_t>(static_cast<const scalar_t*>(zc.const_data_ptr()),
                                 out.mutable_data_ptr<scalar_t>(), out.numel());
  });
  return out;
}

at::Tensor modulus_backward_cpu(const at::Tensor& grad, const at::Tensor& z) {
  check_modulus_backward(grad, z);
  TORCH_CHECK(z.device().is_cpu(), "modulus_backward (CPU kernel): z must be on the CPU");
  const at::Tensor gc = grad.resolve_conj().resolve_neg().contiguous();
  const at::Tensor zc = z.resolve_conj().resolve_neg().contiguous();
  at::Tensor gz = at::empty(z.sizes(), z.options());
  AT_DISPATCH_FLOATING_TYPES(gc.scalar_type(), "modulus_backward_cpu", [&] {
    modulus_backward_cpu_kernel<scalar_t>(gc.const_data_ptr<scalar_t>(),
                                          static_cast<const scalar_t*>(zc.const_data_ptr()),
                                          static_cast<scalar_t*>(gz.mutable_data_ptr()),
                                          gc.numel());
  });
  return gz;
}

}  // namespace

// Schemas: the single definition of the op library (the CUDA extension only adds impls).
TORCH_LIBRARY(difftransforms, m) {
  m.def("filter_fold(Tensor xhat, Tensor filters, int width, int k) -> Tensor");
  m.def("filter_fold_backward(Tensor grad, Tensor filters, int k) -> Tensor");
  m.def("modulus(Tensor z) -> Tensor");
  m.def("modulus_backward(Tensor grad, Tensor z) -> Tensor");
}

TORCH_LIBRARY_IMPL(difftransforms, CPU, m) {
  m.impl("filter_fold", &filter_fold_cpu);
  m.impl("filter_fold_backward", &filter_fold_backward_cpu);
  m.impl("modulus", &modulus_cpu);
  m.impl("modulus_backward", &modulus_backward_cpu);
}

}  // namespace difftransforms
