// Row kernels of the CPU local attention ops.
//
// This file has no include guard on purpose: local_attention_cpu.cpp includes
// it twice, once compiled for AVX2+FMA (namespace lma::cpu_avx2, under
// `#pragma GCC target`) and once for the baseline ISA (lma::cpu_base), and
// picks one at run time. It must only be included after <algorithm>,
// <cmath>, <cstdint>, <cstring> and <limits>.
//
// Every kernel processes one row of output pixels of one image, in tiles of
// kTile pixels along x (the work unit of at::parallel_for is a row), with
// only per-thread scratch (no per-slot allocation). Layouts:
//   * "channels-first padded" (B, T, C, H, Wp): the memory keys/values padded
//     with zeros along x: element x of a row lives at x + pad_l, with
//     pad_l = (window / 2) * dilation and Wp = W + 2 * pad_l + kTile. A
//     window slot j of query x then reads position x + j * dilation, always
//     in range, and vector loops over the kTile queries of a tile read
//     contiguous memory. Used for the dot products (correlations).
//   * "channels-last" (B, H, W, C) / (B, T, H, W, C): used for the weighted
//     sums, whose inner loops run over contiguous channels.
//   * slot maps (B, T, S, H, W) as in the public API (attention, corr).
// Slot s = i * window + j looks at (y + (i - r) * dilation,
// x + (j - r) * dilation) with r = window / 2.

#ifndef LMA_CPU_NS
#error "define LMA_CPU_NS before including local_attention_cpu_kernel.h"
#endif

// Shared by both variants (defined once).
#ifndef LMA_CPU_KERNEL_COMMON_DEFINED
#define LMA_CPU_KERNEL_COMMON_DEFINED
namespace lma {
namespace cpu {
constexpr int64_t kTile = 16;    // query pixels per tile (vector lanes)
constexpr int64_t kChunk = 256;  // channels per block of a weighted sum

struct Geom {
  int64_t B, T, C, Cv, H, W;
  int64_t window, dilation, r, S;
  int64_t pad_l, Wp;  // padded row layout
};
}  // namespace cpu
}  // namespace lma
#endif

namespace lma {
namespace LMA_CPU_NS {

using cpu::Geom;
using cpu::kChunk;
using cpu::kTile;

// ---------------------------------------------------------------------
// small helpers
// ---------------------------------------------------------------------
// Range [lo, hi) of window indices j (or i) with 0 <= x + (j - r) * d < W.
inline void valid_range(int64_t x, int64_t W, int64_t r, int64_t d,
                        int64_t window, int64_t* lo, int64_t* hi) {
  // (j - r) * d >= -x  <=>  j >= r - floor(x / d)
  *lo = std::max<int64_t>(0, r - x / d);
  // (j - r) * d <= W - 1 - x  <=>  j <= r + floor((W - 1 - x) / d)
  *hi = std::min<int64_t>(window, r + (W - 1 - x) / d + 1);
}

// Range of window indices j for which the QUERY x = xk - (j - r) * d of a
// key position xk is inside [0, W).
inline void inverse_range(int64_t xk, int64_t W, int64_t r, int64_t d,
                          int64_t window, int64_t* lo, int64_t* hi) {
  // x >= 0 <=> (j - r) * d <= xk <=> j <= r + floor(xk / d)
  *hi = std::min<int64_t>(window, r + xk / d + 1);
  // x <= W - 1 <=> (j - r) * d >= xk - W + 1 <=> j >= r - floor((W-1-xk)/d)
  *lo = std::max<int64_t>(0, r - (W - 1 - xk) / d);
}

// exp of n values in place, vectorisable. float: Cephes' expf polynomial
// (relative error ~2e-7); values below -87 (and -inf) give exactly 0.
inline void exp_inplace(float* a, int64_t n) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) {
    float x = a[i];
    const bool tiny = x < -87.0f;
    x = std::min(std::max(x, -87.0f), 88.0f);
    const float fx = std::floor(x * 1.44269504088896341f + 0.5f);
    float z = x - fx * 0.693359375f;
    z = z - fx * -2.12194440e-4f;
    const float zz = z * z;
    float p = 1.9875691500E-4f;
    p = p * z + 1.3981999507E-3f;
    p = p * z + 8.3334519073E-3f;
    p = p * z + 4.1665795894E-2f;
    p = p * z + 1.6666665459E-1f;
    p = p * z + 5.0000001201E-1f;
    p = p * zz + z + 1.0f;
    const int32_t e = (static_cast<int32_t>(fx) + 127) << 23;
    float s;
    std::memcpy(&s, &e, sizeof(s));
    a[i] = tiny ? 0.0f : p * s;
  }
}

