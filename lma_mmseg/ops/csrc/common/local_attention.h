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
//                              (float64 for float64 inputs); an output of
//                              the op: its incoming gradient grad_lse
//                              (B, H, W, or undefined for none) enters the
//                              backward as p * grad_lse on every logit
//   bias (T, S) or undefined   position bias added to the scaled logits:
//                              logit = scale * corr + bias[t, s]
// Slot s looks at offset ((i - window / 2) * dilation, (j - window / 2) *
// dilation). `mask_padding` selects padding='mask' (outside slots excluded
// from the softmax) instead of padding='zeros' (outside slots take logit 0
// and value 0).
#pragma once
#include <ATen/core/Tensor.h>

#include <string>
#include <vector>

namespace lma {

// The six kernels of a device `dev` (cpu, cuda), all with the contracts
// above; LMA_DECLARE_KERNELS(dev) declares
//   local_attention_forward_<dev>     returns {out, lse}
//   local_attention_backward_<dev>    returns {grad_q, grad_k, grad_v,
//                                     grad_bias} (grad_bias undefined
//                                     without a bias), from grad_out and
//                                     grad_lse (undefined: zero)
//   local_correlation_forward_<dev>   returns corr (B, T, S, H, W)
//   local_correlation_backward_<dev>  returns {grad_q, grad_k}
//   local_aggregation_forward_<dev>   returns out (B, Cv, H, W)
//   local_aggregation_backward_<dev>  returns {grad_attn, grad_v}
// and the struct `kernels_<dev>` that names them (as attention_forward,
// attention_backward, ...), so that code written once against such a table
// serves every device. The incoming gradients may have another floating
// dtype than the inputs; the kernels convert them.
#define LMA_DECLARE_KERNELS(dev)                                              \
  std::vector<at::Tensor> local_attention_forward_##dev(                      \
      const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,          \
      int64_t window, int64_t dilation, double scale, bool mask_padding,      \
      const at::Tensor& bias);                                                \
  std::vector<at::Tensor> local_attention_backward_##dev(                     \
      const at::Tensor& grad_out, const at::Tensor& q, const at::Tensor& k,   \
      const at::Tensor& v, const at::Tensor& out, const at::Tensor& lse,      \
      int64_t window, int64_t dilation, double scale, bool mask_padding,      \
      const at::Tensor& bias, const at::Tensor& grad_lse);                    \
  at::Tensor local_correlation_forward_##dev(                                 \
      const at::Tensor& q, const at::Tensor& k, int64_t window,               \
      int64_t dilation);                                                      \
  std::vector<at::Tensor> local_correlation_backward_##dev(                   \
      const at::Tensor& grad_corr, const at::Tensor& q, const at::Tensor& k,  \
      int64_t window, int64_t dilation);                                      \
  at::Tensor local_aggregation_forward_##dev(                                 \
      const at::Tensor& attn, const at::Tensor& v, int64_t window,            \
      int64_t dilation);                                                      \
  std::vector<at::Tensor> local_aggregation_backward_##dev(                   \
      const at::Tensor& grad_out, const at::Tensor& attn,                     \
      const at::Tensor& v, int64_t window, int64_t dilation);                 \
  struct kernels_##dev {                                                      \
    static constexpr auto attention_forward = &local_attention_forward_##dev; \
    static constexpr auto attention_backward =                                \
        &local_attention_backward_##dev;                                      \
    static constexpr auto correlation_forward =                               \
        &local_correlation_forward_##dev;                                     \
    static constexpr auto correlation_backward =                              \
        &local_correlation_backward_##dev;                                    \
    static constexpr auto aggregation_forward =                               \
        &local_aggregation_forward_##dev;                                     \
    static constexpr auto aggregation_backward =                              \
        &local_aggregation_backward_##dev;                                    \
  };

// ---- CPU kernels (cpu/) ----
LMA_DECLARE_KERNELS(cpu)
// The CPU kernels are compiled for AVX2+FMA and for the baseline ISA.
// set_cpu_isa("auto" | "avx2" | "baseline") chooses the variant for the
// calls that follow ("auto": AVX2+FMA where the CPU has both; "avx2" fails
// on a CPU without them); cpu_isa() names the active one ("avx2" or
// "baseline").
void set_cpu_isa(const std::string& isa);
std::string cpu_isa();

#ifdef WITH_CUDA
// ---- CUDA kernels (cuda/) ----
LMA_DECLARE_KERNELS(cuda)
#endif

}  // namespace lma
