// Host side of the CUDA kernels of the local memory attention ops: argument
// checks, launch planning (slot chunks, channel chunks, shared memory) and the
// six entry points declared in common/local_attention.h.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>

#include <algorithm>
#include <vector>

#include "common/local_attention.h"
#include "cuda/local_attention_cuda_kernel.cuh"

namespace lma {

namespace {

using cuda::ceil_div;
using cuda::CH_PER_BLOCK;
using cuda::Geometry;
using cuda::make_geometry;
using cuda::num_tiles;
using cuda::NUM_THREADS;
using cuda::plan;
using cuda::TILE_P;

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

at::ScalarType acc_type(const at::Tensor& t) {
  return t.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
}

// ---- launchers ---------------------------------------------------------------
// out (B, T, S, H, W) = corr(A (B, C, H, W), Bt (B, T, C, H, W)).
template <typename scalar_t, typename out_t>
void launch_corr(const at::Tensor& A, const at::Tensor& Bt, at::Tensor& out,
                 Geometry g, cudaStream_t stream) {
  using acc_t = at::opmath_type<scalar_t>;
  const size_t smem = plan(g, sizeof(acc_t), 0, true, false, false);
  const dim3 grid(static_cast<unsigned>(num_tiles(g)), 1,
                  static_cast<unsigned>(g.B * g.T));
  cuda::corr_kernel<scalar_t, out_t><<<grid, NUM_THREADS, smem, stream>>>(
      A.data_ptr<scalar_t>(), Bt.data_ptr<scalar_t>(), out.data_ptr<out_t>(),
      g);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

// out (B, Cv, H, W) = agg(Wt (B, T, S, H, W), Bt (B, T, Cv, H, W)).
template <typename scalar_t, typename w_t>
void launch_agg(const at::Tensor& Wt, const at::Tensor& Bt, at::Tensor& out,
                Geometry g, cudaStream_t stream) {
  using acc_t = at::opmath_type<scalar_t>;
  const size_t smem = plan(g, sizeof(acc_t), 0, false, true, false);
  const dim3 grid(static_cast<unsigned>(num_tiles(g)),
                  static_cast<unsigned>(ceil_div(g.Cv, CH_PER_BLOCK)),
                  static_cast<unsigned>(g.B));
  cuda::agg_kernel<scalar_t, w_t><<<grid, NUM_THREADS, smem, stream>>>(
      Wt.data_ptr<w_t>(), Bt.data_ptr<scalar_t>(), out.data_ptr<scalar_t>(),
      g);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

// out (B, T, Cv, H, W) = inv(Wt (B, T, S, H, W), A (B, Cv, H, W)).
template <typename scalar_t, typename w_t>
void launch_inv(const at::Tensor& Wt, const at::Tensor& A, at::Tensor& out,
                Geometry g, cudaStream_t stream) {
  using acc_t = at::opmath_type<scalar_t>;
  const size_t smem = plan(g, sizeof(acc_t), 0, false, true, false);
  const dim3 grid(static_cast<unsigned>(num_tiles(g)),
                  static_cast<unsigned>(ceil_div(g.Cv, CH_PER_BLOCK)),
                  static_cast<unsigned>(g.B * g.T));
  cuda::inv_kernel<scalar_t, w_t><<<grid, NUM_THREADS, smem, stream>>>(
      Wt.data_ptr<w_t>(), A.data_ptr<scalar_t>(), out.data_ptr<scalar_t>(), g);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

bool is_empty(std::initializer_list<int64_t> sizes) {
  for (int64_t s : sizes)
    if (s == 0) return true;
  return false;
}

}  // namespace

// ---------------------------------------------------------------------------
// fused local attention
// ---------------------------------------------------------------------------
std::vector<at::Tensor> local_attention_forward_cuda(
    const at::Tensor& q_in, const at::Tensor& k_in, const at::Tensor& v_in,
    int64_t window, int64_t dilation, double scale, bool mask_padding) {
  const char* fn = "local_attention_forward_cuda";
  check_tensor(fn, "q", q_in, 4, q_in);
  check_tensor(fn, "k", k_in, 5, q_in);
  check_tensor(fn, "v", v_in, 5, q_in);
  check_window(fn, window, dilation);
  const int64_t B = q_in.size(0), C = q_in.size(1), H = q_in.size(2),
                W = q_in.size(3), T = k_in.size(1), Cv = v_in.size(2);
  TORCH_CHECK(k_in.size(0) == B && k_in.size(2) == C && k_in.size(3) == H &&
                  k_in.size(4) == W,
              fn, ": k must be (B, T, C, H, W) to match q ", q_in.sizes(),
              ", got ", k_in.sizes());
  TORCH_CHECK(v_in.size(0) == B && v_in.size(1) == T && v_in.size(3) == H &&
                  v_in.size(4) == W,
              fn, ": v must be (B, T, Cv, H, W) to match k ", k_in.sizes(),
              ", got ", v_in.sizes());
  check_sizes(fn, B, T, H, W);
  at::cuda::CUDAGuard device_guard(q_in.device());
  const at::Tensor q = q_in.contiguous(), k = k_in.contiguous(),
                   v = v_in.contiguous();
  at::Tensor out = at::empty({B, Cv, H, W}, v.options());
  // (B, H, W) log-sum-exp, float32 (float64 for double inputs)
  at::Tensor lse_acc = at::empty({B, H, W}, q.options().dtype(acc_type(q)));
  if (is_empty({B, T, H, W})) {
    return {out.zero_(), lse_acc.zero_()};
  }
  cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kHalf, at::kBFloat16, q.scalar_type(), "local_attention_forward_cuda", [&] {
        using acc_t = at::opmath_type<scalar_t>;
        const Geometry g0 = make_geometry(B, T, C, Cv, H, W, window, dilation);
        {
          Geometry g = g0;
          const size_t smem = plan(g, sizeof(acc_t), 0, true, false, true);
          const dim3 grid(static_cast<unsigned>(num_tiles(g)), 1,
                          static_cast<unsigned>(B));
          cuda::stats_kernel<scalar_t><<<grid, NUM_THREADS, smem, stream>>>(
              q.data_ptr<scalar_t>(), k.data_ptr<scalar_t>(),
              lse_acc.data_ptr<acc_t>(), g, static_cast<acc_t>(scale),
              mask_padding);
          C10_CUDA_KERNEL_LAUNCH_CHECK();
        }
        if (Cv > 0) {
          Geometry g = g0;
          const size_t smem = plan(g, sizeof(acc_t), TILE_P, true, true, false);
          const dim3 grid(static_cast<unsigned>(num_tiles(g)),
                          static_cast<unsigned>(ceil_div(Cv, CH_PER_BLOCK)),
                          static_cast<unsigned>(B));
          cuda::fused_agg_kernel<scalar_t>
              <<<grid, NUM_THREADS, smem, stream>>>(
                  q.data_ptr<scalar_t>(), k.data_ptr<scalar_t>(),
                  v.data_ptr<scalar_t>(), lse_acc.data_ptr<acc_t>(),
                  out.data_ptr<scalar_t>(), g, static_cast<acc_t>(scale),
                  mask_padding);
          C10_CUDA_KERNEL_LAUNCH_CHECK();
        }
      });
  // lse in the accumulation type: float32, or float64 for double inputs
  return {out, lse_acc};
}

std::vector<at::Tensor> local_attention_backward_cuda(
    const at::Tensor& grad_out_in, const at::Tensor& q_in,
    const at::Tensor& k_in, const at::Tensor& v_in, const at::Tensor& out_in,
    const at::Tensor& lse_in, int64_t window, int64_t dilation, double scale,
    bool mask_padding) {
  const char* fn = "local_attention_backward_cuda";
  check_tensor(fn, "q", q_in, 4, q_in);
  check_tensor(fn, "k", k_in, 5, q_in);
  check_tensor(fn, "v", v_in, 5, q_in);
  check_tensor(fn, "grad_out", grad_out_in, 4, q_in);
  check_tensor(fn, "out", out_in, 4, q_in);
  TORCH_CHECK(lse_in.defined() && lse_in.is_cuda() &&
                  lse_in.device() == q_in.device() && lse_in.dim() == 3,
              fn, ": lse must be a (B, H, W) tensor on ", q_in.device());
  check_window(fn, window, dilation);
  const int64_t B = q_in.size(0), C = q_in.size(1), H = q_in.size(2),
                W = q_in.size(3), T = k_in.size(1), Cv = v_in.size(2);
  TORCH_CHECK(k_in.size(0) == B && k_in.size(2) == C && k_in.size(3) == H &&
                  k_in.size(4) == W,
              fn, ": k must be (B, T, C, H, W) to match q ", q_in.sizes(),
              ", got ", k_in.sizes());
  TORCH_CHECK(v_in.size(0) == B && v_in.size(1) == T && v_in.size(3) == H &&
                  v_in.size(4) == W,
              fn, ": v must be (B, T, Cv, H, W) to match k ", k_in.sizes(),
              ", got ", v_in.sizes());
  TORCH_CHECK(grad_out_in.sizes() == at::IntArrayRef({B, Cv, H, W}) &&
                  out_in.sizes() == grad_out_in.sizes(),
              fn, ": grad_out and out must be (B, Cv, H, W) = ",
              at::IntArrayRef({B, Cv, H, W}), ", got ", grad_out_in.sizes(),
              " and ", out_in.sizes());
  TORCH_CHECK(lse_in.sizes() == at::IntArrayRef({B, H, W}), fn,
              ": lse must be (B, H, W) = ", at::IntArrayRef({B, H, W}),
              ", got ", lse_in.sizes());
  check_sizes(fn, B, T, H, W);
  at::cuda::CUDAGuard device_guard(q_in.device());
  const at::Tensor q = q_in.contiguous(), k = k_in.contiguous(),
                   v = v_in.contiguous(), grad_out = grad_out_in.contiguous();
  at::Tensor grad_q = at::empty_like(q);
  at::Tensor grad_k = at::empty_like(k);
  at::Tensor grad_v = at::empty_like(v);
  if (is_empty({B, T, H, W})) {
    return {grad_q.zero_(), grad_k.zero_(), grad_v.zero_()};
  }
  const at::ScalarType acc = acc_type(q);
  const int64_t S = window * window;
  // D = sum_cv grad_out * out per query pixel (B, H, W)
  const at::Tensor D =
      (grad_out.to(acc) * out_in.to(acc)).sum(1).contiguous();
  const at::Tensor lse = lse_in.to(acc).contiguous();
  // corr -> p and dP -> scale * dlogit, both (B, T, S, H, W) in acc type
  at::Tensor prob = at::empty({B, T, S, H, W}, q.options().dtype(acc));
  at::Tensor dlogit = at::empty({B, T, S, H, W}, q.options().dtype(acc));
  cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kHalf, at::kBFloat16, q.scalar_type(), "local_attention_backward_cuda", [&] {
        using acc_t = at::opmath_type<scalar_t>;
        // logits / scale and dP = <grad_out, v[slot]>
        launch_corr<scalar_t, acc_t>(
            q, k, prob, make_geometry(B, T, C, Cv, H, W, window, dilation),
            stream);
        if (Cv > 0) {
          launch_corr<scalar_t, acc_t>(
              grad_out, v, dlogit,
              make_geometry(B, T, Cv, Cv, H, W, window, dilation), stream);
        } else {
          dlogit.zero_();
        }
        {
          const Geometry g =
              make_geometry(B, T, C, Cv, H, W, window, dilation);
          const int64_t total = prob.numel();
          const int64_t blocks =
              std::min<int64_t>(ceil_div(total, NUM_THREADS), 1 << 20);
          cuda::softmax_backward_kernel<acc_t>
              <<<static_cast<unsigned>(blocks), NUM_THREADS, 0, stream>>>(
                  prob.data_ptr<acc_t>(), dlogit.data_ptr<acc_t>(),
                  lse.data_ptr<acc_t>(), D.data_ptr<acc_t>(), g,
                  static_cast<acc_t>(scale), mask_padding, total);
          C10_CUDA_KERNEL_LAUNCH_CHECK();
        }
        if (C > 0) {
          // grad_q = sum_{t,s} scale * dlogit * k[slot]
          launch_agg<scalar_t, acc_t>(
              dlogit, k, grad_q,
              make_geometry(B, T, C, C, H, W, window, dilation), stream);
          // grad_k[key] = sum over (query, slot) seeing it of
          //               scale * dlogit * q[query]
          launch_inv<scalar_t, acc_t>(
              dlogit, q, grad_k,
              make_geometry(B, T, C, C, H, W, window, dilation), stream);
        }
        if (Cv > 0) {
          // grad_v[key] = sum over (query, slot) seeing it of
          //               p * grad_out[query]
          launch_inv<scalar_t, acc_t>(
              prob, grad_out, grad_v,
              make_geometry(B, T, Cv, Cv, H, W, window, dilation), stream);
        }
      });
  return {grad_q, grad_k, grad_v};
}

// ---------------------------------------------------------------------------
// unfused building blocks
// ---------------------------------------------------------------------------
at::Tensor local_correlation_forward_cuda(const at::Tensor& q_in,
                                          const at::Tensor& k_in,
                                          int64_t window, int64_t dilation) {
  const char* fn = "local_correlation_forward_cuda";
  check_tensor(fn, "q", q_in, 4, q_in);
  check_tensor(fn, "k", k_in, 5, q_in);
  check_window(fn, window, dilation);
  const int64_t B = q_in.size(0), C = q_in.size(1), H = q_in.size(2),
                W = q_in.size(3), T = k_in.size(1);
  TORCH_CHECK(k_in.size(0) == B && k_in.size(2) == C && k_in.size(3) == H &&
                  k_in.size(4) == W,
              fn, ": k must be (B, T, C, H, W) to match q ", q_in.sizes(),
              ", got ", k_in.sizes());
  check_sizes(fn, B, T, H, W);
  at::cuda::CUDAGuard device_guard(q_in.device());
  const at::Tensor q = q_in.contiguous(), k = k_in.contiguous();
  at::Tensor corr = at::empty({B, T, window * window, H, W}, q.options());
  if (is_empty({B, T, H, W})) return corr.zero_();
  cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kHalf, at::kBFloat16, q.scalar_type(), "local_correlation_forward_cuda", [&] {
        launch_corr<scalar_t, scalar_t>(
            q, k, corr, make_geometry(B, T, C, C, H, W, window, dilation),
            stream);
      });
  return corr;
}

std::vector<at::Tensor> local_correlation_backward_cuda(
    const at::Tensor& grad_corr_in, const at::Tensor& q_in,
    const at::Tensor& k_in, int64_t window, int64_t dilation) {
  const char* fn = "local_correlation_backward_cuda";
  check_tensor(fn, "q", q_in, 4, q_in);
  check_tensor(fn, "k", k_in, 5, q_in);
  check_tensor(fn, "grad_corr", grad_corr_in, 5, q_in);
  check_window(fn, window, dilation);
  const int64_t B = q_in.size(0), C = q_in.size(1), H = q_in.size(2),
                W = q_in.size(3), T = k_in.size(1);
  TORCH_CHECK(k_in.size(0) == B && k_in.size(2) == C && k_in.size(3) == H &&
                  k_in.size(4) == W,
              fn, ": k must be (B, T, C, H, W) to match q ", q_in.sizes(),
              ", got ", k_in.sizes());
  TORCH_CHECK(grad_corr_in.sizes() ==
                  at::IntArrayRef({B, T, window * window, H, W}),
              fn, ": grad_corr must be (B, T, S, H, W) = ",
              at::IntArrayRef({B, T, window * window, H, W}), ", got ",
              grad_corr_in.sizes());
  check_sizes(fn, B, T, H, W);
  at::cuda::CUDAGuard device_guard(q_in.device());
  const at::Tensor q = q_in.contiguous(), k = k_in.contiguous(),
                   grad_corr = grad_corr_in.contiguous();
  at::Tensor grad_q = at::empty_like(q);
  at::Tensor grad_k = at::empty_like(k);
  if (is_empty({B, T, C, H, W})) return {grad_q.zero_(), grad_k.zero_()};
  cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kHalf, at::kBFloat16, q.scalar_type(), "local_correlation_backward_cuda", [&] {
        const Geometry g = make_geometry(B, T, C, C, H, W, window, dilation);
        // grad_q[c, p] = sum_{t,s} grad_corr[t, s, p] * k[t, c, p + off_s]
        launch_agg<scalar_t, scalar_t>(grad_corr, k, grad_q, g, stream);
        // grad_k[t, c, p] = sum_s grad_corr[t, s, p - off_s] * q[c, p - off_s]
        launch_inv<scalar_t, scalar_t>(grad_corr, q, grad_k, g, stream);
      });
  return {grad_q, grad_k};
}

