// FlashMask backward for Hopper (sm90a): dK, dV and dQ (fp32 reductions) with
// TMA and wgmma, warp-specialised like the sm90 forward.
//
// One CTA per (key block, key head, batch), three warpgroups:
//  - producer (warpgroup 0): warp 0 loads K and V of the key block once by TMA;
//    then, for each query head of the GQA group and each listed query tile of 64
//    rows, Q and dO by TMA plus the tile's lse*log2(e) and rowsum(dO*O) by 1-D bulk
//    copies, into a 2-stage ring with full/empty mbarriers. Warps 1-3 build each
//    head's query-tile list and hand it over through a full/empty mbarrier pair.
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
// two keys' bounds each thread keeps in registers.
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
  static_assert(2 * kKVBytes <= 2 * kStages * kQBytes, "dK and dV are staged in the Q/dO ring");
  static constexpr int kRowBytes = kBlockM * 4;  // lse or rowsum of one query tile
  // Shared memory, byte offsets from a 1024-aligned base.
  static constexpr int kOffK = 0;
  static constexpr int kOffV = kOffK + kKVBytes;
  static constexpr int kOffQ = kOffV + kKVBytes;
  static constexpr int kOffdO = kOffQ + kStages * kQBytes;
  // [2][kBlockN][kBlockM] SW128: per tile parity (D <= 128) or per consumer (D = 256).
  static constexpr int kOffdS = kOffdO + kStages * kQBytes;
  static constexpr int kOffDqStage = kOffdS + 2 * kBlockN * kBlockM * 2;  // [consumer][cols/32] SW128
  static constexpr int kOffL = kOffDqStage + kConsumers * kDqStageBytes;
  static constexpr int kOffDs = kOffL + kStages * kRowBytes;
  static constexpr int kOffBars = kOffDs + kStages * kRowBytes;
  // kv_full, list_full/empty, q_full[], q_empty[], then ds_full[2], ds_empty[2] (kDqOneTileLate).
  static constexpr int kNumBars = 3 + 2 * kStages + (kDqOneTileLate ? 4 : 0);
  static constexpr int kOffCount = kOffBars + kNumBars * 8;  // the list's length
  static constexpr int kOffScratch = kOffCount + 16;
  static constexpr int kOffList = kOffScratch + 32 * 4;
  // Warps 1-3 build the query-tile lists (named barrier 4; 1-3 are the consumers').
  static constexpr int kListBarrier = 4, kListBuilders = 96;
  // Bytes besides the query-tile list (m_tiles ints), with alignment slack.
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
  uint64_t* list_full = kv_full + 1;
  uint64_t* list_empty = kv_full + 2;
  uint64_t* q_full = kv_full + 3;
  uint64_t* q_empty = q_full + kStages;
  uint64_t* ds_full = q_empty + kStages;  // kDqOneTileLate: both halves of dS^T[buf] stored
  uint64_t* ds_empty = ds_full + 2;       // both consumers' dQ finished reading dS^T[buf]
  int* sCount = reinterpret_cast<int*>(smem + Cfg::kOffCount);
  int* sScratch = reinterpret_cast<int*>(smem + Cfg::kOffScratch);
  int* sList = reinterpret_cast<int*>(smem + Cfg::kOffList);

  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int n_block = blockIdx.x, hk = blockIdx.y, b = blockIdx.z;
  const AttentionShape& s = p.shape;
  const int Sq = s.seqlen_q, Sk = s.seqlen_k, H = s.num_heads;
  const int group = H / s.num_heads_k;
  const int n0 = n_block * kBlockN;
  const int keys_valid = min(kBlockN, Sk - n0);
  const int nb = p.mask.num_bounds;
  const int n_tiles = (Sk + kBlockN - 1) / kBlockN;
  const bool producer = warp < 4;

  if (tid == 0) {
    mbar_init(kv_full, 1);
    mbar_init(list_full, Cfg::kListBuilders);
    mbar_init(list_empty, 1 + Cfg::kConsumers * 128);  // the loader and every consumer thread
    for (int st = 0; st < kStages; ++st) {
      mbar_init(q_full + st, 1);
      mbar_init(q_empty + st, Cfg::kConsumers * 128);  // every consumer thread
    }
    if constexpr (Cfg::kDqOneTileLate)
      for (int buf = 0; buf < 2; ++buf) {
        mbar_init(ds_full + buf, Cfg::kConsumers * 128);
        mbar_init(ds_empty + buf, Cfg::kConsumers * 128);
      }
    fence_barrier_init();
  }
  __syncthreads();

  // Per query head hi of the group, the list of its query tiles: built by warps 1-3
  // into sList (one buffer: the next head's list waits until every reader released
  // this one), its length in sCount.
  auto wait_list = [&](int hi) {
    mbar_wait(list_full, hi & 1);
    return *sCount;
  };
  auto release_list = [&]() { mbar_arrive(list_empty); };
  auto bhm_of = [&](int hi) {
    return static_cast<int64_t>(b) * p.mask.num_mask_heads + mask_head_for(p.mask, s, hk * group + hi);
  };

  if (producer) {  // ------------------------------------------------ producer
    regs_dealloc<Cfg::kProducerRegs>();
    if (warp > 0) {  // list builders
      const int ltid = tid - 32;
      for (int hi = 0; hi < group; ++hi) {
        const int64_t bhm = bhm_of(hi);
        const TileBounds tbn = load_tile_bounds(w.tile_bounds + bhm * n_tiles + n_block);
        mbar_wait(list_empty, (hi & 1) ^ 1);
        const int count = list_query_tiles<Cfg::kListBuilders, kBlockM>(
            sList, sScratch, p.mask, Sq, Sk, bhm, n0, keys_valid, kBlockN, tbn, ltid,
            [] { named_barrier_sync(Cfg::kListBarrier, Cfg::kListBuilders); });
        if (ltid == 0) *sCount = count;
        mbar_arrive(list_full);  // release: this thread's list entries (and the count)
      }
    } else if (lane == 0) {  // loader
      prefetch_tensor_map(&maps.q);
      prefetch_tensor_map(&maps.dout);
      mbar_arrive_expect_tx(kv_full, 2 * Cfg::kKVBytes);
      tma_load_tile<kColBlocks, kBlockN>(sK, &maps.k, kv_full, n0, hk, b);
      tma_load_tile<kColBlocks, kBlockN>(sV, &maps.v, kv_full, n0, hk, b);
      int done = 0;  // query tiles of earlier heads: the ring's position
      for (int hi = 0; hi < group; ++hi) {
        const int count = wait_list(hi);
        const int h = hk * group + hi;
        const int64_t bh = static_cast<int64_t>(b) * H + h;
        const float* gL = w.lse_log2 + bh * w.sq_pad;
        const float* gDs = w.dsum + bh * w.sq_pad;
        for (int i = 0; i < count; ++i) {
          const int gi = done + i, st = gi % kStages, phase = (gi / kStages) & 1;
          const int m = sList[i] & 0xffffff;
          mbar_wait(q_empty + st, phase ^ 1);
          mbar_arrive_expect_tx(q_full + st, 2 * Cfg::kQBytes + 2 * Cfg::kRowBytes);
          tma_load_tile<kColBlocks, kBlockM>(sQ + st * kColBlocks * kBlockM * 64, &maps.q, q_full + st,
                                             m * kBlockM, h, b);
          tma_load_tile<kColBlocks, kBlockM>(sdO + st * kColBlocks * kBlockM * 64, &maps.dout,
                                             q_full + st, m * kBlockM, h, b);
          bulk_load(sL + st * kBlockM, gL + m * kBlockM, Cfg::kRowBytes, q_full + st);
          bulk_load(sDs + st * kBlockM, gDs + m * kBlockM, Cfg::kRowBytes, q_full + st);
        }
        release_list();
        done += count;
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
  const int key0 = n0 + key_off + wrow;
  const bool dq_issuer = (warp & 3) == 0 && lane == 0;  // issues this consumer's dQ reduce-adds
  const bool causal = p.mask.causal;
  const int form = mask_form(causal, nb);
  const int offset = Sk - Sq;
  const float scale_log2 = p.softmax_scale * kLog2e;
  const uint32_t k_addr = smem_u32(sK), v_addr = smem_u32(sV);

  float acc_dk[DT * 4], acc_dv[DT * 4];
#pragma unroll
  for (int i = 0; i < DT * 4; ++i) acc_dk[i] = acc_dv[i] = 0.f;
  mbar_wait(kv_full, 0);

  // dQ[:, dq_col0..] = dS K over the key rows dq_key0.. of the dS^T buffer at ds_addr and K.
  constexpr int kDqKeys = Cfg::kDqAllKeys ? kBlockN : 64;
  const int dq_key0 = Cfg::kDqAllKeys ? 0 : key_off;
  const uint32_t dq_k_addr = k_addr + dq_col0 / 64 * kBlockN * 128;
  float acc_dq[QT * 4];
  auto issue_dq = [&](uint32_t ds_addr) {
    wgmma_fence();
#pragma unroll
    for (int kk = 0; kk < kDqKeys / 16; ++kk)
      Wgmma<T, Cfg::kDqCols>::template ss<1, 1>(
          acc_dq, sw128_desc(ds_addr + (dq_key0 + kk * 16) * 128, 0),
          sw128_desc(dq_k_addr + (dq_key0 + kk * 16) * 128, kBlockN * 128), kk > 0);
    wgmma_commit();
  };
  // This consumer's dQ tile of query tile m, head h -> its staging tile (SW128 blocks of 32
  // columns) -> one TMA reduce-add per block. The issuer first makes sure the previous
  // tile's reduce has read the staging; the barriers order it with the writes.
  auto stage_dq_tma = [&](int m, int h) {
    char* stage = smem + Cfg::kOffDqStage + cw * Cfg::kDqStageBytes;
    if (dq_issuer) bulk_wait_read<0>();
    __syncwarp();  // bar.sync is warp-aligned: the issuer's warp must be converged
    named_barrier_sync(2 + cw, 128);
#pragma unroll
    for (int r = 0; r < 2; ++r)
#pragma unroll
      for (int j = 0; j < QT; ++j) {
        const int row = wrow + 8 * r, chunk = (j & 3) * 2 + (t >> 1);  // 16-byte chunk
        const uint32_t off = (j >> 2) * kBlockM * 128 + sw128_offset(row, chunk) + (t & 1) * 8;
        *reinterpret_cast<float2*>(stage + off) = make_float2(acc_dq[4 * j + 2 * r], acc_dq[4 * j + 2 * r + 1]);
      }
    fence_proxy_async_smem();
    named_barrier_sync(2 + cw, 128);
    if (dq_issuer) {
#pragma unroll
      for (int blk = 0; blk < Cfg::kDqCols / 32; ++blk)
        tma_reduce_add_4d(&maps.dq, stage + blk * kBlockM * 128, dq_col0 + 32 * blk, m * kBlockM, h, b);
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

  int done = 0;
  for (int hi = 0; hi < group; ++hi) {
    const int h = hk * group + hi;
    const int64_t bhm = bhm_of(hi);
    const int64_t bh = static_cast<int64_t>(b) * H + h;
    const KeyRowBounds kb = load_key_row_bounds(p.mask.startend_row_indices + bhm * Sk * nb, nb, key0, Sk);
    float* gdq_head = w.dq_accum + bh * w.sq_pad * D + dq_col0;
    const int count = wait_list(hi);

    for (int i = 0; i < count; ++i) {
      const int gi = done + i, st = gi % kStages, phase = (gi / kStages) & 1;
      const int m = sList[i] & 0xffffff, kind = sList[i] >> 24;
      const uint32_t q_addr = smem_u32(sQ + st * kColBlocks * kBlockM * 64);
      const uint32_t do_addr = smem_u32(sdO + st * kColBlocks * kBlockM * 64);
      mbar_wait(q_full + st, phase);

      // S^T = K_c Q^T and dP^T = V_c dO^T: all operands K-major, k steps of 16 = 32 bytes
      // inside a 128-byte row of one column block.
      auto key_by_query = [&](float(&acc)[32], uint32_t keys_addr, uint32_t queries_addr) {
#pragma unroll
        for (int ks = 0; ks < D / 16; ++ks) {
          const uint32_t off_n = (ks >> 2) * kBlockN * 128 + key_off * 128 + (ks & 3) * 32;
          const uint32_t off_m = (ks >> 2) * kBlockM * 128 + (ks & 3) * 32;
          Wgmma<T, 64>::template ss<0, 0>(acc, sw128_desc(keys_addr + off_n, 0),
                                          sw128_desc(queries_addr + off_m, 0), ks > 0);
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
        mask_partial_keys<8>(form, kb, key0, m * kBlockM, t, offset,
                             [&](int j, int r, int c) { acc_s[4 * j + 2 * r + c] = -INFINITY; });
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
        wgmma_fence();
#pragma unroll
        for (int kk = 0; kk < 4; ++kk)
          Wgmma<T, Cfg::kDKVCols>::template rs<1>(
              acc_dv, pa[kk], sw128_desc(do_addr + dkv_off + kk * 16 * 128, kBlockM * 128), 1);
#pragma unroll
        for (int kk = 0; kk < 4; ++kk)
          Wgmma<T, Cfg::kDKVCols>::template rs<1>(
              acc_dk, dsa[kk], sw128_desc(q_addr + dkv_off + kk * 16 * 128, kBlockM * 128), 1);
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
          stage_dq_tma(late_m, late_h);
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
          stage_dq_tma(m, h);
        } else {
          float* gdq = gdq_head + static_cast<int64_t>(m * kBlockM + wrow) * D;
#pragma unroll
          for (int r = 0; r < 2; ++r)
#pragma unroll
            for (int j = 0; j < QT; ++j)
              red_add_f32x2(gdq + 8 * r * D + j * 8 + 2 * t, acc_dq[4 * j + 2 * r],
                            acc_dq[4 * j + 2 * r + 1]);
        }
      }
    }
    release_list();  // this head's list is no longer read
    done += count;
  }

  if constexpr (Cfg::kDqOneTileLate)
    if (late_gi >= 0) {  // the last tile's dQ
      issue_late_dq();
      wgmma_wait<0>();
      fence_operands(acc_dq);
      stage_dq_tma(late_m, late_h);
    }
  if constexpr (Cfg::kDqViaTma)
    if (dq_issuer) bulk_wait<0>();  // the reduce-adds are done with the staging tile

  // dK = scale * dS^T Q, dV = P^T dO, through shared memory and TMA stores: the 4-byte
  // global stores of the accumulators cost 5-7% of the backward where a key block has few
  // query tiles (perf-notes v14). Once both consumers are past their last tile, the Q/dO
  // ring is free: dK and dV go there as SW128 tiles like sK, and each consumer's issuer
  // stores its blocks of 64 rows x 64 columns (TMA skips rows beyond Sk).
  named_barrier_sync(1, Cfg::kConsumers * 128);
  char* sdK = smem + Cfg::kOffQ;
  char* sdV = sdK + Cfg::kKVBytes;
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
  named_barrier_sync(2 + cw, 128);  // this consumer's part of both tiles is written
  if (dq_issuer) {
#pragma unroll
    for (int blk = dkv_col0 / 64; blk < (dkv_col0 + Cfg::kDKVCols) / 64; ++blk) {
      const uint32_t src = blk * kBlockN * 128 + key_off * 128;  // 1024-aligned: same swizzle phase
      tma_store_4d(&maps.dk, sdK + src, blk * 64, n0 + key_off, hk, b);
      tma_store_4d(&maps.dv, sdV + src, blk * 64, n0 + key_off, hk, b);
    }
    bulk_commit();
    bulk_wait_read<0>();  // the CTA's shared memory must outlive the stores' reads
  }
#endif
}

}  // namespace cuda
}  // namespace flashmask
