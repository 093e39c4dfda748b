// Python module that runs the CUDA kernels of the local attention ops on the
// host (see emu_runtime.h) through the same op bodies as the CUDA build
// (../local_attention_cuda_ops.cuh). Built on demand by the tests with
// torch.utils.cpp_extension.load; not part of lma_mmseg._ext.
#include <torch/extension.h>

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

// Runs kernel(args...) for every block of grid with NUM_THREADS threads.
struct EmuLaunch {
  template <typename... KernelArgs, typename... Args>
  void operator()(void (*kernel)(KernelArgs...), dim3 grid, size_t smem,
                  Args... args) const {
    using lma::cuda::NUM_THREADS;
    TORCH_CHECK(smem <= sizeof(lma::cuda::smem_raw),
                "emulated launch asks for ", smem, " bytes of shared memory");
    gridDim = grid;
    blockDim = dim3(NUM_THREADS);
    lma_emu::barrier.reset(NUM_THREADS);
    std::vector<std::thread> threads;
    threads.reserve(NUM_THREADS);
    for (int t = 0; t < NUM_THREADS; ++t) {
      threads.emplace_back([&, t] {
        threadIdx = dim3(t);
        for (unsigned z = 0; z < grid.z; ++z) {
          for (unsigned y = 0; y < grid.y; ++y) {
            for (unsigned x = 0; x < grid.x; ++x) {
              blockIdx = dim3(x, y, z);
              if (t == 0) std::memset(lma::cuda::smem_raw, 0xff, smem);
              __syncthreads();
              kernel(args...);
              __syncthreads();
            }
          }
        }
      });
    }
    for (auto& th : threads) th.join();
  }
};

// run_block of common/local_attention_blocks.h, emulated.
at::Tensor emulated_block(lma::Block block, const at::Tensor& x,
                          const at::Tensor& y, at::ScalarType dtype,
                          int64_t window, int64_t dilation) {
  return lma::cuda::run_block(EmuLaunch{}, block, x, y, dtype, window,
                              dilation);
}

// Binds the forward and backward of a bilinear op (local_correlation,
// local_aggregation) with the emulated building blocks.
void def_bilinear(pybind11::module& m, const char* forward,
                  const char* backward, const lma::BilinearOp& op) {
  m.def(forward, [op, forward](const at::Tensor& x, const at::Tensor& y,
                               int64_t window, int64_t dilation) {
    return lma::bilinear_forward(forward, op, emulated_block, x, y, window,
                                 dilation);
  });
  m.def(backward, [op, backward](const at::Tensor& grad, const at::Tensor& x,
                                 const at::Tensor& y, int64_t window,
                                 int64_t dilation) {
    return lma::bilinear_backward(backward, op, emulated_block, grad, x, y,
                                  window, dilation);
  });
}

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

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  namespace py = pybind11;
  m.def("local_attention_forward", &attention_forward, py::arg("q"),
        py::arg("k"), py::arg("v"), py::arg("window"), py::arg("dilation"),
        py::arg("scale"), py::arg("mask_padding"),
        py::arg("bias") = py::none());
  m.def("local_attention_backward", &attention_backward, py::arg("grad_out"),
        py::arg("q"), py::arg("k"), py::arg("v"), py::arg("out"),
        py::arg("lse"), py::arg("window"), py::arg("dilation"),
        py::arg("scale"), py::arg("mask_padding"),
        py::arg("bias") = py::none(), py::arg("grad_lse") = py::none());
  def_bilinear(m, "local_correlation_forward", "local_correlation_backward",
               lma::kCorrelation);
  def_bilinear(m, "local_aggregation_forward", "local_aggregation_backward",
               lma::kAggregation);
  m.def("launch_plan", &launch_plan);
}
