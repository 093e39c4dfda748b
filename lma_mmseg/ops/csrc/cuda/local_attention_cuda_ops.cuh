// Orchestration of the CUDA kernels of local_attention_cuda_kernel.cuh: the
// bodies of the fused ops and the building blocks of the unfused ones
// (common/local_attention_blocks.h), for inputs on one device (any strides;
// the incoming gradients in any floating dtype). The op bodies check their
// arguments.
//
// Kernels are started through `launch(kernel, grid, smem_bytes, args...)`;
// local_attention_cuda.cu passes a launcher that runs
// `kernel<<<grid, NUM_THREADS, smem_bytes, stream>>>(args...)`, and the host
// emulation used by the tests (emulation/) passes one that runs the same
// kernels on CPU threads, so both execute exactly this code.
//
// Only the Tensor class, its methods and the dispatch macros are included
// (no ATen/ATen.h with every operator's function: a third of the compile
// time of the CUDA build and of the host emulation), so new tensors come
// from Tensor::new_empty / new_zeros and arithmetic from Tensor's methods.
#pragma once

#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/core/Tensor.h>

#include <initializer_list>
#include <vector>

#include "common/local_attention_blocks.h"
#include "common/local_attention_checks.h"
#include "cuda/local_attention_cuda_kernel.cuh"

