// difftransforms custom ops: the CUDA kernels themselves (device code, no launches).
//
// Included by modconv_cuda.cu, which launches them, and by the test-only CPU emulation
// (tests/cuda_emulation/), which compiles this very file with a host compiler, defines the
// CUDA built-ins (blockIdx, blockDim, threadIdx, gridDim) and runs every block and thread of
// a launch in turn. Hence: no shared memory, no __syncthreads, no atomics, no CUDA headers
// here; each thread writes only its own outputs (grid-stride loops), so running the threads
// one after another is exactly the CUDA semantics.
//
// filter_fold: one thread per output element (n, f, u, v), v fastest (coalesced), summing its
// k^2 aliases; reads of the mirrored half (v >= W/2 + 1) use Hermitian symmetry. Nothing of
// size (N, F, H, W) is ever allocated.
// filter_fold_backward: one thread per grad_xhat element (n, p, q), q fastest, summing over
// the F filters the direct and the conjugated mirror contributions: no atomics.
// See modconv.h for the conventions.
#pragma once

#include "modconv_shape.h"

#include <algorithm>
#include <cmath>
#include <cstdint>

namespace difftransforms {
namespace cuda_kernels {

template <typename T>
struct alignas(2 * sizeof(T)) Cplx {
  T re, im;
};

constexpr int kThreads = 256;

// Threads (grid-stride loop iterations) of each launch: one per output element.
inline int64_t filter_fold_work(const FoldShape& s) { return s.N * s.F * s.Hk * s.Wk; }
inline int64_t filter_fold_backward_work(const FoldShape& s) { return s.N * s.H * s.Wr; }

inline unsigned int num_blocks(int64_t total) {
  const int64_t blocks = (total + kThreads - 1) / kThreads;
  return static_cast<unsigned int>(std::min<int64_t>(std::max<int64_t>(blocks, 1), 1 << 20));
}

template <typename T>
__global__ void filter_fold_kernel(const Cplx<T>* __restrict__ X, const T* __restrict__ filt,
                                   const bool* __restrict__ live, Cplx<T>* __restrict__ out,
                                   const FoldShape s,
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
      const Cplx<T>* xrow = X + (n * s.H + p) * s.Wr;
      const Cplx<T>* xmrow = X + (n * s.H + pm) * s.Wr;
      for (int64_t b = 0; b < s.k; ++b) {
        if (!live[(f * s.k + a) * s.k + b]) continue;  // filter exactly zero on this block
        const int64_t q = vp + b * s.Wk;
        const T w = frow[q];
        if (q < s.Wr) {
          const Cplx<T> x = xrow[q];
          re += w * x.re;
          im += w * x.im;
        } else {  // X[p, q] = conj(xhat[pm, W - q])
          const Cplx<T> x = xmrow[s.W - q];
          re += w * x.re;
          im -= w * x.im;
        }
      }
    }
    out[idx] = Cplx<T>{re * scale, im * scale};
  }
}

template <typename T>
__global__ void filter_fold_backward_kernel(const Cplx<T>* __restrict__ G,
                                            const T* __restrict__ filt,
                                            const bool* __restrict__ live,
                                            Cplx<T>* __restrict__ gx, const FoldShape s,
                                            const int64_t total) {
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
    const int64_t blk = (p / s.Hk) * s.k + q / s.Wk;             // aliased block of (p, q)
    const int64_t blkm = (pm / s.Hk) * s.k + (mirror ? qq / s.Wk : 0);  // ... of the mirror
    T re = 0, im = 0;
    for (int64_t f = 0; f < s.F; ++f) {
      const Cplx<T>* gbase = G + (n * s.F + f) * s.Hk * s.Wk;
      const bool* lf = live + f * s.k * s.k;
      if (lf[blk]) {
        const T w = filt[(f * s.H + p) * s.W + q];
        const Cplx<T> g = gbase[up * s.Wk + vq];
        re += w * g.re;
        im += w * g.im;
      }
      if (mirror && lf[blkm]) {
        const T wm = filt[(f * s.H + pm) * s.W + qq];
        const Cplx<T> gm = gbase[upm * s.Wk + vqq];
        re += wm * gm.re;
        im -= wm * gm.im;
      }
    }
    gx[idx] = Cplx<T>{re * scale, im * scale};
  }
}

__device__ inline float hypot_(float a, float b) { return ::hypotf(a, b); }
__device__ inline double hypot_(double a, double b) { return ::hypot(a, b); }

template <typename T>
__global__ void modulus_kernel(const Cplx<T>* __restrict__ z, T* __restrict__ out,
                               const int64_t total) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const Cplx<T> v = z[i];
    out[i] = hypot_(v.re, v.im);
  }
}

template <typename T>
__global__ void modulus_backward_kernel(const T* __restrict__ g, const Cplx<T>* __restrict__ z,
                                        Cplx<T>* __restrict__ gz, const int64_t total) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const Cplx<T> v = z[i];
    const T r = hypot_(v.re, v.im);
    const T c = r > T(0) ? g[i] / r : T(0);  // stable: 0 at z == 0, never NaN
    gz[i] = Cplx<T>{c * v.re, c * v.im};
  }
}

}  // namespace cuda_kernels
}  // namespace difftransforms
