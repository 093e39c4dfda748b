// Orchestration of the CUDA kernels of local_attention_cuda_kernel.cuh: the
// bodies of the six ops for checked, contiguous inputs on one device.
//
// Kernels are started through `launch(kernel, grid, smem_bytes, args...)`;
// local_attention_cuda.cu passes a launcher that runs
// `kernel<<<grid, NUM_THREADS, smem_bytes, stream>>>(args...)`, and the host
// emulation used by the tests (emulation/) passes one that runs the same
// kernels on CPU threads, so both execute exactly this code.
#pragma once

#include <ATen/ATen.h>
#include <ATen/Dispatch.h>

#include <initializer_list>
#include <vector>

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

// out (B, T, S, H, W) of type out_t = corr(A (B, C, H, W), Bt (B, T, C, H,
// W)) with C = g.C.
template <typename scalar_t, typename out_t, typename Launch>
void run_corr(const Launch& launch, const at::Tensor& A, const at::Tensor& Bt,
              at::Tensor& out, Geometry g) {
  using acc_t = at::opmath_type<scalar_t>;
  const size_t smem = plan(g, sizeof(acc_t), 0, true, false, false);
  const dim3 grid(static_cast<unsigned>(num_tiles(g)), 1,
                  static_cast<unsigned>(g.B * g.T));
  launch(corr_kernel<scalar_t, out_t>, grid, smem,
         A.data_ptr<scalar_t>(), Bt.data_ptr<scalar_t>(),
         out.data_ptr<out_t>(), g);
}

// out (B, Cv, H, W) = agg(Wt (B, T, S, H, W) of type w_t, Bt (B, T, Cv, H,
// W)) with Cv = g.Cv.
template <typename scalar_t, typename w_t, typename Launch>
void run_agg(const Launch& launch, const at::Tensor& Wt, const at::Tensor& Bt,
             at::Tensor& out, Geometry g) {
  using acc_t = at::opmath_type<scalar_t>;
  const size_t smem = plan(g, sizeof(acc_t), 0, false, true, false);
  const dim3 grid(static_cast<unsigned>(num_tiles(g)),
                  static_cast<unsigned>(ceil_div(g.Cv, CH_PER_BLOCK)),
                  static_cast<unsigned>(g.B));
  launch(agg_kernel<scalar_t, w_t>, grid, smem, Wt.data_ptr<w_t>(),
         Bt.data_ptr<scalar_t>(), out.data_ptr<scalar_t>(), g);
}

// out (B, T, Cv, H, W) = inv(Wt (B, T, S, H, W) of type w_t, A (B, Cv, H,
// W)) with Cv = g.Cv.
template <typename scalar_t, typename w_t, typename Launch>
void run_inv(const Launch& launch, const at::Tensor& Wt, const at::Tensor& A,
             at::Tensor& out, Geometry g) {
  using acc_t = at::opmath_type<scalar_t>;
  const size_t smem = plan(g, sizeof(acc_t), 0, false, true, false);
  const dim3 grid(static_cast<unsigned>(num_tiles(g)),
                  static_cast<unsigned>(ceil_div(g.Cv, CH_PER_BLOCK)),
                  static_cast<unsigned>(g.B * g.T));
  launch(inv_kernel<scalar_t, w_t>, grid, smem, Wt.data_ptr<w_t>(),
         A.data_ptr<scalar_t>(), out.data_ptr<scalar_t>(), g);
}