inline void exp_inplace(double* a, int64_t n) {
  for (int64_t i = 0; i < n; ++i) a[i] = std::exp(a[i]);
}

// Copies the tile [x0, x0 + kTile) of row y of a (C, H, W) map into
// dst[C][kTile] (zeros beyond W).
template <typename scalar_t>
inline void load_tile_cf(const scalar_t* src, int64_t C, int64_t H,
                         int64_t W, int64_t y, int64_t x0, scalar_t* dst) {
  const int64_t n = std::min(kTile, W - x0);
  for (int64_t c = 0; c < C; ++c) {
    const scalar_t* s = src + (c * H + y) * W + x0;
    scalar_t* d = dst + c * kTile;
    for (int64_t xx = 0; xx < n; ++xx) d[xx] = s[xx];
    for (int64_t xx = n; xx < kTile; ++xx) d[xx] = scalar_t(0);
  }
}

// Dot products of the kTile queries qt[Cq][kTile] of row y with every slot
// of one memory frame kp (Cq, H, Wp) (channels-first padded):
//   L[s][xx] = mul * <qt[:, xx], k[:, y + dy_s, x0 + xx + dx_s]>
// Slots whose row is outside the map get `fill`; with mask_cols, slots whose
// column is outside the map get -inf too (else the zero padding gives 0).
template <typename scalar_t>
inline void tile_corr(const scalar_t* qt, int64_t Cq, const scalar_t* kp,
                      const Geom& g, int64_t y, int64_t x0, scalar_t mul,
                      scalar_t fill, bool mask_cols, scalar_t* L) {
  const int64_t win = g.window, d = g.dilation, r = g.r;
  const scalar_t ninf = -std::numeric_limits<scalar_t>::infinity();
  for (int64_t i = 0; i < win; ++i) {
    const int64_t yk = y + (i - r) * d;
    scalar_t* Li = L + i * win * kTile;
    if (yk < 0 || yk >= g.H) {
      for (int64_t e = 0; e < win * kTile; ++e) Li[e] = fill;
      continue;
    }
    const scalar_t* krow = kp + yk * g.Wp + x0;
    for (int64_t j = 0; j < win; ++j) {
      scalar_t acc[kTile];
      for (int64_t xx = 0; xx < kTile; ++xx) acc[xx] = scalar_t(0);
      const scalar_t* kj = krow + j * d;
      for (int64_t c = 0; c < Cq; ++c) {
        const scalar_t* kc = kj + c * g.H * g.Wp;
        const scalar_t* qc = qt + c * kTile;
#pragma omp simd
        for (int64_t xx = 0; xx < kTile; ++xx) acc[xx] += qc[xx] * kc[xx];
      }
      scalar_t* Lij = Li + j * kTile;
#pragma omp simd
      for (int64_t xx = 0; xx < kTile; ++xx) Lij[xx] = acc[xx] * mul;
      if (mask_cols) {
        for (int64_t xx = 0; xx < kTile; ++xx) {
          const int64_t xk = x0 + xx + (j - r) * d;
          if (xk < 0 || xk >= g.W) Lij[xx] = ninf;
        }
      }
    }
  }
}

