// Run-time services of the CUDA library (runtime.h).
#include "runtime.h"

#include <cstdarg>
#include <cstdio>
#include <cstdlib>

#include "tensor_maps.h"

namespace flashmask {
namespace cuda {

namespace {

constexpr size_t kErrorBytes = 1024;
// Per thread: the C API reports failures by return code and the message stays readable
// until the same thread fails again, whatever other threads do meanwhile.
thread_local char g_error[kErrorBytes] = "";

// Devices whose attributes are cached; a device beyond them gets the fallback.
constexpr int kMaxCachedDevices = 64;
// Fallbacks where an attribute cannot be read: the least any supported GPU (sm80+) has.
constexpr int kFallbackSmemOptinBytes = 48 * 1024;
constexpr int kFallbackCcMajor = 8;
constexpr int kFallbackSmCount = 1;
// The PTX version of the sm_90a code: below it, the Hopper kernels are not in this build.
constexpr int kSm90aPtxVersion = 90;
constexpr int kHopperCcMajor = 9;

// An attribute of the current device, read once per device (`fallback` when it cannot be
// read). 0 marks "not read yet": every attribute used here is positive.
template <cudaDeviceAttr kAttr>
int cached_device_attribute(int fallback) {
  static int cache[kMaxCachedDevices] = {0};
  int dev = 0;
  if (cudaGetDevice(&dev) != cudaSuccess || dev < 0 || dev >= kMaxCachedDevices) return fallback;
  if (cache[dev] == 0) {
    int v = fallback;
    if (cudaDeviceGetAttribute(&v, kAttr, dev) != cudaSuccess) v = fallback;
    cache[dev] = v;
  }
  return cache[dev];
}

// Its PTX version tells which of the build's architectures the device runs.
__global__ void sm90a_probe_kernel() {}

}  // namespace

int report_error(const char* fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  std::vsnprintf(g_error, sizeof(g_error), fmt, ap);
  va_end(ap);
  return 1;
}

int check_cuda(cudaError_t e, const char* what) {
  if (e == cudaSuccess) return 0;
  return report_error("%s: CUDA error %d (%s)", what, static_cast<int>(e), cudaGetErrorString(e));
}

const char* last_error_message() { return g_error; }

int smem_optin_bytes() {
  return cached_device_attribute<cudaDevAttrMaxSharedMemoryPerBlockOptin>(kFallbackSmemOptinBytes);
}
int device_cc_major() {
  return cached_device_attribute<cudaDevAttrComputeCapabilityMajor>(kFallbackCcMajor);
}
int sm_count() { return cached_device_attribute<cudaDevAttrMultiProcessorCount>(kFallbackSmCount); }

bool sm90_kernels_available() {
  if (device_cc_major() != kHopperCcMajor) return false;
  // The sm_90a build of this library, not PTX of another arch JIT-compiled for Hopper.
  static const bool has_sm90a = [] {
    cudaFuncAttributes attr;
    return cudaFuncGetAttributes(&attr, sm90a_probe_kernel) == cudaSuccess &&
           attr.ptxVersion >= kSm90aPtxVersion && tensor_map_encoding_available();
  }();
  return has_sm90a;
}

bool sm90_kernels_enabled() {
  const char* off = std::getenv("FLASHMASK_DISABLE_SM90");
  if (off != nullptr && off[0] != '\0' && off[0] != '0') return false;
  return sm90_kernels_available();
}

}  // namespace cuda
}  // namespace flashmask
