// FlashMask forward kernel (FlashAttention-2 style, mma.sync, sm80+).
//
// One CTA per (row block of kBlockM queries, query head, batch). Warps split
// the rows (each warp owns MI*16 contiguous rows). The CTA first classifies
// every key tile [n*kBlockN, (n+1)*kBlockN) against its rows from the per-tile
// min/max of the column bounds (computed once per call by the preprocessing
// kernel) and the block mask, compacts the non-skipped tiles into a list in
// shared memory, then streams K/V for those tiles only. Unmasked tiles run no
// per-element mask code; partial tiles read the columns' bounds from smem.
#pragma once

#include "fwd_epilogue.cuh"
#include "kernel_common.cuh"
#include "softmax.cuh"

namespace flashmask {
namespace cuda {

template <int D_, int kBlockM_, int kBlockN_, int kNWarps_>
struct FwdConfig {
  static constexpr int D = D_, kBlockM = kBlockM_, kBlockN = kBlockN_, kNWarps = kNWarps_;
  static constexpr int kThreads = kNWarps * 32;
  static constexpr int MI = kBlockM / (16 * kNWarps);  // m16 tiles per warp
  static constexpr int NT = kBlockN / 8;               // n8 tiles of S per warp
  static constexpr int DT = D / 8;                     // n8 tiles of O per warp
  static_assert(MI >= 1 && kBlockM == MI * 16 * kNWarps, "bad kBlockM");
  static_assert(kBlockN % 16 == 0 && D % 64 == 0, "bad tile");
  static_assert(kBlockMaskSize % kBlockM == 0 && kBlockMaskSize % kBlockN == 0, "tiles must divide block_mask cells");
  using Smem = Sm80QueryBlockSmem<D, kBlockM, kBlockN, 1>;
  // Bytes of static-size shared memory; the tile list (n_tiles ints) follows.
  static constexpr int kSmemFixed = Smem::kFixedBytes;
};

// S = Q K^T of one key tile for the warp's MI m16 row tiles (rows warp_row..), all NT n8
// column tiles (Q and K swizzled in smem).
template <typename T, typename Cfg>
__device__ __forceinline__ void fwd_qk(float (&acc_s)[Cfg::MI][Cfg::NT][4], const T* sQ, const T* sK, int warp_row,
                                       int lane) {
  constexpr int D = Cfg::D, MI = Cfg::MI, NT = Cfg::NT;
#pragma unroll
  for (int mi = 0; mi < MI; ++mi)
#pragma unroll
    for (int nt = 0; nt < NT; ++nt)
#pragma unroll
      for (int e = 0; e < 4; ++e) acc_s[mi][nt][e] = 0.f;
#pragma unroll
  for (int ks = 0; ks < D / 16; ++ks) {
    uint32_t a[MI][4];
#pragma unroll
    for (int mi = 0; mi < MI; ++mi)
      ldsm_x4(a[mi], smem_u32(sQ + swz<D>(warp_row + mi * 16 + (lane & 7) + ((lane >> 3) & 1) * 8,
                                          ks * 16 + (lane >> 4) * 8)));
#pragma unroll
    for (int j = 0; j < NT / 2; ++j) {
      uint32_t bf[4];
      ldsm_x4(bf, smem_u32(sK + swz<D>(j * 16 + (lane & 7) + (lane >> 4) * 8, ks * 16 + ((lane >> 3) & 1) * 8)));
#pragma unroll
      for (int mi = 0; mi < MI; ++mi) {
        mma16816<T>(acc_s[mi][2 * j], a[mi], bf[0], bf[1]);
        mma16816<T>(acc_s[mi][2 * j + 1], a[mi], bf[2], bf[3]);
      }
    }
  }
}

// O += P V: P from the registers of S (packed as A fragments), V swizzled in smem.
template <typename T, typename Cfg>
__device__ __forceinline__ void fwd_pv(float (&acc_o)[Cfg::MI][Cfg::DT][4], const float (&acc_s)[Cfg::MI][Cfg::NT][4],
                                       const T* sV, int lane) {
  constexpr int D = Cfg::D, MI = Cfg::MI, DT = Cfg::DT;
#pragma unroll
  for (int kk = 0; kk < Cfg::kBlockN / 16; ++kk) {
    uint32_t a[MI][4];
#pragma unroll
    for (int mi = 0; mi < MI; ++mi) pack_a_fragment<T>(a[mi], acc_s[mi][2 * kk], acc_s[mi][2 * kk + 1]);
#pragma unroll
    for (int j = 0; j < DT / 2; ++j) {
      uint32_t bf[4];
      ldsm_x4_t(bf, smem_u32(sV + swz<D>(kk * 16 + (lane & 7) + ((lane >> 3) & 1) * 8, j * 16 + (lane >> 4) * 8)));
#pragma unroll
      for (int mi = 0; mi < MI; ++mi) {
        mma16816<T>(acc_o[mi][2 * j], a[mi], bf[0], bf[1]);
        mma16816<T>(acc_o[mi][2 * j + 1], a[mi], bf[2], bf[3]);
      }
    }
  }
}

template <typename T, typename Cfg>
__global__ void __launch_bounds__(Cfg::kThreads)
    flashmask_fwd_kernel(const FwdParams p, const TileBounds* __restrict__ tile_bounds) {
  constexpr int D = Cfg::D, kBlockM = Cfg::kBlockM, kBlockN = Cfg::kBlockN;
  constexpr int kThreads = Cfg::kThreads, MI = Cfg::MI, NT = Cfg::NT, DT = Cfg::DT;

  extern __shared__ __align__(128) char smem_raw[];
  const typename Cfg::Smem::template Tiles<T> sm(smem_raw);

  const int tid = threadIdx.x, lane = tid & (kWarpSize - 1), warp = tid >> kLog2WarpSize;
  const int g = lane >> 2, t = lane & 3;
  const Sm80QueryBlock<T, kBlockM, kBlockN> blk(p, tile_bounds);
  const int count = list_key_tiles<kThreads, kBlockN>(sm.list, sm.scratch, p.mask, blk.Sq, blk.Sk, blk.bhm, blk.m0,
                                                      blk.rows_valid, blk.tile_bounds);

  const int64_t k_row = p.k_strides.row, v_row = p.v_strides.row;
  auto load_bounds = [&](int n) {
    load_bounds_tile_async<kBlockN, kThreads>(sm.bounds, blk.bounds, n, blk.nb, blk.Sk, tid);
  };

  load_tile_async<kBlockM, D, kThreads>(sm.q, blk.q, p.q_strides.row, blk.rows_valid, tid);
  int it = count - 1;
  int n = -1, kind = 0, test = 0;
  if (it >= 0) {
    n = sm.list[it].index();
    kind = sm.list[it].kind();
    test = sm.list[it].test();
    load_tile_async<kBlockN, D, kThreads>(sm.k, blk.k + static_cast<int64_t>(n) * kBlockN * k_row,
                                          k_row, blk.Sk - n * kBlockN, tid);
    if (kind == static_cast<int>(TileKind::kPartial)) load_bounds(n);
  }
  cp_async_commit();

  float acc_o[MI][DT][4];
  float row_max[MI][2], row_sum[MI][2];
#pragma unroll
  for (int mi = 0; mi < MI; ++mi) {
#pragma unroll
    for (int dt = 0; dt < DT; ++dt)
#pragma unroll
      for (int e = 0; e < 4; ++e) acc_o[mi][dt][e] = 0.f;
    row_max[mi][0] = row_max[mi][1] = -INFINITY;
    row_sum[mi][0] = row_sum[mi][1] = 0.f;
  }
  const int warp_row = warp * MI * 16;

  for (; it >= 0; --it) {
    cp_async_wait<0>();
    __syncthreads();
    load_tile_async<kBlockN, D, kThreads>(sm.v, blk.v + static_cast<int64_t>(n) * kBlockN * v_row,
                                          v_row, blk.Sk - n * kBlockN, tid);
    cp_async_commit();
    if (kind == static_cast<int>(TileKind::kPartial)) {  // the tile's own test reads intervals
      convert_tile_columns<kBlockN, kThreads>(sm.intervals, sm.bounds, blk.form, n, tid, blk.offset, blk.Sk);
      __syncthreads();
    }

    // S = Q K^T
    float acc_s[MI][NT][4];
    fwd_qk<T, Cfg>(acc_s, sm.q, sm.k, warp_row, lane);

    if (kind == static_cast<int>(TileKind::kPartial)) {
      int rows[MI * 2];
#pragma unroll
      for (int i = 0; i < MI * 2; ++i) rows[i] = blk.m0 + warp_row + (i >> 1) * 16 + g + 8 * (i & 1);
      mask_partial_rows<NT>(sm.intervals, test, t, rows, [&](int j, int i, int c) {
        acc_s[i >> 1][j][2 * (i & 1) + c] = -INFINITY;
      });
    }

    // Online softmax (softmax.cuh; base 2, scale folded in).
    online_softmax_rows<MI, NT, DT>(acc_s, acc_o, row_max, row_sum, blk.scale_log2);

    cp_async_wait<0>();
    __syncthreads();  // V visible; every warp is done reading K and the bounds
    int n_next = -1, kind_next = 0, test_next = 0;
    if (it > 0) {
      n_next = sm.list[it - 1].index();
      kind_next = sm.list[it - 1].kind();
      test_next = sm.list[it - 1].test();
      load_tile_async<kBlockN, D, kThreads>(
          sm.k, blk.k + static_cast<int64_t>(n_next) * kBlockN * k_row, k_row,
          blk.Sk - n_next * kBlockN, tid);
      if (kind_next == static_cast<int>(TileKind::kPartial)) load_bounds(n_next);
    }
    cp_async_commit();

    // O += P V
    fwd_pv<T, Cfg>(acc_o, acc_s, sm.v, lane);
    n = n_next;
    kind = kind_next;
    test = test_next;
  }
  cp_async_wait<0>();

  // Epilogue (fwd_epilogue.cuh): normalise, write O and the LSE.
  const FwdOutput<T> out(p, blk.b, blk.h);
#pragma unroll
  for (int mi = 0; mi < MI; ++mi)
    store_o_lse<T, DT>(p, out, blk.m0 + warp_row + mi * 16 + g, t, row_max[mi], row_sum[mi],
                       [&](int dt, int r, int c) { return acc_o[mi][dt][2 * r + c]; });
}

}  // namespace cuda
}  // namespace flashmask
