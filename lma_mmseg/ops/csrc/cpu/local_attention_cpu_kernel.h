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
//   * "row-major padded" (B, T, H, C, Wp): the memory keys/values padded
//     with zeros along x, the C channel rows of one image row adjacent
//     (so a block of channels of one row is one contiguous piece of
//     memory): element x of a row lives at x + pad_l, with
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
constexpr int64_t kCorrBlock = 64;  // channels per block of the dot products

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
using cpu::kCorrBlock;
using cpu::kGroup;
using cpu::kTile;

// ---------------------------------------------------------------------
// small helpers
// ---------------------------------------------------------------------
// exp of n values in place. float: Cephes' expf polynomial on 32-byte
// vectors (relative error ~2e-7); values below -87 (and -inf) give exactly
// 0. double: std::exp.
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

// exp of one 32-byte vector of floats (see exp_inplace).
inline Vec<float>::type vexp(Vec<float>::type x) {
  typedef Vec<float>::type V;
  typedef int32_t Vi __attribute__((vector_size(32)));
  const float kRound = 12582912.0f;  // 1.5 * 2^23: rounds to nearest int
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
  return tiny ? V{} : r;
}

inline void exp_inplace(float* a, int64_t n) {
  typedef Vec<float>::type V;
  constexpr int64_t L = Vec<float>::kLanes;
  int64_t i = 0;
  for (; i + L <= n; i += L) vstore(a + i, vexp(vload<V>(a + i)));
  for (; i < n; ++i) a[i] = a[i] < -87.0f ? 0.0f : std::exp(a[i]);
}

// For `rows` rows of kTile values a[row][xx]: a = exp(a - m[xx]) in place,
// and l[xx] += the sum over the rows (summed apart first: called once per
// window row, the rounding error grows with window, not T * window**2).
inline void exp_sub_sum(float* a, int64_t rows, const float* m, float* l) {
  typedef Vec<float>::type V;
  constexpr int64_t L = Vec<float>::kLanes;
  constexpr int64_t NV = kTile / L;
  V mv[NV], lv[NV];  // the sum of these rows, then added to l
  for (int64_t u = 0; u < NV; ++u) {
    mv[u] = vload<V>(m + u * L);
    lv[u] = V{};
  }
  for (int64_t row = 0; row < rows; ++row) {
    float* ar = a + row * kTile;
#pragma GCC unroll 4
    for (int64_t u = 0; u < NV; ++u) {
      const V e = vexp(vload<V>(ar + u * L) - mv[u]);
      vstore(ar + u * L, e);
      lv[u] += e;
    }
  }
  for (int64_t u = 0; u < NV; ++u)
    vstore(l + u * L, vload<V>(l + u * L) + lv[u]);
}

