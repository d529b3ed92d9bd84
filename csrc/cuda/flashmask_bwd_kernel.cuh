// FlashMask backward kernels (FlashAttention-2 style, mma.sync, sm80+).
//
// dkdv kernel: one CTA per (key block of kBlockN keys, key head, batch); warps
// split the keys (16 each). It loops over the query heads of its GQA group and,
// per head, over the non-skipped query blocks (classified from the key tile's
// bound min/max, compacted into a smem list), computing the transposed scores
//   S^T = K Q^T, P^T = exp(S^T*scale - lse), dP^T = V dO^T,
//   dS^T = P^T (dP^T - Dsum),  dV += P^T dO,  dK += dS^T Q
// with P^T / dS^T kept in registers as the A operand. With kDQ it also writes
// dS^T to smem and adds dQ += dS K into an fp32 accumulator with red.add
// (non-deterministic order). kDK / kDV select which of dK / dV this launch
// computes (head_dim 256 runs two launches to fit the registers).
//
// dq kernel (the deterministic mode, and D=256 where the Hopper backward does not run): one
// CTA per (query block, query head, batch), loops over the non-skipped key tiles and
// accumulates dQ in registers: every sum happens in a fixed order, so grads are bitwise
// reproducible.
#pragma once

#include "dq_accum_order.cuh"
#include "kernel_common.cuh"
#include "softmax.cuh"
#include "tail_order.cuh"

