// The Hopper forward's producer roles (warps 0 and 1 of the producer warpgroup):
//  - the loader (one lane of warp 0) streams each item's Q tile into one of kQStages
//    buffers and the K and V tiles of its listed key tiles, by TMA, into a kStages-deep
//    ring (the last key tile first);
//  - the bounds copier (warp 1) writes, for each partial tile, its columns' masked-row
//    intervals (mask.cuh: column_masked_rows) next to the tile's K in the same ring slot;
//    K's "full" barrier completes when both the TMA and the 32 lanes have arrived.
// Both keep their ring positions (PipelineState) across items.
#pragma once

#include <cuda.h>

#include "sm90_pipeline.cuh"
#include "tile_scheduler.cuh"

namespace flashmask {
namespace cuda {

// TMA descriptors of q, k, v as 4-D tensors {head_dim, seqlen, heads, batch},
// box {64, rows of one tile, 1, 1}, 128-byte swizzle, zero fill out of bounds.
struct FwdTensorMaps {
  CUtensorMap q, k, v;
  CUtensorMap o;  // box rows 64: one consumer's output rows (fwd_sm90_epilogue.cuh)
};

template <typename T, typename Cfg>
__device__ __forceinline__ void fwd_load_role(const FwdTensorMaps& maps, typename Cfg::Smem& sm,
                                              const FwdItemQueue<typename Cfg::Smem>& queue, int group,
                                              const FwdSchedule& sched) {
  using namespace sm90;
  constexpr int kColBlocks = Cfg::kColBlocks, kBlockM = Cfg::kBlockM, kBlockN = Cfg::kBlockN;
  const int row_shift = Cfg::row_shift(sched);
  T* sQ = reinterpret_cast<T*>(sm.q[0]);
  T* sK = reinterpret_cast<T*>(sm.k[0]);
  T* sV = reinterpret_cast<T*>(sm.v[0]);
  prefetch_tensor_map(&maps.q);
  prefetch_tensor_map(&maps.k);
  prefetch_tensor_map(&maps.v);
  PipelineState<Cfg::kStages> kv;
  PipelineState<Cfg::kQStages> q;
  for (FwdItemState k;; k.advance()) {
    const FwdItem it = queue.template wait<FwdItem>(k);
    if (it.count < 0) break;
    const int hk = it.h / group;
    // Q stays for the item's later segments. Where the output is staged in the Q buffer,
    // an item without key tiles takes a buffer too (for its zero output), with no load.
    if (it.first() && (Cfg::kStageO || it.count > 0)) {
      q.wait_empty(sm.q_empty);
      if (it.count > 0) {
        mbar_arrive_expect_tx(sm.q_full + q.stage(), Cfg::kQBytes);
        tma_load_tile<kColBlocks, kBlockM>(sQ + q.stage() * kColBlocks * kBlockM * kSw128Cols, &maps.q,
                                           sm.q_full + q.stage(), it.m_block * kBlockM - row_shift, it.h, it.b);
      } else {
        mbar_arrive(sm.q_full + q.stage());
      }
      q.advance();
    }
    for (int i = 0; i < it.count; ++i, kv.advance()) {
      const int st = kv.stage();
      const int n = it.tile(i).index();
      kv.wait_empty(sm.k_empty);
      mbar_arrive_expect_tx(sm.k_full + st, Cfg::kKVBytes);
      tma_load_tile<kColBlocks, kBlockN>(sK + st * kColBlocks * kBlockN * kSw128Cols, &maps.k, sm.k_full + st,
                                         n * kBlockN, hk, it.b);
      kv.wait_empty(sm.v_empty);
      mbar_arrive_expect_tx(sm.v_full + st, Cfg::kKVBytes);
      tma_load_tile<kColBlocks, kBlockN>(sV + st * kColBlocks * kBlockN * kSw128Cols, &maps.v, sm.v_full + st,
                                         n * kBlockN, hk, it.b);
    }
    queue.release(k);
  }
}

// The intervals of columns lane + 32k of key tile n (all loads first: one round trip).
template <int F, int kBlockN>
__device__ __forceinline__ void copy_tile_intervals(int4* dst, const int32_t* gBnd, int n, int lane, int offset,
                                                    int Sk) {
  using Fm = Form<F>;
  constexpr int kPerLane = (kBlockN + kWarpSize - 1) / kWarpSize;  // 176-key tiles: the last pass has 16 columns
  int raw[kPerLane][4] = {};
#pragma unroll
  for (int k = 0; k < kPerLane; ++k) {
    const int col = n * kBlockN + lane + kWarpSize * k;
#pragma unroll
    for (int i = 0; i < Fm::kBounds; ++i)
      if (col < Sk && lane + kWarpSize * k < kBlockN)
        raw[k][i] = __ldg(gBnd + static_cast<int64_t>(col) * Fm::kBounds + i);
  }
#pragma unroll
  for (int k = 0; k < kPerLane; ++k) {
    const int col = n * kBlockN + lane + kWarpSize * k;
    if (lane + kWarpSize * k < kBlockN) dst[lane + kWarpSize * k] = column_masked_rows<F>(col, raw[k], offset, Sk);
  }
}

template <typename Cfg>
__device__ __forceinline__ void fwd_bounds_role(typename Cfg::Smem& sm, const FwdItemQueue<typename Cfg::Smem>& queue, const FwdParams& p,
                                                int lane) {
  using namespace sm90;
  const AttentionShape& s = p.shape;
  const int nb = p.mask.num_bounds, Sk = s.seqlen_k;
  const int form = mask_form(p.mask.causal, nb), offset = Sk - s.seqlen_q;
  PipelineState<Cfg::kStages> kv;
  for (FwdItemState k;; k.advance()) {
    const FwdItem it = queue.template wait<FwdItem>(k);
    if (it.count < 0) break;
    const int64_t bhm = mask_row_for(p.mask, s, it.b, it.h);
    const int32_t* gBnd = p.mask.startend_row_indices + bhm * Sk * nb;
    for (int i = 0; i < it.count; ++i, kv.advance()) {
      const TileEntry tile = it.tile(i);
      kv.wait_empty(sm.k_empty);
      if (tile.partial())
        dispatch_form(form, [&](auto ftag) {
          copy_tile_intervals<decltype(ftag)::value, Cfg::kBlockN>(sm.bounds[kv.stage()], gBnd, tile.index(), lane,
                                                                  offset, Sk);
        });
      mbar_arrive(sm.k_full + kv.stage());  // release: the intervals are visible to the consumers
    }
    __syncwarp();  // every lane has read the list
    if (lane == 0) queue.release(k);
  }
}

}  // namespace cuda
}  // namespace flashmask
