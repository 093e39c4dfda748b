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
constexpr int64_t kGroup = 4;    // output pixels of one weighted-sum group

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
using cpu::kGroup;
using cpu::kTile;

// ---------------------------------------------------------------------
// small helpers
// ---------------------------------------------------------------------
// exp of n values in place. float: Cephes' expf polynomial on 32-byte
// vectors (relative error ~2e-7); values below -87 (and -inf) give exactly
// 0. double: std::exp.
inline void exp_inplace(float* a, int64_t n);
inline void exp_inplace(double* a, int64_t n) {
  for (int64_t i = 0; i < n; ++i) a[i] = std::exp(a[i]);
}

// 32-byte vector of scalar_t (GCC vector extension): one AVX register in the
// AVX2 variant, two SSE registers in the baseline one.
template <typename scalar_t>
struct Vec {
  typedef scalar_t type __attribute__((vector_size(32)));
  static constexpr int64_t kLanes = 32 / sizeof(scalar_t);
};

template <typename V, typename scalar_t>
inline V vload(const scalar_t* p) {
  V v;
  std::memcpy(&v, p, sizeof(V));
  return v;
}

template <typename V, typename scalar_t>
inline void vstore(scalar_t* p, const V& v) {
  std::memcpy(p, &v, sizeof(V));
}

inline void exp_inplace(float* a, int64_t n) {
  typedef Vec<float>::type V;
  typedef int32_t Vi __attribute__((vector_size(32)));
  constexpr int64_t L = Vec<float>::kLanes;
  const float kRound = 12582912.0f;  // 1.5 * 2^23: rounds to nearest int
  int64_t i = 0;
  for (; i + L <= n; i += L) {
    V x = vload<V>(a + i);
    const Vi tiny = x < -87.0f;
    x = x < -87.0f ? V{} - 87.0f : x;
    x = x > 88.0f ? V{} + 88.0f : x;
    const V fx = (x * 1.44269504088896341f + kRound) - kRound;
    V z = x - fx * 0.693359375f;
    z = z - fx * -2.12194440e-4f;
    const V zz = z * z;
    V p = V{} + 1.9875691500E-4f;
    p = p * z + 1.3981999507E-3f;
    p = p * z + 8.3334519073E-3f;
    p = p * z + 4.1665795894E-2f;
    p = p * z + 1.6666665459E-1f;
    p = p * z + 5.0000001201E-1f;
    p = p * zz + z + 1.0f;
    const Vi e = (__builtin_convertvector(fx, Vi) + 127) << 23;
    V pow2n;
    std::memcpy(&pow2n, &e, sizeof(V));
    V r = p * pow2n;
    r = tiny ? V{} : r;
    vstore(a + i, r);
  }
  for (; i < n; ++i) a[i] = a[i] < -87.0f ? 0.0f : std::exp(a[i]);
}

// ---------------------------------------------------------------------
// Weighted sums over local windows for a GROUP of kGroup output pixels at
// columns xb, xb + d, ..., xb + (kGroup - 1) * d of one row. Their windows
// share source columns xb + (m - r) * d, m in [0, M), M = kGroup + window
// - 1, so each source vector is loaded once and used for all pixels:
//   out_p[c] = mul[p] * sum_{row, m} Wg[row][m][p] * src[rowbase[row]
//                                                   + m * mstride + c]
// Wg (nrows, M, kGroup) holds the weights (0 where pixel p does not use
// column m); only m in [mlo, mhi) (columns inside the map) is read.
// Accumulators of a block of channels x kGroup pixels stay in registers.
// ---------------------------------------------------------------------
struct GroupRows {
  const int64_t* rowbase;
  int64_t nrows, M, mlo, mhi, mstride;
};

