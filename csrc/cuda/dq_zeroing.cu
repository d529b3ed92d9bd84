// The dq accumulator zeroed beside the call's stream (dq_zeroing.h).
#include "dq_zeroing.h"

#include <cstdlib>
#include <mutex>

#include <cuda.h>

#include "runtime.h"

namespace flashmask {
namespace cuda {

namespace {

constexpr int kMaxSideStreams = 64;  // devices with side resources of their own
// The zeros the chunks are copied from: device-to-device copies run on the copy engine, a
// memset on the SMs, which the persistent kernel holds until it ends (perf-notes v88).
constexpr size_t kZeroSourceBytes = size_t{64} << 20;

// The current device's side stream (non-blocking: it orders itself against the call's stream
// by events only), its zero source and a word holding 1, made on first use.
struct SideResources {
  cudaStream_t stream = nullptr;
  char* zeros = nullptr;
  int* one = nullptr;
};
int side_resources(SideResources* out) {
  static std::mutex mu;
  static SideResources all[kMaxSideStreams];
  int dev = 0;
  if (int rc = check_cuda(cudaGetDevice(&dev), "dq zeroing: cudaGetDevice")) return rc;
  if (dev < 0 || dev >= kMaxSideStreams) return report_error("dq zeroing: device %d has no side stream", dev);
  std::lock_guard<std::mutex> lock(mu);
  SideResources& r = all[dev];
  if (!r.stream) {
    const int h_one = 1;
    char* buf = nullptr;
    if (check_cuda(cudaStreamCreateWithFlags(&r.stream, cudaStreamNonBlocking), "dq zeroing: side stream") ||
        check_cuda(cudaMalloc(&buf, kZeroSourceBytes + sizeof(int)), "dq zeroing: zero source") ||
        check_cuda(cudaMemsetAsync(buf, 0, kZeroSourceBytes, r.stream), "dq zeroing: zero source") ||
        check_cuda(cudaMemcpyAsync(buf + kZeroSourceBytes, &h_one, sizeof(int), cudaMemcpyHostToDevice, r.stream),
                   "dq zeroing: one") ||
        check_cuda(cudaStreamSynchronize(r.stream), "dq zeroing: side stream"))
      return 1;  // r.stream stays set: a later call fails at once instead of leaking more
    r.zeros = buf;
    r.one = reinterpret_cast<int*>(buf + kZeroSourceBytes);
  }
  if (!r.zeros) return report_error("dq zeroing: the side resources could not be made");
  *out = r;
  return 0;
}

#ifdef FM_DQ_FLAG_WRITE_VALUE
using WriteValue32 = CUresult (*)(CUstream, CUdeviceptr, cuuint32_t, unsigned int);
WriteValue32 write_value32() {
  static WriteValue32 fn = [] {
    void* ptr = nullptr;
    cudaDriverEntryPointQueryResult status;
    const cudaError_t e = cudaGetDriverEntryPoint("cuStreamWriteValue32", &ptr, cudaEnableDefault, &status);
    return e == cudaSuccess && status == cudaDriverEntryPointSuccess ? reinterpret_cast<WriteValue32>(ptr) : nullptr;
  }();
  return fn;
}
#endif

// Chunk c copied from the zero source, then its ready flag set, on the side stream.
int zero_chunk(const SideResources& side, char* base, size_t slab_bytes, int slabs, int chunk_slabs, int c,
               int* ready) {
  const int first = c * chunk_slabs, count = first + chunk_slabs <= slabs ? chunk_slabs : slabs - first;
  char* dst = base + first * slab_bytes;
  for (size_t left = count * slab_bytes; left > 0;) {
    const size_t n = left < kZeroSourceBytes ? left : kZeroSourceBytes;
    if (int rc = check_cuda(cudaMemcpyAsync(dst, side.zeros, n, cudaMemcpyDeviceToDevice, side.stream),
                            "dq zeroing: chunk copy"))
      return rc;
    dst += n, left -= n;
  }
#ifdef FM_DQ_FLAG_WRITE_VALUE
  WriteValue32 wv = write_value32();
  if (!wv) return report_error("dq zeroing: cuStreamWriteValue32 is not available");
  if (wv(side.stream, reinterpret_cast<CUdeviceptr>(ready + c), 1, 0) != CUDA_SUCCESS)
    return report_error("dq zeroing: cuStreamWriteValue32 failed");
  return 0;
#else
  return check_cuda(cudaMemcpyAsync(ready + c, side.one, sizeof(int), cudaMemcpyDeviceToDevice, side.stream),
                    "dq zeroing: ready flag");
#endif
}

}  // namespace

bool dq_zeroing_beside(size_t bytes) {
  const char* env = std::getenv("FLASHMASK_DQ_ZERO_BESIDE");
  if (env != nullptr && env[0] != '\0') return env[0] != '0';
  return bytes >= kDqZeroBesideMinBytes;
}

int fork_dq_zeroing(char* base, size_t slab_bytes, int slabs, int tail_slab, int* ready, cudaStream_t stream,
                    DqZeroChunks* chunks, cudaEvent_t* joined) {
  SideResources side;
  if (int rc = side_resources(&side)) return rc;
  const int chunk_slabs = (slabs + kDqZeroMaxChunks - 1) / kDqZeroMaxChunks;
  const int count = (slabs + chunk_slabs - 1) / chunk_slabs;
  const int tail_chunk = tail_slab / chunk_slabs;
  cudaEvent_t fork;
  if (check_cuda(cudaEventCreateWithFlags(&fork, cudaEventDisableTiming), "dq zeroing: event") ||
      check_cuda(cudaEventCreateWithFlags(joined, cudaEventDisableTiming), "dq zeroing: event"))
    return 1;
  int rc = check_cuda(cudaEventRecord(fork, stream), "dq zeroing: fork") ||
           check_cuda(cudaStreamWaitEvent(side.stream, fork, 0), "dq zeroing: fork wait");
  cudaEventDestroy(fork);  // released once the wait is done
  // Chunk 0, then the tail window's chunks, then the ones between.
  int order[kDqZeroMaxChunks], n = 0;
  order[n++] = 0;
  for (int c = tail_chunk > 1 ? tail_chunk : 1; c < count; ++c) order[n++] = c;
  for (int c = 1; c < tail_chunk && c < count; ++c) order[n++] = c;
  for (int i = 0; !rc && i < n; ++i) rc = zero_chunk(side, base, slab_bytes, slabs, chunk_slabs, order[i], ready);
  *chunks = DqZeroChunks{ready, chunk_slabs};
  rc = rc || check_cuda(cudaEventRecord(*joined, side.stream), "dq zeroing: join");
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
