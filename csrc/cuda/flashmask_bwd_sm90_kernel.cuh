// FlashMask backward for Hopper (sm90a): dK, dV and dQ (fp32 reductions) with
// TMA and wgmma, warp-specialised like the sm90 forward.
//
// Persistent: one CTA per SM takes work items (a key block of one key head and
// batch, in grid order) from a global counter until none is left. Three warpgroups:
//  - producer (warpgroup 0): warps 1-3 take the next item and build, per query head
//    of its GQA group, the query-tile list into one of two list buffers (so the next
//    list is ready while this one runs). Warp 0 loads, per item, K and V of the key
//    block by TMA (once both consumers are past the previous item's last GEMM), and
//    for each listed query tile of 64 rows Q and dO by TMA plus the tile's
//    lse*log2(e) and rowsum(dO*O) by 1-D bulk copies, into a 2-stage ring with
//    full/empty mbarriers that runs on across items.
//  - two consumers (warpgroups 1-2) of 64 keys each, per query tile:
//      S^T = K Q^T, dP^T = V dO^T            (wgmma m64n64, both operands in smem)
//      P^T = exp2(S^T*scale*log2e - lse), dS^T = P^T (dP^T - rowsum)   (registers)
//      dV += P^T dO, dK += dS^T Q             (wgmma RS, P^T / dS^T from registers)
//      dS^T -> smem, then dQ = dS K (dS read MN-major from smem), added to the fp32
//      dq accumulator by a TMA reduce-add from an smem staging tile (D <= 128) or
//      with red.global.add.v2.f32 (D = 256: no smem left for the staging).
//    D=64/128: 128-key blocks, consumer c owns keys 64c..64c+63 and all of dK/dV's
//    columns. D=128: consumer c computes dQ[:, 64c..] over all 128 keys, one tile
//    late (with the next tile's dV/dK, staged while those run); the two halves of
//    dS^T are exchanged through full/empty mbarriers per buffer, so the consumers
//    need not reach the same point of a tile together. D=64: dQ over the
//    consumer's own keys, right after its dV/dK.
//    D=256: 64-key blocks (64 keys x 256 of dK and dV would not fit one consumer's
//    registers): both consumers compute S^T and dP^T of all 64 keys and consumer c
//    owns columns 128c..128c+127 of dK, dV and dQ; nothing is exchanged.
// The query-tile list (skip / unmasked / partial from the key tile's bound
// min/max) is the sm80 kernel's; only partial tiles evaluate the mask, from the
// two keys' bounds each thread keeps in registers. At the end of an item dK and dV
// leave through shared memory and TMA stores; D <= 128 stages them in the dS buffers
// and the dQ staging tiles, so the next item's K and V load meanwhile.
#pragma once

#include <cuda.h>

#include "flashmask_bwd_kernel.cuh"
#include "sm90_primitives.cuh"
#include "sm90_wgmma.cuh"

