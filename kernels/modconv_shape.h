// Plain shape record and CUDA launcher declarations of the modulus-convolution ops.
// Free of torch headers so that modconv_cuda.cu (the device code) compiles quickly with nvcc;
// the torch glue of the CUDA extension lives in modconv_cuda_ops.cpp (host compiler).
#pragma once

#include <cstdint>

namespace difftransforms {

// N signals, F filters, spectrum H x W (rfft2 width Wr = W/2 + 1), fold factor k,
// folded size Hk x Wk = H/k x W/k.
struct FoldShape {
  int64_t N, F, H, W, Wr, k, Hk, Wk;
};

#ifdef DIFFTRANSFORMS_DECLARE_CUDA_LAUNCHERS
// Kernel launchers (modconv_cuda.cu). Pointers are device pointers to contiguous data;
// complex tensors are interleaved (re, im) pairs of the real type T (float or double).
// `stream` is a cudaStream_t; the return value is a cudaError_t (0 = success).
// live: (F, k, k) bool, false where filter f is exactly zero on aliased block (a, b).
template <typename T>
int launch_filter_fold(const T* X, const T* filt, const bool* live, T* out, const FoldShape& s,
                       void* stream);
template <typename T>
int launch_filter_fold_backward(const T* G, const T* filt, const bool* live, T* gx,
                                const FoldShape& s, void* stream);
template <typename T>
int launch_modulus(const T* z, T* out, int64_t numel, void* stream);
template <typename T>
int launch_modulus_backward(const T* g, const T* z, T* gz, int64_t numel, void* stream);
#endif

}  // namespace difftransforms
