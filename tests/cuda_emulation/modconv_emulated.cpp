// Test-only: the CUDA kernels of kernels/modconv_cuda_kernels.cuh, compiled by the host C++
// compiler and run on the CPU, block by block and thread by thread.
//
// The kernels use no shared memory, no barriers and no atomics, and every thread writes only
// its own outputs, so running the threads of a launch one after another is exactly what the
// GPU computes (up to floating-point contraction). This checks the kernels' index arithmetic,
// Hermitian mirroring, dead-block skipping and grid-stride loops on machines without a GPU;
// the launch itself and the device runtime are only exercised on a real GPU
// (tests/test_ops_modconv.py's CUDA cases).
//
// Exposed to Python (tests/test_cuda_emulation.py) as functions taking CPU tensors, with the
// argument checks and the live-block map of the real CUDA glue (modconv.h), and an optional
// grid/block size to force the grid-stride loops to take several turns.

#include <cstdint>

// The CUDA built-ins the kernels use, as the emulator's thread-local state.
struct EmuDim3 {
  unsigned int x = 1, y = 1, z = 1;
};
static thread_local EmuDim3 blockIdx, blockDim, threadIdx, gridDim;
#define __global__
#define __device__
#define __host__

#include "modconv_cuda_kernels.cuh"
#include "modconv.h"

#include <ATen/Dispatch.h>
#include <ATen/ops/empty.h>
#include <torch/extension.h>

namespace dt = difftransforms;
namespace ck = difftransforms::cuda_kernels;

namespace {

// kernel<<<grid, block>>>(args...), one thread at a time. grid == 0: the real launchers'
// choice, num_blocks(work) blocks of kThreads threads.
template <typename Kernel, typename... Args>
void emulate_launch(int64_t work, int64_t grid, int64_t block, Kernel kernel, Args... args) {
  if (work == 0) return;
  if (grid <= 0) {
    grid = ck::num_blocks(work);
    block = ck::kThreads;
  }
  gridDim = EmuDim3{static_cast<unsigned int>(grid), 1, 1};
  blockDim = EmuDim3{static_cast<unsigned int>(block), 1, 1};
  for (int64_t b = 0; b < grid; ++b) {
    blockIdx = EmuDim3{static_cast<unsigned int>(b), 0, 0};
    for (int64_t t = 0; t < block; ++t) {
      threadIdx = EmuDim3{static_cast<unsigned int>(t), 0, 0};
      kernel(args...);
    }
  }
}

template <typename T>
const ck::Cplx<T>* as_c(const at::Tensor& t) {
  return reinterpret_cast<const ck::Cplx<T>*>(t.const_data_ptr());
}

template <typename T>
ck::Cplx<T>* as_c_mut(at::Tensor& t) {
  return reinterpret_cast<ck::Cplx<T>*>(t.mutable_data_ptr());
}

at::Tensor filter_fold(const at::Tensor& xhat, const at::Tensor& filters, int64_t width,
                       int64_t k, int64_t grid, int64_t block) {
  const dt::FoldShape s = dt::check_filter_fold(xhat, filters, width, k);
  const at::Tensor x = xhat.resolve_conj().resolve_neg().contiguous();
  const at::Tensor f = filters.resolve_conj().resolve_neg().contiguous();
  at::Tensor out = at::empty({s.N, s.F, s.Hk, s.Wk}, xhat.options());
  if (out.numel() == 0) return out;
  const at::Tensor live = dt::live_blocks(f, s);
  AT_DISPATCH_FLOATING_TYPES(f.scalar_type(), "filter_fold_emulated", [&] {
    const int64_t work = ck::filter_fold_work(s);
    emulate_launch(work, grid, block, ck::filter_fold_kernel<scalar_t>, as_c<scalar_t>(x),
                   f.const_data_ptr<scalar_t>(), live.const_data_ptr<bool>(),
                   as_c_mut<scalar_t>(out), s, work);
  });
  return out;
}

at::Tensor filter_fold_backward(const at::Tensor& grad, const at::Tensor& filters, int64_t k,
                                int64_t grid, int64_t block) {
  const dt::FoldShape s = dt::check_filter_fold_backward(grad, filters, k);
  const at::Tensor g = grad.resolve_conj().resolve_neg().contiguous();
  const at::Tensor f = filters.resolve_conj().resolve_neg().contiguous();
  at::Tensor gx = at::empty({s.N, s.H, s.Wr}, grad.options());
  if (gx.numel() == 0) return gx;
  if (s.F == 0) return gx.zero_();
  const at::Tensor live = dt::live_blocks(f, s);
  AT_DISPATCH_FLOATING_TYPES(f.scalar_type(), "filter_fold_backward_emulated", [&] {
    const int64_t work = ck::filter_fold_backward_work(s);
    emulate_launch(work, grid, block, ck::filter_fold_backward_kernel<scalar_t>,
                   as_c<scalar_t>(g), f.const_data_ptr<scalar_t>(), live.const_data_ptr<bool>(),
                   as_c_mut<scalar_t>(gx), s, work);
  });
  return gx;
}

at::Tensor modulus(const at::Tensor& z, int64_t grid, int64_t block) {
  dt::check_modulus(z);
  const at::Tensor zc = z.resolve_conj().resolve_neg().contiguous();
  at::Tensor out = at::empty(z.sizes(), z.options().dtype(c10::toRealValueType(z.scalar_type())));
  AT_DISPATCH_FLOATING_TYPES(out.scalar_type(), "modulus_emulated", [&] {
    emulate_launch(out.numel(), grid, block, ck::modulus_kernel<scalar_t>, as_c<scalar_t>(zc),
                   out.mutable_data_ptr<scalar_t>(), out.numel());
  });
  return out;
}

at::Tensor modulus_backward(const at::Tensor& grad, const at::Tensor& z, int64_t grid,
                            int64_t block) {
  dt::check_modulus_backward(grad, z);
  const at::Tensor gc = grad.resolve_conj().resolve_neg().contiguous();
  const at::Tensor zc = z.resolve_conj().resolve_neg().contiguous();
  at::Tensor gz = at::empty(z.sizes(), z.options());
  AT_DISPATCH_FLOATING_TYPES(gc.scalar_type(), "modulus_backward_emulated", [&] {
    emulate_launch(gc.numel(), grid, block, ck::modulus_backward_kernel<scalar_t>,
                   gc.const_data_ptr<scalar_t>(), as_c<scalar_t>(zc), as_c_mut<scalar_t>(gz),
                   gc.numel());
  });
  return gz;
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "CUDA kernels of difftransforms run thread by thread on the CPU (tests only)";
  m.def("filter_fold", &filter_fold, py::arg("xhat"), py::arg("filters"), py::arg("width"),
        py::arg("k"), py::arg("grid") = 0, py::arg("block") = 0);
  m.def("filter_fold_backward", &filter_fold_backward, py::arg("grad"), py::arg("filters"),
        py::arg("k"), py::arg("grid") = 0, py::arg("block") = 0);
  m.def("modulus", &modulus, py::arg("z"), py::arg("grid") = 0, py::arg("block") = 0);
  m.def("modulus_backward", &modulus_backward, py::arg("grad"), py::arg("z"),
        py::arg("grid") = 0, py::arg("block") = 0);
  m.attr("threads_per_block") = ck::kThreads;
}
