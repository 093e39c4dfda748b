// CUDA kernels of the local memory attention ops.
//
// Notation (see common/local_attention.h): window side P = `window`, radius
// r = window / 2, S = window * window slots, slot s = i * window + j looks at
// the offset ((i - r) * dil, (j - r) * dil).
//
// Every kernel works on a tile of TILE_H x TILE_W output pixels of one batch
// element (and one memory frame where the output has a T axis). The slots are
// visited in rectangular chunks of `ni` window rows x `nj` window columns; for
// a chunk the block stages the neighbourhood ("halo") of the whole tile in
// shared memory, one channel chunk at a time, with loads that run along x
// (coalesced) and read 0 outside the map. All arithmetic runs in
// acc_t = at::opmath_type<scalar_t> (float for float/half/bfloat16, double for
// double).
//
// Three building blocks cover the unfused ops and the backward passes:
//   CORR  out[t, s, p]  = sum_c A[c, p] * Bt[t, c, p + off_s]
//   AGG   out[c, p]     = sum_{t, s} Wt[t, s, p] * Bt[t, c, p + off_s]
//   INV   out[t, c, p]  = sum_s Wt[t, s, p - off_s] * A[c, p - off_s]
// INV is the transpose of AGG / CORR with respect to the key-side tensor: it
// gathers over the inverse neighbourhood (the queries that see key position
// p), so no backward pass needs atomics. The fused attention forward uses
// STATS (per-pixel max / log-sum-exp of the logits, online over the slots)
// and FUSED_AGG (recomputes the logits chunk by chunk, turns them into
// probabilities with the log-sum-exp and aggregates the values); neither
// writes the attention to global memory. FUSED_AGG runs one block per
// CH_PER_BLOCK value channels, so the logits are recomputed
// ceil(Cv / CH_PER_BLOCK) times (cheap for ERFNet's C = 16, Cv = 64).
//
// The launch planning at the end of this file and the op bodies in
// local_attention_cuda_ops.cuh are also compiled for the host by emulation/,
// which the tests use to run these kernels on machines without a GPU.
#pragma once

#include <ATen/OpMathType.h>
#include <c10/macros/Macros.h>
#include <c10/util/Exception.h>

#include <algorithm>
#include <cstdint>

namespace lma {
namespace cuda {

// Output tile of one block: TILE_H rows x TILE_W columns (TILE_W along x so
// that global loads and stores of a tile row are contiguous).
constexpr int TILE_H = 4;
constexpr int TILE_W = 16;
constexpr int TILE_P = TILE_H * TILE_W;  // pixels per tile
constexpr int NUM_THREADS = 256;
// Aggregating kernels: thread tid owns pixel tid % TILE_P and the channels
// cv0 + k * NUM_GROUPS + tid / TILE_P, k < CH_PER_THREAD.
constexpr int NUM_GROUPS = NUM_THREADS / TILE_P;
constexpr int CH_PER_THREAD = 16;
constexpr int CH_PER_BLOCK = NUM_GROUPS * CH_PER_THREAD;
// Shared-memory budget (bytes): the slot buffer (ni * nj * TILE_P values) and
// the staging area of the halos (union of the key and value halos). Both fit
// in the 48 KiB that every architecture gives without opt-in.
constexpr int SLOT_BUF_BYTES = 16 * 1024;
constexpr int STAGE_BYTES = 30 * 1024;

static_assert(NUM_THREADS % TILE_P == 0, "threads must cover whole tiles");
static_assert(TILE_P >= 32 && TILE_P % 32 == 0,
              "a warp must hold pixels of one channel group");

template <typename T>
__device__ __forceinline__ T acc_exp(T x);
template <>
__device__ __forceinline__ float acc_exp<float>(float x) {
  return expf(x);
}
template <>
__device__ __forceinline__ double acc_exp<double>(double x) {
  return exp(x);
}

template <typename T>
__device__ __forceinline__ T neg_inf();
template <>
__device__ __forceinline__ float neg_inf<float>() {
  return -INFINITY;
}
template <>
__device__ __forceinline__ double neg_inf<double>() {
  return -static_cast<double>(INFINITY);
}

// Kernel arguments shared by all kernels.
struct Geometry {
  int B, T, C, Cv, H, W;
  int64_t HW;   // H * W
  int window, dil, r;
  int S;        // window * window slots
  int tiles_x;  // number of tiles along x
  int ni, nj;   // slot chunk (window rows x window columns)
  int cc;       // channels per key-halo chunk (CORR-based kernels)
  int ks;       // CH_PER_THREAD slices per value-halo chunk (AGG/INV)
};

// Pair idx = sl * TILE_P + p of a slot chunk: chunk slot sl, i.e. window
// slot (i, j), and tile pixel p at map position (y, x).
struct SlotPixel {
  int sl, p, i, j, y, x;
};

// Slot chunk [i0, i0 + ni) x [j0, j0 + nj) of a tile with corner (y0, x0).
// sign = +1: positions p + off_s (queries looking at keys);
// sign = -1: positions p - off_s (keys gathering the queries that see them).
// The halo covers rows [gy0, gy0 + hh) and columns [gx0, gx0 + hw); the halo
// position of (tile pixel (py, px), chunk slot (a, c)) is
// (py + ay * dil, px + ax * dil) with ay = a, ax = c for sign = +1 and
// ay = ni - 1 - a, ax = nj - 1 - c for sign = -1.
struct Chunk {
  int y0, x0;
  int i0, ni, j0, nj;
  int gy0, gx0, hh, hw;
  int sign;

