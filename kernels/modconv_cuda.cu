// difftransforms custom ops: launchers of the CUDA kernels (device code only).
//
// Deliberately free of torch headers (nvcc compiles it in seconds); the torch glue that checks
// arguments, allocates outputs and registers the CUDA implementations
// (TORCH_LIBRARY_IMPL(difftransforms, CUDA, m)) is modconv_cuda_ops.cpp. Both form the separate
// CUDA extension, loaded after the CPU extension (modconv.cpp) that defines the schemas.
// The kernels themselves are in modconv_cuda_kernels.cuh (also run, thread by thread, by the
// CPU emulation of the tests). See modconv.h for the conventions.

#define DIFFTRANSFORMS_DECLARE_CUDA_LAUNCHERS
#include "modconv_shape.h"

#include <cuda_runtime.h>

#include "modconv_cuda_kernels.cuh"

#include <cstdint>

namespace difftransforms {
namespace {

using namespace cuda_kernels;

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
  const int64_t total = filter_fold_work(s);
  if (total == 0) return 0;
  filter_fold_kernel<T><<<num_blocks(total), kThreads, 0, static_cast<cudaStream_t>(stream)>>>(
      as_c(X), filt, live, as_c(out), s, total);
  return static_cast<int>(cudaGetLastError());
}

template <typename T>
int launch_filter_fold_backward(const T* G, const T* filt, const bool* live, T* gx,
                                const FoldShape& s, void* stream) {
  const int64_t total = filter_fold_backward_work(s);
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
