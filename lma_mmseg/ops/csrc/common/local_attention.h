// Declarations shared by the dispatch layer (pytorch/), the CPU kernels
// (cpu/) and the CUDA kernels (cuda/) of the local memory attention ops.
//
// Shapes (all tensors contiguous in the layout given, same device and dtype):
//   q    (B, C, H, W)          query keys of the current frame
//   k    (B, T, C, H, W)       memory keys
//   v    (B, T, Cv, H, W)      memory values
//   attn (B, T, S, H, W)       S = window * window, slot s = i * window + j
//   out  (B, Cv, H, W)
//   lse  (B, H, W) float32     log-sum-exp of the logits per query pixel
//   bias (T, S) or undefined   position bias added to the scaled logits:
//                              logit = scale * corr + bias[t, s]
// Slot s looks at offset ((i - window / 2) * dilation, (j - window / 2) *
// dilation). `mask_padding` selects padding='mask' (outside slots excluded
// from the softmax) instead of padding='zeros' (outside slots take logit 0
// and value 0).
#pragma once
#include <ATen/ATen.h>

#include <string>
#include <vector>

namespace lma {

// ---- CPU kernels (cpu/) ----
// The CPU kernels are compiled for AVX2+FMA and for the baseline ISA.
// set_cpu_isa("auto" | "avx2" | "baseline") chooses the variant for the
// calls that follow ("auto": AVX2+FMA where the CPU has both; "avx2" fails
// on a CPU without them); cpu_isa() names the active one ("avx2" or
// "baseline").
void set_cpu_isa(const std::string& isa);
std::string cpu_isa();
// Fused attention forward: returns {out, lse}.
std::vector<at::Tensor> local_attention_forward_cpu(
    const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
    int64_t window, int64_t dilation, double scale, bool mask_padding,
    const at::Tensor& bias);
// Fused attention backward: returns {grad_q, grad_k, grad_v, grad_bias}
// (grad_bias undefined without a bias).
std::vector<at::Tensor> local_attention_backward_cpu(
    const at::Tensor& grad_out, const at::Tensor& q, const at::Tensor& k,
    const at::Tensor& v, const at::Tensor& out, const at::Tensor& lse,
    int64_t window, int64_t dilation, double scale, bool mask_padding,
    const at::Tensor& bias);
// corr (B, T, S, H, W).
at::Tensor local_correlation_forward_cpu(const at::Tensor& q,
                                         const at::Tensor& k, int64_t window,
                                         int64_t dilation);
// Returns {grad_q, grad_k}.
std::vector<at::Tensor> local_correlation_backward_cpu(
    const at::Tensor& grad_corr, const at::Tensor& q, const at::Tensor& k,
    int64_t window, int64_t dilation);
// out (B, Cv, H, W).
at::Tensor local_aggregation_forward_cpu(const at::Tensor& attn,
                                         const at::Tensor& v, int64_t window,
                                         int64_t dilation);
// Returns {grad_attn, grad_v}.
std::vector<at::Tensor> local_aggregation_backward_cpu(
    const at::Tensor& grad_out, const at::Tensor& attn, const at::Tensor& v,
    int64_t window, int64_t dilation);

#ifdef WITH_CUDA
// ---- CUDA kernels (cuda/), same contracts as the CPU ones ----
std::vector<at::Tensor> local_attention_forward_cuda(
    const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
    int64_t window, int64_t dilation, double scale, bool mask_padding,
    const at::Tensor& bias);
std::vector<at::Tensor> local_attention_backward_cuda(
    const at::Tensor& grad_out, const at::Tensor& q, const at::Tensor& k,
    const at::Tensor& v, const at::Tensor& out, const at::Tensor& lse,
    int64_t window, int64_t dilation, double scale, bool mask_padding,
    const at::Tensor& bias);
at::Tensor local_correlation_forward_cuda(const at::Tensor& q,
                                          const at::Tensor& k, int64_t window,
                                          int64_t dilation);
std::vector<at::Tensor> local_correlation_backward_cuda(
    const at::Tensor& grad_corr, const at::Tensor& q, const at::Tensor& k,
    int64_t window, int64_t dilation);
at::Tensor local_aggregation_forward_cuda(const at::Tensor& attn,
                                          const at::Tensor& v, int64_t window,
                                          int64_t dilation);
std::vector<at::Tensor> local_aggregation_backward_cuda(
    const at::Tensor& grad_out, const at::Tensor& attn, const at::Tensor& v,
    int64_t window, int64_t dilation);
#endif

}  // namespace lma