  // The chunk at window slot (i0, j0) of g's chunking (ni x nj slots, fewer
  // at the window's last rows and columns).
  __device__ __forceinline__ Chunk(const Geometry& g, int y0_, int x0_,
                                   int i0_, int j0_, int sign_)
      : y0(y0_),
        x0(x0_),
        i0(i0_),
        ni(min(g.ni, g.window - i0_)),
        j0(j0_),
        nj(min(g.nj, g.window - j0_)),
        sign(sign_) {
    hh = TILE_H + (ni - 1) * g.dil;
    hw = TILE_W + (nj - 1) * g.dil;
    if (sign > 0) {
      gy0 = y0 + (i0 - g.r) * g.dil;
      gx0 = x0 + (j0 - g.r) * g.dil;
    } else {
      gy0 = y0 - (i0 + ni - 1 - g.r) * g.dil;
      gx0 = x0 - (j0 + nj - 1 - g.r) * g.dil;
    }
  }

  // Number of (slot, pixel) pairs: ni * nj * TILE_P.
  __device__ __forceinline__ int npairs() const { return ni * nj * TILE_P; }

  // Window slot (i, j) of chunk slot sl.
  __device__ __forceinline__ void slot(int sl, int& i, int& j) const {
    const int a = sl / nj;
    i = i0 + a;
    j = j0 + sl - a * nj;
  }

  // Slot and pixel of pair idx.
  __device__ __forceinline__ SlotPixel pair(int idx) const {
    SlotPixel e;
    e.sl = idx / TILE_P;
    e.p = idx - e.sl * TILE_P;
    slot(e.sl, e.i, e.j);
    e.y = y0 + e.p / TILE_W;
    e.x = x0 + e.p % TILE_W;
    return e;
  }

