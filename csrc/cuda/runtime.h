// Run-time services shared by the launchers: the calling thread's error message,
// CUDA error checks, cached device attributes, and whether the Hopper kernels can run.
#pragma once

#include <cuda_runtime_api.h>

namespace flashmask {
namespace cuda {

// Records a printf-style message for flashmask_cuda_last_error() and returns 1 (the C
// API's failure code), so that callers can `return report_error(...)`.
int report_error(const char* fmt, ...);
// 0 on cudaSuccess; otherwise records "<what>: CUDA error ..." and returns 1.
int check_cuda(cudaError_t e, const char* what);
// The calling thread's last message ("" when none was recorded).
const char* last_error_message();

// Attributes of the current device, read once per device.
int smem_optin_bytes();
int device_cc_major();
int sm_count();

// True on compute capability 9.x when this library holds sm_90a code and the driver
// can encode TMA descriptors.
bool sm90_kernels_available();
// sm90_kernels_available() and FLASHMASK_DISABLE_SM90 unset or 0 (read per call, so a
// process can compare the two kernel families).
bool sm90_kernels_enabled();

}  // namespace cuda
}  // namespace flashmask
