// FlashMask backward for Hopper (sm90a): dK, dV and dQ (fp32 reductions) with
// TMA and wgmma, warp-specialised like the sm90 forward.
//
// One CTA per (key block of 128 keys, key head, batch), three warpgroups:
//  - producer (warpgroup 0): K and V of the key block once by TMA; then, for each
//    query head of the GQA group and each listed query tile of 64 rows, Q and dO
//    by TMA plus the tile's lse*log2(e) and rowsum(dO*O) by 1-D bulk copies, into
//    a 2-stage ring with full/empty mbarriers.
//  - two consumers (warpgroups 1-2), 64 keys each, per query tile:
//      S^T = K Q^T, dP^T = V dO^T            (wgmma m64n64, both operands in smem)
//      P^T = exp2(S^T*scale*log2e - lse), dS^T = P^T (dP^T - rowsum)   (registers)
//      dV += P^T dO, dK += dS^T Q             (wgmma m64nD, P^T / dS^T from registers)
//      dS^T -> smem (double-buffered); D=128: after a barrier of the two consumers,
//      dQ[:, 64c..64c+63] = dS K[:, 64c..] (consumer c; dS read MN-major from smem);
//      D=64: dQ over the consumer's own 64 keys. Added to the fp32 dq accumulator
//      with red.global.add.v2.f32.
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
  static constexpr int D = D_, kBlockM = 64, kBlockN = 128, kStages = 2;
  static constexpr int kConsumers = 2;  // warpgroups of 64 keys
  static constexpr int kThreads = (kConsumers + 1) * 128;
  static constexpr int kProducerRegs = 24, kConsumerRegs = 240;
  // setmaxnreg moves registers within the CTA's launch allocation (65536 / kThreads per
  // thread, rounded down to 8): consumers block forever if the producer frees too few.
  static_assert(kProducerRegs + kConsumerRegs * kConsumers <= (kConsumers + 1) * (65536 / kThreads / 8 * 8),
                "register reallocation exceeds the launch allocation");
  static_assert(D == 64 || D == 128, "head_dim 64 or 128");
  // D=128: consumer c computes dQ[:, 64c..64c+63] over all 128 keys (its SW128 column block
  // of K), after a barrier that makes both halves of dS^T visible. D=64: each consumer adds
  // dQ over its own 64 keys (no barrier, twice the reductions).
  static constexpr bool kDqSplitByDim = D == 128;
  static constexpr int kColBlocks = D / 64;
  static constexpr int kKVBytes = kBlockN * D * 2, kQBytes = kBlockM * D * 2;
  static constexpr int kRowBytes = kBlockM * 4;  // lse or rowsum of one query tile
  // Shared memory, byte offsets from a 1024-aligned base.
  static constexpr int kOffK = 0;
  static constexpr int kOffV = kOffK + kKVBytes;
  static constexpr int kOffQ = kOffV + kKVBytes;
  static constexpr int kOffdO = kOffQ + kStages * kQBytes;
  static constexpr int kOffdS = kOffdO + kStages * kQBytes;  // [2][kBlockN][kBlockM] SW128
  static constexpr int kOffL = kOffdS + 2 * kBlockN * kBlockM * 2;
  static constexpr int kOffDs = kOffL + kStages * kRowBytes;
  static constexpr int kOffBars = kOffDs + kStages * kRowBytes;
  static constexpr int kNumBars = 1 + 2 * kStages;  // kv_full, q_full[], q_empty[]
  static constexpr int kOffScratch = kOffBars + kNumBars * 8;
  static constexpr int kOffList = kOffScratch + 32 * 4;
  // Bytes besides the query-tile list (m_tiles ints), with alignment slack.
  static constexpr int kSmemFixed = kOffList + 1024;
};

// TMA descriptors (see FwdTensorMaps): q and dout with boxes of 64 rows, k and v of 128.
struct BwdTensorMaps {
  CUtensorMap q, dout, k, v;
};