namespace flashmask {
namespace cuda {

template <int D_>
struct BwdSm90Config {
  static constexpr int D = D_, kBlockM = 64, kStages = 2;
  static constexpr int kConsumers = 2;  // warpgroups of 64 keys
  // Consumers own different keys (D <= 128) or different head-dim halves (D = 256).
  static constexpr bool kSplitKeys = D <= 128;
  static constexpr int kBlockN = kSplitKeys ? 128 : 64;
  static constexpr int kDKVCols = kSplitKeys ? D : D / 2;  // dK/dV columns per consumer
  static constexpr int kThreads = (kConsumers + 1) * 128;
  static constexpr int kProducerRegs = 24, kConsumerRegs = 240;
  // setmaxnreg moves registers within the CTA's launch allocation (65536 / kThreads per
  // thread, rounded down to 8): consumers block forever if the producer frees too few.
  static_assert(kProducerRegs + kConsumerRegs * kConsumers <= (kConsumers + 1) * (65536 / kThreads / 8 * 8),
                "register reallocation exceeds the launch allocation");
  static_assert(D == 64 || D == 128 || D == 256, "head_dim 64, 128 or 256");
  // D=128: consumer c computes dQ[:, 64c..64c+63] over all 128 keys (its SW128 column block
  // of K), so it reads the other consumer's half of dS^T. D=64: each consumer adds dQ over
  // its own 64 keys (twice the reductions). D=256: each consumer holds all of dS^T and
  // computes dQ[:, 128c..] over the 64 keys.
  static constexpr bool kDqAllKeys = D == 128;
  static constexpr int kDqCols = D == 256 ? 128 : 64;  // dQ columns per consumer
  // D <= 128: dQ reaches the fp32 accumulator through an smem staging tile per consumer
  // and TMA reduce-adds; red.global per element pair costs ~40% of the backward's time
  // (perf-notes v9). D=256 keeps red.global (its smem is full).
  static constexpr bool kDqViaTma = D <= 128;
  // D=128: dQ of tile i is issued one tile late, after tile i+1's dS^T is stored and next
  // to tile i+1's dV/dK, and staged while they run: a consumer needs the other's half of
  // dS^T(i) a tile after it was written instead of waiting for it, and the staging costs no
  // time of its own (+6-9% backward, perf-notes v13). The two dS^T buffers (one per tile
  // parity) get full/empty mbarriers for it. D=64 (no exchange) lost 3% with it.
  static constexpr bool kDqOneTileLate = kDqAllKeys;
  // D=256: dQ's 64 accumulators fit only in the registers of dV/dK's A fragments, so dQ is
  // issued after those wgmmas finished (else ptxas serialises every wgmma).
  static constexpr bool kDqAfterDKV = D == 256;
  static constexpr int kDqStageBytes = kDqViaTma ? kBlockM * kDqCols * 4 : 0;  // per consumer
  static constexpr int kColBlocks = D / 64;
  static constexpr int kKVBytes = kBlockN * D * 2, kQBytes = kBlockM * D * 2;
  // dK and dV of an item leave as tiles laid out like sK ([column block][kBlockN keys][128 B],
  // SW128): D <= 128 writes them into the dS buffers and the dQ staging tiles, which are
  // free after the item's last dQ, so the next item's K/V load at once; each consumer's rows
  // land on its own half of each dS buffer and on its own dQ staging blocks, so it may reuse
  // them as soon as its own stores have read them. D = 256 has no spare smem: dK/dV go
  // into sK/sV, and the next K/V wait for the stores.
  static constexpr bool kStageInKV = !kDqViaTma;
  static_assert(kStageInKV || (kKVBytes <= 2 * kBlockN * kBlockM * 2 && kKVBytes <= kConsumers * kDqStageBytes &&
                               kBlockN == 2 * 64 && kBlockM * 128 * 2 == kBlockN * 128),
                "dK/dV staging: dS buffers and dQ staging blocks must hold one consumer's 64 rows");
  static constexpr int kRowBytes = kBlockM * 4;  // lse or rowsum of one query tile
  // Shared memory, byte offsets from a 1024-aligned base.
  static constexpr int kOffK = 0;
  static constexpr int kOffV = kOffK + kKVBytes;
  static constexpr int kOffQ = kOffV + kKVBytes;
  static constexpr int kOffdO = kOffQ + kStages * kQBytes;
  // [2][kBlockN][kBlockM] SW128: per tile parity (D <= 128) or per consumer (D = 256).
  static constexpr int kOffdS = kOffdO + kStages * kQBytes;
  // [cols/32][consumer][kBlockM rows][128 B]: consumer c's block of columns 32j..32j+31 sits
  // where rows 64c.. of column block j of a dV tile staged here go.
  static constexpr int kOffDqStage = kOffdS + 2 * kBlockN * kBlockM * 2;
  static constexpr int kOffL = kOffDqStage + kConsumers * kDqStageBytes;
  static constexpr int kOffDs = kOffL + kStages * kRowBytes;
  static constexpr int kOffBars = kOffDs + kStages * kRowBytes;
  // kv_full, kv_empty, list_full[2], list_empty[2], list_issued[2], q_full[], q_empty[], then
  // ds_full[2], ds_empty[2] (kDqOneTileLate).
  static constexpr int kNumBars = 8 + 2 * kStages + (kDqOneTileLate ? 4 : 0);
  static constexpr int kOffRecords = kOffBars + kNumBars * 8;  // [2] {count, n_block, hk, b, hi, -, -, -}
  static constexpr int kOffScratch = kOffRecords + 2 * 8 * 4;
  static constexpr int kOffList = kOffScratch + 32 * 4;  // [2][m_tiles] ints
  // Warps 1-3 build the query-tile lists (named barrier 4; 1-3 are the consumers').
  static constexpr int kListBarrier = 4, kListBuilders = 96;
  // Bytes besides the two query-tile lists, with alignment slack.
  static constexpr int kSmemFixed = kOffList + 1024;
};

// TMA descriptors (see FwdTensorMaps): q and dout with boxes of kBlockM rows, k and v of
// kBlockN, dk and dv of 64 (one consumer's rows); dq: the fp32 dq accumulator, boxes of
// 32 columns x kBlockM rows (kDqViaTma).
struct BwdTensorMaps {
  CUtensorMap q, dout, k, v, dk, dv, dq;
};

template <typename T, typename Cfg>
__global__ void __launch_bounds__(Cfg::kThreads, 1)
    flashmask_bwd_sm90_kernel(const __grid_constant__ BwdTensorMaps maps, const BwdParams p,
                              const BwdWork w) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  using namespace sm90;
  constexpr int D = Cfg::D, kBlockM = Cfg::kBlockM, kBlockN = Cfg::kBlockN;
  constexpr int kStages = Cfg::kStages, kColBlocks = Cfg::kColBlocks;
  constexpr int DT = Cfg::kDKVCols / 8;  // n8 chunks of this consumer's dK / dV
  constexpr int QT = Cfg::kDqCols / 8;    // n8 chunks of this consumer's dQ
  constexpr int kConsumerThreads = Cfg::kConsumers * 128;