  // Halo offset (row-major in an hh x hw plane) of tile pixel p seen through
  // chunk slot sl (sl = a * nj + c).
  __device__ __forceinline__ int halo_offset(int p, int sl, int dil) const {
    const int a = sl / nj, c = sl - a * nj;
    const int ay = sign > 0 ? a : ni - 1 - a;
    const int ax = sign > 0 ? c : nj - 1 - c;
    return (p / TILE_W + ay * dil) * hw + (p % TILE_W) + ax * dil;
  }
};

// Calls f(chunk) for the slot chunks of the window, in row-major order, of
// the tile with corner (y0, x0).
template <typename F>
__device__ __forceinline__ void for_each_chunk(const Geometry& g, int y0,
                                               int x0, int sign, F&& f) {
  for (int i0 = 0; i0 < g.window; i0 += g.ni) {
    for (int j0 = 0; j0 < g.window; j0 += g.nj) {
      f(Chunk(g, y0, x0, i0, j0, sign));
    }
  }
}

// Stages channels [c0, c0 + nc) of the halo of plane stack `src`
// (channel stride H * W) into dst[nc][hh][hw], 0 outside the map.
template <typename scalar_t, typename acc_t>
__device__ __forceinline__ void load_halo(const scalar_t* __restrict__ src,
                                          int c0, int nc, int H, int W,
                                          const Chunk& ch,
                                          acc_t* __restrict__ dst) {
  const int plane = ch.hh * ch.hw;
  const int total = nc * plane;
  const int64_t HW = static_cast<int64_t>(H) * W;
  for (int idx = threadIdx.x; idx < total; idx += NUM_THREADS) {
    const int c = idx / plane;
    const int rem = idx - c * plane;
    const int hy = rem / ch.hw;
    const int hx = rem - hy * ch.hw;
    const int gy = ch.gy0 + hy, gx = ch.gx0 + hx;
    acc_t val = acc_t(0);
    if (gy >= 0 && gy < H && gx >= 0 && gx < W) {
      val = static_cast<acc_t>(
          src[(c0 + c) * HW + static_cast<int64_t>(gy) * W + gx]);
    }
    dst[idx] = val;
  }
}

// Computes sl_buf[sl * TILE_P + p] = sum_c A[c, p] * Bt[c, p + off_sl] for
// the slots of chunk `ch` (sign +1) and the tile pixels p; A and Bt are
// (C, H, W) planes. stage must hold cc * (TILE_P + hh * hw) values.
// Starts and ends with a block-wide barrier.
template <typename scalar_t, typename acc_t>
__device__ void logit_tile(const scalar_t* __restrict__ A,
                           const scalar_t* __restrict__ Bt, int C, int H,
                           int W, const Chunk& ch, int dil, int cc,
                           acc_t* __restrict__ sl_buf,
                           acc_t* __restrict__ stage) {
  const int nslots = ch.ni * ch.nj;
  const int npairs = nslots * TILE_P;
  const int plane = ch.hh * ch.hw;
  const int64_t HW = static_cast<int64_t>(H) * W;
  __syncthreads();  // earlier readers of sl_buf / stage are done
  for (int idx = threadIdx.x; idx < npairs; idx += NUM_THREADS) {
    sl_buf[idx] = acc_t(0);
  }
  for (int c0 = 0; c0 < C; c0 += cc) {
    const int nc = min(cc, C - c0);
    acc_t* sA = stage;                  // [nc][TILE_P]
    acc_t* sB = stage + nc * TILE_P;    // [nc][hh][hw]
    __syncthreads();
    for (int idx = threadIdx.x; idx < nc * TILE_P; idx += NUM_THREADS) {
      const int c = idx / TILE_P, p = idx - c * TILE_P;
      const int y = ch.y0 + p / TILE_W, x = ch.x0 + p % TILE_W;
      acc_t val = acc_t(0);
      if (y < H && x < W) {
        val = static_cast<acc_t>(
            A[(c0 + c) * HW + static_cast<int64_t>(y) * W + x]);
      }
      sA[idx] = val;
    }
    load_halo(Bt, c0, nc, H, W, ch, sB);
    __syncthreads();
    // pair idx = sl * TILE_P + p: a warp shares the slot, pixels run along x
    for (int idx = threadIdx.x; idx < npairs; idx += NUM_THREADS) {
      const int sl = idx / TILE_P, p = idx - sl * TILE_P;
      const int hoff = ch.halo_offset(p, sl, dil);
      acc_t acc = sl_buf[idx];
      for (int c = 0; c < nc; ++c) {
        acc += sA[c * TILE_P + p] * sB[c * plane + hoff];
      }
      sl_buf[idx] = acc;
    }
  }
  __syncthreads();
}

// acc[k] += sum_sl w_buf[sl * TILE_P + p] * V[cv, halo(p, sl)] for the
// channels cv = cv0 + k * NUM_GROUPS + g of this thread (p = tid % TILE_P,
// g = tid / TILE_P); V is a (Cv, H, W) plane stack. The halo is staged ks *
// NUM_GROUPS channels at a time (stage holds ks * NUM_GROUPS * hh * hw
// values). w_buf must be complete before the call (the first barrier here
// publishes it).
template <typename scalar_t, typename acc_t>
__device__ void aggregate_tile(const scalar_t* __restrict__ V, int Cv,
                               int cv0, int H, int W, const Chunk& ch,
                               int dil, int ks,
                               const acc_t* __restrict__ w_buf,
                               acc_t* __restrict__ stage,
                               acc_t (&acc)[CH_PER_THREAD]) {
  const int p = threadIdx.x % TILE_P;
  const int g = threadIdx.x / TILE_P;
  const int nslots = ch.ni * ch.nj;
  const int plane = ch.hh * ch.hw;
  for (int k0 = 0; k0 < CH_PER_THREAD; k0 += ks) {
    const int c_first = cv0 + k0 * NUM_GROUPS;
    if (c_first >= Cv) break;  // uniform over the block
    const int nc = min(ks * NUM_GROUPS, Cv - c_first);
    __syncthreads();  // earlier readers of stage are done, w_buf published
    load_halo(V, c_first, nc, H, W, ch, stage);
    __syncthreads();
    for (int sl = 0; sl < nslots; ++sl) {
      const acc_t w = w_buf[sl * TILE_P + p];
      const int hoff = ch.halo_offset(p, sl, dil);
#pragma unroll
      for (int k = 0; k < CH_PER_THREAD; ++k) {
        const int lc = (k - k0) * NUM_GROUPS + g;  // channel within stage
        if (k >= k0 && k < k0 + ks && lc < nc) {
          acc[k] += w * stage[lc * plane + hoff];
        }
      }
    }
  }
}

// A block's tile of output pixels, its value channels and its dynamic
// shared memory (sized by plan()): `extra` values, the slot buffer
// (ni * nj * TILE_P values) and the staging area.
template <typename acc_t>
struct Tile {
  int y0, x0;  // corner of the tile of output pixels (blockIdx.x)
  int cv0;     // first value channel (blockIdx.y; aggregating kernels)
  acc_t* extra;
  acc_t* slots;
  acc_t* stage;

