// The Hopper forward's epilogue where the config stages its output (Cfg::kStageO): each
// consumer writes its 64 normalised output rows, as T, into the rows its Q tile took in
// the item's Q buffer (the SW128 layout the TMA loaded them in; Q's last use, the item's
// last S, is over), and one thread of the consumer writes them to O with a TMA store per
// 64-column block. The buffer goes back to the loader (FwdOutputStore::release) once the
// stores have read it, which the issuer waits for only after the next item's first S is
// issued, so that the wait is hidden behind it.
// Rows past seqlen_q are clipped by the tensor map. The LSE is written from registers.
// Replaces 4-byte stores whose issue took ~1.2 key tiles' time per item (perf-notes v39).
#pragma once

#include "fwd_epilogue.cuh"
#include "fwd_sm90_producer.cuh"
#include "sm90_pipeline.cuh"
#include "sm90_primitives.cuh"
#include "tile_scheduler.cuh"

namespace flashmask {
namespace cuda {

template <typename Cfg>
struct FwdOutputStore {
  typename Cfg::Smem& sm;
  const bool issuer;  // thread 0 of its consumer
  int pending = -1;   // the Q buffer of the last stored output, until released

  __device__ __forceinline__ FwdOutputStore(typename Cfg::Smem& sm_)
      : sm(sm_), issuer(threadIdx.x % sm90::kWarpgroupThreads == 0) {}

  template <typename T, typename Acc>
  __device__ __forceinline__ void store(const FwdTensorMaps& maps, const FwdParams& p, const FwdItem& it, int qs,
                                        int cw, int wrow, int t, const float (&row_max)[2],
                                        const float (&row_sum)[2], Acc&& acc) {
    constexpr int kBlockM = Cfg::kBlockM, kColBlockBytes = kBlockM * sm90::kSw128RowBytes;
    release();  // one store in flight: an item without key tiles has issued no S since the last
    char* tile = reinterpret_cast<char*>(sm.q[qs]);  // [D / 64 column blocks][kBlockM rows][128 B]
    const int m0 = it.m_block * kBlockM + cw * Cfg::kConsumerRows;  // this consumer's first row
    finish_rows<T, Cfg::D / 8>(p, FwdOutput<T>(p, it.b, it.h).lse, m0 + wrow, t, row_max, row_sum, acc,
                               [&](int j, int r, uint32_t pair) {
                                 const int row = cw * Cfg::kConsumerRows + wrow + 8 * r;
                                 *reinterpret_cast<uint32_t*>(tile + (j / 8) * kColBlockBytes +
                                                              sm90::sw128_offset(row, j & 7) + 4 * t) = pair;
                               });
    sm90::fence_proxy_async_smem();  // the rows are visible to the TMA store
    __syncwarp();                    // bar.sync is warp-aligned: the issuer's warp converged
    sm90::named_barrier_sync(sm90::FwdBarrier::kConsumerOutput0, sm90::kWarpgroupThreads, cw);
    if (issuer) {
#pragma unroll
      for (int cb = 0; cb < Cfg::kColBlocks; ++cb)  // a consumer's rows: 1024-aligned, the same swizzle phase
        sm90::tma_store_4d(&maps.o, tile + cb * kColBlockBytes + cw * Cfg::kConsumerRows * sm90::kSw128RowBytes,
                           cb * sm90::kSw128Cols, m0, it.h, it.b);
      sm90::bulk_commit();
    }
    pending = qs;
  }
  // The stored output's Q buffer back to the loader (one arrival per consumer) once the
  // stores have read it.
  __device__ __forceinline__ void release() {
    if (pending < 0) return;
    if (issuer) {
      sm90::bulk_wait_read<0>();
      sm90::mbar_arrive(sm.q_empty + pending);
    }
    pending = -1;
  }
};

}  // namespace cuda
}  // namespace flashmask
