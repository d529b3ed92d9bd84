// The Hopper forward's consumer mainloop (warpgroups 1.., 64 query rows each): per key
// tile S = Q K^T by wgmma from shared memory, the mask on partial tiles, the online
// softmax (softmax.cuh) in registers, then O += P V by wgmma with P from registers.
// It owns the GEMM issue order, the consumers' turns and the release of the
// ring slots (K and the bounds after the mask, V after P V, Q after the last S).
#pragma once

#include "mask.cuh"
#include "sm90_pipeline.cuh"
#include "sm90_wgmma.cuh"
#include "softmax.cuh"
#include "tile_scheduler.cuh"

namespace flashmask {
namespace cuda {

template <typename T, typename Cfg>
struct FwdSm90Mainloop {
  static constexpr int D = Cfg::D, kBlockM = Cfg::kBlockM, kBlockN = Cfg::kBlockN;
  static constexpr int kColBlocks = Cfg::kColBlocks;
  static constexpr int NT = kBlockN / 8;  // n8 chunks of S per thread row pair
  static constexpr int DT = D / 8;        // n8 chunks of O
  static constexpr int kConsumerThreads = Cfg::kConsumers * sm90::kWarpgroupThreads;
  using Smem = typename Cfg::Smem;

  Smem& sm;
  T* const sQ;  // tile bases (stage 0) of the Q buffers and the K / V ring
  T* const sK;
  T* const sV;
  const int cw;    // consumer warpgroup: rows cw*64 ..
  const int wrow;  // this thread's first row in the 64
  const int t;
  const float scale_log2;
  const int row_shift;  // FwdSm90Config::row_shift
  float acc_o[DT * 4];
  OnlineSoftmax<T, NT> softmax;

  __device__ __forceinline__ FwdSm90Mainloop(Smem& sm_, const FwdParams& p, const FwdSchedule& sched, int warp,
                                             int lane)
      : sm(sm_), sQ(reinterpret_cast<T*>(sm_.q[0])), sK(reinterpret_cast<T*>(sm_.k[0])),
        sV(reinterpret_cast<T*>(sm_.v[0])), cw(warp / 4 - 1), wrow((warp & 3) * 16 + (lane >> 2)), t(lane & 3),
        scale_log2(p.softmax_scale * kLog2e),
        row_shift(Cfg::row_shift(sched)) {}

