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
#include <limits>
#include <type_traits>
#include <vector>

namespace difftransforms {
namespace {

// Number of signals sharing one read of a filter row (that row stays in L1).
constexpr int64_t kNBlock = 4;

// (F, k, k) bool: whether filters[f] is non-zero somewhere on the aliased block (a, b) (rows
// [a H/k, (a+1) H/k) x columns [b W/k, (b+1) W/k)). One pass over the filters with an early
// exit per block: the bank's live blocks are non-zero almost everywhere, so the scan of a live
// block stops at its first entries and only dead blocks are read whole. (The generic
// ne().any().any() of modconv.h allocates an (F, H, W) bool tensor and costs ~1.5 ms per call
// on a 8 x 288^2 bank, as much as the fold itself at coarse scales.)
template <typename T>
at::Tensor live_blocks_cpu(const at::Tensor& f, const FoldShape& s) {
  at::Tensor live = at::empty({s.F, s.k, s.k}, f.options().dtype(at::kBool));
  bool* lp = live.mutable_data_ptr<bool>();
  const T* fp = f.const_data_ptr<T>();
  at::parallel_for(0, s.F * s.k * s.k, 1, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      const int64_t fi = i / (s.k * s.k), a = (i / s.k) % s.k, b = i % s.k;
      bool any = false;
      for (int64_t u = 0; u < s.Hk && !any; ++u) {
        const T* row = fp + (fi * s.H + a * s.Hk + u) * s.W + b * s.Wk;
        for (int64_t v = 0; v < s.Wk; ++v) any |= row[v] != T(0);
      }
      lp[i] = any;
    }
  });
  return live;
}

// live_ab[a * k + b]: some filter is non-zero on the aliased block (a, b).
inline std::vector<char> any_filter_live(const bool* live, const FoldShape& s) {
  std::vector<char> ab(static_cast<size_t>(s.k * s.k), 0);
  for (int64_t f = 0; f < s.F; ++f)
    for (int64_t i = 0; i < s.k * s.k; ++i) ab[i] |= live[f * s.k * s.k + i];
  return ab;
}

// dst[0:2n] = scale * (f[0], f[0], f[1], f[1], ...): a real filter segment spread over the
// interleaved (re, im) layout, so that the complex-by-real products below are plain
// element-wise loops over contiguous memory (vectorised by the compiler).
template <typename T>
inline void spread(const T* __restrict f, T scale, int64_t n, T* __restrict dst) {
  for (int64_t v = 0; v < n; ++v) {
    dst[2 * v] = f[v] * scale;
    dst[2 * v + 1] = f[v] * scale;
  }
}

template <typename T>
inline void mul_assign(const T* __restrict a, const T* __restrict x, int64_t n,
                       T* __restrict y) {
  for (int64_t i = 0; i < n; ++i) y[i] = a[i] * x[i];
}

template <typename T>
inline void axpy_inplace(const T* __restrict a, const T* __restrict x, int64_t n,
                         T* __restrict y) {
  for (int64_t i = 0; i < n; ++i) y[i] += a[i] * x[i];
}

// Columns [c0, c0 + n) of the full spectrum row p of one signal, interleaved, into dst: the
// stored half is copied, the missing half read from the Hermitian mirror (row pm, conjugated).
template <typename T>
inline void full_row_segment(const T* __restrict xrow, const T* __restrict xmrow,
                             const FoldShape& s, int64_t c0, int64_t n, T* __restrict dst) {
  const int64_t direct = std::max<int64_t>(0, std::min(c0 + n, s.Wr) - c0);
  std::copy_n(xrow + 2 * c0, 2 * direct, dst);
  for (int64_t q = c0 + direct; q < c0 + n; ++q) {  // X[p, q] = conj(xhat[pm, W - q])
    dst[2 * (q - c0)] = xmrow[2 * (s.W - q)];
    dst[2 * (q - c0) + 1] = -xmrow[2 * (s.W - q) + 1];
  }
}