namespace flashmask {
namespace cuda {

// The per-row arrays of the backward's workspace have sq_pad rows per (batch, head): seqlen_q
// rounded up to kBwdRowPad, the largest query tile of the backward kernels (the Hopper
// backward's at D=64), so that every kernel's query tiles lie inside them (KernelSet checks).
constexpr int kBwdRowPad = 128;

struct BwdWork {
  const TileBounds* tile_bounds;  // per key tile of kBlockN (dkdv) columns
  const float* lse_log2;          // [B, H, sq_pad]: lse*log2(e); +inf for empty/padded rows
  const float* dsum;              // [B, H, sq_pad]: rowsum(dO * O), 0 for padded rows
  float* dq_accum;                // [B, H, sq_pad, D] fp32 (kDQ only; the Hopper kernel's tiles in DqFragmentOrder)
  int* next_item;                 // the Hopper backward's work counter, zeroed per launch
  TailOrder tail;                 // the Hopper backward's k-th item taken is tail.item(k)
  int sq_pad;
};

template <int D_, int kBlockM_, int kBlockN_, int kNWarps_, int kStages_>
struct BwdConfig {
  static constexpr int D = D_, kBlockM = kBlockM_, kBlockN = kBlockN_, kNWarps = kNWarps_;
  static constexpr int kStages = kStages_;
  static constexpr int kThreads = kNWarps * 32;
  static constexpr int MT = kBlockM / 8;  // n8 tiles of S^T (query columns)
  static constexpr int DT = D / 8;
  static_assert(kBlockN == 16 * kNWarps, "one m16 tile of keys per warp");
  static_assert(kBlockM % 64 == 0, "dS^T smem rows need >= 64 elements");
  static_assert(kBlockMaskSize % kBlockM == 0 && kBlockMaskSize % kBlockN == 0, "tiles must divide block_mask cells");
  // dQ = dS K split: WM warps over query rows, WD over head-dim chunks.
  static constexpr int WM = kBlockM / 16;
  static constexpr int WD = kNWarps / WM;
  static_assert(WD >= 1 && WM * WD == kNWarps, "bad dq warp split");
  static constexpr int DPW = D / WD;                   // head-dim columns per warp
  static constexpr int DQC = DPW < 64 ? DPW : 64;      // columns per accumulation chunk
  static constexpr int kSmemFixed = (2 * kBlockN * D + 2 * kStages * kBlockM * D +
                                     kBlockN * kBlockM) * 2 +
                                    2 * kStages * kBlockM * 4 + kListScratchInts * 4;
};

// S^T = K Q^T (or dP^T = V dO^T) for the warp's m16 tile of keys, all MT n8 tiles of
// queries (keys and queries swizzled in smem).
template <typename T, typename Cfg>
__device__ __forceinline__ void keys_by_queries(float (&acc)[Cfg::MT][4], const T* keys, const T* queries, int warp,
                                                int lane) {
  constexpr int D = Cfg::D, MT = Cfg::MT;
#pragma unroll
  for (int nt = 0; nt < MT; ++nt)
#pragma unroll
    for (int e = 0; e < 4; ++e) acc[nt][e] = 0.f;
#pragma unroll
  for (int ks = 0; ks < D / 16; ++ks) {
    uint32_t a[4];
    ldsm_x4(a, smem_u32(keys + swz<D>(warp * 16 + (lane & 7) + ((lane >> 3) & 1) * 8, ks * 16 + (lane >> 4) * 8)));
#pragma unroll
    for (int j = 0; j < MT / 2; ++j) {
      uint32_t bf[4];
      ldsm_x4(bf, smem_u32(queries + swz<D>(j * 16 + (lane & 7) + (lane >> 4) * 8, ks * 16 + ((lane >> 3) & 1) * 8)));
      mma16816<T>(acc[2 * j], a, bf[0], bf[1]);
      mma16816<T>(acc[2 * j + 1], a, bf[2], bf[3]);
    }
  }
}

// dV += P^T dO (kDV) and dK += dS^T Q (kDK), P^T and dS^T from registers as A fragments.
template <typename T, typename Cfg, bool kDK, bool kDV>
__device__ __forceinline__ void add_dv_dk(float (&acc_dv)[Cfg::DT][4], float (&acc_dk)[Cfg::DT][4],
                                          const float (&acc_s)[Cfg::MT][4], const float (&acc_dp)[Cfg::MT][4],
                                          const T* q_s, const T* do_s, int lane) {
  constexpr int D = Cfg::D, DT = Cfg::DT;
#pragma unroll
  for (int kk = 0; kk < Cfg::kBlockM / 16; ++kk) {
    uint32_t ap[4], ads[4];
    if (kDV) pack_a_fragment<T>(ap, acc_s[2 * kk], acc_s[2 * kk + 1]);
    if (kDK) pack_a_fragment<T>(ads, acc_dp[2 * kk], acc_dp[2 * kk + 1]);
#pragma unroll
    for (int j = 0; j < DT / 2; ++j) {
      const int off = swz<D>(kk * 16 + (lane & 7) + ((lane >> 3) & 1) * 8, j * 16 + (lane >> 4) * 8);
      if (kDV) {
        uint32_t bf[4];
        ldsm_x4_t(bf, smem_u32(do_s + off));
        mma16816<T>(acc_dv[2 * j], ap, bf[0], bf[1]);
        mma16816<T>(acc_dv[2 * j + 1], ap, bf[2], bf[3]);
      }
      if (kDK) {
        uint32_t bf[4];
        ldsm_x4_t(bf, smem_u32(q_s + off));
        mma16816<T>(acc_dk[2 * j], ads, bf[0], bf[1]);
        mma16816<T>(acc_dk[2 * j + 1], ads, bf[2], bf[3]);
      }
    }
  }
}

// dQ_partial = dS K of the query tile at row r0 (dS^T in smem), added into the fp32
// accumulator from its row acc_row0 (row r0 of this (batch, head)) with red.global.add: a bulk
// smem->global reduction measured 3% slower (this kernel is shared-memory bound, see
// docs/perf-notes.md). Warps split the rows (WM) and the head dim (WD).
template <typename T, typename Cfg>
__device__ __forceinline__ void add_dq_partial(float* dq_accum, int64_t acc_row0, const T* sdS, const T* sK, int r0,
                                               int Sq, int warp, int lane) {
  constexpr int D = Cfg::D, WM = Cfg::WM, DPW = Cfg::DPW, DQC = Cfg::DQC;
  const int g = lane >> 2, t = lane & 3;
  const int wm = warp % WM, wd = warp / WM;
  float* gdq = dq_accum + (acc_row0 + wm * 16 + g) * D + wd * DPW;
  const int row0 = r0 + wm * 16 + g;
#pragma unroll
  for (int dc = 0; dc < DPW; dc += DQC) {
    float acc_q[DQC / 8][4];
#pragma unroll
    for (int j = 0; j < DQC / 8; ++j)
#pragma unroll
      for (int e = 0; e < 4; ++e) acc_q[j][e] = 0.f;
#pragma unroll
    for (int kk = 0; kk < Cfg::kBlockN / 16; ++kk) {
      uint32_t a[4];
      ldsm_x4_t(a, smem_u32(sdS + swz<Cfg::kBlockM>(kk * 16 + (lane & 7) + (lane >> 4) * 8,
                                                    wm * 16 + ((lane >> 3) & 1) * 8)));
#pragma unroll
      for (int j = 0; j < DQC / 16; ++j) {
        uint32_t bf[4];
        ldsm_x4_t(bf, smem_u32(sK + swz<D>(kk * 16 + (lane & 7) + ((lane >> 3) & 1) * 8,
                                           wd * DPW + dc + j * 16 + (lane >> 4) * 8)));
        mma16816<T>(acc_q[2 * j], a, bf[0], bf[1]);
        mma16816<T>(acc_q[2 * j + 1], a, bf[2], bf[3]);
      }
    }
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      if (row0 + 8 * r < Sq) {
        float* dst = gdq + 8 * r * D + dc + 2 * t;
#pragma unroll
        for (int j = 0; j < DQC / 8; ++j) red_add_f32x2(dst + j * 8, acc_q[j][2 * r], acc_q[j][2 * r + 1]);
      }
    }
  }
}

// P^T (score_prob) and (kNeedDS) dS^T (score_grad) in place, for the query columns
// nt * 8 + 2t + c of l_s (lse * log2 e) and ds_s (rowsum(dO * O)).
template <int MT, bool kNeedDS>
__device__ __forceinline__ void p_and_ds(float (&acc_s)[MT][4], float (&acc_dp)[MT][4], const float* l_s,
                                         const float* ds_s, float scale_log2, int t) {
#pragma unroll
  for (int nt = 0; nt < MT; ++nt)
#pragma unroll
    for (int c = 0; c < 2; ++c) {
      const int lq = nt * 8 + 2 * t + c;
      const float L = l_s[lq];
      const float Dq = kNeedDS ? ds_s[lq] : 0.f;
#pragma unroll
      for (int r = 0; r < 2; ++r) {
        const float pv = score_prob(acc_s[nt][2 * r + c], scale_log2, L);
        acc_s[nt][2 * r + c] = pv;
        if (kNeedDS) acc_dp[nt][2 * r + c] = score_grad(pv, acc_dp[nt][2 * r + c], Dq);
      }
    }
}

// The warp's key rows key0 and key0 + 8 of dK (scaled) and dV, for keys below seqlen_k.
template <typename T, typename Cfg, bool kDK, bool kDV>
__device__ __forceinline__ void store_dk_dv(const BwdParams& p, const float (&acc_dk)[Cfg::DT][4],
                                            const float (&acc_dv)[Cfg::DT][4], int b, int hk, int key0, int t) {
  constexpr int DT = Cfg::DT;
  T* gdK = static_cast<T*>(p.dk) + b * p.dk_strides.batch + hk * p.dk_strides.head;
  T* gdV = static_cast<T*>(p.dv) + b * p.dv_strides.batch + hk * p.dv_strides.head;
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    const int key = key0 + 8 * r;
    if (key < p.shape.seqlen_k) {
      T* dk = gdK + static_cast<int64_t>(key) * p.dk_strides.row;
      T* dv = gdV + static_cast<int64_t>(key) * p.dv_strides.row;
#pragma unroll
      for (int dt = 0; dt < DT; ++dt) {
        if (kDK)
          *reinterpret_cast<uint32_t*>(dk + dt * 8 + 2 * t) =
              Pack<T>::two(acc_dk[dt][2 * r] * p.softmax_scale, acc_dk[dt][2 * r + 1] * p.softmax_scale);
        if (kDV)
          *reinterpret_cast<uint32_t*>(dv + dt * 8 + 2 * t) = Pack<T>::two(acc_dv[dt][2 * r], acc_dv[dt][2 * r + 1]);
      }
    }
  }
}