// ---------------------------------------------------------------------
// local_correlation forward: corr (B, T, S, H, W) for row (b, y).
//   q (B, C, H, W), kp (B, T, C, H, Wp) channels-first padded.
// scratch: C * kTile + S * kTile.
// ---------------------------------------------------------------------
template <typename scalar_t>
void corr_row(const scalar_t* q, const scalar_t* kp, scalar_t* corr,
              const Geom& g, int64_t Cq, int64_t b, int64_t y,
              scalar_t* scratch) {
  scalar_t* qt = scratch;
  scalar_t* L = qt + Cq * kTile;
  const int64_t HW = g.H * g.W;
  for (int64_t x0 = 0; x0 < g.W; x0 += kTile) {
    const int64_t n = std::min(kTile, g.W - x0);
    load_tile_cf(q + b * Cq * HW, Cq, g.H, g.W, y, x0, qt);
    for (int64_t t = 0; t < g.T; ++t) {
      tile_corr(qt, Cq, kp + (b * g.T + t) * Cq * g.H * g.Wp, g, y, x0,
                scalar_t(1), scalar_t(0), false, L);
      scalar_t* dst = corr + ((b * g.T + t) * g.S * g.H + y) * g.W + x0;
      for (int64_t s = 0; s < g.S; ++s) {
        const scalar_t* Ls = L + s * kTile;
        scalar_t* ds = dst + s * HW;
        for (int64_t xx = 0; xx < n; ++xx) ds[xx] = Ls[xx];
      }
    }
  }
}

// ---------------------------------------------------------------------
// local_aggregation forward: out_cl (B, H, W, Cv) for row (b, y):
//   out[b, y, x, :] = sum_{t,s inside} attn[b, t, s, y, x] * v[b, t, y', x', :]
//   attn (B, T, S, H, W); vcl (B, T, H, W, Cv) channels-last.
// scratch: kTile * kChunk.
// ---------------------------------------------------------------------
template <typename scalar_t>
void agg_row(const scalar_t* attn, const scalar_t* vcl, scalar_t* out_cl,
             const Geom& g, int64_t Cv, int64_t b, int64_t y,
             scalar_t* scratch) {
  const int64_t win = g.window, d = g.dilation, r = g.r, HW = g.H * g.W;
  scalar_t* acc = scratch;
  for (int64_t x0 = 0; x0 < g.W; x0 += kTile) {
    const int64_t n = std::min(kTile, g.W - x0);
    for (int64_t c0 = 0; c0 < Cv; c0 += kChunk) {
      const int64_t cb = std::min(kChunk, Cv - c0);
      for (int64_t e = 0; e < n * kChunk; ++e) acc[e] = scalar_t(0);
      for (int64_t t = 0; t < g.T; ++t) {
        const scalar_t* vt = vcl + (b * g.T + t) * HW * Cv + c0;
        const scalar_t* at = attn + (b * g.T + t) * g.S * HW + y * g.W;
        for (int64_t i = 0; i < win; ++i) {
          const int64_t yk = y + (i - r) * d;
          if (yk < 0 || yk >= g.H) continue;
          for (int64_t xx = 0; xx < n; ++xx) {
            const int64_t x = x0 + xx;
            int64_t jlo, jhi;
            valid_range(x, g.W, r, d, win, &jlo, &jhi);
            scalar_t* ax = acc + xx * kChunk;
            for (int64_t j = jlo; j < jhi; ++j) {
              const scalar_t w = at[(i * win + j) * HW + x];
              const scalar_t* vp = vt + (yk * g.W + x + (j - r) * d) * Cv;
#pragma omp simd
              for (int64_t c = 0; c < cb; ++c) ax[c] += w * vp[c];
            }
          }
        }
      }
      for (int64_t xx = 0; xx < n; ++xx) {
        scalar_t* o = out_cl + ((b * g.H + y) * g.W + x0 + xx) * Cv + c0;
        const scalar_t* ax = acc + xx * kChunk;
        for (int64_t c = 0; c < cb; ++c) o[c] = ax[c];
      }
    }
  }
}