  // S = Q K^T of ring slot st (K-major A and B, k steps of 16 = 32 bytes in a 128-byte row).
  // q_addr: this consumer's rows of the Q tile. At D=256 the Q descriptor is built here,
  // once per tile (kept across the tile loop it was spilled); at D <= 128 the compiler may
  // hoist it out of the loop, as the kernel did before its split into roles (built per
  // tile there, the forward ran 2-3% slower: A/B on the H200).
  __device__ __forceinline__ void issue_qk(float (&acc_s)[NT * 4], uint32_t q_addr, int st) {
    if constexpr (D == 256) asm volatile("" : "+r"(q_addr));  // not hoisted out of the tile loop
    const uint64_t q_desc = sm90::sw128_desc(q_addr, 0);
    const uint64_t k_desc = sm90::sw128_desc(smem_u32(sK + st * kColBlocks * kBlockN * sm90::kSw128Cols), 0);
#pragma unroll
    for (int ks = 0; ks < D / sm90::kWgmmaK; ++ks) {
      const uint32_t koff = (ks % sm90::kSw128KSteps) * sm90::kSw128KStepBytes;
      const uint64_t da = sm90::desc_advance(q_desc, (ks / sm90::kSw128KSteps) * kBlockM * sm90::kSw128RowBytes + koff);
      const uint64_t db = sm90::desc_advance(k_desc, (ks / sm90::kSw128KSteps) * kBlockN * sm90::kSw128RowBytes + koff);
      sm90::Wgmma<T, kBlockN>::template ss<0, 0>(acc_s, da, db, ks > 0);
    }
    sm90::wgmma_commit();
  }
  // O += P V of ring slot st (V MN-major: k steps of 16 keys = 16 rows of 128 bytes).
  __device__ __forceinline__ void issue_pv(const uint32_t (&pa)[kBlockN / sm90::kWgmmaK][4], int st) {
    const uint64_t v_desc = sm90::sw128_desc(smem_u32(sV + st * kColBlocks * kBlockN * sm90::kSw128Cols),
                                                 kBlockN * sm90::kSw128RowBytes);
#pragma unroll
    for (int kk = 0; kk < kBlockN / sm90::kWgmmaK; ++kk)
      sm90::Wgmma<T, D>::template rs<1>(acc_o, pa[kk],
                                        sm90::desc_advance(v_desc, kk * sm90::kWgmmaK * sm90::kSw128RowBytes), 1);
    sm90::wgmma_commit();
  }
  // Mask (partial tiles only), release K and the intervals of slot st, then the online
  // softmax: S becomes P (pa), alpha rescales the old O and sum where it returns true
  // (warp-uniform). Rows row0 and row0 + 8.
  __device__ __forceinline__ bool mask_and_softmax(float (&acc_s)[NT * 4],
                                                   uint32_t (&pa)[kBlockN / sm90::kWgmmaK][4], TileEntry tile,
                                                   int st, int row0, float (&alpha)[2]) {
    if (tile.partial()) {
      const int rows[2] = {row0, row0 + 8};
      mask_partial_rows<NT>(sm.bounds[st], tile.test(), t, rows,
                            [&](int j, int r, int c) { acc_s[4 * j + 2 * r + c] = -INFINITY; });
    }
    sm90::mbar_arrive(sm.k_empty + st);  // this thread is done with K and the bounds of this stage
    return softmax.update(acc_s, pa, scale_log2, alpha);
  }
  // O *= alpha where the softmax asked for it (warp-uniform; most tiles do not).
  __device__ __forceinline__ void rescale_o(bool rescale, const float (&alpha)[2]) {
    if (!rescale) return;
#pragma unroll
    for (int j = 0; j < DT; ++j)
#pragma unroll
      for (int r = 0; r < 2; ++r) {
        acc_o[4 * j + 2 * r] *= alpha[r];
        acc_o[4 * j + 2 * r + 1] *= alpha[r];
      }
  }

  // Turns: the consumers take turns to issue their GEMMs (0, 1, .., kConsumers - 1, 0, ..),
  // so the others' softmax runs while one consumer's GEMMs do (with two, a ping-pong). All
  // run the same items with the same tile counts, so the turns go on across items too:
  // consumer 0 starts the next item's first S as soon as the last consumer has issued this
  // item's last P V, while the others still wait for theirs and write their outputs. A
  // turn's barrier counts the waiting warpgroup and the one before it. The last consumer
  // hands the first turn over once before the first item (first_turn); consumer 0 takes
  // the last hand-over after the last item (last_turn), so no arrival is left pending.
  static constexpr int kTurnThreads = 2 * sm90::kWarpgroupThreads;
  __device__ __forceinline__ void turn_begin() {
    sm90::named_barrier_sync(sm90::FwdBarrier::kConsumerTurn0, kTurnThreads, cw);
  }
  __device__ __forceinline__ void turn_end() {
    sm90::named_barrier_arrive(sm90::FwdBarrier::kConsumerTurn0, kTurnThreads, cw + 1 < Cfg::kConsumers ? cw + 1 : 0);
  }
  __device__ __forceinline__ void first_turn() {
    if (cw == Cfg::kConsumers - 1) turn_end();
  }
  __device__ __forceinline__ void last_turn() {
    if (cw == 0) turn_begin();
  }

