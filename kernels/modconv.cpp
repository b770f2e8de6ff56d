// difftransforms custom ops: schemas (TORCH_LIBRARY) and CPU kernels (TORCH_LIBRARY_IMPL CPU).
//
// See modconv.h for the exact conventions. The CUDA kernels live in a separate extension
// (modconv_cuda.cu + modconv_cuda_ops.cpp) so that CPU-only machines never need nvcc; it
// only registers CUDA implementations of the schemas defined here.
//
// Layout: complex tensors are read as interleaved (re, im) pairs of the real scalar type.
// filter_fold never materialises the (N, F, H, W) full-resolution product: each task
// accumulates the k^2 aliases straight into its output rows; at most a few rows of the full
// spectrum live in a per-thread buffer.

#include "modconv.h"

#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <type_traits>
#include <vector>

namespace difftransforms {
namespace {

// Number of signals sharing one read of a filter row (that row stays in L1).
constexpr int64_t kNBlock = 4;

template <typename T>
void filter_fold_cpu_kernel(const T* __restrict X, const T* __restrict filt,
                            const bool* __restrict live, T* __restrict out, const FoldShape s) {
  // Task = (block of <= kNBlock signals, output row u). For each alias row p = u + a H/k the
  // full spectrum row X[n, p, 0:W] is rebuilt once in a small buffer (stored half copied,
  // missing half mirrored and conjugated), then every filter row is applied with contiguous,
  // vectorisable loops, accumulating straight into the (N, F, H/k, W/k) output rows.
  // live[(f k + a) k + b] is false when filter f is exactly zero on the aliased block (a, b)
  // (band-pass filters at coarse scales are zero on most blocks): such blocks are skipped.
  const int64_t nblocks = (s.N + kNBlock - 1) / kNBlock;
  const T scale = T(1) / T(s.k * s.k);
  const int64_t W2 = 2 * s.W;
  const int64_t orow_len = 2 * s.Wk;
  at::parallel_for(0, nblocks * s.Hk, 1, [&](int64_t begin, int64_t end) {
    std::vector<T> buf(static_cast<size_t>(kNBlock * W2));
    for (int64_t item = begin; item < end; ++item) {
      const int64_t up = item % s.Hk;
      const int64_t n0 = (item / s.Hk) * kNBlock;
      const int64_t nn = std::min(s.N, n0 + kNBlock) - n0;
      for (int64_t i = 0; i < nn; ++i) {
        for (int64_t f = 0; f < s.F; ++f) {
          std::fill_n(out + (((n0 + i) * s.F + f) * s.Hk + up) * orow_len, orow_len, T(0));
        }
      }
      for (int64_t a = 0; a < s.k; ++a) {
        bool any_live = false;
        for (int64_t fb = 0; fb < s.F * s.k && !any_live; ++fb) {
          const int64_t f = fb / s.k, b = fb % s.k;
          any_live = live[(f * s.k + a) * s.k + b];
        }
        if (!any_live) continue;
        const int64_t p = up + a * s.Hk;
        const int64_t pm = (s.H - p) % s.H;  // row of the Hermitian mirror
        for (int64_t i = 0; i < nn; ++i) {
          T* __restrict row = buf.data() + i * W2;
          const T* __restrict xrow = X + ((n0 + i) * s.H + p) * s.Wr * 2;
          const T* __restrict xmrow = X + ((n0 + i) * s.H + pm) * s.Wr * 2;
          std::copy_n(xrow, 2 * s.Wr, row);
          for (int64_t q = s.Wr; q < s.W; ++q) {  // X[p, q] = conj(xhat[pm, W - q])
            row[2 * q] = xmrow[2 * (s.W - q)];
            row[2 * q + 1] = -xmrow[2 * (s.W - q) + 1];
          }
        }
        for (int64_t f = 0; f < s.F; ++f) {
          const T* __restrict frow = filt + (f * s.H + p) * s.W;
          for (int64_t i = 0; i < nn; ++i) {
            T* __restrict o = out + (((n0 + i) * s.F + f) * s.Hk + up) * orow_len;
            const T* __restrict row = buf.data() + i * W2;
            for (int64_t b = 0; b < s.k; ++b) {
              if (!live[(f * s.k + a) * s.k + b]) continue;
              const T* __restrict fr = frow + b * s.Wk;
              const T* __restrict xr = row + 2 * b * s.Wk;
              for (int64_t v = 0; v < s.Wk; ++v) {
                o[2 * v] += fr[v] * xr[2 * v];
                o[2 * v + 1] += fr[v] * xr[2 * v + 1];
              }
            }
          }
        }
      }
      if (s.k > 1) {
        for (int64_t i = 0; i < nn; ++i) {
          T* o = out + (((n0 + i) * s.F) * s.Hk + up) * orow_len;
          for (int64_t f = 0; f < s.F; ++f, o += s.Hk * orow_len) {
            for (int64_t j = 0; j < orow_len; ++j) o[j] *= scale;
          }
        }
      }
    }
  });
}

template <typename T>
void filter_fold_backward_cpu_kernel(const T* __restrict G, const T* __restrict filt,
                                     const bool* __restrict live, T* __restrict gx,
                                     const FoldShape s) {
  // With acc_p[q] = sum_f filt[f, p, q] G[n, f, p % Hk, q % Wk] over the FULL row q < W:
  //   gx[n, p, q] = (acc_p[q] + [1 <= q <= W - Wr] conj(acc_pm[W - q])) / k^2,  pm = -p mod H.
  // Task = (block of signals, row pair {p, pm}): both full accumulators are built with
  // contiguous loops, then combined into both output rows. No atomics, no duplicate work.
  const int64_t nblocks = (s.N + kNBlock - 1) / kNBlock;
  const int64_t npairs = s.H / 2 + 1;  // p in [0, H/2]; pm = H - p >= p
  const T scale = T(1) / T(s.k * s.k);
  const int64_t W2 = 2 * s.W;
  const int64_t tile = s.Hk * s.Wk * 2;
  at::parallel_for(0, nblocks * npairs, 1, [&](int64_t begin, int64_t end) {
    std::vector<T> buf(static_cast<size_t>(2 * kNBlock * W2));
    for (int64_t item = begin; item < end; ++item) {
      const int64_t p = item % npairs;
      const int64_t n0 = (item / npairs) * kNBlock;
      const int64_t nn = std::min(s.N, n0 + kNBlock) - n0;
      const int64_t pm = (s.H - p) % s.H;
      const int nrows = pm == p ? 1 : 2;
      std::fill_n(buf.data(), 2 * kNBlock * W2, T(0));
      for (int r = 0; r < nrows; ++r) {
        const int64_t pr = r == 0 ? p : pm;
        const int64_t ur = pr % s.Hk;
        const int64_t ar = pr / s.Hk;
        for (int64_t f = 0; f < s.F; ++f) {
          const T* __restrict frow = filt + (f * s.H + pr) * s.W;
          for (int64_t i = 0; i < nn; ++i) {
            T* __restrict acc = buf.data() + (r * kNBlock + i) * W2;
            const T* __restrict g = G + ((n0 + i) * s.F + f) * tile + ur * s.Wk * 2;
            for (int64_t b = 0; b < s.k; ++b) {
              if (!live[(f * s.k + ar) * s.k + b]) continue;  // zero filter block
              const T* __restrict fr = frow + b * s.Wk;
              T* __restrict dst = acc + 2 * b * s.Wk;
              for (int64_t v = 0; v < s.Wk; ++v) {
                dst[2 * v] += fr[v] * g[2 * v];
                dst[2 * v + 1] += fr[v] * g[2 * v + 1];
              }
            }
          }
        }
      }
      for (int r = 0; r < nrows; ++r) {
        const int64_t pr = r == 0 ? p : pm;
        for (int64_t i = 0; i < nn; ++i) {
          const T* acc = buf.data() + (r * kNBlock + i) * W2;
          const T* accm = buf.data() + ((nrows == 1 ? 0 : 1 - r) * kNBlock + i) * W2;
          T* __restrict dst = gx + ((n0 + i) * s.H + pr) * s.Wr * 2;
          for (int64_t q = 0; q < s.Wr; ++q) {
            dst[2 * q] = acc[2 * q] * scale;
            dst[2 * q + 1] = acc[2 * q + 1] * scale;
          }
          for (int64_t q = 1; q <= s.W - s.Wr; ++q) {  // conjugated mirror contribution
            dst[2 * q] += accm[2 * (s.W - q)] * scale;
            dst[2 * q + 1] -= accm[2 * (s.W - q) + 1] * scale;
          }
        }
      }
    }
  });
}

// |z| without overflow/underflow and with branch-free, vectorisable loops: float32 is computed
// in double (its squares can neither overflow nor underflow there); float64 is scaled by
// max(|re|, |im|) first, like hypot.
inline double abs_c(float re, float im) {
  const double r = re, i = im;
  return std::sqrt(r * r + i * i);
}

inline double abs_c(double re, double im) {
  const double m = std::max(std::abs(re), std::abs(im));
  const double inv = m > 0 ? 1.0 / m : 0.0;
  const double a = re * inv, b = im * inv;
  return m * std::sqrt(a * a + b * b);
}

template <typename T>
void modulus_cpu_kernel(const T* __restrict z, T* __restrict out, int64_t numel) {
  at::parallel_for(0, numel, 16384, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      out[i] = static_cast<T>(abs_c(z[2 * i], z[2 * i + 1]));
    }
  });
}

