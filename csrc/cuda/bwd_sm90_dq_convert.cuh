// The Hopper backward's dQ conversion inside the kernel (BwdSm90Config::kConvertDq, D <= 128;
// perf-notes v53), in place of the convert kernel after it:
//  - the consumers' dQ issuers post each 64 x 64 dQ part (DqFragmentOrder) whose reduce-add
//    has completed, writes included, to a queue in shared memory (DqRetire, post_dq_part);
//  - producer warp 3 takes the posted parts, up to 32 at a time, and decrements each part's
//    pending count (the dq_pending kernel's, in global memory); the warp that takes a count to
//    zero holds the part's last contribution and writes the part out as T (convert_dq_part).
// Memory order: an issuer's reduce-adds are complete (bulk_wait) and ordered for the generic
// proxy (fence.proxy.async.global) before its arrival on the entry's mbarrier (a release); the
// converter's wait on it (an acquire) precedes its acq_rel decrement, so the decrement that reaches zero sees
// every other CTA's contributions, and a proxy fence orders it before the bulk copy that reads them.
#pragma once

#include "dq_accum_order.cuh"
#include "flashmask_bwd_kernel.cuh"
#include "sm90_pipeline.cuh"

namespace flashmask {
namespace cuda {

// Queue entries: a part index ((b * H + h) * (sq_pad / kBlockM) + m) * kParts + part, or
// kDqQueueDone (an issuer's last). Position pos of the queue is slot pos % kDqQueueSlots in
// its (pos / kDqQueueSlots)-th use, with a full and an empty mbarrier per slot, so that the
// converter sleeps in mbarrier waits instead of polling beside the consumers' warps (a
// polling converter cost the backward ~12%: perf-notes v53).
constexpr int kDqQueueDone = -1;
constexpr unsigned kDqQueueSlots = 64;  // a power of 2: the unsigned positions wrap onto it

// Issuer side (one thread per consumer); the Smem of BwdSm90Config.
template <typename Smem>
__device__ __forceinline__ void post_dq_part(Smem& sm, int entry) {
  using namespace sm90;
  const unsigned pos = atomicAdd(&sm.dq_queue_tail, 1u), slot = pos % kDqQueueSlots;
  const int parity = (pos / kDqQueueSlots) & 1;
  mbar_wait(sm.dq_queue_empty + slot, parity ^ 1);  // the converter took the slot's last entry
  sm.dq_queue[slot] = entry;
  mbar_arrive(sm.dq_queue_full + slot);
}

// One issuer's bulk groups that are committed and not yet retired, oldest first: a dQ part's
// reduce-adds (the part index) or other stores (kNotDq). A group is retired, its part posted,
// once kRetireLag younger groups follow it: waiting for the completion (writes, not only
// reads) of the group a tile old held the consumers back by ~14% (the reduce-adds complete in
// L2 well after their reads; perf-notes v53).
constexpr int kRetireLag = 4, kRetireSlots = 8, kNotDq = -2;
struct DqRetire {
  int groups[kRetireSlots];
  int first, count;
};
static_assert(kRetireLag + 2 <= kRetireSlots, "a dQ group and a dK/dV group are committed between retirements");

// After this issuer commits a bulk group: a dQ part's (its index) or another (kNotDq).
template <typename Smem>
__device__ __forceinline__ void group_committed(Smem& sm, int cw, int part) {
  DqRetire& r = sm.dq_retire[cw];
  r.groups[(r.first + r.count) % kRetireSlots] = part;
  ++r.count;
}
// Posts the dQ parts of the groups that are complete: all but the kRetireLag youngest (kAll:
// every group).
template <bool kAll, typename Smem>
__device__ __forceinline__ void retire_dq_parts(Smem& sm, int cw) {
  using namespace sm90;
  DqRetire& r = sm.dq_retire[cw];
  if constexpr (kAll)
    bulk_wait<0>();
  else
    bulk_wait<kRetireLag>();
  fence_proxy_async_global();
  for (const int keep = kAll ? 0 : kRetireLag; r.count > keep; --r.count) {
    const int part = r.groups[r.first];
    r.first = (r.first + 1) % kRetireSlots;
    if (part >= 0) post_dq_part(sm, part);
  }
}

// Converter side (producer warp 3): part `entry`, whose last contribution this lane's
// decrement found, from the accumulator into sm.dq_part by one bulk copy, then to dQ.
template <typename T, typename Cfg, typename Smem>
__device__ __forceinline__ void convert_dq_part(Smem& sm, const BwdParams& p, const BwdWork& w, int entry,
                                                bool issuing_lane, int parity) {
  using namespace sm90;
  using Order = DqFragmentOrder<Cfg::kBlockM>;
  constexpr int kParts = Cfg::kBlockM * Cfg::D / Order::kPartFloats, kBytes = Order::kPartFloats * 4;
  const int part = entry % kParts, tile = entry / kParts, m_stride = w.sq_pad / Cfg::kBlockM;
  const int m = tile % m_stride;
  const int64_t bh = tile / m_stride;
  if (issuing_lane) {
    fence_proxy_async_global();  // the acquire above, then the copy's async-proxy reads
    mbar_arrive_expect_tx(&sm.dq_part_full, kBytes);
    bulk_load(sm.dq_part, w.dq_accum + (bh * w.sq_pad + m * Cfg::kBlockM) * Cfg::D + part * Order::kPartFloats,
              kBytes, &sm.dq_part_full);
  }
  mbar_wait(&sm.dq_part_full, parity);
  int row0, col0;
  Order::part_origin(part, row0, col0);
  row0 += m * Cfg::kBlockM;
  const DqRows<T> out(p, static_cast<int>(bh / p.shape.num_heads), static_cast<int>(bh % p.shape.num_heads));
  const float4* src = reinterpret_cast<const float4*>(sm.dq_part);
#pragma unroll 1
  for (int q = lane_id(); q < Order::kPartFloats / 4; q += 32) {  // pairs 2q, 2q + 1: four columns of a row
    int row, col;
    Order::part_position(2 * q, row, col);
    out.store4(row0 + row, col0 + col, src[q]);
  }
  fence_proxy_async_smem();  // these reads before the next bulk copy into the buffer
  __syncwarp();
}

template <typename T, typename Cfg, typename Smem>
__device__ __forceinline__ void bwd_dq_convert_role(Smem& sm, const BwdParams& p, const BwdWork& w) {
  using namespace sm90;
  const int lane = lane_id();
  unsigned head = 0;  // the next queue position to take
  int done = 0, parity = 0;
  while (done < Cfg::kConsumers) {
    const unsigned pos = head + lane, slot = pos % kDqQueueSlots;
    const int phase = (pos / kDqQueueSlots) & 1;
    if (lane == 0) mbar_wait(sm.dq_queue_full + slot, phase);  // sleeps until the next entry
    __syncwarp();
    const unsigned posted = __ballot_sync(0xffffffffu, lane == 0 || mbar_test(sm.dq_queue_full + slot, phase));
    const int n = posted == 0xffffffffu ? 32 : __ffs(~posted) - 1;  // posted in order from head
    const bool taken = lane < n;
    const int entry = taken ? sm.dq_queue[slot] : kDqQueueDone;
    if (taken) mbar_arrive(sm.dq_queue_empty + slot);
    head += n;
    done += __popc(__ballot_sync(0xffffffffu, taken && entry == kDqQueueDone));
    const bool is_part = taken && entry >= 0;
    const int old = is_part ? atomic_add_acq_rel_gpu(w.dq_pending + entry, -1) : 0;
    for (unsigned last = __ballot_sync(0xffffffffu, is_part && old == 1); last != 0; last &= last - 1) {
      const int src_lane = __ffs(last) - 1;
      convert_dq_part<T, Cfg>(sm, p, w, __shfl_sync(0xffffffffu, entry, src_lane), lane == src_lane, parity);
      parity ^= 1;
    }
  }
}

}  // namespace cuda
}  // namespace flashmask