template <typename T, typename Cfg, bool kDQ, bool kDK, bool kDV>
__global__ void __launch_bounds__(Cfg::kThreads)
    flashmask_bwd_dkdv_kernel(const BwdParams p, const BwdWork w) {
  constexpr int D = Cfg::D, kBlockM = Cfg::kBlockM, kBlockN = Cfg::kBlockN;
  constexpr int kThreads = Cfg::kThreads, MT = Cfg::MT, DT = Cfg::DT, kStages = Cfg::kStages;
  constexpr bool kNeedDS = kDK || kDQ;

  extern __shared__ __align__(128) char smem_raw[];
  T* sK = reinterpret_cast<T*>(smem_raw);
  T* sV = sK + kBlockN * D;
  T* sQ = sV + kBlockN * D;
  T* sdO = sQ + kStages * kBlockM * D;
  T* sdS = sdO + kStages * kBlockM * D;
  float* sL = reinterpret_cast<float*>(sdS + kBlockN * kBlockM);
  float* sDs = sL + kStages * kBlockM;
  int* sScratch = reinterpret_cast<int*>(sDs + kStages * kBlockM);
  TileEntry* sList = reinterpret_cast<TileEntry*>(sScratch + kListScratchInts);

  const int tid = threadIdx.x, lane = tid & (kWarpSize - 1), warp = tid >> kLog2WarpSize;
  const int g = lane >> 2, t = lane & 3;
  const int n_block = blockIdx.x, hk = blockIdx.y, b = blockIdx.z;
  const AttentionShape& s = p.shape;
  const Sm80Problem<kBlockN> pb(p);
  const int H = s.num_heads;
  const int group = H / s.num_heads_k;
  const int n0 = n_block * kBlockN;
  const int keys_valid = min(kBlockN, pb.Sk - n0);

  const T* gK = static_cast<const T*>(p.k) + b * p.k_strides.batch +
                static_cast<int64_t>(n0) * p.k_strides.row + hk * p.k_strides.head;
  const T* gV = static_cast<const T*>(p.v) + b * p.v_strides.batch +
                static_cast<int64_t>(n0) * p.v_strides.row + hk * p.v_strides.head;
  load_tile_async<kBlockN, D, kThreads>(sK, gK, p.k_strides.row, keys_valid, tid);
  load_tile_async<kBlockN, D, kThreads>(sV, gV, p.v_strides.row, keys_valid, tid);
  // (committed together with the first query block below)

  float acc_dk[DT][4], acc_dv[DT][4];
#pragma unroll
  for (int dt = 0; dt < DT; ++dt)
#pragma unroll
    for (int e = 0; e < 4; ++e) acc_dk[dt][e] = acc_dv[dt][e] = 0.f;

  const int key_row = warp * 16 + g;  // + 8r, within the key block

  for (int hi = 0; hi < group; ++hi) {
    const int h = hk * group + hi;
    const int64_t bhm = mask_row_for(p.mask, s, b, h);
    const TileBounds tbn = load_tile_bounds(w.tile_bounds + bhm * pb.n_tiles + n_block);
    const int32_t* gBnd = p.mask.startend_row_indices + bhm * pb.Sk * pb.nb;
    const KeyRowBounds kb = load_key_row_bounds(gBnd, pb.nb, pb.form, n0 + key_row, pb.Sk, pb.offset);
    const int count = list_query_tiles<kThreads, kBlockM>(sList, sScratch, p.mask, pb.Sq, pb.Sk, bhm, n0,
                                                          keys_valid, kBlockN, tbn);

    const T* gQ = static_cast<const T*>(p.q) + b * p.q_strides.batch + h * p.q_strides.head;
    const T* gdO =
        static_cast<const T*>(p.dout) + b * p.dout_strides.batch + h * p.dout_strides.head;
    const int64_t bh = static_cast<int64_t>(b) * H + h;
    const float* gL = w.lse_log2 + bh * w.sq_pad;
    const float* gDs = w.dsum + bh * w.sq_pad;
    auto load_m = [&](int m, int stage) {
      const int r0 = m * kBlockM;
      load_tile_async<kBlockM, D, kThreads>(sQ + stage * kBlockM * D,
                                            gQ + static_cast<int64_t>(r0) * p.q_strides.row,
                                            p.q_strides.row, pb.Sq - r0, tid);
      if (kNeedDS || kDV)
        load_tile_async<kBlockM, D, kThreads>(
            sdO + stage * kBlockM * D, gdO + static_cast<int64_t>(r0) * p.dout_strides.row,
            p.dout_strides.row, pb.Sq - r0, tid);
      if (tid < kBlockM / 4) {
        cp_async_16(smem_u32(sL + stage * kBlockM + tid * 4), gL + r0 + tid * 4, true);
      } else if (kNeedDS && tid < kBlockM / 2) {
        const int i = tid - kBlockM / 4;
        cp_async_16(smem_u32(sDs + stage * kBlockM + i * 4), gDs + r0 + i * 4, true);
      }
    };
    if (count > 0) load_m(sList[0].index(), 0);
    cp_async_commit();

    for (int it = 0; it < count; ++it) {
      const int m = sList[it].index();
      const int kind = sList[it].kind();
      const int stage = kStages == 2 ? (it & 1) : 0;
      if (kStages == 2) {
        if (it + 1 < count) load_m(sList[it + 1].index(), stage ^ 1);
        cp_async_commit();
        cp_async_wait<1>();
      } else {
        cp_async_wait<0>();
      }
      __syncthreads();
      const T* q_s = sQ + stage * kBlockM * D;
      const T* do_s = sdO + stage * kBlockM * D;
      const float* l_s = sL + stage * kBlockM;
      const float* ds_s = sDs + stage * kBlockM;

      // S^T = K Q^T and dP^T = V dO^T, one m16 tile of keys per warp.
      float acc_s[MT][4], acc_dp[MT][4];
      keys_by_queries<T, Cfg>(acc_s, sK, q_s, warp, lane);
      if (kNeedDS) keys_by_queries<T, Cfg>(acc_dp, sV, do_s, warp, lane);

      if (kind == static_cast<int>(TileKind::kPartial))
        mask_partial_keys<MT>(kb, sList[it].test(), m * kBlockM, t, [&](int nt, int r, int c) { acc_s[nt][2 * r + c] = -INFINITY; });

      // P^T, dS^T
      p_and_ds<MT, kNeedDS>(acc_s, acc_dp, l_s, ds_s, pb.scale_log2, t);

      // dV += P^T dO ; dK += dS^T Q
      add_dv_dk<T, Cfg, kDK, kDV>(acc_dv, acc_dk, acc_s, acc_dp, q_s, do_s, lane);

      if (kDQ) {
        // dS^T -> smem (read by the dQ step below).
#pragma unroll
        for (int nt = 0; nt < MT; ++nt)
#pragma unroll
          for (int r = 0; r < 2; ++r)
            *reinterpret_cast<uint32_t*>(sdS + swz<kBlockM>(key_row + 8 * r, nt * 8 + 2 * t)) =
                Pack<T>::two(acc_dp[nt][2 * r], acc_dp[nt][2 * r + 1]);
        __syncthreads();
      }
      if (kDQ) add_dq_partial<T, Cfg>(w.dq_accum, bh * w.sq_pad + m * kBlockM, sdS, sK, m * kBlockM, pb.Sq, warp, lane);
      if (kStages == 1) {
        __syncthreads();
        if (it + 1 < count) load_m(sList[it + 1].index(), 0);
        cp_async_commit();
      } else {
        __syncthreads();
      }
    }
    __syncthreads();  // the list is rebuilt for the next head
  }
  cp_async_wait<0>();

  // dK = scale * dS^T Q, dV = P^T dO
  store_dk_dv<T, Cfg, kDK, kDV>(p, acc_dk, acc_dv, b, hk, n0 + key_row, t);
}