// ---------------------------------------------------------------------
// Inverse-neighbourhood gather (backward of both unfused ops and of the
// fused op): res_cl (B, T, H, W, C) for row (b, t, yk):
//   res[b, t, yk, xk, :] = sum_{s: query inside} w[b, t, s, y, x] * xq[b, y, x, :]
//   with (y, x) = (yk - dy_s, xk - dx_s), w (B, T, S, H, W),
//   xq (B, H, W, C) channels-last. No atomics: each output is gathered.
// scratch: kTile * kChunk.
// ---------------------------------------------------------------------
template <typename scalar_t>
void gather_row(const scalar_t* w, const scalar_t* xq, scalar_t* res_cl,
                const Geom& g, int64_t C, int64_t b, int64_t t, int64_t yk,
                scalar_t* scratch) {
  const int64_t win = g.window, d = g.dilation, r = g.r, HW = g.H * g.W;
  scalar_t* acc = scratch;
  const scalar_t* wt = w + (b * g.T + t) * g.S * HW;
  const scalar_t* xb = xq + b * HW * C;
  for (int64_t x0 = 0; x0 < g.W; x0 += kTile) {
    const int64_t n = std::min(kTile, g.W - x0);
    for (int64_t c0 = 0; c0 < C; c0 += kChunk) {
      const int64_t cb = std::min(kChunk, C - c0);
      for (int64_t e = 0; e < n * kChunk; ++e) acc[e] = scalar_t(0);
      for (int64_t i = 0; i < win; ++i) {
        const int64_t y = yk - (i - r) * d;
        if (y < 0 || y >= g.H) continue;
        for (int64_t xx = 0; xx < n; ++xx) {
          const int64_t xk = x0 + xx;
          int64_t jlo, jhi;
          inverse_range(xk, g.W, r, d, win, &jlo, &jhi);
          scalar_t* ax = acc + xx * kChunk;
          for (int64_t j = jlo; j < jhi; ++j) {
            const int64_t x = xk - (j - r) * d;
            const scalar_t wv = wt[(i * win + j) * HW + y * g.W + x];
            const scalar_t* xp = xb + (y * g.W + x) * C + c0;
#pragma omp simd
            for (int64_t c = 0; c < cb; ++c) ax[c] += wv * xp[c];
          }
        }
      }
      for (int64_t xx = 0; xx < n; ++xx) {
        scalar_t* o =
            res_cl + (((b * g.T + t) * g.H + yk) * g.W + x0 + xx) * C + c0;
        const scalar_t* ax = acc + xx * kChunk;
        for (int64_t c = 0; c < cb; ++c) o[c] = ax[c];
      }
    }
  }
}

