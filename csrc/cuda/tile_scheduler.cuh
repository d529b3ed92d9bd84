// Persistent, document-then-longest-first work schedule of the Hopper forward, and its scheduler role:
// the warps that take the next item and publish it, with its key-tile list, to the other
// roles through a queue of two list buffers (FwdItemQueue), in segments of at most
// kListCapacity key tiles.
//
// A work item is one kBlockM-row query block of one (batch, head); where seqlen_q is not a
// multiple of kBlockM, the three-consumer kernel (D=64) shifts the blocks back by a shift chosen
// per call, the first candidate making the ragged block the first (preprocess.h: FwdRowShifts;
// FwdSm90Config::row_shift reads the choice). Masked rows have
// very unequal work (a causal document mask gives a block of the first document
// one key tile, a block of the last one dozens), so the items are not handed out
// in grid order:
//  - fwd_visits_kernel (preprocess.cu) counts, under the chosen shift, for every (batch, mask head), the key
//    tiles each query block visits (KeyTileClassifier, the same test the kernels use)
//    and their span, and fwd_rank_kernel writes that row's block indices sorted by the
//    rank key (preprocess.h: fwd_rank_key): the span's first tile, then the count,
//    largest first;
//  - the persistent kernel's CTAs (one per SM) take items from a global counter, in
//    the tail order (tail_order.cuh: the last heads' long items moved to the front);
//    item w is rank w % m_blocks of (batch, head) w / m_blocks. Heads go in order,
//    so the CTAs in flight share one or two heads' K and V in L2; inside a head the
//    blocks of one packed document run together (sharing its K/V in L2, which a
//    head's whole K/V at 1M tokens does not fit), the long blocks first, and the short
//    ones fill the tail.
#pragma once

#include "kernel_common.cuh"
#include "mask.cuh"
#include "preprocess.h"
#include "sm90_pipeline.cuh"
#include "tail_order.cuh"