// ------------------------------------------------------------------ dq kernel
template <int D_, int kBlockM_, int kBlockN_, int kNWarps_>
struct DqConfig {
  static constexpr int D = D_, kBlockM = kBlockM_, kBlockN = kBlockN_, kNWarps = kNWarps_;
  static constexpr int kThreads = kNWarps * 32;
  static constexpr int NT = kBlockN / 8, DT = D / 8;
  static_assert(kBlockM == 16 * kNWarps, "one m16 tile of rows per warp");
  static_assert(kBlockMaskSize % kBlockM == 0 && kBlockMaskSize % kBlockN == 0, "tiles must divide block_mask cells");
  using Smem = Sm80QueryBlockSmem<D, kBlockM, kBlockN, 2>;  // Q and dO
  static constexpr int kSmemFixed = Smem::kFixedBytes;
};

// S = Q K^T and dP = dO V^T of one key tile for the warp's m16 rows (all swizzled in smem).
template <typename T, typename Cfg>
__device__ __forceinline__ void dq_s_dp(float (&acc_s)[Cfg::NT][4], float (&acc_dp)[Cfg::NT][4], const T* sQ,
                                        const T* sdO, const T* sK, const T* sV, int warp, int lane) {
  constexpr int D = Cfg::D, NT = Cfg::NT;
#pragma unroll
  for (int nt = 0; nt < NT; ++nt)
#pragma unroll
    for (int e = 0; e < 4; ++e) acc_s[nt][e] = acc_dp[nt][e] = 0.f;
#pragma unroll
  for (int ks = 0; ks < D / 16; ++ks) {
    uint32_t aq[4], ado[4];
    const int ar = warp * 16 + (lane & 7) + ((lane >> 3) & 1) * 8, ac = ks * 16 + (lane >> 4) * 8;
    ldsm_x4(aq, smem_u32(sQ + swz<D>(ar, ac)));
    ldsm_x4(ado, smem_u32(sdO + swz<D>(ar, ac)));
#pragma unroll
    for (int j = 0; j < NT / 2; ++j) {
      uint32_t bk[4], bv[4];
      const int br = j * 16 + (lane & 7) + (lane >> 4) * 8, bc = ks * 16 + ((lane >> 3) & 1) * 8;
      ldsm_x4(bk, smem_u32(sK + swz<D>(br, bc)));
      ldsm_x4(bv, smem_u32(sV + swz<D>(br, bc)));
      mma16816<T>(acc_s[2 * j], aq, bk[0], bk[1]);
      mma16816<T>(acc_s[2 * j + 1], aq, bk[2], bk[3]);
      mma16816<T>(acc_dp[2 * j], ado, bv[0], bv[1]);
      mma16816<T>(acc_dp[2 * j + 1], ado, bv[2], bv[3]);
    }
  }
}