template <typename T>
void filter_fold_cpu_kernel(const T* __restrict X, const T* __restrict filt,
                            const bool* __restrict live, T* __restrict out, const FoldShape s) {
  // Task = (block of <= kNBlock signals, output row u). For each alias row p = u + a H/k, the
  // live column blocks of the full spectrum row X[n, p, :] are rebuilt once in a small buffer
  // (stored half copied, missing half mirrored and conjugated); each filter segment, spread to
  // the interleaved layout and scaled by 1/k^2 once, then serves the whole signal block with
  // contiguous loops, accumulating straight into the (N, F, H/k, W/k) output rows.
  // live[(f k + a) k + b] is false when filter f is exactly zero on the aliased block (a, b)
  // (band-pass filters at coarse scales are zero on most blocks): such blocks are skipped.
  const int64_t nblocks = (s.N + kNBlock - 1) / kNBlock;
  const T scale = T(1) / T(s.k * s.k);
  const int64_t W2 = 2 * s.W;
  const int64_t orow_len = 2 * s.Wk;
  const std::vector<char> live_ab = any_filter_live(live, s);
  at::parallel_for(0, nblocks * s.Hk, 1, [&](int64_t begin, int64_t end) {
    std::vector<T> buf(static_cast<size_t>(kNBlock * W2));
    std::vector<T> fbuf(static_cast<size_t>(orow_len));
    std::vector<char> written(static_cast<size_t>(s.F));
    for (int64_t item = begin; item < end; ++item) {
      const int64_t up = item % s.Hk;
      const int64_t n0 = (item / s.Hk) * kNBlock;
      const int64_t nn = std::min(s.N, n0 + kNBlock) - n0;
      // written[f]: the output rows of filter f already hold a first (assigned) alias; rows
      // of filters with no live block at all are zero-filled at the end
      std::fill(written.begin(), written.end(), char(0));
      for (int64_t a = 0; a < s.k; ++a) {
        const char* lab = live_ab.data() + a * s.k;
        if (std::none_of(lab, lab + s.k, [](char c) { return c != 0; })) continue;
        const int64_t p = up + a * s.Hk;
        const int64_t pm = (s.H - p) % s.H;  // row of the Hermitian mirror
        for (int64_t i = 0; i < nn; ++i) {
          const T* xrow = X + ((n0 + i) * s.H + p) * s.Wr * 2;
          const T* xmrow = X + ((n0 + i) * s.H + pm) * s.Wr * 2;
          for (int64_t b = 0; b < s.k; ++b) {
            if (lab[b]) full_row_segment(xrow, xmrow, s, b * s.Wk, s.Wk,
                                         buf.data() + i * W2 + 2 * b * s.Wk);
          }
        }
        for (int64_t f = 0; f < s.F; ++f) {
          const T* frow = filt + (f * s.H + p) * s.W;
          for (int64_t b = 0; b < s.k; ++b) {
            if (!live[(f * s.k + a) * s.k + b]) continue;
            spread(frow + b * s.Wk, scale, s.Wk, fbuf.data());
            for (int64_t i = 0; i < nn; ++i) {
              T* orow = out + (((n0 + i) * s.F + f) * s.Hk + up) * orow_len;
              const T* xs = buf.data() + i * W2 + 2 * b * s.Wk;
              if (written[f]) {
                axpy_inplace(fbuf.data(), xs, orow_len, orow);
              } else {
                mul_assign(fbuf.data(), xs, orow_len, orow);
              }
            }
            written[f] = 1;
          }
        }
      }
      for (int64_t f = 0; f < s.F; ++f) {
        if (written[f]) continue;
        for (int64_t i = 0; i < nn; ++i)
          std::fill_n(out + (((n0 + i) * s.F + f) * s.Hk + up) * orow_len, orow_len, T(0));
      }
    }
  });
}

template <typename T>
void filter_fold_backward_cpu_kernel(const T* __restrict G, const T* __restrict filt,
                                     const bool* __restrict live, T* __restrict gx,
                                     const FoldShape s) {
  // With acc_p[q] = sum_f filt[f, p, q] G[n, f, p % Hk, q % Wk] / k^2 over the FULL row q < W:
  //   gx[n, p, q] = acc_p[q] + [1 <= q <= W - Wr] conj(acc_pm[W - q]),  pm = -p mod H.
  // Task = (block of signals, row pair {p, pm}): both full accumulators are built with
  // contiguous loops (each scaled filter segment spread once for the signal block), then
  // combined into both output rows. No atomics, no duplicate work.
  const int64_t nblocks = (s.N + kNBlock - 1) / kNBlock;
  const int64_t npairs = s.H / 2 + 1;  // p in [0, H/2]; pm = H - p >= p
  const T scale = T(1) / T(s.k * s.k);
  const int64_t W2 = 2 * s.W;
  const int64_t tile = s.Hk * s.Wk * 2;
  at::parallel_for(0, nblocks * npairs, 1, [&](int64_t begin, int64_t end) {
    std::vector<T> buf(static_cast<size_t>(2 * kNBlock * W2));
    std::vector<T> fbuf(static_cast<size_t>(2 * s.Wk));
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
          const T* frow = filt + (f * s.H + pr) * s.W;
          for (int64_t b = 0; b < s.k; ++b) {
            if (!live[(f * s.k + ar) * s.k + b]) continue;  // zero filter block
            spread(frow + b * s.Wk, scale, s.Wk, fbuf.data());
            for (int64_t i = 0; i < nn; ++i) {
              axpy_inplace(fbuf.data(), G + ((n0 + i) * s.F + f) * tile + ur * s.Wk * 2,
                           2 * s.Wk, buf.data() + (r * kNBlock + i) * W2 + 2 * b * s.Wk);
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
          std::copy_n(acc, 2 * s.Wr, dst);
          for (int64_t q = 1; q <= s.W - s.Wr; ++q) {  // conjugated mirror contribution
            dst[2 * q] += accm[2 * (s.W - q)];
            dst[2 * q + 1] -= accm[2 * (s.W - q) + 1];
          }
        }
      }
    }
  });
}