  extern __shared__ char smem_raw[];
  char* smem = smem_raw + ((1024 - (smem_u32(smem_raw) & 1023)) & 1023);
  T* sK = reinterpret_cast<T*>(smem + Cfg::kOffK);
  T* sV = reinterpret_cast<T*>(smem + Cfg::kOffV);
  T* sQ = reinterpret_cast<T*>(smem + Cfg::kOffQ);
  T* sdO = reinterpret_cast<T*>(smem + Cfg::kOffdO);
  char* sdS = smem + Cfg::kOffdS;
  float* sL = reinterpret_cast<float*>(smem + Cfg::kOffL);
  float* sDs = reinterpret_cast<float*>(smem + Cfg::kOffDs);
  uint64_t* kv_full = reinterpret_cast<uint64_t*>(smem + Cfg::kOffBars);
  uint64_t* kv_empty = kv_full + 1;    // both consumers are done with K/V (and its staging)
  uint64_t* list_full = kv_full + 2;   // [2]
  uint64_t* list_empty = kv_full + 4;  // [2]
  uint64_t* list_issued = kv_full + 6;  // [2]: the loader has issued the list's tiles
  uint64_t* q_full = kv_full + 8;
  uint64_t* q_empty = q_full + kStages;
  uint64_t* ds_full = q_empty + kStages;  // kDqOneTileLate: both halves of dS^T[buf] stored
  uint64_t* ds_empty = ds_full + 2;       // both consumers' dQ finished reading dS^T[buf]
  int* sRecords = reinterpret_cast<int*>(smem + Cfg::kOffRecords);
  int* sScratch = reinterpret_cast<int*>(smem + Cfg::kOffScratch);
  TileEntry* sLists = reinterpret_cast<TileEntry*>(smem + Cfg::kOffList);

  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const AttentionShape& s = p.shape;
  const int Sq = s.seqlen_q, Sk = s.seqlen_k, H = s.num_heads;
  const int group = H / s.num_heads_k;
  const int nb = p.mask.num_bounds;
  const int n_tiles = (Sk + kBlockN - 1) / kBlockN;
  const int m_tiles = (Sq + kBlockM - 1) / kBlockM;
  const bool producer = warp < 4;

  if (tid == 0) {
    mbar_init(kv_full, 1);
    mbar_init(kv_empty, Cfg::kConsumers);  // one thread per consumer
    for (int buf = 0; buf < 2; ++buf) {
      mbar_init(list_full + buf, Cfg::kListBuilders);
      mbar_init(list_empty + buf, 1 + kConsumerThreads);  // the loader and every consumer thread
      mbar_init(list_issued + buf, 1);
    }
    for (int st = 0; st < kStages; ++st) {
      mbar_init(q_full + st, 1);
      mbar_init(q_empty + st, kConsumerThreads);
    }
    if constexpr (Cfg::kDqOneTileLate)
      for (int buf = 0; buf < 2; ++buf) {
        mbar_init(ds_full + buf, kConsumerThreads);
        mbar_init(ds_empty + buf, kConsumerThreads);
      }
    fence_barrier_init();
  }
  __syncthreads();

