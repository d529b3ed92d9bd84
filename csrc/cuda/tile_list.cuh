// Tile lists: the compacted, ascending lists of the tiles a row or column block visits
// (the kernels stream only these), their entry type, and the persistent kernels' work
// counter. Owns the list encoding; which tiles are listed is the mask's (mask.cuh).
#pragma once

#include <climits>
#include <cstdint>

#include "flashmask/mask.h"

namespace flashmask {
namespace cuda {

// A thread index's lane is tid & (kWarpSize - 1), its warp tid >> kLog2WarpSize, spelled out where
// used: the same expressions through a helper function gave the mma.sync forward 24 more SASS
// instructions (nvcc 13.0, sm_90a), and signed % and / cost instructions for a sign never seen.
constexpr int kWarpSize = 32, kLog2WarpSize = 5;
static_assert(1 << kLog2WarpSize == kWarpSize, "kLog2WarpSize is log2(kWarpSize)");
constexpr unsigned kFullWarp = 0xffffffffu;  // every lane of a warp, for its votes and shuffles

// One list entry: a tile index (below 2^24), its TileKind (kUnmasked or kPartial; skipped
// tiles are not listed) and a partial tile's mask test (mask.cuh: partial_tile_test), packed
// into the 32 bits a list slot in shared memory holds. A classifier returns kind and test
// together as one code (code()), which build_tile_segment stores as it is.
struct TileEntry {
  static constexpr int kKindShift = 24, kKindBits = 2, kIndexMask = (1 << kKindShift) - 1;
  int bits;
  static __host__ __device__ __forceinline__ int code(TileKind kind, int test) {
    return static_cast<int>(kind) | (test << kKindBits);
  }
  static __device__ __forceinline__ TileEntry make(int index, int code) { return TileEntry{index | (code << kKindShift)}; }
  __device__ __forceinline__ int index() const { return bits & kIndexMask; }
  __device__ __forceinline__ int kind() const { return (bits >> kKindShift) & ((1 << kKindBits) - 1); }
  __device__ __forceinline__ int test() const { return bits >> (kKindShift + kKindBits); }
  __device__ __forceinline__ bool partial() const { return kind() == static_cast<int>(TileKind::kPartial); }
};
static_assert(sizeof(TileEntry) == sizeof(int), "a list slot is one int of shared memory");

// A list built in segments of at most `capacity` entries (the Hopper kernels hand a long
// list over in fixed-size buffers): the entries written, and the candidates [rest_begin,
// rest_end) not yet listed, where the next segment resumes (empty: this was the last).
struct TileSegment {
  int count, rest_begin, rest_end;
  __device__ __forceinline__ bool last() const { return rest_begin >= rest_end; }
};
// A segment's place in its work item's list, as the Hopper kernels' list records carry it:
// consumers reset their accumulators at the first segment and write out at the last.
enum SegmentFlags : int { kFirstSegment = 1, kLastSegment = 2 };

// The scratch ints a list builder's group shares (in shared memory, next to its lists): the
// warps' counts from slot 0, build_tile_segment's rest slot, take_work_item's slot.
constexpr int kListScratchInts = 32, kRestSlot = 30, kWorkItemSlot = 31;
static_assert(kRestSlot < kWorkItemSlot && kWorkItemSlot < kListScratchInts,
              "the work item's slot lies past the list builder's, inside the scratch");

// Compaction by a group of kThreads threads (local ids tid = 0..kThreads-1, whole
// warps): list[0..count) = TileEntry::make(index, code) for the indices of [begin, end)
// whose code (classify(index), TileEntry::code) is not kSkip, in ascending order (kDescending: descending),
// up to `capacity` entries. The candidates after the last listed one, from the first that
// did not fit, are the segment's rest. Every thread returns the same; call uniformly.
// `sync()` is the group's barrier (__syncthreads for a whole CTA). scratch[0..kWarps) holds
// the warps' counts, scratch[kRestSlot] the first index that did not fit.
template <int kThreads, bool kDescending, typename F, typename Sync>
__device__ __forceinline__ TileSegment build_tile_segment(TileEntry* list, int* scratch, int begin, int end,
                                                          int capacity, F classify, int tid, Sync sync) {
  constexpr int kWarps = kThreads / kWarpSize;
  static_assert(kWarps <= kRestSlot, "scratch holds the warps' counts below the rest slot");
  const int lane = tid & (kWarpSize - 1), warp = tid >> kLog2WarpSize, span = end - begin;
  int count = 0;
  for (int v0 = 0; v0 < span; v0 += kThreads) {
    const int v = v0 + tid;
    const int i = kDescending ? end - 1 - v : begin + v;
    const int code = v < span ? classify(i) : static_cast<int>(TileKind::kSkip);
    const bool keep = code != static_cast<int>(TileKind::kSkip);
    const unsigned ballot = __ballot_sync(kFullWarp, keep);
    if (lane == 0) scratch[warp] = __popc(ballot);
    sync();
    int off = count, total = 0;
#pragma unroll
    for (int w = 0; w < kWarps; ++w) {
      const int cw = scratch[w];
      off += w < warp ? cw : 0;
      total += cw;
    }
    const int pos = off + __popc(ballot & ((1u << lane) - 1u));
    if (keep && pos < capacity) list[pos] = TileEntry::make(i, code);
    if (keep && pos == capacity) scratch[kRestSlot] = i;
    count += total;
    sync();  // scratch is read (and the rest slot written) before it is reused
    if (count > capacity) {  // the next write of the rest slot follows a barrier
      const int stop = scratch[kRestSlot];
      return kDescending ? TileSegment{capacity, begin, stop + 1} : TileSegment{capacity, stop, end};
    }
  }
  return TileSegment{count, 0, 0};
}
// The whole list (no capacity), ascending; returns the count.
template <int kThreads, typename F, typename Sync>
__device__ __forceinline__ int build_tile_list(TileEntry* list, int* scratch, int begin, int end, F classify,
                                               int tid, Sync sync) {
  return build_tile_segment<kThreads, false>(list, scratch, begin, end, INT_MAX, classify, tid, sync).count;
}
// The same over a whole CTA of kThreads threads.
template <int kThreads, typename F>
__device__ __forceinline__ int build_tile_list(TileEntry* list, int* scratch, int begin, int end,
                                               F classify) {
  return build_tile_list<kThreads>(list, scratch, begin, end, classify, static_cast<int>(threadIdx.x),
                                   [] { __syncthreads(); });
}

// A persistent CTA's next work item: one thread of a group of threads takes it from the
// global counter and the group reads it through scratch[kWorkItemSlot] (not a slot
// build_tile_segment uses). Every thread returns the item; call uniformly.
template <typename Sync>
__device__ __forceinline__ int take_work_item(int* counter, int* scratch, int tid, Sync sync) {
  if (tid == 0) scratch[kWorkItemSlot] = atomicAdd(counter, 1);
  sync();
  const int item = scratch[kWorkItemSlot];
  sync();  // every thread has read it before scratch is reused
  return item;
}

}  // namespace cuda
}  // namespace flashmask
