// FlashMask forward kernel for Hopper (sm90a): warp-specialised, TMA + wgmma,
// persistent.
//
// One CTA per SM takes work items (a kBlockM-row query block of one (batch, head)) in
// the longest-first order of tile_scheduler.cuh until none is left. The kernel body
// composes four roles, each in its own header:
//  - scheduler (tile_scheduler.cuh; warps 2-3 of warpgroup 0): takes the next item from the global
//    counter and builds its key-tile list (skip / unmasked / partial, from the
//    per-tile min/max of the bounds, as in the sm80 kernel) into one of two list
//    buffers, so that the next item's list is ready while this one runs, with each
//    consumer's busy range (the tiles at the list's ends whose keys its rows do not see
//    lie outside it, and the consumer passes them);
//  - loader (fwd_sm90_producer.cuh; warp 0): streams the item's Q tile (kQStages buffers, so the next
//    item's Q arrives during this one's last tiles) and the K and V tiles of its
//    listed key tiles with TMA into a kStages-deep ring of SW128 tiles;
//  - bounds copier (fwd_sm90_producer.cuh; warp 1): writes the column bounds of partial tiles next to
//    their K tile, as masked-row intervals (mask.cuh: column_masked_rows).
//    Each ring stage has a "full" and an "empty" mbarrier for K (with the bounds)
//    and for V, so S = QK^T starts as soon as its K has landed and K's slot is
//    refilled while P*V still runs;
//  - kConsumers consumers (fwd_sm90_mainloop.cuh, then fwd_sm90_epilogue.cuh or
//    fwd_epilogue.cuh; warpgroups 1..,
//    232 registers per thread with two, 160 with three), 64 query rows each:
//    S = Q K^T by wgmma from shared memory, the column-wise mask on partial tiles
//    only, online softmax in registers, then O += P V by wgmma with P taken from
//    registers. Each consumer issues S of the next tile together with P V of this
//    one, and the consumers take turns to issue (with two, a ping-pong) so that one's
//    GEMMs overlap the others' softmax (ptxas puts the wait for a consumer's own P V
//    before its softmax; see the main loop). D=64 runs three (FA3's 192-row tiles: its
//    softmax takes as long as its GEMMs, so two consumers leave the tensor cores idle
//    half the time), D=128 and 256 two (their registers). The output of one item is
//    written while the loader already streams the next item's tiles; with two consumers
//    and two Q buffers (kStageO) it goes out by TMA stores from the item's Q buffer.
// Skipped tiles cost no loads and unmasked tiles no compares. The ring, the Q
// buffers and the list buffers keep their mbarrier phases across items.
// An item whose key-tile list is longer than a list buffer (kListCapacity entries) comes
// in consecutive segments: Q is loaded at the first and released after the last S of the
// last (kStageO: after the output's stores have read it), the consumers reset O and the
// softmax state at the first and write the output at the last, so shared memory does not
// depend on the sequence length.
#pragma once

#include <cstddef>

#include "fwd_epilogue.cuh"
#include "fwd_sm90_epilogue.cuh"
#include "fwd_sm90_mainloop.cuh"
#include "fwd_sm90_producer.cuh"
#include "kernel_common.cuh"
#include "sm90_pipeline.cuh"
#include "tile_scheduler.cuh"

