// FlashMask forward kernel for Hopper (sm90a): warp-specialised, TMA + wgmma,
// persistent.
//
// One CTA per SM takes work items (a 128-row query block of one (batch, head)) in
// the longest-first order of tile_scheduler.cuh until none is left; four roles:
//  - scheduler (warps 2-3 of warpgroup 0): takes the next item from the global
//    counter and builds its key-tile list (skip / unmasked / partial, from the
//    per-tile min/max of the bounds, as in the sm80 kernel) into one of two list
//    buffers, so that the next item's list is ready while this one runs;
//  - loader (warp 0): streams the item's Q tile (kQStages buffers, so the next
//    item's Q arrives during this one's last tiles) and the K and V tiles of its
//    listed key tiles with TMA into a kStages-deep ring of SW128 tiles;
//  - bounds copier (warp 1): writes the column bounds of partial tiles next to
//    their K tile, as masked-row intervals (kernel_common.cuh: column_masked_rows).
//    Each ring stage has a "full" and an "empty" mbarrier for K (with the bounds)
//    and for V, so S = QK^T starts as soon as its K has landed and K's slot is
//    refilled while P*V still runs;
//  - two consumers (warpgroups 1-2, 232 registers per thread), 64 query rows each:
//    S = Q K^T by wgmma from shared memory, the column-wise mask on partial tiles
//    only, online softmax in registers, then O += P V by wgmma with P taken from
//    registers. Each consumer issues S of the next tile together with P V of this
//    one, and the two consumers take turns to issue (ping-pong) so that one's softmax
//    overlaps the other's GEMMs (ptxas puts the wait for a consumer's own P V before
//    its softmax; see the main loop). The output of one item is written while the
//    loader already streams the next item's tiles.
// Skipped tiles cost no loads and unmasked tiles no compares. The ring, the Q
// buffers and the list buffers keep their mbarrier phases across items.
#pragma once

#include <cuda.h>

#include "kernel_common.cuh"
#include "sm90_primitives.cuh"
#include "sm90_wgmma.cuh"
#include "tile_scheduler.cuh"

namespace flashmask {
namespace cuda {

template <int D_, int kBlockN_, int kStages_>
struct FwdSm90Config {
  static constexpr int D = D_, kBlockM = 128, kBlockN = kBlockN_, kStages = kStages_;
  static constexpr int kConsumers = 2;  // warpgroups of 64 query rows
  static constexpr int kThreads = (kConsumers + 1) * 128;
  static constexpr int kProducerRegs = 40, kConsumerRegs = 232;
  // setmaxnreg moves registers within the CTA's launch allocation (65536 / kThreads per
  // thread, rounded down to 8): consumers block forever if the producer frees too few.
  static_assert(kProducerRegs + kConsumerRegs * kConsumers <= (kConsumers + 1) * (65536 / kThreads / 8 * 8),
                "register reallocation exceeds the launch allocation");
  static_assert(D % 64 == 0 && D <= 256, "P*V is one wgmma of N = D <= 256 (SW128 blocks of 64)");
  static_assert(kBlockN == 64 || kBlockN == 128, "S is one wgmma of N = kBlockN");
  static_assert(128 % kBlockN == 0, "tiles must divide block_mask cells");
  // Two Q buffers let the next item's Q load during this one; D=256 has no room for them.
  static constexpr int kQStages = D <= 128 ? 2 : 1;
  static constexpr int kQBytes = kBlockM * D * 2, kKVBytes = kBlockN * D * 2;
  // Named barriers: 1 and 2 for the consumers' ping-pong, 3 for the scheduler warps.
  static constexpr int kSchedulerBarrier = 3, kSchedulerThreads = 64;
  // Shared memory, byte offsets from a 1024-aligned base (SW128 tiles need it).
  static constexpr int kOffQ = 0;
  static constexpr int kOffK = kOffQ + kQStages * kQBytes;
  static constexpr int kOffV = kOffK + kStages * kKVBytes;
  static constexpr int kOffBounds = kOffV + kStages * kKVBytes;  // [kStages][kBlockN] int4 intervals
  static constexpr int kOffBars = kOffBounds + kStages * kBlockN * 4 * 4;
  // q_full/empty[kQStages], k_full/empty and v_full/empty[kStages], list_full/empty[2]
  static constexpr int kNumBars = 2 * kQStages + 4 * kStages + 4;
  static constexpr int kOffItems = kOffBars + kNumBars * 8;  // [2] {count, m_block, h, b}
  static constexpr int kOffScratch = kOffItems + 2 * 4 * 4;
  static constexpr int kOffList = kOffScratch + 32 * 4;  // [2][key tiles] ints
  // Bytes of shared memory besides the two tile lists, with alignment slack.
  static constexpr int kSmemFixed = kOffList + 1024;
};

// TMA descriptors of q, k, v as 4-D tensors {head_dim, seqlen, heads, batch},
// box {64, rows of one tile, 1, 1}, 128-byte swizzle, zero fill out of bounds.
struct FwdTensorMaps {
  CUtensorMap q, k, v;
};

template <typename T, typename Cfg>
__global__ void __launch_bounds__(Cfg::kThreads, 1)
    flashmask_fwd_sm90_kernel(const __grid_constant__ FwdTensorMaps maps, const FwdParams p,
                              const TileBounds* __restrict__ tile_bounds, const FwdSchedule sched) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  using namespace sm90;
  constexpr int D = Cfg::D, kBlockM = Cfg::kBlockM, kBlockN = Cfg::kBlockN;
  constexpr int kStages = Cfg::kStages, kQStages = Cfg::kQStages;
  constexpr int kColBlocks = D / 64;
  constexpr int NT = kBlockN / 8;  // n8 chunks of S per thread row pair
  constexpr int DT = D / 8;        // n8 chunks of O