// dQ += dS K: dS from the registers of dP (packed as A fragments), K swizzled in smem.
template <typename T, typename Cfg>
__device__ __forceinline__ void dq_add_ds_k(float (&acc_dq)[Cfg::DT][4], const float (&acc_ds)[Cfg::NT][4],
                                            const T* sK, int lane) {
  constexpr int D = Cfg::D, DT = Cfg::DT;
#pragma unroll
  for (int kk = 0; kk < Cfg::kBlockN / 16; ++kk) {
    uint32_t a[4];
    pack_a_fragment<T>(a, acc_ds[2 * kk], acc_ds[2 * kk + 1]);
#pragma unroll
    for (int j = 0; j < DT / 2; ++j) {
      uint32_t bf[4];
      ldsm_x4_t(bf, smem_u32(sK + swz<D>(kk * 16 + (lane & 7) + ((lane >> 3) & 1) * 8, j * 16 + (lane >> 4) * 8)));
      mma16816<T>(acc_dq[2 * j], a, bf[0], bf[1]);
      mma16816<T>(acc_dq[2 * j + 1], a, bf[2], bf[3]);
    }
  }
}

template <typename T, typename Cfg>
__global__ void __launch_bounds__(Cfg::kThreads)
    flashmask_bwd_dq_kernel(const BwdParams p, const BwdWork w,
                            const TileBounds* __restrict__ tile_bounds) {
  constexpr int D = Cfg::D, kBlockM = Cfg::kBlockM, kBlockN = Cfg::kBlockN;
  constexpr int kThreads = Cfg::kThreads, NT = Cfg::NT, DT = Cfg::DT;

  extern __shared__ __align__(128) char smem_raw[];
  const typename Cfg::Smem::template Tiles<T> sm(smem_raw);
  T* sdO = sm.q + kBlockM * D;  // after Q

  const int tid = threadIdx.x, lane = tid & (kWarpSize - 1), warp = tid >> kLog2WarpSize;
  const int g = lane >> 2, t = lane & 3;
  const Sm80QueryBlock<T, kBlockM, kBlockN> blk(p, tile_bounds);
  const T* gdO = static_cast<const T*>(p.dout) + blk.b * p.dout_strides.batch +
                 static_cast<int64_t>(blk.m0) * p.dout_strides.row + blk.h * p.dout_strides.head;
  const int count = list_key_tiles<kThreads, kBlockN>(sm.list, sm.scratch, p.mask, blk.Sq, blk.Sk, blk.bhm, blk.m0,
                                                      blk.rows_valid, blk.tile_bounds);

  const int64_t k_row = p.k_strides.row, v_row = p.v_strides.row;
  auto load_n = [&](TileEntry tile) {
    const int n = tile.index();
    load_tile_async<kBlockN, D, kThreads>(sm.k, blk.k + static_cast<int64_t>(n) * kBlockN * k_row,
                                          k_row, blk.Sk - n * kBlockN, tid);
    load_tile_async<kBlockN, D, kThreads>(sm.v, blk.v + static_cast<int64_t>(n) * kBlockN * v_row,
                                          v_row, blk.Sk - n * kBlockN, tid);
    if (tile.partial()) load_bounds_tile_async<kBlockN, kThreads>(sm.bounds, blk.bounds, n, blk.nb, blk.Sk, tid);
  };

  load_tile_async<kBlockM, D, kThreads>(sm.q, blk.q, p.q_strides.row, blk.rows_valid, tid);
  load_tile_async<kBlockM, D, kThreads>(sdO, gdO, p.dout_strides.row, blk.rows_valid, tid);
  if (count > 0) load_n(sm.list[count - 1]);
  cp_async_commit();

  const int64_t bh = static_cast<int64_t>(blk.b) * p.shape.num_heads + blk.h;
  float Lr[2], Dr[2];
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    const int row = blk.m0 + warp * 16 + g + 8 * r;  // < sq_pad: the arrays are padded
    Lr[r] = w.lse_log2[bh * w.sq_pad + row];
    Dr[r] = w.dsum[bh * w.sq_pad + row];
  }

  float acc_dq[DT][4];