template <typename T, typename Cfg>
__global__ void __launch_bounds__(Cfg::kThreads, 1)
    flashmask_bwd_sm90_kernel(const __grid_constant__ BwdTensorMaps maps, const BwdParams p,
                              const BwdWork w) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  using namespace sm90;
  constexpr int D = Cfg::D, kBlockM = Cfg::kBlockM, kBlockN = Cfg::kBlockN;
  constexpr int kStages = Cfg::kStages, kThreads = Cfg::kThreads, kColBlocks = Cfg::kColBlocks;
  constexpr int DT = D / 8;  // n8 chunks of dK / dV

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
  uint64_t* q_full = kv_full + 1;
  uint64_t* q_empty = q_full + kStages;
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
    for (int st = 0; st < kStages; ++st) {
      mbar_init(q_full + st, 1);
      mbar_init(q_empty + st, Cfg::kConsumers * 128);  // every consumer thread
    }
    fence_barrier_init();
  }
  __syncthreads();

  // Per query head of the group: the list of its query tiles. Producer and
  // consumers build it in their own code paths (so that the compiler allocates
  // registers per role) but pass the same __syncthreads in the same order.
  auto list_for_head = [&](int hi) {
    const int h = hk * group + hi;
    const int64_t bhm = static_cast<int64_t>(b) * p.mask.num_mask_heads + mask_head_for(p.mask, s, h);
    const TileBounds tbn = load_tile_bounds(w.tile_bounds + bhm * n_tiles + n_block);
    __syncthreads();  // every reader of the previous head's list is done
    const int count = list_query_tiles<kThreads, kBlockM>(sList, sScratch, p.mask, Sq, Sk, bhm,
                                                          n0, keys_valid, kBlockN, tbn);
    __syncthreads();  // the list is complete (build_tile_list syncs only when it iterates)
    return count;
  };

  if (producer) {  // ------------------------------------------------ producer
    regs_dealloc<Cfg::kProducerRegs>();
    const bool issuer = warp == 0 && lane == 0;
    if (issuer) {
      prefetch_tensor_map(&maps.q);
      prefetch_tensor_map(&maps.dout);
      mbar_arrive_expect_tx(kv_full, 2 * Cfg::kKVBytes);
#pragma unroll
      for (int cb = 0; cb < kColBlocks; ++cb) {
        tma_load_4d(sK + cb * kBlockN * 64, &maps.k, kv_full, cb * 64, n0, hk, b);
        tma_load_4d(sV + cb * kBlockN * 64, &maps.v, kv_full, cb * 64, n0, hk, b);
      }
    }
    int done = 0;  // query tiles of earlier heads: the ring's position
    for (int hi = 0; hi < group; ++hi) {
      const int count = list_for_head(hi);
      if (issuer) {
        const int h = hk * group + hi;
        const int64_t bh = static_cast<int64_t>(b) * H + h;
        const float* gL = w.lse_log2 + bh * w.sq_pad;
        const float* gDs = w.dsum + bh * w.sq_pad;
        for (int i = 0; i < count; ++i) {
          const int gi = done + i, st = gi % kStages, phase = (gi / kStages) & 1;
          const int m = sList[i] & 0xffffff;
          mbar_wait(q_empty + st, phase ^ 1);
          mbar_arrive_expect_tx(q_full + st, 2 * Cfg::kQBytes + 2 * Cfg::kRowBytes);
#pragma unroll
          for (int cb = 0; cb < kColBlocks; ++cb) {
            tma_load_4d(sQ + (st * kColBlocks + cb) * kBlockM * 64, &maps.q, q_full + st, cb * 64,
                        m * kBlockM, h, b);
            tma_load_4d(sdO + (st * kColBlocks + cb) * kBlockM * 64, &maps.dout, q_full + st,
                        cb * 64, m * kBlockM, h, b);
          }
          bulk_load(sL + st * kBlockM, gL + m * kBlockM, Cfg::kRowBytes, q_full + st);
          bulk_load(sDs + st * kBlockM, gDs + m * kBlockM, Cfg::kRowBytes, q_full + st);
        }
      }
      done += count;
    }
    return;
  }

  // ---------------------------------------------------------------- consumers
  regs_alloc<Cfg::kConsumerRegs>();
  // Warpgroup cw owns keys cw*64 .. +63 of the block; this thread's accumulator
  // rows are keys key0 and key0 + 8 (S^T, dK, dV) and query rows wrow, wrow + 8
  // of the dQ tile.
  const int cw = warp / 4 - 1;
  const int wrow = (warp & 3) * 16 + (lane >> 2);
  const int t = lane & 3;
  const int key0 = n0 + cw * 64 + wrow;
  const bool causal = p.mask.causal;
  const int form = mask_form(causal, nb);
  const int offset = Sk - Sq;
  const float scale_log2 = p.softmax_scale * kLog2e;
  const uint32_t k_addr = smem_u32(sK), v_addr = smem_u32(sV);

  float acc_dk[DT * 4], acc_dv[DT * 4];