  extern __shared__ char smem_raw[];
  char* smem = smem_raw + ((1024 - (smem_u32(smem_raw) & 1023)) & 1023);
  T* sQ = reinterpret_cast<T*>(smem + Cfg::kOffQ);
  T* sK = reinterpret_cast<T*>(smem + Cfg::kOffK);
  T* sV = reinterpret_cast<T*>(smem + Cfg::kOffV);
  int* sBounds = reinterpret_cast<int*>(smem + Cfg::kOffBounds);
  uint64_t* q_full = reinterpret_cast<uint64_t*>(smem + Cfg::kOffBars);
  uint64_t* q_empty = q_full + kQStages;
  uint64_t* k_full = q_empty + kQStages;
  uint64_t* k_empty = k_full + kStages;
  uint64_t* v_full = k_empty + kStages;
  uint64_t* v_empty = v_full + kStages;
  uint64_t* list_full = v_empty + kStages;
  uint64_t* list_empty = list_full + 2;
  int* sItems = reinterpret_cast<int*>(smem + Cfg::kOffItems);
  int* sScratch = reinterpret_cast<int*>(smem + Cfg::kOffScratch);
  int* sLists = reinterpret_cast<int*>(smem + Cfg::kOffList);

  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const AttentionShape& s = p.shape;
  const int Sq = s.seqlen_q, Sk = s.seqlen_k;
  const int group = s.num_heads / s.num_heads_k;
  const int nb = p.mask.num_bounds;
  const int n_tiles = (Sk + kBlockN - 1) / kBlockN;
  constexpr int kConsumerThreads = Cfg::kConsumers * 128;

  if (tid == 0) {
    for (int qs = 0; qs < kQStages; ++qs) {
      mbar_init(q_full + qs, 1);
      mbar_init(q_empty + qs, kConsumerThreads);
    }
    for (int st = 0; st < kStages; ++st) {
      mbar_init(k_full + st, 1 + 32);  // TMA issuer + the 32 lanes of the bounds warp
      mbar_init(k_empty + st, kConsumerThreads);
      mbar_init(v_full + st, 1);
      mbar_init(v_empty + st, kConsumerThreads);
    }
    for (int buf = 0; buf < 2; ++buf) {
      mbar_init(list_full + buf, Cfg::kSchedulerThreads);
      mbar_init(list_empty + buf, 1 + 1 + kConsumerThreads);  // loader, bounds warp, consumers
    }
    fence_barrier_init();
  }
  __syncthreads();