namespace flashmask {
namespace cuda {

template <int D_, int kBlockN_, int kStages_, int kConsumers_>
struct FwdSm90Config {
  static constexpr int kConsumers = kConsumers_;  // warpgroups of kConsumerRows query rows
  static constexpr int kConsumerRows = 64;         // a warpgroup's wgmma M
  static constexpr int D = D_, kBlockM = kConsumerRows * kConsumers, kBlockN = kBlockN_, kStages = kStages_;
  static constexpr int kThreads = (kConsumers + 1) * sm90::kWarpgroupThreads;
  static_assert(kConsumers >= 2 && kConsumers <= sm90::kMaxFwdConsumers, "consumer turns have their named barriers");
  // Three consumers share 512 threads' registers: 160 each holds D = 64's O, S and P.
  static constexpr int kProducerRegs = kConsumers == 2 ? 40 : 32, kConsumerRegs = kConsumers == 2 ? 232 : 160;
  // setmaxnreg moves registers within the CTA's launch allocation (65536 / kThreads per
  // thread, rounded down to 8): consumers block forever if the producer frees too few.
  static_assert(kProducerRegs + kConsumerRegs * kConsumers <= (kConsumers + 1) * (65536 / kThreads / 8 * 8),
                "register reallocation exceeds the launch allocation");
  static_assert(D % sm90::kSw128Cols == 0 && D <= 256, "P*V is one wgmma of N = D <= 256 (whole SW128 blocks)");
  static constexpr int kColBlocks = D / sm90::kSw128Cols;  // SW128 column blocks of a Q, K or V tile
  // S is one wgmma of N = kBlockN; 176 (FA3's tile for non-causal work at D=128) only on
  // calls without a mask (KernelSet::FwdSm90Wide).
  static_assert(kBlockN == 64 || kBlockN == 128 || kBlockN == 176, "S is one wgmma of N = kBlockN");
  // Two Q buffers let the next item's Q load during this one; D=256 and the 176-key tiles
  // have no room for them.
  static constexpr int kQStages = D <= 128 && kBlockN <= 128 ? 2 : 1;
  // The output goes through the item's Q buffer and TMA stores (fwd_sm90_epilogue.cuh)
  // where there are two Q buffers and two consumers. With one Q buffer (D=256) that would
  // hold the next item's Q back by the epilogue; at three consumers' 160 registers (D=64)
  // it made ptxas spill in the main loop and measured level (perf-notes v39). Those store
  // the output from registers (fwd_epilogue.cuh).
  static constexpr bool kStageO = kQStages >= 2 && kConsumers == 2;
  // Only the three-consumer kernel (D=64's 192 rows) shifts its query blocks, by a shift chosen
  // per call, the first candidate making the ragged block the first (preprocess.h:
  // FwdRowShifts). The 128-row kernels have no ragged block at power-of-two lengths; D=128's
  // store their output by TMA, which stopped on an illegal instruction where a store's rows
  // started below row 0 (H200, perf-notes v76); D=256's is also the block_mask kernel, whose
  // blocks stay on block_mask rows.
  static constexpr bool kRaggedBlockFirst = kConsumers == 3;
  static_assert(!(kRaggedBlockFirst && kStageO), "a shifted block's rows below 0 are stored by threads");
  static_assert(!kRaggedBlockFirst || kBlockM / kFwdShiftStep <= kFwdMaxShifts,
                "the workspace holds kFwdMaxShifts candidates' costs (FwdLayout::off_shift)");
  __host__ __device__ static FwdRowShifts row_shifts(int seqlen_q) {
    return fwd_row_shifts(seqlen_q, kBlockM, kRaggedBlockFirst);
  }
  // The call's shift, which fwd_visits_kernel wrote (block m's first row is m * kBlockM -
  // row_shift), read once by the loader and the consumers, per item by the scheduler.
  __device__ static int row_shift(const FwdSchedule& sched) { return kRaggedBlockFirst ? __ldg(sched.row_shift) : 0; }
  static constexpr int kQBytes = kBlockM * D * 2, kKVBytes = kBlockN * D * 2;
  static constexpr int kSchedulerThreads = 64;

  // Shared memory from a 1024-aligned base (SW128 tiles need it), the two key-tile list
  // buffers included: its size does not depend on the sequence length.
  struct Smem {
    uint16_t q[kQStages][kBlockM * D];  // SW128 tiles of 16-bit elements (the kernel's T)
    uint16_t k[kStages][kBlockN * D];
    uint16_t v[kStages][kBlockN * D];
    int4 bounds[kStages][kBlockN];  // masked-row intervals of a partial tile's columns
    uint64_t q_full[kQStages], q_empty[kQStages];
    uint64_t k_full[kStages], k_empty[kStages];  // K and its bounds
    uint64_t v_full[kStages], v_empty[kStages];
    uint64_t list_full[kFwdItemBuffers], list_empty[kFwdItemBuffers];
    FwdItemRecord records[kFwdItemBuffers];
    int scratch[kListScratchInts];  // the scheduler's list compaction and work counter
    TileEntry lists[kFwdItemBuffers][sm90::kListCapacity];
  };
  static constexpr size_t kAlign = sm90::kSw128GroupBytes;
  static_assert(offsetof(Smem, k) % kAlign == 0 && offsetof(Smem, v) % kAlign == 0 &&
                    sizeof(Smem::q[0]) % kAlign == 0 && sizeof(Smem::k[0]) % kAlign == 0,
                "SW128 tiles start aligned to the swizzle's period");
  static_assert(sizeof(Smem) == kQStages * kQBytes + 2 * kStages * kKVBytes + kStages * kBlockN * 16 +
                                    (2 * kQStages + 4 * kStages + 4) * 8 + 2 * sizeof(FwdItemRecord) +
                                    kListScratchInts * sizeof(int) +
                                    kFwdItemBuffers * sm90::kListCapacity * sizeof(TileEntry),
                "no padding");
  // Bytes of shared memory, with alignment slack.
  static constexpr int kSmemFixed = sizeof(Smem) + kAlign;
};

template <typename T, typename Cfg>
__global__ void __launch_bounds__(Cfg::kThreads, 1)
    flashmask_fwd_sm90_kernel(const __grid_constant__ FwdTensorMaps maps, const FwdParams p,
                              const TileBounds* __restrict__ tile_bounds, const FwdSchedule sched) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  using namespace sm90;
  constexpr int kStages = Cfg::kStages, kQStages = Cfg::kQStages;
  constexpr int kConsumerThreads = Cfg::kConsumers * sm90::kWarpgroupThreads;
  using Smem = typename Cfg::Smem;

