// FlashMask backward for Hopper (sm90a): dK, dV and dQ (fp32 reductions) with
// TMA and wgmma, warp-specialised like the sm90 forward.
//
// Persistent: one CTA per SM takes work items (a key block of one key head and
// batch, in grid order) from a global counter until none is left. The kernel body
// composes the roles of bwd_sm90_producer.cuh (list builders, loader),
// bwd_sm90_mainloop.cuh (the consumers' GEMMs and dS) and bwd_sm90_epilogue.cuh (dQ
// reduce-add, dK/dV stores). Three warpgroups:
//  - producer (warpgroup 0): warps 1-3 take the next item and build, per query head
//    of its GQA group, the query-tile list into one of two list buffers (so the next
//    list is ready while this one runs). Warp 0 loads, per item, K and V of the key
//    block by TMA (once both consumers are past the previous item's last GEMM), and
//    for each listed query tile of kBlockM rows (128 at D=64, else 64) Q and dO by TMA plus the tile's
//    lse*log2(e) and rowsum(dO*O) by 1-D bulk copies, into a ring of kStages slots with
//    full/empty mbarriers that runs on across items.
//  - two consumers (warpgroups 1-2) of 64 keys each, per query tile:
//      S^T = K Q^T, dP^T = V dO^T            (wgmma m64n64, m64n128 at D=64; operands in smem)
//      P^T = exp2(S^T*scale*log2e - lse), dS^T = P^T (dP^T - rowsum)   (registers)
//      dV += P^T dO, dK += dS^T Q             (wgmma RS, P^T / dS^T from registers)
//      dS^T -> smem, then dQ = dS K (dS read MN-major from smem), added to the fp32
//      dq accumulator by 1-D bulk reduce-adds of runs staged in the accumulator
//      fragments' order (dq_accum_order.cuh) in dq_stage (D <= 128) or in the consumer's
//      own column blocks of the tile's Q and dO (D = 256).
//    D=64/128: 128-key blocks, consumer c owns keys 64c..64c+63 and all of dK/dV's
//    columns, and computes a 64 x 64 part of dQ over all 128 keys (D=128: dQ[:, 64c..];
//    D=64, on 128-query tiles: dQ[64c.., :]), one tile late (with the next tile's
//    dV/dK, staged while those run); the two halves of dS^T are exchanged through
//    full/empty mbarriers per buffer, so the consumers need not reach the same point
//    of a tile together.
//    D=256: 64-key blocks (64 keys x 256 of dK and dV would not fit one consumer's
//    registers): consumer c computes S^T and dP^T of all 64 keys and queries
//    32c..32c+31 and owns columns 128c..128c+127 of dK, dV and dQ; the halves of P^T
//    and dS^T meet in shared memory (a named barrier per tile). A `scores_done`
//    mbarrier per ring slot says both consumers' S^T and dP^T of the slot are done,
//    and with them their GEMMs of the tile before: then a consumer may overwrite the
//    P^T/dS^T buffers and, later, stage its dQ over its columns of Q and dO.
// The query-tile list (skip / unmasked / partial from the key tile's bound
// min/max) is the sm80 kernel's; only partial tiles evaluate the mask, from the
// two keys' bounds each thread keeps in registers. At the end of an item dK and dV
// leave through shared memory and TMA stores; D <= 128 stages them in the dS buffers
// and the dQ staging tiles, so the next item's K and V load meanwhile.
#pragma once

#include <cstddef>

#include "bwd_sm90_mainloop.cuh"
#include "bwd_sm90_producer.cuh"
#include "flashmask_bwd_kernel.cuh"
#include "sm90_pipeline.cuh"