  // The thread's first row of the item (and row0 + 8).
  __device__ __forceinline__ int row0(const FwdItem& it) const {
    return it.m_block * kBlockM + cw * Cfg::kConsumerRows + wrow - row_shift;
  }
  // A release_q that names no tile (a constant, so that kStageO's tile loops keep no release).
  static constexpr int kNoTile = -1;
  // The ring slots of the segment's tiles at positions [begin, end), passed: this consumer takes
  // their turns and releases each slot once it is full, as compute() does, without a GEMM (its
  // rows see none of their keys, or lie outside the sequence: FwdItemRecord's busy range; the
  // other consumers' turns come at once: perf-notes v82, v83). Q is released at position
  // release_q if it lies among them (once it is full: its earlier use is then released too).
  template <typename AfterFirstIssue>
  __device__ __forceinline__ void pass(int begin, int end, int release_q, sm90::PipelineState<Cfg::kStages> kv,
                                       sm90::PipelineState<Cfg::kQStages> q, AfterFirstIssue&& after_first_issue) {
    using namespace sm90;
    for (int i = begin; i < end; ++i) {
      const PipelineState<Cfg::kStages> cur = kv.ahead(i);
      cur.wait_full(sm.k_full);
      turn_begin();
      turn_end();
      if (i == 0) after_first_issue();
      if (i == release_q) {
        q.wait_full(sm.q_full);
        mbar_arrive(sm.q_empty + q.stage());
      }
      mbar_arrive(sm.k_empty + cur.stage());
      cur.wait_full(sm.v_full);
      mbar_arrive(sm.v_empty + cur.stage());
    }
  }

  // One segment of an item: O and the softmax state of its rows over the segment's key
  // tiles, from zero at the item's first segment, else from the previous segment's. kv and
  // q are the ring positions of its first K/V tile and of the item's Q tile; Q is released
  // after this consumer's last S of the item's last segment. The tiles outside the
  // consumer's busy range are passed; a consumer with none passes the segment and its last
  // P V's turn (the vote keeps the branch warp-uniform: as a plain branch it cost the D=64
  // tile loop its uniform registers, perf-notes v82).
  // after_first_issue runs once the segment's first turn is taken (the previous item's
  // output store is then handed back, fwd_sm90_epilogue.cuh).
  template <typename AfterFirstIssue>
  __device__ __forceinline__ void run(const FwdItem& it, sm90::PipelineState<Cfg::kStages> kv,
                                      sm90::PipelineState<Cfg::kQStages> q, AfterFirstIssue&& after_first_issue) {
    const int count = it.count;
    if (it.first()) {
#pragma unroll
      for (int i = 0; i < DT * 4; ++i) acc_o[i] = 0.f;
      softmax.reset();
    }
    if (count == 0) return;
    const bool releases_q = !Cfg::kStageO && it.last();
    // Broadcast from lane 0, so that the tile loop's counter, and the ring stages and
    // descriptors derived from it, stay in uniform registers (read per thread they cost the
    // D=64 tile loop 90 instructions a tile and spills).
    const int begin = __shfl_sync(kFullWarp, it.record->busy_begin[cw], 0);
    const int end = __shfl_sync(kFullWarp, it.record->busy_end[cw], 0);
    if (__all_sync(kFullWarp, begin >= end)) {
      pass(0, count, releases_q ? count - 1 : kNoTile, kv, q, after_first_issue);
      turn_begin();  // the last P V's turn
      turn_end();
      return;
    }
    pass(0, begin, kNoTile, kv, q, after_first_issue);
    compute(row0(it), it.list + begin, end - begin, releases_q ? end - 1 - begin : kNoTile, kv.ahead(begin), q, [&] {
      if (begin == 0) after_first_issue();
    });
    pass(end, count, kNoTile, kv, q, [] {});
  }