  Smem& sm = aligned_smem<Smem>();
  const FwdItemQueue<Smem> queue{sm};
  // The warp index broadcast from lane 0: what derives from it (the consumer's Q descriptor)
  // lives in uniform registers (perf-notes v44, v54; every head dim since v84).
  const int tid = threadIdx.x, lane = tid & (kWarpSize - 1), warp = warp_index_uniform();
  const int group = p.shape.num_heads / p.shape.num_heads_k;  // query heads per key head

  if (tid == 0) {
    for (int qs = 0; qs < kQStages; ++qs) {
      mbar_init(sm.q_full + qs, 1);
      mbar_init(sm.q_empty + qs, Cfg::kStageO ? Cfg::kConsumers : kConsumerThreads);
    }
    for (int st = 0; st < kStages; ++st) {
      mbar_init(sm.k_full + st, 1 + 32);  // TMA issuer + the 32 lanes of the bounds warp
      mbar_init(sm.k_empty + st, kConsumerThreads);
      mbar_init(sm.v_full + st, 1);
      mbar_init(sm.v_empty + st, kConsumerThreads);
    }
    for (int buf = 0; buf < kFwdItemBuffers; ++buf) {
      mbar_init(sm.list_full + buf, Cfg::kSchedulerThreads);
      mbar_init(sm.list_empty + buf, 1 + 1 + kConsumerThreads);  // loader, bounds warp, consumers
    }
    fence_barrier_init();
  }
  __syncthreads();

  if (warp < 4) {  // ------------------------------------------------ producer warpgroup
    regs_dealloc<Cfg::kProducerRegs>();
    if (warp >= 2)
      fwd_scheduler_role<Cfg>(queue, sm.scratch, sched, p, tile_bounds, tid - 2 * kWarpSize);
    else if (warp == 0) {
      if (lane == 0) fwd_load_role<T, Cfg>(maps, sm, queue, group, sched);
    } else {
      fwd_bounds_role<Cfg>(sm, queue, p, lane);
    }
    return;
  }

  // ---------------------------------------------------------------- consumers
  regs_alloc<Cfg::kConsumerRegs>();
  FwdSm90Mainloop<T, Cfg> mainloop(sm, p, sched, warp, lane);
  mainloop.first_turn();
  PipelineState<kStages> kv;  // ring positions across items, as in the loader
  PipelineState<kQStages> q;
  FwdOutputStore<Cfg> output(sm);
  for (FwdItemState k;; k.advance()) {
    const FwdItem it = queue.template wait<FwdItem>(k);
    if (it.count < 0) break;
    mainloop.run(it, kv, q, [&] {
      if constexpr (Cfg::kStageO) output.release();
    });
    const bool last = it.last();
    queue.release(k);  // the list and the record are no longer read
    kv.advance(it.count);
    if (!last) continue;  // the item goes on in the next segment: O and the softmax stay
    const auto acc = [&](int j, int r, int c) { return mainloop.acc_o[4 * j + 2 * r + c]; };
    if constexpr (Cfg::kStageO) {
      q.wait_full(sm.q_full);  // an item without key tiles: the loader has handed its buffer over
      output.template store<T>(maps, p, it, q.stage(), mainloop.cw, mainloop.wrow, mainloop.t,
                               mainloop.softmax.row_max, mainloop.softmax.row_sum, acc);
      q.advance();
    } else {
      q.advance(it.count > 0);
      store_o_lse<T, FwdSm90Mainloop<T, Cfg>::DT>(p, FwdOutput<T>(p, it.b, it.h), mainloop.row0(it), mainloop.t,
                                                  mainloop.softmax.row_max, mainloop.softmax.row_sum, acc);
    }
  }
  mainloop.last_turn();
  if constexpr (Cfg::kStageO) {
    output.release();
    if (output.issuer) sm90::bulk_wait<0>();  // the output's stores are complete
  }
#endif
}

}  // namespace cuda
}  // namespace flashmask