namespace flashmask {
namespace cuda {

template <int D_>
struct BwdSm90Config {
  // Query rows per tile: D=64 takes 128 (FA3's choice there), so that the per-tile waits,
  // barriers and dQ reduce-adds, which bound its 64-row tiles (perf-notes v28, v35), are
  // shared by twice the GEMM work; D=128 and D=256 have no registers for it.
  static constexpr int D = D_, kBlockM = D == 64 ? 128 : 64, kStages = 2;
  static constexpr int kConsumers = 2;     // warpgroups of kConsumerKeys keys
  static constexpr int kConsumerKeys = 64;  // a warpgroup's wgmma M (the keys of S^T)
  // Consumers own different keys (D <= 128) or different head-dim halves (D = 256).
  static constexpr bool kSplitKeys = D <= 128;
  static constexpr int kBlockN = kSplitKeys ? kConsumers * kConsumerKeys : kConsumerKeys;
  static constexpr int kDKVCols = kSplitKeys ? D : D / 2;  // dK/dV columns per consumer
  static constexpr int kThreads = (kConsumers + 1) * sm90::kWarpgroupThreads;
  static constexpr int kProducerRegs = 24, kConsumerRegs = 240;
  // setmaxnreg moves registers within the CTA's launch allocation (65536 / kThreads per
  // thread, rounded down to 8): consumers block forever if the producer frees too few.
  static_assert(kProducerRegs + kConsumerRegs * kConsumers <= (kConsumers + 1) * (65536 / kThreads / 8 * 8),
                "register reallocation exceeds the launch allocation");
  static_assert(D == 64 || D == 128 || D == 256, "head_dim 64, 128 or 256");
  // Each consumer computes a part of the tile's dQ over all keys of the block, so each dQ
  // element is reduced once per key block: D=128 columns 64c..64c+63 (its SW128 column block
  // of K), D=64 query rows 64c..64c+63 (its column block of dS^T; with each consumer's dQ over
  // its own 64 keys instead, the reduce-adds were 70% of the L2's load and twice the staging:
  // perf-notes v36), both reading the other consumer's half of dS^T; D=256 columns 128c..
  // over the 64 keys from the whole dS^T in shared memory (both consumers' halves).
  static constexpr bool kDqSplitRows = D == 64;
  // D=256: the consumers split S^T and dP^T by queries (32 each) instead of both computing all
  // 64 (2 of every 7 multiply-adds were computed twice), and exchange their halves of P^T and
  // dS^T through sm.ds: dV/dK take a consumer's own half from registers and the other's from
  // shared memory, dQ reads both there (perf-notes v32).
  static constexpr bool kSplitQueries = D == 256;
  static constexpr int kScoreCols = kSplitQueries ? kBlockM / 2 : kBlockM;  // queries of S^T per consumer
  static constexpr int kDqCols = D == 256 ? 128 : 64;  // dQ columns per consumer
  static constexpr int kDqRows = 64;                   // dQ rows per consumer
  // dQ reaches the fp32 accumulator through shared memory and bulk reduce-adds: red.global per
  // element pair cost ~40% of the D=128 backward (perf-notes v9) and held a quarter of the
  // D=256 backward's warp samples (perf-notes v27); staged in the accumulator fragments' order,
  // not as SW128 rows, its stores have no bank conflicts (v43). D <= 128 stage a consumer's whole dQ tile in
  // dq_stage. D=256 has no shared memory left for that and stages it in the consumer's own
  // column blocks of the tile's Q and dO, free once its dV/dK GEMMs are done and the other
  // consumer's S^T and dP^T (the only other readers) have completed (`scores_done`); the dQ
  // issuer releases the ring slot under the next tile's dQ GEMM, when the reduce-adds have
  // read it (perf-notes v31, v62).
  static constexpr bool kDqInQSlot = D == 256;
  static_assert(!kDqInQSlot || kStages >= 2, "a slot with staged dQ is released during the next tile");
  // D <= 128: dQ of tile i is issued one tile late, after tile i+1's dS^T is stored and next
  // to tile i+1's dV/dK, and staged while they run: a consumer needs the other's half of
  // dS^T(i) a tile after it was written instead of waiting for it, and the staging costs no
  // time of its own (+6-9% backward at D=128, perf-notes v13). The two dS^T buffers (one per
  // tile parity) get full/empty mbarriers for it.
  // D=256 instead issues dQ after the tile's dV/dK (BwdSm90Mainloop::dkv_and_dq).
  static constexpr bool kDqOneTileLate = D <= 128;
  // D = 128: a consumer's dQ staging waits are split into arrive/wait pairs (kDqFree, kDqFull),
  // so only the issuer's warp waits for the other warps' stores (+0.8-2.7% backward on full and
  // causal at 8K and 32K, level on masks); at D=64 it made ptxas spill and lost 4-7%, at D=256
  // it lost 1-2% (perf-notes v45).
  static constexpr bool kSplitDqWaits = D == 128;
  static constexpr int kDqStageBytes = kDqInQSlot ? 0 : kDqRows * kDqCols * 4;  // per consumer
  static constexpr int kColBlocks = D / sm90::kSw128Cols;  // SW128 column blocks of a Q, dO, K or V tile
  static constexpr int kKVBytes = kBlockN * D * 2, kQBytes = kBlockM * D * 2;
  // dS^T buffers: one per tile parity (dQ a tile late, D <= 128), or P^T and dS^T (D = 256).
  static constexpr int kDsBuffers = 2;
  static constexpr int kDsBytes = kBlockN * kBlockM * 2;  // one dS^T buffer
  // dK and dV of an item leave as tiles laid out like sK ([column block][kBlockN keys][128 B],
  // SW128): D <= 128 writes them into the dS buffers (D = 64: both) and the dQ staging tiles
  // (D = 128: dV), free after the item's last dQ, so the next item's K/V load at once; each
  // consumer's rows land on its own half of each dS buffer and on its own dQ staging blocks,
  // so it may reuse them as soon as its own stores have read them. D = 256 has no spare smem:
  // dK/dV go into sK/sV, and the next K/V wait for the stores.
  static constexpr bool kStageInKV = kDqInQSlot;
  // D = 64: a dS buffer (32 KB) holds both tiles, dV in its second half, so the item's end
  // does not wait for its last dQ reduce-add to have read dq_stage (perf-notes v89). D = 128
  // stages dV in dq_stage (dK, 32 KB, takes both of its 16 KB dS buffers).
  static constexpr bool kDkvInDs = !kStageInKV && 2 * kKVBytes <= kDsBytes;
  // A dV tile's column block j (128 keys x 128 B) covers dq_stage's block j ([consumer][64
  // rows][128 B]): consumer c's keys 64c.. land in its own staging rows.
  static_assert(kStageInKV || kDkvInDs ||
                    (kKVBytes <= kDsBuffers * kDsBytes &&
                     kKVBytes <= kConsumers * kDqStageBytes && kDqRows == kConsumerKeys),
                "dK/dV staging: the dS buffers and the dQ staging blocks must hold a consumer's "
                "kConsumerKeys rows");
  static constexpr int kRowBytes = kBlockM * 4;  // lse or rowsum of one query tile
  static constexpr int kDsBars = kDqOneTileLate ? 2 : 0;
  static constexpr int kScoresBars = kDqInQSlot ? kStages : 0;
  // Shared memory from a 1024-aligned base, the two query-tile list buffers (segments of
  // kListCapacity entries) included: its size does not depend on the sequence length. Arrays of length 0 (dq_stage at D = 256, the dS
  // barriers without kDqOneTileLate) take no space (nvcc and the host compilers accept them).
  struct Smem {
    uint16_t k[kBlockN * D];  // SW128 tiles of 16-bit elements (the kernel's T)
    uint16_t v[kBlockN * D];
    uint16_t q[kStages][kBlockM * D];
    uint16_t dout[kStages][kBlockM * D];
    // [kBlockM / 64][kBlockN][64] SW128: dS^T (per tile parity at D=128), or P^T and dS^T (D = 256).
    uint16_t ds[kDsBuffers][kDsBytes / 2];
    // [run][consumer][8 KB]: consumer c's dQ run j (DqFragmentOrder) sits where rows 64c..
    // of column block j of a dV tile staged here go.
    float dq_stage[kConsumers * kDqStageBytes / 4];
    float lse[kStages][kBlockM];   // lse * log2(e) of the ring's query tiles
    float dsum[kStages][kBlockM];  // rowsum(dO * O)
    uint64_t kv_full, kv_empty;    // K/V landed; both consumers are done with them (and the staging)
    uint64_t list_full[2], list_empty[2], list_issued[2];
    uint64_t q_full[kStages], q_empty[kStages];  // Q, dO, lse and rowsum of a ring slot
    uint64_t ds_full[kDsBars];   // kDqOneTileLate: both halves of dS^T[buf] stored
    uint64_t ds_empty[kDsBars];  // both consumers' dQ finished reading dS^T[buf]
    // kDqInQSlot: every consumer warp's S^T, dP^T of the slot done (and its GEMMs of the tile before)
    uint64_t scores_done[kScoresBars];
    BwdListRecord records[2];
    int scratch[kListScratchInts];  // the builders' list compaction and work counter
    TileEntry lists[kBwdListBuffers][sm90::kListCapacity];
  };
  static constexpr size_t kAlign = sm90::kSw128GroupBytes;
  static_assert(offsetof(Smem, v) % kAlign == 0 && offsetof(Smem, q) % kAlign == 0 &&
                    offsetof(Smem, dout) % kAlign == 0 && offsetof(Smem, ds) % kAlign == 0 &&
                    offsetof(Smem, dq_stage) % kAlign == 0,
                "SW128 tiles start aligned to the swizzle's period");
  static_assert(sizeof(Smem) == 2 * kKVBytes + 2 * kStages * kQBytes + kDsBuffers * kDsBytes +
                                    kConsumers * kDqStageBytes + 2 * kStages * kRowBytes +
                                    (8 + 2 * kStages + 2 * kDsBars + kScoresBars) * 8 + 2 * sizeof(BwdListRecord) +
                                    kListScratchInts * sizeof(int) +
                                    kBwdListBuffers * sm90::kListCapacity * sizeof(TileEntry),
                "no padding");
  static constexpr int kListBuilders = 96;  // warps 1-3 build the query-tile lists
  // Bytes of shared memory, with alignment slack.
  static constexpr int kSmemFixed = sizeof(Smem) + kAlign;
};

template <typename T, typename Cfg>
__global__ void __launch_bounds__(Cfg::kThreads, 1)
    flashmask_bwd_sm90_kernel(const __grid_constant__ BwdTensorMaps maps, const BwdParams p,
                              const BwdWork w) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  using namespace sm90;
  constexpr int kConsumerThreads = Cfg::kConsumers * sm90::kWarpgroupThreads;
  using Smem = typename Cfg::Smem;

