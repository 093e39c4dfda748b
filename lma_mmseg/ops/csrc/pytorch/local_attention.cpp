// Operator registration of the local memory attention ops: the schemas of
// the `lma` namespace (torch.ops.lma.*) and their CPU and, in a build with
// WITH_CUDA, CUDA kernels. The kernels take any strides; they check the
// shapes here, so a direct call of torch.ops.lma.* with inconsistent
// tensors fails with a message instead of reading out of bounds. The Python
// side (lma_mmseg/ops/local_attention.py) adds the fake (meta) kernels, the
// autograd formulas and the public entry points.
#include <ATen/ATen.h>
#include <c10/util/Exception.h>
#include <torch/library.h>

#include <optional>
#include <tuple>
#include <vector>

#include "common/local_attention.h"

namespace lma {
namespace {

void check_dims(const char* op, const at::Tensor& t, const char* name,
                int64_t dim) {
  TORCH_CHECK(t.dim() == dim, op, ": ", name, " must be ", dim,
              "-D, got shape ", t.sizes());
}

void check_like(const char* op, const at::Tensor& t, const char* name,
                const at::Tensor& like, const char* like_name) {
  TORCH_CHECK(t.device() == like.device(), op, ": ", like_name, " is on ",
              like.device(), " but ", name, " is on ", t.device());
  TORCH_CHECK(t.scalar_type() == like.scalar_type(), op, ": ", like_name,
              " has dtype ", like.scalar_type(), " but ", name, " has ",
              t.scalar_type());
}

void check_window(const char* op, int64_t window, int64_t dilation) {
  TORCH_CHECK(window >= 1 && window % 2 == 1, op,
              ": window must be odd and >= 1, got ", window);
  TORCH_CHECK(dilation >= 1, op, ": dilation must be >= 1, got ", dilation);
}

// q (B, C, H, W), k (B, T, C, H, W), v (B, T, Cv, H, W) (v optional).
void check_qkv(const char* op, const at::Tensor& q, const at::Tensor& k,
               const at::Tensor* v) {
  check_dims(op, q, "q", 4);
  check_dims(op, k, "k", 5);
  check_like(op, k, "k", q, "q");
  TORCH_CHECK(k.size(0) == q.size(0) && k.size(2) == q.size(1) &&
                  k.size(3) == q.size(2) && k.size(4) == q.size(3),
              op, ": k must be (B, T, C, H, W) to match q (B, C, H, W) ",
              q.sizes(), ", got ", k.sizes());
  if (v != nullptr) {
    check_dims(op, *v, "v", 5);
    check_like(op, *v, "v", q, "q");
    TORCH_CHECK(v->size(0) == k.size(0) && v->size(1) == k.size(1) &&
                    v->size(3) == k.size(3) && v->size(4) == k.size(4),
                op, ": v must be (B, T, Cv, H, W) to match k ", k.sizes(),
                ", got ", v->sizes());
  }
}

// attn (B, T, window * window, H, W) against v (B, T, Cv, H, W).
void check_attn_v(const char* op, const at::Tensor& attn, const at::Tensor& v,
                  int64_t window) {
  check_dims(op, attn, "attn", 5);
  check_dims(op, v, "v", 5);
  check_like(op, v, "v", attn, "attn");
  TORCH_CHECK(attn.size(0) == v.size(0) && attn.size(1) == v.size(1) &&
                  attn.size(2) == window * window &&
                  attn.size(3) == v.size(3) && attn.size(4) == v.size(4),
              op, ": attn must be (B, T, window * window, H, W) to match v ",
              v.sizes(), " and window ", window, ", got ", attn.sizes());
}

void check_sizes(const char* op, const at::Tensor& t, const char* name,
                 at::IntArrayRef expected, const at::Tensor& like) {
  TORCH_CHECK(t.sizes() == expected, op, ": ", name, " must have shape ",
              expected, ", got ", t.sizes());
  TORCH_CHECK(t.device() == like.device(), op, ": ", name, " is on ",
              t.device(), " but the inputs are on ", like.device());
}

// ---- argument checks shared by the CPU and CUDA registrations ----
void check_attention_forward(const at::Tensor& q, const at::Tensor& k,
                             const at::Tensor& v, int64_t window,
                             int64_t dilation) {
  const char* op = "lma::local_attention_forward";
  check_window(op, window, dilation);
  check_qkv(op, q, k, &v);
}

void check_attention_backward(const at::Tensor& grad_out, const at::Tensor& q,
                              const at::Tensor& k, const at::Tensor& v,
                              const at::Tensor& out, const at::Tensor& lse,
                              int64_t window, int64_t dilation) {
  const char* op = "lma::local_attention_backward";
  check_window(op, window, dilation);
  check_qkv(op, q, k, &v);
  const int64_t B = q.size(0), H = q.size(2), W = q.size(3), Cv = v.size(2);
  check_sizes(op, grad_out, "grad_out", {B, Cv, H, W}, q);
  check_sizes(op, out, "out", {B, Cv, H, W}, q);
  check_sizes(op, lse, "lse", {B, H, W}, q);
  TORCH_CHECK(grad_out.is_floating_point() && lse.is_floating_point(), op,
              ": grad_out and lse must be floating point tensors");
}

void check_correlation_backward(const at::Tensor& grad_corr,
                                const at::Tensor& q, const at::Tensor& k,
                                int64_t window, int64_t dilation) {
  const char* op = "lma::local_correlation_backward";
  check_window(op, window, dilation);
  check_qkv(op, q, k, nullptr);
  check_sizes(op, grad_corr, "grad_corr",
              {k.size(0), k.size(1), window * window, k.size(3), k.size(4)},
              q);
  TORCH_CHECK(grad_corr.is_floating_point(), op,
              ": grad_corr must be a floating point tensor");
}

void check_aggregation_backward(const at::Tensor& grad_out,
                                const at::Tensor& attn, const at::Tensor& v,
                                int64_t window, int64_t dilation) {
  const char* op = "lma::local_aggregation_backward";
  check_window(op, window, dilation);
  check_attn_v(op, attn, v, window);
  check_sizes(op, grad_out, "grad_out",
              {v.size(0), v.size(2), v.size(3), v.size(4)}, v);
  TORCH_CHECK(grad_out.is_floating_point(), op,
              ": grad_out must be a floating point tensor");
}

using Pair = std::tuple<at::Tensor, at::Tensor>;
using Quad = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor>;
using OptTensor = std::optional<at::Tensor>;

Pair pair(const std::vector<at::Tensor>& r) { return {r[0], r[1]}; }

// grad_q, grad_k, grad_v and grad_bias (0 elements without a bias).
Quad quad(const std::vector<at::Tensor>& r, const at::Tensor& q) {
  return {r[0], r[1], r[2], r[3].defined() ? r[3] : q.new_empty({0})};
}

// The bias (T, window * window) as an at::Tensor (undefined when absent).
at::Tensor check_bias(const char* op, const OptTensor& bias,
                      const at::Tensor& q, const at::Tensor& k,
                      int64_t window) {
  if (!bias.has_value() || !bias->defined()) return at::Tensor();
  check_dims(op, *bias, "bias", 2);
  check_like(op, *bias, "bias", q, "q");
  TORCH_CHECK(bias->size(0) == k.size(1) && bias->size(1) == window * window,
              op, ": bias must be (T, window * window) = (", k.size(1), ", ",
              window * window, "), got ", bias->sizes());
  return *bias;
}

// ---- CPU ----
Pair attention_forward_cpu(const at::Tensor& q, const at::Tensor& k,
                           const at::Tensor& v, int64_t window,
                           int64_t dilation, double scale, bool mask_padding,
                           const OptTensor& bias) {
  check_attention_forward(q, k, v, window, dilation);
  const at::Tensor b =
      check_bias("lma::local_attention_forward", bias, q, k, window);
  return pair(local_attention_forward_cpu(q, k, v, window, dilation, scale,
                                          mask_padding, b));
}

Quad attention_backward_cpu(const at::Tensor& grad_out, const at::Tensor& q,
                            const at::Tensor& k, const at::Tensor& v,
                            const at::Tensor& out, const at::Tensor& lse,
                            int64_t window, int64_t dilation, double scale,
                            bool mask_padding, const OptTensor& bias) {
  check_attention_backward(grad_out, q, k, v, out, lse, window, dilation);
  const at::Tensor b =
      check_bias("lma::local_attention_backward", bias, q, k, window);
  return quad(local_attention_backward_cpu(grad_out, q, k, v, out, lse,
                                           window, dilation, scale,
                                           mask_padding, b),
              q);
}

at::Tensor correlation_forward_cpu(const at::Tensor& q, const at::Tensor& k,
                                   int64_t window, int64_t dilation) {
  const char* op = "lma::local_correlation_forward";
  check_window(op, window, dilation);
  check_qkv(op, q, k, nullptr);
  return local_correlation_forward_cpu(q, k, window, dilation);
}

Pair correlation_backward_cpu(const at::Tensor& grad_corr, const at::Tensor& q,
                              const at::Tensor& k, int64_t window,
                              int64_t dilation) {
  check_correlation_backward(grad_corr, q, k, window, dilation);
  return pair(
      local_correlation_backward_cpu(grad_corr, q, k, window, dilation));
}

at::Tensor aggregation_forward_cpu(const at::Tensor& attn, const at::Tensor& v,
                                   int64_t window, int64_t dilation) {
  const char* op = "lma::local_aggregation_forward";
  check_window(op, window, dilation);
  check_attn_v(op, attn, v, window);
  return local_aggregation_forward_cpu(attn, v, window, dilation);
}

Pair aggregation_backward_cpu(const at::Tensor& grad_out,
                              const at::Tensor& attn, const at::Tensor& v,
                              int64_t window, int64_t dilation) {
  check_aggregation_backward(grad_out, attn, v, window, dilation);
  return pair(
      local_aggregation_backward_cpu(grad_out, attn, v, window, dilation));
}

#ifdef WITH_CUDA
// ---- CUDA ----
Pair attention_forward_cuda(const at::Tensor& q, const at::Tensor& k,
                            const at::Tensor& v, int64_t window,
                            int64_t dilation, double scale, bool mask_padding,
                            const OptTensor& bias) {
  check_attention_forward(q, k, v, window, dilation);
  const at::Tensor b =
      check_bias("lma::local_attention_forward", bias, q, k, window);
  return pair(local_attention_forward_cuda(q, k, v, window, dilation, scale,
                                           mask_padding, b));
}

Quad attention_backward_cuda(const at::Tensor& grad_out, const at::Tensor& q,
                             const at::Tensor& k, const at::Tensor& v,
                             const at::Tensor& out, const at::Tensor& lse,
                             int64_t window, int64_t dilation, double scale,
                             bool mask_padding, const OptTensor& bias) {
  check_attention_backward(grad_out, q, k, v, out, lse, window, dilation);
  const at::Tensor b =
      check_bias("lma::local_attention_backward", bias, q, k, window);
  return quad(local_attention_backward_cuda(grad_out.to(q.scalar_type()), q,
                                            k, v, out, lse, window, dilation,
                                            scale, mask_padding, b),
              q);
}

at::Tensor correlation_forward_cuda(const at::Tensor& q, const at::Tensor& k,
                                    int64_t window, int64_t dilation) {
  const char* op = "lma::local_correlation_forward";
  check_window(op, window, dilation);
  check_qkv(op, q, k, nullptr);
  return local_correlation_forward_cuda(q, k, window, dilation);
}

Pair correlation_backward_cuda(const at::Tensor& grad_corr,
                               const at::Tensor& q, const at::Tensor& k,
                               int64_t window, int64_t dilation) {
  check_correlation_backward(grad_corr, q, k, window, dilation);
  return pair(local_correlation_backward_cuda(grad_corr.to(q.scalar_type()),
                                              q, k, window, dilation));
}

at::Tensor aggregation_forward_cuda(const at::Tensor& attn,
                                    const at::Tensor& v, int64_t window,
                                    int64_t dilation) {
  const char* op = "lma::local_aggregation_forward";
  check_window(op, window, dilation);
  check_attn_v(op, attn, v, window);
  return local_aggregation_forward_cuda(attn, v, window, dilation);
}

Pair aggregation_backward_cuda(const at::Tensor& grad_out,
                               const at::Tensor& attn, const at::Tensor& v,
                               int64_t window, int64_t dilation) {
  check_aggregation_backward(grad_out, attn, v, window, dilation);
  return pair(local_aggregation_backward_cuda(grad_out.to(v.scalar_type()),
                                              attn, v, window, dilation));
}
#endif

}  // namespace
}  // namespace lma

