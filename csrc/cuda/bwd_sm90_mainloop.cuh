// The Hopper backward's consumer mainloop (warpgroups 1-2), per query tile of a list:
//   S^T = K Q^T, dP^T = V dO^T            (wgmma m64n64; m64n128 over 128-query tiles at D=64,
//                                          m64n32 over this consumer's half of the queries at
//                                          D=256; operands in smem)
//   P^T = exp2(S^T*scale*log2e - lse), dS^T = P^T (dP^T - rowsum)   (registers; the mask
//   on partial tiles from the two keys' bounds each thread keeps in registers)
//   dV += P^T dO, dK += dS^T Q             (wgmma RS, P^T / dS^T from registers; at D=256
//                                          the other consumer's half from smem)
//   dS^T -> smem, then dQ = dS K (dS read MN-major from smem), handed to the epilogue.
// It owns the dK/dV/dQ accumulators, the order of the GEMMs (dQ one tile late at D <= 128,
// after dV/dK at D=256), the dS^T buffers' barriers and the release of the ring slots.
#pragma once

#include "bwd_sm90_epilogue.cuh"
#include "bwd_sm90_producer.cuh"
#include "mask.cuh"
#include "sm90_pipeline.cuh"
#include "sm90_wgmma.cuh"
#include "softmax.cuh"

namespace flashmask {
namespace cuda {

template <typename T, typename Cfg>
struct BwdSm90Mainloop {
  static constexpr int D = Cfg::D, kBlockM = Cfg::kBlockM, kBlockN = Cfg::kBlockN;
  static constexpr int kColBlocks = Cfg::kColBlocks;
  static constexpr int DT = Cfg::kDKVCols / 8;  // n8 chunks of this consumer's dK / dV
  static constexpr int QT = Cfg::kDqCols / 8;    // n8 chunks of this consumer's dQ
  static constexpr int ST = Cfg::kScoreCols / 8;  // n8 chunks of this consumer's S^T / dP^T
  static constexpr int KS = Cfg::kScoreCols / sm90::kWgmmaK;  // k steps (16 queries) of its P^T / dS^T
  using Smem = typename Cfg::Smem;

  Smem& sm;
  // Warpgroup cw owns keys key_off .. +63 of the block and columns dkv_col0 .. of dK/dV,
  // rows dq_row0 .. +63 and columns dq_col0 .. of dQ; this thread's accumulator rows are keys
  // key0 and key0 + 8 (S^T, dK, dV) and query rows dq_row0 + wrow, + 8 (dQ).
  const BwdSm90Epilogue<T, Cfg> epi;
  const int form, offset;
  const float scale_log2;
  const uint32_t k_addr, v_addr;
  const uint64_t dq_k_desc;
  float acc_dq[QT * 4], acc_dk[DT * 4], acc_dv[DT * 4];
  // kDqOneTileLate: the tile whose dQ is still to be issued (global index, query tile, head).
  int late_gi = -1, late_m = 0, late_h = 0;
  // kDqInQSlot: the ring slot holding this consumer's staged dQ, released once it has been read.
  int staged_slot = -1;
  // !kStageInKV: the last item's dK/dV stores may still read their staging (the first dS^T
  // buffer, and dq_stage at D = 128); the next item's first tile waits for that after issuing
  // its S^T and dP^T, and dq_reduce_staged waits before restaging dQ.
  bool dkdv_staged = false;

  // This consumer's first query of a tile's S^T and dP^T.
  __device__ __forceinline__ int query_off() const {
    if constexpr (Cfg::kSplitQueries)
      return epi.cw * Cfg::kScoreCols;
    else
      return 0;
  }

  __device__ __forceinline__ BwdSm90Mainloop(Smem& sm_, const BwdParams& p, int warp, int lane)
      : sm(sm_),
        epi{sm_,
            warp / 4 - 1,
            (warp & 3) * 16 + (lane >> 2),
            lane & 3,
            Cfg::kSplitKeys ? (warp / 4 - 1) * Cfg::kConsumerKeys : 0,
            Cfg::kSplitKeys ? 0 : (warp / 4 - 1) * Cfg::kDKVCols,
            Cfg::kDqSplitRows ? 0 : (warp / 4 - 1) * Cfg::kDqCols,
            Cfg::kDqSplitRows ? (warp / 4 - 1) * Cfg::kDqRows : 0,
            BwdSm90Epilogue<T, Cfg>::is_dq_issuer(warp, lane)},
        form(mask_form(p.mask.causal, p.mask.num_bounds)),
        offset(p.shape.seqlen_k - p.shape.seqlen_q),
        scale_log2(p.softmax_scale * kLog2e),
        k_addr(smem_u32(sm_.k)),
        v_addr(smem_u32(sm_.v)),
        dq_k_desc(sm90::sw128_desc(k_addr + epi.dq_col0 / sm90::kSw128Cols * kBlockN * sm90::kSw128RowBytes,
                                    kBlockN * sm90::kSw128RowBytes)) {}

