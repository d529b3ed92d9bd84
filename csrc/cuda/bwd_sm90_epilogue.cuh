// The Hopper backward's epilogues, run by each consumer warpgroup for its own rows:
//  - dQ of a query tile into the fp32 dq accumulator: staged in shared memory in the
//    accumulator fragments' order (dq_accum_order.cuh; D = 256 in the consumer's own column
//    blocks of the tile's Q and dO) and added by 1-D bulk reduce-adds;
//  - dK (scaled) and dV of an item through shared memory and TMA stores.
#pragma once

#include "bwd_sm90_producer.cuh"
#include "dq_accum_order.cuh"
#include "kernel_common.cuh"
#include "sm90_pipeline.cuh"

namespace flashmask {
namespace cuda {

template <typename T, typename Cfg>
struct BwdSm90Epilogue {
  static constexpr int kBlockM = Cfg::kBlockM, kBlockN = Cfg::kBlockN;
  static constexpr int DT = Cfg::kDKVCols / 8;  // n8 chunks of this consumer's dK / dV

  typename Cfg::Smem& sm;
  const int cw, wrow, t;
  const int key_off, dkv_col0, dq_col0, dq_row0;
  const bool dq_issuer;  // issues this consumer's bulk copies: is_dq_issuer

  // Lane 0 of the consumer's warp kIssuerWarp issues its bulk copies.
  static constexpr int kIssuerWarp = 0;
  static __device__ __forceinline__ bool is_dq_issuer(int warp, int lane) {
    return (warp & 3) == kIssuerWarp && lane == 0;
  }

  // This consumer's named barrier over its own 128 threads. bar.sync is warp-aligned: the
  // issuer's warp must be converged.
  __device__ __forceinline__ void sync_warpgroup() const {
    __syncwarp();
    sm90::named_barrier_sync(sm90::BwdBarrier::kConsumer0, sm90::kWarpgroupThreads, cw);
  }

  // This consumer's dQ part of query tile m, head h, batch b -> runs of four n8 chunks x 128
  // threads x one float4 or two float2 (DqFragmentOrder) -> one 1-D bulk reduce-add per run.
  // Run bb lies at base + (bb & 1) * kNextBlock + (bb >> 1) * kNextPair.
  using Order = DqFragmentOrder<kBlockM>;
  static constexpr int kDqBlocks = Cfg::kDqCols / 32;  // runs of this consumer
  static_assert(Cfg::kDqRows * Cfg::kDqCols == kDqBlocks * Order::kRunFloats, "a consumer's dQ part is whole runs");
  template <uint32_t kNextBlock, uint32_t kNextPair>
  __device__ __forceinline__ static uint32_t dq_block_offset(int bb) {
    return (bb & 1) * kNextBlock + (bb >> 1) * kNextPair;
  }
  template <uint32_t kNextBlock, uint32_t kNextPair>
  __device__ __forceinline__ void stage_and_reduce_dq(const BwdTensorMaps& maps, const float* acc_dq, char* base,
                                                      int m, int h, int b) const {
    const int u = 32 * (wrow / 16) + 4 * (wrow % 16) + t;  // this thread in the warpgroup
#pragma unroll
    for (int half = 0; half < Order::kHalves; ++half)
#pragma unroll
      for (int j = 0; j < 4 * kDqBlocks; ++j) {  // n8 chunk of acc_dq
        const float* v = acc_dq + 4 * j + 2 * half;
        char* dst = base + dq_block_offset<kNextBlock, kNextPair>(j >> 2) + Order::group_offset(j & 3, half, u) * 4;
        if constexpr (Order::kGroup == 4)
          *reinterpret_cast<float4*>(dst) = make_float4(v[0], v[1], v[2], v[3]);
        else
          *reinterpret_cast<float2*>(dst) = make_float2(v[0], v[1]);
      }
    sm90::fence_proxy_async_smem();
    if (!dq_stores_done()) return;
    if (dq_issuer) {
      float* tile = maps.dq.tile(b, h, m * kBlockM, Cfg::D);
#pragma unroll
      for (int bb = 0; bb < kDqBlocks; ++bb)
        sm90::bulk_reduce_add_f32(tile + (cw * kDqBlocks + bb) * Order::kRunFloats,
                                  base + dq_block_offset<kNextBlock, kNextPair>(bb), Order::kRunFloats * 4);
      sm90::bulk_commit();
    }
    __syncwarp();  // converged again before the next warp-aligned wgmma
  }