// ---------------------------------------------------------------------------
// fused local attention
// ---------------------------------------------------------------------------
// Returns {out (B, Cv, H, W), lse (B, H, W)}; lse is float32 (float64 for
// double inputs).
template <typename Launch>
std::vector<at::Tensor> attention_forward(const Launch& launch,
                                          const at::Tensor& q,
                                          const at::Tensor& k,
                                          const at::Tensor& v, int64_t window,
                                          int64_t dilation, double scale,
                                          bool mask_padding,
                                          const at::Tensor& bias_in) {
  const int64_t B = q.size(0), C = q.size(1), H = q.size(2), W = q.size(3),
                T = k.size(1), Cv = v.size(2);
  at::Tensor out = at::empty({B, Cv, H, W}, v.options());
  at::Tensor lse = at::empty({B, H, W}, q.options().dtype(acc_type(q)));
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
// a bias). Materialises the probabilities and the logit gradients (B, T, S,
// H, W) in the accumulation type.
template <typename Launch>
std::vector<at::Tensor> attention_backward(
    const Launch& launch, const at::Tensor& grad_out, const at::Tensor& q,
    const at::Tensor& k, const at::Tensor& v, const at::Tensor& out,
    const at::Tensor& lse_in, int64_t window, int64_t dilation, double scale,
    bool mask_padding, const at::Tensor& bias_in) {
  const int64_t B = q.size(0), C = q.size(1), H = q.size(2), W = q.size(3),
                T = k.size(1), Cv = v.size(2);
  at::Tensor grad_q = at::empty_like(q);
  at::Tensor grad_k = at::empty_like(k);
  at::Tensor grad_v = at::empty_like(v);
  const bool has_bias = bias_in.defined();
  at::Tensor grad_bias;
  if (has_bias) grad_bias = at::zeros_like(bias_in).contiguous();
  if (any_zero({B, T, H, W})) {
    return {grad_q.zero_(), grad_k.zero_(), grad_v.zero_(), grad_bias};
  }
  const at::ScalarType acc = acc_type(q);
  const at::Tensor bias =
      has_bias ? bias_in.to(acc).contiguous() : bias_in;
  const int64_t S = window * window;
  // D = sum_cv grad_out * out per query pixel (B, H, W)
  const at::Tensor D = (grad_out.to(acc) * out.to(acc)).sum(1).contiguous();
  const at::Tensor lse = lse_in.to(acc).contiguous();
  // corr(q, k) -> p and corr(grad_out, v) -> scale * dlogit, in place
  at::Tensor prob = at::empty({B, T, S, H, W}, q.options().dtype(acc));
  at::Tensor dlogit = at::empty({B, T, S, H, W}, q.options().dtype(acc));
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kHalf, at::kBFloat16, q.scalar_type(), "local_attention_backward",
      [&] {
        using acc_t = at::opmath_type<scalar_t>;
        run_corr<scalar_t, acc_t>(
            launch, q, k, prob,
            make_geometry(B, T, C, Cv, H, W, window, dilation));
        if (Cv > 0) {
          run_corr<scalar_t, acc_t>(
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
          run_agg<scalar_t, acc_t>(launch, dlogit, k, grad_q, g);
          // grad_k[key] = sum over the (query, slot) seeing it of
          //               scale * dlogit * q[query]
          run_inv<scalar_t, acc_t>(launch, dlogit, q, grad_k, g);
        }
        if (Cv > 0) {
          // grad_v[key] = sum over the (query, slot) seeing it of
          //               p * grad_out[query]
          run_inv<scalar_t, acc_t>(
              launch, prob, grad_out, grad_v,
              make_geometry(B, T, Cv, Cv, H, W, window, dilation));
        }
      });
  return {grad_q, grad_k, grad_v, grad_bias};
}

// ---------------------------------------------------------------------------
// unfused building blocks
// ---------------------------------------------------------------------------
template <typename Launch>
at::Tensor correlation_forward(const Launch& launch, const at::Tensor& q,
                               const at::Tensor& k, int64_t window,
                               int64_t dilation) {
  const int64_t B = q.size(0), C = q.size(1), H = q.size(2), W = q.size(3),
                T = k.size(1);
  at::Tensor corr = at::empty({B, T, window * window, H, W}, q.options());
  if (any_zero({B, T, H, W})) return corr.zero_();
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kHalf, at::kBFloat16, q.scalar_type(), "local_correlation_forward",
      [&] {
        run_corr<scalar_t, scalar_t>(
            launch, q, k, corr,
            make_geometry(B, T, C, C, H, W, window, dilation));
      });
  return corr;
}

template <typename Launch>
std::vector<at::Tensor> correlation_backward(const Launch& launch,
                                             const at::Tensor& grad_corr,
                                             const at::Tensor& q,
                                             const at::Tensor& k,
                                             int64_t window,
                                             int64_t dilation) {
  const int64_t B = q.size(0), C = q.size(1), H = q.size(2), W = q.size(3),
                T = k.size(1);
  at::Tensor grad_q = at::empty_like(q);
  at::Tensor grad_k = at::empty_like(k);
  if (any_zero({B, T, C, H, W})) return {grad_q.zero_(), grad_k.zero_()};
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kHalf, at::kBFloat16, q.scalar_type(), "local_correlation_backward",
      [&] {
        const Geometry g = make_geometry(B, T, C, C, H, W, window, dilation);
        // grad_q[c, p] = sum_{t,s} grad_corr[t, s, p] * k[t, c, p + off_s]
        run_agg<scalar_t, scalar_t>(launch, grad_corr, k, grad_q, g);
        // grad_k[t, c, p] = sum_s grad_corr[t, s, p - off_s] *
        //                   q[c, p - off_s]
        run_inv<scalar_t, scalar_t>(launch, grad_corr, q, grad_k, g);
      });
  return {grad_q, grad_k};
}

template <typename Launch>
at::Tensor aggregation_forward(const Launch& launch, const at::Tensor& attn,
                               const at::Tensor& v, int64_t window,
                               int64_t dilation) {
  const int64_t B = v.size(0), T = v.size(1), Cv = v.size(2), H = v.size(3),
                W = v.size(4);
  at::Tensor out = at::empty({B, Cv, H, W}, v.options());
  if (any_zero({B, T, Cv, H, W})) return out.zero_();
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kHalf, at::kBFloat16, v.scalar_type(), "local_aggregation_forward",
      [&] {
        run_agg<scalar_t, scalar_t>(
            launch, attn, v, out,
            make_geometry(B, T, Cv, Cv, H, W, window, dilation));
      });
  return out;
}

template <typename Launch>
std::vector<at::Tensor> aggregation_backward(const Launch& launch,
                                             const at::Tensor& grad_out,
                                             const at::Tensor& attn,
                                             const at::Tensor& v,
                                             int64_t window,
                                             int64_t dilation) {
  const int64_t B = v.size(0), T = v.size(1), Cv = v.size(2), H = v.size(3),
                W = v.size(4);
  at::Tensor grad_attn = at::empty_like(attn);
  at::Tensor grad_v = at::empty_like(v);
  if (any_zero({B, T, Cv, H, W})) {
    return {grad_attn.zero_(), grad_v.zero_()};
  }
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kHalf, at::kBFloat16, v.scalar_type(), "local_aggregation_backward",
      [&] {
        const Geometry g =
            make_geometry(B, T, Cv, Cv, H, W, window, dilation);
        // grad_attn[t, s, p] = <grad_out[:, p], v[t, :, p + off_s]>
        run_corr<scalar_t, scalar_t>(launch, grad_out, v, grad_attn, g);
        // grad_v[t, c, p] = sum_s attn[t, s, p - off_s] *
        //                   grad_out[c, p - off_s]
        run_inv<scalar_t, scalar_t>(launch, attn, grad_out, grad_v, g);
      });
  return {grad_attn, grad_v};
}

}  // namespace cuda
}  // namespace lma
