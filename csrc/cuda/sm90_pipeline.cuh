// Typed synchronisation of the Hopper kernels' roles: where a role stands in a ring of
// mbarrier-guarded buffers (PipelineState), and the ids of the named barriers
// (bar.sync / bar.arrive) each kernel uses.
#pragma once

#include "sm90_primitives.cuh"
#include "tile_list.cuh"

namespace flashmask {
namespace cuda {
namespace sm90 {

// The kernel's shared-memory layout at the first 1024-byte aligned address of the
// dynamic shared memory (SW128 tiles need it; the launch adds 1024 bytes of slack).
template <typename Smem>
__device__ __forceinline__ Smem& aligned_smem() {
  extern __shared__ char smem_raw[];
  constexpr uint32_t kAlign = sm90::kSw128GroupBytes;
  return *reinterpret_cast<Smem*>(smem_raw + ((kAlign - (smem_u32(smem_raw) & (kAlign - 1))) & (kAlign - 1)));
}

// A role's position in a ring of kStages buffers, each with a "full" and an "empty"
// mbarrier: the count-th use of the ring is buffer count % kStages, and its barriers are
// in phase (count / kStages) & 1. Producers wait on "empty" with the opposite parity
// (a fresh barrier counts as having completed the phase before phase 0).
template <int kStages>
struct PipelineState {
  int count = 0;  // uses of the ring so far (kept across work items)
  __device__ __forceinline__ int stage() const { return count % kStages; }
  __device__ __forceinline__ int phase() const { return (count / kStages) & 1; }
  // The position i uses further on.
  __device__ __forceinline__ PipelineState ahead(int i) const { return PipelineState{count + i}; }
  __device__ __forceinline__ void advance(int n = 1) { count += n; }
  // Consumer side: wait until buffer stage() is full.
  __device__ __forceinline__ void wait_full(uint64_t* full) const { mbar_wait(full + stage(), phase()); }
  // Producer side: wait until buffer stage() is empty.
  __device__ __forceinline__ void wait_empty(uint64_t* empty) const { mbar_wait(empty + stage(), phase() ^ 1); }
};

// Entries of one tile-list buffer: a work item's list longer than this is handed over in
// segments (tile_list.cuh: TileSegment, SegmentFlags), so shared memory does not grow with
// the sequence. 1024 entries: one segment per item up to 128K keys in the forward (128-key
// tiles), 8 KB for the two buffers, which every Hopper configuration has to spare.
constexpr int kListCapacity = 1024;

// Two tile-list buffers handed from the role that builds the lists to the roles that read
// them, so that the next list is built while this one runs: the k-th list uses buffer
// k % 2, "full" completes when the builders have written it and "empty" when every reader
// is done with it. Smem holds list_full, list_empty, records[2] (what the list is for) and
// lists[2][kListCapacity].
template <typename Smem>
struct TileListQueue {
  using State = PipelineState<2>;
  Smem& sm;

  // The builders' side: wait for buffer k, fill its record and list, publish it.
  __device__ __forceinline__ void wait_empty(State k) const { k.wait_empty(sm.list_empty); }
  __device__ __forceinline__ auto& record(State k) const { return sm.records[k.stage()]; }
  __device__ __forceinline__ void publish(State k) const { mbar_arrive(sm.list_full + k.stage()); }
  // The readers' side: wait for list k (View(record, tiles): the reader's copy), release it.
  __device__ __forceinline__ TileEntry* tiles(State k) const { return sm.lists[k.stage()]; }
  template <typename View>
  __device__ __forceinline__ View wait(State k) const {
    k.wait_full(sm.list_full);
    return View(sm.records[k.stage()], tiles(k));
  }
  __device__ __forceinline__ void release(State k) const { mbar_arrive(sm.list_empty + k.stage()); }
};

// Named barrier ids (0 is __syncthreads). The forward: the consumers' turns (consumer c
// waits on kConsumerTurn0 + c, c < kMaxFwdConsumers), the scheduler warps' list building and
// each consumer's own warpgroup before its output's TMA store (kConsumerOutput0 + c).
constexpr int kMaxFwdConsumers = 3;
enum class FwdBarrier : int {
  kConsumerTurn0 = 1,
  kScheduler = 1 + kMaxFwdConsumers,
  kConsumerOutput0 = 2 + kMaxFwdConsumers
};
// The backward: both consumers at an item's end, each consumer's own warpgroup
// (kConsumer0 + c: dQ staging, dK/dV stores), the producer's list builders, both
// consumers' halves of a tile's P^T and dS^T stored (D = 256).
// kDqFree0/1 and kDqFull0/1: a consumer's dQ staging is free again / fully stored; the issuer's
// warp arrives on the first and waits on the second, the other three warps the other way round.
enum class BwdBarrier : int {
  kConsumers = 1,
  kConsumer0 = 2,
  kConsumer1 = 3,
  kListBuilders = 4,
  kScoresStored = 5,
  kDqFree0 = 6,
  kDqFree1 = 7,
  kDqFull0 = 8,
  kDqFull1 = 9
};

template <typename Id>
__device__ __forceinline__ int barrier_id(Id id, int offset = 0) {
  return static_cast<int>(id) + offset;
}
template <typename Id>
__device__ __forceinline__ void named_barrier_sync(Id id, int threads, int offset = 0) {
  named_barrier_sync(barrier_id(id, offset), threads);
}
template <typename Id>
__device__ __forceinline__ void named_barrier_arrive(Id id, int threads, int offset = 0) {
  named_barrier_arrive(barrier_id(id, offset), threads);
}

}  // namespace sm90
}  // namespace cuda
}  // namespace flashmask
