// Host side of the CUDA kernels of the local memory attention ops: device
// guard and stream, then the op bodies of local_attention_cuda_ops.cuh (which
// check the arguments) with a CUDA kernel launcher. These are the six entry
// points declared in common/local_attention.h.
#include <ATen/core/Tensor.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include <utility>
#include <vector>

#include "common/local_attention.h"
#include "common/local_attention_blocks.h"
#include "cuda/local_attention_cuda_ops.cuh"

namespace lma {

namespace {

// Starts kernel<<<grid, NUM_THREADS, smem, stream>>>(args...) and checks
// the launch.
struct CudaLaunch {
  cudaStream_t stream;

  template <typename... KernelArgs, typename... Args>
  void operator()(void (*kernel)(KernelArgs...), dim3 grid, size_t smem,
                  Args&&... args) const {
    kernel<<<grid, cuda::NUM_THREADS, smem, stream>>>(
        std::forward<Args>(args)...);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
};

// Runs body(launch, args...), an op body of local_attention_cuda_ops.cuh
// (which checks the arguments), on the CUDA device of `on` with its current
// stream.
template <typename Body, typename... Args>
auto run_on_device(const at::Tensor& on, Body body, const Args&... args) {
  TORCH_CHECK(on.is_cuda(), "local attention CUDA kernels: the inputs must ",
              "be CUDA tensors, got one on ", on.device());
  const c10::cuda::CUDAGuard device_guard(on.device());
  return body(CudaLaunch{c10::cuda::getCurrentCUDAStream()}, args...);
}

}  // namespace

// ---------------------------------------------------------------------------
// fused local attention
// ---------------------------------------------------------------------------
std::vector<at::Tensor> local_attention_forward_cuda(
    const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
    int64_t window, int64_t dilation, double scale, bool mask_padding,
    const at::Tensor& bias) {
  return run_on_device(q, &cuda::attention_forward<CudaLaunch>, q, k, v,
                       window, dilation, scale, mask_padding, bias);
}

std::vector<at::Tensor> local_attention_backward_cuda(
    const at::Tensor& grad_out, const at::Tensor& q, const at::Tensor& k,
    const at::Tensor& v, const at::Tensor& out, const at::Tensor& lse,
    int64_t window, int64_t dilation, double scale, bool mask_padding,
    const at::Tensor& bias, const at::Tensor& grad_lse) {
  return run_on_device(q, &cuda::attention_backward<CudaLaunch>, grad_out, q,
                       k, v, out, lse, window, dilation, scale, mask_padding,
                       bias, grad_lse);
}

// ---------------------------------------------------------------------------
// unfused ops, from the building blocks of local_attention_cuda_ops.cuh
// ---------------------------------------------------------------------------
namespace {

// run_block of common/local_attention_blocks.h on the device of y.
struct CudaBlocks {
  at::Tensor operator()(Block block, const at::Tensor& x, const at::Tensor& y,
                        at::ScalarType dtype, int64_t window,
                        int64_t dilation) const {
    return run_on_device(y, &cuda::run_block<CudaLaunch>, block, x, y, dtype,
                         window, dilation);
  }
};

}  // namespace

LMA_DEFINE_BILINEAR_KERNELS(local_correlation_forward_cuda,
                            local_correlation_backward_cuda, kCorrelation,
                            CudaBlocks())
LMA_DEFINE_BILINEAR_KERNELS(local_aggregation_forward_cuda,
                            local_aggregation_backward_cuda, kAggregation,
                            CudaBlocks())

}  // namespace lma