  // The k-th item of this CTA: its list buffer is k & 1, used for the (k >> 1)-th time.
  // Its record {count, m_block, h, b} has count -1 once the work is exhausted.
  struct Item {
    int count, m_block, h, b;
    const int* list;  // ascending key tiles, index | kind << 24
  };
  auto wait_item = [&](int k) {
    const int buf = k & 1;
    mbar_wait(list_full + buf, (k >> 1) & 1);
    const int* rec = sItems + 4 * buf;
    return Item{rec[0], rec[1], rec[2], rec[3], sLists + buf * n_tiles};
  };
  auto release_item = [&](int k) { mbar_arrive(list_empty + (k & 1)); };
  auto bhm_of = [&](int h, int b) {
    return static_cast<int64_t>(b) * p.mask.num_mask_heads + mask_head_for(p.mask, s, h);
  };

  if (warp < 4) {  // ------------------------------------------------ producer warpgroup
    regs_dealloc<Cfg::kProducerRegs>();
    if (warp >= 2) {  // scheduler
      const int ltid = tid - 64;
      auto sync = [] { named_barrier_sync(Cfg::kSchedulerBarrier, Cfg::kSchedulerThreads); };
      for (int k = 0;; ++k) {
        const int buf = k & 1;
        mbar_wait(list_empty + buf, ((k >> 1) & 1) ^ 1);
        const int w = take_work_item(sched.next_item, sScratch, ltid, sync);
        int* rec = sItems + 4 * buf;
        if (w >= sched.items) {
          if (ltid == 0) rec[0] = -1;
          mbar_arrive(list_full + buf);
          break;
        }
        const FwdWorkItem it = fwd_work_item(sched, p.mask, s, w);
        const int m0 = it.m_block * kBlockM;
        const int count = list_key_tiles<Cfg::kSchedulerThreads, kBlockN>(
            sLists + buf * n_tiles, sScratch, p.mask, Sq, Sk, it.bhm, m0, min(kBlockM, Sq - m0),
            tile_bounds + it.bhm * n_tiles, ltid, sync);
        if (ltid == 0) {
          rec[0] = count;
          rec[1] = it.m_block;
          rec[2] = it.h;
          rec[3] = it.b;
        }
        mbar_arrive(list_full + buf);  // release: this thread's list entries and record
      }
    } else if (warp == 0) {  // loader
      if (lane == 0) {
        prefetch_tensor_map(&maps.q);
        prefetch_tensor_map(&maps.k);
        prefetch_tensor_map(&maps.v);
        int kv_it = 0, q_it = 0;  // ring positions across items
        for (int k = 0;; ++k) {
          const Item it = wait_item(k);
          if (it.count < 0) break;
          const int hk = it.h / group;
          if (it.count > 0) {
            const int qs = q_it % kQStages;
            mbar_wait(q_empty + qs, ((q_it / kQStages) & 1) ^ 1);
            mbar_arrive_expect_tx(q_full + qs, Cfg::kQBytes);
            tma_load_tile<kColBlocks, kBlockM>(sQ + qs * kColBlocks * kBlockM * 64, &maps.q, q_full + qs,
                                               it.m_block * kBlockM, it.h, it.b);
            ++q_it;
          }
          // Tiles are visited from the last key tile down (the list is ascending).
          for (int i = 0; i < it.count; ++i, ++kv_it) {
            const int st = kv_it % kStages, phase = (kv_it / kStages) & 1;
            const int n = it.list[it.count - 1 - i] & 0xffffff;
            mbar_wait(k_empty + st, phase ^ 1);
            mbar_arrive_expect_tx(k_full + st, Cfg::kKVBytes);
            tma_load_tile<kColBlocks, kBlockN>(sK + st * kColBlocks * kBlockN * 64, &maps.k, k_full + st,
                                               n * kBlockN, hk, it.b);
            mbar_wait(v_empty + st, phase ^ 1);
            mbar_arrive_expect_tx(v_full + st, Cfg::kKVBytes);
            tma_load_tile<kColBlocks, kBlockN>(sV + st * kColBlocks * kBlockN * 64, &maps.v, v_full + st,
                                               n * kBlockN, hk, it.b);
          }
          release_item(k);
        }
      }
    } else {  // bounds copier
      const int form = mask_form(p.mask.causal, nb), offset = Sk - Sq;
      int kv_it = 0;
      for (int k = 0;; ++k) {
        const Item it = wait_item(k);
        if (it.count < 0) break;
        const int32_t* gBnd = p.mask.startend_row_indices + bhm_of(it.h, it.b) * Sk * nb;
        for (int i = 0; i < it.count; ++i, ++kv_it) {
          const int st = kv_it % kStages, phase = (kv_it / kStages) & 1;
          const int entry = it.list[it.count - 1 - i], n = entry & 0xffffff;
          mbar_wait(k_empty + st, phase ^ 1);
          if ((entry >> 24) == static_cast<int>(TileKind::kPartial)) {
            int4* dst = reinterpret_cast<int4*>(sBounds + st * kBlockN * 4);
            dispatch_form(form, [&](auto ftag) {
              using Fm = Form<decltype(ftag)::value>;
              // All loads first (one round trip), then the intervals of columns lane + 32k.
              int raw[kBlockN / 32][4] = {};
#pragma unroll
              for (int k = 0; k < kBlockN / 32; ++k) {
                const int col = n * kBlockN + lane + 32 * k;
#pragma unroll
                for (int i = 0; i < Fm::kBounds; ++i)
                  if (col < Sk) raw[k][i] = __ldg(gBnd + static_cast<int64_t>(col) * Fm::kBounds + i);
              }
#pragma unroll
              for (int k = 0; k < kBlockN / 32; ++k) {
                const int col = n * kBlockN + lane + 32 * k;
                dst[lane + 32 * k] = column_masked_rows<decltype(ftag)::value>(col, raw[k], offset, Sk);
              }
            });
          }
          mbar_arrive(k_full + st);  // release: the bounds are visible to the consumers
        }
        __syncwarp();  // every lane has read the list
        if (lane == 0) release_item(k);
      }
    }
    return;
  }