TORCH_LIBRARY(lma, m) {
  // fake (meta) kernels and autograd formulas are registered there
  m.set_python_module("lma_mmseg.ops.local_attention");
  m.def(
      "local_attention_forward(Tensor q, Tensor k, Tensor v, int window, "
      "int dilation, float scale, bool mask_padding, Tensor? bias=None) "
      "-> (Tensor, Tensor)");
  m.def(
      "local_attention_backward(Tensor grad_out, Tensor q, Tensor k, "
      "Tensor v, Tensor out, Tensor lse, int window, int dilation, "
      "float scale, bool mask_padding, Tensor? bias=None) "
      "-> (Tensor, Tensor, Tensor, Tensor)");
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
  m.impl("local_attention_forward", &lma::attention_forward_cpu);
  m.impl("local_attention_backward", &lma::attention_backward_cpu);
  m.impl("local_correlation_forward", &lma::correlation_forward_cpu);
  m.impl("local_correlation_backward", &lma::correlation_backward_cpu);
  m.impl("local_aggregation_forward", &lma::aggregation_forward_cpu);
  m.impl("local_aggregation_backward", &lma::aggregation_backward_cpu);
}

#ifdef WITH_CUDA
TORCH_LIBRARY_IMPL(lma, CUDA, m) {
  m.impl("local_attention_forward", &lma::attention_forward_cuda);
  m.impl("local_attention_backward", &lma::attention_backward_cuda);
  m.impl("local_correlation_forward", &lma::correlation_forward_cuda);
  m.impl("local_correlation_backward", &lma::correlation_backward_cuda);
  m.impl("local_aggregation_forward", &lma::aggregation_forward_cuda);
  m.impl("local_aggregation_backward", &lma::aggregation_backward_cuda);
}
#endif