#pragma unroll
  for (int dt = 0; dt < DT; ++dt)
#pragma unroll
    for (int e = 0; e < 4; ++e) acc_dq[dt][e] = 0.f;

  for (int it = count - 1; it >= 0; --it) {
    const TileEntry tile = sm.list[it];
    cp_async_wait<0>();
    __syncthreads();
    if (tile.partial()) {  // the tile's own test reads intervals
      convert_tile_columns<kBlockN, kThreads>(sm.intervals, sm.bounds, blk.form, tile.index(), tid, blk.offset,
                                              blk.Sk);
      __syncthreads();
    }

    float acc_s[NT][4], acc_dp[NT][4];
    dq_s_dp<T, Cfg>(acc_s, acc_dp, sm.q, sdO, sm.k, sm.v, warp, lane);
    if (tile.partial()) {
      const int rows[2] = {blk.m0 + warp * 16 + g, blk.m0 + warp * 16 + g + 8};
      mask_partial_rows<NT>(sm.intervals, tile.test(), t, rows,
                            [&](int j, int r, int c) { acc_s[j][2 * r + c] = -INFINITY; });
    }
#pragma unroll
    for (int nt = 0; nt < NT; ++nt)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int r = e >> 1;
        acc_dp[nt][e] = score_grad(score_prob(acc_s[nt][e], blk.scale_log2, Lr[r]), acc_dp[nt][e], Dr[r]);
      }
    // dQ += dS K
    dq_add_ds_k<T, Cfg>(acc_dq, acc_dp, sm.k, lane);
    __syncthreads();
    if (it > 0) load_n(sm.list[it - 1]);
    cp_async_commit();
  }
  cp_async_wait<0>();

  T* gdQ = static_cast<T*>(p.dq) + blk.b * p.dq_strides.batch + blk.h * p.dq_strides.head;
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    const int row = blk.m0 + warp * 16 + g + 8 * r;
    if (row < blk.Sq) {
      T* dq = gdQ + static_cast<int64_t>(row) * p.dq_strides.row;
#pragma unroll
      for (int dt = 0; dt < DT; ++dt)
        *reinterpret_cast<uint32_t*>(dq + dt * 8 + 2 * t) =
            Pack<T>::two(acc_dq[dt][2 * r] * p.softmax_scale, acc_dq[dt][2 * r + 1] * p.softmax_scale);
    }
  }
}

