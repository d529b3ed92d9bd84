// Framework-free C interface of the FlashMask CUDA kernels (libflashmask_cuda).
//
// The caller owns every buffer: it fills a FwdParams / BwdParams (params.h),
// asks for the workspace size, allocates that many bytes of device memory
// (any allocator; 256-byte aligned is enough, the frameworks' allocators are)
// and launches on its own stream. Nothing is allocated or synchronised here.
// Every function returns 0 on success; otherwise flashmask_cuda_last_error()
// holds a message for the calling thread.
//
// Supported: sm80+ (built for sm_80 and sm_90a), fp16 / bf16, head_dim 1..kMaxHeadDim:
// those in kCompiledHeadDims (flashmask/head_dims.h) run natively (the head dimension
// must be contiguous; q/k/v/out/dout/dq/dk/dv base pointers 16-byte aligned and their
// batch/row/head strides multiples of 8 elements), the others through zero-padded
// copies in the workspace (any strides; see csrc/cuda/padded_head_dim.h); GQA / MQA,
// num_mask_heads in {1, num_heads_k, num_heads}, seqlen_q != seqlen_k (bottom-right
// causal), optional block_mask.
#pragma once

#include <stddef.h>
#include <cuda_runtime_api.h>

#include "flashmask/params.h"

#define FLASHMASK_CUDA_ABI_VERSION 2

extern "C" {

int flashmask_cuda_abi_version(void);
// sizeof(FwdParams) / sizeof(BwdParams) as compiled, for bindings that mirror the structs.
size_t flashmask_cuda_fwd_params_size(void);
size_t flashmask_cuda_bwd_params_size(void);

size_t flashmask_cuda_fwd_workspace_size(const flashmask::FwdParams* params);
size_t flashmask_cuda_bwd_workspace_size(const flashmask::BwdParams* params);

// out and lse are fully written (fully masked rows: out 0, lse -inf).
int flashmask_cuda_fwd(const flashmask::FwdParams* params, void* workspace,
                       size_t workspace_bytes, cudaStream_t stream);
// dq, dk, dv are fully written. params->deterministic selects the
// bitwise-reproducible path (no atomics; a separate dQ kernel).
int flashmask_cuda_bwd(const flashmask::BwdParams* params, void* workspace,
                       size_t workspace_bytes, cudaStream_t stream);

const char* flashmask_cuda_last_error(void);

}  // extern "C"
