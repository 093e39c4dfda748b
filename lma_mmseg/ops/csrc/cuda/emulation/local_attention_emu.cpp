// Operator library that runs the CUDA kernels of the local attention ops on
// the host (see emu_runtime.h) through the same op bodies as the CUDA build
// (../local_attention_cuda_ops.cuh). Built on demand by the tests with
// torch.utils.cpp_extension.load(is_python_module=False); its ops are
// torch.ops.<TORCH_EXTENSION_NAME>.*. Not part of lma_mmseg._ext. It
// includes ATen and the op registration only (no pybind11, no
// torch/extension.h): that build takes a third of the time.
#include <ATen/core/Tensor.h>
#include <torch/library.h>

#include <optional>
#include <utility>

#include "emu_runtime.h"
// the kernels and op bodies, compiled for the host
#include "cuda/local_attention_cuda_ops.cuh"

namespace lma {
namespace cuda {
// dynamic shared memory of the emulated block (extern in the kernels)
alignas(16) unsigned char smem_raw[MAX_SHARED_BYTES];
}  // namespace cuda
}  // namespace lma

namespace {

// Runs kernel(args...) for every block of grid, block after block, each
// with NUM_THREADS emulated threads.
struct EmuLaunch {
  template <typename... KernelArgs, typename... Args>
  void operator()(void (*kernel)(KernelArgs...), dim3 grid, size_t smem,
                  Args... args) const {
    using lma::cuda::NUM_THREADS;
    TORCH_CHECK(smem <= sizeof(lma::cuda::smem_raw),
                "emulated launch asks for ", smem, " bytes of shared memory");
    gridDim = grid;
    blockDim = dim3(NUM_THREADS);
    const std::function<void()> body = [&] { kernel(args...); };
    for (unsigned z = 0; z < grid.z; ++z) {
      for (unsigned y = 0; y < grid.y; ++y) {
        for (unsigned x = 0; x < grid.x; ++x) {
          blockIdx = dim3(x, y, z);
          std::memset(lma::cuda::smem_raw, 0xff, smem);
          lma_emu::block.run(NUM_THREADS, body);
        }
      }
    }
  }
};

// run_block of common/local_attention_blocks.h, emulated.
at::Tensor emulated_block(lma::Block block, const at::Tensor& x,
                          const at::Tensor& y, at::ScalarType dtype,
                          int64_t window, int64_t dilation) {
  return lma::cuda::run_block(EmuLaunch{}, block, x, y, dtype, window,
                              dilation);
}

// local_correlation_* and local_aggregation_* with the emulated building
// blocks.
LMA_DEFINE_BILINEAR_KERNELS(local_correlation_forward,
                            local_correlation_backward, lma::kCorrelation,
                            emulated_block)
LMA_DEFINE_BILINEAR_KERNELS(local_aggregation_forward,
                            local_aggregation_backward, lma::kAggregation,
                            emulated_block)

at::Tensor bias_or_undefined(const std::optional<at::Tensor>& bias) {
  return bias.has_value() ? *bias : at::Tensor();
}

// The fused ops take the bias as an optional argument.
std::vector<at::Tensor> attention_forward(
    const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
    int64_t window, int64_t dilation, double scale, bool mask_padding,
    const std::optional<at::Tensor>& bias) {
  return lma::cuda::attention_forward(EmuLaunch{}, q, k, v, window, dilation,
                                      scale, mask_padding,
                                      bias_or_undefined(bias));
}

std::vector<at::Tensor> attention_backward(
    const at::Tensor& grad_out, const at::Tensor& q, const at::Tensor& k,
    const at::Tensor& v, const at::Tensor& out, const at::Tensor& lse,
    int64_t window, int64_t dilation, double scale, bool mask_padding,
    const std::optional<at::Tensor>& bias,
    const std::optional<at::Tensor>& grad_lse) {
  return lma::cuda::attention_backward(
      EmuLaunch{}, grad_out, q, k, v, out, lse, window, dilation, scale,
      mask_padding, bias_or_undefined(bias), bias_or_undefined(grad_lse));
}

// {ni, nj, cc, ks, shared bytes} of the launch plan of a kernel family.
std::vector<int64_t> launch_plan(int64_t window, int64_t dilation, int64_t C,
                                 int64_t acc_size, int64_t extra,
                                 bool key_stage, bool value_stage,
                                 bool merge) {
  lma::cuda::Geometry g =
      lma::cuda::make_geometry(1, 1, C, C, 1, 1, window, dilation);
  const size_t smem = lma::cuda::plan(g, static_cast<size_t>(acc_size),
                                      static_cast<int>(extra), key_stage,
                                      value_stage, merge);
  return {g.ni, g.nj, g.cc, g.ks, static_cast<int64_t>(smem)};
}

}  // namespace

// TORCH_LIBRARY pastes its namespace argument: expand the name first.
#define LMA_EMU_LIBRARY(ns, m) TORCH_LIBRARY(ns, m)

LMA_EMU_LIBRARY(TORCH_EXTENSION_NAME, m) {
  m.def(
      "local_attention_forward(Tensor q, Tensor k, Tensor v, int window, "
      "int dilation, float scale, bool mask_padding, Tensor? bias=None) -> "
      "Tensor[]",
      &attention_forward);
  m.def(
      "local_attention_backward(Tensor grad_out, Tensor q, Tensor k, "
      "Tensor v, Tensor out, Tensor lse, int window, int dilation, "
      "float scale, bool mask_padding, Tensor? bias=None, "
      "Tensor? grad_lse=None) -> Tensor[]",
      &attention_backward);
  m.def(
      "local_correlation_forward(Tensor x, Tensor y, int window, "
      "int dilation) -> Tensor",
      &local_correlation_forward);
  m.def(
      "local_correlation_backward(Tensor grad, Tensor x, Tensor y, "
      "int window, int dilation) -> Tensor[]",
      &local_correlation_backward);
  m.def(
      "local_aggregation_forward(Tensor x, Tensor y, int window, "
      "int dilation) -> Tensor",
      &local_aggregation_forward);
  m.def(
      "local_aggregation_backward(Tensor grad, Tensor x, Tensor y, "
      "int window, int dilation) -> Tensor[]",
      &local_aggregation_backward);
  m.def(
      "launch_plan(int window, int dilation, int channels, int acc_size, "
      "int extra, bool key_stage, bool value_stage, bool merge) -> int[]",
      &launch_plan);
}