// ---------------------------------------------------------------------
// Fused attention forward for row (b, y): out_cl (B, H, W, Cv), lse (B, H, W)
//   q (B, C, H, W); kp (B, T, C, H, Wp) padded; vcl (B, T, H, W, Cv).
// Per tile: logits of all T * S slots (per-thread scratch, never the whole
// attention map), exact softmax statistics per pixel, then the weighted sum
// of the values of the inside slots.
// scratch: C * kTile + T * S * kTile + kTile * kChunk + 2 * kTile.
// ---------------------------------------------------------------------
template <typename scalar_t>
void attn_fwd_row(const scalar_t* q, const scalar_t* kp, const scalar_t* vcl,
                  scalar_t* out_cl, scalar_t* lse, const Geom& g,
                  scalar_t scale, bool mask, int64_t b, int64_t y,
                  scalar_t* scratch) {
  const int64_t win = g.window, d = g.dilation, r = g.r, HW = g.H * g.W;
  const int64_t C = g.C, Cv = g.Cv, TS = g.T * g.S;
  const scalar_t ninf = -std::numeric_limits<scalar_t>::infinity();
  scalar_t* qt = scratch;
  scalar_t* L = qt + C * kTile;   // [T * S][kTile]
  scalar_t* acc = L + TS * kTile; // [kTile][kChunk]
  scalar_t* m = acc + kTile * kChunk;
  scalar_t* l = m + kTile;
  const scalar_t fill = mask ? ninf : scalar_t(0);
  for (int64_t x0 = 0; x0 < g.W; x0 += kTile) {
    const int64_t n = std::min(kTile, g.W - x0);
    load_tile_cf(q + b * C * HW, C, g.H, g.W, y, x0, qt);
    for (int64_t t = 0; t < g.T; ++t)
      tile_corr(qt, C, kp + (b * g.T + t) * C * g.H * g.Wp, g, y, x0, scale,
                fill, mask, L + t * g.S * kTile);
    // softmax statistics, vectorised over the kTile pixels
    for (int64_t xx = 0; xx < kTile; ++xx) m[xx] = ninf;
    for (int64_t s = 0; s < TS; ++s) {
      const scalar_t* Ls = L + s * kTile;
#pragma omp simd
      for (int64_t xx = 0; xx < kTile; ++xx) m[xx] = std::max(m[xx], Ls[xx]);
    }
    for (int64_t s = 0; s < TS; ++s) {
      scalar_t* Ls = L + s * kTile;
#pragma omp simd
      for (int64_t xx = 0; xx < kTile; ++xx) Ls[xx] -= m[xx];
    }
    exp_inplace(L, TS * kTile);
    for (int64_t xx = 0; xx < kTile; ++xx) l[xx] = scalar_t(0);
    for (int64_t s = 0; s < TS; ++s) {
      const scalar_t* Ls = L + s * kTile;
#pragma omp simd
      for (int64_t xx = 0; xx < kTile; ++xx) l[xx] += Ls[xx];
    }
    for (int64_t xx = 0; xx < n; ++xx)
      lse[(b * g.H + y) * g.W + x0 + xx] = m[xx] + std::log(l[xx]);
    // weighted sum of the values of the inside slots
    for (int64_t c0 = 0; c0 < Cv; c0 += kChunk) {
      const int64_t cb = std::min(kChunk, Cv - c0);
      for (int64_t e = 0; e < n * kChunk; ++e) acc[e] = scalar_t(0);
      for (int64_t t = 0; t < g.T; ++t) {
        const scalar_t* vt = vcl + (b * g.T + t) * HW * Cv + c0;
        const scalar_t* Lt = L + t * g.S * kTile;
        for (int64_t i = 0; i < win; ++i) {
          const int64_t yk = y + (i - r) * d;
          if (yk < 0 || yk >= g.H) continue;
          for (int64_t xx = 0; xx < n; ++xx) {
            const int64_t x = x0 + xx;
            int64_t jlo, jhi;
            valid_range(x, g.W, r, d, win, &jlo, &jhi);
            scalar_t* ax = acc + xx * kChunk;
            for (int64_t j = jlo; j < jhi; ++j) {
              const scalar_t wgt = Lt[(i * win + j) * kTile + xx];
              const scalar_t* vp = vt + (yk * g.W + x + (j - r) * d) * Cv;
#pragma omp simd
              for (int64_t c = 0; c < cb; ++c) ax[c] += wgt * vp[c];
            }
          }
        }
      }
      for (int64_t xx = 0; xx < n; ++xx) {
        scalar_t* o = out_cl + ((b * g.H + y) * g.W + x0 + xx) * Cv + c0;
        const scalar_t* ax = acc + xx * kChunk;
        const scalar_t inv = scalar_t(1) / l[xx];
#pragma omp simd
        for (int64_t c = 0; c < cb; ++c) o[c] = ax[c] * inv;
      }
    }
  }
}

