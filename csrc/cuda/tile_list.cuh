// Tile lists: the compacted, ascending lists of the tiles a row or column block visits
// (the kernels stream only these), their entry type, and the persistent kernels' work
// counter. Owns the list encoding; which tiles are listed is the mask's (mask.cuh).
#pragma once

#include <cstdint>

#include "flashmask/mask.h"

namespace flashmask {
namespace cuda {

// One list entry: a tile index (below 2^24) and its TileKind (kUnmasked or kPartial; skipped
// tiles are not listed), packed into the 32 bits a list slot in shared memory holds.
struct TileEntry {
  static constexpr int kKindShift = 24, kIndexMask = (1 << kKindShift) - 1;
  int bits;
  static __device__ __forceinline__ TileEntry make(int index, int kind) { return TileEntry{index | (kind << kKindShift)}; }
  __device__ __forceinline__ int index() const { return bits & kIndexMask; }
  __device__ __forceinline__ int kind() const { return bits >> kKindShift; }
  __device__ __forceinline__ bool partial() const { return kind() == static_cast<int>(TileKind::kPartial); }
};
static_assert(sizeof(TileEntry) == sizeof(int), "a list slot is one int of shared memory");

// Compaction by a group of kThreads threads (local ids tid = 0..kThreads-1, whole
// warps): list[i] = TileEntry::make(index, kind) for every index in [begin, end) whose
// kind (classify(index)) is not kSkip, in ascending order. Every thread returns the
// count. `sync()` is the group's barrier (__syncthreads for a whole CTA); call uniformly.
template <int kThreads, typename F, typename Sync>
__device__ __forceinline__ int build_tile_list(TileEntry* list, int* scratch, int begin, int end,
                                               F classify, int tid, Sync sync) {
  constexpr int kWarps = kThreads / 32;
  const int lane = tid & 31, warp = tid >> 5;
  int count = 0;
  for (int base = begin; base < end; base += kThreads) {
    const int i = base + tid;
    const int kind = i < end ? classify(i) : static_cast<int>(TileKind::kSkip);
    const bool keep = kind != static_cast<int>(TileKind::kSkip);
    const unsigned ballot = __ballot_sync(0xffffffffu, keep);
    if (lane == 0) scratch[warp] = __popc(ballot);
    sync();
    int off = count, total = 0;
#pragma unroll
    for (int w = 0; w < kWarps; ++w) {
      const int cw = scratch[w];
      off += w < warp ? cw : 0;
      total += cw;
    }
    if (keep) list[off + __popc(ballot & ((1u << lane) - 1u))] = TileEntry::make(i, kind);
    count += total;
    sync();
  }
  return count;
}
// The same over a whole CTA of kThreads threads.
template <int kThreads, typename F>
__device__ __forceinline__ int build_tile_list(TileEntry* list, int* scratch, int begin, int end,
                                               F classify) {
  return build_tile_list<kThreads>(list, scratch, begin, end, classify, static_cast<int>(threadIdx.x),
                                   [] { __syncthreads(); });
}

// A persistent CTA's next work item: one thread of a group of threads takes it from the
// global counter and the group reads it through scratch[31] (build_tile_list uses only the
// first kWarps slots). Every thread returns the item; call uniformly.
template <typename Sync>
__device__ __forceinline__ int take_work_item(int* counter, int* scratch, int tid, Sync sync) {
  if (tid == 0) scratch[31] = atomicAdd(counter, 1);
  sync();
  const int item = scratch[31];
  sync();  // every thread has read it before scratch is reused
  return item;
}

}  // namespace cuda
}  // namespace flashmask