  // D <= 128: every run at once in dq_stage ([run][consumer][8 KB]), once the issuer's
  // previous bulk copies have read it.
  __device__ __forceinline__ void dq_reduce_staged(const BwdTensorMaps& maps, const float* acc_dq, int m, int h,
                                                   int b) const {
    constexpr uint32_t kBlockStride = 2 * Cfg::kDqRows * sm90::kSw128RowBytes;
    wait_dq_staging_free();
    stage_and_reduce_dq<kBlockStride, 2 * kBlockStride>(
        maps, acc_dq, reinterpret_cast<char*>(sm.dq_stage) + cw * Cfg::kDqRows * sm90::kSw128RowBytes, m, h, b);
  }
  // D = 256 (kDqInQSlot): the four blocks in this consumer's two column blocks of ring slot
  // st's Q and its two of dO. Its own dV/dK GEMMs, their other readers, are done, and the
  // caller has waited for the other consumer's S^T and dP^T of the slot (`scores_done`,
  // before the tile's P^T and dS^T were stored). The caller releases the slot once the
  // reduce-adds have read it.
  __device__ __forceinline__ void dq_reduce_in_slot(const BwdTensorMaps& maps, const float* acc_dq, int st, int m,
                                                    int h, int b) const {
    static_assert(Cfg::kDqInQSlot && Cfg::kSplitQueries && kDqBlocks == 4,
                  "two Q and two dO column blocks per consumer; scores_done waited for in query_tile");
    constexpr uint32_t kColumnBlock = kBlockM * sm90::kSw128RowBytes;  // one SW128 column block of a Q or dO tile
    stage_and_reduce_dq<kColumnBlock, Cfg::kStages * Cfg::kQBytes>(
        maps, acc_dq, reinterpret_cast<char*>(sm.q[st]) + 2 * cw * kColumnBlock, m, h, b);
  }

  // The warp of dq_issuer (wrow is 16 per warp of the consumer, then lane / 4). Written as
  // wrow < 16, not wrow / 16 == kIssuerWarp: that form took ptxas to another D=128 schedule
  // (2840 SASS lines differ), this one leaves every backward's SASS as it was.
  static_assert(kIssuerWarp == 0, "issuer_warp() tests the first warp");
  __device__ __forceinline__ bool issuer_warp() const { return wrow < 16; }
  // After the dQ stores' fence: false in the warps that go on without waiting for the others
  // (Cfg::kSplitDqWaits: they arrive on kDqFull, the issuer's warp waits on it), true where the
  // staging is complete.
  __device__ __forceinline__ bool dq_stores_done() const {
    if constexpr (Cfg::kSplitDqWaits) {
      if (!issuer_warp()) {
        sm90::named_barrier_arrive(sm90::BwdBarrier::kDqFull0, sm90::kWarpgroupThreads, cw);
        return false;
      }
      __syncwarp();
      sm90::named_barrier_sync(sm90::BwdBarrier::kDqFull0, sm90::kWarpgroupThreads, cw);
    } else {
      sm90::named_barrier_sync(sm90::BwdBarrier::kConsumer0, sm90::kWarpgroupThreads, cw);
    }
    return true;
  }
  // The dQ staging may be rewritten once the issuer's bulk copies have read it. Split
  // (Cfg::kSplitDqWaits): the issuer's warp waits for that and arrives on kDqFree, the other
  // warps wait for its arrival (not for each other).
  __device__ __forceinline__ void wait_dq_staging_free() const {
    if constexpr (!Cfg::kSplitDqWaits) {
      wait_staging_read();
      return;
    }
    if (!issuer_warp()) {
      sm90::named_barrier_sync(sm90::BwdBarrier::kDqFree0, sm90::kWarpgroupThreads, cw);
      return;
    }
    if (dq_issuer) sm90::bulk_wait_read<0>();
    __syncwarp();
    sm90::named_barrier_arrive(sm90::BwdBarrier::kDqFree0, sm90::kWarpgroupThreads, cw);
  }
  // The staging may be rewritten once the issuer's bulk copies have read it.
  __device__ __forceinline__ void wait_staging_read() const {
    if (dq_issuer) sm90::bulk_wait_read<0>();
    sync_warpgroup();
  }