// ---------------------------------------------------------------------
// Fused attention backward, first stage, for row (b, y). Recomputes the
// softmax from the logits and the saved log-sum-exp and writes, in the
// (B, T, S, H, W) slot layout,
//   P = softmax weights,  G = scale * P * (dP - sum_s P * dP)
// with dP[s] = <grad_out[b, :, y, x], v[b, t, :, y', x']>. The gradients
// then follow by gathers: grad_q = sum_s G * k, grad_k = gather(G, q),
// grad_v = gather(P, grad_out).
//   q (B, C, H, W); kp (B, T, C, H, Wp); go (B, Cv, H, W);
//   vp (B, T, Cv, H, Wp); lse (B, H, W).
// scratch: max(C, Cv) * kTile + 2 * T * S * kTile + 2 * kTile.
// ---------------------------------------------------------------------
template <typename scalar_t>
void attn_bwd_row(const scalar_t* q, const scalar_t* kp, const scalar_t* go,
                  const scalar_t* vp, const scalar_t* lse, scalar_t* P,
                  scalar_t* G, const Geom& g, scalar_t scale, bool mask,
                  int64_t b, int64_t y, scalar_t* scratch) {
  const int64_t HW = g.H * g.W, C = g.C, Cv = g.Cv, TS = g.T * g.S;
  const scalar_t ninf = -std::numeric_limits<scalar_t>::infinity();
  scalar_t* qt = scratch;                       // [max(C, Cv)][kTile]
  scalar_t* L = qt + std::max(C, Cv) * kTile;   // [T * S][kTile]
  scalar_t* dP = L + TS * kTile;                // [T * S][kTile]
  scalar_t* ls = dP + TS * kTile;               // [kTile]
  scalar_t* D = ls + kTile;                     // [kTile]
  const scalar_t fill = mask ? ninf : scalar_t(0);
  for (int64_t x0 = 0; x0 < g.W; x0 += kTile) {
    const int64_t n = std::min(kTile, g.W - x0);
    load_tile_cf(q + b * C * HW, C, g.H, g.W, y, x0, qt);
    for (int64_t t = 0; t < g.T; ++t)
      tile_corr(qt, C, kp + (b * g.T + t) * C * g.H * g.Wp, g, y, x0, scale,
                fill, mask, L + t * g.S * kTile);
    for (int64_t xx = 0; xx < kTile; ++xx)
      ls[xx] = xx < n ? lse[(b * g.H + y) * g.W + x0 + xx] : scalar_t(0);
    for (int64_t s = 0; s < TS; ++s) {
      scalar_t* Ls = L + s * kTile;
#pragma omp simd
      for (int64_t xx = 0; xx < kTile; ++xx) Ls[xx] -= ls[xx];
    }
    exp_inplace(L, TS * kTile);  // L now holds P
    load_tile_cf(go + b * Cv * HW, Cv, g.H, g.W, y, x0, qt);
    for (int64_t t = 0; t < g.T; ++t)
      tile_corr(qt, Cv, vp + (b * g.T + t) * Cv * g.H * g.Wp, g, y, x0,
                scalar_t(1), scalar_t(0), false, dP + t * g.S * kTile);
    for (int64_t xx = 0; xx < kTile; ++xx) D[xx] = scalar_t(0);
    for (int64_t s = 0; s < TS; ++s) {
      const scalar_t* Ls = L + s * kTile;
      const scalar_t* dPs = dP + s * kTile;
#pragma omp simd
      for (int64_t xx = 0; xx < kTile; ++xx) D[xx] += Ls[xx] * dPs[xx];
    }
    for (int64_t t = 0; t < g.T; ++t) {
      for (int64_t s = 0; s < g.S; ++s) {
        const int64_t ts = t * g.S + s;
        const scalar_t* Ls = L + ts * kTile;
        const scalar_t* dPs = dP + ts * kTile;
        const int64_t off = ((b * g.T + t) * g.S + s) * HW + y * g.W + x0;
        scalar_t* Ps = P + off;
        scalar_t* Gs = G + off;
        for (int64_t xx = 0; xx < n; ++xx) {
          Ps[xx] = Ls[xx];
          Gs[xx] = scale * Ls[xx] * (dPs[xx] - D[xx]);
        }
      }
    }
  }
}

}  // namespace LMA_CPU_NS
}  // namespace lma
