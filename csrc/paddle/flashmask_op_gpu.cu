// GPU host functions of the Paddle op: a thin adapter onto the framework-free
// CUDA interface (flashmask/cuda_api.h). Outputs and the workspace are Paddle
// tensors on the inputs' place; kernels run on q's stream. Inputs arrive
// validated and contiguous (flashmask_op.cc). Only paddle::empty is asked of
// Paddle here (an allocation, no Paddle kernel), so the op runs wherever its own
// kernels do.
#include <cstdlib>
#include <cstring>
#include <vector>

#include "flashmask/cuda_api.h"
#include "flashmask_op.h"
#include "paddle/extension.h"

namespace {

// Test hook, as in the torch binding: with FLASHMASK_POISON=1 the outputs are filled
// with NaN (all bits set, NaN in float16, bfloat16 and float32) before the kernels run,
// so an element they leave unwritten shows.
void Poison(const paddle::Tensor& t) {
  const char* flag = std::getenv("FLASHMASK_POISON");
  if (flag == nullptr || std::strcmp(flag, "1") != 0) return;
  const size_t elem = t.dtype() == paddle::DataType::FLOAT32 ? 4 : 2;
  const cudaError_t e = cudaMemsetAsync(const_cast<void*>(t.data()), 0xFF,
                                        static_cast<size_t>(t.numel()) * elem, t.stream());
  PD_CHECK(e == cudaSuccess, "flashmask_attention (GPU): poisoning an output failed: ",
           cudaGetErrorString(e));
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
  const auto qs = q.shape();  // [B, Sq, H, D]
  paddle::Tensor out = paddle::empty(qs, q.dtype(), q.place());
  paddle::Tensor lse = paddle::empty({qs[0], qs[2], qs[1]}, paddle::DataType::FLOAT32, q.place());
  Poison(out);
  Poison(lse);
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
    const paddle::optional<paddle::Tensor>& block_mask, bool causal, float softmax_scale,
    bool deterministic) {
  paddle::Tensor dq = paddle::empty(q.shape(), q.dtype(), q.place());
  paddle::Tensor dk = paddle::empty(k.shape(), k.dtype(), k.place());
  paddle::Tensor dv = paddle::empty(v.shape(), v.dtype(), v.place());
  for (const paddle::Tensor* t : {&dq, &dk, &dv}) Poison(*t);
  flashmask::BwdParams p = MakeBwdParams(q, k, v, startend_row_indices, out, softmax_lse, dout,
                                         block_mask, causal, softmax_scale, dq, dk, dv);
  p.deterministic = deterministic;
  const size_t ws_bytes = flashmask_cuda_bwd_workspace_size(&p);
  paddle::Tensor ws = Workspace(ws_bytes, q.place());
  const int rc = flashmask_cuda_bwd(&p, ws.data(), ws_bytes, q.stream());
  PD_CHECK(rc == 0, "flashmask_attention (GPU backward): ", flashmask_cuda_last_error());
  return {dq, dk, dv};
}