  Smem& sm = aligned_smem<Smem>();
  const BwdListQueue<Smem> queue{{sm}};
  // The warp index provably uniform: the consumers' wgmma descriptors stay in uniform
  // registers (perf-notes v44: no spills, bwd +2-5%).
  const int tid = threadIdx.x, lane = tid & (kWarpSize - 1), warp = warp_index_uniform();
  const AttentionShape& s = p.shape;
  const int H = s.num_heads, group = H / s.num_heads_k;  // query heads, per key head

  if (tid == 0) {
    mbar_init(&sm.kv_full, 1);
    mbar_init(&sm.kv_empty, Cfg::kConsumers);  // one thread per consumer
    for (int buf = 0; buf < kBwdListBuffers; ++buf) {
      mbar_init(sm.list_full + buf, Cfg::kListBuilders);
      mbar_init(sm.list_empty + buf, 1 + kConsumerThreads);  // the loader and every consumer thread
      mbar_init(sm.list_issued + buf, 1);
    }
    for (int st = 0; st < Cfg::kStages; ++st) {
      mbar_init(sm.q_full + st, 1);
      mbar_init(sm.q_empty + st, kConsumerThreads);
    }
    for (int st = 0; st < Cfg::kScoresBars; ++st) mbar_init(sm.scores_done + st, Cfg::kConsumers * 4);
    for (int buf = 0; buf < Cfg::kDsBars; ++buf) {
      mbar_init(sm.ds_full + buf, kConsumerThreads);
      mbar_init(sm.ds_empty + buf, kConsumerThreads);
    }
    fence_barrier_init();
  }
  __syncthreads();