template <typename scalar_t, int U>
inline void group_block(const scalar_t* Wg, const GroupRows& gr,
                        const scalar_t* src, int64_t c0,
                        scalar_t* const* out, const scalar_t* mul) {
  typedef typename Vec<scalar_t>::type V;
  constexpr int64_t L = Vec<scalar_t>::kLanes;
  V acc[kGroup][U];
#pragma GCC unroll 4
  for (int p = 0; p < kGroup; ++p)
#pragma GCC unroll 4
    for (int u = 0; u < U; ++u) acc[p][u] = V{};
  for (int64_t row = 0; row < gr.nrows; ++row) {
    const scalar_t* wr = Wg + row * gr.M * kGroup;
    const int64_t base = gr.rowbase[row] + c0;
    for (int64_t m = gr.mlo; m < gr.mhi; ++m) {
      const scalar_t* sp = src + (base + m * gr.mstride);
      V x[U];
#pragma GCC unroll 4
      for (int u = 0; u < U; ++u) x[u] = vload<V>(sp + u * L);
      const scalar_t* wm = wr + m * kGroup;
#pragma GCC unroll 4
      for (int p = 0; p < kGroup; ++p) {
        const scalar_t wv = wm[p];
#pragma GCC unroll 4
        for (int u = 0; u < U; ++u) acc[p][u] += wv * x[u];
      }
    }
  }
#pragma GCC unroll 4
  for (int p = 0; p < kGroup; ++p) {
    if (out[p] == nullptr) continue;
#pragma GCC unroll 4
    for (int u = 0; u < U; ++u)
      vstore(out[p] + c0 + u * L, acc[p][u] * mul[p]);
  }
}

template <typename scalar_t>
inline void group_wsum(const scalar_t* Wg, const GroupRows& gr,
                       const scalar_t* src, int64_t C, scalar_t* const* out,
                       const scalar_t* mul) {
  constexpr int64_t L = Vec<scalar_t>::kLanes;
  int64_t c0 = 0;
  for (; c0 + 2 * L <= C; c0 += 2 * L)
    group_block<scalar_t, 2>(Wg, gr, src, c0, out, mul);
  for (; c0 + L <= C; c0 += L)
    group_block<scalar_t, 1>(Wg, gr, src, c0, out, mul);
  for (; c0 < C; ++c0) {  // channels left over (C not a multiple of L)
    scalar_t acc[kGroup] = {};
    for (int64_t row = 0; row < gr.nrows; ++row) {
      const scalar_t* wr = Wg + row * gr.M * kGroup;
      const int64_t base = gr.rowbase[row] + c0;
      for (int64_t m = gr.mlo; m < gr.mhi; ++m) {
        const scalar_t x = src[base + m * gr.mstride];
        for (int p = 0; p < kGroup; ++p) acc[p] += wr[m * kGroup + p] * x;
      }
    }
    for (int p = 0; p < kGroup; ++p)
      if (out[p] != nullptr) out[p][c0] = acc[p] * mul[p];
  }
}

// Calls fn(first, np) for groups of up to kGroup of the n indices
// 0 .. n - 1 that are spaced by d (the first + p * d, p < np).
template <typename Fn>
inline void for_each_group(int64_t n, int64_t d, Fn&& fn) {
  for (int64_t rho = 0; rho < std::min(n, d); ++rho) {
    const int64_t count = (n - rho + d - 1) / d;
    for (int64_t g0 = 0; g0 < count; g0 += kGroup)
      fn(rho + g0 * d, std::min<int64_t>(kGroup, count - g0));
  }
}

