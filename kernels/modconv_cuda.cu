// difftransforms custom ops: CUDA kernels and their launchers (device code only).
//
// Deliberately free of torch headers (nvcc compiles it in seconds); the torch glue that checks
// arguments, allocates outputs and registers the CUDA implementations
// (TORCH_LIBRARY_IMPL(difftransforms, CUDA, m)) is modconv_cuda_ops.cpp. Both form the separate
// CUDA extension, loaded after the CPU extension (modconv.cpp) that defines the schemas.
// See modconv.h for the conventions.
//
// filter_fold: one thread per output element (n, f, u, v), v fastest (coalesced), summing its
// k^2 aliases; reads of the mirrored half (v >= W/2 + 1) use Hermitian symmetry. Nothing of
// size (N, F, H, W) is ever allocated.
// filter_fold_backward: one thread per grad_xhat element (n, p, q), q fastest, summing over
// the F filters the direct and the conjugated mirror contributions: no atomics.

#define DIFFTRANSFORMS_DECLARE_CUDA_LAUNCHERS
#include "modconv_shape.h"

#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>

namespace difftransforms {
namespace {

template <typename T>
struct alignas(2 * sizeof(T)) Cplx {
  T re, im;
};

constexpr int kThreads = 256;

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

template <typename T>
const Cplx<T>* as_c(const T* p) {
  return reinterpret_cast<const Cplx<T>*>(p);
}

template <typename T>
Cplx<T>* as_c(T* p) {
  return reinterpret_cast<Cplx<T>*>(p);
}

}  // namespace

template <typename T>
int launch_filter_fold(const T* X, const T* filt, const bool* live, T* out, const FoldShape& s,
                       void* stream) {
  const int64_t total = s.N * s.F * s.Hk * s.Wk;
  if (total == 0) return 0;
  filter_fold_kernel<T><<<num_blocks(total), kThreads, 0, static_cast<cudaStream_t>(stream)>>>(
      as_c(X), filt, live, as_c(out), s, total);
  return static_cast<int>(cudaGetLastError());
}

template <typename T>
int launch_filter_fold_backward(const T* G, const T* filt, const bool* live, T* gx,
                                const FoldShape& s, void* stream) {
  const int64_t total = s.N * s.H * s.Wr;
  if (total == 0) return 0;
  filter_fold_backward_kernel<T>
      <<<num_blocks(total), kThreads, 0, static_cast<cudaStream_t>(stream)>>>(
          as_c(G), filt, live, as_c(gx), s, total);
  return static_cast<int>(cudaGetLastError());
}

template <typename T>
int launch_modulus(const T* z, T* out, int64_t numel, void* stream) {
  if (numel == 0) return 0;
  modulus_kernel<T><<<num_blocks(numel), kThreads, 0, static_cast<cudaStream_t>(stream)>>>(
      as_c(z), out, numel);
  return static_cast<int>(cudaGetLastError());
}

template <typename T>
int launch_modulus_backward(const T* g, const T* z, T* gz, int64_t numel, void* stream) {
  if (numel == 0) return 0;
  modulus_backward_kernel<T>
      <<<num_blocks(numel), kThreads, 0, static_cast<cudaStream_t>(stream)>>>(g, as_c(z),
                                                                               as_c(gz), numel);
  return static_cast<int>(cudaGetLastError());
}

#define DT_INSTANTIATE(T)                                                                    \
  template int launch_filter_fold<T>(const T*, const T*, const bool*, T*, const FoldShape&,  \
                                     void*);                                                 \
  template int launch_filter_fold_backward<T>(const T*, const T*, const bool*, T*,           \
                                              const FoldShape&, void*);                      \
  template int launch_modulus<T>(const T*, T*, int64_t, void*);                              \
  template int launch_modulus_backward<T>(const T*, const T*, T*, int64_t, void*);
DT_INSTANTIATE(float)
DT_INSTANTIATE(double)
#undef DT_INSTANTIATE

}  // namespace difftransforms