#pragma unroll
  for (int i = 0; i < DT * 4; ++i) acc_dk[i] = acc_dv[i] = 0.f;
  mbar_wait(kv_full, 0);

  int done = 0;
  for (int hi = 0; hi < group; ++hi) {
    const int count = list_for_head(hi);
    const int h = hk * group + hi;
    const int64_t bhm = static_cast<int64_t>(b) * p.mask.num_mask_heads + mask_head_for(p.mask, s, h);
    const int64_t bh = static_cast<int64_t>(b) * H + h;
    const int32_t* gBnd = p.mask.startend_row_indices + bhm * Sk * nb;
    int kraw[2][4];
    bool kvalid[2];
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      const int key = key0 + 8 * r;
      kvalid[r] = key < Sk;
#pragma unroll
      for (int i = 0; i < 4; ++i)
        kraw[r][i] = (kvalid[r] && i < nb) ? __ldg(gBnd + static_cast<int64_t>(key) * nb + i) : 0;
    }
    float* gdq_head = w.dq_accum + bh * w.sq_pad * D + (Cfg::kDqSplitByDim ? cw * 64 : 0);

    for (int i = 0; i < count; ++i) {
      const int gi = done + i, st = gi % kStages, phase = (gi / kStages) & 1;
      const int m = sList[i] & 0xffffff, kind = sList[i] >> 24;
      const uint32_t q_addr = smem_u32(sQ + st * kColBlocks * kBlockM * 64);
      const uint32_t do_addr = smem_u32(sdO + st * kColBlocks * kBlockM * 64);
      const uint32_t ds_addr = smem_u32(sdS + (gi & 1) * kBlockN * kBlockM * 2);
      mbar_wait(q_full + st, phase);

      // S^T = K_c Q^T and dP^T = V_c dO^T: all operands K-major.
      float acc_s[32], acc_dp[32];
      wgmma_fence();
#pragma unroll
      for (int ks = 0; ks < D / 16; ++ks) {
        const uint32_t off_n = (ks >> 2) * kBlockN * 128 + cw * 64 * 128 + (ks & 3) * 32;
        const uint32_t off_m = (ks >> 2) * kBlockM * 128 + (ks & 3) * 32;
        Wgmma<T, 64>::template ss<0, 0>(acc_s, sw128_desc(k_addr + off_n, 0),
                                        sw128_desc(q_addr + off_m, 0), ks > 0);
      }
#pragma unroll
      for (int ks = 0; ks < D / 16; ++ks) {
        const uint32_t off_n = (ks >> 2) * kBlockN * 128 + cw * 64 * 128 + (ks & 3) * 32;
        const uint32_t off_m = (ks >> 2) * kBlockM * 128 + (ks & 3) * 32;
        Wgmma<T, 64>::template ss<0, 0>(acc_dp, sw128_desc(v_addr + off_n, 0),
                                        sw128_desc(do_addr + off_m, 0), ks > 0);
      }
      wgmma_commit();
      wgmma_wait<0>();
      fence_operands(acc_s);
      fence_operands(acc_dp);

      if (kind == static_cast<int>(TileKind::kPartial)) {
        dispatch_form(form, [&](auto ftag) {
          using Fm = Form<decltype(ftag)::value>;
#pragma unroll
          for (int r = 0; r < 2; ++r)
#pragma unroll
            for (int j = 0; j < 8; ++j)
#pragma unroll
              for (int c = 0; c < 2; ++c) {
                const int q = m * kBlockM + j * 8 + 2 * t + c;
                if (!kvalid[r] || Fm::masked(q, key0 + 8 * r, kraw[r], offset))
                  acc_s[4 * j + 2 * r + c] = -INFINITY;
              }
        });
      }
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
      // dS^T -> smem as [key][64 queries] SW128 (the MN-major A of dQ = dS K). The
      // buffer alternates per tile: its last readers (dQ two tiles ago) finished
      // before the barrier of the previous tile.
#pragma unroll
      for (int kk = 0; kk < 4; ++kk)
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const int row = cw * 64 + wrow + 8 * (e & 1);  // key within the block
          const int chunk = 2 * kk + (e >> 1);            // 8 queries
          const uint32_t off = row * 128 + ((chunk ^ (row & 7)) << 4) + t * 4;
          *reinterpret_cast<uint32_t*>(sdS + (gi & 1) * kBlockN * kBlockM * 2 + off) = dsa[kk][e];
        }
      fence_proxy_async_smem();

      // dV += P^T dO, dK += dS^T Q: B = dO / Q rows (MN-major), k steps of 16 queries.
      wgmma_fence();
