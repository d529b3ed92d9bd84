// GPU host functions of the Paddle op: a thin adapter onto the framework-free
// CUDA interface (flashmask/cuda_api.h). Outputs and the workspace are Paddle
// tensors on the inputs' place; kernels run on q's stream. Inputs arrive
// validated and contiguous (flashmask_op.cc).
//
// Deterministic backward: FLAGS_cudnn_deterministic=1 (Paddle's usual switch)
// or FLASHMASK_DETERMINISTIC=1.
#include <cstdlib>
#include <cstring>
#include <vector>

#include "flashmask/cuda_api.h"
#include "flashmask_op.h"
#include "paddle/extension.h"

namespace {

bool EnvOn(const char* name) {
  const char* v = std::getenv(name);
  return v != nullptr && (std::strcmp(v, "1") == 0 || std::strcmp(v, "true") == 0 ||
                          std::strcmp(v, "True") == 0);
}

void CheckGpuHeadDim(const paddle::Tensor& q) {
  const int64_t d = q.shape()[3];
  PD_CHECK(flashmask_cuda_supports_head_dim(static_cast<int>(d)),
           "flashmask_attention (GPU): head_dim must be 64, 128 or 256, got ", d);
}

paddle::Tensor Workspace(size_t bytes, const paddle::Place& place) {
  const int64_t n = static_cast<int64_t>(bytes > 0 ? bytes : 1);
  return paddle::empty({n}, paddle::DataType::UINT8, place);
}

}  // namespace

std::vector<paddle::Tensor> FlashMaskForwardGPU(const paddle::Tensor& q, const paddle::Tensor& k,
                                                const paddle::Tensor& v,
                                                const paddle::Tensor& startend_row_indices,
                                                const paddle::optional<paddle::Tensor>& block_mask,
                                                bool causal, float softmax_scale) {
  CheckGpuHeadDim(q);
  const auto qs = q.shape();  // [B, Sq, H, D]
  paddle::Tensor out = paddle::empty(qs, q.dtype(), q.place());
  paddle::Tensor lse = paddle::empty({qs[0], qs[2], qs[1]}, paddle::DataType::FLOAT32, q.place());
  const flashmask::FwdParams p = MakeFwdParams(q, k, v, startend_row_indices, block_mask, causal,
                                               softmax_scale, out, lse);
  const size_t ws_bytes = flashmask_cuda_fwd_workspace_size(&p);
  paddle::Tensor ws = Workspace(ws_bytes, q.place());
  const int rc = flashmask_cuda_fwd(&p, ws.data(), ws_bytes, q.stream());
  PD_CHECK(rc == 0, "flashmask_attention (GPU forward): ", flashmask_cuda_last_error());
  return {out, lse};
}

std::vector<paddle::Tensor> FlashMaskBackwardGPU(
    const paddle::Tensor& q, const paddle::Tensor& k, const paddle::Tensor& v,
    const paddle::Tensor& startend_row_indices, const paddle::Tensor& out,
    const paddle::Tensor& softmax_lse, const paddle::Tensor& dout,
    const paddle::optional<paddle::Tensor>& block_mask, bool causal, float softmax_scale) {
  CheckGpuHeadDim(q);
  paddle::Tensor dq = paddle::empty(q.shape(), q.dtype(), q.place());
  paddle::Tensor dk = paddle::empty(k.shape(), k.dtype(), k.place());
  paddle::Tensor dv = paddle::empty(v.shape(), v.dtype(), v.place());
  flashmask::BwdParams p = MakeBwdParams(q, k, v, startend_row_indices, out, softmax_lse, dout,
                                         block_mask, causal, softmax_scale, dq, dk, dv);
  p.deterministic = EnvOn("FLAGS_cudnn_deterministic") || EnvOn("FLASHMASK_DETERMINISTIC");
  const size_t ws_bytes = flashmask_cuda_bwd_workspace_size(&p);
  paddle::Tensor ws = Workspace(ws_bytes, q.place());
  const int rc = flashmask_cuda_bwd(&p, ws.data(), ws_bytes, q.stream());
  PD_CHECK(rc == 0, "flashmask_attention (GPU backward): ", flashmask_cuda_last_error());
  return {dq, dk, dv};
}
