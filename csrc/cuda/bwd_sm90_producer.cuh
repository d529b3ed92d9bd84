// The Hopper backward's producer roles (warpgroup 0):
//  - the list builders (warps 1-3): take the next work item (a key block of one key head
//    and batch, in grid order moved by the tail order: tail_order.cuh) from the global
//    counter and build, per query head of its
//    GQA group, the query-tile list (skip / unmasked / partial, mask.cuh) into one of two
//    list buffers (BwdListQueue), in segments of at most kListCapacity tiles;
//  - the loader (one lane of warp 0): per item, K and V of the key block by TMA (once both
//    consumers are past the previous item's last GEMM), and per listed query tile of
//    kBlockM rows Q and dO by TMA plus the tile's lse*log2(e) and rowsum(dO*O) by 1-D bulk copies,
//    into a kStages ring that runs on across items.
#pragma once

#include <cuda.h>

#include "flashmask_bwd_kernel.cuh"
#include "mask.cuh"
#include "sm90_pipeline.cuh"

namespace flashmask {
namespace cuda {

// The fp32 dq accumulator [batch, heads, sq_pad, D] as the reduce-adds address it (query
// tiles in DqFragmentOrder: dq_accum_order.cuh).
struct DqAccumTarget {
  float* base;
  int num_heads, sq_pad;
  // The first float of the query tile whose first row is row0.
  __device__ __forceinline__ float* tile(int b, int h, int row0, int d) const {
    return base + ((static_cast<int64_t>(b) * num_heads + h) * sq_pad + row0) * d;
  }
};
// The kernel's TMA descriptors (a __grid_constant__ parameter; see FwdTensorMaps): q and dout
// with boxes of kBlockM rows, k and v of kBlockN, dk and dv of 64 (one consumer's rows); and,
// beside them, the dq accumulator's address, read from the parameter space where it is used.
struct BwdTensorMaps {
  CUtensorMap q, dout, k, v, dk, dv;
  DqAccumTarget dq;
};

// A query-tile list (or one segment of it: a list longer than a list buffer, kListCapacity,
// comes as consecutive segments) as the builders publish it; flags (SegmentFlags) mark the
// item's first list segment (its first query head's) and its last (its last head's); count
// -1 ends the work. Padded to 8 ints.
struct BwdListRecord {
  int count, n_block, hk, b, hi, flags;
  int pad[2];
};
// A published list as the loader and the consumers read it.
struct BwdList {
  int count, n_block, hk, b, hi, flags;
  const TileEntry* tiles;  // ascending query tiles
  __device__ __forceinline__ BwdList(const BwdListRecord& r, const TileEntry* t)
      : count(r.count), n_block(r.n_block), hk(r.hk), b(r.b), hi(r.hi), flags(r.flags), tiles(t) {}
  __device__ __forceinline__ bool first() const { return flags & kFirstSegment; }
  __device__ __forceinline__ bool last() const { return flags & kLastSegment; }
};

// The CTA's lists (sm90_pipeline.cuh: TileListQueue), in order: for each item it takes, one
// per query head hi of the group; the readers are the loader and every consumer thread.
// list_issued[buf] completes when the loader has issued the list's last tile: the builders
// take the next item only then.
constexpr int kBwdListBuffers = 2;
using BwdListState = sm90::PipelineState<kBwdListBuffers>;
template <typename Smem>
struct BwdListQueue : sm90::TileListQueue<Smem> {
  __device__ __forceinline__ void wait_issued(BwdListState l) const { l.wait_full(this->sm.list_issued); }
  __device__ __forceinline__ void mark_issued(BwdListState l) const {
    sm90::mbar_arrive(this->sm.list_issued + l.stage());
  }
};

// Work item `item` in grid order: key block n_block of key head hk, batch b (key blocks fastest).
struct BwdItemCoords {
  int n_block, hk, b;
  __device__ __forceinline__ BwdItemCoords(int item, int n_tiles, int heads_k)
      : n_block(item % n_tiles), hk(item / n_tiles % heads_k), b(item / n_tiles / heads_k) {}
};
// The query tiles that query head hi of item c's group visits (mask.cuh).
template <typename Cfg>
__device__ __forceinline__ QueryTileClassifier<Cfg::kBlockM> bwd_query_tiles(const BwdParams& p,
                                                                              const TileBounds* tile_bounds,
                                                                              const BwdItemCoords& c, int hi) {
  constexpr int kBlockN = Cfg::kBlockN;
  const AttentionShape& s = p.shape;
  const int n_tiles = (s.seqlen_k + kBlockN - 1) / kBlockN, n0 = c.n_block * kBlockN;
  const int64_t bhm = mask_row_for(p.mask, s, c.b, c.hk * (s.num_heads / s.num_heads_k) + hi);
  return QueryTileClassifier<Cfg::kBlockM>(p.mask, s.seqlen_q, s.seqlen_k, bhm, n0, min(kBlockN, s.seqlen_k - n0),
                                           kBlockN, load_tile_bounds(tile_bounds + bhm * n_tiles + c.n_block));
}

// One work item: per query head hi of the group, its query-tile list in segments, each into
// the next list buffer.
template <typename Cfg, typename Smem>
__device__ __forceinline__ void bwd_list_item(const BwdListQueue<Smem>& queue, const BwdParams& p, const BwdWork& w,
                                              BwdListState& l, const BwdItemCoords& c, int ltid) {
  using namespace sm90;
  const int group = p.shape.num_heads / p.shape.num_heads_k;
  auto sync = [] { named_barrier_sync(BwdBarrier::kListBuilders, Cfg::kListBuilders); };
  for (int hi = 0; hi < group; ++hi) {
    const QueryTileClassifier<Cfg::kBlockM> query_tiles = bwd_query_tiles<Cfg>(p, w.tile_bounds, c, hi);
    TileSegment seg{0, query_tiles.m_begin, query_tiles.m_end};
    for (int flags = hi == 0 ? kFirstSegment : 0, segment = 0;; flags = 0, ++segment) {
      // Just in time: a later head's list once the loader has issued the last tile of the
      // previous list (the first head's: bwd_list_builder_role); a list's later segments at once.
      if (hi > 0 && segment == 0) queue.wait_issued(l.ahead(-1));
      queue.wait_empty(l);
      seg = build_tile_segment<Cfg::kListBuilders, false>(queue.tiles(l), queue.sm.scratch, seg.rest_begin,
                                                          seg.rest_end, kListCapacity,
                                                          [&](int m) { return query_tiles.code(m); }, ltid, sync);
      flags |= seg.last() && hi == group - 1 ? kLastSegment : 0;
      if (ltid == 0) queue.record(l) = BwdListRecord{seg.count, c.n_block, c.hk, c.b, hi, flags, {0, 0}};
      queue.publish(l);  // release: this thread's list entries (and the record)
      l.advance();
      if (seg.last()) break;
    }
  }
}

// A warp per item of the last kTailWindow of `items`: the query tiles bwd_list_item lists for
// it over its group's heads, the tail order's lengths (tail_order.cuh).
template <typename Cfg>
__global__ void bwd_item_lengths_kernel(const BwdParams p, const TileBounds* tile_bounds, int items, int* lengths) {
  const AttentionShape& s = p.shape;
  const int window = tail_window(items), lane = threadIdx.x % kWarpSize;
  const int i = static_cast<int>((blockIdx.x * blockDim.x + threadIdx.x) / kWarpSize);
  if (i >= window) return;
  const BwdItemCoords c(items - window + i, (s.seqlen_k + Cfg::kBlockN - 1) / Cfg::kBlockN, s.num_heads_k);
  int count = 0;
  for (int hi = 0; hi < s.num_heads / s.num_heads_k; ++hi) {
    const QueryTileClassifier<Cfg::kBlockM> query_tiles = bwd_query_tiles<Cfg>(p, tile_bounds, c, hi);
    for (int m = query_tiles.m_begin + lane; m < query_tiles.m_end; m += kWarpSize)
      count += query_tiles.code(m) != static_cast<int>(TileKind::kSkip);
  }
  count = __reduce_add_sync(kFullWarp, count);
  if (lane == 0) lengths[i] = count;
}

template <typename Cfg, typename Smem>
__device__ __forceinline__ void bwd_list_builder_role(const BwdTensorMaps& maps, const BwdListQueue<Smem>& queue,
                                                      const BwdParams& p, const BwdWork& w, int ltid) {
  using namespace sm90;
  constexpr int kBlockN = Cfg::kBlockN;
  const AttentionShape& s = p.shape;
  const int n_tiles = (s.seqlen_k + kBlockN - 1) / kBlockN;
  auto sync = [] { named_barrier_sync(BwdBarrier::kListBuilders, Cfg::kListBuilders); };
  const int items = n_tiles * s.num_heads_k * s.batch;  // grid order: key blocks fastest
  for (BwdListState l;;) {
    // Just in time: the next item once the loader has issued the last tile of the previous
    // list. An item taken earlier would start long after its neighbours (a CTA in a long
    // item would hold it), when their Q, dO and dQ rows have left L2.
    if (l.count > 0) queue.wait_issued(l.ahead(-1));
    queue.wait_empty(l);
    const int taken = take_work_item(w.next_item, queue.sm.scratch, ltid, sync);
    if (taken >= items) {
      if (ltid == 0) queue.record(l).count = -1;
      queue.publish(l);
      break;
    }
    const BwdItemCoords c(w.tail.item(taken), n_tiles, s.num_heads_k);
    if (ltid == 0) {  // K and V into L2 now: the loader brings them once this item's turn comes
      tma_prefetch_tile_l2<Cfg::kColBlocks>(&maps.k, c.n_block * kBlockN, c.hk, c.b);
      tma_prefetch_tile_l2<Cfg::kColBlocks>(&maps.v, c.n_block * kBlockN, c.hk, c.b);
    }
    bwd_list_item<Cfg>(queue, p, w, l, c, ltid);
  }
}

template <typename T, typename Cfg, typename Smem>
__device__ __forceinline__ void bwd_load_role(const BwdTensorMaps& maps, const BwdListQueue<Smem>& queue,
                                              const BwdWork& w, int H, int group) {
  using namespace sm90;
  constexpr int kColBlocks = Cfg::kColBlocks, kBlockM = Cfg::kBlockM, kBlockN = Cfg::kBlockN;
  Smem& sm = queue.sm;
  T* sK = reinterpret_cast<T*>(sm.k);
  T* sV = reinterpret_cast<T*>(sm.v);
  T* sQ = reinterpret_cast<T*>(sm.q[0]);
  T* sdO = reinterpret_cast<T*>(sm.dout[0]);
  float* sL = sm.lse[0];
  float* sDs = sm.dsum[0];
  prefetch_tensor_map(&maps.q);
  prefetch_tensor_map(&maps.dout);
  prefetch_tensor_map(&maps.k);
  prefetch_tensor_map(&maps.v);
  PipelineState<Cfg::kStages> ring;
  PipelineState<1> kv;  // the CTA's items so far: K/V have one buffer
  for (BwdListState l;; l.advance()) {
    const BwdList ls = queue.template wait<BwdList>(l);
    if (ls.count < 0) break;
    // K/V of a new item once both consumers are done with the last one's (after this
    // item's first Q/dO tile is on its way, whose ring slot frees earlier).
    auto load_kv = [&]() {
      kv.wait_empty(&sm.kv_empty);
      mbar_arrive_expect_tx(&sm.kv_full, 2 * Cfg::kKVBytes);
      tma_load_tile<kColBlocks, kBlockN>(sK, &maps.k, &sm.kv_full, ls.n_block * kBlockN, ls.hk, ls.b);
      tma_load_tile<kColBlocks, kBlockN>(sV, &maps.v, &sm.kv_full, ls.n_block * kBlockN, ls.hk, ls.b);
      kv.advance();
    };
    const int h = ls.hk * group + ls.hi;
    const int64_t bh = static_cast<int64_t>(ls.b) * H + h;
    const float* gL = w.lse_log2 + bh * w.sq_pad;
    const float* gDs = w.dsum + bh * w.sq_pad;
    // One copy of the loop: the lone issuing thread waits on the ring anyway, and the
    // copies the compiler made of it spilled the producer's 24 registers.
#pragma unroll 1
    for (int i = 0; i < ls.count; ++i, ring.advance()) {
      const int st = ring.stage();
      const int m = ls.tiles[i].index();
      ring.wait_empty(sm.q_empty);
      mbar_arrive_expect_tx(sm.q_full + st, 2 * Cfg::kQBytes + 2 * Cfg::kRowBytes);
      tma_load_tile<kColBlocks, kBlockM>(sQ + st * kColBlocks * kBlockM * kSw128Cols, &maps.q, sm.q_full + st,
                                         m * kBlockM, h, ls.b);
      tma_load_tile<kColBlocks, kBlockM>(sdO + st * kColBlocks * kBlockM * kSw128Cols, &maps.dout, sm.q_full + st,
                                         m * kBlockM, h, ls.b);
      bulk_load(sL + st * kBlockM, gL + m * kBlockM, Cfg::kRowBytes, sm.q_full + st);
      bulk_load(sDs + st * kBlockM, gDs + m * kBlockM, Cfg::kRowBytes, sm.q_full + st);
      if (i == 0 && ls.first()) load_kv();
    }
    if (ls.count == 0 && ls.first()) load_kv();
    queue.mark_issued(l);  // the builders may take the next list
    queue.release(l);
  }
}

}  // namespace cuda
}  // namespace flashmask