  __device__ __forceinline__ Tile(const Geometry& g, int n_extra) {
    const int ty = blockIdx.x / g.tiles_x;
    y0 = ty * TILE_H;
    x0 = (blockIdx.x - ty * g.tiles_x) * TILE_W;
    cv0 = blockIdx.y * CH_PER_BLOCK;
    extern __shared__ unsigned char smem_raw[];
    extra = reinterpret_cast<acc_t*>(smem_raw);
    slots = extra + n_extra;
    stage = slots + g.ni * g.nj * TILE_P;
  }
};

// The accumulators of an aggregating thread: acc[k] for the value channel
// cv0 + k * NUM_GROUPS + tid / TILE_P of tile pixel tid % TILE_P.
template <typename acc_t>
__device__ __forceinline__ void zero_channels(acc_t (&acc)[CH_PER_THREAD]) {
#pragma unroll
  for (int k = 0; k < CH_PER_THREAD; ++k) acc[k] = acc_t(0);
}

// Writes the accumulators of this thread to the (Cv, H, W) plane stack out.
template <typename scalar_t, typename acc_t>
__device__ __forceinline__ void store_channels(
    scalar_t* __restrict__ out, const acc_t (&acc)[CH_PER_THREAD],
    const Geometry& g, const Tile<acc_t>& tile) {
  const int p = threadIdx.x % TILE_P, grp = threadIdx.x / TILE_P;
  const int y = tile.y0 + p / TILE_W, x = tile.x0 + p % TILE_W;
  if (y >= g.H || x >= g.W) return;
  scalar_t* out_p = out + static_cast<int64_t>(y) * g.W + x;
#pragma unroll
  for (int k = 0; k < CH_PER_THREAD; ++k) {
    const int cv = tile.cv0 + k * NUM_GROUPS + grp;
    if (cv < g.Cv) out_p[cv * g.HW] = static_cast<scalar_t>(acc[k]);
  }
}

// The logit of slot s (of S) of memory frame t: scale * corr, plus
// bias[t, s] when a bias (T, S) is given.
template <typename acc_t>
__device__ __forceinline__ acc_t slot_logit(acc_t corr, acc_t scale,
                                            const acc_t* __restrict__ bias,
                                            int t, int s, int S) {
  acc_t logit = scale * corr;
  if (bias != nullptr) logit += bias[t * S + s];
  return logit;
}

// ---------------------------------------------------------------------------
// CORR: out (B, T, S, H, W) = local correlation of A (B, C, H, W) with
// Bt (B, T, C, H, W). grid (tiles, 1, B * T).
// ---------------------------------------------------------------------------
template <typename scalar_t, typename out_t>
__global__ void __launch_bounds__(NUM_THREADS)
    corr_kernel(const scalar_t* __restrict__ A,
                const scalar_t* __restrict__ Bt, out_t* __restrict__ out,
                Geometry g) {
  using acc_t = at::opmath_type<scalar_t>;
  const Tile<acc_t> tile(g, 0);
  const int bt = blockIdx.z;
  const int b = bt / g.T;
  const scalar_t* A_b = A + static_cast<int64_t>(b) * g.C * g.HW;
  const scalar_t* B_bt = Bt + static_cast<int64_t>(bt) * g.C * g.HW;
  out_t* out_bt = out + static_cast<int64_t>(bt) * g.S * g.HW;
  for_each_chunk(g, tile.y0, tile.x0, 1, [&](const Chunk& ch) {
    logit_tile(A_b, B_bt, g.C, g.H, g.W, ch, g.dil, g.cc, tile.slots,
               tile.stage);
    for (int idx = threadIdx.x; idx < ch.npairs(); idx += NUM_THREADS) {
      const SlotPixel e = ch.pair(idx);
      if (e.y < g.H && e.x < g.W) {
        out_bt[(e.i * g.window + e.j) * g.HW +
               static_cast<int64_t>(e.y) * g.W + e.x] =
            static_cast<out_t>(tile.slots[idx]);
      }
    }
  });
}

// ---------------------------------------------------------------------------
// AGG (inverse = false) and INV (inverse = true), with Wt (B, T, S, H, W) of
// type w_t and g.Cv the channel count of F and out:
//   AGG  out (B, Cv, H, W) = sum_{t, s} Wt[b, t, s, p] * F[b, t, :, p + off_s]
//        with F (B, T, Cv, H, W); grid (tiles, ceil(Cv / CH_PER_BLOCK), B).
//   INV  out (B, T, Cv, H, W) with out[b, t, :, p] =
//        sum_s Wt[b, t, s, p - off_s] * F[b, :, p - off_s] (0 where
//        p - off_s is outside the map) with F (B, Cv, H, W);
//        grid (tiles, ceil(Cv / CH_PER_BLOCK), B * T).
// ---------------------------------------------------------------------------
template <typename scalar_t, typename w_t, bool inverse>
__global__ void __launch_bounds__(NUM_THREADS)
    aggregating_kernel(const w_t* __restrict__ Wt,
                       const scalar_t* __restrict__ F,
                       scalar_t* __restrict__ out, Geometry g) {
  using acc_t = at::opmath_type<scalar_t>;
  const Tile<acc_t> tile(g, 0);
  const int64_t z = blockIdx.z;
  acc_t acc[CH_PER_THREAD];
  zero_channels(acc);
  // adds the slots of memory frame t of batch element b to acc
  const auto add_frame = [&](int64_t b, int t) {
    const int64_t bt = b * g.T + t;
    const w_t* W_bt = Wt + bt * g.S * g.HW;
    const scalar_t* F_b = F + (inverse ? b : bt) * g.Cv * g.HW;
    const int sign = inverse ? -1 : 1;
    for_each_chunk(g, tile.y0, tile.x0, sign, [&](const Chunk& ch) {
      __syncthreads();  // earlier readers of the slot buffer are done
      for (int idx = threadIdx.x; idx < ch.npairs(); idx += NUM_THREADS) {
        const SlotPixel e = ch.pair(idx);
        // the query pixel of the weight: AGG the pixel itself; INV the
        // query that sees key pixel (e.y, e.x) through slot (e.i, e.j)
        const int qy = inverse ? e.y - (e.i - g.r) * g.dil : e.y;
        const int qx = inverse ? e.x - (e.j - g.r) * g.dil : e.x;
        const bool inside = inverse
                                ? qy >= 0 && qy < g.H && qx >= 0 && qx < g.W
                                : qy < g.H && qx < g.W;
        acc_t w = acc_t(0);
        if (inside) {
          w = static_cast<acc_t>(W_bt[(e.i * g.window + e.j) * g.HW +
                                      static_cast<int64_t>(qy) * g.W + qx]);
        }
        tile.slots[idx] = w;
      }
      aggregate_tile(F_b, g.Cv, tile.cv0, g.H, g.W, ch, g.dil, g.ks,
                     tile.slots, tile.stage, acc);
    });
  };
  if constexpr (inverse) {
    add_frame(z / g.T, static_cast<int>(z % g.T));  // block z = b * T + t
  } else {
    for (int t = 0; t < g.T; ++t) add_frame(z, t);  // block z = b
  }
  store_channels(out + z * g.Cv * g.HW, acc, g, tile);
}

// Whether slot (i, j) of query pixel (y, x) takes part in the softmax.
__device__ __forceinline__ bool slot_takes_part(int y, int x, int i, int j,
                                                const Geometry& g,
                                                bool mask_padding) {
  if (!mask_padding) return true;
  const int ky = y + (i - g.r) * g.dil, kx = x + (j - g.r) * g.dil;
  return ky >= 0 && ky < g.H && kx >= 0 && kx < g.W;
}

// ---------------------------------------------------------------------------
// STATS: lse (B, H, W) (type acc_t) = log-sum-exp over the slots that take
// part of scale * corr(q, k) (+ bias[t, s] when bias (T, S) is given).
// Online over the slot chunks: thread (p, grp) keeps a running max m and sum
// l for the slots sl = grp mod NUM_GROUPS, the groups are merged at the end.
// grid (tiles, 1, B).
// ---------------------------------------------------------------------------
template <typename scalar_t>
__global__ void __launch_bounds__(NUM_THREADS)
    stats_kernel(const scalar_t* __restrict__ q,
                 const scalar_t* __restrict__ k,
                 at::opmath_type<scalar_t>* __restrict__ lse, Geometry g,
                 at::opmath_type<scalar_t> scale, bool mask_padding,
                 const at::opmath_type<scalar_t>* __restrict__ bias) {
  using acc_t = at::opmath_type<scalar_t>;
  const Tile<acc_t> tile(g, 0);
  const int b = blockIdx.z;
  const int p = threadIdx.x % TILE_P, grp = threadIdx.x / TILE_P;
  const int y = tile.y0 + p / TILE_W, x = tile.x0 + p % TILE_W;
  const scalar_t* q_b = q + static_cast<int64_t>(b) * g.C * g.HW;
  acc_t m = neg_inf<acc_t>();
  acc_t l = acc_t(0);
  for (int t = 0; t < g.T; ++t) {
    const scalar_t* k_bt =
        k + (static_cast<int64_t>(b) * g.T + t) * g.C * g.HW;
    for_each_chunk(g, tile.y0, tile.x0, 1, [&](const Chunk& ch) {
      logit_tile(q_b, k_bt, g.C, g.H, g.W, ch, g.dil, g.cc, tile.slots,
                 tile.stage);
      for (int sl = grp; sl < ch.ni * ch.nj; sl += NUM_GROUPS) {
        int i, j;
        ch.slot(sl, i, j);
        if (!slot_takes_part(y, x, i, j, g, mask_padding)) continue;
        const acc_t logit = slot_logit(tile.slots[sl * TILE_P + p], scale, bias,
                                       t, i * g.window + j, g.S);
        if (logit > m) {
          l = l * acc_exp(m - logit) + acc_t(1);  // exp(-inf) = 0
          m = logit;
        } else {
          l += acc_exp(logit - m);
        }
      }
    });
  }
  // merge the NUM_GROUPS partial (m, l) of every pixel
  __syncthreads();  // the last readers of the slot buffer / stage are done
  acc_t* sm = tile.stage;                // [NUM_THREADS]
  acc_t* sls = tile.stage + NUM_THREADS; // [NUM_THREADS]
  sm[threadIdx.x] = m;
  sls[threadIdx.x] = l;
  __syncthreads();
  if (grp == 0 && y < g.H && x < g.W) {
    acc_t mm = neg_inf<acc_t>();
    for (int gg = 0; gg < NUM_GROUPS; ++gg) {
      mm = max(mm, sm[gg * TILE_P + p]);
    }
    acc_t ll = acc_t(0);
    for (int gg = 0; gg < NUM_GROUPS; ++gg) {
      const acc_t mg = sm[gg * TILE_P + p];
      if (mg != neg_inf<acc_t>()) ll += sls[gg * TILE_P + p] * acc_exp(mg - mm);
    }
    // every pixel has at least its centre slot, so ll >= 1 and mm is finite
    lse[static_cast<int64_t>(b) * g.HW + static_cast<int64_t>(y) * g.W + x] =
        mm + log(ll);
  }
}

// ---------------------------------------------------------------------------
// FUSED_AGG: out (B, Cv, H, W) = sum_{t, s} exp(scale * corr - lse) * v at
// the slot (0 for slots left out with mask_padding), with lse from STATS.
// The logits are recomputed per slot chunk in shared memory.
// grid (tiles, ceil(Cv / CH_PER_BLOCK), B).
// ---------------------------------------------------------------------------
template <typename scalar_t>
__global__ void __launch_bounds__(NUM_THREADS)
    fused_agg_kernel(const scalar_t* __restrict__ q,
                     const scalar_t* __restrict__ k,
                     const scalar_t* __restrict__ v,
                     const at::opmath_type<scalar_t>* __restrict__ lse,
                     scalar_t* __restrict__ out, Geometry g,
                     at::opmath_type<scalar_t> scale, bool mask_padding,
                     const at::opmath_type<scalar_t>* __restrict__ bias) {
  using acc_t = at::opmath_type<scalar_t>;
  const Tile<acc_t> tile(g, TILE_P);
  acc_t* s_lse = tile.extra;  // [TILE_P]
  const int b = blockIdx.z;
  const scalar_t* q_b = q + static_cast<int64_t>(b) * g.C * g.HW;
  for (int p = threadIdx.x; p < TILE_P; p += NUM_THREADS) {
    const int y = tile.y0 + p / TILE_W, x = tile.x0 + p % TILE_W;
    s_lse[p] = (y < g.H && x < g.W)
                   ? lse[static_cast<int64_t>(b) * g.HW +
                         static_cast<int64_t>(y) * g.W + x]
                   : acc_t(0);
  }
  // s_lse is published by the first barrier of logit_tile
  acc_t acc[CH_PER_THREAD];
  zero_channels(acc);
  for (int t = 0; t < g.T; ++t) {
    const int64_t bt = static_cast<int64_t>(b) * g.T + t;
    const scalar_t* k_bt = k + bt * g.C * g.HW;
    const scalar_t* v_bt = v + bt * g.Cv * g.HW;
    for_each_chunk(g, tile.y0, tile.x0, 1, [&](const Chunk& ch) {
      logit_tile(q_b, k_bt, g.C, g.H, g.W, ch, g.dil, g.cc, tile.slots,
                 tile.stage);
      // logits -> probabilities, in place (each entry by one thread)
      for (int idx = threadIdx.x; idx < ch.npairs(); idx += NUM_THREADS) {
        const SlotPixel e = ch.pair(idx);
        acc_t prob = acc_t(0);
        if (e.y < g.H && e.x < g.W &&
            slot_takes_part(e.y, e.x, e.i, e.j, g, mask_padding)) {
          prob = acc_exp(slot_logit(tile.slots[idx], scale, bias, t,
                                    e.i * g.window + e.j, g.S) -
                         s_lse[e.p]);
        }
        tile.slots[idx] = prob;
      }
      aggregate_tile(v_bt, g.Cv, tile.cv0, g.H, g.W, ch, g.dil, g.ks,
                     tile.slots, tile.stage, acc);
    });
  }
  store_channels(out + static_cast<int64_t>(b) * g.Cv * g.HW, acc, g, tile);
}

// ---------------------------------------------------------------------------
// Backward of the fused op, element-wise part over (B, T, S, H, W), in place:
//   prob  <- p = exp(scale * corr (+ bias[t, s]) - lse)  (0 for slots left out)
//   dprob <- dl_scale * p * (dP - D)   (dl_scale = scale: the gradient of the
//            scaled corr; dl_scale = 1: the gradient of the logits)
// with corr = corr(q, k), dP = corr(grad_out, v), D = sum_cv grad_out * out.
// ---------------------------------------------------------------------------
template <typename acc_t>
__global__ void __launch_bounds__(NUM_THREADS)
    softmax_backward_kernel(acc_t* __restrict__ prob,
                            acc_t* __restrict__ dprob,
                            const acc_t* __restrict__ lse,
                            const acc_t* __restrict__ D, Geometry g,
                            acc_t scale, bool mask_padding, int64_t total,
                            const acc_t* __restrict__ bias, acc_t dl_scale) {
  for (int64_t idx = blockIdx.x * static_cast<int64_t>(blockDim.x) +
                     threadIdx.x;
       idx < total; idx += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t pix = idx % g.HW;
    const int y = static_cast<int>(pix / g.W);
    const int x = static_cast<int>(pix - static_cast<int64_t>(y) * g.W);
    const int s = static_cast<int>((idx / g.HW) % g.S);
    const int64_t b = idx / (g.HW * g.S * g.T);
    const int i = s / g.window, j = s - i * g.window;
    acc_t p = acc_t(0);
    acc_t dl = acc_t(0);
    if (slot_takes_part(y, x, i, j, g, mask_padding)) {
      const int t = static_cast<int>((idx / (g.HW * g.S)) % g.T);
      const acc_t logit = slot_logit(prob[idx], scale, bias, t, s, g.S);
      p = acc_exp(logit - lse[b * g.HW + pix]);
      dl = dl_scale * p * (dprob[idx] - D[b * g.HW + pix]);
    }
    prob[idx] = p;
    dprob[idx] = dl;
  }
}

// ---------------------------------------------------------------------------
// Launch planning (host)
// ---------------------------------------------------------------------------
constexpr size_t MAX_SHARED_BYTES = 48 * 1024;

inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// Fills the slot chunk (ni x nj), the key channel chunk cc and the value
// channel slices ks of g for accumulators of acc_size bytes and returns the
// dynamic shared memory in bytes. extra: acc values in front of the slot
// buffer; key_stage: stages q/k channel chunks (CORR-based kernels);
// value_stage: stages value halos (AGG-based kernels); merge: needs
// 2 * NUM_THREADS values of staging (STATS).
inline size_t plan(Geometry& g, size_t acc_size, int extra, bool key_stage,
            bool value_stage, bool merge) {
  const int stage_elems = static_cast<int>(STAGE_BYTES / acc_size);
  const int halo_max = stage_elems / NUM_GROUPS;
  const int slots_max = static_cast<int>(SLOT_BUF_BYTES / (TILE_P * acc_size));
  const int hw_max = halo_max / TILE_H;
  // window columns per chunk: halo width TILE_W + (nj - 1) * dil <= hw_max
  int nj = (hw_max - TILE_W) / g.dil + 1;
  nj = std::max(1, std::min({nj, g.window, slots_max}));
  const int hw = TILE_W + (nj - 1) * g.dil;
  // window rows per chunk: halo (TILE_H + (ni - 1) * dil) * hw <= halo_max
  int ni = (halo_max / hw - TILE_H) / g.dil + 1;
  ni = std::max(1, std::min({ni, g.window, slots_max / nj}));
  const int hh = TILE_H + (ni - 1) * g.dil;
  const int halo = hh * hw;
  TORCH_CHECK(halo <= halo_max && ni * nj <= slots_max,
              "local attention CUDA: no launch plan for window ", g.window,
              " and dilation ", g.dil);
  g.ni = ni;
  g.nj = nj;
  g.cc = std::max(1, std::min(g.C, stage_elems / (TILE_P + halo)));
  g.ks = std::max(1, std::min(CH_PER_THREAD, stage_elems / (NUM_GROUPS * halo)));
  int stage = 0;
  if (key_stage) stage = std::max(stage, g.cc * (TILE_P + halo));
  if (value_stage) stage = std::max(stage, g.ks * NUM_GROUPS * halo);
  if (merge) stage = std::max(stage, 2 * NUM_THREADS);
  const size_t bytes =
      static_cast<size_t>(extra + ni * nj * TILE_P + stage) * acc_size;
  TORCH_CHECK(bytes <= MAX_SHARED_BYTES,
              "local attention CUDA: launch plan needs ", bytes,
              " bytes of shared memory");
  return bytes;
}

constexpr int64_t MAX_GRID_YZ = 65535;

// The kernel arguments for (B, T, C, Cv, H, W), with the limits of the
// kernels: offsets and halo sizes in int range, B * T blocks along the
// grid's z axis.
inline Geometry make_geometry(int64_t B, int64_t T, int64_t C, int64_t Cv,
                              int64_t H, int64_t W, int64_t window,
                              int64_t dilation) {
  TORCH_CHECK((window / 2) * dilation < (1 << 28) && window < (1 << 14),
              "local attention CUDA: window ", window, " with dilation ",
              dilation, " is too large");
  TORCH_CHECK(B * T <= MAX_GRID_YZ, "local attention CUDA: B * T = ", B * T,
              " exceeds the CUDA grid limit ", MAX_GRID_YZ);
  TORCH_CHECK(H < (1 << 30) && W < (1 << 30), "local attention CUDA: map ",
              H, "x", W, " is too large");
  Geometry g;
  g.B = static_cast<int>(B);
  g.T = static_cast<int>(T);
  g.C = static_cast<int>(C);
  g.Cv = static_cast<int>(Cv);
  g.H = static_cast<int>(H);
  g.W = static_cast<int>(W);
  g.HW = H * W;
  g.window = static_cast<int>(window);
  g.dil = static_cast<int>(dilation);
  g.r = g.window / 2;
  g.S = g.window * g.window;
  g.tiles_x = static_cast<int>(ceil_div(W, TILE_W));
  g.ni = g.nj = g.cc = g.ks = 1;
  return g;
}

inline int64_t num_tiles(const Geometry& g) {
  return ceil_div(g.H, TILE_H) * static_cast<int64_t>(g.tiles_x);
}

}  // namespace cuda
}  // namespace lma