  // dQ[dq_row0.., dq_col0..] = dS K over all keys of the block (A: column block dq_row0 / 64
  // of the dS^T buffer, MN-major).
  __device__ __forceinline__ void issue_dq(uint32_t ds_addr) {
    const uint64_t ds_desc =
        sm90::sw128_desc(ds_addr + epi.dq_row0 / sm90::kSw128Cols * kBlockN * sm90::kSw128RowBytes, 0);
    sm90::wgmma_fence();
#pragma unroll
    for (int kk = 0; kk < kBlockN / sm90::kWgmmaK; ++kk)
      sm90::Wgmma<T, Cfg::kDqCols>::template ss<1, 1>(
          acc_dq, sm90::desc_advance(ds_desc, kk * sm90::kWgmmaK * sm90::kSw128RowBytes),
          sm90::desc_advance(dq_k_desc, kk * sm90::kWgmmaK * sm90::kSw128RowBytes), kk > 0);
    sm90::wgmma_commit();
  }
  // dS^T buffer of tile gi: one per tile parity when the consumers share it (D <= 128),
  // sm.ds[1] beside P^T in sm.ds[0] at D=256 (rewritten once both consumers' GEMMs of the
  // previous tile are done: query_tile waits for scores_done).
  __device__ __forceinline__ char* ds_buf(int gi) const {
    return reinterpret_cast<char*>(sm.ds[Cfg::kSplitKeys ? (gi & 1) : 1]);
  }
  __device__ __forceinline__ char* pt_buf() const { return reinterpret_cast<char*>(sm.ds[0]); }
  // Issues the late tile's dQ (kDqOneTileLate: once both halves of its dS^T are in smem).
  __device__ __forceinline__ void issue_late_dq() {
    if constexpr (Cfg::kDqOneTileLate) sm90::PipelineState<2>{late_gi}.wait_full(sm.ds_full);
    issue_dq(smem_u32(ds_buf(late_gi)));
  }
  // S^T = K_c Q^T or dP^T = V_c dO^T: all operands K-major, k steps of 16 = 32 bytes inside
  // a 128-byte row of one column block.
  __device__ __forceinline__ void key_by_query(float (&acc)[4 * ST], uint32_t keys_addr,
                                               uint32_t queries_addr) const {
    const uint64_t keys = sm90::sw128_desc(keys_addr + epi.key_off * sm90::kSw128RowBytes, 0);
    const uint64_t queries = sm90::sw128_desc(queries_addr + query_off() * sm90::kSw128RowBytes, 0);
#pragma unroll
    for (int ks = 0; ks < D / sm90::kWgmmaK; ++ks) {
      const uint32_t koff = (ks % sm90::kSw128KSteps) * sm90::kSw128KStepBytes;
      const uint32_t off_n = (ks / sm90::kSw128KSteps) * kBlockN * sm90::kSw128RowBytes + koff;
      const uint32_t off_m = (ks / sm90::kSw128KSteps) * kBlockM * sm90::kSw128RowBytes + koff;
      sm90::Wgmma<T, Cfg::kScoreCols>::template ss<0, 0>(acc, sm90::desc_advance(keys, off_n),
                                                         sm90::desc_advance(queries, off_m), ks > 0);
    }
  }
  // S^T and dP^T of a query tile, one wgmma group.
  __device__ __forceinline__ void issue_scores(float (&acc_s)[4 * ST], float (&acc_dp)[4 * ST], uint32_t q_addr,
                                               uint32_t do_addr) const {
    sm90::wgmma_fence();
    key_by_query(acc_s, k_addr, q_addr);
    key_by_query(acc_dp, v_addr, do_addr);
    sm90::wgmma_commit();
  }
  // kDqInQSlot: the issuer's arrival on the slot of the previous tile's staged dQ, once the
  // reduce-adds have read it (called under the next tile's dQ GEMM, and at an item's end).
  __device__ __forceinline__ void release_staged_slot() {
    if (staged_slot < 0) return;
    if (epi.dq_issuer) {
      sm90::bulk_wait_read<0>();
      sm90::mbar_arrive(sm.q_empty + staged_slot);
    }
    __syncwarp();
    staged_slot = -1;
  }
  // P^T and dS^T of ring slot st from S^T and dP^T, packed as wgmma A fragments (16 queries
  // per k step).
  __device__ __forceinline__ void p_and_ds(float (&acc_s)[4 * ST], float (&acc_dp)[4 * ST], int st,
                                           uint32_t (&pa)[KS][4], uint32_t (&dsa)[KS][4]) const {
    const float* l_s = sm.lse[st] + query_off();
    const float* ds_s = sm.dsum[st] + query_off();
#pragma unroll
    for (int j = 0; j < ST; ++j)
#pragma unroll
      for (int c = 0; c < 2; ++c) {
        const int lq = j * 8 + 2 * epi.t + c;
        const float L = l_s[lq], Dq = ds_s[lq];
#pragma unroll
        for (int r = 0; r < 2; ++r) {
          const float pv = score_prob(acc_s[4 * j + 2 * r + c], scale_log2, L);
          acc_s[4 * j + 2 * r + c] = pv;
          acc_dp[4 * j + 2 * r + c] = score_grad(pv, acc_dp[4 * j + 2 * r + c], Dq);
        }
      }
#pragma unroll
    for (int kk = 0; kk < KS; ++kk)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        pa[kk][e] = Pack<T>::two(acc_s[8 * kk + 2 * e], acc_s[8 * kk + 2 * e + 1]);
        dsa[kk][e] = Pack<T>::two(acc_dp[8 * kk + 2 * e], acc_dp[8 * kk + 2 * e + 1]);
      }
  }
  // This consumer's queries of dS^T (or P^T) -> smem as [queries / 64][key][64 queries] SW128
  // (the MN-major A of dQ = dS K; the K-major A of the other consumer's dV/dK at D=256). The
  // caller fences.
  __device__ __forceinline__ void store_scores(char* buf, const uint32_t (&frag)[KS][4]) const {
#pragma unroll
    for (int kk = 0; kk < KS; ++kk)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int row = epi.key_off + epi.wrow + 8 * (e & 1);  // key within the block
        const int chunk = query_off() / 8 + 2 * kk + (e >> 1);  // 8 queries
        uint32_t off = sm90::sw128_offset(row, chunk) + epi.t * 4;
        if constexpr (kBlockM > sm90::kSw128Cols)
          off = (chunk >> 3) * kBlockN * sm90::kSw128RowBytes + sm90::sw128_offset(row, chunk & 7) + epi.t * 4;
        *reinterpret_cast<uint32_t*>(buf + off) = frag[kk][e];
      }
  }
  // acc += A B over this consumer's queries of the tile (A from registers) or, at D=256, the
  // other consumer's (A from its half of `others` in smem: [key][64 queries] SW128, K-major).
  // B = this consumer's columns of dO or Q (MN-major, SW128 column blocks kBlockM rows apart).
  __device__ __forceinline__ void own_queries(float (&acc)[DT * 4], const uint32_t (&frag)[KS][4],
                                              uint64_t b_desc) const {
#pragma unroll
    for (int kk = 0; kk < KS; ++kk)
      sm90::Wgmma<T, Cfg::kDKVCols>::template rs<1>(
          acc, frag[kk], sm90::desc_advance(b_desc, (query_off() + sm90::kWgmmaK * kk) * sm90::kSw128RowBytes), 1);
  }
  __device__ __forceinline__ void other_queries(float (&acc)[DT * 4], const char* others, uint64_t b_desc) const {
    const int q_other = Cfg::kScoreCols - query_off();
    const uint64_t a_desc = sm90::sw128_desc(smem_u32(others) + epi.key_off * sm90::kSw128RowBytes, 0);
#pragma unroll
    for (int kk = 0; kk < KS; ++kk)
      sm90::Wgmma<T, Cfg::kDKVCols>::template ss<0, 1>(
          acc, sm90::desc_advance(a_desc, (q_other + sm90::kWgmmaK * kk) * 2),
          sm90::desc_advance(b_desc, (q_other + sm90::kWgmmaK * kk) * sm90::kSw128RowBytes), 1);
  }
  // dV += P^T dO, dK += dS^T Q. At D=256 the GEMMs over this consumer's own queries are issued
  // before the barrier that waits for the other consumer's halves of P^T and dS^T.
  __device__ __forceinline__ void issue_dkv(const uint32_t (&pa)[KS][4], const uint32_t (&dsa)[KS][4], uint32_t q_addr,
                                            uint32_t do_addr, const char* ds) {
    const uint32_t dkv_off = epi.dkv_col0 / sm90::kSw128Cols * kBlockM * sm90::kSw128RowBytes;
    const uint64_t do_desc = sm90::sw128_desc(do_addr + dkv_off, kBlockM * sm90::kSw128RowBytes);
    const uint64_t q_desc = sm90::sw128_desc(q_addr + dkv_off, kBlockM * sm90::kSw128RowBytes);
    sm90::wgmma_fence();
    own_queries(acc_dv, pa, do_desc);
    own_queries(acc_dk, dsa, q_desc);
    if constexpr (Cfg::kSplitQueries) {  // both consumers' halves of P^T and dS^T are in smem
      __syncwarp();
      sm90::named_barrier_sync(sm90::BwdBarrier::kScoresStored, Cfg::kConsumers * sm90::kWarpgroupThreads);
      other_queries(acc_dv, pt_buf(), do_desc);
      other_queries(acc_dk, ds, q_desc);
    }
    sm90::wgmma_commit();
  }
  // dV/dK of this tile and the dQ GEMM (the late tile's at D <= 128, this tile's after them
  // at D=256), then the release of ring slot st and the dQ epilogue.
  __device__ __forceinline__ void dkv_and_dq(const BwdTensorMaps& maps, const uint32_t (&pa)[KS][4],
                                             const uint32_t (&dsa)[KS][4], uint32_t q_addr, uint32_t do_addr, char* ds,
                                             int gi, int st, int m, int h, int b) {
    using namespace sm90;
    if constexpr (Cfg::kDqOneTileLate) {  // D <= 128: this tile's dQ comes later
      mbar_arrive(sm.ds_full + (gi & 1));
      // Issue and wait stay in one branch: ptxas serialises every wgmma when a wait<1>
      // may follow a path that issued only dV/dK.
      if (late_gi >= 0) {
        issue_late_dq();
        issue_dkv(pa, dsa, q_addr, do_addr, ds);
        wgmma_wait<1>();  // the late dQ, committed first, is done: stage it under dV/dK
        fence_operands(acc_dq);
        mbar_arrive(sm.ds_empty + (late_gi & 1));
        epi.dq_reduce_staged(maps, acc_dq, late_m, late_h, b);
      } else {
        issue_dkv(pa, dsa, q_addr, do_addr, ds);
      }
      wgmma_wait<0>();
      fence_operands(acc_dv);
      fence_operands(acc_dk);
      mbar_arrive(sm.q_empty + st);  // Q, dO, lse and rowsum of this stage are free
      late_gi = gi, late_m = m, late_h = h;
    } else {  // D=256: dQ over the tile's dS^T after dV/dK, staged in the slot. dQ's 64
      // accumulators fit only in the registers of dV/dK's A fragments, so dQ is issued after
      // those wgmmas finished (else ptxas serialises every wgmma).
      static_assert(Cfg::kDqInQSlot, "the D=256 path stages dQ in the slot");
      issue_dkv(pa, dsa, q_addr, do_addr, ds);
      wgmma_wait<0>();
      issue_dq(smem_u32(ds));
      // The wait for the previous tile's staged dQ to be read: here, past every point where the
      // other consumer waits for this warp (scores_done, kScoresStored), it overlaps this
      // consumer's dQ GEMM (perf-notes v62: +9-14% over waiting right after S^T/dP^T's issue).
      release_staged_slot();
      wgmma_wait<0>();
      fence_operands(acc_dv);
      fence_operands(acc_dk);
      fence_operands(acc_dq);
      epi.dq_reduce_in_slot(maps, acc_dq, st, m, h, b);
      // Every thread but the issuer is done with the slot (reads and staging stores); the
      // issuer releases it once its reduce-adds have read the staging.
      if (!epi.dq_issuer) mbar_arrive(sm.q_empty + st);
      staged_slot = st;
    }
  }