inline void exp_sub_sum(double* a, int64_t rows, const double* m,
                        double* l) {
  double part[kTile] = {};
  for (int64_t row = 0; row < rows; ++row) {
    double* ar = a + row * kTile;
    for (int64_t xx = 0; xx < kTile; ++xx) {
      ar[xx] = std::exp(ar[xx] - m[xx]);
      part[xx] += ar[xx];
    }
  }
  for (int64_t xx = 0; xx < kTile; ++xx) l[xx] += part[xx];
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

// Dot products of the kTile queries qt[Cq][kTile] with J consecutive
// window columns of one key row: kj points at column x0 + j * d of channel
// 0, cstride separates channels. Lj[jj * kTile + xx] = mul * <qt[:, xx],
// k[:, x0 + xx + (j + jj) * d]> (+ bj[jj] when bj is given and the
// values are not accumulated onto L). The J * kTile / lanes accumulators hide
// the FMA latency; each query vector is loaded once for J columns.
template <typename scalar_t, int J>
inline void corr_columns(const scalar_t* qt, int64_t Cq, const scalar_t* kj,
                         int64_t d, int64_t cstride, scalar_t mul,
                         scalar_t* Lj, bool accumulate,
                         const scalar_t* bj) {
  typedef typename Vec<scalar_t>::type V;
  constexpr int64_t NL = Vec<scalar_t>::kLanes;
  constexpr int64_t NV = kTile / NL;
  V acc[J][NV];
#pragma GCC unroll 4
  for (int jj = 0; jj < J; ++jj)
#pragma GCC unroll 4
    for (int64_t u = 0; u < NV; ++u) acc[jj][u] = V{};
  for (int64_t c = 0; c < Cq; ++c) {
    const scalar_t* kc = kj + c * cstride;
    const scalar_t* qc = qt + c * kTile;
    V qv[NV];
#pragma GCC unroll 4
    for (int64_t u = 0; u < NV; ++u) qv[u] = vload<V>(qc + u * NL);
#pragma GCC unroll 4
    for (int jj = 0; jj < J; ++jj)
#pragma GCC unroll 4
      for (int64_t u = 0; u < NV; ++u)
        acc[jj][u] += qv[u] * vload<V>(kc + jj * d + u * NL);
  }
#pragma GCC unroll 4
  for (int jj = 0; jj < J; ++jj)
#pragma GCC unroll 4
    for (int64_t u = 0; u < NV; ++u) {
      scalar_t* dst = Lj + jj * kTile + u * NL;
      const V val = acc[jj][u] * mul;
      if (accumulate)
        vstore(dst, vload<V>(dst) + val);
      else
        vstore(dst, bj != nullptr ? val + bj[jj] : val);
    }
}

// Dot products of the kTile queries qt[Cq][kTile] of row y with every slot
// of one memory frame kp (H, Cq, Wp) (row-major padded):
//   L[i * row_stride + j * kTile + xx]
//       = mul * <qt[:, xx], k[:, y + dy_s, x0 + xx + dx_s]>
// With bias (the window * window biases of this frame), bias[i * window +
// j] is added to slot (i, j). Rows i whose key row is outside the map get
// `fill` (+ the bias) or are left untouched with skip_outside; with
// mask_cols, slots whose column is outside the map get -inf (else the zero
// padding gives 0). With vmax, the written values are also folded into
// vmax[xx] = max(vmax[xx], ...).
template <typename scalar_t>
inline void tile_corr(const scalar_t* qt, int64_t Cq, const scalar_t* kp,
                      const Geom& g, int64_t y, int64_t x0, scalar_t mul,
                      scalar_t fill, bool mask_cols, scalar_t* L,
                      int64_t row_stride = -1, bool skip_outside = false,
                      scalar_t* vmax = nullptr,
                      const scalar_t* bias = nullptr) {
  typedef typename Vec<scalar_t>::type V;
  constexpr int64_t NL = Vec<scalar_t>::kLanes;
  constexpr int64_t NV = kTile / NL;
  constexpr int J = NV >= 4 ? 2 : 4;  // 8 accumulators
  const int64_t win = g.window, d = g.dilation, r = g.r;
  if (row_stride < 0) row_stride = win * kTile;
  const scalar_t ninf = -std::numeric_limits<scalar_t>::infinity();
  const int64_t cstride = g.Wp;  // (H, C, Wp) rows: channels adjacent
  V mx[NV];
  if (vmax != nullptr)
    for (int64_t u = 0; u < NV; ++u) mx[u] = vload<V>(vmax + u * NL);
  for (int64_t i = 0; i < win; ++i) {
    const int64_t yk = y + (i - r) * d;
    scalar_t* Li = L + i * row_stride;
    const scalar_t* bi = bias != nullptr ? bias + i * win : nullptr;
    if (yk < 0 || yk >= g.H) {
      if (skip_outside) continue;
      for (int64_t jc = 0; jc < win; ++jc) {
        const scalar_t val = bi != nullptr ? fill + bi[jc] : fill;
        for (int64_t xx = 0; xx < kTile; ++xx) Li[jc * kTile + xx] = val;
      }
    } else {
      // blocks of kCorrBlock channels, so that the query block and the key
      // rows it meets stay in L1 for all window columns
      for (int64_t c0 = 0; c0 < Cq; c0 += kCorrBlock) {
        const int64_t nc = std::min(kCorrBlock, Cq - c0);
        const scalar_t* qc = qt + c0 * kTile;
        const scalar_t* krow = kp + (yk * Cq + c0) * g.Wp + x0;
        const bool add = c0 > 0;
        int64_t j = 0;
        for (; j + J <= win; j += J)
          corr_columns<scalar_t, J>(qc, nc, krow + j * d, d, cstride, mul,
                                    Li + j * kTile, add,
                                    bi != nullptr ? bi + j : nullptr);
        for (; j < win; ++j)
          corr_columns<scalar_t, 1>(qc, nc, krow + j * d, d, cstride, mul,
                                    Li + j * kTile, add,
                                    bi != nullptr ? bi + j : nullptr);
      }
      if (mask_cols) {
        for (int64_t jc = 0; jc < win; ++jc) {
          scalar_t* Lij = Li + jc * kTile;
          for (int64_t xx = 0; xx < kTile; ++xx) {
            const int64_t xk = x0 + xx + (jc - r) * d;
            if (xk < 0 || xk >= g.W) Lij[xx] = ninf;
          }
        }
      }
    }
    if (vmax != nullptr) {
      for (int64_t jc = 0; jc < win; ++jc)
#pragma GCC unroll 4
        for (int64_t u = 0; u < NV; ++u) {
          const V x = vload<V>(Li + jc * kTile + u * NL);
          mx[u] = mx[u] > x ? mx[u] : x;
        }
    }
  }
  if (vmax != nullptr)
    for (int64_t u = 0; u < NV; ++u) vstore(vmax + u * NL, mx[u]);
}

// ---------------------------------------------------------------------
// local_correlation forward: corr (B, T, S, H, W) for row (b, y).
//   q (B, C, H, W), kp (B, T, H, C, Wp) row-major padded.
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
//   q (B, C, H, W); kp (B, T, H, C, Wp) padded; vcl (B, T, H, W, Cv);
//   bias (T, S) or nullptr, added to the logits scale * corr.
// Per tile of kTile pixels: the logits of all T * S slots go to a
// per-thread buffer (never the whole attention map) whose window rows are
// padded with kGroup - 1 zero columns on both sides,
//   Lp[t][i][kGroup - 1 + j][xx]  (row stride kFwdRow(g) = Jp * kTile),
// their maximum is taken while they are computed, then one pass turns them
// into exp(logit - max) and sums them. Rows outside the map are not stored:
// with padding='zeros' they add (number of such slots) * exp(-max) to the
// sum and nothing to the read-out. The read-out then runs over blocks of
// channels; within a block, window row by window row, so that the values
// of one key row stay in L1 while every pixel group of the tile uses them.
// A group is kGroup pixels xb + p * d whose windows share the source
// columns xb + (m - r) * d, m in [0, kGroup + window - 1); the weight of
// pixel p at column m is Lp[t][i][kGroup - 1 + m - p][xb + p * d] (zero in
// the padding), read in place.
// ---------------------------------------------------------------------
inline int64_t fwd_row_stride(const Geom& g) {
  return (g.window + 2 * (kGroup - 1)) * kTile;
}

// Scratch values of attn_fwd_row.
inline int64_t fwd_scratch_size(const Geom& g) {
  constexpr int64_t kMaxBlock = 16;  // widest channel block (floats)
  const int64_t M = kGroup + g.window - 1;
  return g.C * kTile + g.T * g.window * fwd_row_stride(g) + 3 * kTile +
         M * kTile + (kTile + 1) * kMaxBlock;
}

// Per-tile description of the pixel groups and window rows of the read-out.
struct FwdTile {
  int64_t ngroups;
  int64_t xb[kTile], np[kTile], mlo[kTile], mhi[kTile];
  int64_t nrows;
  const int64_t* rowoff;  // [nrows] offset of the (padded) Lp row
  const int64_t* vbase;   // [nrows] offset of value column x0 - r * d
};

// One block of U vectors of channels [c0, c0 + U * lanes) for every group
// of the tile and every window row; acc (kTile + 1, U * lanes) holds the
// sums of the pixels (row kTile: a sink for missing group members).
template <typename scalar_t, int U>
inline void fwd_block(const FwdTile& ft, const scalar_t* Lp,
                      const scalar_t* zrow, const scalar_t* vcl, int64_t Cv,
                      int64_t d, int64_t c0, scalar_t* acc) {
  typedef typename Vec<scalar_t>::type V;
  constexpr int64_t NL = Vec<scalar_t>::kLanes;
  constexpr int64_t B = U * NL;
  for (int64_t e = 0; e < (kTile + 1) * B; ++e) acc[e] = scalar_t(0);
  const int64_t mstride = d * Cv;
  for (int64_t row = 0; row < ft.nrows; ++row) {
    const scalar_t* Lrow = Lp + ft.rowoff[row];
    const scalar_t* vrow = vcl + ft.vbase[row] + c0;
    for (int64_t gi = 0; gi < ft.ngroups; ++gi) {
      const int64_t xb = ft.xb[gi], np = ft.np[gi];
      const scalar_t* w[kGroup];
      scalar_t* a[kGroup];
      V sum[kGroup][U];
#pragma GCC unroll 4
      for (int p = 0; p < kGroup; ++p) {
        const bool on = p < np;
        w[p] = on ? Lrow + (kGroup - 1 - p) * kTile + xb + p * d : zrow;
        a[p] = acc + (on ? xb + p * d : kTile) * B;
#pragma GCC unroll 4
        for (int u = 0; u < U; ++u) sum[p][u] = vload<V>(a[p] + u * NL);
      }
      const scalar_t* sp = vrow + xb * Cv;
      for (int64_t m = ft.mlo[gi]; m < ft.mhi[gi]; ++m) {
        V x[U];
#pragma GCC unroll 4
        for (int u = 0; u < U; ++u) x[u] = vload<V>(sp + m * mstride + u * NL);
        const int64_t wo = m * kTile;
#pragma GCC unroll 4
        for (int p = 0; p < kGroup; ++p) {
          const scalar_t wv = w[p][wo];
#pragma GCC unroll 4
          for (int u = 0; u < U; ++u) sum[p][u] += wv * x[u];
        }
      }
#pragma GCC unroll 4
      for (int p = 0; p < kGroup; ++p)
#pragma GCC unroll 4
        for (int u = 0; u < U; ++u) vstore(a[p] + u * NL, sum[p][u]);
    }
  }
}

// Channel c0 alone (channels left over after the vector blocks).
template <typename scalar_t>
inline void fwd_channel(const FwdTile& ft, const scalar_t* Lp,
                        const scalar_t* vcl, int64_t Cv, int64_t d,
                        int64_t c0, scalar_t* acc) {
  for (int64_t e = 0; e < kTile; ++e) acc[e] = scalar_t(0);
  for (int64_t row = 0; row < ft.nrows; ++row) {
    const scalar_t* Lrow = Lp + ft.rowoff[row];
    const scalar_t* vrow = vcl + ft.vbase[row] + c0;
    for (int64_t gi = 0; gi < ft.ngroups; ++gi) {
      const int64_t xb = ft.xb[gi];
      for (int64_t p = 0; p < ft.np[gi]; ++p) {
        const scalar_t* w = Lrow + (kGroup - 1 - p) * kTile + xb + p * d;
        scalar_t sum = scalar_t(0);
        for (int64_t m = ft.mlo[gi]; m < ft.mhi[gi]; ++m)
          sum += w[m * kTile] * vrow[(xb + m * d) * Cv];
        acc[xb + p * d] += sum;
      }
    }
  }
}

template <typename scalar_t>
void attn_fwd_row(const scalar_t* q, const scalar_t* kp, const scalar_t* vcl,
                  const scalar_t* bias, scalar_t* out_cl, scalar_t* lse,
                  const Geom& g, scalar_t scale, bool mask, int64_t b,
                  int64_t y, scalar_t* scratch, int64_t* rowbase) {
  typedef typename Vec<scalar_t>::type V;
  constexpr int64_t NL = Vec<scalar_t>::kLanes;
  const int64_t win = g.window, d = g.dilation, r = g.r, HW = g.H * g.W;
  const int64_t C = g.C, Cv = g.Cv;
  const int64_t rs = fwd_row_stride(g), M = kGroup + win - 1;
  const scalar_t ninf = -std::numeric_limits<scalar_t>::infinity();
  scalar_t* qt = scratch;                   // [C][kTile]
  scalar_t* Lp = qt + C * kTile;            // [T][win][Jp][kTile]
  scalar_t* m = Lp + g.T * win * rs;        // [kTile]
  scalar_t* l = m + kTile;                  // [kTile]
  scalar_t* inv = l + kTile;                // [kTile]
  scalar_t* zrow = inv + kTile;             // [M][kTile] zeros
  scalar_t* acc = zrow + M * kTile;         // [kTile + 1][<= 16]
  int64_t* rowoff = rowbase;                // [T * win]
  int64_t* vbase = rowbase + g.T * win;     // [T * win]
  int64_t* exprow = vbase + g.T * win;      // [T * win]
  // the zero columns of the window rows and the zero row
  for (int64_t e = 0; e < g.T * win; ++e) {
    scalar_t* row = Lp + e * rs;
    for (int64_t k = 0; k < (kGroup - 1) * kTile; ++k) {
      row[k] = scalar_t(0);
      row[(kGroup - 1 + win) * kTile + k] = scalar_t(0);
    }
  }
  for (int64_t e = 0; e < M * kTile; ++e) zrow[e] = scalar_t(0);
  // window rows inside the map (the same for every tile of the row); with
  // a bias and padding='zeros' the rows outside take part in the softmax
  // with logit bias[t, s] and are computed like the others (nexp rows),
  // without a bias they are counted (outside slots of logit 0)
  const bool outside_logits = bias != nullptr && !mask;
  int64_t nrows = 0, nexp = 0, rows_inside = 0;
  for (int64_t i = 0; i < win; ++i) {
    const int64_t yk = y + (i - r) * d;
    if (yk >= 0 && yk < g.H) ++rows_inside;
  }
  for (int64_t t = 0; t < g.T; ++t)
    for (int64_t i = 0; i < win; ++i) {
      const int64_t yk = y + (i - r) * d;
      if (yk < 0 || yk >= g.H) {
        if (outside_logits) exprow[nexp++] = (t * win + i) * rs;
        continue;
      }
      exprow[nexp++] = (t * win + i) * rs;
      rowoff[nrows] = (t * win + i) * rs;
      vbase[nrows] = ((b * g.T + t) * HW + yk * g.W) * Cv;
      ++nrows;
    }
  const int64_t outside =
      outside_logits ? 0 : g.T * (win - rows_inside) * win;
  FwdTile ft;
  ft.nrows = nrows;
  ft.rowoff = rowoff;
  ft.vbase = vbase;
  for (int64_t x0 = 0; x0 < g.W; x0 += kTile) {
    const int64_t n = std::min(kTile, g.W - x0);
    load_tile_cf(q + b * C * HW, C, g.H, g.W, y, x0, qt);
    for (int64_t xx = 0; xx < kTile; ++xx) m[xx] = ninf;
    for (int64_t t = 0; t < g.T; ++t)
      tile_corr(qt, C, kp + (b * g.T + t) * C * g.H * g.Wp, g, y, x0, scale,
                scalar_t(0), mask, Lp + t * win * rs + (kGroup - 1) * kTile,
                rs, !outside_logits, m,
                bias != nullptr ? bias + t * g.S : nullptr);
    const bool zeros_outside = !mask && outside > 0;
    for (int64_t xx = 0; xx < kTile; ++xx) {
      if (zeros_outside) m[xx] = std::max(m[xx], scalar_t(0));
      l[xx] = zeros_outside ? scalar_t(outside) * std::exp(-m[xx])
                            : scalar_t(0);
    }
    for (int64_t row = 0; row < nexp; ++row)
      exp_sub_sum(Lp + exprow[row] + (kGroup - 1) * kTile, win, m, l);
    for (int64_t xx = 0; xx < n; ++xx)
      lse[(b * g.H + y) * g.W + x0 + xx] = m[xx] + std::log(l[xx]);
    for (int64_t xx = 0; xx < kTile; ++xx) inv[xx] = scalar_t(1) / l[xx];
    // pixel groups of the tile and their source columns inside the map
    ft.ngroups = 0;
    for_each_group(n, d, [&](int64_t xb, int64_t np) {
      const int64_t gi = ft.ngroups++;
      ft.xb[gi] = xb;
      ft.np[gi] = np;
      column_range(x0 + xb, g.W, r, d, M, &ft.mlo[gi], &ft.mhi[gi]);
    });
    // rebase the value offsets on the first column x0 - r * d of the tile
    for (int64_t row = 0; row < nrows; ++row) vbase[row] += (x0 - r * d) * Cv;
    scalar_t* out_tile = out_cl + ((b * g.H + y) * g.W + x0) * Cv;
    int64_t c0 = 0;
    for (; c0 + 2 * NL <= Cv; c0 += 2 * NL) {
      fwd_block<scalar_t, 2>(ft, Lp, zrow, vcl, Cv, d, c0, acc);
      for (int64_t xx = 0; xx < n; ++xx)
        for (int u = 0; u < 2; ++u)
          vstore(out_tile + xx * Cv + c0 + u * NL,
                 vload<V>(acc + xx * 2 * NL + u * NL) * inv[xx]);
    }
    for (; c0 + NL <= Cv; c0 += NL) {
      fwd_block<scalar_t, 1>(ft, Lp, zrow, vcl, Cv, d, c0, acc);
      for (int64_t xx = 0; xx < n; ++xx)
        vstore(out_tile + xx * Cv + c0, vload<V>(acc + xx * NL) * inv[xx]);
    }
    for (; c0 < Cv; ++c0) {
      fwd_channel(ft, Lp, vcl, Cv, d, c0, acc);
      for (int64_t xx = 0; xx < n; ++xx)
        out_tile[xx * Cv + c0] = acc[xx] * inv[xx];
    }
    for (int64_t row = 0; row < nrows; ++row) vbase[row] -= (x0 - r * d) * Cv;
  }
}

// ---------------------------------------------------------------------
// Fused attention backward, first stage, for row (b, y). Recomputes the
// softmax from the logits and the saved log-sum-exp and writes, in the
// (B, T, S, H, W) slot layout,
//   P = softmax weights,  G = gscale * P * (dP - sum_s P * dP)
// with dP[s] = <grad_out[b, :, y, x], v[b, t, :, y', x']> and the logits
// scale * corr (+ bias[t, s], bias (T, S) or nullptr). With gscale = scale
// the gradients then follow: grad_q = sum_s G * k (done here, grad_q_cl
// (B, H, W, C)), grad_k = gather(G, q), grad_v = gather(P, grad_out); with
// gscale = 1, sum_{b, y, x} G is the gradient of the bias.
//   q (B, C, H, W); kp (B, T, H, C, Wp); kcl (B, T, H, W, C);
//   go (B, Cv, H, W); vp (B, T, H, Cv, Wp); lse (B, H, W).
// scratch: max(C, Cv) * kTile + 2 * T * S * kTile + 2 * kTile + T * window
// * (kGroup + window - 1) * kGroup values and T * window offsets.
// ---------------------------------------------------------------------
template <typename scalar_t>
void attn_bwd_row(const scalar_t* q, const scalar_t* kp, const scalar_t* kcl,
                  const scalar_t* go, const scalar_t* vp, const scalar_t* lse,
                  const scalar_t* grad_lse, const scalar_t* bias, scalar_t* P,
                  scalar_t* G,
                  scalar_t* grad_q_cl, const Geom& g, scalar_t scale,
                  scalar_t gscale, bool mask, int64_t b, int64_t y,
                  scalar_t* scratch, int64_t* rowbase) {
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
      tile_corr<scalar_t>(qt, C, kp + (b * g.T + t) * C * g.H * g.Wp, g, y,
                          x0, scale, fill, mask, L + t * g.S * kTile, -1,
                          false, nullptr,
                          bias != nullptr ? bias + t * g.S : nullptr);
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
    // the gradient of lse adds p * grad_lse to every logit's: D - grad_lse
    if (grad_lse != nullptr)
      for (int64_t xx = 0; xx < n; ++xx)
        D[xx] -= grad_lse[(b * g.H + y) * g.W + x0 + xx];
    for (int64_t t = 0; t < g.T; ++t) {
      for (int64_t s = 0; s < g.S; ++s) {
        const int64_t ts = t * g.S + s;
        const scalar_t* Ls = L + ts * kTile;
        scalar_t* Gs = dP + ts * kTile;  // dP becomes G in place
#pragma omp simd
        for (int64_t xx = 0; xx < kTile; ++xx)
          Gs[xx] = gscale * Ls[xx] * (Gs[xx] - D[xx]);
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