  // ---------------------------------------------------------------- consumers
  regs_alloc<Cfg::kConsumerRegs>();
  const int cw = warp / 4 - 1;                    // consumer warpgroup: rows cw*64 ..
  const int wrow = (warp & 3) * 16 + (lane >> 2);  // this thread's first row in the 64
  const int t = lane & 3;
  const int form = mask_form(p.mask.causal, nb);
  const float scale_log2 = p.softmax_scale * kLog2e;

  float acc_o[DT * 4];
  float row_max[2], row_sum[2];

  // S = Q K^T of ring slot st (K-major A and B, k steps of 16 = 32 bytes in a 128-byte row).
  auto issue_qk = [&](float(&acc_s)[NT * 4], uint64_t q_desc, int st) {
    const uint64_t k_desc = sw128_desc(smem_u32(sK + st * kColBlocks * kBlockN * 64), 0);
#pragma unroll
    for (int ks = 0; ks < D / 16; ++ks) {
      const uint32_t koff = (ks & 3) * 32;
      const uint64_t da = desc_advance(q_desc, (ks >> 2) * kBlockM * 128 + koff);
      const uint64_t db = desc_advance(k_desc, (ks >> 2) * kBlockN * 128 + koff);
      sm90::Wgmma<T, kBlockN>::template ss<0, 0>(acc_s, da, db, ks > 0);
    }
    wgmma_commit();
  };
  // O += P V of ring slot st (V MN-major: k steps of 16 keys = 16 rows of 128 bytes).
  auto issue_pv = [&](const uint32_t(&pa)[kBlockN / 16][4], int st) {
    const uint64_t v_desc = sw128_desc(smem_u32(sV + st * kColBlocks * kBlockN * 64), kBlockN * 128);
#pragma unroll
    for (int kk = 0; kk < kBlockN / 16; ++kk)
      sm90::Wgmma<T, D>::template rs<1>(acc_o, pa[kk], desc_advance(v_desc, kk * 16 * 128), 1);
    wgmma_commit();
  };
  // Mask (partial tiles only; `entry` is the tile's list entry), release K and the
  // bounds of slot st, then the online softmax in base 2 with the scale folded in:
  // S becomes P, alpha rescales the old O and sum. Rows row0 and row0 + 8.
  auto mask_and_softmax = [&](float(&acc_s)[NT * 4], int entry, int st, int row0, float(&alpha)[2]) {
    if ((entry >> 24) == static_cast<int>(TileKind::kPartial)) {
      const int rows[2] = {row0, row0 + 8};
      mask_partial_rows<NT>(reinterpret_cast<const int4*>(sBounds + st * kBlockN * 4), form, t, rows,
                            [&](int j, int r, int c) { acc_s[4 * j + 2 * r + c] = -INFINITY; });
    }
    mbar_arrive(k_empty + st);  // this thread is done with K and the bounds of this stage
    // Max and sum over four partial accumulators each: a single chain of 16 (max) or 32
    // (sum) dependent operations per row sat on the path between this consumer's turns.
    static_assert(NT % 4 == 0, "four partial accumulators");
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      float part[4] = {-INFINITY, -INFINITY, -INFINITY, -INFINITY};
#pragma unroll
      for (int j = 0; j < NT; ++j)
        part[j % 4] = fmaxf(part[j % 4], fmaxf(acc_s[4 * j + 2 * r], acc_s[4 * j + 2 * r + 1]));
      float mx = fmaxf(fmaxf(part[0], part[1]), fmaxf(part[2], part[3]));
      mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
      mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
      mx *= scale_log2;
      const float m_new = fmaxf(row_max[r], mx);
      const float base = m_new == -INFINITY ? 0.f : m_new;
      alpha[r] = exp2f(row_max[r] - base);
      row_max[r] = m_new;
      float sum[4] = {0.f, 0.f, 0.f, 0.f};
#pragma unroll
      for (int j = 0; j < NT; ++j)
#pragma unroll
        for (int c = 0; c < 2; ++c) {
          const float pv = exp2f(fmaf(acc_s[4 * j + 2 * r + c], scale_log2, -base));
          acc_s[4 * j + 2 * r + c] = pv;
          sum[j % 4] += pv;
        }
      row_sum[r] = fmaf(row_sum[r], alpha[r], (sum[0] + sum[1]) + (sum[2] + sum[3]));
    }
  };
  auto rescale_o = [&](const float(&alpha)[2]) {
#pragma unroll
    for (int j = 0; j < DT; ++j)
#pragma unroll
      for (int r = 0; r < 2; ++r) {
        acc_o[4 * j + 2 * r] *= alpha[r];
        acc_o[4 * j + 2 * r + 1] *= alpha[r];
      }
  };
  // P as wgmma A fragments (16 keys per k step).
  auto pack_p = [&](uint32_t(&pa)[kBlockN / 16][4], const float(&acc_s)[NT * 4]) {
#pragma unroll
    for (int kk = 0; kk < kBlockN / 16; ++kk)
#pragma unroll
      for (int e = 0; e < 4; ++e) pa[kk][e] = Pack<T>::two(acc_s[8 * kk + 2 * e], acc_s[8 * kk + 2 * e + 1]);
  };