// [mlo, mhi): the m in [0, M) whose column xb + (m - r) * d is inside [0, W).
inline void column_range(int64_t xb, int64_t W, int64_t r, int64_t d,
                         int64_t M, int64_t* mlo, int64_t* mhi) {
  *mlo = std::max<int64_t>(0, r - xb / d);
  *mhi = std::min<int64_t>(M, r + (W - 1 - xb) / d + 1);
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
    typedef typename Vec<scalar_t>::type V;
    constexpr int64_t NL = Vec<scalar_t>::kLanes;
    constexpr int64_t NV = kTile / NL;
    const int64_t cstride = g.H * g.Wp;
    for (int64_t j = 0; j < win; ++j) {
      V acc[NV];
#pragma GCC unroll 4
      for (int64_t u = 0; u < NV; ++u) acc[u] = V{};
      const scalar_t* kj = krow + j * d;
      for (int64_t c = 0; c < Cq; ++c) {
        const scalar_t* kc = kj + c * cstride;
        const scalar_t* qc = qt + c * kTile;
#pragma GCC unroll 4
        for (int64_t u = 0; u < NV; ++u)
          acc[u] += vload<V>(qc + u * NL) * vload<V>(kc + u * NL);
      }
      scalar_t* Lij = Li + j * kTile;
#pragma GCC unroll 4
      for (int64_t u = 0; u < NV; ++u) vstore(Lij + u * NL, acc[u] * mul);
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
// scratch: Wg T * window * (kGroup + window - 1) * kGroup values,
// rowbase T * window offsets.
// ---------------------------------------------------------------------
template <typename scalar_t>
void agg_row(const scalar_t* attn, const scalar_t* vcl, scalar_t* out_cl,
             const Geom& g, int64_t Cv, int64_t b, int64_t y, scalar_t* Wg,
             int64_t* rowbase) {
  const int64_t win = g.window, d = g.dilation, r = g.r, HW = g.H * g.W;
  const int64_t M = kGroup + win - 1;
  for_each_group(g.W, d, [&](int64_t xb, int64_t np) {
    GroupRows gr{rowbase, 0, M, 0, 0, d * Cv};
    column_range(xb, g.W, r, d, M, &gr.mlo, &gr.mhi);
    for (int64_t t = 0; t < g.T; ++t) {
      const scalar_t* at = attn + (b * g.T + t) * g.S * HW + y * g.W + xb;
      for (int64_t i = 0; i < win; ++i) {
        const int64_t yk = y + (i - r) * d;
        if (yk < 0 || yk >= g.H) continue;
        scalar_t* wr = Wg + gr.nrows * M * kGroup;
        for (int64_t e = 0; e < M * kGroup; ++e) wr[e] = scalar_t(0);
        for (int64_t p = 0; p < np; ++p)
          for (int64_t j = 0; j < win; ++j)
            wr[(p + j) * kGroup + p] = at[(i * win + j) * HW + p * d];
        rowbase[gr.nrows++] =
            ((b * g.T + t) * HW + yk * g.W + xb - r * d) * Cv;
      }
    }
    scalar_t* out[kGroup];
    scalar_t mul[kGroup];
    for (int64_t p = 0; p < kGroup; ++p) {
      out[p] = p < np ? out_cl + ((b * g.H + y) * g.W + xb + p * d) * Cv
                      : nullptr;
      mul[p] = scalar_t(1);
    }
    group_wsum(Wg, gr, vcl, Cv, out, mul);
  });
}

// ---------------------------------------------------------------------
// Inverse-neighbourhood gather (backward of both unfused ops and of the
// fused op): res_cl (B, T, H, W, C) for row (b, t, yk):
//   res[b, t, yk, xk, :] = sum_{s: query inside} w[b, t, s, y, x] * xq[b, y, x, :]
//   with (y, x) = (yk - dy_s, xk - dx_s), w (B, T, S, H, W),
//   xq (B, H, W, C) channels-last. No atomics: each output is gathered.
// For a group of key columns xb + p * d, query column xb + (m - r) * d is
// slot j = p + 2r - m of key p.
// scratch: Wg window * (kGroup + window - 1) * kGroup values, rowbase
// window offsets.
// ---------------------------------------------------------------------
template <typename scalar_t>
void gather_row(const scalar_t* w, const scalar_t* xq, scalar_t* res_cl,
                const Geom& g, int64_t C, int64_t b, int64_t t, int64_t yk,
                scalar_t* Wg, int64_t* rowbase) {
  const int64_t win = g.window, d = g.dilation, r = g.r, HW = g.H * g.W;
  const int64_t M = kGroup + win - 1;
  const scalar_t* wt = w + (b * g.T + t) * g.S * HW;
  for_each_group(g.W, d, [&](int64_t xb, int64_t np) {
    GroupRows gr{rowbase, 0, M, 0, 0, d * C};
    column_range(xb, g.W, r, d, M, &gr.mlo, &gr.mhi);
    for (int64_t i = 0; i < win; ++i) {
      const int64_t y = yk - (i - r) * d;
      if (y < 0 || y >= g.H) continue;
      scalar_t* wr = Wg + gr.nrows * M * kGroup;
      for (int64_t e = 0; e < M * kGroup; ++e) wr[e] = scalar_t(0);
      const scalar_t* wi = wt + i * win * HW + y * g.W;
      for (int64_t m = gr.mlo; m < gr.mhi; ++m) {
        const int64_t x = xb + (m - r) * d;
        for (int64_t p = 0; p < np; ++p) {
          const int64_t j = p + 2 * r - m;
          if (j >= 0 && j < win) wr[m * kGroup + p] = wi[j * HW + x];
        }
      }
      rowbase[gr.nrows++] = ((b * g.H + y) * g.W + xb - r * d) * C;
    }
    scalar_t* out[kGroup];
    scalar_t mul[kGroup];
    for (int64_t p = 0; p < kGroup; ++p) {
      out[p] = p < np ? res_cl +
                            (((b * g.T + t) * g.H + yk) * g.W + xb + p * d) * C
                      : nullptr;
      mul[p] = scalar_t(1);
    }
    group_wsum(Wg, gr, xq, C, out, mul);
  });
}

// ---------------------------------------------------------------------
// Weighted sum over the slots of the n pixels of a tile [x0, x0 + n) of row
// (b, y), with the weights of the tile in scratch Lw [T * S][kTile]:
//   out[b, y, x, :] = mul[x - x0] * sum_{t, s inside} Lw[t * S + s][x - x0]
//                                       * src[b, t, y', x', :]
// src (B, T, H, W, C) and out (B, H, W, C) are channels-last.
// scratch: Wg T * window * (kGroup + window - 1) * kGroup values, rowbase
// T * window offsets.
// ---------------------------------------------------------------------
template <typename scalar_t>
void tile_group_sum(const scalar_t* Lw, const scalar_t* src, int64_t C,
                    scalar_t* out_cl, const scalar_t* mul_lane,
                    const Geom& g, int64_t b, int64_t y, int64_t x0,
                    int64_t n, scalar_t* Wg, int64_t* rowbase) {
  const int64_t win = g.window, d = g.dilation, r = g.r, HW = g.H * g.W;
  const int64_t M = kGroup + win - 1;
  for_each_group(n, d, [&](int64_t xb, int64_t np) {
    GroupRows gr{rowbase, 0, M, 0, 0, d * C};
    column_range(x0 + xb, g.W, r, d, M, &gr.mlo, &gr.mhi);
    for (int64_t t = 0; t < g.T; ++t) {
      for (int64_t i = 0; i < win; ++i) {
        const int64_t yk = y + (i - r) * d;
        if (yk < 0 || yk >= g.H) continue;
        const scalar_t* Li = Lw + (t * g.S + i * win) * kTile + xb;
        scalar_t* wr = Wg + gr.nrows * M * kGroup;
        for (int64_t e = 0; e < M * kGroup; ++e) wr[e] = scalar_t(0);
        for (int64_t p = 0; p < np; ++p)
          for (int64_t j = 0; j < win; ++j)
            wr[(p + j) * kGroup + p] = Li[j * kTile + p * d];
        rowbase[gr.nrows++] =
            ((b * g.T + t) * HW + yk * g.W + x0 + xb - r * d) * C;
      }
    }
    scalar_t* out[kGroup];
    scalar_t mul[kGroup];
    for (int64_t p = 0; p < kGroup; ++p) {
      out[p] = p < np ? out_cl + ((b * g.H + y) * g.W + x0 + xb + p * d) * C
                      : nullptr;
      mul[p] = p < np ? mul_lane[xb + p * d] : scalar_t(0);
    }
    group_wsum(Wg, gr, src, C, out, mul);
  });
}

// ---------------------------------------------------------------------
// Fused attention forward for row (b, y): out_cl (B, H, W, Cv), lse (B, H, W)
//   q (B, C, H, W); kp (B, T, C, H, Wp) padded; vcl (B, T, H, W, Cv).
// Per tile: logits of all T * S slots (per-thread scratch, never the whole
// attention map), exact softmax statistics per pixel, then the weighted sum
// of the values of the inside slots.
// scratch: C * kTile + T * S * kTile + 2 * kTile + T * window * (kGroup +
// window - 1) * kGroup values and T * window offsets.
// ---------------------------------------------------------------------
template <typename scalar_t>
void attn_fwd_row(const scalar_t* q, const scalar_t* kp, const scalar_t* vcl,
                  scalar_t* out_cl, scalar_t* lse, const Geom& g,
                  scalar_t scale, bool mask, int64_t b, int64_t y,
                  scalar_t* scratch, int64_t* rowbase) {
  const int64_t win = g.window, d = g.dilation, r = g.r, HW = g.H * g.W;
  const int64_t C = g.C, Cv = g.Cv, TS = g.T * g.S;
  const scalar_t ninf = -std::numeric_limits<scalar_t>::infinity();
  scalar_t* qt = scratch;
  scalar_t* L = qt + C * kTile;    // [T * S][kTile]
  scalar_t* m = L + TS * kTile;    // [kTile]
  scalar_t* l = m + kTile;         // [kTile]
  scalar_t* Wg = l + kTile;        // [T * window][M][kGroup]
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
    // weighted sum of the values of the inside slots, kGroup pixels at once
    scalar_t inv[kTile];
    for (int64_t xx = 0; xx < kTile; ++xx) inv[xx] = scalar_t(1) / l[xx];
    tile_group_sum(L, vcl, Cv, out_cl, inv, g, b, y, x0, n, Wg, rowbase);
  }
}

// ---------------------------------------------------------------------
// Fused attention backward, first stage, for row (b, y). Recomputes the
// softmax from the logits and the saved log-sum-exp and writes, in the
// (B, T, S, H, W) slot layout,
//   P = softmax weights,  G = scale * P * (dP - sum_s P * dP)
// with dP[s] = <grad_out[b, :, y, x], v[b, t, :, y', x']>. The gradients
// then follow: grad_q = sum_s G * k (done here, grad_q_cl (B, H, W, C)),
// grad_k = gather(G, q), grad_v = gather(P, grad_out).
//   q (B, C, H, W); kp (B, T, C, H, Wp); kcl (B, T, H, W, C);
//   go (B, Cv, H, W); vp (B, T, Cv, H, Wp); lse (B, H, W).
// scratch: max(C, Cv) * kTile + 2 * T * S * kTile + 2 * kTile + T * window
// * (kGroup + window - 1) * kGroup values and T * window offsets.
// ---------------------------------------------------------------------
template <typename scalar_t>
void attn_bwd_row(const scalar_t* q, const scalar_t* kp, const scalar_t* kcl,
                  const scalar_t* go, const scalar_t* vp, const scalar_t* lse,
                  scalar_t* P, scalar_t* G, scalar_t* grad_q_cl,
                  const Geom& g, scalar_t scale, bool mask, int64_t b,
                  int64_t y, scalar_t* scratch, int64_t* rowbase) {
  const int64_t HW = g.H * g.W, C = g.C, Cv = g.Cv, TS = g.T * g.S;
  const scalar_t ninf = -std::numeric_limits<scalar_t>::infinity();
  scalar_t* qt = scratch;                       // [max(C, Cv)][kTile]
  scalar_t* L = qt + std::max(C, Cv) * kTile;   // [T * S][kTile]
  scalar_t* dP = L + TS * kTile;                // [T * S][kTile]
  scalar_t* ls = dP + TS * kTile;               // [kTile]
  scalar_t* D = ls + kTile;                     // [kTile]
  scalar_t* Wg = D + kTile;  // [T * window][kGroup + window - 1][kGroup]
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
        scalar_t* Gs = dP + ts * kTile;  // dP becomes G in place
#pragma omp simd
        for (int64_t xx = 0; xx < kTile; ++xx)
          Gs[xx] = scale * Ls[xx] * (Gs[xx] - D[xx]);
        const int64_t off = ((b * g.T + t) * g.S + s) * HW + y * g.W + x0;
        scalar_t* Pd = P + off;
        scalar_t* Gd = G + off;
        for (int64_t xx = 0; xx < n; ++xx) {
          Pd[xx] = Ls[xx];
          Gd[xx] = Gs[xx];
        }
      }
    }
    // grad_q = sum over the inside slots of G * k
    scalar_t ones[kTile];
    for (int64_t xx = 0; xx < kTile; ++xx) ones[xx] = scalar_t(1);
    tile_group_sum(dP, kcl, C, grad_q_cl, ones, g, b, y, x0, n, Wg, rowbase);
  }
}

}  // namespace LMA_CPU_NS
}  // namespace lma
