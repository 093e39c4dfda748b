// Host side of the CUDA kernels of the local memory attention ops: argument
// checks, device guard and stream, then the op bodies of
// local_attention_cuda_ops.cuh with a CUDA kernel launcher. These are the six
// entry points declared in common/local_attention.h.
#include <ATen/ATen.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>

#include <utility>
#include <vector>

#include "common/local_attention.h"
#include "cuda/local_attention_cuda_ops.cuh"

namespace lma {

namespace {

constexpr int64_t kMaxGridYZ = 65535;

// ---- argument checks -------------------------------------------------------
void check_tensor(const char* fn, const char* name, const at::Tensor& t,
                  int64_t dim, const at::Tensor& like) {
  TORCH_CHECK(t.defined(), fn, ": ", name, " is undefined");
  TORCH_CHECK(t.is_cuda(), fn, ": ", name, " must be a CUDA tensor, got one on ",
              t.device());
  TORCH_CHECK(t.dim() == dim, fn, ": ", name, " must be ", dim,
              "-D, got shape ", t.sizes());
  TORCH_CHECK(t.device() == like.device(), fn, ": ", name, " is on ",
              t.device(), " but the other inputs are on ", like.device());
  TORCH_CHECK(t.scalar_type() == like.scalar_type(), fn, ": ", name,
              " has dtype ", t.scalar_type(), " but the other inputs have ",
              like.scalar_type());
}

void check_window(const char* fn, int64_t window, int64_t dilation) {
  TORCH_CHECK(window >= 1 && window % 2 == 1, fn,
              ": window must be odd and >= 1, got ", window);
  TORCH_CHECK(dilation >= 1, fn, ": dilation must be >= 1, got ", dilation);
  // offsets (window / 2) * dilation and halo sizes must stay in int range
  TORCH_CHECK((window / 2) * dilation < (1 << 28) && window < (1 << 14), fn,
              ": window ", window, " with dilation ", dilation,
              " is too large");
}

void check_sizes(const char* fn, int64_t B, int64_t T, int64_t H, int64_t W) {
  TORCH_CHECK(B * T <= kMaxGridYZ, fn, ": B * T = ", B * T,
              " exceeds the CUDA grid limit ", kMaxGridYZ);
  TORCH_CHECK(H < (1 << 30) && W < (1 << 30), fn, ": map ", H, "x", W,
              " is too large");
}

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

void check_qk(const char* fn, const at::Tensor& q, const at::Tensor& k) {
  TORCH_CHECK(k.size(0) == q.size(0) && k.size(2) == q.size(1) &&
                  k.size(3) == q.size(2) && k.size(4) == q.size(3),
              fn, ": k must be (B, T, C, H, W) to match q (B, C, H, W) ",
              q.sizes(), ", got ", k.sizes());
}

// bias: undefined, or (T, window * window) on the device of q.
void check_bias(const char* fn, const at::Tensor& bias, const at::Tensor& q,
                int64_t T, int64_t window) {
  if (!bias.defined()) return;
  TORCH_CHECK(bias.device() == q.device() && bias.is_floating_point(), fn,
              ": bias must be a floating point tensor on ", q.device());
  TORCH_CHECK(bias.dim() == 2 && bias.size(0) == T &&
                  bias.size(1) == window * window,
              fn, ": bias must be (T, window * window) = (", T, ", ",
              window * window, "), got ", bias.sizes());
}

void check_attn_v(const char* fn, const at::Tensor& attn, const at::Tensor& v,
                  int64_t window) {
  const auto expected = std::vector<int64_t>{
      v.size(0), v.size(1), window * window, v.size(3), v.size(4)};
  TORCH_CHECK(attn.sizes() == at::IntArrayRef(expected), fn,
              ": attn must be (B, T, window * window, H, W) = ",
              at::IntArrayRef(expected), " to match v ", v.sizes(),
              " and window ", window, ", got ", attn.sizes());
}

}  // namespace

// ---------------------------------------------------------------------------
// fused local attention
// ---------------------------------------------------------------------------
std::vector<at::Tensor> local_attention_forward_cuda(
    const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
    int64_t window, int64_t dilation, double scale, bool mask_padding,
    const at::Tensor& bias) {
  const char* fn = "local_attention_forward_cuda";
  check_tensor(fn, "q", q, 4, q);
  check_tensor(fn, "k", k, 5, q);
  check_tensor(fn, "v", v, 5, q);
  check_window(fn, window, dilation);
  check_qk(fn, q, k);
  TORCH_CHECK(v.size(0) == k.size(0) && v.size(1) == k.size(1) &&
                  v.size(3) == k.size(3) && v.size(4) == k.size(4),
              fn, ": v must be (B, T, Cv, H, W) to match k ", k.sizes(),
              ", got ", v.sizes());
  check_sizes(fn, k.size(0), k.size(1), k.size(3), k.size(4));
  check_bias(fn, bias, q, k.size(1), window);
  const at::cuda::CUDAGuard device_guard(q.device());
  const CudaLaunch launch{at::cuda::getCurrentCUDAStream()};
  return cuda::attention_forward(launch, q.contiguous(), k.contiguous(),
                                 v.contiguous(), window, dilation, scale,
                                 mask_padding, bias);
}

std::vector<at::Tensor> local_attention_backward_cuda(
    const at::Tensor& grad_out, const at::Tensor& q, const at::Tensor& k,
    const at::Tensor& v, const at::Tensor& out, const at::Tensor& lse,
    int64_t window, int64_t dilation, double scale, bool mask_padding,
    const at::Tensor& bias) {
  const char* fn = "local_attention_backward_cuda";
  check_tensor(fn, "q", q, 4, q);
  check_tensor(fn, "k", k, 5, q);
  check_tensor(fn, "v", v, 5, q);
  check_tensor(fn, "grad_out", grad_out, 4, q);
  check_tensor(fn, "out", out, 4, q);
  TORCH_CHECK(lse.defined() && lse.device() == q.device() &&
                  lse.is_floating_point(),
              fn, ": lse must be a floating point tensor on ", q.device());
  check_window(fn, window, dilation);
  check_qk(fn, q, k);
  const int64_t B = q.size(0), H = q.size(2), W = q.size(3), Cv = v.size(2);
  TORCH_CHECK(v.size(0) == B && v.size(1) == k.size(1) && v.size(3) == H &&
                  v.size(4) == W,
              fn, ": v must be (B, T, Cv, H, W) to match k ", k.sizes(),
              ", got ", v.sizes());
  TORCH_CHECK(grad_out.sizes() == at::IntArrayRef({B, Cv, H, W}) &&
                  out.sizes() == grad_out.sizes(),
              fn, ": grad_out and out must be (B, Cv, H, W) = ",
              at::IntArrayRef({B, Cv, H, W}), ", got ", grad_out.sizes(),
              " and ", out.sizes());
  TORCH_CHECK(lse.sizes() == at::IntArrayRef({B, H, W}), fn,
              ": lse must be (B, H, W) = ", at::IntArrayRef({B, H, W}),
              ", got ", lse.sizes());
  check_sizes(fn, B, k.size(1), H, W);
  check_bias(fn, bias, q, k.size(1), window);
  const at::cuda::CUDAGuard device_guard(q.device());
  const CudaLaunch launch{at::cuda::getCurrentCUDAStream()};
  return cuda::attention_backward(
      launch, grad_out.contiguous(), q.contiguous(), k.contiguous(),
      v.contiguous(), out.contiguous(), lse.contiguous(), window, dilation,
      scale, mask_padding, bias);
}

// ---------------------------------------------------------------------------
// unfused building blocks
// ---------------------------------------------------------------------------
at::Tensor local_correlation_forward_cuda(const at::Tensor& q,
                                          const at::Tensor& k, int64_t window,
                                          int64_t dilation) {
  const char* fn = "local_correlation_forward_cuda";
  check_tensor(fn, "q", q, 4, q);
  check_tensor(fn, "k", k, 5, q);
  check_window(fn, window, dilation);
  check_qk(fn, q, k);
  check_sizes(fn, k.size(0), k.size(1), k.size(3), k.size(4));
  const at::cuda::CUDAGuard device_guard(q.device());
  const CudaLaunch launch{at::cuda::getCurrentCUDAStream()};
  return cuda::correlation_forward(launch, q.contiguous(), k.contiguous(),
                                   window, dilation);
}

std::vector<at::Tensor> local_correlation_backward_cuda(
    const at::Tensor& grad_corr, const at::Tensor& q, const at::Tensor& k,
    int64_t window, int64_t dilation) {
  const char* fn = "local_correlation_backward_cuda";
  check_tensor(fn, "q", q, 4, q);
  check_tensor(fn, "k", k, 5, q);
  check_tensor(fn, "grad_corr", grad_corr, 5, q);
  check_window(fn, window, dilation);
  check_qk(fn, q, k);
  const auto expected = std::vector<int64_t>{
      k.size(0), k.size(1), window * window, k.size(3), k.size(4)};
  TORCH_CHECK(grad_corr.sizes() == at::IntArrayRef(expected), fn,
              ": grad_corr must be (B, T, window * window, H, W) = ",
              at::IntArrayRef(expected), ", got ", grad_corr.sizes());
  check_sizes(fn, k.size(0), k.size(1), k.size(3), k.size(4));
  const at::cuda::CUDAGuard device_guard(q.device());
  const CudaLaunch launch{at::cuda::getCurrentCUDAStream()};
  return cuda::correlation_backward(launch, grad_corr.contiguous(),
                                    q.contiguous(), k.contiguous(), window,
                                    dilation);
}

at::Tensor local_aggregation_forward_cuda(const at::Tensor& attn,
                                          const at::Tensor& v, int64_t window,
                                          int64_t dilation) {
  const char* fn = "local_aggregation_forward_cuda";
  check_tensor(fn, "attn", attn, 5, attn);
  check_tensor(fn, "v", v, 5, attn);
  check_window(fn, window, dilation);
  check_attn_v(fn, attn, v, window);
  check_sizes(fn, v.size(0), v.size(1), v.size(3), v.size(4));
  const at::cuda::CUDAGuard device_guard(v.device());
  const CudaLaunch launch{at::cuda::getCurrentCUDAStream()};
  return cuda::aggregation_forward(launch, attn.contiguous(), v.contiguous(),
                                   window, dilation);
}

std::vector<at::Tensor> local_aggregation_backward_cuda(
    const at::Tensor& grad_out, const at::Tensor& attn, const at::Tensor& v,
    int64_t window, int64_t dilation) {
  const char* fn = "local_aggregation_backward_cuda";
  check_tensor(fn, "attn", attn, 5, attn);
  check_tensor(fn, "v", v, 5, attn);
  check_tensor(fn, "grad_out", grad_out, 4, attn);
  check_window(fn, window, dilation);
  check_attn_v(fn, attn, v, window);
  const auto expected =
      std::vector<int64_t>{v.size(0), v.size(2), v.size(3), v.size(4)};
  TORCH_CHECK(grad_out.sizes() == at::IntArrayRef(expected), fn,
              ": grad_out must be (B, Cv, H, W) = ", at::IntArrayRef(expected),
              ", got ", grad_out.sizes());
  check_sizes(fn, v.size(0), v.size(1), v.size(3), v.size(4));
  const at::cuda::CUDAGuard device_guard(v.device());
  const CudaLaunch launch{at::cuda::getCurrentCUDAStream()};
  return cuda::aggregation_backward(launch, grad_out.contiguous(),
                                    attn.contiguous(), v.contiguous(), window,
                                    dilation);
}

}  // namespace lma