  // The CTA's lists, in order: for each item it takes, one per query head hi of the
  // group. The l-th goes to buffer l & 1 (used for the (l >> 1)-th time) with its
  // record {count, n_block, hk, b, hi}; count -1 once the work is exhausted.
  struct List {
    int count, n_block, hk, b, hi;
    const TileEntry* tiles;  // ascending query tiles
  };
  auto wait_list = [&](int l) {
    const int buf = l & 1;
    mbar_wait(list_full + buf, (l >> 1) & 1);
    const int* rec = sRecords + 8 * buf;
    return List{rec[0], rec[1], rec[2], rec[3], rec[4], sLists + buf * m_tiles};
  };
  auto release_list = [&](int l) { mbar_arrive(list_empty + (l & 1)); };
  auto bhm_of = [&](int b, int h) {
    return static_cast<int64_t>(b) * p.mask.num_mask_heads + mask_head_for(p.mask, s, h);
  };

  if (producer) {  // ------------------------------------------------ producer
    regs_dealloc<Cfg::kProducerRegs>();
    if (warp > 0) {  // item fetch and list builders
      const int ltid = tid - 32;
      auto sync = [] { named_barrier_sync(Cfg::kListBarrier, Cfg::kListBuilders); };
      const int items = n_tiles * s.num_heads_k * s.batch;  // grid order: key blocks fastest
      int n_block = 0, hk = 0, b = 0, hi = group;  // hi == group: the next list needs a new item
      for (int l = 0;; ++l, ++hi) {
        const int buf = l & 1;
        // Just in time: the next list once the loader has issued the last tile of this one.
        // An item taken earlier would start long after its neighbours (a CTA in a long item
        // would hold it), when their Q, dO and dQ rows have left L2.
        if (l > 0) mbar_wait(list_issued + ((l - 1) & 1), ((l - 1) >> 1) & 1);
        mbar_wait(list_empty + buf, ((l >> 1) & 1) ^ 1);
        if (hi == group) {
          const int item = take_work_item(w.next_item, sScratch, ltid, sync);
          if (item >= items) {
            if (ltid == 0) sRecords[8 * buf] = -1;
            mbar_arrive(list_full + buf);
            break;
          }
          n_block = item % n_tiles, hk = item / n_tiles % s.num_heads_k, b = item / n_tiles / s.num_heads_k;
          hi = 0;
          if (ltid == 0) {  // K and V into L2 now: the loader brings them once this item's turn comes
            tma_prefetch_tile_l2<kColBlocks>(&maps.k, n_block * kBlockN, hk, b);
            tma_prefetch_tile_l2<kColBlocks>(&maps.v, n_block * kBlockN, hk, b);
          }
        }
        const int n0 = n_block * kBlockN;
        const int64_t bhm = bhm_of(b, hk * group + hi);
        const TileBounds tbn = load_tile_bounds(w.tile_bounds + bhm * n_tiles + n_block);
        const int count = list_query_tiles<Cfg::kListBuilders, kBlockM>(
            sLists + buf * m_tiles, sScratch, p.mask, Sq, Sk, bhm, n0, min(kBlockN, Sk - n0), kBlockN, tbn,
            ltid, sync);
        if (ltid == 0) {
          int* rec = sRecords + 8 * buf;
          rec[0] = count, rec[1] = n_block, rec[2] = hk, rec[3] = b, rec[4] = hi;
        }
        mbar_arrive(list_full + buf);  // release: this thread's list entries (and the record)
      }
    } else if (lane == 0) {  // loader
      prefetch_tensor_map(&maps.q);
      prefetch_tensor_map(&maps.dout);
      prefetch_tensor_map(&maps.k);
      prefetch_tensor_map(&maps.v);
      int gi = 0, item_k = 0;  // the ring's position, the CTA's items so far
      for (int l = 0;; ++l) {
        const List ls = wait_list(l);
        if (ls.count < 0) break;
        // K/V of a new item once both consumers are done with the last one's (after this
        // item's first Q/dO tile is on its way, whose ring slot frees earlier).
        auto load_kv = [&]() {
          mbar_wait(kv_empty, (item_k & 1) ^ 1);
          mbar_arrive_expect_tx(kv_full, 2 * Cfg::kKVBytes);
          tma_load_tile<kColBlocks, kBlockN>(sK, &maps.k, kv_full, ls.n_block * kBlockN, ls.hk, ls.b);
          tma_load_tile<kColBlocks, kBlockN>(sV, &maps.v, kv_full, ls.n_block * kBlockN, ls.hk, ls.b);
          ++item_k;
        };
        const int h = ls.hk * group + ls.hi;
        const int64_t bh = static_cast<int64_t>(ls.b) * H + h;
        const float* gL = w.lse_log2 + bh * w.sq_pad;
        const float* gDs = w.dsum + bh * w.sq_pad;
        for (int i = 0; i < ls.count; ++i, ++gi) {
          const int st = gi % kStages, phase = (gi / kStages) & 1;
          const int m = ls.tiles[i].index();
          mbar_wait(q_empty + st, phase ^ 1);
          mbar_arrive_expect_tx(q_full + st, 2 * Cfg::kQBytes + 2 * Cfg::kRowBytes);
          tma_load_tile<kColBlocks, kBlockM>(sQ + st * kColBlocks * kBlockM * 64, &maps.q, q_full + st,
                                             m * kBlockM, h, ls.b);
          tma_load_tile<kColBlocks, kBlockM>(sdO + st * kColBlocks * kBlockM * 64, &maps.dout,
                                             q_full + st, m * kBlockM, h, ls.b);
          bulk_load(sL + st * kBlockM, gL + m * kBlockM, Cfg::kRowBytes, q_full + st);
          bulk_load(sDs + st * kBlockM, gDs + m * kBlockM, Cfg::kRowBytes, q_full + st);
          if (i == 0 && ls.hi == 0) load_kv();
        }
        if (ls.count == 0 && ls.hi == 0) load_kv();
        mbar_arrive(list_issued + (l & 1));  // the builders may take the next list
        release_list(l);
      }
    }
    return;
  }