// |z| without overflow/underflow (the modulus kernels' fallback for blocks whose squares
// under- or overflow): like hypot, the components are scaled by s = max(|re|, |im|, smallest
// normal) first (the floor keeps 1/s finite for subnormal z), in the tensor's own precision.
template <typename T>
inline T hypot_scale(T re, T im) {
  return std::max(std::max(std::abs(re), std::abs(im)), std::numeric_limits<T>::min());
}

template <typename T>
inline T abs_c(T re, T im) {
  // like hypot: an infinite component gives +inf, even with a NaN beside it
  if (std::isinf(re) || std::isinf(im)) return std::numeric_limits<T>::infinity();
  const T sc = hypot_scale(re, im);
  const T a = re / sc, b = im / sc;
  return sc * std::sqrt(a * a + b * b);
}

// Elements per block of the modulus kernels: the squared moduli of a block are computed in a
// plain vectorisable loop, and only a block holding a value whose square under- or overflows
// (|z| < ~1e-19 or > ~1e19 in float32, never for z == 0) is redone with hypot's scaling.
constexpr int64_t kModBlock = 512;

template <typename T>
inline bool needs_scaling(T re, T im, T r2) {
  // a subnormal or zero r2 from z != 0 lost precision (z == 0 is exact), inf overflowed;
  // NaN fails every comparison and is redone too (and stays NaN)
  return !(r2 >= std::numeric_limits<T>::min() && r2 <= std::numeric_limits<T>::max()) &&
         (re != T(0) || im != T(0));
}

template <typename T>
void modulus_cpu_kernel(const T* __restrict z, T* __restrict out, int64_t numel) {
  at::parallel_for(0, numel, 16384, [&](int64_t begin, int64_t end) {
    for (int64_t b0 = begin; b0 < end; b0 += kModBlock) {
      const int64_t n = std::min(kModBlock, end - b0);
      const T* __restrict zb = z + 2 * b0;
      T* __restrict ob = out + b0;
      unsigned bad = 0;  // not bool: a bool reduction blocks vectorisation
      for (int64_t i = 0; i < n; ++i) {
        const T r2 = zb[2 * i] * zb[2 * i] + zb[2 * i + 1] * zb[2 * i + 1];
        bad |= static_cast<unsigned>(needs_scaling(zb[2 * i], zb[2 * i + 1], r2));
        ob[i] = std::sqrt(r2);
      }
      if (bad)
        for (int64_t i = 0; i < n; ++i) ob[i] = abs_c(zb[2 * i], zb[2 * i + 1]);
    }
  });
}

template <typename T>
void modulus_backward_cpu_kernel(const T* __restrict g, const T* __restrict z, T* __restrict gz,
                                 int64_t numel) {
  // g z / |z|, 0 at z == 0 (a subgradient), never NaN: c = 1 / |z| per element of a block
  // (|z| as in the forward kernel), then the interleaved products (z c) g over (re, im).
  at::parallel_for(0, numel, 16384, [&](int64_t begin, int64_t end) {
    T c[kModBlock];
    for (int64_t b0 = begin; b0 < end; b0 += kModBlock) {
      const int64_t n = std::min(kModBlock, end - b0);
      const T* __restrict zb = z + 2 * b0;
      const T* __restrict gb = g + b0;
      T* __restrict ob = gz + 2 * b0;
      unsigned bad = 0;  // not bool: a bool reduction blocks vectorisation
      for (int64_t i = 0; i < n; ++i) {
        const T r2 = zb[2 * i] * zb[2 * i] + zb[2 * i + 1] * zb[2 * i + 1];
        bad |= static_cast<unsigned>(needs_scaling(zb[2 * i], zb[2 * i + 1], r2));
        const T inv = T(1) / std::sqrt(std::max(r2, std::numeric_limits<T>::min()));
        c[i] = r2 > T(0) ? inv : T(0);  // a select, not a branch: the loop vectorises
      }
      if (bad) {  // hypot's scaling: (a, b) = z / s, g z / |z| = g (a, b) / |(a, b)|
        for (int64_t i = 0; i < n; ++i) {
          const T sc = hypot_scale(zb[2 * i], zb[2 * i + 1]);
          const T a = zb[2 * i] / sc, b = zb[2 * i + 1] / sc;
          const T r2 = a * a + b * b;
          const T ci = r2 > T(0) ? gb[i] / std::sqrt(r2) : T(0);
          ob[2 * i] = ci * a;
          ob[2 * i + 1] = ci * b;
        }
        continue;
      }
      for (int64_t i = 0; i < n; ++i) {
        ob[2 * i] = zb[2 * i] * c[i] * gb[i];  // z / |z| first: no overflow for large g
        ob[2 * i + 1] = zb[2 * i + 1] * c[i] * gb[i];
      }
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
    const at::Tensor live = live_blocks_cpu<scalar_t>(f, s);
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
  AT_DISPATCH_FLOATING_TYPES(f.scalar_type(), "filter_fold_backward_cpu", [&] {
    const at::Tensor live = live_blocks_cpu<scalar_t>(f, s);
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