  if (warp < 4) {  // ------------------------------------------------ producer
    regs_dealloc<Cfg::kProducerRegs>();
    if (warp > 0)
      bwd_list_builder_role<Cfg>(maps, queue, p, w, tid - kWarpSize);
    else if (lane == 0)
      bwd_load_role<T, Cfg>(maps, queue, w, H, group);
    return;
  }

  // ---------------------------------------------------------------- consumers
  regs_alloc<Cfg::kConsumerRegs>();
  const int nb = p.mask.num_bounds;
  BwdSm90Mainloop<T, Cfg> mainloop(sm, p, warp, lane);
  int done = 0;              // query tiles so far (the ring's position)
  PipelineState<1> kv;       // items so far (K/V have one buffer)
  for (BwdListState l;; l.advance()) {
    const BwdList ls = queue.template wait<BwdList>(l);
    if (ls.count < 0) break;
    const int b = ls.b, h = ls.hk * group + ls.hi;
    const int n0 = ls.n_block * Cfg::kBlockN;
    if (ls.first()) {  // a new item: its K/V, zero dK/dV
#pragma unroll
      for (int i = 0; i < BwdSm90Mainloop<T, Cfg>::DT * 4; ++i) mainloop.acc_dk[i] = mainloop.acc_dv[i] = 0.f;
      kv.wait_full(&sm.kv_full);
    }
    const int64_t bhm = mask_row_for(p.mask, s, b, h);
    const KeyRowBounds kb = load_key_row_bounds(p.mask.startend_row_indices + bhm * s.seqlen_k * nb, nb,
                                                mainloop.form, n0 + mainloop.epi.key_off + mainloop.epi.wrow,
                                                s.seqlen_k, mainloop.offset);
    for (int i = 0; i < ls.count; ++i) mainloop.query_tile(maps, kb, ls.tiles[i], done + i, h, b);
    queue.release(l);  // this list is no longer read
    done += ls.count;
    if (!ls.last()) continue;  // the item goes on: more segments or query heads
    mainloop.item_end(maps, p.softmax_scale, n0, ls.hk, b);
    kv.advance();
  }
  if (mainloop.epi.dq_issuer) bulk_wait<0>();  // the last reduce-adds and stores are complete
#endif
}

}  // namespace cuda
}  // namespace flashmask