  // ---------------------------------------------------------------- consumers
  regs_alloc<Cfg::kConsumerRegs>();
  // Warpgroup cw owns keys key_off .. +63 of the block and columns dkv_col0 .. of
  // dK/dV, dq_col0 .. of dQ; this thread's accumulator rows are keys key0 and
  // key0 + 8 (S^T, dK, dV) and query rows wrow, wrow + 8 of the dQ tile.
  const int cw = warp / 4 - 1;
  const int wrow = (warp & 3) * 16 + (lane >> 2);
  const int t = lane & 3;
  const int key_off = Cfg::kSplitKeys ? cw * 64 : 0;
  const int dkv_col0 = Cfg::kSplitKeys ? 0 : cw * Cfg::kDKVCols;
  const int dq_col0 = D == 64 ? 0 : cw * Cfg::kDqCols;
  const bool dq_issuer = (warp & 3) == 0 && lane == 0;  // issues this consumer's bulk copies
  const bool causal = p.mask.causal;
  const int form = mask_form(causal, nb);
  const int offset = Sk - Sq;
  const float scale_log2 = p.softmax_scale * kLog2e;
  const uint32_t k_addr = smem_u32(sK), v_addr = smem_u32(sV);

  // dQ[:, dq_col0..] = dS K over the key rows dq_key0.. of the dS^T buffer at ds_addr and K.
  constexpr int kDqKeys = Cfg::kDqAllKeys ? kBlockN : 64;
  const int dq_key0 = Cfg::kDqAllKeys ? 0 : key_off;
  const uint64_t dq_k_desc = sw128_desc(k_addr + dq_col0 / 64 * kBlockN * 128 + dq_key0 * 128, kBlockN * 128);
  float acc_dq[QT * 4];
  auto issue_dq = [&](uint32_t ds_addr) {
    const uint64_t ds_desc = sw128_desc(ds_addr + dq_key0 * 128, 0);
    wgmma_fence();
#pragma unroll
    for (int kk = 0; kk < kDqKeys / 16; ++kk)
      Wgmma<T, Cfg::kDqCols>::template ss<1, 1>(acc_dq, desc_advance(ds_desc, kk * 16 * 128),
                                                desc_advance(dq_k_desc, kk * 16 * 128), kk > 0);
    wgmma_commit();
  };
  // This consumer's dQ tile of query tile m, head h, batch b -> its staging blocks (SW128,
  // 32 columns each) -> one TMA reduce-add per block. The issuer first makes sure its
  // previous bulk copies have read the staging; the barriers order it with the writes.
  auto stage_dq_tma = [&](int m, int h, int b) {
    char* stage = smem + Cfg::kOffDqStage + cw * kBlockM * 128;  // block j at + j * 2 * kBlockM * 128
    if (dq_issuer) bulk_wait_read<0>();
    __syncwarp();  // bar.sync is warp-aligned: the issuer's warp must be converged
    named_barrier_sync(2 + cw, 128);
#pragma unroll
    for (int r = 0; r < 2; ++r)
#pragma unroll
      for (int j = 0; j < QT; ++j) {
        const int row = wrow + 8 * r, chunk = (j & 3) * 2 + (t >> 1);  // 16-byte chunk
        const uint32_t off = (j >> 2) * 2 * kBlockM * 128 + sw128_offset(row, chunk) + (t & 1) * 8;
        *reinterpret_cast<float2*>(stage + off) = make_float2(acc_dq[4 * j + 2 * r], acc_dq[4 * j + 2 * r + 1]);
      }
    fence_proxy_async_smem();
    named_barrier_sync(2 + cw, 128);
    if (dq_issuer) {
#pragma unroll
      for (int blk = 0; blk < Cfg::kDqCols / 32; ++blk)
        tma_reduce_add_4d(&maps.dq, stage + blk * 2 * kBlockM * 128, dq_col0 + 32 * blk, m * kBlockM, h, b);
      bulk_commit();
    }
    __syncwarp();  // converged again before the next warp-aligned wgmma
  };
  // kDqOneTileLate: the tile whose dQ is still to be issued (global index, query tile, head).
  int late_gi = -1, late_m = 0, late_h = 0;
  // dS^T buffer of tile gi: one per tile parity when the consumers share it (D <= 128), else
  // one per consumer (its last reader, this consumer's dQ of the previous tile, was waited for).
  auto ds_buf = [&](int gi) { return sdS + (Cfg::kSplitKeys ? (gi & 1) : cw) * kBlockN * kBlockM * 2; };
  // Issues the late tile's dQ once both halves of its dS^T are in smem.
  auto issue_late_dq = [&]() {
    mbar_wait(ds_full + (late_gi & 1), (late_gi >> 1) & 1);
    issue_dq(smem_u32(ds_buf(late_gi)));
  };