namespace flashmask {
namespace cuda {

struct FwdSchedule {
  const int* order;   // [batch * mask heads][m_blocks]: query blocks in rank-key order
  const int2* spans;  // [batch * mask heads][m_blocks]: [lowest, highest + 1) of a block's key tiles
  int* next_item;     // work counter, zeroed by fwd_visits_kernel
  int m_blocks;       // query blocks per (batch, head)
  const int* row_shift;  // block m's first row is m * kBlockM - *row_shift (FwdWorkOrder::row_shift)
  int n_tiles;        // key tiles per (batch, head)
  int items;          // batch * heads * m_blocks
  TailOrder tail;     // the k-th item taken is item tail.item(k)
};

struct FwdWorkItem {
  int m_block, h, b;
  int64_t bhm;  // batch * mask heads + mask head
  // Its key tiles lie in [span.x, span.y) (loaded by the scheduler only).
  __device__ __forceinline__ int2 span(const FwdSchedule& sched) const {
    return __ldg(sched.spans + bhm * sched.m_blocks + m_block);
  }
};

__device__ __forceinline__ FwdWorkItem fwd_work_item(const FwdSchedule& sched, const MaskParams& mask,
                                                     const AttentionShape& s, int w) {
  const int bh = w / sched.m_blocks, rank = w - bh * sched.m_blocks;
  FwdWorkItem it;
  it.b = bh / s.num_heads;
  it.h = bh - it.b * s.num_heads;
  it.bhm = mask_row_for(mask, s, it.b, it.h);
  it.m_block = __ldg(sched.order + it.bhm * sched.m_blocks + rank);
  return it;
}

// The key tiles item w visits, from its rank key: the tail order's lengths.
struct FwdItemLength {
  FwdSchedule sched;
  MaskParams mask;
  AttentionShape shape;
  const long long* rank_keys;
  __device__ int operator()(int w) const {
    const FwdWorkItem it = fwd_work_item(sched, mask, shape, w);
    return fwd_rank_visits(__ldg(rank_keys + it.bhm * fwd_rank_stride(sched.m_blocks) + it.m_block));
  }
};

// One segment of an item's key-tile list as the scheduler publishes it in shared memory:
// an item whose list is longer than a list buffer (kListCapacity) comes as several
// consecutive segments, flags (SegmentFlags) marking its first and last; count -1 ends the
// work. busy_begin[c], busy_end[c]: the list positions [begin, end) outside which consumer
// c's rows see none of a tile's keys (record_busy_ranges); it passes those tiles without
// GEMMs (FwdSm90Mainloop::pass). 8 ints (the layout after it stays 16-byte aligned).
struct FwdItemRecord {
  int count, m_block, h, b, flags;
  uint16_t busy_begin[sm90::kMaxFwdConsumers], busy_end[sm90::kMaxFwdConsumers];
};
static_assert(sizeof(FwdItemRecord) == 8 * sizeof(int), "a record is 8 ints");
// A published segment as the other roles read it.
struct FwdItem {
  int count, m_block, h, b;
  const FwdItemRecord* record;  // read again for the flags (fewer registers in the consumers)
  const TileEntry* list;        // its key tiles, in the order the roles visit them: descending
  __device__ __forceinline__ FwdItem(const FwdItemRecord& r, const TileEntry* tiles)
      : count(r.count), m_block(r.m_block), h(r.h), b(r.b), record(&r), list(tiles) {}
  // The i-th tile the roles visit (the last key tile first).
  __device__ __forceinline__ TileEntry tile(int i) const { return list[i]; }
  __device__ __forceinline__ bool first() const { return record->flags & kFirstSegment; }
  __device__ __forceinline__ bool last() const { return record->flags & kLastSegment; }
};

// The items' list buffers (sm90_pipeline.cuh: TileListQueue); the readers are the loader,
// the bounds warp and every consumer thread.
constexpr int kFwdItemBuffers = 2;
using FwdItemState = sm90::PipelineState<kFwdItemBuffers>;
template <typename Smem>
using FwdItemQueue = sm90::TileListQueue<Smem>;

// Which of kConsumers consumers (bit c: the rows rows[c]) see none of key tile n's keys, by
// classify_tile on the tile's bounds summary (as the list's own test). A consumer without rows
// is the caller's to mark (record_busy_ranges' `outside`).
template <int kConsumers>
__device__ __forceinline__ unsigned idle_consumers(const KeyTileClassifier& key_tiles, int n,
                                                   const BlockRows (&rows)[kConsumers]) {
  const int c0 = n * key_tiles.block_n, c1 = min(c0 + key_tiles.block_n, key_tiles.seqlen_k);
  const TileBounds t = load_tile_bounds(key_tiles.tb + n);
  unsigned idle = 0;
#pragma unroll
  for (int c = 0; c < kConsumers; ++c)
    if (classify_tile(t, rows[c].begin, rows[c].begin + rows[c].count, c0, c1, key_tiles.causal,
                      key_tiles.offset) == TileKind::kSkip)
      idle |= 1u << c;
  return idle;
}

// Each consumer's busy range of a segment of `count` listed tiles (FwdItemRecord): the
// scheduler's first warp examines the list's first kWarpSize positions, its second warp the
// last kWarpSize; a tile further in counts as busy (computed and masked, as every partial tile
// is). Only a partial tile can be idle for a consumer: an unmasked one is seen by every row of
// the block. A consumer whose rows all lie outside the sequence gets an empty range (a shifted
// block's ragged end: perf-notes v82). Lane 0 of each warp writes its ends.
template <int kConsumers, int kConsumerRows>
__device__ __forceinline__ void record_busy_ranges(FwdItemRecord& rec, const TileEntry* list, int count,
                                                   const KeyTileClassifier& key_tiles, int row0, int seqlen_q,
                                                   int ltid) {
  const int lane = ltid % kWarpSize;
  const bool front = ltid < kWarpSize;
  const int pos = front ? lane : count - 1 - lane;
  BlockRows rows[kConsumers];
  unsigned outside = 0;
#pragma unroll
  for (int c = 0; c < kConsumers; ++c) {
    rows[c] = block_rows(row0 + kConsumerRows * c, kConsumerRows, seqlen_q);
    outside |= (rows[c].count <= 0 ? 1u : 0u) << c;
  }
  unsigned idle = (1u << kConsumers) - 1;  // a position past the list
  if (pos >= 0 && pos < count) {
    const TileEntry e = list[pos];
    idle = outside | (e.partial() ? idle_consumers<kConsumers>(key_tiles, e.index(), rows) : 0u);
  }
#pragma unroll
  for (int c = 0; c < kConsumers; ++c) {
    const unsigned busy = __ballot_sync(kFullWarp, !((idle >> c) & 1u));
    const int first = __ffs(busy) - 1;  // in examination order
    if (lane != 0) continue;
    const bool none = (outside >> c) & 1u;
    if (front)
      rec.busy_begin[c] = none ? 0 : busy ? first : min(count, kWarpSize);
    else
      rec.busy_end[c] = none ? 0 : busy ? count - first : max(count - kWarpSize, 0);
  }
}

// The scheduler role (kThreads threads, local ids ltid): takes the next work item from the
// global counter and lists, segment by segment, the key tiles its query block visits (skip
// / unmasked / partial, mask.cuh) within the block's span, from the last down, with each
// consumer's busy range (record_busy_ranges), until the work is exhausted.
template <typename Cfg, typename Smem>
__device__ __forceinline__ void fwd_scheduler_role(const sm90::TileListQueue<Smem>& queue, int* scratch, const FwdSchedule& sched,
                                                   const FwdParams& p, const TileBounds* tile_bounds, int ltid) {
  constexpr int kThreads = Cfg::kSchedulerThreads, kBlockM = Cfg::kBlockM, kBlockN = Cfg::kBlockN;
  const AttentionShape& s = p.shape;
  static_assert(kThreads == 2 * kWarpSize, "record_busy_ranges takes one warp per end of a list");
  auto sync = [] { sm90::named_barrier_sync(sm90::FwdBarrier::kScheduler, kThreads); };
  FwdItemState k;
  for (;;) {
    queue.wait_empty(k);
    const int w = take_work_item(sched.next_item, scratch, ltid, sync);
    if (w >= sched.items) {
      if (ltid == 0) queue.record(k).count = -1;
      queue.publish(k);
      break;
    }
    const FwdWorkItem it = fwd_work_item(sched, p.mask, s, sched.tail.item(w));
    const int row0 = it.m_block * kBlockM - Cfg::row_shift(sched);  // read per item: one register less held
    const BlockRows rows = block_rows(row0, kBlockM, s.seqlen_q);
    const KeyTileClassifier key_tiles(p.mask, s.seqlen_q, s.seqlen_k, it.bhm, rows.begin, rows.count, kBlockN,
                                      tile_bounds + it.bhm * sched.n_tiles);
    const int2 span = it.span(sched);
    TileSegment seg{0, span.x, min(span.y, key_tiles.n_end)};
    for (int flags = kFirstSegment;; flags = 0, k.advance()) {
      if (flags == 0) queue.wait_empty(k);
      seg = build_tile_segment<kThreads, true>(queue.tiles(k), scratch, seg.rest_begin, seg.rest_end,
                                               sm90::kListCapacity, [&](int n) { return key_tiles.code(n); }, ltid, sync);
      flags |= seg.last() ? kLastSegment : 0;
      FwdItemRecord& rec = queue.record(k);
      if (ltid == 0) rec.count = seg.count, rec.m_block = it.m_block, rec.h = it.h, rec.b = it.b, rec.flags = flags;
      record_busy_ranges<Cfg::kConsumers, Cfg::kConsumerRows>(rec, queue.tiles(k), seg.count, key_tiles, row0,
                                                              s.seqlen_q, ltid);
      queue.publish(k);  // release: this thread's list entries and the record
      if (seg.last()) break;
    }
    k.advance();
  }
}

}  // namespace cuda
}  // namespace flashmask
