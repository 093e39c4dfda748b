// CPU kernels of the local memory attention ops (see common/local_attention.h
// for the contracts). The row kernels live in local_attention_cpu_kernel.h;
// they are compiled twice, for AVX2+FMA and for the baseline ISA, and the
// variant is chosen once at run time. Work is split with at::parallel_for
// over (batch, row) (or (batch, frame, row) for the gathers); each task owns
// one scratch buffer.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

#include "common/local_attention.h"
#include "common/local_attention_blocks.h"
#include "common/local_attention_checks.h"

#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
#define LMA_HAVE_AVX2_VARIANT 1
#pragma GCC push_options
#pragma GCC target("avx2,fma")
#define LMA_CPU_NS cpu_avx2
#include "cpu/local_attention_cpu_kernel.h"
#undef LMA_CPU_NS
#pragma GCC pop_options
#endif

#define LMA_CPU_NS cpu_base
#include "cpu/local_attention_cpu_kernel.h"
#undef LMA_CPU_NS

namespace lma {
namespace {

using cpu::Geom;
using cpu::kTile;

bool cpu_has_avx2() {
#ifdef LMA_HAVE_AVX2_VARIANT
  static const bool ok =
      __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  return ok;
#else
  return false;
#endif
}

// Requested variant: 0 = auto, 1 = baseline, 2 = AVX2+FMA.
std::atomic<int> isa_request{0};

bool use_avx2() {
  const int req = isa_request.load(std::memory_order_relaxed);
  return req != 1 && cpu_has_avx2();
}

// Calls the AVX2 or the baseline variant of a row kernel.
#ifdef LMA_HAVE_AVX2_VARIANT
#define LMA_CALL(fn, ...)                      \
  (use_avx2() ? cpu_avx2::fn(__VA_ARGS__)      \
              : cpu_base::fn(__VA_ARGS__))
#else
#define LMA_CALL(fn, ...) cpu_base::fn(__VA_ARGS__)
#endif

// Rows per parallel task: small problems run on the calling thread (waking
// the thread pool costs more than they do), large ones use every thread.
int64_t grain(const Geom& g, int64_t T, int64_t channels) {
  const int64_t per_row = std::max<int64_t>(1, g.W * T * g.S * channels);
  return std::max<int64_t>(1, (int64_t(1) << 18) / per_row);
}

// Values in one row of a group weight table (M * kGroup).
int64_t wg_row(const Geom& g) {
  return (cpu::kGroup + g.window - 1) * cpu::kGroup;
}

Geom make_geom(int64_t B, int64_t T, int64_t C, int64_t Cv, int64_t H,
               int64_t W, int64_t window, int64_t dilation) {
  Geom g;
  g.B = B;
  g.T = T;
  g.C = C;
  g.Cv = Cv;
  g.H = H;
  g.W = W;
  g.window = window;
  g.dilation = dilation;
  g.r = window / 2;
  g.S = window * window;
  g.pad_l = g.r * dilation;
  g.Wp = W + 2 * g.pad_l + kTile;
  return g;
}

// The inputs (of the dtype and device of t) on the CPU, float32 or float64.
void check_cpu(const char* op, const at::Tensor& t) {
  TORCH_CHECK(t.device().is_cpu(), op,
              ": the inputs must be CPU tensors, got one on ", t.device());
  TORCH_CHECK(t.scalar_type() == at::kFloat || t.scalar_type() == at::kDouble,
              op, ": the inputs must be float32 or float64 on CPU, got ",
              t.scalar_type());
}

// (..., C, H, W) -> (..., H, C, Wp): the rows of every channel, pad_l zeros
// on the left of each row and the rest of the padding on the right; the C
// channel rows of one image row are adjacent.
at::Tensor pad_rows(const at::Tensor& x, const Geom& g) {
  auto sizes = x.sizes().vec();
  const size_t nd = sizes.size();
  std::swap(sizes[nd - 3], sizes[nd - 2]);
  sizes.back() = g.Wp;
  at::Tensor out = at::zeros(sizes, x.options());
  out.narrow(-1, g.pad_l, g.W).copy_(x.transpose(-3, -2));
  return out;
}

// (B, C, H, W) -> (B, H, W, C) contiguous; (B, T, C, H, W) -> (B, T, H, W, C).
at::Tensor channels_last(const at::Tensor& x) {
  if (x.dim() == 4) return x.permute({0, 2, 3, 1}).contiguous();
  return x.permute({0, 1, 3, 4, 2}).contiguous();
}

// (B, H, W, C) -> (B, C, H, W); (B, T, H, W, C) -> (B, T, C, H, W).
at::Tensor channels_first(const at::Tensor& x) {
  if (x.dim() == 4) return x.permute({0, 3, 1, 2}).contiguous();
  return x.permute({0, 1, 4, 2, 3}).contiguous();
}

// res (B, T, H, W, C) channels-last gather of w (B, T, S, H, W) x xq_cl.
template <typename scalar_t>
at::Tensor gather(const at::Tensor& w, const at::Tensor& xq_cl,
                  const Geom& g) {
  const int64_t C = xq_cl.size(3);
  at::Tensor res =
      at::empty({g.B, g.T, g.H, g.W, C}, xq_cl.options());
  const scalar_t* wp = w.data_ptr<scalar_t>();
  const scalar_t* xp = xq_cl.data_ptr<scalar_t>();
  scalar_t* rp = res.data_ptr<scalar_t>();
  at::parallel_for(0, g.B * g.T * g.H, grain(g, 1, C),
                   [&](int64_t begin, int64_t end) {
    std::vector<scalar_t> wbuf(g.window * wg_row(g));
    std::vector<int64_t> offs(g.window);
    for (int64_t idx = begin; idx < end; ++idx) {
      const int64_t yk = idx % g.H, bt = idx / g.H;
      LMA_CALL(gather_row<scalar_t>, wp, xp, rp, g, C, bt / g.T, bt % g.T,
               yk, wbuf.data(), offs.data());
    }
  });
  return res;
}

// out (B, H, W, Cv) channels-last weighted sum of attn (B, T, S, H, W) and
// v_cl (B, T, H, W, Cv).
template <typename scalar_t>
at::Tensor aggregate(const at::Tensor& attn, const at::Tensor& v_cl,
                     const Geom& g) {
  const int64_t Cv = v_cl.size(4);
  at::Tensor out = at::empty({g.B, g.H, g.W, Cv}, v_cl.options());
  const scalar_t* ap = attn.data_ptr<scalar_t>();
  const scalar_t* vp = v_cl.data_ptr<scalar_t>();
  scalar_t* op = out.data_ptr<scalar_t>();
  at::parallel_for(0, g.B * g.H, grain(g, g.T, Cv),
                   [&](int64_t begin, int64_t end) {
    std::vector<scalar_t> wbuf(g.T * g.window * wg_row(g));
    std::vector<int64_t> offs(g.T * g.window);
    for (int64_t idx = begin; idx < end; ++idx)
      LMA_CALL(agg_row<scalar_t>, ap, vp, op, g, Cv, idx / g.H, idx % g.H,
               wbuf.data(), offs.data());
  });
  return out;
}

// corr (B, T, S, H, W) of a (B, Cq, H, W) with b (B, T, Cq, H, W).
template <typename scalar_t>
at::Tensor correlate(const at::Tensor& a, const at::Tensor& bmem,
                     const Geom& g) {
  const int64_t Cq = a.size(1);
  at::Tensor kp = pad_rows(bmem, g);
  at::Tensor corr = at::empty({g.B, g.T, g.S, g.H, g.W}, a.options());
  const scalar_t* qp = a.data_ptr<scalar_t>();
  const scalar_t* kpp = kp.data_ptr<scalar_t>();
  scalar_t* cp = corr.data_ptr<scalar_t>();
  at::parallel_for(0, g.B * g.H, grain(g, g.T, Cq),
                   [&](int64_t begin, int64_t end) {
    std::vector<scalar_t> scratch((Cq + g.S) * kTile);
    for (int64_t idx = begin; idx < end; ++idx)
      LMA_CALL(corr_row<scalar_t>, qp, kpp, cp, g, Cq, idx / g.H, idx % g.H,
               scratch.data());
  });
  return corr;
}

// run_block of common/local_attention_blocks.h on the CPU.
at::Tensor cpu_block(Block block, const at::Tensor& x_in,
                     const at::Tensor& y_in, at::ScalarType dtype,
                     int64_t window, int64_t dilation) {
  const at::Tensor x = x_in.to(dtype).contiguous();
  const at::Tensor y = y_in.to(dtype).contiguous();
  check_cpu("local attention CPU kernels", y);
  const BlockShape s = block_shape(block, x, y, window);
  const Geom g = make_geom(s.B, s.T, s.C, s.C, s.H, s.W, window, dilation);
  at::Tensor out;
  AT_DISPATCH_FLOATING_TYPES(dtype, "local_attention_cpu", [&] {
    switch (block) {
      case Block::kCorr:
        out = correlate<scalar_t>(x, y, g);
        break;
      case Block::kAgg:
        out = channels_first(aggregate<scalar_t>(x, channels_last(y), g));
        break;
      case Block::kInv:
        out = channels_first(gather<scalar_t>(x, channels_last(y), g));
        break;
    }
  });
  return out;
}

}  // namespace

// ---------------------------------------------------------------------------
// choice of the kernel variant
// ---------------------------------------------------------------------------
void set_cpu_isa(const std::string& isa) {
  if (isa == "auto") {
    isa_request.store(0);
  } else if (isa == "baseline") {
    isa_request.store(1);
  } else if (isa == "avx2") {
    TORCH_CHECK(cpu_has_avx2(), "CPU kernel variant 'avx2' requested, but ",
#ifdef LMA_HAVE_AVX2_VARIANT
                "this CPU lacks AVX2 or FMA",
#else
                "this build has no AVX2 variant (not an x86 GCC/Clang build)",
#endif
                "; use 'auto' or 'baseline'");
    isa_request.store(2);
  } else {
    TORCH_CHECK(false, "CPU kernel variant must be 'auto', 'avx2' or "
                "'baseline', got '", isa, "'");
  }
}

std::string cpu_isa() { return use_avx2() ? "avx2" : "baseline"; }

// ---------------------------------------------------------------------------
// fused local attention
// ---------------------------------------------------------------------------
std::vector<at::Tensor> local_attention_forward_cpu(
    const at::Tensor& q_in, const at::Tensor& k_in, const at::Tensor& v_in,
    int64_t window, int64_t dilation, double scale, bool mask_padding,
    const at::Tensor& bias_in) {
  const char* op = "local_attention_forward_cpu";
  checks::check_attention(op, q_in, k_in, v_in, window, dilation, bias_in);
  check_cpu(op, q_in);
  at::Tensor q = q_in.contiguous(), k = k_in.contiguous(),
             v = v_in.contiguous();
  const at::Tensor bias =
      bias_in.defined() ? bias_in.to(q.scalar_type()).contiguous() : bias_in;
  const Geom g = make_geom(q.size(0), k.size(1), q.size(1), v.size(2),
                           q.size(2), q.size(3), window, dilation);
  at::Tensor kp = pad_rows(k, g);
  at::Tensor v_cl = channels_last(v);
  at::Tensor out_cl = at::empty({g.B, g.H, g.W, g.Cv}, v.options());
  at::Tensor lse = at::empty({g.B, g.H, g.W}, q.options());
  AT_DISPATCH_FLOATING_TYPES(q.scalar_type(), "local_attention_cpu", [&] {
    const scalar_t* qp = q.data_ptr<scalar_t>();
    const scalar_t* kpp = kp.data_ptr<scalar_t>();
    const scalar_t* vp = v_cl.data_ptr<scalar_t>();
    const scalar_t* bp =
        bias.defined() ? bias.data_ptr<scalar_t>() : nullptr;
    scalar_t* op_ = out_cl.data_ptr<scalar_t>();
    scalar_t* lp = lse.data_ptr<scalar_t>();
    const scalar_t sc = static_cast<scalar_t>(scale);
    at::parallel_for(0, g.B * g.H, grain(g, g.T, g.C + g.Cv),
                     [&](int64_t begin, int64_t end) {
      std::vector<scalar_t> scratch(cpu_base::fwd_scratch_size(g));
      std::vector<int64_t> offs(3 * g.T * g.window);
      for (int64_t idx = begin; idx < end; ++idx)
        LMA_CALL(attn_fwd_row<scalar_t>, qp, kpp, vp, bp, op_, lp, g, sc,
                 mask_padding, idx / g.H, idx % g.H, scratch.data(),
                 offs.data());
    });
  });
  return {channels_first(out_cl), lse};
}

std::vector<at::Tensor> local_attention_backward_cpu(
    const at::Tensor& grad_out_in, const at::Tensor& q_in,
    const at::Tensor& k_in, const at::Tensor& v_in, const at::Tensor& out,
    const at::Tensor& lse_in, int64_t window, int64_t dilation, double scale,
    bool mask_padding, const at::Tensor& bias_in,
    const at::Tensor& grad_lse_in) {
  const char* op = "local_attention_backward_cpu";
  checks::check_attention_backward(op, grad_out_in, q_in, k_in, v_in, out,
                                   lse_in, window, dilation, bias_in,
                                   grad_lse_in);
  check_cpu(op, q_in);
  at::Tensor q = q_in.contiguous(), k = k_in.contiguous(),
             v = v_in.contiguous();
  const bool has_bias = bias_in.defined();
  const at::Tensor bias =
      has_bias ? bias_in.to(q.scalar_type()).contiguous() : bias_in;
  at::Tensor go = grad_out_in.to(q.scalar_type()).contiguous();
  at::Tensor lse = lse_in.to(q.scalar_type()).contiguous();
  const at::Tensor grad_lse =
      grad_lse_in.defined() ? grad_lse_in.to(q.scalar_type()).contiguous()
                            : grad_lse_in;
  const Geom g = make_geom(q.size(0), k.size(1), q.size(1), v.size(2),
                           q.size(2), q.size(3), window, dilation);
  at::Tensor P = at::empty({g.B, g.T, g.S, g.H, g.W}, q.options());
  at::Tensor G = at::empty({g.B, g.T, g.S, g.H, g.W}, q.options());
  at::Tensor grad_q, grad_k, grad_v, grad_q_cl, grad_bias;
  AT_DISPATCH_FLOATING_TYPES(q.scalar_type(), "local_attention_cpu", [&] {
    {
      at::Tensor kp = pad_rows(k, g);
      at::Tensor vp = pad_rows(v, g);
      at::Tensor k_cl = channels_last(k);
      grad_q_cl = at::empty({g.B, g.H, g.W, g.C}, q.options());
      const scalar_t* qp = q.data_ptr<scalar_t>();
      const scalar_t* kpp = kp.data_ptr<scalar_t>();
      const scalar_t* kclp = k_cl.data_ptr<scalar_t>();
      scalar_t* gqp = grad_q_cl.data_ptr<scalar_t>();
      const scalar_t* gop = go.data_ptr<scalar_t>();
      const scalar_t* vpp = vp.data_ptr<scalar_t>();
      const scalar_t* lp = lse.data_ptr<scalar_t>();
      const scalar_t* glp =
          grad_lse.defined() ? grad_lse.data_ptr<scalar_t>() : nullptr;
      scalar_t* Pp = P.data_ptr<scalar_t>();
      scalar_t* Gp = G.data_ptr<scalar_t>();
      const scalar_t* bp = has_bias ? bias.data_ptr<scalar_t>() : nullptr;
      const scalar_t sc = static_cast<scalar_t>(scale);
      // with a bias, G is first the gradient of the logits (its sum over
      // the batch and the pixels is grad_bias), then scaled
      const scalar_t gsc = has_bias ? scalar_t(1) : sc;
      at::parallel_for(0, g.B * g.H, grain(g, g.T, g.C + g.Cv),
                       [&](int64_t begin, int64_t end) {
        std::vector<scalar_t> scratch(std::max(g.C, g.Cv) * kTile +
                                      2 * g.T * g.S * kTile + 2 * kTile +
                                      g.T * g.window * wg_row(g));
        std::vector<int64_t> rowbase(g.T * g.window);
        for (int64_t idx = begin; idx < end; ++idx)
          LMA_CALL(attn_bwd_row<scalar_t>, qp, kpp, kclp, gop, vpp, lp, glp,
                   bp, Pp, Gp, gqp, g, sc, gsc, mask_padding, idx / g.H,
                   idx % g.H, scratch.data(), rowbase.data());
      });
    }
    if (has_bias) {
      grad_bias = G.sum({0, 3, 4});
      G.mul_(scale);
      grad_q_cl.mul_(scale);
    }
    grad_q = channels_first(grad_q_cl);
    grad_k = channels_first(gather<scalar_t>(G, channels_last(q), g));
    G.reset();
    grad_v = channels_first(gather<scalar_t>(P, channels_last(go), g));
  });
  return {grad_q, grad_k, grad_v, grad_bias};
}

// ---------------------------------------------------------------------------
// unfused ops, from the building blocks above
// ---------------------------------------------------------------------------
LMA_DEFINE_BILINEAR_KERNELS(local_correlation_forward_cpu,
                            local_correlation_backward_cpu, kCorrelation,
                            cpu_block)
LMA_DEFINE_BILINEAR_KERNELS(local_aggregation_forward_cpu,
                            local_aggregation_backward_cpu, kAggregation,
                            cpu_block)

}  // namespace lma