  // The n >= 1 tiles `tiles` of a segment (its busy range), computed: kv is the ring position
  // of the first. Q is released after the S of tile release_q, if it is one of them. The
  // loop counts from the range's start (as a loop over the whole segment, ptxas keeps its
  // counter and what derives from it in uniform registers).
  template <typename AfterFirstIssue>
  __device__ __forceinline__ void compute(int row0, const TileEntry* tiles, int n, int release_q,
                                          sm90::PipelineState<Cfg::kStages> kv, sm90::PipelineState<Cfg::kQStages> q,
                                          AfterFirstIssue&& after_first_issue) {
    using namespace sm90;
    const int qs = q.stage();
    const uint32_t q_addr =
        smem_u32(sQ + qs * kColBlocks * kBlockM * kSw128Cols) + cw * Cfg::kConsumerRows * kSw128RowBytes;
    q.wait_full(sm.q_full);
    float acc_s[NT * 4], alpha[2];
    uint32_t pa[kBlockN / sm90::kWgmmaK][4];
    bool rescale;
    // Software pipeline: S of tile i is on the tensor cores together with P V of tile
    // i-1. The wait for that P V comes before the softmax of tile i (which writes pa, the
    // registers P V reads), so the softmax runs beside the other consumer's GEMMs; held
    // behind the softmax, so that it ran beside this consumer's own P V, the forward
    // measured 2-6% slower (perf-notes v19). Q is released once the last S is done:
    // release_q is the tile whose S is Q's last use (none in a segment before the item's
    // last), so that the release is a predicated arrive and not a branch on a
    // shared-memory load right after the S wait (~1% of the full-mask forward at D=128,
    // docs/design.md). Where the output is staged in the Q buffer (Cfg::kStageO), the
    // epilogue releases Q instead.
    kv.wait_full(sm.k_full);
    turn_begin();
    wgmma_fence();
    issue_qk(acc_s, q_addr, kv.stage());
    turn_end();
    after_first_issue();
    wgmma_wait<0>();
    fence_operands(acc_s);
    if (release_q == 0) mbar_arrive(sm.q_empty + qs);
    rescale = mask_and_softmax(acc_s, pa, tiles[0], kv.stage(), row0, alpha);
    // alpha of tile i-1 rescales O between the issue of S of tile i and that of P V of tile
    // i-1 (FA3's order; ptxas interleaves the multiplies with the S issue), not on the path
    // from the wait for P V to the next turn, where the softmax runs. At an item's first
    // tile O is 0 and alpha 0.
    for (int i = 1; i < n; ++i) {
      const PipelineState<Cfg::kStages> cur = kv.ahead(i), prev = kv.ahead(i - 1);
      cur.wait_full(sm.k_full);
      prev.wait_full(sm.v_full);
      turn_begin();
      wgmma_fence();
      issue_qk(acc_s, q_addr, cur.stage());
      fence_operands(acc_o);  // the rescale after the S issue (in the PTX)
      rescale_o(rescale, alpha);
      wgmma_fence();          // O's registers were written since the last fence
      issue_pv(pa, prev.stage());
      turn_end();
      wgmma_wait<1>();  // S of tile i is done, P V of tile i-1 may still run
      fence_operands(acc_s);
      if (i == release_q) mbar_arrive(sm.q_empty + qs);
      wgmma_wait<0>();  // P V of tile i-1 has read pa, which the softmax writes
      fence_operands(acc_o);
      fence_operands(pa);
      mbar_arrive(sm.v_empty + prev.stage());
      rescale = mask_and_softmax(acc_s, pa, tiles[i], cur.stage(), row0, alpha);
    }
    const PipelineState<Cfg::kStages> last = kv.ahead(n - 1);
    rescale_o(rescale, alpha);
    last.wait_full(sm.v_full);
    turn_begin();
    wgmma_fence();
    issue_pv(pa, last.stage());
    turn_end();
    wgmma_wait<0>();
    fence_operands(acc_o);
    mbar_arrive(sm.v_empty + last.stage());
  }
};

}  // namespace cuda
}  // namespace flashmask