// ------------------------------------------------------------------ helpers
// rowsum(dO * O) in fp32 and lse*log2(e) (+inf for empty and padded rows) per (b, h, row)
// of the padded range. D/8 threads per row, 16 bytes of O and of dO each, kRowsPerThread
// rows per thread with their loads in flight together: one warp per row kept one load per
// thread in flight and half the lanes idle at D=128. Zeroing the dq accumulator in the same
// pass ran slower than this kernel and a memset together, and reading whole [S, H, D] rows
// (heads fastest) ran no faster (perf-notes v18). Registers bound it, not the loads in
// flight: each row's products are taken as its data arrives and the row pointers advance
// by a pass (40 registers, 6 blocks per SM); holding every row's data to a second loop with
// offsets from the 64-bit strides took 86 (2 blocks per SM, 2.35 TB/s of O and dO; v26).
template <int D>
struct BwdPrepShape {
  static constexpr int kThreads = 256, kThreadsPerRow = D / 8, kRowsPerThread = 4;
  static constexpr int kRowsPerPass = kThreads / kThreadsPerRow;
  static constexpr int kRowsPerBlock = kRowsPerPass * kRowsPerThread;
  // A block stays inside one (b, h): the padded row count is a multiple of kBwdRowPad.
  static_assert(kBwdRowPad % kRowsPerBlock == 0, "prep blocks must tile the row padding");
};

template <typename T, int D>
__global__ void __launch_bounds__(BwdPrepShape<D>::kThreads)
    flashmask_bwd_prep_kernel(const BwdParams p, float* lse_log2, float* dsum, int sq_pad) {
  using Shape = BwdPrepShape<D>;
  constexpr int kTPR = Shape::kThreadsPerRow, kRows = Shape::kRowsPerThread;
  const AttentionShape& s = p.shape;
  const int64_t first = static_cast<int64_t>(blockIdx.x) * Shape::kRowsPerBlock;  // of B*H*sq_pad
  const int64_t bh = first / sq_pad;
  const int h = static_cast<int>(bh % s.num_heads), b = static_cast<int>(bh / s.num_heads);
  const int c = static_cast<int>(threadIdx.x % kTPR) * 8;
  const int row0 = static_cast<int>(first % sq_pad) + static_cast<int>(threadIdx.x) / kTPR;
  const int64_t o_step = p.out_strides.row * Shape::kRowsPerPass, d_step = p.dout_strides.row * Shape::kRowsPerPass;
  const T* o = static_cast<const T*>(p.out) + b * p.out_strides.batch + h * p.out_strides.head + c +
               static_cast<int64_t>(row0) * p.out_strides.row;
  const T* d = static_cast<const T*>(p.dout) + b * p.dout_strides.batch + h * p.dout_strides.head + c +
               static_cast<int64_t>(row0) * p.dout_strides.row;
  const float* lse_in = p.lse + bh * s.seqlen_q + row0;
  float sum[kRows], lse[kRows];
#pragma unroll
  for (int k = 0; k < kRows; ++k, o += o_step, d += d_step) {
    uint4 ov = make_uint4(0, 0, 0, 0), dv = ov;  // padded rows: rowsum 0, lse -inf
    lse[k] = -INFINITY;
    if (row0 + k * Shape::kRowsPerPass < s.seqlen_q) {
      ov = *reinterpret_cast<const uint4*>(o);
      dv = *reinterpret_cast<const uint4*>(d);
      lse[k] = lse_in[k * Shape::kRowsPerPass];
    }
    const T* oe = reinterpret_cast<const T*>(&ov);
    const T* de = reinterpret_cast<const T*>(&dv);
    sum[k] = 0.f;
#pragma unroll
    for (int e = 0; e < 8; ++e) sum[k] += to_float<T>(oe[e]) * to_float<T>(de[e]);
  }
#pragma unroll
  for (int k = 0; k < kRows; ++k) {
    const int64_t r = bh * sq_pad + row0 + k * Shape::kRowsPerPass;
#pragma unroll
    for (int off = kTPR / 2; off > 0; off >>= 1) sum[k] += __shfl_xor_sync(kFullWarp, sum[k], off);
    if (c == 0) {
      dsum[r] = sum[k];
      lse_log2[r] = lse[k] == -INFINITY ? INFINITY : lse[k] * kLog2e;
    }
  }
}