  // The item's end: the last dQ, then dK and dV out. Past the barrier over both consumers
  // neither reads K, V or the dS buffers of this item any more.
  __device__ __forceinline__ void item_end(const BwdTensorMaps& maps, float softmax_scale, int n0, int hk, int b) {
    using namespace sm90;
    if constexpr (Cfg::kDqInQSlot) release_staged_slot();
    if constexpr (Cfg::kDqOneTileLate)
      if (late_gi >= 0) {
        issue_late_dq();
        wgmma_wait<0>();
        fence_operands(acc_dq);
        mbar_arrive(sm.ds_empty + (late_gi & 1));  // the next item's tiles reuse the buffer
        epi.dq_reduce_staged(maps, acc_dq, late_m, late_h, b);
        late_gi = -1;
      }
    if constexpr (!Cfg::kStageInKV && !Cfg::kDkvInDs)
      if (epi.dq_issuer) bulk_wait_read<0>();  // this consumer's dQ staging blocks are free for dV
    __syncwarp();
    named_barrier_sync(BwdBarrier::kConsumers, Cfg::kConsumers * kWarpgroupThreads);
    if constexpr (!Cfg::kStageInKV)
      if (epi.dq_issuer) mbar_arrive(&sm.kv_empty);  // the loader may bring the next item's K/V
    epi.store_dkdv(maps, acc_dk, acc_dv, softmax_scale, n0, hk, b);
    dkdv_staged = !Cfg::kStageInKV;
  }

