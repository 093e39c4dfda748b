// The unfused ops (local_correlation, local_aggregation) of every device,
// written once on top of the three building blocks that each device
// implements (cpu/, cuda/). With m the memory side (B, T, C, H, W),
// S = window * window and off_s the offset of slot s:
//   CORR  x (B, C, H, W),    y = m           -> out (B, T, S, H, W),
//         out[t, s, p] = sum_c x[c, p] * y[t, c, p + off_s]
//   AGG   x (B, T, S, H, W), y = m           -> out (B, C, H, W),
//         out[c, p] = sum_{t, s} x[t, s, p] * y[t, c, p + off_s]
//   INV   x (B, T, S, H, W), y (B, C, H, W)  -> out (B, T, C, H, W),
//         out[t, c, p] = sum_s x[t, s, p - off_s] * y[c, p - off_s]
// INV is the transpose of AGG and CORR with respect to the memory side.
#pragma once
#include <ATen/core/Tensor.h>

#include <vector>

#include "common/local_attention_checks.h"

namespace lma {

enum class Block { kCorr, kAgg, kInv };

// The memory side (B, T, C, H, W) and the output shape of block(x, y).
struct BlockShape {
  int64_t B, T, C, H, W;
  std::vector<int64_t> out;
};

inline BlockShape block_shape(Block block, const at::Tensor& x,
                              const at::Tensor& y, int64_t window) {
  const bool inv = block == Block::kInv;
  BlockShape s{x.size(0), inv ? x.size(1) : y.size(1),
               inv ? y.size(1) : y.size(2), y.size(-2), y.size(-1), {}};
  switch (block) {
    case Block::kCorr:
      s.out = {s.B, s.T, window * window, s.H, s.W};
      break;
    case Block::kAgg:
      s.out = {s.B, s.C, s.H, s.W};
      break;
    case Block::kInv:
      s.out = {s.B, s.T, s.C, s.H, s.W};
      break;
  }
  return s;
}

// The unfused ops are bilinear in (x, y), y the memory side, and their
// backward passes are made of the other building blocks:
//   local_correlation  x = q (B, C, H, W)          out = CORR(q, k)
//                      grad_q = AGG(grad, k)       grad_k = INV(grad, q)
//   local_aggregation  x = attn (B, T, S, H, W)    out = AGG(attn, v)
//                      grad_attn = CORR(grad, v)   grad_v = INV(attn, grad)
// One row per op:
struct BilinearOp {
  Block forward;     // out = forward(x, y)
  Block grad_x;      // grad_x = grad_x(grad, y)
  bool x_is_weight;  // x is (B, T, S, H, W): grad_y = INV(x, grad), else
                     // INV(grad, x)
  // checks x, y, the window and, when not null, the incoming gradient
  void (*check)(const char*, const at::Tensor&, const at::Tensor&, int64_t,
                int64_t, const at::Tensor*);
};

inline constexpr BilinearOp kCorrelation{Block::kCorr, Block::kAgg, false,
                                         &checks::check_correlation};
inline constexpr BilinearOp kAggregation{Block::kAgg, Block::kCorr, true,
                                         &checks::check_aggregation};

// out of op for (x, y). run_block(block, x, y, dtype, window, dilation) is
// the device's building block, on x and y converted to dtype.
template <typename RunBlock>
at::Tensor bilinear_forward(const char* fn, const BilinearOp& op,
                            const RunBlock& run_block, const at::Tensor& x,
                            const at::Tensor& y, int64_t window,
                            int64_t dilation) {
  op.check(fn, x, y, window, dilation, nullptr);
  return run_block(op.forward, x, y, y.scalar_type(), window, dilation);
}

// {grad_x, grad_y} of op for the gradient `grad` of its output (any
// floating dtype).
template <typename RunBlock>
std::vector<at::Tensor> bilinear_backward(
    const char* fn, const BilinearOp& op, const RunBlock& run_block,
    const at::Tensor& grad, const at::Tensor& x, const at::Tensor& y,
    int64_t window, int64_t dilation) {
  op.check(fn, x, y, window, dilation, &grad);
  const at::ScalarType dtype = y.scalar_type();
  const at::Tensor& weight = op.x_is_weight ? x : grad;
  const at::Tensor& features = op.x_is_weight ? grad : x;
  return {run_block(op.grad_x, grad, y, dtype, window, dilation),
          run_block(Block::kInv, weight, features, dtype, window, dilation)};
}

// Defines the kernels `forward` (x, y, window, dilation) and `backward`
// (grad, x, y, window, dilation) of common/local_attention.h for the
// BilinearOp `op` with the building blocks `run_block` of a device.
#define LMA_DEFINE_BILINEAR_KERNELS(forward, backward, op, run_block)        \
  at::Tensor forward(const at::Tensor& x, const at::Tensor& y,               \
                     int64_t window, int64_t dilation) {                     \
    return bilinear_forward(#forward, op, run_block, x, y, window,           \
                            dilation);                                       \
  }                                                                          \
  std::vector<at::Tensor> backward(const at::Tensor& grad,                   \
                                   const at::Tensor& x, const at::Tensor& y, \
                                   int64_t window, int64_t dilation) {       \
    return bilinear_backward(#backward, op, run_block, grad, x, y, window,   \
                             dilation);                                      \
  }

}  // namespace lma
