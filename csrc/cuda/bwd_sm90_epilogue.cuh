// The Hopper backward's epilogues, run by each consumer warpgroup for its own rows:
//  - dQ of a query tile into the fp32 dq accumulator: staged in shared memory (SW128, 32
//    columns per block; D = 256 one block at a time in the dS^T buffer) and added by TMA
//    reduce-adds;
//  - dK (scaled) and dV of an item through shared memory and TMA stores.
#pragma once

#include "bwd_sm90_producer.cuh"
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
  const int key_off, dkv_col0, dq_col0;
  const bool dq_issuer;  // issues this consumer's bulk copies

  // This consumer's named barrier over its own 128 threads. bar.sync is warp-aligned: the
  // issuer's warp must be converged.
  __device__ __forceinline__ void sync_warpgroup() const {
    __syncwarp();
    sm90::named_barrier_sync(sm90::BwdBarrier::kConsumer0, 128, cw);
  }

  // This consumer's dQ tile of query tile m, head h, batch b -> 32-column staging blocks of
  // kBlockM rows x 128 B (SW128) -> one TMA reduce-add per block. D <= 128 stage every block
  // at once in dq_stage ([block][consumer][rows][128 B]); D = 256 one block per round in this
  // consumer's dS^T buffer (free: its dQ GEMM is done). The issuer first makes sure its
  // previous bulk copies have read the staging; the barriers order it with the writes.
  static constexpr int kDqBlocks = Cfg::kDqCols / 32;
  static constexpr int kRoundBlocks = Cfg::kDqInDsBuffer ? 1 : kDqBlocks;
  static constexpr uint32_t kBlockStride = 2 * kBlockM * 128;
  __device__ __forceinline__ void dq_reduce_tma(const BwdTensorMaps& maps, const float* acc_dq, int m, int h,
                                                int b) const {
    char* stage = Cfg::kDqInDsBuffer ? reinterpret_cast<char*>(sm.ds[cw])
                                     : reinterpret_cast<char*>(sm.dq_stage) + cw * kBlockM * 128;
#pragma unroll
    for (int round = 0; round < kDqBlocks / kRoundBlocks; ++round) {
      wait_staging_read();
#pragma unroll
      for (int r = 0; r < 2; ++r)
#pragma unroll
        for (int jj = 0; jj < 4 * kRoundBlocks; ++jj) {
          const int j = 4 * kRoundBlocks * round + jj;                 // n8 chunk of acc_dq
          const int row = wrow + 8 * r, chunk = (jj & 3) * 2 + (t >> 1);  // 16-byte chunk
          const uint32_t off = (jj >> 2) * kBlockStride + sm90::sw128_offset(row, chunk) + (t & 1) * 8;
          *reinterpret_cast<float2*>(stage + off) = make_float2(acc_dq[4 * j + 2 * r], acc_dq[4 * j + 2 * r + 1]);
        }
      sm90::fence_proxy_async_smem();
      sm90::named_barrier_sync(sm90::BwdBarrier::kConsumer0, 128, cw);
      if (dq_issuer) {
#pragma unroll
        for (int bb = 0; bb < kRoundBlocks; ++bb)
          sm90::tma_reduce_add_4d(&maps.dq, stage + bb * kBlockStride, dq_col0 + 32 * (kRoundBlocks * round + bb),
                                  m * kBlockM, h, b);
        sm90::bulk_commit();
      }
      __syncwarp();  // converged again before the next warp-aligned wgmma
    }
  }
  // The staging may be rewritten (dS^T buffer at D = 256: by the next tile's dS^T) once the
  // issuer's bulk copies have read it.
  __device__ __forceinline__ void wait_staging_read() const {
    if (dq_issuer) sm90::bulk_wait_read<0>();
    sync_warpgroup();
  }

  // dK = scale * dS^T Q, dV = P^T dO of the item at key block n0, through shared memory and
  // TMA stores: the 4-byte global stores of the accumulators cost 5-7% of the backward
  // where a key block has few query tiles (perf-notes v14). D <= 128 writes them into the
  // dS buffers and the dQ staging tiles (each consumer's rows on its own halves), D = 256
  // into sK / sV. The caller has synchronised both consumers.
  __device__ __forceinline__ void store_dkdv(const BwdTensorMaps& maps, const float* acc_dk, const float* acc_dv,
                                             float scale, int n0, int hk, int b) const {
    char* sdK = reinterpret_cast<char*>(Cfg::kStageInKV ? sm.k : sm.ds[0]);
    char* sdV = Cfg::kStageInKV ? reinterpret_cast<char*>(sm.v) : reinterpret_cast<char*>(sm.dq_stage);
#pragma unroll
    for (int r = 0; r < 2; ++r)
#pragma unroll
      for (int j = 0; j < DT; ++j) {
        const int row = key_off + wrow + 8 * r;
        const uint32_t off = (dkv_col0 / 64 + j / 8) * kBlockN * 128 + sm90::sw128_offset(row, j & 7) + t * 4;
        *reinterpret_cast<uint32_t*>(sdK + off) =
            Pack<T>::two(acc_dk[4 * j + 2 * r] * scale, acc_dk[4 * j + 2 * r + 1] * scale);
        *reinterpret_cast<uint32_t*>(sdV + off) = Pack<T>::two(acc_dv[4 * j + 2 * r], acc_dv[4 * j + 2 * r + 1]);
      }
    sm90::fence_proxy_async_smem();
    sync_warpgroup();  // this consumer's rows of both tiles are written
    if (dq_issuer) {
#pragma unroll
      for (int blk = dkv_col0 / 64; blk < (dkv_col0 + Cfg::kDKVCols) / 64; ++blk) {
        const uint32_t src = blk * kBlockN * 128 + key_off * 128;  // 1024-aligned: same swizzle phase
        sm90::tma_store_4d(&maps.dk, sdK + src, blk * 64, n0 + key_off, hk, b);
        sm90::tma_store_4d(&maps.dv, sdV + src, blk * 64, n0 + key_off, hk, b);
      }
      sm90::bulk_commit();
      sm90::bulk_wait_read<0>();  // the staging may be reused once the stores have read it
      if constexpr (Cfg::kStageInKV) sm90::mbar_arrive(&sm.kv_empty);  // the loader may bring the next K/V
    }
    sync_warpgroup();  // this consumer may rewrite its staged rows
  }
};

}  // namespace cuda
}  // namespace flashmask
