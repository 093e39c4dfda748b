// Operator registration of the local memory attention ops: the schemas of
// the `lma` namespace (torch.ops.lma.*) and their CPU and, in a build with
// WITH_CUDA, CUDA kernels, registered from the kernel table of each device
// (kernels_cpu, kernels_cuda of common/local_attention.h). The kernels take
// any strides and check their arguments (common/local_attention_checks.h),
// so a direct call of torch.ops.lma.* with inconsistent tensors fails with a
// message instead of reading out of bounds. The Python side adds the fake
// (meta) kernels and the autograd formulas (lma_mmseg/ops/library.py) and
// the public entry points (lma_mmseg/ops/functional.py). The Tensor class
// is all it needs of ATen (ATen/ATen.h doubles its compile time).
#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>
#include <torch/library.h>

#include <optional>
#include <tuple>
#include <vector>

#include "common/local_attention.h"

namespace lma {
namespace {

using Pair = std::tuple<at::Tensor, at::Tensor>;
using Quad = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor>;
using OptTensor = std::optional<at::Tensor>;

at::Tensor bias_or_undefined(const OptTensor& t) {
  return t.has_value() ? *t : at::Tensor();
}

// ---- the schemas' signatures over the kernel table K of a device ----
template <typename K>
Pair attention_forward(const at::Tensor& q, const at::Tensor& k,
                       const at::Tensor& v, int64_t window, int64_t dilation,
                       double scale, bool mask_padding, const OptTensor& bias) {
  const auto r = K::attention_forward(q, k, v, window, dilation, scale,
                                      mask_padding, bias_or_undefined(bias));
  return {r[0], r[1]};
}

// grad_q, grad_k, grad_v and grad_bias (0 elements without a bias), from
// the gradients of both outputs (grad_lse None: zero).
template <typename K>
Quad attention_backward(const at::Tensor& grad_out, const at::Tensor& q,
                        const at::Tensor& k, const at::Tensor& v,
                        const at::Tensor& out, const at::Tensor& lse,
                        int64_t window, int64_t dilation, double scale,
                        bool mask_padding, const OptTensor& bias,
                        const OptTensor& grad_lse) {
  const auto r = K::attention_backward(
      grad_out, q, k, v, out, lse, window, dilation, scale, mask_padding,
      bias_or_undefined(bias), bias_or_undefined(grad_lse));
  return {r[0], r[1], r[2], r[3].defined() ? r[3] : q.new_empty({0})};
}

// The backward kernels of the unfused ops: (grad, x, y, window, dilation)
// -> {grad_x, grad_y}.
template <auto kernel>
Pair unfused_backward(const at::Tensor& grad, const at::Tensor& x,
                      const at::Tensor& y, int64_t window, int64_t dilation) {
  const auto r = kernel(grad, x, y, window, dilation);
  return {r[0], r[1]};
}

// Registers the six ops with the kernels of table K for one dispatch key.
template <typename K>
void register_kernels(torch::Library& m, K) {
  m.impl("local_attention_forward", &attention_forward<K>);
  m.impl("local_attention_backward", &attention_backward<K>);
  m.impl("local_correlation_forward", K::correlation_forward);
  m.impl("local_correlation_backward",
         &unfused_backward<K::correlation_backward>);
  m.impl("local_aggregation_forward", K::aggregation_forward);
  m.impl("local_aggregation_backward",
         &unfused_backward<K::aggregation_backward>);
}

}  // namespace
}  // namespace lma

TORCH_LIBRARY(lma, m) {
  // fake (meta) kernels and autograd formulas are registered there
  m.set_python_module("lma_mmseg.ops.library");
  m.def(
      "local_attention_forward(Tensor q, Tensor k, Tensor v, int window, "
      "int dilation, float scale, bool mask_padding, Tensor? bias=None) "
      "-> (Tensor, Tensor)");
  m.def(
      "local_attention_backward(Tensor grad_out, Tensor q, Tensor k, "
      "Tensor v, Tensor out, Tensor lse, int window, int dilation, "
      "float scale, bool mask_padding, Tensor? bias=None, "
      "Tensor? grad_lse=None) -> (Tensor, Tensor, Tensor, Tensor)");
  m.def(
      "local_correlation_forward(Tensor q, Tensor k, int window, "
      "int dilation) -> Tensor");
  m.def(
      "local_correlation_backward(Tensor grad_corr, Tensor q, Tensor k, "
      "int window, int dilation) -> (Tensor, Tensor)");
  m.def(
      "local_aggregation_forward(Tensor attn, Tensor v, int window, "
      "int dilation) -> Tensor");
  m.def(
      "local_aggregation_backward(Tensor grad_out, Tensor attn, Tensor v, "
      "int window, int dilation) -> (Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(lma, CPU, m) {
  lma::register_kernels(m, lma::kernels_cpu());
}

#ifdef WITH_CUDA
TORCH_LIBRARY_IMPL(lma, CUDA, m) {
  lma::register_kernels(m, lma::kernels_cuda());
}
#endif