#pragma unroll
      for (int kk = 0; kk < 4; ++kk)
        Wgmma<T, D>::template rs<1>(acc_dv, pa[kk],
                                    sw128_desc(do_addr + kk * 16 * 128, kBlockM * 128), 1);
#pragma unroll
      for (int kk = 0; kk < 4; ++kk)
        Wgmma<T, D>::template rs<1>(acc_dk, dsa[kk],
                                    sw128_desc(q_addr + kk * 16 * 128, kBlockM * 128), 1);
      wgmma_commit();

      float acc_dq[32];
      if constexpr (Cfg::kDqSplitByDim) {
        named_barrier_sync(1, Cfg::kConsumers * 128);  // both halves of dS^T are in smem
        wgmma_fence();
#pragma unroll
        for (int kk = 0; kk < kBlockN / 16; ++kk)
          Wgmma<T, 64>::template ss<1, 1>(
              acc_dq, sw128_desc(ds_addr + kk * 16 * 128, 0),
              sw128_desc(k_addr + cw * kBlockN * 128 + kk * 16 * 128, 0), kk > 0);
      } else {
        wgmma_fence();
#pragma unroll
        for (int kk = 0; kk < 4; ++kk)  // this consumer's 64 keys (rows cw*64.. of dS^T and K)
          Wgmma<T, 64>::template ss<1, 1>(
              acc_dq, sw128_desc(ds_addr + (cw * 64 + kk * 16) * 128, 0),
              sw128_desc(k_addr + (cw * 64 + kk * 16) * 128, 0), kk > 0);
      }
      wgmma_commit();
      wgmma_wait<0>();
      fence_operands(acc_dv);
      fence_operands(acc_dk);
      fence_operands(acc_dq);
      mbar_arrive(q_empty + st);  // Q, dO, lse and rowsum of this stage are free

      float* gdq = gdq_head + static_cast<int64_t>(m * kBlockM + wrow) * D;
#pragma unroll
      for (int r = 0; r < 2; ++r)
#pragma unroll
        for (int j = 0; j < 8; ++j)
          red_add_f32x2(gdq + 8 * r * D + j * 8 + 2 * t, acc_dq[4 * j + 2 * r],
                        acc_dq[4 * j + 2 * r + 1]);
    }
    done += count;
  }

  // dK = scale * dS^T Q, dV = P^T dO.
  T* gdK = static_cast<T*>(p.dk) + b * p.dk_strides.batch + hk * p.dk_strides.head;
  T* gdV = static_cast<T*>(p.dv) + b * p.dv_strides.batch + hk * p.dv_strides.head;
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    const int key = key0 + 8 * r;
    if (key >= Sk) continue;
    T* dk = gdK + static_cast<int64_t>(key) * p.dk_strides.row;
    T* dv = gdV + static_cast<int64_t>(key) * p.dv_strides.row;
#pragma unroll
    for (int j = 0; j < DT; ++j) {
      *reinterpret_cast<uint32_t*>(dk + j * 8 + 2 * t) =
          Pack<T>::two(acc_dk[4 * j + 2 * r] * p.softmax_scale,
                       acc_dk[4 * j + 2 * r + 1] * p.softmax_scale);
      *reinterpret_cast<uint32_t*>(dv + j * 8 + 2 * t) =
          Pack<T>::two(acc_dv[4 * j + 2 * r], acc_dv[4 * j + 2 * r + 1]);
    }
  }
#endif
}

}  // namespace cuda
}  // namespace flashmask