  // dK = scale * dS^T Q, dV = P^T dO of the item at key block n0, through shared memory and
  // TMA stores: the 4-byte global stores of the accumulators cost 5-7% of the backward
  // where a key block has few query tiles (perf-notes v14). D = 64 writes both into the
  // first dS buffer, D = 128 dK there and dV into the dQ staging tiles (each consumer's rows on
  // its own key or staging rows), D = 256 into sK / sV. The caller has synchronised both
  // consumers.
  __device__ __forceinline__ void store_dkdv(const BwdTensorMaps& maps, const float* acc_dk, const float* acc_dv,
                                             float scale, int n0, int hk, int b) const {
    char* sdK = reinterpret_cast<char*>(Cfg::kStageInKV ? sm.k : sm.ds[0]);
    char* sdV = Cfg::kStageInKV ? reinterpret_cast<char*>(sm.v)
                : Cfg::kDkvInDs ? sdK + Cfg::kKVBytes
                                : reinterpret_cast<char*>(sm.dq_stage);
#pragma unroll
    for (int r = 0; r < 2; ++r)
#pragma unroll
      for (int j = 0; j < DT; ++j) {
        const int row = key_off + wrow + 8 * r;
        const uint32_t off = (dkv_col0 / sm90::kSw128Cols + j / 8) * kBlockN * sm90::kSw128RowBytes +
                             sm90::sw128_offset(row, j & 7) + t * 4;
        *reinterpret_cast<uint32_t*>(sdK + off) =
            Pack<T>::two(acc_dk[4 * j + 2 * r] * scale, acc_dk[4 * j + 2 * r + 1] * scale);
        *reinterpret_cast<uint32_t*>(sdV + off) = Pack<T>::two(acc_dv[4 * j + 2 * r], acc_dv[4 * j + 2 * r + 1]);
      }
    sm90::fence_proxy_async_smem();
    sync_warpgroup();  // this consumer's rows of both tiles are written
    if (dq_issuer) {
#pragma unroll
      for (int blk = dkv_col0 / sm90::kSw128Cols; blk < (dkv_col0 + Cfg::kDKVCols) / sm90::kSw128Cols; ++blk) {
        // aligned to the swizzle's period (key_off is 0 or 64 rows): the same swizzle phase
        const uint32_t src = blk * kBlockN * sm90::kSw128RowBytes + key_off * sm90::kSw128RowBytes;
        sm90::tma_store_4d(&maps.dk, sdK + src, blk * sm90::kSw128Cols, n0 + key_off, hk, b);
        sm90::tma_store_4d(&maps.dv, sdV + src, blk * sm90::kSw128Cols, n0 + key_off, hk, b);
      }
      sm90::bulk_commit();
      if constexpr (Cfg::kStageInKV) {  // the loader may bring the next K/V once the stores have read them
        sm90::bulk_wait_read<0>();
        sm90::mbar_arrive(&sm.kv_empty);
      }
    }
    // D = 256: this consumer may rewrite its staged rows. D <= 128: the mainloop waits for
    // the stores' read before its next rewrite (BwdSm90Mainloop::dkdv_staged); the warps
    // converge again after the issuer's branch.
    if constexpr (Cfg::kStageInKV)
      sync_warpgroup();
    else
      __syncwarp();
  }
};

}  // namespace cuda
}  // namespace flashmask