at::Tensor local_aggregation_forward_cuda(const at::Tensor& attn_in,
                                          const at::Tensor& v_in,
                                          int64_t window, int64_t dilation) {
  const char* fn = "local_aggregation_forward_cuda";
  check_tensor(fn, "attn", attn_in, 5, attn_in);
  check_tensor(fn, "v", v_in, 5, attn_in);
  check_window(fn, window, dilation);
  const int64_t B = v_in.size(0), T = v_in.size(1), Cv = v_in.size(2),
                H = v_in.size(3), W = v_in.size(4);
  TORCH_CHECK(attn_in.sizes() ==
                  at::IntArrayRef({B, T, window * window, H, W}),
              fn, ": attn must be (B, T, S, H, W) = ",
              at::IntArrayRef({B, T, window * window, H, W}),
              " to match v ", v_in.sizes(), ", got ", attn_in.sizes());
  check_sizes(fn, B, T, H, W);
  at::cuda::CUDAGuard device_guard(v_in.device());
  const at::Tensor attn = attn_in.contiguous(), v = v_in.contiguous();
  at::Tensor out = at::empty({B, Cv, H, W}, v.options());
  if (is_empty({B, T, Cv, H, W})) return out.zero_();
  cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kHalf, at::kBFloat16, v.scalar_type(), "local_aggregation_forward_cuda", [&] {
        launch_agg<scalar_t, scalar_t>(
            attn, v, out, make_geometry(B, T, Cv, Cv, H, W, window, dilation),
            stream);
      });
  return out;
}