namespace lma {
namespace cuda {

inline at::ScalarType acc_type(const at::Tensor& t) {
  return t.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
}

inline bool any_zero(std::initializer_list<int64_t> sizes) {
  for (int64_t s : sizes) {
    if (s == 0) return true;
  }
  return false;
}

// Launches building block `block` (common/local_attention_blocks.h) on g:
// out = block(x, y), with C = g.C channels for CORR and Cv = g.Cv for AGG
// and INV. w_t is the type of the (B, T, S, H, W) tensor: out for CORR,
// x for AGG and INV.
template <Block block, typename scalar_t, typename w_t, typename Launch>
void launch_block(const Launch& launch, const at::Tensor& x,
                  const at::Tensor& y, const at::Tensor& out, Geometry g) {
  using acc_t = at::opmath_type<scalar_t>;
  constexpr bool corr = block == Block::kCorr;
  const size_t smem = plan(g, sizeof(acc_t), 0, corr, !corr, false);
  const auto tiles = static_cast<unsigned>(num_tiles(g));
  const auto frames = static_cast<unsigned>(
      block == Block::kAgg ? g.B : static_cast<int64_t>(g.B) * g.T);
  if constexpr (corr) {
    launch(corr_kernel<scalar_t, w_t>, dim3(tiles, 1, frames), smem,
           x.data_ptr<scalar_t>(), y.data_ptr<scalar_t>(),
           out.data_ptr<w_t>(), g);
  } else {
    const auto channel_blocks =
        static_cast<unsigned>(ceil_div(g.Cv, CH_PER_BLOCK));
    launch(aggregating_kernel<scalar_t, w_t, block == Block::kInv>,
           dim3(tiles, channel_blocks, frames), smem, x.data_ptr<w_t>(),
           y.data_ptr<scalar_t>(), out.data_ptr<scalar_t>(), g);
  }
}

// The building block `block` of x and y converted to dtype (the device's
// run_block of common/local_attention_blocks.h); 0 for an empty problem.
template <typename Launch>
at::Tensor run_block(const Launch& launch, Block block, const at::Tensor& x_in,
                     const at::Tensor& y_in, at::ScalarType dtype,
                     int64_t window, int64_t dilation) {
  const at::Tensor x = x_in.to(dtype).contiguous();
  const at::Tensor y = y_in.to(dtype).contiguous();
  const BlockShape s = block_shape(block, x, y, window);
  at::Tensor out = y.new_empty(s.out);
  if (any_zero({s.B, s.T, s.C, s.H, s.W})) return out.zero_();
  const Geometry g =
      make_geometry(s.B, s.T, s.C, s.C, s.H, s.W, window, dilation);
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kHalf, at::kBFloat16, dtype, "local_attention_building_block", [&] {
        // indexed by Block
        constexpr decltype(&launch_block<Block::kCorr, scalar_t, scalar_t,
                                         Launch>) launchers[] = {
            &launch_block<Block::kCorr, scalar_t, scalar_t, Launch>,
            &launch_block<Block::kAgg, scalar_t, scalar_t, Launch>,
            &launch_block<Block::kInv, scalar_t, scalar_t, Launch>};
        launchers[static_cast<int>(block)](launch, x, y, out, g);
      });
  return out;
}

// ---------------------------------------------------------------------------
// fused local attention
// ---------------------------------------------------------------------------
// Returns {out (B, Cv, H, W), lse (B, H, W)}; lse is float32 (float64 for
// double inputs).
template <typename Launch>
std::vector<at::Tensor> attention_forward(
    const Launch& launch, const at::Tensor& q_in, const at::Tensor& k_in,
    const at::Tensor& v_in, int64_t window, int64_t dilation, double scale,
    bool mask_padding, const at::Tensor& bias_in) {
  checks::check_attention("local_attention_forward_cuda", q_in, k_in, v_in,
                          window, dilation, bias_in);
  const at::Tensor q = q_in.contiguous(), k = k_in.contiguous(),
                   v = v_in.contiguous();
  const int64_t B = q.size(0), C = q.size(1), H = q.size(2), W = q.size(3),
                T = k.size(1), Cv = v.size(2);
  at::Tensor out = v.new_empty({B, Cv, H, W});
  at::Tensor lse = q.new_empty({B, H, W}, q.options().dtype(acc_type(q)));
  const at::Tensor bias = bias_in.defined()
                              ? bias_in.to(acc_type(q)).contiguous()
                              : bias_in;
  if (any_zero({B, T, H, W})) return {out.zero_(), lse.zero_()};
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kHalf, at::kBFloat16, q.scalar_type(), "local_attention_forward",
      [&] {
        using acc_t = at::opmath_type<scalar_t>;
        const acc_t* bias_p =
            bias.defined() ? bias.data_ptr<acc_t>() : nullptr;
        const Geometry g0 =
            make_geometry(B, T, C, Cv, H, W, window, dilation);
        {
          Geometry g = g0;
          const size_t smem = plan(g, sizeof(acc_t), 0, true, false, true);
          const dim3 grid(static_cast<unsigned>(num_tiles(g)), 1,
                          static_cast<unsigned>(B));
          launch(stats_kernel<scalar_t>, grid, smem, q.data_ptr<scalar_t>(),
                 k.data_ptr<scalar_t>(), lse.data_ptr<acc_t>(), g,
                 static_cast<acc_t>(scale), mask_padding, bias_p);
        }
        if (Cv > 0) {
          Geometry g = g0;
          const size_t smem =
              plan(g, sizeof(acc_t), TILE_P, true, true, false);
          const dim3 grid(static_cast<unsigned>(num_tiles(g)),
                          static_cast<unsigned>(ceil_div(Cv, CH_PER_BLOCK)),
                          static_cast<unsigned>(B));
          launch(fused_agg_kernel<scalar_t>, grid, smem,
                 q.data_ptr<scalar_t>(), k.data_ptr<scalar_t>(),
                 v.data_ptr<scalar_t>(),
                 static_cast<const acc_t*>(lse.data_ptr<acc_t>()),
                 out.data_ptr<scalar_t>(), g, static_cast<acc_t>(scale),
                 mask_padding, bias_p);
        }
      });
  return {out, lse};
}