  // One query tile: entry `tile` of the list, the gi-th tile of the CTA (ring position).
  __device__ __forceinline__ void query_tile(const BwdTensorMaps& maps, const KeyRowBounds& kb, TileEntry tile,
                                             int gi, int h, int b) {
    using namespace sm90;
    const PipelineState<Cfg::kStages> ring{gi};
    const int st = ring.stage();
    const int m = tile.index();
    const uint32_t q_addr = smem_u32(sm.q[st]);
    const uint32_t do_addr = smem_u32(sm.dout[st]);
    ring.wait_full(sm.q_full);

    float acc_s[4 * ST], acc_dp[4 * ST];
    issue_scores(acc_s, acc_dp, q_addr, do_addr);
    if constexpr (!Cfg::kStageInKV)
      if (dkdv_staged) {  // the last item's dK/dV stores have read the staging (this tile rewrites it)
        epi.wait_staging_read();
        dkdv_staged = false;
      }
    wgmma_wait<0>();
    fence_operands(acc_s);
    fence_operands(acc_dp);
    // kDqInQSlot: this warp no longer reads Q or dO for S^T and dP^T (the other consumer's
    // dQ staging waits for all eight warps).
    if constexpr (Cfg::kDqInQSlot)
      if (sm90::lane_id() == 0) mbar_arrive(sm.scores_done + st);

    if (tile.partial())
      mask_partial_keys<ST>(kb, tile.test(), m * kBlockM + query_off(), epi.t,
                            [&](int j, int r, int c) { acc_s[4 * j + 2 * r + c] = -INFINITY; });
    uint32_t pa[KS][4], dsa[KS][4];
    p_and_ds(acc_s, acc_dp, st, pa, dsa);
    // A dS^T buffer is rewritten: kDqOneTileLate (a buffer per tile parity), once both
    // consumers' dQ read it (ds_empty); D=256, once both consumers' GEMMs of the previous
    // tile did, which they waited for before their S^T and dP^T of this tile (scores_done).
    if constexpr (Cfg::kDqOneTileLate)
      if (gi >= 2) PipelineState<2>{gi}.wait_empty(sm.ds_empty);
    if constexpr (Cfg::kSplitQueries) {
      mbar_wait(sm.scores_done + st, ring.phase());
      store_scores(pt_buf(), pa);
    }
    char* ds = ds_buf(gi);
    store_scores(ds, dsa);
    fence_proxy_async_smem();
    dkv_and_dq(maps, pa, dsa, q_addr, do_addr, ds, gi, st, m, h, b);
  }
};

}  // namespace cuda
}  // namespace flashmask