// dq = scale * dq_accum, 8 head-dim elements per thread.
template <typename T, int D>
__global__ void flashmask_bwd_dq_convert_kernel(const BwdParams p, const float* dq_accum,
                                                int sq_pad) {
  const AttentionShape& s = p.shape;
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  constexpr int kVec = D / 8;
  const int64_t total = static_cast<int64_t>(s.batch) * s.num_heads * s.seqlen_q * kVec;
  if (i >= total) return;
  const int c = static_cast<int>(i % kVec) * 8;
  int64_t rest = i / kVec;
  const int row = static_cast<int>(rest % s.seqlen_q);
  rest /= s.seqlen_q;
  const int h = static_cast<int>(rest % s.num_heads), b = static_cast<int>(rest / s.num_heads);
  const float* src = dq_accum + ((static_cast<int64_t>(b) * s.num_heads + h) * sq_pad + row) * D + c;
  const float4 x = *reinterpret_cast<const float4*>(src);
  const float4 y = *reinterpret_cast<const float4*>(src + 4);
  const float sc = p.softmax_scale;
  uint4 out;
  out.x = Pack<T>::two(x.x * sc, x.y * sc);
  out.y = Pack<T>::two(x.z * sc, x.w * sc);
  out.z = Pack<T>::two(y.x * sc, y.y * sc);
  out.w = Pack<T>::two(y.z * sc, y.w * sc);
  T* dst = static_cast<T*>(p.dq) + b * p.dq_strides.batch +
           static_cast<int64_t>(row) * p.dq_strides.row + h * p.dq_strides.head + c;
  *reinterpret_cast<uint4*>(dst) = out;
}

// The same from the Hopper backward's accumulator (each query tile of kTileRows rows in
// DqFragmentOrder): a block per 64 x 64 part, read in order into a row-major shared tile,
// then written as rows (each warp two rows of 64 values): one float4 per thread and step.
constexpr int kDqConvertThreads = 256;
template <typename T, int D, int kTileRows>
__global__ void __launch_bounds__(kDqConvertThreads)
    flashmask_bwd_dq_convert_fragments_kernel(const BwdParams p, const float* dq_accum, int sq_pad) {
  using Order = DqFragmentOrder<kTileRows>;
  constexpr int kSide = Order::kPartSide, kParts = kTileRows * D / Order::kPartFloats;
  constexpr int kPitch = kSide + 8;  // floats per shared row: a quarter-warp's float4s on distinct banks
  constexpr int kSteps = Order::kPartFloats / 4 / kDqConvertThreads;
  __shared__ __align__(16) float part[kSide * kPitch];
  const AttentionShape& s = p.shape;
  const int m_tiles = (s.seqlen_q + kTileRows - 1) / kTileRows;
  const int pi = static_cast<int>(blockIdx.x % kParts);
  const int m = static_cast<int>(blockIdx.x / kParts % m_tiles);
  const int64_t bh = blockIdx.x / kParts / m_tiles;
  const float4* src = reinterpret_cast<const float4*>(
      dq_accum + (bh * sq_pad + static_cast<int64_t>(m) * kTileRows) * D + pi * Order::kPartFloats);
#pragma unroll
  for (int k = 0; k < kSteps; ++k) {
    const int q = k * kDqConvertThreads + threadIdx.x;
    int row, col;
    if constexpr (Order::kGroup == 4) {  // float4 q: one group, two columns of two rows 8 apart
      Order::part_position(q, row, col);
      const float4 x = src[q];
      *reinterpret_cast<float2*>(part + row * kPitch + col) = make_float2(x.x, x.y);
      *reinterpret_cast<float2*>(part + (row + 8) * kPitch + col) = make_float2(x.z, x.w);
    } else {  // float4 q: groups 2q and 2q + 1, four columns of a row
      Order::part_position(2 * q, row, col);
      *reinterpret_cast<float4*>(part + row * kPitch + col) = src[q];
    }
  }
  __syncthreads();
  int row0, col0;
  Order::part_origin(pi, row0, col0);
  row0 += m * kTileRows;
  const int h = static_cast<int>(bh % s.num_heads), b = static_cast<int>(bh / s.num_heads);
  T* dst = static_cast<T*>(p.dq) + b * p.dq_strides.batch + h * p.dq_strides.head + col0;
  const float sc = p.softmax_scale;
#pragma unroll
  for (int k = 0; k < kSteps; ++k) {
    const int q = k * kDqConvertThreads + threadIdx.x, row = q / (kSide / 4), col = q % (kSide / 4) * 4;
    if (row0 + row >= s.seqlen_q) continue;
    const float4 x = *reinterpret_cast<const float4*>(part + row * kPitch + col);
    *reinterpret_cast<uint2*>(dst + static_cast<int64_t>(row0 + row) * p.dq_strides.row + col) =
        make_uint2(Pack<T>::two(x.x * sc, x.y * sc), Pack<T>::two(x.z * sc, x.w * sc));
  }
}

}  // namespace cuda
}  // namespace flashmask