// Returns {grad_q, grad_k, grad_v, grad_bias} (grad_bias undefined without
// a bias) from grad_out and grad_lse (undefined: zero). Materialises the
// probabilities and the logit gradients (B, T, S, H, W) in the accumulation
// type.
template <typename Launch>
std::vector<at::Tensor> attention_backward(
    const Launch& launch, const at::Tensor& grad_out_in,
    const at::Tensor& q_in, const at::Tensor& k_in, const at::Tensor& v_in,
    const at::Tensor& out, const at::Tensor& lse_in, int64_t window,
    int64_t dilation, double scale, bool mask_padding,
    const at::Tensor& bias_in, const at::Tensor& grad_lse) {
  checks::check_attention_backward("local_attention_backward_cuda",
                                   grad_out_in, q_in, k_in, v_in, out, lse_in,
                                   window, dilation, bias_in, grad_lse);
  const at::Tensor q = q_in.contiguous(), k = k_in.contiguous(),
                   v = v_in.contiguous();
  const at::Tensor grad_out = grad_out_in.to(q.scalar_type()).contiguous();
  const int64_t B = q.size(0), C = q.size(1), H = q.size(2), W = q.size(3),
                T = k.size(1), Cv = v.size(2);
  at::Tensor grad_q = q.new_empty(q.sizes());
  at::Tensor grad_k = k.new_empty(k.sizes());
  at::Tensor grad_v = v.new_empty(v.sizes());
  const bool has_bias = bias_in.defined();
  at::Tensor grad_bias;
  if (has_bias) grad_bias = bias_in.new_zeros(bias_in.sizes());
  if (any_zero({B, T, H, W})) {
    return {grad_q.zero_(), grad_k.zero_(), grad_v.zero_(), grad_bias};
  }
  const at::ScalarType acc = acc_type(q);
  const at::Tensor bias =
      has_bias ? bias_in.to(acc).contiguous() : bias_in;
  const int64_t S = window * window;
  // D = sum_cv grad_out * out per query pixel (B, H, W); the gradient of
  // lse adds p * grad_lse to every logit's, i.e. D - grad_lse
  at::Tensor D = grad_out.to(acc).mul(out.to(acc)).sum(1);
  if (grad_lse.defined()) D = D.sub(grad_lse.to(acc));
  D = D.contiguous();
  const at::Tensor lse = lse_in.to(acc).contiguous();
  // corr(q, k) -> p and corr(grad_out, v) -> scale * dlogit, in place
  at::Tensor prob = q.new_empty({B, T, S, H, W}, q.options().dtype(acc));
  at::Tensor dlogit = q.new_empty({B, T, S, H, W}, q.options().dtype(acc));
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kHalf, at::kBFloat16, q.scalar_type(), "local_attention_backward",
      [&] {
        using acc_t = at::opmath_type<scalar_t>;
        launch_block<Block::kCorr, scalar_t, acc_t>(
            launch, q, k, prob,
            make_geometry(B, T, C, Cv, H, W, window, dilation));
        if (Cv > 0) {
          launch_block<Block::kCorr, scalar_t, acc_t>(
              launch, grad_out, v, dlogit,
              make_geometry(B, T, Cv, Cv, H, W, window, dilation));
        } else {
          dlogit.zero_();
        }
        {
          const Geometry g =
              make_geometry(B, T, C, Cv, H, W, window, dilation);
          const int64_t total = prob.numel();
          const int64_t blocks =
              std::min<int64_t>(ceil_div(total, NUM_THREADS), 1 << 16);
          // with a bias, dlogit is first the gradient of the logits (its
          // sum over the batch and the pixels is grad_bias), then scaled
          launch(softmax_backward_kernel<acc_t>,
                 dim3(static_cast<unsigned>(blocks)), size_t(0),
                 prob.data_ptr<acc_t>(), dlogit.data_ptr<acc_t>(),
                 static_cast<const acc_t*>(lse.data_ptr<acc_t>()),
                 static_cast<const acc_t*>(D.data_ptr<acc_t>()), g,
                 static_cast<acc_t>(scale), mask_padding, total,
                 has_bias ? static_cast<const acc_t*>(bias.data_ptr<acc_t>())
                          : static_cast<const acc_t*>(nullptr),
                 static_cast<acc_t>(has_bias ? 1.0 : scale));
        }
        if (has_bias) {
          grad_bias.copy_(dlogit.sum({0, 3, 4}));
          dlogit.mul_(scale);
        }
        if (C > 0) {
          const Geometry g = make_geometry(B, T, C, C, H, W, window, dilation);
          // grad_q = sum_{t,s} scale * dlogit * k[slot]
          launch_block<Block::kAgg, scalar_t, acc_t>(launch, dlogit, k, grad_q,
                                                     g);
          // grad_k[key] = sum over the (query, slot) seeing it of
          //               scale * dlogit * q[query]
          launch_block<Block::kInv, scalar_t, acc_t>(launch, dlogit, q, grad_k,
                                                     g);
        }
        if (Cv > 0) {
          // grad_v[key] = sum over the (query, slot) seeing it of
          //               p * grad_out[query]
          launch_block<Block::kInv, scalar_t, acc_t>(
              launch, prob, grad_out, grad_v,
              make_geometry(B, T, Cv, Cv, H, W, window, dilation));
        }
      });
  return {grad_q, grad_k, grad_v, grad_bias};
}

}  // namespace cuda
}  // namespace lma