template <typename T>
void modulus_backward_cpu_kernel(const T* __restrict g, const T* __restrict z, T* __restrict gz,
                                 int64_t numel) {
  at::parallel_for(0, numel, 16384, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      const T re = z[2 * i];
      const T im = z[2 * i + 1];
      const double r = abs_c(re, im);
      // Stable gradient: z / |z| is defined as 0 at z == 0 (subgradient), never NaN.
      const double c = r > 0 ? static_cast<double>(g[i]) / r : 0.0;
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
  const at::Tensor live = live_blocks(f, s);
  AT_DISPATCH_FLOATING_TYPES(f.scalar_type(), "filter_fold_cpu", [&] {
    filter_fold_cpu_kernel<scalar_t>(static_cast<const scalar_t*>(x.const_data_ptr()),
                                     f.const_data_ptr<scalar_t>(), live.const_data_ptr<bool>(),
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
  const at::Tensor live = live_blocks(f, s);
  AT_DISPATCH_FLOATING_TYPES(f.scalar_type(), "filter_fold_backward_cpu", [&] {
    filter_fold_backward_cpu_kernel<scalar_t>(static_cast<const scalar_t*>(g.const_data_ptr()),
                                              f.const_data_ptr<scalar_t>(),
                                              live.const_data_ptr<bool>(),
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