  float acc_dk[DT * 4], acc_dv[DT * 4];
  int done = 0, item_k = 0;  // query tiles so far (the ring's position), items so far
  for (int l = 0;; ++l) {
    const List ls = wait_list(l);
    if (ls.count < 0) break;
    const int b = ls.b, h = ls.hk * group + ls.hi;
    const int n0 = ls.n_block * kBlockN;
    const int key0 = n0 + key_off + wrow;
    if (ls.hi == 0) {  // a new item: its K/V, zero dK/dV
#pragma unroll
      for (int i = 0; i < DT * 4; ++i) acc_dk[i] = acc_dv[i] = 0.f;
      mbar_wait(kv_full, item_k & 1);
    }
    const KeyRowBounds kb =
        load_key_row_bounds(p.mask.startend_row_indices + bhm_of(b, h) * Sk * nb, nb, form, key0, Sk, offset);
    const int count = ls.count;

    for (int i = 0; i < count; ++i) {
      const int gi = done + i, st = gi % kStages, phase = (gi / kStages) & 1;
      const int m = ls.tiles[i].index(), kind = ls.tiles[i].kind();
      const uint32_t q_addr = smem_u32(sQ + st * kColBlocks * kBlockM * 64);
      const uint32_t do_addr = smem_u32(sdO + st * kColBlocks * kBlockM * 64);
      mbar_wait(q_full + st, phase);

      // S^T = K_c Q^T and dP^T = V_c dO^T: all operands K-major, k steps of 16 = 32 bytes
      // inside a 128-byte row of one column block.
      auto key_by_query = [&](float(&acc)[32], uint32_t keys_addr, uint32_t queries_addr) {
        const uint64_t keys = sw128_desc(keys_addr + key_off * 128, 0);
        const uint64_t queries = sw128_desc(queries_addr, 0);
#pragma unroll
        for (int ks = 0; ks < D / 16; ++ks) {
          const uint32_t off_n = (ks >> 2) * kBlockN * 128 + (ks & 3) * 32;
          const uint32_t off_m = (ks >> 2) * kBlockM * 128 + (ks & 3) * 32;
          Wgmma<T, 64>::template ss<0, 0>(acc, desc_advance(keys, off_n), desc_advance(queries, off_m),
                                          ks > 0);
        }
      };
      float acc_s[32], acc_dp[32];
      wgmma_fence();
      key_by_query(acc_s, k_addr, q_addr);
      key_by_query(acc_dp, v_addr, do_addr);
      wgmma_commit();
      wgmma_wait<0>();
      fence_operands(acc_s);
      fence_operands(acc_dp);

      if (kind == static_cast<int>(TileKind::kPartial))
        mask_partial_keys<8>(kb, form, m * kBlockM, t, [&](int j, int r, int c) { acc_s[4 * j + 2 * r + c] = -INFINITY; });
      // P^T and dS^T, packed as wgmma A fragments (16 queries per k step).
      const float* l_s = sL + st * kBlockM;
      const float* ds_s = sDs + st * kBlockM;
#pragma unroll
      for (int j = 0; j < 8; ++j)
#pragma unroll
        for (int c = 0; c < 2; ++c) {
          const int lq = j * 8 + 2 * t + c;
          const float L = l_s[lq], Dq = ds_s[lq];
#pragma unroll
          for (int r = 0; r < 2; ++r) {
            const float pv = exp2f(fmaf(acc_s[4 * j + 2 * r + c], scale_log2, -L));
            acc_s[4 * j + 2 * r + c] = pv;
            acc_dp[4 * j + 2 * r + c] = pv * (acc_dp[4 * j + 2 * r + c] - Dq);
          }
        }
      uint32_t pa[4][4], dsa[4][4];
#pragma unroll
      for (int kk = 0; kk < 4; ++kk)
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          pa[kk][e] = Pack<T>::two(acc_s[8 * kk + 2 * e], acc_s[8 * kk + 2 * e + 1]);
          dsa[kk][e] = Pack<T>::two(acc_dp[8 * kk + 2 * e], acc_dp[8 * kk + 2 * e + 1]);
        }
      // dS^T -> smem as [key][64 queries] SW128 (the MN-major A of dQ = dS K). A shared
      // buffer is reused two tiles later: kDqOneTileLate, once both consumers' dQ read it
      // (ds_empty); D=64, once this consumer's dQ did (waited for in the previous tile).
      if constexpr (Cfg::kDqOneTileLate)
        if (gi >= 2) mbar_wait(ds_empty + (gi & 1), ((gi >> 1) - 1) & 1);
      char* ds = ds_buf(gi);
#pragma unroll
      for (int kk = 0; kk < 4; ++kk)
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const int row = key_off + wrow + 8 * (e & 1);  // key within the block
          const int chunk = 2 * kk + (e >> 1);           // 8 queries
          const uint32_t off = sw128_offset(row, chunk) + t * 4;
          *reinterpret_cast<uint32_t*>(ds + off) = dsa[kk][e];
        }
      fence_proxy_async_smem();