std::vector<at::Tensor> local_aggregation_backward_cuda(
    const at::Tensor& grad_out_in, const at::Tensor& attn_in,
    const at::Tensor& v_in, int64_t window, int64_t dilation) {
  const char* fn = "local_aggregation_backward_cuda";
  check_tensor(fn, "attn", attn_in, 5, attn_in);
  check_tensor(fn, "v", v_in, 5, attn_in);
  check_tensor(fn, "grad_out", grad_out_in, 4, attn_in);
  check_window(fn, window, dilation);
  const int64_t B = v_in.size(0), T = v_in.size(1), Cv = v_in.size(2),
                H = v_in.size(3), W = v_in.size(4);
  TORCH_CHECK(attn_in.sizes() ==
                  at::IntArrayRef({B, T, window * window, H, W}),
              fn, ": attn must be (B, T, S, H, W) = ",
              at::IntArrayRef({B, T, window * window, H, W}),
              " to match v ", v_in.sizes(), ", got ", attn_in.sizes());
  TORCH_CHECK(grad_out_in.sizes() == at::IntArrayRef({B, Cv, H, W}), fn,
              ": grad_out must be (B, Cv, H, W) = ",
              at::IntArrayRef({B, Cv, H, W}), ", got ", grad_out_in.sizes());
  check_sizes(fn, B, T, H, W);
  at::cuda::CUDAGuard device_guard(v_in.device());
  const at::Tensor attn = attn_in.contiguous(), v = v_in.contiguous(),
                   grad_out = grad_out_in.contiguous();
  at::Tensor grad_attn = at::empty_like(attn);
  at::Tensor grad_v = at::empty_like(v);
  if (is_empty({B, T, Cv, H, W})) {
    return {grad_attn.zero_(), grad_v.zero_()};
  }
  cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kHalf, at::kBFloat16, v.scalar_type(), "local_aggregation_backward_cuda", [&] {
        const Geometry g = make_geometry(B, T, Cv, Cv, H, W, window, dilation);
        // grad_attn[t, s, p] = <grad_out[:, p], v[t, :, p + off_s]>
        launch_corr<scalar_t, scalar_t>(grad_out, v, grad_attn, g, stream);
        // grad_v[t, c, p] = sum_s attn[t, s, p - off_s] * grad_out[c, p - off_s]
        launch_inv<scalar_t, scalar_t>(attn, grad_out, grad_v, g, stream);
      });
  return {grad_attn, grad_v};
}

}  // namespace lma
