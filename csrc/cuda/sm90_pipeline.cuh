// Typed synchronisation of the Hopper kernels' roles: where a role stands in a ring of
// mbarrier-guarded buffers (PipelineState), and the ids of the named barriers
// (bar.sync / bar.arrive) each kernel uses.
#pragma once

#include "sm90_primitives.cuh"

namespace flashmask {
namespace cuda {
namespace sm90 {

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

// Named barrier ids (0 is __syncthreads). The forward: the consumers' ping-pong turns
// (consumer c waits on kConsumerTurn0 + c) and the scheduler warps' list building.
enum class FwdBarrier : int { kConsumerTurn0 = 1, kConsumerTurn1 = 2, kScheduler = 3 };
// The backward: both consumers at an item's end, each consumer's own warpgroup
// (kConsumer0 + c: dQ staging, dK/dV stores), the producer's list builders.
enum class BwdBarrier : int { kConsumers = 1, kConsumer0 = 2, kConsumer1 = 3, kListBuilders = 4 };

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