      // dV += P^T dO, dK += dS^T Q: B = this consumer's columns of dO / Q (MN-major,
      // SW128 column blocks kBlockM rows apart), k steps of 16 queries.
      auto issue_dkv = [&]() {
        const uint32_t dkv_off = dkv_col0 / 64 * kBlockM * 128;
        const uint64_t do_desc = sw128_desc(do_addr + dkv_off, kBlockM * 128);
        const uint64_t q_desc = sw128_desc(q_addr + dkv_off, kBlockM * 128);
        wgmma_fence();
#pragma unroll
        for (int kk = 0; kk < 4; ++kk)
          Wgmma<T, Cfg::kDKVCols>::template rs<1>(acc_dv, pa[kk], desc_advance(do_desc, kk * 16 * 128), 1);
#pragma unroll
        for (int kk = 0; kk < 4; ++kk)
          Wgmma<T, Cfg::kDKVCols>::template rs<1>(acc_dk, dsa[kk], desc_advance(q_desc, kk * 16 * 128), 1);
        wgmma_commit();
      };
      if constexpr (Cfg::kDqOneTileLate) {
        mbar_arrive(ds_full + (gi & 1));
        // Issue and wait stay in one branch: ptxas serialises every wgmma when a wait<1>
        // may follow a path that issued only dV/dK.
        if (late_gi >= 0) {
          issue_late_dq();
          issue_dkv();
          wgmma_wait<1>();  // the late dQ, committed first, is done: stage it under dV/dK
          fence_operands(acc_dq);
          mbar_arrive(ds_empty + (late_gi & 1));
          stage_dq_tma(late_m, late_h, b);
        } else {
          issue_dkv();
        }
        late_gi = gi, late_m = m, late_h = h;
        wgmma_wait<0>();
        fence_operands(acc_dv);
        fence_operands(acc_dk);
        mbar_arrive(q_empty + st);  // Q, dO, lse and rowsum of this stage are free
      } else {  // dQ over this consumer's own dS^T rows, right after dV/dK
        issue_dkv();
        if constexpr (Cfg::kDqAfterDKV) wgmma_wait<0>();
        issue_dq(smem_u32(ds));
        wgmma_wait<0>();
        fence_operands(acc_dv);
        fence_operands(acc_dk);
        fence_operands(acc_dq);
        mbar_arrive(q_empty + st);
        if constexpr (Cfg::kDqViaTma) {
          stage_dq_tma(m, h, b);
        } else {
          float* gdq = w.dq_accum + ((static_cast<int64_t>(b) * H + h) * w.sq_pad + m * kBlockM + wrow) * D + dq_col0;
#pragma unroll
          for (int r = 0; r < 2; ++r)
#pragma unroll
            for (int j = 0; j < QT; ++j)
              red_add_f32x2(gdq + 8 * r * D + j * 8 + 2 * t, acc_dq[4 * j + 2 * r],
                            acc_dq[4 * j + 2 * r + 1]);
        }
      }
    }
    release_list(l);  // this list is no longer read
    done += count;
    if (ls.hi < group - 1) continue;

