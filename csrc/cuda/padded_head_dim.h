// Head dims without compiled kernels: every head_dim in [1, kMaxHeadDim] that is not
// one of kCompiledHeadDims (flashmask/head_dims.h) runs on the next compiled one. The inputs are copied into
// zero-padded contiguous buffers in the workspace, the compiled kernels run on those,
// and the outputs are copied back. Zero columns add nothing to Q K^T, the output's extra
// columns are P times zero columns of V, and the extra gradient columns are dropped, so
// the result is the unpadded problem's (softmax_scale is used as the caller gave it).
#pragma once

#include <cstddef>

#include <cuda_runtime_api.h>

#include "flashmask/params.h"

namespace flashmask {
namespace cuda {

// The smallest compiled head dim >= head_dim; 0 when head_dim is outside [1, kMaxHeadDim].
int compiled_head_dim(int head_dim);

// Workspace bytes and runs for a head_dim that is not compiled (params already validated).
size_t padded_fwd_workspace_size(const FwdParams& p);
size_t padded_bwd_workspace_size(const BwdParams& p);
int run_fwd_padded(const FwdParams& p, void* workspace, cudaStream_t stream);
int run_bwd_padded(const BwdParams& p, void* workspace, cudaStream_t stream);

}  // namespace cuda
}  // namespace flashmask
