// Persistent, longest-first work schedule of the Hopper forward.
//
// A work item is one 128-row query block of one (batch, head). Masked rows have
// very unequal work (a causal document mask gives a block of the first document
// one key tile, a block of the last one dozens), so the items are not handed out
// in grid order:
//  - fwd_work_order_kernel (flashmask_api.cu) counts, for every (batch, mask head),
//    the key tiles each query block visits (KeyTileClassifier, the same test the
//    kernels use) and writes that row's block indices sorted by that count, largest
//    first;
//  - the persistent kernel's CTAs (one per SM) take items from a global counter:
//    item w is rank w % m_blocks of (batch, head) w / m_blocks. Heads go in order,
//    so the CTAs in flight share one or two heads' K and V in L2, and inside a head
//    the long blocks start first and the short ones fill the tail.
#pragma once

#include "kernel_common.cuh"

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

}  // namespace cuda
}  // namespace flashmask
