// Device dispatch of the local memory attention ops: checks the tensors
// and calls the CPU kernels or, in a build with WITH_CUDA, the CUDA ones.
#include <ATen/ATen.h>
#include <c10/util/Exception.h>

#include <string>
#include <vector>

#include "common/local_attention.h"

namespace lma {
namespace {

const char* kRebuildHint =
    "lma_mmseg._ext was built without CUDA kernels. Rebuild it with CUDA: "
    "`FORCE_CUDA=1 python setup.py build_ext --inplace` (or "
    "`FORCE_CUDA=1 pip install -e .`) with the CUDA toolkit installed.";

// Checks that all tensors share the device of the first one and that the
// device has kernels in this build. Returns true for CUDA.
bool check_device(const char* op,
                  std::initializer_list<std::pair<const char*, at::Tensor>>
                      tensors) {
  const auto& first = *tensors.begin();
  for (const auto& nt : tensors) {
    TORCH_CHECK(nt.second.defined(), op, ": ", nt.first, " is undefined");
    TORCH_CHECK(nt.second.device() == first.second.device(), op, ": ",
                first.first, " is on ", first.second.device(), " but ",
                nt.first, " is on ", nt.second.device());
  }
  const at::Device dev = first.second.device();
  if (dev.is_cuda()) {
#ifdef WITH_CUDA
    return true;
#else
    TORCH_CHECK(false, op, ": got CUDA tensors. ", kRebuildHint);
#endif
  }
  TORCH_CHECK(dev.is_cpu(), op, ": tensors on ", dev,
              " are not supported (CPU or CUDA only)");
  return false;
}

void check_dims(const char* op, const at::Tensor& t, const char* name,
                int64_t dim) {
  TORCH_CHECK(t.dim() == dim, op, ": ", name, " must be ", dim,
              "-D, got shape ", t.sizes());
}

}  // namespace

std::vector<at::Tensor> local_attention_forward(const at::Tensor& q,
                                                const at::Tensor& k,
                                                const at::Tensor& v,
                                                int64_t window,
                                                int64_t dilation, double scale,
                                                bool mask_padding) {
  const char* op = "local_attention_forward";
  check_dims(op, q, "q", 4);
  check_dims(op, k, "k", 5);
  check_dims(op, v, "v", 5);
  if (check_device(op, {{"q", q}, {"k", k}, {"v", v}})) {
#ifdef WITH_CUDA
    return local_attention_forward_cuda(q.contiguous(), k.contiguous(),
                                        v.contiguous(), window, dilation,
                                        scale, mask_padding);
#endif
  }
  return local_attention_forward_cpu(q.contiguous(), k.contiguous(),
                                     v.contiguous(), window, dilation, scale,
                                     mask_padding);
}

std::vector<at::Tensor> local_attention_backward(
    const at::Tensor& grad_out, const at::Tensor& q, const at::Tensor& k,
    const at::Tensor& v, const at::Tensor& out, const at::Tensor& lse,
    int64_t window, int64_t dilation, double scale, bool mask_padding) {
  const char* op = "local_attention_backward";
  check_dims(op, grad_out, "grad_out", 4);
  if (check_device(op, {{"grad_out", grad_out}, {"q", q}, {"k", k},
                        {"v", v}, {"out", out}, {"lse", lse}})) {
#ifdef WITH_CUDA
    return local_attention_backward_cuda(
        grad_out.contiguous(), q.contiguous(), k.contiguous(), v.contiguous(),
        out.contiguous(), lse.contiguous(), window, dilation, scale,
        mask_padding);
#endif
  }
  return local_attention_backward_cpu(
      grad_out.contiguous(), q.contiguous(), k.contiguous(), v.contiguous(),
      out.contiguous(), lse.contiguous(), window, dilation, scale,
      mask_padding);
}

at::Tensor local_correlation_forward(const at::Tensor& q, const at::Tensor& k,
                                     int64_t window, int64_t dilation) {
  const char* op = "local_correlation_forward";
  check_dims(op, q, "q", 4);
  check_dims(op, k, "k", 5);
  if (check_device(op, {{"q", q}, {"k", k}})) {
#ifdef WITH_CUDA
    return local_correlation_forward_cuda(q.contiguous(), k.contiguous(),
                                          window, dilation);
#endif
  }
  return local_correlation_forward_cpu(q.contiguous(), k.contiguous(), window,
                                       dilation);
}

std::vector<at::Tensor> local_correlation_backward(const at::Tensor& grad_corr,
                                                   const at::Tensor& q,
                                                   const at::Tensor& k,
                                                   int64_t window,
                                                   int64_t dilation) {
  const char* op = "local_correlation_backward";
  check_dims(op, grad_corr, "grad_corr", 5);
  if (check_device(op, {{"grad_corr", grad_corr}, {"q", q}, {"k", k}})) {
#ifdef WITH_CUDA
    return local_correlation_backward_cuda(grad_corr.contiguous(),
                                           q.contiguous(), k.contiguous(),
                                           window, dilation);
#endif
  }
  return local_correlation_backward_cpu(grad_corr.contiguous(),
                                        q.contiguous(), k.contiguous(),
                                        window, dilation);
}

at::Tensor local_aggregation_forward(const at::Tensor& attn,
                                     const at::Tensor& v, int64_t window,
                                     int64_t dilation) {
  const char* op = "local_aggregation_forward";
  check_dims(op, attn, "attn", 5);
  check_dims(op, v, "v", 5);
  if (check_device(op, {{"attn", attn}, {"v", v}})) {
#ifdef WITH_CUDA
    return local_aggregation_forward_cuda(attn.contiguous(), v.contiguous(),
                                          window, dilation);
#endif
  }
  return local_aggregation_forward_cpu(attn.contiguous(), v.contiguous(),
                                       window, dilation);
}

std::vector<at::Tensor> local_aggregation_backward(const at::Tensor& grad_out,
                                                   const at::Tensor& attn,
                                                   const at::Tensor& v,
                                                   int64_t window,
                                                   int64_t dilation) {
  const char* op = "local_aggregation_backward";
  check_dims(op, grad_out, "grad_out", 4);
  if (check_device(op, {{"grad_out", grad_out}, {"attn", attn}, {"v", v}})) {
#ifdef WITH_CUDA
    return local_aggregation_backward_cuda(grad_out.contiguous(),
                                           attn.contiguous(), v.contiguous(),
                                           window, dilation);
#endif
  }
  return local_aggregation_backward_cpu(grad_out.contiguous(),
                                        attn.contiguous(), v.contiguous(),
                                        window, dilation);
}

}  // namespace lma