    // ---- the item's end: the last dQ, then dK and dV out.
    if constexpr (Cfg::kDqOneTileLate)
      if (late_gi >= 0) {
        issue_late_dq();
        wgmma_wait<0>();
        fence_operands(acc_dq);
        mbar_arrive(ds_empty + (late_gi & 1));  // the next item's tiles reuse the buffer
        stage_dq_tma(late_m, late_h, b);
        late_gi = -1;
      }
    if constexpr (!Cfg::kStageInKV)
      if (dq_issuer) bulk_wait_read<0>();  // this consumer's dQ staging blocks are free
    // dK = scale * dS^T Q, dV = P^T dO, through shared memory and TMA stores: the 4-byte
    // global stores of the accumulators cost 5-7% of the backward where a key block has
    // few query tiles (perf-notes v14). Past this barrier neither consumer reads K, V or
    // the dS buffers of this item any more.
    __syncwarp();
    named_barrier_sync(1, kConsumerThreads);
    if constexpr (!Cfg::kStageInKV)
      if (dq_issuer) mbar_arrive(kv_empty);  // the loader may bring the next item's K/V
    char* sdK = Cfg::kStageInKV ? smem + Cfg::kOffK : sdS;
    char* sdV = Cfg::kStageInKV ? smem + Cfg::kOffV : smem + Cfg::kOffDqStage;
#pragma unroll
    for (int r = 0; r < 2; ++r)
#pragma unroll
      for (int j = 0; j < DT; ++j) {
        const int row = key_off + wrow + 8 * r;
        const uint32_t off = (dkv_col0 / 64 + j / 8) * kBlockN * 128 + sw128_offset(row, j & 7) + t * 4;
        *reinterpret_cast<uint32_t*>(sdK + off) = Pack<T>::two(acc_dk[4 * j + 2 * r] * p.softmax_scale,
                                                             acc_dk[4 * j + 2 * r + 1] * p.softmax_scale);
        *reinterpret_cast<uint32_t*>(sdV + off) = Pack<T>::two(acc_dv[4 * j + 2 * r], acc_dv[4 * j + 2 * r + 1]);
      }
    fence_proxy_async_smem();
    __syncwarp();
    named_barrier_sync(2 + cw, 128);  // this consumer's rows of both tiles are written
    if (dq_issuer) {
#pragma unroll
      for (int blk = dkv_col0 / 64; blk < (dkv_col0 + Cfg::kDKVCols) / 64; ++blk) {
        const uint32_t src = blk * kBlockN * 128 + key_off * 128;  // 1024-aligned: same swizzle phase
        tma_store_4d(&maps.dk, sdK + src, blk * 64, n0 + key_off, ls.hk, b);
        tma_store_4d(&maps.dv, sdV + src, blk * 64, n0 + key_off, ls.hk, b);
      }
      bulk_commit();
      bulk_wait_read<0>();  // the staging may be reused once the stores have read it
      if constexpr (Cfg::kStageInKV) mbar_arrive(kv_empty);
    }
    __syncwarp();
    named_barrier_sync(2 + cw, 128);  // this consumer may rewrite its staged rows
    ++item_k;
  }
  if (dq_issuer) bulk_wait<0>();  // the last reduce-adds and stores are complete
#endif
}

}  // namespace cuda
}  // namespace flashmask
