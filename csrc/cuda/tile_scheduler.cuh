// Persistent, longest-first work schedule of the Hopper forward, and its scheduler role:
// the warps that take the next item and publish it, with its key-tile list, to the other
// roles through a queue of two list buffers (FwdItemQueue).
//
// A work item is one 128-row query block of one (batch, head). Masked rows have
// very unequal work (a causal document mask gives a block of the first document
// one key tile, a block of the last one dozens), so the items are not handed out
// in grid order:
//  - fwd_work_order_kernel (preprocess.cu) counts, for every (batch, mask head),
//    the key tiles each query block visits (KeyTileClassifier, the same test the
//    kernels use) and writes that row's block indices sorted by that count, largest
//    first;
//  - the persistent kernel's CTAs (one per SM) take items from a global counter:
//    item w is rank w % m_blocks of (batch, head) w / m_blocks. Heads go in order,
//    so the CTAs in flight share one or two heads' K and V in L2, and inside a head
//    the long blocks start first and the short ones fill the tail.
#pragma once

#include "kernel_common.cuh"
#include "sm90_pipeline.cuh"

namespace flashmask {
namespace cuda {

struct FwdSchedule {
  const int* order;  // [batch * mask heads][m_blocks]: query blocks, most key tiles first
  int* next_item;    // work counter, zeroed by fwd_work_order_kernel
  int m_blocks;      // query blocks per (batch, head)
  int items;         // batch * heads * m_blocks
};

struct FwdWorkItem {
  int m_block, h, b;
  int64_t bhm;  // batch * mask heads + mask head
};

__device__ __forceinline__ FwdWorkItem fwd_work_item(const FwdSchedule& sched, const MaskParams& mask,
                                                     const AttentionShape& s, int w) {
  const int bh = w / sched.m_blocks, rank = w - bh * sched.m_blocks;
  FwdWorkItem it;
  it.b = bh / s.num_heads;
  it.h = bh - it.b * s.num_heads;
  it.bhm = static_cast<int64_t>(it.b) * mask.num_mask_heads + mask_head_for(mask, s, it.h);
  it.m_block = __ldg(sched.order + it.bhm * sched.m_blocks + rank);
  return it;
}

// A work item as the scheduler publishes it in shared memory; count -1 ends the work.
struct FwdItemRecord {
  int count, m_block, h, b;
};
// A published item as the other roles read it.
struct FwdItem {
  int count, m_block, h, b;
  const TileEntry* list;  // its key tiles, ascending
  __device__ __forceinline__ FwdItem(const FwdItemRecord& r, const TileEntry* tiles)
      : count(r.count), m_block(r.m_block), h(r.h), b(r.b), list(tiles) {}
  // The i-th tile the roles visit: the last key tile first.
  __device__ __forceinline__ TileEntry tile(int i) const { return list[count - 1 - i]; }
};

// The items' list buffers (sm90_pipeline.cuh: TileListQueue); the readers are the loader,
// the bounds warp and every consumer thread.
constexpr int kFwdItemBuffers = 2;
using FwdItemState = sm90::PipelineState<kFwdItemBuffers>;
template <typename Smem>
using FwdItemQueue = sm90::TileListQueue<Smem>;

// The scheduler role (kThreads threads, local ids ltid): for each item, takes the next work
// item from the global counter and lists the key tiles its query block visits (skip /
// unmasked / partial, mask.cuh), until the work is exhausted.
template <int kThreads, int kBlockM, int kBlockN, typename Smem>
__device__ __forceinline__ void fwd_scheduler_role(const sm90::TileListQueue<Smem>& queue, int* scratch, const FwdSchedule& sched,
                                                   const FwdParams& p, const TileBounds* tile_bounds, int ltid) {
  const AttentionShape& s = p.shape;
  const int Sq = s.seqlen_q, Sk = s.seqlen_k;
  auto sync = [] { sm90::named_barrier_sync(sm90::FwdBarrier::kScheduler, kThreads); };
  for (FwdItemState k;; k.advance()) {
    queue.wait_empty(k);
    const int w = take_work_item(sched.next_item, scratch, ltid, sync);
    FwdItemRecord& rec = queue.record(k);
    if (w >= sched.items) {
      if (ltid == 0) rec.count = -1;
      queue.publish(k);
      break;
    }
    const FwdWorkItem it = fwd_work_item(sched, p.mask, s, w);
    const int m0 = it.m_block * kBlockM;
    const int count = list_key_tiles<kThreads, kBlockN>(queue.tiles(k), scratch, p.mask,
                                                        Sq, Sk, it.bhm, m0, min(kBlockM, Sq - m0),
                                                        tile_bounds + it.bhm * queue.stride, ltid, sync);
    if (ltid == 0) rec = FwdItemRecord{count, it.m_block, it.h, it.b};
    queue.publish(k);  // release: this thread's list entries and the record
  }
}

}  // namespace cuda
}  // namespace flashmask