  // Ping-pong: the consumers take turns to issue their GEMMs (named barriers 1 + cw),
  // so one consumer's softmax runs while the other's GEMMs do. Both run the same items
  // with the same tile counts, so the turns alternate across items too: consumer 0
  // starts the next item's first S as soon as consumer 1 has issued this item's last
  // P V, while consumer 1 still waits for it and writes its output. Consumer 1 hands
  // the first turn over once before the first item; consumer 0 takes the last
  // hand-over after the last item, so no arrival is left pending.
  auto turn_begin = [&]() { named_barrier_sync(1 + cw, kConsumerThreads); };
  auto turn_end = [&]() { named_barrier_arrive(1 + (cw ^ 1), kConsumerThreads); };
  if (cw == 1) turn_end();

  int kv_it = 0, q_it = 0;  // ring positions across items, as in the loader
  for (int k = 0;; ++k) {
    const Item it = wait_item(k);
    if (it.count < 0) break;
    const int count = it.count;
    const int m0 = it.m_block * kBlockM;
    const int row0 = m0 + cw * 64 + wrow;  // rows row0 and row0 + 8
    auto entry_at = [&](int i) { return it.list[count - 1 - i]; };  // last key tile first
    auto slot = [&](int i) { return (kv_it + i) % kStages; };
    auto parity = [&](int i) { return ((kv_it + i) / kStages) & 1; };
#pragma unroll
    for (int i = 0; i < DT * 4; ++i) acc_o[i] = 0.f;
#pragma unroll
    for (int r = 0; r < 2; ++r) row_max[r] = -INFINITY, row_sum[r] = 0.f;

    if (count > 0) {
      const int qs = q_it % kQStages;
      const uint64_t q_desc = sw128_desc(smem_u32(sQ + qs * kColBlocks * kBlockM * 64) + cw * 64 * 128, 0);
      mbar_wait(q_full + qs, (q_it / kQStages) & 1);
      float acc_s[NT * 4], alpha[2];
      uint32_t pa[kBlockN / 16][4];
      // Software pipeline: S of tile i is on the tensor cores together with P V of tile
      // i-1. ptxas places the wait for that P V ahead of the softmax of tile i, so the
      // softmax runs beside the other consumer's GEMMs; held behind the softmax, so that
      // it ran beside this consumer's own P V, the forward measured 2-6% slower (perf-notes
      // v19). Q is released once the last S is done.
      mbar_wait(k_full + slot(0), parity(0));
      turn_begin();
      wgmma_fence();
      issue_qk(acc_s, q_desc, slot(0));
      turn_end();
      wgmma_wait<0>();
      fence_operands(acc_s);
      if (count == 1) mbar_arrive(q_empty + qs);
      mask_and_softmax(acc_s, entry_at(0), slot(0), row0, alpha);  // O is still 0: alpha is not needed
      pack_p(pa, acc_s);
      for (int i = 1; i < count; ++i) {
        mbar_wait(k_full + slot(i), parity(i));
        mbar_wait(v_full + slot(i - 1), parity(i - 1));
        turn_begin();
        wgmma_fence();
        issue_qk(acc_s, q_desc, slot(i));
        issue_pv(pa, slot(i - 1));
        turn_end();
        wgmma_wait<1>();  // S of tile i is done, P V of tile i-1 may still run
        fence_operands(acc_s);
        if (i == count - 1) mbar_arrive(q_empty + qs);
        mask_and_softmax(acc_s, entry_at(i), slot(i), row0, alpha);
        wgmma_wait<0>();
        fence_operands(acc_o);
        mbar_arrive(v_empty + slot(i - 1));
        rescale_o(alpha);
        pack_p(pa, acc_s);
      }
      mbar_wait(v_full + slot(count - 1), parity(count - 1));
      turn_begin();
      wgmma_fence();
      issue_pv(pa, slot(count - 1));
      turn_end();
      wgmma_wait<0>();
      fence_operands(acc_o);
      mbar_arrive(v_empty + slot(count - 1));
    }
    release_item(k);  // the list and the record are no longer read
    kv_it += count;
    q_it += count > 0;

    // Epilogue: normalise, write O and the LSE. A row with no unmasked key has
    // row_sum == 0: its output is 0 and its LSE -inf.
    T* gO = static_cast<T*>(p.out) + it.b * p.out_strides.batch + it.h * p.out_strides.head;
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      float l = row_sum[r];
      l += __shfl_xor_sync(0xffffffffu, l, 1);
      l += __shfl_xor_sync(0xffffffffu, l, 2);
      const float inv = l > 0.f ? 1.f / l : 0.f;
      const int row = row0 + 8 * r;
      if (row < Sq) {
        T* o = gO + static_cast<int64_t>(row) * p.out_strides.row;
#pragma unroll
        for (int j = 0; j < DT; ++j)
          *reinterpret_cast<uint32_t*>(o + j * 8 + 2 * t) =
              Pack<T>::two(acc_o[4 * j + 2 * r] * inv, acc_o[4 * j + 2 * r + 1] * inv);
        if (t == 0)
          p.lse[(static_cast<int64_t>(it.b) * s.num_heads + it.h) * Sq + row] =
              l > 0.f ? (row_max[r] + log2f(l)) * 0.6931471805599453f : -INFINITY;
      }
    }
  }
  if (cw == 0) turn_begin();  // consumer 1's hand-over after its last turn
#endif
}

}  // namespace cuda
}  // namespace flashmask
