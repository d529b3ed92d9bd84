// The dq accumulator zeroed beside the call's stream (dq_zeroing.h).
#include "dq_zeroing.h"

#include <cstdlib>
#include <mutex>

#include "runtime.h"

namespace flashmask {
namespace cuda {

namespace {

constexpr int kMaxSideStreams = 64;  // devices with a side stream of their own

// The current device's side stream, created on first use (non-blocking: it orders itself
// against the call's stream by events only).
int side_stream(cudaStream_t* out) {
  static std::mutex mu;
  static cudaStream_t streams[kMaxSideStreams] = {};
  int dev = 0;
  if (int rc = check_cuda(cudaGetDevice(&dev), "dq zeroing: cudaGetDevice")) return rc;
  if (dev < 0 || dev >= kMaxSideStreams) return report_error("dq zeroing: device %d has no side stream", dev);
  std::lock_guard<std::mutex> lock(mu);
  if (!streams[dev] &&
      check_cuda(cudaStreamCreateWithFlags(&streams[dev], cudaStreamNonBlocking), "dq zeroing: side stream"))
    return 1;
  *out = streams[dev];
  return 0;
}

// Chunk c's memset, then its ready flag, on `side`.
int zero_chunk(char* base, size_t slab_bytes, int slabs, int chunk_slabs, int c, int* ready, cudaStream_t side) {
  const int first = c * chunk_slabs, count = first + chunk_slabs <= slabs ? chunk_slabs : slabs - first;
  if (int rc = check_cuda(cudaMemsetAsync(base + first * slab_bytes, 0, count * slab_bytes, side),
                          "dq zeroing: chunk memset"))
    return rc;
  return check_cuda(cudaMemsetAsync(ready + c, 1, sizeof(int), side), "dq zeroing: ready flag");
}

}  // namespace

bool dq_zeroing_beside(size_t bytes) {
  const char* env = std::getenv("FLASHMASK_DQ_ZERO_BESIDE");
  if (env != nullptr && env[0] != '\0') return env[0] != '0';
  return bytes >= kDqZeroBesideMinBytes;
}

int fork_dq_zeroing(char* base, size_t slab_bytes, int slabs, int tail_slab, int* ready, cudaStream_t stream,
                    DqZeroChunks* chunks, cudaEvent_t* joined) {
  cudaStream_t side;
  if (int rc = side_stream(&side)) return rc;
  const int chunk_slabs = (slabs + kDqZeroMaxChunks - 1) / kDqZeroMaxChunks;
  const int count = (slabs + chunk_slabs - 1) / chunk_slabs;
  const int tail_chunk = tail_slab / chunk_slabs;
  cudaEvent_t fork;
  if (check_cuda(cudaEventCreateWithFlags(&fork, cudaEventDisableTiming), "dq zeroing: event") ||
      check_cuda(cudaEventCreateWithFlags(joined, cudaEventDisableTiming), "dq zeroing: event"))
    return 1;
  int rc = check_cuda(cudaEventRecord(fork, stream), "dq zeroing: fork") ||
           check_cuda(cudaStreamWaitEvent(side, fork, 0), "dq zeroing: fork wait");
  cudaEventDestroy(fork);  // released once the wait is done
  // Chunk 0, then the tail window's chunks, then the ones between.
  int order[kDqZeroMaxChunks], n = 0;
  order[n++] = 0;
  for (int c = tail_chunk > 1 ? tail_chunk : 1; c < count; ++c) order[n++] = c;
  for (int c = 1; c < tail_chunk && c < count; ++c) order[n++] = c;
  for (int i = 0; !rc && i < n; ++i) rc = zero_chunk(base, slab_bytes, slabs, chunk_slabs, order[i], ready, side);
  *chunks = DqZeroChunks{ready, chunk_slabs};
  rc = rc || check_cuda(cudaEventRecord(*joined, side), "dq zeroing: join");
  // On a failure the call's stream still waits for what was queued before it returns.
  if (rc) join_dq_zeroing(*joined, stream);
  return rc;
}

int join_dq_zeroing(cudaEvent_t joined, cudaStream_t stream) {
  const int rc = check_cuda(cudaStreamWaitEvent(stream, joined, 0), "dq zeroing: join wait");
  cudaEventDestroy(joined);
  return rc;
}

}  // namespace cuda
}  // namespace flashmask
