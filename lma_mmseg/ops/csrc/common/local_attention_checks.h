// Argument checks of the local memory attention ops (shapes as in
// common/local_attention.h), shared by the operator registration (pytorch/)
// and the CUDA entry points (cuda/), so that a kernel never reads out of
// bounds whichever way it is called. Every message starts with `op`, the
// name of the checking function. The incoming gradients (grad_out,
// grad_corr) and lse need a floating dtype, not that of the inputs: the
// kernels convert them.
#pragma once
#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

namespace lma {
namespace checks {

inline void check_window(const char* op, int64_t window, int64_t dilation) {
  TORCH_CHECK(window >= 1 && window % 2 == 1, op,
              ": window must be odd and >= 1, got ", window);
  TORCH_CHECK(dilation >= 1, op, ": dilation must be >= 1, got ", dilation);
}

inline void check_dims(const char* op, const at::Tensor& t, const char* name,
                       int64_t dim) {
  TORCH_CHECK(t.defined(), op, ": ", name, " is undefined");
  TORCH_CHECK(t.dim() == dim, op, ": ", name, " must be ", dim,
              "-D, got shape ", t.sizes());
}

// t on the device and of the dtype of `like`.
inline void check_like(const char* op, const at::Tensor& t, const char* name,
                       const at::Tensor& like, const char* like_name) {
  TORCH_CHECK(t.device() == like.device(), op, ": ", like_name, " is on ",
              like.device(), " but ", name, " is on ", t.device());
  TORCH_CHECK(t.scalar_type() == like.scalar_type(), op, ": ", like_name,
              " has dtype ", like.scalar_type(), " but ", name, " has ",
              t.scalar_type());
}

// A floating point tensor of shape `expected` on the device of `like`.
inline void check_floating(const char* op, const at::Tensor& t,
                           const char* name, at::IntArrayRef expected,
                           const at::Tensor& like) {
  TORCH_CHECK(t.defined(), op, ": ", name, " is undefined");
  TORCH_CHECK(t.sizes() == expected, op, ": ", name, " must have shape ",
              expected, ", got ", t.sizes());
  TORCH_CHECK(t.device() == like.device(), op, ": ", name, " is on ",
              t.device(), " but the inputs are on ", like.device());
  TORCH_CHECK(t.is_floating_point(), op, ": ", name,
              " must be a floating point tensor, got ", t.scalar_type());
}

// q (B, C, H, W), k (B, T, C, H, W), v (B, T, Cv, H, W) (v optional) and
// the window.
inline void check_qkv(const char* op, const at::Tensor& q, const at::Tensor& k,
                      const at::Tensor* v, int64_t window, int64_t dilation) {
  check_window(op, window, dilation);
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

// ---- the arguments of each op (the backward ones with the incoming
// gradient and what forward saved) ----
inline void check_attention(const char* op, const at::Tensor& q,
                            const at::Tensor& k, const at::Tensor& v,
                            int64_t window, int64_t dilation,
                            const at::Tensor& bias) {
  check_qkv(op, q, k, &v, window, dilation);
  if (!bias.defined()) return;
  check_dims(op, bias, "bias", 2);
  check_like(op, bias, "bias", q, "q");
  TORCH_CHECK(bias.size(0) == k.size(1) && bias.size(1) == window * window,
              op, ": bias must be (T, window * window) = (", k.size(1), ", ",
              window * window, "), got ", bias.sizes());
}

inline void check_attention_backward(
    const char* op, const at::Tensor& grad_out, const at::Tensor& q,
    const at::Tensor& k, const at::Tensor& v, const at::Tensor& out,
    const at::Tensor& lse, int64_t window, int64_t dilation,
    const at::Tensor& bias, const at::Tensor& grad_lse) {
  check_attention(op, q, k, v, window, dilation, bias);
  const int64_t B = q.size(0), H = q.size(2), W = q.size(3), Cv = v.size(2);
  check_floating(op, grad_out, "grad_out", {B, Cv, H, W}, q);
  check_floating(op, out, "out", {B, Cv, H, W}, q);
  check_floating(op, lse, "lse", {B, H, W}, q);
  if (grad_lse.defined())
    check_floating(op, grad_lse, "grad_lse", {B, H, W}, q);
}

// q, k and the window; with grad_corr (B, T, window * window, H, W) the
// backward.
inline void check_correlation(const char* op, const at::Tensor& q,
                              const at::Tensor& k, int64_t window,
                              int64_t dilation,
                              const at::Tensor* grad_corr = nullptr) {
  check_qkv(op, q, k, nullptr, window, dilation);
  if (grad_corr == nullptr) return;
  check_floating(op, *grad_corr, "grad_corr",
                 {k.size(0), k.size(1), window * window, k.size(3), k.size(4)},
                 q);
}

// attn (B, T, window * window, H, W) against v (B, T, Cv, H, W); with
// grad_out (B, Cv, H, W) the backward.
inline void check_aggregation(const char* op, const at::Tensor& attn,
                              const at::Tensor& v, int64_t window,
                              int64_t dilation,
                              const at::Tensor* grad_out = nullptr) {
  check_window(op, window, dilation);
  check_dims(op, attn, "attn", 5);
  check_dims(op, v, "v", 5);
  check_like(op, v, "v", attn, "attn");
  TORCH_CHECK(attn.size(0) == v.size(0) && attn.size(1) == v.size(1) &&
                  attn.size(2) == window * window &&
                  attn.size(3) == v.size(3) && attn.size(4) == v.size(4),
              op, ": attn must be (B, T, window * window, H, W) to match v ",
              v.sizes(), " and window ", window, ", got ", attn.sizes());
  if (grad_out == nullptr) return;
  check_floating(op, *grad_out, "grad_out",
                 {v.size(0), v.size(2), v.size(3), v.size(4)}, v);
}

}  // namespace checks
}  // namespace lma
