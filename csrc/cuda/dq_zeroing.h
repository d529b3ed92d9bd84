// The Hopper backward's fp32 dq accumulator zeroed on a stream beside the call's (perf-notes
// v88): the copy engine's memsets run under the persistent main kernel, which holds every SM,
// instead of in the call's path between the prep kernel and the main kernel.
//
// The accumulator is zeroed in chunks of whole slabs (a slab: the sq_pad x D rows of one
// (batch, key head)'s query heads, consecutive in [batch][head][sq_pad][D]); after chunk c a
// 4-byte memset makes ready[c] nonzero. The kernel's loader waits for an item's slab's chunk
// (wait_dq_zeroed, bwd_sm90_producer.cuh) before the item's first loads, and the call's stream
// waits for the last chunk (join_dq_zeroing) before anything after the main kernel reads the
// accumulator.
#pragma once

#include <cstddef>

#include <cuda_runtime_api.h>

namespace flashmask {
namespace cuda {

// At most this many chunks (the ready flags the workspace holds): each costs two memset
// calls on the host.
constexpr int kDqZeroMaxChunks = 16;
// Below this size the accumulator is zeroed on the call's stream as before: the side
// stream's host calls and events would cost more than the memset.
constexpr size_t kDqZeroBesideMinBytes = size_t{256} << 20;

// The loader's sleep between polls of a ready flag (only the first items wait).
constexpr unsigned kDqZeroPollNs = 128;
// The kernel's view: ready == nullptr when the accumulator was zeroed before the launch.
struct DqZeroChunks {
  const int* ready = nullptr;
  int chunk_slabs = 1;  // slabs per chunk
  __host__ __device__ int chunk_of(int slab) const { return slab / chunk_slabs; }
};

// Whether an accumulator of `bytes` is zeroed beside the call's stream: by its size
// (kDqZeroBesideMinBytes), or always / never where FLASHMASK_DQ_ZERO_BESIDE is 1 / 0 (read per
// call; the tests run their small cases through the side stream with it).
bool dq_zeroing_beside(size_t bytes);
// Zeroes `slabs` slabs of `slab_bytes` bytes from `base` beside `stream`: the chunk holding
// slab 0 first, then those holding slabs from `tail_slab` on (the tail order's window, whose
// items the kernel may take first), then the rest in order. `ready` (kDqZeroMaxChunks ints)
// must be zero in stream order before this call. Sets *chunks for the kernel and *joined, the
// event after the last chunk, for join_dq_zeroing. Nonzero on failure (error recorded).
int fork_dq_zeroing(char* base, size_t slab_bytes, int slabs, int tail_slab, int* ready, cudaStream_t stream,
                    DqZeroChunks* chunks, cudaEvent_t* joined);
// `stream` waits for the zeroing forked by fork_dq_zeroing; releases `joined`.
int join_dq_zeroing(cudaEvent_t joined, cudaStream_t stream);

}  // namespace cuda
}  // namespace flashmask
